/*
 * The AWS ImportImage path ("aws_import": "raw" or "vmdk") against moto_server and
 * tests/fakes/ec2import.py (VM Import, which moto lacks; it checks SigV4 itself and
 * registers the imported image in the same moto), through the queue with real workers.
 * moto runs without its signature check: it cannot verify a query value with a '/'
 * (test_aws_s3.c says why), and joining lists "xmigrate/<migration>/..." prefixes.
 * - s3image: pieces joined with one multipart upload (copies, ranged copies, merged small
 *   pieces), the 5 MiB rule (moto refuses a short part, and the plan never makes one),
 *   a join run again after a crash between complete and piece removal, an abandoned
 *   upload aborted, a missing piece named;
 * - convert: a disk cloned to moto S3 as chunks (zero, text and random regions, a size
 *   that is no multiple of a MiB, chunk or shard, a non-zero last byte), converted by two
 *   xm-convert processes with small shards into raw (read back: byte-identical) and into
 *   stream-optimized VMDK (qemu-img check passes, qemu-img compare says identical); a
 *   finish step run again changes nothing;
 * - import: xm-network builds the blueprint's network, xm-import imports the image with
 *   ImportImage, and the VM runs in moto from the imported AMI in the blueprint's subnet;
 *   rollback (the provider's teardown) removes instance, AMI and image files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "aws/aws.h"
#include "aws/s3.h"
#include "aws/s3image.h"
#include "config.h"
#include "harness.h"
#include "http.h"
#include "provider.h"
#include "secret.h"
#include "xmalloc.h"

#define MIB (1024 * 1024)
#define BUCKET "xm-s3image-test"
#define CHUNK MIB
#define DISK_SIZE (20 * MIB + 12345) /* 21 chunks, the last short; no whole MiB or shard */

static const char master_hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static const char blueprint[] =
    "{\"network\":{\"name\":\"corp\",\"cidr\":\"10.70.0.0/16\",\"subnets\":["
    "{\"name\":\"web\",\"cidr\":\"10.70.1.0/24\",\"public\":true}]},"
    "\"hosts\":[{\"host\":\"web1\",\"machine_type\":\"t3.small\",\"subnet\":\"web\"}],"
    "\"firewall\":[{\"protocol\":\"tcp\",\"port\":22,\"source\":\"0.0.0.0/0\"}]}";

struct t {
    struct redis_srv srv;
    struct moto moto;
    struct helper_proc fake; /* ec2import.py, registering images in moto */
    redisContext *c;
    struct aws *a;
    pid_t pids[5];
    unsigned char *disk;
};

/* ---------------------------------------------------------------- setup */

/* The source disk: an MBR signature, text, random, zeros, random, text, last byte 1. */
static unsigned char *make_disk(void)
{
    unsigned char *d = xcalloc(1, DISK_SIZE);
    memcpy(d + 510, "\x55\xaa", 2);
    static const char words[] = "the quick brown fox jumps over the lazy dog 0123456789\n";
    for (size_t i = 1 * MIB; i < 3 * MIB; i++)
        d[i] = (unsigned char)words[i % (sizeof(words) - 1)];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 3 * MIB; i < 11 * MIB; i++) { /* xorshift: does not compress */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d[i] = (unsigned char)x;
    }
    for (size_t i = 16 * MIB; i < 17 * MIB + 500000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d[i] = (unsigned char)(x >> 8);
    }
    for (size_t i = 19 * MIB; i < 19 * MIB + 300000; i++)
        d[i] = (unsigned char)words[(i * 7) % (sizeof(words) - 1)];
    d[DISK_SIZE - 1] = 1;
    return d;
}

static struct aws *client(const struct t *t)
{
    struct aws_config cfg = {.access_key = t->moto.access_key,
                             .secret_key = t->moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = t->moto.endpoint};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    assert_non_null(a);
    return a;
}

static int setup(void **state)
{
    struct t *t = xcalloc(1, sizeof(*t));
    rs_start(&t->srv);
    t->c = rs_connect(&t->srv);
    char log[400];
    snprintf(log, sizeof(log), "%s/moto.log", t->srv.dir);
    moto_start(&t->moto, 0, log);
    /* The fake checks signatures with the moto user's keys and signs its own S3 and EC2
     * calls to moto with them. */
    snprintf(log, sizeof(log), "%s/ec2import.log", t->srv.dir);
    char *argv[] = {"python3",
                    XM_EC2IMPORT_SCRIPT,
                    "--listen",
                    "0",
                    "--access-key",
                    t->moto.access_key,
                    "--secret-key",
                    t->moto.secret_key,
                    "--s3",
                    t->moto.endpoint,
                    "--ec2",
                    t->moto.endpoint,
                    NULL};
    helper_proc_start(&t->fake, argv, log);
    t->a = client(t);
    struct err err = {0};
    assert_int_equal(s3_bucket_ensure(t->a, BUCKET, 30, &err), 0);
    t->disk = make_disk();
    *state = t;
    return 0;
}

/* 0 when no worker log holds a sanitizer report or a secret the workers were given. */
static int logs_clean(const struct t *t)
{
    static const char *const names[] = {"clone", "conv1", "conv2", "network", "import"};
    const char *bad[] = {"Sanitizer", "runtime error:", master_hex, t->moto.secret_key};
    int clean = 1;
    for (size_t i = 0; i < XM_ARRAY_LEN(names); i++) {
        char path[400], line[8192];
        snprintf(path, sizeof(path), "%s/%s.log", t->srv.dir, names[i]);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f))
            for (size_t k = 0; k < XM_ARRAY_LEN(bad); k++)
                if (bad[k][0] && strstr(line, bad[k])) {
                    fprintf(stderr, "%s.log: %s", names[i], line);
                    clean = 0;
                }
        if (f)
            fclose(f);
    }
    return clean ? 0 : -1;
}

static int teardown(void **state)
{
    struct t *t = *state;
    for (size_t i = 0; i < XM_ARRAY_LEN(t->pids); i++)
        if (t->pids[i] > 0)
            stop_process(t->pids[i], SIGTERM);
    int rc = logs_clean(t);
    helper_proc_stop(&t->fake);
    aws_free(t->a);
    moto_stop(&t->moto);
    redisFree(t->c);
    rs_destroy(&t->srv);
    free(t->disk);
    free(t);
    return rc;
}

/* ---------------------------------------------------------------- helpers */

/* Run argv (no shell), its output to the test's log; the exit status. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *get_object(struct t *t, const char *key, size_t *len)
{
    char *body = NULL;
    struct err err = {0};
    if (s3_get(t->a, BUCKET, key, 0, 0, 256 * MIB, &body, len, &err) < 0)
        fail_msg("get %s: %s", key, err.msg);
    return body;
}

struct count {
    const char *prefix;
    size_t n;
};

static int count_one(void *arg, const struct s3_object *obj, struct err *err)
{
    (void)obj;
    (void)err;
    ((struct count *)arg)->n++;
    return 0;
}

static size_t count_objects(struct t *t, const char *prefix)
{
    struct count c = {prefix, 0};
    struct err err = {0};
    assert_int_equal(s3_list(t->a, BUCKET, prefix, 0, count_one, &c, &err), 0);
    return c.n;
}

/* ---------------------------------------------------------------- plan (no server) */

/* Every part but the last is at least min and at most max; the segments cover every
 * byte of every piece, in order. */
static void check_plan(const uint64_t *sizes, size_t n, uint64_t min, uint64_t max)
{
    struct s3image_seg *segs = NULL;
    size_t ns = s3image_plan(sizes, n, min, max, &segs);
    size_t piece = 0;
    uint64_t off = 0, part_len = 0;
    int part = 1;
    for (size_t i = 0; i < ns; i++) {
        while (piece < n && off == sizes[piece]) {
            piece++;
            off = 0;
        }
        assert_int_equal(segs[i].piece, piece);
        assert_int_equal(segs[i].off, off);
        assert_true(segs[i].len > 0);
        off += segs[i].len;
        if (segs[i].part != part) {
            assert_int_equal(segs[i].part, part + 1);
            assert_true(part_len >= min);
            part++;
            part_len = 0;
        }
        part_len += segs[i].len;
        assert_true(part_len <= max);
    }
    while (piece < n && off == sizes[piece]) {
        piece++;
        off = 0;
    }
    assert_int_equal(piece, n); /* every byte placed */
    free(segs);
}

static void test_plan_keeps_the_part_rules(void **state)
{
    (void)state;
    const uint64_t a[] = {0, 3, 0, 12, 1, 7, 0, 2};
    const uint64_t b[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const uint64_t c[] = {25, 5, 4, 6, 11, 9, 10, 1};
    const uint64_t d[] = {0, 0};
    check_plan(a, XM_ARRAY_LEN(a), 5, 10);
    check_plan(b, XM_ARRAY_LEN(b), 5, 10);
    check_plan(c, XM_ARRAY_LEN(c), 5, 10);
    struct s3image_seg *segs = NULL;
    assert_int_equal(s3image_plan(d, 2, 5, 10, &segs), 0);
    free(segs);
    /* 64 KiB head, a 12 MiB piece: the head and the first bytes downloaded, the rest copied
     * with a range. */
    const uint64_t e[] = {65536, 12 * MIB};
    size_t ns = s3image_plan(e, 2, S3IMAGE_PART_MIN, S3IMAGE_PART_MAX, &segs);
    assert_int_equal(ns, 3);
    assert_int_equal(segs[1].part, 1);
    assert_int_equal(segs[0].len + segs[1].len, S3IMAGE_PART_MIN);
    assert_int_equal(segs[2].part, 2);
    assert_int_equal(segs[2].off, segs[1].len);
    free(segs);
}

/* ---------------------------------------------------------------- join */

static void put_pieces(struct t *t, const char *key, const uint64_t *sizes, size_t n,
                       unsigned char **whole, size_t *total)
{
    struct err err = {0};
    *total = 0;
    for (size_t i = 0; i < n; i++)
        *total += sizes[i];
    *whole = xmalloc(*total);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizes[i]; k++)
            (*whole)[at + k] = (unsigned char)((i * 131 + k * 7 + (k >> 12)) & 0xff);
        if (s3image_put_piece(t->a, BUCKET, key, i, *whole + at, sizes[i], &err) < 0)
            fail_msg("put piece %zu: %s", i, err.msg);
        at += sizes[i];
    }
}

static void test_join_is_safe_to_repeat(void **state)
{
    struct t *t = *state;
    struct err err = {0};
    char etag[S3_ETAG_MAX];

    /* The oracle first: moto refuses a part under 5 MiB that is not the last. */
    char *up = s3_multipart_create(t->a, BUCKET, "probe", NULL, &err);
    assert_non_null(up);
    struct s3_part parts[2] = {{.number = 1}, {.number = 2}};
    unsigned char *mib = xcalloc(1, MIB);
    assert_int_equal(
        s3_multipart_upload_part(t->a, BUCKET, "probe", up, 1, mib, MIB, parts[0].etag, &err), 0);
    assert_int_equal(
        s3_multipart_upload_part(t->a, BUCKET, "probe", up, 2, mib, MIB, parts[1].etag, &err), 0);
    assert_int_equal(s3_multipart_complete(t->a, BUCKET, "probe", up, parts, 2, etag, &err), -1);
    assert_non_null(strstr(err.msg, "EntityTooSmall"));
    err_clear(&err);
    s3_multipart_abort(t->a, BUCKET, "probe", up, &err);
    free(up);
    free(mib);

    char key[S3_KEY_MAX + 1];
    assert_int_equal(s3image_key("mig-j", "web1", "d1", "vmdk", key, sizeof(key), &err), 0);
    assert_string_equal(s3image_format_of(key), "vmdk");
    /* head, a big piece, a small one, a medium one, an empty one, a short last one */
    const uint64_t sizes[] = {65536, 12 * MIB, 100000, 7 * MIB, 0, 2 * MIB + 17};
    unsigned char *whole = NULL;
    size_t total = 0;
    assert_int_equal(s3image_begin(t->a, BUCKET, key, &err), 0);
    put_pieces(t, key, sizes, XM_ARRAY_LEN(sizes), &whole, &total);
    /* A writer that died mid-join left an upload behind. */
    char *stale = s3_multipart_create(t->a, BUCKET, key, NULL, &err);
    assert_non_null(stale);
    free(stale);

    struct s3image_report rep;
    if (s3image_join(t->a, BUCKET, key, XM_ARRAY_LEN(sizes), &rep, &err) < 0)
        fail_msg("join: %s", err.msg);
    assert_int_equal(rep.already, 0);
    assert_int_equal(rep.aborted, 1);
    assert_int_equal(rep.parts, 4); /* head+5 MiB, 7 MiB copied, 100 KB+7 MiB, 2 MiB copied */
    assert_int_equal(rep.copied, 2);
    assert_int_equal(rep.size, total);
    size_t len = 0;
    char *got = get_object(t, key, &len);
    assert_int_equal(len, total);
    assert_memory_equal(got, whole, total);
    free(got);
    char prefix[S3_KEY_MAX + 16];
    snprintf(prefix, sizeof(prefix), "%s.piece/", key);
    assert_int_equal(count_objects(t, prefix), 0);
    char **ids = NULL;
    size_t nids = 0;
    assert_int_equal(s3_multipart_uploads(t->a, BUCKET, key, &ids, &nids, &err), 0);
    assert_int_equal(nids, 0);

    /* A crash between complete and removal: the pieces are there again. A second join
     * joins nothing, removes them, and the image is what it was. */
    free(whole);
    put_pieces(t, key, sizes, XM_ARRAY_LEN(sizes), &whole, &total);
    struct s3image_report again;
    if (s3image_join(t->a, BUCKET, key, XM_ARRAY_LEN(sizes), &again, &err) < 0)
        fail_msg("join again: %s", err.msg);
    assert_int_equal(again.already, 1);
    assert_string_equal(again.etag, rep.etag);
    assert_int_equal(count_objects(t, prefix), 0);
    /* And once more with nothing left over. */
    assert_int_equal(s3image_join(t->a, BUCKET, key, XM_ARRAY_LEN(sizes), &again, &err), 0);
    assert_int_equal(again.already, 1);

    /* Converting again (begin) makes the next join real; a missing piece is named. */
    assert_int_equal(s3image_begin(t->a, BUCKET, key, &err), 0);
    free(whole);
    put_pieces(t, key, sizes, 3, &whole, &total);
    assert_int_equal(s3image_join(t->a, BUCKET, key, XM_ARRAY_LEN(sizes), &again, &err), -1);
    assert_non_null(strstr(err.msg, "piece 3 of 6 is missing"));
    assert_non_null(strstr(err.msg, "mig-j/web1/d1/image.vmdk"));
    assert_int_equal(err.kind, ERR_PERMANENT);
    free(whole);
}

/* ---------------------------------------------------------------- through the queue */

static void seed(struct t *t, const char *mig, const char *aws_import, int disks)
{
    unsigned char key[32];
    struct err err = {0};
    assert_int_equal(secret_key_parse(master_hex, key, &err), 0);
    char *plain = xasprintf("{\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\"}",
                            t->moto.access_key, t->moto.secret_key);
    char *sealed = secret_seal(key, "cred-1", (unsigned char *)plain, strlen(plain));
    freeReplyObject(rs_cmd(t->c, "HSET xm:cred:cred-1 kind aws sealed %s", sealed));
    freeReplyObject(rs_cmd(t->c,
                           "HSET xm:mig:%s id %s cloud aws region us-east-1 credential cred-1 "
                           "status approved aws_import %s blueprint %s",
                           mig, mig, aws_import, blueprint));
    freeReplyObject(rs_cmd(t->c, "SADD xm:mig:%s:hosts web1", mig));
    /* what the agent API records for a disk it copies */
    for (int i = 1; i <= disks; i++)
        freeReplyObject(rs_cmd(t->c, "SADD xm:host:%s:web1:disks d%d", mig, i));
    freeReplyObject(rs_cmd(t->c, "HSET xm:disk:%s:web1:d1 boot 1", mig));
    free(plain);
    free(sealed);
}

/* The disk as xm-agent stores it: zstd chunks (none for all-zero ones) and a manifest. */
static void store_disk(struct t *t, const char *prefix)
{
    struct err err = {0};
    char key[300];
    json_t *chunks = json_array();
    for (size_t off = 0, i = 0; off < DISK_SIZE; off += CHUNK, i++) {
        size_t len = DISK_SIZE - off < CHUNK ? DISK_SIZE - off : CHUNK;
        int zero = 1;
        for (size_t k = 0; k < len && zero; k++)
            zero = t->disk[off + k] == 0;
        char sha[65];
        secret_sha256_hex(t->disk + off, len, sha);
        json_array_append_new(chunks, json_pack("{s:I, s:I, s:I, s:s, s:b}", "index", (json_int_t)i,
                                                "offset", (json_int_t)off, "length",
                                                (json_int_t)len, "sha256", sha, "zero", zero));
        if (zero)
            continue;
        size_t cap = ZSTD_compressBound(len);
        unsigned char *z = xmalloc(cap);
        size_t zl = ZSTD_compress(z, cap, t->disk + off, len, 1);
        assert_false(ZSTD_isError(zl));
        snprintf(key, sizeof(key), "%s/%zu.zst", prefix, i);
        assert_int_equal(s3_put(t->a, BUCKET, key, z, zl, NULL, NULL, &err), 0);
        free(z);
    }
    json_t *m = json_pack("{s:I, s:I, s:o}", "device_size", (json_int_t)DISK_SIZE, "chunk_size",
                          (json_int_t)CHUNK, "chunks", chunks);
    char *text = json_dumps(m, JSON_COMPACT);
    snprintf(key, sizeof(key), "%s/manifest.json", prefix);
    assert_int_equal(s3_put(t->a, BUCKET, key, text, strlen(text), NULL, NULL, &err), 0);
    free(text);
    json_decref(m);
}

static pid_t start(struct t *t, const char *bin, const char *arg, const char *name, int shard_mb)
{
    char endpoint[128], fake[128], consumer[64], shard[64];
    snprintf(endpoint, sizeof(endpoint), "XM_AWS_ENDPOINT=%s", t->moto.endpoint);
    snprintf(fake, sizeof(fake), "XM_AWS_EC2IMPORT_ENDPOINT=%s", t->fake.endpoint);
    snprintf(consumer, sizeof(consumer), "XM_CONSUMER=%s", name);
    snprintf(shard, sizeof(shard), "XM_CONVERT_SHARD_MB=%d", shard_mb);
    char *env[] = {endpoint,
                   fake,
                   consumer,
                   shard,
                   "XM_AWS_BUCKET=" BUCKET,
                   "XM_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                   "XM_BLOCK_MS=100",
                   "XM_MAX_ATTEMPTS=2",
                   "XM_RETRY_BASE_MS=50",
                   "XM_AWS_IMPORT_POLL_MS=50",
                   "XM_LOG_LEVEL=debug",
                   NULL};
    char *argv[] = {(char *)bin, (char *)arg, NULL};
    return spawn_worker(&t->srv, name, argv, env);
}

struct cond {
    struct t *t;
    const char *what;
    long long n;
};

static int imports_reach(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN xm:q:import") >= k->n || rs_int(k->t->c, "XLEN xm:dead") > 0;
}

/* A control endpoint of the fake: its JSON reply (new). */
static json_t *fake_json(const struct t *t, const char *path)
{
    char url[200];
    snprintf(url, sizeof(url), "%s%s", t->fake.endpoint, path);
    struct http_client_opts ho = {0};
    struct http_client *hc = http_client_new(&ho);
    struct http_request req = {.method = "GET", .url = url};
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    assert_int_equal(http_send(hc, &req, &resp, &err), 0);
    assert_int_equal(resp.status, 200);
    json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
    assert_non_null(j);
    http_response_release(&resp);
    http_client_free(hc);
    return j;
}

static void dead_letters_fail(struct t *t)
{
    redisReply *r = rs_cmd(t->c, "XRANGE xm:dead - +");
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *fv = r->element[i]->element[1];
        for (size_t k = 0; k + 1 < fv->elements; k += 2)
            if (strcmp(fv->element[k]->str, "error") == 0)
                fail_msg("dead letter: %s", fv->element[k + 1]->str);
    }
    freeReplyObject(r);
}

/* Clone hands the disk to convert (as disks d1..dN: the same copy for each); two
 * converters with shard_mb shards make the images. Returns d1's image reference (new). */
static char *convert(struct t *t, const char *mig, const char *format, int shard_mb, int disks)
{
    seed(t, mig, format, disks);
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/web1/d1", mig);
    store_disk(t, prefix);
    t->pids[0] = start(t, XM_NOOP_BIN, "clone", "clone", shard_mb);
    t->pids[1] = start(t, XM_CONVERT_BIN, NULL, "conv1", shard_mb);
    t->pids[2] = start(t, XM_CONVERT_BIN, NULL, "conv2", shard_mb);
    char payload[600];
    snprintf(payload, sizeof(payload),
             "{\"fanout\": %d, \"next\": \"convert\", \"child\": {\"bucket\": \"" BUCKET "\", "
             "\"manifest\": \"%s/manifest.json\"}}",
             disks, prefix);
    enqueue_job(t->c, "clone", mig, "web1", NULL, payload);
    struct cond k = {t, NULL, 1};
    assert_true(wait_until(imports_reach, &k, 120000));
    dead_letters_fail(t);
    char *image = rs_str(t->c, "HGET xm:disk:%s:web1:d1 image", mig);
    char want[300];
    snprintf(want, sizeof(want), "s3://" BUCKET "/%s/image.%s", prefix, format);
    assert_string_equal(image, want);
    for (int i = 2; i <= disks; i++) {
        char *other = rs_str(t->c, "HGET xm:disk:%s:web1:d%d image", mig, i);
        snprintf(want, sizeof(want), "s3://" BUCKET "/xmigrate/%s/web1/d%d/image.%s", mig, i,
                 format);
        assert_string_equal(other, want);
        free(other);
    }
    char *shards = rs_str(t->c, "HGET xm:disk:%s:web1:d1 shards", mig);
    long long n = (DISK_SIZE / CHUNK + 1 + shard_mb - 1) / shard_mb;
    assert_int_equal(atoll(shards), n);
    free(shards);
    /* the pieces are gone, the join marker stays */
    char pieces[400];
    snprintf(pieces, sizeof(pieces), "%s/image.%s.piece/", prefix, format);
    assert_int_equal(count_objects(t, pieces), 0);
    return image;
}

static void test_raw_image_is_the_disk(void **state)
{
    struct t *t = *state;
    /* 6 MiB shards: pieces of 6 MiB copied inside S3, the short last one too */
    char *image = convert(t, "mig-raw", "raw", 6, 1);
    size_t len = 0;
    char *got = get_object(t, image + strlen("s3://" BUCKET "/"), &len);
    assert_int_equal(len, DISK_SIZE); /* every byte, zeros included */
    assert_memory_equal(got, t->disk, DISK_SIZE);
    free(got);
    free(image);
}

/* The finish step once more (another delivery of it): nothing changes. */
static void finish_again(struct t *t, const char *mig, const char *key)
{
    struct s3_object_info before, after;
    struct err err = {0};
    assert_int_equal(s3_head(t->a, BUCKET, key, &before, &err), 0);
    redisReply *r = rs_cmd(t->c, "XRANGE xm:q:convert - +");
    char *payload = NULL;
    for (size_t i = 0; i < r->elements && !payload; i++) {
        redisReply *fv = r->element[i]->element[1];
        for (size_t k = 0; k + 1 < fv->elements; k += 2)
            if (strcmp(fv->element[k]->str, "payload") == 0 &&
                strstr(fv->element[k + 1]->str, "\"step\":\"finish\""))
                payload = xstrdup(fv->element[k + 1]->str);
    }
    freeReplyObject(r);
    assert_non_null(payload);
    struct cond k = {t, NULL, rs_int(t->c, "XLEN xm:q:import") + 1};
    enqueue_job(t->c, "convert", mig, "web1", "d1", payload);
    free(payload);
    assert_true(wait_until(imports_reach, &k, 60000));
    dead_letters_fail(t);
    assert_int_equal(s3_head(t->a, BUCKET, key, &after, &err), 0);
    assert_string_equal(before.etag, after.etag);
    assert_int_equal(before.size, after.size);
}

static void test_vmdk_image_passes_qemu_img(void **state)
{
    struct t *t = *state;
    /* 3 MiB shards: compressed pieces under 5 MiB, merged into parts */
    char *image = convert(t, "mig-vmdk", "vmdk", 3, 1);
    const char *key = image + strlen("s3://" BUCKET "/");
    size_t len = 0;
    char *got = get_object(t, key, &len);
    char src[400], out[400];
    snprintf(src, sizeof(src), "%s/disk.raw", t->srv.dir);
    snprintf(out, sizeof(out), "%s/disk.vmdk", t->srv.dir);
    write_file(src, t->disk, DISK_SIZE);
    write_file(out, got, len);
    free(got);
    char *check[] = {"qemu-img", "check", "-f", "vmdk", out, NULL};
    assert_int_equal(run(check), 0);
    char *compare[] = {"qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, out, NULL};
    assert_int_equal(run(compare), 0);
    finish_again(t, "mig-vmdk", key);
    free(image);
}

/* ---------------------------------------------------------------- import */

static int host_done_or_dead(void *arg)
{
    struct cond *k = arg;
    char *s = rs_str(k->t->c, "HGET xm:host:%s:web1 status", k->what);
    int done = strcmp(s, "done") == 0 && rs_int(k->t->c, "XLEN xm:q:import") >= 1;
    free(s);
    char *inst = rs_str(k->t->c, "HGET xm:host:%s:web1 instance_id", k->what);
    done = done && inst[0];
    free(inst);
    return done || rs_int(k->t->c, "XLEN xm:dead") > 0;
}

/* k->n import jobs read by the group and none pending. */
static int imports_settled(void *arg)
{
    struct cond *k = arg;
    redisReply *p = rs_cmd(k->t->c, "XPENDING xm:q:import workers");
    long long pend = p->element[0]->integer;
    freeReplyObject(p);
    redisReply *g = rs_cmd(k->t->c, "XINFO GROUPS xm:q:import");
    long long read = 0;
    for (size_t i = 0; g->elements && i + 1 < g->element[0]->elements; i += 2)
        if (strcmp(g->element[0]->element[i]->str, "entries-read") == 0)
            read = g->element[0]->element[i + 1]->integer;
    freeReplyObject(g);
    return (read >= k->n && pend == 0) || rs_int(k->t->c, "XLEN xm:dead") > 0;
}

static int prep_queued(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN xm:q:prep") >= 1 || rs_int(k->t->c, "XLEN xm:dead") > 0;
}

static char *ec2_text(struct t *t, const char *action, const char *const *params, const char *path)
{
    struct err err = {0};
    char *xml = NULL;
    if (aws_ec2(t->a, action, params, &xml, &err) < 0)
        fail_msg("%s: %s", action, err.msg);
    char *v = aws_xml_text(xml, strlen(xml), path);
    free(xml);
    return v ? v : xstrdup("");
}

static const char *lookup_env(const char *name)
{
    return getenv(name);
}

static void test_import_runs_the_vm_from_the_imported_image(void **state)
{
    struct t *t = *state;
    const char *mig = "mig-imp";
    seed(t, mig, "vmdk", 2);
    t->pids[3] = start(t, XM_NETWORK_BIN, NULL, "network", 3);
    enqueue_job(t->c, "network", mig, "-", NULL, "{}");
    struct cond k = {t, mig, 0};
    assert_true(wait_until(prep_queued, &k, 60000));
    dead_letters_fail(t);
    t->pids[4] = start(t, XM_IMPORT_BIN, NULL, "import", 3);
    char *image = convert(t, mig, "vmdk", 3, 2); /* d1 boots, d2 is a data disk */
    assert_true(wait_until(host_done_or_dead, &k, 120000));
    dead_letters_fail(t);

    /* The fake's task imported our object and made the AMI the VM runs from. */
    char *ami = rs_str(t->c, "HGET xm:host:%s:web1 image_id", mig);
    char *instance = rs_str(t->c, "HGET xm:host:%s:web1 instance_id", mig);
    assert_int_equal(strncmp(ami, "ami-", 4), 0);
    json_t *tasks = fake_json(t, "/__tasks");
    assert_int_equal(json_array_size(tasks), 1);
    json_t *task = json_array_get(tasks, 0);
    assert_string_equal(json_string_value(json_object_get(task, "status")), "completed");
    assert_string_equal(json_string_value(json_object_get(task, "image_id")), ami);
    json_t *objects = json_object_get(task, "objects");
    assert_int_equal(json_array_size(objects), 2);
    assert_string_equal(json_string_value(json_array_get(objects, 0)), image);
    char data[300];
    snprintf(data, sizeof(data), "s3://" BUCKET "/xmigrate/%s/web1/d2/image.vmdk", mig);
    assert_string_equal(json_string_value(json_array_get(objects, 1)), data);
    json_decref(tasks);

    const char *byid[] = {"InstanceId.1", instance, NULL};
    char *runs = ec2_text(t, "DescribeInstances", byid, "instancesSet/item/imageId");
    assert_string_equal(runs, ami);
    char *subnet = ec2_text(t, "DescribeInstances", byid, "instancesSet/item/subnetId");
    char *net = rs_str(t->c, "HGET xm:mig:%s network", mig);
    assert_non_null(strstr(net, subnet));
    const char *img[] = {"ImageId.1", ami, NULL};
    char *tagged = ec2_text(t, "DescribeImages", img, "imagesSet/item/tagSet");
    assert_non_null(strstr(tagged, mig)); /* tagged for rollback like the EBS path's */

    /* Import again: the same task, the same VM. */
    enqueue_job(t->c, "import", mig, "web1", NULL, "{}");
    struct cond settled = {t, NULL, 2};
    assert_true(wait_until(imports_settled, &settled, 60000));
    dead_letters_fail(t);
    char *instance2 = rs_str(t->c, "HGET xm:host:%s:web1 instance_id", mig);
    assert_string_equal(instance, instance2);
    json_t *stats = fake_json(t, "/__stats");
    assert_int_equal(json_integer_value(json_object_get(stats, "tasks_created")), 1);
    json_decref(stats);
    const char *running[] = {
        "Filter.1.Name",       "tag:xmigrate:migration", "Filter.1.Value.1", mig, "Filter.2.Name",
        "instance-state-name", "Filter.2.Value.1",       "running",          NULL};
    char *xml = NULL;
    struct err err = {0};
    assert_int_equal(aws_ec2(t->a, "DescribeInstances", running, &xml, &err), 0);
    size_t nrun = 0;
    char **ids = aws_xml_all(xml, strlen(xml), "instanceId", &nrun);
    assert_int_equal(nrun, 1);
    aws_strv_free(ids, nrun);
    free(xml);

    /* Rollback as xm-network runs it: the instance, the AMI, then the image files with the
     * rest of what the migration stored. */
    setenv("XM_AWS_ENDPOINT", t->moto.endpoint, 1);
    setenv("XM_AWS_BUCKET", BUCKET, 1);
    config_release();
    assert_int_equal(config_load_from(lookup_env, &err), 0);
    const struct provider_ops *ops = provider_find("aws");
    json_t *secret = json_pack("{s:s, s:s}", "access_key_id", t->moto.access_key,
                               "secret_access_key", t->moto.secret_key);
    struct provider *p = ops->open(secret, "us-east-1", &err);
    json_decref(secret);
    assert_non_null(p);
    long long stored = 0;
    if (ops->teardown(p, mig, &err) < 0 || ops->storage_delete(p, mig, &stored, &err) < 0)
        fail_msg("rollback: %s", err.msg);
    ops->close(p);
    char *state_after =
        ec2_text(t, "DescribeInstances", byid, "instancesSet/item/instanceState/name");
    assert_string_equal(state_after, "terminated");
    const char *owned[] = {"Owner.1", "self", "ImageId.1", ami, NULL};
    char *left = ec2_text(t, "DescribeImages", owned, "imagesSet/item/imageId");
    assert_string_equal(left, "");
    char prefix[200];
    for (int d = 1; d <= 2; d++) {
        snprintf(prefix, sizeof(prefix), "xmigrate/%s/web1/d%d/image.", mig, d);
        assert_int_equal(count_objects(t, prefix), 0);
    }
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/", mig);
    assert_int_equal(count_objects(t, prefix), 0);
    assert_true(stored >= 4); /* the two images and their join markers at least */
    free(state_after);
    free(left);
    free(ami);
    free(instance);
    free(instance2);
    free(runs);
    free(subnet);
    free(net);
    free(tagged);
    free(image);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_keeps_the_part_rules),
        cmocka_unit_test_setup_teardown(test_join_is_safe_to_repeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_image_is_the_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_image_passes_qemu_img, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_runs_the_vm_from_the_imported_image, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("integration.aws_s3image", tests, NULL, NULL);
}
