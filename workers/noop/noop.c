/*
 * xm-noop: a worker that does nothing but what its job's payload tells it to, so the
 * tests and the queue benchmark can drive the runtime through every path.
 *
 *   xm-noop PHASE [NEXT]     consume xm:q:PHASE, hand off to xm:q:NEXT (none: last phase)
 *
 * Payload keys (all optional):
 *   sleep_ms     int     sleep this long (waking on SIGTERM) before finishing
 *   jitter_ms    int     and a random extra 0..jitter_ms, so fan-in members finish in
 *                        random order
 *   fail         string  "transient" or "permanent": fail instead of finishing
 *   fail_until   int     only fail while attempt <= this (default: always)
 *   abort        bool    crash (abort) on every delivery: a poison pill
 *   wait_until   int     ask to be offered again (job_result_wait, every wait_ms, default
 *                        100) until this time, in ms since the epoch
 *   fanout       int     emit this many NEXT jobs (disks d1..dN) as one fan-in group
 *   next         string  hand off to this phase instead of NEXT ("" ends the chain)
 *   child        object  payload of the emitted jobs (default: {})
 *   to_hosts     array   hand off one NEXT job to each of these hosts instead (a
 *                        migration-level job starting each host's pipeline)
 * Every job also writes its attempt count to xm:noop:<job id> so tests can count runs.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"
#include "xmalloc.h"

static const char *next_phase;

static int noop_handle(struct worker *w, const struct job *job, struct job_result *res,
                       struct err *err)
{
    json_error_t jerr;
    json_t *p = json_loads(job->payload, 0, &jerr);
    int rc = -1;
    char *child = NULL;
    if (!p)
        return err_set(err, ERR_PERMANENT, "payload: %s", jerr.text);

    json_int_t sleep_ms = 0, jitter_ms = 0, fail_until = 1000000, fanout = 0, wait_until = 0,
               wait_ms = 100;
    const char *fail = NULL, *next = next_phase;
    int abort_flag = 0;
    json_t *child_v = NULL, *to_hosts = NULL;
    if (json_unpack_ex(p, &jerr, 0, "{s?I, s?I, s?s, s?I, s?b, s?I, s?s, s?o, s?o, s?I, s?I}",
                       "sleep_ms", &sleep_ms, "jitter_ms", &jitter_ms, "fail", &fail, "fail_until",
                       &fail_until, "abort", &abort_flag, "fanout", &fanout, "next", &next, "child",
                       &child_v, "to_hosts", &to_hosts, "wait_until", &wait_until, "wait_ms",
                       &wait_ms) < 0) {
        err_set(err, ERR_PERMANENT, "payload: %s", jerr.text);
        goto out;
    }
    if (abort_flag)
        abort();
    if (job_now_us() / 1000 < wait_until) {
        job_result_wait(res, wait_ms, "injected wait");
        rc = 0;
        goto out;
    }

    if (jitter_ms > 0)
        sleep_ms += random() % (jitter_ms + 1);
    long long deadline = job_mono_ms() + sleep_ms;
    while (!worker_stopping(w) && job_mono_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (job_mono_ms() < deadline) {
        err_set(err, ERR_TRANSIENT, "stopped before the job finished");
        goto out;
    }
    if (fail && job->attempt <= fail_until) {
        err_set(err, strcmp(fail, "permanent") == 0 ? ERR_PERMANENT : ERR_TRANSIENT,
                "injected %s failure at attempt %lld", fail, job->attempt);
        goto out;
    }

    child = child_v ? json_dumps(child_v, JSON_COMPACT) : NULL;
    if (next && next[0]) {
        if (json_is_array(to_hosts)) {
            size_t i;
            json_t *h;
            json_array_foreach(to_hosts, i, h)
            {
                if (!json_is_string(h) || !job_valid_ident(json_string_value(h))) {
                    err_set(err, ERR_PERMANENT, "payload: to_hosts/%zu is not a host name", i);
                    goto out;
                }
                job_result_next_host(res, next, json_string_value(h), NULL, child);
            }
        } else if (fanout > 0) {
            for (json_int_t i = 1; i <= fanout; i++) {
                char disk[32];
                snprintf(disk, sizeof(disk), "d%lld", (long long)i);
                job_result_next(res, next, disk, child);
            }
            job_result_fanout(res);
        } else {
            job_result_next(res, next, job->disk[0] ? job->disk : NULL, child);
        }
    }
    char key[200], attempt[32];
    snprintf(key, sizeof(key), "xm:noop:%s", job->id);
    snprintf(attempt, sizeof(attempt), "%lld", job->attempt);
    job_result_hset(res, key, "attempt", attempt);
    job_result_hset(res, key, "worker", worker_consumer(w));
    job_result_message(res, "noop finished");
    rc = 0;
out:
    free(child);
    json_decref(p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || !job_valid_phase(argv[1]) ||
        (argc == 3 && !job_valid_phase(argv[2]))) {
        fprintf(stderr, "usage: xm-noop PHASE [NEXT]\n");
        return 2;
    }
    next_phase = argc == 3 ? argv[2] : NULL;
    srandom((unsigned)(job_now_us() ^ getpid()));
    struct worker_ops ops = {
        .name = "xm-noop",
        .phase = argv[1],
        .handle = noop_handle,
    };
    return worker_main(&ops);
}
