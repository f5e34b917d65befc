/* ingress_flow: one flow from decision to tunnel: ask the policy engine, then connect
 * direct or through the overlay, answer the client in its front end's protocol, and pump.
 * When the decision depends on the TLS server name (a policy with an sni condition), the
 * client's ClientHello is read first (a CONNECT client is answered 200 to send it) and the
 * engine asked again with the name. */
#include "hms_alloc.h"
#include "hms_dial.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "hms_routes.h"
#include "hms_sni.h"
#include "hms_soon.h"
#include "hms_tunnel.h"
#include "ingress_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a pipelining client's 200 waits for the target's first bytes to go with. Such
 * a client sent its bytes without waiting, so it needs the 200 only with the answer; sent
 * alone it costs the client one more wake-up. Long enough for a target's first answer under
 * a burst of 1000 new flows on this machine kind (up to about 180 ms), short enough for a
 * target that waits for more before it answers. */
#define S_HOLD_200_MS 250

typedef struct {
    ingress_worker_t *w;
    ingress_front_t front;
    int client_fd;
    hms_h2_stream_t *client_stream;
    hms_tunnel_t *tunnel; /* created when the client is a stream, or once connected */
    ingress_ask_t ask;
    hms_dial_t *dial;
    hms_pool_req_t *pool_req;
    hms_h2_stream_t *out; /* to the first relay, until it answers */
    char peer[64];
    char host[256];
    uint16_t port;
    char target[300]; /* host:port actually connected (after a policy rewrite) */
    char dst_ip[64];  /* the address of a name that the policy was asked with, if it was */
    char user[128];
    char dest[64]; /* exit node, when through the overlay */
    char rule[65];
    void *early;
    size_t early_len;
    uint64_t early_sent;     /* sent to the first relay with the CONNECT, before its answer */
    hms_worker_item_t *item; /* closed if the worker stops first */
    bool bypass;             /* the policy lets the bypass agent take this flow */
    bool offered;            /* an offer awaits the agent's answer */
    int bypass_tries;
    ev_timer bypass_timer;
    char id[32];
    /* the TLS server name, when the decision depends on it */
    char sni[256];
    bool sni_read;  /* the ClientHello was looked at: the engine is asked with what it said */
    bool tls_hello; /* ... and it was one: the client waits for the server's hello */
    bool answered;  /* the client got its 200 before the decision (to send its ClientHello) */
    bool ended;     /* an HTTP/2 client ended its stream before it was attached */
    ev_io sni_io;   /* a socket client's ClientHello */
    ev_timer sni_timer;
    bool retried;     /* its CONNECT to the first relay was sent again once */
    hms_soon_t again; /* ... at the end of this loop turn */
} s_flow_t;

static uint64_t s_next_id;

/* A TLS client answered 200 already, whose ClientHello was read and which now waits for the
 * server's hello, is refused in TLS's own terms: a fatal alert in the clear (RFC 8446 6.2),
 * access_denied for a deny, internal_error for a target that could not be reached. */
static const uint8_t *s_tls_alert (int status)
{
    static const uint8_t denied[7] = {21, 3, 3, 0, 2, 2, 49};
    static const uint8_t failed[7] = {21, 3, 3, 0, 2, 2, 80};
    return status == 403 ? denied : failed;
}
#define S_TLS_ALERT_LEN 7

/* An HTTP/2 client's stream that no tunnel took: answered status (unless it was answered
 * 200 already: then a TLS alert if the client waits for a server hello, else a reset; status
 * 0 resets), its held bytes given back to its window. */
static void s_let_go_of_stream (s_flow_t *f, int status, const char *why)
{
    hms_h2_stream_t *s = f->client_stream;
    if (!s)
        return;
    f->client_stream = NULL;
    hms_h2_stream_orphan (s);
    if (f->early_len)
        hms_h2_stream_consume (s, f->early_len);
    if (status && !f->answered) {
        if (hms_h2_refuse (s, status, why) != 0)
            hms_h2_stream_reset (s, NGHTTP2_INTERNAL_ERROR);
    } else if (status && f->tls_hello) {
        hms_h2_stream_write (s, s_tls_alert (status), S_TLS_ALERT_LEN);
        hms_h2_stream_end (s);
    } else
        hms_h2_stream_reset (s, f->answered ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL);
}

/* Bytes held for the client were passed on: an HTTP/2 client's window gets them back. */
static void s_early_passed (s_flow_t *f, hms_h2_stream_t *client, size_t n)
{
    if (f->front == INGRESS_FRONT_H2 && client && n)
        hms_h2_stream_consume (client, n);
}

static void s_free (s_flow_t *f)
{
    s_let_go_of_stream (f, 0, NULL);
    hms_worker_untrack (f->w->worker, f->item);
    ev_timer_stop (f->w->loop, &f->bypass_timer);
    ev_io_stop (f->w->loop, &f->sni_io);
    ev_timer_stop (f->w->loop, &f->sni_timer);
    hms_soon_stop (f->w->loop, &f->again);
    if (f->offered)
        ingress_bypass_forget (f->w, f);
    ingress_ask_cancel (&f->ask);
    if (f->dial)
        hms_dial_cancel (f->dial);
    if (f->pool_req)
        hms_pool_cancel (f->pool_req);
    if (f->out) {
        hms_h2_stream_orphan (f->out);
        hms_h2_stream_reset (f->out, NGHTTP2_CANCEL);
    }
    if (f->client_fd >= 0)
        close (f->client_fd);
    free (f->early);
    free (f);
}

static void s_tunnel_done (hms_tunnel_t *t, const char *why, uint64_t a_to_b, uint64_t b_to_a,
                           void *arg)
{
    s_flow_t *f = arg;
    f->tunnel = NULL;
    hms_access ("flow done client=%s target=%s via=%s up=%" PRIu64 " down=%" PRIu64 " %s%s",
                f->peer, f->target, f->dest[0] ? f->dest : "direct", a_to_b + f->early_sent, b_to_a,
                why ? "why=" : "clean", why ? why : "");
    s_free (f);
}

/* Answers the client with an error in its protocol and ends the flow. */
static void s_refuse (s_flow_t *f, int status, const char *why)
{
    ingress_counters_t *c = &f->w->ingress->counters;
    if (status == 403)
        atomic_fetch_add (&c->denied, 1);
    else
        atomic_fetch_add (&c->failed, 1);
    if (status == 403)
        hms_info ("denied client=%s target=%s%s%s rule=%s why=\"%s\"", f->peer, f->target,
                  f->sni[0] ? " sni=" : "", f->sni, f->rule[0] ? f->rule : "-", why);
    else
        hms_info ("flow failed client=%s target=%s via=%s status=%d why=\"%s\"", f->peer, f->target,
                  f->dest[0] ? f->dest : "direct", status, why);
    if (f->front == INGRESS_FRONT_H2 && f->tunnel) {
        hms_tunnel_refuse (f->tunnel, status, why); /* frees the flow (done) */
        return;
    }
    if (f->front == INGRESS_FRONT_H2) {
        s_let_go_of_stream (f, status, why);
        s_free (f);
        return;
    }
    if (f->front == INGRESS_FRONT_H1 && f->client_fd >= 0 && !f->answered) {
        char resp[1024];
        ssize_t n = hms_h1_error_response (resp, sizeof resp, status, why);
        if (n > 0 && send (f->client_fd, resp, (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            hms_debug ("ingress.flows", "could not send %d to %s: %s", status, f->peer,
                       strerror (errno));
    } else if (f->client_fd >= 0 && f->tls_hello && !f->tunnel) {
        if (send (f->client_fd, s_tls_alert (status), S_TLS_ALERT_LEN,
                  MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            hms_debug ("ingress.flows", "could not send a TLS alert to %s: %s", f->peer,
                       strerror (errno));
    } else if (f->client_fd >= 0) { /* transparent, or answered 200 already */
        struct linger lg = {1, 0};  /* the client sees a reset, as from the target */
        setsockopt (f->client_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (f->tunnel)
        hms_tunnel_abort (f->tunnel, why); /* frees the flow (done) */
    else
        s_free (f);
}

/* The upstream end is ready: tell the client, and pump. */
static void s_established (s_flow_t *f)
{
    if (!f->tunnel)
        f->tunnel = hms_tunnel_new (f->w->loop, f->w->ingress->idle_timeout_ms, s_tunnel_done, f);
    hms_h2_stream_t *client = f->client_stream;
    if (f->front == INGRESS_FRONT_H2) {
        if (!f->answered)
            hms_h2_respond (client, 200, NULL, 0, true);
        f->client_stream = NULL; /* the tunnel's from here */
        hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_A, client);
        if (f->ended)
            hms_tunnel_stream_ended (f->tunnel, HMS_TUNNEL_A);
    } else {
        if (f->front == INGRESS_FRONT_H1 && !f->answered) { /* sent as the socket is attached */
            static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
            hms_tunnel_send (f->tunnel, HMS_TUNNEL_A, ok, sizeof ok - 1);
            /* a client that did not wait for it gets it with the target's first answer */
            if (f->early_len)
                hms_tunnel_hold (f->tunnel, HMS_TUNNEL_A, S_HOLD_200_MS);
        }
        hms_tunnel_attach_fd (f->tunnel, HMS_TUNNEL_A, f->client_fd);
        f->client_fd = -1;
    }
    if (f->early_len) {
        hms_tunnel_send (f->tunnel, HMS_TUNNEL_B, f->early, f->early_len);
        s_early_passed (f, client, f->early_len);
        f->early_len = 0;
    }
}

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_flow_t *f = arg;
    f->dial = NULL;
    if (fd < 0) {
        s_refuse (f, strstr (why, "no answer within") ? 504 : 502, why);
        return;
    }
    atomic_fetch_add (&f->w->ingress->counters.direct, 1);
    s_established (f);
    hms_tunnel_splice (f->tunnel, f->w->ingress->splice);
    hms_tunnel_attach_fd (f->tunnel, HMS_TUNNEL_B, fd);
    if (f->bypass)
        ev_timer_start (f->w->loop, &f->bypass_timer);
    /* a transparent client usually spoke while its target was dialed (most protocols have
     * the client speak first): its bytes go now, a loop turn sooner (a speculative read) */
    if (f->front == INGRESS_FRONT_TRANSPARENT)
        hms_tunnel_read_now (f->tunnel, HMS_TUNNEL_A); /* may end the flow */
}

static void s_on_out_headers (hms_h2_stream_t *s, void *arg)
{
    s_flow_t *f = arg;
    f->out = NULL;
    char text[512];
    int status = hms_h2_stream_refusal (s, "overlay", text, sizeof text);
    if (status) {
        s_refuse (f, status >= 400 && status < 600 ? status : 502, text);
        return;
    }
    atomic_fetch_add (&f->w->ingress->counters.overlay, 1);
    s_established (f);
    hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_B, s);
}

static void s_on_out_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_flow_t *f = arg;
    f->out = NULL;
    /* None of the client's bytes went with the CONNECT, and the relay refused the stream
     * unprocessed (RFC 9113 8.7) or its connection went away before the relay answered (a
     * relay that died as the stream left): the CONNECT is sent once more, on a connection
     * the pool has by then (another relay of the node, if the first is gone). */
    if (!f->retried && f->early_sent == 0 && hms_h2_stream_unanswered (s, code)) {
        f->retried = true;
        hms_info ("flow client=%s target=%s via=%s: the first relay's connection %s before it "
                  "answered: sending the CONNECT again",
                  f->peer, f->target, f->dest,
                  code == NGHTTP2_REFUSED_STREAM ? "refused it" : "closed");
        hms_soon_start (f->w->loop, &f->again);
        return;
    }
    char text[160];
    snprintf (text, sizeof text, "first relay reset the tunnel before answering (%s)",
              nghttp2_http2_strerror (code));
    s_refuse (f, 502, text);
}

/* An optimistic CONNECT (answered before the relays did): their answer arrives in the
 * tunnel; a refusal ends the flow with a reset towards the client, logged like a 502. */
static void s_on_optimistic_headers (hms_tunnel_t *t, hms_h2_stream_t *s, void *arg)
{
    s_flow_t *f = arg;
    char text[512];
    int status = hms_h2_stream_refusal (s, "overlay", text, sizeof text);
    if (status)
        s_refuse (f, status >= 400 && status < 600 ? status : 502, text);
    else
        atomic_fetch_add (&f->w->ingress->counters.overlay, 1);
}

static const hms_h2_stream_cbs_t s_out_cbs = {.on_headers = s_on_out_headers,
                                              .on_close = s_on_out_close};

/* Keeps bytes the client sent before its tunnel is there (sent first once it is). */
static void s_early_add (s_flow_t *f, const void *data, size_t len)
{
    f->early = hms_realloc (f->early, f->early_len + len);
    memcpy ((char *) f->early + f->early_len, data, len);
    f->early_len += len;
}

/* Bytes a socket client sent after its request head without waiting for the answer (a
 * pipelining client's TLS ClientHello) join the early bytes, up to a bound. An EOF stays
 * for the tunnel to read; a socket error read here shows to the tunnel as an EOF. */
static void s_take_early (s_flow_t *f)
{
    enum { S_EARLY_MAX = 16384 };
    if (f->client_fd < 0 || f->early_len >= S_EARLY_MAX)
        return;
    char buf[S_EARLY_MAX];
    ssize_t n = recv (f->client_fd, buf, S_EARLY_MAX - f->early_len, MSG_DONTWAIT);
    if (n <= 0)
        return;
    s_early_add (f, buf, (size_t) n);
}

static void s_on_pool (hms_h2_conn_t *conn, const char *why, void *arg)
{
    s_flow_t *f = arg;
    f->pool_req = NULL;
    if (!conn) {
        s_refuse (f, 502, why);
        return;
    }
    const char *meta[HMS_ROUTES_META_MAX] = {f->user[0] ? f->user : NULL};
    f->out = hms_routes_connect (conn, f->target, f->dest, 1, meta, &s_out_cbs, f);
    if (!f->out) {
        s_refuse (f, 502, "relay connection is not usable");
        return;
    }
    if (f->w->ingress->optimistic_connect && f->front != INGRESS_FRONT_H2) {
        /* answered now; the relays' answer only checks (a refusal resets the client) */
        hms_h2_stream_t *out = f->out;
        f->out = NULL;
        s_established (f);
        hms_tunnel_on_headers (f->tunnel, s_on_optimistic_headers);
        hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_B, out);
        return;
    }
    /* What the client already sent travels with the CONNECT, not one round trip later: the
     * relays keep it until their own next hop or the target is there. */
    s_take_early (f);
    if (f->early_len) {
        hms_h2_stream_write (f->out, f->early, f->early_len);
        s_early_passed (f, f->client_stream, f->early_len);
        f->early_sent = f->early_len;
        f->early_len = 0;
    }
}

/* The flow has been relayed a while: when both directions are quiet, offer its sockets to
 * the bypass agent (the L7 work is done: CONNECT answered, first bytes passed). */
static void s_on_bypass_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_flow_t *f = t->data;
    int a, b;
    uint64_t up, down;
    if (!f->tunnel || !hms_tunnel_pause (f->tunnel, &a, &b, &up, &down)) {
        if (f->tunnel && ++f->bypass_tries < 20)
            ev_timer_start (loop, t); /* bytes in flight: try again a little later */
        return;
    }
    if (ingress_bypass_offer (f->w, f, f->id, a, b, f->rule, up, down) != 0) {
        hms_debug ("ingress.bypass", "flow %s not offered (no agent): relaying on", f->id);
        hms_tunnel_resume (f->tunnel);
        return;
    }
    f->offered = true;
}

void ingress_flow_offered (void *arg, const bypass_answer_t *ans)
{
    s_flow_t *f = arg;
    ingress_counters_t *c = &f->w->ingress->counters;
    f->offered = false;
    if (ans && bypass_answer_accepted (ans)) {
        atomic_fetch_add (&c->offloaded, 1);
        hms_info ("offloaded client=%s target=%s flow=%s: the bypass agent splices it now", f->peer,
                  f->target, f->id);
        hms_tunnel_release (f->tunnel); /* ends the flow */
        return;
    }
    atomic_fetch_add (&c->offload_refused, 1);
    hms_info ("offload refused client=%s target=%s reason=%s %s: relaying on", f->peer, f->target,
              ans ? ans->reason : "agent gone", ans ? ans->detail : "");
    if (ans && ans->unsent_up_len) /* bytes the agent read while draining, not yet passed */
        hms_tunnel_send (f->tunnel, HMS_TUNNEL_B, ans->unsent_up, ans->unsent_up_len);
    if (ans && ans->unsent_down_len)
        hms_tunnel_send (f->tunnel, HMS_TUNNEL_A, ans->unsent_down, ans->unsent_down_len);
    hms_tunnel_resume (f->tunnel);
}

/* Asks the pool for a connection to the first relay toward f->dest (s_on_pool goes on). */
static void s_to_first_relay (s_flow_t *f)
{
    char host[256], why[320];
    uint16_t port = 0;
    if (ingress_first_relay (f->w->ingress, f->dest, host, sizeof host, &port, why, sizeof why)) {
        s_refuse (f, 502, why);
        return;
    }
    /* s_on_pool may run (and end the flow) before hms_pool_get returns NULL */
    hms_pool_req_t *req = hms_pool_get (f->w->pool, host, port, "relay", s_on_pool, f);
    if (req)
        f->pool_req = req;
}

static void s_on_again (struct ev_loop *loop, hms_soon_t *soon)
{
    s_to_first_relay (soon->data);
}

/* ---- the TLS server name, when the decision depends on it ------------------------------- */

static void s_on_decision (const hms_decision_t *d, void *arg);

static void s_decide (s_flow_t *f)
{
    hms_query_t q = {.src = f->peer,
                     .dst = f->dst_ip[0] ? f->dst_ip : f->host,
                     .port = f->port,
                     .protocol = "tcp",
                     .host = f->host,
                     .sni = f->sni[0] ? f->sni : NULL,
                     .sni_pending = !f->sni_read,
                     .user = f->user[0] ? f->user : NULL};
    ingress_ask (&f->ask, f->w, &q, s_on_decision, f); /* s_on_decision may end the flow */
}

/* Looks at what the client sent so far; once it says the name, or cannot, or gave_up says
 * why no more is awaited, asks the engine again. True when it did. */
static bool s_sni_check (s_flow_t *f, const char *gave_up)
{
    char why[160];
    hms_sni_result_t r =
        hms_sni_parse (f->early, f->early_len, f->sni, sizeof f->sni, why, sizeof why);
    if (r == HMS_SNI_MORE && f->early_len < HMS_SNI_MAX_BYTES && !gave_up)
        return false;
    f->tls_hello = r == HMS_SNI_FOUND || r == HMS_SNI_NONE;
    if (r != HMS_SNI_FOUND) {
        f->sni[0] = 0;
        hms_debug ("ingress.flows", "client %s to %s: no TLS server name (%s): decided without",
                   f->peer, f->target, r == HMS_SNI_MORE && gave_up ? gave_up : why);
    }
    f->sni_read = true;
    ev_io_stop (f->w->loop, &f->sni_io);
    ev_timer_stop (f->w->loop, &f->sni_timer);
    s_decide (f);
    return true;
}

static void s_on_sni_io (struct ev_loop *loop, ev_io *io, int revents)
{
    s_flow_t *f = io->data;
    char buf[HMS_SNI_MAX_BYTES];
    ssize_t n = recv (f->client_fd, buf, HMS_SNI_MAX_BYTES - f->early_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        hms_info ("flow ended client=%s target=%s: the client %s before its TLS ClientHello",
                  f->peer, f->target, n == 0 ? "closed" : "failed");
        s_free (f);
        return;
    }
    s_early_add (f, buf, (size_t) n);
    s_sni_check (f, NULL);
}

static void s_on_sni_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_flow_t *f = t->data;
    char why[96];
    snprintf (why, sizeof why, "no whole ClientHello within %d ms", f->w->ingress->sni_wait_ms);
    s_sni_check (f, why);
}

/* The decision depends on the server name: a CONNECT client sends its ClientHello only once
 * answered, so it is answered 200 now (a refusal can then only close the tunnel), and the
 * flow reads on until the name is there, for at most sni_wait_ms. */
static void s_sni_wait (s_flow_t *f)
{
    if (f->front == INGRESS_FRONT_H2) {
        if (hms_h2_respond (f->client_stream, 200, NULL, 0, true) != 0) {
            s_free (f);
            return;
        }
        f->answered = true;
    } else if (f->front == INGRESS_FRONT_H1) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        if (send (f->client_fd, ok, sizeof ok - 1, MSG_DONTWAIT | MSG_NOSIGNAL) !=
            (ssize_t) (sizeof ok - 1)) {
            hms_info ("flow ended client=%s target=%s: could not answer it (%s)", f->peer,
                      f->target, strerror (errno));
            s_free (f);
            return;
        }
        f->answered = true;
    }
    s_take_early (f);
    if (s_sni_check (f, NULL))
        return;
    if (f->client_fd >= 0) {
        ev_io_init (&f->sni_io, s_on_sni_io, f->client_fd, EV_READ);
        f->sni_io.data = f;
        ev_io_start (f->w->loop, &f->sni_io);
    }
    ev_timer_init (&f->sni_timer, s_on_sni_timer, f->w->ingress->sni_wait_ms / 1000.0, 0);
    f->sni_timer.data = f;
    ev_timer_start (f->w->loop, &f->sni_timer);
}

/* An HTTP/2 client's stream until a tunnel takes it: its bytes are held (not consumed, so
 * its window bounds them) and read for the server name when that is awaited. */
static void s_pending_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_flow_t *f = arg;
    s_early_add (f, data, len);
    if (f->answered && !f->sni_read && ev_is_active (&f->sni_timer))
        s_sni_check (f, NULL);
}

static void s_pending_end (hms_h2_stream_t *s, void *arg)
{
    s_flow_t *f = arg;
    f->ended = true;
    if (f->answered && !f->sni_read && ev_is_active (&f->sni_timer))
        s_sni_check (f, "the client ended its stream");
}

static void s_pending_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_flow_t *f = arg;
    f->client_stream = NULL;
    hms_debug ("ingress.flows", "client %s reset its tunnel to %s before it was set up", f->peer,
               f->target);
    s_free (f);
}

static const hms_h2_stream_cbs_t s_pending_cbs = {
    .on_data = s_pending_data, .on_end = s_pending_end, .on_close = s_pending_close};

/* ---- the decision ------------------------------------------------------------------------ */

static bool s_on_tcp (int fd)
{
    int domain = 0;
    socklen_t len = sizeof domain;
    return getsockopt (fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
           (domain == AF_INET || domain == AF_INET6);
}

static void s_on_decision (const hms_decision_t *d, void *arg)
{
    s_flow_t *f = arg;
    ingress_t *ingress = f->w->ingress;
    if (f->ask.dst_ip[0]) /* a name the policy checked by its address: that address is dialed */
        snprintf (f->dst_ip, sizeof f->dst_ip, "%s", f->ask.dst_ip);
    if (d->needs_sni && !d->unavailable && !f->sni_read) {
        s_sni_wait (f);
        return;
    }
    snprintf (f->rule, sizeof f->rule, "%s", d->rule);
    /* only a client on TCP (not HTTP/1.1 inside the proxy port's TLS: a socket pair) */
    f->bypass = d->bypass && ingress->bypass_socket[0] && f->front != INGRESS_FRONT_H2 &&
                s_on_tcp (f->client_fd);
    if (d->unavailable) {
        s_refuse (f, 503, d->reason);
        return;
    }
    if (d->action == HMS_DECISION_DENY) {
        char why[400];
        ingress_deny_why (d, why, sizeof why);
        s_refuse (f, 403, why);
        return;
    }
    /* per-user address space: the policy may rewrite the destination */
    char why[320];
    if (d->target[0] &&
        hms_routes_parse_address (d->target, f->host, sizeof f->host, &f->port, why, sizeof why)) {
        s_refuse (f, 502, why);
        return;
    }
    hms_hostport (f->host, f->port, f->target, sizeof f->target);
    if (ingress_via_overlay (ingress, d)) {
        snprintf (f->dest, sizeof f->dest, "%s", d->route);
        s_to_first_relay (f);
        return;
    }
    /* A flow the bypass agent may splice: the server leg is made to agree with the client
     * leg (segment size, SACK, timestamps, ECN; bypass_client_dial_opts) */
    hms_sockopts_t opts = {0};
    if (f->bypass && f->client_fd >= 0)
        bypass_client_dial_opts (f->client_fd, &opts);
    /* a target on this host is usually connected before the call returns: the flow goes on
     * now, not a loop turn later */
    int fd_now;
    const char *dial_host = f->dst_ip[0] && !d->target[0] ? f->dst_ip : f->host;
    hms_dial_t *dial =
        hms_dial_start_now (f->w->loop, dial_host, f->port, ingress->connect_timeout_ms, &opts,
                            s_on_dialed, f, &fd_now);
    if (fd_now >= 0)
        s_on_dialed (fd_now, NULL, f);
    else
        f->dial = dial;
}

static void s_close_on_stop (void *obj)
{
    s_flow_t *f = obj;
    if (f->tunnel)
        hms_tunnel_abort (f->tunnel, "shutting down"); /* frees the flow */
    else
        s_free (f); /* a held stream is reset */
}

void ingress_flow_start (ingress_worker_t *w, const ingress_flow_req_t *req)
{
    s_flow_t *f = hms_alloc (sizeof *f);
    f->w = w;
    f->front = req->front;
    f->client_fd = req->client_fd;
    f->client_stream = req->client_stream;
    f->port = req->port;
    snprintf (f->peer, sizeof f->peer, "%s", req->peer_ip);
    snprintf (f->host, sizeof f->host, "%s", req->host);
    hms_hostport (req->host, req->port, f->target, sizeof f->target);
    snprintf (f->user, sizeof f->user, "%s", req->user ? req->user : "");
    if (req->early_len) {
        f->early = hms_alloc (req->early_len);
        memcpy (f->early, req->early, req->early_len);
        f->early_len = req->early_len;
    }
    atomic_fetch_add (&w->ingress->counters.flows, 1);
    f->item = hms_worker_track (w->worker, s_close_on_stop, f);
    snprintf (f->id, sizeof f->id, "i%d-%" PRIu64, hms_worker_index (w->worker), ++s_next_id);
    ev_timer_init (&f->bypass_timer, s_on_bypass_timer, w->ingress->bypass_after_ms / 1000.0, 0);
    f->bypass_timer.data = f;
    ev_init (&f->sni_io, s_on_sni_io);
    ev_init (&f->sni_timer, s_on_sni_timer);
    hms_soon_init (&f->again, s_on_again, f);
    if (f->client_stream) /* its bytes are held while the flow is decided */
        hms_h2_stream_set_cbs (f->client_stream, &s_pending_cbs, f);
    s_decide (f);
}
