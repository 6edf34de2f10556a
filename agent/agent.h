/*
 * agent: what every part of xm-agent shares: the exit codes (the contract with the clone
 * playbook, documented in README.md), the failure record that carries one, the retry
 * timing, and the identifiers of the disk being copied.
 *
 * A failure is decided once, where it happens, with the exit code that says what failed
 * and a message (struct err) that says why; the first one recorded wins and stops the
 * copy. Nothing here logs.
 */
#ifndef XM_AGENT_AGENT_H
#define XM_AGENT_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define AGENT_VERSION "0.1.0"
#define AGENT_ID_MAX 128 /* bytes in a migration, host or disk id */

enum agent_exit {
    AGENT_OK = 0,          /* the manifest is written: a complete copy */
    AGENT_FAILED = 1,      /* anything else (state dir unwritable, internal) */
    AGENT_USAGE = 2,       /* bad command line or token file */
    AGENT_DEVICE = 3,      /* the device cannot be opened or read */
    AGENT_REFUSED = 4,     /* a URL was refused (expired, revoked) or the token revoked */
    AGENT_FULL = 5,        /* the storage is full or over quota (507, EntityTooLarge) */
    AGENT_NETWORK = 6,     /* the network gave up after every retry */
    AGENT_CONSISTENCY = 7, /* --freeze or --lvm-snapshot could not be set up */
};

const char *agent_exit_str(enum agent_exit code);

struct agent_fail {
    enum agent_exit code; /* AGENT_OK: nothing failed */
    struct err err;
};

/* Record code and a message in f (if not NULL); returns -1. */
int agent_fail(struct agent_fail *f, enum agent_exit code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* How requests are retried: attempts in all, and full-jitter exponential backoff. */
struct retry_policy {
    int max_attempts;
    int base_ms;
    int cap_ms;
};

/* The pause before attempt number `attempt` (1 = the first retry): uniform in
 * [0, min(cap, base * 2^(attempt-1))], but at least retry_after_s when the server said so
 * (-1: it did not), capped at 60 s. */
long agent_backoff_ms(const struct retry_policy *p, int attempt, long retry_after_s);

/* Sleep ms milliseconds unless *stop becomes non-zero (polled every 50 ms). */
void agent_sleep_ms(long ms, const volatile int *stop);

long long agent_mono_ms(void);

/* 1 when s is a usable id: [A-Za-z0-9][A-Za-z0-9._-]*, at most AGENT_ID_MAX bytes. */
int agent_id_ok(const char *s);

/* Lowercase hex of 32 bytes into out (65 bytes incl. NUL). */
void agent_hex32(const unsigned char sha[32], char out[65]);

/* The S3/Azure error code in an XML reply body ("<Code>X</Code>") into out, "" if none. */
void agent_error_code(const char *body, char *out, size_t size);

#endif
