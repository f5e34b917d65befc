/* ingress_daemon: how hermes-ingress starts: its kind, bootstrap keys and config hooks.
 * Where traffic enters the overlay. Data plane: not built yet (control plane only). */
#include "ingress_daemon.h"
#include "hms_current.h"

const hms_daemon_def_t ingress_daemon = {
    .name = "hermes-ingress",
    .kind = "ingress",
    .start = hms_current_start,
    .stop = hms_current_stop,

    .apply = hms_current_apply,
};
