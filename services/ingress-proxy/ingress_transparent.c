/* ingress_transparent: the transparent TCP front end: connections that an iptables
 * REDIRECT rule sent here go to their original destination (SO_ORIGINAL_DST), with no
 * request head and nothing the application has to know. */
#include "hms_log.h"
#include "ingress_int.h"

#include <unistd.h>

void ingress_transparent_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer)
{
    hms_addr_t dst;
    char peer_ip[64], host[64];
    hms_addr_ip (peer, peer_ip, sizeof peer_ip);
    if (hms_net_original_dst (fd, &dst) != 0) {
        hms_info ("transparent connection from %s has no original destination (not "
                  "redirected?): closed",
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
