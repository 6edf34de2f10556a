#include "lvm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "xmalloc.h"

#define OUT_MAX 16384
#define LV_NAME_MAX 127
#define MIB (1024ULL * 1024)

extern char **environ;

struct lvm_snap {
    char vg[LV_NAME_MAX + 1];
    char lv[LV_NAME_MAX + 1];
    char name[LV_NAME_MAX + 8]; /* "<lv>_xmsnap"; the LV name is checked to fit */
    int thin;
    unsigned long long cow_bytes; /* classic: the copy-on-write area asked for */
    char *path;
};

/* ---------------------------------------------------------------- running LVM tools */

struct cmd {
    int status;        /* exit status; 127: could not be started */
    char out[OUT_MAX]; /* stdout, cut to size */
    char msg[400];     /* stderr on one line: lines trimmed, blank ones dropped, "; " */
};

/* stderr text -> one line for a message. */
static void one_line(const char *in, char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = in; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, "\n");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\r' || p[n - 1] == '\t'))
            n--;
        if (n > 0 && o + 3 < size) {
            if (o > 0) {
                memcpy(out + o, "; ", 2);
                o += 2;
            }
            size_t take = n < size - 1 - o ? n : size - 1 - o;
            memcpy(out + o, p, take);
            o += take;
            out[o] = '\0';
        }
        p += strcspn(p, "\n");
        if (*p == '\n')
            p++;
    }
}

/*
 * Run argv (argv[0] looked up in PATH; an argument vector, never a shell) with stdin
 * from /dev/null, stdout into c->out and stderr into c->msg. The child inherits the
 * agent's blocked SIGINT/SIGTERM/SIGHUP/SIGQUIT, so a signal meant for the agent (or a
 * Ctrl-C to the process group) does not cut an lvcreate or lvremove short: the agent
 * finishes the command and cleans up itself. LVM_SUPPRESS_FD_WARNINGS keeps LVM's
 * "file descriptor leaked" notes out of stderr. A command that runs longer than
 * LVM_CMD_TIMEOUT_S is killed. 0 with c->status, or -1 with err (killed by a signal,
 * timed out, no pipe or fork).
 */
static int run(char *const argv[], struct cmd *c, struct err *err)
{
    int po[2], pe[2];
    c->status = -1;
    c->out[0] = c->msg[0] = '\0';
    if (pipe2(po, O_CLOEXEC) < 0)
        return err_set(err, ERR_PERMANENT, "pipe: %s", strerror(errno));
    if (pipe2(pe, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        return err_set(err, ERR_PERMANENT, "pipe: %s", strerror(errno));
    }
    /* the environment for the child, built before fork (no allocation after it) */
    size_t n_env = 0;
    while (environ && environ[n_env])
        n_env++;
    char **envp = xcalloc(n_env + 2, sizeof(*envp));
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "LVM_SUPPRESS_FD_WARNINGS=", 25) != 0)
            envp[k++] = environ[i];
    envp[k++] = "LVM_SUPPRESS_FD_WARNINGS=1";
    envp[k] = NULL;

    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        free(envp);
        return err_set(err, ERR_PERMANENT, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    free(envp);
    close(po[1]);
    close(pe[1]);
    char errbuf[OUT_MAX];
    size_t got_out = 0, got_err = 0;
    struct pollfd p[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    long long deadline = agent_mono_ms() + (long long)LVM_CMD_TIMEOUT_S * 1000;
    int timed_out = 0;
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        long long left = deadline - agent_mono_ms();
        if (left <= 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        int r = poll(p, 2, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno != EINTR)
            break;
        for (int i = 0; r > 0 && i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[4096];
            ssize_t n = read(p[i].fd, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                continue;
            }
            char *dst = i == 0 ? c->out : errbuf;
            size_t *got = i == 0 ? &got_out : &got_err;
            size_t take = (size_t)n;
            if (*got + take > OUT_MAX - 1)
                take = OUT_MAX - 1 - *got;
            memcpy(dst + *got, buf, take);
            *got += take;
        }
    }
    for (int i = 0; i < 2; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    c->out[got_out] = '\0';
    errbuf[got_err] = '\0';
    one_line(errbuf, c->msg, sizeof(c->msg));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return err_set(err, ERR_PERMANENT, "'%s': waitpid: %s", argv[0], strerror(errno));
    if (timed_out)
        return err_set(err, ERR_PERMANENT, "'%s' did not finish within %d s (killed)%s%s", argv[0],
                       LVM_CMD_TIMEOUT_S, c->msg[0] ? ": " : "", c->msg);
    if (WIFSIGNALED(status))
        return err_set(err, ERR_PERMANENT, "'%s' was killed by signal %d%s%s", argv[0],
                       WTERMSIG(status), c->msg[0] ? ": " : "", c->msg);
    c->status = WEXITSTATUS(status);
    return 0;
}

/* Fill err for a command that ran and failed: what, then its stderr. -1. */
static int failed(struct err *err, const char *what, const char *tool, const struct cmd *c)
{
    if (c->status == 127 && !c->msg[0])
        return err_set(err, ERR_PERMANENT, "--lvm-snapshot: %s: '%s' is not installed", what, tool);
    return err_set(err, ERR_PERMANENT, "--lvm-snapshot: %s: %s exited %d: %s", what, tool,
                   c->status, c->msg[0] ? c->msg : "(nothing on stderr)");
}

/* The first non-blank line of out, leading blanks skipped (in place). */
static char *first_line(char *out)
{
    char *s = out;
    while (*s == ' ' || *s == '\t' || *s == '\n')
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

/* ---------------------------------------------------------------- what the LV is */

struct lv_info {
    char vg[LV_NAME_MAX + 1], lv[LV_NAME_MAX + 1], attr[32];
    unsigned long long size, vg_free, extent;
};

/* What lvs understands for device: "/dev/mapper/<dm name>" for any node or link of a
 * device-mapper device (/dev/dm-3 and /dev/disk/by-... links are not LV paths to lvs),
 * else device as given. */
static void lvs_name(const char *device, char *out, size_t size)
{
    snprintf(out, size, "%s", device);
    struct stat st;
    if (stat(device, &st) != 0 || !S_ISBLK(st.st_mode))
        return;
    char p[96], name[256];
    snprintf(p, sizeof(p), "/sys/dev/block/%u:%u/dm/name", major(st.st_rdev), minor(st.st_rdev));
    FILE *f = fopen(p, "re");
    if (!f)
        return;
    if (fgets(name, sizeof(name), f)) {
        name[strcspn(name, "\n")] = '\0';
        if (name[0])
            snprintf(out, size, "/dev/mapper/%s", name);
    }
    fclose(f);
}

/* lvs of one LV (a path or "vg/lv"; shown: its name in messages). 0, or -1 with err. */
static int lv_query(const char *lv, const char *shown, struct lv_info *in, struct err *err)
{
    struct cmd c;
    char *argv[] = {"lvs",
                    "--noheadings",
                    "--nosuffix",
                    "--units",
                    "b",
                    "--separator",
                    "|",
                    "-o",
                    "vg_name,lv_name,lv_size,vg_free,vg_extent_size,lv_attr",
                    (char *)lv,
                    NULL};
    if (run(argv, &c, err) < 0)
        return err_prefix(err, "--lvm-snapshot");
    if (c.status == 127 && !c.msg[0])
        return err_set(err, ERR_PERMANENT, "--lvm-snapshot: the LVM tools (lvs) are not installed");
    if (c.status != 0)
        return err_set(err, ERR_PERMANENT, "--lvm-snapshot: '%s' is not an LVM logical volume (%s)",
                       shown, c.msg[0] ? c.msg : "lvs failed");
    if (sscanf(first_line(c.out), "%127[^|]|%127[^|]|%llu|%llu|%llu|%31s", in->vg, in->lv,
               &in->size, &in->vg_free, &in->extent, in->attr) != 6)
        return err_set(err, ERR_PERMANENT,
                       "--lvm-snapshot: '%s' is not an LVM logical volume (lvs output not "
                       "understood)",
                       shown);
    if (!name_ok(in->vg) || !name_ok(in->lv) || in->extent == 0 || strlen(in->attr) < 6)
        return err_set(err, ERR_PERMANENT, "--lvm-snapshot: unexpected LVM names for '%s'", shown);
    return 0;
}

/*
 * A snapshot already called vg/name: one a killed agent left (a snapshot of this LV, not
 * open) is removed; anything else is refused rather than touched. 0, or -1 with err.
 */
static int clear_leftover(const struct lvm_snap *s, struct err *err)
{
    char full[2 * LV_NAME_MAX + 10];
    snprintf(full, sizeof(full), "%s/%s", s->vg, s->name);
    struct cmd c;
    char *probe[] = {"lvs", "--noheadings", "--separator", "|", "-o", "lv_attr,origin", full, NULL};
    if (run(probe, &c, err) < 0)
        return err_prefix(err, "--lvm-snapshot");
    if (c.status != 0)
        return 0; /* no such LV */
    char attr[32] = "", origin[LV_NAME_MAX + 1] = "";
    if (sscanf(first_line(c.out), "%31[^|]|%127s", attr, origin) < 1 || strlen(attr) < 6)
        return err_set(err, ERR_PERMANENT, "--lvm-snapshot: cannot tell what '%s' is", full);
    int snapshot = s->thin ? attr[0] == 'V' : (attr[0] == 's' || attr[0] == 'S');
    if (!snapshot || strcmp(origin, s->lv) != 0)
        return err_set(err, ERR_PERMANENT,
                       "--lvm-snapshot: '%s' exists and is not a snapshot of '%s': rename it "
                       "(the agent's snapshot needs that name)",
                       full, s->lv);
    if (attr[5] == 'o')
        return err_set(err, ERR_PERMANENT,
                       "--lvm-snapshot: snapshot '%s' exists and is open (another xm-agent "
                       "copying '%s'?)",
                       full, s->lv);
    log_warn("removing an lvm snapshot left by an earlier run", "snapshot=%s", full);
    char *rm[] = {"lvremove", "-f", full, NULL};
    if (run(rm, &c, err) < 0)
        return err_prefix(err, "--lvm-snapshot");
    if (c.status != 0)
        return failed(err, "cannot remove the leftover snapshot", "lvremove", &c);
    return 0;
}

/* ---------------------------------------------------------------- create, remove */

/* ceil(a / b) */
static unsigned long long div_up(unsigned long long a, unsigned long long b)
{
    return a / b + (a % b != 0);
}

unsigned long long lvm_cow_extents(unsigned long long lv_size, unsigned long long extent,
                                   unsigned long long free_extents, unsigned long long *wanted)
{
    /* Everything a copy-on-write area can ever hold: every 4 KiB chunk of the origin,
     * one 16-byte exception record per chunk (256 per metadata chunk) and the header
     * chunks. More is never useful (lvcreate trims it to this). */
    unsigned long long chunks = div_up(lv_size, LVM_COW_CHUNK);
    unsigned long long full =
        div_up((chunks + div_up(chunks, LVM_COW_CHUNK / 16) + 2) * LVM_COW_CHUNK, extent);
    unsigned long long want = lv_size / 100 * LVM_SNAP_PCT;
    if (want < LVM_SNAP_MIN_MIB * MIB)
        want = LVM_SNAP_MIN_MIB * MIB;
    unsigned long long n = div_up(want, extent);
    if (n > full)
        n = full;
    if (wanted)
        *wanted = n;
    return n < free_extents ? n : free_extents;
}

struct lvm_snap *lvm_snapshot_create(const char *device, struct err *err)
{
    struct lvm_snap *s = xcalloc(1, sizeof(*s));
    struct lv_info in;
    struct cmd c;
    char query[300];
    lvs_name(device, query, sizeof(query));
    if (lv_query(query, device, &in, err) < 0)
        goto bad;
    if (in.attr[0] == 's' || in.attr[0] == 'S') {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: '%s' is itself a snapshot", device);
        goto bad;
    }
    if (strlen(in.lv) + 7 > LV_NAME_MAX) {
        err_set(err, ERR_PERMANENT, "--lvm-snapshot: the LV name '%s' is too long for a snapshot",
                in.lv);
        goto bad;
    }
    s->thin = in.attr[0] == 'V';
    xstrlcpy(s->vg, in.vg, sizeof(s->vg));
    xstrlcpy(s->lv, in.lv, sizeof(s->lv));
    snprintf(s->name, sizeof(s->name), "%s_xmsnap", in.lv);
    char full[2 * LV_NAME_MAX + 10], origin[2 * LV_NAME_MAX + 10];
    snprintf(full, sizeof(full), "%s/%s", s->vg, s->name);
    snprintf(origin, sizeof(origin), "%s/%s", s->vg, s->lv);

    /* The room a classic snapshot gets: checked before anything is changed. */
    unsigned long long wanted = 0, n = 0;
    if (!s->thin) {
        n = lvm_cow_extents(in.size, in.extent, in.vg_free / in.extent, &wanted);
        if (n == 0) {
            /* no room, unless a leftover snapshot of ours holds it: checked below */
            struct cmd probe;
            char *argv[] = {"lvs", "--noheadings", "-o", "lv_name", full, NULL};
            if (run(argv, &probe, NULL) < 0 || probe.status != 0) {
                err_set(err, ERR_PERMANENT,
                        "--lvm-snapshot: volume group '%s' has no free extents for a snapshot "
                        "of '%s' (extend the volume group, or copy without --lvm-snapshot)",
                        s->vg, s->lv);
                goto bad;
            }
        }
    }
    /* A snapshot left by a killed agent would block the name and fill up: remove it. */
    if (clear_leftover(s, err) < 0)
        goto bad;
    if (!s->thin && n == 0) {
        if (lv_query(origin, device, &in, err) < 0)
            goto bad;
        n = lvm_cow_extents(in.size, in.extent, in.vg_free / in.extent, &wanted);
        if (n == 0) {
            err_set(err, ERR_PERMANENT,
                    "--lvm-snapshot: volume group '%s' has no free extents for a snapshot of "
                    "'%s' (extend the volume group, or copy without --lvm-snapshot)",
                    s->vg, s->lv);
            goto bad;
        }
    }

    char count[32];
    snprintf(count, sizeof(count), "%llu", n);
    char *create_thick[] = {"lvcreate", "-s", "-n", s->name, "-l", count, origin, NULL};
    char *create_thin[] = {"lvcreate", "-s", "-kn", "-n", s->name, origin, NULL};
    if (run(s->thin ? create_thin : create_thick, &c, err) < 0) {
        err_prefix(err, "--lvm-snapshot");
        goto bad;
    }
    if (c.status != 0) {
        failed(err, "cannot create the snapshot", "lvcreate", &c);
        goto bad;
    }
    s->path = xasprintf("/dev/%s/%s", s->vg, s->name);
    if (s->thin) {
        char *act[] = {"lvchange", "-ay", "-K", full, NULL};
        if (run(act, &c, err) < 0 || c.status != 0) {
            if (c.status > 0)
                failed(err, "cannot activate the thin snapshot", "lvchange", &c);
            else
                err_prefix(err, "--lvm-snapshot");
            lvm_snapshot_remove(s, NULL);
            return NULL;
        }
        log_info("lvm snapshot", "snapshot=%s origin=%s thin=1", full, origin);
    } else {
        s->cow_bytes = n * in.extent;
        log_info("lvm snapshot",
                 "snapshot=%s origin=%s thin=0 lv_bytes=%llu cow_bytes=%llu "
                 "extents=%llu wanted_extents=%llu free_extents=%llu",
                 full, origin, in.size, s->cow_bytes, n, wanted, in.vg_free / in.extent);
        if (n < wanted)
            log_warn("lvm snapshot smaller than wanted (few free extents): the copy fails if "
                     "more than cow_bytes are written to the LV while it runs",
                     "snapshot=%s cow_bytes=%llu wanted_bytes=%llu", full, s->cow_bytes,
                     wanted * in.extent);
    }
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

/* Log how full a classic snapshot got, or that it overflowed (and so was invalidated:
 * reading it failed, the copy did not finish). */
static void report_usage(const struct lvm_snap *s, const char *full)
{
    struct cmd c;
    char *argv[] = {"lvs", "--noheadings",         "--separator", "|",
                    "-o",  "lv_attr,snap_percent", (char *)full,  NULL};
    if (run(argv, &c, NULL) < 0 || c.status != 0)
        return;
    char attr[32] = "", pct[32] = "";
    if (sscanf(first_line(c.out), "%31[^|]|%31s", attr, pct) < 1 || strlen(attr) < 5)
        return;
    if (attr[4] == 'I' || attr[4] == 'S')
        log_error("lvm snapshot overflowed: more was written to the LV during the copy than "
                  "its copy-on-write area holds, so reading it failed",
                  "snapshot=%s cow_bytes=%llu", full, s->cow_bytes);
    else
        log_info("lvm snapshot usage", "snapshot=%s cow_bytes=%llu used_percent=%s", full,
                 s->cow_bytes, pct[0] ? pct : "0");
}

int lvm_snapshot_remove(struct lvm_snap *s, struct err *err)
{
    if (!s)
        return 0;
    char full[2 * LV_NAME_MAX + 10];
    snprintf(full, sizeof(full), "%s/%s", s->vg, s->name);
    if (!s->thin)
        report_usage(s, full);
    char *rm[] = {"lvremove", "-f", full, NULL};
    struct cmd c;
    int rc = -1;
    /* udev (blkid) may still hold the new device open for a moment: try three times */
    for (int attempt = 0; attempt < 3 && rc < 0; attempt++) {
        if (attempt)
            agent_sleep_ms(1000, NULL);
        if (run(rm, &c, err) < 0)
            err_prefix(err, "lvremove '%s'", full);
        else if (c.status != 0)
            err_set(err, ERR_PERMANENT, "lvremove '%s' exited %d: %s", full, c.status,
                    c.status == 127 && !c.msg[0] ? "not installed" : c.msg);
        else
            rc = 0;
    }
    free(s->path);
    free(s);
    return rc;
}
