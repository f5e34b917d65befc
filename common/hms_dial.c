/* hms_dial: non-blocking connect with a deadline; names go through hms_resolve (its cache
 * and resolver threads), so the loop never waits for DNS. */
#include "hms_dial.h"
#include "hms_alloc.h"
#include "hms_soon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hms_dial {
    struct ev_loop *loop;
    hms_dial_fn *fn;
    void *arg;
    hms_addr_t addr;
    int fd;
    ev_io io;
    ev_timer timer;
    int timeout_ms;
    hms_sockopts_t opts;
    hms_soon_t now; /* reports a result known at once, from the loop */
    hms_resolve_t *resolve;
    char why[320];
    char target[300];
};

/* Loop thread: a name still being resolved is no longer wanted. */
static void s_resolve_release (hms_dial_t *self)
{
    if (self->resolve) {
        hms_resolve_cancel (self->resolve);
        self->resolve = NULL;
    }
}

static void s_finish (hms_dial_t *self, int fd)
{
    ev_io_stop (self->loop, &self->io);
    ev_timer_stop (self->loop, &self->timer);
    hms_soon_stop (self->loop, &self->now);
    s_resolve_release (self);
    if (fd < 0 && self->fd >= 0)
        close (self->fd);
    self->fn (fd, &self->addr, fd < 0 ? self->why : NULL, self->arg);
    free (self);
}

static void s_set_why (hms_dial_t *self, int err)
{
    char text[80];
    snprintf (self->why, sizeof self->why, "connect to %s: %s",
              hms_addr_str (&self->addr, text, sizeof text), strerror (err));
}

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    hms_dial_t *self = w->data;
    int e = hms_net_connect_result (self->fd);
    if (e == 0) {
        int fd = self->fd;
        self->fd = -1;
        s_finish (self, fd);
        return;
    }
    s_set_why (self, e);
    s_finish (self, -1);
}

static void s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    hms_dial_t *self = w->data;
    snprintf (self->why, sizeof self->why, "connect to %s: no answer within %d ms", self->target,
              self->timeout_ms);
    s_finish (self, -1);
}

/* A result known at once: connected (fd kept) or failed (why set). */
static void s_on_now (struct ev_loop *loop, hms_soon_t *soon)
{
    hms_dial_t *self = soon->data;
    int fd = self->fd;
    self->fd = -1;
    s_finish (self, fd);
}

static void s_connect (hms_dial_t *self)
{
    self->fd = hms_net_connect_opts (&self->addr, &self->opts);
    if (self->fd >= 0) {
        /* Asked again, connect says whether the handshake is over already (a target on
         * this host usually is): then no wait for writability, no watcher to register. */
        if (connect (self->fd, (const struct sockaddr *) &self->addr.ss, self->addr.len) == 0) {
            hms_soon_start (self->loop, &self->now);
            return;
        }
        if (errno == EALREADY || errno == EINPROGRESS || errno == EINTR) {
            ev_io_set (&self->io, self->fd, EV_WRITE);
            ev_io_start (self->loop, &self->io);
            return;
        }
        int e = errno;
        close (self->fd);
        self->fd = -1;
        errno = e;
    }
    s_set_why (self, errno);
    hms_soon_start (self->loop, &self->now); /* fd -1: reported as the failure */
}

static void s_on_dial_resolved (const hms_addr_t *addr, const char *why, void *arg)
{
    hms_dial_t *self = arg;
    self->resolve = NULL;
    if (!addr) {
        snprintf (self->why, sizeof self->why, "%s", why);
        s_finish (self, -1);
        return;
    }
    self->addr = *addr;
    s_connect (self);
}

static hms_dial_t *s_start (struct ev_loop *loop, const char *host, uint16_t port, int timeout_ms,
                            const hms_sockopts_t *opts, hms_dial_fn *fn, void *arg, int *fd_now)
{
    hms_dial_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->fn = fn;
    self->arg = arg;
    self->fd = -1;
    hms_hostport (host, port, self->target, sizeof self->target);
    ev_io_init (&self->io, s_on_io, -1, EV_WRITE);
    self->io.data = self;
    ev_timer_init (&self->timer, s_on_timer, timeout_ms / 1000.0, 0);
    self->timer.data = self;
    self->timeout_ms = timeout_ms;
    if (opts)
        self->opts = *opts;
    hms_soon_init (&self->now, s_on_now, self);
    ev_timer_start (loop, &self->timer);
    if (hms_addr_from (host, port, &self->addr) == 0) {
        s_connect (self);
        if (fd_now && self->fd >= 0 && hms_soon_pending (&self->now)) { /* connected already */
            *fd_now = self->fd;
            self->fd = -1;
            hms_dial_cancel (self);
            return NULL;
        }
        return self;
    }
    self->resolve = hms_resolve (loop, host, port, s_on_dial_resolved, self);
    return self;
}

hms_dial_t *hms_dial_start (struct ev_loop *loop, const char *host, uint16_t port, int timeout_ms,
                            const hms_sockopts_t *opts, hms_dial_fn *fn, void *arg)
{
    return s_start (loop, host, port, timeout_ms, opts, fn, arg, NULL);
}

hms_dial_t *hms_dial_start_now (struct ev_loop *loop, const char *host, uint16_t port,
                                int timeout_ms, const hms_sockopts_t *opts, hms_dial_fn *fn,
                                void *arg, int *fd_now)
{
    *fd_now = -1;
    return s_start (loop, host, port, timeout_ms, opts, fn, arg, fd_now);
}

void hms_dial_cancel (hms_dial_t *self)
{
    ev_io_stop (self->loop, &self->io);
    ev_timer_stop (self->loop, &self->timer);
    hms_soon_stop (self->loop, &self->now);
    s_resolve_release (self);
    if (self->fd >= 0)
        close (self->fd);
    free (self);
}
