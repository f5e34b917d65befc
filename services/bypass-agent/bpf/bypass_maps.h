/* bypass_maps: the layout shared by the tc eBPF data plane (bypass_dp.bpf.c), its user-space
 * library (bypass_dp.c) and the P4 twin (p4/bypass.p4).
 *
 * One match-action table, BYPASS_TABLE_NAME ("bypass_flows"): a hash map keyed by the
 * ingress 4-tuple of an IPv4 TCP segment (struct bypass_flow_key, exact match, network byte
 * order). Its value (struct bypass_flow_val) holds the action (enum bypass_action), the
 * action's parameters and the per-flow state the data plane writes:
 *   - splice:  rewrite the segment into the other leg and redirect it (parameters in
 *              struct bypass_splice_params);
 *   - observe: count the segment, remember its TSval/TSecr and hand it to the host stack
 *              unchanged (no parameters); the agent reads the peers' last TSvals from it
 *              before it freezes the legs.
 * A segment whose 4-tuple is not in the table goes to the host stack untouched (BYPASS_TC_PASS).
 *
 * FIN, RST (and SYN, a sign of a stale entry) of a flow go to user space once per flow and
 * kind through the ring buffer BYPASS_EVENTS_NAME as struct bypass_event.
 *
 * Rules the twin test (p4/test_p4_twin.py) relies on: the key fields and the parameters of
 * each action are listed in order, one field per line; an action BYPASS_ACT_<NAME> has the P4
 * action <name>, with the parameters of struct bypass_<name>_params if that struct exists
 * (none otherwise); fields named pad* are padding and not parameters.
 */
#ifndef HMS_BYPASS_MAPS_H_INCLUDED
#define HMS_BYPASS_MAPS_H_INCLUDED

#include <linux/types.h>

#define BYPASS_TABLE_NAME  "bypass_flows"
#define BYPASS_EVENTS_NAME "bypass_events"
#define BYPASS_STATS_NAME  "bypass_stats"
#define BYPASS_PROG_NAME   "bypass_ingress"
#define BYPASS_MAX_FLOWS   65536

/* What both programs return for a packet they let pass: TC_ACT_UNSPEC, no verdict. The
 * packet goes on as if no filter were there, and filters of other tools after ours on the
 * same hook still run (TC_ACT_OK would end the hook's filter chain). */
#define BYPASS_TC_PASS     (-1)
#define BYPASS_EVENTS_SIZE (256 * 1024)

/* Key: the segment as it arrives on the proxy's interface (network byte order). */
struct bypass_flow_key {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
};

enum bypass_action {
    BYPASS_ACT_NONE = 0, /* never stored: a miss */
    BYPASS_ACT_SPLICE = 1,
    BYPASS_ACT_OBSERVE = 2,
};

/* bypass_splice_params.flags */
#define BYPASS_SPLICE_TS   0x01 /* translate TSval and TSecr (off: left as they are) */
#define BYPASS_SPLICE_SACK 0x02 /* translate SACK block edges by ack_delta */

/* Parameters of the action "splice". All arithmetic is modulo 2^32:
 *   seq_out   = seq_in + seq_delta          ack_out   = ack_in + ack_delta
 *   sack_out  = sack_in + ack_delta         (each left and right edge)
 *   tsval_out = tsval_in + tsval_delta      tsecr_out = tsecr_in + tsecr_delta
 *   win_out   = min (65535, (win_in << wscale_in) >> wscale_out)
 * Addresses and ports are replaced (network byte order); Ethernet source and destination
 * are set to out_smac / out_dmac and the segment leaves through ifindex out_port
 * (0: handed to the host stack instead). IP and TCP checksums are updated incrementally. */
struct bypass_splice_params {
    __be32 new_saddr;
    __be32 new_daddr;
    __be16 new_sport;
    __be16 new_dport;
    __u32 seq_delta;
    __u32 ack_delta;
    __u32 tsval_delta;
    __u32 tsecr_delta;
    __u8 wscale_in;
    __u8 wscale_out;
    __u8 flags;
    __u8 pad0;
    __u32 out_port;
    __u8 out_smac[6];
    __u8 out_dmac[6];
};

/* bypass_flow_state.seen and bypass_event.type */
#define BYPASS_EV_FIN 0x01
#define BYPASS_EV_RST 0x02
#define BYPASS_EV_SYN 0x04

/* Written by the data plane only (counters with atomic adds). */
struct bypass_flow_state {
    __u64 packets;    /* segments: a GSO packet counts its gso_segs */
    __u64 bytes;      /* IP bytes (GSO: of the whole super-packet) */
    __u64 last_ns;    /* CLOCK_MONOTONIC of the last segment */
    __u32 seen;       /* BYPASS_EV_* seen on this direction */
    __u32 last_tsval; /* last TSval / TSecr received (as received, before any rewrite) */
    __u32 last_tsecr;
    __u32 pad1;
};

struct bypass_flow_val {
    __u32 action; /* enum bypass_action */
    __u32 pad2;
    __u64 cookie; /* the agent's id for the flow, echoed in events */
    struct bypass_splice_params splice;
    struct bypass_flow_state st;
};

struct bypass_event {
    __u64 ts_ns; /* CLOCK_MONOTONIC */
    __u64 cookie;
    struct bypass_flow_key key;
    __u32 type;    /* one BYPASS_EV_* */
    __u64 packets; /* the flow's counters when it happened */
    __u64 bytes;
};

/* Global counters, one slot each in the per-CPU array BYPASS_STATS_NAME. */
enum bypass_stat {
    BYPASS_STAT_MISS = 0,      /* IPv4 TCP segment with no entry */
    BYPASS_STAT_SPLICED,       /* rewritten (and redirected) */
    BYPASS_STAT_OBSERVED,      /* counted and passed */
    BYPASS_STAT_MALFORMED,     /* header or options that could not be parsed */
    BYPASS_STAT_ERROR,         /* a helper failed: segment dropped */
    BYPASS_STAT_EV_LOST,       /* ring buffer full */
    BYPASS_STAT_GSO,           /* spliced GSO super-packets (gso_segs > 1) */
    BYPASS_STAT_SHAPED_SYN,    /* SYNs the shaper took options out of */
    BYPASS_STAT_SHAPED_SYNACK, /* SYN-ACKs the shaper took options out of */
    BYPASS_STAT_MAX
};

/* ---- the SYN shaper (host only: a switch does not take part in the handshake) -----------
 * A second program, BYPASS_SHAPE_PROG_NAME, on the tc egress of the proxy's interfaces makes
 * SACK, timestamps and ECN the same on both legs of a flow the agent may splice, by taking
 * options out of the handshake segments the proxy's host sends (an option becomes NOPs, ECN
 * flags are cleared; the segment keeps its length):
 *   - a SYN from a socket whose SO_MARK is BYPASS_SHAPE_MARK | BYPASS_SHAPE_NO_* (the proxy
 *     dialing the server of a flow whose client leg lacks those options) loses them;
 *   - a SYN-ACK whose source (address, port) is in BYPASS_SERVERS_NAME (a transparent
 *     front answering for that server) loses the options the server did not use last time;
 *     what was taken out is kept per flow in BYPASS_SHAPED_NAME, keyed like bypass_flows
 *     (the segments the client will send), because the proxy's socket still believes the
 *     options are on. */
#define BYPASS_SHAPE_PROG_NAME "bypass_shape"
#define BYPASS_SERVERS_NAME    "bypass_servers"
#define BYPASS_SHAPED_NAME     "bypass_shaped"
#define BYPASS_MAX_SERVERS     16384

#define BYPASS_SHAPE_MARK      0x48420000u /* SO_MARK: high 16 bits are this */
#define BYPASS_SHAPE_MARK_MASK 0xffff0000u
#define BYPASS_SHAPE_NO_TS     0x1 /* the timestamp option */
#define BYPASS_SHAPE_NO_SACK   0x2 /* SACK-permitted */
#define BYPASS_SHAPE_NO_ECN    0x4 /* ECE and CWR on a SYN, ECE on a SYN-ACK */
#define BYPASS_SHAPE_ALL       0x7

/* Key of BYPASS_SERVERS_NAME (network byte order); the value is a __u32 of BYPASS_SHAPE_NO_*
 * (what the server did not use). */
struct bypass_server_key {
    __be32 addr;
    __be16 port;
    __u16 pad3;
};

#endif
