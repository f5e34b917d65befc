/* test_dp_rewrite: the bypass data plane on crafted Ethernet/IPv4/TCP segments through
 * BPF_PROG_TEST_RUN. Every expected segment is built from scratch (checksums included) from
 * an independent model of the translation, then compared field by field and byte for byte
 * with what the program produced. Needs root (exits 77, skipped, otherwise). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>

#include "bypass_dp.h"

/* ---- a model of a segment ----------------------------------------------------------------- */

enum { OPT_NOP = 1, OPT_EOL, OPT_TS, OPT_SACK, OPT_RAW };

typedef struct {
    int type;
    uint32_t tsval, tsecr;
    int nblocks;
    uint32_t edges[8];
    uint8_t raw[40];
    size_t rawlen;
} opt_t;

typedef struct {
    uint8_t dmac[6], smac[6];
    uint32_t saddr, daddr; /* network order */
    uint8_t ip_opts[40];
    size_t ip_optlen;
    uint16_t sport, dport; /* host order */
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t window;
    opt_t opts[12];
    int nopts;
    size_t paylen;
} seg_t;

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_ECE 0x40
#define TH_CWR 0x80

static uint32_t s_sum (const uint8_t *p, size_t n, uint32_t sum)
{
    for (; n > 1; p += 2, n -= 2)
        sum += (uint32_t) p[0] << 8 | p[1];
    if (n)
        sum += (uint32_t) p[0] << 8;
    return sum;
}

static uint16_t s_fold (uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t) sum;
}

static void s_put16 (uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v & 0xff;
}

static void s_put32 (uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static uint32_t s_get32 (const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint16_t s_get16 (const uint8_t *p)
{
    return (uint16_t) (p[0] << 8 | p[1]);
}

/* Serialises the options; returns their length padded (with EOL) to a multiple of 4. */
static size_t s_build_opts (const seg_t *s, uint8_t *o)
{
    size_t n = 0;

    for (int i = 0; i < s->nopts; i++) {
        const opt_t *op = &s->opts[i];
        switch (op->type) {
        case OPT_NOP:
            o[n++] = 1;
            break;
        case OPT_EOL:
            o[n++] = 0;
            break;
        case OPT_TS:
            o[n++] = 8;
            o[n++] = 10;
            s_put32 (o + n, op->tsval);
            s_put32 (o + n + 4, op->tsecr);
            n += 8;
            break;
        case OPT_SACK:
            o[n++] = 5;
            o[n++] = (uint8_t) (2 + 8 * op->nblocks);
            for (int e = 0; e < 2 * op->nblocks; e++, n += 4)
                s_put32 (o + n, op->edges[e]);
            break;
        case OPT_RAW:
            memcpy (o + n, op->raw, op->rawlen);
            n += op->rawlen;
            break;
        }
    }
    while (n % 4)
        o[n++] = 0;
    assert_true (n <= 40);
    return n;
}

/* Builds the segment with both checksums computed from scratch. Returns its length. */
static size_t s_build (const seg_t *s, uint8_t *buf)
{
    uint8_t opts[44];
    size_t optlen = s_build_opts (s, opts);
    size_t ihl = 20 + s->ip_optlen, thl = 20 + optlen;
    size_t tot = ihl + thl + s->paylen;
    uint8_t *ip = buf + 14, *tcp = ip + ihl;
    uint32_t sum;

    memset (buf, 0, 14 + tot);
    memcpy (buf, s->dmac, 6);
    memcpy (buf + 6, s->smac, 6);
    s_put16 (buf + 12, 0x0800);
    ip[0] = 0x40 | (uint8_t) (ihl / 4);
    s_put16 (ip + 2, (uint16_t) tot);
    s_put16 (ip + 4, 0x1234);
    s_put16 (ip + 6, 0x4000); /* DF */
    ip[8] = 63;
    ip[9] = 6;
    memcpy (ip + 12, &s->saddr, 4);
    memcpy (ip + 16, &s->daddr, 4);
    memcpy (ip + 20, s->ip_opts, s->ip_optlen);
    s_put16 (ip + 10, (uint16_t) ~s_fold (s_sum (ip, ihl, 0)));

    s_put16 (tcp, s->sport);
    s_put16 (tcp + 2, s->dport);
    s_put32 (tcp + 4, s->seq);
    s_put32 (tcp + 8, s->ack);
    tcp[12] = (uint8_t) ((thl / 4) << 4);
    tcp[13] = s->flags;
    s_put16 (tcp + 14, s->window);
    memcpy (tcp + 20, opts, optlen);
    for (size_t i = 0; i < s->paylen; i++)
        tcp[thl + i] = (uint8_t) (i * 7 + 3);

    sum = s_sum (ip + 12, 8, 0) + 6 + (uint32_t) (thl + s->paylen);
    sum = s_sum (tcp, thl + s->paylen, sum);
    s_put16 (tcp + 16, (uint16_t) ~s_fold (sum));
    return 14 + tot;
}

/* The checksums of a segment, verified from scratch: true when both are right. */
static void s_assert_checksums (const uint8_t *buf, size_t len)
{
    const uint8_t *ip = buf + 14;
    size_t ihl = (ip[0] & 0xf) * 4, tot = s_get16 (ip + 2);
    uint32_t sum;

    assert_int_equal (14 + tot, len);
    assert_int_equal (s_fold (s_sum (ip, ihl, 0)), 0xffff);
    sum = s_sum (ip + 12, 8, 0) + 6 + (uint32_t) (tot - ihl);
    assert_int_equal (s_fold (s_sum (ip + ihl, tot - ihl, sum)), 0xffff);
}

/* ---- the translation, modelled independently of the program ------------------------------ */

/* The segment the peer on the other side must receive. */
static seg_t s_translate (const seg_t *in, const struct bypass_splice_params *p)
{
    seg_t out = *in;
    uint32_t bytes = (uint32_t) in->window << p->wscale_in;

    memcpy (out.dmac, p->out_dmac, 6);
    memcpy (out.smac, p->out_smac, 6);
    out.saddr = p->new_saddr;
    out.daddr = p->new_daddr;
    out.sport = ntohs (p->new_sport);
    out.dport = ntohs (p->new_dport);
    out.seq = in->seq + p->seq_delta;
    out.ack = in->ack + p->ack_delta;
    bytes >>= p->wscale_out;
    out.window = bytes > 65535 ? 65535 : (uint16_t) bytes;
    for (int i = 0; i < out.nopts; i++) {
        opt_t *op = &out.opts[i];
        if (op->type == OPT_TS && (p->flags & BYPASS_SPLICE_TS)) {
            op->tsval += p->tsval_delta;
            op->tsecr += p->tsecr_delta;
        }
        if (op->type == OPT_SACK && (p->flags & BYPASS_SPLICE_SACK))
            for (int e = 0; e < 2 * op->nblocks; e++)
                op->edges[e] += p->ack_delta;
    }
    return out;
}

enum {
    BAD_MAC = 1 << 0,
    BAD_ADDR = 1 << 1,
    BAD_PORT = 1 << 2,
    BAD_SEQ = 1 << 3,
    BAD_ACK = 1 << 4,
    BAD_WIN = 1 << 5,
    BAD_TSVAL = 1 << 6,
    BAD_TSECR = 1 << 7,
    BAD_SACK = 1 << 8,
    BAD_BYTES = 1 << 9, /* anything else, checksums included */
};

/* Compares a produced segment with the expected model field by field (for readable
 * failures), then byte for byte. Returns the BAD_* fields that differ (0: identical). */
static int s_diff (const uint8_t *got, size_t got_len, const seg_t *want, int verbose)
{
    uint8_t exp[256];
    size_t len = s_build (want, exp);
    const uint8_t *gip = got + 14, *eip = exp + 14;
    size_t ihl = (eip[0] & 0xf) * 4;
    const uint8_t *gt = gip + ihl, *et = eip + ihl;
    int bad = 0;

    if (got_len != len)
        return BAD_BYTES;
    if (memcmp (got, exp, 12))
        bad |= BAD_MAC;
    if (memcmp (gip + 12, eip + 12, 8))
        bad |= BAD_ADDR;
    if (memcmp (gt, et, 4))
        bad |= BAD_PORT;
    if (s_get32 (gt + 4) != s_get32 (et + 4))
        bad |= BAD_SEQ;
    if (s_get32 (gt + 8) != s_get32 (et + 8))
        bad |= BAD_ACK;
    if (s_get16 (gt + 14) != s_get16 (et + 14))
        bad |= BAD_WIN;
    /* options: walk the expected layout */
    {
        size_t off = 20;
        for (int i = 0; i < want->nopts; i++) {
            const opt_t *op = &want->opts[i];
            switch (op->type) {
            case OPT_NOP:
            case OPT_EOL:
                off++;
                break;
            case OPT_TS:
                if (s_get32 (gt + off + 2) != op->tsval)
                    bad |= BAD_TSVAL;
                if (s_get32 (gt + off + 6) != op->tsecr)
                    bad |= BAD_TSECR;
                off += 10;
                break;
            case OPT_SACK:
                for (int e = 0; e < 2 * op->nblocks; e++)
                    if (s_get32 (gt + off + 2 + 4 * e) != op->edges[e])
                        bad |= BAD_SACK;
                off += 2 + 8 * op->nblocks;
                break;
            case OPT_RAW:
                off += op->rawlen;
                break;
            }
        }
    }
    if (memcmp (got, exp, len))
        bad |= BAD_BYTES;
    if (verbose && bad) {
        print_message ("segment differs (mask 0x%x): seq %08x/%08x ack %08x/%08x win %u/%u\n", bad,
                       s_get32 (gt + 4), s_get32 (et + 4), s_get32 (gt + 8), s_get32 (et + 8),
                       s_get16 (gt + 14), s_get16 (et + 14));
        for (size_t i = 0; i < len; i++)
            if (got[i] != exp[i])
                print_message ("  byte %zu: got %02x want %02x\n", i, got[i], exp[i]);
    }
    return bad;
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static bypass_dp_t *dp;

static const uint8_t MAC_C[6] = {0x02, 0, 0, 0, 0, 0x0c};
static const uint8_t MAC_P1[6] = {0x02, 0, 0, 0, 0, 0x01};
static const uint8_t MAC_P2[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t MAC_S[6] = {0x02, 0, 0, 0, 0, 0x05};

static uint32_t s_ip (const char *text)
{
    uint32_t a;
    inet_pton (AF_INET, text, &a);
    return a;
}

/* Client C 192.0.2.2:40000 -> proxy leg P1 192.0.2.1:8080 becomes
 * P2 198.51.100.1:33000 -> server S 198.51.100.2:80, and back. */
static struct bypass_flow_key s_key_c (void)
{
    struct bypass_flow_key k = {s_ip ("192.0.2.2"), s_ip ("192.0.2.1"), htons (40000),
                                htons (8080)};
    return k;
}

static struct bypass_flow_key s_key_s (void)
{
    struct bypass_flow_key k = {s_ip ("198.51.100.2"), s_ip ("198.51.100.1"), htons (80),
                                htons (33000)};
    return k;
}

static struct bypass_splice_params s_params_c2s (void)
{
    struct bypass_splice_params p;

    memset (&p, 0, sizeof (p));
    p.new_saddr = s_ip ("198.51.100.1");
    p.new_daddr = s_ip ("198.51.100.2");
    p.new_sport = htons (33000);
    p.new_dport = htons (80);
    p.seq_delta = 0x00002000;   /* 0xfffff000 + delta wraps past 2^32 */
    p.ack_delta = 0xffff0000;   /* a negative delta: small acks wrap below 0 */
    p.tsval_delta = 0x40000123; /* the clocks are a quarter cycle apart */
    p.tsecr_delta = 0x7ffffedd;
    p.wscale_in = 7;
    p.wscale_out = 2;
    p.flags = BYPASS_SPLICE_TS | BYPASS_SPLICE_SACK;
    p.out_port = 7;
    memcpy (p.out_smac, MAC_P2, 6);
    memcpy (p.out_dmac, MAC_S, 6);
    return p;
}

static struct bypass_splice_params s_params_s2c (void)
{
    struct bypass_splice_params p;

    memset (&p, 0, sizeof (p));
    p.new_saddr = s_ip ("192.0.2.1");
    p.new_daddr = s_ip ("192.0.2.2");
    p.new_sport = htons (8080);
    p.new_dport = htons (40000);
    p.seq_delta = 0x00010000; /* = -(ack_delta of the other direction) */
    p.ack_delta = 0xffffe000;
    p.tsval_delta = 0x40000123;
    p.tsecr_delta = 0x7ffffedd;
    p.wscale_in = 2;
    p.wscale_out = 7;
    p.flags = BYPASS_SPLICE_TS | BYPASS_SPLICE_SACK;
    p.out_port = 3;
    memcpy (p.out_smac, MAC_P1, 6);
    memcpy (p.out_dmac, MAC_C, 6);
    return p;
}

static seg_t s_seg_c (void)
{
    seg_t s;

    memset (&s, 0, sizeof (s));
    memcpy (s.dmac, MAC_P1, 6);
    memcpy (s.smac, MAC_C, 6);
    s.saddr = s_ip ("192.0.2.2");
    s.daddr = s_ip ("192.0.2.1");
    s.sport = 40000;
    s.dport = 8080;
    s.seq = 0xfffff000;
    s.ack = 0x00000100;
    s.flags = TH_ACK | TH_PSH;
    s.window = 1000;
    s.opts[0].type = OPT_NOP;
    s.opts[1].type = OPT_NOP;
    s.opts[2].type = OPT_TS;
    s.opts[2].tsval = 0x00001000;
    s.opts[2].tsecr = 0xfffffff0;
    s.nopts = 3;
    s.paylen = 100;
    return s;
}

static seg_t s_seg_s (void)
{
    seg_t s = s_seg_c ();

    memcpy (s.dmac, MAC_P2, 6);
    memcpy (s.smac, MAC_S, 6);
    s.saddr = s_ip ("198.51.100.2");
    s.daddr = s_ip ("198.51.100.1");
    s.sport = 80;
    s.dport = 33000;
    s.seq = 0x00000010;
    s.ack = 0x00001800;
    return s;
}

typedef struct {
    uint8_t out[256];
    uint32_t out_len;
    int retval;
    struct __sk_buff ctx;
} run_t;

/* Runs program prog_fd once on the frame, with the skb fields of ctx. */
static run_t s_run_prog (int prog_fd, const uint8_t *in, size_t len, struct __sk_buff ctx)
{
    run_t r;
    LIBBPF_OPTS (bpf_test_run_opts, opts);

    memset (&r, 0, sizeof (r));
    opts.data_in = in;
    opts.data_size_in = (uint32_t) len;
    opts.data_out = r.out;
    opts.data_size_out = sizeof (r.out);
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof (ctx);
    opts.ctx_out = &r.ctx;
    opts.ctx_size_out = sizeof (r.ctx);
    opts.repeat = 1;
    assert_int_equal (bpf_prog_test_run_opts (prog_fd, &opts), 0);
    r.out_len = opts.data_size_out;
    r.retval = (int) opts.retval;
    return r;
}

/* Runs the data plane once on the segment; gso_segs/gso_size go into the skb. */
static run_t s_run_bytes (const uint8_t *in, size_t len, uint32_t gso_segs, uint32_t gso_size)
{
    struct __sk_buff ctx = {.gso_segs = gso_segs, .gso_size = gso_size};
    return s_run_prog (bypass_dp_prog_fd (dp), in, len, ctx);
}

static run_t s_run (const seg_t *s)
{
    uint8_t in[256];
    size_t len = s_build (s, in);

    return s_run_bytes (in, len, 0, 0);
}

/* Installs both directions of the reference splice with fresh counters. */
static void s_install (uint8_t flags)
{
    struct bypass_flow_key kc = s_key_c (), ks = s_key_s ();
    struct bypass_splice_params pc = s_params_c2s (), ps = s_params_s2c ();

    pc.flags = ps.flags = flags;
    assert_int_equal (bypass_dp_flow_splice (dp, &kc, &pc, 1), 0);
    assert_int_equal (bypass_dp_flow_splice (dp, &ks, &ps, 2), 0);
}

static int s_setup (void **state)
{
    s_install (BYPASS_SPLICE_TS | BYPASS_SPLICE_SACK);
    while (bypass_dp_poll_events (dp, 0, NULL, NULL) > 0)
        ;
    return 0;
}

/* Runs s through the flow with params p and asserts the result is the model's segment. */
static void s_expect_spliced (const seg_t *s, const struct bypass_splice_params *p)
{
    run_t r = s_run (s);
    seg_t want = s_translate (s, p);

    assert_int_equal (r.retval, p->out_port ? TC_ACT_REDIRECT : BYPASS_TC_PASS);
    s_assert_checksums (r.out, r.out_len);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 1), 0);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_unknown_flow_passes (void **state)
{
    seg_t s = s_seg_c ();
    uint8_t in[256];
    size_t len;
    run_t r;
    uint64_t miss = bypass_dp_stat (dp, BYPASS_STAT_MISS);

    s.sport = 40001; /* not installed */
    len = s_build (&s, in);
    r = s_run_bytes (in, len, 0, 0);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    assert_int_equal (r.out_len, len);
    assert_memory_equal (r.out, in, len);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_MISS), miss + 1);

    /* not IPv4 / not TCP: untouched too */
    in[12] = 0x86;
    in[13] = 0xdd;
    r = s_run_bytes (in, len, 0, 0);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    assert_memory_equal (r.out, in, len);
    in[12] = 0x08;
    in[13] = 0x00;
    in[14 + 9] = 17;
    r = s_run_bytes (in, len, 0, 0);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    assert_memory_equal (r.out, in, len);
}

static void test_both_directions_wrap (void **state)
{
    struct bypass_splice_params pc = s_params_c2s (), ps = s_params_s2c ();
    seg_t c = s_seg_c (), s = s_seg_s ();
    seg_t want = s_translate (&c, &pc);

    /* the model itself wraps as intended */
    assert_int_equal (want.seq, 0x00001000);
    assert_int_equal (want.ack, 0xffff0100);
    assert_int_equal (want.opts[2].tsval, 0x40001123);
    assert_int_equal (want.opts[2].tsecr, 0x7ffffecd);
    s_expect_spliced (&c, &pc);
    s_expect_spliced (&s, &ps);

    /* pure ACK, no payload; odd payload length */
    c.paylen = 0;
    c.flags = TH_ACK;
    s_expect_spliced (&c, &pc);
    s.paylen = 101;
    s_expect_spliced (&s, &ps);
}

static void test_window_rescale (void **state)
{
    static const struct {
        uint8_t in, out;
        uint16_t win, want;
    } cases[] = {
        {7, 2, 1000, 32000}, {7, 2, 4000, 65535},  {2, 7, 1000, 31},  {2, 7, 100, 3},
        {2, 7, 65535, 2047}, {0, 0, 12345, 12345}, {14, 0, 1, 16384}, {14, 0, 4, 65535},
        {0, 14, 65535, 3},   {5, 5, 777, 777},     {3, 4, 1, 0},
    };
    struct bypass_flow_key kc = s_key_c ();

    for (size_t i = 0; i < sizeof (cases) / sizeof (cases[0]); i++) {
        struct bypass_splice_params p = s_params_c2s ();
        seg_t c = s_seg_c ();
        seg_t want;

        p.wscale_in = cases[i].in;
        p.wscale_out = cases[i].out;
        assert_int_equal (bypass_dp_flow_splice (dp, &kc, &p, 1), 0);
        c.window = cases[i].win;
        want = s_translate (&c, &p);
        assert_int_equal (want.window, cases[i].want);
        s_expect_spliced (&c, &p);
    }
}

static void s_fill_sack (opt_t *op, int n, uint32_t base)
{
    op->type = OPT_SACK;
    op->nblocks = n;
    for (int b = 0; b < n; b++) {
        op->edges[2 * b] = base + (uint32_t) b * 0x300;
        op->edges[2 * b + 1] = base + (uint32_t) b * 0x300 + 0x200;
    }
}

static void test_sack_blocks (void **state)
{
    struct bypass_splice_params pc = s_params_c2s (), ps = s_params_s2c ();

    for (int n = 1; n <= 4; n++) {
        /* NOP NOP SACK(n), no timestamps; edges straddle 2^32 after translation */
        seg_t c = s_seg_c ();
        c.nopts = 3;
        c.opts[0].type = c.opts[1].type = OPT_NOP;
        s_fill_sack (&c.opts[2], n, 0x0000ff00);
        c.paylen = 0;
        s_expect_spliced (&c, &pc);

        seg_t s = s_seg_s ();
        s.nopts = 3;
        s.opts[0].type = s.opts[1].type = OPT_NOP;
        s_fill_sack (&s.opts[2], n, 0xffffff00);
        s_expect_spliced (&s, &ps);
    }
    for (int n = 1; n <= 3; n++) {
        /* NOP NOP TS NOP NOP SACK(n), as Linux sends them */
        seg_t c = s_seg_c ();
        c.opts[3].type = c.opts[4].type = OPT_NOP;
        s_fill_sack (&c.opts[5], n, 0xfffffe00);
        c.nopts = 6;
        s_expect_spliced (&c, &pc);
        seg_t s = s_seg_s ();
        s.opts[3].type = s.opts[4].type = OPT_NOP;
        s_fill_sack (&s.opts[5], n, 0x00000100);
        s.nopts = 6;
        s_expect_spliced (&s, &ps);
    }
    /* SACK translation off: edges stay, everything else is translated */
    {
        struct bypass_flow_key kc = s_key_c ();
        seg_t c = s_seg_c ();
        pc.flags = BYPASS_SPLICE_TS;
        assert_int_equal (bypass_dp_flow_splice (dp, &kc, &pc, 1), 0);
        c.opts[3].type = c.opts[4].type = OPT_NOP;
        s_fill_sack (&c.opts[5], 2, 0x1000);
        c.nopts = 6;
        s_expect_spliced (&c, &pc);
    }
}

static void test_odd_aligned_options (void **state)
{
    struct bypass_splice_params pc = s_params_c2s ();
    seg_t c = s_seg_c ();

    /* NOP TS NOP: TSval and TSecr start at odd offsets of the TCP header */
    c.nopts = 3;
    c.opts[0].type = OPT_NOP;
    c.opts[1].type = OPT_TS;
    c.opts[1].tsval = 0x12345678;
    c.opts[1].tsecr = 0x9abcdef0;
    c.opts[2].type = OPT_NOP;
    s_expect_spliced (&c, &pc);

    /* NOP SACK(2) NOP NOP NOP NOP NOP */
    c.nopts = 0;
    c.opts[c.nopts++].type = OPT_NOP;
    s_fill_sack (&c.opts[c.nopts++], 2, 0xfffffff1);
    for (int i = 0; i < 5; i++)
        c.opts[c.nopts++].type = OPT_NOP;
    s_expect_spliced (&c, &pc);

    /* an unknown 3-byte option, then TS at an odd offset, then SACK(1), EOL */
    c.nopts = 0;
    c.opts[0].type = OPT_RAW;
    c.opts[0].raw[0] = 253;
    c.opts[0].raw[1] = 3;
    c.opts[0].raw[2] = 0xaa;
    c.opts[0].rawlen = 3;
    c.opts[1].type = OPT_TS;
    c.opts[1].tsval = 0xfffffffe;
    c.opts[1].tsecr = 0x00000001;
    s_fill_sack (&c.opts[2], 1, 0x80000000);
    c.opts[3].type = OPT_EOL;
    c.nopts = 4;
    s_expect_spliced (&c, &pc);
}

static void test_ip_options (void **state)
{
    struct bypass_splice_params pc = s_params_c2s ();
    seg_t c = s_seg_c ();

    c.ip_opts[0] = c.ip_opts[1] = c.ip_opts[2] = 1; /* NOP NOP NOP EOL */
    c.ip_optlen = 4;
    c.opts[3].type = c.opts[4].type = OPT_NOP;
    s_fill_sack (&c.opts[5], 3, 0x7ffffff0);
    c.nopts = 6;
    s_expect_spliced (&c, &pc);
}

static void test_malformed_options (void **state)
{
    struct bypass_splice_params pc = s_params_c2s ();
    seg_t c = s_seg_c ();
    uint64_t bad = bypass_dp_stat (dp, BYPASS_STAT_MALFORMED);
    run_t r;
    seg_t want;

    /* TS, then an option whose length runs past the header: TS is still translated, the
     * bytes after it stay as they are */
    c.opts[3].type = OPT_RAW;
    c.opts[3].raw[0] = 30;
    c.opts[3].raw[1] = 20;
    c.opts[3].rawlen = 2;
    c.nopts = 4;
    s_expect_spliced (&c, &pc);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_MALFORMED), bad + 1);

    /* a zero-length option first: nothing in the options is touched, the rest is */
    c = s_seg_c ();
    memmove (&c.opts[1], &c.opts[0], sizeof (opt_t) * 3);
    c.opts[0].type = OPT_RAW;
    c.opts[0].raw[0] = 30;
    c.opts[0].raw[1] = 0;
    c.opts[0].rawlen = 2;
    c.nopts = 4;
    r = s_run (&c);
    want = s_translate (&c, &pc);
    assert_int_equal (r.retval, TC_ACT_REDIRECT);
    s_assert_checksums (r.out, r.out_len);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 0), BAD_TSVAL | BAD_TSECR | BAD_BYTES);
    pc.flags = BYPASS_SPLICE_SACK;
    want = s_translate (&c, &pc);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 1), 0);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_MALFORMED), bad + 2);
}

typedef struct {
    struct bypass_event ev[8];
    int n;
} s_events_t;

static void s_on_event (const struct bypass_event *ev, void *arg)
{
    s_events_t *evs = arg;

    if (evs->n < 8)
        evs->ev[evs->n++] = *ev;
}

static void test_fin_rst_events (void **state)
{
    struct bypass_splice_params pc = s_params_c2s (), ps = s_params_s2c ();
    struct bypass_flow_key kc = s_key_c (), ks = s_key_s ();
    seg_t c = s_seg_c (), s = s_seg_s ();
    s_events_t evs = {0};

    c.flags = TH_ACK | TH_FIN;
    s_expect_spliced (&c, &pc); /* a FIN is translated and forwarded like any segment */
    assert_int_equal (bypass_dp_poll_events (dp, 100, s_on_event, &evs), 1);
    assert_int_equal (evs.ev[0].type, BYPASS_EV_FIN);
    assert_int_equal (evs.ev[0].cookie, 1);
    assert_memory_equal (&evs.ev[0].key, &kc, sizeof (kc));
    assert_int_equal (evs.ev[0].packets, 1);

    s_expect_spliced (&c, &pc); /* a retransmitted FIN: no second event */
    assert_int_equal (bypass_dp_poll_events (dp, 0, s_on_event, &evs), 0);

    s.flags = TH_ACK | TH_FIN;
    s_expect_spliced (&s, &ps);
    s.flags = TH_RST;
    s.paylen = 0;
    s_expect_spliced (&s, &ps);
    evs.n = 0;
    assert_int_equal (bypass_dp_poll_events (dp, 100, s_on_event, &evs), 2);
    assert_int_equal (evs.ev[0].type, BYPASS_EV_FIN);
    assert_int_equal (evs.ev[1].type, BYPASS_EV_RST);
    assert_int_equal (evs.ev[1].cookie, 2);
    assert_memory_equal (&evs.ev[1].key, &ks, sizeof (ks));

    {
        struct bypass_flow_val v;
        assert_int_equal (bypass_dp_flow_lookup (dp, &ks, &v), 0);
        assert_int_equal (v.st.seen, BYPASS_EV_FIN | BYPASS_EV_RST);
    }
}

static void test_syn_is_not_spliced (void **state)
{
    seg_t c = s_seg_c ();
    uint8_t in[256];
    size_t len;
    run_t r;
    s_events_t evs = {0};

    c.flags = TH_SYN;
    len = s_build (&c, in);
    r = s_run_bytes (in, len, 0, 0);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    assert_memory_equal (r.out, in, len);
    assert_int_equal (bypass_dp_poll_events (dp, 100, s_on_event, &evs), 1);
    assert_int_equal (evs.ev[0].type, BYPASS_EV_SYN);
}

static void test_counters_and_gso (void **state)
{
    struct bypass_splice_params pc = s_params_c2s ();
    struct bypass_flow_key kc = s_key_c ();
    struct bypass_flow_val v;
    seg_t c = s_seg_c ();
    uint8_t in[256];
    size_t len = s_build (&c, in);
    uint64_t spliced = bypass_dp_stat (dp, BYPASS_STAT_SPLICED);
    uint64_t gso = bypass_dp_stat (dp, BYPASS_STAT_GSO);
    seg_t want = s_translate (&c, &pc);
    run_t r;

    for (int i = 0; i < 3; i++)
        s_run_bytes (in, len, 0, 0);
    /* a GSO super-packet of 4 segments: rewritten in place, gso_size kept */
    r = s_run_bytes (in, len, 4, 1400);
    assert_int_equal (r.retval, TC_ACT_REDIRECT);
    assert_int_equal (r.ctx.gso_size, 1400);
    assert_int_equal (r.ctx.gso_segs, 4);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 1), 0);

    assert_int_equal (bypass_dp_flow_lookup (dp, &kc, &v), 0);
    assert_int_equal (v.action, BYPASS_ACT_SPLICE);
    assert_int_equal (v.cookie, 1);
    assert_int_equal (v.st.packets, 3 + 4);
    assert_int_equal (v.st.bytes, 4 * (len - 14));
    assert_int_equal (v.st.last_tsval, c.opts[2].tsval);
    assert_int_equal (v.st.last_tsecr, c.opts[2].tsecr);
    assert_true (v.st.last_ns > 0);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_SPLICED), spliced + 4);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_GSO), gso + 1);
}

static void test_observe_passes (void **state)
{
    struct bypass_flow_key kc = s_key_c ();
    struct bypass_flow_val v;
    seg_t c = s_seg_c ();
    uint8_t in[256];
    size_t len = s_build (&c, in);
    run_t r;

    assert_int_equal (bypass_dp_flow_observe (dp, &kc, 9), 0);
    r = s_run_bytes (in, len, 0, 0);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    assert_memory_equal (r.out, in, len);
    c.opts[2].tsval += 5;
    c.opts[2].tsecr += 3;
    len = s_build (&c, in);
    s_run_bytes (in, len, 0, 0);
    assert_int_equal (bypass_dp_flow_lookup (dp, &kc, &v), 0);
    assert_int_equal (v.action, BYPASS_ACT_OBSERVE);
    assert_int_equal (v.st.packets, 2);
    assert_int_equal (v.st.last_tsval, c.opts[2].tsval);
    assert_int_equal (v.st.last_tsecr, c.opts[2].tsecr);
}

static void test_out_port_zero_goes_to_host (void **state)
{
    struct bypass_splice_params pc = s_params_c2s ();
    struct bypass_flow_key kc = s_key_c ();
    seg_t c = s_seg_c ();
    run_t r;
    seg_t want;

    pc.out_port = 0;
    assert_int_equal (bypass_dp_flow_splice (dp, &kc, &pc, 1), 0);
    r = s_run (&c);
    assert_int_equal (r.retval, BYPASS_TC_PASS);
    want = s_translate (&c, &pc);
    memcpy (want.dmac, c.dmac, 6); /* MACs are left to the host */
    memcpy (want.smac, c.smac, 6);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 1), 0);
}

/* A receiver as RFC 7323 describes it: PAWS drops a segment whose TSval is older than the
 * last one accepted (and Linux then only answers with duplicate ACKs: the connection
 * stalls); an echoed TSecr should be a TSval the receiver sent. */
typedef struct {
    uint32_t ts_recent;  /* the last TSval accepted from the peer */
    uint32_t sent_tsval; /* what the receiver last sent (and expects echoed) */
} receiver_t;

enum { RX_ACCEPT = 0, RX_PAWS_DROP, RX_BAD_ECHO, RX_NO_TIMESTAMP };

static int s_receiver_verdict (const receiver_t *rx, const uint8_t *seg)
{
    const uint8_t *tcp = seg + 14 + (seg[14] & 0xf) * 4;
    size_t off = 20, thl = (tcp[12] >> 4) * 4;

    while (off < thl) {
        if (tcp[off] == 0)
            break;
        if (tcp[off] == 1) {
            off++;
            continue;
        }
        if (tcp[off] == 8) {
            uint32_t tsval = s_get32 (tcp + off + 2), tsecr = s_get32 (tcp + off + 6);
            if ((int32_t) (tsval - rx->ts_recent) < 0)
                return RX_PAWS_DROP;
            return tsecr == rx->sent_tsval ? RX_ACCEPT : RX_BAD_ECHO;
        }
        off += tcp[off + 1];
    }
    return RX_NO_TIMESTAMP;
}

static void test_negative_control_no_timestamp_translation (void **state)
{
    /* C's clock is at 0x00001000 and it echoes P1's 0xfffffff0; P2's clock is at 0x40001123
     * and S last sent 0x7ffffecd to P2. S holds P2's TSval 0x40001100 as ts_recent and
     * expects its own 0x7ffffecd echoed. */
    receiver_t server = {0x40001100, 0x7ffffecd};
    struct bypass_splice_params pc = s_params_c2s ();
    struct bypass_flow_key kc = s_key_c ();
    seg_t c = s_seg_c ();
    run_t r;
    seg_t want = s_translate (&c, &pc);

    /* with translation the server accepts the spliced segment */
    r = s_run (&c);
    assert_int_equal (s_diff (r.out, r.out_len, &want, 1), 0);
    assert_int_equal (s_receiver_verdict (&server, r.out), RX_ACCEPT);

    /* without it, the same checks catch the untranslated timestamps, and the receiver
     * drops the segment (PAWS): the stall the real connection would show */
    pc.flags = BYPASS_SPLICE_SACK;
    assert_int_equal (bypass_dp_flow_splice (dp, &kc, &pc, 1), 0);
    r = s_run (&c);
    assert_int_equal (r.retval, TC_ACT_REDIRECT);
    s_assert_checksums (r.out, r.out_len); /* still a well-formed segment */
    assert_int_equal (s_diff (r.out, r.out_len, &want, 0), BAD_TSVAL | BAD_TSECR | BAD_BYTES);
    assert_int_equal (s_receiver_verdict (&server, r.out), RX_PAWS_DROP);
}

static uint32_t s_port_plus_100 (uint32_t ifindex, void *arg)
{
    return ifindex + 100;
}

static void test_export_p4 (void **state)
{
    struct bypass_flow_key kc = s_key_c ();
    struct bypass_flow_val v;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);

    memset (&v, 0, sizeof (v));
    v.action = BYPASS_ACT_SPLICE;
    v.splice = s_params_c2s ();
    assert_int_equal (bypass_dp_p4_entry (out, &kc, &v, NULL, NULL), 0);
    assert_int_equal (bypass_dp_p4_entry (out, &kc, &v, s_port_plus_100, NULL), 0);
    v.action = BYPASS_ACT_OBSERVE;
    assert_int_equal (bypass_dp_p4_entry (out, &kc, &v, NULL, NULL), 0);
    v.action = 99;
    assert_int_equal (bypass_dp_p4_entry (out, &kc, &v, NULL, NULL), -1);
    fclose (out);
    assert_string_equal (
        text, "table_add bypass_flows splice 192.0.2.2 192.0.2.1 40000 8080 => 198.51.100.1 "
              "198.51.100.2 33000 80 0x00002000 0xffff0000 0x40000123 0x7ffffedd 7 2 3 7 "
              "02:00:00:00:00:02 02:00:00:00:00:05\n"
              "table_add bypass_flows splice 192.0.2.2 192.0.2.1 40000 8080 => 198.51.100.1 "
              "198.51.100.2 33000 80 0x00002000 0xffff0000 0x40000123 0x7ffffedd 7 2 3 107 "
              "02:00:00:00:00:02 02:00:00:00:00:05\n"
              "table_add bypass_flows observe 192.0.2.2 192.0.2.1 40000 8080 =>\n");
    free (text);

    /* the whole table: the two installed directions */
    text = NULL;
    out = open_memstream (&text, &size);
    assert_int_equal (bypass_dp_export_p4 (dp, out, NULL, NULL), 2);
    fclose (out);
    assert_non_null (strstr (text, "table_add bypass_flows splice 192.0.2.2 192.0.2.1 40000"));
    assert_non_null (strstr (text, "table_add bypass_flows splice 198.51.100.2 198.51.100.1 80"));
    free (text);
}

static void test_splice_pair (void **state)
{
    bypass_leg_t a, b;
    struct bypass_flow_key kab, kba;
    struct bypass_splice_params pab, pba;

    memset (&a, 0, sizeof (a));
    memset (&b, 0, sizeof (b));
    a.laddr = s_ip ("192.0.2.1");
    a.raddr = s_ip ("192.0.2.2");
    a.lport = htons (8080);
    a.rport = htons (40000);
    a.snd_nxt = 0xfffffff0;
    a.rcv_nxt = 0x10;
    a.ts_now = 5000;
    a.ts_recent = 0xffffff00;
    a.snd_wscale = 7;
    a.rcv_wscale = 2;
    a.timestamps = true;
    a.ifindex = 3;
    b = a;
    b.laddr = s_ip ("198.51.100.1");
    b.raddr = s_ip ("198.51.100.2");
    b.lport = htons (33000);
    b.rport = htons (80);
    b.snd_nxt = 0x20;
    b.rcv_nxt = 0xffff0000;
    b.ts_now = 0x70000000;
    b.ts_recent = 42;
    b.snd_wscale = 9;
    b.rcv_wscale = 4;
    b.ifindex = 7;
    assert_int_equal (bypass_dp_splice_pair (&a, &b, &kab, &pab, &kba, &pba), 0);

    assert_int_equal (kab.saddr, a.raddr);
    assert_int_equal (kab.dport, a.lport);
    assert_int_equal (pab.new_saddr, b.laddr);
    assert_int_equal (pab.new_dport, b.rport);
    assert_int_equal (kba.saddr, b.raddr);
    assert_int_equal (pba.new_daddr, a.raddr);
    /* the next byte the client sends is the next byte P2 would have sent, and so on */
    assert_int_equal ((uint32_t) (a.rcv_nxt + pab.seq_delta), b.snd_nxt);
    assert_int_equal ((uint32_t) (a.snd_nxt + pab.ack_delta), b.rcv_nxt);
    assert_int_equal ((uint32_t) (b.rcv_nxt + pba.seq_delta), a.snd_nxt);
    assert_int_equal ((uint32_t) (b.snd_nxt + pba.ack_delta), a.rcv_nxt);
    /* the peers' next TSvals continue the legs' clocks, echoes go back exactly */
    assert_int_equal ((uint32_t) (a.ts_recent + pab.tsval_delta), b.ts_now);
    assert_int_equal ((uint32_t) (b.ts_recent + pba.tsval_delta), a.ts_now);
    assert_int_equal ((uint32_t) (pab.tsecr_delta + pba.tsval_delta), 0);
    assert_int_equal ((uint32_t) (pba.tsecr_delta + pab.tsval_delta), 0);
    assert_int_equal (pab.wscale_in, 7);
    assert_int_equal (pab.wscale_out, 4);
    assert_int_equal (pba.wscale_in, 9);
    assert_int_equal (pba.wscale_out, 2);
    assert_int_equal (pab.out_port, 7);
    assert_int_equal (pba.out_port, 3);
    assert_int_equal (pab.flags, BYPASS_SPLICE_TS | BYPASS_SPLICE_SACK);

    b.timestamps = false;
    assert_int_equal (bypass_dp_splice_pair (&a, &b, &kab, &pab, &kba, &pba), -1);
    a.timestamps = false;
    assert_int_equal (bypass_dp_splice_pair (&a, &b, &kab, &pab, &kba, &pba), 0);
    assert_int_equal (pab.flags, BYPASS_SPLICE_SACK);
}

static void test_flow_table_api (void **state)
{
    struct bypass_flow_key k = s_key_c ();
    struct bypass_flow_val v;

    assert_int_equal (bypass_dp_flow_del (dp, &k), 0);
    assert_int_equal (bypass_dp_flow_lookup (dp, &k, &v), -1);
    assert_int_equal (errno, ENOENT);
    assert_int_equal (bypass_dp_flow_del (dp, &k), -1);
    assert_int_equal (errno, ENOENT);
}

/* ---- the SYN shaper ------------------------------------------------------------------------ */

/* Runs the shaper once on the segment with skb->mark. */
static run_t s_shape_run (const seg_t *s, uint32_t mark)
{
    uint8_t in[256];
    size_t len = s_build (s, in);
    struct __sk_buff ctx = {.mark = mark};
    return s_run_prog (bypass_dp_shape_prog_fd (dp), in, len, ctx);
}

static void s_raw (opt_t *op, const uint8_t *bytes, size_t n)
{
    op->type = OPT_RAW;
    memcpy (op->raw, bytes, n);
    op->rawlen = n;
}

/* The SYN Linux sends: MSS, SACK-permitted, timestamps, NOP, window scale (the proxy
 * dialing the server: P2 -> S). */
static seg_t s_syn (void)
{
    static const uint8_t mss[] = {2, 4, 0x05, 0xb4}, sack_ok[] = {4, 2}, ws[] = {3, 3, 7};
    seg_t s = s_seg_c ();

    memcpy (s.dmac, MAC_S, 6);
    memcpy (s.smac, MAC_P2, 6);
    s.saddr = s_ip ("198.51.100.1");
    s.daddr = s_ip ("198.51.100.2");
    s.sport = 33000;
    s.dport = 80;
    s.seq = 0x12345678;
    s.ack = 0;
    s.flags = TH_SYN;
    s.window = 64240;
    s.paylen = 0;
    memset (s.opts, 0, sizeof (s.opts));
    s_raw (&s.opts[0], mss, sizeof mss);
    s_raw (&s.opts[1], sack_ok, sizeof sack_ok);
    s.opts[2].type = OPT_TS;
    s.opts[2].tsval = 0xdeadbeef;
    s.opts[3].type = OPT_NOP;
    s_raw (&s.opts[4], ws, sizeof ws);
    s.nopts = 5;
    return s;
}

/* s with option i replaced by n NOPs. */
static seg_t s_nops_for (seg_t s, int i, int n)
{
    opt_t nops = {.type = OPT_RAW, .rawlen = (size_t) n};
    memset (nops.raw, 1, (size_t) n);
    s.opts[i] = nops;
    return s;
}

static void s_expect_bytes (const run_t *r, const seg_t *want)
{
    uint8_t buf[256];
    size_t len = s_build (want, buf);

    assert_int_equal (r->retval, BYPASS_TC_PASS);
    s_assert_checksums (r->out, r->out_len);
    assert_int_equal (r->out_len, len);
    assert_memory_equal (r->out, buf, len);
}

static void test_shape_syn_by_mark (void **state)
{
    seg_t syn = s_syn (), want;
    uint64_t shaped = bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYN);
    run_t r;

    /* timestamps only: its 10 bytes become NOPs, the rest is untouched */
    r = s_shape_run (&syn, BYPASS_SHAPE_MARK | BYPASS_SHAPE_NO_TS);
    want = s_nops_for (syn, 2, 10);
    s_expect_bytes (&r, &want);

    /* SACK-permitted and timestamps; ECN asked for (ECE+CWR on the SYN) and taken out */
    syn.flags = TH_SYN | TH_ECE | TH_CWR;
    r = s_shape_run (&syn, BYPASS_SHAPE_MARK | BYPASS_SHAPE_ALL);
    want = s_nops_for (s_nops_for (syn, 1, 2), 2, 10);
    want.flags = TH_SYN;
    s_expect_bytes (&r, &want);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYN), shaped + 2);

    /* an option that is not there: nothing to do, nothing counted */
    syn = s_nops_for (s_syn (), 2, 10);
    r = s_shape_run (&syn, BYPASS_SHAPE_MARK | BYPASS_SHAPE_NO_TS);
    s_expect_bytes (&r, &syn);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYN), shaped + 2);
}

static void test_shape_leaves_everything_else (void **state)
{
    seg_t syn = s_syn (), data = s_seg_c ();
    static const uint8_t bad[] = {8, 30};
    uint64_t shaped = bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYN);
    run_t r;

    /* no mark, another mark, our mark asking for nothing */
    for (int i = 0; i < 3; i++) {
        uint32_t mark = i == 0 ? 0 : i == 1 ? 0x1234 | BYPASS_SHAPE_ALL : BYPASS_SHAPE_MARK;
        r = s_shape_run (&syn, mark);
        s_expect_bytes (&r, &syn);
    }
    /* a segment that is not a SYN, marked */
    r = s_shape_run (&data, BYPASS_SHAPE_MARK | BYPASS_SHAPE_ALL);
    s_expect_bytes (&r, &data);
    /* an option whose length runs past the header: what comes before it is shaped, the rest
     * stays as it is */
    syn.opts[3] = (opt_t){0};
    s_raw (&syn.opts[3], bad, sizeof bad);
    syn.nopts = 4;
    r = s_shape_run (&syn, BYPASS_SHAPE_MARK | BYPASS_SHAPE_ALL);
    seg_t want = s_nops_for (s_nops_for (syn, 1, 2), 2, 10);
    s_expect_bytes (&r, &want);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYN), shaped + 1);
}

/* A transparent front answers the client's SYN for server S: the SYN-ACK leaves with S's
 * address and port, and loses what S did not use last time. */
static void test_shape_synack_from_the_server_cache (void **state)
{
    seg_t sa = s_syn ();
    struct bypass_flow_key client = {s_ip ("192.0.2.2"), s_ip ("198.51.100.2"), htons (40000),
                                     htons (80)};
    uint64_t shaped = bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYNACK);
    uint32_t strip = 99;
    run_t r;

    memcpy (sa.dmac, MAC_C, 6);
    memcpy (sa.smac, MAC_P1, 6);
    sa.saddr = s_ip ("198.51.100.2");
    sa.daddr = s_ip ("192.0.2.2");
    sa.sport = 80;
    sa.dport = 40000;
    sa.ack = 0x1001;
    sa.flags = TH_SYN | TH_ACK | TH_ECE;

    /* no entry: untouched, nothing recorded */
    assert_int_equal (bypass_dp_server_get (dp, sa.saddr, htons (80), &strip), 0);
    assert_int_equal (strip, 0);
    r = s_shape_run (&sa, 0);
    s_expect_bytes (&r, &sa);
    assert_int_equal (bypass_dp_shaped_take (dp, &client), 0);

    assert_int_equal (
        bypass_dp_server_set (dp, sa.saddr, htons (80), BYPASS_SHAPE_NO_TS | BYPASS_SHAPE_NO_ECN),
        0);
    r = s_shape_run (&sa, 0);
    seg_t want = s_nops_for (sa, 2, 10);
    want.flags = TH_SYN | TH_ACK;
    s_expect_bytes (&r, &want);
    assert_int_equal (bypass_dp_stat (dp, BYPASS_STAT_SHAPED_SYNACK), shaped + 1);
    assert_int_equal (bypass_dp_shaped_take (dp, &client),
                      BYPASS_SHAPE_NO_TS | BYPASS_SHAPE_NO_ECN);
    assert_int_equal (bypass_dp_shaped_take (dp, &client), 0); /* taken */

    /* another port of the same host is another server */
    sa.sport = 81;
    r = s_shape_run (&sa, 0);
    s_expect_bytes (&r, &sa);
    assert_int_equal (bypass_dp_server_set (dp, sa.saddr, htons (80), 0), 0);
    assert_int_equal (bypass_dp_server_get (dp, sa.saddr, htons (80), &strip), 0);
    assert_int_equal (strip, 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup (test_unknown_flow_passes, s_setup),
        cmocka_unit_test_setup (test_both_directions_wrap, s_setup),
        cmocka_unit_test_setup (test_window_rescale, s_setup),
        cmocka_unit_test_setup (test_sack_blocks, s_setup),
        cmocka_unit_test_setup (test_odd_aligned_options, s_setup),
        cmocka_unit_test_setup (test_ip_options, s_setup),
        cmocka_unit_test_setup (test_malformed_options, s_setup),
        cmocka_unit_test_setup (test_fin_rst_events, s_setup),
        cmocka_unit_test_setup (test_syn_is_not_spliced, s_setup),
        cmocka_unit_test_setup (test_counters_and_gso, s_setup),
        cmocka_unit_test_setup (test_observe_passes, s_setup),
        cmocka_unit_test_setup (test_out_port_zero_goes_to_host, s_setup),
        cmocka_unit_test_setup (test_negative_control_no_timestamp_translation, s_setup),
        cmocka_unit_test_setup (test_export_p4, s_setup),
        cmocka_unit_test (test_splice_pair),
        cmocka_unit_test_setup (test_flow_table_api, s_setup),
        cmocka_unit_test (test_shape_syn_by_mark),
        cmocka_unit_test (test_shape_leaves_everything_else),
        cmocka_unit_test (test_shape_synack_from_the_server_cache),
    };
    int failed;

    if (geteuid () != 0) {
        fprintf (stderr, "test_dp_rewrite: SKIPPED: loading BPF programs needs root\n");
        return 77;
    }
    dp = bypass_dp_new ();
    if (!dp) {
        fprintf (stderr, "test_dp_rewrite: cannot load the data plane (see above)\n");
        return 1;
    }
    failed = cmocka_run_group_tests (tests, NULL, NULL);
    bypass_dp_destroy (&dp);
    return failed;
}
