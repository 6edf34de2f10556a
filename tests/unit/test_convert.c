/* convert/: plans, the VHD footer and CHS geometry, the tar header, shards run out of order
 * with their results encoded and decoded, and the images they make read back by decoders
 * written here from the format specifications (zlib inflates the compressed parts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <libdeflate.h>

#include "convert.h"
#include "convert_int.h"
#include "xmalloc.h"

/* ---- helpers ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A disk of len bytes: regions of zeros, text and random bytes, in turn, of region bytes. */
static uint8_t *make_disk(size_t len, size_t region)
{
    uint8_t *d = xcalloc(1, len ? len : 1);
    static const char words[] = "kernel: eth0 link up 1000Mbps full duplex; sshd accepted ";
    for (size_t off = 0, r = 0; off < len; off += region, r++) {
        size_t n = len - off < region ? len - off : region;
        if (r % 3 == 1)
            for (size_t i = 0; i < n; i++)
                d[off + i] = (uint8_t)words[(i + r) % (sizeof(words) - 1)] ^ (i % 97 == 0);
        else if (r % 3 == 2)
            for (size_t i = 0; i < n; i++)
                d[off + i] = (uint8_t)next_rand();
    }
    return d;
}

struct mem {
    uint8_t *p;
    size_t len, cap;
    uint64_t writes;
};

static int mem_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct mem *m = ctx;
    (void)err;
    assert_true(len <= CONVERT_WRITE_MAX);
    assert_int_equal(off, m->len); /* CONCAT pieces are written in order, from 0 */
    if (m->cap - m->len < len) {
        m->cap = (m->len + len) * 2;
        m->p = xrealloc(m->p, m->cap);
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    m->writes++;
    return 0;
}

/* A FIXED layout destination: the whole image in memory, zero where nothing was written. */
struct image {
    uint8_t *p;
    uint64_t size;
    int sector_writes; /* every write must be whole sectors (vhd) */
};

static int image_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct image *im = ctx;
    (void)err;
    assert_true(len <= CONVERT_WRITE_MAX);
    assert_true(off + len <= im->size);
    if (im->sector_writes) {
        assert_int_equal(off % 512, 0);
        assert_int_equal(len % 512, 0);
    }
    memcpy(im->p + off, buf, len);
    return 0;
}

static int failing_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    (void)ctx, (void)off, (void)buf, (void)len;
    return err_set(err, ERR_TRANSIENT, "storage said 503");
}

static struct convert_plan *plan_of(enum convert_format f, uint64_t size, uint64_t shard)
{
    struct convert_params p = {
        .format = f, .in_size = size, .shard_size = shard, .created = 1764113160};
    for (int i = 0; i < 16; i++)
        p.id[i] = (uint8_t)(0xa0 + i);
    struct err e = {0};
    struct convert_plan *plan = convert_plan_new(&p, &e);
    if (!plan)
        fail_msg("plan: %s", e.msg);
    return plan;
}

/* Run shard i over disk, fed in awkward pieces: odd-sized writes, and every all-zero
 * 64 KiB-aligned stretch given as convert_shard_zero() instead. */
static struct convert_result *run_shard(const struct convert_plan *plan, size_t i,
                                        const uint8_t *disk, const struct convert_sink *sink)
{
    uint64_t off, len;
    convert_plan_shard(plan, i, &off, &len);
    struct convert_shard *sh = convert_shard_new(plan, i, sink);
    struct err e = {0};
    uint64_t pos = 0;
    size_t step = 1000;
    while (pos < len) {
        size_t n = len - pos < step ? (size_t)(len - pos) : step;
        if (convert_is_zero(disk + off + pos, n))
            assert_int_equal(convert_shard_zero(sh, n, &e), 0);
        else
            assert_int_equal(convert_shard_write(sh, disk + off + pos, n, &e), 0);
        pos += n;
        step = step == 1000 ? 70000 : step == 70000 ? 3u << 20 : 1000;
    }
    struct convert_result *r = convert_shard_finish(sh, &e);
    if (!r)
        fail_msg("shard %zu: %s", i, e.msg);
    convert_shard_free(sh);
    return r;
}

/* Encode and decode a result, as a process handing it to the finisher would. */
static struct convert_result *through_bytes(const struct convert_plan *plan,
                                            struct convert_result *r)
{
    size_t len;
    uint8_t *b = convert_result_encode(r, &len);
    struct err e = {0};
    struct convert_result *back = convert_result_decode(plan, b, len, &e);
    if (!back)
        fail_msg("decode: %s", e.msg);
    assert_int_equal(convert_result_out_len(back), convert_result_out_len(r));
    assert_int_equal(convert_result_ngrains(back), convert_result_ngrains(r));
    free(b);
    convert_result_free(r);
    return back;
}

/* CONCAT: every shard (last first) into its own piece; returns head ++ pieces ++ tail. */
static uint8_t *build_concat(const struct convert_plan *plan, const uint8_t *disk, size_t *out_len)
{
    size_t n = convert_plan_nshards(plan);
    struct mem *pieces = xcalloc(n, sizeof(*pieces));
    struct convert_result **res = xcalloc(n, sizeof(*res));
    for (size_t k = n; k-- > 0;) {
        struct convert_sink s = {mem_write, &pieces[k]};
        res[k] = through_bytes(plan, run_shard(plan, k, disk, &s));
        assert_int_equal(convert_result_out_len(res[k]), pieces[k].len);
    }
    struct mem tail = {0};
    struct convert_sink ts = {mem_write, &tail};
    uint64_t total = 0;
    struct err e = {0};
    assert_int_equal(convert_finish(plan, res, n, &ts, &total, &e), 0);

    size_t head_len;
    const uint8_t *head = convert_plan_head(plan, &head_len);
    uint8_t *img = xmalloc(total);
    size_t o = 0;
    memcpy(img, head, head_len);
    o += head_len;
    for (size_t k = 0; k < n; k++) {
        if (pieces[k].len)
            memcpy(img + o, pieces[k].p, pieces[k].len);
        o += pieces[k].len;
        free(pieces[k].p);
        convert_result_free(res[k]);
    }
    memcpy(img + o, tail.p, tail.len);
    o += tail.len;
    assert_int_equal(o, total);
    free(tail.p);
    free(pieces);
    free(res);
    *out_len = o;
    return img;
}

/* ---- plans ---- */

static void test_plan_params(void **state)
{
    (void)state;
    struct err e = {0};
    struct convert_params p = {.format = CONVERT_VMDK, .in_size = 0};
    assert_null(convert_plan_new(&p, &e));
    assert_int_equal(e.kind, ERR_PERMANENT);

    p.in_size = 10 << 20;
    p.shard_size = (1 << 20) + 512; /* not a grain multiple */
    assert_null(convert_plan_new(&p, &e));
    assert_non_null(strstr(e.msg, "not a multiple of 65536"));

    p.shard_size = 1 << 20;
    p.level = 13;
    assert_null(convert_plan_new(&p, &e));
    p.level = 0;

    p.in_size = CONVERT_VMDK_SIZE_MAX + 512;
    p.shard_size = 64ull << 20;
    assert_null(convert_plan_new(&p, &e));

    p.format = CONVERT_RAW;
    p.in_size = 1ull << 40;
    p.shard_size = 512; /* 2^31 shards */
    assert_null(convert_plan_new(&p, &e));
    assert_non_null(strstr(e.msg, "shards"));

    p.format = (enum convert_format)42;
    assert_null(convert_plan_new(&p, &e));

    enum convert_format f;
    assert_int_equal(convert_format_parse("gce-tar", &f, &e), 0);
    assert_int_equal(f, CONVERT_GCE_TAR);
    assert_int_equal(convert_format_parse("qcow2", &f, &e), -1);
    assert_string_equal(convert_format_str(CONVERT_VHD), "vhd");

    /* Sizes and shards of each format. */
    struct convert_plan *plan = plan_of(CONVERT_VHD, (5 << 20) + 1000, 2 << 20);
    assert_int_equal(convert_plan_nshards(plan), 3);
    uint64_t off, len;
    convert_plan_shard(plan, 2, &off, &len);
    assert_int_equal(off, 4 << 20);
    assert_int_equal(len, (1 << 20) + 1000);
    assert_int_equal(convert_plan_disk_size(plan), 6 << 20);
    assert_int_equal(convert_plan_fixed_size(plan), (6 << 20) + 512);
    assert_int_equal(convert_plan_layout(plan), CONVERT_LAYOUT_FIXED);
    convert_plan_free(plan);

    plan = plan_of(CONVERT_GCE_TAR, (5 << 20) + 1000, 0);
    assert_int_equal(convert_plan_nshards(plan), 1);
    assert_int_equal(convert_plan_disk_size(plan), 1 << 30);
    assert_int_equal(convert_plan_fixed_size(plan), 0);
    convert_plan_free(plan);

    plan = plan_of(CONVERT_VMDK, 1000, 0);
    assert_int_equal(convert_plan_disk_size(plan), 1024);
    convert_plan_free(plan);
    convert_plan_free(NULL);
}

/* ---- VHD ---- */

static void test_vhd_chs(void **state)
{
    (void)state;
    /* From the algorithm in the VHD specification (appendix "CHS calculation"), worked
     * by hand; 1 GiB is also the geometry Azure's own footer generator hard-codes. */
    static const struct {
        uint64_t sectors;
        unsigned c, h, s;
    } cases[] = {
        {1, 0, 4, 17},
        {1 * 2048, 30, 4, 17},
        {10 * 2048, 301, 4, 17},
        {32 * 2048, 963, 4, 17},
        {64 * 2048, 963, 8, 17},
        {100 * 2048, 1003, 12, 17},
        {127 * 2048, 1019, 15, 17},
        {128 * 2048, 963, 16, 17},
        {500 * 2048, 1015, 16, 63},
        {1024 * 2048, 2080, 16, 63},
        {2048 * 2048, 4161, 16, 63},
        {100 * 1024 * 2048ull, 51400, 16, 255},
        {127 * 1024 * 2048ull, 65278, 16, 255},
        {65535ull * 16 * 255, 65535, 16, 255},
        {200 * 1024 * 2048ull, 65535, 16, 255}, /* over the CHS range: capped */
    };
    for (size_t i = 0; i < XM_ARRAY_LEN(cases); i++) {
        unsigned c, h, s;
        convert_vhd_chs(cases[i].sectors, &c, &h, &s);
        if (c != cases[i].c || h != cases[i].h || s != cases[i].s)
            fail_msg("%llu sectors: %u/%u/%u, want %u/%u/%u", (unsigned long long)cases[i].sectors,
                     c, h, s, cases[i].c, cases[i].h, cases[i].s);
    }
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void test_vhd_footer(void **state)
{
    (void)state;
    uint8_t f[512], id[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)i;
    convert_vhd_footer(f, 1ull << 30, 946684800 + 0x12345678, id);
    assert_memory_equal(f, "conectix", 8);
    assert_int_equal(be32(f + 8), 2);
    assert_int_equal(be32(f + 12), 0x00010000);
    assert_true(be64(f + 16) == UINT64_MAX);
    assert_int_equal(be32(f + 24), 0x12345678); /* seconds since 2000-01-01 UTC */
    assert_memory_equal(f + 28, "win ", 4);
    assert_int_equal(be32(f + 32), 0x000a0000);
    assert_memory_equal(f + 36, "Wi2k", 4);
    assert_true(be64(f + 40) == 1ull << 30);
    assert_true(be64(f + 48) == 1ull << 30);
    assert_int_equal(f[56] << 8 | f[57], 2080);
    assert_int_equal(f[58], 16);
    assert_int_equal(f[59], 63);
    assert_int_equal(be32(f + 60), 2);
    /* Computed independently (Python, byte sum of the same fields). */
    assert_int_equal(be32(f + 64), 0xffffef4d);
    assert_memory_equal(f + 68, id, 16);
    for (int i = 84; i < 512; i++)
        assert_int_equal(f[i], 0);
    /* The checksum rule itself: one's complement of the sum with the field zeroed. */
    uint32_t sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (i >= 64 && i < 68) ? 0 : f[i];
    assert_int_equal(~sum, be32(f + 64));

    /* Before 2000 the timestamp is 0, not a wrapped negative number. */
    convert_vhd_footer(f, 1ull << 20, 0, id);
    assert_int_equal(be32(f + 24), 0);
}

static void test_vhd_and_raw_shards(void **state)
{
    (void)state;
    const size_t size = (3u << 20) + 4096 * 5 + 700; /* not a sector multiple */
    uint8_t *disk = make_disk(size, 300 * 1024);
    disk[size - 1] = 0x5a;
    for (int f = CONVERT_RAW; f <= CONVERT_VHD; f++) {
        struct convert_plan *plan = plan_of((enum convert_format)f, size, 600 * 512);
        struct image im = {.size = convert_plan_fixed_size(plan),
                           .sector_writes = f == CONVERT_VHD};
        im.p = xcalloc(1, im.size);
        struct convert_sink s = {image_write, &im};
        size_t n = convert_plan_nshards(plan);
        struct convert_result **res = xcalloc(n, sizeof(*res));
        uint64_t written = 0;
        for (size_t k = n; k-- > 0;) {
            res[k] = through_bytes(plan, run_shard(plan, k, disk, &s));
            written += convert_result_out_len(res[k]);
        }
        assert_true(written < size); /* the zero regions were holes */
        uint64_t total = 0;
        struct err e = {0};
        assert_int_equal(convert_finish(plan, res, n, &s, &total, &e), 0);
        assert_int_equal(total, im.size);
        assert_memory_equal(im.p, disk, size);
        if (f == CONVERT_VHD) {
            assert_int_equal(im.size, (4u << 20) + 512);
            assert_true(convert_is_zero(im.p + size, (4u << 20) - size));
            assert_memory_equal(im.p + (4u << 20), "conectix", 8);
            assert_true(be64(im.p + (4u << 20) + 48) == 4u << 20);
        } else {
            assert_int_equal(im.size, size);
        }
        for (size_t k = 0; k < n; k++)
            convert_result_free(res[k]);
        free(res);
        free(im.p);
        convert_plan_free(plan);
    }
    free(disk);
}

/* ---- VMDK ---- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void check_vmdk_header(const uint8_t *h, uint64_t capacity, uint64_t gd)
{
    assert_memory_equal(h, "KDMV", 4);
    assert_int_equal(le32(h + 4), 3);
    assert_int_equal(le32(h + 8), 0x30001);
    assert_true(le64(h + 12) == capacity);
    assert_int_equal(le64(h + 20), 128);
    assert_int_equal(le64(h + 28), 1);
    assert_int_equal(le64(h + 36), 20);
    assert_int_equal(le32(h + 44), 512);
    assert_int_equal(le64(h + 48), 0);
    assert_true(le64(h + 56) == gd);
    assert_int_equal(le64(h + 64), 128);
    assert_int_equal(h[72], 0);
    assert_memory_equal(h + 73, "\n \r\n", 4);
    assert_int_equal(h[77] | h[78] << 8, 1);
}

/* Read a stream-optimized VMDK the way its specification says and compare every grain. */
static void check_vmdk(const uint8_t *img, size_t len, const uint8_t *disk, size_t size)
{
    uint64_t capacity = (size + 511) / 512;
    assert_int_equal(len % 512, 0);
    check_vmdk_header(img, capacity, UINT64_MAX);
    assert_non_null(strstr((const char *)img + 512, "createType=\"streamOptimized\""));

    const uint8_t *eos = img + len - 512, *footer = img + len - 1024, *fm = img + len - 1536;
    assert_true(convert_is_zero(eos, 512));
    assert_int_equal(le64(fm), 1);
    assert_int_equal(le32(fm + 8), 0);
    assert_int_equal(le32(fm + 12), 3);
    uint64_t gd = le64(footer + 56);
    check_vmdk_header(footer, capacity, gd);

    uint64_t grains = (capacity + 127) / 128, ngt = (grains + 511) / 512;
    const uint8_t *gdm = img + (gd - 1) * 512;
    assert_int_equal(le64(gdm), (ngt * 4 + 511) / 512);
    assert_int_equal(le32(gdm + 12), 2);
    uint8_t *grain = xmalloc(65536);
    uint64_t stored = 0;
    for (uint64_t t = 0; t < ngt; t++) {
        uint32_t gt = le32(img + gd * 512 + 4 * t);
        if (!gt) { /* no table: all its grains must be zero on the disk */
            uint64_t from = t * 512 * 65536;
            uint64_t to = from + 512 * 65536 < size ? from + 512 * 65536 : size;
            assert_true(convert_is_zero(disk + from, to - from));
            continue;
        }
        assert_int_equal(le64(img + (gt - 1) * 512), 4);
        assert_int_equal(le32(img + (gt - 1) * 512 + 12), 1);
        for (uint64_t j = 0; j < 512 && t * 512 + j < grains; j++) {
            uint64_t g = t * 512 + j, from = g * 65536;
            size_t n = size - from < 65536 ? size - from : 65536;
            uint32_t at = le32(img + gt * 512 + 4 * j);
            if (!at) {
                assert_true(convert_is_zero(disk + from, n));
                continue;
            }
            const uint8_t *m = img + (uint64_t)at * 512;
            assert_true(le64(m) == g * 128);
            uLongf out = 65536;
            assert_int_equal(uncompress(grain, &out, m + 12, le32(m + 8)), Z_OK);
            assert_int_equal(out, 65536);
            assert_memory_equal(grain, disk + from, n);
            assert_true(convert_is_zero(grain + n, 65536 - n));
            stored++;
        }
    }
    assert_true(stored > 0 || convert_is_zero(disk, size));
    free(grain);
}

static void test_vmdk_head(void **state)
{
    (void)state;
    struct convert_params p = {.format = CONVERT_VMDK, .in_size = 1ull << 30, .created = 1};
    p.id[0] = 0x12, p.id[1] = 0x34, p.id[2] = 0x56, p.id[3] = 0x78;
    struct err e = {0};
    struct convert_plan *plan = convert_plan_new(&p, &e);
    assert_non_null(plan);
    size_t len;
    const uint8_t *h = convert_plan_head(plan, &len);
    assert_int_equal(len, 65536);
    check_vmdk_header(h, 2097152, UINT64_MAX);
    const char *d = (const char *)h + 512;
    assert_true(strlen(d) < 20 * 512);
    assert_non_null(strstr(d, "# Disk DescriptorFile\nversion=1\nCID=12345678\n"
                              "parentCID=ffffffff\ncreateType=\"streamOptimized\"\n"));
    assert_non_null(strstr(d, "RW 2097152 SPARSE \"disk.vmdk\"\n"));
    assert_non_null(strstr(d, "ddb.virtualHWVersion = \"4\"\n"));
    assert_non_null(strstr(d, "ddb.geometry.cylinders = \"131\"\n")); /* 2097152 / (255*63) */
    assert_non_null(strstr(d, "ddb.geometry.heads = \"255\"\n"));
    assert_non_null(strstr(d, "ddb.geometry.sectors = \"63\"\n"));
    assert_non_null(strstr(d, "ddb.adapterType = \"lsilogic\"\n"));
    assert_true(convert_is_zero(h + 512 + strlen(d), len - 512 - strlen(d)));
    convert_plan_free(plan);

    p.adapter = CONVERT_ADAPTER_IDE;
    plan = convert_plan_new(&p, &e);
    h = convert_plan_head(plan, &len);
    d = (const char *)h + 512;
    assert_non_null(strstr(d, "ddb.geometry.cylinders = \"2081\"\n")); /* / (16*63), up */
    assert_non_null(strstr(d, "ddb.geometry.heads = \"16\"\n"));
    assert_non_null(strstr(d, "ddb.adapterType = \"ide\"\n"));
    convert_plan_free(plan);
}

static void test_vmdk_shards(void **state)
{
    (void)state;
    /* 70 MiB + 1000 bytes: three grain tables (the middle one all zeros), a partial last
     * grain and sector; shards of 3 grains and of 5 MiB. */
    const size_t size = (70u << 20) + 1000;
    uint8_t *disk = make_disk(size, 192 * 1024);
    memset(disk + (32u << 20), 0, 32u << 20);
    disk[size - 1] = 1;
    static const uint64_t shards[] = {3 * 65536, 5u << 20, 0};
    for (size_t s = 0; s < XM_ARRAY_LEN(shards); s++) {
        struct convert_plan *plan = plan_of(CONVERT_VMDK, size, shards[s]);
        size_t len;
        uint8_t *img = build_concat(plan, disk, &len);
        check_vmdk(img, len, disk, size);
        /* The middle table is all zeros, so it is not written: its GD entry is 0. */
        uint64_t gd = le64(img + len - 1024 + 56);
        assert_int_equal(le32(img + gd * 512 + 4), 0);
        assert_int_not_equal(le32(img + gd * 512), 0);
        free(img);
        convert_plan_free(plan);
    }
    /* All zeros: no grain, no table, still a valid image. */
    memset(disk, 0, size);
    struct convert_plan *plan = plan_of(CONVERT_VMDK, size, 1 << 20);
    size_t len;
    uint8_t *img = build_concat(plan, disk, &len);
    check_vmdk(img, len, disk, size);
    assert_int_equal(len, 65536 + 512 + 512 + 512 + 512 + 512); /* head, GD, footer, EOS */
    free(img);
    convert_plan_free(plan);
    free(disk);
}

/* ---- GCE tar.gz ---- */

static void test_tar_header(void **state)
{
    (void)state;
    uint8_t h[512];
    convert_tar_header(h, 1ull << 30, 1764113160);
    assert_string_equal((const char *)h, "disk.raw");
    assert_memory_equal(h + 100,
                        "0000644\0"
                        "0000000\0"
                        "0000000\0",
                        24);
    assert_memory_equal(h + 124, "10000000000\0", 12);
    assert_memory_equal(h + 136, "15111435410\0", 12);
    assert_memory_equal(h + 148, "011203\0 ", 8); /* computed independently (Python) */
    assert_int_equal(h[156], '0');
    assert_memory_equal(h + 257, "ustar  \0", 8);
    assert_string_equal((const char *)h + 265, "root");
    assert_string_equal((const char *)h + 297, "root");

    /* Over 8 GiB - 1 the size no longer fits 11 octal digits: GNU base-256. */
    convert_tar_header(h, 16ull << 30, 1764113160);
    assert_memory_equal(h + 124, "\x80\0\0\0\0\0\0\x04\0\0\0\0", 12);
    assert_memory_equal(h + 148, "010366\0 ", 8);
    convert_tar_header(h, 077777777777ull, 0);
    assert_memory_equal(h + 124, "77777777777\0", 12);
}

struct gunzip_check {
    const uint8_t *disk;
    size_t size;
    uint64_t disk_size;
    uint64_t pos; /* bytes of tar seen */
    uint8_t header[512];
};

/* The tar stream is the header, the disk, then only zeros (disk.raw padding, end of
 * archive, record padding): compare p, the next n bytes of it, range by range. */
static void check_tar_bytes(struct gunzip_check *c, const uint8_t *p, size_t n)
{
    while (n) {
        uint64_t at = c->pos;
        size_t k;
        if (at < 512) {
            k = 512 - at < n ? (size_t)(512 - at) : n;
            assert_memory_equal(p, c->header + at, k);
        } else if (at - 512 < c->size) {
            k = c->size - (at - 512) < n ? (size_t)(c->size - (at - 512)) : n;
            assert_memory_equal(p, c->disk + (at - 512), k);
        } else {
            k = n;
            if (!convert_is_zero(p, k))
                fail_msg("tar bytes after %llu are not zero", (unsigned long long)at);
        }
        p += k;
        n -= k;
        c->pos += k;
    }
}

/* Inflate the concatenated gzip members one by one (libdeflate's decompressor: zlib takes
 * seconds over the GiB of padding; GNU tar checks the same images in the integration
 * test) and compare the tar stream with what it must be. */
static void check_gce(const uint8_t *img, size_t len, const uint8_t *disk, size_t size,
                      int64_t mtime)
{
    struct gunzip_check c = {.disk = disk, .size = size};
    c.disk_size = (size + (1u << 30) - 1) / (1u << 30) * (1u << 30);
    convert_tar_header(c.header, c.disk_size, mtime);
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    uint8_t *out = xmalloc(1 << 20);
    int members = 0;
    for (size_t off = 0; off < len; members++) {
        size_t in_used, out_len;
        enum libdeflate_result rc = libdeflate_gzip_decompress_ex(d, img + off, len - off, out,
                                                                  1 << 20, &in_used, &out_len);
        if (rc != LIBDEFLATE_SUCCESS)
            fail_msg("gzip member %d at %zu: error %d", members, off, (int)rc);
        check_tar_bytes(&c, out, out_len);
        off += in_used;
    }
    libdeflate_free_decompressor(d);
    free(out);
    assert_true(members >= 3);
    assert_true(c.pos ==
                512 + c.disk_size + 1024 + (10240 - (512 + c.disk_size + 1024) % 10240) % 10240);
}

static void test_gce_shards(void **state)
{
    (void)state;
    const size_t size = (9u << 20) + 3000;
    uint8_t *disk = make_disk(size, 1500 * 1024);
    disk[size - 1] = 7;
    static const uint64_t shards[] = {300 * 512, 2u << 20, 0};
    for (size_t s = 0; s < XM_ARRAY_LEN(shards); s++) {
        struct convert_plan *plan = plan_of(CONVERT_GCE_TAR, size, shards[s]);
        size_t len;
        uint8_t *img = build_concat(plan, disk, &len);
        assert_true(len < size); /* zeros and text compress; the padding is ~1 MiB of gzip */
        check_gce(img, len, disk, size, 1764113160);
        free(img);
        convert_plan_free(plan);
    }
    free(disk);
}

/* ---- results, errors, codec ---- */

static void test_result_decode_rejects(void **state)
{
    (void)state;
    const size_t size = 4u << 20;
    uint8_t *disk = make_disk(size, 200 * 1024);
    struct convert_plan *plan = plan_of(CONVERT_VMDK, size, 1 << 20);
    struct mem m = {0};
    struct convert_sink s = {mem_write, &m};
    struct convert_result *r = run_shard(plan, 1, disk, &s);
    assert_true(convert_result_ngrains(r) > 2);
    assert_int_equal(convert_result_shard(r), 1);
    size_t len;
    uint8_t *b = convert_result_encode(r, &len);
    assert_int_equal(len, 52 + 8 * convert_result_ngrains(r));
    struct err e = {0};

    b[20] ^= 1; /* any flipped bit */
    assert_null(convert_result_decode(plan, b, len, &e));
    assert_non_null(strstr(e.msg, "checksum"));
    b[20] ^= 1;
    assert_null(convert_result_decode(plan, b, len - 8, &e)); /* cut short */
    assert_null(convert_result_decode(plan, "XMCR", 4, &e));

    /* Grains out of order, with a correct checksum: still refused. */
    uint8_t *c = xmalloc(len);
    memcpy(c, b, len);
    memcpy(c + 48, b + 56, 8);
    memcpy(c + 56, b + 48, 8);
    put_le32(c + len - 4, (uint32_t)crc32(0, c, (uInt)(len - 4)));
    assert_null(convert_result_decode(plan, c, len, &e));
    assert_non_null(strstr(e.msg, "out of place"));
    free(c);

    /* Another plan (other shard size): shard 1 covers another range there. */
    struct convert_plan *other = plan_of(CONVERT_VMDK, size, 2 << 20);
    assert_null(convert_result_decode(other, b, len, &e));
    struct convert_plan *gce = plan_of(CONVERT_GCE_TAR, size, 1 << 20);
    assert_null(convert_result_decode(gce, b, len, &e));

    /* finish wants every shard, each in its place. */
    struct convert_result *res[4] = {r, r, r, r};
    assert_int_equal(convert_finish(plan, res, 4, &s, NULL, &e), -1);
    assert_int_equal(convert_finish(plan, res, 3, &s, NULL, &e), -1);

    convert_plan_free(other);
    convert_plan_free(gce);
    convert_result_free(r);
    free(b);
    free(m.p);
    convert_plan_free(plan);
    free(disk);
}

static void test_shard_errors(void **state)
{
    (void)state;
    uint8_t *disk = make_disk(1 << 20, 100 * 1024);
    struct convert_plan *plan = plan_of(CONVERT_GCE_TAR, 1 << 20, 512 * 1024);
    struct mem m = {0};
    struct convert_sink s = {mem_write, &m};
    struct err e = {0};

    struct convert_shard *sh = convert_shard_new(plan, 0, &s);
    assert_int_equal(convert_shard_write(sh, disk, 512 * 1024 + 1, &e), -1); /* past the end */
    assert_int_equal(convert_shard_write(sh, disk, 1000, &e), 0);
    assert_null(convert_shard_finish(sh, &e)); /* short */
    assert_non_null(strstr(e.msg, "ended after 1000"));
    convert_shard_free(sh);

    /* A sink error reaches the caller with its kind. */
    struct convert_sink bad = {failing_write, NULL};
    sh = convert_shard_new(plan, 1, &bad);
    int rc = convert_shard_write(sh, disk + 512 * 1024, 512 * 1024, &e);
    if (rc == 0)
        assert_null(convert_shard_finish(sh, &e));
    assert_int_equal(e.kind, ERR_TRANSIENT);
    assert_string_equal(e.msg, "storage said 503");
    convert_shard_free(sh);
    convert_shard_free(NULL);
    convert_result_free(NULL);

    free(m.p);
    convert_plan_free(plan);
    free(disk);
}

static void test_codec(void **state)
{
    (void)state;
    uint8_t *buf = xcalloc(1, 1 << 20);
    assert_true(convert_is_zero(buf, 1 << 20));
    assert_true(convert_is_zero(buf, 0));
    buf[(1 << 20) - 1] = 1;
    assert_false(convert_is_zero(buf, 1 << 20));
    assert_false(convert_is_zero(buf + (1 << 20) - 5, 5));

    uint8_t *rnd = xmalloc(1 << 20);
    for (size_t i = 0; i < 1 << 20; i++)
        rnd[i] = (uint8_t)next_rand();
    uint8_t *text = make_disk(3 * 65536, 65536) + 65536; /* the text region */
    assert_true(convert_looks_random(rnd, 65536));
    assert_true(convert_looks_random(rnd, 1 << 20));
    assert_false(convert_looks_random(text, 65536));
    assert_false(convert_looks_random(buf, 65536));

    /* Random data is stored, and the stored streams are valid zlib and gzip. */
    struct libdeflate_compressor *c = convert_compressor_new(6);
    size_t cap = convert_gzip_bound(1 << 20);
    uint8_t *out = xmalloc(cap), *back = xmalloc(1 << 20);
    size_t n = convert_zlib(c, rnd, 65536, out, convert_zlib_bound(65536));
    assert_int_equal(n, 2 + 65536 + 2 * 5 + 4);
    uLongf blen = 65536;
    assert_int_equal(uncompress(back, &blen, out, n), Z_OK);
    assert_memory_equal(back, rnd, 65536);

    n = convert_gzip(c, rnd, 1 << 20, out, cap);
    assert_int_equal(n, 10 + (1 << 20) + 17 * 5 + 8);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = out, zs.avail_in = (uInt)n, zs.next_out = back, zs.avail_out = 1 << 20;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.total_out, 1 << 20);
    assert_memory_equal(back, rnd, 1 << 20);
    inflateEnd(&zs);

    /* Text is compressed. */
    n = convert_zlib(c, text, 65536, out, convert_zlib_bound(65536));
    assert_true(n < 65536 / 4);
    blen = 65536;
    assert_int_equal(uncompress(back, &blen, out, n), Z_OK);
    assert_memory_equal(back, text, 65536);

    libdeflate_free_compressor(c);
    free(text - 65536);
    free(out);
    free(back);
    free(rnd);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_params),
        cmocka_unit_test(test_vhd_chs),
        cmocka_unit_test(test_vhd_footer),
        cmocka_unit_test(test_vhd_and_raw_shards),
        cmocka_unit_test(test_vmdk_head),
        cmocka_unit_test(test_vmdk_shards),
        cmocka_unit_test(test_tar_header),
        cmocka_unit_test(test_gce_shards),
        cmocka_unit_test(test_result_decode_rejects),
        cmocka_unit_test(test_shard_errors),
        cmocka_unit_test(test_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
