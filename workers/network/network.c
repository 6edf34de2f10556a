/*
 * xm-network: the network phase. Once per migration (host "-"), after the operator
 * approved the blueprint: builds the blueprint's network in the target cloud through
 * the provider (idempotently: a re-run finds what exists), records the ids and the
 * resources on the migration, and starts every host's pipeline with a prep job. Also
 * the rollback of a migration (see rollback() below).
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "phase.h"
#include "state.h"
#include "worker.h"
#include "xmalloc.h"

/*
 * Rollback (payload "action": "rollback", from POST /v1/migrations/{id}/rollback): every
 * VM, image and disk the migration created, then its network, found by tag, then what it
 * stored in the object storage (chunks, manifests, image files under
 * xmigrate/<migration>/), so a re-run after a crash finds only what is left. The
 * migration ends rolled_back.
 */
static int rollback(struct redisContext *c, const struct job *job, struct job_result *res,
                    struct err *err)
{
    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    const struct provider_ops *ops = NULL;
    struct provider *p = phase_open_provider(c, &m, &ops, err);
    int rc = -1;
    if (!p)
        goto out;
    long long objects = 0;
    if ((ops->teardown && ops->teardown(p, m.id, err) < 0) ||
        ops->network_delete(p, m.id, err) < 0 ||
        (ops->storage_delete && ops->storage_delete(p, m.id, &objects, err) < 0)) {
        err_prefix(err, "rollback");
        goto out;
    }
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, m.id);
    job_result_hset(res, key, "status", "rolled_back");
    job_result_message(res,
                       "rollback: every VM, image, disk and network of migration %s "
                       "deleted, and %lld stored objects",
                       m.id, objects);
    rc = 0;
out:
    if (p)
        ops->close(p);
    mig_info_release(&m);
    return rc;
}

static int network_handle(struct worker *w, const struct job *job, struct job_result *res,
                          struct err *err)
{
    json_t *pl = json_loads(job->payload, 0, NULL);
    const char *action = json_string_value(json_object_get(pl, "action"));
    int is_rollback = action && strcmp(action, "rollback") == 0;
    json_decref(pl);
    if (is_rollback) {
        struct redisContext *rc = worker_redis(w);
        if (!rc)
            return err_set(err, ERR_TRANSIENT, "redis connection lost");
        return rollback(rc, job, res, err);
    }

    struct redisContext *c = worker_redis(w);
    if (!c)
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    int rc = -1;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    struct net_spec *spec = xcalloc(1, sizeof(*spec));
    struct net_result *out = xcalloc(1, sizeof(*out));
    char *ids = NULL;

    if (!m.blueprint) {
        err_set(err, ERR_PERMANENT, "migration '%s' has no blueprint", m.id);
        goto out;
    }
    if (provider_net_spec(m.blueprint, m.id, spec, err) < 0)
        goto out;
    p = phase_open_provider(c, &m, &ops, err);
    if (!p)
        goto out;
    if (ops->network_ensure(p, spec, out, err) < 0)
        goto out;

    for (size_t i = 0; i < out->n_resources; i++)
        if (state_add_resource(c, m.id, out->resources[i], err) < 0)
            goto out;
    json_t *subnets = json_object();
    for (size_t i = 0; i < spec->n_subnets && i < out->n_subnets; i++)
        json_object_set_new(subnets, spec->subnets[i].name, json_string(out->subnet_ids[i]));
    json_t *net = json_pack("{s:s, s:s, s:o}", "network_id", out->network_id, "firewall_id",
                            out->firewall_id, "subnets", subnets);
    ids = json_dumps(net, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(net);

    /* Recorded in the hand-off transaction, with the prep job of every host. */
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, m.id);
    job_result_hset(res, key, "network", ids);
    job_result_hset(res, key, "status", "migrating");
    size_t i;
    json_t *h;
    json_array_foreach(m.hosts, i, h)
        job_result_next_host(res, "prep", json_string_value(h), NULL, NULL);
    job_result_message(res, "network %s ready with %zu subnets; %zu hosts queued for prep",
                       out->network_id, out->n_subnets, json_array_size(m.hosts));
    rc = 0;
out:
    if (p)
        ops->close(p);
    free(ids);
    free(spec);
    free(out);
    mig_info_release(&m);
    return rc;
}

int main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-network",
        .phase = "network",
        .handle = network_handle,
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    return worker_main(&ops);
}
