/*
 * ebs: a disk becomes an EBS snapshot through the EBS direct APIs, the default AWS
 * import path (DESIGN.md section 4): StartSnapshot, one PutSnapshotBlock per block that
 * holds data, CompleteSnapshot with the count of blocks written, then DescribeSnapshots
 * (EC2) until the snapshot is "completed".
 *
 * Blocks. Block i covers bytes [i * block_size, (i + 1) * block_size) of the disk. The
 * block size is whatever StartSnapshot answers (524288 on AWS, 512 on moto) and is never
 * assumed here; the last block of a disk whose size is not a multiple of it is padded
 * with zeros by the caller. A new snapshot reads as zeros wherever no block was written,
 * so all-zero blocks are never sent: the caller skips them with ebs_block_is_zero(), and
 * ebs_put_block() refuses one (permanent error), so that the changed-block count given to
 * ebs_complete() is exactly the number of blocks sent. Putting the same block twice is
 * harmless (the second write replaces the first), so a retried shard may resend.
 *
 * Idempotency. Every snapshot is tagged with EBS_TAG_MIGRATION, EBS_TAG_HOST and
 * EBS_TAG_DISK (and a Name). A re-run first asks ebs_find(): a completed snapshot with
 * those tags is the result and nothing is sent again. Otherwise ebs_start() passes a
 * client token derived from the same three values (ebs_client_token()), so AWS answers
 * a repeated StartSnapshot with the snapshot the first call started; blocks already put
 * may be put again.
 *
 * Errors: aws_call()'s (transient for throttling, 5xx and the network; permanent for
 * everything else AWS refuses), prefixed with what was being done and the snapshot id;
 * a bad argument (a block of the wrong length, an index past the volume, an all-zero
 * block, an id that is not an AWS id) is permanent and names the snapshot and the block.
 * No message carries a credential or block data.
 *
 * Ownership: every pointer argument is borrowed for the call; results go to caller
 * storage (struct ebs_snapshot) or are new (struct ebs_block_list, freed by
 * ebs_block_list_release()). Every function that takes a struct aws blocks on the
 * network; none logs.
 */
#ifndef XM_EBS_H
#define XM_EBS_H

#include <stddef.h>
#include <stdint.h>

#include "aws/aws.h"
#include "err.h"

/* Tag keys on every AWS resource an import creates (snapshot, image, instance). */
#define EBS_TAG_MIGRATION "xmigrate:migration"
#define EBS_TAG_HOST "xmigrate:host"
#define EBS_TAG_DISK "xmigrate:disk"
#define EBS_TAG_NAME "Name"

#define EBS_ID_MAX 64                           /* an AWS resource id and its NUL */
#define EBS_TOKEN_SIZE 65                       /* a client token (64 hex digits) and its NUL */
#define EBS_TAG_VALUE_MAX 256                   /* AWS's limit on a tag value */
#define EBS_DESCRIPTION_MAX 255                 /* AWS's limit on a snapshot description */
#define EBS_VOLUME_GIB_MAX 65536                /* largest snapshot the direct APIs make */
#define EBS_BLOCK_SIZE_MAX (1024 * 1024)        /* largest block size accepted from the service */
#define EBS_LIST_MAX ((size_t)64 * 1024 * 1024) /* cap on the blocks one listing returns */

/* What identifies one disk of one migration. Borrowed strings, each 1..256 bytes. */
struct ebs_tags {
    const char *migration;
    const char *host;
    const char *disk;
};

/* A snapshot as this module knows it (caller storage, plain data: it may be copied or
 * rebuilt from a job payload by another process). */
struct ebs_snapshot {
    char id[EBS_ID_MAX];
    char status[16];      /* "pending", "completed", "error", ...; "" when unknown */
    long long volume_gib; /* the volume size in GiB; 0 when unknown */
    long block_size;      /* bytes, as StartSnapshot said; 0 when unknown (ebs_find) */
};

/* GiB needed for a disk of `bytes` bytes (rounded up, at least 1). */
long long ebs_volume_gib(uint64_t bytes);

/* The client token for StartSnapshot: 64 lowercase hex digits of SHA-256 over the
 * three tag values, the same for the same disk of the same migration. */
void ebs_client_token(const struct ebs_tags *tags, char out[EBS_TOKEN_SIZE]);

/*
 * Look up this disk's snapshot by its tags (DescribeSnapshots, owner self). A completed
 * one wins over a pending one; snapshots in any other state ("error") are ignored. 0
 * with *found set (and out filled, block_size 0, when found); -1 with err. Blocks.
 */
int ebs_find(struct aws *a, const struct ebs_tags *tags, struct ebs_snapshot *out, int *found,
             struct err *err);

/*
 * StartSnapshot of volume_gib GiB (1..EBS_VOLUME_GIB_MAX), tagged with tags and a Name,
 * described by description (NULL: "xmigrate <host> <disk>"), with client_token (NULL:
 * ebs_client_token(tags)). 0 with out filled (id, status "pending", volume size, block
 * size); -1 with err. A snapshot the service reports in state "error" (an earlier start
 * with the same token that failed) is a permanent error naming it. Blocks.
 */
int ebs_start(struct aws *a, long long volume_gib, const char *description,
              const struct ebs_tags *tags, const char *client_token, struct ebs_snapshot *out,
              struct err *err);

/* 1 when the len bytes at data are all zero (len 0 counts as zero), else 0. */
int ebs_block_is_zero(const void *data, size_t len);

/*
 * PutSnapshotBlock: block block_index of snap, len bytes at data. len must equal
 * snap->block_size, block_index must lie inside the volume, and the block must not be
 * all zero; any of these wrong is a permanent error naming the snapshot and the block,
 * and nothing is sent. Sends x-amz-Data-Length and the block's SHA-256 (base64) as
 * x-amz-Checksum with x-amz-Checksum-Algorithm SHA256. 0 when stored; -1 with err.
 * Blocks.
 */
int ebs_put_block(struct aws *a, const struct ebs_snapshot *snap, long long block_index,
                  const void *data, size_t len, struct err *err);

/*
 * CompleteSnapshot with the number of blocks put (x-amz-ChangedBlocksCount). 0 when AWS
 * accepted it (the snapshot is then "pending" or "completed": wait with
 * ebs_wait_completed()); -1 with err, permanent when the answer is "error". Blocks.
 */
int ebs_complete(struct aws *a, const char *snapshot_id, long long changed_blocks, struct err *err);

/*
 * Poll DescribeSnapshots (backoff from 0.5 s doubling to 10 s) until the snapshot is
 * "completed" (0). State "error": permanent error with AWS's status message. Still not
 * completed after timeout_s seconds: transient error saying what was waited for and the
 * last state seen. Blocks up to timeout_s.
 */
int ebs_wait_completed(struct aws *a, const char *snapshot_id, int timeout_s, struct err *err);

/* ---- reading a snapshot back (verification, tests) ---- */

struct ebs_block {
    long long index;
    char *token; /* new: the block token GetSnapshotBlock needs */
};

struct ebs_block_list {
    struct ebs_block *v; /* new, in the order AWS listed them (ascending index) */
    size_t n;
    long block_size;
    long long volume_gib;
};

/*
 * ListSnapshotBlocks of a completed snapshot, every page (at most EBS_LIST_MAX blocks).
 * 0 with out filled (release it with ebs_block_list_release()); -1 with err and out
 * empty. Blocks.
 */
int ebs_list_blocks(struct aws *a, const char *snapshot_id, struct ebs_block_list *out,
                    struct err *err);
void ebs_block_list_release(struct ebs_block_list *l);

/*
 * GetSnapshotBlock of one listed block into buf (size bytes, at least the block size).
 * The data is checked against the x-amz-Checksum the service sends (SHA256; a mismatch
 * is a transient error). 0 with *len set; -1 with err. Blocks.
 */
int ebs_get_block(struct aws *a, const char *snapshot_id, const struct ebs_block *block, void *buf,
                  size_t size, size_t *len, struct err *err);

#endif
