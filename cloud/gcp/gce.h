/*
 * gce: the Compute Engine resources of a migration, over gcp_json(): a custom-mode VPC
 * network with the blueprint's subnetworks and firewall rules, images from a disk.raw
 * tar.gz in Cloud Storage, data disks, the instance; and their removal.
 *
 * Names. Compute names are [a-z]([-a-z0-9]{0,61}[a-z0-9])?, so every resource of a
 * migration is called gce_name(migration, part) = "xm-<10 hex of SHA-256(migration)>-
 * <part>", the part lowercased with other bytes made '-', cut and suffixed with 8 hex of
 * its own hash when the whole would pass 63 bytes. The names are the idempotency keys:
 * everything is looked up by name before it is inserted (and an insert answered
 * alreadyExists counts as found), so a second run creates nothing. Networks,
 * subnetworks and firewalls carry "xmigrate migration <id>" in their description;
 * images, disks and instances carry the labels xmigrate-migration and xmigrate-host.
 * Nothing without the prefix (and that description or label) is ever changed or deleted.
 *
 * Network: the network is custom mode (autoCreateSubnetworks false, regional routing);
 * each subnet is a subnetwork of the migration's region with Private Google Access on.
 * GCE gives every network a default route to the internet gateway, so a "public"
 * subnet differs only in that its instances may get an external address (the
 * blueprint's public_ip decides). Each firewall rule becomes one INGRESS firewall
 * "fw-<12 hex of the rule>" (content-addressed: an unchanged rule is found again, a new
 * one is added, a removed one is left, as on AWS) allowing the protocol and ports from
 * the source range to instances with the migration's network tag; that tag is what
 * net_result.firewall_id holds and what vm_launch puts on the instance. Subnet ids are
 * "projects/<p>/regions/<r>/subnetworks/<name>", as instances.insert takes them.
 *
 * Long-running operations (zonal, regional, global) are polled until DONE, starting at
 * gcp_poll_ms() and backing off to 10 s; an operation's error becomes the call's error
 * with GCE's code and message: transient for the codes GCE documents as passing
 * (RESOURCE_NOT_READY, ZONE_RESOURCE_POOL_EXHAUSTED*, *RATE*_EXCEEDED, INTERNAL_ERROR),
 * permanent otherwise. A deadline that passes is transient.
 *
 * Every function blocks. Pointers are borrowed for the call.
 */
#ifndef XM_GCE_H
#define XM_GCE_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"
#include "gcp/gcp.h"
#include "provider.h"

#define GCE_NAME_MAX 63
#define GCE_LABEL_MIGRATION "xmigrate-migration"
#define GCE_LABEL_HOST "xmigrate-host"
#define GCE_OP_TIMEOUT_S 1800 /* default wait for one operation */

/* The resource name for part of migration, as described above, into out. */
void gce_name(char out[GCE_NAME_MAX + 1], const char *migration, const char *part);

/* A label value: lowercased, other bytes '_', at most 63 bytes, into out. */
void gce_label(char out[GCE_NAME_MAX + 1], const char *value);

/*
 * Wait for the operation op (borrowed) to be DONE; what names it in errors. 0, or -1
 * with the operation's error (see above) or a transient timeout after timeout_s.
 */
int gce_wait(struct gcp *g, const json_t *op, const char *what, long timeout_s, struct err *err);

/*
 * Make the network of spec exist in region (see above) and fill out (ids, and every
 * resource as "gcp:<kind>:<name>"). *changes (may be NULL) counts what this call
 * inserted: 0 when everything was in place.
 */
int gce_network_ensure(struct gcp *g, const char *region, const struct net_spec *spec,
                       struct net_result *out, int *changes, struct err *err);

/* What one gce_delete_migration() removed. */
struct gce_deleted {
    int instances, disks, images, firewalls, subnetworks, networks;
};

/*
 * Remove everything of migration, in dependency order: instances in zone, disks in zone,
 * images, firewalls, subnetworks in region, networks. What is gone already is skipped: a
 * second run removes nothing and succeeds. report may be NULL.
 */
int gce_delete_migration(struct gcp *g, const char *migration, const char *region, const char *zone,
                         struct gce_deleted *report, struct err *err);

/* An image from a disk.raw tar.gz. */
struct gce_image_spec {
    const char *name;
    const char *source; /* gs://bucket/object or https://storage.googleapis.com/bucket/object */
    const char *arch;   /* "x86_64" or "arm64" */
    int uefi;           /* boot mode uefi: UEFI_COMPATIBLE */
    const char *migration, *host; /* labels */
};

/* Make the image exist and be READY (a FAILED one of ours is deleted and made again). */
int gce_image_ensure(struct gcp *g, const struct gce_image_spec *spec, struct err *err);

/* A persistent disk in zone from an image of this project; ready when it returns. */
int gce_disk_ensure(struct gcp *g, const char *zone, const char *name, const char *image,
                    const char *migration, const char *host, struct err *err);

struct gce_instance_spec {
    const char *zone;
    const char *name;
    const char *machine_type; /* "e2-medium" */
    const char *boot_image;   /* an image name of this project */
    const char *const *disks; /* data disk names in zone, attached in order */
    size_t n_disks;
    const char *subnetwork; /* "projects/<p>/regions/<r>/subnetworks/<name>" */
    const char *tag;        /* the network tag the firewalls target */
    int public_ip;          /* an ephemeral external address (ONE_TO_ONE_NAT) */
    const char *migration, *host;
};

struct gce_instance {
    char id[PROVIDER_ID_MAX]; /* the instance's numeric id */
    char status[32];
    char private_ip[64];
    char public_ip[64];
};

/* Make the instance exist (its insert operation DONE) and wait until it is RUNNING
 * (TERMINATED or SUSPENDED on the way is a permanent error), up to timeout_s. */
int gce_instance_ensure(struct gcp *g, const struct gce_instance_spec *spec, long timeout_s,
                        struct gce_instance *out, struct err *err);

#endif
