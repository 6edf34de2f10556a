#include "phase.h"

#include <string.h>

#include "config.h"
#include "secret.h"

struct provider *phase_open_provider(struct redisContext *c, const struct mig_info *m,
                                     const struct provider_ops **ops, struct err *err)
{
    *ops = provider_find(m->cloud);
    if (!*ops) {
        err_set(err, ERR_PERMANENT, "no provider for cloud '%s'", m->cloud);
        return NULL;
    }
    unsigned char key[32];
    if (secret_key_parse(xm_config.master_key, key, err) < 0)
        return NULL;
    json_t *secret = NULL;
    char kind[16];
    struct provider *p = NULL;
    if (state_open_credential(c, m->credential, key, &secret, kind, err) == 0) {
        if (strcmp(kind, m->cloud) != 0)
            err_set(err, ERR_PERMANENT, "credential '%s' is for %s, not %s", m->credential, kind,
                    m->cloud);
        else
            p = (*ops)->open(secret, m->region, err);
    }
    json_decref(secret);
    secret_wipe(key, sizeof(key));
    return p;
}
