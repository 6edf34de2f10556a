/*
 * bench_clone_sink: the storage end of bench/clone/run.sh. An HTTP/1.1 server on
 * 127.0.0.1 that reads every request body (Content-Length or chunked, answering
 * "Expect: 100-continue" as curl -T - asks), throws it away and counts it, so what is
 * measured is the sender, not the storage. A thread per connection, keep-alive.
 *
 *   bench_clone_sink [PORT]      (0 or none: a free port; prints {"port": N} on stdout)
 *   GET    /__stats  {"bytes", "requests", "first_start", "last_end"} (monotonic s: from
 *                    the first request's headers to the last body's end)
 *   DELETE /__stats  zero them
 * Anything else is a body to count; the reply is 200 with an empty body.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)
#define HEAD_MAX 65536

static atomic_ullong total_bytes, total_requests;
static pthread_mutex_t times_lock = PTHREAD_MUTEX_INITIALIZER;
static double first_start = -1, last_end = -1;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct conn {
    int fd;
    char *buf;
    size_t pos, len;
};

/* More bytes into the buffer; 0 on EOF or error. */
static int more(struct conn *c)
{
    if (c->pos == c->len)
        c->pos = c->len = 0;
    if (c->len == BUF) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    ssize_t r;
    do
        r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return 0;
    c->len += (size_t)r;
    return 1;
}

/* One line without its CRLF into line (cap bytes); 0 on EOF or overflow. */
static int get_line(struct conn *c, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char *nl = memchr(c->buf + c->pos, '\n', c->len - c->pos);
        size_t take = nl ? (size_t)(nl - (c->buf + c->pos)) + 1 : c->len - c->pos;
        if (n + take >= cap)
            return 0;
        memcpy(line + n, c->buf + c->pos, take);
        n += take;
        c->pos += take;
        if (nl) {
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
            line[n] = '\0';
            return 1;
        }
        if (!more(c))
            return 0;
    }
}

/* Consume n body bytes; 0 on EOF. */
static int skip(struct conn *c, unsigned long long n)
{
    while (n) {
        if (c->pos == c->len && !more(c))
            return 0;
        size_t take = c->len - c->pos;
        if (take > n)
            take = (size_t)n;
        c->pos += take;
        n -= take;
        atomic_fetch_add(&total_bytes, take);
    }
    return 1;
}

static int send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        s += w;
        n -= (size_t)w;
    }
    return 1;
}

static void *serve(void *arg)
{
    struct conn c = {.fd = (int)(intptr_t)arg, .buf = malloc(BUF)};
    char line[HEAD_MAX];
    while (c.buf && get_line(&c, line, sizeof(line))) {
        if (!line[0])
            continue;
        double start = mono();
        char method[16] = "", path[1024] = "";
        sscanf(line, "%15s %1023s", method, path);
        unsigned long long clen = 0;
        int chunked = 0, expect = 0, close_after = 0;
        while (get_line(&c, line, sizeof(line)) && line[0]) {
            if (strncasecmp(line, "content-length:", 15) == 0)
                clen = strtoull(line + 15, NULL, 10);
            else if (strncasecmp(line, "transfer-encoding:", 18) == 0 &&
                     strcasestr(line, "chunked"))
                chunked = 1;
            else if (strncasecmp(line, "expect:", 7) == 0 && strcasestr(line, "100-continue"))
                expect = 1;
            else if (strncasecmp(line, "connection:", 11) == 0 && strcasestr(line, "close"))
                close_after = 1;
        }
        char reply[512];
        if (strcmp(path, "/__stats") == 0) {
            if (strcmp(method, "DELETE") == 0) {
                atomic_store(&total_bytes, 0);
                atomic_store(&total_requests, 0);
                pthread_mutex_lock(&times_lock);
                first_start = last_end = -1;
                pthread_mutex_unlock(&times_lock);
            }
            char body[256];
            pthread_mutex_lock(&times_lock);
            int n =
                snprintf(body, sizeof(body),
                         "{\"bytes\": %llu, \"requests\": %llu, \"first_start\": %.6f, "
                         "\"last_end\": %.6f}\n",
                         (unsigned long long)atomic_load(&total_bytes),
                         (unsigned long long)atomic_load(&total_requests), first_start, last_end);
            pthread_mutex_unlock(&times_lock);
            int m = snprintf(reply, sizeof(reply),
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %d\r\n\r\n%s",
                             n, body);
            if (!send_all(c.fd, reply, (size_t)m))
                break;
            continue;
        }
        pthread_mutex_lock(&times_lock);
        if (first_start < 0)
            first_start = start;
        pthread_mutex_unlock(&times_lock);
        if (expect && !send_all(c.fd, "HTTP/1.1 100 Continue\r\n\r\n", 25))
            break;
        int ok = 1;
        if (chunked) {
            for (;;) {
                if (!get_line(&c, line, sizeof(line))) {
                    ok = 0;
                    break;
                }
                unsigned long long n = strtoull(line, NULL, 16);
                if (n == 0) {
                    while ((ok = get_line(&c, line, sizeof(line))) && line[0])
                        ;
                    break;
                }
                if (!skip(&c, n) || !get_line(&c, line, sizeof(line))) {
                    ok = 0;
                    break;
                }
            }
        } else {
            ok = skip(&c, clen);
        }
        if (!ok)
            break;
        double end = mono();
        pthread_mutex_lock(&times_lock);
        if (end > last_end)
            last_end = end;
        pthread_mutex_unlock(&times_lock);
        atomic_fetch_add(&total_requests, 1);
        const char *ok_reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if (!send_all(c.fd, ok_reply, strlen(ok_reply)) || close_after)
            break;
    }
    close(c.fd);
    free(c.buf);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 0;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        perror("bench_clone_sink");
        return 1;
    }
    printf("{\"port\": %d}\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            perror("accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
}
