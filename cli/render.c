/*
 * Formatting for people (render.h). Binary units (KiB, MiB) because disks are sized
 * in them; UTC everywhere, marked with a Z, like every log line of xmigrate.
 */
#include "render.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *render_time(char *buf, size_t size, long long ms)
{
    if (ms <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%SZ", &tm);
    return buf;
}

const char *render_bytes(char *buf, size_t size, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (bytes >= 1024 && u < 5) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%.0f B", bytes);
    else
        snprintf(buf, size, "%.1f %s", bytes, units[u]);
    return buf;
}

const char *render_duration(char *buf, size_t size, double seconds)
{
    if (seconds < 0 || seconds > 1e9) {
        snprintf(buf, size, "?");
        return buf;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, size, "%lds", s);
    return buf;
}

const char *render_bar(char *buf, size_t size, int width, double done, double total)
{
    if (width + 3 > (int)size)
        width = (int)size - 3;
    int full = total > 0 ? (int)(width * (done / total)) : 0;
    if (full > width)
        full = width;
    if (full < 0)
        full = 0;
    buf[0] = '[';
    for (int i = 0; i < width; i++)
        buf[1 + i] = i < full ? '#' : '.';
    buf[width + 1] = ']';
    buf[width + 2] = '\0';
    return buf;
}

long long render_int(const json_t *o, const char *key, long long def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : def;
}

const char *render_str(const json_t *o, const char *key, const char *def)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : def;
}

int render_is_final(const char *status)
{
    static const char *const final[] = {"done", "failed", "partially_failed", "cancelled",
                                        "rolled_back"};
    for (size_t i = 0; status && i < sizeof(final) / sizeof(final[0]); i++)
        if (strcmp(status, final[i]) == 0)
            return 1;
    return 0;
}

const char *render_disk_progress(const json_t *host, const json_t *disk, double *done,
                                 double *total)
{
    long long size = render_int(disk, "size", -1);
    if (size <= 0)
        return NULL;
    const char *phase = render_str(host, "phase", "");
    const char *status = render_str(host, "status", "");
    *total = (double)size;
    if (strcmp(phase, "convert") == 0 || strcmp(phase, "import") == 0 ||
        strcmp(status, "done") == 0) {
        long long conv = render_int(disk, "bytes_converted", -1);
        if (conv >= 0 || strcmp(phase, "convert") == 0) {
            *done = (double)(conv < 0 ? 0 : conv);
            return "convert";
        }
    }
    *done = (double)render_int(disk, "bytes_copied", 0);
    return "copy";
}

void render_migration(FILE *f, const json_t *m)
{
    char t1[32], t2[32];
    fprintf(f, "migration %s \"%s\"\n", render_str(m, "id", "?"), render_str(m, "name", ""));
    fprintf(f, "  cloud     %s %s\n", render_str(m, "cloud", "?"), render_str(m, "region", "?"));
    fprintf(f, "  status    %s%s\n", render_str(m, "status", "?"),
            json_is_true(json_object_get(m, "auto_approve")) ? " (auto-approve)" : "");
    fprintf(f, "  created   %s   updated %s\n",
            render_time(t1, sizeof(t1), render_int(m, "created", 0)),
            render_time(t2, sizeof(t2), render_int(m, "updated", 0)));
    if (json_object_get(m, "blockers") || json_object_get(m, "warnings"))
        fprintf(f, "  findings  %lld blockers, %lld warnings\n", render_int(m, "blockers", 0),
                render_int(m, "warnings", 0));
    size_t i;
    const json_t *v;
    if (json_array_size(json_object_get(m, "overrides"))) {
        fprintf(f, "  overrode ");
        json_array_foreach(json_object_get(m, "overrides"), i, v)
            fprintf(f, " %s", json_string_value(v));
        fprintf(f, "\n");
    }
    if (json_object_get(m, "approved_by"))
        fprintf(f, "  approved  by %s\n", render_str(m, "approved_by", ""));
    const json_t *hosts = json_object_get(m, "hosts");
    fprintf(f, "  hosts     %zu\n\n", json_array_size(hosts));
    fprintf(f, "  %-20s %-10s %-9s %-7s %s\n", "HOST", "PHASE", "STATUS", "ATTEMPT", "DETAIL");
    const json_t *h;
    json_array_foreach(hosts, i, h)
    {
        char attempt[24] = "-";
        long long a = render_int(h, "attempt", 0);
        if (a > 0)
            snprintf(attempt, sizeof(attempt), "%lld", a);
        fprintf(f, "  %-20s %-10s %-9s %-7s %s\n", render_str(h, "name", "?"),
                render_str(h, "phase", "-"), render_str(h, "status", "-"), attempt,
                render_str(h, "waiting", render_str(h, "error", render_str(h, "address", ""))));
        size_t j;
        const json_t *fi;
        json_array_foreach(json_object_get(h, "findings"), j, fi)
            fprintf(f, "    %-7s %s: %s\n", render_str(fi, "severity", "finding"),
                    render_str(fi, "name", "?"), render_str(fi, "message", ""));
        const json_t *d;
        json_array_foreach(json_object_get(h, "disks"), j, d)
        {
            double done = 0, total = 0;
            char b1[32], b2[32];
            const char *what = render_disk_progress(h, d, &done, &total);
            if (what)
                fprintf(f, "    disk %-15s %s %s of %s (%.0f%%)\n", render_str(d, "id", "?"), what,
                        render_bytes(b1, sizeof(b1), done), render_bytes(b2, sizeof(b2), total),
                        100.0 * done / total);
            else
                fprintf(f, "    disk %-15s size not known yet\n", render_str(d, "id", "?"));
        }
    }
    const json_t *res = json_object_get(m, "resources");
    if (json_array_size(res)) {
        fprintf(f, "\n  resources\n");
        const json_t *r;
        json_array_foreach(res, i, r) fprintf(f, "    %s\n", json_string_value(r));
    }
}
