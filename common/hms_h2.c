/* hms_h2: nghttp2 session over hms_tls on a libev loop; see hms_h2.h. */
#include "hms_h2.h"
#include "hms_alloc.h"
#include "hms_buf.h"
#include "hms_log.h"
#include "hms_soon.h"
#include "hms_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HMS_H2_MAX_HEADERS 64

typedef struct {
    char *name;
    char *value;
} s_header_t;

struct hms_h2_stream {
    hms_h2_conn_t *conn;
    int32_t id;
    hms_h2_stream_cbs_t cbs;
    void *arg;
    s_header_t headers[HMS_H2_MAX_HEADERS];
    size_t nheaders;
    int status;
    hms_buf_t *out;
    bool out_end;
    bool deferred;
    bool has_provider;
    size_t unconsumed;
    size_t sent_pending;
    struct hms_h2_stream *prev, *next;
    /* in its connection's list of streams whose writer is owed an on_sent */
    bool sent_listed;
    struct hms_h2_stream *sent_prev, *sent_next;
    bool lost; /* closed because its connection went away */
};

struct hms_h2_conn {
    struct ev_loop *loop;
    hms_tls_t *tls;
    int fd;
    bool server;
    nghttp2_session *session;
    ev_io io;
    hms_soon_t prep; /* the flush (and a teardown, if failed) at the end of the loop turn */
    ev_timer timer;
    hms_buf_t *out;
    bool handshaking;
    bool ready;
    bool failed;
    bool going_away;
    bool draining;   /* we sent GOAWAY: the open streams finish, no new ones */
    bool in_session; /* inside nghttp2_session_mem_recv: no mem_send now */
    hms_h2_conn_cbs_t cbs;
    void *arg;
    char why[256];
    hms_h2_stream_t *streams;
    size_t nstreams;
    hms_h2_stream_t *sent; /* streams with sent_pending: told at the end of a flush */
    hms_worker_t *worker;  /* when made on a worker thread: closed when it stops */
    hms_worker_item_t *item;
};

static void s_flush (hms_h2_conn_t *self);
static void s_teardown (hms_h2_conn_t *self);

static void s_fail (hms_h2_conn_t *self, const char *why)
{
    if (!self->failed) {
        self->failed = true;
        snprintf (self->why, sizeof self->why, "%s", why);
    }
}

/* Asks for a flush (and a teardown, if failed) at the end of this loop turn: what the turn
 * submitted goes out together. */
static void s_dirty (hms_h2_conn_t *self)
{
    hms_soon_start (self->loop, &self->prep);
}

/* ---- streams --------------------------------------------------------------------- */

static hms_h2_stream_t *s_stream_new (hms_h2_conn_t *conn)
{
    hms_h2_stream_t *s = hms_alloc (sizeof *s);
    s->conn = conn;
    s->out = hms_buf_new ();
    s->next = conn->streams;
    if (conn->streams)
        conn->streams->prev = s;
    conn->streams = s;
    conn->nstreams++;
    return s;
}

static void s_sent_unlink (hms_h2_stream_t *s)
{
    if (!s->sent_listed)
        return;
    if (s->sent_prev)
        s->sent_prev->sent_next = s->sent_next;
    else
        s->conn->sent = s->sent_next;
    if (s->sent_next)
        s->sent_next->sent_prev = s->sent_prev;
    s->sent_prev = s->sent_next = NULL;
    s->sent_listed = false;
}

static void s_stream_free (hms_h2_stream_t *s)
{
    hms_h2_conn_t *conn = s->conn;
    s_sent_unlink (s);
    if (s->prev)
        s->prev->next = s->next;
    else
        conn->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    conn->nstreams--;
    for (size_t i = 0; i < s->nheaders; i++) {
        free (s->headers[i].name);
        free (s->headers[i].value);
    }
    hms_buf_destroy (&s->out);
    free (s);
}

static void s_stream_closed (hms_h2_stream_t *s, uint32_t code)
{
    hms_h2_conn_t *conn = s->conn;
    if (s->unconsumed && conn->session)
        nghttp2_session_consume_connection (conn->session, s->unconsumed);
    if (s->cbs.on_close)
        s->cbs.on_close (s, code, s->arg);
    s_stream_free (s);
}

static ssize_t s_read_cb (nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    hms_h2_stream_t *s = source->ptr;
    size_t n = hms_buf_read (s->out, buf, length);
    s->sent_pending += n;
    if (n && !s->sent_listed) {
        hms_h2_conn_t *conn = s->conn;
        s->sent_prev = NULL;
        s->sent_next = conn->sent;
        if (conn->sent)
            conn->sent->sent_prev = s;
        conn->sent = s;
        s->sent_listed = true;
    }
    if (hms_buf_size (s->out) == 0 && s->out_end)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t) n;
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

static int s_on_begin_headers (nghttp2_session *session, const nghttp2_frame *frame,
                               void *user_data)
{
    hms_h2_conn_t *self = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        !self->server)
        return 0;
    hms_h2_stream_t *s = s_stream_new (self);
    s->id = frame->hd.stream_id;
    nghttp2_session_set_stream_user_data (session, s->id, s);
    return 0;
}

static int s_on_header (nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    hms_h2_stream_t *s = nghttp2_session_get_stream_user_data (session, frame->hd.stream_id);
    if (!s)
        return 0;
    if (namelen == 7 && memcmp (name, ":status", 7) == 0) {
        int status = atoi ((const char *) value);
        if (status >= 100 && status < 200)
            return 0; /* interim response: its headers are not the answer */
        s->status = status;
    }
    if (s->nheaders >= HMS_H2_MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    s->headers[s->nheaders].name = hms_alloc (namelen + 1);
    memcpy (s->headers[s->nheaders].name, name, namelen);
    s->headers[s->nheaders].value = hms_alloc (valuelen + 1);
    memcpy (s->headers[s->nheaders].value, value, valuelen);
    s->nheaders++;
    return 0;
}

static int s_on_frame_recv (nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    hms_h2_conn_t *self = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        bool first = !self->going_away;
        self->going_away = true;
        if (first && self->cbs.on_goaway)
            self->cbs.on_goaway (self, self->arg);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    hms_h2_stream_t *s = nghttp2_session_get_stream_user_data (session, frame->hd.stream_id);
    if (!s)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (self->cbs.on_request)
                self->cbs.on_request (s, self->arg);
            else
                nghttp2_submit_rst_stream (session, NGHTTP2_FLAG_NONE, s->id,
                                           NGHTTP2_REFUSED_STREAM);
        } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE && s->status >= 200) {
            if (s->cbs.on_headers)
                s->cbs.on_headers (s, s->arg);
        }
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->cbs.on_end)
        s->cbs.on_end (s, s->arg);
    return 0;
}

static int s_on_data_chunk (nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user_data)
{
    hms_h2_stream_t *s = nghttp2_session_get_stream_user_data (session, stream_id);
    if (!s) {
        nghttp2_session_consume_connection (session, len);
        return 0;
    }
    s->unconsumed += len;
    if (s->cbs.on_data)
        s->cbs.on_data (s, data, len, s->arg);
    else
        hms_h2_stream_consume (s, len); /* nobody reads it: do not stall the connection */
    return 0;
}

static int s_on_stream_close (nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    hms_h2_stream_t *s = nghttp2_session_get_stream_user_data (session, stream_id);
    if (s)
        s_stream_closed (s, error_code);
    return 0;
}

/* ---- I/O ----------------------------------------------------------------------------- */

static void s_update_io (hms_h2_conn_t *self)
{
    int events = EV_READ;
    if (hms_buf_size (self->out) > 0 || hms_tls_want_write (self->tls))
        events |= EV_WRITE;
    if (self->io.events != events) {
        ev_io_stop (self->loop, &self->io);
        ev_io_set (&self->io, self->fd, events);
        ev_io_start (self->loop, &self->io);
    }
}

static int s_start_session (hms_h2_conn_t *self)
{
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, HMS_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, HMS_H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    size_t n = self->server ? 3 : 2;
    if (nghttp2_submit_settings (self->session, NGHTTP2_FLAG_NONE, settings, n) != 0 ||
        nghttp2_session_set_local_window_size (self->session, NGHTTP2_FLAG_NONE, 0,
                                               HMS_H2_CONN_WINDOW) != 0) {
        s_fail (self, "cannot send HTTP/2 settings");
        return -1;
    }
    return 0;
}

static void s_read (hms_h2_conn_t *self)
{
    uint8_t buf[16384];
    while (!self->failed) {
        ssize_t n = hms_tls_read (self->tls, buf, sizeof buf);
        if (n == HMS_TLS_AGAIN)
            break;
        if (n == HMS_TLS_EOF) {
            s_fail (self, "peer closed the connection");
            break;
        }
        if (n < 0) {
            char why[256];
            snprintf (why, sizeof why, "TLS: %s", hms_tls_error (self->tls));
            s_fail (self, why);
            break;
        }
        self->in_session = true;
        ssize_t rv = nghttp2_session_mem_recv (self->session, buf, (size_t) n);
        self->in_session = false;
        if (rv < 0) {
            char why[256];
            snprintf (why, sizeof why, "HTTP/2 protocol error from peer: %s",
                      nghttp2_strerror ((int) rv));
            s_fail (self, why);
        }
    }
}

/* Moves framed output into TLS and frames more while there is room. */
static void s_flush (hms_h2_conn_t *self)
{
    if (self->failed || self->handshaking)
        return;
    if (hms_tls_want_write (self->tls) && hms_tls_flush (self->tls) < 0) {
        s_fail (self, hms_tls_error (self->tls));
        return;
    }
    while (!self->failed) {
        /* frame as much as there is room for, then hand TLS full records: a DATA frame
         * split over two buffer chunks must not become a full record and a tiny one */
        while (hms_buf_size (self->out) < HMS_H2_OUT_MAX) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send (self->session, &data);
            if (n < 0) {
                s_fail (self, nghttp2_strerror ((int) n));
                return;
            }
            if (n == 0)
                break;
            hms_buf_append (self->out, data, (size_t) n);
        }
        bool more = hms_buf_size (self->out) >= HMS_H2_OUT_MAX; /* nghttp2 may have more */
        bool blocked = false;
        hms_tls_batch (self->tls, true); /* the records leave together, not a send each */
        while (hms_buf_size (self->out) > 0 && !hms_tls_want_write (self->tls)) {
            /* a full record straight from the queue when it is contiguous there (the usual
             * case: records and queue chunks are both 16 KiB), else gathered in a copy */
            uint8_t record[16384];
            size_t len = hms_buf_size (self->out), run;
            if (len > sizeof record)
                len = sizeof record;
            const uint8_t *data = hms_buf_peek (self->out, &run);
            if (run < len)
                data = record, len = hms_buf_copy (self->out, record, len);
            ssize_t n = hms_tls_write (self->tls, data, len);
            if (n == HMS_TLS_AGAIN) {
                blocked = true;
                break;
            }
            if (n < 0) {
                char why[256];
                snprintf (why, sizeof why, "TLS: %s", hms_tls_error (self->tls));
                s_fail (self, why);
                return;
            }
            hms_buf_drain (self->out, (size_t) n);
            if ((size_t) n < len) {
                blocked = true; /* the socket is full */
                break;
            }
        }
        int rc = hms_tls_batch (self->tls, false);
        if (rc < 0) {
            char why[256];
            snprintf (why, sizeof why, "TLS: %s", hms_tls_error (self->tls));
            s_fail (self, why);
            return;
        }
        blocked |= rc > 0;
        if (!more || blocked || hms_tls_want_write (self->tls) || hms_buf_size (self->out) > 0)
            break;
    }
    /* Tell writers that their bytes left the queues (may queue more: flush again later).
     * Only the streams that sent are visited, not every stream of the connection. */
    bool more = false;
    while (self->sent) {
        hms_h2_stream_t *s = self->sent;
        s_sent_unlink (s);
        size_t n = s->sent_pending;
        s->sent_pending = 0;
        if (n && s->cbs.on_sent) {
            s->cbs.on_sent (s, n, s->arg);
            more = true;
        }
    }
    if (more)
        s_dirty (self);
    if (!self->failed && !nghttp2_session_want_read (self->session) &&
        !nghttp2_session_want_write (self->session) && hms_buf_size (self->out) == 0)
        s_fail (self, self->draining     ? "drained"
                      : self->going_away ? "peer sent GOAWAY"
                                         : "connection finished");
    if (!self->failed)
        s_update_io (self);
}

static void s_handshake (hms_h2_conn_t *self)
{
    int rc = hms_tls_handshake (self->tls);
    if (rc < 0) {
        char why[256];
        snprintf (why, sizeof why, "TLS handshake: %s", hms_tls_error (self->tls));
        s_fail (self, why);
        return;
    }
    if (rc > 0) {
        ev_io_stop (self->loop, &self->io);
        ev_io_set (&self->io, self->fd, rc == HMS_TLS_WANT_WRITE ? EV_WRITE : EV_READ);
        ev_io_start (self->loop, &self->io);
        return;
    }
    self->handshaking = false;
    ev_timer_stop (self->loop, &self->timer);
    if (s_start_session (self))
        return;
    self->ready = true;
    if (self->cbs.on_ready)
        self->cbs.on_ready (self, self->arg);
    /* a peer whose handshake was under way when a graceful stop began */
    if (self->server && self->worker && hms_worker_draining (self->worker))
        hms_h2_conn_drain (self);
}

/* Runs after every entry from the loop: flush, or tear down a failed connection. */
static void s_after (hms_h2_conn_t *self)
{
    if (!self->failed)
        s_flush (self);
    if (self->failed)
        s_teardown (self);
}

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    hms_h2_conn_t *self = w->data;
    if (self->handshaking)
        s_handshake (self);
    if (!self->handshaking && !self->failed) {
        if ((revents & EV_WRITE) && hms_tls_want_write (self->tls))
            s_flush (self);
        s_read (self);
    }
    s_after (self);
}

static void s_on_prepare (struct ev_loop *loop, hms_soon_t *soon)
{
    s_after (soon->data);
}

static void s_on_timer (struct ev_loop *loop, ev_timer *w, int revents)
{
    hms_h2_conn_t *self = w->data;
    if (self->handshaking)
        s_fail (self, "TLS handshake timed out");
    else /* a round trip after the drain's notice: streams the peer opened since are refused */
        nghttp2_submit_goaway (self->session, NGHTTP2_FLAG_NONE,
                               nghttp2_session_get_last_proc_stream_id (self->session),
                               NGHTTP2_NO_ERROR, NULL, 0);
    s_after (self);
}

static void s_teardown (hms_h2_conn_t *self)
{
    if (self->worker)
        hms_worker_untrack (self->worker, self->item);
    ev_io_stop (self->loop, &self->io);
    hms_soon_stop (self->loop, &self->prep);
    ev_timer_stop (self->loop, &self->timer);
    while (self->streams) {
        self->streams->lost = true;
        s_stream_closed (self->streams, NGHTTP2_CANCEL);
    }
    if (self->cbs.on_closed)
        self->cbs.on_closed (self, self->why, self->arg);
    nghttp2_session_del (self->session);
    if (!self->handshaking)
        hms_tls_bye (self->tls); /* best effort: close_notify if the socket takes it now */
    hms_tls_destroy (&self->tls);
    close (self->fd);
    hms_buf_destroy (&self->out);
    free (self);
}

static void s_close_on_stop (void *obj)
{
    hms_h2_conn_close (obj, "shutting down");
}

static void s_drain_on_stop (void *obj)
{
    hms_h2_conn_drain (obj);
}

hms_h2_conn_t *hms_h2_conn_new (struct ev_loop *loop, hms_tls_t *tls, bool server,
                                const hms_h2_conn_cbs_t *cbs, void *arg)
{
    hms_h2_conn_t *self = hms_alloc (sizeof *self);
    self->loop = loop;
    self->tls = tls;
    self->fd = hms_tls_fd (tls);
    self->server = server;
    self->cbs = *cbs;
    self->arg = arg;
    self->out = hms_buf_new ();
    self->handshaking = true;
    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new (&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback (callbacks, s_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback (callbacks, s_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback (callbacks, s_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback (callbacks, s_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback (callbacks, s_on_stream_close);
    nghttp2_option *option;
    nghttp2_option_new (&option);
    nghttp2_option_set_no_auto_window_update (option, 1);
    nghttp2_option_set_peer_max_concurrent_streams (option, HMS_H2_MAX_STREAMS);
    int rc = server ? nghttp2_session_server_new2 (&self->session, callbacks, self, option)
                    : nghttp2_session_client_new2 (&self->session, callbacks, self, option);
    nghttp2_option_del (option);
    nghttp2_session_callbacks_del (callbacks);
    if (rc != 0) {
        hms_error ("cannot create an HTTP/2 session: %s", nghttp2_strerror (rc));
        abort (); /* only out of memory gets here */
    }
    ev_io_init (&self->io, s_on_io, self->fd, EV_READ | EV_WRITE);
    self->io.data = self;
    hms_soon_init (&self->prep, s_on_prepare, self);
    ev_timer_init (&self->timer, s_on_timer, HMS_H2_HANDSHAKE_MS / 1000.0, 0);
    self->timer.data = self;
    ev_io_start (loop, &self->io);
    ev_timer_start (loop, &self->timer);
    self->worker = hms_worker_current ();
    if (self->worker) {
        self->item = hms_worker_track (self->worker, s_close_on_stop, self);
        /* a graceful stop waits for the streams a peer brought; a connection of ours to a
         * next hop (a pool's) is neither drained nor waited for: its streams' flows are */
        hms_worker_on_drain (self->item, server ? s_drain_on_stop : NULL, server);
    }
    return self;
}

void hms_h2_conn_close (hms_h2_conn_t *self, const char *why)
{
    if (self->ready && !self->failed)
        nghttp2_session_terminate_session (self->session, NGHTTP2_NO_ERROR);
    s_fail (self, why);
    s_dirty (self);
}

void hms_h2_conn_drain (hms_h2_conn_t *self)
{
    if (self->failed || self->draining)
        return;
    if (!self->ready) {
        hms_h2_conn_close (self, "draining before the handshake was over");
        return;
    }
    self->draining = true;
    if (self->server) { /* RFC 9113 6.8: a notice first, the last stream id a round trip later */
        nghttp2_submit_shutdown_notice (self->session);
        ev_timer_stop (self->loop, &self->timer);
        ev_timer_set (&self->timer, HMS_H2_DRAIN_NOTICE_MS / 1000.0, 0);
        ev_timer_start (self->loop, &self->timer);
    } else {
        self->going_away = true;
        nghttp2_submit_goaway (self->session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    }
    s_dirty (self);
}

bool hms_h2_conn_usable (const hms_h2_conn_t *self)
{
    return self->ready && !self->failed && !self->going_away &&
           nghttp2_session_get_remote_settings (
               self->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) > self->nstreams;
}

size_t hms_h2_conn_streams (const hms_h2_conn_t *self)
{
    return self->nstreams;
}

const char *hms_h2_conn_peer (const hms_h2_conn_t *self)
{
    return hms_tls_peer_name (self->tls);
}

void hms_h2_conn_set_arg (hms_h2_conn_t *self, void *arg)
{
    self->arg = arg;
}

hms_h2_stream_t *hms_h2_request (hms_h2_conn_t *conn, const nghttp2_nv *nva, size_t nvlen,
                                 bool has_body, const hms_h2_stream_cbs_t *cbs, void *arg)
{
    if (!hms_h2_conn_usable (conn))
        return NULL;
    hms_h2_stream_t *s = s_stream_new (conn);
    s->cbs = *cbs;
    s->arg = arg;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = s_read_cb};
    int32_t id =
        nghttp2_submit_request (conn->session, NULL, nva, nvlen, has_body ? &prd : NULL, s);
    if (id < 0) {
        hms_warning ("cannot open an HTTP/2 stream: %s", nghttp2_strerror (id));
        s_stream_free (s);
        return NULL;
    }
    s->id = id;
    s->has_provider = has_body;
    s_dirty (conn);
    return s;
}

int hms_h2_respond (hms_h2_stream_t *s, int status, const nghttp2_nv *extra, size_t n,
                    bool has_body)
{
    char code[8];
    snprintf (code, sizeof code, "%d", status);
    nghttp2_nv nva[16];
    size_t count = 0;
    nva[count++] = (nghttp2_nv){(uint8_t *) ":status", (uint8_t *) code, 7, strlen (code),
                                NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < n && count < 16; i++)
        nva[count++] = extra[i];
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = s_read_cb};
    int rc = nghttp2_submit_response (s->conn->session, s->id, nva, count, has_body ? &prd : NULL);
    if (rc != 0)
        return -1;
    s->has_provider = has_body;
    s_dirty (s->conn);
    return 0;
}

int hms_h2_respond_as (hms_h2_stream_t *stream, const hms_h2_stream_t *answer, bool has_body)
{
    nghttp2_nv nva[64];
    size_t n = 0;
    const char *name, *value;
    for (size_t i = 0; n < 64 && hms_h2_stream_header_at (answer, i, &name, &value) == 0; i++)
        if (name[0] != ':')
            nva[n++] = (nghttp2_nv){(uint8_t *) name, (uint8_t *) value, strlen (name),
                                    strlen (value), NGHTTP2_NV_FLAG_NONE};
    return hms_h2_respond (stream, hms_h2_stream_status (answer), nva, n, has_body);
}

int hms_h2_refuse (hms_h2_stream_t *s, int status, const char *why)
{
    size_t len = strlen (why);
    const char *method = hms_h2_stream_header (s, ":method");
    /* no body for HEAD; none for a refused CONNECT either: nobody reads it (the next proxy
     * reads hermes-error, and curl 8.14 shows neither) */
    bool body = !method || (strcmp (method, "HEAD") != 0 && strcmp (method, "CONNECT") != 0);
    char length[24];
    snprintf (length, sizeof length, "%zu", body ? len + 1 : 0);
    nghttp2_nv nva[] = {{(uint8_t *) HMS_H2_HDR_ERROR, (uint8_t *) why, sizeof HMS_H2_HDR_ERROR - 1,
                         len, NGHTTP2_NV_FLAG_NONE},
                        {(uint8_t *) "content-type", (uint8_t *) "text/plain; charset=utf-8", 12,
                         25, NGHTTP2_NV_FLAG_NONE},
                        {(uint8_t *) "content-length", (uint8_t *) length, 14, strlen (length),
                         NGHTTP2_NV_FLAG_NONE}};
    if (hms_h2_respond (s, status, nva, body ? 3 : 1, body) != 0)
        return -1;
    if (body) {
        hms_h2_stream_write (s, why, len);
        hms_h2_stream_write (s, "\n", 1);
        hms_h2_stream_end (s);
    }
    return 0;
}

bool hms_h2_stream_unanswered (const hms_h2_stream_t *s, uint32_t error_code)
{
    return s->lost || error_code == NGHTTP2_REFUSED_STREAM;
}

void hms_h2_stream_set_cbs (hms_h2_stream_t *s, const hms_h2_stream_cbs_t *cbs, void *arg)
{
    s->cbs = *cbs;
    s->arg = arg;
}

static void s_orphan_data (hms_h2_stream_t *s, const uint8_t *data, size_t len, void *arg)
{
    hms_h2_stream_consume (s, len);
}

void hms_h2_stream_orphan (hms_h2_stream_t *s)
{
    static const hms_h2_stream_cbs_t orphan = {.on_data = s_orphan_data};
    s->cbs = orphan;
    s->arg = NULL;
}

int hms_h2_stream_refusal (hms_h2_stream_t *s, const char *who, char *text, size_t len)
{
    if (s->status == 200)
        return 0;
    const char *why = hms_h2_stream_header (s, HMS_H2_HDR_ERROR);
    snprintf (text, len, "%s answered %d: %s", who, s->status, why ? why : "-");
    hms_h2_stream_orphan (s);
    hms_h2_stream_reset (s, NGHTTP2_CANCEL);
    return s->status;
}

const char *hms_h2_stream_header (const hms_h2_stream_t *s, const char *name)
{
    for (size_t i = 0; i < s->nheaders; i++)
        if (strcmp (s->headers[i].name, name) == 0)
            return s->headers[i].value;
    return NULL;
}

int hms_h2_stream_header_at (const hms_h2_stream_t *s, size_t i, const char **name,
                             const char **value)
{
    if (i >= s->nheaders)
        return -1;
    *name = s->headers[i].name;
    *value = s->headers[i].value;
    return 0;
}

int hms_h2_stream_status (const hms_h2_stream_t *s)
{
    return s->status;
}

int32_t hms_h2_stream_id (const hms_h2_stream_t *s)
{
    return s->id;
}

hms_h2_conn_t *hms_h2_stream_conn (const hms_h2_stream_t *s)
{
    return s->conn;
}

static void s_resume (hms_h2_stream_t *s)
{
    if (s->deferred && s->has_provider) {
        s->deferred = false;
        nghttp2_session_resume_data (s->conn->session, s->id);
    }
    s_dirty (s->conn);
}

void hms_h2_stream_write (hms_h2_stream_t *s, const void *data, size_t len)
{
    hms_buf_append (s->out, data, len);
    s_resume (s);
}

size_t hms_h2_stream_queued (const hms_h2_stream_t *s)
{
    return hms_buf_size (s->out);
}

void hms_h2_stream_end (hms_h2_stream_t *s)
{
    s->out_end = true;
    s_resume (s);
}

void hms_h2_stream_consume (hms_h2_stream_t *s, size_t n)
{
    if (n > s->unconsumed)
        n = s->unconsumed;
    s->unconsumed -= n;
    nghttp2_session_consume (s->conn->session, s->id, n);
    s_dirty (s->conn);
}

void hms_h2_stream_reset (hms_h2_stream_t *s, uint32_t code)
{
    nghttp2_submit_rst_stream (s->conn->session, NGHTTP2_FLAG_NONE, s->id, code);
    s_dirty (s->conn);
}
