/*
 * The cloud-facing phases end to end for AWS, against moto_server (SigV4 checking on):
 * - network: a real xm-network worker takes a network job from Redis, opens the
 *   migration's sealed credential, builds the blueprint's network, records ids and
 *   resources, and starts every host's prep job; a second job creates nothing new;
 * - import: a real xm-import worker takes a host's import job, registers the image from
 *   the host's converted boot disk (an EBS snapshot) and starts the instance in the
 *   blueprint's subnet, records it on the host; a second job starts nothing new;
 * - convert: two real xm-convert workers turn a disk the way clone stores it (a manifest
 *   and zstd chunks in S3) into an EBS snapshot in shards, checking every chunk's hash;
 *   the snapshot read back block by block is the disk, and import is handed off once;
 *   a corrupted chunk fails the disk for good, naming disk, chunk and offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aws/aws.h"
#include "aws/ebs.h"
#include "aws/s3.h"
#include "harness.h"
#include "secret.h"
#include "xmalloc.h"

#include <zstd.h>

#ifndef XM_CONVERT_BIN
#error "XM_CONVERT_BIN must name the xm-convert binary"
#endif
#ifndef XM_NOOP_BIN
#error "XM_NOOP_BIN must name the xm-noop binary"
#endif
#ifndef XM_IMPORT_BIN
#error "XM_IMPORT_BIN must name the xm-import binary"
#endif
#ifndef XM_NETWORK_BIN
#error "XM_NETWORK_BIN must name the xm-network binary"
#endif

static const char master_hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static const char blueprint[] =
    "{\"network\":{\"name\":\"corp\",\"cidr\":\"10.60.0.0/16\",\"subnets\":["
    "{\"name\":\"web\",\"cidr\":\"10.60.1.0/24\",\"public\":true},"
    "{\"name\":\"db\",\"cidr\":\"10.60.2.0/24\"}]},"
    "\"hosts\":[{\"host\":\"web1\",\"machine_type\":\"t3.small\",\"subnet\":\"web\"},"
    "{\"host\":\"db1\",\"machine_type\":\"t3.small\",\"subnet\":\"db\"}],"
    "\"firewall\":[{\"protocol\":\"tcp\",\"port\":443,\"source\":\"0.0.0.0/0\"}]}";

struct t {
    struct redis_srv srv;
    struct moto moto;
    redisContext *c;
    pid_t worker;
    pid_t importer;
    char moto_log[300];
    struct helper_proc proxy; /* faultproxy.py in front of moto, when a test slows it */
};

static int setup(void **state)
{
    struct t *t = xcalloc(1, sizeof(*t));
    rs_start(&t->srv);
    t->c = rs_connect(&t->srv);
    snprintf(t->moto_log, sizeof(t->moto_log), "%s/moto.log", t->srv.dir);
    moto_start(&t->moto, 1, t->moto_log);
    *state = t;
    return 0;
}

/* 1 when no worker log in dir holds needle. */
static int log_has(const char *dir, const char *name, const char *needle)
{
    char path[400], line[8192];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    int found = 0;
    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static int logs_free_of(const char *dir, const char *needle)
{
    const char *names[] = {"network.log", "import.log"};
    int clean = 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "r");
        char line[8192];
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, needle)) {
                fprintf(stderr, "%s leaks a secret: %s", names[i], line);
                clean = 0;
            }
        if (f)
            fclose(f);
    }
    return clean;
}

/* Stop the workers, then fail the test if a log line carries a secret it was given. */
static int teardown(void **state)
{
    struct t *t = *state;
    if (t->worker > 0)
        stop_process(t->worker, SIGTERM);
    if (t->importer > 0)
        stop_process(t->importer, SIGTERM);
    helper_proc_stop(&t->proxy);
    int rc = logs_free_of(t->srv.dir, t->moto.secret_key) &&
                     logs_free_of(t->srv.dir, "WRONGSECRET") && logs_free_of(t->srv.dir, master_hex)
                 ? 0
                 : -1;
    moto_stop(&t->moto);
    redisFree(t->c);
    rs_destroy(&t->srv);
    free(t);
    return rc;
}

/* The state xm-api writes for an approved migration, with its credential sealed. */
static void seed(struct t *t, const char *mig, const char *secret_key)
{
    unsigned char key[32];
    struct err err = {0};
    assert_int_equal(secret_key_parse(master_hex, key, &err), 0);
    char *plain = xasprintf("{\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\"}",
                            t->moto.access_key, secret_key);
    char *sealed = secret_seal(key, "cred-1", (unsigned char *)plain, strlen(plain));
    freeReplyObject(rs_cmd(t->c, "HSET xm:cred:cred-1 kind aws sealed %s", sealed));
    freeReplyObject(rs_cmd(t->c,
                           "HSET xm:mig:%s id %s cloud aws region us-east-1 credential cred-1 "
                           "status approved blueprint %s",
                           mig, mig, blueprint));
    freeReplyObject(rs_cmd(t->c, "SADD xm:mig:%s:hosts web1 db1", mig));
    free(plain);
    free(sealed);
}

static pid_t start(struct t *t, const char *bin, const char *name)
{
    char endpoint[128];
    snprintf(endpoint, sizeof(endpoint), "XM_AWS_ENDPOINT=%s", t->moto.endpoint);
    char *env[] = {endpoint,
                   "XM_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                   "XM_CONSUMER=w1",
                   "XM_BLOCK_MS=100",
                   "XM_MAX_ATTEMPTS=2",
                   "XM_RETRY_BASE_MS=50",
                   "XM_LOG_LEVEL=debug",
                   NULL};
    char *argv[] = {(char *)bin, NULL};
    return spawn_worker(&t->srv, name, argv, env);
}

static void start_worker(struct t *t)
{
    t->worker = start(t, XM_NETWORK_BIN, "network");
}

struct cond {
    struct t *t;
    const char *key;
    long long n;
};

static int xlen_reaches(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN %s", k->key) >= k->n;
}

static struct aws *client(struct t *t)
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

static char *vpc_count_xml(struct t *t, const char *mig)
{
    struct err err = {0};
    struct aws *a = client(t);
    const char *params[] = {"Filter.1.Name", "tag:xmigrate:migration", "Filter.1.Value.1", mig,
                            NULL};
    char *xml = NULL;
    assert_int_equal(aws_ec2(a, "DescribeVpcs", params, &xml, &err), 0);
    aws_free(a);
    return xml;
}

static void test_network_phase_builds_once_and_starts_hosts(void **state)
{
    struct t *t = *state;
    seed(t, "mig-n1", t->moto.secret_key);
    start_worker(t);
    enqueue_job(t->c, "network", "mig-n1", "-", NULL, "{}");
    struct cond k = {t, "xm:q:prep", 2};
    if (!wait_until(xlen_reaches, &k, 60000))
        fail_msg("no prep jobs; dead letters: %lld", rs_int(t->c, "XLEN xm:dead"));

    char *net = rs_str(t->c, "HGET xm:mig:mig-n1 network");
    assert_non_null(strstr(net, "\"network_id\":\"vpc-"));
    assert_non_null(strstr(net, "\"web\":\"subnet-"));
    assert_non_null(strstr(net, "\"db\":\"subnet-"));
    char *status = rs_str(t->c, "HGET xm:mig:mig-n1 status");
    assert_string_equal(status, "migrating");
    assert_true(rs_int(t->c, "SCARD xm:mig:mig-n1:resources") >= 6);
    char *web = rs_str(t->c, "HGET xm:host:mig-n1:web1 phase");
    assert_string_equal(web, "prep");

    /* Again: the same ids, still one VPC. */
    enqueue_job(t->c, "network", "mig-n1", "-", NULL, "{}");
    k.n = 4;
    assert_true(wait_until(xlen_reaches, &k, 60000));
    char *net2 = rs_str(t->c, "HGET xm:mig:mig-n1 network");
    assert_string_equal(net, net2);
    char *xml = vpc_count_xml(t, "mig-n1");
    size_t n = 0;
    char **ids = aws_xml_all(xml, strlen(xml), "vpcId", &n);
    assert_int_equal(n, 1);
    aws_strv_free(ids, n);
    free(xml);
    free(net);
    free(net2);
    free(status);
    free(web);
}

static void test_bad_credential_fails_the_host_permanently(void **state)
{
    struct t *t = *state;
    seed(t, "mig-n2", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGSECRET");
    start_worker(t);
    enqueue_job(t->c, "network", "mig-n2", "-", NULL, "{}");
    struct cond k = {t, "xm:dead", 1};
    assert_true(wait_until(xlen_reaches, &k, 60000));
    redisReply *r = rs_cmd(t->c, "XRANGE xm:dead - +");
    int found = 0;
    for (size_t i = 0; i + 1 < r->element[0]->element[1]->elements; i += 2) {
        redisReply *fv = r->element[0]->element[1];
        if (strcmp(fv->element[i]->str, "error") == 0) {
            found = 1;
            assert_non_null(strstr(fv->element[i + 1]->str, "AWS rejected the credentials"));
            assert_null(strstr(fv->element[i + 1]->str, "WRONGSECRET"));
        }
        if (strcmp(fv->element[i]->str, "attempt") == 0)
            assert_string_equal(fv->element[i + 1]->str, "1"); /* permanent: not retried */
    }
    assert_true(found);
    freeReplyObject(r);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:prep"), 0);
}

static int host_done(void *arg)
{
    struct cond *k = arg;
    char *s = rs_str(k->t->c, "HGET xm:host:%s status", k->key);
    int ok = strcmp(s, "done") == 0;
    free(s);
    return ok || rs_int(k->t->c, "XLEN xm:dead") > 0;
}

/* A 1 GiB boot disk as convert leaves it: an EBS snapshot with a few blocks. */
static void converted_disk(struct t *t, const char *mig, const char *host, char *snap_id)
{
    struct aws *a = client(t);
    struct err err = {0};
    struct ebs_tags tags = {.migration = mig, .host = host, .disk = "sda"};
    struct ebs_snapshot snap;
    assert_int_equal(ebs_start(a, 1, "boot disk", &tags, NULL, &snap, &err), 0);
    unsigned char *block = xcalloc(1, (size_t)snap.block_size);
    memcpy(block + 510, "\x55\xaa", 2); /* an MBR signature in block 0 */
    assert_int_equal(ebs_put_block(a, &snap, 0, block, (size_t)snap.block_size, &err), 0);
    assert_int_equal(ebs_complete(a, snap.id, 1, &err), 0);
    assert_int_equal(ebs_wait_completed(a, snap.id, 60, &err), 0);
    strcpy(snap_id, snap.id);
    freeReplyObject(rs_cmd(t->c, "SADD xm:host:%s:%s:disks sda", mig, host));
    freeReplyObject(
        rs_cmd(t->c, "HSET xm:disk:%s:%s:sda image %s boot 1 size 1073741824", mig, host, snap.id));
    free(block);
    aws_free(a);
}

static void test_import_phase_starts_the_vm_once(void **state)
{
    struct t *t = *state;
    seed(t, "mig-i1", t->moto.secret_key);
    start_worker(t);
    enqueue_job(t->c, "network", "mig-i1", "-", NULL, "{}");
    struct cond k = {t, "xm:q:prep", 2};
    assert_true(wait_until(xlen_reaches, &k, 60000));
    char snap[64];
    converted_disk(t, "mig-i1", "web1", snap);

    t->importer = start(t, XM_IMPORT_BIN, "import");
    enqueue_job(t->c, "import", "mig-i1", "web1", NULL, "{}");
    struct cond done = {t, "mig-i1:web1", 0};
    assert_true(wait_until(host_done, &done, 120000));
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 0);
    char *instance = rs_str(t->c, "HGET xm:host:mig-i1:web1 instance_id");
    char *ip = rs_str(t->c, "HGET xm:host:mig-i1:web1 private_ip");
    assert_int_equal(strncmp(instance, "i-", 2), 0);
    assert_int_equal(strncmp(ip, "10.60.1.", 8), 0); /* the blueprint's "web" subnet */

    /* The instance is where the blueprint says, tagged with the migration and host. */
    struct aws *a = client(t);
    struct err err = {0};
    const char *params[] = {"InstanceId.1", instance, NULL};
    char *xml = NULL;
    assert_int_equal(aws_ec2(a, "DescribeInstances", params, &xml, &err), 0);
    char *net = rs_str(t->c, "HGET xm:mig:mig-i1 network");
    char *subnet = aws_xml_text(xml, strlen(xml), "instancesSet/item/subnetId");
    char *type = aws_xml_text(xml, strlen(xml), "instancesSet/item/instanceType");
    assert_non_null(strstr(net, subnet));
    assert_string_equal(type, "t3.small");
    assert_non_null(strstr(xml, "xmigrate:host"));

    /* Again: the same instance, no second one. */
    enqueue_job(t->c, "import", "mig-i1", "web1", NULL, "{}");
    k.key = "xm:events";
    long long before = rs_int(t->c, "XLEN xm:q:import");
    assert_int_equal(before, 2);
    struct cond two = {t, "xm:q:import", 2};
    assert_true(wait_until(xlen_reaches, &two, 1000));
    /* Wait until the second job is settled (nothing pending), then count instances. */
    long long deadline = mono_ms() + 120000;
    for (;;) {
        redisReply *p = rs_cmd(t->c, "XPENDING xm:q:import workers");
        long long pend = p->element[0]->integer;
        freeReplyObject(p);
        redisReply *g = rs_cmd(t->c, "XINFO GROUPS xm:q:import");
        long long read = 0;
        for (size_t i = 0; i + 1 < g->element[0]->elements; i += 2)
            if (strcmp(g->element[0]->element[i]->str, "entries-read") == 0)
                read = g->element[0]->element[i + 1]->integer;
        freeReplyObject(g);
        if (read == 2 && pend == 0)
            break;
        assert_true(mono_ms() < deadline);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    char *instance2 = rs_str(t->c, "HGET xm:host:mig-i1:web1 instance_id");
    assert_string_equal(instance, instance2);
    const char *filter[] = {"Filter.1.Name",
                            "tag:xmigrate:migration",
                            "Filter.1.Value.1",
                            "mig-i1",
                            "Filter.2.Name",
                            "instance-state-name",
                            "Filter.2.Value.1",
                            "running",
                            NULL};
    char *all = NULL;
    assert_int_equal(aws_ec2(a, "DescribeInstances", filter, &all, &err), 0);
    size_t n = 0;
    char **ids = aws_xml_all(all, strlen(all), "instanceId", &n);
    assert_int_equal(n, 1);
    aws_strv_free(ids, n);
    free(all);
    free(instance);
    free(instance2);
    free(ip);
    free(xml);
    free(net);
    free(subnet);
    free(type);
    aws_free(a);
}

/* ---- convert */

#define CV_CHUNK (512 * 1024)
#define CV_SIZE (3 * 1024 * 1024 + 100) /* 7 chunks, the last one short */

static unsigned char *cv_image(void)
{
    unsigned char *img = xcalloc(1, CV_SIZE);
    memcpy(img + 510, "\x55\xaa", 2);
    for (int i = 0; i < 8192; i++)
        img[CV_CHUNK + 4096 + i] = (unsigned char)('a' + i % 26);
    for (int i = 0; i < 8192; i++)
        img[5 * CV_CHUNK + 100 + i] = (unsigned char)(i * 7919 >> 3);
    img[CV_SIZE - 1] = 1;
    return img;
}

/* Store img the way xm-agent does: zstd chunks and a manifest, written last. */
static void cv_store(struct aws *a, const char *bucket, const char *prefix,
                     const unsigned char *img, int corrupt_chunk)
{
    struct err err = {0};
    char etag[S3_ETAG_MAX], key[300];
    json_t *chunks = json_array();
    for (size_t off = 0, i = 0; off < CV_SIZE; off += CV_CHUNK, i++) {
        size_t len = CV_SIZE - off < CV_CHUNK ? CV_SIZE - off : CV_CHUNK;
        int zero = 1;
        for (size_t k = 0; k < len && zero; k++)
            zero = img[off + k] == 0;
        char sha[65];
        secret_sha256_hex(img + off, len, sha);
        json_array_append_new(chunks, json_pack("{s:I, s:I, s:I, s:s, s:b}", "index", (json_int_t)i,
                                                "offset", (json_int_t)off, "length",
                                                (json_int_t)len, "sha256", sha, "zero", zero));
        if (zero)
            continue;
        size_t cap = ZSTD_compressBound(len);
        unsigned char *z = xmalloc(cap);
        size_t zl = ZSTD_compress(z, cap, img + off, len, 3);
        assert_false(ZSTD_isError(zl));
        if ((int)i == corrupt_chunk)
            z[zl / 2] ^= 0x40; /* a flipped bit in storage */
        snprintf(key, sizeof(key), "%s/%zu.zst", prefix, i);
        assert_int_equal(s3_put(a, bucket, key, z, zl, NULL, etag, &err), 0);
        free(z);
    }
    json_t *m = json_pack("{s:I, s:I, s:o}", "device_size", (json_int_t)CV_SIZE, "chunk_size",
                          (json_int_t)CV_CHUNK, "chunks", chunks);
    char *text = json_dumps(m, JSON_COMPACT);
    snprintf(key, sizeof(key), "%s/manifest.json", prefix);
    assert_int_equal(s3_put(a, bucket, key, text, strlen(text), NULL, etag, &err), 0);
    free(text);
    json_decref(m);
}

static pid_t start_argv(struct t *t, char *const argv[], const char *name)
{
    char endpoint[128];
    snprintf(endpoint, sizeof(endpoint), "XM_AWS_ENDPOINT=%s",
             t->proxy.pid > 0 ? t->proxy.endpoint : t->moto.endpoint);
    char consumer[64];
    snprintf(consumer, sizeof(consumer), "XM_CONSUMER=%s", name);
    char *env[] = {endpoint,
                   "XM_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                   consumer,
                   "XM_BLOCK_MS=100",
                   "XM_MAX_ATTEMPTS=2",
                   "XM_RETRY_BASE_MS=50",
                   "XM_LOG_LEVEL=debug",
                   "XM_CONVERT_SHARD_MB=2",         /* 4 chunks of 512 KiB: the disk in 2 shards */
                   "XM_VISIBILITY_TIMEOUT_MS=2000", /* a killed worker's job is taken over soon */
                   "XM_HEARTBEAT_MS=300",
                   NULL};
    return spawn_worker(&t->srv, name, argv, env);
}

static int import_or_dead(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN xm:q:import") >= 1 || rs_int(k->t->c, "XLEN xm:dead") >= 1;
}

/* A converter holds a shard: the disk step is settled and it has a job pending. */
static int converter_in_shard(void *arg)
{
    struct cond *k = arg;
    char *shards = rs_str(k->t->c, "HGET xm:disk:%s:web1:d1 shards", k->key);
    int settled = shards[0] != '\0';
    free(shards);
    if (!settled)
        return 0;
    for (k->n = 1; k->n <= 2; k->n++) {
        redisReply *r = rs_cmd(k->t->c, "XPENDING xm:q:convert workers - + 10 conv%lld", k->n);
        size_t held = r->elements;
        freeReplyObject(r);
        if (held >= 1)
            return 1;
    }
    return 0;
}

static void run_convert(struct t *t, const char *mig, int corrupt_chunk, int kill_mid_shard,
                        pid_t pids[4])
{
    seed(t, mig, t->moto.secret_key);
    struct aws *a = client(t);
    struct err err = {0};
    const char *bucket = "xm-convert-test";
    assert_int_equal(s3_bucket_ensure(a, bucket, 30, &err), 0);
    unsigned char *img = cv_image();
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/web1/d1", mig);
    cv_store(a, bucket, prefix, img, corrupt_chunk);
    free(img);
    aws_free(a);

    if (kill_mid_shard) {
        /* Every EBS block write takes a while, so a shard is still running when conv1 dies. */
        char rules[] = "[{\"match\": \"PUT /snapshots/\", \"delay_ms\": 40}]";
        char log[400];
        snprintf(log, sizeof(log), "%s/proxy.log", t->srv.dir);
        char *argv[] = {"python3",    XM_FAULTPROXY_SCRIPT, "--listen", "0",
                        "--upstream", t->moto.endpoint,     "--rules",  rules,
                        NULL};
        helper_proc_start(&t->proxy, argv, log);
    }
    char *clone_argv[] = {XM_NOOP_BIN, "clone", NULL};
    char *conv_argv[] = {XM_CONVERT_BIN, NULL};
    pids[0] = start_argv(t, clone_argv, "clone");
    pids[1] = start_argv(t, conv_argv, "conv1");
    pids[2] = start_argv(t, conv_argv, "conv2");
    /* What clone hands off: one convert job per disk, in the host's fan-in group. */
    char payload[600];
    snprintf(payload, sizeof(payload),
             "{\"fanout\": 1, \"next\": \"convert\", \"child\": {\"bucket\": \"%s\", "
             "\"manifest\": \"%s/manifest.json\"}}",
             bucket, prefix);
    enqueue_job(t->c, "clone", mig, "web1", NULL, payload);
    struct cond k = {t, NULL, 0};
    if (kill_mid_shard) {
        struct cond s = {t, mig, 0};
        assert_true(wait_until(converter_in_shard, &s, 60000));
        int status = stop_process(pids[s.n], SIGKILL);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        pids[s.n] = 0;
        char other[32];
        snprintf(other, sizeof(other), "conv%lld.log", 3 - s.n);
        assert_true(wait_until(import_or_dead, &k, 120000));
        assert_true(log_has(t->srv.dir, other, "job taken over"));
    }
    assert_true(wait_until(import_or_dead, &k, 120000));
}

static void stop_all(pid_t pids[4])
{
    for (int i = 0; i < 3; i++)
        if (pids[i] > 0)
            stop_process(pids[i], SIGTERM);
}

/* Two converters, or one killed mid-shard and the other taking its shard over: either
 * way the disk is written once, completed once, and reads back as the source. */
static void convert_and_check(struct t *t, const char *mig, int kill_mid_shard)
{
    pid_t pids[4] = {0};
    run_convert(t, mig, -1, kill_mid_shard, pids);
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:import"), 1);
    char *snap = rs_str(t->c, "HGET xm:disk:%s:web1:d1 image", mig);
    assert_int_equal(strncmp(snap, "snap-", 5), 0);
    char *shards = rs_str(t->c, "HGET xm:disk:%s:web1:d1 shards", mig);
    assert_string_equal(shards, "2");
    char *done = rs_str(t->c, "HGET xm:disk:%s:web1:d1 bytes_converted", mig);
    assert_int_equal(atoll(done), CV_SIZE); /* progress counted once per shard */
    free(done);

    /* Read the snapshot back: it is the disk, zeros where no block was written. */
    struct aws *a = client(t);
    struct err err = {0};
    struct ebs_block_list list;
    assert_int_equal(ebs_list_blocks(a, snap, &list, &err), 0);
    unsigned char *img = cv_image();
    size_t padded = CV_SIZE + 4096;
    unsigned char *got = xcalloc(1, padded);
    unsigned char buf[1 << 20];
    for (size_t i = 0; i < list.n; i++) {
        size_t len = 0;
        assert_int_equal(ebs_get_block(a, snap, &list.v[i], buf, sizeof(buf), &len, &err), 0);
        size_t at = (size_t)list.v[i].index * len;
        assert_true(at + len <= padded);
        memcpy(got + at, buf, len);
    }
    assert_memory_equal(got, img, CV_SIZE);
    ebs_block_list_release(&list);
    stop_all(pids);
    free(got);
    free(img);
    free(snap);
    free(shards);
    aws_free(a);
}

static void test_convert_phase_writes_the_disk_once(void **state)
{
    convert_and_check(*state, "mig-c1", 0);
}

static void test_killed_converter_shard_is_taken_over(void **state)
{
    convert_and_check(*state, "mig-c3", 1);
}

static void test_corrupt_chunk_fails_the_disk(void **state)
{
    struct t *t = *state;
    pid_t pids[4] = {0};
    run_convert(t, "mig-c2", 5, 0, pids);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:import"), 0);
    redisReply *r = rs_cmd(t->c, "XRANGE xm:dead - +");
    assert_int_equal(r->elements, 1);
    redisReply *fv = r->element[0]->element[1];
    int found = 0;
    for (size_t i = 0; i + 1 < fv->elements; i += 2)
        if (strcmp(fv->element[i]->str, "error") == 0) {
            found = 1;
            const char *e = fv->element[i + 1]->str;
            assert_non_null(strstr(e, "disk 'd1' chunk 5 at offset 2621440"));
        }
    assert_true(found);
    freeReplyObject(r);
    char *image = rs_str(t->c, "HGET xm:disk:mig-c2:web1:d1 image");
    assert_string_equal(image, ""); /* nothing reported converted */
    free(image);
    stop_all(pids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_network_phase_builds_once_and_starts_hosts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_credential_fails_the_host_permanently, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_import_phase_starts_the_vm_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_convert_phase_writes_the_disk_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_chunk_fails_the_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_converter_shard_is_taken_over, setup, teardown),
    };
    return cmocka_run_group_tests_name("integration.network_phase", tests, NULL, NULL);
}
