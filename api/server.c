#include "server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "api.h"
#include "cmd.h"
#include "config.h"
#include "conn.h"
#include "job.h"
#include "jsonschema.h"
#include "keys.h"
#include "log.h"
#include "secret.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- metrics */

/* Status codes counted one by one; anything else lands in "other". */
static const int counted_codes[] = {200, 201, 202, 204, 400, 401, 403,
                                    404, 405, 409, 413, 415, 500, 503};
#define N_CODES (sizeof(counted_codes) / sizeof(counted_codes[0]) + 1)
#define MAX_ROUTES 64

static const struct route *g_routes;
static size_t g_n_routes;
/* [route index or g_n_routes for "unmatched"][code index] */
static atomic_ullong g_requests[MAX_ROUTES + 1][N_CODES];

static size_t code_index(int code)
{
    for (size_t i = 0; i < N_CODES - 1; i++)
        if (counted_codes[i] == code)
            return i;
    return N_CODES - 1;
}

char *api_metrics_requests(void)
{
    char *out = xstrdup("# HELP xm_api_requests_total HTTP requests answered, by route and "
                        "status code.\n# TYPE xm_api_requests_total counter\n");
    for (size_t r = 0; r <= g_n_routes; r++) {
        const char *name = r < g_n_routes ? g_routes[r].name : "unmatched";
        for (size_t c = 0; c < N_CODES; c++) {
            unsigned long long n = atomic_load(&g_requests[r][c]);
            if (!n)
                continue;
            char code[16];
            if (c < N_CODES - 1)
                snprintf(code, sizeof(code), "%d", counted_codes[c]);
            else
                xstrlcpy(code, "other", sizeof(code));
            char *next = xasprintf("%sxm_api_requests_total{route=\"%s\",code=\"%s\"} %llu\n", out,
                                   name, code, n);
            free(out);
            out = next;
        }
    }
    return out;
}

/* ---------------------------------------------------------------- threads */

#define TOKEN_CACHE 64

struct token_cache_entry {
    char sha[65];
    char name[64];
    long long expires_ms;
};

struct api_thread {
    int index;
    pthread_t tid;
    struct event_base *base;
    struct evhttp *http;
    struct evconnlistener *listener;
    redisContext *redis;
    struct jsonschema_set *schemas;
    struct token_cache_entry tokens[TOKEN_CACHE];
    size_t next_token_slot;
};

struct event_base *api_base(struct api_req *r)
{
    return r->thread->base;
}

const struct jsonschema_set *api_schemas(struct api_req *r)
{
    return r->thread->schemas;
}

/* ---------------------------------------------------------------- redis */

/* 1 when Redis closed the idle connection (it restarted): the socket reads as ended.
 * Peeking consumes nothing, so a live connection is left as it was. */
static int redis_closed(const redisContext *c)
{
    char b;
    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

struct redisContext *api_redis(struct api_req *r, struct err *err)
{
    if (!r->thread->redis)
        r->thread->redis = conn_open(err);
    return r->thread->redis;
}

void api_redis_lost(struct api_req *r)
{
    if (r->thread->redis) {
        redisFree(r->thread->redis);
        r->thread->redis = NULL;
    }
}

struct redisReply *api_cmd(struct api_req *r, struct err *err, int argc, const char **argv)
{
    redisContext *c = api_redis(r, err);
    if (!c)
        return NULL;
    redisReply *reply = conn_cmd(c, err, argc, argv);
    if (!reply && err && err->kind == ERR_TRANSIENT)
        api_redis_lost(r);
    return reply;
}

void api_unwatch(struct api_req *r)
{
    struct err err = {0};
    redisReply *u = api_cmd(r, &err, 1, (const char *[]){"UNWATCH"});
    if (u)
        freeReplyObject(u);
}

int api_pipeline(struct api_req *r, const struct cmd *cmds, int n, struct redisReply **out,
                 struct err *err)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    redisContext *c = api_redis(r, err);
    if (!c)
        return -1;
    for (int i = 0; i < n; i++)
        cmd_append(c, &cmds[i]);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (redisGetReply(c, (void **)&out[i]) != REDIS_OK) {
            err_set(err, ERR_TRANSIENT, "redis: %s", c->errstr);
            api_redis_lost(r);
            return -1;
        }
        if (rc == 0 && out[i]->type == REDIS_REPLY_ERROR)
            rc = conn_reply_check(c, out[i], err);
    }
    return rc;
}

void api_free_replies(struct redisReply **out, int n)
{
    for (int i = 0; i < n; i++) {
        if (out[i])
            freeReplyObject(out[i]);
        out[i] = NULL;
    }
}

unsigned char api_master_key[32];

void api_new_uuid(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    char id[33];
    job_new_id(id); /* 16 random bytes as hex */
    for (int i = 0; i < 16; i++) {
        int hi = strchr(hex, id[2 * i]) - hex, lo = strchr(hex, id[2 * i + 1]) - hex;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/* ---------------------------------------------------------------- replies */

static void add_common_headers(struct evhttp_request *req, const char *type)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
}

static const char *reason(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 503:
        return "Service Unavailable";
    default:
        return code >= 500 ? "Internal Server Error" : "Error";
    }
}

void api_reply_text(struct api_req *r, int code, const char *content_type, const char *text,
                    size_t len)
{
    XM_ASSERT(r->status == 0);
    r->status = code;
    struct evbuffer *b = evbuffer_new();
    if (len)
        evbuffer_add(b, text, len);
    add_common_headers(r->req, content_type);
    evhttp_send_reply(r->req, code, reason(code), b);
    evbuffer_free(b);
}

void api_reply_json(struct api_req *r, int code, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    api_reply_text(r, code, "application/json", text ? text : "", text ? strlen(text) : 0);
    free(text);
}

/* s as a JSON string; on invalid UTF-8 the same text with every byte >= 0x80 as '?'. */
static json_t *json_string_lossy(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

json_t *api_error_body(const char *ecode, const char *path, const char *msg)
{
    json_t *e = json_pack("{s:s, s:o}", "code", ecode, "message", json_string_lossy(msg));
    if (e && path)
        json_object_set_new(e, "path", json_string_lossy(path));
    return e ? json_pack("{s:o}", "error", e) : NULL;
}

void api_reply_error(struct api_req *r, int code, const char *ecode, const char *path,
                     const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_reply_json(r, code, api_error_body(ecode, path, msg));
}

void api_reply_unavailable(struct api_req *r, const struct err *err)
{
    char q[ERR_MSG_MAX + 8];
    log_warn("redis unavailable", "route=%s error=%s", r->route ? r->route->name : "-",
             log_quote(q, sizeof(q), err ? err->msg : ""));
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
    api_reply_error(r, 503, "unavailable", NULL,
                    "the state store is unreachable; try again shortly");
}

char *api_query(struct api_req *r, const char *name)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
    const char *q = evhttp_uri_get_query(uri);
    if (!q)
        return NULL;
    struct evkeyvalq params = {0};
    char *out = NULL;
    if (evhttp_parse_query_str(q, &params) == 0) {
        const char *v = evhttp_find_header(&params, name);
        if (v)
            out = xstrdup(v);
    }
    evhttp_clear_headers(&params);
    return out;
}

/* ---------------------------------------------------------------- routing */

/* Path segments captured by {} are plain identifiers; anything else does not match. */
static int segment_ok(const char *s, size_t len)
{
    if (len == 0 || len >= API_PARAM_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

static int match(const char *pattern, const char *path, struct api_req *r)
{
    int n = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (p[0] == '{' && p[1] == '}') {
            const char *end = strchr(s, '/');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (!segment_ok(s, len) || n >= API_MAX_PARAMS)
                return 0;
            memcpy(r->params[n], s, len);
            r->params[n][len] = '\0';
            n++;
            s += len;
            p += 2;
        } else if (*p == *s) {
            p++;
            s++;
        } else {
            return 0;
        }
    }
    if (*p || *s)
        return 0;
    r->n_params = n;
    return 1;
}

static const char *method_name(int m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* ---------------------------------------------------------------- auth */

/* The bearer token of the request, or NULL. Points into the request's headers. */
static const char *bearer(struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t len = strlen(h);
    if (len == 0 || len > 256)
        return NULL;
    return h;
}

static long long now_ms(void)
{
    return job_now_us() / 1000;
}

/* 1 when the request carries a valid API token (name into r->token_name), 0 when not,
 * -1 when Redis could not be asked (err). */
static int check_token(struct api_req *r, struct err *err)
{
    const char *tok = bearer(r->req);
    if (!tok)
        return 0;
    char sha[65];
    secret_sha256_hex(tok, strlen(tok), sha);
    struct api_thread *t = r->thread;
    long long now = now_ms();
    for (size_t i = 0; i < TOKEN_CACHE; i++) {
        if (t->tokens[i].expires_ms > now && secret_equal(t->tokens[i].sha, sha, 64)) {
            xstrlcpy(r->token_name, t->tokens[i].name, sizeof(r->token_name));
            return 1;
        }
    }
    char key[128];
    snprintf(key, sizeof(key), XM_TOKEN_FMT, sha);
    const char *argv[] = {"HGET", key, "name"};
    redisReply *rep = api_cmd(r, err, 3, argv);
    if (!rep)
        return -1;
    int ok = rep->type == REDIS_REPLY_STRING;
    if (ok) {
        xstrlcpy(r->token_name, rep->str, sizeof(r->token_name));
        struct token_cache_entry *e = &t->tokens[t->next_token_slot++ % TOKEN_CACHE];
        memcpy(e->sha, sha, sizeof(e->sha));
        xstrlcpy(e->name, rep->str, sizeof(e->name));
        e->expires_ms = now + xm_config.api_token_cache_ms;
    }
    freeReplyObject(rep);
    return ok;
}

/* The discovery callback authenticates with its migration's own token, kept as SHA-256
 * in xm:mig:<id> field callback_sha. 1 ok, 0 wrong or unknown migration, -1 Redis. */
static int check_callback_token(struct api_req *r, struct err *err)
{
    const char *tok = bearer(r->req);
    if (!tok)
        return 0;
    char sha[65];
    secret_sha256_hex(tok, strlen(tok), sha);
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, r->params[0]);
    const char *argv[] = {"HGET", key, "callback_sha"};
    redisReply *rep = api_cmd(r, err, 3, argv);
    if (!rep)
        return -1;
    int ok = rep->type == REDIS_REPLY_STRING && rep->len == 64 && secret_equal(rep->str, sha, 64);
    freeReplyObject(rep);
    if (ok)
        xstrlcpy(r->token_name, "callback", sizeof(r->token_name));
    return ok;
}

/* ---------------------------------------------------------------- bodies */

static int json_content_type(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Parse and validate the body against the route's schema; replies itself on failure. */
static int read_body(struct api_req *r)
{
    if (!json_content_type(r->req)) {
        api_reply_error(r, 415, "unsupported_media_type", NULL,
                        "the request body must be application/json");
        return -1;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    if ((long long)len > xm_config.api_max_body) {
        api_reply_error(r, 413, "too_large", NULL, "the request body is over %lld bytes",
                        xm_config.api_max_body);
        return -1;
    }
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    json_error_t jerr;
    json_t *body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        api_reply_error(r, 400, "invalid_json", NULL, "the body is not valid JSON: %s (at byte %d)",
                        jerr.text, jerr.position);
        return -1;
    }
    const struct jsonschema *s = jsonschema_set_get(r->thread->schemas, r->route->schema);
    XM_ASSERT(s != NULL); /* checked at start-up */
    struct jsonschema_error ve;
    if (jsonschema_validate(s, body, &ve) < 0) {
        json_decref(body);
        api_reply_error(r, 400, "invalid_request", ve.path, "%s%s%s", ve.path,
                        ve.path[0] ? ": " : "", ve.message);
        return -1;
    }
    r->body = body;
    return 0;
}

/* ---------------------------------------------------------------- dispatch */

static void count(const struct api_req *r, size_t route_index)
{
    atomic_fetch_add(&g_requests[route_index][code_index(r->status)], 1);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct api_thread *t = arg;
    struct api_req r;
    memset(&r, 0, sizeof(r));
    r.req = req;
    r.thread = t;
    long long t0 = job_now_us();

    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    int method = (int)evhttp_request_get_command(req);
    size_t route_index = g_n_routes;
    char allow[128] = "";
    for (size_t i = 0; i < g_n_routes && path; i++) {
        struct api_req probe;
        if (!match(g_routes[i].pattern, path, &probe))
            continue;
        if (g_routes[i].method == method) {
            route_index = i;
            memcpy(r.params, probe.params, sizeof(r.params));
            r.n_params = probe.n_params;
            break;
        }
        size_t o = strlen(allow);
        snprintf(allow + o, sizeof(allow) - o, "%s%s", o ? ", " : "",
                 method_name(g_routes[i].method));
    }

    if (route_index == g_n_routes) {
        if (allow[0]) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            api_reply_error(&r, 405, "method_not_allowed", NULL, "%s is not allowed here; use %s",
                            method_name(method), allow);
        } else {
            api_reply_error(&r, 404, "not_found", NULL, "no such resource");
        }
        goto out;
    }
    r.route = &g_routes[route_index];
    /* Once per request, before any command: reconnect now rather than fail this request
     * on a connection Redis already closed (after a Redis restart each thread would
     * otherwise answer one 503). */
    if (t->redis && redis_closed(t->redis))
        api_redis_lost(&r);

    struct err err = {0};
    if (r.route->auth != AUTH_NONE) {
        int ok =
            r.route->auth == AUTH_TOKEN ? check_token(&r, &err) : check_callback_token(&r, &err);
        if (ok < 0) {
            api_reply_unavailable(&r, &err);
            goto out;
        }
        if (!ok && (r.route->auth == AUTH_TOKEN || !bearer(req))) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            api_reply_error(&r, 401, "unauthorized", NULL, "a valid bearer token is required");
            goto out;
        }
        if (!ok) {
            api_reply_error(&r, 403, "forbidden", NULL,
                            "the callback token does not match this migration");
            goto out;
        }
    }
    if (r.route->schema && read_body(&r) < 0)
        goto out;

    r.route->handle(&r);
    if (r.status == 0) {
        log_error("handler sent no reply", "route=%s", r.route->name);
        api_reply_error(&r, 500, "internal", NULL, "internal error");
    }
out:
    json_decref(r.body);
    count(&r, route_index);
    /* One line per request: debug for the ordinary ones, warn when we failed. */
    xm_log(r.status >= 500 ? LOG_WARN : LOG_DEBUG, "request",
           "method=%s route=%s status=%d us=%lld token=%s", method_name(method),
           r.route ? r.route->name : "unmatched", r.status, job_now_us() - t0,
           r.token_name[0] ? r.token_name : "-");
}

/* ---------------------------------------------------------------- start-up */

static struct api_thread *g_threads;
static size_t g_n_threads;

static void *thread_main(void *arg)
{
    struct api_thread *t = arg;
    event_base_dispatch(t->base);
    return NULL;
}

static int thread_init(struct api_thread *t, struct jsonschema_set *schemas, struct err *err)
{
    t->schemas = schemas;
    t->base = event_base_new();
    t->http = evhttp_new(t->base);
    if (!t->base || !t->http)
        return err_set(err, ERR_PERMANENT, "cannot create an event loop");
    evhttp_set_max_body_size(t->http, xm_config.api_max_body);
    evhttp_set_max_headers_size(t->http, xm_config.api_max_headers);
    evhttp_set_timeout(t->http, (int)xm_config.api_timeout_s);
    evhttp_set_allowed_methods(t->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(t->http, on_request, t);

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)xm_config.api_port);
    if (inet_pton(AF_INET, xm_config.api_addr, &sin.sin_addr) != 1)
        return err_set(err, ERR_PERMANENT, "XM_API_ADDR: '%s' is not an IPv4 address",
                       xm_config.api_addr);
    t->listener = evconnlistener_new_bind(t->base, NULL, NULL,
                                          LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                          1024, (struct sockaddr *)&sin, sizeof(sin));
    if (!t->listener)
        return err_set(err, ERR_PERMANENT, "cannot listen on %s:%lld", xm_config.api_addr,
                       xm_config.api_port);
    if (!evhttp_bind_listener(t->http, t->listener))
        return err_set(err, ERR_PERMANENT, "cannot serve on %s:%lld", xm_config.api_addr,
                       xm_config.api_port);
    return 0;
}

/* Store XM_BOOTSTRAP_TOKEN's hash when no API token exists yet, so a fresh install has
 * a way in; afterwards tokens are made with `xm-api token create`. */
static void bootstrap_token(void)
{
    if (!xm_config.bootstrap_token || !xm_config.bootstrap_token[0])
        return;
    struct err err = {0};
    redisContext *c = conn_open(&err);
    if (!c) {
        log_warn("bootstrap token not stored: redis unreachable", "error=\"%s\"", err.msg);
        return;
    }
    char sha[65], key[128], now[32];
    secret_sha256_hex(xm_config.bootstrap_token, strlen(xm_config.bootstrap_token), sha);
    snprintf(key, sizeof(key), XM_TOKEN_FMT, sha);
    snprintf(now, sizeof(now), "%lld", now_ms());
    redisReply *n = redisCommand(c, "SCARD %s", XM_TOKENS);
    if (n && n->type == REDIS_REPLY_INTEGER && n->integer == 0) {
        redisReply *a = redisCommand(c, "MULTI");
        freeReplyObject(a);
        a = redisCommand(c, "HSET %s name bootstrap created %s", key, now);
        freeReplyObject(a);
        a = redisCommand(c, "SADD %s %s", XM_TOKENS, sha);
        freeReplyObject(a);
        a = redisCommand(c, "EXEC");
        if (a)
            freeReplyObject(a);
        log_info("bootstrap token stored", "name=bootstrap");
    }
    if (n)
        freeReplyObject(n);
    redisFree(c);
}

int api_serve(const struct route *routes, size_t n_routes, struct jsonschema_set *schemas)
{
    XM_ASSERT(n_routes <= MAX_ROUTES);
    g_routes = routes;
    g_n_routes = n_routes;
    for (size_t i = 0; i < n_routes; i++) {
        if (routes[i].schema && !jsonschema_set_get(schemas, routes[i].schema)) {
            log_write(LOG_FATAL, "missing schema", "route=%s schema=%s dir=%s", routes[i].name,
                      routes[i].schema, xm_config.schemas_dir);
            return 2;
        }
    }
    evthread_use_pthreads();

    /* Block the stop signals in every thread; the main thread waits for them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    bootstrap_token();

    g_n_threads = (size_t)xm_config.api_threads;
    g_threads = xcalloc(g_n_threads, sizeof(*g_threads));
    int rc = 0;
    for (size_t i = 0; i < g_n_threads; i++) {
        struct err err = {0};
        g_threads[i].index = (int)i;
        if (thread_init(&g_threads[i], schemas, &err) < 0) {
            log_write(LOG_FATAL, "cannot start", "error=\"%s\"", err.msg);
            rc = 2;
            g_n_threads = i + 1;
            goto out;
        }
    }
    for (size_t i = 0; i < g_n_threads; i++)
        pthread_create(&g_threads[i].tid, NULL, thread_main, &g_threads[i]);
    log_info("xm-api listening", "addr=%s port=%lld threads=%zu", xm_config.api_addr,
             xm_config.api_port, g_n_threads);

    int sig = 0;
    sigwait(&stop, &sig);
    log_info("xm-api stopping", "signal=%d", sig);
    for (size_t i = 0; i < g_n_threads; i++)
        event_base_loopexit(g_threads[i].base, NULL);
    for (size_t i = 0; i < g_n_threads; i++)
        pthread_join(g_threads[i].tid, NULL);
out:
    for (size_t i = 0; i < g_n_threads; i++) {
        struct api_thread *t = &g_threads[i];
        if (t->http)
            evhttp_free(t->http);
        if (t->base)
            event_base_free(t->base);
        if (t->redis)
            redisFree(t->redis);
    }
    free(g_threads);
    return rc;
}
