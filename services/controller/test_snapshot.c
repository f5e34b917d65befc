/* Unit test for controller_snapshot: the config compiled for every kind is valid against
 * schemas/config/snapshot.v1, carries the topology, carries policies only for the policy
 * engine, is built from an empty or missing state, and is a copy of the state; the list of
 * kinds matches the kinds the message schemas accept. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "controller_snapshot.h"
#include "controller_store.h"
#include "hms_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

static json_t *s_json (const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads (text, 0, &jerr);
    if (!doc)
        fail_msg ("bad test JSON: %s", jerr.text);
    return doc;
}

static void s_assert_valid (const json_t *config, const char *what)
{
    char err[512];
    if (hms_schemas_validate ("config/snapshot.v1", config, err, sizeof err)) {
        char *text = json_dumps (config, JSON_COMPACT);
        fail_msg ("%s: %s\n%s", what, err, text);
    }
}

static const char *s_state_text =
    "{\"nodes\":[{\"name\":\"ingress-ber-1\",\"address\":\"10.10.0.11\",\"site\":\"ber\"},"
    "{\"name\":\"relay-fra-1\",\"address\":\"\",\"site\":\"\"},"
    "{\"name\":\"exit-nyc-1\",\"address\":\"198.51.100.40:4433\",\"site\":\"nyc\"}],"
    "\"links\":[{\"from\":\"ingress-ber-1\",\"to\":\"relay-fra-1\",\"cost\":10,\"transport\":"
    "\"h3\"},{\"from\":\"relay-fra-1\",\"to\":\"exit-nyc-1\",\"cost\":80,\"transport\":\"h2\"}],"
    "\"policies\":[{\"id\":\"deny-telnet\",\"priority\":10,\"action\":\"deny\",\"match\":"
    "{\"ports\":[\"23\"]}},{\"id\":\"route-us\",\"action\":\"route\",\"route\":\"relay-fra-1\","
    "\"match\":{\"dst\":[\"198.51.100.0/24\"]}}]}";

static void test_kinds (void **state)
{
    (void) state;
    size_t n = 0;
    while (controller_kinds[n]) {
        assert_true (controller_kind_known (controller_kinds[n]));
        n++;
    }
    assert_int_equal (n, 6);
    const char *unknown[] = {"controller", "", "Relay", "relay ", "rel", "policy-engine"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        if (controller_kind_known (unknown[i]))
            fail_msg ("'%s' is known", unknown[i]);
    assert_false (controller_kind_known (NULL));

    /* the kinds are exactly those register, heartbeat, config.ack and config.show accept:
     * check by validating each kind (and a wrong one) in a register body */
    for (size_t i = 0; i < n; i++) {
        json_t *body = json_pack ("{s:s, s:s}", "kind", controller_kinds[i], "instance", "x1");
        char err[256];
        if (hms_schemas_validate ("msg/register.v1", body, err, sizeof err))
            fail_msg ("kind %s: %s", controller_kinds[i], err);
        json_decref (body);
    }
    const char *source = getenv ("HERMES_SOURCE_DIR");
    if (!source)
        fail_msg ("HERMES_SOURCE_DIR is not set (run through ctest)");
    char path[4096];
    snprintf (path, sizeof path, "%s/schemas/msg/register.v1.schema.json", source);
    json_error_t jerr;
    json_t *schema = json_load_file (path, 0, &jerr);
    if (!schema)
        fail_msg ("%s: %s", path, jerr.text);
    json_t *kinds =
        json_object_get (json_object_get (json_object_get (schema, "properties"), "kind"), "enum");
    assert_int_equal (json_array_size (kinds), n);
    size_t i;
    json_t *k;
    json_array_foreach (kinds, i, k)
    {
        if (!controller_kind_known (json_string_value (k)))
            fail_msg ("schema kind %s is unknown to the controller", json_string_value (k));
    }
    json_decref (schema);
}

static void test_compile_every_kind (void **state)
{
    (void) state;
    json_t *st = s_json (s_state_text);
    for (size_t i = 0; controller_kinds[i]; i++) {
        const char *kind = controller_kinds[i];
        json_t *config = controller_snapshot_compile (st, kind);
        assert_non_null (config);
        s_assert_valid (config, kind);
        json_t *topology = json_object_get (config, "topology");
        assert_true (
            json_equal (json_object_get (topology, "nodes"), json_object_get (st, "nodes")));
        assert_true (
            json_equal (json_object_get (topology, "links"), json_object_get (st, "links")));
        json_t *policies = json_object_get (config, "policies");
        assert_true (json_is_array (policies));
        if (strcmp (kind, "policy") == 0) {
            assert_true (json_equal (policies, json_object_get (st, "policies")));
            /* and each one is a valid policy document */
            size_t j;
            json_t *p;
            json_array_foreach (policies, j, p)
            {
                char err[256];
                if (hms_schemas_validate ("config/policy.v1", p, err, sizeof err))
                    fail_msg ("policies[%zu]: %s", j, err);
            }
        } else {
            if (json_array_size (policies) != 0)
                fail_msg ("kind %s got %zu policies", kind, json_array_size (policies));
        }
        json_decref (config);
    }
    json_decref (st);
}

static void test_empty_state (void **state)
{
    (void) state;
    const char *empty = "{\"topology\":{\"nodes\":[],\"links\":[]},\"policies\":[]}";
    json_t *expected = s_json (empty);
    json_t *inputs[] = {
        NULL, s_json ("{}"), s_json ("{\"nodes\":[],\"links\":[],\"policies\":[]}"),
        s_json ("{\"nodes\":{},\"links\":\"x\",\"policies\":7}"), /* wrong shapes are ignored */
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        for (size_t k = 0; controller_kinds[k]; k++) {
            json_t *config = controller_snapshot_compile (inputs[i], controller_kinds[k]);
            s_assert_valid (config, controller_kinds[k]);
            /* the kinds that forward flows also get routes (none here) */
            bool forwards = strcmp (controller_kinds[k], "ingress") == 0 ||
                            strcmp (controller_kinds[k], "relay") == 0;
            json_t *want = json_deep_copy (expected);
            if (forwards)
                json_object_set_new (want, "routes", json_array ());
            bool same = json_equal (config, want);
            json_decref (want);
            if (!same) {
                char *text = json_dumps (config, JSON_COMPACT);
                fail_msg ("input %zu kind %s: %s", i, controller_kinds[k], text);
            }
            json_decref (config);
        }
        json_decref (inputs[i]);
    }
    json_decref (expected);
}

static void test_compile_copies (void **state)
{
    (void) state;
    json_t *st = s_json (s_state_text);
    json_t *copy = json_deep_copy (st);
    json_t *config = controller_snapshot_compile (st, "policy");
    /* changing the compiled config does not change the state it came from */
    json_array_clear (json_object_get (json_object_get (config, "topology"), "nodes"));
    json_object_set_new (json_array_get (json_object_get (config, "policies"), 0), "action",
                         json_string ("allow"));
    assert_true (json_equal (st, copy));
    json_decref (config);
    /* and the state is still borrowed, not stolen */
    assert_int_equal (st->refcount, 1);
    json_decref (copy);
    json_decref (st);
}

static void test_from_store (void **state)
{
    (void) state;
    /* the rows the store gives (empty address and site included) compile to valid configs */
    char dir[64] = "/tmp/hms-snapshot-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char path[128];
    snprintf (path, sizeof path, "%s/hermes.db", dir);
    controller_err_t err = {0};
    controller_store_t *store = controller_store_open (path, &err);
    if (!store)
        fail_msg ("%s", err.text);
    assert_int_equal (controller_store_node_add (store, "a", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_node_add (store, "b", "192.0.2.1:4433", "ams", &err), 0);
    assert_int_equal (controller_store_link_add (store, "a", "b", 3, "h3", &err), 0);
    json_t *p = s_json ("{\"id\":\"rl\",\"action\":\"rate_limit\",\"rate\":{\"per_second\":2.5,"
                        "\"burst\":5}}");
    int replaced;
    assert_int_equal (controller_store_policy_add (store, p, &replaced, &err), 0);
    json_decref (p);
    assert_int_equal (controller_store_version_new (store, "t", "t", &err), 1);
    json_t *st = controller_store_version_state (store, 1);
    for (size_t k = 0; controller_kinds[k]; k++) {
        json_t *config = controller_snapshot_compile (st, controller_kinds[k]);
        s_assert_valid (config, controller_kinds[k]);
        assert_int_equal (
            json_array_size (json_object_get (json_object_get (config, "topology"), "links")), 1);
        assert_int_equal (json_array_size (json_object_get (config, "policies")),
                          strcmp (controller_kinds[k], "policy") == 0 ? 1 : 0);
        json_decref (config);
    }
    json_decref (st);
    controller_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal (system (cmd), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_kinds),       cmocka_unit_test (test_compile_every_kind),
        cmocka_unit_test (test_empty_state), cmocka_unit_test (test_compile_copies),
        cmocka_unit_test (test_from_store),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
