/*
 * xm-agent, the source-side copier, run as the clone playbook runs it: a process against
 * storage. The device is a file (a sparse synthetic image: partition-table-like header,
 * log text, random data, large zero regions, a size that is no multiple of the chunk).
 *
 * Storage is tests/fakes/sink.py (stores PUT bodies, and stands in for xm-api's agent
 * endpoints: URL batches and progress) or moto_server through presigned S3 URLs. Every
 * copy is checked the way convert will use it: the manifest read back, each stored chunk
 * decompressed and compared with the image, zero chunks not stored, every sha256 right.
 *
 *   template       --url-template: reassembly, manifest, one PUT per data chunk
 *   api            --api: URL batches (capped, refreshed near expiry), bearer token,
 *                  progress reports
 *   moto           presigned S3 PUT URLs (moto without signature checks) via the API fake
 *   kill_resume    SIGKILL mid-copy, run again: only chunks not in the journal are sent
 *   delta          3 chunks changed, --previous-manifest (URL): exactly those 3 sent
 *   faults         resets and 503s injected by tests/fakes/faultproxy.py: completes;
 *                  503 for ever: exit 6, no manifest
 *   refused        403 -> one fresh URL, then exit 4, no manifest; API 401 -> exit 4;
 *                  507 -> exit 5; missing device -> exit 3; bad token file -> exit 2
 *   limit          --limit-mbps measured at the sink (within 10%)
 *   tls            https with --ca (verified), and refused without it
 *   dns            names through the agent's own resolver (a resolv.conf naming the
 *                  sink's DNS responder) and its hosts-file lookup (root only)
 *   old_kernel     in an empty chroot (no libraries, no /etc, no /dev) under a seccomp
 *                  filter that answers ENOSYS to every syscall newer than Linux 3.10
 *                  (static build, root only)
 *   freeze         --freeze on an ext4 on a loop device: "frozen" in the manifest and
 *                  writable after; thawed by the watchdog (--freeze-max-s) and by the
 *                  guardian after SIGKILL (root only)
 *   lvm_refused    --lvm-snapshot with no free extents (fake lvs): exit 7, clear message
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "aws/aws.h"
#include "aws/s3.h"
#include "harness.h"
#include "http.h"
#include "xmalloc.h"

#ifndef XM_AGENT_BIN
#define XM_AGENT_BIN "build/agent/xm-agent"
#endif
#ifndef XM_SINK_SCRIPT
#define XM_SINK_SCRIPT "tests/fakes/sink.py"
#endif
#ifndef XM_FAULTPROXY_SCRIPT
#define XM_FAULTPROXY_SCRIPT "tests/fakes/faultproxy.py"
#endif
#ifndef XM_AGENT_STATIC
#define XM_AGENT_STATIC 0
#endif

#define MIB (1024 * 1024)
#define CHUNK MIB
#define TOKEN "agent-test-token-0123456789"

static char tmp[256]; /* this run's scratch directory */

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

static size_t fill_text(char *p, size_t n, int seed)
{
    size_t o = 0;
    for (int line = 0; o < n; line++) {
        char l[160];
        int w = snprintf(l, sizeof(l),
                         "2026-11-25T22:%02d:%02d web%d sshd[%d]: Accepted publickey for "
                         "deploy%d from 10.0.%d.%d port %d ssh2\n",
                         (line / 60) % 60, line % 60, seed, 1000 + line % 977, line % 13,
                         line % 250, (line * 7) % 250, 40000 + line % 20000);
        size_t take = (size_t)w < n - o ? (size_t)w : n - o;
        memcpy(p + o, l, take);
        o += take;
    }
    return o;
}

/*
 * The synthetic disk: 24 MiB + 12345 bytes, chunks of 1 MiB (25, the last partial):
 *   0       MBR (0x55AA, one partition entry) + "EFI PART" header + boot text
 *   1..3    log text            4..5  zero          6..9  random
 *   10..17  zero (a hole)       18    half random   19..22 zero
 *   23..24  text up to the end (24 is the partial chunk)
 * Data chunks: 0 1 2 3 6 7 8 9 18 23 24 (11).
 */
static const int data_chunks[] = {0, 1, 2, 3, 6, 7, 8, 9, 18, 23, 24};
#define IMAGE_SIZE (24ULL * MIB + 12345)

static void make_image(const char *path, int seed)
{
    size_t size = IMAGE_SIZE;
    unsigned char *img = xcalloc(1, size);
    xs_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)seed;
    img[446] = 0x80;     /* bootable */
    img[446 + 4] = 0x83; /* Linux */
    img[446 + 8] = 0x00; /* LBA 2048 */
    img[446 + 9] = 0x08;
    img[446 + 12] = 0x00; /* sectors */
    img[446 + 13] = 0xc0;
    img[510] = 0x55;
    img[511] = 0xaa;
    memcpy(img + 512, "EFI PART", 8);
    fill_text((char *)img + 4096, 64 * 1024, seed);
    fill_text((char *)img + 1 * MIB, 3 * MIB, seed + 1);
    fill_random(img + 6 * MIB, 4 * MIB);
    fill_random(img + 18 * MIB, MIB / 2);
    fill_text((char *)img + 23 * MIB + 100, size - (23 * MIB + 100), seed + 2);
    /* written sparsely: the holes stay holes */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    for (size_t off = 0; off < size; off += CHUNK) {
        size_t n = size - off < CHUNK ? size - off : CHUNK;
        int zero = 1;
        for (size_t i = 0; i < n && zero; i++)
            zero = img[off + i] == 0;
        if (!zero)
            assert_int_equal(pwrite(fd, img + off, n, (off_t)off), (ssize_t)n);
    }
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
    free(img);
}

/* An image of random chunks (incompressible) and a text tail: for timing tests. */
static void make_random_image(const char *path, size_t mib, int seed)
{
    size_t size = mib * MIB + 54321;
    unsigned char *img = xmalloc(size);
    xs_state = 0xabcdef12345ULL ^ (uint64_t)seed;
    fill_random(img, mib * MIB);
    fill_text((char *)img + mib * MIB, 54321, seed);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, img, size), (ssize_t)size);
    close(fd);
    free(img);
}

/* Change one byte in chunk index of the image file. */
static void poke(const char *path, uint64_t index, unsigned char v)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &v, 1, (off_t)(index * CHUNK + 777)), 1);
    close(fd);
}

/* ---------------------------------------------------------------- processes */

struct av {
    char *v[96];
    int n;
};

static void av_add(struct av *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_add(struct av *a, const char *fmt, ...)
{
    assert_true(a->n < 94);
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

/* Run the agent with a's arguments (after the binary); its exit code. */
static int run_agent(struct av *a, const char *log)
{
    struct av full = {0};
    av_add(&full, "%s", XM_AGENT_BIN);
    for (int i = 0; i < a->n; i++)
        av_add(&full, "%s", a->v[i]);
    unlink(log);
    pid_t pid = spawn(full.v, log, NULL);
    av_free(&full);
    int st = wait_process(pid, 240000);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("xm-agent did not finish (log %s)", log);
    }
    if (!WIFEXITED(st))
        fail_msg("xm-agent died by signal %d (log %s)", WTERMSIG(st), log);
    return WEXITSTATUS(st);
}

/* ---------------------------------------------------------------- the sink */

struct sink {
    pid_t pid;
    int port;
    char url[64]; /* http(s)://127.0.0.1:PORT */
    char *dir;
    char *log;
    struct http_client *http;
};

struct sink_opts {
    const char *token;
    const char *urls_file;
    const char *tls_cert, *tls_key;
    const char *dns_addr;
    int expires_s;
};

/* Every helper server started, so the group teardown stops those a failed assertion
 * left running. */
static pid_t servers[64];
static size_t n_servers;

/* Stop a helper server and forget it. */
static void server_stop(pid_t pid)
{
    for (size_t i = 0; i < n_servers; i++)
        if (servers[i] == pid)
            servers[i] = servers[--n_servers];
    stop_process(pid, SIGTERM);
}

static pid_t start_json_server(char *const argv[], const char *log, int *port)
{
    struct helper_proc h;
    helper_proc_start(&h, argv, log);
    *port = h.port;
    if (n_servers < XM_ARRAY_LEN(servers))
        servers[n_servers++] = h.pid;
    return h.pid;
}

static void sink_start(struct sink *s, const char *name, const struct sink_opts *o)
{
    memset(s, 0, sizeof(*s));
    s->dir = path_in("%s-store", name);
    s->log = path_in("%s-sink.log", name);
    mkdir(s->dir, 0755);
    struct av a = {0};
    av_add(&a, "python3");
    av_add(&a, "%s", XM_SINK_SCRIPT);
    av_add(&a, "--listen");
    av_add(&a, "0");
    av_add(&a, "--dir");
    av_add(&a, "%s", s->dir);
    if (o && o->token) {
        av_add(&a, "--token");
        av_add(&a, "%s", o->token);
    }
    if (o && o->urls_file) {
        av_add(&a, "--urls-file");
        av_add(&a, "%s", o->urls_file);
    }
    if (o && o->tls_cert) {
        av_add(&a, "--tls-cert");
        av_add(&a, "%s", o->tls_cert);
        av_add(&a, "--tls-key");
        av_add(&a, "%s", o->tls_key);
    }
    if (o && o->dns_addr) {
        av_add(&a, "--dns-addr");
        av_add(&a, "%s", o->dns_addr);
    }
    if (o && o->expires_s) {
        av_add(&a, "--expires-s");
        av_add(&a, "%d", o->expires_s);
    }
    s->pid = start_json_server(a.v, s->log, &s->port);
    av_free(&a);
    snprintf(s->url, sizeof(s->url), "%s://127.0.0.1:%d", o && o->tls_cert ? "https" : "http",
             s->port);
    struct http_client_opts ho = {.insecure_loopback = 1};
    s->http = http_client_new(&ho);
}

static void sink_stop(struct sink *s)
{
    if (s->pid > 0)
        server_stop(s->pid);
    s->pid = 0;
    http_client_free(s->http);
    s->http = NULL;
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

static json_t *sink_stats(struct sink *s)
{
    json_t *j = NULL;
    assert_int_equal(sink_ctl(s, "GET", "/__stats", NULL, &j), 200);
    assert_non_null(j);
    return j;
}

static void sink_config(struct sink *s, const char *json)
{
    assert_int_equal(sink_ctl(s, "POST", "/__config", json, NULL), 200);
}

static void sink_zero(struct sink *s)
{
    assert_int_equal(sink_ctl(s, "DELETE", "/__stats", NULL, NULL), 200);
}

/* How many PUTs of "disk/<chunk index>" (not the manifest) the sink stored. */
static long long chunk_puts(json_t *stats)
{
    long long n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(stats, "put_paths"), k, v)
    {
        if (!strstr(k, "manifest"))
            n += json_integer_value(v);
    }
    return n;
}

static int sink_puts_at_least(void *arg)
{
    struct sink *s = ((void **)arg)[0];
    long long want = *(long long *)((void **)arg)[1];
    json_t *st = NULL;
    if (sink_ctl(s, "GET", "/__stats", NULL, &st) != 200 || !st)
        return 0;
    long long n = chunk_puts(st);
    json_decref(st);
    return n >= want;
}

/* ---------------------------------------------------------------- checking a copy */

/* Where the stored objects are read back from: the sink's directory or an S3 bucket. */
struct store {
    const char *dir; /* sink: <dir>/<disk>/<index>, <dir>/<disk>/manifest */
    const char *disk;
    struct aws *s3; /* or S3: <bucket>/<prefix><index>, <prefix>manifest */
    const char *bucket, *prefix;
};

static unsigned char *fetch(const struct store *st, const char *name, size_t *len)
{
    if (st->dir) {
        char *p = xasprintf("%s/%s/%s", st->dir, st->disk, name);
        unsigned char *b = read_all(p, len);
        free(p);
        return b;
    }
    char *key = xasprintf("%s%s", st->prefix, name);
    char *body = NULL;
    struct err err = {0};
    int rc = s3_get(st->s3, st->bucket, key, 0, 0, 0, &body, len, &err);
    free(key);
    return rc == 0 ? (unsigned char *)body : NULL;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int l;
    EVP_Digest(p, n, md, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*
 * Read the manifest back and rebuild the disk from it: every stored chunk decompressed
 * (one zstd frame, its stored size right), every zero chunk zero, every hash right, the
 * result byte for byte the image. Returns the manifest (json_decref it).
 */
static json_t *verify_copy(const char *image, const struct store *st, const char *consistency)
{
    size_t ilen, mlen;
    unsigned char *img = read_all(image, &ilen);
    assert_non_null(img);
    unsigned char *mtext = fetch(st, "manifest", &mlen);
    if (!mtext)
        fail_msg("no manifest stored");
    json_error_t je;
    json_t *m = json_loadb((const char *)mtext, mlen, 0, &je);
    if (!m)
        fail_msg("manifest is not JSON: %s", je.text);
    free(mtext);
    assert_string_equal(json_string_value(json_object_get(m, "format")), "xmigrate-manifest");
    assert_non_null(json_string_value(json_object_get(m, "agent_version")));
    assert_non_null(json_string_value(json_object_get(m, "device")));
    assert_non_null(json_string_value(json_object_get(m, "created")));
    assert_string_equal(json_string_value(json_object_get(m, "compression")), "zstd");
    assert_string_equal(json_string_value(json_object_get(m, "consistency")), consistency);
    assert_int_equal(json_integer_value(json_object_get(m, "device_size")), ilen);
    assert_int_equal(json_integer_value(json_object_get(m, "chunk_size")), CHUNK);
    size_t n = (ilen + CHUNK - 1) / CHUNK;
    json_t *chunks = json_object_get(m, "chunks");
    assert_int_equal(json_array_size(chunks), n);
    assert_int_equal(json_integer_value(json_object_get(m, "chunks_total")), n);
    unsigned char *out = xmalloc(CHUNK);
    uint64_t zero = 0, stored_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(chunks, i);
        size_t off = i * CHUNK, len = ilen - off < CHUNK ? ilen - off : CHUNK;
        assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
        assert_int_equal(json_integer_value(json_object_get(c, "offset")), off);
        assert_int_equal(json_integer_value(json_object_get(c, "length")), len);
        char hex[65];
        sha256_hex(img + off, len, hex);
        assert_string_equal(json_string_value(json_object_get(c, "sha256")), hex);
        int is_zero = 1;
        for (size_t k = 0; k < len && is_zero; k++)
            is_zero = img[off + k] == 0;
        assert_int_equal(json_is_true(json_object_get(c, "zero")), is_zero);
        long long stored = json_integer_value(json_object_get(c, "stored_size"));
        stored_bytes += (uint64_t)stored;
        char name[32];
        snprintf(name, sizeof(name), "%zu", i);
        if (is_zero) {
            zero++;
            assert_int_equal(stored, 0);
            continue;
        }
        size_t olen;
        unsigned char *obj = fetch(st, name, &olen);
        if (!obj)
            fail_msg("chunk %zu not stored", i);
        assert_int_equal(olen, stored);
        assert_int_equal(ZSTD_getFrameContentSize(obj, olen), len);
        assert_int_equal(ZSTD_findFrameCompressedSize(obj, olen), olen); /* one frame */
        size_t d = ZSTD_decompress(out, CHUNK, obj, olen);
        assert_false(ZSTD_isError(d));
        assert_int_equal(d, len);
        if (memcmp(out, img + off, len) != 0)
            fail_msg("chunk %zu differs from the image", i);
        free(obj);
    }
    assert_int_equal(json_integer_value(json_object_get(m, "chunks_zero")), zero);
    assert_int_equal(json_integer_value(json_object_get(m, "chunks_stored")), n - zero);
    assert_int_equal(json_integer_value(json_object_get(m, "bytes_stored")), stored_bytes);
    free(out);
    free(img);
    return m;
}

/* The common arguments of a template-mode run against sink s. */
static void template_args(struct av *a, const struct sink *s, const char *image, const char *disk,
                          const char *state)
{
    av_add(a, "--device");
    av_add(a, "%s", image);
    av_add(a, "--url-template");
    av_add(a, "%s/sink/{disk}/{index}", s->url);
    av_add(a, "--manifest-url");
    av_add(a, "%s/sink/%s/manifest", s->url, disk);
    av_add(a, "--disk");
    av_add(a, "%s", disk);
    av_add(a, "--chunk-mib");
    av_add(a, "1");
    av_add(a, "--state-dir");
    av_add(a, "%s", state);
    av_add(a, "--retry-base-ms");
    av_add(a, "20");
    av_add(a, "--retry-max-ms");
    av_add(a, "200");
}

static void api_args(struct av *a, const struct sink *s, const char *image, const char *disk,
                     const char *state, const char *token_file)
{
    av_add(a, "--device");
    av_add(a, "%s", image);
    av_add(a, "--api");
    av_add(a, "%s", s->url);
    av_add(a, "--migration");
    av_add(a, "m1");
    av_add(a, "--host");
    av_add(a, "web1");
    av_add(a, "--disk");
    av_add(a, "%s", disk);
    av_add(a, "--token-file");
    av_add(a, "%s", token_file);
    av_add(a, "--chunk-mib");
    av_add(a, "1");
    av_add(a, "--state-dir");
    av_add(a, "%s", state);
    av_add(a, "--retry-base-ms");
    av_add(a, "20");
    av_add(a, "--retry-max-ms");
    av_add(a, "200");
}

static char *token_file(void)
{
    char *p = path_in("token");
    write_file(p, TOKEN "\n", 0600);
    return p;
}

/* ---------------------------------------------------------------- tests */

static void test_template(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, "template", NULL);
    char *img = path_in("template.img"), *st = path_in("template-state"),
         *log = path_in("template-agent.log");
    make_image(img, 1);
    struct av a = {0};
    template_args(&a, &s, img, "sda", st);
    av_add(&a, "--parallel");
    av_add(&a, "3");
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sda"};
    json_t *m = verify_copy(img, &store, "crash-consistent");
    json_decref(m);
    /* one PUT per data chunk and one for the manifest; zero chunks never sent */
    json_t *stats = sink_stats(&s);
    assert_int_equal(chunk_puts(stats), XM_ARRAY_LEN(data_chunks));
    assert_int_equal(json_integer_value(json_object_get(stats, "puts")),
                     XM_ARRAY_LEN(data_chunks) + 1);
    json_decref(stats);
    for (int i = 0; i < 25; i++) {
        int is_data = 0;
        for (size_t k = 0; k < XM_ARRAY_LEN(data_chunks); k++)
            is_data |= data_chunks[k] == i;
        char *obj = xasprintf("%s/sda/%d", s.dir, i);
        assert_int_equal(access(obj, F_OK) == 0, is_data);
        free(obj);
    }
    assert_int_equal(log_value(log, "zero"), 25 - XM_ARRAY_LEN(data_chunks));
    /* the journal is gone: the manifest took over */
    glob_t g;
    char *pat = xasprintf("%s/journal-*", st);
    assert_int_equal(glob(pat, 0, NULL, &g), GLOB_NOMATCH);
    free(pat);
    av_free(&a);
    sink_stop(&s);
    free(img);
    free(st);
    free(log);
}

static void test_api(void **state)
{
    (void)state;
    struct sink s;
    struct sink_opts so = {.token = TOKEN};
    sink_start(&s, "api", &so);
    char *img = path_in("api.img"), *st = path_in("api-state"), *log = path_in("api-agent.log");
    char *tok = token_file();
    make_image(img, 2);
    struct av a = {0};
    api_args(&a, &s, img, "sdb", st, tok);
    av_add(&a, "--url-batch");
    av_add(&a, "4");
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sdb"};
    json_decref(verify_copy(img, &store, "crash-consistent"));

    json_t *stats = sink_stats(&s);
    /* URLs came in batches of at most 4, every stored chunk's among them */
    json_t *calls = json_object_get(stats, "url_calls");
    assert_true(json_array_size(calls) >= 3);
    int asked[32] = {0};
    size_t i;
    json_t *call;
    json_array_foreach(calls, i, call)
    {
        assert_true(json_array_size(call) <= 4);
        size_t k;
        json_t *idx;
        json_array_foreach(call, k, idx)
        {
            assert_true(json_integer_value(idx) < 25);
            asked[json_integer_value(idx)] = 1;
        }
    }
    for (size_t k = 0; k < XM_ARRAY_LEN(data_chunks); k++)
        assert_true(asked[data_chunks[k]]);
    /* progress: a first report, a last one with phase "done" and the totals */
    json_t *prog = json_object_get(stats, "progress");
    assert_true(json_array_size(prog) >= 2);
    json_t *last = json_array_get(prog, json_array_size(prog) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "phase")), "done");
    assert_int_equal(json_integer_value(json_object_get(last, "chunks_done")), 25);
    assert_int_equal(json_integer_value(json_object_get(last, "chunks_total")), 25);
    assert_int_equal(json_integer_value(json_object_get(last, "bytes_read")), IMAGE_SIZE);
    assert_int_equal(json_integer_value(json_object_get(last, "device_size")), IMAGE_SIZE);
    assert_int_equal(json_integer_value(json_object_get(last, "chunks_skipped")), 0);
    assert_string_equal(json_string_value(json_object_get(last, "consistency")),
                        "crash-consistent");
    assert_true(json_integer_value(json_object_get(last, "bytes_sent")) > 0);
    json_t *first = json_array_get(prog, 0);
    assert_string_equal(json_string_value(json_object_get(first, "phase")), "copy");
    json_decref(stats);
    /* the token never shows in the agent's log */
    assert_false(file_has(log, TOKEN));
    assert_false(file_has(log, "X-Sig"));

    av_free(&a);
    sink_stop(&s);
    free(img);
    free(st);
    free(log);
    free(tok);
}

static void test_moto(void **state)
{
    (void)state;
    struct moto moto;
    char *mlog = path_in("moto.log");
    moto_start(&moto, 0, mlog);
    struct aws_config cfg = {.access_key = moto.access_key,
                             .secret_key = moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = moto.endpoint,
                             .max_attempts = 3};
    struct err err = {0};
    struct aws *aws = aws_new(&cfg, &err);
    assert_non_null(aws);
    const char *bucket = "xm-agent-test";
    if (s3_bucket_ensure(aws, bucket, 1, &err) < 0)
        fail_msg("bucket: %s", err.msg);
    /* What the clone worker would hand the API: a presigned PUT per chunk and manifest. */
    const char *prefix = "xmigrate/m1/web1/sdc/";
    json_t *urls = json_object();
    for (int i = 0; i < 25; i++) {
        char key[128];
        snprintf(key, sizeof(key), "%s%d", prefix, i);
        char *u = s3_presign(aws, "PUT", bucket, key, 3600, &err);
        assert_non_null(u);
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        json_object_set_new(urls, k, json_string(u));
        free(u);
    }
    char mkey[128];
    snprintf(mkey, sizeof(mkey), "%smanifest", prefix);
    char *mu = s3_presign(aws, "PUT", bucket, mkey, 3600, &err);
    json_t *doc = json_pack("{s:o, s:s}", "urls", urls, "manifest_url", mu);
    free(mu);
    char *uf = path_in("moto-urls.json");
    assert_int_equal(json_dump_file(doc, uf, 0), 0);
    json_decref(doc);

    struct sink s;
    struct sink_opts so = {.token = TOKEN, .urls_file = uf};
    sink_start(&s, "moto", &so);
    char *img = path_in("moto.img"), *st = path_in("moto-state"), *log = path_in("moto-agent.log");
    char *tok = token_file();
    make_image(img, 3);
    struct av a = {0};
    api_args(&a, &s, img, "sdc", st, tok);
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.s3 = aws, .bucket = bucket, .prefix = prefix};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    /* zero chunks are not in the bucket */
    struct s3_object_info info;
    char zkey[128];
    snprintf(zkey, sizeof(zkey), "%s%d", prefix, 12);
    assert_int_equal(s3_head(aws, bucket, zkey, &info, &err), 0);
    assert_int_equal(info.exists, 0);
    assert_false(file_has(log, "X-Amz-Signature"));

    av_free(&a);
    sink_stop(&s);
    aws_free(aws);
    moto_stop(&moto);
    free(mlog);
    free(uf);
    free(img);
    free(st);
    free(log);
    free(tok);
}

/* The indexes recorded in the journal file(s) of a state dir. */
static int journal_indexes(const char *state_dir, int *have, int n)
{
    glob_t g;
    char *pat = xasprintf("%s/journal-*", state_dir);
    int count = 0;
    if (glob(pat, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            size_t len;
            char *t = (char *)read_all(g.gl_pathv[i], &len);
            for (char *line = strchr(t, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
                long idx = strtol(line + 1, NULL, 10);
                if (idx >= 0 && idx < n && !have[idx]) {
                    have[idx] = 1;
                    count++;
                }
            }
            free(t);
        }
        globfree(&g);
    }
    free(pat);
    return count;
}

static void test_kill_resume(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, "resume", NULL);
    char *img = path_in("resume.img"), *st = path_in("resume-state"),
         *log = path_in("resume-agent.log");
    make_random_image(img, 24, 4); /* 25 data chunks */
    const int n = 25;
    struct av a = {0};
    av_add(&a, "%s", XM_AGENT_BIN);
    template_args(&a, &s, img, "sdd", st);
    av_add(&a, "--limit-mbps");
    av_add(&a, "48"); /* 6 MB/s: about 4 s for the whole image */
    pid_t pid = spawn(a.v, log, NULL);
    long long want = 8;
    void *args[] = {&s, &want};
    assert_true(wait_until(sink_puts_at_least, args, 60000));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    json_t *stats = sink_stats(&s);
    long long first = chunk_puts(stats);
    json_decref(stats);
    assert_true(first >= 8 && first < n);
    int journaled[32] = {0};
    int j = journal_indexes(st, journaled, n);
    assert_true(j >= 1 && j <= first); /* only what the sink stored is journaled */
    char *mpath = xasprintf("%s/sdd/manifest", s.dir);
    assert_int_equal(access(mpath, F_OK), -1); /* no manifest: the copy is not complete */

    /* again, unlimited: only the chunks not journaled go out */
    sink_zero(&s);
    av_free(&a);
    template_args(&a, &s, img, "sdd", st);
    char *log2 = path_in("resume-agent2.log");
    assert_int_equal(run_agent(&a, log2), 0);
    stats = sink_stats(&s);
    json_t *paths = json_object_get(stats, "put_paths");
    long long second = chunk_puts(stats);
    assert_int_equal(second, n - j);
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof(k), "sdd/%d", i);
        assert_int_equal(json_object_get(paths, k) != NULL, !journaled[i]);
    }
    json_decref(stats);
    assert_int_equal(log_value(log2, "skipped"), j);
    struct store store = {.dir = s.dir, .disk = "sdd"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    av_free(&a);
    sink_stop(&s);
    free(mpath);
    free(img);
    free(st);
    free(log);
    free(log2);
}

static void test_delta(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, "delta", NULL);
    char *img = path_in("delta.img"), *st = path_in("delta-state"),
         *log = path_in("delta-agent.log");
    make_image(img, 5);
    struct av a = {0};
    template_args(&a, &s, img, "sde", st);
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sde"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    /* keep the first manifest where the second run can GET it */
    char *m1 = xasprintf("%s/sde/manifest", s.dir), *m1copy = xasprintf("%s/sde/manifest1", s.dir);
    assert_int_equal(rename(m1, m1copy), 0);

    /* three chunks change: text, random, and a zero chunk that gets data */
    poke(img, 2, 'X');
    poke(img, 7, 0x5a);
    poke(img, 12, 0x01);
    sink_zero(&s);
    av_free(&a);
    template_args(&a, &s, img, "sde", st);
    av_add(&a, "--previous-manifest");
    av_add(&a, "%s/sink/sde/manifest1", s.url);
    char *log2 = path_in("delta-agent2.log");
    assert_int_equal(run_agent(&a, log2), 0);
    json_t *stats = sink_stats(&s);
    json_t *paths = json_object_get(stats, "put_paths");
    assert_int_equal(chunk_puts(stats), 3);
    assert_non_null(json_object_get(paths, "sde/2"));
    assert_non_null(json_object_get(paths, "sde/7"));
    assert_non_null(json_object_get(paths, "sde/12"));
    assert_non_null(json_object_get(paths, "sde/manifest"));
    json_decref(stats);
    /* skipped: every data chunk of the first run but the two changed ones */
    assert_int_equal(log_value(log2, "skipped"), XM_ARRAY_LEN(data_chunks) - 2);
    json_decref(verify_copy(img, &store, "crash-consistent"));

    /* the same from a manifest file, after one more change */
    poke(img, 23, 'Y');
    sink_zero(&s);
    av_free(&a);
    template_args(&a, &s, img, "sde", st);
    av_add(&a, "--previous-manifest");
    av_add(&a, "%s", m1); /* the second run's manifest, in the sink's directory */
    char *log3 = path_in("delta-agent3.log");
    assert_int_equal(run_agent(&a, log3), 0);
    stats = sink_stats(&s);
    assert_int_equal(chunk_puts(stats), 1);
    json_decref(stats);
    json_decref(verify_copy(img, &store, "crash-consistent"));

    av_free(&a);
    sink_stop(&s);
    free(m1);
    free(m1copy);
    free(img);
    free(st);
    free(log);
    free(log2);
    free(log3);
}

static void test_faults(void **state)
{
    (void)state;
    struct sink s;
    sink_start(&s, "faults", NULL);
    char *plog = path_in("faults-proxy.log");
    struct av pa = {0};
    av_add(&pa, "python3");
    av_add(&pa, "%s", XM_FAULTPROXY_SCRIPT);
    av_add(&pa, "--listen");
    av_add(&pa, "0");
    av_add(&pa, "--upstream");
    av_add(&pa, "%s", s.url);
    av_add(&pa, "--rules");
    av_add(&pa, "[{\"match\": \"PUT /sink/sdf/1\", \"reset\": true, \"times\": 2},"
                " {\"match\": \"PUT /sink/sdf/\", \"status\": 503, \"skip\": 2, \"times\": 4,"
                "  \"headers\": {\"Retry-After\": \"0\"}},"
                " {\"match\": \"PUT /sink/sdf/manifest\", \"reset\": true, \"times\": 1},"
                " {\"match\": \"PUT /sink/sdf/8\", \"status\": 500, \"times\": 1}]");
    int pport;
    pid_t proxy = start_json_server(pa.v, plog, &pport);
    av_free(&pa);
    char *img = path_in("faults.img"), *st = path_in("faults-state"),
         *log = path_in("faults-agent.log");
    make_image(img, 6);
    struct sink via = s; /* the same sink, addressed through the proxy */
    snprintf(via.url, sizeof(via.url), "http://127.0.0.1:%d", pport);
    struct av a = {0};
    template_args(&a, &via, img, "sdf", st);
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sdf"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    assert_true(file_has(log, "put failed: retrying"));
    assert_true(file_has(plog, "(injected)"));
    size_t len;
    char *pl = (char *)read_all(plog, &len);
    int resets = 0, s503 = 0;
    for (char *p = pl; (p = strstr(p, "reset (injected)")); p++)
        resets++;
    for (char *p = pl; (p = strstr(p, "503 (injected)")); p++)
        s503++;
    free(pl);
    assert_int_equal(resets, 3);
    assert_int_equal(s503, 4);

    /* 503 for ever: the agent gives up at its attempt limit with exit 6, no manifest */
    av_free(&a);
    char *st2 = path_in("faults-state2");
    struct av ra = {0};
    av_add(&ra, "python3");
    av_add(&ra, "%s", XM_FAULTPROXY_SCRIPT);
    av_add(&ra, "--listen");
    av_add(&ra, "0");
    av_add(&ra, "--upstream");
    av_add(&ra, "%s", s.url);
    av_add(&ra, "--rules");
    av_add(&ra, "[{\"match\": \"PUT /sink/sdg/\", \"status\": 503}]");
    int pport2;
    pid_t proxy2 = start_json_server(ra.v, plog, &pport2);
    av_free(&ra);
    snprintf(via.url, sizeof(via.url), "http://127.0.0.1:%d", pport2);
    template_args(&a, &via, img, "sdg", st2);
    av_add(&a, "--max-attempts");
    av_add(&a, "3");
    char *log2 = path_in("faults-agent2.log");
    assert_int_equal(run_agent(&a, log2), 6);
    assert_true(file_has(log2, "gave up after 3 attempts: HTTP 503"));
    char *mp = xasprintf("%s/sdg/manifest", s.dir);
    assert_int_equal(access(mp, F_OK), -1);
    free(mp);

    server_stop(proxy);
    server_stop(proxy2);
    av_free(&a);
    sink_stop(&s);
    free(plog);
    free(img);
    free(st);
    free(st2);
    free(log);
    free(log2);
}

static void test_refused(void **state)
{
    (void)state;
    struct sink s;
    struct sink_opts so = {.token = TOKEN};
    sink_start(&s, "refused", &so);
    char *img = path_in("refused.img"), *st = path_in("refused-state"),
         *log = path_in("refused-agent.log");
    char *tok = token_file();
    make_image(img, 7);

    /* a device that does not exist: exit 3, saying so */
    struct av a = {0};
    template_args(&a, &s, "/nonexistent/disk", "sdh", st);
    assert_int_equal(run_agent(&a, log), 3);
    assert_true(file_has(log, "device '/nonexistent/disk' unreadable: No such file or directory"));
    av_free(&a);
    /* a directory is no device either */
    template_args(&a, &s, tmp, "sdh", st);
    assert_int_equal(run_agent(&a, log), 3);
    assert_true(file_has(log, "neither a block device nor a file"));
    av_free(&a);

    /* every PUT answered 403: one fresh URL from the API, then exit 4, no manifest */
    sink_config(&s, "{\"put_status\": 403}");
    api_args(&a, &s, img, "sdh", st, tok);
    av_add(&a, "--parallel");
    av_add(&a, "1");
    assert_int_equal(run_agent(&a, log), 4);
    assert_true(file_has(log, "URL refused (expired or revoked token?): HTTP 403 AccessDenied"));
    char *mp = xasprintf("%s/sdh/manifest", s.dir);
    assert_int_equal(access(mp, F_OK), -1);
    json_t *stats = sink_stats(&s);
    assert_int_equal(json_integer_value(json_object_get(stats, "refused")), 2);
    assert_int_equal(json_integer_value(json_object_get(stats, "puts")), 0);
    json_t *calls = json_object_get(stats, "url_calls");
    assert_true(json_array_size(calls) >= 2);
    /* the refused chunk was asked for again: it leads the second batch, and came in the
     * first */
    long long again = json_integer_value(json_array_get(json_array_get(calls, 1), 0));
    int in_first = 0;
    for (size_t k = 0; k < json_array_size(json_array_get(calls, 0)); k++)
        in_first |= json_integer_value(json_array_get(json_array_get(calls, 0), k)) == again;
    assert_true(in_first);
    char what[64];
    snprintf(what, sizeof(what), "chunk %lld: URL refused", again);
    assert_true(file_has(log, what));
    json_t *prog = json_object_get(stats, "progress");
    json_t *last = json_array_get(prog, json_array_size(prog) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "phase")), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(last, "message")), "URL refused"));
    json_decref(stats);

    /* the API says the token is revoked: exit 4 */
    sink_zero(&s);
    sink_config(&s, "{\"api_status\": 401}");
    assert_int_equal(run_agent(&a, log), 4);
    assert_true(file_has(log, "token revoked"));
    av_free(&a);

    /* the storage is full: exit 5 */
    sink_config(&s, "{\"put_status\": 507}");
    api_args(&a, &s, img, "sdh", st, tok);
    assert_int_equal(run_agent(&a, log), 5);
    assert_true(file_has(log, "storage full: HTTP 507"));
    assert_int_equal(access(mp, F_OK), -1);
    av_free(&a);

    /* a token file others can read: exit 2 */
    sink_config(&s, "{}");
    char *loose = path_in("loose-token");
    write_file(loose, TOKEN, 0644);
    api_args(&a, &s, img, "sdh", st, loose);
    assert_int_equal(run_agent(&a, log), 2);
    assert_true(file_has(log, "readable by others"));
    assert_false(file_has(log, TOKEN));
    av_free(&a);
    /* and a bad option */
    av_add(&a, "--device");
    av_add(&a, "%s", img);
    av_add(&a, "--chunk-mib");
    av_add(&a, "0");
    assert_int_equal(run_agent(&a, log), 2);
    av_free(&a);

    sink_stop(&s);
    free(mp);
    free(loose);
    free(img);
    free(st);
    free(log);
    free(tok);
}

static void test_limit(void **state)
{
    (void)state;
    struct sink s;
    struct sink_opts so = {.token = TOKEN, .expires_s = 62};
    sink_start(&s, "limit", &so);
    char *img = path_in("limit.img"), *st = path_in("limit-state"),
         *log = path_in("limit-agent.log");
    char *tok = token_file();
    make_random_image(img, 32, 8);
    struct av a = {0};
    api_args(&a, &s, img, "sdi", st, tok);
    av_add(&a, "--limit-mbps");
    av_add(&a, "64"); /* 8,000,000 bytes/s */
    av_add(&a, "--progress-s");
    av_add(&a, "1");
    assert_int_equal(run_agent(&a, log), 0);
    json_t *stats = sink_stats(&s);
    double bytes = (double)json_integer_value(json_object_get(stats, "put_bytes"));
    double secs = json_real_value(json_object_get(stats, "last_put_end")) -
                  json_real_value(json_object_get(stats, "first_put_start"));
    double rate = bytes / secs;
    print_message("limit: %.0f bytes in %.2f s = %.0f bytes/s (limit 8000000, %+.1f%%)\n", bytes,
                  secs, rate, (rate / 8e6 - 1) * 100);
    assert_true(rate > 8e6 * 0.9 && rate < 8e6 * 1.1);
    /* reports every second while copying */
    json_t *prog = json_object_get(stats, "progress");
    size_t copying = 0, i;
    json_t *p;
    json_array_foreach(prog, i, p)
    {
        copying += strcmp(json_string_value(json_object_get(p, "phase")), "copy") == 0;
    }
    assert_true(copying >= 3);
    /* URLs that came within 60 s of expiry were asked for again */
    json_t *calls = json_object_get(stats, "url_calls");
    int seen[64] = {0}, again = 0;
    json_t *call;
    json_array_foreach(calls, i, call)
    {
        size_t k;
        json_t *idx;
        json_array_foreach(call, k, idx)
        {
            long long x = json_integer_value(idx);
            if (x >= 0 && x < 64 && seen[x]++)
                again = 1;
        }
    }
    assert_true(again);
    json_decref(stats);
    struct store store = {.dir = s.dir, .disk = "sdi"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    av_free(&a);
    sink_stop(&s);
    free(img);
    free(st);
    free(log);
    free(tok);
}

static int run_cmd(char *const argv[], const char *log)
{
    pid_t pid = spawn(argv, log, NULL);
    int st = wait_process(pid, 60000);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A self-signed certificate for 127.0.0.1 and localhost. */
static void make_cert(const char *cert, const char *key)
{
    char *olog = path_in("openssl.log");
    char *ossl[] = {
        "openssl",  "req",           "-x509",   "-newkey",
        "rsa:2048", "-nodes",        "-keyout", (char *)key,
        "-out",     (char *)cert,    "-days",   "1",
        "-subj",    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        NULL};
    assert_int_equal(run_cmd(ossl, olog), 0);
    free(olog);
}

static void test_tls(void **state)
{
    (void)state;
    char *cert = path_in("tls-cert.pem"), *key = path_in("tls-key.pem");
    make_cert(cert, key);
    struct sink s;
    struct sink_opts so = {.tls_cert = cert, .tls_key = key};
    sink_start(&s, "tls", &so);
    char *img = path_in("tls.img"), *st = path_in("tls-state"), *log = path_in("tls-agent.log");
    make_image(img, 9);
    struct av a = {0};
    template_args(&a, &s, img, "sdj", st);
    av_add(&a, "--ca");
    av_add(&a, "%s", cert);
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sdj"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    json_t *stats = sink_stats(&s);
    assert_int_equal(chunk_puts(stats), XM_ARRAY_LEN(data_chunks));
    json_decref(stats);
    av_free(&a);

    /* without the CA: the certificate is not trusted, no retrying, exit 6 */
    char *st2 = path_in("tls-state2");
    template_args(&a, &s, img, "sdk", st2);
    av_add(&a, "--ca");
    av_add(&a, "/etc/ssl/certs/ca-certificates.crt");
    assert_int_equal(run_agent(&a, log), 6);
    assert_true(file_has(log, "not trusted"));
    av_free(&a);
    sink_stop(&s);
    free(cert);
    free(key);
    free(img);
    free(st);
    free(st2);
    free(log);
}

static void test_dns(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* the DNS responder binds port 53 */
    char addr[32];
    snprintf(addr, sizeof(addr), "127.53.%d.%d", (getpid() >> 8) & 0xff, (getpid() & 0xfe) + 1);
    struct sink s;
    struct sink_opts so = {.dns_addr = addr};
    sink_start(&s, "dns", &so);
    char *resolv = path_in("resolv.conf"), *hosts = path_in("hosts");
    char *rtext =
        xasprintf("# test\nsearch example.invalid\nnameserver %s\noptions timeout:2\n", addr);
    write_file(resolv, rtext, 0644);
    write_file(hosts, "127.0.0.1 storage.example localhost\n", 0644);
    char *img = path_in("dns.img"), *st = path_in("dns-state"), *log = path_in("dns-agent.log");
    make_image(img, 10);

    /* a name only the DNS responder knows */
    struct sink named = s;
    snprintf(named.url, sizeof(named.url), "http://sink.test:%d", s.port);
    struct av a = {0};
    template_args(&a, &named, img, "sdl", st);
    av_add(&a, "--resolv-conf");
    av_add(&a, "%s", resolv);
    av_add(&a, "--hosts-file");
    av_add(&a, "%s", hosts);
    assert_int_equal(run_agent(&a, log), 0);
    struct store store = {.dir = s.dir, .disk = "sdl"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    json_t *stats = sink_stats(&s);
    long long q = json_integer_value(json_object_get(stats, "dns_queries"));
    assert_true(q >= 1 && q <= 8); /* answers are cached for their TTL */
    json_decref(stats);
    av_free(&a);

    /* a name from the hosts file: no query */
    sink_zero(&s);
    snprintf(named.url, sizeof(named.url), "http://storage.example:%d", s.port);
    char *st2 = path_in("dns-state2");
    template_args(&a, &named, img, "sdm", st2);
    av_add(&a, "--resolv-conf");
    av_add(&a, "%s", resolv);
    av_add(&a, "--hosts-file");
    av_add(&a, "%s", hosts);
    assert_int_equal(run_agent(&a, log), 0);
    stats = sink_stats(&s);
    assert_int_equal(json_integer_value(json_object_get(stats, "dns_queries")), 0);
    json_decref(stats);
    av_free(&a);

    /* a name nobody knows: a clear message, exit 6 */
    snprintf(named.url, sizeof(named.url), "http://nowhere.invalid:%d", s.port);
    template_args(&a, &named, img, "sdn", st2);
    av_add(&a, "--resolv-conf");
    av_add(&a, "%s", resolv);
    av_add(&a, "--hosts-file");
    av_add(&a, "%s", hosts);
    assert_int_equal(run_agent(&a, log), 6);
    assert_true(file_has(log, "cannot resolve 'nowhere.invalid': no such host"));
    av_free(&a);

    sink_stop(&s);
    free(rtext);
    free(resolv);
    free(hosts);
    free(img);
    free(st);
    free(st2);
    free(log);
}

/* Copy file src to dst (mode 0755). */
static void copy_file(const char *src, const char *dst)
{
    size_t len;
    unsigned char *b = read_all(src, &len);
    assert_non_null(b);
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
    free(b);
}

/* Linux 3.10's last x86-64 system call is finit_module (313). */
#define SYSCALL_MAX_3_10 313

/*
 * Run the agent chrooted into root (nothing there but what the caller put) under a
 * seccomp filter that answers ENOSYS to every system call Linux 3.10 does not have, as
 * on RHEL/CentOS 7, and with uname(2) reporting a 2.6 kernel (personality UNAME26): code
 * that picks a path by kernel version (OpenSSL's /dev/urandom fallback does) takes the
 * old kernel's. Returns its exit code.
 */
static int run_old_kernel(const char *root, char *const argv[], const char *log)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDERR_FILENO);
        dup2(fd, STDOUT_FILENO);
        if (chroot(root) < 0 || chdir("/") < 0)
            _exit(120);
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, SYSCALL_MAX_3_10, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
        if (personality(PER_LINUX | UNAME26) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
            _exit(121);
        char *envp[] = {NULL};
        execve(argv[0], argv, envp);
        _exit(122);
    }
    int st = wait_process(pid, 120000);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("agent in the old-kernel chroot hung (log %s)", log);
    }
    if (!WIFEXITED(st))
        fail_msg("agent in the old-kernel chroot died by signal %d (log %s)", WTERMSIG(st), log);
    return WEXITSTATUS(st);
}

static void test_old_kernel(void **state)
{
    (void)state;
#if !defined(__x86_64__)
    skip();
#endif
    if (!XM_AGENT_STATIC || geteuid() != 0)
        skip(); /* the sanitizer build is dynamic; chroot needs root */
    struct sink s;
    sink_start(&s, "oldkernel", NULL);
    char *root = path_in("oldroot");
    mkdir(root, 0755);
    char *bin = xasprintf("%s/xm-agent", root), *img = xasprintf("%s/disk.img", root);
    copy_file(XM_AGENT_BIN, bin);
    make_image(img, 11);
    char *log = path_in("oldkernel-agent.log");
    char url[128], murl[128];

    /* plain http, an empty root: no /etc, no /dev, no libraries */
    snprintf(url, sizeof(url), "%s/sink/{disk}/{index}", s.url);
    snprintf(murl, sizeof(murl), "%s/sink/sdo/manifest", s.url);
    char *argv[] = {"/xm-agent", "--device", "/disk.img", "--url-template", url, "--manifest-url",
                    murl,        "--disk",   "sdo",       "--chunk-mib",    "1", "--state-dir",
                    "/state",    NULL};
    int rc = run_old_kernel(root, argv, log);
    if (rc != 0)
        fail_msg("agent in the old-kernel chroot exited %d (log %s)", rc, log);
    struct store store = {.dir = s.dir, .disk = "sdo"};
    json_decref(verify_copy(img, &store, "crash-consistent"));
    sink_stop(&s);

    /* https: OpenSSL seeds from /dev/urandom once /dev/random is readable (no
     * getrandom(2) before 3.17) */
    char *cert = path_in("old-cert.pem"), *key = path_in("old-key.pem");
    make_cert(cert, key);
    char *dev = xasprintf("%s/dev", root), *urandom = xasprintf("%s/dev/urandom", root);
    char *random = xasprintf("%s/dev/random", root);
    char *ca = xasprintf("%s/ca.pem", root);
    mkdir(dev, 0755);
    assert_int_equal(mknod(urandom, S_IFCHR | 0666, makedev(1, 9)), 0);
    assert_int_equal(mknod(random, S_IFCHR | 0666, makedev(1, 8)), 0);
    copy_file(cert, ca);
    struct sink_opts so = {.tls_cert = cert, .tls_key = key};
    sink_start(&s, "oldkernel-tls", &so);
    snprintf(url, sizeof(url), "%s/sink/{disk}/{index}", s.url);
    snprintf(murl, sizeof(murl), "%s/sink/sdu/manifest", s.url);
    char *argv2[] = {"/xm-agent", "--device",       "/disk.img", "--url-template",
                     url,         "--manifest-url", murl,        "--disk",
                     "sdu",       "--chunk-mib",    "1",         "--state-dir",
                     "/state",    "--ca",           "/ca.pem",   NULL};
    rc = run_old_kernel(root, argv2, log);
    if (rc != 0)
        fail_msg("agent (https) in the old-kernel chroot exited %d (log %s)", rc, log);
    struct store store2 = {.dir = s.dir, .disk = "sdu"};
    json_decref(verify_copy(img, &store2, "crash-consistent"));
    sink_stop(&s);
    free(cert);
    free(key);
    free(dev);
    free(urandom);
    free(random);
    free(ca);
    free(root);
    free(bin);
    free(img);
    free(log);
}

/* ---------------------------------------------------------------- freeze (root) */

struct loopfs {
    char *file, *mnt;
    char dev[64];
};

static struct loopfs loop_in_use;

static int can_loop(void)
{
    return geteuid() == 0 && access("/usr/sbin/losetup", X_OK) == 0 &&
           access("/usr/sbin/mkfs.ext4", X_OK) == 0;
}

static void loopfs_make(struct loopfs *l, const char *name)
{
    l->file = path_in("%s.ext4", name);
    l->mnt = path_in("%s-mnt", name);
    mkdir(l->mnt, 0755);
    int fd = open(l->file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 48 * MIB), 0);
    close(fd);
    char *lg = path_in("%s-setup.log", name);
    char *mk[] = {"mkfs.ext4", "-q", "-F", l->file, NULL};
    assert_int_equal(run_cmd(mk, lg), 0);
    /* losetup prints the device on stdout: read it from a pipe */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        char *argv[] = {"losetup", "-f", "--show", l->file, NULL};
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    ssize_t n = read(p[0], l->dev, sizeof(l->dev) - 1);
    close(p[0]);
    waitpid(pid, NULL, 0);
    assert_true(n > 0);
    l->dev[n] = '\0';
    l->dev[strcspn(l->dev, "\n")] = '\0';
    if (mount(l->dev, l->mnt, "ext4", 0, NULL) < 0)
        fail_msg("mount %s: %s", l->dev, strerror(errno));
    /* 12 MiB of random data in a file: chunks to upload */
    char *data = xasprintf("%s/data.bin", l->mnt);
    size_t size = 12 * MIB;
    unsigned char *b = xmalloc(size);
    xs_state = 77;
    fill_random(b, size);
    fd = open(data, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(fd, b, size), (ssize_t)size);
    fsync(fd);
    close(fd);
    free(b);
    free(data);
    free(lg);
}

static void loopfs_free(struct loopfs *l)
{
    char *thaw[] = {"fsfreeze", "-u", l->mnt, NULL};
    char *lg = path_in("loop-teardown.log");
    run_cmd(thaw, lg); /* in case a test failed while frozen */
    umount2(l->mnt, MNT_DETACH);
    char *det[] = {"losetup", "-d", l->dev, NULL};
    run_cmd(det, lg);
    free(lg);
    free(l->file);
    free(l->mnt);
}

/* 1 when a write + fsync to the filesystem finishes within ms (it is not frozen). */
static int writable_within(const char *mnt, int ms)
{
    pid_t pid = fork();
    if (pid == 0) {
        char p[512];
        snprintf(p, sizeof(p), "%s/probe", mnt);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, "x", 1) != 1 || fsync(fd) < 0)
            _exit(1);
        _exit(0);
    }
    int st = wait_process(pid, ms);
    if (st == -1)
        return 0; /* left blocked: the teardown thaws, then it finishes */
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The agent logs msg="frozen" once its FIFREEZE succeeded. */
static int logged_frozen(void *arg)
{
    return file_has(arg, "msg=\"frozen\"");
}

/* Frozen right now? A second FIFREEZE of a frozen filesystem fails with EBUSY. Only
 * asked while the agent holds it (no race with the agent's own freeze). */
static int still_frozen(const char *mnt)
{
    char *lg = path_in("probe.log");
    char *fr[] = {"fsfreeze", "-f", (char *)mnt, NULL};
    int rc = run_cmd(fr, lg);
    if (rc == 0) {
        char *th[] = {"fsfreeze", "-u", (char *)mnt, NULL};
        run_cmd(th, lg);
    }
    free(lg);
    return rc != 0;
}

static void test_freeze(void **state)
{
    (void)state;
    if (!can_loop())
        skip();
    struct loopfs l;
    loopfs_make(&l, "freeze");
    loop_in_use = l; /* the group teardown removes it if an assertion ends the test */
    struct sink s;
    sink_start(&s, "freeze", NULL);
    char *st = path_in("freeze-state"), *log = path_in("freeze-agent.log");
    char *img_copy = path_in("freeze-expected.img");

    /* a whole copy, frozen while read: consistency "frozen", writable afterwards */
    struct av a = {0};
    template_args(&a, &s, l.dev, "sdp", st);
    av_add(&a, "--freeze");
    assert_int_equal(run_agent(&a, log), 0);
    assert_true(file_has(log, "msg=\"frozen\""));
    assert_true(writable_within(l.mnt, 5000));
    /* the copy is the device as frozen: compare with the device now (nothing wrote in
     * between but the probe, which comes after) ... so check the manifest only */
    size_t mlen;
    char *mp = xasprintf("%s/sdp/manifest", s.dir);
    char *mt = (char *)read_all(mp, &mlen);
    assert_non_null(strstr(mt, "\"consistency\":\"frozen\""));
    free(mt);
    av_free(&a);

    /* slow uploads, a 2 s limit: the watchdog thaws, the copy finishes crash-consistent */
    char *st2 = path_in("freeze-state2");
    template_args(&a, &s, l.dev, "sdq", st2);
    av_add(&a, "--freeze");
    av_add(&a, "--freeze-max-s");
    av_add(&a, "2");
    av_add(&a, "--limit-mbps");
    av_add(&a, "16"); /* 2 MB/s: 12 MiB take 6 s */
    av_add(&a, "--parallel");
    av_add(&a, "1");
    av_add(&a, "--compressors");
    av_add(&a, "1");
    long long t0 = mono_ms();
    assert_int_equal(run_agent(&a, log), 0);
    assert_true(mono_ms() - t0 > 3000);
    assert_true(file_has(log, "freeze time limit reached"));
    free(mp);
    mp = xasprintf("%s/sdq/manifest", s.dir);
    mt = (char *)read_all(mp, &mlen);
    assert_non_null(strstr(mt, "\"consistency\":\"crash-consistent\""));
    free(mt);
    av_free(&a);

    /* SIGKILL while frozen: the guardian process thaws at once */
    char *st3 = path_in("freeze-state3");
    av_add(&a, "%s", XM_AGENT_BIN);
    template_args(&a, &s, l.dev, "sdr", st3);
    av_add(&a, "--freeze");
    av_add(&a, "--freeze-max-s");
    av_add(&a, "120");
    av_add(&a, "--limit-mbps");
    av_add(&a, "8");
    av_add(&a, "--parallel");
    av_add(&a, "1");
    av_add(&a, "--compressors");
    av_add(&a, "1");
    char *log3 = path_in("freeze-agent3.log");
    pid_t pid = spawn(a.v, log3, NULL);
    assert_true(wait_until(logged_frozen, log3, 20000));
    assert_true(still_frozen(l.mnt));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_true(writable_within(l.mnt, 5000));
    av_free(&a);

    /* SIGTERM while frozen: thawed by the agent, exit 128+15 */
    char *st4 = path_in("freeze-state4");
    av_add(&a, "%s", XM_AGENT_BIN);
    template_args(&a, &s, l.dev, "sds", st4);
    av_add(&a, "--freeze");
    av_add(&a, "--limit-mbps");
    av_add(&a, "8");
    av_add(&a, "--parallel");
    av_add(&a, "1");
    av_add(&a, "--compressors");
    av_add(&a, "1");
    char *log4 = path_in("freeze-agent4.log");
    pid = spawn(a.v, log4, NULL);
    assert_true(wait_until(logged_frozen, log4, 20000));
    kill(pid, SIGTERM);
    int ws = wait_process(pid, 30000);
    assert_true(ws != -1 && WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 128 + SIGTERM);
    assert_true(writable_within(l.mnt, 5000));
    char *mp4 = xasprintf("%s/sds/manifest", s.dir);
    assert_int_equal(access(mp4, F_OK), -1);
    av_free(&a);

    /* a file is not a device with filesystems: refused, exit 7 */
    template_args(&a, &s, l.file, "sdt", st4);
    av_add(&a, "--freeze");
    assert_int_equal(run_agent(&a, log), 7);
    assert_true(file_has(log, "--freeze needs a block device"));
    av_free(&a);

    sink_stop(&s);
    loop_in_use.file = NULL;
    loopfs_free(&l);
    free(mp);
    free(mp4);
    free(st);
    free(st2);
    free(st3);
    free(st4);
    free(log);
    free(log3);
    free(log4);
    free(img_copy);
}

static void test_lvm_refused(void **state)
{
    (void)state;
    /* fake LVM tools first in PATH: a volume group without free extents */
    char *bin = path_in("fakelvm");
    mkdir(bin, 0755);
    char *lvs = xasprintf("%s/lvs", bin);
    write_file(lvs,
               "#!/bin/sh\n"
               "case \"$*\" in *vg_name*) echo '  vg0|root|1073741824|0|4194304|-wi-ao----' ;;"
               " *) exit 5 ;; esac\n",
               0755);
    char *img = path_in("lvm.img"), *st = path_in("lvm-state"), *log = path_in("lvm-agent.log");
    make_image(img, 12);
    struct av a = {0};
    av_add(&a, "%s", XM_AGENT_BIN);
    av_add(&a, "--device");
    av_add(&a, "%s", img);
    av_add(&a, "--url-template");
    av_add(&a, "http://127.0.0.1:9/sink/{disk}/{index}");
    av_add(&a, "--manifest-url");
    av_add(&a, "http://127.0.0.1:9/sink/m");
    av_add(&a, "--state-dir");
    av_add(&a, "%s", st);
    av_add(&a, "--lvm-snapshot");
    char *path = xasprintf("PATH=%s:%s", bin, getenv("PATH"));
    unlink(log);
    pid_t pid = spawn(a.v, log, path);
    int ws = wait_process(pid, 30000);
    assert_true(ws != -1 && WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 7);
    assert_true(file_has(log, "volume group 'vg0' has no free extents for a snapshot of 'root'"));

    /* not a logical volume at all */
    write_file(lvs, "#!/bin/sh\necho \"  Volume group not found\" >&2\nexit 5\n", 0755);
    pid = spawn(a.v, log, path);
    ws = wait_process(pid, 30000);
    assert_int_equal(WEXITSTATUS(ws), 7);
    assert_true(file_has(log, "is not an LVM logical volume (Volume group not found)"));
    av_free(&a);
    free(path);
    free(lvs);
    free(bin);
    free(img);
    free(st);
    free(log);
}

/* ---------------------------------------------------------------- main */

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/xm-agent-test-%d", (int)getpid());
    mkdir(tmp, 0700);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    /* never waited for, so their pids cannot have been reused */
    while (n_servers)
        server_stop(servers[n_servers - 1]);
    if (loop_in_use.file)
        loopfs_free(&loop_in_use);
    if (!getenv("XM_KEEP_TMP")) {
        char *argv[] = {"rm", "-rf", tmp, NULL};
        pid_t pid = fork();
        if (pid == 0) {
            execvp(argv[0], argv);
            _exit(127);
        }
        waitpid(pid, NULL, 0);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template),    cmocka_unit_test(test_api),
        cmocka_unit_test(test_moto),        cmocka_unit_test(test_kill_resume),
        cmocka_unit_test(test_delta),       cmocka_unit_test(test_faults),
        cmocka_unit_test(test_refused),     cmocka_unit_test(test_limit),
        cmocka_unit_test(test_tls),         cmocka_unit_test(test_dns),
        cmocka_unit_test(test_old_kernel),  cmocka_unit_test(test_freeze),
        cmocka_unit_test(test_lvm_refused),
    };
    if (getenv("XM_TEST_FILTER")) /* e.g. XM_TEST_FILTER=test_limit */
        cmocka_set_test_filter(getenv("XM_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
