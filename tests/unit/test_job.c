/* queue/job.c: envelope parsing and checking, without Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "job.h"

/* Build an XREADGROUP-shaped entry [id, [f, v, ...]] by hand. */
struct fake {
    redisReply entry, id, fv;
    redisReply *entry_el[2];
    redisReply fields[32];
    redisReply *fv_el[32];
};

static void str(redisReply *r, const char *s)
{
    memset(r, 0, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = (char *)s;
    r->len = strlen(s);
}

static redisReply *make(struct fake *f, const char *const *kv)
{
    memset(f, 0, sizeof(*f));
    str(&f->id, "1-0");
    size_t n = 0;
    for (; kv[n]; n++) {
        str(&f->fields[n], kv[n]);
        f->fv_el[n] = &f->fields[n];
    }
    f->fv.type = REDIS_REPLY_ARRAY;
    f->fv.elements = n;
    f->fv.element = f->fv_el;
    f->entry_el[0] = &f->id;
    f->entry_el[1] = &f->fv;
    f->entry.type = REDIS_REPLY_ARRAY;
    f->entry.elements = 2;
    f->entry.element = f->entry_el;
    return &f->entry;
}

static void test_parse_good_entry(void **state)
{
    (void)state;
    static const char *const kv[] = {
        "job",      "abc",   "migration", "m-1",       "host",  "web.01",  "disk",
        "sda",      "phase", "clone",     "attempt",   "2",     "group",   "",
        "enqueued", "123",   "payload",   "{\"a\":1}", "extra", "ignored", NULL};
    struct fake f;
    struct job job;
    struct err e = {0};
    job_init(&job);
    assert_int_equal(job_from_entry(&job, "xm:q:clone", make(&f, kv), &e), 0);
    assert_string_equal(job.entry, "1-0");
    assert_string_equal(job.id, "abc");
    assert_string_equal(job.host, "web.01");
    assert_string_equal(job.disk, "sda");
    assert_int_equal(job.attempt, 2);
    assert_int_equal(job.enqueued_us, 123);
    assert_string_equal(job.payload, "{\"a\":1}");
    job_release(&job);
}

static void expect_refused(const char *const *kv, const char *needle)
{
    struct fake f;
    struct job job;
    struct err e = {0};
    job_init(&job);
    assert_int_equal(job_from_entry(&job, "xm:q:p", make(&f, kv), &e), -1);
    assert_int_equal(e.kind, ERR_PERMANENT);
    if (!strstr(e.msg, needle))
        fail_msg("'%s' does not contain '%s'", e.msg, needle);
    assert_string_equal(job.entry, "1-0"); /* kept, so the entry can be dead-lettered */
    job_release(&job);
}

static void test_refuse_bad_entries(void **state)
{
    (void)state;
    static const char *const no_job[] = {"migration", "m",       "host", "h", "phase",
                                         "p",         "attempt", "1",    NULL};
    static const char *const bad_host[] = {"job",   "j", "migration", "m", "host", "h$(x)",
                                           "phase", "p", "attempt",   "1", NULL};
    static const char *const bad_phase[] = {"job",   "j",     "migration", "m", "host", "h",
                                            "phase", "Clone", "attempt",   "1", NULL};
    static const char *const bad_attempt[] = {"job",   "j", "migration", "m", "host", "h",
                                              "phase", "p", "attempt",   "0", NULL};
    static const char *const bad_payload[] = {"job",     "j",     "migration", "m",       "host",
                                              "h",       "phase", "p",         "attempt", "1",
                                              "payload", "[1]",   NULL};
    static const char *const dup_payload[] = {
        "job", "j",       "migration",         "m", "host", "h", "phase", "p", "attempt",
        "1",   "payload", "{\"a\":1,\"a\":2}", NULL};
    expect_refused(no_job, "job: missing");
    expect_refused(bad_host, "host: not a valid identifier");
    expect_refused(bad_phase, "phase: not a valid phase name");
    expect_refused(bad_attempt, "attempt: missing or not 1..1000");
    expect_refused(bad_payload, "payload: not a JSON object");
    expect_refused(dup_payload, "payload: not JSON");
}

static void test_spec_xadd_roundtrip(void **state)
{
    (void)state;
    struct job_spec spec = {.migration = "m1", .host = "h1", .phase = "prep", .attempt = 0};
    struct err e = {0};
    assert_int_equal(job_spec_check(&spec, &e), 0);
    struct cmd c;
    cmd_init(&c);
    job_spec_xadd(&c, &spec, 99);
    assert_string_equal(c.argv[0], "XADD");
    assert_string_equal(c.argv[1], "xm:q:prep");
    assert_string_equal(c.argv[2], "*");
    assert_string_equal(c.argv[3], "job");
    assert_int_equal(strlen(c.argv[4]), 32); /* fresh random id */
    int found_attempt = 0;
    for (int i = 3; i + 1 < c.argc; i += 2)
        if (strcmp(c.argv[i], "attempt") == 0)
            found_attempt = strcmp(c.argv[i + 1], "1") == 0;
    assert_true(found_attempt);
    cmd_release(&c);

    spec.host = "";
    assert_int_equal(job_spec_check(&spec, &e), -1);
    char longid[200];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    spec.host = longid;
    assert_int_equal(job_spec_check(&spec, &e), -1);
}

static void test_new_ids_differ(void **state)
{
    (void)state;
    char a[33], b[33];
    job_new_id(a);
    job_new_id(b);
    assert_string_not_equal(a, b);
    assert_true(job_valid_ident(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good_entry),
        cmocka_unit_test(test_refuse_bad_entries),
        cmocka_unit_test(test_spec_xadd_roundtrip),
        cmocka_unit_test(test_new_ids_differ),
    };
    return cmocka_run_group_tests_name("unit.job", tests, NULL, NULL);
}
