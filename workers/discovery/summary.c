#include "summary.h"

#include <string.h>

void summary_decide(const char *status, int auto_approve, int blockers,
                    struct summary_decision *out)
{
    int open =
        status && (strcmp(status, "discovering") == 0 || strcmp(status, "awaiting_approval") == 0);
    out->suggest = open;
    out->start_network = open && auto_approve && blockers == 0;
    out->status = !open ? NULL : out->start_network ? "approved" : "awaiting_approval";
}
