#include "gcp/gce.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "secret.h"
#include "xmalloc.h"

#define POLL_CAP_MS 10000

/* ---------------------------------------------------------------- names */

void gce_name(char out[GCE_NAME_MAX + 1], const char *migration, const char *part)
{
    char mh[65], ph[65];
    secret_sha256_hex(migration, strlen(migration), mh);
    char clean[256];
    size_t n = 0;
    for (const char *p = part; *p && n < sizeof(clean) - 1; p++) {
        char c = (char)tolower((unsigned char)*p);
        clean[n++] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '-';
    }
    while (n && clean[n - 1] == '-')
        n--;
    if (!n) /* nothing usable: a name must not end in '-' */
        clean[n++] = 'x';
    clean[n] = '\0';
    /* "xm-" + 10 + "-" = 14 bytes; the part gets the other 49. */
    if (14 + n <= GCE_NAME_MAX) {
        snprintf(out, GCE_NAME_MAX + 1, "xm-%.10s-%.49s", mh, clean);
        return;
    }
    secret_sha256_hex(part, strlen(part), ph);
    size_t keep = GCE_NAME_MAX - 14 - 9;
    while (keep && clean[keep - 1] == '-')
        keep--;
    snprintf(out, GCE_NAME_MAX + 1, "xm-%.10s-%.*s-%.8s", mh, (int)keep, clean, ph);
}

void gce_label(char out[GCE_NAME_MAX + 1], const char *value)
{
    size_t n = 0;
    for (const char *p = value; *p && n < GCE_NAME_MAX; p++) {
        char c = (char)tolower((unsigned char)*p);
        out[n++] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ? c : '_';
    }
    out[n] = '\0';
}

/* The migration's resource-name prefix "xm-<10 hex>-". */
static void name_prefix(char out[16], const char *migration)
{
    char mh[65];
    secret_sha256_hex(migration, strlen(migration), mh);
    snprintf(out, 16, "xm-%.10s-", mh);
}

/* ---------------------------------------------------------------- calls */

/* "projects/<project>/<path>": new; with base, "<base>/compute/v1/" before it (a URL to
 * call), without, the partial URL GCE takes for references. */
static char *vproject_path(struct gcp *g, int base, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static char *vproject_path(struct gcp *g, int base, const char *fmt, va_list ap)
{
    char path[1024];
    vsnprintf(path, sizeof(path), fmt, ap);
    return xasprintf("%s%sprojects/%s/%s", base ? gcp_compute_base(g) : "",
                     base ? "/compute/v1/" : "", gcp_project(g), path);
}

static char *url(struct gcp *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *url(struct gcp *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = vproject_path(g, 1, fmt, ap);
    va_end(ap);
    return out;
}

static char *ref(struct gcp *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ref(struct gcp *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = vproject_path(g, 0, fmt, ap);
    va_end(ap);
    return out;
}

static const char *last_segment(const char *u)
{
    const char *s = u ? strrchr(u, '/') : NULL;
    return s ? s + 1 : u;
}

static const char *const transient_codes[] = {"RESOURCE_NOT_READY",
                                              "ZONE_RESOURCE_POOL_EXHAUSTED",
                                              "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                                              "RATE_LIMIT_EXCEEDED",
                                              "RESOURCE_OPERATION_RATE_EXCEEDED",
                                              "INTERNAL_ERROR"};

static int op_error(const json_t *op, const char *what, struct err *err)
{
    const json_t *e = json_array_get(json_object_get(json_object_get(op, "error"), "errors"), 0);
    if (!e)
        return 0;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    enum err_kind kind = ERR_PERMANENT;
    for (size_t i = 0; code && i < XM_ARRAY_LEN(transient_codes); i++)
        if (strcmp(code, transient_codes[i]) == 0)
            kind = ERR_TRANSIENT;
    return err_set(err, kind, "gce %s: operation failed: %s: %s", what, code ? code : "error",
                   msg ? msg : "no message");
}

int gce_wait(struct gcp *g, const json_t *op, const char *what, long timeout_s, struct err *err)
{
    const char *name = json_string_value(json_object_get(op, "name"));
    if (!name)
        return err_set(err, ERR_TRANSIENT, "gce %s: the reply is not an operation", what);
    char *op_url;
    const char *zone = json_string_value(json_object_get(op, "zone"));
    const char *region = json_string_value(json_object_get(op, "region"));
    if (zone)
        op_url = url(g, "zones/%s/operations/%s", last_segment(zone), name);
    else if (region)
        op_url = url(g, "regions/%s/operations/%s", last_segment(region), name);
    else
        op_url = url(g, "global/operations/%s", name);
    json_t *cur = json_incref((json_t *)op);
    time_t deadline = time(NULL) + timeout_s;
    long interval = gcp_poll_ms(g);
    int rc = 0;
    for (;;) {
        const char *status = json_string_value(json_object_get(cur, "status"));
        if (status && strcmp(status, "DONE") == 0) {
            rc = op_error(cur, what, err);
            break;
        }
        if (time(NULL) > deadline) {
            rc = err_set(err, ERR_TRANSIENT, "gce %s: operation %s not done after %ld s", what,
                         name, timeout_s);
            break;
        }
        gcp_sleep_ms(interval);
        interval = interval * 3 / 2 > POLL_CAP_MS ? POLL_CAP_MS : interval * 3 / 2;
        json_t *next = NULL;
        if (gcp_json(g, "GET", op_url, NULL, 0, &next, err) < 0) {
            rc = err_prefix(err, "gce %s: operation %s", what, name);
            break;
        }
        json_decref(cur);
        cur = next;
    }
    json_decref(cur);
    free(op_url);
    return rc;
}

/* GET a resource: *out new, or NULL when there is none. */
static int lookup(struct gcp *g, const char *u, const char *what, json_t **out, struct err *err)
{
    if (gcp_json(g, "GET", u, NULL, 1, out, err) < 0)
        return err_prefix(err, "gce get %s", what);
    return 0;
}

/* POST body (stolen) to a collection and wait for the operation. An alreadyExists answer
 * (a concurrent run made it) counts as done. */
static int insert(struct gcp *g, const char *collection, json_t *body, const char *what,
                  int *changes, struct err *err)
{
    json_t *op = NULL;
    int rc = gcp_json(g, "POST", collection, body, 0, &op, err);
    json_decref(body);
    if (rc < 0) {
        if (strcmp(gcp_last_reason(g), "alreadyExists") == 0) {
            err_clear(err);
            return 0;
        }
        return err_prefix(err, "gce insert %s", what);
    }
    rc = gce_wait(g, op, what, GCE_OP_TIMEOUT_S, err);
    json_decref(op);
    if (rc == 0 && changes)
        (*changes)++;
    return rc;
}

/* DELETE a resource and wait; one already gone is fine. */
static int remove_one(struct gcp *g, const char *u, const char *what, struct err *err)
{
    json_t *op = NULL;
    if (gcp_json(g, "DELETE", u, NULL, 1, &op, err) < 0)
        return err_prefix(err, "gce delete %s", what);
    int rc = op ? gce_wait(g, op, what, GCE_OP_TIMEOUT_S, err) : 0;
    json_decref(op);
    return rc;
}

/* Every item of a collection (all pages): new array. */
static int list_all(struct gcp *g, const char *collection, const char *filter, json_t **items,
                    struct err *err)
{
    *items = json_array();
    char *token = NULL, *f = filter ? gcp_encode(filter, 0) : NULL;
    int rc = 0;
    do {
        char *t = token ? gcp_encode(token, 0) : NULL;
        char *u = xasprintf("%s?maxResults=500%s%s%s%s", collection, f ? "&filter=" : "",
                            f ? f : "", t ? "&pageToken=" : "", t ? t : "");
        json_t *page = NULL;
        rc = gcp_json(g, "GET", u, NULL, 0, &page, err);
        free(u);
        free(t);
        free(token);
        token = NULL;
        if (rc < 0)
            break;
        json_array_extend(*items, json_object_get(page, "items"));
        const char *next = json_string_value(json_object_get(page, "nextPageToken"));
        token = next && next[0] ? xstrdup(next) : NULL;
        json_decref(page);
    } while (token);
    free(f);
    return rc < 0 ? err_prefix(err, "gce list %s", last_segment(collection)) : 0;
}

static json_t *labels(const char *migration, const char *host)
{
    char m[GCE_NAME_MAX + 1], h[GCE_NAME_MAX + 1];
    gce_label(m, migration);
    gce_label(h, host ? host : "");
    return json_pack("{s:s, s:s}", GCE_LABEL_MIGRATION, m, GCE_LABEL_HOST, h);
}

static int has_label(const json_t *res, const char *migration)
{
    char m[GCE_NAME_MAX + 1];
    gce_label(m, migration);
    const char *v =
        json_string_value(json_object_get(json_object_get(res, "labels"), GCE_LABEL_MIGRATION));
    return v && strcmp(v, m) == 0;
}

/* Ours by name prefix and description (network resources have no labels). */
static int ours_by_description(const json_t *res, const char *migration)
{
    char prefix[16], mark[256];
    name_prefix(prefix, migration);
    snprintf(mark, sizeof(mark), "xmigrate migration %s", migration);
    const char *name = json_string_value(json_object_get(res, "name"));
    const char *desc = json_string_value(json_object_get(res, "description"));
    return name && desc && strncmp(name, prefix, strlen(prefix)) == 0 && strstr(desc, mark);
}

/* ---------------------------------------------------------------- network */

static void add_resource(struct net_result *out, const char *kind, const char *id)
{
    if (out->n_resources < XM_ARRAY_LEN(out->resources))
        snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "gcp:%s:%s", kind,
                 id);
}

static int ensure_network(struct gcp *g, const struct net_spec *spec, const char *name,
                          int *changes, struct err *err)
{
    char *u = url(g, "global/networks/%s", name);
    json_t *net = NULL;
    int rc = lookup(g, u, name, &net, err);
    if (rc == 0 && !net) {
        json_t *body =
            json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", name, "description", "",
                      "autoCreateSubnetworks", 0, "routingConfig", "routingMode", "REGIONAL");
        char *desc = xasprintf("xmigrate migration %s: network %s", spec->migration, spec->name);
        json_object_set_new(body, "description", json_string(desc));
        free(desc);
        char *coll = url(g, "global/networks");
        rc = insert(g, coll, body, name, changes, err);
        free(coll);
    } else if (rc == 0 && !ours_by_description(net, spec->migration)) {
        rc = err_set(err, ERR_PERMANENT, "gce network '%s' exists but is not migration %s's", name,
                     spec->migration);
    } else if (rc == 0 && json_is_true(json_object_get(net, "autoCreateSubnetworks"))) {
        rc = err_set(err, ERR_PERMANENT, "gce network '%s' is in auto mode, not custom", name);
    }
    json_decref(net);
    free(u);
    return rc;
}

static int ensure_subnet(struct gcp *g, const char *region, const struct net_spec *spec,
                         const struct net_subnet *s, const char *network, const char *name,
                         int *changes, struct err *err)
{
    char *u = url(g, "regions/%s/subnetworks/%s", region, name);
    json_t *sub = NULL;
    int rc = lookup(g, u, name, &sub, err);
    if (rc == 0 && !sub) {
        char *desc = xasprintf("xmigrate migration %s: subnet %s%s", spec->migration, s->name,
                               s->public ? " (public)" : "");
        char *net = ref(g, "global/networks/%s", network);
        json_t *body =
            json_pack("{s:s, s:s, s:s, s:s, s:b}", "name", name, "description", desc, "network",
                      net, "ipCidrRange", s->cidr, "privateIpGoogleAccess", 1);
        free(desc);
        free(net);
        char *coll = url(g, "regions/%s/subnetworks", region);
        rc = insert(g, coll, body, name, changes, err);
        free(coll);
    } else if (rc == 0) {
        const char *cidr = json_string_value(json_object_get(sub, "ipCidrRange"));
        if (!ours_by_description(sub, spec->migration))
            rc = err_set(err, ERR_PERMANENT,
                         "gce subnetwork '%s' exists but is not migration "
                         "%s's",
                         name, spec->migration);
        else if (!cidr || strcmp(cidr, s->cidr) != 0)
            rc = err_set(err, ERR_PERMANENT,
                         "gce subnetwork '%s' has range %s, the blueprint says %s: nothing is "
                         "replaced",
                         name, cidr ? cidr : "?", s->cidr);
    }
    json_decref(sub);
    free(u);
    return rc;
}

static int ensure_rule(struct gcp *g, const struct net_spec *spec, const struct net_rule *r,
                       const char *network, const char *tag, int *changes, struct err *err)
{
    int lo = r->port, hi = r->port_to > r->port ? r->port_to : r->port;
    char key[128], hash[65], part[32], name[GCE_NAME_MAX + 1];
    snprintf(key, sizeof(key), "%s|%d|%d|%s", r->protocol, lo, hi, r->source);
    secret_sha256_hex(key, strlen(key), hash);
    snprintf(part, sizeof(part), "fw-%.12s", hash);
    gce_name(name, spec->migration, part);
    char *u = url(g, "global/firewalls/%s", name);
    json_t *fw = NULL;
    int rc = lookup(g, u, name, &fw, err);
    if (rc == 0 && !fw) {
        json_t *allowed = json_pack("{s:s}", "IPProtocol", r->protocol);
        if (strcmp(r->protocol, "icmp") != 0) {
            char ports[32];
            if (hi > lo)
                snprintf(ports, sizeof(ports), "%d-%d", lo, hi);
            else
                snprintf(ports, sizeof(ports), "%d", lo);
            json_object_set_new(allowed, "ports", json_pack("[s]", ports));
        }
        char *desc = xasprintf("xmigrate migration %s: %s", spec->migration,
                               r->description[0] ? r->description : key);
        char *net = ref(g, "global/networks/%s", network);
        json_t *body =
            json_pack("{s:s, s:s, s:s, s:s, s:i, s:[s], s:[s], s:[o]}", "name", name, "description",
                      desc, "network", net, "direction", "INGRESS", "priority", 1000,
                      "sourceRanges", r->source, "targetTags", tag, "allowed", allowed);
        free(desc);
        free(net);
        char *coll = url(g, "global/firewalls");
        rc = insert(g, coll, body, name, changes, err);
        free(coll);
    }
    json_decref(fw);
    free(u);
    return rc;
}

int gce_network_ensure(struct gcp *g, const char *region, const struct net_spec *spec,
                       struct net_result *out, int *changes, struct err *err)
{
    memset(out, 0, sizeof(*out));
    int local = 0;
    if (!changes)
        changes = &local;
    *changes = 0;
    if (!region || !region[0] || !spec->n_subnets)
        return err_set(err, ERR_PERMANENT,
                       "gce network: a region and at least one subnet are "
                       "required");
    char network[GCE_NAME_MAX + 1], tag[GCE_NAME_MAX + 1];
    gce_name(network, spec->migration, spec->name);
    gce_name(tag, spec->migration, "vm");
    if (ensure_network(g, spec, network, changes, err) < 0)
        return -1;
    xstrlcpy(out->network_id, network, sizeof(out->network_id));
    add_resource(out, "network", network);
    for (size_t i = 0; i < spec->n_subnets; i++) {
        char name[GCE_NAME_MAX + 1];
        gce_name(name, spec->migration, spec->subnets[i].name);
        if (ensure_subnet(g, region, spec, &spec->subnets[i], network, name, changes, err) < 0)
            return -1;
        snprintf(out->subnet_ids[i], sizeof(out->subnet_ids[i]),
                 "projects/%s/regions/%s/"
                 "subnetworks/%s",
                 gcp_project(g), region, name);
        out->n_subnets = i + 1;
        add_resource(out, "subnetwork", out->subnet_ids[i]);
    }
    for (size_t i = 0; i < spec->n_rules; i++)
        if (ensure_rule(g, spec, &spec->rules[i], network, tag, changes, err) < 0)
            return -1;
    xstrlcpy(out->firewall_id, tag, sizeof(out->firewall_id));
    add_resource(out, "firewall-tag", tag);
    return 0;
}

/* ---------------------------------------------------------------- delete */

/* Delete every item of collection that is ours (by label or by description). */
static int delete_ours(struct gcp *g, const char *collection, const char *migration, int by_label,
                       int *count, struct err *err)
{
    json_t *items = NULL;
    char filter[160];
    char m[GCE_NAME_MAX + 1];
    gce_label(m, migration);
    snprintf(filter, sizeof(filter), "labels.%s = \"%s\"", GCE_LABEL_MIGRATION, m);
    if (list_all(g, collection, by_label ? filter : NULL, &items, err) < 0)
        return -1;
    int rc = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (by_label ? !has_label(it, migration) : !ours_by_description(it, migration))
            continue;
        const char *name = json_string_value(json_object_get(it, "name"));
        char *u = xasprintf("%s/%s", collection, name);
        rc = remove_one(g, u, name, err);
        free(u);
        if (rc < 0)
            break;
        (*count)++;
    }
    json_decref(items);
    return rc;
}

int gce_delete_migration(struct gcp *g, const char *migration, const char *region, const char *zone,
                         struct gce_deleted *report, struct err *err)
{
    struct gce_deleted local;
    if (!report)
        report = &local;
    memset(report, 0, sizeof(*report));
    struct {
        char *collection;
        int by_label;
        int *count;
    } steps[] = {
        {url(g, "zones/%s/instances", zone), 1, &report->instances},
        {url(g, "zones/%s/disks", zone), 1, &report->disks},
        {url(g, "global/images"), 1, &report->images},
        {url(g, "global/firewalls"), 0, &report->firewalls},
        {url(g, "regions/%s/subnetworks", region), 0, &report->subnetworks},
        {url(g, "global/networks"), 0, &report->networks},
    };
    int rc = 0;
    for (size_t i = 0; i < XM_ARRAY_LEN(steps); i++) {
        if (rc == 0)
            rc = delete_ours(g, steps[i].collection, migration, steps[i].by_label, steps[i].count,
                             err);
        free(steps[i].collection);
    }
    return rc;
}

/* ---------------------------------------------------------------- images, disks */

/* Poll a resource until its status is one of ready (READY / RUNNING) or a failure. */
static int wait_status(struct gcp *g, const char *u, const char *what, const char *ready,
                       const char *const *bad, size_t n_bad, long timeout_s, json_t **last,
                       struct err *err)
{
    time_t deadline = time(NULL) + timeout_s;
    long interval = gcp_poll_ms(g);
    *last = NULL;
    for (;;) {
        json_t *res = NULL;
        if (lookup(g, u, what, &res, err) < 0)
            return -1;
        if (!res)
            return err_set(err, ERR_TRANSIENT, "gce %s disappeared while starting", what);
        const char *st = json_string_value(json_object_get(res, "status"));
        st = st ? st : "";
        if (strcmp(st, ready) == 0) {
            *last = res;
            return 0;
        }
        for (size_t i = 0; i < n_bad; i++)
            if (strcmp(st, bad[i]) == 0) {
                json_decref(res);
                return err_set(err, ERR_PERMANENT, "gce %s is %s", what, st);
            }
        json_decref(res);
        if (time(NULL) > deadline)
            return err_set(err, ERR_TRANSIENT, "gce %s not %s after %ld s (%s)", what, ready,
                           timeout_s, st);
        gcp_sleep_ms(interval);
        interval = interval * 3 / 2 > POLL_CAP_MS ? POLL_CAP_MS : interval * 3 / 2;
    }
}

int gce_image_ensure(struct gcp *g, const struct gce_image_spec *spec, struct err *err)
{
    char *u = url(g, "global/images/%s", spec->name);
    json_t *img = NULL, *ready = NULL;
    char *source = NULL;
    int rc = lookup(g, u, spec->name, &img, err);
    const char *status = json_string_value(json_object_get(img, "status"));
    if (rc == 0 && img && !has_label(img, spec->migration)) {
        rc = err_set(err, ERR_PERMANENT, "gce image '%s' exists but is not migration %s's",
                     spec->name, spec->migration);
        goto out;
    }
    if (rc == 0 && status && strcmp(status, "FAILED") == 0) {
        /* An earlier import failed (a bad archive since replaced): try again afresh. */
        rc = remove_one(g, u, spec->name, err);
        json_decref(img);
        img = NULL;
    }
    if (rc == 0 && !img) {
        if (strncmp(spec->source, "gs://", 5) == 0)
            source = xasprintf("%s/%s", GCP_STORAGE_URL, spec->source + 5);
        else
            source = xstrdup(spec->source);
        int arm = spec->arch && strcmp(spec->arch, "arm64") == 0;
        json_t *features = json_array();
        if (spec->uefi || arm)
            json_array_append_new(features, json_pack("{s:s}", "type", "UEFI_COMPATIBLE"));
        json_array_append_new(features, json_pack("{s:s}", "type", "VIRTIO_SCSI_MULTIQUEUE"));
        char *desc = xasprintf("xmigrate migration %s: host %s", spec->migration,
                               spec->host ? spec->host : "");
        json_t *body =
            json_pack("{s:s, s:s, s:{s:s}, s:o, s:s, s:o}", "name", spec->name, "description", desc,
                      "rawDisk", "source", source, "guestOsFeatures", features, "architecture",
                      arm ? "ARM64" : "X86_64", "labels", labels(spec->migration, spec->host));
        free(desc);
        char *coll = url(g, "global/images");
        rc = insert(g, coll, body, spec->name, NULL, err);
        free(coll);
    }
    if (rc == 0) {
        const char *bad[] = {"FAILED", "DELETING"};
        rc = wait_status(g, u, spec->name, "READY", bad, 2, GCE_OP_TIMEOUT_S, &ready, err);
    }
out:
    json_decref(img);
    json_decref(ready);
    free(source);
    free(u);
    return rc;
}

int gce_disk_ensure(struct gcp *g, const char *zone, const char *name, const char *image,
                    const char *migration, const char *host, struct err *err)
{
    char *u = url(g, "zones/%s/disks/%s", zone, name);
    json_t *disk = NULL, *ready = NULL;
    int rc = lookup(g, u, name, &disk, err);
    if (rc == 0 && disk && !has_label(disk, migration))
        rc = err_set(err, ERR_PERMANENT, "gce disk '%s' exists but is not migration %s's", name,
                     migration);
    if (rc == 0 && !disk) {
        char *src = ref(g, "global/images/%s", image);
        char *type = ref(g, "zones/%s/diskTypes/pd-balanced", zone);
        json_t *body = json_pack("{s:s, s:s, s:s, s:o}", "name", name, "sourceImage", src, "type",
                                 type, "labels", labels(migration, host));
        free(src);
        free(type);
        char *coll = url(g, "zones/%s/disks", zone);
        rc = insert(g, coll, body, name, NULL, err);
        free(coll);
    }
    if (rc == 0) {
        const char *bad[] = {"FAILED", "DELETING"};
        rc = wait_status(g, u, name, "READY", bad, 2, GCE_OP_TIMEOUT_S, &ready, err);
    }
    json_decref(disk);
    json_decref(ready);
    free(u);
    return rc;
}

/* ---------------------------------------------------------------- instance */

static json_t *instance_body(struct gcp *g, const struct gce_instance_spec *s)
{
    char *mt = ref(g, "zones/%s/machineTypes/%s", s->zone, s->machine_type);
    char *img = ref(g, "global/images/%s", s->boot_image);
    char *type = ref(g, "zones/%s/diskTypes/pd-balanced", s->zone);
    json_t *disks =
        json_pack("[{s:b, s:b, s:s, s:{s:s, s:s}}]", "boot", 1, "autoDelete", 1, "type",
                  "PERSISTENT", "initializeParams", "sourceImage", img, "diskType", type);
    for (size_t i = 0; i < s->n_disks; i++) {
        char *d = ref(g, "zones/%s/disks/%s", s->zone, s->disks[i]);
        json_array_append_new(disks, json_pack("{s:b, s:b, s:s, s:s}", "boot", 0, "autoDelete", 0,
                                               "type", "PERSISTENT", "source", d));
        free(d);
    }
    json_t *nic = json_pack("{s:s}", "subnetwork", s->subnetwork);
    if (s->public_ip)
        json_object_set_new(
            nic, "accessConfigs",
            json_pack("[{s:s, s:s}]", "type", "ONE_TO_ONE_NAT", "name", "External NAT"));
    char *desc = xasprintf("xmigrate migration %s: host %s", s->migration, s->host);
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:o, s:[o], s:{s:[s]}, s:o}", "name", s->name, "description",
                  desc, "machineType", mt, "disks", disks, "networkInterfaces", nic, "tags",
                  "items", s->tag, "labels", labels(s->migration, s->host));
    free(desc);
    free(mt);
    free(img);
    free(type);
    return body;
}

int gce_instance_ensure(struct gcp *g, const struct gce_instance_spec *spec, long timeout_s,
                        struct gce_instance *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    char *u = url(g, "zones/%s/instances/%s", spec->zone, spec->name);
    json_t *vm = NULL, *running = NULL;
    int rc = lookup(g, u, spec->name, &vm, err);
    if (rc == 0 && vm && !has_label(vm, spec->migration))
        rc = err_set(err, ERR_PERMANENT, "gce instance '%s' exists but is not migration %s's",
                     spec->name, spec->migration);
    if (rc == 0 && !vm) {
        char *coll = url(g, "zones/%s/instances", spec->zone);
        rc = insert(g, coll, instance_body(g, spec), spec->name, NULL, err);
        free(coll);
    }
    if (rc == 0) {
        const char *bad[] = {"TERMINATED", "SUSPENDED", "STOPPING", "SUSPENDING"};
        rc = wait_status(g, u, spec->name, "RUNNING", bad, 4, timeout_s, &running, err);
    }
    if (rc == 0) {
        json_t *nic = json_array_get(json_object_get(running, "networkInterfaces"), 0);
        const char *ip = json_string_value(json_object_get(nic, "networkIP"));
        const char *nat = json_string_value(
            json_object_get(json_array_get(json_object_get(nic, "accessConfigs"), 0), "natIP"));
        const char *id = json_string_value(json_object_get(running, "id"));
        xstrlcpy(out->id, id ? id : "", sizeof(out->id));
        xstrlcpy(out->status, "RUNNING", sizeof(out->status));
        xstrlcpy(out->private_ip, ip ? ip : "", sizeof(out->private_ip));
        xstrlcpy(out->public_ip, nat ? nat : "", sizeof(out->public_ip));
    }
    json_decref(vm);
    json_decref(running);
    free(u);
    return rc;
}
