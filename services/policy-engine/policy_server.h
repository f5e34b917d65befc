/* policy_server: hermes-policy's decision endpoint. A CURVE ROUTER (hms_bus_server, with the
 * process's one hms_auth) in its own thread (czmq actor, zloop) answers each policy.decide
 * batch from a key with role "service" with one policy.decisions reply (same id, decisions in
 * query order), and anything else with an error reply and a counter. The compiled policy set
 * is swapped in whole when the service lifecycle applies a snapshot: validate compiles it,
 * apply swaps the very set validate compiled (and keeps the rate-limit buckets of unchanged
 * rules). */
#ifndef POLICY_SERVER_H_INCLUDED
#define POLICY_SERVER_H_INCLUDED

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *listen;   /* e.g. tcp://0.0.0.0:7200 */
    const char *keys_dir; /* with policy.cert_secret and authorized/ */
    const char *instance; /* for the src of replies */
    size_t rate_slots;    /* rate-limit buckets; 0 means HMS_POLICY_DEFAULT_RATE_SLOTS */
} policy_server_opts_t;

typedef struct {
    uint64_t messages;  /* requests received */
    uint64_t refused;   /* answered with an error */
    uint64_t decisions; /* queries decided */
    int64_t version;    /* config version in use (0: none yet) */
    size_t rules;
} policy_server_stats_t;

typedef struct policy_server policy_server_t;

/* Starts the authentication handler and binds the endpoint. Caller owns return value; NULL
 * with err (what failed and what to do). */
policy_server_t *policy_server_new (const policy_server_opts_t *opts, char *err, size_t errlen);
/* Stops serving; nulls *self_p. */
void policy_server_destroy (policy_server_t **self_p);

/* hms_validate_fn (arg = the server): compiles config's policies; 0, or -1 with err. */
int policy_server_validate (void *arg, const json_t *config, char *err, size_t errlen);
/* hms_apply_fn (arg = the server): swaps in the set compiled for config; takes config. */
void policy_server_apply (void *arg, json_t *config, int64_t version);

/* The endpoint bound (with the port chosen for "tcp://...:*"). */
const char *policy_server_endpoint (policy_server_t *self);
void policy_server_stats (policy_server_t *self, policy_server_stats_t *out);

#endif
