/*
 * The convert phase as a queue worker: turns the chunks the clone phase stored into what
 * the cloud imports, in shards any number of converters share (DESIGN.md section 4,
 * step 2). One convert job per disk arrives from clone (a member of the host's fan-in
 * group); its steps, all in the xm:q:convert stream, told apart by payload "step":
 *
 *   disk    read the manifest, make (or find again) the disk's target (AWS: an EBS
 *           snapshot), split the chunks into shards of XM_CONVERT_SHARD_CHUNKS, fan
 *           them out. The disk keeps its place in the host's group (nested fan-in).
 *   shard   fetch each stored chunk, check its SHA-256 against the manifest, decompress,
 *           write it to the target (all-zero blocks never sent); record its block count.
 *   finish  (handed off by the shard that ends the disk's group) complete the target
 *           with the total block count, wait until usable, record it as the disk's
 *           image; the finish of the host's last disk hands off import.
 *
 * A chunk whose hash does not match, that is missing or does not decompress fails the
 * shard for good, naming disk, chunk and offset; nothing is reported converted.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "config.h"
#include "conn.h"
#include "keys.h"
#include "phase.h"
#include "secret.h"
#include "worker.h"
#include "xmalloc.h"

#define SHARD_CHUNKS 4                  /* chunks per shard: 64 MiB at 16 MiB chunks */
#define MANIFEST_MAX (64 * 1024 * 1024) /* bytes */
#define CHUNK_MAX (256u * 1024 * 1024)

static int open_for(struct worker *w, const struct job *job, struct mig_info *m,
                    struct provider **p, const struct provider_ops **ops, struct err *err)
{
    struct redisContext *c = worker_redis(w);
    if (!c)
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    if (state_load_migration(c, job->migration, m, err) < 0)
        return -1;
    *p = phase_open_provider(c, m, ops, err);
    if (!*p) {
        mig_info_release(m);
        return -1;
    }
    if (!(*ops)->disk_begin || !(*ops)->read_object) {
        (*ops)->close(*p);
        *p = NULL;
        mig_info_release(m);
        return err_set(err, ERR_PERMANENT, "no converter for cloud '%s' yet", m->cloud);
    }
    return 0;
}

static void disk_key(const struct job *job, char *out, size_t size)
{
    snprintf(out, size, XM_DISK_FMT, job->migration, job->host, job->disk);
}

/* step "disk": manifest -> target -> shards. */
static int step_disk(struct worker *w, const struct job *job, json_t *pl, struct job_result *res,
                     struct err *err)
{
    const char *bucket = json_string_value(json_object_get(pl, "bucket"));
    const char *manifest_key = json_string_value(json_object_get(pl, "manifest"));
    if (!bucket || !manifest_key)
        return err_set(err, ERR_PERMANENT, "disk '%s': payload lacks bucket or manifest",
                       job->disk);
    struct mig_info m;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    if (open_for(w, job, &m, &p, &ops, err) < 0)
        return -1;
    int rc = -1;
    char *text = NULL;
    size_t len = 0;
    json_t *man = NULL;
    if (ops->read_object(p, bucket, manifest_key, MANIFEST_MAX, &text, &len, err) < 0)
        goto out;
    json_error_t jerr;
    man = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    json_int_t size = json_integer_value(json_object_get(man, "device_size"));
    json_t *chunks = json_object_get(man, "chunks");
    if (!man || size <= 0 || !json_is_array(chunks) || json_array_size(chunks) == 0) {
        err_set(err, ERR_PERMANENT, "disk '%s': manifest '%s' is not a complete copy", job->disk,
                manifest_key);
        goto out;
    }
    char ref[PROVIDER_ID_MAX];
    long block = 0;
    if (ops->disk_begin(p, m.id, job->host, job->disk, (unsigned long long)size, ref, &block, err) <
        0)
        goto out;
    char prefix[512];
    const char *slash = strrchr(manifest_key, '/');
    snprintf(prefix, sizeof(prefix), "%.*s", slash ? (int)(slash - manifest_key) : 0, manifest_key);
    size_t n = json_array_size(chunks), shards = 0;
    for (size_t first = 0; first < n; first += SHARD_CHUNKS, shards++) {
        json_t *part = json_array();
        for (size_t i = first; i < n && i < first + SHARD_CHUNKS; i++)
            json_array_append(part, json_array_get(chunks, i));
        json_t *sp = json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:I}", "step", "shard", "bucket",
                               bucket, "prefix", prefix, "target", ref, "block_size",
                               (json_int_t)block, "chunks", part, "first", (json_int_t)first);
        char *sps = json_dumps(sp, JSON_COMPACT);
        job_result_next(res, "convert", job->disk, sps);
        free(sps);
        json_decref(sp);
    }
    job_result_fanout(res);
    char dk[400], sz[32], ns[32];
    disk_key(job, dk, sizeof(dk));
    snprintf(sz, sizeof(sz), "%lld", (long long)size);
    snprintf(ns, sizeof(ns), "%zu", shards);
    job_result_hset(res, dk, "size", sz);
    job_result_hset(res, dk, "target", ref);
    job_result_hset(res, dk, "shards", ns);
    job_result_message(res, "disk %s: %zu chunks in %zu shards into %s", job->disk, n, shards, ref);
    rc = 0;
out:
    json_decref(man);
    free(text);
    ops->close(p);
    mig_info_release(&m);
    return rc;
}

/* step "shard": fetch, check, decompress and write its chunks. */
static int step_shard(struct worker *w, const struct job *job, json_t *pl, struct job_result *res,
                      struct err *err)
{
    const char *bucket = json_string_value(json_object_get(pl, "bucket"));
    const char *prefix = json_string_value(json_object_get(pl, "prefix"));
    const char *ref = json_string_value(json_object_get(pl, "target"));
    long block = (long)json_integer_value(json_object_get(pl, "block_size"));
    json_t *chunks = json_object_get(pl, "chunks");
    if (!bucket || !prefix || !ref || block <= 0 || !json_is_array(chunks))
        return err_set(err, ERR_PERMANENT, "disk '%s': malformed shard payload", job->disk);
    struct mig_info m;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    if (open_for(w, job, &m, &p, &ops, err) < 0)
        return -1;
    int rc = -1;
    long long blocks = 0, bytes = 0;
    char *blob = NULL;
    void *raw = NULL;
    size_t i;
    json_t *ch;
    json_array_foreach(chunks, i, ch)
    {
        json_int_t index = json_integer_value(json_object_get(ch, "index"));
        json_int_t offset = json_integer_value(json_object_get(ch, "offset"));
        json_int_t length = json_integer_value(json_object_get(ch, "length"));
        const char *sha = json_string_value(json_object_get(ch, "sha256"));
        if (json_is_true(json_object_get(ch, "zero")))
            continue; /* never stored, never sent */
        if (length <= 0 || (unsigned long long)length > CHUNK_MAX || !sha || offset % block != 0) {
            err_set(err, ERR_PERMANENT, "disk '%s' chunk %lld: bad manifest entry", job->disk,
                    (long long)index);
            goto out;
        }
        char key[600];
        snprintf(key, sizeof(key), "%s/%lld.zst", prefix, (long long)index);
        size_t blen = 0;
        free(blob);
        blob = NULL;
        if (ops->read_object(p, bucket, key, CHUNK_MAX, &blob, &blen, err) < 0) {
            err_prefix(err, "disk '%s' chunk %lld at offset %lld", job->disk, (long long)index,
                       (long long)offset);
            goto out;
        }
        free(raw);
        raw = xmalloc((size_t)length);
        size_t got = ZSTD_decompress(raw, (size_t)length, blob, blen);
        if (ZSTD_isError(got) || got != (size_t)length) {
            err_set(err, ERR_PERMANENT,
                    "disk '%s' chunk %lld at offset %lld: does not decompress to %lld bytes (%s)",
                    job->disk, (long long)index, (long long)offset, (long long)length,
                    ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong length");
            goto out;
        }
        char hex[65];
        secret_sha256_hex(raw, got, hex);
        if (strcmp(hex, sha) != 0) {
            err_set(err, ERR_PERMANENT,
                    "disk '%s' chunk %lld at offset %lld: SHA-256 %.12s... does not match the "
                    "manifest's %.12s...",
                    job->disk, (long long)index, (long long)offset, hex, sha);
            goto out;
        }
        long long n = 0;
        if (ops->disk_write(p, ref, block, (unsigned long long)offset, raw, got, &n, err) < 0) {
            err_prefix(err, "disk '%s' chunk %lld", job->disk, (long long)index);
            goto out;
        }
        blocks += n;
        bytes += length;
    }
    /* Per shard, so a shard run twice does not count twice. */
    char dk[400], field[64], val[64];
    disk_key(job, dk, sizeof(dk));
    snprintf(field, sizeof(field), "blocks:%lld",
             (long long)json_integer_value(json_object_get(pl, "first")));
    snprintf(val, sizeof(val), "%lld %lld", blocks, bytes);
    job_result_hset(res, dk, field, val);
    char *fin = xasprintf("{\"step\":\"finish\",\"target\":\"%s\"}", ref);
    job_result_next(res, "convert", job->disk, fin);
    free(fin);
    job_result_message(res, "disk %s: %lld blocks written", job->disk, blocks);
    rc = 0;
out:
    free(blob);
    free(raw);
    ops->close(p);
    mig_info_release(&m);
    return rc;
}

/* step "finish": complete the target and hand the disk on to import. */
static int step_finish(struct worker *w, const struct job *job, json_t *pl, struct job_result *res,
                       struct err *err)
{
    const char *ref = json_string_value(json_object_get(pl, "target"));
    if (!ref)
        return err_set(err, ERR_PERMANENT, "disk '%s': finish without a target", job->disk);
    struct mig_info m;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    if (open_for(w, job, &m, &p, &ops, err) < 0)
        return -1;
    int rc = -1;
    char dk[400];
    disk_key(job, dk, sizeof(dk));
    redisReply *h = conn_cmd(worker_redis(w), err, 2, (const char *[]){"HGETALL", dk});
    if (!h)
        goto out;
    long long blocks = 0, bytes = 0;
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (strncmp(h->element[i]->str, "blocks:", 7) == 0) {
            long long b = 0, y = 0;
            if (sscanf(h->element[i + 1]->str, "%lld %lld", &b, &y) == 2) {
                blocks += b;
                bytes += y;
            }
        }
    freeReplyObject(h);
    if (ops->disk_finish(p, ref, blocks, err) < 0)
        goto out;
    char nb[32];
    snprintf(nb, sizeof(nb), "%lld", bytes);
    job_result_hset(res, dk, "image", ref);
    job_result_hset(res, dk, "bytes_converted", nb);
    job_result_next(res, "import", NULL, NULL);
    job_result_message(res, "disk %s converted: %s (%lld blocks)", job->disk, ref, blocks);
    rc = 0;
out:
    ops->close(p);
    mig_info_release(&m);
    return rc;
}

static int convert_handle(struct worker *w, const struct job *job, struct job_result *res,
                          struct err *err)
{
    json_t *pl = json_loads(job->payload, 0, NULL);
    const char *step = json_string_value(json_object_get(pl, "step"));
    int rc;
    if (!job->disk[0])
        rc = err_set(err, ERR_PERMANENT, "convert job without a disk");
    else if (!step || strcmp(step, "disk") == 0)
        rc = step_disk(w, job, pl, res, err);
    else if (strcmp(step, "shard") == 0)
        rc = step_shard(w, job, pl, res, err);
    else if (strcmp(step, "finish") == 0)
        rc = step_finish(w, job, pl, res, err);
    else
        rc = err_set(err, ERR_PERMANENT, "convert: unknown step '%s'", step);
    json_decref(pl);
    return rc;
}

int convert_worker_main(void);
int convert_worker_main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-convert",
        .phase = "convert",
        .handle = convert_handle,
    };
    return worker_main(&ops);
}
