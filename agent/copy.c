#include "copy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "log.h"
#include "sbuf.h"
#include "xmalloc.h"

#define PUT_REPLY_MAX (64 * 1024)

/* Where a chunk stands; urlsrc asks for URLs only of UNKNOWN and TO_PUT chunks. */
enum chunk_state { CS_UNKNOWN = 0, CS_ZERO, CS_SKIPPED, CS_TO_PUT, CS_SENDING, CS_DONE };

struct job {
    uint64_t index;
    size_t len;
    unsigned char *raw;
    unsigned char *comp;
    size_t clen;
    unsigned char sha[32];
    struct job *next;
};

/* ---------------------------------------------------------------- queues and pools */

struct chan {
    pthread_mutex_t m;
    pthread_cond_t c;
    struct job *head, *tail;
    int closed;
};

static void chan_init(struct chan *ch)
{
    pthread_mutex_init(&ch->m, NULL);
    pthread_cond_init(&ch->c, NULL);
    ch->head = ch->tail = NULL;
    ch->closed = 0;
}

static void chan_put(struct chan *ch, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&ch->m);
    if (ch->tail)
        ch->tail->next = j;
    else
        ch->head = j;
    ch->tail = j;
    pthread_cond_signal(&ch->c);
    pthread_mutex_unlock(&ch->m);
}

/* The next job, or NULL once the channel is closed and empty. */
static struct job *chan_get(struct chan *ch)
{
    pthread_mutex_lock(&ch->m);
    while (!ch->head && !ch->closed)
        pthread_cond_wait(&ch->c, &ch->m);
    struct job *j = ch->head;
    if (j) {
        ch->head = j->next;
        if (!ch->head)
            ch->tail = NULL;
    }
    pthread_mutex_unlock(&ch->m);
    return j;
}

static void chan_close(struct chan *ch)
{
    pthread_mutex_lock(&ch->m);
    ch->closed = 1;
    pthread_cond_broadcast(&ch->c);
    pthread_mutex_unlock(&ch->m);
}

/* What is left in a channel after a failure. */
static struct job *chan_drain(struct chan *ch)
{
    pthread_mutex_lock(&ch->m);
    struct job *j = ch->head;
    ch->head = ch->tail = NULL;
    pthread_mutex_unlock(&ch->m);
    return j;
}

static void chan_destroy(struct chan *ch)
{
    pthread_cond_destroy(&ch->c);
    pthread_mutex_destroy(&ch->m);
}

struct pool {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned char **free;
    int n_free, made, max;
    size_t size;
    int closed;
};

static void pool_init(struct pool *p, int max, size_t size)
{
    pthread_mutex_init(&p->m, NULL);
    pthread_cond_init(&p->c, NULL);
    p->free = xcalloc((size_t)max, sizeof(*p->free));
    p->n_free = p->made = 0;
    p->max = max;
    p->size = size;
    p->closed = 0;
}

/* A buffer (waits while all are in use), or NULL once the pool is closed. */
static unsigned char *pool_get(struct pool *p)
{
    unsigned char *b = NULL;
    pthread_mutex_lock(&p->m);
    while (!p->closed && p->n_free == 0 && p->made == p->max)
        pthread_cond_wait(&p->c, &p->m);
    if (!p->closed) {
        if (p->n_free)
            b = p->free[--p->n_free];
        else {
            p->made++;
            b = NULL; /* allocated below, outside the lock */
        }
    }
    int make = !p->closed && !b;
    pthread_mutex_unlock(&p->m);
    if (make)
        b = xmalloc(p->size);
    return b;
}

static void pool_put(struct pool *p, unsigned char *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&p->m);
    XM_ASSERT(p->n_free < p->max);
    p->free[p->n_free++] = b;
    pthread_cond_signal(&p->c);
    pthread_mutex_unlock(&p->m);
}

static void pool_close(struct pool *p)
{
    pthread_mutex_lock(&p->m);
    p->closed = 1;
    pthread_cond_broadcast(&p->c);
    pthread_mutex_unlock(&p->m);
}

static void pool_destroy(struct pool *p)
{
    for (int i = 0; i < p->n_free; i++)
        free(p->free[i]);
    free(p->free);
    pthread_cond_destroy(&p->c);
    pthread_mutex_destroy(&p->m);
}

/* ---------------------------------------------------------------- the copy */

struct copy {
    const struct copy_opts *o;
    int fd;
    uint64_t size, chunks;
    struct chunk_rec *recs;
    _Atomic unsigned char *state;
    unsigned char zero_sha[32]; /* of chunk_size zero bytes */
    struct urlsrc *urls;
    struct chan work, upload;
    struct pool raw, comp;
    int workers_left; /* under work.m: the last compressor closes the upload queue */

    volatile int stop;
    pthread_mutex_t fail_lock;
    struct agent_fail fail;

    pthread_mutex_t bucket_lock;
    double tokens, bucket_cap;
    long long bucket_us;

    atomic_ullong bytes_read, bytes_sent, bytes_stored, done_bytes;
    atomic_ullong chunks_done, chunks_zero, chunks_skipped, chunks_put;
    long long start_ms;

    pthread_mutex_t progress_lock;
    pthread_cond_t progress_cond;
    int progress_stop;
    struct hclient *progress_http;
};

static void set_fail(struct copy *c, const struct agent_fail *f)
{
    pthread_mutex_lock(&c->fail_lock);
    if (c->fail.code == AGENT_OK)
        c->fail = *f;
    c->stop = 1;
    pthread_mutex_unlock(&c->fail_lock);
    chan_close(&c->work);
    chan_close(&c->upload);
    pool_close(&c->raw);
    pool_close(&c->comp);
}

static int failed(struct copy *c)
{
    pthread_mutex_lock(&c->fail_lock);
    int yes = c->fail.code != AGENT_OK;
    pthread_mutex_unlock(&c->fail_lock);
    return yes;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The pacing callback of every PUT: wait for n tokens, count n bytes as sent. */
static void pace(void *arg, size_t n)
{
    struct copy *c = arg;
    if (c->o->limit_Bps > 0) {
        pthread_mutex_lock(&c->bucket_lock);
        for (;;) {
            long long now = now_us();
            c->tokens += (double)(now - c->bucket_us) * c->o->limit_Bps / 1e6;
            c->bucket_us = now;
            if (c->tokens > c->bucket_cap)
                c->tokens = c->bucket_cap;
            if (c->tokens >= (double)n || c->stop) {
                c->tokens -= (double)n;
                break;
            }
            long wait_ms = (long)(((double)n - c->tokens) * 1000.0 / c->o->limit_Bps) + 1;
            pthread_mutex_unlock(&c->bucket_lock);
            struct timespec ts = {.tv_sec = 0,
                                  .tv_nsec = (wait_ms > 100 ? 100 : wait_ms) * 1000000L};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&c->bucket_lock);
        }
        pthread_mutex_unlock(&c->bucket_lock);
    }
    atomic_fetch_add(&c->bytes_sent, n);
}

static int wanted(void *arg, unsigned long long index)
{
    struct copy *c = arg;
    if (index >= c->chunks)
        return 0;
    unsigned char s = atomic_load_explicit(&c->state[index], memory_order_relaxed);
    return s == CS_UNKNOWN || s == CS_TO_PUT;
}

static int all_zero(const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 4096 <= n; i += 4096) {
        uint64_t acc = 0;
        for (size_t k = 0; k < 4096; k += 8) {
            uint64_t v;
            memcpy(&v, p + i + k, 8);
            acc |= v;
        }
        if (acc)
            return 0;
    }
    for (; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    XM_ASSERT(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1);
}

static void chunk_done(struct copy *c, uint64_t index, size_t len, enum chunk_state st)
{
    atomic_store(&c->state[index], (unsigned char)st);
    atomic_fetch_add(&c->chunks_done, 1);
    atomic_fetch_add(&c->done_bytes, len);
    atomic_fetch_add(&c->bytes_stored, c->recs[index].stored);
}

/* ---------------------------------------------------------------- PUT with retries */

/* Is this reply the storage saying it is full or over quota? */
static int storage_full(const struct hresp *r)
{
    if (r->status == 507 || r->status == 413)
        return 1;
    if (r->status < 400 || r->status >= 500 || !r->body)
        return 0;
    static const char *const codes[] = {
        "EntityTooLarge", "QuotaExceeded",        "quotaExceeded",       "InsufficientStorage",
        "AccountIsFull",  "StorageQuotaExceeded", "ServiceQuotaExceeded"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strstr(r->body, codes[i]))
            return 1;
    return 0;
}

/*
 * PUT body to the URL of chunk index (manifest: the manifest's URL), with every retry
 * rule of copy.h. 0 when answered 2xx, else -1 with f.
 */
static int put_object(struct copy *c, struct hclient *http, int manifest, uint64_t index,
                      const void *body, size_t len, struct agent_fail *f)
{
    char what[48];
    if (manifest)
        snprintf(what, sizeof(what), "manifest");
    else
        snprintf(what, sizeof(what), "chunk %llu", (unsigned long long)index);
    char *url = NULL;
    long long expires = 0;
    int refreshed = 0, rc = -1;
    struct err last = {0};
    int attempt = 0;
    for (;;) {
        if (c->stop && !manifest) {
            agent_fail(f, AGENT_FAILED, "stopped");
            goto out;
        }
        if (!url || expires - (long long)time(NULL) <= c->o->urls.margin_s) {
            free(url);
            url = NULL;
            if (manifest) {
                url = urlsrc_manifest(c->urls, refreshed, f);
                expires = INT64_MAX;
            } else if (urlsrc_get(c->urls, index, &url, &expires, f) < 0) {
                url = NULL;
            } else {
                atomic_store(&c->state[index], (unsigned char)CS_SENDING); /* has its URL */
            }
            if (!url)
                goto out;
        }
        attempt++;
        /* The operator's --header lines, then those the API requires (with the URL). */
        char required[URLSRC_HEADERS_MAX][URLSRC_HEADER_MAX];
        const char *headers[2 * URLSRC_HEADERS_MAX + 1];
        size_t nh = 0;
        for (const char *const *h = c->o->put_headers; h && *h && nh < URLSRC_HEADERS_MAX; h++)
            headers[nh++] = *h;
        size_t nr = urlsrc_headers(c->urls, required, URLSRC_HEADERS_MAX);
        for (size_t i = 0; i < nr; i++)
            headers[nh++] = required[i];
        headers[nh] = NULL;
        struct hreq req = {.method = "PUT",
                           .url = url,
                           .headers = nh ? headers : NULL,
                           .body = body,
                           .body_len = len,
                           .send_length = 1,
                           .pace = pace,
                           .pace_arg = c,
                           .resp_max = PUT_REPLY_MAX};
        struct hresp r;
        struct err err = {0};
        long retry_after = -1;
        if (hclient_do(http, &req, &r, &err) < 0) {
            if (err.kind == ERR_PERMANENT) {
                agent_fail(f, AGENT_NETWORK, "%s: %s", what, err.msg);
                goto out;
            }
            last = err;
        } else {
            int status = r.status;
            char code[64];
            agent_error_code(r.body, code, sizeof(code));
            retry_after = r.retry_after_s;
            int full = storage_full(&r);
            hresp_release(&r);
            if (status >= 200 && status < 300) {
                rc = 0;
                goto out;
            }
            if (full) {
                agent_fail(f, AGENT_FULL, "%s: storage full: HTTP %d%s%s", what, status,
                           code[0] ? " " : "", code);
                goto out;
            }
            if (status == 401 || status == 403) {
                if (!refreshed) {
                    /* expired while queued, or signed against a skewed clock: one more
                     * URL, fresh from the source, then give up */
                    refreshed = 1;
                    log_warn("url refused: asking for a fresh one", "what=\"%s\" status=%d%s%s",
                             what, status, code[0] ? " code=" : "", code);
                    free(url);
                    url = NULL;
                    expires = 0;
                    continue;
                }
                agent_fail(f, AGENT_REFUSED,
                           "%s: URL refused (expired or revoked token?): HTTP %d%s%s", what, status,
                           code[0] ? " " : "", code);
                goto out;
            }
            if (status < 500 && status != 429 && status != 408) {
                agent_fail(f, AGENT_REFUSED, "%s: URL refused: HTTP %d%s%s", what, status,
                           code[0] ? " " : "", code);
                goto out;
            }
            err_set(&last, ERR_TRANSIENT, "HTTP %d%s%s", status, code[0] ? " " : "", code);
        }
        if (attempt >= c->o->retry.max_attempts) {
            agent_fail(f, AGENT_NETWORK, "%s: gave up after %d attempts: %s", what, attempt,
                       last.msg);
            goto out;
        }
        long ms = agent_backoff_ms(&c->o->retry, attempt, retry_after);
        log_warn("put failed: retrying", "what=\"%s\" attempt=%d error=\"%s\" backoff_ms=%ld", what,
                 attempt, last.msg, ms);
        agent_sleep_ms(ms, manifest ? NULL : &c->stop);
    }
out:
    free(url);
    return rc;
}

/* ---------------------------------------------------------------- threads */

static void *reader_main(void *arg)
{
    struct copy *c = arg;
    uint64_t cs = c->o->chunk_size;
    for (uint64_t i = 0; i < c->chunks && !c->stop; i++) {
        unsigned char *buf = pool_get(&c->raw);
        if (!buf)
            break;
        uint64_t off = i * cs;
        size_t len = (size_t)(c->size - off < cs ? c->size - off : cs);
        size_t got = 0;
        while (got < len) {
            ssize_t r = pread(c->fd, buf + got, len - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                struct agent_fail f = {0};
                if (r < 0)
                    agent_fail(&f, AGENT_DEVICE, "device '%s' unreadable at offset %llu: %s",
                               c->o->device_name, (unsigned long long)(off + got), strerror(errno));
                else
                    agent_fail(&f, AGENT_DEVICE,
                               "device '%s' ended at offset %llu, before its size %llu",
                               c->o->device_name, (unsigned long long)(off + got),
                               (unsigned long long)c->size);
                pool_put(&c->raw, buf);
                set_fail(c, &f);
                goto out;
            }
            got += (size_t)r;
        }
        atomic_fetch_add(&c->bytes_read, len);
        struct job *j = xcalloc(1, sizeof(*j));
        j->index = i;
        j->len = len;
        j->raw = buf;
        chan_put(&c->work, j);
    }
    if (!c->stop && c->o->read_done)
        c->o->read_done(c->o->cb_arg);
out:
    chan_close(&c->work);
    return NULL;
}

static void *compressor_main(void *arg)
{
    struct copy *c = arg;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    XM_ASSERT(cctx != NULL);
    size_t bound = ZSTD_compressBound((size_t)c->o->chunk_size);
    struct job *j;
    while ((j = chan_get(&c->work))) {
        if (c->stop) {
            pool_put(&c->raw, j->raw);
            free(j);
            continue;
        }
        struct chunk_rec *rec = &c->recs[j->index];
        if (all_zero(j->raw, j->len)) {
            if (j->len == c->o->chunk_size)
                memcpy(rec->sha, c->zero_sha, 32);
            else
                sha256(j->raw, j->len, rec->sha);
            rec->zero = 1;
            rec->stored = 0;
            rec->done = 1;
            pool_put(&c->raw, j->raw);
            atomic_fetch_add(&c->chunks_zero, 1);
            chunk_done(c, j->index, j->len, CS_ZERO);
            free(j);
            continue;
        }
        sha256(j->raw, j->len, j->sha);
        memcpy(rec->sha, j->sha, 32);
        unsigned char old[32];
        uint64_t stored = 0;
        const struct prev_manifest *pm = c->o->prev;
        int same =
            journal_lookup(c->o->journal, j->index, old, &stored) && memcmp(old, j->sha, 32) == 0;
        if (!same && pm && j->index < pm->n) {
            const struct prev_chunk *p = &pm->c[j->index];
            if (p->present && !p->zero && p->length == j->len && p->stored > 0 &&
                memcmp(p->sha, j->sha, 32) == 0) {
                same = 1;
                stored = p->stored;
            }
        }
        if (same) {
            rec->stored = stored;
            rec->done = 1;
            pool_put(&c->raw, j->raw);
            atomic_fetch_add(&c->chunks_skipped, 1);
            chunk_done(c, j->index, j->len, CS_SKIPPED);
            free(j);
            continue;
        }
        atomic_store(&c->state[j->index], (unsigned char)CS_TO_PUT);
        j->comp = pool_get(&c->comp);
        if (!j->comp) {
            pool_put(&c->raw, j->raw);
            free(j);
            continue;
        }
        size_t n = ZSTD_compressCCtx(cctx, j->comp, bound, j->raw, j->len, c->o->zstd_level);
        XM_ASSERT(!ZSTD_isError(n)); /* the bound is always enough */
        j->clen = n;
        pool_put(&c->raw, j->raw);
        j->raw = NULL;
        chan_put(&c->upload, j);
    }
    ZSTD_freeCCtx(cctx);
    pthread_mutex_lock(&c->work.m);
    int last = --c->workers_left == 0;
    pthread_mutex_unlock(&c->work.m);
    if (last)
        chan_close(&c->upload);
    return NULL;
}

static void *uploader_main(void *arg)
{
    struct copy *c = arg;
    struct hclient_opts ho = {.tls = c->o->tls, .io_timeout_ms = c->o->io_timeout_ms};
    struct hclient *http = hclient_new(&ho);
    struct job *j;
    while ((j = chan_get(&c->upload))) {
        if (!c->stop) {
            struct agent_fail f = {0};
            if (put_object(c, http, 0, j->index, j->comp, j->clen, &f) < 0) {
                if (!c->stop || f.code != AGENT_FAILED)
                    set_fail(c, &f);
            } else {
                struct err err = {0};
                if (journal_append(c->o->journal, j->index, j->sha, j->clen, &err) < 0) {
                    struct agent_fail jf = {0};
                    agent_fail(&jf, AGENT_FAILED, "%s", err.msg);
                    set_fail(c, &jf);
                }
                c->recs[j->index].stored = j->clen;
                c->recs[j->index].done = 1;
                atomic_fetch_add(&c->chunks_put, 1);
                chunk_done(c, j->index, j->len, CS_DONE);
            }
        }
        pool_put(&c->comp, j->comp);
        free(j);
    }
    hclient_free(http);
    return NULL;
}

/* ---------------------------------------------------------------- progress */

struct snapshot {
    uint64_t read, sent, stored, done, total, skipped, done_bytes;
    double rate, eta;
};

static void take_snapshot(struct copy *c, struct snapshot *s)
{
    s->read = atomic_load(&c->bytes_read);
    s->sent = atomic_load(&c->bytes_sent);
    s->stored = atomic_load(&c->bytes_stored);
    s->done = atomic_load(&c->chunks_done);
    s->skipped = atomic_load(&c->chunks_skipped);
    s->done_bytes = atomic_load(&c->done_bytes);
    s->total = c->chunks;
    double secs = (double)(agent_mono_ms() - c->start_ms) / 1000.0;
    s->rate = secs > 0 ? (double)s->done_bytes / secs : 0;
    s->eta = s->rate > 0 ? (double)(c->size - s->done_bytes) / s->rate : 0;
}

static void report(struct copy *c, const char *phase, const char *message)
{
    struct snapshot s;
    take_snapshot(c, &s);
    log_info("progress",
             "phase=%s read=%llu sent=%llu stored=%llu chunks=%llu/%llu skipped=%llu "
             "zero=%llu rate_mib_s=%.1f eta_s=%.0f",
             phase, (unsigned long long)s.read, (unsigned long long)s.sent,
             (unsigned long long)s.stored, (unsigned long long)s.done, (unsigned long long)s.total,
             (unsigned long long)s.skipped, (unsigned long long)atomic_load(&c->chunks_zero),
             s.rate / 1048576.0, s.eta);
    if (!c->o->api)
        return;
    struct sbuf b;
    sbuf_init(&b);
    sbuf_printf(&b,
                "{\"bytes_read\":%llu,\"bytes_sent\":%llu,\"bytes_stored\":%llu,"
                "\"device_size\":%llu,\"chunks_done\":%llu,\"chunks_total\":%llu,"
                "\"chunks_skipped\":%llu,\"rate_bps\":%.0f,\"eta_s\":%.0f,\"phase\":\"%s\"",
                (unsigned long long)s.read, (unsigned long long)s.sent,
                (unsigned long long)s.stored, (unsigned long long)c->size,
                (unsigned long long)s.done, (unsigned long long)s.total,
                (unsigned long long)s.skipped, s.rate, s.eta, phase);
    if (c->o->consistency)
        sbuf_printf(&b, ",\"consistency\":\"%s\"", c->o->consistency(c->o->cb_arg));
    if (message) {
        sbuf_adds(&b, ",\"message\":");
        char cut[500];
        xstrlcpy(cut, message, sizeof(cut));
        sbuf_json_str(&b, cut);
    }
    sbuf_adds(&b, "}");
    struct hresp r;
    struct err err = {0};
    if (api_post(c->progress_http, c->o->api, "progress", b.buf, b.len, &r, &err) < 0) {
        log_warn("progress report failed", "error=\"%s\"", err.msg);
    } else {
        if (r.status < 200 || r.status >= 300)
            log_warn("progress report refused", "status=%d%s", r.status,
                     r.status == 401 ? " hint=\"token revoked?\"" : "");
        hresp_release(&r);
    }
    sbuf_release(&b);
}

static void *progress_main(void *arg)
{
    struct copy *c = arg;
    pthread_mutex_lock(&c->progress_lock);
    while (!c->progress_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += c->o->progress_s;
        if (pthread_cond_timedwait(&c->progress_cond, &c->progress_lock, &ts) == ETIMEDOUT &&
            !c->progress_stop) {
            pthread_mutex_unlock(&c->progress_lock);
            report(c, "copy", NULL);
            pthread_mutex_lock(&c->progress_lock);
        }
    }
    pthread_mutex_unlock(&c->progress_lock);
    return NULL;
}

/* ---------------------------------------------------------------- the pass */

/* The copy running now, for copy_cancel() from the signal thread. */
static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static struct copy *active;
/* A cancel that came while no copy was running (a signal during --lvm-snapshot or
 * --freeze setup): the next copy_run() fails at once with it, instead of copying. */
static char cancel_pending[128];

void copy_cancel(const char *why)
{
    pthread_mutex_lock(&active_lock);
    if (active) {
        struct agent_fail f = {0};
        agent_fail(&f, AGENT_FAILED, "%s", why);
        set_fail(active, &f);
    } else if (!cancel_pending[0]) {
        snprintf(cancel_pending, sizeof(cancel_pending), "%s", why[0] ? why : "cancelled");
    }
    pthread_mutex_unlock(&active_lock);
}

static int open_device(struct copy *c, struct agent_fail *f)
{
    const char *name = c->o->device_name;
    c->fd = open(c->o->device, O_RDONLY | O_CLOEXEC);
    if (c->fd < 0)
        return agent_fail(f, AGENT_DEVICE, "device '%s' unreadable: %s", name, strerror(errno));
    struct stat st;
    if (fstat(c->fd, &st) < 0)
        return agent_fail(f, AGENT_DEVICE, "device '%s' unreadable: %s", name, strerror(errno));
    if (S_ISBLK(st.st_mode)) {
        unsigned long long size = 0;
        if (ioctl(c->fd, BLKGETSIZE64, &size) < 0)
            return agent_fail(f, AGENT_DEVICE, "device '%s': cannot get its size: %s", name,
                              strerror(errno));
        c->size = size;
    } else if (S_ISREG(st.st_mode)) {
        c->size = (uint64_t)st.st_size;
    } else {
        return agent_fail(f, AGENT_DEVICE, "device '%s' is neither a block device nor a file",
                          name);
    }
    posix_fadvise(c->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    c->chunks = (c->size + c->o->chunk_size - 1) / c->o->chunk_size;
    if (c->chunks > COPY_CHUNKS_MAX)
        return agent_fail(f, AGENT_USAGE,
                          "device '%s' has more than %llu chunks: use a larger "
                          "--chunk-mib",
                          name, (unsigned long long)COPY_CHUNKS_MAX);
    return 0;
}

enum agent_exit copy_run(const struct copy_opts *o, struct copy_result *res, struct agent_fail *f)
{
    struct copy *c = xcalloc(1, sizeof(*c));
    c->o = o;
    c->fd = -1;
    c->start_ms = agent_mono_ms();
    pthread_mutex_init(&c->fail_lock, NULL);
    pthread_mutex_init(&c->bucket_lock, NULL);
    pthread_mutex_init(&c->progress_lock, NULL);
    pthread_cond_init(&c->progress_cond, NULL);
    chan_init(&c->work);
    chan_init(&c->upload);
    pool_init(&c->raw, o->compressors + 2, (size_t)o->chunk_size);
    pool_init(&c->comp, o->parallel + 2, ZSTD_compressBound((size_t)o->chunk_size));
    c->bucket_us = now_us();
    c->bucket_cap = o->limit_Bps * 0.05;
    if (c->bucket_cap < 256 * 1024)
        c->bucket_cap = 256 * 1024;
    struct hclient_opts ho = {.tls = o->tls};
    c->progress_http = hclient_new(&ho);
    pthread_t reader, progress, *workers = NULL, *uploaders = NULL;
    int n_workers = 0, n_uploaders = 0, have_reader = 0, have_progress = 0;
    char *manifest = NULL;
    memset(res, 0, sizeof(*res));

    struct agent_fail of = {0};
    pthread_mutex_lock(&active_lock);
    active = c;
    if (cancel_pending[0])
        agent_fail(&of, AGENT_FAILED, "%s", cancel_pending);
    pthread_mutex_unlock(&active_lock);
    if (of.code != AGENT_OK) {
        set_fail(c, &of);
        goto done;
    }
    if (open_device(c, &of) < 0) {
        set_fail(c, &of);
        goto done;
    }
    c->recs = xcalloc(c->chunks ? c->chunks : 1, sizeof(*c->recs));
    c->state = xcalloc(c->chunks ? c->chunks : 1, sizeof(*c->state));
    {
        unsigned char *zeros = xcalloc(1, (size_t)o->chunk_size);
        sha256(zeros, (size_t)o->chunk_size, c->zero_sha);
        free(zeros);
    }
    struct urlsrc_opts uo = o->urls;
    uo.wanted = wanted;
    uo.wanted_arg = c;
    uo.chunks = c->chunks;
    uo.stop = &c->stop;
    c->urls = urlsrc_new(&uo, o->tls);
    log_info("copy starting",
             "device=%s size=%llu chunk_size=%llu chunks=%llu parallel=%d compressors=%d "
             "zstd_level=%d limit_bytes_s=%.0f memory_bound_mib=%.0f journal_records=%llu",
             o->device_name, (unsigned long long)c->size, (unsigned long long)o->chunk_size,
             (unsigned long long)c->chunks, o->parallel, o->compressors, o->zstd_level,
             o->limit_Bps,
             ((double)(o->compressors + 2) * (double)o->chunk_size +
              (double)(o->parallel + 2) * (double)ZSTD_compressBound((size_t)o->chunk_size)) /
                 1048576.0,
             (unsigned long long)journal_loaded(o->journal));

    if (o->api) {
        report(c, "copy", NULL);
        if (pthread_create(&progress, NULL, progress_main, c) == 0)
            have_progress = 1;
    } else if (o->progress_s > 0 && pthread_create(&progress, NULL, progress_main, c) == 0) {
        have_progress = 1;
    }
    workers = xcalloc((size_t)o->compressors, sizeof(*workers));
    uploaders = xcalloc((size_t)o->parallel, sizeof(*uploaders));
    c->workers_left = o->compressors;
    for (int i = 0; i < o->parallel; i++)
        XM_ASSERT(pthread_create(&uploaders[n_uploaders++], NULL, uploader_main, c) == 0);
    for (int i = 0; i < o->compressors; i++)
        XM_ASSERT(pthread_create(&workers[n_workers++], NULL, compressor_main, c) == 0);
    XM_ASSERT(pthread_create(&reader, NULL, reader_main, c) == 0);
    have_reader = 1;

    pthread_join(reader, NULL);
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    for (int i = 0; i < n_uploaders; i++)
        pthread_join(uploaders[i], NULL);
    for (struct job *j = chan_drain(&c->work), *next; j; j = next) {
        next = j->next;
        pool_put(&c->raw, j->raw);
        free(j);
    }
    for (struct job *j = chan_drain(&c->upload), *next; j; j = next) {
        next = j->next;
        pool_put(&c->comp, j->comp);
        free(j);
    }
    if (failed(c))
        goto done;

    /* Every chunk must be accounted for before the manifest says the copy is whole. */
    for (uint64_t i = 0; i < c->chunks; i++)
        XM_ASSERT(c->recs[i].done);
    struct manifest_info mi = {.device = o->device_name,
                               .device_size = c->size,
                               .chunk_size = o->chunk_size,
                               .consistency =
                                   o->consistency ? o->consistency(o->cb_arg) : "crash-consistent",
                               .zstd_level = o->zstd_level,
                               .created = time(NULL)};
    size_t mlen = 0;
    manifest = manifest_build(&mi, c->recs, c->chunks, &mlen);
    res->manifest_bytes = mlen;
    {
        struct hclient_opts mo = {.tls = o->tls, .io_timeout_ms = o->io_timeout_ms};
        struct hclient *http = hclient_new(&mo);
        struct agent_fail mf = {0};
        int rc = put_object(c, http, 1, 0, manifest, mlen, &mf);
        hclient_free(http);
        if (rc < 0) {
            set_fail(c, &mf);
            goto done;
        }
    }
    {
        struct err err = {0};
        if (journal_remove(o->journal, &err) < 0)
            log_warn("journal not removed", "error=\"%s\"", err.msg);
    }

done:
    if (have_progress) {
        pthread_mutex_lock(&c->progress_lock);
        c->progress_stop = 1;
        pthread_cond_broadcast(&c->progress_cond);
        pthread_mutex_unlock(&c->progress_lock);
        pthread_join(progress, NULL);
    }
    (void)have_reader;
    pthread_mutex_lock(&active_lock);
    active = NULL;
    pthread_mutex_unlock(&active_lock);
    report(c, c->fail.code == AGENT_OK ? "done" : "failed",
           c->fail.code == AGENT_OK ? NULL : c->fail.err.msg);
    res->device_size = c->size;
    res->chunks_total = c->chunks;
    res->chunks_zero = atomic_load(&c->chunks_zero);
    res->chunks_skipped = atomic_load(&c->chunks_skipped);
    res->chunks_put = atomic_load(&c->chunks_put);
    res->bytes_read = atomic_load(&c->bytes_read);
    res->bytes_sent = atomic_load(&c->bytes_sent);
    res->bytes_stored = atomic_load(&c->bytes_stored);
    res->url_calls = c->urls ? urlsrc_calls(c->urls) : 0;
    res->seconds = (double)(agent_mono_ms() - c->start_ms) / 1000.0;
    enum agent_exit code = c->fail.code;
    if (f)
        *f = c->fail;
    free(manifest);
    free(workers);
    free(uploaders);
    urlsrc_free(c->urls);
    hclient_free(c->progress_http);
    if (c->fd >= 0)
        close(c->fd);
    free(c->recs);
    free((void *)c->state);
    pool_destroy(&c->raw);
    pool_destroy(&c->comp);
    chan_destroy(&c->work);
    chan_destroy(&c->upload);
    pthread_cond_destroy(&c->progress_cond);
    pthread_mutex_destroy(&c->progress_lock);
    pthread_mutex_destroy(&c->bucket_lock);
    pthread_mutex_destroy(&c->fail_lock);
    free(c);
    return code;
}
