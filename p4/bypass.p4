/* bypass.p4: the TCP proxy bypass data plane for a P4 switch (P4-16, v1model: BMv2
 * simple_switch), twin of the eBPF program services/bypass-agent/bpf/bypass_dp.bpf.c.
 *
 * Same match-action table as the eBPF map (services/bypass-agent/bpf/bypass_maps.h): table
 * bypass_flows, exact match on the ingress 4-tuple, actions splice (same parameters, same
 * order, same widths) and observe. p4/test_p4_twin.py fails when table, keys, actions or
 * parameters differ. Entries: bypass_dp_export_p4 / `hermesctl bypass export-p4` print them
 * as simple_switch_CLI table_add lines.
 *
 * Differences a switch imposes: per-flow counters are a direct counter of the table; FIN, RST
 * and SYN go to the control plane as digests (once per segment: the receiver de-duplicates);
 * observe sends the segment's TSval/TSecr as a digest instead of keeping them in the entry;
 * checksums are recomputed (update_checksum*) instead of updated incrementally, and a switch
 * sees no GSO packets. out_port is the switch's port number (the export maps ifindexes).
 * This stage handles only the bypass; a miss goes to HOST_PORT, where the proxy host is, as
 * the eBPF program hands a miss to the host stack.
 */
#include <core.p4>
#include <v1model.p4>

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<8> IPPROTO_TCP = 6;
const bit<9> HOST_PORT = 1;

/* action splice, parameter flags (bypass_maps.h BYPASS_SPLICE_*) */
const bit<8> BYPASS_SPLICE_TS = 0x01;
const bit<8> BYPASS_SPLICE_SACK = 0x02;

/* event types (bypass_maps.h BYPASS_EV_*) */
const bit<32> BYPASS_EV_FIN = 0x01;
const bit<32> BYPASS_EV_RST = 0x02;
const bit<32> BYPASS_EV_SYN = 0x04;

const bit<8> TCP_FLAG_FIN = 0x01;
const bit<8> TCP_FLAG_SYN = 0x02;
const bit<8> TCP_FLAG_RST = 0x04;

/* ---- headers ------------------------------------------------------------------------------ */

header ethernet_t {
    bit<48> dstAddr;
    bit<48> srcAddr;
    bit<16> etherType;
}

header ipv4_t {
    bit<4> version;
    bit<4> ihl;
    bit<8> diffserv;
    bit<16> totalLen;
    bit<16> identification;
    bit<3> flags;
    bit<13> fragOffset;
    bit<8> ttl;
    bit<8> protocol;
    bit<16> hdrChecksum;
    bit<32> srcAddr;
    bit<32> dstAddr;
}

header ipv4_options_t {
    varbit<320> options;
}

header tcp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<32> seqNo;
    bit<32> ackNo;
    bit<4> dataOffset;
    bit<4> res;
    bit<8> flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgentPtr;
}

/* TCP options, one header-union slot each, in the order they came (P4-16 spec, "Header
 * unions"): the options the splice rewrites have fixed layouts, anything else is carried. */
header tcp_opt_end_t {
    bit<8> kind;
}
header tcp_opt_nop_t {
    bit<8> kind;
}
header tcp_opt_ts_t {
    bit<8> kind;
    bit<8> len;
    bit<32> tsval;
    bit<32> tsecr;
}
header tcp_opt_sack1_t {
    bit<8> kind;
    bit<8> len;
    bit<32> left0;
    bit<32> right0;
}
header tcp_opt_sack2_t {
    bit<8> kind;
    bit<8> len;
    bit<32> left0;
    bit<32> right0;
    bit<32> left1;
    bit<32> right1;
}
header tcp_opt_sack3_t {
    bit<8> kind;
    bit<8> len;
    bit<32> left0;
    bit<32> right0;
    bit<32> left1;
    bit<32> right1;
    bit<32> left2;
    bit<32> right2;
}
header tcp_opt_sack4_t {
    bit<8> kind;
    bit<8> len;
    bit<32> left0;
    bit<32> right0;
    bit<32> left1;
    bit<32> right1;
    bit<32> left2;
    bit<32> right2;
    bit<32> left3;
    bit<32> right3;
}
header tcp_opt_other_t {
    bit<8> kind;
    bit<8> len;
    varbit<304> data;
}
header_union tcp_opt_t {
    tcp_opt_end_t end;
    tcp_opt_nop_t nop;
    tcp_opt_ts_t ts;
    tcp_opt_sack1_t sack1;
    tcp_opt_sack2_t sack2;
    tcp_opt_sack3_t sack3;
    tcp_opt_sack4_t sack4;
    tcp_opt_other_t other;
}
#define TCP_OPT_SLOTS 10

/* bytes after an end-of-options (padding), or options that could not be parsed */
header tcp_opt_rest_t {
    varbit<320> data;
}

struct headers_t {
    ethernet_t ethernet;
    ipv4_t ipv4;
    ipv4_options_t ipv4_opts;
    tcp_t tcp;
    tcp_opt_t[TCP_OPT_SLOTS] tcp_opts;
    tcp_opt_rest_t tcp_rest;
}

/* digests to the control plane: the twins of struct bypass_event and of the observe state */
struct bypass_event_t {
    bit<32> saddr;
    bit<32> daddr;
    bit<16> sport;
    bit<16> dport;
    bit<32> type;
}

struct bypass_observe_t {
    bit<32> saddr;
    bit<32> daddr;
    bit<16> sport;
    bit<16> dport;
    bit<32> last_tsval;
    bit<32> last_tsecr;
}

struct metadata_t {
    bit<8> opt_left;  /* option bytes not parsed yet */
    bit<8> opt_len;
    bit<16> tcp_len;  /* TCP header + payload, for the pseudo-header */
    bit<1> observed;
    bit<1> has_ts;
    bit<32> last_tsval;
    bit<32> last_tsecr;
}

/* ---- parser ------------------------------------------------------------------------------- */

parser BypassParser(packet_in pkt, out headers_t hdr, inout metadata_t meta,
                    inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        pkt.extract(hdr.ipv4_opts, ((bit<32>) hdr.ipv4.ihl - 5) * 32);
        meta.tcp_len = hdr.ipv4.totalLen - ((bit<16>) hdr.ipv4.ihl) * 4;
        transition select(hdr.ipv4.protocol, hdr.ipv4.fragOffset, hdr.ipv4.flags[0:0]) {
            (IPPROTO_TCP, 0, 0): parse_tcp;
            default: accept;
        }
    }
    state parse_tcp {
        pkt.extract(hdr.tcp);
        meta.opt_left = ((bit<8>) hdr.tcp.dataOffset) * 4 - 20;
        transition parse_tcp_option;
    }
    state parse_tcp_option {
        transition select(meta.opt_left, pkt.lookahead<bit<8>>()) {
            (0, _): accept;
            (_, 0): parse_opt_end;
            (_, 1): parse_opt_nop;
            (_, 5): parse_opt_sack;
            (_, 8): parse_opt_ts;
            default: parse_opt_other;
        }
    }
    state parse_opt_end {
        pkt.extract(hdr.tcp_opts.next.end);
        meta.opt_left = meta.opt_left - 1;
        transition parse_opt_rest;
    }
    state parse_opt_nop {
        pkt.extract(hdr.tcp_opts.next.nop);
        meta.opt_left = meta.opt_left - 1;
        transition parse_tcp_option;
    }
    state parse_opt_ts {
        meta.opt_len = pkt.lookahead<bit<16>>()[7:0];
        transition select(meta.opt_len) {
            10: extract_ts;
            default: parse_opt_other;
        }
    }
    state extract_ts {
        pkt.extract(hdr.tcp_opts.next.ts);
        meta.opt_left = meta.opt_left - 10;
        transition parse_tcp_option;
    }
    state parse_opt_sack {
        meta.opt_len = pkt.lookahead<bit<16>>()[7:0];
        transition select(meta.opt_len) {
            10: extract_sack1;
            18: extract_sack2;
            26: extract_sack3;
            34: extract_sack4;
            default: parse_opt_other;
        }
    }
    state extract_sack1 {
        pkt.extract(hdr.tcp_opts.next.sack1);
        meta.opt_left = meta.opt_left - 10;
        transition parse_tcp_option;
    }
    state extract_sack2 {
        pkt.extract(hdr.tcp_opts.next.sack2);
        meta.opt_left = meta.opt_left - 18;
        transition parse_tcp_option;
    }
    state extract_sack3 {
        pkt.extract(hdr.tcp_opts.next.sack3);
        meta.opt_left = meta.opt_left - 26;
        transition parse_tcp_option;
    }
    state extract_sack4 {
        pkt.extract(hdr.tcp_opts.next.sack4);
        meta.opt_left = meta.opt_left - 34;
        transition parse_tcp_option;
    }
    state parse_opt_other {
        meta.opt_len = pkt.lookahead<bit<16>>()[7:0];
        transition select(meta.opt_len < 2 || meta.opt_len > meta.opt_left) {
            true: parse_opt_rest; /* malformed: carried unparsed, as the eBPF program does */
            false: extract_other;
        }
    }
    state extract_other {
        pkt.extract(hdr.tcp_opts.next.other, ((bit<32>) meta.opt_len - 2) * 8);
        meta.opt_left = meta.opt_left - meta.opt_len;
        transition parse_tcp_option;
    }
    state parse_opt_rest {
        pkt.extract(hdr.tcp_rest, (bit<32>) meta.opt_left * 8);
        meta.opt_left = 0;
        transition accept;
    }
}

control BypassVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

/* ---- the bypass stage --------------------------------------------------------------------- */

/* SACK edges and timestamps of one option slot, as bypass_dp.bpf.c translates them. */
control TranslateOption(inout tcp_opt_t opt, inout metadata_t meta, in bit<8> flags,
                        in bit<32> ack_delta, in bit<32> tsval_delta, in bit<32> tsecr_delta) {
    apply {
        if (opt.ts.isValid()) {
            meta.has_ts = 1;
            meta.last_tsval = opt.ts.tsval;
            meta.last_tsecr = opt.ts.tsecr;
            if ((flags & BYPASS_SPLICE_TS) != 0) {
                opt.ts.tsval = opt.ts.tsval + tsval_delta;
                opt.ts.tsecr = opt.ts.tsecr + tsecr_delta;
            }
        }
        if ((flags & BYPASS_SPLICE_SACK) != 0) {
            if (opt.sack1.isValid()) {
                opt.sack1.left0 = opt.sack1.left0 + ack_delta;
                opt.sack1.right0 = opt.sack1.right0 + ack_delta;
            }
            if (opt.sack2.isValid()) {
                opt.sack2.left0 = opt.sack2.left0 + ack_delta;
                opt.sack2.right0 = opt.sack2.right0 + ack_delta;
                opt.sack2.left1 = opt.sack2.left1 + ack_delta;
                opt.sack2.right1 = opt.sack2.right1 + ack_delta;
            }
            if (opt.sack3.isValid()) {
                opt.sack3.left0 = opt.sack3.left0 + ack_delta;
                opt.sack3.right0 = opt.sack3.right0 + ack_delta;
                opt.sack3.left1 = opt.sack3.left1 + ack_delta;
                opt.sack3.right1 = opt.sack3.right1 + ack_delta;
                opt.sack3.left2 = opt.sack3.left2 + ack_delta;
                opt.sack3.right2 = opt.sack3.right2 + ack_delta;
            }
            if (opt.sack4.isValid()) {
                opt.sack4.left0 = opt.sack4.left0 + ack_delta;
                opt.sack4.right0 = opt.sack4.right0 + ack_delta;
                opt.sack4.left1 = opt.sack4.left1 + ack_delta;
                opt.sack4.right1 = opt.sack4.right1 + ack_delta;
                opt.sack4.left2 = opt.sack4.left2 + ack_delta;
                opt.sack4.right2 = opt.sack4.right2 + ack_delta;
                opt.sack4.left3 = opt.sack4.left3 + ack_delta;
                opt.sack4.right3 = opt.sack4.right3 + ack_delta;
            }
        }
    }
}

control BypassIngress(inout headers_t hdr, inout metadata_t meta,
                      inout standard_metadata_t std) {
    direct_counter(CounterType.packets_and_bytes) bypass_flows_counter;
    TranslateOption() translate_option;

    bit<8> sp_flags = 0;
    bit<32> sp_ack_delta = 0;
    bit<32> sp_tsval_delta = 0;
    bit<32> sp_tsecr_delta = 0;

    /* BYPASS_ACT_SPLICE; parameters = struct bypass_splice_params */
    action splice(bit<32> new_saddr, bit<32> new_daddr, bit<16> new_sport, bit<16> new_dport,
                  bit<32> seq_delta, bit<32> ack_delta, bit<32> tsval_delta,
                  bit<32> tsecr_delta, bit<8> wscale_in, bit<8> wscale_out, bit<8> flags,
                  bit<32> out_port, bit<48> out_smac, bit<48> out_dmac) {
        bit<32> win;

        bypass_flows_counter.count();
        hdr.ipv4.srcAddr = new_saddr;
        hdr.ipv4.dstAddr = new_daddr;
        hdr.tcp.srcPort = new_sport;
        hdr.tcp.dstPort = new_dport;
        hdr.tcp.seqNo = hdr.tcp.seqNo + seq_delta;
        hdr.tcp.ackNo = hdr.tcp.ackNo + ack_delta;
        /* the advertised window in bytes stays the same: win_in << wscale_in >> wscale_out */
        win = ((bit<32>) hdr.tcp.window) << wscale_in;
        win = win >> wscale_out;
        hdr.tcp.window = (win > 0xffff) ? 16w0xffff : win[15:0];
        hdr.ethernet.srcAddr = out_smac;
        hdr.ethernet.dstAddr = out_dmac;
        std.egress_spec = out_port[8:0];
        sp_flags = flags;
        sp_ack_delta = ack_delta;
        sp_tsval_delta = tsval_delta;
        sp_tsecr_delta = tsecr_delta;
    }

    /* BYPASS_ACT_OBSERVE: no parameters */
    action observe() {
        bypass_flows_counter.count();
        meta.observed = 1;
        std.egress_spec = HOST_PORT;
    }

    action to_host() {
        std.egress_spec = HOST_PORT;
    }

    table bypass_flows {
        key = {
            hdr.ipv4.srcAddr : exact @name("saddr");
            hdr.ipv4.dstAddr : exact @name("daddr");
            hdr.tcp.srcPort : exact @name("sport");
            hdr.tcp.dstPort : exact @name("dport");
        }
        actions = {
            splice;
            observe;
            @defaultonly to_host;
        }
        const default_action = to_host();
        counters = bypass_flows_counter;
        size = 65536;
    }

    apply {
        if (!hdr.tcp.isValid()) {
            to_host();
            return;
        }
        bypass_event_t ev = {hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.tcp.srcPort,
                             hdr.tcp.dstPort, 0};
        if ((hdr.tcp.flags & TCP_FLAG_SYN) != 0) {
            /* a new connection on a stale entry goes to the host, as in the eBPF program */
            to_host();
            ev.type = BYPASS_EV_SYN;
            digest<bypass_event_t>(1, ev);
            return;
        }
        switch (bypass_flows.apply().action_run) {
            splice: {
                translate_option.apply(hdr.tcp_opts[0], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[1], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[2], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[3], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[4], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[5], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[6], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[7], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[8], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
                translate_option.apply(hdr.tcp_opts[9], meta, sp_flags, sp_ack_delta,
                                       sp_tsval_delta, sp_tsecr_delta);
            }
            observe: {
                translate_option.apply(hdr.tcp_opts[0], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[1], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[2], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[3], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[4], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[5], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[6], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[7], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[8], meta, 0, 0, 0, 0);
                translate_option.apply(hdr.tcp_opts[9], meta, 0, 0, 0, 0);
                if (meta.has_ts == 1) {
                    digest<bypass_observe_t>(2, {hdr.ipv4.srcAddr, hdr.ipv4.dstAddr,
                                                 hdr.tcp.srcPort, hdr.tcp.dstPort,
                                                 meta.last_tsval, meta.last_tsecr});
                }
            }
            default: {
                return; /* a miss: to the host */
            }
        }
        /* FIN / RST of a known flow: to the agent (keyed as it arrived, like the eBPF event) */
        if ((hdr.tcp.flags & TCP_FLAG_RST) != 0) {
            ev.type = BYPASS_EV_RST;
            digest<bypass_event_t>(1, ev);
        } else if ((hdr.tcp.flags & TCP_FLAG_FIN) != 0) {
            ev.type = BYPASS_EV_FIN;
            digest<bypass_event_t>(1, ev);
        }
    }
}

control BypassEgress(inout headers_t hdr, inout metadata_t meta,
                     inout standard_metadata_t std) {
    apply { }
}

control BypassComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4_opts.options },
            hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid(),
            { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, 8w0, hdr.ipv4.protocol, meta.tcp_len,
              hdr.tcp.srcPort, hdr.tcp.dstPort, hdr.tcp.seqNo, hdr.tcp.ackNo,
              hdr.tcp.dataOffset, hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window,
              hdr.tcp.urgentPtr, hdr.tcp_opts, hdr.tcp_rest },
            hdr.tcp.checksum, HashAlgorithm.csum16);
    }
}

control BypassDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv4_opts);
        pkt.emit(hdr.tcp);
        pkt.emit(hdr.tcp_opts);
        pkt.emit(hdr.tcp_rest);
    }
}

V1Switch(BypassParser(), BypassVerifyChecksum(), BypassIngress(), BypassEgress(),
         BypassComputeChecksum(), BypassDeparser()) main;
