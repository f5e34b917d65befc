/* policy_daemon: how hermes-policy starts: its kind, bootstrap keys and config hooks.
 * One L3-L7 rule set for the overlay. Decisions: not built yet; rules are checked on apply. */
#include "policy_daemon.h"
#include "hms_current.h"
#include "policy_rules.h"

const hms_daemon_def_t policy_daemon = {
    .name = "hermes-policy",
    .kind = "policy",
    .start = hms_current_start,
    .stop = hms_current_stop,
    .validate = policy_rules_check,
    .apply = hms_current_apply,
};
