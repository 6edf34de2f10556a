/*
 * ansible: run one playbook against one source host, the way every Ansible phase
 * (discovery, prep, clone) does it: a private 0700 folder holding the inventory, the
 * SSH key and the variables (each 0600, removed after the run), ansible-playbook
 * started with an argument vector (never a shell), its output streamed into the
 * worker's log line by line, and the outcome classified.
 *
 * Secrets (SSH key or password, tokens) reach Ansible only through those files; they
 * are never on a command line and never logged (tasks that handle them use no_log).
 * Blocks until ansible-playbook exits; a SIGTERM to the worker is passed on to it.
 */
#ifndef XM_ANSIBLE_H
#define XM_ANSIBLE_H

#include <jansson.h>

#include "err.h"

struct ansible_target {
    const char *name;    /* inventory name: the host name (checked) */
    const char *address; /* IPv4 or DNS name (checked) */
    int port;
    const char *user;            /* checked against a strict pattern */
    const char *private_key;     /* PEM text, or NULL */
    const char *password;        /* or NULL; needs sshpass */
    const char *become_password; /* or NULL */
};

struct ansible_result {
    int exit_code;     /* ansible-playbook's */
    int unreachable;   /* the host could not be reached */
    int task_rc;       /* rc of the failed task's command, -1 when none */
    char message[512]; /* the failed task's msg/stderr, cut */
};

/*
 * Run playbook (a path) for target with vars (borrowed JSON object, written to the
 * vars file). log_ctx is prefixed to every log line ("migration=.. host=.."). Returns 0
 * when the playbook succeeded; -1 with err otherwise: transient when the host was
 * unreachable or Ansible could not start, permanent for bad input; a failed task is
 * reported in *res (exit_code != 0) with err permanent unless the caller reclassifies.
 */
int ansible_run(const char *playbook, const struct ansible_target *target, const json_t *vars,
                const char *log_ctx, struct ansible_result *res, struct err *err);

/* The strict patterns values must match before they reach Ansible or a shell. */
int ansible_valid_host(const char *s);   /* IPv4 or DNS name */
int ansible_valid_user(const char *s);   /* ^[a-z_][a-z0-9_-]{0,31}$ */
int ansible_valid_device(const char *s); /* ^/dev/[a-z][a-z0-9/_-]{0,62}$ */

#endif
