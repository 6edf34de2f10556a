/*
 * The AWS provider: the provider_ops table (cloud/provider.h) on top of the AWS modules
 * (ec2net for networks; ebs and vm for import, s3 for chunks).
 *
 * The credential is the sealed "aws" secret of schemas/credential_create.json:
 * access_key_id, secret_access_key, optional session_token. XM_AWS_ENDPOINT sends every
 * service to one base URL (an emulator); XM_TLS_CA_FILE names a CA bundle.
 *
 * Disks become EBS snapshots (disk_*), unless the migration asks for an image file
 * ("aws_import": "raw" or "vmdk"): then the convert worker writes it through image_* into
 * S3 (aws/s3image.h) and vm_launch imports it with ImportImage (aws/s3import.h), whose
 * calls go to XM_AWS_EC2IMPORT_ENDPOINT when set (moto lacks VM Import: tests use a fake).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws.h"
#include "aws/ebs.h"
#include "aws/ec2net.h"
#include "aws/s3.h"
#include "aws/s3image.h"
#include "aws/s3import.h"
#include "aws/vm.h"
#include "config.h"
#include "log.h"
#include "provider.h"
#include "secret.h"
#include "xmalloc.h"

struct provider {
    struct aws *aws;
    struct aws *imp; /* VM Import calls when XM_AWS_EC2IMPORT_ENDPOINT is set, else NULL */
    char access_key[129];
};

#define IMPORT_TIMEOUT_S (4 * 3600) /* an ImportImage task; a re-run waits on for it */

static struct provider *aws_open(const json_t *secret, const char *region, struct err *err)
{
    const char *key = json_string_value(json_object_get(secret, "access_key_id"));
    const char *sec = json_string_value(json_object_get(secret, "secret_access_key"));
    const char *token = json_string_value(json_object_get(secret, "session_token"));
    if (!key || !sec) {
        err_set(err, ERR_PERMANENT, "aws credential lacks access_key_id or secret_access_key");
        return NULL;
    }
    struct aws_config cfg = {
        .access_key = key,
        .secret_key = sec,
        .session_token = token,
        .region = region,
        .endpoint =
            xm_config.aws_endpoint && xm_config.aws_endpoint[0] ? xm_config.aws_endpoint : NULL,
        .http = {.ca_file = xm_config.tls_ca_file && xm_config.tls_ca_file[0]
                                ? xm_config.tls_ca_file
                                : NULL},
    };
    struct aws *a = aws_new(&cfg, err);
    if (!a)
        return NULL;
    struct aws *imp = NULL;
    if (xm_config.aws_ec2import_endpoint && xm_config.aws_ec2import_endpoint[0]) {
        cfg.endpoint_ec2 = xm_config.aws_ec2import_endpoint;
        imp = aws_new(&cfg, err);
        if (!imp) {
            aws_free(a);
            return NULL;
        }
    }
    struct provider *p = xcalloc(1, sizeof(*p));
    p->aws = a;
    p->imp = imp;
    xstrlcpy(p->access_key, key, sizeof(p->access_key));
    return p;
}

static void aws_close(struct provider *p)
{
    if (!p)
        return;
    aws_free(p->aws);
    aws_free(p->imp);
    free(p);
}

static void add_resource(struct net_result *out, const char *kind, const char *id)
{
    if (!id[0] || out->n_resources >= XM_ARRAY_LEN(out->resources))
        return;
    snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "aws:%s:%s", kind, id);
}

static int aws_network_ensure(struct provider *p, const struct net_spec *spec,
                              struct net_result *out, struct err *err)
{
    struct ec2net_subnet subnets[PROVIDER_MAX_SUBNETS];
    struct ec2net_rule rules[PROVIDER_MAX_RULES];
    for (size_t i = 0; i < spec->n_subnets; i++)
        subnets[i] = (struct ec2net_subnet){.name = spec->subnets[i].name,
                                            .cidr = spec->subnets[i].cidr,
                                            .is_public = spec->subnets[i].public};
    for (size_t i = 0; i < spec->n_rules; i++)
        rules[i] = (struct ec2net_rule){.protocol = spec->rules[i].protocol,
                                        .port = spec->rules[i].port,
                                        .port_to = spec->rules[i].port_to,
                                        .source = spec->rules[i].source,
                                        .description = spec->rules[i].description};
    struct ec2net_spec es = {.migration = spec->migration,
                             .name = spec->name,
                             .cidr = spec->cidr,
                             .subnets = subnets,
                             .n_subnets = spec->n_subnets,
                             .rules = rules,
                             .n_rules = spec->n_rules};
    struct ec2net_result *r = xcalloc(1, sizeof(*r));
    int rc = ec2net_ensure(p->aws, &es, r, err);
    memset(out, 0, sizeof(*out));
    xstrlcpy(out->network_id, r->vpc_id, sizeof(out->network_id));
    xstrlcpy(out->firewall_id, r->sg_id, sizeof(out->firewall_id));
    add_resource(out, "vpc", r->vpc_id);
    for (size_t i = 0; i < r->n_subnets && i < PROVIDER_MAX_SUBNETS; i++) {
        xstrlcpy(out->subnet_ids[i], r->subnets[i].id, sizeof(out->subnet_ids[i]));
        add_resource(out, "subnet", r->subnets[i].id);
    }
    out->n_subnets = r->n_subnets;
    add_resource(out, "internet-gateway", r->igw_id);
    add_resource(out, "route-table", r->route_table_id);
    add_resource(out, "security-group", r->sg_id);
    free(r);
    return rc;
}

static int aws_network_delete(struct provider *p, const char *migration, struct err *err)
{
    struct ec2net_deleted report;
    return ec2net_delete(p->aws, migration, &report, err);
}

static void launch_resource(struct vm_launch_result *out, const char *kind, const char *id)
{
    if (id[0] && out->n_resources < XM_ARRAY_LEN(out->resources))
        snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "aws:%s:%s", kind,
                 id);
}

/* Instances, images and snapshots by tag (the EBS and the ImportImage path tag alike);
 * storage_delete removes the image files with the rest of the migration's objects. */
static int aws_teardown(struct provider *p, const char *migration, struct err *err)
{
    struct vm_deleted rep;
    if (vm_delete_migration(p->aws, migration, 600, &rep, err) < 0)
        return -1;
    log_info("rollback: instances, images and snapshots deleted",
             "migration=%s instances=%d "
             "images=%d snapshots=%d",
             migration, rep.instances, rep.images, rep.snapshots);
    return 0;
}

/* The AMI: ImportImage of images in S3 (s3://...), or RegisterImage from the snapshot
 * (found again by name on a re-run). */
static int launch_image(struct provider *p, const struct vm_launch_spec *spec, const char *name,
                        const struct vm_tags *tags, char image[VM_ID_MAX], struct err *err)
{
    if (s3import_is_ref(spec->boot_image)) {
        struct s3import_spec ss = {.migration = spec->migration,
                                   .host = spec->host,
                                   .boot = spec->boot_image,
                                   .data = spec->data_images,
                                   .n_data = spec->n_data_images,
                                   .arch = spec->arch,
                                   .boot_mode = spec->boot_mode,
                                   .name = name,
                                   .timeout_s = IMPORT_TIMEOUT_S,
                                   .poll_ms = (long)xm_config.aws_import_poll_ms};
        return s3import_ami(p->aws, p->imp ? p->imp : p->aws, &ss, image, err);
    }
    struct vm_image_spec is = {.snapshot_id = spec->boot_image,
                               .name = name,
                               .arch = spec->arch,
                               .boot_mode = spec->boot_mode,
                               .tags = *tags};
    return vm_register_image(p->aws, &is, image, err);
}

static int aws_vm_launch(struct provider *p, const struct vm_launch_spec *spec,
                         struct vm_launch_result *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    char name[160], image[VM_ID_MAX];
    snprintf(name, sizeof(name), "xmigrate-%s-%s", spec->migration, spec->host);
    struct vm_tags tags = {.migration = spec->migration, .host = spec->host, .name = name};
    /* RunInstances (found again by tags) from the image, then wait for "running". */
    if (launch_image(p, spec, name, &tags, image, err) < 0 ||
        vm_wait_image(p->aws, image, 600, err) < 0)
        return -1;
    xstrlcpy(out->image_id, image, sizeof(out->image_id));
    launch_resource(out, "image", image);
    struct vm_run_spec rs = {.image_id = image,
                             .instance_type = spec->machine_type,
                             .subnet_id = spec->subnet_id,
                             .security_group_id = spec->firewall_id,
                             .public_ip = spec->public_ip,
                             .tags = tags};
    struct vm_instance vm;
    if (vm_run(p->aws, &rs, &vm, err) < 0)
        return -1;
    xstrlcpy(out->instance_id, vm.id, sizeof(out->instance_id));
    launch_resource(out, "instance", vm.id);
    if (vm_wait_running(p->aws, vm.id, 900, &vm, err) < 0)
        return -1;
    xstrlcpy(out->private_ip, vm.private_ip, sizeof(out->private_ip));
    xstrlcpy(out->public_ip, vm.public_ip, sizeof(out->public_ip));
    return 0;
}

/* The migration chunks' bucket: XM_AWS_BUCKET, or one per access key and region
 * ("xmigrate-<12 hex of sha256(key, region)>"), so no account lookup is needed. */
static void bucket_name(struct provider *p, char *out, size_t size)
{
    if (xm_config.aws_bucket && xm_config.aws_bucket[0]) {
        xstrlcpy(out, xm_config.aws_bucket, size);
        return;
    }
    char both[256], sha[65];
    snprintf(both, sizeof(both), "%s/%s", p->access_key, aws_region(p->aws));
    secret_sha256_hex(both, strlen(both), sha);
    snprintf(out, size, "xmigrate-%.12s", sha);
}

static int aws_storage_ensure(struct provider *p, char *bucket, size_t size, struct err *err)
{
    bucket_name(p, bucket, size);
    return s3_bucket_ensure(p->aws, bucket, 30, err);
}

static int aws_storage_delete(struct provider *p, const char *migration, long long *deleted,
                              struct err *err)
{
    char bucket[128], prefix[200];
    bucket_name(p, bucket, sizeof(bucket));
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/", migration);
    size_t n = 0;
    int rc = s3_delete_prefix(p->aws, bucket, prefix, 0, &n, err);
    *deleted = (long long)n;
    if (rc < 0 && strstr(err->msg, "NoSuchBucket")) { /* never made: nothing was stored */
        err_clear(err);
        rc = 0;
    }
    return rc;
}

static int aws_write_urls(struct provider *p, const char *migration, const char *host,
                          const char *disk, const long long *indexes, size_t n, long expires,
                          char **urls, char **manifest, struct err *err)
{
    char bucket[64], key[512];
    bucket_name(p, bucket, sizeof(bucket));
    for (size_t i = 0; i < n; i++)
        urls[i] = NULL;
    *manifest = NULL;
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/%lld.zst", migration, host, disk, indexes[i]);
        urls[i] = s3_presign(p->aws, "PUT", bucket, key, expires, err);
        if (!urls[i])
            goto fail;
    }
    snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/manifest.json", migration, host, disk);
    *manifest = s3_presign(p->aws, "PUT", bucket, key, expires, err);
    if (*manifest)
        return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        urls[i] = NULL;
    }
    return -1;
}

static char *aws_read_url(struct provider *p, const char *migration, const char *host,
                          const char *disk, const char *name, long expires, struct err *err)
{
    char bucket[64], key[512];
    bucket_name(p, bucket, sizeof(bucket));
    snprintf(key, sizeof(key), "xmigrate/%s/%s/%s/%s", migration, host, disk, name);
    return s3_presign(p->aws, "GET", bucket, key, expires, err);
}

static int aws_read_object(struct provider *p, const char *bucket, const char *key, size_t max,
                           char **data, size_t *len, struct err *err)
{
    return s3_get(p->aws, bucket, key, 0, 0, max, data, len, err);
}

static int aws_disk_begin(struct provider *p, const char *migration, const char *host,
                          const char *disk, unsigned long long size, char ref[PROVIDER_ID_MAX],
                          long *block_size, struct err *err)
{
    struct ebs_tags tags = {.migration = migration, .host = host, .disk = disk};
    struct ebs_snapshot snap;
    int found = 0;
    /* A completed snapshot of this disk from an earlier run is reused as it is. */
    if (ebs_find(p->aws, &tags, &snap, &found, err) < 0)
        return -1;
    if (!found || !snap.block_size) {
        char token[65];
        ebs_client_token(&tags, token);
        if (ebs_start(p->aws, ebs_volume_gib(size), "xmigrate disk", &tags, token, &snap, err) < 0)
            return -1;
    }
    xstrlcpy(ref, snap.id, PROVIDER_ID_MAX);
    *block_size = snap.block_size;
    return 0;
}

static int aws_disk_write(struct provider *p, const char *ref, long block_size,
                          unsigned long long offset, const void *data, size_t len,
                          long long *blocks, struct err *err)
{
    struct ebs_snapshot snap;
    memset(&snap, 0, sizeof(snap));
    xstrlcpy(snap.id, ref, sizeof(snap.id));
    snap.block_size = block_size;
    snap.volume_gib = (long long)((offset + len + (1ULL << 30) - 1) >> 30) + 1;
    *blocks = 0;
    unsigned char *pad = NULL;
    for (size_t o = 0; o < len; o += (size_t)block_size) {
        const unsigned char *b = (const unsigned char *)data + o;
        size_t n = len - o < (size_t)block_size ? len - o : (size_t)block_size;
        if (n < (size_t)block_size) { /* the disk's last, short block: zero-padded */
            pad = xcalloc(1, (size_t)block_size);
            memcpy(pad, b, n);
            b = pad;
        }
        if (!ebs_block_is_zero(b, (size_t)block_size)) {
            long long index = (long long)((offset + o) / (unsigned long long)block_size);
            if (ebs_put_block(p->aws, &snap, index, b, (size_t)block_size, err) < 0) {
                free(pad);
                return -1;
            }
            (*blocks)++;
        }
    }
    free(pad);
    return 0;
}

static int aws_disk_finish(struct provider *p, const char *ref, long long blocks, struct err *err)
{
    if (ebs_complete(p->aws, ref, blocks, err) < 0)
        return -1;
    return ebs_wait_completed(p->aws, ref, 3600, err);
}

/* ---------------------------------------------------------------- image files in S3 */

/* ref is "<bucket>/<key>": split into caller buffers. */
static int split_ref(const char *ref, char bucket[64], const char **key, struct err *err)
{
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref || slash - ref >= 64 || !slash[1])
        return err_set(err, ERR_PERMANENT, "aws: image reference '%.200s' is not bucket/key", ref);
    snprintf(bucket, 64, "%.*s", (int)(slash - ref), ref);
    *key = slash + 1;
    return 0;
}

/* The two formats ImportImage takes from xmigrate differ in layout: raw is the FIXED one
 * (fixed_size > 0, the disk size), stream-optimized VMDK the CONCAT one (0). S3 has no
 * sparse objects, so raw pieces arrive with their zeros (the convert worker's sink fills
 * them in) and both are joined the same way. */
static int aws_image_begin(struct provider *p, const char *migration, const char *host,
                           const char *disk, unsigned long long fixed_size,
                           char ref[PROVIDER_REF_MAX], struct err *err)
{
    char bucket[64], key[S3_KEY_MAX + 1];
    bucket_name(p, bucket, sizeof(bucket));
    if (s3image_key(migration, host, disk, fixed_size ? "raw" : "vmdk", key, sizeof(key), err) < 0)
        return -1;
    int n = snprintf(ref, PROVIDER_REF_MAX, "%s/%s", bucket, key);
    if (n < 0 || n >= PROVIDER_REF_MAX)
        return err_set(err, ERR_PERMANENT, "aws: image name of disk '%s' is too long", disk);
    return s3image_begin(p->aws, bucket, key, err);
}

static int aws_image_put_piece(struct provider *p, const char *ref, size_t i, const void *buf,
                               size_t len, struct err *err)
{
    char bucket[64];
    const char *key = NULL;
    if (split_ref(ref, bucket, &key, err) < 0)
        return -1;
    return s3image_put_piece(p->aws, bucket, key, i, buf, len, err);
}

static int aws_image_finish(struct provider *p, const char *ref, size_t npieces,
                            char image[PROVIDER_REF_MAX], struct err *err)
{
    char bucket[64];
    const char *key = NULL;
    if (split_ref(ref, bucket, &key, err) < 0 ||
        s3image_join(p->aws, bucket, key, npieces, NULL, err) < 0)
        return -1;
    snprintf(image, PROVIDER_REF_MAX, S3IMPORT_SCHEME "%s/%s", bucket, key);
    return 0;
}

const struct provider_ops aws_provider = {
    .cloud = "aws",
    .open = aws_open,
    .close = aws_close,
    .network_ensure = aws_network_ensure,
    .network_delete = aws_network_delete,
    .teardown = aws_teardown,
    .vm_launch = aws_vm_launch,
    .storage_ensure = aws_storage_ensure,
    .storage_delete = aws_storage_delete,
    .write_urls = aws_write_urls,
    .read_url = aws_read_url,
    .read_object = aws_read_object,
    .disk_begin = aws_disk_begin,
    .disk_write = aws_disk_write,
    .disk_finish = aws_disk_finish,
    /* image_format stays NULL: EBS is the default; "aws_import" picks these. */
    .image_pieces_max = S3_PARTS_MAX,
    .image_begin = aws_image_begin,
    .image_put_piece = aws_image_put_piece,
    .image_finish = aws_image_finish,
};
