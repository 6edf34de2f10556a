/*
 * hclient: a small HTTP/1.1 client over plain TCP or OpenSSL, for a static binary.
 *
 * What the agent needs and no more: one request at a time on a kept-alive connection
 * (PUT with Content-Length, GET, POST of JSON), the body sent in slices through an
 * optional pacing callback (the bandwidth limit), the reply's status, body (capped) and
 * Retry-After. Names are resolved by dns.h, never by the C library. TLS is verified:
 * TLS 1.2 or later, the peer's chain against a CA bundle (--ca FILE, else $SSL_CERT_FILE,
 * else the first of the usual distribution bundle paths that exists), and the host name
 * (or IP address) against the certificate.
 *
 * A struct hclient is one connection slot: it belongs to one thread, reconnects when the
 * next request goes to another origin or the server closed, and retries a request once
 * on a fresh connection when a reused one turns out to be dead before any reply byte.
 * struct hclient_tls (the SSL_CTX) is shared by every client and thread.
 *
 * Nothing logs. Errors never contain a URL's query (presigned URLs are credentials) nor
 * a header value (the bearer token).
 */
#ifndef XM_AGENT_HCLIENT_H
#define XM_AGENT_HCLIENT_H

#include <stddef.h>

#include "err.h"

#define HURL_MAX 8192              /* bytes in a URL */
#define HURL_HOST_MAX 255          /* bytes in a host name */
#define HCLIENT_HEADERS_MAX 65536  /* bytes of reply status line and headers */
#define HCLIENT_RESP_DEFAULT 65536 /* reply body cap when the request sets none */

/* A parsed http:// or https:// URL. */
struct hurl {
    int tls;
    char host[HURL_HOST_MAX + 1]; /* IPv6 literals without brackets */
    int port;
    char *target;   /* new: path and query, at least "/" */
    char *hostport; /* new: the Host header value */
};

/* Parse url into u (caller storage; hurl_release frees). 0, or -1 with a permanent err
 * that does not quote the URL's query. */
int hurl_parse(const char *url, struct hurl *u, struct err *err);
void hurl_release(struct hurl *u);
/* scheme://host:port/path of url without the query, into buf (for messages). */
const char *hurl_redact(const char *url, char *buf, size_t size);

struct hclient_tls;

/* The shared TLS settings. ca_file NULL: $SSL_CERT_FILE or a distribution bundle. A
 * missing bundle is not an error here: https requests then fail, saying so. New, or NULL
 * with err when ca_file was given and cannot be loaded. */
struct hclient_tls *hclient_tls_new(const char *ca_file, struct err *err);
void hclient_tls_free(struct hclient_tls *t);
/* The bundle in use (borrowed), or NULL when none was found. */
const char *hclient_tls_ca(const struct hclient_tls *t);

struct hclient_opts {
    struct hclient_tls *tls; /* borrowed, shared; NULL: https is refused */
    int connect_timeout_ms;  /* 0: 10 s */
    int io_timeout_ms;       /* no byte moving for this long cuts the request; 0: 60 s */
};

struct hclient;

struct hclient *hclient_new(const struct hclient_opts *opts);
void hclient_free(struct hclient *c);

/* Called before each slice of body is written, with its size: it may sleep (the
 * bandwidth limit) and counts what is sent. */
typedef void (*hclient_pace_fn)(void *arg, size_t n);

struct hreq {
    const char *method;
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
    const void *body;           /* body_len bytes; sent with Content-Length */
    size_t body_len;
    int send_length;      /* send Content-Length even when body_len is 0 (PUT, POST) */
    hclient_pace_fn pace; /* may be NULL */
    void *pace_arg;
    size_t resp_max; /* reply body cap; 0: HCLIENT_RESP_DEFAULT */
};

struct hresp {
    int status;
    char *body; /* new, NUL-terminated (also when empty) */
    size_t body_len;
    long retry_after_s; /* Retry-After in seconds, -1 when absent */
};

void hresp_release(struct hresp *r);

/*
 * Send one request and read the reply. 0 when an HTTP reply arrived (whatever its
 * status; resp filled, hresp_release it), or -1 with err: transient for connect
 * failures, resets, timeouts and unanswered DNS; permanent for a bad URL, an unknown
 * host, TLS verification failure or a reply body over the cap. Blocks.
 */
int hclient_do(struct hclient *c, const struct hreq *req, struct hresp *resp, struct err *err);

#endif
