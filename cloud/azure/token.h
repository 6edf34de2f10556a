/*
 * token: an Entra ID (Azure AD) access token from the OAuth2 client-credentials grant,
 * cached until shortly before it expires.
 *
 * POST {login}/{tenant}/oauth2/v2.0/token with grant_type=client_credentials, client_id,
 * client_secret and scope ("https://management.azure.com/.default" for Resource
 * Manager, "https://storage.azure.com/.default" for storage). The token is reused until
 * TOKEN_MARGIN_S before its expires_in; token_invalidate() drops it (after a 401), so
 * the next token_get() asks again. A refused credential (invalid_client,
 * unauthorized_client, invalid_request, 400/401) is permanent; 5xx, 429 and transport
 * failures are retried and then transient.
 *
 * The client secret and the token are copied in and wiped by token_free; neither ever
 * appears in an error. One struct token per thread (it shares nothing).
 */
#ifndef XM_AZURE_TOKEN_H
#define XM_AZURE_TOKEN_H

#include "err.h"
#include "http.h"

#define TOKEN_MARGIN_S 300
#define TOKEN_MAX 16384

struct token;

struct token_config {
    const char *login_endpoint; /* NULL or "": https://login.microsoftonline.com */
    const char *tenant_id, *client_id, *client_secret;
    const char *scope;
    struct http_client *http; /* borrowed: the caller's client */
    int max_attempts;         /* 0: 5 */
    long backoff_base_ms;     /* 0: 200 */
};

/* New token source (nothing is fetched yet); NULL with a permanent err for a bad config. */
struct token *token_new(const struct token_config *cfg, struct err *err);
void token_free(struct token *t);

/* The current access token (borrowed until the next call), fetched when none is cached
 * or it is within TOKEN_MARGIN_S of expiry. Blocks when it fetches. NULL with err. */
const char *token_get(struct token *t, struct err *err);

/* Forget the cached token (the server refused it). */
void token_invalidate(struct token *t);

/* Token requests made so far (tests). */
int token_fetches(const struct token *t);

#endif
