/*
 * Queue and worker runtime against a real redis-server (started per test on a free
 * loopback port, AOF on) and real xm-noop worker processes built with crash points.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "jsonschema.h"
#include "xmalloc.h"

#ifndef XM_NOOP_BIN
#error "XM_NOOP_BIN must name the xm-noop binary"
#endif

#define MAX_PROCS 16

struct t {
    struct redis_srv srv;
    redisContext *c;
    pid_t procs[MAX_PROCS];
    int n_procs;
};

/* 1 when no *.log in dir has a sanitizer report in it; prints the offending lines. */
static int logs_clean(const char *dir)
{
    DIR *d = opendir(dir);
    int clean = 1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 4, ".log") != 0 ||
            strcmp(de->d_name, "redis.log") == 0)
            continue;
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        char line[4096];
        while (f && fgets(line, sizeof(line), f)) {
            if (strstr(line, "Sanitizer") || strstr(line, "runtime error:")) {
                fprintf(stderr, "%s: %s", de->d_name, line);
                clean = 0;
            }
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return clean;
}

/* Fast settings so the tests take seconds, not minutes. */
static char *const fast_env[] = {
    "XM_BLOCK_MS=100",
    "XM_HEARTBEAT_MS=100",
    "XM_VISIBILITY_TIMEOUT_MS=1000",
    "XM_RETRY_BASE_MS=50",
    "XM_RETRY_MAX_MS=400",
    "XM_LOG_LEVEL=debug",
    NULL,
};

static int setup(void **state)
{
    struct t *t = xcalloc(1, sizeof(*t));
    rs_start(&t->srv);
    t->c = rs_connect(&t->srv);
    *state = t;
    return 0;
}

/* Stop every worker cleanly (so LeakSanitizer runs at their exit), then fail the test if
 * any worker log holds a sanitizer report. */
static int teardown(void **state)
{
    struct t *t = *state;
    for (int i = 0; i < t->n_procs; i++)
        if (t->procs[i] > 0)
            stop_process(t->procs[i], SIGTERM);
    int rc = logs_clean(t->srv.dir) ? 0 : -1;
    redisFree(t->c);
    rs_destroy(&t->srv);
    free(t);
    return rc;
}

/* Start xm-noop PHASE [NEXT] as consumer `name`, with the fast settings plus extra env. */
static pid_t worker(struct t *t, const char *name, const char *phase, const char *next,
                    const char *extra1, const char *extra2)
{
    char consumer[80];
    snprintf(consumer, sizeof(consumer), "XM_CONSUMER=%s", name);
    char *env[16];
    int n = 0;
    for (int i = 0; fast_env[i]; i++)
        env[n++] = fast_env[i];
    env[n++] = consumer;
    if (extra1)
        env[n++] = (char *)extra1;
    if (extra2)
        env[n++] = (char *)extra2;
    env[n] = NULL;
    char *argv[] = {XM_NOOP_BIN, (char *)phase, (char *)next, NULL};
    pid_t pid = spawn_worker(&t->srv, name, argv, env);
    XM_ASSERT(t->n_procs < MAX_PROCS);
    t->procs[t->n_procs++] = pid;
    return pid;
}

/* Forget a process the test already reaped. */
static void forget(struct t *t, pid_t pid)
{
    for (int i = 0; i < t->n_procs; i++)
        if (t->procs[i] == pid)
            t->procs[i] = 0;
}

/* ---------------------------------------------------------------- conditions */

struct cond {
    struct t *t;
    const char *a, *b, *c;
    long long n;
};

static int host_status_is(void *arg)
{
    struct cond *k = arg;
    char *s = rs_str(k->t->c, "HGET xm:host:%s:%s status", k->a, k->b);
    int ok = strcmp(s, k->c) == 0;
    free(s);
    return ok;
}

static int xlen_at_least(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN %s", k->a) >= k->n;
}

static int key_exists(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "EXISTS %s", k->a) == 1;
}

static int key_gone(void *arg)
{
    return !key_exists(arg);
}

static void wait_status(struct t *t, const char *mig, const char *host, const char *status, int ms)
{
    struct cond k = {t, mig, host, status, 0};
    if (!wait_until(host_status_is, &k, ms)) {
        char *s = rs_str(t->c, "HGET xm:host:%s:%s status", mig, host);
        fail_msg("host %s:%s never reached status '%s' (is '%s')", mig, host, status, s);
    }
}

static void wait_xlen(struct t *t, const char *stream, long long n, int ms)
{
    struct cond k = {t, stream, NULL, NULL, n};
    if (!wait_until(xlen_at_least, &k, ms))
        fail_msg("%s never reached length %lld (is %lld)", stream, n,
                 rs_int(t->c, "XLEN %s", stream));
}

static long long pending(struct t *t, const char *stream)
{
    redisReply *r = rs_cmd(t->c, "XPENDING %s workers", stream);
    long long n = r->type == REDIS_REPLY_ARRAY ? r->element[0]->integer : -1;
    freeReplyObject(r);
    return n;
}

/* Field `field` of entry `index` of stream (new string; "" if absent). */
static char *entry_field(struct t *t, const char *stream, size_t index, const char *field)
{
    redisReply *r = rs_cmd(t->c, "XRANGE %s - +", stream);
    char *v = xstrdup("");
    if (r->type == REDIS_REPLY_ARRAY && index < r->elements) {
        redisReply *fv = r->element[index]->element[1];
        for (size_t i = 0; i + 1 < fv->elements; i += 2)
            if (strcmp(fv->element[i]->str, field) == 0) {
                free(v);
                v = xstrdup(fv->element[i + 1]->str);
            }
    }
    freeReplyObject(r);
    return v;
}

/* How many events of `type` (and phase, if not NULL) are in xm:events. */
static long long count_events(struct t *t, const char *type, const char *phase)
{
    redisReply *r = rs_cmd(t->c, "XRANGE xm:events - +");
    long long n = 0;
    for (size_t e = 0; e < r->elements; e++) {
        redisReply *fv = r->element[e]->element[1];
        int type_ok = 0, phase_ok = phase == NULL;
        for (size_t i = 0; i + 1 < fv->elements; i += 2) {
            if (strcmp(fv->element[i]->str, "type") == 0)
                type_ok = strcmp(fv->element[i + 1]->str, type) == 0;
            if (phase && strcmp(fv->element[i]->str, "phase") == 0)
                phase_ok = strcmp(fv->element[i + 1]->str, phase) == 0;
        }
        n += type_ok && phase_ok;
    }
    freeReplyObject(r);
    return n;
}

static int logs_contain(struct t *t, const char *name, const char *needle)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s.log", t->srv.dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/*
 * Every entry the runtime wrote must match its schema in schemas/: the job envelopes
 * of each phase stream, xm:events and xm:dead. Entries a test wrote by hand (the
 * malformed ones) are skipped by passing skip_stream.
 */
static struct jsonschema_set *schemas;

static void check_stream(struct t *t, const char *stream, const char *schema)
{
    const struct jsonschema *s = jsonschema_set_get(schemas, schema);
    assert_non_null(s);
    redisReply *r = rs_cmd(t->c, "XRANGE %s - +", stream);
    for (size_t e = 0; r->type == REDIS_REPLY_ARRAY && e < r->elements; e++) {
        redisReply *fv = r->element[e]->element[1];
        json_t *o = json_object();
        for (size_t i = 0; i + 1 < fv->elements; i += 2)
            json_object_set_new(o, fv->element[i]->str, json_string(fv->element[i + 1]->str));
        struct err err = {0};
        if (jsonschema_check(s, o, &err) < 0)
            fail_msg("%s entry %s does not match %s.json: %s", stream,
                     r->element[e]->element[0]->str, schema, err.msg);
        json_decref(o);
    }
    freeReplyObject(r);
}

static void check_all_streams(struct t *t, const char *skip_stream)
{
    redisReply *keys = rs_cmd(t->c, "KEYS xm:q:*");
    for (size_t i = 0; i < keys->elements; i++)
        if (!skip_stream || strcmp(keys->element[i]->str, skip_stream) != 0)
            check_stream(t, keys->element[i]->str, "job");
    freeReplyObject(keys);
    check_stream(t, "xm:events", "event");
    check_stream(t, "xm:dead", "dead");
}

/* ---------------------------------------------------------------- tests */

/* Two workers of one phase, started one after the other, share one group; creating it
 * again is answered BUSYGROUP and is not an error for the runtime. */
static void test_busygroup_idempotent(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", NULL, NULL, NULL);
    struct cond k = {t, "xm:worker:a", NULL, NULL, 0};
    assert_true(wait_until(key_exists, &k, 5000));
    worker(t, "b", "p", NULL, NULL, NULL);
    k.a = "xm:worker:b";
    assert_true(wait_until(key_exists, &k, 5000));

    redisReply *r = rs_cmd(t->c, "XINFO GROUPS xm:q:p");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
    r = rs_cmd(t->c, "XGROUP CREATE xm:q:p workers 0 MKSTREAM");
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "BUSYGROUP"));
    freeReplyObject(r);

    enqueue_job(t->c, "p", "m1", "h1", NULL, "{}");
    wait_status(t, "m1", "h1", "done", 5000);
    assert_false(logs_contain(t, "a", "level=error"));
    assert_false(logs_contain(t, "b", "level=error"));
}

/* A worker killed mid-job and restarted under the same consumer name runs its own
 * pending entry first (nobody else is there to take it over). */
static void test_pending_recovery_after_restart(void **state)
{
    struct t *t = *state;
    pid_t a = worker(t, "c1", "p", "q", "XM_VISIBILITY_TIMEOUT_MS=600000", NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"sleep_ms\": 800}");
    wait_status(t, "m1", "h1", "running", 5000);
    stop_process(a, SIGKILL);
    forget(t, a);
    assert_int_equal(pending(t, "xm:q:p"), 1);

    worker(t, "c1", "p", "q", "XM_VISIBILITY_TIMEOUT_MS=600000", NULL);
    wait_status(t, "m1", "h1", "queued", 10000); /* handed off to q */
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *by = rs_str(t->c, "HGET xm:noop:%s worker", id);
    assert_string_equal(by, "c1");
    assert_int_equal(pending(t, "xm:q:p"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 1);
    assert_true(logs_contain(t, "c1", "own pending entries drained"));
    free(by);
    free(id);
}

/* A worker SIGKILLed mid-job stops refreshing its entry; another worker takes it over
 * with XAUTOCLAIM after the visibility timeout and finishes it. */
static void test_xautoclaim_takeover(void **state)
{
    struct t *t = *state;
    pid_t a = worker(t, "a", "p", "q", NULL, NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"sleep_ms\": 2500}");
    wait_status(t, "m1", "h1", "running", 5000);
    /* While a is alive its heartbeat keeps the entry from being taken over. */
    pid_t b = worker(t, "b", "p", "q", NULL, NULL);
    (void)b;
    stop_process(a, SIGKILL);
    forget(t, a);

    wait_status(t, "m1", "h1", "queued", 15000);
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *by = rs_str(t->c, "HGET xm:noop:%s worker", id);
    assert_string_equal(by, "b");
    assert_int_equal(pending(t, "xm:q:p"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 1);
    assert_true(logs_contain(t, "b", "job taken over"));
    free(by);
    free(id);
}

/* A live worker with a job longer than the visibility timeout keeps it: its heartbeat
 * refreshes the entry, so the other worker never takes it over. */
static void test_long_job_not_stolen(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", NULL, NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"sleep_ms\": 3000}");
    wait_status(t, "m1", "h1", "running", 5000);
    worker(t, "b", "p", "q", NULL, NULL);
    wait_status(t, "m1", "h1", "queued", 15000);
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *by = rs_str(t->c, "HGET xm:noop:%s worker", id);
    assert_string_equal(by, "a");
    assert_false(logs_contain(t, "b", "job taken over"));
    assert_int_equal(count_events(t, "job.done", "p"), 1);
    free(by);
    free(id);
}

/* Transient failures are retried with growing delays, then dead-lettered at the last
 * attempt with the error, and the host is marked failed with a readable reason. */
static void test_retry_backoff_then_dead(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", "XM_MAX_ATTEMPTS=3", NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"fail\": \"transient\"}");
    wait_xlen(t, "xm:dead", 1, 10000);
    wait_status(t, "m1", "h1", "failed", 5000);

    char *attempt = entry_field(t, "xm:dead", 0, "attempt");
    char *error = entry_field(t, "xm:dead", 0, "error");
    char *kind = entry_field(t, "xm:dead", 0, "kind");
    assert_string_equal(attempt, "3");
    assert_string_equal(error, "injected transient failure at attempt 3");
    assert_string_equal(kind, "transient");
    char *reason = rs_str(t->c, "HGET xm:host:m1:h1 error");
    assert_string_equal(reason, "p: injected transient failure at attempt 3");
    assert_int_equal(count_events(t, "job.retry", "p"), 2);
    assert_int_equal(count_events(t, "job.dead", "p"), 1);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 0);
    assert_int_equal(pending(t, "xm:q:p"), 0);
    assert_int_equal(rs_int(t->c, "ZCARD xm:delayed:p"), 0);
    check_all_streams(t, NULL);

    /* The delays grow: attempt 1 waits 25..50 ms, attempt 2 waits 50..100 ms. */
    redisReply *r = rs_cmd(t->c, "XRANGE xm:events - +");
    long long delays[2] = {0, 0};
    int nd = 0;
    for (size_t e = 0; e < r->elements && nd < 2; e++) {
        redisReply *fv = r->element[e]->element[1];
        for (size_t i = 0; i + 1 < fv->elements; i += 2)
            if (strcmp(fv->element[i]->str, "msg") == 0 &&
                sscanf(fv->element[i + 1]->str, "retry in %lld ms", &delays[nd]) == 1)
                nd++;
    }
    freeReplyObject(r);
    assert_int_equal(nd, 2);
    assert_in_range(delays[0], 25, 50);
    assert_in_range(delays[1], 50, 100);
    free(attempt);
    free(error);
    free(kind);
    free(reason);
}

static void test_retry_then_success(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", "XM_MAX_ATTEMPTS=5", NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"fail\": \"transient\", \"fail_until\": 2}");
    wait_xlen(t, "xm:q:q", 1, 10000);
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *attempt = rs_str(t->c, "HGET xm:noop:%s attempt", id);
    assert_string_equal(attempt, "3");
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 0);
    assert_int_equal(count_events(t, "job.retry", "p"), 2);
    wait_status(t, "m1", "h1", "queued", 1000);
    free(id);
    free(attempt);
}

/* A job that asks to wait goes back with the same attempt (never counted as a failure,
 * even past XM_MAX_ATTEMPTS waits), the host shows queued with the reason meanwhile, one
 * event says so, and the job completes once when it stops waiting. */
static void test_wait_keeps_attempt(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", "XM_MAX_ATTEMPTS=2", NULL);
    char payload[128];
    snprintf(payload, sizeof(payload), "{\"wait_until\": %lld, \"wait_ms\": 100}",
             (long long)time(NULL) * 1000 + 1500);
    enqueue_job(t->c, "p", "m1", "h1", NULL, payload);
    wait_status(t, "m1", "h1", "queued", 5000);
    char *why = NULL;
    for (int i = 0; i < 100 && !(why && why[0]); i++) {
        free(why);
        why = rs_str(t->c, "HGET xm:host:m1:h1 waiting");
        usleep(10000);
    }
    assert_string_equal(why, "injected wait");
    wait_xlen(t, "xm:q:q", 1, 10000);
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *attempt = rs_str(t->c, "HGET xm:noop:%s attempt", id);
    assert_string_equal(attempt, "1");
    /* Offered again every 100 ms for 1.5 s, announced once (not a flood of events). */
    assert_int_equal(count_events(t, "job.waiting", "p"), 1);
    assert_true(rs_int(t->c, "XLEN xm:q:p") >= 5);
    assert_int_equal(count_events(t, "job.retry", "p"), 0);
    assert_int_equal(count_events(t, "job.done", "p"), 1);
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 0);
    char *after = rs_str(t->c, "HGET xm:host:m1:h1 waiting");
    assert_string_equal(after, "");
    assert_int_equal(rs_int(t->c, "ZCARD xm:delayed:p"), 0);
    free(why);
    free(after);
    free(id);
    free(attempt);
}

static void test_permanent_goes_dead_at_once(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", NULL, NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"fail\": \"permanent\"}");
    wait_xlen(t, "xm:dead", 1, 5000);
    char *attempt = entry_field(t, "xm:dead", 0, "attempt");
    char *kind = entry_field(t, "xm:dead", 0, "kind");
    assert_string_equal(attempt, "1");
    assert_string_equal(kind, "permanent");
    assert_int_equal(count_events(t, "job.retry", NULL), 0);
    wait_status(t, "m1", "h1", "failed", 1000);
    free(attempt);
    free(kind);
}

/* Kill the worker at each step of settling a job. Either everything happened (ack,
 * done marker, next job, event) or nothing did; a second worker then completes the job
 * exactly once. */
static void test_atomic_handoff(void **state)
{
    struct t *t = *state;
    static const char *const points[] = {"handled", "in_multi", "before_exec", "after_exec"};
    for (size_t p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
        freeReplyObject(rs_cmd(t->c, "FLUSHALL"));
        char crash[64];
        snprintf(crash, sizeof(crash), "XM_TEST_CRASH=%s", points[p]);
        pid_t a = worker(t, "a", "p", "q", crash, NULL);
        enqueue_job(t->c, "p", "m1", "h1", NULL, "{}");
        int status = wait_process(a, 10000);
        forget(t, a);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 137);

        char *id = entry_field(t, "xm:q:p", 0, "job");
        long long done = rs_int(t->c, "EXISTS xm:done:%s", id);
        long long pend = pending(t, "xm:q:p");
        long long next = rs_int(t->c, "XLEN xm:q:q");
        long long events = count_events(t, "job.done", "p");
        int all = done == 1 && pend == 0 && next == 1 && events == 1;
        int none = done == 0 && pend == 1 && next == 0 && events == 0;
        if (!(all || none))
            fail_msg("crash at %s left a partial hand-off: done=%lld pending=%lld next=%lld "
                     "events=%lld",
                     points[p], done, pend, next, events);
        /* Only a crash after EXEC may have completed it. */
        assert_int_equal(all, strcmp(points[p], "after_exec") == 0);

        pid_t b = worker(t, "b", "p", "q", NULL, NULL);
        struct cond k = {t, NULL, NULL, NULL, 0};
        char done_key[120];
        snprintf(done_key, sizeof(done_key), "xm:done:%s", id);
        k.a = done_key;
        assert_true(wait_until(key_exists, &k, 10000));
        wait_status(t, "m1", "h1", "queued", 5000);
        assert_int_equal(pending(t, "xm:q:p"), 0);
        assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 1);
        assert_int_equal(count_events(t, "job.done", "p"), 1);
        stop_process(b, SIGTERM);
        forget(t, b);
        free(id);
    }
}

/* One clone job fans out 5 disk jobs; two converters finish them in random order; the
 * import job is enqueued exactly once per host. */
static int all_converted(void *arg)
{
    struct cond *k = arg;
    return count_events(k->t, "job.done", "convert") +
                   count_events(k->t, "job.joined", "convert") >=
               k->n &&
           pending(k->t, "xm:q:convert") == 0;
}

static void test_fanin_five_disks(void **state)
{
    struct t *t = *state;
    const int hosts = 12;
    worker(t, "clone", "clone", NULL, NULL, NULL);
    worker(t, "conv1", "convert", "import", NULL, NULL);
    worker(t, "conv2", "convert", "import", NULL, NULL);
    for (int h = 0; h < hosts; h++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", h);
        enqueue_job(t->c, "clone", "m1", host, NULL,
                    "{\"fanout\": 5, \"next\": \"convert\", \"child\": {\"jitter_ms\": 40}}");
    }
    struct cond k = {t, NULL, NULL, NULL, hosts * 5};
    assert_true(wait_until(all_converted, &k, 30000));

    assert_int_equal(rs_int(t->c, "XLEN xm:q:import"), hosts);
    assert_int_equal(count_events(t, "job.done", "convert"), hosts);
    assert_int_equal(count_events(t, "job.joined", "convert"), hosts * 4);
    int seen[64] = {0};
    for (int i = 0; i < hosts; i++) {
        char *host = entry_field(t, "xm:q:import", (size_t)i, "host");
        int h = -1;
        assert_int_equal(sscanf(host, "h%d", &h), 1);
        assert_in_range(h, 0, hosts - 1);
        seen[h]++;
        free(host);
    }
    for (int h = 0; h < hosts; h++) {
        assert_int_equal(seen[h], 1);
        char host[16];
        snprintf(host, sizeof(host), "h%d", h);
        char *phase = rs_str(t->c, "HGET xm:host:m1:%s phase", host);
        assert_string_equal(phase, "import");
        free(phase);
    }
    check_all_streams(t, NULL);
    /* Every group is gone. */
    redisReply *r = rs_cmd(t->c, "KEYS xm:fanin:*");
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
}

/* Redis is killed (SIGKILL) mid-run and restarted from its AOF; the workers reconnect
 * and every job of a 3-stage pipeline completes exactly once. */
static int pipeline_finished(void *arg)
{
    struct cond *k = arg;
    return count_events(k->t, "job.done", "s3") >= k->n;
}

static int done_events_reach(void *arg)
{
    struct cond *k = arg;
    return count_events(k->t, "job.done", NULL) >= k->n;
}

static void test_redis_restart_mid_run(void **state)
{
    struct t *t = *state;
    const int jobs = 150;
    worker(t, "w1", "s1", "s2", NULL, NULL);
    worker(t, "w2", "s2", "s3", NULL, NULL);
    worker(t, "w3", "s3", NULL, NULL, NULL);
    for (int i = 0; i < jobs; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        enqueue_job(t->c, "s1", "m1", host, NULL, "{\"sleep_ms\": 3}");
    }
    struct cond some = {t, NULL, NULL, NULL, 60};
    assert_true(wait_until(done_events_reach, &some, 20000));

    redisFree(t->c);
    rs_stop(&t->srv, SIGKILL);
    rs_restart(&t->srv);
    t->c = rs_connect(&t->srv);

    struct cond k = {t, NULL, NULL, NULL, jobs};
    if (!wait_until(pipeline_finished, &k, 60000))
        fail_msg("only %lld of %d jobs finished stage s3 after the restart",
                 count_events(t, "job.done", "s3"), jobs);
    assert_int_equal(count_events(t, "job.done", "s3"), jobs);
    assert_int_equal(count_events(t, "job.done", "s2"), jobs);
    assert_int_equal(count_events(t, "job.done", "s1"), jobs);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:s2"), jobs);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:s3"), jobs);
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 0);
    for (int i = 0; i < jobs; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        wait_status(t, "m1", host, "done", 1000);
    }
    assert_true(logs_contain(t, "w1", "redis connection lost") ||
                logs_contain(t, "w2", "redis connection lost") ||
                logs_contain(t, "w3", "redis connection lost"));
}

/* SIGTERM mid-job: the worker gives the job back at once and exits 0; another worker
 * runs it, still as attempt 1. */
static void test_sigterm_releases_job(void **state)
{
    struct t *t = *state;
    pid_t a = worker(t, "a", "p", "q", "XM_VISIBILITY_TIMEOUT_MS=600000", NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"sleep_ms\": 1500}");
    wait_status(t, "m1", "h1", "running", 5000);
    long long t0 = mono_ms();
    int status = stop_process(a, SIGTERM);
    forget(t, a);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(mono_ms() - t0 < 1000);
    assert_int_equal(pending(t, "xm:q:p"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:p"), 2);
    assert_int_equal(count_events(t, "job.released", "p"), 1);
    check_all_streams(t, NULL);
    struct cond k = {t, "xm:worker:a", NULL, NULL, 0};
    assert_true(wait_until(key_gone, &k, 1000));

    worker(t, "b", "p", "q", NULL, NULL);
    wait_xlen(t, "xm:q:q", 1, 10000);
    char *id = entry_field(t, "xm:q:p", 0, "job");
    char *attempt = rs_str(t->c, "HGET xm:noop:%s attempt", id);
    assert_string_equal(attempt, "1");
    free(id);
    free(attempt);
}

/* The heartbeat key shows who is alive and what it does. */
static int heartbeat_shows_job(void *arg)
{
    struct cond *k = arg;
    char *v = rs_str(k->t->c, "GET xm:worker:a");
    int ok = strstr(v, "\"job\":\"") && !strstr(v, "\"job\":\"\"") && strstr(v, "\"phase\":\"p\"");
    free(v);
    return ok;
}

static void test_heartbeat_key(void **state)
{
    struct t *t = *state;
    pid_t a = worker(t, "a", "p", NULL, NULL, NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"sleep_ms\": 1000}");
    struct cond k = {t, NULL, NULL, NULL, 0};
    assert_true(wait_until(heartbeat_shows_job, &k, 5000));
    char *v = rs_str(t->c, "GET xm:worker:a");
    char pid[32];
    snprintf(pid, sizeof(pid), "\"pid\":%d", (int)a);
    assert_non_null(strstr(v, pid));
    free(v);
    long long ttl = rs_int(t->c, "PTTL xm:worker:a");
    assert_in_range(ttl, 1, 300);
}

/* Entries that are not valid jobs go to xm:dead with an error naming the field. */
static void test_malformed_entries(void **state)
{
    struct t *t = *state;
    worker(t, "a", "p", "q", NULL, NULL);
    freeReplyObject(rs_cmd(t->c,
                           "XADD xm:q:p * job %s migration m1 host h1 phase p attempt 1 "
                           "payload {}",
                           "bad id!"));
    freeReplyObject(rs_cmd(t->c,
                           "XADD xm:q:p * job j2 migration m1 host h2 phase p attempt 1 "
                           "payload %s",
                           "not-json"));
    freeReplyObject(rs_cmd(t->c,
                           "XADD xm:q:p * job j3 migration %s host h3 phase p attempt 1 "
                           "payload {}",
                           "m1;rm -rf /"));
    wait_xlen(t, "xm:dead", 3, 5000);
    char *e0 = entry_field(t, "xm:dead", 0, "error");
    char *e1 = entry_field(t, "xm:dead", 1, "error");
    char *e2 = entry_field(t, "xm:dead", 2, "error");
    assert_non_null(strstr(e0, "job: missing or not a valid job id"));
    assert_non_null(strstr(e1, "payload: not JSON"));
    assert_non_null(strstr(e2, "migration: not a valid identifier"));
    wait_status(t, "m1", "h2", "failed", 2000);
    assert_int_equal(pending(t, "xm:q:p"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 0);
    check_all_streams(t, "xm:q:p"); /* the bad entries themselves are skipped */
    free(e0);
    free(e1);
    free(e2);
}

/* A job that kills every worker that runs it is dead-lettered after XM_MAX_ATTEMPTS
 * deliveries instead of crashing workers for ever. */
static void test_poison_pill(void **state)
{
    struct t *t = *state;
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{\"abort\": true}");
    long long deadline = mono_ms() + 30000;
    int spawned = 0;
    while (rs_int(t->c, "XLEN xm:dead") == 0 && mono_ms() < deadline) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", spawned++);
        pid_t w = worker(t, name, "p", "q", "XM_MAX_ATTEMPTS=2", NULL);
        /* Each one either dies on the job or dead-letters it. */
        struct cond k = {t, "xm:dead", NULL, NULL, 1};
        while (!xlen_at_least(&k) && wait_process(w, 50) == -1 && mono_ms() < deadline)
            ;
        if (xlen_at_least(&k))
            break;
        forget(t, w);
    }
    assert_int_equal(rs_int(t->c, "XLEN xm:dead"), 1);
    char *error = entry_field(t, "xm:dead", 0, "error");
    assert_non_null(strstr(error, "taken over"));
    assert_int_equal(pending(t, "xm:q:p"), 0);
    free(error);
}

/* Jobs of a cancelled migration are acked and dropped: nothing is handed off. */
static void test_cancelled_migration_drops_jobs(void **state)
{
    struct t *t = *state;
    freeReplyObject(rs_cmd(t->c, "HSET xm:mig:m1 status cancelled"));
    worker(t, "a", "p", "q", NULL, NULL);
    enqueue_job(t->c, "p", "m1", "h1", NULL, "{}");
    enqueue_job(t->c, "p", "m2", "h1", NULL, "{}"); /* another migration goes on */
    wait_status(t, "m1", "h1", "cancelled", 5000);
    wait_status(t, "m2", "h1", "queued", 5000);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:q"), 1);
    char *mig = entry_field(t, "xm:q:q", 0, "migration");
    assert_string_equal(mig, "m2");
    assert_int_equal(count_events(t, "job.cancelled", "p"), 1);
    assert_int_equal(pending(t, "xm:q:p"), 0);
    check_all_streams(t, NULL);
    free(mig);
}

/* The last host to reach an end (running after import, or failed) ends the migration,
 * once, with its event: here one host runs and one fails -> partially_failed. */
static void test_last_host_ends_the_migration(void **state)
{
    struct t *t = *state;
    freeReplyObject(rs_cmd(t->c, "HSET xm:mig:m1 status migrating"));
    freeReplyObject(rs_cmd(t->c, "SADD xm:mig:m1:hosts h1 h2 h3"));
    worker(t, "a", "import", NULL, NULL, NULL);
    worker(t, "b", "import", NULL, NULL, NULL);
    enqueue_job(t->c, "import", "m1", "h1", NULL, "{}");
    enqueue_job(t->c, "import", "m1", "h2", NULL, "{\"fail\": \"permanent\"}");
    wait_status(t, "m1", "h1", "done", 5000);
    wait_status(t, "m1", "h2", "failed", 5000);
    char *st = rs_str(t->c, "HGET xm:mig:m1 status");
    assert_string_equal(st, "migrating"); /* h3 has not ended */
    free(st);
    enqueue_job(t->c, "import", "m1", "h3", NULL, "{}");
    wait_status(t, "m1", "h3", "done", 5000);
    st = rs_str(t->c, "HGET xm:mig:m1 status");
    assert_string_equal(st, "partially_failed");
    free(st);
    assert_int_equal(count_events(t, "migration.partially_failed", NULL), 1);
    check_all_streams(t, NULL);
}

/* A migration-level job (host "-") starts each host's pipeline: one job per host, and
 * each host's record shows it queued for that phase; "-" gets no record. */
static void test_migration_level_handoff(void **state)
{
    struct t *t = *state;
    worker(t, "a", "network", "prep", NULL, NULL);
    enqueue_job(t->c, "network", "m1", "-", NULL, "{\"to_hosts\": [\"web1\", \"db1\"]}");
    wait_xlen(t, "xm:q:prep", 2, 5000);
    wait_status(t, "m1", "web1", "queued", 1000);
    wait_status(t, "m1", "db1", "queued", 1000);
    char *h0 = entry_field(t, "xm:q:prep", 0, "host");
    char *h1 = entry_field(t, "xm:q:prep", 1, "host");
    assert_string_equal(h0, "web1");
    assert_string_equal(h1, "db1");
    char *phase = rs_str(t->c, "HGET xm:host:m1:web1 phase");
    assert_string_equal(phase, "prep");
    assert_int_equal(rs_int(t->c, "EXISTS xm:host:m1:-"), 0);
    check_all_streams(t, NULL);
    free(h0);
    free(h1);
    free(phase);
}

/* Nested fan-in, as convert needs it: each host's clone fans out 2 disk jobs (group G1,
 * next: import); each disk job fans out 3 shards (group G2, made by a member of G1); the
 * shard that ends G2 hands off one "finish" job that continues the disk's place in G1;
 * the finish job that ends G1 hands off import. Exactly one finish per disk and one
 * import per host, and import only after every finish. */
static int nested_done(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN xm:q:import") >= k->n &&
           count_events(k->t, "job.done", "finish") + count_events(k->t, "job.joined", "finish") >=
               2 * k->n;
}

static void test_nested_fanin(void **state)
{
    struct t *t = *state;
    const int hosts = 4;
    worker(t, "clone", "clone", NULL, NULL, NULL);
    worker(t, "conv", "convert", NULL, NULL, NULL);
    worker(t, "shard1", "shard", NULL, NULL, NULL);
    worker(t, "shard2", "shard", NULL, NULL, NULL);
    worker(t, "finish", "finish", "import", NULL, NULL);
    for (int h = 0; h < hosts; h++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", h);
        enqueue_job(t->c, "clone", "m1", host, NULL,
                    "{\"fanout\": 2, \"next\": \"convert\", \"child\": {\"fanout\": 3, "
                    "\"next\": \"shard\", \"child\": {\"next\": \"finish\", \"jitter_ms\": 30}}}");
    }
    struct cond k = {t, NULL, NULL, NULL, hosts};
    assert_true(wait_until(nested_done, &k, 60000));
    /* Settled: nothing pending anywhere, no group left. */
    assert_int_equal(pending(t, "xm:q:shard"), 0);
    assert_int_equal(pending(t, "xm:q:finish"), 0);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:import"), hosts);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:finish"), 2 * hosts);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:shard"), 6 * hosts);
    int seen[8] = {0};
    for (int i = 0; i < hosts; i++) {
        char *host = entry_field(t, "xm:q:import", (size_t)i, "host");
        int h = -1;
        assert_int_equal(sscanf(host, "h%d", &h), 1);
        assert_in_range(h, 0, hosts - 1);
        seen[h]++;
        free(host);
    }
    for (int h = 0; h < hosts; h++)
        assert_int_equal(seen[h], 1);
    /* Each import was enqueued after the last finish of its host was settled. */
    redisReply *ev = rs_cmd(t->c, "XRANGE xm:events - +");
    for (int i = 0; i < hosts; i++) {
        char *host = entry_field(t, "xm:q:import", (size_t)i, "host");
        char *enq = entry_field(t, "xm:q:import", (size_t)i, "enqueued");
        long long import_at = strtoll(enq, NULL, 10), last_finish = 0;
        for (size_t e = 0; e < ev->elements; e++) {
            redisReply *fv = ev->element[e]->element[1];
            const char *ph = "", *hh = "", *ts = "0";
            for (size_t f = 0; f + 1 < fv->elements; f += 2) {
                if (strcmp(fv->element[f]->str, "phase") == 0)
                    ph = fv->element[f + 1]->str;
                if (strcmp(fv->element[f]->str, "host") == 0)
                    hh = fv->element[f + 1]->str;
                if (strcmp(fv->element[f]->str, "picked") == 0)
                    ts = fv->element[f + 1]->str;
            }
            if (strcmp(ph, "finish") == 0 && strcmp(hh, host) == 0 &&
                strtoll(ts, NULL, 10) > last_finish)
                last_finish = strtoll(ts, NULL, 10);
        }
        assert_true(last_finish > 0 && import_at >= last_finish);
        free(host);
        free(enq);
    }
    freeReplyObject(ev);
    redisReply *r = rs_cmd(t->c, "KEYS xm:fanin:*");
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    check_all_streams(t, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_busygroup_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_recovery_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xautoclaim_takeover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_job_not_stolen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_backoff_then_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_goes_dead_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_keeps_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_host_ends_the_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_handoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fanin_five_disks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart_mid_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_releases_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_pill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_migration_drops_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_level_handoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_fanin, setup, teardown),
    };
    struct err err = {0};
    schemas = jsonschema_set_load_dir(XM_SCHEMAS_DIR, &err);
    if (!schemas) {
        fprintf(stderr, "cannot load schemas: %s\n", err.msg);
        return 1;
    }
    if (getenv("XM_TEST_FILTER")) /* e.g. XM_TEST_FILTER='*fanin*' */
        cmocka_set_test_filter(getenv("XM_TEST_FILTER"));
    int rc = cmocka_run_group_tests_name("integration.queue", tests, NULL, NULL);
    jsonschema_set_free(schemas);
    return rc;
}
