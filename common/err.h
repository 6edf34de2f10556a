/*
 * err: the error every fallible call can fill.
 *
 * Fallible functions return 0 / -1 (or a pointer / NULL) and take an optional
 * `struct err *` (NULL is allowed: the caller only wants the return value). The kind is
 * the one bit that decides what happens next: a transient error (network, throttling,
 * 5xx, Redis gone) is retried with backoff; a permanent one (bad input, bad credentials,
 * unsupported OS) fails the job at once and goes to the dead-letter stream.
 *
 * The message is one lowercase line without a trailing full stop, subjects quoted with
 * single quotes, and never contains a secret. Storage is inside the struct (caller
 * storage, nothing to free).
 */
#ifndef XM_ERR_H
#define XM_ERR_H

enum err_kind {
    ERR_NONE = 0,  /* no error recorded */
    ERR_TRANSIENT, /* try again later: the same input may succeed */
    ERR_PERMANENT, /* will fail again with the same input: do not retry */
};

#define ERR_MSG_MAX 512

struct err {
    enum err_kind kind;
    char msg[ERR_MSG_MAX];
};

/* Fill err (if not NULL) and return -1, so callers can `return err_set(...)`. */
int err_set(struct err *err, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Put "prefix: " before the message already in err (if any); returns -1. */
int err_prefix(struct err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void err_clear(struct err *err);

const char *err_kind_str(enum err_kind kind);

#endif
