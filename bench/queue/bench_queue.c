/*
 * bench_queue: sustained throughput and hand-off latency of the queue runtime.
 *
 * N no-op jobs go through a 6-stage pipeline (xm-noop s1 s2, xm-noop s2 s3, ...,
 * xm-noop s6), first with one worker process per stage, then with two, against a
 * redis-server of our own started the production way (AOF on, appendfsync always).
 * `redis-benchmark` XADD against the same server in the same run is the baseline.
 *
 * Backlog runs (1 and 2 workers per stage), each:
 *   1. FLUSHALL, then BGREWRITEAOF so every run starts from a small AOF.
 *   2. Enqueue the N jobs into xm:q:s1 (pipelined XADD of the full job envelope) before
 *      any worker exists, so what is timed is the sustained pipeline, not the producer.
 *   3. Start the workers; the clock runs from their start until xm:events holds 6*N
 *      entries (each settle transaction adds exactly one event), polled with XLEN.
 *   4. transitions/s = 6*N / wall seconds. Hand-off latency of a job of stages 2..6 is
 *      `picked - enqueued` from its job.done event: from the moment the previous stage
 *      built the transaction that enqueued it until a worker of this stage read it.
 *   5. Redis work per transition from INFO commandstats deltas; CPU of redis-server, of
 *      its AOF rewrite children, of the workers and of the whole machine from /proc over
 *      the timed window.
 * With a backlog, hand-off latency is mostly queueing; the paced runs measure it at a
 * given load: workers first, then a producer XADDs jobs at RATE/6 per second for S
 * seconds, timed from the first XADD to the last job.done (same figures otherwise).
 *
 * The figures mean nothing if other processes compete for the cores: the program waits
 * (bounded) for an idle machine first, and flags every run during which something else
 * was busy (`trustworthy=0`).
 *
 *   bench_queue [--jobs N] [--batch B] [--paced RATE,...|none] [--paced-s S]
 *               [--quiet-wait S] [--fsync always|everysec|always,everysec] [--noop PATH]

 * A human-readable report and `queue.*=value` lines for scripts on stdout (the figures
 * of appendfsync always under `queue.`, of everysec under `queue.everysec.`), progress on
 * stderr. Exits 0 after a complete run, whether or not the targets are met (see
 * queue.target=PASS|MISS), 2 on bad usage, 3 when the run cannot be completed.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "harness.h"
#include "job.h"
#include "keys.h"
#include "xmalloc.h"

#ifndef XM_NOOP_BIN
#error "XM_NOOP_BIN must name the xm-noop binary"
#endif

#define STAGES 6
#define MAX_PER_STAGE 2
#define ENQUEUE_CHUNK 1000
#define PACED_CHUNK 200
#define EVENTS_PAGE 10000
#define STALL_MS 60000
#define BACKGROUND_SAMPLE_MS 500
#define BACKGROUND_WARN 0.10
#define OTHER_WARN 0.15

/* The targets of the issue, for this 2-core machine. */
#define TARGET_TRANSITIONS_PER_S 10000.0
#define TARGET_P99_MS 5.0

/* Baseline: the one key the benchmark owns outside xm:, dropped by FLUSHALL. */
#define BASELINE_KEY "bench:xadd"
#define BASELINE_CLIENTS "50"
#define BASELINE_REQUESTS "200000"

/* Event type written by the runtime's DONE transaction (queue/worker.c). */
#define EVENT_DONE "job.done"

#define MAX_PACED 8
/* Paced runs: offered load in transitions/s (the target, and fractions of it). */
#define DEFAULT_PACED "2500,5000,10000"

struct opts {
    long long jobs;  /* backlog runs */
    long long batch; /* XM_BATCH of every worker */
    const char *noop;
    const char *fsync_modes[2];
    int n_fsync;
    double paced[MAX_PACED]; /* offered transitions/s of the paced runs */
    int n_paced;
    double paced_s;      /* how long a paced producer runs */
    double quiet_wait_s; /* wait up to this long for other processes to finish first */
};

/* What to clean up when the run cannot go on: the workers and the server we started. */
static struct {
    struct redis_srv *srv;
    pid_t workers[STAGES * MAX_PER_STAGE];
    int n_workers;
} started;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void cleanup(void)
{
    for (int i = 0; i < started.n_workers; i++)
        if (started.workers[i] > 0)
            stop_process(started.workers[i], SIGKILL);
    started.n_workers = 0;
    if (started.srv)
        rs_destroy(started.srv);
    started.srv = NULL;
}

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_queue: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup();
    exit(3);
}

static void check_interrupted(void)
{
    if (interrupted)
        die("interrupted");
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- CPU accounting */

/* CPU seconds (user + system, all threads) a live process has used, and with
 * children != 0 those of its children it has waited for (redis-server's AOF rewrite
 * children); -1 if unreadable. */
static double proc_cpu(pid_t pid, int children)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    long long cutime = 0, cstime = 0;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &utime,
               &stime, &cutime, &cstime) != 4)
        return -1;
    double ticks = children ? (double)(cutime + cstime) : (double)(utime + stime);
    return ticks / (double)sysconf(_SC_CLK_TCK);
}

static double proc_cpu_s(pid_t pid)
{
    return proc_cpu(pid, 0);
}

/* Jiffies of the whole machine (first line of /proc/stat): busy in processes (user,
 * nice, system, steal), in interrupts (irq, softirq: mostly loopback networking done on
 * behalf of whoever is running), and in total. */
struct sys_cpu {
    unsigned long long busy, irq, total;
};

static struct sys_cpu sys_cpu_now(void)
{
    struct sys_cpu s = {0, 0, 0};
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return s;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8)
        return s;
    /* guest and guest_nice (v[8], v[9]) are already counted in user and nice. */
    for (int i = 0; i < 8; i++)
        s.total += v[i];
    s.busy = v[0] + v[1] + v[2] + v[7];
    s.irq = v[5] + v[6];
    return s;
}

/* Fraction of all cores busy in processes over the next ms milliseconds, less what
 * `exclude` (may be 0) and this process used meanwhile. */
static double sys_busy_over(long ms, pid_t exclude)
{
    struct sys_cpu a = sys_cpu_now();
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double x0 = exclude > 0 ? proc_cpu(exclude, 0) + proc_cpu(exclude, 1) : 0;
    nap_ms(ms);
    struct sys_cpu b = sys_cpu_now();
    getrusage(RUSAGE_SELF, &r1);
    double x1 = exclude > 0 ? proc_cpu(exclude, 0) + proc_cpu(exclude, 1) : 0;
    if (b.total <= a.total)
        return 0;
    double self = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                  (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                  (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                  (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    double ours = (x1 - x0 + self) * (double)sysconf(_SC_CLK_TCK);
    double busy = ((double)(b.busy - a.busy) - ours) / (double)(b.total - a.total);
    return busy > 0 ? busy : 0;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- redis INFO */

struct cmdstat {
    char name[64];
    long long calls;
    long long usec;
};

struct cmdstats {
    struct cmdstat *v;
    size_t n;
};

static void cmdstats_read(redisContext *c, struct cmdstats *out)
{
    char *info = rs_str(c, "INFO commandstats");
    out->v = NULL;
    out->n = 0;
    for (char *line = info, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        struct cmdstat s; /* name[64]: at most 63 characters */
        if (sscanf(line, "cmdstat_%63[^:]:calls=%lld,usec=%lld", s.name, &s.calls, &s.usec) != 3)
            continue;
        out->v = xrealloc(out->v, sizeof(*out->v) * (out->n + 1));
        out->v[out->n++] = s;
    }
    free(info);
}

static void cmdstats_release(struct cmdstats *s)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* after - before, per command, into after (commands absent before count from zero). */
static void cmdstats_delta(struct cmdstats *after, const struct cmdstats *before)
{
    for (size_t i = 0; i < after->n; i++)
        for (size_t j = 0; j < before->n; j++)
            if (strcmp(after->v[i].name, before->v[j].name) == 0) {
                after->v[i].calls -= before->v[j].calls;
                after->v[i].usec -= before->v[j].usec;
                break;
            }
}

static int cmdstat_by_calls(const void *a, const void *b)
{
    const struct cmdstat *x = a, *y = b;
    return (y->calls > x->calls) - (y->calls < x->calls);
}

/* Integer field `name` of an INFO section; -1 when absent. */
static long long info_ll(redisContext *c, const char *section, const char *name)
{
    char *info = rs_str(c, "INFO %s", section);
    long long v = -1;
    size_t len = strlen(name);
    for (char *p = info; (p = strstr(p, name)) != NULL; p += len) {
        if ((p == info || p[-1] == '\n') && p[len] == ':') {
            v = strtoll(p + len + 1, NULL, 10);
            break;
        }
    }
    free(info);
    return v;
}

static char *config_get(redisContext *c, const char *name)
{
    redisReply *r = rs_cmd(c, "CONFIG GET %s", name);
    char *v = xstrdup(r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->str : "?");
    freeReplyObject(r);
    return v;
}

static void expect_ok(redisContext *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_ok(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        die("'%s' failed: %s", fmt, r ? r->str : c->errstr);
    freeReplyObject(r);
}

/* Wait (with a deadline) until no AOF rewrite is running or scheduled. */
static void wait_aof_rewrite(redisContext *c)
{
    long long deadline = mono_ms() + 120000;
    while (info_ll(c, "persistence", "aof_rewrite_in_progress") != 0 ||
           info_ll(c, "persistence", "aof_rewrite_scheduled") != 0) {
        if (mono_ms() > deadline)
            die("AOF rewrite still running after 120 s");
        nap_ms(20);
    }
}

/* Empty the server and shrink the AOF, so each run starts from the same state. */
static void fresh_server(redisContext *c)
{
    wait_aof_rewrite(c);
    expect_ok(c, "FLUSHALL SYNC");
    expect_ok(c, "BGREWRITEAOF");
    nap_ms(10);
    wait_aof_rewrite(c);
}

/* ---------------------------------------------------------------- baseline */

struct baseline {
    double rps;
    double p50_ms;
};

/* redis-benchmark -q XADD against srv: its "requests per second" figure. */
static struct baseline run_baseline(const struct redis_srv *srv)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", srv->port);
    char *argv[] = {"redis-benchmark",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    port,
                    "-c",
                    BASELINE_CLIENTS,
                    "-n",
                    BASELINE_REQUESTS,
                    "-q",
                    "XADD",
                    BASELINE_KEY,
                    "*",
                    "f",
                    "v",
                    NULL};
    int fds[2];
    if (pipe(fds) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *out = xmalloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            out = xrealloc(out, cap *= 2);
        ssize_t n = read(fds[0], out + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("redis-benchmark failed (status %d; is it installed?)", status);

    /* -q prints progress lines ending in \r, then "<cmd>: 96711.80 requests per second,
     * p50=0.439 msec". Take the last such figure. */
    struct baseline b = {0, 0};
    const char *last = NULL;
    for (const char *p = out; (p = strstr(p, " requests per second")) != NULL; p++)
        last = p;
    if (last) {
        const char *num = last;
        while (num > out && num[-1] != ' ')
            num--;
        b.rps = strtod(num, NULL);
        const char *p50 = strstr(last, "p50=");
        if (p50)
            b.p50_ms = strtod(p50 + 4, NULL);
    }
    free(out);
    if (b.rps <= 0)
        die("cannot read the requests/s figure from redis-benchmark's output");
    return b;
}

/* ---------------------------------------------------------------- enqueue */

/* XADD jobs first..first+n-1 (host h<index>) into xm:q:s1 in one pipeline, stamped now. */
static void enqueue_range(redisContext *c, struct cmd *cmd, long long first, long long n)
{
    for (long long i = 0; i < n; i++) {
        char host[32];
        snprintf(host, sizeof(host), "h%07lld", first + i);
        struct job_spec spec = {.migration = "bench", .host = host, .phase = "s1"};
        job_spec_xadd(cmd, &spec, job_now_us());
        if (cmd_append(c, cmd) < 0)
            die("hiredis refused a command: %s", c->errstr);
    }
    for (long long i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            die("enqueue: %s", c->errstr);
        if (r->type == REDIS_REPLY_ERROR)
            die("enqueue: %s", r->str);
        freeReplyObject(r);
    }
}

/* The backlog: n jobs as fast as pipelining allows. Returns seconds taken. */
static double enqueue_backlog(redisContext *c, long long n)
{
    struct cmd cmd;
    cmd_init(&cmd);
    double t0 = mono_s();
    for (long long done = 0; done < n; done += ENQUEUE_CHUNK)
        enqueue_range(c, &cmd, done, n - done < ENQUEUE_CHUNK ? n - done : ENQUEUE_CHUNK);
    cmd_release(&cmd);
    return mono_s() - t0;
}

/* Paced: n jobs at jobs_per_s, each XADDed when it is due (a late producer catches up in
 * chunks of at most PACED_CHUNK). */
static void enqueue_paced(redisContext *c, long long n, double jobs_per_s)
{
    struct cmd cmd;
    cmd_init(&cmd);
    double t0 = mono_s();
    for (long long sent = 0; sent < n;) {
        long long due = (long long)((mono_s() - t0) * jobs_per_s) + 1;
        if (due > n)
            due = n;
        check_interrupted();
        if (due <= sent) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
            continue;
        }
        long long chunk = due - sent < PACED_CHUNK ? due - sent : PACED_CHUNK;
        enqueue_range(c, &cmd, sent, chunk);
        sent += chunk;
    }
    cmd_release(&cmd);
}

/* ---------------------------------------------------------------- latencies */

struct lat {
    long long *v; /* microseconds */
    size_t n, cap;
};

static void lat_add(struct lat *l, long long us)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = xrealloc(l->v, sizeof(*l->v) * l->cap);
    }
    l->v[l->n++] = us;
}

static int ll_cmp(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void lat_sort(struct lat *l)
{
    qsort(l->v, l->n, sizeof(*l->v), ll_cmp);
}

/* Nearest-rank percentile of a sorted set, in milliseconds. */
static double lat_pct_ms(const struct lat *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)l->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return (double)l->v[rank - 1] / 1000.0;
}

struct events {
    struct lat handoff;            /* stages 2..6: picked - enqueued */
    struct lat handoff_by[STAGES]; /* per stage; s1's is from the benchmark's own XADD */
    struct lat in_worker;          /* all stages: event ts - picked */
    long long done_by[STAGES];     /* job.done events per stage */
    long long other;               /* events of any other type (retries, dead, ...) */
};

/* "s1".."s6" -> 0..5; -1 for anything else. */
static int stage_index(const char *phase)
{
    long long n;
    if (!phase || phase[0] != 's' || config_parse_ll(phase + 1, 1, STAGES, &n) < 0)
        return -1;
    return (int)n - 1;
}

static const char *field(const redisReply *fv, const char *name)
{
    for (size_t i = 0; i + 1 < fv->elements; i += 2)
        if (strcmp(fv->element[i]->str, name) == 0)
            return fv->element[i + 1]->str;
    return NULL;
}

static long long field_ll(const redisReply *fv, const char *name)
{
    const char *s = field(fv, name);
    return s ? strtoll(s, NULL, 10) : -1;
}

/* Read all of xm:events in pages and collect the latencies. */
static void read_events(redisContext *c, struct events *ev)
{
    memset(ev, 0, sizeof(*ev));
    char start[64] = "-";
    for (;;) {
        redisReply *r = rs_cmd(c, "XRANGE %s %s + COUNT %d", XM_EVENTS, start, EVENTS_PAGE);
        if (r->type != REDIS_REPLY_ARRAY)
            die("XRANGE %s: %s", XM_EVENTS, r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        size_t n = r->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = r->element[i];
            const redisReply *fv = e->element[1];
            const char *type = field(fv, XM_F_TYPE), *phase = field(fv, XM_F_PHASE);
            int stage = stage_index(phase);
            if (!type || strcmp(type, EVENT_DONE) != 0 || stage < 0) {
                ev->other++;
                continue;
            }
            ev->done_by[stage]++;
            long long enq = field_ll(fv, XM_F_ENQUEUED), picked = field_ll(fv, XM_F_PICKED),
                      ts = field_ll(fv, XM_F_TS);
            if (picked > 0 && ts > 0)
                lat_add(&ev->in_worker, ts - picked);
            if (enq > 0 && picked > 0) {
                lat_add(&ev->handoff_by[stage], picked - enq);
                if (stage > 0)
                    lat_add(&ev->handoff, picked - enq);
            }
        }
        if (n > 0)
            snprintf(start, sizeof(start), "(%s", r->element[n - 1]->element[0]->str);
        freeReplyObject(r);
        if (n < EVENTS_PAGE)
            break;
    }
    lat_sort(&ev->handoff);
    lat_sort(&ev->in_worker);
    for (int s = 0; s < STAGES; s++)
        lat_sort(&ev->handoff_by[s]);
}

static void events_release(struct events *ev)
{
    free(ev->handoff.v);
    free(ev->in_worker.v);
    for (int s = 0; s < STAGES; s++)
        free(ev->handoff_by[s].v);
    memset(ev, 0, sizeof(*ev));
}

/* ---------------------------------------------------------------- one pipeline run */

struct run {
    int per_stage;
    double offered;   /* transitions/s offered by a paced producer; 0 for the backlog run */
    long long jobs;   /* jobs through the pipeline */
    double enqueue_s; /* backlog run: time to enqueue the backlog */
    double wall_s;
    double transitions_per_s;
    struct events ev;
    struct cmdstats cmds; /* delta over the timed window */
    double redis_cpu_s;   /* redis-server (not its AOF rewrite child) */
    double rewrite_cpu_s; /* redis-server's AOF rewrite children */
    double workers_cpu_s; /* every worker process, heartbeat threads included */
    double self_cpu_s;    /* this program: the poller, and the producer of a paced run */
    double machine_busy;  /* fraction of all cores busy in processes */
    double machine_irq;   /* fraction of all cores busy in interrupts */
    double background;    /* fraction of all cores busy just before the run */
    long long aof_rewrites;
    long long log_lines; /* warn or error lines the workers logged */
    int complete;        /* every stage settled exactly `jobs` jobs, nothing else happened */
};

struct worker_proc {
    pid_t pid;
    char log_name[64];
    char consumer[64];
};

static void spawn_stage_workers(const struct redis_srv *srv, const struct opts *o, long long jobs,
                                int per_stage, const char *tag, struct worker_proc *procs)
{
    long long maxlen = STAGES * jobs * 2;
    if (maxlen < 2000000)
        maxlen = 2000000;
    char *env[] = {
        xasprintf("XM_EVENTS_MAXLEN=%lld", maxlen),
        xasprintf("XM_BATCH=%lld", o->batch),
        xstrdup("XM_LOG_LEVEL=warn"),
        NULL, /* XM_CONSUMER, per process */
        NULL,
    };
    int k = 0;
    for (int s = 1; s <= STAGES; s++) {
        for (int i = 0; i < per_stage; i++, k++) {
            char phase[8], next[8];
            snprintf(phase, sizeof(phase), "s%d", s);
            snprintf(next, sizeof(next), "s%d", s + 1);
            snprintf(procs[k].consumer, sizeof(procs[k].consumer), "bench-%s-%s-%d", tag, phase,
                     i + 1);
            snprintf(procs[k].log_name, sizeof(procs[k].log_name), "%s", procs[k].consumer);
            env[3] = xasprintf("XM_CONSUMER=%s", procs[k].consumer);
            char *argv[] = {(char *)o->noop, phase, s < STAGES ? next : NULL, NULL};
            procs[k].pid = spawn_worker(srv, procs[k].log_name, argv, env);
            started.workers[started.n_workers++] = procs[k].pid;
            free(env[3]);
            env[3] = NULL;
        }
    }
    for (int i = 0; i < 3; i++)
        free(env[i]);
}

/* Die if a worker exited on its own: the run would never finish. */
static void check_alive(const struct redis_srv *srv, const struct worker_proc *procs, int n)
{
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(procs[i].pid, &status, WNOHANG) == procs[i].pid)
            die("worker %s exited (status %d); see %s/%s.log", procs[i].log_name, status, srv->dir,
                procs[i].log_name);
    }
}

/* Wait until every worker has registered (its first heartbeat), so a paced producer does
 * not time the workers' start-up. */
static void wait_registered(const struct redis_srv *srv, redisContext *c,
                            const struct worker_proc *procs, int n)
{
    long long deadline = mono_ms() + 20000;
    for (int i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof(key), XM_WORKER_FMT, procs[i].consumer);
        while (rs_int(c, "EXISTS %s", key) != 1) {
            check_alive(srv, procs, n);
            if (mono_ms() > deadline)
                die("worker %s did not register within 20 s", procs[i].consumer);
            nap_ms(5);
        }
    }
}

static long long count_log_lines(const struct redis_srv *srv, const char *log_name)
{
    char path[400], line[4096];
    snprintf(path, sizeof(path), "%s/%s.log", srv->dir, log_name);
    FILE *f = fopen(path, "r");
    long long n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, "level=warn") || strstr(line, "level=error") ||
             strstr(line, "level=fatal");
    fclose(f);
    return n;
}

/* Poll XLEN xm:events until `target` jobs settled; die when nothing moves for STALL_MS. */
static void wait_settled(const struct redis_srv *srv, redisContext *c,
                         const struct worker_proc *procs, int n_procs, long long target,
                         const char *what, double t0)
{
    long long settled = 0, last_settled = -1;
    double last_progress = mono_s(), last_report = last_progress;
    while (settled < target) {
        nap_ms(5);
        settled = rs_int(c, "XLEN %s", XM_EVENTS);
        double now = mono_s();
        if (settled != last_settled) {
            last_settled = settled;
            last_progress = now;
        } else if ((now - last_progress) * 1000 > STALL_MS) {
            die("%s: no job settled for %d s (%lld of %lld); worker logs in %s", what,
                STALL_MS / 1000, settled, target, srv->dir);
        }
        if (now - last_report >= 10) {
            last_report = now;
            fprintf(stderr, "%s: %lld of %lld settled, %.0f/s so far\n", what, settled, target,
                    (double)settled / (now - t0));
        }
        check_alive(srv, procs, n_procs);
        check_interrupted();
    }
}

/*
 * One run of the pipeline with per_stage workers per stage. offered == 0: the backlog
 * run (o->jobs enqueued first, timed from the workers' start). offered > 0: workers
 * start first, then a producer XADDs offered/6 jobs/s for o->paced_s seconds, timed
 * from the first XADD.
 */
static void run_pipeline(const struct redis_srv *srv, redisContext *c, const struct opts *o,
                         int per_stage, double offered, struct run *run)
{
    memset(run, 0, sizeof(*run));
    run->per_stage = per_stage;
    run->offered = offered;
    run->jobs = offered > 0 ? (long long)(offered / STAGES * o->paced_s) : o->jobs;
    int n_procs = STAGES * per_stage;
    struct worker_proc procs[STAGES * MAX_PER_STAGE];
    char what[64];
    if (offered > 0)
        snprintf(what, sizeof(what), "paced %.0f/s %dx", offered, per_stage);
    else
        snprintf(what, sizeof(what), "backlog %dx", per_stage);

    fresh_server(c);
    if (offered == 0) {
        fprintf(stderr, "%s: enqueueing %lld jobs into xm:q:s1\n", what, run->jobs);
        run->enqueue_s = enqueue_backlog(c, run->jobs);
    } else {
        spawn_stage_workers(srv, o, run->jobs, per_stage, what[0] == 'p' ? "p" : "b", procs);
        wait_registered(srv, c, procs, n_procs);
    }

    /* Other processes competing for the cores make the figures meaningless: say so. */
    wait_aof_rewrite(c); /* the backlog may have started one */
    run->background = sys_busy_over(BACKGROUND_SAMPLE_MS, srv->pid);

    struct cmdstats before;
    cmdstats_read(c, &before);
    long long rewrites0 = info_ll(c, "persistence", "aof_rewrites");
    double redis0 = proc_cpu_s(srv->pid), self0 = self_cpu_s();
    double rewrite0 = proc_cpu(srv->pid, 1);
    double workers0 = 0;
    struct sys_cpu sys0 = sys_cpu_now();
    double t0 = mono_s();

    if (offered == 0) {
        spawn_stage_workers(srv, o, run->jobs, per_stage, "b", procs);
        fprintf(stderr, "%s: %d workers started\n", what, n_procs);
    } else {
        for (int i = 0; i < n_procs; i++)
            workers0 += proc_cpu_s(procs[i].pid);
        fprintf(stderr, "%s: producing %lld jobs at %.0f jobs/s\n", what, run->jobs,
                offered / STAGES);
        enqueue_paced(c, run->jobs, offered / STAGES);
    }
    wait_settled(srv, c, procs, n_procs, STAGES * run->jobs, what, t0);
    double t1 = mono_s();

    for (int i = 0; i < n_procs; i++) {
        double cpu = proc_cpu_s(procs[i].pid);
        run->workers_cpu_s += cpu > 0 ? cpu : 0;
    }
    run->workers_cpu_s -= workers0;
    run->redis_cpu_s = proc_cpu_s(srv->pid) - redis0;
    run->rewrite_cpu_s = proc_cpu(srv->pid, 1) - rewrite0;
    run->self_cpu_s = self_cpu_s() - self0;
    struct sys_cpu sys1 = sys_cpu_now();
    if (sys1.total > sys0.total) {
        run->machine_busy = (double)(sys1.busy - sys0.busy) / (double)(sys1.total - sys0.total);
        run->machine_irq = (double)(sys1.irq - sys0.irq) / (double)(sys1.total - sys0.total);
    }
    cmdstats_read(c, &run->cmds);
    cmdstats_delta(&run->cmds, &before);
    cmdstats_release(&before);
    run->aof_rewrites = info_ll(c, "persistence", "aof_rewrites") - rewrites0;
    run->wall_s = t1 - t0;
    run->transitions_per_s = (double)(STAGES * run->jobs) / run->wall_s;

    /* SIGTERM them all first: each may sit in a blocking read for XM_BLOCK_MS. */
    for (int i = 0; i < n_procs; i++)
        kill(procs[i].pid, SIGTERM);
    started.n_workers = 0; /* reaped below */
    for (int i = 0; i < n_procs; i++) {
        int status = stop_process(procs[i].pid, SIGTERM);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "%s: worker %s ended with status %d\n", what, procs[i].log_name,
                    status);
        run->log_lines += count_log_lines(srv, procs[i].log_name);
    }

    read_events(c, &run->ev);
    run->complete = run->ev.other == 0;
    for (int s = 0; s < STAGES; s++)
        run->complete &= run->ev.done_by[s] == run->jobs;
}

static void run_release(struct run *run)
{
    events_release(&run->ev);
    cmdstats_release(&run->cmds);
}

/* ---------------------------------------------------------------- report */

/* Commands the benchmark itself sends while it waits; not part of the pipeline's cost. */
static int own_command(const char *name)
{
    return strcmp(name, "xlen") == 0 || strcmp(name, "info") == 0 || strcmp(name, "exists") == 0;
}

static const char *verdict(int ok)
{
    return ok ? "PASS" : "MISS";
}

/* Redis and CPU cost of a run, shared by both kinds of run. */
static void report_cost(const char *prefix, const char *label, struct run *run)
{
    double transitions = (double)(STAGES * run->jobs);
    qsort(run->cmds.v, run->cmds.n, sizeof(*run->cmds.v), cmdstat_by_calls);
    long long calls = 0, usec = 0;
    for (size_t i = 0; i < run->cmds.n; i++) {
        if (own_command(run->cmds.v[i].name) || run->cmds.v[i].calls <= 0)
            continue;
        calls += run->cmds.v[i].calls;
        if (strcmp(run->cmds.v[i].name, "exec") != 0) /* EXEC's time includes its commands */
            usec += run->cmds.v[i].usec;
    }
    printf("  redis cmds     %.2f commands per transition (%.0f commands/s), %.2f us of command "
           "time per transition (EXEC not counted twice):\n                ",
           (double)calls / transitions, (double)calls / run->wall_s, (double)usec / transitions);
    int shown = 0;
    for (size_t i = 0; i < run->cmds.n; i++) {
        const struct cmdstat *s = &run->cmds.v[i];
        if (own_command(s->name) || (double)s->calls / transitions < 0.005)
            continue;
        printf("%s%s %.2f (%.2f us)", shown && shown % 5 == 0 ? "\n                " : "  ",
               s->name, (double)s->calls / transitions, (double)s->usec / transitions);
        shown++;
    }
    printf("\n");
    printf("  cpu            redis-server %.0f%% of a core (%.1f us/transition), workers %.0f%% "
           "(%.1f us/transition), bench %.1f%%; machine %.0f%% of %ld cores busy (%.0f%% in "
           "processes, %.0f%% in interrupts)\n",
           100 * run->redis_cpu_s / run->wall_s, 1e6 * run->redis_cpu_s / transitions,
           100 * run->workers_cpu_s / run->wall_s, 1e6 * run->workers_cpu_s / transitions,
           100 * run->self_cpu_s / run->wall_s, 100 * (run->machine_busy + run->machine_irq),
           sysconf(_SC_NPROCESSORS_ONLN), 100 * run->machine_busy, 100 * run->machine_irq);
    double ncores = (double)sysconf(_SC_NPROCESSORS_ONLN);
    double ours = (run->redis_cpu_s + run->rewrite_cpu_s + run->workers_cpu_s + run->self_cpu_s) /
                  run->wall_s / ncores;
    double other = run->machine_busy - ours;
    int noisy = run->background > BACKGROUND_WARN || other > OTHER_WARN;
    printf("  background     %.0f%% of the machine busy with other processes in the %d ms before "
           "the run; during it %.0f%% busy outside the processes above (kernel threads, other "
           "processes), and %.0f%% in interrupts%s\n",
           100 * run->background, BACKGROUND_SAMPLE_MS, 100 * other, 100 * run->machine_irq,
           noisy ? " -- WARNING: something else was running, figures are not trustworthy" : "");
    printf("  aof rewrites   %lld during the timed window (their children: %.0f%% of a core); "
           "worker warn/error log lines: %lld\n",
           run->aof_rewrites, 100 * run->rewrite_cpu_s / run->wall_s, run->log_lines);
    if (!run->complete) {
        printf("  INCOMPLETE     job.done per stage:");
        for (int s = 0; s < STAGES; s++)
            printf(" %lld", run->ev.done_by[s]);
        printf(" (want %lld each); other events: %lld\n", run->jobs, run->ev.other);
    }
    printf("%s.%s.cmds_per_transition=%.2f\n", prefix, label, (double)calls / transitions);
    printf("%s.%s.redis_cpu_pct=%.0f\n", prefix, label, 100 * run->redis_cpu_s / run->wall_s);
    printf("%s.%s.redis_cpu_us_per_transition=%.1f\n", prefix, label,
           1e6 * run->redis_cpu_s / transitions);
    printf("%s.%s.workers_cpu_us_per_transition=%.1f\n", prefix, label,
           1e6 * run->workers_cpu_s / transitions);
    printf("%s.%s.machine_busy_pct=%.0f\n", prefix, label,
           100 * (run->machine_busy + run->machine_irq));
    printf("%s.%s.background_pct=%.0f\n", prefix, label, 100 * run->background);
    printf("%s.%s.other_load_pct=%.0f\n", prefix, label, 100 * other);
    printf("%s.%s.trustworthy=%d\n", prefix, label, !noisy);
    printf("%s.%s.complete=%d\n", prefix, label, run->complete);
}

static void report_latency(const char *prefix, const char *label, const struct run *run,
                           int *p99_ok)
{
    const struct events *ev = &run->ev;
    double p50 = lat_pct_ms(&ev->handoff, 50), p99 = lat_pct_ms(&ev->handoff, 99),
           max = lat_pct_ms(&ev->handoff, 100);
    *p99_ok = ev->handoff.n > 0 && p99 < TARGET_P99_MS;
    printf("  hand-off       p50 %.3f ms  p99 %.3f ms  max %.3f ms  (stages 2..6, n=%zu)  %s "
           "(target p99 < %.0f ms)\n",
           p50, p99, max, ev->handoff.n, verdict(*p99_ok), TARGET_P99_MS);
    printf("  by stage       ");
    for (int s = run->offered > 0 ? 0 : 1; s < STAGES; s++)
        printf("s%d %.2f/%.2f  ", s + 1, lat_pct_ms(&ev->handoff_by[s], 50),
               lat_pct_ms(&ev->handoff_by[s], 99));
    printf("(p50/p99 ms%s)\n", run->offered > 0 ? "; s1 is from the producer's XADD" : "");
    printf("  in worker      p50 %.3f ms  p99 %.3f ms  (picked -> settle transaction built; "
           "includes waiting behind earlier jobs of the batch)\n",
           lat_pct_ms(&ev->in_worker, 50), lat_pct_ms(&ev->in_worker, 99));
    printf("%s.%s.handoff_p50_ms=%.3f\n", prefix, label, p50);
    printf("%s.%s.handoff_p99_ms=%.3f\n", prefix, label, p99);
    printf("%s.%s.handoff_max_ms=%.3f\n", prefix, label, max);
    printf("%s.%s.latency=%s\n", prefix, label, verdict(*p99_ok));
}

/* The backlog run; returns 1 when both targets are met. */
static int report_backlog(const char *prefix, const char *fsync_mode, const struct opts *o,
                          const struct baseline *b, struct run *run)
{
    int tput_ok = run->transitions_per_s >= TARGET_TRANSITIONS_PER_S, p99_ok;
    char label[16];
    snprintf(label, sizeof(label), "%dx", run->per_stage);

    printf("\n[appendfsync %s] backlog %s: %d worker%s per stage (%d worker processes), "
           "XM_BATCH=%lld\n",
           fsync_mode, label, run->per_stage, run->per_stage > 1 ? "s" : "",
           STAGES * run->per_stage, o->batch);
    printf("  enqueue        %lld jobs into xm:q:s1 in %.2f s before the workers start "
           "(%.0f pipelined XADD/s)\n",
           run->jobs, run->enqueue_s, (double)run->jobs / run->enqueue_s);
    printf("  wall           %.3f s from the workers' start to the %lldth job.done\n", run->wall_s,
           STAGES * run->jobs);
    printf("  transitions/s  %.0f  = %.3f x redis-benchmark XADD/s  %s (target >= %.0f)\n",
           run->transitions_per_s, run->transitions_per_s / b->rps, verdict(tput_ok),
           TARGET_TRANSITIONS_PER_S);
    printf("%s.%s.transitions_per_s=%.0f\n", prefix, label, run->transitions_per_s);
    printf("%s.%s.ratio_to_xadd=%.4f\n", prefix, label, run->transitions_per_s / b->rps);
    printf("%s.%s.wall_s=%.3f\n", prefix, label, run->wall_s);
    printf("%s.%s.throughput=%s\n", prefix, label, verdict(tput_ok));
    report_latency(prefix, label, run, &p99_ok);
    report_cost(prefix, label, run);
    fflush(stdout);
    return tput_ok && p99_ok && run->complete;
}

/* A paced run; returns 1 when the pipeline kept up and the p99 target is met. */
static int report_paced(const char *prefix, const char *fsync_mode, const struct opts *o,
                        struct run *run)
{
    int p99_ok;
    char label[48];
    snprintf(label, sizeof(label), "paced_%.0f.%dx", run->offered, run->per_stage);
    /* Kept up: the last job settled within a second of the producer's end. */
    int kept_up = run->wall_s <= o->paced_s + 1.0;

    printf("\n[appendfsync %s] paced %.0f transitions/s offered, %dx: %d worker%s per stage, "
           "XM_BATCH=%lld\n",
           fsync_mode, run->offered, run->per_stage, run->per_stage, run->per_stage > 1 ? "s" : "",
           o->batch);
    printf("  load           %lld jobs at %.0f jobs/s into xm:q:s1 for %.0f s; all settled after "
           "%.3f s: %.0f transitions/s (%s)\n",
           run->jobs, run->offered / STAGES, o->paced_s, run->wall_s, run->transitions_per_s,
           kept_up ? "kept up" : "fell behind");
    printf("%s.%s.transitions_per_s=%.0f\n", prefix, label, run->transitions_per_s);
    printf("%s.%s.kept_up=%d\n", prefix, label, kept_up);
    report_latency(prefix, label, run, &p99_ok);
    report_cost(prefix, label, run);
    fflush(stdout);
    return kept_up && p99_ok && run->complete;
}

/* ---------------------------------------------------------------- main */

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: bench_queue [--jobs N] [--batch B] [--paced RATE,... | none] "
                    "[--paced-s S] [--quiet-wait S]\n"
                    "                   [--fsync always|everysec|always,everysec] [--noop PATH]\n");
    exit(2);
}

static void parse_rates(const char *v, struct opts *o)
{
    o->n_paced = 0;
    if (strcmp(v, "none") == 0)
        return;
    char *copy = xstrdup(v);
    for (char *t = copy, *comma; t; t = comma ? comma + 1 : NULL) {
        comma = strchr(t, ',');
        if (comma)
            *comma = '\0';
        long long rate;
        if (o->n_paced == MAX_PACED || config_parse_ll(t, STAGES, 1000000, &rate) < 0)
            usage();
        o->paced[o->n_paced++] = (double)rate;
    }
    free(copy);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->jobs = 100000;
    o->batch = 16;
    o->noop = XM_NOOP_BIN;
    o->fsync_modes[0] = "always";
    o->n_fsync = 1;
    o->paced_s = 10;
    o->quiet_wait_s = 600;
    parse_rates(DEFAULT_PACED, o);
    for (int i = 1; i < argc; i += 2) { /* every option takes one value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
        if (!v)
            usage();
        if (strcmp(a, "--jobs") == 0) {
            if (config_parse_ll(v, 1, 5000000, &o->jobs) < 0)
                usage();
        } else if (strcmp(a, "--batch") == 0) {
            if (config_parse_ll(v, 1, 1000, &o->batch) < 0)
                usage();
        } else if (strcmp(a, "--paced") == 0) {
            parse_rates(v, o);
        } else if (strcmp(a, "--paced-s") == 0) {
            if (config_parse_ll(v, 1, 600, &n) < 0)
                usage();
            o->paced_s = (double)n;
        } else if (strcmp(a, "--quiet-wait") == 0) {
            if (config_parse_ll(v, 0, 86400, &n) < 0)
                usage();
            o->quiet_wait_s = (double)n;
        } else if (strcmp(a, "--noop") == 0) {
            o->noop = v;
        } else if (strcmp(a, "--fsync") == 0) {
            if (strcmp(v, "always") == 0 || strcmp(v, "everysec") == 0) {
                o->fsync_modes[0] = v;
                o->n_fsync = 1;
            } else if (strcmp(v, "always,everysec") == 0) {
                o->fsync_modes[0] = "always";
                o->fsync_modes[1] = "everysec";
                o->n_fsync = 2;
            } else {
                usage();
            }
        } else {
            usage();
        }
    }
    if (access(o->noop, X_OK) < 0)
        die("%s: %s (build xm-noop first)", o->noop, strerror(errno));
}

/* The figures are only worth something on an otherwise idle machine: wait (bounded) for
 * one. Returns the busy fraction of the last 1 s sample. */
static double wait_quiet(double max_s)
{
    double t0 = mono_s(), busy = sys_busy_over(1000, 0);
    while (busy > BACKGROUND_WARN && mono_s() - t0 < max_s) {
        fprintf(stderr, "waiting for a quiet machine: %.0f%% busy\n", 100 * busy);
        check_interrupted();
        nap_ms(4000);
        busy = sys_busy_over(1000, 0);
    }
    return busy;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    double t_quiet = mono_s();
    double busy = wait_quiet(o.quiet_wait_s);
    t_quiet = mono_s() - t_quiet;

    struct redis_srv srv;
    rs_start(&srv);
    started.srv = &srv;
    redisContext *c = rs_connect(&srv);
    struct timeval tv = {120, 0}; /* FLUSHALL of a few million keys takes a while */
    redisSetTimeout(c, tv);

    char *server = rs_str(c, "INFO server");
    char *v = strstr(server, "redis_version:");
    char redis_version[32] = "?";
    if (v)
        sscanf(v, "redis_version:%31[^\r\n]", redis_version);
    free(server);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("bench/queue  %s  redis %s on 127.0.0.1:%d  %ld cores\n", date, redis_version, srv.port,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("machine: %.0f%% busy before the start (after waiting %.0f s for it to be below "
           "%.0f%%)%s\n",
           100 * busy, t_quiet, 100 * BACKGROUND_WARN,
           busy > BACKGROUND_WARN ? " -- WARNING: not quiet, figures are not trustworthy" : "");
    printf("pipeline: %d stages (xm-noop s1 s2 ... xm-noop s6), XM_BATCH=%lld, XM_LOG_LEVEL=warn; "
           "backlog runs: %lld jobs enqueued before the workers start\n",
           STAGES, o.batch, o.jobs);

    int production_ok = 1;
    for (int m = 0; m < o.n_fsync; m++) {
        const char *mode = o.fsync_modes[m];
        int production = strcmp(mode, "always") == 0;
        const char *prefix = production ? "queue" : "queue.everysec";
        expect_ok(c, "CONFIG SET appendfsync %s", mode);
        char *aof = config_get(c, "appendonly"), *fsync_mode = config_get(c, "appendfsync");
        printf("\n=== redis appendonly=%s appendfsync=%s%s ===\n", aof, fsync_mode,
               production ? " (production setting)" : " (NOT the production setting)");
        free(aof);

        fresh_server(c);
        fprintf(stderr, "baseline: redis-benchmark XADD\n");
        struct baseline b = run_baseline(&srv);
        printf("baseline       redis-benchmark -c %s -n %s -q XADD %s * f v: %.0f requests/s "
               "(p50 %.3f ms)\n",
               BASELINE_CLIENTS, BASELINE_REQUESTS, BASELINE_KEY, b.rps, b.p50_ms);
        printf("%s.baseline.xadd_per_s=%.0f\n", prefix, b.rps);

        for (int per_stage = 1; per_stage <= MAX_PER_STAGE; per_stage++) {
            struct run run;
            run_pipeline(&srv, c, &o, per_stage, 0, &run);
            int ok = report_backlog(prefix, fsync_mode, &o, &b, &run);
            if (production)
                production_ok &= ok;
            run_release(&run);
        }
        for (int p = 0; p < o.n_paced; p++) {
            for (int per_stage = 1; per_stage <= MAX_PER_STAGE; per_stage++) {
                struct run run;
                run_pipeline(&srv, c, &o, per_stage, o.paced[p], &run);
                int ok = report_paced(prefix, fsync_mode, &o, &run);
                if (production)
                    production_ok &= ok;
                run_release(&run);
            }
        }
        free(fsync_mode);
    }
    if (strcmp(o.fsync_modes[0], "always") == 0) {
        printf("\nqueue.target=%s\n", verdict(production_ok));
        printf("targets (appendfsync always, every run above): >= %.0f transitions/s with a "
               "backlog, hand-off p99 < %.0f ms: %s\n",
               TARGET_TRANSITIONS_PER_S, TARGET_P99_MS, verdict(production_ok));
    }

    redisFree(c);
    cleanup();
    return 0;
}
