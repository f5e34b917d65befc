/* bench_net: small socket helpers shared by the benchmark tools (hermes-pingpong,
 * hermes-bench-target, hermes-bypass-stream). */
#ifndef BENCH_NET_H_INCLUDED
#define BENCH_NET_H_INCLUDED

#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

/* "ip:port" or "[ipv6]:port" (numeric only) into ss / len. 0 or -1. */
static inline int bench_parse_hostport (const char *text, struct sockaddr_storage *ss,
                                        socklen_t *len)
{
    char host[256];
    const char *colon = strrchr (text, ':');
    if (!colon || (size_t) (colon - text) >= sizeof host)
        return -1;
    memcpy (host, text, (size_t) (colon - text));
    host[colon - text] = 0;
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen (h) - 1] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *res;
    if (getaddrinfo (h, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy (ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo (res);
    return 0;
}

#endif
