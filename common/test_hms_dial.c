/* Unit tests of hms_dial with a name that has several addresses (a scaled service behind one
 * name): refused addresses are skipped, one that does not answer is raced after 250 ms, the
 * failed ones go last in the resolver's cache, and when all fail the reason names each and
 * the name is looked up again by the next dial (its instances were replaced). The
 * test runs in network and mount namespaces of its own: loopback there, and an /etc/hosts
 * of its own bind-mounted over the system's for its process only (getaddrinfo reads it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hms_dial.h"
#include "hms_resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#define S_NAME "pair.test"
#define S_PORT 4433

static const char s_hosts[] = "127.0.0.1 localhost\n"
                              "127.0.0.2 " S_NAME "\n"
                              "127.0.0.3 " S_NAME "\n"
                              "127.0.0.4 " S_NAME "\n";

/* The addresses of S_NAME as the resolver orders them (getaddrinfo sorts by RFC 6724). */
static char s_order[3][64];

typedef struct {
    int calls;
    int fd;
    char addr[64];
    char why[400];
} s_result_t;

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_result_t *r = arg;
    r->calls++;
    r->fd = fd;
    if (fd >= 0) { /* the address reached */
        hms_addr_t peer = {.len = sizeof peer.ss};
        getpeername (fd, (struct sockaddr *) &peer.ss, &peer.len);
        hms_addr_ip (&peer, r->addr, sizeof r->addr);
    } else
        snprintf (r->why, sizeof r->why, "%s", why);
}

typedef struct {
    int calls;
    int n;
    char addrs[HMS_RESOLVE_ADDRS_MAX][64];
} s_answer_t;

static void s_on_answer (const hms_addrs_t *addrs, const char *why, void *arg)
{
    s_answer_t *a = arg;
    a->calls++;
    a->n = addrs ? addrs->n : 0;
    for (int i = 0; i < a->n; i++)
        hms_addr_ip (&addrs->addr[i], a->addrs[i], sizeof a->addrs[i]);
}

static void s_on_timeout (struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break (loop, EVBREAK_ALL);
}

/* Runs the loop until *calls is 1, or 10 s passed. */
static void s_wait (struct ev_loop *loop, const int *calls)
{
    for (int slice = 0; slice < 1000 && *calls == 0; slice++) {
        ev_timer t;
        ev_timer_init (&t, s_on_timeout, 0.01, 0);
        ev_timer_start (loop, &t);
        ev_run (loop, 0);
        ev_timer_stop (loop, &t);
    }
    assert_int_equal (*calls, 1);
}

static s_answer_t s_lookup (struct ev_loop *loop)
{
    s_answer_t a = {0};
    hms_resolve (loop, S_NAME, S_PORT, s_on_answer, &a);
    s_wait (loop, &a.calls);
    return a;
}

/* Rewrites /etc/hosts: the test's own copy, bind-mounted for this process (s_world). */
static void s_set_hosts (const char *text)
{
    FILE *f = fopen ("/etc/hosts", "w");
    assert_non_null (f);
    assert_int_equal (fputs (text, f) >= 0, 1);
    assert_int_equal (fclose (f), 0);
}

static int s_listen (const char *ip, int backlog)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    int one = 1;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons (S_PORT)};
    inet_pton (AF_INET, ip, &sa.sin_addr);
    assert_int_equal (bind (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal (listen (fd, backlog), 0);
    return fd;
}

/* A blocking connect to ip (to fill a listener's accept queue). */
static int s_connect (const char *ip)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons (S_PORT)};
    inet_pton (AF_INET, ip, &sa.sin_addr);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    return fd;
}

static void test_refused_addresses_are_skipped_and_put_last (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (60000, 2000, 64);
    s_answer_t before = s_lookup (loop);
    assert_int_equal (before.n, 3);
    for (int i = 0; i < 3; i++)
        snprintf (s_order[i], sizeof s_order[i], "%s", before.addrs[i]);
    /* only the last address has a listener: the first two refuse */
    int lfd = s_listen (s_order[2], 16);
    hms_resolve_stats_t st0;
    hms_resolve_stats (&st0);
    s_result_t r = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 2000, NULL, s_on_dialed, &r);
    s_wait (loop, &r.calls);
    assert_true (r.fd >= 0);
    assert_string_equal (r.addr, s_order[2]);
    close (r.fd);
    hms_resolve_stats_t st1;
    hms_resolve_stats (&st1);
    assert_int_equal (st1.demoted - st0.demoted, 2);
    /* the cache now gives the address that answered first */
    s_answer_t after = s_lookup (loop);
    assert_int_equal (after.n, 3);
    assert_string_equal (after.addrs[0], s_order[2]);
    /* and the next dial connects without a refusal on the way */
    s_result_t r2 = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 2000, NULL, s_on_dialed, &r2);
    s_wait (loop, &r2.calls);
    assert_true (r2.fd >= 0);
    assert_string_equal (r2.addr, s_order[2]);
    hms_resolve_stats_t st2;
    hms_resolve_stats (&st2);
    assert_int_equal (st2.demoted, st1.demoted);
    close (r2.fd);
    close (lfd);
    ev_loop_destroy (loop);
}

static void test_an_address_that_does_not_answer_is_raced (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (60000, 2000, 64); /* a fresh cache: the resolver's own order */
    /* the first address's listener has a full accept queue: its SYNs go unanswered */
    int full = s_listen (s_order[0], 0);
    int held[1], nheld = 0;
    for (; nheld < 1; nheld++)
        held[nheld] = s_connect (s_order[0]);
    int lfd = s_listen (s_order[1], 16);
    s_result_t r = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 5000, NULL, s_on_dialed, &r);
    s_wait (loop, &r.calls);
    assert_true (r.fd >= 0);
    assert_string_equal (r.addr, s_order[1]);
    close (r.fd);
    /* the silent one was outpaced: it goes last */
    s_answer_t after = s_lookup (loop);
    assert_string_equal (after.addrs[0], s_order[1]);
    assert_string_equal (after.addrs[2], s_order[0]);
    for (int i = 0; i < nheld; i++)
        close (held[i]);
    close (full);
    close (lfd);
    ev_loop_destroy (loop);
}

static void test_when_every_address_fails_the_reason_names_each (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    hms_resolve_config (60000, 2000, 64);
    s_lookup (loop);
    /* an answer younger than HMS_RESOLVE_FORGET_MS is kept whatever fails */
    s_result_t young = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 2000, NULL, s_on_dialed, &young);
    s_wait (loop, &young.calls);
    assert_int_equal (young.fd, -1);
    hms_resolve_stats_t st_young;
    hms_resolve_stats (&st_young);
    s_lookup (loop);
    hms_resolve_stats_t st_kept;
    hms_resolve_stats (&st_kept);
    assert_int_equal (st_kept.lookups, st_young.lookups);
    usleep ((HMS_RESOLVE_FORGET_MS + 100) * 1000);
    s_result_t r = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 2000, NULL, s_on_dialed, &r);
    s_wait (loop, &r.calls);
    assert_int_equal (r.fd, -1);
    char want[200];
    snprintf (want, sizeof want, "connect to %s:%d: ", S_NAME, S_PORT);
    assert_non_null (strstr (r.why, want));
    for (int i = 0; i < 3; i++) {
        snprintf (want, sizeof want, "%s:%d: Connection refused", s_order[i], S_PORT);
        assert_non_null (strstr (r.why, want));
    }
    /* the name's instances were replaced (new addresses): the next dial looks it up again
     * and reaches the new one, though the old answer had 60 s to live */
    int lfd = s_listen ("127.0.0.5", 16);
    s_set_hosts ("127.0.0.1 localhost\n127.0.0.5 " S_NAME "\n");
    hms_resolve_stats_t st0;
    hms_resolve_stats (&st0);
    s_result_t again = {0};
    hms_dial_start (loop, S_NAME, S_PORT, 2000, NULL, s_on_dialed, &again);
    s_wait (loop, &again.calls);
    assert_true (again.fd >= 0);
    assert_string_equal (again.addr, "127.0.0.5");
    close (again.fd);
    hms_resolve_stats_t st1;
    hms_resolve_stats (&st1);
    assert_int_equal (st1.lookups, st0.lookups + 1);
    s_set_hosts (s_hosts);
    close (lfd);
    /* an IP literal: one address, said as before */
    s_result_t one = {0};
    hms_dial_start (loop, "127.0.0.1", S_PORT, 2000, NULL, s_on_dialed, &one);
    s_wait (loop, &one.calls);
    assert_string_equal (one.why, "connect to 127.0.0.1:4433: Connection refused");
    ev_loop_destroy (loop);
}

static void test_a_dial_that_connects_at_once_needs_no_callback (void **state)
{
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    int lfd = s_listen ("127.0.0.1", 16);
    s_result_t r = {0};
    int fd_now = -1;
    hms_dial_t *d =
        hms_dial_start_now (loop, "127.0.0.1", S_PORT, 2000, NULL, s_on_dialed, &r, &fd_now);
    /* loopback: the handshake is over before the call returns */
    assert_null (d);
    assert_true (fd_now >= 0);
    ev_run (loop, EVRUN_NOWAIT);
    assert_int_equal (r.calls, 0);
    close (fd_now);
    close (lfd);
    ev_loop_destroy (loop);
}

/* Network and mount namespaces of the test's own, loopback up, and S_NAME in an /etc/hosts
 * seen by this process only. */
static int s_world (void)
{
    if (unshare (CLONE_NEWNET | CLONE_NEWNS) != 0) {
        fprintf (stderr, "test_hms_dial: needs namespaces of its own (root): unshare: %s\n",
                 strerror (errno));
        return -1;
    }
    if (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf (stderr, "test_hms_dial: mount --make-rprivate /: %s\n", strerror (errno));
        return -1;
    }
    int s = socket (AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr = {0};
    snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (s < 0 || ioctl (s, SIOCGIFFLAGS, &ifr) != 0 ||
        (ifr.ifr_flags |= IFF_UP, ioctl (s, SIOCSIFFLAGS, &ifr) != 0)) {
        fprintf (stderr, "test_hms_dial: cannot bring loopback up: %s\n", strerror (errno));
        return -1;
    }
    close (s);
    char path[] = "/tmp/hermes-test-hosts-XXXXXX";
    int fd = mkstemp (path);
    if (fd < 0)
        return -1;
    ssize_t n = write (fd, s_hosts, strlen (s_hosts));
    close (fd);
    int rc = n == (ssize_t) strlen (s_hosts) ? mount (path, "/etc/hosts", NULL, MS_BIND, NULL) : -1;
    if (rc != 0)
        fprintf (stderr, "test_hms_dial: bind-mount over /etc/hosts: %s\n", strerror (errno));
    unlink (path); /* the mount keeps it */
    return rc;
}

int main (void)
{
    if (s_world () != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_refused_addresses_are_skipped_and_put_last),
        cmocka_unit_test (test_an_address_that_does_not_answer_is_raced),
        cmocka_unit_test (test_when_every_address_fails_the_reason_names_each),
        cmocka_unit_test (test_a_dial_that_connects_at_once_needs_no_callback),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
