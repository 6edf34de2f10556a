/*
 * local.c: the local mode's runner (see local.h).
 */
#include "local.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xmalloc.h"

#define SLICE (8u << 20) /* input handed to a shard per call */

struct membuf {
    uint8_t *p; /* new */
    size_t len, cap;
};

struct job {
    const struct convert_plan *plan;
    int in_fd, out_fd;
    const uint8_t *map; /* the input, mapped read-only */
    int seek_holes;     /* SEEK_DATA/SEEK_HOLE work on the input */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t next_shard;               /* next shard to start */
    size_t next_write;               /* CONCAT: next shard to append */
    size_t window;                   /* CONCAT: started but not yet appended, at most */
    struct membuf *pending;          /* CONCAT: finished shard outputs, by shard */
    unsigned char *ready;            /* CONCAT: pending[i] is complete */
    uint64_t out_off;                /* CONCAT: where the next appended shard goes */
    struct convert_result **results; /* by shard */
    int failed;
    struct err err; /* the first failure */
};

static int write_all(int fd, uint64_t off, const void *buf, size_t len, struct err *err)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return err_set(err, ERR_PERMANENT, "write at %llu: %s", (unsigned long long)off,
                           n < 0 ? strerror(errno) : "nothing written");
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int fd_sink_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    return write_all(*(int *)ctx, off, buf, len, err);
}

static int mem_sink_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct membuf *m = ctx;
    (void)err;
    XM_ASSERT(off == m->len);
    if (m->cap - m->len < len) {
        size_t cap = m->cap ? m->cap : (4u << 20);
        while (cap - m->len < len)
            cap *= 2;
        m->p = xrealloc(m->p, cap);
        m->cap = cap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

struct tail_ctx {
    int fd;
    uint64_t base; /* CONCAT: where the tail starts; FIXED: 0 (offsets are absolute) */
};

static int tail_sink_write(void *ctx, uint64_t off, const void *buf, size_t len, struct err *err)
{
    struct tail_ctx *t = ctx;
    return write_all(t->fd, t->base + off, buf, len, err);
}

static int cancelled(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    int f = j->failed;
    pthread_mutex_unlock(&j->mu);
    return f;
}

/* Feed shard i's input: holes as zeros, data from the mapping in slices. */
static int feed(struct job *j, struct convert_shard *sh, size_t i, struct err *err)
{
    uint64_t off, len;
    convert_plan_shard(j->plan, i, &off, &len);
    const uint64_t end = off + len;
    while (off < end) {
        if (cancelled(j))
            return err_set(err, ERR_PERMANENT, "cancelled");
        uint64_t data = off, hole = end;
        if (j->seek_holes) {
            off_t d = lseek(j->in_fd, (off_t)off, SEEK_DATA);
            if (d < 0 && errno == ENXIO)
                data = end; /* only a hole from here to the end of the file */
            else if (d >= 0)
                data = (uint64_t)d < end ? (uint64_t)d : end;
            if (data > off) {
                if (convert_shard_zero(sh, data - off, err) < 0)
                    return -1;
                off = data;
                continue;
            }
            off_t h = lseek(j->in_fd, (off_t)off, SEEK_HOLE);
            if (h >= 0 && (uint64_t)h < end)
                hole = (uint64_t)h > off ? (uint64_t)h : end;
        }
        while (off < hole) {
            size_t n = hole - off < SLICE ? (size_t)(hole - off) : SLICE;
            if (convert_shard_write(sh, j->map + off, n, err) < 0)
                return -1;
            off += n;
            if (off < hole && cancelled(j))
                return err_set(err, ERR_PERMANENT, "cancelled");
        }
    }
    return 0;
}

static void fail_locked(struct job *j, const struct err *e)
{
    if (!j->failed) {
        j->failed = 1;
        j->err = *e;
    }
    pthread_cond_broadcast(&j->cv);
}

/* CONCAT: append every finished shard that is next in order. Called with mu held. */
static void append_ready_locked(struct job *j)
{
    size_t n = convert_plan_nshards(j->plan);
    while (!j->failed && j->next_write < n && j->ready[j->next_write]) {
        struct membuf *m = &j->pending[j->next_write];
        struct err e = {0};
        if (write_all(j->out_fd, j->out_off, m->p, m->len, &e) < 0) {
            fail_locked(j, &e);
            break;
        }
        j->out_off += m->len;
        free(m->p);
        memset(m, 0, sizeof(*m));
        j->next_write++;
    }
    pthread_cond_broadcast(&j->cv);
}

static void *worker(void *arg)
{
    struct job *j = arg;
    const int concat = convert_plan_layout(j->plan) == CONVERT_LAYOUT_CONCAT;
    const size_t n = convert_plan_nshards(j->plan);
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (concat && !j->failed && j->next_shard < n &&
               j->next_shard - j->next_write >= j->window)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->failed || j->next_shard >= n) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        size_t i = j->next_shard++;
        pthread_mutex_unlock(&j->mu);

        struct membuf mb = {0};
        struct convert_sink sink = {fd_sink_write, &j->out_fd};
        if (concat)
            sink = (struct convert_sink){mem_sink_write, &mb};
        struct err e = {0};
        struct convert_shard *sh = convert_shard_new(j->plan, i, &sink);
        struct convert_result *r = NULL;
        if (feed(j, sh, i, &e) == 0)
            r = convert_shard_finish(sh, &e);
        convert_shard_free(sh);

        pthread_mutex_lock(&j->mu);
        if (!r) {
            err_prefix(&e, "shard %zu", i);
            fail_locked(j, &e);
            pthread_mutex_unlock(&j->mu);
            free(mb.p);
            break;
        }
        j->results[i] = r;
        if (concat) {
            j->pending[i] = mb;
            j->ready[i] = 1;
            append_ready_locked(j);
        }
        pthread_mutex_unlock(&j->mu);
    }
    return NULL;
}

static int input_size(int fd, const char *path, uint64_t *size, struct err *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return err_set(err, ERR_PERMANENT, "stat '%s': %s", path, strerror(errno));
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, size) < 0)
            return err_set(err, ERR_PERMANENT, "size of '%s': %s", path, strerror(errno));
        return 0;
    }
    if (!S_ISREG(st.st_mode))
        return err_set(err, ERR_PERMANENT, "'%s' is neither a file nor a block device", path);
    *size = (uint64_t)st.st_size;
    return 0;
}

int convert_local_run(const struct convert_local_opts *o, struct convert_local_stats *stats,
                      struct err *err)
{
    struct job j = {.in_fd = -1, .out_fd = -1};
    struct convert_plan *plan = NULL;
    void *map = MAP_FAILED;
    uint64_t in_size = 0, total = 0;
    size_t n = 0;
    unsigned started = 0;
    pthread_t *tids = NULL;
    int rc = -1, out_created = 0;
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);

    j.in_fd = open(o->in, O_RDONLY | O_CLOEXEC);
    if (j.in_fd < 0) {
        err_set(err, ERR_PERMANENT, "open '%s': %s", o->in, strerror(errno));
        goto out;
    }
    if (input_size(j.in_fd, o->in, &in_size, err) < 0)
        goto out;
    struct convert_params p = {
        .format = o->to,
        .in_size = in_size,
        .shard_size = o->shard_size,
        .created = o->created,
        .level = o->level,
    };
    memcpy(p.id, o->id, sizeof(p.id));
    if (!(plan = convert_plan_new(&p, err)))
        goto out;
    j.plan = plan;
    n = convert_plan_nshards(plan);

    map = mmap(NULL, (size_t)in_size, PROT_READ, MAP_SHARED, j.in_fd, 0);
    if (map == MAP_FAILED) {
        err_set(err, ERR_PERMANENT, "map '%s': %s", o->in, strerror(errno));
        goto out;
    }
    j.map = map;
    j.seek_holes = lseek(j.in_fd, 0, SEEK_DATA) >= 0 || errno == ENXIO;

    /* Only ever a regular file: a failed run removes what it wrote. */
    struct stat ost;
    if (stat(o->out, &ost) == 0 && !S_ISREG(ost.st_mode)) {
        err_set(err, ERR_PERMANENT, "'%s' exists and is not a regular file", o->out);
        goto out;
    }
    j.out_fd = open(o->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (j.out_fd < 0) {
        err_set(err, ERR_PERMANENT, "create '%s': %s", o->out, strerror(errno));
        goto out;
    }
    if (fstat(j.out_fd, &ost) < 0 || !S_ISREG(ost.st_mode)) {
        err_set(err, ERR_PERMANENT, "'%s' is not a regular file", o->out);
        goto out;
    }
    out_created = 1;
    if (convert_plan_layout(plan) == CONVERT_LAYOUT_FIXED) {
        if (ftruncate(j.out_fd, (off_t)convert_plan_fixed_size(plan)) < 0) {
            err_set(err, ERR_PERMANENT, "size '%s': %s", o->out, strerror(errno));
            goto out;
        }
    } else {
        size_t head_len;
        const uint8_t *head = convert_plan_head(plan, &head_len);
        if (write_all(j.out_fd, 0, head, head_len, err) < 0)
            goto out;
        j.out_off = head_len;
    }

    j.results = xcalloc(n, sizeof(*j.results));
    j.pending = xcalloc(n, sizeof(*j.pending));
    j.ready = xcalloc(n, 1);
    unsigned threads = o->threads ? o->threads : 1;
    if (threads > n)
        threads = (unsigned)n;
    /* Room to run ahead of a slow shard (text among zeros) without holding many outputs. */
    j.window = 4 * (size_t)threads;
    tids = xcalloc(threads, sizeof(*tids));
    for (; started < threads; started++) {
        int perr = pthread_create(&tids[started], NULL, worker, &j);
        if (perr != 0) {
            struct err e;
            err_set(&e, ERR_TRANSIENT, "start thread: %s", strerror(perr));
            pthread_mutex_lock(&j.mu);
            fail_locked(&j, &e);
            pthread_mutex_unlock(&j.mu);
            break;
        }
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    if (j.failed) {
        if (err)
            *err = j.err;
        goto out;
    }

    struct tail_ctx tc = {j.out_fd,
                          convert_plan_layout(plan) == CONVERT_LAYOUT_FIXED ? 0 : j.out_off};
    struct convert_sink tail = {tail_sink_write, &tc};
    if (convert_finish(plan, j.results, n, &tail, &total, err) < 0)
        goto out;
    if (ftruncate(j.out_fd, (off_t)total) < 0) {
        err_set(err, ERR_PERMANENT, "size '%s': %s", o->out, strerror(errno));
        goto out;
    }
    if (close(j.out_fd) < 0) {
        j.out_fd = -1;
        err_set(err, ERR_PERMANENT, "close '%s': %s", o->out, strerror(errno));
        goto out;
    }
    j.out_fd = -1;
    if (stats) {
        stats->in_size = in_size;
        stats->out_size = total;
        stats->shards = n;
        stats->threads = started;
    }
    rc = 0;
out:
    if (j.out_fd >= 0)
        close(j.out_fd);
    if (rc < 0 && out_created)
        unlink(o->out);
    if (map != MAP_FAILED)
        munmap(map, (size_t)in_size);
    if (j.in_fd >= 0)
        close(j.in_fd);
    for (size_t i = 0; j.results && i < n; i++)
        convert_result_free(j.results[i]);
    for (size_t i = 0; j.pending && i < n; i++)
        free(j.pending[i].p);
    free(j.results);
    free(j.pending);
    free(j.ready);
    free(tids);
    convert_plan_free(plan);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    return rc;
}
