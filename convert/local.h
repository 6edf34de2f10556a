/*
 * local: xm-convert's local mode, a file converted to a file with every shard run in this
 * process, in parallel threads.
 *
 * Input is read through a read-only mapping (holes found with SEEK_DATA/SEEK_HOLE are fed
 * as zeros without touching them). FIXED layouts (raw, vhd) are written in place into an
 * output made sparse with ftruncate; CONCAT layouts (vmdk, gce-tar) compress each shard
 * into memory and append finished shards in order, holding at most 4 x threads shard
 * outputs at once. The output is removed if the conversion fails. The input must not
 * shrink while it is read (the mapping would fault).
 */
#ifndef XM_CONVERT_LOCAL_H
#define XM_CONVERT_LOCAL_H

#include <stdint.h>

#include "convert.h"

struct convert_local_opts {
    enum convert_format to;
    const char *in;      /* borrowed */
    const char *out;     /* borrowed */
    uint64_t shard_size; /* bytes */
    unsigned threads;    /* >= 1 */
    int level;           /* 0: default */
    int64_t created;     /* Unix time written into the image */
    uint8_t id[16];
};

struct convert_local_stats {
    uint64_t in_size;
    uint64_t out_size;
    size_t shards;
    unsigned threads; /* threads actually started */
};

/* Convert opts->in to opts->out. Blocks until done; 0, or -1 with err. */
int convert_local_run(const struct convert_local_opts *opts, struct convert_local_stats *stats,
                      struct err *err);

#endif
