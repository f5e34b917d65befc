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

/* The overlay's routing headers on a CONNECT stream (DESIGN.md); refusals carry
 * HMS_H2_HDR_ERROR (hms_h2.h). */
#define HMS_HDR_DEST "hermes-dest" /* node where the flow leaves the overlay */
#define HMS_HDR_HOPS "hermes-hops" /* relays crossed so far, this one included */
#define HMS_HDR_USER "hermes-user" /* the client's identity, when the ingress knows it */
/* Identity and routing metadata that travel with a flow from hop to hop (NULL-ended). */
extern const char *const hms_routes_meta_headers[];
#define HMS_ROUTES_META_MAX 4

/* Opens the CONNECT stream of one overlay hop on conn: target "host:port", exit node dest,
 * hops relays crossed with this one; meta[i] the value of hms_routes_meta_headers[i] or
 * NULL (meta itself may be NULL). cbs / arg as hms_h2_request. NULL when conn cannot take a
 * stream. */
hms_h2_stream_t *hms_routes_connect (hms_h2_conn_t *conn, const char *target, const char *dest,
                                     int hops, const char *const *meta,
                                     const hms_h2_stream_cbs_t *cbs, void *arg);

/* Parses a node address "host:port" or "host" (port 4433) into host / port. 0 or -1. */
int hms_routes_parse_address (const char *address, char *host, size_t hostlen, uint16_t *port,
                              char *err, size_t errlen);
/* Checks a node name as the topology has them (1-63 of A-Z a-z 0-9 _ . -, starting with a
 * letter or digit): 0, or -1 with err. */
int hms_routes_check_node (const char *name, char *err, size_t errlen);
/* Checks every node address of config. 0, or -1 with err naming the node. */
int hms_routes_check (const json_t *config, char *err, size_t errlen);
/* The next hop from node `from` toward node `to`: its name, and the host / port of its
 * relay. 0, or -1 with err ("no route from a to b", "node b has no relay address"). */
int hms_routes_next (const json_t *config, const char *from, const char *to, char *next,
                     size_t nextlen, char *host, size_t hostlen, uint16_t *port, char *err,
                     size_t errlen);

/* Keeps warm a pooled connection to the next hop of every route from node `from`, and only
 * those: a hop that no route starts with any more stops reconnecting. */
void hms_routes_warm (const json_t *config, const char *from, hms_pool_t *pool);

#endif
