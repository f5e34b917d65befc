/* test_dp_veth: a real splice. Three network namespaces made by the test, client C, proxy P
 * and server S, joined by veth pairs; the data plane on P's two interfaces. A user-space
 * relay in P carries a little data first (the flows observed), then the test freezes the
 * proxy's two sockets with TCP_REPAIR, installs the splice computed from what it read, closes
 * them silently, and checks that megabytes flow end to end in both directions (veth hands
 * the program GSO and CHECKSUM_PARTIAL segments), that FINs reach the agent as events, and,
 * as a negative control, that the same splice without timestamp translation stalls. Another
 * tool's tc filter placed after ours still sees the packets (ours give no verdict when they
 * let a packet pass).
 * Needs root (exits 77, skipped, otherwise). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "bypass_dp.h"

#define C_ADDR       "192.0.2.2"
#define P1_ADDR      "192.0.2.1"
#define P2_ADDR      "198.51.100.1"
#define S_ADDR       "198.51.100.2"
#define P_PORT       8080
#define S_PORT       80
#define XFER         (8u << 20)
#define PROXY_RCVBUF 32768

static const uint8_t MAC_C[6] = {0x02, 0x00, 0x5e, 0x00, 0x01, 0x02};
static const uint8_t MAC_P1[6] = {0x02, 0x00, 0x5e, 0x00, 0x01, 0x01};
static const uint8_t MAC_P2[6] = {0x02, 0x00, 0x5e, 0x00, 0x02, 0x01};
static const uint8_t MAC_S[6] = {0x02, 0x00, 0x5e, 0x00, 0x02, 0x02};

typedef struct {
    char ns_c[32], ns_p[32], ns_s[32];
    char if_c0[IFNAMSIZ], if_c1[IFNAMSIZ], if_s1[IFNAMSIZ], if_s0[IFNAMSIZ];
    int fd_root, fd_c, fd_p, fd_s; /* namespace fds */
    int ifindex_c1, ifindex_s1;    /* in P */
    int lsn_p, lsn_s;              /* the proxy's and the server's listening sockets */
    bypass_dp_t *dp;
} topo_t;

static topo_t topo;

static int s_sh (const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    int rc;

    va_start (ap, fmt);
    vsnprintf (cmd, sizeof (cmd), fmt, ap);
    va_end (ap);
    rc = system (cmd);
    if (rc != 0)
        fprintf (stderr, "test_dp_veth: '%s' failed (%d)\n", cmd, rc);
    return rc;
}

static void s_enter (int nsfd)
{
    if (setns (nsfd, CLONE_NEWNET) != 0) {
        fprintf (stderr, "test_dp_veth: setns: %s\n", strerror (errno));
        abort ();
    }
}

static int s_ns_open (const char *name)
{
    char path[128];

    snprintf (path, sizeof (path), "/var/run/netns/%s", name);
    return open (path, O_RDONLY | O_CLOEXEC);
}

static uint32_t s_ip (const char *text)
{
    uint32_t a;
    inet_pton (AF_INET, text, &a);
    return a;
}

/* rcvbuf > 0 locks the receive buffer, which gives the connection a small window scale. */
static int s_listen (int nsfd, const char *addr, int port, int rcvbuf)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons (port)};
    int one = 1, fd;

    s_enter (nsfd);
    fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0)
        setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof (rcvbuf));
    sa.sin_addr.s_addr = s_ip (addr);
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof (one));
    if (bind (fd, (struct sockaddr *) &sa, sizeof (sa)) != 0 || listen (fd, 8) != 0) {
        fprintf (stderr, "test_dp_veth: listen %s:%d: %s\n", addr, port, strerror (errno));
        close (fd);
        fd = -1;
    }
    s_enter (topo.fd_root);
    return fd;
}

static int s_connect (int nsfd, const char *addr, int port, int rcvbuf)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons (port)};
    int fd;

    s_enter (nsfd);
    fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0)
        setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof (rcvbuf));
    sa.sin_addr.s_addr = s_ip (addr);
    if (connect (fd, (struct sockaddr *) &sa, sizeof (sa)) != 0) {
        fprintf (stderr, "test_dp_veth: connect %s:%d: %s\n", addr, port, strerror (errno));
        close (fd);
        fd = -1;
    }
    s_enter (topo.fd_root);
    return fd;
}

static void s_timeouts (int fd)
{
    struct timeval tv = {5, 0};

    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof (tv));
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof (tv));
}

static int64_t s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Switches transmit checksum offload (and with it TSO) of a proxy interface. Off, the kernel
 * computes every checksum of what leaves it from the pseudo-header sum the program left in a
 * CHECKSUM_PARTIAL segment, and segments GSO packets in software: the receiver verifies. */
static int s_set_tx_csum (const char *ifname, bool on)
{
    struct ethtool_value ev = {.cmd = ETHTOOL_STXCSUM, .data = on};
    struct ifreq ifr;
    int fd, rc;

    s_enter (topo.fd_p);
    fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset (&ifr, 0, sizeof (ifr));
    snprintf (ifr.ifr_name, sizeof (ifr.ifr_name), "%s", ifname);
    ifr.ifr_data = (void *) &ev;
    rc = ioctl (fd, SIOCETHTOOL, &ifr);
    close (fd);
    s_enter (topo.fd_root);
    return rc;
}

/* ---- topology ------------------------------------------------------------------------------ */

static int s_group_setup (void **state)
{
    int pid = (int) getpid () % 100000;

    snprintf (topo.ns_c, sizeof (topo.ns_c), "hbyp%d-c", pid);
    snprintf (topo.ns_p, sizeof (topo.ns_p), "hbyp%d-p", pid);
    snprintf (topo.ns_s, sizeof (topo.ns_s), "hbyp%d-s", pid);
    snprintf (topo.if_c0, IFNAMSIZ, "hb%dc0", pid);
    snprintf (topo.if_c1, IFNAMSIZ, "hb%dc1", pid);
    snprintf (topo.if_s1, IFNAMSIZ, "hb%ds1", pid);
    snprintf (topo.if_s0, IFNAMSIZ, "hb%ds0", pid);
    topo.fd_root = open ("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    topo.lsn_p = topo.lsn_s = -1;

    if (s_sh ("ip netns add %s && ip netns add %s && ip netns add %s", topo.ns_c, topo.ns_p,
              topo.ns_s) ||
        s_sh ("ip link add %s address 02:00:5e:00:01:02 netns %s type veth peer name %s "
              "address 02:00:5e:00:01:01 netns %s",
              topo.if_c0, topo.ns_c, topo.if_c1, topo.ns_p) ||
        s_sh ("ip link add %s address 02:00:5e:00:02:02 netns %s type veth peer name %s "
              "address 02:00:5e:00:02:01 netns %s",
              topo.if_s0, topo.ns_s, topo.if_s1, topo.ns_p) ||
        s_sh ("ip -n %s addr add " C_ADDR "/24 dev %s && ip -n %s link set %s up && "
              "ip -n %s link set lo up",
              topo.ns_c, topo.if_c0, topo.ns_c, topo.if_c0, topo.ns_c) ||
        s_sh ("ip -n %s addr add " S_ADDR "/24 dev %s && ip -n %s link set %s up && "
              "ip -n %s link set lo up",
              topo.ns_s, topo.if_s0, topo.ns_s, topo.if_s0, topo.ns_s) ||
        s_sh ("ip -n %s addr add " P1_ADDR "/24 dev %s && ip -n %s link set %s up && "
              "ip -n %s addr add " P2_ADDR "/24 dev %s && ip -n %s link set %s up",
              topo.ns_p, topo.if_c1, topo.ns_p, topo.if_c1, topo.ns_p, topo.if_s1, topo.ns_p,
              topo.if_s1) ||
        /* timestamps with random per-connection offsets, SACK */
        s_sh ("ip netns exec %s sysctl -q -w net.ipv4.tcp_timestamps=1 net.ipv4.tcp_sack=1",
              topo.ns_p))
        return -1;

    topo.fd_c = s_ns_open (topo.ns_c);
    topo.fd_p = s_ns_open (topo.ns_p);
    topo.fd_s = s_ns_open (topo.ns_s);
    if (topo.fd_c < 0 || topo.fd_p < 0 || topo.fd_s < 0)
        return -1;

    s_enter (topo.fd_p);
    topo.ifindex_c1 = (int) if_nametoindex (topo.if_c1);
    topo.ifindex_s1 = (int) if_nametoindex (topo.if_s1);
    topo.dp = bypass_dp_new ();
    if (!topo.dp || bypass_dp_attach (topo.dp, topo.ifindex_c1) ||
        bypass_dp_attach (topo.dp, topo.ifindex_s1)) {
        s_enter (topo.fd_root);
        return -1;
    }
    s_enter (topo.fd_root);

    topo.lsn_s = s_listen (topo.fd_s, S_ADDR, S_PORT, 0);
    topo.lsn_p = s_listen (topo.fd_p, P1_ADDR, P_PORT, PROXY_RCVBUF);
    return topo.lsn_s >= 0 && topo.lsn_p >= 0 ? 0 : -1;
}

static int s_group_teardown (void **state)
{
    if (topo.dp) {
        s_enter (topo.fd_p);
        bypass_dp_destroy (&topo.dp);
        s_enter (topo.fd_root);
    }
    if (topo.lsn_p >= 0)
        close (topo.lsn_p);
    if (topo.lsn_s >= 0)
        close (topo.lsn_s);
    if (topo.fd_c > 0)
        close (topo.fd_c);
    if (topo.fd_p > 0)
        close (topo.fd_p);
    if (topo.fd_s > 0)
        close (topo.fd_s);
    s_sh ("ip netns del %s; ip netns del %s; ip netns del %s", topo.ns_c, topo.ns_p, topo.ns_s);
    return 0;
}

/* ---- one proxied connection ---------------------------------------------------------------- */

typedef struct {
    int c, p1, p2, s; /* client, proxy legs, server */
    struct bypass_flow_key key_c, key_s;
} conn_t;

static void s_relay (int from, int to, const char *text)
{
    char buf[64];
    size_t n = strlen (text);
    ssize_t r;

    assert_int_equal (recv (from, buf, n, MSG_WAITALL), (ssize_t) n);
    assert_memory_equal (buf, text, n);
    r = send (to, buf, n, MSG_NOSIGNAL);
    assert_int_equal (r, (ssize_t) n);
}

static struct bypass_flow_key s_key (int fd_local_side)
{
    struct sockaddr_in l, r;
    socklen_t ll = sizeof (l), rl = sizeof (r);
    struct bypass_flow_key k;

    getsockname (fd_local_side, (struct sockaddr *) &l, &ll);
    getpeername (fd_local_side, (struct sockaddr *) &r, &rl);
    /* what arrives at the proxy leg: from its peer to it */
    k.saddr = r.sin_addr.s_addr;
    k.daddr = l.sin_addr.s_addr;
    k.sport = r.sin_port;
    k.dport = l.sin_port;
    return k;
}

/* Client connects through the proxy's user-space relay, which is observed by the data plane
 * while a request and a response cross it. */
static conn_t s_conn_open (void)
{
    conn_t cn;
    char hello[] = "hello through the proxy", world[] = "and back";

    cn.c = s_connect (topo.fd_c, P1_ADDR, P_PORT, 0);
    assert_true (cn.c >= 0);
    cn.p1 = accept (topo.lsn_p, NULL, NULL);
    assert_true (cn.p1 >= 0);
    cn.p2 = s_connect (topo.fd_p, S_ADDR, S_PORT, PROXY_RCVBUF);
    assert_true (cn.p2 >= 0);
    cn.s = accept (topo.lsn_s, NULL, NULL);
    assert_true (cn.s >= 0);
    s_timeouts (cn.c);
    s_timeouts (cn.p1);
    s_timeouts (cn.p2);
    s_timeouts (cn.s);

    cn.key_c = s_key (cn.p1);
    cn.key_s = s_key (cn.p2);
    assert_int_equal (bypass_dp_flow_observe (topo.dp, &cn.key_c, 1), 0);
    assert_int_equal (bypass_dp_flow_observe (topo.dp, &cn.key_s, 2), 0);

    assert_int_equal (send (cn.c, hello, strlen (hello), MSG_NOSIGNAL), (ssize_t) strlen (hello));
    s_relay (cn.p1, cn.p2, hello);
    {
        char buf[64];
        assert_int_equal (recv (cn.s, buf, strlen (hello), MSG_WAITALL), (ssize_t) strlen (hello));
    }
    assert_int_equal (send (cn.s, world, strlen (world), MSG_NOSIGNAL), (ssize_t) strlen (world));
    s_relay (cn.p2, cn.p1, world);
    {
        char buf[64];
        assert_int_equal (recv (cn.c, buf, strlen (world), MSG_WAITALL), (ssize_t) strlen (world));
    }
    return cn;
}

static int s_queued (int fd, unsigned long req)
{
    int n = -1;
    ioctl (fd, req, &n);
    return n;
}

/* Waits until nothing is in flight on either leg and nothing is unread at the proxy. */
static void s_wait_quiet (const conn_t *cn)
{
    int64_t deadline = s_now_ms () + 3000;

    while (s_now_ms () < deadline) {
        if (s_queued (cn->p1, SIOCOUTQ) == 0 && s_queued (cn->p2, SIOCOUTQ) == 0 &&
            s_queued (cn->c, SIOCOUTQ) == 0 && s_queued (cn->s, SIOCOUTQ) == 0 &&
            s_queued (cn->p1, SIOCINQ) == 0 && s_queued (cn->p2, SIOCINQ) == 0)
            return;
        usleep (10000);
    }
    fail_msg ("the legs did not become quiet");
}

static uint32_t s_repair_get (int fd, int queue)
{
    uint32_t v = 0;
    socklen_t len = sizeof (v);

    if (queue >= 0)
        assert_int_equal (setsockopt (fd, SOL_TCP, TCP_REPAIR_QUEUE, &queue, sizeof (queue)), 0);
    assert_int_equal (
        getsockopt (fd, SOL_TCP, queue >= 0 ? TCP_QUEUE_SEQ : TCP_TIMESTAMP, &v, &len), 0);
    return v;
}

static uint32_t s_tcp_clock (int fd)
{
    uint32_t v = 0;
    socklen_t len = sizeof (v);

    assert_int_equal (getsockopt (fd, SOL_TCP, TCP_TIMESTAMP, &v, &len), 0);
    return v;
}

/* Freezes a proxy leg (TCP_REPAIR) and reads what the splice needs. */
static bypass_leg_t s_freeze (int fd, const struct bypass_flow_key *in_key, int ifindex,
                              const uint8_t *lmac, const uint8_t *rmac)
{
    bypass_leg_t leg;
    struct tcp_info ti;
    socklen_t tl = sizeof (ti);
    struct bypass_flow_val v;
    int one = 1;

    memset (&leg, 0, sizeof (leg));
    assert_int_equal (getsockopt (fd, SOL_TCP, TCP_INFO, &ti, &tl), 0);
    leg.snd_wscale = ti.tcpi_snd_wscale;
    leg.rcv_wscale = ti.tcpi_rcv_wscale;
    leg.timestamps = (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
    leg.sack = (ti.tcpi_options & TCPI_OPT_SACK) != 0;

    assert_int_equal (setsockopt (fd, SOL_TCP, TCP_REPAIR, &one, sizeof (one)), 0);
    leg.snd_nxt = s_repair_get (fd, TCP_SEND_QUEUE);
    leg.rcv_nxt = s_repair_get (fd, TCP_RECV_QUEUE);
    leg.ts_now = s_repair_get (fd, -1);

    assert_int_equal (bypass_dp_flow_lookup (topo.dp, in_key, &v), 0);
    assert_int_equal (v.action, BYPASS_ACT_OBSERVE);
    assert_true (v.st.packets >= 2); /* the request or response, and an ACK */
    leg.ts_recent = v.st.last_tsval;

    leg.laddr = in_key->daddr;
    leg.lport = in_key->dport;
    leg.raddr = in_key->saddr;
    leg.rport = in_key->sport;
    leg.ifindex = ifindex;
    memcpy (leg.lmac, lmac, 6);
    memcpy (leg.rmac, rmac, 6);
    return leg;
}

/* Freezes both legs, installs the splice (timestamps translated or not), closes the legs
 * without a FIN or RST. */
static void s_offload (conn_t *cn, bool translate_ts)
{
    bypass_leg_t a, b;
    struct bypass_flow_key kab, kba;
    struct bypass_splice_params pab, pba;

    s_wait_quiet (cn);
    a = s_freeze (cn->p1, &cn->key_c, topo.ifindex_c1, MAC_P1, MAC_C);
    b = s_freeze (cn->p2, &cn->key_s, topo.ifindex_s1, MAC_P2, MAC_S);
    assert_true (a.timestamps && b.timestamps);
    /* the ends scale their windows more than the proxy's legs (small locked buffers) do:
     * the splice has to rescale windows both ways */
    assert_true (a.snd_wscale > a.rcv_wscale && b.snd_wscale > b.rcv_wscale);
    assert_int_equal (bypass_dp_splice_pair (&a, &b, &kab, &pab, &kba, &pba), 0);
    assert_memory_equal (&kab, &cn->key_c, sizeof (kab));
    assert_memory_equal (&kba, &cn->key_s, sizeof (kba));
    if (!translate_ts) {
        pab.flags &= (uint8_t) ~BYPASS_SPLICE_TS;
        pba.flags &= (uint8_t) ~BYPASS_SPLICE_TS;
    }
    assert_int_equal (bypass_dp_flow_splice (topo.dp, &kab, &pab, 1), 0);
    assert_int_equal (bypass_dp_flow_splice (topo.dp, &kba, &pba, 2), 0);
    close (cn->p1); /* in repair mode: silent */
    close (cn->p2);
    cn->p1 = cn->p2 = -1;
}

static uint8_t s_pattern (size_t i, int dir)
{
    return (uint8_t) ((i * 131 + (i >> 12) + (size_t) dir * 17) & 0xff);
}

/* Client and server each send n bytes and read the other's n bytes, verifying every byte.
 * Returns 0 when all arrived within timeout_ms, 1 on timeout, -1 on corruption. *moved gets
 * the bytes delivered. */
static int s_exchange (int c, int s, size_t n, int timeout_ms, size_t *moved)
{
    size_t sent[2] = {0, 0}, got[2] = {0, 0};
    int fds[2] = {c, s};
    int64_t deadline = s_now_ms () + timeout_ms;
    uint8_t buf[65536];

    fcntl (c, F_SETFL, O_NONBLOCK);
    fcntl (s, F_SETFL, O_NONBLOCK);
    while (got[0] < n || got[1] < n) {
        struct pollfd pf[2];
        int64_t left = deadline - s_now_ms ();

        if (left <= 0) {
            *moved = got[0] + got[1];
            return 1;
        }
        for (int i = 0; i < 2; i++) {
            pf[i].fd = fds[i];
            pf[i].events = (short) ((got[i] < n ? POLLIN : 0) | (sent[i] < n ? POLLOUT : 0));
        }
        if (poll (pf, 2, (int) (left < 100 ? left : 100)) < 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (pf[i].revents & POLLOUT) {
                size_t len = n - sent[i] < sizeof (buf) ? n - sent[i] : sizeof (buf);
                ssize_t w;
                for (size_t k = 0; k < len; k++)
                    buf[k] = s_pattern (sent[i] + k, i);
                w = send (fds[i], buf, len, MSG_NOSIGNAL);
                if (w > 0)
                    sent[i] += (size_t) w;
            }
            if (pf[i].revents & (POLLIN | POLLERR | POLLHUP)) {
                ssize_t r = recv (fds[i], buf, sizeof (buf), 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    *moved = got[0] + got[1];
                    return -1;
                }
                for (ssize_t k = 0; k < r; k++)
                    if (buf[k] != s_pattern (got[i] + (size_t) k, 1 - i)) {
                        fprintf (stderr, "test_dp_veth: byte %zu corrupted\n", got[i] + (size_t) k);
                        *moved = got[0] + got[1];
                        return -1;
                    }
                if (r > 0)
                    got[i] += (size_t) r;
            }
        }
    }
    *moved = got[0] + got[1];
    return 0;
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

static void s_conn_close (conn_t *cn)
{
    bypass_dp_flow_del (topo.dp, &cn->key_c);
    bypass_dp_flow_del (topo.dp, &cn->key_s);
    if (cn->c >= 0)
        close (cn->c);
    if (cn->s >= 0)
        close (cn->s);
    if (cn->p1 >= 0)
        close (cn->p1);
    if (cn->p2 >= 0)
        close (cn->p2);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void s_splice_and_transfer (bool expect_gso)
{
    conn_t cn = s_conn_open ();
    uint64_t gso = bypass_dp_stat (topo.dp, BYPASS_STAT_GSO);
    struct bypass_flow_val vc, vs;
    s_events_t evs = {0};
    size_t moved = 0;
    int64_t t0;
    char b;
    int rc;

    while (bypass_dp_poll_events (topo.dp, 0, NULL, NULL) > 0)
        ;
    s_offload (&cn, true);

    t0 = s_now_ms ();
    rc = s_exchange (cn.c, cn.s, XFER, 20000, &moved);
    print_message ("spliced: %zu bytes in %lld ms\n", moved, (long long) (s_now_ms () - t0));
    assert_int_equal (rc, 0);

    /* both directions went through the data plane */
    assert_int_equal (bypass_dp_flow_lookup (topo.dp, &cn.key_c, &vc), 0);
    assert_int_equal (bypass_dp_flow_lookup (topo.dp, &cn.key_s, &vs), 0);
    assert_true (vc.st.bytes >= XFER);
    assert_true (vs.st.bytes >= XFER);
    print_message ("client->server %llu segments %llu bytes, server->client %llu segments %llu "
                   "bytes\n",
                   (unsigned long long) vc.st.packets, (unsigned long long) vc.st.bytes,
                   (unsigned long long) vs.st.packets, (unsigned long long) vs.st.bytes);
    print_message ("GSO super-packets spliced: %llu\n",
                   (unsigned long long) (bypass_dp_stat (topo.dp, BYPASS_STAT_GSO) - gso));
    if (expect_gso)
        assert_true (bypass_dp_stat (topo.dp, BYPASS_STAT_GSO) > gso);

    /* orderly close across the splice: FIN each way, seen by the agent */
    fcntl (cn.c, F_SETFL, 0);
    fcntl (cn.s, F_SETFL, 0);
    assert_int_equal (shutdown (cn.c, SHUT_WR), 0);
    assert_int_equal (recv (cn.s, &b, 1, 0), 0);
    assert_int_equal (shutdown (cn.s, SHUT_WR), 0);
    assert_int_equal (recv (cn.c, &b, 1, 0), 0);
    for (int64_t end = s_now_ms () + 2000; evs.n < 2 && s_now_ms () < end;)
        bypass_dp_poll_events (topo.dp, 100, s_on_event, &evs);
    assert_int_equal (evs.n, 2);
    assert_int_equal (evs.ev[0].type, BYPASS_EV_FIN);
    assert_int_equal (evs.ev[1].type, BYPASS_EV_FIN);
    assert_int_equal (evs.ev[0].cookie + evs.ev[1].cookie, 1 + 2);
    s_conn_close (&cn);
}

/* Segments arrive as GSO super-packets and leave as they are: nothing computes a checksum
 * between the two ends (veth trusts CHECKSUM_PARTIAL). */
static void test_veth_splice_carries_data (void **state)
{
    s_splice_and_transfer (true);
}

/* The same with checksums computed on the proxy's egress and verified by the receivers: a
 * wrong pseudo-header update of a CHECKSUM_PARTIAL segment loses every segment. */
static void test_veth_splice_checksums_verified (void **state)
{
    assert_int_equal (s_set_tx_csum (topo.if_c1, false), 0);
    assert_int_equal (s_set_tx_csum (topo.if_s1, false), 0);
    s_splice_and_transfer (true);
    assert_int_equal (s_set_tx_csum (topo.if_c1, true), 0);
    assert_int_equal (s_set_tx_csum (topo.if_s1, true), 0);
}

/* Would the untranslated splice be dropped by PAWS? C's TSvals meet S's ts_recent from P2's
 * clock, S's meet C's ts_recent from P1's clock (offsets are random per connection). */
static bool s_paws_would_drop (const conn_t *cn)
{
    uint32_t c = s_tcp_clock (cn->c), p1 = s_tcp_clock (cn->p1);
    uint32_t p2 = s_tcp_clock (cn->p2), s = s_tcp_clock (cn->s);

    return (int32_t) (p2 - c) > 1000 || (int32_t) (p1 - s) > 1000;
}

static void test_veth_negative_control_no_ts_translation_stalls (void **state)
{
    size_t moved = 0;
    int tries = 0, rc;
    conn_t cn;

    /* the per-connection clock offsets decide whether a missing translation bites at once
     * (3 in 4 connections): take one where it must */
    for (;;) {
        cn = s_conn_open ();
        if (s_paws_would_drop (&cn))
            break;
        s_conn_close (&cn);
        assert_true (++tries < 12);
    }
    s_offload (&cn, false);
    rc = s_exchange (cn.c, cn.s, XFER, 3000, &moved);
    print_message ("without timestamp translation: %zu of %u bytes in 3 s\n", moved, 2 * XFER);
    assert_int_equal (rc, 1); /* stalled: the check above would have failed */
    assert_true (moved < XFER);
    s_conn_close (&cn);
}

/* Another tool's filter after ours: a tc program that counts every packet (in an array
 * map) and gives no verdict either. */
static int s_counter_prog (int map_fd)
{
    struct bpf_insn prog[] = {
        {BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0},                     /* key = 0 */
        {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map_fd}, /* r1 = map */
        {0, 0, 0, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0}, /* r2 = &key */
        {BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem},
        {BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0}, /* none: skip */
        {BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1},
        {BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD}, /* (*value)++ */
        {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, -1},        /* TC_ACT_UNSPEC */
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    return bpf_prog_load (BPF_PROG_TYPE_SCHED_CLS, "hb_counter", "GPL", prog,
                          sizeof prog / sizeof prog[0], NULL);
}

static void test_veth_filters_after_ours_still_run (void **state)
{
    LIBBPF_OPTS (bpf_tc_hook, hook, .ifindex = topo.ifindex_s1, .attach_point = BPF_TC_EGRESS);
    LIBBPF_OPTS (bpf_tc_opts, opts, .handle = 0x77, .priority = 100);
    uint32_t key = 0;
    uint64_t count = 0;

    s_enter (topo.fd_p);
    assert_int_equal (bypass_dp_shape (topo.dp, topo.ifindex_s1), 0); /* ours, prio 1 */
    int map = bpf_map_create (BPF_MAP_TYPE_ARRAY, "hb_count", 4, 8, 1, NULL);
    assert_true (map >= 0);
    int prog = s_counter_prog (map);
    assert_true (prog >= 0);
    opts.prog_fd = prog;
    assert_int_equal (bpf_tc_attach (&hook, &opts), 0);
    s_enter (topo.fd_root);

    /* spliced segments are redirected to this egress: our shaper sees them first */
    s_splice_and_transfer (false);

    assert_int_equal (bpf_map_lookup_elem (map, &key, &count), 0);
    print_message ("the filter after ours saw %llu packets\n", (unsigned long long) count);
    assert_true (count > 100);
    s_enter (topo.fd_p);
    opts.prog_fd = opts.prog_id = opts.flags = 0;
    assert_int_equal (bpf_tc_detach (&hook, &opts), 0);
    s_enter (topo.fd_root);
    close (prog);
    close (map);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_veth_splice_carries_data),
        cmocka_unit_test (test_veth_splice_checksums_verified),
        cmocka_unit_test (test_veth_filters_after_ours_still_run),
        cmocka_unit_test (test_veth_negative_control_no_ts_translation_stalls),
    };

    if (geteuid () != 0) {
        fprintf (stderr, "test_dp_veth: SKIPPED: network namespaces and BPF need root\n");
        return 77;
    }
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
