/*
 * fuzz_request: a libFuzzer target over every request-body route of xm-api, without
 * Redis or a socket.
 *
 * Input: the first byte picks the route, the rest is the request body.
 *
 *   'm'  POST /v1/migrations             migration_create -> migration_build()
 *   'c'  POST /v1/credentials            credential_create -> seal the secret
 *   'b'  PUT /v1/migrations/{}/blueprint blueprint -> blueprint_check(hosts NULL)
 *   'h'  the same, for a migration whose hosts are "web1" and "db1"
 *   'f'  POST /v1/callbacks/discovery/{} facts -> dump the facts
 *   other bytes pick one of the five by value, so no input is wasted.
 *
 * Each body goes the way api/server.c read_body() takes it: the XM_API_MAX_BODY cap,
 * json_loadb() with JSON_REJECT_DUPLICATES, then the route's schema; then the pure part
 * of the route's handler, up to the Redis commands it would send. Schemas load once,
 * from $XM_SCHEMAS_DIR or the source tree's schemas/.
 *
 * Beyond the sanitizers, the target aborts when a reply the server would send cannot be
 * encoded: every 400 must carry the JSON error shape, so its message and path must be
 * valid UTF-8 (api_reply_error() would otherwise send an empty body). And
 * migration_build() must return one MULTI .. EXEC that stores each host's port as the
 * body gave it, and blueprint_check() an empty path on success.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cmd.h"
#include "config.h"
#include "jsonschema.h"
#include "secret.h"

#ifndef XM_FUZZ_SCHEMAS_DIR
#define XM_FUZZ_SCHEMAS_DIR "schemas"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct jsonschema_set *g_schemas;
static json_t *g_hosts; /* the host names of the 'h' migration */
static const unsigned char g_key[SECRET_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};

/* The fixed parts of a new migration that mig_create() makes at random. */
static const struct migration_input g_input = {
    .id = "0b7e5e3a-9d3c-4c1e-8f8e-2d7a4b6c9e10",
    .callback_sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    .callback_sealed = "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    .now_ms = 1700000000000LL,
};

static _Noreturn void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_request: %s: %s\n", what, detail);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct err err = {0};
    if (config_load(&err) < 0)
        die("bad configuration", err.msg);
    const char *dir = getenv("XM_SCHEMAS_DIR");
    if (!dir || !dir[0])
        dir = XM_FUZZ_SCHEMAS_DIR;
    g_schemas = jsonschema_set_load_dir(dir, &err);
    if (!g_schemas)
        die("cannot load schemas", err.msg);
    static const char *const needed[] = {"migration_create", "credential_create", "blueprint",
                                         "facts"};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
        if (!jsonschema_set_get(g_schemas, needed[i]))
            die("missing schema", needed[i]);
    g_hosts = json_pack("[s, s]", "web1", "db1");
    return 0;
}

/* ---------------------------------------------------------------- oracles */

/* What api_reply_error() sends; abort when it could not be encoded (an empty 400). */
static void reply_error(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_error(const char *path, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The body the server sends: it must always exist, with message and path in it. */
    json_t *body = api_error_body("invalid_request", path, msg);
    json_t *e = json_object_get(body, "error");
    if (!body || !json_is_string(json_object_get(e, "message")) ||
        (path && !json_is_string(json_object_get(e, "path"))))
        die("error reply could not be encoded", msg);
    json_decref(body);
}

static void check_tx(const struct cmd *cmds, int n)
{
    if (n < 2 || cmds[0].argc != 1 || strcmp(cmds[0].argv[0], "MULTI") != 0 ||
        cmds[n - 1].argc != 1 || strcmp(cmds[n - 1].argv[0], "EXEC") != 0)
        die("migration_build", "the commands are not one MULTI .. EXEC");
    for (int i = 0; i < n; i++)
        for (int a = 0; a < cmds[i].argc; a++)
            if (!cmds[i].argv[a])
                die("migration_build", "a command has a NULL argument");
}

/* The value of field in an HSET's field/value pairs, or NULL. */
static const char *hset_field(const struct cmd *c, const char *field)
{
    for (int a = 2; a + 1 < c->argc; a += 2)
        if (strcmp(c->argv[a], field) == 0)
            return c->argv[a + 1];
    return NULL;
}

/* Each host's HSET stores the port the body gave (the schema lets 2222.0 through as an
 * integer), or 22 when it gave none. */
static void check_ports(const json_t *body, const struct cmd *cmds, int n)
{
    const json_t *hosts = json_object_get(body, "hosts");
    for (int i = 0; i < n; i++) {
        if (strcmp(cmds[i].argv[0], "HSET") != 0)
            continue;
        const char *port = hset_field(&cmds[i], "port"), *name = hset_field(&cmds[i], "name");
        if (!port || !name)
            continue;
        for (size_t h = 0; h < json_array_size(hosts); h++) {
            const json_t *host = json_array_get(hosts, h);
            if (strcmp(json_string_value(json_object_get(host, "name")), name) != 0)
                continue;
            const json_t *want = json_object_get(host, "port");
            long long w = want ? (long long)json_number_value(want) : 22;
            if (strtoll(port, NULL, 10) != w)
                die("migration_build stored another port", port);
        }
    }
}

/* ---------------------------------------------------------------- routes */

static void route_migration(const json_t *body)
{
    struct cmd *cmds = NULL;
    int n = 0;
    char path[256];
    struct err err = {0};
    if (migration_build(body, g_schemas, &g_input, &cmds, &n, path, &err) < 0) {
        reply_error(path, "%s", err.msg);
        return;
    }
    check_tx(cmds, n);
    check_ports(body, cmds, n);
    for (int i = 0; i < n; i++)
        cmd_release(&cmds[i]);
    free(cmds);
}

static void route_credential(const json_t *body)
{
    /* cred_create(): the secret is dumped with sorted keys and sealed under its id. */
    char *text = json_dumps(json_object_get(body, "secret"), JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        die("credential", "the validated secret cannot be dumped");
    size_t len = strlen(text);
    char *sealed = secret_seal(g_key, g_input.id, (const unsigned char *)text, len);
    secret_wipe(text, len);
    free(text);
    free(sealed);
}

static void route_blueprint(const json_t *body, const json_t *hosts)
{
    char path[256];
    struct err err = {0};
    if (blueprint_check(body, hosts, path, &err) < 0) {
        reply_error(path, "%s%s%s", path, path[0] ? ": " : "", err.msg);
        return;
    }
    if (path[0])
        die("blueprint_check", "success with a path set");
}

static void route_facts(const json_t *body)
{
    char *facts = json_dumps(json_object_get(body, "facts"), JSON_COMPACT);
    if (!facts)
        die("facts", "the validated facts cannot be dumped");
    free(facts);
}

/* ---------------------------------------------------------------- entry */

enum route { R_MIGRATION, R_CREDENTIAL, R_BLUEPRINT, R_BLUEPRINT_HOSTS, R_FACTS, N_ROUTES };

static const char *const route_schema[N_ROUTES] = {
    "migration_create", "credential_create", "blueprint", "blueprint", "facts",
};

static enum route pick(uint8_t b)
{
    switch (b) {
    case 'm':
        return R_MIGRATION;
    case 'c':
        return R_CREDENTIAL;
    case 'b':
        return R_BLUEPRINT;
    case 'h':
        return R_BLUEPRINT_HOSTS;
    case 'f':
        return R_FACTS;
    default:
        return (enum route)(b % N_ROUTES);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum route route = pick(data[0]);
    const char *body_text = (const char *)data + 1;
    size_t len = size - 1;
    if ((long long)len > xm_config.api_max_body)
        return 0; /* 413 before any parsing */

    json_error_t jerr;
    json_t *body = json_loadb(len ? body_text : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        reply_error(NULL, "the body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return 0;
    }
    const struct jsonschema *s = jsonschema_set_get(g_schemas, route_schema[route]);
    struct jsonschema_error ve;
    if (jsonschema_validate(s, body, &ve) < 0) {
        reply_error(ve.path, "%s%s%s", ve.path, ve.path[0] ? ": " : "", ve.message);
        json_decref(body);
        return 0;
    }
    switch (route) {
    case R_MIGRATION:
        route_migration(body);
        break;
    case R_CREDENTIAL:
        route_credential(body);
        break;
    case R_BLUEPRINT:
        route_blueprint(body, NULL);
        break;
    case R_BLUEPRINT_HOSTS:
        route_blueprint(body, g_hosts);
        break;
    case R_FACTS:
        route_facts(body);
        break;
    case N_ROUTES:
        break;
    }
    json_decref(body);
    return 0;
}
