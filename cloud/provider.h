/*
 * provider: every cloud behind one table of operations (DESIGN.md section 5), so the
 * phase workers never know which cloud they talk to.
 *
 * A worker finds the table with provider_find(cloud), opens a session with the
 * migration's credential (the opened secret, borrowed; the provider copies what it
 * keeps) and region, calls operations, and closes it. Every operation is idempotent:
 * resources are named and tagged from migration + host + disk and looked up before they
 * are created, so a job that runs twice creates nothing twice. Operations block;
 * errors are transient (retry the job) or permanent (dead-letter it).
 *
 * Endpoints come from XM_<CLOUD>_ENDPOINT variables (tests point them at emulators);
 * unset means the real cloud.
 */
#ifndef XM_PROVIDER_H
#define XM_PROVIDER_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"

#define PROVIDER_ID_MAX 128
#define PROVIDER_REF_MAX 512 /* image references: blob URLs, gs:// names */
#define PROVIDER_MAX_SUBNETS 64
#define PROVIDER_MAX_RULES 200

struct provider;

/* The network of a blueprint, cloud-neutral. */
struct net_subnet {
    char name[64];
    char cidr[32];
    int public;
};

struct net_rule {
    char protocol[8]; /* tcp, udp, icmp */
    int port, port_to;
    char source[32];
    char description[201];
};

struct net_spec {
    char migration[PROVIDER_ID_MAX];
    char name[64];
    char cidr[32];
    struct net_subnet subnets[PROVIDER_MAX_SUBNETS];
    size_t n_subnets;
    struct net_rule rules[PROVIDER_MAX_RULES];
    size_t n_rules;
};

struct net_result {
    char network_id[PROVIDER_ID_MAX];
    char firewall_id[PROVIDER_ID_MAX];
    char subnet_ids[PROVIDER_MAX_SUBNETS][PROVIDER_ID_MAX]; /* in net_spec order */
    size_t n_subnets;
    /* Every resource as "<kind>:<id>", for the migration's resource list. */
    char resources[2 * PROVIDER_MAX_SUBNETS + 8][PROVIDER_ID_MAX + 32];
    size_t n_resources;
};

/* A host's new VM, from its converted boot disk. */
struct vm_launch_spec {
    const char *migration;
    const char *host;
    const char *boot_image; /* what convert produced: AWS snapshot id, Azure blob URL, gs:// */
    const char *const *data_images; /* the other disks' images, in disk order */
    size_t n_data_images;
    const char *arch;      /* "x86_64" or "arm64" */
    const char *boot_mode; /* "legacy-bios" or "uefi" */
    const char *machine_type;
    const char *subnet_id;
    const char *firewall_id;
    int public_ip;
};

struct vm_launch_result {
    char image_id[PROVIDER_ID_MAX];
    char instance_id[PROVIDER_ID_MAX];
    char private_ip[64];
    char public_ip[64];
    char resources[4][PROVIDER_ID_MAX + 32];
    size_t n_resources;
};

struct provider_ops {
    const char *cloud; /* "aws", "azure", "gcp" */
    /* secret: the opened credential (borrowed). New session, or NULL with err. */
    struct provider *(*open)(const json_t *secret, const char *region, struct err *err);
    void (*close)(struct provider *p);
    /* Create what is missing of the network, look up what exists. */
    int (*network_ensure)(struct provider *p, const struct net_spec *spec, struct net_result *out,
                          struct err *err);
    /* Remove everything the migration created, in dependency order. */
    int (*network_delete)(struct provider *p, const char *migration, struct err *err);
    /*
     * Make sure the object storage that receives a migration's disk chunks exists (AWS:
     * an encrypted, private S3 bucket whose xmigrate/ objects expire), named in
     * bucket (at least 64 bytes). Blocks on the cloud.
     */
    int (*storage_ensure)(struct provider *p, char *bucket, size_t size, struct err *err);
    /*
     * Write URLs needing no credentials (AWS: presigned PUT) for chunks indexes[0..n) of
     * one disk, and for its manifest, valid for expires seconds. urls[i] and *manifest
     * are new strings. Local signing only: no call to the cloud.
     */
    int (*write_urls)(struct provider *p, const char *migration, const char *host, const char *disk,
                      const long long *indexes, size_t n, long expires, char **urls,
                      char **manifest, struct err *err);
    /*
     * A read URL needing no credentials for one object of a disk's copy ("manifest.json"
     * or "<index>.zst"), valid for expires seconds; new string. Local signing only.
     */
    char *(*read_url)(struct provider *p, const char *migration, const char *host, const char *disk,
                      const char *name, long expires, struct err *err);
    /* Read a whole object of the migration's storage (manifest, chunk): new buffer. */
    int (*read_object)(struct provider *p, const char *bucket, const char *key, size_t max,
                       char **data, size_t *len, struct err *err);
    /*
     * Converting one disk into what the cloud imports (AWS: an EBS snapshot written
     * block by block). disk_begin makes (or finds again) the target for a disk of size
     * bytes and returns its reference and block size; disk_write writes len bytes of raw
     * disk at offset (a multiple of the block size) skipping all-zero blocks and says how
     * many blocks it wrote; disk_finish completes the target once every shard is written
     * (blocks = all blocks written) and waits until it is usable. Re-runs are safe.
     */
    int (*disk_begin)(struct provider *p, const char *migration, const char *host, const char *disk,
                      unsigned long long size, char ref[PROVIDER_ID_MAX], long *block_size,
                      struct err *err);
    int (*disk_write)(struct provider *p, const char *ref, long block_size,
                      unsigned long long offset, const void *data, size_t len, long long *blocks,
                      struct err *err);
    int (*disk_finish)(struct provider *p, const char *ref, long long blocks, struct err *err);
    /*
     * Converting one disk into an image file in the cloud's object storage, written in
     * pieces by the convert library (convert/convert.h explains layouts and pieces):
     * Azure a fixed VHD page blob (FIXED layout), GCP a gzip'd tar joined by compose
     * (CONCAT layout). Providers that import from snapshots (AWS EBS: disk_*) leave
     * image_format NULL. Every call is safe to repeat.
     * A provider with disk_* that also has image_* (AWS) converts into an image file only
     * when the migration asks for one (its "aws_import" field: "raw" or "vmdk"); the worker
     * picks the format, and AWS tells the two apart by fixed_size (raw > 0, vmdk 0). Such
     * a provider has no image_write: its pieces are objects, so a FIXED (raw) shard is sent
     * as one piece with its zeros written out, and image_finish joins npieces.
     *
     * image_format: the convert format the cloud imports ("vhd", "gce-tar").
     * image_begin: make (or find again) the image of a disk; fixed_size > 0 for FIXED
     *   layouts (created with that size, reading as zeros where nothing is written), 0 for
     *   CONCAT. ref (PROVIDER_REF_MAX) names it for the calls below.
     * image_write: FIXED: len bytes at absolute offset off (512-aligned, len a multiple of
     *   512 and at most 4 MiB, never all zeros: the writer skips those).
     * image_put_piece: CONCAT: piece i as one object, replacing any earlier copy (0 = head,
     *   1..nshards = shard i-1, nshards+1 = tail); len may be 0 (nothing to store).
     * image_finish: CONCAT: join pieces 0..npieces-1 in order, skipping empty ones (GCP:
     *   compose, at most 32 sources per call, in rounds) and remove the pieces; FIXED:
     *   nothing left to join (npieces 0). Then write into image the reference import
     *   takes as vm_launch_spec.boot_image / data_images (Azure: the blob URL; GCP:
     *   gs://bucket/object), PROVIDER_REF_MAX bytes.
     */
    const char *image_format;
    /* CONCAT: the most pieces image_finish can join (AWS: one multipart upload takes
     * S3_PARTS_MAX parts), 0 for no limit; the converter makes shards bigger to fit. */
    size_t image_pieces_max;
    int (*image_begin)(struct provider *p, const char *migration, const char *host,
                       const char *disk, unsigned long long fixed_size, char ref[PROVIDER_REF_MAX],
                       struct err *err);
    int (*image_write)(struct provider *p, const char *ref, unsigned long long off, const void *buf,
                       size_t len, struct err *err);
    int (*image_put_piece)(struct provider *p, const char *ref, size_t i, const void *buf,
                           size_t len, struct err *err);
    int (*image_finish)(struct provider *p, const char *ref, size_t npieces,
                        char image[PROVIDER_REF_MAX], struct err *err);
    /*
     * Rollback: delete every VM, image and disk or snapshot the migration created, found
     * by its tags, waiting until they are gone, so network_delete can follow. NULL when
     * network_delete already removes them (Azure: the resource group; GCP: instances,
     * disks and images first).
     */
    int (*teardown)(struct provider *p, const char *migration, struct err *err);
    /*
     * Rollback, once the cloud resources are gone: delete everything the migration stored
     * in the object storage ("xmigrate/<migration>/": chunks, manifests, image files),
     * however far it got; safe to repeat. *deleted counts the objects removed.
     */
    int (*storage_delete)(struct provider *p, const char *migration, long long *deleted,
                          struct err *err);
    /* Register the image from the boot disk, start the VM, wait until it runs. */
    int (*vm_launch)(struct provider *p, const struct vm_launch_spec *spec,
                     struct vm_launch_result *out, struct err *err);
    /* A header every PUT to a write URL must carry ("x-ms-blob-type: BlockBlob" for Azure),
     * handed to the agent with the URLs; NULL when none. */
    const char *write_header;
};

/* The table for a cloud, or NULL when xmigrate has none for it. */
const struct provider_ops *provider_find(const char *cloud);

/*
 * The network part of a blueprint (schemas/blueprint.json, already validated) as a
 * net_spec. -1 with a permanent err when it breaks a cap.
 */
int provider_net_spec(const json_t *blueprint, const char *migration, struct net_spec *out,
                      struct err *err);

#endif
