#include "test_gcp_support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "http.h"
#include "secret.h"
#include "xmalloc.h"

#ifndef XM_GCP_FAKE_SCRIPT
#define XM_GCP_FAKE_SCRIPT "tests/fakes/gcp.py"
#endif

json_t *gcpfake_new_key(const char *email)
{
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    if (!pkey)
        fail_msg("RSA key generation failed");
    BIO *bio = BIO_new(BIO_s_mem());
    if (!PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
        fail_msg("PEM_write_bio_PrivateKey failed");
    char *pem = NULL;
    long n = BIO_get_mem_data(bio, &pem);
    char *copy = xstrndup(pem, (size_t)n);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    char kid[SECRET_TOKEN_LEN + 1];
    secret_token_new(kid);
    json_t *key = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account",
                            "project_id", GCPFAKE_PROJECT, "private_key_id", kid, "private_key",
                            copy, "client_email", email, "client_id", "100000000000000000042");
    free(copy);
    return key;
}

static int answers(void *arg)
{
    return gcpfake_ctl(arg, "GET", "/__stats", NULL, NULL) == 200;
}

void gcpfake_start(struct gcpfake *f, const char *const *extra)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/xm-gcp-XXXXXX");
    if (!mkdtemp(f->dir))
        fail_msg("mkdtemp failed");
    f->key = gcpfake_new_key(GCPFAKE_EMAIL);
    snprintf(f->key_path, sizeof(f->key_path), "%s/key.json", f->dir);
    snprintf(f->log, sizeof(f->log), "%s/fake.log", f->dir);
    if (json_dump_file(f->key, f->key_path, 0) != 0)
        fail_msg("cannot write %s", f->key_path);
    chmod(f->key_path, 0600);

    char *argv[24] = {"python3", XM_GCP_FAKE_SCRIPT, "--listen", "0", "--key-file", f->key_path};
    size_t n = 6;
    for (size_t i = 0; extra && extra[i] && n < XM_ARRAY_LEN(argv) - 1; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    helper_proc_start(&f->proc, argv, f->log);
    xstrlcpy(f->endpoint, f->proc.endpoint, sizeof(f->endpoint));
    snprintf(f->token_uri, sizeof(f->token_uri), "%s/token", f->endpoint);
    json_object_set_new(f->key, "token_uri", json_string(f->token_uri));
    if (!wait_until(answers, f, 10000))
        fail_msg("the fake does not answer (see %s)", f->log);
}

void gcpfake_stop(struct gcpfake *f)
{
    helper_proc_stop(&f->proc);
    json_decref(f->key);
    f->key = NULL;
    if (!getenv("XM_KEEP_TEST_DIRS") && f->dir[0]) {
        unlink(f->key_path);
        unlink(f->log);
        rmdir(f->dir);
    }
}

long gcpfake_send(const char *method, const char *url, const void *body, size_t len, char **out)
{
    static struct http_client *c;
    if (!c)
        c = http_client_new(NULL);
    struct http_request req = {.method = method, .url = url, .body = body, .body_len = len};
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    long status = http_send(c, &req, &resp, &err) == 0 ? resp.status : -1;
    if (out) {
        *out = resp.body;
        resp.body = NULL;
    }
    http_response_release(&resp);
    return status;
}

long gcpfake_ctl(const struct gcpfake *f, const char *method, const char *path, const char *body,
                 char **out)
{
    char url[160];
    snprintf(url, sizeof(url), "%s%s", f->endpoint, path);
    return gcpfake_send(method, url, body, body ? strlen(body) : 0, out);
}

long long gcpfake_stat(const struct gcpfake *f, const char *name)
{
    char *body = NULL;
    if (gcpfake_ctl(f, "GET", "/__stats", NULL, &body) != 200)
        fail_msg("GET /__stats failed");
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    const char *dot = strchr(name, '.');
    json_t *v;
    if (dot) {
        char group[64];
        snprintf(group, sizeof(group), "%.*s", (int)(dot - name), name);
        v = json_object_get(json_object_get(j, group), dot + 1);
    } else {
        v = json_object_get(j, name);
    }
    long long n = json_integer_value(v);
    json_decref(j);
    return n;
}

struct gcp *gcpfake_client(const struct gcpfake *f, const json_t *key)
{
    if (!key)
        key = f->key;
    struct gcp_config c = {
        .project = json_string_value(json_object_get(key, "project_id")),
        .client_email = json_string_value(json_object_get(key, "client_email")),
        .private_key = json_string_value(json_object_get(key, "private_key")),
        .private_key_id = json_string_value(json_object_get(key, "private_key_id")),
        .token_uri = f->token_uri,
        .storage_endpoint = f->endpoint,
        .compute_endpoint = f->endpoint,
        .max_attempts = 4,
        .backoff_base_ms = 5,
        .backoff_cap_ms = 50,
        .poll_ms = 10,
    };
    struct err err = {0};
    struct gcp *g = gcp_new(&c, &err);
    if (!g)
        fail_msg("gcp_new: %s", err.msg);
    return g;
}

void gcpfake_env(const struct gcpfake *f)
{
    setenv("XM_GCP_TOKEN_ENDPOINT", f->token_uri, 1);
    setenv("XM_GCP_STORAGE_ENDPOINT", f->endpoint, 1);
    setenv("XM_GCP_COMPUTE_ENDPOINT", f->endpoint, 1);
    config_release();
    struct err err = {0};
    if (config_load(&err) < 0)
        fail_msg("config_load: %s", err.msg);
}

json_t *gcpfake_secret(const struct gcpfake *f)
{
    return json_pack("{s:O}", "service_account", f->key);
}
