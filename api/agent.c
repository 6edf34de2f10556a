/*
 * /v1/agent/{migration}/{host}/{disk}/...: what xm-agent, copying a disk on the source
 * server, asks of the API, authenticated with the migration's callback token (never a
 * cloud credential: those stay here).
 *
 *   urls      write URLs for a batch of chunks and for the manifest. Signing is local
 *             (presigned S3 PUT, ...): the API still never calls a cloud.
 *   progress  the agent's report: kept on the disk record, appended to xm:events.
 */
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cmd.h"
#include "config.h"
#include "job.h"
#include "keys.h"
#include "provider.h"
#include "secret.h"
#include "server.h"
#include "state.h"
#include "xmalloc.h"

#define URL_LIFETIME_S 3600

/* 1 when host belongs to the migration; 0 after a 404; -1 after a 503. */
static int host_known(struct api_req *r)
{
    struct err err = {0};
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_HOSTS_FMT, r->params[0]);
    redisReply *m = api_cmd(r, &err, 3, (const char *[]){"SISMEMBER", key, r->params[1]});
    if (!m) {
        api_reply_unavailable(r, &err);
        return -1;
    }
    long long member = m->integer;
    freeReplyObject(m);
    if (!member)
        api_reply_error(r, 404, "not_found", NULL, "migration '%s' has no host '%s'", r->params[0],
                        r->params[1]);
    return member ? 1 : 0;
}

/* Answer a failure of state or provider: 503 for what may pass, else 500/409 with the
 * reason (it names records, never secrets). */
static void reply_failure(struct api_req *r, const struct err *err)
{
    if (err->kind == ERR_TRANSIENT) {
        api_redis_lost(r);
        api_reply_unavailable(r, err);
    } else {
        api_reply_error(r, 409, "conflict", NULL, "%s", err->msg);
    }
}

void agent_urls(struct api_req *r)
{
    if (host_known(r) <= 0)
        return;
    struct err err = {0};
    struct redisContext *c = api_redis(r, &err);
    if (!c) {
        api_reply_unavailable(r, &err);
        return;
    }
    const json_t *chunks = json_object_get(r->body, "chunks");
    size_t n = json_array_size(chunks);
    long long *idx = xcalloc(n ? n : 1, sizeof(*idx));
    char **urls = xcalloc(n ? n : 1, sizeof(*urls));
    char *manifest = NULL;
    struct mig_info m = {0};
    json_t *secret = NULL;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    char kind[16];
    for (size_t i = 0; i < n; i++)
        idx[i] = json_integer_value(json_array_get(chunks, i));

    if (state_load_migration(c, r->params[0], &m, &err) < 0 ||
        state_open_credential(c, m.credential, api_master_key, &secret, kind, &err) < 0) {
        reply_failure(r, &err);
        goto out;
    }
    ops = provider_find(m.cloud);
    if (!ops || !ops->write_urls) {
        api_reply_error(r, 409, "conflict", NULL, "no write URLs for cloud '%s' yet", m.cloud);
        goto out;
    }
    p = ops->open(secret, m.region, &err);
    if (!p || ops->write_urls(p, m.id, r->params[1], r->params[2], idx, n, URL_LIFETIME_S, urls,
                              &manifest, &err) < 0) {
        reply_failure(r, &err);
        goto out;
    }
    json_t *map = json_object();
    for (size_t i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof(k), "%lld", idx[i]);
        json_object_set_new(map, k, json_string(urls[i]));
    }
    json_t *reply = json_pack("{s:o, s:s, s:I}", "urls", map, "manifest_url", manifest, "expires",
                              (json_int_t)(job_now_us() / 1000000 + URL_LIFETIME_S));
    /* A header the storage needs on every PUT ("x-ms-blob-type: BlockBlob"). */
    const char *colon = ops->write_header ? strchr(ops->write_header, ':') : NULL;
    if (colon) {
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(colon - ops->write_header), ops->write_header);
        json_object_set_new(reply, "headers",
                            json_pack("{s:s}", name, colon + 1 + strspn(colon + 1, " ")));
    }
    api_reply_json(r, 200, reply);
out:
    if (p)
        ops->close(p);
    json_decref(secret);
    mig_info_release(&m);
    for (size_t i = 0; i < n; i++)
        free(urls[i]);
    free(urls);
    free(idx);
    free(manifest);
}

void agent_progress(struct api_req *r)
{
    if (host_known(r) <= 0)
        return;
    const char *mig = r->params[0], *host = r->params[1], *disk = r->params[2];
    char *report = json_dumps(r->body, JSON_COMPACT | JSON_SORT_KEYS);
    struct cmd c[5];
    for (int i = 0; i < 5; i++)
        cmd_init(&c[i]);
    cmd_arg(&c[0], "MULTI");
    cmd_arg(&c[1], "SADD");
    cmd_argf(&c[1], XM_HOST_DISKS_FMT, mig, host);
    cmd_arg(&c[1], disk);
    cmd_arg(&c[2], "HSET");
    cmd_argf(&c[2], XM_DISK_FMT, mig, host, disk);
    static const char *const fields[] = {"bytes_read",    "bytes_sent",  "bytes_stored",
                                         "device_size",   "chunks_done", "chunks_total",
                                         "chunks_skipped"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const json_t *v = json_object_get(r->body, fields[i]);
        if (v) {
            cmd_arg(&c[2], fields[i]);
            cmd_argll(&c[2], (long long)json_integer_value(v));
        }
    }
    const json_t *size = json_object_get(r->body, "device_size");
    if (size) {
        cmd_arg(&c[2], "size");
        cmd_argll(&c[2], (long long)json_integer_value(size));
    }
    cmd_arg(&c[2], "bytes_copied");
    cmd_argll(&c[2], (long long)json_integer_value(json_object_get(r->body, "bytes_read")));
    cmd_arg(&c[2], "clone_phase");
    cmd_arg(&c[2], json_string_value(json_object_get(r->body, "phase")));
    const char *consistency = json_string_value(json_object_get(r->body, "consistency"));
    if (consistency) {
        cmd_arg(&c[2], "consistency");
        cmd_arg(&c[2], consistency);
    }
    cmd_arg(&c[3], "XADD");
    cmd_arg(&c[3], XM_EVENTS);
    cmd_arg(&c[3], "MAXLEN");
    cmd_arg(&c[3], "~");
    cmd_argll(&c[3], xm_config.events_maxlen);
    cmd_arg(&c[3], "*");
    const char *pairs[] = {XM_F_TYPE, "clone.progress", XM_F_MIGRATION, mig,        XM_F_HOST,
                           host,      XM_F_DISK,        disk,           "progress", report};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        cmd_arg(&c[3], pairs[i]);
    cmd_arg(&c[3], XM_F_TS);
    cmd_argll(&c[3], job_now_us());
    cmd_arg(&c[4], "EXEC");
    redisReply *rep[5];
    struct err err = {0};
    int rc = api_pipeline(r, c, 5, rep, &err);
    api_free_replies(rep, 5);
    for (int i = 0; i < 5; i++)
        cmd_release(&c[i]);
    free(report);
    if (rc < 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_json(r, 202,
                   json_pack("{s:s, s:s, s:s, s:b}", "migration", mig, "host", host, "disk", disk,
                             "accepted", 1));
}
