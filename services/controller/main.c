/* hermes-controller: topology, policy and config versions in SQLite, pushed to every
 * service over ZeroMQ. */
#include "controller.h"
#include "hms_daemon.h"

static const hms_cfg_key_t s_keys[] = {
    {"api_bind", HMS_CFG_STRING, "tcp://*:7100",
     "api endpoint (ROUTER) for services and hermesctl"},
    {"push_bind", HMS_CFG_STRING, "tcp://*:7101", "config push endpoint (PUB)"},
    {"db", HMS_CFG_STRING, "var/hermes.db", "SQLite database file"},
    {"keys_dir", HMS_CFG_STRING, "var/keys", "folder of CURVE keys (hermesctl keygen)"},
    {"instance", HMS_CFG_STRING, "controller", "this controller's name in status"},
    {NULL, 0, NULL, NULL},
};

static void *s_start (hms_config_t *cfg, char *err, size_t errlen)
{
    controller_opts_t opts = {
        .api_bind = hms_config_str (cfg, "api_bind"),
        .push_bind = hms_config_str (cfg, "push_bind"),
        .db = hms_config_str (cfg, "db"),
        .keys_dir = hms_config_str (cfg, "keys_dir"),
        .instance = hms_config_str (cfg, "instance"),
    };
    return controller_new (&opts, err, errlen);
}

static void s_stop (void *state)
{
    controller_t *self = state;
    controller_destroy (&self);
}

int main (int argc, char **argv)
{
    static const hms_daemon_def_t def = {
        .name = "hermes-controller", .keys = s_keys, .start = s_start, .stop = s_stop};
    return hms_daemon_main (argc, argv, &def);
}
