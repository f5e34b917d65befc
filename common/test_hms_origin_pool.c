/* Unit tests of hms_origin_pool, the pool of idle origin connections: the newest of an origin
 * is reused first, the per-origin and the overall limits drop the oldest, origins
 * are told apart by scheme, host and port, and a connection the origin closed while idle is
 * never handed out. Plain connections over socketpairs; no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hms_origin_pool.h"

/* A plain "origin connection": our end of a socketpair, the origin's end in *peer. */
static hms_origin_conn_t s_conn (int *peer)
{
    int sv[2];
    assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl (sv[0], F_SETFL, O_NONBLOCK);
    hms_origin_conn_t c;
    assert_int_equal (hms_origin_open (&c, sv[0], NULL, "origin"), 0);
    *peer = sv[1];
    return c;
}

static bool s_take_fd (hms_origin_pool_t *p, bool tls, const char *host, uint16_t port, int *fd)
{
    hms_origin_conn_t c;
    if (!hms_origin_pool_take (p, tls, host, port, &c))
        return false;
    *fd = c.fd;
    hms_origin_close (&c);
    return true;
}

static void test_newest_first_and_per_origin_limit (void **state)
{
    struct ev_loop *loop = ev_loop_new (0);
    hms_origin_pool_t *p = hms_origin_pool_new (loop, 100, 3, 15.0);
    int peers[4], fds[4];
    for (int i = 0; i < 4; i++) {
        hms_origin_conn_t c = s_conn (&peers[i]);
        fds[i] = c.fd;
        hms_origin_pool_put (p, false, "a", 80, &c);
        assert_int_equal (c.fd, -1); /* moved into the pool */
    }
    /* 3 per origin: the oldest (0) went; the newest comes back first */
    int fd;
    assert_true (s_take_fd (p, false, "a", 80, &fd));
    assert_int_equal (fd, fds[3]);
    assert_true (s_take_fd (p, false, "a", 80, &fd));
    assert_int_equal (fd, fds[2]);
    assert_true (s_take_fd (p, false, "a", 80, &fd));
    assert_int_equal (fd, fds[1]);
    assert_false (s_take_fd (p, false, "a", 80, &fd));
    /* the dropped one was closed: its origin sees the end */
    char b;
    assert_int_equal (read (peers[0], &b, 1), 0);
    for (int i = 0; i < 4; i++)
        close (peers[i]);
    hms_origin_pool_destroy (&p);
    assert_null (p);
    ev_loop_destroy (loop);
}

static void test_origins_apart_and_overall_limit (void **state)
{
    struct ev_loop *loop = ev_loop_new (0);
    hms_origin_pool_t *p = hms_origin_pool_new (loop, 3, 10, 15.0);
    int peers[4];
    const char *hosts[4] = {"a", "b", "a", "c"};
    bool tls[4] = {false, false, true, false};
    for (int i = 0; i < 4; i++) {
        hms_origin_conn_t c = s_conn (&peers[i]);
        hms_origin_pool_put (p, tls[i], hosts[i], 80, &c);
    }
    int fd;
    /* 3 in all: the oldest of all (http://a:80) went */
    assert_false (s_take_fd (p, false, "a", 80, &fd));
    /* scheme and port tell origins apart */
    assert_false (s_take_fd (p, false, "b", 81, &fd));
    assert_true (s_take_fd (p, true, "a", 80, &fd));
    assert_true (s_take_fd (p, false, "b", 80, &fd));
    assert_true (s_take_fd (p, false, "c", 80, &fd));
    assert_false (s_take_fd (p, false, "c", 80, &fd));
    for (int i = 0; i < 4; i++)
        close (peers[i]);
    hms_origin_pool_destroy (&p);
    ev_loop_destroy (loop);
}

static void test_closed_while_idle_is_not_handed_out (void **state)
{
    struct ev_loop *loop = ev_loop_new (0);
    hms_origin_pool_t *p = hms_origin_pool_new (loop, 10, 10, 15.0);
    int old_peer, new_peer, talk_peer;
    hms_origin_conn_t c = s_conn (&old_peer);
    int old_fd = c.fd;
    hms_origin_pool_put (p, false, "a", 80, &c);
    c = s_conn (&new_peer);
    hms_origin_pool_put (p, false, "a", 80, &c);
    /* the newest one's origin closes it; the older one is still good */
    close (new_peer);
    int fd;
    assert_true (s_take_fd (p, false, "a", 80, &fd));
    assert_int_equal (fd, old_fd);
    assert_false (s_take_fd (p, false, "a", 80, &fd));
    /* an origin that sends bytes nobody asked for: not reusable either, and the watcher drops
     * it while idle */
    c = s_conn (&talk_peer);
    hms_origin_pool_put (p, false, "a", 80, &c);
    assert_int_equal (write (talk_peer, "x", 1), 1);
    ev_run (loop, EVRUN_NOWAIT);
    assert_false (s_take_fd (p, false, "a", 80, &fd));
    close (old_peer);
    close (talk_peer);
    hms_origin_pool_destroy (&p);
    ev_loop_destroy (loop);
}

static void test_nothing_kept_when_limits_are_zero (void **state)
{
    struct ev_loop *loop = ev_loop_new (0);
    hms_origin_pool_t *p = hms_origin_pool_new (loop, 0, 0, 15.0);
    int peer;
    hms_origin_conn_t c = s_conn (&peer);
    hms_origin_pool_put (p, false, "a", 80, &c);
    assert_int_equal (c.fd, -1);
    char b;
    assert_int_equal (read (peer, &b, 1), 0); /* closed at once */
    int fd;
    assert_false (s_take_fd (p, false, "a", 80, &fd));
    close (peer);
    hms_origin_pool_destroy (&p);
    ev_loop_destroy (loop);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_newest_first_and_per_origin_limit),
        cmocka_unit_test (test_origins_apart_and_overall_limit),
        cmocka_unit_test (test_closed_while_idle_is_not_handed_out),
        cmocka_unit_test (test_nothing_kept_when_limits_are_zero),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
