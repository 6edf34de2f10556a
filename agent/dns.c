#include "dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "rnd.h"
#include "xmalloc.h"

#define NS_MAX 3
#define SEARCH_MAX 6
#define CACHE_SLOTS 16
#define PACKET_MAX 4096

static char *resolv_path;
static char *hosts_path;

void dns_configure(const char *resolv_conf, const char *hosts)
{
    if (resolv_conf) {
        free(resolv_path);
        resolv_path = xstrdup(resolv_conf);
    }
    if (hosts) {
        free(hosts_path);
        hosts_path = xstrdup(hosts);
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- addresses */

static int literal(const char *host, int port, struct dns_addr *a)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a->len = sizeof(*v4);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*v6);
        return 1;
    }
    return 0;
}

static void set_port(struct dns_addr *a, int port)
{
    if (a->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons((uint16_t)port);
}

/* ---------------------------------------------------------------- cache */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[DNS_NAME_MAX + 1];
    struct dns_addr addrs[DNS_ADDRS_MAX];
    int n;
    long long expires_ms;
} cache[CACHE_SLOTS];

static int cache_get(const char *name, int port, struct dns_addr *out, int max)
{
    int n = 0;
    long long now = now_ms();
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (cache[i].n && cache[i].expires_ms > now && strcasecmp(cache[i].name, name) == 0) {
            for (n = 0; n < cache[i].n && n < max; n++) {
                out[n] = cache[i].addrs[n];
                set_port(&out[n], port);
            }
            break;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return n;
}

static void cache_put(const char *name, const struct dns_addr *addrs, int n, long ttl_s)
{
    if (ttl_s <= 0)
        return;
    if (ttl_s > DNS_CACHE_TTL_MAX)
        ttl_s = DNS_CACHE_TTL_MAX;
    long long now = now_ms();
    pthread_mutex_lock(&cache_lock);
    int slot = 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (strcasecmp(cache[i].name, name) == 0 || cache[i].expires_ms <= now) {
            slot = i;
            break;
        }
        if (cache[i].expires_ms < cache[slot].expires_ms)
            slot = i;
    }
    xstrlcpy(cache[slot].name, name, sizeof(cache[slot].name));
    cache[slot].n = n < DNS_ADDRS_MAX ? n : DNS_ADDRS_MAX;
    memcpy(cache[slot].addrs, addrs, (size_t)cache[slot].n * sizeof(*addrs));
    cache[slot].expires_ms = now + ttl_s * 1000;
    pthread_mutex_unlock(&cache_lock);
}

/* ---------------------------------------------------------------- config files */

/* The next blank-separated word of *p (NUL-terminated in place), or NULL at the end. */
static char *next_word(char **p)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    if (!*s) {
        *p = s;
        return NULL;
    }
    char *w = s;
    while (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
        s++;
    if (*s)
        *s++ = '\0';
    *p = s;
    return w;
}

static int hosts_lookup(const char *name, int port, struct dns_addr *out, int max)
{
    FILE *f = fopen(hosts_path ? hosts_path : "/etc/hosts", "re");
    if (!f)
        return 0;
    int n = 0;
    char line[1024];
    while (n < max && fgets(line, sizeof(line), f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = line;
        char *addr = next_word(&save);
        if (!addr)
            continue;
        struct dns_addr a;
        if (!literal(addr, port, &a))
            continue;
        for (char *w = next_word(&save); w; w = next_word(&save)) {
            if (strcasecmp(w, name) == 0) {
                out[n++] = a;
                break;
            }
        }
    }
    fclose(f);
    return n;
}

/* ---------------------------------------------------------------- resolv.conf */

struct resolv {
    struct dns_addr ns[NS_MAX];
    int n_ns;
    char search[SEARCH_MAX][DNS_NAME_MAX + 1];
    int n_search;
    int ndots, timeout_s, attempts;
};

static void resolv_load(struct resolv *r)
{
    memset(r, 0, sizeof(*r));
    r->ndots = 1;
    r->timeout_s = 5;
    r->attempts = 2;
    FILE *f = fopen(resolv_path ? resolv_path : "/etc/resolv.conf", "re");
    char line[1024];
    while (f && fgets(line, sizeof(line), f)) {
        char *save = line;
        char *key = next_word(&save);
        if (!key || key[0] == '#' || key[0] == ';')
            continue;
        if (strcmp(key, "nameserver") == 0) {
            char *v = next_word(&save);
            if (v && r->n_ns < NS_MAX && literal(v, 53, &r->ns[r->n_ns]))
                r->n_ns++;
        } else if (strcmp(key, "search") == 0 || strcmp(key, "domain") == 0) {
            r->n_search = 0; /* the last of search/domain wins, as in glibc */
            for (char *v = next_word(&save); v && r->n_search < SEARCH_MAX; v = next_word(&save))
                if (strlen(v) <= DNS_NAME_MAX)
                    xstrlcpy(r->search[r->n_search++], v, DNS_NAME_MAX + 1);
        } else if (strcmp(key, "options") == 0) {
            for (char *v = next_word(&save); v; v = next_word(&save)) {
                long x;
                char *end;
                if (strncmp(v, "ndots:", 6) == 0 && (x = strtol(v + 6, &end, 10)) >= 0 && !*end)
                    r->ndots = x > 15 ? 15 : (int)x;
                else if (strncmp(v, "timeout:", 8) == 0 && (x = strtol(v + 8, &end, 10)) >= 1 &&
                         !*end)
                    r->timeout_s = x > 30 ? 30 : (int)x;
                else if (strncmp(v, "attempts:", 9) == 0 && (x = strtol(v + 9, &end, 10)) >= 1 &&
                         !*end)
                    r->attempts = x > 5 ? 5 : (int)x;
            }
        }
    }
    if (f)
        fclose(f);
    if (r->n_ns == 0) {
        literal("127.0.0.1", 53, &r->ns[0]);
        r->n_ns = 1;
    }
}

/* ---------------------------------------------------------------- wire format */

/* Build an A query for name into q; its length, or -1 for a malformed name. */
static int build_query(const char *name, uint16_t id, unsigned char *q, size_t cap)
{
    size_t o = 0;
    if (cap < 12 + DNS_NAME_MAX + 2 + 4)
        return -1;
    const unsigned char hdr[12] = {
        (unsigned char)(id >> 8), (unsigned char)id, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, hdr, 12);
    o = 12;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n > 63)
            return -1;
        q[o++] = (unsigned char)n;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            if (!(isalnum(c) || c == '-' || c == '_'))
                return -1;
            q[o++] = c;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    q[o++] = 0;
    q[o++] = 0;
    q[o++] = 1; /* QTYPE A */
    q[o++] = 0;
    q[o++] = 1; /* QCLASS IN */
    return (int)o;
}

/* Skip a (possibly compressed) name at off; the offset after it, or -1. */
static int skip_name(const unsigned char *m, int len, int off)
{
    for (int guard = 0; guard < 128; guard++) {
        if (off >= len)
            return -1;
        unsigned c = m[off];
        if (c == 0)
            return off + 1;
        if ((c & 0xc0) == 0xc0)
            return off + 2 <= len ? off + 2 : -1;
        if (c & 0xc0)
            return -1;
        off += 1 + (int)c;
    }
    return -1;
}

enum answer { ANS_OK, ANS_NXDOMAIN, ANS_NODATA, ANS_RETRY, ANS_TRUNCATED, ANS_IGNORE };

static enum answer parse_answer(const unsigned char *m, int len, uint16_t id, int port,
                                struct dns_addr *out, int max, int *n, long *ttl_min)
{
    if (len < 12 || ((m[0] << 8) | m[1]) != id || !(m[2] & 0x80))
        return ANS_IGNORE;
    if (m[2] & 0x02)
        return ANS_TRUNCATED;
    int rcode = m[3] & 0x0f;
    if (rcode == 3)
        return ANS_NXDOMAIN;
    if (rcode != 0)
        return ANS_RETRY;
    int qd = (m[4] << 8) | m[5];
    int an = (m[6] << 8) | m[7];
    int off = 12;
    for (int i = 0; i < qd; i++) {
        off = skip_name(m, len, off);
        if (off < 0 || off + 4 > len)
            return ANS_RETRY;
        off += 4;
    }
    *n = 0;
    for (int i = 0; i < an && *n < max; i++) {
        off = skip_name(m, len, off);
        if (off < 0 || off + 10 > len)
            return ANS_RETRY;
        int type = (m[off] << 8) | m[off + 1];
        int cls = (m[off + 2] << 8) | m[off + 3];
        long ttl = (long)(((uint32_t)m[off + 4] << 24) | ((uint32_t)m[off + 5] << 16) |
                          ((uint32_t)m[off + 6] << 8) | m[off + 7]);
        int rdlen = (m[off + 8] << 8) | m[off + 9];
        off += 10;
        if (off + rdlen > len)
            return ANS_RETRY;
        if (type == 1 && cls == 1 && rdlen == 4) {
            struct sockaddr_in *v4 = (struct sockaddr_in *)&out[*n].sa;
            memset(&out[*n], 0, sizeof(out[*n]));
            v4->sin_family = AF_INET;
            v4->sin_port = htons((uint16_t)port);
            memcpy(&v4->sin_addr, m + off, 4);
            out[*n].len = sizeof(*v4);
            (*n)++;
            if (*ttl_min < 0 || ttl < *ttl_min)
                *ttl_min = ttl;
        }
        off += rdlen;
    }
    return *n ? ANS_OK : ANS_NODATA;
}

static int wait_fd(int fd, short ev, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        return r > 0;
    }
}

/* Ask over TCP (after a truncated UDP answer): length-prefixed query and answer. */
static enum answer ask_tcp(const struct dns_addr *ns, const unsigned char *q, int qlen, uint16_t id,
                           int port, struct dns_addr *out, int max, int *n, long *ttl,
                           int timeout_s)
{
    enum answer res = ANS_RETRY;
    unsigned char *m = xmalloc(65536 + 2);
    int fd = socket(ns->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    long long deadline = now_ms() + timeout_s * 1000LL;
    if (fd < 0)
        goto out;
    if (connect(fd, (const struct sockaddr *)&ns->sa, ns->len) < 0 && errno != EINPROGRESS)
        goto out;
    if (!wait_fd(fd, POLLOUT, deadline))
        goto out;
    unsigned char pre[2] = {(unsigned char)(qlen >> 8), (unsigned char)qlen};
    unsigned char buf[PACKET_MAX + 2];
    memcpy(buf, pre, 2);
    memcpy(buf + 2, q, (size_t)qlen);
    if (send(fd, buf, (size_t)qlen + 2, MSG_NOSIGNAL) != qlen + 2)
        goto out;
    size_t got = 0, want = 2;
    while (got < want) {
        if (!wait_fd(fd, POLLIN, deadline))
            goto out;
        ssize_t r = recv(fd, m + got, want - got, 0);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            goto out;
        }
        got += (size_t)r;
        if (got == 2 && want == 2)
            want = 2 + (size_t)((m[0] << 8) | m[1]);
    }
    res = parse_answer(m + 2, (int)(want - 2), id, port, out, max, n, ttl);
    if (res == ANS_TRUNCATED || res == ANS_IGNORE)
        res = ANS_RETRY;
out:
    if (fd >= 0)
        close(fd);
    free(m);
    return res;
}

/* One name against the nameservers: ANS_OK with *n addresses, or why not. */
static enum answer ask(const struct resolv *r, const char *name, int port, struct dns_addr *out,
                       int max, int *n, long *ttl)
{
    unsigned char q[PACKET_MAX];
    enum answer last = ANS_RETRY;
    int nx = 0;
    for (int attempt = 0; attempt < r->attempts; attempt++) {
        for (int s = 0; s < r->n_ns; s++) {
            uint16_t id = (uint16_t)rnd_u64();
            int qlen = build_query(name, id, q, sizeof(q));
            if (qlen < 0)
                return ANS_NXDOMAIN;
            const struct dns_addr *ns = &r->ns[s];
            int fd = socket(ns->sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            if (fd < 0)
                continue;
            if (connect(fd, (const struct sockaddr *)&ns->sa, ns->len) < 0 ||
                send(fd, q, (size_t)qlen, 0) != qlen) {
                close(fd);
                continue;
            }
            long long deadline = now_ms() + r->timeout_s * 1000LL;
            enum answer a = ANS_IGNORE;
            unsigned char m[PACKET_MAX];
            while (a == ANS_IGNORE && wait_fd(fd, POLLIN, deadline)) {
                ssize_t len = recv(fd, m, sizeof(m), 0);
                if (len < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        continue;
                    break; /* ECONNREFUSED: nothing listens there */
                }
                *ttl = -1;
                a = parse_answer(m, (int)len, id, port, out, max, n, ttl);
            }
            close(fd);
            if (a == ANS_TRUNCATED) {
                *ttl = -1;
                a = ask_tcp(ns, q, qlen, id, port, out, max, n, ttl, r->timeout_s);
            }
            if (a == ANS_OK || a == ANS_NODATA)
                return a;
            if (a == ANS_NXDOMAIN)
                nx = 1; /* authoritative no: still let another server answer this round */
            else if (a != ANS_IGNORE)
                last = a;
        }
        if (nx)
            return ANS_NXDOMAIN;
    }
    return last;
}

int dns_resolve(const char *host, int port, struct dns_addr *out, int max, struct err *err)
{
    if (max > DNS_ADDRS_MAX)
        max = DNS_ADDRS_MAX;
    if (max <= 0 || !host[0] || strlen(host) > DNS_NAME_MAX)
        return err_set(err, ERR_PERMANENT, "bad host name '%.64s'", host);
    if (literal(host, port, &out[0]))
        return 1;
    int n = hosts_lookup(host, port, out, max);
    if (n > 0)
        return n;
    if ((n = cache_get(host, port, out, max)) > 0)
        return n;

    struct resolv r;
    resolv_load(&r);
    size_t hlen = strlen(host);
    int absolute = host[hlen - 1] == '.';
    int dots = 0;
    for (const char *p = host; *p; p++)
        dots += *p == '.';
    /* The names to try, in glibc's order. */
    char names[SEARCH_MAX + 1][DNS_NAME_MAX + 2];
    int n_names = 0;
    char bare[DNS_NAME_MAX + 2];
    xstrlcpy(bare, host, sizeof(bare));
    if (absolute)
        bare[hlen - 1] = '\0';
    if (absolute || dots >= r.ndots)
        xstrlcpy(names[n_names++], bare, sizeof(names[0]));
    if (!absolute) {
        for (int i = 0; i < r.n_search; i++) {
            int w = snprintf(names[n_names], sizeof(names[0]), "%s.%s", bare, r.search[i]);
            if (w > 0 && (size_t)w <= DNS_NAME_MAX)
                n_names++;
        }
        if (dots < r.ndots)
            xstrlcpy(names[n_names++], bare, sizeof(names[0]));
    }
    int transient = 0;
    for (int i = 0; i < n_names; i++) {
        long ttl = -1;
        enum answer a = ask(&r, names[i], port, out, max, &n, &ttl);
        if (a == ANS_OK) {
            cache_put(host, out, n, ttl);
            return n;
        }
        if (a == ANS_RETRY || a == ANS_IGNORE)
            transient = 1;
    }
    if (transient)
        return err_set(err, ERR_TRANSIENT, "cannot resolve '%s': no nameserver answered", host);
    return err_set(err, ERR_PERMANENT, "cannot resolve '%s': no such host", host);
}
