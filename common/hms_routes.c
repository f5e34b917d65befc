/* hms_routes: next-hop lookups in a routing snapshot. */
#include "hms_routes.h"
#include "hms_h1.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int hms_routes_parse_address (const char *address, char *host, size_t hostlen, uint16_t *port,
                              char *err, size_t errlen)
{
    char with_port[300];
    const char *a = address;
    /* "host" alone (no colon outside brackets): the default relay port */
    const char *bracket = strrchr (address, ']');
    const char *colon = strrchr (address, ':');
    if (!colon || (bracket && colon < bracket)) {
        snprintf (with_port, sizeof with_port, "%s:%d", address, HMS_RELAY_DEFAULT_PORT);
        a = with_port;
    }
    char why[256];
    if (hms_h1_parse_authority (a, strlen (a), host, hostlen, port, why, sizeof why)) {
        snprintf (err, errlen, "address '%s': %s", address, why);
        return -1;
    }
    return 0;
}

static const json_t *s_node (const json_t *config, const char *name)
{
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (json_object_get (config, "topology"), "nodes"), i, node)
    {
        const char *n = json_string_value (json_object_get (node, "name"));
        if (n && strcmp (n, name) == 0)
            return node;
    }
    return NULL;
}

int hms_routes_check_node (const char *name, char *err, size_t errlen)
{
    size_t n = strlen (name);
    bool ok = n > 0 && n < 64 && isalnum ((unsigned char) name[0]);
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum ((unsigned char) name[i]) || strchr ("_.-", name[i]);
    if (!ok)
        snprintf (err, errlen,
                  "node '%s' is not a node name: 1 to 63 letters, digits, '_', '.' or '-', "
                  "starting with a letter or digit",
                  name);
    return ok ? 0 : -1;
}

int hms_routes_check (const json_t *config, char *err, size_t errlen)
{
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (json_object_get (config, "topology"), "nodes"), i, node)
    {
        const char *address = json_string_value (json_object_get (node, "address"));
        char host[256], why[320];
        uint16_t port;
        if (address && *address &&
            hms_routes_parse_address (address, host, sizeof host, &port, why, sizeof why)) {
            snprintf (err, errlen, "node %s: %s",
                      json_string_value (json_object_get (node, "name")), why);
            return -1;
        }
    }
    return 0;
}

int hms_routes_next (const json_t *config, const char *from, const char *to, char *next,
                     size_t nextlen, char *host, size_t hostlen, uint16_t *port, char *err,
                     size_t errlen)
{
    size_t i;
    json_t *route;
    const json_t *path = NULL;
    json_array_foreach (json_object_get (config, "routes"), i, route)
    {
        if (strcmp (json_string_value (json_object_get (route, "from")), from) == 0 &&
            strcmp (json_string_value (json_object_get (route, "to")), to) == 0) {
            path = json_object_get (route, "path");
            break;
        }
    }
    if (!path || json_array_size (path) < 2) {
        snprintf (err, errlen, "no route from node %s to node %s", from, to);
        return -1;
    }
    const char *hop = json_string_value (json_array_get (path, 1));
    snprintf (next, nextlen, "%s", hop);
    const json_t *node = s_node (config, hop);
    const char *address = node ? json_string_value (json_object_get (node, "address")) : NULL;
    if (!address || !*address) {
        snprintf (err, errlen, "node %s has no relay address (set it with 'node add --address')",
                  hop);
        return -1;
    }
    return hms_routes_parse_address (address, host, hostlen, port, err, errlen);
}

void hms_routes_warm (const json_t *config, const char *from, hms_pool_t *pool)
{
    hms_pool_cool (pool);
    size_t i;
    json_t *route;
    json_array_foreach (json_object_get (config, "routes"), i, route)
    {
        if (strcmp (json_string_value (json_object_get (route, "from")), from) != 0)
            continue;
        char next[64], host[256], why[256];
        uint16_t port;
        const char *to = json_string_value (json_object_get (route, "to"));
        if (hms_routes_next (config, from, to, next, sizeof next, host, sizeof host, &port, why,
                             sizeof why) == 0)
            hms_pool_warm (pool, host, port, "relay");
    }
}

const char *const hms_routes_meta_headers[HMS_ROUTES_META_MAX + 1] = {
    HMS_HDR_USER, "hermes-service", "hermes-namespace", "hermes-route-id", NULL};

hms_h2_stream_t *hms_routes_connect (hms_h2_conn_t *conn, const char *target, const char *dest,
                                     int hops, const char *const *meta,
                                     const hms_h2_stream_cbs_t *cbs, void *arg)
{
    char hops_text[16];
    snprintf (hops_text, sizeof hops_text, "%d", hops);
    nghttp2_nv nva[4 + HMS_ROUTES_META_MAX];
    const char *names[4 + HMS_ROUTES_META_MAX] = {":method", ":authority", HMS_HDR_DEST,
                                                  HMS_HDR_HOPS};
    const char *values[4 + HMS_ROUTES_META_MAX] = {"CONNECT", target, dest, hops_text};
    size_t n = 4;
    for (int i = 0; meta && i < HMS_ROUTES_META_MAX; i++)
        if (meta[i] && meta[i][0]) {
            names[n] = hms_routes_meta_headers[i];
            values[n++] = meta[i];
        }
    for (size_t i = 0; i < n; i++)
        nva[i] = (nghttp2_nv){(uint8_t *) names[i], (uint8_t *) values[i], strlen (names[i]),
                              strlen (values[i]), NGHTTP2_NV_FLAG_NONE};
    return hms_h2_request (conn, nva, n, true, cbs, arg);
}
