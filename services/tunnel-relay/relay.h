/* relay: the tunnel relay's data plane. Accepts HTTP/2 over TLS 1.3 from other proxies
 * (mutual TLS with the Hermes CA), and for each CONNECT stream either terminates it (opens
 * TCP to the target and pumps bytes) or forwards it, unterminated, as a stream on a pooled
 * connection to the next relay of the route to its destination node (header hermes-dest).
 * Runs one worker thread (libev loop, SO_REUSEPORT listener, pool) per configured worker. */
#ifndef RELAY_H_INCLUDED
#define RELAY_H_INCLUDED

#include "hms_config.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Relays a flow may cross (hms_routes.h names the headers between proxies). */
#define RELAY_MAX_HOPS 16

typedef struct relay relay_t;

/* Bootstrap keys of hermes-relay beyond the common ones. */
extern const hms_cfg_key_t relay_keys[];

/* Loads TLS, binds the listener(s), starts the workers. Caller owns return value; NULL
 * with err. */
relay_t *relay_new (hms_config_t *cfg, char *err, size_t errlen);
void relay_destroy (relay_t **self_p);

/* hms_validate_fn / hms_apply_fn for the relay's snapshot (nodes, links, routes). */
int relay_validate (void *self, const json_t *config, char *err, size_t errlen);
void relay_apply (void *self, json_t *config, int64_t version);
/* hms_stats_fn: tunnels terminated here, forwarded, refused. Caller owns. */
json_t *relay_stats (void *self);
/* The graceful stop (hms_daemon_def_t drain and busy). */
void relay_drain (void *self);
int relay_busy (void *self);

/* The port the listener got (for a ":0" listen). */
uint16_t relay_port (const relay_t *self);

#endif
