/* controller_snapshot: per-kind config compilation. */
#include "controller_snapshot.h"
#include "controller_routes.h"

#include <string.h>

const char *const controller_kinds[] = {"ingress", "relay",  "policy", "retry",
                                        "ndn",     "bypass", NULL};

int controller_kind_known (const char *kind)
{
    for (int i = 0; kind && controller_kinds[i]; i++)
        if (strcmp (kind, controller_kinds[i]) == 0)
            return 1;
    return 0;
}

/* Which kinds forward flows along routes. */
static int s_wants_routes (const char *kind)
{
    return strcmp (kind, "ingress") == 0 || strcmp (kind, "relay") == 0;
}

/* Which kinds enforce policy documents themselves. */
static int s_wants_policies (const char *kind)
{
    return strcmp (kind, "policy") == 0;
}

static json_t *s_copy_array (const json_t *state, const char *key)
{
    json_t *a = json_object_get (state, key);
    return json_is_array (a) ? json_deep_copy (a) : json_array ();
}

json_t *controller_snapshot_compile (const json_t *state, const char *kind)
{
    json_t *nodes = s_copy_array (state, "nodes");
    json_t *links = s_copy_array (state, "links");
    json_t *policies = s_wants_policies (kind) ? s_copy_array (state, "policies") : json_array ();
    json_t *config = json_pack ("{s:{s:o, s:o}, s:o}", "topology", "nodes", nodes, "links", links,
                                "policies", policies);
    if (s_wants_routes (kind))
        json_object_set_new (
            config, "routes",
            controller_routes_compute (nodes, links, json_object_get (state, "unavailable")));
    return config;
}
