/*
 * job: the envelope every phase job travels in, and the event envelope.
 *
 * A job is one stream entry with flat fields (see keys.h) so `redis-cli XRANGE` reads
 * it: job, migration, host, disk, phase, attempt, group, enqueued, payload. `payload`
 * is a JSON object whose shape belongs to the phase (schemas/job.json holds the
 * envelope's schema). The job id stays the same across retries and takeovers; the
 * stream entry id changes with every retry.
 *
 * Caps: an identifier is 1..128 characters of [A-Za-z0-9._:-]; a phase name 1..32 of
 * [a-z0-9_-]; payload at most JOB_PAYLOAD_MAX bytes of JSON object. A stream entry that
 * breaks them is refused by job_from_entry() with a permanent error naming the field.
 */
#ifndef XM_JOB_H
#define XM_JOB_H

#include "cmd.h"
#include "err.h"

struct redisReply;

#define JOB_PAYLOAD_MAX (1024 * 1024)
#define JOB_ID_MAX 128
#define JOB_PHASE_MAX 32

/* A received job. Every string is new, owned by the struct (job_release frees). */
struct job {
    char *entry;  /* stream entry id, e.g. "1700000000000-0" */
    char *stream; /* stream it came from */
    char *id;     /* job id */
    char *migration;
    char *host;
    char *disk; /* "" for host-level jobs */
    char *phase;
    char *group;   /* fan-in group, "" when none */
    char *member;  /* its id in that group when not its job id (a continuation), or "" */
    char *payload; /* JSON object text */
    long long attempt;
    long long enqueued_us;
};

/* What to enqueue. Strings are borrowed for the duration of the call that takes it. */
struct job_spec {
    const char *id; /* NULL: a fresh random id */
    const char *migration;
    const char *host;
    const char *disk; /* NULL or "" for host-level jobs */
    const char *phase;
    const char *group;   /* NULL or "" */
    const char *member;  /* NULL or "": the job id */
    const char *payload; /* NULL means "{}" */
    long long attempt;   /* 0 means 1 */
};

void job_init(struct job *job);
void job_release(struct job *job);

/*
 * Fill job from one XREADGROUP/XAUTOCLAIM entry ([id, [field, value, ...]]), copying
 * everything. -1 with a permanent err naming the field when the entry is malformed;
 * job->entry is set even then, so the caller can dead-letter it.
 */
int job_from_entry(struct job *job, const char *stream, const struct redisReply *entry,
                   struct err *err);

/* Check a spec's fields against the caps above; -1 with a permanent err naming the field. */
int job_spec_check(const struct job_spec *spec, struct err *err);

/* Append "XADD xm:q:<phase> * field value ..." for spec to c (c is reset first). */
void job_spec_xadd(struct cmd *c, const struct job_spec *spec, long long now_us);

/* The spec of an existing job, for re-queueing it (borrows job's strings). */
void job_spec_from_job(struct job_spec *spec, const struct job *job);

/* A new random job id (32 hex characters) into buf of at least 33 bytes. */
void job_new_id(char *buf);

int job_valid_ident(const char *s);
int job_valid_phase(const char *s);

/* Microseconds since the epoch (CLOCK_REALTIME) and a monotonic millisecond clock. */
long long job_now_us(void);
long long job_mono_ms(void);

#endif
