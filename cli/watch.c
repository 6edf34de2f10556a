/*
 * xmctl watch MIGRATION: follow a migration until it ends.
 *
 * Two sources, because the event stream says what happened but not the migration's
 * status: GET /v1/migrations/{id}/events (Server-Sent Events, api/sse.c) for what
 * happens, and GET /v1/migrations/{id} after each batch of events and every --interval
 * seconds for the status, each host's phase and each disk's bytes. A final status
 * (done, failed, partially_failed, cancelled, rolled_back) ends the watch once the stream has gone
 * quiet, with the exit code of that status (xmctl.h).
 *
 * When the stream breaks (xm-api restarted, Redis gone, the network) xmctl reconnects
 * with Last-Event-ID so no event is shown twice or lost, backing off up to 5 s; after
 * --give-up-after seconds without a working connection it exits 3.
 *
 * Output: on a terminal a block redrawn in place with a bar, rate and ETA per disk;
 * otherwise one plain line per event (and per status change); with --json each event's
 * data object as the API sent it, one per line.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "render.h"
#include "secret.h"
#include "sse.h"
#include "xmalloc.h"
#include "xmctl.h"

#define MAX_DISKS 512
#define DRAIN_IDLE_MS 1000 /* after the end: wait this long for the last events */
#define DRAIN_MAX_MS 5000
#define ERRBODY_MAX 8192
#define RATE_STALL_MS 30000
#define MIN_REFRESH_MS 250 /* a busy stream does not make a GET per event */

/* Rate of one disk, from the bytes seen at successive refreshes. */
struct rate {
    char key[330]; /* host/disk */
    double bytes;
    double at_ms;
    double bps; /* smoothed; 0 until two samples */
};

struct watch {
    struct xmctl *x;
    const char *id;
    int tty;
    long interval_ms;
    long give_up_ms;
    char status[32]; /* the migration's status at the last refresh */
    json_t *mig;     /* the migration at the last refresh */
    int events_seen; /* since the last refresh */
    char last_line[512];
    int drawn;   /* lines of the block on screen */
    int room;    /* lines the block may take */
    int skipped; /* lines left out for want of room */
    struct rate rates[MAX_DISKS];
    int n_rates;
    long long start_ms;
    /* the open stream */
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    struct sse_parser parser;
    long http_status;
    char errbody[ERRBODY_MAX];
    size_t errlen;
    int bad_stream; /* the parser refused the stream */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- lines */

/* "2026-11-26 01:02:03Z" from an event's ts (µs since the epoch, as text). */
static const char *event_time(char *buf, size_t size, const json_t *data)
{
    const char *ts = render_str(data, "ts", "0");
    return render_time(buf, size, strtoll(ts, NULL, 10) / 1000);
}

/* One event as a line for people (no newline). */
static void event_line(char *out, size_t size, const json_t *data)
{
    char t[32], b1[32], b2[32], r[32], e[32];
    const char *type = render_str(data, "type", "event");
    const char *host = render_str(data, "host", "");
    const char *disk = render_str(data, "disk", "");
    char where[300];
    snprintf(where, sizeof(where), "%s%s%s", host[0] ? host : "-", disk[0] ? "/" : "", disk);
    if (strcmp(type, "clone.progress") == 0) {
        json_t *p = json_loads(render_str(data, "progress", "{}"), 0, NULL);
        double done = (double)render_int(p, "bytes_read", 0);
        double total = (double)render_int(p, "device_size", 0);
        /* The agent's own rate and ETA, when it measured them. */
        char speed[80] = "";
        const json_t *rate = json_object_get(p, "rate_bps"), *eta = json_object_get(p, "eta_s");
        if (rate && eta)
            snprintf(speed, sizeof(speed), ", %s/s, eta %s",
                     render_bytes(r, sizeof(r), json_number_value(rate)),
                     render_duration(e, sizeof(e), json_number_value(eta)));
        snprintf(out, size, "%s %-19s %-12s %s %s of %s (%.0f%%)%s", event_time(t, sizeof(t), data),
                 type, where, render_str(p, "phase", "copy"), render_bytes(b1, sizeof(b1), done),
                 render_bytes(b2, sizeof(b2), total), total > 0 ? 100.0 * done / total : 0.0,
                 speed);
        json_decref(p);
        return;
    }
    const char *phase = render_str(data, "phase", "");
    const char *next = render_str(data, "next", "");
    const char *msg = render_str(data, "error", render_str(data, "msg", ""));
    char flow[80] = "";
    if (phase[0])
        snprintf(flow, sizeof(flow), "%s%s%s ", phase, next[0] ? " -> " : "", next);
    snprintf(out, size, "%s %-19s %-12s %s%s", event_time(t, sizeof(t), data), type, where, flow,
             msg);
}

/* What the operator has to do for a status that waits on them. */
static const char *status_hint(const char *status)
{
    return strcmp(status, "awaiting_approval") == 0
               ? " (see the findings with xmctl status, then xmctl approve)"
               : "";
}

/* ---------------------------------------------------------------- terminal block */

/* The terminal's size (a pty may not know it: 100 x 40 then). */
static void term_size(int *cols, int *rows)
{
    struct winsize ws;
    int ok = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0;
    *cols = ok && ws.ws_col > 20 ? ws.ws_col : 100;
    *rows = ok && ws.ws_row > 5 ? ws.ws_row : 40;
}

static struct rate *rate_of(struct watch *w, const char *host, const char *disk)
{
    char key[330];
    snprintf(key, sizeof(key), "%s/%s", host, disk);
    for (int i = 0; i < w->n_rates; i++)
        if (strcmp(w->rates[i].key, key) == 0)
            return &w->rates[i];
    if (w->n_rates == MAX_DISKS)
        return NULL;
    struct rate *r = &w->rates[w->n_rates++];
    memset(r, 0, sizeof(*r));
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->bytes = -1;
    return r;
}

/*
 * Fold in a sample. Progress arrives in steps (the agent reports every few seconds), so
 * the rate is measured between changes, not between refreshes; bytes going down (copy
 * done, convert starting) starts it over; no change for RATE_STALL_MS shows 0.
 */
static double rate_sample(struct rate *r, double bytes, double at)
{
    if (r->bytes < 0 || bytes < r->bytes) {
        r->bps = 0;
    } else if (bytes > r->bytes && at > r->at_ms) {
        double bps = (bytes - r->bytes) * 1000.0 / (at - r->at_ms);
        r->bps = r->bps > 0 ? 0.6 * r->bps + 0.4 * bps : bps;
    }
    if (bytes != r->bytes) {
        r->bytes = bytes;
        r->at_ms = at;
    }
    return at - r->at_ms > RATE_STALL_MS ? 0 : r->bps;
}

/* Print one line of the block, cut to the terminal's width. */
static void block_line(struct watch *w, int cols, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void block_line(struct watch *w, int cols, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (w->drawn >= w->room) {
        w->skipped++; /* a block taller than the screen could not be redrawn in place */
        return;
    }
    if (cols - 1 < (int)sizeof(line))
        line[cols - 1] = '\0';
    printf("%s\033[K\n", line);
    w->drawn++;
}

static void draw(struct watch *w)
{
    const json_t *m = w->mig;
    int cols, rows;
    term_size(&cols, &rows);
    if (w->drawn)
        printf("\033[%dA", w->drawn);
    w->drawn = 0;
    w->skipped = 0;
    w->room = rows - 3; /* and two for the "more" and "last event" lines */
    char el[32];
    block_line(w, cols, "migration %s \"%s\"  %s %s  %s%s  %s", w->id, render_str(m, "name", ""),
               render_str(m, "cloud", "?"), render_str(m, "region", "?"), w->status,
               status_hint(w->status),
               render_duration(el, sizeof(el), (double)(now_ms() - w->start_ms) / 1000));
    size_t i;
    const json_t *h;
    long long t = now_ms();
    json_array_foreach(json_object_get(m, "hosts"), i, h)
    {
        const char *name = render_str(h, "name", "?");
        const char *err = render_str(h, "error", "");
        const char *waiting = render_str(h, "waiting", "");
        char hint[200];
        if (waiting[0]) {
            err = waiting;
        } else if (strcmp(render_str(h, "status", ""), "awaiting_cutover") == 0) {
            snprintf(hint, sizeof(hint), "stop its applications, then: xmctl cutover %s %s", w->id,
                     name);
            err = hint;
        }
        char attempt[32] = "";
        if (render_int(h, "attempt", 1) > 1)
            snprintf(attempt, sizeof(attempt), "attempt %lld", render_int(h, "attempt", 1));
        block_line(w, cols, "  %-20s %-10s %-9s %s%s%s", name, render_str(h, "phase", "-"),
                   render_str(h, "status", "-"), attempt, attempt[0] && err[0] ? ": " : "", err);
        size_t j;
        const json_t *d;
        json_array_foreach(json_object_get(h, "disks"), j, d)
        {
            double done = 0, total = 0;
            const char *what = render_disk_progress(h, d, &done, &total);
            if (!what)
                continue;
            struct rate *r = rate_of(w, name, render_str(d, "id", "?"));
            double bps = r ? rate_sample(r, done, (double)t) : 0;
            char bar[64], b1[32], b2[32], rs[32], eta[32] = "-";
            if (bps > 0 && done < total)
                render_duration(eta, sizeof(eta), (total - done) / bps);
            /* The bar takes what the rest of the line (at most 80 columns) leaves. */
            int width = cols - 81 < 10 ? 10 : cols - 81 > 40 ? 40 : cols - 81;
            block_line(w, cols, "    %-8s %-7s %s %3.0f%%  %s / %s  %s/s  ETA %s",
                       render_str(d, "id", "?"), what,
                       render_bar(bar, sizeof(bar), width, done, total), 100.0 * done / total,
                       render_bytes(b1, sizeof(b1), done), render_bytes(b2, sizeof(b2), total),
                       render_bytes(rs, sizeof(rs), bps), eta);
        }
    }
    w->room += 2;
    if (w->skipped)
        block_line(w, cols, "  ... %d more lines: xmctl status %s shows them all", w->skipped,
                   w->id);
    block_line(w, cols, "  last event: %s", w->last_line[0] ? w->last_line : "-");
    printf("\033[J");
    fflush(stdout);
}

/* ---------------------------------------------------------------- events */

static void on_event(void *arg, const struct sse_event *ev)
{
    struct watch *w = arg;
    w->events_seen++;
    if (w->x->json) {
        printf("%s\n", ev->data);
        fflush(stdout);
        return;
    }
    json_t *data = json_loads(ev->data, 0, NULL);
    if (!data) {
        snprintf(w->last_line, sizeof(w->last_line), "%s (data is not JSON)", ev->type);
    } else {
        event_line(w->last_line, sizeof(w->last_line), data);
        json_decref(data);
    }
    if (!w->tty) {
        printf("%s\n", w->last_line);
        fflush(stdout);
    }
}

/* GET the migration; a change of status is shown. 0, or the exit code of a failure
 * (transport failures come back as XMCTL_UNREACHABLE without a message: the caller
 * retries). */
static int refresh(struct watch *w, int quiet_transport)
{
    char *path = xasprintf("/v1/migrations/%s", w->id);
    struct xmctl_reply r;
    struct err err = {0};
    int rc = XMCTL_OK;
    if (xmctl_call(w->x, "GET", path, NULL, &r, &err) < 0) {
        free(path);
        return quiet_transport ? XMCTL_UNREACHABLE : xmctl_fail_transport(w->x, &err);
    }
    free(path);
    if (r.status != 200 || !json_is_object(r.json)) {
        rc = r.status >= 500 && quiet_transport ? XMCTL_UNREACHABLE : xmctl_fail_reply(w->x, &r);
        xmctl_reply_release(&r);
        return rc;
    }
    const char *status = render_str(r.json, "status", "?");
    if (strcmp(status, w->status) != 0 && !w->x->json && !w->tty) {
        char t[32];
        printf("%s %-19s %s%s\n", render_time(t, sizeof(t), render_int(r.json, "updated", 0)),
               "status", status, status_hint(status));
        fflush(stdout);
    }
    snprintf(w->status, sizeof(w->status), "%s", status);
    json_decref(w->mig);
    w->mig = r.json;
    r.json = NULL;
    xmctl_reply_release(&r);
    if (w->tty)
        draw(w);
    return rc;
}

/* ---------------------------------------------------------------- the stream */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct watch *w = arg;
    size_t n = size * nmemb;
    if (!w->http_status)
        curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->http_status);
    if (w->http_status != 200) {
        size_t room = ERRBODY_MAX - 1 - w->errlen;
        size_t take = n < room ? n : room;
        memcpy(w->errbody + w->errlen, data, take);
        w->errlen += take;
        w->errbody[w->errlen] = '\0';
        return n;
    }
    if (sse_parser_feed(&w->parser, data, n) < 0) {
        w->bad_stream = 1;
        return 0;
    }
    return n;
}

static void stream_close(struct watch *w)
{
    if (w->easy) {
        curl_multi_remove_handle(w->multi, w->easy);
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
    }
    curl_slist_free_all(w->headers);
    w->headers = NULL;
}

static void stream_open(struct watch *w)
{
    char *url = xasprintf("%s/v1/migrations/%s/events", w->x->api, w->id);
    char *auth = xasprintf("Authorization: Bearer %s", w->x->token);
    w->headers = curl_slist_append(NULL, auth);
    w->headers = curl_slist_append(w->headers, "Accept: text/event-stream");
    if (w->parser.last_id[0]) {
        char resume[SSE_MAX_ID + 32];
        snprintf(resume, sizeof(resume), "Last-Event-ID: %s", w->parser.last_id);
        w->headers = curl_slist_append(w->headers, resume);
    }
    secret_wipe(auth, strlen(auth));
    free(auth);
    sse_parser_reset(&w->parser);
    w->http_status = 0;
    w->errlen = 0;
    w->bad_stream = 0;
    w->easy = curl_easy_init();
    XM_ASSERT(w->easy != NULL);
    curl_easy_setopt(w->easy, CURLOPT_URL, url);
    curl_easy_setopt(w->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(w->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, w->headers);
    curl_easy_setopt(w->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* The API sends a keep-alive every 15 s: silence for 45 s means a dead peer. */
    curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_TIME, 45L);
    curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
    curl_multi_add_handle(w->multi, w->easy);
    free(url);
}

/* The stream ended with an HTTP error (not 200): 4xx ends the watch as the API said;
 * 5xx (503: Redis down, too many streams) is retried. */
static int stream_refused(struct watch *w)
{
    struct xmctl_reply r = {.status = w->http_status,
                            .body = w->errbody,
                            .len = w->errlen,
                            .json = json_loadb(w->errbody, w->errlen, 0, NULL)};
    int rc = XMCTL_UNREACHABLE;
    if (w->http_status >= 400 && w->http_status < 500) {
        rc = xmctl_fail_reply(w->x, &r);
    } else {
        const char *msg =
            json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
        fprintf(stderr, "xmctl: event stream: %s (HTTP %ld); reconnecting\n",
                msg ? msg : "no event stream", w->http_status);
    }
    json_decref(r.json);
    return rc;
}

/*
 * Run one connection until it ends. Returns 0 when it ended and should be reopened, a
 * final exit code when the watch is over. *ok is set once the stream answered 200.
 */
static int run_stream(struct watch *w, int *ok)
{
    long long last_refresh = now_ms(), final_since = 0, last_data = now_ms();
    int rc = -1;
    stream_open(w);
    while (rc < 0) {
        int running = 0;
        int before = w->events_seen;
        curl_multi_perform(w->multi, &running);
        if (w->http_status == 200 && !*ok)
            *ok = 1;
        if (w->events_seen != before)
            last_data = now_ms();
        CURLMsg *msg;
        int left, ended = 0;
        while ((msg = curl_multi_info_read(w->multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                ended = 1;
        long long t = now_ms();
        int events = w->events_seen > 0;
        long long since = t - last_refresh;
        if (!final_since &&
            ((events && since >= MIN_REFRESH_MS) || since >= w->interval_ms || ended)) {
            w->events_seen = 0;
            last_refresh = t;
            int r = refresh(w, 1);
            if (r == XMCTL_REFUSED)
                rc = r;
            else if (render_is_final(w->status))
                final_since = t;
        }
        if (final_since &&
            (t - last_data >= DRAIN_IDLE_MS || t - final_since >= DRAIN_MAX_MS || ended)) {
            rc = XMCTL_OK; /* the caller turns the status into the exit code */
            break;
        }
        if (rc >= 0)
            break;
        if (ended) {
            if (w->http_status && w->http_status != 200)
                rc = stream_refused(w) == XMCTL_REFUSED ? XMCTL_REFUSED : 0;
            else
                rc = 0;
            if (w->bad_stream)
                fprintf(stderr,
                        "xmctl: the event stream sent a line over %d bytes; "
                        "reconnecting\n",
                        SSE_MAX_LINE);
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, 200, NULL);
    }
    stream_close(w);
    if (final_since)
        return XMCTL_OK;
    return rc;
}

static int exit_for(const char *status)
{
    if (strcmp(status, "done") == 0 || strcmp(status, "rolled_back") == 0)
        return XMCTL_OK;
    if (strcmp(status, "cancelled") == 0)
        return XMCTL_CANCELLED;
    return XMCTL_FAILED;
}

#define WATCH_USAGE "watch MIGRATION [--interval SECONDS] [--give-up-after SECONDS]"

static int parse_seconds(const char *s, long *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || v < 0.05 || v > 86400)
        return -1;
    *ms = (long)(v * 1000);
    return 0;
}

int cmd_watch(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"interval", required_argument, NULL, 'i'},
                                         {"give-up-after", required_argument, NULL, 'g'},
                                         {NULL, 0, NULL, 0}};
    struct watch *w = xcalloc(1, sizeof(*w));
    w->x = x;
    w->interval_ms = 2000;
    w->give_up_ms = 60000;
    int c, rc = XMCTL_USAGE;
    while ((c = getopt_long(argc, argv, "i:g:", opts, NULL)) != -1) {
        if ((c == 'i' && parse_seconds(optarg, &w->interval_ms) < 0) ||
            (c == 'g' && parse_seconds(optarg, &w->give_up_ms) < 0) || (c != 'i' && c != 'g')) {
            xmctl_usage(WATCH_USAGE);
            goto out;
        }
    }
    if (optind != argc - 1) {
        xmctl_usage(WATCH_USAGE);
        goto out;
    }
    w->id = argv[optind];
    if (!xmctl_valid_segment("migration id", w->id))
        goto out;
    w->tty = !x->json && isatty(STDOUT_FILENO);
    w->start_ms = now_ms();
    sse_parser_init(&w->parser, on_event, w);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    w->multi = curl_multi_init();
    /* The first look says at once whether the migration exists and the token works. */
    rc = refresh(w, 0);
    if (rc != XMCTL_OK)
        goto out;
    long long broken_since = 0;
    long backoff = 250;
    for (;;) {
        int ok = 0;
        rc = run_stream(w, &ok);
        if (rc == XMCTL_REFUSED)
            goto out;
        if (rc == XMCTL_OK && render_is_final(w->status))
            break;
        long long t = now_ms();
        if (ok) {
            broken_since = 0;
            backoff = 250;
        } else if (!broken_since) {
            broken_since = t;
        } else if (t - broken_since >= w->give_up_ms) {
            fprintf(stderr, "xmctl: no event stream from %s for %.0f s; giving up\n", x->api,
                    (double)(t - broken_since) / 1000);
            rc = XMCTL_UNREACHABLE;
            goto out;
        }
        struct timespec ts = {backoff / 1000, (backoff % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
        /* A final status may have come while the stream was down. */
        if (refresh(w, 1) == XMCTL_REFUSED) {
            rc = XMCTL_REFUSED;
            goto out;
        }
    }
    rc = exit_for(w->status);
    if (!x->json)
        printf("migration %s ended: %s\n", w->id, w->status);
out:
    if (w->multi) {
        stream_close(w);
        curl_multi_cleanup(w->multi);
    }
    sse_parser_release(&w->parser);
    json_decref(w->mig);
    free(w);
    return rc;
}
