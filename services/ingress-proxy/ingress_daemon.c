/* ingress_daemon: how hermes-ingress starts: its kind, bootstrap keys and config hooks. */
#include "ingress_daemon.h"
#include "ingress.h"

static void *s_start (hms_config_t *cfg, char *err, size_t errlen)
{
    return ingress_new (cfg, err, errlen);
}

static void s_stop (void *state)
{
    ingress_t *self = state;
    ingress_destroy (&self);
}

const hms_daemon_def_t ingress_daemon = {
    .name = "hermes-ingress",
    .kind = "ingress",
    .keys = ingress_keys,
    .start = s_start,
    .stop = s_stop,
    .validate = ingress_validate,
    .apply = ingress_apply,
    .stats = ingress_stats,
    .drain = ingress_drain,
    .busy = ingress_busy,
};
