#include "lvm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "xmalloc.h"

#define OUT_MAX 16384
#define LV_NAME_MAX 127

struct lvm_snap {
    char vg[LV_NAME_MAX + 1];
    char name[LV_NAME_MAX + 8]; /* "<lv>_xmsnap"; the LV name is checked to fit */
    char *path;
};

/*
 * Run argv (argv[0] looked up in PATH) with stdout and stderr captured into out (cut to
 * size, NUL-terminated). Returns the exit status, 127 when it could not be started, or
 * -1 with err when it died by a signal.
 */
static int run(char *const argv[], char *out, size_t size, struct err *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return err_set(err, ERR_PERMANENT, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return err_set(err, ERR_PERMANENT, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    for (;;) {
        char buf[4096];
        ssize_t r = read(p[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r;
        if (got + take > size - 1)
            take = size - 1 - got;
        memcpy(out + got, buf, take);
        got += take;
    }
    out[got] = '\0';
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status))
        return err_set(err, ERR_PERMANENT, "'%s' was killed by signal %d", argv[0],
                       WTERMSIG(status));
    return WEXITSTATUS(status);
}

/* The first line of out, trimmed, for a message. */
static const char *first_line(char *out)
{
    char *s = out;
    while (*s == ' ' || *s == '\n')
        s++;
    s[strcspn(s, "\n")] = '\0';
    return s;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > LV_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

struct lvm_snap *lvm_snapshot_create(const char *device, struct err *err)
{
    char out[OUT_MAX];
    struct lvm_snap *s = xcalloc(1, sizeof(*s));
    char *lvs[] = {"lvs",
                   "--noheadings",
                   "--nosuffix",
                   "--units",
                   "b",
                   "--separator",
                   "|",
                   "-o",
                   "vg_name,lv_name,lv_size,vg_free,vg_extent_size,lv_attr",
                   (char *)device,
                   NULL};
    int st = run(lvs, out, sizeof(out), err);
    if (st < 0)
        goto bad;
    if (st == 127) {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: the LVM tools (lvs) are not installed");
        goto bad;
    }
    char vg[LV_NAME_MAX + 1], lv[LV_NAME_MAX + 1], attr[32];
    unsigned long long lv_size, vg_free, extent;
    char *line = out;
    while (*line == ' ')
        line++;
    if (st != 0 || sscanf(line, "%127[^|]|%127[^|]|%llu|%llu|%llu|%31s", vg, lv, &lv_size, &vg_free,
                          &extent, attr) != 6) {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: '%s' is not an LVM logical volume (%s)",
                device, st ? first_line(out) : "lvs output not understood");
        goto bad;
    }
    if (!name_ok(vg) || !name_ok(lv) || strlen(lv) + 7 > LV_NAME_MAX || extent == 0) {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: unexpected LVM names for '%s'", device);
        goto bad;
    }
    int thin = attr[0] == 'V';
    if (attr[0] == 's' || attr[0] == 'S') {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: '%s' is itself a snapshot", device);
        goto bad;
    }
    unsigned long long extents = (vg_free < lv_size ? vg_free : lv_size) / extent;
    if (!thin && extents == 0) {
        err_set(err, ERR_PERMANENT,
                "--lvm-snapshot: volume group '%s' has no free extents for a snapshot of '%s' "
                "(extend the volume group, or copy without --lvm-snapshot)",
                vg, lv);
        goto bad;
    }
    xstrlcpy(s->vg, vg, sizeof(s->vg));
    snprintf(s->name, sizeof(s->name), "%s_xmsnap", lv);
    char full[2 * LV_NAME_MAX + 10], origin[2 * LV_NAME_MAX + 10];
    snprintf(full, sizeof(full), "%s/%s", vg, s->name);
    snprintf(origin, sizeof(origin), "%s/%s", vg, lv);

    /* A snapshot left by a killed agent would block the name and fill up: remove it. */
    char *probe[] = {"lvs", "--noheadings", "-o", "lv_name", full, NULL};
    if (run(probe, out, sizeof(out), NULL) == 0) {
        char *rm[] = {"lvremove", "-f", full, NULL};
        run(rm, out, sizeof(out), NULL);
    }
    char count[32];
    snprintf(count, sizeof(count), "%llu", extents);
    char *create_thick[] = {"lvcreate", "-s", "-n", s->name, "-l", count, origin, NULL};
    char *create_thin[] = {"lvcreate", "-s", "-kn", "-n", s->name, origin, NULL};
    st = run(thin ? create_thin : create_thick, out, sizeof(out), err);
    if (st != 0) {
        if (st > 0)
            err_set(err, ERR_PERMANENT, "--lvm-snapshot: lvcreate failed for '%s': %s", origin,
                    st == 127 ? "lvcreate not installed" : first_line(out));
        goto bad;
    }
    if (thin) {
        char *act[] = {"lvchange", "-ay", "-K", full, NULL};
        run(act, out, sizeof(out), NULL);
    }
    s->path = xasprintf("/dev/%s/%s", vg, s->name);
    /* udev creates the node shortly after lvcreate returns */
    for (int i = 0; i < 100; i++) {
        struct stat sb;
        if (stat(s->path, &sb) == 0 && S_ISBLK(sb.st_mode))
            return s;
        agent_sleep_ms(100, NULL);
    }
    err_set(err, ERR_PERMANENT, "--lvm-snapshot: '%s' did not appear", s->path);
    lvm_snapshot_remove(s, NULL);
    return NULL;
bad:
    free(s->path);
    free(s);
    return NULL;
}

const char *lvm_snapshot_path(const struct lvm_snap *s)
{
    return s->path;
}

int lvm_snapshot_remove(struct lvm_snap *s, struct err *err)
{
    if (!s)
        return 0;
    char full[2 * LV_NAME_MAX + 10];
    char out[OUT_MAX];
    snprintf(full, sizeof(full), "%s/%s", s->vg, s->name);
    char *rm[] = {"lvremove", "-f", full, NULL};
    int st = run(rm, out, sizeof(out), err);
    int rc = 0;
    if (st != 0) {
        if (st > 0)
            err_set(err, ERR_PERMANENT, "lvremove '%s' failed: %s", full, first_line(out));
        rc = -1;
    }
    free(s->path);
    free(s);
    return rc;
}
