/*
 * suggest: the blueprint discovery proposes (schemas/blueprint.json), from the host
 * records. The operator reviews it (GET .../blueprint), changes it with PUT and
 * approves it.
 *
 *   network   one block covering every discovered private subnet (at least /16 wide
 *             and never wider: a subnet outside the /16 of the largest one is left out
 *             and its hosts placed in the largest one)
 *   subnets   one per discovered subnet (prefix clamped to /16../28), a subnet inside
 *             another dropped; public when a host placed there had a public address
 *   hosts     every host of the migration, in the subnet of its default interface; the
 *             smallest machine type of the cloud with its vCPUs and memory; its disks
 *   firewall  one TCP rule per port some host listens on (not on loopback), open to the
 *             network's own block
 * A host that was not discovered is still placed (first subnet, smallest type) so the
 * blueprint stays valid; its blocker stands until it is discovered.
 */
#ifndef XM_DISCOVERY_SUGGEST_H
#define XM_DISCOVERY_SUGGEST_H

#include <jansson.h>

/*
 * mig: the migration id (names the network); cloud picks the machine types from
 * types (machine_types_load); hosts: array of every host name; records: object host
 * name -> host record (hosts not discovered are absent). New blueprint. Pure.
 */
json_t *suggest_blueprint(const char *mig, const char *cloud, const json_t *hosts,
                          const json_t *records, const json_t *types);

#endif
