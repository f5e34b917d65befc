/* hms_fetch: an HTTP/2 request stream for an http:// or https:// URL (not CONNECT), answered
 * by its origin: the exit relay of a route and the ingress on a direct route use it. Sent to
 * the origin over HTTP/1.1 (in TLS for https, the origin's certificate checked
 * against origin_ca_file and the URL's host): the request's body as it arrives (chunked when
 * it has no length), the origin's answer turned back into an HTTP/2 response. After a
 * complete answer that allows it, the origin connection is kept for the next request to the
 * same scheme, host and port (hms_origin_pool); a request without a body goes out on a kept
 * connection, and once more on a new one when the origin had closed the kept one without
 * answering (the race of every keep-alive). */
#include "hms_alloc.h"
#include "hms_buf.h"
#include "hms_dial.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "hms_fetch.h"
#include "hms_origin_pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define S_QUEUE_MAX (256 * 1024)

typedef struct {
    const hms_fetch_env_t *w;
    hms_h2_stream_t *in;
    hms_worker_item_t *item;
    hms_dial_t *dial;
    hms_origin_conn_t conn;
    bool tls;                 /* https: the origin connection is TLS */
    hms_origin_timer_t timer; /* its handshake, then its silence, are bounded */
    ev_io io;
    hms_buf_t *to_origin;
    bool chunked_req;
    bool in_end;
    bool in_closed;
    size_t in_unconsumed;
    char *resp;
    size_t resp_len, resp_cap;
    bool head_done;
    int status;
    bool head_request;
    hms_h1_body_t body;
    char target[300];
    char host[256];
    uint16_t port;
    char dial_addr[64]; /* what is dialed for host, when the caller resolved it already */
    char *head;         /* the request head, kept to send it again on a new connection */
    bool bodyless;      /* no request body: safe to send on a kept connection */
    bool reused;        /* this connection was kept from an earlier request */
    bool retried;       /* sent once more on a new connection */
    bool answered;      /* the origin sent something on this connection */
    bool origin_keep;   /* the answer lets the connection stay open */
    bool extra;         /* bytes after the answer: the connection is not between messages */
} s_req_t;

static void s_free (s_req_t *r)
{
    hms_worker_untrack (r->w->worker, r->item);
    if (r->dial)
        hms_dial_cancel (r->dial);
    hms_origin_timer_stop (r->w->loop, &r->timer);
    if (r->conn.fd >= 0) {
        ev_io_stop (r->w->loop, &r->io);
        hms_origin_close (&r->conn);
    }
    hms_buf_destroy (&r->to_origin);
    free (r->resp);
    free (r->head);
    free (r);
}

/* Lets go of the client stream (answered or to be reset) and frees the request. */
static void s_finish (s_req_t *r, int status, const char *why)
{
    if (!r->in_closed) {
        hms_h2_stream_orphan (r->in);
        if (r->in_unconsumed)
            hms_h2_stream_consume (r->in, r->in_unconsumed);
        if (status) {
            if (r->head_done || hms_h2_refuse (r->in, status, why) != 0)
                hms_h2_stream_reset (r->in, NGHTTP2_INTERNAL_ERROR);
        } else if (why)
            hms_h2_stream_reset (r->in, NGHTTP2_INTERNAL_ERROR);
    }
    if (why)
        hms_info ("http request failed target=%s status=%d why=\"%s\"", r->target, status, why);
    s_free (r);
}

static bool s_may_read (s_req_t *r)
{
    return !r->in_closed && hms_h2_stream_queued (r->in) < S_QUEUE_MAX;
}

static void s_update (s_req_t *r)
{
    hms_origin_watch (r->w->loop, &r->io, &r->conn, s_may_read (r),
                      hms_buf_size (r->to_origin) > 0);
}

static int s_body_out (void *arg, const char *data, size_t len)
{
    s_req_t *r = arg;
    hms_h2_stream_write (r->in, data, len);
    return 0;
}

/* The origin's answer head: turned into the HTTP/2 response. */
static int s_respond (s_req_t *r, const hms_h1_head_t *head)
{
    char why[256];
    if (hms_h1_body_init (&r->body, head, true, r->head_request, why, sizeof why)) {
        s_finish (r, 502, why);
        return -1;
    }
    static const char *const skip[] = {"connection",        "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade",    "te",
                                       "trailer",           NULL};
    nghttp2_nv nva[HMS_H1_MAX_HEADERS];
    char names[HMS_H1_MAX_HEADERS][64];
    size_t n = 0;
    for (size_t i = 0; i < head->nheaders && n < HMS_H1_MAX_HEADERS; i++) {
        const hms_h1_header_t *hd = &head->headers[i];
        bool drop = hd->name_len >= sizeof names[0];
        for (int k = 0; skip[k] && !drop; k++)
            drop = hd->name_len == strlen (skip[k]) &&
                   strncasecmp (hd->name, skip[k], hd->name_len) == 0;
        if (drop)
            continue;
        for (size_t c = 0; c < hd->name_len; c++)
            names[n][c] =
                (char) (hd->name[c] >= 'A' && hd->name[c] <= 'Z' ? hd->name[c] + 32 : hd->name[c]);
        nva[n] = (nghttp2_nv){(uint8_t *) names[n], (uint8_t *) hd->value, hd->name_len,
                              hd->value_len, NGHTTP2_NV_FLAG_NONE};
        n++;
    }
    if (hms_h2_respond (r->in, head->status, nva, n, true) != 0) {
        s_finish (r, 502, "cannot answer the stream");
        return -1;
    }
    r->head_done = true;
    r->status = head->status;
    r->origin_keep = hms_h1_keep_alive (head) && r->body.kind != HMS_H1_BODY_CLOSE;
    return 0;
}

/* Bytes from the origin (NULL at its EOF). 0 to go on, -1 when r is gone. */
static int s_from_origin (s_req_t *r, const char *data, size_t len)
{
    char why[256];
    if (!r->head_done) {
        if (!data) {
            s_finish (r, 502, "the origin closed without an answer");
            return -1;
        }
        if (r->resp_len + len > r->resp_cap) {
            r->resp_cap = (r->resp_len + len) * 2;
            r->resp = hms_realloc (r->resp, r->resp_cap);
        }
        memcpy (r->resp + r->resp_len, data, len);
        r->resp_len += len;
        for (;;) {
            hms_h1_head_t head;
            int status;
            ssize_t rc =
                hms_h1_parse_response (r->resp, r->resp_len, &head, &status, why, sizeof why);
            if (rc == 0)
                return 0;
            if (rc < 0) {
                s_finish (r, 502, why);
                return -1;
            }
            if (head.status < 200) { /* interim: HTTP/2 has no use for it here */
                memmove (r->resp, r->resp + rc, r->resp_len - (size_t) rc);
                r->resp_len -= (size_t) rc;
                continue;
            }
            if (s_respond (r, &head))
                return -1;
            size_t rest = r->resp_len - (size_t) rc;
            r->resp_len = 0;
            if (r->body.kind == HMS_H1_BODY_NONE) {
                r->extra = rest > 0;
                hms_h2_stream_end (r->in);
                return 1;
            }
            return rest ? s_from_origin (r, r->resp + rc, rest) : 0;
        }
    }
    if (!data) {
        if (hms_h1_body_eof (&r->body, why, sizeof why)) {
            s_finish (r, 0, why); /* truncated: the client must not take it as whole */
            return -1;
        }
        hms_h2_stream_end (r->in);
        return 1;
    }
    size_t consumed;
    int rc = hms_h1_body_feed (&r->body, data, len, &consumed, s_body_out, r, why, sizeof why);
    if (rc < 0) {
        s_finish (r, 0, why);
        return -1;
    }
    if (rc == 1) {
        r->extra = consumed < len;
        hms_h2_stream_end (r->in);
        return 1;
    }
    return 0;
}

static void s_on_dialed (int fd, const char *why, void *arg);

/* A new origin connection for r: to the address the caller resolved, else by the host. */
static void s_dial (s_req_t *r)
{
    r->dial = hms_dial_start (r->w->loop, r->dial_addr[0] ? r->dial_addr : r->host, r->port,
                              r->w->connect_timeout_ms, NULL, s_on_dialed, r);
}

/* A kept connection that the origin closed (or reset) before answering: the request goes
 * once more on a new connection, if it has no body (then nothing of it is lost). True when
 * it does. */
static bool s_retry (s_req_t *r, const char *why)
{
    if (!r->reused || r->retried || r->answered || !r->bodyless)
        return false;
    ev_io_stop (r->w->loop, &r->io);
    hms_origin_close (&r->conn);
    r->reused = false;
    r->retried = true;
    hms_buf_destroy (&r->to_origin);
    r->to_origin = hms_buf_new ();
    hms_buf_append (r->to_origin, r->head, strlen (r->head));
    if (r->w->retried)
        atomic_fetch_add (r->w->retried, 1);
    hms_info ("http request target=%s: the kept origin connection closed before an answer "
              "(%s): sending it on a new one",
              r->target, why);
    s_dial (r);
    return true;
}

/* The answer is complete: the origin connection is kept for the next request when the
 * answer allows it and the request went out whole, else closed. */
static void s_release_origin (s_req_t *r)
{
    ev_io_stop (r->w->loop, &r->io);
    hms_origin_timer_stop (r->w->loop, &r->timer);
    if (r->origin_keep && !r->extra && r->in_end && hms_buf_size (r->to_origin) == 0 &&
        r->w->origins)
        hms_origin_pool_put (r->w->origins, r->tls, r->host, r->port, &r->conn);
    else
        hms_origin_close (&r->conn);
}

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_req_t *r = w->data;
    /* on any event write what is queued: a TLS handshake or record may need either way */
    ssize_t sent = 0;
    if (hms_buf_size (r->to_origin) > 0 || (revents & EV_WRITE)) {
        ssize_t n = hms_origin_write (&r->conn, r->to_origin);
        if (n < 0) {
            if (!s_retry (r, r->conn.why))
                s_finish (r, 502, r->conn.why);
            return;
        }
        if (n > 0 && r->in_unconsumed) {
            size_t give = (size_t) n < r->in_unconsumed ? (size_t) n : r->in_unconsumed;
            r->in_unconsumed -= give;
            hms_h2_stream_consume (r->in, give);
        }
        sent = n;
    }
    hms_origin_timer_progress (loop, &r->timer, &r->conn, sent > 0);
    /* read while the client keeps up, at most a few records per wake-up; the socket only
     * when it said so (or a handshake is under way), the TLS session when it holds bytes */
    bool readable = (revents & EV_READ) || !r->conn.ready || hms_origin_pending (&r->conn);
    for (int i = 0; i < 4 && readable && s_may_read (r); i++) {
        char buf[65536];
        ssize_t n = hms_origin_read (&r->conn, buf, sizeof buf);
        if (n == HMS_ORIGIN_AGAIN)
            break;
        int rc;
        if (n > 0) {
            r->answered = true;
            hms_origin_timer_progress (loop, &r->timer, &r->conn, true);
            rc = s_from_origin (r, buf, (size_t) n);
        } else {
            const char *why = n == 0 ? "closed" : r->conn.why;
            if (s_retry (r, why))
                return;
            if (n < 0) { /* not an end: an answer cut short is not taken as whole */
                s_finish (r, r->head_done ? 0 : 502, r->conn.why);
                return;
            }
            rc = s_from_origin (r, NULL, 0);
        }
        if (rc < 0)
            return;
        if (rc > 0) { /* answered in full; the stream closes when the client has it all */
            s_release_origin (r);
            return;
        }
        if (n <= 0)
            break;
    }
    s_update (r);
}

/* ---- the client's stream -------------------------------------------------------------- */

static void s_in_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_req_t *r = arg;
    r->in_unconsumed += len;
    if (r->chunked_req) {
        char size[24];
        int n = snprintf (size, sizeof size, "%zx\r\n", len);
        hms_buf_append (r->to_origin, size, (size_t) n);
        hms_buf_append (r->to_origin, data, len);
        hms_buf_append (r->to_origin, "\r\n", 2);
    } else
        hms_buf_append (r->to_origin, data, len);
    s_update (r);
}

static void s_in_end (hms_h2_stream_t *s, void *arg)
{
    s_req_t *r = arg;
    r->in_end = true;
    if (r->chunked_req)
        hms_buf_append (r->to_origin, "0\r\n\r\n", 5);
    s_update (r);
}

static void s_in_sent (hms_h2_stream_t *s, size_t n, void *arg)
{
    s_update (arg); /* room on the stream: read the origin again */
}

static void s_in_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_req_t *r = arg;
    r->in_closed = true;
    if (code)
        hms_debug ("fetch", "client reset its request target=%s", r->target);
    else
        hms_access ("http request done target=%s status=%d", r->target, r->status);
    s_free (r); /* answered in full, or given up: either way nothing is left to do */
}

static const hms_h2_stream_cbs_t s_in_cbs = {
    .on_data = s_in_data, .on_end = s_in_end, .on_sent = s_in_sent, .on_close = s_in_close};

/* The request goes out on r->conn (new or kept): its handshake, else its answer, is timed. */
static void s_attach (s_req_t *r)
{
    hms_origin_timer_arm (r->w->loop, &r->timer, &r->conn);
    ev_io_init (&r->io, s_on_io, r->conn.fd, 0);
    r->io.data = r;
    s_update (r);
}

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_req_t *r = arg;
    r->dial = NULL;
    if (fd < 0) {
        s_finish (r, 502, why);
        return;
    }
    if (hms_origin_open (&r->conn, fd, r->tls ? r->w->origin_tls : NULL, r->host)) {
        s_finish (r, 502, r->conn.why);
        return;
    }
    s_attach (r);
}

static void s_on_timer (struct ev_loop *loop, ev_timer *t, int revents)
{
    s_req_t *r = t->data;
    char why[160];
    hms_origin_timer_why (&r->timer, &r->conn, why, sizeof why);
    s_finish (r, r->head_done ? 0 : 504, why); /* cut short: the client must not take it whole */
}

static void s_close_on_stop (void *obj)
{
    s_finish (obj, 0, "shutting down");
}

void hms_fetch_start (const hms_fetch_env_t *w, hms_h2_stream_t *in, bool tls, const char *host,
                      uint16_t port, const char *dial_addr, const void *body, size_t body_len,
                      bool body_ended)
{
    s_req_t *r = hms_alloc (sizeof *r);
    r->w = w;
    r->in = in;
    r->conn.fd = -1;
    r->tls = tls;
    hms_origin_timer_init (&r->timer, s_on_timer, r, w->connect_timeout_ms, w->idle_timeout_ms);
    r->to_origin = hms_buf_new ();
    const char *method = hms_h2_stream_header (in, ":method");
    const char *path = hms_h2_stream_header (in, ":path");
    const char *authority = hms_h2_stream_header (in, ":authority");
    snprintf (r->target, sizeof r->target, "%s", authority);
    snprintf (r->host, sizeof r->host, "%s", host);
    snprintf (r->dial_addr, sizeof r->dial_addr, "%s", dial_addr ? dial_addr : "");
    r->port = port;
    r->head_request = strcmp (method, "HEAD") == 0;
    /* the HTTP/1.1 request head; a body without a length goes chunked */
    bool has_length = hms_h2_stream_header (in, "content-length") != NULL;
    bool may_have_body = strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0;
    r->chunked_req = may_have_body && !has_length;
    const char *length = hms_h2_stream_header (in, "content-length");
    r->bodyless = !may_have_body || (length && strcmp (length, "0") == 0);
    hms_buf_t *head = hms_buf_new ();
    char *line =
        hms_sprintf ("%s %s HTTP/1.1\r\nHost: %s\r\n", method, path ? path : "/", authority);
    hms_buf_append (head, line, strlen (line));
    free (line);
    for (size_t i = 0;; i++) {
        const char *name, *value;
        if (hms_h2_stream_header_at (in, i, &name, &value) != 0)
            break;
        if (name[0] == ':' || strncmp (name, "hermes-", 7) == 0 || strcmp (name, "host") == 0 ||
            strcmp (name, "connection") == 0 || strcmp (name, "te") == 0 ||
            strcmp (name, "transfer-encoding") == 0)
            continue;
        line = hms_sprintf ("%s: %s\r\n", name, value);
        hms_buf_append (head, line, strlen (line));
        free (line);
    }
    /* HTTP/1.1: the connection stays open unless the origin says otherwise */
    const char *tail = r->chunked_req ? "Transfer-Encoding: chunked\r\n\r\n" : "\r\n";
    hms_buf_append (head, tail, strlen (tail));
    size_t head_len = hms_buf_size (head);
    r->head = hms_alloc (head_len + 1);
    hms_buf_read (head, r->head, head_len);
    hms_buf_destroy (&head);
    hms_buf_append (r->to_origin, r->head, head_len);
    hms_h2_stream_set_cbs (in, &s_in_cbs, r);
    /* what the caller held back while it decided: not yet consumed, counted as ours now */
    if (body_len)
        s_in_data (in, body, body_len, r);
    if (body_ended)
        s_in_end (in, r);
    r->item = hms_worker_track (w->worker, s_close_on_stop, r);
    if (tls && !w->origin_tls) {
        s_finish (r, 502,
                  w->origin_tls_why ? w->origin_tls_why : "https origins are not available");
        return;
    }
    if (r->bodyless && w->origins && hms_origin_pool_take (w->origins, tls, host, port, &r->conn)) {
        r->reused = true;
        if (w->reused)
            atomic_fetch_add (w->reused, 1);
        s_attach (r);
        return;
    }
    s_dial (r);
}

int hms_fetch_origin (const char *scheme, const char *authority, char *host, size_t hostlen,
                      uint16_t *port, bool *tls, char *why, size_t whylen)
{
    if (!scheme || (strcmp (scheme, "http") != 0 && strcmp (scheme, "https") != 0)) {
        snprintf (why, whylen, "scheme %s: only http and https requests are carried",
                  scheme ? scheme : "(none)");
        return -1;
    }
    if (!authority || !*authority) {
        snprintf (why, whylen, "request without :authority");
        return -1;
    }
    *tls = strcmp (scheme, "https") == 0;
    char with_port[300];
    const char *colon = strrchr (authority, ':');
    snprintf (with_port, sizeof with_port,
              colon && !strchr (colon, ']') ? "%s" : (*tls ? "%s:443" : "%s:80"), authority);
    return hms_h1_parse_authority (with_port, strlen (with_port), host, hostlen, port, why, whylen);
}
