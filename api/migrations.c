/*
 * /v1/migrations: create, list, show and cancel migrations; their blueprint and its
 * approval; retrying a failed host and re-running a phase; the discovery callback.
 *
 * The API only writes state and enqueues jobs (DESIGN.md section 1): every change is
 * one MULTI/EXEC that also appends its event to xm:events.
 */
#include <arpa/inet.h>
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cmd.h"
#include "config.h"
#include "job.h"
#include "jsonschema.h"
#include "keys.h"
#include "secret.h"
#include "server.h"
#include "xmalloc.h"

/* Migration statuses (field "status" of xm:mig:<id>). */
#define MIG_DISCOVERING "discovering"
#define MIG_AWAITING "awaiting_approval"
#define MIG_APPROVED "approved"
#define MIG_MIGRATING "migrating"
#define MIG_DONE "done"
#define MIG_CANCELLED "cancelled"

#define MAX_HOSTS 1000

/* ---------------------------------------------------------------- small helpers */

struct cmds {
    struct cmd *v;
    int n, cap;
};

static struct cmd *cmds_add(struct cmds *c)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->v = xrealloc(c->v, sizeof(*c->v) * (size_t)c->cap);
    }
    cmd_init(&c->v[c->n]);
    return &c->v[c->n++];
}

static void cmds_release(struct cmds *c)
{
    for (int i = 0; i < c->n; i++)
        cmd_release(&c->v[i]);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

static void add_event(struct cmds *c, const char *type, const char *mig, const char *host,
                      const char *msg)
{
    struct cmd *e = cmds_add(c);
    cmd_arg(e, "XADD");
    cmd_arg(e, XM_EVENTS);
    cmd_arg(e, "MAXLEN");
    cmd_arg(e, "~");
    cmd_argll(e, xm_config.events_maxlen);
    cmd_arg(e, "*");
    cmd_arg(e, XM_F_TYPE);
    cmd_arg(e, type);
    cmd_arg(e, XM_F_MIGRATION);
    cmd_arg(e, mig);
    cmd_arg(e, XM_F_HOST);
    cmd_arg(e, host ? host : "");
    cmd_arg(e, XM_F_TS);
    cmd_argll(e, job_now_us());
    if (msg) {
        cmd_arg(e, XM_F_MSG);
        cmd_arg(e, msg);
    }
}

/* Run a MULTI .. EXEC built in c (MULTI first, EXEC last). 0 ok; 1 when EXEC was aborted
 * by a WATCH; -1 with err. */
static int run_tx(struct api_req *r, struct cmds *c, struct err *err)
{
    redisReply **rep = xcalloc((size_t)c->n, sizeof(*rep));
    int rc = api_pipeline(r, c->v, c->n, rep, err);
    if (rc == 0 && rep[c->n - 1]->type == REDIS_REPLY_NIL)
        rc = 1;
    if (rc == 0 && rep[c->n - 1]->type == REDIS_REPLY_ARRAY) {
        redisReply *ex = rep[c->n - 1];
        for (size_t i = 0; i < ex->elements && rc == 0; i++)
            if (ex->element[i]->type == REDIS_REPLY_ERROR)
                rc = err_set(err, ERR_PERMANENT, "redis: %s", ex->element[i]->str);
    }
    api_free_replies(rep, c->n);
    free(rep);
    return rc;
}

/* HGETALL reply -> JSON object of strings. */
static json_t *hash_json(const redisReply *h)
{
    json_t *o = json_object();
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        json_object_set_new(o, h->element[i]->str,
                            json_stringn(h->element[i + 1]->str, h->element[i + 1]->len));
    return o;
}

static const char *hash_get(const redisReply *h, const char *field)
{
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, field) == 0)
            return h->element[i + 1]->str;
    return NULL;
}

/* Turn numeric string fields into integers in place. */
static void numbers(json_t *o, const char *const *fields)
{
    for (size_t i = 0; fields[i]; i++) {
        const char *v = json_string_value(json_object_get(o, fields[i]));
        if (v && *v) {
            char *end;
            long long n = strtoll(v, &end, 10);
            if (!*end)
                json_object_set_new(o, fields[i], json_integer(n));
        }
    }
}

/* ---------------------------------------------------------------- blueprint rules */

static int parse_cidr(const char *s, unsigned *net, unsigned *mask)
{
    char ip[32];
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= sizeof(ip))
        return -1;
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    struct in_addr a;
    long bits = strtol(slash + 1, NULL, 10);
    if (inet_pton(AF_INET, ip, &a) != 1 || bits < 0 || bits > 32)
        return -1;
    *mask = bits ? 0xffffffffu << (32 - bits) : 0;
    *net = ntohl(a.s_addr);
    return 0;
}

int blueprint_check(const json_t *bp, const json_t *hosts, char path[256], struct err *err)
{
    const json_t *net = json_object_get(bp, "network");
    const json_t *subnets = json_object_get(net, "subnets");
    unsigned nnet, nmask;
    if (parse_cidr(json_string_value(json_object_get(net, "cidr")), &nnet, &nmask) < 0) {
        snprintf(path, 256, "/network/cidr");
        return err_set(err, ERR_PERMANENT, "not a CIDR block");
    }
    if (nnet & ~nmask) {
        snprintf(path, 256, "/network/cidr");
        return err_set(err, ERR_PERMANENT, "host bits are set; did you mean %u.%u.%u.%u/%d?",
                       (nnet & nmask) >> 24, ((nnet & nmask) >> 16) & 255,
                       ((nnet & nmask) >> 8) & 255, (nnet & nmask) & 255,
                       __builtin_popcount(nmask));
    }
    size_t ns = json_array_size(subnets);
    for (size_t i = 0; i < ns; i++) {
        const json_t *s = json_array_get(subnets, i);
        const char *name = json_string_value(json_object_get(s, "name"));
        unsigned snet, smask;
        parse_cidr(json_string_value(json_object_get(s, "cidr")), &snet, &smask);
        if (snet & ~smask) {
            snprintf(path, 256, "/network/subnets/%zu/cidr", i);
            return err_set(err, ERR_PERMANENT, "host bits are set");
        }
        if (smask < nmask || (snet & nmask) != nnet) {
            snprintf(path, 256, "/network/subnets/%zu/cidr", i);
            return err_set(err, ERR_PERMANENT, "subnet is not inside the network %s",
                           json_string_value(json_object_get(net, "cidr")));
        }
        for (size_t j = 0; j < i; j++) {
            const json_t *o = json_array_get(subnets, j);
            unsigned onet, omask;
            parse_cidr(json_string_value(json_object_get(o, "cidr")), &onet, &omask);
            unsigned m = omask < smask ? omask : smask; /* the larger block's mask */
            if ((snet & m) == (onet & m)) {
                snprintf(path, 256, "/network/subnets/%zu/cidr", i);
                return err_set(err, ERR_PERMANENT, "overlaps subnet '%s'",
                               json_string_value(json_object_get(o, "name")));
            }
            if (strcmp(name, json_string_value(json_object_get(o, "name"))) == 0) {
                snprintf(path, 256, "/network/subnets/%zu/name", i);
                return err_set(err, ERR_PERMANENT, "subnet name '%s' is used twice", name);
            }
        }
    }
    const json_t *placed = json_object_get(bp, "hosts");
    for (size_t i = 0; i < json_array_size(placed); i++) {
        const json_t *h = json_array_get(placed, i);
        const char *host = json_string_value(json_object_get(h, "host"));
        const char *subnet = json_string_value(json_object_get(h, "subnet"));
        int known = 0;
        for (size_t s = 0; s < ns && !known; s++)
            known =
                strcmp(subnet,
                       json_string_value(json_object_get(json_array_get(subnets, s), "name"))) == 0;
        if (!known) {
            snprintf(path, 256, "/hosts/%zu/subnet", i);
            return err_set(err, ERR_PERMANENT, "no subnet '%s' in the network", subnet);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(host, json_string_value(
                                 json_object_get(json_array_get(placed, j), "host"))) == 0) {
                snprintf(path, 256, "/hosts/%zu/host", i);
                return err_set(err, ERR_PERMANENT, "host '%s' is placed twice", host);
            }
        if (hosts) {
            int member = 0;
            for (size_t j = 0; j < json_array_size(hosts) && !member; j++)
                member = strcmp(host, json_string_value(json_array_get(hosts, j))) == 0;
            if (!member) {
                snprintf(path, 256, "/hosts/%zu/host", i);
                return err_set(err, ERR_PERMANENT, "'%s' is not a host of this migration", host);
            }
        }
    }
    for (size_t j = 0; hosts && j < json_array_size(hosts); j++) {
        const char *want = json_string_value(json_array_get(hosts, j));
        int found = 0;
        for (size_t i = 0; i < json_array_size(placed) && !found; i++)
            found =
                strcmp(want,
                       json_string_value(json_object_get(json_array_get(placed, i), "host"))) == 0;
        if (!found) {
            snprintf(path, 256, "/hosts");
            return err_set(err, ERR_PERMANENT, "host '%s' is not placed in any subnet", want);
        }
    }
    path[0] = '\0';
    return 0;
}

/* prefix + rest into out (256 bytes), cut to fit. */
static void join_path(char out[256], const char *prefix, const char *rest)
{
    size_t a = strnlen(prefix, 255);
    memcpy(out, prefix, a);
    size_t b = strnlen(rest, 255 - a);
    memcpy(out + a, rest, b);
    out[a + b] = '\0';
}

/* Validate an embedded blueprint against blueprint.json, then its own rules; path gets
 * the pointer relative to prefix. */
static int blueprint_validate(const json_t *bp, const json_t *hosts,
                              const struct jsonschema_set *schemas, const char *prefix,
                              char path[256], struct err *err)
{
    const struct jsonschema *s = jsonschema_set_get(schemas, "blueprint");
    XM_ASSERT(s != NULL);
    struct jsonschema_error ve;
    char inner[256];
    if (jsonschema_validate(s, bp, &ve) < 0) {
        join_path(path, prefix, ve.path);
        return err_set(err, ERR_PERMANENT, "%s: %s", path, ve.message);
    }
    if (blueprint_check(bp, hosts, inner, err) < 0) {
        join_path(path, prefix, inner);
        return err_prefix(err, "%s", path);
    }
    return 0;
}

/* ---------------------------------------------------------------- machine types */

/* schemas/machine_types.json's table (its "default": {"aws": [{name, ...}], ...}), read
 * once; NULL when unreadable, which refuses every blueprint with a message naming it. */
static json_t *g_machine_types;
static pthread_once_t g_machine_types_once = PTHREAD_ONCE_INIT;

static void machine_types_read(void)
{
    char file[4096];
    snprintf(file, sizeof(file), "%s/machine_types.json", xm_config.schemas_dir);
    json_t *doc = json_load_file(file, JSON_REJECT_DUPLICATES, NULL);
    g_machine_types = json_incref(json_object_get(doc, "default"));
    json_decref(doc);
}

/* Every host of a (schema-valid) blueprint has a machine type the cloud's table lists.
 * -1 with err and the JSON pointer in path. */
static int blueprint_check_types(const json_t *bp, const char *cloud, char path[256],
                                 struct err *err)
{
    pthread_once(&g_machine_types_once, machine_types_read);
    const json_t *types = json_object_get(g_machine_types, cloud);
    const json_t *placed = json_object_get(bp, "hosts");
    for (size_t i = 0; i < json_array_size(placed); i++) {
        const char *type =
            json_string_value(json_object_get(json_array_get(placed, i), "machine_type"));
        int known = 0;
        for (size_t j = 0; j < json_array_size(types) && !known; j++)
            known =
                strcmp(type,
                       json_string_value(json_object_get(json_array_get(types, j), "name"))) == 0;
        if (!known) {
            snprintf(path, 256, "/hosts/%zu/machine_type", i);
            return err_set(err, ERR_PERMANENT,
                           "'%s' is not among the %s machine types xmigrate knows (the list "
                           "is in schemas/machine_types.json)",
                           type, cloud);
        }
    }
    return 0;
}

/* An SSH address reaches an Ansible inventory: letters, digits, '.' and '-' only, not
 * starting with either (the schema says the same; this is the last word before Redis). */
static int safe_address(const char *s)
{
    size_t n =
        s ? strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") : 0;
    return n > 0 && n <= 253 && s[n] == '\0' && s[0] != '-' && s[0] != '.';
}

/* ---------------------------------------------------------------- create */

int migration_build(const json_t *body, const struct jsonschema_set *schemas,
                    const struct migration_input *in, struct cmd **out, int *n_out, char path[256],
                    struct err *err)
{
    struct cmds c = {0};
    json_t *names = json_array();
    int rc = -1;
    const json_t *hosts = json_object_get(body, "hosts");
    const char *id = in->id;
    size_t nh = json_array_size(hosts);
    path[0] = '\0';

    if (nh == 0 || nh > MAX_HOSTS) {
        snprintf(path, 256, "/hosts");
        err_set(err, ERR_PERMANENT, "/hosts: between 1 and %d hosts", MAX_HOSTS);
        goto out;
    }
    for (size_t i = 0; i < nh; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(hosts, i), "name"));
        if (!name || !job_valid_ident(name) || strcmp(name, XM_HOST_NONE) == 0) {
            snprintf(path, 256, "/hosts/%zu/name", i);
            err_set(err, ERR_PERMANENT, "%s: not a valid host name", path);
            goto out;
        }
        if (!safe_address(
                json_string_value(json_object_get(json_array_get(hosts, i), "address")))) {
            snprintf(path, 256, "/hosts/%zu/address", i);
            err_set(err, ERR_PERMANENT, "%s: not an IPv4 address or DNS name", path);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(name, json_string_value(json_array_get(names, j))) == 0) {
                snprintf(path, 256, "/hosts/%zu/name", i);
                err_set(err, ERR_PERMANENT, "%s: host name '%s' is used twice", path, name);
                goto out;
            }
        json_array_append_new(names, json_string(name));
    }
    const json_t *bp = json_object_get(body, "blueprint");
    if (bp && blueprint_validate(bp, names, schemas, "/blueprint", path, err) < 0)
        goto out;
    /* How AWS imports the disks (schema: ebs, raw, vmdk); no other cloud has a choice. */
    const char *aws_import = json_string_value(json_object_get(body, XM_M_AWS_IMPORT));
    if (aws_import && strcmp(json_string_value(json_object_get(body, "cloud")), "aws") != 0) {
        snprintf(path, 256, "/" XM_M_AWS_IMPORT);
        err_set(err, ERR_PERMANENT, "%s: only an aws migration takes it (cloud is '%s')", path,
                json_string_value(json_object_get(body, "cloud")));
        goto out;
    }

    char now[32], group[200], total[16];
    snprintf(now, sizeof(now), "%lld", in->now_ms);
    snprintf(group, sizeof(group), "%s:discovery", id);
    snprintf(total, sizeof(total), "%zu", nh);
    const char *cred = json_string_value(json_object_get(body, "credential"));
    char *bp_text = bp ? json_dumps(bp, JSON_COMPACT) : NULL;

    cmd_arg(cmds_add(&c), "MULTI");
    struct cmd *m = cmds_add(&c);
    cmd_arg(m, "HSET");
    cmd_argf(m, XM_MIG_FMT, id);
    const char *pairs[] = {
        "id",
        id,
        "name",
        json_string_value(json_object_get(body, "name")),
        "cloud",
        json_string_value(json_object_get(body, "cloud")),
        "region",
        json_string_value(json_object_get(body, "region")),
        "credential",
        cred,
        "status",
        MIG_DISCOVERING,
        "created",
        now,
        "updated",
        now,
        "auto_approve",
        json_is_true(json_object_get(body, "auto_approve")) ? "1" : "0",
        "hosts_total",
        total,
        "callback_sha",
        in->callback_sha,
        "callback_sealed",
        in->callback_sealed,
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        cmd_arg(m, pairs[i]);
    /* Clone settings (workers/clone/clone.c): without max_cloning, XM_MAX_CLONING holds. */
    const char *cutover = json_string_value(json_object_get(body, "cutover"));
    cmd_arg(m, "cutover");
    cmd_arg(m, cutover && strcmp(cutover, "manual") == 0 ? "manual" : "auto");
    json_int_t max_cloning = json_integer_value(json_object_get(body, "max_cloning"));
    if (max_cloning > 0) {
        cmd_arg(m, "max_cloning");
        cmd_argll(m, (long long)max_cloning);
    }
    if (aws_import) {
        cmd_arg(m, XM_M_AWS_IMPORT);
        cmd_arg(m, aws_import);
    }
    if (bp_text) {
        cmd_arg(m, "blueprint");
        cmd_arg(m, bp_text);
        cmd_arg(m, "blueprint_source"); /* discovery keeps the operator's blueprint */
        cmd_arg(m, "operator");
        free(bp_text);
    }
    struct cmd *zadd = cmds_add(&c);
    cmd_arg(zadd, "ZADD");
    cmd_arg(zadd, XM_MIGS);
    cmd_arg(zadd, now);
    cmd_arg(zadd, id);
    struct cmd *users = cmds_add(&c);
    cmd_arg(users, "SADD");
    cmd_argf(users, XM_CRED_USERS_FMT, cred);
    cmd_arg(users, id);

    struct cmd *set = cmds_add(&c);
    cmd_arg(set, "SADD");
    cmd_argf(set, XM_MIG_HOSTS_FMT, id);
    for (size_t i = 0; i < nh; i++)
        cmd_arg(set, json_string_value(json_array_get(names, i)));

    /* One discovery job per host, joined in a fan-in group: one unreachable host never
     * holds the others back, and the last one to finish moves the migration on. */
    char(*job_ids)[33] = xcalloc(nh, sizeof(*job_ids));
    struct cmd *fanin = cmds_add(&c);
    cmd_arg(fanin, "SADD");
    cmd_argf(fanin, XM_FANIN_FMT, group);
    for (size_t i = 0; i < nh; i++) {
        job_new_id(job_ids[i]);
        cmd_arg(fanin, job_ids[i]);
    }
    for (size_t i = 0; i < nh; i++) {
        const json_t *h = json_array_get(hosts, i);
        const char *name = json_string_value(json_object_get(h, "name"));
        const char *hcred = json_string_value(json_object_get(h, "credential"));
        json_int_t port = (json_int_t)json_number_value(json_object_get(h, "port"));
        struct cmd *hs = cmds_add(&c);
        cmd_arg(hs, "HSET");
        cmd_argf(hs, XM_HOST_FMT, id, name);
        cmd_arg(hs, "name");
        cmd_arg(hs, name);
        cmd_arg(hs, "address");
        cmd_arg(hs, json_string_value(json_object_get(h, "address")));
        cmd_arg(hs, "port");
        cmd_argll(hs, port ? port : 22);
        cmd_arg(hs, "credential");
        cmd_arg(hs, hcred);
        cmd_arg(hs, XM_H_PHASE);
        cmd_arg(hs, "discovery");
        cmd_arg(hs, XM_H_STATUS);
        cmd_arg(hs, "queued");
        cmd_arg(hs, XM_H_UPDATED);
        cmd_arg(hs, now);
        struct cmd *u = cmds_add(&c);
        cmd_arg(u, "SADD");
        cmd_argf(u, XM_CRED_USERS_FMT, hcred);
        cmd_arg(u, id);
        struct job_spec spec = {.id = job_ids[i],
                                .migration = id,
                                .host = name,
                                .phase = "discovery",
                                .group = group,
                                .payload = "{}"};
        job_spec_xadd(cmds_add(&c), &spec, in->now_ms * 1000);
    }
    free(job_ids);
    add_event(&c, "migration.created", id, NULL, "discovery queued");
    cmd_arg(cmds_add(&c), "EXEC");

    *out = c.v;
    *n_out = c.n;
    c.v = NULL;
    c.n = 0;
    rc = 0;
out:
    cmds_release(&c);
    json_decref(names);
    return rc;
}

/* Every credential the body names must exist and be of the right kind. */
static int check_credentials(struct api_req *r, char path[256], struct err *err, int *unavail)
{
    const json_t *hosts = json_object_get(r->body, "hosts");
    size_t n = 1 + json_array_size(hosts);
    struct cmd *c = xcalloc(n, sizeof(*c));
    redisReply **rep = xcalloc(n, sizeof(*rep));
    const char **want = xcalloc(n, sizeof(*want));
    const char **ids = xcalloc(n, sizeof(*ids));
    ids[0] = json_string_value(json_object_get(r->body, "credential"));
    want[0] = json_string_value(json_object_get(r->body, "cloud"));
    for (size_t i = 1; i < n; i++) {
        ids[i] = json_string_value(json_object_get(json_array_get(hosts, i - 1), "credential"));
        want[i] = "ssh";
    }
    for (size_t i = 0; i < n; i++) {
        cmd_init(&c[i]);
        cmd_arg(&c[i], "HGET");
        cmd_argf(&c[i], XM_CRED_FMT, ids[i]);
        cmd_arg(&c[i], "kind");
    }
    int rc = api_pipeline(r, c, (int)n, rep, err);
    *unavail = rc < 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i == 0)
            snprintf(path, 256, "/credential");
        else
            snprintf(path, 256, "/hosts/%zu/credential", i - 1);
        if (rep[i]->type != REDIS_REPLY_STRING)
            rc = err_set(err, ERR_PERMANENT, "%s: no credential '%s'", path, ids[i]);
        else if (strcmp(rep[i]->str, want[i]) != 0)
            rc = err_set(err, ERR_PERMANENT, "%s: credential '%s' is for %s, not %s", path, ids[i],
                         rep[i]->str, want[i]);
    }
    api_free_replies(rep, (int)n);
    for (size_t i = 0; i < n; i++)
        cmd_release(&c[i]);
    free(c);
    free(rep);
    free(want);
    free(ids);
    return rc;
}

void mig_create(struct api_req *r)
{
    char path[256] = "";
    struct err err = {0};
    int unavail = 0;
    if (check_credentials(r, path, &err, &unavail) < 0) {
        if (unavail)
            api_reply_unavailable(r, &err);
        else
            api_reply_error(r, 400, "invalid_request", path, "%s", err.msg);
        return;
    }
    char id[37], token[SECRET_TOKEN_LEN + 1], sha[65];
    api_new_uuid(id);
    secret_token_new(token);
    secret_sha256_hex(token, strlen(token), sha);
    char *sealed = secret_seal(api_master_key, id, (const unsigned char *)token, strlen(token));
    secret_wipe(token, sizeof(token));
    struct migration_input in = {
        .id = id, .callback_sha = sha, .callback_sealed = sealed, .now_ms = job_now_us() / 1000};
    struct cmds c = {0};
    int rc = migration_build(r->body, api_schemas(r), &in, &c.v, &c.n, path, &err);
    free(sealed);
    const json_t *bp = json_object_get(r->body, "blueprint");
    char inner[256];
    if (rc == 0 && bp &&
        blueprint_check_types(bp, json_string_value(json_object_get(r->body, "cloud")), inner,
                              &err) < 0) {
        join_path(path, "/blueprint", inner);
        err_prefix(&err, "%s", path);
        cmds_release(&c);
        rc = -1;
    }
    if (rc < 0) {
        api_reply_error(r, 400, "invalid_request", path, "%s", err.msg);
        return;
    }
    c.cap = c.n;
    rc = run_tx(r, &c, &err);
    cmds_release(&c);
    if (rc != 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    json_t *names = json_array();
    const json_t *hosts = json_object_get(r->body, "hosts");
    for (size_t i = 0; i < json_array_size(hosts); i++)
        json_array_append(names, json_object_get(json_array_get(hosts, i), "name"));
    char loc[120];
    snprintf(loc, sizeof(loc), "/v1/migrations/%s", id);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Location", loc);
    api_reply_json(r, 201,
                   json_pack("{s:s, s:O, s:s, s:O, s:O, s:o, s:I}", "id", id, "name",
                             json_object_get(r->body, "name"), "status", MIG_DISCOVERING, "cloud",
                             json_object_get(r->body, "cloud"), "region",
                             json_object_get(r->body, "region"), "hosts", names, "created",
                             (json_int_t)in.now_ms));
}

/* ---------------------------------------------------------------- read */

static const char *const mig_public[] = {
    "id",      "name",         "cloud",       "region",   "credential", "status",      "created",
    "updated", "auto_approve", "hosts_total", "blockers", "warnings",   "approved_by", NULL};
static const char *const mig_numbers[] = {"created",  "updated",  "hosts_total",
                                          "blockers", "warnings", NULL};

/* The public part of a migration hash (no callback token material). */
static json_t *mig_json(const redisReply *h)
{
    json_t *o = json_object();
    for (size_t i = 0; mig_public[i]; i++) {
        const char *v = hash_get(h, mig_public[i]);
        if (v)
            json_object_set_new(o, mig_public[i], json_string(v));
    }
    numbers(o, mig_numbers);
    const char *aa = hash_get(h, "auto_approve");
    json_object_set_new(o, "auto_approve", json_boolean(aa && strcmp(aa, "1") == 0));
    const char *cloud = hash_get(h, "cloud"), *ai = hash_get(h, XM_M_AWS_IMPORT);
    if (cloud && strcmp(cloud, "aws") == 0) /* an aws migration without it: the default */
        json_object_set_new(o, XM_M_AWS_IMPORT, json_string(ai && *ai ? ai : "ebs"));
    const char *cutover = hash_get(h, "cutover");
    json_object_set_new(o, "cutover", json_string(cutover ? cutover : "auto"));
    const char *mc = hash_get(h, "max_cloning");
    json_object_set_new(o, "max_cloning",
                        json_integer(mc ? atoll(mc) : (json_int_t)xm_config.max_cloning));
    /* The blockers the approval overrode, by name (stored comma-separated). */
    const char *ov = hash_get(h, "overrides");
    if (ov && *ov) {
        json_t *a = json_array();
        for (const char *p = ov; *p;) {
            size_t n = strcspn(p, ",");
            json_array_append_new(a, json_stringn(p, n));
            p += n + (p[n] == ',');
        }
        json_object_set_new(o, "overrides", a);
    }
    return o;
}

/* Fetch HGETALL xm:mig:<id>; NULL after replying 404/503 itself. */
static redisReply *load_mig(struct api_req *r, const char *id)
{
    struct err err = {0};
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_FMT, id);
    const char *argv[] = {"HGETALL", key};
    redisReply *h = api_cmd(r, &err, 2, argv);
    if (!h) {
        api_reply_unavailable(r, &err);
        return NULL;
    }
    if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) {
        freeReplyObject(h);
        api_reply_error(r, 404, "not_found", NULL, "no migration '%s'", id);
        return NULL;
    }
    return h;
}

void mig_list(struct api_req *r)
{
    long long limit = 50, offset = 0;
    char *ls = api_query(r, "limit"), *os = api_query(r, "offset");
    int bad = (ls && config_parse_ll(ls, 1, 500, &limit) < 0) ||
              (os && config_parse_ll(os, 0, 1000000000, &offset) < 0);
    free(ls);
    free(os);
    if (bad) {
        api_reply_error(r, 400, "invalid_request", NULL,
                        "limit must be 1..500 and offset a whole number from 0");
        return;
    }
    struct err err = {0};
    char start[32], stop[32];
    snprintf(start, sizeof(start), "%lld", offset);
    snprintf(stop, sizeof(stop), "%lld", offset + limit - 1);
    struct cmd c[2];
    cmd_init(&c[0]);
    cmd_init(&c[1]);
    cmd_arg(&c[0], "ZREVRANGE");
    cmd_arg(&c[0], XM_MIGS);
    cmd_arg(&c[0], start);
    cmd_arg(&c[0], stop);
    cmd_arg(&c[1], "ZCARD");
    cmd_arg(&c[1], XM_MIGS);
    redisReply *rep[2];
    int rc = api_pipeline(r, c, 2, rep, &err);
    cmd_release(&c[0]);
    cmd_release(&c[1]);
    if (rc < 0) {
        api_free_replies(rep, 2);
        api_reply_unavailable(r, &err);
        return;
    }
    size_t n = rep[0]->elements;
    struct cmd *hc = xcalloc(n ? n : 1, sizeof(*hc));
    redisReply **hr = xcalloc(n ? n : 1, sizeof(*hr));
    for (size_t i = 0; i < n; i++) {
        cmd_init(&hc[i]);
        cmd_arg(&hc[i], "HGETALL");
        cmd_argf(&hc[i], XM_MIG_FMT, rep[0]->element[i]->str);
    }
    rc = n ? api_pipeline(r, hc, (int)n, hr, &err) : 0;
    json_t *items = json_array();
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (hr[i]->elements)
            json_array_append_new(items, mig_json(hr[i]));
    long long total = rep[1]->integer;
    api_free_replies(rep, 2);
    api_free_replies(hr, (int)n);
    for (size_t i = 0; i < n; i++)
        cmd_release(&hc[i]);
    free(hc);
    free(hr);
    if (rc < 0) {
        json_decref(items);
        api_reply_unavailable(r, &err);
        return;
    }
    json_t *page = json_pack("{s:o, s:I, s:I, s:I}", "items", items, "total", (json_int_t)total,
                             "limit", (json_int_t)limit, "offset", (json_int_t)offset);
    if (offset + limit < total)
        json_object_set_new(page, "next_offset", json_integer(offset + limit));
    api_reply_json(r, 200, page);
}

static const char *const host_public[] = {
    "name",  "address", "port",       "credential", "phase",           "status",  "attempt",
    "error", "updated", "discovered", "discovery",  "discovery_error", "waiting", NULL};
/* Host fields holding JSON (discovery's findings and summary), shown parsed. */
static const char *const host_json[] = {XM_H_FINDINGS, XM_H_SUMMARY, NULL};
static const char *const host_numbers[] = {"port", "attempt", "updated", "discovered", NULL};
static const char *const disk_numbers[] = {"size", "bytes_copied", "bytes_converted", NULL};

void mig_get(struct api_req *r)
{
    const char *id = r->params[0];
    struct err err = {0};
    /* Round trip 1: the migration, its hosts and its resources. */
    struct cmd first[3];
    for (int i = 0; i < 3; i++)
        cmd_init(&first[i]);
    cmd_arg(&first[0], "HGETALL");
    cmd_argf(&first[0], XM_MIG_FMT, id);
    cmd_arg(&first[1], "SORT");
    cmd_argf(&first[1], XM_MIG_HOSTS_FMT, id);
    cmd_arg(&first[1], "ALPHA");
    cmd_arg(&first[2], "SMEMBERS");
    cmd_argf(&first[2], XM_MIG_RESOURCES_FMT, id);
    redisReply *head[3];
    int hrc = api_pipeline(r, first, 3, head, &err);
    for (int i = 0; i < 3; i++)
        cmd_release(&first[i]);
    if (hrc < 0) {
        api_free_replies(head, 3);
        api_reply_unavailable(r, &err);
        return;
    }
    if (head[0]->type != REDIS_REPLY_ARRAY || head[0]->elements == 0) {
        api_free_replies(head, 3);
        api_reply_error(r, 404, "not_found", NULL, "no migration '%s'", id);
        return;
    }
    json_t *out = mig_json(head[0]);
    redisReply *names = head[1];
    json_t *resources = json_array();
    for (size_t i = 0; i < head[2]->elements; i++)
        json_array_append_new(resources, json_string(head[2]->element[i]->str));
    size_t n = names->elements;
    /* Per host: its hash and its disk set, in one round trip. */
    struct cmd *c = xcalloc(2 * n + 1, sizeof(*c));
    redisReply **rep = xcalloc(2 * n + 1, sizeof(*rep));
    for (size_t i = 0; i < n; i++) {
        cmd_init(&c[2 * i]);
        cmd_arg(&c[2 * i], "HGETALL");
        cmd_argf(&c[2 * i], XM_HOST_FMT, id, names->element[i]->str);
        cmd_init(&c[2 * i + 1]);
        cmd_arg(&c[2 * i + 1], "SORT");
        cmd_argf(&c[2 * i + 1], XM_HOST_DISKS_FMT, id, names->element[i]->str);
        cmd_arg(&c[2 * i + 1], "ALPHA");
    }
    /* Round trip 2: per host its hash and its disk set; 3 (only with disks): disks. */
    int rc = n ? api_pipeline(r, c, (int)(2 * n), rep, &err) : 0;

    json_t *hosts = json_array();
    size_t n_disks = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        n_disks += rep[2 * i + 1]->elements;
    struct cmd *dc = xcalloc(n_disks ? n_disks : 1, sizeof(*dc));
    redisReply **dr = xcalloc(n_disks ? n_disks : 1, sizeof(*dr));
    size_t k = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        for (size_t d = 0; d < rep[2 * i + 1]->elements; d++, k++) {
            cmd_init(&dc[k]);
            cmd_arg(&dc[k], "HGETALL");
            cmd_argf(&dc[k], XM_DISK_FMT, id, names->element[i]->str,
                     rep[2 * i + 1]->element[d]->str);
        }
    if (rc == 0 && n_disks)
        rc = api_pipeline(r, dc, (int)n_disks, dr, &err);
    k = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *ho = json_object();
        for (size_t f = 0; host_public[f]; f++) {
            const char *v = hash_get(rep[2 * i], host_public[f]);
            if (v && *v)
                json_object_set_new(ho, host_public[f], json_string(v));
        }
        numbers(ho, host_numbers);
        for (size_t f = 0; host_json[f]; f++) {
            const char *v = hash_get(rep[2 * i], host_json[f]);
            json_t *j = v && *v ? json_loads(v, 0, NULL) : NULL;
            if (j)
                json_object_set_new(ho, host_json[f], j);
        }
        json_t *disks = json_array();
        for (size_t d = 0; d < rep[2 * i + 1]->elements; d++, k++) {
            json_t *dj = hash_json(dr[k]);
            json_object_set_new(dj, "id", json_string(rep[2 * i + 1]->element[d]->str));
            numbers(dj, disk_numbers);
            json_array_append_new(disks, dj);
        }
        json_object_set_new(ho, "disks", disks);
        json_array_append_new(hosts, ho);
    }
    api_free_replies(rep, (int)(2 * n));
    api_free_replies(dr, (int)n_disks);
    for (size_t i = 0; i < 2 * n; i++)
        cmd_release(&c[i]);
    for (size_t i = 0; i < n_disks; i++)
        cmd_release(&dc[i]);
    free(c);
    free(rep);
    free(dc);
    free(dr);
    api_free_replies(head, 3);
    if (rc < 0) {
        json_decref(out);
        json_decref(hosts);
        json_decref(resources);
        api_reply_unavailable(r, &err);
        return;
    }
    json_object_set_new(out, "hosts", hosts);
    json_object_set_new(out, "resources", resources);
    api_reply_json(r, 200, out);
}

/* ---------------------------------------------------------------- cancel */

void mig_cancel(struct api_req *r)
{
    const char *id = r->params[0];
    redisReply *h = load_mig(r, id);
    if (!h)
        return;
    const char *status = hash_get(h, "status");
    if (status && (strcmp(status, MIG_CANCELLED) == 0 || strcmp(status, MIG_DONE) == 0)) {
        api_reply_error(r, 409, "conflict", NULL, "migration '%s' is already %s", id, status);
        freeReplyObject(h);
        return;
    }
    struct err err = {0};
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_HOSTS_FMT, id);
    redisReply *names = api_cmd(r, &err, 2, (const char *[]){"SMEMBERS", key});
    if (!names) {
        freeReplyObject(h);
        api_reply_unavailable(r, &err);
        return;
    }
    /* Credentials the migration held are free again. */
    struct cmds c = {0};
    cmd_arg(cmds_add(&c), "MULTI");
    struct cmd *m = cmds_add(&c);
    cmd_arg(m, "HSET");
    cmd_argf(m, XM_MIG_FMT, id);
    cmd_arg(m, "status");
    cmd_arg(m, MIG_CANCELLED);
    cmd_arg(m, "updated");
    cmd_argll(m, job_now_us() / 1000);
    const char *cred = hash_get(h, "credential");
    if (cred) {
        struct cmd *u = cmds_add(&c);
        cmd_arg(u, "SREM");
        cmd_argf(u, XM_CRED_USERS_FMT, cred);
        cmd_arg(u, id);
    }
    struct cmds hc = {0};
    for (size_t i = 0; i < names->elements; i++) {
        struct cmd *g = cmds_add(&hc);
        cmd_arg(g, "HGET");
        cmd_argf(g, XM_HOST_FMT, id, names->element[i]->str);
        cmd_arg(g, "credential");
    }
    redisReply **hr = xcalloc((size_t)hc.n + 1, sizeof(*hr));
    int rc = hc.n ? api_pipeline(r, hc.v, hc.n, hr, &err) : 0;
    for (int i = 0; rc == 0 && i < hc.n; i++) {
        if (hr[i]->type != REDIS_REPLY_STRING)
            continue;
        struct cmd *u = cmds_add(&c);
        cmd_arg(u, "SREM");
        cmd_argf(u, XM_CRED_USERS_FMT, hr[i]->str);
        cmd_arg(u, id);
    }
    api_free_replies(hr, hc.n);
    free(hr);
    cmds_release(&hc);
    add_event(&c, "migration.cancelled", id, NULL, "no new phase will start");
    cmd_arg(cmds_add(&c), "EXEC");
    if (rc == 0)
        rc = run_tx(r, &c, &err);
    cmds_release(&c);
    freeReplyObject(names);
    freeReplyObject(h);
    if (rc != 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    mig_get(r); /* answer with the migration as it is now, resources listed */
}

/*
 * One transaction, after the caller WATCHed the migration: its status (and more field,
 * value pairs: NULL-terminated, or NULL), the migration-level network job with payload,
 * and an event. run_tx()'s result: 0, 1 when the WATCH aborted it, -1 with err.
 */
static int status_and_network_job(struct api_req *r, const char *id, const char *status,
                                  const char *const *fields, const char *payload, const char *event,
                                  const char *msg, struct err *err)
{
    struct cmds c = {0};
    cmd_arg(cmds_add(&c), "MULTI");
    struct cmd *m = cmds_add(&c);
    cmd_arg(m, "HSET");
    cmd_argf(m, XM_MIG_FMT, id);
    cmd_arg(m, "status");
    cmd_arg(m, status);
    for (size_t i = 0; fields && fields[i]; i++)
        cmd_arg(m, fields[i]);
    cmd_arg(m, "updated");
    cmd_argll(m, job_now_us() / 1000);
    struct job_spec spec = {
        .migration = id, .host = XM_HOST_NONE, .phase = "network", .payload = payload};
    job_spec_xadd(cmds_add(&c), &spec, job_now_us());
    add_event(&c, event, id, NULL, msg);
    cmd_arg(cmds_add(&c), "EXEC");
    int rc = run_tx(r, &c, err);
    cmds_release(&c);
    return rc;
}

/*
 * POST /v1/migrations/{id}/rollback: delete every cloud resource the migration created
 * (VMs, images, disks, the network; xm-network does it, found by tag). Only once nothing
 * runs any more: done, partially_failed, failed or cancelled (or a rollback to run again).
 */
void mig_rollback(struct api_req *r)
{
    const char *id = r->params[0];
    static const char *const ended[] = {MIG_DONE,      "partially_failed", "failed",
                                        MIG_CANCELLED, "rolling_back",     NULL};
    struct err err = {0};
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_FMT, id);
    redisReply *w = api_cmd(r, &err, 2, (const char *[]){"WATCH", key});
    if (!w) {
        api_reply_unavailable(r, &err);
        return;
    }
    freeReplyObject(w);
    redisReply *h = load_mig(r, id);
    if (!h) { /* answered 404 or 503 */
        api_unwatch(r);
        return;
    }
    const char *status = hash_get(h, "status");
    int ok = 0;
    for (size_t i = 0; status && ended[i]; i++)
        ok |= strcmp(status, ended[i]) == 0;
    if (!ok) {
        api_reply_error(r, 409, "conflict", NULL,
                        "migration '%s' is %s: cancel it first (DELETE /v1/migrations/%s), "
                        "then roll it back",
                        id, status ? status : "unknown", id);
        freeReplyObject(h);
        api_unwatch(r);
        return;
    }
    freeReplyObject(h);
    int rc = status_and_network_job(r, id, "rolling_back", NULL, "{\"action\":\"rollback\"}",
                                    "migration.rollback", "rollback queued", &err);
    if (rc < 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    if (rc > 0) {
        api_reply_error(r, 409, "conflict", NULL, "migration '%s' is changing; try again", id);
        return;
    }
    api_reply_json(r, 202, json_pack("{s:s, s:s}", "id", id, "status", "rolling_back"));
}

/* ---------------------------------------------------------------- blueprint */

void mig_blueprint_get(struct api_req *r)
{
    redisReply *h = load_mig(r, r->params[0]);
    if (!h)
        return;
    const char *bp = hash_get(h, "blueprint");
    if (!bp) {
        api_reply_error(r, 404, "not_found", NULL,
                        "migration '%s' has no blueprint yet (discovery suggests one)",
                        r->params[0]);
    } else {
        api_reply_text(r, 200, "application/json", bp, strlen(bp));
    }
    freeReplyObject(h);
}

static json_t *host_names(struct api_req *r, const char *id, struct err *err)
{
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_HOSTS_FMT, id);
    redisReply *names = api_cmd(r, err, 2, (const char *[]){"SMEMBERS", key});
    if (!names)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < names->elements; i++)
        json_array_append_new(a, json_string(names->element[i]->str));
    freeReplyObject(names);
    return a;
}

void mig_blueprint_put(struct api_req *r)
{
    const char *id = r->params[0];
    redisReply *h = load_mig(r, id);
    if (!h)
        return;
    const char *status = hash_get(h, "status");
    int open =
        status && (strcmp(status, MIG_DISCOVERING) == 0 || strcmp(status, MIG_AWAITING) == 0);
    if (!open) {
        api_reply_error(r, 409, "conflict", NULL,
                        "the blueprint can only change before approval (migration is %s)",
                        status ? status : "unknown");
        freeReplyObject(h); /* status points into it */
        return;
    }
    char cloud[16];
    snprintf(cloud, sizeof(cloud), "%s", hash_get(h, "cloud") ? hash_get(h, "cloud") : "");
    freeReplyObject(h);
    struct err err = {0};
    json_t *names = host_names(r, id, &err);
    if (!names) {
        api_reply_unavailable(r, &err);
        return;
    }
    char path[256];
    if (blueprint_check(r->body, names, path, &err) < 0 ||
        blueprint_check_types(r->body, cloud, path, &err) < 0) {
        json_decref(names);
        api_reply_error(r, 400, "invalid_request", path, "%s%s%s", path, path[0] ? ": " : "",
                        err.msg);
        return;
    }
    json_decref(names);
    char *text = json_dumps(r->body, JSON_COMPACT);
    struct cmds c = {0};
    cmd_arg(cmds_add(&c), "MULTI");
    struct cmd *m = cmds_add(&c);
    cmd_arg(m, "HSET");
    cmd_argf(m, XM_MIG_FMT, id);
    cmd_arg(m, "blueprint");
    cmd_arg(m, text);
    cmd_arg(m, "blueprint_source"); /* a later discovery keeps it */
    cmd_arg(m, "operator");
    cmd_arg(m, "updated");
    cmd_argll(m, job_now_us() / 1000);
    add_event(&c, "blueprint.updated", id, NULL, NULL);
    cmd_arg(cmds_add(&c), "EXEC");
    int rc = run_tx(r, &c, &err);
    cmds_release(&c);
    if (rc != 0) {
        free(text);
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_text(r, 200, "application/json", text, strlen(text));
    free(text);
}

/* 1 when the comma-separated override list names the finding or its rule. */
static int overridden(const char *list, const char *name, const char *rule)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        if ((n == strlen(name) && strncmp(p, name, n) == 0) ||
            (n == strlen(rule) && strncmp(p, rule, n) == 0))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

/*
 * The pre-flight blockers of the migration's hosts that overrides (the ?override= list:
 * finding names like "web1/os_supported", or rule ids like "os_supported" for every
 * host) does not name, their names comma-separated in *standing (new; "" when none
 * stand; what each says is in GET /v1/migrations/{id}).
 * 0; or -1 after replying itself: 400 for an override that names no blocker (a typo
 * must not pass for an override), 503 when Redis failed.
 */
static int standing_blockers(struct api_req *r, const char *id, const char *overrides,
                             char **standing)
{
    struct err err = {0};
    json_t *names = host_names(r, id, &err);
    if (!names) {
        api_reply_unavailable(r, &err);
        return -1;
    }
    size_t n = json_array_size(names);
    struct cmd *c = xcalloc(n + 1, sizeof(*c));
    redisReply **rep = xcalloc(n + 1, sizeof(*rep));
    for (size_t i = 0; i < n; i++) {
        cmd_init(&c[i]);
        cmd_arg(&c[i], "HGET");
        cmd_argf(&c[i], XM_HOST_FMT, id, json_string_value(json_array_get(names, i)));
        cmd_arg(&c[i], XM_H_FINDINGS);
    }
    int rc = n ? api_pipeline(r, c, (int)n, rep, &err) : 0;
    json_t *blockers = json_array();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *f = rep[i]->type == REDIS_REPLY_STRING ? json_loads(rep[i]->str, 0, NULL) : NULL;
        size_t k;
        json_t *one;
        json_array_foreach(f, k, one)
        {
            const char *sev = json_string_value(json_object_get(one, "severity"));
            if (sev && strcmp(sev, "blocker") == 0)
                json_array_append(blockers, one);
        }
        json_decref(f);
    }
    api_free_replies(rep, (int)n);
    for (size_t i = 0; i < n; i++)
        cmd_release(&c[i]);
    free(c);
    free(rep);
    json_decref(names);
    if (rc < 0) {
        json_decref(blockers);
        api_reply_unavailable(r, &err);
        return -1;
    }
    size_t k;
    json_t *b;
    /* Every override must name a blocker that exists. */
    for (const char *p = overrides ? overrides : ""; *p;) {
        size_t len = strcspn(p, ",");
        int used = 0;
        json_array_foreach(blockers, k, b)
        {
            char one[256];
            snprintf(one, sizeof(one), "%.*s", (int)len, p);
            used |= overridden(one, json_string_value(json_object_get(b, "name")),
                               json_string_value(json_object_get(b, "rule")));
        }
        if (!used) {
            api_reply_error(r, 400, "invalid_request", NULL,
                            "override '%.*s' names no blocker of migration '%s'", (int)len, p, id);
            json_decref(blockers);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    size_t cap = 256, used = 0, count = 0, hidden = 0;
    char *out = xmalloc(cap);
    out[0] = '\0';
    json_array_foreach(blockers, k, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        if (!name || overridden(overrides, name, json_string_value(json_object_get(b, "rule"))))
            continue;
        size_t need = strlen(name) + 4;
        if (used + need > 400) { /* the error message has room for about that much */
            hidden++;
            continue;
        }
        if (used + need >= cap) {
            cap = (used + need) * 2;
            out = xrealloc(out, cap);
        }
        used += (size_t)snprintf(out + used, cap - used, "%s%s", count ? ", " : "", name);
        count++;
    }
    if (hidden) {
        out = xrealloc(out, used + 40);
        snprintf(out + used, 40, " and %zu more", hidden);
    }
    json_decref(blockers);
    *standing = out;
    return 0;
}

/* Approve the migration unless a blocker stands that override does not name. */
static void approve(struct api_req *r, const char *override)
{
    const char *id = r->params[0];
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_FMT, id);
    struct err err = {0};
    for (int tries = 0; tries < 10; tries++) {
        /* WATCH the migration so two approvals cannot both start the network phase. */
        redisReply *w = api_cmd(r, &err, 2, (const char *[]){"WATCH", key});
        if (!w) {
            api_reply_unavailable(r, &err);
            return;
        }
        freeReplyObject(w);
        redisReply *h = load_mig(r, id);
        if (!h)
            return;
        const char *status = hash_get(h, "status");
        const char *bp = hash_get(h, "blueprint");
        int ok = status && strcmp(status, MIG_AWAITING) == 0 && bp;
        if (!ok) {
            if (!status || strcmp(status, MIG_AWAITING) != 0)
                api_reply_error(r, 409, "conflict", NULL,
                                "migration '%s' is %s; only a migration awaiting approval can "
                                "be approved",
                                id, status ? status : "unknown");
            else
                api_reply_error(r, 409, "conflict", NULL,
                                "migration '%s' has no blueprint to approve", id);
            freeReplyObject(h);
            api_unwatch(r);
            return;
        }
        freeReplyObject(h);
        char *standing = NULL;
        if (standing_blockers(r, id, override, &standing) < 0 || standing[0]) {
            if (standing)
                api_reply_error(r, 409, "conflict", NULL,
                                "blockers stand: %s (GET /v1/migrations/%s shows what each "
                                "says); fix them and run discovery again, or approve with "
                                "?override=<name>,... to go ahead anyway",
                                standing, id);
            free(standing);
            api_unwatch(r);
            return;
        }
        free(standing);
        const char *fields[] = {"approved_by", r->token_name, "overrides", override ? override : "",
                                NULL};
        int rc = status_and_network_job(r, id, MIG_APPROVED, fields, "{}", "migration.approved",
                                        "network queued", &err);
        if (rc < 0) {
            api_reply_unavailable(r, &err);
            return;
        }
        if (rc == 0) {
            api_reply_json(r, 202, json_pack("{s:s, s:s}", "id", id, "status", MIG_APPROVED));
            return;
        }
    }
    api_reply_error(r, 409, "conflict", NULL, "migration '%s' is changing; try again", id);
}

void mig_approve(struct api_req *r)
{
    char *override = api_query(r, "override");
    if (override &&
        (!*override || strlen(override) > 4000 ||
         override[strspn(override, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                   "_-/,")] != '\0')) {
        api_reply_error(r, 400, "invalid_request", NULL,
                        "override must be a comma-separated list of finding names "
                        "(host/rule) or rule names");
    } else {
        approve(r, override);
    }
    free(override);
}

/* ---------------------------------------------------------------- control */

/* HGETALL of the host, or NULL after replying 404/503. */
static redisReply *load_host(struct api_req *r, const char *id, const char *host)
{
    struct err err = {0};
    char key[300];
    snprintf(key, sizeof(key), XM_HOST_FMT, id, host);
    redisReply *h = api_cmd(r, &err, 2, (const char *[]){"HGETALL", key});
    if (!h) {
        api_reply_unavailable(r, &err);
        return NULL;
    }
    if (h->elements == 0) {
        freeReplyObject(h);
        api_reply_error(r, 404, "not_found", NULL, "migration '%s' has no host '%s'", id, host);
        return NULL;
    }
    return h;
}

/* Refuse to touch hosts of a migration that is over. */
static int mig_active(struct api_req *r, const char *id)
{
    redisReply *m = load_mig(r, id);
    if (!m)
        return 0;
    const char *status = hash_get(m, "status");
    int active = status && strcmp(status, MIG_CANCELLED) != 0;
    if (!active)
        api_reply_error(r, 409, "conflict", NULL, "migration '%s' is %s", id,
                        status ? status : "unknown");
    freeReplyObject(m);
    return active;
}

/* HSET the host queued in phase, its last error cleared. */
static void add_host_queued(struct cmds *c, const char *id, const char *host, const char *phase)
{
    struct cmd *hs = cmds_add(c);
    cmd_arg(hs, "HSET");
    cmd_argf(hs, XM_HOST_FMT, id, host);
    cmd_arg(hs, XM_H_PHASE);
    cmd_arg(hs, phase);
    cmd_arg(hs, XM_H_STATUS);
    cmd_arg(hs, "queued");
    cmd_arg(hs, XM_H_ERROR);
    cmd_arg(hs, "");
    cmd_arg(hs, XM_H_UPDATED);
    cmd_argll(hs, job_now_us() / 1000);
}

/* Enqueue phase for the host as a new job (attempt 1) and mark it queued. */
static void requeue(struct api_req *r, const char *id, const char *host, const char *phase,
                    const char *disk, const char *group, const char *member, const char *old_job,
                    const char *payload, const char *event)
{
    struct err err = {0};
    char job_id[33];
    job_new_id(job_id);
    struct cmds c = {0};
    cmd_arg(cmds_add(&c), "MULTI");
    if (group && group[0] && old_job && !(member && member[0])) {
        /* The new job takes the failed one's place in its fan-in group. */
        struct cmd *s = cmds_add(&c);
        cmd_arg(s, "SREM");
        cmd_argf(s, XM_FANIN_FMT, group);
        cmd_arg(s, old_job);
        s = cmds_add(&c);
        cmd_arg(s, "SADD");
        cmd_argf(s, XM_FANIN_FMT, group);
        cmd_arg(s, job_id);
    }
    struct job_spec spec = {.id = job_id,
                            .migration = id,
                            .host = host,
                            .disk = disk,
                            .phase = phase,
                            .group = group,
                            .member = member,
                            .payload = payload};
    job_spec_xadd(cmds_add(&c), &spec, job_now_us());
    add_host_queued(&c, id, host, phase);
    char msg[120];
    snprintf(msg, sizeof(msg), "%s queued by %s", phase, r->token_name);
    add_event(&c, event, id, host, msg);
    cmd_arg(cmds_add(&c), "EXEC");
    int rc = run_tx(r, &c, &err);
    cmds_release(&c);
    if (rc != 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_json(r, 202,
                   json_pack("{s:s, s:s, s:s, s:s, s:s}", "migration", id, "host", host, "phase",
                             phase, "status", "queued", "job", job_id));
}

void mig_host_retry(struct api_req *r)
{
    const char *id = r->params[0], *host = r->params[1];
    if (!mig_active(r, id))
        return;
    redisReply *h = load_host(r, id, host);
    if (!h)
        return;
    const char *status = hash_get(h, XM_H_STATUS);
    const char *failed = hash_get(h, XM_H_FAILED_JOB);
    if (!status || strcmp(status, "failed") != 0 || !failed) {
        api_reply_error(r, 409, "conflict", NULL, "host '%s' has not failed (it is %s)", host,
                        status ? status : "unknown");
        freeReplyObject(h);
        return;
    }
    /* The failed job as the runtime recorded it: retry the very same work. */
    json_t *job = json_loads(failed, 0, NULL);
    const char *phase = NULL, *disk = "", *group = "", *member = "", *payload = "{}", *old = NULL;
    if (!job ||
        json_unpack(job, "{s:s, s?s, s?s, s?s, s?s, s?s}", XM_F_PHASE, &phase, XM_F_DISK, &disk,
                    XM_F_GROUP, &group, XM_F_MEMBER, &member, XM_F_PAYLOAD, &payload, XM_F_JOB,
                    &old) < 0 ||
        !job_valid_phase(phase)) {
        api_reply_error(r, 500, "internal", NULL, "the failed job of host '%s' is unreadable",
                        host);
    } else {
        /* A continuation keeps its member id: its group counts it by that. */
        requeue(r, id, host, phase, disk, group, member, old, payload, "host.retry");
    }
    json_decref(job);
    freeReplyObject(h);
}

/* The hosts a cutover names (?hosts=a,b, each once), else every host of the migration,
 * appended to names. -1 after replying (404 for an unknown host, 400, 503). */
static int cutover_names(struct api_req *r, const char *id, const char *hosts_q, json_t *names)
{
    struct err err = {0};
    char skey[200];
    snprintf(skey, sizeof(skey), XM_MIG_HOSTS_FMT, id);
    redisReply *set = api_cmd(r, &err, 3, (const char *[]){"SORT", skey, "ALPHA"});
    if (!set) {
        api_reply_unavailable(r, &err);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; !hosts_q && i < set->elements; i++)
        json_array_append_new(names, json_string(set->element[i]->str));
    for (const char *p = hosts_q; p && *p && rc == 0;) {
        size_t n = strcspn(p, ",");
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(n < 63 ? n : 63), p);
        int known = 0, twice = 0; /* a name given twice still gets one final pass */
        for (size_t i = 0; i < set->elements; i++)
            known |= strcmp(set->element[i]->str, name) == 0;
        for (size_t i = 0; i < json_array_size(names); i++)
            twice |= strcmp(json_string_value(json_array_get(names, i)), name) == 0;
        if (!known || n > 63) {
            api_reply_error(r, 404, "not_found", NULL, "migration '%s' has no host '%.*s'", id,
                            (int)(n < 100 ? n : 100), p);
            rc = -1;
        } else if (!twice) {
            json_array_append_new(names, json_string(name));
        }
        p += n + (p[n] == ',');
    }
    if (rc == 0 && !json_array_size(names)) {
        api_reply_error(r, 400, "invalid_request", NULL, "hosts names no host");
        rc = -1;
    }
    freeReplyObject(set);
    return rc;
}

/*
 * POST /v1/migrations/{id}/cutover[?hosts=a,b][&freeze=true]: the operator has stopped
 * the applications; each host awaiting cutover (all, or those named) gets its final
 * clone pass, which sends only what changed since the first and then hands off to
 * convert. freeze=true also freezes the filesystems while that pass reads them. WATCHed,
 * so two calls at once queue one final pass per host.
 */
void mig_cutover(struct api_req *r)
{
    const char *id = r->params[0];
    char *hosts_q = api_query(r, "hosts"), *freeze_q = api_query(r, "freeze");
    json_t *names = json_array(), *queued = NULL;
    redisReply *m = NULL;
    struct err err = {0};
    if (freeze_q && strcmp(freeze_q, "true") != 0 && strcmp(freeze_q, "false") != 0) {
        api_reply_error(r, 400, "invalid_request", NULL, "freeze must be true or false");
        goto out;
    }
    char mkey[200];
    snprintf(mkey, sizeof(mkey), XM_MIG_FMT, id);
    if (cutover_names(r, id, hosts_q, names) < 0)
        goto out;
    const char *payload = freeze_q && strcmp(freeze_q, "true") == 0
                              ? "{\"final\":true,\"freeze\":true}"
                              : "{\"final\":true}";
    for (int tries = 0; tries < 10; tries++) {
        size_t nh = json_array_size(names);
        struct cmd w;
        cmd_init(&w);
        cmd_arg(&w, "WATCH");
        cmd_arg(&w, mkey);
        for (size_t i = 0; i < nh; i++)
            cmd_argf(&w, XM_HOST_FMT, id, json_string_value(json_array_get(names, i)));
        redisReply *wr = NULL;
        int prc = api_pipeline(r, &w, 1, &wr, &err);
        cmd_release(&w);
        api_free_replies(&wr, 1);
        if (prc < 0) {
            api_reply_unavailable(r, &err);
            goto out;
        }
        if (m)
            freeReplyObject(m);
        if (!(m = load_mig(r, id))) { /* answered 404 or 503 */
            api_unwatch(r);
            goto out;
        }
        const char *status = hash_get(m, "status"), *cutover = hash_get(m, "cutover");
        if (!cutover || strcmp(cutover, "manual") != 0 || !status ||
            strcmp(status, MIG_MIGRATING) != 0) {
            api_reply_error(r, 409, "conflict", NULL,
                            cutover && strcmp(cutover, "manual") == 0
                                ? "migration '%s' is %s; cutover needs it migrating"
                                : "migration '%s' does not wait for a cutover (it was created "
                                  "with cutover \"auto\"; it is %s)",
                            id, status ? status : "unknown");
            api_unwatch(r);
            goto out;
        }
        /* Each named host must be awaiting cutover; with none named, those that are. */
        struct cmds c = {0};
        cmd_arg(cmds_add(&c), "MULTI");
        json_decref(queued);
        queued = json_array();
        /* Every host's status and phase in one round trip. */
        struct cmd *get = xcalloc(nh, sizeof(*get));
        redisReply **hs = xcalloc(nh, sizeof(*hs));
        for (size_t i = 0; i < nh; i++) {
            cmd_init(&get[i]);
            cmd_arg(&get[i], "HMGET");
            cmd_argf(&get[i], XM_HOST_FMT, id, json_string_value(json_array_get(names, i)));
            cmd_arg(&get[i], "status");
            cmd_arg(&get[i], "phase");
        }
        int grc = api_pipeline(r, get, (int)nh, hs, &err);
        for (size_t i = 0; i < nh; i++)
            cmd_release(&get[i]);
        free(get);
        if (grc < 0) {
            api_free_replies(hs, (int)nh);
            free(hs);
            cmds_release(&c);
            api_reply_unavailable(r, &err);
            goto out;
        }
        char *busy = xstrdup("");
        for (size_t i = 0; i < nh; i++) {
            const char *host = json_string_value(json_array_get(names, i));
            const redisReply *h = hs[i];
            const char *st = h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : "?";
            const char *ph = h->element[1]->type == REDIS_REPLY_STRING ? h->element[1]->str : "?";
            if (strcmp(st, "awaiting_cutover") != 0) {
                char *more =
                    xasprintf("%s%s%s is %s in %s", busy, busy[0] ? ", " : "", host, st, ph);
                free(busy);
                busy = more;
                continue;
            }
            char job_id[33];
            job_new_id(job_id);
            struct job_spec spec = {
                .id = job_id, .migration = id, .host = host, .phase = "clone", .payload = payload};
            job_spec_xadd(cmds_add(&c), &spec, job_now_us());
            add_host_queued(&c, id, host, "clone");
            char msg[120];
            snprintf(msg, sizeof(msg), "final clone pass queued by %s", r->token_name);
            add_event(&c, "host.cutover", id, host, msg);
            json_array_append_new(queued, json_pack("{s:s, s:s}", "host", host, "job", job_id));
        }
        api_free_replies(hs, (int)nh);
        free(hs);
        if (!json_array_size(queued) || (hosts_q && busy[0])) {
            api_reply_error(r, 409, "conflict", NULL,
                            "only hosts awaiting_cutover can be cut over: %s",
                            busy[0] ? busy : "no host named");
            free(busy);
            cmds_release(&c);
            api_unwatch(r);
            goto out;
        }
        free(busy);
        cmd_arg(cmds_add(&c), "EXEC");
        int rc = run_tx(r, &c, &err);
        cmds_release(&c);
        if (rc < 0) {
            api_reply_unavailable(r, &err);
            goto out;
        }
        if (rc == 0) {
            api_reply_json(r, 202,
                           json_pack("{s:s, s:s, s:O}", "migration", id, "status", "cutover",
                                     "hosts", queued));
            goto out;
        }
    }
    api_reply_error(r, 409, "conflict", NULL, "migration '%s' is changing; try again", id);
out:
    if (m)
        freeReplyObject(m);
    json_decref(queued);
    json_decref(names);
    free(hosts_q);
    free(freeze_q);
}

/* Phases that are safe to run again for one host: discovery re-reads facts, prep is
 * idempotent (a second run changes nothing), clone sends only what changed. */
static const char *const rerunnable[] = {"discovery", "prep", "clone", NULL};

void mig_host_phase(struct api_req *r)
{
    const char *id = r->params[0], *host = r->params[1], *phase = r->params[2];
    int ok = 0;
    for (size_t i = 0; rerunnable[i]; i++)
        ok |= strcmp(phase, rerunnable[i]) == 0;
    if (!ok) {
        api_reply_error(r, 400, "invalid_request", NULL,
                        "phase '%s' cannot be run again by hand; use discovery, prep or clone",
                        phase);
        return;
    }
    if (!mig_active(r, id))
        return;
    redisReply *h = load_host(r, id, host);
    if (!h)
        return;
    const char *status = hash_get(h, XM_H_STATUS);
    int busy = status && (strcmp(status, "queued") == 0 || strcmp(status, "running") == 0 ||
                          strcmp(status, "retrying") == 0);
    if (busy) {
        api_reply_error(r, 409, "conflict", NULL,
                        "host '%s' is %s in phase %s; wait until it settles", host, status,
                        hash_get(h, XM_H_PHASE) ? hash_get(h, XM_H_PHASE) : "?");
        freeReplyObject(h);
        return;
    }
    freeReplyObject(h);
    char *dry = api_query(r, "dry_run");
    int dry_run = dry && strcmp(dry, "true") == 0;
    free(dry);
    requeue(r, id, host, phase, NULL, NULL, NULL, NULL, dry_run ? "{\"dry_run\":true}" : "{}",
            "host.rerun");
}

/* The last prep run of a host as xm-prep recorded it: what changed (or, after a dry
 * run, would change, with the diffs) and its findings. */
void mig_host_prep(struct api_req *r)
{
    const char *id = r->params[0], *host = r->params[1];
    redisReply *h = load_host(r, id, host);
    if (!h)
        return;
    freeReplyObject(h);
    struct err err = {0};
    char *key = xasprintf(XM_PREP_FMT, id, host);
    redisReply *p = api_cmd(r, &err, 2, (const char *[]){"HGETALL", key});
    free(key);
    if (!p) {
        api_reply_unavailable(r, &err);
        return;
    }
    if (p->elements == 0) {
        freeReplyObject(p);
        api_reply_error(r, 404, "not_found", NULL, "host '%s' has no finished prep run yet", host);
        return;
    }
    json_t *out = hash_json(p);
    freeReplyObject(p);
    static const char *const finished[] = {"finished", NULL};
    numbers(out, finished);
    static const char *const lists[] = {"changed", "findings", "diffs"};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        const char *text = json_string_value(json_object_get(out, lists[i]));
        json_t *v = text ? json_loads(text, 0, NULL) : NULL;
        json_object_set_new(out, lists[i], json_is_array(v) ? json_incref(v) : json_array());
        json_decref(v);
    }
    const char *dry = json_string_value(json_object_get(out, "dry_run"));
    json_object_set_new(out, "dry_run", json_boolean(dry && strcmp(dry, "true") == 0));
    json_object_set_new(out, "migration", json_string(id));
    json_object_set_new(out, "host", json_string(host));
    api_reply_json(r, 200, out);
}

/* ---------------------------------------------------------------- discovery callback */

void mig_discovery_callback(struct api_req *r)
{
    const char *id = r->params[0];
    const char *host = json_string_value(json_object_get(r->body, "host"));
    struct err err = {0};
    char hosts_key[200];
    snprintf(hosts_key, sizeof(hosts_key), XM_MIG_HOSTS_FMT, id);
    redisReply *m = api_cmd(r, &err, 3, (const char *[]){"SISMEMBER", hosts_key, host});
    if (!m) {
        api_reply_unavailable(r, &err);
        return;
    }
    long long member = m->integer;
    freeReplyObject(m);
    if (!member) {
        api_reply_error(r, 404, "not_found", "/host", "migration '%s' has no host '%s'", id, host);
        return;
    }
    char *facts = json_dumps(json_object_get(r->body, "facts"), JSON_COMPACT);
    struct cmds c = {0};
    cmd_arg(cmds_add(&c), "MULTI");
    struct cmd *s = cmds_add(&c);
    cmd_arg(s, "SET");
    cmd_argf(s, XM_FACTS_FMT, id, host);
    cmd_arg(s, facts);
    struct cmd *hs = cmds_add(&c);
    cmd_arg(hs, "HSET");
    cmd_argf(hs, XM_HOST_FMT, id, host);
    cmd_arg(hs, "discovered");
    cmd_argll(hs, job_now_us() / 1000);
    add_event(&c, "discovery.facts", id, host, NULL);
    cmd_arg(cmds_add(&c), "EXEC");
    int rc = run_tx(r, &c, &err);
    cmds_release(&c);
    free(facts);
    if (rc != 0) {
        api_reply_unavailable(r, &err);
        return;
    }
    api_reply_json(r, 202,
                   json_pack("{s:s, s:s, s:b}", "migration", id, "host", host, "accepted", 1));
}
