#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "sbuf.h"
#include "xmalloc.h"

#define MAGIC "xm-agent-journal 1"
#define JOURNAL_MAX (1024ULL * 1024 * 1024) /* a larger file is not ours */

struct record {
    uint64_t index;
    uint64_t seq; /* line number: the order of the records of one index */
    uint64_t stored;
    unsigned char sha[32];
};

struct journal {
    char *path;
    int fd;
    pthread_mutex_t lock;
    struct record *old; /* sorted by index, unique (the last line for an index wins) */
    size_t n_old;
    int deferred;
    struct sbuf pending;
};

/* mkdir -p, the last component 0700. */
static int make_dirs(const char *dir, struct err *err)
{
    char *p = xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            rc =
                err_set(err, ERR_PERMANENT, "cannot create state dir '%s': %s", p, strerror(errno));
            goto out;
        }
        *s = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        rc = err_set(err, ERR_PERMANENT, "cannot create state dir '%s': %s", p, strerror(errno));
out:
    free(p);
    return rc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_record(const char *line, struct record *r)
{
    char hex[65];
    unsigned long long idx, stored;
    char extra;
    if (sscanf(line, "%llu %64s %llu %c", &idx, hex, &stored, &extra) != 3 || strlen(hex) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        r->sha[i] = (unsigned char)(hi << 4 | lo);
    }
    r->index = idx;
    r->stored = stored;
    return 0;
}

static int cmp_record(const void *a, const void *b)
{
    const struct record *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Load the records of an existing file whose header matches; 1 loaded, 0 start afresh. */
static int load(struct journal *j, const char *header)
{
    struct stat st;
    if (fstat(j->fd, &st) < 0 || st.st_size == 0 || (unsigned long long)st.st_size > JOURNAL_MAX)
        return 0;
    char *text = xmalloc((size_t)st.st_size + 1);
    ssize_t got = pread(j->fd, text, (size_t)st.st_size, 0);
    int ok = 0;
    if (got != st.st_size)
        goto out;
    text[got] = '\0';
    size_t hlen = strlen(header);
    if (strncmp(text, header, hlen) != 0 || text[hlen] != '\n')
        goto out;
    size_t cap = 0;
    /* Only whole lines count: a line without its newline was cut short (power loss); it
     * is cut off so the next record starts on a line of its own. */
    char *line = text + hlen + 1;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            if (ftruncate(j->fd, (off_t)(line - text)) < 0)
                goto out;
            break;
        }
        *nl = '\0';
        struct record r;
        r.seq = j->n_old;
        if (parse_record(line, &r) == 0) {
            if (j->n_old == cap) {
                cap = cap ? cap * 2 : 256;
                j->old = xrealloc(j->old, cap * sizeof(*j->old));
            }
            j->old[j->n_old++] = r;
        }
        line = nl + 1;
    }
    /* By index, and by line order within an index, so the last line of each wins. */
    if (j->n_old)
        qsort(j->old, j->n_old, sizeof(*j->old), cmp_record);
    struct record *tmp = j->old;
    size_t n = j->n_old;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (w && tmp[w - 1].index == tmp[i].index)
            tmp[w - 1] = tmp[i];
        else
            tmp[w++] = tmp[i];
    }
    j->n_old = w;
    ok = 1;
out:
    free(text);
    return ok;
}

struct journal *journal_open(const char *dir, const char *dest_id, uint64_t chunk_size,
                             struct err *err)
{
    if (make_dirs(dir, err) < 0)
        return NULL;
    unsigned char sha[32];
    char hex[65];
    unsigned int len = 0;
    EVP_Digest(dest_id, strlen(dest_id), sha, &len, EVP_sha256(), NULL);
    agent_hex32(sha, hex);
    hex[32] = '\0';
    struct journal *j = xcalloc(1, sizeof(*j));
    pthread_mutex_init(&j->lock, NULL);
    sbuf_init(&j->pending);
    j->path = xasprintf("%s/journal-%s", dir, hex);
    j->fd = open(j->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        err_set(err, ERR_PERMANENT, "cannot open journal '%s': %s", j->path, strerror(errno));
        journal_free(j);
        return NULL;
    }
    /* The destination id may hold anything: only its digest goes in the header. */
    char *header = xasprintf(MAGIC " %llu %s", (unsigned long long)chunk_size, hex);
    if (!load(j, header)) {
        free(j->old);
        j->old = NULL;
        j->n_old = 0;
        char *line = xasprintf("%s\n", header);
        if (ftruncate(j->fd, 0) < 0 ||
            pwrite(j->fd, line, strlen(line), 0) != (ssize_t)strlen(line) || fdatasync(j->fd) < 0) {
            err_set(err, ERR_PERMANENT, "cannot write journal '%s': %s", j->path, strerror(errno));
            free(line);
            free(header);
            journal_free(j);
            return NULL;
        }
        free(line);
    }
    free(header);
    if (lseek(j->fd, 0, SEEK_END) < 0) {
        err_set(err, ERR_PERMANENT, "cannot seek journal '%s': %s", j->path, strerror(errno));
        journal_free(j);
        return NULL;
    }
    return j;
}

void journal_free(struct journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j->old);
    sbuf_release(&j->pending);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

const char *journal_path(const struct journal *j)
{
    return j->path;
}

uint64_t journal_loaded(const struct journal *j)
{
    return j->n_old;
}

int journal_lookup(const struct journal *j, uint64_t index, unsigned char sha[32], uint64_t *stored)
{
    size_t lo = 0, hi = j->n_old;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->old[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < j->n_old && j->old[lo].index == index) {
        memcpy(sha, j->old[lo].sha, 32);
        *stored = j->old[lo].stored;
        return 1;
    }
    return 0;
}

static int write_out(struct journal *j, const char *buf, size_t len, struct err *err)
{
    while (len > 0) {
        ssize_t w = write(j->fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return err_set(err, ERR_PERMANENT, "cannot write journal '%s': %s", j->path,
                           strerror(errno));
        buf += w;
        len -= (size_t)w;
    }
    if (fdatasync(j->fd) < 0)
        return err_set(err, ERR_PERMANENT, "cannot sync journal '%s': %s", j->path,
                       strerror(errno));
    return 0;
}

int journal_append(struct journal *j, uint64_t index, const unsigned char sha[32], uint64_t stored,
                   struct err *err)
{
    char hex[65];
    char line[128];
    agent_hex32(sha, hex);
    int n = snprintf(line, sizeof(line), "%llu %s %llu\n", (unsigned long long)index, hex,
                     (unsigned long long)stored);
    int rc = 0;
    pthread_mutex_lock(&j->lock);
    if (j->deferred)
        sbuf_add(&j->pending, line, (size_t)n);
    else
        rc = write_out(j, line, (size_t)n, err);
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int journal_defer(struct journal *j, int on, struct err *err)
{
    int rc = 0;
    pthread_mutex_lock(&j->lock);
    if (on) {
        j->deferred = 1;
    } else if (j->deferred) {
        j->deferred = 0;
        if (j->pending.len)
            rc = write_out(j, j->pending.buf, j->pending.len, err);
        sbuf_release(&j->pending);
    }
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int journal_remove(struct journal *j, struct err *err)
{
    if (unlink(j->path) < 0 && errno != ENOENT)
        return err_set(err, ERR_PERMANENT, "cannot remove journal '%s': %s", j->path,
                       strerror(errno));
    return 0;
}
