/* Unit tests of hms_resolve: answers always come from the loop; a kept name is answered
 * without a lookup, many requests for one name share one lookup, cancelled requests hear
 * nothing, failures are kept briefly, the cache stays within its bound, loops on two threads
 * share it, and the resolver threads stay few; RFC 6761's special names are answered without
 * a query. Names that must fail are looked up in a network namespace of the test's own (no
 * route anywhere), so no query leaves the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hms_resolve.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int calls;
    int ok;
    uint16_t port;
    int n;
    char addrs[HMS_RESOLVE_ADDRS_MAX][64];
    char why[300];
    pthread_t thread;
} s_answer_t;

static void s_on_answer (const hms_addrs_t *addrs, const char *why, void *arg)
{
    s_answer_t *a = arg;
    a->calls++;
    a->thread = pthread_self ();
    if (addrs) {
        a->ok = 1;
        a->port = hms_addr_port (&addrs->addr[0]);
        a->n = addrs->n;
        for (int i = 0; i < addrs->n; i++)
            hms_addr_str (&addrs->addr[i], a->addrs[i], sizeof a->addrs[i]);
    } else
        snprintf (a->why, sizeof a->why, "%s", why);
}

static void s_on_timeout (struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break (loop, EVBREAK_ALL);
}

/* Runs the loop for ms. */
static void s_run_for (struct ev_loop *loop, int ms)
{
    ev_timer t;
    ev_timer_init (&t, s_on_timeout, ms / 1000.0, 0);
    ev_timer_start (loop, &t);
    ev_run (loop, 0);
    ev_timer_stop (loop, &t);
}

static int s_total (const s_answer_t *a, int n)
{
    int sum = 0;
    for (int i = 0; i < n; i++)
        sum += a[i].calls;
    return sum;
}

/* Runs the loop until want answers of a[0..n) came, or 10 s passed. */
static void s_wait_count (struct ev_loop *loop, s_answer_t *a, int n, int want)
{
    for (int slice = 0; slice < 1000 && s_total (a, n) < want; slice++)
        s_run_for (loop, 10);
    assert_int_equal (s_total (a, n), want);
}

static void s_wait_all (struct ev_loop *loop, s_answer_t *a, int n)
{
    s_wait_count (loop, a, n, n);
}

static hms_resolve_stats_t s_stats (void)
{
    hms_resolve_stats_t st;
    hms_resolve_stats (&st);
    return st;
}

static void test_a_literal_needs_no_lookup (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    hms_resolve_stats_t before = s_stats ();
    s_answer_t a = {0};
    hms_resolve (loop, "127.0.0.1", 8080, s_on_answer, &a);
    assert_int_equal (a.calls, 0); /* never from the call itself */
    s_wait_all (loop, &a, 1);
    assert_true (a.ok);
    assert_int_equal (a.port, 8080);
    assert_int_equal (s_stats ().lookups, before.lookups);
    ev_loop_destroy (loop);
}

static void test_a_kept_name_is_answered_without_a_lookup (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    hms_resolve_stats_t before = s_stats ();
    s_answer_t a = {0}, b = {0};
    hms_resolve (loop, "localhost", 1, s_on_answer, &a);
    s_wait_all (loop, &a, 1);
    assert_true (a.ok);
    assert_int_equal (a.port, 1);
    hms_resolve_stats_t mid = s_stats ();
    assert_int_equal (mid.lookups, before.lookups + 1);
    assert_int_equal (mid.names, 1);
    /* names are the same whatever their case; the port is the request's own */
    hms_resolve (loop, "LocalHost", 2, s_on_answer, &b);
    assert_int_equal (b.calls, 0);
    s_wait_all (loop, &b, 1);
    assert_true (b.ok);
    assert_int_equal (b.port, 2);
    hms_resolve_stats_t after = s_stats ();
    assert_int_equal (after.lookups, mid.lookups);
    assert_int_equal (after.cached, mid.cached + 1);
    ev_loop_destroy (loop);
}

static void test_requests_for_one_name_share_one_lookup (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    hms_resolve_stats_t before = s_stats ();
    enum { N = 100 };
    static s_answer_t a[N];
    memset (a, 0, sizeof a);
    for (int i = 0; i < N; i++)
        hms_resolve (loop, "localhost", (uint16_t) (1000 + i), s_on_answer, &a[i]);
    s_wait_all (loop, a, N);
    for (int i = 0; i < N; i++) {
        assert_true (a[i].ok);
        assert_int_equal (a[i].port, 1000 + i);
    }
    /* the others joined the lookup, or came after it and found the answer kept */
    hms_resolve_stats_t after = s_stats ();
    assert_int_equal (after.lookups, before.lookups + 1);
    assert_int_equal (after.joined - before.joined + after.cached - before.cached, N - 1);
    ev_loop_destroy (loop);
}

static void test_a_cancelled_request_hears_nothing (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    enum { N = 10 };
    s_answer_t a[N] = {0};
    hms_resolve_t *r[N];
    for (int i = 0; i < N; i++)
        r[i] = hms_resolve (loop, "localhost", 80, s_on_answer, &a[i]);
    for (int i = 0; i < N; i += 2)
        hms_resolve_cancel (r[i]);
    s_wait_count (loop, a, N, N / 2);
    s_run_for (loop, 100); /* nothing more comes */
    for (int i = 0; i < N; i++)
        assert_int_equal (a[i].calls, i % 2);
    /* an answer from the cache can be cancelled too */
    s_answer_t c = {0};
    hms_resolve_cancel (hms_resolve (loop, "localhost", 80, s_on_answer, &c));
    s_run_for (loop, 50);
    assert_int_equal (c.calls, 0);
    ev_loop_destroy (loop);
}

static void test_a_failure_is_kept_briefly (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 200, 4096);
    hms_resolve_stats_t before = s_stats ();
    s_answer_t a = {0}, b = {0}, c = {0};
    hms_resolve (loop, "no-such-name.test", 443, s_on_answer, &a);
    s_wait_all (loop, &a, 1);
    assert_false (a.ok);
    assert_non_null (strstr (a.why, "cannot resolve 'no-such-name.test'"));
    hms_resolve (loop, "no-such-name.test", 443, s_on_answer, &b);
    s_wait_all (loop, &b, 1);
    assert_false (b.ok);
    assert_string_equal (b.why, a.why);
    assert_int_equal (s_stats ().lookups, before.lookups + 1);
    usleep (250 * 1000); /* past the failure's 200 ms */
    hms_resolve (loop, "no-such-name.test", 443, s_on_answer, &c);
    s_wait_all (loop, &c, 1);
    assert_false (c.ok);
    assert_int_equal (s_stats ().lookups, before.lookups + 2);
    ev_loop_destroy (loop);
}

static void test_without_a_cache_every_request_looks_up (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (0, 0, 4096);
    hms_resolve_stats_t before = s_stats ();
    s_answer_t a = {0}, b = {0};
    hms_resolve (loop, "localhost", 1, s_on_answer, &a);
    s_wait_all (loop, &a, 1);
    hms_resolve (loop, "localhost", 2, s_on_answer, &b);
    s_wait_all (loop, &b, 1);
    assert_true (a.ok && b.ok);
    hms_resolve_stats_t after = s_stats ();
    assert_int_equal (after.lookups, before.lookups + 2);
    assert_int_equal (after.names, 0);
    ev_loop_destroy (loop);
}

static void test_the_cache_keeps_within_its_bound (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 10000, 2);
    hms_resolve_stats_t before = s_stats ();
    const char *names[] = {"localhost", "a.test", "b.test", "localhost"};
    for (int i = 0; i < 4; i++) {
        s_answer_t a = {0};
        hms_resolve (loop, names[i], 80, s_on_answer, &a);
        s_wait_all (loop, &a, 1);
        assert_int_equal (a.ok, i % 3 == 0);
        assert_true (s_stats ().names <= 2);
    }
    /* localhost, answered first, made room for b.test: it was looked up again */
    assert_int_equal (s_stats ().lookups, before.lookups + 4);
    s_answer_t a = {0};
    hms_resolve (loop, "b.test", 80, s_on_answer, &a);
    s_wait_all (loop, &a, 1);
    assert_int_equal (s_stats ().lookups, before.lookups + 4); /* still kept */
    ev_loop_destroy (loop);
}

enum { S_PER_LOOP = 50 };
typedef struct {
    s_answer_t a[S_PER_LOOP];
    pthread_t self;
} s_loop_job_t;

static void *s_loop_thread (void *arg)
{
    s_loop_job_t *job = arg;
    job->self = pthread_self ();
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    for (int i = 0; i < S_PER_LOOP; i++)
        hms_resolve (loop, "localhost", (uint16_t) (2000 + i), s_on_answer, &job->a[i]);
    s_wait_all (loop, job->a, S_PER_LOOP);
    ev_loop_destroy (loop);
    return NULL;
}

static void test_loops_on_two_threads_share_the_cache (void **state)
{
    hms_resolve_config (10000, 2000, 4096);
    hms_resolve_stats_t before = s_stats ();
    static s_loop_job_t jobs[2];
    memset (jobs, 0, sizeof jobs);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal (pthread_create (&t[i], NULL, s_loop_thread, &jobs[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join (t[i], NULL);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < S_PER_LOOP; k++) {
            assert_int_equal (jobs[i].a[k].calls, 1);
            assert_true (jobs[i].a[k].ok);
            assert_int_equal (jobs[i].a[k].port, 2000 + k);
            assert_true (pthread_equal (jobs[i].a[k].thread, jobs[i].self));
        }
    hms_resolve_stats_t after = s_stats ();
    assert_int_equal (after.lookups, before.lookups + 1);
}

static void test_resolver_threads_stay_few (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    enum { N = 40 };
    static s_answer_t a[N];
    memset (a, 0, sizeof a);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf (name, sizeof name, "n%d.test", i);
        hms_resolve (loop, name, 80, s_on_answer, &a[i]);
    }
    s_wait_all (loop, a, N);
    for (int i = 0; i < N; i++)
        assert_false (a[i].ok);
    hms_resolve_stats_t st = s_stats ();
    assert_true (st.threads_max >= 1);
    assert_true (st.threads_max <= HMS_RESOLVE_THREADS);
    ev_loop_destroy (loop);
}

static void test_bad_names_are_answered_with_a_reason (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    char longname[400];
    memset (longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    s_answer_t a = {0}, b = {0};
    hms_resolve (loop, longname, 80, s_on_answer, &a);
    hms_resolve (loop, "", 80, s_on_answer, &b);
    s_wait_all (loop, &a, 1);
    s_wait_all (loop, &b, 1);
    assert_non_null (strstr (a.why, "name too long"));
    assert_non_null (strstr (b.why, "empty name"));
    ev_loop_destroy (loop);
}

static void test_special_names_are_answered_without_a_query (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (10000, 2000, 4096);
    s_answer_t a = {0}, b = {0}, c = {0}, d = {0};
    hms_resolve_stats_t before = s_stats ();
    /* .invalid fails at once, with the reason, in any case and with a trailing dot */
    hms_resolve (loop, "no-such-host.INVALID.", 443, s_on_answer, &a);
    hms_resolve (loop, "invalid", 443, s_on_answer, &b);
    s_wait_all (loop, &a, 1);
    s_wait_all (loop, &b, 1);
    assert_false (a.ok);
    assert_non_null (strstr (a.why, ".invalid names never resolve (RFC 6761)"));
    assert_false (b.ok);
    hms_resolve_stats_t mid = s_stats ();
    assert_int_equal (mid.lookups, before.lookups);
    /* a name under .localhost is localhost: one name kept for both, at most one lookup */
    hms_resolve (loop, "app.dev.localhost", 81, s_on_answer, &c);
    hms_resolve (loop, "localhost.", 82, s_on_answer, &d);
    s_wait_all (loop, &c, 1);
    s_wait_all (loop, &d, 1);
    assert_true (c.ok);
    assert_int_equal (c.port, 81);
    assert_true (d.ok);
    assert_int_equal (d.port, 82);
    hms_resolve_stats_t after = s_stats ();
    assert_true (after.lookups <= mid.lookups + 1);
    /* and a name that only ends like one is not special */
    s_answer_t e = {0};
    hms_resolve (loop, "notinvalid", 443, s_on_answer, &e);
    s_wait_all (loop, &e, 1);
    assert_null (strstr (e.why, "RFC 6761"));
    ev_loop_destroy (loop);
}

int main (void)
{
    /* a network of the test's own: names that must fail fail here, without a query out */
    if (unshare (CLONE_NEWNET) != 0)
        fprintf (stderr, "note: no network namespace of our own (not root?): names that "
                         "must fail are asked of the system's resolver\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_a_literal_needs_no_lookup),
        cmocka_unit_test (test_a_kept_name_is_answered_without_a_lookup),
        cmocka_unit_test (test_requests_for_one_name_share_one_lookup),
        cmocka_unit_test (test_a_cancelled_request_hears_nothing),
        cmocka_unit_test (test_a_failure_is_kept_briefly),
        cmocka_unit_test (test_without_a_cache_every_request_looks_up),
        cmocka_unit_test (test_the_cache_keeps_within_its_bound),
        cmocka_unit_test (test_loops_on_two_threads_share_the_cache),
        cmocka_unit_test (test_resolver_threads_stay_few),
        cmocka_unit_test (test_bad_names_are_answered_with_a_reason),
        cmocka_unit_test (test_special_names_are_answered_without_a_query),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
