/*
 * test_azure_blob: cloud/azure/sharedkey.c against the SDK vectors in
 * ../shared/testdata/azure-storage/, and cloud/azure/blob.c against Azurite 3.35, which
 * verifies SharedKey and SAS signatures: containers, block blobs (Put Blob, Put Block,
 * Put Block List), page blobs (create, Put Page, Get Page Ranges), SAS URLs used by a
 * plain HTTP client the way the clone agent uses them, and a wrong key refused (403) as a
 * clear permanent error.
 *
 * Usage: test_azure_blob TESTDATA_DIR (the shared/testdata folder). Exits 77 when Azurite
 * is not installed (npm ci in tests/).
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

#include "aws/aws.h"
#include "azure/blob.h"
#include "azure/sharedkey.h"
#include "http.h"
#include "test_azure_env.h"
#include "xmalloc.h"

static const char *testdata;
static struct azurite azurite;
static char tmpdir[] = "/tmp/xm-azure-blob-XXXXXX";

static json_t *vectors(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/azure-storage/azure_sharedkey_sas_vectors.json", testdata);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j)
        fail_msg("%s: %s", path, e.text);
    return j;
}

static void key_of(const json_t *v, struct sharedkey *k)
{
    struct err err = {0};
    const char *b64 = json_string_value(json_object_get(v, "key_b64"));
    if (sharedkey_init(k, b64, &err) < 0)
        fail_msg("%s: %s", json_string_value(json_object_get(v, "name")), err.msg);
}

/* ---- vectors ------------------------------------------------------------------------ */

static void test_sharedkey_vectors(void **state)
{
    (void)state;
    json_t *all = vectors();
    size_t i, full = 0, hmacs = 0;
    json_t *v;
    json_array_foreach(json_object_get(all, "shared_key"), i, v)
    {
        struct sharedkey k;
        key_of(v, &k);
        const char *sts = json_string_value(json_object_get(v, "string_to_sign"));
        const char *name = json_string_value(json_object_get(v, "name"));
        const json_t *hdrs = json_object_get(v, "headers");
        const char *method = json_string_value(json_object_get(v, "method"));
        if (hdrs && method) {
            /* The whole path: headers and URL -> string to sign. */
            const char *url = json_string_value(json_object_get(v, "url"));
            const char *path = strchr(strstr(url, "://") + 3, '/');
            char *res =
                sharedkey_resource(json_string_value(json_object_get(v, "account")), path, NULL);
            assert_string_equal(
                res, json_string_value(json_object_get(v, "expected_canonicalized_resource")));
            const char *lines[32];
            char *own[32];
            size_t n = 0;
            const char *hk;
            json_t *hv;
            json_object_foreach((json_t *)hdrs, hk, hv)
            {
                own[n] = xasprintf("%s: %s", hk, json_string_value(hv));
                lines[n] = own[n];
                n++;
            }
            char *got = sharedkey_string_to_sign(method, lines, n, res);
            assert_string_equal(got, sts);
            for (size_t j = 0; j < n; j++)
                free(own[j]);
            free(got);
            free(res);
            full++;
        }
        char sig[SHAREDKEY_SIG_SIZE];
        sharedkey_hmac(&k, sts, sig);
        if (strcmp(sig, json_string_value(json_object_get(v, "expected_signature"))) != 0)
            fail_msg("%s: signature %s", name, sig);
        hmacs++;
        sharedkey_release(&k);
    }
    assert_true(full >= 1);
    assert_true(hmacs >= 4);

    /* Canonicalized resources of URLs (the Go SDK's cases). */
    const json_t *canon = json_object_get(all, "canonicalization_only_go_legacy");
    json_array_foreach(json_object_get(canon, "canonicalized_resource_shared_key"), i, v)
    {
        const char *url = json_string_value(json_array_get(v, 0));
        const char *host = strstr(url, "://") + 3;
        char *path = xstrdup(strchr(host, '/'));
        char *q = strchr(path, '?');
        if (q)
            *q++ = '\0';
        char *res = sharedkey_resource("golangrocksonazure", path, q);
        assert_string_equal(res, json_string_value(json_array_get(v, 1)));
        free(res);
        free(path);
    }
    const json_t *s2s = json_object_get(canon, "string_to_sign_shared_key");
    const char *lines[8];
    char *own[8];
    size_t n = 0;
    const char *hk;
    json_t *hv;
    json_object_foreach(json_object_get(s2s, "headers"), hk, hv)
    {
        own[n] = xasprintf("%s: %s", hk, json_string_value(hv));
        lines[n] = own[n];
        n++;
    }
    char *got =
        sharedkey_string_to_sign(json_string_value(json_object_get(s2s, "verb")), lines, n,
                                 json_string_value(json_object_get(s2s, "canonicalized_resource")));
    assert_string_equal(got, json_string_value(json_object_get(s2s, "expected")));
    free(got);
    for (size_t j = 0; j < n; j++)
        free(own[j]);
    json_decref(all);
}

/* name=value pairs of a query, sorted, "sdd" (a query-only field we never emit) dropped. */
static char *query_set(const char *q)
{
    char *copy = xstrdup(q), *parts[32];
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(copy, "&", &save); p && n < 32;
         p = strtok_r(NULL, "&", &save))
        if (strncmp(p, "sdd=", 4) != 0 && strncmp(p, "tn=", 3) != 0)
            parts[n++] = p;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(parts[j - 1], parts[j]) > 0; j--) {
            char *t = parts[j];
            parts[j] = parts[j - 1];
            parts[j - 1] = t;
        }
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(parts[i]) + 1;
    char *out = xcalloc(1, len);
    for (size_t i = 0; i < n; i++) {
        strncat(out, parts[i], len - strlen(out) - 1);
        strncat(out, "&", len - strlen(out) - 1);
    }
    free(copy);
    return out;
}

/* The percent-decoded value of name in query, or NULL (new). */
static char *query_get(const char *query, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        size_t len = strcspn(p, "&");
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char *out = xcalloc(1, len), *o = out;
            for (size_t i = nl + 1; i < len; i++) {
                unsigned int c;
                if (p[i] == '%' && i + 2 < len && sscanf(p + i + 1, "%2x", &c) == 1) {
                    *o++ = (char)c;
                    i += 2;
                } else {
                    *o++ = p[i];
                }
            }
            return out;
        }
        p += len + (p[len] == '&');
    }
    return NULL;
}

static void test_sas_vectors(void **state)
{
    (void)state;
    json_t *all = vectors();
    size_t i, checked = 0;
    json_t *v;
    json_array_foreach(json_object_get(all, "service_sas"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *query = json_string_value(json_object_get(v, "expected_query"));
        const char *res = json_string_value(json_object_get(v, "canonicalized_resource"));
        char *own_res = NULL;
        if (!res) {
            /* Blob and file SAS share the layout xmigrate signs; queue and table SAS have
             * layouts of their own that xmigrate never makes. */
            const char *svc = strstr(name, "blob") ? "blob" : strstr(name, "file") ? "file" : NULL;
            if (!svc)
                continue;
            own_res = xasprintf("/%s/%s/%s", svc, json_string_value(json_object_get(v, "account")),
                                json_string_value(json_object_get(v, "resource")));
            res = own_res;
        }
        char *f[9];
        static const char *const names[] = {"sp",  "st", "se", "si", "sip",
                                            "spr", "sv", "sr", "ses"};
        for (size_t j = 0; j < 9; j++)
            f[j] = query_get(query, names[j]);
        struct sharedkey_sas sas = {.sp = f[0],
                                    .st = f[1],
                                    .se = f[2],
                                    .resource = res,
                                    .si = f[3],
                                    .sip = f[4],
                                    .spr = f[5],
                                    .sv = f[6],
                                    .sr = f[7],
                                    .ses = f[8]};
        char *sts = sharedkey_sas_string_to_sign(&sas);
        if (strcmp(sts, json_string_value(json_object_get(v, "string_to_sign"))) != 0)
            fail_msg("%s: string to sign differs:\n%s", name, sts);
        struct sharedkey k;
        key_of(v, &k);
        char *q = sharedkey_sas_query(&k, &sas);
        char *a = query_set(q), *b = query_set(query);
        if (strcmp(a, b) != 0)
            fail_msg("%s: query %s, expected %s", name, a, b);
        free(a);
        free(b);
        free(q);
        free(sts);
        for (size_t j = 0; j < 9; j++)
            free(f[j]);
        free(own_res);
        sharedkey_release(&k);
        checked++;
    }
    assert_true(checked >= 6);
    json_decref(all);
}

/* ---- Azurite ------------------------------------------------------------------------ */

static struct blob *client(const char *key)
{
    struct blob_config cfg = {.endpoint = azurite.endpoint,
                              .account = AZURITE_ACCOUNT,
                              .key_b64 = key,
                              .max_attempts = 2,
                              .backoff_base_ms = 10};
    struct err err = {0};
    struct blob *b = blob_new(&cfg, &err);
    if (!b)
        fail_msg("blob_new: %s", err.msg);
    return b;
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        struct err e_ = {0};                                                                       \
        struct err *err = &e_;                                                                     \
        if ((call) < 0)                                                                            \
            fail_msg("%s: %s", #call, e_.msg);                                                     \
        (void)err;                                                                                 \
    } while (0)

static void test_block_blobs(void **state)
{
    (void)state;
    struct blob *b = client(AZURITE_KEY);
    OK(blob_container_ensure(b, "xmigrate", err));
    OK(blob_container_ensure(b, "xmigrate", err)); /* exists: fine */
    const char text[] = "hello, azure";
    OK(blob_put(b, "xmigrate", "a/b/c.txt", text, strlen(text), err));
    char *data = NULL;
    size_t len = 0;
    OK(blob_get(b, "xmigrate", "a/b/c.txt", 0, 0, 1024, &data, &len, err));
    assert_int_equal(len, strlen(text));
    assert_memory_equal(data, text, len);
    free(data);
    OK(blob_get(b, "xmigrate", "a/b/c.txt", 7, 5, 0, &data, &len, err));
    assert_int_equal(len, 5);
    assert_memory_equal(data, "azure", 5);
    free(data);

    /* Put Block twice and commit them in order. */
    size_t bs = 300000;
    char *p1 = xmalloc(bs), *p2 = xmalloc(bs);
    memset(p1, 'x', bs);
    memset(p2, 'y', bs);
    OK(blob_put_block(b, "xmigrate", "blocks.bin", "block-000", p1, bs, err));
    OK(blob_put_block(b, "xmigrate", "blocks.bin", "block-001", p2, bs, err));
    const char *ids[] = {"block-000", "block-001"};
    OK(blob_put_block_list(b, "xmigrate", "blocks.bin", ids, 2, err));
    struct blob_props props;
    int found = 0;
    OK(blob_head(b, "xmigrate", "blocks.bin", &props, &found, err));
    assert_true(found);
    assert_int_equal(props.length, 2 * bs);
    assert_string_equal(props.type, "BlockBlob");
    OK(blob_get(b, "xmigrate", "blocks.bin", 0, 0, 4 * bs, &data, &len, err));
    assert_int_equal(len, 2 * bs);
    assert_memory_equal(data, p1, bs);
    assert_memory_equal(data + bs, p2, bs);
    free(data);
    free(p1);
    free(p2);

    OK(blob_delete(b, "xmigrate", "blocks.bin", err));
    OK(blob_head(b, "xmigrate", "blocks.bin", &props, &found, err));
    assert_false(found);
    OK(blob_delete(b, "xmigrate", "blocks.bin", err)); /* gone: fine */

    /* Names that would need encoding are refused before any request. */
    struct err err = {0};
    assert_int_equal(blob_put(b, "xmigrate", "bad name?", "x", 1, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    blob_free(b);
}

/* List Blobs by prefix (what rollback deletes): only names under it, in order; a
 * container that does not exist lists nothing. */
static void test_list(void **state)
{
    (void)state;
    struct blob *b = client(AZURITE_KEY);
    OK(blob_container_ensure(b, "listing", err));
    const char *names[] = {"xmigrate/m1/h/d/1.zst", "xmigrate/m1/h/d/0.zst",
                           "xmigrate/m1/h/d/manifest.json", "xmigrate/m10/h/d/0.zst"};
    for (size_t i = 0; i < 4; i++)
        OK(blob_put(b, "listing", names[i], "x", 1, err));
    char **got = NULL;
    size_t n = 0;
    OK(blob_list(b, "listing", "xmigrate/m1/", &got, &n, err));
    assert_int_equal(n, 3);
    assert_string_equal(got[0], "xmigrate/m1/h/d/0.zst");
    assert_string_equal(got[1], "xmigrate/m1/h/d/1.zst");
    assert_string_equal(got[2], "xmigrate/m1/h/d/manifest.json");
    aws_strv_free(got, n);
    OK(blob_list(b, "nosuchcontainer", "xmigrate/", &got, &n, err));
    assert_int_equal(n, 0);
    blob_free(b);
}

static void test_page_blob(void **state)
{
    (void)state;
    struct blob *b = client(AZURITE_KEY);
    OK(blob_container_ensure(b, "pages", err));
    uint64_t size = (4u << 20) + 512;
    OK(blob_page_create(b, "pages", "disk.vhd", size, err));
    struct blob_range *r = NULL;
    size_t n = 0;
    OK(blob_page_ranges(b, "pages", "disk.vhd", &r, &n, err));
    assert_int_equal(n, 0); /* a new page blob has nothing written */
    free(r);
    char *page = xmalloc(8192);
    for (size_t i = 0; i < 8192; i++)
        page[i] = (char)(i * 7 + 1);
    OK(blob_put_page(b, "pages", "disk.vhd", 1024, page, 8192, err));
    OK(blob_put_page(b, "pages", "disk.vhd", 4u << 20, page, 512, err));
    OK(blob_page_ranges(b, "pages", "disk.vhd", &r, &n, err));
    assert_int_equal(n, 2);
    assert_int_equal(r[0].start, 1024);
    assert_int_equal(r[0].end, 1024 + 8192 - 1);
    assert_int_equal(r[1].start, 4u << 20);
    assert_int_equal(r[1].end, (4u << 20) + 511);
    free(r);
    char *data = NULL;
    size_t len = 0;
    OK(blob_get(b, "pages", "disk.vhd", 0, 0, 8u << 20, &data, &len, err));
    assert_int_equal(len, size);
    for (size_t i = 0; i < 1024; i++)
        assert_int_equal(data[i], 0); /* unwritten pages read as zeros */
    assert_memory_equal(data + 1024, page, 8192);
    assert_memory_equal(data + (4u << 20), page, 512);
    free(data);
    struct blob_props props;
    int found = 0;
    OK(blob_head(b, "pages", "disk.vhd", &props, &found, err));
    assert_string_equal(props.type, "PageBlob");
    assert_int_equal(props.length, size);

    /* What Azure refuses is refused here, without a request. */
    struct err err = {0};
    assert_int_equal(blob_put_page(b, "pages", "disk.vhd", 100, page, 512, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    char *big = xcalloc(1, (4u << 20) + 512);
    big[0] = 1;
    assert_int_equal(blob_put_page(b, "pages", "disk.vhd", 0, big, (4u << 20) + 512, &err), -1);
    assert_non_null(strstr(err.msg, "4 MiB"));
    assert_int_equal(blob_page_create(b, "pages", "odd", 1000, &err), -1);
    free(big);
    free(page);
    blob_free(b);
}

/* A plain HTTP request the way the agent sends one: no credentials beyond the URL. */
static long plain(const char *method, const char *url, const char *header, const void *body,
                  size_t len, char **out)
{
    const char *headers[] = {header, NULL};
    long status = azenv_http(method, url, headers, body, len, out);
    if (status < 0)
        fail_msg("%s: no answer", method);
    return status;
}

static void test_sas(void **state)
{
    (void)state;
    struct blob *b = client(AZURITE_KEY);
    OK(blob_container_ensure(b, "xmigrate", err));
    struct err err = {0};
    char *w = blob_sas_url(b, "xmigrate", "m/h/d/0.zst", "cw", 600, &err);
    assert_non_null(w);
    assert_null(strstr(w, "spr=")); /* http endpoint: no https-only restriction */
    const char body[] = "chunk zero";
    /* Put Blob needs its blob type: without the header Azure (and Azurite) say 400. */
    assert_int_equal(plain("PUT", w, NULL, body, strlen(body), NULL), 400);
    assert_int_equal(plain("PUT", w, "x-ms-blob-type: BlockBlob", body, strlen(body), NULL), 201);
    char *r = blob_sas_url(b, "xmigrate", "m/h/d/0.zst", "r", 600, &err);
    char *got = NULL;
    assert_int_equal(plain("GET", r, NULL, NULL, 0, &got), 200);
    assert_string_equal(got, body);
    free(got);
    /* A read SAS does not write, and a tampered signature is refused. */
    assert_int_equal(plain("PUT", r, "x-ms-blob-type: BlockBlob", "x", 1, NULL), 403);
    char *bad = xasprintf("%s", w);
    char *sig = strstr(bad, "sig=") + 4;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    assert_int_equal(plain("PUT", bad, "x-ms-blob-type: BlockBlob", "x", 1, NULL), 403);
    /* Another blob's SAS does not reach this one. */
    char *other = blob_sas_url(b, "xmigrate", "m/h/d/1.zst", "r", 600, &err);
    char *swapped = xasprintf("%.*s%s", (int)(strchr(r, '?') - r), r, strchr(other, '?'));
    assert_int_equal(plain("GET", swapped, NULL, NULL, 0, NULL), 403);
    /* URL round trip. */
    char c[64], n[256];
    assert_int_equal(blob_parse_url(b, w, c, sizeof(c), n, sizeof(n), &err), 0);
    assert_string_equal(c, "xmigrate");
    assert_string_equal(n, "m/h/d/0.zst");
    assert_int_equal(blob_parse_url(b, "http://elsewhere/x/y", c, sizeof(c), n, sizeof(n), &err),
                     -1);
    assert_null(blob_sas_url(b, "xmigrate", "x", "r", 0, &err));
    free(swapped);
    free(other);
    free(bad);
    free(r);
    free(w);
    blob_free(b);
}

static void test_wrong_key(void **state)
{
    (void)state;
    /* The right length and alphabet, the wrong bytes. */
    char key[] = AZURITE_KEY;
    key[0] = key[0] == 'E' ? 'F' : 'E';
    struct blob *b = client(key);
    struct err err = {0};
    assert_int_equal(blob_container_ensure(b, "xmigrate", &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "rejected the account key"));
    assert_non_null(strstr(err.msg, "403"));
    assert_null(strstr(err.msg, key));
    assert_int_equal(blob_last_attempts(b), 1); /* never retried */
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(blob_get(b, "xmigrate", "a/b/c.txt", 0, 0, 64, &data, &len, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    blob_free(b);
    /* A key that is not base64 is refused before anything is sent. */
    struct blob_config cfg = {.endpoint = azurite.endpoint, .account = "a", .key_b64 = "n0t-b64!"};
    assert_null(blob_new(&cfg, &err));
    assert_int_equal(err.kind, ERR_PERMANENT);
}

static int start(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(tmpdir));
    char *log = xasprintf("%s/azurite.log", tmpdir);
    azurite_start(&azurite, log);
    free(log);
    return 0;
}

static int stop(void **state)
{
    (void)state;
    azurite_stop(&azurite);
    azenv_remove_dir(tmpdir);
    return 0;
}

int main(int argc, char **argv)
{
    testdata = argc > 1 ? argv[1] : getenv("XM_TESTDATA_DIR");
    if (!testdata) {
        fprintf(stderr, "usage: test_azure_blob TESTDATA_DIR\n");
        return 2;
    }
    const struct CMUnitTest offline[] = {
        cmocka_unit_test(test_sharedkey_vectors),
        cmocka_unit_test(test_sas_vectors),
    };
    int rc = cmocka_run_group_tests_name("azure signing vectors", offline, NULL, NULL);
    char reason[512];
    if (!azurite_available(reason, sizeof(reason))) {
        fprintf(stderr, "SKIP Azurite part: %s\n", reason);
        return rc ? rc : 77;
    }
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_block_blobs), cmocka_unit_test(test_list),
        cmocka_unit_test(test_page_blob),   cmocka_unit_test(test_sas),
        cmocka_unit_test(test_wrong_key),
    };
    return rc | cmocka_run_group_tests_name("azure blob against azurite", live, start, stop);
}
