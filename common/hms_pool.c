/* hms_pool: per-hop lists of HTTP/2 client connections, waiters, warm reconnects. A new
 * connection whose peer fails the TLS/HTTP/2 set-up, the first failure in a row, is tried
 * once more at once (its address put last in the resolver's cache: a name with several
 * relays goes to another) before the waiters are failed. */
#include "hms_pool.h"
#include "hms_alloc.h"
#include "hms_dial.h"
#include "hms_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct s_hop s_hop_t;

typedef struct s_conn {
    s_hop_t *hop;
    hms_h2_conn_t *h2; /* NULL while dialing */
    hms_dial_t *dial;
    hms_addr_t addr; /* the address the connection reached */
    bool ready;
    struct s_conn *next;
} s_conn_t;

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
    s_conn_t *conns;
    hms_pool_req_t *waiters;
    bool warm;
    int failures;
    ev_timer retry;
    struct s_hop *next;
};

struct hms_pool {
    struct ev_loop *loop;
    hms_tls_ctx_t *tls;
    int connect_timeout_ms;
    s_hop_t *hops;
    bool closing;
};

static void s_connect (s_hop_t *hop);

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
    h->retry.data = h;
    h->next = self->hops;
    self->hops = h;
    return h;
}

/* Hands usable connections to waiters, and opens one more when they are all full. */
static void s_serve (s_hop_t *hop)
{
    while (hop->waiters) {
        s_conn_t *c = hop->conns;
        while (c && !(c->ready && hms_h2_conn_usable (c->h2)))
            c = c->next;
        if (!c)
            break;
        hms_pool_req_t *req = hop->waiters;
        hop->waiters = req->next;
        req->fn (c->h2, NULL, req->arg);
        free (req);
    }
    if (hop->waiters) {
        bool dialing = false;
        for (s_conn_t *c = hop->conns; c; c = c->next)
            dialing |= !c->ready;
        if (!dialing && !ev_is_active (&hop->retry))
            s_connect (hop);
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

static void s_unlink (s_conn_t *conn)
{
    s_hop_t *hop = conn->hop;
    for (s_conn_t **p = &hop->conns; *p; p = &(*p)->next)
        if (*p == conn) {
            *p = conn->next;
            break;
        }
    free (conn);
}

static void s_on_retry (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_hop_t *hop = w->data;
    if (hop->warm || hop->waiters)
        s_connect (hop);
}

/* After a failure: waiters fail now; a warm hop tries again after a back-off. */
static void s_after_failure (s_hop_t *hop, const char *why)
{
    hop->failures++;
    s_fail_waiters (hop, why);
    if (hop->warm && !hop->pool->closing && !hop->conns) {
        double delay = 0.1 * (1 << (hop->failures < 6 ? hop->failures : 6));
        ev_timer_init (&hop->retry, s_on_retry, delay, 0);
        hop->retry.data = hop;
        ev_timer_start (hop->pool->loop, &hop->retry);
    }
}

static void s_on_ready (hms_h2_conn_t *h2, void *arg)
{
    s_conn_t *conn = arg;
    if (!conn)
        return; /* the pool is gone */
    conn->ready = true;
    conn->hop->failures = 0;
    char hp[300];
    hms_debug ("pool", "connected to %s",
               hms_hostport (conn->hop->host, conn->hop->port, hp, sizeof hp));
    s_serve (conn->hop);
}

static void s_on_closed (hms_h2_conn_t *h2, const char *why, void *arg)
{
    s_conn_t *conn = arg;
    if (!conn)
        return; /* the pool is gone */
    s_hop_t *hop = conn->hop;
    bool was_ready = conn->ready;
    hms_addr_t addr = conn->addr;
    s_unlink (conn);
    if (hop->pool->closing)
        return;
    char text[512], hp[300];
    snprintf (text, sizeof text, "relay %s: %s", hms_hostport (hop->host, hop->port, hp, sizeof hp),
              why);
    if (!was_ready && hop->failures == 0 && (hop->warm || hop->waiters)) {
        /* the first failure in a row (a relay that died as it was reached, or something else
         * on one of the name's addresses): once more at once, elsewhere if it can */
        hop->failures++;
        hms_resolve_demote (hop->host, &addr);
        hms_info ("next hop %s: trying again at once", text);
        s_connect (hop);
    } else if (!was_ready) {
        hms_warning ("cannot reach next hop %s", text);
        s_after_failure (hop, text);
    } else {
        hms_info ("connection to next hop closed %s", text);
        if (hop->warm && !hop->conns)
            s_connect (hop);
        else
            s_serve (hop);
    }
}

static void s_on_dialed (int fd, const hms_addr_t *addr, const char *why, void *arg)
{
    s_conn_t *conn = arg;
    s_hop_t *hop = conn->hop;
    conn->dial = NULL;
    if (fd >= 0)
        conn->addr = *addr;
    hms_tls_t *tls = fd >= 0 ? hms_tls_new (hop->pool->tls, fd, hop->server_name) : NULL;
    if (!tls) {
        char text[512], hp[300];
        snprintf (text, sizeof text, "relay %s: %s",
                  hms_hostport (hop->host, hop->port, hp, sizeof hp),
                  why ? why : "TLS session setup failed");
        if (fd >= 0)
            close (fd);
        hms_warning ("cannot reach next hop %s", text);
        s_unlink (conn);
        s_after_failure (hop, text);
        return;
    }
    static const hms_h2_conn_cbs_t cbs = {.on_ready = s_on_ready, .on_closed = s_on_closed};
    conn->h2 = hms_h2_conn_new (hop->pool->loop, tls, false, &cbs, conn);
}

static void s_connect (s_hop_t *hop)
{
    if (hop->pool->closing)
        return;
    s_conn_t *conn = hms_alloc (sizeof *conn);
    conn->hop = hop;
    conn->next = hop->conns;
    hop->conns = conn;
    conn->dial = hms_dial_start (hop->pool->loop, hop->host, hop->port,
                                 hop->pool->connect_timeout_ms, NULL, s_on_dialed, conn);
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
        s_fail_waiters (hop, "pool closed");
        for (s_conn_t *c = hop->conns, *cn; c; c = cn) {
            cn = c->next;
            if (c->dial)
                hms_dial_cancel (c->dial);
            else {
                /* torn down by the loop's next turn, which must still run */
                hms_h2_conn_set_arg (c->h2, NULL);
                hms_h2_conn_close (c->h2, "pool closed");
            }
            free (c);
        }
        hop->conns = NULL;
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
    for (s_conn_t *c = hop->conns; c; c = c->next)
        if (c->ready && hms_h2_conn_usable (c->h2)) {
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
    if (!hop->conns && !ev_is_active (&hop->retry))
        s_connect (hop);
}

void hms_pool_cool (hms_pool_t *self)
{
    for (s_hop_t *h = self->hops; h; h = h->next)
        h->warm = false;
}

size_t hms_pool_connections (const hms_pool_t *self)
{
    size_t n = 0;
    for (s_hop_t *h = self->hops; h; h = h->next)
        for (s_conn_t *c = h->conns; c; c = c->next)
            n += c->ready;
    return n;
}
