/*
 * s3image.c: pieces of a disk image in S3 joined by one multipart upload (see s3image.h).
 */
#include "aws/s3image.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

#define MARKER_MAX 256 /* bytes of a join marker */

/* ---------------------------------------------------------------- names */

int s3image_key(const char *migration, const char *host, const char *disk, const char *format,
                char *out, size_t size, struct err *err)
{
    if (!format || (strcmp(format, "raw") != 0 && strcmp(format, "vmdk") != 0))
        return err_set(err, ERR_PERMANENT, "s3 image: format '%.16s' is not raw or vmdk",
                       format ? format : "");
    int n = snprintf(out, size, S3_CHUNK_PREFIX "%s/%s/%s/image.%s", migration, host, disk, format);
    /* room for ".piece/NNNNNNN" and ".joined" after it */
    if (n < 0 || (size_t)n + 16 >= size || n + 16 > S3_KEY_MAX)
        return err_set(err, ERR_PERMANENT, "s3 image: the key of disk '%.64s' is too long", disk);
    return 0;
}

const char *s3image_format_of(const char *key)
{
    static const char *const formats[] = {"raw", "vmdk"};
    const char *dot = key ? strrchr(key, '.') : NULL;
    if (!dot || strstr(key, "/image.") != dot - 6)
        return NULL;
    for (size_t i = 0; i < XM_ARRAY_LEN(formats); i++)
        if (strcmp(dot + 1, formats[i]) == 0)
            return formats[i];
    return NULL;
}

static char *piece_key(const char *key, size_t i)
{
    return xasprintf("%s.piece/%07zu", key, i);
}

static char *marker_key(const char *key)
{
    return xasprintf("%s.joined", key);
}

/* ---------------------------------------------------------------- begin, pieces */

int s3image_begin(struct aws *a, const char *bucket, const char *key, struct err *err)
{
    char *marker = marker_key(key);
    int rc = s3_delete(a, bucket, marker, err);
    free(marker);
    return rc;
}

int s3image_put_piece(struct aws *a, const char *bucket, const char *key, size_t i, const void *buf,
                      size_t len, struct err *err)
{
    if (i >= S3IMAGE_PIECES_MAX)
        return err_set(err, ERR_PERMANENT, "s3 image '%.300s': piece %zu is out of range", key, i);
    char *name = piece_key(key, i);
    int rc = s3_put(a, bucket, name, len ? buf : NULL, len, NULL, NULL, err);
    free(name);
    if (rc < 0)
        err_prefix(err, "s3 image piece %zu", i);
    return rc;
}

/* ---------------------------------------------------------------- plan */

size_t s3image_plan(const uint64_t *sizes, size_t n, uint64_t part_min, uint64_t part_max,
                    struct s3image_seg **segs)
{
    XM_ASSERT(part_min > 0 && part_max >= 2 * part_min);
    struct s3image_seg *v = NULL;
    size_t nv = 0, cap = 0;
    int part = 1;
    uint64_t pending = 0; /* bytes in the open part (always < part_min) */
#define EMIT(P, O, L)                                                                              \
    do {                                                                                           \
        if (nv == cap) {                                                                           \
            cap = cap ? 2 * cap : 16;                                                              \
            v = xrealloc(v, cap * sizeof(*v));                                                     \
        }                                                                                          \
        v[nv++] = (struct s3image_seg){.piece = (P), .off = (O), .len = (L), .part = part};        \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        uint64_t off = 0;
        while (off < sizes[i]) {
            uint64_t rem = sizes[i] - off;
            if (pending == 0 && rem >= part_min) {
                /* A part of its own, copied; a rest too short to stand alone is avoided. */
                uint64_t take = rem;
                if (rem > part_max)
                    take = rem - part_max < part_min ? rem / 2 : part_max;
                EMIT(i, off, take);
                part++;
                off += take;
            } else if (pending == 0 || rem <= part_min - pending) {
                EMIT(i, off, rem); /* short: it waits for what follows */
                pending += rem;
                off += rem;
                if (pending >= part_min) {
                    part++;
                    pending = 0;
                }
            } else {
                /* Fill the open part up; the rest of the piece is copied if it can stand alone,
                 * else it joins the upload too (the part stays below 2 * part_min). */
                uint64_t need = part_min - pending;
                uint64_t take = rem - need >= part_min ? need : rem;
                EMIT(i, off, take);
                off += take;
                part++;
                pending = 0;
            }
        }
    }
#undef EMIT
    *segs = v;
    return nv;
}

/* ---------------------------------------------------------------- join */

struct listing {
    const char *prefix;
    size_t npieces;
    uint64_t *sizes;
    unsigned char *seen;
};

static int collect_piece(void *arg, const struct s3_object *obj, struct err *err)
{
    (void)err;
    struct listing *l = arg;
    char *end = NULL;
    const char *num = obj->key + strlen(l->prefix);
    unsigned long long i = strtoull(num, &end, 10);
    if (end != num + 7 || *end != '\0' || i >= l->npieces)
        return 0; /* not one of this join's pieces */
    l->sizes[i] = obj->size;
    l->seen[i] = 1;
    return 0;
}

/* 1 in *done when the marker says key was joined from npieces and key still has that ETag. */
static int joined_before(struct aws *a, const char *bucket, const char *key, size_t npieces,
                         struct s3_object_info *image, int *done, struct err *err)
{
    *done = 0;
    char *marker = marker_key(key), *body = NULL;
    size_t len = 0;
    struct s3_object_info info;
    int rc = s3_head(a, bucket, marker, &info, err);
    if (rc == 0 && info.exists)
        rc = s3_get(a, bucket, marker, 0, 0, MARKER_MAX, &body, &len, err);
    if (rc == 0 && body && s3_head(a, bucket, key, image, err) < 0)
        rc = -1;
    if (rc == 0 && body && image->exists) {
        size_t n = 0;
        char etag[S3_ETAG_MAX];
        *done = sscanf(body, "%zu %127s", &n, etag) == 2 && n == npieces &&
                strcmp(etag, image->etag) == 0;
    }
    free(body);
    free(marker);
    return rc;
}

/* Abort every upload of key left by a writer that died; count them. */
static int abort_abandoned(struct aws *a, const char *bucket, const char *key, int *count,
                           struct err *err)
{
    char **ids = NULL;
    size_t n = 0;
    if (s3_multipart_uploads(a, bucket, key, &ids, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = s3_multipart_abort(a, bucket, key, ids[i], err);
    *count = (int)n;
    aws_strv_free(ids, n);
    return rc;
}

/* Part `part` from segs[0..k) (all of that part): copied or downloaded and uploaded. */
static int send_part(struct aws *a, const char *bucket, const char *key, const char *upload,
                     const struct s3image_seg *segs, size_t k, struct s3_part *out, int *copied,
                     struct err *err)
{
    out->number = segs[0].part;
    out->size = 0;
    for (size_t i = 0; i < k; i++)
        out->size += segs[i].len;
    if (k == 1) {
        char *src = piece_key(key, segs[0].piece);
        int rc = s3_multipart_copy_part(a, bucket, key, upload, out->number, src, segs[0].off,
                                        segs[0].len, out->etag, err);
        free(src);
        if (rc < 0)
            return err_prefix(err, "piece %zu", segs[0].piece);
        (*copied)++;
        return 0;
    }
    unsigned char *buf = xmalloc((size_t)out->size);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i++) {
        char *src = piece_key(key, segs[i].piece);
        size_t got = 0;
        rc = s3_get_into(a, bucket, src, segs[i].off, buf + at, (size_t)segs[i].len, &got, err);
        if (rc == 0 && got != segs[i].len)
            rc = err_set(err, ERR_PERMANENT, "shorter than listed (%zu of %" PRIu64 " bytes)", got,
                         segs[i].len);
        if (rc < 0)
            err_prefix(err, "piece %zu", segs[i].piece);
        at += got;
        free(src);
    }
    if (rc == 0 && s3_multipart_upload_part(a, bucket, key, upload, out->number, buf,
                                            (size_t)out->size, out->etag, err) < 0)
        rc = err_prefix(err, "pieces %zu..%zu", segs[0].piece, segs[k - 1].piece);
    free(buf);
    return rc;
}

/* The multipart upload itself: every piece there, the parts, complete, the marker. */
static int upload_pieces(struct aws *a, const char *bucket, const char *key, size_t npieces,
                         struct s3image_report *rep, struct err *err)
{
    struct listing l = {.npieces = npieces};
    char *prefix = xasprintf("%s.piece/", key);
    l.prefix = prefix;
    l.sizes = xcalloc(npieces, sizeof(*l.sizes));
    l.seen = xcalloc(npieces, 1);
    struct s3image_seg *segs = NULL;
    struct s3_part *parts = NULL;
    char *upload = NULL;
    int rc = -1;
    if (s3_list(a, bucket, prefix, 0, collect_piece, &l, err) < 0)
        goto out;
    for (size_t i = 0; i < npieces; i++)
        if (!l.seen[i]) {
            err_set(err, ERR_PERMANENT, "piece %zu of %zu is missing", i, npieces);
            goto out;
        }
    size_t nseg = s3image_plan(l.sizes, npieces, S3IMAGE_PART_MIN, S3IMAGE_PART_MAX, &segs);
    if (nseg == 0) {
        err_set(err, ERR_PERMANENT, "its %zu pieces hold no bytes", npieces);
        goto out;
    }
    int nparts = segs[nseg - 1].part;
    if (nparts > S3_PARTS_MAX) {
        err_set(err, ERR_PERMANENT, "%d parts are more than S3 takes (%d)", nparts, S3_PARTS_MAX);
        goto out;
    }
    if (abort_abandoned(a, bucket, key, &rep->aborted, err) < 0)
        goto out;
    upload = s3_multipart_create(a, bucket, key, "application/octet-stream", err);
    if (!upload)
        goto out;
    parts = xcalloc((size_t)nparts, sizeof(*parts));
    for (size_t i = 0, k; i < nseg; i += k) {
        for (k = 1; i + k < nseg && segs[i + k].part == segs[i].part; k++)
            ;
        if (send_part(a, bucket, key, upload, segs + i, k, &parts[segs[i].part - 1], &rep->copied,
                      err) < 0)
            goto out;
        rep->size += parts[segs[i].part - 1].size;
    }
    rep->parts = nparts;
    if (s3_multipart_complete(a, bucket, key, upload, parts, (size_t)nparts, rep->etag, err) < 0)
        goto out;
    free(upload);
    upload = NULL; /* completed: nothing to abort */
    struct s3_object_info info;
    if (s3_head(a, bucket, key, &info, err) < 0)
        goto out;
    if (!info.exists || info.size != rep->size) {
        err_set(err, ERR_TRANSIENT, "joined %" PRIu64 " bytes but S3 shows %" PRIu64, rep->size,
                info.size);
        goto out;
    }
    char body[MARKER_MAX], *marker = marker_key(key);
    int n = snprintf(body, sizeof(body), "%zu %s\n", npieces, info.etag);
    rc = s3_put(a, bucket, marker, body, (size_t)n, NULL, NULL, err);
    free(marker);
    xstrlcpy(rep->etag, info.etag, sizeof(rep->etag));
out:
    if (upload) {
        struct err ignored = {0}; /* the first error is the one to report */
        s3_multipart_abort(a, bucket, key, upload, &ignored);
    }
    free(upload);
    free(parts);
    free(segs);
    free(l.sizes);
    free(l.seen);
    free(prefix);
    return rc;
}

int s3image_join(struct aws *a, const char *bucket, const char *key, size_t npieces,
                 struct s3image_report *report, struct err *err)
{
    struct s3image_report local;
    struct s3image_report *rep = report ? report : &local;
    memset(rep, 0, sizeof(*rep));
    if (npieces == 0 || npieces > S3IMAGE_PIECES_MAX)
        return err_set(err, ERR_PERMANENT, "s3 image '%.300s': %zu pieces is out of range", key,
                       npieces);
    struct s3_object_info image;
    int done = 0;
    if (joined_before(a, bucket, key, npieces, &image, &done, err) < 0)
        return err_prefix(err, "s3 image '%.300s'", key);
    if (done) {
        rep->already = 1;
        rep->size = image.size;
        xstrlcpy(rep->etag, image.etag, sizeof(rep->etag));
    } else if (upload_pieces(a, bucket, key, npieces, rep, err) < 0) {
        return err_prefix(err, "s3 image '%.300s': join", key);
    }
    char *prefix = xasprintf("%s.piece/", key);
    int rc = s3_delete_prefix(a, bucket, prefix, 0, NULL, err);
    free(prefix);
    return rc < 0 ? err_prefix(err, "s3 image '%.300s': remove pieces", key) : 0;
}
