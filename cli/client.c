/*
 * Calling xm-api over cloud/http.c, and reporting what went wrong the way the API said
 * it. Errors from the API have one shape (schemas/error.json): the message is shown as
 * it is, never reworded, so an operator can search for it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "secret.h"
#include "xmalloc.h"
#include "xmctl.h"

#define CALL_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_MS 5000

int xmctl_valid_segment(const char *what, const char *s)
{
    size_t n = strlen(s);
    int ok = n >= 1 && n <= 159 &&
             strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789._:-") == n;
    if (!ok)
        fprintf(stderr, "xmctl: '%s' is not a %s (1 to 159 of A-Z a-z 0-9 . _ : -)\n", s, what);
    return ok;
}

void xmctl_reply_release(struct xmctl_reply *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

int xmctl_call(struct xmctl *x, const char *method, const char *path, const json_t *body,
               struct xmctl_reply *reply, struct err *err)
{
    if (!x->http) {
        struct http_client_opts o = {.connect_timeout_ms = CONNECT_TIMEOUT_MS,
                                     .timeout_ms = CALL_TIMEOUT_MS};
        x->http = http_client_new(&o);
    }
    memset(reply, 0, sizeof(*reply));
    char *url = xasprintf("%s%s", x->api, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct http_request req = {
        .method = method, .url = url, .body = text, .body_len = text ? strlen(text) : 0};
    struct http_response resp;
    http_response_init(&resp);
    if (x->token)
        http_request_add_header(&req, "Authorization: Bearer %s", x->token);
    http_request_add_header(&req, "Accept: application/json");
    if (text)
        http_request_add_header(&req, "Content-Type: application/json");
    int rc = http_send(x->http, &req, &resp, err);
    if (rc == 0) {
        reply->status = resp.status;
        reply->body = resp.body;
        reply->len = resp.body_len;
        resp.body = NULL;
        if (reply->body)
            reply->json = json_loadb(reply->body, reply->len, 0, NULL);
    }
    http_response_release(&resp);
    for (size_t i = 0; i < req.n_headers; i++) /* one of them holds the token */
        secret_wipe(req.headers[i], strlen(req.headers[i]));
    http_request_release(&req);
    free(text);
    free(url);
    return rc;
}

/* The body exactly as it came, ending in a newline. */
static void print_body(const struct xmctl_reply *r)
{
    fwrite(r->body, 1, r->len, stdout);
    if (r->len && r->body[r->len - 1] != '\n')
        putchar('\n');
}

int xmctl_fail_reply(const struct xmctl *x, const struct xmctl_reply *r)
{
    const json_t *e = json_object_get(r->json, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg) {
        fprintf(stderr, "xmctl: %s (HTTP %ld %s)\n", msg, r->status, code ? code : "error");
    } else {
        /* Not the API's error shape (a proxy, or evhttp's own page): show its start. */
        int n = 0;
        while (r->body && n < 200 && r->body[n] && r->body[n] != '\n')
            n++;
        fprintf(stderr, "xmctl: HTTP %ld from %s%s%.*s\n", r->status, x->api, n ? ": " : "", n,
                r->body ? r->body : "");
    }
    if (x->json && r->body)
        print_body(r);
    return r->status >= 400 && r->status < 500 ? XMCTL_REFUSED : XMCTL_UNREACHABLE;
}

int xmctl_fail_transport(const struct xmctl *x, const struct err *err)
{
    fprintf(stderr, "xmctl: cannot reach the API at %s: %s\n", x->api, err->msg);
    return XMCTL_UNREACHABLE;
}

int xmctl_request(struct xmctl *x, const char *method, const char *path, const json_t *body,
                  int print, json_t **out)
{
    struct xmctl_reply r;
    struct err err = {0};
    if (out)
        *out = NULL;
    if (xmctl_call(x, method, path, body, &r, &err) < 0)
        return xmctl_fail_transport(x, &err);
    int rc = XMCTL_OK;
    if (r.status < 200 || r.status > 299) {
        rc = xmctl_fail_reply(x, &r);
    } else {
        if (print && x->json && r.body)
            print_body(&r);
        if (out) {
            *out = r.json;
            r.json = NULL;
        }
    }
    xmctl_reply_release(&r);
    return rc;
}

int xmctl_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("usage: xmctl [--json] [--api URL] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return XMCTL_USAGE;
}
