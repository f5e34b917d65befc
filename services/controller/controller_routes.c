/* controller_routes: Dijkstra from every node, deterministic tie-breaking, around the nodes
 * that have no relay up. */
#include "controller_routes.h"
#include "hms_alloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int to;
    int64_t cost;
} s_edge_t;

typedef struct {
    const char *name;
    s_edge_t *edges;
    size_t nedges;
    bool avoided; /* no relay up: never a hop or a destination */
} s_node_t;

static int s_cmp_names (const void *a, const void *b)
{
    return strcmp (((const s_node_t *) a)->name, ((const s_node_t *) b)->name);
}

static int s_index (const s_node_t *nodes, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp (nodes[mid].name, name);
        if (c == 0)
            return (int) mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Compares the paths to a and b given predecessor arrays: node names from the source. */
static int s_path_cmp (const s_node_t *nodes, const int *prev, int a, int b, int *buf_a, int *buf_b)
{
    int na = 0, nb = 0;
    for (int v = a; v >= 0; v = prev[v])
        buf_a[na++] = v;
    for (int v = b; v >= 0; v = prev[v])
        buf_b[nb++] = v;
    for (int i = na - 1, j = nb - 1; i >= 0 && j >= 0; i--, j--) {
        int c = strcmp (nodes[buf_a[i]].name, nodes[buf_b[j]].name);
        if (c)
            return c;
    }
    return na - nb;
}

/* Single-source shortest paths; O(V^2), fine for overlays of a few thousand nodes. */
static void s_dijkstra (const s_node_t *nodes, size_t n, int src, int64_t *dist, int *prev,
                        int *buf_a, int *buf_b)
{
    char *done = hms_alloc (n);
    for (size_t i = 0; i < n; i++) {
        dist[i] = INT64_MAX;
        prev[i] = -1;
    }
    dist[src] = 0;
    for (size_t round = 0; round < n; round++) {
        int u = -1;
        for (size_t i = 0; i < n; i++)
            if (!done[i] && dist[i] != INT64_MAX && (u < 0 || dist[i] < dist[u]))
                u = (int) i;
        if (u < 0)
            break;
        done[u] = 1;
        for (size_t e = 0; e < nodes[u].nedges; e++) {
            int v = nodes[u].edges[e].to;
            int64_t d = dist[u] + nodes[u].edges[e].cost;
            if (done[v] || nodes[v].avoided)
                continue;
            if (d < dist[v]) {
                dist[v] = d;
                prev[v] = u;
            } else if (d == dist[v] && s_path_cmp (nodes, prev, u, prev[v], buf_a, buf_b) < 0) {
                /* equal cost: keep the path whose node names sort first */
                prev[v] = u;
            }
        }
    }
    free (done);
}

json_t *controller_routes_compute (const json_t *jnodes, const json_t *jlinks,
                                   const json_t *unavailable)
{
    size_t n = json_array_size (jnodes);
    json_t *routes = json_array ();
    if (n == 0)
        return routes;
    s_node_t *nodes = hms_alloc (n * sizeof *nodes);
    for (size_t i = 0; i < n; i++)
        nodes[i].name = json_string_value (json_object_get (json_array_get (jnodes, i), "name"));
    qsort (nodes, n, sizeof *nodes, s_cmp_names);
    size_t i;
    json_t *link, *name;
    json_array_foreach (unavailable, i, name)
    {
        int k = s_index (nodes, n, json_string_value (name));
        if (k >= 0)
            nodes[k].avoided = true;
    }
    json_array_foreach (jlinks, i, link)
    {
        int from = s_index (nodes, n, json_string_value (json_object_get (link, "from")));
        int to = s_index (nodes, n, json_string_value (json_object_get (link, "to")));
        json_t *cost = json_object_get (link, "cost");
        if (from < 0 || to < 0 || from == to)
            continue;
        s_node_t *u = &nodes[from];
        u->edges = hms_realloc (u->edges, (u->nedges + 1) * sizeof (s_edge_t));
        u->edges[u->nedges++] = (s_edge_t){to, cost ? json_integer_value (cost) : 1};
    }
    int64_t *dist = hms_alloc (n * sizeof *dist);
    int *prev = hms_alloc (n * sizeof *prev);
    int *buf_a = hms_alloc (n * sizeof *buf_a);
    int *buf_b = hms_alloc (n * sizeof *buf_b);
    for (size_t s = 0; s < n; s++) {
        s_dijkstra (nodes, n, (int) s, dist, prev, buf_a, buf_b);
        for (size_t t = 0; t < n; t++) {
            if (t == s || dist[t] == INT64_MAX)
                continue;
            json_t *path = json_array ();
            int len = 0;
            for (int v = (int) t; v >= 0; v = prev[v])
                buf_a[len++] = v;
            for (int k = len - 1; k >= 0; k--)
                json_array_append_new (path, json_string (nodes[buf_a[k]].name));
            json_array_append_new (routes, json_pack ("{s:s, s:s, s:I, s:o}", "from", nodes[s].name,
                                                      "to", nodes[t].name, "cost",
                                                      (json_int_t) dist[t], "path", path));
        }
    }
    for (size_t k = 0; k < n; k++)
        free (nodes[k].edges);
    free (nodes);
    free (dist);
    free (prev);
    free (buf_a);
    free (buf_b);
    return routes;
}

json_t *controller_routes_filter (const json_t *routes, const char *from, const char *to)
{
    json_t *out = json_array ();
    size_t i;
    json_t *r;
    json_array_foreach (routes, i, r)
    {
        if (from && strcmp (json_string_value (json_object_get (r, "from")), from) != 0)
            continue;
        if (to && strcmp (json_string_value (json_object_get (r, "to")), to) != 0)
            continue;
        json_array_append (out, r);
    }
    return out;
}
