/* hms_origin_pool: a worker's idle connections to origins (see hms_origin_pool.h). Taking
 * and keeping cost O(1): a hash of origins, each with its stack of connections, and one list
 * of all by age. */
#include "hms_origin_pool.h"
#include "hms_alloc.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct s_bucket s_bucket_t;

typedef struct s_idle {
    hms_origin_pool_t *owner;
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

struct hms_origin_pool {
    struct ev_loop *loop;
    zhashx_t *buckets; /* key -> s_bucket_t */
    s_idle_t *newest, *oldest;
    size_t n;
    size_t max, per_host;
    double idle_s;
};

int hms_origin_pool_limits (hms_config_t *cfg, hms_origin_pool_limits_t *out, char *err,
                            size_t errlen)
{
    const char *keys[2] = {"origin_keep_max", "origin_keep_per_host"};
    size_t *values[2] = {&out->max, &out->per_host};
    for (int i = 0; i < 2; i++) {
        int64_t v = hms_config_int (cfg, keys[i]);
        if (v < 0 || v > HMS_ORIGIN_POOL_KEEP_LIMIT) {
            snprintf (err, errlen, "%s must be 0 to %d, not %" PRId64, keys[i],
                      HMS_ORIGIN_POOL_KEEP_LIMIT, v);
            return -1;
        }
        *values[i] = (size_t) v;
    }
    return 0;
}

static void s_bucket_free (void **item)
{
    free (*item);
    *item = NULL;
}

hms_origin_pool_t *hms_origin_pool_new (struct ev_loop *loop, size_t max, size_t per_host,
                                        double idle_s)
{
    hms_origin_pool_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->idle_s = idle_s;
    self->max = max;
    self->per_host = per_host;
    self->buckets = zhashx_new ();
    zhashx_set_destructor (self->buckets, s_bucket_free);
    return self;
}

/* Unlinks e from both lists, and forgets its origin when it was the last one. */
static void s_unlink (hms_origin_pool_t *self, s_idle_t *e)
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
static void s_drop (hms_origin_pool_t *self, s_idle_t *e)
{
    s_unlink (self, e);
    hms_origin_close (&e->conn);
    free (e);
}

void hms_origin_pool_destroy (hms_origin_pool_t **self_p)
{
    hms_origin_pool_t *self = *self_p;
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

bool hms_origin_pool_take (hms_origin_pool_t *self, bool tls, const char *host, uint16_t port,
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

void hms_origin_pool_put (hms_origin_pool_t *self, bool tls, const char *host, uint16_t port,
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
    ev_timer_init (&e->timer, s_on_idle_timer, self->idle_s, 0);
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
