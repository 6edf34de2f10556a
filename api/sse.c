/*
 * GET /v1/migrations/{id}/events: Server-Sent Events tailing xm:events for one
 * migration. Each event's SSE id is its stream id, so a client that reconnects with
 * Last-Event-ID resumes exactly after the last event it saw (as long as xm:events still
 * holds it: the stream is capped). Without Last-Event-ID the stream starts with the
 * migration's whole retained history.
 *
 * A stream never blocks its thread: a timer reads new entries every XM_API_SSE_POLL_MS
 * with a non-blocking XREAD. If Redis goes away the stream is ended, and the client's
 * reconnect (with Last-Event-ID) picks up where it stopped.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "job.h"
#include "keys.h"
#include "server.h"
#include "xmalloc.h"

#define SSE_BATCH 500
#define SSE_ROUNDS 20 /* batches per tick at most, so one stream cannot hog its thread */
#define SSE_PING_MS 15000

static atomic_int open_streams;

struct sse {
    struct api_req r; /* copy: the thread and the request */
    struct event *timer;
    char mig[API_PARAM_MAX];
    char cursor[64];
    long long last_write_ms;
};

static int valid_stream_id(const char *s)
{
    size_t i = 0, digits = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (!digits || digits > 20 || s[i] != '-')
        return 0;
    i++;
    size_t seq = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++, seq++;
    return seq && seq <= 20 && s[i] == '\0';
}

static void sse_free(struct sse *s)
{
    if (s->timer)
        event_free(s->timer);
    free(s);
    atomic_fetch_sub(&open_streams, 1);
}

static void on_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    struct sse *s = arg;
    /* The client went away mid-stream: evhttp has detached the unfinished request from
     * the connection and left it to us; ending it frees it. (When the server itself
     * shuts down the request is still attached, and evhttp frees it with the
     * connection.) */
    if (!evhttp_request_get_connection(s->r.req))
        evhttp_send_reply_end(s->r.req);
    sse_free(s);
}

/* End the stream from our side (Redis gone): the client reconnects and resumes. */
static void sse_end(struct sse *s)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(s->r.req);
    if (conn)
        evhttp_connection_set_closecb(conn, NULL, NULL);
    evhttp_send_reply_end(s->r.req);
    sse_free(s);
}

/* One event as "id: ..\nevent: ..\ndata: {..}\n\n". */
static void write_event(struct evbuffer *out, const redisReply *entry)
{
    const redisReply *fv = entry->element[1];
    json_t *data = json_object();
    const char *type = "event";
    for (size_t i = 0; fv->type == REDIS_REPLY_ARRAY && i + 1 < fv->elements; i += 2) {
        const char *k = fv->element[i]->str;
        json_object_set_new(data, k,
                            json_stringn(fv->element[i + 1]->str, fv->element[i + 1]->len));
        if (strcmp(k, XM_F_TYPE) == 0)
            type = fv->element[i + 1]->str;
    }
    char *text = json_dumps(data, JSON_COMPACT);
    evbuffer_add_printf(out, "id: %s\nevent: %s\ndata: %s\n\n", entry->element[0]->str, type, text);
    free(text);
    json_decref(data);
}

static int is_for(const redisReply *entry, const char *mig)
{
    const redisReply *fv = entry->element[1];
    for (size_t i = 0; fv->type == REDIS_REPLY_ARRAY && i + 1 < fv->elements; i += 2)
        if (strcmp(fv->element[i]->str, XM_F_MIGRATION) == 0)
            return strcmp(fv->element[i + 1]->str, mig) == 0;
    return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sse *s = arg;
    struct evbuffer *out = evbuffer_new();
    int failed = 0;
    for (int round = 0; round < SSE_ROUNDS; round++) {
        struct err err = {0};
        char count[16];
        snprintf(count, sizeof(count), "%d", SSE_BATCH);
        const char *argv[] = {"XREAD", "COUNT", count, "STREAMS", XM_EVENTS, s->cursor};
        redisReply *r = api_cmd(&s->r, &err, 6, argv);
        if (!r) {
            failed = 1;
            break;
        }
        size_t got = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            const redisReply *entries = r->element[0]->element[1];
            got = entries->elements;
            for (size_t i = 0; i < got; i++) {
                const redisReply *e = entries->element[i];
                xstrlcpy(s->cursor, e->element[0]->str, sizeof(s->cursor));
                if (is_for(e, s->mig))
                    write_event(out, e);
            }
        }
        freeReplyObject(r);
        if (got < SSE_BATCH)
            break;
    }
    long long now = job_now_us() / 1000;
    if (evbuffer_get_length(out) == 0 && now - s->last_write_ms >= SSE_PING_MS)
        evbuffer_add_printf(out, ": keep-alive\n\n");
    if (evbuffer_get_length(out)) {
        s->last_write_ms = now;
        evhttp_send_reply_chunk(s->r.req, out);
    }
    evbuffer_free(out);
    if (failed)
        sse_end(s);
}

void mig_events(struct api_req *r)
{
    struct err err = {0};
    char key[200];
    snprintf(key, sizeof(key), XM_MIG_FMT, r->params[0]);
    redisReply *e = api_cmd(r, &err, 2, (const char *[]){"EXISTS", key});
    if (!e) {
        api_reply_unavailable(r, &err);
        return;
    }
    long long exists = e->integer;
    freeReplyObject(e);
    if (!exists) {
        api_reply_error(r, 404, "not_found", NULL, "no migration '%s'", r->params[0]);
        return;
    }
    const char *last =
        evhttp_find_header(evhttp_request_get_input_headers(r->req), "Last-Event-ID");
    if (last && !valid_stream_id(last)) {
        api_reply_error(r, 400, "invalid_request", NULL,
                        "Last-Event-ID must be an event id such as 1700000000000-0");
        return;
    }
    if (atomic_fetch_add(&open_streams, 1) >= xm_config.api_max_sse) {
        atomic_fetch_sub(&open_streams, 1);
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "5");
        api_reply_error(r, 503, "unavailable", NULL, "too many event streams are open");
        return;
    }

    struct sse *s = xcalloc(1, sizeof(*s));
    s->r = *r;
    s->r.body = NULL;
    xstrlcpy(s->mig, r->params[0], sizeof(s->mig));
    xstrlcpy(s->cursor, last ? last : "0-0", sizeof(s->cursor));
    s->last_write_ms = job_now_us() / 1000;

    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(r->req, 200, "OK");
    r->status = 200;
    evhttp_connection_set_closecb(evhttp_request_get_connection(r->req), on_close, s);

    s->timer = event_new(api_base(r), -1, EV_PERSIST, on_tick, s);
    struct timeval tv = {.tv_sec = xm_config.api_sse_poll_ms / 1000,
                         .tv_usec = (xm_config.api_sse_poll_ms % 1000) * 1000};
    event_add(s->timer, &tv);
    event_active(s->timer, EV_TIMEOUT, 0); /* send the backlog now */
}
