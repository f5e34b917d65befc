/* hms_net: non-blocking TCP sockets and addresses. */
#include "hms_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hms_addr_from (const char *host, uint16_t port, hms_addr_t *addr)
{
    memset (addr, 0, sizeof *addr);
    struct sockaddr_in *in4 = (struct sockaddr_in *) &addr->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &addr->ss;
    if (inet_pton (AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons (port);
        addr->len = sizeof *in4;
        return 0;
    }
    if (inet_pton (AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons (port);
        addr->len = sizeof *in6;
        return 0;
    }
    return -1;
}

int hms_addr_parse (const char *text, hms_addr_t *addr, char *err, size_t errlen)
{
    char host[128];
    const char *colon = strrchr (text, ':');
    if (!colon || colon == text) {
        snprintf (err, errlen, "address '%s' needs the form IP:PORT", text);
        return -1;
    }
    size_t hlen = (size_t) (colon - text);
    if (text[0] == '[' && hlen >= 2 && text[hlen - 1] == ']') {
        text++;
        hlen -= 2;
    }
    if (hlen >= sizeof host) {
        snprintf (err, errlen, "address '%s': host too long", text);
        return -1;
    }
    memcpy (host, text, hlen);
    host[hlen] = 0;
    char *end;
    long port = strtol (colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) {
        snprintf (err, errlen, "address '%s': port must be 0 to 65535", text);
        return -1;
    }
    if (strcmp (host, "*") == 0)
        snprintf (host, sizeof host, "0.0.0.0");
    if (hms_addr_from (host, (uint16_t) port, addr)) {
        snprintf (err, errlen, "address '%s': '%s' is not an IP address", text, host);
        return -1;
    }
    return 0;
}

int hms_addr_resolve_all (const char *host, uint16_t port, hms_addr_t *addrs, int max, char *err,
                          size_t errlen)
{
    if (max < 1) {
        snprintf (err, errlen, "cannot resolve '%s': no room for an address", host);
        return -1;
    }
    if (hms_addr_from (host, port, &addrs[0]) == 0)
        return 1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo (host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf (err, errlen, "cannot resolve '%s': %s", host, gai_strerror (rc));
        return -1;
    }
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof addrs[n].ss)
            continue;
        hms_addr_t a = {.len = ai->ai_addrlen};
        memcpy (&a.ss, ai->ai_addr, ai->ai_addrlen);
        hms_addr_set_port (&a, port);
        bool seen = false;
        for (int i = 0; i < n && !seen; i++)
            seen = hms_addr_same_ip (&addrs[i], &a);
        if (!seen)
            addrs[n++] = a;
    }
    freeaddrinfo (res);
    if (n == 0) {
        snprintf (err, errlen, "cannot resolve '%s': no usable address", host);
        return -1;
    }
    return n;
}

bool hms_addr_same_ip (const hms_addr_t *a, const hms_addr_t *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *) &a->ss)->sin_addr.s_addr ==
               ((const struct sockaddr_in *) &b->ss)->sin_addr.s_addr;
    if (a->ss.ss_family == AF_INET6)
        return memcmp (&((const struct sockaddr_in6 *) &a->ss)->sin6_addr,
                       &((const struct sockaddr_in6 *) &b->ss)->sin6_addr,
                       sizeof (struct in6_addr)) == 0;
    return false;
}

const char *hms_addr_ip (const hms_addr_t *addr, char *out, size_t len)
{
    if (addr->ss.ss_family == AF_INET6)
        inet_ntop (AF_INET6, &((const struct sockaddr_in6 *) &addr->ss)->sin6_addr, out,
                   (socklen_t) len);
    else
        inet_ntop (AF_INET, &((const struct sockaddr_in *) &addr->ss)->sin_addr, out,
                   (socklen_t) len);
    return out;
}

uint16_t hms_addr_port (const hms_addr_t *addr)
{
    if (addr->ss.ss_family == AF_INET6)
        return ntohs (((const struct sockaddr_in6 *) &addr->ss)->sin6_port);
    return ntohs (((const struct sockaddr_in *) &addr->ss)->sin_port);
}

void hms_addr_set_port (hms_addr_t *addr, uint16_t port)
{
    if (addr->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *) &addr->ss)->sin6_port = htons (port);
    else
        ((struct sockaddr_in *) &addr->ss)->sin_port = htons (port);
}

const char *hms_hostport (const char *host, uint16_t port, char *out, size_t len)
{
    snprintf (out, len, strchr (host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    return out;
}

const char *hms_addr_str (const hms_addr_t *addr, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    hms_addr_ip (addr, ip, sizeof ip);
    if (addr->ss.ss_family == AF_INET6)
        snprintf (out, len, "[%s]:%u", ip, hms_addr_port (addr));
    else
        snprintf (out, len, "%s:%u", ip, hms_addr_port (addr));
    return out;
}

int hms_net_listen (const hms_addr_t *addr, int backlog, char *err, size_t errlen)
{
    char text[80];
    int fd = socket (addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf (err, errlen, "socket: %s", strerror (errno));
        return -1;
    }
    int one = 1;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    hms_net_nodelay (fd); /* inherited by every accepted socket: no setsockopt per client */
    if (bind (fd, (const struct sockaddr *) &addr->ss, addr->len) < 0 || listen (fd, backlog) < 0) {
        snprintf (err, errlen, "cannot listen on %s: %s (is the port in use?)",
                  hms_addr_str (addr, text, sizeof text), strerror (errno));
        close (fd);
        return -1;
    }
    return fd;
}

int hms_net_listen_group (hms_addr_t *addr, int n, int *fds, int backlog, char *err, size_t errlen)
{
    /* SO_REUSEPORT lets this process's workers share the port, but it would also let
     * another process (same user) join, and the kernel would split the connections between
     * the two: a port someone listens on already must fail start-up. A bind without
     * SO_REUSEPORT fails on it. */
    if (hms_addr_port (addr) != 0) {
        int x = socket (addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (x >= 0) {
            setsockopt (x, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (bind (x, (const struct sockaddr *) &addr->ss, addr->len) != 0 &&
                errno == EADDRINUSE) {
                char text[128];
                hms_addr_str (addr, text, sizeof text);
                snprintf (err, errlen, "cannot listen on %s: another process listens there", text);
                close (x);
                return -1;
            }
            close (x);
        }
    }
    for (int i = 0; i < n; i++) {
        fds[i] = hms_net_listen (addr, backlog, err, errlen);
        if (fds[i] < 0) {
            while (i-- > 0)
                close (fds[i]);
            return -1;
        }
        if (i == 0) /* ":0": the others take the port the first one got */
            hms_addr_set_port (addr, hms_net_local_port (fds[0]));
    }
    return 0;
}

void hms_net_nodelay (int fd)
{
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int hms_net_connect (const hms_addr_t *addr)
{
    return hms_net_connect_opts (addr, NULL);
}

int hms_net_connect_opts (const hms_addr_t *addr, const hms_sockopts_t *opts)
{
    int fd = socket (addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    hms_net_nodelay (fd);
    if (opts && opts->mark)
        (void) setsockopt (fd, SOL_SOCKET, SO_MARK, &opts->mark, sizeof opts->mark);
    if (opts && opts->mss > 0 &&
        setsockopt (fd, IPPROTO_TCP, TCP_MAXSEG, &opts->mss, sizeof opts->mss) != 0) {
        int e = errno;
        close (fd);
        errno = e;
        return -1;
    }
    if (connect (fd, (const struct sockaddr *) &addr->ss, addr->len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close (fd);
        errno = e;
        return -1;
    }
    return fd;
}

int hms_net_connect_result (int fd)
{
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        return errno;
    return e;
}

void hms_addr_unmap (hms_addr_t *addr)
{
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *) &addr->ss;
    if (addr->ss.ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED (&a6->sin6_addr))
        return;
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = a6->sin6_port};
    memcpy (&a4.sin_addr, &a6->sin6_addr.s6_addr[12], 4);
    memset (&addr->ss, 0, sizeof addr->ss);
    memcpy (&addr->ss, &a4, sizeof a4);
    addr->len = sizeof a4;
}

int hms_net_accept (int lfd, hms_addr_t *peer)
{
    hms_addr_t tmp;
    if (!peer)
        peer = &tmp;
    peer->len = sizeof peer->ss;
    int fd = accept4 (lfd, (struct sockaddr *) &peer->ss, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        hms_addr_unmap (peer); /* an IPv4 client of a dual-stack listener is an IPv4 client */
    return fd;
}

int hms_net_original_dst (int fd, hms_addr_t *addr)
{
    memset (addr, 0, sizeof *addr);
    addr->len = sizeof addr->ss;
    if (getsockopt (fd, SOL_IP, SO_ORIGINAL_DST, &addr->ss, &addr->len) == 0)
        return 0;
    addr->len = sizeof addr->ss;
    return getsockopt (fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &addr->ss, &addr->len);
}

uint16_t hms_net_local_port (int fd)
{
    hms_addr_t a;
    a.len = sizeof a.ss;
    if (getsockname (fd, (struct sockaddr *) &a.ss, &a.len) < 0)
        return 0;
    return hms_addr_port (&a);
}
