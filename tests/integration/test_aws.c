/*
 * cloud/aws/aws.c against moto_server with SigV4 checking on: signed EC2 and S3 calls
 * succeed, a wrong secret is the permanent "AWS rejected the credentials" error, and no
 * error text carries the secret.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/aws.h"
#include "harness.h"
#include "xmalloc.h"

static struct moto moto;
static char log_path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(log_path, sizeof(log_path), "/tmp/xm-moto-%d.log", (int)getpid());
    moto_start(&moto, 1, log_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    moto_stop(&moto);
    unlink(log_path);
    return 0;
}

static struct aws *client(const char *secret)
{
    struct aws_config cfg = {.access_key = moto.access_key,
                             .secret_key = secret ? secret : moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = moto.endpoint,
                             .max_attempts = 2,
                             .backoff_base_ms = 10};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    assert_non_null(a);
    return a;
}

static void test_signed_ec2_call(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    char *xml = NULL;
    const char *params[] = {"Filter.1.Name", "isDefault", "Filter.1.Value.1", "true", NULL};
    assert_int_equal(aws_ec2(a, "DescribeVpcs", params, &xml, &err), 0);
    char *vpc = aws_xml_text(xml, strlen(xml), "vpcSet/item/vpcId");
    assert_non_null(vpc);
    assert_int_equal(strncmp(vpc, "vpc-", 4), 0);
    free(vpc);
    free(xml);
    aws_free(a);
}

static void test_wrong_secret_is_auth_failure(void **state)
{
    (void)state;
    const char *wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGSECRET";
    struct aws *a = client(wrong);
    struct err err = {0};
    char *xml = NULL;
    assert_int_equal(aws_ec2(a, "DescribeVpcs", NULL, &xml, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "AWS rejected the credentials (AuthFailure)"));
    assert_null(strstr(err.msg, "WRONGSECRET"));
    assert_int_equal(aws_last_attempts(a), 1); /* not retried */

    /* S3 answers a bad signature with 403 SignatureDoesNotMatch. */
    struct aws_request req = {.service = "s3", .method = "GET", .path = "/"};
    struct http_response resp;
    http_response_init(&resp);
    assert_int_equal(aws_call(a, &req, &resp, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "AWS rejected the credentials ("));
    assert_null(strstr(err.msg, "WRONGSECRET"));
    http_response_release(&resp);
    aws_free(a);
}

static void test_signed_s3_calls(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct err err = {0};
    struct http_response resp;
    http_response_init(&resp);
    struct aws_request mk = {.service = "s3", .method = "PUT", .path = "/xm-core-test"};
    assert_int_equal(aws_call(a, &mk, &resp, &err), 0);
    const char *body = "hello";
    struct aws_request put = {.service = "s3",
                              .method = "PUT",
                              .path = "/xm-core-test/a%20b/c.txt",
                              .body = body,
                              .body_len = 5};
    assert_int_equal(aws_call(a, &put, &resp, &err), 0);
    struct aws_request get = {
        .service = "s3", .method = "GET", .path = "/xm-core-test/a%20b/c.txt"};
    assert_int_equal(aws_call(a, &get, &resp, &err), 0);
    assert_int_equal(resp.body_len, 5);
    assert_memory_equal(resp.body, "hello", 5);
    struct aws_request miss = {
        .service = "s3", .method = "GET", .path = "/xm-core-test/nothing", .ok_404 = 1};
    assert_int_equal(aws_call(a, &miss, &resp, &err), 0);
    assert_int_equal(resp.status, 404);
    miss.ok_404 = 0;
    assert_int_equal(aws_call(a, &miss, &resp, &err), -1);
    assert_non_null(strstr(err.msg, "NoSuchKey"));
    http_response_release(&resp);
    aws_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_ec2_call),
        cmocka_unit_test(test_wrong_secret_is_auth_failure),
        cmocka_unit_test(test_signed_s3_calls),
    };
    return cmocka_run_group_tests_name("integration.aws", tests, setup, teardown);
}
