/*
 * sigv4: AWS Signature Version 4 (AWS4-HMAC-SHA256) for every AWS call xmigrate makes:
 * S3 REST (x-amz-content-sha256), EC2 Query API form POSTs, EBS direct APIs, presigned
 * S3 URLs for the clone agent, and S3 aws-chunked streaming uploads.
 *
 * Three entry points share one canonicalization:
 *   - sigv4_sign_headers(): the request is signed in headers. The result lists the
 *     headers to add (X-Amz-Security-Token, X-Amz-Date, x-amz-content-sha256,
 *     Authorization, in that order); the caller adds them and sends the request with
 *     exactly the headers it passed in, the body hashed in payload_hash.
 *   - sigv4_presign(): the request is signed in the query string. The result is the new
 *     query string: the caller's query verbatim, then the X-Amz-* parameters in sorted
 *     order (X-Amz-Algorithm, -Credential, -Date, -Expires, -Security-Token,
 *     -SignedHeaders) and X-Amz-Signature last. The URL needs no credentials; whoever
 *     uses it must send the signed headers (usually only Host) with the same values.
 *   - sigv4_chunk_*(): the chunk and trailer signatures of an aws-chunked body
 *     (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]), chained from the seed signature
 *     of sigv4_sign_headers().
 *
 * The request as the caller describes it is the request as it goes on the wire:
 *   - path: the request-target before '?', starting with '/'. How it is canonicalized
 *     depends on path_mode: every service but S3 encodes the path once more (so a wire
 *     "%20" is signed as "%2520", a raw space as "%20": AWS's "double encoding") and,
 *     with SIGV4_PATH_NORMALIZE, drops ".", ".." and empty segments. S3 signs the path as
 *     it is, so it must already be in canonical form: build it with sigv4_uri_encode()
 *     (RFC 3986 unreserved characters and '/' kept, every other byte %XX upper case).
 *   - query: the string after '?', or NULL / "" for none. Keys and values are
 *     percent-decoded ('+' stays a plus sign) and re-encoded, so "%E1%88%B4" and the raw
 *     UTF-8 bytes sign the same; a key without '=' signs as "key=". Parameters are sorted
 *     by encoded key, then encoded value.
 *   - headers: "Name: value" lines as sent. Names are case-insensitive; values are
 *     trimmed and inner runs of white space (including obs-fold line continuations, CRLF
 *     or LF followed by a space or tab) become one space. Repeated names are joined with
 *     ',' in the order given. A Host header is required. Hop-by-hop and proxy-rewritten
 *     headers are not signed (connection, expect, keep-alive, proxy-connection, te,
 *     transfer-encoding, upgrade, user-agent, x-amzn-trace-id); every other header is.
 *   - payload_hash: lowercase hex SHA-256 of the body (secret_sha256_hex()), one of
 *     "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
 *     "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
 *     or NULL for an empty body. S3 presigned URLs use "UNSIGNED-PAYLOAD".
 *
 * Caps: every input has one (the SIGV4_*_MAX constants below); anything over a cap, and
 * anything malformed (a header name that is not an HTTP token, a line break in a header
 * value that is not a continuation, a bad percent escape, a header or query parameter
 * the signer itself sets), is a permanent error naming the input. No error message ever
 * contains the secret key or the session token, nor any header value.
 *
 * Ownership: every pointer argument is borrowed for the call. Results live in caller
 * storage (struct sigv4_result, struct sigv4_chunk_signer); their strings are new and
 * freed (wiped first) by sigv4_result_release() / sigv4_chunk_release().
 *
 * Thread safety: no state outside the caller's structs; nothing blocks, logs or exits.
 * A failing OpenSSL digest or MAC aborts the process like out of memory does.
 */
#ifndef XM_SIGV4_H
#define XM_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_STREAMING_PAYLOAD "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
#define SIGV4_STREAMING_PAYLOAD_TRAILER "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
#define SIGV4_STREAMING_UNSIGNED_TRAILER "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
/* SHA-256 of the empty string, the payload hash of a request without a body. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Caps on the inputs (bytes unless said otherwise; the NUL is never counted). */
#define SIGV4_KEY_MAX 128          /* access key id, secret access key */
#define SIGV4_TOKEN_MAX 8192       /* session token */
#define SIGV4_NAME_MAX 63          /* region, service */
#define SIGV4_METHOD_MAX 16        /* HTTP method */
#define SIGV4_PATH_MAX 4096        /* path as passed in */
#define SIGV4_QUERY_MAX 8192       /* query as passed in */
#define SIGV4_QUERY_PARAMS_MAX 128 /* parameters in the query */
#define SIGV4_HEADERS_MAX 64       /* header lines (and trailer lines) */
#define SIGV4_HEADER_MAX 8192      /* one header line, continuations included */
#define SIGV4_EXPIRES_MAX 604800   /* presigned URL lifetime: 7 days, AWS's own limit */

#define SIGV4_HEX_SIZE 65      /* a SHA-256 / signature in hex, plus NUL */
#define SIGV4_AMZ_DATE_SIZE 17 /* "20150830T123600Z" plus NUL */
/* "YYYYMMDD/<region>/<service>/aws4_request" plus NUL. */
#define SIGV4_SCOPE_SIZE (8 + 1 + SIGV4_NAME_MAX + 1 + SIGV4_NAME_MAX + 1 + 12 + 1)
/* Headers sigv4_sign_headers() adds at most. */
#define SIGV4_ADD_MAX 4
/* "<hex length>;chunk-signature=<64 hex>\r\n" plus NUL, for any size_t length. */
#define SIGV4_CHUNK_HEADER_SIZE (16 + 17 + 64 + 2 + 1)

struct sigv4_creds {
    const char *access_key;    /* [A-Za-z0-9._-], 1..SIGV4_KEY_MAX */
    const char *secret_key;    /* printable ASCII, 1..SIGV4_KEY_MAX; never in an error */
    const char *session_token; /* printable ASCII, or NULL / "" for none; never in an error */
};

/* How the path becomes the canonical URI (see the top of this file). */
enum sigv4_path_mode {
    SIGV4_PATH_AUTO = 0,  /* VERBATIM for service "s3", NORMALIZE for every other */
    SIGV4_PATH_NORMALIZE, /* encode once more, then drop ".", ".." and empty segments */
    SIGV4_PATH_ENCODE,    /* encode once more, segments kept as they are */
    SIGV4_PATH_VERBATIM,  /* S3: already canonical (checked), signed as it is */
};

struct sigv4_request {
    const char *method;         /* "GET", "PUT", "POST", ... (an HTTP token) */
    const char *path;           /* wire path, starts with '/', no '?' or '#' */
    const char *query;          /* wire query without '?', or NULL / "" */
    const char *const *headers; /* "Name: value" lines; Host required */
    size_t n_headers;
    const char *payload_hash; /* see the top of this file; NULL = empty body */
};

struct sigv4_opts {
    const char *region;  /* "us-east-1": [a-z0-9-], 1..SIGV4_NAME_MAX */
    const char *service; /* "s3", "ec2", "ebs": [a-z0-9-], 1..SIGV4_NAME_MAX */
    time_t when;         /* signing time in UTC seconds, usually time(NULL) */
    enum sigv4_path_mode path_mode;
    /*
     * Add the session token to the request (header or query parameter) without signing
     * it, for the few services that want it so. 0: the token is signed, the AWS default.
     */
    int omit_session_token;
    /* sigv4_sign_headers(): add and sign x-amz-content-sha256 (S3 requires it). */
    int content_sha256_header;
    /* sigv4_presign(): seconds the URL stays valid, 1..SIGV4_EXPIRES_MAX. */
    long expires;
};

struct sigv4_header {
    const char *name; /* static string */
    char *value;      /* new, owned by the result */
};

struct sigv4_result {
    char amz_date[SIGV4_AMZ_DATE_SIZE]; /* "YYYYMMDDTHHMMSSZ", the X-Amz-Date value */
    char signature[SIGV4_HEX_SIZE];     /* lowercase hex */
    char *canonical_request;            /* for tests and debugging; may hold the token */
    char *string_to_sign;
    char *signed_headers; /* "host;x-amz-date" */
    /* sigv4_sign_headers() only: headers to add, Authorization last. */
    struct sigv4_header add[SIGV4_ADD_MAX];
    size_t n_add;
    const char *authorization; /* borrowed: the value of add[n_add - 1] */
    /* sigv4_presign() only: the full new query string (no '?'). */
    char *query;
};

const char *sigv4_path_mode_str(enum sigv4_path_mode mode);

/*
 * Sign req in headers. On success returns 0 and fills *res (release it); on failure
 * returns -1 with a permanent err and *res zeroed. opts->expires is ignored.
 */
int sigv4_sign_headers(const struct sigv4_creds *creds, const struct sigv4_request *req,
                       const struct sigv4_opts *opts, struct sigv4_result *res, struct err *err);

/*
 * Sign req in the query string for opts->expires seconds from opts->when. On success
 * returns 0 and fills *res (res->query; add is empty); on failure returns -1 with a
 * permanent err and *res zeroed. opts->content_sha256_header is ignored.
 */
int sigv4_presign(const struct sigv4_creds *creds, const struct sigv4_request *req,
                  const struct sigv4_opts *opts, struct sigv4_result *res, struct err *err);

/* Wipe and free what a sign call put in res and zero it; res may be NULL. */
void sigv4_result_release(struct sigv4_result *res);

/*
 * RFC 3986 encoding as SigV4 wants it: A-Z a-z 0-9 - . _ ~ kept, with keep_slash also
 * '/', every other byte as %XX (upper-case hex). Returns a new string. Use it for S3
 * object keys in paths (keep_slash = 1) and for query keys and values (keep_slash = 0).
 */
char *sigv4_uri_encode(const char *s, int keep_slash);

/* ---- aws-chunked streaming ---------------------------------------------------------- */

/*
 * The body of a request signed with payload hash SIGV4_STREAMING_PAYLOAD is sent as
 * chunks, each "<hex len>;chunk-signature=<sig>\r\n<data>\r\n" (sigv4_chunk_header()
 * writes the first part), every chunk but the last at least 8 KiB, then a final empty
 * chunk "0;chunk-signature=<sig>\r\n\r\n". Content-Length is the encoded length
 * (sigv4_chunked_length()), x-amz-decoded-content-length the data length, and
 * Content-Encoding "aws-chunked"; all three are signed in the seed request.
 *
 * With SIGV4_STREAMING_PAYLOAD_TRAILER (and an x-amz-trailer header naming them) the
 * final chunk's "\r\n" is replaced by the trailer lines "name:value\r\n", then
 * "x-amz-trailer-signature:<sig>\r\n\r\n", sig from sigv4_trailer_sign().
 *
 * Each signature chains on the one before, starting at the seed (the request's own
 * signature), so chunks must be signed in the order they are sent.
 */
struct sigv4_chunk_signer {
    unsigned char key[32]; /* the derived signing key: wiped by sigv4_chunk_release() */
    char amz_date[SIGV4_AMZ_DATE_SIZE];
    char scope[SIGV4_SCOPE_SIZE];
    char prev[SIGV4_HEX_SIZE]; /* the last signature made (the seed at first) */
    int finished;              /* the final empty chunk was signed */
};

/*
 * Start the chain for the request signed with creds and opts (the same ones) whose
 * signature is seed (res.signature of sigv4_sign_headers()). 0, or -1 with a permanent
 * err on a bad credential, region, service, time or seed.
 */
int sigv4_chunk_init(struct sigv4_chunk_signer *cs, const struct sigv4_creds *creds,
                     const struct sigv4_opts *opts, const char *seed, struct err *err);

/*
 * Sign the next chunk of len bytes at data (len 0: the final chunk, after which only
 * sigv4_trailer_sign() may follow; signing another chunk then is a bug and aborts).
 * Writes the signature to sig. data may be NULL when len is 0.
 */
void sigv4_chunk_sign(struct sigv4_chunk_signer *cs, const void *data, size_t len,
                      char sig[SIGV4_HEX_SIZE]);

/*
 * Sign the trailing headers ("Name: value" lines, same rules as request headers; they
 * are canonicalized as sorted "name:value\n" lines) after the final chunk (before it is
 * a bug and aborts). 0, or -1 with a permanent err naming the bad trailer.
 */
int sigv4_trailer_sign(struct sigv4_chunk_signer *cs, const char *const *trailers,
                       size_t n_trailers, char sig[SIGV4_HEX_SIZE], struct err *err);

/* Wipe the signing key; cs may be NULL. */
void sigv4_chunk_release(struct sigv4_chunk_signer *cs);

/* Write "<hex len>;chunk-signature=<sig>\r\n" to out; returns its length. */
size_t sigv4_chunk_header(char out[SIGV4_CHUNK_HEADER_SIZE], size_t len, const char *sig);

/*
 * Content-Length of decoded_len bytes sent as signed chunks of chunk_size (> 0) bytes,
 * the last one shorter, plus the final empty chunk, without trailers.
 */
uint64_t sigv4_chunked_length(uint64_t decoded_len, uint64_t chunk_size);

#endif
