/*
 * token.c: the client-credentials grant and its cache (see token.h).
 */
#include "azure/token.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws/aws.h"
#include "secret.h"
#include "xmalloc.h"

#define TOKEN_REPLY_MAX (64 * 1024)

struct token {
    char *url;
    char *form; /* the request body: holds the client secret */
    struct http_client *http;
    struct http_retry policy;
    char *access; /* cached token or NULL */
    time_t expires;
    int fetches;
};

static int uuidish(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= 64 && strspn(s, "0123456789abcdefABCDEF-.") == n;
}

struct token *token_new(const struct token_config *cfg, struct err *err)
{
    if (!uuidish(cfg->tenant_id) || !uuidish(cfg->client_id)) {
        err_set(err, ERR_PERMANENT, "azure credential: tenant_id or client_id is not a uuid");
        return NULL;
    }
    if (!cfg->client_secret || !cfg->client_secret[0]) {
        err_set(err, ERR_PERMANENT, "azure credential lacks client_secret");
        return NULL;
    }
    const char *login = cfg->login_endpoint && cfg->login_endpoint[0]
                            ? cfg->login_endpoint
                            : "https://login.microsoftonline.com";
    struct token *t = xcalloc(1, sizeof(*t));
    size_t ll = strlen(login);
    t->url = xasprintf("%.*s/%s/oauth2/v2.0/token", (int)(login[ll - 1] == '/' ? ll - 1 : ll),
                       login, cfg->tenant_id);
    char *id = aws_form_encode(cfg->client_id);
    char *sec = aws_form_encode(cfg->client_secret);
    char *scope = aws_form_encode(cfg->scope);
    t->form = xasprintf("grant_type=client_credentials&client_id=%s&client_secret=%s&scope=%s", id,
                        sec, scope);
    secret_wipe(sec, strlen(sec));
    free(id);
    free(sec);
    free(scope);
    t->http = cfg->http;
    t->policy =
        (struct http_retry){.max_attempts = cfg->max_attempts, .base_ms = cfg->backoff_base_ms};
    return t;
}

static void drop(struct token *t)
{
    if (t->access) {
        secret_wipe(t->access, strlen(t->access));
        free(t->access);
        t->access = NULL;
    }
}

void token_free(struct token *t)
{
    if (!t)
        return;
    drop(t);
    secret_wipe(t->form, strlen(t->form));
    free(t->form);
    free(t->url);
    free(t);
}

void token_invalidate(struct token *t)
{
    drop(t);
}

int token_fetches(const struct token *t)
{
    return t->fetches;
}

static int build(void *arg, struct http_request *req, struct err *err)
{
    struct token *t = arg;
    (void)err;
    req->method = "POST";
    req->url = t->url;
    req->body = t->form;
    req->body_len = strlen(t->form);
    req->max_response = TOKEN_REPLY_MAX;
    http_request_add_header(req, "Content-Type: application/x-www-form-urlencoded");
    http_request_add_header(req, "Accept: application/json");
    t->fetches++;
    return 0;
}

static int classify(void *arg, const struct http_response *resp, struct err *err)
{
    (void)arg;
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    if (resp->status >= 500 || resp->status == 429 || resp->status == 408) {
        err_set(err, ERR_TRANSIENT, "entra id token endpoint answered HTTP %ld", resp->status);
        return 1;
    }
    json_t *j = resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(j, "error"));
    const char *desc = json_string_value(json_object_get(j, "error_description"));
    /* The description's first line names the problem (AADSTS7000215: invalid secret). */
    int dl = desc ? (int)strcspn(desc, "\r\n") : 0;
    err_set(err, ERR_PERMANENT, "entra id refused the client credentials (%s, HTTP %ld)%s%.*s",
            code ? code : "no error code", resp->status, dl ? ": " : "", dl > 200 ? 200 : dl,
            desc ? desc : "");
    json_decref(j);
    return -1;
}

const char *token_get(struct token *t, struct err *err)
{
    time_t now = time(NULL);
    if (t->access && now < t->expires)
        return t->access;
    drop(t);
    struct http_response resp;
    http_response_init(&resp);
    if (http_send_retry(t->http, build, classify, t, &t->policy, &resp, err) < 0) {
        http_response_release(&resp);
        return NULL;
    }
    json_t *j = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(j, "token_type"));
    const char *access = json_string_value(json_object_get(j, "access_token"));
    json_int_t life = json_integer_value(json_object_get(j, "expires_in"));
    /* v1 endpoints send expires_in as a string. */
    if (!life && json_is_string(json_object_get(j, "expires_in")))
        life = strtoll(json_string_value(json_object_get(j, "expires_in")), NULL, 10);
    if (!access || !type || strcasecmp(type, "Bearer") != 0 || strlen(access) > TOKEN_MAX ||
        strpbrk(access, "\r\n ") || life <= 0) {
        err_set(err, ERR_PERMANENT, "entra id token reply is not a bearer token");
    } else {
        t->access = xstrdup(access);
        /* Short-lived tokens are still used once; long ones are renewed early. */
        t->expires = now + (life > 2 * TOKEN_MARGIN_S ? life - TOKEN_MARGIN_S : life / 2);
    }
    if (resp.body)
        secret_wipe(resp.body, resp.body_len);
    json_decref(j);
    http_response_release(&resp);
    return t->access;
}
