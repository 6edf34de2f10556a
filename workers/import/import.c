/*
 * xm-import: the last phase of a host. From the host's converted boot disk (the image
 * reference convert recorded on its disk record: an EBS snapshot id for AWS, or an
 * s3:// image for ImportImage) and its other disks as data disks, register
 * the image and start the VM where the blueprint puts the host (machine type, subnet,
 * firewall, public IP), wait until it runs, and record instance and addresses on the
 * host. Every step is found again on a re-run, so a retried job creates nothing twice.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "keys.h"
#include "phase.h"
#include "worker.h"
#include "xmalloc.h"

/* The blueprint's placement of host: machine type, subnet name, public IP. */
static const json_t *placement(const json_t *bp, const char *host)
{
    size_t i;
    const json_t *h;
    json_array_foreach(json_object_get(bp, "hosts"), i, h)
    {
        const char *name = json_string_value(json_object_get(h, "host"));
        if (name && strcmp(name, host) == 0)
            return h;
    }
    return NULL;
}

#define DATA_DISKS_MAX 64 /* data disks of one host handed to vm_launch */

/* The image references of the host's converted disks (new strings): the boot disk's (the
 * one marked boot, else the first in name order with an image) first, then the others in
 * name order, which vm_launch attaches as data disks. NULL when none. */
static char **disk_images(struct redisContext *c, const char *mig, const char *host, size_t *n_out,
                          struct err *err)
{
    char key[300];
    snprintf(key, sizeof(key), XM_HOST_DISKS_FMT, mig, host);
    redisReply *disks = conn_cmd(c, err, 3, (const char *[]){"SORT", key, "ALPHA"});
    *n_out = 0;
    if (!disks)
        return NULL;
    char **v = xcalloc(disks->elements + 1, sizeof(*v));
    size_t n = 0, boot = 0;
    int marked = 0, failed = 0;
    for (size_t i = 0; i < disks->elements && !failed; i++) {
        char dkey[400];
        snprintf(dkey, sizeof(dkey), XM_DISK_FMT, mig, host, disks->element[i]->str);
        redisReply *d = conn_cmd(c, err, 4, (const char *[]){"HMGET", dkey, "image", "boot"});
        failed = !d;
        if (d && d->elements == 2 && d->element[0]->type == REDIS_REPLY_STRING) {
            if (!marked && d->element[1]->type == REDIS_REPLY_STRING &&
                strcmp(d->element[1]->str, "1") == 0) {
                boot = n;
                marked = 1;
            }
            v[n++] = xstrdup(d->element[0]->str);
        }
        if (d)
            freeReplyObject(d);
    }
    size_t total = disks->elements;
    freeReplyObject(disks);
    if (!failed && n == 0)
        err_set(err, ERR_PERMANENT,
                "host '%s' has no converted boot disk (%zu disk records, none with an image)", host,
                total);
    else if (!failed && n > DATA_DISKS_MAX + 1)
        err_set(err, ERR_PERMANENT, "host '%s' has %zu converted disks, at most %d", host, n,
                DATA_DISKS_MAX + 1);
    if (failed || n == 0 || n > DATA_DISKS_MAX + 1) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        return NULL;
    }
    char *b = v[boot]; /* the boot disk first, the others keep their order */
    memmove(v + 1, v, boot * sizeof(*v));
    v[0] = b;
    *n_out = n;
    return v;
}

static int import_handle(struct worker *w, const struct job *job, struct job_result *res,
                         struct err *err)
{
    struct redisContext *c = worker_redis(w);
    if (!c)
        return err_set(err, ERR_TRANSIENT, "redis connection lost");
    struct mig_info m;
    if (state_load_migration(c, job->migration, &m, err) < 0)
        return -1;
    int rc = -1;
    struct provider *p = NULL;
    const struct provider_ops *ops = NULL;
    char **images = NULL;
    size_t n_images = 0;
    redisReply *facts = NULL;

    const json_t *place = m.blueprint ? placement(m.blueprint, job->host) : NULL;
    if (!place) {
        err_set(err, ERR_PERMANENT, "the blueprint does not place host '%s'", job->host);
        goto out;
    }
    const char *subnet = json_string_value(json_object_get(place, "subnet"));
    const char *subnet_id =
        json_string_value(json_object_get(json_object_get(m.network, "subnets"), subnet));
    const char *firewall = json_string_value(json_object_get(m.network, "firewall_id"));
    if (!subnet_id || !firewall) {
        err_set(err, ERR_PERMANENT, "the network phase recorded no subnet '%s' for host '%s'",
                subnet ? subnet : "?", job->host);
        goto out;
    }
    images = disk_images(c, m.id, job->host, &n_images, err);
    if (!images)
        goto out;
    char hkey[300];
    snprintf(hkey, sizeof(hkey), XM_HOST_FMT, m.id, job->host);
    facts = conn_cmd(c, err, 4, (const char *[]){"HMGET", hkey, "arch", "boot_mode"});
    if (!facts)
        goto out;
    const char *arch =
        facts->element[0]->type == REDIS_REPLY_STRING ? facts->element[0]->str : "x86_64";
    const char *boot =
        facts->element[1]->type == REDIS_REPLY_STRING ? facts->element[1]->str : "legacy-bios";
    p = phase_open_provider(c, &m, &ops, err);
    if (!p)
        goto out;
    struct vm_launch_spec spec = {
        .migration = m.id,
        .host = job->host,
        .boot_image = images[0],
        .data_images = (const char *const *)images + 1,
        .n_data_images = n_images - 1,
        .arch = arch,
        .boot_mode = boot,
        .machine_type = json_string_value(json_object_get(place, "machine_type")),
        .subnet_id = subnet_id,
        .firewall_id = firewall,
        .public_ip = json_is_true(json_object_get(place, "public_ip")),
    };
    struct vm_launch_result out;
    if (ops->vm_launch(p, &spec, &out, err) < 0)
        goto out;
    for (size_t i = 0; i < out.n_resources; i++)
        if (state_add_resource(c, m.id, out.resources[i], err) < 0)
            goto out;
    job_result_hset(res, hkey, "image_id", out.image_id);
    job_result_hset(res, hkey, "instance_id", out.instance_id);
    job_result_hset(res, hkey, "private_ip", out.private_ip);
    job_result_hset(res, hkey, "public_ip", out.public_ip);
    job_result_message(res, "instance %s running at %s%s%s", out.instance_id, out.private_ip,
                       out.public_ip[0] ? ", public " : "", out.public_ip);
    rc = 0;
out:
    if (p)
        ops->close(p);
    if (facts)
        freeReplyObject(facts);
    for (size_t i = 0; i < n_images; i++)
        free(images[i]);
    free(images);
    mig_info_release(&m);
    return rc;
}

int main(void)
{
    static const struct worker_ops ops = {
        .name = "xm-import",
        .phase = "import",
        .handle = import_handle,
        .batch = 1, /* long jobs: leave the rest for idle workers */
    };
    return worker_main(&ops);
}
