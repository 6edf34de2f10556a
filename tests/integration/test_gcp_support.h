/*
 * test_gcp_support: what the GCP integration tests share around tests/fakes/gcp.py: a
 * throwaway service-account key (a fresh RSA key made here with OpenSSL, written as a
 * Google key file in a temporary directory, never committed), the fake started on a
 * free loopback port knowing that key, its control endpoints, and a client for it.
 *
 * Test-only code: setup failures fail the test (cmocka fail_msg) with a message.
 */
#ifndef XM_TEST_GCP_SUPPORT_H
#define XM_TEST_GCP_SUPPORT_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "gcp/gcp.h"
#include "harness.h"

#define GCPFAKE_PROJECT "xm-test-proj"
#define GCPFAKE_EMAIL "xmigrate@" GCPFAKE_PROJECT ".iam.gserviceaccount.com"

struct gcpfake {
    struct helper_proc proc;
    char dir[256];      /* temporary directory: key files, logs */
    char endpoint[64];  /* http://127.0.0.1:PORT */
    char token_uri[96]; /* <endpoint>/token */
    char key_path[320]; /* the key file the fake knows */
    char log[320];
    json_t *key; /* that key file's contents (new) */
};

/* The call returns 0, else the test fails with the err (a struct err named err in scope). */
#define GCP_OK(call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s", #call, err.msg);                                                    \
    } while (0)

/* Start the fake with a new key. extra: more fake arguments (NULL-terminated) or NULL. */
void gcpfake_start(struct gcpfake *f, const char *const *extra);
void gcpfake_stop(struct gcpfake *f);

/* A new key file (same project, another account the fake does not know): new JSON. */
json_t *gcpfake_new_key(const char *email);

/* One request without credentials (what the agent sends): the status, or -1 when no
 * answer came; the body (new) in *out when out is not NULL. */
long gcpfake_send(const char *method, const char *url, const void *body, size_t len, char **out);

/* One control request: the status; the body (new) in *out when out is not NULL. */
long gcpfake_ctl(const struct gcpfake *f, const char *method, const char *path, const char *body,
                 char **out);
/* A counter of GET /__stats: "name" or "group.name" (inserts.networks); 0 when absent. */
long long gcpfake_stat(const struct gcpfake *f, const char *name);

/* A client for the fake with key (NULL: the fake's), fast polls and backoff. */
struct gcp *gcpfake_client(const struct gcpfake *f, const json_t *key);

/* Point the XM_GCP_* variables at the fake and reload xm_config. */
void gcpfake_env(const struct gcpfake *f);

/* The credential secret the provider opens: {"service_account": key} (new). */
json_t *gcpfake_secret(const struct gcpfake *f);

#endif
