#include "freeze.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "xmalloc.h"

#define DEVS_MAX 64
#define GUARDIAN_GRACE_S 5

struct freeze {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fds[FREEZE_MAX];
    char *mounts[FREEZE_MAX];
    dev_t devs[FREEZE_MAX];
    int n;
    int frozen; /* still frozen */
    int by_us;  /* thawed by freeze_end */
    int fired;  /* thawed by the watchdog */
    int stop;   /* the watchdog should end */
    pthread_t watchdog;
    int have_watchdog;
    pid_t guardian;
    int guardian_fd; /* write end: closing it (or dying) tells the guardian */
    long long deadline_ms;
};

/* For freeze_emergency_thaw(): the descriptors of the one active freeze. */
static volatile sig_atomic_t emergency_n;
static int emergency_fds[FREEZE_MAX];

void freeze_emergency_thaw(void)
{
    int n = emergency_n;
    for (int i = n - 1; i >= 0; i--)
        ioctl(emergency_fds[i], FITHAW, 0);
    emergency_n = 0;
}

/* ---------------------------------------------------------------- which filesystems */

static int dev_in(const dev_t *set, int n, dev_t d)
{
    for (int i = 0; i < n; i++)
        if (set[i] == d)
            return 1;
    return 0;
}

static int read_dev(const char *path, dev_t *out)
{
    FILE *f = fopen(path, "re");
    unsigned ma, mi;
    int ok = f && fscanf(f, "%u:%u", &ma, &mi) == 2;
    if (f)
        fclose(f);
    if (ok)
        *out = makedev(ma, mi);
    return ok ? 0 : -1;
}

/* Add d and, below it in sysfs, its partitions and the devices stacked on them. */
static void collect(dev_t d, dev_t *set, int *n, int depth)
{
    if (depth > 4 || *n >= DEVS_MAX || dev_in(set, *n, d))
        return;
    set[(*n)++] = d;
    char link[64], dir[PATH_MAX];
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(d), minor(d));
    if (!realpath(link, dir))
        return;
    char path[PATH_MAX + 300];
    /* partitions: subdirectories with a "partition" file */
    DIR *dp = opendir(dir);
    struct dirent *e;
    while (dp && (e = readdir(dp))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/partition", dir, e->d_name);
        if (access(path, F_OK) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s/dev", dir, e->d_name);
        dev_t p;
        if (read_dev(path, &p) == 0)
            collect(p, set, n, depth + 1);
    }
    if (dp)
        closedir(dp);
    /* holders: device-mapper (LVM, crypt) and MD on top of this one */
    snprintf(path, sizeof(path), "%s/holders", dir);
    dp = opendir(path);
    while (dp && (e = readdir(dp))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/block/%s/dev", e->d_name);
        dev_t h;
        if (read_dev(path, &h) == 0)
            collect(h, set, n, depth + 1);
    }
    if (dp)
        closedir(dp);
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* ---------------------------------------------------------------- thawing */

static void thaw_locked(struct freeze *fz)
{
    if (!fz->frozen)
        return;
    emergency_n = 0;
    for (int i = fz->n - 1; i >= 0; i--)
        if (ioctl(fz->fds[i], FITHAW, 0) < 0 && errno != EINVAL)
            log_error("thaw failed", "mount=%s error=\"%s\"", fz->mounts[i], strerror(errno));
    fz->frozen = 0;
    if (fz->guardian_fd >= 0) {
        ssize_t w = write(fz->guardian_fd, "d", 1); /* done: the guardian leaves quietly */
        (void)w;
        close(fz->guardian_fd);
        fz->guardian_fd = -1;
    }
    pthread_cond_broadcast(&fz->cond);
}

static void *watchdog_main(void *arg)
{
    struct freeze *fz = arg;
    pthread_mutex_lock(&fz->lock);
    while (fz->frozen && !fz->stop) {
        long long left = fz->deadline_ms - agent_mono_ms();
        if (left <= 0) {
            log_warn("freeze time limit reached: thawing; the copy is only crash-consistent",
                     "filesystems=%d", fz->n);
            fz->fired = 1;
            thaw_locked(fz);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long wait = left > 1000 ? 1000 : left;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&fz->cond, &fz->lock, &ts);
    }
    pthread_mutex_unlock(&fz->lock);
    return NULL;
}

/* The guardian process: thaw when the agent dies or the time limit (plus grace) passes;
 * leave quietly when told the agent thawed. Only async-signal-safe calls after fork. */
static _Noreturn void guardian_main(int rfd, const int *fds, int n, int max_s)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long end = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
                    (long long)(max_s + GUARDIAN_GRACE_S) * 1000;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long left = end - ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        if (left <= 0)
            break;
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0) {
            char c;
            ssize_t got = read(rfd, &c, 1);
            if (got == 1 && c == 'd')
                _exit(0);
            if (got < 0 && errno == EINTR)
                continue;
            break; /* EOF: the agent is gone without thawing */
        }
        if (r == 0)
            continue;
    }
    for (int i = n - 1; i >= 0; i--)
        ioctl(fds[i], FITHAW, 0);
    _exit(0);
}

/* ---------------------------------------------------------------- the freeze */

struct freeze *freeze_start(const char *device, int max_s, struct err *err)
{
    struct stat st;
    if (stat(device, &st) < 0) {
        err_set(err, ERR_PERMANENT, "--freeze: cannot stat '%s': %s", device, strerror(errno));
        return NULL;
    }
    if (!S_ISBLK(st.st_mode)) {
        err_set(err, ERR_PERMANENT, "--freeze needs a block device; '%s' is not one", device);
        return NULL;
    }
    dev_t set[DEVS_MAX];
    int n_set = 0;
    collect(st.st_rdev, set, &n_set, 0);

    struct freeze *fz = xcalloc(1, sizeof(*fz));
    pthread_mutex_init(&fz->lock, NULL);
    pthread_cond_init(&fz->cond, NULL);
    fz->guardian_fd = -1;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) {
        err_set(err, ERR_PERMANENT, "--freeze: cannot read /proc/self/mountinfo: %s",
                strerror(errno));
        goto bad;
    }
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        unsigned ma, mi;
        char mnt[4096];
        if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &ma, &mi, mnt) != 3)
            continue;
        dev_t d = makedev(ma, mi);
        if (!dev_in(set, n_set, d) || dev_in(fz->devs, fz->n, d))
            continue; /* not ours, or a bind mount of a filesystem already listed */
        if (fz->n == FREEZE_MAX) {
            fclose(f);
            err_set(err, ERR_PERMANENT, "--freeze: more than %d filesystems on '%s'", FREEZE_MAX,
                    device);
            goto bad;
        }
        unescape(mnt);
        int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            fclose(f);
            err_set(err, ERR_PERMANENT, "--freeze: cannot open mount point '%s': %s", mnt,
                    strerror(errno));
            goto bad;
        }
        fz->fds[fz->n] = fd;
        fz->devs[fz->n] = d;
        fz->mounts[fz->n++] = xstrdup(mnt);
    }
    fclose(f);
    if (fz->n == 0)
        return fz;

    /* The guardian first: from the first FIFREEZE on, something outside this process
     * must be able to thaw. */
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        err_set(err, ERR_PERMANENT, "--freeze: pipe: %s", strerror(errno));
        goto bad;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        err_set(err, ERR_PERMANENT, "--freeze: fork: %s", strerror(errno));
        goto bad;
    }
    if (pid == 0) {
        close(p[1]);
        guardian_main(p[0], fz->fds, fz->n, max_s);
    }
    close(p[0]);
    fz->guardian = pid;
    fz->guardian_fd = p[1];

    pthread_mutex_lock(&fz->lock);
    fz->frozen = 1;
    for (int i = 0; i < fz->n; i++) {
        emergency_fds[i] = fz->fds[i];
        emergency_n = i; /* only what is frozen */
        if (ioctl(fz->fds[i], FIFREEZE, 0) < 0) {
            int e = errno;
            int all = fz->n;
            fz->n = i; /* thaw what is frozen; freeze_free closes every descriptor */
            thaw_locked(fz);
            fz->n = all;
            pthread_mutex_unlock(&fz->lock);
            err_set(err, ERR_PERMANENT, "--freeze: cannot freeze '%s': %s%s", fz->mounts[i],
                    strerror(e),
                    e == EOPNOTSUPP ? " (the filesystem does not support freezing)"
                    : e == EBUSY    ? " (already frozen?)"
                                    : "");
            goto bad;
        }
        emergency_n = i + 1;
    }
    fz->deadline_ms = agent_mono_ms() + (long long)max_s * 1000;
    pthread_mutex_unlock(&fz->lock);
    if (pthread_create(&fz->watchdog, NULL, watchdog_main, fz) == 0)
        fz->have_watchdog = 1;
    return fz;

bad:
    freeze_free(fz);
    return NULL;
}

int freeze_count(const struct freeze *fz)
{
    return fz ? fz->n : 0;
}

const char *freeze_mount(const struct freeze *fz, int i)
{
    return fz && i >= 0 && i < fz->n ? fz->mounts[i] : NULL;
}

int freeze_covers(const struct freeze *fz, dev_t dev)
{
    return fz && dev_in(fz->devs, fz->n, dev);
}

int freeze_end(struct freeze *fz)
{
    if (!fz)
        return 0;
    int now = 0;
    pthread_mutex_lock(&fz->lock);
    if (fz->frozen) {
        fz->by_us = 1;
        thaw_locked(fz);
        now = 1;
    }
    pthread_mutex_unlock(&fz->lock);
    return now;
}

int freeze_intact(struct freeze *fz)
{
    pthread_mutex_lock(&fz->lock);
    int ok = !fz->fired && (fz->by_us || fz->frozen);
    pthread_mutex_unlock(&fz->lock);
    return ok;
}

void freeze_free(struct freeze *fz)
{
    if (!fz)
        return;
    pthread_mutex_lock(&fz->lock);
    thaw_locked(fz);
    fz->stop = 1;
    pthread_cond_broadcast(&fz->cond);
    pthread_mutex_unlock(&fz->lock);
    if (fz->have_watchdog)
        pthread_join(fz->watchdog, NULL);
    if (fz->guardian_fd >= 0)
        close(fz->guardian_fd);
    if (fz->guardian > 0)
        waitpid(fz->guardian, NULL, 0);
    for (int i = 0; i < fz->n; i++) {
        close(fz->fds[i]);
        free(fz->mounts[i]);
    }
    pthread_cond_destroy(&fz->cond);
    pthread_mutex_destroy(&fz->lock);
    free(fz);
}
