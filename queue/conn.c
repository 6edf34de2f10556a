#include "conn.h"

#include <hiredis/hiredis.h>
#include <string.h>
#include <time.h>

#include "config.h"

struct redisContext *conn_open(struct err *err)
{
    struct timeval tv = {.tv_sec = xm_config.redis_timeout_ms / 1000,
                         .tv_usec = (xm_config.redis_timeout_ms % 1000) * 1000};
    redisContext *ctx;
    if (xm_config.redis_socket && xm_config.redis_socket[0])
        ctx = redisConnectUnixWithTimeout(xm_config.redis_socket, tv);
    else
        ctx = redisConnectWithTimeout(xm_config.redis_host, (int)xm_config.redis_port, tv);
    if (!ctx) {
        err_set(err, ERR_TRANSIENT, "redis: cannot allocate a connection");
        return NULL;
    }
    if (ctx->err) {
        if (xm_config.redis_socket && xm_config.redis_socket[0])
            err_set(err, ERR_TRANSIENT, "redis at '%s': %s", xm_config.redis_socket, ctx->errstr);
        else
            err_set(err, ERR_TRANSIENT, "redis at '%s:%lld': %s", xm_config.redis_host,
                    xm_config.redis_port, ctx->errstr);
        redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, tv);
    /* TCP keep-alive only exists for TCP: on a Unix socket it fails and leaves the
     * context in error. */
    if (ctx->connection_type == REDIS_CONN_TCP)
        redisEnableKeepAlive(ctx);
    return ctx;
}

struct redisContext *conn_open_retry(volatile sig_atomic_t *stop, struct err *err)
{
    long long delay_ms = 100;
    for (;;) {
        redisContext *ctx = conn_open(err);
        if (ctx || (stop && *stop))
            return ctx;
        struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
    }
}

int conn_reply_check(struct redisContext *ctx, const struct redisReply *r, struct err *err)
{
    if (!r)
        return err_set(err, ERR_TRANSIENT, "redis: %s", ctx->errstr[0] ? ctx->errstr : "no reply");
    if (r->type == REDIS_REPLY_ERROR) {
        /* LOADING (restart replaying the AOF) and similar states pass by themselves. */
        if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY ", 5) == 0 ||
            strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0)
            return err_set(err, ERR_TRANSIENT, "redis: %s", r->str);
        return err_set(err, ERR_PERMANENT, "redis: %s", r->str);
    }
    return 0;
}

struct redisReply *conn_cmd(struct redisContext *ctx, struct err *err, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, NULL);
    if (conn_reply_check(ctx, r, err) < 0) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    return r;
}
