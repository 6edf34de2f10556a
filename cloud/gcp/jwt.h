/*
 * jwt: what a Google service-account key signs, with OpenSSL 3 EVP only.
 *
 * The service-account JWT-bearer assertion (RFC 7523, Google's "Using OAuth 2.0 for
 * server to server applications"): header {"alg":"RS256","kid":<private_key_id>,
 * "typ":"JWT"} and claims {"aud","exp","iat","iss","scope"[,"sub"]}, each serialised
 * compactly with keys in byte order (the google-cloud-cpp serialisation, so
 * testdata/gcs-jwt/ reproduces byte for byte), base64url without padding, signed with
 * RSASSA-PKCS1-v1_5 SHA-256. exp is iat + lifetime (Google accepts at most one hour).
 *
 * The key is the PEM "private_key" of the key file (PKCS#8, RSA). Nothing here blocks,
 * logs or keeps a copy of the key beyond the EVP_PKEY the caller owns.
 */
#ifndef XM_GCP_JWT_H
#define XM_GCP_JWT_H

#include <openssl/types.h>
#include <stddef.h>

#include "err.h"

#define GCP_JWT_LIFETIME 3600

/* Parse a PEM RSA private key: new EVP_PKEY (EVP_PKEY_free), or NULL with a permanent err
 * that never quotes the key. */
EVP_PKEY *gcp_key_parse(const char *pem, struct err *err);

/* base64url of len bytes without padding: new string. */
char *gcp_b64url(const void *data, size_t len);

/* RSASSA-PKCS1-v1_5 SHA-256 of len bytes: new signature in *sig (free()), its length in
 * *sig_len. -1 with a permanent err when OpenSSL refuses (not an RSA key). */
int gcp_rsa_sha256(EVP_PKEY *key, const void *data, size_t len, unsigned char **sig,
                   size_t *sig_len, struct err *err);

/* The claims of one assertion; strings borrowed. kid and sub may be NULL (left out). */
struct gcp_jwt_claims {
    const char *kid;   /* the key file's private_key_id */
    const char *iss;   /* client_email */
    const char *scope; /* space-separated scopes */
    const char *aud;   /* the token URI */
    const char *sub;   /* a user to impersonate (domain-wide delegation), or NULL */
    long long iat;     /* issued at, Unix seconds */
    long lifetime;     /* seconds until exp; 0: GCP_JWT_LIFETIME */
};

/* header.claims.signature: new string, or NULL with err. */
char *gcp_jwt_assertion(EVP_PKEY *key, const struct gcp_jwt_claims *c, struct err *err);

#endif
