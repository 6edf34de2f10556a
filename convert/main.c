/*
 * xm-convert: the convert phase's program.
 *
 *   xm-convert --from raw --to raw|vhd|vmdk|gce-tar [--shard-mib N] [--threads N]
 *              [--level N] [--created UNIX_SECONDS] [--uuid UUID] IN OUT
 *
 * Local mode (any --from/--to argument): convert the file or block device IN into the
 * image file OUT, every shard in this process (see local.h). Without arguments it is the
 * convert phase's queue worker (workers/convert/worker.c).
 *
 * --created and --uuid fix the timestamp and identifiers written into the image (VHD
 * footer, VMDK CID, tar mtime), so that two runs give identical bytes; by default they
 * are now and a random UUID. Exit status: 0 done, 1 conversion failed, 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"
#include "local.h"
#include "log.h"

#define THREADS_MAX 64u
#define SHARD_MIB_MAX 1024u
#define SHARD_MIB_DEFAULT 16u /* the agent's chunk size: the sharded converter's unit */

static void usage(FILE *f)
{
    fprintf(f, "usage: xm-convert --from raw --to raw|vhd|vmdk|gce-tar [--shard-mib N] "
               "[--threads N]\n"
               "                  [--level N] [--created UNIX_SECONDS] [--uuid UUID] IN OUT\n");
}

/* A decimal number in [min, max]; -1 if it is not one. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 32 hex digits, dashes anywhere ignored. */
static int parse_uuid(const char *s, uint8_t id[16])
{
    int n = 0;
    for (; *s; s++) {
        if (*s == '-')
            continue;
        int v = hexval((unsigned char)*s);
        if (v < 0 || n >= 32)
            return -1;
        if (n % 2 == 0)
            id[n / 2] = (uint8_t)(v << 4);
        else
            id[n / 2] |= (uint8_t)v;
        n++;
    }
    return n == 32 ? 0 : -1;
}

static int random_uuid(uint8_t id[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(id + got, 16 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        got += (size_t)n;
    }
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    return 0;
}

static int has_local_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--from", 6) == 0 || strncmp(argv[i], "--to", 4) == 0)
            return 1;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int local_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"shard-mib", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 'j'},
        {"level", required_argument, NULL, 'l'},
        {"created", required_argument, NULL, 'c'},
        {"uuid", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct convert_local_opts o = {.created = (int64_t)time(NULL)};
    const char *from = NULL, *to = NULL;
    uint64_t shard_mib = SHARD_MIB_DEFAULT, v;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o.threads = cpus < 1 ? 1 : cpus > (long)THREADS_MAX ? THREADS_MAX : (unsigned)cpus;
    int have_uuid = 0, c;
    struct err err = {0};

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            from = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 's':
            if (parse_u64(optarg, 1, SHARD_MIB_MAX, &shard_mib) < 0) {
                fprintf(stderr, "xm-convert: --shard-mib wants 1..%u\n", SHARD_MIB_MAX);
                return 2;
            }
            break;
        case 'j':
            if (parse_u64(optarg, 1, THREADS_MAX, &v) < 0) {
                fprintf(stderr, "xm-convert: --threads wants 1..%u\n", THREADS_MAX);
                return 2;
            }
            o.threads = (unsigned)v;
            break;
        case 'l':
            if (parse_u64(optarg, 1, 12, &v) < 0) {
                fprintf(stderr, "xm-convert: --level wants 1..12\n");
                return 2;
            }
            o.level = (int)v;
            break;
        case 'c':
            if (parse_u64(optarg, 0, INT64_MAX, &v) < 0) {
                fprintf(stderr, "xm-convert: --created wants Unix seconds\n");
                return 2;
            }
            o.created = (int64_t)v;
            break;
        case 'u':
            if (parse_uuid(optarg, o.id) < 0) {
                fprintf(stderr, "xm-convert: --uuid wants 32 hex digits\n");
                return 2;
            }
            have_uuid = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!from || !to || argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(from, "raw") != 0) {
        fprintf(stderr, "xm-convert: --from: only 'raw' is read\n");
        return 2;
    }
    if (convert_format_parse(to, &o.to, &err) < 0) {
        fprintf(stderr, "xm-convert: --to: %s\n", err.msg);
        return 2;
    }
    if (!have_uuid && random_uuid(o.id) < 0) {
        fprintf(stderr, "xm-convert: no random bytes: %s\n", strerror(errno));
        return 1;
    }
    o.in = argv[optind];
    o.out = argv[optind + 1];
    o.shard_size = shard_mib << 20;

    const char *lvl = getenv("XM_LOG_LEVEL");
    if (lvl && log_set_level(lvl) < 0) {
        fprintf(stderr, "xm-convert: XM_LOG_LEVEL: unknown level '%s'\n", lvl);
        return 2;
    }

    char qin[256], qout[256], qerr[600];
    struct convert_local_stats st = {0};
    double t0 = now_s();
    if (convert_local_run(&o, &st, &err) < 0) {
        log_error("conversion failed", "to=%s in=%s out=%s error=%s", to,
                  log_quote(qin, sizeof(qin), o.in), log_quote(qout, sizeof(qout), o.out),
                  log_quote(qerr, sizeof(qerr), err.msg));
        return 1;
    }
    double secs = now_s() - t0;
    log_info("image converted",
             "from=raw to=%s in=%s out=%s in_bytes=%llu out_bytes=%llu shards=%zu threads=%u "
             "seconds=%.3f in_mb_per_s=%.1f",
             to, log_quote(qin, sizeof(qin), o.in), log_quote(qout, sizeof(qout), o.out),
             (unsigned long long)st.in_size, (unsigned long long)st.out_size, st.shards, st.threads,
             secs, secs > 0 ? (double)st.in_size / 1e6 / secs : 0.0);
    return 0;
}

int convert_worker_main(void);

int main(int argc, char **argv)
{
    if (has_local_args(argc, argv))
        return local_main(argc, argv);
    /* Without arguments: the convert phase's queue worker (workers/convert/worker.c). */
    if (argc == 1)
        return convert_worker_main();
    usage(stderr);
    return 2;
}
