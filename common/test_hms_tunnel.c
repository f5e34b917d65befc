/* Unit tests of hms_tunnel between two real TCP connections on loopback, with and without
 * splice(2): bytes arrive exact both ways after a queued preface, half-closes pass through
 * (the target answers only after the client's EOF), a reader that stops reading stops
 * the writer within the tunnel's bound, without the tunnel spinning meanwhile, and a held
 * preface leaves with the target's first answer (or after the hold, or at its EOF). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hms_tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char s_preface[] = "HTTP/1.1 200 Connection established\r\n\r\n";

static uint8_t s_byte (uint64_t i, int salt)
{
    return (uint8_t) ((i * 131 + (i >> 9) + (uint64_t) salt) & 0xff);
}

/* A connected pair of loopback TCP sockets. */
static void s_tcp_pair (int *one, int *two)
{
    int l = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal (bind (l, (struct sockaddr *) &a, sizeof a), 0);
    assert_int_equal (listen (l, 1), 0);
    assert_int_equal (getsockname (l, (struct sockaddr *) &a, &len), 0);
    *one = socket (AF_INET, SOCK_STREAM, 0);
    assert_int_equal (connect (*one, (struct sockaddr *) &a, sizeof a), 0);
    *two = accept (l, NULL, NULL);
    assert_true (*two >= 0);
    close (l);
}

/* ---- the tunnel, on its own thread and loop -------------------------------------------- */

typedef struct {
    int a_fd, b_fd;
    bool splice;
    int hold_ms; /* > 0: the preface waits for the target's first bytes (hms_tunnel_hold) */
    bool done;
    char why[256];
    uint64_t a_to_b, b_to_a;
    pthread_t thread;
} s_tun_t;

static void s_done (hms_tunnel_t *t, const char *why, uint64_t a_to_b, uint64_t b_to_a, void *arg)
{
    s_tun_t *x = arg;
    x->done = true;
    snprintf (x->why, sizeof x->why, "%s", why ? why : "");
    x->a_to_b = a_to_b;
    x->b_to_a = b_to_a;
}

static void *s_tun_main (void *arg)
{
    s_tun_t *x = arg;
    struct ev_loop *loop = ev_loop_new (EVFLAG_AUTO);
    fcntl (x->a_fd, F_SETFL, O_NONBLOCK);
    fcntl (x->b_fd, F_SETFL, O_NONBLOCK);
    hms_tunnel_t *t = hms_tunnel_new (loop, 20000, s_done, x);
    hms_tunnel_splice (t, x->splice);
    if (x->hold_ms) { /* as the ingress does for a client that sent bytes with its CONNECT */
        hms_tunnel_send (t, HMS_TUNNEL_A, s_preface, sizeof s_preface - 1);
        hms_tunnel_hold (t, HMS_TUNNEL_A, x->hold_ms);
        hms_tunnel_attach_fd (t, HMS_TUNNEL_A, x->a_fd);
    } else {
        hms_tunnel_attach_fd (t, HMS_TUNNEL_A, x->a_fd);
        hms_tunnel_send (t, HMS_TUNNEL_A, s_preface, sizeof s_preface - 1);
    }
    hms_tunnel_attach_fd (t, HMS_TUNNEL_B, x->b_fd);
    while (!x->done)
        ev_run (loop, EVRUN_ONCE);
    ev_loop_destroy (loop);
    return NULL;
}

/* client and target are the peers' ends */
static void s_tun_start_hold (s_tun_t *x, bool splice, int hold_ms, int *client, int *target)
{
    memset (x, 0, sizeof *x);
    x->splice = splice;
    x->hold_ms = hold_ms;
    s_tcp_pair (client, &x->a_fd);
    s_tcp_pair (&x->b_fd, target);
    assert_int_equal (pthread_create (&x->thread, NULL, s_tun_main, x), 0);
}

static void s_tun_start (s_tun_t *x, bool splice, int *client, int *target)
{
    s_tun_start_hold (x, splice, 0, client, target);
}

/* ---- peers --------------------------------------------------------------------------- */

typedef struct {
    int fd;
    uint64_t n;
    int salt;
    int wait_eof_fd; /* >= 0: write only after reading EOF here (a target answering late) */
    uint64_t got;    /* for readers: bytes that matched */
    size_t skip;     /* for readers: a preface expected first */
    bool ok;
} s_peer_t;

static void *s_writer (void *arg)
{
    s_peer_t *p = arg;
    uint8_t buf[65536];
    p->ok = true;
    for (uint64_t off = 0; off < p->n;) {
        size_t len = p->n - off < sizeof buf ? (size_t) (p->n - off) : sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = s_byte (off + i, p->salt);
        ssize_t w = write (p->fd, buf, len);
        if (w <= 0) {
            p->ok = false;
            return NULL;
        }
        off += (uint64_t) w;
    }
    shutdown (p->fd, SHUT_WR);
    return NULL;
}

static void *s_reader (void *arg)
{
    s_peer_t *p = arg;
    uint8_t buf[65536];
    p->ok = true;
    for (;;) {
        ssize_t r = read (p->fd, buf, sizeof buf);
        if (r <= 0) {
            p->ok = p->ok && r == 0;
            return NULL;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (p->skip < sizeof s_preface - 1) {
                p->ok = p->ok && buf[i] == (uint8_t) s_preface[p->skip];
                p->skip++;
                continue;
            }
            p->ok = p->ok && buf[i] == s_byte (p->got, p->salt);
            p->got++;
        }
    }
}

/* The target reads the client's bytes to EOF, then answers. */
static void *s_late_target (void *arg)
{
    s_peer_t *p = arg;
    s_peer_t in = {.fd = p->fd, .salt = 1, .skip = sizeof s_preface - 1};
    s_reader (&in);
    p->got = in.got;
    bool read_ok = in.ok;
    s_writer (p);
    p->ok = p->ok && read_ok;
    return NULL;
}

static void s_exact_both_ways (bool splice, bool late)
{
    s_tun_t x;
    int client, target;
    s_tun_start (&x, splice, &client, &target);
    const uint64_t up = 24u << 20, down = 40u << 20;
    s_peer_t cw = {.fd = client, .n = up, .salt = 1};
    s_peer_t cr = {.fd = client, .salt = 2};
    s_peer_t tw = {.fd = target, .n = down, .salt = 2};
    s_peer_t tr = {.fd = target, .salt = 1, .skip = sizeof s_preface - 1};
    pthread_t t1, t2, t3, t4 = 0;
    pthread_create (&t1, NULL, s_writer, &cw);
    pthread_create (&t2, NULL, s_reader, &cr);
    if (late)
        pthread_create (&t3, NULL, s_late_target, &tw);
    else {
        pthread_create (&t3, NULL, s_writer, &tw);
        pthread_create (&t4, NULL, s_reader, &tr);
    }
    pthread_join (t1, NULL);
    pthread_join (t2, NULL);
    pthread_join (t3, NULL);
    if (!late)
        pthread_join (t4, NULL);
    pthread_join (x.thread, NULL);
    assert_true (cw.ok && tw.ok);
    assert_true (cr.ok);
    assert_int_equal (cr.got, down);
    if (late)
        assert_int_equal (tw.got, up);
    else {
        assert_true (tr.ok);
        assert_int_equal (tr.got, up);
    }
    assert_string_equal (x.why, "");
    assert_int_equal (x.a_to_b, up);
    assert_int_equal (x.b_to_a, down + sizeof s_preface - 1);
    close (client);
    close (target);
}

static void test_exact_with_splice (void **state)
{
    s_exact_both_ways (true, false);
}

static void test_exact_through_user_space (void **state)
{
    s_exact_both_ways (false, false);
}

static void test_half_close_with_splice (void **state)
{
    s_exact_both_ways (true, true);
}

static void test_half_close_through_user_space (void **state)
{
    s_exact_both_ways (false, true);
}

static int s_sockopt (int fd, int opt)
{
    int v = 0;
    socklen_t len = sizeof v;
    getsockopt (fd, SOL_SOCKET, opt, &v, &len);
    return v;
}

static double s_thread_cpu_s (pthread_t t)
{
    clockid_t id;
    struct timespec ts;
    pthread_getcpuclockid (t, &id);
    clock_gettime (id, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The target stops reading: the client's writes stall once the kernel's buffers and the
 * tunnel's bounded queue are full; the tunnel thread sleeps meanwhile; then all arrives. */
static void s_backpressure (bool splice)
{
    s_tun_t x;
    int client, target;
    s_tun_start (&x, splice, &client, &target);
    fcntl (client, F_SETFL, O_NONBLOCK);
    uint8_t buf[65536];
    uint64_t sent = 0;
    int quiet_ms = 0;
    while (quiet_ms < 300 && sent < (1u << 30)) {
        size_t len = sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = s_byte (sent + i, 1);
        ssize_t w = write (client, buf, len);
        if (w > 0) {
            sent += (uint64_t) w;
            quiet_ms = 0;
        } else {
            assert_true (errno == EAGAIN);
            usleep (10000);
            quiet_ms += 10;
        }
    }
    /* what the kernel can hold on the way, plus the tunnel's own bound */
    uint64_t room = (uint64_t) s_sockopt (client, SO_SNDBUF) + s_sockopt (x.a_fd, SO_RCVBUF) +
                    s_sockopt (x.b_fd, SO_SNDBUF) + s_sockopt (target, SO_RCVBUF) +
                    HMS_TUNNEL_QUEUE_MAX;
    fprintf (stderr, "stalled after %llu bytes (kernel + tunnel room %llu)\n",
             (unsigned long long) sent, (unsigned long long) room);
    assert_true (sent < room);
    double cpu0 = s_thread_cpu_s (x.thread);
    usleep (300000);
    double spent = s_thread_cpu_s (x.thread) - cpu0;
    fprintf (stderr, "tunnel thread CPU while stalled: %.1f ms of 300\n", spent * 1000);
    assert_true (spent < 0.03);
    fcntl (client, F_SETFL, 0);
    shutdown (client, SHUT_WR);
    s_peer_t tr = {.fd = target, .salt = 1, .skip = sizeof s_preface - 1};
    s_peer_t tw = {.fd = target, .n = 0, .salt = 2};
    s_reader (&tr);
    s_writer (&tw);
    s_peer_t cr = {.fd = client, .salt = 2};
    s_reader (&cr);
    pthread_join (x.thread, NULL);
    assert_true (tr.ok && cr.ok);
    assert_int_equal (tr.got, sent);
    assert_int_equal (x.a_to_b, sent);
    assert_string_equal (x.why, "");
    close (client);
    close (target);
}

static void test_backpressure_with_splice (void **state)
{
    s_backpressure (true);
}

static void test_backpressure_through_user_space (void **state)
{
    s_backpressure (false);
}

/* ---- a held preface -------------------------------------------------------------------- */

static int64_t s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether fd has something to read within ms. */
static bool s_readable_within (int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    fd_set rf;
    FD_ZERO (&rf);
    FD_SET (fd, &rf);
    return select (fd + 1, &rf, NULL, NULL, &tv) > 0;
}

/* The held preface reaches the client together with the target's first answer, in one
 * read: nothing arrives before the target speaks. */
static void test_held_preface_leaves_with_the_answer (void **state)
{
    s_tun_t x;
    int client, target;
    s_tun_start_hold (&x, false, 2000, &client, &target);
    assert_false (s_readable_within (client, 100)); /* held: the target said nothing yet */
    assert_int_equal (write (target, "answer", 6), 6);
    char buf[256];
    size_t want = sizeof s_preface - 1 + 6, got = 0;
    assert_true (s_readable_within (client, 2000));
    usleep (20000); /* had they left apart, both would be here by now as well */
    ssize_t n = recv (client, buf, sizeof buf, MSG_DONTWAIT);
    assert_true (n > 0);
    got = (size_t) n;
    assert_int_equal (got, want);
    assert_memory_equal (buf, s_preface, sizeof s_preface - 1);
    assert_memory_equal (buf + sizeof s_preface - 1, "answer", 6);
    close (client);
    close (target);
    pthread_join (x.thread, NULL);
}

/* A target that says nothing: the preface leaves after the hold, not later. */
static void test_held_preface_leaves_after_the_hold (void **state)
{
    s_tun_t x;
    int client, target;
    int64_t t0 = s_now_ms ();
    s_tun_start_hold (&x, false, 150, &client, &target);
    char buf[256];
    assert_true (s_readable_within (client, 2000));
    int64_t waited = s_now_ms () - t0;
    assert_true (waited >= 140);
    assert_true (waited < 1500);
    assert_int_equal (recv (client, buf, sizeof buf, 0), (ssize_t) (sizeof s_preface - 1));
    close (client);
    close (target);
    pthread_join (x.thread, NULL);
}

/* A target that closes at once: the preface, then the EOF, without waiting for the hold. */
static void test_held_preface_leaves_at_the_targets_eof (void **state)
{
    s_tun_t x;
    int client, target;
    int64_t t0 = s_now_ms ();
    s_tun_start_hold (&x, false, 5000, &client, &target);
    shutdown (target, SHUT_WR);
    char buf[256];
    size_t got = 0;
    for (;;) {
        assert_true (s_readable_within (client, 3000));
        ssize_t n = recv (client, buf + got, sizeof buf - got, 0);
        assert_true (n >= 0);
        if (n == 0)
            break;
        got += (size_t) n;
    }
    assert_true (s_now_ms () - t0 < 2000);
    assert_int_equal (got, sizeof s_preface - 1);
    close (client);
    close (target);
    pthread_join (x.thread, NULL);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_exact_with_splice),
        cmocka_unit_test (test_exact_through_user_space),
        cmocka_unit_test (test_half_close_with_splice),
        cmocka_unit_test (test_half_close_through_user_space),
        cmocka_unit_test (test_backpressure_with_splice),
        cmocka_unit_test (test_backpressure_through_user_space),
        cmocka_unit_test (test_held_preface_leaves_with_the_answer),
        cmocka_unit_test (test_held_preface_leaves_after_the_hold),
        cmocka_unit_test (test_held_preface_leaves_at_the_targets_eof),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
