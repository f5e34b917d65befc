/* hermes-bench-target: the server end of the data-path benchmark (datapath.py).
 *
 *   hermes-bench-target --listen HOST:PORT
 *
 * One thread, one epoll loop, any number of connections (RLIMIT_NOFILE is raised to the
 * hard limit). Each connection starts with a bench_hdr_t from hermes-pingpong that says
 * what to do (echo, sink, source, an HTTPS-like RPC: see bench_proto.h). Prints
 * "port N" on stdout once it listens (PORT 0 picks a free port), runs until SIGTERM or
 * SIGINT, then prints its counters as one JSON line. */
#include "bench_net.h"
#include "bench_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_IO (256 * 1024)

typedef struct {
    int fd;
    uint8_t hdr[sizeof (bench_hdr_t)];
    size_t hdr_len;
    bench_hdr_t h;
    int step;          /* RPC: 0 read a, 1 send b, 2 read c, 3 send d, 4 wait for the close */
    uint64_t need_in;  /* bytes still to read in this step (SINK, RPC) */
    uint64_t need_out; /* bytes still to send from the zero buffer (SOURCE, RPC) */
    uint64_t early;    /* RPC: bytes of step 2 that came while step 1 was being sent */
    char *pend;        /* bytes to send before anything else (echo rest, sink answer) */
    size_t pend_len, pend_off;
    uint32_t events;
} s_conn_t;

static volatile sig_atomic_t s_stop;
static int s_ep;
static char s_zero[S_IO];
static uint64_t s_accepted, s_closed, s_bad, s_bytes_in, s_bytes_out, s_live, s_live_max;

static void s_on_signal (int sig)
{
    s_stop = 1;
}

static void s_close (s_conn_t *c)
{
    epoll_ctl (s_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close (c->fd);
    free (c->pend);
    free (c);
    s_closed++;
    s_live--;
}

static void s_want (s_conn_t *c)
{
    uint32_t ev = 0;
    bool pending = c->pend_len > c->pend_off || c->need_out > 0;
    /* an echo with unsent bytes reads no more: back-pressure to the client */
    if (!(pending && c->h.op == BENCH_ECHO))
        ev |= EPOLLIN;
    if (pending)
        ev |= EPOLLOUT;
    if (ev != c->events) {
        struct epoll_event e = {.events = ev, .data.ptr = c};
        epoll_ctl (s_ep, EPOLL_CTL_MOD, c->fd, &e);
        c->events = ev;
    }
}

static void s_queue (s_conn_t *c, const void *data, size_t len)
{
    size_t rest = c->pend_len - c->pend_off;
    char *p = malloc (rest + len);
    if (!p)
        abort ();
    if (rest)
        memcpy (p, c->pend + c->pend_off, rest);
    memcpy (p + rest, data, len);
    free (c->pend);
    c->pend = p;
    c->pend_off = 0;
    c->pend_len = rest + len;
}

/* Writes what is pending; -1 when the connection failed. */
static int s_flush (s_conn_t *c)
{
    while (c->pend_off < c->pend_len) {
        ssize_t n = send (c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL);
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->pend_off += (size_t) n;
        s_bytes_out += (uint64_t) n;
    }
    free (c->pend);
    c->pend = NULL;
    c->pend_len = c->pend_off = 0;
    while (c->need_out > 0) {
        size_t want = c->need_out < S_IO ? (size_t) c->need_out : S_IO;
        ssize_t n = send (c->fd, s_zero, want, MSG_NOSIGNAL);
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->need_out -= (uint64_t) n;
        s_bytes_out += (uint64_t) n;
    }
    if (c->h.op == BENCH_RPC && (c->step == 1 || c->step == 3)) {
        c->step++;
        if (c->step == 2) {
            c->need_in = c->h.c > c->early ? c->h.c - c->early : 0;
            c->early = 0;
            if (c->need_in == 0) {
                c->step = 3;
                c->need_out = c->h.d;
                return s_flush (c);
            }
        }
    }
    return 0;
}

/* Bytes that arrived after the header, in the role the header set. */
static int s_consume (s_conn_t *c, const char *data, size_t len)
{
    switch (c->h.op) {
    case BENCH_ECHO:
        if (c->pend_len > c->pend_off) {
            s_queue (c, data, len);
            return 0;
        }
        {
            ssize_t n = send (c->fd, data, len, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (n < 0)
                n = 0;
            s_bytes_out += (uint64_t) n;
            if ((size_t) n < len)
                s_queue (c, data + n, len - (size_t) n);
        }
        return 0;
    case BENCH_SINK:
        if (c->need_in > 0) {
            uint64_t take = len < c->need_in ? len : c->need_in;
            c->need_in -= take;
            if (c->need_in == 0) {
                uint64_t count = c->h.a;
                s_queue (c, &count, sizeof count);
                return s_flush (c);
            }
        }
        return 0;
    case BENCH_SOURCE:
        return 0;
    case BENCH_RPC:
        while (len > 0 && (c->step == 0 || c->step == 2)) {
            uint64_t take = len < c->need_in ? len : c->need_in;
            c->need_in -= take;
            len -= (size_t) take;
            if (c->need_in == 0) {
                c->need_out = c->step == 0 ? c->h.b : c->h.d;
                c->step++;
                if (s_flush (c) < 0)
                    return -1;
            } else
                break;
        }
        if (c->step == 1)
            c->early += len;
        return 0;
    }
    return -1;
}

static int s_start (s_conn_t *c)
{
    memcpy (&c->h, c->hdr, sizeof c->h);
    if (memcmp (c->h.magic, BENCH_MAGIC, 4) != 0 || c->h.op < BENCH_ECHO || c->h.op > BENCH_RPC)
        return -1;
    if (c->h.op == BENCH_SINK) {
        c->need_in = c->h.a;
        if (c->need_in == 0) {
            uint64_t zero = 0;
            s_queue (c, &zero, sizeof zero);
        }
    } else if (c->h.op == BENCH_SOURCE)
        c->need_out = c->h.a;
    else if (c->h.op == BENCH_RPC) {
        c->step = 0;
        c->need_in = c->h.a;
        if (c->need_in == 0) {
            c->step = 1;
            c->need_out = c->h.b;
        }
    }
    return s_flush (c);
}

static void s_on_read (s_conn_t *c)
{
    static char buf[S_IO];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv (c->fd, buf, sizeof buf, 0);
        if (n == 0) {
            s_close (c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            s_close (c);
            return;
        }
        s_bytes_in += (uint64_t) n;
        size_t off = 0;
        if (c->hdr_len < sizeof c->hdr) {
            size_t take = sizeof c->hdr - c->hdr_len;
            if (take > (size_t) n)
                take = (size_t) n;
            memcpy (c->hdr + c->hdr_len, buf, take);
            c->hdr_len += take;
            off = take;
            if (c->hdr_len < sizeof c->hdr)
                continue;
            if (s_start (c) < 0) {
                s_bad++;
                s_close (c);
                return;
            }
        }
        if ((size_t) n > off && s_consume (c, buf + off, (size_t) n - off) < 0) {
            s_close (c);
            return;
        }
        if (c->h.op == BENCH_ECHO && c->pend_len > c->pend_off)
            break;
    }
    s_want (c);
}

static void s_on_write (s_conn_t *c)
{
    if (s_flush (c) < 0) {
        s_close (c);
        return;
    }
    s_want (c);
}

int main (int argc, char **argv)
{
    const char *listen_at = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--listen") == 0 && i + 1 < argc)
            listen_at = argv[++i];
        else {
            fprintf (stderr, "usage: hermes-bench-target --listen HOST:PORT\n");
            return 2;
        }
    }
    if (!listen_at) {
        fprintf (stderr, "usage: hermes-bench-target --listen HOST:PORT\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
    signal (SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (bench_parse_hostport (listen_at, &ss, &sslen)) {
        fprintf (stderr, "hermes-bench-target: bad address %s\n", listen_at);
        return 2;
    }
    int lfd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind (lfd, (struct sockaddr *) &ss, sslen) < 0 || listen (lfd, 4096) < 0) {
        fprintf (stderr, "hermes-bench-target: cannot listen on %s: %s\n", listen_at,
                 strerror (errno));
        return 1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname (lfd, (struct sockaddr *) &bound, &blen);
    uint16_t port =
        ntohs (bound.ss_family == AF_INET ? ((struct sockaddr_in *) &bound)->sin_port
                                          : ((struct sockaddr_in6 *) &bound)->sin6_port);
    printf ("port %u\n", port);
    fflush (stdout);

    s_ep = epoll_create1 (EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl (s_ep, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[256];
    while (!s_stop) {
        int n = epoll_wait (s_ep, evs, 256, 500);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            s_conn_t *c = evs[i].data.ptr;
            if (!c) {
                for (int k = 0; k < 256; k++) {
                    int fd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    s_conn_t *nc = calloc (1, sizeof *nc);
                    if (!nc)
                        abort ();
                    nc->fd = fd;
                    nc->events = EPOLLIN;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl (s_ep, EPOLL_CTL_ADD, fd, &e);
                    s_accepted++;
                    if (++s_live > s_live_max)
                        s_live_max = s_live;
                }
                continue;
            }
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
                s_close (c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                s_on_write (c);
                /* the connection may be gone: look at nothing else of this event */
                continue;
            }
            if (evs[i].events & EPOLLIN)
                s_on_read (c);
        }
    }
    printf ("{\"accepted\": %llu, \"closed\": %llu, \"bad\": %llu, \"bytes_in\": %llu, "
            "\"bytes_out\": %llu, \"live_max\": %llu}\n",
            (unsigned long long) s_accepted, (unsigned long long) s_closed,
            (unsigned long long) s_bad, (unsigned long long) s_bytes_in,
            (unsigned long long) s_bytes_out, (unsigned long long) s_live_max);
    return 0;
}
