#include "worker.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "conn.h"
#include "keys.h"
#include "log.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- names */

const char *job_state_str(enum job_state s)
{
    switch (s) {
    case JOB_QUEUED:
        return "queued";
    case JOB_PENDING:
        return "pending";
    case JOB_DELAYED:
        return "delayed";
    case JOB_DONE:
        return "done";
    case JOB_DEAD:
        return "dead";
    case JOB_RELEASED:
        return "released";
    case JOB_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

const char *host_status_str(enum host_status s)
{
    switch (s) {
    case HOST_QUEUED:
        return "queued";
    case HOST_RUNNING:
        return "running";
    case HOST_RETRYING:
        return "retrying";
    case HOST_WAITING:
        return "waiting";
    case HOST_DONE:
        return "done";
    case HOST_FAILED:
        return "failed";
    case HOST_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

/* ---------------------------------------------------------------- results */

struct next_job {
    char *phase;
    char *host; /* NULL: the job's own host */
    char *disk;
    char *payload;
    char id[33];
};

struct hset {
    char *key, *field, *value; /* value NULL: HINCRBY by incr */
    long long incr;
};

struct job_result {
    struct next_job *next;
    size_t n_next;
    int fanout;
    struct hset *hsets;
    size_t n_hsets;
    char *message;
    long long wait_ms; /* > 0: not now (job_result_wait) */
};

void job_result_next(struct job_result *r, const char *phase, const char *disk, const char *payload)
{
    job_result_next_host(r, phase, NULL, disk, payload);
}

void job_result_next_host(struct job_result *r, const char *phase, const char *host,
                          const char *disk, const char *payload)
{
    r->next = xrealloc(r->next, sizeof(*r->next) * (r->n_next + 1));
    struct next_job *n = &r->next[r->n_next++];
    n->phase = xstrdup(phase);
    n->host = host ? xstrdup(host) : NULL;
    n->disk = xstrdup(disk ? disk : "");
    n->payload = xstrdup(payload ? payload : "{}");
    job_new_id(n->id);
}

void job_result_fanout(struct job_result *r)
{
    r->fanout = 1;
}

void job_result_hset(struct job_result *r, const char *key, const char *field, const char *value)
{
    r->hsets = xrealloc(r->hsets, sizeof(*r->hsets) * (r->n_hsets + 1));
    struct hset *h = &r->hsets[r->n_hsets++];
    h->key = xstrdup(key);
    h->field = xstrdup(field);
    h->value = xstrdup(value);
    h->incr = 0;
}

void job_result_hincrby(struct job_result *r, const char *key, const char *field, long long by)
{
    r->hsets = xrealloc(r->hsets, sizeof(*r->hsets) * (r->n_hsets + 1));
    struct hset *h = &r->hsets[r->n_hsets++];
    h->key = xstrdup(key);
    h->field = xstrdup(field);
    h->value = NULL;
    h->incr = by;
}

__attribute__((format(printf, 2, 0))) static void set_message(struct job_result *r, const char *fmt,
                                                              va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    free(r->message);
    r->message = xstrdup(buf);
}

void job_result_message(struct job_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(r, fmt, ap);
    va_end(ap);
}

void job_result_wait(struct job_result *r, long long delay_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(r, fmt, ap);
    va_end(ap);
    r->wait_ms = delay_ms > 0 ? delay_ms : 1;
}

static void job_result_release(struct job_result *r)
{
    for (size_t i = 0; i < r->n_next; i++) {
        free(r->next[i].phase);
        free(r->next[i].host);
        free(r->next[i].disk);
        free(r->next[i].payload);
    }
    for (size_t i = 0; i < r->n_hsets; i++) {
        free(r->hsets[i].key);
        free(r->hsets[i].field);
        free(r->hsets[i].value);
    }
    free(r->next);
    free(r->hsets);
    free(r->message);
    memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------- the worker */

#define INHAND_MAX 1000

struct worker {
    const struct worker_ops *ops;
    char consumer[160];
    char stream[64];
    char delayed[64];
    char hostname[64];
    redisContext *ctx;
    struct cmd cmd;
    long long started_ms;
    long long next_claim_ms;
    long long next_promote_ms;
    char claim_cursor[64];
    int drain_own; /* read our own pending entries ("0") before new ones (">") */

    /* Shared with the heartbeat thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t hb_thread;
    int hb_running;
    char *inhand[INHAND_MAX]; /* entry ids delivered to us and not yet settled */
    size_t n_inhand;
    char current_job[64];
    long long jobs_done;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

int worker_stopping(const struct worker *w)
{
    (void)w;
    return stop_flag != 0;
}

struct redisContext *worker_redis(struct worker *w)
{
    return w->ctx;
}

void *worker_arg(const struct worker *w)
{
    return w->ops->arg;
}

const char *worker_consumer(const struct worker *w)
{
    return w->consumer;
}

#ifdef XM_TEST_HOOKS
/* Crash points for the atomicity tests: XM_TEST_CRASH=<point> makes the process die
 * there, as a SIGKILL would. Compiled only with -DXM_TEST_HOOKS=ON. */
static void crash_point(struct worker *w, const char *point)
{
    const char *want = getenv("XM_TEST_CRASH");
    if (!want || strcmp(want, point) != 0)
        return;
    if (w->ctx) {
        int done = 0;
        while (!done && redisBufferWrite(w->ctx, &done) == REDIS_OK)
            ;
    }
    log_warn("test crash point reached", "point=%s", point);
    _exit(137);
}
#else
#define crash_point(w, point) ((void)(w), (void)(point))
#endif

static void sleep_ms(long long ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_flag)
        ;
}

static long long rand_range(long long lo, long long hi)
{
    unsigned long long r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (unsigned long long)job_now_us();
    if (hi <= lo)
        return lo;
    return lo + (long long)(r % (unsigned long long)(hi - lo + 1));
}

/* Exponential backoff with jitter: the delay before attempt `attempt + 1`. */
static long long retry_delay_ms(long long attempt)
{
    long long d = xm_config.retry_base_ms;
    for (long long i = 1; i < attempt && d < xm_config.retry_max_ms; i++)
        d *= 2;
    if (d > xm_config.retry_max_ms)
        d = xm_config.retry_max_ms;
    return rand_range(d / 2, d); /* "equal jitter": never zero, never above the cap */
}

/* ---------------------------------------------------------------- in-hand list */

static void inhand_add(struct worker *w, const char *entry)
{
    pthread_mutex_lock(&w->mu);
    if (w->n_inhand < INHAND_MAX)
        w->inhand[w->n_inhand++] = xstrdup(entry);
    pthread_mutex_unlock(&w->mu);
}

static void inhand_remove(struct worker *w, const char *entry)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_inhand; i++) {
        if (strcmp(w->inhand[i], entry) == 0) {
            free(w->inhand[i]);
            w->inhand[i] = w->inhand[--w->n_inhand];
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

static void set_current(struct worker *w, const char *job_id)
{
    pthread_mutex_lock(&w->mu);
    xstrlcpy(w->current_job, job_id ? job_id : "", sizeof(w->current_job));
    pthread_mutex_unlock(&w->mu);
}

/* ---------------------------------------------------------------- heartbeat */

/*
 * The heartbeat thread has its own connection. Every XM_HEARTBEAT_MS it refreshes
 * xm:worker:<consumer> (expiring after three periods) and resets the idle time of every
 * entry in hand with XCLAIM ... JUSTID, so a live worker's long job is never taken over.
 */
static void heartbeat_once(struct worker *w, redisContext **hctx)
{
    struct err err = {0};
    if (!*hctx) {
        *hctx = conn_open(&err);
        if (!*hctx)
            return;
    }
    struct cmd c;
    cmd_init(&c);

    pthread_mutex_lock(&w->mu);
    json_t *info =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:I}", "name", w->ops->name, "phase",
                  w->ops->phase, "host", w->hostname, "pid", (json_int_t)getpid(), "job",
                  w->current_job, "in_hand", (json_int_t)w->n_inhand, "jobs_done",
                  (json_int_t)w->jobs_done, "started", (json_int_t)w->started_ms);
    int n_cmds = 1;
    if (w->n_inhand) {
        struct cmd claim;
        cmd_init(&claim);
        cmd_arg(&claim, "XCLAIM");
        cmd_arg(&claim, w->stream);
        cmd_arg(&claim, XM_GROUP);
        cmd_arg(&claim, w->consumer);
        cmd_arg(&claim, "0");
        for (size_t i = 0; i < w->n_inhand; i++)
            cmd_arg(&claim, w->inhand[i]);
        cmd_arg(&claim, "JUSTID");
        cmd_append(*hctx, &claim);
        cmd_release(&claim);
        n_cmds++;
    }
    pthread_mutex_unlock(&w->mu);

    char *text = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    cmd_arg(&c, "SET");
    cmd_argf(&c, XM_WORKER_FMT, w->consumer);
    cmd_arg(&c, text);
    cmd_arg(&c, "PX");
    cmd_argll(&c, xm_config.heartbeat_ms * 3);
    cmd_append(*hctx, &c);
    free(text);
    cmd_release(&c);

    for (int i = 0; i < n_cmds; i++) {
        redisReply *r = NULL;
        if (redisGetReply(*hctx, (void **)&r) != REDIS_OK) {
            redisFree(*hctx);
            *hctx = NULL;
            return;
        }
        freeReplyObject(r);
    }
}

static void *heartbeat_main(void *arg)
{
    struct worker *w = arg;
    redisContext *hctx = NULL;
    pthread_mutex_lock(&w->mu);
    while (w->hb_running) {
        pthread_mutex_unlock(&w->mu);
        heartbeat_once(w, &hctx);
        pthread_mutex_lock(&w->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long ns = until.tv_nsec + (xm_config.heartbeat_ms % 1000) * 1000000;
        until.tv_sec += xm_config.heartbeat_ms / 1000 + ns / 1000000000;
        until.tv_nsec = ns % 1000000000;
        if (w->hb_running)
            pthread_cond_timedwait(&w->cv, &w->mu, &until);
    }
    pthread_mutex_unlock(&w->mu);
    if (hctx) {
        /* A clean stop removes the registration at once. */
        redisReply *r = redisCommand(hctx, "DEL " XM_WORKER_FMT, w->consumer);
        if (r)
            freeReplyObject(r);
        redisFree(hctx);
    }
    return NULL;
}

/* ---------------------------------------------------------------- redis helpers */

/* Drop a broken connection; the main loop reconnects. */
static void conn_lost(struct worker *w, const struct err *err)
{
    if (w->ctx) {
        log_warn("redis connection lost", "consumer=%s error=\"%s\"", w->consumer,
                 err ? err->msg : "");
        redisFree(w->ctx);
        w->ctx = NULL;
    }
}

/* Read n pipelined replies into out[] (new, caller frees each); -1 if the link failed. */
static int get_replies(struct worker *w, redisReply **out, int n, struct err *err)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
        if (rc == 0 && redisGetReply(w->ctx, (void **)&out[i]) != REDIS_OK) {
            err_set(err, ERR_TRANSIENT, "redis: %s", w->ctx->errstr);
            rc = -1;
        }
    }
    return rc;
}

static void free_replies(redisReply **r, int n)
{
    for (int i = 0; i < n; i++)
        if (r[i])
            freeReplyObject(r[i]);
}

static int ensure_group(struct worker *w, struct err *err)
{
    /* "0", not "$": jobs enqueued before the first worker ever started are not lost. */
    const char *argv[] = {"XGROUP", "CREATE", w->stream, XM_GROUP, "0", "MKSTREAM"};
    redisReply *r = redisCommandArgv(w->ctx, 6, argv, NULL);
    if (!r)
        return err_set(err, ERR_TRANSIENT, "redis: %s", w->ctx->errstr);
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        rc = conn_reply_check(w->ctx, r, err);
    freeReplyObject(r);
    return rc;
}

/* Append "XADD xm:events MAXLEN ~ N * type <type> ..." for job. */
static void append_event(struct worker *w, const struct job *job, const char *type,
                         const char *next, const char *msg, long long picked_us, const char *error,
                         enum err_kind kind)
{
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "XADD");
    cmd_arg(c, XM_EVENTS);
    cmd_arg(c, "MAXLEN");
    cmd_arg(c, "~");
    cmd_argll(c, xm_config.events_maxlen);
    cmd_arg(c, "*");
    cmd_arg(c, XM_F_TYPE);
    cmd_arg(c, type);
    cmd_arg(c, XM_F_MIGRATION);
    cmd_arg(c, job->migration ? job->migration : "");
    cmd_arg(c, XM_F_HOST);
    cmd_arg(c, job->host ? job->host : "");
    cmd_arg(c, XM_F_DISK);
    cmd_arg(c, job->disk ? job->disk : "");
    cmd_arg(c, XM_F_PHASE);
    cmd_arg(c, w->ops->phase);
    cmd_arg(c, XM_F_JOB);
    cmd_arg(c, job->id ? job->id : "");
    cmd_arg(c, XM_F_ATTEMPT);
    cmd_argll(c, job->attempt);
    cmd_arg(c, XM_F_WORKER);
    cmd_arg(c, w->consumer);
    cmd_arg(c, XM_F_TS);
    cmd_argll(c, job_now_us());
    cmd_arg(c, XM_F_ENQUEUED);
    cmd_argll(c, job->enqueued_us);
    cmd_arg(c, XM_F_PICKED);
    cmd_argll(c, picked_us);
    if (next) {
        cmd_arg(c, XM_F_NEXT);
        cmd_arg(c, next);
    }
    if (msg) {
        cmd_arg(c, XM_F_MSG);
        cmd_arg(c, msg);
    }
    if (error) {
        cmd_arg(c, XM_F_ERROR);
        cmd_arg(c, error);
        cmd_arg(c, XM_F_KIND);
        cmd_arg(c, err_kind_str(kind));
    }
    cmd_append(w->ctx, c);
}

static void append_xack(struct worker *w, const char *entry)
{
    const char *argv[] = {"XACK", w->stream, XM_GROUP, entry};
    redisAppendCommandArgv(w->ctx, 4, argv, NULL);
}

/* HSET xm:host:<mig>:<host> status, phase, attempt, updated [, error]; returns how many
 * commands it appended (0 when the job names no host). */
/*
 * When a host reaches the end (running after import, or failed for good), the migration
 * may be over: if it is migrating and every host is at an end, it becomes done, failed
 * (no host running) or partially_failed, with its event. Runs inside the settle
 * transaction right after the host's own HSET, so two hosts ending at once decide once.
 * KEYS: xm:mig:<id>, its host set, xm:events. ARGV: host key prefix, migration id, now
 * (us), events cap.
 */
static const char finish_script[] =
    "if redis.call('HGET', KEYS[1], 'status') ~= 'migrating' then return 0 end\n"
    "local ok, bad = 0, 0\n"
    "for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  local st = redis.call('HMGET', ARGV[1] .. h, 'status', 'phase')\n"
    "  if st[1] == 'failed' then bad = bad + 1\n"
    "  elseif st[1] == 'done' and st[2] == 'import' then ok = ok + 1\n"
    "  else return 0 end\n"
    "end\n"
    "local final = 'partially_failed'\n"
    "if bad == 0 then final = 'done' elseif ok == 0 then final = 'failed' end\n"
    "redis.call('HSET', KEYS[1], 'status', final, 'finished', ARGV[3])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'migration.' .. final,\n"
    "  'migration', ARGV[2], 'ts', ARGV[3], 'msg',\n"
    "  ok .. ' host(s) running, ' .. bad .. ' failed')\n"
    "return 1\n";

static int append_migration_end(struct worker *w, const struct job *job)
{
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "EVAL");
    cmd_arg(c, finish_script);
    cmd_arg(c, "3");
    cmd_argf(c, XM_MIG_FMT, job->migration);
    cmd_argf(c, XM_MIG_HOSTS_FMT, job->migration);
    cmd_arg(c, XM_EVENTS);
    cmd_argf(c, XM_HOST_FMT, job->migration, "");
    cmd_arg(c, job->migration);
    cmd_argll(c, job_now_us());
    cmd_argll(c, xm_config.events_maxlen);
    cmd_append(w->ctx, c);
    return 1;
}

static int append_host_state(struct worker *w, const struct job *job, enum host_status s,
                             const char *phase, const char *error)
{
    if (!job->migration || !job->host || strcmp(job->host, XM_HOST_NONE) == 0)
        return 0; /* a migration-level job has no host record */
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "HSET");
    cmd_argf(c, XM_HOST_FMT, job->migration, job->host);
    cmd_arg(c, XM_H_STATUS);
    cmd_arg(c, host_status_str(s));
    cmd_arg(c, XM_H_PHASE);
    cmd_arg(c, phase);
    cmd_arg(c, XM_H_ATTEMPT);
    cmd_argll(c, job->attempt);
    cmd_arg(c, XM_H_UPDATED);
    cmd_argll(c, job_now_us() / 1000);
    if (error) {
        cmd_arg(c, XM_H_ERROR);
        cmd_arg(c, error);
    }
    cmd_arg(c, XM_H_WAITING); /* append_wait() sets it again when that is why */
    cmd_arg(c, "");
    cmd_append(w->ctx, c);
    if (s == HOST_FAILED || (s == HOST_DONE && strcmp(phase, "import") == 0))
        return 1 + append_migration_end(w, job);
    return 1;
}

/* ---------------------------------------------------------------- settling a job */

enum settle {
    SETTLE_DONE,
    SETTLE_RETRY,
    SETTLE_DEAD,
    SETTLE_RELEASE,
    SETTLE_CANCELLED,
    SETTLE_WAIT,
};

/* The id a job counts as in its fan-in group: its own, or the member it continues. */
static const char *job_member(const struct job *job)
{
    return job->member && job->member[0] ? job->member : job->id;
}

/*
 * WATCH xm:done:<job> (and the fan-in set) and read them. Returns 1 when the job was
 * already settled (done or dead) by someone, 0 otherwise, -1 on a Redis failure.
 * *last is set when this job's completion may hand off (no group, or last member).
 */
static int watch_done(struct worker *w, const struct job *job, const char *done_key,
                      const char *fanin_key, int *last, char *up, size_t up_size, struct err *err)
{
    int n = 0;
    redisReply *r[6];
    char up_key[200];
    const char *watch[] = {"WATCH", done_key, fanin_key};
    redisAppendCommandArgv(w->ctx, fanin_key ? 3 : 2, watch, NULL);
    n++;
    const char *get[] = {"GET", done_key};
    redisAppendCommandArgv(w->ctx, 2, get, NULL);
    n++;
    if (fanin_key) {
        const char *ism[] = {"SISMEMBER", fanin_key, job_member(job)};
        const char *card[] = {"SCARD", fanin_key};
        snprintf(up_key, sizeof(up_key), XM_FANIN_UP_FMT, job->group);
        const char *getup[] = {"GET", up_key};
        redisAppendCommandArgv(w->ctx, 3, ism, NULL);
        redisAppendCommandArgv(w->ctx, 2, card, NULL);
        redisAppendCommandArgv(w->ctx, 2, getup, NULL);
        n += 3;
    }
    if (get_replies(w, r, n, err) < 0) {
        free_replies(r, n);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (conn_reply_check(w->ctx, r[i], err) < 0) {
            rc = -1;
            goto out;
        }
    }
    if (r[1]->type == REDIS_REPLY_STRING) {
        rc = 1;
        goto out;
    }
    *last = 1;
    if (fanin_key) {
        long long member = r[2]->integer, card = r[3]->integer;
        if (!member) {
            /* Our membership is gone although xm:done:<job> is not set: the done key
             * expired long ago. Treat as already settled rather than hand off twice. */
            rc = 1;
            goto out;
        }
        *last = card == 1;
        if (up && r[4]->type == REDIS_REPLY_STRING && r[4]->len < up_size)
            memcpy(up, r[4]->str, r[4]->len + 1);
    }
out:
    free_replies(r, n);
    if (rc != 0) {
        redisReply *u = redisCommand(w->ctx, "UNWATCH");
        if (u)
            freeReplyObject(u);
    }
    return rc;
}

/* The delayed-set member for a retry: the job as deterministic JSON (same job, same
 * attempt -> same member, so a repeated ZADD cannot schedule it twice). */
static char *delayed_member(const struct job *job, long long next_attempt)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", XM_F_JOB, job->id,
                          XM_F_MIGRATION, job->migration, XM_F_HOST, job->host, XM_F_DISK,
                          job->disk, XM_F_PHASE, job->phase, XM_F_GROUP, job->group, XM_F_MEMBER,
                          job->member ? job->member : "", XM_F_ATTEMPT, (json_int_t)next_attempt,
                          XM_F_PAYLOAD, job->payload);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* Each append_* below queues the body of one settling transaction (between MULTI+XACK
 * and EXEC) and returns how many commands it queued. */

static int append_set_done(struct worker *w, const char *done_key, const char *value)
{
    char ttl[32];
    snprintf(ttl, sizeof(ttl), "%lld", xm_config.done_ttl_s);
    const char *argv[] = {"SET", done_key, value, "EX", ttl};
    redisAppendCommandArgv(w->ctx, 5, argv, NULL);
    return 1;
}

/* DONE: mark it done, leave the fan-in group, and hand off (only the last member of a
 * group hands off; a fan-out makes the next jobs a new group). */
static int append_done(struct worker *w, const struct job *job, const struct job_result *res,
                       const char *done_key, const char *fanin_key, int last, const char *up,
                       long long picked_us)
{
    int queued = 0;
    const char *next_phase = NULL;
    char group_id[64] = "", member_id[JOB_ID_MAX + 1] = "";
    /* A member that fans out keeps its place in its group: the job that ends the new
     * group continues it (see XM_FANIN_UP_FMT). Any other member leaves now. */
    int nested = fanin_key && res->fanout && res->n_next;
    if (fanin_key && !nested) {
        const char *srem[] = {"SREM", fanin_key, job_member(job)};
        redisAppendCommandArgv(w->ctx, 3, srem, NULL);
        queued++;
    }
    queued += append_set_done(w, done_key, "done");
    if (nested)
        last = 1;
    if (fanin_key && !nested && last && up && up[0]) {
        /* The group ends: its continuation joins the outer group as the member that made
         * it ("<group> <member>"). */
        const char *sp = strchr(up, ' ');
        if (sp && (size_t)(sp - up) < sizeof(group_id)) {
            memcpy(group_id, up, (size_t)(sp - up));
            group_id[sp - up] = '\0';
            xstrlcpy(member_id, sp + 1, sizeof(member_id));
        }
        char up_key[200];
        snprintf(up_key, sizeof(up_key), XM_FANIN_UP_FMT, job->group);
        const char *del[] = {"DEL", up_key};
        redisAppendCommandArgv(w->ctx, 2, del, NULL);
        queued++;
    }
    if (last && res->n_next) {
        if (res->fanout) {
            xstrlcpy(group_id, job->id, sizeof(group_id));
            member_id[0] = '\0';
            struct cmd *c = &w->cmd;
            cmd_reset(c);
            cmd_arg(c, "SADD");
            cmd_argf(c, XM_FANIN_FMT, group_id);
            for (size_t i = 0; i < res->n_next; i++)
                cmd_arg(c, res->next[i].id);
            cmd_append(w->ctx, c);
            queued++;
            if (nested) {
                cmd_reset(c);
                cmd_arg(c, "SET");
                cmd_argf(c, XM_FANIN_UP_FMT, group_id);
                cmd_argf(c, "%s %s", job->group, job_member(job));
                cmd_append(w->ctx, c);
                queued++;
            }
        }
        long long now = job_now_us();
        for (size_t i = 0; i < res->n_next; i++) {
            struct job_spec spec = {
                .id = res->next[i].id,
                .migration = job->migration,
                .host = res->next[i].host ? res->next[i].host : job->host,
                .disk = res->next[i].disk,
                .phase = res->next[i].phase,
                .group = group_id,
                .member = member_id,
                .payload = res->next[i].payload,
                .attempt = 1,
            };
            job_spec_xadd(&w->cmd, &spec, now);
            cmd_append(w->ctx, &w->cmd);
            queued++;
            if (res->next[i].host) {
                /* A job for another host: that host's record shows it queued. */
                struct job other = *job;
                other.host = res->next[i].host;
                queued += append_host_state(w, &other, HOST_QUEUED, res->next[i].phase, "");
            }
        }
        next_phase = res->next[0].phase;
        queued += append_host_state(w, job, HOST_QUEUED, next_phase, "");
    } else {
        queued += append_host_state(w, job, last ? HOST_DONE : HOST_WAITING, job->phase, "");
    }
    /* The handler's fields, one HSET per run of the same key, HINCRBY one by one. */
    for (size_t i = 0; i < res->n_hsets;) {
        struct cmd *c = &w->cmd;
        cmd_reset(c);
        size_t j = i;
        if (!res->hsets[i].value) {
            cmd_arg(c, "HINCRBY");
            cmd_arg(c, res->hsets[i].key);
            cmd_arg(c, res->hsets[i].field);
            cmd_argll(c, res->hsets[i].incr);
            j++;
        } else {
            cmd_arg(c, "HSET");
            cmd_arg(c, res->hsets[i].key);
            for (; j < res->n_hsets && res->hsets[j].value &&
                   strcmp(res->hsets[j].key, res->hsets[i].key) == 0;
                 j++) {
                cmd_arg(c, res->hsets[j].field);
                cmd_arg(c, res->hsets[j].value);
            }
        }
        cmd_append(w->ctx, c);
        queued++;
        i = j;
    }
    append_event(w, job, last ? "job.done" : "job.joined", next_phase, res->message, picked_us,
                 NULL, ERR_NONE);
    return queued + 1;
}

/* RETRY: schedule the next attempt in the delayed set. */
static int append_retry(struct worker *w, const struct job *job, const struct err *jerr,
                        long long picked_us)
{
    long long delay = retry_delay_ms(job->attempt);
    char *member = delayed_member(job, job->attempt + 1);
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "ZADD");
    cmd_arg(c, w->delayed);
    cmd_argll(c, job_now_us() / 1000 + delay);
    cmd_arg(c, member);
    cmd_append(w->ctx, c);
    free(member);
    int queued = 1 + append_host_state(w, job, HOST_RETRYING, job->phase, jerr->msg);
    char msg[64];
    snprintf(msg, sizeof(msg), "retry in %lld ms", delay);
    append_event(w, job, "job.retry", NULL, msg, picked_us, jerr->msg, jerr->kind);
    return queued + 1;
}

/* WAIT: the handler said "not now" (job_result_wait): the same attempt back in the
 * delayed set, due after the delay it asked for; the host shows queued with the reason. */
static int append_wait(struct worker *w, const struct job *job, const struct job_result *res,
                       int announce, long long picked_us)
{
    char *member = delayed_member(job, job->attempt);
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "ZADD");
    cmd_arg(c, w->delayed);
    cmd_argll(c, job_now_us() / 1000 + res->wait_ms);
    cmd_arg(c, member);
    cmd_append(w->ctx, c);
    free(member);
    int queued = 1 + append_host_state(w, job, HOST_QUEUED, job->phase, NULL);
    if (queued > 1) {
        cmd_reset(c);
        cmd_arg(c, "HSET");
        cmd_argf(c, XM_HOST_FMT, job->migration, job->host);
        cmd_arg(c, XM_H_WAITING);
        cmd_arg(c, res->message);
        cmd_append(w->ctx, c);
        queued++;
    }
    if (!announce)
        return queued;
    append_event(w, job, "job.waiting", NULL, res->message, picked_us, NULL, ERR_NONE);
    return queued + 1;
}

/*
 * Whether a waiting job's event is due: the first wait of a job, then one every
 * WAIT_EVENT_S, so hosts queued behind a limit for an hour do not flood the capped
 * events stream (the host's "waiting" field always says why). 1 or 0; -1 with err.
 */
#define WAIT_EVENT_S "600"
static int wait_announce(struct worker *w, const struct job *job, struct err *err)
{
    char key[200];
    snprintf(key, sizeof(key), XM_WAIT_NOTE_FMT, job->id);
    const char *argv[] = {"SET", key, "1", "NX", "EX", WAIT_EVENT_S};
    redisReply *r = conn_cmd(w->ctx, err, 6, argv);
    if (!r)
        return -1;
    int due = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return due;
}

/* DEAD: the whole job and its error into xm:dead, the host failed with the reason and
 * the failed job kept on it for the API's retry. */
static int append_dead(struct worker *w, const struct job *job, const struct err *jerr,
                       const char *done_key, long long picked_us)
{
    int queued = append_set_done(w, done_key, "dead");
    struct cmd *c = &w->cmd;
    cmd_reset(c);
    cmd_arg(c, "XADD");
    cmd_arg(c, XM_DEAD);
    cmd_arg(c, "MAXLEN");
    cmd_arg(c, "~");
    cmd_argll(c, xm_config.dead_maxlen);
    cmd_arg(c, "*");
    const char *pairs[] = {XM_F_JOB,       job->id,
                           XM_F_MIGRATION, job->migration ? job->migration : "",
                           XM_F_HOST,      job->host ? job->host : "",
                           XM_F_DISK,      job->disk,
                           XM_F_PHASE,     job->phase,
                           XM_F_GROUP,     job->group,
                           XM_F_PAYLOAD,   job->payload,
                           XM_F_ERROR,     jerr->msg,
                           XM_F_KIND,      err_kind_str(jerr->kind),
                           XM_F_WORKER,    w->consumer};
    for (size_t i = 0; i < XM_ARRAY_LEN(pairs); i++)
        cmd_arg(c, pairs[i]);
    cmd_arg(c, XM_F_ATTEMPT);
    cmd_argll(c, job->attempt);
    cmd_arg(c, XM_F_TS);
    cmd_argll(c, job_now_us());
    cmd_append(w->ctx, c);
    queued++;
    char reason[ERR_MSG_MAX + 40];
    snprintf(reason, sizeof(reason), "%s: %s", job->phase, jerr->msg);
    queued += append_host_state(w, job, HOST_FAILED, job->phase, reason);
    if (job->migration && job->host) {
        char *failed = delayed_member(job, 1);
        char hkey[300];
        snprintf(hkey, sizeof(hkey), XM_HOST_FMT, job->migration, job->host);
        const char *hs[] = {"HSET", hkey, XM_H_FAILED_JOB, failed};
        redisAppendCommandArgv(w->ctx, 4, hs, NULL);
        queued++;
        free(failed);
    }
    append_event(w, job, "job.dead", NULL, NULL, picked_us, jerr->msg, jerr->kind);
    return queued + 1;
}

static int append_cancelled(struct worker *w, const struct job *job, const char *done_key,
                            long long picked_us)
{
    int queued = append_set_done(w, done_key, "cancelled");
    queued += append_host_state(w, job, HOST_CANCELLED, job->phase, "");
    append_event(w, job, "job.cancelled", NULL, "migration cancelled", picked_us, NULL, ERR_NONE);
    return queued + 1;
}

/* RELEASE: the same job (same attempt) back into its stream for another worker. */
static int append_release(struct worker *w, const struct job *job, long long picked_us)
{
    struct job_spec spec;
    job_spec_from_job(&spec, job);
    job_spec_xadd(&w->cmd, &spec, job_now_us());
    cmd_append(w->ctx, &w->cmd);
    int queued = 1 + append_host_state(w, job, HOST_QUEUED, job->phase, NULL);
    append_event(w, job, "job.released", NULL, "worker stopping", picked_us, NULL, ERR_NONE);
    return queued + 1;
}

/* Send EXEC and read every reply of the transaction. 0 done, 1 aborted by a WATCH,
 * -1 with err. */
static int exec_tx(struct worker *w, int queued, struct err *err)
{
    const char *exec[] = {"EXEC"};
    redisAppendCommandArgv(w->ctx, 1, exec, NULL);
    queued++;
    redisReply **r = xcalloc((size_t)queued, sizeof(*r));
    int rc = get_replies(w, r, queued, err);
    for (int i = 0; i < queued - 1 && rc == 0; i++)
        rc = conn_reply_check(w->ctx, r[i], err);
    if (rc == 0) {
        redisReply *ex = r[queued - 1];
        if (ex->type == REDIS_REPLY_NIL)
            rc = 1;
        else if (ex->type == REDIS_REPLY_ERROR)
            rc = conn_reply_check(w->ctx, ex, err);
        else
            for (size_t i = 0; ex->type == REDIS_REPLY_ARRAY && i < ex->elements && rc == 0; i++)
                rc = conn_reply_check(w->ctx, ex->element[i], err);
    }
    free_replies(r, queued);
    free(r);
    return rc;
}

/*
 * Settle one job in ONE MULTI/EXEC. Returns 0 when settled (or found already settled),
 * -1 with a transient err when Redis failed (the caller reconnects and calls again:
 * every branch is safe to repeat).
 */
static int settle(struct worker *w, const struct job *job, enum settle how,
                  const struct job_result *res, const struct err *jerr, long long picked_us,
                  struct err *err)
{
    char done_key[200], fanin_key[200];
    snprintf(done_key, sizeof(done_key), XM_DONE_FMT, job->id);
    int grouped = how == SETTLE_DONE && job->group[0];
    if (grouped)
        snprintf(fanin_key, sizeof(fanin_key), XM_FANIN_FMT, job->group);
    int announce = how == SETTLE_WAIT ? wait_announce(w, job, err) : 0;
    if (announce < 0)
        return -1;

    for (int tries = 0; tries < 100; tries++) {
        int last = 1;
        char up[2 * JOB_ID_MAX + 4] = "";
        if (how == SETTLE_DONE || how == SETTLE_DEAD || how == SETTLE_CANCELLED) {
            int st = watch_done(w, job, done_key, grouped ? fanin_key : NULL, &last, up, sizeof(up),
                                err);
            if (st < 0)
                return -1;
            if (st == 1) {
                /* Someone settled it already: only make sure it leaves our PEL. */
                append_xack(w, job->entry);
                redisReply *r;
                if (get_replies(w, &r, 1, err) < 0)
                    return -1;
                freeReplyObject(r);
                log_info("job already settled", "consumer=%s migration=%s host=%s job=%s id=%s",
                         w->consumer, job->migration, job->host, job->id, job->entry);
                return 0;
            }
        }

        const char *multi[] = {"MULTI"};
        redisAppendCommandArgv(w->ctx, 1, multi, NULL);
        append_xack(w, job->entry);
        int queued = 2;
        crash_point(w, "in_multi");
        switch (how) {
        case SETTLE_DONE:
            queued +=
                append_done(w, job, res, done_key, grouped ? fanin_key : NULL, last, up, picked_us);
            break;
        case SETTLE_RETRY:
            queued += append_retry(w, job, jerr, picked_us);
            break;
        case SETTLE_DEAD:
            queued += append_dead(w, job, jerr, done_key, picked_us);
            break;
        case SETTLE_CANCELLED:
            queued += append_cancelled(w, job, done_key, picked_us);
            break;
        case SETTLE_RELEASE:
            queued += append_release(w, job, picked_us);
            break;
        case SETTLE_WAIT:
            queued += append_wait(w, job, res, announce, picked_us);
            break;
        }
        crash_point(w, "before_exec");
        int rc = exec_tx(w, queued, err);
        if (rc < 0)
            return -1;
        crash_point(w, "after_exec");
        if (rc == 0)
            return 0;
    }
    return err_set(err, ERR_TRANSIENT, "settle: too much contention on job '%s'", job->id);
}

/*
 * Settle several finished jobs (plain DONE, no fan-in group) in ONE MULTI/EXEC: one
 * WATCH over all their done keys, one read of them, one transaction holding each job's
 * ack and hand-off. Each job's completion stays atomic (it is inside one transaction);
 * the batch saves a round trip and a Redis fsync per job. Same contract as settle().
 */
static int settle_many(struct worker *w, struct job *const *jobs,
                       const struct job_result *const *res, size_t n, long long picked_us,
                       struct err *err)
{
    char(*keys)[200] = xcalloc(n, sizeof(*keys));
    int *done = xcalloc(n, sizeof(*done));
    int rc = -1;
    struct cmd *c = &w->cmd;
    for (size_t i = 0; i < n; i++)
        snprintf(keys[i], sizeof(keys[i]), XM_DONE_FMT, jobs[i]->id);
    for (int tries = 0; tries < 100; tries++) {
        cmd_reset(c);
        cmd_arg(c, "WATCH");
        for (size_t i = 0; i < n; i++)
            cmd_arg(c, keys[i]);
        cmd_append(w->ctx, c);
        cmd_reset(c);
        cmd_arg(c, "MGET");
        for (size_t i = 0; i < n; i++)
            cmd_arg(c, keys[i]);
        cmd_append(w->ctx, c);
        redisReply *r[2];
        if (get_replies(w, r, 2, err) < 0 || conn_reply_check(w->ctx, r[0], err) < 0 ||
            conn_reply_check(w->ctx, r[1], err) < 0) {
            free_replies(r, 2);
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            done[i] = r[1]->type == REDIS_REPLY_ARRAY && i < r[1]->elements &&
                      r[1]->element[i]->type == REDIS_REPLY_STRING;
        free_replies(r, 2);

        const char *multi[] = {"MULTI"};
        redisAppendCommandArgv(w->ctx, 1, multi, NULL);
        int queued = 1;
        for (size_t i = 0; i < n; i++) {
            append_xack(w, jobs[i]->entry);
            queued++;
            if (done[i])
                continue; /* settled by someone else: only leave our PEL */
            queued += append_done(w, jobs[i], res[i], keys[i], NULL, 1, NULL, picked_us);
        }
        crash_point(w, "in_multi");
        crash_point(w, "before_exec");
        int st = exec_tx(w, queued, err);
        if (st < 0)
            goto out;
        crash_point(w, "after_exec");
        if (st == 0) {
            rc = 0;
            goto out;
        }
    }
    err_set(err, ERR_TRANSIENT, "settle: too much contention on a batch of %zu jobs", n);
out:
    free(keys);
    free(done);
    return rc;
}

/* ---------------------------------------------------------------- running jobs */

/* A job whose handler finished within this many ms may wait for the rest of its batch
 * to be settled with it; a slower one is settled at once, so it is never held up. */
#define SETTLE_BATCH_MS 5

/* Settle, reconnecting through Redis outages until done or told to stop. */
static int settle_retrying(struct worker *w, const struct job *job, enum settle how,
                           const struct job_result *res, const struct err *jerr,
                           long long picked_us)
{
    for (;;) {
        struct err err = {0};
        if (!w->ctx) {
            w->ctx = conn_open_retry(&stop_flag, &err);
            if (!w->ctx)
                return -1; /* stopping: the entry stays pending and is taken over */
        }
        if (settle(w, job, how, res, jerr, picked_us, &err) == 0)
            return 0;
        if (err.kind == ERR_PERMANENT) {
            log_error("cannot settle job", "consumer=%s job=%s id=%s error=\"%s\"", w->consumer,
                      job->id, job->entry, err.msg);
            return -1;
        }
        conn_lost(w, &err);
        if (stop_flag)
            return -1;
    }
}

/* settle_many(), reconnecting through Redis outages like settle_retrying(). */
static int settle_many_retrying(struct worker *w, struct job *const *jobs,
                                const struct job_result *const *res, size_t n, long long picked_us)
{
    for (;;) {
        struct err err = {0};
        if (!w->ctx) {
            w->ctx = conn_open_retry(&stop_flag, &err);
            if (!w->ctx)
                return -1;
        }
        if (settle_many(w, jobs, res, n, picked_us, &err) == 0)
            return 0;
        if (err.kind == ERR_PERMANENT) {
            log_error("cannot settle a batch of jobs", "consumer=%s jobs=%zu error=\"%s\"",
                      w->consumer, n, err.msg);
            return -1;
        }
        conn_lost(w, &err);
        if (stop_flag)
            return -1;
    }
}

/*
 * Run one job's handler and settle it. When it succeeded quickly with no fan-in group
 * and `may_defer` is set, it is not settled here: the result goes to *deferred (the
 * caller settles it with its batch) and 1 is returned; otherwise 0.
 */
static int run_job(struct worker *w, struct job *job, long long picked_us, int may_defer,
                   struct job_result *deferred)
{
    struct job_result res = {0};
    struct err jerr = {0};
    enum settle how;

    set_current(w, job->id);
    long long t0 = job_mono_ms();
    int rc = w->ops->handle(w, job, &res, &jerr);
    long long took = job_mono_ms() - t0;
    crash_point(w, "handled");

    char qerr[ERR_MSG_MAX + 8];
    if (rc == 0 && res.wait_ms > 0) {
        how = SETTLE_WAIT;
        log_debug("job waits", "consumer=%s migration=%s host=%s job=%s ms=%lld reason=%s",
                  w->consumer, job->migration, job->host, job->id, res.wait_ms,
                  log_quote(qerr, sizeof(qerr), res.message));
    } else if (rc == 0) {
        how = SETTLE_DONE;
        log_debug("job done", "consumer=%s migration=%s host=%s disk=%s job=%s id=%s ms=%lld",
                  w->consumer, job->migration, job->host, job->disk, job->id, job->entry, took);
    } else {
        if (jerr.kind == ERR_NONE)
            err_set(&jerr, ERR_PERMANENT, "handler failed without saying why");
        if (jerr.kind == ERR_TRANSIENT && stop_flag)
            how = SETTLE_RELEASE;
        else if (jerr.kind == ERR_TRANSIENT && job->attempt < xm_config.max_attempts)
            how = SETTLE_RETRY;
        else
            how = SETTLE_DEAD;
        log_warn(how == SETTLE_DEAD ? "job failed for good" : "job failed",
                 "consumer=%s migration=%s host=%s disk=%s job=%s id=%s attempt=%lld kind=%s "
                 "error=%s",
                 w->consumer, job->migration, job->host, job->disk, job->id, job->entry,
                 job->attempt, err_kind_str(jerr.kind), log_quote(qerr, sizeof(qerr), jerr.msg));
    }
    set_current(w, NULL);
    if (how == SETTLE_DONE && may_defer && !job->group[0] && took < SETTLE_BATCH_MS) {
        *deferred = res;
        return 1;
    }
    if (settle_retrying(w, job, how, &res, &jerr, picked_us) == 0) {
        pthread_mutex_lock(&w->mu);
        w->jobs_done++;
        pthread_mutex_unlock(&w->mu);
    }
    job_result_release(&res);
    return 0;
}

/* A stream entry that is not a valid job goes to xm:dead as it is. */
static void dead_letter_malformed(struct worker *w, struct job *job, const struct err *perr)
{
    char q[ERR_MSG_MAX + 8];
    log_error("malformed job", "consumer=%s stream=%s id=%s error=%s", w->consumer, w->stream,
              job->entry ? job->entry : "", log_quote(q, sizeof(q), perr->msg));
    if (!job->entry)
        return;
    if (!job->id)
        job->id = xstrdup(job->entry);
    if (!job_valid_ident(job->id)) {
        free(job->id);
        job->id = xstrdup(job->entry);
    }
#define FILL(f)                                                                                    \
    if (!job->f)                                                                                   \
        job->f = xstrdup("");
    FILL(migration)
    FILL(host)
    FILL(disk)
    FILL(group)
    FILL(payload)
#undef FILL
    if (!job->phase)
        job->phase = xstrdup(w->ops->phase);
    /* No host state to mark when the envelope does not say which host. */
    if (!job_valid_ident(job->migration) || !job_valid_ident(job->host)) {
        free(job->migration);
        free(job->host);
        job->migration = NULL;
        job->host = NULL;
    }
    struct job_result none = {0};
    settle_retrying(w, job, SETTLE_DEAD, &none, perr, job_now_us());
}

/* How many times has this entry been delivered? (XPENDING extended form.) 0 if unknown. */
static long long delivery_count(struct worker *w, const char *entry)
{
    const char *argv[] = {"XPENDING", w->stream, XM_GROUP, entry, entry, "1"};
    redisReply *r = redisCommandArgv(w->ctx, 6, argv, NULL);
    long long n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4)
        n = r->element[0]->element[3]->integer;
    if (r)
        freeReplyObject(r);
    return n;
}

/*
 * In one round trip for a batch: read each job's migration status (a cancelled
 * migration starts no new work) and mark each host "running".
 */
static void start_batch(struct worker *w, struct job *jobs, const int *ok, int *cancelled, size_t n)
{
    int *marks = xcalloc(n ? n : 1, sizeof(*marks)); /* 1 when a host HSET was queued */
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        char key[200];
        snprintf(key, sizeof(key), XM_MIG_FMT, jobs[i].migration);
        const char *get[] = {"HGET", key, "status"};
        redisAppendCommandArgv(w->ctx, 3, get, NULL);
        marks[i] = append_host_state(w, &jobs[i], HOST_RUNNING, jobs[i].phase, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        redisReply *r[2] = {NULL, NULL};
        if (redisGetReply(w->ctx, (void **)&r[0]) != REDIS_OK ||
            (marks[i] && redisGetReply(w->ctx, (void **)&r[1]) != REDIS_OK)) {
            free_replies(r, 2);
            break; /* the next command notices the dead link */
        }
        cancelled[i] = r[0]->type == REDIS_REPLY_STRING && strcmp(r[0]->str, "cancelled") == 0;
        free_replies(r, 2);
    }
    free(marks);
}

/* Settle the deferred jobs of a batch together, then let them go. */
static void flush_deferred(struct worker *w, struct job **jobs, struct job_result *res, size_t *n,
                           long long picked)
{
    if (*n == 0)
        return;
    const struct job_result **rp = xcalloc(*n, sizeof(*rp));
    for (size_t i = 0; i < *n; i++)
        rp[i] = &res[i];
    if (settle_many_retrying(w, jobs, rp, *n, picked) == 0) {
        pthread_mutex_lock(&w->mu);
        w->jobs_done += (long long)*n;
        pthread_mutex_unlock(&w->mu);
    }
    for (size_t i = 0; i < *n; i++) {
        inhand_remove(w, jobs[i]->entry);
        job_result_release(&res[i]);
        job_release(jobs[i]);
    }
    free(rp);
    *n = 0;
}

/* Run every entry of an XREADGROUP/XAUTOCLAIM entries array. */
static void run_entries(struct worker *w, const redisReply *entries, int takeover)
{
    size_t n = entries->elements;
    struct job *jobs = xcalloc(n ? n : 1, sizeof(*jobs));
    struct err *perr = xcalloc(n ? n : 1, sizeof(*perr));
    int *ok = xcalloc(n ? n : 1, sizeof(*ok));
    int *cancelled = xcalloc(n ? n : 1, sizeof(*cancelled));
    /* Jobs that finished quickly, settled together (settle_many) at the end. */
    struct job **dj = xcalloc(n ? n : 1, sizeof(*dj));
    struct job_result *dres = xcalloc(n ? n : 1, sizeof(*dres));
    size_t nd = 0;
    long long picked = job_now_us();

    for (size_t i = 0; i < n; i++) {
        ok[i] = job_from_entry(&jobs[i], w->stream, entries->element[i], &perr[i]) == 0;
        if (jobs[i].entry)
            inhand_add(w, jobs[i].entry);
    }
    start_batch(w, jobs, ok, cancelled, n);
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].entry)
            continue;
        if (!ok[i]) {
            dead_letter_malformed(w, &jobs[i], &perr[i]);
        } else if (stop_flag) {
            /* Not started: leave it pending; our restart or a takeover runs it. */
        } else if (cancelled[i]) {
            log_info("job of a cancelled migration dropped",
                     "consumer=%s migration=%s host=%s job=%s id=%s", w->consumer,
                     jobs[i].migration, jobs[i].host, jobs[i].id, jobs[i].entry);
            settle_retrying(w, &jobs[i], SETTLE_CANCELLED, &(struct job_result){0}, NULL, picked);
        } else {
            long long deliveries = takeover && w->ctx ? delivery_count(w, jobs[i].entry) : 0;
            if (deliveries > xm_config.max_attempts) {
                struct err dead = {0};
                err_set(&dead, ERR_PERMANENT,
                        "taken over %lld times: every worker running it died or stalled",
                        deliveries - 1);
                settle_retrying(w, &jobs[i], SETTLE_DEAD, &(struct job_result){0}, &dead, picked);
            } else {
                if (takeover)
                    log_info("job taken over",
                             "consumer=%s migration=%s host=%s job=%s id=%s "
                             "deliveries=%lld",
                             w->consumer, jobs[i].migration, jobs[i].host, jobs[i].id,
                             jobs[i].entry, deliveries);
                if (run_job(w, &jobs[i], picked, 1, &dres[nd])) {
                    dj[nd++] = &jobs[i];
                    continue; /* still in hand until the batch is settled */
                }
            }
        }
        inhand_remove(w, jobs[i].entry);
        job_release(&jobs[i]);
    }
    flush_deferred(w, dj, dres, &nd, picked);
    free(dj);
    free(dres);
    free(jobs);
    free(perr);
    free(ok);
    free(cancelled);
}

/* ---------------------------------------------------------------- periodic duties */

/* Move due retries back into the stream: ZREM + XADD in one MULTI/EXEC under WATCH, so
 * two workers promoting at once cannot enqueue a job twice. */
static int promote_delayed(struct worker *w, struct err *err)
{
    long long now_ms = job_now_us() / 1000;
    if (now_ms < w->next_promote_ms)
        return 0;
    w->next_promote_ms = now_ms + xm_config.block_ms;

    char now_s[32], batch_s[32];
    snprintf(now_s, sizeof(now_s), "%lld", now_ms);
    snprintf(batch_s, sizeof(batch_s), "%lld", xm_config.batch);
    const char *watch[] = {"WATCH", w->delayed};
    const char *range[] = {"ZRANGEBYSCORE", w->delayed, "-inf", now_s, "LIMIT", "0", batch_s};
    const char *first[] = {"ZRANGE", w->delayed, "0", "0", "WITHSCORES"};
    redisAppendCommandArgv(w->ctx, 2, watch, NULL);
    redisAppendCommandArgv(w->ctx, 7, range, NULL);
    redisAppendCommandArgv(w->ctx, 5, first, NULL);
    redisReply *r[3];
    if (get_replies(w, r, 3, err) < 0) {
        free_replies(r, 3);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = conn_reply_check(w->ctx, r[i], err);
    if (rc < 0)
        goto out;

    /* Wake up again when the earliest retry is due, if that is sooner. */
    if (r[2]->type == REDIS_REPLY_ARRAY && r[2]->elements == 2) {
        long long due;
        if (config_parse_ll(r[2]->element[1]->str, 0, (long long)1 << 62, &due) == 0 &&
            due > now_ms && due < w->next_promote_ms)
            w->next_promote_ms = due;
    }
    if (r[1]->type != REDIS_REPLY_ARRAY || r[1]->elements == 0) {
        redisReply *u = redisCommand(w->ctx, "UNWATCH");
        if (u)
            freeReplyObject(u);
        goto out;
    }
    w->next_promote_ms = now_ms; /* there may be more: look again next turn */

    int queued = 1;
    redisAppendCommand(w->ctx, "MULTI");
    for (size_t i = 0; i < r[1]->elements; i++) {
        const redisReply *m = r[1]->element[i];
        const char *zrem[] = {"ZREM", w->delayed, m->str};
        size_t lens[] = {4, strlen(w->delayed), m->len};
        redisAppendCommandArgv(w->ctx, 3, zrem, lens);
        queued++;
        json_error_t jerr;
        json_t *o = json_loadb(m->str, m->len, 0, &jerr);
        const char *id = NULL, *mig = NULL, *host = NULL, *disk = NULL, *phase = NULL,
                   *group = NULL, *payload = NULL;
        json_int_t attempt = 0;
        const char *member = "";
        if (!o || json_unpack(o, "{s:s, s:s, s:s, s:s, s:s, s:s, s?s, s:I, s:s}", XM_F_JOB, &id,
                              XM_F_MIGRATION, &mig, XM_F_HOST, &host, XM_F_DISK, &disk, XM_F_PHASE,
                              &phase, XM_F_GROUP, &group, XM_F_MEMBER, &member, XM_F_ATTEMPT,
                              &attempt, XM_F_PAYLOAD, &payload) < 0) {
            /* Unreadable member: dropped by the ZREM above, kept in xm:dead. */
            const char *dead[] = {
                "XADD", XM_DEAD, "*", XM_F_PAYLOAD, m->str, XM_F_ERROR, "unreadable delayed entry"};
            size_t dl[] = {4,
                           strlen(XM_DEAD),
                           1,
                           strlen(XM_F_PAYLOAD),
                           m->len,
                           strlen(XM_F_ERROR),
                           strlen(dead[6])};
            redisAppendCommandArgv(w->ctx, 7, dead, dl);
            queued++;
            json_decref(o);
            continue;
        }
        struct job_spec spec = {.id = id,
                                .migration = mig,
                                .host = host,
                                .disk = disk,
                                .phase = phase,
                                .group = group,
                                .member = member,
                                .payload = payload,
                                .attempt = attempt};
        job_spec_xadd(&w->cmd, &spec, job_now_us());
        cmd_append(w->ctx, &w->cmd);
        queued++;
        json_decref(o);
    }
    redisAppendCommand(w->ctx, "EXEC");
    queued++;
    redisReply **er = xcalloc((size_t)queued, sizeof(*er));
    rc = get_replies(w, er, queued, err);
    for (int i = 0; i < queued && rc == 0; i++)
        rc = conn_reply_check(w->ctx, er[i], err);
    free_replies(er, queued);
    free(er);
out:
    free_replies(r, 3);
    return rc;
}

static long long batch_size(const struct worker *w)
{
    return w->ops->batch > 0 ? w->ops->batch : xm_config.batch;
}

/* Take over entries idle past the visibility timeout (their worker died). */
static int claim_abandoned(struct worker *w, struct err *err)
{
    long long now = job_mono_ms();
    if (now < w->next_claim_ms)
        return 0;
    long long period = xm_config.visibility_timeout_ms / 4;
    w->next_claim_ms = now + (period > 50 ? period : 50);

    char idle[32], count[32];
    snprintf(idle, sizeof(idle), "%lld", xm_config.visibility_timeout_ms);
    snprintf(count, sizeof(count), "%lld", batch_size(w));
    const char *argv[] = {"XAUTOCLAIM", w->stream,       XM_GROUP, w->consumer,
                          idle,         w->claim_cursor, "COUNT",  count};
    redisReply *r = redisCommandArgv(w->ctx, 8, argv, NULL);
    if (conn_reply_check(w->ctx, r, err) < 0) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    /* Redis 7: [next cursor, entries, deleted ids]. */
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        xstrlcpy(w->claim_cursor, r->element[0]->str, sizeof(w->claim_cursor));
        if (strcmp(w->claim_cursor, "0-0") != 0)
            w->next_claim_ms = now; /* more to scan */
        if (r->element[1]->elements)
            run_entries(w, r->element[1], 1);
    }
    freeReplyObject(r);
    return 0;
}

static int read_jobs(struct worker *w, struct err *err)
{
    char count[32], block[32];
    long long block_ms = xm_config.block_ms;
    long long until_promote = w->next_promote_ms - job_now_us() / 1000;
    if (until_promote < block_ms)
        block_ms = until_promote > 1 ? until_promote : 1;
    snprintf(count, sizeof(count), "%lld", batch_size(w));
    snprintf(block, sizeof(block), "%lld", block_ms);
    const char *argv[] = {"XREADGROUP",
                          "GROUP",
                          XM_GROUP,
                          w->consumer,
                          "COUNT",
                          count,
                          "BLOCK",
                          block,
                          "STREAMS",
                          w->stream,
                          w->drain_own ? "0" : ">"};
    redisReply *r = redisCommandArgv(w->ctx, 11, argv, NULL);
    if (conn_reply_check(w->ctx, r, err) < 0) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t got = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *entries = r->element[0]->element[1];
        got = entries->elements;
        if (got)
            run_entries(w, entries, 0);
    }
    if (w->drain_own && got == 0) {
        w->drain_own = 0;
        log_info("own pending entries drained", "consumer=%s stream=%s", w->consumer, w->stream);
    }
    freeReplyObject(r);
    return 0;
}

/* ---------------------------------------------------------------- main */

static int worker_run(struct worker *w)
{
    while (!stop_flag) {
        struct err err = {0};
        if (!w->ctx) {
            w->ctx = conn_open_retry(&stop_flag, &err);
            if (!w->ctx)
                break;
            if (ensure_group(w, &err) < 0) {
                conn_lost(w, &err);
                continue;
            }
            w->drain_own = 1;
            log_info("connected", "consumer=%s stream=%s group=%s", w->consumer, w->stream,
                     XM_GROUP);
        }
        if (promote_delayed(w, &err) < 0 || claim_abandoned(w, &err) < 0 ||
            (!stop_flag && read_jobs(w, &err) < 0)) {
            if (err.kind == ERR_PERMANENT) {
                /* e.g. NOGROUP after a FLUSHALL: make the group again. */
                log_warn("redis refused a command", "consumer=%s error=\"%s\"", w->consumer,
                         err.msg);
                if (ensure_group(w, &err) < 0)
                    conn_lost(w, &err);
                sleep_ms(100);
            } else {
                conn_lost(w, &err);
            }
        }
    }
    return 0;
}

int worker_main(const struct worker_ops *ops)
{
    struct err err = {0};
    if (config_load(&err) < 0) {
        log_write(LOG_FATAL, "bad configuration", "error=\"%s\"", err.msg);
        return 2;
    }
    log_set_level(xm_config.log_level);
    if (xm_config.heartbeat_ms * 2 > xm_config.visibility_timeout_ms) {
        log_write(LOG_FATAL, "bad configuration",
                  "error=\"XM_HEARTBEAT_MS (%lld) must be at most half of "
                  "XM_VISIBILITY_TIMEOUT_MS (%lld)\"",
                  xm_config.heartbeat_ms, xm_config.visibility_timeout_ms);
        return 2;
    }
    if (!job_valid_phase(ops->phase)) {
        log_write(LOG_FATAL, "bad phase name", "phase=\"%s\"", ops->phase);
        return 2;
    }

    struct worker *w = xcalloc(1, sizeof(*w));
    w->ops = ops;
    cmd_init(&w->cmd);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (gethostname(w->hostname, sizeof(w->hostname)) < 0)
        xstrlcpy(w->hostname, "unknown", sizeof(w->hostname));
    w->hostname[sizeof(w->hostname) - 1] = '\0';
    if (xm_config.consumer[0])
        xstrlcpy(w->consumer, xm_config.consumer, sizeof(w->consumer));
    else
        snprintf(w->consumer, sizeof(w->consumer), "%s-%s", w->hostname, ops->phase);
    if (!job_valid_ident(w->consumer)) {
        log_write(LOG_FATAL, "bad configuration",
                  "error=\"XM_CONSUMER: '%s' is not 1..128 of [A-Za-z0-9._:-]\"", w->consumer);
        free(w);
        return 2;
    }
    snprintf(w->stream, sizeof(w->stream), XM_QUEUE_FMT, ops->phase);
    snprintf(w->delayed, sizeof(w->delayed), XM_DELAYED_FMT, ops->phase);
    xstrlcpy(w->claim_cursor, "0-0", sizeof(w->claim_cursor));
    w->started_ms = job_now_us() / 1000;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char *dump = config_dump();
    for (char *line = dump, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        log_debug("config", "%s", line);
    }
    free(dump);
    log_info("worker starting", "name=%s phase=%s consumer=%s pid=%ld", ops->name, ops->phase,
             w->consumer, (long)getpid());

    w->hb_running = 1;
    pthread_create(&w->hb_thread, NULL, heartbeat_main, w);

    worker_run(w);

    pthread_mutex_lock(&w->mu);
    w->hb_running = 0;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->hb_thread, NULL);

    log_info("worker stopped", "name=%s consumer=%s jobs=%lld", ops->name, w->consumer,
             w->jobs_done);
    if (w->ctx)
        redisFree(w->ctx);
    cmd_release(&w->cmd);
    for (size_t i = 0; i < w->n_inhand; i++)
        free(w->inhand[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
    config_release();
    return 0;
}
