/* Unit tests of hms_soon: a run asked for happens at the end of the loop turn, also on a loop
 * that is never idle (where a plain ev_idle at the same priority is starved), does not let
 * the loop block when asked for from its own callback, and can be withdrawn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <unistd.h>

#include "hms_soon.h"

typedef struct {
    int turns;      /* busy watcher calls */
    int ran;        /* soon runs */
    int ran_turn;   /* turns seen at the first run */
    int idle_ran;   /* plain ev_idle runs */
    int again;      /* runs to ask for from the callback itself */
    ev_tstamp last; /* when the soon ran last */
} s_seen_t;

static void s_on_busy (struct ev_loop *loop, ev_io *w, int revents)
{
    s_seen_t *seen = w->data;
    if (++seen->turns == 20)
        ev_break (loop, EVBREAK_ALL);
}

static void s_on_soon (struct ev_loop *loop, hms_soon_t *soon)
{
    s_seen_t *seen = soon->data;
    if (seen->ran++ == 0)
        seen->ran_turn = seen->turns;
    seen->last = ev_time ();
    if (seen->again > 0) {
        seen->again--;
        hms_soon_start (loop, soon);
    }
}

static void s_on_idle (struct ev_loop *loop, ev_idle *w, int revents)
{
    ((s_seen_t *) w->data)->idle_ran++;
    ev_idle_stop (loop, w);
}

static void s_on_timeout (struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break (loop, EVBREAK_ALL);
}

/* A pipe with a byte nobody reads: its read watcher is pending at every turn. */
static void test_runs_on_a_loop_that_never_idles (void **state)
{
    int p[2];
    assert_int_equal (pipe (p), 0);
    assert_int_equal (write (p[1], "x", 1), 1);
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    s_seen_t seen = {0};
    ev_io busy;
    ev_io_init (&busy, s_on_busy, p[0], EV_READ);
    busy.data = &seen;
    ev_io_start (loop, &busy);
    hms_soon_t soon;
    hms_soon_init (&soon, s_on_soon, &seen);
    ev_idle idle;
    ev_idle_init (&idle, s_on_idle);
    idle.data = &seen;
    hms_soon_start (loop, &soon);
    hms_soon_start (loop, &soon); /* asked twice, runs once */
    assert_true (hms_soon_pending (&soon));
    ev_idle_start (loop, &idle);
    ev_run (loop, 0);
    assert_int_equal (seen.ran, 1);
    assert_int_equal (seen.ran_turn, 0); /* before the loop's first poll */
    assert_false (hms_soon_pending (&soon));
    assert_int_equal (seen.idle_ran, 0); /* starved for 20 turns */
    ev_idle_stop (loop, &idle);
    ev_io_stop (loop, &busy);
    ev_loop_destroy (loop);
    close (p[0]);
    close (p[1]);
}

/* With a watcher that never fires active, the loop would block in its poll: a run asked for
 * from the callback must still come at once, not at the timeout. Withdrawn, it never runs. */
static void test_asked_again_from_its_callback_without_blocking (void **state)
{
    int p[2];
    assert_int_equal (pipe (p), 0);
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    s_seen_t seen = {.again = 3};
    ev_io quiet;
    ev_io_init (&quiet, s_on_busy, p[0], EV_READ);
    quiet.data = &seen;
    ev_io_start (loop, &quiet);
    ev_timer timeout;
    ev_timer_init (&timeout, s_on_timeout, 2.0, 0);
    ev_timer_start (loop, &timeout);
    hms_soon_t soon;
    hms_soon_init (&soon, s_on_soon, &seen);
    ev_tstamp t0 = ev_time ();
    hms_soon_start (loop, &soon);
    while (seen.ran < 4 && ev_time () - t0 < 1.5)
        ev_run (loop, EVRUN_ONCE);
    assert_int_equal (seen.ran, 4);
    assert_true (seen.last - t0 < 0.5);
    hms_soon_start (loop, &soon);
    hms_soon_stop (loop, &soon);
    assert_false (hms_soon_pending (&soon));
    ev_run (loop, EVRUN_NOWAIT);
    assert_int_equal (seen.ran, 4);
    ev_timer_stop (loop, &timeout);
    ev_io_stop (loop, &quiet);
    ev_loop_destroy (loop);
    close (p[0]);
    close (p[1]);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_runs_on_a_loop_that_never_idles),
        cmocka_unit_test (test_asked_again_from_its_callback_without_blocking),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
