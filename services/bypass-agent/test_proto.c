/* test_proto: the bypass agent's socket protocol (bypass_proto) and the proxies' client
 * library (bypass_client) against a hand-driven agent end on a real Unix socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "bypass_client.h"
#include "bypass_proto.h"

static void test_offer_parses (void **state)
{
    const char *text = "{\"v\":1,\"op\":\"offer\",\"id\":\"c-42\",\"client\":\"192.0.2.2:40000\","
                       "\"server\":\"198.51.100.2:80\",\"policy_rule\":\"web\","
                       "\"already_relayed\":{\"up\":517,\"down\":1460}}";
    bypass_request_t req;
    char err[256];

    assert_int_equal (bypass_proto_parse_request (text, strlen (text), &req, err, sizeof err), 0);
    assert_int_equal (req.op, BYPASS_OP_OFFER);
    assert_string_equal (json_string_value (req.id), "c-42");
    assert_int_equal (ntohs (req.client.sin_port), 40000);
    assert_int_equal (req.server.sin_addr.s_addr, inet_addr ("198.51.100.2"));
    assert_string_equal (req.policy_rule, "web");
    assert_int_equal (req.relayed_up, 517);
    assert_int_equal (req.relayed_down, 1460);
    bypass_request_clear (&req);

    /* the brief form: no v, no op, numeric id, null rule */
    text = "{\"id\":7,\"client\":\"10.0.0.1:1\",\"server\":\"10.0.0.2:2\",\"policy_rule\":null}";
    assert_int_equal (bypass_proto_parse_request (text, strlen (text), &req, err, sizeof err), 0);
    assert_int_equal (json_integer_value (req.id), 7);
    assert_string_equal (req.policy_rule, "");
    bypass_request_clear (&req);

    text = "{\"op\":\"flows\",\"id\":\"q\"}";
    assert_int_equal (bypass_proto_parse_request (text, strlen (text), &req, err, sizeof err), 0);
    assert_int_equal (req.op, BYPASS_OP_FLOWS);
    bypass_request_clear (&req);
}

static void s_bad (const char *text, const char *expect)
{
    bypass_request_t req;
    char err[256] = "";

    assert_int_equal (bypass_proto_parse_request (text, strlen (text), &req, err, sizeof err), -1);
    if (!strstr (err, expect))
        fail_msg ("'%s': error '%s' lacks '%s'", text, err, expect);
    bypass_request_clear (&req);
}

static void test_bad_requests_are_refused_with_a_reason (void **state)
{
    s_bad ("not json", "not a JSON object");
    s_bad ("[1]", "not a JSON object");
    s_bad ("{\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", "'id'");
    s_bad ("{\"id\":\"\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", "'id'");
    s_bad ("{\"id\":-1,\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", "'id'");
    s_bad ("{\"id\":\"a\",\"client\":\"1.2.3.4\",\"server\":\"1.2.3.4:6\"}", "'client'");
    s_bad ("{\"id\":\"a\",\"client\":\"[::1]:5\",\"server\":\"1.2.3.4:6\"}", "'client'");
    s_bad ("{\"id\":\"a\",\"client\":\"1.2.3.4:0\",\"server\":\"1.2.3.4:6\"}", "'client'");
    s_bad ("{\"id\":\"a\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:70000\"}", "'server'");
    s_bad ("{\"id\":\"a\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\",\"colour\":1}",
           "unknown key 'colour'");
    s_bad ("{\"id\":\"a\",\"v\":2,\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}", "version");
    s_bad ("{\"id\":\"a\",\"op\":\"dance\"}", "'op'");
    s_bad ("{\"id\":\"a\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\","
           "\"already_relayed\":{\"up\":-3}}",
           "already_relayed");
    s_bad ("{\"id\":\"a\",\"id\":\"b\",\"client\":\"1.2.3.4:5\",\"server\":\"1.2.3.4:6\"}",
           "not a JSON object");
    {
        char big[5000];
        memset (big, ' ', sizeof big);
        big[0] = '{';
        big[sizeof big - 1] = '}';
        bypass_request_t req;
        char err[128];
        assert_int_equal (bypass_proto_parse_request (big, sizeof big, &req, err, sizeof err), -1);
        bypass_request_clear (&req);
    }
}

static void test_answer_round_trip_with_unsent_bytes (void **state)
{
    json_t *body = json_pack ("{s:s, s:s, s:s, s:{s:i, s:i}}", "id", "c-1", "result", "refused",
                              "reason", "busy", "relayed", "up", 10, "down", 20);
    uint8_t *msg;
    size_t len;
    bypass_answer_t ans;
    char err[128];

    bypass_proto_answer_encode (body, (const uint8_t *) "UP\0x", 4, (const uint8_t *) "down", 4,
                                &msg, &len);
    json_decref (body);
    assert_int_equal (bypass_proto_parse_answer (msg, len, &ans, err, sizeof err), 0);
    assert_string_equal (ans.id, "c-1");
    assert_string_equal (ans.result, "refused");
    assert_string_equal (ans.reason, "busy");
    assert_false (bypass_answer_accepted (&ans));
    assert_int_equal (ans.relayed_up, 10);
    assert_int_equal (ans.relayed_down, 20);
    assert_int_equal (ans.unsent_up_len, 4);
    assert_memory_equal (ans.unsent_up, "UP\0x", 4);
    assert_int_equal (ans.unsent_down_len, 4);
    assert_memory_equal (ans.unsent_down, "down", 4);
    bypass_answer_clear (&ans);
    /* a truncated tail is an error, not a short read */
    assert_int_equal (bypass_proto_parse_answer (msg, len - 1, &ans, err, sizeof err), -1);
    free (msg);
}

/* ---- the client library against a hand-driven agent end -------------------------------- */

typedef struct {
    char path[108];
    int lfd;
} agent_end_t;

static int s_agent_setup (void **state)
{
    static agent_end_t a;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    snprintf (a.path, sizeof a.path, "/tmp/test_bypass_proto.%d.sock", (int) getpid ());
    unlink (a.path);
    strcpy (sun.sun_path, a.path);
    a.lfd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal (bind (a.lfd, (struct sockaddr *) &sun, sizeof sun), 0);
    assert_int_equal (listen (a.lfd, 4), 0);
    *state = &a;
    return 0;
}

static int s_agent_teardown (void **state)
{
    agent_end_t *a = *state;

    close (a->lfd);
    unlink (a->path);
    return 0;
}

/* A connected loopback TCP pair: *a is the accepted end. */
static void s_tcp_pair (int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int l = socket (AF_INET, SOCK_STREAM, 0);

    assert_int_equal (bind (l, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal (listen (l, 1), 0);
    getsockname (l, (struct sockaddr *) &sa, &sl);
    *b = socket (AF_INET, SOCK_STREAM, 0);
    assert_int_equal (connect (*b, (struct sockaddr *) &sa, sizeof sa), 0);
    *a = accept (l, NULL, NULL);
    assert_true (*a >= 0);
    close (l);
}

static bool s_same_file (int a, int b)
{
    struct stat sa, sb;

    return fstat (a, &sa) == 0 && fstat (b, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

static void test_client_offers_and_reads_a_refusal (void **state)
{
    agent_end_t *a = *state;
    char err[256], buf[BYPASS_PROTO_MAX_HEADER + 1];
    bypass_client_t *client = bypass_client_new (a->path, err, sizeof err);
    int c1, c2, s1, s2, fds[2], nfds = 0, afd;
    bypass_request_t req;
    bypass_answer_t ans;
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    ssize_t n;

    assert_non_null (client);
    afd = accept (a->lfd, NULL, NULL);
    s_tcp_pair (&c1, &c2); /* c1: the proxy's client leg */
    s_tcp_pair (&s2, &s1); /* s1: the proxy's server leg (connected) */

    bypass_offer_t offer = {"c-9", c1, s1, "web", 100, 200};
    assert_int_equal (bypass_client_offer (client, &offer), 0);
    n = bypass_proto_recv (afd, buf, sizeof buf, fds, &nfds, 2);
    assert_true (n > 0);
    assert_int_equal (nfds, 2);
    assert_true (s_same_file (fds[0], c1) && s_same_file (fds[1], s1));
    assert_int_equal (bypass_proto_parse_request (buf, (size_t) n, &req, err, sizeof err), 0);
    getpeername (c1, (struct sockaddr *) &peer, &pl);
    assert_int_equal (req.client.sin_port, peer.sin_port);
    assert_int_equal (req.relayed_down, 200);
    assert_string_equal (req.policy_rule, "web");
    bypass_request_clear (&req);
    close (fds[0]);
    close (fds[1]);

    /* nothing yet */
    assert_int_equal (bypass_client_recv (client, &ans), 0);

    /* refused, with bytes the agent could not deliver */
    {
        json_t *body = json_pack ("{s:s, s:s, s:s, s:s}", "id", "c-9", "result", "refused",
                                  "reason", "busy", "detail", "never quiet");
        uint8_t *msg;
        size_t len;
        bypass_proto_answer_encode (body, (const uint8_t *) "abc", 3, NULL, 0, &msg, &len);
        json_decref (body);
        assert_int_equal (bypass_proto_send (afd, msg, len, NULL, 0), (ssize_t) len);
        free (msg);
    }
    assert_int_equal (bypass_client_recv (client, &ans), 1);
    assert_string_equal (ans.id, "c-9");
    assert_false (bypass_answer_accepted (&ans));
    assert_string_equal (ans.reason, "busy");
    assert_int_equal (ans.unsent_up_len, 3);
    assert_memory_equal (ans.unsent_up, "abc", 3);
    bypass_answer_clear (&ans);

    /* the proxy's sockets are untouched: it goes on relaying */
    assert_int_equal (send (c2, "x", 1, 0), 1);
    assert_int_equal (recv (c1, buf, 1, 0), 1);

    /* bad offers never reach the socket */
    bypass_offer_t bad = {"", c1, s1, NULL, 0, 0};
    assert_int_equal (bypass_client_offer (client, &bad), -1);
    assert_int_equal (errno, EINVAL);
    bypass_offer_t pipe_offer = {"p", 0, s1, NULL, 0, 0};
    assert_int_equal (bypass_client_offer (client, &pipe_offer), -1);

    /* the agent goes away: -1, every pending offer is refused */
    close (afd);
    assert_int_equal (bypass_client_recv (client, &ans), -1);
    bypass_client_destroy (&client);
    bypass_client_destroy (&client);
    close (c1);
    close (c2);
    close (s1);
    close (s2);
}

static void test_client_without_agent_fails_clearly (void **state)
{
    char err[256];

    assert_null (bypass_client_new ("/nonexistent/bypass.sock", err, sizeof err));
    assert_non_null (strstr (err, "is hermes-bypass running?"));
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_offer_parses),
        cmocka_unit_test (test_bad_requests_are_refused_with_a_reason),
        cmocka_unit_test (test_answer_round_trip_with_unsent_bytes),
        cmocka_unit_test_setup_teardown (test_client_offers_and_reads_a_refusal, s_agent_setup,
                                         s_agent_teardown),
        cmocka_unit_test (test_client_without_agent_fails_clearly),
    };

    return cmocka_run_group_tests (tests, NULL, NULL);
}
