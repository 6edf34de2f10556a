/*
 * xmctl: the operator's command-line client of xm-api (DESIGN.md section 1).
 *
 * xmctl holds no state of its own beyond the login file: every command is one or a few
 * calls to the HTTP API, and what the API answers is what xmctl shows. Human output
 * goes to stdout, diagnostics to stderr; with --json stdout carries the API's JSON
 * bodies exactly as they arrived (one per line), error bodies included, so scripts
 * never parse human text.
 *
 * Exit codes (a contract for scripts; README.md repeats them):
 *   0  ok (watch: the migration reached done)
 *   1  the API refused the request (4xx); its error message is printed as it words it
 *   2  usage or bad input: arguments, the migration or secret file, no token to use
 *   3  the API could not be reached or failed itself (5xx, 503 unavailable)
 *   4  watch: the migration ended failed or partially_failed
 *   5  watch: the migration ended cancelled
 *
 * Secrets (the API token, credential secrets) are never read from the command line and
 * never printed; they come from files, stdin or the environment.
 */
#ifndef XM_XMCTL_H
#define XM_XMCTL_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"

enum xmctl_exit {
    XMCTL_OK = 0,
    XMCTL_REFUSED = 1,     /* 4xx from the API */
    XMCTL_USAGE = 2,       /* bad arguments or input, nothing sent */
    XMCTL_UNREACHABLE = 3, /* no answer, or 5xx */
    XMCTL_FAILED = 4,      /* watch: failed or partially_failed */
    XMCTL_CANCELLED = 5,   /* watch: cancelled */
};

#define XMCTL_DEFAULT_API "http://127.0.0.1:8080"
/* Caps on what xmctl reads: a migration file or secret (the API's default body cap),
 * and a token. */
#define XMCTL_MAX_FILE (1024 * 1024)
#define XMCTL_MAX_TOKEN 512

struct http_client;

/* One invocation: where the API is, the token and the output mode. */
struct xmctl {
    char *api;                /* base URL without a trailing '/' (new) */
    char *token;              /* bearer token (new, wiped on release), NULL when none is known */
    const char *token_source; /* where the token came from, for messages */
    int json;                 /* --json: stdout is the API's JSON */
    int api_flag_given;       /* --api was on the command line */
    struct http_client *http;
};

/* An API answer (any status). */
struct xmctl_reply {
    long status;
    char *body; /* new, NUL-terminated, NULL when empty */
    size_t len;
    json_t *json; /* new: the body parsed, NULL when it is not JSON */
};

/* ---- config.c: where the API and the token come from ---- */

/*
 * Fill x->api and x->token: --api (api_flag, may be NULL) over XMCTL_API over the
 * login file over the default; XMCTL_TOKEN over the login file. A login file readable
 * by others is refused. 0, or -1 with a permanent err (exit 2).
 */
int xmctl_config_load(struct xmctl *x, const char *api_flag, struct err *err);
/* The login file's path: $XDG_CONFIG_HOME/xmctl/config.json, else
 * ~/.config/xmctl/config.json (new string), or NULL with err when neither is set. */
char *xmctl_config_path(struct err *err);
/* A token is printable ASCII without spaces, 1..XMCTL_MAX_TOKEN bytes: it goes into a
 * header line, so nothing else may pass. */
int xmctl_valid_token(const char *t);
/* Write the login file (mode 0600, folder 0700) atomically. 0 or -1 with err. */
int xmctl_config_save(const char *api, const char *token, struct err *err);
void xmctl_release(struct xmctl *x);

/* ---- client.c: calling the API ---- */

/*
 * One request to x->api + path (path starts with '/'), with the bearer token when
 * there is one and body (borrowed, may be NULL) as JSON. 0 when the API answered,
 * whatever the status (reply filled; release it); -1 with err when it did not.
 */
int xmctl_call(struct xmctl *x, const char *method, const char *path, const json_t *body,
               struct xmctl_reply *reply, struct err *err);
void xmctl_reply_release(struct xmctl_reply *r);

/*
 * Say why a request failed, as the API words it: on stderr "xmctl: <message>" (with
 * the status and code), and with --json the API's body on stdout. Returns the exit
 * code: XMCTL_REFUSED for 4xx, XMCTL_UNREACHABLE for 5xx.
 */
int xmctl_fail_reply(const struct xmctl *x, const struct xmctl_reply *r);
/* The API did not answer: message on stderr; returns XMCTL_UNREACHABLE. */
int xmctl_fail_transport(const struct xmctl *x, const struct err *err);

/*
 * The common case: call, and on a 2xx give the parsed body in *out (new; may be NULL
 * when the body is empty) and, with --json, print the body as it came when print is
 * set. Any other outcome is reported as above. Returns the exit code (0 on success).
 */
int xmctl_request(struct xmctl *x, const char *method, const char *path, const json_t *body,
                  int print, json_t **out);

/* A path segment the API accepts (1..159 of [A-Za-z0-9._:-]); else a usage message
 * naming what (e.g. "migration id") and 0. */
int xmctl_valid_segment(const char *what, const char *s);

/* ---- input.c: files and secrets ---- */

/*
 * Read a whole file ("-" is stdin) of at most max bytes into *buf (new, NUL-terminated,
 * wipe it if it holds a secret) and *len. 0, or -1 with err naming the file.
 */
int xmctl_read_file(const char *path, size_t max, char **buf, size_t *len, struct err *err);
/*
 * A JSON or YAML document as JSON (new): JSON when the name ends in .json or the text
 * starts with '{', YAML otherwise. -1 with err naming the file and the line.
 */
json_t *xmctl_load_document(const char *path, struct err *err);

/* ---- yaml.c ---- */

/*
 * One YAML document (libyaml) as JSON (new). Plain scalars follow YAML 1.2's core
 * schema (null, true/false, integers, floats; anything else is a string); quoted or
 * !!str-tagged scalars stay strings. Aliases, duplicate keys, non-string keys, more than
 * one document and nesting deeper than 64 are refused. NULL with err (line, column).
 */
json_t *yaml_to_json(const char *text, size_t len, struct err *err);

/* ---- commands (cmd_*.c, watch.c); argv[0] is the command's own name ---- */

int cmd_login(struct xmctl *x, int argc, char **argv);
int cmd_logout(struct xmctl *x, int argc, char **argv);
int cmd_credentials(struct xmctl *x, int argc, char **argv);
int cmd_migrate(struct xmctl *x, int argc, char **argv);
int cmd_approve(struct xmctl *x, int argc, char **argv);
int cmd_status(struct xmctl *x, int argc, char **argv);
int cmd_retry(struct xmctl *x, int argc, char **argv);
int cmd_cutover(struct xmctl *x, int argc, char **argv);
int cmd_cancel(struct xmctl *x, int argc, char **argv);
int cmd_rollback(struct xmctl *x, int argc, char **argv);
int cmd_watch(struct xmctl *x, int argc, char **argv);

/* A usage line for the command on stderr; returns XMCTL_USAGE. */
int xmctl_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
