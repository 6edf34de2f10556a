#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(struct err *err, enum err_kind kind, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    err->kind = kind;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(struct err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[ERR_MSG_MAX];
    char old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Cut to fit: the prefix is kept whole where it can be, the old text loses its tail. */
    size_t plen = strnlen(prefix, sizeof(err->msg) - 1);
    memcpy(err->msg, prefix, plen);
    size_t o = plen;
    if (o + 2 < sizeof(err->msg)) {
        err->msg[o++] = ':';
        err->msg[o++] = ' ';
        size_t olen = strnlen(old, sizeof(old));
        if (olen > sizeof(err->msg) - 1 - o)
            olen = sizeof(err->msg) - 1 - o;
        memcpy(err->msg + o, old, olen);
        o += olen;
    }
    err->msg[o] = '\0';
    return -1;
}

void err_clear(struct err *err)
{
    if (err) {
        err->kind = ERR_NONE;
        err->msg[0] = '\0';
    }
}

const char *err_kind_str(enum err_kind kind)
{
    switch (kind) {
    case ERR_NONE:
        return "none";
    case ERR_TRANSIENT:
        return "transient";
    case ERR_PERMANENT:
        return "permanent";
    }
    return "unknown";
}
