/*
 * The GCP provider: the provider_ops table (cloud/provider.h) on top of the GCP modules
 * (gcp for the token and calls, gcs for Cloud Storage, signedurl for the agent's URLs,
 * gce for networks, images, disks and instances).
 *
 * The credential is the sealed "gcp" secret of schemas/credential_create.json:
 * {"service_account": <the key file as Google issues it>} (a bare key file is taken too).
 * XM_GCP_TOKEN_ENDPOINT, XM_GCP_STORAGE_ENDPOINT and XM_GCP_COMPUTE_ENDPOINT send the
 * three services elsewhere (tests: tests/fakes/gcp.py); XM_TLS_CA_FILE names a CA bundle.
 *
 * Region and zone: a migration names a region ("us-central1"); subnetworks live there
 * and instances and disks go to its zone "<region>-a". A migration whose region is a
 * zone ("us-central1-b", a region plus "-<letter>") uses that zone and its region.
 *
 * Storage: one bucket per project and region, "xmigrate-<12 hex of SHA-256(project/
 * region)>", in the region, objects named as on AWS: xmigrate/<migration>/<host>/<disk>/
 * <index>.zst and manifest.json. A disk's image is xmigrate/<migration>/<host>/<disk>/
 * image.tar.gz, written as pieces "<image>.piece/<index, 7 digits>" and composed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "gcp/gce.h"
#include "gcp/gcp.h"
#include "gcp/gcs.h"
#include "gcp/signedurl.h"
#include "provider.h"
#include "secret.h"
#include "xmalloc.h"

#define EXPIRE_DAYS 30                /* the bucket lifecycle of chunks and images */
#define SIMPLE_MAX (8u << 20)         /* pieces up to this go in one request */
#define LAUNCH_TIMEOUT_S 900          /* an instance reaching RUNNING */
#define PIECES_META "xmigrate-pieces" /* on a composed image: how many pieces made it */

struct provider {
    struct gcp *gcp;
    char region[64];
    char zone[64];
};

static const char *cfg(const char *v)
{
    return v && v[0] ? v : NULL;
}

/* "us-central1" -> zone us-central1-a; "us-central1-b" -> region us-central1. */
static int place(struct provider *p, const char *region, struct err *err)
{
    size_t n = region ? strlen(region) : 0;
    if (n < 3 || n >= sizeof(p->region) - 2)
        return err_set(err, ERR_PERMANENT, "gcp: region '%s' is not a GCP region",
                       region ? region : "");
    if (region[n - 2] == '-' && region[n - 1] >= 'a' && region[n - 1] <= 'z') {
        snprintf(p->region, sizeof(p->region), "%.*s", (int)(n - 2), region);
        snprintf(p->zone, sizeof(p->zone), "%s", region);
    } else {
        snprintf(p->region, sizeof(p->region), "%s", region);
        snprintf(p->zone, sizeof(p->zone), "%s-a", region);
    }
    return 0;
}

static struct provider *gcp_open(const json_t *secret, const char *region, struct err *err)
{
    const json_t *sa = json_object_get(secret, "service_account");
    if (!sa)
        sa = secret;
    const char *type = json_string_value(json_object_get(sa, "type"));
    if (!type || strcmp(type, "service_account") != 0) {
        err_set(err, ERR_PERMANENT, "gcp credential is not a service-account key");
        return NULL;
    }
    struct provider *p = xcalloc(1, sizeof(*p));
    if (place(p, region, err) < 0) {
        free(p);
        return NULL;
    }
    struct gcp_config c = {
        .project = json_string_value(json_object_get(sa, "project_id")),
        .client_email = json_string_value(json_object_get(sa, "client_email")),
        .private_key = json_string_value(json_object_get(sa, "private_key")),
        .private_key_id = json_string_value(json_object_get(sa, "private_key_id")),
        .token_uri = cfg(xm_config.gcp_token_endpoint)
                         ? xm_config.gcp_token_endpoint
                         : json_string_value(json_object_get(sa, "token_uri")),
        .storage_endpoint = cfg(xm_config.gcp_storage_endpoint),
        .compute_endpoint = cfg(xm_config.gcp_compute_endpoint),
        .http = {.ca_file = cfg(xm_config.tls_ca_file)},
    };
    p->gcp = gcp_new(&c, err);
    if (!p->gcp) {
        free(p);
        return NULL;
    }
    return p;
}

static void gcp_close(struct provider *p)
{
    if (!p)
        return;
    gcp_free(p->gcp);
    free(p);
}

/* ---------------------------------------------------------------- network */

static int gcp_network_ensure(struct provider *p, const struct net_spec *spec,
                              struct net_result *out, struct err *err)
{
    return gce_network_ensure(p->gcp, p->region, spec, out, NULL, err);
}

static int gcp_network_delete(struct provider *p, const char *migration, struct err *err)
{
    return gce_delete_migration(p->gcp, migration, p->region, p->zone, NULL, err);
}

/* ---------------------------------------------------------------- storage */

static void bucket_name(struct provider *p, char *out, size_t size)
{
    char both[256], sha[65];
    snprintf(both, sizeof(both), "%s/%s", gcp_project(p->gcp), p->region);
    secret_sha256_hex(both, strlen(both), sha);
    snprintf(out, size, "xmigrate-%.12s", sha);
}

static int gcp_storage_ensure(struct provider *p, char *bucket, size_t size, struct err *err)
{
    bucket_name(p, bucket, size);
    return gcs_bucket_ensure(p->gcp, bucket, p->region, EXPIRE_DAYS, err);
}

static int gcp_storage_delete(struct provider *p, const char *migration, long long *deleted,
                              struct err *err)
{
    *deleted = 0;
    char bucket[64], prefix[200];
    bucket_name(p, bucket, sizeof(bucket));
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/", migration);
    struct gcs_object *objs = NULL;
    size_t n = 0;
    int exists = 0;
    if (gcs_bucket_exists(p->gcp, bucket, &exists, err) < 0)
        return -1;
    if (!exists) /* never made: nothing was stored */
        return 0;
    if (gcs_list(p->gcp, bucket, prefix, &objs, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((rc = gcs_delete(p->gcp, bucket, objs[i].name, err)) == 0)
            (*deleted)++;
    gcs_objects_free(objs, n);
    return rc;
}

/* A V4 signed URL for one object of the bucket, path-style on the storage endpoint. */
static char *sign(struct provider *p, const char *method, const char *object, long expires,
                  struct err *err)
{
    char bucket[64];
    bucket_name(p, bucket, sizeof(bucket));
    const char *base = gcp_storage_base(p->gcp);
    const char *sep = strstr(base, "://");
    if (!sep || strchr(sep + 3, '/')) {
        err_set(err, ERR_PERMANENT, "gcp: storage endpoint '%s' is not scheme://host[:port]", base);
        return NULL;
    }
    char scheme[16];
    snprintf(scheme, sizeof(scheme), "%.*s", (int)(sep - base), base);
    struct gcs_sign_request r = {.method = method,
                                 .scheme = scheme,
                                 .host = sep + 3,
                                 .bucket = bucket,
                                 .object = object,
                                 .when = time(NULL),
                                 .expires = expires};
    return gcs_signed_url(gcp_key(p->gcp), gcp_client_email(p->gcp), &r, NULL, err);
}

static int gcp_write_urls(struct provider *p, const char *migration, const char *host,
                          const char *disk, const long long *indexes, size_t n, long expires,
                          char **urls, char **manifest, struct err *err)
{
    char key[512];
    for (size_t i = 0; i < n; i++)
        urls[i] = NULL;
    *manifest = NULL;
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/%lld.zst", migration, host, disk, indexes[i]);
        urls[i] = sign(p, "PUT", key, expires, err);
        if (!urls[i])
            goto fail;
    }
    snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/manifest.json", migration, host, disk);
    *manifest = sign(p, "PUT", key, expires, err);
    if (*manifest)
        return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        urls[i] = NULL;
    }
    return -1;
}

static char *gcp_read_url(struct provider *p, const char *migration, const char *host,
                          const char *disk, const char *name, long expires, struct err *err)
{
    char key[512];
    snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/%s", migration, host, disk, name);
    return sign(p, "GET", key, expires, err);
}

static int gcp_read_object(struct provider *p, const char *bucket, const char *key, size_t max,
                           char **data, size_t *len, struct err *err)
{
    return gcs_get(p->gcp, bucket, key, 0, 0, max, data, len, err);
}

/* ---------------------------------------------------------------- image (CONCAT) */

/* ref is "<bucket>/<object>": split into caller buffers. */
static int split_ref(const char *ref, char bucket[64], const char **object, struct err *err)
{
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref || (size_t)(slash - ref) >= 64 || !slash[1])
        return err_set(err, ERR_PERMANENT, "gcp: image reference '%.200s' is not bucket/object",
                       ref);
    snprintf(bucket, 64, "%.*s", (int)(slash - ref), ref);
    *object = slash + 1;
    return 0;
}

static int gcp_image_begin(struct provider *p, const char *migration, const char *host,
                           const char *disk, unsigned long long fixed_size,
                           char ref[PROVIDER_REF_MAX], struct err *err)
{
    if (fixed_size)
        return err_set(err, ERR_PERMANENT, "gcp images are composed (CONCAT), not fixed-size");
    char bucket[64];
    bucket_name(p, bucket, sizeof(bucket));
    int n = snprintf(ref, PROVIDER_REF_MAX, "%s/xmigrate/%s/%s/%s/image.tar.gz", bucket, migration,
                     host, disk);
    if (n < 0 || n >= PROVIDER_REF_MAX - 32)
        return err_set(err, ERR_PERMANENT, "gcp: image name for disk '%s' is too long", disk);
    return 0;
}

static void piece_name(char *out, size_t size, const char *object, size_t i)
{
    snprintf(out, size, "%s.piece/%07zu", object, i);
}

static int gcp_image_put_piece(struct provider *p, const char *ref, size_t i, const void *buf,
                               size_t len, struct err *err)
{
    char bucket[64], name[PROVIDER_REF_MAX + 32];
    const char *object = NULL;
    if (split_ref(ref, bucket, &object, err) < 0)
        return -1;
    piece_name(name, sizeof(name), object, i);
    if (len == 0) /* nothing to store; an earlier run's copy must not be joined */
        return gcs_delete(p->gcp, bucket, name, err);
    if (len <= SIMPLE_MAX)
        return gcs_put(p->gcp, bucket, name, buf, len, err);
    return gcs_put_resumable(p->gcp, bucket, name, buf, len, 0, NULL, err);
}

/* Already composed from npieces by an earlier run (which may have died deleting pieces)? */
static int composed(struct provider *p, const char *bucket, const char *object, size_t npieces,
                    int *done, struct err *err)
{
    json_t *obj = NULL;
    *done = 0;
    if (gcs_stat(p->gcp, bucket, object, &obj, err) < 0)
        return -1;
    const char *v =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), PIECES_META));
    char want[24];
    snprintf(want, sizeof(want), "%zu", npieces);
    *done = v && strcmp(v, want) == 0;
    json_decref(obj);
    return 0;
}

static int gcp_image_finish(struct provider *p, const char *ref, size_t npieces,
                            char image[PROVIDER_REF_MAX], struct err *err)
{
    char bucket[64];
    const char *object = NULL;
    if (split_ref(ref, bucket, &object, err) < 0)
        return -1;
    char *prefix = xasprintf("%s.piece/", object);
    char *tmp = xasprintf("%s.compose/", object);
    struct gcs_object *objs = NULL;
    size_t n = 0;
    const char **sources = NULL;
    int done = 0, rc = -1;
    if (composed(p, bucket, object, npieces, &done, err) < 0 ||
        gcs_list(p->gcp, bucket, prefix, &objs, &n, err) < 0)
        goto out;
    if (!done) {
        /* The pieces that exist, in index order (names are zero-padded: list order). */
        sources = xcalloc(n ? n : 1, sizeof(*sources));
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            char *end;
            unsigned long long idx = strtoull(objs[i].name + strlen(prefix), &end, 10);
            if (*end == '\0' && idx < npieces)
                sources[k++] = objs[i].name;
        }
        if (!k) {
            err_set(err, ERR_PERMANENT, "gcp image '%s': no pieces to compose", object);
            goto out;
        }
        char count[24];
        snprintf(count, sizeof(count), "%zu", npieces);
        json_t *meta = json_pack("{s:s}", PIECES_META, count);
        rc = gcs_compose_all(p->gcp, bucket, sources, k, object, tmp, meta, NULL, err);
        json_decref(meta);
        if (rc < 0)
            goto out;
    }
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = gcs_delete(p->gcp, bucket, objs[i].name, err);
    if (rc == 0)
        snprintf(image, PROVIDER_REF_MAX, "gs://%s/%s", bucket, object);
out:
    free(sources);
    gcs_objects_free(objs, n);
    free(prefix);
    free(tmp);
    return rc;
}

/* ---------------------------------------------------------------- VM */

static void launch_resource(struct vm_launch_result *out, const char *kind, const char *id)
{
    if (out->n_resources < XM_ARRAY_LEN(out->resources))
        snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "gcp:%s:%s", kind,
                 id);
}

/* Images from the boot and data disks' tar.gz, data disks from theirs, then the instance. */
static int gcp_vm_launch(struct provider *p, const struct vm_launch_spec *spec,
                         struct vm_launch_result *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    if (!spec->boot_image || !spec->machine_type || !spec->subnet_id || !spec->firewall_id)
        return err_set(err, ERR_PERMANENT,
                       "gcp vm: boot image, machine type, subnet and "
                       "firewall tag are required");
    int uefi = spec->boot_mode && strcmp(spec->boot_mode, "uefi") == 0;
    char part[128], image[GCE_NAME_MAX + 1], vm[GCE_NAME_MAX + 1];
    snprintf(part, sizeof(part), "%s-boot", spec->host);
    gce_name(image, spec->migration, part);
    struct gce_image_spec is = {.name = image,
                                .source = spec->boot_image,
                                .arch = spec->arch,
                                .uefi = uefi,
                                .migration = spec->migration,
                                .host = spec->host};
    if (gce_image_ensure(p->gcp, &is, err) < 0)
        return -1;
    xstrlcpy(out->image_id, image, sizeof(out->image_id));
    launch_resource(out, "image", image);

    char(*disks)[GCE_NAME_MAX + 1] = xcalloc(spec->n_data_images + 1, sizeof(*disks));
    const char **names = xcalloc(spec->n_data_images + 1, sizeof(*names));
    int rc = -1;
    for (size_t i = 0; i < spec->n_data_images; i++) {
        char dimg[GCE_NAME_MAX + 1];
        snprintf(part, sizeof(part), "%s-data%zu", spec->host, i + 1);
        gce_name(dimg, spec->migration, part);
        struct gce_image_spec ds = is;
        ds.name = dimg;
        ds.source = spec->data_images[i];
        if (gce_image_ensure(p->gcp, &ds, err) < 0 ||
            gce_disk_ensure(p->gcp, p->zone, dimg, dimg, spec->migration, spec->host, err) < 0)
            goto out;
        xstrlcpy(disks[i], dimg, sizeof(disks[i]));
        names[i] = disks[i];
    }
    gce_name(vm, spec->migration, spec->host);
    struct gce_instance_spec vs = {.zone = p->zone,
                                   .name = vm,
                                   .machine_type = spec->machine_type,
                                   .boot_image = image,
                                   .disks = names,
                                   .n_disks = spec->n_data_images,
                                   .subnetwork = spec->subnet_id,
                                   .tag = spec->firewall_id,
                                   .public_ip = spec->public_ip,
                                   .migration = spec->migration,
                                   .host = spec->host};
    struct gce_instance inst;
    if (gce_instance_ensure(p->gcp, &vs, LAUNCH_TIMEOUT_S, &inst, err) < 0)
        goto out;
    snprintf(out->instance_id, sizeof(out->instance_id), "zones/%.40s/instances/%.63s", p->zone,
             vm);
    launch_resource(out, "instance", out->instance_id);
    for (size_t i = 0; i < spec->n_data_images; i++)
        launch_resource(out, "disk", disks[i]);
    xstrlcpy(out->private_ip, inst.private_ip, sizeof(out->private_ip));
    xstrlcpy(out->public_ip, inst.public_ip, sizeof(out->public_ip));
    rc = 0;
out:
    free(disks);
    free(names);
    return rc;
}

const struct provider_ops gcp_provider = {
    .cloud = "gcp",
    .open = gcp_open,
    .close = gcp_close,
    .network_ensure = gcp_network_ensure,
    .network_delete = gcp_network_delete,
    .storage_ensure = gcp_storage_ensure,
    .storage_delete = gcp_storage_delete,
    .write_urls = gcp_write_urls,
    .read_url = gcp_read_url,
    .read_object = gcp_read_object,
    .image_format = "gce-tar",
    .image_begin = gcp_image_begin,
    .image_put_piece = gcp_image_put_piece,
    .image_finish = gcp_image_finish,
    .vm_launch = gcp_vm_launch,
};
