#include "aws/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "xmalloc.h"

#define SHA256_LEN 32
#define TERMINATOR "aws4_request"

/* Like out of memory: nothing a caller can do about a broken digest or MAC. */
static _Noreturn void crypto_fail(const char *what)
{
    fprintf(stderr, "level=fatal msg=\"crypto failure\" op=%s\n", what);
    abort();
}

/* ---- growable string ---------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_adds(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void sb_addc(struct sbuf *b, char c)
{
    sb_addn(b, &c, 1);
}

/* The string built so far, now owned by the caller; b is empty again. */
static char *sb_steal(struct sbuf *b)
{
    char *p = b->p ? b->p : xstrdup("");
    memset(b, 0, sizeof(*b));
    return p;
}

/* Free a string that may hold a credential. */
static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void sb_release(struct sbuf *b)
{
    if (b->p)
        OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- digests ------------------------------------------------------------------------ */

static void sha256(const void *data, size_t len, unsigned char out[SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data ? data : "", len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA256_LEN)
        crypto_fail("EVP_Digest(sha256)");
}

static void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                        unsigned char out[SHA256_LEN])
{
    size_t n = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, out, SHA256_LEN,
                   &n) ||
        n != SHA256_LEN)
        crypto_fail("EVP_Q_mac(hmac-sha256)");
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static void sha256_hex(const void *data, size_t len, char out[SIGV4_HEX_SIZE])
{
    unsigned char md[SHA256_LEN];
    sha256(data, len, md);
    hex_encode(md, sizeof(md), out);
}

static int is_lower_hex64(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= 64 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

/*
 * kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, YYYYMMDD), region), service),
 * "aws4_request"), the date being the first 8 characters of amz_date.
 */
static void derive_key(const char *secret, const char *amz_date, const char *region,
                       const char *service, unsigned char key[SHA256_LEN])
{
    char first[4 + SIGV4_KEY_MAX + 1];
    size_t n = strlen(secret);
    XM_ASSERT(n <= SIGV4_KEY_MAX);
    memcpy(first, "AWS4", 4);
    memcpy(first + 4, secret, n);
    /* Two buffers, so the key and the output of one MAC never alias. */
    unsigned char k1[SHA256_LEN], k2[SHA256_LEN];
    hmac_sha256(first, 4 + n, amz_date, 8, k1);
    OPENSSL_cleanse(first, sizeof(first));
    hmac_sha256(k1, sizeof(k1), region, strlen(region), k2);
    hmac_sha256(k2, sizeof(k2), service, strlen(service), k1);
    hmac_sha256(k1, sizeof(k1), TERMINATOR, strlen(TERMINATOR), key);
    OPENSSL_cleanse(k1, sizeof(k1));
    OPENSSL_cleanse(k2, sizeof(k2));
}

static void sign_string(const unsigned char key[SHA256_LEN], const char *sts,
                        char out[SIGV4_HEX_SIZE])
{
    unsigned char mac[SHA256_LEN];
    hmac_sha256(key, SHA256_LEN, sts, strlen(sts), mac);
    hex_encode(mac, sizeof(mac), out);
}

/* ---- URI encoding ------------------------------------------------------------------- */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void encode_into(struct sbuf *b, const char *s, size_t n, int keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            sb_addc(b, (char)c);
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
            sb_addn(b, esc, 3);
        }
    }
}

char *sigv4_uri_encode(const char *s, int keep_slash)
{
    struct sbuf b = {0};
    encode_into(&b, s, strlen(s), keep_slash);
    return sb_steal(&b);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode n bytes of s into b; -1 on a '%' not followed by two hex digits. */
static int decode_into(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            sb_addc(b, s[i]);
            continue;
        }
        if (i + 2 >= n)
            return -1;
        int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        sb_addc(b, (char)(hi << 4 | lo));
        i += 2;
    }
    return 0;
}

/* ---- input checks ------------------------------------------------------------------- */

static int is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * s must be 1..max bytes. Only the name of the input is ever quoted, never its content:
 * some inputs are secrets.
 */
static int check_len(const char *what, const char *s, size_t max, struct err *err)
{
    if (!s || !*s)
        return err_set(err, ERR_PERMANENT, "sigv4: %s is empty", what);
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return err_set(err, ERR_PERMANENT, "sigv4: %s is longer than %zu bytes", what, max);
    return 0;
}

static int check_printable(const char *what, const char *s, struct err *err)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return err_set(err, ERR_PERMANENT,
                           "sigv4: %s has a character outside printable ascii at byte %zu", what,
                           (size_t)(p - (const unsigned char *)s));
    return 0;
}

static int check_scope_name(const char *what, const char *s, struct err *err)
{
    if (check_len(what, s, SIGV4_NAME_MAX, err))
        return -1;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return err_set(err, ERR_PERMANENT, "sigv4: %s '%s' is not [a-z0-9-]", what, s);
    return 0;
}

static int check_creds(const struct sigv4_creds *creds, struct err *err)
{
    if (!creds)
        return err_set(err, ERR_PERMANENT, "sigv4: no credentials");
    if (check_len("access key id", creds->access_key, SIGV4_KEY_MAX, err))
        return -1;
    for (const char *p = creds->access_key; *p; p++)
        if (!(is_unreserved((unsigned char)*p) && *p != '~'))
            return err_set(err, ERR_PERMANENT, "sigv4: access key id is not [A-Za-z0-9._-]");
    if (check_len("secret access key", creds->secret_key, SIGV4_KEY_MAX, err) ||
        check_printable("secret access key", creds->secret_key, err))
        return -1;
    if (creds->session_token && *creds->session_token &&
        (check_len("session token", creds->session_token, SIGV4_TOKEN_MAX, err) ||
         check_printable("session token", creds->session_token, err)))
        return -1;
    return 0;
}

static int has_token(const struct sigv4_creds *creds)
{
    return creds->session_token && *creds->session_token;
}

/* Region, service and time; fills amz_date and scope. */
static int check_opts(const struct sigv4_opts *opts, char amz_date[SIGV4_AMZ_DATE_SIZE],
                      char scope[SIGV4_SCOPE_SIZE], struct err *err)
{
    if (!opts)
        return err_set(err, ERR_PERMANENT, "sigv4: no options");
    if (check_scope_name("region", opts->region, err) ||
        check_scope_name("service", opts->service, err))
        return -1;
    struct tm tm;
    if (opts->when < 0 || !gmtime_r(&opts->when, &tm) || tm.tm_year + 1900 > 9999)
        return err_set(err, ERR_PERMANENT, "sigv4: signing time %lld is out of range",
                       (long long)opts->when);
    if (strftime(amz_date, SIGV4_AMZ_DATE_SIZE, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return err_set(err, ERR_PERMANENT, "sigv4: signing time %lld is out of range",
                       (long long)opts->when);
    int n = snprintf(scope, SIGV4_SCOPE_SIZE, "%.8s/%s/%s/" TERMINATOR, amz_date, opts->region,
                     opts->service);
    XM_ASSERT(n > 0 && n < SIGV4_SCOPE_SIZE);
    return 0;
}

static int check_payload_hash(const char *h, struct err *err)
{
    static const char *const literals[] = {SIGV4_UNSIGNED_PAYLOAD, SIGV4_STREAMING_PAYLOAD,
                                           SIGV4_STREAMING_PAYLOAD_TRAILER,
                                           SIGV4_STREAMING_UNSIGNED_TRAILER};
    if (!h)
        return 0;
    if (strnlen(h, 65) == 64 && is_lower_hex64(h))
        return 0;
    for (size_t i = 0; i < XM_ARRAY_LEN(literals); i++)
        if (!strcmp(h, literals[i]))
            return 0;
    return err_set(err, ERR_PERMANENT,
                   "sigv4: payload hash is neither 64 lowercase hex digits nor a known literal");
}

/* ---- headers ------------------------------------------------------------------------ */

struct hdr {
    char *name;   /* lowercase */
    char *value;  /* canonical: trimmed, white space runs as one space */
    size_t order; /* position in the input, so repeated names keep their order */
};

/* Not signed: hop-by-hop headers and those proxies and clients rewrite on the way. */
static const char *const skipped_headers[] = {
    "connection",        "expect",  "keep-alive", "proxy-connection", "te",
    "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
};

static int is_skipped(const char *lname)
{
    for (size_t i = 0; i < XM_ARRAY_LEN(skipped_headers); i++)
        if (!strcmp(lname, skipped_headers[i]))
            return 1;
    return 0;
}

/*
 * Canonical value of one header: leading and trailing white space dropped, every inner
 * run of SP, HTAB and obs-fold continuations (CRLF or LF then SP or HTAB) one space.
 * A bare CR or LF, or any other control character, is refused (header injection).
 */
static int canonical_value(const char *v, const char *what, size_t index, struct sbuf *out,
                           struct err *err)
{
    int space = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        unsigned char c = *p;
        if (c == '\r' && p[1] == '\n')
            c = *++p;
        if (c == '\n' || c == '\r') {
            if (c == '\r' || (p[1] != ' ' && p[1] != '\t'))
                return err_set(err, ERR_PERMANENT,
                               "sigv4: %s %zu has a line break that is not a continuation", what,
                               index);
            space = 1;
            continue;
        }
        if (c == ' ' || c == '\t') {
            space = 1;
            continue;
        }
        if (c < 0x20 || c == 0x7f)
            return err_set(err, ERR_PERMANENT, "sigv4: %s %zu has a control character", what,
                           index);
        if (space && out->len)
            sb_addc(out, ' ');
        space = 0;
        sb_addc(out, (char)c);
    }
    return 0;
}

/*
 * Split "Name: value" into h (new strings). what/index name the line in errors; the
 * value never appears there.
 */
static int parse_header(const char *line, const char *what, size_t index, struct hdr *h,
                        struct err *err)
{
    if (!line)
        return err_set(err, ERR_PERMANENT, "sigv4: %s %zu is NULL", what, index);
    if (strnlen(line, SIGV4_HEADER_MAX + 1) > SIGV4_HEADER_MAX)
        return err_set(err, ERR_PERMANENT, "sigv4: %s %zu is longer than %d bytes", what, index,
                       SIGV4_HEADER_MAX);
    const char *colon = strchr(line, ':');
    size_t n = colon ? (size_t)(colon - line) : 0;
    if (!colon || n == 0)
        return err_set(err, ERR_PERMANENT, "sigv4: %s %zu is not 'Name: value'", what, index);
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)line[i]))
            return err_set(err, ERR_PERMANENT, "sigv4: %s %zu has a name that is not a token", what,
                           index);
    struct sbuf v = {0};
    if (canonical_value(colon + 1, what, index, &v, err)) {
        sb_release(&v);
        return -1;
    }
    h->name = xstrndup(line, n);
    for (char *p = h->name; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    h->value = sb_steal(&v);
    h->order = index;
    return 0;
}

static int hdr_cmp(const void *a, const void *b)
{
    const struct hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void hdrs_free(struct hdr *h, size_t n)
{
    for (size_t i = 0; h && i < n; i++) {
        free(h[i].name);
        wipe_free(h[i].value);
    }
    free(h);
}

/*
 * Canonical header block ("name:v1,v2\n" per name, sorted) and signed header list of n
 * parsed headers (sorted here).
 */
static void canonical_headers(struct hdr *h, size_t n, struct sbuf *block, struct sbuf *signed_list)
{
    qsort(h, n, sizeof(*h), hdr_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && !strcmp(h[i].name, h[i - 1].name)) {
            sb_addc(block, ',');
            sb_adds(block, h[i].value);
            continue;
        }
        if (i > 0)
            sb_addc(block, '\n');
        sb_adds(block, h[i].name);
        sb_addc(block, ':');
        sb_adds(block, h[i].value);
        if (signed_list) {
            if (signed_list->len)
                sb_addc(signed_list, ';');
            sb_adds(signed_list, h[i].name);
        }
    }
    if (n)
        sb_addc(block, '\n');
}

/* ---- path --------------------------------------------------------------------------- */

/* Remove ".", ".." and empty segments of an encoded path; keeps a trailing slash. */
static void normalize_path(const char *p, struct sbuf *out)
{
    size_t n = strlen(p), top = 0;
    size_t(*seg)[2] = xmalloc((n / 2 + 1) * sizeof(*seg));
    for (size_t i = 0; i < n;) {
        while (i < n && p[i] == '/')
            i++;
        size_t start = i;
        while (i < n && p[i] != '/')
            i++;
        size_t len = i - start;
        if (len == 0 || (len == 1 && p[start] == '.'))
            continue;
        if (len == 2 && p[start] == '.' && p[start + 1] == '.') {
            if (top)
                top--;
            continue;
        }
        seg[top][0] = start;
        seg[top][1] = len;
        top++;
    }
    for (size_t i = 0; i < top; i++) {
        sb_addc(out, '/');
        sb_addn(out, p + seg[i][0], seg[i][1]);
    }
    if (top == 0 || p[n - 1] == '/')
        sb_addc(out, '/');
    free(seg);
}

/* In canonical form already: unreserved, '/', or %XX (upper case) of any other byte. */
static int is_canonical_path(const char *p)
{
    for (; *p; p++) {
        if (is_unreserved((unsigned char)*p) || *p == '/')
            continue;
        if (*p != '%')
            return 0;
        int hi = hex_value(p[1]), lo = hi < 0 ? -1 : hex_value(p[2]);
        if (lo < 0 || (p[1] >= 'a' && p[1] <= 'f') || (p[2] >= 'a' && p[2] <= 'f') ||
            is_unreserved((unsigned char)(hi << 4 | lo)))
            return 0;
        p += 2;
    }
    return 1;
}

static int canonical_path(const char *path, enum sigv4_path_mode mode, const char *service,
                          struct sbuf *out, struct err *err)
{
    if (!path || path[0] != '/')
        return err_set(err, ERR_PERMANENT, "sigv4: path does not start with '/'");
    if (strnlen(path, SIGV4_PATH_MAX + 1) > SIGV4_PATH_MAX)
        return err_set(err, ERR_PERMANENT, "sigv4: path is longer than %d bytes", SIGV4_PATH_MAX);
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return err_set(err, ERR_PERMANENT,
                           "sigv4: path has a control character, '?' or '#' at byte %zu",
                           (size_t)(p - (const unsigned char *)path));
    if (mode == SIGV4_PATH_AUTO)
        mode = strcmp(service, "s3") ? SIGV4_PATH_NORMALIZE : SIGV4_PATH_VERBATIM;
    if (mode == SIGV4_PATH_VERBATIM) {
        if (!is_canonical_path(path))
            return err_set(err, ERR_PERMANENT,
                           "sigv4: path is not uri-encoded (build it with sigv4_uri_encode)");
        sb_adds(out, path);
        return 0;
    }
    if (mode != SIGV4_PATH_NORMALIZE && mode != SIGV4_PATH_ENCODE)
        return err_set(err, ERR_PERMANENT, "sigv4: unknown path mode %d", (int)mode);
    struct sbuf enc = {0};
    encode_into(&enc, path, strlen(path), 1);
    if (mode == SIGV4_PATH_NORMALIZE)
        normalize_path(enc.p, out);
    else
        sb_adds(out, enc.p);
    sb_release(&enc);
    return 0;
}

/* ---- query -------------------------------------------------------------------------- */

struct qparam {
    char *key, *value; /* encoded */
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

static void qparams_free(struct qparam *q, size_t n)
{
    for (size_t i = 0; q && i < n; i++) {
        wipe_free(q[i].key);
        wipe_free(q[i].value);
    }
    free(q);
}

/* Decode then encode n bytes of s as one query key or value. */
static int requote(const char *s, size_t n, char **out)
{
    struct sbuf dec = {0}, enc = {0};
    if (decode_into(&dec, s, n)) {
        sb_release(&dec);
        return -1;
    }
    encode_into(&enc, dec.p ? dec.p : "", dec.len, 0);
    sb_release(&dec);
    *out = sb_steal(&enc);
    return 0;
}

static const char *const presign_params[] = {
    "X-Amz-Algorithm",      "X-Amz-Credential",    "X-Amz-Date",      "X-Amz-Expires",
    "X-Amz-Security-Token", "X-Amz-SignedHeaders", "X-Amz-Signature",
};

/*
 * Parse the caller's query into q (room for SIGV4_QUERY_PARAMS_MAX + 7). With presign,
 * a parameter the signer sets is refused.
 */
static int parse_query(const char *query, int presign, struct qparam *q, size_t *nq,
                       struct err *err)
{
    *nq = 0;
    if (!query || !*query)
        return 0;
    if (strnlen(query, SIGV4_QUERY_MAX + 1) > SIGV4_QUERY_MAX)
        return err_set(err, ERR_PERMANENT, "sigv4: query is longer than %d bytes", SIGV4_QUERY_MAX);
    /* Presigning copies the query into the URL verbatim: nothing that would break it. */
    for (const unsigned char *c = (const unsigned char *)query; *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == '#')
            return err_set(err, ERR_PERMANENT,
                           "sigv4: query has a control character or '#' at byte %zu",
                           (size_t)(c - (const unsigned char *)query));
    for (const char *p = query; *p;) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        if (end > p) {
            if (*nq == SIGV4_QUERY_PARAMS_MAX)
                return err_set(err, ERR_PERMANENT, "sigv4: query has more than %d parameters",
                               SIGV4_QUERY_PARAMS_MAX);
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *kend = eq ? eq : end;
            struct qparam *qp = &q[*nq];
            if (requote(p, (size_t)(kend - p), &qp->key))
                return err_set(err, ERR_PERMANENT,
                               "sigv4: query parameter %zu has a bad percent escape", *nq + 1);
            if (requote(eq ? eq + 1 : end, eq ? (size_t)(end - eq - 1) : 0, &qp->value)) {
                free(qp->key);
                qp->key = NULL;
                return err_set(err, ERR_PERMANENT,
                               "sigv4: query parameter %zu has a bad percent escape", *nq + 1);
            }
            (*nq)++;
            for (size_t i = 0; presign && i < XM_ARRAY_LEN(presign_params); i++)
                if (!strcasecmp(qp->key, presign_params[i]))
                    return err_set(err, ERR_PERMANENT,
                                   "sigv4: query already has '%s', which presigning sets",
                                   presign_params[i]);
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* ---- signing ------------------------------------------------------------------------ */

struct signing {
    char amz_date[SIGV4_AMZ_DATE_SIZE];
    char scope[SIGV4_SCOPE_SIZE];
    struct hdr *h;
    size_t nh;
    struct qparam *q;
    size_t nq;
};

static void add_hdr(struct signing *s, const char *name, const char *value)
{
    s->h[s->nh].name = xstrdup(name);
    s->h[s->nh].value = xstrdup(value);
    s->h[s->nh].order = SIGV4_HEADERS_MAX + s->nh;
    s->nh++;
}

static void add_param(struct signing *s, const char *key, const char *raw_value)
{
    s->q[s->nq].key = xstrdup(key);
    s->q[s->nq].value = sigv4_uri_encode(raw_value, 0);
    s->nq++;
}

static void add_result_header(struct sigv4_result *res, const char *name, char *value)
{
    XM_ASSERT(res->n_add < SIGV4_ADD_MAX);
    res->add[res->n_add].name = name;
    res->add[res->n_add].value = value;
    res->n_add++;
}

static int sign_request(const struct sigv4_creds *creds, const struct sigv4_request *req,
                        const struct sigv4_opts *opts, int presign, struct sigv4_result *res,
                        struct err *err)
{
    int rc = -1;
    struct signing s = {0};
    struct sbuf path = {0}, block = {0}, signed_list = {0}, creq = {0}, sts = {0}, out = {0};
    unsigned char key[SHA256_LEN];
    char *credential = NULL;

    memset(res, 0, sizeof(*res));
    if (!req)
        return err_set(err, ERR_PERMANENT, "sigv4: no request");
    if (check_creds(creds, err) || check_opts(opts, s.amz_date, s.scope, err) ||
        check_payload_hash(req->payload_hash, err))
        return -1;
    if (check_len("method", req->method, SIGV4_METHOD_MAX, err))
        return -1;
    for (const char *p = req->method; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return err_set(err, ERR_PERMANENT, "sigv4: method is not an http token");
    if (presign && (opts->expires < 1 || opts->expires > SIGV4_EXPIRES_MAX))
        return err_set(err, ERR_PERMANENT, "sigv4: expires %ld is not between 1 and %d seconds",
                       opts->expires, SIGV4_EXPIRES_MAX);
    if (req->n_headers > SIGV4_HEADERS_MAX)
        return err_set(err, ERR_PERMANENT, "sigv4: more than %d headers", SIGV4_HEADERS_MAX);
    if (req->n_headers && !req->headers)
        return err_set(err, ERR_PERMANENT, "sigv4: headers is NULL");
    int token = has_token(creds);
    int sign_token = token && !opts->omit_session_token;
    int content_sha = !presign && opts->content_sha256_header;
    const char *payload = req->payload_hash ? req->payload_hash : SIGV4_EMPTY_SHA256;

    /* Headers: the caller's, then the ones the signer adds and signs. */
    s.h = xcalloc(req->n_headers + SIGV4_ADD_MAX, sizeof(*s.h));
    int have_host = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        struct hdr h = {0};
        if (parse_header(req->headers[i], "header", i + 1, &h, err))
            goto out;
        const char *bad = NULL;
        if (!strcmp(h.name, "authorization") || !strcmp(h.name, "x-amz-date") ||
            (token && !strcmp(h.name, "x-amz-security-token")) ||
            (content_sha && !strcmp(h.name, "x-amz-content-sha256")))
            bad = h.name;
        if (bad) {
            err_set(err, ERR_PERMANENT, "sigv4: header %zu is '%s', which the signer sets", i + 1,
                    bad);
            free(h.name);
            wipe_free(h.value);
            goto out;
        }
        have_host |= !strcmp(h.name, "host");
        if (is_skipped(h.name)) {
            free(h.name);
            wipe_free(h.value);
            continue;
        }
        s.h[s.nh++] = h;
    }
    if (!have_host) {
        err_set(err, ERR_PERMANENT, "sigv4: request has no 'host' header");
        goto out;
    }
    if (!presign) {
        add_hdr(&s, "x-amz-date", s.amz_date);
        if (sign_token)
            add_hdr(&s, "x-amz-security-token", creds->session_token);
        if (content_sha)
            add_hdr(&s, "x-amz-content-sha256", payload);
    }
    canonical_headers(s.h, s.nh, &block, &signed_list);

    if (canonical_path(req->path, opts->path_mode, opts->service, &path, err))
        goto out;

    /* Query: the caller's, then (presign) the X-Amz-* parameters. */
    s.q = xcalloc(SIGV4_QUERY_PARAMS_MAX + XM_ARRAY_LEN(presign_params), sizeof(*s.q));
    if (parse_query(req->query, presign, s.q, &s.nq, err))
        goto out;
    credential = xasprintf("%s/%s", creds->access_key, s.scope);
    char expires[24];
    snprintf(expires, sizeof(expires), "%ld", opts->expires);
    if (presign) {
        add_param(&s, "X-Amz-Algorithm", SIGV4_ALGORITHM);
        add_param(&s, "X-Amz-Credential", credential);
        add_param(&s, "X-Amz-Date", s.amz_date);
        add_param(&s, "X-Amz-Expires", expires);
        if (sign_token)
            add_param(&s, "X-Amz-Security-Token", creds->session_token);
        add_param(&s, "X-Amz-SignedHeaders", signed_list.p);
    }
    qsort(s.q, s.nq, sizeof(*s.q), qparam_cmp);

    /* Canonical request, string to sign, signature. */
    sb_adds(&creq, req->method);
    sb_addc(&creq, '\n');
    sb_adds(&creq, path.p);
    sb_addc(&creq, '\n');
    for (size_t i = 0; i < s.nq; i++) {
        if (i)
            sb_addc(&creq, '&');
        sb_adds(&creq, s.q[i].key);
        sb_addc(&creq, '=');
        sb_adds(&creq, s.q[i].value);
    }
    sb_addc(&creq, '\n');
    sb_adds(&creq, block.p);
    sb_addc(&creq, '\n');
    sb_adds(&creq, signed_list.p);
    sb_addc(&creq, '\n');
    sb_adds(&creq, payload);

    char creq_hash[SIGV4_HEX_SIZE];
    sha256_hex(creq.p, creq.len, creq_hash);
    sb_adds(&sts, SIGV4_ALGORITHM "\n");
    sb_adds(&sts, s.amz_date);
    sb_addc(&sts, '\n');
    sb_adds(&sts, s.scope);
    sb_addc(&sts, '\n');
    sb_adds(&sts, creq_hash);

    derive_key(creds->secret_key, s.amz_date, opts->region, opts->service, key);
    sign_string(key, sts.p, res->signature);
    OPENSSL_cleanse(key, sizeof(key));
    memcpy(res->amz_date, s.amz_date, sizeof(res->amz_date));

    if (presign) {
        /* The caller's query verbatim, then ours in sorted order, the signature last. */
        if (req->query && *req->query) {
            sb_adds(&out, req->query);
            if (req->query[strlen(req->query) - 1] != '&')
                sb_addc(&out, '&');
        }
        sb_adds(&out, "X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=");
        encode_into(&out, credential, strlen(credential), 0);
        sb_adds(&out, "&X-Amz-Date=");
        sb_adds(&out, s.amz_date);
        sb_adds(&out, "&X-Amz-Expires=");
        sb_adds(&out, expires);
        if (token) {
            sb_adds(&out, "&X-Amz-Security-Token=");
            encode_into(&out, creds->session_token, strlen(creds->session_token), 0);
        }
        sb_adds(&out, "&X-Amz-SignedHeaders=");
        encode_into(&out, signed_list.p, signed_list.len, 0);
        sb_adds(&out, "&X-Amz-Signature=");
        sb_adds(&out, res->signature);
        res->query = sb_steal(&out);
    } else {
        if (token)
            add_result_header(res, "X-Amz-Security-Token", xstrdup(creds->session_token));
        add_result_header(res, "X-Amz-Date", xstrdup(s.amz_date));
        if (content_sha)
            add_result_header(res, "x-amz-content-sha256", xstrdup(payload));
        add_result_header(res, "Authorization",
                          xasprintf(SIGV4_ALGORITHM
                                    " Credential=%s, SignedHeaders=%s, Signature=%s",
                                    credential, signed_list.p, res->signature));
        res->authorization = res->add[res->n_add - 1].value;
    }
    res->canonical_request = sb_steal(&creq);
    res->string_to_sign = sb_steal(&sts);
    res->signed_headers = sb_steal(&signed_list);
    rc = 0;
out:
    hdrs_free(s.h, s.nh);
    qparams_free(s.q, s.nq);
    free(credential);
    sb_release(&path);
    sb_release(&block);
    sb_release(&signed_list);
    sb_release(&creq);
    sb_release(&sts);
    sb_release(&out);
    if (rc)
        sigv4_result_release(res);
    return rc;
}

int sigv4_sign_headers(const struct sigv4_creds *creds, const struct sigv4_request *req,
                       const struct sigv4_opts *opts, struct sigv4_result *res, struct err *err)
{
    return sign_request(creds, req, opts, 0, res, err);
}

int sigv4_presign(const struct sigv4_creds *creds, const struct sigv4_request *req,
                  const struct sigv4_opts *opts, struct sigv4_result *res, struct err *err)
{
    return sign_request(creds, req, opts, 1, res, err);
}

void sigv4_result_release(struct sigv4_result *res)
{
    if (!res)
        return;
    wipe_free(res->canonical_request);
    wipe_free(res->string_to_sign);
    wipe_free(res->signed_headers);
    wipe_free(res->query);
    for (size_t i = 0; i < res->n_add; i++)
        wipe_free(res->add[i].value);
    memset(res, 0, sizeof(*res));
}

const char *sigv4_path_mode_str(enum sigv4_path_mode mode)
{
    switch (mode) {
    case SIGV4_PATH_AUTO:
        return "auto";
    case SIGV4_PATH_NORMALIZE:
        return "normalize";
    case SIGV4_PATH_ENCODE:
        return "encode";
    case SIGV4_PATH_VERBATIM:
        return "verbatim";
    }
    return "unknown";
}

/* ---- aws-chunked streaming ---------------------------------------------------------- */

int sigv4_chunk_init(struct sigv4_chunk_signer *cs, const struct sigv4_creds *creds,
                     const struct sigv4_opts *opts, const char *seed, struct err *err)
{
    memset(cs, 0, sizeof(*cs));
    if (check_creds(creds, err) || check_opts(opts, cs->amz_date, cs->scope, err))
        return -1;
    if (!seed || strnlen(seed, 65) != 64 || !is_lower_hex64(seed))
        return err_set(err, ERR_PERMANENT, "sigv4: seed signature is not 64 lowercase hex digits");
    memcpy(cs->prev, seed, SIGV4_HEX_SIZE);
    derive_key(creds->secret_key, cs->amz_date, opts->region, opts->service, cs->key);
    return 0;
}

/* "<kind>\n<date>\n<scope>\n<previous>\n<hash lines>" signed, and chained on. */
static void chain_sign(struct sigv4_chunk_signer *cs, const char *kind, const char *hashes,
                       char sig[SIGV4_HEX_SIZE])
{
    char *sts = xasprintf("%s\n%s\n%s\n%s\n%s", kind, cs->amz_date, cs->scope, cs->prev, hashes);
    sign_string(cs->key, sts, sig);
    free(sts);
    memcpy(cs->prev, sig, SIGV4_HEX_SIZE);
}

void sigv4_chunk_sign(struct sigv4_chunk_signer *cs, const void *data, size_t len,
                      char sig[SIGV4_HEX_SIZE])
{
    XM_ASSERT(!cs->finished);
    char hashes[2 * SIGV4_HEX_SIZE];
    memcpy(hashes, SIGV4_EMPTY_SHA256 "\n", SIGV4_HEX_SIZE);
    sha256_hex(data, len, hashes + SIGV4_HEX_SIZE);
    chain_sign(cs, "AWS4-HMAC-SHA256-PAYLOAD", hashes, sig);
    cs->finished = len == 0;
}

int sigv4_trailer_sign(struct sigv4_chunk_signer *cs, const char *const *trailers,
                       size_t n_trailers, char sig[SIGV4_HEX_SIZE], struct err *err)
{
    XM_ASSERT(cs->finished);
    if (n_trailers > SIGV4_HEADERS_MAX)
        return err_set(err, ERR_PERMANENT, "sigv4: more than %d trailers", SIGV4_HEADERS_MAX);
    if (n_trailers && !trailers)
        return err_set(err, ERR_PERMANENT, "sigv4: trailers is NULL");
    int rc = -1;
    struct hdr *h = xcalloc(n_trailers + 1, sizeof(*h));
    size_t nh = 0;
    struct sbuf block = {0};
    for (; nh < n_trailers; nh++)
        if (parse_header(trailers[nh], "trailer", nh + 1, &h[nh], err))
            goto out;
    canonical_headers(h, nh, &block, NULL);
    char hash[SIGV4_HEX_SIZE];
    sha256_hex(block.p ? block.p : "", block.len, hash);
    chain_sign(cs, "AWS4-HMAC-SHA256-TRAILER", hash, sig);
    rc = 0;
out:
    hdrs_free(h, nh);
    sb_release(&block);
    return rc;
}

void sigv4_chunk_release(struct sigv4_chunk_signer *cs)
{
    if (cs)
        OPENSSL_cleanse(cs, sizeof(*cs));
}

size_t sigv4_chunk_header(char out[SIGV4_CHUNK_HEADER_SIZE], size_t len, const char *sig)
{
    int n = snprintf(out, SIGV4_CHUNK_HEADER_SIZE, "%zx;chunk-signature=%.64s\r\n", len, sig);
    XM_ASSERT(n > 0 && n < SIGV4_CHUNK_HEADER_SIZE);
    return (size_t)n;
}

static uint64_t hex_digits(uint64_t v)
{
    uint64_t n = 1;
    while (v >>= 4)
        n++;
    return n;
}

uint64_t sigv4_chunked_length(uint64_t decoded_len, uint64_t chunk_size)
{
    XM_ASSERT(chunk_size > 0);
    /* ";chunk-signature=" + 64 hex + CRLF after the size, CRLF after the data. */
    const uint64_t framing = 17 + 64 + 2 + 2;
    uint64_t full = decoded_len / chunk_size, rest = decoded_len % chunk_size;
    uint64_t total = full * (hex_digits(chunk_size) + framing + chunk_size);
    if (rest)
        total += hex_digits(rest) + framing + rest;
    return total + 1 + framing; /* the final "0;chunk-signature=...\r\n\r\n" */
}
