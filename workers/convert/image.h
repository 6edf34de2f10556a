/*
 * image.h: the convert worker's image-file target (clouds that import an image file:
 * Azure fixed VHD page blob, GCP composed tar.gz), on top of the sharded writers of
 * convert/convert.h and the provider's image_* operations.
 *
 * Every step of a disk must build the same plan, so the disk step puts the plan's
 * parameters into each shard's payload ("plan": format, size, shard size, created time,
 * id) and the shards pass them on to the finish step.
 */
#ifndef XM_CONVERT_WORKER_IMAGE_H
#define XM_CONVERT_WORKER_IMAGE_H

#include <jansson.h>
#include <stdint.h>

#include "convert.h"
#include "provider.h"

/* The "plan" member of a payload from params (new reference). */
json_t *image_plan_json(const struct convert_params *params);
/* The plan of payload member "plan", or NULL with a permanent err naming the disk. */
struct convert_plan *image_plan_from(const json_t *payload, const char *disk, struct err *err);

/*
 * The format a disk of migration mig is converted into, in out (16 bytes): the provider's
 * image_format; or, for a provider that also writes image files on request (AWS), the
 * migration's "aws_import" field when it is "raw" or "vmdk"; else "" (the provider's
 * disk_* path: EBS snapshots). 0, or -1 with err (Redis). Blocks on Redis.
 */
struct redisContext;
int image_format_for(struct redisContext *c, const char *mig, const struct provider_ops *ops,
                     char out[16], struct err *err);

/*
 * A convert_sink writing into the provider's image: FIXED layouts straight through
 * image_write; CONCAT layouts into memory, stored as one piece by image_sink_put(). A
 * provider without image_write (S3: objects, nothing sparse) takes FIXED layouts as
 * pieces too: the shard's range (image_sink_range) is kept in memory with its zeros
 * written out, so the piece holds every byte of the range.
 */
struct image_sink {
    struct convert_sink sink; /* hand &sink to the convert library */
    struct provider *p;
    const struct provider_ops *ops;
    const char *ref; /* borrowed */
    enum convert_layout layout;
    uint8_t *buf; /* CONCAT: the piece so far */
    size_t len, cap;
    uint64_t base, end; /* FIXED as pieces: the range of the output the piece covers */
    uint64_t written;   /* bytes handed to the provider */
};

void image_sink_init(struct image_sink *s, struct provider *p, const struct provider_ops *ops,
                     const char *ref, enum convert_layout layout);
/* 1 when the sink stores pieces (CONCAT layouts, and FIXED ones without image_write). */
int image_sink_pieces(const struct image_sink *s);
/* FIXED as pieces: the next piece covers output bytes [base, base + len). */
void image_sink_range(struct image_sink *s, uint64_t base, uint64_t len);
/* Pieces: store what was written as piece i (FIXED: zeros up to the end of its range) and
 * start the next piece empty. FIXED through image_write: no-op. */
int image_sink_put(struct image_sink *s, size_t piece, struct err *err);
void image_sink_release(struct image_sink *s);

/* A stable 16-byte image id for one disk (the VHD unique id, VMDK CID), so a disk step
 * that runs again plans the same image. */
void image_id_for(const char *migration, const char *host, const char *disk, uint8_t id[16]);

#endif
