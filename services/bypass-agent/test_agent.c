/* test_agent: the agent in-process (its worker thread, its socket, the real data plane) with
 * offers it must refuse, and what a refusal leaves the proxy with; the operator's view
 * (queries from the socket and from another thread); and the socket steps of an offload on
 * loopback sockets: silent disconnect in repair mode, port reservation.
 * Spliced transfers: integration-tests/bypass. Needs root (exits 77, skipped, otherwise). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "bypass_agent.h"
#include "bypass_client.h"
#include "bypass_leg.h"
#include "bypass_proto.h"

static char s_path[108];
static bypass_agent_t *s_agent;

static int s_setup (void **state)
{
    char err[256];
    bypass_agent_opts_t opts = {
        .socket_path = s_path,
        .idle_timeout_ms = 300000,
        .fin_linger_ms = 100,
        .drain_timeout_ms = 500,
        .offload_retries = 3,
        .max_flows = 64,
        .delay_step_ms = 0,
    };

    snprintf (s_path, sizeof s_path, "/tmp/test_bypass_agent.%d/run/agent.sock", (int) getpid ());
    s_agent = bypass_agent_new (&opts, err, sizeof err);
    if (!s_agent)
        fprintf (stderr, "test_agent: %s\n", err);
    return s_agent ? 0 : -1;
}

static int s_teardown (void **state)
{
    char dir[128];

    bypass_agent_destroy (&s_agent);
    assert_int_equal (access (s_path, F_OK), -1); /* removed */
    snprintf (dir, sizeof dir, "/tmp/test_bypass_agent.%d", (int) getpid ());
    char cmd[160];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    return system (cmd) == 0 ? 0 : -1;
}

static void s_tcp_pair (int *accepted, int *connected)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int l = socket (AF_INET, SOCK_STREAM, 0);

    assert_int_equal (bind (l, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal (listen (l, 1), 0);
    getsockname (l, (struct sockaddr *) &sa, &sl);
    *connected = socket (AF_INET, SOCK_STREAM, 0);
    assert_int_equal (connect (*connected, (struct sockaddr *) &sa, sizeof sa), 0);
    *accepted = accept (l, NULL, NULL);
    assert_true (*accepted >= 0);
    close (l);
}

static int s_wait_answer (bypass_client_t *client, bypass_answer_t *ans)
{
    for (int i = 0; i < 300; i++) {
        struct pollfd p = {bypass_client_fd (client), POLLIN, 0};
        int rc;
        poll (&p, 1, 10);
        rc = bypass_client_recv (client, ans);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* A proxy on loopback: the agent cannot splice loopback (no Ethernet), refuses with "route",
 * and the proxy's sockets carry on. */
static void test_loopback_offer_is_refused_and_the_proxy_carries_on (void **state)
{
    char err[256], buf[16];
    bypass_client_t *client = bypass_client_new (s_path, err, sizeof err);
    int c_end, p_cleg, p_sleg, s_end;
    bypass_answer_t ans;

    assert_non_null (client);
    s_tcp_pair (&p_cleg, &c_end);
    s_tcp_pair (&s_end, &p_sleg);
    bypass_offer_t offer = {"lo-1", p_cleg, p_sleg, NULL, 5, 5};
    assert_int_equal (bypass_client_offer (client, &offer), 0);
    assert_int_equal (s_wait_answer (client, &ans), 1);
    assert_string_equal (ans.id, "lo-1");
    assert_string_equal (ans.result, "refused");
    assert_string_equal (ans.reason, "route");
    assert_non_null (strstr (ans.detail, "loopback cannot be spliced"));
    assert_int_equal (ans.unsent_up_len + ans.unsent_down_len, 0);
    bypass_answer_clear (&ans);

    assert_int_equal (send (c_end, "ping", 4, 0), 4);
    assert_int_equal (recv (p_cleg, buf, 4, MSG_WAITALL), 4);
    assert_int_equal (send (p_sleg, buf, 4, 0), 4);
    assert_int_equal (recv (s_end, buf, 4, MSG_WAITALL), 4);
    assert_memory_equal (buf, "ping", 4);
    bypass_client_destroy (&client);
    close (c_end);
    close (p_cleg);
    close (p_sleg);
    close (s_end);
}

/* Raw protocol: sends text with fds and returns the answer's reason. */
static void s_raw (const char *text, const int *fds, int nfds, const char *result,
                   const char *reason)
{
    char err[256];
    bypass_client_t *client = bypass_client_new (s_path, err, sizeof err);
    bypass_answer_t ans;

    assert_non_null (client);
    assert_true (bypass_proto_send (bypass_client_fd (client), text, strlen (text), fds, nfds) > 0);
    assert_int_equal (s_wait_answer (client, &ans), 1);
    if (strcmp (ans.result, result) != 0 || strcmp (ans.reason, reason) != 0)
        fail_msg ("'%s': got %s/%s (%s), expected %s/%s", text, ans.result, ans.reason, ans.detail,
                  result, reason);
    bypass_answer_clear (&ans);
    bypass_client_destroy (&client);
}

static void test_bad_offers_are_refused_with_their_reason (void **state)
{
    int p[2], c_end, p_cleg, p_sleg, s_end;
    char text[512], peer_c[32], peer_s[32];
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;

    assert_int_equal (pipe (p), 0);
    s_raw ("{\"id\":\"x\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", p, 2, "refused",
           "not_tcp4");
    s_raw ("{\"id\":\"x\",\"client\":", p, 2, "refused", "malformed");
    s_raw ("{\"id\":\"x\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", p, 1, "refused",
           "malformed");
    s_raw ("{\"id\":\"x\",\"op\":\"dance\"}", NULL, 0, "error", "malformed");
    close (p[0]);
    close (p[1]);

    s_tcp_pair (&p_cleg, &c_end);
    s_tcp_pair (&s_end, &p_sleg);
    getpeername (p_sleg, (struct sockaddr *) &sa, &sl);
    bypass_proto_addr_str (&sa, peer_s, sizeof peer_s);
    snprintf (peer_c, sizeof peer_c, "127.0.0.1:1");
    snprintf (text, sizeof text, "{\"id\":\"m\",\"client\":\"%s\",\"server\":\"%s\"}", peer_c,
              peer_s);
    int legs[2] = {p_cleg, p_sleg};
    s_raw (text, legs, 2, "refused", "mismatch");
    /* legs swapped: the client leg is connected, the server leg accepted */
    close (c_end);
    close (p_cleg);
    close (p_sleg);
    close (s_end);

    /* a listening socket is not a connection */
    {
        int l = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in any = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
        int fds[2];
        bind (l, (struct sockaddr *) &any, sizeof any);
        listen (l, 1);
        fds[0] = fds[1] = l;
        s_raw ("{\"id\":\"l\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", fds, 2,
               "refused", "not_established");
        close (l);
    }
}

static void test_operator_view (void **state)
{
    char err[256];
    bypass_client_t *client = bypass_client_new (s_path, err, sizeof err);
    bypass_answer_t ans;
    json_t *stats, *flows;
    char *p4;

    assert_non_null (client);
    assert_int_equal (bypass_client_query (client, "flows", 2000, &ans), 1);
    assert_string_equal (ans.result, "ok");
    assert_true (json_is_array (json_object_get (ans.body, "flows")));
    stats = json_object_get (ans.body, "stats");
    assert_true (json_integer_value (json_object_get (stats, "bypass_offers")) >= 1);
    assert_true (json_integer_value (json_object_get (stats, "bypass_refused_route")) >= 1);
    assert_int_equal (json_integer_value (json_object_get (stats, "bypass_dataplane")), 1);
    bypass_answer_clear (&ans);
    assert_int_equal (bypass_client_query (client, "export_p4", 2000, &ans), 1);
    assert_string_equal (ans.result, "ok");
    bypass_answer_clear (&ans);
    bypass_client_destroy (&client);

    /* from another thread than the agent's worker, as the service thread does */
    stats = bypass_agent_stats (s_agent);
    assert_true (json_integer_value (json_object_get (stats, "bypass_refused")) >= 1);
    assert_true (json_object_size (stats) <= 256); /* heartbeat.v1: at most 256 counters */
    json_decref (stats);
    flows = bypass_agent_flows (s_agent);
    assert_non_null (flows);
    assert_int_equal (json_array_size (json_object_get (flows, "flows")), 0);
    json_decref (flows);
    p4 = bypass_agent_export_p4 (s_agent);
    assert_non_null (p4);
    free (p4);
    flows = bypass_agent_query (s_agent, "flows", err, sizeof err);
    assert_true (json_is_array (json_object_get (flows, "flows")));
    json_decref (flows);
    flows = bypass_agent_query (s_agent, "export_p4", err, sizeof err);
    assert_true (json_is_string (json_object_get (flows, "p4")));
    json_decref (flows);
    assert_null (bypass_agent_query (s_agent, "dance", err, sizeof err));
    assert_non_null (strstr (err, "unknown query"));
}

/* The socket steps of an offload on loopback: freeze, read, silent disconnect (the peer sees
 * nothing), reserve the port. */
static void test_leg_freeze_and_silent_disconnect (void **state)
{
    int a, b, r, unacked = -1, unread = -1;
    uint32_t snd, rcv, ts;
    bypass_leg_info_t info;
    const char *why;
    char detail[128], buf[8];
    struct tcp_info ti;
    socklen_t tl = sizeof ti;

    s_tcp_pair (&a, &b);
    r = 1; /* the proxy's SO_REUSEADDR survives the window probe's repair mode */
    setsockopt (a, SOL_SOCKET, SO_REUSEADDR, &r, sizeof r);
    assert_int_equal (send (b, "hi", 2, 0), 2);
    assert_int_equal (recv (a, buf, 2, MSG_WAITALL), 2);
    usleep (50000);
    assert_int_equal (bypass_leg_inspect (a, &info, &why, detail, sizeof detail), 0);
    assert_true (info.timestamps && info.sack);
    assert_int_equal (bypass_leg_queues (a, &unacked, &unread), 0);
    assert_int_equal (unacked, 0);
    assert_int_equal (unread, 0);
    assert_int_equal (bypass_leg_probe (a, info.reuseaddr), 0);
    {
        int reuse = -1;
        socklen_t rl = sizeof reuse;
        getsockopt (a, SOL_SOCKET, SO_REUSEADDR, &reuse, &rl);
        assert_int_equal (reuse, 1);
        assert_int_equal (info.reuseaddr, 1);
    }
    assert_int_equal (bypass_leg_freeze (a), 0);
    assert_int_equal (bypass_leg_seq (a, &snd, &rcv), 0);
    assert_int_equal (bypass_leg_clock (a, &ts), 0);
    assert_int_equal (bypass_leg_disconnect (a), 0);
    usleep (50000);
    /* b: still established, nothing to read, no error */
    assert_int_equal (getsockopt (b, IPPROTO_TCP, TCP_INFO, &ti, &tl), 0);
    assert_int_equal (ti.tcpi_state, TCP_ESTABLISHED);
    assert_int_equal (recv (b, buf, 1, MSG_DONTWAIT), -1);
    assert_int_equal (errno, EAGAIN);
    /* the port is free for the reservation */
    r = bypass_leg_reserve (&info.local);
    assert_true (r >= 0);
    /* and now taken */
    assert_int_equal (bypass_leg_reserve (&info.local), -1);
    assert_int_equal (errno, EADDRINUSE);
    close (r);
    close (a);
    close (b);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_loopback_offer_is_refused_and_the_proxy_carries_on),
        cmocka_unit_test (test_bad_offers_are_refused_with_their_reason),
        cmocka_unit_test (test_operator_view),
        cmocka_unit_test (test_leg_freeze_and_silent_disconnect),
    };

    if (geteuid () != 0) {
        fprintf (stderr, "test_agent: SKIPPED: TCP_REPAIR and BPF need root\n");
        return 77;
    }
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
