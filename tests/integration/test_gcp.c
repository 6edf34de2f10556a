/*
 * cloud/gcp (gcp.c, gcs.c, gce.c) against tests/fakes/gcp.py, with a throwaway RSA key:
 *   token: fetched once and cached, fetched again after the fake revokes it (401 on an
 *     API call), refused for an account the fake does not know and for a key that does
 *     not match (permanent "Google rejected ..."), a 503 on the token endpoint retried;
 *   storage: the bucket set-up twice (location, uniform access, lifecycle read back),
 *     simple upload, whole and ranged download, stat, list, delete; compose of 70
 *     sources in rounds of at most 32 (the fake refuses 33); a resumable upload whose
 *     second chunk is cut part-way (RST) resumes from what the session kept; 429 and 503
 *     retried; a run of them gives up (transient);
 *   compute: the network twice (nothing inserted the second time), operations that need
 *     several polls, operations that fail (quota: permanent; pool exhausted: transient),
 *     images from a missing object and from a non-archive (the operation's error), the
 *     delete of everything in dependency order, twice.
 * No error message carries the token or the private key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcp/gce.h"
#include "gcp/gcp.h"
#include "gcp/gcs.h"
#include "test_gcp_support.h"
#include "xmalloc.h"

#define BUCKET "xm-test-bucket"
#define MIG "7f0c5a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f"

static struct gcpfake fake;
static struct gcp *g;

static void no_secret(const struct err *err)
{
    assert_null(strstr(err->msg, "PRIVATE KEY"));
    assert_null(strstr(err->msg, "ya29."));
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        no_secret(&err);                                                                           \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s", #call, err.msg);                                                    \
    } while (0)

#define FAILS(call, kind_, text)                                                                   \
    do {                                                                                           \
        err_clear(&err);                                                                           \
        int rc_ = (call);                                                                          \
        no_secret(&err);                                                                           \
        print_message("  %s\n", err.msg);                                                          \
        if (rc_ != -1)                                                                             \
            fail_msg("%s succeeded", #call);                                                       \
        if (err.kind != (kind_) || !strstr(err.msg, (text)))                                       \
            fail_msg("%s: want %s error with '%s', got %s: %s", #call, err_kind_str(kind_),        \
                     (text), err_kind_str(err.kind), err.msg);                                     \
    } while (0)

static void faults(const char *rules)
{
    assert_int_equal(gcpfake_ctl(&fake, "POST", "/__faults", rules, NULL), 200);
}

static void config(const char *json)
{
    assert_int_equal(gcpfake_ctl(&fake, "POST", "/__config", json, NULL), 200);
}

static int setup(void **state)
{
    (void)state;
    gcpfake_start(&fake, NULL);
    g = gcpfake_client(&fake, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gcp_free(g);
    gcpfake_stop(&fake);
    return 0;
}

/* ---------------------------------------------------------------- token */

static void test_token(void **state)
{
    (void)state;
    struct err err = {0};
    struct gcp *c = gcpfake_client(&fake, NULL);
    long long grants = gcpfake_stat(&fake, "token_grants");
    const char *t1 = gcp_token(c, &err);
    assert_non_null(t1);
    char first[256];
    xstrlcpy(first, t1, sizeof(first));
    assert_non_null(gcp_token(c, &err));
    assert_int_equal(gcp_token_fetches(c), 1);
    assert_int_equal(gcpfake_stat(&fake, "token_grants"), grants + 1);

    /* Revoked: the API answers 401, the client fetches a new token and goes on. */
    OK(gcs_bucket_ensure(c, BUCKET, "us-central1", 30, &err));
    assert_int_equal(gcpfake_ctl(&fake, "POST", "/__expire_tokens", "{}", NULL), 200);
    OK(gcs_bucket_ensure(c, BUCKET, "us-central1", 30, &err));
    assert_int_equal(gcp_token_fetches(c), 2);
    assert_string_not_equal(gcp_token(c, &err), first);
    gcp_free(c);

    /* An account the fake does not know, and a key that does not match the account. */
    json_t *stranger = gcpfake_new_key("stranger@" GCPFAKE_PROJECT ".iam.gserviceaccount.com");
    c = gcpfake_client(&fake, stranger);
    err_clear(&err);
    assert_null(gcp_token(c, &err));
    no_secret(&err);
    print_message("  %s\n", err.msg);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "Google rejected the service-account credentials"));
    assert_non_null(strstr(err.msg, "account not found"));
    gcp_free(c);
    json_object_set(stranger, "client_email", json_object_get(fake.key, "client_email"));
    json_object_set(stranger, "private_key_id", json_object_get(fake.key, "private_key_id"));
    c = gcpfake_client(&fake, stranger);
    FAILS(gcs_bucket_ensure(c, BUCKET, "us-central1", 30, &err), ERR_PERMANENT,
          "Invalid JWT Signature");
    gcp_free(c);
    json_decref(stranger);

    /* A token that expires within GCP_TOKEN_MARGIN_S is not used: fetched anew each time. */
    config("{\"token_lifetime\": 120}");
    c = gcpfake_client(&fake, NULL);
    assert_non_null(gcp_token(c, &err));
    assert_non_null(gcp_token(c, &err));
    assert_int_equal(gcp_token_fetches(c), 2);
    gcp_free(c);
    config("{\"token_lifetime\": 3599}");

    /* The token endpoint throttled once: retried. */
    faults("[{\"match\": \"POST /token\", \"status\": 503, \"times\": 1}]");
    c = gcpfake_client(&fake, NULL);
    assert_non_null(gcp_token(c, &err));
    assert_int_equal(gcpfake_stat(&fake, "injected"), 1);
    gcp_free(c);
    faults("[]");
}

/* ---------------------------------------------------------------- storage */

static void test_bucket_and_objects(void **state)
{
    (void)state;
    struct err err = {0};
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    json_t *b = NULL;
    char url[256];
    snprintf(url, sizeof(url), "%s/storage/v1/b/%s", fake.endpoint, BUCKET);
    OK(gcp_json(g, "GET", url, NULL, 0, &b, &err));
    assert_string_equal(json_string_value(json_object_get(b, "location")), "US-CENTRAL1");
    assert_true(json_is_true(json_object_get(
        json_object_get(json_object_get(b, "iamConfiguration"), "uniformBucketLevelAccess"),
        "enabled")));
    json_t *rule = json_array_get(json_object_get(json_object_get(b, "lifecycle"), "rule"), 0);
    assert_string_equal(
        json_string_value(json_array_get(
            json_object_get(json_object_get(rule, "condition"), "matchesPrefix"), 0)),
        GCS_PREFIX);
    json_decref(b);
    FAILS(gcs_bucket_ensure(g, "Bad_Name", "us-central1", 30, &err), ERR_PERMANENT, "bucket name");

    const char *text = "0123456789abcdefghij";
    OK(gcs_put(g, BUCKET, "xmigrate/m/h/d/a b+c.txt", text, strlen(text), &err));
    OK(gcs_put(g, BUCKET, "xmigrate/m/h/d/two", "2", 1, &err));
    OK(gcs_put(g, BUCKET, "other/three", "3", 1, &err));
    char *data = NULL;
    size_t n = 0;
    OK(gcs_get(g, BUCKET, "xmigrate/m/h/d/a b+c.txt", 0, 0, 1024, &data, &n, &err));
    assert_int_equal(n, strlen(text));
    assert_memory_equal(data, text, n);
    free(data);
    OK(gcs_get(g, BUCKET, "xmigrate/m/h/d/a b+c.txt", 10, 5, 1024, &data, &n, &err));
    assert_int_equal(n, 5);
    assert_memory_equal(data, "abcde", 5);
    free(data);
    FAILS(gcs_get(g, BUCKET, "xmigrate/m/h/d/a b+c.txt", 0, 0, 4, &data, &n, &err), ERR_PERMANENT,
          "over 4 bytes");
    FAILS(gcs_get(g, BUCKET, "missing", 0, 0, 1024, &data, &n, &err), ERR_PERMANENT, "notFound");
    json_t *obj = NULL;
    OK(gcs_stat(g, BUCKET, "xmigrate/m/h/d/two", &obj, &err));
    assert_string_equal(json_string_value(json_object_get(obj, "size")), "1");
    json_decref(obj);
    OK(gcs_stat(g, BUCKET, "nothing", &obj, &err));
    assert_null(obj);

    struct gcs_object *objs = NULL;
    OK(gcs_list(g, BUCKET, "xmigrate/m/", &objs, &n, &err));
    assert_int_equal(n, 2);
    assert_string_equal(objs[0].name, "xmigrate/m/h/d/a b+c.txt");
    assert_int_equal(objs[0].size, strlen(text));
    gcs_objects_free(objs, n);
    OK(gcs_delete(g, BUCKET, "xmigrate/m/h/d/two", &err));
    OK(gcs_delete(g, BUCKET, "xmigrate/m/h/d/two", &err)); /* gone already: fine */
    OK(gcs_list(g, BUCKET, "xmigrate/", &objs, &n, &err));
    assert_int_equal(n, 1);
    gcs_objects_free(objs, n);
}

static void test_compose_rounds(void **state)
{
    (void)state;
    struct err err = {0};
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    enum { N = 70 };
    char names[N][64];
    const char *src[N];
    char want[N * 8 + 1] = "";
    size_t wl = 0;
    for (int i = 0; i < N; i++) {
        char body[16];
        snprintf(body, sizeof(body), "<%05d>", i);
        snprintf(names[i], sizeof(names[i]), "parts/%03d", i);
        src[i] = names[i];
        OK(gcs_put(g, BUCKET, names[i], body, strlen(body), &err));
        memcpy(want + wl, body, strlen(body) + 1);
        wl += strlen(body);
    }
    FAILS(gcs_compose(g, BUCKET, src, 33, "too-many", NULL, &err), ERR_PERMANENT, "33");
    long long before = gcpfake_stat(&fake, "compose_calls");
    int calls = 0;
    json_t *meta = json_pack("{s:s}", "k", "v");
    OK(gcs_compose_all(g, BUCKET, src, N, "joined", "tmp/joined.", meta, &calls, &err));
    json_decref(meta);
    /* 70 -> 3 temporaries (32 + 32 + 6) -> 1: four calls. */
    assert_int_equal(calls, 4);
    assert_int_equal(gcpfake_stat(&fake, "compose_calls"), before + 4);
    char *data = NULL;
    size_t n = 0;
    OK(gcs_get(g, BUCKET, "joined", 0, 0, 1 << 20, &data, &n, &err));
    assert_int_equal(n, strlen(want));
    assert_memory_equal(data, want, n);
    free(data);
    json_t *obj = NULL;
    OK(gcs_stat(g, BUCKET, "joined", &obj, &err));
    assert_string_equal(json_string_value(json_object_get(json_object_get(obj, "metadata"), "k")),
                        "v");
    assert_int_equal(json_integer_value(json_object_get(obj, "componentCount")), N);
    json_decref(obj);
    struct gcs_object *objs = NULL;
    OK(gcs_list(g, BUCKET, "tmp/", &objs, &n, &err));
    assert_int_equal(n, 0); /* the temporaries are gone */
    gcs_objects_free(objs, n);
}

static void test_resumable(void **state)
{
    (void)state;
    struct err err = {0};
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    size_t len = 3 * 1024 * 1024 + 12345;
    unsigned char *buf = xmalloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 7 + i / 4096);
    /* The second chunk is cut after 600000 bytes: the session keeps 524288 of them. Twice,
     * as libcurl itself sends a request again once when a reused connection dies. */
    faults("[{\"match\": \"PUT /upload/\", \"skip\": 1, \"times\": 2, "
           "\"reset_after_bytes\": 600000}]");
    long long queries = gcpfake_stat(&fake, "session_queries");
    int resumes = 0;
    OK(gcs_put_resumable(g, BUCKET, "big/object", buf, len, 1 << 20, &resumes, &err));
    assert_int_equal(resumes, 1);
    assert_int_equal(gcpfake_stat(&fake, "resets"), 2);
    assert_true(gcpfake_stat(&fake, "session_queries") > queries);
    char *data = NULL;
    size_t n = 0;
    OK(gcs_get(g, BUCKET, "big/object", 0, 0, len + 1, &data, &n, &err));
    assert_int_equal(n, len);
    assert_memory_equal(data, buf, len);
    free(data);

    /* A 503 on a chunk, and a plain reset: resumed too. */
    faults("[{\"match\": \"PUT /upload/\", \"skip\": 2, \"times\": 1, \"status\": 503},"
           " {\"match\": \"PUT /upload/\", \"skip\": 4, \"times\": 2, \"reset\": true}]");
    OK(gcs_put_resumable(g, BUCKET, "big/object2", buf, len, 256 * 1024, &resumes, &err));
    assert_int_equal(resumes, 2);
    OK(gcs_get(g, BUCKET, "big/object2", len - 100, 100, len, &data, &n, &err));
    assert_int_equal(n, 100);
    assert_memory_equal(data, buf + len - 100, 100);
    free(data);

    /* The empty object, and a session that keeps failing: transient, gives up. */
    faults("[]");
    OK(gcs_put_resumable(g, BUCKET, "big/empty", NULL, 0, 0, NULL, &err));
    faults("[{\"match\": \"PUT /upload/\", \"status\": 503}]");
    FAILS(gcs_put_resumable(g, BUCKET, "big/never", buf, len, 0, NULL, &err), ERR_TRANSIENT,
          "no progress");
    faults("[]");
    free(buf);
}

static void test_storage_faults(void **state)
{
    (void)state;
    struct err err = {0};
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    OK(gcs_put(g, BUCKET, "f/one", "1", 1, &err));
    faults("[{\"match\": \"GET /storage/v1/b/" BUCKET "/o/f%2Fone\", \"status\": 429, "
           "\"times\": 1, \"headers\": {\"Retry-After\": \"0\"}},"
           " {\"match\": \"GET /storage/v1/b/" BUCKET "/o/f%2Fone\", \"status\": 503, "
           "\"times\": 1}]");
    char *data = NULL;
    size_t n = 0;
    OK(gcs_get(g, BUCKET, "f/one", 0, 0, 16, &data, &n, &err));
    free(data);
    assert_int_equal(gcp_last_attempts(g), 3);
    faults("[{\"match\": \"DELETE /storage/\", \"status\": 503}]");
    FAILS(gcs_delete(g, BUCKET, "f/one", &err), ERR_TRANSIENT, "gave up after 4 attempts");
    faults("[{\"match\": \"DELETE /storage/\", \"reset\": true}]");
    FAILS(gcs_delete(g, BUCKET, "f/one", &err), ERR_TRANSIENT, "gave up");
    faults("[]");
}

/* ---------------------------------------------------------------- compute */

static struct net_spec *spec_new(void)
{
    struct net_spec *s = xcalloc(1, sizeof(*s));
    xstrlcpy(s->migration, MIG, sizeof(s->migration));
    xstrlcpy(s->name, "prod", sizeof(s->name));
    xstrlcpy(s->cidr, "10.20.0.0/16", sizeof(s->cidr));
    s->n_subnets = 2;
    xstrlcpy(s->subnets[0].name, "web", sizeof(s->subnets[0].name));
    xstrlcpy(s->subnets[0].cidr, "10.20.1.0/24", sizeof(s->subnets[0].cidr));
    s->subnets[0].public = 1;
    xstrlcpy(s->subnets[1].name, "db", sizeof(s->subnets[1].name));
    xstrlcpy(s->subnets[1].cidr, "10.20.2.0/24", sizeof(s->subnets[1].cidr));
    s->n_rules = 3;
    struct net_rule r[] = {{"tcp", 22, 22, "10.0.0.0/8", "ssh"},
                           {"tcp", 8000, 8080, "0.0.0.0/0", ""},
                           {"icmp", 0, 0, "10.0.0.0/8", "ping"}};
    memcpy(s->rules, r, sizeof(r));
    return s;
}

static long long inserted(void)
{
    return gcpfake_stat(&fake, "inserts.networks") + gcpfake_stat(&fake, "inserts.subnetworks") +
           gcpfake_stat(&fake, "inserts.firewalls");
}

static void test_network(void **state)
{
    (void)state;
    struct err err = {0};
    struct net_spec *s = spec_new();
    struct net_result *out = xcalloc(1, sizeof(*out));
    config("{\"op_steps\": 3}");
    long long before = inserted();
    int changes = -1;
    OK(gce_network_ensure(g, "us-central1", s, out, &changes, &err));
    assert_int_equal(changes, 6);
    assert_int_equal(inserted(), before + 6);
    char want[GCE_NAME_MAX + 1];
    gce_name(want, MIG, "prod");
    assert_string_equal(out->network_id, want);
    assert_int_equal(out->n_subnets, 2);
    gce_name(want, MIG, "db");
    char sub[256];
    snprintf(sub, sizeof(sub), "projects/%s/regions/us-central1/subnetworks/%s", GCPFAKE_PROJECT,
             want);
    assert_string_equal(out->subnet_ids[1], sub);
    gce_name(want, MIG, "vm");
    assert_string_equal(out->firewall_id, want);

    /* Twice: found by name, nothing inserted. */
    OK(gce_network_ensure(g, "us-central1", s, out, &changes, &err));
    assert_int_equal(changes, 0);
    assert_int_equal(inserted(), before + 6);

    /* A changed subnet range is refused, a new rule is added. */
    xstrlcpy(s->subnets[1].cidr, "10.20.3.0/24", sizeof(s->subnets[1].cidr));
    FAILS(gce_network_ensure(g, "us-central1", s, out, &changes, &err), ERR_PERMANENT,
          "nothing is replaced");
    xstrlcpy(s->subnets[1].cidr, "10.20.2.0/24", sizeof(s->subnets[1].cidr));
    s->rules[s->n_rules++] = (struct net_rule){"udp", 53, 53, "10.20.0.0/16", "dns"};
    OK(gce_network_ensure(g, "us-central1", s, out, &changes, &err));
    assert_int_equal(changes, 1);

    /* Delete: firewalls, subnetworks, network; again: nothing left to delete. */
    struct gce_deleted d;
    OK(gce_delete_migration(g, MIG, "us-central1", "us-central1-a", &d, &err));
    assert_int_equal(d.firewalls, 4);
    assert_int_equal(d.subnetworks, 2);
    assert_int_equal(d.networks, 1);
    OK(gce_delete_migration(g, MIG, "us-central1", "us-central1-a", &d, &err));
    assert_int_equal(d.firewalls + d.subnetworks + d.networks, 0);
    config("{\"op_steps\": 1}");
    free(out);
    free(s);
}

static void test_failing_operations(void **state)
{
    (void)state;
    struct err err = {0};
    struct net_spec *s = spec_new();
    struct net_result *out = xcalloc(1, sizeof(*out));
    config("{\"fail_ops\": [{\"match\": \"insert networks\", \"code\": \"QUOTA_EXCEEDED\","
           " \"message\": \"Quota 'NETWORKS' exceeded.  Limit: 5.0 globally.\"}]}");
    FAILS(gce_network_ensure(g, "us-central1", s, out, NULL, &err), ERR_PERMANENT,
          "QUOTA_EXCEEDED: Quota 'NETWORKS' exceeded");
    config("{\"fail_ops\": [{\"match\": \"insert subnetworks\", \"code\": "
           "\"RESOURCE_NOT_READY\", \"message\": \"The resource is not ready\"}]}");
    FAILS(gce_network_ensure(g, "us-central1", s, out, NULL, &err), ERR_TRANSIENT,
          "RESOURCE_NOT_READY");
    OK(gce_network_ensure(g, "us-central1", s, out, NULL, &err)); /* the retry passes */

    /* Images: the source object is missing; it is not a disk.raw tar.gz. */
    OK(gcs_bucket_ensure(g, BUCKET, "us-central1", 30, &err));
    struct gce_image_spec is = {.name = "xm-img-missing",
                                .source = "gs://" BUCKET "/no/such.tar.gz",
                                .arch = "x86_64",
                                .migration = MIG,
                                .host = "web1"};
    FAILS(gce_image_ensure(g, &is, &err), ERR_PERMANENT, "RESOURCE_NOT_FOUND");
    OK(gcs_put(g, BUCKET, "bad/image.tar.gz", "not a gzip", 10, &err));
    is.name = "xm-img-bad";
    is.source = "gs://" BUCKET "/bad/image.tar.gz";
    FAILS(gce_image_ensure(g, &is, &err), ERR_PERMANENT, "INVALID_FIELD_VALUE");
    /* A bad machine type is refused at once by the API. */
    struct gce_instance_spec vs = {.zone = "us-central1-a",
                                   .name = "xm-vm-bad",
                                   .machine_type = "e9-nonsense",
                                   .boot_image = "xm-img-bad",
                                   .subnetwork = out->subnet_ids[0],
                                   .tag = out->firewall_id,
                                   .migration = MIG,
                                   .host = "web1"};
    struct gce_instance inst;
    FAILS(gce_instance_ensure(g, &vs, 60, &inst, &err), ERR_PERMANENT, "machineType");
    struct gce_deleted d;
    OK(gce_delete_migration(g, MIG, "us-central1", "us-central1-a", &d, &err));
    assert_int_equal(d.networks, 1);
    config("{\"fail_ops\": []}");
    free(out);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_bucket_and_objects),
        cmocka_unit_test(test_compose_rounds),
        cmocka_unit_test(test_resumable),
        cmocka_unit_test(test_storage_faults),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_failing_operations),
    };
    return cmocka_run_group_tests_name("integration.gcp", tests, setup, teardown);
}
