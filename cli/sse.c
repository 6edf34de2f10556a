/*
 * The event-stream parser (sse.h), following the WHATWG "interpreting an event stream"
 * steps, minus "retry" (xmctl chooses its own reconnect delays).
 */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

void sse_parser_init(struct sse_parser *p, sse_event_fn fn, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->fn = fn;
    p->arg = arg;
}

void sse_parser_reset(struct sse_parser *p)
{
    p->line_len = 0;
    p->data_len = 0;
    p->has_data = 0;
    p->type[0] = '\0';
    p->last_was_cr = 0;
}

void sse_parser_release(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    memset(p, 0, sizeof(*p));
}

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void dispatch(struct sse_parser *p)
{
    if (p->has_data) {
        struct sse_event ev = {.id = p->last_id,
                               .type = p->type[0] ? p->type : "message",
                               .data = p->data ? p->data : ""};
        p->fn(p->arg, &ev);
    }
    p->data_len = 0;
    p->has_data = 0;
    p->type[0] = '\0';
}

static void field(struct sse_parser *p, const char *line, size_t len)
{
    if (len == 0) {
        dispatch(p);
        return;
    }
    if (line[0] == ':')
        return; /* a comment: the keep-alive */
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = colon ? len - name_len - 1 : 0;
    if (value_len && *value == ' ') {
        value++;
        value_len--;
    }
    if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        if (p->has_data)
            append(&p->data, &p->data_len, &p->data_cap, "\n", 1);
        append(&p->data, &p->data_len, &p->data_cap, value, value_len);
        p->has_data = 1;
    } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        size_t n = value_len < sizeof(p->type) - 1 ? value_len : sizeof(p->type) - 1;
        memcpy(p->type, value, n);
        p->type[n] = '\0';
    } else if (name_len == 2 && memcmp(line, "id", 2) == 0 && value_len < sizeof(p->last_id) &&
               !memchr(value, '\0', value_len)) {
        memcpy(p->last_id, value, value_len);
        p->last_id[value_len] = '\0';
    }
}

int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = bytes[i];
        if (c == '\n' && p->last_was_cr) {
            p->last_was_cr = 0;
            continue;
        }
        p->last_was_cr = c == '\r';
        if (c == '\n' || c == '\r') {
            field(p, p->line ? p->line : "", p->line_len);
            p->line_len = 0;
            continue;
        }
        if (p->line_len >= SSE_MAX_LINE)
            return -1;
        append(&p->line, &p->line_len, &p->line_cap, &c, 1);
    }
    return 0;
}
