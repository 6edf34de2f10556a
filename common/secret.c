#include "secret.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "xmalloc.h"

#define PREFIX_LEN (sizeof(SECRET_PREFIX) - 1)
#define TOKEN_BYTES 32

/* Like out of memory: nothing a caller can do, and going on would weaken a secret. */
static _Noreturn void crypto_fail(const char *what)
{
    fprintf(stderr, "level=fatal msg=\"crypto failure\" op=%s\n", what);
    abort();
}

static void random_bytes(unsigned char *buf, size_t len)
{
    XM_ASSERT(len <= INT_MAX);
    if (RAND_bytes(buf, (int)len) != 1)
        crypto_fail("RAND_bytes");
}

/* ---- base64 ------------------------------------------------------------------------- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encode len bytes into out (room for 4 * ceil(len / 3) + 1); returns the length written. */
static size_t b64_encode(const char *alphabet, int pad, const unsigned char *in, size_t len,
                         char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        size_t n = len - i < 3 ? len - i : 3;
        unsigned long v = (unsigned long)in[i] << 16;
        if (n > 1)
            v |= (unsigned long)in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (n > 1)
            out[o++] = alphabet[(v >> 6) & 63];
        else if (pad)
            out[o++] = '=';
        if (n > 2)
            out[o++] = alphabet[v & 63];
        else if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_std_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict decoder for the standard alphabet: whole groups of four, '=' only as the last
 * one or two characters, unused bits zero, no whitespace. Exactly one string decodes to
 * a given blob. out needs room for len / 4 * 3 bytes. 0 or -1.
 */
static int b64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
    size_t o = 0;
    if (len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int pads = 0;
        if (last && in[i + 3] == '=')
            pads = in[i + 2] == '=' ? 2 : 1;
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - pads; k++)
            if ((v[k] = b64_std_value(in[i + k])) < 0)
                return -1;
        if ((pads == 2 && (v[1] & 15)) || (pads == 1 && (v[2] & 3)))
            return -1;
        unsigned long bits = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                             (unsigned long)v[2] << 6 | (unsigned long)v[3];
        out[o++] = (unsigned char)(bits >> 16);
        if (pads < 2)
            out[o++] = (unsigned char)(bits >> 8);
        if (pads < 1)
            out[o++] = (unsigned char)bits;
    }
    *outlen = o;
    return 0;
}

/* ---- secrets at rest ---------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int secret_key_parse(const char *hex, unsigned char key[SECRET_KEY_LEN], struct err *err)
{
    memset(key, 0, SECRET_KEY_LEN);
    if (!hex || !*hex)
        return err_set(err, ERR_PERMANENT,
                       "XM_MASTER_KEY is not set: expected 64 hex characters (32 bytes)");
    /* The length is safe to report; the characters are not. */
    size_t n = strlen(hex);
    if (n != 2 * SECRET_KEY_LEN)
        return err_set(err, ERR_PERMANENT,
                       "XM_MASTER_KEY must be 64 hex characters (32 bytes), got %zu characters", n);
    unsigned char tmp[SECRET_KEY_LEN];
    int ret = 0;
    for (size_t i = 0; i < SECRET_KEY_LEN; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            ret = err_set(err, ERR_PERMANENT,
                          "XM_MASTER_KEY must be 64 hex characters (32 bytes): it holds a "
                          "character that is not 0-9, a-f or A-F");
            goto out;
        }
        tmp[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(key, tmp, SECRET_KEY_LEN);
out:
    secret_wipe(tmp, sizeof(tmp));
    return ret;
}

char *secret_seal(const unsigned char key[SECRET_KEY_LEN], const char *aad,
                  const unsigned char *plain, size_t len)
{
    XM_ASSERT(aad);
    XM_ASSERT(plain || len == 0);
    XM_ASSERT(len <= SECRET_PLAIN_MAX);
    size_t aad_len = strlen(aad);
    XM_ASSERT(aad_len <= INT_MAX);

    size_t blob_len = SECRET_NONCE_LEN + len + SECRET_TAG_LEN;
    unsigned char *blob = xmalloc(blob_len);
    unsigned char *nonce = blob;
    unsigned char *ct = blob + SECRET_NONCE_LEN;
    unsigned char *tag = ct + len;
    random_bytes(nonce, SECRET_NONCE_LEN);

    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        crypto_fail("EVP_CIPHER_CTX_new");
    int n = 0;
    /* GCM's default IV length is 12 bytes, which is SECRET_NONCE_LEN. */
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
        crypto_fail("EVP_EncryptInit_ex");
    if (EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aad_len) != 1)
        crypto_fail("EVP_EncryptUpdate(aad)");
    if (len > 0 && (EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) != 1 || (size_t)n != len))
        crypto_fail("EVP_EncryptUpdate");
    if (EVP_EncryptFinal_ex(ctx, ct + len, &n) != 1 || n != 0)
        crypto_fail("EVP_EncryptFinal_ex");
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SECRET_TAG_LEN, tag) != 1)
        crypto_fail("EVP_CTRL_AEAD_GET_TAG");
    EVP_CIPHER_CTX_free(ctx);

    char *out = xmalloc(PREFIX_LEN + (blob_len + 2) / 3 * 4 + 1);
    memcpy(out, SECRET_PREFIX, PREFIX_LEN);
    b64_encode(b64_std, 1, blob, blob_len, out + PREFIX_LEN);
    free(blob);
    return out;
}

int secret_open(const unsigned char key[SECRET_KEY_LEN], const char *aad, const char *sealed,
                unsigned char **plain, size_t *len, struct err *err)
{
    unsigned char *blob = NULL;
    unsigned char *out = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    const unsigned char *nonce, *ct;
    unsigned char *tag;
    size_t blob_len = 0;
    size_t ct_len = 0;
    int n = 0;
    int ret = -1;

    XM_ASSERT(aad && sealed && plain && len);
    *plain = NULL;
    *len = 0;
    size_t aad_len = strlen(aad);
    XM_ASSERT(aad_len <= INT_MAX);

    size_t sealed_len = strnlen(sealed, SECRET_SEALED_MAX + 1);
    if (sealed_len > SECRET_SEALED_MAX) {
        err_set(err, ERR_PERMANENT, "secret for '%s' cannot be opened: record is over %d bytes",
                aad, SECRET_SEALED_MAX);
        goto out;
    }
    if (sealed_len < PREFIX_LEN || memcmp(sealed, SECRET_PREFIX, PREFIX_LEN) != 0)
        goto damaged;
    blob = xmalloc((sealed_len - PREFIX_LEN) / 4 * 3 + 1);
    if (b64_decode(sealed + PREFIX_LEN, sealed_len - PREFIX_LEN, blob, &blob_len) < 0)
        goto damaged;
    if (blob_len < SECRET_NONCE_LEN + SECRET_TAG_LEN)
        goto damaged;
    ct_len = blob_len - SECRET_NONCE_LEN - SECRET_TAG_LEN;
    nonce = blob;
    ct = blob + SECRET_NONCE_LEN;
    tag = blob + SECRET_NONCE_LEN + ct_len;

    out = xmalloc(ct_len + 1);
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        crypto_fail("EVP_CIPHER_CTX_new");
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
        crypto_fail("EVP_DecryptInit_ex");
    if (EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aad_len) != 1)
        crypto_fail("EVP_DecryptUpdate(aad)");
    if (ct_len > 0 &&
        (EVP_DecryptUpdate(ctx, out, &n, ct, (int)ct_len) != 1 || (size_t)n != ct_len))
        crypto_fail("EVP_DecryptUpdate");
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SECRET_TAG_LEN, tag) != 1)
        crypto_fail("EVP_CTRL_AEAD_SET_TAG");
    /* The only check that matters: wrong key, wrong aad and any changed bit all end here. */
    if (EVP_DecryptFinal_ex(ctx, out + ct_len, &n) != 1)
        goto damaged;

    out[ct_len] = '\0';
    *plain = out;
    *len = ct_len;
    out = NULL;
    ret = 0;
    goto out;

damaged:
    err_set(err, ERR_PERMANENT,
            "secret for '%s' cannot be opened: wrong XM_MASTER_KEY or damaged record", aad);
out:
    EVP_CIPHER_CTX_free(ctx);
    if (out) {
        /* Unauthenticated plaintext: never let it outlive the failed check. */
        secret_wipe(out, ct_len + 1);
        free(out);
    }
    free(blob);
    return ret;
}

void secret_wipe(void *p, size_t len)
{
    if (p && len)
        OPENSSL_cleanse(p, len);
}

/* ---- tokens ------------------------------------------------------------------------- */

void secret_token_new(char out[SECRET_TOKEN_LEN + 1])
{
    unsigned char raw[TOKEN_BYTES];
    random_bytes(raw, sizeof(raw));
    size_t n = b64_encode(b64_url, 0, raw, sizeof(raw), out);
    XM_ASSERT(n == SECRET_TOKEN_LEN);
    secret_wipe(raw, sizeof(raw));
}

static void sha256(const void *data, size_t len, unsigned char md[32])
{
    unsigned int md_len = 0;
    if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
        crypto_fail("EVP_Digest(sha256)");
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

void secret_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    sha256(data, len, md);
    hex_encode(md, sizeof(md), out);
}

int secret_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void secret_fingerprint(const void *data, size_t len, char out[SECRET_FINGERPRINT_SIZE])
{
    static const char tag[] = "sha256:";
    unsigned char md[32];
    sha256(data, len, md);
    memcpy(out, tag, sizeof(tag) - 1);
    hex_encode(md, (SECRET_FINGERPRINT_SIZE - sizeof(tag)) / 2, out + sizeof(tag) - 1);
}
