/*
 * sharedkey: Azure Storage request signing (SharedKey) and service SAS generation, pure
 * functions over strings with OpenSSL's HMAC-SHA256; nothing here touches the network.
 *
 * SharedKey (the "Authorize with Shared Key" page of the Storage REST reference): the
 * string to sign is the verb, eleven standard headers (Content-Length empty when 0), the
 * x-ms-* headers lowercased and sorted, and the canonicalized resource
 * "/<account><url path>" followed by "\n<name>:<value>" for each query parameter sorted
 * by lowercased name. Path-style emulator URLs (Azurite: /devstoreaccount1/c/b) therefore
 * name the account twice, which is what the emulator expects.
 *
 * Service SAS (blob): the string to sign has the layout of its signed version sv:
 * before 2018-11-09 no sr/snapshot fields, from 2018-11-09 sr and snapshot time, from
 * 2020-12-06 also the encryption scope. The query carries sv, sr, sp, st, se, sip, spr and
 * sig. Keys are the account key decoded from base64; a SAS grants what sp says to whoever
 * holds it until se: treat it like a secret and never log it.
 */
#ifndef XM_AZURE_SHAREDKEY_H
#define XM_AZURE_SHAREDKEY_H

#include <stddef.h>

#include "err.h"

#define SHAREDKEY_KEY_MAX 128 /* decoded account key bytes (Azure's are 64) */
#define SHAREDKEY_SIG_SIZE 45 /* base64 of a SHA-256 HMAC + NUL */

/* An account key decoded from base64. */
struct sharedkey {
    unsigned char key[SHAREDKEY_KEY_MAX];
    size_t len;
};

/* Decode a base64 account key. 0, or -1 with a permanent err that does not quote it. */
int sharedkey_init(struct sharedkey *k, const char *key_b64, struct err *err);
/* Wipe the key. */
void sharedkey_release(struct sharedkey *k);

/* base64(HMAC-SHA256(key, text)) into sig. */
void sharedkey_hmac(const struct sharedkey *k, const char *text, char sig[SHAREDKEY_SIG_SIZE]);

/*
 * The canonicalized resource of a request to path (as sent, starting with '/', spaces
 * encoded as %20 here) with query (raw "a=b&c=d", percent-decoded here; NULL for none).
 * New string.
 */
char *sharedkey_resource(const char *account, const char *path, const char *query);

/*
 * The string to sign of a request: method, its headers ("Name: value", any case; only the
 * standard eleven and x-ms-* count) and the canonicalized resource. New string.
 */
char *sharedkey_string_to_sign(const char *method, const char *const *headers, size_t n,
                               const char *resource);

/* The fields of a blob service SAS. NULL or "" means absent. */
struct sharedkey_sas {
    const char *sp, *st, *se; /* permissions ("r", "cw"...), start, expiry (ISO 8601 UTC) */
    const char *resource;     /* canonicalized: "/blob/<account>/<container>/<blob>" */
    const char *si, *sip, *spr, *sv, *sr, *snapshot, *ses;
    const char *rscc, *rscd, *rsce, *rscl, *rsct;
};

/* The string to sign for sas, laid out for its sv. New string. */
char *sharedkey_sas_string_to_sign(const struct sharedkey_sas *sas);

/* The SAS query string ("sv=...&sig=..."), signed with k, values percent-encoded. New. */
char *sharedkey_sas_query(const struct sharedkey *k, const struct sharedkey_sas *sas);

#endif
