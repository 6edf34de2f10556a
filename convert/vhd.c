/*
 * vhd.c: the FIXED layout (raw and Azure fixed VHD) and the VHD footer.
 *
 * A fixed VHD is the disk, rounded up to a whole MiB (Azure refuses anything else), then
 * one 512-byte footer as Microsoft's "Virtual Hard Disk Image Format Specification" (v1.0)
 * describes it; fields are big-endian. A shard's output is its own input range at the
 * same offset; all-zero 4 KiB blocks are left as holes, so the destination must read as
 * zeros where nothing is written (ftruncate'd file, new page blob).
 *
 * Creator application: readers do not agree on what size a VHD has. Virtual PC (and
 * qemu, for the creators it does not know) take it from the CHS geometry, which is
 * smaller than the disk for most sizes; Hyper-V and Azure take Current Size. qemu 7.2
 * reads Current Size only for the creators "win " (Hyper-V), "qem2", "d2v ", "CTXS" and
 * "tap". We write the Hyper-V identity ("win ", version 10.0, host "Wi2k"), whose
 * semantics (size = Current Size, a whole MiB) are exactly what Azure requires, so every
 * reader sees the same size.
 */
#include <string.h>

#include "convert_int.h"
#include "xmalloc.h"

#define VHD_EPOCH 946684800 /* 2000-01-01T00:00:00Z as Unix time */
#define ZERO_BLOCK 4096u

void convert_vhd_chs(uint64_t total_sectors, unsigned *cylinders, unsigned *heads,
                     unsigned *sectors_per_track)
{
    uint64_t spt, hds, cth;
    if (total_sectors > 65535ull * 16 * 255)
        total_sectors = 65535ull * 16 * 255;
    if (total_sectors >= 65535ull * 16 * 63) {
        spt = 255;
        hds = 16;
        cth = total_sectors / spt;
    } else {
        spt = 17;
        cth = total_sectors / spt;
        hds = (cth + 1023) / 1024;
        if (hds < 4)
            hds = 4;
        if (cth >= hds * 1024 || hds > 16) {
            spt = 31;
            hds = 16;
            cth = total_sectors / spt;
        }
        if (cth >= hds * 1024) {
            spt = 63;
            hds = 16;
            cth = total_sectors / spt;
        }
    }
    *cylinders = (unsigned)(cth / hds);
    *heads = (unsigned)hds;
    *sectors_per_track = (unsigned)spt;
}

void convert_vhd_footer(uint8_t out[512], uint64_t disk_size, int64_t created, const uint8_t id[16])
{
    memset(out, 0, 512);
    memcpy(out, "conectix", 8);
    put_be32(out + 8, 0x00000002);  /* features: the reserved bit, always set */
    put_be32(out + 12, 0x00010000); /* file format version 1.0 */
    put_be64(out + 16, UINT64_MAX); /* data offset: none, a fixed disk */
    int64_t ts = created - VHD_EPOCH;
    put_be32(out + 24, ts < 0 ? 0 : ts > UINT32_MAX ? UINT32_MAX : (uint32_t)ts);
    memcpy(out + 28, "win ", 4);    /* creator application: see the top of this file */
    put_be32(out + 32, 0x000a0000); /* creator version 10.0 */
    memcpy(out + 36, "Wi2k", 4);    /* creator host OS: Windows */
    put_be64(out + 40, disk_size);  /* original size */
    put_be64(out + 48, disk_size);  /* current size */
    unsigned c, h, s;
    convert_vhd_chs(disk_size / CONVERT_SECTOR, &c, &h, &s);
    out[56] = (uint8_t)(c >> 8);
    out[57] = (uint8_t)c;
    out[58] = (uint8_t)h;
    out[59] = (uint8_t)s;
    put_be32(out + 60, 2); /* disk type: fixed */
    memcpy(out + 68, id, 16);
    out[84] = 0; /* saved state */
    uint32_t sum = 0;
    for (int i = 0; i < 512; i++)
        sum += out[i];
    put_be32(out + 64, ~sum); /* one's complement of the byte sum, checksum field zero */
}

/* ---- shards ---- */

static int fixed_write(struct convert_shard *sh, uint64_t off, const uint8_t *buf, size_t len,
                       struct err *err)
{
    if (sh->sink->write(sh->sink->ctx, off, buf, len, err) < 0)
        return -1;
    sh->written += len;
    return 0;
}

int convert_fixed_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                       struct err *err)
{
    uint64_t base = sh->in_off + at;
    size_t run = 0, run_len = 0;
    for (size_t i = 0; i < len;) {
        size_t blk = ZERO_BLOCK - (size_t)((base + i) % ZERO_BLOCK);
        if (blk > len - i)
            blk = len - i;
        if (convert_is_zero(buf + i, blk)) {
            if (run_len && fixed_write(sh, base + run, buf + run, run_len, err) < 0)
                return -1;
            run_len = 0;
        } else {
            if (run_len + blk > CONVERT_WRITE_MAX) {
                if (fixed_write(sh, base + run, buf + run, run_len, err) < 0)
                    return -1;
                run_len = 0;
            }
            if (!run_len)
                run = i;
            run_len += blk;
        }
        i += blk;
    }
    if (run_len && fixed_write(sh, base + run, buf + run, run_len, err) < 0)
        return -1;
    return 0;
}

int convert_fixed_last(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                       struct err *err)
{
    XM_ASSERT(len < CONVERT_SECTOR);
    if (convert_is_zero(buf, len))
        return 0;
    if (sh->plan->p.format == CONVERT_RAW)
        return fixed_write(sh, sh->in_off + at, buf, len, err);
    /* VHD: the disk goes on to a MiB boundary, so finish the sector with zeros. */
    uint8_t sector[CONVERT_SECTOR] = {0};
    memcpy(sector, buf, len);
    return fixed_write(sh, sh->in_off + at, sector, sizeof(sector), err);
}

int convert_vhd_finish(const struct convert_plan *plan, const struct convert_sink *sink,
                       struct err *err)
{
    uint8_t footer[512];
    convert_vhd_footer(footer, plan->disk_size, plan->p.created, plan->p.id);
    return sink->write(sink->ctx, plan->disk_size, footer, sizeof(footer), err);
}
