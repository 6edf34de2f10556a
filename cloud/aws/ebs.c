#include "aws/ebs.h"

#include <errno.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xmalloc.h"

#define GIB ((long long)1 << 30)

/* ---------------------------------------------------------------- small helpers */

/* "snap-" followed by 1..EBS_ID_MAX-6 letters and digits: safe to put in a path. */
static int valid_snapshot_id(const char *id)
{
    if (!id || strncmp(id, "snap-", 5) != 0)
        return 0;
    size_t n = strlen(id);
    if (n <= 5 || n >= EBS_ID_MAX)
        return 0;
    for (const char *p = id + 5; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

static int check_id(const char *id, struct err *err)
{
    if (valid_snapshot_id(id))
        return 0;
    return err_set(err, ERR_PERMANENT, "ebs: '%.*s' is not a snapshot id", EBS_ID_MAX,
                   id ? id : "");
}

static int check_tags(const struct ebs_tags *t, struct err *err)
{
    const char *v[3] = {t->migration, t->host, t->disk};
    const char *what[3] = {"migration", "host", "disk"};
    for (int i = 0; i < 3; i++)
        if (!v[i] || !v[i][0] || strlen(v[i]) > EBS_TAG_VALUE_MAX)
            return err_set(err, ERR_PERMANENT, "ebs: the %s tag must be 1 to %d bytes", what[i],
                           EBS_TAG_VALUE_MAX);
    return 0;
}

/* Cut the string in buf (on a UTF-8 character boundary) to at most max bytes. */
static void fit_utf8(char *buf, size_t max)
{
    size_t n = strlen(buf);
    if (n <= max)
        return;
    n = max;
    while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80)
        n--;
    buf[n] = '\0';
}

static void sha256(const void *data, size_t len, unsigned char md[32])
{
    unsigned int mdlen = 0;
    XM_ASSERT(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32);
}

static void hex32(const unsigned char md[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static void base64_32(const unsigned char md[32], char out[45])
{
    XM_ASSERT(EVP_EncodeBlock((unsigned char *)out, md, 32) == 44);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The JSON object of a reply (new), or NULL with a permanent err naming what. */
static json_t *json_reply(const struct http_response *resp, const char *what, struct err *err)
{
    json_error_t jerr;
    json_t *j =
        resp->body ? json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        err_set(err, ERR_PERMANENT, "ebs: %s: the reply is not a JSON object", what);
        return NULL;
    }
    return j;
}

/* An integer member, also as a string of digits (moto sends BlockIndex as "7"). */
static int json_int_member(const json_t *obj, const char *name, long long *out)
{
    const json_t *v = json_object_get(obj, name);
    if (json_is_integer(v)) {
        *out = (long long)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (errno || end == s || *end || n < 0)
            return -1;
        *out = n;
        return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------- EC2 XML */

/* One item of DescribeSnapshots. */
struct snap_item {
    char id[EBS_ID_MAX];
    char status[16];
    char progress[16];
    char message[256];
    long long volume_gib;
};

/* Every snapshotSet/item of a DescribeSnapshots reply: new array, *n set (0: none). */
static struct snap_item *snapshot_items(const char *xml, size_t *n)
{
    *n = 0;
    xmlDoc *doc = aws_xml_parse(xml);
    if (!doc)
        return NULL;
    struct snap_item *v = NULL;
    xmlNode *set = aws_xml_child(xmlDocGetRootElement(doc), "snapshotSet");
    for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
        if (it->type != XML_ELEMENT_NODE || strcmp((const char *)it->name, "item") != 0)
            continue;
        v = xrealloc(v, sizeof(*v) * (*n + 1));
        struct snap_item *s = &v[(*n)++];
        char size[32];
        aws_xml_copy(it, "snapshotId", s->id, sizeof(s->id));
        aws_xml_copy(it, "status", s->status, sizeof(s->status));
        aws_xml_copy(it, "progress", s->progress, sizeof(s->progress));
        aws_xml_copy(it, "statusMessage", s->message, sizeof(s->message));
        aws_xml_copy(it, "volumeSize", size, sizeof(size));
        s->volume_gib = strtoll(size, NULL, 10);
    }
    xmlFreeDoc(doc);
    return v;
}

/* ---------------------------------------------------------------- start, find */

long long ebs_volume_gib(uint64_t bytes)
{
    uint64_t g = bytes / (uint64_t)GIB + (bytes % (uint64_t)GIB != 0);
    return g ? (long long)g : 1;
}

void ebs_client_token(const struct ebs_tags *tags, char out[EBS_TOKEN_SIZE])
{
    /* Each value with its NUL, so ("a", "bc") and ("ab", "c") differ. */
    static const char purpose[] = "xmigrate ebs snapshot";
    const char *parts[3] = {tags->migration, tags->host, tags->disk};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    XM_ASSERT(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    XM_ASSERT(EVP_DigestUpdate(ctx, purpose, sizeof(purpose)) == 1);
    for (int i = 0; i < 3; i++) {
        const char *p = parts[i] ? parts[i] : "";
        XM_ASSERT(EVP_DigestUpdate(ctx, p, strlen(p) + 1) == 1);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    XM_ASSERT(EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32);
    EVP_MD_CTX_free(ctx);
    hex32(md, out);
}

int ebs_find(struct aws *a, const struct ebs_tags *tags, struct ebs_snapshot *out, int *found,
             struct err *err)
{
    *found = 0;
    if (check_tags(tags, err) < 0)
        return -1;
    /* clang-format off */
    const char *params[] = {
        "Owner.1",          "self",
        "Filter.1.Name",    "tag:" EBS_TAG_MIGRATION,
        "Filter.1.Value.1", tags->migration,
        "Filter.2.Name",    "tag:" EBS_TAG_HOST,
        "Filter.2.Value.1", tags->host,
        "Filter.3.Name",    "tag:" EBS_TAG_DISK,
        "Filter.3.Value.1", tags->disk,
        NULL};
    /* clang-format on */
    char *xml = NULL;
    if (aws_ec2(a, "DescribeSnapshots", params, &xml, err) < 0)
        return err_prefix(err, "ebs: find the snapshot of host '%s' disk '%s'", tags->host,
                          tags->disk);
    size_t n;
    struct snap_item *items = snapshot_items(xml, &n);
    free(xml);
    const struct snap_item *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!valid_snapshot_id(items[i].id))
            continue;
        if (strcmp(items[i].status, "completed") == 0) {
            best = &items[i];
            break;
        }
        if (!best && strcmp(items[i].status, "pending") == 0)
            best = &items[i];
    }
    if (best) {
        memset(out, 0, sizeof(*out));
        xstrlcpy(out->id, best->id, sizeof(out->id));
        xstrlcpy(out->status, best->status, sizeof(out->status));
        out->volume_gib = best->volume_gib;
        *found = 1;
    }
    free(items);
    return 0;
}

int ebs_start(struct aws *a, long long volume_gib, const char *description,
              const struct ebs_tags *tags, const char *client_token, struct ebs_snapshot *out,
              struct err *err)
{
    if (check_tags(tags, err) < 0)
        return -1;
    if (volume_gib < 1 || volume_gib > EBS_VOLUME_GIB_MAX)
        return err_set(err, ERR_PERMANENT, "ebs: volume size %lld GiB is outside 1..%d", volume_gib,
                       EBS_VOLUME_GIB_MAX);
    char name[EBS_TAG_VALUE_MAX * 3];
    snprintf(name, sizeof(name), "xmigrate %s %s", tags->host, tags->disk);
    char desc[EBS_TAG_VALUE_MAX * 3];
    xstrlcpy(desc, description ? description : name, sizeof(desc));
    fit_utf8(name, EBS_TAG_VALUE_MAX);
    fit_utf8(desc, EBS_DESCRIPTION_MAX);
    char token[EBS_TOKEN_SIZE];
    if (client_token) {
        if (!client_token[0] || strlen(client_token) > 64)
            return err_set(err, ERR_PERMANENT, "ebs: a client token is 1 to 64 characters");
        xstrlcpy(token, client_token, sizeof(token));
    } else {
        ebs_client_token(tags, token);
    }

    int rc = -1;
    char *text = NULL;
    json_t *reply = NULL;
    struct http_response resp;
    http_response_init(&resp);
    json_t *body = json_pack("{s:I, s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}, {s:s, s:s}]}",
                             "VolumeSize", (json_int_t)volume_gib, "Description", desc,
                             "ClientToken", token, "Tags", "Key", EBS_TAG_MIGRATION, "Value",
                             tags->migration, "Key", EBS_TAG_HOST, "Value", tags->host, "Key",
                             EBS_TAG_DISK, "Value", tags->disk, "Key", EBS_TAG_NAME, "Value", name);
    if (!body) {
        err_set(err, ERR_PERMANENT, "ebs: tags and description must be UTF-8");
        goto out;
    }
    text = json_dumps(body, JSON_COMPACT);
    XM_ASSERT(text != NULL);
    struct aws_request req = {.service = "ebs",
                              .method = "POST",
                              .path = "/snapshots",
                              .headers = {"Content-Type: application/json"},
                              .n_headers = 1,
                              .body = text,
                              .body_len = strlen(text),
                              .max_response = 64 * 1024};
    if (aws_call(a, &req, &resp, err) < 0) {
        err_prefix(err, "ebs: start snapshot of host '%s' disk '%s'", tags->host, tags->disk);
        goto out;
    }
    reply = json_reply(&resp, "StartSnapshot", err);
    if (!reply)
        goto out;
    const char *id = json_string_value(json_object_get(reply, "SnapshotId"));
    const char *status = json_string_value(json_object_get(reply, "Status"));
    long long bs = 0, size = 0;
    if (!valid_snapshot_id(id) || json_int_member(reply, "BlockSize", &bs) < 0 ||
        json_int_member(reply, "VolumeSize", &size) < 0) {
        err_set(err, ERR_PERMANENT,
                "ebs: StartSnapshot answered without a snapshot id, "
                "block size or volume size");
        goto out;
    }
    if (bs < 512 || bs > EBS_BLOCK_SIZE_MAX || bs % 512) {
        err_set(err, ERR_PERMANENT, "ebs: snapshot '%s' has an unusable block size of %lld", id,
                bs);
        goto out;
    }
    if (status && strcmp(status, "error") == 0) {
        err_set(err, ERR_PERMANENT,
                "ebs: snapshot '%s' (client token of host '%s' disk '%s') is in state 'error'", id,
                tags->host, tags->disk);
        goto out;
    }
    memset(out, 0, sizeof(*out));
    xstrlcpy(out->id, id, sizeof(out->id));
    xstrlcpy(out->status, status ? status : "pending", sizeof(out->status));
    out->volume_gib = size;
    out->block_size = (long)bs;
    rc = 0;
out:
    json_decref(body);
    json_decref(reply);
    free(text);
    http_response_release(&resp);
    return rc;
}

/* ---------------------------------------------------------------- put, complete */

int ebs_block_is_zero(const void *data, size_t len)
{
    const unsigned char *p = data;
    if (len == 0)
        return 1;
    /* p[0] is zero and every byte equals the one before it. */
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

int ebs_put_block(struct aws *a, const struct ebs_snapshot *snap, long long block_index,
                  const void *data, size_t len, struct err *err)
{
    if (check_id(snap->id, err) < 0)
        return -1;
    if (snap->block_size <= 0)
        return err_set(err, ERR_PERMANENT, "ebs: block %lld of snapshot '%s': block size unknown",
                       block_index, snap->id);
    if (len != (size_t)snap->block_size)
        return err_set(err, ERR_PERMANENT,
                       "ebs: block %lld of snapshot '%s' is %zu bytes, not the block size %ld",
                       block_index, snap->id, len, snap->block_size);
    if (snap->volume_gib < 0 || snap->volume_gib > EBS_VOLUME_GIB_MAX)
        return err_set(err, ERR_PERMANENT, "ebs: block %lld of snapshot '%s': bad volume size",
                       block_index, snap->id);
    long long blocks = snap->volume_gib > 0 ? snap->volume_gib * GIB / snap->block_size : -1;
    if (block_index < 0 || (blocks >= 0 && block_index >= blocks))
        return err_set(err, ERR_PERMANENT,
                       "ebs: block %lld of snapshot '%s' is outside the volume (%lld blocks)",
                       block_index, snap->id, blocks);
    if (ebs_block_is_zero(data, len))
        return err_set(err, ERR_PERMANENT,
                       "ebs: block %lld of snapshot '%s' is all zero (zero blocks are not sent)",
                       block_index, snap->id);

    unsigned char md[32];
    char hex[65], b64[45];
    sha256(data, len, md);
    hex32(md, hex);
    base64_32(md, b64);
    char path[128], h_len[64], h_sum[80];
    snprintf(path, sizeof(path), "/snapshots/%s/blocks/%lld", snap->id, block_index);
    snprintf(h_len, sizeof(h_len), "x-amz-Data-Length: %zu", len);
    snprintf(h_sum, sizeof(h_sum), "x-amz-Checksum: %s", b64);
    struct aws_request req = {.service = "ebs",
                              .method = "PUT",
                              .path = path,
                              .headers = {"Content-Type: application/octet-stream", h_len, h_sum,
                                          "x-amz-Checksum-Algorithm: SHA256"},
                              .n_headers = 4,
                              .body = data,
                              .body_len = len,
                              .payload_sha256 = hex,
                              .max_response = 64 * 1024};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc < 0) {
        err_prefix(err, "ebs: put block %lld of snapshot '%s'", block_index, snap->id);
    } else {
        /* The service answers with the checksum it computed: it must be ours. */
        const char *theirs = http_response_header(&resp, "x-amz-Checksum");
        if (theirs && strcmp(theirs, b64) != 0)
            rc = err_set(err, ERR_TRANSIENT,
                         "ebs: put block %lld of snapshot '%s': the service stored a different "
                         "checksum",
                         block_index, snap->id);
    }
    http_response_release(&resp);
    return rc;
}

int ebs_complete(struct aws *a, const char *snapshot_id, long long changed_blocks, struct err *err)
{
    if (check_id(snapshot_id, err) < 0)
        return -1;
    if (changed_blocks < 0)
        return err_set(err, ERR_PERMANENT, "ebs: complete snapshot '%s': negative block count",
                       snapshot_id);
    char path[128], h_count[64];
    snprintf(path, sizeof(path), "/snapshots/completion/%s", snapshot_id);
    snprintf(h_count, sizeof(h_count), "x-amz-ChangedBlocksCount: %lld", changed_blocks);
    struct aws_request req = {.service = "ebs",
                              .method = "POST",
                              .path = path,
                              .headers = {h_count},
                              .n_headers = 1,
                              .max_response = 64 * 1024};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    json_t *reply = NULL;
    if (rc < 0) {
        err_prefix(err, "ebs: complete snapshot '%s' (%lld blocks)", snapshot_id, changed_blocks);
        goto out;
    }
    reply = json_reply(&resp, "CompleteSnapshot", err);
    if (!reply) {
        rc = -1;
        goto out;
    }
    const char *status = json_string_value(json_object_get(reply, "Status"));
    if (status && strcmp(status, "error") == 0)
        rc = err_set(err, ERR_PERMANENT, "ebs: snapshot '%s' went to state 'error' on completion",
                     snapshot_id);
out:
    json_decref(reply);
    http_response_release(&resp);
    return rc;
}

int ebs_wait_completed(struct aws *a, const char *snapshot_id, int timeout_s, struct err *err)
{
    if (check_id(snapshot_id, err) < 0)
        return -1;
    const char *params[] = {"Filter.1.Name", "snapshot-id", "Filter.1.Value.1", snapshot_id, NULL};
    long long deadline = now_ms() + (long long)(timeout_s > 0 ? timeout_s : 0) * 1000;
    long long delay = 500;
    char last[16] = "not visible", progress[16] = "";
    for (;;) {
        char *xml = NULL;
        if (aws_ec2(a, "DescribeSnapshots", params, &xml, err) < 0)
            return err_prefix(err, "ebs: wait for snapshot '%s'", snapshot_id);
        size_t n;
        struct snap_item *items = snapshot_items(xml, &n);
        free(xml);
        /* Not listed yet is "not visible": DescribeSnapshots is eventually consistent. */
        for (size_t i = 0; i < n; i++) {
            if (strcmp(items[i].id, snapshot_id) != 0)
                continue;
            xstrlcpy(last, items[i].status, sizeof(last));
            xstrlcpy(progress, items[i].progress, sizeof(progress));
            if (strcmp(items[i].status, "error") == 0) {
                err_set(err, ERR_PERMANENT, "ebs: snapshot '%s' is in state 'error': %s",
                        snapshot_id, items[i].message[0] ? items[i].message : "no reason given");
                free(items);
                return -1;
            }
        }
        free(items);
        if (strcmp(last, "completed") == 0)
            return 0;
        long long left = deadline - now_ms();
        if (left <= 0)
            return err_set(err, ERR_TRANSIENT,
                           "ebs: timed out after %d s waiting for snapshot '%s' to be completed "
                           "(state '%s'%s%s)",
                           timeout_s, snapshot_id, last, progress[0] ? ", progress " : "",
                           progress);
        pause_ms(delay < left ? delay : left);
        delay = delay * 2 > 10000 ? 10000 : delay * 2;
    }
}

/* ---------------------------------------------------------------- read back */

void ebs_block_list_release(struct ebs_block_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].token);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* Append one page of ListSnapshotBlocks to out; *next is the new page token or NULL. */
static int list_page(const json_t *reply, const char *snapshot_id, struct ebs_block_list *out,
                     char **next, struct err *err)
{
    long long bs = 0, size = 0;
    if (json_int_member(reply, "BlockSize", &bs) < 0 ||
        json_int_member(reply, "VolumeSize", &size) < 0 || bs < 512 || bs > EBS_BLOCK_SIZE_MAX ||
        size < 1 || size > EBS_VOLUME_GIB_MAX)
        return err_set(err, ERR_PERMANENT,
                       "ebs: list blocks of snapshot '%s': no usable block or volume size",
                       snapshot_id);
    out->block_size = (long)bs;
    out->volume_gib = size;
    long long total = size * GIB / bs;
    size_t cap = (size_t)total;
    if (cap > EBS_LIST_MAX)
        cap = EBS_LIST_MAX;
    const json_t *blocks = json_object_get(reply, "Blocks");
    size_t i;
    const json_t *b;
    json_array_foreach(blocks, i, b)
    {
        long long idx;
        const char *tok = json_string_value(json_object_get(b, "BlockToken"));
        if (json_int_member(b, "BlockIndex", &idx) < 0 || !tok || idx >= total)
            return err_set(err, ERR_PERMANENT,
                           "ebs: list blocks of snapshot '%s': a block without a usable index "
                           "or token",
                           snapshot_id);
        if (out->n >= cap)
            return err_set(err, ERR_PERMANENT,
                           "ebs: list blocks of snapshot '%s': more than %zu blocks", snapshot_id,
                           cap);
        out->v = xrealloc(out->v, sizeof(*out->v) * (out->n + 1));
        out->v[out->n].index = idx;
        out->v[out->n].token = xstrdup(tok);
        out->n++;
    }
    const char *nt = json_string_value(json_object_get(reply, "NextToken"));
    *next = nt && nt[0] ? xstrdup(nt) : NULL;
    return 0;
}

int ebs_list_blocks(struct aws *a, const char *snapshot_id, struct ebs_block_list *out,
                    struct err *err)
{
    memset(out, 0, sizeof(*out));
    if (check_id(snapshot_id, err) < 0)
        return -1;
    char path[128];
    snprintf(path, sizeof(path), "/snapshots/%s/blocks", snapshot_id);
    int rc = -1;
    char *token = NULL, *query = NULL;
    json_t *reply = NULL;
    struct http_response resp;
    http_response_init(&resp);
    for (;;) {
        free(query);
        if (token) {
            char *enc = aws_form_encode(token);
            query = xasprintf("maxResults=10000&pageToken=%s", enc);
            free(enc);
        } else {
            query = xstrdup("maxResults=10000");
        }
        struct aws_request req = {.service = "ebs", .method = "GET", .path = path, .query = query};
        if (aws_call(a, &req, &resp, err) < 0) {
            err_prefix(err, "ebs: list blocks of snapshot '%s'", snapshot_id);
            goto out;
        }
        json_decref(reply);
        reply = json_reply(&resp, "ListSnapshotBlocks", err);
        if (!reply)
            goto out;
        char *next = NULL;
        if (list_page(reply, snapshot_id, out, &next, err) < 0)
            goto out;
        /* A token that does not move would loop for ever. */
        if (next && token && strcmp(next, token) == 0) {
            free(next);
            err_set(err, ERR_PERMANENT,
                    "ebs: list blocks of snapshot '%s': the page token "
                    "repeats",
                    snapshot_id);
            goto out;
        }
        free(token);
        token = next;
        if (!token)
            break;
    }
    rc = 0;
out:
    if (rc < 0)
        ebs_block_list_release(out);
    free(token);
    free(query);
    json_decref(reply);
    http_response_release(&resp);
    return rc;
}

int ebs_get_block(struct aws *a, const char *snapshot_id, const struct ebs_block *block, void *buf,
                  size_t size, size_t *len, struct err *err)
{
    *len = 0;
    if (check_id(snapshot_id, err) < 0)
        return -1;
    if (block->index < 0 || !block->token || !block->token[0])
        return err_set(err, ERR_PERMANENT, "ebs: get block %lld of snapshot '%s': no block token",
                       block->index, snapshot_id);
    char path[128];
    snprintf(path, sizeof(path), "/snapshots/%s/blocks/%lld", snapshot_id, block->index);
    char *enc = aws_form_encode(block->token);
    char *query = xasprintf("blockToken=%s", enc);
    free(enc);
    struct aws_request req = {
        .service = "ebs", .method = "GET", .path = path, .query = query, .max_response = size};
    struct http_response resp;
    http_response_init(&resp);
    int rc = aws_call(a, &req, &resp, err);
    if (rc < 0) {
        err_prefix(err, "ebs: get block %lld of snapshot '%s'", block->index, snapshot_id);
        goto out;
    }
    const char *dl = http_response_header(&resp, "x-amz-Data-Length");
    if (!resp.body || !resp.body_len || resp.body_len > size ||
        (dl && strtoull(dl, NULL, 10) != resp.body_len)) {
        rc = err_set(err, ERR_TRANSIENT,
                     "ebs: get block %lld of snapshot '%s': %zu bytes arrived, %s announced",
                     block->index, snapshot_id, resp.body_len, dl ? dl : "none");
        goto out;
    }
    const char *algo = http_response_header(&resp, "x-amz-Checksum-Algorithm");
    const char *sum = http_response_header(&resp, "x-amz-Checksum");
    if (sum && algo && strcmp(algo, "SHA256") == 0) {
        unsigned char md[32];
        char b64[45];
        sha256(resp.body, resp.body_len, md);
        base64_32(md, b64);
        if (strcmp(b64, sum) != 0) {
            rc = err_set(err, ERR_TRANSIENT,
                         "ebs: get block %lld of snapshot '%s': the data does not match its "
                         "checksum",
                         block->index, snapshot_id);
            goto out;
        }
    }
    memcpy(buf, resp.body, resp.body_len);
    *len = resp.body_len;
out:
    free(query);
    http_response_release(&resp);
    return rc;
}
