/*
 * lvm: copy from an LVM snapshot of the device (--lvm-snapshot), so the copy is one
 * point in time while the origin stays writable.
 *
 * Uses the host's LVM tools (lvs, lvcreate, lvremove), started with an argument vector
 * from PATH (never a shell). A classic LV needs free extents in its volume group for the
 * snapshot's copy-on-write area: the snapshot takes min(free, LV size) extents; with no
 * free extent the request is refused with a message saying so. A thin LV is snapshot in
 * its pool (no extents needed) and activated. The snapshot is named "<lv>_xmsnap"; one
 * left by an agent that was killed is removed first. The caller removes the snapshot on
 * every exit path it controls (lvm_snapshot_remove).
 */
#ifndef XM_AGENT_LVM_H
#define XM_AGENT_LVM_H

#include "err.h"

struct lvm_snap;

/* Snapshot device (an LV path: /dev/vg/lv or /dev/mapper/vg-lv). New, or NULL with err.
 * Blocks while LVM works. */
struct lvm_snap *lvm_snapshot_create(const char *device, struct err *err);
/* The snapshot's device path (borrowed). */
const char *lvm_snapshot_path(const struct lvm_snap *s);
/* Remove the snapshot and free s (accepts NULL). 0, or -1 with err (s is freed anyway). */
int lvm_snapshot_remove(struct lvm_snap *s, struct err *err);

#endif
