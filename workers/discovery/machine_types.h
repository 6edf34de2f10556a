/*
 * machine_types: the table of machine types per cloud (schemas/machine_types.json, the
 * document's "default"), and picking the smallest type that fits a host.
 */
#ifndef XM_DISCOVERY_MACHINE_TYPES_H
#define XM_DISCOVERY_MACHINE_TYPES_H

#include <jansson.h>

#include "err.h"

/* Read <schemas_dir>/machine_types.json: the table {"aws": [{name, vcpus, memory_mib}],
 * ...} (new), or NULL with a permanent err. Blocking file read. */
json_t *machine_types_load(const char *schemas_dir, struct err *err);

/* The first type of cloud (the table lists them smallest first) with at least vcpus
 * and memory_mib; the largest when none is big enough; NULL for an unknown cloud.
 * Borrowed from table. */
const char *machine_types_fit(const json_t *table, const char *cloud, long long vcpus,
                              long long memory_mib);

#endif
