/* hms_routes: reading a proxy's routing snapshot (schemas/config/snapshot.v1: nodes with
 * relay addresses, routes computed by the controller): the next relay toward a destination
 * node, and the check that every node address is usable. */
#ifndef HMS_ROUTES_H_INCLUDED
#define HMS_ROUTES_H_INCLUDED

#include "hms_pool.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define HMS_RELAY_DEFAULT_PORT 4433

/* Parses a node address "host:port" or "host" (port 4433) into host / port. 0 or -1. */
int hms_routes_parse_address (const char *address, char *host, size_t hostlen, uint16_t *port,
                              char *err, size_t errlen);
/* Checks every node address of config. 0, or -1 with err naming the node. */
int hms_routes_check (const json_t *config, char *err, size_t errlen);
/* The next hop from node `from` toward node `to`: its name, and the host / port of its
 * relay. 0, or -1 with err ("no route from a to b", "node b has no relay address"). */
int hms_routes_next (const json_t *config, const char *from, const char *to, char *next,
                     size_t nextlen, char *host, size_t hostlen, uint16_t *port, char *err,
                     size_t errlen);

/* Keeps warm a pooled connection to the next hop of every route from node `from`. */
void hms_routes_warm (const json_t *config, const char *from, hms_pool_t *pool);

#endif
