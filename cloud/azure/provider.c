/*
 * The Azure provider: the provider_ops table (cloud/provider.h) on top of the Azure
 * modules (arm + token for Resource Manager, net, vm; blob + sharedkey for storage).
 *
 * The credential is the sealed "azure" secret of schemas/credential_create.json (a service
 * principal: tenant_id, client_id, client_secret, subscription_id); the session's region is
 * the Azure location. Storage is found through Resource Manager the way an operator's
 * tools find it, so the credential needs nothing more: one StorageV2 account per
 * subscription and location, "xm<22 hex of sha256(subscription/location)>" in the resource
 * group "xmigrate-storage-<location>", created when missing, its key from listKeys, its
 * blob endpoint from the account's primaryEndpoints (XM_AZURE_BLOB_ENDPOINT overrides it;
 * a path-style emulator endpoint such as Azurite's http://H:P/devstoreaccount1 also names
 * the account that signs). Storage is resolved on first use in a session: that costs ARM
 * calls, so write_urls and read_url are local signing once the session has its key.
 *
 * Chunks are block blobs "xmigrate/<migration>/<host>/<disk>/<index>.zst" (and
 * manifest.json) in the container "xmigrate"; the agent writes them through SAS URLs with
 * the header "x-ms-blob-type: BlockBlob" (write_header). A disk's image is the page blob
 * "xmigrate/<migration>/<host>/<disk>/disk.vhd", written in place by convert (FIXED layout),
 * and its plain URL is what vm_launch imports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws.h"
#include "azure/arm.h"
#include "azure/blob.h"
#include "azure/net.h"
#include "azure/vm.h"
#include "config.h"
#include "provider.h"
#include "secret.h"
#include "xmalloc.h"

#define AZURE_CONTAINER "xmigrate"

struct provider {
    struct arm *arm;
    char location[64];
    struct blob *blob; /* NULL until storage is resolved */
    char sa_id[512];   /* the storage account's ARM id */
};

static const char *cfg_str(const char *s)
{
    return s && s[0] ? s : NULL;
}

static struct provider *azure_open(const json_t *secret, const char *region, struct err *err)
{
    const char *tenant = json_string_value(json_object_get(secret, "tenant_id"));
    const char *client = json_string_value(json_object_get(secret, "client_id"));
    const char *sec = json_string_value(json_object_get(secret, "client_secret"));
    const char *sub = json_string_value(json_object_get(secret, "subscription_id"));
    if (!tenant || !client || !sec || !sub) {
        err_set(err, ERR_PERMANENT,
                "azure credential lacks tenant_id, client_id, client_secret "
                "or subscription_id");
        return NULL;
    }
    size_t rl = region ? strlen(region) : 0;
    if (rl < 2 || rl > 40 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789") != rl) {
        err_set(err, ERR_PERMANENT, "azure location '%.50s' is not valid", region ? region : "");
        return NULL;
    }
    struct arm_config cfg = {.endpoint = cfg_str(xm_config.azure_arm_endpoint),
                             .login_endpoint = cfg_str(xm_config.azure_login_endpoint),
                             .tenant_id = tenant,
                             .client_id = client,
                             .client_secret = sec,
                             .subscription_id = sub,
                             .http = {.ca_file = cfg_str(xm_config.tls_ca_file)}};
    struct arm *a = arm_new(&cfg, err);
    if (!a)
        return NULL;
    struct provider *p = xcalloc(1, sizeof(*p));
    p->arm = a;
    xstrlcpy(p->location, region, sizeof(p->location));
    return p;
}

static void azure_close(struct provider *p)
{
    if (!p)
        return;
    blob_free(p->blob);
    arm_free(p->arm);
    free(p);
}

/* ---- storage ------------------------------------------------------------------------ */

/* The account that signs: the first path segment of a path-style endpoint whose host is
 * not "<name>.<...>", else the resource name. */
static void signing_account(const char *endpoint, const char *name, char *out, size_t size)
{
    const char *host = strstr(endpoint, "://");
    host = host ? host + 3 : endpoint;
    size_t nl = strlen(name);
    const char *path = strchr(host, '/');
    size_t seg = path ? strcspn(path + 1, "/") : 0;
    if ((strncmp(host, name, nl) == 0 && host[nl] == '.') || seg == 0)
        xstrlcpy(out, name, size);
    else
        snprintf(out, size, "%.*s", (int)seg, path + 1);
}

/* Find or create the storage account, fetch its key, open the blob client. */
static int storage_open(struct provider *p, struct err *err)
{
    if (p->blob)
        return 0;
    char both[256], sha[65], name[32], rg[128], account[65];
    snprintf(both, sizeof(both), "%s/%s", arm_subscription(p->arm), p->location);
    secret_sha256_hex(both, strlen(both), sha);
    snprintf(name, sizeof(name), "xm%.22s", sha);
    snprintf(rg, sizeof(rg), "xmigrate-storage-%s", p->location);
    char *rg_path = arm_rg_path(p->arm, rg, "%s", "");
    char *sa_path =
        arm_rg_path(p->arm, rg, "/providers/Microsoft.Storage/storageAccounts/%s", name);
    char *keys_path = xasprintf("%s/listKeys", sa_path);
    json_t *sa = NULL, *keys = NULL;
    char *key = NULL;
    int rc = -1;
    json_t *tags = json_pack("{s:s}", AZURE_TAG_MIGRATION, "-");
    if (azure_ensure(p->arm, rg_path, ARM_API_RESOURCES,
                     json_pack("{s:s, s:O}", "location", p->location, "tags", tags), NULL,
                     err) < 0 ||
        azure_ensure(p->arm, sa_path, ARM_API_STORAGE,
                     json_pack("{s:s, s:O, s:{s:s}, s:s, s:{s:s, s:b, s:b}}", "location",
                               p->location, "tags", tags, "sku", "name", "Standard_LRS", "kind",
                               "StorageV2", "properties", "minimumTlsVersion", "TLS1_2",
                               "allowBlobPublicAccess", 0, "supportsHttpsTrafficOnly", 1),
                     &sa, err) < 0 ||
        arm_post(p->arm, keys_path, ARM_API_STORAGE, NULL, &keys, err) < 0)
        goto out;
    const char *k0 = json_string_value(
        json_object_get(json_array_get(json_object_get(keys, "keys"), 0), "value"));
    const char *endpoint = cfg_str(xm_config.azure_blob_endpoint);
    if (!endpoint)
        endpoint = json_string_value(json_object_get(
            json_object_get(json_object_get(sa, "properties"), "primaryEndpoints"), "blob"));
    const char *id = json_string_value(json_object_get(sa, "id"));
    if (!k0 || !endpoint || !id) {
        err_set(err, ERR_PERMANENT, "azure storage account '%s' has no key, blob endpoint or id",
                name);
        goto out;
    }
    key = xstrdup(k0);
    signing_account(endpoint, name, account, sizeof(account));
    struct blob_config bc = {.endpoint = endpoint,
                             .account = account,
                             .key_b64 = key,
                             .http = {.ca_file = cfg_str(xm_config.tls_ca_file)}};
    p->blob = blob_new(&bc, err);
    xstrlcpy(p->sa_id, id, sizeof(p->sa_id));
    rc = p->blob ? 0 : -1;
out:
    if (key) {
        secret_wipe(key, strlen(key));
        free(key);
    }
    json_decref(tags);
    json_decref(sa);
    json_decref(keys); /* jansson keeps its own copy of the key until here */
    free(rg_path);
    free(sa_path);
    free(keys_path);
    return rc;
}

static int azure_storage_ensure(struct provider *p, char *bucket, size_t size, struct err *err)
{
    if (storage_open(p, err) < 0 || blob_container_ensure(p->blob, AZURE_CONTAINER, err) < 0)
        return -1;
    xstrlcpy(bucket, AZURE_CONTAINER, size);
    return 0;
}

static int azure_storage_delete(struct provider *p, const char *migration, long long *deleted,
                                struct err *err)
{
    *deleted = 0;
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "xmigrate/%s/", migration);
    char **names = NULL;
    size_t n = 0;
    if (storage_open(p, err) < 0 ||
        blob_list(p->blob, AZURE_CONTAINER, prefix, &names, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if ((rc = blob_delete(p->blob, AZURE_CONTAINER, names[i], err)) == 0)
            (*deleted)++;
    aws_strv_free(names, n);
    return rc;
}

static void object_name(char *out, size_t size, const char *migration, const char *host,
                        const char *disk, const char *name)
{
    snprintf(out, size, "xmigrate/%s/%s/%s/%s", migration, host, disk, name);
}

static int azure_write_urls(struct provider *p, const char *migration, const char *host,
                            const char *disk, const long long *indexes, size_t n, long expires,
                            char **urls, char **manifest, struct err *err)
{
    char name[512], file[32];
    for (size_t i = 0; i < n; i++)
        urls[i] = NULL;
    *manifest = NULL;
    if (storage_open(p, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        snprintf(file, sizeof(file), "%lld.zst", indexes[i]);
        object_name(name, sizeof(name), migration, host, disk, file);
        urls[i] = blob_sas_url(p->blob, AZURE_CONTAINER, name, "cw", expires, err);
        if (!urls[i])
            goto fail;
    }
    object_name(name, sizeof(name), migration, host, disk, "manifest.json");
    *manifest = blob_sas_url(p->blob, AZURE_CONTAINER, name, "cw", expires, err);
    if (*manifest)
        return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        urls[i] = NULL;
    }
    return -1;
}

static char *azure_read_url(struct provider *p, const char *migration, const char *host,
                            const char *disk, const char *name, long expires, struct err *err)
{
    char obj[512];
    if (storage_open(p, err) < 0)
        return NULL;
    object_name(obj, sizeof(obj), migration, host, disk, name);
    return blob_sas_url(p->blob, AZURE_CONTAINER, obj, "r", expires, err);
}

static int azure_read_object(struct provider *p, const char *bucket, const char *key, size_t max,
                             char **data, size_t *len, struct err *err)
{
    if (storage_open(p, err) < 0)
        return -1;
    return blob_get(p->blob, bucket, key, 0, 0, max, data, len, err);
}

/* ---- the VHD page blob -------------------------------------------------------------- */

static int azure_image_begin(struct provider *p, const char *migration, const char *host,
                             const char *disk, unsigned long long fixed_size,
                             char ref[PROVIDER_REF_MAX], struct err *err)
{
    if (fixed_size == 0)
        return err_set(err, ERR_PERMANENT, "azure imports fixed VHDs only: no size for '%s'", disk);
    char name[512];
    object_name(name, sizeof(name), migration, host, disk, "disk.vhd");
    struct blob_props props;
    int found = 0;
    if (storage_open(p, err) < 0 || blob_container_ensure(p->blob, AZURE_CONTAINER, err) < 0 ||
        blob_head(p->blob, AZURE_CONTAINER, name, &props, &found, err) < 0)
        return -1;
    /* A page blob of this size from an earlier run keeps what shards already wrote. */
    if (!found || props.length != fixed_size || strcmp(props.type, "PageBlob") != 0)
        if (blob_page_create(p->blob, AZURE_CONTAINER, name, fixed_size, err) < 0)
            return -1;
    xstrlcpy(ref, name, PROVIDER_REF_MAX);
    return 0;
}

static int azure_image_write(struct provider *p, const char *ref, unsigned long long off,
                             const void *buf, size_t len, struct err *err)
{
    if (storage_open(p, err) < 0)
        return -1;
    return blob_put_page(p->blob, AZURE_CONTAINER, ref, off, buf, len, err);
}

static int azure_image_finish(struct provider *p, const char *ref, size_t npieces,
                              char image[PROVIDER_REF_MAX], struct err *err)
{
    if (npieces)
        return err_set(err, ERR_PERMANENT, "azure VHD '%s' is written in place, not in pieces",
                       ref);
    if (storage_open(p, err) < 0)
        return -1;
    char *url = blob_url(p->blob, AZURE_CONTAINER, ref);
    int rc = 0;
    if (strlen(url) >= PROVIDER_REF_MAX)
        rc = err_set(err, ERR_PERMANENT, "azure VHD URL of '%s' is too long", ref);
    else
        xstrlcpy(image, url, PROVIDER_REF_MAX);
    free(url);
    return rc;
}

/* ---- network and VM ----------------------------------------------------------------- */

static int azure_network_ensure(struct provider *p, const struct net_spec *spec,
                                struct net_result *out, struct err *err)
{
    return azure_net_ensure(p->arm, p->location, spec, out, err);
}

static int azure_network_delete(struct provider *p, const char *migration, struct err *err)
{
    return azure_net_delete(p->arm, migration, err);
}

static int azure_launch(struct provider *p, const struct vm_launch_spec *spec,
                        struct vm_launch_result *out, struct err *err)
{
    if (storage_open(p, err) < 0)
        return -1;
    /* Imports read blobs of this session's storage account only. */
    char c[64], name[512];
    for (size_t i = 0; i <= spec->n_data_images; i++)
        if (blob_parse_url(p->blob, i ? spec->data_images[i - 1] : spec->boot_image, c, sizeof(c),
                           name, sizeof(name), err) < 0)
            return -1;
    return azure_vm_launch(p->arm, p->location, p->sa_id, spec, out, err);
}

const struct provider_ops azure_provider = {
    .cloud = "azure",
    .open = azure_open,
    .close = azure_close,
    .network_ensure = azure_network_ensure,
    .network_delete = azure_network_delete,
    .storage_ensure = azure_storage_ensure,
    .storage_delete = azure_storage_delete,
    .write_urls = azure_write_urls,
    .read_url = azure_read_url,
    .read_object = azure_read_object,
    .image_format = "vhd",
    .image_begin = azure_image_begin,
    .image_write = azure_image_write,
    .image_finish = azure_image_finish,
    .vm_launch = azure_launch,
    .write_header = "x-ms-blob-type: BlockBlob",
};
