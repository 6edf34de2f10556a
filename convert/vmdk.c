/*
 * vmdk.c: stream-optimized VMDK, as VMware's "Virtual Disk Format 5.0" describes it and
 * as AWS ImportImage takes it.
 *
 *   head   sector 0: sparse extent header (magic KDMV, version 3, flags: valid newline
 *          test + compressed grains + markers, grainSize 128 sectors, 512 GTEs per GT,
 *          gdOffset = GD_AT_END, overHead 128, compressAlgorithm 1 = deflate);
 *          sectors 1-20: the descriptor (createType="streamOptimized"); zeros up to 64 KiB.
 *   shards one grain per non-zero 64 KiB of the disk, in disk order: a grain marker (LBA
 *          in sectors, u64; compressed size, u32) followed by the zlib stream, padded to a
 *          sector. All-zero grains are omitted (their table entry stays 0).
 *   tail   for each grain table with at least one grain: a GT marker sector, then the
 *          table (512 sector offsets of grain markers, 4 sectors); a GD marker and the grain
 *          directory (sector offsets of the tables, 0 for an empty one); a footer marker and
 *          the footer (the header again, with the real gdOffset); the end-of-stream marker.
 *
 * Metadata markers are one sector: u64 val (sectors of metadata that follow), u32 size
 * (0), u32 type (0 end-of-stream, 1 GT, 2 GD, 3 footer). This is what VMware's own
 * stream writer produces (empty tables are not written there either).
 *
 * A grain marker carries its LBA, so a shard's output can sit anywhere; only the tables
 * need absolute offsets, and the finishing step computes them from each shard's output
 * length and its grains' offsets within that output (struct vmdk_grain_ref).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_int.h"
#include "xmalloc.h"

#define VMDK_FLAGS 0x00030001u /* bit 0 newline test, bit 16 compressed, bit 17 markers */
#define GD_AT_END UINT64_MAX
#define GT_SECTORS (VMDK_GTES_PER_GT * 4 / CONVERT_SECTOR)

enum { MARKER_EOS = 0, MARKER_GT = 1, MARKER_GD = 2, MARKER_FOOTER = 3 };

static void vmdk_header(uint8_t out[512], uint64_t capacity, uint64_t gd_offset)
{
    memset(out, 0, 512);
    memcpy(out, "KDMV", 4);
    put_le32(out + 4, 3);
    put_le32(out + 8, VMDK_FLAGS);
    put_le64(out + 12, capacity);
    put_le64(out + 20, VMDK_GRAIN_SECTORS);
    put_le64(out + 28, 1); /* descriptor offset */
    put_le64(out + 36, VMDK_DESC_SECTORS);
    put_le32(out + 44, VMDK_GTES_PER_GT);
    put_le64(out + 48, 0); /* no redundant grain directory */
    put_le64(out + 56, gd_offset);
    put_le64(out + 64, VMDK_HEAD_SECTORS); /* overHead: where the grains start */
    out[72] = 0;                           /* uncleanShutdown */
    out[73] = '\n';
    out[74] = ' ';
    out[75] = '\r';
    out[76] = '\n';
    put_le16(out + 77, 1); /* deflate */
}

void convert_vmdk_head(struct convert_plan *plan)
{
    uint64_t capacity = plan->disk_size / CONVERT_SECTOR;
    int ide = plan->p.adapter == CONVERT_ADAPTER_IDE;
    unsigned heads = ide ? 16 : 255;
    uint64_t cylinders = (capacity + 63ull * heads - 1) / (63ull * heads);
    const uint8_t *id = plan->p.id;
    uint32_t cid = (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
    if (cid == UINT32_MAX) /* reserved: parentCID's "no parent" */
        cid--;

    plan->head_len = VMDK_HEAD_SECTORS * CONVERT_SECTOR;
    plan->head = xcalloc(1, plan->head_len);
    vmdk_header(plan->head, capacity, GD_AT_END);
    char *desc = (char *)plan->head + CONVERT_SECTOR;
    int n = snprintf(desc, VMDK_DESC_SECTORS * CONVERT_SECTOR,
                     "# Disk DescriptorFile\n"
                     "version=1\n"
                     "CID=%08x\n"
                     "parentCID=ffffffff\n"
                     "createType=\"streamOptimized\"\n"
                     "\n"
                     "# Extent description\n"
                     "RW %llu SPARSE \"disk.vmdk\"\n"
                     "\n"
                     "# The Disk Data Base\n"
                     "#DDB\n"
                     "\n"
                     "ddb.virtualHWVersion = \"4\"\n"
                     "ddb.geometry.cylinders = \"%llu\"\n"
                     "ddb.geometry.heads = \"%u\"\n"
                     "ddb.geometry.sectors = \"63\"\n"
                     "ddb.adapterType = \"%s\"\n",
                     cid, (unsigned long long)capacity, (unsigned long long)cylinders, heads,
                     ide ? "ide" : "lsilogic");
    XM_ASSERT(n > 0 && n < (int)(VMDK_DESC_SECTORS * CONVERT_SECTOR));
}

/* ---- shards ---- */

int convert_vmdk_emit(struct convert_shard *sh, uint64_t at, const uint8_t *buf, size_t len,
                      struct err *err)
{
    size_t bound = 12 + convert_zlib_bound(VMDK_GRAIN) + CONVERT_SECTOR;
    uint8_t *pad = NULL;
    int rc = -1;
    for (size_t off = 0; off < len; off += VMDK_GRAIN) {
        size_t n = len - off < VMDK_GRAIN ? len - off : VMDK_GRAIN;
        const uint8_t *g = buf + off;
        if (convert_is_zero(g, n))
            continue;
        if (n < VMDK_GRAIN) { /* the disk's last grain: the rest of it reads as zeros */
            pad = xcalloc(1, VMDK_GRAIN);
            memcpy(pad, g, n);
            g = pad;
        }
        uint64_t grain = (sh->in_off + at + off) / VMDK_GRAIN;
        uint8_t *o = convert_obuf_reserve(sh, bound);
        size_t clen = convert_zlib(sh->comp, g, VMDK_GRAIN, o + 12, bound - 12 - CONVERT_SECTOR);
        size_t total = (12 + clen + CONVERT_SECTOR - 1) / CONVERT_SECTOR * CONVERT_SECTOR;
        put_le64(o, grain * VMDK_GRAIN_SECTORS);
        put_le32(o + 8, (uint32_t)clen);
        memset(o + 12 + clen, 0, total - 12 - clen);

        if (sh->ngrains == sh->grains_cap) {
            sh->grains_cap = sh->grains_cap ? 2 * sh->grains_cap : 256;
            sh->grains = xrealloc(sh->grains, sh->grains_cap * sizeof(*sh->grains));
        }
        uint64_t sector = (sh->out_pos + sh->olen) / CONVERT_SECTOR;
        if (sector > UINT32_MAX) {
            err_set(err, ERR_PERMANENT, "vmdk: shard %zu output over 2 TiB", sh->index);
            goto out;
        }
        sh->grains[sh->ngrains].grain = (uint32_t)(grain - sh->in_off / VMDK_GRAIN);
        sh->grains[sh->ngrains].sector = (uint32_t)sector;
        sh->ngrains++;
        sh->olen += total;
        if (convert_obuf_flush(sh, 0, err) < 0)
            goto out;
    }
    rc = 0;
out:
    free(pad);
    return rc;
}

/* ---- the tail ---- */

struct tail {
    const struct convert_sink *sink;
    uint8_t *buf; /* staging (new) */
    size_t len, cap;
    uint64_t off; /* bytes handed to the sink */
};

static int tail_flush(struct tail *t, struct err *err)
{
    if (t->len && t->sink->write(t->sink->ctx, t->off, t->buf, t->len, err) < 0)
        return -1;
    t->off += t->len;
    t->len = 0;
    return 0;
}

/* Room for n bytes (n <= cap), zeroed; returns where they go. */
static uint8_t *tail_put(struct tail *t, size_t n, struct err *err, int *rc)
{
    XM_ASSERT(n <= t->cap);
    if (t->cap - t->len < n && tail_flush(t, err) < 0) {
        *rc = -1;
        return NULL;
    }
    uint8_t *p = t->buf + t->len;
    memset(p, 0, n);
    t->len += n;
    return p;
}

static uint64_t tail_sector(const struct tail *t, uint64_t start)
{
    return start + (t->off + t->len) / CONVERT_SECTOR;
}

static int put_marker(struct tail *t, uint64_t val, uint32_t type, struct err *err)
{
    int rc = 0;
    uint8_t *m = tail_put(t, CONVERT_SECTOR, err, &rc);
    if (!m)
        return rc;
    put_le64(m, val);
    put_le32(m + 8, 0);
    put_le32(m + 12, type);
    return 0;
}

int convert_vmdk_finish(const struct convert_plan *plan, struct convert_result *const *results,
                        size_t n, const struct convert_sink *sink, uint64_t *tail_len,
                        struct err *err)
{
    uint64_t capacity = plan->disk_size / CONVERT_SECTOR;
    uint64_t ngrains = (capacity + VMDK_GRAIN_SECTORS - 1) / VMDK_GRAIN_SECTORS;
    uint64_t ngt = (ngrains + VMDK_GTES_PER_GT - 1) / VMDK_GTES_PER_GT;
    uint64_t gd_sectors = (ngt * 4 + CONVERT_SECTOR - 1) / CONVERT_SECTOR;
    uint64_t *base = xcalloc(n ? n : 1, sizeof(*base));
    uint32_t *gd = xcalloc((size_t)ngt, sizeof(*gd));
    struct tail t = {.sink = sink, .cap = 1u << 20};
    t.buf = xmalloc(t.cap);
    int rc = -1;

    uint64_t sector = VMDK_HEAD_SECTORS;
    for (size_t i = 0; i < n; i++) {
        base[i] = sector;
        sector += results[i]->out_len / CONVERT_SECTOR;
    }
    const uint64_t start = sector;
    /* Every grain and table offset is a 32-bit sector number. */
    if (start + ngt * (1 + GT_SECTORS) > UINT32_MAX) {
        err_set(err, ERR_PERMANENT, "vmdk: image over 2 TiB of sectors");
        goto out;
    }

    /* Grain tables, from the shards' grain lists (in disk order across shards). */
    size_t s = 0, k = 0;
    for (uint64_t gt = 0; gt < ngt; gt++) {
        uint64_t first = gt * VMDK_GTES_PER_GT, end = first + VMDK_GTES_PER_GT;
        uint8_t *table = NULL;
        for (;;) {
            while (s < n && k >= results[s]->ngrains) {
                s++;
                k = 0;
            }
            if (s >= n)
                break;
            const struct vmdk_grain_ref *g = &results[s]->grains[k];
            uint64_t grain = results[s]->in_off / VMDK_GRAIN + g->grain;
            if (grain >= end)
                break;
            if (!table) {
                if (put_marker(&t, GT_SECTORS, MARKER_GT, err) < 0)
                    goto out;
                gd[gt] = (uint32_t)tail_sector(&t, start);
                if (!(table = tail_put(&t, GT_SECTORS * CONVERT_SECTOR, err, &rc)))
                    goto out;
            }
            put_le32(table + 4 * (grain - first), (uint32_t)(base[s] + g->sector));
            k++;
        }
    }

    if (put_marker(&t, gd_sectors, MARKER_GD, err) < 0)
        goto out;
    uint64_t gd_offset = tail_sector(&t, start);
    for (uint64_t done = 0; done < ngt;) {
        uint64_t chunk = ngt - done;
        if (chunk > t.cap / 4)
            chunk = t.cap / 4;
        size_t bytes = (size_t)chunk * 4;
        if (done + chunk == ngt) /* pad the directory to a sector */
            bytes = (bytes + CONVERT_SECTOR - 1) / CONVERT_SECTOR * CONVERT_SECTOR;
        uint8_t *p = tail_put(&t, bytes, err, &rc);
        if (!p)
            goto out;
        for (uint64_t i = 0; i < chunk; i++)
            put_le32(p + 4 * i, gd[done + i]);
        done += chunk;
    }
    if (put_marker(&t, 1, MARKER_FOOTER, err) < 0)
        goto out;
    uint8_t *footer = tail_put(&t, CONVERT_SECTOR, err, &rc);
    if (!footer)
        goto out;
    vmdk_header(footer, capacity, gd_offset);
    if (put_marker(&t, 0, MARKER_EOS, err) < 0 || tail_flush(&t, err) < 0)
        goto out;
    *tail_len = t.off;
    rc = 0;
out:
    free(t.buf);
    free(gd);
    free(base);
    return rc;
}
