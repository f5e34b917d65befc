/* controller_routes: shortest paths over the overlay topology (directed links with costs),
 * recomputed from a config version's nodes and links; what proxies use to pick the relays
 * of a flow. Ties between equal-cost paths go to the path whose node names sort first,
 * so every controller computes the same routes. */
#ifndef CONTROLLER_ROUTES_H_INCLUDED
#define CONTROLLER_ROUTES_H_INCLUDED

#include <jansson.h>

/* Every reachable (from, to) pair of distinct nodes as
 * [{"from":A, "to":B, "cost":C, "path":[A, …, B]}], sorted by from then to.
 * nodes and links are borrowed (the shapes of schemas/config/snapshot.v1). unavailable (an
 * array of node names, borrowed, may be NULL) are nodes with no relay up: no path goes
 * through or to them, while routes from them (for an ingress there) are computed as usual.
 * Caller owns return value. */
json_t *controller_routes_compute (const json_t *nodes, const json_t *links,
                                   const json_t *unavailable);

/* The routes of all that match from / to (either may be NULL for any). Caller owns. */
json_t *controller_routes_filter (const json_t *routes, const char *from, const char *to);

#endif
