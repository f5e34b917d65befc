/* hms_daemon: common start-up and shutdown of every Hermes daemon. */
#include "hms_daemon.h"
#include "hms_log.h"
#include "hms_metrics.h"
#include "hms_time.h"

#include <czmq.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

const hms_cfg_key_t hms_daemon_service_keys[] = {
    {"controller", HMS_CFG_STRING, "tcp://127.0.0.1:7100", "controller api endpoint"},
    {"controller_push", HMS_CFG_STRING, "tcp://127.0.0.1:7101", "controller config feed"},
    {"keys_dir", HMS_CFG_STRING, "var/keys", "folder of CURVE keys (hermesctl keygen)"},
    {"instance", HMS_CFG_STRING, NULL, "unique instance id (default: the host name)"},
    {"log_level", HMS_CFG_STRING, "info", "debug, info, warning or error"},
    {"metrics_listen", HMS_CFG_STRING, NULL,
     "IP:PORT serving counters in the Prometheus text format (off when unset)"},
    {NULL, 0, NULL, NULL},
};

static const hms_cfg_key_t s_controller_keys[] = {
    {"log_level", HMS_CFG_STRING, "info", "debug, info, warning or error"},
    {NULL, 0, NULL, NULL},
};

/* The graceful part of a stop: no new connections, the open ones get drain_s seconds. */
static void s_drain (const hms_daemon_def_t *def, void *state, const sigset_t *stop_set,
                     int drain_s, int sig)
{
    def->drain (state);
    int busy = def->busy (state);
    hms_info ("draining on signal %d: new connections refused, the open ones get up to %d s "
              "(connections, streams and flows open: %d)",
              sig, drain_s, busy);
    int64_t deadline = hms_mono_ms () + (int64_t) drain_s * 1000;
    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
    while ((busy = def->busy (state)) > 0) {
        if (hms_mono_ms () >= deadline) {
            hms_info ("drain time over: closing what is still open (%d)", busy);
            return;
        }
        int again = sigtimedwait (stop_set, NULL, &tick);
        if (again > 0) {
            hms_info ("second signal %d: closing what is still open (%d)", again, busy);
            return;
        }
    }
    hms_info ("drained: nothing open, stopping");
}

int hms_daemon_main (int argc, char **argv, const hms_daemon_def_t *def)
{
    hms_log_set_name (def->name);
    zsys_handler_set (NULL);
    zsys_set_logstream (stderr);
    hms_config_t *cfg =
        hms_config_new (def->kind ? hms_daemon_service_keys : s_controller_keys, def->keys);
    char err[1024] = "";
    int rc = hms_config_load (cfg, argc, argv, err, sizeof err);
    if (rc == 1) {
        hms_config_destroy (&cfg);
        return 0;
    }
    hms_log_level_t level = HMS_LOG_INFO;
    if (rc == 0 && hms_log_level_parse (hms_config_str (cfg, "log_level"), &level)) {
        snprintf (err, sizeof err, "log_level must be debug, info, warning or error, got '%s'",
                  hms_config_str (cfg, "log_level"));
        rc = -1;
    }
    int drain_s = 0;
    if (rc == 0 && def->drain) {
        drain_s = (int) hms_config_int (cfg, "drain_s");
        if (drain_s < 0 || drain_s > 3600) {
            snprintf (err, sizeof err, "drain_s must be 0 to 3600, not %d", drain_s);
            rc = -1;
        }
    }
    if (rc) {
        fprintf (stderr, "%s: %s\n", def->name, err);
        hms_config_destroy (&cfg);
        return 2;
    }
    hms_log_set_level (level);
    /* A proxy holds two sockets per flow: take every descriptor the system allows. */
    struct rlimit nofile;
    if (getrlimit (RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit (RLIMIT_NOFILE, &nofile);
    }
    /* Blocked here, so every thread started from now on leaves them to sigwait below. */
    sigset_t stop_set;
    sigemptyset (&stop_set);
    sigaddset (&stop_set, SIGINT);
    sigaddset (&stop_set, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &stop_set, NULL);
    signal (SIGPIPE, SIG_IGN);

    void *state = NULL;
    if (def->start && !(state = def->start (cfg, err, sizeof err))) {
        hms_error ("cannot start: %s", err);
        hms_config_destroy (&cfg);
        return 1;
    }
    hms_service_t *service = NULL;
    if (def->kind) {
        char host[256] = "";
        gethostname (host, sizeof host - 1);
        const char *instance = hms_config_str (cfg, "instance");
        hms_service_opts_t opts = {
            .kind = def->kind,
            .instance = instance && *instance ? instance : host,
            .controller = hms_config_str (cfg, "controller"),
            .controller_push = hms_config_str (cfg, "controller_push"),
            .keys_dir = hms_config_str (cfg, "keys_dir"),
            .validate = def->validate,
            .apply = def->apply,
            .stats = def->stats,
            .query = def->query,
            .arg = state,
            .build = HMS_VERSION,
            .node = hms_config_str (cfg, "node"), /* NULL for daemons without one */
        };
        service = hms_service_new (&opts, err, sizeof err);
        if (!service) {
            hms_error ("cannot start: %s", err);
            if (def->stop)
                def->stop (state);
            hms_config_destroy (&cfg);
            return 1;
        }
        hms_info ("started kind=%s instance=%s controller=%s version=%s", def->kind, opts.instance,
                  opts.controller, HMS_VERSION);
    }
    hms_metrics_t *metrics = NULL;
    const char *metrics_listen = def->kind ? hms_config_str (cfg, "metrics_listen") : NULL;
    if (service && metrics_listen && *metrics_listen) {
        char host[256] = "";
        gethostname (host, sizeof host - 1);
        const char *instance = hms_config_str (cfg, "instance");
        metrics =
            hms_metrics_new (metrics_listen, def->kind, instance && *instance ? instance : host,
                             def->stats, state, err, sizeof err);
        if (!metrics)
            hms_error ("%s (running without a metrics port)", err);
    }
    int sig = 0;
    sigwait (&stop_set, &sig);
    if (def->drain && drain_s > 0) {
        if (service)
            hms_service_draining (service);
        s_drain (def, state, &stop_set, drain_s, sig);
    } else
        hms_info ("stopping on signal %d", sig);
    hms_metrics_destroy (&metrics);
    hms_service_destroy (&service);
    if (def->stop)
        def->stop (state);
    hms_config_destroy (&cfg);
    return 0;
}
