/*
 * The GCP provider (cloud/gcp/provider.c) through provider_find("gcp"), against
 * tests/fakes/gcp.py with XM_GCP_* pointing at it:
 *   - storage_ensure, then write_urls: V4 signed PUTs the agent sends with no credential
 *     and no extra header, stored under the AWS naming; read_url and read_object read them
 *     back; a tampered signature (SignatureDoesNotMatch) and an expired URL are refused;
 *   - network_ensure twice (nothing inserted the second time);
 *   - the image path: a disk written by the convert library as a GCE tar.gz (CONCAT layout)
 *     in enough shards that compose needs more than one round (> 32 pieces), through
 *     image_begin / image_put_piece / image_finish; the result downloaded and unpacked by
 *     GNU tar: disk.raw is the source plus zero padding to a GiB; the pieces are gone;
 *     image_finish again returns the same image;
 *   - vm_launch from that image with a data disk: RUNNING in the zone and subnetwork, an
 *     internal and an external address, the guest OS features from the boot mode; a
 *     second vm_launch creates nothing;
 *   - network_delete removes every instance, disk, image, firewall, subnetwork and the
 *     network, in dependency order, and a second one removes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"
#include "gcp/gce.h"
#include "gcp/gcp.h"
#include "gcp/gcs.h"
#include "gcp/signedurl.h"
#include "http.h"
#include "provider.h"
#include "test_gcp_support.h"
#include "xmalloc.h"

#define MIG "0d3c9a51-5b7e-4f00-8a11-2233445566aa"
#define DISK_SIZE (9u * 1024 * 1024 + 1000)
#define SHARD (256u * 1024)

static struct gcpfake fake;
static const struct provider_ops *ops;
static struct provider *p;
static struct gcp *inspect; /* a client of our own, to look at the fake's resources */
static char image[PROVIDER_REF_MAX];
static struct net_result net;

static int setup(void **state)
{
    (void)state;
    gcpfake_start(&fake, NULL);
    gcpfake_env(&fake);
    ops = provider_find("gcp");
    assert_non_null(ops);
    json_t *secret = gcpfake_secret(&fake);
    struct err err = {0};
    p = ops->open(secret, "us-central1", &err);
    json_decref(secret);
    if (!p)
        fail_msg("open: %s", err.msg);
    inspect = gcpfake_client(&fake, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ops->close(p);
    gcp_free(inspect);
    gcpfake_stop(&fake);
    return 0;
}

/* ---------------------------------------------------------------- storage */

static void test_signed_urls(void **state)
{
    (void)state;
    struct err err = {0};
    char bucket[64];
    GCP_OK(ops->storage_ensure(p, bucket, sizeof(bucket), &err));
    assert_int_equal(strncmp(bucket, "xmigrate-", 9), 0);
    GCP_OK(ops->storage_ensure(p, bucket, sizeof(bucket), &err));
    long long idx[] = {0, 5};
    char *urls[2], *manifest = NULL;
    GCP_OK(ops->write_urls(p, MIG, "web1", "sda", idx, 2, 3600, urls, &manifest, &err));
    assert_int_equal(gcpfake_send("PUT", urls[0], "chunk zero", 10, NULL), 200);
    assert_int_equal(gcpfake_send("PUT", urls[1], "chunk five", 10, NULL), 200);
    assert_int_equal(gcpfake_send("PUT", manifest, "{\"chunks\":2}", 12, NULL), 200);
    char *data = NULL;
    size_t n = 0;
    GCP_OK(ops->read_object(p, bucket, "xmigrate/" MIG "/web1/sda/5.zst", 1024, &data, &n, &err));
    assert_int_equal(n, 10);
    assert_memory_equal(data, "chunk five", 10);
    free(data);
    char *rurl = ops->read_url(p, MIG, "web1", "sda", "manifest.json", 600, &err);
    assert_non_null(rurl);
    assert_int_equal(gcpfake_send("GET", rurl, NULL, 0, &data), 200);
    assert_string_equal(data, "{\"chunks\":2}");
    free(data);

    /* A signature changed in one digit; a URL for another object; an expired URL. */
    char *bad = xstrdup(urls[0]);
    char *sig = strstr(bad, "X-Goog-Signature=") + 17;
    sig[10] = sig[10] == '0' ? '1' : '0';
    assert_int_equal(gcpfake_send("PUT", bad, "evil", 4, &data), 403);
    assert_non_null(strstr(data, "SignatureDoesNotMatch"));
    free(data);
    free(bad);
    bad = xstrdup(urls[1]);
    memcpy(strstr(bad, "/5.zst"), "/6.zst", 6);
    assert_int_equal(gcpfake_send("PUT", bad, "evil", 4, NULL), 403);
    free(bad);
    assert_true(gcpfake_stat(&fake, "signed_rejected") >= 2);
    struct gcs_sign_request r = {.method = "PUT",
                                 .scheme = "http",
                                 .host = fake.endpoint + 7,
                                 .bucket = bucket,
                                 .object = "xmigrate/late",
                                 .when = time(NULL) - 120,
                                 .expires = 60};
    char *late = gcs_signed_url(gcp_key(inspect), GCPFAKE_EMAIL, &r, NULL, &err);
    assert_non_null(late);
    assert_int_equal(gcpfake_send("PUT", late, "x", 1, &data), 400);
    assert_non_null(strstr(data, "ExpiredToken"));
    free(data);
    free(late);
    free(rurl);
    free(urls[0]);
    free(urls[1]);
    free(manifest);
}

/* ---------------------------------------------------------------- network */

static struct net_spec *spec_new(void)
{
    struct net_spec *s = xcalloc(1, sizeof(*s));
    xstrlcpy(s->migration, MIG, sizeof(s->migration));
    xstrlcpy(s->name, "shop", sizeof(s->name));
    xstrlcpy(s->cidr, "10.40.0.0/16", sizeof(s->cidr));
    s->n_subnets = 1;
    xstrlcpy(s->subnets[0].name, "front", sizeof(s->subnets[0].name));
    xstrlcpy(s->subnets[0].cidr, "10.40.1.0/24", sizeof(s->subnets[0].cidr));
    s->subnets[0].public = 1;
    s->n_rules = 2;
    s->rules[0] = (struct net_rule){"tcp", 443, 443, "0.0.0.0/0", "https"};
    s->rules[1] = (struct net_rule){"tcp", 22, 22, "10.0.0.0/8", "ssh"};
    return s;
}

static long long created(const char *what)
{
    char name[64];
    snprintf(name, sizeof(name), "inserts.%s", what);
    return gcpfake_stat(&fake, name);
}

static void test_network_twice(void **state)
{
    (void)state;
    struct err err = {0};
    struct net_spec *s = spec_new();
    GCP_OK(ops->network_ensure(p, s, &net, &err));
    long long n = created("networks"), sn = created("subnetworks"), fw = created("firewalls");
    assert_int_equal(n, 1);
    assert_int_equal(sn, 1);
    assert_int_equal(fw, 2);
    struct net_result again;
    GCP_OK(ops->network_ensure(p, s, &again, &err));
    assert_int_equal(created("networks"), n);
    assert_int_equal(created("subnetworks"), sn);
    assert_int_equal(created("firewalls"), fw);
    assert_string_equal(again.network_id, net.network_id);
    assert_string_equal(again.subnet_ids[0], net.subnet_ids[0]);
    assert_string_equal(again.firewall_id, net.firewall_id);
    free(s);
}

/* ---------------------------------------------------------------- image */

struct piece {
    unsigned char *buf;
    size_t len;
};

static int to_piece(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct piece *pc = ctx;
    if (off != pc->len)
        return err_set(err, ERR_PERMANENT, "a CONCAT write is not contiguous");
    pc->buf = xrealloc(pc->buf, pc->len + len);
    memcpy(pc->buf + pc->len, buf, len);
    pc->len += len;
    return 0;
}

static unsigned char *source_disk(void)
{
    unsigned char *d = xcalloc(1, DISK_SIZE);
    uint32_t x = 12345;
    for (size_t i = 0; i < DISK_SIZE; i++) {
        size_t block = i / 4096;
        if (block % 5 == 3)
            continue; /* holes */
        if (block % 7 == 0) {
            x = x * 1103515245u + 12345u;
            d[i] = (unsigned char)(x >> 16);
        } else {
            d[i] = (unsigned char)("xmigrate GCE image test line\n"[i % 29]);
        }
    }
    return d;
}

/* GNU tar -xzOf file disk.raw: compare the stream with src + zeros up to disk_size. */
static void check_with_tar(const char *file, const unsigned char *src, size_t src_len,
                           uint64_t disk_size)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp("tar", "tar", "-xzOf", file, "disk.raw", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    static unsigned char buf[1 << 20];
    uint64_t at = 0;
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < r; i++, at++) {
            unsigned char want = at < src_len ? src[at] : 0;
            if (buf[i] != want)
                fail_msg("disk.raw differs at byte %llu", (unsigned long long)at);
        }
    }
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(at, disk_size);
}

static void test_image_compose(void **state)
{
    (void)state;
    struct err err = {0};
    assert_string_equal(ops->image_format, "gce-tar");
    assert_null(ops->image_write);
    unsigned char *src = source_disk();
    struct convert_params prm = {.format = CONVERT_GCE_TAR,
                                 .in_size = DISK_SIZE,
                                 .shard_size = SHARD,
                                 .created = 1700000000,
                                 .level = 1};
    struct convert_plan *plan = convert_plan_new(&prm, &err);
    assert_non_null(plan);
    assert_int_equal(convert_plan_layout(plan), CONVERT_LAYOUT_CONCAT);
    size_t n = convert_plan_nshards(plan);
    size_t npieces = n + 2;
    assert_true(npieces > 32);
    char ref[PROVIDER_REF_MAX];
    GCP_OK(ops->image_begin(p, MIG, "web1", "sda", 0, ref, &err));

    size_t hlen = 0;
    const uint8_t *head = convert_plan_head(plan, &hlen);
    GCP_OK(ops->image_put_piece(p, ref, 0, head, hlen, &err));
    struct convert_result **results = xcalloc(n, sizeof(*results));
    for (size_t k = n; k-- > 0;) { /* any order: last shard first */
        uint64_t off, len;
        convert_plan_shard(plan, k, &off, &len);
        struct piece pc = {0};
        struct convert_sink sink = {.write = to_piece, .ctx = &pc};
        struct convert_shard *sh = convert_shard_new(plan, k, &sink);
        GCP_OK(convert_shard_write(sh, src + off, (size_t)len, &err));
        results[k] = convert_shard_finish(sh, &err);
        assert_non_null(results[k]);
        convert_shard_free(sh);
        GCP_OK(ops->image_put_piece(p, ref, k + 1, pc.buf, pc.len, &err));
        free(pc.buf);
    }
    struct piece tail = {0};
    struct convert_sink tsink = {.write = to_piece, .ctx = &tail};
    uint64_t total = 0;
    GCP_OK(convert_finish(plan, results, n, &tsink, &total, &err));
    GCP_OK(ops->image_put_piece(p, ref, n + 1, tail.buf, tail.len, &err));
    free(tail.buf);
    /* A stale piece beyond the image (an earlier plan) is never joined. */
    GCP_OK(ops->image_put_piece(p, ref, n + 5, "junk", 4, &err));

    long long calls = gcpfake_stat(&fake, "compose_calls");
    GCP_OK(ops->image_finish(p, ref, npieces, image, &err));
    assert_true(gcpfake_stat(&fake, "compose_calls") - calls >= 3); /* two rounds */
    char want[PROVIDER_REF_MAX + 8];
    snprintf(want, sizeof(want), "gs://%s", ref);
    assert_string_equal(image, want);

    /* Download it, unpack it with GNU tar, compare. */
    char bucket[64];
    const char *object = strchr(ref, '/') + 1;
    snprintf(bucket, sizeof(bucket), "%.*s", (int)(object - 1 - ref), ref);
    char *data = NULL;
    size_t len = 0;
    GCP_OK(ops->read_object(p, bucket, object, 256u << 20, &data, &len, &err));
    assert_int_equal(len, total);
    char file[400];
    snprintf(file, sizeof(file), "%s/image.tar.gz", fake.dir);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    free(data);
    check_with_tar(file, src, DISK_SIZE, convert_plan_disk_size(plan));
    unlink(file);

    /* The pieces are gone; finishing again (a retried job) gives the same image. */
    struct gcs_object *objs = NULL;
    size_t nobj = 0;
    char prefix[PROVIDER_REF_MAX + 16];
    snprintf(prefix, sizeof(prefix), "%s.", object);
    GCP_OK(gcs_list(inspect, bucket, prefix, &objs, &nobj, &err));
    assert_int_equal(nobj, 0);
    gcs_objects_free(objs, nobj);
    char again[PROVIDER_REF_MAX];
    GCP_OK(ops->image_finish(p, ref, npieces, again, &err));
    assert_string_equal(again, image);

    for (size_t k = 0; k < n; k++)
        convert_result_free(results[k]);
    free(results);
    convert_plan_free(plan);
    free(src);
}

/* ---------------------------------------------------------------- VM */

static void test_vm_launch(void **state)
{
    (void)state;
    struct err err = {0};
    assert_true(image[0]); /* from test_image_compose */
    const char *data_images[] = {image};
    struct vm_launch_spec spec = {.migration = MIG,
                                  .host = "web1",
                                  .boot_image = image,
                                  .data_images = data_images,
                                  .n_data_images = 1,
                                  .arch = "x86_64",
                                  .boot_mode = "uefi",
                                  .machine_type = "e2-medium",
                                  .subnet_id = net.subnet_ids[0],
                                  .firewall_id = net.firewall_id,
                                  .public_ip = 1};
    struct vm_launch_result out;
    assert_int_equal(gcpfake_ctl(&fake, "POST", "/__config", "{\"instance_steps\": 4}", NULL), 200);
    GCP_OK(ops->vm_launch(p, &spec, &out, &err));
    print_message("  %s at %s, public %s\n", out.instance_id, out.private_ip, out.public_ip);
    assert_int_equal(strncmp(out.private_ip, "10.40.1.", 8), 0);
    assert_true(out.public_ip[0]);
    assert_int_equal(strncmp(out.instance_id, "zones/us-central1-a/instances/", 30), 0);
    assert_int_equal(created("instances"), 1);
    assert_int_equal(created("images"), 2);
    assert_int_equal(created("disks"), 1);

    /* What the fake holds: the image's guest OS features, the instance's placement. */
    char *u = xasprintf("%s/compute/v1/projects/%s/global/images/%s", fake.endpoint,
                        GCPFAKE_PROJECT, out.image_id);
    json_t *img = NULL;
    GCP_OK(gcp_json(inspect, "GET", u, NULL, 0, &img, &err));
    free(u);
    char *features = json_dumps(json_object_get(img, "guestOsFeatures"), JSON_COMPACT);
    assert_non_null(strstr(features, "UEFI_COMPATIBLE"));
    assert_non_null(strstr(features, "VIRTIO_SCSI_MULTIQUEUE"));
    free(features);
    json_decref(img);
    u = xasprintf("%s/compute/v1/projects/%s/%s", fake.endpoint, GCPFAKE_PROJECT, out.instance_id);
    json_t *vm = NULL;
    GCP_OK(gcp_json(inspect, "GET", u, NULL, 0, &vm, &err));
    free(u);
    assert_string_equal(json_string_value(json_object_get(vm, "status")), "RUNNING");
    assert_non_null(strstr(json_string_value(json_object_get(vm, "machineType")), "/e2-medium"));
    assert_int_equal(json_array_size(json_object_get(vm, "disks")), 2);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(json_object_get(vm, "tags"), "items"), 0)),
        net.firewall_id);
    json_decref(vm);

    /* Again (a retried import job): nothing new. */
    struct vm_launch_result again;
    GCP_OK(ops->vm_launch(p, &spec, &again, &err));
    assert_string_equal(again.instance_id, out.instance_id);
    assert_string_equal(again.private_ip, out.private_ip);
    assert_int_equal(created("instances"), 1);
    assert_int_equal(created("images"), 2);
    assert_int_equal(created("disks"), 1);
}

static size_t count(const char *path)
{
    char *u = xasprintf("%s/compute/v1/projects/%s/%s", fake.endpoint, GCPFAKE_PROJECT, path);
    json_t *list = NULL;
    struct err err = {0};
    GCP_OK(gcp_json(inspect, "GET", u, NULL, 0, &list, &err));
    free(u);
    size_t n = json_array_size(json_object_get(list, "items"));
    json_decref(list);
    return n;
}

static void test_network_delete(void **state)
{
    (void)state;
    struct err err = {0};
    assert_true(count("zones/us-central1-a/instances") == 1);
    GCP_OK(ops->network_delete(p, MIG, &err));
    assert_int_equal(count("zones/us-central1-a/instances"), 0);
    assert_int_equal(count("zones/us-central1-a/disks"), 0);
    assert_int_equal(count("global/images"), 0);
    assert_int_equal(count("global/firewalls"), 0);
    assert_int_equal(count("regions/us-central1/subnetworks"), 0);
    assert_int_equal(count("global/networks"), 0);
    long long deletes = gcpfake_stat(&fake, "deletes.networks");
    assert_int_equal(deletes, 1);
    GCP_OK(ops->network_delete(p, MIG, &err));
    assert_int_equal(gcpfake_stat(&fake, "deletes.networks"), deletes);
}

/* Rollback's last step: everything under xmigrate/<migration>/ goes (the image above,
 * chunks), another migration's objects stay, and a second run deletes nothing more. */
static void test_storage_delete(void **state)
{
    (void)state;
    struct err err = {0};
    char bucket[64];
    GCP_OK(ops->storage_ensure(p, bucket, sizeof(bucket), &err));
    char other[200];
    snprintf(other, sizeof(other), "xmigrate/%s-other/web1/sda/0.zst", MIG);
    GCP_OK(gcs_put(inspect, bucket, "xmigrate/" MIG "/web1/sda/0.zst", "c0", 2, &err));
    GCP_OK(gcs_put(inspect, bucket, "xmigrate/" MIG "/web1/sda/manifest.json", "{}", 2, &err));
    GCP_OK(gcs_put(inspect, bucket, other, "keep", 4, &err));
    struct gcs_object *objs = NULL;
    size_t before = 0, after = 0;
    GCP_OK(gcs_list(inspect, bucket, "xmigrate/" MIG "/", &objs, &before, &err));
    gcs_objects_free(objs, before);
    assert_true(before >= 3); /* the two chunks and test_image_compose's image */
    long long deleted = -1;
    GCP_OK(ops->storage_delete(p, MIG, &deleted, &err));
    assert_int_equal(deleted, (long long)before);
    GCP_OK(gcs_list(inspect, bucket, "xmigrate/" MIG "/", &objs, &after, &err));
    gcs_objects_free(objs, after);
    assert_int_equal(after, 0);
    GCP_OK(gcs_list(inspect, bucket, other, &objs, &after, &err));
    gcs_objects_free(objs, after);
    assert_int_equal(after, 1);
    GCP_OK(ops->storage_delete(p, MIG, &deleted, &err));
    assert_int_equal(deleted, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_urls),    cmocka_unit_test(test_network_twice),
        cmocka_unit_test(test_image_compose),  cmocka_unit_test(test_vm_launch),
        cmocka_unit_test(test_network_delete), cmocka_unit_test(test_storage_delete),
    };
    return cmocka_run_group_tests_name("integration.gcp_provider", tests, setup, teardown);
}
