#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

const char *log_level_str(enum log_level level)
{
    if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
        return level_names[level];
    return "unknown";
}

int log_set_level(const char *name)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            log_min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_quote(char *buf, unsigned size, const char *value)
{
    unsigned o = 0;
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = value ? value : ""; *p && o + 3 < size; p++) {
        if (*p == '"' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* Append s to out, escaping control characters so the event stays on one line. */
static size_t append_escaped(char *out, size_t o, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && o + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

void log_write(enum log_level level, const char *msg, const char *kvfmt, ...)
{
    char kv[2048];
    char qmsg[512];
    char line[4096];
    struct timeval tv;
    struct tm tm;
    char ts[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    va_list ap;
    va_start(ap, kvfmt);
    vsnprintf(kv, sizeof(kv), kvfmt, ap);
    va_end(ap);

    int n = snprintf(line, sizeof(line), "ts=%s.%03ldZ level=%s msg=", ts,
                     (long)(tv.tv_usec / 1000), log_level_str(level));
    size_t o = n > 0 ? (size_t)n : 0;
    o = append_escaped(line, o, sizeof(line), log_quote(qmsg, sizeof(qmsg), msg));
    if (kv[0] && o + 2 < sizeof(line)) {
        line[o++] = ' ';
        o = append_escaped(line, o, sizeof(line), kv);
    }
    line[o++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, o);
    (void)w;
}
