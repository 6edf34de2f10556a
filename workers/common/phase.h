/*
 * phase: what the cloud-facing phase workers (network, import, ...) share: opening the
 * migration's provider session from the state store.
 */
#ifndef XM_PHASE_H
#define XM_PHASE_H

#include "err.h"
#include "provider.h"
#include "state.h"

struct redisContext;

/*
 * Open a provider session for migration m: the provider of m->cloud, the credential
 * m->credential opened with XM_MASTER_KEY (checked to be of that cloud's kind), the
 * region. New session (close with (*ops)->close), or NULL with err. Blocks on Redis.
 */
struct provider *phase_open_provider(struct redisContext *c, const struct mig_info *m,
                                     const struct provider_ops **ops, struct err *err);

#endif
