/* policy_daemon: how hermes-policy starts: its kind, bootstrap keys and config hooks. The
 * decision server (policy_server) is the daemon's state; snapshots are compiled on validate
 * and swapped in on apply. */
#include "policy_daemon.h"
#include "policy_server.h"

#include <unistd.h>

static const hms_cfg_key_t s_keys[] = {
    {"listen", HMS_CFG_STRING, "tcp://*:7200", "decision endpoint (ROUTER) for proxies"},
    {"rate_slots", HMS_CFG_INT, "65536", "rate-limit buckets kept (rule x key)"},
    {NULL, 0, NULL, NULL},
};

static void *s_start (hms_config_t *cfg, char *err, size_t errlen)
{
    char host[256] = "";
    gethostname (host, sizeof host - 1);
    const char *instance = hms_config_str (cfg, "instance");
    int64_t slots = hms_config_int (cfg, "rate_slots");
    if (slots < 1 || slots > (1 << 24)) {
        snprintf (err, errlen, "rate_slots must be 1 to %d, got %lld", 1 << 24, (long long) slots);
        return NULL;
    }
    policy_server_opts_t opts = {
        .listen = hms_config_str (cfg, "listen"),
        .keys_dir = hms_config_str (cfg, "keys_dir"),
        .instance = instance && *instance ? instance : host,
        .rate_slots = (size_t) slots,
    };
    return policy_server_new (&opts, err, errlen);
}

static void s_stop (void *state)
{
    policy_server_t *self = state;
    policy_server_destroy (&self);
}

static json_t *s_stats (void *state)
{
    policy_server_stats_t st;
    policy_server_stats (state, &st);
    return json_pack ("{s:I, s:I, s:I, s:I}", "policy_requests", (json_int_t) st.messages,
                      "policy_refused_requests", (json_int_t) st.refused, "policy_decisions",
                      (json_int_t) st.decisions, "policy_rules", (json_int_t) st.rules);
}

const hms_daemon_def_t policy_daemon = {
    .name = "hermes-policy",
    .kind = "policy",
    .keys = s_keys,
    .start = s_start,
    .stop = s_stop,
    .validate = policy_server_validate,
    .apply = policy_server_apply,
    .stats = s_stats,
};
