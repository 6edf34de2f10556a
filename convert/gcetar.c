/*
 * gcetar.c: the GCE image file: `disk.raw` (the disk rounded up to a whole GiB) as the only
 * member of a GNU (oldgnu) tar archive, gzip'd, as `gcloud compute images create
 * --source-uri` takes it.
 *
 *   head   one gzip member: the 512-byte tar header of disk.raw;
 *   shards gzip members of at most 1 MiB of the disk each (a run of zeros is a cached
 *          member of 1 MiB of zeros, about 1 KiB);
 *   tail   gzip members of zeros: disk.raw's padding up to the GiB, the end of the archive
 *          (two zero blocks) and the padding of the last 10 KiB record, as GNU tar writes.
 *
 * Concatenated gzip members are one valid gzip stream (RFC 1952 section 2.2); gzip, GNU
 * tar, Python and Go (gzip.Reader, multistream by default) read them as one. Every member
 * is independent, so a shard's output does not depend on where it lands.
 *
 * Why not a sparse tar (`tar -S`, which Google's instructions show): the sparse map sits in
 * the header, before the data, so the header would depend on every shard's zero ranges,
 * and the readers that must understand GNU sparse entries are fewer. A non-sparse entry
 * costs about 1 KiB of gzip output per MiB of zeros (0.1%), keeps the header known from
 * the plan alone, and extracts with any tar.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

#include "convert_int.h"
#include "xmalloc.h"

#define TAR_BLOCK 512u
#define TAR_RECORD 10240u /* GNU tar's default: 20 blocks */
#define OCTAL11_MAX 077777777777ull

/* An octal field of width w (w - 1 digits and a NUL). */
static void tar_octal(uint8_t *field, size_t w, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof(tmp), "%0*llo", (int)(w - 1), (unsigned long long)v);
    memcpy(field, tmp, w - 1);
    field[w - 1] = '\0';
}

void convert_tar_header(uint8_t out[512], uint64_t size, int64_t mtime)
{
    memset(out, 0, 512);
    memcpy(out, "disk.raw", 8);
    tar_octal(out + 100, 8, 0644); /* mode */
    tar_octal(out + 108, 8, 0);    /* uid */
    tar_octal(out + 116, 8, 0);    /* gid */
    if (size <= OCTAL11_MAX) {
        tar_octal(out + 124, 12, size);
    } else {             /* GNU base-256: high bit of the first byte set, then big-endian */
        out[124] = 0x80; /* bytes 125..127 stay zero: a u64 fills the last eight */
        for (int i = 0; i < 8; i++)
            out[135 - i] = (uint8_t)(size >> (8 * i));
    }
    uint64_t mt = mtime < 0 ? 0 : (uint64_t)mtime > OCTAL11_MAX ? OCTAL11_MAX : (uint64_t)mtime;
    tar_octal(out + 136, 12, mt);
    out[156] = '0';                  /* regular file */
    memcpy(out + 257, "ustar  ", 8); /* oldgnu magic "ustar " and version " \0" */
    memcpy(out + 265, "root", 4);    /* uname */
    memcpy(out + 297, "root", 4);    /* gname */
    memset(out + 148, ' ', 8);       /* the checksum counts its own field as spaces */
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += out[i];
    tar_octal(out + 148, 7, sum); /* six digits and a NUL, then the space left above */
}

void convert_gce_plan(struct convert_plan *plan)
{
    struct libdeflate_compressor *c = convert_compressor_new(plan->p.level);
    uint8_t hdr[TAR_BLOCK];
    convert_tar_header(hdr, plan->disk_size, plan->p.created);
    plan->head = xmalloc(convert_gzip_bound(sizeof(hdr)));
    plan->head_len = convert_gzip(c, hdr, sizeof(hdr), plan->head, convert_gzip_bound(sizeof(hdr)));

    uint8_t *zeros = xcalloc(1, GCE_MEMBER);
    plan->zero_member = xmalloc(convert_gzip_bound(GCE_MEMBER));
    plan->zero_member_len =
        convert_gzip(c, zeros, GCE_MEMBER, plan->zero_member, convert_gzip_bound(GCE_MEMBER));
    plan->zero_member = xrealloc(plan->zero_member, plan->zero_member_len);
    free(zeros);
    libdeflate_free_compressor(c);
}

/* ---- shards ---- */

static int put_zero_members(struct convert_shard *sh, uint64_t units, struct err *err)
{
    const struct convert_plan *plan = sh->plan;
    for (uint64_t i = 0; i < units; i++) {
        memcpy(convert_obuf_reserve(sh, plan->zero_member_len), plan->zero_member,
               plan->zero_member_len);
        sh->olen += plan->zero_member_len;
        if (convert_obuf_flush(sh, 0, err) < 0)
            return -1;
    }
    return 0;
}

int convert_gce_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                     struct err *err)
{
    (void)at;
    for (size_t off = 0; off < len; off += GCE_MEMBER) {
        size_t n = len - off < GCE_MEMBER ? len - off : GCE_MEMBER;
        if (n == GCE_MEMBER && convert_is_zero(buf + off, n)) {
            if (put_zero_members(sh, 1, err) < 0)
                return -1;
            continue;
        }
        size_t bound = convert_gzip_bound(n);
        uint8_t *o = convert_obuf_reserve(sh, bound);
        sh->olen += convert_gzip(sh->comp, buf + off, n, o, bound);
        if (convert_obuf_flush(sh, 0, err) < 0)
            return -1;
    }
    return 0;
}

int convert_gce_emit_zero(struct convert_shard *sh, uint64_t units, struct err *err)
{
    return put_zero_members(sh, units, err);
}

/* ---- the tail ---- */

int convert_gce_finish(const struct convert_plan *plan, const struct convert_sink *sink,
                       uint64_t *tail_len, struct err *err)
{
    uint64_t archive = TAR_BLOCK + plan->disk_size + 2 * TAR_BLOCK;
    uint64_t zeros = plan->disk_size - plan->p.in_size + 2 * TAR_BLOCK +
                     (TAR_RECORD - archive % TAR_RECORD) % TAR_RECORD;
    uint64_t full = zeros / GCE_MEMBER;
    size_t rest = (size_t)(zeros % GCE_MEMBER);

    /* The same staging as a shard's, through a throwaway shard-like writer. */
    struct convert_shard w = {.plan = plan, .sink = sink};
    int rc = -1;
    uint8_t *rest_buf = NULL;
    if (put_zero_members(&w, full, err) < 0)
        goto out;
    if (rest) {
        w.comp = convert_compressor_new(plan->p.level);
        rest_buf = xcalloc(1, rest);
        size_t bound = convert_gzip_bound(rest);
        w.olen += convert_gzip(w.comp, rest_buf, rest, convert_obuf_reserve(&w, bound), bound);
    }
    if (convert_obuf_flush(&w, 1, err) < 0)
        goto out;
    *tail_len = w.out_pos;
    rc = 0;
out:
    if (w.comp)
        libdeflate_free_compressor(w.comp);
    free(w.obuf);
    free(rest_buf);
    return rc;
}
