/*
 * jsonschema: a small JSON Schema draft-7 validator over jansson.
 *
 * What it is for: checking JSON that crosses a trust boundary (API bodies, queue
 * payloads, config documents) against the schemas in `schemas/` before any code reads
 * a field, and saying precisely where the first problem is ("/hosts/0/address: does
 * not match format ipv4").
 *
 * Supported (draft-7 semantics): type (an "integer" is any number with no fractional
 * part, so 1.0 is one), enum, const (JSON equality, 1 == 1.0), properties,
 * patternProperties, additionalProperties, required, dependencies, propertyNames,
 * minProperties, maxProperties, items (schema and tuple form), additionalItems,
 * contains, minItems, maxItems, uniqueItems, minLength and maxLength (in Unicode code
 * points), pattern (PCRE2 in UTF mode, unanchored search, `$` matches only at the
 * end, `\uXXXX` escapes), minimum, maximum, exclusiveMinimum, exclusiveMaximum,
 * multipleOf (exact for integers, to within a few ulps for reals; bounds are compared
 * exactly, never by rounding an integer to a double), allOf, anyOf, oneOf, not,
 * if/then/else, boolean schemas, format (ipv4, hostname, uuid, date-time) and $ref
 * to a JSON pointer inside the same document ("#", "#/definitions/x", with ~0, ~1 and
 * %-escapes decoded; a $ref prefixed with the root "$id" also counts as local). As in
 * draft 7, the siblings of a $ref are ignored. Annotations (title, description,
 * default, examples, $comment, $schema, definitions, the root $id) and unknown
 * keywords are accepted and ignored; $schema is not checked, so keywords of later
 * drafts ($defs aside, which works as a $ref target) are silently ignored like any
 * unknown keyword.
 *
 * Refused at load (jsonschema_new returns NULL, err says where, as a JSON pointer
 * into the schema): a keyword with a value of the wrong shape, a bad regex, a $ref
 * that does not resolve or that points outside the document (remote and relative
 * references, "#anchor" fragments), "$id" below the root (it would change how
 * pointers resolve), a format other than the four above (it could not be checked),
 * and a cycle of $ref / allOf / anyOf / oneOf / not / if / then / else /
 * dependencies that returns to a schema without moving to a child of the instance
 * (validation would never end).
 *
 * Ownership: jsonschema_new deep-copies the schema it is given (borrowed), so the
 * caller may free or change its own afterwards. Instances passed to
 * jsonschema_validate are borrowed and only read. Results are written into caller
 * storage; nothing returned needs freeing except what _new / _load_dir return.
 *
 * Invariants: a compiled schema is never modified after jsonschema_new returns; every
 * subschema reachable during validation was checked and compiled at load.
 *
 * Thread safety: a compiled schema (and a set) is immutable, so any number of threads
 * may validate against it at once; each call uses its own scratch memory. An instance
 * must not be modified while it is being validated. Nothing here logs or exits; only
 * jsonschema_set_load_dir does I/O (blocking reads of local files).
 *
 * Caps (each input has one):
 *   JSONSCHEMA_MAX_DEPTH        nesting of subschemas in a schema document, length of a
 *                               chain of $ref / combinators at one instance location,
 *                               and nesting of subschema evaluation while validating
 *                               (an instance deeper than the schemas allow fails with
 *                               "exceeds the maximum schema nesting depth of 64")
 *   JSONSCHEMA_MAX_PATTERN      bytes in one regex
 *   JSONSCHEMA_MATCH_LIMIT      PCRE2 match limit (backtracking steps) per match; a
 *   JSONSCHEMA_MATCH_HEAP_KIB   regex hitting either limit fails validation (it never
 *                               counts as "not matching", so `not` cannot flip it)
 *   JSONSCHEMA_MAX_EQ_DEPTH     nesting compared by enum, const and uniqueItems
 *   JSONSCHEMA_SET_MAX_FILES    schema files in one directory
 *   JSONSCHEMA_SET_MAX_FILE     bytes in one schema file
 * The size of the instance itself is the caller's cap (request body, payload size).
 */
#ifndef XM_JSONSCHEMA_H
#define XM_JSONSCHEMA_H

#include <jansson.h>

#include "err.h"

#define JSONSCHEMA_MAX_DEPTH 64
#define JSONSCHEMA_MAX_PATTERN 4096
#define JSONSCHEMA_MATCH_LIMIT 1000000
#define JSONSCHEMA_MATCH_HEAP_KIB 8192
#define JSONSCHEMA_MAX_EQ_DEPTH 2048
#define JSONSCHEMA_SET_MAX_FILES 1024
#define JSONSCHEMA_SET_MAX_FILE (1024 * 1024)

/* A compiled schema: opaque, immutable after jsonschema_new. */
struct jsonschema;

/*
 * One violation. path is a JSON pointer into the instance ("" is the root, keys are
 * escaped with ~0 and ~1); message is lowercase with no trailing full stop, e.g.
 * "is not of type string", "is required" (path then names the missing property),
 * "additional property 'x' is not allowed" (path names the object). Both are always
 * NUL-terminated valid UTF-8; a path too long for the buffer is cut and ends in "...".
 */
struct jsonschema_error {
    char path[256];
    char message[256];
};

/*
 * Compile a schema (an object or a boolean; borrowed, deep-copied). Returns a new
 * schema to free with jsonschema_free, or NULL with err filled (ERR_PERMANENT) when the
 * schema is malformed or uses something listed above as refused.
 */
struct jsonschema *jsonschema_new(const json_t *schema, struct err *err);

/* Free a compiled schema; accepts NULL. */
void jsonschema_free(struct jsonschema *s);

/*
 * Validate an instance (borrowed, read-only). Returns 0 when it is valid (and clears
 * *out), -1 when it is not, filling *out (if not NULL) with the first violation in
 * document order: violations about a value come before those about its members,
 * members in the order they appear in the instance (a missing required property
 * counts as about its parent object); between violations at the same place, the first
 * checked wins (type, then const and enum, then the other keywords for that kind of
 * value, then allOf, anyOf, oneOf, not, if). anyOf, oneOf, not, contains and
 * propertyNames report one summary violation at the value they judge, not the reasons
 * inside. Does not block. s must not be NULL.
 */
int jsonschema_validate(const struct jsonschema *s, const json_t *instance,
                        struct jsonschema_error *out);

/*
 * Like jsonschema_validate, but puts "<path>: <message>" (just the message when the
 * path is the root) into err as ERR_PERMANENT. Returns 0 when valid, else -1.
 */
int jsonschema_check(const struct jsonschema *s, const json_t *instance, struct err *err);

/*
 * A set of named schemas loaded from one directory: every regular file whose name ends
 * in ".json" and does not start with "." (a schema file is a JSON object or boolean,
 * duplicate keys refused); its name is the file name without ".json". Immutable after
 * loading.
 */
struct jsonschema_set;

/*
 * Load every schema in dir (blocks on file I/O). Returns a new set to free with
 * jsonschema_set_free, or NULL with err filled (ERR_PERMANENT, naming the file) if the
 * directory cannot be read or any file fails to load or compile: a set is all or
 * nothing.
 */
struct jsonschema_set *jsonschema_set_load_dir(const char *dir, struct err *err);

/* The schema called name (borrowed, lives as long as the set), or NULL if none. */
const struct jsonschema *jsonschema_set_get(const struct jsonschema_set *set, const char *name);

/* Number of schemas in the set. */
size_t jsonschema_set_count(const struct jsonschema_set *set);

/* Free a set and all its schemas; accepts NULL. */
void jsonschema_set_free(struct jsonschema_set *set);

#endif
