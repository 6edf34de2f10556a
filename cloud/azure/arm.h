/*
 * arm: Azure Resource Manager over REST: one authenticated, retried request, and the
 * long-running-operation protocol followed to its end.
 *
 * Every request carries the Entra ID bearer token (token.h) and the api-version the
 * caller names for the resource type. Retried: transport failures, 5xx, 429 (honouring
 * Retry-After) and one 401 after which the token is fetched again. Any other error reply
 * ({"error": {"code", "message"}}) becomes a permanent struct err naming the code and
 * message ("AuthorizationFailed", "InvalidParameter"...).
 *
 * Long-running operations (the "Asynchronous operations" page of the ARM reference): a
 * 201 or 202 with Azure-AsyncOperation is polled at that URL until its status is
 * Succeeded (Failed or Canceled: its error becomes the err), a 202 with only Location is
 * polled there until it stops answering 202; polls wait Retry-After (else
 * poll_interval_ms). After a PUT the resource is read again for its final body; a PUT
 * answered 200/201 whose provisioningState is not terminal is polled by GET. Poll URLs
 * must be on the ARM endpoint's origin: the token is never sent anywhere else.
 *
 * One struct arm per thread. Resource paths start with "/subscriptions/".
 */
#ifndef XM_AZURE_ARM_H
#define XM_AZURE_ARM_H

#include <jansson.h>

#include "err.h"
#include "http.h"

/* The api-version of each resource type (the fake checks them). */
#define ARM_API_RESOURCES "2021-04-01" /* resource groups */
#define ARM_API_NETWORK "2023-09-01"   /* every Microsoft.Network type */
#define ARM_API_STORAGE "2023-01-01"   /* Microsoft.Storage/storageAccounts */
#define ARM_API_DISKS "2023-04-02"     /* Microsoft.Compute/disks */
#define ARM_API_COMPUTE "2023-09-01"   /* Microsoft.Compute/virtualMachines */

struct arm;

struct arm_config {
    const char *endpoint; /* NULL or "": https://management.azure.com */
    const char *login_endpoint;
    const char *tenant_id, *client_id, *client_secret;
    const char *subscription_id;
    struct http_client_opts http;
    int max_attempts;      /* 0: 6 */
    long backoff_base_ms;  /* 0: 200 */
    long poll_interval_ms; /* without Retry-After; 0: 5000 */
    long lro_timeout_s;    /* 0: 3600 */
};

/* New client (the token is fetched on first use); NULL with a permanent err. */
struct arm *arm_new(const struct arm_config *cfg, struct err *err);
void arm_free(struct arm *a);

const char *arm_subscription(const struct arm *a);

/* GET path; *out the resource (new) or NULL with *found 0 on 404. Blocks. */
int arm_get(struct arm *a, const char *path, const char *api_version, json_t **out, int *found,
            struct err *err);
/* PUT body (borrowed) at path and wait for the operation: *out (may be NULL) the final
 * resource, new. Blocks up to lro_timeout_s. */
int arm_put(struct arm *a, const char *path, const char *api_version, const json_t *body,
            json_t **out, struct err *err);
/* POST (an action such as listKeys), waiting for it; *out (may be NULL) its result. */
int arm_post(struct arm *a, const char *path, const char *api_version, const json_t *body,
             json_t **out, struct err *err);
/* DELETE and wait until gone; a missing resource is not an error. */
int arm_delete(struct arm *a, const char *path, const char *api_version, struct err *err);

/* "/subscriptions/<id>/resourceGroups/<rg>" + suffix (printf), new string. */
char *arm_rg_path(const struct arm *a, const char *rg, const char *suffix_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Requests sent, token fetches and 429s seen so far (tests). */
struct arm_stats {
    int requests, token_fetches, throttled, polls;
};
void arm_stats(const struct arm *a, struct arm_stats *out);

#endif
