/* relay: workers, listener, per-stream decision (terminate or forward), flows. */
#include "relay.h"
#include "relay_int.h"
#include "hms_alloc.h"
#include "hms_current.h"
#include "hms_daemon.h"
#include "hms_dial.h"
#include "hms_h1.h"
#include "hms_h2.h"
#include "hms_log.h"
#include "hms_pki.h"
#include "hms_resolve.h"
#include "hms_net.h"
#include "hms_origin.h"
#include "hms_pool.h"
#include "hms_routes.h"
#include "hms_soon.h"
#include "hms_tls.h"
#include "hms_tunnel.h"
#include "hms_worker.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const hms_cfg_key_t relay_keys[] = {
    {"listen", HMS_CFG_STRING, "0.0.0.0:4433", "tunnel endpoint (HTTP/2 over TLS)"},
    {"node", HMS_CFG_STRING, "local", "the topology node this relay serves"},
    {"tls_dir", HMS_CFG_STRING, NULL, "CA and certificates (default: KEYS_DIR/tls)"},
    {"workers", HMS_CFG_INT, "1", "worker threads, each with its own loop"},
    {"connect_timeout_ms", HMS_CFG_INT, "5000", "limit for connecting to a target or relay"},
    {"idle_timeout_ms", HMS_CFG_INT, "300000",
     "a tunnel idle this long is closed; an origin silent this long while it owes an answer "
     "is given up (504)"},
    HMS_ORIGIN_CA_KEY,
    HMS_ORIGIN_POOL_KEYS,
    HMS_RESOLVE_KEYS,
    HMS_DAEMON_DRAIN_KEY,
    {NULL, 0, NULL, NULL},
};

/* One CONNECT stream through this relay. */
typedef struct {
    relay_worker_t *w;
    hms_h2_stream_t *in;
    hms_tunnel_t *tunnel;
    hms_dial_t *dial;
    hms_pool_req_t *pool_req;
    hms_h2_stream_t *out; /* to the next relay, until it answers */
    char target[300];
    char host[256];
    uint16_t port;
    char dest[64];
    int hops;
    bool http;           /* a plain HTTP request forwarded as a request, not a CONNECT tunnel */
    char next_host[256]; /* the next relay */
    uint16_t next_port;
    bool retried;     /* the CONNECT to the next relay was sent again once */
    hms_soon_t again; /* ... at the end of this loop turn */
} s_flow_t;

/* ---- flows ----------------------------------------------------------------------------- */

static void s_flow_done (hms_tunnel_t *t, const char *why, uint64_t a_to_b, uint64_t b_to_a,
                         void *arg)
{
    s_flow_t *f = arg;
    hms_soon_stop (f->w->loop, &f->again);
    if (f->dial)
        hms_dial_cancel (f->dial);
    if (f->pool_req)
        hms_pool_cancel (f->pool_req);
    if (f->out) {
        hms_h2_stream_orphan (f->out);
        hms_h2_stream_reset (f->out, NGHTTP2_CANCEL);
    }
    hms_access ("tunnel done target=%s dest=%s up=%" PRIu64 " down=%" PRIu64 " %s%s", f->target,
                f->dest[0] ? f->dest : "-", a_to_b, b_to_a, why ? "why=" : "clean", why ? why : "");
    free (f);
}

static void s_refuse (s_flow_t *f, int status, const char *why)
{
    atomic_fetch_add (&f->w->relay->refused, 1);
    hms_info ("tunnel refused target=%s dest=%s status=%d why=\"%s\"", f->target,
              f->dest[0] ? f->dest : "-", status, why);
    hms_tunnel_refuse (f->tunnel, status, why);
}

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_flow_t *f = arg;
    f->dial = NULL;
    if (fd < 0) {
        s_refuse (f, 502, why);
        return;
    }
    atomic_fetch_add (&f->w->relay->terminated, 1);
    hms_h2_respond (f->in, 200, NULL, 0, true);
    hms_tunnel_attach_fd (f->tunnel, HMS_TUNNEL_B, fd);
}

/* The next relay answered our CONNECT. */
static void s_on_out_headers (hms_h2_stream_t *s, void *arg)
{
    s_flow_t *f = arg;
    f->out = NULL;
    char text[512];
    int status = hms_h2_stream_refusal (s, "next relay", text, sizeof text);
    if (status) {
        s_refuse (f, status >= 400 ? status : 502, text);
        return;
    }
    atomic_fetch_add (&f->w->relay->forwarded, 1);
    hms_h2_respond (f->in, 200, NULL, 0, true);
    hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_B, s);
}

static void s_on_out_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_flow_t *f = arg;
    f->out = NULL;
    /* A CONNECT carries nothing to the next relay before its answer (the tunnel joins the
     * stream then): refused unprocessed (RFC 9113 8.7), or its connection gone before the
     * answer (a relay that died as the stream left), it is sent once more, on the
     * connection the pool has by then. */
    if (!f->http && !f->retried && hms_h2_stream_unanswered (s, code)) {
        f->retried = true;
        hms_info ("tunnel target=%s dest=%s: the next relay's connection %s before it answered: "
                  "sending the CONNECT again",
                  f->target, f->dest, code == NGHTTP2_REFUSED_STREAM ? "refused it" : "closed");
        hms_soon_start (f->w->loop, &f->again);
        return;
    }
    char text[128];
    snprintf (text, sizeof text, "next relay reset the tunnel before answering (%s)",
              nghttp2_http2_strerror (code));
    s_refuse (f, 502, text);
}

static const hms_h2_stream_cbs_t s_out_cbs = {.on_headers = s_on_out_headers,
                                              .on_close = s_on_out_close};

static void s_on_pool (hms_h2_conn_t *conn, const char *why, void *arg)
{
    s_flow_t *f = arg;
    f->pool_req = NULL;
    if (!conn) {
        s_refuse (f, 502, why);
        return;
    }
    if (f->http) {
        /* the request as it came, one hop further */
        char hops[16];
        snprintf (hops, sizeof hops, "%d", f->hops + 1);
        nghttp2_nv nva[64];
        size_t n = 0;
        const char *name, *value;
        for (size_t i = 0; n < 63 && hms_h2_stream_header_at (f->in, i, &name, &value) == 0; i++)
            if (strcmp (name, HMS_HDR_HOPS) != 0)
                nva[n++] = (nghttp2_nv){(uint8_t *) name, (uint8_t *) value, strlen (name),
                                        strlen (value), NGHTTP2_NV_FLAG_NONE};
        nva[n++] = (nghttp2_nv){(uint8_t *) HMS_HDR_HOPS, (uint8_t *) hops, sizeof HMS_HDR_HOPS - 1,
                                strlen (hops), NGHTTP2_NV_FLAG_NONE};
        hms_h2_stream_t *out = hms_h2_request (conn, nva, n, true, &s_out_cbs, f);
        if (!out) {
            s_refuse (f, 502, "next relay connection is not usable");
            return;
        }
        /* bodies flow both ways at once; the answer's headers come through the tunnel */
        hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_B, out);
        return;
    }
    /* identity and routing metadata travel on */
    const char *meta[HMS_ROUTES_META_MAX];
    for (int i = 0; i < HMS_ROUTES_META_MAX; i++)
        meta[i] = hms_h2_stream_header (f->in, hms_routes_meta_headers[i]);
    f->out = hms_routes_connect (conn, f->target, f->dest, f->hops + 1, meta, &s_out_cbs, f);
    if (!f->out)
        s_refuse (f, 502, "next relay connection is not usable");
}

/* Asks the pool for a connection to the next relay (s_on_pool goes on). */
static void s_to_next_relay (s_flow_t *f)
{
    /* s_on_pool may run (and end the flow) before hms_pool_get returns NULL */
    hms_pool_req_t *req =
        hms_pool_get (f->w->pool, f->next_host, f->next_port, "relay", s_on_pool, f);
    if (req)
        f->pool_req = req;
}

static void s_on_again (struct ev_loop *loop, hms_soon_t *soon)
{
    s_to_next_relay (soon->data);
}

/* A forwarded HTTP request: the next relay's answer goes back as our answer. */
static void s_on_forwarded_headers (hms_tunnel_t *t, hms_h2_stream_t *from, void *arg)
{
    s_flow_t *f = arg;
    atomic_fetch_add (&f->w->relay->forwarded, 1);
    hms_h2_respond_as (f->in, from, true);
}

static void s_on_request (hms_h2_stream_t *in, void *arg)
{
    relay_worker_t *w = arg;
    relay_t *relay = w->relay;
    const char *method = hms_h2_stream_header (in, ":method");
    const char *authority = hms_h2_stream_header (in, ":authority");
    const char *proto = hms_h2_stream_header (in, ":protocol");
    const char *scheme = hms_h2_stream_header (in, ":scheme");
    bool is_connect = method && strcmp (method, "CONNECT") == 0;
    s_flow_t *f = hms_alloc (sizeof *f);
    f->w = w;
    f->in = in;
    f->http = !is_connect;
    hms_soon_init (&f->again, s_on_again, f);
    snprintf (f->target, sizeof f->target, "%s", authority ? authority : "-");
    char why[256];
    const char *dest = hms_h2_stream_header (in, HMS_HDR_DEST);
    snprintf (f->dest, sizeof f->dest, "%s", dest ? dest : "");
    bool here = !dest || !*dest || strcmp (dest, relay->node) == 0;
    bool http_scheme = scheme && (strcmp (scheme, "http") == 0 || strcmp (scheme, "https") == 0);
    /* an http:// or https:// request that leaves the overlay here goes to the origin itself */
    if (!is_connect && !proto && here && http_scheme && authority) {
        bool tls;
        if (hms_fetch_origin (scheme, authority, f->host, sizeof f->host, &f->port, &tls, why,
                              sizeof why) == 0) {
            atomic_fetch_add (&relay->terminated, 1);
            hms_fetch_start (&w->fetch, in, tls, f->host, f->port, NULL, NULL, 0, false);
            free (f);
            return;
        }
    }
    f->tunnel = hms_tunnel_new (w->loop, relay->idle_timeout_ms, s_flow_done, f);
    hms_tunnel_attach_stream (f->tunnel, HMS_TUNNEL_A, in);
    if (proto || (!is_connect && !http_scheme)) {
        s_refuse (f, 501, "this relay carries CONNECT tunnels and http:// and https:// requests");
        return;
    }
    if (!authority ||
        (is_connect && hms_h1_parse_authority (authority, strlen (authority), f->host,
                                               sizeof f->host, &f->port, why, sizeof why))) {
        s_refuse (f, 400, authority ? why : "request without :authority");
        return;
    }
    const char *hops = hms_h2_stream_header (in, HMS_HDR_HOPS);
    f->hops = hops ? atoi (hops) : 0;
    if (f->hops >= RELAY_MAX_HOPS) {
        s_refuse (f, 508, "too many relays on this path (a routing loop?)");
        return;
    }
    if (here) {
        /* the tunnel leaves the overlay here */
        f->dial = hms_dial_start (w->loop, f->host, f->port, relay->connect_timeout_ms, NULL,
                                  s_on_dialed, f);
        return;
    }
    json_t *config = hms_current_get (relay->config, NULL);
    char next[64];
    int rc = config ? hms_routes_next (config, relay->node, dest, next, sizeof next, f->next_host,
                                       sizeof f->next_host, &f->next_port, why, sizeof why)
                    : (snprintf (why, sizeof why, "no routing config from the controller yet"), -1);
    json_decref (config);
    if (rc) {
        s_refuse (f, 502, why);
        return;
    }
    if (f->http)
        hms_tunnel_on_headers (f->tunnel, s_on_forwarded_headers);
    s_to_next_relay (f);
}

/* ---- connections ------------------------------------------------------------------------- */

static void s_on_conn_closed (hms_h2_conn_t *conn, const char *why, void *arg)
{
    relay_worker_t *w = arg;
    w->conns--;
    hms_debug ("relay.conns", "connection closed peer=%s why=\"%s\"",
               hms_h2_conn_peer (conn) ? hms_h2_conn_peer (conn) : "-", why);
    if (strncmp (why, "TLS handshake", 13) == 0)
        hms_warning ("refused a peer connection: %s", why);
}

static void s_on_accept (struct ev_loop *loop, ev_io *io, int revents)
{
    relay_worker_t *w = io->data;
    for (int i = 0; i < 64; i++) {
        hms_addr_t peer;
        int fd = hms_net_accept (w->lfd, &peer);
        if (fd < 0)
            return;
        hms_tls_t *tls = hms_tls_new (w->relay->server_tls, fd, NULL);
        if (!tls) {
            close (fd);
            continue;
        }
        static const hms_h2_conn_cbs_t cbs = {.on_request = s_on_request,
                                              .on_closed = s_on_conn_closed};
        hms_h2_conn_new (loop, tls, true, &cbs, w);
        w->conns++;
    }
}

/* ---- workers ----------------------------------------------------------------------------- */

/* Closing steps of a stopping worker (hms_worker_track): no new peers, no new hops. */
static void s_stop_listening (void *obj)
{
    relay_worker_t *w = obj;
    if (w->lfd < 0)
        return;
    ev_io_stop (w->loop, &w->accept_w);
    close (w->lfd);
    w->lfd = -1;
}

static void s_stop_pool (void *obj)
{
    relay_worker_t *w = obj;
    hms_pool_shutdown (w->pool);
    hms_origin_pool_destroy (&w->origins);
    w->fetch.origins = NULL;
}

static void s_worker_init (hms_worker_t *worker, void *arg)
{
    relay_t *relay = arg;
    relay_worker_t *w = hms_alloc (sizeof *w);
    w->relay = relay;
    w->worker = worker;
    w->loop = hms_worker_loop (worker);
    w->lfd = relay->lfds[hms_worker_index (worker)];
    if (w->lfd >= 0) {
        ev_io_init (&w->accept_w, s_on_accept, w->lfd, EV_READ);
        w->accept_w.data = w;
        ev_io_start (w->loop, &w->accept_w);
    }
    w->pool = hms_pool_new (w->loop, relay->client_tls, relay->connect_timeout_ms);
    w->origins = hms_origin_pool_new (w->loop, w->relay->origin_keep.max,
                                      w->relay->origin_keep.per_host, HMS_ORIGIN_POOL_IDLE_S);
    w->fetch = (hms_fetch_env_t){.loop = w->loop,
                                 .worker = worker,
                                 .connect_timeout_ms = relay->connect_timeout_ms,
                                 .idle_timeout_ms = relay->idle_timeout_ms,
                                 .origin_tls = relay->origin_tls,
                                 .origin_tls_why = relay->origin_tls_why,
                                 .origins = w->origins,
                                 .reused = &relay->origin_reused,
                                 .retried = &relay->origin_retried};
    hms_worker_set_data (worker, w);
    /* a graceful stop closes the listener at once and leaves the pool to the streams */
    hms_worker_on_drain (hms_worker_track (worker, s_stop_pool, w), NULL, false);
    if (w->lfd >= 0) /* newest: closed first */
        hms_worker_on_drain (hms_worker_track (worker, s_stop_listening, w), s_stop_listening,
                             false);
}

static void s_worker_fini (hms_worker_t *worker, void *arg)
{
    relay_worker_t *w = hms_worker_data (worker);
    hms_pool_destroy (&w->pool);
    hms_origin_pool_destroy (&w->origins);
    free (w);
}

/* Runs on each worker after a new config: keep connections to the next hops warm. */
static void s_worker_config (hms_worker_t *worker, void *arg)
{
    relay_worker_t *w = hms_worker_data (worker);
    relay_t *relay = w->relay;
    json_t *config = hms_current_get (relay->config, NULL);
    hms_routes_warm (config, relay->node, w->pool);
    json_decref (config);
}

relay_t *relay_new (hms_config_t *cfg, char *err, size_t errlen)
{
    relay_t *self = hms_alloc (sizeof *self);
    snprintf (self->node, sizeof self->node, "%s", hms_config_str (cfg, "node"));
    self->workers_n = (int) hms_config_int (cfg, "workers");
    self->connect_timeout_ms = (int) hms_config_int (cfg, "connect_timeout_ms");
    self->idle_timeout_ms = (int) hms_config_int (cfg, "idle_timeout_ms");
    if (self->workers_n < 1 || self->workers_n > RELAY_MAX_WORKERS) {
        snprintf (err, errlen, "workers must be 1 to %d", RELAY_MAX_WORKERS);
        free (self);
        return NULL;
    }
    if (hms_routes_check_node (self->node, err, errlen) ||
        hms_origin_pool_limits (cfg, &self->origin_keep, err, errlen) ||
        hms_resolve_apply (cfg, err, errlen)) {
        free (self);
        return NULL;
    }
    if (hms_origin_tls_config (hms_config_str (cfg, "origin_ca_file"), &self->origin_tls,
                               self->origin_tls_why, sizeof self->origin_tls_why)) {
        snprintf (err, errlen, "%s", self->origin_tls_why);
        free (self);
        return NULL;
    }
    char tls_dir[1024];
    const char *dir = hms_config_str (cfg, "tls_dir");
    if (dir && *dir)
        snprintf (tls_dir, sizeof tls_dir, "%s", dir);
    else
        snprintf (tls_dir, sizeof tls_dir, "%s/tls", hms_config_str (cfg, "keys_dir"));
    if (hms_addr_parse (hms_config_str (cfg, "listen"), &self->listen, err, errlen) ||
        !(self->server_tls =
              hms_pki_tls_ctx (tls_dir, "relay", true, true, true, NULL, false, err, errlen)) ||
        !(self->client_tls =
              hms_pki_tls_ctx (tls_dir, "relay", false, false, true, NULL, false, err, errlen))) {
        relay_destroy (&self);
        return NULL;
    }
    /* Every worker's listener now: a busy port fails start-up, a ":0" port is learnt, and a
     * peer never meets a port that is not listening yet. */
    if (hms_net_listen_group (&self->listen, self->workers_n, self->lfds, 1024, err, errlen)) {
        relay_destroy (&self);
        return NULL;
    }
    self->port = hms_addr_port (&self->listen);
    self->config = hms_current_new ();
    for (int i = 0; i < self->workers_n; i++)
        self->workers[i] = hms_worker_new (i, s_worker_init, s_worker_fini, self);
    char text[80];
    hms_info ("relay listening on %s node=%s workers=%d",
              hms_addr_str (&self->listen, text, sizeof text), self->node, self->workers_n);
    return self;
}

void relay_destroy (relay_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    relay_t *self = *self_p;
    for (int i = 0; i < self->workers_n && i < RELAY_MAX_WORKERS; i++)
        hms_worker_destroy (&self->workers[i]);
    hms_current_destroy (&self->config);
    hms_tls_ctx_destroy (&self->server_tls);
    hms_tls_ctx_destroy (&self->client_tls);
    hms_tls_ctx_destroy (&self->origin_tls);
    free (self);
    *self_p = NULL;
}

int relay_validate (void *arg, const json_t *config, char *err, size_t errlen)
{
    return hms_routes_check (config, err, errlen);
}

void relay_drain (void *arg)
{
    hms_workers_drain (((relay_t *) arg)->workers, ((relay_t *) arg)->workers_n);
}

int relay_busy (void *arg)
{
    return hms_workers_busy (((relay_t *) arg)->workers, ((relay_t *) arg)->workers_n);
}

void relay_apply (void *arg, json_t *config, int64_t version)
{
    relay_t *self = arg;
    hms_current_set (self->config, config, version);
    for (int i = 0; i < self->workers_n; i++)
        hms_worker_post (self->workers[i], s_worker_config, NULL);
}

json_t *relay_stats (void *arg)
{
    relay_t *self = arg;
    json_t *stats =
        json_pack ("{s:I, s:I, s:I, s:I, s:I}", "relay_terminated",
                   (json_int_t) atomic_load (&self->terminated), "relay_forwarded",
                   (json_int_t) atomic_load (&self->forwarded), "relay_refused",
                   (json_int_t) atomic_load (&self->refused), "relay_origin_reused",
                   (json_int_t) atomic_load (&self->origin_reused), "relay_origin_retried",
                   (json_int_t) atomic_load (&self->origin_retried));
    return hms_pool_stats_add (hms_resolve_stats_add (stats, "relay"), "relay");
}

uint16_t relay_port (const relay_t *self)
{
    return self->port;
}
