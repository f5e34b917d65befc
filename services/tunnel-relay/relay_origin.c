/* relay_origin: a worker's idle HTTP/1.1 connections to origins (plain or TLS), kept after
 * a complete answer so that the next request to the same scheme, host and port skips the TCP
 * and TLS handshakes. A kept connection is watched while idle: the origin closing it (or
 * sending anything) and the idle timeout drop it. Limits per worker: origin_keep_max in all
 * (the oldest goes first) and origin_keep_per_host per scheme, host and port (config keys);
 * the newest of an origin is reused first. Taking and keeping cost O(1): a hash of origins,
 * each with its stack of connections, and one list of all by age. */
#include "hms_alloc.h"
#include "hms_origin.h"
#include "relay_int.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

typedef struct s_bucket s_bucket_t;

typedef struct s_idle {
    relay_origins_t *owner;
    s_bucket_t *bucket;
    hms_origin_conn_t conn;
    ev_io io;
    ev_timer timer;
    struct s_idle *prev, *next;           /* all, newest first */
    struct s_idle *host_prev, *host_next; /* this origin's, newest first */
} s_idle_t;

/* One origin (scheme, host, port) and its idle connections. */
struct s_bucket {
    char key[300];
    s_idle_t *top, *bottom; /* newest, oldest */
    size_t n;
};

struct relay_origins {
    struct ev_loop *loop;
    zhashx_t *buckets; /* key -> s_bucket_t */
    s_idle_t *newest, *oldest;
    size_t n;
    size_t max, per_host;
};

static void s_bucket_free (void **item)
{
    free (*item);
    *item = NULL;
}

relay_origins_t *relay_origins_new (struct ev_loop *loop, size_t max, size_t per_host)
{
    relay_origins_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->max = max;
    self->per_host = per_host;
    self->buckets = zhashx_new ();
    zhashx_set_destructor (self->buckets, s_bucket_free);
    return self;
}

/* Unlinks e from both lists, and forgets its origin when it was the last one. */
static void s_unlink (relay_origins_t *self, s_idle_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        self->newest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        self->oldest = e->prev;
    self->n--;
    s_bucket_t *b = e->bucket;
    if (e->host_prev)
        e->host_prev->host_next = e->host_next;
    else
        b->top = e->host_next;
    if (e->host_next)
        e->host_next->host_prev = e->host_prev;
    else
        b->bottom = e->host_prev;
    if (--b->n == 0)
        zhashx_delete (self->buckets, b->key);
    ev_io_stop (self->loop, &e->io);
    ev_timer_stop (self->loop, &e->timer);
}

/* Unlinks, closes and frees one idle connection. */
static void s_drop (relay_origins_t *self, s_idle_t *e)
{
    s_unlink (self, e);
    hms_origin_close (&e->conn);
    free (e);
}

void relay_origins_destroy (relay_origins_t **self_p)
{
    relay_origins_t *self = *self_p;
    if (!self)
        return;
    while (self->newest)
        s_drop (self, self->newest);
    zhashx_destroy (&self->buckets);
    free (self);
    *self_p = NULL;
}

/* Readable while idle: the origin closed it or sent something unasked (either way it is not
 * a connection to send the next request on), or, for TLS, sent a message of the protocol's
 * own that the session took. */
static void s_on_idle_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_idle_t *e = w->data;
    if (!hms_origin_idle_check (&e->conn))
        s_drop (e->owner, e);
}

static void s_on_idle_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_idle_t *e = t->data;
    s_drop (e->owner, e);
}

static void s_key (char *key, size_t len, bool tls, const char *host, uint16_t port)
{
    snprintf (key, len, "%s://%s:%u", tls ? "https" : "http", host, port);
}

bool relay_origins_take (relay_origins_t *self, bool tls, const char *host, uint16_t port,
                         hms_origin_conn_t *out)
{
    char key[300];
    s_key (key, sizeof key, tls, host, port);
    s_bucket_t *b = zhashx_lookup (self->buckets, key);
    while (b) {
        s_idle_t *e = b->top;
        bool last = b->n == 1;
        bool alive = hms_origin_idle_check (&e->conn); /* a close that raced the watcher */
        if (alive)
            hms_origin_move (out, &e->conn);
        s_drop (self, e); /* may free b when it was the last */
        if (alive)
            return true;
        if (last)
            break;
    }
    return false;
}

void relay_origins_put (relay_origins_t *self, bool tls, const char *host, uint16_t port,
                        hms_origin_conn_t *conn)
{
    if (!self->max || !self->per_host) {
        hms_origin_close (conn);
        return;
    }
    char key[300];
    s_key (key, sizeof key, tls, host, port);
    s_bucket_t *b = zhashx_lookup (self->buckets, key);
    if (b && b->n >= self->per_host) /* this origin's oldest goes */
        s_drop (self, b->bottom);
    if (self->n >= self->max)
        s_drop (self, self->oldest);
    if (!(b = zhashx_lookup (self->buckets, key))) {
        b = hms_alloc (sizeof *b);
        snprintf (b->key, sizeof b->key, "%s", key);
        zhashx_insert (self->buckets, b->key, b);
    }
    s_idle_t *e = hms_alloc (sizeof *e);
    e->owner = self;
    e->bucket = b;
    hms_origin_move (&e->conn, conn);
    ev_io_init (&e->io, s_on_idle_io, e->conn.fd, EV_READ);
    e->io.data = e;
    ev_io_start (self->loop, &e->io);
    ev_timer_init (&e->timer, s_on_idle_timer, RELAY_ORIGIN_IDLE_S, 0);
    e->timer.data = e;
    ev_timer_start (self->loop, &e->timer);
    e->next = self->newest;
    if (self->newest)
        self->newest->prev = e;
    else
        self->oldest = e;
    self->newest = e;
    e->host_next = b->top;
    if (b->top)
        b->top->host_prev = e;
    else
        b->bottom = e;
    b->top = e;
    b->n++;
    self->n++;
}
