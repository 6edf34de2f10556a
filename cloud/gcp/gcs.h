/*
 * gcs: the Cloud Storage JSON API operations xmigrate needs, over gcp_call(): the
 * migration bucket (uniform bucket-level access, public access prevention enforced, a
 * location, a lifecycle that deletes the chunk prefix), objects (simple upload, resumable
 * upload that resumes after a dropped connection, ranged download, list, delete) and
 * compose (at most GCS_COMPOSE_MAX sources per call, so gcs_compose_all() joins more in
 * rounds through temporary objects).
 *
 * URLs: <storage>/storage/v1/b/<bucket>/o/<object> for metadata and media
 * (?alt=media), <storage>/upload/storage/v1/b/<bucket>/o for uploads; object names are
 * percent-encoded whole ('/' too). Bucket names are checked (3..63 bytes of [a-z0-9._-],
 * letter or digit at both ends); object names are 1..GCS_NAME_MAX bytes without control
 * characters. A bad name is a permanent error before anything is sent.
 *
 * Every call blocks and is retried as gcp.h says; a resumable upload additionally
 * survives a transfer cut part-way: it asks the session how much it persisted
 * (PUT with "Content-Range: bytes * /total") and sends the rest, giving up after
 * GCS_RESUME_TRIES rounds in a row without progress. Messages name bucket and object, never a
 * token.
 */
#ifndef XM_GCS_H
#define XM_GCS_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"
#include "gcp/gcp.h"

#define GCS_NAME_MAX 1024
#define GCS_COMPOSE_MAX 32             /* source objects in one compose call */
#define GCS_CHUNK_ALIGN (256 * 1024)   /* resumable chunks are multiples of this */
#define GCS_RESUMABLE_CHUNK (8u << 20) /* default chunk of a resumable upload */
#define GCS_PREFIX "xmigrate/"         /* what the bucket lifecycle deletes */
#define GCS_LIST_MAX 100000            /* objects one gcs_list() returns at most */
#define GCS_RESUME_TRIES 6 /* rounds without progress before a resumable upload gives up */

/* Whether the bucket exists (and is ours to read) in *exists. Blocks. */
int gcs_bucket_exists(struct gcp *g, const char *bucket, int *exists, struct err *err);

/*
 * Make the bucket exist in location (a region, "us-central1") with uniform access and
 * a lifecycle deleting GCS_PREFIX objects after expire_days; an existing bucket of ours
 * is left as it is. A name another project owns is a permanent error.
 */
int gcs_bucket_ensure(struct gcp *g, const char *bucket, const char *location, int expire_days,
                      struct err *err);

/* Upload len bytes as one request (uploadType=media). */
int gcs_put(struct gcp *g, const char *bucket, const char *object, const void *data, size_t len,
            struct err *err);

/*
 * Upload len bytes through a resumable session in chunks of chunk bytes (0:
 * GCS_RESUMABLE_CHUNK; rounded up to GCS_CHUNK_ALIGN). A cut transfer is resumed from
 * what the session persisted. *resumes (may be NULL) counts the resumptions.
 */
int gcs_put_resumable(struct gcp *g, const char *bucket, const char *object, const void *data,
                      size_t len, size_t chunk, int *resumes, struct err *err);

/*
 * Download: the whole object (len 0) or len bytes from off, at most max bytes (a bigger
 * object is a permanent error). *data new (NUL-terminated), *n its length.
 */
int gcs_get(struct gcp *g, const char *bucket, const char *object, unsigned long long off,
            size_t len, size_t max, char **data, size_t *n, struct err *err);

/* An object's resource (new: name, size as a string, metadata, ...) in *obj, or NULL
 * when there is no such object. */
int gcs_stat(struct gcp *g, const char *bucket, const char *object, json_t **obj, struct err *err);

struct gcs_object {
    char *name;
    unsigned long long size;
};

/* Every object whose name starts with prefix, in name order: new array (gcs_objects_free). */
int gcs_list(struct gcp *g, const char *bucket, const char *prefix, struct gcs_object **objs,
             size_t *n, struct err *err);
void gcs_objects_free(struct gcs_object *objs, size_t n);

/* Delete an object; one that is already gone is not an error. */
int gcs_delete(struct gcp *g, const char *bucket, const char *object, struct err *err);

/* Compose 1..GCS_COMPOSE_MAX sources, in order, into dest (replacing it), with custom
 * metadata (a JSON object of strings, borrowed; NULL for none). */
int gcs_compose(struct gcp *g, const char *bucket, const char *const *sources, size_t n,
                const char *dest, const json_t *metadata, struct err *err);

/*
 * Compose any number of sources in order into dest: rounds of at most GCS_COMPOSE_MAX
 * through temporary objects named "<tmp_prefix><round>.<i>", deleted afterwards. The
 * sources are left in place. *calls (may be NULL) counts compose calls made.
 */
int gcs_compose_all(struct gcp *g, const char *bucket, const char *const *sources, size_t n,
                    const char *dest, const char *tmp_prefix, const json_t *metadata, int *calls,
                    struct err *err);

#endif
