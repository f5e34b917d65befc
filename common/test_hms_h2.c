/* Unit tests of hms_h2: a real HTTP/2-over-TLS server and client on loopback in one libev
 * loop: CONNECT streams echo bytes under flow control, many streams share one connection,
 * a client without a certificate is refused, a reset reaches the other side, a draining
 * server finishes its streams (also one opened before its notice arrived) and closes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hms_h2.h"
#include "hms_net.h"
#include "hms_pki.h"
#include "hms_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    struct ev_loop *loop;
    char dir[64];
    hms_tls_ctx_t *server_ctx, *client_ctx, *anon_ctx;
    int lfd;
    ev_io accept_w;
    ev_timer deadline;
    hms_h2_conn_t *client;
    /* client-side results */
    int streams_wanted, streams_done, streams_failed;
    size_t bytes_per_stream;
    char closed_why[256];
    bool client_closed;
    uint32_t reset_seen;
    bool server_saw_reset;
    bool reset_on_headers;
    bool drain_on_headers; /* the server drains once the first stream is answered, and the
                            * client opens one more stream at once (before the notice) */
    bool drained;
    bool usable_at_close; /* hms_h2_conn_usable (client) as the last stream closed */
    hms_h2_conn_t *server;
    char server_why[256];
} s_world_t;

typedef struct {
    s_world_t *w;
    hms_h2_stream_t *s;
    size_t sent, received;
    bool ended;
} s_flow_t;

static uint8_t s_pattern (size_t i)
{
    return (uint8_t) ((i * 7 + 3) & 0xff);
}

/* ---- server: echo every CONNECT stream ------------------------------------------------- */

static void s_srv_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    hms_h2_stream_write (s, data, len); /* consumed once sent (on_sent) */
}

static void s_srv_sent (hms_h2_stream_t *s, size_t n, void *arg)
{
    hms_h2_stream_consume (s, n);
}

static void s_srv_end (hms_h2_stream_t *s, void *arg)
{
    hms_h2_stream_end (s);
}

static void s_srv_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_world_t *w = arg;
    if (code == NGHTTP2_CANCEL)
        w->server_saw_reset = true;
}

static void s_srv_request (hms_h2_stream_t *s, void *arg)
{
    static const hms_h2_stream_cbs_t cbs = {
        .on_data = s_srv_data, .on_sent = s_srv_sent, .on_end = s_srv_end, .on_close = s_srv_close};
    const char *method = hms_h2_stream_header (s, ":method");
    const char *authority = hms_h2_stream_header (s, ":authority");
    hms_h2_stream_set_cbs (s, &cbs, arg);
    if (!method || strcmp (method, "CONNECT") != 0 || !authority) {
        hms_h2_respond (s, 400, NULL, 0, false);
        return;
    }
    hms_h2_respond (s, 200, NULL, 0, true);
}

static void s_srv_closed (hms_h2_conn_t *c, const char *why, void *arg)
{
    s_world_t *w = arg;
    snprintf (w->server_why, sizeof w->server_why, "%s", why);
    w->server = NULL;
}

static void s_on_accept (struct ev_loop *loop, ev_io *w, int revents)
{
    s_world_t *world = w->data;
    int fd = hms_net_accept (world->lfd, NULL);
    if (fd < 0)
        return;
    hms_tls_t *tls = hms_tls_new (world->server_ctx, fd, NULL);
    static const hms_h2_conn_cbs_t cbs = {.on_request = s_srv_request, .on_closed = s_srv_closed};
    world->server = hms_h2_conn_new (loop, tls, true, &cbs, world);
}

/* ---- client ------------------------------------------------------------------------------ */

static void s_fill (s_flow_t *f)
{
    uint8_t buf[16384];
    while (f->sent < f->w->bytes_per_stream && hms_h2_stream_queued (f->s) < 128 * 1024) {
        size_t n = f->w->bytes_per_stream - f->sent;
        if (n > sizeof buf)
            n = sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = s_pattern (f->sent + i);
        hms_h2_stream_write (f->s, buf, n);
        f->sent += n;
    }
    if (f->sent == f->w->bytes_per_stream && !f->ended) {
        f->ended = true;
        hms_h2_stream_end (f->s);
    }
}

static hms_h2_stream_t *s_open (s_world_t *w, const char *authority);

static void s_cli_headers (hms_h2_stream_t *s, void *arg)
{
    s_flow_t *f = arg;
    if (f->w->drain_on_headers && !f->w->drained) {
        f->w->drained = true;
        hms_h2_conn_drain (f->w->server);
        s_open (f->w, "target.example:443");
    }
    if (f->w->reset_on_headers) {
        hms_h2_stream_reset (s, NGHTTP2_CANCEL);
        return;
    }
    if (hms_h2_stream_status (s) != 200) {
        f->w->streams_failed++;
        hms_h2_stream_reset (s, NGHTTP2_CANCEL);
        return;
    }
    s_fill (f);
}

static void s_cli_sent (hms_h2_stream_t *s, size_t n, void *arg)
{
    s_fill (arg);
}

static void s_cli_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_flow_t *f = arg;
    for (size_t i = 0; i < len; i++)
        if (data[i] != s_pattern (f->received + i)) {
            f->w->streams_failed++;
            hms_h2_stream_reset (s, NGHTTP2_INTERNAL_ERROR);
            return;
        }
    f->received += len;
    hms_h2_stream_consume (s, len);
}

static void s_cli_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_flow_t *f = arg;
    if (code == 0 && f->received == f->w->bytes_per_stream)
        f->w->streams_done++;
    else if (code != 0)
        f->w->reset_seen = code;
    if (f->w->drained && f->w->client)
        f->w->usable_at_close = hms_h2_conn_usable (f->w->client);
    if (f->w->streams_done + f->w->streams_failed >= f->w->streams_wanted || f->w->reset_on_headers)
        ev_break (f->w->loop, EVBREAK_ALL);
    free (f);
}

static const hms_h2_stream_cbs_t s_cli_cbs = {.on_headers = s_cli_headers,
                                              .on_data = s_cli_data,
                                              .on_sent = s_cli_sent,
                                              .on_close = s_cli_close};

static hms_h2_stream_t *s_open (s_world_t *w, const char *authority)
{
    nghttp2_nv nva[] = {
        {(uint8_t *) ":method", (uint8_t *) "CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *) ":authority", (uint8_t *) authority, 10, strlen (authority),
         NGHTTP2_NV_FLAG_NONE},
    };
    s_flow_t *f = calloc (1, sizeof *f);
    f->w = w;
    f->s = hms_h2_request (w->client, nva, 2, true, &s_cli_cbs, f);
    assert_non_null (f->s);
    return f->s;
}

static void s_cli_ready (hms_h2_conn_t *c, void *arg)
{
    s_world_t *w = arg;
    for (int i = w->drain_on_headers ? 1 : 0; i < w->streams_wanted; i++)
        s_open (w, "target.example:443");
}

static void s_cli_closed (hms_h2_conn_t *c, const char *why, void *arg)
{
    s_world_t *w = arg;
    w->client_closed = true;
    snprintf (w->closed_why, sizeof w->closed_why, "%s", why);
    w->client = NULL;
    ev_break (w->loop, EVBREAK_ALL);
}

static void s_on_deadline (struct ev_loop *loop, ev_timer *t, int revents)
{
    ev_break (loop, EVBREAK_ALL);
}

static void s_connect (s_world_t *w, hms_tls_ctx_t *ctx)
{
    hms_addr_t addr;
    hms_addr_from ("127.0.0.1", hms_net_local_port (w->lfd), &addr);
    int fd = hms_net_connect (&addr);
    assert_true (fd >= 0);
    hms_tls_t *tls = hms_tls_new (ctx, fd, "relay");
    static const hms_h2_conn_cbs_t cbs = {.on_ready = s_cli_ready, .on_closed = s_cli_closed};
    w->client = hms_h2_conn_new (w->loop, tls, false, &cbs, w);
}

static void s_run (s_world_t *w, double seconds)
{
    ev_timer_init (&w->deadline, s_on_deadline, seconds, 0);
    ev_timer_start (w->loop, &w->deadline);
    ev_run (w->loop, 0);
    ev_timer_stop (w->loop, &w->deadline);
}

static int s_setup (void **state)
{
    s_world_t *w = calloc (1, sizeof *w);
    snprintf (w->dir, sizeof w->dir, "/tmp/hms-h2-XXXXXX");
    assert_non_null (mkdtemp (w->dir));
    char err[512];
    const char *names[] = {"relay", "ingress", NULL};
    assert_int_equal (hms_pki_generate (w->dir, names, NULL, err, sizeof err), 0);
    char ca[128], rc[128], rk[128], ic[128], ik[128];
    snprintf (ca, sizeof ca, "%s/ca.crt", w->dir);
    snprintf (rc, sizeof rc, "%s/relay.crt", w->dir);
    snprintf (rk, sizeof rk, "%s/relay.key", w->dir);
    snprintf (ic, sizeof ic, "%s/ingress.crt", w->dir);
    snprintf (ik, sizeof ik, "%s/ingress.key", w->dir);
    hms_tls_opts_t so = {.ca_file = ca,
                         .cert_file = rc,
                         .key_file = rk,
                         .server = true,
                         .require_peer_cert = true,
                         .alpn = "h2",
                         .tls13_only = true};
    hms_tls_opts_t co = {
        .ca_file = ca, .cert_file = ic, .key_file = ik, .alpn = "h2", .tls13_only = true};
    hms_tls_opts_t ao = {.ca_file = ca, .alpn = "h2", .tls13_only = true};
    w->server_ctx = hms_tls_ctx_new (&so, err, sizeof err);
    w->client_ctx = hms_tls_ctx_new (&co, err, sizeof err);
    w->anon_ctx = hms_tls_ctx_new (&ao, err, sizeof err);
    assert_non_null (w->server_ctx);
    assert_non_null (w->client_ctx);
    assert_non_null (w->anon_ctx);
    w->loop = ev_loop_new (EVFLAG_AUTO);
    hms_addr_t addr;
    hms_addr_from ("127.0.0.1", 0, &addr);
    w->lfd = hms_net_listen (&addr, 64, err, sizeof err);
    assert_true (w->lfd >= 0);
    ev_io_init (&w->accept_w, s_on_accept, w->lfd, EV_READ);
    w->accept_w.data = w;
    ev_io_start (w->loop, &w->accept_w);
    *state = w;
    return 0;
}

static int s_teardown (void **state)
{
    s_world_t *w = *state;
    if (w->client) {
        hms_h2_conn_close (w->client, "test over");
        s_run (w, 2);
    }
    /* let the server side notice and free its connections */
    ev_timer t;
    ev_timer_init (&t, s_on_deadline, 0.2, 0);
    ev_timer_start (w->loop, &t);
    ev_run (w->loop, 0);
    ev_io_stop (w->loop, &w->accept_w);
    close (w->lfd);
    ev_loop_destroy (w->loop);
    hms_tls_ctx_destroy (&w->server_ctx);
    hms_tls_ctx_destroy (&w->client_ctx);
    hms_tls_ctx_destroy (&w->anon_ctx);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", w->dir);
    assert_int_equal (system (cmd), 0);
    free (w);
    return 0;
}

static void test_one_stream_echoes_4_mib (void **state)
{
    s_world_t *w = *state;
    w->streams_wanted = 1;
    w->bytes_per_stream = 4 * 1024 * 1024;
    s_connect (w, w->client_ctx);
    s_run (w, 20);
    assert_int_equal (w->streams_failed, 0);
    assert_int_equal (w->streams_done, 1);
    assert_non_null (w->client);
    assert_string_equal (hms_h2_conn_peer (w->client), "relay");
}

static void test_many_streams_share_one_connection (void **state)
{
    s_world_t *w = *state;
    w->streams_wanted = 200;
    w->bytes_per_stream = 64 * 1024;
    s_connect (w, w->client_ctx);
    s_run (w, 30);
    assert_int_equal (w->streams_failed, 0);
    assert_int_equal (w->streams_done, 200);
}

static void test_client_without_certificate_is_refused (void **state)
{
    s_world_t *w = *state;
    w->streams_wanted = 1;
    w->bytes_per_stream = 10;
    s_connect (w, w->anon_ctx);
    s_run (w, 10);
    assert_true (w->client_closed);
    assert_int_equal (w->streams_done, 0);
    assert_non_null (strstr (w->closed_why, "TLS"));
}

static void test_reset_reaches_the_server (void **state)
{
    s_world_t *w = *state;
    w->streams_wanted = 1;
    w->bytes_per_stream = 1 << 20;
    w->reset_on_headers = true; /* once the server answered 200 */
    s_connect (w, w->client_ctx);
    s_run (w, 5);
    assert_int_equal (w->reset_seen, NGHTTP2_CANCEL);
    /* the server learns of it too */
    ev_timer t;
    ev_timer_init (&t, s_on_deadline, 0.3, 0);
    ev_timer_start (w->loop, &t);
    ev_run (w->loop, 0);
    assert_true (w->server_saw_reset);
}

static void test_a_draining_server_finishes_its_streams_and_closes (void **state)
{
    s_world_t *w = *state;
    w->streams_wanted = 2;
    w->bytes_per_stream = 1 << 20;
    w->drain_on_headers = true;
    s_connect (w, w->client_ctx);
    s_run (w, 20);
    /* both streams done: the one open at the drain, and the one opened before the client
     * heard the notice (the final GOAWAY, a round trip later, still counts it) */
    assert_true (w->drained);
    assert_int_equal (w->streams_failed, 0);
    assert_int_equal (w->streams_done, 2);
    assert_false (w->usable_at_close); /* the notice came: no new streams on it */
    /* with nothing open, the connection ends (after the final GOAWAY at the latest) */
    if (!w->client_closed)
        s_run (w, 3);
    assert_true (w->client_closed);
    assert_string_equal (w->closed_why, "peer sent GOAWAY");
    for (int i = 0; i < 30 && !w->server_why[0]; i++)
        s_run (w, 0.1); /* the server hears the client's close, or ends after its GOAWAY */
    /* whichever end saw the last stream end first closed it */
    assert_true (strcmp (w->server_why, "drained") == 0 ||
                 strcmp (w->server_why, "peer closed the connection") == 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_one_stream_echoes_4_mib, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_many_streams_share_one_connection, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_client_without_certificate_is_refused, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_reset_reaches_the_server, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_a_draining_server_finishes_its_streams_and_closes,
                                         s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
