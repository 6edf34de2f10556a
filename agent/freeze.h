/*
 * freeze: hold the filesystems of the copied device still (--freeze) for one pass.
 *
 * The filesystems frozen are those mounted from the device, from its partitions, or from
 * a device-mapper/MD device stacked on either (sysfs holders), found in
 * /proc/self/mountinfo by device number; each superblock once. FIFREEZE (Linux 2.6.29+)
 * makes the filesystem flush and block every writer until FITHAW, so the copy is the
 * state of a clean unmount.
 *
 * A frozen filesystem must never stay frozen, so the thaw is on every exit path:
 *   - freeze_end(): the copy has read the last chunk (uploads go on unfrozen);
 *   - a watchdog thread: --freeze-max-s after the freeze, whatever the copy is doing
 *     (the copy then is only crash-consistent: freeze_intact() says so);
 *   - signals: freeze_emergency_thaw() is async-signal-safe, for handlers;
 *   - SIGKILL or any death: a guardian child process, forked before the freeze, holds
 *     its own descriptors of the mount points and thaws them when the agent's end of a
 *     pipe closes (the kernel closes it however the agent dies) or at the time limit
 *     plus a grace period. It exits quietly once told the agent thawed.
 * The state directory may sit on a frozen filesystem: freeze_covers() says so, so the
 * journal can hold its writes until the thaw.
 */
#ifndef XM_AGENT_FREEZE_H
#define XM_AGENT_FREEZE_H

#include <sys/types.h>

#include "err.h"

#define FREEZE_MAX 32 /* filesystems frozen at once */

struct freeze;

/*
 * Freeze every filesystem on device (a block device) for at most max_s seconds. New
 * handle, or NULL with err (device not a block device, a freeze refused). A device with
 * no mounted filesystem gives a handle that froze nothing (freeze_count() 0). Blocks
 * while the filesystems flush.
 */
struct freeze *freeze_start(const char *device, int max_s, struct err *err);
/* How many filesystems were frozen; the mount point of number i (borrowed). */
int freeze_count(const struct freeze *fz);
const char *freeze_mount(const struct freeze *fz, int i);
/* 1 when a file with st_dev dev lives on a frozen filesystem. */
int freeze_covers(const struct freeze *fz, dev_t dev);
/* Thaw now (idempotent, thread-safe). 1 when this call thawed, 0 when already thawed. */
int freeze_end(struct freeze *fz);
/* 1 when freeze_end() thawed (the freeze held for the whole pass), 0 when the watchdog
 * had to. */
int freeze_intact(struct freeze *fz);
/* Thaw if still frozen, stop the watchdog and the guardian, free. Accepts NULL. */
void freeze_free(struct freeze *fz);
/* Thaw whatever is frozen; only async-signal-safe calls (for signal handlers). */
void freeze_emergency_thaw(void);

#endif
