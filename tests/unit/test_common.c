/* common/: err, config, log, xmalloc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "xmalloc.h"

static void test_err_set_and_prefix(void **state)
{
    (void)state;
    struct err e = {0};
    assert_int_equal(err_set(&e, ERR_TRANSIENT, "redis at '%s': %s", "h:1", "refused"), -1);
    assert_int_equal(e.kind, ERR_TRANSIENT);
    assert_string_equal(e.msg, "redis at 'h:1': refused");
    err_prefix(&e, "job '%s'", "j1");
    assert_string_equal(e.msg, "job 'j1': redis at 'h:1': refused");
    assert_int_equal(err_set(NULL, ERR_PERMANENT, "ignored"), -1);
    assert_string_equal(err_kind_str(ERR_PERMANENT), "permanent");

    /* A message longer than the buffer is cut, never overflowed. */
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    err_set(&e, ERR_PERMANENT, "%s", big);
    assert_int_equal(strlen(e.msg), ERR_MSG_MAX - 1);
    err_prefix(&e, "%s", big);
    assert_int_equal(strlen(e.msg), ERR_MSG_MAX - 1);
}

static const char *env_a[][2] = {{"XM_REDIS_PORT", "6380"},
                                 {"XM_MAX_ATTEMPTS", "7"},
                                 {"XM_MASTER_KEY", "s3cret-key"},
                                 {NULL, NULL}};
static const char *(*current)[2];

static const char *lookup(const char *name)
{
    for (size_t i = 0; current[i][0]; i++)
        if (strcmp(current[i][0], name) == 0)
            return current[i][1];
    return NULL;
}

static void test_config_defaults_and_overrides(void **state)
{
    (void)state;
    struct err e = {0};
    current = env_a;
    assert_int_equal(config_load_from(lookup, &e), 0);
    assert_int_equal(xm_config.redis_port, 6380);
    assert_int_equal(xm_config.max_attempts, 7);
    assert_string_equal(xm_config.redis_host, "127.0.0.1");
    char *dump = config_dump();
    assert_non_null(strstr(dump, "XM_MASTER_KEY=<redacted>\n"));
    assert_null(strstr(dump, "s3cret"));
    assert_non_null(strstr(dump, "XM_REDIS_PORT=6380\n"));
    free(dump);
    config_release();
}

static void expect_bad(const char *name, const char *value, const char *needle)
{
    const char *env[][2] = {{name, value}, {NULL, NULL}};
    current = env;
    struct err e = {0};
    assert_int_equal(config_load_from(lookup, &e), -1);
    assert_int_equal(e.kind, ERR_PERMANENT);
    if (!strstr(e.msg, needle))
        fail_msg("message '%s' does not contain '%s'", e.msg, needle);
    config_release();
}

static void test_config_bad_values_name_the_variable(void **state)
{
    (void)state;
    expect_bad("XM_REDIS_PORT", "70000", "XM_REDIS_PORT: '70000' is not a whole number from 1");
    expect_bad("XM_REDIS_PORT", "12ab", "XM_REDIS_PORT");
    expect_bad("XM_REDIS_PORT", "", "XM_REDIS_PORT");
    expect_bad("XM_MAX_ATTEMPTS", "0", "XM_MAX_ATTEMPTS");
    expect_bad("XM_BLOCK_MS", "99999999999999999999999", "XM_BLOCK_MS");
    expect_bad("XM_LOG_LEVEL", "loud", "XM_LOG_LEVEL: 'loud' is not valid");
}

static void test_parse_ll(void **state)
{
    (void)state;
    long long v;
    assert_int_equal(config_parse_ll("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(config_parse_ll("-1", 0, 100, &v), -1);
    assert_int_equal(config_parse_ll(" 4", 0, 100, &v), -1);
    assert_int_equal(config_parse_ll("4 ", 0, 100, &v), -1);
    assert_int_equal(config_parse_ll(NULL, 0, 100, &v), -1);
}

static void test_log_quote(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(log_quote(buf, sizeof(buf), "a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
    assert_string_equal(log_quote(buf, 8, "abcdefghij"), "\"abcd\"");
    assert_int_equal(log_set_level("warn"), 0);
    assert_int_equal(log_min_level, LOG_WARN);
    assert_int_equal(log_set_level("nope"), -1);
    log_set_level("info");
}

static void test_xmalloc_helpers(void **state)
{
    (void)state;
    char *s = xasprintf("%s-%d", "a", 7);
    assert_string_equal(s, "a-7");
    free(s);
    char small[4];
    assert_int_equal(xstrlcpy(small, "abcdef", sizeof(small)), 6);
    assert_string_equal(small, "abc");
    s = xstrndup("abcdef", 2);
    assert_string_equal(s, "ab");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_prefix),
        cmocka_unit_test(test_config_defaults_and_overrides),
        cmocka_unit_test(test_config_bad_values_name_the_variable),
        cmocka_unit_test(test_parse_ll),
        cmocka_unit_test(test_log_quote),
        cmocka_unit_test(test_xmalloc_helpers),
    };
    return cmocka_run_group_tests_name("unit.common", tests, NULL, NULL);
}
