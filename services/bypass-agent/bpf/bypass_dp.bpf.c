/* bypass_dp.bpf.c: the TCP proxy bypass data plane, a tc clsact (direct-action) program for
 * the ingress of the proxy's interfaces, and the SYN shaper for their egress. Table and
 * action layout: bypass_maps.h.
 *
 * Every field is rewritten with bpf_skb_store_bytes and its checksum effect applied with
 * bpf_l3_csum_replace / bpf_l4_csum_replace (BPF_F_PSEUDO_HDR for the addresses). The
 * helpers do the right thing for each skb->ip_summed: with CHECKSUM_PARTIAL (what veth hands
 * us for locally sent segments, GSO super-packets included) only the pseudo-header sum in
 * the TCP checksum field is updated. The packet is never resized or linearised, so GSO
 * packets keep their gso_size and are segmented later with the rewritten header.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bypass_maps.h"

char LICENSE[] SEC ("license") = "Dual BSD/GPL";

struct {
    __uint (type, BPF_MAP_TYPE_HASH);
    __uint (max_entries, BYPASS_MAX_FLOWS);
    __type (key, struct bypass_flow_key);
    __type (value, struct bypass_flow_val);
} bypass_flows SEC (".maps");

struct {
    __uint (type, BPF_MAP_TYPE_RINGBUF);
    __uint (max_entries, BYPASS_EVENTS_SIZE);
} bypass_events SEC (".maps");

struct {
    __uint (type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint (max_entries, BYPASS_STAT_MAX);
    __type (key, __u32);
    __type (value, __u64);
} bypass_stats SEC (".maps");

struct {
    __uint (type, BPF_MAP_TYPE_LRU_HASH);
    __uint (max_entries, BYPASS_MAX_SERVERS);
    __type (key, struct bypass_server_key);
    __type (value, __u32);
} bypass_servers SEC (".maps");

struct {
    __uint (type, BPF_MAP_TYPE_LRU_HASH);
    __uint (max_entries, BYPASS_MAX_FLOWS);
    __type (key, struct bypass_flow_key);
    __type (value, __u32);
} bypass_shaped SEC (".maps");

#define IP_CSUM_OFF    (ETH_HLEN + 10)
#define IP_SADDR_OFF   (ETH_HLEN + 12)
#define IP_DADDR_OFF   (ETH_HLEN + 16)
#define TCP_OPT_MAX    40
#define TCPOPT_EOL     0
#define TCPOPT_NOP     1
#define TCPOPT_SACK_OK 4
#define TCPOPT_SACK    5
#define TCPOPT_TS      8
#define TCP_FLAG_FIN   0x01
#define TCP_FLAG_SYN   0x02
#define TCP_FLAG_RST   0x04
#define TCP_FLAG_ACK   0x10
#define TCP_FLAG_ECE   0x40
#define TCP_FLAG_CWR   0x80
#define IP_MF_OFFSET   0x3fff
#define SACK_MAX_BLOCK 4

/* Where the translated TCP options sit, as offsets from the start of the TCP header. */
struct opt_layout {
    __u32 ts_off;   /* TSval; TSecr follows; 0: no timestamp option */
    __u32 sack_off; /* first left edge; 0: no SACK option */
    __u32 sack_blocks;
};

static __always_inline void s_stat (__u32 which)
{
    __u64 *v = bpf_map_lookup_elem (&bypass_stats, &which);
    if (v)
        *v += 1;
}

/* The bytes of a 32-bit field that starts at an odd offset in the checksummed area contribute
 * to the ones' complement sum as if each 16-bit half were byte-swapped. */
static __always_inline __u32 s_csum_view (__u32 v, __u32 odd)
{
    return odd ? ((v & 0x00ff00ff) << 8) | ((v >> 8) & 0x00ff00ff) : v;
}

/* Adds delta (host order) to the 32-bit big-endian field at l4off + off and fixes the TCP
 * checksum. Returns 0, or -1 when a helper failed. */
static __always_inline int s_add32 (struct __sk_buff *skb, __u32 l4off, __u32 off, __u32 delta)
{
    __u32 old, new;

    if (bpf_skb_load_bytes (skb, l4off + off, &old, 4))
        return -1;
    new = bpf_htonl (bpf_ntohl (old) + delta);
    if (bpf_skb_store_bytes (skb, l4off + off, &new, 4, 0))
        return -1;
    if (bpf_l4_csum_replace (skb, l4off + 16, s_csum_view (old, off & 1),
                             s_csum_view (new, off & 1), 4))
        return -1;
    return 0;
}

/* Replaces the 32-bit field at off (addresses: IP header, pseudo-header) or the port pair. */
static __always_inline int s_set32 (struct __sk_buff *skb, __u32 off, __u32 old, __u32 new,
                                    __u32 ip_csum, __u32 l4_csum, __u64 l4_flags)
{
    if (old == new)
        return 0;
    if (bpf_skb_store_bytes (skb, off, &new, 4, 0))
        return -1;
    if (ip_csum && bpf_l3_csum_replace (skb, ip_csum, old, new, 4))
        return -1;
    if (bpf_l4_csum_replace (skb, l4_csum, old, new, l4_flags | 4))
        return -1;
    return 0;
}

/* Finds the timestamp and SACK options in the TCP options. A global function: the verifier
 * checks it once, on its own, instead of once per path through the option loop. Returns the
 * layout packed as OPT_* fields below. */
#define OPT_TS(r)        ((r) &0xff)
#define OPT_SACK(r)      (((r) >> 8) & 0xff)
#define OPT_SACK_N(r)    (((r) >> 16) & 0x7)
#define OPT_MALFORMED(r) (((r) >> 24) & 1)

__noinline int bypass_parse_options (struct __sk_buff *skb, __u32 l4off, __u32 optlen)
{
    __u8 opts[64] = {};
    __u32 off = 0, ts_off = 0, sack_off = 0, sack_n = 0;

    if (optlen == 0 || optlen > TCP_OPT_MAX || l4off > 128)
        return 0;
    if (bpf_skb_load_bytes (skb, l4off + 20, opts, optlen))
        return 1 << 24;
    while (off < optlen) {
        __u8 kind, len;

        kind = opts[off];
        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            off++;
            continue;
        }
        if (off + 1 >= optlen)
            return 1 << 24 | sack_n << 16 | sack_off << 8 | ts_off;
        len = opts[off + 1];
        if (len < 2 || off + len > optlen)
            return 1 << 24 | sack_n << 16 | sack_off << 8 | ts_off;
        if (kind == TCPOPT_TS && len == 10)
            ts_off = 20 + off + 2;
        else if (kind == TCPOPT_SACK && len >= 10 && (len - 2) % 8 == 0) {
            sack_off = 20 + off + 2;
            sack_n = (len - 2) / 8;
        }
        off += len;
    }
    return sack_n << 16 | sack_off << 8 | ts_off;
}

static __always_inline void s_event (struct bypass_flow_val *val, const struct bypass_flow_key *key,
                                     __u32 type)
{
    struct bypass_event *ev;

    if (__sync_fetch_and_or (&val->st.seen, type) & type)
        return; /* once per flow and kind */
    ev = bpf_ringbuf_reserve (&bypass_events, sizeof (*ev), 0);
    if (!ev) {
        s_stat (BYPASS_STAT_EV_LOST);
        return;
    }
    ev->ts_ns = bpf_ktime_get_ns ();
    ev->cookie = val->cookie;
    ev->key = *key;
    ev->type = type;
    ev->packets = val->st.packets;
    ev->bytes = val->st.bytes;
    bpf_ringbuf_submit (ev, 0);
}

/* The offset of the TCP header of an unfragmented IPv4 TCP segment behind Ethernet, 0 for
 * any other frame. */
static __always_inline __u32 s_tcp4_offset (void *data, void *end)
{
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *) (eth + 1);

    if ((void *) (eth + 1) > end || eth->h_proto != bpf_htons (ETH_P_IP))
        return 0;
    if ((void *) (ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5 ||
        (ip->frag_off & bpf_htons (IP_MF_OFFSET)))
        return 0;
    return ETH_HLEN + ip->ihl * 4;
}

/* Rewrites the segment per p; the headers up to l4off + optlen + 20 are linear. Returns the
 * redirect verdict, 0 when the host stack takes it (out_port 0), -1 when a helper failed. */
static __always_inline int s_splice (struct __sk_buff *skb, const struct bypass_flow_key *key,
                                     const struct bypass_splice_params *p, __u32 l4off,
                                     const struct opt_layout *lo)
{
    __u32 csum = l4off + 16;

    if (s_add32 (skb, l4off, 4, p->seq_delta) || s_add32 (skb, l4off, 8, p->ack_delta))
        return -1;

    if (p->wscale_in != p->wscale_out) {
        __u16 w_old, w_new;
        __u32 bytes;

        if (bpf_skb_load_bytes (skb, l4off + 14, &w_old, 2))
            return -1;
        bytes = (__u32) bpf_ntohs (w_old) << (p->wscale_in & 15);
        bytes >>= (p->wscale_out & 15);
        w_new = bpf_htons (bytes > 0xffff ? 0xffff : bytes);
        if (w_new != w_old) {
            if (bpf_skb_store_bytes (skb, l4off + 14, &w_new, 2, 0))
                return -1;
            if (bpf_l4_csum_replace (skb, csum, w_old, w_new, 2))
                return -1;
        }
    }

    if ((p->flags & BYPASS_SPLICE_TS) && lo->ts_off) {
        if (s_add32 (skb, l4off, lo->ts_off & 63, p->tsval_delta) ||
            s_add32 (skb, l4off, (lo->ts_off + 4) & 63, p->tsecr_delta))
            return -1;
    }

    if ((p->flags & BYPASS_SPLICE_SACK) && lo->sack_off) {
        for (__u32 i = 0; i < SACK_MAX_BLOCK; i++) {
            __u32 edge = (lo->sack_off + i * 8) & 63;

            if (i >= lo->sack_blocks)
                break;
            if (s_add32 (skb, l4off, edge, p->ack_delta) ||
                s_add32 (skb, l4off, edge + 4, p->ack_delta))
                return -1;
        }
    }

    {
        __u32 old_ports = ((__u32) key->dport << 16) | key->sport;
        __u32 new_ports = ((__u32) p->new_dport << 16) | p->new_sport;

        if (s_set32 (skb, l4off, old_ports, new_ports, 0, csum, 0))
            return -1;
    }
    if (s_set32 (skb, IP_SADDR_OFF, key->saddr, p->new_saddr, IP_CSUM_OFF, csum,
                 BPF_F_PSEUDO_HDR) ||
        s_set32 (skb, IP_DADDR_OFF, key->daddr, p->new_daddr, IP_CSUM_OFF, csum, BPF_F_PSEUDO_HDR))
        return -1;

    if (p->out_port == 0)
        return 0; /* the host stack takes it */
    {
        __u8 macs[12];

        __builtin_memcpy (macs, p->out_dmac, 6);
        __builtin_memcpy (macs + 6, p->out_smac, 6);
        if (bpf_skb_store_bytes (skb, 0, macs, sizeof (macs), 0))
            return -1;
    }
    return bpf_redirect (p->out_port, 0);
}

SEC ("tc")
int bypass_ingress (struct __sk_buff *skb)
{
    void *data = (void *) (long) skb->data;
    void *end = (void *) (long) skb->data_end;
    struct iphdr *ip;
    struct tcphdr *tcp;
    struct bypass_flow_key key;
    struct bypass_flow_val *val;
    struct opt_layout lo = {};
    __u32 l4off = s_tcp4_offset (data, end), hdr_end, optlen;
    __u8 tcp_flags;
    int ret;

    if (!l4off)
        return BYPASS_TC_PASS;

    /* the TCP header (with options) must be in the linear part: pull the headers only */
    if (data + l4off + sizeof (struct tcphdr) > end) {
        if (bpf_skb_pull_data (skb, l4off + sizeof (struct tcphdr)))
            return BYPASS_TC_PASS;
        data = (void *) (long) skb->data;
        end = (void *) (long) skb->data_end;
    }
    if (data + l4off + sizeof (struct tcphdr) > end)
        return BYPASS_TC_PASS;
    tcp = data + l4off;
    hdr_end = l4off + tcp->doff * 4;
    if (tcp->doff < 5) {
        s_stat (BYPASS_STAT_MALFORMED);
        return BYPASS_TC_PASS;
    }
    optlen = tcp->doff * 4 - sizeof (struct tcphdr);

    ip = data + ETH_HLEN;
    if ((void *) (ip + 1) > end)
        return BYPASS_TC_PASS;
    key.saddr = ip->saddr;
    key.daddr = ip->daddr;
    key.sport = tcp->source;
    key.dport = tcp->dest;
    tcp_flags = ((__u8 *) tcp)[13];

    val = bpf_map_lookup_elem (&bypass_flows, &key);
    if (!val) {
        s_stat (BYPASS_STAT_MISS);
        return BYPASS_TC_PASS;
    }
    if (data + hdr_end > end && bpf_skb_pull_data (skb, hdr_end)) {
        s_stat (BYPASS_STAT_MALFORMED);
        return BYPASS_TC_PASS;
    }

    __sync_fetch_and_add (&val->st.packets, skb->gso_segs > 1 ? skb->gso_segs : 1);
    __sync_fetch_and_add (&val->st.bytes, skb->len - ETH_HLEN);
    val->st.last_ns = bpf_ktime_get_ns ();

    ret = bypass_parse_options (skb, l4off, optlen);
    lo.ts_off = OPT_TS (ret);
    lo.sack_off = OPT_SACK (ret);
    lo.sack_blocks = OPT_SACK_N (ret);
    if (OPT_MALFORMED (ret))
        s_stat (BYPASS_STAT_MALFORMED);
    if (lo.ts_off) {
        __u32 ts[2];

        if (bpf_skb_load_bytes (skb, l4off + (lo.ts_off & 63), ts, sizeof (ts)) == 0) {
            val->st.last_tsval = bpf_ntohl (ts[0]);
            val->st.last_tsecr = bpf_ntohl (ts[1]);
        }
    }

    if (tcp_flags & TCP_FLAG_RST)
        s_event (val, &key, BYPASS_EV_RST);
    if (tcp_flags & TCP_FLAG_FIN)
        s_event (val, &key, BYPASS_EV_FIN);
    if (tcp_flags & TCP_FLAG_SYN) {
        s_event (val, &key, BYPASS_EV_SYN);
        return BYPASS_TC_PASS; /* a new connection on a stale entry: the host decides */
    }

    if (val->action != BYPASS_ACT_SPLICE) {
        s_stat (BYPASS_STAT_OBSERVED);
        return BYPASS_TC_PASS;
    }
    ret = s_splice (skb, &key, &val->splice, l4off, &lo);
    if (ret < 0) {
        s_stat (BYPASS_STAT_ERROR);
        return TC_ACT_SHOT;
    }
    if (ret == 0)
        ret = BYPASS_TC_PASS;
    s_stat (BYPASS_STAT_SPLICED);
    if (skb->gso_segs > 1)
        s_stat (BYPASS_STAT_GSO);
    return ret;
}

/* ---- the SYN shaper (tc egress) ---------------------------------------------------------- */

/* Turns the options named by strip (BYPASS_SHAPE_NO_TS / _NO_SACK) into NOPs, word by word
 * with the TCP checksum updated. A global function, verified once. Returns 1 when something
 * was taken out, 0 when not, -1 when a helper failed. */
__noinline int bypass_strip_options (struct __sk_buff *skb, __u32 l4off, __u32 optlen, __u32 strip)
{
    __u8 old[64] = {}, new[64] = {};
    __u32 off = 0, ts = 0, sack_ok = 0; /* ts, sack_ok: offset + 1 of the option, 0: none */

    if (optlen == 0 || optlen > TCP_OPT_MAX || (optlen & 3) || l4off > 128)
        return 0;
    if (bpf_skb_load_bytes (skb, l4off + 20, old, optlen))
        return -1;
    while (off < optlen) {
        __u8 kind = old[off & 63], len;

        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            off++;
            continue;
        }
        if (off + 1 >= optlen)
            break;
        len = old[(off + 1) & 63];
        if (len < 2 || off + len > optlen)
            break; /* malformed: the rest stays as it is */
        if (kind == TCPOPT_TS && len == 10)
            ts = off + 1;
        else if (kind == TCPOPT_SACK_OK && len == 2)
            sack_ok = off + 1;
        off += len;
    }
    if (!(strip & BYPASS_SHAPE_NO_TS))
        ts = 0;
    if (!(strip & BYPASS_SHAPE_NO_SACK))
        sack_ok = 0;
    if (!ts && !sack_ok)
        return 0;
    __builtin_memcpy (new, old, sizeof (new));
    if (ts)
        for (__u32 j = 0; j < 10; j++)
            new[(ts - 1 + j) & 63] = TCPOPT_NOP;
    if (sack_ok) {
        new[(sack_ok - 1) & 63] = TCPOPT_NOP;
        new[sack_ok & 63] = TCPOPT_NOP;
    }
    for (__u32 w = 0; w < TCP_OPT_MAX / 4; w++) {
        __u32 o, n;

        if (w * 4 >= optlen)
            break;
        __builtin_memcpy (&o, &old[w * 4], 4);
        __builtin_memcpy (&n, &new[w * 4], 4);
        if (o == n)
            continue;
        if (bpf_skb_store_bytes (skb, l4off + 20 + w * 4, &n, 4, 0) ||
            bpf_l4_csum_replace (skb, l4off + 16, o, n, 4))
            return -1;
    }
    return 1;
}

SEC ("tc")
int bypass_shape (struct __sk_buff *skb)
{
    void *data = (void *) (long) skb->data;
    void *end = (void *) (long) skb->data_end;
    struct iphdr *ip = data + ETH_HLEN;
    struct tcphdr *tcp;
    __u32 l4off = s_tcp4_offset (data, end), optlen, strip = 0;
    __u16 flags_old, flags_new;
    __u8 tcp_flags;
    int ret;

    if (!l4off)
        return BYPASS_TC_PASS;
    if (data + l4off + sizeof (struct tcphdr) > end)
        return BYPASS_TC_PASS; /* a SYN is small: its headers are linear */
    tcp = data + l4off;
    tcp_flags = ((__u8 *) tcp)[13];
    if (!(tcp_flags & TCP_FLAG_SYN) || tcp->doff < 5)
        return BYPASS_TC_PASS;

    if (!(tcp_flags & TCP_FLAG_ACK)) {
        if ((skb->mark & BYPASS_SHAPE_MARK_MASK) == BYPASS_SHAPE_MARK)
            strip = skb->mark & BYPASS_SHAPE_ALL;
    } else {
        struct bypass_server_key sk = {.addr = ip->saddr, .port = tcp->source};
        __u32 *v = bpf_map_lookup_elem (&bypass_servers, &sk);

        struct bypass_flow_key fk = {
            .saddr = ip->daddr, .daddr = ip->saddr, .sport = tcp->dest, .dport = tcp->source};

        if (v)
            strip = *v & BYPASS_SHAPE_ALL;
        if (strip)
            bpf_map_update_elem (&bypass_shaped, &fk, &strip, BPF_ANY);
        else
            bpf_map_delete_elem (&bypass_shaped, &fk); /* a reused 4-tuple starts afresh */
    }
    if (!strip)
        return BYPASS_TC_PASS;

    optlen = tcp->doff * 4 - sizeof (struct tcphdr);
    if (data + l4off + 20 + optlen > end && bpf_skb_pull_data (skb, l4off + 20 + optlen))
        return BYPASS_TC_PASS;
    ret = bypass_strip_options (skb, l4off, optlen, strip);
    if (ret < 0) {
        s_stat (BYPASS_STAT_ERROR);
        return BYPASS_TC_PASS; /* unchanged words are intact; the agent will refuse the flow */
    }
    if (strip & BYPASS_SHAPE_NO_ECN) {
        __u8 clear = (tcp_flags & TCP_FLAG_ACK) ? TCP_FLAG_ECE : (TCP_FLAG_ECE | TCP_FLAG_CWR);

        if (bpf_skb_load_bytes (skb, l4off + 12, &flags_old, 2) == 0) {
            flags_new = flags_old;
            ((__u8 *) &flags_new)[1] &= ~clear;
            if (flags_new != flags_old) {
                if (bpf_skb_store_bytes (skb, l4off + 12, &flags_new, 2, 0) ||
                    bpf_l4_csum_replace (skb, l4off + 16, flags_old, flags_new, 2))
                    s_stat (BYPASS_STAT_ERROR);
                else
                    ret = 1;
            }
        }
    }
    if (ret > 0)
        s_stat ((tcp_flags & TCP_FLAG_ACK) ? BYPASS_STAT_SHAPED_SYNACK : BYPASS_STAT_SHAPED_SYN);
    return BYPASS_TC_PASS;
}
