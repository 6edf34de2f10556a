/*
 * Where xmctl finds the API and its token, and the login file that keeps them.
 *
 * The login file is JSON {"api": URL, "token": TOKEN}, mode 0600 in a 0700 folder,
 * written to a temporary file and renamed so a crash never leaves half a token. A file
 * that others can read is refused rather than used: the token is a bearer secret.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "secret.h"
#include "xmalloc.h"
#include "xmctl.h"

char *xmctl_config_path(struct err *err)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && xdg[0] == '/')
        return xasprintf("%s/xmctl/config.json", xdg);
    const char *home = getenv("HOME");
    if (home && home[0] == '/')
        return xasprintf("%s/.config/xmctl/config.json", home);
    err_set(err, ERR_PERMANENT, "neither XDG_CONFIG_HOME nor HOME is set to an absolute path");
    return NULL;
}

int xmctl_valid_token(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > XMCTL_MAX_TOKEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~')
            return 0;
    return 1;
}

static int valid_api(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0) && strlen(u) < 1024 &&
           !strpbrk(u, " \t\r\n");
}

static char *api_trimmed(const char *u)
{
    char *s = xstrdup(u);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* Read the login file into *api and *token (new, either may stay NULL). A missing
 * file is not an error. */
static int load_file(char **api, char **token, struct err *err)
{
    int rc = -1;
    char *path = xmctl_config_path(NULL), *buf = NULL;
    json_t *doc = NULL;
    size_t len = 0;
    struct stat st;
    if (!path || stat(path, &st) < 0) {
        rc = 0; /* no login file */
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        err_set(err, ERR_PERMANENT,
                "'%s' can be read by others (mode %03o); run chmod 600 on it or log in again", path,
                (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if (xmctl_read_file(path, 64 * 1024, &buf, &len, err) < 0)
        goto out;
    json_error_t jerr;
    doc = json_loadb(buf, len, 0, &jerr);
    const char *a = NULL, *t = NULL;
    if (!doc || json_unpack(doc, "{s?s, s?s}", "api", &a, "token", &t) < 0) {
        err_set(err, ERR_PERMANENT, "'%s' is not an xmctl login file; log in again", path);
        goto out;
    }
    if (a)
        *api = xstrdup(a);
    if (t)
        *token = xstrdup(t);
    rc = 0;
out:
    if (buf) {
        secret_wipe(buf, len);
        free(buf);
    }
    json_decref(doc); /* the token's copy inside jansson is freed unwiped: no API for it */
    free(path);
    return rc;
}

int xmctl_config_load(struct xmctl *x, const char *api_flag, struct err *err)
{
    char *file_api = NULL, *file_token = NULL;
    int rc = -1;
    if (load_file(&file_api, &file_token, err) < 0)
        goto out;
    const char *api = api_flag;
    if (!api)
        api = getenv("XMCTL_API");
    if (!api || !*api)
        api = file_api;
    if (!api)
        api = XMCTL_DEFAULT_API;
    if (!valid_api(api)) {
        err_set(err, ERR_PERMANENT, "the API URL '%s' must start with http:// or https://", api);
        goto out;
    }
    x->api = api_trimmed(api);
    x->api_flag_given = api_flag != NULL;
    const char *env_token = getenv("XMCTL_TOKEN");
    if (env_token && *env_token) {
        x->token = xstrdup(env_token);
        x->token_source = "XMCTL_TOKEN";
    } else if (file_token) {
        x->token = file_token;
        file_token = NULL;
        x->token_source = "the login file";
    }
    if (x->token && !xmctl_valid_token(x->token)) {
        err_set(err, ERR_PERMANENT, "the token in %s is not a token (printable, no spaces)",
                x->token_source);
        goto out;
    }
    rc = 0;
out:
    free(file_api);
    if (file_token) {
        secret_wipe(file_token, strlen(file_token));
        free(file_token);
    }
    return rc;
}

/* mkdir -p for the folder of path, 0700 for what it creates. */
static int make_parents(char *path, struct err *err)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0700);
        int e = errno;
        *p = '/';
        if (r < 0 && e != EEXIST)
            return err_set(err, ERR_PERMANENT, "cannot create folder for '%s': %s", path,
                           strerror(e));
    }
    return 0;
}

int xmctl_config_save(const char *api, const char *token, struct err *err)
{
    int rc = -1, fd = -1;
    char *path = xmctl_config_path(err), *tmp = NULL, *text = NULL;
    if (!path)
        return -1;
    if (!xmctl_valid_token(token)) {
        err_set(err, ERR_PERMANENT, "that is not a token (printable, no spaces, 1..%d bytes)",
                XMCTL_MAX_TOKEN);
        goto out;
    }
    if (make_parents(path, err) < 0)
        goto out;
    tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        err_set(err, ERR_PERMANENT, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    json_t *doc = json_pack("{s:s, s:s}", "api", api, "token", token);
    text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err_set(err, ERR_PERMANENT, "cannot write '%s': %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
        err_set(err, ERR_PERMANENT, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        err_set(err, ERR_PERMANENT, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0 && tmp)
        unlink(tmp);
    if (text) {
        secret_wipe(text, strlen(text));
        free(text);
    }
    free(tmp);
    free(path);
    return rc;
}

void xmctl_release(struct xmctl *x)
{
    if (x->token) {
        secret_wipe(x->token, strlen(x->token));
        free(x->token);
    }
    free(x->api);
    http_client_free(x->http);
    memset(x, 0, sizeof(*x));
}
