/*
 * manifest: the document that says a copy is complete, and the reading of an earlier one.
 *
 * Written LAST, after every chunk is stored: its existence means the copy is whole.
 *   {"format": "xmigrate-manifest", "format_version": 1, "agent_version": "0.1.0",
 *    "device": "/dev/sda", "device_size": N, "chunk_size": N,
 *    "consistency": "crash-consistent" | "frozen" | "lvm-snapshot",
 *    "created": "2026-11-25T22:17:01Z", "compression": "zstd", "zstd_level": 3,
 *    "chunks_total": N, "chunks_zero": N, "chunks_stored": N, "bytes_stored": N,
 *    "chunks": [{"index": 0, "offset": 0, "length": N, "sha256": "<hex>",
 *                "zero": false, "stored_size": N}, ...]}
 * sha256 is of the chunk's raw bytes (zero chunks too); a stored chunk object is one zstd
 * frame of those bytes, stored_size bytes long; a zero chunk is not stored (stored_size
 * 0). Every index from 0 to chunks_total-1 appears once, in order; the last chunk may be
 * shorter than chunk_size.
 *
 * A previous manifest (--previous-manifest, a file or an http(s) URL) is read back to
 * skip chunks whose content has not changed. Reading streams over the chunk list, so a
 * large disk's manifest costs memory for its table only.
 */
#ifndef XM_AGENT_MANIFEST_H
#define XM_AGENT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"
#include "hclient.h"

#define MANIFEST_MAX (512ULL * 1024 * 1024) /* bytes of a manifest read back */

/* What the copy knows of one chunk. */
struct chunk_rec {
    unsigned char sha[32];
    uint64_t stored; /* compressed bytes stored; 0 for a zero chunk */
    uint8_t zero;
    uint8_t done;
};

struct manifest_info {
    const char *device;
    uint64_t device_size;
    uint64_t chunk_size;
    const char *consistency;
    int zstd_level;
    time_t created;
};

/* The manifest of n chunks (all done). New string of *len bytes. Does not block. */
char *manifest_build(const struct manifest_info *mi, const struct chunk_rec *recs, uint64_t n,
                     size_t *len);

/* An earlier manifest, as far as skipping is concerned. */
struct prev_chunk {
    unsigned char sha[32];
    uint64_t length;
    uint64_t stored;
    uint8_t present; /* the manifest lists this index */
    uint8_t zero;
};

struct prev_manifest {
    uint64_t chunk_size;
    uint64_t n; /* table size: highest index + 1 */
    struct prev_chunk *c;
};

/*
 * Read a manifest from src: a path, or an http(s) URL fetched with GET (tls borrowed).
 * Fills *pm (caller storage; prev_manifest_release frees). 0, or -1 with err; a 404 is
 * reported with kind ERR_PERMANENT and a message saying "not found". Blocks.
 */
int prev_manifest_load(const char *src, struct hclient_tls *tls, struct prev_manifest *pm,
                       struct err *err);
/* Parse manifest text (tests, and the load above). */
int prev_manifest_parse(const char *text, size_t len, struct prev_manifest *pm, struct err *err);
void prev_manifest_release(struct prev_manifest *pm);

#endif
