/*
 * test_azure_env.c: Azurite and the ARM fake as child processes (see test_azure_env.h).
 */
#include "test_azure_env.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "harness.h"
#include "http.h"
#include "xmalloc.h"

/* Start argv with stdout on a pipe and stderr appended to log; read stdout until a line
 * containing marker arrives (into line). Returns the pid; *out_fd stays open. */
static pid_t spawn_until(char *const argv[], const char *log, const char *marker, char *line,
                         size_t size, int *out_fd)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int lf = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fds[1], STDOUT_FILENO);
        if (lf >= 0)
            dup2(lf, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        setpgid(0, 0); /* node starts helpers: stop the whole group */
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    line[0] = '\0';
    for (;;) {
        char c;
        ssize_t n = read(fds[0], &c, 1);
        if (n <= 0)
            fail_msg("%s ended before saying '%s' (log %s)", argv[0], marker, log);
        if (c != '\n') {
            if (got < size - 1)
                line[got++] = c;
            continue;
        }
        line[got] = '\0';
        if (strstr(line, marker))
            break;
        got = 0;
    }
    *out_fd = fds[0];
    return pid;
}

static void stop_group(pid_t *pid, int *fd)
{
    if (*pid > 0) {
        kill(-*pid, SIGTERM);
        stop_process(*pid, SIGTERM);
    }
    if (*fd >= 0)
        close(*fd);
    *pid = 0;
    *fd = -1;
}

int azenv_run(char *const argv[], char *const env[], const char *log, char *out, size_t size)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out ? fds[1] : fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        for (size_t i = 0; env && env[i]; i++)
            putenv(env[i]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    char sink[512];
    for (;;) { /* read to the end; what does not fit in out is dropped */
        char *dst = sink;
        size_t room = sizeof(sink);
        if (out && got < size - 1) {
            dst = out + got;
            room = size - 1 - got;
        }
        ssize_t n = read(fds[0], dst, room);
        if (n <= 0)
            break;
        if (dst != sink)
            got += (size_t)n;
    }
    if (out)
        out[got] = '\0';
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ---- Azurite ------------------------------------------------------------------------ */

int azurite_available(char *reason, size_t size)
{
    if (access(XM_AZURITE_BIN, X_OK) == 0)
        return 1;
    snprintf(reason, size,
             "Azurite is not installed at %s: run `npm ci` in tests/ "
             "(scripts/install-deps.sh does)",
             XM_AZURITE_BIN);
    return 0;
}

void azurite_require(void)
{
    char reason[512];
    if (!azurite_available(reason, sizeof(reason))) {
        fprintf(stderr, "SKIP: %s\n", reason);
        exit(77);
    }
}

void azurite_start(struct azurite *z, const char *log)
{
    char *argv[] = {XM_AZURITE_BIN,
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    "0",
                    "--loose",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--inMemoryPersistence",
                    NULL};
    char line[512];
    memset(z, 0, sizeof(*z));
    z->pid = spawn_until(argv, log, "successfully listens on", line, sizeof(line), &z->out_fd);
    const char *colon = strrchr(line, ':');
    z->port = colon ? atoi(colon + 1) : 0;
    if (z->port <= 0)
        fail_msg("no port in Azurite's line '%s'", line);
    snprintf(z->endpoint, sizeof(z->endpoint), "http://127.0.0.1:%d/" AZURITE_ACCOUNT, z->port);
}

void azurite_stop(struct azurite *z)
{
    stop_group(&z->pid, &z->out_fd);
}

/* ---- the ARM fake ------------------------------------------------------------------- */

void armfake_start(struct armfake *f, const char *blob_endpoint, const char *log,
                   const char *const *extra)
{
    const char *argv[32] = {"python3", XM_AZURE_FAKE, "--host", "127.0.0.1", "--port", "0"};
    size_t n = 6;
    if (blob_endpoint) {
        argv[n++] = "--blob-endpoint";
        argv[n++] = blob_endpoint;
    }
    for (size_t i = 0; extra && extra[i] && n < XM_ARRAY_LEN(argv) - 1; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char line[256];
    memset(f, 0, sizeof(*f));
    f->pid = spawn_until((char *const *)argv, log, "\"port\"", line, sizeof(line), &f->out_fd);
    json_t *j = json_loads(line, 0, NULL);
    f->port = (int)json_integer_value(json_object_get(j, "port"));
    json_decref(j);
    assert_true(f->port > 0);
    snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%d", f->port);
}

void armfake_stop(struct armfake *f)
{
    stop_group(&f->pid, &f->out_fd);
}

long azenv_http(const char *method, const char *url, const char *const *headers, const void *body,
                size_t len, char **out)
{
    struct http_client *c = http_client_new(&(struct http_client_opts){0});
    struct http_request req = {.method = method, .url = url, .body = body, .body_len = len};
    for (const char *const *h = headers; h && *h; h++)
        http_request_add_header(&req, "%s", *h);
    struct http_response resp;
    struct err err = {0};
    http_response_init(&resp);
    long status = http_send(c, &req, &resp, &err) < 0 ? -1 : resp.status;
    if (out) {
        *out = resp.body ? resp.body : xstrdup("");
        resp.body = NULL;
    }
    http_response_release(&resp);
    http_request_release(&req);
    http_client_free(c);
    return status;
}

static json_t *control(const struct armfake *f, const char *method, const char *path,
                       const char *body)
{
    char url[160], *text = NULL;
    snprintf(url, sizeof(url), "%s%s", f->endpoint, path);
    long status = azenv_http(method, url, NULL, body, body ? strlen(body) : 0, &text);
    if (status != 200)
        fail_msg("fake %s %s: HTTP %ld", method, path, status);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

json_t *armfake_stats(const struct armfake *f)
{
    return control(f, "GET", "/__stats", NULL);
}

void armfake_control(const struct armfake *f, const char *path, const char *body)
{
    json_decref(control(f, "POST", path, body));
}

long long armfake_creates(const struct armfake *f, const char *type)
{
    json_t *s = armfake_stats(f);
    long long n = json_integer_value(json_object_get(json_object_get(s, "creates"), type));
    json_decref(s);
    return n;
}

json_t *armfake_secret(void)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "tenant_id", FAKE_TENANT, "client_id", FAKE_CLIENT,
                     "client_secret", FAKE_SECRET, "subscription_id", FAKE_SUBSCRIPTION);
}

void azure_env_config(const struct armfake *arm, const char *blob)
{
    setenv("XM_AZURE_LOGIN_ENDPOINT", arm->endpoint, 1);
    setenv("XM_AZURE_ARM_ENDPOINT", arm->endpoint, 1);
    if (blob)
        setenv("XM_AZURE_BLOB_ENDPOINT", blob, 1);
    else
        unsetenv("XM_AZURE_BLOB_ENDPOINT");
    struct err err = {0};
    if (config_load(&err) < 0)
        fail_msg("config: %s", err.msg);
}

void azenv_start(struct azurite *z, struct armfake *f, const char *dir, const char *const *extra,
                 int blob_configured)
{
    char *log = xasprintf("%s/azurite.log", dir);
    azurite_start(z, log);
    free(log);
    log = xasprintf("%s/fake.log", dir);
    armfake_start(f, z->endpoint, log, extra);
    free(log);
    azure_env_config(f, blob_configured ? z->endpoint : NULL);
}

void azenv_stop(struct azurite *z, struct armfake *f)
{
    armfake_stop(f);
    azurite_stop(z);
    config_release();
}

void azenv_remove_dir(const char *dir)
{
    if (getenv("XM_KEEP_TEST_DIRS")) {
        fprintf(stderr, "kept %s\n", dir);
        return;
    }
    char *argv[] = {"rm", "-rf", (char *)dir, NULL};
    azenv_run(argv, NULL, "/dev/null", NULL, 0);
}
