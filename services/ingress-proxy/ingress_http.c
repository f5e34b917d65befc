/* ingress_http: HTTP through the proxy (absolute-form requests, "GET http://host/..." and
 * "GET https://host/...", which the proxy fetches in TLS itself),
 * message by message on a kept-alive client connection: each request is decided by the
 * policy engine (protocol http, method, path), rewritten to origin-form without hop-by-hop
 * headers, and sent to the origin with its body as it came (Content-Length or chunked);
 * the response goes back the same way, and the connection serves the next request.
 *
 * The origin is reached directly, or through the overlay: then the request travels as an
 * HTTP/2 request (its body decoded from HTTP/1.1 framing) on a pooled connection to the first
 * relay; relays forward it as a request, and the last one asks the origin. The HTTP/2 answer
 * becomes an HTTP/1.1 response again (chunked when it has no length). */
#include "hms_alloc.h"
#include "hms_buf.h"
#include "hms_dial.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "hms_routes.h"
#include "ingress_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_QUEUE_MAX (256 * 1024)
#define S_IN_MAX    (HMS_H1_MAX_HEAD + 65536)

typedef enum { S_REQ_HEAD, S_WAIT, S_REQ_BODY, S_RESP, S_DONE } s_state_t;
typedef enum { S_UP_NONE, S_UP_FD, S_UP_STREAM } s_up_kind_t;

typedef struct {
    ingress_worker_t *w;
    s_state_t state;
    int fd;
    char peer[64];
    char user[128];
    ev_io io;
    ev_timer timer;
    char *in; /* client bytes not handled yet */
    size_t in_len, in_cap;
    hms_buf_t *to_client;
    bool client_eof;
    bool close_after; /* close the client once to_client is written */
    /* the request in progress */
    char *req_head; /* rewritten, for the origin */
    char host[HMS_H1_MAX_HOST + 1];
    uint16_t port;
    char dial_ip[64]; /* a name the policy checked by its address: that address is dialed */
    bool head_request;
    bool client_keep_alive;
    hms_h1_body_t req_body;
    bool req_done;
    ingress_ask_t ask;
    hms_dial_t *dial;
    hms_pool_req_t *pool_req;
    /* the upstream: a socket to the origin, or a CONNECT stream to it through relays */
    s_up_kind_t up;
    char up_key[320];                  /* scheme://host:port@route of the upstream */
    hms_origin_conn_t up_conn;         /* S_UP_FD: the origin connection, plain or TLS */
    char up_host[HMS_H1_MAX_HOST + 1]; /* ... and the origin it leads to */
    uint16_t up_port;
    bool up_https;
    bool up_idle;     /* between two messages: may serve another client (the worker's pool) */
    bool up_reused;   /* kept from an earlier request: the origin may close it any moment */
    bool up_answered; /* the origin sent something for the request in progress */
    bool bodyless;    /* the request in progress has no body: it can be sent again */
    hms_origin_timer_t up_timer; /* its handshake, then its silence, are bounded */
    bool https;                  /* the request in progress is for an https:// URL */
    ev_io up_io;
    hms_h2_stream_t *up_stream;
    bool up_ready;     /* bytes may go to the upstream */
    bool up_end_sent;  /* the request stream was ended */
    bool up_h2;        /* this request goes as an HTTP/2 request (through the overlay) */
    bool resp_chunked; /* the client's response is chunk-encoded by us (HTTP/2 answers) */
    size_t up_unconsumed;
    hms_buf_t *to_up;
    bool up_eof;
    /* the response in progress */
    char *resp;
    size_t resp_len, resp_cap;
    bool resp_head_done;
    bool resp_keep_alive;
    hms_h1_body_t resp_body;
    hms_worker_item_t *item;
} s_http_t;

static void s_pump (s_http_t *h);
static void s_upstream_close (s_http_t *h);
static void s_up_attach (s_http_t *h, hms_origin_conn_t *conn, bool reused);
static bool s_retry (s_http_t *h, const char *why);
static void s_cut_short (s_http_t *h, const char *why);

static void s_free (s_http_t *h)
{
    hms_worker_untrack (h->w->worker, h->item);
    ingress_ask_cancel (&h->ask);
    if (h->dial)
        hms_dial_cancel (h->dial);
    if (h->pool_req)
        hms_pool_cancel (h->pool_req);
    s_upstream_close (h);
    ev_io_stop (h->w->loop, &h->io);
    ev_timer_stop (h->w->loop, &h->timer);
    if (h->fd >= 0)
        close (h->fd);
    hms_buf_destroy (&h->to_client);
    hms_buf_destroy (&h->to_up);
    free (h->in);
    free (h->req_head);
    free (h->resp);
    free (h);
}

static void s_upstream_close (s_http_t *h)
{
    hms_origin_timer_stop (h->w->loop, &h->up_timer);
    if (h->up == S_UP_FD) {
        ev_io_stop (h->w->loop, &h->up_io);
        /* between two messages, it serves the next client of the same origin */
        if (h->up_idle && !h->up_eof && h->up_conn.ready && hms_buf_size (h->to_up) == 0 &&
            h->w->origins)
            hms_origin_pool_put (h->w->origins, h->up_https, h->up_host, h->up_port, &h->up_conn);
        else
            hms_origin_close (&h->up_conn);
    } else if (h->up == S_UP_STREAM && h->up_stream) {
        hms_h2_stream_orphan (h->up_stream);
        if (h->up_unconsumed)
            hms_h2_stream_consume (h->up_stream, h->up_unconsumed);
        if (!(h->up_eof && h->up_end_sent)) /* a finished exchange just closes */
            hms_h2_stream_reset (h->up_stream, NGHTTP2_CANCEL);
    }
    h->up = S_UP_NONE;
    h->up_idle = false;
    h->up_stream = NULL;
    h->up_ready = false;
    h->up_end_sent = false;
    h->up_eof = false;
    h->up_unconsumed = 0;
    h->up_key[0] = 0;
    if (h->to_up)
        hms_buf_drain (h->to_up, hms_buf_size (h->to_up));
}

/* An answer of the proxy's own, then the connection closes. */
static void s_reply_error (s_http_t *h, int status, const char *why)
{
    if (status == 403)
        atomic_fetch_add (&h->w->ingress->counters.denied, 1);
    else
        atomic_fetch_add (&h->w->ingress->counters.failed, 1);
    char target[300] = "-";
    if (h->host[0])
        hms_hostport (h->host, h->port, target, sizeof target);
    hms_info ("http request failed client=%s target=%s status=%d why=\"%s\"", h->peer, target,
              status, why);
    char resp[1024];
    ssize_t n = hms_h1_error_response (resp, sizeof resp, status, why);
    if (n > 0)
        hms_buf_append (h->to_client, resp, (size_t) n);
    s_upstream_close (h);
    h->state = S_DONE;
    h->close_after = true;
    s_pump (h);
}

/* ---- rewriting ------------------------------------------------------------------------- */

static bool s_is_hop_by_hop (const hms_h1_head_t *head, const hms_h1_header_t *hd)
{
    static const char *const hop[] = {"connection",
                                      "proxy-connection",
                                      "keep-alive",
                                      "proxy-authorization",
                                      "proxy-authenticate",
                                      "te",
                                      "trailer",
                                      "upgrade",
                                      NULL};
    for (int i = 0; hop[i]; i++)
        if (hd->name_len == strlen (hop[i]) && strncasecmp (hd->name, hop[i], hd->name_len) == 0)
            return true;
    /* headers the Connection header names are hop-by-hop too */
    char name[128];
    if (hd->name_len < sizeof name) {
        memcpy (name, hd->name, hd->name_len);
        name[hd->name_len] = 0;
        if (hms_h1_has_token (head, "Connection", name))
            return true;
    }
    return false;
}

static void s_headers (char **out, size_t *len, const hms_h1_head_t *head)
{
    for (size_t i = 0; i < head->nheaders; i++) {
        const hms_h1_header_t *hd = &head->headers[i];
        if (s_is_hop_by_hop (head, hd))
            continue;
        char *line = hms_sprintf ("%.*s: %.*s\r\n", (int) hd->name_len, hd->name,
                                  (int) hd->value_len, hd->value);
        size_t n = strlen (line);
        *out = hms_realloc (*out, *len + n + 1);
        memcpy (*out + *len, line, n + 1);
        *len += n;
        free (line);
    }
}

static void s_append (char **out, size_t *len, const char *text)
{
    size_t n = strlen (text);
    *out = hms_realloc (*out, *len + n + 1);
    memcpy (*out + *len, text, n + 1);
    *len += n;
}

/* ---- the client side ------------------------------------------------------------------- */

static void s_on_decision (const hms_decision_t *d, void *arg);

/* Parses the next request head in h->in; starts its decision. */
static void s_next_request (s_http_t *h)
{
    hms_h1_head_t head;
    int status = 0;
    char why[256];
    ssize_t rc = hms_h1_parse_request (h->in, h->in_len, &head, &status, why, sizeof why);
    if (rc == 0)
        return; /* more bytes needed */
    if (rc < 0) {
        atomic_fetch_add (&h->w->ingress->counters.bad_requests, 1);
        s_reply_error (h, status, why);
        return;
    }
    if (head.form != HMS_H1_FORM_ABSOLUTE) {
        /* a CONNECT (or anything else) after plain requests: a fresh start for it */
        if (head.method_len == 7 && memcmp (head.method, "CONNECT", 7) == 0 && h->up == S_UP_NONE &&
            hms_buf_size (h->to_client) == 0) {
            char host[HMS_H1_MAX_HOST + 1];
            uint16_t port;
            if (hms_h1_parse_authority (head.target, head.target_len, host, sizeof host, &port, why,
                                        sizeof why) == 0) {
                ingress_flow_req_t req = {.front = INGRESS_FRONT_H1,
                                          .client_fd = h->fd,
                                          .peer_ip = h->peer,
                                          .host = host,
                                          .port = port,
                                          .user = h->user[0] ? h->user : NULL,
                                          .early = h->in + rc,
                                          .early_len = h->in_len - (size_t) rc};
                h->fd = -1;
                ingress_flow_start (h->w, &req);
                s_free (h);
                return;
            }
            s_reply_error (h, 400, why);
            return;
        }
        s_reply_error (h, 400, "this is a forward proxy: send an absolute-form URL or CONNECT");
        return;
    }
    const hms_h1_header_t *auth = hms_h1_find (&head, "Proxy-Authorization");
    if (ingress_auth_check (h->w->ingress, auth ? auth->value : NULL, auth ? auth->value_len : 0,
                            h->user, sizeof h->user)) {
        s_reply_error (h, 407, "proxy authentication required");
        return;
    }
    hms_h1_url_t url;
    if (hms_h1_parse_absolute (head.target, head.target_len, &url, why, sizeof why)) {
        s_reply_error (h, 400, why);
        return;
    }
    h->https = url.https;
    if (hms_h1_body_init (&h->req_body, &head, false, false, why, sizeof why)) {
        s_reply_error (h, 400, why);
        return;
    }
    h->bodyless = h->req_body.kind == HMS_H1_BODY_NONE;
    snprintf (h->host, sizeof h->host, "%s", url.host);
    h->port = url.port;
    h->head_request = head.method_len == 4 && memcmp (head.method, "HEAD", 4) == 0;
    h->client_keep_alive = hms_h1_keep_alive (&head) && !hms_worker_draining (h->w->worker);
    /* the origin-form request, without hop-by-hop headers */
    char *out = NULL;
    size_t len = 0;
    char *line = hms_sprintf ("%.*s %.*s%.*s HTTP/1.1\r\n", (int) head.method_len, head.method,
                              (int) url.path_len, url.path, (int) url.query_len, url.query);
    s_append (&out, &len, line);
    free (line);
    if (!hms_h1_find (&head, "Host")) {
        line = hms_sprintf ("Host: %.*s\r\n", (int) url.authority_len, url.authority);
        s_append (&out, &len, line);
        free (line);
    }
    s_headers (&out, &len, &head);
    s_append (&out, &len, "Connection: keep-alive\r\n\r\n");
    free (h->req_head);
    h->req_head = out;
    char method[33], path[1024];
    snprintf (method, sizeof method, "%.*s", (int) head.method_len, head.method);
    snprintf (path, sizeof path, "%.*s", (int) url.path_len, url.path);
    /* the head is used up: the rest is body or the next request */
    memmove (h->in, h->in + rc, h->in_len - (size_t) rc);
    h->in_len -= (size_t) rc;
    h->req_done = false;
    h->resp_len = 0;
    h->resp_head_done = false;
    h->state = S_WAIT;
    ev_timer_stop (h->w->loop, &h->timer);
    atomic_fetch_add (&h->w->ingress->counters.flows, 1);
    hms_query_t q = {.src = h->peer,
                     .dst = h->host,
                     .port = h->port,
                     .protocol = "http",
                     .host = h->host,
                     .sni = h->https ? h->host : NULL, /* the name a proxy's TLS will ask for */
                     .method = method,
                     .path = path,
                     .user = h->user[0] ? h->user : NULL};
    ingress_ask (&h->ask, h->w, &q, s_on_decision, h); /* s_on_decision may end the connection */
}

/* ---- the upstream side ----------------------------------------------------------------- */

static void s_on_up_bytes (s_http_t *h, const char *data, size_t len);

static void s_up_update (s_http_t *h)
{
    if (h->up != S_UP_FD)
        return;
    /* read while the client keeps up; an idle kept-alive origin is read too, to see it close */
    bool may_read = !h->up_eof && h->state != S_WAIT && hms_buf_size (h->to_client) < S_QUEUE_MAX;
    hms_origin_watch (h->w->loop, &h->up_io, &h->up_conn, may_read, hms_buf_size (h->to_up) > 0);
}

static void s_on_up_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_http_t *h = w->data;
    /* on any event write what is queued: a TLS handshake or record may need either way */
    ssize_t sent = 0;
    if (hms_buf_size (h->to_up) > 0 || (revents & EV_WRITE)) {
        sent = hms_origin_write (&h->up_conn, h->to_up);
        if (sent < 0) {
            s_reply_error (h, 502, h->up_conn.why);
            return;
        }
    }
    hms_origin_timer_progress (loop, &h->up_timer, &h->up_conn, sent > 0);
    if (revents & EV_READ || hms_origin_pending (&h->up_conn) || !h->up_conn.ready) {
        char buf[65536];
        ssize_t n = hms_origin_read (&h->up_conn, buf, sizeof buf);
        if (n > 0) {
            h->up_answered = true;
            h->up_idle = false; /* whatever it is, nobody asked for it while idle */
            hms_origin_timer_progress (loop, &h->up_timer, &h->up_conn, true);
            s_on_up_bytes (h, buf, (size_t) n);
            return;
        }
        if (n == 0 || n == -1) {
            h->up_idle = false;
            if (s_retry (h, n == 0 ? "closed" : h->up_conn.why))
                return;
        }
        if (n == 0) {
            h->up_eof = true;
            s_on_up_bytes (h, NULL, 0);
            return;
        }
        if (n == -1) {
            bool waiting = h->state == S_RESP || h->state == S_REQ_BODY;
            if (waiting && !h->resp_head_done) {
                s_reply_error (h, 502, h->up_conn.why);
                return;
            }
            if (waiting) {
                s_cut_short (h, h->up_conn.why);
                return;
            }
            s_upstream_close (h); /* between requests: this upstream is just not reused */
            s_pump (h);
            return;
        }
    }
    s_pump (h);
}

/* An answer cut short by the origin is not taken as whole: the client is closed once it has
 * what came. */
static void s_cut_short (s_http_t *h, const char *why)
{
    char tp[300];
    hms_info ("http response cut short client=%s target=%s why=\"%s\"", h->peer,
              hms_hostport (h->host, h->port, tp, sizeof tp), why);
    h->close_after = true;
    h->state = S_DONE;
    s_upstream_close (h);
    s_pump (h);
}

static void s_on_up_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_http_t *h = w->data;
    char why[160];
    hms_origin_timer_why (&h->up_timer, &h->up_conn, why, sizeof why);
    if (h->resp_head_done)
        s_cut_short (h, why);
    else
        s_reply_error (h, 504, why);
}

/* ---- the upstream as an HTTP/2 request through the overlay ---------------------------- */

static void s_up_headers (hms_h2_stream_t *s, void *arg)
{
    s_http_t *h = arg;
    int status = hms_h2_stream_status (s);
    const char *err = hms_h2_stream_header (s, HMS_H2_HDR_ERROR);
    if (err && status >= 400) {
        char text[512];
        snprintf (text, sizeof text, "overlay answered %d: %s", status, err);
        s_reply_error (h, status < 600 ? status : 502, text);
        return;
    }
    /* the answer as HTTP/1.1: its headers, and our own framing when it has no length */
    char *out = NULL;
    size_t olen = 0;
    char *line = hms_sprintf ("HTTP/1.1 %d %s\r\n", status, hms_h1_reason (status));
    s_append (&out, &olen, line);
    free (line);
    bool has_length = false;
    const char *name, *value;
    for (size_t i = 0; hms_h2_stream_header_at (s, i, &name, &value) == 0; i++) {
        if (name[0] == ':' || strncmp (name, "hermes-", 7) == 0)
            continue;
        has_length |= strcmp (name, "content-length") == 0;
        line = hms_sprintf ("%s: %s\r\n", name, value);
        s_append (&out, &olen, line);
        free (line);
    }
    bool bodiless = h->head_request || status == 204 || status == 304;
    h->resp_chunked = !has_length && !bodiless;
    if (h->resp_chunked)
        s_append (&out, &olen, "Transfer-Encoding: chunked\r\n");
    s_append (&out, &olen, h->client_keep_alive ? "\r\n" : "Connection: close\r\n\r\n");
    if (!h->client_keep_alive)
        h->close_after = true;
    hms_buf_append (h->to_client, out, olen);
    free (out);
    h->resp_head_done = true;
    h->state = S_RESP;
    s_pump (h);
}

static void s_up_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    s_http_t *h = arg;
    h->up_unconsumed += len; /* given back as the client takes the bytes */
    if (h->resp_chunked && len) {
        char size[24];
        int n = snprintf (size, sizeof size, "%zx\r\n", len);
        hms_buf_append (h->to_client, size, (size_t) n);
        hms_buf_append (h->to_client, data, len);
        hms_buf_append (h->to_client, "\r\n", 2);
    } else if (!h->head_request)
        hms_buf_append (h->to_client, data, len);
    s_pump (h);
}

static void s_up_end (hms_h2_stream_t *s, void *arg)
{
    s_http_t *h = arg;
    if (h->resp_chunked)
        hms_buf_append (h->to_client, "0\r\n\r\n", 5);
    h->up_eof = true;
    h->state = S_DONE; /* the stream closes by itself once both sides ended */
    s_pump (h);
}

static void s_up_sent (hms_h2_stream_t *s, size_t n, void *arg)
{
    s_pump (arg);
}

static void s_up_close (hms_h2_stream_t *s, uint32_t code, void *arg)
{
    s_http_t *h = arg;
    bool complete = h->up_eof;
    h->up_stream = NULL;
    h->up_unconsumed = 0;
    h->up = S_UP_NONE;
    h->up_key[0] = 0;
    if (complete)
        return;
    if (!h->resp_head_done) {
        s_reply_error (h, 502, "the overlay reset the request before answering");
        return;
    }
    /* cut in the middle of the answer: the client must not take it as whole */
    char tp[300];
    hms_info ("http response cut client=%s target=%s", h->peer,
              hms_hostport (h->host, h->port, tp, sizeof tp));
    s_free (h);
}

static const hms_h2_stream_cbs_t s_up_cbs = {.on_headers = s_up_headers,
                                             .on_data = s_up_data,
                                             .on_end = s_up_end,
                                             .on_sent = s_up_sent,
                                             .on_close = s_up_close};

/* Decoded request body bytes, for the HTTP/2 request. */
static int s_body_to_up (void *arg, const char *data, size_t len)
{
    hms_buf_append (((s_http_t *) arg)->to_up, data, len);
    return 0;
}

static void s_on_dialed (int fd, const char *why, void *arg)
{
    s_http_t *h = arg;
    h->dial = NULL;
    if (fd < 0) {
        s_reply_error (h, strstr (why, "no answer within") ? 504 : 502, why);
        return;
    }
    hms_origin_conn_t conn;
    if (hms_origin_open (&conn, fd, h->https ? h->w->ingress->origin_tls : NULL, h->host)) {
        s_reply_error (h, 502, conn.why);
        return;
    }
    s_up_attach (h, &conn, false);
}

/* The request in progress goes out on conn (new, or kept from an earlier request). */
static void s_up_attach (s_http_t *h, hms_origin_conn_t *conn, bool reused)
{
    atomic_fetch_add (&h->w->ingress->counters.direct, 1);
    hms_origin_move (&h->up_conn, conn);
    snprintf (h->up_host, sizeof h->up_host, "%s", h->host);
    h->up_port = h->port;
    h->up_https = h->https;
    h->up_reused = reused;
    h->up_answered = false;
    hms_origin_timer_arm (h->w->loop, &h->up_timer, &h->up_conn);
    h->up = S_UP_FD;
    h->up_ready = true;
    ev_io_init (&h->up_io, s_on_up_io, h->up_conn.fd, 0);
    h->up_io.data = h;
    s_pump (h);
}

/* A new connection for the request in progress: to the address the policy checked for its
 * name, else by the host. */
static void s_dial (s_http_t *h)
{
    h->dial = hms_dial_start (h->w->loop, h->dial_ip[0] ? h->dial_ip : h->host, h->port,
                              h->w->ingress->connect_timeout_ms, NULL, s_on_dialed, h);
}

/* A connection to h->host:h->port for the request in progress: a kept one for a request
 * without a body (which can be sent again if the origin closed it meanwhile), else a new one. */
static void s_up_open (s_http_t *h)
{
    hms_origin_conn_t conn;
    if (h->bodyless && h->w->origins &&
        hms_origin_pool_take (h->w->origins, h->https, h->host, h->port, &conn)) {
        atomic_fetch_add (&h->w->ingress->counters.origin_reused, 1);
        s_up_attach (h, &conn, true);
        return;
    }
    s_dial (h);
}

/* A kept connection that the origin closed (or reset) before answering: the request (without
 * a body, so nothing of it is lost) goes once more on a new connection. True when it does. */
static bool s_retry (s_http_t *h, const char *why)
{
    if (h->up != S_UP_FD || !h->up_reused || h->up_answered || !h->bodyless || !h->req_head ||
        (h->state != S_RESP && h->state != S_REQ_BODY))
        return false;
    ev_io_stop (h->w->loop, &h->up_io);
    hms_origin_timer_stop (h->w->loop, &h->up_timer);
    hms_origin_close (&h->up_conn);
    h->up = S_UP_NONE;
    h->up_ready = false;
    hms_buf_drain (h->to_up, hms_buf_size (h->to_up));
    hms_buf_append (h->to_up, h->req_head, strlen (h->req_head));
    atomic_fetch_add (&h->w->ingress->counters.origin_retried, 1);
    char tp[300];
    hms_info ("http request target=%s: the kept origin connection closed before an answer "
              "(%s): sending it on a new one",
              hms_hostport (h->host, h->port, tp, sizeof tp), why);
    s_dial (h);
    return true;
}

static void s_on_pool (hms_h2_conn_t *conn, const char *why, void *arg)
{
    s_http_t *h = arg;
    h->pool_req = NULL;
    if (!conn) {
        s_reply_error (h, 502, why);
        return;
    }
    /* the origin-form head made for the origin, as HTTP/2 headers */
    hms_h1_head_t head;
    int status;
    char err[256];
    if (hms_h1_parse_request (h->req_head, strlen (h->req_head), &head, &status, err, sizeof err) <=
        0) {
        s_reply_error (h, 500, err);
        return;
    }
    char authority[300], method[33], path[HMS_H1_MAX_LINE + 1];
    hms_hostport (h->host, h->port, authority, sizeof authority);
    snprintf (method, sizeof method, "%.*s", (int) head.method_len, head.method);
    snprintf (path, sizeof path, "%.*s", (int) head.target_len, head.target);
    const char *dest = strchr (h->up_key, '@') + 1;
    nghttp2_nv nva[HMS_H1_MAX_HEADERS + 8];
    char names[HMS_H1_MAX_HEADERS][64];
    size_t n = 0;
#define S_NV(name, value, nlen, vlen)                                                              \
    nva[n++] = (nghttp2_nv){(uint8_t *) (name), (uint8_t *) (value), (nlen), (vlen),               \
                            NGHTTP2_NV_FLAG_NONE}
    S_NV (":method", method, 7, strlen (method));
    S_NV (":scheme", h->https ? "https" : "http", 7, h->https ? 5 : 4);
    S_NV (":authority", authority, 10, strlen (authority));
    S_NV (":path", path, 5, strlen (path));
    S_NV (HMS_HDR_DEST, dest, sizeof HMS_HDR_DEST - 1, strlen (dest));
    S_NV (HMS_HDR_HOPS, "1", sizeof HMS_HDR_HOPS - 1, 1);
    if (h->user[0])
        S_NV (HMS_HDR_USER, h->user, sizeof HMS_HDR_USER - 1, strlen (h->user));
    for (size_t i = 0; i < head.nheaders; i++) {
        const hms_h1_header_t *hd = &head.headers[i];
        if (hd->name_len >= sizeof names[0])
            continue;
        for (size_t c = 0; c < hd->name_len; c++)
            names[i][c] =
                (char) (hd->name[c] >= 'A' && hd->name[c] <= 'Z' ? hd->name[c] + 32 : hd->name[c]);
        names[i][hd->name_len] = 0;
        /* connection-specific headers do not exist in HTTP/2; Host is :authority */
        if (!strcmp (names[i], "host") || !strcmp (names[i], "connection") ||
            !strcmp (names[i], "transfer-encoding") || !strcmp (names[i], "keep-alive"))
            continue;
        S_NV (names[i], hd->value, hd->name_len, hd->value_len);
    }
#undef S_NV
    h->up_stream = hms_h2_request (conn, nva, n, true, &s_up_cbs, h);
    if (!h->up_stream) {
        s_reply_error (h, 502, "relay connection is not usable");
        return;
    }
    atomic_fetch_add (&h->w->ingress->counters.overlay, 1);
    h->up = S_UP_STREAM;
    h->up_ready = true;
    s_pump (h);
}

static void s_on_decision (const hms_decision_t *d, void *arg)
{
    s_http_t *h = arg;
    ingress_t *ingress = h->w->ingress;
    if (d->unavailable) {
        s_reply_error (h, 503, d->reason);
        return;
    }
    if (d->action == HMS_DECISION_DENY) {
        char why[400];
        ingress_deny_why (d, why, sizeof why);
        char tp[300];
        hms_info ("denied client=%s target=%s rule=%s why=\"%s\"", h->peer,
                  hms_hostport (h->host, h->port, tp, sizeof tp), d->rule[0] ? d->rule : "-", why);
        s_reply_error (h, 403, why);
        return;
    }
    char why[320];
    if (d->target[0] &&
        hms_routes_parse_address (d->target, h->host, sizeof h->host, &h->port, why, sizeof why)) {
        s_reply_error (h, 502, why);
        return;
    }
    const char *checked = ingress_ask_checked_addr (&h->ask, d);
    snprintf (h->dial_ip, sizeof h->dial_ip, "%s", checked ? checked : "");
    bool overlay = ingress_via_overlay (ingress, d);
    if (!overlay && h->https && !ingress->origin_tls) {
        s_reply_error (h, 502, ingress->origin_tls_why);
        return;
    }
    char key[320];
    snprintf (key, sizeof key, "%s://%s:%u@%s", h->https ? "https" : "http", h->host, h->port,
              overlay ? d->route : "");
    h->state = S_REQ_BODY;
    h->up_h2 = overlay;
    if (!overlay)
        hms_buf_append (h->to_up, h->req_head, strlen (h->req_head));
    char *pending = NULL; /* keep the new head: closing the old upstream empties to_up */
    size_t plen = hms_buf_size (h->to_up);
    pending = hms_alloc (plen);
    hms_buf_read (h->to_up, pending, plen);
    s_upstream_close (h);
    hms_buf_append (h->to_up, pending, plen);
    free (pending);
    snprintf (h->up_key, sizeof h->up_key, "%s", key);
    if (!overlay) {
        s_up_open (h);
        return;
    }
    char host[256];
    uint16_t port = 0;
    if (ingress_first_relay (ingress, d->route, host, sizeof host, &port, why, sizeof why)) {
        s_reply_error (h, 502, why);
        return;
    }
    /* s_on_pool may run (and end this connection) before hms_pool_get returns NULL */
    hms_pool_req_t *req = hms_pool_get (h->w->pool, host, port, "relay", s_on_pool, h);
    if (req)
        h->pool_req = req;
}

/* Bytes from the origin: the response head, then its body. data NULL means EOF. */
static void s_on_up_bytes (s_http_t *h, const char *data, size_t len)
{
    char why[256];
    if (h->state != S_RESP && h->state != S_REQ_BODY) {
        if (data && h->up == S_UP_STREAM && h->up_stream)
            hms_h2_stream_consume (h->up_stream, len);
        if (data) {
            h->up_unconsumed -= h->up == S_UP_STREAM ? len : 0;
            s_upstream_close (h); /* bytes nobody asked for: do not reuse this upstream */
        }
        s_pump (h);
        return;
    }
    if (!h->resp_head_done) {
        if (!data) {
            s_reply_error (h, 502, "the origin closed without an answer");
            return;
        }
        if (h->resp_len + len > h->resp_cap) {
            h->resp_cap = (h->resp_len + len) * 2;
            h->resp = hms_realloc (h->resp, h->resp_cap);
        }
        memcpy (h->resp + h->resp_len, data, len);
        h->resp_len += len;
        if (h->up == S_UP_STREAM && h->up_stream) {
            hms_h2_stream_consume (h->up_stream, len); /* copied: its window may reopen */
            h->up_unconsumed -= len;
        }
        for (;;) {
            hms_h1_head_t head;
            int status;
            ssize_t rc =
                hms_h1_parse_response (h->resp, h->resp_len, &head, &status, why, sizeof why);
            if (rc == 0) {
                s_pump (h);
                return;
            }
            if (rc < 0) {
                s_reply_error (h, 502, why);
                return;
            }
            if (head.status >= 100 && head.status < 200 && head.status != 101) {
                /* interim answer: pass it on, the final one follows */
                hms_buf_append (h->to_client, h->resp, (size_t) rc);
                memmove (h->resp, h->resp + rc, h->resp_len - (size_t) rc);
                h->resp_len -= (size_t) rc;
                continue;
            }
            if (head.status == 101) {
                s_reply_error (h, 502, "protocol upgrades are not carried by this proxy");
                return;
            }
            if (hms_h1_body_init (&h->resp_body, &head, true, h->head_request, why, sizeof why)) {
                s_reply_error (h, 502, why);
                return;
            }
            h->resp_keep_alive =
                hms_h1_keep_alive (&head) && h->resp_body.kind != HMS_H1_BODY_CLOSE;
            bool keep = h->client_keep_alive && h->resp_keep_alive;
            char *out = NULL;
            size_t olen = 0;
            char *line = hms_sprintf ("HTTP/1.1 %d %.*s\r\n", head.status, (int) head.reason_len,
                                      head.reason);
            s_append (&out, &olen, line);
            free (line);
            s_headers (&out, &olen, &head);
            s_append (&out, &olen, keep ? "\r\n" : "Connection: close\r\n\r\n");
            hms_buf_append (h->to_client, out, olen);
            free (out);
            if (!keep)
                h->close_after = true;
            h->resp_head_done = true;
            h->state = S_RESP;
            /* what came after the head is body */
            size_t rest = h->resp_len - (size_t) rc;
            char *body = h->resp + rc;
            h->resp_len = 0;
            if (rest)
                s_on_up_bytes (h, body, rest); /* resp buffer is not touched any more */
            else if (h->resp_body.kind == HMS_H1_BODY_NONE)
                s_on_up_bytes (h, "", 0);
            else
                s_pump (h);
            return;
        }
    }
    /* the body */
    int done;
    size_t consumed = 0;
    if (!data) {
        done = hms_h1_body_eof (&h->resp_body, why, sizeof why) == 0 ? 1 : -1;
        if (done < 0) {
            char tp[300];
            hms_info ("http response truncated client=%s target=%s why=\"%s\"", h->peer,
                      hms_hostport (h->host, h->port, tp, sizeof tp), why);
            h->close_after = true;
            h->state = S_DONE;
            s_upstream_close (h);
            s_pump (h);
            return;
        }
    } else {
        done = hms_h1_body_feed (&h->resp_body, data, len, &consumed, NULL, NULL, why, sizeof why);
        if (done < 0) {
            h->close_after = true;
            h->state = S_DONE;
            s_upstream_close (h);
            s_pump (h);
            return;
        }
        hms_buf_append (h->to_client, data, consumed);
        if (consumed < len) {
            /* bytes after the response: the origin is out of step, do not reuse it */
            s_upstream_close (h);
        }
    }
    if (done == 1) {
        h->state = S_DONE;
        hms_origin_timer_stop (h->w->loop, &h->up_timer); /* the answer is whole */
        /* whole answer, whole request: the connection goes to the worker's pool at once, for
         * this client's next request or anyone else's */
        h->up_idle = h->up == S_UP_FD && !h->up_eof && h->resp_keep_alive && h->req_done &&
                     hms_buf_size (h->to_up) == 0;
        if (h->up_idle || h->up_eof || !h->resp_keep_alive)
            s_upstream_close (h);
    }
    s_pump (h);
}

/* ---- driving ------------------------------------------------------------------------------ */

static void s_client_update (s_http_t *h)
{
    int events = 0;
    bool want_read = !h->client_eof && h->in_len < S_IN_MAX &&
                     (h->state == S_REQ_HEAD ||
                      (h->state == S_REQ_BODY && hms_buf_size (h->to_up) < S_QUEUE_MAX));
    if (want_read)
        events |= EV_READ;
    if (hms_buf_size (h->to_client) > 0)
        events |= EV_WRITE;
    if (h->io.events != events || !ev_is_active (&h->io)) {
        ev_io_stop (h->w->loop, &h->io);
        ev_io_set (&h->io, h->fd, events);
        if (events)
            ev_io_start (h->w->loop, &h->io);
    }
}

/* Moves what can move: request body to the upstream, queued bytes to both sides, the
 * next request when this one is done. */
static void s_pump (s_http_t *h)
{
    char why[256];
    /* request body bytes from the client buffer */
    if (h->state == S_REQ_BODY && !h->req_done) {
        size_t consumed = 0;
        int rc = hms_h1_body_feed (&h->req_body, h->in, h->in_len, &consumed,
                                   h->up_h2 ? s_body_to_up : NULL, h, why, sizeof why);
        if (rc < 0) {
            s_reply_error (h, 400, why);
            return;
        }
        if (!h->up_h2)
            hms_buf_append (h->to_up, h->in, consumed); /* as framed: the origin reads it */
        memmove (h->in, h->in + consumed, h->in_len - consumed);
        h->in_len -= consumed;
        if (rc == 1)
            h->req_done = true;
        else if (h->client_eof) {
            s_reply_error (h, 400, "the client closed in the middle of its request body");
            return;
        }
    }
    /* to the upstream */
    if (h->up == S_UP_STREAM && h->up_stream && h->up_ready && hms_buf_size (h->to_up) > 0 &&
        hms_h2_stream_queued (h->up_stream) < S_QUEUE_MAX) {
        size_t len;
        const void *p;
        while ((p = hms_buf_peek (h->to_up, &len)) && len) {
            hms_h2_stream_write (h->up_stream, p, len);
            hms_buf_drain (h->to_up, len);
        }
    }
    if (h->up == S_UP_STREAM && h->up_stream && h->req_done && !h->up_end_sent &&
        hms_buf_size (h->to_up) == 0) {
        h->up_end_sent = true;
        hms_h2_stream_end (h->up_stream);
    }
    if (h->state == S_REQ_BODY && h->req_done)
        h->state = S_RESP;
    /* to the client */
    if (hms_buf_size (h->to_client) > 0) {
        ssize_t n = hms_buf_write_fd (h->to_client, h->fd);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            s_free (h);
            return;
        }
        if (n > 0 && h->up == S_UP_STREAM && h->up_stream && h->up_unconsumed) {
            size_t give = (size_t) n < h->up_unconsumed ? (size_t) n : h->up_unconsumed;
            h->up_unconsumed -= give;
            hms_h2_stream_consume (h->up_stream, give);
        }
    }
    if (hms_buf_size (h->to_client) == 0) {
        if (h->close_after && h->state == S_DONE) {
            s_free (h);
            return;
        }
        if (h->state == S_DONE) {
            /* ready for the next request on this connection */
            h->state = S_REQ_HEAD;
            ev_timer_set (&h->timer, h->w->ingress->idle_timeout_ms / 1000.0, 0);
            ev_timer_start (h->w->loop, &h->timer);
            if (h->in_len > 0) {
                s_next_request (h);
                return;
            }
            if (h->client_eof) {
                s_free (h);
                return;
            }
        }
    }
    s_client_update (h);
    s_up_update (h);
}

static void s_on_client_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_http_t *h = w->data;
    if (revents & EV_READ) {
        if (h->in_cap - h->in_len < 16384) {
            h->in_cap = h->in_len + 65536;
            h->in = hms_realloc (h->in, h->in_cap);
        }
        ssize_t n = read (h->fd, h->in + h->in_len, h->in_cap - h->in_len);
        if (n > 0)
            h->in_len += (size_t) n;
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            h->client_eof = true;
            if (h->state == S_REQ_HEAD && h->in_len == 0) {
                s_free (h);
                return;
            }
        }
        if (h->state == S_REQ_HEAD) {
            s_next_request (h);
            return;
        }
    }
    s_pump (h);
}

static void s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_http_t *h = w->data;
    hms_debug ("ingress.http", "closing idle client connection %s", h->peer);
    s_free (h);
}

static void s_close_on_stop (void *obj)
{
    s_free (obj);
}

/* A graceful stop: a kept-alive connection between requests is closed; the request in
 * progress is answered, with "Connection: close" when its head has not gone yet. */
static void s_drain_on_stop (void *obj)
{
    s_http_t *h = obj;
    if (h->state == S_REQ_HEAD && h->in_len == 0 && hms_buf_size (h->to_client) == 0) {
        hms_debug ("ingress.http", "closing idle client connection %s (draining)", h->peer);
        s_free (h);
        return;
    }
    h->client_keep_alive = false;
    h->close_after = true;
}

void ingress_http_start (ingress_worker_t *w, int fd, const char *peer, const char *user,
                         const char *buf, size_t len)
{
    s_http_t *h = hms_alloc (sizeof *h);
    h->w = w;
    h->fd = fd;
    h->up_conn.fd = -1;
    snprintf (h->peer, sizeof h->peer, "%s", peer);
    snprintf (h->user, sizeof h->user, "%s", user ? user : "");
    h->in_cap = len + 65536;
    h->in = hms_alloc (h->in_cap);
    memcpy (h->in, buf, len);
    h->in_len = len;
    h->to_client = hms_buf_new ();
    h->to_up = hms_buf_new ();
    ev_io_init (&h->io, s_on_client_io, fd, 0);
    h->io.data = h;
    ev_timer_init (&h->timer, s_on_timer, w->ingress->idle_timeout_ms / 1000.0, 0);
    h->timer.data = h;
    hms_origin_timer_init (&h->up_timer, s_on_up_timer, h, w->ingress->connect_timeout_ms,
                           w->ingress->idle_timeout_ms);
    h->state = S_REQ_HEAD;
    h->item = hms_worker_track (w->worker, s_close_on_stop, h);
    hms_worker_on_drain (h->item, s_drain_on_stop, true);
    s_next_request (h);
}
