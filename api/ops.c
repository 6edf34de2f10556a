/*
 * Operations endpoints: /healthz (no auth: is Redis reachable?) and /metrics
 * (Prometheus text format: requests by route and code, queue length, lag and pending
 * per phase, delayed retries, dead letters, live workers, migrations by status).
 */
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cmd.h"
#include "keys.h"
#include "server.h"
#include "xmalloc.h"

static const char *const phases[] = {"discovery", "network", "prep", "clone", "convert", "import"};
#define N_PHASES (sizeof(phases) / sizeof(phases[0]))

void ops_healthz(struct api_req *r)
{
    struct err err = {0};
    redisReply *p = api_cmd(r, &err, 1, (const char *[]){"PING"});
    if (!p) {
        api_reply_unavailable(r, &err);
        return;
    }
    freeReplyObject(p);
    api_reply_json(r, 200, json_pack("{s:s, s:s}", "status", "ok", "redis", "ok"));
}

/* Append printf output to a growing string. */
static void add(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char *next = xasprintf("%s%s", *out, buf);
    free(*out);
    *out = next;
}

void ops_metrics(struct api_req *r)
{
    struct err err = {0};
    /* Per phase: XLEN, XINFO GROUPS (lag and pending), ZCARD of the delayed set. */
    struct cmd c[3 * N_PHASES + 3];
    int n = 0;
    for (size_t i = 0; i < N_PHASES; i++) {
        cmd_init(&c[n]);
        cmd_arg(&c[n], "XLEN");
        cmd_argf(&c[n++], XM_QUEUE_FMT, phases[i]);
        cmd_init(&c[n]);
        cmd_arg(&c[n], "XPENDING");
        cmd_argf(&c[n], XM_QUEUE_FMT, phases[i]);
        cmd_arg(&c[n++], XM_GROUP);
        cmd_init(&c[n]);
        cmd_arg(&c[n], "ZCARD");
        cmd_argf(&c[n++], XM_DELAYED_FMT, phases[i]);
    }
    cmd_init(&c[n]);
    cmd_arg(&c[n], "XLEN");
    cmd_arg(&c[n++], XM_DEAD);
    cmd_init(&c[n]);
    cmd_arg(&c[n], "ZRANGE");
    cmd_arg(&c[n], XM_MIGS);
    cmd_arg(&c[n], "0");
    cmd_arg(&c[n++], "9999");
    cmd_init(&c[n]);
    cmd_arg(&c[n], "XLEN");
    cmd_arg(&c[n++], XM_EVENTS);
    redisReply *rep[3 * N_PHASES + 3];
    int rc = api_pipeline(r, c, n, rep, &err);
    for (int i = 0; i < n; i++)
        cmd_release(&c[i]);
    /* XPENDING on a stream without the group answers an error: not a failure here. */
    if (rc < 0 && err.kind == ERR_TRANSIENT) {
        api_free_replies(rep, n);
        api_reply_unavailable(r, &err);
        return;
    }

    char *out = api_metrics_requests();
    add(&out, "# HELP xm_queue_length Entries in the phase stream (all kept, acked or not).\n"
              "# TYPE xm_queue_length gauge\n");
    for (size_t i = 0; i < N_PHASES; i++)
        add(&out, "xm_queue_length{phase=\"%s\"} %lld\n", phases[i],
            rep[3 * i]->type == REDIS_REPLY_INTEGER ? rep[3 * i]->integer : 0);
    add(&out, "# HELP xm_queue_pending Jobs delivered to a worker and not yet settled.\n"
              "# TYPE xm_queue_pending gauge\n");
    for (size_t i = 0; i < N_PHASES; i++) {
        const redisReply *p = rep[3 * i + 1];
        long long pending = p->type == REDIS_REPLY_ARRAY && p->elements >= 1 &&
                                    p->element[0]->type == REDIS_REPLY_INTEGER
                                ? p->element[0]->integer
                                : 0;
        add(&out, "xm_queue_pending{phase=\"%s\"} %lld\n", phases[i], pending);
    }
    add(&out, "# HELP xm_queue_delayed Jobs waiting for a retry.\n"
              "# TYPE xm_queue_delayed gauge\n");
    for (size_t i = 0; i < N_PHASES; i++)
        add(&out, "xm_queue_delayed{phase=\"%s\"} %lld\n", phases[i],
            rep[3 * i + 2]->type == REDIS_REPLY_INTEGER ? rep[3 * i + 2]->integer : 0);
    size_t k = 3 * N_PHASES;
    add(&out,
        "# HELP xm_dead_letters Jobs in xm:dead.\n# TYPE xm_dead_letters gauge\n"
        "xm_dead_letters %lld\n",
        rep[k]->type == REDIS_REPLY_INTEGER ? rep[k]->integer : 0);
    add(&out,
        "# HELP xm_events Entries kept in xm:events.\n# TYPE xm_events gauge\n"
        "xm_events %lld\n",
        rep[k + 2]->type == REDIS_REPLY_INTEGER ? rep[k + 2]->integer : 0);

    /* Migrations by status. */
    const redisReply *ids = rep[k + 1];
    size_t nm = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
    struct cmd *mc = xcalloc(nm ? nm : 1, sizeof(*mc));
    redisReply **mr = xcalloc(nm ? nm : 1, sizeof(*mr));
    for (size_t i = 0; i < nm; i++) {
        cmd_init(&mc[i]);
        cmd_arg(&mc[i], "HGET");
        cmd_argf(&mc[i], XM_MIG_FMT, ids->element[i]->str);
        cmd_arg(&mc[i], "status");
    }
    rc = nm ? api_pipeline(r, mc, (int)nm, mr, &err) : 0;
    static const char *const statuses[] = {
        "discovering", "awaiting_approval", "approved", "migrating", "done", "failed", "cancelled"};
    long long counts[sizeof(statuses) / sizeof(statuses[0])] = {0};
    for (size_t i = 0; rc == 0 && i < nm; i++)
        for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++)
            if (mr[i]->type == REDIS_REPLY_STRING && strcmp(mr[i]->str, statuses[s]) == 0)
                counts[s]++;
    add(&out, "# HELP xm_migrations Migrations by status.\n# TYPE xm_migrations gauge\n");
    for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++)
        add(&out, "xm_migrations{status=\"%s\"} %lld\n", statuses[s], counts[s]);
    api_free_replies(mr, (int)nm);
    for (size_t i = 0; i < nm; i++)
        cmd_release(&mc[i]);
    free(mc);
    free(mr);
    api_free_replies(rep, n);
    if (rc < 0) {
        free(out);
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", out, strlen(out));
    free(out);
}
