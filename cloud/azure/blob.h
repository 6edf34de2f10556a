/*
 * blob: Azure Blob storage over REST with SharedKey-signed requests, and SAS URLs.
 *
 * What xmigrate stores there: the clone agent's chunks and manifest as block blobs
 * (written by the agent through SAS URLs, read back here by convert), and each disk's
 * fixed VHD as a page blob (created with its final size, written by convert in page
 * ranges of at most 4 MiB aligned to 512 bytes, read by Azure's disk import).
 *
 * struct blob holds the endpoint, the account name and key, and one HTTP client: one per
 * thread. Every request is signed afresh per attempt (x-ms-date), sent with x-ms-version
 * BLOB_API_VERSION, and retried on what Azure Storage documents as retryable (5xx,
 * ServerBusy, OperationTimedOut, 429, transport failures). A refused key (403
 * AuthenticationFailed) is the permanent error "azure storage rejected the account key".
 *
 * Names: containers [a-z0-9-] (3..63), blob names [A-Za-z0-9._/-] (1..1024); anything
 * else is refused before a request is made, so no name needs URL encoding. The endpoint
 * is "https://<account>.blob.core.windows.net" or a path-style emulator base
 * ("http://127.0.0.1:10000/devstoreaccount1"); blobs are at <endpoint>/<container>/<name>.
 *
 * The key is copied in and wiped by blob_free; it never appears in an error. SAS URLs
 * grant access to whoever holds them: never log them.
 */
#ifndef XM_AZURE_BLOB_H
#define XM_AZURE_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "http.h"

#define BLOB_API_VERSION "2022-11-02"
#define BLOB_PAGE 512
#define BLOB_PAGE_WRITE_MAX (4u << 20) /* Put Page: at most 4 MiB a call */
#define BLOB_PUT_MAX (64u << 20)       /* above this blob_put sends blocks */
#define BLOB_BLOCK_SIZE (16u << 20)    /* block size blob_put uses above BLOB_PUT_MAX */

struct blob;

struct blob_config {
    const char *endpoint; /* see above; no trailing slash needed */
    const char *account;
    const char *key_b64; /* the account key as Azure shows it */
    struct http_client_opts http;
    int max_attempts;     /* 0: 6 */
    long backoff_base_ms; /* 0: 200 */
    long backoff_cap_ms;  /* 0: 20000 */
};

/* New client, copying what it keeps; NULL with a permanent err for a bad config. */
struct blob *blob_new(const struct blob_config *cfg, struct err *err);
void blob_free(struct blob *b);

/* Create the container if it is missing (private: no public access). Blocks. */
int blob_container_ensure(struct blob *b, const char *container, struct err *err);

/* Store body as a block blob: one Put Blob up to BLOB_PUT_MAX, else Put Block of
 * BLOB_BLOCK_SIZE each and Put Block List. Replaces an existing blob. Blocks. */
int blob_put(struct blob *b, const char *container, const char *name, const void *body, size_t len,
             struct err *err);
/* One block of a block blob; id is the block id before base64 (at most 48 bytes, all of a
 * blob's ids the same length). */
int blob_put_block(struct blob *b, const char *container, const char *name, const char *id,
                   const void *body, size_t len, struct err *err);
/* Commit ids[0..n) (as given to blob_put_block) as the blob's content, in order. */
int blob_put_block_list(struct blob *b, const char *container, const char *name,
                        const char *const *ids, size_t n, struct err *err);

/* Read len bytes at off (len 0: the whole blob, at most max bytes): *data new. Blocks. */
int blob_get(struct blob *b, const char *container, const char *name, uint64_t off, uint64_t len,
             size_t max, char **data, size_t *got, struct err *err);

struct blob_props {
    uint64_t length;
    char type[16]; /* "BlockBlob", "PageBlob" */
};
/* Properties of a blob; *found 0 when it does not exist (not an error). Blocks. */
int blob_head(struct blob *b, const char *container, const char *name, struct blob_props *props,
              int *found, struct err *err);
/* Delete a blob; a missing one is not an error. Blocks. */
int blob_delete(struct blob *b, const char *container, const char *name, struct err *err);

/* The names of every blob whose name starts with prefix (List Blobs, every page), in name
 * order: *names new (aws_strv_free), *n set; a missing container lists nothing. Blocks. */
int blob_list(struct blob *b, const char *container, const char *prefix, char ***names, size_t *n,
              struct err *err);

/* Create (or replace) a page blob of size bytes (a multiple of 512), reading as zeros. */
int blob_page_create(struct blob *b, const char *container, const char *name, uint64_t size,
                     struct err *err);
/* Write len bytes at off: both multiples of 512, len at most BLOB_PAGE_WRITE_MAX. */
int blob_put_page(struct blob *b, const char *container, const char *name, uint64_t off,
                  const void *buf, size_t len, struct err *err);

struct blob_range {
    uint64_t start, end; /* inclusive, as Azure reports them */
};
/* The written ranges of a page blob: *ranges new (free), *n set. Blocks. */
int blob_page_ranges(struct blob *b, const char *container, const char *name,
                     struct blob_range **ranges, size_t *n, struct err *err);

/* <endpoint>/<container>/<name>, without credentials: new string. */
char *blob_url(const struct blob *b, const char *container, const char *name);

/*
 * The blob's URL with a service SAS (sr=b) granting perms ("r", "cw", ...) for expires
 * seconds from now (no start time, so a skewed clock on the user's side does not matter).
 * New string, or NULL with a permanent err for a bad name. Local signing only.
 */
char *blob_sas_url(const struct blob *b, const char *container, const char *name, const char *perms,
                   long expires, struct err *err);

/* Parse "<endpoint>/<container>/<name>" back (a URL from blob_url, maybe with a query)
 * into container and name; -1 with a permanent err when url is not under the endpoint. */
int blob_parse_url(const struct blob *b, const char *url, char *container, size_t csize, char *name,
                   size_t nsize, struct err *err);

/* Attempts made by the last call (tests). */
int blob_last_attempts(const struct blob *b);

#endif
