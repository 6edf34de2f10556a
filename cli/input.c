/*
 * Reading what the operator hands xmctl: migration files (YAML or JSON) and secret
 * files. Everything is capped at XMCTL_MAX_FILE; a secret's buffer is the caller's to
 * wipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "secret.h"
#include "xmalloc.h"
#include "xmctl.h"

int xmctl_read_file(const char *path, size_t max, char **buf, size_t *len, struct err *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    const char *name = is_stdin ? "standard input" : path;
    *buf = NULL;
    *len = 0;
    if (fd < 0)
        return err_set(err, ERR_PERMANENT, "cannot open '%s': %s", name, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = xmalloc(cap + 1);
    int rc = -1;
    for (;;) {
        if (n == cap) {
            if (cap > max)
                break;
            /* Grow by copying, so no stale copy of a secret is left behind by realloc. */
            char *bigger = xmalloc(cap * 2 + 1);
            memcpy(bigger, b, n);
            secret_wipe(b, n);
            free(b);
            b = bigger;
            cap *= 2;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err_set(err, ERR_PERMANENT, "cannot read '%s': %s", name, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        err_set(err, ERR_PERMANENT, "'%s' is over %zu bytes", name, max);
        goto out;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
    rc = 0;
out:
    if (b) {
        secret_wipe(b, n);
        free(b);
    }
    if (!is_stdin)
        close(fd);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

json_t *xmctl_load_document(const char *path, struct err *err)
{
    char *buf = NULL;
    size_t len = 0;
    json_t *doc = NULL;
    if (xmctl_read_file(path, XMCTL_MAX_FILE, &buf, &len, err) < 0)
        return NULL;
    const char *name = strcmp(path, "-") == 0 ? "standard input" : path;
    /* JSON when the name says so, or when text that looks like JSON parses as JSON
     * (a YAML flow mapping starts with '{' too). */
    size_t lead = strspn(buf, " \t\r\n");
    json_error_t jerr;
    if (ends_with(path, ".json") || buf[lead] == '{')
        doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc && ends_with(path, ".json")) {
        err_set(err, ERR_PERMANENT, "'%s' line %d column %d: %s", name, jerr.line, jerr.column,
                jerr.text);
    } else if (!doc) {
        doc = yaml_to_json(buf, len, err);
        if (!doc)
            err_prefix(err, "'%s'", name);
    }
    if (doc && !json_is_object(doc)) {
        err_set(err, ERR_PERMANENT, "'%s' must hold one object (a mapping)", name);
        json_decref(doc);
        doc = NULL;
    }
    free(buf);
    return doc;
}
