/*
 * tjson: a small JSON reader for the two documents the agent reads (the API's URL reply
 * and a previous manifest), so the static binary needs no JSON library.
 *
 * tjson_parse() builds a tree from text (RFC 8259: objects, arrays, strings with every
 * escape incl. surrogate pairs, numbers, true/false/null). Caps: nesting TJSON_DEPTH_MAX,
 * strings TJSON_STRING_MAX bytes; the caller caps the text itself. Duplicate object keys
 * are refused. The tree is new (tjson_free it); every pointer the accessors return is
 * borrowed from it and lives as long as the tree. Accessors accept NULL and answer
 * NULL / 0, so a missing field can be checked once at the end.
 */
#ifndef XM_AGENT_TJSON_H
#define XM_AGENT_TJSON_H

#include <stddef.h>

#include "err.h"

#define TJSON_DEPTH_MAX 32
#define TJSON_STRING_MAX (64 * 1024)

enum tjson_type { TJSON_NULL, TJSON_BOOL, TJSON_NUMBER, TJSON_STRING, TJSON_ARRAY, TJSON_OBJECT };

struct tjson;

/* Parse len bytes of text; a new tree, or NULL with a permanent err saying where. */
struct tjson *tjson_parse(const char *text, size_t len, struct err *err);
void tjson_free(struct tjson *j);

/*
 * The same for a large document: the elements of the top-level object's array member
 * `key` are not kept but handed to fn one at a time (borrowed for the call; fn returns 0
 * to go on, -1 with err to stop), so memory stays that of one element. The tree returned
 * has that member as an empty array. New tree, or NULL with err.
 */
struct tjson *tjson_parse_each(const char *text, size_t len, const char *key,
                               int (*fn)(void *arg, const struct tjson *elem, struct err *err),
                               void *arg, struct err *err);

enum tjson_type tjson_type(const struct tjson *j);
/* Object member by key, NULL when absent or j is not an object. */
const struct tjson *tjson_get(const struct tjson *j, const char *key);
/* Array element or object member count; 0 for anything else. */
size_t tjson_len(const struct tjson *j);
/* Array element i (or object member value i), NULL when out of range. */
const struct tjson *tjson_at(const struct tjson *j, size_t i);
/* Object member key i, NULL when out of range or not an object. */
const char *tjson_key(const struct tjson *j, size_t i);
/* String value (NUL-terminated, borrowed), NULL when not a string. */
const char *tjson_str(const struct tjson *j);
/* Integer value: 0 when the value is a whole number in range, else -1. */
int tjson_ll(const struct tjson *j, long long *out);
/* 1 for true, 0 for false, -1 when not a boolean. */
int tjson_bool(const struct tjson *j);

#endif
