/* hms_tunnel: the two-way byte pump between sockets and HTTP/2 streams; see hms_tunnel.h. */
#include "hms_tunnel.h"
#include "hms_alloc.h"
#include "hms_buf.h"
#include "hms_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { S_NONE, S_FD, S_STREAM } s_kind_t;

typedef struct {
    hms_tunnel_t *tunnel;
    hms_tunnel_side_t side;
    s_kind_t kind;
    int fd;
    ev_io io;
    hms_h2_stream_t *stream;
    hms_buf_t *out;     /* toward this end: fd ends, and any end before it is attached */
    bool eof_in;        /* this end will send nothing more */
    bool shut_out;      /* we told this end that nothing more comes (FIN / END_STREAM) */
    bool closed;        /* stream ends: the stream is gone */
    size_t unconsumed;  /* stream ends: bytes received and not yet consumed */
    uint64_t delivered; /* bytes handed to this end */
    int pipe[2];        /* splice: bytes read from this end on their way to the other */
    size_t piped;       /* how many of them are in the pipe */
    bool pipe_full;     /* the last splice in found no room: read again once some went out */
    bool bulk;          /* a read from this end filled the buffer: splice from now on */
    bool held;          /* what is queued toward this end waits for more (hms_tunnel_hold) */
    ev_timer hold;
    ev_prepare flush; /* socket ends: writes what streams queued, before the loop waits */
} s_end_t;

struct hms_tunnel {
    struct ev_loop *loop;
    s_end_t end[2];
    ev_timer idle;
    int idle_ms;
    hms_tunnel_done_fn *done;
    void *arg;
    hms_tunnel_headers_fn *headers;
    bool paused;          /* handed over for a bypass offer: no I/O */
    bool splice;          /* socket to socket through a pipe (splice(2)), not user space */
    hms_worker_t *worker; /* when made on a worker thread: aborted when it stops */
    hms_worker_item_t *item;
};

static const char *s_side_name (const s_end_t *e)
{
    return e->side == HMS_TUNNEL_A ? "client" : "target";
}

static s_end_t *s_other (s_end_t *e)
{
    return &e->tunnel->end[1 - e->side];
}

static void s_free (hms_tunnel_t *self, const char *why, bool reset, int status);
static void s_update_fd (s_end_t *e);
static ssize_t s_write_buf (s_end_t *e);

/* ---- pipes for splice(2) ------------------------------------------------------------------
 * A tunnel holds a pipe per direction only while bytes are in it; empty pipes go back to a
 * small per-thread cache, so idle tunnels hold none. */

#define S_PIPE_CACHE 32
#define S_PIPE_SIZE  (256 * 1024)

static __thread int s_pipe_cache[S_PIPE_CACHE][2];
static __thread int s_pipes_cached;

static bool s_pipe_get (s_end_t *e)
{
    if (s_pipes_cached > 0) {
        s_pipes_cached--;
        e->pipe[0] = s_pipe_cache[s_pipes_cached][0];
        e->pipe[1] = s_pipe_cache[s_pipes_cached][1];
        return true;
    }
    if (pipe2 (e->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        e->pipe[0] = e->pipe[1] = -1;
        return false; /* out of descriptors: this read goes through user space */
    }
    /* larger than the default 64 KiB when allowed; the tunnel's queue bound holds anyway */
    (void) fcntl (e->pipe[1], F_SETPIPE_SZ, S_PIPE_SIZE);
    return true;
}

static void s_pipe_put (s_end_t *e)
{
    if (e->pipe[0] < 0)
        return;
    if (e->piped == 0 && s_pipes_cached < S_PIPE_CACHE) {
        s_pipe_cache[s_pipes_cached][0] = e->pipe[0];
        s_pipe_cache[s_pipes_cached][1] = e->pipe[1];
        s_pipes_cached++;
    } else {
        close (e->pipe[0]);
        close (e->pipe[1]);
    }
    e->pipe[0] = e->pipe[1] = -1;
    e->piped = 0;
}

bool hms_tunnel_pause (hms_tunnel_t *self, int *a_fd, int *b_fd, uint64_t *a_to_b, uint64_t *b_to_a)
{
    for (int i = 0; i < 2; i++) {
        s_end_t *e = &self->end[i];
        if (e->kind != S_FD || e->eof_in || e->shut_out || (e->out && hms_buf_size (e->out)) ||
            e->piped)
            return false;
    }
    self->paused = true;
    for (int i = 0; i < 2; i++)
        ev_io_stop (self->loop, &self->end[i].io);
    ev_timer_stop (self->loop, &self->idle);
    *a_fd = self->end[HMS_TUNNEL_A].fd;
    *b_fd = self->end[HMS_TUNNEL_B].fd;
    *a_to_b = self->end[HMS_TUNNEL_B].delivered;
    *b_to_a = self->end[HMS_TUNNEL_A].delivered;
    return true;
}

void hms_tunnel_resume (hms_tunnel_t *self)
{
    self->paused = false;
    if (self->idle_ms)
        ev_timer_again (self->loop, &self->idle);
    s_update_fd (&self->end[HMS_TUNNEL_A]);
    s_update_fd (&self->end[HMS_TUNNEL_B]);
}

void hms_tunnel_release (hms_tunnel_t *self)
{
    /* closing our descriptors of sockets the agent closed silently sends nothing */
    s_free (self, "offloaded", false, 0);
}

static void s_free (hms_tunnel_t *self, const char *why, bool reset, int status)
{
    if (self->worker)
        hms_worker_untrack (self->worker, self->item);
    ev_timer_stop (self->loop, &self->idle);
    for (int i = 0; i < 2; i++) {
        s_end_t *e = &self->end[i];
        ev_timer_stop (self->loop, &e->hold);
        ev_prepare_stop (self->loop, &e->flush);
        if (e->kind == S_FD && e->held && hms_buf_size (e->out) > 0) {
            e->held = false; /* what waited goes before the end (a 200 before a reset) */
            (void) s_write_buf (e);
        }
        if (e->kind == S_FD) {
            ev_io_stop (self->loop, &e->io);
            if (reset) {
                struct linger lg = {1, 0};
                setsockopt (e->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            close (e->fd);
            s_pipe_put (e);
        } else if (e->kind == S_STREAM && !e->closed) {
            hms_h2_stream_orphan (e->stream);
            if (e->unconsumed)
                hms_h2_stream_consume (e->stream, e->unconsumed);
            if (status && i == HMS_TUNNEL_A) {
                if (hms_h2_refuse (e->stream, status, why ? why : "refused") != 0)
                    hms_h2_stream_reset (e->stream, NGHTTP2_CONNECT_ERROR);
            } else if (reset)
                hms_h2_stream_reset (e->stream, NGHTTP2_CONNECT_ERROR);
        }
        hms_buf_destroy (&e->out);
    }
    if (self->done)
        self->done (self, why, self->end[HMS_TUNNEL_B].delivered, self->end[HMS_TUNNEL_A].delivered,
                    self->arg);
    free (self);
}

void hms_tunnel_abort (hms_tunnel_t *self, const char *why)
{
    s_free (self, why ? why : "aborted", true, 0);
}

void hms_tunnel_refuse (hms_tunnel_t *self, int status, const char *why)
{
    s_free (self, why ? why : "refused", true, status);
}

static void s_fail (s_end_t *e, const char *what)
{
    char why[256];
    snprintf (why, sizeof why, "%s: %s", s_side_name (e), what);
    hms_tunnel_abort (e->tunnel, why);
}

/* Done when both ends finished sending, everything was delivered, and streams closed. */
static bool s_check_done (hms_tunnel_t *self)
{
    for (int i = 0; i < 2; i++) {
        s_end_t *e = &self->end[i];
        if (e->kind == S_NONE || !e->eof_in || !e->shut_out)
            return false;
        if (e->kind == S_STREAM && !e->closed)
            return false;
        if ((e->out && hms_buf_size (e->out) > 0) || s_other (e)->piped)
            return false;
    }
    s_free (self, NULL, false, 0);
    return true;
}

/* Bytes waiting to reach end e (its own queue and the pipe toward it, or its stream's). */
static size_t s_queued (const s_end_t *e)
{
    if (e->kind == S_STREAM && !e->closed)
        return hms_h2_stream_queued (e->stream);
    return (e->out ? hms_buf_size (e->out) : 0) + e->tunnel->end[1 - e->side].piped;
}

static void s_update_fd (s_end_t *e)
{
    if (e->kind != S_FD || e->tunnel->paused)
        return;
    int events = 0;
    if (!e->eof_in && !e->pipe_full && s_queued (s_other (e)) < HMS_TUNNEL_QUEUE_MAX)
        events |= EV_READ;
    if (((e->out && hms_buf_size (e->out) > 0) && !e->held) || s_other (e)->piped)
        events |= EV_WRITE;
    if (e->io.events != events || !ev_is_active (&e->io)) {
        ev_io_stop (e->tunnel->loop, &e->io);
        ev_io_set (&e->io, e->fd, events);
        if (events)
            ev_io_start (e->tunnel->loop, &e->io);
    }
}

/* Tells end e that nothing more comes, once its queue is empty. */
static void s_maybe_shut (s_end_t *e)
{
    if (e->shut_out || !s_other (e)->eof_in)
        return;
    if (e->kind == S_FD && hms_buf_size (e->out) == 0 && s_other (e)->piped == 0) {
        /* between two sockets that both sent everything, the tunnel ends now and close()
         * sends the FIN: no shutdown call */
        if (!(e->eof_in && s_other (e)->kind == S_FD))
            shutdown (e->fd, SHUT_WR);
        e->shut_out = true;
    } else if (e->kind == S_STREAM && !e->closed) {
        hms_h2_stream_end (e->stream); /* after what is queued */
        e->shut_out = true;
    }
}

/* Returns bytes received from stream end src to its peer's window. */
static void s_consume (s_end_t *src, size_t n)
{
    if (src->kind != S_STREAM || src->closed)
        return;
    if (n > src->unconsumed)
        n = src->unconsumed;
    if (n) {
        src->unconsumed -= n;
        hms_h2_stream_consume (src->stream, n);
    }
}

/* Writes what fd end e's buffer holds, as far as the socket takes it; returns what
 * hms_buf_write_fd returned (errno set when < 0). */
static ssize_t s_write_buf (s_end_t *e)
{
    ssize_t n = hms_buf_write_fd (e->out, e->fd);
    if (n > 0) {
        e->delivered += (uint64_t) n;
        s_consume (s_other (e), (size_t) n);
    }
    return n;
}

/* Writes what is queued toward fd end e (its buffer, then what the other end's pipe
 * holds); false when the tunnel is gone. */
static bool s_flush_fd (s_end_t *e)
{
    s_end_t *src = s_other (e);
    if (e->held)
        return true; /* waits for more (hms_tunnel_hold) */
    if (hms_buf_size (e->out) > 0) {
        if (s_write_buf (e) < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            s_fail (e, strerror (errno));
            return false;
        }
        if (hms_buf_size (e->out) > 0)
            return true;
    }
    while (src->piped) {
        ssize_t n =
            splice (src->pipe[0], NULL, e->fd, NULL, src->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            src->piped -= (size_t) n;
            src->pipe_full = false;
            e->delivered += (uint64_t) n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            s_fail (e, strerror (errno));
            return false;
        } else
            break;
    }
    if (!src->piped)
        s_pipe_put (src);
    return true;
}

/* Reads from socket end e into its pipe toward the other socket end: 1 while it may read
 * again, 0 when done for now, 2 when there is no pipe to be had, -1 with errno on a socket
 * error. Used only while the other end's buffer is empty or the pipe already holds bytes,
 * so that bytes keep their order (the buffer is written first). */
static int s_splice_in (s_end_t *e)
{
    if (e->pipe[0] < 0 && !s_pipe_get (e))
        return 2; /* no pipe: read through user space */
    size_t room = HMS_TUNNEL_QUEUE_MAX - e->piped;
    ssize_t n = splice (e->fd, NULL, e->pipe[1], NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        e->piped += (size_t) n;
        return 1;
    }
    if (n == 0) {
        e->eof_in = true;
        return 0;
    }
    if (errno == EINTR)
        return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        /* nothing to read, or no room in the pipe (its slots may fill before its bytes
         * do): with bytes in it, wait until some went out rather than spin */
        e->pipe_full = e->piped > 0;
        return 0;
    }
    return -1;
}

/* Data from end src goes toward its other end. A socket with nothing queued before these
 * bytes takes them straight away (no copy into its queue); what it does not take, or an
 * error (which the next flush meets), leaves the bytes queued. */
static void s_forward (s_end_t *src, const void *data, size_t len)
{
    s_end_t *dst = s_other (src);
    if (dst->held) { /* what waited goes out with these bytes */
        dst->held = false;
        ev_timer_stop (dst->tunnel->loop, &dst->hold);
    }
    if (dst->kind == S_STREAM && !dst->closed) {
        hms_h2_stream_write (dst->stream, data, len);
        dst->delivered += len;
        return;
    }
    if (dst->kind == S_FD && !dst->tunnel->paused && !dst->shut_out && !src->piped &&
        (!dst->out || hms_buf_size (dst->out) == 0)) {
        ssize_t n = send (dst->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            dst->delivered += (uint64_t) n;
            s_consume (src, (size_t) n);
            data = (const char *) data + n;
            len -= (size_t) n;
        }
    }
    if (len) {
        if (!dst->out)
            dst->out = hms_buf_new ();
        hms_buf_append (dst->out, data, len);
    }
}

static void s_touch (hms_tunnel_t *self)
{
    if (self->idle_ms)
        ev_timer_again (self->loop, &self->idle);
}

/* ---- socket ends ------------------------------------------------------------------- */

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_end_t *e = w->data;
    hms_tunnel_t *self = e->tunnel;
    s_end_t *other = s_other (e);
    s_touch (self);
    if ((revents & EV_WRITE) && !s_flush_fd (e))
        return;
    if (revents & EV_READ) {
        char buf[65536];
        while (!e->eof_in && s_queued (other) < HMS_TUNNEL_QUEUE_MAX) {
            /* small exchanges cost fewer system calls through user space: splice once the
             * direction carries bulk */
            if (self->splice && e->bulk && other->kind == S_FD &&
                (e->piped || hms_buf_size (other->out) == 0)) {
                int rc = s_splice_in (e);
                if (rc == 1)
                    continue;
                if (rc == 0)
                    break;
                if (rc < 0) {
                    s_fail (e, strerror (errno));
                    return;
                }
            }
            ssize_t n = recv (e->fd, buf, sizeof buf, 0);
            if (n > 0) {
                s_forward (e, buf, (size_t) n);
                if ((size_t) n < sizeof buf)
                    break;
                e->bulk = true;
            } else if (n == 0) {
                e->eof_in = true;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno != EINTR) {
                s_fail (e, strerror (errno));
                return;
            }
        }
        if (other->held && e->eof_in) { /* nothing more comes to go with it */
            other->held = false;
            ev_timer_stop (loop, &other->hold);
        }
        if (other->kind == S_FD && !s_flush_fd (other))
            return;
    }
    s_maybe_shut (other);
    s_maybe_shut (e);
    if (s_check_done (self))
        return;
    s_update_fd (e);
    s_update_fd (other);
}

/* ---- stream ends ------------------------------------------------------------------- */

static void s_on_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_end_t *e = arg;
    s_end_t *other = s_other (e);
    s_touch (e->tunnel);
    e->unconsumed += len;
    if (other->kind != S_FD) {
        s_forward (e, data, len);
        return;
    }
    /* A connection's read hands its frames' data over piece by piece (a frame split across
     * two TLS records comes in two): queued, it goes to the socket in one write once the
     * read is done, not a write (and a wake-up of the reader) per piece. */
    if (other->held) {
        other->held = false;
        ev_timer_stop (e->tunnel->loop, &other->hold);
    }
    hms_buf_append (other->out, data, len);
    if (!ev_is_active (&other->flush))
        ev_prepare_start (e->tunnel->loop, &other->flush);
}

static void s_on_flush (struct ev_loop *loop, ev_prepare *w, int revents)
{
    s_end_t *e = w->data;
    hms_tunnel_t *self = e->tunnel;
    ev_prepare_stop (loop, w);
    if (self->paused || e->held || !s_flush_fd (e))
        return;
    hms_buf_shrink (e->out); /* a tunnel that goes quiet now keeps no 16 KiB chunk */
    s_maybe_shut (e);
    if (s_check_done (self))
        return;
    s_update_fd (e);
    s_update_fd (s_other (e));
}

static void s_on_end (hms_h2_stream_t *s, void *arg)
{
    s_end_t *e = arg;
    s_end_t *other = s_other (e);
    e->eof_in = true;
    s_maybe_shut (other);
    if (s_check_done (e->tunnel))
        return;
    s_update_fd (other);
}

static void s_on_sent (hms_h2_stream_t *s, size_t n, void *arg)
{
    s_end_t *e = arg;
    s_end_t *other = s_other (e);
    s_touch (e->tunnel);
    s_consume (other, n); /* a stream source gets its window back */
    s_update_fd (other);  /* a socket source may read again */
}

static void s_on_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_end_t *e = arg;
    e->closed = true;
    e->stream = NULL;
    e->unconsumed = 0;
    if (code != 0 || !e->eof_in || !e->shut_out) {
        char what[96];
        snprintf (what, sizeof what, "stream closed early (%s)",
                  code ? nghttp2_http2_strerror (code) : "no error");
        s_fail (e, what);
        return;
    }
    s_check_done (e->tunnel);
}

static void s_on_headers (hms_h2_stream_t *s, void *arg)
{
    s_end_t *e = arg;
    if (e->tunnel->headers)
        e->tunnel->headers (e->tunnel, s, e->tunnel->arg);
}

static const hms_h2_stream_cbs_t s_stream_cbs = {.on_headers = s_on_headers,
                                                 .on_data = s_on_data,
                                                 .on_end = s_on_end,
                                                 .on_sent = s_on_sent,
                                                 .on_close = s_on_close};

void hms_tunnel_splice (hms_tunnel_t *self, bool on)
{
    self->splice = on;
}

void hms_tunnel_on_headers (hms_tunnel_t *self, hms_tunnel_headers_fn *fn)
{
    self->headers = fn;
}

/* ---- setup --------------------------------------------------------------------------- */

static void s_on_idle (struct ev_loop *loop, ev_timer *w, int revents)
{
    hms_tunnel_t *self = w->data;
    char why[64];
    snprintf (why, sizeof why, "idle for %d s", self->idle_ms / 1000);
    hms_tunnel_abort (self, why);
}

static void s_abort_on_stop (void *obj)
{
    hms_tunnel_abort (obj, "shutting down");
}

hms_tunnel_t *hms_tunnel_new (struct ev_loop *loop, int idle_ms, hms_tunnel_done_fn *done,
                              void *arg)
{
    hms_tunnel_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->done = done;
    self->arg = arg;
    self->idle_ms = idle_ms;
    for (int i = 0; i < 2; i++) {
        self->end[i].tunnel = self;
        self->end[i].side = (hms_tunnel_side_t) i;
        self->end[i].fd = -1;
        self->end[i].pipe[0] = self->end[i].pipe[1] = -1;
    }
    ev_init (&self->idle, s_on_idle);
    self->idle.repeat = idle_ms / 1000.0;
    self->idle.data = self;
    if (idle_ms)
        ev_timer_again (loop, &self->idle);
    self->worker = hms_worker_current ();
    if (self->worker)
        self->item = hms_worker_track (self->worker, s_abort_on_stop, self);
    return self;
}

/* After an end is attached: move what waited for it, pass on an EOF that came first. */
static void s_attached (s_end_t *e)
{
    s_end_t *other = s_other (e);
    if (e->kind == S_STREAM && e->out && hms_buf_size (e->out) > 0) {
        size_t len;
        const void *p;
        while ((p = hms_buf_peek (e->out, &len)) && len) {
            hms_h2_stream_write (e->stream, p, len);
            e->delivered += len;
            hms_buf_drain (e->out, len);
        }
    }
    if (e->kind == S_STREAM)
        s_maybe_shut (e); /* a socket end is shut after its queue is written */
    s_update_fd (e);
    s_update_fd (other);
}

void hms_tunnel_attach_fd (hms_tunnel_t *self, hms_tunnel_side_t side, int fd)
{
    s_end_t *e = &self->end[side];
    e->kind = S_FD;
    e->fd = fd;
    if (!e->out)
        e->out = hms_buf_new ();
    /* what waited for this end (a proxy's 200, a client's first bytes) goes now, not a loop
     * turn later; an error is left for the loop to meet again (the tunnel stays whole here) */
    if (hms_buf_size (e->out) > 0 && !e->held)
        (void) s_write_buf (e);
    ev_io_init (&e->io, s_on_io, fd, 0);
    e->io.data = e;
    ev_prepare_init (&e->flush, s_on_flush);
    e->flush.data = e;
    s_attached (e);
}

void hms_tunnel_read_now (hms_tunnel_t *self, hms_tunnel_side_t side)
{
    s_end_t *e = &self->end[side];
    if (e->kind == S_FD && !self->paused && !e->eof_in)
        s_on_io (self->loop, &e->io, EV_READ);
}

static void s_on_hold (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_end_t *e = t->data;
    e->held = false;
    if (e->kind != S_FD || e->tunnel->paused)
        return;
    if (!s_flush_fd (e))
        return;
    s_maybe_shut (e);
    if (s_check_done (e->tunnel))
        return;
    s_update_fd (e);
}

void hms_tunnel_hold (hms_tunnel_t *self, hms_tunnel_side_t side, int ms)
{
    s_end_t *e = &self->end[side];
    e->held = true;
    ev_timer_init (&e->hold, s_on_hold, ms / 1000.0, 0);
    e->hold.data = e;
    ev_timer_start (self->loop, &e->hold);
}

void hms_tunnel_attach_stream (hms_tunnel_t *self, hms_tunnel_side_t side, hms_h2_stream_t *stream)
{
    s_end_t *e = &self->end[side];
    e->kind = S_STREAM;
    e->stream = stream;
    hms_h2_stream_set_cbs (stream, &s_stream_cbs, e);
    s_attached (e);
}

void hms_tunnel_stream_ended (hms_tunnel_t *self, hms_tunnel_side_t side)
{
    s_end_t *e = &self->end[side];
    if (e->kind == S_STREAM && !e->eof_in && e->stream)
        s_on_end (e->stream, e);
}

void hms_tunnel_send (hms_tunnel_t *self, hms_tunnel_side_t side, const void *data, size_t len)
{
    s_end_t *e = &self->end[side];
    if (e->kind == S_STREAM && !e->closed) {
        hms_h2_stream_write (e->stream, data, len);
        return;
    }
    if (!e->out)
        e->out = hms_buf_new ();
    hms_buf_append (e->out, data, len);
    s_update_fd (e); /* written when the socket is writable, never from this call */
}
