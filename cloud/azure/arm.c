/*
 * arm.c: Resource Manager requests and long-running operations (see arm.h).
 */
#include "azure/arm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "azure/token.h"
#include "xmalloc.h"

#define ARM_URL_MAX 4096
#define ARM_REPLY_MAX (8 * 1024 * 1024)

struct arm {
    char *endpoint; /* no trailing slash */
    char *subscription;
    struct http_client *http;
    struct token *token;
    struct http_retry policy;
    long poll_ms, lro_timeout_s;
    struct arm_stats stats;
};

struct arm *arm_new(const struct arm_config *cfg, struct err *err)
{
    size_t sl = cfg->subscription_id ? strlen(cfg->subscription_id) : 0;
    if (sl < 1 || sl > 64 || strspn(cfg->subscription_id, "0123456789abcdefABCDEF-") != sl) {
        err_set(err, ERR_PERMANENT, "azure credential: subscription_id is not a uuid");
        return NULL;
    }
    const char *e =
        cfg->endpoint && cfg->endpoint[0] ? cfg->endpoint : "https://management.azure.com";
    if (strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0) {
        err_set(err, ERR_PERMANENT, "azure resource manager endpoint '%s' is not http(s)", e);
        return NULL;
    }
    struct arm *a = xcalloc(1, sizeof(*a));
    a->http = http_client_new(&cfg->http);
    struct token_config tc = {.login_endpoint = cfg->login_endpoint,
                              .tenant_id = cfg->tenant_id,
                              .client_id = cfg->client_id,
                              .client_secret = cfg->client_secret,
                              .scope = "https://management.azure.com/.default",
                              .http = a->http,
                              .max_attempts = cfg->max_attempts,
                              .backoff_base_ms = cfg->backoff_base_ms};
    a->token = token_new(&tc, err);
    if (!a->token) {
        http_client_free(a->http);
        free(a);
        return NULL;
    }
    a->endpoint = xstrdup(e);
    size_t n = strlen(a->endpoint);
    while (n > 0 && a->endpoint[n - 1] == '/')
        a->endpoint[--n] = '\0';
    a->subscription = xstrdup(cfg->subscription_id);
    a->policy = (struct http_retry){.max_attempts = cfg->max_attempts ? cfg->max_attempts : 6,
                                    .base_ms = cfg->backoff_base_ms};
    a->poll_ms = cfg->poll_interval_ms > 0 ? cfg->poll_interval_ms : 5000;
    a->lro_timeout_s = cfg->lro_timeout_s > 0 ? cfg->lro_timeout_s : 3600;
    return a;
}

void arm_free(struct arm *a)
{
    if (!a)
        return;
    token_free(a->token);
    http_client_free(a->http);
    free(a->endpoint);
    free(a->subscription);
    free(a);
}

const char *arm_subscription(const struct arm *a)
{
    return a->subscription;
}

void arm_stats(const struct arm *a, struct arm_stats *out)
{
    *out = a->stats;
    out->token_fetches = token_fetches(a->token);
}

char *arm_rg_path(const struct arm *a, const char *rg, const char *suffix_fmt, ...)
{
    va_list ap;
    va_start(ap, suffix_fmt);
    char suffix[1024];
    vsnprintf(suffix, sizeof(suffix), suffix_fmt, ap);
    va_end(ap);
    return xasprintf("/subscriptions/%s/resourceGroups/%s%s", a->subscription, rg, suffix);
}

/* ---- one request -------------------------------------------------------------------- */

struct call {
    struct arm *a;
    const char *method;
    char url[ARM_URL_MAX];
    const char *body;
    int ok_404;
    int unauthorized; /* 401s seen: the first one refreshes the token */
};

/* "code: message" of an ARM error body ({"error": {...}}, or the bare error object of an
 * operation status). */
static void error_text(const json_t *e, char *buf, size_t size)
{
    const json_t *inner = json_object_get(e, "error");
    if (inner)
        e = inner;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    snprintf(buf, size, "%s%s%.300s", code ? code : "no error code", msg ? ": " : "",
             msg ? msg : "");
}

static int build(void *arg, struct http_request *req, struct err *err)
{
    struct call *c = arg;
    const char *tok = token_get(c->a->token, err);
    if (!tok)
        return -1;
    req->method = c->method;
    req->url = c->url;
    req->body = c->body;
    req->body_len = c->body ? strlen(c->body) : 0;
    req->max_response = ARM_REPLY_MAX;
    if (http_request_add_header(req, "Authorization: Bearer %s", tok) < 0)
        return err_set(err, ERR_PERMANENT, "arm: too many headers");
    http_request_add_header(req, "Content-Type: application/json");
    http_request_add_header(req, "Accept: application/json");
    c->a->stats.requests++;
    return 0;
}

static int classify(void *arg, const struct http_response *resp, struct err *err)
{
    struct call *c = arg;
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    if (resp->status == 404 && c->ok_404)
        return 0;
    json_t *j = resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    char text[400];
    error_text(j, text, sizeof(text));
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    int verdict;
    /* The path names the resource; the query holds only api-version. */
    const char *path = strstr(c->url, "/subscriptions/");
    int pl = path ? (int)strcspn(path, "?") : 0;
    if (resp->status == 401 && !c->unauthorized++) {
        token_invalidate(c->a->token);
        err_set(err, ERR_TRANSIENT, "azure resource manager refused the token (HTTP 401)");
        verdict = 1;
    } else if (resp->status == 401) {
        err_set(err, ERR_PERMANENT, "azure resource manager rejected the credentials (%s)", text);
        verdict = -1;
    } else if (resp->status == 429 || resp->status >= 500 ||
               (code && (strcmp(code, "AnotherOperationInProgress") == 0 ||
                         strcmp(code, "RetryableError") == 0))) {
        if (resp->status == 429)
            c->a->stats.throttled++;
        err_set(err, ERR_TRANSIENT, "arm %s %.*s: %s (HTTP %ld)", c->method, pl, path ? path : "",
                text, resp->status);
        verdict = 1;
    } else {
        err_set(err, ERR_PERMANENT, "arm %s %.*s: %s (HTTP %ld)", c->method, pl, path ? path : "",
                text, resp->status);
        verdict = -1;
    }
    json_decref(j);
    return verdict;
}

/* Send method to path (relative: gets the endpoint and api-version) or to an absolute poll
 * URL on the endpoint's origin. */
static int send(struct arm *a, const char *method, const char *path, const char *api_version,
                const json_t *body, int ok_404, struct http_response *resp, struct err *err)
{
    struct call c = {.a = a, .method = method, .ok_404 = ok_404};
    int n;
    http_response_init(resp); /* released by the caller whatever happens */
    if (strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0) {
        size_t el = strlen(a->endpoint);
        if (strncmp(path, a->endpoint, el) != 0 || (path[el] != '/' && path[el] != '\0'))
            return err_set(err, ERR_PERMANENT,
                           "arm: operation URL is not on the resource manager endpoint");
        n = snprintf(c.url, sizeof(c.url), "%s", path);
    } else {
        n = snprintf(c.url, sizeof(c.url), "%s%s?api-version=%s", a->endpoint, path, api_version);
    }
    if (n < 0 || (size_t)n >= sizeof(c.url))
        return err_set(err, ERR_PERMANENT, "arm: URL too long");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    c.body = text;
    int rc = http_send_retry(a->http, build, classify, &c, &a->policy, resp, err);
    free(text);
    return rc;
}

static json_t *parse(const struct http_response *resp)
{
    return resp->body && resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
}

/* ---- long-running operations -------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int terminal(const char *state)
{
    return state && (strcmp(state, "Succeeded") == 0 || strcmp(state, "Failed") == 0 ||
                     strcmp(state, "Canceled") == 0);
}

/*
 * Poll an operation URL until it is done: Azure-AsyncOperation (by_status) until its
 * status is terminal, Location until it stops answering 202 (*result, may be NULL, its
 * final body). Waits Retry-After before each poll (else poll_ms).
 */
static int poll_operation(struct arm *a, const char *what, const char *url, int by_status,
                          long first_wait_ms, time_t deadline, json_t **result, struct err *err)
{
    long wait = first_wait_ms;
    for (;;) {
        a->stats.polls++;
        sleep_ms(wait >= 0 ? wait : a->poll_ms);
        struct http_response resp;
        int rc = send(a, "GET", url, NULL, NULL, 0, &resp, err);
        json_t *j = rc == 0 ? parse(&resp) : NULL;
        const char *status = json_string_value(json_object_get(j, "status"));
        int done = rc < 0;
        wait = resp.retry_after_ms;
        if (rc < 0) {
            /* the error is in err */
        } else if (!by_status) {
            done = resp.status != 202;
            if (done && result) {
                *result = j;
                j = NULL;
            }
        } else if (status && strcmp(status, "Succeeded") == 0) {
            done = 1;
        } else if (terminal(status) || !status) {
            char text[400];
            error_text(json_object_get(j, "error"), text, sizeof(text));
            rc = err_set(err, ERR_PERMANENT, "arm: operation on %s ended %s: %s", what,
                         status ? status : "without a status", text);
            done = 1;
        }
        json_decref(j);
        http_response_release(&resp);
        if (done)
            return rc;
        if (time(NULL) > deadline)
            return err_set(err, ERR_TRANSIENT, "arm: operation on %s not done after %ld s", what,
                           a->lro_timeout_s);
    }
}

/* Poll a PUT resource by GET until its provisioningState is terminal. */
static int poll_state(struct arm *a, const char *path, const char *api_version, json_t **res,
                      time_t deadline, struct err *err)
{
    for (;;) {
        const char *state = json_string_value(
            json_object_get(json_object_get(*res, "properties"), "provisioningState"));
        if (!state || strcmp(state, "Succeeded") == 0)
            return 0;
        if (terminal(state))
            return err_set(err, ERR_PERMANENT, "arm: %s ended %s", path, state);
        if (time(NULL) > deadline)
            return err_set(err, ERR_TRANSIENT, "arm: %s still %s after %ld s", path, state,
                           a->lro_timeout_s);
        a->stats.polls++;
        sleep_ms(a->poll_ms);
        struct http_response resp;
        int rc = send(a, "GET", path, api_version, NULL, 0, &resp, err);
        if (rc == 0) {
            json_decref(*res);
            *res = parse(&resp);
        }
        http_response_release(&resp);
        if (rc < 0)
            return -1;
    }
}

/* A request and, when it starts an operation, the operation to its end. */
static int operate(struct arm *a, const char *method, const char *path, const char *api_version,
                   const json_t *body, int ok_404, json_t **out, struct err *err)
{
    struct http_response resp;
    time_t deadline = time(NULL) + a->lro_timeout_s;
    json_t *result = NULL;
    if (out)
        *out = NULL;
    int rc = send(a, method, path, api_version, body, ok_404, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status == 404) /* ok_404: nothing to delete */
        goto out;
    const char *async = http_response_header(&resp, "azure-asyncoperation");
    const char *loc = http_response_header(&resp, "location");
    int is_put = strcmp(method, "PUT") == 0;
    if ((resp.status == 201 || resp.status == 202) && async) {
        rc = poll_operation(a, path, async, 1, resp.retry_after_ms, deadline, NULL, err);
        if (rc == 0 && strcmp(method, "POST") == 0 && loc)
            rc = poll_operation(a, path, loc, 0, 0, deadline, &result, err);
    } else if (resp.status == 202 && loc) {
        rc = poll_operation(a, path, loc, 0, resp.retry_after_ms, deadline, &result, err);
    } else {
        result = parse(&resp);
        if (is_put)
            rc = poll_state(a, path, api_version, &result, deadline, err);
    }
    if (rc == 0 && is_put && (async || loc || !result)) {
        /* The final state of what was put. */
        json_decref(result);
        result = NULL;
        http_response_release(&resp);
        rc = send(a, "GET", path, api_version, NULL, 0, &resp, err);
        if (rc == 0)
            result = parse(&resp);
    }
out:
    http_response_release(&resp);
    if (rc == 0 && out)
        *out = result;
    else
        json_decref(result);
    return rc;
}

int arm_get(struct arm *a, const char *path, const char *api_version, json_t **out, int *found,
            struct err *err)
{
    struct http_response resp;
    *out = NULL;
    *found = 0;
    int rc = send(a, "GET", path, api_version, NULL, 1, &resp, err);
    if (rc == 0 && resp.status != 404) {
        *found = 1;
        *out = parse(&resp);
        if (!*out)
            rc = err_set(err, ERR_PERMANENT, "arm: GET %s answered no JSON", path);
    }
    http_response_release(&resp);
    return rc;
}

int arm_put(struct arm *a, const char *path, const char *api_version, const json_t *body,
            json_t **out, struct err *err)
{
    return operate(a, "PUT", path, api_version, body, 0, out, err);
}

int arm_post(struct arm *a, const char *path, const char *api_version, const json_t *body,
             json_t **out, struct err *err)
{
    return operate(a, "POST", path, api_version, body, 0, out, err);
}

int arm_delete(struct arm *a, const char *path, const char *api_version, struct err *err)
{
    return operate(a, "DELETE", path, api_version, NULL, 1, NULL, err);
}
