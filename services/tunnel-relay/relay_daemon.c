/* relay_daemon: how hermes-relay starts: its kind, bootstrap keys and config hooks.
 * Carries tunnels between proxies. Data plane: not built yet (control plane only). */
#include "relay_daemon.h"
#include "hms_current.h"

const hms_daemon_def_t relay_daemon = {
    .name = "hermes-relay",
    .kind = "relay",
    .start = hms_current_start,
    .stop = hms_current_stop,

    .apply = hms_current_apply,
};
