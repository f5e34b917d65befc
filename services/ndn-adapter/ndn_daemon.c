/* ndn_daemon: how hermes-ndn starts: its kind, bootstrap keys and config hooks.
 * NDN forwarder at the edge of the overlay. Faces: not built yet (control plane only). */
#include "ndn_daemon.h"
#include "hms_current.h"

const hms_daemon_def_t ndn_daemon = {
    .name = "hermes-ndn",
    .kind = "ndn",
    .start = hms_current_start,
    .stop = hms_current_stop,

    .apply = hms_current_apply,
};
