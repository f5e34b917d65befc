/* bypass_flow: one connection's offload, from the offer to its removal.
 *
 *   offer --checks--> [ramp] --> draining --quiet--> freeze --> spliced --FIN+FIN--> linger
 *                                   ^                  |            |                   |
 *                                   +--data arrived----+            +--RST/idle/SYN-----+-->
 * removed
 *
 * checks   both legs IPv4 TCP and established, the header names the sockets' peers, same
 *          network namespace, policy, timestamps / SACK / ECN on both legs or on neither,
 *          MSS within the other leg's MTU, an Ethernet egress with a resolved neighbour per
 *          peer, data plane present; then the data plane observes both legs (to learn the
 *          peers' last TSval) and, with timestamps, each leg sends a window probe so that
 *          its peer answers with a fresh TSval.
 * draining the agent relays whatever still arrives (the proxy stopped), never holding a byte
 *          (peek, write, consume what was written); quiet means: SIOCOUTQ = 0 and SIOCINQ = 0
 *          on both legs, and (with timestamps) a segment observed from both peers.
 * freeze   TCP_REPAIR on both, queues checked again, sequence numbers and clocks read, the
 *          splice computed (bypass_dp_splice_pair) and installed, then the receive
 *          sequence numbers read again: when a segment slipped in meanwhile, the splice is
 *          undone, the legs thawed and the drain goes on (at most offload_retries times,
 *          then the offer is refused "busy": the proxy resumes relaying).
 *          Otherwise both sockets are disconnected in repair mode (no FIN, no RST), their
 *          local ports are reserved by bound sockets, and the proxy hears "accepted".
 * removal  FIN from both peers plus fin_linger_ms, an RST, a SYN on the 4-tuple, or
 *          idle_timeout_ms without a segment (bypass_flow_state.last_ns).
 */
#include "bypass_int.h"
#include "bypass_delay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hms_alloc.h"
#include "hms_log.h"
#include "hms_time.h"

#define S_TICK_S         0.003 /* drain checks */
#define S_PROBE_AGAIN_MS 100   /* window probe again when no segment answered it */

const char *const bypass_reason_names[BYPASS_R_MAX] = {
    [BYPASS_R_MALFORMED] = "malformed",
    [BYPASS_R_NOT_TCP4] = "not_tcp4",
    [BYPASS_R_NOT_ESTABLISHED] = "not_established",
    [BYPASS_R_MISMATCH] = "mismatch",
    [BYPASS_R_NETNS] = "netns",
    [BYPASS_R_POLICY] = "policy",
    [BYPASS_R_TIMESTAMPS] = "timestamps",
    [BYPASS_R_SACK] = "sack",
    [BYPASS_R_ECN] = "ecn",
    [BYPASS_R_MSS] = "mss",
    [BYPASS_R_ROUTE] = "route",
    [BYPASS_R_DATAPLANE] = "dataplane",
    [BYPASS_R_CAPACITY] = "capacity",
    [BYPASS_R_DUPLICATE] = "duplicate",
    [BYPASS_R_BUSY] = "busy",
    [BYPASS_R_CLOSED] = "closed",
    [BYPASS_R_REPAIR] = "repair",
    [BYPASS_R_SHUTDOWN] = "shutting_down",
};

const char *const bypass_cleanup_names[BYPASS_C_MAX] = {
    [BYPASS_C_FIN] = "fin",     [BYPASS_C_RST] = "rst",           [BYPASS_C_IDLE] = "idle",
    [BYPASS_C_STALE] = "stale", [BYPASS_C_SHUTDOWN] = "shutdown",
};

const char *bypass_flow_state_name (bypass_flow_state_t state)
{
    switch (state) {
    case BYPASS_F_RAMP:
        return "ramping";
    case BYPASS_F_DRAINING:
        return "draining";
    case BYPASS_F_SPLICED:
        return "spliced";
    case BYPASS_F_LINGER:
        return "closing";
    }
    return "?";
}

static int64_t s_mono_ns (void)
{
    struct timespec ts;

    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *s_addr (const struct sockaddr_in *sa, char *out, size_t len)
{
    return bypass_proto_addr_str (sa, out, len);
}

/* ---- list, hash, teardown -------------------------------------------------------------- */

static void s_link (bypass_flow_t *flow)
{
    bypass_agent_t *agent = flow->agent;
    size_t h = flow->id % BYPASS_HASH_SIZE;

    flow->next = agent->flows;
    if (agent->flows)
        agent->flows->prev = flow;
    agent->flows = flow;
    flow->hnext = agent->hash[h];
    agent->hash[h] = flow;
    agent->nflows++;
}

static void s_unlink (bypass_flow_t *flow)
{
    bypass_agent_t *agent = flow->agent;
    bypass_flow_t **pp = &agent->hash[flow->id % BYPASS_HASH_SIZE];

    if (!flow->prev && agent->flows != flow)
        return; /* never linked */
    if (flow->prev)
        flow->prev->next = flow->next;
    else
        agent->flows = flow->next;
    if (flow->next)
        flow->next->prev = flow->prev;
    while (*pp && *pp != flow)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = flow->hnext;
    flow->prev = flow->next = NULL;
    agent->nflows--;
}

bypass_flow_t *bypass_agent_find (bypass_agent_t *self, uint64_t id)
{
    for (bypass_flow_t *f = self->hash[id % BYPASS_HASH_SIZE]; f; f = f->hnext)
        if (f->id == id)
            return f;
    return NULL;
}

static void s_stop_io (bypass_flow_t *flow)
{
    struct ev_loop *loop = flow->agent->loop;

    for (int d = 0; d < 2; d++) {
        ev_io_stop (loop, &flow->rio[d]);
        ev_io_stop (loop, &flow->wio[d]);
    }
    ev_timer_stop (loop, &flow->timer);
}

static void s_free (bypass_flow_t *flow)
{
    s_stop_io (flow);
    s_unlink (flow);
    for (int i = 0; i < 2; i++) {
        if (flow->fd[i] >= 0)
            close (flow->fd[i]);
        if (flow->reserve_fd[i] >= 0)
            close (flow->reserve_fd[i]);
        free (flow->buf[i]);
    }
    json_decref (flow->offer_id);
    free (flow);
}

static json_t *s_answer_body (bypass_flow_t *flow, const char *result)
{
    return json_pack ("{s:O, s:s, s:{s:I, s:I}}", "id",
                      flow->offer_id ? flow->offer_id : json_null (), "result", result, "relayed",
                      "up", (json_int_t) flow->agent_relayed[0], "down",
                      (json_int_t) flow->agent_relayed[1]);
}

/* Removes the data plane entries of an offer in progress (observe or an undone splice). */
static void s_dp_forget (bypass_flow_t *flow)
{
    if (!flow->agent->dp || flow->state == BYPASS_F_SPLICED || flow->state == BYPASS_F_LINGER)
        return;
    for (int i = 0; i < 2; i++)
        if (flow->key[i].sport)
            bypass_dp_flow_del (flow->agent->dp, &flow->key[i]);
}

/* Gives the connection back to the proxy: thaws the legs, forgets the data plane entries and
 * the delay rule, answers "refused" with the reason, frees the flow. */
static void s_refuse (bypass_flow_t *flow, bypass_reason_t reason, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void s_refuse (bypass_flow_t *flow, bypass_reason_t reason, const char *fmt, ...)
{
    bypass_agent_t *agent = flow->agent;
    char detail[256], c[32] = "?", s[32] = "?";
    json_t *body;
    va_list ap;

    va_start (ap, fmt);
    vsnprintf (detail, sizeof detail, fmt, ap);
    va_end (ap);
    if (flow->frozen) {
        for (int i = 0; i < 2; i++)
            if (flow->fd[i] >= 0)
                bypass_leg_thaw (flow->fd[i], flow->leg[i].reuseaddr);
        flow->frozen = false;
    }
    s_dp_forget (flow);
    if (agent->delay)
        bypass_delay_remove (agent->delay, flow, false);
    if (flow->state == BYPASS_F_RAMP || flow->state == BYPASS_F_DRAINING)
        atomic_fetch_sub (&agent->st.draining, 1);
    atomic_fetch_add (&agent->st.refused, 1);
    atomic_fetch_add (&agent->st.refused_by[reason], 1);
    if (flow->leg[0].peer.sin_family)
        s_addr (&flow->leg[0].peer, c, sizeof c);
    if (flow->leg[1].peer.sin_family)
        s_addr (&flow->leg[1].peer, s, sizeof s);
    hms_info ("bypass: offer refused flow=%llu client=%s server=%s reason=%s detail=\"%s\" "
              "relayed_up=%llu relayed_down=%llu",
              (unsigned long long) flow->id, c, s, bypass_reason_names[reason], detail,
              (unsigned long long) flow->agent_relayed[0],
              (unsigned long long) flow->agent_relayed[1]);
    body = s_answer_body (flow, "refused");
    json_object_set_new (body, "reason", json_string (bypass_reason_names[reason]));
    json_object_set_new (body, "detail", json_string (detail));
    bypass_agent_answer (agent, flow->conn, body, NULL, 0, NULL, 0);
    s_free (flow);
}

/* ---- removal of a spliced flow ---------------------------------------------------------- */

static void s_read_counters (bypass_flow_t *flow)
{
    struct bypass_flow_val v;

    if (!flow->agent->dp)
        return;
    for (int i = 0; i < 2; i++)
        if (bypass_dp_flow_lookup (flow->agent->dp, &flow->key[i], &v) == 0 &&
            v.action == BYPASS_ACT_SPLICE && v.cookie == flow->id)
            flow->last[i] = v.st;
}

static void s_remove (bypass_flow_t *flow, bypass_cleanup_t why)
{
    bypass_agent_t *agent = flow->agent;
    bypass_closed_t *rec = &agent->closed[agent->nclosed++ % BYPASS_CLOSED_KEEP];

    s_read_counters (flow);
    for (int i = 0; i < 2; i++)
        bypass_dp_flow_del (agent->dp, &flow->key[i]);
    memset (rec, 0, sizeof *rec);
    rec->id = flow->id;
    s_addr (&flow->leg[BYPASS_CLIENT].peer, rec->client, sizeof rec->client);
    s_addr (&flow->leg[BYPASS_SERVER].peer, rec->server, sizeof rec->server);
    snprintf (rec->reason, sizeof rec->reason, "%s", bypass_cleanup_names[why]);
    snprintf (rec->policy_rule, sizeof rec->policy_rule, "%s", flow->policy_rule);
    rec->spliced_wall_ms = flow->spliced_wall_ms;
    rec->closed_wall_ms = hms_wall_ms ();
    for (int i = 0; i < 2; i++) {
        rec->packets[i] = flow->last[i].packets;
        rec->bytes[i] = flow->last[i].bytes;
        agent->closed_bytes += flow->last[i].bytes;
        agent->closed_packets += flow->last[i].packets;
    }
    atomic_fetch_add (&agent->st.closed_by[why], 1);
    atomic_fetch_sub (&agent->st.active, 1);
    hms_info ("bypass: flow removed flow=%llu client=%s server=%s reason=%s packets_up=%llu "
              "bytes_up=%llu packets_down=%llu bytes_down=%llu",
              (unsigned long long) flow->id, rec->client, rec->server, rec->reason,
              (unsigned long long) rec->packets[0], (unsigned long long) rec->bytes[0],
              (unsigned long long) rec->packets[1], (unsigned long long) rec->bytes[1]);
    s_free (flow);
}

static void s_on_linger (struct ev_loop *loop, ev_timer *w, int revents)
{
    s_remove (w->data, BYPASS_C_FIN);
}

void bypass_flow_event (bypass_flow_t *flow, const struct bypass_event *ev)
{
    int from = memcmp (&ev->key, &flow->key[BYPASS_CLIENT], sizeof ev->key) == 0   ? BYPASS_CLIENT
               : memcmp (&ev->key, &flow->key[BYPASS_SERVER], sizeof ev->key) == 0 ? BYPASS_SERVER
                                                                                   : -1;

    if (from < 0 || (flow->state != BYPASS_F_SPLICED && flow->state != BYPASS_F_LINGER))
        return; /* while draining the sockets see FIN and RST themselves */
    hms_debug ("bypass.flow", "bypass: event flow=%llu from=%s type=%u",
               (unsigned long long) flow->id, from == BYPASS_CLIENT ? "client" : "server",
               ev->type);
    if (ev->type == BYPASS_EV_RST) {
        s_remove (flow, BYPASS_C_RST);
        return;
    }
    if (ev->type == BYPASS_EV_SYN) {
        s_remove (flow, BYPASS_C_STALE);
        return;
    }
    if (ev->type != BYPASS_EV_FIN || flow->fin[from])
        return;
    flow->fin[from] = true;
    if (flow->fin[0] && flow->fin[1] && flow->state == BYPASS_F_SPLICED) {
        flow->state = BYPASS_F_LINGER;
        ev_timer_init (&flow->timer, s_on_linger, (double) flow->agent->opts.fin_linger_ms / 1e3,
                       0);
        flow->timer.data = flow;
        ev_timer_start (flow->agent->loop, &flow->timer);
    }
}

void bypass_flow_sweep (bypass_flow_t *flow, int64_t now_ms)
{
    int64_t last_ns = 0;

    if (flow->state != BYPASS_F_SPLICED && flow->state != BYPASS_F_LINGER)
        return;
    s_read_counters (flow);
    for (int i = 0; i < 2; i++)
        if ((int64_t) flow->last[i].last_ns > last_ns)
            last_ns = (int64_t) flow->last[i].last_ns;
    if (last_ns > 0 && last_ns / 1000000 > flow->last_seen_ms)
        flow->last_seen_ms = last_ns / 1000000;
    if (flow->state == BYPASS_F_SPLICED &&
        now_ms - flow->last_seen_ms > flow->agent->opts.idle_timeout_ms)
        s_remove (flow, BYPASS_C_IDLE);
}

void bypass_flow_shutdown (bypass_flow_t *flow)
{
    if (flow->state == BYPASS_F_SPLICED || flow->state == BYPASS_F_LINGER)
        s_remove (flow, BYPASS_C_SHUTDOWN);
    else
        s_refuse (flow, BYPASS_R_SHUTDOWN, "the bypass agent is stopping");
}

void bypass_flow_forget_conn (bypass_flow_t *flow)
{
    flow->conn = NULL;
}

/* ---- freeze and splice ------------------------------------------------------------------ */

static void s_leg_for_dp (bypass_flow_t *flow, int i, bypass_leg_t *out)
{
    memset (out, 0, sizeof *out);
    out->laddr = flow->leg[i].wire.sin_addr.s_addr;
    out->raddr = flow->leg[i].peer.sin_addr.s_addr;
    out->lport = flow->leg[i].wire.sin_port;
    out->rport = flow->leg[i].peer.sin_port;
    out->snd_wscale = flow->leg[i].snd_wscale;
    out->rcv_wscale = flow->leg[i].rcv_wscale;
    out->timestamps = flow->leg[i].timestamps;
    out->sack = flow->leg[i].sack;
    out->ifindex = flow->path[i].ifindex;
    memcpy (out->lmac, flow->path[i].lmac, 6);
    memcpy (out->rmac, flow->path[i].rmac, 6);
}

static void s_drain_retry (bypass_flow_t *flow, const char *why)
{
    for (int i = 0; i < 2; i++)
        bypass_leg_thaw (flow->fd[i], flow->leg[i].reuseaddr);
    flow->frozen = false;
    flow->retries++;
    atomic_fetch_add (&flow->agent->st.retries, 1);
    hms_debug ("bypass.flow", "bypass: freeze undone flow=%llu why=%s try=%d",
               (unsigned long long) flow->id, why, flow->retries);
    if (flow->retries > flow->agent->opts.offload_retries)
        s_refuse (flow, BYPASS_R_BUSY, "%s during the freeze, %d times", why, flow->retries);
    else
        flow->probe_ms = 0; /* observe afresh */
}

static int s_observe (bypass_flow_t *flow)
{
    for (int i = 0; i < 2; i++)
        if (bypass_dp_flow_observe (flow->agent->dp, &flow->key[i], flow->id) != 0)
            return -1;
    return 0;
}

static void s_spliced (bypass_flow_t *flow)
{
    bypass_agent_t *agent = flow->agent;
    char c[32], s[32], pc[32], ps[32];
    json_t *body;

    for (int i = 0; i < 2; i++) {
        flow->reserve_fd[i] = bypass_leg_reserve (&flow->leg[i].local);
        if (flow->reserve_fd[i] < 0 && errno != EADDRINUSE)
            hms_debug ("bypass.flow", "bypass: cannot reserve %s: %s",
                       s_addr (&flow->leg[i].local, c, sizeof c), strerror (errno));
        close (flow->fd[i]);
        flow->fd[i] = -1;
    }
    flow->frozen = false;
    /* the spliced segments no longer cross netfilter: their conntrack entries would stay
     * ESTABLISHED for days (client leg: client -> the address it connected to; server leg:
     * proxy -> server) */
    for (int i = 0; i < 2; i++) {
        const bypass_leg_info_t *l = &flow->leg[i];
        const struct sockaddr_in *from = i == 0 ? &l->peer : &l->local;
        const struct sockaddr_in *to = i == 0 ? &l->wire : &l->peer;
        if (bypass_route_ct_delete (from->sin_addr.s_addr, from->sin_port, to->sin_addr.s_addr,
                                    to->sin_port) < 0)
            hms_debug ("bypass.flow", "bypass: conntrack entry of the %s leg: %s",
                       i == 0 ? "client" : "server", strerror (errno));
    }
    if (agent->delay)
        bypass_delay_remove (agent->delay, flow, true);
    flow->state = BYPASS_F_SPLICED;
    flow->spliced_wall_ms = hms_wall_ms ();
    flow->last_seen_ms = s_mono_ns () / 1000000;
    s_stop_io (flow);
    atomic_fetch_sub (&agent->st.draining, 1);
    atomic_fetch_add (&agent->st.active, 1);
    atomic_fetch_add (&agent->st.accepted, 1);
    hms_info ("bypass: flow spliced flow=%llu client=%s server=%s proxy=%s,%s ifaces=%s,%s "
              "timestamps=%d sack=%d wscale=%u/%u,%u/%u retries=%d drain_ms=%lld "
              "agent_relayed=%llu",
              (unsigned long long) flow->id, s_addr (&flow->leg[0].peer, c, sizeof c),
              s_addr (&flow->leg[1].peer, s, sizeof s), s_addr (&flow->leg[0].local, pc, sizeof pc),
              s_addr (&flow->leg[1].local, ps, sizeof ps), flow->path[0].ifname,
              flow->path[1].ifname, flow->leg[0].timestamps, flow->leg[0].sack,
              flow->leg[0].snd_wscale, flow->leg[0].rcv_wscale, flow->leg[1].snd_wscale,
              flow->leg[1].rcv_wscale, flow->retries,
              (long long) (hms_mono_ms () - flow->offered_ms),
              (unsigned long long) (flow->agent_relayed[0] + flow->agent_relayed[1]));
    body = s_answer_body (flow, "accepted");
    json_object_set_new (body, "flow", json_integer ((json_int_t) flow->id));
    bypass_agent_answer (agent, flow->conn, body, NULL, 0, NULL, 0);
}

static void s_freeze (bypass_flow_t *flow)
{
    bypass_agent_t *agent = flow->agent;
    bypass_leg_t leg[2];
    struct bypass_flow_key k[2];
    struct bypass_splice_params p[2];
    struct bypass_flow_val v;
    uint32_t rcv_again[2], snd_again[2];
    int unacked, unread;

    for (int i = 0; i < 2; i++) {
        if (bypass_leg_freeze (flow->fd[i]) != 0) {
            s_refuse (flow, BYPASS_R_REPAIR, "TCP_REPAIR on the %s leg: %s (needs CAP_NET_ADMIN)",
                      i == 0 ? "client" : "server", strerror (errno));
            return;
        }
        flow->frozen = true;
    }
    for (int i = 0; i < 2; i++) {
        if (bypass_leg_queues (flow->fd[i], &unacked, &unread) != 0 || unacked || unread) {
            s_drain_retry (flow, "queued data");
            return;
        }
        s_leg_for_dp (flow, i, &leg[i]);
        if (bypass_leg_seq (flow->fd[i], &leg[i].snd_nxt, &leg[i].rcv_nxt) != 0 ||
            (leg[i].timestamps && bypass_leg_clock (flow->fd[i], &leg[i].ts_now) != 0)) {
            s_refuse (flow, BYPASS_R_REPAIR, "reading the %s leg's state: %s",
                      i == 0 ? "client" : "server", strerror (errno));
            return;
        }
        if (leg[i].timestamps) {
            if (bypass_dp_flow_lookup (agent->dp, &flow->key[i], &v) != 0 || v.st.packets == 0) {
                s_drain_retry (flow, "no segment observed");
                return;
            }
            leg[i].ts_recent = v.st.last_tsval;
        }
    }
    if (agent->opts.freeze_pause_ms > 0)
        usleep ((useconds_t) agent->opts.freeze_pause_ms * 1000);
    if (bypass_dp_splice_pair (&leg[0], &leg[1], &k[0], &p[0], &k[1], &p[1]) != 0) {
        s_refuse (flow, BYPASS_R_TIMESTAMPS, "timestamps on one leg only");
        return;
    }
    for (int i = 0; i < 2; i++)
        if (bypass_dp_flow_splice (agent->dp, &k[i], &p[i], flow->id) != 0) {
            int saved = errno;
            s_observe (flow);
            s_refuse (flow, BYPASS_R_DATAPLANE, "installing the splice: %s", strerror (saved));
            return;
        }
    /* a segment that reached a socket between the read and the install is in its queue
     * and was not spliced: undo, relay it, try again */
    for (int i = 0; i < 2; i++)
        if (bypass_leg_seq (flow->fd[i], &snd_again[i], &rcv_again[i]) != 0 ||
            rcv_again[i] != leg[i].rcv_nxt || snd_again[i] != leg[i].snd_nxt) {
            if (s_observe (flow) != 0) {
                s_refuse (flow, BYPASS_R_DATAPLANE, "restoring the observation: %s",
                          strerror (errno));
                return;
            }
            s_drain_retry (flow, "data arrived");
            return;
        }
    for (int i = 0; i < 2; i++)
        if (bypass_leg_disconnect (flow->fd[i]) != 0) {
            /* cannot happen in repair mode; the legs would be half gone: give them back */
            int saved = errno;
            s_observe (flow);
            s_refuse (flow, BYPASS_R_REPAIR, "silent close of the %s leg: %s",
                      i == 0 ? "client" : "server", strerror (saved));
            return;
        }
    s_spliced (flow);
}

/* ---- drain: relay what still arrives, wait for quiet legs -------------------------------- */

/* Relays direction d (leg d -> the other leg) without ever holding a byte: peek, write, then
 * consume what was written. An agent that dies here loses nothing of the stream (at most the
 * bytes of one write are sent twice if it dies between the write and the consume). */
static void s_relay (bypass_flow_t *flow, int d)
{
    struct ev_loop *loop = flow->agent->loop;
    const char *from = d == 0 ? "client" : "server", *to = d == 0 ? "server" : "client";

    for (int budget = 16; budget > 0; budget--) {
        ssize_t n =
            recv (flow->fd[d], flow->buf[d], BYPASS_PROTO_RELAY_BUF, MSG_PEEK | MSG_DONTWAIT);
        ssize_t w;

        if (n == 0) {
            s_refuse (flow, BYPASS_R_CLOSED, "the %s closed its side while draining", from);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            s_refuse (flow, BYPASS_R_CLOSED, "reading the %s leg: %s", from, strerror (errno));
            return;
        }
        w = send (flow->fd[1 - d], flow->buf[d], (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s_refuse (flow, BYPASS_R_CLOSED, "writing to the %s leg: %s", to, strerror (errno));
            return;
        }
        if (w > 0) {
            /* TCP discards the bytes with MSG_TRUNC, without copying them */
            if (recv (flow->fd[d], NULL, (size_t) w, MSG_TRUNC | MSG_DONTWAIT) != w) {
                s_refuse (flow, BYPASS_R_CLOSED, "consuming from the %s leg: %s", from,
                          strerror (errno));
                return;
            }
            flow->agent_relayed[d] += (uint64_t) w;
            atomic_fetch_add (&flow->agent->st.relayed_bytes, (uint64_t) w);
        }
        if (w < n) { /* the other leg is full: wait until it takes more */
            ev_io_stop (loop, &flow->rio[d]);
            ev_io_start (loop, &flow->wio[d]);
            return;
        }
    }
    ev_io_stop (loop, &flow->wio[d]);
    ev_io_start (loop, &flow->rio[d]);
}

static void s_on_read (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_flow_t *flow = w->data;

    if (!flow->frozen)
        s_relay (flow, w == &flow->rio[0] ? 0 : 1);
}

static void s_on_write (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_flow_t *flow = w->data;

    if (!flow->frozen)
        s_relay (flow, w == &flow->wio[0] ? 0 : 1);
}

static void s_probe (bypass_flow_t *flow, int64_t now)
{
    for (int i = 0; i < 2; i++)
        if (bypass_leg_probe (flow->fd[i], flow->leg[i].reuseaddr) != 0)
            hms_debug ("bypass.flow", "bypass: window probe flow=%llu: %s",
                       (unsigned long long) flow->id, strerror (errno));
    flow->probe_ms = now;
}

static void s_on_tick (struct ev_loop *loop, ev_timer *w, int revents)
{
    bypass_flow_t *flow = w->data;
    int64_t now = hms_mono_ms ();
    struct bypass_flow_val v;
    int unacked, unread;

    if (now > flow->deadline_ms) {
        int q[2][2] = {{0, 0}, {0, 0}};
        for (int i = 0; i < 2; i++)
            bypass_leg_queues (flow->fd[i], &q[i][0], &q[i][1]);
        s_refuse (flow, BYPASS_R_BUSY,
                  "not quiet within %lld ms (client leg unacked=%d unread=%d, server leg "
                  "unacked=%d unread=%d)",
                  (long long) flow->agent->opts.drain_timeout_ms, q[0][0], q[0][1], q[1][0],
                  q[1][1]);
        return;
    }
    for (int i = 0; i < 2; i++)
        if (bypass_leg_queues (flow->fd[i], &unacked, &unread) != 0 || unacked || unread)
            return;
    /* a moment with none of the client's segments in the delay line, while one may come */
    if (flow->agent->delay && flow->deadline_ms - now > flow->agent->opts.drain_timeout_ms / 2 &&
        bypass_delay_held (flow->agent->delay, flow))
        return;
    if (flow->leg[0].timestamps) {
        if (flow->probe_ms == 0) {
            /* first tick, or observing again after an undone freeze */
            if (s_observe (flow) != 0) {
                s_refuse (flow, BYPASS_R_DATAPLANE, "observing the legs: %s", strerror (errno));
                return;
            }
            s_probe (flow, now);
            return;
        }
        for (int i = 0; i < 2; i++)
            if (bypass_dp_flow_lookup (flow->agent->dp, &flow->key[i], &v) != 0 ||
                v.st.packets == 0) {
                if (now - flow->probe_ms >= S_PROBE_AGAIN_MS)
                    s_probe (flow, now);
                return;
            }
    }
    s_freeze (flow);
}

/* The agent relays both directions from now on (the proxy stopped). */
static void s_relay_start (bypass_flow_t *flow)
{
    struct ev_loop *loop = flow->agent->loop;

    for (int d = 0; d < 2; d++) {
        flow->buf[d] = hms_alloc (BYPASS_PROTO_RELAY_BUF);
        ev_io_init (&flow->rio[d], s_on_read, flow->fd[d], EV_READ);
        ev_io_init (&flow->wio[d], s_on_write, flow->fd[1 - d], EV_WRITE);
        flow->rio[d].data = flow->wio[d].data = flow;
        ev_io_start (loop, &flow->rio[d]);
    }
}

void bypass_flow_drain (bypass_flow_t *flow)
{
    struct ev_loop *loop = flow->agent->loop;

    flow->state = BYPASS_F_DRAINING;
    flow->deadline_ms = hms_mono_ms () + flow->agent->opts.drain_timeout_ms;
    ev_timer_stop (loop, &flow->timer);
    ev_timer_init (&flow->timer, s_on_tick, 0., S_TICK_S);
    flow->timer.data = flow;
    ev_timer_start (loop, &flow->timer);
}

/* ---- the offer ---------------------------------------------------------------------------- */

static bool s_same (const struct sockaddr_in *a, const struct sockaddr_in *b)
{
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

static void s_key_of (const bypass_leg_info_t *leg, struct bypass_flow_key *key)
{
    memset (key, 0, sizeof *key);
    key->saddr = leg->peer.sin_addr.s_addr;
    key->daddr = leg->wire.sin_addr.s_addr;
    key->sport = leg->peer.sin_port;
    key->dport = leg->wire.sin_port;
}

static const char *s_shape_names (uint32_t strip, char *buf, size_t len)
{
    snprintf (buf, len, "%s%s%s", strip & BYPASS_SHAPE_NO_TS ? " timestamps" : "",
              strip & BYPASS_SHAPE_NO_SACK ? " sack" : "",
              strip & BYPASS_SHAPE_NO_ECN ? " ecn" : "");
    return buf[0] ? buf + 1 : "none";
}

/* SACK, timestamps and ECN as the peers really use them, and what this server teaches the
 * shaper's per-server cache (bypass_maps.h). The server leg's options are what the server
 * answered, except for what the proxy's SYN did not offer (its mark): that is not learned.
 * The client leg of a transparent front may have been answered by a shaped SYN-ACK: its
 * socket believes the options are on, the client does not use them. */
static void s_shape_account (bypass_flow_t *flow)
{
    bypass_dp_t *dp = flow->agent->dp;
    bypass_leg_info_t *c = &flow->leg[0], *s = &flow->leg[1];
    uint32_t mark = 0, old = 0, lacks, now;
    socklen_t len = sizeof mark;
    struct bypass_flow_key key;
    char a[32], b[24], was[24];

    if (getsockopt (flow->fd[1], SOL_SOCKET, SO_MARK, &mark, &len) == 0 &&
        (mark & BYPASS_SHAPE_MARK_MASK) == BYPASS_SHAPE_MARK)
        flow->shaped[1] = mark & BYPASS_SHAPE_ALL;
    if (!dp)
        return;
    s_key_of (c, &key);
    flow->shaped[0] = bypass_dp_shaped_take (dp, &key);
    if (flow->shaped[0] & BYPASS_SHAPE_NO_TS)
        c->timestamps = false;
    if (flow->shaped[0] & BYPASS_SHAPE_NO_SACK)
        c->sack = false;
    if (flow->shaped[0] & BYPASS_SHAPE_NO_ECN)
        c->ecn = false;
    lacks = (s->timestamps ? 0 : BYPASS_SHAPE_NO_TS) | (s->sack ? 0 : BYPASS_SHAPE_NO_SACK) |
            (s->ecn ? 0 : BYPASS_SHAPE_NO_ECN);
    if (bypass_dp_server_get (dp, s->peer.sin_addr.s_addr, s->peer.sin_port, &old) != 0)
        return;
    now = (lacks & ~flow->shaped[1]) | (old & flow->shaped[1]);
    if (now != old) {
        if (bypass_dp_server_set (dp, s->peer.sin_addr.s_addr, s->peer.sin_port, now) != 0)
            hms_warning ("bypass: per-server cache: %s", strerror (errno));
        else
            hms_debug ("bypass.flow", "bypass: server %s does not use: %s (was: %s)",
                       s_addr (&s->peer, a, sizeof a), s_shape_names (now, b, sizeof b),
                       s_shape_names (old, was, sizeof was));
    }
}

/* The legs differ in an option (bit): why, and what would make them agree. */
static void s_refuse_option (bypass_flow_t *flow, bypass_reason_t reason, const char *name,
                             bool client_has, uint32_t bit)
{
    const char *hint;
    if (!client_has)
        hint = flow->shaped[1] & bit
                   ? "the server used it although the SYN did not offer it"
                   : "the SYN to the server was not shaped: can the proxy mark its sockets "
                     "(SO_MARK, CAP_NET_ADMIN), and is shape_syn on?";
    else if (flow->redirected)
        hint = "the server does not use it; the per-server cache knows now, and the next "
               "transparent client of this server will be answered without it";
    else if (bit == BYPASS_SHAPE_NO_ECN)
        hint = "the proxy's host asks servers for ECN only with tcp_ecn=1, and a CONNECT proxy "
               "answers the client before it knows the server";
    else
        hint = "the server does not use it, and a CONNECT proxy answers the client before it "
               "knows the server";
    s_refuse (flow, reason, "%s on the %s leg only (%s)", name, client_has ? "client" : "server",
              hint);
}

void bypass_flow_offer (bypass_agent_t *agent, bypass_conn_t *conn, bypass_request_t *req,
                        int fds[2])
{
    static const char *const side[2] = {"client", "server"};
    bypass_flow_t *flow = hms_alloc (sizeof *flow);
    struct bypass_flow_val v;
    char detail[256], a[32], b[32];
    const char *why;

    flow->agent = agent;
    flow->id = ++agent->next_id;
    flow->conn = conn;
    flow->offer_id = json_incref (req->id);
    snprintf (flow->policy_rule, sizeof flow->policy_rule, "%s", req->policy_rule);
    flow->proxy_relayed[0] = req->relayed_up;
    flow->proxy_relayed[1] = req->relayed_down;
    flow->fd[0] = fds[0];
    flow->fd[1] = fds[1];
    flow->reserve_fd[0] = flow->reserve_fd[1] = -1;
    flow->offered_ms = hms_mono_ms ();
    flow->offered_wall_ms = hms_wall_ms ();
    flow->state = BYPASS_F_DRAINING; /* for the accounting of s_refuse */
    atomic_fetch_add (&agent->st.offers, 1);
    atomic_fetch_add (&agent->st.draining, 1);

    if (agent->stopping) {
        s_refuse (flow, BYPASS_R_SHUTDOWN, "the bypass agent is stopping");
        return;
    }
    if (agent->nflows >= agent->opts.max_flows) {
        s_refuse (flow, BYPASS_R_CAPACITY, "%d flows in progress or spliced (max_flows)",
                  agent->nflows);
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (bypass_leg_inspect (flow->fd[i], &flow->leg[i], &why, detail, sizeof detail) != 0) {
            bypass_reason_t r =
                strcmp (why, "not_tcp4") == 0 ? BYPASS_R_NOT_TCP4 : BYPASS_R_NOT_ESTABLISHED;
            s_refuse (flow, r, "%s leg: %s", side[i], detail);
            return;
        }
        uint64_t cookie = bypass_leg_netns_cookie (flow->fd[i]);
        if (cookie && agent->netns_cookie && cookie != agent->netns_cookie) {
            s_refuse (flow, BYPASS_R_NETNS,
                      "the %s leg lives in another network namespace than the agent", side[i]);
            return;
        }
    }
    flow->redirected = bypass_leg_addressed (flow->fd[0], &flow->leg[0]);
    s_shape_account (flow);
    if (!s_same (&req->client, &flow->leg[0].peer) || !s_same (&req->server, &flow->leg[1].peer)) {
        s_refuse (
            flow, BYPASS_R_MISMATCH, "the sockets' peers are %s and %s, not what the offer says",
            s_addr (&flow->leg[0].peer, b, sizeof b), s_addr (&flow->leg[1].peer, a, sizeof a));
        return;
    }
    if (bypass_agent_policy_allows (agent, req->policy_rule, detail, sizeof detail) != 0) {
        s_refuse (flow, BYPASS_R_POLICY, "%s", detail);
        return;
    }
    if (flow->leg[0].timestamps != flow->leg[1].timestamps) {
        s_refuse_option (flow, BYPASS_R_TIMESTAMPS, "timestamps", flow->leg[0].timestamps,
                         BYPASS_SHAPE_NO_TS);
        return;
    }
    if (flow->leg[0].sack != flow->leg[1].sack) {
        s_refuse_option (flow, BYPASS_R_SACK, "SACK", flow->leg[0].sack, BYPASS_SHAPE_NO_SACK);
        return;
    }
    if (flow->leg[0].ecn != flow->leg[1].ecn) {
        s_refuse_option (flow, BYPASS_R_ECN, "ECN", flow->leg[0].ecn, BYPASS_SHAPE_NO_ECN);
        return;
    }
    for (int i = 0; i < 2; i++)
        if (bypass_route_lookup (flow->leg[i].local.sin_addr.s_addr,
                                 flow->leg[i].peer.sin_addr.s_addr, &flow->path[i], detail,
                                 sizeof detail) != 0) {
            s_refuse (flow, BYPASS_R_ROUTE, "%s leg: %s", side[i], detail);
            return;
        }
    for (int i = 0; i < 2; i++)
        if (flow->leg[i].advmss + 40 > (uint32_t) flow->path[1 - i].mtu) {
            s_refuse (flow, BYPASS_R_MSS, "the %s sends segments of up to %u bytes, %s's MTU is %d",
                      side[i], flow->leg[i].advmss, flow->path[1 - i].ifname,
                      flow->path[1 - i].mtu);
            return;
        }
    if (!agent->dp) {
        s_refuse (flow, BYPASS_R_DATAPLANE,
                  "no data plane (hermes-bypass needs CAP_BPF and "
                  "CAP_NET_ADMIN; see its start-up log)");
        return;
    }
    s_key_of (&flow->leg[0], &flow->key[0]);
    s_key_of (&flow->leg[1], &flow->key[1]);
    for (int i = 0; i < 2; i++)
        if (bypass_dp_flow_lookup (agent->dp, &flow->key[i], &v) == 0) {
            memset (&flow->key, 0, sizeof flow->key); /* not ours to remove */
            s_refuse (flow, BYPASS_R_DUPLICATE, "the %s leg is already in flow %llu", side[i],
                      (unsigned long long) v.cookie);
            return;
        }
    for (int i = 0; i < 2; i++)
        if (bypass_agent_attach (agent, flow->path[i].ifindex) != 0) {
            s_refuse (flow, BYPASS_R_DATAPLANE, "cannot attach to %s", flow->path[i].ifname);
            return;
        }
    if (s_observe (flow) != 0) {
        s_refuse (flow, BYPASS_R_DATAPLANE, "adding the flow: %s", strerror (errno));
        return;
    }
    s_link (flow);
    hms_debug ("bypass.flow", "bypass: offer flow=%llu client=%s policy_rule=%s",
               (unsigned long long) flow->id, s_addr (&flow->leg[0].peer, a, sizeof a),
               flow->policy_rule);
    if (flow->leg[0].timestamps)
        s_probe (flow, flow->offered_ms);
    s_relay_start (flow);
    if (agent->delay && bypass_delay_wanted (agent->delay, flow))
        bypass_delay_ramp (agent->delay, flow);
    else
        bypass_flow_drain (flow);
}

/* ---- the flow list ---------------------------------------------------------------------- */

static json_t *s_dir_json (const struct bypass_flow_state *st)
{
    return json_pack ("{s:I, s:I}", "packets", (json_int_t) st->packets, "bytes",
                      (json_int_t) st->bytes);
}

json_t *bypass_flow_json (bypass_flow_t *flow, int64_t now_ms)
{
    char c[32], s[32], pc[32], ps[32];
    bool spliced = flow->state == BYPASS_F_SPLICED || flow->state == BYPASS_F_LINGER;
    json_t *o = json_pack (
        "{s:I, s:O, s:s, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:s?, s:{s:b, s:b, s:b, "
        "s:{s:[i,i], s:[i,i]}, s:{s:i, s:i}}, s:{s:I, s:I}, s:{s:I, s:I}, s:I, s:i}",
        "id", (json_int_t) flow->id, "offer_id", flow->offer_id ? flow->offer_id : json_null (),
        "state", bypass_flow_state_name (flow->state), "client",
        s_addr (&flow->leg[0].peer, c, sizeof c), "server",
        s_addr (&flow->leg[1].peer, s, sizeof s), "proxy", "client_side",
        s_addr (&flow->leg[0].wire, pc, sizeof pc), "server_side",
        s_addr (&flow->leg[1].local, ps, sizeof ps), "interfaces", "client", flow->path[0].ifname,
        "server", flow->path[1].ifname, "policy_rule",
        flow->policy_rule[0] ? flow->policy_rule : NULL, "options", "timestamps",
        flow->leg[0].timestamps, "sack", flow->leg[0].sack, "ecn", flow->leg[0].ecn, "wscale",
        "client", flow->leg[0].snd_wscale, flow->leg[0].rcv_wscale, "server",
        flow->leg[1].snd_wscale, flow->leg[1].rcv_wscale, "mss", "client", flow->leg[0].advmss,
        "server", flow->leg[1].advmss, "relayed_by_proxy", "up",
        (json_int_t) flow->proxy_relayed[0], "down", (json_int_t) flow->proxy_relayed[1],
        "relayed_by_agent", "up", (json_int_t) flow->agent_relayed[0], "down",
        (json_int_t) flow->agent_relayed[1], "age_ms", (json_int_t) (now_ms - flow->offered_ms),
        "retries", flow->retries);

    if (!o)
        return json_object ();
    json_t *opts = json_object_get (o, "options");
    char sh0[24], sh1[24];
    json_object_set_new (opts, "shaped",
                         json_pack ("{s:s, s:s}", "synack_to_client",
                                    s_shape_names (flow->shaped[0], sh0, sizeof sh0),
                                    "syn_to_server",
                                    s_shape_names (flow->shaped[1], sh1, sizeof sh1)));
    if (flow->redirected)
        json_object_set_new (o, "redirected_to",
                             json_string (s_addr (&flow->leg[0].local, pc, sizeof pc)));
    if (spliced) {
        json_object_set_new (o, "reserved_ports",
                             json_pack ("{s:b, s:b}", "client", flow->reserve_fd[0] >= 0, "server",
                                        flow->reserve_fd[1] >= 0));
        s_read_counters (flow);
        json_object_set_new (o, "spliced",
                             json_pack ("{s:o, s:o}", "up", s_dir_json (&flow->last[0]), "down",
                                        s_dir_json (&flow->last[1])));
        json_object_set_new (o, "spliced_at_ms", json_integer (flow->spliced_wall_ms));
        json_object_set_new (o, "idle_ms", json_integer (now_ms - flow->last_seen_ms));
        json_object_set_new (
            o, "fin", json_pack ("{s:b, s:b}", "client", flow->fin[0], "server", flow->fin[1]));
    }
    if (flow->state == BYPASS_F_RAMP)
        json_object_set_new (
            o, "delay_ms",
            json_pack ("{s:i, s:i}", "now", flow->ramp_ms, "target", flow->ramp_target_ms));
    return o;
}
