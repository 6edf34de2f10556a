/*
 * http: the one HTTP layer every provider uses, over libcurl.
 *
 * A struct http_client wraps one curl easy handle, so connections (and TLS sessions)
 * are reused from call to call; one client per thread, never shared. Every call has a
 * connect timeout, a total timeout and stall detection (a transfer slower than
 * HTTP_STALL_BYTES per second for stall_s seconds is cut), TLS verification on (a CA
 * file may be given; verification can only be turned off for loopback test endpoints),
 * only http and https, and a cap on the response body.
 *
 * http_send() is one attempt. http_send_retry() repeats what is retryable: transport
 * failures (refused, reset, timeout, stall), 5xx and 429, and whatever the provider's
 * classify() says (e.g. AWS "Throttling" in a 400 body), with exponential backoff and
 * full jitter, honouring Retry-After, up to max_attempts; the request is rebuilt (and
 * so re-signed) before every attempt by the caller's build() callback.
 *
 * Nothing here logs; errors come back in struct err (transient or permanent) and never
 * contain request headers (they carry signatures and tokens).
 */
#ifndef XM_HTTP_H
#define XM_HTTP_H

#include <stddef.h>

#include "err.h"

#define HTTP_MAX_HEADERS 64
#define HTTP_HEADER_MAX 8192
#define HTTP_STALL_BYTES 1024
#define HTTP_DEFAULT_MAX_RESPONSE (16 * 1024 * 1024)

struct http_client;

struct http_client_opts {
    long connect_timeout_ms; /* 0: 10 s */
    long timeout_ms;         /* whole transfer; 0: 300 s */
    long stall_s;            /* cut a transfer this long under HTTP_STALL_BYTES/s; 0: 30 */
    const char *ca_file;     /* NULL: the system's */
    int insecure_loopback;   /* skip TLS checks, but only for 127.0.0.0/8 and localhost */
};

/* One request. method, url and body are borrowed for the duration of the call; headers
 * are copied in by http_request_add_header and freed by http_request_release. */
struct http_request {
    const char *method; /* "GET", "PUT", ... */
    const char *url;
    char *headers[HTTP_MAX_HEADERS]; /* "Name: value" */
    size_t n_headers;
    const void *body; /* NULL for none */
    size_t body_len;
    size_t max_response; /* 0: HTTP_DEFAULT_MAX_RESPONSE */
};

struct http_response {
    long status;
    char *body; /* new, NUL-terminated; NULL when empty */
    size_t body_len;
    char *headers[HTTP_MAX_HEADERS]; /* new "name: value" with the name lowercased */
    size_t n_headers;
    long retry_after_ms; /* from Retry-After (seconds or HTTP date), -1 if none */
};

struct http_client *http_client_new(const struct http_client_opts *opts);
void http_client_free(struct http_client *c);

void http_response_init(struct http_response *r);
void http_response_release(struct http_response *r);
/* Value of a response header (case-insensitive name), borrowed, or NULL. */
const char *http_response_header(const struct http_response *r, const char *name);

/* Append "Name: value" to req (copied into storage the request owns until
 * http_request_release). Returns -1 when HTTP_MAX_HEADERS are already there. */
int http_request_add_header(struct http_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void http_request_release(struct http_request *req);

/*
 * One attempt. 0 when an HTTP response arrived (whatever its status: the caller judges
 * it); -1 with err when none did: transient for network failures, permanent for a bad
 * URL or a response over the cap.
 */
int http_send(struct http_client *c, const struct http_request *req, struct http_response *resp,
              struct err *err);

/* How a response is judged: 0 success, 1 retry, -1 permanent failure (fill err). */
typedef int (*http_classify_fn)(void *arg, const struct http_response *resp, struct err *err);
/* Fill req for this attempt (sign it now). 0, or -1 with err. */
typedef int (*http_build_fn)(void *arg, struct http_request *req, struct err *err);

struct http_retry {
    int max_attempts;  /* 0: 5 */
    long base_ms;      /* 0: 200 */
    long cap_ms;       /* 0: 20000 */
    int *attempts_out; /* optional: how many attempts were made */
};

/*
 * Build, send and judge until success, a permanent failure or the attempt limit. On
 * success resp holds the final response (0). On failure -1 with err; when retries ran
 * out the message says how many attempts were made and what the last failure was.
 * classify may be NULL: then 2xx is success, 5xx and 429 retry, other codes permanent.
 */
int http_send_retry(struct http_client *c, http_build_fn build, http_classify_fn classify,
                    void *arg, const struct http_retry *policy, struct http_response *resp,
                    struct err *err);

/* The default judgement described above, for classify functions to fall back on. */
int http_classify_default(const struct http_response *resp, struct err *err);

#endif
