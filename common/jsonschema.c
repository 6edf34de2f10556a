#include "jsonschema.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xmalloc.h"

/*
 * Design: the schema is kept as jansson values (a private deep copy) and interpreted
 * directly. Loading walks every subschema reachable through a known keyword or a
 * $ref, checks each keyword's shape, compiles each regex and resolves each $ref; the
 * results live in two address-keyed maps so validation never parses anything again:
 * `nodes` (subschema -> struct snode, holding its $ref target) and `regexes`
 * (pattern string value or patternProperties key -> pcre2_code). After loading,
 * nothing is written, which is what makes a compiled schema shareable between threads.
 */

/* ---- address-keyed hash map ------------------------------------------------------- */

struct pmap_slot {
    const void *key;
    void *val;
};

struct pmap {
    struct pmap_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t len;
};

static size_t pmap_hash(const void *key)
{
    uint64_t x = (uint64_t)(uintptr_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static void *pmap_get(const struct pmap *m, const void *key)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = pmap_hash(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return m->slots[i].val;
        if (!m->slots[i].key)
            return NULL;
    }
}

static void pmap_insert(struct pmap_slot *slots, size_t cap, const void *key, void *val)
{
    size_t mask = cap - 1;
    size_t i = pmap_hash(key) & mask;
    while (slots[i].key)
        i = (i + 1) & mask;
    slots[i].key = key;
    slots[i].val = val;
}

/* Add key (which must not be present yet). */
static void pmap_put(struct pmap *m, const void *key, void *val)
{
    XM_ASSERT(key != NULL);
    if ((m->len + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        struct pmap_slot *ns = xcalloc(ncap, sizeof(*ns));
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key)
                pmap_insert(ns, ncap, m->slots[i].key, m->slots[i].val);
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    pmap_insert(m->slots, m->cap, key, val);
    m->len++;
}

/* ---- compiled schema ---------------------------------------------------------------- */

enum { MARK_NEW = 0, MARK_ACTIVE, MARK_DONE };

/* What loading learnt about one object subschema. */
struct snode {
    char *loc;         /* where it is, "#/properties/a", for load errors */
    const json_t *ref; /* its resolved $ref target, or NULL */
    int mark;          /* cycle check state, MARK_* */
    int height;        /* longest in-place chain from here, once MARK_DONE */
};

struct jsonschema {
    json_t *root;              /* private deep copy, never modified after load */
    struct pmap nodes;         /* object subschema -> struct snode */
    struct pmap regexes;       /* pattern json_t / patternProperties key -> pcre2_code */
    pcre2_match_context *mctx; /* match limits; read-only, shared by all validations */
};

void jsonschema_free(struct jsonschema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nodes.cap; i++) {
        struct snode *n = s->nodes.slots[i].val;
        if (n) {
            free(n->loc);
            free(n);
        }
    }
    for (size_t i = 0; i < s->regexes.cap; i++)
        if (s->regexes.slots[i].val)
            pcre2_code_free(s->regexes.slots[i].val);
    free(s->nodes.slots);
    free(s->regexes.slots);
    pcre2_match_context_free(s->mctx);
    json_decref(s->root);
    free(s);
}

/* jansson's iterator takes a non-const object but only reads it. */
static void *obj_iter(const json_t *o)
{
    return json_object_iter((json_t *)o);
}

static void *obj_next(const json_t *o, void *it)
{
    return json_object_iter_next((json_t *)o, it);
}

/* ---- numbers ------------------------------------------------------------------------ */

#define TWO53 9007199254740992.0
#define TWO63 9223372036854775808.0

/* Every finite double of magnitude 2^53 or more is an integer. */
static bool dbl_is_integral(double d)
{
    if (!isfinite(d))
        return false;
    if (d >= TWO53 || d <= -TWO53)
        return true;
    return (double)(json_int_t)d == d;
}

/* Draft 7: an integer is any number with a zero fractional part, so 1.0 is one. */
static bool json_is_integral(const json_t *v)
{
    return json_is_integer(v) || (json_is_real(v) && dbl_is_integral(json_real_value(v)));
}

/* Compare an integer with a double exactly (no rounding of i to double). */
static int int_dbl_cmp(json_int_t i, double d)
{
    if (d >= TWO63)
        return -1;
    if (d < -TWO63)
        return 1;
    double f = (double)(json_int_t)d; /* truncation, exact in this range */
    if (f > d)
        f -= 1; /* now floor(d); only happens for small negative d */
    json_int_t fi = (json_int_t)f;
    if (i != fi)
        return i < fi ? -1 : 1;
    return d > f ? -1 : 0;
}

static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_integer(a))
        return int_dbl_cmp(json_integer_value(a), json_real_value(b));
    return -int_dbl_cmp(json_integer_value(b), json_real_value(a));
}

/* The value of v as an int64 when it is integral and in range. */
static bool int_value(const json_t *v, json_int_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    double d = json_real_value(v);
    if (d > -TWO63 && d < TWO63 && dbl_is_integral(d)) {
        *out = (json_int_t)d;
        return true;
    }
    return false;
}

/* Exact for integers; for reals, within a few ulps of the quotient. */
static bool multiple_of(const json_t *x, const json_t *m)
{
    json_int_t xi, mi;
    if (int_value(x, &xi) && int_value(m, &mi) && mi > 0)
        return xi % mi == 0;
    double q = json_number_value(x) / json_number_value(m);
    if (!isfinite(q))
        return false;
    if (q >= TWO53 || q <= -TWO53)
        return true;
    double r = (double)(json_int_t)q;
    if (q - r >= 0.5)
        r += 1;
    else if (q - r <= -0.5)
        r -= 1;
    if (r == 0)
        return q == 0;
    double diff = q > r ? q - r : r - q;
    double mag = r < 0 ? -r : r;
    return diff <= mag * 64 * DBL_EPSILON;
}

/* The number as JSON would write it, shortest form that reads back the same. */
static void num_str(char *buf, size_t size, const json_t *v)
{
    if (json_is_integer(v)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    double d = json_real_value(v);
    if (d > -TWO63 && d < TWO63 && dbl_is_integral(d)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, (json_int_t)d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* ---- JSON equality and hashing (1 == 1.0) --------------------------------------------- */

/* 1 equal, 0 not, -1 nested deeper than JSONSCHEMA_MAX_EQ_DEPTH. */
static int json_eq(const json_t *a, const json_t *b, int depth)
{
    if (depth > JSONSCHEMA_MAX_EQ_DEPTH)
        return -1;
    if (a == b)
        return 1;
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++) {
            int r = json_eq(json_array_get(a, i), json_array_get(b, i), depth + 1);
            if (r != 1)
                return r;
        }
        return 1;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        for (void *it = obj_iter(a); it; it = obj_next(a, it)) {
            const json_t *bv =
                json_object_getn(b, json_object_iter_key(it), json_object_iter_key_len(it));
            if (!bv)
                return 0;
            int r = json_eq(json_object_iter_value(it), bv, depth + 1);
            if (r != 1)
                return r;
        }
        return 1;
    default:
        return 1; /* true, false, null: same type is the same value */
    }
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t bytes_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Equal values (json_eq) hash equal; beyond the depth cap json_eq decides alone. */
static uint64_t json_hash(const json_t *v, int depth)
{
    if (depth > JSONSCHEMA_MAX_EQ_DEPTH)
        return 0;
    uint64_t h;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        h = 0x6f;
        for (void *it = obj_iter(v); it; it = obj_next(v, it)) {
            uint64_t kh = bytes_hash(json_object_iter_key(it), json_object_iter_key_len(it));
            h += mix64(kh ^ mix64(json_hash(json_object_iter_value(it), depth + 1)));
        }
        return mix64(h);
    case JSON_ARRAY:
        h = 0x61;
        for (size_t i = 0; i < json_array_size(v); i++)
            h = mix64(h ^ json_hash(json_array_get(v, i), depth + 1));
        return h;
    case JSON_STRING:
        return mix64(bytes_hash(json_string_value(v), json_string_length(v)) ^ 0x73);
    case JSON_INTEGER:
    case JSON_REAL: {
        double d = json_number_value(v);
        if (d == 0)
            d = 0; /* -0.0 == 0 */
        memcpy(&h, &d, sizeof(h));
        return mix64(h);
    }
    case JSON_TRUE:
        return 1;
    case JSON_FALSE:
        return 2;
    case JSON_NULL:
        return 3;
    }
    return 0;
}

/* ---- strings and formats ------------------------------------------------------------ */

/* Code points in valid UTF-8 (jansson strings are): bytes that do not continue one. */
static size_t utf8_count(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

/* Cut s back so that it does not end inside a UTF-8 sequence (after truncation). */
static void utf8_trim(char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return;
    size_t i = n - 1, cont = 0;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80 && cont < 3) {
        i--;
        cont++;
    }
    unsigned char lead = (unsigned char)s[i];
    size_t need = lead < 0x80             ? 1
                  : (lead & 0xE0) == 0xC0 ? 2
                  : (lead & 0xF0) == 0xE0 ? 3
                  : (lead & 0xF8) == 0xF0 ? 4
                                          : 0;
    if (need != cont + 1)
        s[lead < 0x80 ? i + 1 : i] = '\0';
}

/* A subject for a message: at most 64 bytes of s (cut on a character, "..." added). */
static const char *subject(char *buf, size_t size, const char *s, size_t len)
{
    XM_ASSERT(size >= 72);
    size_t n = strnlen(s, len);
    if (n <= 64) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        return buf;
    }
    memcpy(buf, s, 64);
    buf[64] = '\0';
    utf8_trim(buf);
    memcpy(buf + strlen(buf), "...", 4);
    return buf;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool is_alnum(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* Dotted quad, each part 0-255 in decimal without leading zeros (no octal doubts). */
static bool format_ipv4(const char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit(s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        size_t len = i - start;
        if (len == 0 || v > 255 || (len > 1 && s[start] == '0'))
            return false;
    }
    return i == n;
}

/* RFC 1123: labels of 1-63 letters, digits and inner hyphens; 253 bytes at most. */
static bool format_hostname(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t start = 0;
    bool letter = false; /* in the current label */
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t len = i - start;
            if (len == 0 || len > 63 || s[start] == '-' || s[i - 1] == '-')
                return false;
            /* RFC 1123 2.1: a top-level label is never all digits, or "10.0.0.256"
             * would pass as a host name when it is a broken address. */
            if (i == n && !letter && start > 0)
                return false;
            start = i + 1;
            letter = false;
        } else if (!is_alnum(s[i]) && s[i] != '-') {
            return false;
        } else if (!is_digit(s[i])) {
            letter = true;
        }
    }
    return true;
}

/* RFC 4122 text form: 8-4-4-4-12 hex digits, either case. */
static bool format_uuid(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

static bool take_digits(const char *s, size_t n, size_t *i, int count, int *out)
{
    int v = 0;
    for (int k = 0; k < count; k++, (*i)++) {
        if (*i >= n || !is_digit(s[*i]))
            return false;
        v = v * 10 + (s[*i] - '0');
    }
    *out = v;
    return true;
}

static bool take_char(const char *s, size_t n, size_t *i, char a, char b)
{
    if (*i >= n || (s[*i] != a && s[*i] != b))
        return false;
    (*i)++;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    return m == 2 && leap ? 29 : days[m - 1];
}

/* RFC 3339 date-time; a leap second only at 23:59:60 UTC. */
static bool format_date_time(const char *s, size_t n)
{
    size_t i = 0;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    if (!take_digits(s, n, &i, 4, &y) || !take_char(s, n, &i, '-', '-') ||
        !take_digits(s, n, &i, 2, &mo) || !take_char(s, n, &i, '-', '-') ||
        !take_digits(s, n, &i, 2, &d) || !take_char(s, n, &i, 'T', 't') ||
        !take_digits(s, n, &i, 2, &h) || !take_char(s, n, &i, ':', ':') ||
        !take_digits(s, n, &i, 2, &mi) || !take_char(s, n, &i, ':', ':') ||
        !take_digits(s, n, &i, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return false;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == start)
            return false;
    }
    if (take_char(s, n, &i, 'Z', 'z')) {
        sign = 0;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        sign = s[i++] == '+' ? 1 : -1;
        if (!take_digits(s, n, &i, 2, &oh) || !take_char(s, n, &i, ':', ':') ||
            !take_digits(s, n, &i, 2, &om) || oh > 23 || om > 59)
            return false;
    } else {
        return false;
    }
    if (i != n)
        return false;
    if (sec == 60) {
        int utc = ((h * 60 + mi - sign * (oh * 60 + om)) % 1440 + 1440) % 1440;
        if (utc != 23 * 60 + 59)
            return false;
    }
    return true;
}

static const struct format {
    const char *name;
    bool (*check)(const char *s, size_t n);
} formats[] = {
    {"date-time", format_date_time},
    {"hostname", format_hostname},
    {"ipv4", format_ipv4},
    {"uuid", format_uuid},
};

static const struct format *format_find(const char *name)
{
    for (size_t i = 0; i < XM_ARRAY_LEN(formats); i++)
        if (strcmp(formats[i].name, name) == 0)
            return &formats[i];
    return NULL;
}

static const char *const type_names[] = {"array",  "boolean", "integer", "null",
                                         "number", "object",  "string"};

static bool type_known(const char *name)
{
    for (size_t i = 0; i < XM_ARRAY_LEN(type_names); i++)
        if (strcmp(type_names[i], name) == 0)
            return true;
    return false;
}

static bool type_matches(const char *name, const json_t *v)
{
    if (strcmp(name, "string") == 0)
        return json_is_string(v);
    if (strcmp(name, "object") == 0)
        return json_is_object(v);
    if (strcmp(name, "array") == 0)
        return json_is_array(v);
    if (strcmp(name, "number") == 0)
        return json_is_number(v);
    if (strcmp(name, "integer") == 0)
        return json_is_integral(v);
    if (strcmp(name, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(name, "null") == 0)
        return json_is_null(v);
    return false;
}

/* ---- loading ------------------------------------------------------------------------ */

/* A $ref target still to be walked (walked from the top, to keep the stack flat). */
struct pending {
    const json_t *schema;
    char *loc;
};

struct loader {
    struct jsonschema *s;
    struct err *err;
    struct pending *todo;
    size_t ntodo, captodo;
};

/* What a keyword's value must look like. */
enum kw_shape {
    KW_SCHEMA,       /* a schema */
    KW_ITEMS,        /* a schema or an array of schemas */
    KW_SCHEMA_LIST,  /* a non-empty array of schemas */
    KW_SCHEMA_MAP,   /* an object of schemas */
    KW_PATTERN_MAP,  /* an object of schemas keyed by regexes */
    KW_DEPENDENCIES, /* an object of schemas or arrays of strings */
    KW_TYPE,         /* a type name or an array of them */
    KW_ARRAY,        /* any array */
    KW_STRINGS,      /* an array of strings */
    KW_NUMBER,       /* any number */
    KW_POSITIVE,     /* a number greater than 0 */
    KW_COUNT,        /* a non-negative integer */
    KW_BOOL,         /* true or false */
    KW_PATTERN,      /* a regex */
    KW_FORMAT,       /* a format we check */
};

static const struct keyword {
    const char *name;
    enum kw_shape shape;
} keywords[] = {
    {"type", KW_TYPE},
    {"enum", KW_ARRAY},
    {"minimum", KW_NUMBER},
    {"maximum", KW_NUMBER},
    {"exclusiveMinimum", KW_NUMBER},
    {"exclusiveMaximum", KW_NUMBER},
    {"multipleOf", KW_POSITIVE},
    {"minLength", KW_COUNT},
    {"maxLength", KW_COUNT},
    {"pattern", KW_PATTERN},
    {"format", KW_FORMAT},
    {"minItems", KW_COUNT},
    {"maxItems", KW_COUNT},
    {"uniqueItems", KW_BOOL},
    {"items", KW_ITEMS},
    {"additionalItems", KW_SCHEMA},
    {"contains", KW_SCHEMA},
    {"minProperties", KW_COUNT},
    {"maxProperties", KW_COUNT},
    {"required", KW_STRINGS},
    {"properties", KW_SCHEMA_MAP},
    {"patternProperties", KW_PATTERN_MAP},
    {"additionalProperties", KW_SCHEMA},
    {"dependencies", KW_DEPENDENCIES},
    {"propertyNames", KW_SCHEMA},
    {"allOf", KW_SCHEMA_LIST},
    {"anyOf", KW_SCHEMA_LIST},
    {"oneOf", KW_SCHEMA_LIST},
    {"not", KW_SCHEMA},
    {"if", KW_SCHEMA},
    {"then", KW_SCHEMA},
    {"else", KW_SCHEMA},
    {"definitions", KW_SCHEMA_MAP},
};

/* loc + "/" + tok, escaped as a JSON pointer token. New string. */
static char *loc_key(const char *loc, const char *tok, size_t len)
{
    size_t base = strlen(loc), extra = 0;
    for (size_t i = 0; i < len; i++)
        extra += tok[i] == '~' || tok[i] == '/';
    char *out = xmalloc(base + 1 + len + extra + 1);
    char *p = out;
    memcpy(p, loc, base);
    p += base;
    *p++ = '/';
    for (size_t i = 0; i < len; i++) {
        if (tok[i] == '~' || tok[i] == '/') {
            *p++ = '~';
            *p++ = tok[i] == '~' ? '0' : '1';
        } else {
            *p++ = tok[i];
        }
    }
    *p = '\0';
    return out;
}

static int load_schema(struct loader *ld, const json_t *sch, const char *loc, int depth);

static int load_child(struct loader *ld, const json_t *sch, const char *loc, const char *kw,
                      int depth)
{
    char *l = loc_key(loc, kw, strlen(kw));
    int rc = load_schema(ld, sch, l, depth + 1);
    free(l);
    return rc;
}

static int load_child_key(struct loader *ld, const json_t *sch, const char *loc, const char *kw,
                          const char *key, size_t klen, int depth)
{
    char *l1 = loc_key(loc, kw, strlen(kw));
    char *l2 = loc_key(l1, key, klen);
    int rc = load_schema(ld, sch, l2, depth + 1);
    free(l2);
    free(l1);
    return rc;
}

static int load_child_index(struct loader *ld, const json_t *sch, const char *loc, const char *kw,
                            size_t i, int depth)
{
    char *l = xasprintf("%s/%s/%zu", loc, kw, i);
    int rc = load_schema(ld, sch, l, depth + 1);
    free(l);
    return rc;
}

static int compile_regex(struct loader *ld, const void *key, const char *pat, size_t len,
                         const char *loc, const char *kw)
{
    char sub[80];
    if (pmap_get(&ld->s->regexes, key))
        return 0;
    if (len > JSONSCHEMA_MAX_PATTERN)
        return err_set(ld->err, ERR_PERMANENT, "regex in '%s' at '%s' is longer than %d bytes", kw,
                       loc, JSONSCHEMA_MAX_PATTERN);
    int code;
    PCRE2_SIZE off;
    /* ECMA-262 flavour: `$` only at the very end, \uXXXX escapes, no \C. */
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat, len,
                      PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX | PCRE2_NEVER_BACKSLASH_C,
                      &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return err_set(
            ld->err, ERR_PERMANENT, "invalid regex '%s' in '%s' at '%s': %s at offset %zu",
            subject(sub, sizeof(sub), pat, len), kw, loc, (const char *)msg, (size_t)off);
    }
    pmap_put(&ld->s->regexes, key, re);
    return 0;
}

/*
 * Resolve a $ref against the document: "#", "#/a/b" (percent-decoded, then ~1 and ~0),
 * optionally prefixed by the root $id. Fills *target or returns -1 with err.
 */
static int resolve_ref(struct loader *ld, const char *ref, const char *loc, const json_t **target)
{
    const json_t *root = ld->s->root;
    char *buf = NULL;
    int rc = -1;
    const char *frag = ref;
    const char *id = json_string_value(json_object_get(root, "$id"));
    size_t baselen = id ? strcspn(id, "#") : 0;

    if (baselen > 0 && strncmp(ref, id, baselen) == 0 &&
        (ref[baselen] == '#' || ref[baselen] == '\0'))
        frag = ref + baselen;
    if (*frag != '\0' && *frag != '#') {
        err_set(ld->err, ERR_PERMANENT,
                "'$ref' '%s' at '%s' points outside this schema (remote and relative references "
                "are not supported)",
                ref, loc);
        goto out;
    }
    if (*frag == '#')
        frag++;

    /* URI fragment: percent-decode first. */
    size_t flen = strlen(frag), len = 0;
    buf = xmalloc(flen + 1);
    for (size_t i = 0; i < flen; i++) {
        if (frag[i] != '%') {
            buf[len++] = frag[i];
            continue;
        }
        if (i + 2 >= flen || !is_hex(frag[i + 1]) || !is_hex(frag[i + 2])) {
            err_set(ld->err, ERR_PERMANENT, "'$ref' '%s' at '%s' has a bad %%-escape", ref, loc);
            goto out;
        }
        char hex[3] = {frag[i + 1], frag[i + 2], '\0'};
        buf[len++] = (char)strtol(hex, NULL, 16);
        i += 2;
    }
    if (len > 0 && buf[0] != '/') {
        err_set(ld->err, ERR_PERMANENT,
                "'$ref' '%s' at '%s' is not a JSON pointer (only '#/...' fragments are supported)",
                ref, loc);
        goto out;
    }

    const json_t *cur = root;
    size_t pos = 0;
    while (pos < len) {
        /* Token from buf[pos + 1] up to the next '/', unescaped in place. */
        size_t start = pos + 1, end = start, tlen = 0;
        while (end < len && buf[end] != '/')
            end++;
        char *tok = buf + start;
        for (size_t i = start; i < end; i++) {
            if (buf[i] == '~') {
                if (i + 1 >= end || (buf[i + 1] != '0' && buf[i + 1] != '1')) {
                    err_set(ld->err, ERR_PERMANENT, "'$ref' '%s' at '%s' has a bad '~' escape", ref,
                            loc);
                    goto out;
                }
                tok[tlen++] = buf[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                tok[tlen++] = buf[i];
            }
        }
        pos = end;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok, tlen);
        } else if (json_is_array(cur)) {
            size_t idx = 0;
            bool ok = tlen > 0 && tlen <= 9 && (tlen == 1 || tok[0] != '0');
            for (size_t i = 0; ok && i < tlen; i++) {
                ok = is_digit(tok[i]);
                idx = idx * 10 + (size_t)(tok[i] - '0');
            }
            cur = ok ? json_array_get(cur, idx) : NULL;
        } else {
            cur = NULL;
        }
        if (!cur) {
            err_set(ld->err, ERR_PERMANENT, "'$ref' '%s' at '%s' does not resolve", ref, loc);
            goto out;
        }
    }
    if (!json_is_object(cur) && !json_is_boolean(cur)) {
        err_set(ld->err, ERR_PERMANENT, "'$ref' '%s' at '%s' does not point to a schema", ref, loc);
        goto out;
    }
    *target = cur;
    rc = 0;
out:
    free(buf);
    return rc;
}

static int load_type(struct loader *ld, const json_t *v, const char *loc)
{
    if (json_is_string(v)) {
        if (!type_known(json_string_value(v)))
            return err_set(ld->err, ERR_PERMANENT, "'type' at '%s' names unknown type '%s'", loc,
                           json_string_value(v));
        return 0;
    }
    if (!json_is_array(v))
        return err_set(ld->err, ERR_PERMANENT,
                       "'type' at '%s' must be a type name or an array of type names", loc);
    size_t i;
    const json_t *t;
    for (i = 0; i < json_array_size(v) && (t = json_array_get(v, i)); i++) {
        if (!json_is_string(t))
            return err_set(ld->err, ERR_PERMANENT, "'type' at '%s' must list type names", loc);
        if (!type_known(json_string_value(t)))
            return err_set(ld->err, ERR_PERMANENT, "'type' at '%s' names unknown type '%s'", loc,
                           json_string_value(t));
    }
    return 0;
}

static int bad_shape(struct loader *ld, const char *kw, const char *loc, const char *what)
{
    return err_set(ld->err, ERR_PERMANENT, "'%s' at '%s' must be %s", kw, loc, what);
}

static int load_keyword(struct loader *ld, const struct keyword *kw, const json_t *v,
                        const char *loc, int depth)
{
    const char *name = kw->name;
    size_t i;
    const json_t *e;
    void *it;

    switch (kw->shape) {
    case KW_SCHEMA:
        return load_child(ld, v, loc, name, depth);
    case KW_ITEMS:
        if (!json_is_array(v))
            return load_child(ld, v, loc, name, depth);
        for (i = 0; i < json_array_size(v); i++)
            if (load_child_index(ld, json_array_get(v, i), loc, name, i, depth) < 0)
                return -1;
        return 0;
    case KW_SCHEMA_LIST:
        if (!json_is_array(v) || json_array_size(v) == 0)
            return bad_shape(ld, name, loc, "a non-empty array of schemas");
        for (i = 0; i < json_array_size(v); i++)
            if (load_child_index(ld, json_array_get(v, i), loc, name, i, depth) < 0)
                return -1;
        return 0;
    case KW_SCHEMA_MAP:
    case KW_PATTERN_MAP:
    case KW_DEPENDENCIES:
        if (!json_is_object(v))
            return bad_shape(ld, name, loc, "an object");
        for (it = obj_iter(v); it; it = obj_next(v, it)) {
            const char *key = json_object_iter_key(it);
            size_t klen = json_object_iter_key_len(it);
            e = json_object_iter_value(it);
            if (kw->shape == KW_PATTERN_MAP && compile_regex(ld, key, key, klen, loc, name) < 0)
                return -1;
            if (kw->shape == KW_DEPENDENCIES && json_is_array(e)) {
                for (i = 0; i < json_array_size(e); i++)
                    if (!json_is_string(json_array_get(e, i)))
                        return bad_shape(ld, name, loc,
                                         "an object of schemas or arrays of property names");
                continue;
            }
            if (load_child_key(ld, e, loc, name, key, klen, depth) < 0)
                return -1;
        }
        return 0;
    case KW_TYPE:
        return load_type(ld, v, loc);
    case KW_ARRAY:
        return json_is_array(v) ? 0 : bad_shape(ld, name, loc, "an array");
    case KW_STRINGS:
        if (!json_is_array(v))
            return bad_shape(ld, name, loc, "an array of strings");
        for (i = 0; i < json_array_size(v); i++)
            if (!json_is_string(json_array_get(v, i)))
                return bad_shape(ld, name, loc, "an array of strings");
        return 0;
    case KW_NUMBER:
        return json_is_number(v) ? 0 : bad_shape(ld, name, loc, "a number");
    case KW_POSITIVE:
        return json_is_number(v) && json_number_value(v) > 0
                   ? 0
                   : bad_shape(ld, name, loc, "a number greater than 0");
    case KW_COUNT:
        return json_is_integral(v) && json_number_value(v) >= 0
                   ? 0
                   : bad_shape(ld, name, loc, "a non-negative integer");
    case KW_BOOL:
        return json_is_boolean(v) ? 0 : bad_shape(ld, name, loc, "a boolean");
    case KW_PATTERN:
        if (!json_is_string(v))
            return bad_shape(ld, name, loc, "a string");
        return compile_regex(ld, v, json_string_value(v), json_string_length(v), loc, name);
    case KW_FORMAT:
        if (!json_is_string(v))
            return bad_shape(ld, name, loc, "a string");
        if (!format_find(json_string_value(v)))
            return err_set(ld->err, ERR_PERMANENT,
                           "unsupported format '%s' at '%s' (supported: date-time, hostname, "
                           "ipv4, uuid)",
                           json_string_value(v), loc);
        return 0;
    }
    return 0;
}

static int load_schema(struct loader *ld, const json_t *sch, const char *loc, int depth)
{
    if (json_is_boolean(sch))
        return 0;
    if (!json_is_object(sch))
        return err_set(ld->err, ERR_PERMANENT, "schema at '%s' must be an object or a boolean",
                       loc);
    if (pmap_get(&ld->s->nodes, sch))
        return 0; /* reached before, through another $ref */
    if (depth > JSONSCHEMA_MAX_DEPTH)
        return err_set(ld->err, ERR_PERMANENT, "schema at '%s' is nested deeper than %d levels",
                       loc, JSONSCHEMA_MAX_DEPTH);

    struct snode *n = xcalloc(1, sizeof(*n));
    n->loc = xstrdup(loc);
    pmap_put(&ld->s->nodes, sch, n);

    const json_t *id = json_object_get(sch, "$id");
    if (id && sch != ld->s->root)
        return err_set(ld->err, ERR_PERMANENT,
                       "'$id' at '%s' is not supported below the root (it would change how "
                       "'$ref' resolves)",
                       loc);
    if (id && !json_is_string(id))
        return bad_shape(ld, "$id", loc, "a string");

    const json_t *ref = json_object_get(sch, "$ref");
    if (ref) {
        /* Draft 7: the siblings of $ref are ignored, so they are not even checked. */
        if (!json_is_string(ref))
            return bad_shape(ld, "$ref", loc, "a string");
        if (resolve_ref(ld, json_string_value(ref), loc, &n->ref) < 0)
            return -1;
        if (ld->ntodo == ld->captodo) {
            ld->captodo = ld->captodo ? ld->captodo * 2 : 8;
            ld->todo = xrealloc(ld->todo, ld->captodo * sizeof(*ld->todo));
        }
        ld->todo[ld->ntodo].schema = n->ref;
        ld->todo[ld->ntodo].loc = xstrdup(json_string_value(ref));
        ld->ntodo++;
        return 0;
    }

    for (size_t i = 0; i < XM_ARRAY_LEN(keywords); i++) {
        const json_t *v = json_object_get(sch, keywords[i].name);
        if (v && load_keyword(ld, &keywords[i], v, loc, depth) < 0)
            return -1;
    }
    return 0;
}

/*
 * The longest chain of subschemas applied to the same instance value from sch ($ref,
 * allOf, anyOf, oneOf, not, if/then/else, schema dependencies), or -1 with err if the
 * chain loops (validation would never end) or is longer than JSONSCHEMA_MAX_DEPTH.
 */
static int inplace_height(struct jsonschema *s, const json_t *sch, int depth, struct err *err);

static int inplace_edge(struct jsonschema *s, const json_t *sub, int depth, int *h, struct err *err)
{
    int sh = inplace_height(s, sub, depth + 1, err);
    if (sh < 0)
        return -1;
    if (sh > *h)
        *h = sh;
    return 0;
}

static int inplace_height(struct jsonschema *s, const json_t *sch, int depth, struct err *err)
{
    static const char *const lists[] = {"allOf", "anyOf", "oneOf"};
    static const char *const single[] = {"not", "if", "then", "else"};

    if (!json_is_object(sch))
        return 0;
    struct snode *n = pmap_get(&s->nodes, sch);
    XM_ASSERT(n != NULL);
    if (n->mark == MARK_DONE)
        return n->height;
    if (n->mark == MARK_ACTIVE)
        return err_set(err, ERR_PERMANENT,
                       "schema at '%s' applies itself to the same value again (a cycle of "
                       "'$ref' or combinators that never reaches a member or item)",
                       n->loc);
    if (depth > JSONSCHEMA_MAX_DEPTH)
        return err_set(err, ERR_PERMANENT,
                       "chain of '$ref' and combinators through '%s' is longer than %d", n->loc,
                       JSONSCHEMA_MAX_DEPTH);
    n->mark = MARK_ACTIVE;
    int h = 0;
    if (n->ref) {
        if (inplace_edge(s, n->ref, depth, &h, err) < 0)
            return -1;
    } else {
        for (size_t k = 0; k < XM_ARRAY_LEN(lists); k++) {
            const json_t *arr = json_object_get(sch, lists[k]);
            for (size_t i = 0; i < json_array_size(arr); i++)
                if (inplace_edge(s, json_array_get(arr, i), depth, &h, err) < 0)
                    return -1;
        }
        bool has_if = json_object_get(sch, "if") != NULL;
        for (size_t k = 0; k < XM_ARRAY_LEN(single); k++) {
            const json_t *sub = json_object_get(sch, single[k]);
            if (sub && (k < 2 || has_if) && inplace_edge(s, sub, depth, &h, err) < 0)
                return -1;
        }
        const json_t *deps = json_object_get(sch, "dependencies");
        for (void *it = obj_iter(deps); deps && it; it = obj_next(deps, it)) {
            const json_t *sub = json_object_iter_value(it);
            if (!json_is_array(sub) && inplace_edge(s, sub, depth, &h, err) < 0)
                return -1;
        }
    }
    n->mark = MARK_DONE;
    n->height = h + 1;
    return n->height;
}

struct jsonschema *jsonschema_new(const json_t *schema, struct err *err)
{
    struct jsonschema *s = NULL, *ret = NULL;
    struct loader ld = {0};

    if (!schema) {
        err_set(err, ERR_PERMANENT, "no schema given");
        goto out;
    }
    s = xcalloc(1, sizeof(*s));
    s->root = json_deep_copy(schema);
    XM_ASSERT(s->root != NULL);
    s->mctx = pcre2_match_context_create(NULL);
    XM_ASSERT(s->mctx != NULL);
    pcre2_set_match_limit(s->mctx, JSONSCHEMA_MATCH_LIMIT);
    pcre2_set_heap_limit(s->mctx, JSONSCHEMA_MATCH_HEAP_KIB);

    ld.s = s;
    ld.err = err;
    if (load_schema(&ld, s->root, "#", 0) < 0)
        goto out;
    while (ld.ntodo > 0) {
        struct pending p = ld.todo[--ld.ntodo];
        int rc = load_schema(&ld, p.schema, p.loc, 0);
        free(p.loc);
        if (rc < 0)
            goto out;
    }
    for (size_t i = 0; i < s->nodes.cap; i++)
        if (s->nodes.slots[i].key && inplace_height(s, s->nodes.slots[i].key, 0, err) < 0)
            goto out;

    ret = s;
    s = NULL;
out:
    for (size_t i = 0; i < ld.ntodo; i++)
        free(ld.todo[i].loc);
    free(ld.todo);
    jsonschema_free(s);
    return ret;
}

/* ---- validation --------------------------------------------------------------------- */

enum vres {
    V_OK,    /* valid */
    V_FAIL,  /* not valid */
    V_ABORT, /* could not decide (depth cap, regex limits): invalid whatever the context */
};

/* Position of a value in document order: the member / item index at each level. */
#define ORD_MAX (JSONSCHEMA_MAX_DEPTH + 2)

struct vctx {
    const struct jsonschema *s;
    pcre2_match_data *md; /* made on first use: each call needs its own */
    bool collect;         /* record violations; false while only yes/no is wanted (anyOf...) */
    int depth;
    char *path; /* JSON pointer of the current value */
    size_t plen, pcap;
    size_t ord[ORD_MAX];
    int nord;
    bool have; /* best holds the earliest violation so far */
    bool aborted;
    size_t best_ord[ORD_MAX];
    int best_nord;
    struct jsonschema_error best;
};

static size_t path_add(struct vctx *c, const char *tok, size_t len)
{
    size_t old = c->plen;
    size_t need = c->plen + 1 + 2 * len + 1;
    if (need > c->pcap) {
        c->pcap = need * 2;
        c->path = xrealloc(c->path, c->pcap);
    }
    c->path[c->plen++] = '/';
    for (size_t i = 0; i < len; i++) {
        if (tok[i] == '~' || tok[i] == '/') {
            c->path[c->plen++] = '~';
            c->path[c->plen++] = tok[i] == '~' ? '0' : '1';
        } else {
            c->path[c->plen++] = tok[i];
        }
    }
    c->path[c->plen] = '\0';
    return old;
}

static size_t path_add_index(struct vctx *c, size_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%zu", i);
    return path_add(c, buf, (size_t)n);
}

static void path_cut(struct vctx *c, size_t len)
{
    c->plen = len;
    c->path[len] = '\0';
}

static void ord_push(struct vctx *c, size_t i)
{
    XM_ASSERT(c->nord < ORD_MAX);
    c->ord[c->nord++] = i;
}

static void ord_pop(struct vctx *c)
{
    XM_ASSERT(c->nord > 0);
    c->nord--;
}

/* <0 when position a comes before b; a value comes before its members. */
static int ord_cmp(const size_t *a, int na, const size_t *b, int nb)
{
    int n = na < nb ? na : nb;
    for (int i = 0; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return (na > nb) - (na < nb);
}

__attribute__((format(printf, 2, 0))) static void set_best(struct vctx *c, const char *fmt,
                                                           va_list ap)
{
    struct jsonschema_error *e = &c->best;
    if (c->plen < sizeof(e->path)) {
        memcpy(e->path, c->path, c->plen + 1);
    } else {
        size_t keep = sizeof(e->path) - 4;
        memcpy(e->path, c->path, keep);
        e->path[keep] = '\0';
        utf8_trim(e->path);
        memcpy(e->path + strlen(e->path), "...", 4);
    }
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    utf8_trim(e->message);
    memcpy(c->best_ord, c->ord, (size_t)c->nord * sizeof(c->ord[0]));
    c->best_nord = c->nord;
    c->have = true;
}

/* Record a violation at the current value if it is the earliest; returns V_FAIL. */
__attribute__((format(printf, 2, 3))) static enum vres fail(struct vctx *c, const char *fmt, ...)
{
    if (!c->collect || c->aborted)
        return V_FAIL;
    if (c->have && ord_cmp(c->best_ord, c->best_nord, c->ord, c->nord) <= 0)
        return V_FAIL;
    va_list ap;
    va_start(ap, fmt);
    set_best(c, fmt, ap);
    va_end(ap);
    return V_FAIL;
}

/* Record why validation cannot go on, in any mode; returns V_ABORT. */
__attribute__((format(printf, 2, 3))) static enum vres vabort(struct vctx *c, const char *fmt, ...)
{
    if (!c->aborted) {
        va_list ap;
        va_start(ap, fmt);
        set_best(c, fmt, ap);
        va_end(ap);
        c->aborted = true;
    }
    return V_ABORT;
}

/*
 * Fold a step's result into `res`. A failure ends the function at once when only a
 * yes/no answer is wanted; when collecting, the remaining checks still run so that an
 * earlier violation (in document order) found later can replace the current one.
 */
#define STEP(expr)                                                                                 \
    do {                                                                                           \
        enum vres step_ = (expr);                                                                  \
        if (step_ == V_ABORT || (step_ == V_FAIL && !c->collect))                                  \
            return step_;                                                                          \
        if (step_ == V_FAIL)                                                                       \
            res = V_FAIL;                                                                          \
    } while (0)

static enum vres validate(struct vctx *c, const json_t *sch, const json_t *inst);

/* Only whether inst is valid against sch: nothing is recorded. */
static enum vres probe(struct vctx *c, const json_t *sch, const json_t *inst)
{
    bool saved = c->collect;
    c->collect = false;
    enum vres r = validate(c, sch, inst);
    c->collect = saved;
    return r;
}

static enum vres validate_member(struct vctx *c, const json_t *sch, const json_t *inst,
                                 const char *key, size_t klen, size_t idx)
{
    size_t old = path_add(c, key, klen);
    ord_push(c, idx);
    enum vres r = validate(c, sch, inst);
    ord_pop(c);
    path_cut(c, old);
    return r;
}

static enum vres validate_item(struct vctx *c, const json_t *sch, const json_t *inst, size_t idx,
                               bool only_probe)
{
    size_t old = path_add_index(c, idx);
    ord_push(c, idx);
    enum vres r = only_probe ? probe(c, sch, inst) : validate(c, sch, inst);
    ord_pop(c);
    path_cut(c, old);
    return r;
}

static enum vres regex_search(struct vctx *c, const void *key, const char *subj, size_t len,
                              bool *found)
{
    pcre2_code *re = pmap_get(&c->s->regexes, key);
    XM_ASSERT(re != NULL);
    if (!c->md) {
        c->md = pcre2_match_data_create(1, NULL);
        XM_ASSERT(c->md != NULL);
    }
    int rc = pcre2_match(re, (PCRE2_SPTR)subj, len, 0, 0, c->md, c->s->mctx);
    *found = rc >= 0;
    if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH)
        return V_OK;
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    return vabort(c, "cannot be matched against a pattern: %s", (const char *)msg);
}

static enum vres check_type(struct vctx *c, const json_t *t, const json_t *inst)
{
    if (json_is_string(t)) {
        if (type_matches(json_string_value(t), inst))
            return V_OK;
        return fail(c, "is not of type %s", json_string_value(t));
    }
    char list[128] = "";
    size_t n = json_array_size(t), used = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(t, i));
        if (type_matches(name, inst))
            return V_OK;
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", sep, name);
        if (w > 0 && (size_t)w < sizeof(list) - used)
            used += (size_t)w;
    }
    return fail(c, "is not of type %s", list);
}

static enum vres check_value(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    const json_t *v;
    if ((v = json_object_get(sch, "const"))) {
        int eq = json_eq(inst, v, 0);
        if (eq < 0)
            return vabort(c, "is nested too deeply to compare");
        if (!eq)
            STEP(fail(c, "must be equal to the constant value"));
    }
    if ((v = json_object_get(sch, "enum"))) {
        int eq = 0;
        for (size_t i = 0; i < json_array_size(v) && eq == 0; i++)
            eq = json_eq(inst, json_array_get(v, i), 0);
        if (eq < 0)
            return vabort(c, "is nested too deeply to compare");
        if (!eq)
            STEP(fail(c, "must be one of the enumerated values"));
    }
    return res;
}

static enum vres check_number(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    char num[64];
    const json_t *v;
    if ((v = json_object_get(sch, "minimum")) && num_cmp(inst, v) < 0) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "is less than %s", num));
    }
    if ((v = json_object_get(sch, "maximum")) && num_cmp(inst, v) > 0) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "is greater than %s", num));
    }
    if ((v = json_object_get(sch, "exclusiveMinimum")) && num_cmp(inst, v) <= 0) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "is less than or equal to %s", num));
    }
    if ((v = json_object_get(sch, "exclusiveMaximum")) && num_cmp(inst, v) >= 0) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "is greater than or equal to %s", num));
    }
    if ((v = json_object_get(sch, "multipleOf")) && !multiple_of(inst, v)) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "is not a multiple of %s", num));
    }
    return res;
}

static enum vres check_string(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    char num[64], sub[80];
    const char *str = json_string_value(inst);
    size_t len = json_string_length(inst);
    const json_t *min = json_object_get(sch, "minLength");
    const json_t *max = json_object_get(sch, "maxLength");
    const json_t *v;

    if (min || max) {
        double count = (double)utf8_count(str, len);
        if (min && count < json_number_value(min)) {
            num_str(num, sizeof(num), min);
            STEP(fail(c, "is shorter than %s characters", num));
        }
        if (max && count > json_number_value(max)) {
            num_str(num, sizeof(num), max);
            STEP(fail(c, "is longer than %s characters", num));
        }
    }
    if ((v = json_object_get(sch, "pattern"))) {
        bool found;
        if (regex_search(c, v, str, len, &found) == V_ABORT)
            return V_ABORT;
        if (!found)
            STEP(fail(c, "does not match pattern '%s'",
                      subject(sub, sizeof(sub), json_string_value(v), json_string_length(v))));
    }
    if ((v = json_object_get(sch, "format"))) {
        const struct format *f = format_find(json_string_value(v));
        XM_ASSERT(f != NULL);
        if (!f->check(str, len))
            STEP(fail(c, "does not match format %s", f->name));
    }
    return res;
}

struct hashed {
    uint64_t h;
    size_t i;
};

static int hashed_cmp(const void *a, const void *b)
{
    const struct hashed *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Sort by hash, compare within equal hashes; reports the pair with the lowest second index. */
static enum vres check_unique(struct vctx *c, const json_t *inst)
{
    size_t n = json_array_size(inst);
    if (n < 2)
        return V_OK;
    struct hashed *hs = xmalloc(n * sizeof(*hs));
    size_t bi = 0, bj = SIZE_MAX;
    bool too_deep = false;
    for (size_t i = 0; i < n; i++) {
        hs[i].h = json_hash(json_array_get(inst, i), 0);
        hs[i].i = i;
    }
    qsort(hs, n, sizeof(*hs), hashed_cmp);
    for (size_t a = 0; a < n && !too_deep; a++) {
        for (size_t b = a + 1; b < n && hs[b].h == hs[a].h; b++) {
            int eq = json_eq(json_array_get(inst, hs[a].i), json_array_get(inst, hs[b].i), 0);
            if (eq < 0) {
                too_deep = true;
                break;
            }
            if (eq && hs[b].i < bj) {
                bi = hs[a].i;
                bj = hs[b].i;
            }
        }
    }
    free(hs);
    if (too_deep)
        return vabort(c, "has items nested too deeply to compare");
    if (bj != SIZE_MAX)
        return fail(c, "has duplicate items %zu and %zu", bi, bj);
    return V_OK;
}

static enum vres check_array(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    char num[64];
    size_t n = json_array_size(inst);
    const json_t *v;

    if ((v = json_object_get(sch, "minItems")) && (double)n < json_number_value(v)) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "has fewer than %s items", num));
    }
    if ((v = json_object_get(sch, "maxItems")) && (double)n > json_number_value(v)) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "has more than %s items", num));
    }
    if (json_is_true(json_object_get(sch, "uniqueItems")))
        STEP(check_unique(c, inst));

    const json_t *items = json_object_get(sch, "items");
    if (json_is_array(items)) {
        const json_t *more = json_object_get(sch, "additionalItems");
        size_t tuple = json_array_size(items);
        for (size_t i = 0; i < n; i++) {
            const json_t *sub = i < tuple ? json_array_get(items, i) : more;
            if (!sub)
                break;
            if (i >= tuple && json_is_false(sub)) {
                ord_push(c, i);
                enum vres r = fail(c, "additional item %zu is not allowed", i);
                ord_pop(c);
                STEP(r);
                continue;
            }
            STEP(validate_item(c, sub, json_array_get(inst, i), i, false));
        }
    } else if (items && !json_is_true(items)) {
        for (size_t i = 0; i < n; i++)
            STEP(validate_item(c, items, json_array_get(inst, i), i, false));
    }

    if ((v = json_object_get(sch, "contains"))) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) {
            enum vres r = validate_item(c, v, json_array_get(inst, i), i, true);
            if (r == V_ABORT)
                return r;
            found = r == V_OK;
        }
        if (!found)
            STEP(fail(c, "does not contain a matching item"));
    }
    return res;
}

/* properties, patternProperties and additionalProperties for one member. */
static enum vres check_member(struct vctx *c, const json_t *sch, const char *key, size_t klen,
                              const json_t *val, size_t idx)
{
    enum vres res = V_OK;
    char sub[80];
    bool matched = false;
    const json_t *props = json_object_get(sch, "properties");
    const json_t *pprops = json_object_get(sch, "patternProperties");
    const json_t *more = json_object_get(sch, "additionalProperties");
    const json_t *ps;

    if (props && (ps = json_object_getn(props, key, klen))) {
        matched = true;
        STEP(validate_member(c, ps, val, key, klen, idx));
    }
    for (void *it = obj_iter(pprops); pprops && it; it = obj_next(pprops, it)) {
        bool found;
        if (regex_search(c, json_object_iter_key(it), key, klen, &found) == V_ABORT)
            return V_ABORT;
        if (found) {
            matched = true;
            STEP(validate_member(c, json_object_iter_value(it), val, key, klen, idx));
        }
    }
    if (!matched && more) {
        if (json_is_false(more)) {
            ord_push(c, idx);
            enum vres r = fail(c, "additional property '%s' is not allowed",
                               subject(sub, sizeof(sub), key, klen));
            ord_pop(c);
            STEP(r);
        } else {
            STEP(validate_member(c, more, val, key, klen, idx));
        }
    }
    return res;
}

static enum vres check_object(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    char num[64], sub[80];
    size_t n = json_object_size(inst);
    const json_t *v;
    size_t i, old;
    void *it;

    if ((v = json_object_get(sch, "minProperties")) && (double)n < json_number_value(v)) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "has fewer than %s properties", num));
    }
    if ((v = json_object_get(sch, "maxProperties")) && (double)n > json_number_value(v)) {
        num_str(num, sizeof(num), v);
        STEP(fail(c, "has more than %s properties", num));
    }

    /* A missing property is reported at its would-be path, positioned as the object. */
    const json_t *req = json_object_get(sch, "required"), *name;
    for (i = 0; i < json_array_size(req) && (name = json_array_get(req, i)); i++) {
        if (json_object_getn(inst, json_string_value(name), json_string_length(name)))
            continue;
        old = path_add(c, json_string_value(name), json_string_length(name));
        enum vres r = fail(c, "is required");
        path_cut(c, old);
        STEP(r);
    }

    const json_t *deps = json_object_get(sch, "dependencies");
    for (it = obj_iter(deps); deps && it; it = obj_next(deps, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *dep = json_object_iter_value(it);
        if (!json_object_getn(inst, key, klen))
            continue;
        if (!json_is_array(dep)) {
            STEP(validate(c, dep, inst));
            continue;
        }
        for (i = 0; i < json_array_size(dep) && (name = json_array_get(dep, i)); i++) {
            if (json_object_getn(inst, json_string_value(name), json_string_length(name)))
                continue;
            old = path_add(c, json_string_value(name), json_string_length(name));
            enum vres r =
                fail(c, "is required by property '%s'", subject(sub, sizeof(sub), key, klen));
            path_cut(c, old);
            STEP(r);
        }
    }

    if ((v = json_object_get(sch, "propertyNames")) && !json_is_true(v)) {
        i = 0;
        for (it = obj_iter(inst); it; it = obj_next(inst, it), i++) {
            const char *key = json_object_iter_key(it);
            size_t klen = json_object_iter_key_len(it);
            json_t *kv = json_stringn_nocheck(key, klen);
            XM_ASSERT(kv != NULL);
            old = path_add(c, key, klen);
            ord_push(c, i);
            enum vres r = probe(c, v, kv);
            ord_pop(c);
            path_cut(c, old);
            json_decref(kv);
            if (r == V_FAIL) {
                ord_push(c, i);
                r = fail(c, "property name '%s' does not match propertyNames",
                         subject(sub, sizeof(sub), key, klen));
                ord_pop(c);
            }
            STEP(r);
        }
    }

    if (json_object_get(sch, "properties") || json_object_get(sch, "patternProperties") ||
        json_object_get(sch, "additionalProperties")) {
        i = 0;
        for (it = obj_iter(inst); it; it = obj_next(inst, it), i++)
            STEP(check_member(c, sch, json_object_iter_key(it), json_object_iter_key_len(it),
                              json_object_iter_value(it), i));
    }
    return res;
}

static enum vres check_combinators(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK, r;
    const json_t *v, *sub;
    size_t i;

    v = json_object_get(sch, "allOf");
    for (i = 0; i < json_array_size(v); i++)
        STEP(validate(c, json_array_get(v, i), inst));

    if ((v = json_object_get(sch, "anyOf"))) {
        bool any = false;
        for (i = 0; i < json_array_size(v) && (sub = json_array_get(v, i)); i++) {
            if ((r = probe(c, sub, inst)) == V_ABORT)
                return r;
            if (r == V_OK) {
                any = true;
                break;
            }
        }
        if (!any)
            STEP(fail(c, "does not match any of the schemas in anyOf"));
    }
    if ((v = json_object_get(sch, "oneOf"))) {
        size_t matches = 0;
        for (i = 0; i < json_array_size(v) && (sub = json_array_get(v, i)); i++) {
            if ((r = probe(c, sub, inst)) == V_ABORT)
                return r;
            if (r == V_OK && ++matches > 1)
                break;
        }
        if (matches == 0)
            STEP(fail(c, "does not match any of the schemas in oneOf"));
        else if (matches > 1)
            STEP(fail(c, "matches more than one of the schemas in oneOf"));
    }
    if ((v = json_object_get(sch, "not"))) {
        if ((r = probe(c, v, inst)) == V_ABORT)
            return r;
        if (r == V_OK)
            STEP(fail(c, "must not match the schema in not"));
    }
    if ((v = json_object_get(sch, "if"))) {
        if ((r = probe(c, v, inst)) == V_ABORT)
            return r;
        sub = json_object_get(sch, r == V_OK ? "then" : "else");
        if (sub)
            STEP(validate(c, sub, inst));
    }
    return res;
}

static enum vres validate_object_schema(struct vctx *c, const json_t *sch, const json_t *inst)
{
    enum vres res = V_OK;
    const struct snode *n = pmap_get(&c->s->nodes, sch);
    XM_ASSERT(n != NULL);
    if (n->ref)
        return validate(c, n->ref, inst);

    const json_t *t = json_object_get(sch, "type");
    if (t)
        STEP(check_type(c, t, inst));
    STEP(check_value(c, sch, inst));
    if (json_is_number(inst))
        STEP(check_number(c, sch, inst));
    else if (json_is_string(inst))
        STEP(check_string(c, sch, inst));
    else if (json_is_array(inst))
        STEP(check_array(c, sch, inst));
    else if (json_is_object(inst))
        STEP(check_object(c, sch, inst));
    STEP(check_combinators(c, sch, inst));
    return res;
}

static enum vres validate(struct vctx *c, const json_t *sch, const json_t *inst)
{
    if (json_is_true(sch))
        return V_OK;
    if (json_is_false(sch))
        return fail(c, "is not allowed");
    /*
     * Everything found below here sits at or after the current position, so when the
     * earliest violation so far is not after it, nothing here can replace it.
     */
    if (c->collect && c->have && ord_cmp(c->best_ord, c->best_nord, c->ord, c->nord) <= 0)
        return V_FAIL;
    if (c->depth >= JSONSCHEMA_MAX_DEPTH)
        return vabort(c, "exceeds the maximum schema nesting depth of %d", JSONSCHEMA_MAX_DEPTH);
    c->depth++;
    enum vres r = validate_object_schema(c, sch, inst);
    c->depth--;
    return r;
}

int jsonschema_validate(const struct jsonschema *s, const json_t *instance,
                        struct jsonschema_error *out)
{
    XM_ASSERT(s != NULL && instance != NULL);
    struct vctx c;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.collect = true;
    c.pcap = 128;
    c.path = xmalloc(c.pcap);
    c.path[0] = '\0';

    enum vres r = validate(&c, s->root, instance);
    int rc = 0;
    if (r == V_OK) {
        if (out)
            memset(out, 0, sizeof(*out));
    } else {
        XM_ASSERT(c.have);
        if (out)
            *out = c.best;
        rc = -1;
    }
    free(c.path);
    pcre2_match_data_free(c.md);
    return rc;
}

int jsonschema_check(const struct jsonschema *s, const json_t *instance, struct err *err)
{
    struct jsonschema_error e;
    if (jsonschema_validate(s, instance, &e) == 0)
        return 0;
    if (e.path[0] == '\0')
        return err_set(err, ERR_PERMANENT, "%s", e.message);
    return err_set(err, ERR_PERMANENT, "%s: %s", e.path, e.message);
}

/* ---- sets of schemas from a directory ------------------------------------------------ */

struct jsonschema_set_entry {
    char *name;
    struct jsonschema *schema;
};

struct jsonschema_set {
    struct jsonschema_set_entry *v; /* sorted by name */
    size_t n;
};

static int str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int entry_cmp(const void *a, const void *b)
{
    const struct jsonschema_set_entry *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Whole file into a new NUL-terminated buffer, capped at JSONSCHEMA_SET_MAX_FILE. */
static int read_file(const char *path, char **text, size_t *len, struct err *err)
{
    char eb[128];
    char *buf = NULL;
    int fd = -1, rc = -1;
    struct stat st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        err_set(err, ERR_PERMANENT, "schema '%s': cannot read: %s", path,
                strerror_r(errno, eb, sizeof(eb)));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, ERR_PERMANENT, "schema '%s': not a regular file", path);
        goto out;
    }
    if (st.st_size > JSONSCHEMA_SET_MAX_FILE) {
        err_set(err, ERR_PERMANENT, "schema '%s': larger than %d bytes", path,
                JSONSCHEMA_SET_MAX_FILE);
        goto out;
    }
    /* Ask for one byte more than fstat said, to notice a file that grew meanwhile. */
    size_t n = 0, want = (size_t)st.st_size + 1;
    buf = xmalloc(want + 1);
    while (n < want) {
        ssize_t got = read(fd, buf + n, want - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            err_set(err, ERR_PERMANENT, "schema '%s': cannot read: %s", path,
                    strerror_r(errno, eb, sizeof(eb)));
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    if (n > (size_t)st.st_size) {
        err_set(err, ERR_PERMANENT, "schema '%s': changed while being read", path);
        goto out;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static bool is_schema_file(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".json") == 0;
}

struct jsonschema_set *jsonschema_set_load_dir(const char *dir, struct err *err)
{
    char eb[128];
    DIR *d = NULL;
    char **names = NULL;
    size_t nnames = 0, capnames = 0;
    struct jsonschema_set *set = NULL, *ret = NULL;
    char *path = NULL, *text = NULL;
    json_t *doc = NULL;
    struct dirent *de;

    d = opendir(dir);
    if (!d) {
        err_set(err, ERR_PERMANENT, "cannot open schema directory '%s': %s", dir,
                strerror_r(errno, eb, sizeof(eb)));
        goto out;
    }
    for (;;) {
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno != 0) {
                err_set(err, ERR_PERMANENT, "cannot list schema directory '%s': %s", dir,
                        strerror_r(errno, eb, sizeof(eb)));
                goto out;
            }
            break;
        }
        if (!is_schema_file(de->d_name))
            continue;
        if (nnames == JSONSCHEMA_SET_MAX_FILES) {
            err_set(err, ERR_PERMANENT, "schema directory '%s' has more than %d schema files", dir,
                    JSONSCHEMA_SET_MAX_FILES);
            goto out;
        }
        if (nnames == capnames) {
            capnames = capnames ? capnames * 2 : 16;
            names = xrealloc(names, capnames * sizeof(*names));
        }
        names[nnames++] = xstrdup(de->d_name);
    }
    if (nnames > 1) /* glibc's qsort wants a non-NULL base even for 0 items */
        qsort(names, nnames, sizeof(*names), str_ptr_cmp);

    set = xcalloc(1, sizeof(*set));
    set->v = xcalloc(nnames, sizeof(*set->v));
    for (size_t i = 0; i < nnames; i++) {
        size_t len;
        json_error_t jerr;
        path = xasprintf("%s/%s", dir, names[i]);
        if (read_file(path, &text, &len, err) < 0)
            goto out;
        doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!doc) {
            err_set(err, ERR_PERMANENT, "schema '%s': invalid JSON at line %d column %d: %s", path,
                    jerr.line, jerr.column, jerr.text);
            goto out;
        }
        struct jsonschema *s = jsonschema_new(doc, err);
        if (!s) {
            err_prefix(err, "schema '%s'", path);
            goto out;
        }
        set->v[set->n].name = xstrndup(names[i], strlen(names[i]) - 5);
        set->v[set->n].schema = s;
        set->n++;
        json_decref(doc);
        doc = NULL;
        free(text);
        text = NULL;
        free(path);
        path = NULL;
    }
    qsort(set->v, set->n, sizeof(*set->v), entry_cmp);
    ret = set;
    set = NULL;
out:
    json_decref(doc);
    free(text);
    free(path);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    jsonschema_set_free(set);
    if (d)
        closedir(d);
    return ret;
}

const struct jsonschema *jsonschema_set_get(const struct jsonschema_set *set, const char *name)
{
    if (!set || !name)
        return NULL;
    struct jsonschema_set_entry key = {.name = (char *)name};
    const struct jsonschema_set_entry *e =
        bsearch(&key, set->v, set->n, sizeof(*set->v), entry_cmp);
    return e ? e->schema : NULL;
}

size_t jsonschema_set_count(const struct jsonschema_set *set)
{
    return set ? set->n : 0;
}

void jsonschema_set_free(struct jsonschema_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        free(set->v[i].name);
        jsonschema_free(set->v[i].schema);
    }
    free(set->v);
    free(set);
}
