/*
 * net: a migration's Azure network from the blueprint, and its removal.
 *
 * Everything a migration creates lives in one resource group, "xmigrate-<migration>",
 * in the session's location, and carries the tags xmigrate-migration and xmigrate-host
 * (host "-" for shared resources). The network is a network security group
 * "<network>-nsg" with the blueprint's inbound rules (priorities 100, 110, ... in
 * blueprint order; source 0.0.0.0/0 as "*") and a virtual network "<network>" with the
 * blueprint's address space and subnets, each subnet associated with the NSG.
 *
 * Idempotent: each resource is looked up by name first and only put when missing, so a
 * second run creates nothing. Ids handed to the rest of xmigrate are short names, since
 * full ARM ids do not fit PROVIDER_ID_MAX: network_id "<vnet>", firewall_id "<nsg>",
 * subnet ids "<vnet>/<subnet>"; azure_net_id() turns them back into ARM ids.
 *
 * Delete removes, in dependency order, the group's virtual machines, network
 * interfaces, public IPs, disks, virtual networks and NSGs (only those tagged with the
 * migration), then the group itself. Blocks on ARM throughout.
 */
#ifndef XM_AZURE_NET_H
#define XM_AZURE_NET_H

#include <stddef.h>

#include "azure/arm.h"
#include "err.h"
#include "provider.h"

#define AZURE_TAG_MIGRATION "xmigrate-migration"
#define AZURE_TAG_HOST "xmigrate-host"

#define AZURE_RG_MAX (PROVIDER_ID_MAX + 16)

/* "xmigrate-<migration>" into out (AZURE_RG_MAX bytes). */
void azure_rg_name(const char *migration, char *out, size_t size);

/* {"xmigrate-migration": migration, "xmigrate-host": host or "-"}: new. */
json_t *azure_tags(const char *migration, const char *host);

/* GET path; when missing (or Failed), PUT body (stolen) there and wait. *res (may be NULL) the
 * resource, new. The one way every Azure resource is made, so re-runs create nothing. */
int azure_ensure(struct arm *a, const char *path, const char *api, json_t *body, json_t **res,
                 struct err *err);

/* The resource group of a migration, created in location when missing. */
int azure_rg_ensure(struct arm *a, const char *migration, const char *location, struct err *err);

int azure_net_ensure(struct arm *a, const char *location, const struct net_spec *spec,
                     struct net_result *out, struct err *err);
int azure_net_delete(struct arm *a, const char *migration, struct err *err);

/* The ARM id of a subnet ("<vnet>/<subnet>") or NSG ("<nsg>") of a migration: new. */
char *azure_subnet_id(struct arm *a, const char *migration, const char *short_id);
char *azure_nsg_id(struct arm *a, const char *migration, const char *short_id);

#endif
