/* hms_service: the lifecycle every Hermes daemon shares with the controller. In its own
 * thread it registers, heartbeats every second, receives config snapshots (in the register
 * reply, on the PUB feed, or in a heartbeat reply when it is behind), validates them against
 * schemas/config/<kind>.v1 and the daemon's own check, applies them atomically through the
 * daemon's callback, and acks "applied" or "rejected" with the reason. When the controller
 * goes silent it keeps the last good config and re-registers when the controller returns. */
#ifndef HMS_SERVICE_H_INCLUDED
#define HMS_SERVICE_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* The daemon's own check of a snapshot that passed its schema: 0, or -1 with err. */
typedef int (hms_validate_fn) (void *arg, const json_t *config, char *err, size_t errlen);
/* Swaps a validated config in. config is a reference the callee now owns (keep it or
 * decref it; do not incref it again). Runs in the service thread, so it must hand over to
 * the daemon's threads safely. */
typedef void (hms_apply_fn) (void *arg, json_t *config, int64_t version);
/* Answers an operator's query that the controller relays (service.query): op names it.
 * Returns the result (caller owns), or NULL with err. Runs in the service thread. */
typedef json_t *(hms_query_fn) (void *arg, const char *op, char *err, size_t errlen);
/* The daemon's counters now, as {"name": integer, ...}; caller owns the return value.
 * Called from the service thread (every heartbeat) and the metrics thread. */
typedef json_t *(hms_stats_fn) (void *arg);

typedef struct {
    const char *kind;            /* controller-side kind: ingress, relay, policy, ... */
    const char *instance;        /* unique id of this instance */
    const char *controller;      /* api endpoint, tcp://host:7100 */
    const char *controller_push; /* push endpoint, tcp://host:7101 */
    const char *keys_dir;
    const char *key_name; /* keypair to authenticate with; NULL means kind */
    hms_validate_fn *validate;
    hms_apply_fn *apply;
    hms_stats_fn *stats; /* may be NULL */
    hms_query_fn *query; /* may be NULL: queries are refused */
    void *arg;
    int heartbeat_ms;  /* 0 means 1000 */
    int away_ms;       /* silence after which the controller counts as away; 0 means 3000 */
    const char *build; /* version string reported at registration */
    const char *node;  /* the topology node it serves (proxies), or NULL */
} hms_service_opts_t;

typedef struct hms_service hms_service_t;

/* Starts the lifecycle thread. Caller owns return value; NULL with err (e.g. missing keys). */
hms_service_t *hms_service_new (const hms_service_opts_t *opts, char *err, size_t errlen);
/* Stops the thread and frees everything; nulls *self_p. */
void hms_service_destroy (hms_service_t **self_p);

/* A graceful stop has begun: the heartbeats say so from now on (the first one at once), and
 * `hermesctl status` shows the instance as draining. */
void hms_service_draining (hms_service_t *self);
/* The version this instance runs (0 before the first snapshot). */
int64_t hms_service_applied_version (hms_service_t *self);
/* True while the controller answers. */
bool hms_service_connected (hms_service_t *self);

#endif
