#include "gcp/jwt.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

EVP_PKEY *gcp_key_parse(const char *pem, struct err *err)
{
    if (!pem || !pem[0]) {
        err_set(err, ERR_PERMANENT, "gcp: the service-account key has no private_key");
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, -1);
    XM_ASSERT(bio != NULL);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!key) {
        err_set(err, ERR_PERMANENT, "gcp: the service-account private_key is not a PEM key");
        return NULL;
    }
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        err_set(err, ERR_PERMANENT, "gcp: the service-account private_key is not an RSA key");
        return NULL;
    }
    return key;
}

char *gcp_b64url(const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = xmalloc(len / 3 * 4 + 5), *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

int gcp_rsa_sha256(EVP_PKEY *key, const void *data, size_t len, unsigned char **sig,
                   size_t *sig_len, struct err *err)
{
    *sig = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    XM_ASSERT(ctx != NULL);
    size_t n = 0;
    int rc = -1;
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, data, len) != 1) {
        err_set(err, ERR_PERMANENT, "gcp: RSA-SHA256 signing failed");
        goto out;
    }
    *sig = xmalloc(n);
    if (EVP_DigestSign(ctx, *sig, &n, data, len) != 1) {
        free(*sig);
        *sig = NULL;
        err_set(err, ERR_PERMANENT, "gcp: RSA-SHA256 signing failed");
        goto out;
    }
    *sig_len = n;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* Compact JSON with keys in byte order (jansson sorts with strcmp): new base64url. */
static char *json_part(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    XM_ASSERT(text != NULL);
    char *b = gcp_b64url(text, strlen(text));
    free(text);
    json_decref(obj);
    return b;
}

char *gcp_jwt_assertion(EVP_PKEY *key, const struct gcp_jwt_claims *c, struct err *err)
{
    if (!c->iss || !c->scope || !c->aud) {
        err_set(err, ERR_PERMANENT, "gcp: a JWT needs iss, scope and aud");
        return NULL;
    }
    json_t *hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    if (c->kid && c->kid[0])
        json_object_set_new(hdr, "kid", json_string(c->kid));
    long life = c->lifetime > 0 ? c->lifetime : GCP_JWT_LIFETIME;
    json_t *claims =
        json_pack("{s:s, s:I, s:I, s:s, s:s}", "aud", c->aud, "exp", (json_int_t)(c->iat + life),
                  "iat", (json_int_t)c->iat, "iss", c->iss, "scope", c->scope);
    XM_ASSERT(hdr != NULL && claims != NULL);
    if (c->sub && c->sub[0])
        json_object_set_new(claims, "sub", json_string(c->sub));
    char *h = json_part(hdr), *b = json_part(claims);
    char *input = xasprintf("%s.%s", h, b);
    free(h);
    free(b);
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *out = NULL;
    if (gcp_rsa_sha256(key, input, strlen(input), &sig, &sig_len, err) == 0) {
        char *s = gcp_b64url(sig, sig_len);
        out = xasprintf("%s.%s", input, s);
        free(s);
    }
    free(sig);
    free(input);
    return out;
}
