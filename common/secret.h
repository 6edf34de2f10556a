/*
 * secret: secrets at rest and bearer tokens (DESIGN.md section 6).
 *
 * Secrets at rest. Cloud keys, SSH keys and passwords are stored only sealed with
 * AES-256-GCM under the 32-byte key from XM_MASTER_KEY. A sealed record is one ASCII
 * string:
 *
 *     "v1:" base64( nonce[12] || ciphertext[len] || tag[16] )
 *
 * standard base64 alphabet with '=' padding and no newlines. The nonce is 12 fresh
 * random bytes per seal, so sealing the same plaintext twice gives different strings.
 * The additional authenticated data is the id of the record that holds the secret (the
 * whole C string, without its NUL): a sealed value copied to another record does not
 * open there. The "v1:" prefix names this format; any other prefix is refused.
 *
 * Tokens. API bearer tokens and per-migration callback tokens are 32 random bytes shown
 * once to their owner as 43 characters of base64url (no padding); only their SHA-256
 * (hex) is stored, and a presented token is checked by hashing it and comparing the
 * digests with secret_equal(). secret_fingerprint() names a credential in logs and
 * messages without revealing it.
 *
 * Invariants: no function here logs, and no error message ever contains plaintext, key
 * material or the text of a bad key; the record id is the only subject quoted. A failing
 * random generator or cipher set-up aborts the process like out of memory does (it
 * cannot be handled usefully and must never degrade to a weak nonce or token).
 *
 * Ownership: every char * / unsigned char ** result is new (free() it; wipe decrypted
 * plaintext with secret_wipe() first); every pointer argument is borrowed for the call.
 *
 * Thread safety: every function is thread-safe and keeps no state between calls
 * (OpenSSL 3 locks its own random generator). None of them blocks on I/O.
 */
#ifndef XM_SECRET_H
#define XM_SECRET_H

#include <stddef.h>

#include "err.h"

#define SECRET_KEY_LEN 32
#define SECRET_NONCE_LEN 12
#define SECRET_TAG_LEN 16
#define SECRET_PREFIX "v1:"

/* Longest sealed string secret_open() accepts (1 MiB, NUL not counted). */
#define SECRET_SEALED_MAX (1024 * 1024)
/* Longest plaintext whose sealed form fits in SECRET_SEALED_MAX (786401 bytes). */
#define SECRET_PLAIN_MAX                                                                           \
    ((SECRET_SEALED_MAX - (sizeof(SECRET_PREFIX) - 1)) / 4 * 3 - SECRET_NONCE_LEN - SECRET_TAG_LEN)

/* secret_token_new() writes this many characters plus a NUL. */
#define SECRET_TOKEN_LEN 43
/* "sha256:" and the first 16 hex digits of the digest, plus a NUL. */
#define SECRET_FINGERPRINT_SIZE 24

/* ---- secrets at rest ---------------------------------------------------------------- */

/*
 * Parse XM_MASTER_KEY: exactly 64 hex digits (either case) into key. 0, or -1 with a
 * permanent err naming XM_MASTER_KEY and what is expected (never the value); key is left
 * zeroed on failure. hex may be NULL (the variable is not set).
 */
int secret_key_parse(const char *hex, unsigned char key[SECRET_KEY_LEN], struct err *err);

/*
 * Seal len bytes of plain for the record aad. Returns a new NUL-terminated string in
 * the format above. plain may be NULL when len is 0. len must not exceed
 * SECRET_PLAIN_MAX (callers cap their input first; more is a bug and aborts).
 */
char *secret_seal(const unsigned char key[SECRET_KEY_LEN], const char *aad,
                  const unsigned char *plain, size_t len);

/*
 * Open a string made by secret_seal() for the same record aad. On success returns 0,
 * *plain is a new buffer of *len bytes followed by a NUL (not counted in *len); wipe it
 * with secret_wipe() before free(). On failure returns -1, *plain is NULL, *len is 0
 * and err is permanent: the wrong key, another record's id, any change to the string,
 * an unknown version prefix and bad base64 all give the same message, naming only aad.
 * A string longer than SECRET_SEALED_MAX is refused without being read past the cap.
 */
int secret_open(const unsigned char key[SECRET_KEY_LEN], const char *aad, const char *sealed,
                unsigned char **plain, size_t *len, struct err *err);

/* Overwrite len bytes at p with zeros in a way the compiler cannot drop. p may be NULL. */
void secret_wipe(void *p, size_t len);

/* ---- tokens ------------------------------------------------------------------------- */

/* A new token: 32 random bytes as exactly 43 base64url characters ([A-Za-z0-9_-]) + NUL. */
void secret_token_new(char out[SECRET_TOKEN_LEN + 1]);

/* SHA-256 of len bytes at data as 64 lowercase hex digits + NUL. */
void secret_sha256_hex(const void *data, size_t len, char out[65]);

/* 1 if the len bytes at a and b are equal, else 0; time depends only on len. */
int secret_equal(const void *a, const void *b, size_t len);

/* "sha256:" + the first 16 hex digits of SHA-256(data): names a credential safely. */
void secret_fingerprint(const void *data, size_t len, char out[SECRET_FINGERPRINT_SIZE]);

#endif
