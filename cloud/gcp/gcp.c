#include "gcp/gcp.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gcp/jwt.h"
#include "secret.h"
#include "xmalloc.h"

#define GCP_TOKEN_MAX 4096

struct gcp {
    char *project;
    char *email;
    char *kid;
    EVP_PKEY *key;
    char *token_uri;
    char *storage, *compute; /* base URLs without a trailing slash */
    struct http_client *http;
    int max_attempts;
    long base_ms, cap_ms, poll_ms;
    char token[GCP_TOKEN_MAX];
    time_t token_expiry; /* wall clock: the token's own lifetime */
    int token_fetches;
    int last_attempts;
    char last_reason[64];
};

static char *trim_slash(const char *url)
{
    char *s = xstrdup(url);
    size_t n = strlen(s);
    while (n && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

static const char *or_default(const char *v, const char *dflt)
{
    return v && v[0] ? v : dflt;
}

struct gcp *gcp_new(const struct gcp_config *cfg, struct err *err)
{
    if (!cfg->project || !cfg->project[0] || !cfg->client_email || !cfg->client_email[0]) {
        err_set(err, ERR_PERMANENT,
                "gcp: the service-account key lacks project_id or "
                "client_email");
        return NULL;
    }
    EVP_PKEY *key = gcp_key_parse(cfg->private_key, err);
    if (!key)
        return NULL;
    struct gcp *g = xcalloc(1, sizeof(*g));
    g->project = xstrdup(cfg->project);
    g->email = xstrdup(cfg->client_email);
    g->kid = cfg->private_key_id ? xstrdup(cfg->private_key_id) : NULL;
    g->key = key;
    g->token_uri = xstrdup(or_default(cfg->token_uri, GCP_TOKEN_URI));
    g->storage = trim_slash(or_default(cfg->storage_endpoint, GCP_STORAGE_URL));
    g->compute = trim_slash(or_default(cfg->compute_endpoint, GCP_COMPUTE_URL));
    g->http = http_client_new(&cfg->http);
    g->max_attempts = cfg->max_attempts ? cfg->max_attempts : 6;
    g->base_ms = cfg->backoff_base_ms ? cfg->backoff_base_ms : 200;
    g->cap_ms = cfg->backoff_cap_ms ? cfg->backoff_cap_ms : 20000;
    g->poll_ms = cfg->poll_ms ? cfg->poll_ms : 250;
    return g;
}

void gcp_free(struct gcp *g)
{
    if (!g)
        return;
    secret_wipe(g->token, sizeof(g->token));
    EVP_PKEY_free(g->key);
    free(g->project);
    free(g->email);
    free(g->kid);
    free(g->token_uri);
    free(g->storage);
    free(g->compute);
    http_client_free(g->http);
    free(g);
}

const char *gcp_project(const struct gcp *g)
{
    return g->project;
}

const char *gcp_client_email(const struct gcp *g)
{
    return g->email;
}

EVP_PKEY *gcp_key(const struct gcp *g)
{
    return g->key;
}

const char *gcp_storage_base(const struct gcp *g)
{
    return g->storage;
}

const char *gcp_compute_base(const struct gcp *g)
{
    return g->compute;
}

long gcp_poll_ms(const struct gcp *g)
{
    return g->poll_ms;
}

const char *gcp_last_reason(const struct gcp *g)
{
    return g->last_reason;
}

int gcp_last_attempts(const struct gcp *g)
{
    return g->last_attempts;
}

int gcp_token_fetches(const struct gcp *g)
{
    return g->token_fetches;
}

void gcp_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

char *gcp_encode(const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = xmalloc(3 * strlen(s) + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/')) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---------------------------------------------------------------- token */

struct token_ctx {
    struct gcp *g;
    char *body;
};

static int token_build(void *arg, struct http_request *req, struct err *err)
{
    struct token_ctx *t = arg;
    struct gcp_jwt_claims c = {.kid = t->g->kid,
                               .iss = t->g->email,
                               .scope = GCP_SCOPE,
                               .aud = t->g->token_uri,
                               .iat = (long long)time(NULL)};
    char *jwt = gcp_jwt_assertion(t->g->key, &c, err);
    if (!jwt)
        return -1;
    free(t->body);
    t->body = xasprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
                        "&assertion=%s",
                        jwt);
    free(jwt);
    req->method = "POST";
    req->url = t->g->token_uri;
    req->body = t->body;
    req->body_len = strlen(t->body);
    req->max_response = 64 * 1024;
    http_request_add_header(req, "Content-Type: application/x-www-form-urlencoded");
    http_request_add_header(req, "Accept: application/json");
    return 0;
}

/* The token endpoint's error reply: {"error":"invalid_grant","error_description":"..."}. */
static int token_classify(void *arg, const struct http_response *resp, struct err *err)
{
    (void)arg;
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    if (resp->status >= 500 || resp->status == 429 || resp->status == 408) {
        err_set(err, ERR_TRANSIENT, "token endpoint: HTTP %ld", resp->status);
        return 1;
    }
    json_t *j = resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(j, "error"));
    const char *desc = json_string_value(json_object_get(j, "error_description"));
    err_set(err, ERR_PERMANENT,
            "Google rejected the service-account credentials (%s%s%s, HTTP %ld)",
            code ? code : "error", desc ? ": " : "", desc ? desc : "", resp->status);
    json_decref(j);
    return -1;
}

const char *gcp_token(struct gcp *g, struct err *err)
{
    if (g->token[0] && time(NULL) + GCP_TOKEN_MARGIN_S < g->token_expiry)
        return g->token;
    gcp_token_drop(g);
    struct token_ctx t = {.g = g};
    struct http_response resp;
    http_response_init(&resp);
    struct http_retry policy = {
        .max_attempts = g->max_attempts, .base_ms = g->base_ms, .cap_ms = g->cap_ms};
    const char *out = NULL;
    if (http_send_retry(g->http, token_build, token_classify, &t, &policy, &resp, err) < 0) {
        err_prefix(err, "gcp token");
        goto done;
    }
    json_t *j = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    json_int_t life = json_integer_value(json_object_get(j, "expires_in"));
    if (!tok || !tok[0] || strlen(tok) >= sizeof(g->token) || life <= 0) {
        err_set(err, ERR_TRANSIENT,
                "gcp token: the token endpoint's reply has no usable "
                "access_token and expires_in");
    } else {
        xstrlcpy(g->token, tok, sizeof(g->token));
        g->token_expiry = time(NULL) + (time_t)life;
        g->token_fetches++;
        out = g->token;
    }
    json_decref(j);
done:
    if (t.body)
        secret_wipe(t.body, strlen(t.body));
    free(t.body);
    http_response_release(&resp);
    return out;
}

void gcp_token_drop(struct gcp *g)
{
    secret_wipe(g->token, sizeof(g->token));
    g->token_expiry = 0;
}

/* ---------------------------------------------------------------- calls */

struct call_ctx {
    struct gcp *g;
    const struct gcp_request *req;
    int refreshed; /* a 401 already made us fetch a new token */
};

static int call_build(void *arg, struct http_request *hr, struct err *err)
{
    struct call_ctx *c = arg;
    const struct gcp_request *req = c->req;
    const char *tok = gcp_token(c->g, err);
    if (!tok)
        return -1;
    hr->method = req->method;
    hr->url = req->url;
    hr->body = req->body;
    hr->body_len = req->body_len;
    hr->max_response = req->max_response;
    http_request_add_header(hr, "Authorization: Bearer %s", tok);
    if (req->content_type)
        http_request_add_header(hr, "Content-Type: %s", req->content_type);
    else if (req->body)
        http_request_add_header(hr, "Content-Type: application/json");
    for (size_t i = 0; i < req->n_headers && i < XM_ARRAY_LEN(req->headers); i++)
        http_request_add_header(hr, "%s", req->headers[i]);
    return 0;
}

static const char *const retry_reasons[] = {"rateLimitExceeded", "userRateLimitExceeded",
                                            "backendError", "internalError"};

static int call_classify(void *arg, const struct http_response *resp, struct err *err)
{
    struct call_ctx *c = arg;
    const struct gcp_request *req = c->req;
    c->g->last_reason[0] = '\0';
    if ((resp->status >= 200 && resp->status < 300) || (resp->status == 404 && req->ok_404) ||
        (req->ok_status && resp->status == req->ok_status))
        return 0;
    json_t *j = resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *reason = json_string_value(
        json_object_get(json_array_get(json_object_get(e, "errors"), 0), "reason"));
    if (!reason)
        reason = json_string_value(json_object_get(e, "status"));
    xstrlcpy(c->g->last_reason, reason ? reason : "", sizeof(c->g->last_reason));
    /* Cut the URL at its query: signed or session parameters stay out of messages. */
    char where[256];
    snprintf(where, sizeof(where), "%s %.*s", req->method, (int)strcspn(req->url, "?"), req->url);
    int retry_reason = 0;
    for (size_t i = 0; reason && i < XM_ARRAY_LEN(retry_reasons); i++)
        retry_reason |= strcmp(reason, retry_reasons[i]) == 0;
    int verdict;
    if (resp->status == 401 && !c->refreshed) {
        /* The token may have been revoked or expired early: one more try with a new one. */
        gcp_token_drop(c->g);
        c->refreshed = 1;
        err_set(err, ERR_TRANSIENT, "%s: HTTP 401, token refreshed", where);
        verdict = 1;
    } else if (resp->status == 401) {
        err_set(err, ERR_PERMANENT, "Google rejected the service-account credentials (%s: %s)",
                where, msg ? msg : "HTTP 401");
        verdict = -1;
    } else if (resp->status >= 500 || resp->status == 429 || resp->status == 408 || retry_reason) {
        err_set(err, ERR_TRANSIENT, "%s: %s%s%s (HTTP %ld)", where, reason ? reason : "error",
                msg ? ": " : "", msg ? msg : "", resp->status);
        verdict = 1;
    } else {
        err_set(err, ERR_PERMANENT, "%s: %s%s%s (HTTP %ld)", where, reason ? reason : "error",
                msg ? ": " : "", msg ? msg : "", resp->status);
        verdict = -1;
    }
    json_decref(j);
    return verdict;
}

int gcp_call(struct gcp *g, const struct gcp_request *req, struct http_response *resp,
             struct err *err)
{
    struct call_ctx c = {.g = g, .req = req};
    g->last_reason[0] = '\0';
    struct http_retry policy = {.max_attempts = req->no_retry ? 1 : g->max_attempts,
                                .base_ms = g->base_ms,
                                .cap_ms = g->cap_ms,
                                .attempts_out = &g->last_attempts};
    return http_send_retry(g->http, call_build, call_classify, &c, &policy, resp, err);
}

int gcp_json(struct gcp *g, const char *method, const char *url, const json_t *body, int ok_404,
             json_t **out, struct err *err)
{
    *out = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct gcp_request req = {.method = method,
                              .url = url,
                              .body = text,
                              .body_len = text ? strlen(text) : 0,
                              .headers = {"Accept: application/json"},
                              .n_headers = 1,
                              .ok_404 = ok_404};
    struct http_response resp;
    http_response_init(&resp);
    int rc = gcp_call(g, &req, &resp, err);
    free(text);
    if (rc < 0)
        goto out;
    if (resp.status == 404 && ok_404)
        goto out;
    if (!resp.body || !resp.body_len) {
        *out = json_object();
        goto out;
    }
    json_error_t je;
    *out = json_loadb(resp.body, resp.body_len, 0, &je);
    if (!*out) {
        rc = err_set(err, ERR_TRANSIENT, "%s %.*s: the reply is not JSON (%s)", method,
                     (int)strcspn(url, "?"), url, je.text);
    }
out:
    http_response_release(&resp);
    return rc;
}
