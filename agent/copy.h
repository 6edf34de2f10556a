/*
 * copy: one pass over the device: read, hash, compress, upload, then the manifest.
 *
 *   reader (1 thread)        pread chunk i into a raw buffer            -> work queue
 *   compressors (N threads)  all-zero? -> recorded, not stored
 *                            SHA-256 of the raw bytes
 *                            unchanged (journal or previous manifest)? -> skipped
 *                            else zstd -> a compressed buffer           -> upload queue
 *   uploaders (P threads)    URL from urlsrc, PUT with retries, journal record
 *   progress (1 thread)      every progress_s: a log line and a POST to the API
 * then, only when every chunk is zero, skipped or stored: the manifest PUT, the journal
 * removed, a last progress report with phase "done".
 *
 * Memory is bounded by two buffer pools, allocated on first use and reused:
 *   (compressors + 2) raw buffers of chunk_size bytes and
 *   (parallel + 2) compressed buffers of ZSTD_compressBound(chunk_size) bytes,
 * so about (compressors + parallel + 4) x chunk_size (+0.4%), plus one zstd context per
 * compressor (about 1.3 MiB at level 3) and the per-chunk table (56 bytes a chunk). The
 * reader waits for a free raw buffer, a compressor for a free compressed buffer: a slow
 * network slows reading down instead of growing memory.
 *
 * The bandwidth limit is a token bucket on request body bytes as they are written to the
 * socket (128 KiB slices), filled at limit_Bps and holding at most max(256 KiB, 50 ms of
 * the rate), shared by every uploader; it starts empty, so no burst exceeds the rate.
 *
 * PUT outcomes: 2xx stored; 5xx (except 507), 429, 408 and transport failures retried
 * with backoff up to retry.max_attempts, then AGENT_NETWORK; 401/403 get a fresh URL once,
 * then AGENT_REFUSED "URL refused (expired or revoked token?)"; 507, 413 or an
 * EntityTooLarge/quota error code AGENT_FULL; any other 4xx AGENT_REFUSED. The first
 * failure stops every thread; nothing is reported done that was not answered 2xx.
 */
#ifndef XM_AGENT_COPY_H
#define XM_AGENT_COPY_H

#include <stdint.h>

#include "agent.h"
#include "journal.h"
#include "manifest.h"
#include "urlsrc.h"

#define COPY_CHUNKS_MAX (1ULL << 26) /* 64 Mi chunks: 1 PiB at 16 MiB */

struct copy_opts {
    const char *device;      /* the path read (an LVM snapshot's, maybe) */
    const char *device_name; /* the path the manifest names */
    uint64_t chunk_size;
    int zstd_level;
    int parallel;
    int compressors;
    double limit_Bps; /* body bytes per second; 0: unlimited */
    struct retry_policy retry;
    int progress_s;
    int io_timeout_ms;
    struct urlsrc_opts urls;               /* copy_run fills wanted, chunks and stop */
    struct journal *journal;               /* borrowed */
    const struct prev_manifest *prev;      /* borrowed; NULL: none */
    const struct api_target *api;          /* progress reports go here; NULL: none */
    struct hclient_tls *tls;               /* borrowed */
    const char *const *put_headers;        /* extra "Name: value" on every PUT; may be NULL */
    void (*read_done)(void *arg);          /* the last chunk is read (thaw now); may be NULL */
    const char *(*consistency)(void *arg); /* the manifest's consistency, asked at the end */
    void *cb_arg;
};

struct copy_result {
    uint64_t device_size;
    uint64_t chunks_total, chunks_zero, chunks_skipped, chunks_put;
    uint64_t bytes_read, bytes_sent, bytes_stored;
    unsigned long url_calls;
    uint64_t manifest_bytes;
    double seconds;
};

/* Run the pass. AGENT_OK once the manifest is stored, else the failure's code with f
 * filled. res (caller storage) is filled either way. Blocks for the whole copy. */
enum agent_exit copy_run(const struct copy_opts *o, struct copy_result *res, struct agent_fail *f);

/* Stop the running copy (from another thread: a signal arrived) with AGENT_FAILED and
 * why as its message; threads finish the request in hand and leave. Called while no
 * copy runs, it makes the next copy_run() fail at once with that message. */
void copy_cancel(const char *why);

#endif
