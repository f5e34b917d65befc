/* Unit test for hms_policy: each matcher kind (prefixes v4/v6, ports, protocol, exact /
 * suffix / glob names, method, path, identities), unknown fields, priorities, default deny,
 * actions and their parameters, rate-limit buckets on an injected clock (refill, keys,
 * eviction, inheritance), per-user targets, compile errors, the JSON helpers, the index
 * against a plain ordered scan on randomized rule sets, and when an answer needs the SNI. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_policy.h"
#include "hms_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON text with ' for " (readable inline documents). Caller owns return value. */
static json_t *s_json (const char *text)
{
    char *copy = strdup (text);
    for (char *p = copy; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *doc = json_loads (copy, 0, &jerr);
    if (!doc)
        fail_msg ("bad test JSON %s: %s", copy, jerr.text);
    free (copy);
    return doc;
}

static hms_policy_set_t *s_set (const char *policies)
{
    json_t *doc = s_json (policies);
    char err[1024] = "";
    hms_policy_set_t *set = hms_policy_compile (doc, err, sizeof err);
    if (!set)
        fail_msg ("does not compile: %s\n%s", err, policies);
    json_decref (doc);
    return set;
}

static void s_refused (const char *policies, const char *part1, const char *part2)
{
    json_t *doc = s_json (policies);
    char err[1024] = "";
    hms_policy_set_t *set = hms_policy_compile (doc, err, sizeof err);
    if (set)
        fail_msg ("compiled: %s", policies);
    if (!strstr (err, part1))
        fail_msg ("expected \"%s\" in \"%s\"", part1, err);
    if (part2 && !strstr (err, part2))
        fail_msg ("expected \"%s\" in \"%s\"", part2, err);
    json_decref (doc);
}

/* The id of the deciding rule, or "-" for the default; checks both evaluation paths. */
static const char *s_rule (hms_policy_set_t *set, const hms_policy_query_t *q)
{
    hms_policy_decision_t a, b;
    hms_policy_evaluate (set, q, HMS_POLICY_DRY_RUN, &a);
    hms_policy_evaluate (set, q, HMS_POLICY_DRY_RUN | HMS_POLICY_SCAN, &b);
    if ((a.rule == NULL) != (b.rule == NULL) || (a.rule && strcmp (a.rule, b.rule)))
        fail_msg ("index says %s, scan says %s", a.rule ? a.rule : "-", b.rule ? b.rule : "-");
    return a.rule ? a.rule : "-";
}

#define S_RULE(set, ...) s_rule (set, &(hms_policy_query_t){__VA_ARGS__})

static void test_names (void **state)
{
    (void) state;
    hms_policy_set_t *set =
        s_set ("[{'id':'exact','priority':1,'action':'allow','match':{'host':['Api.Example.COM',"
               "'www.example.com.']}},"
               "{'id':'suffix','priority':2,'action':'deny','match':{'host':['.example.com']}},"
               "{'id':'glob','priority':3,'action':'allow','match':{'host':['img-*.cdn.*.net']}},"
               "{'id':'star-dot','priority':4,'action':'allow','match':{'host':['*.org']}},"
               "{'id':'sni','priority':5,'action':'allow','match':{'sni':['secure.example.net',"
               "'*.shop.example.net']}},"
               "{'id':'any-host','priority':6,'action':'deny','match':{'host':['*']}}]");
    assert_string_equal (S_RULE (set, .host = "api.example.com"), "exact");
    assert_string_equal (S_RULE (set, .host = "API.EXAMPLE.COM"), "exact");
    assert_string_equal (S_RULE (set, .host = "api.example.com."), "exact");
    assert_string_equal (S_RULE (set, .host = "api.example.com:8443"), "exact");
    assert_string_equal (S_RULE (set, .host = "www.example.com"), "exact");
    /* suffix: any subdomain, at any depth; not the bare domain nor a look-alike */
    assert_string_equal (S_RULE (set, .host = "a.example.com"), "suffix");
    assert_string_equal (S_RULE (set, .host = "a.b.c.Example.com:80"), "suffix");
    assert_string_equal (S_RULE (set, .host = "example.com"), "any-host");
    assert_string_equal (S_RULE (set, .host = "badexample.com"), "any-host");
    /* globs */
    assert_string_equal (S_RULE (set, .host = "img-1.cdn.eu.net"), "glob");
    assert_string_equal (S_RULE (set, .host = "IMG-.CDN.x.y.NET"), "glob");
    assert_string_equal (S_RULE (set, .host = "img-1.cdn.net"), "any-host");
    assert_string_equal (S_RULE (set, .host = "www.gnu.org"), "star-dot");
    assert_string_equal (S_RULE (set, .host = "org"), "any-host");
    /* sni is its own field */
    assert_string_equal (S_RULE (set, .sni = "secure.example.net"), "sni");
    assert_string_equal (S_RULE (set, .sni = "a.shop.example.net."), "sni");
    assert_string_equal (S_RULE (set, .sni = "shop.example.net"), "-");
    assert_string_equal (S_RULE (set, .sni = "api.example.com"), "-");
    /* no host at all: the host rules cannot match, not even "*" */
    assert_string_equal (S_RULE (set, .port = 443), "-");
    /* a dst that is a name stands for the host; an explicit host wins */
    assert_string_equal (S_RULE (set, .dst = "api.example.com"), "exact");
    assert_string_equal (S_RULE (set, .dst = "api.example.com", .host = "x.example.com"), "suffix");
    /* an IPv6 literal host, bracketed with a port or bare */
    hms_policy_destroy (&set);
    set = s_set ("[{'id':'v6','action':'allow','match':{'host':['2001:db8::1']}}]");
    assert_string_equal (S_RULE (set, .host = "[2001:db8::1]:443"), "v6");
    assert_string_equal (S_RULE (set, .host = "2001:db8::1"), "v6");
    assert_string_equal (S_RULE (set, .host = "2001:db8::2"), "-");
    hms_policy_destroy (&set);
    hms_policy_destroy (&set); /* twice is safe */
}

/* Like S_RULE, with the SNI not known yet but readable: "needs-sni" when the answer
 * depends on it (both evaluation paths must agree). */
static const char *s_pending (hms_policy_set_t *set, hms_policy_query_t q)
{
    q.sni_pending = true;
    q.dst_pending = true;
    hms_policy_decision_t a, b;
    hms_policy_evaluate (set, &q, HMS_POLICY_DRY_RUN, &a);
    hms_policy_evaluate (set, &q, HMS_POLICY_DRY_RUN | HMS_POLICY_SCAN, &b);
    assert_int_equal (a.needs_sni, b.needs_sni);
    assert_int_equal (a.needs_dst, b.needs_dst);
    if (a.needs_sni || a.needs_dst) {
        assert_null (a.rule);
        assert_int_equal (a.action, HMS_POLICY_DENY);
        return a.needs_sni && a.needs_dst ? "needs-both" : a.needs_sni ? "needs-sni" : "needs-dst";
    }
    return s_rule (set, &q);
}

#define S_PENDING(set, ...) s_pending (set, (hms_policy_query_t){__VA_ARGS__})

static void test_sni_pending (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'no-secret','priority':10,'action':'deny','match':{'sni':['*.secret.example'],"
        "'ports':['443']}},"
        "{'id':'web','priority':20,'action':'allow','match':{'host':['.example.com']}},"
        "{'id':'shop','priority':30,'action':'route','route':'core','match':{'sni':"
        "['shop.example.net']}},"
        "{'id':'rest','priority':40,'action':'allow','match':{'dst':['10.0.0.0/8']}}]");
    /* the first rule could decide port 443 by its name: ask for the name */
    assert_string_equal (S_PENDING (set, .dst = "10.1.2.3", .port = 443), "needs-sni");
    assert_string_equal (S_PENDING (set, .host = "api.example.com", .port = 443), "needs-sni");
    /* with the name, the usual answer; without sni_pending, as before */
    assert_string_equal (S_RULE (set, .dst = "10.1.2.3", .port = 443, .sni = "a.secret.example"),
                         "no-secret");
    assert_string_equal (S_RULE (set, .dst = "10.1.2.3", .port = 443, .sni = "a.open.example"),
                         "rest");
    assert_string_equal (S_RULE (set, .dst = "10.1.2.3", .port = 443), "rest");
    /* port 80: the sni rule that comes first cannot match; 'web' decides before 'shop' */
    assert_string_equal (S_PENDING (set, .host = "api.example.com", .port = 80), "web");
    /* but for a host 'web' does not cover, 'shop' comes before 'rest' */
    assert_string_equal (S_PENDING (set, .dst = "10.1.2.3", .port = 80), "needs-sni");
    assert_string_equal (S_RULE (set, .dst = "10.1.2.3", .port = 80, .sni = "shop.example.net"),
                         "shop");
    /* a name known already is used as it is */
    assert_string_equal (S_PENDING (set, .dst = "10.1.2.3", .port = 80, .sni = "x.example"),
                         "rest");
    hms_policy_destroy (&set);
    /* no rule names an sni: never asked for */
    set = s_set ("[{'id':'rest','priority':40,'action':'allow','match':{'dst':['10.0.0.0/8']}}]");
    assert_string_equal (S_PENDING (set, .dst = "10.1.2.3", .port = 443), "rest");
    assert_string_equal (S_PENDING (set, .dst = "192.0.2.1", .port = 443), "-");
    hms_policy_destroy (&set);
}

/* A dst given by name, which the asker can resolve: asked for the address when a rule with a
 * dst condition comes first. */
static void test_dst_pending (void **state)
{
    (void) state;
    hms_policy_set_t *set =
        s_set ("[{'id':'no-ten','priority':10,'action':'deny','match':{'dst':['10.0.0.0/8']}},"
               "{'id':'web','priority':20,'action':'allow','match':{'host':['.example.com']}},"
               "{'id':'v6','priority':30,'action':'allow','match':{'dst':['2001:db8::/32']}},"
               "{'id':'rest','priority':40,'action':'allow'}]");
    assert_string_equal (S_PENDING (set, .dst = "internal.example.com", .port = 443), "needs-dst");
    /* asked again with the address, and the name as host */
    assert_string_equal (
        S_PENDING (set, .dst = "10.1.2.3", .host = "internal.example.com", .port = 443), "no-ten");
    assert_string_equal (
        S_PENDING (set, .dst = "192.0.2.7", .host = "internal.example.com", .port = 443), "web");
    /* 'web' decides any other example.com name before 'v6' would need the address */
    assert_string_equal (
        S_PENDING (set, .dst = "192.0.2.7", .host = "www.example.org", .port = 443), "rest");
    assert_string_equal (S_PENDING (set, .dst = "2001:db8::5", .host = "x.org"), "v6");
    /* an address needs nothing; without dst_pending a name is matched as a name, as before */
    assert_string_equal (S_PENDING (set, .dst = "10.9.9.9"), "no-ten");
    assert_string_equal (S_RULE (set, .dst = "internal.example.com"), "web");
    assert_string_equal (S_RULE (set, .dst = "internal.example.org"), "rest");
    hms_policy_destroy (&set);
    /* both unknown: the first rule that needs something decides what is asked */
    set = s_set ("[{'id':'sni','priority':10,'action':'deny','match':{'sni':['*.bad']}},"
                 "{'id':'net','priority':20,'action':'deny','match':{'dst':['10.0.0.0/8'],"
                 "'sni':['*.worse']}},"
                 "{'id':'rest','priority':40,'action':'allow'}]");
    assert_string_equal (S_PENDING (set, .dst = "a.example", .port = 443), "needs-sni");
    assert_string_equal (S_PENDING (set, .dst = "a.example", .sni = "x.worse"), "needs-dst");
    assert_string_equal (S_PENDING (set, .dst = "10.0.0.1", .sni = "x.worse"), "net");
    hms_policy_destroy (&set);
    /* no dst rule: never asked */
    set = s_set ("[{'id':'rest','priority':40,'action':'allow'}]");
    assert_string_equal (S_PENDING (set, .dst = "a.example"), "rest");
    hms_policy_destroy (&set);
}

static void test_prefixes (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'host','priority':1,'action':'deny','match':{'src':['10.1.2.3']}},"
        "{'id':'net24','priority':2,'action':'allow','match':{'src':['10.1.2.99/24',"
        "'192.168.0.0/16']}},"
        "{'id':'net8','priority':3,'action':'route','route':'r1','match':{'src':['10.0.0.0/8']}},"
        "{'id':'v6','priority':4,'action':'allow','match':{'src':['2001:db8:10::/48',"
        "'2001:db8:ff::1/128','fe80::/10']}},"
        "{'id':'mapped','priority':5,'action':'allow','match':{'src':['::ffff:172.16.0.0/108']}},"
        "{'id':'dst','priority':6,'action':'allow','match':{'dst':['198.51.100.0/24',"
        "'2001:db8:300::/40']}},"
        "{'id':'all4','priority':7,'action':'deny','match':{'src':['0.0.0.0/0']}},"
        "{'id':'all6','priority':8,'action':'deny','match':{'src':['::/0']}}]");
    assert_string_equal (S_RULE (set, .src = "10.1.2.3"), "host");
    assert_string_equal (S_RULE (set, .src = "10.1.2.4"), "net24");
    assert_string_equal (S_RULE (set, .src = "10.1.2.255"), "net24");
    assert_string_equal (S_RULE (set, .src = "192.168.200.1"), "net24");
    assert_string_equal (S_RULE (set, .src = "10.1.3.0"), "net8");
    assert_string_equal (S_RULE (set, .src = "10.255.255.255"), "net8");
    assert_string_equal (S_RULE (set, .src = "11.0.0.0"), "all4");
    assert_string_equal (S_RULE (set, .src = "2001:db8:10:ffff::5"), "v6");
    assert_string_equal (S_RULE (set, .src = "2001:db8:ff::1"), "v6");
    assert_string_equal (S_RULE (set, .src = "2001:db8:ff::2"), "all6");
    assert_string_equal (S_RULE (set, .src = "fe80::1"), "v6");
    assert_string_equal (S_RULE (set, .src = "febf:ffff::1"), "v6");
    assert_string_equal (S_RULE (set, .src = "fec0::1"), "all6");
    /* IPv4-mapped addresses are IPv4, in queries and in long prefixes */
    assert_string_equal (S_RULE (set, .src = "::ffff:10.1.2.3"), "host");
    assert_string_equal (S_RULE (set, .src = "172.16.9.9"), "mapped");
    assert_string_equal (S_RULE (set, .src = "::ffff:172.31.0.1"), "mapped");
    assert_string_equal (S_RULE (set, .src = "::ffff:8.8.8.8"), "all4");
    /* dst prefixes; a named dst is no address */
    assert_string_equal (S_RULE (set, .dst = "198.51.100.7"), "dst");
    assert_string_equal (S_RULE (set, .dst = "2001:db8:37f::1"), "dst");
    assert_string_equal (S_RULE (set, .dst = "2001:db8:400::1"), "-");
    assert_string_equal (S_RULE (set, .dst = "svc.example"), "-");
    /* an unparsable src is refused, never matched */
    hms_policy_decision_t d;
    hms_policy_evaluate (set, &(hms_policy_query_t){.src = "10.1.2"}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_DENY);
    assert_null (d.rule);
    assert_int_equal (d.ttl_ms, 0);
    assert_non_null (strstr (d.reason, "not an IPv4 or IPv6 address"));
    hms_policy_destroy (&set);
}

static void test_ports_protocol_method_path (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'telnet','priority':1,'action':'deny','match':{'protocol':['tcp'],"
        "'ports':['23','2323']}},"
        "{'id':'range','priority':2,'action':'allow','match':{'ports':['8000-8100','8090-8200',"
        "'9000']}},"
        "{'id':'wide','priority':3,'action':'allow','match':{'ports':['10000-60000'],"
        "'protocol':['udp','ip']}},"
        "{'id':'api','priority':4,'action':'allow','match':{'method':['GET','HEAD'],"
        "'path_prefix':['/v1/','/health']}},"
        "{'id':'http','priority':5,'action':'deny','match':{'protocol':['http']}}]");
    assert_string_equal (S_RULE (set, .port = 23, .protocol = "tcp"), "telnet");
    assert_string_equal (S_RULE (set, .port = 23, .protocol = "udp"), "-");
    assert_string_equal (S_RULE (set, .port = 23), "-"); /* protocol unknown */
    assert_string_equal (S_RULE (set, .port = 8000), "range");
    assert_string_equal (S_RULE (set, .port = 8150), "range");
    assert_string_equal (S_RULE (set, .port = 8200), "range");
    assert_string_equal (S_RULE (set, .port = 8201), "-");
    assert_string_equal (S_RULE (set, .port = 7999), "-");
    assert_string_equal (S_RULE (set, .port = 9000), "range");
    assert_string_equal (S_RULE (set, .port = 10000, .protocol = "udp"), "wide");
    assert_string_equal (S_RULE (set, .port = 60000, .protocol = "ip"), "wide");
    assert_string_equal (S_RULE (set, .port = 60001, .protocol = "ip"), "-");
    assert_string_equal (S_RULE (set, .port = 30000, .protocol = "tcp"), "-");
    assert_string_equal (S_RULE (set, .port = 30000, .protocol = "sctp"), "-");
    assert_string_equal (S_RULE (set, .method = "GET", .path = "/v1/users"), "api");
    assert_string_equal (S_RULE (set, .method = "HEAD", .path = "/healthz"), "api");
    assert_string_equal (S_RULE (set, .method = "get", .path = "/v1/users"), "-");
    assert_string_equal (S_RULE (set, .method = "POST", .path = "/v1/users"), "-");
    assert_string_equal (S_RULE (set, .method = "GET", .path = "/v2/users"), "-");
    assert_string_equal (S_RULE (set, .method = "GET"), "-"); /* path unknown */
    assert_string_equal (S_RULE (set, .method = "GET", .path = "/v1", .protocol = "http"), "http");
    hms_policy_destroy (&set);
}

static void test_identities_and_unknown_fields (void **state)
{
    (void) state;
    hms_policy_set_t *set =
        s_set ("[{'id':'ndn','priority':1,'action':'route','route':'ndn-site-b','match':"
               "{'service':['ndn'],'namespace':['/site-b*']}},"
               "{'id':'ops','priority':2,'action':'allow','match':{'user':['*-ops','root'],"
               "'src':['10.0.0.0/8']}},"
               "{'id':'team','priority':3,'action':'allow','match':{'user':['.team.example']}}]");
    assert_string_equal (S_RULE (set, .service = "ndn", .ns = "/site-b/video"), "ndn");
    assert_string_equal (S_RULE (set, .service = "NDN", .ns = "/SITE-B"), "ndn");
    assert_string_equal (S_RULE (set, .service = "ndn", .ns = "/site-a/video"), "-");
    assert_string_equal (S_RULE (set, .service = "ndn"), "-"); /* namespace unknown */
    assert_string_equal (S_RULE (set, .user = "db-ops", .src = "10.2.3.4"), "ops");
    assert_string_equal (S_RULE (set, .user = "root", .src = "10.2.3.4"), "ops");
    assert_string_equal (S_RULE (set, .user = "root", .src = "11.2.3.4"), "-");
    assert_string_equal (S_RULE (set, .user = "root"), "-"); /* src unknown */
    assert_string_equal (S_RULE (set, .user = "carol.team.example"), "team");
    /* extra fields in the query do not hurt */
    assert_string_equal (S_RULE (set, .user = "carol.team.example", .host = "x", .port = 1,
                                 .protocol = "tcp", .method = "GET", .path = "/", .sni = "s",
                                 .dst = "192.0.2.1", .src = "::1"),
                         "team");
    /* an empty query decides by default */
    assert_string_equal (S_RULE (set, .src = NULL), "-");
    hms_policy_destroy (&set);
}

static void test_priorities_and_default (void **state)
{
    (void) state;
    /* listed out of order; equal priorities go by id; no priority means 1000 */
    hms_policy_set_t *set =
        s_set ("[{'id':'late','action':'deny','match':{'ports':['80']}},"
               "{'id':'b-second','priority':10,'action':'deny','match':{'ports':['80','81']}},"
               "{'id':'a-first','priority':10,'action':'allow','match':{'ports':['80']}},"
               "{'id':'early','priority':5,'action':'allow','match':{'host':['x.example']}},"
               "{'id':'mid','priority':999,'action':'allow','match':{'ports':['82']}},"
               "{'id':'after','priority':1001,'action':'allow','match':{'ports':['82','83']}}]");
    assert_int_equal (hms_policy_size (set), 6);
    assert_string_equal (S_RULE (set, .port = 80), "a-first");
    assert_string_equal (S_RULE (set, .port = 81), "b-second");
    assert_string_equal (S_RULE (set, .port = 80, .host = "x.example"), "early");
    assert_string_equal (S_RULE (set, .port = 82), "mid");
    assert_string_equal (S_RULE (set, .port = 83), "after");
    hms_policy_decision_t d;
    hms_policy_evaluate (set, &(hms_policy_query_t){.port = 84}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_DENY);
    assert_null (d.rule);
    assert_string_equal (d.reason, "no rule matched");
    assert_int_equal (d.ttl_ms, HMS_POLICY_DEFAULT_TTL_MS);
    assert_null (d.target);
    assert_false (d.bypass);
    hms_policy_destroy (&set);

    /* an empty set denies everything */
    set = s_set ("[]");
    hms_policy_evaluate (set, &(hms_policy_query_t){.src = "10.0.0.1", .port = 443}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_DENY);
    assert_null (d.rule);
    hms_policy_destroy (&set);
    char err[64];
    set = hms_policy_compile (NULL, err, sizeof err);
    assert_non_null (set);
    assert_int_equal (hms_policy_size (set), 0);
    hms_policy_destroy (&set);
}

static void test_actions (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'web-deny','priority':1,'description':'no plain web','action':'deny',"
        "'match':{'ports':['80']},'target':'10.0.0.1:80','retry_profile':'x','bypass':true},"
        "{'id':'to-fra','priority':2,'action':'route','route':'relay-fra-1','match':{'ports':"
        "['443']},'retry_profile':'patient','ttl_ms':60000},"
        "{'id':'fast','priority':3,'action':'allow','match':{'ports':['22']},'bypass':true,"
        "'ttl_ms':0,'target':'[2001:db8::5]:2222'}]");
    hms_policy_decision_t d;
    hms_policy_evaluate (set, &(hms_policy_query_t){.port = 80}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_DENY);
    assert_string_equal (d.rule, "web-deny");
    assert_string_equal (d.reason, "no plain web");
    assert_null (d.target); /* a denial goes nowhere */
    assert_null (d.retry_profile);
    assert_false (d.bypass);
    assert_int_equal (d.ttl_ms, 5000);
    hms_policy_evaluate (set, &(hms_policy_query_t){.port = 443}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_ROUTE);
    assert_string_equal (hms_policy_action_name (d.action), "route");
    assert_string_equal (d.route, "relay-fra-1");
    assert_string_equal (d.retry_profile, "patient");
    assert_int_equal (d.ttl_ms, 60000);
    assert_string_equal (d.reason, "matched at priority 2");
    hms_policy_evaluate (set, &(hms_policy_query_t){.port = 22}, 0, &d);
    assert_int_equal (d.action, HMS_POLICY_ALLOW);
    assert_true (d.bypass);
    assert_int_equal (d.ttl_ms, 0);
    assert_null (d.route);
    assert_string_equal (d.target, "[2001:db8::5]:2222");
    hms_policy_destroy (&set);
}

/* The paper's per-user address space: one virtual name, a target per user. */
static void test_per_user_targets (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'svc-alice','priority':10,'action':'allow','target':'127.0.0.1:8081',"
        "'match':{'host':['svc.virtual'],'user':['alice']}},"
        "{'id':'svc-bob','priority':10,'action':'allow','target':'127.0.0.1:8082',"
        "'match':{'host':['svc.virtual'],'user':['bob']}},"
        "{'id':'svc-others','priority':20,'action':'deny','match':{'host':['svc.virtual']}}]");
    struct {
        const char *user, *rule, *target;
        hms_policy_action_t action;
    } cases[] = {
        {"alice", "svc-alice", "127.0.0.1:8081", HMS_POLICY_ALLOW},
        {"Alice", "svc-alice", "127.0.0.1:8081", HMS_POLICY_ALLOW},
        {"bob", "svc-bob", "127.0.0.1:8082", HMS_POLICY_ALLOW},
        {"mallory", "svc-others", NULL, HMS_POLICY_DENY},
        {NULL, "svc-others", NULL, HMS_POLICY_DENY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int by_dst = 0; by_dst < 2; by_dst++) {
            hms_policy_decision_t d;
            hms_policy_query_t q = {.user = cases[i].user, .port = 80};
            if (by_dst)
                q.dst = "svc.virtual";
            else
                q.host = "svc.virtual:80";
            hms_policy_evaluate (set, &q, 0, &d);
            assert_int_equal (d.action, cases[i].action);
            assert_string_equal (d.rule, cases[i].rule);
            if (cases[i].target)
                assert_string_equal (d.target, cases[i].target);
            else
                assert_null (d.target);
        }
    hms_policy_destroy (&set);
}

static int64_t s_clock_ms;
static int64_t s_clock (void *arg)
{
    (void) arg;
    return s_clock_ms;
}

static hms_policy_action_t s_act (hms_policy_set_t *set, const hms_policy_query_t *q,
                                  hms_policy_decision_t *d)
{
    hms_policy_evaluate (set, q, 0, d);
    return d->action;
}

static void test_rate_limit (void **state)
{
    (void) state;
    hms_policy_set_t *set = s_set (
        "[{'id':'per-src','priority':1,'action':'rate_limit','rate':{'per_second':2,'burst':3},"
        "'match':{'ports':['80']},'target':'10.9.9.9:80','bypass':true},"
        "{'id':'per-user','priority':2,'action':'rate_limit','rate':{'per_second':0.5,"
        "'burst':1,'key':'user'},'match':{'ports':['81']}},"
        "{'id':'per-host','priority':3,'action':'rate_limit','rate':{'per_second':1000,"
        "'burst':2,'key':'host'},'match':{'ports':['82']}}]");
    s_clock_ms = 1000000;
    hms_policy_set_clock (set, s_clock, NULL);
    hms_policy_decision_t d;
    hms_policy_query_t a = {.src = "10.0.0.1", .port = 80};
    hms_policy_query_t b = {.src = "10.0.0.2", .port = 80};
    /* the burst, then nothing */
    for (int i = 0; i < 3; i++) {
        assert_int_equal (s_act (set, &a, &d), HMS_POLICY_ALLOW);
        assert_string_equal (d.rule, "per-src");
        assert_string_equal (d.target, "10.9.9.9:80");
        assert_true (d.bypass);
        assert_int_equal (d.ttl_ms, 0); /* never cacheable */
    }
    assert_int_equal (s_act (set, &a, &d), HMS_POLICY_DENY);
    assert_string_equal (d.rule, "per-src");
    assert_string_equal (d.reason, "rate limited by per-src");
    assert_int_equal (d.ttl_ms, 0);
    assert_null (d.target);
    assert_false (d.bypass);
    /* another key has its own bucket; the same address mapped into IPv6 does not */
    assert_int_equal (s_act (set, &b, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &(hms_policy_query_t){.src = "::ffff:10.0.0.1", .port = 80}, &d),
                      HMS_POLICY_DENY);
    /* a dry run neither takes nor checks */
    hms_policy_evaluate (set, &a, HMS_POLICY_DRY_RUN, &d);
    assert_int_equal (d.action, HMS_POLICY_ALLOW);
    /* 2 per second: one token after 500 ms, not before */
    s_clock_ms += 499;
    assert_int_equal (s_act (set, &a, &d), HMS_POLICY_DENY);
    s_clock_ms += 1;
    assert_int_equal (s_act (set, &a, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &a, &d), HMS_POLICY_DENY);
    /* a long pause refills to the burst only */
    s_clock_ms += 60000;
    for (int i = 0; i < 3; i++)
        assert_int_equal (s_act (set, &a, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &a, &d), HMS_POLICY_DENY);

    /* keyed by user (case-insensitive), whatever the source */
    hms_policy_query_t u1 = {.user = "alice", .src = "10.0.0.1", .port = 81};
    hms_policy_query_t u2 = {.user = "ALICE", .src = "10.0.0.2", .port = 81};
    hms_policy_query_t u3 = {.user = "bob", .src = "10.0.0.1", .port = 81};
    assert_int_equal (s_act (set, &u1, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &u2, &d), HMS_POLICY_DENY);
    assert_int_equal (s_act (set, &u3, &d), HMS_POLICY_ALLOW);
    s_clock_ms += 2000;
    assert_int_equal (s_act (set, &u2, &d), HMS_POLICY_ALLOW);
    /* no user: one shared bucket for the anonymous */
    assert_int_equal (s_act (set, &(hms_policy_query_t){.port = 81}, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &(hms_policy_query_t){.port = 81}, &d), HMS_POLICY_DENY);

    /* keyed by host (without port), fast refill */
    hms_policy_query_t h1 = {.host = "a.example:80", .port = 82};
    hms_policy_query_t h2 = {.host = "A.EXAMPLE", .port = 82};
    assert_int_equal (s_act (set, &h1, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &h2, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &h1, &d), HMS_POLICY_DENY);
    s_clock_ms += 1;
    assert_int_equal (s_act (set, &h1, &d), HMS_POLICY_ALLOW);
    hms_policy_destroy (&set);
}

static void test_rate_eviction_and_inherit (void **state)
{
    (void) state;
    const char *rules =
        "[{'id':'lim','action':'rate_limit','rate':{'per_second':1,'burst':2},'match':"
        "{'ports':['80']}},{'id':'other','action':'rate_limit','rate':{'per_second':1,"
        "'burst':2},'match':{'ports':['81']}}]";
    hms_policy_set_t *set = s_set (rules);
    hms_policy_set_rate_slots (set, 10); /* rounds up to 64 */
    s_clock_ms = 5000;
    hms_policy_set_clock (set, s_clock, NULL);
    hms_policy_decision_t d;
    /* the hot key spends its burst */
    hms_policy_query_t hot = {.src = "192.0.2.1", .port = 80};
    assert_int_equal (s_act (set, &hot, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &hot, &d), HMS_POLICY_ALLOW);
    assert_int_equal (s_act (set, &hot, &d), HMS_POLICY_DENY);
    /* thousands of other keys flood the small table: each spends one token, so their
     * buckets are fuller than the hot key's empty one and are taken over first */
    char addr[32];
    for (int i = 0; i < 5000; i++) {
        snprintf (addr, sizeof addr, "198.18.%d.%d", i / 250, i % 250);
        assert_int_equal (s_act (set, &(hms_policy_query_t){.src = addr, .port = 80}, &d),
                          HMS_POLICY_ALLOW);
    }
    assert_int_equal (s_act (set, &hot, &d), HMS_POLICY_DENY);

    /* a new set with the same rule takes the state over; a changed rate starts afresh */
    hms_policy_set_t *next = s_set (rules);
    hms_policy_set_clock (next, s_clock, NULL);
    hms_policy_inherit (next, set);
    assert_int_equal (s_act (next, &hot, &d), HMS_POLICY_DENY);
    hms_policy_set_t *changed =
        s_set ("[{'id':'lim','action':'rate_limit','rate':{'per_second':1,'burst':5},'match':"
               "{'ports':['80']}}]");
    hms_policy_set_clock (changed, s_clock, NULL);
    hms_policy_inherit (changed, set);
    assert_int_equal (s_act (changed, &hot, &d), HMS_POLICY_ALLOW);
    hms_policy_inherit (changed, NULL);
    hms_policy_destroy (&changed);
    hms_policy_destroy (&next);
    hms_policy_destroy (&set);
}

static void test_compile_errors (void **state)
{
    (void) state;
    s_refused ("[{'id':'a','action':'allow'},{'id':'b','action':'deny'},{'id':'a','action':"
               "'deny'}]",
               "policy a appears twice", "policies[0] and [2]");
    /* ids differ by case: two policies */
    hms_policy_set_t *set = s_set ("[{'id':'a','action':'allow'},{'id':'A','action':'deny'}]");
    assert_int_equal (hms_policy_size (set), 2);
    hms_policy_destroy (&set);
    s_refused ("[{'id':'A','action':'allow'},{'id':'a','action':'deny'},{'id':'a','action':"
               "'deny'}]",
               "policy a appears twice", "policies[1] and [2]");
    s_refused ("[{'id':'to-fra','action':'route'}]", "policy to-fra (policies[0])",
               "action route needs \"route\"");
    s_refused ("[{'id':'slow','action':'rate_limit'}]", "policy slow (policies[0])",
               "action rate_limit needs \"rate\"");
    s_refused ("[{'id':'broken','action':'deny','match':{'src':['10.1.2.0/40']}}]",
               "policy broken (policies[0]): match.src[0]: prefix length in '10.1.2.0/40' must "
               "be 0 to 32",
               NULL);
    s_refused ("[{'id':'p','action':'deny','match':{'ports':['1-2','0']}}]",
               "policy p (policies[0]): match.ports[1]: port range '0'", NULL);
    s_refused ("[{'id':'e','action':'allow','match':{'host':[]}}]",
               "policy e (policies[0]): match.host is empty", "leave it out");
    s_refused ("[{'id':'e','action':'allow','match':{'src':[]}}]", "match.src is empty", NULL);
    s_refused ("[{'id':'t','action':'allow','target':'10.0.0.1'}]", "policy t (policies[0])",
               "target");
    s_refused ("[{'id':'t','action':'allow','target':'host:0'}]", "target 'host:0'", NULL);
    s_refused ("[{'id':'t','action':'allow','target':'h:65536'}]", "target 'h:65536'", NULL);
    s_refused ("[{'id':'t','action':'allow','target':'[::1:80'}]", "target", NULL);
    s_refused ("[{'id':'t','action':'allow','ttl_ms':-1}]", "policy t (policies[0])", "ttl_ms");
    s_refused ("[{'id':'n','action':'allow','match':{'sni':['...']}}]",
               "match.sni[0]: '...' is not a name", NULL);
    s_refused ("[{'id':'x','action':'drop'}]", "policy x (policies[0])", "action");
    s_refused ("[\"text\"]", "policy ? (policies[0])", "expected object");
    s_refused ("{'id':'x'}", "policies must be an array", NULL);
    /* targets that are fine */
    set = s_set ("[{'id':'t1','action':'allow','target':'svc.internal:8080'},"
                 "{'id':'t2','action':'allow','target':'[2001:db8::1]:443'}]");
    hms_policy_destroy (&set);
}

static void test_json (void **state)
{
    (void) state;
    hms_policy_set_t *set =
        s_set ("[{'id':'a','action':'allow','target':'127.0.0.1:8081','retry_profile':'r',"
               "'match':{'host':['svc.virtual'],'user':['alice'],'namespace':['prod']}}]");
    json_t *query =
        s_json ("{'qid':'1','src':'10.0.0.1','dst':'svc.virtual','port':80,'protocol':'http',"
                "'host':'svc.virtual','sni':'svc.virtual','method':'GET','path':'/x',"
                "'user':'alice','service':'web','namespace':'prod'}");
    hms_policy_query_t q;
    hms_policy_query_from_json (query, &q);
    assert_int_equal (q.port, 80);
    assert_string_equal (q.ns, "prod");
    assert_string_equal (q.service, "web");
    hms_policy_decision_t d;
    hms_policy_evaluate (set, &q, 0, &d);
    json_t *decisions = json_array ();
    json_t *one = hms_policy_decision_to_json (&d);
    assert_string_equal (json_string_value (json_object_get (one, "action")), "allow");
    assert_string_equal (json_string_value (json_object_get (one, "target")), "127.0.0.1:8081");
    assert_true (json_is_null (json_object_get (one, "route")));
    json_object_set_new (one, "qid", json_string ("1"));
    json_array_append_new (decisions, one);
    hms_policy_evaluate (set, &(hms_policy_query_t){0}, 0, &d);
    one = hms_policy_decision_to_json (&d);
    assert_true (json_is_null (json_object_get (one, "rule")));
    json_object_set_new (one, "qid", json_string ("2"));
    json_array_append_new (decisions, one);
    /* both are what policy.decisions v1 carries; the query is a policy.decide query */
    json_t *body = json_pack ("{s:o}", "decisions", decisions);
    char err[512];
    if (hms_schemas_validate ("msg/policy.decisions.v1", body, err, sizeof err))
        fail_msg ("%s", err);
    json_t *ask = json_pack ("{s:[O]}", "queries", query);
    if (hms_schemas_validate ("msg/policy.decide.v1", ask, err, sizeof err))
        fail_msg ("%s", err);
    json_decref (ask);
    json_decref (body);
    json_decref (query);
    hms_policy_destroy (&set);
}

/* ---- randomized: the index decides as the plain scan does ------------------------------- */

static unsigned s_seed;
static unsigned s_rand (void)
{
    s_seed = s_seed * 1103515245u + 12345u;
    return (s_seed >> 8) & 0xffffff;
}
#define S_PICK(a) (a)[s_rand () % (sizeof (a) / sizeof (a)[0])]

static const char *const s_hosts[] = {"a.example", "b.example", "c.example", "x.a.example",
                                      "A.Example", "d.test",    "e.test",    "y.x.a.example"};
static const char *const s_host_pats[] = {"a.example", "b.example", "c.example", ".a.example",
                                          "*.test",    "*",         "d.test",    "?.example",
                                          "*x*",       ".example",  "e.test",    "B.EXAMPLE"};
static const char *const s_users[] = {"alice", "bob", "carol", "dave"};
static const char *const s_user_pats[] = {"alice", "bob", "*o*", "c*", "dave"};
static const char *const s_srcs[] = {"10.0.0.1",       "10.0.1.1",    "10.1.0.1",
                                     "192.168.1.1",    "2001:db8::1", "2001:db8:1::1",
                                     "::ffff:10.0.0.1"};
static const char *const s_prefix_pats[] = {
    "10.0.0.0/24",   "10.0.0.0/16",   "10.0.0.0/8", "192.168.0.0/16", "0.0.0.0/0",
    "2001:db8::/32", "2001:db8::/48", "10.0.0.1",   "::/0",           "::ffff:10.0.0.0/120"};
static const char *const s_protos[] = {"tcp", "udp", "ip", "http"};
static const char *const s_methods[] = {"GET", "POST", "PUT"};
static const char *const s_paths[] = {"/", "/v1/", "/v1/users", "/v2/"};
static const char *const s_actions[] = {"allow", "deny", "route"};

static json_t *s_random_strings (const char *const *pool, size_t n, int max)
{
    json_t *a = json_array ();
    int k = 1 + (int) (s_rand () % (unsigned) max);
    for (int i = 0; i < k; i++)
        json_array_append_new (a, json_string (pool[s_rand () % n]));
    return a;
}
#define S_STRINGS(pool, max) s_random_strings (pool, sizeof (pool) / sizeof (pool)[0], max)

static json_t *s_random_rule (int i)
{
    char id[32];
    snprintf (id, sizeof id, "r%d", i);
    const char *action = S_PICK (s_actions);
    json_t *rule = json_pack ("{s:s, s:i, s:s}", "id", id, "priority", (int) (s_rand () % 20),
                              "action", action);
    if (strcmp (action, "route") == 0)
        json_object_set_new (rule, "route", json_string ("relay-1"));
    json_t *match = json_object ();
    if (s_rand () % 2)
        json_object_set_new (match, "host", S_STRINGS (s_host_pats, 3));
    if (s_rand () % 3 == 0) {
        json_t *ports = json_array ();
        int k = 1 + (int) (s_rand () % 3);
        for (int j = 0; j < k; j++) {
            char p[32];
            int lo = 1 + (int) (s_rand () % 10);
            if (s_rand () % 4 == 0)
                snprintf (p, sizeof p, "%d-%d", lo, lo + (int) (s_rand () % 5));
            else if (s_rand () % 8 == 0)
                snprintf (p, sizeof p, "1-2000"); /* too wide for the port index */
            else
                snprintf (p, sizeof p, "%d", lo);
            json_array_append_new (ports, json_string (p));
        }
        json_object_set_new (match, "ports", ports);
    }
    if (s_rand () % 4 == 0)
        json_object_set_new (match, "src", S_STRINGS (s_prefix_pats, 3));
    if (s_rand () % 6 == 0)
        json_object_set_new (match, "dst", S_STRINGS (s_prefix_pats, 2));
    if (s_rand () % 4 == 0)
        json_object_set_new (match, "user", S_STRINGS (s_user_pats, 2));
    if (s_rand () % 5 == 0)
        json_object_set_new (match, "protocol", S_STRINGS (s_protos, 2));
    if (s_rand () % 6 == 0)
        json_object_set_new (match, "method", S_STRINGS (s_methods, 2));
    if (s_rand () % 6 == 0)
        json_object_set_new (match, "path_prefix", S_STRINGS (s_paths, 2));
    if (s_rand () % 8 == 0)
        json_object_set_new (match, "sni", S_STRINGS (s_host_pats, 2));
    json_object_set_new (rule, "match", match);
    return rule;
}

static void test_index_equals_scan (void **state)
{
    (void) state;
    s_seed = 20240611;
    size_t decided = 0, defaults = 0;
    for (int round = 0; round < 200; round++) {
        json_t *rules = json_array ();
        int n = 1 + (int) (s_rand () % (round < 100 ? 12 : 120));
        for (int i = 0; i < n; i++)
            json_array_append_new (rules, s_random_rule (i));
        char err[1024];
        hms_policy_set_t *set = hms_policy_compile (rules, err, sizeof err);
        if (!set)
            fail_msg ("round %d: %s", round, err);
        for (int k = 0; k < 300; k++) {
            char dst[64];
            hms_policy_query_t q = {0};
            if (s_rand () % 4)
                q.host = S_PICK (s_hosts);
            if (s_rand () % 3)
                q.port = 1 + (int) (s_rand () % 12);
            if (s_rand () % 2)
                q.src = S_PICK (s_srcs);
            if (s_rand () % 3 == 0) {
                snprintf (dst, sizeof dst, "%s", S_PICK (s_srcs));
                q.dst = dst;
            } else if (s_rand () % 5 == 0)
                q.dst = S_PICK (s_hosts);
            if (s_rand () % 2)
                q.user = S_PICK (s_users);
            if (s_rand () % 2)
                q.protocol = S_PICK (s_protos);
            if (s_rand () % 2)
                q.method = S_PICK (s_methods);
            if (s_rand () % 2)
                q.path = S_PICK (s_paths);
            if (s_rand () % 4 == 0)
                q.sni = S_PICK (s_hosts);
            hms_policy_decision_t a, b;
            hms_policy_evaluate (set, &q, 0, &a);
            hms_policy_evaluate (set, &q, HMS_POLICY_SCAN, &b);
            bool same = a.action == b.action && (a.rule == b.rule) && (a.route == b.route) &&
                        a.ttl_ms == b.ttl_ms;
            if (!same) {
                char *text = json_dumps (rules, JSON_COMPACT);
                fail_msg ("round %d query %d: index %s/%s, scan %s/%s; rules %s", round, k,
                          hms_policy_action_name (a.action), a.rule ? a.rule : "-",
                          hms_policy_action_name (b.action), b.rule ? b.rule : "-", text);
            }
            decided++;
            defaults += a.rule == NULL;
        }
        hms_policy_destroy (&set);
        json_decref (rules);
    }
    /* the generator hits both rules and the default often enough to mean something */
    assert_true (defaults > decided / 20);
    assert_true (defaults < decided - decided / 5);
    print_message ("%zu queries, %zu by default\n", decided, defaults);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_names),
        cmocka_unit_test (test_sni_pending),
        cmocka_unit_test (test_dst_pending),
        cmocka_unit_test (test_prefixes),
        cmocka_unit_test (test_ports_protocol_method_path),
        cmocka_unit_test (test_identities_and_unknown_fields),
        cmocka_unit_test (test_priorities_and_default),
        cmocka_unit_test (test_actions),
        cmocka_unit_test (test_per_user_targets),
        cmocka_unit_test (test_rate_limit),
        cmocka_unit_test (test_rate_eviction_and_inherit),
        cmocka_unit_test (test_compile_errors),
        cmocka_unit_test (test_json),
        cmocka_unit_test (test_index_equals_scan),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
