/*
 * test_azure_vhd: a fixed VHD written the way xm-convert writes it for Azure (the convert
 * library in shards, each through the provider's image_begin/image_write, the footer by
 * convert_finish) into an Azurite page blob, then judged by qemu-img: read back through
 * cloud/azure/blob.c, and downloaded by Debian's azure-cli (`az storage blob download`),
 * both must `qemu-img compare` equal to the source disk. All-zero ranges are never sent:
 * Get Page Ranges shows only the data.
 *
 * Exits 77 when Azurite is not installed; the az cross-check is skipped, saying so, when
 * azure-cli is not installed (scripts/install-deps.sh installs both).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "azure/blob.h"
#include "config.h"
#include "convert.h"
#include "provider.h"
#include "test_azure_env.h"
#include "xmalloc.h"

#define MIG "5b1f7f0e-2a8e-4a57-8d65-6c3b9d0e4f21"
/* Not a MiB multiple: the VHD pads it. 1 MiB zeros, text, random, zeros, a tail. */
#define SRC_SIZE ((9u << 20) + 3 * 512)

static struct azurite azurite;
static struct armfake fake;
static char tmpdir[] = "/tmp/xm-azure-vhd-XXXXXX";
static const struct provider_ops *ops;
static char vhd_name[512]; /* the blob convert wrote */

static char *in_tmp(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *source(void)
{
    unsigned char *d = xcalloc(1, SRC_SIZE);
    const char line[] = "ts=2026-11-26 level=info msg=\"request served\" status=200\n";
    for (size_t o = 1u << 20; o < (3u << 20); o += sizeof(line) - 1)
        memcpy(d + o, line, o + sizeof(line) - 1 <= (3u << 20) ? sizeof(line) - 1 : (3u << 20) - o);
    uint32_t x = 2463534242u;
    for (size_t o = 3u << 20; o < (6u << 20); o++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        d[o] = (unsigned char)x;
    }
    memset(d + (9u << 20), 0xee, 3 * 512); /* the short tail */
    return d;
}

struct sink_ctx {
    struct provider *p;
    const char *ref;
    uint64_t writes;
};

static int sink_write(void *arg, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct sink_ctx *s = arg;
    s->writes++;
    return ops->image_write(s->p, s->ref, off, buf, len, err);
}

static void test_vhd_roundtrip(void **state)
{
    (void)state;
    json_t *secret = armfake_secret();
    struct err err = {0};
    struct provider *p = ops->open(secret, "westeurope", &err);
    json_decref(secret);
    assert_non_null(p);
    assert_string_equal(ops->image_format, "vhd");
    assert_null(ops->image_put_piece);

    struct convert_params prm = {
        .format = CONVERT_VHD, .in_size = SRC_SIZE, .shard_size = 4u << 20, .created = 1795000000};
    memcpy(prm.id, "0123456789abcdef", 16);
    struct convert_plan *plan = convert_plan_new(&prm, &err);
    assert_non_null(plan);
    assert_int_equal(convert_plan_layout(plan), CONVERT_LAYOUT_FIXED);
    char ref[PROVIDER_REF_MAX];
    if (ops->image_begin(p, MIG, "db1", "sda", convert_plan_fixed_size(plan), ref, &err) < 0)
        fail_msg("image_begin: %s", err.msg);
    /* A second begin (a retried job) finds the same blob and keeps it. */
    char ref2[PROVIDER_REF_MAX];
    assert_int_equal(
        ops->image_begin(p, MIG, "db1", "sda", convert_plan_fixed_size(plan), ref2, &err), 0);
    assert_string_equal(ref, ref2);

    unsigned char *src = source();
    struct sink_ctx ctx = {.p = p, .ref = ref};
    struct convert_sink sink = {.write = sink_write, .ctx = &ctx};
    size_t n = convert_plan_nshards(plan);
    assert_true(n >= 3);
    struct convert_result **results = xcalloc(n, sizeof(*results));
    /* Shards in reverse order, as independent workers may finish them. */
    for (size_t k = n; k-- > 0;) {
        uint64_t off, len;
        convert_plan_shard(plan, k, &off, &len);
        struct convert_shard *sh = convert_shard_new(plan, k, &sink);
        if (convert_shard_write(sh, src + off, (size_t)len, &err) < 0 ||
            !(results[k] = convert_shard_finish(sh, &err)))
            fail_msg("shard %zu: %s", k, err.msg);
        convert_shard_free(sh);
    }
    uint64_t total = 0;
    if (convert_finish(plan, results, n, &sink, &total, &err) < 0)
        fail_msg("convert_finish: %s", err.msg);
    assert_int_equal(total, convert_plan_fixed_size(plan));
    char image[PROVIDER_REF_MAX];
    if (ops->image_finish(p, ref, 0, image, &err) < 0)
        fail_msg("image_finish: %s", err.msg);
    assert_true(strncmp(image, azurite.endpoint, strlen(azurite.endpoint)) == 0);
    xstrlcpy(vhd_name, ref, sizeof(vhd_name));

    /* Read back with our own client, and judge with qemu-img. */
    struct blob_config bc = {
        .endpoint = azurite.endpoint, .account = AZURITE_ACCOUNT, .key_b64 = AZURITE_KEY};
    struct blob *b = blob_new(&bc, &err);
    assert_non_null(b);
    struct blob_range *r = NULL;
    size_t nr = 0;
    assert_int_equal(blob_page_ranges(b, "xmigrate", ref, &r, &nr, &err), 0);
    assert_true(nr >= 1);
    uint64_t sent = 0;
    for (size_t i = 0; i < nr; i++) {
        sent += r[i].end - r[i].start + 1;
        assert_true(r[i].start >= (1u << 20)); /* the leading MiB of zeros was never sent */
    }
    assert_true(sent < (7u << 20) + 1024); /* the zeros in between were not either */
    free(r);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(blob_get(b, "xmigrate", ref, 0, 0, 64u << 20, &data, &len, &err), 0);
    assert_int_equal(len, convert_plan_fixed_size(plan));
    char *src_path = in_tmp("src.raw"), *ours = in_tmp("ours.vhd"), *log = in_tmp("qemu.log");
    write_file(src_path, src, SRC_SIZE);
    write_file(ours, data, len);
    /* qemu-img reads it as a VHD only when told (a fixed VHD also reads as raw). */
    char *info[] = {"qemu-img", "info", "-f", "vpc", ours, NULL};
    assert_int_equal(azenv_run(info, NULL, log, NULL, 0), 0);
    char *cmp[] = {"qemu-img", "compare", "-f", "raw", "-F", "vpc", src_path, ours, NULL};
    assert_int_equal(azenv_run(cmp, NULL, log, NULL, 0), 0);
    /* The oracle can fail: one changed byte makes it say so. */
    data[(4u << 20) + 17] ^= 1;
    write_file(ours, data, len);
    assert_int_equal(azenv_run(cmp, NULL, log, NULL, 0), 1);

    free(data);
    free(src_path);
    free(ours);
    free(log);
    for (size_t k = 0; k < n; k++)
        convert_result_free(results[k]);
    free(results);
    free(src);
    blob_free(b);
    convert_plan_free(plan);
    ops->close(p);
}

static void test_az_cli_download(void **state)
{
    (void)state;
    char *log = in_tmp("az.log");
    char *which[] = {"az", "version", NULL};
    if (azenv_run(which, NULL, log, NULL, 0) != 0) {
        fprintf(stderr, "SKIP az cross-check: azure-cli is not installed "
                        "(apt-get install --no-install-recommends azure-cli)\n");
        free(log);
        skip();
    }
    assert_true(vhd_name[0] != '\0');
    char *out = in_tmp("az.vhd"), *src = in_tmp("src.raw"), *cfgdir = in_tmp("azcfg");
    /* The key goes in the environment, never on a command line. */
    char *conn =
        xasprintf("AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=http;"
                  "AccountName=" AZURITE_ACCOUNT ";AccountKey=" AZURITE_KEY ";BlobEndpoint=%s;",
                  azurite.endpoint);
    char *cfg = xasprintf("AZURE_CONFIG_DIR=%s", cfgdir);
    char *env[] = {conn, cfg, "AZURE_CORE_COLLECT_TELEMETRY=false", "AZURE_CORE_NO_COLOR=true",
                   NULL};
    char *dl[] = {"az",     "storage", "blob",   "download", "--container-name",   "xmigrate",
                  "--name", vhd_name,  "--file", out,        "--only-show-errors", NULL};
    assert_int_equal(azenv_run(dl, env, log, NULL, 0), 0);
    char *cmp[] = {"qemu-img", "compare", "-f", "raw", "-F", "vpc", src, out, NULL};
    assert_int_equal(azenv_run(cmp, NULL, log, NULL, 0), 0);
    free(conn);
    free(cfg);
    free(cfgdir);
    free(out);
    free(src);
    free(log);
}

static int start(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(tmpdir));
    /* Here the blob endpoint is configured (as for an emulator) rather than looked up. */
    azenv_start(&azurite, &fake, tmpdir, NULL, 1);
    ops = provider_find("azure");
    assert_non_null(ops);
    return 0;
}

static int stop(void **state)
{
    (void)state;
    azenv_stop(&azurite, &fake);
    azenv_remove_dir(tmpdir);
    return 0;
}

int main(void)
{
    azurite_require();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vhd_roundtrip),
        cmocka_unit_test(test_az_cli_download),
    };
    return cmocka_run_group_tests_name("azure fixed VHD page blob", tests, start, stop);
}
