/* bypass_daemon: how hermes-bypass starts: its kind, bootstrap keys and config hooks.
 * Takes spliceable TCP connections out of a proxy. Data plane: not built yet (control plane only).
 */
#include "bypass_daemon.h"
#include "hms_current.h"

const hms_daemon_def_t bypass_daemon = {
    .name = "hermes-bypass",
    .kind = "bypass",
    .start = hms_current_start,
    .stop = hms_current_stop,

    .apply = hms_current_apply,
};
