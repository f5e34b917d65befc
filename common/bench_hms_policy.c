/* bench_hms_policy: decisions per second of hms_policy for 10, 1000 and 10000 rules, through
 * the index and through the plain ordered scan, and for whole policy.decide batches of 1024
 * queries (JSON text in, JSON text out, as the engine serves them). Not a test: run it by
 * hand, `build/bin/bench_hms_policy [seconds per measurement]`.
 *
 * The rule mix is what an operator writes: most rules name exact hosts (per-service and
 * per-user rules), some are about ports, some about client prefixes, a few use suffixes
 * and globs; queries hit existing hosts most of the time. */
#include "hms_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_QUERIES 4096

static unsigned s_seed = 7;
static unsigned s_rand (void)
{
    s_seed = s_seed * 1103515245u + 12345u;
    return (s_seed >> 8) & 0xffffff;
}

static double s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static json_t *s_rules (int n)
{
    json_t *rules = json_array ();
    static const char *const users[] = {"alice", "bob", "carol", "dave"};
    for (int i = 0; i < n; i++) {
        char id[32], name[64], text[64];
        snprintf (id, sizeof id, "rule-%d", i);
        int kind = (int) (s_rand () % 100);
        json_t *match = json_object ();
        if (kind < 60) {
            snprintf (name, sizeof name, "svc-%d.example", (int) (s_rand () % (unsigned) n));
            json_object_set_new (match, "host", json_pack ("[s]", name));
            if (s_rand () % 2)
                json_object_set_new (match, "user", json_pack ("[s]", users[s_rand () % 4]));
        } else if (kind < 85) {
            snprintf (text, sizeof text, "%d", 1000 + (int) (s_rand () % 5000));
            json_object_set_new (match, "ports", json_pack ("[s]", text));
            json_object_set_new (match, "protocol", json_pack ("[s]", "tcp"));
        } else if (kind < 95) {
            snprintf (text, sizeof text, "10.%d.%d.0/24", (int) (s_rand () % 256),
                      (int) (s_rand () % 256));
            json_object_set_new (match, "src", json_pack ("[s]", text));
            json_object_set_new (match, "protocol", json_pack ("[s]", "udp"));
        } else {
            snprintf (name, sizeof name, "%s%d.example", s_rand () % 2 ? ".zone-" : "*.z*-",
                      (int) (s_rand () % 100));
            json_object_set_new (match, "host", json_pack ("[s]", name));
        }
        json_array_append_new (rules, json_pack ("{s:s, s:i, s:s, s:o}", "id", id, "priority",
                                                 (int) (s_rand () % 1000), "action",
                                                 s_rand () % 3 ? "allow" : "deny", "match", match));
    }
    return rules;
}

typedef struct {
    char src[32], host[64];
    hms_policy_query_t q;
} s_query_t;

static void s_queries (s_query_t *qs, int nrules)
{
    static const char *const users[] = {"alice", "bob", "carol", "dave", "eve"};
    for (int i = 0; i < S_QUERIES; i++) {
        s_query_t *x = &qs[i];
        snprintf (x->src, sizeof x->src, "10.%d.%d.%d", (int) (s_rand () % 256),
                  (int) (s_rand () % 256), (int) (s_rand () % 256));
        if (s_rand () % 10 < 8)
            snprintf (x->host, sizeof x->host, "svc-%d.example", (int) (s_rand () % nrules));
        else
            snprintf (x->host, sizeof x->host, "a.zone-%d.example", (int) (s_rand () % 200));
        x->q = (hms_policy_query_t){.src = x->src,
                                    .host = x->host,
                                    .port = 1000 + (int) (s_rand () % 5000),
                                    .protocol = s_rand () % 2 ? "tcp" : "udp",
                                    .user = users[s_rand () % 5]};
    }
}

/* Decisions per second; *share: the part decided by a rule rather than the default. */
static double s_rate (hms_policy_set_t *set, s_query_t *qs, int flags, double seconds,
                      double *share)
{
    size_t done = 0, matched = 0;
    double start = s_now (), end = start;
    while (end - start < seconds) {
        for (int i = 0; i < S_QUERIES; i++) {
            hms_policy_decision_t d;
            hms_policy_evaluate (set, &qs[i].q, flags, &d);
            matched += d.rule != NULL;
        }
        done += S_QUERIES;
        end = s_now ();
    }
    *share = (double) matched / (double) done;
    return (double) done / (end - start);
}

/* A policy.decide body of 1024 queries as text -> decisions as text, per second. */
static double s_batch_rate (hms_policy_set_t *set, s_query_t *qs, double seconds)
{
    json_t *queries = json_array ();
    for (int i = 0; i < 1024; i++) {
        const hms_policy_query_t *q = &qs[i].q;
        char qid[16];
        snprintf (qid, sizeof qid, "q%d", i);
        json_array_append_new (queries, json_pack ("{s:s, s:s, s:s, s:i, s:s, s:s}", "qid", qid,
                                                   "src", q->src, "host", q->host, "port", q->port,
                                                   "protocol", q->protocol, "user", q->user));
    }
    json_t *body = json_pack ("{s:o}", "queries", queries);
    char *text = json_dumps (body, JSON_COMPACT);
    json_decref (body);
    size_t done = 0;
    double start = s_now (), end = start;
    while (end - start < seconds) {
        json_t *in = json_loads (text, 0, NULL);
        json_t *out = json_array ();
        size_t i;
        json_t *item;
        json_array_foreach (json_object_get (in, "queries"), i, item)
        {
            hms_policy_query_t q;
            hms_policy_decision_t d;
            hms_policy_query_from_json (item, &q);
            hms_policy_evaluate (set, &q, 0, &d);
            json_t *one = hms_policy_decision_to_json (&d);
            json_object_set (one, "qid", json_object_get (item, "qid"));
            json_array_append_new (out, one);
        }
        json_t *reply = json_pack ("{s:o}", "decisions", out);
        char *encoded = json_dumps (reply, JSON_COMPACT);
        free (encoded);
        json_decref (reply);
        json_decref (in);
        done += 1024;
        end = s_now ();
    }
    free (text);
    return (double) done / (end - start);
}

int main (int argc, char **argv)
{
    double seconds = argc > 1 ? atof (argv[1]) : 1.0;
    if (seconds <= 0)
        seconds = 1.0;
    static s_query_t qs[S_QUERIES];
    printf ("%-7s %14s %14s %9s %16s %10s\n", "rules", "indexed/s", "scan/s", "matched",
            "json batch/s", "compile");
    const int sizes[] = {10, 1000, 10000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        json_t *rules = s_rules (n);
        char err[1024];
        double t0 = s_now ();
        hms_policy_set_t *set = hms_policy_compile (rules, err, sizeof err);
        double compile_ms = (s_now () - t0) * 1000;
        if (!set) {
            fprintf (stderr, "bench_hms_policy: rules do not compile: %s\n", err);
            return 1;
        }
        s_queries (qs, n);
        double share, scan_share;
        double indexed = s_rate (set, qs, 0, seconds, &share);
        double scan = s_rate (set, qs, HMS_POLICY_SCAN, seconds, &scan_share);
        double batch = s_batch_rate (set, qs, seconds);
        printf ("%-7d %14.0f %14.0f %8.0f%% %16.0f %8.1fms\n", n, indexed, scan, 100.0 * share,
                batch, compile_ms);
        hms_policy_destroy (&set);
        json_decref (rules);
    }
    return 0;
}
