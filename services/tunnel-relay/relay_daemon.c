/* relay_daemon: how hermes-relay starts: its kind, bootstrap keys and config hooks. */
#include "relay_daemon.h"
#include "relay.h"

static void *s_start (hms_config_t *cfg, char *err, size_t errlen)
{
    return relay_new (cfg, err, errlen);
}

static void s_stop (void *state)
{
    relay_t *self = state;
    relay_destroy (&self);
}

const hms_daemon_def_t relay_daemon = {
    .name = "hermes-relay",
    .kind = "relay",
    .keys = relay_keys,
    .start = s_start,
    .stop = s_stop,
    .validate = relay_validate,
    .apply = relay_apply,
    .stats = relay_stats,
    .drain = relay_drain,
    .busy = relay_busy,
};
