/*
 * test_azure_agent: the clone data path into Azure, end to end on one machine: the real
 * xm-api (with a real redis-server) answers xm-agent's POST .../urls for an Azure
 * migration by opening the Azure provider (storage account and key through the ARM
 * fake, Azurite as its blob service), and replies with SAS write URLs plus the header
 * Azure's Put Blob requires (x-ms-blob-type: BlockBlob); the real xm-agent reads a disk
 * image and PUTs its chunks and manifest through those URLs into Azurite, which checks
 * every SAS signature. Then every stored chunk is read back and compared with the image,
 * all-zero chunks must be absent, and the manifest must describe the copy.
 *
 * Exits 77 when Azurite is not installed (npm ci in tests/).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <zstd.h>

#include "azure/blob.h"
#include "config.h"
#include "harness.h"
#include "http.h"
#include "provider.h"
#include "secret.h"
#include "test_azure_env.h"
#include "xmalloc.h"

#define CHUNK (1u << 20)
#define NCHUNKS 6
#define MASTER_KEY "8c1f0e5a2b3d4c6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6"

static struct redis_srv redis;
static struct azurite azurite;
static struct armfake fake;
static pid_t api_pid;
static char api_url[64], api_token[128];

/* A loopback port nobody listens on right now. */
static int unused_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
             getsockname(fd, (struct sockaddr *)&a, &len) == 0;
    if (fd >= 0)
        close(fd);
    assert_true(ok);
    return ntohs(a.sin_port);
}

/* One request to xm-api; its status, *out (may be NULL) the reply (new). */
static long api(const char *method, const char *path, const char *token, const char *body,
                json_t **out)
{
    char url[512], auth[256], *text = NULL;
    snprintf(url, sizeof(url), "%s%s", api_url, path);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
    const char *headers[] = {"Content-Type: application/json", token ? auth : NULL, NULL};
    long status = azenv_http(method, url, headers, body, body ? strlen(body) : 0, &text);
    if (out)
        *out = json_loads(text, 0, NULL);
    free(text);
    return status;
}

static int api_healthy(void *arg)
{
    (void)arg;
    return api("GET", "/healthz", NULL, NULL, NULL) == 200;
}

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", redis.dir, name);
}

/* A disk image: random, zeros, log text, zeros, random, a short random tail. */
static unsigned char *make_image(size_t *size)
{
    *size = (NCHUNKS - 1) * CHUNK + 4096;
    unsigned char *d = xcalloc(1, *size);
    uint32_t x = 88172645u;
    for (size_t o = 0; o < *size; o++) {
        size_t c = o / CHUNK;
        if (c == 1 || c == 3)
            continue;
        if (c == 2) {
            d[o] = (unsigned char)("level=info msg=\"served\" path=/api/v1\n"[o % 38]);
            continue;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        d[o] = (unsigned char)x;
    }
    return d;
}

static void test_agent_into_azurite(void **state)
{
    (void)state;
    /* The operator's side: credentials and an Azure migration. */
    json_t *azure = armfake_secret();
    json_t *body =
        json_pack("{s:s, s:s, s:o}", "name", "azure-it", "kind", "azure", "secret", azure);
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *reply = NULL;
    assert_int_equal(api("POST", "/v1/credentials", api_token, text, &reply), 201);
    char *cred = xstrdup(json_string_value(json_object_get(reply, "id")));
    json_decref(reply);
    json_decref(body);
    free(text);
    char pem[200];
    snprintf(pem, sizeof(pem), "-----BEGIN OPENSSH PRIVATE KEY-----\n%0100d\n", 7);
    body = json_pack("{s:s, s:s, s:{s:s, s:s}}", "name", "ssh-it", "kind", "ssh", "secret", "user",
                     "root", "private_key", pem);
    text = json_dumps(body, JSON_COMPACT);
    assert_int_equal(api("POST", "/v1/credentials", api_token, text, &reply), 201);
    char *ssh = xstrdup(json_string_value(json_object_get(reply, "id")));
    json_decref(reply);
    json_decref(body);
    free(text);
    body = json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:s, s:s}]}", "name", "azure-agent", "cloud",
                     "azure", "region", "westeurope", "credential", cred, "hosts", "name", "web1",
                     "address", "10.1.0.10", "credential", ssh);
    text = json_dumps(body, JSON_COMPACT);
    if (api("POST", "/v1/migrations", api_token, text, &reply) != 201)
        fail_msg("migration not created: %s", json_dumps(reply, 0));
    char *mig = xstrdup(json_string_value(json_object_get(reply, "id")));
    json_decref(reply);
    json_decref(body);
    free(text);

    /* The clone worker's part: the storage exists before the agent runs (storage_ensure),
     * and a callback token for the migration (its SHA-256 kept). */
    const struct provider_ops *ops = provider_find("azure");
    json_t *secret = armfake_secret();
    struct err err = {0};
    struct provider *p = ops->open(secret, "westeurope", &err);
    char bucket[64];
    if (!p || ops->storage_ensure(p, bucket, sizeof(bucket), &err) < 0)
        fail_msg("storage_ensure: %s", err.msg);
    ops->close(p);
    json_decref(secret);
    const char *tok = "azure-agent-callback-token-0123456789abcdef";
    char sha[65];
    secret_sha256_hex(tok, strlen(tok), sha);
    struct redisContext *rc = rs_connect(&redis);
    freeReplyObject(rs_cmd(rc, "HSET xm:mig:%s callback_sha %s", mig, sha));
    redisFree(rc);

    /* The reply the agent will get carries the header. */
    char *urls_path = xasprintf("/v1/agent/%s/web1/sda/urls", mig);
    assert_int_equal(api("POST", urls_path, tok, "{\"chunks\": [0]}", &reply), 200);
    free(urls_path);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(reply, "headers"), "x-ms-blob-type")),
        "BlockBlob");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(reply, "urls"), "0")),
                           azurite.endpoint));
    json_decref(reply);

    /* The source's part: xm-agent with the API's URLs. */
    size_t size;
    unsigned char *img = make_image(&size);
    char *img_path = tmp_path("disk.img"), *tok_path = tmp_path("token"),
         *state_dir = tmp_path("agent-state"), *log = tmp_path("agent.log");
    FILE *f = fopen(img_path, "wb");
    assert_int_equal(fwrite(img, 1, size, f), size);
    fclose(f);
    f = fopen(tok_path, "w");
    fprintf(f, "%s\n", tok);
    fclose(f);
    chmod(tok_path, 0600);
    char *argv[] = {
        XM_AGENT_BIN, "--device",       img_path, "--api",       api_url,   "--migration",
        mig,          "--host",         "web1",   "--disk",      "sda",     "--token-file",
        tok_path,     "--chunk-mib",    "1",      "--state-dir", state_dir, "--retry-base-ms",
        "20",         "--retry-max-ms", "200",    NULL};
    int st = azenv_run(argv, NULL, log, NULL, 0);
    if (st != 0)
        fail_msg("xm-agent exited %d (log %s)", st, log);

    /* What Azurite holds. */
    struct blob_config bc = {
        .endpoint = azurite.endpoint, .account = AZURITE_ACCOUNT, .key_b64 = AZURITE_KEY};
    struct blob *b = blob_new(&bc, &err);
    char name[512];
    unsigned char *out = xmalloc(CHUNK);
    for (size_t i = 0; i < NCHUNKS; i++) {
        snprintf(name, sizeof(name), "xmigrate/%s/web1/sda/%zu.zst", mig, i);
        size_t len = i + 1 < NCHUNKS ? CHUNK : size - i * CHUNK;
        struct blob_props props;
        int found = 0;
        assert_int_equal(blob_head(b, "xmigrate", name, &props, &found, &err), 0);
        if (i == 1 || i == 3) {
            assert_false(found); /* all-zero chunks are never sent */
            continue;
        }
        assert_true(found);
        assert_string_equal(props.type, "BlockBlob");
        char *z = NULL;
        size_t zl = 0;
        assert_int_equal(blob_get(b, "xmigrate", name, 0, 0, 2 * CHUNK, &z, &zl, &err), 0);
        size_t d = ZSTD_decompress(out, CHUNK, z, zl);
        assert_false(ZSTD_isError(d));
        assert_int_equal(d, len);
        if (memcmp(out, img + i * CHUNK, len) != 0)
            fail_msg("chunk %zu differs from the image", i);
        free(z);
    }
    snprintf(name, sizeof(name), "xmigrate/%s/web1/sda/manifest.json", mig);
    char *man = NULL;
    size_t ml = 0;
    if (blob_get(b, "xmigrate", name, 0, 0, 1 << 20, &man, &ml, &err) < 0)
        fail_msg("manifest: %s", err.msg);
    json_t *m = json_loadb(man, ml, 0, NULL);
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "device_size")), size);
    assert_int_equal(json_array_size(json_object_get(m, "chunks")), NCHUNKS);
    json_decref(m);
    free(man);
    /* The SAS URLs are credentials: not in the agent's log. */
    char logtext[65536] = "";
    f = fopen(log, "r");
    size_t lt = fread(logtext, 1, sizeof(logtext) - 1, f);
    logtext[lt] = '\0';
    fclose(f);
    assert_null(strstr(logtext, "sig="));

    blob_free(b);
    free(out);
    free(img);
    unlink(img_path);
    free(img_path);
    free(tok_path);
    free(state_dir);
    free(log);
    free(mig);
    free(cred);
    free(ssh);
}

static int start(void **state)
{
    (void)state;
    rs_start(&redis);
    /* The in-process provider (the clone worker's part) and xm-api find the storage
     * account's endpoint through the fake, as in Azure. */
    azenv_start(&azurite, &fake, redis.dir, NULL, 0);
    int port = unused_port();
    snprintf(api_url, sizeof(api_url), "http://127.0.0.1:%d", port);
    static char e_port[32], e_login[96], e_arm[96], e_redis[32];
    snprintf(e_port, sizeof(e_port), "XM_API_PORT=%d", port);
    snprintf(e_login, sizeof(e_login), "XM_AZURE_LOGIN_ENDPOINT=%s", fake.endpoint);
    snprintf(e_arm, sizeof(e_arm), "XM_AZURE_ARM_ENDPOINT=%s", fake.endpoint);
    snprintf(e_redis, sizeof(e_redis), "XM_REDIS_PORT=%d", redis.port);
    static char *env[] = {"XM_REDIS_HOST=127.0.0.1",
                          "XM_API_ADDR=127.0.0.1",
                          "XM_API_THREADS=2",
                          "XM_SCHEMAS_DIR=" XM_SCHEMAS_DIR,
                          "XM_MASTER_KEY=" MASTER_KEY,
                          "XM_API_TOKEN_CACHE_MS=0",
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL};
    env[6] = e_port;
    env[7] = e_login;
    env[8] = e_arm;
    env[9] = e_redis;
    char *cli_log = tmp_path("cli.log");
    char *argv_tok[] = {XM_API_BIN, "token", "create", "itest", NULL};
    assert_int_equal(azenv_run(argv_tok, env, cli_log, api_token, sizeof(api_token)), 0);
    api_token[strcspn(api_token, "\n")] = '\0';
    free(cli_log);
    char *argv_api[] = {XM_API_BIN, NULL};
    api_pid = spawn_worker(&redis, "xm-api", argv_api, env);
    if (!wait_until(api_healthy, NULL, 20000))
        fail_msg("xm-api never answered /healthz (log %s/xm-api.log)", redis.dir);
    return 0;
}

static int stop(void **state)
{
    (void)state;
    stop_process(api_pid, SIGTERM);
    azenv_stop(&azurite, &fake);
    rs_destroy(&redis);
    return 0;
}

int main(void)
{
    azurite_require();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_into_azurite),
    };
    return cmocka_run_group_tests_name("xm-agent into azurite through xm-api", tests, start, stop);
}
