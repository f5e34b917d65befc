/* hms_h2: one HTTP/2 connection over TLS (nghttp2 + hms_tls) driven by a libev loop, as a
 * server (the relay, the ingress's HTTP/2 proxy port) or a client (pooled tunnels to the
 * next relay). Streams are tunnels (CONNECT) or requests; their bytes move with HTTP/2 flow
 * control end to end: received DATA reopens the peer's window only when the application
 * says it forwarded the bytes (hms_h2_stream_consume), so a slow reader slows the writer.
 *
 * Callbacks never run inside another call of this API on the same connection, except the
 * ones noted; writes, ends, resets and consumes may be called from any callback. Output is
 * flushed before the loop next blocks. A stream is valid until its on_close callback
 * returns; a connection until its on_closed callback returns.
 *
 * Memory: a connection holds at most one TLS record and HMS_H2_OUT_MAX of framed output;
 * a stream's outgoing queue is bounded by the caller (hms_h2_stream_queued) and its
 * incoming bytes by the window it advertises (HMS_H2_STREAM_WINDOW). */
#ifndef HMS_H2_H_INCLUDED
#define HMS_H2_H_INCLUDED

#include "hms_tls.h"

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HMS_H2_STREAM_WINDOW (256 * 1024)
#define HMS_H2_CONN_WINDOW   (16 * 1024 * 1024)
#define HMS_H2_MAX_STREAMS   1024
#define HMS_H2_OUT_MAX       (64 * 1024)
#define HMS_H2_HANDSHAKE_MS  10000

/* Why a proxy refused a stream, next to its error status (DESIGN.md). */
#define HMS_H2_HDR_ERROR "hermes-error"

typedef struct hms_h2_conn hms_h2_conn_t;
typedef struct hms_h2_stream hms_h2_stream_t;

typedef struct {
    /* Server: a peer opened a stream and its request headers are complete. Attach handlers
     * with hms_h2_stream_set_cbs, then answer with hms_h2_respond (now or later) or reset. */
    void (*on_request) (hms_h2_stream_t *stream, void *arg);
    /* Client and server: TLS and the HTTP/2 preface are done; new streams can be opened. */
    void (*on_ready) (hms_h2_conn_t *conn, void *arg);
    /* The connection is gone (why says what happened); every stream got on_close before. */
    void (*on_closed) (hms_h2_conn_t *conn, const char *why, void *arg);
    /* Optional, client: the peer sent GOAWAY (it is stopping, say): no new streams from now
     * on; the open ones go on. Once per connection. */
    void (*on_goaway) (hms_h2_conn_t *conn, void *arg);
} hms_h2_conn_cbs_t;

typedef struct {
    /* Client: the response headers arrived (hms_h2_stream_status, hms_h2_stream_header). */
    void (*on_headers) (hms_h2_stream_t *stream, void *arg);
    /* Payload bytes; call hms_h2_stream_consume (len) once they are forwarded. */
    void (*on_data) (hms_h2_stream_t *stream, const uint8_t *data, size_t len, void *arg);
    /* The peer finished sending (END_STREAM). */
    void (*on_end) (hms_h2_stream_t *stream, void *arg);
    /* n queued bytes left the stream's queue for the wire: room to queue more. */
    void (*on_sent) (hms_h2_stream_t *stream, size_t n, void *arg);
    /* The stream is closed (error_code 0 when both sides ended cleanly); the stream pointer
     * is invalid when this returns. */
    void (*on_close) (hms_h2_stream_t *stream, uint32_t error_code, void *arg);
} hms_h2_stream_cbs_t;

/* Takes over tls (and its fd, closed with the connection). The TLS handshake runs first.
 * Caller does not own the return value: the connection frees itself after on_closed. */
hms_h2_conn_t *hms_h2_conn_new (struct ev_loop *loop, hms_tls_t *tls, bool server,
                                const hms_h2_conn_cbs_t *cbs, void *arg);
/* Sends GOAWAY, resets what is open and closes (on_closed follows, from the loop). */
void hms_h2_conn_close (hms_h2_conn_t *self, const char *why);
/* Graceful end: no new streams, and the connection closes once the open ones are done. A
 * server sends a GOAWAY notice, then (HMS_H2_DRAIN_NOTICE_MS later, a round trip for what
 * the peer had already sent) the final GOAWAY; a client stops opening streams. A connection
 * whose TLS handshake is not over closes at once. */
#define HMS_H2_DRAIN_NOTICE_MS 500
void hms_h2_conn_drain (hms_h2_conn_t *self);
/* True when a new stream may be opened now: ready, not going away, under the peer's
 * stream limit. */
bool hms_h2_conn_usable (const hms_h2_conn_t *self);
size_t hms_h2_conn_streams (const hms_h2_conn_t *self);
/* The peer's verified certificate name (TLS), or NULL. */
const char *hms_h2_conn_peer (const hms_h2_conn_t *self);
void hms_h2_conn_set_arg (hms_h2_conn_t *self, void *arg);

/* Client: opens a stream with the given pseudo and regular headers; with has_body the
 * request stays open for hms_h2_stream_write. NULL when the connection is not usable. */
hms_h2_stream_t *hms_h2_request (hms_h2_conn_t *conn, const nghttp2_nv *nva, size_t nvlen,
                                 bool has_body, const hms_h2_stream_cbs_t *cbs, void *arg);
/* Server: answers a request (status, extra headers); with has_body the response stays open
 * for hms_h2_stream_write. 0 or -1. */
int hms_h2_respond (hms_h2_stream_t *stream, int status, const nghttp2_nv *extra, size_t n,
                    bool has_body);
/* Server: answers a request with the status and regular headers of answer, a response
 * received on another stream (a proxy passing an answer on). 0 or -1. */
int hms_h2_respond_as (hms_h2_stream_t *stream, const hms_h2_stream_t *answer, bool has_body);
/* Server: refuses a request with the proxy's own error: the status, why in HMS_H2_HDR_ERROR
 * (what the next proxy reads) and, for a person, as a text/plain body (none for HEAD and
 * CONNECT). The caller lets go of the stream after. 0 or -1. */
int hms_h2_refuse (hms_h2_stream_t *stream, int status, const char *why);
void hms_h2_stream_set_cbs (hms_h2_stream_t *stream, const hms_h2_stream_cbs_t *cbs, void *arg);
/* In on_close of a request not answered yet: true when the peer surely did not answer it,
 * so that a request that sent no body may go again: the peer refused it unprocessed
 * (REFUSED_STREAM, RFC 9113 8.7), or the connection went away under it (the peer closed
 * it, a socket or TLS error, a timeout), not a reset of the peer's or ours. */
bool hms_h2_stream_unanswered (const hms_h2_stream_t *stream, uint32_t error_code);

/* Lets go of a stream: its callbacks are dropped and whatever still arrives on it is
 * consumed and discarded, so it cannot hold the connection's window. */
void hms_h2_stream_orphan (hms_h2_stream_t *stream);

/* For a CONNECT to a next hop: when its answer is not 200, writes "<who> answered STATUS:
 * <its hermes-error>" into text, lets go of the stream (orphan + reset) and returns the
 * status; returns 0 for a 200, leaving the stream alone. */
int hms_h2_stream_refusal (hms_h2_stream_t *stream, const char *who, char *text, size_t len);

/* Request headers (server side) or response headers (client side), by lower-case name;
 * pseudo headers by their names (":method", ":authority", ":protocol", ":path"). */
const char *hms_h2_stream_header (const hms_h2_stream_t *stream, const char *name);
/* The i-th header as received (pseudo headers included), for copying them all. 0, or -1
 * past the last. */
int hms_h2_stream_header_at (const hms_h2_stream_t *stream, size_t i, const char **name,
                             const char **value);
/* The response status (client side), 0 before the headers. */
int hms_h2_stream_status (const hms_h2_stream_t *stream);
int32_t hms_h2_stream_id (const hms_h2_stream_t *stream);
hms_h2_conn_t *hms_h2_stream_conn (const hms_h2_stream_t *stream);

/* Queues payload bytes (copied). */
void hms_h2_stream_write (hms_h2_stream_t *stream, const void *data, size_t len);
/* Bytes queued and not yet framed. */
size_t hms_h2_stream_queued (const hms_h2_stream_t *stream);
/* Ends our side (END_STREAM) after the queued bytes. */
void hms_h2_stream_end (hms_h2_stream_t *stream);
/* Reopens the peer's window by n received bytes that were forwarded. */
void hms_h2_stream_consume (hms_h2_stream_t *stream, size_t n);
/* Resets the stream (RST_STREAM with code); on_close follows from the loop. */
void hms_h2_stream_reset (hms_h2_stream_t *stream, uint32_t code);

#endif
