/*
 * YAML to JSON for migration files, on libyaml's event parser.
 *
 * Events rather than libyaml's document loader, so an alias is refused when it is met
 * instead of being expanded (a few lines of aliases can otherwise stand for gigabytes).
 * Plain scalars are typed by YAML 1.2's core schema, which keeps "no" and "on" strings
 * (YAML 1.1 made them booleans); quoted scalars and !!str are always strings.
 */
#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "xmalloc.h"
#include "xmctl.h"

#define YAML_MAX_DEPTH 64

struct yp {
    yaml_parser_t parser;
    struct err *err;
};

static int fail_at(struct yp *p, const yaml_mark_t *m, const char *what)
{
    return err_set(p->err, ERR_PERMANENT, "line %zu column %zu: %s", m->line + 1, m->column + 1,
                   what);
}

/* The next event into ev (caller deletes it), or -1 with err. */
static int next(struct yp *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&p->parser, ev)) {
        const yaml_mark_t *m = &p->parser.problem_mark;
        return err_set(p->err, ERR_PERMANENT, "line %zu column %zu: %s", m->line + 1, m->column + 1,
                       p->parser.problem ? p->parser.problem : "invalid YAML");
    }
    return 0;
}

static int matches(const char *pattern, const char *s)
{
    regex_t re;
    XM_ASSERT(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) == 0);
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* A plain scalar by the core schema. */
static json_t *plain_scalar(const char *s)
{
    if (!*s || matches("^(null|Null|NULL|~)$", s))
        return json_null();
    if (matches("^(true|True|TRUE)$", s))
        return json_true();
    if (matches("^(false|False|FALSE)$", s))
        return json_false();
    if (matches("^[-+]?[0-9]+$", s)) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno == 0)
            return json_integer(v);
    }
    if (matches("^0x[0-9a-fA-F]+$", s) || matches("^0o[0-7]+$", s)) {
        errno = 0;
        long long v = strtoll(s + 2, NULL, s[1] == 'x' ? 16 : 8);
        if (errno == 0)
            return json_integer(v);
    }
    if (matches("^[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?$", s))
        return json_real(strtod(s, NULL));
    return json_string(s);
}

static json_t *node(struct yp *p, yaml_event_t *ev, int depth);

/* The rest of a sequence or mapping whose start event was consumed. */
static json_t *collection(struct yp *p, int is_map, int depth)
{
    json_t *out = is_map ? json_object() : json_array();
    for (;;) {
        yaml_event_t ev;
        if (next(p, &ev) < 0)
            goto fail;
        if (ev.type == (is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT)) {
            yaml_event_delete(&ev);
            return out;
        }
        if (!is_map) {
            json_t *v = node(p, &ev, depth + 1);
            if (!v)
                goto fail;
            json_array_append_new(out, v);
            continue;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            fail_at(p, &ev.start_mark, "a key must be a plain string");
            yaml_event_delete(&ev);
            goto fail;
        }
        char *key = xstrdup((const char *)ev.data.scalar.value);
        yaml_mark_t at = ev.start_mark;
        yaml_event_delete(&ev);
        if (json_object_get(out, key)) {
            fail_at(p, &at, "this key is given twice");
            free(key);
            goto fail;
        }
        yaml_event_t vev;
        json_t *v = next(p, &vev) < 0 ? NULL : node(p, &vev, depth + 1);
        if (!v) {
            free(key);
            goto fail;
        }
        json_object_set_new(out, key, v);
        free(key);
    }
fail:
    json_decref(out);
    return NULL;
}

/* Convert the node that starts with ev (consumed and deleted here). */
static json_t *node(struct yp *p, yaml_event_t *ev, int depth)
{
    json_t *out = NULL;
    if (depth > YAML_MAX_DEPTH) {
        fail_at(p, &ev->start_mark, "nested deeper than 64 levels");
        goto out;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev->data.scalar.value;
        const char *tag = (const char *)ev->data.scalar.tag;
        if (tag && strcmp(tag, YAML_STR_TAG) == 0)
            out = json_string(v);
        else if (tag && strcmp(tag, "!") != 0 && strncmp(tag, "tag:yaml.org,2002:", 18) != 0)
            fail_at(p, &ev->start_mark, "custom tags are not supported");
        else if (ev->data.scalar.plain_implicit)
            out = plain_scalar(v);
        else
            out = json_string(v);
        if (!out && !p->err->msg[0])
            fail_at(p, &ev->start_mark, "a string must be valid UTF-8");
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
        out = collection(p, 0, depth);
        break;
    case YAML_MAPPING_START_EVENT:
        out = collection(p, 1, depth);
        break;
    case YAML_ALIAS_EVENT:
        fail_at(p, &ev->start_mark, "aliases (*name) are not supported");
        break;
    default:
        fail_at(p, &ev->start_mark, "unexpected YAML structure");
        break;
    }
out:
    yaml_event_delete(ev);
    return out;
}

/* Consume an event of the given type, or fail with what. */
static int expect(struct yp *p, yaml_event_type_t type, const char *what)
{
    yaml_event_t ev;
    if (next(p, &ev) < 0)
        return -1;
    int ok = ev.type == type;
    if (!ok)
        fail_at(p, &ev.start_mark, what);
    yaml_event_delete(&ev);
    return ok ? 0 : -1;
}

json_t *yaml_to_json(const char *text, size_t len, struct err *err)
{
    struct yp p = {.err = err};
    struct err local = {0};
    if (!err)
        p.err = &local;
    p.err->msg[0] = '\0';
    json_t *doc = NULL;
    yaml_event_t ev;
    XM_ASSERT(yaml_parser_initialize(&p.parser));
    yaml_parser_set_input_string(&p.parser, (const unsigned char *)text, len);
    if (expect(&p, YAML_STREAM_START_EVENT, "not a YAML stream") < 0)
        goto out;
    if (next(&p, &ev) < 0)
        goto out;
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        fail_at(&p, &ev.start_mark, "the file is empty");
        yaml_event_delete(&ev);
        goto out;
    }
    yaml_event_delete(&ev);
    if (next(&p, &ev) < 0)
        goto out;
    doc = node(&p, &ev, 0);
    if (!doc)
        goto out;
    if (expect(&p, YAML_DOCUMENT_END_EVENT, "unexpected content after the document") < 0 ||
        expect(&p, YAML_STREAM_END_EVENT, "only one YAML document is allowed") < 0) {
        json_decref(doc);
        doc = NULL;
    }
out:
    yaml_parser_delete(&p.parser);
    return doc;
}
