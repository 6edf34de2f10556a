/*
 * state: what phase workers read from the state store besides their job: the
 * migration's record (cloud, region, credential, blueprint) and a credential's secret,
 * opened with XM_MASTER_KEY. Also the record of cloud resources a migration created.
 *
 * All calls block on Redis. A Redis failure is a transient error; a missing or damaged
 * record is permanent (retrying cannot make it appear).
 */
#ifndef XM_STATE_H
#define XM_STATE_H

#include <jansson.h>

#include "err.h"

struct redisContext;

struct mig_info {
    char id[128];
    char cloud[16];
    char region[64];
    char credential[64];
    char status[32];
    json_t *blueprint; /* new reference, or NULL when none was set */
    json_t *hosts;     /* new: array of host names, sorted */
    json_t *network;   /* new: what the network phase recorded (ids), or NULL */
};

/* Load xm:mig:<id> and its hosts. 0, or -1 with err. */
int state_load_migration(struct redisContext *c, const char *id, struct mig_info *out,
                         struct err *err);
void mig_info_release(struct mig_info *m);

/*
 * Open credential cred_id: *secret is the new JSON object that was sealed (the caller
 * json_decrefs it as soon as it is done: it holds keys), kind is "aws", "azure",
 * "gcp" or "ssh". key is the 32-byte master key.
 */
int state_open_credential(struct redisContext *c, const char *cred_id, const unsigned char key[32],
                          json_t **secret, char kind[16], struct err *err);

/* Remember a cloud resource ("vpc:vpc-0abc") a migration created, for listing and
 * cleanup. Idempotent. */
int state_add_resource(struct redisContext *c, const char *mig, const char *resource,
                       struct err *err);

/* HSET one field of the migration record. */
int state_set_migration_field(struct redisContext *c, const char *mig, const char *field,
                              const char *value, struct err *err);

#endif
