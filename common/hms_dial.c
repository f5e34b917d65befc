/* hms_dial: non-blocking connect with a deadline; names go through hms_resolve (its cache
 * and resolver threads), so the loop never waits for DNS. A name with several addresses is
 * tried address by address, in the manner of RFC 8305 (Happy Eyeballs): the next one as
 * soon as one fails, or after S_ATTEMPT_DELAY_MS while the earlier ones still wait; the
 * first connection made wins. An address that failed is put last in the resolver's cache. */
#include "hms_dial.h"
#include "hms_alloc.h"
#include "hms_soon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* RFC 8305 5: "Connection Attempt Delay", 250 ms recommended */
#define S_ATTEMPT_DELAY_MS 250

typedef struct {
    hms_dial_t *dial;
    int fd; /* -1: not started, or over */
    ev_io io;
} s_attempt_t;

struct hms_dial {
    struct ev_loop *loop;
    hms_dial_fn *fn;
    void *arg;
    hms_addrs_t addrs;
    s_attempt_t att[HMS_RESOLVE_ADDRS_MAX]; /* one per address, in the same order */
    int next;                               /* the address tried next */
    int waiting;                            /* attempts in progress */
    int won_fd;
    bool named; /* host is a name: failed addresses are demoted in the cache */
    ev_timer timer;
    ev_timer stagger;
    int timeout_ms;
    hms_sockopts_t opts;
    hms_soon_t now; /* reports a result known at once, from the loop */
    hms_resolve_t *resolve;
    char host[256];
    char why[320];
    char errs[320]; /* what each failed address said */
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

static void s_attempt_stop (hms_dial_t *self, s_attempt_t *a)
{
    ev_io_stop (self->loop, &a->io);
    if (a->fd >= 0) {
        close (a->fd);
        a->fd = -1;
        self->waiting--;
    }
}

static void s_stop_all (hms_dial_t *self)
{
    for (int i = 0; i < self->addrs.n; i++)
        s_attempt_stop (self, &self->att[i]);
    ev_timer_stop (self->loop, &self->timer);
    ev_timer_stop (self->loop, &self->stagger);
    hms_soon_stop (self->loop, &self->now);
    s_resolve_release (self);
}

static void s_finish (hms_dial_t *self)
{
    int fd = self->won_fd;
    self->won_fd = -1;
    s_stop_all (self);
    self->fn (fd, fd < 0 ? self->why : NULL, self->arg);
    free (self);
}

/* Address i said err: noted for the failure's text, and put last for later dials. */
static void s_failed (hms_dial_t *self, int i, int err)
{
    char text[80];
    hms_addr_str (&self->addrs.addr[i], text, sizeof text);
    size_t used = strlen (self->errs);
    snprintf (self->errs + used, sizeof self->errs - used, "%s%s: %s", used ? ", " : "", text,
              strerror (err));
    if (self->named)
        hms_resolve_demote (self->host, &self->addrs.addr[i]);
}

/* Every address failed: one address says "connect to ADDR: why", several "connect to
 * host:port: ADDR: why, ADDR: why". A name is looked up again by the next dial. */
static void s_all_failed (hms_dial_t *self)
{
    if (self->named)
        hms_resolve_forget (self->host);
    if (self->addrs.n == 1)
        snprintf (self->why, sizeof self->why, "connect to %s", self->errs);
    else
        snprintf (self->why, sizeof self->why, "connect to %s: %s", self->target, self->errs);
}

/* Address i connected on fd: the others are let go (those still waiting are slower than it:
 * put last), and the dial reports. */
static void s_win (hms_dial_t *self, int i, int fd)
{
    self->att[i].fd = -1;
    self->waiting--;
    ev_io_stop (self->loop, &self->att[i].io);
    self->won_fd = fd;
    for (int j = 0; j < i && self->named; j++)
        if (self->att[j].fd >= 0)
            hms_resolve_demote (self->host, &self->addrs.addr[j]);
}

static void s_try_next (hms_dial_t *self);

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_attempt_t *a = w->data;
    hms_dial_t *self = a->dial;
    int i = (int) (a - self->att);
    int e = hms_net_connect_result (a->fd);
    if (e == 0) {
        s_win (self, i, a->fd);
        s_finish (self);
        return;
    }
    s_attempt_stop (self, a);
    s_failed (self, i, e);
    s_try_next (self); /* a result it comes to is reported from the loop */
}

/* Opens a socket to addr and connects it: 1 when connected already (asked again, connect
 * says whether the handshake is over: a target on this host usually is, and then no wait
 * for writability, no watcher), 0 in progress, -1 with errno. The socket in *fd. */
static int s_open (const hms_addr_t *addr, const hms_sockopts_t *opts, int *fd)
{
    *fd = hms_net_connect_opts (addr, opts);
    if (*fd < 0)
        return -1;
    if (connect (*fd, (const struct sockaddr *) &addr->ss, addr->len) == 0)
        return 1;
    if (errno == EALREADY || errno == EINPROGRESS || errno == EINTR)
        return 0;
    int e = errno;
    close (*fd);
    *fd = -1;
    errno = e;
    return -1;
}

/* Attempt i goes on with what s_open said (rc, fd): true when it connected or waits. */
static bool s_attempt_go (hms_dial_t *self, int i, int rc, int fd)
{
    if (rc < 0) {
        s_failed (self, i, errno);
        return false;
    }
    self->waiting++;
    if (rc == 1) {
        s_win (self, i, fd);
        hms_soon_start (self->loop, &self->now);
        return true;
    }
    s_attempt_t *a = &self->att[i];
    a->fd = fd;
    ev_io_set (&a->io, fd, EV_WRITE);
    ev_io_start (self->loop, &a->io);
    if (self->next < self->addrs.n)
        ev_timer_start (self->loop, &self->stagger);
    return true;
}

/* Starts attempts until one is in progress, or connected, or no address is left (then the
 * failure is reported from the loop when nothing waits either). */
static void s_try_next (hms_dial_t *self)
{
    ev_timer_stop (self->loop, &self->stagger);
    while (self->next < self->addrs.n) {
        int i = self->next++, fd;
        int rc = s_open (&self->addrs.addr[i], &self->opts, &fd);
        if (s_attempt_go (self, i, rc, fd))
            return;
    }
    if (self->waiting == 0) {
        s_all_failed (self);
        hms_soon_start (self->loop, &self->now); /* won_fd -1: reported as the failure */
    }
}

/* The earlier addresses still wait: the next one is tried alongside. */
static void s_on_stagger (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_try_next (w->data);
}

static void s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    hms_dial_t *self = w->data;
    if (self->errs[0])
        snprintf (self->why, sizeof self->why, "connect to %s: no answer within %d ms (%s)",
                  self->target, self->timeout_ms, self->errs);
    else
        snprintf (self->why, sizeof self->why, "connect to %s: no answer within %d ms",
                  self->target, self->timeout_ms);
    s_finish (self);
}

/* A result known at once: connected (won_fd) or failed (why set). */
static void s_on_now (struct ev_loop *loop, hms_soon_t *soon)
{
    s_finish (soon->data);
}

static void s_on_dial_resolved (const hms_addrs_t *addrs, const char *why, void *arg)
{
    hms_dial_t *self = arg;
    self->resolve = NULL;
    if (!addrs) {
        snprintf (self->why, sizeof self->why, "%s", why);
        s_finish (self);
        return;
    }
    self->addrs = *addrs;
    s_try_next (self);
}

static hms_dial_t *s_start (struct ev_loop *loop, const char *host, uint16_t port, int timeout_ms,
                            const hms_sockopts_t *opts, hms_dial_fn *fn, void *arg, int *fd_now)
{
    /* An IP literal is tried before anything is set up: on this host it usually connects
     * at once, and a caller that can take it then gets it with no dial made at all */
    hms_addr_t literal;
    int literal_rc = 0, literal_fd = -1, literal_errno = 0;
    bool is_literal = hms_addr_from (host, port, &literal) == 0;
    if (is_literal) {
        literal_rc = s_open (&literal, opts, &literal_fd);
        literal_errno = errno;
        if (literal_rc == 1 && fd_now) {
            *fd_now = literal_fd;
            return NULL;
        }
    }
    hms_dial_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->fn = fn;
    self->arg = arg;
    self->won_fd = -1;
    snprintf (self->host, sizeof self->host, "%s", host);
    hms_hostport (host, port, self->target, sizeof self->target);
    for (int i = 0; i < HMS_RESOLVE_ADDRS_MAX; i++) {
        s_attempt_t *a = &self->att[i];
        a->dial = self;
        a->fd = -1;
        ev_io_init (&a->io, s_on_io, -1, EV_WRITE);
        a->io.data = a;
    }
    ev_timer_init (&self->timer, s_on_timer, timeout_ms / 1000.0, 0);
    self->timer.data = self;
    ev_timer_init (&self->stagger, s_on_stagger, S_ATTEMPT_DELAY_MS / 1000.0, 0);
    self->stagger.data = self;
    self->timeout_ms = timeout_ms;
    if (opts)
        self->opts = *opts;
    hms_soon_init (&self->now, s_on_now, self);
    ev_timer_start (loop, &self->timer);
    if (is_literal) {
        self->addrs.addr[0] = literal;
        self->addrs.n = 1;
        self->next = 1;
        errno = literal_errno;
        if (!s_attempt_go (self, 0, literal_rc, literal_fd)) {
            s_all_failed (self);
            hms_soon_start (loop, &self->now); /* reported from the loop */
        }
        return self;
    }
    self->named = true;
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
    s_stop_all (self);
    if (self->won_fd >= 0)
        close (self->won_fd);
    free (self);
}
