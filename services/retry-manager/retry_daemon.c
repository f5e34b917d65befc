/* retry_daemon: how hermes-retry starts: its kind, bootstrap keys and config hooks.
 * The proxies' retry brain. Verdicts: not built yet (control plane only). */
#include "retry_daemon.h"
#include "hms_current.h"

const hms_daemon_def_t retry_daemon = {
    .name = "hermes-retry",
    .kind = "retry",
    .start = hms_current_start,
    .stop = hms_current_stop,

    .apply = hms_current_apply,
};
