#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "xmalloc.h"

struct http_client {
    CURL *curl;
    struct http_client_opts opts;
};

static int curl_ready;

struct http_client *http_client_new(const struct http_client_opts *opts)
{
    if (!curl_ready) {
        /* Not thread-safe in libcurl 7.88: callers create their first client before
         * starting threads (every process here does). */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = 1;
    }
    struct http_client *c = xcalloc(1, sizeof(*c));
    if (opts)
        c->opts = *opts;
    if (!c->opts.connect_timeout_ms)
        c->opts.connect_timeout_ms = 10000;
    if (!c->opts.timeout_ms)
        c->opts.timeout_ms = 300000;
    if (!c->opts.stall_s)
        c->opts.stall_s = 30;
    c->curl = curl_easy_init();
    XM_ASSERT(c->curl != NULL);
    return c;
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c);
}

void http_response_init(struct http_response *r)
{
    memset(r, 0, sizeof(*r));
    r->retry_after_ms = -1;
}

void http_response_release(struct http_response *r)
{
    free(r->body);
    for (size_t i = 0; i < r->n_headers; i++)
        free(r->headers[i]);
    http_response_init(r);
}

const char *http_response_header(const struct http_response *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++)
        if (strncasecmp(r->headers[i], name, n) == 0 && r->headers[i][n] == ':') {
            const char *v = r->headers[i] + n + 1;
            while (*v == ' ')
                v++;
            return v;
        }
    return NULL;
}

int http_request_add_header(struct http_request *req, const char *fmt, ...)
{
    if (req->n_headers >= HTTP_MAX_HEADERS)
        return -1;
    char buf[HTTP_HEADER_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    req->headers[req->n_headers++] = xstrdup(buf);
    return 0;
}

void http_request_release(struct http_request *req)
{
    for (size_t i = 0; i < req->n_headers; i++)
        free(req->headers[i]);
    req->n_headers = 0;
}

/* ---------------------------------------------------------------- transfer */

struct sink {
    struct http_response *resp;
    size_t cap;
    size_t max;
    int over;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    struct http_response *r = s->resp;
    if (r->body_len + n > s->max) {
        s->over = 1;
        return 0; /* aborts the transfer */
    }
    if (r->body_len + n + 1 > s->cap) {
        s->cap = (r->body_len + n + 1) * 2;
        if (s->cap > s->max + 1)
            s->cap = s->max + 1;
        r->body = xrealloc(r->body, s->cap);
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

/* Retry-After: delay-seconds or an HTTP date. */
static long parse_retry_after(const char *v)
{
    char *end;
    long s = strtol(v, &end, 10);
    if (end != v && (*end == '\0' || isspace((unsigned char)*end)))
        return s < 0 ? 0 : (s > 3600 ? 3600000 : s * 1000);
    time_t when = curl_getdate(v, NULL);
    if (when < 0)
        return -1;
    long d = (long)(when - time(NULL));
    return d < 0 ? 0 : (d > 3600 ? 3600000 : d * 1000);
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_response *r = arg;
    size_t n = size * nmemb;
    /* A new status line (redirect, 100-continue) starts the header list again. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        for (size_t i = 0; i < r->n_headers; i++)
            free(r->headers[i]);
        r->n_headers = 0;
        return n;
    }
    size_t len = n;
    while (len && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    const char *colon = memchr(data, ':', len);
    if (!colon || len >= HTTP_HEADER_MAX || r->n_headers >= HTTP_MAX_HEADERS)
        return n; /* ignore what we cannot keep; the body still arrives */
    char *h = xstrndup(data, len);
    for (char *p = h; *p && *p != ':'; p++)
        *p = (char)tolower((unsigned char)*p);
    r->headers[r->n_headers++] = h;
    if (strncmp(h, "retry-after:", 12) == 0) {
        const char *v = h + 12;
        while (*v == ' ')
            v++;
        r->retry_after_ms = parse_retry_after(v);
    }
    return n;
}

static int is_loopback_url(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return 0;
    p += 3;
    return strncmp(p, "127.", 4) == 0 || strncmp(p, "localhost", 9) == 0 ||
           strncmp(p, "[::1]", 5) == 0;
}

int http_send(struct http_client *c, const struct http_request *req, struct http_response *resp,
              struct err *err)
{
    CURL *h = c->curl;
    http_response_release(resp);
    curl_easy_reset(h); /* keeps the connection cache */
    struct curl_slist *headers = NULL;
    for (size_t i = 0; i < req->n_headers; i++)
        headers = curl_slist_append(headers, req->headers[i]);
    /* curl adds "Expect: 100-continue" to large bodies: a round trip for nothing. */
    headers = curl_slist_append(headers, "Expect:");
    /* And labels a body it posts as a form unless told otherwise, which makes some
     * servers parse (and swallow) it: a body is bytes unless the caller says. */
    int typed = 0;
    for (size_t i = 0; i < req->n_headers; i++)
        typed |= strncasecmp(req->headers[i], "Content-Type:", 13) == 0;
    if (!typed)
        headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    struct sink sink = {.resp = resp,
                        .max = req->max_response ? req->max_response : HTTP_DEFAULT_MAX_RESPONSE};
    char errbuf[CURL_ERROR_SIZE] = "";

    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->opts.timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)HTTP_STALL_BYTES);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->opts.stall_s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->opts.ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->opts.ca_file);
    if (c->opts.insecure_loopback && is_loopback_url(req->url)) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(req->method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (req->body || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (sink.over)
        return err_set(err, ERR_PERMANENT, "%s %s: response over %zu bytes", req->method, req->url,
                       sink.max);
    if (rc != CURLE_OK) {
        enum err_kind kind = ERR_TRANSIENT;
        if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL ||
            rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
            kind = ERR_PERMANENT;
        return err_set(err, kind, "%s %s: %s", req->method, req->url,
                       errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    return 0;
}

/* ---------------------------------------------------------------- retries */

int http_classify_default(const struct http_response *resp, struct err *err)
{
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    if (resp->status >= 500 || resp->status == 429 || resp->status == 408)
        return 1;
    return err_set(err, ERR_PERMANENT, "HTTP %ld", resp->status);
}

static long jitter(long max_ms)
{
    unsigned long r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (unsigned long)time(NULL);
    return max_ms > 0 ? (long)(r % (unsigned long)(max_ms + 1)) : 0;
}

int http_send_retry(struct http_client *c, http_build_fn build, http_classify_fn classify,
                    void *arg, const struct http_retry *policy, struct http_response *resp,
                    struct err *err)
{
    int max = policy && policy->max_attempts ? policy->max_attempts : 5;
    long base = policy && policy->base_ms ? policy->base_ms : 200;
    long cap = policy && policy->cap_ms ? policy->cap_ms : 20000;
    char last[ERR_MSG_MAX] = "";
    int attempt;
    for (attempt = 1; attempt <= max; attempt++) {
        struct http_request req;
        memset(&req, 0, sizeof(req));
        struct err e = {0};
        int verdict;
        if (build(arg, &req, &e) < 0) {
            http_request_release(&req);
            if (err)
                *err = e;
            goto done_fail;
        }
        int rc = http_send(c, &req, resp, &e);
        http_request_release(&req);
        if (rc < 0) {
            if (e.kind == ERR_PERMANENT) {
                if (err)
                    *err = e;
                goto done_fail;
            }
            verdict = 1;
        } else {
            verdict = classify ? classify(arg, resp, &e) : http_classify_default(resp, &e);
            if (verdict == 0) {
                if (policy && policy->attempts_out)
                    *policy->attempts_out = attempt;
                return 0;
            }
            if (verdict < 0) {
                if (err)
                    *err = e;
                goto done_fail;
            }
            if (!e.msg[0])
                snprintf(e.msg, sizeof(e.msg), "HTTP %ld", resp->status);
        }
        xstrlcpy(last, e.msg, sizeof(last));
        if (attempt == max)
            break;
        /* Full jitter over the exponential step; Retry-After wins when longer. */
        long step = base;
        for (int i = 1; i < attempt && step < cap; i++)
            step *= 2;
        if (step > cap)
            step = cap;
        long wait = jitter(step);
        if (rc == 0 && resp->retry_after_ms > wait)
            wait = resp->retry_after_ms > cap ? cap : resp->retry_after_ms;
        struct timespec ts = {wait / 1000, (wait % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    if (policy && policy->attempts_out)
        *policy->attempts_out = max;
    return err_set(err, ERR_TRANSIENT, "gave up after %d attempts: %s", max, last);
done_fail:
    if (policy && policy->attempts_out)
        *policy->attempts_out = attempt;
    return -1;
}
