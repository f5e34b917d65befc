/* ingress_h1: the HTTP/1.1 forward-proxy front end: reads a request head within a time
 * limit, answers malformed ones (400, 414, 431, 501, 505) itself, and hands CONNECT
 * requests to a flow. */
#include "hms_alloc.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "ingress_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_BUF_START 4096

typedef struct {
    ingress_worker_t *w;
    int fd;
    char peer[64];
    ev_io io;
    ev_timer timer;
    char *buf;
    size_t len, cap;
    size_t parsed_len; /* length at the last parse (see hms_h1_parse_due) */
    hms_worker_item_t *item;
} s_conn_t;

static void s_close (s_conn_t *c)
{
    hms_worker_untrack (c->w->worker, c->item);
    ev_io_stop (c->w->loop, &c->io);
    ev_timer_stop (c->w->loop, &c->timer);
    if (c->fd >= 0)
        close (c->fd);
    free (c->buf);
    free (c);
}

/* Lingering close: after the answer, read and drop what the client still sends (up to
 * S_LINGER_S), so that unread bytes do not turn the close into a reset that destroys the
 * answer before the client has read it. */
#define S_LINGER_S 2.0

static void s_on_linger (struct ev_loop *loop, ev_io *w, int revents)
{
    s_conn_t *c = w->data;
    char sink[16384];
    for (;;) {
        ssize_t n = read (c->fd, sink, sizeof sink);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        s_close (c); /* EOF or error: done */
        return;
    }
}

static void s_on_linger_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_close (w->data);
}

/* Answers with an error of the proxy's own and closes. */
static void s_error (s_conn_t *c, int status, const char *why)
{
    atomic_fetch_add (&c->w->ingress->counters.bad_requests, 1);
    hms_info ("bad request client=%s status=%d why=\"%s\"", c->peer, status, why);
    char resp[1024];
    ssize_t n = hms_h1_error_response (resp, sizeof resp, status, why);
    if (n > 0 && send (c->fd, resp, (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        hms_debug ("ingress.h1", "could not answer %s: %s", c->peer, strerror (errno));
    shutdown (c->fd, SHUT_WR);
    ev_io_stop (c->w->loop, &c->io);
    ev_io_init (&c->io, s_on_linger, c->fd, EV_READ);
    c->io.data = c;
    ev_io_start (c->w->loop, &c->io);
    ev_timer_stop (c->w->loop, &c->timer);
    ev_timer_init (&c->timer, s_on_linger_timer, S_LINGER_S, 0);
    c->timer.data = c;
    ev_timer_start (c->w->loop, &c->timer);
}

static void s_request (s_conn_t *c, const hms_h1_head_t *head)
{
    char user[128] = "";
    if (head->method_len == 7 && memcmp (head->method, "CONNECT", 7) == 0) {
        const hms_h1_header_t *auth = hms_h1_find (head, "Proxy-Authorization");
        if (ingress_auth_check (c->w->ingress, auth ? auth->value : NULL,
                                auth ? auth->value_len : 0, user, sizeof user)) {
            s_error (c, 407, "proxy authentication required");
            return;
        }
        char host[HMS_H1_MAX_HOST + 1], why[256];
        uint16_t port;
        if (hms_h1_parse_authority (head->target, head->target_len, host, sizeof host, &port, why,
                                    sizeof why)) {
            s_error (c, 400, why);
            return;
        }
        ingress_flow_req_t req = {.front = INGRESS_FRONT_H1,
                                  .client_fd = c->fd,
                                  .peer_ip = c->peer,
                                  .host = host,
                                  .port = port,
                                  .user = user[0] ? user : NULL,
                                  .early = c->buf + head->head_len,
                                  .early_len = c->len - head->head_len};
        c->fd = -1; /* the flow owns it now */
        ingress_flow_start (c->w, &req);
        s_close (c);
        return;
    }
    if (head->form == HMS_H1_FORM_ABSOLUTE) {
        int fd = c->fd;
        c->fd = -1; /* ingress_http owns it now */
        ingress_http_start (c->w, fd, c->peer, NULL, c->buf, c->len);
        s_close (c);
        return;
    }
    s_error (c, 400, "this is a forward proxy: send CONNECT host:port or an absolute-form URL");
}

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_conn_t *c = w->data;
    for (;;) {
        if (c->len == c->cap) {
            if (c->cap >= HMS_H1_MAX_HEAD + 1024)
                break; /* the parser reports 431 below */
            c->cap *= 2;
            c->buf = hms_realloc (c->buf, c->cap);
        }
        size_t room = c->cap - c->len;
        ssize_t n = recv (c->fd, c->buf + c->len, room, 0);
        if (n > 0) {
            c->len += (size_t) n;
            if ((size_t) n < room)
                break; /* all there is for now: parse (no read just to hear EAGAIN) */
            continue;
        }
        if (n == 0) {
            hms_debug ("ingress.h1", "client %s closed before a full request", c->peer);
            s_close (c);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        if (errno != EINTR) {
            s_close (c);
            return;
        }
    }
    if (!hms_h1_parse_due (c->buf, c->parsed_len, c->len))
        return;
    c->parsed_len = c->len;
    hms_h1_head_t head;
    int status = 0;
    char why[256];
    ssize_t rc = hms_h1_parse_request (c->buf, c->len, &head, &status, why, sizeof why);
    if (rc < 0)
        s_error (c, status, why);
    else if (rc > 0) {
        ev_io_stop (loop, &c->io);
        ev_timer_stop (loop, &c->timer);
        s_request (c, &head);
    }
}

static void s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_conn_t *c = w->data;
    s_error (c, 408, "no complete request head in time");
}

static void s_close_on_stop (void *obj)
{
    s_close (obj);
}

/* A graceful stop: a connection that has sent nothing of a request is closed; one that has
 * begun its request head may finish it (within head_timeout_ms). */
static void s_drain_on_stop (void *obj)
{
    s_conn_t *c = obj;
    if (c->len == 0)
        s_close (c);
}

void ingress_h1_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer)
{
    s_conn_t *c = hms_alloc (sizeof *c);
    c->w = w;
    c->fd = fd;
    hms_addr_ip (peer, c->peer, sizeof c->peer);
    c->cap = S_BUF_START;
    c->buf = hms_alloc_raw (c->cap);
    ev_io_init (&c->io, s_on_io, fd, EV_READ);
    c->io.data = c;
    ev_io_start (w->loop, &c->io);
    ev_timer_init (&c->timer, s_on_timer, w->ingress->head_timeout_ms / 1000.0, 0);
    c->timer.data = c;
    ev_timer_start (w->loop, &c->timer);
    c->item = hms_worker_track (w->worker, s_close_on_stop, c);
    hms_worker_on_drain (c->item, s_drain_on_stop, true);
    /* A client usually sent its request with the handshake: read it now, without waiting
     * for a loop turn (the watcher started above is then stopped before it reached the
     * kernel). c may be gone after this. */
    s_on_io (w->loop, &c->io, EV_READ);
}
