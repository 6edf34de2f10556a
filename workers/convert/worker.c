/*
 * The convert phase as a queue worker: turns the chunks the clone phase stored into what
 * the cloud imports, in shards any number of converters share (DESIGN.md section 4,
 * step 2). One convert job per disk arrives from clone (a member of the host's fan-in
 * group); its steps, all in the xm:q:convert stream, told apart by payload "step":
 *
 *   disk    read the manifest, make (or find again) the disk's target (AWS: an EBS
 *           snapshot, or a raw / VMDK image in S3 when the migration's "aws_import"
 *           asks for one), split the chunks into shards of XM_CONVERT_SHARD_CHUNKS, fan
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
#include <time.h>
#include <zstd.h>

#include "config.h"
#include "conn.h"
#include "convert.h"
#include "image.h"
#include "keys.h"
#include "phase.h"
#include "secret.h"
#include "worker.h"
#include "xmalloc.h"

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
    if ((!(*ops)->disk_begin && !(*ops)->image_format) || !(*ops)->read_object) {
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

/* Chunks per shard: XM_CONVERT_SHARD_MB rounded to whole chunks, at least one. */
static size_t shard_chunks(unsigned long long chunk_size)
{
    unsigned long long want = (unsigned long long)xm_config.convert_shard_mb << 20;
    return want / chunk_size ? (size_t)(want / chunk_size) : 1;
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
    json_t *man = NULL, *plan_j = NULL;
    struct convert_plan *plan = NULL;
    if (ops->read_object(p, bucket, manifest_key, MANIFEST_MAX, &text, &len, err) < 0)
        goto out;
    json_error_t jerr;
    man = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    json_int_t size = json_integer_value(json_object_get(man, "device_size"));
    json_int_t chunk_size = json_integer_value(json_object_get(man, "chunk_size"));
    json_t *chunks = json_object_get(man, "chunks");
    if (!man || size <= 0 || chunk_size <= 0 || !json_is_array(chunks) ||
        json_array_size(chunks) == 0) {
        err_set(err, ERR_PERMANENT, "disk '%s': manifest '%s' is not a complete copy", job->disk,
                manifest_key);
        goto out;
    }
    size_t per = shard_chunks((unsigned long long)chunk_size);
    char ref[PROVIDER_REF_MAX], fmt[16];
    long block = 0;
    if (image_format_for(worker_redis(w), m.id, ops, fmt, err) < 0)
        goto out;
    if (fmt[0] && ops->image_pieces_max > 2) {
        /* Head, shards, tail: never more pieces than the provider can join (a 1 TiB raw
         * disk in 64 MiB shards would be 16,386 pieces, S3 joins 10,000 parts). */
        unsigned long long nchunks =
            ((unsigned long long)size + (unsigned long long)chunk_size - 1) /
            (unsigned long long)chunk_size;
        unsigned long long most = ops->image_pieces_max - 2;
        if ((nchunks + per - 1) / per > most)
            per = (size_t)((nchunks + most - 1) / most);
    }
    if (fmt[0]) {
        struct convert_params prm = {.in_size = (uint64_t)size,
                                     .shard_size = (uint64_t)per * (uint64_t)chunk_size,
                                     .created = (int64_t)time(NULL)};
        if (convert_format_parse(fmt, &prm.format, err) < 0)
            goto out;
        image_id_for(m.id, job->host, job->disk, prm.id);
        if (prm.shard_size % convert_shard_align(prm.format) != 0) {
            err_set(err, ERR_PERMANENT,
                    "disk '%s': chunk size %lld is not a multiple of %s's %llu-byte alignment",
                    job->disk, (long long)chunk_size, fmt,
                    (unsigned long long)convert_shard_align(prm.format));
            goto out;
        }
        plan = convert_plan_new(&prm, err);
        if (!plan || ops->image_begin(p, m.id, job->host, job->disk, convert_plan_fixed_size(plan),
                                      ref, err) < 0)
            goto out;
        plan_j = image_plan_json(&prm);
    } else {
        char sref[PROVIDER_ID_MAX];
        if (ops->disk_begin(p, m.id, job->host, job->disk, (unsigned long long)size, sref, &block,
                            err) < 0)
            goto out;
        snprintf(ref, sizeof(ref), "%s", sref);
    }
    char prefix[512];
    const char *slash = strrchr(manifest_key, '/');
    snprintf(prefix, sizeof(prefix), "%.*s", slash ? (int)(slash - manifest_key) : 0, manifest_key);
    size_t n = json_array_size(chunks), shards = (n + per - 1) / per;
    if (plan && convert_plan_nshards(plan) != shards) {
        err_set(err, ERR_PERMANENT,
                "disk '%s': manifest has %zu chunks of %lld bytes for %lld bytes", job->disk, n,
                (long long)chunk_size, (long long)size);
        goto out;
    }
    for (size_t k = 0; k < shards; k++) {
        json_t *part = json_array();
        for (size_t i = k * per; i < n && i < (k + 1) * per; i++)
            json_array_append(part, json_array_get(chunks, i));
        json_t *sp =
            json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:I}", "step", "shard", "bucket", bucket,
                      "prefix", prefix, "target", ref, "chunks", part, "first",
                      (json_int_t)(k * per), "shard", (json_int_t)k, "shards", (json_int_t)shards);
        if (plan_j)
            json_object_set(sp, "plan", plan_j);
        else
            json_object_set_new(sp, "block_size", json_integer(block));
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
    job_result_hset(res, dk, "bytes_converted", "0");
    job_result_message(res, "disk %s: %zu chunks in %zu shards into %s", job->disk, n, shards, ref);
    rc = 0;
out:
    convert_plan_free(plan);
    json_decref(plan_j);
    json_decref(man);
    free(text);
    ops->close(p);
    mig_info_release(&m);
    return rc;
}

/*
 * Fetch one stored chunk, decompress it and check it against the manifest entry: *raw
 * (new) holds length bytes. Every failure names disk, chunk and offset.
 */
static int fetch_chunk(struct provider *p, const struct provider_ops *ops, const char *bucket,
                       const char *prefix, const char *disk, json_int_t index, json_int_t offset,
                       json_int_t length, const char *sha, void **raw, struct err *err)
{
    char key[600];
    snprintf(key, sizeof(key), "%s/%lld.zst", prefix, (long long)index);
    char *blob = NULL;
    size_t blen = 0;
    if (ops->read_object(p, bucket, key, CHUNK_MAX, &blob, &blen, err) < 0)
        return err_prefix(err, "disk '%s' chunk %lld at offset %lld", disk, (long long)index,
                          (long long)offset);
    *raw = xmalloc((size_t)length);
    size_t got = ZSTD_decompress(*raw, (size_t)length, blob, blen);
    free(blob);
    if (ZSTD_isError(got) || got != (size_t)length) {
        err_set(err, ERR_PERMANENT,
                "disk '%s' chunk %lld at offset %lld: does not decompress to %lld bytes (%s)", disk,
                (long long)index, (long long)offset, (long long)length,
                ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong length");
        goto bad;
    }
    char hex[65];
    secret_sha256_hex(*raw, got, hex);
    if (strcmp(hex, sha) != 0) {
        err_set(err, ERR_PERMANENT,
                "disk '%s' chunk %lld at offset %lld: SHA-256 %.12s... does not match the "
                "manifest's %.12s...",
                disk, (long long)index, (long long)offset, hex, sha);
        goto bad;
    }
    return 0;
bad:
    free(*raw);
    *raw = NULL;
    return -1;
}

/* Hex of len bytes (new string). */
static char *to_hex(const uint8_t *b, size_t len)
{
    char *s = xmalloc(2 * len + 1);
    for (size_t i = 0; i < len; i++)
        snprintf(s + 2 * i, 3, "%02x", b[i]);
    return s;
}

/* step "shard": fetch, check, decompress and write its chunks. */
static int step_shard(struct worker *w, const struct job *job, json_t *pl, struct job_result *res,
                      struct err *err)
{
    const char *bucket = json_string_value(json_object_get(pl, "bucket"));
    const char *prefix = json_string_value(json_object_get(pl, "prefix"));
    const char *ref = json_string_value(json_object_get(pl, "target"));
    long block = (long)json_integer_value(json_object_get(pl, "block_size"));
    json_int_t shard = json_integer_value(json_object_get(pl, "shard"));
    json_int_t shards = json_integer_value(json_object_get(pl, "shards"));
    json_t *chunks = json_object_get(pl, "chunks");
    int image = json_object_get(pl, "plan") != NULL;
    if (!bucket || !prefix || !ref || (!image && block <= 0) || !json_is_array(chunks) ||
        json_array_size(chunks) == 0 || shard < 0 || shard >= shards)
        return err_set(err, ERR_PERMANENT, "disk '%s': malformed shard payload", job->disk);
    struct mig_info m;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    if (open_for(w, job, &m, &p, &ops, err) < 0)
        return -1;
    int rc = -1;
    long long blocks = 0, bytes = 0;
    void *raw = NULL;
    struct convert_plan *plan = NULL;
    struct convert_shard *sh = NULL;
    struct convert_result *result = NULL;
    struct image_sink sink;
    image_sink_init(&sink, p, ops, ref, CONVERT_LAYOUT_FIXED);
    if (image) {
        if (!ops->image_begin) {
            err_set(err, ERR_PERMANENT, "disk '%s': cloud '%s' takes no image file", job->disk,
                    m.cloud);
            goto out;
        }
        plan = image_plan_from(pl, job->disk, err);
        if (!plan)
            goto out;
        uint64_t in_off, in_len;
        convert_plan_shard(plan, (size_t)shard, &in_off, &in_len);
        json_t *first = json_array_get(chunks, 0);
        if (convert_plan_nshards(plan) != (size_t)shards ||
            json_integer_value(json_object_get(first, "offset")) != (json_int_t)in_off) {
            err_set(err, ERR_PERMANENT, "disk '%s' shard %lld: chunks do not match the plan",
                    job->disk, (long long)shard);
            goto out;
        }
        image_sink_init(&sink, p, ops, ref, convert_plan_layout(plan));
        image_sink_range(&sink, in_off, in_len);
        sh = convert_shard_new(plan, (size_t)shard, &sink.sink);
    }
    size_t i;
    json_t *ch;
    json_array_foreach(chunks, i, ch)
    {
        json_int_t index = json_integer_value(json_object_get(ch, "index"));
        json_int_t offset = json_integer_value(json_object_get(ch, "offset"));
        json_int_t length = json_integer_value(json_object_get(ch, "length"));
        const char *sha = json_string_value(json_object_get(ch, "sha256"));
        int zero = json_is_true(json_object_get(ch, "zero"));
        if (length <= 0 || (unsigned long long)length > CHUNK_MAX || (!zero && !sha) ||
            (!image && offset % block != 0)) {
            err_set(err, ERR_PERMANENT, "disk '%s' chunk %lld: bad manifest entry", job->disk,
                    (long long)index);
            goto out;
        }
        if (worker_stopping(w)) {
            err_set(err, ERR_TRANSIENT, "disk '%s' shard %lld: converter stopping", job->disk,
                    (long long)shard);
            goto out;
        }
        if (zero) { /* never stored, never sent */
            if (sh && convert_shard_zero(sh, (uint64_t)length, err) < 0)
                goto shard_err;
            continue;
        }
        free(raw);
        raw = NULL;
        if (fetch_chunk(p, ops, bucket, prefix, job->disk, index, offset, length, sha, &raw, err) <
            0)
            goto out;
        if (sh) {
            if (convert_shard_write(sh, raw, (size_t)length, err) < 0)
                goto shard_err;
        } else {
            long long nb = 0;
            if (ops->disk_write(p, ref, block, (unsigned long long)offset, raw, (size_t)length, &nb,
                                err) < 0)
                goto shard_err;
            blocks += nb;
        }
        bytes += length;
        continue;
    shard_err:
        err_prefix(err, "disk '%s' chunk %lld", job->disk, (long long)index);
        goto out;
    }
    char dk[400], field[64], val[64];
    disk_key(job, dk, sizeof(dk));
    if (sh) {
        result = convert_shard_finish(sh, err);
        if (!result || image_sink_put(&sink, (size_t)shard + 1, err) < 0) {
            err_prefix(err, "disk '%s' shard %lld", job->disk, (long long)shard);
            goto out;
        }
        size_t elen = 0;
        uint8_t *enc = convert_result_encode(result, &elen);
        char *hex = to_hex(enc, elen);
        free(enc);
        snprintf(field, sizeof(field), "result:%lld", (long long)shard);
        job_result_hset(res, dk, field, hex);
        free(hex);
        blocks = (long long)sink.written;
    } else {
        /* Per shard, so a shard run twice does not count twice. */
        snprintf(field, sizeof(field), "blocks:%lld",
                 (long long)json_integer_value(json_object_get(pl, "first")));
        snprintf(val, sizeof(val), "%lld %lld", blocks, bytes);
        job_result_hset(res, dk, field, val);
    }
    /* Progress: the disk bytes this shard covers, added once when the shard settles. */
    long long covered = 0;
    json_array_foreach(chunks, i, ch) covered += json_integer_value(json_object_get(ch, "length"));
    job_result_hincrby(res, dk, "bytes_converted", covered);
    json_t *fin = json_pack("{s:s, s:s, s:I}", "step", "finish", "target", ref, "shards", shards);
    if (image)
        json_object_set(fin, "plan", json_object_get(pl, "plan"));
    char *fins = json_dumps(fin, JSON_COMPACT);
    json_decref(fin);
    job_result_next(res, "convert", job->disk, fins);
    free(fins);
    job_result_message(res, "disk %s shard %lld/%lld: %lld bytes converted, %lld %s written",
                       job->disk, (long long)shard + 1, (long long)shards, covered, blocks,
                       image ? "bytes" : "blocks");
    rc = 0;
out:
    convert_result_free(result);
    if (sh)
        convert_shard_free(sh);
    image_sink_release(&sink);
    convert_plan_free(plan);
    free(raw);
    ops->close(p);
    mig_info_release(&m);
    return rc;
}

static int unhex(const char *s, uint8_t **out, size_t *len)
{
    size_t n = strlen(s);
    if (n % 2)
        return -1;
    *out = xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            free(*out);
            return -1;
        }
        (*out)[i] = (uint8_t)v;
    }
    *len = n / 2;
    return 0;
}

/* Image path of step "finish": head and tail pieces from every shard's result, then join. */
static int finish_image(struct provider *p, const struct provider_ops *ops, const struct job *job,
                        const json_t *pl, redisReply *h, const char *ref,
                        char image[PROVIDER_REF_MAX], uint64_t *total, struct err *err)
{
    struct convert_plan *plan = image_plan_from(pl, job->disk, err);
    if (!plan)
        return -1;
    size_t n = convert_plan_nshards(plan);
    struct convert_result **results = xcalloc(n, sizeof(*results));
    int rc = -1;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        unsigned long long k;
        int used = 0;
        if (sscanf(h->element[i]->str, "result:%llu%n", &k, &used) != 1 ||
            h->element[i]->str[used] != '\0' || k >= n || results[k])
            continue;
        uint8_t *b;
        size_t blen;
        if (unhex(h->element[i + 1]->str, &b, &blen) < 0) {
            err_set(err, ERR_PERMANENT, "disk '%s' shard %llu: stored result is not hex", job->disk,
                    k);
            goto out;
        }
        results[k] = convert_result_decode(plan, b, blen, err);
        free(b);
        if (!results[k]) {
            err_prefix(err, "disk '%s' shard %llu", job->disk, k);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!results[i]) {
            err_set(err, ERR_PERMANENT, "disk '%s': shard %zu has no stored result", job->disk, i);
            goto out;
        }
    struct image_sink sink;
    image_sink_init(&sink, p, ops, ref, convert_plan_layout(plan));
    size_t hlen = 0;
    const uint8_t *head = convert_plan_head(plan, &hlen);
    int pieces = image_sink_pieces(&sink);
    if (pieces && ops->image_put_piece(p, ref, 0, head, hlen, err) < 0) {
        image_sink_release(&sink);
        goto out;
    }
    rc = convert_finish(plan, results, n, &sink.sink, total, err) < 0 ||
                 image_sink_put(&sink, n + 1, err) < 0 ||
                 ops->image_finish(p, ref, pieces ? n + 2 : 0, image, err) < 0
             ? -1
             : 0;
    image_sink_release(&sink);
out:
    for (size_t i = 0; i < n; i++)
        convert_result_free(results[i]);
    free(results);
    convert_plan_free(plan);
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
    char image[PROVIDER_REF_MAX];
    long long blocks = 0, bytes = 0;
    if (json_object_get(pl, "plan")) {
        uint64_t total = 0;
        if (finish_image(p, ops, job, pl, h, ref, image, &total, err) < 0) {
            freeReplyObject(h);
            goto out;
        }
        bytes = (long long)total;
    } else {
        for (size_t i = 0; i + 1 < h->elements; i += 2)
            if (strncmp(h->element[i]->str, "blocks:", 7) == 0) {
                long long b = 0, y = 0;
                if (sscanf(h->element[i + 1]->str, "%lld %lld", &b, &y) == 2) {
                    blocks += b;
                    bytes += y;
                }
            }
        if (ops->disk_finish(p, ref, blocks, err) < 0) {
            freeReplyObject(h);
            goto out;
        }
        snprintf(image, sizeof(image), "%s", ref);
    }
    freeReplyObject(h);
    char nb[32];
    snprintf(nb, sizeof(nb), "%lld", bytes);
    job_result_hset(res, dk, "image", image);
    job_result_hset(res, dk, "image_bytes", nb);
    job_result_next(res, "import", NULL, NULL);
    job_result_message(res, "disk %s converted: %s (%lld bytes)", job->disk, image, bytes);
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
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    return worker_main(&ops);
}
