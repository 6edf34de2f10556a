/*
 * bench_api_hello: the baseline bench/api/run.sh measures xm-api against. A minimal
 * evhttp server that answers every request with 200 "hello", built the way api/server.c
 * is: XM_API_THREADS threads (default 2), each with its own event_base and evhttp on its
 * own SO_REUSEPORT listener of XM_API_ADDR:XM_API_PORT, so the kernel spreads the
 * connections the same way. What xm-api costs on top of this (routing, auth, JSON,
 * Redis round trips, logging) is what the ratio shows. Runs until SIGTERM or SIGINT.
 *
 *   bench_api_hello [ROUND_TRIPS]
 *
 * ROUND_TRIPS (default 0, at most 16) makes each request first wait for that many
 * sequential PINGs on the thread's blocking Redis connection (XM_REDIS_*), as xm-api's
 * handlers wait for theirs: the floor of a handler doing that many round trips.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "conn.h"
#include "xmalloc.h"

#define MAX_ROUND_TRIPS 16

struct hello_thread {
    pthread_t tid;
    struct event_base *base;
    struct evhttp *http;
    struct evbuffer *reply;
    redisContext *redis; /* only with round trips */
};

static long g_round_trips;

static void on_request(struct evhttp_request *req, void *arg)
{
    struct hello_thread *t = arg;
    for (long i = 0; i < g_round_trips; i++) {
        redisReply *r = redisCommand(t->redis, "PING");
        if (!r) {
            evhttp_send_reply(req, 503, "Service Unavailable", NULL);
            return;
        }
        freeReplyObject(r);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evbuffer_add(t->reply, "hello", 5);
    evhttp_send_reply(req, 200, "OK", t->reply); /* drains the buffer */
}

static void *thread_main(void *arg)
{
    struct hello_thread *t = arg;
    event_base_dispatch(t->base);
    return NULL;
}

static int thread_init(struct hello_thread *t)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)xm_config.api_port);
    if (inet_pton(AF_INET, xm_config.api_addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "bench_api_hello: XM_API_ADDR '%s' is not an IPv4 address\n",
                xm_config.api_addr);
        return -1;
    }
    if (g_round_trips) {
        struct err err = {0};
        t->redis = conn_open(&err);
        if (!t->redis) {
            fprintf(stderr, "bench_api_hello: %s\n", err.msg);
            return -1;
        }
    }
    t->reply = evbuffer_new();
    t->base = event_base_new();
    t->http = evhttp_new(t->base);
    XM_ASSERT(t->reply && t->base && t->http);
    evhttp_set_gencb(t->http, on_request, t);
    struct evconnlistener *l = evconnlistener_new_bind(
        t->base, NULL, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&sin, sizeof(sin));
    if (!l || !evhttp_bind_listener(t->http, l)) {
        fprintf(stderr, "bench_api_hello: cannot listen on %s:%lld\n", xm_config.api_addr,
                xm_config.api_port);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct err err = {0};
    if (argc > 2) {
        fprintf(stderr, "usage: bench_api_hello [ROUND_TRIPS]\n");
        return 2;
    }
    if (argc == 2) {
        char *end;
        errno = 0;
        g_round_trips = strtol(argv[1], &end, 10);
        if (errno || end == argv[1] || *end || g_round_trips < 0 ||
            g_round_trips > MAX_ROUND_TRIPS) {
            fprintf(stderr, "bench_api_hello: ROUND_TRIPS is 0..%d\n", MAX_ROUND_TRIPS);
            return 2;
        }
    }
    if (config_load(&err) < 0) {
        fprintf(stderr, "bench_api_hello: %s\n", err.msg);
        return 2;
    }
    evthread_use_pthreads();
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    size_t n = (size_t)xm_config.api_threads, started = 0;
    struct hello_thread *threads = xcalloc(n, sizeof(*threads));
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (thread_init(&threads[i]) < 0) {
            rc = 2;
            goto out;
        }
    }
    for (; started < n; started++)
        pthread_create(&threads[started].tid, NULL, thread_main, &threads[started]);
    fprintf(stderr, "bench_api_hello: listening on %s:%lld, %zu threads, %ld round trips\n",
            xm_config.api_addr, xm_config.api_port, n, g_round_trips);
    int sig = 0;
    sigwait(&stop, &sig);
    for (size_t i = 0; i < n; i++)
        event_base_loopexit(threads[i].base, NULL);
out:
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i].tid, NULL);
    for (size_t i = 0; i < n; i++) {
        struct hello_thread *t = &threads[i];
        if (t->http)
            evhttp_free(t->http);
        if (t->base)
            event_base_free(t->base);
        if (t->reply)
            evbuffer_free(t->reply);
        if (t->redis)
            redisFree(t->redis);
    }
    free(threads);
    config_release();
    return rc;
}
