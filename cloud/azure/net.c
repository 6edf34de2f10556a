/*
 * net.c: resource group, NSG, virtual network and subnets; deletion (see net.h).
 */
#include "azure/net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

static int check_name(const char *what, const char *name, struct err *err)
{
    size_t n = strlen(name);
    if (n < 1 || n > 64 || strspn(name, NAME_CHARS) != n)
        return err_set(err, ERR_PERMANENT, "azure: %s name '%.70s' is not valid", what, name);
    return 0;
}

void azure_rg_name(const char *migration, char *out, size_t size)
{
    snprintf(out, size, "xmigrate-%s", migration);
}

json_t *azure_tags(const char *migration, const char *host)
{
    return json_pack("{s:s, s:s}", AZURE_TAG_MIGRATION, migration, AZURE_TAG_HOST,
                     host ? host : "-");
}

/* GET path: 1 when it exists, 0 when not, -1 on error. */
static int exists(struct arm *a, const char *path, const char *api, struct err *err)
{
    json_t *res = NULL;
    int found = 0;
    if (arm_get(a, path, api, &res, &found, err) < 0)
        return -1;
    json_decref(res);
    return found;
}

int azure_ensure(struct arm *a, const char *path, const char *api, json_t *body, json_t **res,
                 struct err *err)
{
    json_t *got = NULL;
    int found = 0;
    int rc = arm_get(a, path, api, &got, &found, err);
    /* A resource whose creation failed earlier is put again: ARM retries it in place. */
    const char *state =
        json_string_value(json_object_get(json_object_get(got, "properties"), "provisioningState"));
    if (rc == 0 && (!found || (state && strcmp(state, "Failed") == 0))) {
        json_decref(got);
        got = NULL;
        rc = arm_put(a, path, api, body, &got, err);
    }
    json_decref(body);
    if (res && rc == 0)
        *res = got;
    else
        json_decref(got);
    return rc;
}

int azure_rg_ensure(struct arm *a, const char *migration, const char *location, struct err *err)
{
    char rg[AZURE_RG_MAX];
    azure_rg_name(migration, rg, sizeof(rg));
    char *path = arm_rg_path(a, rg, "%s", "");
    int rc = azure_ensure(
        a, path, ARM_API_RESOURCES,
        json_pack("{s:s, s:o}", "location", location, "tags", azure_tags(migration, NULL)), NULL,
        err);
    free(path);
    return rc;
}

char *azure_subnet_id(struct arm *a, const char *migration, const char *short_id)
{
    char rg[AZURE_RG_MAX];
    azure_rg_name(migration, rg, sizeof(rg));
    const char *slash = strchr(short_id, '/');
    int vl = slash ? (int)(slash - short_id) : (int)strlen(short_id);
    return arm_rg_path(a, rg, "/providers/Microsoft.Network/virtualNetworks/%.*s/subnets/%s", vl,
                       short_id, slash ? slash + 1 : "");
}

char *azure_nsg_id(struct arm *a, const char *migration, const char *short_id)
{
    char rg[AZURE_RG_MAX];
    azure_rg_name(migration, rg, sizeof(rg));
    return arm_rg_path(a, rg, "/providers/Microsoft.Network/networkSecurityGroups/%s", short_id);
}

static const char *protocol(const char *p)
{
    if (strcmp(p, "tcp") == 0)
        return "Tcp";
    if (strcmp(p, "udp") == 0)
        return "Udp";
    if (strcmp(p, "icmp") == 0)
        return "Icmp";
    return NULL;
}

static json_t *nsg_body(const char *location, const struct net_spec *spec, struct err *err)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < spec->n_rules; i++) {
        const struct net_rule *r = &spec->rules[i];
        const char *proto = protocol(r->protocol);
        if (!proto) {
            json_decref(rules);
            err_set(err, ERR_PERMANENT, "blueprint: firewall rule %zu: protocol '%s'", i,
                    r->protocol);
            return NULL;
        }
        char name[32], ports[32];
        snprintf(name, sizeof(name), "xm-rule-%zu", i);
        if (strcmp(proto, "Icmp") == 0)
            snprintf(ports, sizeof(ports), "*");
        else if (r->port_to > r->port)
            snprintf(ports, sizeof(ports), "%d-%d", r->port, r->port_to);
        else
            snprintf(ports, sizeof(ports), "%d", r->port);
        json_t *props = json_pack(
            "{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s}", "protocol", proto, "priority",
            (int)(100 + 10 * i), "direction", "Inbound", "access", "Allow", "sourceAddressPrefix",
            strcmp(r->source, "0.0.0.0/0") == 0 ? "*" : r->source, "sourcePortRange", "*",
            "destinationAddressPrefix", "*", "destinationPortRange", ports);
        if (r->description[0])
            json_object_set_new(props, "description", json_string(r->description));
        json_array_append_new(rules, json_pack("{s:s, s:o}", "name", name, "properties", props));
    }
    return json_pack("{s:s, s:o, s:{s:o}}", "location", location, "tags",
                     azure_tags(spec->migration, NULL), "properties", "securityRules", rules);
}

static void add_resource(struct net_result *out, const char *kind, const char *id)
{
    if (out->n_resources < XM_ARRAY_LEN(out->resources))
        snprintf(out->resources[out->n_resources++], sizeof(out->resources[0]), "azure:%s:%.*s",
                 kind, (int)(sizeof(out->resources[0]) - 8 - strlen(kind)), id);
}

int azure_net_ensure(struct arm *a, const char *location, const struct net_spec *spec,
                     struct net_result *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    if (check_name("network", spec->name, err) < 0)
        return -1;
    for (size_t i = 0; i < spec->n_subnets; i++)
        if (check_name("subnet", spec->subnets[i].name, err) < 0)
            return -1;
    char rg[AZURE_RG_MAX], nsg[96];
    azure_rg_name(spec->migration, rg, sizeof(rg));
    snprintf(nsg, sizeof(nsg), "%s-nsg", spec->name);
    char *vnet_path = NULL, *nsg_id = NULL;
    int rc = -1;
    if (azure_rg_ensure(a, spec->migration, location, err) < 0)
        goto out;
    json_t *nb = nsg_body(location, spec, err);
    if (!nb)
        goto out;
    nsg_id = azure_nsg_id(a, spec->migration, nsg);
    if (azure_ensure(a, nsg_id, ARM_API_NETWORK, nb, NULL, err) < 0)
        goto out;
    json_t *subnets = json_array();
    for (size_t i = 0; i < spec->n_subnets; i++)
        json_array_append_new(subnets,
                              json_pack("{s:s, s:{s:s, s:{s:s}}}", "name", spec->subnets[i].name,
                                        "properties", "addressPrefix", spec->subnets[i].cidr,
                                        "networkSecurityGroup", "id", nsg_id));
    vnet_path = arm_rg_path(a, rg, "/providers/Microsoft.Network/virtualNetworks/%s", spec->name);
    json_t *vb = json_pack("{s:s, s:o, s:{s:{s:[s]}, s:o}}", "location", location, "tags",
                           azure_tags(spec->migration, NULL), "properties", "addressSpace",
                           "addressPrefixes", spec->cidr, "subnets", subnets);
    if (azure_ensure(a, vnet_path, ARM_API_NETWORK, vb, NULL, err) < 0)
        goto out;
    xstrlcpy(out->network_id, spec->name, sizeof(out->network_id));
    xstrlcpy(out->firewall_id, nsg, sizeof(out->firewall_id));
    add_resource(out, "resource-group", rg);
    add_resource(out, "network-security-group", nsg);
    add_resource(out, "virtual-network", spec->name);
    for (size_t i = 0; i < spec->n_subnets; i++) {
        snprintf(out->subnet_ids[i], sizeof(out->subnet_ids[i]), "%s/%s", spec->name,
                 spec->subnets[i].name);
        add_resource(out, "subnet", out->subnet_ids[i]);
    }
    out->n_subnets = spec->n_subnets;
    rc = 0;
out:
    free(vnet_path);
    free(nsg_id);
    return rc;
}

/* ---- deletion ----------------------------------------------------------------------- */

/* Delete every resource of one type in the group that carries the migration's tag. */
static int delete_all(struct arm *a, const char *rg, const char *migration, const char *type,
                      const char *api, struct err *err)
{
    char *list = arm_rg_path(a, rg, "/providers/%s", type);
    json_t *res = NULL;
    int found = 0, rc = arm_get(a, list, api, &res, &found, err);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(res, "value"), i, r)
    {
        const char *tag =
            json_string_value(json_object_get(json_object_get(r, "tags"), AZURE_TAG_MIGRATION));
        const char *name = json_string_value(json_object_get(r, "name"));
        if (rc < 0 || !tag || !name || strcmp(tag, migration) != 0)
            continue;
        char *path = arm_rg_path(a, rg, "/providers/%s/%s", type, name);
        rc = arm_delete(a, path, api, err);
        free(path);
    }
    json_decref(res);
    free(list);
    return rc;
}

int azure_net_delete(struct arm *a, const char *migration, struct err *err)
{
    static const struct {
        const char *type, *api;
    } order[] = {
        {"Microsoft.Compute/virtualMachines", ARM_API_COMPUTE},
        {"Microsoft.Network/networkInterfaces", ARM_API_NETWORK},
        {"Microsoft.Network/publicIPAddresses", ARM_API_NETWORK},
        {"Microsoft.Compute/disks", ARM_API_DISKS},
        {"Microsoft.Network/virtualNetworks", ARM_API_NETWORK},
        {"Microsoft.Network/networkSecurityGroups", ARM_API_NETWORK},
    };
    char rg[AZURE_RG_MAX];
    azure_rg_name(migration, rg, sizeof(rg));
    char *rg_path = arm_rg_path(a, rg, "%s", "");
    int rc = exists(a, rg_path, ARM_API_RESOURCES, err);
    for (size_t i = 0; rc == 1 && i < XM_ARRAY_LEN(order); i++)
        if (delete_all(a, rg, migration, order[i].type, order[i].api, err) < 0)
            rc = -1;
    if (rc == 1)
        rc = arm_delete(a, rg_path, ARM_API_RESOURCES, err);
    free(rg_path);
    return rc < 0 ? -1 : 0;
}
