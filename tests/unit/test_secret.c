/* common/secret.c: sealing secrets at rest, tokens, digests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "err.h"
#include "secret.h"
#include "xmalloc.h"

static const char key_hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char *plain_text = "correct horse battery staple";

static void get_key(unsigned char key[SECRET_KEY_LEN])
{
    struct err e = {0};
    assert_int_equal(secret_key_parse(key_hex, key, &e), 0);
}

static char *seal_str(const unsigned char *key, const char *aad, const char *s)
{
    return secret_seal(key, aad, (const unsigned char *)s, strlen(s));
}

/* Expect secret_open to fail with the one "cannot be opened" message for aad. */
static void expect_closed(const unsigned char *key, const char *aad, const char *sealed)
{
    struct err e = {0};
    unsigned char *out = (unsigned char *)"sentinel";
    size_t len = 99;
    assert_int_equal(secret_open(key, aad, sealed, &out, &len, &e), -1);
    assert_null(out);
    assert_int_equal(len, 0);
    assert_int_equal(e.kind, ERR_PERMANENT);
    char want[ERR_MSG_MAX];
    snprintf(want, sizeof(want),
             "secret for '%s' cannot be opened: wrong XM_MASTER_KEY or damaged record", aad);
    assert_string_equal(e.msg, want);
    assert_null(strstr(e.msg, plain_text));
    assert_null(strstr(e.msg, key_hex));
}

/* Decode the base64 after "v1:" with OpenSSL's own decoder (a cross-check of ours). */
static unsigned char *decode_blob(const char *sealed, size_t *len)
{
    assert_memory_equal(sealed, "v1:", 3);
    const char *b64 = sealed + 3;
    size_t n = strlen(b64);
    unsigned char *blob = xmalloc(n / 4 * 3 + 1);
    int got = EVP_DecodeBlock(blob, (const unsigned char *)b64, (int)n);
    assert_true(got >= 0);
    size_t pads = (n > 0 && b64[n - 1] == '=') + (n > 1 && b64[n - 2] == '=');
    *len = (size_t)got - pads;
    return blob;
}

static char *encode_blob(const unsigned char *blob, size_t len)
{
    char *s = xmalloc(3 + (len + 2) / 3 * 4 + 1);
    memcpy(s, "v1:", 3);
    EVP_EncodeBlock((unsigned char *)s + 3, blob, (int)len);
    return s;
}

/* ---- sealing ------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *sealed = seal_str(key, "cred-1", plain_text);
    assert_memory_equal(sealed, "v1:", 3);
    assert_null(strchr(sealed, '\n'));
    assert_null(strstr(sealed, "horse"));

    size_t blob_len;
    unsigned char *blob = decode_blob(sealed, &blob_len);
    assert_int_equal(blob_len, SECRET_NONCE_LEN + strlen(plain_text) + SECRET_TAG_LEN);
    /* Our encoder and OpenSSL's agree byte for byte. */
    char *again = encode_blob(blob, blob_len);
    assert_string_equal(again, sealed);
    free(again);
    free(blob);

    struct err e = {0};
    unsigned char *out = NULL;
    size_t len = 0;
    assert_int_equal(secret_open(key, "cred-1", sealed, &out, &len, &e), 0);
    assert_int_equal(len, strlen(plain_text));
    assert_memory_equal(out, plain_text, len);
    assert_int_equal(out[len], '\0');
    secret_wipe(out, len);
    free(out);
    free(sealed);
}

static void test_binary_and_empty_round_trip(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    struct err e = {0};
    unsigned char *out = NULL;
    size_t len = 99;

    char *sealed = secret_seal(key, "empty", NULL, 0);
    assert_int_equal(secret_open(key, "empty", sealed, &out, &len, &e), 0);
    assert_int_equal(len, 0);
    assert_non_null(out);
    assert_int_equal(out[0], '\0');
    free(out);
    expect_closed(key, "other", sealed);
    free(sealed);

    /* Every byte value, every length 0..40 (all three base64 padding cases). */
    unsigned char bin[256];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)(255 - i);
    for (size_t n = 0; n <= 40; n++) {
        sealed = secret_seal(key, "bin", bin, n);
        assert_int_equal(secret_open(key, "bin", sealed, &out, &len, &e), 0);
        assert_int_equal(len, n);
        if (n)
            assert_memory_equal(out, bin, n);
        free(out);
        free(sealed);
    }
    sealed = secret_seal(key, "bin", bin, sizeof(bin));
    assert_int_equal(secret_open(key, "bin", sealed, &out, &len, &e), 0);
    assert_int_equal(len, sizeof(bin));
    assert_memory_equal(out, bin, sizeof(bin));
    free(out);
    free(sealed);
}

static void test_fresh_nonce(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *a = seal_str(key, "cred-1", plain_text);
    char *b = seal_str(key, "cred-1", plain_text);
    assert_string_not_equal(a, b);
    size_t la, lb;
    unsigned char *ba = decode_blob(a, &la);
    unsigned char *bb = decode_blob(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_not_equal(ba, bb, SECRET_NONCE_LEN);
    free(ba);
    free(bb);
    free(a);
    free(b);
}

static void test_wrong_key_or_record_fails(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *sealed = seal_str(key, "cred-1", plain_text);

    unsigned char other[SECRET_KEY_LEN];
    memcpy(other, key, sizeof(other));
    other[SECRET_KEY_LEN - 1] ^= 1;
    expect_closed(other, "cred-1", sealed);

    /* Moved to another record: another id, a prefix of it, an extension of it. */
    expect_closed(key, "cred-2", sealed);
    expect_closed(key, "cred-", sealed);
    expect_closed(key, "cred-1 ", sealed);
    expect_closed(key, "", sealed);
    free(sealed);
}

static void test_every_flipped_byte_fails(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *sealed = seal_str(key, "cred-1", "pw");
    size_t len;
    unsigned char *blob = decode_blob(sealed, &len);
    for (size_t i = 0; i < len; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            blob[i] ^= (unsigned char)(1u << bit);
            char *bad = encode_blob(blob, len);
            expect_closed(key, "cred-1", bad);
            free(bad);
            blob[i] ^= (unsigned char)(1u << bit);
        }
    }
    /* Unchanged it still opens (the loop restored every byte). */
    char *good = encode_blob(blob, len);
    struct err e = {0};
    unsigned char *out = NULL;
    size_t out_len;
    assert_int_equal(secret_open(key, "cred-1", good, &out, &out_len, &e), 0);
    assert_int_equal(out_len, 2);
    free(out);
    free(good);
    free(blob);
    free(sealed);
}

static void test_truncated_fails(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *sealed = seal_str(key, "cred-1", plain_text);
    size_t n = strlen(sealed);
    for (size_t cut = 0; cut < n; cut++) {
        char *t = xstrndup(sealed, cut);
        expect_closed(key, "cred-1", t);
        free(t);
    }
    /* Whole base64 groups dropped: still valid base64, too short or tag gone. */
    size_t len;
    unsigned char *blob = decode_blob(sealed, &len);
    for (size_t keep = 0; keep < len; keep++) {
        char *t = encode_blob(blob, keep);
        expect_closed(key, "cred-1", t);
        free(t);
    }
    free(blob);
    free(sealed);
}

static void test_bad_prefix_and_base64_fail(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    char *sealed = seal_str(key, "cred-1", plain_text);
    const char *body = sealed + 3;
    const char *prefixes[] = {"", "v2:", "V1:", "v1", "v1::", " v1:", "v0:"};
    for (size_t i = 0; i < XM_ARRAY_LEN(prefixes); i++) {
        char *t = xasprintf("%s%s", prefixes[i], body);
        expect_closed(key, "cred-1", t);
        free(t);
    }
    /* Not base64, or not the one canonical spelling of the blob. */
    const char *junk[][2] = {{"", "\n"}, {"", "="}, {"", "=="},   {" ", ""},
                             {"", " "},  {"", "A"}, {"", "===="}, {"", "\r\n"}};
    for (size_t i = 0; i < XM_ARRAY_LEN(junk); i++) {
        char *t = xasprintf("%s%s%s", junk[i][0], sealed, junk[i][1]);
        expect_closed(key, "cred-1", t);
        free(t);
    }
    char *t = xstrdup(sealed);
    t[10] = '!';
    expect_closed(key, "cred-1", t);
    t[10] = '-'; /* base64url, not base64 */
    expect_closed(key, "cred-1", t);
    free(t);
    /* A line break inside the base64 (MIME style) is refused too. */
    t = xasprintf("%.*s\n%s", 20, sealed, sealed + 20);
    expect_closed(key, "cred-1", t);
    free(t);
    /*
     * Non-zero unused bits: a lax decoder reads the same blob from a second spelling.
     * 28 bytes of plaintext make a 56-byte blob, so the text ends "X=" and the two low
     * bits of X are unused.
     */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(sealed);
    assert_int_equal(strlen(plain_text), 28);
    assert_int_equal(sealed[n - 1], '=');
    assert_int_not_equal(sealed[n - 2], '=');
    t = xstrdup(sealed);
    size_t v = (size_t)(strchr(alphabet, t[n - 2]) - alphabet);
    assert_int_equal(v & 3, 0);
    t[n - 2] = alphabet[v | 1];
    size_t len;
    unsigned char *lax = decode_blob(t, &len);
    unsigned char *strict = decode_blob(sealed, &len);
    assert_memory_equal(lax, strict, len); /* OpenSSL's decoder cannot tell them apart */
    free(lax);
    free(strict);
    expect_closed(key, "cred-1", t);
    free(t);
    expect_closed(key, "cred-1", "v1:AB==");
    expect_closed(key, "cred-1", "v1:");
    free(sealed);
}

static void test_size_cap(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    get_key(key);
    /* The largest plaintext allowed seals to a string that opens. */
    unsigned char *big = xcalloc(SECRET_PLAIN_MAX, 1);
    char *sealed = secret_seal(key, "big", big, SECRET_PLAIN_MAX);
    assert_true(strlen(sealed) <= SECRET_SEALED_MAX);
    struct err e = {0};
    unsigned char *out = NULL;
    size_t len;
    assert_int_equal(secret_open(key, "big", sealed, &out, &len, &e), 0);
    assert_int_equal(len, SECRET_PLAIN_MAX);
    free(out);
    free(sealed);
    free(big);

    /* One byte over the cap is refused before it is decoded. */
    char *huge = xmalloc(SECRET_SEALED_MAX + 2);
    memcpy(huge, "v1:", 3);
    memset(huge + 3, 'A', SECRET_SEALED_MAX - 2);
    huge[SECRET_SEALED_MAX + 1] = '\0';
    out = (unsigned char *)"sentinel";
    assert_int_equal(secret_open(key, "big", huge, &out, &len, &e), -1);
    assert_null(out);
    assert_int_equal(e.kind, ERR_PERMANENT);
    assert_non_null(strstr(e.msg, "secret for 'big' cannot be opened"));
    free(huge);
}

/* ---- master key --------------------------------------------------------------------- */

static void expect_bad_key(const char *value, const char *needle)
{
    unsigned char key[SECRET_KEY_LEN];
    memset(key, 0xAA, sizeof(key));
    struct err e = {0};
    assert_int_equal(secret_key_parse(value, key, &e), -1);
    assert_int_equal(e.kind, ERR_PERMANENT);
    if (!strstr(e.msg, "XM_MASTER_KEY") || !strstr(e.msg, "64 hex characters"))
        fail_msg("message '%s' does not say what XM_MASTER_KEY must be", e.msg);
    if (!strstr(e.msg, needle))
        fail_msg("message '%s' does not contain '%s'", e.msg, needle);
    /* No run of 6 characters of the value shows up in the message. */
    size_t n = value ? strlen(value) : 0;
    for (size_t i = 0; i + 6 <= n; i++) {
        char piece[7];
        memcpy(piece, value + i, 6);
        piece[6] = '\0';
        if (strstr(e.msg, piece))
            fail_msg("message '%s' echoes the value ('%s')", e.msg, piece);
    }
    /* The output is not left half-written. */
    for (size_t i = 0; i < sizeof(key); i++)
        assert_int_equal(key[i], 0);
}

static void test_key_parse(void **state)
{
    (void)state;
    unsigned char key[SECRET_KEY_LEN];
    struct err e = {0};
    assert_int_equal(secret_key_parse(key_hex, key, &e), 0);
    for (size_t i = 0; i < sizeof(key); i++)
        assert_int_equal(key[i], i);
    assert_int_equal(
        secret_key_parse("DEADBEEFdeadbeef0000000000000000000000000000000000000000000000FF", key,
                         &e),
        0);
    assert_int_equal(key[0], 0xde);
    assert_int_equal(key[4], 0xde);
    assert_int_equal(key[31], 0xff);

    char buf[80];
    memcpy(buf, key_hex, 63);
    buf[63] = '\0';
    expect_bad_key(buf, "got 63 characters");
    memcpy(buf, key_hex, 64);
    buf[64] = '7';
    buf[65] = '\0';
    expect_bad_key(buf, "got 65 characters");
    memcpy(buf, key_hex, 65);
    buf[40] = 'g';
    expect_bad_key(buf, "not 0-9, a-f or A-F");
    buf[40] = ' ';
    expect_bad_key(buf, "not 0-9, a-f or A-F");
    buf[40] = 'a';
    buf[63] = 'x'; /* the last character: the loop must reach it */
    expect_bad_key(buf, "not 0-9, a-f or A-F");
    expect_bad_key("0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                   "not 0-9, a-f or A-F");
    expect_bad_key("s3cret-key", "got 10 characters");
    expect_bad_key("", "is not set");
    expect_bad_key(NULL, "is not set");
}

/* ---- tokens and digests ------------------------------------------------------------- */

static void test_token_new(void **state)
{
    (void)state;
    char a[SECRET_TOKEN_LEN + 1], b[SECRET_TOKEN_LEN + 1];
    secret_token_new(a);
    secret_token_new(b);
    assert_int_equal(strlen(a), 43);
    assert_int_equal(strlen(b), 43);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     43);
    assert_string_not_equal(a, b);
    /* 32 bytes is 256 bits: the last character carries 4 bits and 2 zero bits of padding. */
    assert_non_null(strchr("AEIMQUYcgkosw048", a[42]));
}

static void test_sha256_and_fingerprint(void **state)
{
    (void)state;
    char hex[65];
    secret_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    secret_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    char fp[SECRET_FINGERPRINT_SIZE];
    secret_fingerprint("abc", 3, fp);
    assert_string_equal(fp, "sha256:ba7816bf8f01cfea");
    assert_int_equal(strlen(fp), SECRET_FINGERPRINT_SIZE - 1);
}

static void test_equal_and_wipe(void **state)
{
    (void)state;
    char h1[65], h2[65], h3[65];
    secret_sha256_hex("token-a", 7, h1);
    secret_sha256_hex("token-a", 7, h2);
    secret_sha256_hex("token-b", 7, h3);
    assert_int_equal(secret_equal(h1, h2, 64), 1);
    assert_int_equal(secret_equal(h1, h3, 64), 0);
    assert_int_equal(secret_equal("abcd", "abce", 4), 0);
    assert_int_equal(secret_equal("abcd", "abce", 3), 1);
    assert_int_equal(secret_equal("x", "y", 0), 1);

    unsigned char buf[16];
    memset(buf, 0x5a, sizeof(buf));
    secret_wipe(buf, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0);
    secret_wipe(NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_binary_and_empty_round_trip),
        cmocka_unit_test(test_fresh_nonce),
        cmocka_unit_test(test_wrong_key_or_record_fails),
        cmocka_unit_test(test_every_flipped_byte_fails),
        cmocka_unit_test(test_truncated_fails),
        cmocka_unit_test(test_bad_prefix_and_base64_fail),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_token_new),
        cmocka_unit_test(test_sha256_and_fingerprint),
        cmocka_unit_test(test_equal_and_wipe),
    };
    return cmocka_run_group_tests_name("unit.secret", tests, NULL, NULL);
}
