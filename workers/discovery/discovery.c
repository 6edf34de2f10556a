/*
 * xm-discovery: the discovery phase. Two kinds of job on xm:q:discovery:
 *
 * One per host (the API enqueues them as one fan-in group): check the host's name and
 * address against strict patterns, run playbooks/discover.yml against it (0600
 * inventory and variables, an argument vector: workers/common/ansible.c), wait up to
 * XM_DISCOVERY_WAIT_S for its facts to reach xm-api's callback, normalise them into the
 * host record (schemas/host.json), run the pre-flight rules for the migration's cloud,
 * and record the outcome: discovered, unreachable (with Ansible's message) or failed.
 * A host that cannot be discovered is an outcome, not a failed job, so one bad host
 * never holds the group back; its "discovered" blocker says what to do. Only trouble
 * of xmigrate's own (Redis, ansible-playbook not installed, a transient failure before
 * the last attempt) fails or retries the job.
 *
 * Each host job hands off one migration-level job (host "-", payload {"summary":
 * true}); the runtime enqueues it only for the member that ends the group. It reads
 * every host's outcome and findings, suggests the blueprint (unless the operator gave
 * one) and moves the migration on (summary.h).
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ansible.h"
#include "config.h"
#include "conn.h"
#include "jsonschema.h"
#include "keys.h"
#include "log.h"
#include "machine_types.h"
#include "normalize.h"
#include "rules.h"
#include "secret.h"
#include "state.h"
#include "suggest.h"
#include "summary.h"
#include "worker.h"
#include "xmalloc.h"

/* Loaded on the first job (the configuration is read by worker_main). */
static struct jsonschema_set *g_schemas;
static json_t *g_types;

static int load_tables(struct err *err)
{
    if (!g_schemas && !(g_schemas = jsonschema_set_load_dir(xm_config.schemas_dir, err)))
        return -1;
    if (!g_types && !(g_types = machine_types_load(xm_config.schemas_dir, err)))
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- one host */

struct outcome {
    const char *status; /* DISCOVERY_* */
    char reason[512];
    json_t *record; /* new, when discovered */
};

static void set_outcome(struct outcome *o, const char *status, const char *reason)
{
    o->status = status;
    xstrlcpy(o->reason, reason ? reason : "", sizeof(o->reason));
}

/* The migration's callback token, opened from its sealed copy (new; wipe and free). */
static char *callback_token(struct redisContext *c, const char *mig, struct err *err)
{
    unsigned char key[32];
    if (secret_key_parse(xm_config.master_key, key, err) < 0)
        return NULL;
    char k[256];
    snprintf(k, sizeof(k), XM_MIG_FMT, mig);
    redisReply *r = conn_cmd(c, err, 3, (const char *[]){"HGET", k, "callback_sealed"});
    unsigned char *plain = NULL;
    size_t len = 0;
    if (r && r->type != REDIS_REPLY_STRING)
        err_set(err, ERR_PERMANENT, "migration '%s' has no callback token", mig);
    else if (r)
        secret_open(key, mig, r->str, &plain, &len, err);
    if (r)
        freeReplyObject(r);
    secret_wipe(key, sizeof(key));
    return (char *)plain;
}

/* Wait until the callback stored facts newer than since_ms; 1 when they came, 0 at
 * the deadline, -1 on a Redis failure. */
static int wait_facts(struct worker *w, const char *mig, const char *host, long long since_ms,
                      struct err *err)
{
    char key[300];
    snprintf(key, sizeof(key), XM_HOST_FMT, mig, host);
    long long deadline = job_mono_ms() + xm_config.discovery_wait_s * 1000;
    for (;;) {
        redisReply *r =
            conn_cmd(worker_redis(w), err, 3, (const char *[]){"HGET", key, "discovered"});
        if (!r)
            return -1;
        long long at = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        freeReplyObject(r);
        if (at >= since_ms)
            return 1;
        if (job_mono_ms() >= deadline || worker_stopping(w))
            return 0;
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* The stored facts of host, normalised and checked against host.json, into o. 0, or
 * -1 with err when Redis failed. */
static int read_record(struct redisContext *c, const char *mig, const char *host, struct outcome *o,
                       struct err *err)
{
    char key[300];
    snprintf(key, sizeof(key), XM_FACTS_FMT, mig, host);
    redisReply *r = conn_cmd(c, err, 2, (const char *[]){"GET", key});
    if (!r)
        return -1;
    json_t *facts = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
    freeReplyObject(r);
    struct err nerr = {0};
    json_t *rec = facts ? normalize_host(host, facts, &nerr) : NULL;
    json_decref(facts);
    struct jsonschema_error ve;
    if (!rec) {
        char msg[600];
        snprintf(msg, sizeof(msg), "the facts it sent cannot be read: %s",
                 nerr.msg[0] ? nerr.msg : "not JSON");
        set_outcome(o, DISCOVERY_FAILED, msg);
    } else if (jsonschema_validate(jsonschema_set_get(g_schemas, "host"), rec, &ve) < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "its host record is not valid: %s: %s", ve.path, ve.message);
        set_outcome(o, DISCOVERY_FAILED, msg);
        json_decref(rec);
    } else {
        set_outcome(o, DISCOVERY_OK, NULL);
        o->record = rec;
    }
    return 0;
}

/*
 * Run the playbook against the host and fill o. -1 with err only for xmigrate's own
 * trouble (retried when transient); whatever is wrong with the host is an outcome.
 */
static int discover(struct worker *w, const struct job *job, const struct mig_info *m,
                    struct outcome *o, struct err *err)
{
    struct redisContext *c = worker_redis(w);
    char hkey[300], playbook[512], ctx[300];
    snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m->id, job->host);
    redisReply *h =
        conn_cmd(c, err, 5, (const char *[]){"HMGET", hkey, "address", "port", "credential"});
    if (!h)
        return -1;
    int rc = -1;
    json_t *ssh = NULL, *vars = NULL;
    char *token = NULL;
    char kind[16];
    unsigned char key[32];
    int have_key = 0;
    const char *address = h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : NULL;
    const char *cred = h->element[2]->type == REDIS_REPLY_STRING ? h->element[2]->str : NULL;
    if (!address || !cred) {
        err_set(err, ERR_PERMANENT, "host '%s' has no address or credential", job->host);
        goto out;
    }
    /* Never let a value that could be read as shell or YAML reach the inventory. */
    if (!job_valid_ident(job->host) || !ansible_valid_host(address)) {
        set_outcome(o, DISCOVERY_FAILED,
                    "its name or address does not match the strict pattern (letters, digits, "
                    "'-' and '.'); it was not used");
        rc = 0;
        goto out;
    }
    if (secret_key_parse(xm_config.master_key, key, err) < 0)
        goto out;
    have_key = 1;
    if (state_open_credential(c, cred, key, &ssh, kind, err) < 0)
        goto out;
    if (strcmp(kind, "ssh") != 0) {
        set_outcome(o, DISCOVERY_FAILED, "its credential is not an ssh credential");
        rc = 0;
        goto out;
    }
    if (!(token = callback_token(c, m->id, err)))
        goto out;
    const char *user = json_string_value(json_object_get(ssh, "user"));
    vars = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o}", "xm_api", xm_config.api_url, "xm_migration",
                     m->id, "xm_host", job->host, "xm_token", token, "xm_become",
                     user && strcmp(user, "root") != 0, "xm_drivers", rules_driver_names());
    struct ansible_target t = {
        .name = job->host,
        .address = address,
        .port = h->element[1]->type == REDIS_REPLY_STRING
                    ? (int)strtol(h->element[1]->str, NULL, 10)
                    : 22,
        .user = user,
        .private_key = json_string_value(json_object_get(ssh, "private_key")),
        .password = json_string_value(json_object_get(ssh, "password")),
        .become_password = json_string_value(json_object_get(ssh, "become_password")),
    };
    snprintf(playbook, sizeof(playbook), "%s/discover.yml", xm_config.playbooks_dir);
    snprintf(ctx, sizeof(ctx), "migration=%s host=%s job=%s", m->id, job->host, job->id);
    long long started = job_now_us() / 1000;
    struct ansible_result ar;
    struct err aerr = {0};
    if (ansible_run(playbook, &t, vars, ctx, &ar, &aerr) < 0) {
        if (ar.unreachable) {
            set_outcome(o, DISCOVERY_UNREACHABLE, ar.message[0] ? ar.message : aerr.msg);
        } else if (ar.exit_code == 127 ||
                   (aerr.kind == ERR_TRANSIENT && job->attempt < xm_config.max_attempts)) {
            *err = aerr; /* Ansible missing here (fails the job), or worth another try */
            goto out;
        } else {
            /* A task failed, or the last attempt: the host's outcome, so the others go on. */
            set_outcome(o, DISCOVERY_FAILED, aerr.msg);
        }
        rc = 0;
        goto out;
    }
    int got = wait_facts(w, m->id, job->host, started, err);
    if (got < 0)
        goto out;
    if (got == 0) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the playbook ran but its facts did not reach xm-api within %lld s (XM_API_URL)",
                 xm_config.discovery_wait_s);
        set_outcome(o, DISCOVERY_FAILED, msg);
        rc = 0;
        goto out;
    }
    rc = read_record(c, m->id, job->host, o, err);
out:
    if (token) {
        secret_wipe(token, strlen(token));
        free(token);
    }
    if (have_key)
        secret_wipe(key, sizeof(key));
    json_decref(vars);
    json_decref(ssh);
    freeReplyObject(h);
    return rc;
}

/* Append to findings the host's findings of its last prep run (rule "prep-*"): a new
 * discovery replaces only its own. 0, or -1 with err when Redis failed. */
static int keep_prep_findings(struct redisContext *c, const char *hkey, json_t *findings,
                              struct err *err)
{
    redisReply *r = conn_cmd(c, err, 3, (const char *[]){"HGET", hkey, XM_H_FINDINGS});
    if (!r)
        return -1;
    json_t *old = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
    freeReplyObject(r);
    size_t i;
    json_t *f;
    json_array_foreach(old, i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule"));
        if (rule && strncmp(rule, "prep-", 5) == 0)
            json_array_append(findings, f);
    }
    json_decref(old);
    return 0;
}

/* What GET /v1/migrations/{id} shows of a discovered host. */
static char *summary_of(const json_t *rec)
{
    const json_t *os = json_object_get(rec, "os");
    char name[128];
    snprintf(name, sizeof(name), "%s %s", json_string_value(json_object_get(os, "distribution")),
             json_string_value(json_object_get(os, "version")));
    json_t *s = json_pack(
        "{s:s, s:O, s:O, s:O, s:O, s:O, s:i}", "os", name, "kernel", json_object_get(os, "kernel"),
        "arch", json_object_get(os, "arch"), "boot_mode", json_object_get(rec, "boot_mode"),
        "vcpus", json_object_get(rec, "vcpus"), "memory_mib", json_object_get(rec, "memory_mib"),
        "disks", (int)json_array_size(json_object_get(rec, "disks")));
    char *text = json_dumps(s, JSON_COMPACT);
    json_decref(s);
    return text;
}

static int handle_host(struct worker *w, const struct job *job, struct job_result *res,
                       struct err *err)
{
    struct mig_info m;
    if (state_load_migration(worker_redis(w), job->migration, &m, err) < 0)
        return -1;
    struct outcome o = {DISCOVERY_FAILED, "", NULL};
    int rc = -1;
    char *findings_text = NULL, *record_text = NULL, *summary = NULL;
    if (discover(w, job, &m, &o, err) < 0)
        goto out;
    char hkey[300], rkey[300];
    snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m.id, job->host);
    snprintf(rkey, sizeof(rkey), XM_HOST_RECORD_FMT, m.id, job->host);
    json_t *findings = rules_run(job->host, m.cloud, o.status, o.reason, o.record);
    if (keep_prep_findings(worker_redis(w), hkey, findings, err) < 0) {
        json_decref(findings);
        goto out;
    }
    int blockers, warnings;
    rules_count(findings, &blockers, &warnings);
    findings_text = json_dumps(findings, JSON_COMPACT);
    json_decref(findings);
    if (o.record) {
        /* The record before the hand-off that announces it (SET is idempotent). */
        record_text = json_dumps(o.record, JSON_COMPACT | JSON_SORT_KEYS);
        redisReply *r =
            conn_cmd(worker_redis(w), err, 3, (const char *[]){"SET", rkey, record_text});
        if (!r)
            goto out;
        freeReplyObject(r);
        summary = summary_of(o.record);
    } else {
        /* Not discovered this time: a record from an earlier run no longer holds. */
        redisReply *r = conn_cmd(worker_redis(w), err, 2, (const char *[]){"DEL", rkey});
        if (!r)
            goto out;
        freeReplyObject(r);
    }
    job_result_hset(res, hkey, XM_H_DISCOVERY, o.status);
    job_result_hset(res, hkey, XM_H_DISCOVERY_ERROR, o.reason);
    job_result_hset(res, hkey, XM_H_FINDINGS, findings_text);
    job_result_hset(res, hkey, XM_H_SUMMARY, summary ? summary : "");
    job_result_next_host(res, "discovery", XM_HOST_NONE, NULL, "{\"summary\":true}");
    job_result_message(res, "%s %s%s%s; %d blockers, %d warnings", job->host, o.status,
                       o.reason[0] ? ": " : "", o.reason, blockers, warnings);
    rc = 0;
out:
    free(findings_text);
    free(record_text);
    free(summary);
    json_decref(o.record);
    mig_info_release(&m);
    return rc;
}

/* ---------------------------------------------------------------- the migration */

static int handle_summary(struct worker *w, const struct job *job, struct job_result *res,
                          struct err *err)
{
    struct redisContext *c = worker_redis(w);
    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    int rc = -1, blockers = 0, warnings = 0, found = 0, lost = 0;
    json_t *records = json_object();
    char *bp_text = NULL;
    char mkey[256];
    snprintf(mkey, sizeof(mkey), XM_MIG_FMT, m.id);
    redisReply *mh =
        conn_cmd(c, err, 4, (const char *[]){"HMGET", mkey, "auto_approve", "blueprint_source"});
    if (!mh)
        goto out;
    int auto_approve =
        mh->element[0]->type == REDIS_REPLY_STRING && strcmp(mh->element[0]->str, "1") == 0;
    int suggested =
        mh->element[1]->type == REDIS_REPLY_STRING && strcmp(mh->element[1]->str, "suggested") == 0;
    freeReplyObject(mh);

    size_t i;
    json_t *hn;
    json_array_foreach(m.hosts, i, hn)
    {
        const char *host = json_string_value(hn);
        char hkey[300], rkey[300];
        snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m.id, host);
        snprintf(rkey, sizeof(rkey), XM_HOST_RECORD_FMT, m.id, host);
        redisReply *h = conn_cmd(c, err, 6,
                                 (const char *[]){"HMGET", hkey, XM_H_DISCOVERY, XM_H_FINDINGS,
                                                  XM_H_PHASE, XM_H_STATUS});
        if (!h)
            goto out;
        char outcome[32];
        snprintf(outcome, sizeof(outcome), "%s",
                 h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : "");
        json_t *f = h->element[1]->type == REDIS_REPLY_STRING
                        ? json_loads(h->element[1]->str, 0, NULL)
                        : NULL;
        int b, wn;
        rules_count(f, &b, &wn);
        json_decref(f);
        blockers += b;
        warnings += wn;
        if (strcmp(outcome, DISCOVERY_OK) == 0)
            found++;
        else
            lost++;
        /* The last member's record says "queued" for this very job: discovery is over. */
        int settle = h->element[2]->type == REDIS_REPLY_STRING &&
                     strcmp(h->element[2]->str, "discovery") == 0 &&
                     h->element[3]->type == REDIS_REPLY_STRING &&
                     (strcmp(h->element[3]->str, "queued") == 0 ||
                      strcmp(h->element[3]->str, "waiting") == 0) &&
                     outcome[0];
        freeReplyObject(h);
        if (settle)
            job_result_hset(res, hkey, XM_H_STATUS, "done");
        redisReply *r = conn_cmd(c, err, 2, (const char *[]){"GET", rkey});
        if (!r)
            goto out;
        json_t *rec = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
        freeReplyObject(r);
        if (rec && strcmp(outcome, DISCOVERY_OK) == 0)
            json_object_set_new(records, host, rec);
        else
            json_decref(rec);
    }

    struct summary_decision d;
    summary_decide(m.status, auto_approve, blockers, &d);
    if (d.suggest && (!m.blueprint || suggested)) {
        json_t *bp = suggest_blueprint(m.id, m.cloud, m.hosts, records, g_types);
        struct jsonschema_error ve;
        if (jsonschema_validate(jsonschema_set_get(g_schemas, "blueprint"), bp, &ve) < 0) {
            err_set(err, ERR_PERMANENT, "the suggested blueprint is not valid: %s: %s", ve.path,
                    ve.message);
            json_decref(bp);
            goto out;
        }
        bp_text = json_dumps(bp, JSON_COMPACT);
        json_decref(bp);
        job_result_hset(res, mkey, "blueprint", bp_text);
        job_result_hset(res, mkey, "blueprint_source", "suggested");
    }
    char counts[32], now[32];
    snprintf(now, sizeof(now), "%lld", job_now_us() / 1000);
    if (d.status) {
        job_result_hset(res, mkey, "status", d.status);
        snprintf(counts, sizeof(counts), "%d", blockers);
        job_result_hset(res, mkey, "blockers", counts);
        snprintf(counts, sizeof(counts), "%d", warnings);
        job_result_hset(res, mkey, "warnings", counts);
        job_result_hset(res, mkey, "updated", now);
    }
    if (d.start_network) {
        job_result_hset(res, mkey, "approved_by", "auto-approve");
        job_result_next_host(res, "network", XM_HOST_NONE, NULL, "{}");
    }
    job_result_message(res,
                       "discovery finished: %d discovered, %d not; %d blockers, %d warnings; %s",
                       found, lost, blockers, warnings,
                       d.start_network ? "auto-approved, network queued"
                       : d.status      ? "awaiting approval"
                                       : "migration already past approval");
    rc = 0;
out:
    free(bp_text);
    json_decref(records);
    mig_info_release(&m);
    return rc;
}

static int discovery_handle(struct worker *w, const struct job *job, struct job_result *res,
                            struct err *err)
{
    if (!worker_redis(w))
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    if (load_tables(err) < 0)
        return -1;
    json_t *p = json_loads(job->payload, 0, NULL);
    int summary = json_is_true(json_object_get(p, "summary"));
    json_decref(p);
    if (strcmp(job->host, XM_HOST_NONE) == 0) {
        if (!summary)
            return err_set(err, ERR_PERMANENT, "a migration-level discovery job must be a summary");
        return handle_summary(w, job, res, err);
    }
    return handle_host(w, job, res, err);
}

int main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-discovery",
        .phase = "discovery",
        .handle = discovery_handle,
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    int rc = worker_main(&ops);
    jsonschema_set_free(g_schemas);
    json_decref(g_types);
    return rc;
}
