#include "gcp/gcs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

/* ---------------------------------------------------------------- names */

static int bucket_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int check_bucket(const char *bucket, struct err *err)
{
    size_t n = bucket ? strnlen(bucket, 64) : 0;
    if (n < 3 || n > 63)
        return err_set(err, ERR_PERMANENT, "gcs: a bucket name has 3 to 63 bytes");
    for (size_t i = 0; i < n; i++)
        if (!bucket_char(bucket[i]) && bucket[i] != '.' && bucket[i] != '-' && bucket[i] != '_')
            return err_set(err, ERR_PERMANENT,
                           "gcs: bucket name '%s' has a byte other than a-z, 0-9, '.', '-', '_'",
                           bucket);
    if (!bucket_char(bucket[0]) || !bucket_char(bucket[n - 1]))
        return err_set(err, ERR_PERMANENT,
                       "gcs: bucket name '%s' must start and end with a letter or digit", bucket);
    return 0;
}

static int check_name(const char *what, const char *name, int empty_ok, struct err *err)
{
    if (!name)
        return err_set(err, ERR_PERMANENT, "gcs: no %s", what);
    size_t n = strnlen(name, GCS_NAME_MAX + 1);
    if (n > GCS_NAME_MAX)
        return err_set(err, ERR_PERMANENT, "gcs: %s longer than %d bytes", what, GCS_NAME_MAX);
    if (!n && !empty_ok)
        return err_set(err, ERR_PERMANENT, "gcs: empty %s", what);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return err_set(err, ERR_PERMANENT, "gcs: %s has a control character", what);
    return 0;
}

static int check(const char *bucket, const char *object, struct err *err)
{
    return check_bucket(bucket, err) < 0 || check_name("object name", object, 0, err) < 0 ? -1 : 0;
}

/* "gcs <op> '<bucket>/<object>': " before the message. */
static int fail(struct err *err, const char *op, const char *bucket, const char *object)
{
    if (!object)
        return err_prefix(err, "gcs %s '%.63s'", op, bucket);
    return err_prefix(err, "gcs %s '%.63s/%.200s'", op, bucket, object);
}

/* <storage>/<api>/b/<bucket>/o[/<object>][?query]: new. */
static char *object_url(struct gcp *g, const char *api, const char *bucket, const char *object,
                        const char *query)
{
    char *enc = object ? gcp_encode(object, 0) : NULL;
    char *url = xasprintf("%s/%s/b/%s/o%s%s%s%s", gcp_storage_base(g), api, bucket, enc ? "/" : "",
                          enc ? enc : "", query ? "?" : "", query ? query : "");
    free(enc);
    return url;
}

/* ---------------------------------------------------------------- bucket */

int gcs_bucket_exists(struct gcp *g, const char *bucket, int *exists, struct err *err)
{
    *exists = 0;
    if (check_bucket(bucket, err) < 0)
        return -1;
    char *url = xasprintf("%s/storage/v1/b/%s", gcp_storage_base(g), bucket);
    json_t *got = NULL;
    int rc = gcp_json(g, "GET", url, NULL, 1, &got, err);
    free(url);
    *exists = got != NULL;
    json_decref(got);
    return rc;
}

int gcs_bucket_ensure(struct gcp *g, const char *bucket, const char *location, int expire_days,
                      struct err *err)
{
    if (check_bucket(bucket, err) < 0)
        return -1;
    if (!location || !location[0] || expire_days < 1)
        return err_set(err, ERR_PERMANENT, "gcs: bucket '%s' needs a location and an expiry",
                       bucket);
    char *url = xasprintf("%s/storage/v1/b/%s", gcp_storage_base(g), bucket);
    json_t *got = NULL, *body = NULL;
    int rc = gcp_json(g, "GET", url, NULL, 1, &got, err);
    if (rc < 0 || got)
        goto out;
    body = json_pack("{s:s, s:s, s:s, s:{s:{s:b}, s:s}, s:{s:[{s:{s:s}, s:{s:i, s:[s]}}]}}", "name",
                     bucket, "location", location, "storageClass", "STANDARD", "iamConfiguration",
                     "uniformBucketLevelAccess", "enabled", 1, "publicAccessPrevention", "enforced",
                     "lifecycle", "rule", "action", "type", "Delete", "condition", "age",
                     expire_days, "matchesPrefix", GCS_PREFIX);
    XM_ASSERT(body != NULL);
    char *create = xasprintf("%s/storage/v1/b?project=%s", gcp_storage_base(g), gcp_project(g));
    rc = gcp_json(g, "POST", create, body, 0, &got, err);
    free(create);
    if (rc < 0 && strcmp(gcp_last_reason(g), "conflict") == 0) {
        /* Made meanwhile by a concurrent run (ours: readable), or another project's. */
        if (gcp_json(g, "GET", url, NULL, 1, &got, err) == 0 && got)
            rc = 0;
        else
            rc = err_set(err, ERR_PERMANENT, "the bucket name '%s' is taken by another project",
                         bucket);
    }
out:
    json_decref(got);
    json_decref(body);
    free(url);
    return rc < 0 ? fail(err, "bucket", bucket, NULL) : 0;
}

/* ---------------------------------------------------------------- objects */

int gcs_put(struct gcp *g, const char *bucket, const char *object, const void *data, size_t len,
            struct err *err)
{
    if (check(bucket, object, err) < 0)
        return -1;
    char *name = gcp_encode(object, 0);
    char *q = xasprintf("uploadType=media&name=%s", name);
    char *url = object_url(g, "upload/storage/v1", bucket, NULL, q);
    struct gcp_request req = {.method = "POST",
                              .url = url,
                              .body = data ? data : "",
                              .body_len = len,
                              .content_type = "application/octet-stream"};
    struct http_response resp;
    http_response_init(&resp);
    int rc = gcp_call(g, &req, &resp, err);
    http_response_release(&resp);
    free(url);
    free(q);
    free(name);
    return rc < 0 ? fail(err, "put", bucket, object) : 0;
}

/* Bytes a resumable session holds, from a 308's "Range: bytes=0-N" (none: 0). */
static size_t persisted(const struct http_response *resp)
{
    const char *r = http_response_header(resp, "range");
    unsigned long long first, last;
    if (r && sscanf(r, "bytes=%llu-%llu", &first, &last) == 2 && first == 0)
        return (size_t)last + 1;
    return 0;
}

/* One PUT to the session: bytes [off, off+n) of len, or a status query (n 0, query 1).
 * 0 with *done or *have set from the answer; -1 with err. */
static int session_put(struct gcp *g, const char *session, const char *data, size_t off, size_t n,
                       size_t len, int query, int *done, size_t *have, struct err *err)
{
    char range[96];
    if (query || len == 0)
        snprintf(range, sizeof(range), "Content-Range: bytes */%zu", len);
    else
        snprintf(range, sizeof(range), "Content-Range: bytes %zu-%zu/%zu", off, off + n - 1, len);
    struct gcp_request req = {.method = "PUT",
                              .url = session,
                              .headers = {range},
                              .n_headers = 1,
                              .body = query || !n ? "" : data + off,
                              .body_len = query ? 0 : n,
                              .content_type = "application/octet-stream",
                              .no_retry = 1,
                              .ok_status = 308};
    struct http_response resp;
    http_response_init(&resp);
    int rc = gcp_call(g, &req, &resp, err);
    if (rc == 0) {
        *done = resp.status != 308;
        *have = *done ? len : persisted(&resp);
    }
    http_response_release(&resp);
    return rc;
}

int gcs_put_resumable(struct gcp *g, const char *bucket, const char *object, const void *data,
                      size_t len, size_t chunk, int *resumes, struct err *err)
{
    if (resumes)
        *resumes = 0;
    if (check(bucket, object, err) < 0)
        return -1;
    if (!chunk)
        chunk = GCS_RESUMABLE_CHUNK;
    chunk = (chunk + GCS_CHUNK_ALIGN - 1) / GCS_CHUNK_ALIGN * GCS_CHUNK_ALIGN;
    char *name = gcp_encode(object, 0);
    char *q = xasprintf("uploadType=resumable&name=%s", name);
    char *url = object_url(g, "upload/storage/v1", bucket, NULL, q);
    char len_hdr[64];
    snprintf(len_hdr, sizeof(len_hdr), "X-Upload-Content-Length: %zu", len);
    struct gcp_request start = {
        .method = "POST",
        .url = url,
        .headers = {"X-Upload-Content-Type: application/octet-stream", len_hdr},
        .n_headers = 2,
        .body = "{}",
        .body_len = 2};
    struct http_response resp;
    http_response_init(&resp);
    char *session = NULL;
    int rc = gcp_call(g, &start, &resp, err);
    if (rc == 0) {
        const char *loc = http_response_header(&resp, "location");
        if (loc && loc[0])
            session = xstrdup(loc);
        else
            rc = err_set(err, ERR_TRANSIENT, "the upload session reply has no Location");
    }
    http_response_release(&resp);

    /* Each round sends the next chunk; a round that moves nothing forward (a cut
     * transfer, a 5xx) counts as a stall, after which the session is asked what it kept. */
    size_t off = 0;
    int done = 0, stalls = 0;
    long wait = 100;
    while (rc == 0 && !done) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t have = off;
        struct err e = {0};
        int sent = session_put(g, session, data, off, n, len, 0, &done, &have, &e);
        if (sent == 0 && (done || have > off)) {
            off = have;
            stalls = 0;
            continue;
        }
        if (sent < 0 && e.kind == ERR_PERMANENT) {
            rc = -1;
            if (err)
                *err = e;
            break;
        }
        if (++stalls >= GCS_RESUME_TRIES) {
            rc = err_set(err, ERR_TRANSIENT, "no progress in %d tries: %s", stalls,
                         e.msg[0] ? e.msg : "the session kept nothing");
            break;
        }
        gcp_sleep_ms(wait);
        wait = wait < 5000 ? wait * 2 : wait;
        if (resumes)
            (*resumes)++;
        if (session_put(g, session, data, 0, 0, len, 1, &done, &have, &e) == 0)
            off = have;
        else if (e.kind == ERR_PERMANENT) {
            rc = -1;
            if (err)
                *err = e;
        }
    }
    free(session);
    free(url);
    free(q);
    free(name);
    return rc < 0 ? fail(err, "resumable upload", bucket, object) : 0;
}

int gcs_get(struct gcp *g, const char *bucket, const char *object, unsigned long long off,
            size_t len, size_t max, char **data, size_t *n, struct err *err)
{
    *data = NULL;
    *n = 0;
    if (check(bucket, object, err) < 0)
        return -1;
    char *url = object_url(g, "storage/v1", bucket, object, "alt=media");
    char range[96];
    snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", off, off + len - 1);
    /* Room for an error document beyond max; the object itself is held to max below. */
    struct gcp_request req = {.method = "GET",
                              .url = url,
                              .headers = {range},
                              .n_headers = len ? 1 : 0,
                              .max_response = max + 65536};
    struct http_response resp;
    http_response_init(&resp);
    int rc = gcp_call(g, &req, &resp, err);
    if (rc == 0 && resp.body_len > max)
        rc = err_set(err, ERR_PERMANENT, "the object is over %zu bytes", max);
    if (rc == 0) {
        *data = resp.body ? resp.body : xstrdup("");
        *n = resp.body_len;
        resp.body = NULL;
    }
    http_response_release(&resp);
    free(url);
    return rc < 0 ? fail(err, "get", bucket, object) : 0;
}

int gcs_stat(struct gcp *g, const char *bucket, const char *object, json_t **obj, struct err *err)
{
    *obj = NULL;
    if (check(bucket, object, err) < 0)
        return -1;
    char *url = object_url(g, "storage/v1", bucket, object, NULL);
    int rc = gcp_json(g, "GET", url, NULL, 1, obj, err);
    free(url);
    return rc < 0 ? fail(err, "stat", bucket, object) : 0;
}

int gcs_list(struct gcp *g, const char *bucket, const char *prefix, struct gcs_object **objs,
             size_t *n, struct err *err)
{
    *objs = NULL;
    *n = 0;
    if (check_bucket(bucket, err) < 0 || check_name("prefix", prefix, 1, err) < 0)
        return -1;
    char *pfx = gcp_encode(prefix, 0);
    char *token = NULL;
    int rc = 0;
    do {
        char *tq = token ? gcp_encode(token, 0) : NULL;
        char *q =
            xasprintf("prefix=%s&maxResults=1000%s%s", pfx, tq ? "&pageToken=" : "", tq ? tq : "");
        char *url = object_url(g, "storage/v1", bucket, NULL, q);
        json_t *page = NULL;
        rc = gcp_json(g, "GET", url, NULL, 0, &page, err);
        free(url);
        free(q);
        free(tq);
        free(token);
        token = NULL;
        if (rc < 0)
            break;
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(page, "items"), i, it)
        {
            const char *name = json_string_value(json_object_get(it, "name"));
            const char *size = json_string_value(json_object_get(it, "size"));
            if (!name || *n >= GCS_LIST_MAX)
                continue;
            *objs = xrealloc(*objs, sizeof(**objs) * (*n + 1));
            (*objs)[*n].name = xstrdup(name);
            (*objs)[*n].size = size ? strtoull(size, NULL, 10) : 0;
            (*n)++;
        }
        const char *next = json_string_value(json_object_get(page, "nextPageToken"));
        token = next && next[0] ? xstrdup(next) : NULL;
        json_decref(page);
    } while (token);
    free(pfx);
    if (rc < 0) {
        gcs_objects_free(*objs, *n);
        *objs = NULL;
        *n = 0;
        return fail(err, "list", bucket, prefix);
    }
    return 0;
}

void gcs_objects_free(struct gcs_object *objs, size_t n)
{
    for (size_t i = 0; objs && i < n; i++)
        free(objs[i].name);
    free(objs);
}

int gcs_delete(struct gcp *g, const char *bucket, const char *object, struct err *err)
{
    if (check(bucket, object, err) < 0)
        return -1;
    char *url = object_url(g, "storage/v1", bucket, object, NULL);
    struct gcp_request req = {.method = "DELETE", .url = url, .ok_404 = 1};
    struct http_response resp;
    http_response_init(&resp);
    int rc = gcp_call(g, &req, &resp, err);
    http_response_release(&resp);
    free(url);
    return rc < 0 ? fail(err, "delete", bucket, object) : 0;
}

/* ---------------------------------------------------------------- compose */

int gcs_compose(struct gcp *g, const char *bucket, const char *const *sources, size_t n,
                const char *dest, const json_t *metadata, struct err *err)
{
    if (check(bucket, dest, err) < 0)
        return -1;
    if (n < 1 || n > GCS_COMPOSE_MAX)
        return err_set(err, ERR_PERMANENT, "gcs compose '%s': %zu sources, not 1..%d", dest, n,
                       GCS_COMPOSE_MAX);
    json_t *src = json_array();
    for (size_t i = 0; i < n; i++) {
        if (check_name("source name", sources[i], 0, err) < 0) {
            json_decref(src);
            return -1;
        }
        json_array_append_new(src, json_pack("{s:s}", "name", sources[i]));
    }
    json_t *dst = json_pack("{s:s}", "contentType", "application/octet-stream");
    if (metadata)
        json_object_set(dst, "metadata", (json_t *)metadata);
    json_t *body = json_pack("{s:o, s:o}", "sourceObjects", src, "destination", dst);
    char *url = object_url(g, "storage/v1", bucket, dest, NULL);
    char *curl = xasprintf("%s/compose", url);
    json_t *out = NULL;
    int rc = gcp_json(g, "POST", curl, body, 0, &out, err);
    json_decref(out);
    json_decref(body);
    free(curl);
    free(url);
    return rc < 0 ? fail(err, "compose", bucket, dest) : 0;
}

int gcs_compose_all(struct gcp *g, const char *bucket, const char *const *sources, size_t n,
                    const char *dest, const char *tmp_prefix, const json_t *metadata, int *calls,
                    struct err *err)
{
    if (calls)
        *calls = 0;
    if (n == 0)
        return err_set(err, ERR_PERMANENT, "gcs compose '%s': no sources", dest);
    /* Each round turns groups of 32 into one temporary each, until one call is left. */
    char **level = xcalloc(n, sizeof(*level));
    for (size_t i = 0; i < n; i++)
        level[i] = xstrdup(sources[i]);
    char **made = NULL; /* every temporary, for the clean-up */
    size_t n_made = 0, count = n;
    int rc = 0, round = 0;
    while (rc == 0 && count > GCS_COMPOSE_MAX) {
        size_t groups = (count + GCS_COMPOSE_MAX - 1) / GCS_COMPOSE_MAX;
        char **next = xcalloc(groups, sizeof(*next));
        for (size_t gi = 0; gi < groups && rc == 0; gi++) {
            size_t first = gi * GCS_COMPOSE_MAX;
            size_t k = count - first < GCS_COMPOSE_MAX ? count - first : GCS_COMPOSE_MAX;
            next[gi] = xasprintf("%s%d.%zu", tmp_prefix, round, gi);
            made = xrealloc(made, sizeof(*made) * (n_made + 1));
            made[n_made++] = xstrdup(next[gi]);
            rc = gcs_compose(g, bucket, (const char *const *)level + first, k, next[gi], NULL, err);
            if (rc == 0 && calls)
                (*calls)++;
        }
        for (size_t i = 0; i < count; i++)
            free(level[i]);
        free(level);
        for (size_t i = 0; rc < 0 && i < groups; i++)
            free(next[i]);
        level = next;
        count = rc < 0 ? 0 : groups;
        round++;
    }
    if (rc == 0) {
        rc = gcs_compose(g, bucket, (const char *const *)level, count, dest, metadata, err);
        if (rc == 0 && calls)
            (*calls)++;
    }
    for (size_t i = 0; i < count; i++)
        free(level[i]);
    free(level);
    for (size_t i = 0; i < n_made; i++) {
        struct err ignored = {0};
        if (rc == 0 && gcs_delete(g, bucket, made[i], &ignored) < 0) {
            rc = -1;
            if (err)
                *err = ignored;
        }
        free(made[i]);
    }
    free(made);
    return rc;
}
