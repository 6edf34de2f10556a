/*
 * conn: a blocking hiredis connection made from xm_config (XM_REDIS_*).
 *
 * conn_open() tries once; conn_open_retry() retries with capped exponential backoff
 * (100 ms doubling to 5 s) until it connects or *stop becomes non-zero. Both return a
 * new context (redisFree it) with the command timeout set, or NULL.
 */
#ifndef XM_CONN_H
#define XM_CONN_H

#include <signal.h>

#include "err.h"

struct redisContext;
struct redisReply;

struct redisContext *conn_open(struct err *err);
struct redisContext *conn_open_retry(volatile sig_atomic_t *stop, struct err *err);

/*
 * Run one command given as an argument vector (strings) and return the reply (new:
 * freeReplyObject it), or NULL with err: transient when the connection failed, permanent
 * when Redis answered with an error. A NULL return with a transient err means the
 * context is dead and must be replaced.
 */
struct redisReply *conn_cmd(struct redisContext *ctx, struct err *err, int argc, const char **argv);

/* Turn a reply (or its absence) into 0 / -1 with err, as conn_cmd does. */
int conn_reply_check(struct redisContext *ctx, const struct redisReply *r, struct err *err);

#endif
