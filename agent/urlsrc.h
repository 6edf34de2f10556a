/*
 * urlsrc: where the write URLs come from, and the agent's calls to the xmigrate API.
 *
 * Two sources:
 *   - the API (--api): POST {api}/v1/agent/{migration}/{host}/{disk}/urls with the
 *     bearer token and {"chunks": [...]}, a batch at a time, never all at the start:
 *     presigned URLs expire. The reply's URLs are cached until handed out; a batch is
 *     asked for when a chunk has no URL, or when the URLs are within the refresh margin
 *     (60 s) of the reply's "expires". The batch is the chunk asked for plus the next
 *     indexes the copy may still need (the caller says which), up to --url-batch.
 *     A reply may also carry "headers" ({name: value}) that every PUT to its URLs must
 *     send (Azure's Put Blob needs x-ms-blob-type: BlockBlob); the latest reply's are kept
 *     and the copy adds them to the operator's --header lines.
 *   - a template (--url-template, tests and benchmarks): {migration}, {host}, {disk} and
 *     {index} substituted; the manifest URL is fixed (--manifest-url). Never expires.
 *
 * API replies map to exit codes: 401 "token revoked", other 4xx refused (both
 * AGENT_REFUSED); transport failures, 5xx and 429 are retried with backoff and end in
 * AGENT_NETWORK. Thread-safe (one lock; a fetch happens under it, so concurrent askers
 * wait for one batch instead of each asking). URLs are credentials: never logged.
 */
#ifndef XM_AGENT_URLSRC_H
#define XM_AGENT_URLSRC_H

#include <stddef.h>

#include "agent.h"
#include "hclient.h"

#define URLSRC_BATCH_MAX 1024 /* the API's own cap (schemas/agent_urls.json) */

#define URLSRC_HEADERS_MAX 8   /* headers the API may require on every PUT */
#define URLSRC_HEADER_MAX 1100 /* "Name: value" of one of them */

/* The API endpoint of one disk. Strings borrowed for the life of the user. */
struct api_target {
    const char *base; /* "https://api:8080", no trailing slash */
    const char *migration, *host, *disk;
    const char *token;
};

/*
 * POST body (JSON, len bytes) to {base}/v1/agent/{migration}/{host}/{disk}/{what}, one
 * attempt. 0 with the reply in resp (any status; hresp_release it), or -1 with err.
 */
int api_post(struct hclient *c, const struct api_target *t, const char *what, const char *body,
             size_t len, struct hresp *resp, struct err *err);

struct urlsrc_opts {
    const struct api_target *api;        /* NULL: template mode */
    const char *tmpl;                    /* template mode: the chunk URL template */
    const char *manifest_url;            /* template mode: the manifest's URL */
    const char *migration, *host, *disk; /* template substitutions */
    int batch;                           /* 1..URLSRC_BATCH_MAX */
    int margin_s;                        /* refresh this long before "expires" */
    struct retry_policy retry;
    /* 1 while the copy may still PUT chunk index (batch candidates); may be NULL. */
    int (*wanted)(void *arg, unsigned long long index);
    void *wanted_arg;
    unsigned long long chunks; /* indexes are below this */
    const volatile int *stop;  /* retries end early when it becomes non-zero */
};

struct urlsrc;

/* New source (the options and what they point to are borrowed for its life). */
struct urlsrc *urlsrc_new(const struct urlsrc_opts *o, struct hclient_tls *tls);
void urlsrc_free(struct urlsrc *s);

/*
 * The write URL of chunk index: *url new (free it), *expires its end (unix seconds,
 * INT64_MAX for a template). May block on an API call. 0, or -1 with f.
 */
int urlsrc_get(struct urlsrc *s, unsigned long long index, char **url, long long *expires,
               struct agent_fail *f);

/* The manifest's URL, fresh: an API call with an empty batch when the last one is within
 * the margin of expiry, or always when refetch is set (after a 403). New string, or NULL
 * with f. */
char *urlsrc_manifest(struct urlsrc *s, int refetch, struct agent_fail *f);

/* The headers the API's last reply said every PUT must carry (its optional "headers",
 * e.g. Azure's x-ms-blob-type), as "Name: value" copied into lines; returns how many
 * (0 in template mode). */
size_t urlsrc_headers(struct urlsrc *s, char lines[][URLSRC_HEADER_MAX], size_t max);

/* The number of API calls made so far (progress, tests). */
unsigned long urlsrc_calls(struct urlsrc *s);

#endif
