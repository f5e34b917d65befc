/* bypass_leg: what the agent does to one of a proxy's TCP sockets: read its ends and
 * negotiated options, watch its queues, freeze it with TCP_REPAIR and read its sequence
 * numbers and clock, close it silently, and reserve its local port afterwards.
 * Needs CAP_NET_ADMIN for the TCP_REPAIR parts. */
#ifndef HMS_BYPASS_LEG_H_INCLUDED
#define HMS_BYPASS_LEG_H_INCLUDED

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    struct sockaddr_in local, peer;
    /* the proxy's end as the peer addresses it: local, unless a NAT rule (REDIRECT of a
     * transparent front) sent the connection here: then the original destination
     * (bypass_leg_addressed) */
    struct sockaddr_in wire;
    bool timestamps, sack, ecn, wscale;
    uint8_t snd_wscale; /* scale of the windows the peer advertises */
    uint8_t rcv_wscale; /* scale of the windows this socket advertises */
    uint32_t advmss;    /* the MSS this socket advertised (largest segment the peer sends) */
    uint32_t snd_mss;
    uint32_t rtt_us; /* smoothed RTT to the peer */
    int reuseaddr;   /* SO_REUSEADDR as the proxy left it (TCP_REPAIR changes it) */
} bypass_leg_info_t;

/* Reads fd's ends and options. 0, or -1 with *reason (a refusal reason: "not_tcp4",
 * "not_established") and detail. */
int bypass_leg_inspect (int fd, bypass_leg_info_t *info, const char **reason, char *detail,
                        size_t len);

/* For an accepted socket: sets info->wire to the destination the peer connected to
 * (SO_ORIGINAL_DST) when a NAT rule changed it. Returns true when it differs from local. */
bool bypass_leg_addressed (int fd, bypass_leg_info_t *info);

/* Bytes not yet acknowledged by the peer (SIOCOUTQ) and not yet read (SIOCINQ). 0 / -1. */
int bypass_leg_queues (int fd, int *unacked, int *unread);

/* Makes the peer send a segment now (a window probe, sent on leaving repair mode), so that
 * its current TSval can be observed; SO_REUSEADDR is set back to reuseaddr. 0 / -1 (errno). */
int bypass_leg_probe (int fd, int reuseaddr);

/* Enters / leaves TCP_REPAIR mode (leaving sends nothing, and gives SO_REUSEADDR back the
 * value reuseaddr that entering changed). 0 / -1 (errno). */
int bypass_leg_freeze (int fd);
int bypass_leg_thaw (int fd, int reuseaddr);

/* In repair mode: the next sequence number to send (the send queue is empty) and the next
 * expected from the peer. 0 / -1 (errno). */
int bypass_leg_seq (int fd, uint32_t *snd_nxt, uint32_t *rcv_nxt);
/* In repair mode: the socket's timestamp clock (TCP_TIMESTAMP). 0 / -1. */
int bypass_leg_clock (int fd, uint32_t *ts);

/* In repair mode: takes the connection out of the kernel's tables without a FIN or RST
 * (connect AF_UNSPEC; other holders of the descriptor see it closed). 0 / -1 (errno). */
int bypass_leg_disconnect (int fd);

/* A bound, non-listening socket on local (address and port), so that no new connection of
 * this host takes the spliced flow's port. Returns it, or -1 (errno EADDRINUSE: another
 * socket, e.g. the proxy's listener, holds it already). Caller owns return value. */
int bypass_leg_reserve (const struct sockaddr_in *local);

/* The network namespace cookie of the socket (SO_NETNS_COOKIE), 0 when unknown. */
uint64_t bypass_leg_netns_cookie (int fd);

#endif
