/* bypass_dp: user-space side of the eBPF bypass data plane. Loads the program (embedded in
 * the binary), attaches it to the tc clsact ingress of interfaces, manages the flow table,
 * reads counters, delivers FIN/RST events, and exports the table as P4 table entries.
 * Table layout and action semantics: bypass_maps.h.
 *
 * Interfaces are attached (and detached, by bypass_dp_detach and bypass_dp_destroy) in the
 * network namespace of the calling thread. Needs CAP_BPF + CAP_NET_ADMIN (root). Nothing is
 * pinned: the table lives as long as this process or an attached filter holds it, and a new
 * instance attaching replaces the old filter with an empty table.
 */
#ifndef HMS_BYPASS_DP_H_INCLUDED
#define HMS_BYPASS_DP_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bypass_maps.h"

typedef struct bypass_dp bypass_dp_t;

/* tc filter identity used on every interface (clsact ingress). */
#define BYPASS_TC_HANDLE 0xb7a5
#define BYPASS_TC_PRIO   1

/* Loads and verifies the embedded BPF object. Returns NULL (after logging why) when the
 * kernel refuses it or the caller lacks privileges. Caller owns return value. */
bypass_dp_t *bypass_dp_new (void);

/* Detaches (data plane and shaper) from every interface attached through this instance (removing
 * the clsact qdiscs it created), then frees everything. Safe to call twice; nulls *self_p. */
void bypass_dp_destroy (bypass_dp_t **self_p);

/* Attaches the program to the tc ingress of ifindex (creating clsact if needed, replacing an
 * earlier bypass filter left behind). 0 / -1. */
int bypass_dp_attach (bypass_dp_t *self, int ifindex);

/* Attaches the SYN shaper (bypass_maps.h) to the tc egress of ifindex. 0 / -1. */
int bypass_dp_shape (bypass_dp_t *self, int ifindex);

/* Whether this instance attached the data plane (egress false) or the shaper (true). */
bool bypass_dp_attached (bypass_dp_t *self, int ifindex, bool egress);

/* How many interfaces have the data plane (egress false) or the shaper (true). */
size_t bypass_dp_attached_count (bypass_dp_t *self, bool egress);

/* Forgets the interfaces that are gone (their programs went with them). */
void bypass_dp_prune (bypass_dp_t *self);

/* The per-server cache the shaper reads for SYN-ACKs: strip (BYPASS_SHAPE_NO_*) is what the
 * server at addr:port (network byte order) did not use; 0 removes the entry. 0 / -1. */
int bypass_dp_server_set (bypass_dp_t *self, uint32_t addr, uint16_t port, uint32_t strip);
/* Reads it: *strip 0 when there is no entry. 0 / -1. */
int bypass_dp_server_get (bypass_dp_t *self, uint32_t addr, uint16_t port, uint32_t *strip);

/* What the shaper took out of the SYN-ACK answering the flow whose client segments have key
 * (BYPASS_SHAPE_NO_*, 0: nothing or unknown); the record is removed. */
uint32_t bypass_dp_shaped_take (bypass_dp_t *self, const struct bypass_flow_key *key);

/* The shaper's fd (BPF_PROG_TEST_RUN in tests). */
int bypass_dp_shape_prog_fd (bypass_dp_t *self);

/* Removes both programs from ifindex (and the clsact qdisc if this instance created it). */
int bypass_dp_detach (bypass_dp_t *self, int ifindex);

/* Installs or replaces the flow key with the action splice. Counters and state restart at
 * zero. 0 / -1 (errno set: E2BIG when the table is full). */
int bypass_dp_flow_splice (bypass_dp_t *self, const struct bypass_flow_key *key,
                           const struct bypass_splice_params *params, uint64_t cookie);

/* Installs or replaces the flow key with the action observe (count, remember TSval/TSecr,
 * pass to the host). 0 / -1. */
int bypass_dp_flow_observe (bypass_dp_t *self, const struct bypass_flow_key *key, uint64_t cookie);

/* Copies the entry of key (action, parameters, counters, state) into *out. 0 / -1
 * (errno ENOENT when absent). */
int bypass_dp_flow_lookup (bypass_dp_t *self, const struct bypass_flow_key *key,
                           struct bypass_flow_val *out);

/* Removes the entry of key. 0 / -1 (errno ENOENT when absent). */
int bypass_dp_flow_del (bypass_dp_t *self, const struct bypass_flow_key *key);

typedef int (bypass_dp_flow_fn) (const struct bypass_flow_key *key,
                                 const struct bypass_flow_val *val, void *arg);

/* Calls fn for every entry (a snapshot walk; entries added meanwhile may be missed). fn
 * returns non-zero to stop. Returns the number of entries visited, or -1. */
int bypass_dp_flow_foreach (bypass_dp_t *self, bypass_dp_flow_fn *fn, void *arg);

/* Sums the global BYPASS_STAT_* counter over all CPUs. */
uint64_t bypass_dp_stat (bypass_dp_t *self, enum bypass_stat which);

typedef void (bypass_dp_event_fn) (const struct bypass_event *ev, void *arg);

/* Delivers pending FIN/RST/SYN events to fn, waiting up to timeout_ms (0: don't wait, -1:
 * forever). Returns the number of events delivered, or -1. */
int bypass_dp_poll_events (bypass_dp_t *self, int timeout_ms, bypass_dp_event_fn *fn, void *arg);

/* An fd that becomes readable when events are pending (for an event loop), then call
 * bypass_dp_poll_events with timeout 0. */
int bypass_dp_events_fd (bypass_dp_t *self);

/* Sends an IPv4 TCP segment (from its IP header on) of a spliced flow the way the data
 * plane would have: the program rewrites it (BPF_PROG_TEST_RUN, counters included) and it
 * leaves through the flow's out interface (AF_PACKET). For segments that were held back
 * on their way to a socket that the splice replaced. 0 / -1 (errno: ENOENT when its
 * 4-tuple is not spliced). */
int bypass_dp_inject (bypass_dp_t *self, const uint8_t *ip, size_t len);

/* The program's fd (BPF_PROG_TEST_RUN in tests). */
int bypass_dp_prog_fd (bypass_dp_t *self);

/* One proxy leg as the agent sees it at freeze time. Addresses and ports in network byte
 * order; sequence numbers and timestamps in host order. */
typedef struct {
    uint32_t laddr, raddr; /* the proxy's address, the peer's address */
    uint16_t lport, rport;
    uint32_t snd_nxt;   /* TCP_REPAIR, TCP_SEND_QUEUE, TCP_QUEUE_SEQ (queue empty) */
    uint32_t rcv_nxt;   /* TCP_REPAIR, TCP_RECV_QUEUE, TCP_QUEUE_SEQ */
    uint32_t ts_now;    /* TCP_TIMESTAMP: this leg's clock */
    uint32_t ts_recent; /* the peer's last TSval (bypass_flow_state.last_tsval of the
                           observed entry peer -> proxy) */
    uint8_t snd_wscale; /* tcpi_snd_wscale: scale of the windows the peer advertises */
    uint8_t rcv_wscale; /* tcpi_rcv_wscale: scale of the windows this leg advertises */
    bool timestamps;    /* TCPI_OPT_TIMESTAMPS */
    bool sack;          /* TCPI_OPT_SACK */
    int ifindex;        /* interface towards the peer */
    uint8_t lmac[6];    /* that interface's MAC */
    uint8_t rmac[6];    /* the next hop's MAC towards the peer */
} bypass_leg_t;

/* Computes both directions of the splice of leg a (client side) with leg b (server side):
 * key_ab/params_ab rewrite what the peer of a sends into what b's peer expects, and
 * key_ba/params_ba the reverse. Timestamps are translated when both legs use them and SACK
 * edges when both use SACK. 0, or -1 when the legs cannot be spliced (one uses timestamps
 * and the other does not). */
int bypass_dp_splice_pair (const bypass_leg_t *a, const bypass_leg_t *b,
                           struct bypass_flow_key *key_ab, struct bypass_splice_params *params_ab,
                           struct bypass_flow_key *key_ba, struct bypass_splice_params *params_ba);

/* Maps an ifindex to the P4 switch's port number (for export). */
typedef uint32_t (bypass_dp_port_fn) (uint32_t ifindex, void *arg);

/* Prints one simple_switch_CLI "table_add" line for the entry, ending in a newline; ports
 * through port_of (NULL: the ifindex itself). 0 / -1 (unknown action). */
int bypass_dp_p4_entry (FILE *out, const struct bypass_flow_key *key,
                        const struct bypass_flow_val *val, bypass_dp_port_fn *port_of, void *arg);

/* Prints the table_add lines of every entry of the table. Returns the number printed, -1. */
int bypass_dp_export_p4 (bypass_dp_t *self, FILE *out, bypass_dp_port_fn *port_of, void *arg);

#endif
