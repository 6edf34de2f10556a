/*
 * cloud/aws/ebs.c and vm.c against moto_server with SigV4 checking on.
 *
 * A 64 MiB sparse disk image (zeros but for a few regions, the last block only partly
 * data) becomes a snapshot through the EBS direct APIs with only its non-zero blocks
 * sent, at the block size StartSnapshot announced; it reads back byte for byte through
 * ListSnapshotBlocks and GetSnapshotBlock; it is registered as an image and boots an
 * instance in a subnet and security group made here with plain EC2 calls. The whole
 * import run a second time finds the same snapshot, image and instance and makes
 * nothing new. Bad input is a permanent error naming the snapshot and block; waits
 * that run out are transient; an instance terminated while waited for is permanent; no
 * error message carries the secret key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/aws.h"
#include "aws/ebs.h"
#include "aws/vm.h"
#include "harness.h"
#include "xmalloc.h"

#define MIB ((size_t)1024 * 1024)
#define IMAGE_LEN (64 * MIB - 1000) /* not a multiple of any block size */
#define MIGRATION "mig-import-1"
#define HOST "web-1"
#define DISK "sda"
#define WAIT_S 60

/* Where the disk holds data; everything else is zero. */
static const struct {
    size_t off, len;
} regions[] = {
    {0, 1536},              /* boot sector and partition table */
    {5 * MIB + 100, 3000},  /* unaligned at both ends */
    {20 * MIB + 511, 2},    /* one byte either side of a 512-byte boundary */
    {40 * MIB, 4096},       /* aligned */
    {IMAGE_LEN - 700, 700}, /* the tail: the last block is only partly data */
};

static struct moto moto;
static char log_path[256];
static unsigned char *image;
static char vpc_id[64], subnet_id[64], sg_id[64];

/* ---------------------------------------------------------------- helpers */

static struct aws *client(const char *secret)
{
    struct aws_config cfg = {.access_key = moto.access_key,
                             .secret_key = secret ? secret : moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = moto.endpoint,
                             .max_attempts = 3,
                             .backoff_base_ms = 10};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    assert_non_null(a);
    return a;
}

/* Every error message a test sees goes through here. */
static void no_secret(const struct err *err)
{
    assert_null(strstr(err->msg, moto.secret_key));
}

static void ok(int rc, const struct err *err)
{
    no_secret(err);
    if (rc != 0)
        fail_msg("unexpected error (%s): %s", err_kind_str(err->kind), err->msg);
}

static void permanent(int rc, const struct err *err, const char *want1, const char *want2)
{
    no_secret(err);
    assert_int_equal(rc, -1);
    assert_int_equal(err->kind, ERR_PERMANENT);
    if (want1 && !strstr(err->msg, want1))
        fail_msg("'%s' not in: %s", want1, err->msg);
    if (want2 && !strstr(err->msg, want2))
        fail_msg("'%s' not in: %s", want2, err->msg);
}

static char *ec2(struct aws *a, const char *action, const char *const *params)
{
    struct err err = {0};
    char *xml = NULL;
    ok(aws_ec2(a, action, params, &xml, &err), &err);
    return xml;
}

static char *xml_text(const char *xml, const char *path)
{
    char *s = aws_xml_text(xml, strlen(xml), path);
    if (!s)
        fail_msg("no '%s' in: %.2000s", path, xml);
    return s;
}

static size_t xml_count(const char *xml, const char *name)
{
    size_t n;
    char **v = aws_xml_all(xml, strlen(xml), name, &n);
    aws_strv_free(v, n);
    return n;
}

/* The value of tag key in a reply's tagSet, or NULL (new). */
static char *tag_value(const char *xml, const char *key)
{
    size_t nk, nv;
    char **k = aws_xml_all(xml, strlen(xml), "key", &nk);
    char **v = aws_xml_all(xml, strlen(xml), "value", &nv);
    char *out = NULL;
    for (size_t i = 0; i < nk && i < nv && !out; i++)
        if (strcmp(k[i], key) == 0)
            out = xstrdup(v[i]);
    aws_strv_free(k, nk);
    aws_strv_free(v, nv);
    return out;
}

static void assert_tag(const char *xml, const char *key, const char *want)
{
    char *v = tag_value(xml, key);
    if (!v || strcmp(v, want) != 0)
        fail_msg("tag '%s' is '%s', want '%s'", key, v ? v : "(none)", want);
    free(v);
}

/* Non-zero filler without zero bytes, so no block of a region is all zero. */
static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)(x % 255 + 1);
    }
}

/* Blocks of size bs the regions touch (they are MiBs apart: no block is shared). */
static long long expected_blocks(size_t bs)
{
    long long n = 0;
    for (size_t i = 0; i < XM_ARRAY_LEN(regions); i++)
        n += (long long)((regions[i].off + regions[i].len - 1) / bs - regions[i].off / bs + 1);
    return n;
}

/* ---------------------------------------------------------------- the import */

struct import_out {
    struct ebs_snapshot snap;
    long long sent; /* blocks put by this run */
    char image_id[VM_ID_MAX];
    struct vm_instance vm;
};

/* What the import workers do for one single-disk host, in one process. */
static void import_host(struct aws *a, struct import_out *o)
{
    struct err err = {0};
    const struct ebs_tags tags = {MIGRATION, HOST, DISK};
    int found = 0;
    memset(o, 0, sizeof(*o));
    ok(ebs_find(a, &tags, &o->snap, &found, &err), &err);
    if (!found || strcmp(o->snap.status, "completed") != 0) {
        ok(ebs_start(a, ebs_volume_gib(IMAGE_LEN), NULL, &tags, NULL, &o->snap, &err), &err);
        size_t bs = (size_t)o->snap.block_size;
        unsigned char *block = xmalloc(bs);
        for (size_t off = 0; off < IMAGE_LEN; off += bs) {
            size_t n = IMAGE_LEN - off < bs ? IMAGE_LEN - off : bs;
            memcpy(block, image + off, n);
            memset(block + n, 0, bs - n);
            if (ebs_block_is_zero(block, bs))
                continue;
            ok(ebs_put_block(a, &o->snap, (long long)(off / bs), block, bs, &err), &err);
            o->sent++;
        }
        free(block);
        ok(ebs_complete(a, o->snap.id, o->sent, &err), &err);
        ok(ebs_wait_completed(a, o->snap.id, WAIT_S, &err), &err);
    }

    const struct vm_image_spec img = {.snapshot_id = o->snap.id,
                                      .name = "xmigrate " MIGRATION " " HOST,
                                      .arch = "x86_64",
                                      .boot_mode = "uefi",
                                      .tags = {MIGRATION, HOST, HOST}};
    ok(vm_register_image(a, &img, o->image_id, &err), &err);
    ok(vm_wait_image(a, o->image_id, WAIT_S, &err), &err);

    const struct vm_run_spec run = {.image_id = o->image_id,
                                    .instance_type = "t3.micro",
                                    .subnet_id = subnet_id,
                                    .security_group_id = sg_id,
                                    .public_ip = 1,
                                    .tags = {MIGRATION, HOST, HOST}};
    struct vm_instance launched;
    ok(vm_run(a, &run, &launched, &err), &err);
    ok(vm_wait_running(a, launched.id, WAIT_S, &o->vm, &err), &err);
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    snprintf(log_path, sizeof(log_path), "/tmp/xm-moto-import-%d.log", (int)getpid());
    moto_start(&moto, 1, log_path);

    image = xcalloc(1, IMAGE_LEN);
    for (size_t i = 0; i < XM_ARRAY_LEN(regions); i++)
        fill(image + regions[i].off, regions[i].len, (uint32_t)i + 1);

    /* The blueprint's network, made directly (the network module is not under test). */
    struct aws *a = client(NULL);
    const char *vpc_p[] = {"CidrBlock", "10.20.0.0/16", NULL};
    char *xml = ec2(a, "CreateVpc", vpc_p);
    char *v = xml_text(xml, "vpc/vpcId");
    xstrlcpy(vpc_id, v, sizeof(vpc_id));
    free(v);
    free(xml);
    const char *sub_p[] = {"VpcId", vpc_id, "CidrBlock", "10.20.1.0/24", NULL};
    xml = ec2(a, "CreateSubnet", sub_p);
    v = xml_text(xml, "subnet/subnetId");
    xstrlcpy(subnet_id, v, sizeof(subnet_id));
    free(v);
    free(xml);
    const char *sg_p[] = {
        "GroupName", "xm-import-test", "GroupDescription", "import test", "VpcId", vpc_id, NULL};
    xml = ec2(a, "CreateSecurityGroup", sg_p);
    v = xml_text(xml, "groupId");
    xstrlcpy(sg_id, v, sizeof(sg_id));
    free(v);
    free(xml);
    aws_free(a);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(image);
    moto_stop(&moto);
    unlink(log_path);
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_import_reads_back_and_boots(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    struct import_out o;
    import_host(a, &o);
    size_t bs = (size_t)o.snap.block_size;
    assert_true(bs >= 512);
    assert_int_equal(o.sent, expected_blocks(bs));

    /* What the service holds: exactly the blocks sent... */
    struct ebs_block_list l;
    ok(ebs_list_blocks(a, o.snap.id, &l, &err), &err);
    assert_int_equal((long long)l.n, o.sent);
    assert_int_equal(l.block_size, o.snap.block_size);
    assert_int_equal(l.volume_gib, ebs_volume_gib(IMAGE_LEN));

    /* ...and, zeros elsewhere, the image byte for byte. */
    size_t nblocks = (IMAGE_LEN + bs - 1) / bs;
    unsigned char *disk = xcalloc(nblocks, bs);
    for (size_t i = 0; i < l.n; i++) {
        assert_true(l.v[i].index >= 0 && (size_t)l.v[i].index < nblocks);
        size_t len = 0;
        ok(ebs_get_block(a, o.snap.id, &l.v[i], disk + (size_t)l.v[i].index * bs, bs, &len, &err),
           &err);
        assert_int_equal(len, bs);
    }
    assert_memory_equal(disk, image, IMAGE_LEN);
    assert_true(ebs_block_is_zero(disk + IMAGE_LEN, nblocks * bs - IMAGE_LEN));
    free(disk);
    ebs_block_list_release(&l);

    /* The snapshot carries its tags. */
    const char *snap_p[] = {"SnapshotId.1", o.snap.id, NULL};
    char *xml = ec2(a, "DescribeSnapshots", snap_p);
    assert_tag(xml, EBS_TAG_MIGRATION, MIGRATION);
    assert_tag(xml, EBS_TAG_HOST, HOST);
    assert_tag(xml, EBS_TAG_DISK, DISK);
    free(xml);

    /* The image: its name and tags (moto keeps nothing else of RegisterImage). */
    const char *img_p[] = {"ImageId.1", o.image_id, NULL};
    xml = ec2(a, "DescribeImages", img_p);
    char *name = xml_text(xml, "imagesSet/item/name");
    assert_string_equal(name, "xmigrate " MIGRATION " " HOST);
    free(name);
    assert_tag(xml, EBS_TAG_MIGRATION, MIGRATION);
    assert_tag(xml, EBS_TAG_HOST, HOST);
    free(xml);

    /* The instance: in the blueprint's subnet and group, of the type asked, tagged, with
     * the addresses recorded. */
    assert_string_equal(o.vm.state, "running");
    assert_string_equal(o.vm.subnet_id, subnet_id);
    assert_string_equal(o.vm.instance_type, "t3.micro");
    assert_string_equal(o.vm.image_id, o.image_id);
    assert_int_equal(strncmp(o.vm.private_ip, "10.20.1.", 8), 0);
    assert_true(o.vm.public_ip[0] != '\0');
    const char *inst_p[] = {"InstanceId.1", o.vm.id, NULL};
    xml = ec2(a, "DescribeInstances", inst_p);
    char *t = xml_text(xml, "instancesSet/item/instanceType");
    assert_string_equal(t, "t3.micro");
    free(t);
    t = xml_text(xml, "instancesSet/item/subnetId");
    assert_string_equal(t, subnet_id);
    free(t);
    /* moto lists the group only on the network interface (AWS: on both). */
    t = xml_text(xml, "networkInterfaceSet/item/groupSet/item/groupId");
    assert_string_equal(t, sg_id);
    free(t);
    t = xml_text(xml, "instancesSet/item/ipAddress");
    assert_string_equal(t, o.vm.public_ip);
    free(t);
    assert_tag(xml, EBS_TAG_MIGRATION, MIGRATION);
    assert_tag(xml, EBS_TAG_HOST, HOST);
    assert_tag(xml, EBS_TAG_NAME, HOST);
    free(xml);

    /* The same import again finds everything and makes nothing. */
    struct import_out again;
    import_host(a, &again);
    assert_int_equal(again.sent, 0);
    assert_string_equal(again.snap.id, o.snap.id);
    assert_string_equal(again.image_id, o.image_id);
    assert_string_equal(again.vm.id, o.vm.id);
    assert_string_equal(again.vm.public_ip, o.vm.public_ip);

    const char *snaps_p[] = {
        "Owner.1", "self", "Filter.1.Name", "tag:" EBS_TAG_HOST, "Filter.1.Value.1", HOST, NULL};
    xml = ec2(a, "DescribeSnapshots", snaps_p);
    assert_int_equal(xml_count(xml, "snapshotId"), 1);
    free(xml);
    const char *imgs_p[] = {"Owner.1", "self", NULL};
    xml = ec2(a, "DescribeImages", imgs_p);
    assert_int_equal(xml_count(xml, "imageId"), 1);
    free(xml);
    const char *insts_p[] = {"Filter.1.Name", "tag:" EBS_TAG_HOST, "Filter.1.Value.1", HOST, NULL};
    xml = ec2(a, "DescribeInstances", insts_p);
    assert_int_equal(xml_count(xml, "instanceId"), 1);
    free(xml);
    aws_free(a);
}

static void test_bad_blocks_are_permanent(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    const struct ebs_tags tags = {MIGRATION, HOST, "sdb"};
    struct ebs_snapshot snap;
    ok(ebs_start(a, 1, "bad blocks", &tags, NULL, &snap, &err), &err);
    assert_string_equal(snap.status, "pending");
    size_t bs = (size_t)snap.block_size;
    unsigned char *block = xmalloc(bs + 1);
    memset(block, 0xab, bs + 1);

    permanent(ebs_put_block(a, &snap, 3, block, bs - 1, &err), &err, snap.id, "block 3 ");
    permanent(ebs_put_block(a, &snap, 3, block, bs + 1, &err), &err, snap.id, "block 3 ");
    long long past = (long long)(((size_t)1 << 30) / bs);
    char what[64];
    snprintf(what, sizeof(what), "block %lld ", past);
    permanent(ebs_put_block(a, &snap, past, block, bs, &err), &err, snap.id, what);
    permanent(ebs_put_block(a, &snap, -1, block, bs, &err), &err, snap.id, "block -1 ");
    unsigned char *zero = xcalloc(1, bs);
    permanent(ebs_put_block(a, &snap, 4, zero, bs, &err), &err, snap.id, "all zero");
    free(zero);
    struct ebs_snapshot bad = snap;
    xstrlcpy(bad.id, "snap-1/../x", sizeof(bad.id));
    permanent(ebs_put_block(a, &bad, 3, block, bs, &err), &err, "snap-1/../x", NULL);

    /* None of that reached the service: the one good block is all it holds. */
    ok(ebs_put_block(a, &snap, past - 1, block, bs, &err), &err);
    ok(ebs_complete(a, snap.id, 1, &err), &err);
    ok(ebs_wait_completed(a, snap.id, WAIT_S, &err), &err);
    struct ebs_block_list l;
    ok(ebs_list_blocks(a, snap.id, &l, &err), &err);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].index, past - 1);
    ebs_block_list_release(&l);
    free(block);

    /* Arguments checked before anything is sent. */
    const struct vm_image_spec img = {.snapshot_id = snap.id,
                                      .name = "xmigrate bad",
                                      .arch = "sparc",
                                      .boot_mode = "uefi",
                                      .tags = {MIGRATION, HOST, HOST}};
    char ami[VM_ID_MAX];
    permanent(vm_register_image(a, &img, ami, &err), &err, "sparc", NULL);
    struct vm_image_spec img2 = img;
    img2.arch = "arm64";
    img2.boot_mode = "bios";
    permanent(vm_register_image(a, &img2, ami, &err), &err, "bios", NULL);
    img2.boot_mode = "legacy-bios";
    img2.name = "no*stars";
    permanent(vm_register_image(a, &img2, ami, &err), &err, "no*stars", NULL);
    const struct vm_run_spec run = {.image_id = "ami-0123456789abcdef0",
                                    .instance_type = "t3.micro",
                                    .subnet_id = "vpc-0123",
                                    .security_group_id = sg_id,
                                    .tags = {MIGRATION, HOST, HOST}};
    struct vm_instance vm;
    permanent(vm_run(a, &run, &vm, &err), &err, "vpc-0123", "subnet");
    struct vm_run_spec run2 = run;
    run2.subnet_id = subnet_id;
    run2.instance_type = "t3.micro; rm";
    permanent(vm_run(a, &run2, &vm, &err), &err, "instance type", NULL);
    aws_free(a);
}

static void test_waits_that_run_out_are_transient(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    struct vm_instance vm;
    long long t0 = mono_ms();
    assert_int_equal(ebs_wait_completed(a, "snap-0123456789abcdef0", 1, &err), -1);
    no_secret(&err);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    assert_non_null(strstr(err.msg, "snap-0123456789abcdef0"));
    assert_non_null(strstr(err.msg, "completed"));
    assert_int_equal(vm_wait_image(a, "ami-0123456789abcdef0", 1, &err), -1);
    no_secret(&err);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    assert_non_null(strstr(err.msg, "ami-0123456789abcdef0"));
    assert_int_equal(vm_wait_running(a, "i-0123456789abcdef0", 1, &vm, &err), -1);
    no_secret(&err);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    assert_non_null(strstr(err.msg, "i-0123456789abcdef0"));
    assert_non_null(strstr(err.msg, "running"));
    /* Each waited its second and not much more. */
    long long took = mono_ms() - t0;
    assert_true(took >= 3000 && took < 30000);
    aws_free(a);
}

static void test_terminated_while_waiting_is_permanent(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    const struct ebs_tags tags = {MIGRATION, "db-1", "sda"};
    struct ebs_snapshot snap;
    ok(ebs_start(a, 1, NULL, &tags, NULL, &snap, &err), &err);
    unsigned char *block = xmalloc((size_t)snap.block_size);
    memset(block, 0x5a, (size_t)snap.block_size);
    ok(ebs_put_block(a, &snap, 0, block, (size_t)snap.block_size, &err), &err);
    free(block);
    ok(ebs_complete(a, snap.id, 1, &err), &err);
    ok(ebs_wait_completed(a, snap.id, WAIT_S, &err), &err);
    const struct vm_image_spec img = {.snapshot_id = snap.id,
                                      .name = "xmigrate " MIGRATION " db-1",
                                      .arch = "arm64",
                                      .boot_mode = "legacy-bios",
                                      .root_device = "/dev/sda1",
                                      .tags = {MIGRATION, "db-1", "db-1"}};
    char ami[VM_ID_MAX];
    ok(vm_register_image(a, &img, ami, &err), &err);
    const struct vm_run_spec run = {.image_id = ami,
                                    .instance_type = "m6g.large",
                                    .subnet_id = subnet_id,
                                    .security_group_id = sg_id,
                                    .public_ip = 0,
                                    .tags = {MIGRATION, "db-1", "db-1"}};
    struct vm_instance vm, up;
    ok(vm_run(a, &run, &vm, &err), &err);
    ok(vm_wait_running(a, vm.id, WAIT_S, &up, &err), &err);
    assert_string_equal(up.public_ip, ""); /* the blueprint said private */
    assert_string_equal(up.instance_type, "m6g.large");

    ok(vm_terminate(a, vm.id, &err), &err);
    permanent(vm_wait_running(a, vm.id, WAIT_S, &up, &err), &err, vm.id, NULL);
    assert_true(strstr(err.msg, "terminated") || strstr(err.msg, "shutting-down"));
    int found = 1;
    ok(vm_find(a, MIGRATION, "db-1", &up, &found, &err), &err);
    assert_false(found);
    ok(vm_terminate(a, vm.id, &err), &err); /* again: nothing to do */
    aws_free(a);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    struct aws *a = client("wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGSECRET");
    struct err err = {0};
    const struct ebs_tags tags = {MIGRATION, HOST, "sdc"};
    struct ebs_snapshot snap;
    permanent(ebs_start(a, 1, NULL, &tags, NULL, &snap, &err), &err, "AWS rejected the credentials",
              NULL);
    assert_null(strstr(err.msg, "WRONGSECRET"));
    int found;
    permanent(ebs_find(a, &tags, &snap, &found, &err), &err, "AWS rejected the credentials", NULL);
    assert_null(strstr(err.msg, "WRONGSECRET"));
    struct vm_instance vm;
    permanent(vm_find(a, MIGRATION, HOST, &vm, &found, &err), &err, "AWS rejected the credentials",
              NULL);
    assert_null(strstr(err.msg, "WRONGSECRET"));
    aws_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_reads_back_and_boots),
        cmocka_unit_test(test_bad_blocks_are_permanent),
        cmocka_unit_test(test_waits_that_run_out_are_transient),
        cmocka_unit_test(test_terminated_while_waiting_is_permanent),
        cmocka_unit_test(test_wrong_secret),
    };
    return cmocka_run_group_tests_name("integration.aws_import", tests, setup, teardown);
}
