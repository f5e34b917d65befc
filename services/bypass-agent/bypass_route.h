/* bypass_route: where the segments of one proxy leg enter and leave the host (and the
 * connection-tracking entry they leave behind once spliced): the egress
 * interface towards the peer (the kernel's route for local -> peer, like `ip route get PEER
 * from LOCAL`), that interface's MAC and MTU, and the MAC of the next hop (the peer, or the
 * route's gateway) from the neighbour table; all through rtnetlink in the caller's network
 * namespace.
 *
 * Supported: IPv4 unicast routes over Ethernet interfaces (veth, physical NICs, bridges'
 * ports seen from the proxy's side), with a resolved neighbour entry (REACHABLE, STALE,
 * DELAY, PROBE or PERMANENT: the peer has just talked to us, so there is one). The segments
 * from the peer are assumed to arrive on that same interface (symmetric routing). Not
 * supported: loopback and other non-Ethernet devices, multipath routes (the first hop is
 * used), peers that are local addresses. */
#ifndef HMS_BYPASS_ROUTE_H_INCLUDED
#define HMS_BYPASS_ROUTE_H_INCLUDED

#include <net/if.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int ifindex;
    char ifname[IF_NAMESIZE];
    int mtu;
    uint8_t lmac[6];  /* the interface's MAC */
    uint8_t rmac[6];  /* the next hop's MAC */
    uint32_t nexthop; /* the peer or the gateway (network byte order) */
} bypass_path_t;

/* Finds the path from laddr to raddr (network byte order). 0, or -1 with err saying what is
 * missing (route, neighbour, Ethernet). */
int bypass_route_lookup (uint32_t laddr, uint32_t raddr, bypass_path_t *path, char *err,
                         size_t errlen);

/* Deletes the netfilter connection-tracking entry of the TCP connection whose original
 * direction is saddr:sport -> daddr:dport (network byte order), through ctnetlink. A spliced
 * leg's segments no longer cross netfilter, so its entry would otherwise stay ESTABLISHED
 * for days (and, for a connection that a REDIRECT rule sent to the proxy, keep the NAT
 * mapping). 1 deleted, 0 there was none (or no conntrack in this namespace), -1 (errno). */
int bypass_route_ct_delete (uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport);

#endif
