/* hms_tunnel: moves bytes both ways between two ends of a proxied flow, each end a TCP
 * socket or an HTTP/2 stream (hms_h2), with back-pressure all the way: a socket is read
 * only while the other side's queue is under HMS_TUNNEL_QUEUE_MAX, and a stream's received
 * bytes reopen its window only once the other end took them. Half-closes are passed on
 * (EOF -> END_STREAM -> shutdown(SHUT_WR)); a reset or a socket error on one end aborts
 * both.
 *
 * Side A is the client's end, side B the target's. Either end may be attached later than
 * the other (while the proxy dials or waits for a CONNECT answer); bytes from the attached
 * end wait in the tunnel meanwhile, within the same bounds.
 *
 * Memory of an idle tunnel: this struct and nothing else (queues allocate on first byte). */
#ifndef HMS_TUNNEL_H_INCLUDED
#define HMS_TUNNEL_H_INCLUDED

#include "hms_h2.h"

#include <ev.h>
#include <stdint.h>

#define HMS_TUNNEL_QUEUE_MAX (256 * 1024)

typedef enum { HMS_TUNNEL_A = 0, HMS_TUNNEL_B = 1 } hms_tunnel_side_t;

typedef struct hms_tunnel hms_tunnel_t;

/* The tunnel is over: why is NULL after a clean close of both directions, else what broke
 * ("client reset the stream", "target: Connection reset by peer", "idle for 300 s").
 * a_to_b / b_to_a count the bytes delivered. The tunnel is freed when this returns. */
typedef void (hms_tunnel_done_fn) (hms_tunnel_t *tunnel, const char *why, uint64_t a_to_b,
                                   uint64_t b_to_a, void *arg);

/* Caller does not own the return value: the tunnel frees itself after done.
 * idle_ms 0 means no idle limit. */
hms_tunnel_t *hms_tunnel_new (struct ev_loop *loop, int idle_ms, hms_tunnel_done_fn *done,
                              void *arg);
/* Attaches a connected non-blocking socket (the tunnel closes it); what was queued for this
 * end with hms_tunnel_send is written to it at once, as far as it takes it. */
void hms_tunnel_attach_fd (hms_tunnel_t *self, hms_tunnel_side_t side, int fd);
/* Reads what socket end side has received already, as its readiness would: a client that
 * spoke first while the other end was being connected is passed on now, not a loop turn
 * later. May end the tunnel (its done callback runs before this returns). */
void hms_tunnel_read_now (hms_tunnel_t *self, hms_tunnel_side_t side);
/* For tunnels that carry one HTTP exchange (a request forwarded between relays): the
 * response headers that arrive on side B's stream are handed to fn (which answers side A);
 * they come before any of B's data. */
typedef void (hms_tunnel_headers_fn) (hms_tunnel_t *tunnel, hms_h2_stream_t *from, void *arg);
void hms_tunnel_on_headers (hms_tunnel_t *self, hms_tunnel_headers_fn *fn);

/* Socket to socket, bytes that need no inspection: once a direction carries bulk (a read
 * filled the 64 KiB buffer), move its bytes with splice(2) through a pipe instead of copying
 * them through this process; small exchanges stay with read/write, which costs fewer system
 * calls. A pipe is held only while bytes are in it. Off by default; bytes queued with
 * hms_tunnel_send still go first. */
void hms_tunnel_splice (hms_tunnel_t *self, bool on);
/* Before side is attached: what is queued toward it with hms_tunnel_send waits until the
 * other side sends something (then both leave in one write) or ms pass, whichever comes
 * first. For a proxy's "200 Connection established" to a client that sent its first bytes
 * with its CONNECT: the 200 and the target's answer reach it as one segment. */
void hms_tunnel_hold (hms_tunnel_t *self, hms_tunnel_side_t side, int ms);
/* Attaches a stream (the tunnel takes its callbacks, and ends or resets it). */
void hms_tunnel_attach_stream (hms_tunnel_t *self, hms_tunnel_side_t side, hms_h2_stream_t *stream);
/* The stream attached at side had ended (END_STREAM) before it was attached: the tunnel
 * passes that end on, as if it had just arrived. */
void hms_tunnel_stream_ended (hms_tunnel_t *self, hms_tunnel_side_t side);
/* Queues bytes to deliver to side before anything else from the other side (a proxy's
 * "200 Connection established", or bytes read with a request head). */
void hms_tunnel_send (hms_tunnel_t *self, hms_tunnel_side_t side, const void *data, size_t len);
/* For handing a connection to the bypass agent: stops moving bytes when both ends are
 * sockets, nothing is queued either way and neither end has finished; true then, with the
 * descriptors and the bytes delivered each way. The sockets stay open and attached. */
bool hms_tunnel_pause (hms_tunnel_t *self, int *a_fd, int *b_fd, uint64_t *a_to_b,
                       uint64_t *b_to_a);
/* Moves bytes again after a pause (the agent refused). */
void hms_tunnel_resume (hms_tunnel_t *self);
/* Ends a paused tunnel whose connections now belong to someone else (the agent spliced
 * them): closes only this process's descriptors; done gets why "offloaded". */
void hms_tunnel_release (hms_tunnel_t *self);

/* Ends the tunnel now: sockets closed with RST, streams reset; done is called before this
 * returns. */
void hms_tunnel_abort (hms_tunnel_t *self, const char *why);
/* Ends a tunnel whose side A is a stream not answered yet: A gets the HTTP status (502,
 * 504, 403, ...) with a "hermes-error: why" header instead of a reset; the rest as abort. */
void hms_tunnel_refuse (hms_tunnel_t *self, int status, const char *why);

#endif
