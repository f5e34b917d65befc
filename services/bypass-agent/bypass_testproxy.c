/* hermes-bypass-testproxy: a small TCP relay for the bypass integration tests, and an example
 * of bypass_client in a proxy's event loop. It accepts clients, connects each to the server,
 * relays both ways, and once a complete line has crossed in each direction offers the
 * connection to hermes-bypass; refused (or the agent gone), it goes on relaying.
 *
 *   hermes-bypass-testproxy --listen IP:PORT --server IP:PORT [--agent PATH] [--rule NAME]
 *
 * Prints one JSON line per event on stdout: {"event":"ready"}, {"event":"offered",...},
 * {"event":"accepted",...}, {"event":"refused",...,"reason":...}, {"event":"closed",...}
 * with the client's address and the bytes the proxy itself relayed ("up": client -> server,
 * "down"); on SIGUSR1 {"event":"totals","up":...,"down":...} with its totals, and the same
 * as "exit" on SIGTERM. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bypass_client.h"

#define BUF  (64 * 1024)
#define MAXC 4096

typedef struct {
    int fd[2]; /* 0: client leg, 1: server leg */
    bool connected, offered, tried, eof[2], shut[2];
    bool line[2];        /* a newline crossed in direction d */
    uint8_t buf[2][BUF]; /* direction d: read from fd[d], written to fd[1 - d] */
    size_t len[2], off[2];
    uint64_t relayed[2];
    char id[32];
    char client[32]; /* the client's address */
} conn_t;

static conn_t *s_conns[MAXC];
static int s_ep;
static bypass_client_t *s_agent;
static const char *s_agent_path, *s_rule;
static uint64_t s_total[2];

static int s_parse (const char *text, struct sockaddr_in *sa)
{
    return bypass_proto_addr_parse (text, sa);
}

static void s_event (const conn_t *c, const char *event, const char *extra)
{
    printf ("{\"event\":\"%s\",\"id\":\"%s\",\"client\":\"%s\",\"up\":%llu,\"down\":%llu%s%s}\n",
            event, c->id, c->client, (unsigned long long) c->relayed[0],
            (unsigned long long) c->relayed[1], extra ? "," : "", extra ? extra : "");
    fflush (stdout);
}

static conn_t *s_find (const char *id)
{
    for (int i = 0; i < MAXC; i++)
        if (s_conns[i] && strcmp (s_conns[i]->id, id) == 0)
            return s_conns[i];
    return NULL;
}

/* What the loop waits for on the connection, from its buffers and state. */
static void s_arm (conn_t *c)
{
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = {.events = 0, .data.ptr = c};
        int d_in = i, d_out = 1 - i; /* reading leg i feeds direction i; writing leg i drains 1-i */

        if (c->offered)
            ev.events = 0;
        else {
            if (!c->connected && i == 1)
                ev.events = EPOLLOUT;
            else {
                if (c->connected && !c->eof[d_in] && c->len[d_in] == 0)
                    ev.events |= EPOLLIN;
                if (c->len[d_out] > c->off[d_out])
                    ev.events |= EPOLLOUT;
            }
        }
        ev.data.u64 = ((uint64_t) (uintptr_t) c << 1) | (uint64_t) i;
        epoll_ctl (s_ep, EPOLL_CTL_MOD, c->fd[i], &ev);
    }
}

static void s_close (conn_t *c, const char *event, const char *extra)
{
    s_event (c, event, extra);
    for (int i = 0; i < MAXC; i++)
        if (s_conns[i] == c)
            s_conns[i] = NULL;
    for (int i = 0; i < 2; i++) {
        epoll_ctl (s_ep, EPOLL_CTL_DEL, c->fd[i], NULL);
        close (c->fd[i]);
    }
    free (c);
}

static void s_maybe_offer (conn_t *c)
{
    bypass_offer_t offer = {c->id, c->fd[0], c->fd[1], s_rule, c->relayed[0], c->relayed[1]};

    if (c->offered || c->tried || !s_agent || !c->line[0] || !c->line[1] || c->len[0] ||
        c->len[1] || c->eof[0] || c->eof[1])
        return;
    if (bypass_client_offer (s_agent, &offer) != 0) {
        char extra[96];
        snprintf (extra, sizeof extra, "\"reason\":\"offer failed: %s\"", strerror (errno));
        s_event (c, "not_offered", extra);
        c->tried = true;
        return;
    }
    c->offered = c->tried = true; /* one offer per connection */
    s_event (c, "offered", NULL);
}

/* Moves bytes of direction d (leg d -> leg 1-d). Returns -1 when the connection ended. */
static int s_pump (conn_t *c, int d)
{
    if (c->len[d] > c->off[d]) {
        ssize_t w = send (c->fd[1 - d], c->buf[d] + c->off[d], c->len[d] - c->off[d],
                          MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            return -1;
        if (w > 0) {
            c->off[d] += (size_t) w;
            c->relayed[d] += (uint64_t) w;
            s_total[d] += (uint64_t) w;
        }
        if (c->off[d] == c->len[d])
            c->off[d] = c->len[d] = 0;
    }
    if (c->eof[d] && c->len[d] == 0 && !c->shut[d]) {
        shutdown (c->fd[1 - d], SHUT_WR);
        c->shut[d] = true;
    }
    return 0;
}

static int s_read (conn_t *c, int d)
{
    ssize_t n = recv (c->fd[d], c->buf[d], BUF, MSG_DONTWAIT);

    if (n == 0) {
        c->eof[d] = true;
        return 0;
    }
    if (n < 0)
        return errno == EAGAIN ? 0 : -1;
    c->len[d] = (size_t) n;
    c->off[d] = 0;
    if (memchr (c->buf[d], '\n', (size_t) n))
        c->line[d] = true;
    return 0;
}

static void s_on_conn (conn_t *c, int leg, uint32_t events)
{
    if (!c->connected && leg == 1) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt (c->fd[1], SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            s_close (c, "closed", "\"reason\":\"server unreachable\"");
            return;
        }
        c->connected = true;
        s_arm (c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof[leg] && c->len[leg] == 0 &&
        s_read (c, leg) != 0) {
        s_close (c, "closed", "\"reason\":\"reset\"");
        return;
    }
    for (int d = 0; d < 2; d++)
        if (s_pump (c, d) != 0) {
            s_close (c, "closed", "\"reason\":\"reset\"");
            return;
        }
    if (c->shut[0] && c->shut[1]) {
        s_close (c, "closed", NULL);
        return;
    }
    s_maybe_offer (c);
    s_arm (c);
}

static void s_accept (int lfd, const struct sockaddr_in *server)
{
    static unsigned next;

    for (;;) {
        int cfd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), sfd, slot;
        conn_t *c;

        if (cfd < 0)
            return;
        for (slot = 0; slot < MAXC && s_conns[slot]; slot++)
            ;
        sfd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (slot == MAXC || sfd < 0 ||
            (connect (sfd, (const struct sockaddr *) server, sizeof *server) != 0 &&
             errno != EINPROGRESS)) {
            close (cfd);
            if (sfd >= 0)
                close (sfd);
            continue;
        }
        c = calloc (1, sizeof *c);
        {
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            getpeername (cfd, (struct sockaddr *) &peer, &pl);
            bypass_proto_addr_str (&peer, c->client, sizeof c->client);
        }
        c->fd[0] = cfd;
        c->fd[1] = sfd;
        snprintf (c->id, sizeof c->id, "c%u", ++next);
        s_conns[slot] = c;
        for (int i = 0; i < 2; i++) {
            struct epoll_event ev = {.events = 0};
            ev.data.u64 = ((uint64_t) (uintptr_t) c << 1) | (uint64_t) i;
            epoll_ctl (s_ep, EPOLL_CTL_ADD, c->fd[i], &ev);
        }
        s_arm (c);
    }
}

/* Every offer without an answer is refused when the agent goes away. */
static void s_agent_lost (void)
{
    bypass_client_destroy (&s_agent);
    for (int i = 0; i < MAXC; i++) {
        conn_t *c = s_conns[i];
        if (c && c->offered) {
            bypass_client_unfreeze (c->fd[0]);
            bypass_client_unfreeze (c->fd[1]);
            c->offered = false;
            s_event (c, "refused", "\"reason\":\"agent_gone\"");
            s_arm (c);
        }
    }
}

static void s_on_agent (void)
{
    bypass_answer_t ans;
    int rc;

    while ((rc = bypass_client_recv (s_agent, &ans)) == 1) {
        conn_t *c = s_find (ans.id);
        char extra[512];

        if (!c || !c->offered) {
            bypass_answer_clear (&ans);
            continue;
        }
        if (bypass_answer_accepted (&ans)) {
            json_t *flow = json_object_get (ans.body, "flow");
            snprintf (extra, sizeof extra, "\"flow\":%lld,\"agent_up\":%llu,\"agent_down\":%llu",
                      (long long) json_integer_value (flow), (unsigned long long) ans.relayed_up,
                      (unsigned long long) ans.relayed_down);
            bypass_answer_clear (&ans);
            s_close (c, "accepted", extra);
            continue;
        }
        /* refused: the agent's unsent bytes first, then relaying as before */
        snprintf (extra, sizeof extra,
                  "\"reason\":\"%s\",\"detail\":\"%.300s\",\"agent_up\":%llu,\"agent_down\":%llu,"
                  "\"unsent\":%zu",
                  ans.reason, ans.detail, (unsigned long long) ans.relayed_up,
                  (unsigned long long) ans.relayed_down, ans.unsent_up_len + ans.unsent_down_len);
        for (char *q = extra; *q; q++)
            if (*q == '\\')
                *q = '/';
        if (ans.unsent_up_len)
            memcpy (c->buf[0], ans.unsent_up, ans.unsent_up_len);
        c->len[0] = ans.unsent_up_len;
        c->off[0] = 0;
        if (ans.unsent_down_len)
            memcpy (c->buf[1], ans.unsent_down, ans.unsent_down_len);
        c->len[1] = ans.unsent_down_len;
        c->off[1] = 0;
        c->offered = false;
        bypass_answer_clear (&ans);
        s_event (c, "refused", extra);
        s_on_conn (c, 0, 0);
    }
    if (rc < 0)
        s_agent_lost ();
}

int main (int argc, char **argv)
{
    struct sockaddr_in listen_sa, server_sa;
    const char *listen_text = NULL, *server_text = NULL;
    struct epoll_event ev;
    sigset_t mask;
    int lfd, sfd, one = 1;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp (argv[i], "--listen") == 0)
            listen_text = argv[i + 1];
        else if (strcmp (argv[i], "--server") == 0)
            server_text = argv[i + 1];
        else if (strcmp (argv[i], "--agent") == 0)
            s_agent_path = argv[i + 1];
        else if (strcmp (argv[i], "--rule") == 0)
            s_rule = argv[i + 1];
    }
    if (!listen_text || !server_text || s_parse (listen_text, &listen_sa) ||
        s_parse (server_text, &server_sa)) {
        fprintf (stderr, "usage: %s --listen IP:PORT --server IP:PORT [--agent PATH] [--rule R]\n",
                 argv[0]);
        return 2;
    }
    s_ep = epoll_create1 (EPOLL_CLOEXEC);
    lfd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind (lfd, (struct sockaddr *) &listen_sa, sizeof listen_sa) != 0 ||
        listen (lfd, 512) != 0) {
        fprintf (stderr, "testproxy: listen %s: %s\n", listen_text, strerror (errno));
        return 1;
    }
    if (s_agent_path) {
        char err[256];
        s_agent = bypass_client_new (s_agent_path, err, sizeof err);
        if (!s_agent) {
            fprintf (stderr, "testproxy: %s\n", err);
            return 1;
        }
        ev.events = EPOLLIN;
        ev.data.u64 = 2;
        epoll_ctl (s_ep, EPOLL_CTL_ADD, bypass_client_fd (s_agent), &ev);
    }
    sigemptyset (&mask);
    sigaddset (&mask, SIGTERM);
    sigaddset (&mask, SIGINT);
    sigaddset (&mask, SIGUSR1);
    sigprocmask (SIG_BLOCK, &mask, NULL);
    signal (SIGPIPE, SIG_IGN);
    sfd = signalfd (-1, &mask, SFD_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    epoll_ctl (s_ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.u64 = 4;
    epoll_ctl (s_ep, EPOLL_CTL_ADD, sfd, &ev);
    printf ("{\"event\":\"ready\"}\n");
    fflush (stdout);
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait (s_ep, evs, 64, -1);

        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == 0)
                s_accept (lfd, &server_sa);
            else if (tag == 2) {
                if (s_agent)
                    s_on_agent ();
            } else if (tag == 4) {
                struct signalfd_siginfo si;
                bool done = read (sfd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGUSR1;
                printf ("{\"event\":\"%s\",\"up\":%llu,\"down\":%llu}\n", done ? "exit" : "totals",
                        (unsigned long long) s_total[0], (unsigned long long) s_total[1]);
                fflush (stdout);
                if (done)
                    return 0;
            } else {
                conn_t *c = (conn_t *) (uintptr_t) (tag >> 1);
                bool live = false;
                for (int k = 0; k < MAXC && !live; k++)
                    live = s_conns[k] == c;
                if (live && !c->offered)
                    s_on_conn (c, (int) (tag & 1), evs[i].events);
            }
        }
    }
}
