/* bypass_daemon: how hermes-bypass starts: its kind, bootstrap keys and config hooks. The
 * agent (bypass_agent) is the daemon's state. */
#include "bypass_daemon.h"
#include "bypass_agent.h"

#include <stdio.h>

static const hms_cfg_key_t s_keys[] = {
    {"socket", HMS_CFG_STRING, "var/run/hermes-bypass.sock",
     "Unix socket where proxies on this host offer connections (replaced at start, mode 0600)"},
    {"idle_timeout_s", HMS_CFG_INT, "300",
     "a spliced flow without a segment for this long is removed"},
    {"fin_linger_ms", HMS_CFG_INT, "5000",
     "a spliced flow stays this long after FIN from both sides"},
    {"drain_timeout_ms", HMS_CFG_INT, "3000",
     "an offer whose legs are not quiet within this time is refused (busy)"},
    {"offload_retries", HMS_CFG_INT, "3",
     "freezes undone because data arrived, before an offer is refused (busy)"},
    {"max_flows", HMS_CFG_INT, "16384", "offers in progress plus spliced flows"},
    {"dataplane", HMS_CFG_BOOL, "true",
     "load the eBPF data plane (false: refuse every offer; for tests of the socket API)"},
    {"shape_syn", HMS_CFG_BOOL, "true",
     "take SACK, timestamps and ECN out of handshakes so that both legs of a flow agree (a tc "
     "egress program on every interface but lo; false: such flows are refused)"},
    {"delay_step_ms", HMS_CFG_INT, "20", "step of the delay ramp before a splice (0: no ramp)"},
    {"delay_step_hold_ms", HMS_CFG_INT, "100", "shortest time each step of the ramp lasts"},
    {"delay_queue", HMS_CFG_INT, "7400", "NFQUEUE number of the delay ramp"},
    {"freeze_pause_ms", HMS_CFG_INT, "0",
     "testing only: keep the legs frozen this long before installing a splice, so that data "
     "arrives meanwhile and the freeze is undone"},
    {NULL, 0, NULL, NULL},
};

static int s_range (hms_config_t *cfg, const char *key, int64_t lo, int64_t hi, char *err,
                    size_t errlen)
{
    int64_t v = hms_config_int (cfg, key);

    if (v < lo || v > hi) {
        snprintf (err, errlen, "%s must be %lld to %lld, got %lld", key, (long long) lo,
                  (long long) hi, (long long) v);
        return -1;
    }
    return 0;
}

static void *s_start (hms_config_t *cfg, char *err, size_t errlen)
{
    bypass_agent_opts_t opts;
    const char *socket = hms_config_str (cfg, "socket");

    if (!socket || !*socket) {
        snprintf (err, errlen, "socket must name a path");
        return NULL;
    }
    if (s_range (cfg, "idle_timeout_s", 1, 86400 * 7, err, errlen) ||
        s_range (cfg, "fin_linger_ms", 0, 600000, err, errlen) ||
        s_range (cfg, "drain_timeout_ms", 10, 600000, err, errlen) ||
        s_range (cfg, "offload_retries", 0, 100, err, errlen) ||
        s_range (cfg, "max_flows", 1, 32768 /* two table entries per flow */, err, errlen) ||
        s_range (cfg, "delay_step_ms", 0, 1000, err, errlen) ||
        s_range (cfg, "delay_step_hold_ms", 1, 60000, err, errlen) ||
        s_range (cfg, "delay_queue", 0, 65535, err, errlen) ||
        s_range (cfg, "freeze_pause_ms", 0, 1000, err, errlen))
        return NULL;
    opts = (bypass_agent_opts_t){
        .socket_path = socket,
        .idle_timeout_ms = hms_config_int (cfg, "idle_timeout_s") * 1000,
        .fin_linger_ms = hms_config_int (cfg, "fin_linger_ms"),
        .drain_timeout_ms = hms_config_int (cfg, "drain_timeout_ms"),
        .offload_retries = (int) hms_config_int (cfg, "offload_retries"),
        .max_flows = (int) hms_config_int (cfg, "max_flows"),
        .no_dataplane = !hms_config_bool (cfg, "dataplane"),
        .shape_syn = hms_config_bool (cfg, "shape_syn"),
        .delay_step_ms = (int) hms_config_int (cfg, "delay_step_ms"),
        .delay_step_hold_ms = (int) hms_config_int (cfg, "delay_step_hold_ms"),
        .delay_queue = (int) hms_config_int (cfg, "delay_queue"),
        .freeze_pause_ms = (int) hms_config_int (cfg, "freeze_pause_ms"),
    };
    return bypass_agent_new (&opts, err, errlen);
}

static void s_stop (void *state)
{
    bypass_agent_t *self = state;
    bypass_agent_destroy (&self);
}

const hms_daemon_def_t bypass_daemon = {
    .name = "hermes-bypass",
    .kind = "bypass",
    .keys = s_keys,
    .start = s_start,
    .stop = s_stop,
    .validate = bypass_agent_validate,
    .apply = bypass_agent_apply,
    .stats = bypass_agent_stats,
    .query = bypass_agent_query,
};
