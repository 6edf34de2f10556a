#include "tjson.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"
#include "xmalloc.h"

struct tjson {
    enum tjson_type type;
    int boolean;
    int is_int;       /* number written without fraction or exponent, fits long long */
    long long ll;     /* when is_int */
    char *str;        /* string value */
    char **keys;      /* object member names */
    struct tjson **v; /* array elements / object values */
    size_t n, cap;
};

struct parser {
    const char *p, *end, *start;
    struct err *err;
    const char *each_key; /* tjson_parse_each: the streamed member */
    int (*each)(void *arg, const struct tjson *elem, struct err *err);
    void *each_arg;
};

static int fail(struct parser *ps, const char *what)
{
    return err_set(ps->err, ERR_PERMANENT, "json: %s at byte %zu", what,
                   (size_t)(ps->p - ps->start));
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static void put_utf8(struct sbuf *b, uint32_t cp)
{
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xf0 | (cp >> 18));
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    sbuf_add(b, u, n);
}

static int hex4(struct parser *ps, uint32_t *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, "short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(ps, "bad \\u escape");
    }
    *out = v;
    return 0;
}

/* A string literal at ps->p (the opening quote) into a new string. */
static char *parse_string(struct parser *ps)
{
    struct sbuf b;
    sbuf_init(&b);
    ps->p++; /* opening quote */
    for (;;) {
        if (ps->p >= ps->end) {
            fail(ps, "unterminated string");
            goto bad;
        }
        if (b.len > TJSON_STRING_MAX) {
            fail(ps, "string too long");
            goto bad;
        }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            return sbuf_steal(&b, NULL);
        }
        if (c < 0x20) {
            fail(ps, "control character in string");
            goto bad;
        }
        if (c != '\\') {
            /* copy a run of plain bytes at once */
            const char *q = ps->p;
            while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
                q++;
            sbuf_add(&b, ps->p, (size_t)(q - ps->p));
            ps->p = q;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end) {
            fail(ps, "unterminated escape");
            goto bad;
        }
        char e = *ps->p++;
        char out;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out = e;
            break;
        case 'b':
            out = '\b';
            break;
        case 'f':
            out = '\f';
            break;
        case 'n':
            out = '\n';
            break;
        case 'r':
            out = '\r';
            break;
        case 't':
            out = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (hex4(ps, &cp) < 0)
                goto bad;
            if (cp >= 0xd800 && cp < 0xdc00) {
                uint32_t lo;
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    fail(ps, "lone surrogate");
                    goto bad;
                }
                ps->p += 2;
                if (hex4(ps, &lo) < 0)
                    goto bad;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    fail(ps, "bad surrogate pair");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(ps, "lone surrogate");
                goto bad;
            }
            if (cp == 0) {
                fail(ps, "NUL in string");
                goto bad;
            }
            put_utf8(&b, cp);
            continue;
        }
        default:
            fail(ps, "bad escape");
            goto bad;
        }
        sbuf_add(&b, &out, 1);
    }
bad:
    sbuf_release(&b);
    return NULL;
}

static void push(struct tjson *j, char *key, struct tjson *v)
{
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 8;
        j->v = xrealloc(j->v, j->cap * sizeof(*j->v));
        if (j->type == TJSON_OBJECT)
            j->keys = xrealloc(j->keys, j->cap * sizeof(*j->keys));
    }
    if (j->type == TJSON_OBJECT)
        j->keys[j->n] = key;
    j->v[j->n++] = v;
}

static struct tjson *parse_value(struct parser *ps, int depth);
static struct tjson *parse_streamed(struct parser *ps);

static int parse_number(struct parser *ps, struct tjson *j)
{
    const char *s = ps->p;
    int frac = 0;
    if (ps->p < ps->end && *ps->p == '-')
        ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return fail(ps, "bad number");
    if (*ps->p == '0')
        ps->p++;
    else
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        frac = 1;
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return fail(ps, "bad number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        frac = 1;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return fail(ps, "bad number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    j->type = TJSON_NUMBER;
    if (!frac && ps->p - s < 32) {
        char tmp[32];
        memcpy(tmp, s, (size_t)(ps->p - s));
        tmp[ps->p - s] = '\0';
        errno = 0;
        char *endp;
        long long v = strtoll(tmp, &endp, 10);
        if (errno == 0 && *endp == '\0') {
            j->is_int = 1;
            j->ll = v;
        }
    }
    return 0;
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, "unexpected character");
    ps->p += n;
    return 0;
}

/* The streamed array at ps->p: each element to the callback, an empty array kept. */
static struct tjson *parse_streamed(struct parser *ps)
{
    struct tjson *arr = xcalloc(1, sizeof(*arr));
    arr->type = TJSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return arr;
    }
    for (;;) {
        struct tjson *v = parse_value(ps, 2);
        if (!v)
            goto bad;
        int r = ps->each(ps->each_arg, v, ps->err);
        tjson_free(v);
        if (r < 0)
            goto bad;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return arr;
        }
        fail(ps, "expected ',' or ']'");
        goto bad;
    }
bad:
    tjson_free(arr);
    return NULL;
}

static struct tjson *parse_value(struct parser *ps, int depth)
{
    struct tjson *j = xcalloc(1, sizeof(*j));
    char *key = NULL;
    if (depth > TJSON_DEPTH_MAX) {
        fail(ps, "nested too deep");
        goto bad;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end");
        goto bad;
    }
    switch (*ps->p) {
    case '{':
        j->type = TJSON_OBJECT;
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return j;
        }
        for (;;) {
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a member name");
                goto bad;
            }
            if (!(key = parse_string(ps)))
                goto bad;
            if (tjson_get(j, key)) {
                fail(ps, "duplicate member name");
                goto bad;
            }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                fail(ps, "expected ':'");
                goto bad;
            }
            ps->p++;
            struct tjson *v;
            skip_ws(ps);
            if (depth == 0 && ps->each && strcmp(key, ps->each_key) == 0 && ps->p < ps->end &&
                *ps->p == '[')
                v = parse_streamed(ps);
            else
                v = parse_value(ps, depth + 1);
            if (!v)
                goto bad;
            push(j, key, v);
            key = NULL;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                return j;
            }
            fail(ps, "expected ',' or '}'");
            goto bad;
        }
    case '[':
        j->type = TJSON_ARRAY;
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return j;
        }
        for (;;) {
            struct tjson *v = parse_value(ps, depth + 1);
            if (!v)
                goto bad;
            push(j, NULL, v);
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                return j;
            }
            fail(ps, "expected ',' or ']'");
            goto bad;
        }
    case '"':
        j->type = TJSON_STRING;
        if (!(j->str = parse_string(ps)))
            goto bad;
        return j;
    case 't':
        j->type = TJSON_BOOL;
        j->boolean = 1;
        if (literal(ps, "true") < 0)
            goto bad;
        return j;
    case 'f':
        j->type = TJSON_BOOL;
        if (literal(ps, "false") < 0)
            goto bad;
        return j;
    case 'n':
        j->type = TJSON_NULL;
        if (literal(ps, "null") < 0)
            goto bad;
        return j;
    default:
        if (parse_number(ps, j) < 0)
            goto bad;
        return j;
    }
bad:
    free(key);
    tjson_free(j);
    return NULL;
}

static struct tjson *parse_top(struct parser *ps)
{
    struct tjson *j = parse_value(ps, 0);
    if (!j)
        return NULL;
    skip_ws(ps);
    if (ps->p != ps->end) {
        fail(ps, "trailing data");
        tjson_free(j);
        return NULL;
    }
    return j;
}

struct tjson *tjson_parse_each(const char *text, size_t len, const char *key,
                               int (*fn)(void *arg, const struct tjson *elem, struct err *err),
                               void *arg, struct err *err)
{
    struct parser ps = {.p = text,
                        .end = text + len,
                        .start = text,
                        .err = err,
                        .each_key = key,
                        .each = fn,
                        .each_arg = arg};
    return parse_top(&ps);
}

struct tjson *tjson_parse(const char *text, size_t len, struct err *err)
{
    struct parser ps = {.p = text, .end = text + len, .start = text, .err = err};
    return parse_top(&ps);
}

void tjson_free(struct tjson *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        tjson_free(j->v[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->v);
    free(j->keys);
    free(j->str);
    free(j);
}

enum tjson_type tjson_type(const struct tjson *j)
{
    return j ? j->type : TJSON_NULL;
}

const struct tjson *tjson_get(const struct tjson *j, const char *key)
{
    if (!j || j->type != TJSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->keys[i], key) == 0)
            return j->v[i];
    return NULL;
}

size_t tjson_len(const struct tjson *j)
{
    return j && (j->type == TJSON_ARRAY || j->type == TJSON_OBJECT) ? j->n : 0;
}

const struct tjson *tjson_at(const struct tjson *j, size_t i)
{
    return i < tjson_len(j) ? j->v[i] : NULL;
}

const char *tjson_key(const struct tjson *j, size_t i)
{
    return j && j->type == TJSON_OBJECT && i < j->n ? j->keys[i] : NULL;
}

const char *tjson_str(const struct tjson *j)
{
    return j && j->type == TJSON_STRING ? j->str : NULL;
}

int tjson_ll(const struct tjson *j, long long *out)
{
    if (!j || j->type != TJSON_NUMBER || !j->is_int)
        return -1;
    *out = j->ll;
    return 0;
}

int tjson_bool(const struct tjson *j)
{
    return j && j->type == TJSON_BOOL ? j->boolean : -1;
}
