#include "urlsrc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sbuf.h"
#include "tjson.h"
#include "xmalloc.h"

#define API_REPLY_MAX (4 * 1024 * 1024) /* 1024 URLs of up to 8 KiB fit with room */
#define SCAN_MAX 16                     /* look this many batches ahead for candidates */

/* ---------------------------------------------------------------- API calls */

int api_post(struct hclient *c, const struct api_target *t, const char *what, const char *body,
             size_t len, struct hresp *resp, struct err *err)
{
    char *url = xasprintf("%s/v1/agent/%s/%s/%s/%s", t->base, t->migration, t->host, t->disk, what);
    char *auth = xasprintf("Authorization: Bearer %s", t->token);
    const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json",
                             NULL};
    struct hreq req = {.method = "POST",
                       .url = url,
                       .headers = headers,
                       .body = body,
                       .body_len = len,
                       .send_length = 1,
                       .resp_max = API_REPLY_MAX};
    int rc = hclient_do(c, &req, resp, err);
    memset(auth, 0, strlen(auth));
    free(auth);
    free(url);
    return rc;
}

/* The API's error message ({"error": {"message": ...}}) cut to fit, or "". */
static void api_message(const struct hresp *r, char *out, size_t size)
{
    out[0] = '\0';
    struct tjson *j = tjson_parse(r->body, r->body_len, NULL);
    const char *m = tjson_str(tjson_get(tjson_get(j, "error"), "message"));
    if (m) {
        size_t n = 0;
        for (; m[n] && n + 1 < size; n++)
            out[n] = (m[n] >= 0x20 && m[n] < 0x7f) ? m[n] : '?';
        out[n] = '\0';
    }
    tjson_free(j);
}

/* ---------------------------------------------------------------- the source */

struct cached {
    unsigned long long index;
    char *url;
    long long expires;
};

struct urlsrc {
    struct urlsrc_opts o;
    pthread_mutex_t lock;
    struct hclient *http;
    struct cached *cache;
    size_t n, cap;
    char *manifest;
    long long manifest_expires;
    unsigned long calls;
    char headers[URLSRC_HEADERS_MAX][URLSRC_HEADER_MAX];
    size_t n_headers;
};

struct urlsrc *urlsrc_new(const struct urlsrc_opts *o, struct hclient_tls *tls)
{
    struct urlsrc *s = xcalloc(1, sizeof(*s));
    s->o = *o;
    if (s->o.batch < 1)
        s->o.batch = 1;
    if (s->o.batch > URLSRC_BATCH_MAX)
        s->o.batch = URLSRC_BATCH_MAX;
    pthread_mutex_init(&s->lock, NULL);
    struct hclient_opts ho = {.tls = tls};
    s->http = hclient_new(&ho);
    return s;
}

void urlsrc_free(struct urlsrc *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->cache[i].url);
    free(s->cache);
    free(s->manifest);
    hclient_free(s->http);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

unsigned long urlsrc_calls(struct urlsrc *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned long n = s->calls;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static long long now_s(void)
{
    return (long long)time(NULL);
}

/* Substitute {migration}, {host}, {disk} and {index} in the template. New string. */
static char *expand(const struct urlsrc_opts *o, unsigned long long index)
{
    struct sbuf b;
    sbuf_init(&b);
    char idx[32];
    snprintf(idx, sizeof(idx), "%llu", index);
    const struct {
        const char *name, *value;
    } vars[] = {{"{index}", idx},
                {"{disk}", o->disk ? o->disk : ""},
                {"{host}", o->host ? o->host : ""},
                {"{migration}", o->migration ? o->migration : ""}};
    for (const char *p = o->tmpl; *p;) {
        size_t i;
        for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
            size_t n = strlen(vars[i].name);
            if (strncmp(p, vars[i].name, n) == 0) {
                sbuf_adds(&b, vars[i].value);
                p += n;
                break;
            }
        }
        if (i == sizeof(vars) / sizeof(vars[0]))
            sbuf_add(&b, p++, 1);
    }
    return sbuf_steal(&b, NULL);
}

static struct cached *find(struct urlsrc *s, unsigned long long index)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->cache[i].index == index)
            return &s->cache[i];
    return NULL;
}

static void drop(struct urlsrc *s, size_t i)
{
    free(s->cache[i].url);
    s->cache[i] = s->cache[--s->n];
}

/* Forget URLs that are too old to use or for chunks no longer needed. */
static void purge(struct urlsrc *s)
{
    long long limit = now_s() + s->o.margin_s;
    for (size_t i = 0; i < s->n;) {
        if (s->cache[i].expires <= limit ||
            (s->o.wanted && !s->o.wanted(s->o.wanted_arg, s->cache[i].index)))
            drop(s, i);
        else
            i++;
    }
}

/* The reply's optional "headers" {name: value}: checked, kept for every PUT. */
static int absorb_headers(struct urlsrc *s, const struct tjson *h, struct agent_fail *f)
{
    s->n_headers = 0;
    if (!h)
        return 0;
    if (tjson_type(h) != TJSON_OBJECT || tjson_len(h) > URLSRC_HEADERS_MAX) {
        agent_fail(f, AGENT_REFUSED, "the API's URL reply has bad headers");
        return -1;
    }
    for (size_t i = 0; i < tjson_len(h); i++) {
        const char *name = tjson_key(h, i), *value = tjson_str(tjson_at(h, i));
        size_t nl = strlen(name);
        if (nl < 1 || nl > 64 ||
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") != nl ||
            !value || strlen(value) > 1024 || strpbrk(value, "\r\n")) {
            agent_fail(f, AGENT_REFUSED, "the API's URL reply has a bad header '%.32s'", name);
            return -1;
        }
        snprintf(s->headers[s->n_headers++], URLSRC_HEADER_MAX, "%s: %s", name, value);
    }
    return 0;
}

size_t urlsrc_headers(struct urlsrc *s, char lines[][URLSRC_HEADER_MAX], size_t max)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n_headers < max ? s->n_headers : max;
    for (size_t i = 0; i < n; i++)
        memcpy(lines[i], s->headers[i], URLSRC_HEADER_MAX);
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Take the reply apart into the cache; 0, or -1 with f. */
static int absorb(struct urlsrc *s, const struct hresp *r, struct agent_fail *f)
{
    int rc = -1;
    struct err err = {0};
    struct tjson *j = tjson_parse(r->body, r->body_len, &err);
    long long expires;
    const struct tjson *urls = tjson_get(j, "urls");
    const char *manifest = tjson_str(tjson_get(j, "manifest_url"));
    if (!j || tjson_type(urls) != TJSON_OBJECT || !manifest ||
        tjson_ll(tjson_get(j, "expires"), &expires) < 0) {
        agent_fail(f, AGENT_REFUSED, "the API's URL reply is not understood%s%s",
                   err.msg[0] ? ": " : "", err.msg);
        goto out;
    }
    if (strncmp(manifest, "http://", 7) != 0 && strncmp(manifest, "https://", 8) != 0) {
        agent_fail(f, AGENT_REFUSED, "the API's manifest URL is not http(s)");
        goto out;
    }
    if (absorb_headers(s, tjson_get(j, "headers"), f) < 0)
        goto out;
    free(s->manifest);
    s->manifest = xstrdup(manifest);
    s->manifest_expires = expires;
    for (size_t i = 0; i < tjson_len(urls); i++) {
        const char *k = tjson_key(urls, i);
        const char *u = tjson_str(tjson_at(urls, i));
        char *end;
        unsigned long long idx = strtoull(k, &end, 10);
        if (!*k || *end || idx >= s->o.chunks || !u || strlen(u) > HURL_MAX ||
            (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)) {
            agent_fail(f, AGENT_REFUSED, "the API's URL reply has a bad entry '%.32s'", k);
            goto out;
        }
        struct cached *c = find(s, idx);
        if (!c) {
            if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 256;
                s->cache = xrealloc(s->cache, s->cap * sizeof(*s->cache));
            }
            c = &s->cache[s->n++];
            c->index = idx;
            c->url = NULL;
        }
        free(c->url);
        c->url = xstrdup(u);
        c->expires = expires;
    }
    rc = 0;
out:
    tjson_free(j);
    return rc;
}

/* Ask the API for first (if have_first) and the next wanted chunks; under the lock. */
static int fetch(struct urlsrc *s, int have_first, unsigned long long first, struct agent_fail *f)
{
    purge(s);
    struct sbuf body;
    sbuf_init(&body);
    sbuf_adds(&body, "{\"chunks\":[");
    int n = 0;
    if (have_first) {
        sbuf_printf(&body, "%llu", first);
        n = 1;
        unsigned long long scan_end = first + 1 + (unsigned long long)s->o.batch * SCAN_MAX;
        for (unsigned long long j = first + 1; j < s->o.chunks && j < scan_end && n < s->o.batch;
             j++) {
            if (find(s, j) || (s->o.wanted && !s->o.wanted(s->o.wanted_arg, j)))
                continue;
            sbuf_printf(&body, ",%llu", j);
            n++;
        }
    }
    sbuf_adds(&body, "]}");
    int rc = -1;
    struct err last = {0};
    for (int attempt = 1;; attempt++) {
        struct hresp r;
        struct err err = {0};
        s->calls++;
        if (api_post(s->http, s->o.api, "urls", body.buf, body.len, &r, &err) < 0) {
            if (err.kind == ERR_PERMANENT) {
                agent_fail(f, AGENT_NETWORK, "API unreachable: %s", err.msg);
                goto out;
            }
            last = err;
        } else if (r.status == 200) {
            rc = absorb(s, &r, f);
            hresp_release(&r);
            goto out;
        } else if (r.status == 401) {
            hresp_release(&r);
            agent_fail(f, AGENT_REFUSED,
                       "token revoked: the API answered 401 to the URL request for disk '%s'",
                       s->o.api->disk);
            goto out;
        } else if (r.status >= 500 || r.status == 429 || r.status == 408) {
            err_set(&last, ERR_TRANSIENT, "the API answered HTTP %d", r.status);
            long ra = r.retry_after_s;
            hresp_release(&r);
            if (attempt >= s->o.retry.max_attempts)
                break;
            agent_sleep_ms(agent_backoff_ms(&s->o.retry, attempt, ra), s->o.stop);
            continue;
        } else {
            char msg[256];
            api_message(&r, msg, sizeof(msg));
            agent_fail(f, AGENT_REFUSED, "the API refused the URL request: HTTP %d%s%s", r.status,
                       msg[0] ? ": " : "", msg);
            hresp_release(&r);
            goto out;
        }
        if (attempt >= s->o.retry.max_attempts || (s->o.stop && *s->o.stop))
            break;
        agent_sleep_ms(agent_backoff_ms(&s->o.retry, attempt, -1), s->o.stop);
    }
    agent_fail(f, AGENT_NETWORK, "API gave up after %d attempts: %s", s->o.retry.max_attempts,
               last.msg);
out:
    sbuf_release(&body);
    return rc;
}

int urlsrc_get(struct urlsrc *s, unsigned long long index, char **url, long long *expires,
               struct agent_fail *f)
{
    *url = NULL;
    if (!s->o.api) {
        *url = expand(&s->o, index);
        *expires = INT64_MAX;
        return 0;
    }
    int rc = -1;
    pthread_mutex_lock(&s->lock);
    struct cached *c = find(s, index);
    if (!c || c->expires <= now_s() + s->o.margin_s) {
        if (fetch(s, 1, index, f) < 0)
            goto out;
        c = find(s, index);
        if (!c) {
            agent_fail(f, AGENT_REFUSED, "the API gave no URL for chunk %llu", index);
            goto out;
        }
        if (c->expires <= now_s() + s->o.margin_s) {
            agent_fail(f, AGENT_REFUSED,
                       "the API's URLs expire within %d s: is the source's clock wrong?",
                       s->o.margin_s);
            goto out;
        }
    }
    /* Handed out: the caller keeps it for its retries and asks again when it is old. */
    *url = c->url;
    *expires = c->expires;
    c->url = NULL;
    drop(s, (size_t)(c - s->cache));
    rc = 0;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

char *urlsrc_manifest(struct urlsrc *s, int refetch, struct agent_fail *f)
{
    if (!s->o.api)
        return xstrdup(s->o.manifest_url);
    char *url = NULL;
    pthread_mutex_lock(&s->lock);
    if (refetch || !s->manifest || s->manifest_expires <= now_s() + s->o.margin_s) {
        if (fetch(s, 0, 0, f) < 0)
            goto out;
    }
    url = xstrdup(s->manifest);
out:
    pthread_mutex_unlock(&s->lock);
    return url;
}
