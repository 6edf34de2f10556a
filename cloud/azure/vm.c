/*
 * vm.c: managed disks from VHD blobs, public IP, NIC and VM (see vm.h).
 */
#include "azure/vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "azure/net.h"
#include "xmalloc.h"

#define HOST_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"

static const char *res_id(const json_t *res)
{
    return json_string_value(json_object_get(res, "id"));
}

static void add_resource(struct vm_launch_result *out, const char *kind, const char *name)
{
    if (out->n_resources < XM_ARRAY_LEN(out->resources))
        snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "azure:%s:%.*s",
                 kind, (int)(sizeof(out->resources[0]) - 8 - strlen(kind)), name);
}

/* The managed disk "<host>-disk<i>" imported from url; *id new. */
static int disk_ensure(struct arm *a, const char *rg, const char *location, const char *sa_id,
                       const struct vm_launch_spec *spec, size_t i, const char *url, char **id,
                       struct err *err)
{
    char name[96];
    snprintf(name, sizeof(name), "%s-disk%zu", spec->host, i);
    char *path = arm_rg_path(a, rg, "/providers/Microsoft.Compute/disks/%s", name);
    json_t *props = json_pack("{s:{s:s, s:s, s:s}}", "creationData", "createOption", "Import",
                              "sourceUri", url, "storageAccountId", sa_id);
    if (i == 0) {
        json_object_set_new(props, "osType", json_string("Linux"));
        json_object_set_new(props, "hyperVGeneration",
                            json_string(strcmp(spec->boot_mode, "uefi") == 0 ? "V2" : "V1"));
        if (spec->arch && strcmp(spec->arch, "arm64") == 0)
            json_object_set_new(props, "supportedCapabilities",
                                json_pack("{s:s}", "architecture", "Arm64"));
    }
    json_t *body = json_pack("{s:s, s:o, s:{s:s}, s:o}", "location", location, "tags",
                             azure_tags(spec->migration, spec->host), "sku", "name",
                             "StandardSSD_LRS", "properties", props);
    json_t *res = NULL;
    int rc = azure_ensure(a, path, ARM_API_DISKS, body, &res, err);
    if (rc == 0 && !res_id(res))
        rc = err_set(err, ERR_PERMANENT, "azure disk '%s' has no id", name);
    if (rc == 0)
        *id = xstrdup(res_id(res));
    json_decref(res);
    free(path);
    return rc;
}

int azure_vm_launch(struct arm *a, const char *location, const char *sa_id,
                    const struct vm_launch_spec *spec, struct vm_launch_result *out,
                    struct err *err)
{
    memset(out, 0, sizeof(*out));
    size_t hl = strlen(spec->host);
    if (hl < 1 || hl > 56 || strspn(spec->host, HOST_CHARS) != hl)
        return err_set(err, ERR_PERMANENT, "azure: host name '%.70s' cannot name a VM", spec->host);
    if (!spec->boot_image || !spec->machine_type || !spec->subnet_id || !spec->firewall_id ||
        !spec->boot_mode)
        return err_set(err, ERR_PERMANENT, "azure: launch of '%s' lacks image, size or network",
                       spec->host);
    char rg[AZURE_RG_MAX], name[96];
    azure_rg_name(spec->migration, rg, sizeof(rg));
    size_t nd = 1 + spec->n_data_images;
    char **disks = xcalloc(nd, sizeof(*disks));
    char *pip_path = NULL, *nic_path = NULL, *vm_path = NULL, *subnet = NULL, *nsg = NULL;
    json_t *pip = NULL, *nic = NULL, *vm = NULL;
    int rc = -1;
    if (azure_rg_ensure(a, spec->migration, location, err) < 0)
        goto out;
    for (size_t i = 0; i < nd; i++)
        if (disk_ensure(a, rg, location, sa_id, spec, i,
                        i ? spec->data_images[i - 1] : spec->boot_image, &disks[i], err) < 0)
            goto out;
    snprintf(name, sizeof(name), "%s-disk0", spec->host);
    xstrlcpy(out->image_id, name, sizeof(out->image_id));
    add_resource(out, "disk", name);

    json_t *ipconf = json_object();
    subnet = azure_subnet_id(a, spec->migration, spec->subnet_id);
    json_object_set_new(ipconf, "subnet", json_pack("{s:s}", "id", subnet));
    json_object_set_new(ipconf, "privateIPAllocationMethod", json_string("Dynamic"));
    if (spec->public_ip) {
        snprintf(name, sizeof(name), "%s-pip", spec->host);
        pip_path = arm_rg_path(a, rg, "/providers/Microsoft.Network/publicIPAddresses/%s", name);
        json_t *pb = json_pack(
            "{s:s, s:o, s:{s:s, s:s}, s:{s:s, s:s}}", "location", location, "tags",
            azure_tags(spec->migration, spec->host), "sku", "name", "Standard", "tier", "Regional",
            "properties", "publicIPAllocationMethod", "Static", "publicIPAddressVersion", "IPv4");
        if (azure_ensure(a, pip_path, ARM_API_NETWORK, pb, &pip, err) < 0) {
            json_decref(ipconf);
            goto out;
        }
        json_object_set_new(ipconf, "publicIPAddress", json_pack("{s:s}", "id", res_id(pip)));
        add_resource(out, "public-ip", name);
    }
    snprintf(name, sizeof(name), "%s-nic", spec->host);
    nic_path = arm_rg_path(a, rg, "/providers/Microsoft.Network/networkInterfaces/%s", name);
    nsg = azure_nsg_id(a, spec->migration, spec->firewall_id);
    json_t *nb =
        json_pack("{s:s, s:o, s:{s:[{s:s, s:o}], s:{s:s}}}", "location", location, "tags",
                  azure_tags(spec->migration, spec->host), "properties", "ipConfigurations", "name",
                  "ipconfig1", "properties", ipconf, "networkSecurityGroup", "id", nsg);
    if (azure_ensure(a, nic_path, ARM_API_NETWORK, nb, &nic, err) < 0 || !res_id(nic)) {
        if (nic && !res_id(nic))
            err_set(err, ERR_PERMANENT, "azure NIC '%s' has no id", name);
        goto out;
    }
    add_resource(out, "network-interface", name);

    json_t *data = json_array();
    for (size_t i = 1; i < nd; i++)
        json_array_append_new(data,
                              json_pack("{s:i, s:s, s:{s:s}}", "lun", (int)(i - 1), "createOption",
                                        "Attach", "managedDisk", "id", disks[i]));
    vm_path = arm_rg_path(a, rg, "/providers/Microsoft.Compute/virtualMachines/%s", spec->host);
    json_t *vb = json_pack(
        "{s:s, s:o, s:{s:{s:s}, s:{s:{s:s, s:s, s:{s:s}}, s:o}, s:{s:[{s:s, s:{s:b}}]},"
        " s:{s:{s:b}}}}",
        "location", location, "tags", azure_tags(spec->migration, spec->host), "properties",
        "hardwareProfile", "vmSize", spec->machine_type, "storageProfile", "osDisk", "osType",
        "Linux", "createOption", "Attach", "managedDisk", "id", disks[0], "dataDisks", data,
        "networkProfile", "networkInterfaces", "id", res_id(nic), "properties", "primary", 1,
        "diagnosticsProfile", "bootDiagnostics", "enabled", 1);
    if (azure_ensure(a, vm_path, ARM_API_COMPUTE, vb, &vm, err) < 0)
        goto out;
    const json_t *vp = json_object_get(vm, "properties");
    const char *state = json_string_value(json_object_get(vp, "provisioningState"));
    const char *vm_id = json_string_value(json_object_get(vp, "vmId"));
    if (!state || strcmp(state, "Succeeded") != 0) {
        err_set(err, ERR_PERMANENT, "azure VM '%s' is %s, not Succeeded", spec->host,
                state ? state : "in no provisioning state");
        goto out;
    }
    xstrlcpy(out->instance_id, vm_id ? vm_id : spec->host, sizeof(out->instance_id));
    add_resource(out, "virtual-machine", spec->host);

    /* Addresses: the NIC's private one, the public IP's once allocated. */
    json_decref(nic);
    nic = NULL;
    int found = 0;
    if (arm_get(a, nic_path, ARM_API_NETWORK, &nic, &found, err) < 0)
        goto out;
    const json_t *ic0 =
        json_array_get(json_object_get(json_object_get(nic, "properties"), "ipConfigurations"), 0);
    const char *priv =
        json_string_value(json_object_get(json_object_get(ic0, "properties"), "privateIPAddress"));
    xstrlcpy(out->private_ip, priv ? priv : "", sizeof(out->private_ip));
    if (pip_path) {
        json_decref(pip);
        pip = NULL;
        if (arm_get(a, pip_path, ARM_API_NETWORK, &pip, &found, err) < 0)
            goto out;
        const char *addr =
            json_string_value(json_object_get(json_object_get(pip, "properties"), "ipAddress"));
        xstrlcpy(out->public_ip, addr ? addr : "", sizeof(out->public_ip));
    }
    rc = 0;
out:
    for (size_t i = 0; i < nd; i++)
        free(disks[i]);
    free(disks);
    free(pip_path);
    free(nic_path);
    free(vm_path);
    free(subnet);
    free(nsg);
    json_decref(pip);
    json_decref(nic);
    json_decref(vm);
    return rc;
}
