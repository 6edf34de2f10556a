/*
 * sse: a Server-Sent Events parser (the WHATWG event-stream format) fed with whatever
 * bytes the transport hands over, in pieces of any size.
 *
 * Lines end in LF, CRLF or CR; "field: value" lines build an event and a blank line
 * dispatches it (only when it has data); lines starting with ':' are comments
 * (keep-alives). The last "id" seen is kept across events, as a reconnecting client
 * must send it back in Last-Event-ID. A line over SSE_MAX_LINE fails the feed.
 */
#ifndef XM_CLI_SSE_H
#define XM_CLI_SSE_H

#include <stddef.h>

#define SSE_MAX_LINE (1024 * 1024)
#define SSE_MAX_ID 128

/* One event; every pointer is borrowed for the duration of the callback. */
struct sse_event {
    const char *id;   /* the last event id ("" when none yet) */
    const char *type; /* "message" when the event named none */
    const char *data; /* data lines joined with '\n' */
};

typedef void (*sse_event_fn)(void *arg, const struct sse_event *ev);

struct sse_parser {
    sse_event_fn fn;
    void *arg;
    char *line; /* the line being read (owned) */
    size_t line_len, line_cap;
    int last_was_cr; /* a CR ended the last line: skip an LF right after it */
    char *data;      /* data of the event being built (owned) */
    size_t data_len, data_cap;
    int has_data;
    char type[64];
    char last_id[SSE_MAX_ID];
};

void sse_parser_init(struct sse_parser *p, sse_event_fn fn, void *arg);
/* Feed bytes; events are dispatched from inside. 0, or -1 when a line is too long. */
int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t len);
/* Forget a half-read event (after a reconnect); the last id is kept. */
void sse_parser_reset(struct sse_parser *p);
void sse_parser_release(struct sse_parser *p);

#endif
