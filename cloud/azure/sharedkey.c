/*
 * sharedkey.c: SharedKey string to sign and service SAS (see sharedkey.h).
 */
#include "azure/sharedkey.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws/sigv4.h"
#include "secret.h"
#include "xmalloc.h"

/* A growing string, enough for signing texts. */
struct text {
    char *s;
    size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = xrealloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_adds(struct text *t, const char *s)
{
    text_add(t, s ? s : "", s ? strlen(s) : 0);
}

int sharedkey_init(struct sharedkey *k, const char *key_b64, struct err *err)
{
    memset(k, 0, sizeof(*k));
    size_t n = key_b64 ? strlen(key_b64) : 0;
    unsigned char buf[SHAREDKEY_KEY_MAX + 4];
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf))
        return err_set(err, ERR_PERMANENT, "azure storage key is not base64 of a usable length");
    int len = EVP_DecodeBlock(buf, (const unsigned char *)key_b64, (int)n);
    if (len < 0)
        return err_set(err, ERR_PERMANENT, "azure storage key is not valid base64");
    /* EVP_DecodeBlock counts the '=' padding as zero bytes. */
    for (size_t i = n; i > 0 && key_b64[i - 1] == '='; i--)
        len--;
    if (len <= 0 || (size_t)len > SHAREDKEY_KEY_MAX) {
        secret_wipe(buf, sizeof(buf));
        return err_set(err, ERR_PERMANENT, "azure storage key has a bad length");
    }
    memcpy(k->key, buf, (size_t)len);
    k->len = (size_t)len;
    secret_wipe(buf, sizeof(buf));
    return 0;
}

void sharedkey_release(struct sharedkey *k)
{
    secret_wipe(k, sizeof(*k));
}

void sharedkey_hmac(const struct sharedkey *k, const char *text, char sig[SHAREDKEY_SIG_SIZE])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    XM_ASSERT(HMAC(EVP_sha256(), k->key, (int)k->len, (const unsigned char *)text, strlen(text), md,
                   &mdlen) != NULL);
    EVP_EncodeBlock((unsigned char *)sig, md, (int)mdlen);
}

/* ---- canonicalized resource --------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode n bytes of s (a '+' stays a '+': SAS values are encoded with %2B). */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *o++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

struct qparam {
    char *name, *value;
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

char *sharedkey_resource(const char *account, const char *path, const char *query)
{
    struct text t = {0};
    text_adds(&t, "/");
    text_adds(&t, account);
    for (const char *p = path; *p; p++)
        text_add(&t, *p == ' ' ? "%20" : p, *p == ' ' ? 3 : 1);
    if (!query || !*query)
        return t.s;
    size_t n = 1;
    for (const char *p = query; *p; p++)
        n += *p == '&';
    struct qparam *q = xcalloc(n, sizeof(*q));
    size_t m = 0;
    for (const char *p = query; *p;) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (len) {
            q[m].name = pct_decode(p, klen);
            for (char *c = q[m].name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            q[m].value = eq ? pct_decode(eq + 1, len - klen - 1) : xstrdup("");
            m++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    qsort(q, m, sizeof(*q), qparam_cmp);
    for (size_t i = 0; i < m; i++) {
        if (i > 0 && strcmp(q[i].name, q[i - 1].name) == 0) {
            text_adds(&t, ",");
        } else {
            text_adds(&t, "\n");
            text_adds(&t, q[i].name);
            text_adds(&t, ":");
        }
        text_adds(&t, q[i].value);
    }
    for (size_t i = 0; i < m; i++) {
        free(q[i].name);
        free(q[i].value);
    }
    free(q);
    return t.s;
}

/* ---- SharedKey string to sign ------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *sharedkey_string_to_sign(const char *method, const char *const *headers, size_t n,
                               const char *resource)
{
    static const char *const standard[] = {"Content-Encoding",
                                           "Content-Language",
                                           "Content-Length",
                                           "Content-MD5",
                                           "Content-Type",
                                           "Date",
                                           "If-Modified-Since",
                                           "If-Match",
                                           "If-None-Match",
                                           "If-Unmodified-Since",
                                           "Range"};
    struct text t = {0};
    text_adds(&t, method);
    text_adds(&t, "\n");
    for (size_t s = 0; s < XM_ARRAY_LEN(standard); s++) {
        size_t nl = strlen(standard[s]);
        for (size_t i = 0; i < n; i++) {
            if (strncasecmp(headers[i], standard[s], nl) != 0 || headers[i][nl] != ':')
                continue;
            const char *v = headers[i] + nl + 1;
            v += strspn(v, " ");
            /* From version 2015-02-21 a zero Content-Length is signed as empty. */
            if (!(s == 2 && strcmp(v, "0") == 0))
                text_adds(&t, v);
            break;
        }
        text_adds(&t, "\n");
    }
    char **ms = xcalloc(n ? n : 1, sizeof(*ms));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(headers[i], ':');
        if (!colon || strncasecmp(headers[i], "x-ms-", 5) != 0)
            continue;
        size_t nl = (size_t)(colon - headers[i]);
        const char *v = colon + 1 + strspn(colon + 1, " ");
        size_t vl = strlen(v);
        while (vl && v[vl - 1] == ' ')
            vl--;
        ms[m] = xmalloc(nl + vl + 2);
        for (size_t c = 0; c < nl; c++)
            ms[m][c] = (char)tolower((unsigned char)headers[i][c]);
        ms[m][nl] = ':';
        memcpy(ms[m] + nl + 1, v, vl);
        ms[m][nl + 1 + vl] = '\0';
        m++;
    }
    qsort(ms, m, sizeof(*ms), cmp_str);
    for (size_t i = 0; i < m; i++) {
        text_adds(&t, ms[i]);
        text_adds(&t, "\n");
        free(ms[i]);
    }
    free(ms);
    text_adds(&t, resource);
    return t.s;
}

/* ---- service SAS -------------------------------------------------------------------- */

char *sharedkey_sas_string_to_sign(const struct sharedkey_sas *s)
{
    const char *sv = s->sv ? s->sv : "";
    /* ISO dates compare as strings. */
    int with_sr = strcmp(sv, "2018-11-09") >= 0, with_ses = strcmp(sv, "2020-12-06") >= 0;
    const char *fields[16];
    size_t n = 0;
    fields[n++] = s->sp;
    fields[n++] = s->st;
    fields[n++] = s->se;
    fields[n++] = s->resource;
    fields[n++] = s->si;
    fields[n++] = s->sip;
    fields[n++] = s->spr;
    fields[n++] = s->sv;
    if (with_sr) {
        fields[n++] = s->sr;
        fields[n++] = s->snapshot;
    }
    if (with_ses)
        fields[n++] = s->ses;
    fields[n++] = s->rscc;
    fields[n++] = s->rscd;
    fields[n++] = s->rsce;
    fields[n++] = s->rscl;
    fields[n++] = s->rsct;
    struct text t = {0};
    for (size_t i = 0; i < n; i++) {
        if (i)
            text_adds(&t, "\n");
        text_adds(&t, fields[i]);
    }
    return t.s;
}

static void query_add(struct text *t, const char *name, const char *value)
{
    if (!value || !*value)
        return;
    if (t->len)
        text_adds(t, "&");
    text_adds(t, name);
    text_adds(t, "=");
    char *enc = sigv4_uri_encode(value, 0);
    text_adds(t, enc);
    free(enc);
}

char *sharedkey_sas_query(const struct sharedkey *k, const struct sharedkey_sas *s)
{
    char *sts = sharedkey_sas_string_to_sign(s);
    char sig[SHAREDKEY_SIG_SIZE];
    sharedkey_hmac(k, sts, sig);
    free(sts);
    struct text t = {0};
    const char *names[] = {"sv",  "sr",   "sp",   "st",   "se",   "si",   "sip", "spr",
                           "ses", "rscc", "rscd", "rsce", "rscl", "rsct", "sig"};
    const char *values[] = {s->sv,  s->sr,   s->sp,   s->st,   s->se,   s->si,   s->sip, s->spr,
                            s->ses, s->rscc, s->rscd, s->rsce, s->rscl, s->rsct, sig};
    for (size_t i = 0; i < XM_ARRAY_LEN(names); i++)
        query_add(&t, names[i], values[i]);
    return t.s;
}
