/*
 * The two parsers of xmctl on their own: cli/sse.c (the event stream, fed in pieces of
 * every size, with every line ending the format allows) and cli/yaml.c (YAML to JSON:
 * the core schema's typing, and what must be refused). test_cli.py covers them end to
 * end against xm-api; these cases cover inputs xm-api never sends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "sse.h"
#include "xmctl.h"

/* ---------------------------------------------------------------- sse */

struct seen {
    char log[4096];
    int n;
};

static void collect(void *arg, const struct sse_event *ev)
{
    struct seen *s = arg;
    size_t len = strlen(s->log);
    snprintf(s->log + len, sizeof(s->log) - len, "[%s|%s|%s]", ev->id, ev->type, ev->data);
    s->n++;
}

/* Feed text in chunks of `step` bytes; return what was dispatched. */
static void feed_in_steps(const char *text, size_t step, struct seen *s)
{
    struct sse_parser p;
    memset(s, 0, sizeof(*s));
    sse_parser_init(&p, collect, s);
    size_t len = strlen(text);
    for (size_t off = 0; off < len; off += step)
        assert_int_equal(sse_parser_feed(&p, text + off, off + step > len ? len - off : step), 0);
    sse_parser_release(&p);
}

static void test_sse_any_chunking_and_line_ending(void **state)
{
    (void)state;
    static const char *const texts[] = {
        ": keep-alive\n\nid: 1-0\nevent: job.done\ndata: {\"a\":1}\n\n"
        "id: 2-0\ndata: one\ndata: two\n\n",
        ": keep-alive\r\n\r\nid: 1-0\r\nevent: job.done\r\ndata: {\"a\":1}\r\n\r\n"
        "id: 2-0\r\ndata: one\r\ndata: two\r\n\r\n",
        ": keep-alive\r\rid: 1-0\revent: job.done\rdata: {\"a\":1}\r\r"
        "id: 2-0\rdata: one\rdata: two\r\r",
    };
    const char *want = "[1-0|job.done|{\"a\":1}][2-0|message|one\ntwo]";
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
        for (size_t step = 1; step <= strlen(texts[t]); step++) {
            struct seen s;
            feed_in_steps(texts[t], step, &s);
            assert_string_equal(s.log, want);
        }
}

static void test_sse_fields(void **state)
{
    (void)state;
    struct seen s;
    /* no space after the colon; an unknown field; an id-only block keeps the id for the
     * next event; an event without data is not dispatched; a half event at the end
     * neither */
    feed_in_steps("data:x\nretry: 5\nfoo: bar\n\nid: 7-1\n\nevent: lonely\n\n"
                  "data\n\nevent: e\ndata: y\n\ndata: cut",
                  1000, &s);
    assert_string_equal(s.log, "[|message|x][7-1|message|][7-1|e|y]");
}

static void test_sse_refuses_a_line_over_the_cap(void **state)
{
    (void)state;
    struct seen s = {0};
    struct sse_parser p;
    sse_parser_init(&p, collect, &s);
    char *big = malloc(SSE_MAX_LINE + 10);
    memset(big, 'a', SSE_MAX_LINE + 10);
    assert_int_equal(sse_parser_feed(&p, big, SSE_MAX_LINE + 10), -1);
    free(big);
    /* after a reconnect: the half event is gone, the last id stays */
    sse_parser_reset(&p);
    assert_int_equal(sse_parser_feed(&p, "id: 3-0\ndata: z\n\n", 17), 0);
    assert_string_equal(s.log, "[3-0|message|z]");
    sse_parser_release(&p);
}

/* ---------------------------------------------------------------- yaml */

static json_t *yaml(const char *text, struct err *err)
{
    return yaml_to_json(text, strlen(text), err);
}

static void test_yaml_core_schema(void **state)
{
    (void)state;
    struct err err = {0};
    json_t *j = yaml("# comment\n"
                     "s: hello world\n"
                     "no: no\n"
                     "on: on\n"
                     "n1: ~\n"
                     "n2: null\n"
                     "n3:\n"
                     "t: true\n"
                     "f: False\n"
                     "i: -42\n"
                     "hex: 0x1F\n"
                     "oct: 0o17\n"
                     "r: 1.5e3\n"
                     "quoted: \"22\"\n"
                     "single: 'true'\n"
                     "tagged: !!str 80\n"
                     "ip: 10.0.0.1\n"
                     "cidr: 10.20.0.0/16\n"
                     "list: [1, two, {three: 3}]\n"
                     "block:\n"
                     "  - a: 1\n"
                     "    b: |\n"
                     "      line one\n"
                     "      line two\n",
                     &err);
    assert_non_null(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"block\":[{\"a\":1,\"b\":\"line one\\nline two\\n\"}],"
                              "\"cidr\":\"10.20.0.0/16\",\"f\":false,\"hex\":31,\"i\":-42,"
                              "\"ip\":\"10.0.0.1\",\"list\":[1,\"two\",{\"three\":3}],"
                              "\"n1\":null,\"n2\":null,\"n3\":null,\"no\":\"no\",\"oct\":15,"
                              "\"on\":\"on\",\"quoted\":\"22\",\"r\":1500.0,\"s\":\"hello world\","
                              "\"single\":\"true\",\"t\":true,\"tagged\":\"80\"}");
    free(text);
    json_decref(j);
}

static void test_yaml_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"a: &x [1]\nb: *x\n", "line 2 column 4: aliases"},
        {"a: 1\na: 2\n", "line 2 column 1: this key is given twice"},
        {"a: 1\n---\nb: 2\n", "only one YAML document"},
        {"? [a]\n: 1\n", "a key must be a plain string"},
        {"a: !custom 1\n", "custom tags"},
        {"a: [1, 2\n", "line 2"},
        {"", "empty"},
        {"a:\n\tb: 1\n", "line 2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct err err = {0};
        json_t *j = yaml(cases[i].text, &err);
        if (j || !strstr(err.msg, cases[i].want))
            fail_msg("case %zu: got '%s', want '%s'", i, err.msg, cases[i].want);
    }
    /* nesting is capped: 100 levels of flow sequences */
    char deep[256];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = '\0';
    struct err err = {0};
    assert_null(yaml(deep, &err));
    assert_non_null(strstr(err.msg, "nested deeper than 64"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_any_chunking_and_line_ending),
        cmocka_unit_test(test_sse_fields),
        cmocka_unit_test(test_sse_refuses_a_line_over_the_cap),
        cmocka_unit_test(test_yaml_core_schema),
        cmocka_unit_test(test_yaml_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
