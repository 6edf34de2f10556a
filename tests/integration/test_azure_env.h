/*
 * test_azure_env: what the Azure integration tests run against, started and stopped from
 * C: Azurite (tests/node_modules, `npm ci` in tests/) on a port it picks itself, and
 * tests/fakes/azure_arm.py (Entra ID + Resource Manager) on one it picks and prints.
 *
 * Test-only code: setup failures end the test (cmocka fail_msg). A missing Azurite is a
 * skip: azurite_available() says so, and the test exits 77 with the reason.
 */
#ifndef XM_TEST_AZURE_ENV_H
#define XM_TEST_AZURE_ENV_H

#include <jansson.h>
#include <sys/types.h>

#define AZURITE_ACCOUNT "devstoreaccount1"
#define AZURITE_KEY                                                                                \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

/* The fake's service principal (what the tests' azure credential holds). */
#define FAKE_TENANT "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define FAKE_CLIENT "00000000-0000-0000-0000-00000000c1d0"
#define FAKE_SECRET "fake-secret"
#define FAKE_SUBSCRIPTION "00000000-0000-0000-0000-000000005ab5"

struct azurite {
    pid_t pid;
    int out_fd; /* its stdout, kept open so it never writes into a closed pipe */
    int port;
    char endpoint[96]; /* http://127.0.0.1:PORT/devstoreaccount1 */
};

/* 1 when the pinned Azurite is installed; else 0 and why in reason. */
int azurite_available(char *reason, size_t size);
/* Exit 77 (ctest's skip), saying why, unless Azurite is installed. */
void azurite_require(void);
void azurite_start(struct azurite *z, const char *log);
void azurite_stop(struct azurite *z);

struct armfake {
    pid_t pid;
    int out_fd;
    int port;
    char endpoint[64]; /* http://127.0.0.1:PORT */
};

/* Start the fake; blob_endpoint (may be NULL) is what storage accounts report and where
 * imports look for VHDs; extra: more arguments (NULL-terminated, may be NULL). */
void armfake_start(struct armfake *f, const char *blob_endpoint, const char *log,
                   const char *const *extra);
void armfake_stop(struct armfake *f);
/* GET /__stats (new). */
json_t *armfake_stats(const struct armfake *f);
/* POST a control body (JSON text) to path ("/__faults", "/__reset"). */
void armfake_control(const struct armfake *f, const char *path, const char *body);
/* The number of resources the fake created of a type ("microsoft.network/virtualnetworks"). */
long long armfake_creates(const struct armfake *f, const char *type);

/* Run argv (no shell) to its end with env additions ("NAME=value", NULL-terminated, may
 * be NULL); stderr (and stdout when out is NULL) appended to log, else stdout into out
 * (NUL-terminated, cut at size). Its exit status (128 when killed). */
int azenv_run(char *const argv[], char *const env[], const char *log, char *out, size_t size);

/* Azurite, then the fake reporting it as its storage account (extra: more fake
 * arguments, may be NULL), logs in dir; then the provider configuration pointing at the
 * fake, with XM_AZURE_BLOB_ENDPOINT set to Azurite when blob_configured (else the
 * endpoint comes from the storage account, as in Azure). */
void azenv_start(struct azurite *z, struct armfake *f, const char *dir, const char *const *extra,
                 int blob_configured);
void azenv_stop(struct azurite *z, struct armfake *f);
/* Remove a test's directory, unless XM_KEEP_TEST_DIRS is set (then say where it is). */
void azenv_remove_dir(const char *dir);

/* One plain HTTP request (no credentials but what url and headers carry; headers
 * NULL-terminated "Name: value", may be NULL): its status, -1 when nothing answered;
 * *out (may be NULL) the body, new. */
long azenv_http(const char *method, const char *url, const char *const *headers, const void *body,
                size_t len, char **out);

/* The credential secret for the fake (new). */
json_t *armfake_secret(void);

/* Point the provider's endpoints at arm (login and ARM) and blob (may be NULL) and load the
 * configuration. */
void azure_env_config(const struct armfake *arm, const char *blob);

#endif
