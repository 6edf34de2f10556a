/*
 * The migration commands that are one or a few API calls each: migrate create,
 * approve, status, retry, cancel, rollback. (watch.c follows a migration.)
 *
 * A migration file may name credentials by name instead of id: xmctl looks the names
 * up in GET /v1/credentials before it sends the file, so the API only ever sees ids.
 */
#include <getopt.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"
#include "xmalloc.h"
#include "xmctl.h"

static int is_uuid(const char *s)
{
    regex_t re;
    XM_ASSERT(regcomp(&re, "^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
                      REG_EXTENDED | REG_NOSUB) == 0);
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/*
 * Replace the credential named at key of obj by its id when it is a name. *list is the
 * credential list, fetched on first need. Returns 0, an exit code, or XMCTL_USAGE with
 * a message naming the JSON pointer.
 */
static int resolve_credential(struct xmctl *x, json_t *obj, const char *pointer, json_t **list)
{
    const char *v = json_string_value(json_object_get(obj, "credential"));
    if (!v || is_uuid(v))
        return XMCTL_OK; /* the API judges ids and bad types itself */
    if (!*list) {
        int rc = xmctl_request(x, "GET", "/v1/credentials", NULL, 0, list);
        if (rc != XMCTL_OK)
            return rc;
    }
    const char *found = NULL;
    int n = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(*list, "items"), i, c)
    {
        if (strcmp(render_str(c, "name", ""), v) == 0) {
            found = render_str(c, "id", NULL);
            n++;
        }
    }
    if (n != 1 || !found) {
        fprintf(stderr, "xmctl: %s: %s credential is named '%s'\n", pointer,
                n ? "more than one" : "no", v);
        return XMCTL_USAGE;
    }
    json_object_set_new(obj, "credential", json_string(found));
    return XMCTL_OK;
}

static int migrate_create(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {NULL, 0, NULL, 0}};
    const char *file = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
        if (c != 'f')
            return xmctl_usage("migrate create -f FILE|-   (YAML or JSON)");
        file = optarg;
    }
    if (!file || optind != argc)
        return xmctl_usage("migrate create -f FILE|-   (YAML or JSON)");
    struct err err = {0};
    json_t *doc = xmctl_load_document(file, &err), *creds = NULL, *out = NULL;
    if (!doc) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        return XMCTL_USAGE;
    }
    int rc = resolve_credential(x, doc, "/credential", &creds);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(doc, "hosts"), i, h)
    {
        char pointer[64];
        snprintf(pointer, sizeof(pointer), "/hosts/%zu/credential", i);
        if (rc == XMCTL_OK && json_is_object(h))
            rc = resolve_credential(x, h, pointer, &creds);
    }
    if (rc == XMCTL_OK)
        rc = xmctl_request(x, "POST", "/v1/migrations", doc, 1, &out);
    if (rc == XMCTL_OK && !x->json) {
        printf("migration %s created: \"%s\", %s %s, %s\n", render_str(out, "id", "?"),
               render_str(out, "name", ""), render_str(out, "cloud", "?"),
               render_str(out, "region", "?"), render_str(out, "status", "?"));
        printf("hosts:");
        const json_t *name;
        json_array_foreach(json_object_get(out, "hosts"), i, name)
            printf(" %s", json_string_value(name));
        printf("\nfollow it with: xmctl watch %s\n", render_str(out, "id", "?"));
    }
    json_decref(out);
    json_decref(creds);
    json_decref(doc);
    return rc;
}

int cmd_migrate(struct xmctl *x, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "create") == 0)
        return migrate_create(x, argc - 1, argv + 1);
    return xmctl_usage("migrate create -f FILE|-");
}

/*
 * A command on one migration: argv must be "CMD MIGRATION". Sends method to
 * /v1/migrations/<id><suffix> (no body); on success *out is the reply (new, may be
 * NULL). Returns the exit code.
 */
static int on_migration(struct xmctl *x, int argc, char **argv, const char *usage,
                        const char *method, const char *suffix, json_t **out)
{
    *out = NULL;
    if (argc != 2)
        return xmctl_usage("%s", usage);
    if (!xmctl_valid_segment("migration id", argv[1]))
        return XMCTL_USAGE;
    char *path = xasprintf("/v1/migrations/%s%s", argv[1], suffix);
    int rc = xmctl_request(x, method, path, NULL, 1, out);
    free(path);
    return rc;
}

#define APPROVE_USAGE "approve MIGRATION [--override FINDING]...   (FINDING: host/rule or rule)"

/* A finding name as the API takes it in ?override= (api/migrations.c). */
static int valid_finding(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 200 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/") == n;
}

/*
 * POST /v1/migrations/{id}/approve[?override=a,b]: each --override names a blocker
 * (host/rule, or a rule for every host) the operator accepts; the API refuses names
 * that match no blocker.
 */
int cmd_approve(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"override", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    char *overrides = xstrdup(""), *path = NULL;
    json_t *out = NULL;
    int c, rc = XMCTL_USAGE;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (c != 'o' || !valid_finding(optarg) || strlen(overrides) > 3800) {
            xmctl_usage(APPROVE_USAGE);
            goto out;
        }
        char *more = xasprintf("%s%s%s", overrides, *overrides ? "," : "", optarg);
        free(overrides);
        overrides = more;
    }
    if (optind != argc - 1) {
        xmctl_usage(APPROVE_USAGE);
        goto out;
    }
    const char *id = argv[optind];
    if (!xmctl_valid_segment("migration id", id))
        goto out;
    path =
        xasprintf("/v1/migrations/%s/approve%s%s", id, *overrides ? "?override=" : "", overrides);
    rc = xmctl_request(x, "POST", path, NULL, 1, &out);
    if (rc == XMCTL_OK && !x->json)
        printf("migration %s %s%s%s; the network phase is queued\n", id,
               render_str(out, "status", "approved"), *overrides ? ", overriding " : "", overrides);
out:
    json_decref(out);
    free(path);
    free(overrides);
    return rc;
}

#define CUTOVER_USAGE                                                                              \
    "cutover MIGRATION [HOST]... [--freeze]   (every host awaiting cutover by default)"

/*
 * POST /v1/migrations/{id}/cutover[?hosts=a,b][&freeze=true]: once the applications are
 * stopped, the final copy of the hosts awaiting cutover (then convert and import).
 */
int cmd_cutover(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"freeze", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    int c, freeze = 0, rc = XMCTL_USAGE;
    while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (c != 'f')
            return xmctl_usage(CUTOVER_USAGE);
        freeze = 1;
    }
    if (optind >= argc)
        return xmctl_usage(CUTOVER_USAGE);
    const char *id = argv[optind];
    if (!xmctl_valid_segment("migration id", id))
        return XMCTL_USAGE;
    char *hosts = xstrdup(""), *path = NULL;
    json_t *out = NULL;
    for (int i = optind + 1; i < argc; i++) {
        if (!xmctl_valid_segment("host name", argv[i]) || strlen(hosts) > 3800)
            goto out;
        char *more = xasprintf("%s%s%s", hosts, *hosts ? "," : "", argv[i]);
        free(hosts);
        hosts = more;
    }
    path = xasprintf("/v1/migrations/%s/cutover%s%s%s", id, *hosts ? "?hosts=" : "", hosts,
                     freeze ? (*hosts ? "&freeze=true" : "?freeze=true") : "");
    rc = xmctl_request(x, "POST", path, NULL, 1, &out);
    if (rc == XMCTL_OK && !x->json) {
        size_t i;
        const json_t *h;
        json_array_foreach(json_object_get(out, "hosts"), i, h)
            printf("host %s: final copy queued as job %s\n", render_str(h, "host", "?"),
                   render_str(h, "job", "?"));
    }
out:
    json_decref(out);
    free(path);
    free(hosts);
    return rc;
}

static int status_list(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
                                         {"offset", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *limit = "50", *offset = "0";
    int c;
    while ((c = getopt_long(argc, argv, "l:o:", opts, NULL)) != -1) {
        if (c == 'l')
            limit = optarg;
        else if (c == 'o')
            offset = optarg;
        else
            return xmctl_usage("status [MIGRATION] [--limit N] [--offset N]");
    }
    if (strspn(limit, "0123456789") != strlen(limit) ||
        strspn(offset, "0123456789") != strlen(offset) || !*limit || !*offset ||
        strlen(limit) > 9 || strlen(offset) > 12)
        return xmctl_usage("status [--limit N] [--offset N]   (whole numbers)");
    char *path = xasprintf("/v1/migrations?limit=%s&offset=%s", limit, offset);
    json_t *out = NULL;
    int rc = xmctl_request(x, "GET", path, NULL, 1, &out);
    if (rc == XMCTL_OK && !x->json) {
        printf("%-36s  %-24s %-6s %-16s %-18s %5s  %s\n", "ID", "NAME", "CLOUD", "REGION", "STATUS",
               "HOSTS", "CREATED");
        size_t i;
        const json_t *m;
        json_array_foreach(json_object_get(out, "items"), i, m)
        {
            char t[32];
            printf("%-36s  %-24s %-6s %-16s %-18s %5lld  %s\n", render_str(m, "id", "?"),
                   render_str(m, "name", ""), render_str(m, "cloud", "?"),
                   render_str(m, "region", "?"), render_str(m, "status", "?"),
                   render_int(m, "hosts_total", 0),
                   render_time(t, sizeof(t), render_int(m, "created", 0)));
        }
        long long next = render_int(out, "next_offset", -1);
        if (next >= 0)
            printf("(%lld in all; the next page: xmctl status --offset %lld)\n",
                   render_int(out, "total", 0), next);
    }
    json_decref(out);
    free(path);
    return rc;
}

int cmd_status(struct xmctl *x, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return status_list(x, argc, argv);
    json_t *out;
    int rc = on_migration(x, argc, argv, "status [MIGRATION]", "GET", "", &out);
    if (rc == XMCTL_OK && !x->json)
        render_migration(stdout, out);
    json_decref(out);
    return rc;
}

/* POST .../hosts/HOST/retry for one host; the exit code. */
static int retry_host(struct xmctl *x, const char *id, const char *host)
{
    char *path = xasprintf("/v1/migrations/%s/hosts/%s/retry", id, host);
    json_t *out = NULL;
    int rc = xmctl_request(x, "POST", path, NULL, 1, &out);
    if (rc == XMCTL_OK && !x->json)
        printf("host %s: %s %s as job %s\n", host, render_str(out, "phase", "?"),
               render_str(out, "status", "queued"), render_str(out, "job", "?"));
    json_decref(out);
    free(path);
    return rc;
}

int cmd_retry(struct xmctl *x, int argc, char **argv)
{
    if (argc < 2)
        return xmctl_usage("retry MIGRATION [HOST]...   (every failed host by default)");
    const char *id = argv[1];
    if (!xmctl_valid_segment("migration id", id))
        return XMCTL_USAGE;
    for (int i = 2; i < argc; i++)
        if (!xmctl_valid_segment("host name", argv[i]))
            return XMCTL_USAGE;
    int rc = XMCTL_OK;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) {
            int r = retry_host(x, id, argv[i]);
            rc = rc ? rc : r; /* keep going; report the first failure */
        }
        return rc;
    }
    char *path = xasprintf("/v1/migrations/%s", id);
    json_t *m = NULL;
    rc = xmctl_request(x, "GET", path, NULL, 0, &m);
    free(path);
    int n = 0;
    size_t i;
    const json_t *h;
    json_array_foreach(json_object_get(m, "hosts"), i, h)
    {
        if (rc != XMCTL_OK || strcmp(render_str(h, "status", ""), "failed") != 0)
            continue;
        int r = retry_host(x, id, render_str(h, "name", "?"));
        rc = rc ? rc : r;
        n++;
    }
    if (rc == XMCTL_OK && n == 0 && !x->json)
        printf("no host of migration %s has failed; nothing to retry\n", id);
    json_decref(m);
    return rc;
}

int cmd_cancel(struct xmctl *x, int argc, char **argv)
{
    json_t *out;
    int rc = on_migration(x, argc, argv, "cancel MIGRATION", "DELETE", "", &out);
    if (rc == XMCTL_OK && !x->json) {
        printf("migration %s is %s: no new phase will start\n", argv[1],
               render_str(out, "status", "cancelled"));
        const json_t *res = json_object_get(out, "resources");
        if (json_array_size(res)) {
            printf("cloud resources it created (xmctl rollback %s deletes them):\n", argv[1]);
            size_t i;
            const json_t *r;
            json_array_foreach(res, i, r) printf("  %s\n", json_string_value(r));
        }
    }
    json_decref(out);
    return rc;
}

int cmd_rollback(struct xmctl *x, int argc, char **argv)
{
    json_t *out;
    int rc = on_migration(x, argc, argv, "rollback MIGRATION", "POST", "/rollback", &out);
    if (rc == XMCTL_OK && !x->json)
        printf("rollback of migration %s: %s\n", argv[1], render_str(out, "status", "accepted"));
    json_decref(out);
    return rc;
}
