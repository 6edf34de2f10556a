/*
 * sbuf: a growing byte buffer for building request bodies and the manifest.
 *
 * Caller storage (sbuf_init/sbuf_release); the bytes are always NUL-terminated so
 * `buf` can be used as a string. Growth goes through xrealloc (out of memory aborts).
 * Not thread-safe: one owner at a time.
 */
#ifndef XM_AGENT_SBUF_H
#define XM_AGENT_SBUF_H

#include <stddef.h>

struct sbuf {
    char *buf; /* NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
};

void sbuf_init(struct sbuf *b);
void sbuf_release(struct sbuf *b);
void sbuf_add(struct sbuf *b, const void *data, size_t len);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quotes, escapes; bytes >= 0x80 are passed as is). */
void sbuf_json_str(struct sbuf *b, const char *s);
/* Hand the buffer over (new, NUL-terminated; "" when empty) and reset b. */
char *sbuf_steal(struct sbuf *b, size_t *len);

#endif
