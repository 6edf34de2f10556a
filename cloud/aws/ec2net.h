/*
 * ec2net: a migration's target network in AWS (VPC, subnets, internet gateway, public
 * route table, security group), made idempotently and removed again; and the choice of
 * an instance type for a host's vCPUs and memory.
 *
 * Input is plain C (struct ec2net_spec), not the blueprint JSON: the network worker maps
 * blueprint.json's "network" and "firewall" onto it (field for field), so this module
 * has no JSON dependency and other callers (rollback, tests) need none either.
 *
 * Ownership by tags. Everything ec2net_ensure() creates carries, from its creation call
 * on (TagSpecification, so nothing ever exists untagged):
 *   xmigrate:migration = <migration id>
 *   xmigrate:name      = <network name> (VPC, internet gateway, security group),
 *                        <subnet name> (subnet), <network name>-public (route table)
 *   Name               = xmigrate-<migration>-<that name> (what the console shows)
 * Network resources are shared by all the hosts of a migration, so they carry no
 * EC2NET_TAG_HOST; per-host resources (instances, volumes, images) carry it.
 *
 * Idempotency: before creating anything, ec2net_ensure() looks it up by those tags (and
 * the VPC id), so a second run, or a run after a crash half-way, creates only what is
 * missing and returns the same ids. Should two runs of one job overlap (a takeover while
 * the first still ran) and both create one, later runs settle on the lexicographically
 * smallest id; the extra carries our tags and goes with ec2net_delete(). Every lookup
 * also checks the tags client-side: a resource whose tags do not say it is ours is never
 * used, changed or deleted, whatever the endpoint's filtering did.
 *
 * Convergence: the VPC and subnet CIDRs must match what exists (a changed CIDR is a
 * permanent error: nothing is replaced); missing subnets are added; a subnet that is
 * public gets the public route table, one that is now private loses it (and so falls
 * back to the VPC's main table, which has no internet route); firewall rules are only
 * added: a rule that is no longer in the spec is left in place (operators may have added
 * rules by hand to the group).
 *
 * Firewall rules map onto security group ingress: tcp/udp from port to port_to (port_to
 * 0: port alone) from one IPv4 CIDR (host bits dropped, as EC2 stores it: 10.1.2.3/16 is
 * 10.1.0.0/16). icmp allows every ICMP type and code from the source (EC2 -1/-1; port
 * and port_to are ignored, as Azure and GCP rules carry no ICMP type). Egress stays
 * EC2's default (all allowed). A description keeps EC2's allowed characters (letters,
 * digits, space and ._-:/()#,@[]+=&;{}!$*); any other byte becomes '_'.
 *
 * Errors name what failed and keep AWS's code and message:
 *   "ec2 CreateSubnet 'web' (10.0.1.0/24): InvalidSubnet.Conflict: ... (HTTP 400, ...)"
 * Rejected credentials stay the permanent "AWS rejected the credentials (AuthFailure)".
 * Bad input is a permanent error before any call. No secret is in any message.
 *
 * Every function blocks (several EC2 calls, each retried inside aws_ec2()).
 */
#ifndef XM_EC2NET_H
#define XM_EC2NET_H

#include <stddef.h>

#include "err.h"

struct aws;

#define EC2NET_TAG_MIGRATION "xmigrate:migration"
#define EC2NET_TAG_NAME "xmigrate:name"
#define EC2NET_TAG_HOST "xmigrate:host"

#define EC2NET_MAX_SUBNETS 64 /* blueprint.json network.subnets maxItems */
#define EC2NET_MAX_RULES 200  /* blueprint.json firewall maxItems */
#define EC2NET_NAME_MAX 63    /* blueprint.json definitions.name maxLength */
#define EC2NET_ID_MAX 64      /* room for any EC2 resource id ("subnet-" + 17 hex) */

struct ec2net_subnet {
    const char *name; /* ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$, at most 63 */
    const char *cidr; /* a.b.c.d/n, /16../28, inside the network's CIDR, host bits 0 */
    int is_public;    /* route 0.0.0.0/0 through the internet gateway */
    const char *zone; /* availability zone ("us-east-1a"), or NULL: EC2 chooses */
};

struct ec2net_rule {
    const char *protocol;    /* "tcp", "udp" or "icmp" */
    int port;                /* 0..65535 */
    int port_to;             /* 0: port alone; else port..port_to (port_to >= port) */
    const char *source;      /* IPv4 CIDR the traffic may come from */
    const char *description; /* NULL or at most 200 bytes */
};

/* Everything borrowed for the call. */
struct ec2net_spec {
    const char *migration; /* job.json ident: ^[A-Za-z0-9._:-]+$, at most 128 */
    const char *name;      /* the network's name (blueprint network.name) */
    const char *cidr;      /* VPC CIDR, /16../28 */
    const struct ec2net_subnet *subnets;
    size_t n_subnets; /* 1..EC2NET_MAX_SUBNETS, names and CIDRs distinct, no overlap */
    const struct ec2net_rule *rules;
    size_t n_rules; /* 0..EC2NET_MAX_RULES */
};

/* Caller storage; ids are "" where nothing applies. */
struct ec2net_result {
    char vpc_id[EC2NET_ID_MAX];
    char igw_id[EC2NET_ID_MAX];         /* "" when no subnet is public */
    char route_table_id[EC2NET_ID_MAX]; /* the public table; "" when no subnet is public */
    char sg_id[EC2NET_ID_MAX];
    size_t n_subnets; /* = spec->n_subnets, in the spec's order */
    struct {
        char name[EC2NET_NAME_MAX + 1];
        char id[EC2NET_ID_MAX];
    } subnets[EC2NET_MAX_SUBNETS];
    int changes; /* what this call created or changed (resources, attachments, routes,
                    associations, rules): 0 when everything was in place already */
};

/* What one ec2net_delete() removed. */
struct ec2net_deleted {
    int associations; /* route table associations */
    int route_tables;
    int internet_gateways; /* each detached, then deleted */
    int security_groups;
    int subnets;
    int vpcs;
};

/*
 * Make the network of spec exist (see above) and fill out. 0, or -1 with err: permanent
 * for bad input, rejected credentials, conflicts and quota; transient for what may pass
 * on a retry (throttling, 5xx, network). A failure part-way leaves what was made, tagged,
 * for the next run to find, and out holds the ids known so far. Blocks.
 */
int ec2net_ensure(struct aws *a, const struct ec2net_spec *spec, struct ec2net_result *out,
                  struct err *err);

/*
 * Remove everything tagged xmigrate:migration=<migration>, in dependency order: route
 * table associations and route tables, internet gateways (detached first), security
 * groups, subnets, VPCs. Nothing without that tag is touched.
 *
 * Instances are not this module's to destroy: while any instance tagged with the
 * migration is not terminated, it refuses and deletes nothing: permanent error
 * ("... still has instances i-..: terminate them first") when one is pending, running,
 * stopping or stopped, transient while they are only shutting down. (Rollback terminates
 * the instances first, then calls this.) A DependencyViolation (an ENI EC2 has not
 * released yet, or something untagged left in the VPC) is transient, naming the
 * resource.
 *
 * Idempotent: what is already gone is skipped, a second run deletes nothing and
 * succeeds. report (may be NULL) counts what this call removed. Blocks.
 */
int ec2net_delete(struct aws *a, const char *migration, struct ec2net_deleted *report,
                  struct err *err);

/*
 * The smallest instance type for vcpus (1..1024) and memory_mib (1..33554432) on arch
 * ("x86_64" or "arm64"; NULL or "" is x86_64; "amd64" and "aarch64", as Linux and
 * Ansible facts spell them, are accepted), from DescribeInstanceTypes (every page,
 * following NextToken). Candidates: current generation, that architecture, not bare
 * metal, on-demand, EBS root device, at least vcpus default vCPUs and memory_mib MiB.
 * Smallest: least memory, then least vCPUs, then the name (strcmp), so the answer is
 * deterministic. Writes the name into out (size bytes). 0, or -1 with err (permanent
 * when nothing fits). Blocks.
 */
int ec2net_suggest_type(struct aws *a, int vcpus, long long memory_mib, const char *arch, char *out,
                        size_t size, struct err *err);

#endif
