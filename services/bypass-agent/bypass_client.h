/* bypass_client: the proxy's side of the bypass agent (hermes-bypass) on the same host: offer
 * a connection that only copies bytes between two TCP sockets, and learn whether the agent
 * took it. Non-blocking: put bypass_client_fd in the proxy's event loop (readable: answers
 * are pending; writable: an offer that failed with EAGAIN may be sent again).
 *
 * The contract (protocol: bypass_proto.h):
 *   1. bypass_client_offer sends both sockets; from then on the proxy does no I/O on them
 *      (it takes them out of its loop) but keeps its descriptors open.
 *   2. An answer arrives (bypass_client_recv):
 *        accepted  the agent spliced the connection; both sockets are already closed
 *                  silently: close the descriptors and forget the connection;
 *        refused   (or error) resume relaying with the same descriptors, after writing the
 *                  answer's unsent bytes (unsent_up to the server leg, unsent_down to the
 *                  client leg) and adding relayed_up/down to the connection's counters.
 *   3. When the agent's socket fails or closes (bypass_client_recv returns -1), every offer
 *      still without an answer counts as refused: resume relaying them. (If the agent died
 *      in the middle of a freeze the sockets may be left in TCP_REPAIR mode: call
 *      bypass_client_unfreeze on them, which needs CAP_NET_ADMIN, before resuming.)
 * Link: bypass_client (static library: bypass_client.c, bypass_proto.c; jansson).
 */
#ifndef HMS_BYPASS_CLIENT_H_INCLUDED
#define HMS_BYPASS_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bypass_proto.h"
#include "hms_net.h"

typedef struct bypass_client bypass_client_t;

/* Connects to the agent's socket (non-blocking, close-on-exec). Caller owns return value;
 * NULL with err when no agent listens there. */
bypass_client_t *bypass_client_new (const char *path, char *err, size_t errlen);
/* Closes the connection; nulls *self_p; safe to call twice. */
void bypass_client_destroy (bypass_client_t **self_p);

/* The descriptor to watch (readable: bypass_client_recv; writable after EAGAIN). */
int bypass_client_fd (const bypass_client_t *self);

typedef struct {
    const char *id;          /* the proxy's name for the connection, 1 to 64 bytes */
    int client_fd;           /* the leg towards the client (accepted by the proxy) */
    int server_fd;           /* the leg towards the server (connected by the proxy) */
    const char *policy_rule; /* the rule that allowed the bypass, or NULL */
    uint64_t relayed_up;     /* bytes the proxy relayed client -> server so far */
    uint64_t relayed_down;   /* and server -> client */
} bypass_offer_t;

/* Sends an offer; the addresses in its header are read from the sockets. 0 when sent; -1
 * with errno: EAGAIN (the socket is full: try again when writable), EINVAL (bad offer:
 * not connected IPv4 TCP sockets, bad id), anything else (the agent is gone). On -1 the
 * offer was not made: keep relaying. */
int bypass_client_offer (bypass_client_t *self, const bypass_offer_t *offer);

/* Reads one answer into *ans (call bypass_answer_clear after use; the unsent pointers stay
 * valid until then or the next call). Returns 1 with an answer, 0 when none is pending, -1
 * when the agent's connection failed or closed (errno; every pending offer is refused). */
int bypass_client_recv (bypass_client_t *self, bypass_answer_t *ans);

/* True when the answer means the agent owns and has spliced the connection. */
bool bypass_answer_accepted (const bypass_answer_t *ans);

/* Sends a request without descriptors ("flows" or "export_p4") and waits up to timeout_ms
 * for its answer (answers to offers that arrive meanwhile are dropped: use a separate
 * client for queries). 1 with the answer, 0 on timeout, -1 on error. */
int bypass_client_query (bypass_client_t *self, const char *op, int timeout_ms,
                         bypass_answer_t *ans);

/* The settings for the socket a proxy is about to connect to the server of a flow it may
 * offer, whose client leg is client_fd: the client's segment size (MSS clamped to the
 * smaller leg: once spliced the server's segments must fit the client leg), and a mark
 * asking the agent's SYN shaper (bpf/bypass_maps.h) to leave out of the SYN the options
 * (SACK, timestamps, ECN) the client leg does not use, so that both legs agree. The mark
 * needs CAP_NET_ADMIN; without it such a flow is refused later and stays proxied. 0 / -1
 * (client_fd is not a TCP socket: *opts zeroed). */
int bypass_client_dial_opts (int client_fd, hms_sockopts_t *opts);

/* Whether this process may mark sockets (SO_MARK, CAP_NET_ADMIN). */
bool bypass_client_can_mark (void);

/* Leaves TCP_REPAIR mode on fd if it is in it (needs CAP_NET_ADMIN). 0 / -1. */
int bypass_client_unfreeze (int fd);

#endif
