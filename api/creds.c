/*
 * /v1/credentials: cloud credentials and SSH logins, sealed with AES-256-GCM under
 * XM_MASTER_KEY (record id as associated data) the moment they arrive. What comes back
 * is the name, kind, a non-secret identity (access key id, client id, service account,
 * user name) and a keyed fingerprint, never the secret.
 */
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cmd.h"
#include "job.h"
#include "keys.h"
#include "secret.h"
#include "server.h"
#include "xmalloc.h"

static const char *const cred_fields[] = {"id",       "name",    "kind",
                                          "identity", "created", "fingerprint"};
#define N_CRED_FIELDS 6

/* The part of a secret that identifies it without revealing it. */
static const char *identity_of(const char *kind, json_t *secret)
{
    const char *v = NULL;
    if (strcmp(kind, "aws") == 0)
        v = json_string_value(json_object_get(secret, "access_key_id"));
    else if (strcmp(kind, "azure") == 0)
        v = json_string_value(json_object_get(secret, "client_id"));
    else if (strcmp(kind, "gcp") == 0)
        v = json_string_value(
            json_object_get(json_object_get(secret, "service_account"), "client_email"));
    else if (strcmp(kind, "ssh") == 0)
        v = json_string_value(json_object_get(secret, "user"));
    return v ? v : "";
}

/* "hmac-sha256:" + 16 hex of HMAC-SHA256(master key, secret): tells two credentials apart
 * and lets an operator match one, but cannot be brute-forced without the master key. */
static void keyed_fingerprint(const char *text, size_t len, char out[40])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), api_master_key, sizeof(api_master_key), (const unsigned char *)text, len,
         mac, &mac_len);
    size_t o = (size_t)snprintf(out, 40, "hmac-sha256:");
    for (int i = 0; i < 8; i++) {
        out[o++] = hex[mac[i] >> 4];
        out[o++] = hex[mac[i] & 15];
    }
    out[o] = '\0';
}

/* A credential hash (HMGET reply in cred_fields order) as JSON. */
static json_t *cred_json(const redisReply *r)
{
    json_t *o = json_object();
    for (size_t i = 0; i < N_CRED_FIELDS && i < r->elements; i++) {
        const redisReply *v = r->element[i];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(cred_fields[i], "created") == 0)
            json_object_set_new(o, "created", json_integer(strtoll(v->str, NULL, 10)));
        else
            json_object_set_new(o, cred_fields[i], json_stringn(v->str, v->len));
    }
    return o;
}

static void hmget_cred(struct cmd *c, const char *id)
{
    cmd_init(c);
    cmd_arg(c, "HMGET");
    cmd_argf(c, XM_CRED_FMT, id);
    for (size_t i = 0; i < N_CRED_FIELDS; i++)
        cmd_arg(c, cred_fields[i]);
}

void cred_create(struct api_req *r)
{
    const char *name = json_string_value(json_object_get(r->body, "name"));
    const char *kind = json_string_value(json_object_get(r->body, "kind"));
    json_t *secret = json_object_get(r->body, "secret");
    char id[37], fp[40], now[32];
    api_new_uuid(id);
    snprintf(now, sizeof(now), "%lld", job_now_us() / 1000);

    char *text = json_dumps(secret, JSON_COMPACT | JSON_SORT_KEYS);
    size_t text_len = strlen(text);
    if (text_len > SECRET_PLAIN_MAX) {
        /* The body cap lets through more than a sealed record may hold. */
        secret_wipe(text, text_len);
        free(text);
        api_reply_error(r, 413, "too_large", "/secret", "the secret is over %d bytes",
                        (int)SECRET_PLAIN_MAX);
        return;
    }
    char *sealed = secret_seal(api_master_key, id, (const unsigned char *)text, text_len);
    keyed_fingerprint(text, text_len, fp);
    secret_wipe(text, text_len);
    free(text);
    const char *identity = identity_of(kind, secret);

    struct cmd c[4];
    for (int i = 0; i < 4; i++)
        cmd_init(&c[i]);
    cmd_arg(&c[0], "MULTI");
    cmd_arg(&c[1], "HSET");
    cmd_argf(&c[1], XM_CRED_FMT, id);
    const char *pairs[] = {"id",     id,        "name", name,     "kind", kind,          "identity",
                           identity, "created", now,    "sealed", sealed, "fingerprint", fp};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        cmd_arg(&c[1], pairs[i]);
    cmd_arg(&c[2], "ZADD");
    cmd_arg(&c[2], XM_CREDS);
    cmd_arg(&c[2], now);
    cmd_arg(&c[2], id);
    cmd_arg(&c[3], "EXEC");
    redisReply *rep[4];
    struct err err = {0};
    int rc = api_pipeline(r, c, 4, rep, &err);
    api_free_replies(rep, 4);
    for (int i = 0; i < 4; i++)
        cmd_release(&c[i]);
    secret_wipe(sealed, strlen(sealed));
    free(sealed);
    if (rc < 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_json(r, 201,
                   json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "id", id, "name", name, "kind", kind,
                             "identity", identity, "fingerprint", fp, "created",
                             (json_int_t)strtoll(now, NULL, 10)));
}

void cred_list(struct api_req *r)
{
    struct err err = {0};
    const char *argv[] = {"ZRANGE", XM_CREDS, "0", "999"};
    redisReply *ids = api_cmd(r, &err, 4, argv);
    if (!ids) {
        api_reply_unavailable(r, &err);
        return;
    }
    size_t n = ids->elements;
    struct cmd *c = xcalloc(n ? n : 1, sizeof(*c));
    redisReply **rep = xcalloc(n ? n : 1, sizeof(*rep));
    for (size_t i = 0; i < n; i++)
        hmget_cred(&c[i], ids->element[i]->str);
    int rc = n ? api_pipeline(r, c, (int)n, rep, &err) : 0;
    json_t *items = json_array();
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (rep[i]->elements && rep[i]->element[0]->type == REDIS_REPLY_STRING)
            json_array_append_new(items, cred_json(rep[i]));
    api_free_replies(rep, (int)n);
    for (size_t i = 0; i < n; i++)
        cmd_release(&c[i]);
    free(c);
    free(rep);
    freeReplyObject(ids);
    if (rc < 0) {
        json_decref(items);
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "items", items));
}

void cred_get(struct api_req *r)
{
    struct cmd c[2];
    hmget_cred(&c[0], r->params[0]);
    cmd_init(&c[1]);
    cmd_arg(&c[1], "SMEMBERS");
    cmd_argf(&c[1], XM_CRED_USERS_FMT, r->params[0]);
    redisReply *rep[2];
    struct err err = {0};
    int rc = api_pipeline(r, c, 2, rep, &err);
    cmd_release(&c[0]);
    cmd_release(&c[1]);
    if (rc < 0) {
        api_free_replies(rep, 2);
        api_reply_unavailable(r, &err);
        return;
    }
    if (rep[0]->elements == 0 || rep[0]->element[0]->type != REDIS_REPLY_STRING) {
        api_free_replies(rep, 2);
        api_reply_error(r, 404, "not_found", NULL, "no credential '%s'", r->params[0]);
        return;
    }
    json_t *o = cred_json(rep[0]);
    json_t *users = json_array();
    for (size_t i = 0; i < rep[1]->elements; i++)
        json_array_append_new(users, json_string(rep[1]->element[i]->str));
    json_object_set_new(o, "used_by", users);
    api_free_replies(rep, 2);
    api_reply_json(r, 200, o);
}

void cred_delete(struct api_req *r)
{
    char key[200], users[220];
    snprintf(key, sizeof(key), XM_CRED_FMT, r->params[0]);
    snprintf(users, sizeof(users), XM_CRED_USERS_FMT, r->params[0]);
    struct err err = {0};
    for (int tries = 0; tries < 10; tries++) {
        /* WATCH the users set: a migration taking the credential between the check and
         * the delete makes EXEC fail, and we look again. */
        struct cmd c[3];
        for (int i = 0; i < 3; i++)
            cmd_init(&c[i]);
        cmd_arg(&c[0], "WATCH");
        cmd_arg(&c[0], users);
        cmd_arg(&c[1], "EXISTS");
        cmd_arg(&c[1], key);
        cmd_arg(&c[2], "SMEMBERS");
        cmd_arg(&c[2], users);
        redisReply *rep[3];
        int rc = api_pipeline(r, c, 3, rep, &err);
        for (int i = 0; i < 3; i++)
            cmd_release(&c[i]);
        if (rc < 0) {
            api_free_replies(rep, 3);
            api_reply_unavailable(r, &err);
            return;
        }
        if (rep[1]->integer == 0 || rep[2]->elements > 0) {
            int missing = rep[1]->integer == 0;
            char list[400] = "";
            for (size_t i = 0; i < rep[2]->elements && strlen(list) < 300; i++) {
                size_t o = strlen(list);
                snprintf(list + o, sizeof(list) - o, "%s'%s'", i ? ", " : "",
                         rep[2]->element[i]->str);
            }
            api_free_replies(rep, 3);
            api_unwatch(r);
            if (missing)
                api_reply_error(r, 404, "not_found", NULL, "no credential '%s'", r->params[0]);
            else
                api_reply_error(r, 409, "in_use", NULL,
                                "credential '%s' is used by migration %s; cancel or finish "
                                "those first",
                                r->params[0], list);
            return;
        }
        api_free_replies(rep, 3);

        struct cmd d[4];
        for (int i = 0; i < 4; i++)
            cmd_init(&d[i]);
        cmd_arg(&d[0], "MULTI");
        cmd_arg(&d[1], "DEL");
        cmd_arg(&d[1], key);
        cmd_arg(&d[2], "ZREM");
        cmd_arg(&d[2], XM_CREDS);
        cmd_arg(&d[2], r->params[0]);
        cmd_arg(&d[3], "EXEC");
        redisReply *dr[4];
        rc = api_pipeline(r, d, 4, dr, &err);
        int aborted = rc == 0 && dr[3]->type == REDIS_REPLY_NIL;
        api_free_replies(dr, 4);
        for (int i = 0; i < 4; i++)
            cmd_release(&d[i]);
        if (rc < 0) {
            api_reply_unavailable(r, &err);
            return;
        }
        if (!aborted) {
            api_reply_text(r, 204, "application/json", "", 0);
            return;
        }
    }
    api_reply_error(r, 409, "conflict", NULL, "credential '%s' is changing; try again",
                    r->params[0]);
}
