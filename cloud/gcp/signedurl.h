/*
 * signedurl: Cloud Storage V4 signed URLs (GOOG4-RSA-SHA256), the write and read URLs the
 * clone agent uses without holding any credential.
 *
 * Google's "V4 signing process": the canonical request (method, encoded path, sorted
 * encoded query with the X-Goog-* parameters, lowercased sorted headers with values
 * trimmed and inner whitespace runs collapsed, the signed-header list, and the payload:
 * UNSIGNED-PAYLOAD unless an x-goog-content-sha256 header is signed), its SHA-256 in the
 * string to sign with the scope <date>/auto/storage/goog4_request, signed with the
 * service account's RSA key (RSASSA-PKCS1-v1_5 SHA-256), hex in X-Goog-Signature.
 *
 * The host header is signed without its port (as Google's client libraries sign
 * "localhost:8080": see the conformance cases in testdata/gcs-signed-urls/), so a
 * verifier compares it with the request's Host minus the port. Path-style URLs
 * (<scheme>://<host>/<bucket>/<object>) are what xmigrate uses; virtual-hosted and
 * bucket-bound hostnames are there for the conformance set. Object names keep '/'
 * and encode every other byte but RFC 3986 unreserved ones.
 *
 * Local computation only: nothing blocks, nothing is logged. A signed URL grants its
 * request until it expires: treat it like a secret.
 */
#ifndef XM_GCP_SIGNEDURL_H
#define XM_GCP_SIGNEDURL_H

#include <openssl/types.h>
#include <stddef.h>
#include <time.h>

#include "err.h"

#define GCS_SIGNED_EXPIRES_MAX 604800 /* seven days, Google's limit */
#define GCS_SIGNED_MAX_PAIRS 16

enum gcs_url_style {
    GCS_URL_PATH = 0,     /* <host>/<bucket>/<object> */
    GCS_URL_VIRTUAL,      /* <bucket>.<host>/<object> */
    GCS_URL_BUCKET_BOUND, /* <host>/<object>, host being the bucket's own domain */
};

/* Everything borrowed for the call. */
struct gcs_sign_request {
    const char *method; /* "GET", "PUT", "POST", ... */
    const char *scheme; /* "https" or "http" */
    const char *host;   /* authority as it goes in the URL ("storage.googleapis.com") */
    enum gcs_url_style style;
    const char *bucket;
    const char *object;                            /* NULL or "" for the bucket itself */
    const char *headers[2 * GCS_SIGNED_MAX_PAIRS]; /* extra signed headers: name, value, ... */
    size_t n_headers;                              /* pairs */
    const char *query[2 * GCS_SIGNED_MAX_PAIRS];   /* extra query parameters: name, value */
    size_t n_query;                                /* pairs */
    time_t when;                                   /* signing time */
    long expires;                                  /* 1..GCS_SIGNED_EXPIRES_MAX seconds */
};

/* Intermediate steps, for tests (each new, may be NULL when not asked for). */
struct gcs_sign_debug {
    char *canonical_request;
    char *string_to_sign;
};

/*
 * The signed URL: new string, or NULL with a permanent err (bad input, a key OpenSSL
 * refuses). email is the service account (X-Goog-Credential). debug may be NULL; its
 * strings are new (free them).
 */
char *gcs_signed_url(EVP_PKEY *key, const char *email, const struct gcs_sign_request *r,
                     struct gcs_sign_debug *debug, struct err *err);

#endif
