/* bypass_client: offers connections to the bypass agent over its Unix socket and reads the
 * answers (protocol: bypass_proto.h). */
#include "bypass_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bypass_maps.h"
#include "hms_alloc.h"

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

struct bypass_client {
    int fd;
    uint8_t *buf;
    size_t cap;
};

bypass_client_t *bypass_client_new (const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    bypass_client_t *self;
    int fd;

    if (strlen (path) >= sizeof sun.sun_path) {
        snprintf (err, errlen, "bypass socket path %s is too long", path);
        return NULL;
    }
    strcpy (sun.sun_path, path);
    fd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf (err, errlen, "cannot create a Unix socket: %s", strerror (errno));
        return NULL;
    }
    /* connecting to a local listener does not block for long */
    if (connect (fd, (struct sockaddr *) &sun, sizeof sun) != 0) {
        snprintf (err, errlen,
                  "cannot reach the bypass agent at %s: %s (is hermes-bypass running?)", path,
                  strerror (errno));
        close (fd);
        return NULL;
    }
    self = hms_alloc (sizeof *self);
    self->fd = fd;
    self->cap = BYPASS_PROTO_MAX_ANSWER;
    self->buf = hms_alloc (self->cap);
    return self;
}

void bypass_client_destroy (bypass_client_t **self_p)
{
    bypass_client_t *self;

    if (!self_p || !*self_p)
        return;
    self = *self_p;
    close (self->fd);
    free (self->buf);
    free (self);
    *self_p = NULL;
}

int bypass_client_fd (const bypass_client_t *self)
{
    return self->fd;
}

static int s_tcp4_ends (int fd, struct sockaddr_in *local, struct sockaddr_in *peer)
{
    socklen_t ll = sizeof *local, pl = sizeof *peer;

    if (getsockname (fd, (struct sockaddr *) local, &ll) != 0 ||
        getpeername (fd, (struct sockaddr *) peer, &pl) != 0 || local->sin_family != AF_INET ||
        peer->sin_family != AF_INET) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

int bypass_client_offer (bypass_client_t *self, const bypass_offer_t *offer)
{
    struct sockaddr_in cl, cp, sl, sp;
    int fds[2] = {offer->client_fd, offer->server_fd};
    size_t idlen = offer->id ? strlen (offer->id) : 0;
    char *text;
    ssize_t n;

    if (idlen == 0 || idlen > BYPASS_PROTO_MAX_ID ||
        (offer->policy_rule && strlen (offer->policy_rule) > BYPASS_PROTO_MAX_RULE) ||
        s_tcp4_ends (offer->client_fd, &cl, &cp) || s_tcp4_ends (offer->server_fd, &sl, &sp)) {
        errno = EINVAL;
        return -1;
    }
    text = bypass_proto_offer_text (offer->id, &cp, &sp, offer->policy_rule, offer->relayed_up,
                                    offer->relayed_down);
    if (!text) {
        errno = EINVAL;
        return -1;
    }
    n = bypass_proto_send (self->fd, text, strlen (text), fds, 2);
    free (text);
    return n < 0 ? -1 : 0;
}

/* Makes room for the next message, whatever its size (a flow list can be large). */
static int s_reserve_next (bypass_client_t *self)
{
    ssize_t len = recv (self->fd, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);

    if (len < 0)
        return -1;
    if ((size_t) len + 1 > self->cap) {
        self->cap = (size_t) len + 1;
        self->buf = hms_realloc (self->buf, self->cap);
    }
    return 0;
}

int bypass_client_recv (bypass_client_t *self, bypass_answer_t *ans)
{
    char err[256];
    int fds[4], nfds = 0;
    ssize_t n;

    memset (ans, 0, sizeof *ans);
    for (;;) {
        if (s_reserve_next (self) != 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        n = bypass_proto_recv (self->fd, self->buf, self->cap, fds, &nfds, 4);
        for (int i = 0; i < nfds; i++)
            close (fds[i]); /* the agent sends none */
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (bypass_proto_parse_answer (self->buf, (size_t) n, ans, err, sizeof err) == 0)
            return 1;
        /* an answer we cannot read: the agent and this library disagree on the protocol */
        errno = EPROTO;
        return -1;
    }
}

bool bypass_answer_accepted (const bypass_answer_t *ans)
{
    return strcmp (ans->result, "accepted") == 0;
}

static int64_t s_now_ms (void)
{
    struct timespec ts;

    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int bypass_client_query (bypass_client_t *self, const char *op, int timeout_ms,
                         bypass_answer_t *ans)
{
    static unsigned counter;
    char text[160], id[32];
    int64_t deadline = s_now_ms () + timeout_ms;

    snprintf (id, sizeof id, "q-%d-%u", (int) getpid (), ++counter);
    snprintf (text, sizeof text, "{\"v\":%d,\"op\":\"%s\",\"id\":\"%s\"}", BYPASS_PROTO_VERSION, op,
              id);
    if (bypass_proto_send (self->fd, text, strlen (text), NULL, 0) < 0)
        return -1;
    for (;;) {
        int64_t left = deadline - s_now_ms ();
        struct pollfd p = {self->fd, POLLIN, 0};
        int rc;

        if (left <= 0)
            return 0;
        if (poll (&p, 1, (int) left) < 0 && errno != EINTR)
            return -1;
        rc = bypass_client_recv (self, ans);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            if (strcmp (ans->id, id) == 0)
                return 1;
            bypass_answer_clear (ans);
        }
    }
}

int bypass_client_unfreeze (int fd)
{
    int off = TCP_REPAIR_OFF_NO_WP;

    return setsockopt (fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off);
}

int bypass_client_dial_opts (int client_fd, hms_sockopts_t *opts)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    uint32_t strip = 0;

    memset (opts, 0, sizeof *opts);
    if (getsockopt (client_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    /* what the client announced: its segment size here plus the timestamp option */
    opts->mss = (int) ti.tcpi_snd_mss + (ti.tcpi_options & TCPI_OPT_TIMESTAMPS ? 12 : 0);
    if (!(ti.tcpi_options & TCPI_OPT_TIMESTAMPS))
        strip |= BYPASS_SHAPE_NO_TS;
    if (!(ti.tcpi_options & TCPI_OPT_SACK))
        strip |= BYPASS_SHAPE_NO_SACK;
    if (!(ti.tcpi_options & TCPI_OPT_ECN))
        strip |= BYPASS_SHAPE_NO_ECN;
    /* our own SYNs ask for ECN only where the host is set to (tcp_ecn=1): most of the time
     * NO_ECN alone changes nothing, and the socket goes unmarked */
    if (strip & ~BYPASS_SHAPE_NO_ECN)
        opts->mark = BYPASS_SHAPE_MARK | strip;
    return 0;
}

bool bypass_client_can_mark (void)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    uint32_t mark = BYPASS_SHAPE_MARK;
    bool ok = fd >= 0 && setsockopt (fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0;

    if (fd >= 0)
        close (fd);
    return ok;
}
