/*
 * aws: one signed, retried call to any AWS service, and what the AWS modules share.
 *
 * struct aws holds the credentials, the region, the endpoints and one HTTP client; one
 * per thread. aws_call() signs every attempt afresh (SigV4 with the time of that
 * attempt), retries what AWS documents as retryable (5xx, 429, Throttling,
 * ThrottlingException, RequestLimitExceeded, SlowDown, RequestTimeout, connection
 * resets and timeouts) with full-jitter backoff honouring Retry-After, and turns an
 * AWS error reply (S3/EC2 XML or the JSON of the newer services) into a struct err whose
 * message carries the AWS error code and request id. Rejected credentials are the
 * permanent error "AWS rejected the credentials (<Code>)".
 *
 * Endpoints: real AWS by default (https://<service>.<region>.amazonaws.com); every one
 * can be overridden (tests point them all at one moto_server). S3 is addressed
 * path-style (https://s3.<region>.amazonaws.com/<bucket>/<key>).
 *
 * Secrets: the secret key and session token are copied in and wiped by aws_free; they
 * never appear in an error message.
 */
#ifndef XM_AWS_H
#define XM_AWS_H

#include <stddef.h>

#include "err.h"
#include "http.h"

struct aws;

struct aws_config {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL for long-term keys */
    const char *region;
    /* Base URL for every service ("http://127.0.0.1:5000"), or NULL for AWS itself.
     * A per-service override wins: "s3", "ec2", "ebs". */
    const char *endpoint;
    const char *endpoint_s3;
    const char *endpoint_ec2;
    const char *endpoint_ebs;
    struct http_client_opts http;
    int max_attempts;     /* 0: 6 */
    long backoff_base_ms; /* 0: 200 */
    long backoff_cap_ms;  /* 0: 20000 */
};

/* New client; copies everything it keeps. NULL with err for a bad config. */
struct aws *aws_new(const struct aws_config *cfg, struct err *err);
void aws_free(struct aws *a);
const char *aws_region(const struct aws *a);

/* One request to a service. Strings are borrowed for the call. */
struct aws_request {
    const char *service; /* "s3", "ec2", "ebs" */
    const char *method;
    const char *path;        /* already URI-encoded, starts with '/' */
    const char *query;       /* already encoded, or NULL */
    const char *headers[16]; /* extra "Name: value" lines (Host, X-Amz-* are added) */
    size_t n_headers;
    const void *body;
    size_t body_len;
    const char *payload_sha256; /* hex of body, or NULL to compute it */
    size_t max_response;        /* 0: HTTP_DEFAULT_MAX_RESPONSE */
    int ok_404;                 /* a 404 is an answer (lookups), not an error */
};

/*
 * Sign, send, retry. 0 with resp filled when the final status is 2xx (or 404 with
 * ok_404); -1 with err otherwise (transient when retries ran out on something
 * retryable; permanent for every other AWS error). Blocks.
 */
int aws_call(struct aws *a, const struct aws_request *req, struct http_response *resp,
             struct err *err);

/* Attempts made by the last aws_call (for tests and metrics). */
int aws_last_attempts(const struct aws *a);

/*
 * AWS error code of the last aws_call's final reply ("InvalidPermission.Duplicate"), or
 * "" when it succeeded or failed without one (transport error). Lets callers tolerate
 * documented codes without parsing messages. Borrowed: valid until the next call.
 */
const char *aws_last_code(const struct aws *a);

/*
 * A presigned URL (SigV4 in the query string) for method on the service's endpoint and
 * path (already URI-encoded) with query (already encoded, or NULL), valid for expires
 * seconds (1..SIGV4_EXPIRES_MAX) from now. Only Host is signed and the payload is
 * UNSIGNED-PAYLOAD, so whoever holds the URL may send any body. New string, or NULL with a
 * permanent err. Does not block. The URL grants that request until it expires (and with a
 * session token it carries the token): treat it like a secret, never log it.
 */
char *aws_presign(struct aws *a, const char *service, const char *method, const char *path,
                  const char *query, long expires, struct err *err);

/* ---- EC2 Query API (form POST, XML reply) ---- */

/*
 * Call an EC2 action with params as name/value pairs (NULL-terminated list; values are
 * form-encoded here). On success *xml is the reply body (new, NUL-terminated). Blocks.
 */
int aws_ec2(struct aws *a, const char *action, const char *const *params, char **xml,
            struct err *err);

/* ---- XML helpers (libxml2; replies are small, parsed whole) ---- */

/*
 * Text of the first element named by a '/'-separated path of local names below the
 * root ("vpc/vpcId"), searched depth-first; new string or NULL when absent. Namespaces
 * are ignored.
 */
char *aws_xml_text(const char *xml, size_t len, const char *path);

/* Every text of elements named `name` anywhere in the document, in order: new array of
 * new strings, *n set; NULL when none. */
char **aws_xml_all(const char *xml, size_t len, const char *name, size_t *n);
void aws_strv_free(char **v, size_t n);

/* Walking a parsed reply (libxml2 types; include <libxml/tree.h> to use them). */
struct _xmlDoc;
struct _xmlNode;
/* Parse a NUL-terminated reply (no network, no error output); new doc or NULL. */
struct _xmlDoc *aws_xml_parse(const char *xml);
/* n's first direct child element named name (borrowed), or NULL. */
struct _xmlNode *aws_xml_child(struct _xmlNode *n, const char *name);
/* Text of n's direct child `name` into buf; "" when absent or too long for buf (an id
 * is never silently cut). */
void aws_xml_copy(struct _xmlNode *n, const char *name, char *buf, size_t size);

/* Form-encode (application/x-www-form-urlencoded, RFC 3986 unreserved kept): new. */
char *aws_form_encode(const char *s);

#endif
