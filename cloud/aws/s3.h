/*
 * s3: the S3 operations xmigrate needs, over aws_call(): the migration bucket (created
 * encrypted, with public access blocked and a lifecycle that expires the chunk prefix),
 * single-request objects (put, ranged get, head, delete, list, delete by prefix),
 * multipart uploads (create, upload part, complete, abort, list parts for a resume) and
 * presigned GET/PUT URLs for the clone agent, which never holds credentials.
 *
 * Addressing is path-style on the configured S3 endpoint: <endpoint>/<bucket>/<key>.
 * Bucket names are checked (3..63 bytes of [a-z0-9.-], a letter or digit at both ends, no
 * ".."); keys are 1..S3_KEY_MAX bytes without control characters (they travel in XML
 * bodies) and are URI-encoded with sigv4_uri_encode(key, 1). A bad name is a permanent
 * error before anything is sent.
 *
 * Every call blocks: it is one or more aws_call()s, each signed, retried on throttling,
 * 5xx and resets up to the client's attempt limit ("gave up after N attempts: <last
 * failure>", transient), with AWS errors mapped to struct err (see aws.h). Messages name
 * the bucket and key (cut to fit) and never a credential, a signature or a presigned URL.
 *
 * Ownership: every pointer argument is borrowed for the call. Results are said to be new
 * (free() them) or written to caller storage. Nothing here logs or keeps state between
 * calls; one struct aws per thread, as aws.h says.
 */
#ifndef XM_S3_H
#define XM_S3_H

#include <stddef.h>
#include <stdint.h>

#include "aws/aws.h"
#include "err.h"

#define S3_KEY_MAX 1024             /* bytes in an object key (S3's own limit) */
#define S3_ETAG_MAX 128             /* an ETag as S3 returns it, quotes kept, plus NUL */
#define S3_PAGE_MAX 1000            /* keys per list page and per DeleteObjects batch */
#define S3_PARTS_MAX 10000          /* parts in one multipart upload */
#define S3_META_MAX 8               /* x-amz-meta-* headers on one put */
#define S3_META_BYTES 2048          /* their names and values together (S3's limit) */
#define S3_UPLOAD_ID_MAX 1024       /* bytes in a multipart upload id */
#define S3_EXPIRE_DAYS_MAX 36500    /* lifecycle expiry of the chunk prefix */
#define S3_CHUNK_PREFIX "xmigrate/" /* what the bucket lifecycle expires */

/* ---- bucket ------------------------------------------------------------------------ */

/*
 * Make sure bucket exists in the client's region and is set up for a migration; safe to
 * call again (and from several processes). If the bucket is missing it is created (with
 * a LocationConstraint outside us-east-1); if it exists it must be ours and in our
 * region (else a permanent error naming it). Then, every time, it (re)applies:
 *   - default encryption SSE-S3 (AES256),
 *   - the public access block with all four settings true,
 *   - the lifecycle configuration: objects under S3_CHUNK_PREFIX expire after
 *     expire_days (1..S3_EXPIRE_DAYS_MAX) and incomplete multipart uploads anywhere in
 *     the bucket are aborted after a day.
 * These PUTs replace what was there: the bucket belongs to xmigrate alone. 0, or -1 err.
 */
int s3_bucket_ensure(struct aws *a, const char *bucket, int expire_days, struct err *err);

/* ---- objects ------------------------------------------------------------------------ */

struct s3_put_opts {
    const char *content_type; /* NULL: application/octet-stream */
    const char *const *meta;  /* NULL, or name, value, ..., NULL: sent as x-amz-meta-<name>;
                               * names [a-z0-9-], values printable ASCII; see S3_META_* */
    int checksum_sha256;      /* send x-amz-checksum-sha256: S3 checks the body against it */
};

/*
 * Store len bytes at body (NULL when len is 0) as bucket/key in one PUT; opts may be
 * NULL. etag (caller storage, may be NULL) receives the new object's ETag. 0, or -1 err.
 */
int s3_put(struct aws *a, const char *bucket, const char *key, const void *body, size_t len,
           const struct s3_put_opts *opts, char etag[S3_ETAG_MAX], struct err *err);

/*
 * Read bucket/key into a new buffer (*body, NUL-terminated after *body_len bytes; free()
 * it). With off and len both 0 the whole object; otherwise the byte range off..off+len-1
 * (len 0: to the end), which may come back shorter at the end of the object; a range
 * starting at or after the end is a permanent error (InvalidRange). More than max bytes
 * (0: HTTP_DEFAULT_MAX_RESPONSE) is a permanent error. A missing object is a permanent
 * error naming NoSuchKey. 0, or -1 with err and *body NULL.
 */
int s3_get(struct aws *a, const char *bucket, const char *key, uint64_t off, uint64_t len,
           size_t max, char **body, size_t *body_len, struct err *err);

/*
 * Read the range off..off+cap-1 of bucket/key into buf (caller storage, cap > 0 bytes);
 * *got is how many bytes arrived (fewer than cap only at the end of the object). Errors
 * as s3_get. 0, or -1 with err.
 */
int s3_get_into(struct aws *a, const char *bucket, const char *key, uint64_t off, void *buf,
                size_t cap, size_t *got, struct err *err);

struct s3_object_info {
    int exists;             /* 0: no such key (size and etag are then zero / "") */
    uint64_t size;          /* Content-Length */
    char etag[S3_ETAG_MAX]; /* as S3 returns it, quotes kept */
};

/* HEAD bucket/key into *info (caller storage). A missing key is not an error. 0 or -1. */
int s3_head(struct aws *a, const char *bucket, const char *key, struct s3_object_info *info,
            struct err *err);

/* Delete bucket/key; deleting a missing key succeeds (S3 answers 204 or 404). 0 or -1. */
int s3_delete(struct aws *a, const char *bucket, const char *key, struct err *err);

/* One listed object, borrowed for the duration of the callback. */
struct s3_object {
    const char *key;
    uint64_t size;
    const char *etag;
};

/* Called once per object in key order: 0 to go on, -1 (fill err) to stop the listing. */
typedef int (*s3_list_fn)(void *arg, const struct s3_object *obj, struct err *err);

/*
 * List every object whose key starts with prefix ("" for all) with ListObjectsV2, page
 * objects per request (0: S3_PAGE_MAX; at most S3_PAGE_MAX), calling fn for each. 0, or
 * -1 with err (fn's own, or the listing's).
 */
int s3_list(struct aws *a, const char *bucket, const char *prefix, size_t page, s3_list_fn fn,
            void *arg, struct err *err);

/*
 * Delete every object whose key starts with prefix (not empty: a whole bucket is never
 * wiped by accident): list a page (page keys, 0: S3_PAGE_MAX), delete it with one
 * DeleteObjects (quiet, Content-MD5), go on. *deleted (may be NULL) counts the keys
 * deleted, also when failing half-way. 0, or -1 with err naming the first key S3 refused.
 */
int s3_delete_prefix(struct aws *a, const char *bucket, const char *prefix, size_t page,
                     size_t *deleted, struct err *err);

/* ---- multipart uploads --------------------------------------------------------------- */

/* One part: number 1..S3_PARTS_MAX, its ETag (from upload or list), size (from list). */
struct s3_part {
    int number;
    uint64_t size;
    char etag[S3_ETAG_MAX];
};

/*
 * Start a multipart upload of bucket/key (content_type NULL: application/octet-stream).
 * Returns the upload id (new), or NULL with err.
 */
char *s3_multipart_create(struct aws *a, const char *bucket, const char *key,
                          const char *content_type, struct err *err);

/*
 * Upload part number (1..S3_PARTS_MAX) of len bytes at body; every part but the last must
 * be at least 5 MiB (S3 checks that on complete). Uploading a number again replaces that
 * part. etag (caller storage) receives the part's ETag. 0, or -1 with err.
 */
int s3_multipart_upload_part(struct aws *a, const char *bucket, const char *key,
                             const char *upload_id, int number, const void *body, size_t len,
                             char etag[S3_ETAG_MAX], struct err *err);

/*
 * Complete the upload from n parts (numbers strictly ascending, ETags as returned; sizes
 * ignored). S3 can report a failure inside a 200 reply; that is an error here too
 * (transient for InternalError and SlowDown). etag (may be NULL) receives the object's
 * ETag. 0, or -1 with err.
 */
int s3_multipart_complete(struct aws *a, const char *bucket, const char *key, const char *upload_id,
                          const struct s3_part *parts, size_t n, char etag[S3_ETAG_MAX],
                          struct err *err);

/* Abort the upload and drop its parts; an upload already gone (NoSuchUpload) is fine. */
int s3_multipart_abort(struct aws *a, const char *bucket, const char *key, const char *upload_id,
                       struct err *err);

/*
 * The parts uploaded so far, ascending (ListParts, paged), to resume an upload: *parts is
 * a new array of *n entries (NULL when none; free() it). 0, or -1 with err (NoSuchUpload
 * when the upload was completed or aborted).
 */
int s3_multipart_list_parts(struct aws *a, const char *bucket, const char *key,
                            const char *upload_id, struct s3_part **parts, size_t *n,
                            struct err *err);

/*
 * UploadPartCopy: part number (1..S3_PARTS_MAX) of the upload of bucket/key is the byte
 * range off..off+len-1 of bucket/src_key (same bucket; len 1..5 GiB; the same size rules
 * as s3_multipart_upload_part). The copy happens inside S3: nothing is downloaded. etag
 * (caller storage) receives the part's ETag. A failure S3 reports inside a 200 reply is an
 * error too. 0, or -1 with err naming the source key.
 */
int s3_multipart_copy_part(struct aws *a, const char *bucket, const char *key,
                           const char *upload_id, int number, const char *src_key, uint64_t off,
                           uint64_t len, char etag[S3_ETAG_MAX], struct err *err);

/*
 * The multipart uploads of exactly bucket/key still in progress (ListMultipartUploads
 * with the key as prefix, first S3_PAGE_MAX only), to abort ones a crashed writer left:
 * *ids is a new array of *n new strings (free with aws_strv_free). 0, or -1 with err.
 */
int s3_multipart_uploads(struct aws *a, const char *bucket, const char *key, char ***ids, size_t *n,
                         struct err *err);

/* ---- presigned URLs ------------------------------------------------------------------ */

/*
 * A URL that lets its holder send method ("GET", "PUT" or "HEAD") to bucket/key without
 * credentials for expires seconds (1..SIGV4_EXPIRES_MAX, 7 days; else a permanent error).
 * Only Host is signed and the payload is UNSIGNED-PAYLOAD. New string or NULL with err.
 * Does not block. The URL is a bearer credential for that request: never log it.
 */
char *s3_presign(struct aws *a, const char *method, const char *bucket, const char *key,
                 long expires, struct err *err);

#endif
