/*
 * xmctl login / logout: keep an API token in the login file (config.c).
 *
 * The token never comes from the command line (it would show in ps and shell
 * history): from --token-file, else standard input, prompted for without echo when that
 * is a terminal. It is checked against the API before it is kept.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "secret.h"
#include "xmalloc.h"
#include "xmctl.h"

/* A line typed on the terminal without echo (new), or NULL. */
static char *prompt_hidden(const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty)
        return NULL;
    struct termios old, quiet;
    int fd = fileno(tty), restore = 0;
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    fputs(prompt, tty);
    fflush(tty);
    char *line = xcalloc(1, XMCTL_MAX_TOKEN + 2);
    if (!fgets(line, XMCTL_MAX_TOKEN + 2, tty)) {
        free(line);
        line = NULL;
    }
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    return line;
}

/* Drop trailing whitespace (the newline of a token file). */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

int cmd_login(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"token-file", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    const char *file = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (c != 't')
            return xmctl_usage("login [--token-file FILE|-]");
        file = optarg;
    }
    if (optind != argc)
        return xmctl_usage("login [--token-file FILE|-]  (the token is never an argument)");
    char *token = NULL;
    size_t len = 0;
    struct err err = {0};
    if (!file && isatty(STDIN_FILENO)) {
        token = prompt_hidden("API token: ");
    } else if (xmctl_read_file(file ? file : "-", XMCTL_MAX_TOKEN + 2, &token, &len, &err) < 0) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        return XMCTL_USAGE;
    }
    if (!token) {
        fprintf(stderr, "xmctl: no token was given\n");
        return XMCTL_USAGE;
    }
    chomp(token);
    /* Check the token with a cheap authenticated call before keeping it. */
    if (x->token) {
        secret_wipe(x->token, strlen(x->token));
        free(x->token);
    }
    x->token = token;
    x->token_source = file ? file : "standard input";
    int rc = XMCTL_USAGE;
    char *path = xmctl_config_path(&err);
    if (!path || !xmctl_valid_token(token)) {
        fprintf(stderr, "xmctl: %s\n",
                path ? "that is not a token (printable, no spaces, one line)" : err.msg);
        goto out;
    }
    rc = xmctl_request(x, "GET", "/v1/migrations?limit=1", NULL, 0, NULL);
    if (rc != XMCTL_OK)
        goto out;
    if (xmctl_config_save(x->api, token, &err) < 0) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        rc = XMCTL_USAGE;
        goto out;
    }
    if (x->json) {
        json_t *o = json_pack("{s:s, s:s}", "api", x->api, "file", path);
        json_dumpf(o, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(o);
    } else {
        printf("logged in to %s; the token is kept in %s (mode 0600)\n", x->api, path);
    }
out:
    free(path);
    return rc;
}

int cmd_logout(struct xmctl *x, int argc, char **argv)
{
    (void)x;
    if (argc != 1)
        return xmctl_usage("logout");
    (void)argv;
    struct err err = {0};
    char *path = xmctl_config_path(&err);
    if (!path) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        return XMCTL_USAGE;
    }
    int rc = XMCTL_OK;
    if (unlink(path) < 0 && errno != ENOENT) {
        fprintf(stderr, "xmctl: cannot remove '%s': %s\n", path, strerror(errno));
        rc = XMCTL_USAGE;
    } else if (!x->json) {
        printf("the token is forgotten (%s removed)\n", path);
    }
    free(path);
    return rc;
}
