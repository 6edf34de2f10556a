/*
 * cloud/aws/vmimport.c against tests/fakes/ec2import.py (moto has no VM Import/Export),
 * with S3 on a moto_server without signature checking: the fake checks our SigV4 itself
 * and looks the disk objects up in that moto.
 *
 * A small raw image uploaded with the s3 module becomes an AMI (ImportImage) and a
 * snapshot (ImportSnapshot), with the progress callback told every step in order; a
 * second start of the same disk attaches to the same task (by tags, and by client token
 * alone); Describe paging is followed. A missing object, a corrupt image and a cancelled
 * task are permanent errors carrying AWS's message; a missing vmimport role is the clear
 * permanent error; a wrong secret is "AWS rejected the credentials (AuthFailure)"; a wait
 * that runs out is transient; throttling and 503s on the way (tests/fakes/faultproxy.py in
 * front of the fake) are retried through. No error message carries a secret.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/aws.h"
#include "aws/s3.h"
#include "aws/vmimport.h"
#include "harness.h"
#include "xmalloc.h"

#ifndef XM_EC2IMPORT_SCRIPT
#define XM_EC2IMPORT_SCRIPT "tests/fakes/ec2import.py"
#endif
#ifndef XM_FAULTPROXY_SCRIPT
#define XM_FAULTPROXY_SCRIPT "tests/fakes/faultproxy.py"
#endif

#define ACCESS_KEY "AKIAXMIGRATEVMIMPORT"
#define SECRET_KEY "vmimport-fake-secret-0123456789abcdefghij"
#define WRONG_SECRET "not-the-secret-at-all-0123456789abcdefgh"
#define BUCKET "xm-vmimport"
#define MIGRATION "mig-vmi-1"
#define KEY_OK "xmigrate/" MIGRATION "/web-1/sda.raw"
#define KEY_CORRUPT "xmigrate/" MIGRATION "/web-1/corrupt-sdb.raw"
#define KEY_MISSING "xmigrate/" MIGRATION "/web-1/never-uploaded.raw"
#define IMAGE_LEN (64 * 1024)

static struct moto moto; /* S3 only, without signature checking */
static char moto_log[256];

/* A Python helper (the fake or the fault proxy) started here. */
struct helper {
    pid_t pid;
    char endpoint[64];
    char log[256];
};
static struct helper fake;        /* the vmimport role exists */
static struct helper fake_norole; /* started with --no-vmimport-role */
static struct helper proxy;       /* faultproxy.py in front of fake */
static struct http_client *ctl;   /* control requests (/__config, /__stats, ...) */

/* ---------------------------------------------------------------- helpers */

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        no_secret(&err);                                                                           \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s", #call, err.msg);                                                    \
    } while (0)

/* The call fails with an error of kind whose message holds text. */
#define FAILS(call, kind_, text)                                                                   \
    do {                                                                                           \
        err_clear(&err);                                                                           \
        int rc_ = (call);                                                                          \
        no_secret(&err);                                                                           \
        print_message("  %s\n", err.msg);                                                          \
        if (rc_ != -1)                                                                             \
            fail_msg("%s succeeded", #call);                                                       \
        if (err.kind != (kind_) || !strstr(err.msg, (text)))                                       \
            fail_msg("%s: want %s error with '%s', got %s: %s", #call, err_kind_str(kind_),        \
                     (text), err_kind_str(err.kind), err.msg);                                     \
    } while (0)

static void no_secret(const struct err *err)
{
    assert_null(strstr(err->msg, SECRET_KEY));
    assert_null(strstr(err->msg, WRONG_SECRET));
}

/* One control request to a helper: the status, and the body (new) in *out if out. */
static long ctl_send(const struct helper *h, const char *method, const char *path, const char *body,
                     char **out)
{
    char url[128];
    snprintf(url, sizeof(url), "%s%s", h->endpoint, path);
    struct http_request req = {
        .method = method, .url = url, .body = body, .body_len = body ? strlen(body) : 0};
    struct http_response resp;
    http_response_init(&resp);
    struct err err = {0};
    long status = http_send(ctl, &req, &resp, &err) == 0 ? resp.status : -1;
    if (out) {
        *out = resp.body;
        resp.body = NULL;
    }
    http_response_release(&resp);
    return status;
}

static long long ctl_stat(const struct helper *h, const char *name)
{
    char *body = NULL;
    assert_int_equal(ctl_send(h, "GET", "/__stats", NULL, &body), 200);
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    json_t *v = json_object_get(j, name);
    assert_true(json_is_integer(v));
    long long n = json_integer_value(v);
    json_decref(j);
    free(body);
    return n;
}

static void fake_config(const char *json)
{
    assert_int_equal(ctl_send(&fake, "POST", "/__config", json, NULL), 200);
}

static int answers(void *arg)
{
    return ctl_send(arg, "GET", "/__stats", NULL, NULL) == 200;
}

/* Start python3 with args; it prints {"port": N, ...} once it listens. */
static void helper_start(struct helper *h, const char *log_name, char *const args[])
{
    snprintf(h->log, sizeof(h->log), "/tmp/xm-vmimport-%s-%d.log", log_name, (int)getpid());
    char *argv[16] = {"python3"};
    size_t n = 1;
    for (; args[n - 1] && n < XM_ARRAY_LEN(argv) - 1; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    struct helper_proc p;
    helper_proc_start(&p, argv, h->log);
    h->pid = p.pid;
    snprintf(h->endpoint, sizeof(h->endpoint), "%s", p.endpoint);
    assert_true(wait_until(answers, h, 10000));
}

static void fake_start(struct helper *h, const char *log_name, int role)
{
    char *args[] = {XM_EC2IMPORT_SCRIPT,
                    "--listen",
                    "0",
                    "--access-key",
                    ACCESS_KEY,
                    "--secret-key",
                    SECRET_KEY,
                    "--s3",
                    moto.endpoint,
                    role ? NULL : "--no-vmimport-role",
                    NULL};
    helper_start(h, log_name, args);
}

static void helper_stop(struct helper *h)
{
    if (h->pid > 0)
        stop_process(h->pid, SIGTERM);
    h->pid = 0;
    unlink(h->log);
}

/* A client with EC2 at ec2_endpoint (NULL: the fake) and S3 at moto. */
static struct aws *client(const char *ec2_endpoint, const char *secret)
{
    struct aws_config cfg = {.access_key = ACCESS_KEY,
                             .secret_key = secret ? secret : SECRET_KEY,
                             .region = "us-east-1",
                             .endpoint_s3 = moto.endpoint,
                             .endpoint_ec2 = ec2_endpoint ? ec2_endpoint : fake.endpoint,
                             .max_attempts = 4,
                             .backoff_base_ms = 5,
                             .backoff_cap_ms = 50};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    assert_non_null(a);
    return a;
}

static struct vmimport_spec spec_for(const char *host, const char *disk, const char *key)
{
    struct vmimport_spec s = {.bucket = BUCKET,
                              .key = key,
                              .format = "raw",
                              .tags = {.migration = MIGRATION, .host = host, .disk = disk}};
    return s;
}

/* What the progress callback was told, in order. */
struct progress {
    int n;
    int pct[32];
    char step[32][64];
};

static void record(void *arg, int percent, const char *status)
{
    struct progress *p = arg;
    assert_true(p->n < 32);
    p->pct[p->n] = percent;
    xstrlcpy(p->step[p->n], status, sizeof(p->step[0]));
    p->n++;
}

static int step_index(const char *const *steps, size_t n, const char *step)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(steps[i], step) == 0)
            return (int)i;
    return -1;
}

/* Every step told once, in lifecycle order, percent never going back, ending completed. */
static void check_progress(const struct progress *p, const char *const *steps, size_t n_steps,
                           int every_step)
{
    assert_true(p->n >= 1);
    int last = -1, last_pct = -1;
    for (int i = 0; i < p->n; i++) {
        int at = step_index(steps, n_steps, p->step[i]);
        if (at < 0)
            fail_msg("progress step '%s' is not a lifecycle step", p->step[i]);
        assert_true(at > last);
        assert_true(p->pct[i] >= last_pct);
        last = at;
        last_pct = p->pct[i];
    }
    assert_string_equal(p->step[p->n - 1], "completed");
    assert_int_equal(p->pct[p->n - 1], 100);
    if (every_step) /* told of each step after "pending" (the start's answer) */
        assert_int_equal(p->n, (int)n_steps - 1);
}

static const char *const image_steps[] = {"pending",  "validating", "validated",     "converting",
                                          "updating", "booting",    "preparing ami", "completed"};
static const char *const snapshot_steps[] = {"pending", "validating", "validated",
                                             "downloading/converting", "completed"};

static struct vmimport_wait_opts quick(struct progress *p)
{
    struct vmimport_wait_opts o = {
        .timeout_s = 30, .poll_ms = 2, .poll_max_ms = 10, .progress = p ? record : NULL, .arg = p};
    return o;
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state)
{
    (void)state;
    snprintf(moto_log, sizeof(moto_log), "/tmp/xm-vmimport-moto-%d.log", (int)getpid());
    moto_start(&moto, 0, moto_log);
    ctl = http_client_new(NULL);
    fake_start(&fake, "fake", 1);
    fake_start(&fake_norole, "fake-norole", 0);
    char *args[] = {XM_FAULTPROXY_SCRIPT, "--listen", "0", "--upstream", fake.endpoint, NULL};
    helper_start(&proxy, "proxy", args);

    /* The disk images, put with the s3 module (moto takes any signature). */
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    OK(s3_bucket_ensure(a, BUCKET, 7, &err));
    unsigned char *img = xmalloc(IMAGE_LEN);
    for (size_t i = 0; i < IMAGE_LEN; i++)
        img[i] = (unsigned char)(i * 7 + i / 512);
    OK(s3_put(a, BUCKET, KEY_OK, img, IMAGE_LEN, NULL, NULL, &err));
    OK(s3_put(a, BUCKET, KEY_CORRUPT, img, 4096, NULL, NULL, &err));
    free(img);
    aws_free(a);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    helper_stop(&proxy);
    helper_stop(&fake_norole);
    helper_stop(&fake);
    http_client_free(ctl);
    moto_stop(&moto);
    unlink(moto_log);
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_image_import(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_spec s = spec_for("web-1", "sda", KEY_OK);
    s.boot_mode = "uefi";
    s.arch = "x86_64";
    struct vmimport_task t;
    OK(vmimport_start_image(a, &s, &t, &err));
    assert_int_equal(t.kind, VMIMPORT_IMAGE);
    assert_true(strncmp(t.id, "import-ami-", 11) == 0);
    assert_string_equal(t.status, "active");
    assert_string_equal(t.message, "pending");
    assert_int_equal(t.progress, 2);

    struct progress p = {0};
    struct vmimport_wait_opts o = quick(&p);
    struct vmimport_task done;
    OK(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &done, &err));
    assert_string_equal(done.id, t.id);
    assert_string_equal(done.status, "completed");
    assert_true(strncmp(done.image_id, "ami-", 4) == 0);
    assert_true(strncmp(done.snapshot_id, "snap-", 5) == 0);
    assert_true(vmimport_task_done(&done));
    check_progress(&p, image_steps, XM_ARRAY_LEN(image_steps), 1);

    /* A re-run of the same disk finds the completed task and starts nothing. */
    long long created = ctl_stat(&fake, "tasks_created");
    struct vmimport_task again;
    OK(vmimport_start_image(a, &s, &again, &err));
    assert_string_equal(again.id, t.id);
    assert_string_equal(again.image_id, done.image_id);
    assert_true(vmimport_task_done(&again));
    assert_int_equal(ctl_stat(&fake, "tasks_created"), created);

    /* A completed task is left alone by a rollback's cancel. */
    OK(vmimport_cancel(a, VMIMPORT_IMAGE, t.id, NULL, &err));
    int found;
    OK(vmimport_describe(a, VMIMPORT_IMAGE, t.id, &again, &found, &err));
    assert_true(found);
    assert_string_equal(again.status, "completed");
    aws_free(a);
}

static void test_snapshot_import(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_spec s = spec_for("db-1", "sda", KEY_OK);
    s.format = "raw";
    struct vmimport_task t;
    OK(vmimport_start_snapshot(a, &s, &t, &err));
    assert_int_equal(t.kind, VMIMPORT_SNAPSHOT);
    assert_true(strncmp(t.id, "import-snap-", 12) == 0);
    assert_string_equal(t.status, "active");
    assert_string_equal(t.message, "pending");

    struct progress p = {0};
    struct vmimport_wait_opts o = quick(&p);
    struct vmimport_task done;
    OK(vmimport_wait(a, VMIMPORT_SNAPSHOT, t.id, &o, &done, &err));
    assert_true(strncmp(done.snapshot_id, "snap-", 5) == 0);
    assert_string_equal(done.image_id, "");
    check_progress(&p, snapshot_steps, XM_ARRAY_LEN(snapshot_steps), 1);

    /* Same disk, the other kind: a different task (and token). */
    struct vmimport_task img;
    OK(vmimport_start_image(a, &s, &img, &err));
    assert_string_not_equal(img.id, t.id);
    aws_free(a);
}

static void test_start_twice_attaches(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    long long created = ctl_stat(&fake, "tasks_created");
    struct vmimport_spec s = spec_for("app-1", "sda", KEY_OK);
    struct vmimport_task first, second, third;
    OK(vmimport_start_image(a, &s, &first, &err));
    /* Found by its tags while still active. */
    OK(vmimport_start_image(a, &s, &second, &err));
    assert_string_equal(second.id, first.id);
    int found;
    struct vmimport_task f;
    OK(vmimport_find(a, VMIMPORT_IMAGE, &s.tags, &f, &found, &err));
    assert_true(found);
    assert_string_equal(f.id, first.id);

    /* Tags that find nothing, but the same client token: AWS answers the first task. */
    char token[VMIMPORT_TOKEN_SIZE];
    vmimport_client_token(VMIMPORT_IMAGE, &s.tags, token);
    struct vmimport_spec other = spec_for("app-1", "not-sda", KEY_OK);
    other.client_token = token;
    OK(vmimport_find(a, VMIMPORT_IMAGE, &other.tags, &f, &found, &err));
    assert_false(found);
    OK(vmimport_start_image(a, &other, &third, &err));
    assert_string_equal(third.id, first.id);
    assert_int_equal(ctl_stat(&fake, "tasks_created"), created + 1);

    /* The same token for another object is AWS's IdempotentParameterMismatch. */
    other.key = KEY_CORRUPT;
    FAILS(vmimport_start_image(a, &other, &third, &err), ERR_PERMANENT,
          "IdempotentParameterMismatch");

    /* Tokens differ by kind, migration, host and disk. */
    char t2[VMIMPORT_TOKEN_SIZE];
    vmimport_client_token(VMIMPORT_SNAPSHOT, &s.tags, t2);
    assert_string_not_equal(token, t2);
    struct ebs_tags shifted = {MIGRATION, "app-1s", "da"};
    struct ebs_tags orig = {MIGRATION, "app-1", "sda"};
    vmimport_client_token(VMIMPORT_IMAGE, &shifted, t2);
    char t3[VMIMPORT_TOKEN_SIZE];
    vmimport_client_token(VMIMPORT_IMAGE, &orig, t3);
    assert_string_not_equal(t2, t3);
    assert_string_equal(t3, token);
    assert_int_equal(strlen(token), 64);

    struct progress p = {0};
    struct vmimport_wait_opts o = quick(&p);
    OK(vmimport_wait(a, VMIMPORT_IMAGE, first.id, &o, &f, &err));
    assert_true(vmimport_task_done(&f));
    aws_free(a);
}

static void test_find_follows_pages(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_spec s = spec_for("paged-1", "sda", KEY_OK);
    struct vmimport_task t, f;
    OK(vmimport_start_snapshot(a, &s, &t, &err));
    /* Several tasks before it in the listing, one per page. */
    fake_config("{\"page_size\": 1}");
    int found;
    OK(vmimport_find(a, VMIMPORT_SNAPSHOT, &s.tags, &f, &found, &err));
    fake_config("{\"page_size\": 0}");
    assert_true(found);
    assert_string_equal(f.id, t.id);
    aws_free(a);
}

static void test_missing_object_is_permanent(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_spec s = spec_for("web-1", "missing", KEY_MISSING);
    struct vmimport_task t, out;
    OK(vmimport_start_image(a, &s, &t, &err));
    struct vmimport_wait_opts o = quick(NULL);
    FAILS(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &out, &err), ERR_PERMANENT,
          "ClientError: Unable to find the object s3://" BUCKET "/" KEY_MISSING " in S3");
    assert_non_null(strstr(err.msg, t.id));

    /* A failed task is not found again, but its token still names it. */
    int found;
    OK(vmimport_find(a, VMIMPORT_IMAGE, &s.tags, &out, &found, &err));
    assert_false(found);
    struct vmimport_task again;
    OK(vmimport_start_image(a, &s, &again, &err));
    assert_string_equal(again.id, t.id);
    assert_true(vmimport_task_failed(&again));
    aws_free(a);
}

static void test_corrupt_image_is_permanent(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_task t, out;
    struct vmimport_spec s = spec_for("web-1", "sdb", KEY_CORRUPT);
    OK(vmimport_start_image(a, &s, &t, &err));
    struct vmimport_wait_opts o = quick(NULL);
    FAILS(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &out, &err), ERR_PERMANENT,
          "Disk validation failed [Unsupported specified file format]");
    s.tags.host = "web-1-snap";
    OK(vmimport_start_snapshot(a, &s, &t, &err));
    FAILS(vmimport_wait(a, VMIMPORT_SNAPSHOT, t.id, &o, &out, &err), ERR_PERMANENT,
          "Disk validation failed");
    aws_free(a);
}

static void test_missing_role_is_clear(void **state)
{
    (void)state;
    struct aws *a = client(fake_norole.endpoint, NULL);
    struct err err = {0};
    struct vmimport_task t;
    struct vmimport_spec s = spec_for("web-1", "sda", KEY_OK);
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT,
          "vmimport: the vmimport service role is missing or lacks permissions: "
          "see " VMIMPORT_ROLE_DOC);
    /* AWS's own words are kept. */
    assert_non_null(strstr(err.msg, "InvalidParameter"));
    assert_non_null(strstr(err.msg, "does not exist or does not have sufficient permissions"));
    FAILS(vmimport_start_snapshot(a, &s, &t, &err), ERR_PERMANENT,
          "the vmimport service role is missing");
    assert_int_equal(ctl_stat(&fake_norole, "tasks_created"), 0);
    aws_free(a);

    /* A role named in the spec that the account lacks. */
    a = client(NULL, NULL);
    s = spec_for("web-2", "sda", KEY_OK);
    s.role_name = "xm-import-role";
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT,
          "the xm-import-role service role is missing");
    aws_free(a);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    struct aws *a = client(NULL, WRONG_SECRET);
    struct err err = {0};
    struct vmimport_task t;
    struct vmimport_spec s = spec_for("web-1", "sda", KEY_OK);
    long long before = ctl_stat(&fake, "auth_failures");
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT,
          "AWS rejected the credentials (AuthFailure)");
    struct vmimport_wait_opts o = quick(NULL);
    FAILS(vmimport_wait(a, VMIMPORT_IMAGE, "import-ami-0123456789abcdef0", &o, &t, &err),
          ERR_PERMANENT, "AWS rejected the credentials (AuthFailure)");
    assert_true(ctl_stat(&fake, "auth_failures") >= before + 2);
    aws_free(a);

    /* Unsigned: EC2's MissingAuthenticationToken (401). */
    char *body = NULL;
    assert_int_equal(ctl_send(&fake, "POST", "/",
                              "Action=DescribeImportImageTasks&"
                              "Version=2016-11-15",
                              &body),
                     401);
    assert_non_null(strstr(body, "<Code>MissingAuthenticationToken</Code>"));
    free(body);
}

static void test_cancel_is_permanent_for_the_waiter(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_task t, out;
    struct vmimport_spec s = spec_for("gone-1", "sda", KEY_OK);
    OK(vmimport_start_image(a, &s, &t, &err));
    OK(vmimport_cancel(a, VMIMPORT_IMAGE, t.id, NULL, &err));
    int found;
    OK(vmimport_describe(a, VMIMPORT_IMAGE, t.id, &out, &found, &err));
    assert_true(found);
    assert_true(vmimport_task_failed(&out));
    struct vmimport_wait_opts o = quick(NULL);
    FAILS(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &out, &err), ERR_PERMANENT,
          "xmigrate rollback");
    OK(vmimport_cancel(a, VMIMPORT_IMAGE, t.id, NULL, &err)); /* not active: nothing to do */
    aws_free(a);
}

static void test_waits_and_bad_input(void **state)
{
    (void)state;
    struct aws *a = client(NULL, NULL);
    struct err err = {0};
    struct vmimport_task t, out;
    int found;

    /* Steps on the clock (every 20 ms): progress still only moves forward. */
    fake_config("{\"step_ms\": 20}");
    struct vmimport_spec s = spec_for("clock-1", "sda", KEY_OK);
    OK(vmimport_start_image(a, &s, &t, &err));
    struct progress p = {0};
    struct vmimport_wait_opts o = quick(&p);
    OK(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &out, &err));
    check_progress(&p, image_steps, XM_ARRAY_LEN(image_steps), 0);

    /* A task that does not move: the wait runs out, transient, naming the step. */
    fake_config("{\"step_ms\": 3600000}");
    s.tags.host = "slow-1";
    OK(vmimport_start_snapshot(a, &s, &t, &err));
    o = quick(NULL);
    o.timeout_s = 1;
    FAILS(vmimport_wait(a, VMIMPORT_SNAPSHOT, t.id, &o, &out, &err), ERR_TRANSIENT,
          "(status 'active', step 'pending', 3%)");
    assert_non_null(strstr(err.msg, "timed out after 1 s"));
    fake_config("{\"step_ms\": 0}");

    /* An id AWS does not know: not found; waiting for it runs out as "not visible". */
    OK(vmimport_describe(a, VMIMPORT_IMAGE, "import-ami-0123456789abcdef0", &out, &found, &err));
    assert_false(found);
    FAILS(vmimport_wait(a, VMIMPORT_IMAGE, "import-ami-0123456789abcdef0", &o, &out, &err),
          ERR_TRANSIENT, "not visible yet");

    /* Bad input: permanent, nothing sent. */
    long long requests = ctl_stat(&fake, "requests");
    FAILS(vmimport_describe(a, VMIMPORT_IMAGE, "import-snap-0123", &out, &found, &err),
          ERR_PERMANENT, "is not the id of an image import task");
    FAILS(vmimport_wait(a, VMIMPORT_SNAPSHOT, "ami-0123", &o, &out, &err), ERR_PERMANENT,
          "is not the id of a snapshot import task");
    s = spec_for("web-1", "sda", KEY_OK);
    s.format = "qcow2";
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "not raw, vmdk, vhd or vhdx");
    s = spec_for("web-1", "sda", KEY_OK);
    s.bucket = "Not_A_Bucket";
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "not a valid bucket name");
    s = spec_for("web-1", "sda", KEY_OK);
    s.boot_mode = "uefi";
    FAILS(vmimport_start_snapshot(a, &s, &t, &err), ERR_PERMANENT, "no boot mode");
    s.boot_mode = "bios";
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "not legacy-bios or uefi");
    s = spec_for("web-1", "", KEY_OK);
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "the disk tag");
    s = spec_for("web-1", "sda", "bad\nkey");
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "control characters");
    s = spec_for("web-1", "sda", KEY_OK);
    s.client_token = "has space";
    FAILS(vmimport_start_image(a, &s, &t, &err), ERR_PERMANENT, "client token");
    assert_int_equal(ctl_stat(&fake, "requests"), requests);
    aws_free(a);
}

static void test_faults_are_retried(void **state)
{
    (void)state;
    /* Throttled twice, then a 503, on the Describe calls; ImportImage reset once. */
    const char *rules =
        "[{\"match_body\": \"Action=DescribeImportImageTasks\", \"ec2_code\": "
        "\"RequestLimitExceeded\", \"status\": 400, \"times\": 2},"
        " {\"match_body\": \"Action=DescribeImportImageTasks\", \"status\": 503, \"times\": 1,"
        "  \"skip\": 2},"
        " {\"match_body\": \"Action=ImportImage\", \"reset\": true, \"times\": 1}]";
    assert_int_equal(ctl_send(&proxy, "POST", "/__faults", rules, NULL), 200);
    assert_int_equal(ctl_send(&proxy, "DELETE", "/__stats", NULL, NULL), 200);
    struct aws *a = client(proxy.endpoint, NULL);
    struct err err = {0};
    struct vmimport_spec s = spec_for("flaky-1", "sda", KEY_OK);
    struct vmimport_task t, out;
    OK(vmimport_start_image(a, &s, &t, &err));
    struct progress p = {0};
    struct vmimport_wait_opts o = quick(&p);
    OK(vmimport_wait(a, VMIMPORT_IMAGE, t.id, &o, &out, &err));
    assert_true(vmimport_task_done(&out));
    check_progress(&p, image_steps, XM_ARRAY_LEN(image_steps), 0);
    assert_int_equal(ctl_stat(&proxy, "injected"), 4);
    assert_int_equal(ctl_send(&proxy, "DELETE", "/__faults", NULL, NULL), 200);
    aws_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_import),
        cmocka_unit_test(test_snapshot_import),
        cmocka_unit_test(test_start_twice_attaches),
        cmocka_unit_test(test_find_follows_pages),
        cmocka_unit_test(test_missing_object_is_permanent),
        cmocka_unit_test(test_corrupt_image_is_permanent),
        cmocka_unit_test(test_missing_role_is_clear),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_cancel_is_permanent_for_the_waiter),
        cmocka_unit_test(test_waits_and_bad_input),
        cmocka_unit_test(test_faults_are_retried),
    };
    return cmocka_run_group_tests_name("integration.aws_vmimport", tests, setup, teardown);
}
