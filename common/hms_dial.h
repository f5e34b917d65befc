/* hms_dial: opens a TCP connection to host:port from a libev loop without blocking it:
 * resolution (IP literals at once, names through hms_resolve), a non-blocking connect, and
 * a deadline. A name's addresses are tried in turn (the next at once when one fails, or
 * after 250 ms alongside one that has not answered, as RFC 8305 does; the first connected
 * wins), so a name behind which one of several instances is gone still connects. One
 * callback with the connected socket or the reason it failed. */
#ifndef HMS_DIAL_H_INCLUDED
#define HMS_DIAL_H_INCLUDED

#include "hms_net.h"
#include "hms_resolve.h"

#include <ev.h>

typedef struct hms_dial hms_dial_t;
/* fd >= 0 on success (caller owns it, non-blocking, TCP_NODELAY); -1 with why (e.g. "connect to
 * 127.0.0.1:9: Connection refused", "connect to relays.example:4433: 10.0.0.2:4433: Connection
 * refused, 10.0.0.3:4433: No route to host"). The dial is freed after the callback. */
typedef void (hms_dial_fn) (int fd, const char *why, void *arg);

/* Starts dialing; the callback always comes later from the loop, never from this call.
 * opts (copied; NULL: the kernel's defaults) are set on the socket before the SYN
 * (hms_net_connect_opts). Caller does not own the return value (valid until the callback
 * or a cancel). */
hms_dial_t *hms_dial_start (struct ev_loop *loop, const char *host, uint16_t port, int timeout_ms,
                            const hms_sockopts_t *opts, hms_dial_fn *fn, void *arg);
/* The same, for a caller that can take the connection at once: when the handshake is over
 * before this returns (an IP literal on this host, usually), returns NULL with the socket in
 * *fd_now (caller owns it) and fn is never called; otherwise *fd_now is -1 and it goes on
 * as hms_dial_start (failures always come through fn, from the loop). */
hms_dial_t *hms_dial_start_now (struct ev_loop *loop, const char *host, uint16_t port,
                                int timeout_ms, const hms_sockopts_t *opts, hms_dial_fn *fn,
                                void *arg, int *fd_now);
/* Stops a dial in progress; the callback will not be called. */
void hms_dial_cancel (hms_dial_t *self);

#endif
