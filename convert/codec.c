/*
 * codec.c: the zero test and the deflate streams (zlib for VMDK grains, gzip members for
 * the GCE tar) behind every compressing format.
 *
 * libdeflate compresses whole buffers (units are at most a MiB), faster than zlib at the
 * same level and to a smaller size. Data that is already compressed or encrypted (high
 * byte entropy) is written as deflate stored blocks without trying to compress it:
 * libdeflate would spend as long on it as on text only to end up storing it too.
 */
#include <libdeflate.h>
#include <math.h>
#include <string.h>

#include "convert_int.h"
#include "xmalloc.h"

int convert_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return 0;
    /* The first 16 bytes are zero, so p[k] == p[k + 16] for every k means all are. */
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* Order-0 entropy of buf in bits per byte. */
static double entropy(const uint8_t *p, size_t n)
{
    uint32_t c[4][256];
    memset(c, 0, sizeof(c));
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        c[0][p[i]]++;
        c[1][p[i + 1]]++;
        c[2][p[i + 2]]++;
        c[3][p[i + 3]]++;
    }
    for (; i < n; i++)
        c[0][p[i]]++;
    double h = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t k = c[0][b] + c[1][b] + c[2][b] + c[3][b];
        if (k) {
            double q = (double)k / (double)n;
            h -= q * log2(q);
        }
    }
    return h;
}

int convert_looks_random(const uint8_t *buf, size_t len)
{
    enum { SAMPLE = 4096 };
    if (len < SAMPLE)
        return 0;
    /* A uniform source measured over n bytes shows about 8 - 255 / (2 n ln 2) bits per
     * byte (7.955 for 4 KiB, 7.997 for 64 KiB); text and code are at 4-6.5. The cheap
     * sample rules out most data; the full count must be within 4x that bias of 8. */
    if (entropy(buf, SAMPLE) < 7.8)
        return 0;
    double bias = 255.0 / (2.0 * (double)len * 0.6931471805599453);
    return entropy(buf, len) > 8.0 - 4.0 * bias;
}

/* ---- deflate stored blocks ---- */

static size_t stored_size(size_t len)
{
    size_t blocks = len ? (len + 65534) / 65535 : 1;
    return len + 5 * blocks;
}

static size_t put_stored(uint8_t *out, const uint8_t *in, size_t len)
{
    size_t o = 0;
    do {
        size_t n = len > 65535 ? 65535 : len;
        out[o++] = n == len ? 1 : 0; /* BFINAL on the last, BTYPE 00: stored */
        put_le16(out + o, (uint16_t)n);
        put_le16(out + o + 2, (uint16_t)~n);
        o += 4;
        memcpy(out + o, in, n);
        o += n;
        in += n;
        len -= n;
    } while (len);
    return o;
}

size_t convert_zlib_bound(size_t len)
{
    return 2 + stored_size(len) + 4;
}

size_t convert_gzip_bound(size_t len)
{
    return 10 + stored_size(len) + 8;
}

size_t convert_zlib(struct libdeflate_compressor *c, const uint8_t *in, size_t len, uint8_t *out,
                    size_t cap)
{
    XM_ASSERT(cap >= convert_zlib_bound(len));
    if (!convert_looks_random(in, len)) {
        size_t n = libdeflate_zlib_compress(c, in, len, out, cap);
        if (n)
            return n;
    }
    out[0] = 0x78; /* deflate, 32 KiB window */
    out[1] = 0x01; /* no dictionary, "fastest" level; (0x7801 % 31) == 0 */
    size_t o = 2 + put_stored(out + 2, in, len);
    uint32_t a = libdeflate_adler32(1, in, len);
    for (int i = 0; i < 4; i++)
        out[o + i] = (uint8_t)(a >> (24 - 8 * i));
    return o + 4;
}

size_t convert_gzip(struct libdeflate_compressor *c, const uint8_t *in, size_t len, uint8_t *out,
                    size_t cap)
{
    XM_ASSERT(cap >= convert_gzip_bound(len));
    if (!convert_looks_random(in, len)) {
        size_t n = libdeflate_gzip_compress(c, in, len, out, cap);
        if (n)
            return n;
    }
    static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(out, hdr, sizeof(hdr));
    size_t o = sizeof(hdr) + put_stored(out + sizeof(hdr), in, len);
    put_le32(out + o, (uint32_t)libdeflate_crc32(0, in, len));
    put_le32(out + o + 4, (uint32_t)len);
    return o + 8;
}

struct libdeflate_compressor *convert_compressor_new(int level)
{
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    XM_ASSERT(c != NULL); /* only fails for a bad level (checked by the plan) or no memory */
    return c;
}
