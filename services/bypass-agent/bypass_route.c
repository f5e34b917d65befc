/* bypass_route: rtnetlink route and neighbour look-ups for the splice's egress; ctnetlink
 * clean-up of a spliced leg's conntrack entry. */
#include "bypass_route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_arp.h>
#include <linux/neighbour.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define S_NL_BUF 32768

static int s_nl_open_proto (int proto)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    struct timeval tv = {1, 0};
    int fd = socket (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);

    if (fd < 0)
        return -1;
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (bind (fd, (struct sockaddr *) &sa, sizeof sa) != 0) {
        close (fd);
        return -1;
    }
    return fd;
}

static int s_nl_open (void)
{
    return s_nl_open_proto (NETLINK_ROUTE);
}

static void s_add_attr (struct nlmsghdr *n, size_t cap, int type, const void *data, size_t len)
{
    size_t rtalen = RTA_LENGTH (len);
    struct rtattr *rta = (struct rtattr *) ((char *) n + NLMSG_ALIGN (n->nlmsg_len));

    if (NLMSG_ALIGN (n->nlmsg_len) + RTA_ALIGN (rtalen) > cap)
        return;
    rta->rta_type = (unsigned short) type;
    rta->rta_len = (unsigned short) rtalen;
    if (len)
        memcpy (RTA_DATA (rta), data, len);
    n->nlmsg_len = (uint32_t) (NLMSG_ALIGN (n->nlmsg_len) + RTA_ALIGN (rtalen));
}

static int s_route_get (int fd, uint32_t laddr, uint32_t raddr, bypass_path_t *path, char *err,
                        size_t errlen)
{
    struct {
        struct nlmsghdr n;
        struct rtmsg r;
        char attrs[64];
    } req;
    char buf[S_NL_BUF];
    char peer[INET_ADDRSTRLEN];
    ssize_t len;

    inet_ntop (AF_INET, &raddr, peer, sizeof peer);
    memset (&req, 0, sizeof req);
    req.n.nlmsg_len = NLMSG_LENGTH (sizeof (struct rtmsg));
    req.n.nlmsg_type = RTM_GETROUTE;
    req.n.nlmsg_flags = NLM_F_REQUEST;
    req.n.nlmsg_seq = 1;
    req.r.rtm_family = AF_INET;
    req.r.rtm_dst_len = 32;
    req.r.rtm_src_len = 32;
    s_add_attr (&req.n, sizeof req, RTA_DST, &raddr, 4);
    s_add_attr (&req.n, sizeof req, RTA_SRC, &laddr, 4);
    if (send (fd, &req, req.n.nlmsg_len, 0) < 0 || (len = recv (fd, buf, sizeof buf, 0)) < 0) {
        snprintf (err, errlen, "route look-up for %s: %s", peer, strerror (errno));
        return -1;
    }
    for (struct nlmsghdr *n = (struct nlmsghdr *) buf; NLMSG_OK (n, (size_t) len);
         n = NLMSG_NEXT (n, len)) {
        if (n->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr *e = NLMSG_DATA (n);
            snprintf (err, errlen, "no route to %s: %s", peer, strerror (-e->error));
            return -1;
        }
        if (n->nlmsg_type != RTM_NEWROUTE)
            continue;
        struct rtmsg *r = NLMSG_DATA (n);
        int alen = (int) RTM_PAYLOAD (n);
        if (r->rtm_type == RTN_LOCAL) {
            snprintf (err, errlen, "%s is an address of this host (loopback cannot be spliced)",
                      peer);
            return -1;
        }
        if (r->rtm_type != RTN_UNICAST) {
            snprintf (err, errlen, "route to %s is not unicast (type %u)", peer, r->rtm_type);
            return -1;
        }
        path->nexthop = raddr;
        for (struct rtattr *a = RTM_RTA (r); RTA_OK (a, alen); a = RTA_NEXT (a, alen)) {
            if (a->rta_type == RTA_OIF)
                memcpy (&path->ifindex, RTA_DATA (a), 4);
            else if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD (a) == 4)
                memcpy (&path->nexthop, RTA_DATA (a), 4);
        }
        if (path->ifindex <= 0) {
            snprintf (err, errlen, "route to %s has no output interface", peer);
            return -1;
        }
        return 0;
    }
    snprintf (err, errlen, "no route to %s", peer);
    return -1;
}

static int s_link (bypass_path_t *path, char *err, size_t errlen)
{
    struct ifreq ifr;
    int fd;

    if (!if_indextoname ((unsigned) path->ifindex, path->ifname)) {
        snprintf (err, errlen, "interface %d: %s", path->ifindex, strerror (errno));
        return -1;
    }
    fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf (err, errlen, "socket: %s", strerror (errno));
        return -1;
    }
    memset (&ifr, 0, sizeof ifr);
    snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "%s", path->ifname);
    if (ioctl (fd, SIOCGIFHWADDR, &ifr) != 0 || ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
        snprintf (err, errlen,
                  "interface %s is not Ethernet (loopback and tunnels cannot be "
                  "spliced)",
                  path->ifname);
        close (fd);
        return -1;
    }
    memcpy (path->lmac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl (fd, SIOCGIFMTU, &ifr) != 0) {
        snprintf (err, errlen, "MTU of %s: %s", path->ifname, strerror (errno));
        close (fd);
        return -1;
    }
    path->mtu = ifr.ifr_mtu;
    close (fd);
    return 0;
}

static int s_neigh (int fd, bypass_path_t *path, char *err, size_t errlen)
{
    struct {
        struct nlmsghdr n;
        struct ndmsg nd;
    } req;
    char buf[S_NL_BUF];
    char hop[INET_ADDRSTRLEN];
    const unsigned valid = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT;
    bool found = false, done = false;

    inet_ntop (AF_INET, &path->nexthop, hop, sizeof hop);
    memset (&req, 0, sizeof req);
    req.n.nlmsg_len = NLMSG_LENGTH (sizeof (struct ndmsg));
    req.n.nlmsg_type = RTM_GETNEIGH;
    req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.n.nlmsg_seq = 2;
    req.nd.ndm_family = AF_INET;
    req.nd.ndm_ifindex = path->ifindex;
    if (send (fd, &req, req.n.nlmsg_len, 0) < 0) {
        snprintf (err, errlen, "neighbour look-up: %s", strerror (errno));
        return -1;
    }
    while (!done) {
        ssize_t len = recv (fd, buf, sizeof buf, 0);

        if (len <= 0) {
            snprintf (err, errlen, "neighbour look-up: %s", len < 0 ? strerror (errno) : "EOF");
            return -1;
        }
        for (struct nlmsghdr *n = (struct nlmsghdr *) buf; NLMSG_OK (n, (size_t) len);
             n = NLMSG_NEXT (n, len)) {
            if (n->nlmsg_type == NLMSG_DONE || n->nlmsg_type == NLMSG_ERROR) {
                done = true;
                break;
            }
            if (n->nlmsg_type != RTM_NEWNEIGH || found)
                continue;
            struct ndmsg *nd = NLMSG_DATA (n);
            int alen = (int) (n->nlmsg_len - NLMSG_LENGTH (sizeof *nd));
            uint32_t dst = 0;
            const uint8_t *ll = NULL;
            if (nd->ndm_ifindex != path->ifindex || !(nd->ndm_state & valid))
                continue;
            for (struct rtattr *a = (struct rtattr *) ((char *) nd + NLMSG_ALIGN (sizeof *nd));
                 RTA_OK (a, alen); a = RTA_NEXT (a, alen)) {
                if (a->rta_type == NDA_DST && RTA_PAYLOAD (a) == 4)
                    memcpy (&dst, RTA_DATA (a), 4);
                else if (a->rta_type == NDA_LLADDR && RTA_PAYLOAD (a) == 6)
                    ll = RTA_DATA (a);
            }
            if (dst == path->nexthop && ll) {
                memcpy (path->rmac, ll, 6);
                found = true;
            }
        }
    }
    if (!found) {
        snprintf (err, errlen, "no resolved neighbour entry for %s on %s", hop, path->ifname);
        return -1;
    }
    return 0;
}

int bypass_route_lookup (uint32_t laddr, uint32_t raddr, bypass_path_t *path, char *err,
                         size_t errlen)
{
    int fd = s_nl_open ();
    int rc = -1;

    memset (path, 0, sizeof *path);
    if (fd < 0) {
        snprintf (err, errlen, "rtnetlink: %s", strerror (errno));
        return -1;
    }
    if (s_route_get (fd, laddr, raddr, path, err, errlen) == 0 && s_link (path, err, errlen) == 0 &&
        s_neigh (fd, path, err, errlen) == 0)
        rc = 0;
    close (fd);
    return rc;
}

/* Opens a nested attribute; s_nest_end closes it. */
static struct rtattr *s_nest (struct nlmsghdr *n, size_t cap, int type)
{
    struct rtattr *nest = (struct rtattr *) ((char *) n + NLMSG_ALIGN (n->nlmsg_len));
    s_add_attr (n, cap, type | NLA_F_NESTED, NULL, 0);
    return nest;
}

static void s_nest_end (struct nlmsghdr *n, struct rtattr *nest)
{
    nest->rta_len = (unsigned short) ((char *) n + NLMSG_ALIGN (n->nlmsg_len) - (char *) nest);
}

int bypass_route_ct_delete (uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport)
{
    struct {
        struct nlmsghdr n;
        struct nfgenmsg nf;
        char attrs[128];
    } req;
    char buf[1024];
    const uint8_t tcp = IPPROTO_TCP;
    int fd = s_nl_open_proto (NETLINK_NETFILTER), rc = -1;
    ssize_t len;

    if (fd < 0)
        return -1;
    memset (&req, 0, sizeof req);
    req.n.nlmsg_len = NLMSG_LENGTH (sizeof (struct nfgenmsg));
    req.n.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.n.nlmsg_seq = 3;
    req.nf.nfgen_family = AF_INET;
    req.nf.version = NFNETLINK_V0;
    struct rtattr *tuple = s_nest (&req.n, sizeof req, CTA_TUPLE_ORIG);
    struct rtattr *ip = s_nest (&req.n, sizeof req, CTA_TUPLE_IP);
    s_add_attr (&req.n, sizeof req, CTA_IP_V4_SRC, &saddr, 4);
    s_add_attr (&req.n, sizeof req, CTA_IP_V4_DST, &daddr, 4);
    s_nest_end (&req.n, ip);
    struct rtattr *proto = s_nest (&req.n, sizeof req, CTA_TUPLE_PROTO);
    s_add_attr (&req.n, sizeof req, CTA_PROTO_NUM, &tcp, 1);
    s_add_attr (&req.n, sizeof req, CTA_PROTO_SRC_PORT, &sport, 2);
    s_add_attr (&req.n, sizeof req, CTA_PROTO_DST_PORT, &dport, 2);
    s_nest_end (&req.n, proto);
    s_nest_end (&req.n, tuple);
    if (send (fd, &req, req.n.nlmsg_len, 0) < 0 || (len = recv (fd, buf, sizeof buf, 0)) < 0)
        goto done;
    for (struct nlmsghdr *n = (struct nlmsghdr *) buf; NLMSG_OK (n, (size_t) len);
         n = NLMSG_NEXT (n, len))
        if (n->nlmsg_type == NLMSG_ERROR) {
            int e = -((struct nlmsgerr *) NLMSG_DATA (n))->error;
            if (e == 0)
                rc = 1;
            else if (e == ENOENT || e == EOPNOTSUPP || e == EPROTONOSUPPORT)
                rc = 0; /* no entry, or no conntrack here */
            else
                errno = e;
            break;
        }
done:;
    int saved = errno;
    close (fd);
    errno = saved;
    return rc;
}
