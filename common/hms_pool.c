/* hms_pool: per hop (name, port, certificate name), the name's addresses as endpoints, each
 * with its own HTTP/2 client connections, back-off and failure; waiters; warm reconnects;
 * the name looked up again when its answer expires. An address that fails while another
 * of the name serves is logged as information: the hop is only unreachable when all fail. */
#include "hms_pool.h"
#include "hms_alloc.h"
#include "hms_dial.h"
#include "hms_log.h"
#include "hms_resolve.h"
#include "hms_time.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct s_hop s_hop_t;
typedef struct s_ep s_ep_t;

typedef struct s_conn {
    s_ep_t *ep;
    hms_h2_conn_t *h2; /* NULL while dialing */
    hms_dial_t *dial;
    bool ready;
    struct s_conn *next;
} s_conn_t;

/* One address of a hop's name: one relay instance. */
struct s_ep {
    s_hop_t *hop;
    hms_addr_t addr;
    char ip[64];   /* addr's IP, to dial */
    char text[80]; /* addr as IP:port, for logs */
    s_conn_t *conns;
    bool listed;   /* in the name's latest answer; an address that left it takes no new
                    * streams, and goes once its connections are done */
    int failures;  /* attempts failed in a row */
    char why[256]; /* the latest failure */
    ev_timer retry;
    struct s_ep *next;
};

struct hms_pool_req {
    s_hop_t *hop;
    hms_pool_fn *fn;
    void *arg;
    struct hms_pool_req *next;
};

struct s_hop {
    hms_pool_t *pool;
    char host[256];
    uint16_t port;
    char server_name[128];
    char text[300]; /* host:port, for logs */
    s_ep_t *eps;
    unsigned turn; /* where the next search for the least busy connection starts */
    hms_pool_req_t *waiters;
    bool warm;
    hms_resolve_t *resolving;
    bool answered;    /* the name was resolved at least once */
    int failures;     /* lookups failed in a row, with no address known */
    ev_timer retry;   /* the next lookup after a failed one */
    ev_timer refresh; /* the next lookup while the hop is in use */
    struct s_hop *next;
};

struct hms_pool {
    struct ev_loop *loop;
    hms_tls_ctx_t *tls;
    int connect_timeout_ms;
    s_hop_t *hops;
    bool closing;
};

static atomic_uint_fast64_t s_connections, s_failed;

static void s_dial (s_ep_t *ep);
static void s_resolve (s_hop_t *hop);

static double s_backoff (int failures)
{
    return 0.1 * (1 << (failures < 6 ? failures : 6));
}

static void s_on_refresh (struct ev_loop *loop, ev_timer *w, int revents);
static void s_on_hop_retry (struct ev_loop *loop, ev_timer *w, int revents);

static s_hop_t *s_hop (hms_pool_t *self, const char *host, uint16_t port, const char *name)
{
    for (s_hop_t *h = self->hops; h; h = h->next)
        if (h->port == port && strcmp (h->host, host) == 0 && strcmp (h->server_name, name) == 0)
            return h;
    s_hop_t *h = hms_alloc (sizeof *h);
    h->pool = self;
    snprintf (h->host, sizeof h->host, "%s", host);
    h->port = port;
    snprintf (h->server_name, sizeof h->server_name, "%s", name);
    hms_hostport (host, port, h->text, sizeof h->text);
    ev_timer_init (&h->retry, s_on_hop_retry, 0, 0);
    h->retry.data = h;
    ev_timer_init (&h->refresh, s_on_refresh, 0, 0);
    h->refresh.data = h;
    h->next = self->hops;
    self->hops = h;
    return h;
}

static bool s_has_conns (const s_hop_t *hop)
{
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        if (ep->conns)
            return true;
    return false;
}

/* A hop in use (warm, or with connections) looks its name up again as the answer expires. */
static void s_keep_fresh (s_hop_t *hop)
{
    if (ev_is_active (&hop->refresh) || hop->pool->closing)
        return;
    int ms = hms_resolve_lifetime_ms ();
    ev_timer_set (&hop->refresh, (ms < 1000 ? 1000 : ms) / 1000.0, 0);
    ev_timer_start (hop->pool->loop, &hop->refresh);
}

static void s_on_refresh (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_hop_t *hop = w->data;
    if (hop->warm || s_has_conns (hop)) {
        s_resolve (hop);
        s_keep_fresh (hop);
    } else
        hop->answered = false; /* out of use: its next use looks the name up first */
}

static bool s_usable (const s_conn_t *c)
{
    return c->ready && hms_h2_conn_usable (c->h2);
}

/* The usable connection with the fewest streams, an address still in the name's answer
 * first; among equals, the one whose address comes first counting from hop->turn, which
 * then moves one address past it (flows after another take turns). */
static s_conn_t *s_pick (s_hop_t *hop)
{
    unsigned n = 0;
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        n++;
    if (n == 0)
        return NULL;
    s_conn_t *best = NULL;
    bool best_listed = false;
    size_t best_streams = 0;
    unsigned best_rank = 0, best_at = 0, at = 0;
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next, at++) {
        unsigned rank = (at + n - hop->turn % n) % n;
        for (s_conn_t *c = ep->conns; c; c = c->next) {
            if (!s_usable (c))
                continue;
            size_t streams = hms_h2_conn_streams (c->h2);
            if (best && (ep->listed != best_listed ? !ep->listed
                         : streams != best_streams ? streams > best_streams
                                                   : rank >= best_rank))
                continue;
            best = c;
            best_listed = ep->listed;
            best_streams = streams;
            best_rank = rank;
            best_at = at;
        }
    }
    if (best)
        hop->turn = best_at + 1;
    return best;
}

/* An address of hop other than but has a connection up, or one being made. */
static bool s_others_serve (const s_hop_t *hop, const s_ep_t *but)
{
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        if (ep != but && ep->listed && ep->conns)
            return true;
    return false;
}

/* Hands usable connections to waiters; when there is none, connects to each address that
 * is not being connected to or waiting out a back-off (the waiters then wait for those). */
static void s_serve (s_hop_t *hop)
{
    while (hop->waiters) {
        s_conn_t *c = s_pick (hop);
        if (!c)
            break;
        hms_pool_req_t *req = hop->waiters;
        hop->waiters = req->next;
        req->fn (c->h2, NULL, req->arg);
        free (req);
    }
    if (!hop->waiters || hop->pool->closing)
        return;
    if (!hop->answered) {
        s_resolve (hop);
        return;
    }
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next) {
        if (!ep->listed || ev_is_active (&ep->retry))
            continue;
        bool dialing = false;
        for (s_conn_t *c = ep->conns; c; c = c->next)
            dialing |= !c->ready;
        if (!dialing)
            s_dial (ep);
    }
}

static void s_fail_waiters (s_hop_t *hop, const char *why)
{
    while (hop->waiters) {
        hms_pool_req_t *req = hop->waiters;
        hop->waiters = req->next;
        req->fn (NULL, why, req->arg);
        free (req);
    }
}

/* Why no address of hop serves: "relay HOST:PORT: why", or with several addresses
 * "relay HOST:PORT: ADDR: why; ADDR: why" (each address's latest failure). */
static void s_fail_text (const s_hop_t *hop, const char *why, char *out, size_t len)
{
    int n = 0;
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        n += ep->listed && ep->why[0];
    int used = snprintf (out, len, "relay %s: %s", hop->text, n <= 1 ? why : "");
    bool first = true;
    for (s_ep_t *ep = hop->eps; ep && n > 1 && used >= 0 && (size_t) used < len; ep = ep->next)
        if (ep->listed && ep->why[0]) {
            bool named = strstr (ep->why, ep->text) != NULL; /* "connect to ADDR: ..." */
            used += snprintf (out + used, len - (size_t) used, "%s%s%s%s", first ? "" : "; ",
                              named ? "" : ep->text, named ? "" : ": ", ep->why);
            first = false;
        }
}

static void s_ep_unlink_conn (s_conn_t *conn)
{
    s_ep_t *ep = conn->ep;
    for (s_conn_t **p = &ep->conns; *p; p = &(*p)->next)
        if (*p == conn) {
            *p = conn->next;
            break;
        }
    free (conn);
}

/* An address that left the name's answer, with nothing open to it, goes. */
static void s_ep_maybe_free (s_ep_t *ep)
{
    if (ep->listed || ep->conns)
        return;
    s_hop_t *hop = ep->hop;
    ev_timer_stop (hop->pool->loop, &ep->retry);
    for (s_ep_t **p = &hop->eps; *p; p = &(*p)->next)
        if (*p == ep) {
            *p = ep->next;
            break;
        }
    free (ep);
}

/* The back-off is over: flows waiting for the hop get their try (s_serve), and a warm
 * address with nothing open is connected to again. */
static void s_on_ep_retry (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_ep_t *ep = w->data;
    if (!ep->listed)
        return;
    if (ep->hop->waiters)
        s_serve (ep->hop);
    else if (ep->hop->warm && !ep->conns)
        s_dial (ep);
}

/* A connection to ep (an address in the name's answer) failed before it was ready (why): ep
 * waits out a back-off; waiters go to the name's other addresses, or fail when none is up or
 * being connected to. */
static void s_ep_failed (s_ep_t *ep, const char *why)
{
    s_hop_t *hop = ep->hop;
    atomic_fetch_add (&s_failed, 1);
    ep->failures++;
    snprintf (ep->why, sizeof ep->why, "%s", why);
    if (hop->pool->closing)
        return;
    if (hop->warm || hop->waiters) {
        ev_timer_set (&ep->retry, s_backoff (ep->failures), 0);
        ev_timer_start (hop->pool->loop, &ep->retry);
    }
    s_serve (hop);
    if (s_others_serve (hop, ep)) {
        hms_info ("next hop relay %s: address %s failed (%s); its other addresses serve", hop->text,
                  ep->text, why);
        return;
    }
    char text[768];
    s_fail_text (hop, why, text, sizeof text);
    hms_warning ("cannot reach next hop %s", text);
    s_fail_waiters (hop, text);
    /* every address failed: the instances behind the name may have been replaced */
    hms_resolve_forget (hop->host);
    s_resolve (hop);
}

/* A connection of ep stopped taking streams (GOAWAY, or closed): when no connection of the
 * hop takes them now, the addresses waiting out a back-off are tried at once (a rolling
 * restart: the relay that was down is back, the one in use is stopping); a warm ep is
 * connected to again. */
static void s_lost (s_ep_t *ep)
{
    s_hop_t *hop = ep->hop;
    bool others = false, mine = false;
    for (s_ep_t *e = hop->eps; e; e = e->next)
        for (s_conn_t *c = e->conns; c; c = c->next) {
            others |= e->listed && s_usable (c);
            mine |= e == ep && (!c->ready || s_usable (c));
        }
    if (!others && (hop->warm || hop->waiters))
        for (s_ep_t *e = hop->eps; e; e = e->next)
            if (e != ep && e->listed && ev_is_active (&e->retry)) {
                ev_timer_stop (hop->pool->loop, &e->retry);
                s_dial (e);
            }
    if (ep->listed && hop->warm && !mine)
        s_dial (ep);
    s_serve (hop);
}

static void s_on_ready (hms_h2_conn_t *h2, void *arg)
{
    s_conn_t *conn = arg;
    if (!conn)
        return; /* the pool is gone */
    conn->ready = true;
    conn->ep->failures = 0;
    ev_timer_stop (conn->ep->hop->pool->loop, &conn->ep->retry);
    conn->ep->why[0] = '\0';
    atomic_fetch_add (&s_connections, 1);
    hms_debug ("pool", "connected to %s (%s)", conn->ep->hop->text, conn->ep->text);
    s_serve (conn->ep->hop);
}

static void s_on_closed (hms_h2_conn_t *h2, const char *why, void *arg)
{
    s_conn_t *conn = arg;
    if (!conn)
        return; /* the pool is gone */
    s_ep_t *ep = conn->ep;
    s_hop_t *hop = ep->hop;
    bool was_ready = conn->ready;
    s_ep_unlink_conn (conn);
    if (was_ready)
        atomic_fetch_sub (&s_connections, 1);
    if (hop->pool->closing)
        return;
    if (!ep->listed) { /* let go when it left the name */
        s_ep_maybe_free (ep);
        return;
    }
    if (!was_ready) {
        s_ep_failed (ep, why);
        return;
    }
    hms_info ("connection to next hop closed relay %s (%s): %s", hop->text, ep->text, why);
    s_lost (ep);
}

static void s_on_goaway (hms_h2_conn_t *h2, void *arg)
{
    s_conn_t *conn = arg;
    if (!conn || conn->ep->hop->pool->closing)
        return;
    hms_info ("next hop relay %s (%s) sent GOAWAY: no new streams on that connection",
              conn->ep->hop->text, conn->ep->text);
    s_lost (conn->ep);
}

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_conn_t *conn = arg;
    s_ep_t *ep = conn->ep;
    conn->dial = NULL;
    hms_tls_t *tls = fd >= 0 ? hms_tls_new (ep->hop->pool->tls, fd, ep->hop->server_name) : NULL;
    if (!tls) {
        if (fd >= 0)
            close (fd);
        s_ep_unlink_conn (conn);
        s_ep_failed (ep, why ? why : "TLS session setup failed");
        return;
    }
    static const hms_h2_conn_cbs_t cbs = {
        .on_ready = s_on_ready, .on_closed = s_on_closed, .on_goaway = s_on_goaway};
    conn->h2 = hms_h2_conn_new (ep->hop->pool->loop, tls, false, &cbs, conn);
}

static void s_dial (s_ep_t *ep)
{
    hms_pool_t *pool = ep->hop->pool;
    if (pool->closing)
        return;
    s_conn_t *conn = hms_alloc (sizeof *conn);
    conn->ep = ep;
    conn->next = ep->conns;
    ep->conns = conn;
    conn->dial = hms_dial_start (pool->loop, ep->ip, ep->hop->port, pool->connect_timeout_ms, NULL,
                                 s_on_dialed, conn);
    s_keep_fresh (ep->hop);
}

/* An address of the name's answer: known already, or a new endpoint. */
static s_ep_t *s_ep (s_hop_t *hop, const hms_addr_t *addr)
{
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        if (hms_addr_same_ip (&ep->addr, addr))
            return ep;
    s_ep_t *ep = hms_alloc (sizeof *ep);
    ep->hop = hop;
    ep->addr = *addr;
    hms_addr_ip (addr, ep->ip, sizeof ep->ip);
    hms_addr_str (addr, ep->text, sizeof ep->text);
    ev_timer_init (&ep->retry, s_on_ep_retry, 0, 0);
    ep->retry.data = ep;
    s_ep_t **p = &hop->eps; /* kept in the answer's order */
    while (*p)
        p = &(*p)->next;
    *p = ep;
    return ep;
}

/* Addresses that joined the name get endpoints (connected at once when the hop is warm);
 * those that left it are let go once their streams are done. */
static void s_on_resolved (const hms_addrs_t *addrs, const char *why, void *arg)
{
    s_hop_t *hop = arg;
    hop->resolving = NULL;
    if (!addrs) {
        bool known = false;
        for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
            known |= ep->listed;
        if (known) { /* the addresses known are kept until an answer replaces them */
            hms_info ("next hop relay %s: %s; its last addresses are kept", hop->text, why);
            return;
        }
        atomic_fetch_add (&s_failed, 1);
        char text[512];
        snprintf (text, sizeof text, "relay %s: %s", hop->text, why);
        hms_warning ("cannot reach next hop %s", text);
        s_fail_waiters (hop, text);
        hop->failures++;
        if (hop->warm && !hop->pool->closing) {
            ev_timer_set (&hop->retry, s_backoff (hop->failures), 0);
            ev_timer_start (hop->pool->loop, &hop->retry);
        }
        return;
    }
    hop->answered = true;
    hop->failures = 0;
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        ep->listed = false;
    for (int i = 0; i < addrs->n; i++) {
        s_ep_t *ep = s_ep (hop, &addrs->addr[i]);
        ep->listed = true;
        if (hop->warm && !ep->conns && !ev_is_active (&ep->retry))
            s_dial (ep);
    }
    for (s_ep_t *ep = hop->eps, *next; ep; ep = next) {
        next = ep->next;
        if (ep->listed)
            continue;
        hms_info ("next hop relay %s: address %s left the name; its open streams finish", hop->text,
                  ep->text);
        ev_timer_stop (hop->pool->loop, &ep->retry);
        for (s_conn_t *c = ep->conns, *cn; c; c = cn) {
            cn = c->next;
            if (c->dial) {
                hms_dial_cancel (c->dial);
                s_ep_unlink_conn (c);
            } else
                hms_h2_conn_drain (c->h2); /* on_closed follows, from the loop */
        }
        s_ep_maybe_free (ep);
    }
    s_serve (hop);
}

static void s_resolve (s_hop_t *hop)
{
    if (hop->resolving || hop->pool->closing)
        return;
    hop->resolving = hms_resolve (hop->pool->loop, hop->host, hop->port, s_on_resolved, hop);
}

static void s_on_hop_retry (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_hop_t *hop = w->data;
    if (hop->warm || hop->waiters)
        s_resolve (hop);
}

hms_pool_t *hms_pool_new (struct ev_loop *loop, hms_tls_ctx_t *tls, int connect_timeout_ms)
{
    hms_pool_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->tls = tls;
    self->connect_timeout_ms = connect_timeout_ms;
    return self;
}

void hms_pool_shutdown (hms_pool_t *self)
{
    self->closing = true;
    for (s_hop_t *hop = self->hops; hop; hop = hop->next) {
        ev_timer_stop (self->loop, &hop->retry);
        ev_timer_stop (self->loop, &hop->refresh);
        if (hop->resolving) {
            hms_resolve_cancel (hop->resolving);
            hop->resolving = NULL;
        }
        s_fail_waiters (hop, "pool closed");
        for (s_ep_t *ep = hop->eps, *en; ep; ep = en) {
            en = ep->next;
            ev_timer_stop (self->loop, &ep->retry);
            for (s_conn_t *c = ep->conns, *cn; c; c = cn) {
                cn = c->next;
                if (c->dial)
                    hms_dial_cancel (c->dial);
                else {
                    /* torn down by the loop's next turn, which must still run */
                    hms_h2_conn_set_arg (c->h2, NULL);
                    hms_h2_conn_close (c->h2, "pool closed");
                    if (c->ready)
                        atomic_fetch_sub (&s_connections, 1);
                }
                free (c);
            }
            free (ep);
        }
        hop->eps = NULL;
    }
}

void hms_pool_destroy (hms_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_pool_t *self = *self_p;
    hms_pool_shutdown (self);
    for (s_hop_t *hop = self->hops, *next; hop; hop = next) {
        next = hop->next;
        free (hop);
    }
    free (self);
    *self_p = NULL;
}

hms_pool_req_t *hms_pool_get (hms_pool_t *self, const char *host, uint16_t port,
                              const char *server_name, hms_pool_fn *fn, void *arg)
{
    s_hop_t *hop = s_hop (self, host, port, server_name);
    s_conn_t *c = s_pick (hop);
    if (c) {
        fn (c->h2, NULL, arg);
        return NULL;
    }
    hms_pool_req_t *req = hms_alloc (sizeof *req);
    req->hop = hop;
    req->fn = fn;
    req->arg = arg;
    hms_pool_req_t **p = &hop->waiters;
    while (*p)
        p = &(*p)->next;
    *p = req;
    s_serve (hop);
    return req;
}

void hms_pool_cancel (hms_pool_req_t *req)
{
    for (hms_pool_req_t **p = &req->hop->waiters; *p; p = &(*p)->next)
        if (*p == req) {
            *p = req->next;
            free (req);
            return;
        }
}

void hms_pool_warm (hms_pool_t *self, const char *host, uint16_t port, const char *server_name)
{
    s_hop_t *hop = s_hop (self, host, port, server_name);
    hop->warm = true;
    s_keep_fresh (hop);
    if (!hop->answered) {
        if (!ev_is_active (&hop->retry))
            s_resolve (hop);
        return;
    }
    for (s_ep_t *ep = hop->eps; ep; ep = ep->next)
        if (ep->listed && !ep->conns && !ev_is_active (&ep->retry))
            s_dial (ep);
}

void hms_pool_cool (hms_pool_t *self)
{
    for (s_hop_t *h = self->hops; h; h = h->next)
        h->warm = false;
}

void hms_pool_stats (hms_pool_stats_t *out)
{
    out->connections = atomic_load (&s_connections);
    out->failed = atomic_load (&s_failed);
}

json_t *hms_pool_stats_add (json_t *into, const char *prefix)
{
    hms_pool_stats_t st;
    hms_pool_stats (&st);
    char key[64];
    snprintf (key, sizeof key, "%s_pool_connections", prefix);
    json_object_set_new (into, key, json_integer ((json_int_t) st.connections));
    snprintf (key, sizeof key, "%s_pool_failed", prefix);
    json_object_set_new (into, key, json_integer ((json_int_t) st.failed));
    return into;
}
