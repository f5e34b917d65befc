/* bypass_leg: socket-level steps of an offload (TCP_INFO, queues, TCP_REPAIR). */
#include "bypass_leg.h"

#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif
#ifndef TCP_REPAIR_OFF
#define TCP_REPAIR_OFF 0
#endif
#ifndef TCP_REPAIR_ON
#define TCP_REPAIR_ON 1
#endif

int bypass_leg_inspect (int fd, bypass_leg_info_t *info, const char **reason, char *detail,
                        size_t len)
{
    int type = 0, proto = 0, domain = 0;
    socklen_t sl = sizeof type;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;

    memset (info, 0, sizeof *info);
    if (getsockopt (fd, SOL_SOCKET, SO_DOMAIN, &domain, &sl) != 0 ||
        (sl = sizeof type, getsockopt (fd, SOL_SOCKET, SO_TYPE, &type, &sl)) != 0 ||
        (sl = sizeof proto, getsockopt (fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl)) != 0 ||
        domain != AF_INET || type != SOCK_STREAM || proto != IPPROTO_TCP) {
        *reason = "not_tcp4";
        snprintf (detail, len, "not an IPv4 TCP socket");
        return -1;
    }
    memset (&ti, 0, sizeof ti);
    if (getsockopt (fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) {
        *reason = "not_tcp4";
        snprintf (detail, len, "TCP_INFO: %s", strerror (errno));
        return -1;
    }
    if (ti.tcpi_state != TCP_ESTABLISHED) {
        *reason = "not_established";
        snprintf (detail, len, "socket in TCP state %u, not established", ti.tcpi_state);
        return -1;
    }
    sl = sizeof info->local;
    if (getsockname (fd, (struct sockaddr *) &info->local, &sl) != 0 ||
        (sl = sizeof info->peer, getpeername (fd, (struct sockaddr *) &info->peer, &sl)) != 0) {
        *reason = "not_established";
        snprintf (detail, len, "socket has no peer: %s", strerror (errno));
        return -1;
    }
    info->wire = info->local;
    info->timestamps = (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
    info->sack = (ti.tcpi_options & TCPI_OPT_SACK) != 0;
    info->ecn = (ti.tcpi_options & TCPI_OPT_ECN) != 0;
    info->wscale = (ti.tcpi_options & TCPI_OPT_WSCALE) != 0;
    info->snd_wscale = info->wscale ? ti.tcpi_snd_wscale : 0;
    info->rcv_wscale = info->wscale ? ti.tcpi_rcv_wscale : 0;
    info->advmss = ti.tcpi_advmss;
    info->snd_mss = ti.tcpi_snd_mss;
    info->rtt_us = ti.tcpi_rtt;
    sl = sizeof info->reuseaddr;
    getsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &info->reuseaddr, &sl);
    return 0;
}

bool bypass_leg_addressed (int fd, bypass_leg_info_t *info)
{
    struct sockaddr_in orig;
    socklen_t sl = sizeof orig;

    if (getsockopt (fd, SOL_IP, SO_ORIGINAL_DST, &orig, &sl) != 0 || sl != sizeof orig ||
        orig.sin_family != AF_INET)
        return false;
    if (orig.sin_addr.s_addr == info->local.sin_addr.s_addr &&
        orig.sin_port == info->local.sin_port)
        return false;
    info->wire = orig;
    return true;
}

int bypass_leg_queues (int fd, int *unacked, int *unread)
{
    if (ioctl (fd, SIOCOUTQ, unacked) != 0 || ioctl (fd, SIOCINQ, unread) != 0)
        return -1;
    return 0;
}

static int s_repair (int fd, int value)
{
    return setsockopt (fd, IPPROTO_TCP, TCP_REPAIR, &value, sizeof value);
}

/* Leaving repair mode resets SO_REUSEADDR: the proxy's value goes back. */
static int s_reuse (int fd, int reuseaddr)
{
    return setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &reuseaddr, sizeof reuseaddr);
}

int bypass_leg_probe (int fd, int reuseaddr)
{
    if (s_repair (fd, TCP_REPAIR_ON) != 0)
        return -1;
    if (s_repair (fd, TCP_REPAIR_OFF) != 0) /* sends the window probe */
        return -1;
    return s_reuse (fd, reuseaddr);
}

int bypass_leg_freeze (int fd)
{
    return s_repair (fd, TCP_REPAIR_ON);
}

int bypass_leg_thaw (int fd, int reuseaddr)
{
    if (s_repair (fd, TCP_REPAIR_OFF_NO_WP) != 0)
        return -1;
    return s_reuse (fd, reuseaddr);
}

static int s_queue_seq (int fd, int queue, uint32_t *seq)
{
    socklen_t len = sizeof *seq;

    if (setsockopt (fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &queue, sizeof queue) != 0)
        return -1;
    return getsockopt (fd, IPPROTO_TCP, TCP_QUEUE_SEQ, seq, &len);
}

int bypass_leg_seq (int fd, uint32_t *snd_nxt, uint32_t *rcv_nxt)
{
    if (s_queue_seq (fd, TCP_SEND_QUEUE, snd_nxt) != 0 ||
        s_queue_seq (fd, TCP_RECV_QUEUE, rcv_nxt) != 0)
        return -1;
    return 0;
}

int bypass_leg_clock (int fd, uint32_t *ts)
{
    socklen_t len = sizeof *ts;

    return getsockopt (fd, IPPROTO_TCP, TCP_TIMESTAMP, ts, &len);
}

int bypass_leg_disconnect (int fd)
{
    struct sockaddr sa = {.sa_family = AF_UNSPEC};

    return connect (fd, &sa, sizeof sa);
}

int bypass_leg_reserve (const struct sockaddr_in *local)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    if (bind (fd, (const struct sockaddr *) local, sizeof *local) != 0) {
        int saved = errno;

        close (fd);
        errno = saved;
        return -1;
    }
    return fd;
}

uint64_t bypass_leg_netns_cookie (int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;

    if (getsockopt (fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
        return 0;
    return cookie;
}
