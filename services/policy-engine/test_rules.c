/* Unit test for policy_rules: prefix and port-range parsing, and policy_rules_check on good
 * sets (inline and the golden snapshot under schemas/examples/config) and on each kind of bad
 * policy, whose message must name the policy and the field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy_rules.h"

#include <arpa/inet.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

static void test_prefixes (void **state)
{
    (void) state;
    int family, len;
    unsigned char addr[16];
    char err[256];

    assert_int_equal (policy_prefix_parse ("10.0.0.0/8", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (family, AF_INET);
    assert_int_equal (len, 8);
    assert_memory_equal (addr, ((unsigned char[]){10, 0, 0, 0}), 4);

    assert_int_equal (policy_prefix_parse ("192.0.2.77", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (family, AF_INET);
    assert_int_equal (len, 32);
    assert_memory_equal (addr, ((unsigned char[]){192, 0, 2, 77}), 4);

    assert_int_equal (policy_prefix_parse ("0.0.0.0/0", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (len, 0);
    assert_int_equal (policy_prefix_parse ("198.51.100.0/32", &family, addr, &len, err, sizeof err),
                      0);
    assert_int_equal (len, 32);

    assert_int_equal (policy_prefix_parse ("2001:db8::/32", &family, addr, &len, err, sizeof err),
                      0);
    assert_int_equal (family, AF_INET6);
    assert_int_equal (len, 32);
    assert_memory_equal (
        addr, ((unsigned char[]){0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 16);
    assert_int_equal (policy_prefix_parse ("::1", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (family, AF_INET6);
    assert_int_equal (len, 128);
    assert_int_equal (addr[15], 1);
    assert_int_equal (policy_prefix_parse ("::/0", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (len, 0);
    assert_int_equal (
        policy_prefix_parse ("::ffff:10.0.0.0/104", &family, addr, &len, err, sizeof err), 0);
    assert_int_equal (family, AF_INET6);
    assert_int_equal (addr[12], 10);
    assert_int_equal (len, 104);

    struct {
        const char *text, *message;
    } bad[] = {
        {"10.0.0.0/33", "prefix length in '10.0.0.0/33' must be 0 to 32"},
        {"2001:db8::/129", "prefix length in '2001:db8::/129' must be 0 to 128"},
        {"10.0.0.0/", "prefix length in '10.0.0.0/' must be 0 to 32"},
        {"10.0.0.0/8x", "prefix length in '10.0.0.0/8x' must be 0 to 32"},
        {"10.0.0.0/-1", "prefix length in '10.0.0.0/-1' must be 0 to 32"},
        {"300.1.1.1/8", "'300.1.1.1/8' is not an IPv4 address"},
        {"10.0.0/8", "'10.0.0/8' is not an IPv4 address"},
        {"example.com", "'example.com' is not an IPv4 address"},
        {"", "'' is not an IPv4 address"},
        {"2001:db8:::1/64", "'2001:db8:::1/64' is not an IPv6 address"},
        {"2001:db8::g/64", "'2001:db8::g/64' is not an IPv6 address"},
        {"1:2:3:4:5:6:7:8:9", "'1:2:3:4:5:6:7:8:9' is not an IPv6 address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (policy_prefix_parse (bad[i].text, &family, addr, &len, err, sizeof err) != -1)
            fail_msg ("'%s' accepted", bad[i].text);
        assert_string_equal (err, bad[i].message);
    }
}

static void test_ports (void **state)
{
    (void) state;
    int lo, hi;
    char err[256];
    struct {
        const char *text;
        int lo, hi;
    } good[] = {{"443", 443, 443},       {"8000-8100", 8000, 8100}, {"1", 1, 1},
                {"65535", 65535, 65535}, {"1-65535", 1, 65535},     {"80-80", 80, 80}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (policy_ports_parse (good[i].text, &lo, &hi, err, sizeof err))
            fail_msg ("'%s': %s", good[i].text, err);
        assert_int_equal (lo, good[i].lo);
        assert_int_equal (hi, good[i].hi);
    }
    const char *bad[] = {"0", "65536", "100-50", "80-",      "-80",       "abc",
                         "",  "80x",   "0-10",   "10-70000", "80-90-100", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        lo = hi = -7;
        if (policy_ports_parse (bad[i], &lo, &hi, err, sizeof err) != -1)
            fail_msg ("'%s' accepted as %d-%d", bad[i], lo, hi);
        char expected[160];
        snprintf (expected, sizeof expected,
                  "port range '%s' must be N or N-M with 1 <= N <= M <= 65535", bad[i]);
        assert_string_equal (err, expected);
        assert_int_equal (lo, -7); /* outputs untouched on error */
    }
}

static json_t *s_json (const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads (text, 0, &jerr);
    if (!doc)
        fail_msg ("bad test JSON %s: %s", text, jerr.text);
    return doc;
}

/* {"topology":…, "policies":[policies]} with policies given as JSON text. */
static json_t *s_config (const char *policies)
{
    char text[4096];
    snprintf (text, sizeof text, "{\"topology\":{\"nodes\":[],\"links\":[]},\"policies\":[%s]}",
              policies);
    return s_json (text);
}

static const char *s_good_set =
    "{\"id\":\"deny-telnet\",\"priority\":10,\"action\":\"deny\",\"match\":{\"protocol\":"
    "[\"tcp\"],\"ports\":[\"23\",\"2323\"]}},"
    "{\"id\":\"allow-web\",\"priority\":100,\"action\":\"allow\",\"match\":{\"src\":"
    "[\"10.10.0.0/16\",\"2001:db8:10::/48\",\"192.0.2.1\"],\"ports\":[\"443\",\"8443-8445\"],"
    "\"sni\":[\"*.example.com\"]},\"bypass\":true},"
    "{\"id\":\"route-us\",\"priority\":200,\"action\":\"route\",\"route\":\"relay-fra-1\","
    "\"match\":{\"dst\":[\"198.51.100.0/24\"]}},"
    "{\"id\":\"rate-api\",\"action\":\"rate_limit\",\"rate\":{\"per_second\":0.5,\"burst\":"
    "1,\"key\":\"user\"},\"match\":{\"method\":[\"GET\"],\"path_prefix\":[\"/v1/\"]}}";

/* Checks config, which must fail with a message containing each of the parts. */
static void s_refused (const char *policies, const char *part1, const char *part2)
{
    json_t *config = s_config (policies);
    char err[1024] = "";
    if (policy_rules_check (NULL, config, err, sizeof err) != -1)
        fail_msg ("accepted: %s", policies);
    s_assert_contains (err, part1);
    if (part2)
        s_assert_contains (err, part2);
    json_decref (config);
}

static void test_check_good (void **state)
{
    (void) state;
    char err[1024] = "";
    json_t *config = s_config (s_good_set);
    if (policy_rules_check (NULL, config, err, sizeof err))
        fail_msg ("%s", err);
    json_decref (config);

    /* no policies at all is a valid set */
    config = s_config ("");
    assert_int_equal (policy_rules_check (NULL, config, err, sizeof err), 0);
    json_decref (config);
    config = s_json ("{\"topology\":{\"nodes\":[],\"links\":[]}}");
    assert_int_equal (policy_rules_check (NULL, config, err, sizeof err), 0);
    json_decref (config);

    /* the golden snapshot configs pass too */
    const char *source = getenv ("HERMES_SOURCE_DIR");
    if (!source)
        fail_msg ("HERMES_SOURCE_DIR is not set (run through ctest)");
    char pattern[4096];
    snprintf (pattern, sizeof pattern, "%s/schemas/examples/config/snapshot-*.json", source);
    glob_t g;
    if (glob (pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0)
        fail_msg ("no files match %s", pattern);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        json_error_t jerr;
        json_t *doc = json_load_file (g.gl_pathv[i], 0, &jerr);
        if (!doc)
            fail_msg ("%s: %s", g.gl_pathv[i], jerr.text);
        assert_true (json_array_size (json_object_get (doc, "policies")) > 0);
        if (policy_rules_check (NULL, doc, err, sizeof err))
            fail_msg ("%s: %s", g.gl_pathv[i], err);
        json_decref (doc);
    }
    globfree (&g);
}

static void test_check_errors (void **state)
{
    (void) state;
    /* duplicate ids, with both positions */
    s_refused ("{\"id\":\"a\",\"action\":\"allow\"},{\"id\":\"b\",\"action\":\"deny\"},"
               "{\"id\":\"a\",\"action\":\"deny\"}",
               "policy a appears twice", "policies[0] and [2]");

    /* actions that need a parameter */
    s_refused ("{\"id\":\"ok\",\"action\":\"allow\"},{\"id\":\"to-fra\",\"action\":\"route\"}",
               "policy to-fra (policies[1])", "action route needs \"route\"");
    s_refused ("{\"id\":\"slow\",\"action\":\"rate_limit\"}", "policy slow (policies[0])",
               "action rate_limit needs \"rate\"");

    /* schema-level errors name the policy and the field */
    s_refused ("{\"id\":\"web\",\"action\":\"drop\"}", "policy web (policies[0])", "action");
    s_refused ("{\"id\":\"web\",\"action\":\"allow\",\"colour\":\"red\"}", "policy web",
               "unknown property 'colour'");
    s_refused ("{\"id\":\"web\",\"action\":\"allow\",\"match\":{\"ports\":[\"https\"]}}",
               "policy web", "match.ports[0]");
    s_refused ("{\"id\":\"lim\",\"action\":\"rate_limit\",\"rate\":{\"per_second\":0,\"burst\":1}}",
               "policy lim", "rate.per_second");
    s_refused ("{\"id\":\"lim\",\"action\":\"rate_limit\",\"rate\":{\"per_second\":5}}",
               "policy lim", "'burst'");
    s_refused ("{\"action\":\"allow\"}", "policy ? (policies[0])", "'id'");
    s_refused ("\"not an object\"", "policies[0]", "expected object");

    /* what the schema lets through and the numbers refuse */
    s_refused ("{\"id\":\"ok\",\"action\":\"allow\"},{\"id\":\"nets\",\"action\":\"deny\","
               "\"match\":{\"src\":[\"10.0.0.0/8\",\"10.0.0.0/40\"]}}",
               "policy nets (policies[1]): match.src[1]", "must be 0 to 32");
    s_refused ("{\"id\":\"v6\",\"action\":\"deny\",\"match\":{\"dst\":[\"2001:db8::1::2/64\"]}}",
               "policy v6 (policies[0]): match.dst[0]", "not an IPv6 address");
    s_refused ("{\"id\":\"v4\",\"action\":\"deny\",\"match\":{\"dst\":[\"256.0.0.0/8\"]}}",
               "match.dst[0]", "not an IPv4 address");
    s_refused ("{\"id\":\"hi\",\"action\":\"deny\",\"match\":{\"ports\":[\"443\",\"70000\"]}}",
               "policy hi (policies[0]): match.ports[1]", "port range '70000'");
    s_refused ("{\"id\":\"rev\",\"action\":\"deny\",\"match\":{\"ports\":[\"9000-8000\"]}}",
               "match.ports[0]", "'9000-8000'");

    /* the first bad policy is the one reported */
    s_refused ("{\"id\":\"first\",\"action\":\"route\"},{\"id\":\"second\",\"action\":\"x\"}",
               "policy first", NULL);
}

static void test_error_buffer (void **state)
{
    (void) state;
    /* a short buffer gets a cut, terminated message */
    json_t *config = s_config ("{\"id\":\"to-fra\",\"action\":\"route\"}");
    char err[16];
    memset (err, 'x', sizeof err);
    assert_int_equal (policy_rules_check (NULL, config, err, sizeof err), -1);
    assert_int_equal (strlen (err), sizeof err - 1);
    assert_int_equal (strncmp (err, "policy to-fra (", 15), 0);
    json_decref (config);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_prefixes),     cmocka_unit_test (test_ports),
        cmocka_unit_test (test_check_good),   cmocka_unit_test (test_check_errors),
        cmocka_unit_test (test_error_buffer),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
