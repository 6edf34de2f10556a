#include "gcp/signedurl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcp/gcp.h"
#include "gcp/jwt.h"
#include "secret.h"
#include "xmalloc.h"

struct pair {
    char *name;
    char *value;
};

static int pair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* A header value as Google canonicalises it: trimmed, runs of blanks made one space. */
static char *header_value(const char *v)
{
    char *out = xmalloc(strlen(v) + 1), *o = out;
    int blank = 0;
    while (*v == ' ' || *v == '\t')
        v++;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            blank = 1;
            continue;
        }
        if (blank && o != out)
            *o++ = ' ';
        blank = 0;
        *o++ = *v;
    }
    *o = '\0';
    return out;
}

static char *lower(const char *s)
{
    char *out = xstrdup(s);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

/* Append s to the growing string *buf. */
static void append(char **buf, const char *s)
{
    char *next = xasprintf("%s%s", *buf ? *buf : "", s);
    free(*buf);
    *buf = next;
}

static void pairs_free(struct pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].value);
    }
}

char *gcs_signed_url(EVP_PKEY *key, const char *email, const struct gcs_sign_request *r,
                     struct gcs_sign_debug *debug, struct err *err)
{
    if (debug)
        memset(debug, 0, sizeof(*debug));
    if (!r->method || !r->scheme || !r->host || !r->host[0] || !r->bucket || !r->bucket[0] ||
        !email || r->n_headers > GCS_SIGNED_MAX_PAIRS || r->n_query > GCS_SIGNED_MAX_PAIRS) {
        err_set(err, ERR_PERMANENT,
                "gcs signed url: method, scheme, host, bucket and "
                "credential are required");
        return NULL;
    }
    if (r->expires < 1 || r->expires > GCS_SIGNED_EXPIRES_MAX) {
        err_set(err, ERR_PERMANENT, "gcs signed url: expiry %ld s is outside 1..%d", r->expires,
                GCS_SIGNED_EXPIRES_MAX);
        return NULL;
    }
    struct tm tm;
    gmtime_r(&r->when, &tm);
    char date[16], stamp[32];
    strftime(date, sizeof(date), "%Y%m%d", &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);

    /* Host and path by URL style. */
    char *authority =
        r->style == GCS_URL_VIRTUAL ? xasprintf("%s.%s", r->bucket, r->host) : xstrdup(r->host);
    char *obj = gcp_encode(r->object ? r->object : "", 1);
    char *path = r->style == GCS_URL_PATH ? xasprintf("/%s%s%s", r->bucket, obj[0] ? "/" : "", obj)
                                          : xasprintf("/%s", obj);
    free(obj);

    /* Headers: host (without a port) and the caller's, lowercased and sorted. */
    struct pair hdr[GCS_SIGNED_MAX_PAIRS + 1];
    size_t nh = 0;
    hdr[nh].name = xstrdup("host");
    hdr[nh++].value = xstrndup(authority, strcspn(authority, ":"));
    const char *payload = "UNSIGNED-PAYLOAD";
    for (size_t i = 0; i < r->n_headers; i++) {
        hdr[nh].name = lower(r->headers[2 * i]);
        hdr[nh].value = header_value(r->headers[2 * i + 1]);
        if (strcmp(hdr[nh].name, "x-goog-content-sha256") == 0)
            payload = r->headers[2 * i + 1];
        nh++;
    }
    qsort(hdr, nh, sizeof(hdr[0]), pair_cmp);
    char *canon_headers = NULL, *signed_headers = NULL;
    for (size_t i = 0; i < nh; i++) {
        char *line = xasprintf("%s:%s\n", hdr[i].name, hdr[i].value);
        append(&canon_headers, line);
        free(line);
        if (i)
            append(&signed_headers, ";");
        append(&signed_headers, hdr[i].name);
    }

    /* Query: the X-Goog-* parameters and the caller's, encoded, sorted. */
    struct pair q[GCS_SIGNED_MAX_PAIRS + 5];
    size_t nq = 0;
    char *credential = xasprintf("%s/%s/auto/storage/goog4_request", email, date);
    char expires[24];
    snprintf(expires, sizeof(expires), "%ld", r->expires);
    const char *fixed[] = {"X-Goog-Algorithm",     "GOOG4-RSA-SHA256",
                           "X-Goog-Credential",    credential,
                           "X-Goog-Date",          stamp,
                           "X-Goog-Expires",       expires,
                           "X-Goog-SignedHeaders", signed_headers};
    for (size_t i = 0; i < XM_ARRAY_LEN(fixed); i += 2) {
        q[nq].name = gcp_encode(fixed[i], 0);
        q[nq++].value = gcp_encode(fixed[i + 1], 0);
    }
    for (size_t i = 0; i < r->n_query; i++) {
        q[nq].name = gcp_encode(r->query[2 * i], 0);
        q[nq++].value = gcp_encode(r->query[2 * i + 1], 0);
    }
    qsort(q, nq, sizeof(q[0]), pair_cmp);
    char *query = NULL;
    for (size_t i = 0; i < nq; i++) {
        char *part = xasprintf("%s%s=%s", i ? "&" : "", q[i].name, q[i].value);
        append(&query, part);
        free(part);
    }

    char *canonical = xasprintf("%s\n%s\n%s\n%s\n%s\n%s", r->method, path, query, canon_headers,
                                signed_headers, payload);
    char hash[65];
    secret_sha256_hex(canonical, strlen(canonical), hash);
    char *to_sign =
        xasprintf("GOOG4-RSA-SHA256\n%s\n%s/auto/storage/goog4_request\n%s", stamp, date, hash);
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *url = NULL;
    if (gcp_rsa_sha256(key, to_sign, strlen(to_sign), &sig, &sig_len, err) == 0) {
        char *hex = xmalloc(2 * sig_len + 1);
        for (size_t i = 0; i < sig_len; i++)
            snprintf(hex + 2 * i, 3, "%02x", sig[i]);
        url = xasprintf("%s://%s%s?%s&X-Goog-Signature=%s", r->scheme, authority, path, query, hex);
        free(hex);
    }
    if (debug) {
        debug->canonical_request = canonical;
        debug->string_to_sign = to_sign;
    } else {
        free(canonical);
        free(to_sign);
    }
    free(sig);
    free(query);
    pairs_free(q, nq);
    free(credential);
    free(canon_headers);
    free(signed_headers);
    pairs_free(hdr, nh);
    free(path);
    free(authority);
    return url;
}
