/* ingress_transparent: the transparent TCP front end: connections that an iptables
 * REDIRECT rule sent here go to their original destination (SO_ORIGINAL_DST), with no
 * request head and nothing the application has to know. */
#include "hms_log.h"
#include "ingress_int.h"

#include <stdbool.h>
#include <string.h>
#include <unistd.h>

/* True when dst is the socket's own local address: a connection made straight to the
 * transparent port, not redirected (once the nat table is in use, conntrack reports such
 * a connection's "original" destination as the listener itself). Only a destination on the
 * listener's port can be. */
static bool s_is_self (const ingress_worker_t *w, int fd, const hms_addr_t *dst)
{
    if (hms_addr_port (dst) != w->transparent_port)
        return false;
    hms_addr_t local;
    local.len = sizeof local.ss;
    if (getsockname (fd, (struct sockaddr *) &local.ss, &local.len) != 0)
        return false;
    hms_addr_unmap (&local); /* an IPv4 connection on a dual-stack listener */
    char a[64], b[64];
    return hms_addr_port (&local) == hms_addr_port (dst) &&
           strcmp (hms_addr_ip (&local, a, sizeof a), hms_addr_ip (dst, b, sizeof b)) == 0;
}

void ingress_transparent_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer)
{
    hms_addr_t dst;
    char peer_ip[64], host[64];
    hms_addr_ip (peer, peer_ip, sizeof peer_ip);
    if (hms_net_original_dst (fd, &dst) != 0 || s_is_self (w, fd, &dst)) {
        hms_info ("transparent connection from %s was not redirected here (connect to the "
                  "target, with an iptables REDIRECT rule in the path): closed",
                  peer_ip);
        close (fd);
        return;
    }
    ingress_flow_req_t req = {.front = INGRESS_FRONT_TRANSPARENT,
                              .client_fd = fd,
                              .peer_ip = peer_ip,
                              .host = hms_addr_ip (&dst, host, sizeof host),
                              .port = hms_addr_port (&dst)};
    ingress_flow_start (w, &req);
}
