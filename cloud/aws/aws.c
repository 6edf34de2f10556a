#include "aws/aws.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/sigv4.h"
#include "secret.h"
#include "xmalloc.h"

struct aws {
    char *access_key;
    char *secret_key;
    char *session_token;
    char *region;
    char *endpoint[3]; /* s3, ec2, ebs: base URLs without a trailing slash */
    struct http_client *http;
    int max_attempts;
    long base_ms, cap_ms;
    int last_attempts;
    char last_code[128]; /* AWS error code of the last call's final reply, "" if none */
};

static const char *const services[] = {"s3", "ec2", "ebs"};

static int service_index(const char *service)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(service, services[i]) == 0)
            return i;
    return -1;
}

static char *trim_slash(const char *url)
{
    char *s = xstrdup(url);
    size_t n = strlen(s);
    while (n && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

struct aws *aws_new(const struct aws_config *cfg, struct err *err)
{
    if (!cfg->access_key || !cfg->secret_key || !cfg->region || !cfg->access_key[0] ||
        !cfg->secret_key[0] || !cfg->region[0]) {
        err_set(err, ERR_PERMANENT, "aws: access key, secret key and region are required");
        return NULL;
    }
    struct aws *a = xcalloc(1, sizeof(*a));
    a->access_key = xstrdup(cfg->access_key);
    a->secret_key = xstrdup(cfg->secret_key);
    a->session_token = cfg->session_token ? xstrdup(cfg->session_token) : NULL;
    a->region = xstrdup(cfg->region);
    const char *over[3] = {cfg->endpoint_s3, cfg->endpoint_ec2, cfg->endpoint_ebs};
    for (int i = 0; i < 3; i++) {
        if (over[i])
            a->endpoint[i] = trim_slash(over[i]);
        else if (cfg->endpoint)
            a->endpoint[i] = trim_slash(cfg->endpoint);
        else
            a->endpoint[i] = xasprintf("https://%s.%s.amazonaws.com", services[i], a->region);
    }
    a->http = http_client_new(&cfg->http);
    a->max_attempts = cfg->max_attempts ? cfg->max_attempts : 6;
    a->base_ms = cfg->backoff_base_ms ? cfg->backoff_base_ms : 200;
    a->cap_ms = cfg->backoff_cap_ms ? cfg->backoff_cap_ms : 20000;
    return a;
}

void aws_free(struct aws *a)
{
    if (!a)
        return;
    secret_wipe(a->secret_key, strlen(a->secret_key));
    free(a->secret_key);
    if (a->session_token) {
        secret_wipe(a->session_token, strlen(a->session_token));
        free(a->session_token);
    }
    free(a->access_key);
    free(a->region);
    for (int i = 0; i < 3; i++)
        free(a->endpoint[i]);
    http_client_free(a->http);
    free(a);
}

const char *aws_region(const struct aws *a)
{
    return a->region;
}

int aws_last_attempts(const struct aws *a)
{
    return a->last_attempts;
}

const char *aws_last_code(const struct aws *a)
{
    return a->last_code;
}

/* ---------------------------------------------------------------- XML */

static xmlNode *find_path(xmlNode *node, const char *path)
{
    const char *slash = strchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : strlen(path);
    for (xmlNode *n = node; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (strlen((const char *)n->name) == len && memcmp(n->name, path, len) == 0) {
            if (!slash)
                return n;
            xmlNode *hit = find_path(n->children, slash + 1);
            if (hit)
                return hit;
        }
        xmlNode *deeper = find_path(n->children, path);
        if (deeper)
            return deeper;
    }
    return NULL;
}

static xmlDoc *parse(const char *xml, size_t len)
{
    if (!xml || !len || len > INT32_MAX)
        return NULL;
    return xmlReadMemory(xml, (int)len, NULL, NULL,
                         XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                             XML_PARSE_NOWARNING);
}

char *aws_xml_text(const char *xml, size_t len, const char *path)
{
    xmlDoc *doc = parse(xml, len);
    if (!doc)
        return NULL;
    xmlNode *n = find_path(xmlDocGetRootElement(doc), path);
    char *out = NULL;
    if (n) {
        xmlChar *t = xmlNodeGetContent(n);
        out = xstrdup(t ? (const char *)t : "");
        xmlFree(t);
    }
    xmlFreeDoc(doc);
    return out;
}

static void collect(xmlNode *node, const char *name, char ***v, size_t *n)
{
    for (xmlNode *c = node; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (strcmp((const char *)c->name, name) == 0) {
            xmlChar *t = xmlNodeGetContent(c);
            *v = xrealloc(*v, sizeof(**v) * (*n + 1));
            (*v)[(*n)++] = xstrdup(t ? (const char *)t : "");
            xmlFree(t);
        }
        collect(c->children, name, v, n);
    }
}

char **aws_xml_all(const char *xml, size_t len, const char *name, size_t *n)
{
    *n = 0;
    xmlDoc *doc = parse(xml, len);
    if (!doc)
        return NULL;
    char **v = NULL;
    collect(xmlDocGetRootElement(doc), name, &v, n);
    xmlFreeDoc(doc);
    return v;
}

void aws_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

xmlDoc *aws_xml_parse(const char *xml)
{
    size_t len = xml ? strlen(xml) : 0;
    return parse(xml, len);
}

xmlNode *aws_xml_child(xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
            return c;
    return NULL;
}

void aws_xml_copy(xmlNode *n, const char *name, char *buf, size_t size)
{
    buf[0] = '\0';
    xmlNode *c = aws_xml_child(n, name);
    if (!c)
        return;
    xmlChar *t = xmlNodeGetContent(c);
    if (t && strlen((const char *)t) < size)
        memcpy(buf, t, strlen((const char *)t) + 1);
    xmlFree(t);
}

/* ---------------------------------------------------------------- errors */

static const char *const throttles[] = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestThrottled",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
};

static const char *const auth_codes[] = {
    "AuthFailure",          "InvalidAccessKeyId",          "SignatureDoesNotMatch",
    "InvalidClientTokenId", "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredToken",         "ExpiredTokenException",       "InvalidToken",
};

static int in_list(const char *code, const char *const *list, size_t n)
{
    for (size_t i = 0; code && i < n; i++)
        if (strcmp(code, list[i]) == 0)
            return 1;
    return 0;
}

/* The AWS error code, message and request id of a failed reply (new strings or NULL). */
static void error_parts(const struct http_response *resp, char **code, char **msg, char **rid)
{
    *code = *msg = *rid = NULL;
    const char *hdr_rid = http_response_header(resp, "x-amz-request-id");
    if (!hdr_rid)
        hdr_rid = http_response_header(resp, "x-amzn-requestid");
    if (resp->body && resp->body_len && resp->body[0] == '<') {
        *code = aws_xml_text(resp->body, resp->body_len, "Code");
        *msg = aws_xml_text(resp->body, resp->body_len, "Message");
        *rid = aws_xml_text(resp->body, resp->body_len, "RequestId");
        if (!*rid)
            *rid = aws_xml_text(resp->body, resp->body_len, "RequestID");
    } else if (resp->body && resp->body_len && resp->body[0] == '{') {
        /* JSON services (EBS): {"message": ..., "__type"/"code"/"Reason"}. */
        const char *t = http_response_header(resp, "x-amzn-errortype");
        char tbuf[128] = "";
        if (t) {
            size_t n = strcspn(t, ":");
            snprintf(tbuf, sizeof(tbuf), "%.*s", (int)(n < 127 ? n : 127), t);
            *code = xstrdup(tbuf);
        }
        const char *m = strstr(resp->body, "\"message\"");
        if (!m)
            m = strstr(resp->body, "\"Message\"");
        if (m) {
            m = strchr(m + 9, '"');
            const char *e = m ? strchr(m + 1, '"') : NULL;
            if (m && e)
                *msg = xstrndup(m + 1, (size_t)(e - m - 1));
        }
    }
    if (!*rid && hdr_rid)
        *rid = xstrdup(hdr_rid);
}

struct call_ctx {
    struct aws *a;
    const struct aws_request *req;
    char payload_hash[65];
    char url[4096];
};

static int classify(void *arg, const struct http_response *resp, struct err *err)
{
    struct call_ctx *c = arg;
    c->a->last_code[0] = '\0';
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    if (resp->status == 404 && c->req->ok_404)
        return 0;
    char *code, *msg, *rid;
    error_parts(resp, &code, &msg, &rid);
    xstrlcpy(c->a->last_code, code ? code : "", sizeof(c->a->last_code));
    int verdict;
    if (in_list(code, auth_codes, XM_ARRAY_LEN(auth_codes)) || resp->status == 401) {
        err_set(err, ERR_PERMANENT, "AWS rejected the credentials (%s)%s%s",
                code ? code : "HTTP 401", rid ? ", request id " : "", rid ? rid : "");
        verdict = -1;
    } else if (resp->status >= 500 || resp->status == 429 ||
               in_list(code, throttles, XM_ARRAY_LEN(throttles))) {
        err_set(err, ERR_TRANSIENT, "%s %s: %s%s%s (HTTP %ld)", c->req->service, c->req->method,
                code ? code : "error", msg ? ": " : "", msg ? msg : "", resp->status);
        verdict = 1;
    } else {
        err_set(err, ERR_PERMANENT, "%s %s %s: %s%s%s (HTTP %ld%s%s)", c->req->service,
                c->req->method, c->req->path, code ? code : "error", msg ? ": " : "",
                msg ? msg : "", resp->status, rid ? ", request id " : "", rid ? rid : "");
        verdict = -1;
    }
    free(code);
    free(msg);
    free(rid);
    return verdict;
}

static int build(void *arg, struct http_request *hr, struct err *err)
{
    struct call_ctx *c = arg;
    const struct aws_request *req = c->req;
    int si = service_index(req->service);
    const char *base = c->a->endpoint[si];
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;

    const char *lines[24];
    size_t n = 0;
    char host_line[512];
    snprintf(host_line, sizeof(host_line), "Host: %s", host);
    lines[n++] = host_line;
    for (size_t i = 0; i < req->n_headers && n < 20; i++)
        lines[n++] = req->headers[i];

    struct sigv4_creds creds = {c->a->access_key, c->a->secret_key, c->a->session_token};
    struct sigv4_request sr = {.method = req->method,
                               .path = req->path,
                               .query = req->query,
                               .headers = lines,
                               .n_headers = n,
                               .payload_hash = c->payload_hash};
    /* S3 needs x-amz-content-sha256. EBS direct takes it too (AWS's own examples send
     * it), and moto checks the hash of an empty EBS body only through it. */
    struct sigv4_opts opts = {.region = c->a->region,
                              .service = req->service,
                              .when = time(NULL),
                              .content_sha256_header = strcmp(req->service, "s3") == 0 ||
                                                       strcmp(req->service, "ebs") == 0};
    struct sigv4_result res;
    memset(&res, 0, sizeof(res));
    if (sigv4_sign_headers(&creds, &sr, &opts, &res, err) < 0)
        return -1;
    hr->method = req->method;
    hr->url = c->url;
    hr->body = req->body;
    hr->body_len = req->body_len;
    hr->max_response = req->max_response;
    /* curl sends Host itself from the URL; the other lines go as they were signed. */
    for (size_t i = 1; i < n; i++)
        http_request_add_header(hr, "%s", lines[i]);
    for (size_t i = 0; i < res.n_add; i++)
        http_request_add_header(hr, "%s: %s", res.add[i].name, res.add[i].value);
    sigv4_result_release(&res);
    return 0;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    secret_sha256_hex(data ? data : "", data ? len : 0, out);
}

int aws_call(struct aws *a, const struct aws_request *req, struct http_response *resp,
             struct err *err)
{
    if (service_index(req->service) < 0)
        return err_set(err, ERR_PERMANENT, "aws: unknown service '%s'", req->service);
    struct call_ctx c = {.a = a, .req = req};
    a->last_code[0] = '\0';
    if (req->payload_sha256)
        xstrlcpy(c.payload_hash, req->payload_sha256, sizeof(c.payload_hash));
    else
        sha256_hex(req->body, req->body_len, c.payload_hash);
    int n =
        snprintf(c.url, sizeof(c.url), "%s%s%s%s", a->endpoint[service_index(req->service)],
                 req->path, req->query && req->query[0] ? "?" : "", req->query ? req->query : "");
    if (n < 0 || (size_t)n >= sizeof(c.url))
        return err_set(err, ERR_PERMANENT, "aws: URL too long for %s %s", req->service,
                       req->method);
    struct http_retry policy = {.max_attempts = a->max_attempts,
                                .base_ms = a->base_ms,
                                .cap_ms = a->cap_ms,
                                .attempts_out = &a->last_attempts};
    return http_send_retry(a->http, build, classify, &c, &policy, resp, err);
}

char *aws_presign(struct aws *a, const char *service, const char *method, const char *path,
                  const char *query, long expires, struct err *err)
{
    int si = service_index(service);
    if (si < 0) {
        err_set(err, ERR_PERMANENT, "aws: unknown service '%s'", service);
        return NULL;
    }
    const char *base = a->endpoint[si];
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;
    char host_line[512];
    snprintf(host_line, sizeof(host_line), "Host: %s", host);
    const char *lines[] = {host_line};
    struct sigv4_creds creds = {a->access_key, a->secret_key, a->session_token};
    struct sigv4_request sr = {.method = method,
                               .path = path,
                               .query = query,
                               .headers = lines,
                               .n_headers = 1,
                               .payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    struct sigv4_opts opts = {
        .region = a->region, .service = service, .when = time(NULL), .expires = expires};
    struct sigv4_result res;
    memset(&res, 0, sizeof(res));
    if (sigv4_presign(&creds, &sr, &opts, &res, err) < 0)
        return NULL;
    char *url = xasprintf("%s%s?%s", base, path, res.query);
    sigv4_result_release(&res);
    return url;
}

/* ---------------------------------------------------------------- EC2 */

char *aws_form_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = xmalloc(3 * n + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* A form body spells a space '+', as the AWS SDKs send it (moto re-encodes the form that
 * way before it checks the signature, so a "%20" fails there; AWS takes either). */
static char *form_body_encode(const char *s)
{
    char *out = aws_form_encode(s), *w = out;
    for (const char *r = out; *r; r++) {
        if (r[0] == '%' && r[1] == '2' && r[2] == '0') {
            *w++ = '+';
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return out;
}

int aws_ec2(struct aws *a, const char *action, const char *const *params, char **xml,
            struct err *err)
{
    /* Action=..&Version=..&k=v...: EC2 takes the Query API as a form POST. */
    char *body = xasprintf("Action=%s&Version=2016-11-15", action);
    for (size_t i = 0; params && params[i] && params[i + 1]; i += 2) {
        char *k = form_body_encode(params[i]), *v = form_body_encode(params[i + 1]);
        char *next = xasprintf("%s&%s=%s", body, k, v);
        free(k);
        free(v);
        free(body);
        body = next;
    }
    struct aws_request req = {.service = "ec2",
                              .method = "POST",
                              .path = "/",
                              .headers = {"Content-Type: application/x-www-form-urlencoded; "
                                          "charset=utf-8"},
                              .n_headers = 1,
                              .body = body,
                              .body_len = strlen(body)};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc == 0) {
        *xml = resp.body ? resp.body : xstrdup("");
        resp.body = NULL;
    } else {
        err_prefix(err, "ec2 %s", action);
    }
    http_response_release(&resp);
    free(body);
    return rc;
}
