#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "job.h"
#include "xmalloc.h"

extern char **environ;

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int wait_until(int (*cond)(void *arg), void *arg, int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return 1;
        if (mono_ms() >= deadline)
            return 0;
        nap_ms(5);
    }
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("cannot find a free port: %s", strerror(errno));
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int redis_answers(void *arg)
{
    const struct redis_srv *s = arg;
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

static void rs_exec(struct redis_srv *s)
{
    char port[16], log[300];
    snprintf(port, sizeof(port), "%d", s->port);
    snprintf(log, sizeof(log), "%s/redis.log", s->dir);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        char *argv[] = {"redis-server",
                        "--port",
                        port,
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        s->dir,
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--save",
                        "",
                        "--logfile",
                        log,
                        "--daemonize",
                        "no",
                        NULL};
        execvp("redis-server", argv);
        _exit(127);
    }
    s->pid = pid;
    if (!wait_until(redis_answers, s, 20000))
        die("redis-server on port %d did not answer within 20 s (see %s)", s->port, log);
}

void rs_start(struct redis_srv *s)
{
    snprintf(s->dir, sizeof(s->dir), "/tmp/xm-test-XXXXXX");
    if (!mkdtemp(s->dir))
        die("mkdtemp: %s", strerror(errno));
    s->port = free_port();
    rs_exec(s);
}

void rs_restart(struct redis_srv *s)
{
    rs_exec(s);
}

void rs_stop(struct redis_srv *s, int sig)
{
    if (s->pid > 0) {
        stop_process(s->pid, sig);
        s->pid = 0;
    }
}

void rs_destroy(struct redis_srv *s)
{
    rs_stop(s, SIGKILL);
    if (getenv("XM_KEEP_TEST_DIRS"))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"rm", "-rf", s->dir, NULL};
        execvp("rm", argv);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

struct redisContext *rs_connect(const struct redis_srv *s)
{
    struct timeval tv = {10, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (!c || c->err)
        die("connect to redis on port %d: %s", s->port, c ? c->errstr : "oom");
    redisSetTimeout(c, tv);
    return c;
}

static redisReply *vcmd(redisContext *c, const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(c, fmt, ap);
    if (!r)
        die("redis command '%s' failed: %s", fmt, c->errstr);
    return r;
}

struct redisReply *rs_cmd(struct redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(c, fmt, ap);
    va_end(ap);
    return r;
}

long long rs_int(struct redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(c, fmt, ap);
    va_end(ap);
    if (r->type != REDIS_REPLY_INTEGER)
        die("'%s' answered type %d, not an integer (%s)", fmt, r->type,
            r->type == REDIS_REPLY_ERROR ? r->str : "");
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

char *rs_str(struct redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(c, fmt, ap);
    va_end(ap);
    char *s = xstrdup(r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ? r->str : "");
    freeReplyObject(r);
    return s;
}

pid_t spawn_worker(const struct redis_srv *s, const char *log_name, char *const argv[],
                   char *const env[])
{
    char log[400];
    snprintf(log, sizeof(log), "%s/%s.log", s->dir, log_name);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        char port[32];
        snprintf(port, sizeof(port), "%d", s->port);
        setenv("XM_REDIS_HOST", "127.0.0.1", 1);
        setenv("XM_REDIS_PORT", port, 1);
        for (size_t i = 0; env && env[i]; i++) {
            char *kv = xstrdup(env[i]);
            char *eq = strchr(kv, '=');
            if (eq) {
                *eq = '\0';
                setenv(kv, eq + 1, 1);
            }
            free(kv);
        }
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int wait_process(pid_t pid, int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        if (mono_ms() >= deadline)
            return -1;
        nap_ms(5);
    }
}

int stop_process(pid_t pid, int sig)
{
    kill(pid, sig);
    int status = wait_process(pid, 30000);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    return status;
}

void enqueue_job(struct redisContext *c, const char *phase, const char *migration, const char *host,
                 const char *disk, const char *payload)
{
    struct job_spec spec = {
        .migration = migration, .host = host, .disk = disk, .phase = phase, .payload = payload};
    struct cmd cmd;
    cmd_init(&cmd);
    job_spec_xadd(&cmd, &spec, job_now_us());
    redisReply *r = redisCommandArgv(c, cmd.argc, (const char **)cmd.argv, cmd.lens);
    if (!r || r->type == REDIS_REPLY_ERROR)
        die("enqueue failed: %s", r ? r->str : c->errstr);
    freeReplyObject(r);
    cmd_release(&cmd);
}

/* ---------------------------------------------------------------- helper programs */

void helper_proc_start(struct helper_proc *h, char *const argv[], const char *log_path)
{
    memset(h, 0, sizeof(*h));
    int fds[2];
    if (pipe(fds) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fds[1], STDOUT_FILENO);
        if (log >= 0)
            dup2(log, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    char line[512];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(line) - 1 && (n = read(fds[0], line + got, sizeof(line) - 1 - got)) > 0) {
        got += (size_t)n;
        if (memchr(line, '\n', got))
            break;
    }
    line[got] = '\0';
    close(fds[0]);
    const char *p = strstr(line, "\"port\":");
    int port = p ? atoi(p + strlen("\"port\":")) : 0;
    if (port <= 0 || port > 65535) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        die("%s printed no port (see %s)", argv[1] ? argv[1] : argv[0], log_path);
    }
    h->pid = pid;
    h->port = port;
    snprintf(h->endpoint, sizeof(h->endpoint), "http://127.0.0.1:%d", port);
}

void helper_proc_stop(struct helper_proc *h)
{
    if (h->pid > 0)
        stop_process(h->pid, SIGTERM);
    h->pid = 0;
}

/* ---------------------------------------------------------------- moto */

#ifndef XM_MOTO_SCRIPT
#define XM_MOTO_SCRIPT "tests/support/moto.py"
#endif

static void json_field(const char *json, const char *name, char *out, size_t size)
{
    char key[64];
    snprintf(key, sizeof(key), "\"%s\": ", name);
    const char *p = strstr(json, key);
    if (!p)
        die("moto.py printed no '%s': %s", name, json);
    p += strlen(key);
    if (*p == '"')
        p++;
    size_t n = strcspn(p, "\",}");
    if (n >= size)
        die("moto.py field '%s' too long", name);
    memcpy(out, p, n);
    out[n] = '\0';
}

void moto_start(struct moto *m, int sigcheck, const char *log_path)
{
    moto_start_on(m, sigcheck, log_path, "127.0.0.1");
}

void moto_start_on(struct moto *m, int sigcheck, const char *log_path, const char *addr)
{
    memset(m, 0, sizeof(*m));
    m->port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", m->port);
    int fds[2];
    if (pipe(fds) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        char *argv[] = {"python3", XM_MOTO_SCRIPT, "--port",
                        port,      "--log",        (char *)log_path,
                        "--host",  (char *)addr,   sigcheck ? "--sigcheck" : NULL,
                        NULL};
        execvp("python3", argv);
        _exit(127);
    }
    close(fds[1]);
    char out[1024];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(out) - 1 && (n = read(fds[0], out + got, sizeof(out) - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got == 0)
        die("moto.py failed (see %s)", log_path);
    char pidbuf[32];
    json_field(out, "pid", pidbuf, sizeof(pidbuf));
    m->pid = (pid_t)strtol(pidbuf, NULL, 10);
    json_field(out, "endpoint", m->endpoint, sizeof(m->endpoint));
    json_field(out, "access_key", m->access_key, sizeof(m->access_key));
    json_field(out, "secret_key", m->secret_key, sizeof(m->secret_key));
}

void moto_stop(struct moto *m)
{
    if (m->pid > 0) {
        kill(-m->pid, SIGTERM); /* its own session: the whole group */
        kill(m->pid, SIGTERM);
        m->pid = 0;
    }
}

void moto_reset(const struct moto *m)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/moto-api/reset", m->endpoint);
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"curl", "-s", "-o", "/dev/null", "-X", "POST", url, NULL};
        execvp("curl", argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("moto reset failed");
}
