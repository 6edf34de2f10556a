/*
 * convert: the image format writers (raw, Azure fixed VHD, stream-optimized VMDK, GCE
 * tar.gz), built so that an image can be written in independent pieces by different
 * processes.
 *
 * An image is planned once, then written as pieces:
 *
 *     head ++ shard 0 ++ shard 1 ++ ... ++ shard n-1 ++ tail
 *
 * A shard is a contiguous range of the source disk (shard_size bytes, the last one
 * shorter). Each shard is converted on its own, in any order, by any process, from its
 * input bytes alone: it never needs another shard's data or output. It returns a small
 * struct convert_result (its output length and, for VMDK, where each grain landed in its
 * output) that can be encoded to bytes, stored anywhere (Redis, object storage) and
 * decoded by the process that finishes the image. Finishing needs only the plan and every
 * shard's result, never shard data.
 *
 * Two layouts:
 *   CONVERT_LAYOUT_FIXED (raw, vhd): every piece lands at an offset known from the plan
 *     (a shard's output is its own input range, at the same offset; the VHD footer sits
 *     at the padded disk size). All-zero ranges are never written: the destination must
 *     read as zeros where nothing was written (a file made with ftruncate, a new Azure page
 *     blob of convert_plan_fixed_size() bytes). The head is empty.
 *   CONVERT_LAYOUT_CONCAT (vmdk, gce-tar): pieces are concatenated in the order above
 *     (S3 multipart parts, GCS compose components, or one file). A shard's output length
 *     is only known when it is done. How pieces are grouped in transport does not matter
 *     (head and shard 0 may share a multipart part; an empty shard output, e.g. an all-zero
 *     VMDK shard, contributes no bytes), only their order.
 *
 * Using it from a sharded converter:
 *   1. every process builds the same plan from the same struct convert_params (the job
 *      carries format, size, shard size, created time and id, so retries produce the
 *      same bytes);
 *   2. shard i: convert_shard_new(plan, i, sink), then convert_shard_write() and
 *      convert_shard_zero() over its input range in order, then convert_shard_finish()
 *      -> result; store convert_result_encode(result);
 *   3. the finishing process: convert_result_decode() every shard's stored result, write
 *      the head (convert_plan_head()) and the tail (convert_finish()).
 *
 * Ownership: a plan is immutable once made and may be shared by threads; shards and
 * results belong to one thread at a time. A shard borrows its plan and sink, which must
 * outlive it. Library code: nothing here logs or exits; fallible calls return 0 / -1 or
 * NULL and fill struct err. Out of memory aborts (xmalloc). Nothing blocks except inside
 * the caller's sink.
 */
#ifndef XM_CONVERT_H
#define XM_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum convert_format {
    CONVERT_RAW = 0,  /* the disk as is (AWS raw import) */
    CONVERT_VHD,      /* Azure fixed VHD: disk rounded up to a MiB, then a 512-byte footer */
    CONVERT_VMDK,     /* stream-optimized VMDK (VMware Virtual Disk Format 5.0) */
    CONVERT_GCE_TAR,  /* GCE image: disk.raw rounded up to a GiB in an oldgnu tar, gzip'd */
    CONVERT_FORMAT_N, /* count, not a format */
};

/* "raw", "vhd", "vmdk", "gce-tar". */
const char *convert_format_str(enum convert_format f);
/* Parse a name as above; -1 (permanent) if unknown. */
int convert_format_parse(const char *name, enum convert_format *out, struct err *err);

enum convert_layout {
    CONVERT_LAYOUT_FIXED,  /* raw, vhd: pieces at offsets known from the plan */
    CONVERT_LAYOUT_CONCAT, /* vmdk, gce-tar: head ++ shards in order ++ tail */
};
const char *convert_layout_str(enum convert_layout l);

enum convert_adapter {
    CONVERT_ADAPTER_LSILOGIC = 0, /* VMDK ddb.adapterType "lsilogic" (default) */
    CONVERT_ADAPTER_IDE,          /* "ide" */
};

#define CONVERT_LEVEL_DEFAULT 6            /* deflate level (libdeflate 1..12) when params say 0 */
#define CONVERT_WRITE_MAX (4u << 20)       /* no single sink write is longer (Azure Put Page) */
#define CONVERT_SIZE_MAX (64ull << 40)     /* cap on any disk: 64 TiB */
#define CONVERT_VMDK_SIZE_MAX (2ull << 40) /* VMDK grain offsets are 32-bit sectors */
#define CONVERT_SHARDS_MAX 1000000u        /* cap on shards per image */

/* What a plan is made from. Every process of one image must pass the same values. */
struct convert_params {
    enum convert_format format;
    uint64_t in_size;             /* bytes of the source disk, > 0 */
    uint64_t shard_size;          /* bytes per shard (the last is shorter), a multiple of
                                     convert_shard_align(format); 0: one shard */
    int64_t created;              /* Unix time written into the image (VHD timestamp, tar mtime) */
    uint8_t id[16];               /* VHD unique id (a UUID); the VMDK CID is its first 4 bytes */
    int level;                    /* deflate level for vmdk and gce-tar, 1..12; 0: default */
    enum convert_adapter adapter; /* VMDK only */
};

/* The alignment a shard boundary needs: 65536 (a VMDK grain) for vmdk, else 512. */
uint64_t convert_shard_align(enum convert_format f);

struct convert_plan;

/* A new plan (free with convert_plan_free), or NULL with err (permanent) for bad params. */
struct convert_plan *convert_plan_new(const struct convert_params *params, struct err *err);
void convert_plan_free(struct convert_plan *plan);

/* The params it was made from (borrowed, lives as long as the plan). */
const struct convert_params *convert_plan_params(const struct convert_plan *plan);
enum convert_layout convert_plan_layout(const struct convert_plan *plan);
size_t convert_plan_nshards(const struct convert_plan *plan);
/* Shard i's input range. i < nshards. */
void convert_plan_shard(const struct convert_plan *plan, size_t i, uint64_t *in_off,
                        uint64_t *in_len);
/* The disk size the image presents: raw: in_size; vhd: rounded up to a MiB; vmdk: to a
 * sector; gce-tar: to a GiB (the size of disk.raw). */
uint64_t convert_plan_disk_size(const struct convert_plan *plan);
/* FIXED layout: the whole output's size (vhd: disk size + 512), to create the destination
 * with before any shard writes. 0 for CONCAT layouts (known only after convert_finish). */
uint64_t convert_plan_fixed_size(const struct convert_plan *plan);
/* The head bytes (borrowed, *len may be 0): vmdk: sparse header and descriptor, 64 KiB;
 * gce-tar: one gzip member holding the tar header of disk.raw; raw, vhd: empty. */
const uint8_t *convert_plan_head(const struct convert_plan *plan, size_t *len);

/*
 * Where output bytes go. write() is called with strictly increasing offsets, each write
 * at most CONVERT_WRITE_MAX bytes, buf borrowed for the call only. off is
 *   FIXED layout:  the absolute offset in the output image (gaps are zeros never sent);
 *                  for vhd every write is whole 512-byte sectors, sector aligned;
 *   CONCAT layout: the offset within this piece (shard or tail), contiguous from 0.
 * It returns 0, or -1 with err filled (its kind decides retry); the error is passed on.
 */
struct convert_sink {
    int (*write)(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err);
    void *ctx;
};

struct convert_shard;
struct convert_result;

/* Start shard i (< nshards) writing to sink. plan and sink are borrowed. Never NULL. */
struct convert_shard *convert_shard_new(const struct convert_plan *plan, size_t i,
                                        const struct convert_sink *sink);
/* The next len input bytes of the shard, in order. Blocks in the sink. buf borrowed. */
int convert_shard_write(struct convert_shard *sh, const void *buf, size_t len, struct err *err);
/* The next len input bytes are zeros (a hole, a chunk the manifest marks as zero). */
int convert_shard_zero(struct convert_shard *sh, uint64_t len, struct err *err);
/* After exactly the shard's in_len bytes: flush and return its result (new; free with
 * convert_result_free), or NULL with err (permanent if the input was short). The shard is
 * spent afterwards: only convert_shard_free may follow. */
struct convert_result *convert_shard_finish(struct convert_shard *sh, struct err *err);
void convert_shard_free(struct convert_shard *sh);

/* Which shard, and how many output bytes it produced (CONCAT: its piece's length; FIXED:
 * the bytes actually written, holes not counted). */
size_t convert_result_shard(const struct convert_result *r);
uint64_t convert_result_out_len(const struct convert_result *r);
/* VMDK: how many grains the shard stored (all-zero grains are not stored). */
size_t convert_result_ngrains(const struct convert_result *r);
void convert_result_free(struct convert_result *r);

/* The result as bytes (new, free()): little-endian, versioned, CRC-32 checked. A VMDK
 * shard's result is 52 bytes plus 8 per stored grain. */
uint8_t *convert_result_encode(const struct convert_result *r, size_t *len);
/* Decode bytes made by convert_result_encode for this plan (new result), or NULL with err
 * (permanent) if they are damaged or belong to another plan or shard. */
struct convert_result *convert_result_decode(const struct convert_plan *plan, const void *buf,
                                             size_t len, struct err *err);

/*
 * Write the tail from every shard's result (results[i] is shard i, n == nshards):
 *   raw: nothing; vhd: the footer, at offset disk_size (FIXED: absolute offsets);
 *   vmdk: grain tables, grain directory, footer, end-of-stream marker (from offset 0 of
 *         the tail piece);
 *   gce-tar: the zero padding of disk.raw up to a GiB and the end of the tar archive, as
 *         gzip members.
 * Sets *total (if not NULL) to the size of the whole output image. Blocks in the sink.
 * Idempotent: the same plan and results give the same bytes.
 */
int convert_finish(const struct convert_plan *plan, struct convert_result *const *results, size_t n,
                   const struct convert_sink *sink, uint64_t *total, struct err *err);

/* ---- format details exposed for tests (fixed inputs give fixed bytes) ---- */

/* VHD CHS geometry for a disk of total_sectors, by the algorithm in Microsoft's VHD
 * specification (capped at 65535/16/255). */
void convert_vhd_chs(uint64_t total_sectors, unsigned *cylinders, unsigned *heads,
                     unsigned *sectors_per_track);
/* The 512-byte fixed-VHD footer for a disk of disk_size bytes (a MiB multiple). */
void convert_vhd_footer(uint8_t out[512], uint64_t disk_size, int64_t created,
                        const uint8_t id[16]);
/* The 512-byte oldgnu tar header of a regular file "disk.raw" of size bytes. */
void convert_tar_header(uint8_t out[512], uint64_t size, int64_t mtime);

#endif
