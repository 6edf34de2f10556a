/*
 * lvm: copy from an LVM snapshot of the device (--lvm-snapshot), so the copy is one
 * point in time while the origin stays writable.
 *
 * Uses the host's LVM tools (lvs, lvcreate, lvremove, lvchange), started with an
 * argument vector from PATH (never a shell); their stderr goes into every error message
 * and each is killed after LVM_CMD_TIMEOUT_S. The snapshot is named "<lv>_xmsnap"; one
 * left by an agent that was killed (a snapshot of the same LV, not open) is removed
 * first, and an LV of that name that is anything else is refused, never touched.
 *
 * A classic LV's snapshot needs a copy-on-write (COW) area in its volume group, which
 * holds the old contents of every origin block written while the snapshot exists; when
 * it fills up the snapshot is invalidated and reading it fails (the copy fails, it never
 * copies wrong bytes). Its size (lvm_cow_extents): LVM_SNAP_PCT percent of the LV, at
 * least LVM_SNAP_MIN_MIB, at most what could ever be used (the whole LV plus the
 * exception metadata), capped by the volume group's free extents (a warning when that
 * cap bites); no free extent at all is refused with a message saying so, before
 * anything is created. A thin LV is snapshot in its pool (no extents needed) and
 * activated. The caller removes the snapshot on every exit path it controls
 * (lvm_snapshot_remove), which first logs how full the COW area got (or that it
 * overflowed).
 */
#ifndef XM_AGENT_LVM_H
#define XM_AGENT_LVM_H

#include "err.h"

#define LVM_SNAP_PCT 20       /* percent of the LV asked for a classic snapshot's COW area */
#define LVM_SNAP_MIN_MIB 1024 /* ... but at least this much */
#define LVM_COW_CHUNK 4096    /* lvcreate's default snapshot chunk size */
#define LVM_CMD_TIMEOUT_S 120 /* an LVM command still running then is killed */

struct lvm_snap;

/* The extents a classic snapshot of an LV of lv_size bytes gets in a volume group with
 * extent-byte extents, free_extents of them free (see above); *wanted (if not NULL): the
 * extents it would get with enough free. */
unsigned long long lvm_cow_extents(unsigned long long lv_size, unsigned long long extent,
                                   unsigned long long free_extents, unsigned long long *wanted);

/* Snapshot device (an LV: /dev/vg/lv, /dev/mapper/vg-lv, /dev/dm-N or a link to one). New,
 * or NULL with err.
 * Blocks while LVM works. */
struct lvm_snap *lvm_snapshot_create(const char *device, struct err *err);
/* The snapshot's device path (borrowed). */
const char *lvm_snapshot_path(const struct lvm_snap *s);
/* Remove the snapshot and free s (accepts NULL). 0, or -1 with err (s is freed anyway). */
int lvm_snapshot_remove(struct lvm_snap *s, struct err *err);

#endif
