/* hms_daemon: the one way every Hermes daemon starts and stops: bootstrap config (file,
 * HERMES_* environment, flags), logging, signals, the controller lifecycle (hms_service)
 * and the daemon's own start/stop. A daemon's main.c only calls hms_daemon_main. */
#ifndef HMS_DAEMON_H_INCLUDED
#define HMS_DAEMON_H_INCLUDED

#include "hms_config.h"
#include "hms_service.h"

#define HMS_VERSION "0.1.0"

typedef struct {
    const char *name;          /* binary name, e.g. "hermes-relay" */
    const char *kind;          /* controller kind; NULL for the controller itself */
    const hms_cfg_key_t *keys; /* the daemon's own bootstrap keys, or NULL */
    /* Starts the daemon's work; returns its state (passed to the hooks below), or NULL with
     * err. May be NULL when the daemon has nothing of its own to start. */
    void *(*start) (hms_config_t *cfg, char *err, size_t errlen);
    void (*stop) (void *state);
    hms_validate_fn *validate; /* arg = the state returned by start */
    hms_apply_fn *apply;
    hms_stats_fn *stats; /* counters for heartbeats and the metrics port; may be NULL */
    hms_query_fn *query; /* operator queries relayed by the controller; may be NULL */
    /* A graceful stop, for daemons that carry traffic (both NULL: a signal stops at once).
     * On the first SIGTERM or SIGINT, drain stops taking new connections and asks the open
     * ones to end; busy counts what is still open. The daemon stops when busy is 0, when
     * drain_s (HMS_DAEMON_DRAIN_KEY) has passed, or on a second signal. */
    void (*drain) (void *state);
    int (*busy) (void *state);
} hms_daemon_def_t;

/* The bootstrap key of a daemon with drain and busy hooks. */
#define HMS_DAEMON_DRAIN_KEY                                                                       \
    {                                                                                              \
        "drain_s", HMS_CFG_INT, "10",                                                              \
            "on SIGTERM, new connections are refused and open ones get this many seconds to "      \
            "finish (0 closes them at once; a second signal stops at once)"                        \
    }

/* The bootstrap keys every service daemon has (controller, controller_push, keys_dir,
 * instance, log_level, metrics_listen). */
extern const hms_cfg_key_t hms_daemon_service_keys[];

/* Parses options, starts, waits for SIGINT/SIGTERM, stops. Returns the exit code:
 * 0 on a clean stop, 2 on a usage or config error, 1 when start-up failed. */
int hms_daemon_main (int argc, char **argv, const hms_daemon_def_t *def);

#endif
