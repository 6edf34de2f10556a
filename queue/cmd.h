/*
 * cmd: build one Redis command as an argument vector, then append it to a hiredis
 * context (pipelined) or run it. Arguments are copied in, so the caller's strings may
 * go away right after cmd_arg(); binary-safe (lengths are kept).
 */
#ifndef XM_CMD_H
#define XM_CMD_H

#include <stddef.h>

struct redisContext;

struct cmd {
    int argc;
    int cap;
    char **argv;
    size_t *lens;
};

void cmd_init(struct cmd *c);
void cmd_release(struct cmd *c);
void cmd_reset(struct cmd *c); /* drop the arguments, keep the storage */
void cmd_arg(struct cmd *c, const char *s);
void cmd_argn(struct cmd *c, const char *s, size_t len);
void cmd_argf(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cmd_argll(struct cmd *c, long long v);

/* Append to the context's output buffer (no I/O); 0, or -1 if hiredis refused. */
int cmd_append(struct redisContext *ctx, const struct cmd *c);

#endif
