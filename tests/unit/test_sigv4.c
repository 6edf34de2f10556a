/*
 * Unit tests for cloud/aws/sigv4: the official AWS SigV4 suite (aws-c-auth's v4 cases,
 * header and presigned-query variants) and the S3 API reference examples (header auth,
 * presigned GET, aws-chunked seed, chunk and trailer signatures), both read from the
 * shared testdata at run time so a case added there is tested too; then our own cases
 * (expiry bounds, caps, refused input, secrets never in errors, path modes).
 *
 * Usage: test_sigv4 TESTDATA_DIR (the shared/testdata folder; or XM_TESTDATA_DIR).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "aws/sigv4.h"
#include "secret.h"
#include "xmalloc.h"

static const char *testdata_dir;

/* ---- helpers ------------------------------------------------------------------------ */

/* Whole file as a new NUL-terminated string (*len bytes), or NULL if it cannot be read. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static char *slurp_in(const char *dir, const char *name)
{
    char *path = xasprintf("%s/%s", dir, name);
    char *s = slurp(path, NULL);
    if (!s)
        fail_msg("cannot read '%s'", path);
    free(path);
    return s;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/*
 * Compare two texts; on a difference print the case, what, and the first differing line
 * of each, and return 1.
 */
static int differs(const char *name, const char *what, const char *want, const char *got)
{
    if (!strcmp(want, got))
        return 0;
    int line = 1;
    const char *w = want, *g = got;
    for (;;) {
        size_t wl = strcspn(w, "\n"), gl = strcspn(g, "\n");
        if (wl != gl || memcmp(w, g, wl) || !w[wl] || !g[gl]) {
            print_error("case '%s': %s differs at line %d\n  want: %.*s%s\n  got:  %.*s%s\n", name,
                        what, line, (int)wl, w, w[wl] ? "" : " (last line)", (int)gl, g,
                        g[gl] ? "" : " (last line)");
            return 1;
        }
        w += wl + 1;
        g += gl + 1;
        line++;
    }
}

static time_t parse_time(const char *iso)
{
    struct tm tm = {0};
    int n = sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec);
    if (n != 6)
        n = sscanf(iso, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec);
    if (n != 6)
        fail_msg("bad timestamp '%s'", iso);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

/* Split s at sep into a new array of new strings (empty pieces kept). */
static char **split(const char *s, char sep, size_t *n)
{
    size_t cap = 8;
    char **v = xmalloc(cap * sizeof(*v));
    *n = 0;
    for (;;) {
        const char *e = strchr(s, sep);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (*n == cap)
            v = xrealloc(v, (cap *= 2) * sizeof(*v));
        v[(*n)++] = xstrndup(s, len);
        if (!e)
            break;
        s = e + 1;
    }
    return v;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- raw HTTP requests (request.txt) ------------------------------------------------ */

struct http_req {
    char *method, *path, *query; /* query NULL when the target has no '?' */
    char **headers;              /* "Name:value", continuation lines joined with "\n" */
    size_t n_headers;
    char *head; /* request line and header lines verbatim, each ending in "\n" */
    char *body;
    size_t body_len;
};

static void http_req_release(struct http_req *r)
{
    free(r->method);
    free(r->path);
    free(r->query);
    free_strv(r->headers, r->n_headers);
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Request line, headers (obs-fold continuations kept), blank line, body. */
static void parse_http(const char *text, size_t len, struct http_req *r)
{
    memset(r, 0, sizeof(*r));
    r->headers = xmalloc(SIGV4_HEADERS_MAX * 2 * sizeof(*r->headers));
    size_t pos = 0, head_end = 0;
    int first = 1;
    while (pos < len) {
        size_t eol = pos;
        while (eol < len && text[eol] != '\n')
            eol++;
        size_t l = eol - pos;
        if (l && text[pos + l - 1] == '\r')
            l--;
        size_t next = eol < len ? eol + 1 : eol;
        if (l == 0) {
            head_end = pos;
            pos = next;
            break;
        }
        if (first) {
            const char *sp1 = memchr(text + pos, ' ', l);
            const char *sp2 = text + pos + l;
            while (sp2 > sp1 && sp2[-1] != ' ')
                sp2--;
            assert_non_null(sp1);
            assert_true(sp2 - 1 > sp1);
            r->method = xstrndup(text + pos, (size_t)(sp1 - text - pos));
            char *target = xstrndup(sp1 + 1, (size_t)(sp2 - 1 - sp1 - 1));
            char *q = strchr(target, '?');
            if (q) {
                r->query = xstrdup(q + 1);
                *q = '\0';
            }
            r->path = target;
            first = 0;
        } else if (text[pos] == ' ' || text[pos] == '\t') {
            assert_true(r->n_headers > 0);
            char *prev = r->headers[r->n_headers - 1];
            r->headers[r->n_headers - 1] = xasprintf("%s\n%.*s", prev, (int)l, text + pos);
            free(prev);
        } else {
            assert_true(r->n_headers < SIGV4_HEADERS_MAX * 2);
            r->headers[r->n_headers++] = xstrndup(text + pos, l);
        }
        pos = next;
        head_end = pos;
    }
    char *head = xstrndup(text, head_end);
    if (head_end && head[head_end - 1] != '\n') {
        r->head = xasprintf("%s\n", head);
        free(head);
    } else {
        r->head = head;
    }
    r->body_len = len > pos ? len - pos : 0;
    r->body = xstrndup(text + pos, r->body_len);
}

/* ---- the official SigV4 suite ------------------------------------------------------- */

struct suite_case {
    const char *name;
    char *dir;
    json_t *ctx;
    struct http_req req;
    struct sigv4_creds creds;
    struct sigv4_opts opts;
    struct sigv4_request sreq;
    char payload[SIGV4_HEX_SIZE];
};

static void load_case(const char *root, const char *name, struct suite_case *c)
{
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->dir = xasprintf("%s/%s", root, name);
    char *path = xasprintf("%s/context.json", c->dir);
    json_error_t jerr;
    c->ctx = json_load_file(path, 0, &jerr);
    if (!c->ctx)
        fail_msg("case '%s': context.json: %s", name, jerr.text);
    free(path);

    size_t len = 0;
    path = xasprintf("%s/request.txt", c->dir);
    char *text = slurp(path, &len);
    if (!text)
        fail_msg("case '%s': cannot read request.txt", name);
    free(path);
    parse_http(text, len, &c->req);
    free(text);

    json_t *cr = json_object_get(c->ctx, "credentials");
    c->creds.access_key = json_string_value(json_object_get(cr, "access_key_id"));
    c->creds.secret_key = json_string_value(json_object_get(cr, "secret_access_key"));
    c->creds.session_token = json_string_value(json_object_get(cr, "token"));
    c->opts.region = json_string_value(json_object_get(c->ctx, "region"));
    c->opts.service = json_string_value(json_object_get(c->ctx, "service"));
    const char *ts = json_string_value(json_object_get(c->ctx, "timestamp"));
    if (!c->creds.access_key || !c->creds.secret_key || !c->opts.region || !c->opts.service || !ts)
        fail_msg("case '%s': context.json lacks credentials, region, service or timestamp", name);
    c->opts.when = parse_time(ts);
    json_t *norm = json_object_get(c->ctx, "normalize");
    c->opts.path_mode = !norm || json_is_true(norm) ? SIGV4_PATH_NORMALIZE : SIGV4_PATH_ENCODE;
    c->opts.omit_session_token = json_is_true(json_object_get(c->ctx, "omit_session_token"));
    c->opts.content_sha256_header = json_is_true(json_object_get(c->ctx, "sign_body"));
    json_t *exp = json_object_get(c->ctx, "expiration_in_seconds");
    c->opts.expires = exp ? (long)json_integer_value(exp) : 3600;

    secret_sha256_hex(c->req.body, c->req.body_len, c->payload);
    c->sreq.method = c->req.method;
    c->sreq.path = c->req.path;
    c->sreq.query = c->req.query;
    c->sreq.headers = (const char *const *)c->req.headers;
    c->sreq.n_headers = c->req.n_headers;
    c->sreq.payload_hash = c->payload;
}

static void release_case(struct suite_case *c)
{
    http_req_release(&c->req);
    json_decref(c->ctx);
    free(c->dir);
}

/* Compare a file of the case (trailing newlines ignored) with got; 1 on a difference. */
static int check_file(const struct suite_case *c, const char *file, const char *got)
{
    char *want = slurp_in(c->dir, file);
    char *g = xstrdup(got);
    chomp(want);
    chomp(g);
    char *what = xasprintf("%s", file);
    int bad = differs(c->name, what, want, g);
    free(what);
    free(g);
    free(want);
    return bad;
}

static int check_header_variant(struct suite_case *c)
{
    struct sigv4_result res;
    struct err e = {0};
    if (sigv4_sign_headers(&c->creds, &c->sreq, &c->opts, &res, &e)) {
        print_error("case '%s': header signing failed: %s\n", c->name, e.msg);
        return 1;
    }
    int bad = check_file(c, "header-canonical-request.txt", res.canonical_request);
    bad |= check_file(c, "header-string-to-sign.txt", res.string_to_sign);
    bad |= check_file(c, "header-signature.txt", res.signature);

    /* The signed request: the request as it was, our headers added, then the body. */
    char *got = xstrdup(c->req.head);
    for (size_t i = 0; i < res.n_add; i++) {
        char *t = xasprintf("%s%s:%s\n", got, res.add[i].name, res.add[i].value);
        free(got);
        got = t;
    }
    char *full = xasprintf("%s\n%s", got, c->req.body);
    char *want = slurp_in(c->dir, "header-signed-request.txt");
    bad |= differs(c->name, "header-signed-request.txt", want, full);
    assert_string_equal(res.add[res.n_add - 1].name, "Authorization");
    assert_ptr_equal(res.authorization, res.add[res.n_add - 1].value);
    free(want);
    free(full);
    free(got);
    sigv4_result_release(&res);
    return bad;
}

/*
 * The query of the signed request line. The caller's parameters must come first and
 * verbatim, X-Amz-Signature last; the X-Amz-* parameters in between are compared as a
 * set: the suite lists them in aws-c-auth's order (..., SignedHeaders, Expires), we in
 * sorted order as the S3 documentation's URL does (..., Expires, SignedHeaders).
 */
static int check_signed_query(const struct suite_case *c, const char *want_q, const char *got_q)
{
    size_t nw, ng, nc = 0;
    char **w = split(want_q, '&', &nw), **g = split(got_q, '&', &ng);
    int bad = 0;
    if (c->req.query && *c->req.query) {
        char **cq = split(c->req.query, '&', &nc);
        free_strv(cq, nc);
    }
    if (nw != ng) {
        print_error("case '%s': signed query has %zu parameters, want %zu\n  want: %s\n  got:  "
                    "%s\n",
                    c->name, ng, nw, want_q, got_q);
        bad = 1;
        goto out;
    }
    for (size_t i = 0; i < nc; i++)
        if (strcmp(w[i], g[i])) {
            print_error("case '%s': signed query parameter %zu\n  want: %s\n  got:  %s\n", c->name,
                        i + 1, w[i], g[i]);
            bad = 1;
            goto out;
        }
    if (strncmp(g[ng - 1], "X-Amz-Signature=", 16) || strcmp(w[nw - 1], g[ng - 1])) {
        print_error("case '%s': signed query's last parameter\n  want: %s\n  got:  %s\n", c->name,
                    w[nw - 1], g[ng - 1]);
        bad = 1;
        goto out;
    }
    qsort(w + nc, nw - nc, sizeof(*w), str_cmp);
    qsort(g + nc, ng - nc, sizeof(*g), str_cmp);
    for (size_t i = nc; i < nw; i++)
        if (strcmp(w[i], g[i])) {
            print_error("case '%s': signed query parameters differ\n  want: %s\n  got:  %s\n",
                        c->name, w[i], g[i]);
            bad = 1;
            goto out;
        }
out:
    free_strv(w, nw);
    free_strv(g, ng);
    return bad;
}

static int check_query_variant(struct suite_case *c)
{
    struct sigv4_result res;
    struct err e = {0};
    if (sigv4_presign(&c->creds, &c->sreq, &c->opts, &res, &e)) {
        print_error("case '%s': presigning failed: %s\n", c->name, e.msg);
        return 1;
    }
    assert_int_equal(res.n_add, 0);
    int bad = check_file(c, "query-canonical-request.txt", res.canonical_request);
    bad |= check_file(c, "query-string-to-sign.txt", res.string_to_sign);
    bad |= check_file(c, "query-signature.txt", res.signature);

    char *want = slurp_in(c->dir, "query-signed-request.txt");
    size_t l1 = strcspn(want, "\n");
    /* "<METHOD> <path>?<query> HTTP/1.1" */
    char *line = xstrndup(want, l1);
    char *prefix = xasprintf("%s %s?", c->req.method, c->req.path);
    const char *suffix = " HTTP/1.1";
    size_t pl = strlen(prefix), sl = strlen(suffix);
    if (l1 < pl + sl || strncmp(line, prefix, pl) || strcmp(line + l1 - sl, suffix)) {
        print_error("case '%s': query-signed-request.txt line 1 is not '%s...%s': %s\n", c->name,
                    prefix, suffix, line);
        bad = 1;
    } else {
        line[l1 - sl] = '\0';
        bad |= check_signed_query(c, line + pl, res.query);
    }
    /* The rest of the request is unchanged: no header added. */
    size_t h1 = strcspn(c->req.head, "\n");
    char *rest = xasprintf("%s\n%s", c->req.head + h1 + 1, c->req.body);
    bad |= differs(c->name, "query-signed-request.txt (after line 1)",
                   want[l1] ? want + l1 + 1 : "", rest);
    free(rest);
    free(prefix);
    free(line);
    free(want);
    sigv4_result_release(&res);
    return bad;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_official_suite(void **state)
{
    (void)state;
    char *root = xasprintf("%s/aws-sigv4/v4", testdata_dir);
    DIR *d = opendir(root);
    if (!d)
        fail_msg("cannot open the sigv4 suite at '%s'", root);
    size_t n = 0, cap = 64;
    char **names = xmalloc(cap * sizeof(*names));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *ctx = xasprintf("%s/%s/context.json", root, de->d_name);
        FILE *f = fopen(ctx, "r");
        free(ctx);
        if (!f)
            fail_msg("'%s/%s' is not a case (no context.json)", root, de->d_name);
        fclose(f);
        if (n == cap)
            names = xrealloc(names, (cap *= 2) * sizeof(*names));
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    assert_true(n > 0);

    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        struct suite_case c;
        load_case(root, names[i], &c);
        int bad = check_header_variant(&c);
        bad |= check_query_variant(&c);
        failed += bad != 0;
        release_case(&c);
    }
    if (failed)
        fail_msg("sigv4 suite: %zu of %zu cases failed", failed, n);
    print_message("sigv4 suite: %zu cases x 2 variants passed\n", n);
    free_strv(names, n);
    free(root);
}

/* ---- the S3 API reference examples -------------------------------------------------- */

static json_t *s3_doc;
static struct sigv4_creds s3_creds;
static struct sigv4_opts s3_opts;

static void load_s3_doc(void)
{
    char *path = xasprintf("%s/aws-s3-docs/s3_docs_examples.json", testdata_dir);
    json_error_t jerr;
    s3_doc = json_load_file(path, 0, &jerr);
    if (!s3_doc)
        fail_msg("cannot load '%s': %s", path, jerr.text);
    free(path);
    json_t *cr = json_object_get(s3_doc, "credentials");
    s3_creds.access_key = json_string_value(json_object_get(cr, "access_key_id"));
    s3_creds.secret_key = json_string_value(json_object_get(cr, "secret_access_key"));
    memset(&s3_opts, 0, sizeof(s3_opts));
    s3_opts.region = json_string_value(json_object_get(cr, "region"));
    s3_opts.service = json_string_value(json_object_get(cr, "service"));
    s3_opts.when = parse_time(json_string_value(json_object_get(cr, "amz_date")));
    assert_non_null(s3_creds.access_key);
    assert_non_null(s3_creds.secret_key);
    assert_string_equal(s3_opts.service, "s3");
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("s3 example lacks '%s'", key);
    return s;
}

/*
 * The example's header list without x-amz-date and x-amz-content-sha256, which the
 * signer adds (checked against the example's values by the caller). New strings.
 */
static char **example_headers(json_t *ex, size_t *n, const char **content_sha)
{
    json_t *hs = json_object_get(ex, "headers");
    char **v = xmalloc((json_array_size(hs) + 1) * sizeof(*v));
    *n = 0;
    *content_sha = NULL;
    size_t i;
    json_t *h;
    json_array_foreach(hs, i, h)
    {
        const char *name = json_string_value(json_array_get(h, 0));
        const char *value = json_string_value(json_array_get(h, 1));
        assert_non_null(name);
        assert_non_null(value);
        if (!strcmp(name, "x-amz-date")) {
            assert_string_equal(value, jstr(json_object_get(s3_doc, "credentials"), "amz_date"));
            continue;
        }
        if (!strcmp(name, "x-amz-content-sha256")) {
            *content_sha = value;
            continue;
        }
        v[(*n)++] = xasprintf("%s: %s", name, value);
    }
    return v;
}

static void sign_example(json_t *ex, const char *path, const char *query, const char *payload,
                         struct sigv4_result *res)
{
    size_t nh;
    const char *content_sha;
    char **hs = example_headers(ex, &nh, &content_sha);
    struct sigv4_request req = {.method = jstr(ex, "method"),
                                .path = path,
                                .query = query,
                                .headers = (const char *const *)hs,
                                .n_headers = nh,
                                .payload_hash = payload};
    struct sigv4_opts opts = s3_opts;
    opts.content_sha256_header = content_sha != NULL;
    struct err e = {0};
    if (sigv4_sign_headers(&s3_creds, &req, &opts, res, &e))
        fail_msg("s3 example '%s': %s", jstr(ex, "name"), e.msg);
    if (content_sha) {
        assert_int_equal(res->n_add, 3);
        assert_string_equal(res->add[1].name, "x-amz-content-sha256");
        assert_string_equal(res->add[1].value, content_sha);
    }
    assert_string_equal(res->add[0].name, "X-Amz-Date");
    assert_string_equal(res->add[0].value,
                        jstr(json_object_get(s3_doc, "credentials"), "amz_date"));
    free_strv(hs, nh);
}

/* Line `index` (0-based) of the canonical request, new. */
static char *creq_line(const char *creq, int index)
{
    for (int i = 0; i < index; i++) {
        creq = strchr(creq, '\n');
        assert_non_null(creq);
        creq++;
    }
    return xstrndup(creq, strcspn(creq, "\n"));
}

static size_t check_header_examples(void)
{
    json_t *list = json_object_get(s3_doc, "header_auth");
    assert_true(json_array_size(list) > 0);
    size_t i;
    json_t *ex;
    json_array_foreach(list, i, ex)
    {
        const char *name = jstr(ex, "name");
        /* Path: from the object key (our encoder must give the canonical URI) or the target. */
        char *path = NULL, *query = NULL;
        const char *key = json_string_value(json_object_get(ex, "object_key"));
        const char *target = json_string_value(json_object_get(ex, "request_target"));
        if (key) {
            char *enc = sigv4_uri_encode(key, 1);
            path = xasprintf("/%s", enc);
            free(enc);
        } else if (target) {
            path = xstrndup(target, strcspn(target, "?"));
            if (strchr(target, '?'))
                query = xstrdup(strchr(target, '?') + 1);
        } else {
            path = xstrdup(jstr(ex, "canonical_uri"));
        }
        assert_string_equal(path, jstr(ex, "canonical_uri"));

        char payload[SIGV4_HEX_SIZE];
        const char *body = json_string_value(json_object_get(ex, "body"));
        if (body) {
            secret_sha256_hex(body, strlen(body), payload);
            assert_string_equal(payload, jstr(ex, "payload_hash"));
        } else {
            snprintf(payload, sizeof(payload), "%s", jstr(ex, "payload_hash"));
        }

        struct sigv4_result res;
        sign_example(ex, path, query, payload, &res);
        char *q = creq_line(res.canonical_request, 2);
        if (strcmp(q, jstr(ex, "canonical_query")))
            fail_msg("s3 example '%s': canonical query '%s', want '%s'", name, q,
                     jstr(ex, "canonical_query"));
        free(q);
        char h[SIGV4_HEX_SIZE];
        secret_sha256_hex(res.canonical_request, strlen(res.canonical_request), h);
        if (strcmp(h, jstr(ex, "expected_canonical_request_sha256")))
            fail_msg("s3 example '%s': canonical request hash differs; ours:\n%s", name,
                     res.canonical_request);
        assert_string_equal(res.signed_headers, jstr(ex, "signed_headers"));
        assert_string_equal(res.signature, jstr(ex, "expected_signature"));
        char *auth = xasprintf("AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/s3/aws4_request, "
                               "SignedHeaders=%s, Signature=%s",
                               s3_creds.access_key, res.amz_date, s3_opts.region,
                               jstr(ex, "signed_headers"), jstr(ex, "expected_signature"));
        assert_string_equal(res.authorization, auth);
        free(auth);
        sigv4_result_release(&res);
        free(path);
        free(query);
    }
    return json_array_size(list);
}

static void check_presigned_example(void)
{
    json_t *ex = json_object_get(s3_doc, "presigned_url");
    assert_non_null(ex);
    char *host = xasprintf("host: %s", jstr(ex, "host"));
    const char *hs[] = {host};
    struct sigv4_request req = {.method = jstr(ex, "method"),
                                .path = jstr(ex, "canonical_uri"),
                                .headers = hs,
                                .n_headers = 1,
                                .payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    struct sigv4_opts opts = s3_opts;
    opts.expires = (long)json_integer_value(json_object_get(ex, "expires"));
    struct sigv4_result res;
    struct err e = {0};
    if (sigv4_presign(&s3_creds, &req, &opts, &res, &e))
        fail_msg("s3 presigned example: %s", e.msg);
    assert_int_equal(differs("s3 presigned", "canonical request",
                             jstr(ex, "expected_canonical_request"), res.canonical_request),
                     0);
    char h[SIGV4_HEX_SIZE];
    secret_sha256_hex(res.canonical_request, strlen(res.canonical_request), h);
    assert_string_equal(h, jstr(ex, "expected_canonical_request_sha256"));
    assert_int_equal(differs("s3 presigned", "string to sign", jstr(ex, "expected_string_to_sign"),
                             res.string_to_sign),
                     0);
    assert_string_equal(res.signature, jstr(ex, "expected_signature"));
    char *url = xasprintf("https://%s%s?%s", jstr(ex, "host"), req.path, res.query);
    assert_string_equal(url, jstr(ex, "expected_url"));
    free(url);
    sigv4_result_release(&res);
    free(host);
}

static size_t check_chunked_example(void)
{
    json_t *ex = json_object_get(s3_doc, "chunked_upload");
    assert_non_null(ex);
    assert_string_equal(jstr(ex, "payload_hash"), SIGV4_STREAMING_PAYLOAD);
    struct sigv4_result res;
    sign_example(ex, jstr(ex, "canonical_uri"), NULL, SIGV4_STREAMING_PAYLOAD, &res);
    assert_string_equal(res.signed_headers, jstr(ex, "signed_headers"));
    assert_string_equal(res.signature, jstr(ex, "expected_seed_signature"));

    /* The signed Content-Length is the encoded length of the chunks listed. */
    json_t *chunks = json_object_get(ex, "chunks");
    assert_true(json_array_size(chunks) >= 2);
    uint64_t decoded = 0, chunk_size = 0;
    size_t i;
    json_t *ch;
    json_array_foreach(chunks, i, ch)
    {
        uint64_t size = (uint64_t)json_integer_value(json_object_get(ch, "size"));
        decoded += size;
        if (i == 0)
            chunk_size = size;
    }
    size_t nh;
    const char *content_sha;
    char **hs = example_headers(ex, &nh, &content_sha);
    char *want_len = xasprintf("content-length: %llu",
                               (unsigned long long)sigv4_chunked_length(decoded, chunk_size));
    char *want_dec = xasprintf("x-amz-decoded-content-length: %llu", (unsigned long long)decoded);
    int seen = 0;
    for (size_t k = 0; k < nh; k++)
        seen += !strcmp(hs[k], want_len) + !strcmp(hs[k], want_dec);
    assert_int_equal(seen, 2);
    free(want_len);
    free(want_dec);
    free_strv(hs, nh);

    struct sigv4_chunk_signer cs;
    struct err e = {0};
    if (sigv4_chunk_init(&cs, &s3_creds, &s3_opts, res.signature, &e))
        fail_msg("chunk init: %s", e.msg);
    json_array_foreach(chunks, i, ch)
    {
        size_t size = (size_t)json_integer_value(json_object_get(ch, "size"));
        const char *byte = jstr(ch, "byte");
        char *data = xmalloc(size + 1);
        memset(data, byte[0], size);
        char sig[SIGV4_HEX_SIZE];
        sigv4_chunk_sign(&cs, data, size, sig);
        if (strcmp(sig, jstr(ch, "expected_signature")))
            fail_msg("chunk %zu (%zu bytes): signature %s, want %s", i + 1, size, sig,
                     jstr(ch, "expected_signature"));
        char line[SIGV4_CHUNK_HEADER_SIZE];
        size_t n = sigv4_chunk_header(line, size, sig);
        char *want = xasprintf("%zx;chunk-signature=%s\r\n", size, sig);
        assert_int_equal(n, strlen(want));
        assert_string_equal(line, want);
        free(want);
        free(data);
    }
    assert_true(cs.finished);

    /* The trailer chains on the final (empty) chunk's signature. */
    json_t *tr = json_object_get(ex, "trailer_example_from_aws_c_auth");
    assert_non_null(tr);
    const char *canon = jstr(tr, "trailing_headers_canonical");
    size_t nl;
    char **lines = split(canon, '\n', &nl);
    assert_true(nl >= 2 && lines[nl - 1][0] == '\0');
    char sig[SIGV4_HEX_SIZE];
    /* Given out of order and in mixed case: the canonical form sorts and lowercases. */
    char **given = xmalloc(nl * sizeof(*given));
    for (size_t k = 0; k + 1 < nl; k++) {
        given[k] = xstrdup(lines[nl - 2 - k]);
        given[k][0] = (char)(given[k][0] - 'a' + 'A');
    }
    if (sigv4_trailer_sign(&cs, (const char *const *)given, nl - 1, sig, &e))
        fail_msg("trailer: %s", e.msg);
    assert_string_equal(sig, jstr(tr, "expected_signature"));
    free_strv(given, nl - 1);
    free_strv(lines, nl);
    sigv4_chunk_release(&cs);
    sigv4_result_release(&res);
    return json_array_size(chunks);
}

static void test_s3_examples(void **state)
{
    (void)state;
    load_s3_doc();
    /* Every part of the file is tested: a new kind of example must get a check here. */
    const char *key;
    json_t *v;
    json_object_foreach(s3_doc, key, v)
    {
        if (strcmp(key, "_provenance") && strcmp(key, "credentials") &&
            strcmp(key, "header_auth") && strcmp(key, "presigned_url") &&
            strcmp(key, "chunked_upload"))
            fail_msg("s3_docs_examples.json has '%s', which this test does not check", key);
    }
    size_t nh = check_header_examples();
    check_presigned_example();
    size_t nc = check_chunked_example();
    print_message("s3 examples: %zu header, 1 presigned, 1 seed + %zu chunks + 1 trailer passed\n",
                  nh, nc);
    json_decref(s3_doc);
    s3_doc = NULL;
}

/* ---- our own cases ------------------------------------------------------------------ */

static const char secret_key[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY";
static const char session_token[] = "FQoGZXIvYXdzSESSIONTOKENabcdef0123456789==";

static struct sigv4_creds creds_with_token(void)
{
    struct sigv4_creds c = {"AKIDEXAMPLE", secret_key, session_token};
    return c;
}

static struct sigv4_opts base_opts(const char *service)
{
    struct sigv4_opts o = {
        .region = "eu-west-1", .service = service, .when = 1440938160, .expires = 900};
    return o;
}

static const char *host_only[] = {"Host: bucket.s3.eu-west-1.amazonaws.com"};

/* Run one signing call expected to fail; the message must name needle and leak nothing. */
static void expect_fail(int presign, const struct sigv4_creds *c, const struct sigv4_request *r,
                        const struct sigv4_opts *o, const char *needle)
{
    struct sigv4_result res;
    memset(&res, 0xA5, sizeof(res));
    struct err e = {0};
    int rc = presign ? sigv4_presign(c, r, o, &res, &e) : sigv4_sign_headers(c, r, o, &res, &e);
    assert_int_equal(rc, -1);
    assert_int_equal(e.kind, ERR_PERMANENT);
    if (!strstr(e.msg, needle))
        fail_msg("message '%s' does not contain '%s'", e.msg, needle);
    /* Neither the secret nor the token, nor a run of 8 characters of either. */
    const char *secrets[] = {secret_key, session_token};
    for (size_t s = 0; s < XM_ARRAY_LEN(secrets); s++) {
        size_t n = strlen(secrets[s]);
        for (size_t i = 0; i + 8 <= n; i++) {
            char piece[9];
            memcpy(piece, secrets[s] + i, 8);
            piece[8] = '\0';
            if (strstr(e.msg, piece))
                fail_msg("message '%s' leaks a secret ('%s')", e.msg, piece);
        }
    }
    /* The result is left empty. */
    assert_null(res.canonical_request);
    assert_null(res.query);
    assert_int_equal(res.n_add, 0);
}

static void test_presign_expiry_bounds(void **state)
{
    (void)state;
    struct sigv4_creds c = creds_with_token();
    struct sigv4_request r = {.method = "PUT",
                              .path = "/disk-1/chunk-000001",
                              .headers = host_only,
                              .n_headers = 1,
                              .payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    struct sigv4_opts o = base_opts("s3");
    const long bad[] = {0, -1, -604800, SIGV4_EXPIRES_MAX + 1, 10L * SIGV4_EXPIRES_MAX};
    for (size_t i = 0; i < XM_ARRAY_LEN(bad); i++) {
        o.expires = bad[i];
        expect_fail(1, &c, &r, &o, "expires");
    }
    const long good[] = {1, 3600, SIGV4_EXPIRES_MAX};
    for (size_t i = 0; i < XM_ARRAY_LEN(good); i++) {
        o.expires = good[i];
        struct sigv4_result res;
        struct err e = {0};
        assert_int_equal(sigv4_presign(&c, &r, &o, &res, &e), 0);
        char *want = xasprintf("&X-Amz-Expires=%ld&", good[i]);
        assert_non_null(strstr(res.query, want));
        free(want);
        /* The token is signed and in the URL, encoded. */
        assert_non_null(strstr(res.query, "X-Amz-Security-Token=FQoGZXIvYXdzSESSIONTOKEN"));
        assert_non_null(strstr(res.query, "%3D%3D&X-Amz-SignedHeaders=host&X-Amz-Signature="));
        assert_non_null(strstr(res.canonical_request, "X-Amz-Security-Token="));
        sigv4_result_release(&res);
    }
    /* Header signing ignores expires. */
    o.expires = 0;
    struct sigv4_result res;
    struct err e = {0};
    assert_int_equal(sigv4_sign_headers(&c, &r, &o, &res, &e), 0);
    sigv4_result_release(&res);
}

static void test_errors_never_contain_secrets(void **state)
{
    (void)state;
    struct sigv4_creds c = creds_with_token();
    struct sigv4_request r = {.method = "GET", .path = "/", .headers = host_only, .n_headers = 1};
    struct sigv4_opts o = base_opts("s3");
    for (int presign = 0; presign < 2; presign++) {
        /* Bad credentials: the secret or token itself is what is wrong. */
        char bad_secret[sizeof(secret_key) + 1];
        memcpy(bad_secret, secret_key, sizeof(secret_key));
        bad_secret[10] = '\n';
        struct sigv4_creds bc = c;
        bc.secret_key = bad_secret;
        expect_fail(presign, &bc, &r, &o, "secret access key has a character");
        bad_secret[10] = ' ';
        expect_fail(presign, &bc, &r, &o, "secret access key has a character");
        /* The secret repeated past the cap. */
        char long_secret[4 * sizeof(secret_key)];
        for (size_t k = 0; k < 4; k++)
            memcpy(long_secret + k * (sizeof(secret_key) - 1), secret_key, sizeof(secret_key));
        bc.secret_key = long_secret;
        expect_fail(presign, &bc, &r, &o, "secret access key is longer than 128 bytes");
        bc.secret_key = "";
        expect_fail(presign, &bc, &r, &o, "secret access key is empty");
        bc.secret_key = NULL;
        expect_fail(presign, &bc, &r, &o, "secret access key is empty");
        bc = c;
        char bad_token[sizeof(session_token)];
        memcpy(bad_token, session_token, sizeof(session_token));
        bad_token[5] = '\r';
        bc.session_token = bad_token;
        expect_fail(presign, &bc, &r, &o, "session token has a character");
        char *huge = xmalloc(SIGV4_TOKEN_MAX + 2);
        memset(huge, 'T', SIGV4_TOKEN_MAX + 1);
        memcpy(huge, session_token, strlen(session_token));
        huge[SIGV4_TOKEN_MAX + 1] = '\0';
        bc.session_token = huge;
        expect_fail(presign, &bc, &r, &o, "session token is longer than 8192 bytes");
        free(huge);
        bc = c;
        bc.access_key = "AKID/EXAMPLE";
        expect_fail(presign, &bc, &r, &o, "access key id is not");

        /* A header carrying a secret is refused without echoing its value. */
        char *tok_hdr = xasprintf("X-Amz-Security-Token: %s", session_token);
        char *auth_hdr = xasprintf("Authorization: AWS4-HMAC-SHA256 %s", secret_key);
        char *inj_hdr = xasprintf("X-Meta: %s\r\nX-Evil: 1", secret_key);
        const char *hs[] = {host_only[0], NULL};
        struct sigv4_request hr = r;
        hr.headers = hs;
        hr.n_headers = 2;
        hs[1] = tok_hdr;
        expect_fail(presign, &c, &hr, &o, "header 2 is 'x-amz-security-token'");
        hs[1] = auth_hdr;
        expect_fail(presign, &c, &hr, &o, "header 2 is 'authorization'");
        hs[1] = inj_hdr;
        expect_fail(presign, &c, &hr, &o, "header 2 has a line break that is not a continuation");
        free(tok_hdr);
        free(auth_hdr);
        free(inj_hdr);
    }
}

static void test_caps(void **state)
{
    (void)state;
    struct sigv4_creds c = creds_with_token();
    struct sigv4_opts o = base_opts("ec2");
    struct sigv4_request r = {.method = "GET", .path = "/", .headers = host_only, .n_headers = 1};

    /* Header count: SIGV4_HEADERS_MAX signs, one more does not. */
    const char *many[SIGV4_HEADERS_MAX + 1];
    char *lines[SIGV4_HEADERS_MAX + 1];
    many[0] = host_only[0];
    for (size_t i = 1; i <= SIGV4_HEADERS_MAX; i++) {
        lines[i] = xasprintf("X-Meta-%zu: v", i);
        many[i] = lines[i];
    }
    struct sigv4_request hr = r;
    hr.headers = many;
    hr.n_headers = SIGV4_HEADERS_MAX;
    struct sigv4_result res;
    struct err e = {0};
    assert_int_equal(sigv4_sign_headers(&c, &hr, &o, &res, &e), 0);
    sigv4_result_release(&res);
    hr.n_headers = SIGV4_HEADERS_MAX + 1;
    expect_fail(0, &c, &hr, &o, "more than 64 headers");
    for (size_t i = 1; i <= SIGV4_HEADERS_MAX; i++)
        free(lines[i]);

    /* One header line. */
    char *big = xmalloc(SIGV4_HEADER_MAX + 2);
    memcpy(big, "X-Big: ", 7);
    memset(big + 7, 'v', SIGV4_HEADER_MAX - 7);
    big[SIGV4_HEADER_MAX] = '\0';
    const char *hs[] = {host_only[0], big};
    hr.headers = hs;
    hr.n_headers = 2;
    assert_int_equal(sigv4_sign_headers(&c, &hr, &o, &res, &e), 0);
    sigv4_result_release(&res);
    big[SIGV4_HEADER_MAX] = 'v';
    big[SIGV4_HEADER_MAX + 1] = '\0';
    expect_fail(0, &c, &hr, &o, "header 2 is longer than 8192 bytes");
    free(big);

    /* Path and query length, parameter count. */
    char *path = xmalloc(SIGV4_PATH_MAX + 2);
    memset(path, 'p', SIGV4_PATH_MAX + 1);
    path[0] = '/';
    path[SIGV4_PATH_MAX + 1] = '\0';
    struct sigv4_request pr = r;
    pr.path = path;
    expect_fail(1, &c, &pr, &o, "path is longer than 4096 bytes");
    path[SIGV4_PATH_MAX] = '\0';
    assert_int_equal(sigv4_presign(&c, &pr, &o, &res, &e), 0);
    sigv4_result_release(&res);
    free(path);

    char *query = xmalloc(SIGV4_QUERY_MAX + 2);
    memset(query, 'q', SIGV4_QUERY_MAX + 1);
    query[SIGV4_QUERY_MAX + 1] = '\0';
    struct sigv4_request qr = r;
    qr.query = query;
    expect_fail(0, &c, &qr, &o, "query is longer than 8192 bytes");
    free(query);
    char *params = xstrdup("");
    for (int i = 0; i <= SIGV4_QUERY_PARAMS_MAX; i++) {
        char *t = xasprintf("%s%sp%d=%d", params, i ? "&" : "", i, i);
        free(params);
        params = t;
    }
    qr.query = params;
    expect_fail(0, &c, &qr, &o, "query has more than 128 parameters");
    *strrchr(params, '&') = '\0';
    assert_int_equal(sigv4_sign_headers(&c, &qr, &o, &res, &e), 0);
    sigv4_result_release(&res);
    free(params);

    /* Names in the scope, method, time, payload hash. */
    struct sigv4_opts bo = o;
    bo.region = "eu-west-1/x";
    expect_fail(0, &c, &r, &bo, "region 'eu-west-1/x' is not [a-z0-9-]");
    bo.region = "";
    expect_fail(0, &c, &r, &bo, "region is empty");
    bo = o;
    bo.service = "a-service-name-that-is-far-too-long-to-be-any-real-aws-service-name";
    expect_fail(0, &c, &r, &bo, "service is longer than 63 bytes");
    bo = o;
    bo.when = -1;
    expect_fail(0, &c, &r, &bo, "signing time -1 is out of range");
    struct sigv4_request mr = r;
    mr.method = "GET /";
    expect_fail(0, &c, &mr, &o, "method is not an http token");
    mr.method = "PROPFINDPROPFINDX";
    expect_fail(0, &c, &mr, &o, "method is longer than 16 bytes");
    mr = r;
    mr.payload_hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    expect_fail(0, &c, &mr, &o, "payload hash");
    mr.payload_hash = "UNSIGNED-PAYLOAD\n";
    expect_fail(0, &c, &mr, &o, "payload hash");
}

static void test_refused_requests(void **state)
{
    (void)state;
    struct sigv4_creds c = {"AKIDEXAMPLE", secret_key, NULL};
    struct sigv4_opts o = base_opts("s3");
    struct sigv4_request r = {.method = "GET", .path = "/", .headers = host_only, .n_headers = 1};

    struct sigv4_request nr = r;
    const char *no_host[] = {"X-Meta: 1"};
    nr.headers = no_host;
    expect_fail(0, &c, &nr, &o, "request has no 'host' header");
    nr.n_headers = 0;
    expect_fail(1, &c, &nr, &o, "request has no 'host' header");

    const char *dated[] = {host_only[0], "X-Amz-Date: 20150830T123600Z"};
    nr.headers = dated;
    nr.n_headers = 2;
    expect_fail(0, &c, &nr, &o, "header 2 is 'x-amz-date', which the signer sets");
    const char *sha[] = {host_only[0], "X-Amz-Content-SHA256: " SIGV4_EMPTY_SHA256};
    nr.headers = sha;
    struct sigv4_opts so = o;
    so.content_sha256_header = 1;
    expect_fail(0, &c, &nr, &so, "header 2 is 'x-amz-content-sha256', which the signer sets");
    /* Without the option the caller may set it: it is signed like any header. */
    struct sigv4_result res;
    struct err e = {0};
    assert_int_equal(sigv4_sign_headers(&c, &nr, &o, &res, &e), 0);
    assert_string_equal(res.signed_headers, "host;x-amz-content-sha256;x-amz-date");
    sigv4_result_release(&res);

    const char *badname[] = {host_only[0], "X Meta: 1"};
    nr.headers = badname;
    expect_fail(0, &c, &nr, &o, "header 2 has a name that is not a token");
    badname[1] = ": 1";
    expect_fail(0, &c, &nr, &o, "header 2 is not 'Name: value'");
    badname[1] = "X-Meta 1";
    expect_fail(0, &c, &nr, &o, "header 2 is not 'Name: value'");
    badname[1] = "X-Meta: a\x01z";
    expect_fail(0, &c, &nr, &o, "header 2 has a control character");
    badname[1] = "X-Meta: a\n";
    expect_fail(0, &c, &nr, &o, "header 2 has a line break");
    badname[1] = "X-Meta: a\rb";
    expect_fail(0, &c, &nr, &o, "header 2 has a line break");
    badname[1] = NULL;
    expect_fail(0, &c, &nr, &o, "header 2 is NULL");

    struct sigv4_request pr = r;
    const char *paths[] = {"", "bucket/key", "/a?b", "/a#b", "/a\tb", "/a\x7f"};
    const char *why[] = {
        "does not start with '/'", "does not start with '/'", "'?' or '#'", "'?' or '#'",
        "control character",       "control character"};
    for (size_t i = 0; i < XM_ARRAY_LEN(paths); i++) {
        pr.path = paths[i];
        expect_fail(0, &c, &pr, &o, why[i]);
    }
    pr.path = NULL;
    expect_fail(0, &c, &pr, &o, "does not start with '/'");

    struct sigv4_request qr = r;
    const char *queries[] = {"a=%zz", "a=%4", "%g1=b", "a=b&c=%"};
    for (size_t i = 0; i < XM_ARRAY_LEN(queries); i++) {
        qr.query = queries[i];
        expect_fail(0, &c, &qr, &o, "bad percent escape");
    }
    const char *broken[] = {"a=1#frag", "a=1\r\nX-Evil: 1", "a=\t"};
    for (size_t i = 0; i < XM_ARRAY_LEN(broken); i++) {
        qr.query = broken[i];
        expect_fail(1, &c, &qr, &o, "query has a control character or '#'");
    }
    /* Presigning refuses parameters it sets, in any case. */
    const char *own[] = {"X-Amz-Signature=abc", "x-amz-expires=5", "a=1&X-Amz-Credential=x",
                         "X-Amz-Date"};
    for (size_t i = 0; i < XM_ARRAY_LEN(own); i++) {
        qr.query = own[i];
        expect_fail(1, &c, &qr, &o, "which presigning sets");
    }
    qr.query = "X-Amz-Signature=abc";
    assert_int_equal(sigv4_sign_headers(&c, &qr, &o, &res, &e), 0);
    sigv4_result_release(&res);
}

/* The canonical URI (line 2 of the canonical request) of path under mode. */
static char *canonical_uri(const char *service, enum sigv4_path_mode mode, const char *path,
                           struct err *e)
{
    struct sigv4_creds c = {"AKIDEXAMPLE", secret_key, NULL};
    struct sigv4_opts o = base_opts(service);
    o.path_mode = mode;
    struct sigv4_request r = {.method = "GET", .path = path, .headers = host_only, .n_headers = 1};
    struct sigv4_result res;
    if (sigv4_sign_headers(&c, &r, &o, &res, e))
        return NULL;
    char *line = creq_line(res.canonical_request, 1);
    sigv4_result_release(&res);
    return line;
}

static void expect_uri(const char *service, enum sigv4_path_mode mode, const char *path,
                       const char *want)
{
    struct err e = {0};
    char *got = canonical_uri(service, mode, path, &e);
    if (!got)
        fail_msg("%s path '%s': %s", sigv4_path_mode_str(mode), path, e.msg);
    if (strcmp(got, want))
        fail_msg("%s path '%s': canonical '%s', want '%s'", sigv4_path_mode_str(mode), path, got,
                 want);
    free(got);
}

static void test_paths(void **state)
{
    (void)state;
    /* Normalized (every service but S3): dot segments, empty segments, double encoding. */
    expect_uri("ec2", SIGV4_PATH_AUTO, "/a/b/../c/./d", "/a/c/d");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/a/b/..", "/a");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/a/b/../", "/a/");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/../../a", "/a");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/", "/");
    expect_uri("ec2", SIGV4_PATH_AUTO, "///", "/");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/a%20b", "/a%2520b");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/a b/\xe1\x88\xb4", "/a%20b/%E1%88%B4");
    expect_uri("ebs", SIGV4_PATH_NORMALIZE, "/snapshots/snap-1/blocks/7",
               "/snapshots/snap-1/blocks/7");
    expect_uri("ec2", SIGV4_PATH_AUTO, "/...", "/...");
    /* Encoded only. */
    expect_uri("ec2", SIGV4_PATH_ENCODE, "/a//b/../", "/a//b/../");
    expect_uri("s3", SIGV4_PATH_ENCODE, "/a%2Fb", "/a%252Fb");
    /* S3 (auto or verbatim): as given, which must already be canonical. */
    expect_uri("s3", SIGV4_PATH_AUTO, "/bucket//a/../b%24c", "/bucket//a/../b%24c");
    expect_uri("s3", SIGV4_PATH_VERBATIM, "/b/%E1%88%B4%2F", "/b/%E1%88%B4%2F");
    const char *not_canonical[] = {"/a b", "/a$b", "/a%e1",        "/a%41",
                                   "/a%4", "/a%",  "/\xe1\x88\xb4"};
    for (size_t i = 0; i < XM_ARRAY_LEN(not_canonical); i++) {
        struct err e = {0};
        char *got = canonical_uri("s3", SIGV4_PATH_AUTO, not_canonical[i], &e);
        if (got)
            fail_msg("s3 path '%s' accepted as '%s'", not_canonical[i], got);
        assert_non_null(strstr(e.msg, "path is not uri-encoded"));
    }
    struct err e = {0};
    assert_null(canonical_uri("s3", (enum sigv4_path_mode)9, "/", &e));
    assert_non_null(strstr(e.msg, "unknown path mode 9"));

    /* The encoder behind S3 keys. */
    char *s = sigv4_uri_encode("disk 1/chunk+000001~.zst$\xff", 1);
    assert_string_equal(s, "disk%201/chunk%2B000001~.zst%24%FF");
    free(s);
    s = sigv4_uri_encode("a/b=c&d", 0);
    assert_string_equal(s, "a%2Fb%3Dc%26d");
    free(s);
    s = sigv4_uri_encode("", 0);
    assert_string_equal(s, "");
    free(s);
    assert_string_equal(sigv4_path_mode_str(SIGV4_PATH_AUTO), "auto");
    assert_string_equal(sigv4_path_mode_str(SIGV4_PATH_NORMALIZE), "normalize");
    assert_string_equal(sigv4_path_mode_str(SIGV4_PATH_ENCODE), "encode");
    assert_string_equal(sigv4_path_mode_str(SIGV4_PATH_VERBATIM), "verbatim");
}

static void test_canonical_details(void **state)
{
    (void)state;
    struct sigv4_creds c = {"AKIDEXAMPLE", secret_key, session_token};
    struct sigv4_opts o = base_opts("ec2");
    /* Skipped headers are not signed; folding, trimming and repeated names are. */
    const char *hs[] = {"Host: ec2.eu-west-1.amazonaws.com",
                        "User-Agent: xmigrate/0.1",
                        "Content-Type:  application/x-www-form-urlencoded;\r\n\t charset=utf-8 ",
                        "X-Multi: b",
                        "connection: keep-alive",
                        "x-multi:   a   a  ",
                        "X-Empty:"};
    const char *body = "Action=DescribeVpcs&Version=2016-11-15";
    char payload[SIGV4_HEX_SIZE];
    secret_sha256_hex(body, strlen(body), payload);
    struct sigv4_request r = {.method = "POST",
                              .path = "/",
                              .query = "b=2&a=&c&a=1&&%7e=%41+",
                              .headers = hs,
                              .n_headers = XM_ARRAY_LEN(hs),
                              .payload_hash = payload};
    struct sigv4_result res;
    struct err e = {0};
    assert_int_equal(sigv4_sign_headers(&c, &r, &o, &res, &e), 0);
    char *want = xasprintf("POST\n/\na=&a=1&b=2&c=&~=A%%2B\n"
                           "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
                           "host:ec2.eu-west-1.amazonaws.com\n"
                           "x-amz-date:20150830T123600Z\n"
                           "x-amz-security-token:%s\n"
                           "x-empty:\n"
                           "x-multi:b,a a\n\n"
                           "content-type;host;x-amz-date;x-amz-security-token;x-empty;x-multi\n%s",
                           session_token, payload);
    assert_int_equal(differs("details", "canonical request", want, res.canonical_request), 0);
    free(want);
    assert_int_equal(res.n_add, 3);
    assert_string_equal(res.add[0].name, "X-Amz-Security-Token");
    assert_string_equal(res.add[0].value, session_token);
    assert_string_equal(res.add[1].name, "X-Amz-Date");
    assert_string_equal(res.add[1].value, "20150830T123600Z");
    assert_string_equal(res.amz_date, "20150830T123600Z");
    sigv4_result_release(&res);
    sigv4_result_release(&res); /* twice is harmless */
    sigv4_result_release(NULL);

    /* Omitted token: still sent, not signed; in a presigned URL still present. */
    o.omit_session_token = 1;
    assert_int_equal(sigv4_sign_headers(&c, &r, &o, &res, &e), 0);
    assert_null(strstr(res.canonical_request, "x-amz-security-token"));
    assert_string_equal(res.add[0].name, "X-Amz-Security-Token");
    sigv4_result_release(&res);
    struct sigv4_request pr = {
        .method = "GET", .path = "/", .query = "z=1&", .headers = hs, .n_headers = 1};
    assert_int_equal(sigv4_presign(&c, &pr, &o, &res, &e), 0);
    assert_null(strstr(res.canonical_request, "Security-Token"));
    assert_memory_equal(res.query, "z=1&X-Amz-Algorithm=", 20);
    assert_non_null(strstr(res.query, "&X-Amz-Security-Token=FQoGZXIvYXdz"));
    sigv4_result_release(&res);
}

static void test_chunk_helpers(void **state)
{
    (void)state;
    /* 8 KiB chunks; 0 bytes is only the final chunk (86 bytes). */
    assert_int_equal(sigv4_chunked_length(0, 8192), 86);
    assert_int_equal(sigv4_chunked_length(8192, 8192), 4 + 85 + 8192 + 86);
    assert_int_equal(sigv4_chunked_length(8193, 8192), 4 + 85 + 8192 + 1 + 85 + 1 + 86);
    /* 16 MiB of 64 KiB chunks, as the clone agent sends one chunk. */
    assert_int_equal(sigv4_chunked_length(16u << 20, 65536), 256u * (5 + 85 + 65536) + 86);
    char line[SIGV4_CHUNK_HEADER_SIZE];
    assert_int_equal(sigv4_chunk_header(line, SIZE_MAX, SIGV4_EMPTY_SHA256),
                     SIGV4_CHUNK_HEADER_SIZE - 1);
    assert_memory_equal(line, "ffffffffffffffff;chunk-signature=e3b0", 37);

    struct sigv4_creds c = {"AKIDEXAMPLE", secret_key, NULL};
    struct sigv4_opts o = base_opts("s3");
    struct sigv4_chunk_signer cs;
    struct err e = {0};
    assert_int_equal(sigv4_chunk_init(&cs, &c, &o, "abc", &e), -1);
    assert_non_null(strstr(e.msg, "seed signature"));
    assert_int_equal(sigv4_chunk_init(&cs, &c, &o, NULL, &e), -1);
    assert_int_equal(sigv4_chunk_init(&cs, &c, &o, SIGV4_STREAMING_PAYLOAD, &e), -1);
    struct sigv4_creds bc = c;
    bc.secret_key = "";
    assert_int_equal(sigv4_chunk_init(&cs, &bc, &o, SIGV4_EMPTY_SHA256, &e), -1);
    assert_null(strstr(e.msg, secret_key));
    assert_int_equal(sigv4_chunk_init(&cs, &c, &o, SIGV4_EMPTY_SHA256, &e), 0);
    char a[SIGV4_HEX_SIZE], b[SIGV4_HEX_SIZE];
    sigv4_chunk_sign(&cs, "x", 1, a);
    assert_false(cs.finished);
    sigv4_chunk_sign(&cs, NULL, 0, b);
    assert_true(cs.finished);
    assert_string_not_equal(a, b);
    const char *bad[] = {"x-amz-checksum-crc32: AAAA\nBBBB"};
    assert_int_equal(sigv4_trailer_sign(&cs, bad, 1, a, &e), -1);
    assert_non_null(strstr(e.msg, "trailer 1 has a line break"));
    const char *good[] = {"x-amz-checksum-crc32: sOO8/Q=="};
    assert_int_equal(sigv4_trailer_sign(&cs, good, 1, a, &e), 0);
    assert_string_not_equal(a, b);
    sigv4_chunk_release(&cs);
    for (size_t i = 0; i < sizeof(cs.key); i++)
        assert_int_equal(cs.key[i], 0);
    sigv4_chunk_release(NULL);
}

int main(int argc, char **argv)
{
    const char *env = getenv("XM_TESTDATA_DIR");
    testdata_dir = argc > 1 ? argv[1] : env;
    if (!testdata_dir) {
        fprintf(stderr, "usage: test_sigv4 TESTDATA_DIR (or XM_TESTDATA_DIR)\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_official_suite),
        cmocka_unit_test(test_s3_examples),
        cmocka_unit_test(test_presign_expiry_bounds),
        cmocka_unit_test(test_errors_never_contain_secrets),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_refused_requests),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_canonical_details),
        cmocka_unit_test(test_chunk_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
