/*
 * gcp: one authorised, retried call to a Google Cloud JSON API, and the service-account
 * access token behind it.
 *
 * struct gcp holds the key (an EVP_PKEY), the project, the endpoints, one HTTP client
 * and the cached access token; one per thread. The token comes from the OAuth2 token
 * endpoint in exchange for a signed JWT (gcp/jwt.h, grant type jwt-bearer) and is reused
 * until five minutes before it expires; a 401 from an API drops it and the call is tried
 * once more with a new one. The token never appears in an error message.
 *
 * gcp_call() retries what Google documents as retryable (408, 429, 5xx, and 403 with
 * reason rateLimitExceeded / userRateLimitExceeded, connection failures) with full-jitter
 * backoff honouring Retry-After, and turns a Google error reply
 * {"error":{"code","message","errors":[{"reason"}]}} into a struct err carrying the
 * reason and message. Rejected credentials are the permanent error "Google rejected the
 * service-account credentials (...)".
 *
 * Endpoints: Cloud Storage https://storage.googleapis.com, Compute Engine
 * https://compute.googleapis.com, token: the key file's token_uri; each can be
 * overridden (tests point them at tests/fakes/gcp.py). URLs are built by the callers
 * from gcp_storage_base() / gcp_compute_base().
 */
#ifndef XM_GCP_H
#define XM_GCP_H

#include <jansson.h>
#include <openssl/types.h>
#include <stddef.h>

#include "err.h"
#include "http.h"

#define GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GCP_TOKEN_URI "https://oauth2.googleapis.com/token"
#define GCP_STORAGE_URL "https://storage.googleapis.com"
#define GCP_COMPUTE_URL "https://compute.googleapis.com"
#define GCP_TOKEN_MARGIN_S 300 /* refresh a token this long before it expires */

struct gcp;

/* Everything borrowed for gcp_new(), which copies what it keeps. */
struct gcp_config {
    const char *project;          /* project_id */
    const char *client_email;     /* the service account */
    const char *private_key;      /* PEM */
    const char *private_key_id;   /* the JWT's kid; may be NULL */
    const char *token_uri;        /* NULL: GCP_TOKEN_URI */
    const char *storage_endpoint; /* NULL: GCP_STORAGE_URL */
    const char *compute_endpoint; /* NULL: GCP_COMPUTE_URL */
    struct http_client_opts http;
    int max_attempts;     /* 0: 6 */
    long backoff_base_ms; /* 0: 200 */
    long backoff_cap_ms;  /* 0: 20000 */
    long poll_ms;         /* long-running operations: first poll interval; 0: 250 */
};

/* New client (no network yet). NULL with a permanent err for a bad config or key. */
struct gcp *gcp_new(const struct gcp_config *cfg, struct err *err);
void gcp_free(struct gcp *g);

const char *gcp_project(const struct gcp *g);
const char *gcp_client_email(const struct gcp *g);
EVP_PKEY *gcp_key(const struct gcp *g);            /* borrowed */
const char *gcp_storage_base(const struct gcp *g); /* without a trailing slash */
const char *gcp_compute_base(const struct gcp *g);
long gcp_poll_ms(const struct gcp *g);

/*
 * The access token (borrowed, valid until the next call on g), fetched when there is
 * none or it expires within GCP_TOKEN_MARGIN_S. NULL with err: permanent when Google
 * refuses the assertion (invalid_grant, invalid_client), transient otherwise. Blocks.
 */
const char *gcp_token(struct gcp *g, struct err *err);
/* Forget the cached token (the next call fetches one). */
void gcp_token_drop(struct gcp *g);
/* How many tokens this client fetched (tests: caching and refresh). */
int gcp_token_fetches(const struct gcp *g);

/* One request. Strings are borrowed for the call. */
struct gcp_request {
    const char *method;
    const char *url;        /* complete, already encoded */
    const char *headers[8]; /* extra "Name: value" lines (Authorization is added) */
    size_t n_headers;
    const void *body;
    size_t body_len;
    const char *content_type; /* NULL: application/json when there is a body */
    size_t max_response;      /* 0: HTTP_DEFAULT_MAX_RESPONSE */
    int ok_404;               /* a 404 is an answer (lookups), not an error */
    int no_retry;             /* one attempt only (the caller has its own recovery) */
    long ok_status;           /* another status that is an answer (308 of resumable uploads) */
};

/*
 * Authorise, send, retry. 0 with resp filled when the final status is 2xx (or 404 with
 * ok_404, or ok_status); -1 with err otherwise (transient when retries ran out on
 * something retryable; permanent for other errors). Blocks.
 */
int gcp_call(struct gcp *g, const struct gcp_request *req, struct http_response *resp,
             struct err *err);

/*
 * A JSON call: body (borrowed, may be NULL) is sent as JSON; on 2xx *out is the parsed
 * reply (new; an empty reply is an empty object); with ok_404 a 404 gives 0 and *out NULL.
 */
int gcp_json(struct gcp *g, const char *method, const char *url, const json_t *body, int ok_404,
             json_t **out, struct err *err);

/* The "reason" of the last call's final error reply ("notFound", "alreadyExists",
 * "conflict"), or "" (success, or a failure without a Google error body). Borrowed. */
const char *gcp_last_reason(const struct gcp *g);
/* Attempts made by the last gcp_call. */
int gcp_last_attempts(const struct gcp *g);

/* Percent-encode every byte but RFC 3986 unreserved ones (and '/' when keep_slash): new. */
char *gcp_encode(const char *s, int keep_slash);

/* Sleep ms milliseconds (polling helpers). */
void gcp_sleep_ms(long ms);

#endif
