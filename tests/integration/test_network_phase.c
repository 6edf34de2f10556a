/*
 * The network phase end to end for AWS: a real xm-network worker takes a network job
 * from Redis, opens the migration's sealed credential, builds the blueprint's network in
 * moto_server (SigV4 checking on), records ids and resources, and starts every host's
 * prep job. A second network job for the same migration creates nothing new.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/aws.h"
#include "harness.h"
#include "secret.h"
#include "xmalloc.h"

#ifndef XM_NETWORK_BIN
#error "XM_NETWORK_BIN must name the xm-network binary"
#endif

static const char master_hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static const char blueprint[] =
    "{\"network\":{\"name\":\"corp\",\"cidr\":\"10.60.0.0/16\",\"subnets\":["
    "{\"name\":\"web\",\"cidr\":\"10.60.1.0/24\",\"public\":true},"
    "{\"name\":\"db\",\"cidr\":\"10.60.2.0/24\"}]},"
    "\"hosts\":[{\"host\":\"web1\",\"machine_type\":\"t3.small\",\"subnet\":\"web\"},"
    "{\"host\":\"db1\",\"machine_type\":\"t3.small\",\"subnet\":\"db\"}],"
    "\"firewall\":[{\"protocol\":\"tcp\",\"port\":443,\"source\":\"0.0.0.0/0\"}]}";

struct t {
    struct redis_srv srv;
    struct moto moto;
    redisContext *c;
    pid_t worker;
    char moto_log[300];
};

static int setup(void **state)
{
    struct t *t = xcalloc(1, sizeof(*t));
    rs_start(&t->srv);
    t->c = rs_connect(&t->srv);
    snprintf(t->moto_log, sizeof(t->moto_log), "%s/moto.log", t->srv.dir);
    moto_start(&t->moto, 1, t->moto_log);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    if (t->worker > 0)
        stop_process(t->worker, SIGTERM);
    moto_stop(&t->moto);
    redisFree(t->c);
    rs_destroy(&t->srv);
    free(t);
    return 0;
}

/* The state xm-api writes for an approved migration, with its credential sealed. */
static void seed(struct t *t, const char *mig, const char *secret_key)
{
    unsigned char key[32];
    struct err err = {0};
    assert_int_equal(secret_key_parse(master_hex, key, &err), 0);
    char *plain = xasprintf("{\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\"}",
                            t->moto.access_key, secret_key);
    char *sealed = secret_seal(key, "cred-1", (unsigned char *)plain, strlen(plain));
    freeReplyObject(rs_cmd(t->c, "HSET xm:cred:cred-1 kind aws sealed %s", sealed));
    freeReplyObject(rs_cmd(t->c,
                           "HSET xm:mig:%s id %s cloud aws region us-east-1 credential cred-1 "
                           "status approved blueprint %s",
                           mig, mig, blueprint));
    freeReplyObject(rs_cmd(t->c, "SADD xm:mig:%s:hosts web1 db1", mig));
    free(plain);
    free(sealed);
}

static void start_worker(struct t *t)
{
    char endpoint[128];
    snprintf(endpoint, sizeof(endpoint), "XM_AWS_ENDPOINT=%s", t->moto.endpoint);
    char *env[] = {endpoint,
                   "XM_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                   "XM_CONSUMER=net1",
                   "XM_BLOCK_MS=100",
                   "XM_MAX_ATTEMPTS=2",
                   "XM_RETRY_BASE_MS=50",
                   "XM_LOG_LEVEL=debug",
                   NULL};
    char *argv[] = {XM_NETWORK_BIN, NULL};
    t->worker = spawn_worker(&t->srv, "network", argv, env);
}

struct cond {
    struct t *t;
    const char *key;
    long long n;
};

static int xlen_reaches(void *arg)
{
    struct cond *k = arg;
    return rs_int(k->t->c, "XLEN %s", k->key) >= k->n;
}

static char *vpc_count_xml(struct t *t, const char *mig)
{
    struct aws_config cfg = {.access_key = t->moto.access_key,
                             .secret_key = t->moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = t->moto.endpoint};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    const char *params[] = {"Filter.1.Name", "tag:xmigrate:migration", "Filter.1.Value.1", mig,
                            NULL};
    char *xml = NULL;
    assert_int_equal(aws_ec2(a, "DescribeVpcs", params, &xml, &err), 0);
    aws_free(a);
    return xml;
}

static void test_network_phase_builds_once_and_starts_hosts(void **state)
{
    struct t *t = *state;
    seed(t, "mig-n1", t->moto.secret_key);
    start_worker(t);
    enqueue_job(t->c, "network", "mig-n1", "-", NULL, "{}");
    struct cond k = {t, "xm:q:prep", 2};
    if (!wait_until(xlen_reaches, &k, 60000))
        fail_msg("no prep jobs; dead letters: %lld", rs_int(t->c, "XLEN xm:dead"));

    char *net = rs_str(t->c, "HGET xm:mig:mig-n1 network");
    assert_non_null(strstr(net, "\"network_id\":\"vpc-"));
    assert_non_null(strstr(net, "\"web\":\"subnet-"));
    assert_non_null(strstr(net, "\"db\":\"subnet-"));
    char *status = rs_str(t->c, "HGET xm:mig:mig-n1 status");
    assert_string_equal(status, "migrating");
    assert_true(rs_int(t->c, "SCARD xm:mig:mig-n1:resources") >= 6);
    char *web = rs_str(t->c, "HGET xm:host:mig-n1:web1 phase");
    assert_string_equal(web, "prep");

    /* Again: the same ids, still one VPC. */
    enqueue_job(t->c, "network", "mig-n1", "-", NULL, "{}");
    k.n = 4;
    assert_true(wait_until(xlen_reaches, &k, 60000));
    char *net2 = rs_str(t->c, "HGET xm:mig:mig-n1 network");
    assert_string_equal(net, net2);
    char *xml = vpc_count_xml(t, "mig-n1");
    size_t n = 0;
    char **ids = aws_xml_all(xml, strlen(xml), "vpcId", &n);
    assert_int_equal(n, 1);
    aws_strv_free(ids, n);
    free(xml);
    free(net);
    free(net2);
    free(status);
    free(web);
}

static void test_bad_credential_fails_the_host_permanently(void **state)
{
    struct t *t = *state;
    seed(t, "mig-n2", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGSECRET");
    start_worker(t);
    enqueue_job(t->c, "network", "mig-n2", "-", NULL, "{}");
    struct cond k = {t, "xm:dead", 1};
    assert_true(wait_until(xlen_reaches, &k, 60000));
    redisReply *r = rs_cmd(t->c, "XRANGE xm:dead - +");
    int found = 0;
    for (size_t i = 0; i + 1 < r->element[0]->element[1]->elements; i += 2) {
        redisReply *fv = r->element[0]->element[1];
        if (strcmp(fv->element[i]->str, "error") == 0) {
            found = 1;
            assert_non_null(strstr(fv->element[i + 1]->str, "AWS rejected the credentials"));
            assert_null(strstr(fv->element[i + 1]->str, "WRONGSECRET"));
        }
        if (strcmp(fv->element[i]->str, "attempt") == 0)
            assert_string_equal(fv->element[i + 1]->str, "1"); /* permanent: not retried */
    }
    assert_true(found);
    freeReplyObject(r);
    assert_int_equal(rs_int(t->c, "XLEN xm:q:prep"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_network_phase_builds_once_and_starts_hosts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_credential_fails_the_host_permanently, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("integration.network_phase", tests, NULL, NULL);
}
