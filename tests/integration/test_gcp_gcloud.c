/*
 * tests/fakes/gcp.py checked against a real Google client: the gcloud CLI of the machine
 * image, pointed at the fake with CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE / _COMPUTE and
 * a token our own code fetched from the fake (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE). Both ways:
 *   - gcloud storage cp uploads a file bigger than its resumable threshold, gcloud storage
 *     ls lists it, our gcs_get reads it back byte for byte;
 *   - our gcs_put writes an object, gcloud storage cp downloads it (gcloud checks the
 *     fake's crc32c and md5 against the bytes);
 *   - our gce code makes a network and an image (from a disk.raw tar.gz GNU tar made):
 *     gcloud compute networks list and gcloud compute images list show them;
 *   - gcloud compute networks create makes a custom-mode network through the fake's
 *     operations (insert, operations/wait) that our lookup then finds.
 * Skipped (exit 77) with a message when gcloud is not installed.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gcp/gce.h"
#include "gcp/gcp.h"
#include "gcp/gcs.h"
#include "harness.h"
#include "test_gcp_support.h"
#include "xmalloc.h"

#define BUCKET "xm-gcloud-check"
#define MIG "a1b2c3d4-0000-4000-8000-00000000c10d"

static struct gcpfake fake;
static struct gcp *g;

/* Run argv (argv[0] found in PATH) with stdout to <dir>/out and stderr to <dir>/err;
 * the exit status (-1 on a timeout), and stdout as a new string in *out. */
static int run(char *const argv[], char **out)
{
    char out_path[400], err_path[400];
    snprintf(out_path, sizeof(out_path), "%s/out", fake.dir);
    snprintf(err_path, sizeof(err_path), "%s/err", fake.dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = wait_process(pid, 180000);
    if (status == -1)
        stop_process(pid, SIGKILL);
    FILE *f = fopen(out_path, "rb");
    char *text = xcalloc(1, 1 << 20);
    if (f) {
        size_t n = fread(text, 1, (1 << 20) - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    int code = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code != 0) {
        char buf[4096] = "";
        f = fopen(err_path, "rb");
        if (f) {
            buf[fread(buf, 1, sizeof(buf) - 1, f)] = '\0';
            fclose(f);
        }
        print_message("  %s exited %d: %s\n", argv[1] ? argv[1] : argv[0], code, buf);
    }
    if (out)
        *out = text;
    else
        free(text);
    return code;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int setup(void **state)
{
    (void)state;
    gcpfake_start(&fake, NULL);
    g = gcpfake_client(&fake, NULL);
    struct err err = {0};
    const char *token = gcp_token(g, &err);
    if (!token)
        fail_msg("token: %s", err.msg);
    char path[400], cfg[400], storage[128], compute[128];
    snprintf(path, sizeof(path), "%s/token", fake.dir);
    write_file(path, token, strlen(token));
    chmod(path, 0600);
    snprintf(cfg, sizeof(cfg), "%s/gcloud", fake.dir);
    snprintf(storage, sizeof(storage), "%s/", fake.endpoint);
    snprintf(compute, sizeof(compute), "%s/compute/v1/", fake.endpoint);
    setenv("CLOUDSDK_CONFIG", cfg, 1);
    setenv("CLOUDSDK_CORE_PROJECT", GCPFAKE_PROJECT, 1);
    setenv("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", path, 1);
    setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE", storage, 1);
    setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", compute, 1);
    setenv("CLOUDSDK_CORE_DISABLE_PROMPTS", "1", 1);
    setenv("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true", 1);
    setenv("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true", 1);
    /* gcloud looks for a GCE metadata server (a DNS query for metadata.google.internal):
     * keep that on loopback too (port 9 refuses), so nothing leaves the machine. */
    setenv("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false", 1);
    setenv("GCE_METADATA_ROOT", "127.0.0.1:9", 1);
    GCP_OK(gcs_bucket_ensure(g, BUCKET, "europe-west1", 30, &err));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gcp_free(g);
    char cmd_dir[400];
    snprintf(cmd_dir, sizeof(cmd_dir), "%s/gcloud", fake.dir);
    char *argv[] = {"rm", "-rf", cmd_dir, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        execvp("rm", argv);
        _exit(127);
    }
    wait_process(pid, 30000);
    char p[400];
    const char *files[] = {"out", "err", "token", "up.bin", "down.txt", "disk.raw", "disk.tar.gz"};
    for (size_t i = 0; i < XM_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof(p), "%s/%s", fake.dir, files[i]);
        unlink(p);
    }
    gcpfake_stop(&fake);
    return 0;
}

static void test_storage_both_ways(void **state)
{
    (void)state;
    struct err err = {0};
    /* gcloud writes (9 MB: a resumable upload), we read. */
    size_t len = 9u * 1000 * 1000 + 7;
    unsigned char *buf = xmalloc(len);
    uint32_t x = 99;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (unsigned char)(x >> 24);
    }
    char up[400], down[400];
    snprintf(up, sizeof(up), "%s/up.bin", fake.dir);
    write_file(up, buf, len);
    char *cp_up[] = {"gcloud", "storage", "cp", up, "gs://" BUCKET "/from-gcloud/up.bin", NULL};
    assert_int_equal(run(cp_up, NULL), 0);
    char *out = NULL;
    char *ls[] = {"gcloud", "storage", "ls", "gs://" BUCKET "/from-gcloud/", NULL};
    assert_int_equal(run(ls, &out), 0);
    assert_non_null(strstr(out, "gs://" BUCKET "/from-gcloud/up.bin"));
    free(out);
    char *data = NULL;
    size_t n = 0;
    GCP_OK(gcs_get(g, BUCKET, "from-gcloud/up.bin", 0, 0, len, &data, &n, &err));
    assert_int_equal(n, len);
    assert_memory_equal(data, buf, len);
    free(data);
    free(buf);

    /* We write, gcloud reads (and checks the hashes the fake reports). */
    const char *text = "written by cloud/gcp/gcs.c\n";
    GCP_OK(gcs_put(g, BUCKET, "ours/note.txt", text, strlen(text), &err));
    snprintf(down, sizeof(down), "%s/down.txt", fake.dir);
    char *cp_down[] = {"gcloud", "storage", "cp", "gs://" BUCKET "/ours/note.txt", down, NULL};
    assert_int_equal(run(cp_down, NULL), 0);
    char *got = read_file(down, &n);
    assert_int_equal(n, strlen(text));
    assert_memory_equal(got, text, n);
    free(got);
}

static void test_compute_both_ways(void **state)
{
    (void)state;
    struct err err = {0};
    struct net_spec *s = xcalloc(1, sizeof(*s));
    xstrlcpy(s->migration, MIG, sizeof(s->migration));
    xstrlcpy(s->name, "checked", sizeof(s->name));
    xstrlcpy(s->cidr, "10.60.0.0/16", sizeof(s->cidr));
    s->n_subnets = 1;
    xstrlcpy(s->subnets[0].name, "one", sizeof(s->subnets[0].name));
    xstrlcpy(s->subnets[0].cidr, "10.60.1.0/24", sizeof(s->subnets[0].cidr));
    struct net_result *net = xcalloc(1, sizeof(*net));
    GCP_OK(gce_network_ensure(g, "europe-west1", s, net, NULL, &err));

    /* An image from a disk.raw tar.gz made by GNU tar. */
    char raw[400], tgz[400];
    snprintf(raw, sizeof(raw), "%s/disk.raw", fake.dir);
    snprintf(tgz, sizeof(tgz), "%s/disk.tar.gz", fake.dir);
    char *disk = xcalloc(1, 1 << 20);
    memcpy(disk + 510, "\x55\xaa", 2);
    write_file(raw, disk, 1 << 20);
    free(disk);
    char *tar[] = {"tar", "--format=oldgnu", "-C", fake.dir, "-Sczf", tgz, "disk.raw", NULL};
    assert_int_equal(run(tar, NULL), 0);
    size_t n = 0;
    char *archive = read_file(tgz, &n);
    GCP_OK(gcs_put_resumable(g, BUCKET, "images/disk.tar.gz", archive, n, 0, NULL, &err));
    free(archive);
    char img[GCE_NAME_MAX + 1];
    gce_name(img, MIG, "checked-image");
    struct gce_image_spec is = {.name = img,
                                .source = "gs://" BUCKET "/images/disk.tar.gz",
                                .arch = "x86_64",
                                .migration = MIG,
                                .host = "h"};
    GCP_OK(gce_image_ensure(g, &is, &err));

    char *out = NULL;
    char *nets[] = {"gcloud", "compute", "networks", "list", "--format=value(name)", NULL};
    assert_int_equal(run(nets, &out), 0);
    assert_non_null(strstr(out, net->network_id));
    free(out);
    char *imgs[] = {
        "gcloud", "compute", "images", "list", "--no-standard-images", "--format=value(name)",
        NULL};
    assert_int_equal(run(imgs, &out), 0);
    assert_non_null(strstr(out, img));
    free(out);

    /* gcloud creates, we find. */
    char *create[] = {
        "gcloud", "compute", "networks", "create", "made-by-gcloud", "--subnet-mode=custom", NULL};
    assert_int_equal(run(create, NULL), 0);
    char *u = xasprintf("%s/compute/v1/projects/%s/global/networks/made-by-gcloud", fake.endpoint,
                        GCPFAKE_PROJECT);
    json_t *found = NULL;
    GCP_OK(gcp_json(g, "GET", u, NULL, 1, &found, &err));
    free(u);
    assert_non_null(found);
    assert_true(json_is_false(json_object_get(found, "autoCreateSubnetworks")));
    json_decref(found);
    free(net);
    free(s);
}

static int have_gcloud(void)
{
    const char *path = getenv("PATH");
    char *copy = xstrdup(path ? path : "/usr/bin:/bin");
    int found = 0;
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof(p), "%s/gcloud", dir);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

int main(void)
{
    if (!have_gcloud()) {
        fprintf(stderr, "integration.gcp_gcloud: SKIPPED: the gcloud CLI is not installed "
                        "(Google's google-cloud-cli package); the fake is not cross-checked\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_storage_both_ways),
        cmocka_unit_test(test_compute_both_ways),
    };
    return cmocka_run_group_tests_name("integration.gcp_gcloud", tests, setup, teardown);
}
