/*
 * server: xm-api's HTTP core on libevent's evhttp.
 *
 * XM_API_THREADS threads each run their own event_base, evhttp and blocking Redis
 * connection; they share one listening port through SO_REUSEPORT, so the kernel spreads
 * connections over them and no lock is taken on the request path. A request goes:
 *
 *   route match (404 unknown path, 405 known path with another method)
 *   -> auth (401 without a valid bearer token; the discovery callback takes its
 *      migration's own token instead: 403 when it is wrong)
 *   -> body: 413 over XM_API_MAX_BODY (evhttp answers that itself), 415 when not
 *      application/json, 400 for invalid JSON or a schema violation naming the path
 *   -> handler, which answers through api_reply_*; Redis unreachable -> 503 with
 *      Retry-After, and the next request tries to reconnect.
 *
 * Errors have one shape: {"error": {"code": "...", "message": "...", "path": "..."}}.
 * No reply and no log line carries a secret (tokens, keys, passwords).
 */
#ifndef XM_API_SERVER_H
#define XM_API_SERVER_H

#include <jansson.h>

#include "err.h"

struct evhttp_request;
struct redisContext;
struct redisReply;
struct jsonschema_set;
struct api_thread;

#define API_MAX_PARAMS 4
#define API_PARAM_MAX 160

enum api_auth {
    AUTH_NONE,     /* /healthz only */
    AUTH_TOKEN,    /* Authorization: Bearer <API token> */
    AUTH_CALLBACK, /* Authorization: Bearer <the migration's callback token> */
};

struct api_req;

struct route {
    int method;          /* EVHTTP_REQ_* */
    const char *pattern; /* "/v1/migrations/{}/blueprint": {} captures one segment */
    const char *name;    /* metrics label */
    enum api_auth auth;
    const char *schema; /* request body schema name, or NULL for no body */
    void (*handle)(struct api_req *r);
};

/* One request being handled. Borrowed by handlers for the duration of the call. */
struct api_req {
    struct evhttp_request *req;
    struct api_thread *thread;
    const struct route *route;
    char params[API_MAX_PARAMS][API_PARAM_MAX];
    int n_params;
    json_t *body; /* parsed and validated body (owned by the server), or NULL */
    char token_name[64];
    int status; /* set by api_reply_* */
};

/* Start the server and run until SIGTERM/SIGINT. Returns the process exit code. */
int api_serve(const struct route *routes, size_t n_routes, struct jsonschema_set *schemas);

/* ---- replies (exactly one per request) ---- */

/* Reply with a JSON body (stolen). */
void api_reply_json(struct api_req *r, int code, json_t *body);
/* Reply with the error shape; path may be NULL. */
void api_reply_error(struct api_req *r, int code, const char *ecode, const char *path,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* 503 with Retry-After, for a Redis failure (err is logged, not sent). */
void api_reply_unavailable(struct api_req *r, const struct err *err);
/* Reply with a text body of the given content type. */
void api_reply_text(struct api_req *r, int code, const char *content_type, const char *text,
                    size_t len);

/* ---- Redis, for handlers ---- */

/*
 * The thread's Redis connection, connecting if needed. NULL when Redis is unreachable:
 * the handler answers api_reply_unavailable(). Borrowed.
 */
struct redisContext *api_redis(struct api_req *r, struct err *err);
/*
 * Run a command (argument vector) on the thread's connection. Returns a new reply or
 * NULL with err; on a transport failure the connection is dropped (err transient).
 */
struct redisReply *api_cmd(struct api_req *r, struct err *err, int argc, const char **argv);
/* UNWATCH after a check that decided not to run the transaction (a failure is harmless:
 * the next EXEC on the connection would only abort). */
void api_unwatch(struct api_req *r);
/*
 * Pipeline n commands (each an argument vector in cmds[i]) and read every reply into
 * out[i] (new; free with api_free_replies). 0, or -1 with err: transient for a transport
 * failure (the connection is dropped), permanent when Redis answered an error.
 */
struct cmd;
int api_pipeline(struct api_req *r, const struct cmd *cmds, int n, struct redisReply **out,
                 struct err *err);
void api_free_replies(struct redisReply **out, int n);

/* Drop the connection after a transport failure seen elsewhere (pipelining). */
void api_redis_lost(struct api_req *r);

/* The thread's schema set (borrowed) for handlers validating inner documents. */
const struct jsonschema_set *api_schemas(struct api_req *r);

/* Query parameter value (new string, or NULL). */
char *api_query(struct api_req *r, const char *name);

/* The thread's event base (for SSE timers). */
struct event_base *api_base(struct api_req *r);

/* The AES-256-GCM key for secrets at rest (from XM_MASTER_KEY), set once at start-up. */
extern unsigned char api_master_key[32];

/* A new random UUID (version 4) into out. */
void api_new_uuid(char out[37]);

/* Counters for /metrics: requests by route and status code. */
char *api_metrics_requests(void);

#endif
