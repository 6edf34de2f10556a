/*
 * bench_convert: xm-convert's local mode against the usual single-process tools, on the
 * same image, in the same run (see bench/README.md, section convert):
 *
 *   vhd      qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on   target >= 1.0x
 *   vmdk     qemu-img convert -f raw -O vmdk -o subformat=streamOptimized      target >= 2x,
 *            and the output within 5% of qemu-img's size
 *   gce-tar  tar --format=oldgnu -Sczf OUT disk.raw                           target >= 2x
 *
 * The image (default 2 GiB: 1 GiB zeros, 512 MiB log text, 512 MiB random, in 64 MiB
 * stripes zero/text/zero/random, every byte written, as a dd of a device gives) is made
 * once and kept. Whole-process wall time of each command, page cache warm, outputs on the
 * same file system, each output removed and the file system synced (untimed) between
 * runs; baseline and xm-convert runs alternate; the median of --runs (at least 7 for vhd)
 * is reported, and the fastest run of each. The CPU used by everything else on the
 * machine during each run is reported too: a run with other load is not trustworthy. The
 * last xm-convert output of each format is checked with qemu-img compare / GNU tar
 * (untimed).
 *
 *   bench_convert [--image PATH] [--size-mib N] [--runs N] [--threads N] [--shard-mib N]
 *                 [--formats vhd,vmdk,gce-tar] [--quiet-wait S] [--no-verify]
 *
 * Prints a readable report, then `convert.<format>.<key>=<value>` lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MIB ((uint64_t)1 << 20)

static const char *image = "/var/tmp/xmigrate-bench/disk-2g.raw";
static const char *outdir = "/var/tmp/xmigrate-bench/out";
static uint64_t size_mib = 2048;
static int runs = 3;
static const char *threads = "2";
static const char *shard_mib = "16";
static const char *formats = "vhd,vmdk,gce-tar";
static int quiet_wait = 300;
static int verify = 1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_convert: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the image ---- */

static uint64_t rng = 0x853c49e6748fea9bull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Log lines with a clock that moves forward, a few services, hosts, users, addresses and
 * request paths: about 3.5x with gzip -6, like real /var/log. */
static size_t log_text(char *buf, size_t n)
{
    static const char *const svc[] = {"sshd", "CRON", "kernel", "systemd", "nginx", "postgres"};
    static const char *const user[] = {"root", "deploy", "alice", "backup", "www-data"};
    static uint64_t clock_ms = 1764000000000ull;
    size_t o = 0;
    while (o < n) {
        char line[320];
        uint64_t r = next_rand(), q = next_rand();
        clock_ms += r % 1500;
        time_t secs = (time_t)(clock_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        int l = (int)strftime(line, sizeof(line), "%b %d %H:%M:%S", &tm);
        l +=
            snprintf(line + l, sizeof(line) - (size_t)l,
                     ".%03u web%02u %s[%u]: ", (unsigned)(clock_ms % 1000), (unsigned)(r >> 8) % 12,
                     svc[(r >> 16) % 6], (unsigned)(r >> 24) % 30000 + 300);
        switch ((r >> 40) % 4) {
        case 0:
            l += snprintf(line + l, sizeof(line) - (size_t)l,
                          "Accepted publickey for %s from 10.%u.%u.%u port %u ssh2", user[q % 5],
                          (unsigned)(q >> 8) & 255, (unsigned)(q >> 16) & 255,
                          (unsigned)(q >> 24) & 255, (unsigned)(q >> 32) % 60000 + 1024);
            break;
        case 1:
            l += snprintf(line + l, sizeof(line) - (size_t)l,
                          "pam_unix(cron:session): session opened for user %s by (uid=0)",
                          user[q % 5]);
            break;
        case 2:
            l += snprintf(line + l, sizeof(line) - (size_t)l,
                          "10.0.%u.%u - - \"GET /api/v1/items/%u HTTP/1.1\" 200 %u rt=0.%03u",
                          (unsigned)(q >> 8) & 15, (unsigned)(q >> 16) & 255,
                          (unsigned)(q >> 24) % 5000, (unsigned)(q >> 40) % 9000 + 200,
                          (unsigned)(q >> 52) % 1000);
            break;
        default:
            l += snprintf(line + l, sizeof(line) - (size_t)l,
                          "checkpoint complete: wrote %u buffers (%u.%u%%)",
                          (unsigned)(q >> 8) % 3000, (unsigned)(q >> 24) % 40,
                          (unsigned)(q >> 32) % 10);
            break;
        }
        line[l++] = '\n';
        size_t k = (size_t)l < n - o ? (size_t)l : n - o;
        memcpy(buf + o, line, k);
        o += k;
    }
    return o;
}

static void make_image(uint64_t size)
{
    struct stat st;
    if (stat(image, &st) == 0 && (uint64_t)st.st_size == size)
        return;
    char *tmp;
    if (asprintf(&tmp, "%s.tmp", image) < 0)
        die("out of memory");
    fprintf(stderr, "bench_convert: making %s (%" PRIu64 " MiB)\n", image, size / MIB);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("create %s: %s", tmp, strerror(errno));
    const size_t chunk = 8 * MIB, stripe = 64 * MIB;
    char *buf = malloc(chunk);
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        switch ((off / stripe) % 4) {
        case 0:
        case 2:
            memset(buf, 0, n);
            break;
        case 1:
            log_text(buf, n);
            break;
        default:
            for (size_t i = 0; i + 8 <= n; i += 8) {
                uint64_t v = next_rand();
                memcpy(buf + i, &v, 8);
            }
        }
        if (write(fd, buf, n) != (ssize_t)n)
            die("write %s: %s", tmp, strerror(errno));
    }
    free(buf);
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, image) < 0)
        die("finish %s: %s", image, strerror(errno));
    free(tmp);
}

static void warm(void)
{
    int fd = open(image, O_RDONLY);
    if (fd < 0)
        die("open %s: %s", image, strerror(errno));
    char *buf = malloc(8 * MIB);
    while (read(fd, buf, 8 * MIB) > 0)
        ;
    free(buf);
    close(fd);
}

/* ---- the machine ---- */

/* Busy and total jiffies of all CPUs. */
static void cpu_jiffies(uint64_t *busy, uint64_t *total)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[10] = {0};
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                     &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 4)
        die("read /proc/stat");
    fclose(f);
    *total = 0;
    for (int i = 0; i < 8; i++)
        *total += v[i];
    *busy = *total - v[3] - v[4]; /* minus idle and iowait */
}

static void wait_quiet(void)
{
    double deadline = now_s() + quiet_wait;
    for (;;) {
        uint64_t b0, t0, b1, t1;
        cpu_jiffies(&b0, &t0);
        sleep(2);
        cpu_jiffies(&b1, &t1);
        double busy = t1 > t0 ? (double)(b1 - b0) / (double)(t1 - t0) : 0;
        if (busy < 0.15 || now_s() > deadline) {
            fprintf(stderr, "bench_convert: machine %.0f%% busy, measuring\n", busy * 100);
            return;
        }
    }
}

/* ---- running ---- */

struct sample {
    double wall;
    double cpu;    /* the command's user + system seconds */
    double others; /* CPU everything else used, as a share of the whole machine */
    uint64_t out_size;
};

static int spawn_wait(char *const argv[], struct rusage *ru)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("spawn %s: %s", argv[0], strerror(rc));
    int st;
    while (wait4(pid, &st, 0, ru) < 0)
        if (errno != EINTR)
            die("wait: %s", strerror(errno));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static struct sample timed(char *const argv[], const char *out)
{
    struct sample s = {0};
    struct rusage ru;
    uint64_t b0, t0, b1, t1;
    unlink(out);
    sync();
    cpu_jiffies(&b0, &t0);
    double start = now_s();
    int rc = spawn_wait(argv, &ru);
    s.wall = now_s() - start;
    cpu_jiffies(&b1, &t1);
    if (rc != 0)
        die("%s exited %d", argv[0], rc);
    s.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    long hz = sysconf(_SC_CLK_TCK);
    double machine = (double)(t1 - t0) / (double)hz; /* CPU-seconds the machine had */
    double busy = (double)(b1 - b0) / (double)hz;
    s.others = machine > 0 ? (busy - s.cpu) / machine : 0;
    if (s.others < 0)
        s.others = 0;
    struct stat st;
    if (stat(out, &st) < 0)
        die("no output %s", out);
    s.out_size = (uint64_t)st.st_size;
    return s;
}

static int cmp_wall(const void *a, const void *b)
{
    double x = ((const struct sample *)a)->wall, y = ((const struct sample *)b)->wall;
    return x < y ? -1 : x > y;
}

/* The median run (by wall time, with the worst disturbance seen); sorts s, so s[0] is then
 * the fastest run. */
static struct sample median(struct sample *s, int n)
{
    qsort(s, (size_t)n, sizeof(*s), cmp_wall);
    struct sample m = s[n / 2];
    for (int i = 0; i < n; i++)
        if (s[i].others > m.others)
            m.others = s[i].others; /* report the worst disturbance */
    return m;
}

/* ---- verification (untimed) ---- */

static int verify_output(const char *fmt, const char *out)
{
    if (strcmp(fmt, "vhd") == 0) {
        char *argv[] = {"qemu-img", "compare", "-q",          "-f",        "raw",
                        "-F",       "vpc",     (char *)image, (char *)out, NULL};
        return spawn_wait(argv, &(struct rusage){0}) == 0;
    }
    if (strcmp(fmt, "vmdk") == 0) {
        char *check[] = {"qemu-img", "check", "-q", "-f", "vmdk", (char *)out, NULL};
        char *argv[] = {"qemu-img", "compare", "-q",          "-f",        "raw",
                        "-F",       "vmdk",    (char *)image, (char *)out, NULL};
        return spawn_wait(check, &(struct rusage){0}) == 0 &&
               spawn_wait(argv, &(struct rusage){0}) == 0;
    }
    /* gce-tar: disk.raw is the image (a whole number of GiB here) */
    char *cmd;
    if (asprintf(&cmd, "%s/verify-disk.raw", outdir) < 0)
        die("out of memory");
    unlink(cmd);
    char *argv[] = {"tar",
                    "-xzf",
                    (char *)out,
                    "-C",
                    (char *)outdir,
                    "--transform",
                    "s/disk.raw/verify-disk.raw/",
                    NULL};
    int ok = spawn_wait(argv, &(struct rusage){0}) == 0;
    if (ok) {
        char *c[] = {"cmp", (char *)image, cmd, NULL};
        ok = spawn_wait(c, &(struct rusage){0}) == 0;
    }
    unlink(cmd);
    free(cmd);
    return ok;
}

/* ---- main ---- */

struct format {
    const char *name;
    const char *baseline;
    double target;
};

static const struct format fmts[] = {
    {"vhd", "qemu-img convert -O vpc -o subformat=fixed,force_size=on", 1.0},
    {"vmdk", "qemu-img convert -O vmdk -o subformat=streamOptimized", 2.0},
    {"gce-tar", "tar --format=oldgnu -Sczf", 2.0},
};

int main(int argc, char **argv)
{
    const char *conv = XM_CONVERT_BIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-verify") == 0) {
            verify = 0;
            continue;
        }
        if (!v)
            die("usage: bench_convert [--image PATH] [--size-mib N] [--runs N] [--threads N] "
                "[--shard-mib N] [--formats LIST] [--quiet-wait S] [--no-verify]");
        if (strcmp(a, "--image") == 0)
            image = v;
        else if (strcmp(a, "--size-mib") == 0)
            size_mib = strtoull(v, NULL, 10);
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v) > 0 ? atoi(v) : 1;
        else if (strcmp(a, "--threads") == 0)
            threads = v;
        else if (strcmp(a, "--shard-mib") == 0)
            shard_mib = v;
        else if (strcmp(a, "--formats") == 0)
            formats = v;
        else if (strcmp(a, "--quiet-wait") == 0)
            quiet_wait = atoi(v);
        else if (strcmp(a, "--convert") == 0)
            conv = v;
        else
            die("unknown option %s", a);
        i++;
    }
    setenv("XM_LOG_LEVEL", "warn", 1); /* xm-convert: no "image converted" line per run */
    if (size_mib == 0 || size_mib % 1024)
        die("--size-mib must be a whole number of GiB (GCE pads to a GiB)");
    mkdir("/var/tmp/xmigrate-bench", 0755);
    mkdir(outdir, 0755);
    make_image(size_mib * MIB);
    uint64_t size = size_mib * MIB;

    /* tar names the member after the file: a hard link called disk.raw. */
    char *link_path;
    if (asprintf(&link_path, "%s/disk.raw", outdir) < 0)
        die("out of memory");
    unlink(link_path);
    if (link(image, link_path) < 0)
        die("link %s: %s", link_path, strerror(errno));

    warm();
    wait_quiet();
    printf("convert benchmark: %s, %" PRIu64 " MiB (1/2 zeros, 1/4 log text, 1/4 random), "
           "%d run(s) each, median wall time\n",
           image, size_mib, runs);
    printf("xm-convert: --threads %s --shard-mib %s (%s)\n\n", threads, shard_mib, conv);
    printf("%-8s %-58s %7s %7s %8s %7s %9s %9s %6s %7s %7s %12s\n", "format", "baseline", "base s",
           "ours s", "speedup", "target", "base MB/s", "ours MB/s", "size", "others", "result",
           "best b / o s");

    char kv[8192] = "";
    size_t kvo = 0;
    int all_met = 1;
    for (size_t f = 0; f < sizeof(fmts) / sizeof(fmts[0]); f++) {
        const struct format *fm = &fmts[f];
        if (!strstr(formats, fm->name))
            continue;
        char *out_base, *out_ours;
        if (asprintf(&out_base, "%s/base.%s", outdir, fm->name) < 0 ||
            asprintf(&out_ours, "%s/ours.%s", outdir, fm->name) < 0)
            die("out of memory");
        char *vhd[] = {"qemu-img",    "convert", "-f", "raw",
                       "-O",          "vpc",     "-o", "subformat=fixed,force_size=on",
                       (char *)image, out_base,  NULL};
        char *vmdk[] = {"qemu-img",    "convert", "-f", "raw",
                        "-O",          "vmdk",    "-o", "subformat=streamOptimized",
                        (char *)image, out_base,  NULL};
        char *gce[] = {"tar", "--format=oldgnu", "-Sczf",    out_base,
                       "-C",  (char *)outdir,    "disk.raw", NULL};
        char *const *base = f == 0 ? vhd : f == 1 ? vmdk : gce;
        char *ours[] = {(char *)conv,      "--from",      "raw",           "--to",
                        (char *)fm->name,  "--threads",   (char *)threads, "--shard-mib",
                        (char *)shard_mib, (char *)image, out_ours,        NULL};

        /* vhd takes well under a second and the file system makes it jumpy: more runs. */
        int n = f == 0 && runs < 7 ? 7 : runs;
        struct sample *sb = calloc((size_t)n, sizeof(*sb));
        struct sample *so = calloc((size_t)n, sizeof(*so));
        for (int r = 0; r < n; r++) {
            sb[r] = timed(base, out_base);
            so[r] = timed(ours, out_ours);
            fprintf(stderr, "bench_convert: %s run %d: baseline %.2f s, ours %.2f s\n", fm->name,
                    r + 1, sb[r].wall, so[r].wall);
        }
        struct sample mb = median(sb, n), mo = median(so, n);
        double speedup = mb.wall / mo.wall;
        double size_ratio = (double)mo.out_size / (double)mb.out_size;
        int met = speedup >= fm->target;
        if (f == 1 && size_ratio > 1.05)
            met = 0;
        int ok = !verify || verify_output(fm->name, out_ours);
        if (!ok)
            met = 0;
        all_met &= met;
        double others = mb.others > mo.others ? mb.others : mo.others;
        const char *result = !ok ? "WRONG" : met ? "PASS" : "MISS";
        printf(
            "%-8s %-58s %7.2f %7.2f %7.2fx %6.1fx %9.0f %9.0f %6.3f %6.0f%% %7s %5.2f / %-5.2f\n",
            fm->name, fm->baseline, mb.wall, mo.wall, speedup, fm->target,
            (double)size / 1e6 / mb.wall, (double)size / 1e6 / mo.wall, size_ratio, others * 100,
            result, sb[0].wall, so[0].wall);
        kvo += (size_t)snprintf(
            kv + kvo, sizeof(kv) - kvo,
            "convert.%s.baseline_s=%.3f\nconvert.%s.ours_s=%.3f\nconvert.%s.speedup=%.2f\n"
            "convert.%s.target=%.1f\nconvert.%s.baseline_mb_s=%.0f\nconvert.%s.ours_mb_s=%.0f\n"
            "convert.%s.baseline_cpu_s=%.2f\nconvert.%s.ours_cpu_s=%.2f\n"
            "convert.%s.baseline_bytes=%" PRIu64 "\nconvert.%s.ours_bytes=%" PRIu64 "\n"
            "convert.%s.size_ratio=%.4f\nconvert.%s.others_pct=%.0f\nconvert.%s.verified=%d\n"
            "convert.%s.met=%d\nconvert.%s.baseline_best_s=%.3f\nconvert.%s.ours_best_s=%.3f\n",
            fm->name, mb.wall, fm->name, mo.wall, fm->name, speedup, fm->name, fm->target, fm->name,
            (double)size / 1e6 / mb.wall, fm->name, (double)size / 1e6 / mo.wall, fm->name, mb.cpu,
            fm->name, mo.cpu, fm->name, mb.out_size, fm->name, mo.out_size, fm->name, size_ratio,
            fm->name, others * 100, fm->name, verify ? ok : -1, fm->name, met, fm->name, sb[0].wall,
            fm->name, so[0].wall);
        unlink(out_base);
        unlink(out_ours);
        free(sb);
        free(so);
        free(out_base);
        free(out_ours);
    }
    unlink(link_path);
    free(link_path);
    printf("\n(size: xm-convert's output / the baseline's; others: CPU used by other processes "
           "during the worst run, share of the machine; best b / o: the fastest run of each)\n\n%s",
           kv);
    return all_met ? 0 : 1;
}
