#include "job.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "config.h"
#include "keys.h"
#include "xmalloc.h"

void job_init(struct job *job)
{
    memset(job, 0, sizeof(*job));
}

void job_release(struct job *job)
{
    if (!job)
        return;
    free(job->entry);
    free(job->stream);
    free(job->id);
    free(job->migration);
    free(job->host);
    free(job->disk);
    free(job->phase);
    free(job->group);
    free(job->member);
    free(job->payload);
    job_init(job);
}

static int valid_chars(const char *s, size_t max, const char *extra, int upper)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper && c >= 'A' && c <= 'Z') ||
            strchr(extra, c))
            continue;
        return 0;
    }
    return n >= 1 && n <= max;
}

int job_valid_ident(const char *s)
{
    return s && valid_chars(s, JOB_ID_MAX, "._:-", 1);
}

int job_valid_phase(const char *s)
{
    return s && valid_chars(s, JOB_PHASE_MAX, "_-", 0);
}

long long job_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long job_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void job_new_id(char *buf)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        XM_ASSERT(n > 0);
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[32] = '\0';
}

static int check_payload(const char *payload, size_t len, struct err *err)
{
    if (len > JOB_PAYLOAD_MAX)
        return err_set(err, ERR_PERMANENT, "payload: %zu bytes is over the %d byte cap", len,
                       JOB_PAYLOAD_MAX);
    json_error_t jerr;
    json_t *v = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return err_set(err, ERR_PERMANENT, "payload: not JSON (%s at offset %d)", jerr.text,
                       jerr.position);
    int is_obj = json_is_object(v);
    json_decref(v);
    if (!is_obj)
        return err_set(err, ERR_PERMANENT, "payload: not a JSON object");
    return 0;
}

int job_spec_check(const struct job_spec *spec, struct err *err)
{
    if (spec->id && !job_valid_ident(spec->id))
        return err_set(err, ERR_PERMANENT, "job: not a valid job id");
    if (!job_valid_ident(spec->migration))
        return err_set(err, ERR_PERMANENT, "migration: not a valid identifier");
    if (!job_valid_ident(spec->host))
        return err_set(err, ERR_PERMANENT, "host: not a valid identifier");
    if (spec->disk && spec->disk[0] && !job_valid_ident(spec->disk))
        return err_set(err, ERR_PERMANENT, "disk: not a valid identifier");
    if (!job_valid_phase(spec->phase))
        return err_set(err, ERR_PERMANENT, "phase: not a valid phase name");
    if (spec->group && spec->group[0] && !job_valid_ident(spec->group))
        return err_set(err, ERR_PERMANENT, "group: not a valid identifier");
    if (spec->member && spec->member[0] && !job_valid_ident(spec->member))
        return err_set(err, ERR_PERMANENT, "member: not a valid identifier");
    if (spec->attempt < 0 || spec->attempt > 1000)
        return err_set(err, ERR_PERMANENT, "attempt: %lld is out of range", spec->attempt);
    if (spec->payload)
        return check_payload(spec->payload, strlen(spec->payload), err);
    return 0;
}

void job_spec_xadd(struct cmd *c, const struct job_spec *spec, long long now_us)
{
    char id[33];
    cmd_reset(c);
    cmd_arg(c, "XADD");
    cmd_argf(c, XM_QUEUE_FMT, spec->phase);
    cmd_arg(c, "*");
    cmd_arg(c, XM_F_JOB);
    if (spec->id) {
        cmd_arg(c, spec->id);
    } else {
        job_new_id(id);
        cmd_arg(c, id);
    }
    cmd_arg(c, XM_F_MIGRATION);
    cmd_arg(c, spec->migration);
    cmd_arg(c, XM_F_HOST);
    cmd_arg(c, spec->host);
    cmd_arg(c, XM_F_DISK);
    cmd_arg(c, spec->disk ? spec->disk : "");
    cmd_arg(c, XM_F_PHASE);
    cmd_arg(c, spec->phase);
    cmd_arg(c, XM_F_ATTEMPT);
    cmd_argll(c, spec->attempt > 0 ? spec->attempt : 1);
    cmd_arg(c, XM_F_GROUP);
    cmd_arg(c, spec->group ? spec->group : "");
    if (spec->member && spec->member[0]) {
        cmd_arg(c, XM_F_MEMBER);
        cmd_arg(c, spec->member);
    }
    cmd_arg(c, XM_F_ENQUEUED);
    cmd_argll(c, now_us);
    cmd_arg(c, XM_F_PAYLOAD);
    cmd_arg(c, spec->payload ? spec->payload : "{}");
}

void job_spec_from_job(struct job_spec *spec, const struct job *job)
{
    spec->id = job->id;
    spec->migration = job->migration;
    spec->host = job->host;
    spec->disk = job->disk;
    spec->phase = job->phase;
    spec->group = job->group;
    spec->member = job->member;
    spec->payload = job->payload;
    spec->attempt = job->attempt;
}

static char *dup_reply_str(const redisReply *r)
{
    return xstrndup(r->str, r->len);
}

static int field_is(const redisReply *f, const char *name)
{
    return f->len == strlen(name) && memcmp(f->str, name, f->len) == 0;
}

int job_from_entry(struct job *job, const char *stream, const redisReply *entry, struct err *err)
{
    job_release(job);
    job->stream = xstrdup(stream);
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return err_set(err, ERR_PERMANENT, "entry: not a stream entry");
    job->entry = dup_reply_str(entry->element[0]);
    const redisReply *fv = entry->element[1];
    /* A deleted entry still pending in the group comes back with nil fields. */
    if (fv->type != REDIS_REPLY_ARRAY)
        return err_set(err, ERR_PERMANENT, "entry '%s': deleted from the stream", job->entry);
    if (fv->elements % 2 || fv->elements > 64)
        return err_set(err, ERR_PERMANENT, "entry '%s': malformed field list", job->entry);

    const char *attempt = NULL, *enqueued = NULL;
    char *attempt_s = NULL, *enqueued_s = NULL;
    for (size_t i = 0; i < fv->elements; i += 2) {
        const redisReply *f = fv->element[i], *v = fv->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return err_set(err, ERR_PERMANENT, "entry '%s': field is not a string", job->entry);
        char **slot = NULL;
        if (field_is(f, XM_F_JOB))
            slot = &job->id;
        else if (field_is(f, XM_F_MIGRATION))
            slot = &job->migration;
        else if (field_is(f, XM_F_HOST))
            slot = &job->host;
        else if (field_is(f, XM_F_DISK))
            slot = &job->disk;
        else if (field_is(f, XM_F_PHASE))
            slot = &job->phase;
        else if (field_is(f, XM_F_GROUP))
            slot = &job->group;
        else if (field_is(f, XM_F_MEMBER))
            slot = &job->member;
        else if (field_is(f, XM_F_PAYLOAD))
            slot = &job->payload;
        else if (field_is(f, XM_F_ATTEMPT))
            slot = &attempt_s;
        else if (field_is(f, XM_F_ENQUEUED))
            slot = &enqueued_s;
        if (slot) {
            free(*slot);
            *slot = dup_reply_str(v);
        }
    }
    attempt = attempt_s;
    enqueued = enqueued_s;
    int rc = -1;
    long long n;
    if (!job->disk)
        job->disk = xstrdup("");
    if (!job->group)
        job->group = xstrdup("");
    if (!job->member)
        job->member = xstrdup("");
    if (!job->payload)
        job->payload = xstrdup("{}");
    if (!job->id || !job_valid_ident(job->id)) {
        err_set(err, ERR_PERMANENT, "entry '%s': job: missing or not a valid job id", job->entry);
        goto out;
    }
    struct job_spec spec;
    job_spec_from_job(&spec, job);
    spec.attempt = 1;
    spec.payload = NULL;
    if (job_spec_check(&spec, err) < 0) {
        err_prefix(err, "entry '%s'", job->entry);
        goto out;
    }
    if (check_payload(job->payload, strlen(job->payload), err) < 0) {
        err_prefix(err, "entry '%s'", job->entry);
        goto out;
    }
    if (!attempt || config_parse_ll(attempt, 1, 1000, &n) < 0) {
        err_set(err, ERR_PERMANENT, "entry '%s': attempt: missing or not 1..1000", job->entry);
        goto out;
    }
    job->attempt = n;
    job->enqueued_us = 0;
    if (enqueued && config_parse_ll(enqueued, 0, (long long)1 << 62, &n) == 0)
        job->enqueued_us = n;
    rc = 0;
out:
    free(attempt_s);
    free(enqueued_s);
    return rc;
}
