/* Unit tests of controller_routes: shortest paths, ties, unreachable nodes, directions,
 * nodes with no relay up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <string.h>

#include "controller_routes.h"

static json_t *s_topology (const char *nodes_json, const char *links_json, json_t **links)
{
    *links = json_loads (links_json, 0, NULL);
    return json_loads (nodes_json, 0, NULL);
}

/* "a>b>c" for the route from -> to, or "" when absent. */
static void s_path (const json_t *routes, const char *from, const char *to, char *out, size_t len,
                    json_int_t *cost)
{
    json_t *r = controller_routes_filter (routes, from, to);
    out[0] = 0;
    *cost = -1;
    if (json_array_size (r) == 1) {
        json_t *row = json_array_get (r, 0);
        *cost = json_integer_value (json_object_get (row, "cost"));
        size_t i;
        json_t *hop;
        json_array_foreach (json_object_get (row, "path"), i, hop)
        {
            size_t n = strlen (out);
            snprintf (out + n, len - n, "%s%s", i ? ">" : "", json_string_value (hop));
        }
    }
    json_decref (r);
}

static void test_shortest_and_directed (void **state)
{
    json_t *links;
    json_t *nodes =
        s_topology ("[{\"name\":\"a\"},{\"name\":\"b\"},{\"name\":\"c\"},{\"name\":\"d\"}]",
                    "[{\"from\":\"a\",\"to\":\"b\",\"cost\":1,\"transport\":\"h2\"},"
                    "{\"from\":\"b\",\"to\":\"c\",\"cost\":1,\"transport\":\"h2\"},"
                    "{\"from\":\"a\",\"to\":\"c\",\"cost\":5,\"transport\":\"h2\"},"
                    "{\"from\":\"c\",\"to\":\"d\",\"cost\":2,\"transport\":\"h3\"}]",
                    &links);
    json_t *routes = controller_routes_compute (nodes, links, NULL);
    char path[256];
    json_int_t cost;
    s_path (routes, "a", "c", path, sizeof path, &cost);
    assert_string_equal (path, "a>b>c");
    assert_int_equal (cost, 2);
    s_path (routes, "a", "d", path, sizeof path, &cost);
    assert_string_equal (path, "a>b>c>d");
    assert_int_equal (cost, 4);
    /* links are directed: nothing leads back to a */
    s_path (routes, "c", "a", path, sizeof path, &cost);
    assert_string_equal (path, "");
    /* 6 reachable pairs: a->b,c,d  b->c,d  c->d */
    assert_int_equal (json_array_size (routes), 6);
    /* a cheaper direct link wins once added */
    json_array_append_new (links, json_pack ("{s:s,s:s,s:i,s:s}", "from", "a", "to", "d", "cost", 3,
                                             "transport", "h2"));
    json_decref (routes);
    routes = controller_routes_compute (nodes, links, NULL);
    s_path (routes, "a", "d", path, sizeof path, &cost);
    assert_string_equal (path, "a>d");
    assert_int_equal (cost, 3);
    json_decref (routes);
    json_decref (nodes);
    json_decref (links);
}

static void test_ties_go_to_the_smallest_names (void **state)
{
    json_t *links;
    /* s -> {m, z} -> t, equal costs, z listed first and linked first */
    json_t *nodes =
        s_topology ("[{\"name\":\"s\"},{\"name\":\"z\"},{\"name\":\"m\"},{\"name\":\"t\"}]",
                    "[{\"from\":\"s\",\"to\":\"z\",\"cost\":2,\"transport\":\"h2\"},"
                    "{\"from\":\"z\",\"to\":\"t\",\"cost\":2,\"transport\":\"h2\"},"
                    "{\"from\":\"s\",\"to\":\"m\",\"cost\":2,\"transport\":\"h2\"},"
                    "{\"from\":\"m\",\"to\":\"t\",\"cost\":2,\"transport\":\"h2\"}]",
                    &links);
    json_t *routes = controller_routes_compute (nodes, links, NULL);
    char path[256];
    json_int_t cost;
    s_path (routes, "s", "t", path, sizeof path, &cost);
    assert_string_equal (path, "s>m>t");
    assert_int_equal (cost, 4);
    json_decref (routes);
    json_decref (nodes);
    json_decref (links);
}

static void test_empty_and_unknown (void **state)
{
    json_t *empty = json_array ();
    json_t *routes = controller_routes_compute (empty, empty, NULL);
    assert_int_equal (json_array_size (routes), 0);
    json_decref (routes);
    json_t *links;
    json_t *nodes =
        s_topology ("[{\"name\":\"a\"}]",
                    "[{\"from\":\"a\",\"to\":\"ghost\",\"cost\":1,\"transport\":\"h2\"}]", &links);
    routes = controller_routes_compute (nodes, links, NULL);
    assert_int_equal (json_array_size (routes), 0);
    json_decref (routes);
    json_decref (nodes);
    json_decref (links);
    json_decref (empty);
}

/* A node with no relay up is neither a hop nor a destination; routes from it stay (an
 * ingress there still needs them), and an unknown name in the list changes nothing. */
static void test_unavailable_nodes_are_avoided (void **state)
{
    json_t *links;
    /* e -> core -> far costs 2, e -> alt -> far costs 10 */
    json_t *nodes =
        s_topology ("[{\"name\":\"e\"},{\"name\":\"core\"},{\"name\":\"alt\"},{\"name\":\"far\"}]",
                    "[{\"from\":\"e\",\"to\":\"core\",\"cost\":1,\"transport\":\"h2\"},"
                    "{\"from\":\"core\",\"to\":\"far\",\"cost\":1,\"transport\":\"h2\"},"
                    "{\"from\":\"e\",\"to\":\"alt\",\"cost\":5,\"transport\":\"h2\"},"
                    "{\"from\":\"alt\",\"to\":\"far\",\"cost\":5,\"transport\":\"h2\"}]",
                    &links);
    char path[256];
    json_int_t cost;
    json_t *none = json_loads ("[\"ghost\"]", 0, NULL);
    json_t *routes = controller_routes_compute (nodes, links, none);
    s_path (routes, "e", "far", path, sizeof path, &cost);
    assert_string_equal (path, "e>core>far");
    assert_int_equal (json_array_size (routes), 5);
    json_decref (routes);
    json_t *core = json_loads ("[\"core\"]", 0, NULL);
    routes = controller_routes_compute (nodes, links, core);
    s_path (routes, "e", "far", path, sizeof path, &cost);
    assert_string_equal (path, "e>alt>far");
    assert_int_equal (cost, 10);
    s_path (routes, "e", "core", path, sizeof path, &cost);
    assert_string_equal (path, "");
    s_path (routes, "core", "far", path, sizeof path, &cost);
    assert_string_equal (path, "core>far");
    json_decref (routes);
    /* with both middle nodes gone, far cannot be reached from e */
    json_t *both = json_loads ("[\"alt\", \"core\"]", 0, NULL);
    routes = controller_routes_compute (nodes, links, both);
    s_path (routes, "e", "far", path, sizeof path, &cost);
    assert_string_equal (path, "");
    assert_int_equal (json_array_size (routes), 2); /* core -> far, alt -> far */
    json_decref (routes);
    json_decref (both);
    json_decref (core);
    json_decref (none);
    json_decref (nodes);
    json_decref (links);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_shortest_and_directed),
        cmocka_unit_test (test_ties_go_to_the_smallest_names),
        cmocka_unit_test (test_empty_and_unknown),
        cmocka_unit_test (test_unavailable_nodes_are_avoided),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
