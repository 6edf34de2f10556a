/*
 * rules: the pre-flight checks, run on every host record for the migration's target
 * cloud before a byte is copied.
 *
 * Every check is one row of the rule table in rules.c (its id, what it checks, and its
 * function); what the checks compare against (supported OS versions, import paths,
 * disk limits, drivers per cloud, foreign agents, free-space floors) are data tables
 * beside it. To add a rule, add a row. A rule yields at most one finding per host:
 *
 *   {"name": "<host>/<rule>", "rule": "<rule>", "severity": "blocker"|"warning",
 *    "message": "<what is wrong and what to do>"}
 *
 * A blocker stops approval until fixed (and discovery run again) or overridden by its
 * name; a warning is something prep handles or the operator should know.
 */
#ifndef XM_DISCOVERY_RULES_H
#define XM_DISCOVERY_RULES_H

#include <jansson.h>

/* How discovery of one host ended (host hash field "discovery"). */
#define DISCOVERY_OK "discovered"
#define DISCOVERY_UNREACHABLE "unreachable"
#define DISCOVERY_FAILED "failed"

/*
 * Run every rule for host on cloud ("aws", "azure", "gcp"). outcome is one of the
 * DISCOVERY_* values, reason the readable error when it is not DISCOVERY_OK (else
 * NULL), record the host record (NULL unless discovered). Returns a new array of
 * findings, blockers first, then in rule-table order. Pure.
 */
json_t *rules_run(const char *host, const char *cloud, const char *outcome, const char *reason,
                  const json_t *record);

/* The names of every driver some cloud needs (new array): discovery asks each host
 * which of them its kernel has. */
json_t *rules_driver_names(void);

/* Count the blockers and warnings of a findings array. */
void rules_count(const json_t *findings, int *blockers, int *warnings);

#endif
