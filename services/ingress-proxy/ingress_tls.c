/* ingress_tls: the TLS of the proxy port (default 3129). After the handshake, a client that
 * agreed on h2 goes to the HTTP/2 front end (ingress_h2); one that asked for http/1.1 (curl
 * -x https://... without --proxy-http2, a browser's HTTPS proxy) speaks HTTP/1.1 inside its
 * TLS: the decrypted bytes are pumped through a socket pair whose other end the HTTP/1.1
 * front end takes as a client connection, so CONNECT, plain requests, users and policy work
 * as on the plain port. The pump holds at most one buffer each way (16 KiB) and reads a side
 * only when the other has taken the last bytes. */
#include "hms_alloc.h"
#include "hms_h2.h"
#include "hms_log.h"
#include "hms_soon.h"
#include "ingress_int.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { S_BUF = 16384, S_ROUNDS = 16 };

/* ---- the handshake ------------------------------------------------------------------------ */

typedef struct {
    ingress_worker_t *w;
    hms_tls_t *tls;
    int fd;
    hms_addr_t peer;
    ev_io io;
    ev_timer timer;
    hms_worker_item_t *item;
} s_hs_t;

static void s_hs_free (s_hs_t *h, bool close_all)
{
    hms_worker_untrack (h->w->worker, h->item);
    ev_io_stop (h->w->loop, &h->io);
    ev_timer_stop (h->w->loop, &h->timer);
    if (close_all) {
        hms_tls_destroy (&h->tls);
        close (h->fd);
    }
    free (h);
}

static void s_pump_start (ingress_worker_t *w, hms_tls_t *tls, int fd, const hms_addr_t *peer);

static void s_hs_step (s_hs_t *h)
{
    int rc = hms_tls_handshake (h->tls);
    if (rc > 0) {
        ev_io_stop (h->w->loop, &h->io);
        ev_io_set (&h->io, h->fd, rc == HMS_TLS_WANT_WRITE ? EV_WRITE : EV_READ);
        ev_io_start (h->w->loop, &h->io);
        return;
    }
    char ip[64];
    hms_addr_ip (&h->peer, ip, sizeof ip);
    if (rc < 0) {
        hms_debug ("ingress.tls", "proxy client %s: TLS handshake failed: %s", ip,
                   hms_tls_error (h->tls));
        s_hs_free (h, true);
        return;
    }
    const char *alpn = hms_tls_alpn (h->tls);
    ingress_worker_t *w = h->w;
    hms_tls_t *tls = h->tls;
    int fd = h->fd;
    hms_addr_t peer = h->peer;
    s_hs_free (h, false);
    if (alpn && strcmp (alpn, "h2") == 0)
        ingress_h2_start (w, tls, &peer); /* takes tls and fd */
    else
        s_pump_start (w, tls, fd, &peer);
}

static void s_hs_on_io (struct ev_loop *loop, ev_io *io, int revents)
{
    s_hs_step (io->data);
}

static void s_hs_on_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_hs_t *h = t->data;
    char ip[64];
    hms_debug ("ingress.tls", "proxy client %s: no TLS handshake within %d ms",
               hms_addr_ip (&h->peer, ip, sizeof ip), HMS_H2_HANDSHAKE_MS);
    s_hs_free (h, true);
}

static void s_hs_on_stop (void *obj)
{
    s_hs_free (obj, true);
}

void ingress_tls_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer)
{
    hms_tls_t *tls = hms_tls_new (w->ingress->proxy_tls, fd, NULL);
    if (!tls) {
        close (fd);
        return;
    }
    s_hs_t *h = hms_alloc (sizeof *h);
    h->w = w;
    h->tls = tls;
    h->fd = fd;
    h->peer = *peer;
    ev_io_init (&h->io, s_hs_on_io, fd, EV_READ);
    h->io.data = h;
    ev_timer_init (&h->timer, s_hs_on_timer, HMS_H2_HANDSHAKE_MS / 1000.0, 0);
    h->timer.data = h;
    ev_timer_start (w->loop, &h->timer);
    h->item = hms_worker_track (w->worker, s_hs_on_stop, h);
    s_hs_step (h);
}

/* ---- HTTP/1.1 inside TLS: the pump -------------------------------------------------------- */

typedef struct {
    ingress_worker_t *w;
    hms_tls_t *tls;
    int fd;    /* the client's socket */
    int plain; /* our end of the pair; the HTTP/1.1 front end has the other */
    char ip[64];
    ev_io tls_io, plain_io;
    hms_soon_t more; /* a busy pump goes on at the end of the loop turn, after the others */
    char up[S_BUF];
    size_t up_len, up_off; /* decrypted from the client, for the front end */
    char down[S_BUF];
    size_t down_len, down_off; /* from the front end, for the client */
    bool tls_eof, plain_eof, up_shut;
    hms_worker_item_t *item;
} s_pump_t;

static void s_pump_end (s_pump_t *p, const char *why)
{
    if (why)
        hms_debug ("ingress.tls", "HTTP/1.1-over-TLS client %s: %s", p->ip, why);
    hms_worker_untrack (p->w->worker, p->item);
    ev_io_stop (p->w->loop, &p->tls_io);
    ev_io_stop (p->w->loop, &p->plain_io);
    hms_soon_stop (p->w->loop, &p->more);
    hms_tls_destroy (&p->tls);
    close (p->fd);
    close (p->plain);
    free (p);
}

static void s_watch (ev_io *io, struct ev_loop *loop, int events)
{
    if (events == (io->events & (EV_READ | EV_WRITE)) && ev_is_active (io) == (events != 0))
        return;
    ev_io_stop (loop, io);
    if (events) {
        ev_io_set (io, io->fd, events);
        ev_io_start (loop, io);
    }
}

/* Client to front end: pass what is held, then read the client when nothing is. -1 ended. */
static int s_up (s_pump_t *p, bool *moved)
{
    if (p->up_off < p->up_len) {
        ssize_t n =
            send (p->plain, p->up + p->up_off, p->up_len - p->up_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p->up_off += (size_t) n;
            *moved = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s_pump_end (p, "the proxy side closed");
            return -1;
        }
    }
    if (p->up_off < p->up_len)
        return 0;
    p->up_off = p->up_len = 0;
    if (p->tls_eof) {
        if (!p->up_shut) { /* the client's close_notify: the front end reads an EOF */
            shutdown (p->plain, SHUT_WR);
            p->up_shut = true;
        }
        return 0;
    }
    ssize_t n = hms_tls_read (p->tls, p->up, sizeof p->up);
    if (n > 0) {
        p->up_len = (size_t) n;
        *moved = true;
    } else if (n == HMS_TLS_EOF) {
        p->tls_eof = true;
        *moved = true;
    } else if (n == HMS_TLS_ERROR) {
        s_pump_end (p, hms_tls_error (p->tls));
        return -1;
    }
    return 0;
}

/* Front end to client. -1 ended. */
static int s_down (s_pump_t *p, bool *moved)
{
    if (p->down_off < p->down_len) {
        ssize_t n = hms_tls_write (p->tls, p->down + p->down_off, p->down_len - p->down_off);
        if (n > 0) {
            p->down_off += (size_t) n;
            *moved = true;
        } else if (n == HMS_TLS_ERROR) {
            s_pump_end (p, hms_tls_error (p->tls));
            return -1;
        }
    } else if (hms_tls_want_write (p->tls) && hms_tls_flush (p->tls) < 0) {
        s_pump_end (p, hms_tls_error (p->tls));
        return -1;
    }
    if (p->down_off < p->down_len || p->plain_eof)
        return 0;
    p->down_off = p->down_len = 0;
    ssize_t n = recv (p->plain, p->down, sizeof p->down, MSG_DONTWAIT);
    if (n > 0) {
        p->down_len = (size_t) n;
        *moved = true;
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        p->plain_eof = true; /* the front end is done with this client */
        *moved = true;
    }
    return 0;
}

static void s_pump (s_pump_t *p)
{
    hms_soon_stop (p->w->loop, &p->more);
    for (int round = 0;; round++) {
        bool moved = false;
        if (s_up (p, &moved) < 0 || s_down (p, &moved) < 0)
            return;
        if (!moved)
            break;
        if (round == S_ROUNDS) {
            hms_soon_start (p->w->loop, &p->more);
            break;
        }
    }
    if (p->plain_eof && p->down_off == p->down_len) {
        /* all the front end said is out: close_notify (best effort), and close */
        int rc = hms_tls_bye (p->tls);
        if (rc != HMS_TLS_WANT_WRITE) {
            s_pump_end (p, NULL);
            return;
        }
    }
    int tls_ev = (!p->tls_eof && p->up_len == 0 ? EV_READ : 0) |
                 (hms_tls_want_write (p->tls) ? EV_WRITE : 0);
    int plain_ev =
        (!p->plain_eof && p->down_len == 0 ? EV_READ : 0) | (p->up_off < p->up_len ? EV_WRITE : 0);
    s_watch (&p->tls_io, p->w->loop, tls_ev);
    s_watch (&p->plain_io, p->w->loop, plain_ev);
}

static void s_pump_on_io (struct ev_loop *loop, ev_io *io, int revents)
{
    s_pump (io->data);
}

static void s_pump_on_more (struct ev_loop *loop, hms_soon_t *soon)
{
    s_pump (soon->data);
}

static void s_pump_on_stop (void *obj)
{
    s_pump_end (obj, "shutting down");
}

static void s_pump_start (ingress_worker_t *w, hms_tls_t *tls, int fd, const hms_addr_t *peer)
{
    int pair[2];
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
        hms_warning ("cannot serve an HTTP/1.1-over-TLS client: socketpair: %s", strerror (errno));
        hms_tls_destroy (&tls);
        close (fd);
        return;
    }
    s_pump_t *p = hms_alloc (sizeof *p);
    p->w = w;
    p->tls = tls;
    p->fd = fd;
    p->plain = pair[0];
    hms_addr_ip (peer, p->ip, sizeof p->ip);
    ev_io_init (&p->tls_io, s_pump_on_io, fd, EV_READ);
    p->tls_io.data = p;
    ev_io_init (&p->plain_io, s_pump_on_io, pair[0], EV_READ);
    p->plain_io.data = p;
    hms_soon_init (&p->more, s_pump_on_more, p);
    p->item = hms_worker_track (w->worker, s_pump_on_stop, p);
    ingress_h1_accept (w, pair[1], peer); /* the client, as the HTTP/1.1 port sees one */
    s_pump (p);
}
