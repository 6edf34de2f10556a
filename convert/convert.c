/*
 * convert.c: plans, the shard feeder shared by every format, shard results and their
 * encoding, and the finishing step. The formats themselves are in vhd.c, vmdk.c and
 * gcetar.c.
 */
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "convert_int.h"
#include "xmalloc.h"

static const char *const format_names[CONVERT_FORMAT_N] = {"raw", "vhd", "vmdk", "gce-tar"};

const char *convert_format_str(enum convert_format f)
{
    if ((unsigned)f < CONVERT_FORMAT_N)
        return format_names[f];
    return "unknown";
}

int convert_format_parse(const char *name, enum convert_format *out, struct err *err)
{
    for (unsigned i = 0; i < CONVERT_FORMAT_N; i++) {
        if (name && strcmp(name, format_names[i]) == 0) {
            *out = (enum convert_format)i;
            return 0;
        }
    }
    return err_set(err, ERR_PERMANENT, "unknown image format '%s'", name ? name : "");
}

const char *convert_layout_str(enum convert_layout l)
{
    switch (l) {
    case CONVERT_LAYOUT_FIXED:
        return "fixed";
    case CONVERT_LAYOUT_CONCAT:
        return "concat";
    }
    return "unknown";
}

uint64_t convert_shard_align(enum convert_format f)
{
    return f == CONVERT_VMDK ? VMDK_GRAIN : CONVERT_SECTOR;
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
    return (v + to - 1) / to * to;
}

/* ---- plans ---- */

struct convert_plan *convert_plan_new(const struct convert_params *params, struct err *err)
{
    const struct convert_params *p = params;
    if ((unsigned)p->format >= CONVERT_FORMAT_N) {
        err_set(err, ERR_PERMANENT, "unknown image format %d", (int)p->format);
        return NULL;
    }
    const char *fname = convert_format_str(p->format);
    if (p->in_size == 0 || p->in_size > CONVERT_SIZE_MAX) {
        err_set(err, ERR_PERMANENT, "%s: disk size %llu out of range (1..%llu)", fname,
                (unsigned long long)p->in_size, (unsigned long long)CONVERT_SIZE_MAX);
        return NULL;
    }
    if (p->format == CONVERT_VMDK && p->in_size > CONVERT_VMDK_SIZE_MAX) {
        err_set(err, ERR_PERMANENT, "vmdk: disk size %llu over the format's %llu",
                (unsigned long long)p->in_size, (unsigned long long)CONVERT_VMDK_SIZE_MAX);
        return NULL;
    }
    uint64_t align = convert_shard_align(p->format);
    if (p->shard_size % align != 0) {
        err_set(err, ERR_PERMANENT, "%s: shard size %llu is not a multiple of %llu", fname,
                (unsigned long long)p->shard_size, (unsigned long long)align);
        return NULL;
    }
    uint64_t shard_size = p->shard_size ? p->shard_size : round_up(p->in_size, align);
    uint64_t nshards = (p->in_size + shard_size - 1) / shard_size;
    if (nshards > CONVERT_SHARDS_MAX) {
        err_set(err, ERR_PERMANENT, "%s: %llu shards, over the cap of %u", fname,
                (unsigned long long)nshards, CONVERT_SHARDS_MAX);
        return NULL;
    }
    if (p->level < 0 || p->level > 12) {
        err_set(err, ERR_PERMANENT, "%s: compression level %d out of range (1..12)", fname,
                p->level);
        return NULL;
    }
    if (p->adapter != CONVERT_ADAPTER_LSILOGIC && p->adapter != CONVERT_ADAPTER_IDE) {
        err_set(err, ERR_PERMANENT, "%s: unknown adapter type %d", fname, (int)p->adapter);
        return NULL;
    }

    struct convert_plan *plan = xcalloc(1, sizeof(*plan));
    plan->p = *p;
    if (plan->p.level == 0)
        plan->p.level = CONVERT_LEVEL_DEFAULT;
    plan->shard_size = shard_size;
    plan->nshards = (size_t)nshards;
    switch (p->format) {
    case CONVERT_RAW:
        plan->layout = CONVERT_LAYOUT_FIXED;
        plan->disk_size = p->in_size;
        plan->fixed_size = p->in_size;
        plan->unit = CONVERT_SECTOR;
        break;
    case CONVERT_VHD:
        plan->layout = CONVERT_LAYOUT_FIXED;
        plan->disk_size = round_up(p->in_size, CONVERT_MIB);
        plan->fixed_size = plan->disk_size + CONVERT_SECTOR;
        plan->unit = CONVERT_SECTOR;
        break;
    case CONVERT_VMDK:
        plan->layout = CONVERT_LAYOUT_CONCAT;
        plan->disk_size = round_up(p->in_size, CONVERT_SECTOR);
        plan->unit = VMDK_GRAIN;
        convert_vmdk_head(plan);
        break;
    case CONVERT_GCE_TAR:
        plan->layout = CONVERT_LAYOUT_CONCAT;
        plan->disk_size = round_up(p->in_size, CONVERT_GIB);
        plan->unit = GCE_MEMBER;
        convert_gce_plan(plan);
        break;
    case CONVERT_FORMAT_N:
        break;
    }
    return plan;
}

void convert_plan_free(struct convert_plan *plan)
{
    if (!plan)
        return;
    free(plan->head);
    free(plan->zero_member);
    free(plan);
}

const struct convert_params *convert_plan_params(const struct convert_plan *plan)
{
    return &plan->p;
}

enum convert_layout convert_plan_layout(const struct convert_plan *plan)
{
    return plan->layout;
}

size_t convert_plan_nshards(const struct convert_plan *plan)
{
    return plan->nshards;
}

void convert_plan_shard(const struct convert_plan *plan, size_t i, uint64_t *in_off,
                        uint64_t *in_len)
{
    XM_ASSERT(i < plan->nshards);
    uint64_t off = (uint64_t)i * plan->shard_size;
    uint64_t len = plan->p.in_size - off;
    if (len > plan->shard_size)
        len = plan->shard_size;
    *in_off = off;
    *in_len = len;
}

uint64_t convert_plan_disk_size(const struct convert_plan *plan)
{
    return plan->disk_size;
}

uint64_t convert_plan_fixed_size(const struct convert_plan *plan)
{
    return plan->fixed_size;
}

const uint8_t *convert_plan_head(const struct convert_plan *plan, size_t *len)
{
    *len = plan->head_len;
    return plan->head;
}

/* ---- shards: the feeder ---- */

struct convert_shard *convert_shard_new(const struct convert_plan *plan, size_t i,
                                        const struct convert_sink *sink)
{
    struct convert_shard *sh = xcalloc(1, sizeof(*sh));
    sh->plan = plan;
    sh->sink = sink;
    sh->index = i;
    convert_plan_shard(plan, i, &sh->in_off, &sh->in_len);
    sh->carry = xmalloc(plan->unit);
    if (plan->layout == CONVERT_LAYOUT_CONCAT)
        sh->comp = convert_compressor_new(plan->p.level);
    return sh;
}

void convert_shard_free(struct convert_shard *sh)
{
    if (!sh)
        return;
    if (sh->comp)
        libdeflate_free_compressor(sh->comp);
    free(sh->carry);
    free(sh->obuf);
    free(sh->grains);
    free(sh);
}

uint8_t *convert_obuf_reserve(struct convert_shard *sh, size_t need)
{
    if (sh->ocap - sh->olen < need) {
        size_t cap = sh->ocap ? sh->ocap : 2 * CONVERT_MIB;
        while (cap - sh->olen < need)
            cap *= 2;
        sh->obuf = xrealloc(sh->obuf, cap);
        sh->ocap = cap;
    }
    return sh->obuf + sh->olen;
}

int convert_obuf_flush(struct convert_shard *sh, int force, struct err *err)
{
    if (!force && sh->olen < CONVERT_MIB)
        return 0;
    size_t done = 0;
    while (done < sh->olen) {
        size_t n = sh->olen - done;
        if (n > CONVERT_WRITE_MAX)
            n = CONVERT_WRITE_MAX;
        if (sh->sink->write(sh->sink->ctx, sh->out_pos, sh->obuf + done, n, err) < 0)
            return -1;
        sh->out_pos += n;
        done += n;
    }
    sh->olen = 0;
    return 0;
}

/* Whole units of data at input offset at (relative to the shard), or the shard's final
 * partial unit when len is not a multiple of the unit. */
static int emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                struct err *err)
{
    switch (sh->plan->p.format) {
    case CONVERT_RAW:
    case CONVERT_VHD:
        if (len % CONVERT_SECTOR)
            return convert_fixed_last(sh, at, buf, len, err);
        return convert_fixed_emit(sh, at, buf, len, err);
    case CONVERT_VMDK:
        return convert_vmdk_emit(sh, at, buf, len, err);
    case CONVERT_GCE_TAR:
        return convert_gce_emit(sh, at, buf, len, err);
    case CONVERT_FORMAT_N:
        break;
    }
    return err_set(err, ERR_PERMANENT, "unknown image format");
}

/* Whole zero units: holes for raw and vhd, omitted grains for vmdk, cached members for
 * gce-tar. */
static int emit_zero(struct convert_shard *sh, uint64_t len, struct err *err)
{
    if (sh->plan->p.format == CONVERT_GCE_TAR)
        return convert_gce_emit_zero(sh, len / sh->plan->unit, err);
    return 0;
}

static int check_room(struct convert_shard *sh, uint64_t len, struct err *err)
{
    XM_ASSERT(!sh->done);
    if (len > sh->in_len - sh->pos)
        return err_set(err, ERR_PERMANENT,
                       "shard %zu: input goes %llu bytes past its end (%llu bytes)", sh->index,
                       (unsigned long long)(len - (sh->in_len - sh->pos)),
                       (unsigned long long)sh->in_len);
    return 0;
}

int convert_shard_write(struct convert_shard *sh, const void *buf, size_t len, struct err *err)
{
    const uint8_t *p = buf;
    size_t unit = sh->plan->unit;
    if (check_room(sh, len, err) < 0)
        return -1;
    if (sh->carry_len) {
        size_t take = unit - sh->carry_len < len ? unit - sh->carry_len : len;
        memcpy(sh->carry + sh->carry_len, p, take);
        sh->carry_len += take;
        sh->pos += take;
        p += take;
        len -= take;
        if (sh->carry_len == unit) {
            sh->carry_len = 0;
            if (emit(sh, sh->pos - unit, sh->carry, unit, err) < 0)
                return -1;
        }
    }
    if (len >= unit) {
        size_t n = len - len % unit;
        if (emit(sh, sh->pos, p, n, err) < 0)
            return -1;
        sh->pos += n;
        p += n;
        len -= n;
    }
    if (len) {
        memcpy(sh->carry, p, len);
        sh->carry_len = len;
        sh->pos += len;
    }
    return 0;
}

int convert_shard_zero(struct convert_shard *sh, uint64_t len, struct err *err)
{
    size_t unit = sh->plan->unit;
    if (check_room(sh, len, err) < 0)
        return -1;
    if (sh->carry_len) {
        size_t take = unit - sh->carry_len < len ? unit - sh->carry_len : (size_t)len;
        memset(sh->carry + sh->carry_len, 0, take);
        sh->carry_len += take;
        sh->pos += take;
        len -= take;
        if (sh->carry_len == unit) {
            sh->carry_len = 0;
            if (emit(sh, sh->pos - unit, sh->carry, unit, err) < 0)
                return -1;
        }
    }
    if (len >= unit) {
        uint64_t n = len - len % unit;
        if (emit_zero(sh, n, err) < 0)
            return -1;
        sh->pos += n;
        len -= n;
    }
    if (len) {
        memset(sh->carry, 0, (size_t)len);
        sh->carry_len = (size_t)len;
        sh->pos += len;
    }
    return 0;
}

struct convert_result *convert_shard_finish(struct convert_shard *sh, struct err *err)
{
    XM_ASSERT(!sh->done);
    if (sh->pos != sh->in_len) {
        err_set(err, ERR_PERMANENT, "shard %zu: input ended after %llu of %llu bytes", sh->index,
                (unsigned long long)sh->pos, (unsigned long long)sh->in_len);
        return NULL;
    }
    if (sh->carry_len) {
        size_t n = sh->carry_len;
        sh->carry_len = 0;
        if (emit(sh, sh->pos - n, sh->carry, n, err) < 0)
            return NULL;
    }
    if (sh->plan->layout == CONVERT_LAYOUT_CONCAT && convert_obuf_flush(sh, 1, err) < 0)
        return NULL;
    sh->done = 1;

    struct convert_result *r = xcalloc(1, sizeof(*r));
    r->format = sh->plan->p.format;
    r->shard = sh->index;
    r->in_off = sh->in_off;
    r->in_len = sh->in_len;
    r->out_len = sh->plan->layout == CONVERT_LAYOUT_CONCAT ? sh->out_pos : sh->written;
    r->grains = sh->grains;
    r->ngrains = sh->ngrains;
    sh->grains = NULL;
    sh->ngrains = 0;
    return r;
}

/* ---- results ---- */

size_t convert_result_shard(const struct convert_result *r)
{
    return r->shard;
}

uint64_t convert_result_out_len(const struct convert_result *r)
{
    return r->out_len;
}

size_t convert_result_ngrains(const struct convert_result *r)
{
    return r->ngrains;
}

void convert_result_free(struct convert_result *r)
{
    if (!r)
        return;
    free(r->grains);
    free(r);
}

/*
 * Encoding (little-endian):
 *   0  "XMCR"   4  version (1)   8  format   12 shard   16 in_off   24 in_len
 *   32 out_len  40 ngrains (u32) 44 reserved (0)   48 ngrains x (grain u32, sector u32)
 *   then the CRC-32 of everything before it.
 */
#define RESULT_MAGIC "XMCR"
#define RESULT_VERSION 1u
#define RESULT_HDR 48u

uint8_t *convert_result_encode(const struct convert_result *r, size_t *len)
{
    size_t n = RESULT_HDR + 8 * r->ngrains + 4;
    uint8_t *b = xcalloc(1, n);
    memcpy(b, RESULT_MAGIC, 4);
    put_le32(b + 4, RESULT_VERSION);
    put_le32(b + 8, (uint32_t)r->format);
    put_le32(b + 12, (uint32_t)r->shard);
    put_le64(b + 16, r->in_off);
    put_le64(b + 24, r->in_len);
    put_le64(b + 32, r->out_len);
    put_le32(b + 40, (uint32_t)r->ngrains);
    for (size_t i = 0; i < r->ngrains; i++) {
        put_le32(b + RESULT_HDR + 8 * i, r->grains[i].grain);
        put_le32(b + RESULT_HDR + 8 * i + 4, r->grains[i].sector);
    }
    put_le32(b + n - 4, (uint32_t)libdeflate_crc32(0, b, n - 4));
    *len = n;
    return b;
}

struct convert_result *convert_result_decode(const struct convert_plan *plan, const void *buf,
                                             size_t len, struct err *err)
{
    const uint8_t *b = buf;
    struct convert_result *r = NULL;
    if (len < RESULT_HDR + 4 || memcmp(b, RESULT_MAGIC, 4) != 0) {
        err_set(err, ERR_PERMANENT, "shard result: not a result (%zu bytes)", len);
        goto fail;
    }
    if ((uint32_t)libdeflate_crc32(0, b, len - 4) != get_le32(b + len - 4)) {
        err_set(err, ERR_PERMANENT, "shard result: checksum mismatch");
        goto fail;
    }
    if (get_le32(b + 4) != RESULT_VERSION) {
        err_set(err, ERR_PERMANENT, "shard result: unknown version %u", get_le32(b + 4));
        goto fail;
    }
    uint32_t format = get_le32(b + 8), shard = get_le32(b + 12);
    uint64_t ngrains = get_le32(b + 40);
    if (format != (uint32_t)plan->p.format || shard >= plan->nshards) {
        err_set(err, ERR_PERMANENT, "shard result: format %u shard %u not of this plan", format,
                shard);
        goto fail;
    }
    if (len != RESULT_HDR + 8 * ngrains + 4) {
        err_set(err, ERR_PERMANENT, "shard result: %zu bytes for %llu grains", len,
                (unsigned long long)ngrains);
        goto fail;
    }
    r = xcalloc(1, sizeof(*r));
    r->format = (enum convert_format)format;
    r->shard = shard;
    r->in_off = get_le64(b + 16);
    r->in_len = get_le64(b + 24);
    r->out_len = get_le64(b + 32);
    uint64_t off, inlen;
    convert_plan_shard(plan, shard, &off, &inlen);
    if (r->in_off != off || r->in_len != inlen) {
        err_set(err, ERR_PERMANENT, "shard result: shard %u covers another range", shard);
        goto fail;
    }
    uint64_t max_grains = (inlen + VMDK_GRAIN - 1) / VMDK_GRAIN;
    if (ngrains && (format != CONVERT_VMDK || ngrains > max_grains)) {
        err_set(err, ERR_PERMANENT, "shard result: %llu grains in shard %u",
                (unsigned long long)ngrains, shard);
        goto fail;
    }
    if (format == CONVERT_VMDK && r->out_len % CONVERT_SECTOR) {
        err_set(err, ERR_PERMANENT, "shard result: vmdk output not whole sectors");
        goto fail;
    }
    r->ngrains = (size_t)ngrains;
    r->grains = ngrains ? xcalloc((size_t)ngrains, sizeof(*r->grains)) : NULL;
    for (size_t i = 0; i < r->ngrains; i++) {
        struct vmdk_grain_ref *g = &r->grains[i];
        g->grain = get_le32(b + RESULT_HDR + 8 * i);
        g->sector = get_le32(b + RESULT_HDR + 8 * i + 4);
        /* Grains in order, each at least its marker sector inside the shard's output. */
        int ordered = i == 0 || (g->grain > g[-1].grain && g->sector > g[-1].sector);
        if (!ordered || g->grain >= max_grains ||
            (uint64_t)g->sector * CONVERT_SECTOR + CONVERT_SECTOR > r->out_len) {
            err_set(err, ERR_PERMANENT, "shard result: grain entry %zu out of place", i);
            goto fail;
        }
    }
    return r;
fail:
    convert_result_free(r);
    return NULL;
}

/* ---- finishing ---- */

int convert_finish(const struct convert_plan *plan, struct convert_result *const *results, size_t n,
                   const struct convert_sink *sink, uint64_t *total, struct err *err)
{
    if (n != plan->nshards)
        return err_set(err, ERR_PERMANENT, "finish: %zu results for %zu shards", n, plan->nshards);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const struct convert_result *r = results[i];
        uint64_t off, len;
        convert_plan_shard(plan, i, &off, &len);
        if (!r || r->shard != i || r->format != plan->p.format || r->in_off != off ||
            r->in_len != len)
            return err_set(err, ERR_PERMANENT, "finish: result %zu is not shard %zu's", i, i);
        sum += r->out_len;
    }
    uint64_t tail = 0;
    switch (plan->p.format) {
    case CONVERT_RAW:
        break;
    case CONVERT_VHD:
        if (convert_vhd_finish(plan, sink, err) < 0)
            return -1;
        break;
    case CONVERT_VMDK:
        if (convert_vmdk_finish(plan, results, n, sink, &tail, err) < 0)
            return -1;
        break;
    case CONVERT_GCE_TAR:
        if (convert_gce_finish(plan, sink, &tail, err) < 0)
            return -1;
        break;
    case CONVERT_FORMAT_N:
        return err_set(err, ERR_PERMANENT, "unknown image format");
    }
    if (total)
        *total =
            plan->layout == CONVERT_LAYOUT_FIXED ? plan->fixed_size : plan->head_len + sum + tail;
    return 0;
}
