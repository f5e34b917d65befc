/* relay_origin: a worker's idle HTTP/1.1 connections to origins, kept after a complete
 * answer so that the next plain HTTP request to the same host:port skips the TCP handshake.
 * A kept connection is watched while idle: the origin closing it (or sending anything) and
 * the idle timeout drop it. Limits: RELAY_ORIGIN_IDLE_MAX in all and RELAY_ORIGIN_PER_HOST
 * per host:port per worker; the newest is reused first. */
#include "hms_alloc.h"
#include "relay_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct s_idle {
    relay_origins_t *owner;
    char key[300];
    int fd;
    ev_io io;
    ev_timer timer;
    struct s_idle *next;
} s_idle_t;

struct relay_origins {
    struct ev_loop *loop;
    s_idle_t *head; /* newest first */
    size_t n;
};

relay_origins_t *relay_origins_new (struct ev_loop *loop)
{
    relay_origins_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    return self;
}

/* Unlinks, stops and closes one idle connection. */
static void s_drop (relay_origins_t *self, s_idle_t *e)
{
    for (s_idle_t **p = &self->head; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    self->n--;
    ev_io_stop (self->loop, &e->io);
    ev_timer_stop (self->loop, &e->timer);
    if (e->fd >= 0)
        close (e->fd);
    free (e);
}

void relay_origins_destroy (relay_origins_t **self_p)
{
    relay_origins_t *self = *self_p;
    if (!self)
        return;
    while (self->head)
        s_drop (self, self->head);
    free (self);
    *self_p = NULL;
}

/* Readable while idle: the origin closed it or sent something unasked. Either way it is not
 * a connection to send the next request on. */
static void s_on_idle_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_idle_t *e = w->data;
    s_drop (e->owner, e);
}

static void s_on_idle_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_idle_t *e = t->data;
    s_drop (e->owner, e);
}

static void s_key (char *key, size_t len, const char *host, uint16_t port)
{
    snprintf (key, len, "%s:%u", host, port);
}

/* Whether fd looks usable: nothing to read and not closed (a close that raced the watcher). */
static bool s_alive (int fd)
{
    char c;
    ssize_t n = recv (fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int relay_origins_take (relay_origins_t *self, const char *host, uint16_t port)
{
    char key[300];
    s_key (key, sizeof key, host, port);
    for (s_idle_t *e = self->head, *next; e; e = next) {
        next = e->next;
        if (strcmp (e->key, key) != 0)
            continue;
        if (!s_alive (e->fd)) {
            s_drop (self, e);
            continue;
        }
        int fd = e->fd;
        e->fd = -1;
        s_drop (self, e);
        return fd;
    }
    return -1;
}

void relay_origins_put (relay_origins_t *self, const char *host, uint16_t port, int fd)
{
    char key[300];
    s_key (key, sizeof key, host, port);
    size_t same = 0;
    s_idle_t *oldest_same = NULL;
    for (s_idle_t *e = self->head; e; e = e->next)
        if (strcmp (e->key, key) == 0) {
            same++;
            oldest_same = e;
        }
    if (same >= RELAY_ORIGIN_PER_HOST)
        s_drop (self, oldest_same);
    else if (self->n >= RELAY_ORIGIN_IDLE_MAX) {
        s_idle_t *last = self->head;
        while (last->next)
            last = last->next;
        s_drop (self, last);
    }
    s_idle_t *e = hms_alloc (sizeof *e);
    e->owner = self;
    snprintf (e->key, sizeof e->key, "%s", key);
    e->fd = fd;
    ev_io_init (&e->io, s_on_idle_io, fd, EV_READ);
    e->io.data = e;
    ev_io_start (self->loop, &e->io);
    ev_timer_init (&e->timer, s_on_idle_timer, RELAY_ORIGIN_IDLE_S, 0);
    e->timer.data = e;
    ev_timer_start (self->loop, &e->timer);
    e->next = self->head;
    self->head = e;
    self->n++;
}
