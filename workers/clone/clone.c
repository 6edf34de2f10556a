/*
 * xm-clone: the clone phase of one host. Makes sure the cloud's object storage exists,
 * then runs playbooks/clone.yml, which copies xm-agent to the source server and runs it
 * once per disk: the agent reads the disk, hashes, compresses and uploads its chunks to
 * presigned URLs it asks the API for, and writes the manifest last. On success one
 * convert job per disk is handed off as a fan-in group (the last converted disk starts
 * the import).
 *
 * The disks are the host's discovered disks (facts "disks": [{name, device}]), or the
 * job's payload "disks" when given (an operator re-running clone for some disks).
 * Payload options: "freeze": true (fsfreeze the disks' filesystems while copying: the
 * cutover pass, run once the applications are stopped), "lvm_snapshot": true (copy from
 * LVM snapshots). Every run passes the disk's last manifest, so a second run (the delta
 * or cutover sync) sends only the chunks that changed.
 *
 * Two migration settings shape the phase (both stored on xm:mig:<id> at creation):
 *   max_cloning: at most that many hosts of the migration copy at once, so a wave does
 *     not saturate the source site's uplink. A host takes a slot (the set
 *     xm:mig:<id>:cloning) before its playbook starts; with none free its job waits
 *     (job_result_wait: back in the delayed set, same attempt, host queued with the
 *     reason). Slots are not given back explicitly: a member whose host has left the
 *     clone phase (converting, awaiting cutover, failed, cancelled) is dropped by the
 *     next taker, in the same script, so a worker killed mid-copy never leaks one.
 *   cutover "manual": the first pass copies everything while the applications run,
 *     then the host waits in status awaiting_cutover; POST .../cutover queues the final
 *     pass (payload "final": true), which sends only what changed since, and only that
 *     one hands off to convert.
 *
 * Failures: the host unreachable, the agent giving up on the network (exit 6) or killed
 * by a signal (it resumes from its journal) are transient; a device that cannot be read
 * (3), a URL or token refused (4), storage full (5) and anything else are permanent,
 * with the agent's message on the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ansible.h"
#include "config.h"
#include "conn.h"
#include "job.h"
#include "keys.h"
#include "phase.h"
#include "secret.h"
#include "worker.h"
#include "xmalloc.h"

#define MAX_DISKS 64

/* SHA-1 hex of a file (the agent binary): Ansible's copy module verifies what it wrote
 * against a SHA-1 checksum. (Integrity against a broken transfer, not an attacker: the
 * copy runs over the SSH connection itself.) */
static int file_sha1(const char *path, char out[41], struct err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_PERMANENT, "xm-agent not found at '%s' (XM_AGENT_PATH): %s", path,
                       strerror(errno));
    size_t cap = 1 << 20, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap)
            buf = xrealloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    XM_ASSERT(EVP_Digest(buf, len, md, &md_len, EVP_sha1(), NULL) == 1);
    for (unsigned int i = 0; i < md_len && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    free(buf);
    return 0;
}

/* The "disks" array of a JSON document stored at key (new reference), or NULL. */
static json_t *stored_disks(struct redisContext *c, const char *key, struct err *err, int *failed)
{
    redisReply *r = conn_cmd(c, err, 2, (const char *[]){"GET", key});
    if (!r) {
        *failed = 1;
        return NULL;
    }
    json_t *doc = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
    freeReplyObject(r);
    json_t *list = json_incref(json_object_get(doc, "disks"));
    json_decref(doc);
    return json_is_array(list) ? list : (json_decref(list), NULL);
}

/*
 * The disks the blueprint lists for this host (new array of {name, device}; a device's
 * name is its last path component), without those it marks skip; NULL when it lists
 * none (every discovered disk goes). The operator's list wins over discovery, which
 * leaves out devices such as loop devices that are rarely a server's own disks.
 */
static json_t *blueprint_disks(const json_t *blueprint, const char *host)
{
    size_t i, j;
    json_t *h, *d;
    json_array_foreach(json_object_get(blueprint, "hosts"), i, h)
    {
        const char *name = json_string_value(json_object_get(h, "host"));
        const json_t *list = json_object_get(h, "disks");
        if (!name || strcmp(name, host) != 0 || !json_is_array(list) || !json_array_size(list))
            continue;
        json_t *out = json_array();
        json_array_foreach(list, j, d)
        {
            const char *dev = json_string_value(json_object_get(d, "device"));
            if (!dev || json_is_true(json_object_get(d, "skip")))
                continue;
            const char *base = strrchr(dev, '/');
            json_array_append_new(
                out, json_pack("{s:s, s:s}", "name", base ? base + 1 : dev, "device", dev));
        }
        return out;
    }
    return NULL;
}

/*
 * The disks to copy: payload "disks", else those the blueprint lists for the host, else
 * the disks of the host record discovery normalised (else the raw facts' "disks").
 * Each name and device checked.
 */
static json_t *disks_of(struct redisContext *c, const struct mig_info *m, const struct job *job,
                        struct err *err)
{
    json_t *payload = json_loads(job->payload, 0, NULL);
    json_t *list = json_incref(json_object_get(payload, "disks"));
    json_decref(payload);
    int failed = 0;
    char key[300];
    if (!list)
        list = blueprint_disks(m->blueprint, job->host);
    if (!list) {
        snprintf(key, sizeof(key), XM_HOST_RECORD_FMT, job->migration, job->host);
        list = stored_disks(c, key, err, &failed);
    }
    if (!list && !failed) {
        snprintf(key, sizeof(key), XM_FACTS_FMT, job->migration, job->host);
        list = stored_disks(c, key, err, &failed);
    }
    if (failed)
        return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *dev = json_string_value(json_object_get(d, "device"));
        if (json_is_true(json_object_get(d, "skip")))
            continue;
        if (!job_valid_ident(name) || !ansible_valid_device(dev)) {
            err_set(err, ERR_PERMANENT, "disk %zu of host '%s': name or device is not valid", i,
                    job->host);
            json_decref(out);
            out = NULL;
            break;
        }
        json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "device", dev));
    }
    json_decref(list);
    if (out && (json_array_size(out) == 0 || json_array_size(out) > MAX_DISKS)) {
        err_set(err, ERR_PERMANENT,
                "host '%s' has no disks to clone (discovery found none, or all are skipped)",
                job->host);
        json_decref(out);
        out = NULL;
    }
    return out;
}

/* The migration's callback token, opened from its sealed copy (new, wipe and free). */
static char *callback_token(struct redisContext *c, const char *mig, const unsigned char *key,
                            struct err *err)
{
    char k[256];
    snprintf(k, sizeof(k), XM_MIG_FMT, mig);
    redisReply *r = conn_cmd(c, err, 3, (const char *[]){"HGET", k, "callback_sealed"});
    if (!r)
        return NULL;
    unsigned char *plain = NULL;
    size_t len = 0;
    if (r->type != REDIS_REPLY_STRING)
        err_set(err, ERR_PERMANENT, "migration '%s' has no callback token", mig);
    else
        secret_open(key, mig, r->str, &plain, &len, err);
    freeReplyObject(r);
    return (char *)plain;
}

/*
 * Take (or keep) a clone slot for the host. KEYS: the slot set. ARGV: host, max, host key
 * prefix. 1 when the host holds a slot, 0 when all are taken by hosts still cloning.
 */
static const char slot_script[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end\n"
    "for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local st = redis.call('HMGET', ARGV[3] .. h, 'status', 'phase')\n"
    "  if st[2] ~= 'clone' or (st[1] ~= 'running' and st[1] ~= 'queued' and\n"
    "      st[1] ~= 'retrying') then redis.call('SREM', KEYS[1], h) end\n"
    "end\n"
    "if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "return 1\n";

#define SLOT_WAIT_MS 2000 /* how often a waiting host asks again */

/* The migration's max_cloning and whether its cutover is manual. */
static int clone_settings(struct redisContext *c, const char *mig, long long *max, int *manual,
                          struct err *err)
{
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, mig);
    redisReply *r = conn_cmd(c, err, 4, (const char *[]){"HMGET", key, "max_cloning", "cutover"});
    if (!r)
        return -1;
    *max = xm_config.max_cloning;
    if (r->element[0]->type == REDIS_REPLY_STRING && atoll(r->element[0]->str) > 0)
        *max = atoll(r->element[0]->str);
    *manual =
        r->element[1]->type == REDIS_REPLY_STRING && strcmp(r->element[1]->str, "manual") == 0;
    freeReplyObject(r);
    return 0;
}

/* 1 when the host may copy now, 0 when it must wait, -1 with err. */
static int take_slot(struct redisContext *c, const char *mig, const char *host, long long max,
                     struct err *err)
{
    char key[256], prefix[256], n[24];
    snprintf(key, sizeof(key), XM_MIG_CLONING_FMT, mig);
    snprintf(prefix, sizeof(prefix), XM_HOST_FMT, mig, "");
    snprintf(n, sizeof(n), "%lld", max);
    redisReply *r =
        conn_cmd(c, err, 7, (const char *[]){"EVAL", slot_script, "1", key, host, n, prefix});
    if (!r)
        return -1;
    int got = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return got;
}

static int clone_handle(struct worker *w, const struct job *job, struct job_result *res,
                        struct err *err)
{
    struct redisContext *c = worker_redis(w);
    if (!c)
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    if (!xm_config.agent_api_url[0])
        return err_set(err, ERR_PERMANENT,
                       "XM_AGENT_API_URL is not set: sources cannot reach "
                       "the API");
    long long max_cloning;
    int manual;
    if (clone_settings(c, job->migration, &max_cloning, &manual, err) < 0)
        return -1;
    int slot = take_slot(c, job->migration, job->host, max_cloning, err);
    if (slot < 0)
        return -1;
    if (!slot) {
        job_result_wait(res, SLOT_WAIT_MS,
                        "waiting for a clone slot: %lld host(s) of the migration are copying "
                        "(max_cloning %lld)",
                        max_cloning, max_cloning);
        return 0;
    }
    json_t *jp = json_loads(job->payload, 0, NULL);
    int final = json_is_true(json_object_get(jp, "final"));
    int freeze = json_is_true(json_object_get(jp, "freeze"));
    int lvm_snapshot = json_is_true(json_object_get(jp, "lvm_snapshot"));
    json_decref(jp);

    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    int rc = -1;
    unsigned char key[32];
    int have_key = 0;
    json_t *disks = NULL, *ssh = NULL, *vars = NULL;
    redisReply *host = NULL;
    char *token = NULL;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    char sha[41], kind[16], bucket[128], agent[PATH_MAX];

    if (secret_key_parse(xm_config.master_key, key, err) < 0)
        goto out;
    have_key = 1;
    /* Ansible looks a relative src up beside the playbook: hand it an absolute path. */
    if (!realpath(xm_config.agent_path, agent)) {
        err_set(err, ERR_PERMANENT, "xm-agent not found at '%s' (XM_AGENT_PATH): %s",
                xm_config.agent_path, strerror(errno));
        goto out;
    }
    if (!(disks = disks_of(c, &m, job, err)) || file_sha1(agent, sha, err) < 0)
        goto out;
    char hkey[300];
    snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m.id, job->host);
    host = conn_cmd(c, err, 5, (const char *[]){"HMGET", hkey, "address", "port", "credential"});
    if (!host)
        goto out;
    if (host->element[0]->type != REDIS_REPLY_STRING ||
        host->element[2]->type != REDIS_REPLY_STRING) {
        err_set(err, ERR_PERMANENT, "host '%s' of migration '%s' has no address or credential",
                job->host, m.id);
        goto out;
    }
    if (state_open_credential(c, host->element[2]->str, key, &ssh, kind, err) < 0)
        goto out;
    if (strcmp(kind, "ssh") != 0) {
        err_set(err, ERR_PERMANENT, "credential '%s' is for %s, not ssh", host->element[2]->str,
                kind);
        goto out;
    }
    /* The storage must exist before the agent writes to it. */
    p = phase_open_provider(c, &m, &ops, err);
    if (!p || !ops->storage_ensure || ops->storage_ensure(p, bucket, sizeof(bucket), err) < 0)
        goto out;
    if (!(token = callback_token(c, m.id, key, err)))
        goto out;
    /* The last complete copy of each disk, if any: the agent sends only what changed. */
    if (ops->read_url) {
        size_t di;
        json_t *d;
        json_array_foreach(disks, di, d)
        {
            char *url =
                ops->read_url(p, m.id, job->host, json_string_value(json_object_get(d, "name")),
                              "manifest.json", 6 * 3600, err);
            if (!url)
                goto out;
            json_object_set_new(d, "previous", json_string(url));
            free(url);
        }
    }

    const char *user = json_string_value(json_object_get(ssh, "user"));
    json_t *opts = json_array();
    if (freeze)
        json_array_append_new(opts, json_string("--freeze"));
    if (lvm_snapshot)
        json_array_append_new(opts, json_string("--lvm-snapshot"));
    json_array_append_new(opts, json_string("--parallel"));
    json_array_append_new(opts, json_integer(xm_config.agent_parallel));
    if (xm_config.agent_limit_mbps) {
        json_array_append_new(opts, json_string("--limit-mbps"));
        json_array_append_new(opts, json_integer(xm_config.agent_limit_mbps));
    }
    vars = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:o, s:b}", "xm_agent_src", agent,
                     "xm_agent_sha1", sha, "xm_api", xm_config.agent_api_url, "xm_migration", m.id,
                     "xm_host", job->host, "xm_token", token, "xm_disks", disks, "xm_agent_opts",
                     opts, "xm_become", user && strcmp(user, "root") != 0);
    struct ansible_target t = {
        .name = job->host,
        .address = host->element[0]->str,
        .port = host->element[1]->type == REDIS_REPLY_STRING
                    ? (int)strtol(host->element[1]->str, NULL, 10)
                    : 22,
        .user = user,
        .private_key = json_string_value(json_object_get(ssh, "private_key")),
        .password = json_string_value(json_object_get(ssh, "password")),
        .become_password = json_string_value(json_object_get(ssh, "become_password")),
    };
    char playbook[512], ctx[300];
    snprintf(playbook, sizeof(playbook), "%s/clone.yml", xm_config.playbooks_dir);
    snprintf(ctx, sizeof(ctx), "migration=%s host=%s job=%s", m.id, job->host, job->id);
    struct ansible_result ar;
    if (ansible_run(playbook, &t, vars, ctx, &ar, err) < 0) {
        /* The agent's exit code says what failed (agent/README.md); an agent killed by a
         * signal (rc -N: the OOM killer, an operator) resumes from its journal next time. */
        if (ar.task_rc == 6 || (ar.task_rc < -1 && ar.task_rc >= -64)) {
            err->kind = ERR_TRANSIENT;
            if (ar.task_rc < 0)
                err_set(err, ERR_TRANSIENT, "the agent on '%s' was killed by signal %d mid-copy",
                        job->host, -ar.task_rc);
        }
        goto out;
    }

    if (manual && !final) {
        /* The first pass is in; the host waits for the operator's cutover. Set after the
         * runtime's own "done" (job_result_hset's order), in the same transaction. */
        job_result_hset(res, hkey, XM_H_STATUS, "awaiting_cutover");
        job_result_message(res, "%zu disks copied (first pass); awaiting cutover",
                           json_array_size(disks));
        rc = 0;
        goto out;
    }
    /* One convert job per disk, joined again before import. */
    size_t i;
    json_t *d;
    json_array_foreach(disks, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "name"));
        char *payload = xasprintf("{\"bucket\":\"%s\",\"manifest\":\"xmigrate/%s/%s/%s/"
                                  "manifest.json\"}",
                                  bucket, m.id, job->host, name);
        job_result_next(res, "convert", name, payload);
        free(payload);
    }
    job_result_fanout(res);
    job_result_message(res, "%zu disks copied%s", json_array_size(disks),
                       final ? " (final pass)" : "");
    rc = 0;
out:
    if (p)
        ops->close(p);
    if (token) {
        secret_wipe(token, strlen(token));
        free(token);
    }
    if (have_key)
        secret_wipe(key, sizeof(key));
    json_decref(vars);
    json_decref(disks);
    json_decref(ssh);
    if (host)
        freeReplyObject(host);
    mig_info_release(&m);
    return rc;
}

int main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-clone",
        .phase = "clone",
        .handle = clone_handle,
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    return worker_main(&ops);
}
