/*
 * image.c: plan parameters through job payloads, and the sink into a provider's image
 * (see image.h).
 */
#include "image.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "keys.h"
#include "secret.h"
#include "xmalloc.h"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_id(const char *hex, uint8_t id[16])
{
    if (!hex || strlen(hex) != 32)
        return -1;
    for (size_t i = 0; i < 16; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void image_id_for(const char *migration, const char *host, const char *disk, uint8_t id[16])
{
    char *name = xasprintf("%s/%s/%s", migration, host, disk);
    char hex[65];
    secret_sha256_hex(name, strlen(name), hex);
    free(name);
    hex[32] = '\0';
    XM_ASSERT(parse_id(hex, id) == 0);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* a version 4 (random-looking) UUID */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
}

json_t *image_plan_json(const struct convert_params *prm)
{
    char hex[33];
    for (size_t i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", prm->id[i]);
    return json_pack("{s:s, s:I, s:I, s:I, s:s}", "format", convert_format_str(prm->format), "size",
                     (json_int_t)prm->in_size, "shard_size", (json_int_t)prm->shard_size, "created",
                     (json_int_t)prm->created, "id", hex);
}

struct convert_plan *image_plan_from(const json_t *payload, const char *disk, struct err *err)
{
    const json_t *pj = json_object_get(payload, "plan");
    struct convert_params prm = {0};
    json_int_t size = json_integer_value(json_object_get(pj, "size"));
    json_int_t shard = json_integer_value(json_object_get(pj, "shard_size"));
    if (!json_is_object(pj) ||
        convert_format_parse(json_string_value(json_object_get(pj, "format")), &prm.format, err) <
            0 ||
        size <= 0 || shard <= 0 ||
        parse_id(json_string_value(json_object_get(pj, "id")), prm.id) < 0) {
        err_set(err, ERR_PERMANENT, "disk '%s': payload has no valid image plan", disk);
        return NULL;
    }
    prm.in_size = (uint64_t)size;
    prm.shard_size = (uint64_t)shard;
    prm.created = (int64_t)json_integer_value(json_object_get(pj, "created"));
    struct convert_plan *plan = convert_plan_new(&prm, err);
    if (!plan)
        err_prefix(err, "disk '%s'", disk);
    return plan;
}

int image_format_for(struct redisContext *c, const char *mig, const struct provider_ops *ops,
                     char out[16], struct err *err)
{
    out[0] = '\0';
    if (ops->image_format) {
        xstrlcpy(out, ops->image_format, 16);
        return 0;
    }
    if (!ops->image_begin)
        return 0;
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_FMT, mig);
    redisReply *r = conn_cmd(c, err, 3, (const char *[]){"HGET", key, XM_M_AWS_IMPORT});
    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_STRING &&
        (strcmp(r->str, "raw") == 0 || strcmp(r->str, "vmdk") == 0))
        xstrlcpy(out, r->str, 16);
    freeReplyObject(r);
    return 0;
}

/* Append len bytes of buf (NULL: zeros) to the piece in memory. */
static void append(struct image_sink *s, const void *buf, uint64_t len)
{
    if (len == 0)
        return;
    if (s->len + len > s->cap) {
        s->cap = (size_t)(s->len + len) * 2;
        s->buf = xrealloc(s->buf, s->cap);
    }
    if (buf)
        memcpy(s->buf + s->len, buf, (size_t)len);
    else
        memset(s->buf + s->len, 0, (size_t)len);
    s->len += (size_t)len;
}

static int sink_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct image_sink *s = ctx;
    if (!image_sink_pieces(s)) {
        if (s->ops->image_write(s->p, s->ref, off, buf, len, err) < 0)
            return -1;
        s->written += len;
        return 0;
    }
    if (s->layout == CONVERT_LAYOUT_FIXED) {
        /* absolute offsets, in order, inside the range: the gap before is zeros */
        XM_ASSERT(off >= s->base + s->len && off + len <= s->end);
        append(s, NULL, off - s->base - s->len);
    } else {
        XM_ASSERT(off == s->len); /* CONCAT pieces arrive contiguous from 0 */
    }
    append(s, buf, len);
    return 0;
}

int image_sink_pieces(const struct image_sink *s)
{
    return s->layout == CONVERT_LAYOUT_CONCAT || !s->ops->image_write;
}

void image_sink_range(struct image_sink *s, uint64_t base, uint64_t len)
{
    s->base = base;
    s->end = base + len;
}

void image_sink_init(struct image_sink *s, struct provider *p, const struct provider_ops *ops,
                     const char *ref, enum convert_layout layout)
{
    memset(s, 0, sizeof(*s));
    s->sink.write = sink_write;
    s->sink.ctx = s;
    s->p = p;
    s->ops = ops;
    s->ref = ref;
    s->layout = layout;
}

int image_sink_put(struct image_sink *s, size_t piece, struct err *err)
{
    if (!image_sink_pieces(s))
        return 0;
    if (s->layout == CONVERT_LAYOUT_FIXED)
        append(s, NULL, s->end - s->base - s->len); /* the zeros up to the range's end */
    if (s->ops->image_put_piece(s->p, s->ref, piece, s->buf, s->len, err) < 0)
        return -1;
    s->written += s->len;
    s->len = 0;
    return 0;
}

void image_sink_release(struct image_sink *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}
