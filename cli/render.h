/*
 * render: how xmctl shows things to people: times, sizes, rates, durations, progress
 * bars, and a migration as a table of hosts and disks. Everything writes into caller
 * storage or a FILE; nothing here talks to the API.
 */
#ifndef XM_CLI_RENDER_H
#define XM_CLI_RENDER_H

#include <jansson.h>
#include <stdio.h>

/* "2026-11-26 01:02:03Z" for ms since the epoch ("-" for 0). Returns buf. */
const char *render_time(char *buf, size_t size, long long ms);
/* "1.5 GiB", "512 B". Returns buf. */
const char *render_bytes(char *buf, size_t size, double bytes);
/* "1h02m", "3m05s", "42s"; "?" when negative. Returns buf. */
const char *render_duration(char *buf, size_t size, double seconds);
/* "[#####.....]" of width cells (plus the brackets) for done of total. Returns buf. */
const char *render_bar(char *buf, size_t size, int width, double done, double total);

/* An integer member of o, or def when absent or not an integer. */
long long render_int(const json_t *o, const char *key, long long def);
/* A string member of o, or def. */
const char *render_str(const json_t *o, const char *key, const char *def);

/* True for the statuses a migration ends in: done, failed, partially_failed, cancelled. */
int render_is_final(const char *status);

/*
 * Which bytes of a disk the host's phase is moving (copied during clone, converted
 * during convert) and of how many: fills *done and *total and returns the label
 * ("copy", "convert"), or NULL when the disk has no size yet.
 */
const char *render_disk_progress(const json_t *host, const json_t *disk, double *done,
                                 double *total);

/* A migration (GET /v1/migrations/{id}) as a summary and a table of hosts and disks. */
void render_migration(FILE *f, const json_t *m);

#endif
