/*
 * xm-api: the HTTP front end, and the token commands an operator runs once.
 *
 *   xm-api [serve]               serve the API (XM_API_ADDR:XM_API_PORT)
 *   xm-api token create NAME     make an API token; prints it once, stores its SHA-256
 *   xm-api token list            names and creation times
 *   xm-api token revoke NAME     remove the token(s) of that name
 */
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "conn.h"
#include "job.h"
#include "jsonschema.h"
#include "keys.h"
#include "log.h"
#include "secret.h"
#include "server.h"
#include "xmalloc.h"

static const struct route routes[] = {
    {EVHTTP_REQ_GET, "/healthz", "healthz", AUTH_NONE, NULL, ops_healthz},
    {EVHTTP_REQ_GET, "/metrics", "metrics", AUTH_TOKEN, NULL, ops_metrics},
    {EVHTTP_REQ_POST, "/v1/credentials", "credentials.create", AUTH_TOKEN, "credential_create",
     cred_create},
    {EVHTTP_REQ_GET, "/v1/credentials", "credentials.list", AUTH_TOKEN, NULL, cred_list},
    {EVHTTP_REQ_GET, "/v1/credentials/{}", "credentials.get", AUTH_TOKEN, NULL, cred_get},
    {EVHTTP_REQ_DELETE, "/v1/credentials/{}", "credentials.delete", AUTH_TOKEN, NULL, cred_delete},
    {EVHTTP_REQ_POST, "/v1/migrations", "migrations.create", AUTH_TOKEN, "migration_create",
     mig_create},
    {EVHTTP_REQ_GET, "/v1/migrations", "migrations.list", AUTH_TOKEN, NULL, mig_list},
    {EVHTTP_REQ_GET, "/v1/migrations/{}", "migrations.get", AUTH_TOKEN, NULL, mig_get},
    {EVHTTP_REQ_DELETE, "/v1/migrations/{}", "migrations.cancel", AUTH_TOKEN, NULL, mig_cancel},
    {EVHTTP_REQ_GET, "/v1/migrations/{}/blueprint", "blueprint.get", AUTH_TOKEN, NULL,
     mig_blueprint_get},
    {EVHTTP_REQ_PUT, "/v1/migrations/{}/blueprint", "blueprint.put", AUTH_TOKEN, "blueprint",
     mig_blueprint_put},
    {EVHTTP_REQ_POST, "/v1/migrations/{}/approve", "migrations.approve", AUTH_TOKEN, NULL,
     mig_approve},
    {EVHTTP_REQ_POST, "/v1/migrations/{}/rollback", "migrations.rollback", AUTH_TOKEN, NULL,
     mig_rollback},
    {EVHTTP_REQ_POST, "/v1/migrations/{}/cutover", "migrations.cutover", AUTH_TOKEN, NULL,
     mig_cutover},
    {EVHTTP_REQ_POST, "/v1/migrations/{}/hosts/{}/retry", "hosts.retry", AUTH_TOKEN, NULL,
     mig_host_retry},
    {EVHTTP_REQ_POST, "/v1/migrations/{}/hosts/{}/phases/{}", "hosts.phase", AUTH_TOKEN, NULL,
     mig_host_phase},
    {EVHTTP_REQ_GET, "/v1/migrations/{}/hosts/{}/prep", "hosts.prep", AUTH_TOKEN, NULL,
     mig_host_prep},
    {EVHTTP_REQ_GET, "/v1/migrations/{}/events", "migrations.events", AUTH_TOKEN, NULL, mig_events},
    {EVHTTP_REQ_POST, "/v1/agent/{}/{}/{}/urls", "agent.urls", AUTH_CALLBACK, "agent_urls",
     agent_urls},
    {EVHTTP_REQ_POST, "/v1/agent/{}/{}/{}/progress", "agent.progress", AUTH_CALLBACK,
     "agent_progress", agent_progress},
    {EVHTTP_REQ_POST, "/v1/callbacks/discovery/{}", "callbacks.discovery", AUTH_CALLBACK, "facts",
     mig_discovery_callback},
};

static int usage(void)
{
    fprintf(stderr, "usage: xm-api [serve]\n"
                    "       xm-api token create NAME\n"
                    "       xm-api token list\n"
                    "       xm-api token revoke NAME\n");
    return 2;
}

static int valid_token_name(const char *s)
{
    return job_valid_ident(s) && strlen(s) < 64;
}

static int token_cmd(int argc, char **argv)
{
    struct err err = {0};
    if (argc < 3)
        return usage();
    const char *verb = argv[2];
    if ((strcmp(verb, "create") == 0 || strcmp(verb, "revoke") == 0) &&
        (argc != 4 || !valid_token_name(argv[3]))) {
        fprintf(stderr, "xm-api: a token NAME is 1..63 of [A-Za-z0-9._:-]\n");
        return 2;
    }
    redisContext *c = conn_open(&err);
    if (!c) {
        fprintf(stderr, "xm-api: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (strcmp(verb, "create") == 0 && argc == 4) {
        char token[SECRET_TOKEN_LEN + 1], sha[65], key[128];
        secret_token_new(token);
        secret_sha256_hex(token, strlen(token), sha);
        snprintf(key, sizeof(key), XM_TOKEN_FMT, sha);
        redisReply *r = redisCommand(c, "MULTI");
        freeReplyObject(r);
        r = redisCommand(c, "HSET %s name %s created %lld", key, argv[3], job_now_us() / 1000);
        if (r)
            freeReplyObject(r);
        r = redisCommand(c, "SADD %s %s", XM_TOKENS, sha);
        if (r)
            freeReplyObject(r);
        r = redisCommand(c, "EXEC");
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "xm-api: could not store the token: %s\n",
                    r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
            rc = 1;
        } else {
            /* The only time the token is ever shown. */
            printf("%s\n", token);
        }
        if (r)
            freeReplyObject(r);
        secret_wipe(token, sizeof(token));
    } else if (strcmp(verb, "list") == 0 || strcmp(verb, "revoke") == 0) {
        redisReply *all = redisCommand(c, "SMEMBERS %s", XM_TOKENS);
        int revoked = 0;
        for (size_t i = 0; all && i < all->elements; i++) {
            const char *sha = all->element[i]->str;
            redisReply *h = redisCommand(c, "HMGET " XM_TOKEN_FMT " name created", sha);
            if (!h || h->elements != 2 || h->element[0]->type != REDIS_REPLY_STRING) {
                if (h)
                    freeReplyObject(h);
                continue;
            }
            const char *name = h->element[0]->str;
            if (strcmp(verb, "list") == 0) {
                printf("%s\t%s\n", name,
                       h->element[1]->type == REDIS_REPLY_STRING ? h->element[1]->str : "-");
            } else if (strcmp(name, argv[3]) == 0) {
                redisReply *d = redisCommand(c, "DEL " XM_TOKEN_FMT, sha);
                if (d)
                    freeReplyObject(d);
                d = redisCommand(c, "SREM %s %s", XM_TOKENS, sha);
                if (d)
                    freeReplyObject(d);
                revoked++;
            }
            freeReplyObject(h);
        }
        if (all)
            freeReplyObject(all);
        if (strcmp(verb, "revoke") == 0) {
            fprintf(stderr,
                    "xm-api: revoked %d token(s) named '%s' (running servers forget "
                    "them within XM_API_TOKEN_CACHE_MS)\n",
                    revoked, argv[3]);
            rc = revoked ? 0 : 1;
        }
    } else {
        rc = usage();
    }
    redisFree(c);
    return rc;
}

int main(int argc, char **argv)
{
    struct err err = {0};
    if (config_load(&err) < 0) {
        log_write(LOG_FATAL, "bad configuration", "error=\"%s\"", err.msg);
        return 2;
    }
    log_set_level(xm_config.log_level);
    int rc;
    if (argc >= 2 && strcmp(argv[1], "token") == 0) {
        rc = token_cmd(argc, argv);
    } else if (argc == 1 || (argc == 2 && strcmp(argv[1], "serve") == 0)) {
        if (secret_key_parse(xm_config.master_key, api_master_key, &err) < 0) {
            log_write(LOG_FATAL, "bad configuration", "error=\"%s\"", err.msg);
            config_release();
            return 2;
        }
        struct jsonschema_set *schemas = jsonschema_set_load_dir(xm_config.schemas_dir, &err);
        if (!schemas) {
            log_write(LOG_FATAL, "cannot load schemas", "error=\"%s\"", err.msg);
            config_release();
            return 2;
        }
        rc = api_serve(routes, sizeof(routes) / sizeof(routes[0]), schemas);
        jsonschema_set_free(schemas);
        secret_wipe(api_master_key, sizeof(api_master_key));
    } else {
        rc = usage();
    }
    config_release();
    return rc;
}
