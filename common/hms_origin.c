/* hms_origin: a connection to an origin server, plain or TLS, for event-loop code (see
 * hms_origin.h). */
#include "hms_origin.h"
#include "hms_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

hms_tls_ctx_t *hms_origin_tls_ctx (const char *ca_file, char *err, size_t errlen)
{
    if (!ca_file || !*ca_file)
        ca_file = HMS_ORIGIN_CA_DEFAULT;
    if (access (ca_file, R_OK) != 0) {
        snprintf (err, errlen,
                  "origin_ca_file %s: %s (a PEM bundle of the CAs that https origins' "
                  "certificates are checked against; install ca-certificates or set the key)",
                  ca_file, strerror (errno));
        return NULL;
    }
    hms_tls_opts_t opts = {.ca_file = ca_file, .server = false, .tls13_only = false};
    char why[512];
    hms_tls_ctx_t *ctx = hms_tls_ctx_new (&opts, why, sizeof why);
    if (!ctx)
        snprintf (err, errlen, "origin_ca_file %s: %s", ca_file, why);
    return ctx;
}

int hms_origin_tls_config (const char *configured, hms_tls_ctx_t **ctx, char *why, size_t whylen)
{
    *ctx = hms_origin_tls_ctx (configured, why, whylen);
    if (*ctx)
        return 0;
    if (configured && *configured)
        return -1;
    hms_warning ("https:// requests will be refused: %s", why);
    return 0;
}

int hms_origin_open (hms_origin_conn_t *c, int fd, hms_tls_ctx_t *tls, const char *host)
{
    c->fd = fd;
    c->tls = NULL;
    c->ready = !tls;
    c->want_write = tls != NULL; /* a client speaks first */
    c->why[0] = 0;
    if (tls && !(c->tls = hms_tls_new (tls, fd, host))) {
        snprintf (c->why, sizeof c->why, "cannot set up a TLS session for %s", host);
        close (fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void hms_origin_close (hms_origin_conn_t *c)
{
    if (c->tls)
        hms_tls_destroy (&c->tls);
    if (c->fd >= 0)
        close (c->fd);
    c->fd = -1;
    c->ready = false;
    c->want_write = false;
}

void hms_origin_move (hms_origin_conn_t *to, hms_origin_conn_t *c)
{
    *to = *c;
    c->fd = -1;
    c->tls = NULL;
    c->ready = false;
    c->want_write = false;
}

/* Advances the TLS handshake: 0 done, HMS_ORIGIN_AGAIN, -1 with why. */
static int s_handshake (hms_origin_conn_t *c)
{
    if (c->ready)
        return 0;
    int rc = hms_tls_handshake (c->tls);
    if (rc == 0) {
        c->ready = true;
        c->want_write = false;
        return 0;
    }
    if (rc > 0) {
        c->want_write = rc == HMS_TLS_WANT_WRITE;
        return HMS_ORIGIN_AGAIN;
    }
    snprintf (c->why, sizeof c->why, "TLS with the origin: %s", hms_tls_error (c->tls));
    return -1;
}

ssize_t hms_origin_write (hms_origin_conn_t *c, hms_buf_t *buf)
{
    if (!c->tls) {
        ssize_t n = hms_buf_write_fd (buf, c->fd);
        if (n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return n > 0 ? n : 0;
        snprintf (c->why, sizeof c->why, "writing to the origin: %s", strerror (errno));
        return -1;
    }
    int rc = s_handshake (c);
    if (rc)
        return rc == HMS_ORIGIN_AGAIN ? 0 : -1;
    ssize_t total = 0;
    for (;;) {
        size_t len;
        const void *data = hms_buf_peek (buf, &len);
        if (!len)
            break;
        ssize_t n = hms_tls_write (c->tls, data, len);
        if (n == HMS_TLS_AGAIN)
            return total;
        if (n < 0) {
            snprintf (c->why, sizeof c->why, "writing to the origin: %s", hms_tls_error (c->tls));
            return -1;
        }
        hms_buf_drain (buf, (size_t) n);
        total += n;
        if ((size_t) n < len)
            return total; /* the socket is full */
    }
    if (hms_tls_want_write (c->tls) && hms_tls_flush (c->tls) < 0) {
        snprintf (c->why, sizeof c->why, "writing to the origin: %s", hms_tls_error (c->tls));
        return -1;
    }
    return total;
}

ssize_t hms_origin_read (hms_origin_conn_t *c, void *buf, size_t len)
{
    if (!c->tls) {
        ssize_t n = recv (c->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return HMS_ORIGIN_AGAIN;
        snprintf (c->why, sizeof c->why, "reading from the origin: %s", strerror (errno));
        return -1;
    }
    int rc = s_handshake (c);
    if (rc)
        return rc;
    ssize_t n = hms_tls_read (c->tls, buf, len);
    if (n == HMS_TLS_AGAIN)
        return HMS_ORIGIN_AGAIN;
    if (n < 0) {
        snprintf (c->why, sizeof c->why, "reading from the origin: %s", hms_tls_error (c->tls));
        return -1;
    }
    return n;
}

bool hms_origin_pending (hms_origin_conn_t *c)
{
    return c->tls && c->ready && hms_tls_pending (c->tls) > 0;
}

static int s_events (const hms_origin_conn_t *c, bool want_read, bool want_write)
{
    if (c->fd < 0)
        return 0;
    if (!c->ready) /* the handshake first, whichever way it needs */
        return c->want_write ? HMS_ORIGIN_EV_WRITE : HMS_ORIGIN_EV_READ;
    int ev = want_read ? HMS_ORIGIN_EV_READ : 0;
    if (want_write || (c->tls && hms_tls_want_write (c->tls)))
        ev |= HMS_ORIGIN_EV_WRITE;
    return ev;
}

void hms_origin_watch (struct ev_loop *loop, ev_io *io, hms_origin_conn_t *c, bool want_read,
                       bool want_write)
{
    if (c->fd < 0) {
        ev_io_stop (loop, io);
        return;
    }
    int events = s_events (c, want_read, want_write);
    if (io->events != events || !ev_is_active (io)) {
        ev_io_stop (loop, io);
        ev_io_set (io, c->fd, events);
        if (events)
            ev_io_start (loop, io);
    }
    if (want_read && hms_origin_pending (c))
        ev_feed_event (loop, io, EV_READ);
}

bool hms_origin_idle_check (hms_origin_conn_t *c)
{
    if (c->fd < 0 || !c->ready)
        return false;
    if (!c->tls) {
        char b;
        ssize_t n = recv (c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    if (hms_tls_pending (c->tls) > 0)
        return false;
    char b;
    return hms_tls_read (c->tls, &b, 1) == HMS_TLS_AGAIN;
}

/* ---- timing ------------------------------------------------------------------------------ */

void hms_origin_timer_init (hms_origin_timer_t *t, void (*cb) (struct ev_loop *, ev_timer *, int),
                            void *data, int connect_ms, int idle_ms)
{
    ev_timer_init (&t->w, cb, 0, 0);
    t->w.data = data;
    t->connect_ms = connect_ms;
    t->idle_ms = idle_ms;
}

/* The answer is timed: a repeating timer, restarted by progress. (The handshake's is one
 * shot: repeat 0.) */
static void s_time_answer (struct ev_loop *loop, hms_origin_timer_t *t)
{
    ev_timer_stop (loop, &t->w);
    ev_timer_set (&t->w, 0, t->idle_ms / 1000.0);
    ev_timer_again (loop, &t->w);
}

void hms_origin_timer_arm (struct ev_loop *loop, hms_origin_timer_t *t, const hms_origin_conn_t *c)
{
    if (c->ready) {
        s_time_answer (loop, t);
        return;
    }
    ev_timer_stop (loop, &t->w);
    ev_timer_set (&t->w, t->connect_ms / 1000.0, 0);
    ev_timer_start (loop, &t->w);
}

void hms_origin_timer_progress (struct ev_loop *loop, hms_origin_timer_t *t,
                                const hms_origin_conn_t *c, bool moved)
{
    if (!ev_is_active (&t->w) || !c->ready)
        return;
    if (t->w.repeat == 0) /* the handshake just ended: from now on the answer is timed */
        s_time_answer (loop, t);
    else if (moved)
        ev_timer_again (loop, &t->w);
}

void hms_origin_timer_stop (struct ev_loop *loop, hms_origin_timer_t *t)
{
    ev_timer_stop (loop, &t->w);
}

void hms_origin_timer_why (const hms_origin_timer_t *t, const hms_origin_conn_t *c, char *why,
                           size_t len)
{
    if (c->ready)
        snprintf (why, len, "the origin sent nothing for %d ms", t->idle_ms);
    else
        snprintf (why, len, "the origin did not finish the TLS handshake within %d ms",
                  t->connect_ms);
}
