/*
 * test_azure_arm: the Azure provider's Resource Manager side against
 * tests/fakes/azure_arm.py (Entra ID token, api-versions, request shapes, the async
 * operation protocol), with Azurite as the storage account the fake reports:
 *   - the token is fetched once, reused, fetched again after a 401; a wrong secret and a
 *     wrong api-version are clear permanent errors;
 *   - network_ensure twice creates nothing the second time; 429s are ridden out; a failed
 *     asynchronous operation becomes a permanent error with ARM's code and message;
 *   - storage through ARM (account, listKeys, Azurite's key), SAS write URLs the agent's
 *     way, the VHD page blob, vm_launch (disks imported with the right generation, NIC,
 *     public IP, VM without any admin account), twice without creating anything again;
 *   - network_delete removes everything of the migration, in an order the fake accepts.
 * Exits 77 when Azurite is not installed (npm ci in tests/).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "azure/arm.h"
#include "config.h"
#include "http.h"
#include "provider.h"
#include "test_azure_env.h"
#include "xmalloc.h"

#define MIG "0f6d1c2e-8d8a-4c3e-9a57-1a2b3c4d5e6f"
#define NET "prod-net"

static struct azurite azurite;
static struct armfake fake;
static char tmpdir[] = "/tmp/xm-azure-arm-XXXXXX";
static const struct provider_ops *ops;

static struct provider *open_provider(void)
{
    json_t *secret = armfake_secret();
    struct err err = {0};
    struct provider *p = ops->open(secret, "westeurope", &err);
    json_decref(secret);
    if (!p)
        fail_msg("open: %s", err.msg);
    return p;
}

static struct arm *arm_client(const char *secret, struct err *err)
{
    struct arm_config cfg = {.endpoint = fake.endpoint,
                             .login_endpoint = fake.endpoint,
                             .tenant_id = FAKE_TENANT,
                             .client_id = FAKE_CLIENT,
                             .client_secret = secret,
                             .subscription_id = FAKE_SUBSCRIPTION,
                             .max_attempts = 4,
                             .backoff_base_ms = 5,
                             .poll_interval_ms = 10};
    return arm_new(&cfg, err);
}

static void spec_init(struct net_spec *s, const char *migration)
{
    memset(s, 0, sizeof(*s));
    xstrlcpy(s->migration, migration, sizeof(s->migration));
    xstrlcpy(s->name, NET, sizeof(s->name));
    xstrlcpy(s->cidr, "10.20.0.0/16", sizeof(s->cidr));
    s->n_subnets = 2;
    xstrlcpy(s->subnets[0].name, "web", sizeof(s->subnets[0].name));
    xstrlcpy(s->subnets[0].cidr, "10.20.1.0/24", sizeof(s->subnets[0].cidr));
    s->subnets[0].public = 1;
    xstrlcpy(s->subnets[1].name, "db", sizeof(s->subnets[1].name));
    xstrlcpy(s->subnets[1].cidr, "10.20.2.0/24", sizeof(s->subnets[1].cidr));
    s->n_rules = 3;
    s->rules[0] = (struct net_rule){
        .protocol = "tcp", .port = 22, .port_to = 22, .source = "10.0.0.0/8", .description = "ssh"};
    s->rules[1] =
        (struct net_rule){.protocol = "tcp", .port = 8000, .port_to = 8080, .source = "0.0.0.0/0"};
    s->rules[2] =
        (struct net_rule){.protocol = "icmp", .port = -1, .port_to = -1, .source = "0.0.0.0/0"};
}

/* ---- token and plain requests ------------------------------------------------------- */

static void test_token(void **state)
{
    (void)state;
    struct err err = {0};
    struct arm *a = arm_client(FAKE_SECRET, &err);
    assert_non_null(a);
    json_t *res = NULL;
    int found = 1;
    char *rg = arm_rg_path(a, "nothing-here", "%s", "");
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    assert_false(found);
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    struct arm_stats st;
    arm_stats(a, &st);
    assert_int_equal(st.token_fetches, 1); /* cached */
    /* Revoked: one 401, a new token, the request again. */
    armfake_control(&fake, "/__faults", "{\"revoke_tokens\": true}");
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    arm_stats(a, &st);
    assert_int_equal(st.token_fetches, 2);
    /* A token about to expire is not used: one living 1 s is renewed on every call (the
     * cache keeps a token until TOKEN_MARGIN_S before its end, a short one for half its
     * life). */
    armfake_control(&fake, "/__faults", "{\"revoke_tokens\": true, \"token_life\": 1}");
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    arm_stats(a, &st);
    assert_int_equal(st.token_fetches, 4); /* after the 401, and again before the second */
    armfake_control(&fake, "/__faults", "{\"token_life\": 3599}");
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    assert_int_equal(arm_get(a, rg, ARM_API_RESOURCES, &res, &found, &err), 0);
    arm_stats(a, &st);
    assert_int_equal(st.token_fetches, 5);
    /* Another resource type's api-version is refused by name. */
    assert_int_equal(arm_get(a, rg, "2023-09-01", &res, &found, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "InvalidApiVersionParameter"));
    free(rg);
    arm_free(a);

    /* A wrong secret: permanent, named, and the secret is not in the message. */
    a = arm_client("wrong-secret-value", &err);
    assert_int_equal(arm_get(a, "/subscriptions/" FAKE_SUBSCRIPTION "/resourceGroups/x",
                             ARM_API_RESOURCES, &res, &found, &err),
                     -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "invalid_client"));
    assert_null(strstr(err.msg, "wrong-secret-value"));
    arm_stats(a, &st);
    assert_int_equal(st.requests, 0); /* nothing reached Resource Manager */
    arm_free(a);
}

/* ---- network ------------------------------------------------------------------------ */

static void test_network_twice(void **state)
{
    (void)state;
    struct provider *p = open_provider();
    struct net_spec spec;
    spec_init(&spec, MIG);
    struct net_result r1, r2;
    struct err err = {0};
    if (ops->network_ensure(p, &spec, &r1, &err) < 0)
        fail_msg("network_ensure: %s", err.msg);
    assert_string_equal(r1.network_id, NET);
    assert_string_equal(r1.firewall_id, NET "-nsg");
    assert_int_equal(r1.n_subnets, 2);
    assert_string_equal(r1.subnet_ids[1], NET "/db");
    assert_int_equal(armfake_creates(&fake, "resourcegroups"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/virtualnetworks"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/networksecuritygroups"), 1);

    /* Again, with Resource Manager throttling the first two requests. */
    armfake_control(&fake, "/__faults", "{\"throttle\": 2}");
    if (ops->network_ensure(p, &spec, &r2, &err) < 0)
        fail_msg("network_ensure again: %s", err.msg);
    assert_memory_equal(&r1, &r2, sizeof(r1));
    json_t *st = armfake_stats(&fake);
    assert_int_equal(json_integer_value(json_object_get(st, "throttled")), 2);
    json_decref(st);
    assert_int_equal(armfake_creates(&fake, "resourcegroups"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/virtualnetworks"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/networksecuritygroups"), 1);

    /* What was made: the rules in blueprint order, subnets tied to the NSG. */
    struct arm *a = arm_client(FAKE_SECRET, &err);
    char *path = arm_rg_path(a, "xmigrate-" MIG,
                             "/providers/Microsoft.Network/networkSecurityGroups/" NET "-nsg");
    json_t *nsg = NULL;
    int found = 0;
    assert_int_equal(arm_get(a, path, ARM_API_NETWORK, &nsg, &found, &err), 0);
    json_t *rules = json_object_get(json_object_get(nsg, "properties"), "securityRules");
    assert_int_equal(json_array_size(rules), 3);
    json_t *r1p = json_object_get(json_array_get(rules, 1), "properties");
    assert_string_equal(json_string_value(json_object_get(r1p, "destinationPortRange")),
                        "8000-8080");
    assert_string_equal(json_string_value(json_object_get(r1p, "sourceAddressPrefix")), "*");
    assert_int_equal(json_integer_value(json_object_get(r1p, "priority")), 110);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(rules, 2), "properties"), "protocol")),
                        "Icmp");
    assert_string_equal(json_string_value(json_object_get(nsg, "location")), "westeurope");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(nsg, "tags"), "xmigrate-migration")),
        MIG);
    json_decref(nsg);
    free(path);
    arm_free(a);
    ops->close(p);
}

static void test_failed_operation(void **state)
{
    (void)state;
    struct provider *p = open_provider();
    struct net_spec spec;
    spec_init(&spec, "failing-migration");
    armfake_control(&fake, "/__faults",
                    "{\"fail_next\": {\"type\": \"virtualNetworks\", \"code\": "
                    "\"NetcfgInvalidSubnet\", \"message\": \"Subnet 'web' is not valid\"}}");
    struct net_result r;
    struct err err = {0};
    assert_int_equal(ops->network_ensure(p, &spec, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "ended Failed"));
    assert_non_null(strstr(err.msg, "NetcfgInvalidSubnet: Subnet 'web' is not valid"));
    /* A blueprint rule Azure cannot express is refused before any request. */
    spec_init(&spec, "other-migration");
    xstrlcpy(spec.rules[0].protocol, "gre", sizeof(spec.rules[0].protocol));
    assert_int_equal(ops->network_ensure(p, &spec, &r, &err), -1);
    assert_non_null(strstr(err.msg, "protocol 'gre'"));
    assert_int_equal(ops->network_delete(p, "failing-migration", &err), 0);
    assert_int_equal(ops->network_delete(p, "other-migration", &err), 0);
    ops->close(p);
}

/* ---- storage, VHD, VM --------------------------------------------------------------- */

static long plain_put(const char *url, const char *header, const char *body)
{
    const char *headers[] = {header, NULL};
    return azenv_http("PUT", url, headers, body, strlen(body), NULL);
}

/* A page blob image of one disk, one page of data; its URL into url. */
static void make_image(struct provider *p, const char *host, const char *disk,
                       char url[PROVIDER_REF_MAX])
{
    char ref[PROVIDER_REF_MAX];
    struct err err = {0};
    unsigned long long size = (2ull << 20) + 512;
    if (ops->image_begin(p, MIG, host, disk, size, ref, &err) < 0)
        fail_msg("image_begin: %s", err.msg);
    char page[512];
    memset(page, 0x5a, sizeof(page));
    if (ops->image_write(p, ref, 4096, page, sizeof(page), &err) < 0 ||
        ops->image_finish(p, ref, 0, url, &err) < 0)
        fail_msg("image: %s", err.msg);
}

static void test_storage_and_vm(void **state)
{
    (void)state;
    struct provider *p = open_provider();
    struct err err = {0};
    char bucket[64];
    if (ops->storage_ensure(p, bucket, sizeof(bucket), &err) < 0)
        fail_msg("storage_ensure: %s", err.msg);
    assert_string_equal(bucket, "xmigrate");
    assert_int_equal(armfake_creates(&fake, "microsoft.storage/storageaccounts"), 1);

    /* Write URLs as the agent uses them, with the header the provider names. */
    long long idx[] = {0, 7};
    char *urls[2], *manifest = NULL;
    if (ops->write_urls(p, MIG, "web1", "sda", idx, 2, 600, urls, &manifest, &err) < 0)
        fail_msg("write_urls: %s", err.msg);
    assert_non_null(strstr(urls[1], "/xmigrate/xmigrate/" MIG "/web1/sda/7.zst?"));
    assert_non_null(ops->write_header);
    assert_int_equal(plain_put(urls[1], ops->write_header, "seven"), 201);
    assert_int_equal(plain_put(manifest, ops->write_header, "{}"), 201);
    char *data = NULL;
    size_t len = 0;
    if (ops->read_object(p, bucket, "xmigrate/" MIG "/web1/sda/7.zst", 100, &data, &len, &err) < 0)
        fail_msg("read_object: %s", err.msg);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "seven", 5);
    free(data);
    char *r = ops->read_url(p, MIG, "web1", "sda", "manifest.json", 600, &err);
    assert_non_null(strstr(r, "sp=r"));
    free(r);
    free(urls[0]);
    free(urls[1]);
    free(manifest);

    /* The VM from two VHD page blobs. */
    char boot[PROVIDER_REF_MAX], data1[PROVIDER_REF_MAX];
    make_image(p, "web1", "sda", boot);
    make_image(p, "web1", "sdb", data1);
    assert_non_null(strstr(boot, azurite.endpoint));
    const char *datas[] = {data1};
    struct vm_launch_spec vs = {.migration = MIG,
                                .host = "web1",
                                .boot_image = boot,
                                .data_images = datas,
                                .n_data_images = 1,
                                .arch = "arm64",
                                .boot_mode = "uefi",
                                .machine_type = "Standard_B2s",
                                .subnet_id = NET "/web",
                                .firewall_id = NET "-nsg",
                                .public_ip = 1};
    struct vm_launch_result out, again;
    if (ops->vm_launch(p, &vs, &out, &err) < 0)
        fail_msg("vm_launch: %s", err.msg);
    assert_int_equal(strlen(out.instance_id), 36); /* the VM's vmId */
    assert_string_equal(out.image_id, "web1-disk0");
    assert_true(strncmp(out.private_ip, "10.20.1.", 8) == 0);
    assert_true(out.public_ip[0] != '\0');
    assert_int_equal(out.n_resources, 4);
    assert_int_equal(armfake_creates(&fake, "microsoft.compute/disks"), 2);
    assert_int_equal(armfake_creates(&fake, "microsoft.compute/virtualmachines"), 1);
    if (ops->vm_launch(p, &vs, &again, &err) < 0)
        fail_msg("vm_launch again: %s", err.msg);
    assert_string_equal(again.instance_id, out.instance_id);
    assert_int_equal(armfake_creates(&fake, "microsoft.compute/disks"), 2);
    assert_int_equal(armfake_creates(&fake, "microsoft.compute/virtualmachines"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/networkinterfaces"), 1);
    assert_int_equal(armfake_creates(&fake, "microsoft.network/publicipaddresses"), 1);

    /* What Resource Manager was asked for. */
    struct arm *a = arm_client(FAKE_SECRET, &err);
    json_t *disk = NULL, *vm = NULL;
    int found = 0;
    char *dp = arm_rg_path(a, "xmigrate-" MIG, "/providers/Microsoft.Compute/disks/web1-disk0");
    char *vp = arm_rg_path(a, "xmigrate-" MIG, "/providers/Microsoft.Compute/virtualMachines/web1");
    assert_int_equal(arm_get(a, dp, ARM_API_DISKS, &disk, &found, &err), 0);
    assert_int_equal(arm_get(a, vp, ARM_API_COMPUTE, &vm, &found, &err), 0);
    json_t *dprops = json_object_get(disk, "properties");
    assert_string_equal(json_string_value(json_object_get(dprops, "hyperVGeneration")), "V2");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(dprops, "supportedCapabilities"), "architecture")),
                        "Arm64");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(dprops, "creationData"), "sourceUri")),
        boot);
    json_t *vprops = json_object_get(vm, "properties");
    assert_null(json_object_get(vprops, "osProfile"));
    assert_string_equal(json_string_value(json_object_get(vprops, "provisioningState")),
                        "Succeeded");
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(vprops, "storageProfile"), "dataDisks")),
        1);
    json_decref(disk);
    json_decref(vm);
    free(dp);
    free(vp);
    arm_free(a);

    /* A boot image the import cannot read: the operation fails; once the VHD is there, a
     * re-run puts the failed disk again and the VM comes up. */
    char missing[PROVIDER_REF_MAX], made[PROVIDER_REF_MAX];
    snprintf(missing, sizeof(missing), "%s/xmigrate/xmigrate/" MIG "/web2/sda/disk.vhd",
             azurite.endpoint);
    vs.host = "web2";
    vs.boot_image = missing;
    vs.n_data_images = 0;
    vs.boot_mode = "legacy-bios";
    vs.arch = "x86_64";
    vs.public_ip = 0;
    assert_int_equal(ops->vm_launch(p, &vs, &out, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "ImportSourceNotFound"));
    make_image(p, "web2", "sda", made);
    assert_string_equal(made, missing);
    if (ops->vm_launch(p, &vs, &out, &err) < 0)
        fail_msg("vm_launch after the failed import: %s", err.msg);
    assert_string_equal(out.public_ip, "");
    a = arm_client(FAKE_SECRET, &err);
    dp = arm_rg_path(a, "xmigrate-" MIG, "/providers/Microsoft.Compute/disks/web2-disk0");
    assert_int_equal(arm_get(a, dp, ARM_API_DISKS, &disk, &found, &err), 0);
    dprops = json_object_get(disk, "properties");
    assert_string_equal(json_string_value(json_object_get(dprops, "hyperVGeneration")), "V1");
    assert_null(json_object_get(dprops, "supportedCapabilities"));
    assert_string_equal(json_string_value(json_object_get(dprops, "provisioningState")),
                        "Succeeded");
    json_decref(disk);
    free(dp);
    arm_free(a);
    /* A URL of another storage account is refused before any request. */
    vs.boot_image = "https://evil.blob.core.windows.net/c/x.vhd";
    assert_int_equal(ops->vm_launch(p, &vs, &out, &err), -1);
    assert_non_null(strstr(err.msg, "not a blob of this storage account"));
    ops->close(p);
}

static void test_network_delete(void **state)
{
    (void)state;
    struct provider *p = open_provider();
    struct err err = {0};
    if (ops->network_delete(p, MIG, &err) < 0)
        fail_msg("network_delete: %s", err.msg);
    json_t *st = armfake_stats(&fake);
    size_t i;
    json_t *id;
    size_t left = 0;
    json_array_foreach(json_object_get(st, "resources"), i, id)
    {
        const char *s = json_string_value(id);
        assert_null(strstr(s, "xmigrate-" MIG)); /* nothing of the migration is left */
        left++;
    }
    assert_int_equal(left, 2); /* the shared storage group and account stay */
    json_decref(st);
    assert_int_equal(ops->network_delete(p, MIG, &err), 0); /* again: nothing to do */
    ops->close(p);
}

static int start(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(tmpdir));
    const char *extra[] = {"--polls", "2", NULL};
    /* No XM_AZURE_BLOB_ENDPOINT: the endpoint comes from the storage account. */
    azenv_start(&azurite, &fake, tmpdir, extra, 0);
    ops = provider_find("azure");
    assert_non_null(ops);
    return 0;
}

static int stop(void **state)
{
    (void)state;
    azenv_stop(&azurite, &fake);
    azenv_remove_dir(tmpdir);
    return 0;
}

int main(void)
{
    azurite_require();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_network_twice),
        cmocka_unit_test(test_failed_operation),
        cmocka_unit_test(test_storage_and_vm),
        cmocka_unit_test(test_network_delete),
    };
    return cmocka_run_group_tests_name("azure resource manager", tests, start, stop);
}
