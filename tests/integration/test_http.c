/*
 * cloud/http.c against a scripted HTTP server on loopback (a child process): retries of
 * 5xx, 429 and resets with backoff, Retry-After honoured, the attempt limit, permanent
 * 4xx, the response cap, stall detection, connection reuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "http.h"
#include "xmalloc.h"

/* What the server does for the Nth request it reads. */
enum act { OK, ERR503, ERR503_RETRY1, ERR429, RESET, BIG, STALL, ERR403 };

struct server {
    pid_t pid;
    int port;
};

static void reply(int fd, const char *status, const char *extra, const char *body)
{
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%sConnection: keep-alive\r\n\r\n%s",
                     status, strlen(body), extra, body);
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
}

/* Read one request (headers and Content-Length body); 0 when the peer closed. */
static int read_request(int fd, int *connections_seen)
{
    (void)connections_seen;
    char buf[65536];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = strcasestr(buf, "Content-Length:");
        size_t want = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0);
        while (got < want) {
            n = read(fd, buf + got, sizeof(buf) - 1 - got);
            if (n <= 0)
                return 0;
            got += (size_t)n;
        }
        return 1;
    }
}

/* Serve the script; the answer to each request is script[i] (the last one repeats).
 * The number of TCP connections accepted is reported in X-Connections. */
static void serve(int lfd, const enum act *script, size_t n)
{
    size_t i = 0;
    int conns = 0;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(0);
        conns++;
        while (read_request(fd, &conns)) {
            enum act a = script[i < n ? i : n - 1];
            i++;
            char extra[64];
            snprintf(extra, sizeof(extra), "X-Connections: %d\r\n", conns);
            if (a == OK)
                reply(fd, "200 OK", extra, "ok");
            else if (a == ERR503)
                reply(fd, "503 Service Unavailable", extra, "busy");
            else if (a == ERR503_RETRY1)
                reply(fd, "503 Service Unavailable", "Retry-After: 1\r\n", "busy");
            else if (a == ERR429)
                reply(fd, "429 Too Many Requests", "Retry-After: 0\r\n", "slow down");
            else if (a == ERR403)
                reply(fd, "403 Forbidden", extra, "no");
            else if (a == BIG) {
                const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
                ssize_t w = write(fd, h, strlen(h));
                char zeros[100000] = {0};
                w = write(fd, zeros, sizeof(zeros));
                (void)w;
            } else if (a == STALL) {
                const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab";
                ssize_t w = write(fd, h, strlen(h));
                (void)w;
                sleep(30); /* the client must give up long before */
            }
            if (a == RESET)
                break;
        }
        /* RESET: close without answering; the client sees an empty reply. */
        close(fd);
    }
}

static struct server start(const enum act *script, size_t n)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    XM_ASSERT(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    XM_ASSERT(listen(lfd, 16) == 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    struct server s = {.port = ntohs(a.sin_port)};
    s.pid = fork();
    if (s.pid == 0)
        serve(lfd, script, n);
    close(lfd);
    return s;
}

struct ctx {
    char url[128];
    int builds;
};

static int build(void *arg, struct http_request *req, struct err *err)
{
    (void)err;
    struct ctx *c = arg;
    c->builds++;
    req->method = "PUT";
    req->url = c->url;
    req->body = "payload";
    req->body_len = 7;
    http_request_add_header(req, "X-Attempt: %d", c->builds);
    return 0;
}

static int run(const enum act *script, size_t n, int max_attempts, long *status, int *attempts,
               struct err *err, long *elapsed_ms, long stall_s, size_t cap)
{
    struct server s = start(script, n);
    struct http_client_opts o = {.timeout_ms = 20000, .stall_s = stall_s};
    struct http_client *c = http_client_new(&o);
    struct ctx ctx = {0};
    snprintf(ctx.url, sizeof(ctx.url), "http://127.0.0.1:%d/x", s.port);
    struct http_response resp;
    http_response_init(&resp);
    struct http_retry policy = {
        .max_attempts = max_attempts, .base_ms = 10, .cap_ms = 2000, .attempts_out = attempts};
    long long t0 = mono_ms();
    int rc;
    if (cap) {
        struct http_request req = {.method = "GET", .url = ctx.url, .max_response = cap};
        rc = http_send(c, &req, &resp, err);
        *attempts = 1;
    } else {
        rc = http_send_retry(c, build, NULL, &ctx, &policy, &resp, err);
    }
    *elapsed_ms = (long)(mono_ms() - t0);
    *status = resp.status;
    http_response_release(&resp);
    http_client_free(c);
    kill(s.pid, SIGKILL);
    waitpid(s.pid, NULL, 0);
    return rc;
}

static void test_retries_5xx_and_reset_then_succeeds(void **state)
{
    (void)state;
    static const enum act script[] = {ERR503, RESET, ERR429, OK};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 4, 5, &status, &attempts, &err, &ms, 0, 0), 0);
    assert_int_equal(status, 200);
    /* libcurl itself re-sends once when a reused connection dies before answering, so
     * the reset may cost no attempt of ours. */
    assert_in_range(attempts, 3, 4);
}

static void test_gives_up_at_the_limit(void **state)
{
    (void)state;
    static const enum act script[] = {ERR503};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 1, 3, &status, &attempts, &err, &ms, 0, 0), -1);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    assert_int_equal(attempts, 3);
    assert_non_null(strstr(err.msg, "gave up after 3 attempts"));
    assert_non_null(strstr(err.msg, "HTTP 503"));
}

static void test_retry_after_is_honoured(void **state)
{
    (void)state;
    static const enum act script[] = {ERR503_RETRY1, OK};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 2, 3, &status, &attempts, &err, &ms, 0, 0), 0);
    assert_int_equal(attempts, 2);
    assert_true(ms >= 950); /* Retry-After: 1 beats the 10 ms backoff */
}

static void test_4xx_is_permanent_at_once(void **state)
{
    (void)state;
    static const enum act script[] = {ERR403, OK};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 2, 5, &status, &attempts, &err, &ms, 0, 0), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_int_equal(attempts, 1);
    assert_int_equal(status, 403);
}

static void test_response_cap(void **state)
{
    (void)state;
    static const enum act script[] = {BIG};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 1, 1, &status, &attempts, &err, &ms, 0, 1000), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "response over 1000 bytes"));
}

static void test_stall_is_cut(void **state)
{
    (void)state;
    static const enum act script[] = {STALL};
    long status, ms;
    int attempts = 0;
    struct err err = {0};
    assert_int_equal(run(script, 1, 1, &status, &attempts, &err, &ms, 1, 0), -1);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    assert_true(ms < 10000); /* cut after about a second, not the server's 30 s */
}

static void test_refused_connection_is_transient(void **state)
{
    (void)state;
    struct http_client *c = http_client_new(NULL);
    /* A port nothing listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    struct http_request req = {.method = "GET", .url = url};
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    assert_int_equal(http_send(c, &req, &resp, &err), -1);
    assert_int_equal(err.kind, ERR_TRANSIENT);
    req.url = "ftp://127.0.0.1/";
    assert_int_equal(http_send(c, &req, &resp, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    http_response_release(&resp);
    http_client_free(c);
}

static void test_connection_is_reused(void **state)
{
    (void)state;
    static const enum act script[] = {OK};
    struct server s = start(script, 1);
    struct http_client *c = http_client_new(NULL);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    for (int i = 0; i < 3; i++) {
        struct http_request req = {.method = "GET", .url = url};
        assert_int_equal(http_send(c, &req, &resp, &err), 0);
    }
    assert_string_equal(http_response_header(&resp, "X-Connections"), "1");
    http_response_release(&resp);
    http_client_free(c);
    kill(s.pid, SIGKILL);
    waitpid(s.pid, NULL, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retries_5xx_and_reset_then_succeeds),
        cmocka_unit_test(test_gives_up_at_the_limit),
        cmocka_unit_test(test_retry_after_is_honoured),
        cmocka_unit_test(test_4xx_is_permanent_at_once),
        cmocka_unit_test(test_response_cap),
        cmocka_unit_test(test_stall_is_cut),
        cmocka_unit_test(test_refused_connection_is_transient),
        cmocka_unit_test(test_connection_is_reused),
    };
    return cmocka_run_group_tests_name("integration.http", tests, NULL, NULL);
}
