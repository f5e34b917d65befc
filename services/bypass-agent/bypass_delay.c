/* bypass_delay: the NFQUEUE delay line of the delay ramp (see bypass_delay.h). */
#include "bypass_delay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hms_alloc.h"
#include "hms_log.h"

#ifdef BYPASS_HAVE_NFQ
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#endif

#define S_CHAIN "HERMES-BYPASS"

extern char **environ;

typedef struct {
    int64_t due_ns;
    uint64_t seq; /* arrival order among equal due times */
    uint32_t id;
    uint64_t flow;   /* 0: its verdict is given already */
    uint16_t len;    /* the segment, from its IP header on */
    uint8_t *packet; /* kept for the injection */
} s_held_t;

struct bypass_delay {
    bypass_agent_t *agent;
    struct ev_loop *loop;
    int queue, step_ms, hold_ms;
    bool ready, broken;
    s_held_t *heap;
    size_t nheld, capheld;
    uint64_t seq;
    bypass_flow_t **flows; /* in the delay line */
    size_t nflows, capflows;
    ev_io io;
    ev_timer due;
#ifdef BYPASS_HAVE_NFQ
    struct nfq_handle *h;
    struct nfq_q_handle *qh;
#endif
};

static int64_t s_now_ns (void)
{
    struct timespec ts;

    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs iptables with args (NULL-terminated, after "iptables -w -t mangle"). Exit code, or -1. */
static int s_iptables (const char *const *args)
{
    const char *argv[24] = {"iptables", "-w", "-t", "mangle"};
    posix_spawn_file_actions_t fa;
    int n = 4, status = 0;
    pid_t pid;

    for (int i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_addopen (&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen (&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp (&pid, "iptables", &fa, NULL, (char *const *) argv, environ) != 0) {
        posix_spawn_file_actions_destroy (&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy (&fa);
    while (waitpid (pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

/* The rule of one flow: its client's segments to the proxy's client-side socket. */
static int s_rule (bypass_delay_t *self, bypass_flow_t *flow, const char *op)
{
    char src[INET_ADDRSTRLEN], dst[INET_ADDRSTRLEN], sport[8], dport[8], q[12];
    const char *args[] = {op,
                          S_CHAIN,
                          "-p",
                          "tcp",
                          "-s",
                          src,
                          "-d",
                          dst,
                          "--sport",
                          sport,
                          "--dport",
                          dport,
                          "-j",
                          "NFQUEUE",
                          "--queue-num",
                          q,
                          "--queue-bypass",
                          NULL};

    inet_ntop (AF_INET, &flow->leg[BYPASS_CLIENT].peer.sin_addr, src, sizeof src);
    inet_ntop (AF_INET, &flow->leg[BYPASS_CLIENT].wire.sin_addr, dst, sizeof dst);
    snprintf (sport, sizeof sport, "%u", ntohs (flow->leg[BYPASS_CLIENT].peer.sin_port));
    snprintf (dport, sizeof dport, "%u", ntohs (flow->leg[BYPASS_CLIENT].wire.sin_port));
    snprintf (q, sizeof q, "%d", self->queue);
    return s_iptables (args);
}

/* ---- the held packets: a min-heap by due time ------------------------------------------- */

static bool s_before (const s_held_t *a, const s_held_t *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void s_push (bypass_delay_t *self, s_held_t item)
{
    size_t i;

    if (self->nheld == self->capheld) {
        self->capheld = self->capheld ? self->capheld * 2 : 256;
        self->heap = hms_realloc (self->heap, self->capheld * sizeof *self->heap);
    }
    i = self->nheld++;
    while (i > 0 && s_before (&item, &self->heap[(i - 1) / 2])) {
        self->heap[i] = self->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    self->heap[i] = item;
}

static s_held_t s_pop (bypass_delay_t *self)
{
    s_held_t top = self->heap[0], last = self->heap[--self->nheld];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= self->nheld)
            break;
        if (c + 1 < self->nheld && s_before (&self->heap[c + 1], &self->heap[c]))
            c++;
        if (!s_before (&self->heap[c], &last))
            break;
        self->heap[i] = self->heap[c];
        i = c;
    }
    if (self->nheld)
        self->heap[i] = last;
    return top;
}

static void s_verdict (bypass_delay_t *self, uint32_t id, bool accept);

/* A held segment goes on to its socket (released), or, when the splice replaced that
 * socket, into the splice (injected): to the host stack it would meet no socket and draw an
 * RST, and dropped, the client would wait for a retransmission timeout. */
static void s_release (bypass_delay_t *self, s_held_t *h, bool inject)
{
    if (h->flow && inject) {
        if (bypass_dp_inject (self->agent->dp, h->packet, h->len) == 0)
            atomic_fetch_add (&self->agent->st.delayed_injected, 1);
        else
            hms_warning ("bypass: a held segment of flow %llu could not go into its splice "
                         "(the client retransmits it): %s",
                         (unsigned long long) h->flow, strerror (errno));
        s_verdict (self, h->id, false);
    } else if (h->flow)
        s_verdict (self, h->id, true);
    h->flow = 0;
    free (h->packet);
    h->packet = NULL;
}

#ifdef BYPASS_HAVE_NFQ

static void s_verdict (bypass_delay_t *self, uint32_t id, bool accept)
{
    nfq_set_verdict (self->qh, id, accept ? NF_ACCEPT : NF_DROP, 0, NULL);
}

static void s_rearm (bypass_delay_t *self)
{
    ev_timer_stop (self->loop, &self->due);
    if (self->nheld) {
        double after = (double) (self->heap[0].due_ns - s_now_ns ()) / 1e9;
        ev_timer_set (&self->due, after > 0 ? after : 0., 0.);
        ev_timer_start (self->loop, &self->due);
    }
}

static void s_on_due (struct ev_loop *loop, ev_timer *w, int revents)
{
    bypass_delay_t *self = w->data;
    int64_t now = s_now_ns ();

    while (self->nheld && self->heap[0].due_ns <= now) {
        s_held_t h = s_pop (self);
        s_release (self, &h, false);
    }
    s_rearm (self);
}

static bypass_flow_t *s_flow_of (bypass_delay_t *self, const uint8_t *pkt, int len)
{
    const struct iphdr *ip = (const struct iphdr *) pkt;
    const struct tcphdr *tcp;

    if (len < (int) sizeof *ip || ip->version != 4 || ip->protocol != IPPROTO_TCP ||
        len < ip->ihl * 4 + 4)
        return NULL;
    tcp = (const struct tcphdr *) (pkt + ip->ihl * 4);
    for (size_t i = 0; i < self->nflows; i++) {
        const struct bypass_flow_key *k = &self->flows[i]->key[BYPASS_CLIENT];
        if (k->saddr == ip->saddr && k->daddr == ip->daddr && k->sport == tcp->source &&
            k->dport == tcp->dest)
            return self->flows[i];
    }
    return NULL;
}

static int s_on_packet (struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                        void *arg)
{
    bypass_delay_t *self = arg;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr (nfa);
    unsigned char *pkt = NULL;
    int len = nfq_get_payload (nfa, &pkt);
    bypass_flow_t *flow;
    uint32_t id;

    if (!ph)
        return 0;
    id = ntohl (ph->packet_id);
    flow = pkt ? s_flow_of (self, pkt, len) : NULL;
    if (!flow || flow->ramp_ms <= 0) {
        s_verdict (self, id, true);
        return 0;
    }
    s_held_t h = {.due_ns = s_now_ns () + (int64_t) flow->ramp_ms * 1000000,
                  .seq = ++self->seq,
                  .id = id,
                  .flow = flow->id,
                  .len = (uint16_t) len,
                  .packet = hms_alloc ((size_t) len)};
    memcpy (h.packet, pkt, (size_t) len);
    s_push (self, h);
    atomic_fetch_add (&self->agent->st.delayed_packets, 1);
    return 0;
}

/* Takes in what the kernel queued (a bounded batch). */
static void s_take_queued (bypass_delay_t *self)
{
    /* whole segments (they may go into the splice), with netlink's headers */
    static char buf[0x10000 + 4096] __attribute__ ((aligned));

    for (int budget = 256; budget > 0; budget--) {
        ssize_t n = recv (self->io.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0)
            break; /* ENOBUFS (queue overflow) included: the kernel dropped, TCP recovers */
        nfq_handle_packet (self->h, buf, (int) n);
    }
    s_rearm (self);
}

static void s_on_queue (struct ev_loop *loop, ev_io *w, int revents)
{
    s_take_queued (w->data);
}

static int s_setup (bypass_delay_t *self)
{
    const char *new_chain[] = {"-N", S_CHAIN, NULL};
    const char *flush[] = {"-F", S_CHAIN, NULL};
    const char *check[] = {"-C", "PREROUTING", "-j", S_CHAIN, NULL};
    const char *jump[] = {"-I", "PREROUTING", "-j", S_CHAIN, NULL};

    s_iptables (new_chain); /* exists already: fine */
    if (s_iptables (flush) != 0 || (s_iptables (check) != 0 && s_iptables (jump) != 0)) {
        hms_warning ("bypass: no delay ramp: cannot set up the iptables chain %s in the mangle "
                     "table (is iptables installed? are we root?)",
                     S_CHAIN);
        return -1;
    }
    self->h = nfq_open ();
    if (!self->h || nfq_bind_pf (self->h, AF_INET) < 0 ||
        !(self->qh = nfq_create_queue (self->h, (uint16_t) self->queue, s_on_packet, self)) ||
        nfq_set_mode (self->qh, NFQNL_COPY_PACKET, 0xffff) < 0) {
        hms_warning ("bypass: no delay ramp: cannot bind NFQUEUE %d: %s (another program uses "
                     "it? set delay_queue)",
                     self->queue, strerror (errno));
        return -1;
    }
    nfq_set_queue_maxlen (self->qh, 8192);
    ev_io_init (&self->io, s_on_queue, nfq_fd (self->h), EV_READ);
    self->io.data = self;
    ev_io_start (self->loop, &self->io);
    ev_init (&self->due, s_on_due);
    self->due.data = self;
    hms_info ("bypass: delay line ready queue=%d chain=mangle/%s", self->queue, S_CHAIN);
    return 0;
}

static void s_teardown (bypass_delay_t *self)
{
    const char *flush[] = {"-F", S_CHAIN, NULL};
    const char *unjump[] = {"-D", "PREROUTING", "-j", S_CHAIN, NULL};
    const char *del[] = {"-X", S_CHAIN, NULL};

    while (self->nheld) {
        s_held_t h = s_pop (self);
        s_release (self, &h, false);
    }
    ev_io_stop (self->loop, &self->io);
    ev_timer_stop (self->loop, &self->due);
    if (self->qh)
        nfq_destroy_queue (self->qh);
    if (self->h)
        nfq_close (self->h);
    s_iptables (flush);
    s_iptables (unjump);
    s_iptables (del);
}

#else /* !BYPASS_HAVE_NFQ */

static int s_setup (bypass_delay_t *self)
{
    hms_warning ("bypass: no delay ramp: hermes-bypass was built without libnetfilter_queue "
                 "(apt-get install libnetfilter-queue-dev, rebuild)");
    return -1;
}

static void s_teardown (bypass_delay_t *self)
{
}

static void s_verdict (bypass_delay_t *self, uint32_t id, bool accept)
{
}

#endif

bypass_delay_t *bypass_delay_new (bypass_agent_t *agent, struct ev_loop *loop, int queue,
                                  int step_ms, int hold_ms)
{
    bypass_delay_t *self = hms_alloc (sizeof *self);

    self->agent = agent;
    self->loop = loop;
    self->queue = queue;
    self->step_ms = step_ms;
    self->hold_ms = hold_ms;
    return self;
}

void bypass_delay_destroy (bypass_delay_t **self_p)
{
    bypass_delay_t *self;

    if (!self_p || !*self_p)
        return;
    self = *self_p;
    for (size_t i = 0; i < self->nflows; i++)
        s_rule (self, self->flows[i], "-D");
    if (self->ready)
        s_teardown (self);
    free (self->heap);
    free (self->flows);
    free (self);
    *self_p = NULL;
}

bool bypass_delay_wanted (bypass_delay_t *self, bypass_flow_t *flow)
{
    return !self->broken && flow->leg[BYPASS_SERVER].rtt_us / 1000 >= (uint32_t) self->step_ms;
}

static double s_hold_s (bypass_delay_t *self, bypass_flow_t *flow)
{
    int client_rtt = (int) (flow->leg[BYPASS_CLIENT].rtt_us / 1000);
    int hold = 2 * (client_rtt + flow->ramp_ms);

    return (double) (hold > self->hold_ms ? hold : self->hold_ms) / 1e3;
}

static void s_on_step (struct ev_loop *loop, ev_timer *w, int revents)
{
    bypass_flow_t *flow = w->data;
    bypass_delay_t *self = flow->agent->delay;

    if (flow->ramp_ms + self->step_ms > flow->ramp_target_ms) {
        /* the last step stays while the drain and freeze run; the splice replaces it */
        hms_debug ("bypass.delay", "bypass: ramp done flow=%llu delay_ms=%d target_ms=%d",
                   (unsigned long long) flow->id, flow->ramp_ms, flow->ramp_target_ms);
        bypass_flow_drain (flow);
        return;
    }
    flow->ramp_ms += self->step_ms;
    atomic_fetch_add (&flow->agent->st.ramp_steps, 1);
    ev_timer_set (&flow->timer, s_hold_s (self, flow), 0.);
    ev_timer_start (loop, &flow->timer);
}

void bypass_delay_ramp (bypass_delay_t *self, bypass_flow_t *flow)
{
    if (!self->ready) {
        if (s_setup (self) != 0) {
            self->broken = true;
            s_teardown (self);
            bypass_flow_drain (flow);
            return;
        }
        self->ready = true;
    }
    if (s_rule (self, flow, "-A") != 0) {
        hms_warning ("bypass: no delay ramp for flow %llu: iptables refused its rule",
                     (unsigned long long) flow->id);
        bypass_flow_drain (flow);
        return;
    }
    if (self->nflows == self->capflows) {
        self->capflows = self->capflows ? self->capflows * 2 : 16;
        self->flows = hms_realloc (self->flows, self->capflows * sizeof *self->flows);
    }
    self->flows[self->nflows++] = flow;
    flow->state = BYPASS_F_RAMP;
    flow->ramp_target_ms = (int) (flow->leg[BYPASS_SERVER].rtt_us / 1000);
    flow->ramp_ms = self->step_ms;
    atomic_fetch_add (&flow->agent->st.ramps, 1);
    atomic_fetch_add (&flow->agent->st.ramp_steps, 1);
    hms_debug ("bypass.delay", "bypass: ramp flow=%llu target_ms=%d step_ms=%d",
               (unsigned long long) flow->id, flow->ramp_target_ms, self->step_ms);
    ev_timer_init (&flow->timer, s_on_step, s_hold_s (self, flow), 0.);
    flow->timer.data = flow;
    ev_timer_start (self->loop, &flow->timer);
}

size_t bypass_delay_held (bypass_delay_t *self, bypass_flow_t *flow)
{
    size_t n = 0;

    if (!self->ready || flow->ramp_ms <= 0)
        return 0;
#ifdef BYPASS_HAVE_NFQ
    s_take_queued (self);
#endif
    for (size_t k = 0; k < self->nheld; k++)
        n += self->heap[k].flow == flow->id;
    return n;
}

void bypass_delay_remove (bypass_delay_t *self, bypass_flow_t *flow, bool spliced)
{
    size_t i;

    for (i = 0; i < self->nflows; i++)
        if (self->flows[i] == flow)
            break;
    if (i == self->nflows)
        return;
    self->flows[i] = self->flows[--self->nflows];
    flow->ramp_ms = 0;
    /* in arrival order; when spliced, now: later segments take the splice at once, and
     * must not overtake these */
    for (;;) {
        s_held_t *first = NULL;
        for (size_t k = 0; k < self->nheld; k++)
            if (self->heap[k].flow == flow->id && (!first || self->heap[k].seq < first->seq))
                first = &self->heap[k];
        if (!first)
            break;
        s_release (self, first, spliced);
    }
    if (s_rule (self, flow, "-D") != 0)
        hms_warning ("bypass: cannot remove the delay rule of flow %llu from mangle/%s",
                     (unsigned long long) flow->id, S_CHAIN);
}
