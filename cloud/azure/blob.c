/*
 * blob.c: Azure Blob REST calls, SharedKey signing per attempt, SAS URLs (see blob.h).
 */
#include "azure/blob.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws/aws.h"
#include "aws/sigv4.h"
#include "azure/sharedkey.h"
#include "xmalloc.h"

#define BLOB_NAME_MAX 1024
#define BLOB_LIST_MAX (64u << 20) /* a page range list reply */

struct blob {
    char *endpoint;  /* no trailing slash */
    char *base_path; /* the endpoint's path ("" or "/devstoreaccount1") */
    char *account;
    struct sharedkey key;
    int https;
    struct http_client *http;
    struct http_retry policy;
    int last_attempts;
};

struct blob *blob_new(const struct blob_config *cfg, struct err *err)
{
    const char *e = cfg->endpoint;
    const char *scheme_end = e ? strstr(e, "://") : NULL;
    if (!scheme_end || (strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0)) {
        err_set(err, ERR_PERMANENT, "azure blob endpoint '%s' is not an http(s) URL", e ? e : "");
        return NULL;
    }
    if (strlen(e) > 256) {
        err_set(err, ERR_PERMANENT, "azure blob endpoint is longer than 256 bytes");
        return NULL;
    }
    if (!cfg->account || !cfg->account[0] || strlen(cfg->account) > 64) {
        err_set(err, ERR_PERMANENT, "azure storage account name is missing or too long");
        return NULL;
    }
    struct blob *b = xcalloc(1, sizeof(*b));
    if (sharedkey_init(&b->key, cfg->key_b64, err) < 0) {
        free(b);
        return NULL;
    }
    b->endpoint = xstrdup(e);
    size_t n = strlen(b->endpoint);
    while (n > 0 && b->endpoint[n - 1] == '/')
        b->endpoint[--n] = '\0';
    const char *path = strchr(scheme_end + 3, '/');
    b->base_path = xstrdup(path ? path : "");
    b->account = xstrdup(cfg->account);
    b->https = strncmp(e, "https://", 8) == 0;
    b->policy = (struct http_retry){.max_attempts = cfg->max_attempts ? cfg->max_attempts : 6,
                                    .base_ms = cfg->backoff_base_ms,
                                    .cap_ms = cfg->backoff_cap_ms,
                                    .attempts_out = &b->last_attempts};
    b->http = http_client_new(&cfg->http);
    return b;
}

void blob_free(struct blob *b)
{
    if (!b)
        return;
    sharedkey_release(&b->key);
    http_client_free(b->http);
    free(b->endpoint);
    free(b->base_path);
    free(b->account);
    free(b);
}

int blob_last_attempts(const struct blob *b)
{
    return b->last_attempts;
}

/* ---- names -------------------------------------------------------------------------- */

static int check_names(const char *container, const char *name, struct err *err)
{
    size_t cl = container ? strlen(container) : 0;
    if (cl < 3 || cl > 63 || strspn(container, "abcdefghijklmnopqrstuvwxyz0123456789-") != cl)
        return err_set(err, ERR_PERMANENT, "azure container name '%.70s' is not valid",
                       container ? container : "");
    if (!name)
        return 0;
    size_t nl = strlen(name);
    if (nl < 1 || nl > BLOB_NAME_MAX || name[0] == '/' ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-") != nl)
        return err_set(err, ERR_PERMANENT, "azure blob name '%.80s' is not valid", name);
    return 0;
}

char *blob_url(const struct blob *b, const char *container, const char *name)
{
    return xasprintf("%s/%s/%s", b->endpoint, container, name);
}

int blob_parse_url(const struct blob *b, const char *url, char *container, size_t csize, char *name,
                   size_t nsize, struct err *err)
{
    size_t el = strlen(b->endpoint);
    if (strncmp(url, b->endpoint, el) != 0 || url[el] != '/')
        return err_set(err, ERR_PERMANENT, "'%.120s' is not a blob of this storage account", url);
    const char *c = url + el + 1;
    size_t cl = strcspn(c, "/?");
    const char *n = c + cl + (c[cl] == '/');
    size_t nl = strcspn(n, "?");
    if (c[cl] != '/' || cl >= csize || nl >= nsize)
        return err_set(err, ERR_PERMANENT, "blob URL '%.120s' has no container and name", url);
    memcpy(container, c, cl);
    container[cl] = '\0';
    memcpy(name, n, nl);
    name[nl] = '\0';
    return check_names(container, name, err);
}

/* ---- one signed, retried request ---------------------------------------------------- */

struct call {
    struct blob *b;
    const char *method;
    const char *container, *name; /* name NULL: the container itself */
    const char *query;            /* raw, or NULL */
    const char *headers[8];       /* extra "Name: value" (x-ms-*, Range...) */
    size_t n_headers;
    const void *body;
    size_t body_len;
    size_t max_response;
    const int *ok; /* statuses besides 2xx that are answers, 0-terminated */
    char url[BLOB_NAME_MAX + 1024];
    char path[BLOB_NAME_MAX + 512];
};

static int build(void *arg, struct http_request *hr, struct err *err)
{
    struct call *c = arg;
    (void)err;
    char date[64], length[48];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "x-ms-date: %a, %d %b %Y %H:%M:%S GMT", &tm);
    const char *lines[16];
    size_t n = 0;
    lines[n++] = date;
    lines[n++] = "x-ms-version: " BLOB_API_VERSION;
    /* curl sends Content-Length itself (0 for an empty PUT); it is signed as sent. */
    int with_body = c->body || strcmp(c->method, "PUT") == 0;
    if (with_body) {
        snprintf(length, sizeof(length), "Content-Length: %zu", c->body_len);
        lines[n++] = length;
    }
    int typed = 0;
    for (size_t i = 0; i < c->n_headers; i++) {
        lines[n++] = c->headers[i];
        typed |= strncasecmp(c->headers[i], "Content-Type:", 13) == 0;
    }
    /* cloud/http.c labels every request; what it sends is what is signed. */
    if (!typed)
        lines[n++] = "Content-Type: application/octet-stream";
    char *res = sharedkey_resource(c->b->account, c->path, c->query);
    char *sts = sharedkey_string_to_sign(c->method, lines, n, res);
    char sig[SHAREDKEY_SIG_SIZE];
    sharedkey_hmac(&c->b->key, sts, sig);
    free(sts);
    free(res);
    hr->method = c->method;
    hr->url = c->url;
    hr->body = c->body;
    hr->body_len = c->body_len;
    hr->max_response = c->max_response;
    for (size_t i = 0; i < n; i++)
        if (lines[i] != length)
            http_request_add_header(hr, "%s", lines[i]);
    http_request_add_header(hr, "Authorization: SharedKey %s:%s", c->b->account, sig);
    return 0;
}

static int classify(void *arg, const struct http_response *resp, struct err *err)
{
    struct call *c = arg;
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    for (const int *o = c->ok; o && *o; o++)
        if (resp->status == *o)
            return 0;
    char *code = NULL, *msg = NULL;
    if (resp->body && resp->body_len && memchr(resp->body, '<', resp->body_len)) {
        const char *x = memchr(resp->body, '<', resp->body_len);
        size_t xl = resp->body_len - (size_t)(x - resp->body);
        code = aws_xml_text(x, xl, "Code");
        msg = aws_xml_text(x, xl, "Message");
    }
    const char *hcode = http_response_header(resp, "x-ms-error-code");
    if (!code && hcode)
        code = xstrdup(hcode);
    if (msg) /* Azure appends "\nRequestId:...\nTime:..." */
        msg[strcspn(msg, "\r\n")] = '\0';
    int verdict;
    const char *what = c->name ? c->name : c->container;
    if (resp->status == 403 && (!code || strcmp(code, "AuthenticationFailed") == 0 ||
                                strcmp(code, "AuthorizationFailure") == 0)) {
        err_set(err, ERR_PERMANENT,
                "azure storage rejected the account key of '%s' (%s, HTTP 403) on '%s'",
                c->b->account, code ? code : "no code", what);
        verdict = -1;
    } else if (resp->status >= 500 || resp->status == 429 ||
               (code &&
                (strcmp(code, "ServerBusy") == 0 || strcmp(code, "OperationTimedOut") == 0))) {
        err_set(err, ERR_TRANSIENT, "azure storage %s '%s': %s%s%s (HTTP %ld)", c->method, what,
                code ? code : "error", msg ? ": " : "", msg ? msg : "", resp->status);
        verdict = 1;
    } else {
        err_set(err, ERR_PERMANENT, "azure storage %s '%s': %s%s%s (HTTP %ld)", c->method, what,
                code ? code : "error", msg ? ": " : "", msg ? msg : "", resp->status);
        verdict = -1;
    }
    free(code);
    free(msg);
    return verdict;
}

static int call(struct call *c, struct http_response *resp, struct err *err)
{
    http_response_init(resp); /* released by the caller whatever happens */
    if (check_names(c->container, c->name, err) < 0)
        return -1;
    snprintf(c->path, sizeof(c->path), "%s/%s%s%s", c->b->base_path, c->container,
             c->name ? "/" : "", c->name ? c->name : "");
    snprintf(c->url, sizeof(c->url), "%s/%s%s%s%s%s", c->b->endpoint, c->container,
             c->name ? "/" : "", c->name ? c->name : "", c->query ? "?" : "",
             c->query ? c->query : "");
    return http_send_retry(c->b->http, build, classify, c, &c->b->policy, resp, err);
}

/* A call whose reply body does not matter. */
static int call_simple(struct call *c, struct err *err)
{
    struct http_response resp;
    int rc = call(c, &resp, err);
    http_response_release(&resp);
    return rc;
}

/* ---- containers and block blobs ----------------------------------------------------- */

int blob_container_ensure(struct blob *b, const char *container, struct err *err)
{
    static const int ok[] = {409, 0}; /* ContainerAlreadyExists */
    struct call c = {
        .b = b, .method = "PUT", .container = container, .query = "restype=container", .ok = ok};
    struct http_response resp;
    int rc = call(&c, &resp, err);
    if (rc == 0 && resp.status == 409) {
        const char *code = http_response_header(&resp, "x-ms-error-code");
        if (code && strcmp(code, "ContainerAlreadyExists") != 0)
            rc =
                err_set(err, ERR_TRANSIENT, "azure container '%s': %s (HTTP 409)", container, code);
    }
    http_response_release(&resp);
    return rc;
}

int blob_put_block(struct blob *b, const char *container, const char *name, const char *id,
                   const void *body, size_t len, struct err *err)
{
    char enc[96], q[256];
    size_t il = strlen(id);
    if (il == 0 || il > 48)
        return err_set(err, ERR_PERMANENT, "azure block id of %zu bytes (1..48)", il);
    EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)id, (int)il);
    char *qe = aws_form_encode(enc);
    snprintf(q, sizeof(q), "comp=block&blockid=%s", qe);
    free(qe);
    struct call c = {.b = b,
                     .method = "PUT",
                     .container = container,
                     .name = name,
                     .query = q,
                     .body = body,
                     .body_len = len};
    return call_simple(&c, err);
}

int blob_put_block_list(struct blob *b, const char *container, const char *name,
                        const char *const *ids, size_t n, struct err *err)
{
    size_t cap = 128 + n * 100, len = 0;
    char *xml = xmalloc(cap);
    len += (size_t)snprintf(xml, cap, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for (size_t i = 0; i < n; i++) {
        char enc[96];
        size_t il = strlen(ids[i]);
        if (il == 0 || il > 48) {
            free(xml);
            return err_set(err, ERR_PERMANENT, "azure block id of %zu bytes (1..48)", il);
        }
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)ids[i], (int)il);
        len += (size_t)snprintf(xml + len, cap - len, "<Latest>%s</Latest>", enc);
    }
    len += (size_t)snprintf(xml + len, cap - len, "</BlockList>");
    struct call c = {.b = b,
                     .method = "PUT",
                     .container = container,
                     .name = name,
                     .query = "comp=blocklist",
                     .headers = {"Content-Type: application/xml"},
                     .n_headers = 1,
                     .body = xml,
                     .body_len = len};
    int rc = call_simple(&c, err);
    free(xml);
    return rc;
}

int blob_put(struct blob *b, const char *container, const char *name, const void *body, size_t len,
             struct err *err)
{
    if (len <= BLOB_PUT_MAX) {
        struct call c = {.b = b,
                         .method = "PUT",
                         .container = container,
                         .name = name,
                         .headers = {"x-ms-blob-type: BlockBlob"},
                         .n_headers = 1,
                         .body = body,
                         .body_len = len};
        return call_simple(&c, err);
    }
    size_t nb = (len + BLOB_BLOCK_SIZE - 1) / BLOB_BLOCK_SIZE;
    char **ids = xcalloc(nb, sizeof(*ids));
    int rc = 0;
    for (size_t i = 0; i < nb && rc == 0; i++) {
        ids[i] = xasprintf("xm%08zu", i);
        size_t off = i * BLOB_BLOCK_SIZE,
               n = len - off < BLOB_BLOCK_SIZE ? len - off : BLOB_BLOCK_SIZE;
        rc = blob_put_block(b, container, name, ids[i], (const char *)body + off, n, err);
    }
    if (rc == 0)
        rc = blob_put_block_list(b, container, name, (const char *const *)ids, nb, err);
    for (size_t i = 0; i < nb; i++)
        free(ids[i]);
    free(ids);
    return rc;
}

int blob_get(struct blob *b, const char *container, const char *name, uint64_t off, uint64_t len,
             size_t max, char **data, size_t *got, struct err *err)
{
    char range[96];
    struct call c = {.b = b,
                     .method = "GET",
                     .container = container,
                     .name = name,
                     .max_response = len ? (size_t)len : max};
    if (len) {
        snprintf(range, sizeof(range), "x-ms-range: bytes=%" PRIu64 "-%" PRIu64, off,
                 off + len - 1);
        c.headers[c.n_headers++] = range;
    }
    struct http_response resp;
    *data = NULL;
    *got = 0;
    if (call(&c, &resp, err) < 0) {
        http_response_release(&resp);
        return -1;
    }
    *got = resp.body_len;
    *data = resp.body ? resp.body : xstrdup("");
    resp.body = NULL;
    http_response_release(&resp);
    return 0;
}

int blob_head(struct blob *b, const char *container, const char *name, struct blob_props *props,
              int *found, struct err *err)
{
    static const int ok[] = {404, 0};
    struct call c = {.b = b, .method = "HEAD", .container = container, .name = name, .ok = ok};
    struct http_response resp;
    memset(props, 0, sizeof(*props));
    *found = 0;
    int rc = call(&c, &resp, err);
    if (rc == 0 && resp.status != 404) {
        const char *l = http_response_header(&resp, "content-length");
        const char *t = http_response_header(&resp, "x-ms-blob-type");
        char *end = NULL;
        props->length = l ? strtoull(l, &end, 10) : 0;
        xstrlcpy(props->type, t ? t : "", sizeof(props->type));
        *found = 1;
        if (!l || *end)
            rc = err_set(err, ERR_PERMANENT, "azure blob '%s': no length in its properties", name);
    }
    http_response_release(&resp);
    return rc;
}

int blob_delete(struct blob *b, const char *container, const char *name, struct err *err)
{
    static const int ok[] = {404, 0};
    struct call c = {.b = b, .method = "DELETE", .container = container, .name = name, .ok = ok};
    return call_simple(&c, err);
}

int blob_list(struct blob *b, const char *container, const char *prefix, char ***names, size_t *n,
              struct err *err)
{
    static const int ok[] = {404, 0}; /* ContainerNotFound: nothing stored yet */
    *names = NULL;
    *n = 0;
    /* Prefixes are blob names' leading part: the same characters, none needing escapes. */
    if (prefix[0] && check_names(container, prefix, err) < 0)
        return -1;
    char *marker = NULL;
    int rc = 0;
    do {
        char *query = xasprintf("comp=list&prefix=%s&restype=container%s%s", prefix,
                                marker ? "&marker=" : "", marker ? marker : "");
        struct call c = {.b = b,
                         .method = "GET",
                         .container = container,
                         .query = query,
                         .max_response = BLOB_LIST_MAX,
                         .ok = ok};
        struct http_response resp;
        rc = call(&c, &resp, err);
        free(query);
        free(marker);
        marker = NULL;
        if (rc == 0 && resp.status == 200 && resp.body_len) {
            size_t k = 0;
            char **page = aws_xml_all(resp.body, resp.body_len, "Name", &k);
            *names = xrealloc(*names, (*n + k + 1) * sizeof(**names));
            for (size_t i = 0; i < k; i++) {
                /* Every name must start with the prefix asked for: anything else is a reply
                 * we do not understand. */
                if (!page[i][0] || strncmp(page[i], prefix, strlen(prefix)) != 0) {
                    rc = err_set(err, ERR_PERMANENT,
                                 "azure storage: List Blobs of '%s' answered a name outside "
                                 "'%s'",
                                 container, prefix);
                    free(page[i]);
                    continue;
                }
                (*names)[(*n)++] = page[i];
            }
            free(page);
            /* The continuation, opaque: sent back percent-encoded (SharedKey signs it
             * decoded). An empty one ends the listing. */
            char *next = aws_xml_text(resp.body, resp.body_len, "NextMarker");
            if (next && next[0] && strlen(next) <= BLOB_NAME_MAX)
                marker = sigv4_uri_encode(next, 0);
            else if (next && next[0])
                rc = err_set(err, ERR_PERMANENT,
                             "azure storage: List Blobs of '%s' answered a marker of %zu bytes",
                             container, strlen(next));
            free(next);
        }
        http_response_release(&resp);
    } while (rc == 0 && marker);
    free(marker);
    if (rc < 0) {
        aws_strv_free(*names, *n);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

/* ---- page blobs --------------------------------------------------------------------- */

int blob_page_create(struct blob *b, const char *container, const char *name, uint64_t size,
                     struct err *err)
{
    if (size == 0 || size % BLOB_PAGE)
        return err_set(err, ERR_PERMANENT,
                       "page blob '%s': size %" PRIu64 " is not a positive multiple of 512", name,
                       size);
    char length[64];
    snprintf(length, sizeof(length), "x-ms-blob-content-length: %" PRIu64, size);
    struct call c = {.b = b,
                     .method = "PUT",
                     .container = container,
                     .name = name,
                     .headers = {"x-ms-blob-type: PageBlob", length},
                     .n_headers = 2};
    return call_simple(&c, err);
}

int blob_put_page(struct blob *b, const char *container, const char *name, uint64_t off,
                  const void *buf, size_t len, struct err *err)
{
    if (off % BLOB_PAGE || len % BLOB_PAGE || len == 0 || len > BLOB_PAGE_WRITE_MAX)
        return err_set(err, ERR_PERMANENT,
                       "page blob '%s': write of %zu bytes at %" PRIu64
                       " is not 512-aligned or over 4 MiB",
                       name, len, off);
    char range[96];
    snprintf(range, sizeof(range), "x-ms-range: bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    struct call c = {.b = b,
                     .method = "PUT",
                     .container = container,
                     .name = name,
                     .query = "comp=page",
                     .headers = {"x-ms-page-write: update", range},
                     .n_headers = 2,
                     .body = buf,
                     .body_len = len};
    return call_simple(&c, err);
}

int blob_page_ranges(struct blob *b, const char *container, const char *name,
                     struct blob_range **ranges, size_t *n, struct err *err)
{
    struct call c = {.b = b,
                     .method = "GET",
                     .container = container,
                     .name = name,
                     .query = "comp=pagelist",
                     .max_response = BLOB_LIST_MAX};
    struct http_response resp;
    *ranges = NULL;
    *n = 0;
    int rc = call(&c, &resp, err);
    if (rc == 0 && resp.body_len) {
        size_t ns = 0, ne = 0;
        char **s = aws_xml_all(resp.body, resp.body_len, "Start", &ns);
        char **e = aws_xml_all(resp.body, resp.body_len, "End", &ne);
        if (ns != ne) {
            rc = err_set(err, ERR_PERMANENT, "page blob '%s': page range list is malformed", name);
        } else if (ns) {
            *ranges = xcalloc(ns, sizeof(**ranges));
            for (size_t i = 0; i < ns; i++) {
                (*ranges)[i].start = strtoull(s[i], NULL, 10);
                (*ranges)[i].end = strtoull(e[i], NULL, 10);
            }
            *n = ns;
        }
        aws_strv_free(s, ns);
        aws_strv_free(e, ne);
    }
    http_response_release(&resp);
    return rc;
}

/* ---- SAS ---------------------------------------------------------------------------- */

char *blob_sas_url(const struct blob *b, const char *container, const char *name, const char *perms,
                   long expires, struct err *err)
{
    if (check_names(container, name, err) < 0)
        return NULL;
    if (expires <= 0 || expires > 7L * 24 * 3600) {
        err_set(err, ERR_PERMANENT, "SAS lifetime %ld s is out of 1..604800", expires);
        return NULL;
    }
    char se[32];
    time_t end = time(NULL) + expires;
    struct tm tm;
    gmtime_r(&end, &tm);
    strftime(se, sizeof(se), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char *resource = xasprintf("/blob/%s/%s/%s", b->account, container, name);
    struct sharedkey_sas sas = {.sp = perms,
                                .se = se,
                                .resource = resource,
                                .spr = b->https ? "https" : NULL,
                                .sv = BLOB_API_VERSION,
                                .sr = "b"};
    char *q = sharedkey_sas_query(&b->key, &sas);
    char *url = xasprintf("%s/%s/%s?%s", b->endpoint, container, name, q);
    free(q);
    free(resource);
    return url;
}
