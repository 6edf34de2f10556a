#include "aws/s3.h"

#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/sigv4.h"
#include "xmalloc.h"

/* S3's limit on one PUT (and on one part). */
#define S3_PUT_MAX ((uint64_t)5 * 1024 * 1024 * 1024)
#define S3_XMLNS "http://s3.amazonaws.com/doc/2006-03-01/"

/* ---------------------------------------------------------------- names */

static int is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int check_bucket(const char *bucket, struct err *err)
{
    size_t n = bucket ? strnlen(bucket, 64) : 0;
    if (n < 3 || n > 63)
        return err_set(err, ERR_PERMANENT, "s3: a bucket name has 3 to 63 bytes");
    for (size_t i = 0; i < n; i++) {
        char c = bucket[i];
        if (!is_lower_alnum(c) && c != '.' && c != '-')
            return err_set(err, ERR_PERMANENT,
                           "s3: bucket name '%s' has a byte other than a-z, 0-9, '.' and '-'",
                           bucket);
        if (c == '.' && bucket[i + 1] == '.')
            return err_set(err, ERR_PERMANENT, "s3: bucket name '%s' has '..'", bucket);
    }
    if (!is_lower_alnum(bucket[0]) || !is_lower_alnum(bucket[n - 1]))
        return err_set(err, ERR_PERMANENT,
                       "s3: bucket name '%s' must start and end with a letter or digit", bucket);
    return 0;
}

/* what: "key" or "prefix"; an empty prefix is allowed where empty_ok says so. */
static int check_key(const char *what, const char *key, int empty_ok, struct err *err)
{
    if (!key)
        return err_set(err, ERR_PERMANENT, "s3: no %s", what);
    size_t n = strnlen(key, S3_KEY_MAX + 1);
    if (n > S3_KEY_MAX)
        return err_set(err, ERR_PERMANENT, "s3: %s longer than %d bytes", what, S3_KEY_MAX);
    if (n == 0 && !empty_ok)
        return err_set(err, ERR_PERMANENT, "s3: empty %s", what);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return err_set(err, ERR_PERMANENT, "s3: %s has a control character", what);
    }
    return 0;
}

/* "s3 <op> '<bucket>/<key>': " before the message, the key cut so the cause still fits. */
static int fail(struct err *err, const char *op, const char *bucket, const char *key)
{
    return err_prefix(err, "s3 %s '%.63s/%.200s'", op, bucket ? bucket : "", key ? key : "");
}

static char *object_path(const char *bucket, const char *key)
{
    char *enc = sigv4_uri_encode(key, 1);
    char *path = xasprintf("/%s/%s", bucket, enc);
    free(enc);
    return path;
}

/* ---------------------------------------------------------------- digests, XML */

/* base64 of md over data: out holds at least 4 * ceil(EVP_MAX_MD_SIZE / 3) + 1 bytes. */
#define B64_DIGEST_SIZE 92

static void digest_b64(const EVP_MD *md, const void *data, size_t len, char out[B64_DIGEST_SIZE],
                       char *hex)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    XM_ASSERT(EVP_Digest(data ? data : "", data ? len : 0, d, &dn, md, NULL) == 1);
    EVP_EncodeBlock((unsigned char *)out, d, (int)dn);
    for (unsigned int i = 0; hex && i < dn; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
        hex[2 * i + 2] = '\0';
    }
}

/* Text escaped for an XML element body: new string. */
static char *xml_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += (*p == '&') ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '"' || *p == '\'') ? 6 : 1;
    char *out = xmalloc(n + 1), *o = out;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        default:
            *o++ = *p;
            continue;
        }
        size_t rn = strlen(rep);
        memcpy(o, rep, rn);
        o += rn;
    }
    *o = '\0';
    return out;
}

static xmlDoc *xml_parse(const struct http_response *resp)
{
    if (!resp->body || !resp->body_len || resp->body_len > INT32_MAX)
        return NULL;
    return xmlReadMemory(resp->body, (int)resp->body_len, NULL, NULL,
                         XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                             XML_PARSE_NOWARNING);
}

static int is_element(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* Text of parent's first child element named name: new string, or NULL when absent. */
static char *child_text(const xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent->children; c; c = c->next) {
        if (!is_element(c, name))
            continue;
        xmlChar *t = xmlNodeGetContent(c);
        char *out = xstrdup(t ? (const char *)t : "");
        xmlFree(t);
        return out;
    }
    return NULL;
}

static int parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *v = x;
    return 0;
}

static void copy_etag(const char *v, char etag[S3_ETAG_MAX])
{
    if (etag)
        xstrlcpy(etag, v ? v : "", S3_ETAG_MAX);
}

/* Codes S3 puts in a 200 reply or a DeleteObjects entry that are worth another try. */
static enum err_kind code_kind(const char *code)
{
    static const char *const retry[] = {"InternalError", "SlowDown", "ServiceUnavailable",
                                        "RequestTimeout"};
    for (size_t i = 0; code && i < XM_ARRAY_LEN(retry); i++)
        if (strcmp(code, retry[i]) == 0)
            return ERR_TRANSIENT;
    return ERR_PERMANENT;
}

/* method path?query with an XML body and its Content-MD5 (S3 wants one on several PUTs). */
static int send_xml(struct aws *a, const char *method, const char *path, const char *query,
                    const char *xml, struct http_response *resp, struct err *err)
{
    char md5[B64_DIGEST_SIZE], md5_line[B64_DIGEST_SIZE + 16];
    size_t len = strlen(xml);
    digest_b64(EVP_md5(), xml, len, md5, NULL);
    snprintf(md5_line, sizeof(md5_line), "Content-MD5: %s", md5);
    struct aws_request req = {.service = "s3",
                              .method = method,
                              .path = path,
                              .query = query,
                              .headers = {"Content-Type: application/xml", md5_line},
                              .n_headers = 2,
                              .body = xml,
                              .body_len = len};
    return aws_call(a, &req, resp, err);
}

/* ---------------------------------------------------------------- bucket */

/*
 * The region bucket lives in (new string), or NULL in *region when there is no such
 * bucket. GetBucketLocation answers 403 for somebody else's bucket: an error.
 */
static int bucket_region(struct aws *a, const char *bucket, char **region, struct err *err)
{
    *region = NULL;
    char *path = xasprintf("/%s", bucket);
    struct aws_request req = {
        .service = "s3", .method = "GET", .path = path, .query = "location", .ok_404 = 1};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc == 0 && resp.status != 404) {
        char *loc = aws_xml_text(resp.body, resp.body_len, "LocationConstraint");
        if (!loc) {
            rc = err_set(err, ERR_PERMANENT, "GetBucketLocation reply without LocationConstraint");
        } else if (!loc[0] || strcmp(loc, "EU") == 0) {
            /* The two legacy spellings: no constraint is us-east-1, "EU" is eu-west-1. */
            *region = xstrdup(loc[0] ? "eu-west-1" : "us-east-1");
            free(loc);
        } else {
            *region = loc;
        }
    }
    http_response_release(&resp);
    free(path);
    return rc;
}

int s3_bucket_ensure(struct aws *a, const char *bucket, int expire_days, struct err *err)
{
    int rc = -1;
    char *path = NULL, *have = NULL, *xml = NULL;
    struct http_response resp;
    http_response_init(&resp);
    if (check_bucket(bucket, err) < 0)
        goto out;
    if (expire_days < 1 || expire_days > S3_EXPIRE_DAYS_MAX) {
        err_set(err, ERR_PERMANENT, "expiry of %d days is not between 1 and %d", expire_days,
                S3_EXPIRE_DAYS_MAX);
        goto out;
    }
    const char *region = aws_region(a);
    path = xasprintf("/%s", bucket);

    if (bucket_region(a, bucket, &have, err) < 0)
        goto out;
    if (!have) {
        int made;
        if (strcmp(region, "us-east-1") == 0) {
            struct aws_request req = {.service = "s3", .method = "PUT", .path = path};
            made = aws_call(a, &req, &resp, err);
        } else {
            xml = xasprintf("<CreateBucketConfiguration xmlns=\"" S3_XMLNS "\">"
                            "<LocationConstraint>%s</LocationConstraint>"
                            "</CreateBucketConfiguration>",
                            region);
            made = send_xml(a, "PUT", path, NULL, xml, &resp, err);
        }
        /* Another process may have won the race to create it: fine if it is ours. */
        struct err again = {0};
        if (made < 0 && (bucket_region(a, bucket, &have, &again) < 0 || !have))
            goto out;
    }
    if (have && strcmp(have, region) != 0) {
        err_set(err, ERR_PERMANENT, "bucket is in region '%s', not '%s'", have, region);
        goto out;
    }

    if (send_xml(a, "PUT", path, "encryption",
                 "<ServerSideEncryptionConfiguration xmlns=\"" S3_XMLNS "\"><Rule>"
                 "<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
                 "</ApplyServerSideEncryptionByDefault></Rule>"
                 "</ServerSideEncryptionConfiguration>",
                 &resp, err) < 0) {
        err_prefix(err, "default encryption");
        goto out;
    }
    if (send_xml(a, "PUT", path, "publicAccessBlock",
                 "<PublicAccessBlockConfiguration xmlns=\"" S3_XMLNS "\">"
                 "<BlockPublicAcls>true</BlockPublicAcls>"
                 "<IgnorePublicAcls>true</IgnorePublicAcls>"
                 "<BlockPublicPolicy>true</BlockPublicPolicy>"
                 "<RestrictPublicBuckets>true</RestrictPublicBuckets>"
                 "</PublicAccessBlockConfiguration>",
                 &resp, err) < 0) {
        err_prefix(err, "public access block");
        goto out;
    }
    free(xml);
    xml = xasprintf("<LifecycleConfiguration xmlns=\"" S3_XMLNS "\">"
                    "<Rule><ID>xmigrate-expire-chunks</ID>"
                    "<Filter><Prefix>" S3_CHUNK_PREFIX "</Prefix></Filter>"
                    "<Status>Enabled</Status>"
                    "<Expiration><Days>%d</Days></Expiration></Rule>"
                    "<Rule><ID>xmigrate-abort-incomplete-uploads</ID>"
                    "<Filter><Prefix></Prefix></Filter>"
                    "<Status>Enabled</Status>"
                    "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1"
                    "</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>"
                    "</LifecycleConfiguration>",
                    expire_days);
    if (send_xml(a, "PUT", path, "lifecycle", xml, &resp, err) < 0) {
        err_prefix(err, "lifecycle");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        err_prefix(err, "s3 bucket '%.63s'", bucket ? bucket : "");
    http_response_release(&resp);
    free(path);
    free(have);
    free(xml);
    return rc;
}

/* ---------------------------------------------------------------- objects */

/* x-amz-meta-* lines for opts->meta into lines[*n...]; new strings. */
static int meta_lines(const char *const *meta, char **lines, size_t *n, struct err *err)
{
    size_t bytes = 0, count = 0;
    for (size_t i = 0; meta && meta[i]; i += 2) {
        const char *name = meta[i], *value = meta[i + 1];
        if (!value)
            return err_set(err, ERR_PERMANENT, "metadata '%.64s' has no value", name);
        if (++count > S3_META_MAX)
            return err_set(err, ERR_PERMANENT, "more than %d metadata entries", S3_META_MAX);
        if (!name[0])
            return err_set(err, ERR_PERMANENT, "empty metadata name");
        for (const char *p = name; *p; p++)
            if (!is_lower_alnum(*p) && *p != '-')
                return err_set(err, ERR_PERMANENT,
                               "metadata name '%.64s' has a byte other than a-z, 0-9 and '-'",
                               name);
        for (const char *p = value; *p; p++)
            if (*p < 0x20 || *p > 0x7e)
                return err_set(err, ERR_PERMANENT,
                               "metadata '%.64s' has a value that is not printable ASCII", name);
        bytes += strlen(name) + strlen(value);
        if (bytes > S3_META_BYTES)
            return err_set(err, ERR_PERMANENT, "metadata over %d bytes", S3_META_BYTES);
        lines[(*n)++] = xasprintf("x-amz-meta-%s: %s", name, value);
    }
    return 0;
}

int s3_put(struct aws *a, const char *bucket, const char *key, const void *body, size_t len,
           const struct s3_put_opts *opts, char etag[S3_ETAG_MAX], struct err *err)
{
    int rc = -1;
    char *path = NULL;
    char *lines[2 + S3_META_MAX] = {0};
    size_t n = 0;
    struct http_response resp;
    http_response_init(&resp);
    const struct s3_put_opts none = {0};
    if (!opts)
        opts = &none;
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        goto out;
    if ((uint64_t)len > S3_PUT_MAX) {
        err_set(err, ERR_PERMANENT, "%zu bytes is over the %" PRIu64 " of one PUT", len,
                S3_PUT_MAX);
        goto out;
    }
    lines[n++] = xasprintf("Content-Type: %s",
                           opts->content_type ? opts->content_type : "application/octet-stream");
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
    if (opts->checksum_sha256) {
        char b64[B64_DIGEST_SIZE];
        digest_b64(EVP_sha256(), body, len, b64, hex);
        lines[n++] = xasprintf("x-amz-checksum-sha256: %s", b64);
    }
    if (meta_lines(opts->meta, lines, &n, err) < 0)
        goto out;
    path = object_path(bucket, key);
    struct aws_request req = {.service = "s3",
                              .method = "PUT",
                              .path = path,
                              .n_headers = n,
                              .body = body,
                              .body_len = len,
                              .payload_sha256 = hex[0] ? hex : NULL};
    for (size_t i = 0; i < n; i++)
        req.headers[i] = lines[i];
    if (aws_call(a, &req, &resp, err) < 0)
        goto out;
    copy_etag(http_response_header(&resp, "etag"), etag);
    rc = 0;
out:
    if (rc < 0)
        fail(err, "put", bucket, key);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    http_response_release(&resp);
    free(path);
    return rc;
}

/* Room for an error document, whatever the caller's cap on the data. */
#define S3_ERROR_ROOM (64 * 1024)

/* GET with an optional Range; resp holds the reply, at most max bytes (0: the HTTP
 * default). A range the server ignored (200 for a range that does not start at 0) is an
 * error: the bytes would be the wrong ones. */
static int get_range(struct aws *a, const char *bucket, const char *key, uint64_t off, uint64_t len,
                     size_t max, struct http_response *resp, struct err *err)
{
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        return -1;
    char range[64] = "";
    if (len && off > UINT64_MAX - (len - 1))
        return err_set(err, ERR_PERMANENT, "range %" PRIu64 "+%" PRIu64 " overflows", off, len);
    if (len)
        snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    else if (off)
        snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", off);
    char *path = object_path(bucket, key);
    struct aws_request req = {.service = "s3",
                              .method = "GET",
                              .path = path,
                              .headers = {range},
                              .n_headers = range[0] ? 1 : 0,
                              .max_response = max && max < S3_ERROR_ROOM ? S3_ERROR_ROOM : max};
    int rc = aws_call(a, &req, resp, err);
    free(path);
    if (rc < 0)
        return -1;
    if (max && resp->body_len > max)
        return err_set(err, ERR_PERMANENT, "response over %zu bytes", max);
    if (range[0] && resp->status != 206) {
        if (off)
            return err_set(err, ERR_PERMANENT,
                           "range ignored (HTTP %ld for bytes from %" PRIu64 ")", resp->status,
                           off);
        if (len && resp->body_len > len)
            resp->body_len = len; /* the whole object from 0: keep what was asked for */
    }
    if (len && resp->body_len > len)
        return err_set(err, ERR_PERMANENT, "%zu bytes for a range of %" PRIu64, resp->body_len,
                       len);
    return 0;
}

int s3_get(struct aws *a, const char *bucket, const char *key, uint64_t off, uint64_t len,
           size_t max, char **body, size_t *body_len, struct err *err)
{
    *body = NULL;
    *body_len = 0;
    struct http_response resp;
    http_response_init(&resp);
    if (get_range(a, bucket, key, off, len, max, &resp, err) < 0) {
        http_response_release(&resp);
        return fail(err, "get", bucket, key);
    }
    *body_len = resp.body_len;
    *body = resp.body ? resp.body : xstrdup("");
    (*body)[*body_len] = '\0';
    resp.body = NULL;
    http_response_release(&resp);
    return 0;
}

int s3_get_into(struct aws *a, const char *bucket, const char *key, uint64_t off, void *buf,
                size_t cap, size_t *got, struct err *err)
{
    *got = 0;
    if (!cap) {
        err_set(err, ERR_PERMANENT, "no room to read into");
        return fail(err, "get", bucket, key);
    }
    struct http_response resp;
    http_response_init(&resp);
    if (get_range(a, bucket, key, off, cap, cap, &resp, err) < 0) {
        http_response_release(&resp);
        return fail(err, "get", bucket, key);
    }
    XM_ASSERT(resp.body_len <= cap);
    if (resp.body_len)
        memcpy(buf, resp.body, resp.body_len);
    *got = resp.body_len;
    http_response_release(&resp);
    return 0;
}

int s3_head(struct aws *a, const char *bucket, const char *key, struct s3_object_info *info,
            struct err *err)
{
    memset(info, 0, sizeof(*info));
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        return fail(err, "head", bucket, key);
    char *path = object_path(bucket, key);
    struct aws_request req = {.service = "s3", .method = "HEAD", .path = path, .ok_404 = 1};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc == 0 && resp.status != 404) {
        if (parse_u64(http_response_header(&resp, "content-length"), &info->size) < 0) {
            rc = err_set(err, ERR_PERMANENT, "HEAD reply without a Content-Length");
        } else {
            info->exists = 1;
            copy_etag(http_response_header(&resp, "etag"), info->etag);
        }
    }
    http_response_release(&resp);
    free(path);
    return rc < 0 ? fail(err, "head", bucket, key) : 0;
}

int s3_delete(struct aws *a, const char *bucket, const char *key, struct err *err)
{
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        return fail(err, "delete", bucket, key);
    char *path = object_path(bucket, key);
    struct aws_request req = {.service = "s3", .method = "DELETE", .path = path, .ok_404 = 1};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    http_response_release(&resp);
    free(path);
    return rc < 0 ? fail(err, "delete", bucket, key) : 0;
}

/* ---------------------------------------------------------------- listing */

struct list_page {
    struct s3_object *objs; /* keys and etags owned here */
    size_t n;
    char *next; /* continuation token when truncated */
};

static void list_page_release(struct list_page *pg)
{
    for (size_t i = 0; i < pg->n; i++) {
        free((char *)pg->objs[i].key);
        free((char *)pg->objs[i].etag);
    }
    free(pg->objs);
    free(pg->next);
    memset(pg, 0, sizeof(*pg));
}

/* One ListObjectsV2 page after token (NULL: the first). */
static int list_page(struct aws *a, const char *bucket, const char *prefix, size_t page,
                     const char *token, struct list_page *pg, struct err *err)
{
    memset(pg, 0, sizeof(*pg));
    char *enc_prefix = sigv4_uri_encode(prefix, 0);
    char *enc_token = token ? sigv4_uri_encode(token, 0) : NULL;
    char *query = xasprintf("list-type=2&max-keys=%zu%s%s%s%s", page, prefix[0] ? "&prefix=" : "",
                            prefix[0] ? enc_prefix : "", token ? "&continuation-token=" : "",
                            token ? enc_token : "");
    char *path = xasprintf("/%s", bucket);
    struct aws_request req = {.service = "s3", .method = "GET", .path = path, .query = query};
    struct http_response resp;
    http_response_init(&resp);
    xmlDoc *doc = NULL;
    int rc = aws_call(a, &req, &resp, err);
    if (rc < 0)
        goto out;
    rc = -1;
    doc = xml_parse(&resp);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || !is_element(root, "ListBucketResult")) {
        err_set(err, ERR_PERMANENT, "ListObjectsV2 reply is not a ListBucketResult");
        goto out;
    }
    for (xmlNode *c = root->children; c; c = c->next) {
        if (!is_element(c, "Contents"))
            continue;
        if (pg->n >= page) {
            err_set(err, ERR_PERMANENT, "ListObjectsV2 page with more than %zu keys", page);
            goto out;
        }
        char *k = child_text(c, "Key"), *size = child_text(c, "Size");
        uint64_t sz = 0;
        int bad = !k || parse_u64(size, &sz) < 0;
        free(size);
        if (bad) {
            free(k);
            err_set(err, ERR_PERMANENT, "ListObjectsV2 entry without a key or size");
            goto out;
        }
        char *etag = child_text(c, "ETag");
        pg->objs = xrealloc(pg->objs, sizeof(*pg->objs) * (pg->n + 1));
        pg->objs[pg->n++] =
            (struct s3_object){.key = k, .size = sz, .etag = etag ? etag : xstrdup("")};
    }
    char *truncated = child_text(root, "IsTruncated");
    if (truncated && strcmp(truncated, "true") == 0) {
        pg->next = child_text(root, "NextContinuationToken");
        /* A token that does not move would list the same page for ever. */
        if (!pg->next || !pg->next[0] || (token && strcmp(token, pg->next) == 0)) {
            free(truncated);
            err_set(err, ERR_PERMANENT, "ListObjectsV2 truncated without a new continuation token");
            goto out;
        }
    }
    free(truncated);
    rc = 0;
out:
    if (rc < 0)
        list_page_release(pg);
    xmlFreeDoc(doc);
    http_response_release(&resp);
    free(path);
    free(query);
    free(enc_prefix);
    free(enc_token);
    return rc;
}

static size_t page_size(size_t page)
{
    return page == 0 || page > S3_PAGE_MAX ? S3_PAGE_MAX : page;
}

int s3_list(struct aws *a, const char *bucket, const char *prefix, size_t page, s3_list_fn fn,
            void *arg, struct err *err)
{
    if (check_bucket(bucket, err) < 0 || check_key("prefix", prefix, 1, err) < 0)
        return fail(err, "list", bucket, prefix);
    page = page_size(page);
    char *token = NULL;
    int rc = 0;
    do {
        struct list_page pg;
        if (list_page(a, bucket, prefix, page, token, &pg, err) < 0) {
            rc = fail(err, "list", bucket, prefix);
            break;
        }
        for (size_t i = 0; i < pg.n && rc == 0; i++)
            rc = fn(arg, &pg.objs[i], err);
        free(token);
        token = pg.next;
        pg.next = NULL;
        list_page_release(&pg);
    } while (rc == 0 && token);
    free(token);
    return rc;
}

/* DeleteObjects for the n keys of pg: *deleted counts those gone. */
static int delete_batch(struct aws *a, const char *bucket, const struct list_page *pg,
                        size_t *deleted, struct err *err)
{
    char **esc = xcalloc(pg->n, sizeof(*esc));
    size_t cap = 128, len = 0;
    for (size_t i = 0; i < pg->n; i++) {
        esc[i] = xml_escape(pg->objs[i].key);
        cap += strlen(esc[i]) + 32;
    }
    char *xml = xmalloc(cap);
    len += (size_t)snprintf(xml, cap, "<Delete xmlns=\"" S3_XMLNS "\"><Quiet>true</Quiet>");
    for (size_t i = 0; i < pg->n; i++) {
        len += (size_t)snprintf(xml + len, cap - len, "<Object><Key>%s</Key></Object>", esc[i]);
        free(esc[i]);
    }
    free(esc);
    len += (size_t)snprintf(xml + len, cap - len, "</Delete>");
    XM_ASSERT(len < cap);
    char *path = xasprintf("/%s", bucket);
    struct http_response resp;
    http_response_init(&resp);
    xmlDoc *doc = NULL;
    int rc = send_xml(a, "POST", path, "delete", xml, &resp, err);
    if (rc < 0)
        goto out;
    /* Quiet mode: the reply lists only the keys that failed. */
    doc = xml_parse(&resp);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || !is_element(root, "DeleteResult")) {
        rc = err_set(err, ERR_PERMANENT, "DeleteObjects reply is not a DeleteResult");
        goto out;
    }
    size_t failed = 0;
    for (xmlNode *c = root->children; c; c = c->next) {
        if (!is_element(c, "Error"))
            continue;
        if (failed++ == 0) {
            char *k = child_text(c, "Key"), *code = child_text(c, "Code");
            char *msg = child_text(c, "Message");
            rc = err_set(err, code_kind(code), "s3 delete '%.63s/%.200s': %s%s%s", bucket,
                         k ? k : "", code ? code : "error", msg ? ": " : "", msg ? msg : "");
            free(k);
            free(code);
            free(msg);
        }
    }
    *deleted += failed < pg->n ? pg->n - failed : 0;
out:
    xmlFreeDoc(doc);
    http_response_release(&resp);
    free(path);
    free(xml);
    return rc;
}

int s3_delete_prefix(struct aws *a, const char *bucket, const char *prefix, size_t page,
                     size_t *deleted, struct err *err)
{
    size_t count = 0;
    if (deleted)
        *deleted = 0;
    if (check_bucket(bucket, err) < 0 || check_key("prefix", prefix, 0, err) < 0)
        return fail(err, "delete prefix", bucket, prefix);
    page = page_size(page);
    /* Deleting the page just listed does not disturb the next one: the continuation
     * token is a position in key order (what `aws s3 rm --recursive` relies on too). */
    char *token = NULL;
    int rc = 0;
    do {
        struct list_page pg;
        if (list_page(a, bucket, prefix, page, token, &pg, err) < 0) {
            rc = fail(err, "delete prefix", bucket, prefix);
            break;
        }
        if (pg.n && delete_batch(a, bucket, &pg, &count, err) < 0)
            rc = fail(err, "delete prefix", bucket, prefix);
        free(token);
        token = pg.next;
        pg.next = NULL;
        list_page_release(&pg);
    } while (rc == 0 && token);
    free(token);
    if (deleted)
        *deleted = count;
    return rc;
}

/* ---------------------------------------------------------------- multipart */

static int check_upload(const char *bucket, const char *key, const char *upload_id, struct err *err)
{
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        return -1;
    size_t n = upload_id ? strnlen(upload_id, S3_UPLOAD_ID_MAX + 1) : 0;
    if (n == 0 || n > S3_UPLOAD_ID_MAX)
        return err_set(err, ERR_PERMANENT, "upload id is empty or longer than %d bytes",
                       S3_UPLOAD_ID_MAX);
    return 0;
}

char *s3_multipart_create(struct aws *a, const char *bucket, const char *key,
                          const char *content_type, struct err *err)
{
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0) {
        fail(err, "create upload", bucket, key);
        return NULL;
    }
    char *path = object_path(bucket, key);
    char *ct =
        xasprintf("Content-Type: %s", content_type ? content_type : "application/octet-stream");
    struct aws_request req = {.service = "s3",
                              .method = "POST",
                              .path = path,
                              .query = "uploads",
                              .headers = {ct},
                              .n_headers = 1};
    struct http_response resp;
    http_response_init(&resp);
    char *id = NULL;
    if (aws_call(a, &req, &resp, err) == 0) {
        id = aws_xml_text(resp.body, resp.body_len, "UploadId");
        if (!id || !id[0] || strlen(id) > S3_UPLOAD_ID_MAX) {
            free(id);
            id = NULL;
            err_set(err, ERR_PERMANENT, "CreateMultipartUpload reply without a usable UploadId");
        }
    }
    if (!id)
        fail(err, "create upload", bucket, key);
    http_response_release(&resp);
    free(ct);
    free(path);
    return id;
}

int s3_multipart_upload_part(struct aws *a, const char *bucket, const char *key,
                             const char *upload_id, int number, const void *body, size_t len,
                             char etag[S3_ETAG_MAX], struct err *err)
{
    etag[0] = '\0';
    if (check_upload(bucket, key, upload_id, err) < 0)
        return fail(err, "upload part", bucket, key);
    if (number < 1 || number > S3_PARTS_MAX) {
        err_set(err, ERR_PERMANENT, "part number %d is not between 1 and %d", number, S3_PARTS_MAX);
        return fail(err, "upload part", bucket, key);
    }
    if ((uint64_t)len > S3_PUT_MAX) {
        err_set(err, ERR_PERMANENT, "part of %zu bytes is over %" PRIu64, len, S3_PUT_MAX);
        return fail(err, "upload part", bucket, key);
    }
    char *path = object_path(bucket, key);
    char *enc = sigv4_uri_encode(upload_id, 0);
    char *query = xasprintf("partNumber=%d&uploadId=%s", number, enc);
    struct aws_request req = {.service = "s3",
                              .method = "PUT",
                              .path = path,
                              .query = query,
                              .body = body,
                              .body_len = len};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc == 0) {
        const char *v = http_response_header(&resp, "etag");
        if (v && v[0])
            copy_etag(v, etag);
        else
            rc = err_set(err, ERR_PERMANENT, "UploadPart reply without an ETag");
    }
    http_response_release(&resp);
    free(query);
    free(enc);
    free(path);
    return rc < 0 ? fail(err, "upload part", bucket, key) : 0;
}

int s3_multipart_complete(struct aws *a, const char *bucket, const char *key, const char *upload_id,
                          const struct s3_part *parts, size_t n, char etag[S3_ETAG_MAX],
                          struct err *err)
{
    int rc = -1;
    char *path = NULL, *enc = NULL, *query = NULL, *xml = NULL;
    struct http_response resp;
    http_response_init(&resp);
    xmlDoc *doc = NULL;
    if (check_upload(bucket, key, upload_id, err) < 0)
        goto out;
    if (n == 0 || n > S3_PARTS_MAX) {
        err_set(err, ERR_PERMANENT, "%zu parts is not between 1 and %d", n, S3_PARTS_MAX);
        goto out;
    }
    size_t cap = 128 + n * (64 + S3_ETAG_MAX * 6), len = 0;
    xml = xmalloc(cap);
    len += (size_t)snprintf(xml, cap, "<CompleteMultipartUpload xmlns=\"" S3_XMLNS "\">");
    for (size_t i = 0; i < n; i++) {
        if (parts[i].number < 1 || parts[i].number > S3_PARTS_MAX ||
            (i && parts[i].number <= parts[i - 1].number)) {
            err_set(err, ERR_PERMANENT, "part numbers must ascend within 1..%d (part %d)",
                    S3_PARTS_MAX, parts[i].number);
            goto out;
        }
        if (!parts[i].etag[0] || strnlen(parts[i].etag, S3_ETAG_MAX) == S3_ETAG_MAX) {
            err_set(err, ERR_PERMANENT, "part %d has no ETag", parts[i].number);
            goto out;
        }
        char *esc = xml_escape(parts[i].etag);
        len += (size_t)snprintf(xml + len, cap - len,
                                "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
                                parts[i].number, esc);
        free(esc);
    }
    len += (size_t)snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
    XM_ASSERT(len < cap);
    path = object_path(bucket, key);
    enc = sigv4_uri_encode(upload_id, 0);
    query = xasprintf("uploadId=%s", enc);
    if (send_xml(a, "POST", path, query, xml, &resp, err) < 0)
        goto out;
    /* S3 may answer 200 and report the failure in the body, after a long wait. */
    doc = xml_parse(&resp);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (root && is_element(root, "Error")) {
        char *code = child_text(root, "Code"), *msg = child_text(root, "Message");
        err_set(err, code_kind(code), "%s%s%s (in a 200 reply)", code ? code : "error",
                msg ? ": " : "", msg ? msg : "");
        free(code);
        free(msg);
        goto out;
    }
    /* AWS says CompleteMultipartUploadResult; moto 5 says ...Response. */
    if (!root || (!is_element(root, "CompleteMultipartUploadResult") &&
                  !is_element(root, "CompleteMultipartUploadResponse"))) {
        err_set(err, ERR_PERMANENT, "CompleteMultipartUpload reply is not a result");
        goto out;
    }
    char *e = child_text(root, "ETag");
    copy_etag(e, etag);
    free(e);
    rc = 0;
out:
    if (rc < 0)
        fail(err, "complete upload", bucket, key);
    xmlFreeDoc(doc);
    http_response_release(&resp);
    free(xml);
    free(query);
    free(enc);
    free(path);
    return rc;
}

int s3_multipart_abort(struct aws *a, const char *bucket, const char *key, const char *upload_id,
                       struct err *err)
{
    if (check_upload(bucket, key, upload_id, err) < 0)
        return fail(err, "abort upload", bucket, key);
    char *path = object_path(bucket, key);
    char *enc = sigv4_uri_encode(upload_id, 0);
    char *query = xasprintf("uploadId=%s", enc);
    /* 404 NoSuchUpload: already aborted or completed; either way nothing is left over. */
    struct aws_request req = {
        .service = "s3", .method = "DELETE", .path = path, .query = query, .ok_404 = 1};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    http_response_release(&resp);
    free(query);
    free(enc);
    free(path);
    return rc < 0 ? fail(err, "abort upload", bucket, key) : 0;
}

int s3_multipart_list_parts(struct aws *a, const char *bucket, const char *key,
                            const char *upload_id, struct s3_part **parts, size_t *n,
                            struct err *err)
{
    *parts = NULL;
    *n = 0;
    if (check_upload(bucket, key, upload_id, err) < 0)
        return fail(err, "list parts", bucket, key);
    char *path = object_path(bucket, key);
    char *enc = sigv4_uri_encode(upload_id, 0);
    struct s3_part *v = NULL;
    size_t count = 0;
    int marker = 0, rc = 0;
    for (;;) {
        char *query =
            xasprintf("max-parts=%d&part-number-marker=%d&uploadId=%s", S3_PAGE_MAX, marker, enc);
        struct aws_request req = {.service = "s3", .method = "GET", .path = path, .query = query};
        struct http_response resp;
        http_response_init(&resp);
        xmlDoc *doc = NULL;
        int more = 0;
        rc = aws_call(a, &req, &resp, err);
        if (rc == 0) {
            doc = xml_parse(&resp);
            xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
            /* AWS says ListPartsResult; moto 5 says ListPartsResponse. */
            if (!root ||
                (!is_element(root, "ListPartsResult") && !is_element(root, "ListPartsResponse")))
                rc = err_set(err, ERR_PERMANENT, "ListParts reply is not a ListPartsResult");
            for (xmlNode *c = root ? root->children : NULL; rc == 0 && c; c = c->next) {
                if (!is_element(c, "Part"))
                    continue;
                char *num = child_text(c, "PartNumber"), *size = child_text(c, "Size");
                char *etag = child_text(c, "ETag");
                uint64_t pn = 0, sz = 0;
                if (parse_u64(num, &pn) < 0 || pn < 1 || pn > S3_PARTS_MAX || (int)pn <= marker ||
                    (count && (int)pn <= v[count - 1].number) || parse_u64(size, &sz) < 0 ||
                    !etag || count >= S3_PARTS_MAX) {
                    rc = err_set(err, ERR_PERMANENT, "ListParts entry out of order or malformed");
                } else {
                    v = xrealloc(v, sizeof(*v) * (count + 1));
                    v[count].number = (int)pn;
                    v[count].size = sz;
                    copy_etag(etag, v[count].etag);
                    count++;
                }
                free(num);
                free(size);
                free(etag);
            }
            char *truncated = rc == 0 ? child_text(root, "IsTruncated") : NULL;
            if (truncated && strcmp(truncated, "true") == 0) {
                /* Go on after the last part seen; a page that adds none would loop. */
                if (!count || v[count - 1].number <= marker)
                    rc = err_set(err, ERR_PERMANENT, "ListParts truncated without progress");
                else {
                    marker = v[count - 1].number;
                    more = 1;
                }
            }
            free(truncated);
        }
        xmlFreeDoc(doc);
        http_response_release(&resp);
        free(query);
        if (rc < 0 || !more)
            break;
    }
    free(enc);
    free(path);
    if (rc < 0) {
        free(v);
        return fail(err, "list parts", bucket, key);
    }
    *parts = v;
    *n = count;
    return 0;
}

int s3_multipart_copy_part(struct aws *a, const char *bucket, const char *key,
                           const char *upload_id, int number, const char *src_key, uint64_t off,
                           uint64_t len, char etag[S3_ETAG_MAX], struct err *err)
{
    etag[0] = '\0';
    if (check_upload(bucket, key, upload_id, err) < 0 ||
        check_key("source key", src_key, 0, err) < 0)
        return fail(err, "copy part", bucket, key);
    if (number < 1 || number > S3_PARTS_MAX || len == 0 || len > S3_PUT_MAX) {
        err_set(err, ERR_PERMANENT, "part %d of %" PRIu64 " bytes from '%.200s' is out of bounds",
                number, len, src_key);
        return fail(err, "copy part", bucket, key);
    }
    char *path = object_path(bucket, key);
    char *enc = sigv4_uri_encode(upload_id, 0);
    char *query = xasprintf("partNumber=%d&uploadId=%s", number, enc);
    char *src = sigv4_uri_encode(src_key, 1);
    char *source = xasprintf("x-amz-copy-source: /%s/%s", bucket, src);
    char *range =
        xasprintf("x-amz-copy-source-range: bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    struct aws_request req = {.service = "s3",
                              .method = "PUT",
                              .path = path,
                              .query = query,
                              .headers = {source, range},
                              .n_headers = 2};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    xmlDoc *doc = rc == 0 ? xml_parse(&resp) : NULL;
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (rc == 0 && root && is_element(root, "Error")) { /* a failure inside a 200 reply */
        char *code = child_text(root, "Code"), *msg = child_text(root, "Message");
        rc = err_set(err, code_kind(code), "%s%s%s (in a 200 reply)", code ? code : "error",
                     msg ? ": " : "", msg ? msg : "");
        free(code);
        free(msg);
    } else if (rc == 0) {
        char *e = root ? child_text(root, "ETag") : NULL;
        if (e && e[0])
            copy_etag(e, etag);
        else
            rc = err_set(err, ERR_PERMANENT, "UploadPartCopy reply without an ETag");
        free(e);
    }
    if (rc < 0)
        err_prefix(err, "from '%.200s' bytes %" PRIu64 "+%" PRIu64, src_key, off, len);
    xmlFreeDoc(doc);
    http_response_release(&resp);
    free(range);
    free(source);
    free(src);
    free(query);
    free(enc);
    free(path);
    return rc < 0 ? fail(err, "copy part", bucket, key) : 0;
}

int s3_multipart_uploads(struct aws *a, const char *bucket, const char *key, char ***ids, size_t *n,
                         struct err *err)
{
    *ids = NULL;
    *n = 0;
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0)
        return fail(err, "list uploads", bucket, key);
    char *path = xasprintf("/%s", bucket);
    char *enc = sigv4_uri_encode(key, 0);
    char *query = xasprintf("max-uploads=%d&prefix=%s&uploads=", S3_PAGE_MAX, enc);
    struct aws_request req = {.service = "s3", .method = "GET", .path = path, .query = query};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    xmlDoc *doc = rc == 0 ? xml_parse(&resp) : NULL;
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (rc == 0 && !root)
        rc = err_set(err, ERR_PERMANENT, "ListMultipartUploads reply is not XML");
    for (xmlNode *c = root ? root->children : NULL; rc == 0 && c; c = c->next) {
        if (!is_element(c, "Upload"))
            continue;
        char *k = child_text(c, "Key"), *id = child_text(c, "UploadId");
        if (k && id && id[0] && strcmp(k, key) == 0) {
            *ids = xrealloc(*ids, sizeof(**ids) * (*n + 1));
            (*ids)[(*n)++] = id;
            id = NULL;
        }
        free(k);
        free(id);
    }
    xmlFreeDoc(doc);
    http_response_release(&resp);
    free(query);
    free(enc);
    free(path);
    if (rc < 0) {
        aws_strv_free(*ids, *n);
        *ids = NULL;
        *n = 0;
        return fail(err, "list uploads", bucket, key);
    }
    return 0;
}

/* ---------------------------------------------------------------- presigned URLs */

char *s3_presign(struct aws *a, const char *method, const char *bucket, const char *key,
                 long expires, struct err *err)
{
    if (!method || (strcmp(method, "GET") && strcmp(method, "PUT") && strcmp(method, "HEAD"))) {
        err_set(err, ERR_PERMANENT, "method must be GET, PUT or HEAD");
        fail(err, "presign", bucket, key);
        return NULL;
    }
    if (check_bucket(bucket, err) < 0 || check_key("key", key, 0, err) < 0) {
        fail(err, "presign", bucket, key);
        return NULL;
    }
    char *path = object_path(bucket, key);
    char *url = aws_presign(a, "s3", method, path, NULL, expires, err);
    free(path);
    if (!url)
        fail(err, "presign", bucket, key);
    return url;
}
