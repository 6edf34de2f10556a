/*
 * worker: the runtime every phase worker plugs into.
 *
 * A worker binary is a `const struct worker_ops` (name, phase, handler) and a main()
 * that calls worker_main(). Everything about delivery lives here, once: consumer-group
 * creation, draining this consumer's own pending entries after a restart, blocking
 * reads, takeover of abandoned entries, retry with backoff, dead-lettering, the
 * ack-and-hand-off transaction, fan-in, heartbeats, Redis reconnects and SIGTERM.
 *
 * The life of a job (the stream entry, its job id, and what Redis holds for it):
 *
 *   QUEUED   in xm:q:<phase>, not yet delivered to any consumer.
 *      | XREADGROUP ">"
 *   PENDING  delivered to one consumer, in the group's pending list (PEL). The owner's
 *      |     heartbeat refreshes the entry's idle time while the handler runs; a worker
 *      |     that dies stops refreshing, and after XM_VISIBILITY_TIMEOUT_MS any live
 *      |     worker takes the entry over with XAUTOCLAIM (still PENDING, new owner). An
 *      |     entry taken over more than XM_MAX_ATTEMPTS times is a poison pill: DEAD.
 *      |
 *      +-- handler ok -------> DONE     one MULTI/EXEC: XACK, xm:done:<job> set, host
 *      |                                state, event, next phase job(s), fan-in update.
 *      +-- transient error --> DELAYED  one MULTI/EXEC: XACK, ZADD xm:delayed:<phase>
 *      |   (attempt < max)              with due time base*2^(attempt-1) (capped) with
 *      |                                jitter; host marked retrying. When due, any
 *      |                                worker of the phase moves it back to QUEUED with
 *      |                                attempt+1 (ZREM+XADD in one MULTI/EXEC).
 *      +-- permanent error, -> DEAD     one MULTI/EXEC: XACK, xm:done:<job> = dead,
 *          or last attempt              entry in xm:dead with error and attempts, host
 *                                       marked failed with the reason, event.
 *      +-- handler says wait -> WAITING  (job_result_wait) one MULTI/EXEC: XACK, ZADD
 *      |                                xm:delayed:<phase> with the SAME attempt, due
 *      |                                after the delay asked for; host queued + reason.
 *      +-- migration cancelled -> CANCELLED  (checked when the job is taken) XACK,
 *      |                                xm:done:<job> = cancelled, event; nothing next.
 *      +-- SIGTERM while the handler was told to stop (transient error while
 *          worker_stopping()): RELEASED, XACK + XADD of the same attempt: another worker
 *          takes it at once.
 *
 * Delivery is at-least-once; completion is exactly-once: the DONE transaction WATCHes
 * xm:done:<job> (and the fan-in set), so a job delivered twice, or whose EXEC reply was
 * lost when Redis restarted, completes once and hands off once. Handlers must be
 * idempotent: they may run more than once for one job.
 *
 * Fan-in: a handler that emits several next jobs with job_result_fanout() makes them one
 * group (xm:fanin:<parent job id>, a set of the children's job ids, created in the same
 * transaction that enqueues them). A member's completion removes it; only the member
 * that empties the set hands off its own next jobs, so e.g. import is enqueued exactly
 * once however the disks finish.
 *
 * Nested fan-in: when a member of a group fans out in turn (a disk job splitting into
 * shards), it keeps its place in its group; the new group records "<group> <member>"
 * (xm:fanin:<id>:up), and the job that empties the new group hands off its next jobs as
 * that member (envelope field "member"), so the outer group ends only after the inner
 * one did: import starts once the last shard of the last disk is done.
 */
#ifndef XM_WORKER_H
#define XM_WORKER_H

#include "err.h"
#include "job.h"

/* States of a job, as above. */
enum job_state {
    JOB_QUEUED,    /* in its stream, undelivered */
    JOB_PENDING,   /* delivered, being handled (or its worker died) */
    JOB_DELAYED,   /* waiting in xm:delayed:<phase> for its next attempt */
    JOB_DONE,      /* acked and handed off */
    JOB_DEAD,      /* failed for good, in xm:dead */
    JOB_RELEASED,  /* given back at shutdown, queued again with the same attempt */
    JOB_CANCELLED, /* its migration was cancelled: acked, nothing handed off */
};
const char *job_state_str(enum job_state s);

/* Status of a host (field "status" of xm:host:<mig>:<host>). */
enum host_status {
    HOST_QUEUED,    /* its phase job is in a stream */
    HOST_RUNNING,   /* a worker is handling its phase job */
    HOST_RETRYING,  /* the last attempt failed transiently; a retry is scheduled */
    HOST_WAITING,   /* some of its fan-in members (disks) are done, others still run */
    HOST_DONE,      /* the last phase finished */
    HOST_FAILED,    /* a job failed for good; "error" says why */
    HOST_CANCELLED, /* its migration was cancelled: no new phase starts */
};
const char *host_status_str(enum host_status s);

/* What a handler hands back on success. Built with the functions below; runtime-owned. */
struct job_result;

/* Enqueue a job of `phase` for the same migration and host on success. disk may be
 * NULL (host-level job); payload is JSON object text or NULL for "{}". Copied. */
void job_result_next(struct job_result *r, const char *phase, const char *disk,
                     const char *payload);
/* The same for another host of the migration (a migration-level job starting the
 * per-host pipeline). */
void job_result_next_host(struct job_result *r, const char *phase, const char *host,
                          const char *disk, const char *payload);
/* The next jobs form one fan-in group (see above). */
void job_result_fanout(struct job_result *r);
/* HSET key field value in the completion transaction, after the runtime's own update of
 * the host record (so a handler may set the host's status, e.g. awaiting_cutover). */
void job_result_hset(struct job_result *r, const char *key, const char *field, const char *value);
/* HINCRBY key field by in the same transaction: counters a job adds to exactly once. */
void job_result_hincrby(struct job_result *r, const char *key, const char *field, long long by);
/*
 * Not now: the job goes back, with the same attempt, and is offered again after
 * delay_ms (the handler found a limit reached, e.g. a migration's max_cloning). Nothing
 * is handed off; the host shows queued with the reason in its "waiting" field, and a
 * job.waiting event carries it (the first wait, then one every 10 minutes: a long queue
 * does not flood the capped events stream). Waiting never counts as a failed attempt.
 */
void job_result_wait(struct job_result *r, long long delay_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A one-line summary for the event. */
void job_result_message(struct job_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct worker;

struct worker_ops {
    const char *name;  /* process name for logs and the heartbeat, e.g. "xm-convert" */
    const char *phase; /* consumes xm:q:<phase> */
    /*
     * Run one job. Return 0 and fill res on success; -1 with err on failure (its kind
     * decides retry or dead-letter). May block; long handlers should poll
     * worker_stopping() and return a transient error when it is set. job is borrowed.
     */
    int (*handle)(struct worker *w, const struct job *job, struct job_result *res, struct err *err);
    void *arg; /* for the handler, via worker_arg() */
    /* Entries taken per read, 0: XM_BATCH. Long jobs (a shard, a clone) take 1, so the
     * next job waits in the stream for whichever worker is free instead of in this one. */
    int batch;
};

int worker_stopping(const struct worker *w);
/* The worker's Redis connection, for handlers that read state (borrowed; valid during
 * the handler call; may be NULL after a connection loss: fail the job transiently). */
struct redisContext *worker_redis(struct worker *w);
void *worker_arg(const struct worker *w);
const char *worker_consumer(const struct worker *w);

/*
 * Load the configuration, install signal handlers and run until SIGTERM/SIGINT.
 * Returns the process exit code (0 after a clean stop, 2 for a bad configuration).
 */
int worker_main(const struct worker_ops *ops);

#endif
