/* ingress: bootstrap keys, TLS contexts, workers with their listeners, pools and policy
 * clients, and config changes. */
#include "hms_alloc.h"
#include "hms_daemon.h"
#include "hms_log.h"
#include "hms_pki.h"
#include "hms_resolve.h"
#include "hms_routes.h"
#include "ingress_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const hms_cfg_key_t ingress_keys[] = {
    {"http_listen", HMS_CFG_STRING, "127.0.0.1:3128", "HTTP/1.1 proxy (\"\" to disable)"},
    {"h2_listen", HMS_CFG_STRING, "127.0.0.1:3129", "HTTP/2 proxy over TLS (\"\" to disable)"},
    {"transparent_listen", HMS_CFG_STRING, "127.0.0.1:3130",
     "transparent TCP proxy for REDIRECTed connections (\"\" to disable)"},
    {"node", HMS_CFG_STRING, "local", "the topology node this ingress serves"},
    {"policy", HMS_CFG_STRING, "tcp://127.0.0.1:7200", "policy engine endpoint"},
    {"tls_dir", HMS_CFG_STRING, NULL, "CA and certificates (default: KEYS_DIR/tls)"},
    {"workers", HMS_CFG_INT, "1", "worker threads, each with its own loop and listeners"},
    {"connect_timeout_ms", HMS_CFG_INT, "5000", "limit for connecting to a target or relay"},
    {"idle_timeout_ms", HMS_CFG_INT, "300000",
     "a tunnel idle this long is closed; an origin silent this long while it owes an answer "
     "is given up (504)"},
    {"policy_timeout_ms", HMS_CFG_INT, "1000",
     "a flow the policy engine does not decide in "
     "this time is refused (503)"},
    {"head_timeout_ms", HMS_CFG_INT, "10000", "limit for a client to send its request head"},
    {"sni_wait_ms", HMS_CFG_INT, "3000",
     "when a policy decision depends on the TLS server name, how long the flow waits for the "
     "client's ClientHello; then it is decided without a name"},
    {"bypass_socket", HMS_CFG_STRING, NULL,
     "the bypass agent's Unix socket: flows the policy marks bypass are offered to it"},
    {"bypass_after_ms", HMS_CFG_INT, "100",
     "how long a bypass-eligible flow is relayed before its sockets are offered"},
    HMS_ORIGIN_CA_KEY,
    HMS_ORIGIN_POOL_KEYS,
    HMS_RESOLVE_KEYS,
    HMS_DAEMON_DRAIN_KEY,
    {"splice", HMS_CFG_BOOL, "true",
     "relay direct TCP flows with splice(2), without copying their bytes through the proxy"},
    {"optimistic_connect", HMS_CFG_BOOL, "false",
     "answer a CONNECT through the overlay at once, before the relays reach the target: one "
     "round trip less for the client; a target that cannot be reached then shows as a reset "
     "connection instead of a 502"},
    {"users_file", HMS_CFG_STRING, NULL,
     "proxy users {\"name\": \"sha256 hex of password\"}; when set, Proxy-Authorization "
     "(Basic) is required"},
    {NULL, 0, NULL, NULL},
};

static const char *const s_listen_keys[3] = {"http_listen", "h2_listen", "transparent_listen"};

bool ingress_via_overlay (const ingress_t *self, const hms_decision_t *d)
{
    return d->action == HMS_DECISION_ROUTE && d->route[0] && strcmp (d->route, self->node) != 0;
}

int ingress_first_relay (ingress_t *self, const char *dest, char *host, size_t hostlen,
                         uint16_t *port, char *why, size_t whylen)
{
    json_t *config = hms_current_get (self->config, NULL);
    if (!config) {
        snprintf (why, whylen, "no routing config from the controller yet");
        return -1;
    }
    char next[64];
    int rc = hms_routes_next (config, self->node, dest, next, sizeof next, host, hostlen, port, why,
                              whylen);
    json_decref (config);
    return rc;
}

void ingress_deny_why (const hms_decision_t *d, char *why, size_t whylen)
{
    snprintf (why, whylen, "denied by policy%s%s: %s", d->rule[0] ? " rule " : "", d->rule,
              d->reason);
}

static void s_on_accept (struct ev_loop *loop, ev_io *io, int revents)
{
    ingress_worker_t *w = io->data;
    int front = (int) (io - w->accept_w);
    for (int i = 0; i < 64; i++) {
        hms_addr_t peer;
        int fd = hms_net_accept (w->lfd[front], &peer);
        if (fd < 0)
            return;
        if (front == INGRESS_FRONT_H1)
            ingress_h1_accept (w, fd, &peer);
        else if (front == INGRESS_FRONT_H2)
            ingress_tls_accept (w, fd, &peer);
        else
            ingress_transparent_accept (w, fd, &peer);
    }
}

/* Closing steps of a stopping worker (hms_worker_track): no new clients, no new hops. */
static void s_stop_listening (void *obj)
{
    ingress_worker_t *w = obj;
    for (int i = 0; i < 3; i++)
        if (w->lfd[i] >= 0) {
            ev_io_stop (w->loop, &w->accept_w[i]);
            close (w->lfd[i]);
            w->lfd[i] = -1;
        }
}

/* Closes last (tracked first): every flow that could still ask has gone by now. */
static void s_stop_upstreams (void *obj)
{
    ingress_worker_t *w = obj;
    hms_pool_shutdown (w->pool);
    hms_decider_destroy (&w->decider);
    /* the kept origin connections too: their watchers would hold the stopping loop */
    hms_origin_pool_destroy (&w->origins);
    w->fetch.origins = NULL;
}

static void s_worker_init (hms_worker_t *worker, void *arg)
{
    ingress_t *ingress = arg;
    ingress_worker_t *w = hms_alloc (sizeof *w);
    w->ingress = ingress;
    w->worker = worker;
    w->loop = hms_worker_loop (worker);
    char err[512];
    for (int i = 0; i < 3; i++) {
        w->lfd[i] = ingress->lfds[i][hms_worker_index (worker)];
        if (w->lfd[i] < 0)
            continue;
        /* the proxy fronts' clients speak first: a connection wakes us once its request (or
         * ClientHello) is there, not once for the handshake and again for the bytes. Not the
         * transparent front: it carries protocols whose server speaks first. */
        int defer_s = 1;
        if (i != INGRESS_FRONT_TRANSPARENT &&
            setsockopt (w->lfd[i], IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof defer_s) != 0)
            hms_warning ("worker %d: TCP_DEFER_ACCEPT: %s", hms_worker_index (worker),
                         strerror (errno));
        if (i == INGRESS_FRONT_TRANSPARENT)
            w->transparent_port = hms_net_local_port (w->lfd[i]);
        ev_io_init (&w->accept_w[i], s_on_accept, w->lfd[i], EV_READ);
        w->accept_w[i].data = w;
        ev_io_start (w->loop, &w->accept_w[i]);
    }
    w->pool = hms_pool_new (w->loop, ingress->relay_tls, ingress->connect_timeout_ms);
    w->origins = hms_origin_pool_new (w->loop, ingress->origin_keep.max,
                                      ingress->origin_keep.per_host, HMS_ORIGIN_POOL_IDLE_S);
    w->fetch = (hms_fetch_env_t){.loop = w->loop,
                                 .worker = worker,
                                 .connect_timeout_ms = ingress->connect_timeout_ms,
                                 .idle_timeout_ms = ingress->idle_timeout_ms,
                                 .origin_tls = ingress->origin_tls,
                                 .origin_tls_why = ingress->origin_tls_why,
                                 .origins = w->origins,
                                 .reused = &ingress->counters.origin_reused,
                                 .retried = &ingress->counters.origin_retried};
    /* a graceful stop closes the listeners at once and leaves the upstreams to the flows */
    hms_worker_on_drain (hms_worker_track (worker, s_stop_upstreams, w), NULL, false);
    hms_worker_on_drain (hms_worker_track (worker, s_stop_listening, w), /* newest: closed first */
                         s_stop_listening, false);
    w->decider = hms_decider_new (w->loop, ingress->policy_endpoint, ingress->keys_dir, "ingress",
                                  ingress->policy_timeout_ms, err, sizeof err);
    if (!w->decider)
        hms_error ("worker %d: policy client: %s (every flow will be refused)",
                   hms_worker_index (worker), err);
    ingress_bypass_connect (w);
    hms_worker_set_data (worker, w);
}

static void s_worker_fini (hms_worker_t *worker, void *arg)
{
    ingress_worker_t *w = hms_worker_data (worker);
    ingress_bypass_close (w);
    zlistx_destroy (&w->offers);
    hms_pool_destroy (&w->pool);
    hms_origin_pool_destroy (&w->origins);
    hms_decider_destroy (&w->decider);
    free (w);
}

/* On each worker after a new config: warm the first hops, forget cached decisions. */
static void s_worker_config (hms_worker_t *worker, void *arg)
{
    ingress_worker_t *w = hms_worker_data (worker);
    ingress_t *ingress = w->ingress;
    if (w->decider)
        hms_decider_flush (w->decider);
    json_t *config = hms_current_get (ingress->config, NULL);
    hms_routes_warm (config, ingress->node, w->pool);
    json_decref (config);
}

ingress_t *ingress_new (hms_config_t *cfg, char *err, size_t errlen)
{
    ingress_t *self = hms_alloc (sizeof *self);
    snprintf (self->node, sizeof self->node, "%s", hms_config_str (cfg, "node"));
    snprintf (self->policy_endpoint, sizeof self->policy_endpoint, "%s",
              hms_config_str (cfg, "policy"));
    snprintf (self->keys_dir, sizeof self->keys_dir, "%s", hms_config_str (cfg, "keys_dir"));
    self->workers_n = (int) hms_config_int (cfg, "workers");
    self->connect_timeout_ms = (int) hms_config_int (cfg, "connect_timeout_ms");
    self->idle_timeout_ms = (int) hms_config_int (cfg, "idle_timeout_ms");
    self->policy_timeout_ms = (int) hms_config_int (cfg, "policy_timeout_ms");
    self->head_timeout_ms = (int) hms_config_int (cfg, "head_timeout_ms");
    self->sni_wait_ms = (int) hms_config_int (cfg, "sni_wait_ms");
    if (self->sni_wait_ms < 1 || self->sni_wait_ms > 600000) {
        snprintf (err, errlen, "sni_wait_ms must be 1 to 600000, got %d", self->sni_wait_ms);
        free (self);
        return NULL;
    }
    if (self->workers_n < 1 || self->workers_n > INGRESS_MAX_WORKERS) {
        snprintf (err, errlen, "workers must be 1 to %d", INGRESS_MAX_WORKERS);
        free (self);
        return NULL;
    }
    if (hms_routes_check_node (self->node, err, errlen) ||
        hms_origin_pool_limits (cfg, &self->origin_keep, err, errlen) ||
        hms_resolve_apply (cfg, err, errlen)) {
        free (self);
        return NULL;
    }
    const char *bypass = hms_config_str (cfg, "bypass_socket");
    snprintf (self->bypass_socket, sizeof self->bypass_socket, "%s", bypass ? bypass : "");
    self->bypass_after_ms = (int) hms_config_int (cfg, "bypass_after_ms");
    if (self->bypass_socket[0] && !bypass_client_can_mark ())
        hms_warning ("bypass: this ingress cannot mark sockets (SO_MARK needs CAP_NET_ADMIN): "
                     "the agent's SYN shaper cannot make a server leg agree with its client leg, "
                     "and flows whose client lacks SACK or timestamps will stay proxied");
    self->splice = hms_config_bool (cfg, "splice");
    self->optimistic_connect = hms_config_bool (cfg, "optimistic_connect");
    const char *users = hms_config_str (cfg, "users_file");
    if (users && *users && ingress_auth_load (self, users, err, errlen)) {
        free (self);
        return NULL;
    }
    char tls_dir[1024];
    const char *dir = hms_config_str (cfg, "tls_dir");
    if (dir && *dir)
        snprintf (tls_dir, sizeof tls_dir, "%s", dir);
    else
        snprintf (tls_dir, sizeof tls_dir, "%s/tls", self->keys_dir);
    for (int f = 0; f < 3; f++)
        for (int k = 0; k < INGRESS_MAX_WORKERS; k++)
            self->lfds[f][k] = -1;
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        const char *text = hms_config_str (cfg, s_listen_keys[i]);
        if (!text || !*text)
            continue;
        char why[256];
        if (hms_addr_parse (text, &self->listen[i], why, sizeof why)) {
            snprintf (err, errlen, "%s: %s", s_listen_keys[i], why);
            rc = -1;
            break;
        }
        /* every worker's listener now: a busy port fails start-up, ":0" learns its port,
         * and a client never meets a port that is not listening yet */
        if (hms_net_listen_group (&self->listen[i], self->workers_n, self->lfds[i], 1024, why,
                                  sizeof why)) {
            snprintf (err, errlen, "%s: %s", s_listen_keys[i], why);
            rc = -1;
            break;
        }
        self->enabled[i] = true;
    }
    /* the proxy port speaks HTTP/2, and HTTP/1.1 to a client that asks for it (ingress_tls) */
    if (!rc && (!(self->proxy_tls = hms_pki_tls_ctx (tls_dir, "ingress", true, false, false,
                                                     "h2,http/1.1", true, err, errlen)) ||
                !(self->relay_tls = hms_pki_tls_ctx (tls_dir, "ingress", false, false, true, NULL,
                                                     false, err, errlen))))
        rc = -1;
    if (!rc && hms_origin_tls_config (hms_config_str (cfg, "origin_ca_file"), &self->origin_tls,
                                      self->origin_tls_why, sizeof self->origin_tls_why)) {
        snprintf (err, errlen, "%s", self->origin_tls_why);
        rc = -1;
    }
    if (rc) {
        for (int f = 0; f < 3; f++)
            for (int k = 0; k < INGRESS_MAX_WORKERS; k++)
                if (self->lfds[f][k] >= 0)
                    close (self->lfds[f][k]);
        ingress_destroy (&self);
        return NULL;
    }
    self->config = hms_current_new ();
    for (int i = 0; i < self->workers_n; i++)
        self->workers[i] = hms_worker_new (i, s_worker_init, s_worker_fini, self);
    char text[3][80] = {"off", "off", "off"};
    for (int i = 0; i < 3; i++) {
        if (self->enabled[i])
            hms_addr_str (&self->listen[i], text[i], sizeof text[i]);
    }
    hms_info ("ingress listening http=%s h2=%s transparent=%s node=%s policy=%s workers=%d",
              text[0], text[1], text[2], self->node, self->policy_endpoint, self->workers_n);
    return self;
}

void ingress_destroy (ingress_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ingress_t *self = *self_p;
    for (int i = 0; i < self->workers_n && i < INGRESS_MAX_WORKERS; i++)
        hms_worker_destroy (&self->workers[i]);
    hms_current_destroy (&self->config);
    hms_tls_ctx_destroy (&self->proxy_tls);
    hms_tls_ctx_destroy (&self->relay_tls);
    hms_tls_ctx_destroy (&self->origin_tls);
    json_decref (self->users);
    free (self);
    *self_p = NULL;
}

int ingress_validate (void *arg, const json_t *config, char *err, size_t errlen)
{
    return hms_routes_check (config, err, errlen);
}

json_t *ingress_stats (void *arg)
{
    ingress_counters_t *c = &((ingress_t *) arg)->counters;
    json_t *stats =
        json_pack ("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ingress_offers",
                   (json_int_t) atomic_load (&c->offers), "ingress_offloaded",
                   (json_int_t) atomic_load (&c->offloaded), "ingress_offload_refused",
                   (json_int_t) atomic_load (&c->offload_refused), "ingress_flows",
                   (json_int_t) atomic_load (&c->flows), "ingress_flows_direct",
                   (json_int_t) atomic_load (&c->direct), "ingress_flows_overlay",
                   (json_int_t) atomic_load (&c->overlay), "ingress_denied",
                   (json_int_t) atomic_load (&c->denied), "ingress_failed",
                   (json_int_t) atomic_load (&c->failed), "ingress_bad_requests",
                   (json_int_t) atomic_load (&c->bad_requests), "ingress_origin_reused",
                   (json_int_t) atomic_load (&c->origin_reused), "ingress_origin_retried",
                   (json_int_t) atomic_load (&c->origin_retried));
    return hms_pool_stats_add (hms_resolve_stats_add (stats, "ingress"), "ingress");
}

void ingress_drain (void *arg)
{
    hms_workers_drain (((ingress_t *) arg)->workers, ((ingress_t *) arg)->workers_n);
}

int ingress_busy (void *arg)
{
    return hms_workers_busy (((ingress_t *) arg)->workers, ((ingress_t *) arg)->workers_n);
}

void ingress_apply (void *arg, json_t *config, int64_t version)
{
    ingress_t *self = arg;
    hms_current_set (self->config, config, version);
    for (int i = 0; i < self->workers_n; i++)
        hms_worker_post (self->workers[i], s_worker_config, NULL);
}
