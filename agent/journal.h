/*
 * journal: the local record of chunks already stored, so an interrupted copy resumes.
 *
 * No manifest exists until a copy is complete, so a copy killed half-way would otherwise
 * start again from nothing. The journal is one append-only text file per destination in
 * the state directory (--state-dir, mode 0700):
 *     xm-agent-journal 1 <chunk size> <destination id>
 *     <index> <sha256 hex> <stored bytes>
 *     ...
 * A line is appended (one write(2), then fdatasync) only after the chunk's PUT was
 * answered 2xx, so every record names an object that exists with that content. The
 * destination id names where the chunks go (API migration/host/disk, or the URL
 * template); a journal for another destination or chunk size is started afresh. A torn
 * last line (killed mid-write) is ignored. After the manifest is written the journal is
 * removed: the manifest (--previous-manifest) takes over.
 *
 * Thread-safe. While deferred (the state directory sits on a frozen filesystem: a
 * write there would block until the thaw) records are kept in memory and written when
 * the deferral ends.
 */
#ifndef XM_AGENT_JOURNAL_H
#define XM_AGENT_JOURNAL_H

#include <stdint.h>

#include "err.h"

struct journal;

/* Open (create) the journal of dest_id in dir (created 0700 if missing). New, or NULL
 * with err. */
struct journal *journal_open(const char *dir, const char *dest_id, uint64_t chunk_size,
                             struct err *err);
void journal_free(struct journal *j);

/* The path of the journal file (borrowed). */
const char *journal_path(const struct journal *j);
/* Records loaded from an earlier run. */
uint64_t journal_loaded(const struct journal *j);

/* 1 with sha and *stored when an earlier run stored chunk index, else 0. */
int journal_lookup(const struct journal *j, uint64_t index, unsigned char sha[32],
                   uint64_t *stored);

/* Record that chunk index (content sha) is stored in stored bytes. 0, or -1 with err. */
int journal_append(struct journal *j, uint64_t index, const unsigned char sha[32], uint64_t stored,
                   struct err *err);

/* Defer writes (on) or write what was deferred and stop deferring (off). */
int journal_defer(struct journal *j, int on, struct err *err);

/* Delete the file (the copy is complete). 0, or -1 with err. */
int journal_remove(struct journal *j, struct err *err);

#endif
