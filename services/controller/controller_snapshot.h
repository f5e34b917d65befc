/* controller_snapshot: compiles the config one daemon kind runs (schemas/config/snapshot.v1)
 * from a config version's source state (topology + policies): proxies (ingress, relay) also
 * get the shortest routes (around the state's unavailable nodes), the policy engine the
 * policies. */
#ifndef CONTROLLER_SNAPSHOT_H_INCLUDED
#define CONTROLLER_SNAPSHOT_H_INCLUDED

#include <jansson.h>

/* The daemon kinds the controller configures; NULL-terminated. */
extern const char *const controller_kinds[];
/* True when kind is one of controller_kinds. */
int controller_kind_known (const char *kind);

/* Caller owns return value. state is borrowed; NULL state gives an empty config. */
json_t *controller_snapshot_compile (const json_t *state, const char *kind);

#endif
