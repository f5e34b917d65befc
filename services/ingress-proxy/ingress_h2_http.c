/* ingress_h2_http: plain http:// and https:// requests on the HTTP/2 proxy port (what
 * `curl --proxy-http2 -x https://ingress http://host/` sends: a GET with :scheme, :authority
 * and :path on a stream, no CONNECT). Each request is decided by the policy engine (protocol
 * http, method, path); on a direct route the ingress asks the origin itself (hms_fetch), on an
 * overlay route the stream goes to the first relay as a request, and the relays pass it on to
 * the exit, which asks the origin; the answer comes back on the client's stream. Body bytes
 * that arrive while the decision is pending are kept (within the stream's window) and sent
 * first. */
#include "hms_alloc.h"
#include "hms_buf.h"
#include "hms_fetch.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "hms_routes.h"
#include "hms_tunnel.h"
#include "ingress_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ingress_worker_t *w;
    hms_h2_stream_t *in;
    char peer[64];
    char user[128];
    char host[HMS_H1_MAX_HOST + 1];
    uint16_t port;
    bool tls;
    char dest[65];
    hms_buf_t *body; /* what came while the request was decided; not consumed yet */
    bool ended;      /* the client's stream ended meanwhile */
    ingress_ask_t ask;
    hms_pool_req_t *pool_req;
    hms_tunnel_t *tunnel; /* through the overlay: the tunnel ends the request */
    hms_worker_item_t *item;
} s_req_t;

static void s_free (s_req_t *r)
{
    hms_worker_untrack (r->w->worker, r->item);
    ingress_ask_cancel (&r->ask);
    if (r->pool_req)
        hms_pool_cancel (r->pool_req);
    hms_buf_destroy (&r->body);
    free (r);
}

/* Answers the client with an error of the proxy's own; the stream is let go. */
static void s_refuse (s_req_t *r, int status, const char *why)
{
    if (hms_buf_size (r->body)) /* held, never to be sent: the client's window gets them back */
        hms_h2_stream_consume (r->in, hms_buf_size (r->body));
    hms_h2_stream_orphan (r->in);
    if (hms_h2_refuse (r->in, status, why) != 0)
        hms_h2_stream_reset (r->in, NGHTTP2_INTERNAL_ERROR);
    s_free (r);
}

/* ---- while the request is decided -------------------------------------------------------- */

static void s_pending_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_req_t *r = arg;
    hms_buf_append (r->body, data, len);
}

static void s_pending_end (hms_h2_stream_t *s, void *arg)
{
    ((s_req_t *) arg)->ended = true;
}

static void s_pending_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_req_t *r = arg;
    hms_debug ("ingress.h2", "client %s reset its request before it was decided", r->peer);
    s_free (r);
}

static const hms_h2_stream_cbs_t s_pending_cbs = {
    .on_data = s_pending_data, .on_end = s_pending_end, .on_close = s_pending_close};

/* ---- through the overlay ----------------------------------------------------------------- */

static void s_tunnel_done (hms_tunnel_t *t, const char *why, uint64_t up, uint64_t down, void *arg)
{
    s_req_t *r = arg;
    char tp[300];
    hms_access ("http request done client=%s target=%s via=%s up=%" PRIu64 " down=%" PRIu64 " %s%s",
                r->peer, hms_hostport (r->host, r->port, tp, sizeof tp), r->dest, up, down,
                why ? "why=" : "clean", why ? why : "");
    s_free (r);
}

/* The relays' answer (the origin's, or a relay's refusal) becomes ours. */
static void s_on_answer (hms_tunnel_t *t, hms_h2_stream_t *from, void *arg)
{
    s_req_t *r = arg;
    atomic_fetch_add (&r->w->ingress->counters.overlay, 1);
    hms_h2_respond_as (r->in, from, true);
}

/* Headers that end at this hop, or that only the overlay may set. */
static bool s_hop_only (const char *name)
{
    static const char *const names[] = {
        "connection", "proxy-connection",  "keep-alive", "proxy-authorization",
        "te",         "transfer-encoding", "upgrade",    NULL};
    if (strncmp (name, "hermes-", 7) == 0)
        return true;
    for (int i = 0; names[i]; i++)
        if (strcmp (name, names[i]) == 0)
            return true;
    return false;
}

static void s_on_pool (hms_h2_conn_t *conn, const char *why, void *arg)
{
    s_req_t *r = arg;
    r->pool_req = NULL;
    if (!conn) {
        atomic_fetch_add (&r->w->ingress->counters.failed, 1);
        char tp[300];
        hms_info ("http request failed client=%s target=%s via=%s status=502 why=\"%s\"", r->peer,
                  hms_hostport (r->host, r->port, tp, sizeof tp), r->dest, why);
        s_refuse (r, 502, why);
        return;
    }
    nghttp2_nv nva[64];
    size_t n = 0;
    const char *name, *value;
    for (size_t i = 0; n < 60 && hms_h2_stream_header_at (r->in, i, &name, &value) == 0; i++)
        if (!s_hop_only (name))
            nva[n++] = (nghttp2_nv){(uint8_t *) name, (uint8_t *) value, strlen (name),
                                    strlen (value), NGHTTP2_NV_FLAG_NONE};
    nva[n++] = (nghttp2_nv){(uint8_t *) HMS_HDR_DEST, (uint8_t *) r->dest, sizeof HMS_HDR_DEST - 1,
                            strlen (r->dest), NGHTTP2_NV_FLAG_NONE};
    nva[n++] = (nghttp2_nv){(uint8_t *) HMS_HDR_HOPS, (uint8_t *) "1", sizeof HMS_HDR_HOPS - 1, 1,
                            NGHTTP2_NV_FLAG_NONE};
    if (r->user[0])
        nva[n++] = (nghttp2_nv){(uint8_t *) HMS_HDR_USER, (uint8_t *) r->user,
                                sizeof HMS_HDR_USER - 1, strlen (r->user), NGHTTP2_NV_FLAG_NONE};
    static const hms_h2_stream_cbs_t s_none; /* the tunnel's, once attached below */
    hms_h2_stream_t *out = hms_h2_request (conn, nva, n, true, &s_none, NULL);
    if (!out) {
        s_refuse (r, 502, "relay connection is not usable");
        return;
    }
    /* what came while deciding goes first; those bytes were held, so they are given back to
     * the client's window here (the tunnel does it for the rest) */
    size_t held = hms_buf_size (r->body);
    if (held) {
        char *p = hms_alloc_raw (held);
        hms_buf_read (r->body, p, held);
        hms_h2_stream_write (out, p, held);
        free (p);
        hms_h2_stream_consume (r->in, held);
    }
    r->tunnel = hms_tunnel_new (r->w->loop, r->w->ingress->idle_timeout_ms, s_tunnel_done, r);
    hms_tunnel_on_headers (r->tunnel, s_on_answer);
    hms_tunnel_attach_stream (r->tunnel, HMS_TUNNEL_A, r->in);
    hms_tunnel_attach_stream (r->tunnel, HMS_TUNNEL_B, out);
    if (r->ended) /* the request ended while it was decided: the relay's stream ends too */
        hms_tunnel_stream_ended (r->tunnel, HMS_TUNNEL_A);
}

/* ---- the decision ------------------------------------------------------------------------ */

static void s_on_decision (const hms_decision_t *d, void *arg)
{
    s_req_t *r = arg;
    ingress_t *ingress = r->w->ingress;
    if (d->unavailable) {
        s_refuse (r, 503, d->reason);
        return;
    }
    if (d->action == HMS_DECISION_DENY) {
        atomic_fetch_add (&ingress->counters.denied, 1);
        char why[400];
        ingress_deny_why (d, why, sizeof why);
        char tp[300];
        hms_info ("denied client=%s target=%s rule=%s why=\"%s\"", r->peer,
                  hms_hostport (r->host, r->port, tp, sizeof tp), d->rule[0] ? d->rule : "-", why);
        s_refuse (r, 403, why);
        return;
    }
    char why[320];
    if (d->target[0] &&
        hms_routes_parse_address (d->target, r->host, sizeof r->host, &r->port, why, sizeof why)) {
        s_refuse (r, 502, why);
        return;
    }
    if (ingress_via_overlay (ingress, d)) {
        snprintf (r->dest, sizeof r->dest, "%s", d->route);
        char host[256];
        uint16_t port = 0;
        if (ingress_first_relay (ingress, r->dest, host, sizeof host, &port, why, sizeof why)) {
            s_refuse (r, 502, why);
            return;
        }
        /* s_on_pool may run (and end the request) before hms_pool_get returns NULL */
        hms_pool_req_t *req = hms_pool_get (r->w->pool, host, port, "relay", s_on_pool, r);
        if (req)
            r->pool_req = req;
        return;
    }
    /* direct: the ingress asks the origin; the stream is hms_fetch's from here on */
    atomic_fetch_add (&ingress->counters.direct, 1);
    size_t held = hms_buf_size (r->body);
    char *p = held ? hms_alloc_raw (held) : NULL;
    if (held)
        hms_buf_read (r->body, p, held);
    hms_fetch_start (&r->w->fetch, r->in, r->tls, r->host, r->port,
                     ingress_ask_checked_addr (&r->ask, d), p, held, r->ended);
    free (p);
    s_free (r);
}

/* The worker stops: a request still being decided is reset, one in a tunnel aborted. */
static void s_close_on_stop (void *obj)
{
    s_req_t *r = obj;
    if (r->tunnel) {
        hms_tunnel_abort (r->tunnel, "shutting down"); /* frees the request */
        return;
    }
    hms_h2_stream_orphan (r->in);
    hms_h2_stream_reset (r->in, NGHTTP2_CANCEL);
    s_free (r);
}

void ingress_h2_http_start (ingress_worker_t *w, hms_h2_stream_t *in, const char *peer,
                            const char *user, const char *host, uint16_t port, bool tls)
{
    s_req_t *r = hms_alloc (sizeof *r);
    r->w = w;
    r->in = in;
    snprintf (r->peer, sizeof r->peer, "%s", peer);
    snprintf (r->user, sizeof r->user, "%s", user ? user : "");
    snprintf (r->host, sizeof r->host, "%s", host);
    r->port = port;
    r->tls = tls;
    snprintf (r->dest, sizeof r->dest, "direct");
    r->body = hms_buf_new ();
    r->item = hms_worker_track (w->worker, s_close_on_stop, r);
    hms_h2_stream_set_cbs (in, &s_pending_cbs, r);
    atomic_fetch_add (&w->ingress->counters.flows, 1);
    hms_query_t q = {.src = r->peer,
                     .dst = r->host,
                     .port = r->port,
                     .protocol = "http",
                     .host = r->host,
                     .sni = r->tls ? r->host : NULL, /* the name a proxy's TLS will ask for */
                     .method = hms_h2_stream_header (in, ":method"),
                     .path = hms_h2_stream_header (in, ":path"),
                     .user = r->user[0] ? r->user : NULL};
    ingress_ask (&r->ask, w, &q, s_on_decision, r); /* s_on_decision may end the request */
}
