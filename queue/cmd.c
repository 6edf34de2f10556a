#include "cmd.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

void cmd_init(struct cmd *c)
{
    c->argc = 0;
    c->cap = 0;
    c->argv = NULL;
    c->lens = NULL;
}

void cmd_reset(struct cmd *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    c->argc = 0;
}

void cmd_release(struct cmd *c)
{
    cmd_reset(c);
    free(c->argv);
    free(c->lens);
    cmd_init(c);
}

void cmd_argn(struct cmd *c, const char *s, size_t len)
{
    if (c->argc == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->argv = xrealloc(c->argv, sizeof(*c->argv) * (size_t)c->cap);
        c->lens = xrealloc(c->lens, sizeof(*c->lens) * (size_t)c->cap);
    }
    char *copy = xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    c->argv[c->argc] = copy;
    c->lens[c->argc] = len;
    c->argc++;
}

void cmd_arg(struct cmd *c, const char *s)
{
    cmd_argn(c, s, strlen(s));
}

void cmd_argf(struct cmd *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    XM_ASSERT(n >= 0 && (size_t)n < sizeof(buf));
    cmd_argn(c, buf, (size_t)n);
}

void cmd_argll(struct cmd *c, long long v)
{
    cmd_argf(c, "%lld", v);
}

int cmd_append(struct redisContext *ctx, const struct cmd *c)
{
    return redisAppendCommandArgv(ctx, c->argc, (const char **)c->argv, c->lens) == REDIS_OK ? 0
                                                                                             : -1;
}
