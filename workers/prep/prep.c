/*
 * xm-prep: the prep phase of one host. Runs playbooks/prep.yml against the source
 * server (like xm-clone runs clone.yml: workers/common/ansible.c, a 0600 inventory and
 * vars file, an argument vector), which makes the OS boot in the migration's cloud:
 * drivers in the initramfs, the kernel command line, the first NIC by DHCP, fstab by
 * UUID with nofail, the guest agent; every file backed up first on the host, so
 * playbooks/rollback.yml can undo it.
 *
 * The playbook writes a JSON report into this worker's private folder; the outcome is
 * recorded in the completion transaction, in xm:prep:<migration>:<host> (see
 * schemas/README.md): the changed files, the findings, and on a dry run the diffs. A
 * real run also puts its findings (rule "prep-*", severity warning) into the host's
 * findings, replacing those of an earlier prep run, and hands off to clone.
 *
 * Payload: {"dry_run": true} runs the playbook in check mode: nothing on the host
 * changes, nothing is handed off, and GET .../hosts/{host}/prep shows the diffs.
 *
 * Failures: the host unreachable is transient; a distribution prep does not support,
 * a failed task and bad input are permanent, with Ansible's message on the host.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ansible.h"
#include "config.h"
#include "conn.h"
#include "job.h"
#include "keys.h"
#include "secret.h"
#include "state.h"
#include "worker.h"
#include "xmalloc.h"

#define REPORT_MAX (8 << 20) /* the playbook's report file */
#define DIFFS_MAX (1 << 20)  /* diffs kept for the API; beyond, only the paths */

/* ---------------------------------------------------------------- the host's SSH target */

struct target {
    redisReply *host; /* address, port, credential, findings */
    json_t *ssh;      /* the opened ssh credential (holds secrets) */
    struct ansible_target t;
};

static void target_release(struct target *t)
{
    if (t->host)
        freeReplyObject(t->host);
    json_decref(t->ssh);
    memset(t, 0, sizeof(*t));
}

/* The host's address and opened SSH credential. 0, or -1 with err (permanent). */
static int target_load(struct redisContext *c, const char *mig, const char *host,
                       const unsigned char key[32], struct target *t, struct err *err)
{
    char hkey[300], kind[16];
    snprintf(hkey, sizeof(hkey), XM_HOST_FMT, mig, host);
    t->host = conn_cmd(
        c, err, 6, (const char *[]){"HMGET", hkey, "address", "port", "credential", XM_H_FINDINGS});
    if (!t->host)
        return -1;
    redisReply **e = t->host->element;
    if (e[0]->type != REDIS_REPLY_STRING || e[2]->type != REDIS_REPLY_STRING)
        return err_set(err, ERR_PERMANENT,
                       "host '%s' of migration '%s' has no address or credential", host, mig);
    if (state_open_credential(c, e[2]->str, key, &t->ssh, kind, err) < 0)
        return -1;
    if (strcmp(kind, "ssh") != 0)
        return err_set(err, ERR_PERMANENT, "credential '%s' is for %s, not ssh", e[2]->str, kind);
    t->t = (struct ansible_target){
        .name = host,
        .address = e[0]->str,
        .port = e[1]->type == REDIS_REPLY_STRING ? (int)strtol(e[1]->str, NULL, 10) : 22,
        .user = json_string_value(json_object_get(t->ssh, "user")),
        .private_key = json_string_value(json_object_get(t->ssh, "private_key")),
        .password = json_string_value(json_object_get(t->ssh, "password")),
        .become_password = json_string_value(json_object_get(t->ssh, "become_password")),
    };
    return 0;
}

/* ---------------------------------------------------------------- the report */

/* Read the playbook's JSON report (new object), or NULL with err. */
static json_t *report_read(const char *path, struct err *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        err_set(err, ERR_PERMANENT, "prep.yml wrote no report (%s)", strerror(errno));
        return NULL;
    }
    if (st.st_size > REPORT_MAX) {
        err_set(err, ERR_PERMANENT, "prep.yml's report is %lld bytes, over %d",
                (long long)st.st_size, REPORT_MAX);
        return NULL;
    }
    json_error_t je;
    json_t *r = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(r) || !json_is_array(json_object_get(r, "changed")) ||
        !json_is_array(json_object_get(r, "findings"))) {
        err_set(err, ERR_PERMANENT, "prep.yml's report is not what xm-prep expects: %s",
                r ? "no changed/findings lists" : je.text);
        json_decref(r);
        return NULL;
    }
    return r;
}

/* The host's findings: those of other phases kept, earlier prep findings replaced by
 * this run's (rule "prep-*", severity warning, names unique per host). New text. */
static char *findings_merge(const char *host, const char *current, const json_t *prep)
{
    json_t *old = current ? json_loads(current, 0, NULL) : NULL;
    json_t *out = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(old, i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule"));
        if (!rule || strncmp(rule, "prep-", 5) != 0)
            json_array_append(out, f);
    }
    json_array_foreach(prep, i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule"));
        const char *msg = json_string_value(json_object_get(f, "message"));
        if (!rule || !msg)
            continue;
        char name[200];
        snprintf(name, sizeof(name), "%s/%s-%zu", host, rule, i + 1);
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s}", "name", name, "rule", rule,
                                             "severity", "warning", "message", msg));
    }
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    json_decref(old);
    return text;
}

/* Record the report in the completion transaction: xm:prep:<mig>:<host>. */
static void report_record(struct job_result *res, const struct job *job, const json_t *r,
                          int dry_run)
{
    char key[300], finished[32];
    snprintf(key, sizeof(key), XM_PREP_FMT, job->migration, job->host);
    snprintf(finished, sizeof(finished), "%lld", job_now_us() / 1000);
    char *changed = json_dumps(json_object_get(r, "changed"), JSON_COMPACT);
    char *findings = json_dumps(json_object_get(r, "findings"), JSON_COMPACT);
    char *diffs = NULL;
    if (dry_run && json_is_array(json_object_get(r, "diffs"))) {
        diffs = json_dumps(json_object_get(r, "diffs"), JSON_COMPACT);
        if (strlen(diffs) > DIFFS_MAX) {
            free(diffs);
            diffs = xasprintf("[{\"path\":\"*\",\"truncated\":true,\"diff\":[]}]");
        }
    }
    const char *distro = json_string_value(json_object_get(r, "distribution"));
    const char *backup = json_string_value(json_object_get(r, "backup"));
    job_result_hset(res, key, "job", job->id);
    job_result_hset(res, key, "dry_run", dry_run ? "true" : "false");
    job_result_hset(res, key, "finished", finished);
    job_result_hset(res, key, "distribution", distro ? distro : "");
    job_result_hset(res, key, "backup", backup ? backup : "");
    job_result_hset(res, key, "changed", changed);
    job_result_hset(res, key, "findings", findings);
    job_result_hset(res, key, "diffs", diffs ? diffs : "[]");
    free(changed);
    free(findings);
    free(diffs);
}

/* ---------------------------------------------------------------- the handler */

static int prep_handle(struct worker *w, const struct job *job, struct job_result *res,
                       struct err *err)
{
    struct redisContext *c = worker_redis(w);
    if (!c)
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    int rc = -1, have_key = 0, have_dir = 0;
    unsigned char key[32];
    struct target t = {0};
    json_t *vars = NULL, *report = NULL;
    char dir[] = "/tmp/xm-prep-XXXXXX", result[64] = "";

    json_t *payload = json_loads(job->payload, 0, NULL);
    int dry_run = json_is_true(json_object_get(payload, "dry_run"));
    json_decref(payload);

    if (secret_key_parse(xm_config.master_key, key, err) < 0)
        goto out;
    have_key = 1;
    if (target_load(c, m.id, job->host, key, &t, err) < 0)
        goto out;
    /* The playbook's report comes back through a file in a folder only we can read. */
    if (!mkdtemp(dir)) {
        err_set(err, ERR_TRANSIENT, "mkdtemp: %s", strerror(errno));
        goto out;
    }
    have_dir = 1;
    snprintf(result, sizeof(result), "%s/report.json", dir);
    vars = json_pack("{s:s, s:s, s:s, s:b, s:s, s:b}", "xm_cloud", m.cloud, "xm_migration", m.id,
                     "xm_host", job->host, "xm_dry_run", dry_run, "xm_result_file", result,
                     "xm_become", t.t.user && strcmp(t.t.user, "root") != 0);
    char playbook[512], ctx[300];
    snprintf(playbook, sizeof(playbook), "%s/prep.yml", xm_config.playbooks_dir);
    snprintf(ctx, sizeof(ctx), "migration=%s host=%s job=%s", m.id, job->host, job->id);
    struct ansible_result ar;
    if (ansible_run(playbook, &t.t, vars, ctx, &ar, err) < 0)
        goto out;
    if (!(report = report_read(result, err)))
        goto out;

    report_record(res, job, report, dry_run);
    size_t n_changed = json_array_size(json_object_get(report, "changed"));
    size_t n_findings = json_array_size(json_object_get(report, "findings"));
    if (dry_run) {
        job_result_message(res, "dry run: %zu files would change, %zu findings", n_changed,
                           n_findings);
    } else {
        char hkey[300];
        snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m.id, job->host);
        redisReply *cur = t.host->element[3];
        char *merged = findings_merge(job->host, cur->type == REDIS_REPLY_STRING ? cur->str : NULL,
                                      json_object_get(report, "findings"));
        job_result_hset(res, hkey, XM_H_FINDINGS, merged);
        free(merged);
        job_result_next(res, "clone", NULL, NULL);
        job_result_message(res, "prepared for %s: %zu files changed, %zu findings", m.cloud,
                           n_changed, n_findings);
    }
    rc = 0;
out:
    if (have_dir) {
        unlink(result);
        rmdir(dir);
    }
    if (have_key)
        secret_wipe(key, sizeof(key));
    json_decref(report);
    json_decref(vars);
    target_release(&t);
    mig_info_release(&m);
    return rc;
}

int main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-prep",
        .phase = "prep",
        .handle = prep_handle,
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    return worker_main(&ops);
}
