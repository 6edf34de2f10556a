/*
 * xm-convert's local mode and the convert/ library against the real readers of each
 * format: qemu-img (info, check, compare) for raw, VHD and VMDK, GNU tar for the GCE
 * tar.gz. Test images are made in a temporary directory: sizes that are not multiples of a
 * MiB, a shard or even a sector; all zeros written out; sparse with holes; only the last
 * byte set; zero, text and random regions. Every format over every image, with shard sizes
 * of 1, 3 and 64 MiB and 1 and 2 threads, must pass the oracles; outputs made with the same
 * --created/--uuid must be byte-identical whatever the shard size and thread count.
 * Shards are also run in separate processes (fork) with odd shard sizes, their results
 * passed on as encoded bytes in files, as the sharded converter will.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "convert.h"
#include "xmalloc.h"

extern char **environ;

#define MIB (1u << 20)
#define CREATED "1764113160"
#define UUID "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"

static char tmpdir[] = "/tmp/xm-convert-test.XXXXXX";

static char *tpath(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

/* ---- running programs (argument vectors, never a shell) ---- */

typedef void (*chunk_fn)(void *ctx, const uint8_t *p, size_t n);

/* Run argv; stdout goes to fn (or /dev/null), stderr to <tmpdir>/cmd.err. Returns the exit
 * status, or 128 + signal. */
static int run(char *const argv[], chunk_fn fn, void *ctx)
{
    posix_spawn_file_actions_t fa;
    int pfd[2] = {-1, -1};
    char *errpath = tpath("cmd.err");
    posix_spawn_file_actions_init(&fa);
    if (fn) {
        assert_int_equal(pipe(pfd), 0);
        posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
        posix_spawn_file_actions_addclose(&fa, pfd[0]);
        posix_spawn_file_actions_addclose(&fa, pfd[1]);
    } else {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    }
    posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(errpath);
    if (rc != 0)
        fail_msg("spawn %s: %s", argv[0], strerror(rc));
    if (fn) {
        close(pfd[1]);
        uint8_t *buf = xmalloc(MIB);
        ssize_t n;
        while ((n = read(pfd[0], buf, MIB)) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            assert_true(n > 0);
            fn(ctx, buf, (size_t)n);
        }
        free(buf);
        close(pfd[0]);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        assert_int_equal(errno, EINTR);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void show_stderr(void)
{
    char *errpath = tpath("cmd.err");
    FILE *f = fopen(errpath, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        print_message("  stderr: %s", line);
    if (f)
        fclose(f);
    free(errpath);
}

static void expect_run(int want, char *const argv[], chunk_fn fn, void *ctx)
{
    int got = run(argv, fn, ctx);
    if (got != want) {
        show_stderr();
        fail_msg("%s %s %s ... exited %d, want %d", argv[0], argv[1] ? argv[1] : "",
                 argv[1] && argv[2] ? argv[2] : "", got, want);
    }
}

struct text {
    char *p;
    size_t len;
};

static void collect(void *ctx, const uint8_t *p, size_t n)
{
    struct text *t = ctx;
    t->p = xrealloc(t->p, t->len + n + 1);
    memcpy(t->p + t->len, p, n);
    t->len += n;
    t->p[t->len] = '\0';
}

/* ---- test images ---- */

struct image {
    const char *name;
    uint64_t size;
    char *path;
    uint8_t *data; /* the whole image, for comparisons */
};

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint8_t next_byte(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

/* Zero, text and random regions in turn. */
static void fill_mixed(uint8_t *d, uint64_t size, uint64_t region)
{
    static const char line[] = "Nov 25 23:11:02 web1 sshd[812]: Accepted publickey for root\n";
    for (uint64_t off = 0, r = 0; off < size; off += region, r++) {
        uint64_t n = size - off < region ? size - off : region;
        for (uint64_t i = 0; i < n; i++) {
            if (r % 3 == 1)
                d[off + i] = (uint8_t)line[(off + i) % (sizeof(line) - 1)];
            else if (r % 3 == 2)
                d[off + i] = next_byte();
        }
    }
}

static struct image images[] = {
    {"odd", 5 * MIB + 12345, NULL, NULL},       /* not even a sector multiple */
    {"mixed", 37 * MIB + 3 * 4096, NULL, NULL}, /* not a MiB or shard multiple */
    {"zero", 8 * MIB, NULL, NULL},              /* zeros written out */
    {"sparse", 24 * MIB + 512, NULL, NULL},     /* holes, a few data blocks */
    {"lastbyte", 3 * MIB + 512, NULL, NULL},    /* a hole, then one byte set at the end */
    {"big", 64 * MIB - 512, NULL, NULL},        /* ~64 MiB of mixed regions */
};

static void write_at(int fd, const uint8_t *p, uint64_t off, uint64_t n)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        assert_true(w > 0);
        p += w;
        off += (uint64_t)w;
        n -= (uint64_t)w;
    }
}

static void make_image(struct image *im)
{
    im->path = tpath(im->name);
    im->data = xcalloc(1, im->size);
    int fd = open(im->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)im->size), 0);
    if (strcmp(im->name, "odd") == 0 || strcmp(im->name, "mixed") == 0) {
        fill_mixed(im->data, im->size, 1536 * 1024);
        write_at(fd, im->data, 0, im->size);
    } else if (strcmp(im->name, "big") == 0) {
        fill_mixed(im->data, im->size, 5 * MIB);
        write_at(fd, im->data, 0, im->size);
    } else if (strcmp(im->name, "zero") == 0) {
        write_at(fd, im->data, 0, im->size);
    } else if (strcmp(im->name, "sparse") == 0) {
        static const uint64_t at[] = {0, 3 * MIB + 4096, 17 * MIB + 512, 24 * MIB};
        for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
            fill_mixed(im->data + at[i], 512, 512); /* zeros for the first: a data block */
            for (int k = 0; k < 512; k++)
                im->data[at[i] + (uint64_t)k] |= (uint8_t)(1 + i);
            write_at(fd, im->data + at[i], at[i], 512);
        }
    } else if (strcmp(im->name, "lastbyte") == 0) {
        im->data[im->size - 1] = 0x01;
        write_at(fd, im->data + im->size - 1, im->size - 1, 1);
    }
    close(fd);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++)
        make_image(&images[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char *argv[] = {"rm", "-rf", tmpdir, NULL};
    run(argv, NULL, NULL);
    for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++) {
        free(images[i].path);
        free(images[i].data);
    }
    return 0;
}

/* ---- oracles ---- */

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint64_t n = file_size(path);
    uint8_t *b = xmalloc(n ? n : 1);
    assert_int_equal(read(fd, b, n), (ssize_t)n);
    close(fd);
    *len = n;
    return b;
}

static json_t *qemu_info(const char *fmt, const char *path)
{
    char *argv[] = {"qemu-img", "info", "-f", (char *)fmt, "--output=json", (char *)path, NULL};
    struct text t = {0};
    expect_run(0, argv, collect, &t);
    json_error_t jerr;
    json_t *j = json_loads(t.p, 0, &jerr);
    if (!j)
        fail_msg("qemu-img info: %s", jerr.text);
    free(t.p);
    return j;
}

static void qemu_compare(const char *fmt, const struct image *im, const char *out)
{
    char *argv[] = {"qemu-img",  "compare", "-f",        "raw", "-F",
                    (char *)fmt, im->path,  (char *)out, NULL};
    expect_run(0, argv, NULL, NULL);
}

static void oracle_raw(const struct image *im, const char *out)
{
    assert_int_equal(file_size(out), im->size);
    qemu_compare("raw", im, out);
    char *argv[] = {"cmp", im->path, (char *)out, NULL};
    expect_run(0, argv, NULL, NULL);
}

static void oracle_vhd(const struct image *im, const char *out)
{
    uint64_t disk = (im->size + MIB - 1) / MIB * MIB;
    assert_int_equal(file_size(out), disk + 512); /* whole MiB plus the footer: Azure's rule */
    json_t *j = qemu_info("vpc", out);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "vpc");
    assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")), disk);
    json_decref(j);
    qemu_compare("vpc", im, out);
}

static void oracle_vmdk(const struct image *im, const char *out)
{
    json_t *j = qemu_info("vmdk", out);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "vmdk");
    assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")),
                     (im->size + 511) / 512 * 512);
    json_t *data = json_object_get(json_object_get(j, "format-specific"), "data");
    assert_string_equal(json_string_value(json_object_get(data, "create-type")), "streamOptimized");
    json_decref(j);
    char *check[] = {"qemu-img", "check", "-f", "vmdk", (char *)out, NULL};
    expect_run(0, check, NULL, NULL);
    qemu_compare("vmdk", im, out);
}

struct stream_cmp {
    const struct image *im;
    uint64_t pos;
    int bad;
    uint64_t bad_at;
};

static void compare_chunk(void *ctx, const uint8_t *p, size_t n)
{
    struct stream_cmp *c = ctx;
    if (c->bad)
        return;
    uint64_t at = c->pos;
    size_t k = at < c->im->size ? (size_t)(c->im->size - at < n ? c->im->size - at : n) : 0;
    if (k && memcmp(p, c->im->data + at, k) != 0)
        c->bad = 1;
    for (size_t i = k; i < n && !c->bad; i++)
        c->bad = p[i] != 0; /* the padding of disk.raw up to the GiB */
    if (c->bad)
        c->bad_at = at;
    c->pos += n;
}

/* GNU tar gives back disk.raw, the only member: the image, then zeros up to a whole GiB.
 * One pass: the data to stdout, the member listing (-v) to an index file. */
static void oracle_gce(const struct image *im, const char *out)
{
    char *list = tpath("tar.list");
    char *index = xasprintf("--index-file=%s", list);
    char *argv[] = {"tar", "-xzvO", index, "-f", (char *)out, NULL};
    struct stream_cmp c = {.im = im};
    expect_run(0, argv, compare_chunk, &c);
    if (c.bad)
        fail_msg("disk.raw differs in the chunk at byte %llu", (unsigned long long)c.bad_at);
    assert_int_equal(c.pos, (im->size + (1ull << 30) - 1) >> 30 << 30);
    size_t len;
    char *names = (char *)read_file(list, &len);
    assert_true(len == 9 && memcmp(names, "disk.raw\n", 9) == 0);
    free(names);
    free(index);
    free(list);
}

static void oracle(enum convert_format f, const struct image *im, const char *out)
{
    switch (f) {
    case CONVERT_RAW:
        oracle_raw(im, out);
        break;
    case CONVERT_VHD:
        oracle_vhd(im, out);
        break;
    case CONVERT_VMDK:
        oracle_vmdk(im, out);
        break;
    case CONVERT_GCE_TAR:
        oracle_gce(im, out);
        break;
    default:
        fail();
    }
}

/* ---- the local mode ---- */

static void convert(const char *to, const char *shard_mib, const char *threads, const char *in,
                    const char *out)
{
    char *argv[] = {XM_CONVERT_BIN,
                    "--from",
                    "raw",
                    "--to",
                    (char *)to,
                    "--shard-mib",
                    (char *)shard_mib,
                    "--threads",
                    (char *)threads,
                    "--created",
                    CREATED,
                    "--uuid",
                    UUID,
                    (char *)in,
                    (char *)out,
                    NULL};
    expect_run(0, argv, NULL, NULL);
}

static void test_local_every_format_image_shard_thread(void **state)
{
    (void)state;
    static const char *shards[] = {"1", "3", "64"};
    static const char *threads[] = {"2", "1"};
    for (int f = 0; f < CONVERT_FORMAT_N; f++) {
        const char *fname = convert_format_str((enum convert_format)f);
        for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++) {
            const struct image *im = &images[i];
            char *first = NULL;
            for (size_t s = 0; s < 3; s++) {
                for (size_t t = 0; t < 2; t++) {
                    char *out = xasprintf("%s/%s.s%s.t%s.%s", tmpdir, im->name, shards[s],
                                          threads[t], fname);
                    convert(fname, shards[s], threads[t], im->path, out);
                    /* GNU tar takes 4 s over the GiB of a GCE output: it reads the first,
                     * and every other must be the same bytes. */
                    if (f != CONVERT_GCE_TAR || !first)
                        oracle((enum convert_format)f, im, out);
                    if (!first) {
                        first = out;
                        continue;
                    }
                    char *argv[] = {"cmp", first, out, NULL};
                    expect_run(0, argv, NULL, NULL);
                    unlink(out);
                    free(out);
                }
            }
            unlink(first);
            free(first);
        }
    }
}

/* The VHD footer's geometry is the one qemu computes for the same size. Without
 * force_size qemu rounds the requested size up to what its CHS geometry (the specification's
 * algorithm) covers and writes that as the size: our footer for that size must carry the
 * same geometry. (With force_size qemu writes the maximum geometry instead, a marker that
 * the size field rules; we follow the specification.) Over 127 GiB both cap the geometry. */
static void test_vhd_geometry_matches_qemu(void **state)
{
    (void)state;
    static const char *sizes[] = {"1048576",    "10485760",     "104857600",    "133169152",
                                  "1073741824", "107374182400", "136365211648", "214748364800"};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *path = tpath("q.vhd");
        char *argv[] = {"qemu-img", "create",         "-q", "-f", "vpc", "-o", "subformat=fixed",
                        path,       (char *)sizes[i], NULL};
        expect_run(0, argv, NULL, NULL);
        int fd = open(path, O_RDONLY);
        uint8_t q[512], ours[512], id[16] = {0};
        assert_int_equal(pread(fd, q, 512, (off_t)(file_size(path) - 512)), 512);
        close(fd);
        unlink(path);
        free(path);
        uint64_t size = 0;
        for (int k = 0; k < 8; k++)
            size = size << 8 | q[48 + k];
        convert_vhd_footer(ours, size, 1764113160, id);
        assert_memory_equal(ours, q, 24);       /* cookie, features, version, data offset */
        if (memcmp(ours + 40, q + 40, 24) != 0) /* sizes, geometry, disk type */
            fail_msg("size %s (%llu): footer fields 40..63 differ from qemu's", sizes[i],
                     (unsigned long long)size);
    }
}

/* ---- shards in separate processes ---- */

struct fd_sink {
    int fd;
    uint64_t base;
};

static int fd_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct fd_sink *s = ctx;
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(s->fd, p, len, (off_t)(s->base + off));
        if (n <= 0)
            return err_set(err, ERR_PERMANENT, "pwrite: %s", strerror(errno));
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static struct convert_plan *plan_for(enum convert_format f, const struct image *im, uint64_t shard)
{
    struct convert_params p = {
        .format = f, .in_size = im->size, .shard_size = shard, .created = 1764113160};
    memcpy(p.id, "0123456789abcdef", 16);
    struct err e = {0};
    struct convert_plan *plan = convert_plan_new(&p, &e);
    if (!plan)
        fail_msg("plan: %s", e.msg);
    return plan;
}

/* Child: convert shard i from the image file alone (pread, zeros as convert_shard_zero),
 * output into piece.<i> (CONCAT) or the image itself (FIXED), result into result.<i>. */
static int child_shard(enum convert_format f, const struct image *im, uint64_t shard, size_t i,
                       const char *image_out)
{
    struct convert_plan *plan = plan_for(f, im, shard);
    int concat = convert_plan_layout(plan) == CONVERT_LAYOUT_CONCAT;
    char *piece = xasprintf("%s/piece.%zu", tmpdir, i);
    struct fd_sink fs = {open(concat ? piece : image_out, O_WRONLY | O_CREAT, 0644), 0};
    struct convert_sink sink = {fd_write, &fs};
    struct convert_shard *sh = convert_shard_new(plan, i, &sink);
    uint64_t off, len;
    convert_plan_shard(plan, i, &off, &len);
    int in = open(im->path, O_RDONLY);
    uint8_t buf[100000];
    struct err e = {0};
    for (uint64_t pos = 0; pos < len;) {
        size_t n = len - pos < sizeof(buf) ? (size_t)(len - pos) : sizeof(buf);
        if (pread(in, buf, n, (off_t)(off + pos)) != (ssize_t)n)
            return 3;
        int zero = 1;
        for (size_t k = 0; k < n && zero; k++)
            zero = buf[k] == 0;
        if ((zero ? convert_shard_zero(sh, n, &e) : convert_shard_write(sh, buf, n, &e)) < 0)
            return 4;
        pos += n;
    }
    struct convert_result *r = convert_shard_finish(sh, &e);
    if (!r)
        return 5;
    size_t rlen;
    uint8_t *rb = convert_result_encode(r, &rlen);
    char *rpath = xasprintf("%s/result.%zu", tmpdir, i);
    int rfd = open(rpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (rfd < 0 || write(rfd, rb, rlen) != (ssize_t)rlen)
        return 6;
    close(rfd);
    close(in);
    close(fs.fd);
    return 0;
}

static void sharded_in_processes(enum convert_format f, const struct image *im, uint64_t shard)
{
    char *out = xasprintf("%s/processes.%s", tmpdir, convert_format_str(f));
    struct convert_plan *plan = plan_for(f, im, shard);
    size_t n = convert_plan_nshards(plan);
    int concat = convert_plan_layout(plan) == CONVERT_LAYOUT_CONCAT;
    int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(ofd >= 0);
    if (!concat)
        assert_int_equal(ftruncate(ofd, (off_t)convert_plan_fixed_size(plan)), 0);

    /* Every shard at once, each in its own process, last shard first. */
    pid_t *pids = xcalloc(n, sizeof(*pids));
    for (size_t k = n; k-- > 0;) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0)
            _exit(child_shard(f, im, shard, k, out));
    }
    for (size_t k = 0; k < n; k++) {
        int st;
        assert_int_equal(waitpid(pids[k], &st, 0), pids[k]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("%s shard %zu: status %d", convert_format_str(f), k, st);
    }
    free(pids);

    /* The finisher: only the plan, the encoded results and the pieces' order. */
    struct convert_result **res = xcalloc(n, sizeof(*res));
    for (size_t k = 0; k < n; k++) {
        char *rpath = xasprintf("%s/result.%zu", tmpdir, k);
        size_t len;
        uint8_t *b = read_file(rpath, &len);
        struct err e = {0};
        res[k] = convert_result_decode(plan, b, len, &e);
        if (!res[k])
            fail_msg("result %zu: %s", k, e.msg);
        free(b);
        unlink(rpath);
        free(rpath);
    }
    struct fd_sink fs = {ofd, 0};
    if (concat) {
        size_t hl;
        const uint8_t *head = convert_plan_head(plan, &hl);
        assert_int_equal(write(ofd, head, hl), (ssize_t)hl);
        fs.base = hl;
        for (size_t k = 0; k < n; k++) {
            char *piece = xasprintf("%s/piece.%zu", tmpdir, k);
            size_t len = 0;
            uint8_t *b = read_file(piece, &len);
            assert_int_equal(len, convert_result_out_len(res[k]));
            if (len)
                assert_int_equal(write(ofd, b, len), (ssize_t)len);
            fs.base += len;
            free(b);
            unlink(piece);
            free(piece);
        }
    }
    struct convert_sink tail = {fd_write, &fs};
    uint64_t total = 0;
    struct err e = {0};
    assert_int_equal(convert_finish(plan, res, n, &tail, &total, &e), 0);
    close(ofd);
    assert_int_equal(file_size(out), total);
    oracle(f, im, out);

    for (size_t k = 0; k < n; k++)
        convert_result_free(res[k]);
    free(res);
    convert_plan_free(plan);
    unlink(out);
    free(out);
}

static void test_shards_in_separate_processes(void **state)
{
    (void)state;
    const struct image *mixed = &images[1], *odd = &images[0];
    sharded_in_processes(CONVERT_VMDK, mixed, 3 * 65536 * 11); /* 2 MiB + 64 KiB */
    sharded_in_processes(CONVERT_VMDK, odd, 65536 * 5);
    sharded_in_processes(CONVERT_GCE_TAR, mixed, 300 * 512 * 20);
    sharded_in_processes(CONVERT_VHD, mixed, 300 * 512 * 7);
    sharded_in_processes(CONVERT_VHD, odd, 512 * 1001);
    sharded_in_processes(CONVERT_RAW, odd, 512 * 999);
}

/* ---- the command line ---- */

static void test_cli_errors(void **state)
{
    (void)state;
    char *out = tpath("never");
    char *bad_to[] = {XM_CONVERT_BIN, "--from", "raw", "--to", "qcow2", images[0].path, out, NULL};
    expect_run(2, bad_to, NULL, NULL);
    char *bad_from[] = {XM_CONVERT_BIN, "--from", "vmdk", "--to", "vhd", images[0].path, out, NULL};
    expect_run(2, bad_from, NULL, NULL);
    char *one_path[] = {XM_CONVERT_BIN, "--from", "raw", "--to", "vhd", out, NULL};
    expect_run(2, one_path, NULL, NULL);
    char *bad_shard[] = {XM_CONVERT_BIN, "--from", "raw",          "--to", "vhd",
                         "--shard-mib",  "0",      images[0].path, out,    NULL};
    expect_run(2, bad_shard, NULL, NULL);
    /* (No arguments at all is the queue worker mode, not tested here.) */
    char *no_mode[] = {XM_CONVERT_BIN, images[0].path, out, NULL};
    expect_run(2, no_mode, NULL, NULL);
    char *missing = tpath("missing.raw");
    char *no_input[] = {XM_CONVERT_BIN, "--from", "raw", "--to", "vmdk", missing, out, NULL};
    expect_run(1, no_input, NULL, NULL);
    char *dir_in[] = {XM_CONVERT_BIN, "--from", "raw", "--to", "vmdk", tmpdir, out, NULL};
    expect_run(1, dir_in, NULL, NULL);
    assert_int_equal(access(out, F_OK), -1);
    /* The output must be a regular file: a device is refused, and never removed. */
    char *dev_out[] = {XM_CONVERT_BIN, "--from",       "raw",       "--to",
                       "vhd",          images[0].path, "/dev/null", NULL};
    expect_run(1, dev_out, NULL, NULL);
    assert_int_equal(access("/dev/null", F_OK), 0);
    free(missing);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_vhd_geometry_matches_qemu),
        cmocka_unit_test(test_shards_in_separate_processes),
        cmocka_unit_test(test_local_every_format_image_shard_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
