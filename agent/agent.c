#include "agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rnd.h"

const char *agent_exit_str(enum agent_exit code)
{
    switch (code) {
    case AGENT_OK:
        return "ok";
    case AGENT_FAILED:
        return "failed";
    case AGENT_USAGE:
        return "usage";
    case AGENT_DEVICE:
        return "device_unreadable";
    case AGENT_REFUSED:
        return "refused";
    case AGENT_FULL:
        return "storage_full";
    case AGENT_NETWORK:
        return "network";
    case AGENT_CONSISTENCY:
        return "consistency";
    }
    return "unknown";
}

int agent_fail(struct agent_fail *f, enum agent_exit code, const char *fmt, ...)
{
    if (!f)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    f->code = code;
    f->err.kind = ERR_PERMANENT;
    vsnprintf(f->err.msg, sizeof(f->err.msg), fmt, ap);
    va_end(ap);
    return -1;
}

long agent_backoff_ms(const struct retry_policy *p, int attempt, long retry_after_s)
{
    long long ceiling = p->base_ms;
    for (int i = 1; i < attempt && ceiling < p->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > p->cap_ms)
        ceiling = p->cap_ms;
    long ms = (long)rnd_below((uint64_t)ceiling + 1);
    if (retry_after_s >= 0) {
        long ra = retry_after_s > 60 ? 60000 : retry_after_s * 1000;
        if (ra > ms)
            ms = ra;
    }
    return ms;
}

long long agent_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void agent_sleep_ms(long ms, const volatile int *stop)
{
    long long end = agent_mono_ms() + ms;
    for (;;) {
        if (stop && *stop)
            return;
        long long left = end - agent_mono_ms();
        if (left <= 0)
            return;
        if (left > 50)
            left = 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int agent_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > AGENT_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return 0;
    }
    return 1;
}

void agent_hex32(const unsigned char sha[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[sha[i] >> 4];
        out[2 * i + 1] = hex[sha[i] & 15];
    }
    out[64] = '\0';
}

void agent_error_code(const char *body, char *out, size_t size)
{
    out[0] = '\0';
    const char *p = body ? strstr(body, "<Code>") : NULL;
    if (!p)
        return;
    p += 6;
    const char *e = strstr(p, "</Code>");
    if (!e)
        return;
    size_t n = (size_t)(e - p);
    if (n >= size)
        n = size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    out[n] = '\0';
}
