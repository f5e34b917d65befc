/* hms_net: sockets for the data plane: non-blocking listeners with SO_REUSEPORT (one per
 * worker thread), non-blocking connects, address parsing and printing, and the original
 * destination of a REDIRECTed connection. */
#ifndef HMS_NET_H_INCLUDED
#define HMS_NET_H_INCLUDED

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
} hms_addr_t;

/* Parses "IP:PORT", "[IPv6]:PORT" or "*:PORT" (any address) into addr; numeric only.
 * 0 or -1 with err. */
int hms_addr_parse (const char *text, hms_addr_t *addr, char *err, size_t errlen);
/* Builds addr from a numeric host and a port; -1 when host is not an IP literal. */
int hms_addr_from (const char *host, uint16_t port, hms_addr_t *addr);
/* Resolves host (a name or an IP literal) with getaddrinfo, blocking for names: up to max of
 * its addresses into addrs, in getaddrinfo's order (RFC 6724), each once, port set. How many,
 * or -1 with err. */
int hms_addr_resolve_all (const char *host, uint16_t port, hms_addr_t *addrs, int max, char *err,
                          size_t errlen);
/* True when a and b are the same address, ports aside. */
bool hms_addr_same_ip (const hms_addr_t *a, const hms_addr_t *b);
/* "1.2.3.4:80" / "[::1]:443" into out. Returns out. */
/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports for an IPv4
 * peer) becomes the IPv4 address itself; any other is left alone. */
void hms_addr_unmap (hms_addr_t *addr);
/* "host:port", or "[host]:port" for an IPv6 literal (a host with a colon), as in a URL
 * or an HTTP authority. Returns out. */
const char *hms_hostport (const char *host, uint16_t port, char *out, size_t len);
const char *hms_addr_str (const hms_addr_t *addr, char *out, size_t len);
/* The IP alone ("1.2.3.4", "::1") into out. Returns out. */
const char *hms_addr_ip (const hms_addr_t *addr, char *out, size_t len);
uint16_t hms_addr_port (const hms_addr_t *addr);
void hms_addr_set_port (hms_addr_t *addr, uint16_t port);

/* A non-blocking listening TCP socket with SO_REUSEADDR, SO_REUSEPORT and TCP_NODELAY (which
 * the sockets it accepts inherit). -1 with err. */
int hms_net_listen (const hms_addr_t *addr, int backlog, char *err, size_t errlen);
/* The n listeners of an address that n workers share (SO_REUSEPORT), made at once at
 * start-up, so that a connection never meets a port that is not, or no longer, listening.
 * A port another process listens on already fails; the port ":0" got is written into addr.
 * 0 with fds[0..n) (each worker then watches its own), or -1 with err. */
int hms_net_listen_group (hms_addr_t *addr, int n, int *fds, int backlog, char *err, size_t errlen);
/* Starts a non-blocking connect; returns the fd (connection in progress) or -1 with errno. */
int hms_net_connect (const hms_addr_t *addr);
/* Socket settings made before the SYN leaves. */
typedef struct {
    int mss;       /* > 0: advertise at most mss bytes per segment (TCP_MAXSEG) */
    uint32_t mark; /* != 0: SO_MARK (needs CAP_NET_ADMIN; when refused the socket goes
                      unmarked and the connect goes ahead) */
} hms_sockopts_t;
/* The same with opts (NULL: the kernel's defaults). */
int hms_net_connect_opts (const hms_addr_t *addr, const hms_sockopts_t *opts);
/* After the socket became writable: 0 when connected, else the connect error (errno). */
int hms_net_connect_result (int fd);
/* accept4, non-blocking (TCP_NODELAY comes from an hms_net_listen socket); -1 with errno. */
int hms_net_accept (int lfd, hms_addr_t *peer);
void hms_net_nodelay (int fd);
/* The pre-NAT destination of a connection redirected by iptables REDIRECT. 0 or -1. */
int hms_net_original_dst (int fd, hms_addr_t *addr);
/* The port a listening socket actually got (for ":0" listens). */
uint16_t hms_net_local_port (int fd);

#endif
