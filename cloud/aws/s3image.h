/*
 * s3image: a disk image (raw or stream-optimized VMDK) written into S3 in pieces by any
 * number of converters, then joined into the one object VM Import reads (DESIGN.md
 * section 4, step 2, the AWS "Option").
 *
 * Naming. The image of a disk is xmigrate/<migration>/<host>/<disk>/image.<raw|vmdk>
 * (under the chunk prefix, so the bucket lifecycle also expires it); piece i (0 = head,
 * 1..n = shards, n+1 = tail, see convert/convert.h) is "<image>.piece/<i, 7 digits>", an
 * empty piece an empty object, so that a missing one is an error rather than a hole.
 *
 * Joining is one multipart upload of the pieces in order. S3 wants every part but the
 * last to be at least S3IMAGE_PART_MIN (5 MiB; moto enforces it on complete too) and at
 * most 5 GiB, so s3image_plan() cuts the byte stream of the pieces into parts: a run of
 * bytes from one piece that can stand alone is copied inside S3 (UploadPartCopy, with a
 * byte range: nothing is downloaded); small pieces next to each other, and the first bytes
 * of the piece after them when they are still short, are downloaded and uploaded as one
 * part. Parts stay below 2 x S3IMAGE_PART_MIN when they are uploaded.
 *
 * Safe to repeat. A join first aborts every multipart upload of the image left by a
 * writer that died, and ends by writing a marker "<image>.joined" (the piece count and the
 * image's ETag) before it removes the pieces: a join run again after a crash between
 * complete and removal finds the marker agreeing with the image and only removes what is
 * left; nothing is joined twice. s3image_begin() removes the marker, so converting a disk
 * again really joins its new pieces.
 *
 * Rollback needs nothing of its own here: everything lives under the migration's prefix,
 * which the provider's storage_delete removes.
 *
 * Errors name the image key (which names migration, host and disk) and the piece. Every
 * function blocks on S3; nothing logs. Pointers are borrowed for the call.
 */
#ifndef XM_S3IMAGE_H
#define XM_S3IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "aws/aws.h"
#include "aws/s3.h"
#include "err.h"

#define S3IMAGE_PART_MIN ((uint64_t)5 << 20) /* every part but the last */
#define S3IMAGE_PART_MAX ((uint64_t)5 << 30) /* any part */
#define S3IMAGE_PIECES_MAX 1000002           /* head + CONVERT_SHARDS_MAX shards + tail */

/* Image key of a disk for format "raw" or "vmdk" into out (S3_KEY_MAX + 1 bytes). 0, or -1
 * with a permanent err when the names do not fit or the format is neither. */
int s3image_key(const char *migration, const char *host, const char *disk, const char *format,
                char *out, size_t size, struct err *err);

/* The format ("raw", "vmdk") an image key ends in, or NULL. Borrowed static string. */
const char *s3image_format_of(const char *key);

/* Start (again) the image at key: its join marker is removed. 0, or -1 with err. */
int s3image_begin(struct aws *a, const char *bucket, const char *key, struct err *err);

/* Store piece i (len may be 0: an empty object), replacing an earlier copy. 0 or -1. */
int s3image_put_piece(struct aws *a, const char *bucket, const char *key, size_t i, const void *buf,
                      size_t len, struct err *err);

/* One run of bytes of one piece that goes into part `part` (1-based). */
struct s3image_seg {
    size_t piece;
    uint64_t off, len;
    int part;
};

/*
 * Cut pieces of sizes[0..n) (zeros allowed and skipped) into parts as described above,
 * with part_min / part_max instead of S3's values (tests use small ones; part_max >=
 * 2 * part_min). *segs is a new array (free()) in order; a part with one segment is
 * copied, one with several is uploaded. Returns the number of segments (0: no bytes);
 * segs[last].part is the number of parts.
 */
size_t s3image_plan(const uint64_t *sizes, size_t n, uint64_t part_min, uint64_t part_max,
                    struct s3image_seg **segs);

/* What s3image_join did, for logs and tests. */
struct s3image_report {
    int already;   /* 1: an earlier run had joined them; only leftovers removed */
    int parts;     /* parts of the upload */
    int copied;    /* parts copied inside S3 */
    int aborted;   /* abandoned uploads of the image aborted first */
    uint64_t size; /* bytes of the image */
    char etag[S3_ETAG_MAX];
};

/*
 * Join pieces 0..npieces-1 of key into key (replacing it) as described above, then
 * remove the pieces. Every piece must exist (else a permanent error naming it). report
 * may be NULL. 0, or -1 with err (the upload is aborted on the way out).
 */
int s3image_join(struct aws *a, const char *bucket, const char *key, size_t npieces,
                 struct s3image_report *report, struct err *err);

#endif
