/*
 * api: the route handlers of xm-api and the pure request-to-commands code the fuzz
 * target and the handlers share. Handlers are called by server.c after routing, auth
 * and body validation; each answers exactly once through api_reply_*.
 */
#ifndef XM_API_H
#define XM_API_H

#include <jansson.h>

#include "err.h"

struct api_req;
struct cmd;
struct jsonschema_set;

/*
 * (server.c) The error body {"error": {"code", "message", "path"}} (new). Bytes that are not UTF-8
 * (a message quoting bad input, a path cut mid-character) become '?', so the body is
 * always valid JSON; path may be NULL.
 */
json_t *api_error_body(const char *ecode, const char *path, const char *msg);

/* creds.c */
void cred_create(struct api_req *r);
void cred_list(struct api_req *r);
void cred_get(struct api_req *r);
void cred_delete(struct api_req *r);

/* migrations.c */
void mig_create(struct api_req *r);
void mig_list(struct api_req *r);
void mig_get(struct api_req *r);
void mig_cancel(struct api_req *r);
void mig_blueprint_get(struct api_req *r);
void mig_blueprint_put(struct api_req *r);
void mig_approve(struct api_req *r);
void mig_rollback(struct api_req *r);
void mig_host_retry(struct api_req *r);
void mig_cutover(struct api_req *r);
void mig_host_phase(struct api_req *r);
void mig_host_prep(struct api_req *r);
void mig_discovery_callback(struct api_req *r);

/* agent.c */
void agent_urls(struct api_req *r);
void agent_progress(struct api_req *r);

/* sse.c */
void mig_events(struct api_req *r);

/* ops.c */
void ops_healthz(struct api_req *r);
void ops_metrics(struct api_req *r);

/*
 * The Redis commands that store a new migration and enqueue its discovery jobs, built
 * from a validated POST /v1/migrations body with no I/O (so the fuzz target can run
 * it). Checks what the schema cannot: the blueprint against blueprint.json and its own
 * rules, host names unique. On success *cmds is a new array of *n commands (MULTI ..
 * EXEC), each to be released with cmd_release, the array freed. On a bad body returns
 * -1 with a permanent err and the JSON pointer of the bad field in path.
 */
struct migration_input {
    const char *id;              /* new migration id */
    const char *callback_sha;    /* SHA-256 hex of the callback token */
    const char *callback_sealed; /* the token sealed for the discovery worker */
    long long now_ms;
};
int migration_build(const json_t *body, const struct jsonschema_set *schemas,
                    const struct migration_input *in, struct cmd **cmds, int *n, char path[256],
                    struct err *err);

/*
 * Check a blueprint beyond its schema: subnets inside the network and not overlapping,
 * subnet names unique, every host of the migration placed once and no other host
 * (hosts: JSON array of host name strings; NULL skips that check). -1 with err and the
 * JSON pointer in path.
 */
int blueprint_check(const json_t *bp, const json_t *hosts, char path[256], struct err *err);

#endif
