/*
 * normalize: the host record (schemas/host.json) from the facts one host posted to the
 * discovery callback.
 *
 * The facts are what playbooks/discover.yml sends: {"ansible": <a subset of
 * ansible_facts, keys without the ansible_ prefix, values exactly as the setup module
 * reports them>, "probes": <stdout lines of the few commands Ansible has no fact for>}.
 * The probes and what each holds:
 *
 *   boot_mode         "uefi" or "bios" (/sys/firmware/efi present or not)
 *   partition_tables  ["sda gpt", "sdb dos", "vda"]: blkid's PTTYPE per block device
 *   fstab             the lines of /etc/fstab
 *   ip_addr           `ip -o -4 addr show`: a "dynamic" address came from DHCP
 *   initramfs         "tool=dracut" | "tool=initramfs-tools" | "tool=unknown", then the
 *                     kernel module files in the current initramfs
 *   drivers           "<name> builtin" | "<name> module" for each driver a target
 *                     cloud needs that the running kernel has
 *   cloud_agents      names of cloud agents found installed
 *   listening         `ss -tlnp`
 *
 * Old Ansible versions and odd hosts disagree on details (numbers as strings, missing
 * keys): anything unreadable becomes "unknown" or is left out rather than failing the
 * host; only facts with no "ansible" object, or no distribution, are refused.
 */
#ifndef XM_DISCOVERY_NORMALIZE_H
#define XM_DISCOVERY_NORMALIZE_H

#include <jansson.h>

#include "err.h"

/* The host record of host (its API name) from facts (borrowed). New reference, or
 * NULL with a permanent err saying what is missing. Pure: no I/O. */
json_t *normalize_host(const char *host, const json_t *facts, struct err *err);

#endif
