/*
 * xm-agent --lvm-snapshot against real LVM (root): a volume group of its own on a loop
 * device over a sparse file (VG "xmtest<random>", so concurrent runs and the host's own
 * volume groups are never touched), the agent copying an LV into tests/fakes/sink.py in
 * --url-template mode, the LVM tools (lvs, lvcreate, lvremove) the real ones from PATH.
 *
 *   snapshot_copy   the copy is read from "<lv>_xmsnap" (seen with lvs while the agent
 *                   runs: origin, size), 26 MiB are written to the origin LV after the
 *                   snapshot exists and before the agent reads them: the stored chunks
 *                   are the OLD bytes, byte for byte, the origin has the new ones; the
 *                   manifest says "lvm-snapshot"; the snapshot is gone afterwards
 *   sigterm         SIGTERM mid-copy: exit 143, no manifest, snapshot removed; SIGTERM
 *                   while lvcreate runs (before the copy starts): the same, nothing copied
 *   failure         storage unreachable: exit 6, snapshot removed; a 6 GiB LV gets a
 *                   20% copy-on-write area (308 extents of 4 MiB), a 64 MiB LV its whole
 *                   size plus exception metadata (17); --device /dev/dm-N works
 *   small_cow       few free extents: the snapshot takes what is free (a warning); a copy
 *                   with no writes completes; more written to the origin than the area
 *                   holds: the snapshot overflows, the copy fails (exit 3, never wrong
 *                   bytes), the log says why, the snapshot is removed
 *   no_free         no free extent: exit 7 with the clear message, no LV created
 *   leftover        a "<lv>_xmsnap" snapshot left by a killed agent is removed and the copy
 *                   runs; an LV of that name that is not its snapshot is refused (exit 7)
 *                   and left alone; LVM's own stderr is in the error when lvcreate fails
 *
 * Needs root, the LVM tools and a kernel with device-mapper (dm-snapshot). Without any of
 * them every test FAILS with a message saying which: a skipped test would let an untested
 * --lvm-snapshot look green. Without udev (/run/udev/control), LVM_SYSTEM_DIR points the
 * tests and the agent at a config of their own with udev_sync and udev_rules off, so
 * LVM makes its /dev nodes itself. Everything made is removed on every exit path (the
 * group teardown, atexit, SIGINT/SIGTERM/SIGHUP): LVs, VG, PV, loop device, file, and
 * the VG's metadata archive files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "harness.h"
#include "http.h"
#include "xmalloc.h"

#ifndef XM_AGENT_BIN
#define XM_AGENT_BIN "build/agent/xm-agent"
#endif
#ifndef XM_SINK_SCRIPT
#define XM_SINK_SCRIPT "tests/fakes/sink.py"
#endif

#define MIB (1024 * 1024)
#define CHUNK MIB
#define LV_MIB 64
#define LV_SIZE ((size_t)LV_MIB * MIB)
#define EXTENT (4ULL * MIB) /* vgcreate's default */

static char tmp[256];            /* this run's scratch directory */
static char vg[32];              /* xmtest<8 hex> */
static char loopdev[64];         /* /dev/loopN */
static char backing[300];        /* the sparse file under the PV */
static volatile pid_t agent;     /* a running agent, killed by the cleanup */
static volatile int dev_fd = -1; /* an LV the test has open, closed by the cleanup */
static int vg_made;              /* the VG exists */
static char why_not[512];        /* why this machine cannot run the tests ("" = it can) */
static unsigned char *old_img;   /* what the data LV holds before a test writes to it */

/* ---------------------------------------------------------------- small helpers */

static char *path_in(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *path_in(const char *fmt, ...)
{
    char rel[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    return xasprintf("%s/%s", tmp, rel);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    unsigned char *buf = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
}

static int file_has(const char *path, const char *needle)
{
    size_t len;
    unsigned char *t = read_all(path, &len);
    int yes = t && strstr((char *)t, needle) != NULL;
    free(t);
    return yes;
}

/* The number after "key=" in the last line of path that has it; -1 when none. */
static long long log_value(const char *path, const char *key)
{
    size_t len;
    char *t = (char *)read_all(path, &len);
    long long v = -1;
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    for (char *p = t ? strstr(t, pat) : NULL; p; p = strstr(p + 1, pat))
        v = strtoll(p + strlen(pat), NULL, 10);
    free(t);
    return v;
}

static uint64_t xs_state;
static uint64_t xs(void)
{
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}

static void fill_random(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = xs();
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

static void fill_text(char *p, size_t n, int seed)
{
    size_t o = 0;
    for (int line = 0; o < n; line++) {
        char l[160];
        int w = snprintf(l, sizeof(l),
                         "2026-11-25T22:%02d:%02d db%d postgres[%d]: checkpoint complete: wrote "
                         "%d buffers (%d.%d%%); seed %d\n",
                         (line / 60) % 60, line % 60, seed, 1000 + line % 977, line % 4096,
                         line % 100, line % 10, seed);
        size_t take = (size_t)w < n - o ? (size_t)w : n - o;
        memcpy(p + o, l, take);
        o += take;
    }
}

/*
 * The data LV's contents, 64 chunks of 1 MiB:
 *   0       MBR-like header + text      1..3   text        4..5   zero
 *   6..9    random                      10..11 zero        12..29 text and random, every
 *                                                          chunk non-zero
 *   30..39  text    40..47  zero        48..55 random      56..62 zero   63 text tail
 * Chunks 30..55 are what snapshot_copy overwrites while the agent runs (new_region()).
 */
static unsigned char *make_old(int seed)
{
    unsigned char *img = xcalloc(1, LV_SIZE);
    xs_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)seed;
    img[510] = 0x55;
    img[511] = 0xaa;
    memcpy(img + 512, "EFI PART", 8);
    fill_text((char *)img + 4096, 64 * 1024, seed);
    fill_text((char *)img + 1 * MIB, 3 * MIB, seed + 1);
    fill_random(img + 6 * MIB, 4 * MIB);
    for (int c = 12; c < 30; c++) {
        if (c % 2)
            fill_random(img + (size_t)c * MIB, MIB);
        else
            fill_text((char *)img + (size_t)c * MIB, MIB, seed + c);
    }
    fill_text((char *)img + 30 * MIB, 10 * MIB, seed + 30);
    fill_random(img + 48 * MIB, 8 * MIB);
    fill_text((char *)img + 63 * MIB + 100, MIB - 100, seed + 63);
    return img;
}

/* What snapshot_copy writes over chunks 30..55 while the agent runs. */
#define NEW_FIRST 30
#define NEW_CHUNKS 26
static void new_region(unsigned char *p, int seed)
{
    xs_state = 0x1234567ULL ^ (uint64_t)seed;
    fill_text((char *)p, 10 * MIB, seed + 1000);
    fill_random(p + 10 * MIB, 16 * MIB);
}

static void write_dev(const char *dev, const void *buf, size_t len, off_t off)
{
    int fd = dev_fd = open(dev, O_WRONLY);
    if (fd < 0)
        fail_msg("open %s: %s", dev, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
        if (w <= 0)
            fail_msg("write %s: %s", dev, strerror(errno));
        done += (size_t)w;
    }
    assert_int_equal(fsync(fd), 0); /* down to device-mapper: copy-on-write happens now */
    dev_fd = -1;
    close(fd);
}

static unsigned char *read_dev(const char *dev, size_t len)
{
    int fd = dev_fd = open(dev, O_RDONLY);
    if (fd < 0)
        fail_msg("open %s: %s", dev, strerror(errno));
    unsigned char *b = xmalloc(len);
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, b + got, len - got, (off_t)got);
        if (r <= 0)
            fail_msg("read %s: %s", dev, strerror(errno));
        got += (size_t)r;
    }
    dev_fd = -1;
    close(fd);
    return b;
}

/* ---------------------------------------------------------------- processes */

struct av {
    char *v[64];
    int n;
};

static void av_add(struct av *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_add(struct av *a, const char *fmt, ...)
{
    assert_true(a->n < 62);
    va_list ap;
    va_start(ap, fmt);
    char buf[4096];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    a->v[a->n++] = xstrdup(buf);
    a->v[a->n] = NULL;
}

static void av_free(struct av *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

/*
 * Run argv (no shell) with stdout+stderr into out (cut, NUL-terminated; may be NULL).
 * Only fork, exec and wait: also used by the cleanup from a signal handler. The exit
 * status, 127 when it could not start, -1 when killed.
 */
static int run_out(char *const argv[], char *out, size_t size)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0)
            dup2(dn, STDIN_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    for (;;) {
        char buf[4096];
        ssize_t r = read(p[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (out && size > 1) {
            size_t take = (size_t)r < size - 1 - got ? (size_t)r : size - 1 - got;
            memcpy(out + got, buf, take);
            got += take;
        }
    }
    if (out && size)
        out[got] = '\0';
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A command that must succeed (test setup). */
static void must(char *const argv[])
{
    char out[4096];
    int rc = run_out(argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("'%s %s' exited %d: %s", argv[0], argv[1] ? argv[1] : "", rc, out);
}

/* Start argv with stdout and stderr appended to log; extra_env "NAME=value" or NULL. */
static pid_t spawn(char *const argv[], const char *log, const char *extra_env)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (extra_env)
            putenv((char *)extra_env);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Start the agent (a: its arguments after the binary); the log is emptied first. */
static pid_t agent_start(struct av *a, const char *log, const char *extra_env)
{
    struct av full = {0};
    av_add(&full, "%s", XM_AGENT_BIN);
    for (int i = 0; i < a->n; i++)
        av_add(&full, "%s", a->v[i]);
    unlink(log);
    pid_t pid = spawn(full.v, log, extra_env);
    agent = pid;
    av_free(&full);
    return pid;
}

/* Wait for the agent's exit code (fails on a timeout or a death by signal). */
static int agent_wait(pid_t pid, const char *log, int timeout_ms)
{
    int st = wait_process(pid, timeout_ms);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        agent = 0;
        fail_msg("xm-agent did not finish (log %s)", log);
    }
    agent = 0;
    if (!WIFEXITED(st))
        fail_msg("xm-agent died by signal %d (log %s)", WTERMSIG(st), log);
    return WEXITSTATUS(st);
}

/* ---------------------------------------------------------------- the sink */

struct sink {
    pid_t pid;
    int port;
    char url[64];
    char *dir, *log;
    struct http_client *http;
};

static pid_t sink_pid; /* for the cleanup */

static void sink_start(struct sink *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->dir = path_in("%s-store", name);
    s->log = path_in("%s-sink.log", name);
    mkdir(s->dir, 0755);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int lf = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fds[1], STDOUT_FILENO);
        if (lf >= 0)
            dup2(lf, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp("python3", "python3", XM_SINK_SCRIPT, "--listen", "0", "--dir", s->dir,
               (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[256];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(line) - 1 && (n = read(fds[0], line + got, sizeof(line) - 1 - got)) > 0) {
        got += (size_t)n;
        if (memchr(line, '\n', got))
            break;
    }
    line[got] = '\0';
    close(fds[0]);
    json_t *j = json_loads(line, 0, NULL);
    if (!j)
        fail_msg("sink.py printed no port (log %s)", s->log);
    s->port = (int)json_integer_value(json_object_get(j, "port"));
    json_decref(j);
    assert_true(s->port > 0);
    s->pid = sink_pid = pid;
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    struct http_client_opts ho = {.insecure_loopback = 1};
    s->http = http_client_new(&ho);
}

static void sink_stop(struct sink *s)
{
    if (s->pid > 0)
        stop_process(s->pid, SIGTERM);
    s->pid = sink_pid = 0;
    http_client_free(s->http);
    free(s->dir);
    free(s->log);
}

static long sink_ctl(struct sink *s, const char *method, const char *path, const char *body,
                     json_t **out)
{
    char url[128];
    snprintf(url, sizeof(url), "%s%s", s->url, path);
    struct http_request req = {
        .method = method, .url = url, .body = body, .body_len = body ? strlen(body) : 0};
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    long status = http_send(s->http, &req, &resp, &err) == 0 ? resp.status : -1;
    if (out)
        *out = resp.body ? json_loads(resp.body, 0, NULL) : NULL;
    http_response_release(&resp);
    return status;
}

static void sink_config(struct sink *s, const char *json)
{
    assert_int_equal(sink_ctl(s, "POST", "/__config", json, NULL), 200);
}

/* The highest chunk index of disk the sink has been sent so far (-1: none). */
static long highest_put(struct sink *s, const char *disk)
{
    json_t *st = NULL;
    assert_int_equal(sink_ctl(s, "GET", "/__stats", NULL, &st), 200);
    long hi = -1;
    const char *k;
    json_t *v;
    size_t pl = strlen(disk);
    json_object_foreach(json_object_get(st, "put_paths"), k, v)
    {
        const char *p = strstr(k, disk);
        if (p && p[pl] == '/' && p[pl + 1] >= '0' && p[pl + 1] <= '9') {
            long i = strtol(p + pl + 1, NULL, 10);
            if (i > hi)
                hi = i;
        }
    }
    json_decref(st);
    return hi;
}

/* ---------------------------------------------------------------- checking a copy */

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int l;
    EVP_Digest(p, n, md, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*
 * Read the manifest of disk back from the sink's directory and rebuild the device from
 * it: every stored chunk one zstd frame of the right size, zero chunks not stored, every
 * hash right, the whole byte for byte img (len bytes). Checks consistency and device.
 */
static void verify_copy(const unsigned char *img, size_t ilen, const char *dir, const char *disk,
                        const char *device)
{
    size_t mlen;
    char *mp = xasprintf("%s/%s/manifest", dir, disk);
    unsigned char *mtext = read_all(mp, &mlen);
    if (!mtext)
        fail_msg("no manifest stored at %s", mp);
    json_error_t je;
    json_t *m = json_loadb((const char *)mtext, mlen, 0, &je);
    if (!m)
        fail_msg("manifest is not JSON: %s", je.text);
    free(mtext);
    assert_string_equal(json_string_value(json_object_get(m, "format")), "xmigrate-manifest");
    assert_string_equal(json_string_value(json_object_get(m, "consistency")), "lvm-snapshot");
    assert_string_equal(json_string_value(json_object_get(m, "device")), device);
    assert_int_equal(json_integer_value(json_object_get(m, "device_size")), ilen);
    assert_int_equal(json_integer_value(json_object_get(m, "chunk_size")), CHUNK);
    size_t n = (ilen + CHUNK - 1) / CHUNK;
    json_t *chunks = json_object_get(m, "chunks");
    assert_int_equal(json_array_size(chunks), n);
    unsigned char *out = xmalloc(CHUNK);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(chunks, i);
        size_t off = i * CHUNK, len = ilen - off < CHUNK ? ilen - off : CHUNK;
        assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
        assert_int_equal(json_integer_value(json_object_get(c, "offset")), off);
        char hex[65];
        sha256_hex(img + off, len, hex);
        if (strcmp(json_string_value(json_object_get(c, "sha256")), hex) != 0)
            fail_msg("chunk %zu: the manifest's sha256 is not the expected contents'", i);
        int is_zero = 1;
        for (size_t k = 0; k < len && is_zero; k++)
            is_zero = img[off + k] == 0;
        assert_int_equal(json_is_true(json_object_get(c, "zero")), is_zero);
        char *op = xasprintf("%s/%s/%zu", dir, disk, i);
        size_t olen;
        unsigned char *obj = read_all(op, &olen);
        free(op);
        if (is_zero) {
            assert_null(obj);
            continue;
        }
        if (!obj)
            fail_msg("chunk %zu not stored", i);
        assert_int_equal(olen, json_integer_value(json_object_get(c, "stored_size")));
        assert_int_equal(ZSTD_findFrameCompressedSize(obj, olen), olen);
        size_t d = ZSTD_decompress(out, CHUNK, obj, olen);
        assert_false(ZSTD_isError(d));
        assert_int_equal(d, len);
        if (memcmp(out, img + off, len) != 0)
            fail_msg("chunk %zu differs from the LV as it was when the snapshot was taken", i);
        free(obj);
    }
    free(out);
    json_decref(m);
    free(mp);
}

/* ---------------------------------------------------------------- LVM */

static char *lv_dev(const char *lv)
{
    return xasprintf("/dev/%s/%s", vg, lv);
}

/* Remove everything this run made. Idempotent; fork/exec/wait/unlink only, so a signal
 * handler may call it. */
static void cleanup(void)
{
    if (dev_fd >= 0) {
        close(dev_fd); /* an open LV cannot be removed */
        dev_fd = -1;
    }
    if (agent > 0) {
        kill(agent, SIGKILL);
        waitpid(agent, NULL, 0);
        agent = 0;
    }
    if (sink_pid > 0) {
        kill(sink_pid, SIGKILL);
        waitpid(sink_pid, NULL, 0);
        sink_pid = 0;
    }
    if (vg_made) {
        char *rm[] = {"vgremove", "-f", "-y", vg, NULL};
        static char out[4096];
        int i = 0;
        for (; i < 5 && run_out(rm, out, sizeof(out)) != 0; i++) {
            char *off[] = {"vgchange", "-an", vg, NULL};
            run_out(off, NULL, 0);
            sleep(1);
        }
        if (i == 5) { /* say so: the machine keeps a VG, loop device and file */
            static const char m[] = "test_agent_lvm: cleanup: vgremove failed: ";
            ssize_t w = write(STDERR_FILENO, m, sizeof(m) - 1);
            w = write(STDERR_FILENO, out, strlen(out));
            (void)w;
        }
        vg_made = 0;
    }
    if (loopdev[0]) {
        char *pvrm[] = {"pvremove", "-ff", "-y", loopdev, NULL};
        run_out(pvrm, NULL, 0);
        char *det[] = {"losetup", "-d", loopdev, NULL};
        run_out(det, NULL, 0);
        loopdev[0] = '\0';
    }
    if (backing[0]) {
        unlink(backing);
        backing[0] = '\0';
    }
    if (vg[0]) {
        /* the metadata backups LVM kept of this VG (default places) */
        char pat[128];
        snprintf(pat, sizeof(pat), "/etc/lvm/backup/%s", vg);
        unlink(pat);
        snprintf(pat, sizeof(pat), "/etc/lvm/archive/%s_*.vg", vg);
        glob_t g;
        if (glob(pat, 0, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++)
                unlink(g.gl_pathv[i]);
            globfree(&g);
        }
    }
}

static void on_signal(int sig)
{
    cleanup();
    if (!getenv("XM_KEEP_TMP")) {
        char *argv[] = {"rm", "-rf", tmp, NULL};
        run_out(argv, NULL, 0);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Why this machine cannot run the tests, or "" when it can. */
static void check_machine(void)
{
    char out[2048];
    if (geteuid() != 0) {
        snprintf(why_not, sizeof(why_not),
                 "integration.agent_lvm must run as root (it makes a loop device and a volume "
                 "group), as CI does: it fails instead of skipping so that an untested "
                 "--lvm-snapshot never looks green");
        return;
    }
    char *ver[] = {"lvm", "version", NULL};
    if (run_out(ver, out, sizeof(out)) == 127) {
        snprintf(why_not, sizeof(why_not),
                 "the LVM tools are not installed (lvm2: scripts/install-deps.sh installs it)");
        return;
    }
    char *los[] = {"losetup", "--version", NULL};
    if (run_out(los, out, sizeof(out)) != 0) {
        snprintf(why_not, sizeof(why_not), "losetup is missing (util-linux / mount)");
        return;
    }
    char *dm[] = {"dmsetup", "version", NULL};
    if (run_out(dm, out, sizeof(out)) != 0) {
        char *mp[] = {"modprobe", "dm-snapshot", NULL};
        run_out(mp, NULL, 0);
        if (run_out(dm, out, sizeof(out)) != 0) {
            out[strcspn(out, "\n")] = '\0';
            snprintf(why_not, sizeof(why_not),
                     "this kernel has no device-mapper, so LVM cannot activate a volume "
                     "(dmsetup version: %.300s): run integration.agent_lvm on a kernel with "
                     "CONFIG_BLK_DEV_DM and CONFIG_DM_SNAPSHOT",
                     out);
            return;
        }
    }
}

/* The VG: a 8 GiB sparse file (only metadata and the tests' data take space), a loop
 * device, one PV, extents of 4 MiB. */
static void make_vg(void)
{
    unsigned int r = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, &r, sizeof(r)), (ssize_t)sizeof(r));
    close(fd);
    snprintf(vg, sizeof(vg), "xmtest%08x", r);
    snprintf(backing, sizeof(backing), "%s/pv.img", tmp);
    fd = open(backing, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8LL * 1024 * MIB), 0);
    close(fd);
    char out[sizeof(loopdev)];
    char *los[] = {"losetup", "-f", "--show", backing, NULL};
    if (run_out(los, out, sizeof(out)) != 0)
        fail_msg("losetup: %s", out);
    out[strcspn(out, "\n")] = '\0';
    memcpy(loopdev, out, sizeof(loopdev));
    char *pv[] = {"pvcreate", "-y", loopdev, NULL};
    must(pv);
    vg_made = 1; /* from here on the cleanup tries vgremove (harmless if absent) */
    char *vgc[] = {"vgcreate", "-s", "4M", vg, loopdev, NULL};
    must(vgc);
}

static void need_machine(void)
{
    if (why_not[0])
        fail_msg("%s", why_not);
    /* an agent or sink a failed test left running (holding its snapshot open) */
    if (agent > 0) {
        kill(agent, SIGKILL);
        waitpid(agent, NULL, 0);
        agent = 0;
    }
    if (sink_pid > 0) {
        kill(sink_pid, SIGKILL);
        waitpid(sink_pid, NULL, 0);
        sink_pid = 0;
    }
    if (!vg_made)
        make_vg();
}

/* Every LV of the VG, removed (a test starts from an empty VG). */
static void lvs_clear(void)
{
    char *rm[] = {"lvremove", "-f", "-y", vg, NULL};
    must(rm);
}

static void lv_create(const char *name, const char *size_opt, const char *size)
{
    char *argv[] = {"lvcreate",   "-y", "-W",         "n", (char *)size_opt,
                    (char *)size, "-n", (char *)name, vg,  NULL};
    must(argv);
}

/* The data LV with the old contents (old_img, from seed). */
static void data_lv(int seed)
{
    char size[32];
    snprintf(size, sizeof(size), "%dM", LV_MIB);
    lv_create("data", "-L", size);
    free(old_img);
    old_img = make_old(seed);
    char *dev = lv_dev("data");
    write_dev(dev, old_img, LV_SIZE, 0);
    free(dev);
}

/* The VG's LVs, one "name|origin|size|snap_percent|attr" line each (sorted by name). */
static void lvs_list(char *out, size_t size)
{
    char *argv[] = {"lvs",
                    "--noheadings",
                    "--nosuffix",
                    "--units",
                    "b",
                    "--separator",
                    "|",
                    "-O",
                    "lv_name",
                    "-o",
                    "lv_name,origin,lv_size,snap_percent,lv_attr",
                    vg,
                    NULL};
    if (run_out(argv, out, size) != 0)
        fail_msg("lvs %s: %s", vg, out);
}

/* The line of LV name in an lvs_list(), or NULL. */
static const char *lv_line(const char *list, const char *name, char *line, size_t size)
{
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, "\n");
        size_t nl = strlen(name);
        if (n > nl && strncmp(p, name, nl) == 0 && p[nl] == '|') {
            snprintf(line, size, "%.*s", (int)n, p);
            return line;
        }
        p += n;
        if (*p)
            p++;
    }
    return NULL;
}

static int lv_exists(const char *name)
{
    char list[4096], line[256];
    lvs_list(list, sizeof(list));
    return lv_line(list, name, line, sizeof(line)) != NULL;
}

static unsigned long long free_extents(void)
{
    char out[256];
    char *argv[] = {"vgs", "--noheadings", "-o", "vg_free_count", vg, NULL};
    if (run_out(argv, out, sizeof(out)) != 0)
        fail_msg("vgs: %s", out);
    return strtoull(out, NULL, 10);
}

/* The common arguments of a --lvm-snapshot run of device into sink s as disk. */
static void agent_args(struct av *a, const struct sink *s, const char *device, const char *disk)
{
    av_add(a, "--device");
    av_add(a, "%s", device);
    if (s) {
        av_add(a, "--url-template");
        av_add(a, "%s/sink/{disk}/{index}", s->url);
        av_add(a, "--manifest-url");
        av_add(a, "%s/sink/%s/manifest", s->url, disk);
    } else {
        av_add(a, "--url-template");
        av_add(a, "http://127.0.0.1:9/sink/{disk}/{index}");
        av_add(a, "--manifest-url");
        av_add(a, "http://127.0.0.1:9/sink/%s/manifest", disk);
    }
    av_add(a, "--disk");
    av_add(a, "%s", disk);
    av_add(a, "--chunk-mib");
    av_add(a, "1");
    av_add(a, "--state-dir");
    av_add(a, "%s/%s-state", tmp, disk);
    av_add(a, "--retry-base-ms");
    av_add(a, "20");
    av_add(a, "--retry-max-ms");
    av_add(a, "200");
    av_add(a, "--progress-s");
    av_add(a, "1");
    av_add(a, "--lvm-snapshot");
}

static int logged_snapshot(void *arg)
{
    return file_has(arg, "msg=\"lvm snapshot created\"");
}

static int manifest_exists(const char *dir, const char *disk)
{
    char *p = xasprintf("%s/%s/manifest", dir, disk);
    int yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

/* ---------------------------------------------------------------- tests */

static void test_snapshot_copy(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(1);
    char *dev = lv_dev("data"), *log = path_in("copy-agent.log");
    struct sink s;
    sink_start(&s, "copy");
    /* slow storage: the reader, a few chunks ahead of the uploads, stays far from chunk
     * 30 until the origin has been written */
    sink_config(&s, "{\"put_delay_ms\": 400}");
    struct av a = {0};
    agent_args(&a, &s, dev, "lvdata");
    av_add(&a, "--parallel");
    av_add(&a, "1");
    av_add(&a, "--compressors");
    av_add(&a, "1");
    pid_t pid = agent_start(&a, log, NULL);
    av_free(&a);
    if (!wait_until(logged_snapshot, log, 60000))
        fail_msg("no \"lvm snapshot created\" in %s", log);
    char snapdev[128];
    snprintf(snapdev, sizeof(snapdev), "snapshot=/dev/%s/data_xmsnap", vg);
    assert_true(file_has(log, snapdev));

    /* the origin changes now: chunks 30..55 (26 MiB) */
    unsigned char *fresh = xmalloc((size_t)NEW_CHUNKS * MIB);
    new_region(fresh, 7);
    write_dev(dev, fresh, (size_t)NEW_CHUNKS * MIB, (off_t)NEW_FIRST * MIB);
    /* ... before the agent read any of them: nothing past chunk 19 was sent yet, and
     * chunks 20..29 are all data, more than the reader may hold (compressors + parallel
     * + 4 buffers) */
    long hi = highest_put(&s, "lvdata");
    if (hi >= 20)
        fail_msg("the agent was already at chunk %ld when the origin was written: too fast "
                 "for this test",
                 hi);

    /* lvs while the agent runs: the snapshot of data, 17 extents (64 MiB + metadata), and
     * the write above went into its copy-on-write area */
    char list[4096], line[256];
    lvs_list(list, sizeof(list));
    if (!lv_line(list, "data_xmsnap", line, sizeof(line)))
        fail_msg("no data_xmsnap among the LVs while the agent runs:\n%s", list);
    char name[64], origin[64], attr[32];
    unsigned long long size;
    double pct;
    if (sscanf(line, "%63[^|]|%63[^|]|%llu|%lf|%31s", name, origin, &size, &pct, attr) != 5)
        fail_msg("lvs line not understood: %s", line);
    assert_string_equal(origin, "data");
    assert_true(attr[0] == 's');
    assert_int_equal(size, 17 * EXTENT);
    /* 26 MiB of 68 MiB, plus the exception metadata */
    if (pct < 35.0 || pct > 45.0)
        fail_msg("snapshot usage %.2f%%, expected about 38%% after writing 26 MiB", pct);

    sink_config(&s, "{\"put_delay_ms\": 0}");
    assert_int_equal(agent_wait(pid, log, 120000), 0);

    /* the copy is the LV as it was when the snapshot was taken ... */
    verify_copy(old_img, LV_SIZE, s.dir, "lvdata", dev);
    /* ... while the LV itself now has the new bytes */
    unsigned char *now = read_dev(dev, LV_SIZE);
    assert_memory_equal(now + (size_t)NEW_FIRST * MIB, fresh, (size_t)NEW_CHUNKS * MIB);
    assert_memory_not_equal(now + (size_t)NEW_FIRST * MIB, old_img + (size_t)NEW_FIRST * MIB,
                            (size_t)NEW_CHUNKS * MIB);
    assert_memory_equal(now, old_img, (size_t)NEW_FIRST * MIB);
    free(now);
    /* the snapshot is gone; the log says it was made, how full it got, removed */
    assert_false(lv_exists("data_xmsnap"));
    assert_true(file_has(log, "msg=\"lvm snapshot\""));
    assert_int_equal(log_value(log, "extents"), 17);
    assert_int_equal(log_value(log, "wanted_extents"), 17);
    assert_true(file_has(log, "msg=\"lvm snapshot usage\""));
    assert_true(file_has(log, "msg=\"lvm snapshot removed\""));
    assert_true(file_has(log, "consistency=lvm-snapshot"));
    sink_stop(&s);
    free(fresh);
    free(dev);
    free(log);
}

static void test_sigterm(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(2);
    char *dev = lv_dev("data"), *log = path_in("term-agent.log");
    struct sink s;
    sink_start(&s, "term");
    sink_config(&s, "{\"put_delay_ms\": 500}");

    /* mid-copy */
    struct av a = {0};
    agent_args(&a, &s, dev, "lvterm");
    av_add(&a, "--parallel");
    av_add(&a, "1");
    pid_t pid = agent_start(&a, log, NULL);
    if (!wait_until(logged_snapshot, log, 60000))
        fail_msg("no \"lvm snapshot created\" in %s", log);
    assert_true(lv_exists("data_xmsnap"));
    kill(pid, SIGTERM);
    assert_int_equal(agent_wait(pid, log, 30000), 128 + SIGTERM);
    assert_false(lv_exists("data_xmsnap"));
    assert_false(manifest_exists(s.dir, "lvterm"));
    assert_true(file_has(log, "msg=\"lvm snapshot removed\""));

    /* while lvcreate runs, before the copy starts: a wrapper holds the agent 2 s after
     * the real lvcreate; the agent must not copy, but remove the snapshot and exit 143 */
    char *bin = path_in("slowlvm");
    mkdir(bin, 0755);
    char lvcreate[512];
    char *which[] = {"sh", "-c", "command -v lvcreate", NULL};
    assert_int_equal(run_out(which, lvcreate, sizeof(lvcreate)), 0);
    lvcreate[strcspn(lvcreate, "\n")] = '\0';
    char *wrapper = xasprintf("%s/lvcreate", bin);
    char *script = xasprintf("#!/bin/sh\n'%s' \"$@\"\nrc=$?\ntouch '%s/created'\nsleep 2\n"
                             "exit $rc\n",
                             lvcreate, bin);
    write_file(wrapper, script, 0755);
    char *marker = xasprintf("%s/created", bin);
    char *path = xasprintf("PATH=%s:%s", bin, getenv("PATH"));
    sink_config(&s, "{\"put_delay_ms\": 0}");
    char *log2 = path_in("term-agent2.log");
    av_free(&a);
    agent_args(&a, &s, dev, "lvterm2");
    pid = agent_start(&a, log2, path);
    av_free(&a);
    struct stat sb;
    long long t0 = mono_ms();
    while (stat(marker, &sb) != 0 && mono_ms() - t0 < 60000)
        usleep(20000);
    assert_int_equal(stat(marker, &sb), 0);
    kill(pid, SIGTERM);
    assert_int_equal(agent_wait(pid, log2, 60000), 128 + SIGTERM);
    assert_false(lv_exists("data_xmsnap"));
    assert_false(manifest_exists(s.dir, "lvterm2"));
    assert_int_equal(highest_put(&s, "lvterm2"), -1); /* not one chunk sent */
    assert_true(file_has(log2, "interrupted by signal 15"));
    assert_false(file_has(log2, "msg=\"copy complete\""));
    sink_stop(&s);
    free(marker);
    free(path);
    free(script);
    free(wrapper);
    free(bin);
    free(dev);
    free(log);
    free(log2);
}

static void test_failure(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(3);
    /* a 6 GiB LV, all zero but its first chunk: its snapshot gets 20% */
    lv_create("big", "-L", "6G");
    char *big = lv_dev("big");
    unsigned char first[4096];
    memset(first, 0x5a, sizeof(first));
    write_dev(big, first, sizeof(first), 0);
    char *log = path_in("fail-agent.log");
    struct av a = {0};
    agent_args(&a, NULL, big, "lvbig"); /* storage unreachable (port 9) */
    av_add(&a, "--max-attempts");
    av_add(&a, "1");
    pid_t pid = agent_start(&a, log, NULL);
    av_free(&a);
    assert_int_equal(agent_wait(pid, log, 120000), 6);
    /* ceil(6 GiB * 20% / 4 MiB) = ceil(307.2) */
    assert_int_equal(log_value(log, "extents"), 308);
    assert_int_equal(log_value(log, "cow_bytes"), 308 * EXTENT);
    assert_true(file_has(log, "msg=\"lvm snapshot removed\""));
    assert_false(lv_exists("big_xmsnap"));

    /* the 64 MiB LV: at least 1 GiB wanted, but never more than can be used; named by
     * its /dev/dm-N node, which lvs alone does not take for an LV */
    char *dev = lv_dev("data");
    struct stat sb;
    assert_int_equal(stat(dev, &sb), 0);
    char dm[64];
    snprintf(dm, sizeof(dm), "/dev/dm-%u", minor(sb.st_rdev));
    agent_args(&a, NULL, dm, "lvdata");
    av_add(&a, "--max-attempts");
    av_add(&a, "1");
    pid = agent_start(&a, log, NULL);
    av_free(&a);
    assert_int_equal(agent_wait(pid, log, 120000), 6);
    assert_int_equal(log_value(log, "extents"), 17);
    char origin[128];
    snprintf(origin, sizeof(origin), "snapshot=%s/data_xmsnap origin=%s/data", vg, vg);
    assert_true(file_has(log, origin));
    assert_true(file_has(log, "msg=\"lvm snapshot removed\""));
    assert_false(lv_exists("data_xmsnap"));
    free(dev);
    free(big);
    free(log);
}

static void test_small_cow(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(4);
    /* leave 3 free extents (12 MiB) */
    char fill[32];
    snprintf(fill, sizeof(fill), "%llu", free_extents() - 3);
    lv_create("fill", "-l", fill);
    assert_int_equal(free_extents(), 3);
    char *dev = lv_dev("data"), *log = path_in("small-agent.log");
    struct sink s;
    sink_start(&s, "small");

    /* nothing written during the copy: 12 MiB are plenty */
    struct av a = {0};
    agent_args(&a, &s, dev, "lvsmall");
    pid_t pid = agent_start(&a, log, NULL);
    assert_int_equal(agent_wait(pid, log, 120000), 0);
    assert_int_equal(log_value(log, "extents"), 3);
    assert_true(file_has(log, "lvm snapshot smaller than wanted"));
    verify_copy(old_img, LV_SIZE, s.dir, "lvsmall", dev);
    assert_false(lv_exists("data_xmsnap"));
    assert_int_equal(free_extents(), 3);

    /* 26 MiB written during the copy: the snapshot overflows, the copy fails */
    av_free(&a);
    agent_args(&a, &s, dev, "lvsmall2");
    sink_config(&s, "{\"put_delay_ms\": 400}");
    char *log2 = path_in("small-agent2.log");
    pid = agent_start(&a, log2, NULL);
    av_free(&a);
    if (!wait_until(logged_snapshot, log2, 60000))
        fail_msg("no \"lvm snapshot created\" in %s", log2);
    unsigned char *fresh = xmalloc((size_t)NEW_CHUNKS * MIB);
    new_region(fresh, 8);
    write_dev(dev, fresh, (size_t)NEW_CHUNKS * MIB, (off_t)NEW_FIRST * MIB);
    sink_config(&s, "{\"put_delay_ms\": 0}");
    assert_int_equal(agent_wait(pid, log2, 120000), 3);
    assert_true(file_has(log2, "lvm snapshot overflowed"));
    assert_true(file_has(log2, "msg=\"lvm snapshot removed\""));
    assert_false(manifest_exists(s.dir, "lvsmall2"));
    assert_false(lv_exists("data_xmsnap"));
    assert_int_equal(free_extents(), 3);
    sink_stop(&s);
    free(fresh);
    free(dev);
    free(log);
    free(log2);
}

static void test_no_free(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(5);
    lv_create("fill", "-l", "100%FREE");
    assert_int_equal(free_extents(), 0);
    char before[4096], after[4096];
    lvs_list(before, sizeof(before));
    char *dev = lv_dev("data"), *log = path_in("nofree-agent.log");
    struct av a = {0};
    agent_args(&a, NULL, dev, "lvnofree");
    pid_t pid = agent_start(&a, log, NULL);
    av_free(&a);
    assert_int_equal(agent_wait(pid, log, 60000), 7);
    char msg[256];
    snprintf(msg, sizeof(msg),
             "volume group '%s' has no free extents for a snapshot of 'data' (extend the "
             "volume group, or copy without --lvm-snapshot)",
             vg);
    assert_true(file_has(log, msg));
    lvs_list(after, sizeof(after));
    assert_string_equal(before, after); /* nothing created, nothing changed */
    assert_false(file_has(log, "lvcreate"));
    free(dev);
    free(log);
}

static void test_leftover(void **state)
{
    (void)state;
    need_machine();
    lvs_clear();
    data_lv(6);
    char *dev = lv_dev("data"), *log = path_in("left-agent.log");
    struct sink s;
    sink_start(&s, "left");

    /* a snapshot a killed agent left behind: removed, then the copy runs */
    char origin[64];
    snprintf(origin, sizeof(origin), "%s/data", vg);
    char *snap[] = {"lvcreate", "-s", "-l", "2", "-n", "data_xmsnap", origin, NULL};
    must(snap);
    struct av a = {0};
    agent_args(&a, &s, dev, "lvleft");
    pid_t pid = agent_start(&a, log, NULL);
    assert_int_equal(agent_wait(pid, log, 120000), 0);
    assert_true(file_has(log, "removing an lvm snapshot left by an earlier run"));
    verify_copy(old_img, LV_SIZE, s.dir, "lvleft", dev);
    assert_false(lv_exists("data_xmsnap"));

    /* an LV of that name that is not a snapshot of data: refused, left alone */
    lv_create("data_xmsnap", "-L", "4M");
    pid = agent_start(&a, log, NULL);
    assert_int_equal(agent_wait(pid, log, 60000), 7);
    char msg[256];
    snprintf(msg, sizeof(msg), "'%s/data_xmsnap' exists and is not a snapshot of 'data'", vg);
    assert_true(file_has(log, msg));
    assert_true(lv_exists("data_xmsnap"));
    char *rm[] = {"lvremove", "-f", "-y", NULL, NULL};
    char full[96];
    snprintf(full, sizeof(full), "%s/data_xmsnap", vg);
    rm[3] = full;
    must(rm);

    /* lvcreate refused by LVM (the VG may hold one LV, data): LVM's own stderr is in
     * the error */
    char *max1[] = {"vgchange", "-l", "1", vg, NULL};
    must(max1);
    pid = agent_start(&a, log, NULL);
    av_free(&a);
    int code = agent_wait(pid, log, 60000);
    char *max0[] = {"vgchange", "-l", "0", vg, NULL};
    must(max0);
    assert_int_equal(code, 7);
    assert_true(file_has(log, "cannot create the snapshot: lvcreate exited"));
    assert_true(file_has(log, "Maximum number of logical volumes (1) reached"));
    assert_false(lv_exists("data_xmsnap"));
    sink_stop(&s);
    free(dev);
    free(log);
}

/* ---------------------------------------------------------------- main */

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/xm-agent-lvm-test-%d", (int)getpid());
    mkdir(tmp, 0700);
    setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 1);
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    check_machine();
    if (!why_not[0] && access("/run/udev/control", F_OK) != 0) {
        /* No udev (a container, a bare VM): LVM must make its /dev nodes itself, as on
         * any such host. A config of its own, for the tests and the agent they start;
         * no dmeventd monitoring either (a daemon started from here would outlive the
         * tests). */
        char *dir = path_in("lvm");
        mkdir(dir, 0700);
        char *conf = path_in("lvm/lvm.conf");
        write_file(conf,
                   "activation {\n    udev_sync = 0\n    udev_rules = 0\n"
                   "    monitoring = 0\n}\n",
                   0600);
        setenv("LVM_SYSTEM_DIR", dir, 1);
        free(conf);
        free(dir);
    }
    if (why_not[0])
        fprintf(stderr, "integration.agent_lvm cannot run here: %s\n", why_not);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cleanup();
    free(old_img);
    old_img = NULL;
    if (!getenv("XM_KEEP_TMP")) {
        char *argv[] = {"rm", "-rf", tmp, NULL};
        run_out(argv, NULL, 0);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_copy), cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_failure),       cmocka_unit_test(test_small_cow),
        cmocka_unit_test(test_no_free),       cmocka_unit_test(test_leftover),
    };
    if (getenv("XM_TEST_FILTER"))
        cmocka_set_test_filter(getenv("XM_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
