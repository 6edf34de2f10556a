/*
 * summary: what the end of discovery does to the migration, as a pure decision so it
 * can be tested without Redis.
 *
 * Discovery ends when the last host's job of the fan-in group finishes (or a host's
 * discovery is run again); its migration-level job then decides:
 *
 *   discovering or awaiting_approval, auto_approve and no blocker -> approved, and the
 *       network phase starts at once (approved_by "auto-approve");
 *   discovering or awaiting_approval otherwise -> awaiting_approval: the operator reads
 *       the findings and the blueprint, then approves (overriding blockers by name);
 *   any later status (approved, migrating, ...) -> unchanged: a host discovered again
 *       after approval only refreshes its record and findings.
 */
#ifndef XM_DISCOVERY_SUMMARY_H
#define XM_DISCOVERY_SUMMARY_H

struct summary_decision {
    const char *status; /* the new status, or NULL to leave it */
    int start_network;  /* enqueue the network phase */
    int suggest;        /* the blueprint may still be (re)suggested */
};

void summary_decide(const char *status, int auto_approve, int blockers,
                    struct summary_decision *out);

#endif
