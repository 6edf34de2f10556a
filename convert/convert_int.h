/*
 * convert_int: what the format files of convert/ share; not for users of the library.
 *
 * A shard feeds its input to its format in units (512 bytes for raw/vhd, a 64 KiB grain
 * for vmdk, a 1 MiB gzip member for gce-tar), counted from the shard's start: the
 * generic code in convert.c collects partial units in a carry buffer, so a format sees
 * whole units (many at once when the caller's buffer allows, without a copy), runs of
 * whole zero units, and at most one partial unit at the very end of the shard.
 */
#ifndef XM_CONVERT_INT_H
#define XM_CONVERT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "convert.h"

struct libdeflate_compressor;

#define CONVERT_SECTOR 512u
#define CONVERT_MIB (1ull << 20)
#define CONVERT_GIB (1ull << 30)

#define VMDK_GRAIN_SECTORS 128u
#define VMDK_GRAIN (VMDK_GRAIN_SECTORS * CONVERT_SECTOR) /* 64 KiB */
#define VMDK_GTES_PER_GT 512u
#define VMDK_HEAD_SECTORS 128u /* header, descriptor, padding: grains start at 64 KiB */
#define VMDK_DESC_SECTORS 20u

#define GCE_MEMBER (1u << 20) /* input bytes per gzip member */

struct convert_plan {
    struct convert_params p;
    enum convert_layout layout;
    size_t nshards;
    uint64_t shard_size; /* effective (in_size when params said 0) */
    uint64_t disk_size;
    uint64_t fixed_size;
    size_t unit;
    uint8_t *head; /* new */
    size_t head_len;
    uint8_t *zero_member; /* gce-tar: the gzip member of GCE_MEMBER zero bytes (new) */
    size_t zero_member_len;
};

struct vmdk_grain_ref {
    uint32_t grain;  /* grain number relative to the shard's first grain */
    uint32_t sector; /* sector offset of its grain marker within the shard's output */
};

struct convert_result {
    enum convert_format format;
    size_t shard;
    uint64_t in_off, in_len;
    uint64_t out_len;
    size_t ngrains;
    struct vmdk_grain_ref *grains; /* new, vmdk only */
};

struct convert_shard {
    const struct convert_plan *plan;
    const struct convert_sink *sink;
    size_t index;
    uint64_t in_off, in_len;
    uint64_t pos;     /* input bytes consumed, relative to in_off */
    uint64_t out_pos; /* CONCAT: output bytes handed to the sink so far */
    uint64_t written; /* FIXED: bytes written (holes not counted) */
    int done;

    uint8_t *carry; /* one unit (new) */
    size_t carry_len;

    struct libdeflate_compressor *comp; /* vmdk, gce-tar (new) */
    uint8_t *obuf;                      /* CONCAT output staging (new) */
    size_t olen, ocap;

    struct vmdk_grain_ref *grains; /* vmdk (new) */
    size_t ngrains, grains_cap;
};

/* ---- byte helpers ---- */
static inline void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- codec.c: zero test, and deflate members that store incompressible data ---- */

/* 1 if all len bytes are zero. */
int convert_is_zero(const void *buf, size_t len);
/* 1 if buf looks incompressible (byte entropy of a random source): store it instead. */
int convert_looks_random(const uint8_t *buf, size_t len);
/* Worst-case size of a zlib stream / gzip member of len input bytes. */
size_t convert_zlib_bound(size_t len);
size_t convert_gzip_bound(size_t len);
/* Compress in into out (capacity >= the bound above); returns the bytes written. Data that
 * looks random or does not shrink is stored (deflate stored blocks) instead. */
size_t convert_zlib(struct libdeflate_compressor *c, const uint8_t *in, size_t len, uint8_t *out,
                    size_t cap);
size_t convert_gzip(struct libdeflate_compressor *c, const uint8_t *in, size_t len, uint8_t *out,
                    size_t cap);
struct libdeflate_compressor *convert_compressor_new(int level);

/* ---- convert.c: output staging shared by the CONCAT formats ---- */

/* Make room for need more bytes in sh->obuf; returns where they go. */
uint8_t *convert_obuf_reserve(struct convert_shard *sh, size_t need);
/* Hand staged bytes to the sink once at least 1 MiB is staged (always if force). */
int convert_obuf_flush(struct convert_shard *sh, int force, struct err *err);

/* ---- per format ---- */

/* vhd.c: FIXED layout (raw and vhd). */
int convert_fixed_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                       struct err *err);
int convert_fixed_last(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                       struct err *err);
int convert_vhd_finish(const struct convert_plan *plan, const struct convert_sink *sink,
                       struct err *err);

/* vmdk.c */
void convert_vmdk_head(struct convert_plan *plan);
int convert_vmdk_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                      struct err *err);
int convert_vmdk_finish(const struct convert_plan *plan, struct convert_result *const *results,
                        size_t n, const struct convert_sink *sink, uint64_t *tail_len,
                        struct err *err);

/* gcetar.c */
void convert_gce_plan(struct convert_plan *plan);
int convert_gce_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                     struct err *err);
int convert_gce_emit_zero(struct convert_shard *sh, uint64_t units, struct err *err);
int convert_gce_finish(const struct convert_plan *plan, const struct convert_sink *sink,
                       uint64_t *tail_len, struct err *err);

#endif
