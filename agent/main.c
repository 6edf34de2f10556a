/*
 * xm-agent: copies one block device (or file) of a source server into object storage,
 * chunk by chunk, through write URLs that need no credentials. See README.md for the
 * options, exit codes and what the binary needs from the host (nothing but a kernel).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "copy.h"
#include "dns.h"
#include "freeze.h"
#include "hclient.h"
#include "journal.h"
#include "log.h"
#include "lvm.h"
#include "manifest.h"
#include "urlsrc.h"
#include "xmalloc.h"

#define TOKEN_MAX 4096
#define HEADERS_MAX 8
#define DEFAULT_STATE_DIR "/var/lib/xmigrate/agent"

static const char usage_text[] =
    "usage: xm-agent --device PATH (--api URL --migration ID --host ID --disk ID\n"
    "                --token-file FILE | --url-template URL --manifest-url URL) [options]\n"
    "\n"
    "Reads PATH in chunks, skips all-zero chunks, hashes (SHA-256) and zstd-compresses the\n"
    "others, PUTs each to its write URL, then PUTs the manifest.\n"
    "\n"
    "where the URLs come from (one of):\n"
    "  --api URL             xmigrate API base; URLs fetched in batches, progress POSTed\n"
    "  --migration ID --host ID --disk ID   the disk, for the API paths\n"
    "  --token-file FILE     bearer token (file mode 0600 or stricter)\n"
    "  --url-template URL    fixed URLs: {index} {disk} {host} {migration} substituted\n"
    "  --manifest-url URL    with --url-template: where the manifest goes\n"
    "copy:\n"
    "  --chunk-mib N         chunk size in MiB, 1..256 (16)\n"
    "  --zstd-level N        1..19 (3)\n"
    "  --parallel N          uploads in flight, 1..64 (4)\n"
    "  --compressors N       hashing/compressing threads, 1..16 (2)\n"
    "  --limit-mbps X        cap on bytes sent, in megabits/s (10^6 bit/s); 0: none (0)\n"
    "  --previous-manifest S a manifest file or URL: unchanged chunks are not sent again\n"
    "  --state-dir DIR       resume journal (" DEFAULT_STATE_DIR ")\n"
    "consistency (default crash-consistent):\n"
    "  --freeze              FIFREEZE the device's mounted filesystems while reading\n"
    "  --freeze-max-s N      thaw after N s whatever happens, 1..3600 (60)\n"
    "  --lvm-snapshot        copy from an LVM snapshot of the device\n"
    "network:\n"
    "  --ca FILE             CA bundle for https (default: the system's)\n"
    "  --header 'N: V'       extra header on every PUT (up to 8), e.g. x-ms-blob-type\n"
    "  --max-attempts N      tries per request, 1..100 (8)\n"
    "  --retry-base-ms N     first backoff ceiling, 1..60000 (500)\n"
    "  --retry-max-ms N      backoff ceiling, 1..600000 (30000)\n"
    "  --io-timeout-s N      a request with no progress this long fails, 1..3600 (60)\n"
    "  --url-batch N         URLs per API call, 1..1024 (64)\n"
    "  --resolv-conf FILE    instead of /etc/resolv.conf\n"
    "  --hosts-file FILE     instead of /etc/hosts\n"
    "other:\n"
    "  --progress-s N        progress interval, 1..3600 (5)\n"
    "  --log-level L         debug, info, warn, error (info)\n"
    "  --version, --help\n"
    "exit: 0 ok, 2 usage, 3 device unreadable, 4 URL refused / token revoked,\n"
    "      5 storage full, 6 network gave up, 7 consistency not possible, 1 other,\n"
    "      128+N interrupted by signal N\n";

struct opts {
    const char *device;
    const char *api, *migration, *host, *disk, *token_file;
    const char *tmpl, *manifest_url;
    long long chunk_mib, zstd_level, parallel, compressors;
    double limit_mbps;
    const char *previous, *state_dir;
    int freeze, lvm;
    long long freeze_max_s;
    const char *ca;
    const char *headers[HEADERS_MAX + 1];
    int n_headers;
    long long max_attempts, retry_base_ms, retry_max_ms, io_timeout_s, url_batch, progress_s;
    const char *resolv_conf, *hosts_file;
};

static _Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("bad usage", "error=\"%s\" exit=%d", msg, AGENT_USAGE);
    fprintf(stderr, "xm-agent: %s\n(xm-agent --help for the options)\n", msg);
    exit(AGENT_USAGE);
}

static long long int_opt(const char *name, const char *v, long long min, long long max)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        usage_error("--%s: '%s' is not a whole number in %lld..%lld", name, v, min, max);
    return x;
}

/* An http(s) URL that parses, with every {placeholder} taken as "0". */
static int url_ok(const char *u)
{
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return 0;
    size_t n = strlen(u);
    if (n > HURL_MAX)
        return 0;
    char *probe = xmalloc(n + 1);
    size_t o = 0;
    for (const char *p = u; *p; p++) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close) {
            probe[o++] = '0';
            p = close;
        } else {
            probe[o++] = *p;
        }
    }
    probe[o] = '\0';
    struct hurl h;
    int ok = hurl_parse(probe, &h, NULL) == 0;
    hurl_release(&h);
    free(probe);
    return ok;
}

static void parse(int argc, char **argv, struct opts *o)
{
    enum {
        O_DEVICE = 256,
        O_API,
        O_MIGRATION,
        O_HOST,
        O_DISK,
        O_TOKEN,
        O_TMPL,
        O_MANIFEST,
        O_CHUNK,
        O_LEVEL,
        O_PARALLEL,
        O_COMP,
        O_LIMIT,
        O_PREV,
        O_STATE,
        O_FREEZE,
        O_FREEZE_MAX,
        O_LVM,
        O_CA,
        O_HEADER,
        O_ATTEMPTS,
        O_BASE,
        O_MAX,
        O_IOT,
        O_BATCH,
        O_PROGRESS,
        O_RESOLV,
        O_HOSTS,
        O_LOG,
        O_VERSION,
        O_HELP
    };
    static const struct option longs[] = {
        {"device", required_argument, NULL, O_DEVICE},
        {"api", required_argument, NULL, O_API},
        {"migration", required_argument, NULL, O_MIGRATION},
        {"host", required_argument, NULL, O_HOST},
        {"disk", required_argument, NULL, O_DISK},
        {"token-file", required_argument, NULL, O_TOKEN},
        {"url-template", required_argument, NULL, O_TMPL},
        {"manifest-url", required_argument, NULL, O_MANIFEST},
        {"chunk-mib", required_argument, NULL, O_CHUNK},
        {"zstd-level", required_argument, NULL, O_LEVEL},
        {"parallel", required_argument, NULL, O_PARALLEL},
        {"compressors", required_argument, NULL, O_COMP},
        {"limit-mbps", required_argument, NULL, O_LIMIT},
        {"previous-manifest", required_argument, NULL, O_PREV},
        {"state-dir", required_argument, NULL, O_STATE},
        {"freeze", no_argument, NULL, O_FREEZE},
        {"freeze-max-s", required_argument, NULL, O_FREEZE_MAX},
        {"lvm-snapshot", no_argument, NULL, O_LVM},
        {"ca", required_argument, NULL, O_CA},
        {"header", required_argument, NULL, O_HEADER},
        {"max-attempts", required_argument, NULL, O_ATTEMPTS},
        {"retry-base-ms", required_argument, NULL, O_BASE},
        {"retry-max-ms", required_argument, NULL, O_MAX},
        {"io-timeout-s", required_argument, NULL, O_IOT},
        {"url-batch", required_argument, NULL, O_BATCH},
        {"progress-s", required_argument, NULL, O_PROGRESS},
        {"resolv-conf", required_argument, NULL, O_RESOLV},
        {"hosts-file", required_argument, NULL, O_HOSTS},
        {"log-level", required_argument, NULL, O_LOG},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.chunk_mib = 16,
                       .zstd_level = 3,
                       .parallel = 4,
                       .compressors = 2,
                       .state_dir = DEFAULT_STATE_DIR,
                       .freeze_max_s = 60,
                       .max_attempts = 8,
                       .retry_base_ms = 500,
                       .retry_max_ms = 30000,
                       .io_timeout_s = 60,
                       .url_batch = 64,
                       .progress_s = 5};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case O_DEVICE:
            o->device = optarg;
            break;
        case O_API:
            o->api = optarg;
            break;
        case O_MIGRATION:
            o->migration = optarg;
            break;
        case O_HOST:
            o->host = optarg;
            break;
        case O_DISK:
            o->disk = optarg;
            break;
        case O_TOKEN:
            o->token_file = optarg;
            break;
        case O_TMPL:
            o->tmpl = optarg;
            break;
        case O_MANIFEST:
            o->manifest_url = optarg;
            break;
        case O_CHUNK:
            o->chunk_mib = int_opt("chunk-mib", optarg, 1, 256);
            break;
        case O_LEVEL:
            o->zstd_level = int_opt("zstd-level", optarg, 1, 19);
            break;
        case O_PARALLEL:
            o->parallel = int_opt("parallel", optarg, 1, 64);
            break;
        case O_COMP:
            o->compressors = int_opt("compressors", optarg, 1, 16);
            break;
        case O_LIMIT: {
            char *end;
            errno = 0;
            o->limit_mbps = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->limit_mbps >= 0) || o->limit_mbps > 1000000)
                usage_error("--limit-mbps: '%s' is not a number in 0..1000000", optarg);
            break;
        }
        case O_PREV:
            o->previous = optarg;
            break;
        case O_STATE:
            o->state_dir = optarg;
            break;
        case O_FREEZE:
            o->freeze = 1;
            break;
        case O_FREEZE_MAX:
            o->freeze_max_s = int_opt("freeze-max-s", optarg, 1, 3600);
            break;
        case O_LVM:
            o->lvm = 1;
            break;
        case O_CA:
            o->ca = optarg;
            break;
        case O_HEADER:
            if (o->n_headers == HEADERS_MAX)
                usage_error("--header: at most %d", HEADERS_MAX);
            if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n") || strlen(optarg) > 1024)
                usage_error("--header: '%.64s' is not 'Name: value'", optarg);
            o->headers[o->n_headers++] = optarg;
            break;
        case O_ATTEMPTS:
            o->max_attempts = int_opt("max-attempts", optarg, 1, 100);
            break;
        case O_BASE:
            o->retry_base_ms = int_opt("retry-base-ms", optarg, 1, 60000);
            break;
        case O_MAX:
            o->retry_max_ms = int_opt("retry-max-ms", optarg, 1, 600000);
            break;
        case O_IOT:
            o->io_timeout_s = int_opt("io-timeout-s", optarg, 1, 3600);
            break;
        case O_BATCH:
            o->url_batch = int_opt("url-batch", optarg, 1, URLSRC_BATCH_MAX);
            break;
        case O_PROGRESS:
            o->progress_s = int_opt("progress-s", optarg, 1, 3600);
            break;
        case O_RESOLV:
            o->resolv_conf = optarg;
            break;
        case O_HOSTS:
            o->hosts_file = optarg;
            break;
        case O_LOG:
            if (log_set_level(optarg) < 0)
                usage_error("--log-level: unknown level '%s'", optarg);
            break;
        case O_VERSION:
            printf("xm-agent %s\n", AGENT_VERSION);
            exit(0);
        case O_HELP:
            fputs(usage_text, stdout);
            exit(0);
        default:
            usage_error("unknown or incomplete option '%s'", name);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->device)
        usage_error("--device is required");
    if (!!o->api == !!o->tmpl)
        usage_error("give exactly one of --api and --url-template");
    if (o->api) {
        size_t n = strlen(o->api);
        if (n > 1 && o->api[n - 1] == '/') {
            static char *trimmed; /* lives as long as the process */
            trimmed = xstrndup(o->api, n - 1);
            o->api = trimmed;
        }
        if (!url_ok(o->api))
            usage_error("--api must be an http:// or https:// URL");
        if (!o->migration || !o->host || !o->disk || !o->token_file)
            usage_error("--api needs --migration, --host, --disk and --token-file");
        if (o->manifest_url)
            usage_error("--manifest-url goes with --url-template; the API names the manifest's");
    } else {
        if (!url_ok(o->tmpl) || !strstr(o->tmpl, "{index}"))
            usage_error("--url-template must be an http(s) URL containing {index}");
        if (!o->manifest_url || !url_ok(o->manifest_url))
            usage_error("--url-template needs --manifest-url, an http(s) URL");
        if (o->token_file)
            usage_error("--token-file goes with --api");
    }
    const char *ids[] = {o->migration, o->host, o->disk};
    const char *idn[] = {"migration", "host", "disk"};
    for (int i = 0; i < 3; i++)
        if (ids[i] && !agent_id_ok(ids[i]))
            usage_error("--%s: '%.64s' must be [A-Za-z0-9][A-Za-z0-9._-]*, at most %d bytes",
                        idn[i], ids[i], AGENT_ID_MAX);
    if (o->freeze && o->lvm)
        usage_error("--freeze and --lvm-snapshot exclude each other");
    if (o->retry_max_ms < o->retry_base_ms)
        o->retry_max_ms = o->retry_base_ms;
}

/* The bearer token: the file must be a regular file nobody but its owner can read. */
static char *read_token(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        usage_error("--token-file '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        usage_error("--token-file '%s' is not a regular file", path);
    if (st.st_mode & 077)
        usage_error("--token-file '%s' is readable by others (mode %03o): chmod 600 it", path,
                    (unsigned)(st.st_mode & 0777));
    char *t = xcalloc(1, TOKEN_MAX + 1);
    ssize_t n = read(fd, t, TOKEN_MAX + 1);
    close(fd);
    if (n < 0 || n > TOKEN_MAX)
        usage_error("--token-file '%s' is unreadable or over %d bytes", path, TOKEN_MAX);
    while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
        t[--n] = '\0';
    if (n == 0)
        usage_error("--token-file '%s' is empty", path);
    for (ssize_t i = 0; i < n; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f)
            usage_error("--token-file '%s' holds more than one printable word", path);
    return t;
}

/* ---------------------------------------------------------------- consistency hooks */

struct run {
    const struct opts *o;
    struct freeze *fz;
    struct lvm_snap *snap;
    struct journal *journal;
};

static struct run the_run;

static const char *consistency(void *arg)
{
    struct run *r = arg;
    if (r->snap)
        return "lvm-snapshot";
    if (r->fz && freeze_count(r->fz) > 0 && freeze_intact(r->fz))
        return "frozen";
    return "crash-consistent";
}

static void read_done(void *arg)
{
    struct run *r = arg;
    if (r->fz) {
        if (freeze_end(r->fz))
            log_info("thawed: every chunk was read frozen", "filesystems=%d", freeze_count(r->fz));
        struct err err = {0};
        if (journal_defer(r->journal, 0, &err) < 0)
            log_warn("journal write after thaw failed", "error=\"%s\"", err.msg);
    }
}

/* ---------------------------------------------------------------- signals */

/* Fatal signals while frozen: thaw first, then die as the signal says. */
static void fatal_handler(int sig)
{
    freeze_emergency_thaw();
    signal(sig, SIG_DFL);
    raise(sig);
}

static volatile int interrupted;

/* SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked in every thread and taken here: thaw at
 * once, stop the copy (main then removes a snapshot and exits 128+N); a second signal,
 * or a copy that does not stop within 30 s, ends the process at once. */
static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        freeze_emergency_thaw();
        if (interrupted) {
            log_error("second signal: exiting now", "signal=%d", sig);
            _exit(128 + sig);
        }
        interrupted = sig;
        log_error("interrupted: stopping", "signal=%d", sig);
        char why[64];
        snprintf(why, sizeof(why), "interrupted by signal %d", sig);
        copy_cancel(why);
        for (int i = 0; i < 300; i++) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000000L};
            nanosleep(&ts, NULL);
        }
        log_error("copy did not stop within 30 s: exiting", "signal=%d", sig);
        _exit(128 + sig);
    }
    return NULL;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
    signal(SIGPIPE, SIG_IGN);
    dns_configure(o.resolv_conf, o.hosts_file);

    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t sigthread;
    XM_ASSERT(pthread_create(&sigthread, NULL, signal_main, &set) == 0);
    pthread_detach(sigthread);

    int code = AGENT_FAILED;
    struct err err = {0};
    struct agent_fail f = {0};
    char *token = NULL, *dest = NULL;
    struct hclient_tls *tls = NULL;
    struct prev_manifest prev = {0};
    int have_prev = 0;
    struct run *r = &the_run;
    r->o = &o;

    if (o.token_file)
        token = read_token(o.token_file);
    tls = hclient_tls_new(o.ca, &err);
    if (!tls) {
        log_error("bad usage", "error=\"%s\"", err.msg);
        code = AGENT_USAGE;
        goto out;
    }
    /* The device first: nothing else is worth doing if it cannot be read. */
    {
        int fd = open(o.device, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            agent_fail(&f, AGENT_DEVICE, "device '%s' unreadable: %s", o.device, strerror(errno));
            code = AGENT_DEVICE;
            goto fail;
        }
        close(fd);
    }
    uint64_t chunk_size = (uint64_t)o.chunk_mib << 20;
    if (o.previous) {
        if (prev_manifest_load(o.previous, tls, &prev, &err) < 0) {
            log_warn("previous manifest unusable: every chunk is hashed against the journal only",
                     "error=\"%s\"", err.msg);
        } else if (prev.chunk_size != chunk_size) {
            log_warn("previous manifest has another chunk size: not used",
                     "previous_chunk_size=%llu chunk_size=%llu",
                     (unsigned long long)prev.chunk_size, (unsigned long long)chunk_size);
            prev_manifest_release(&prev);
        } else {
            have_prev = 1;
        }
    }
    if (o.api)
        dest = xasprintf("api %s %s/%s/%s", o.api, o.migration, o.host, o.disk);
    else
        dest = xasprintf("template %s %s %s %s", o.tmpl, o.migration ? o.migration : "",
                         o.host ? o.host : "", o.disk ? o.disk : "");
    r->journal = journal_open(o.state_dir, dest, chunk_size, &err);
    if (!r->journal) {
        agent_fail(&f, AGENT_FAILED, "%s", err.msg);
        code = AGENT_FAILED;
        goto fail;
    }

    const char *read_path = o.device;
    if (o.lvm) {
        r->snap = lvm_snapshot_create(o.device, &err);
        if (!r->snap) {
            agent_fail(&f, AGENT_CONSISTENCY, "%s", err.msg);
            code = AGENT_CONSISTENCY;
            goto fail;
        }
        read_path = lvm_snapshot_path(r->snap);
        log_info("lvm snapshot created", "device=%s snapshot=%s", o.device, read_path);
    }
    if (o.freeze) {
        /* A journal on a filesystem about to be frozen would block its writer. */
        struct stat sd;
        r->fz = freeze_start(o.device, (int)o.freeze_max_s, &err);
        if (!r->fz) {
            agent_fail(&f, AGENT_CONSISTENCY, "%s", err.msg);
            code = AGENT_CONSISTENCY;
            goto fail;
        }
        if (freeze_count(r->fz) == 0)
            log_warn("--freeze: no mounted filesystem on the device; nothing frozen", "device=%s",
                     o.device);
        for (int i = 0; i < freeze_count(r->fz); i++)
            log_info("frozen", "mount=%s max_s=%lld", freeze_mount(r->fz, i), o.freeze_max_s);
        if (stat(o.state_dir, &sd) == 0 && freeze_covers(r->fz, sd.st_dev))
            journal_defer(r->journal, 1, NULL);
        struct sigaction sa = {.sa_handler = fatal_handler};
        sigemptyset(&sa.sa_mask);
        const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < XM_ARRAY_LEN(fatal); i++)
            sigaction(fatal[i], &sa, NULL);
    }

    struct api_target api = {
        .base = o.api, .migration = o.migration, .host = o.host, .disk = o.disk, .token = token};
    const char *disk = o.disk;
    if (!disk) {
        const char *slash = strrchr(o.device, '/');
        disk = slash ? slash + 1 : o.device;
    }
    struct copy_opts co = {
        .device = read_path,
        .device_name = o.device,
        .chunk_size = chunk_size,
        .zstd_level = (int)o.zstd_level,
        .parallel = (int)o.parallel,
        .compressors = (int)o.compressors,
        .limit_Bps = o.limit_mbps * 1e6 / 8,
        .retry = {.max_attempts = (int)o.max_attempts,
                  .base_ms = (int)o.retry_base_ms,
                  .cap_ms = (int)o.retry_max_ms},
        .progress_s = (int)o.progress_s,
        .io_timeout_ms = (int)o.io_timeout_s * 1000,
        .urls = {.api = o.api ? &api : NULL,
                 .tmpl = o.tmpl,
                 .manifest_url = o.manifest_url,
                 .migration = o.migration,
                 .host = o.host,
                 .disk = disk,
                 .batch = (int)o.url_batch,
                 .margin_s = 60,
                 .retry = {.max_attempts = (int)o.max_attempts,
                           .base_ms = (int)o.retry_base_ms,
                           .cap_ms = (int)o.retry_max_ms}},
        .journal = r->journal,
        .prev = have_prev ? &prev : NULL,
        .api = o.api ? &api : NULL,
        .tls = tls,
        .put_headers = o.n_headers ? o.headers : NULL,
        .read_done = read_done,
        .consistency = consistency,
        .cb_arg = r,
    };
    struct copy_result res;
    code = copy_run(&co, &res, &f);
    read_done(r); /* thaw even when the copy stopped early */
    if (code == AGENT_OK) {
        log_info("copy complete",
                 "device=%s size=%llu chunks=%llu zero=%llu skipped=%llu sent_chunks=%llu "
                 "bytes_read=%llu bytes_sent=%llu bytes_stored=%llu manifest_bytes=%llu "
                 "url_calls=%lu consistency=%s seconds=%.2f",
                 o.device, (unsigned long long)res.device_size,
                 (unsigned long long)res.chunks_total, (unsigned long long)res.chunks_zero,
                 (unsigned long long)res.chunks_skipped, (unsigned long long)res.chunks_put,
                 (unsigned long long)res.bytes_read, (unsigned long long)res.bytes_sent,
                 (unsigned long long)res.bytes_stored, (unsigned long long)res.manifest_bytes,
                 res.url_calls, consistency(r), res.seconds);
    }

fail:
    if (code != AGENT_OK) {
        if (interrupted)
            code = 128 + interrupted;
        log_error("copy failed", "device=%s exit=%d reason=%s error=\"%s\"", o.device, code,
                  agent_exit_str(code > 127 ? AGENT_FAILED : (enum agent_exit)code), f.err.msg);
        fprintf(stderr, "xm-agent: %s\n", f.err.msg[0] ? f.err.msg : "failed");
    }
out:
    freeze_free(r->fz);
    r->fz = NULL;
    if (r->snap) {
        if (lvm_snapshot_remove(r->snap, &err) < 0)
            log_error("lvm snapshot not removed", "error=\"%s\"", err.msg);
        else
            log_info("lvm snapshot removed", "device=%s", o.device);
        r->snap = NULL;
    }
    journal_free(r->journal);
    if (have_prev)
        prev_manifest_release(&prev);
    hclient_tls_free(tls);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    free(dest);
    return code;
}
