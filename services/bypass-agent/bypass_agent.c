/* bypass_agent: the agent's worker: the Unix socket and its proxies, the data plane's events,
 * the sweep timer, config, and the hand-over of queries from other threads. */
#include "bypass_int.h"
#include "bypass_delay.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hms_alloc.h"
#include "hms_log.h"
#include "hms_time.h"

#define S_ANSWER_SNDBUF    (8 << 20) /* a flow list fits in one message */
#define S_SOCKET_MAX_FLOWS 4096      /* flows listed in an answer on the socket */

typedef struct s_out {
    uint8_t *data;
    size_t len;
    struct s_out *next;
} s_out_t;

/* ---- answers --------------------------------------------------------------------------- */

/* Sends what is queued; returns -1 when the connection failed (and was closed). */
static int s_conn_flush (bypass_conn_t *conn)
{
    while (conn->out) {
        s_out_t *o = conn->out;
        ssize_t n = bypass_proto_send (conn->fd, o->data, o->len, NULL, 0);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start (conn->agent->loop, &conn->wio);
            return 0;
        }
        if (n < 0 && errno == EMSGSIZE) {
            hms_warning ("bypass: answer of %zu bytes too large for the socket of pid %d "
                         "(dropped; raise net.core.wmem_max)",
                         o->len, (int) conn->pid);
        } else if (n < 0) {
            /* closed by its read watcher, which sees the same failure */
            hms_debug ("bypass.api", "bypass: proxy pid %d gone: %s", (int) conn->pid,
                       strerror (errno));
            conn->dead = true;
            ev_io_stop (conn->agent->loop, &conn->wio);
            return -1;
        }
        conn->out = o->next;
        if (!conn->out)
            conn->out_last = NULL;
        free (o->data);
        free (o);
    }
    ev_io_stop (conn->agent->loop, &conn->wio);
    return 0;
}

void bypass_agent_answer (bypass_agent_t *self, bypass_conn_t *conn, json_t *body,
                          const uint8_t *up, size_t uplen, const uint8_t *down, size_t downlen)
{
    s_out_t *o;

    if (!conn || conn->dead) {
        json_decref (body);
        return;
    }
    o = hms_alloc (sizeof *o);
    bypass_proto_answer_encode (body, up, uplen, down, downlen, &o->data, &o->len);
    json_decref (body);
    if (conn->out_last)
        conn->out_last->next = o;
    else
        conn->out = o;
    conn->out_last = o;
    s_conn_flush (conn);
}

static void s_answer_error (bypass_conn_t *conn, json_t *id, const char *result, const char *reason,
                            const char *detail)
{
    json_t *body = json_pack ("{s:O, s:s, s:s, s:s}", "id", id ? id : json_null (), "result",
                              result, "reason", reason, "detail", detail);
    bypass_agent_answer (conn->agent, conn, body, NULL, 0, NULL, 0);
}

/* ---- proxies on the socket ------------------------------------------------------------- */

static void s_conn_close (bypass_conn_t *conn)
{
    bypass_agent_t *self = conn->agent;

    for (bypass_flow_t *f = self->flows; f; f = f->next)
        if (f->conn == conn)
            bypass_flow_forget_conn (f);
    ev_io_stop (self->loop, &conn->rio);
    ev_io_stop (self->loop, &conn->wio);
    close (conn->fd);
    while (conn->out) {
        s_out_t *o = conn->out;
        conn->out = o->next;
        free (o->data);
        free (o);
    }
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        self->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    atomic_fetch_sub (&self->st.clients, 1);
    free (conn);
}

static void s_on_request (bypass_conn_t *conn, const char *data, size_t len, int *fds, int nfds)
{
    bypass_agent_t *self = conn->agent;
    bypass_request_t req;
    char err[256];

    if (bypass_proto_parse_request (data, len, &req, err, sizeof err) != 0) {
        for (int i = 0; i < nfds; i++)
            close (fds[i]);
        if (nfds > 0) { /* an offer that cannot be read: the proxy keeps relaying */
            atomic_fetch_add (&self->st.offers, 1);
            atomic_fetch_add (&self->st.refused, 1);
            atomic_fetch_add (&self->st.refused_by[BYPASS_R_MALFORMED], 1);
            s_answer_error (conn, req.id, "refused", "malformed", err);
        } else {
            atomic_fetch_add (&self->st.protocol_errors, 1);
            s_answer_error (conn, req.id, "error", "malformed", err);
        }
        hms_info ("bypass: bad request from pid %d: %s", (int) conn->pid, err);
        bypass_request_clear (&req);
        return;
    }
    if (req.op == BYPASS_OP_OFFER) {
        if (nfds != 2) {
            for (int i = 0; i < nfds; i++)
                close (fds[i]);
            snprintf (err, sizeof err,
                      "an offer carries 2 descriptors (client leg, server leg), "
                      "this one %d",
                      nfds);
            atomic_fetch_add (&self->st.offers, 1);
            atomic_fetch_add (&self->st.refused, 1);
            atomic_fetch_add (&self->st.refused_by[BYPASS_R_MALFORMED], 1);
            s_answer_error (conn, req.id, "refused", "malformed", err);
        } else
            bypass_flow_offer (self, conn, &req, fds);
        bypass_request_clear (&req);
        return;
    }
    for (int i = 0; i < nfds; i++)
        close (fds[i]);
    atomic_fetch_add (&self->st.queries, 1);
    if (req.op == BYPASS_OP_FLOWS) {
        json_t *body = bypass_view_flows (self, S_SOCKET_MAX_FLOWS);
        json_object_set (body, "id", req.id);
        json_object_set_new (body, "result", json_string ("ok"));
        bypass_agent_answer (self, conn, body, NULL, 0, NULL, 0);
    } else {
        char *p4 = bypass_view_export_p4 (self);
        json_t *body = json_pack ("{s:O, s:s, s:s}", "id", req.id, "result", p4 ? "ok" : "error",
                                  "p4", p4 ? p4 : "");
        if (!p4)
            json_object_set_new (body, "reason", json_string ("dataplane"));
        free (p4);
        bypass_agent_answer (self, conn, body, NULL, 0, NULL, 0);
    }
    bypass_request_clear (&req);
}

static void s_on_conn_read (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_conn_t *conn = w->data;
    char buf[BYPASS_PROTO_MAX_HEADER + 1];

    for (int budget = 64; budget > 0; budget--) {
        int fds[2], nfds = 0;
        ssize_t n = bypass_proto_recv (conn->fd, buf, sizeof buf, fds, &nfds, 2);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EMSGSIZE) {
            atomic_fetch_add (&conn->agent->st.protocol_errors, 1);
            s_answer_error (conn, NULL, "error", "malformed",
                            "request larger than 4096 bytes or with more than 2 descriptors");
            continue;
        }
        if (n <= 0) {
            if (n < 0)
                hms_debug ("bypass.api", "bypass: proxy pid %d: %s", (int) conn->pid,
                           strerror (errno));
            s_conn_close (conn);
            return;
        }
        s_on_request (conn, buf, (size_t) n, fds, nfds);
        if (conn->dead) {
            s_conn_close (conn);
            return;
        }
    }
}

static void s_on_conn_write (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_conn_t *conn = w->data;

    if (s_conn_flush (conn) != 0)
        s_conn_close (conn);
}

static void s_on_accept (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_agent_t *self = w->data;

    for (;;) {
        int fd = accept4 (self->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct ucred cred = {0, 0, 0};
        socklen_t cl = sizeof cred;
        int sndbuf = S_ANSWER_SNDBUF;
        bypass_conn_t *conn;

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                hms_log_sys (HMS_LOG_WARNING, "bypass: accept on %s", self->socket_path);
            return;
        }
        getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
        if (setsockopt (fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0)
            setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        conn = hms_alloc (sizeof *conn);
        conn->agent = self;
        conn->fd = fd;
        conn->pid = cred.pid;
        conn->uid = cred.uid;
        ev_io_init (&conn->rio, s_on_conn_read, fd, EV_READ);
        ev_io_init (&conn->wio, s_on_conn_write, fd, EV_WRITE);
        conn->rio.data = conn->wio.data = conn;
        ev_io_start (loop, &conn->rio);
        conn->next = self->conns;
        if (self->conns)
            self->conns->prev = conn;
        self->conns = conn;
        atomic_fetch_add (&self->st.clients, 1);
        hms_debug ("bypass.api", "bypass: proxy connected pid=%d uid=%d", (int) cred.pid,
                   (int) cred.uid);
    }
}

/* ---- data plane events, sweep ------------------------------------------------------------ */

int bypass_agent_attach (bypass_agent_t *self, int ifindex)
{
    return bypass_dp_attach (self->dp, ifindex);
}

/* The SYN shaper goes on the egress of every interface of the namespace but loopback, before
 * any flow is offered: it must see the handshakes of flows offered later. Interfaces that
 * appear later get it at the next scan (every BYPASS_SHAPE_SCAN_MS). */
#define BYPASS_SHAPE_SCAN_MS 2000

static void s_shape_scan (bypass_agent_t *self)
{
    struct if_nameindex *ifs;

    self->shape_scan_ms = hms_mono_ms ();
    if (!self->dp || !self->opts.shape_syn || !(ifs = if_nameindex ()))
        return;
    bypass_dp_prune (self->dp);
    for (struct if_nameindex *i = ifs; i->if_index; i++) {
        if (strcmp (i->if_name, "lo") == 0 ||
            bypass_dp_attached (self->dp, (int) i->if_index, true))
            continue;
        if (bypass_dp_shape (self->dp, (int) i->if_index) != 0)
            hms_warning ("bypass: no SYN shaper on %s: flows through it whose legs differ in "
                         "SACK, timestamps or ECN will be refused",
                         i->if_name);
    }
    if_freenameindex (ifs);
    atomic_store (&self->st.shaper_ifaces, bypass_dp_attached_count (self->dp, true));
}

static void s_on_dp_event (const struct bypass_event *ev, void *arg)
{
    bypass_agent_t *self = arg;
    bypass_flow_t *flow = bypass_agent_find (self, ev->cookie);

    if (flow)
        bypass_flow_event (flow, ev);
}

static void s_on_events (struct ev_loop *loop, ev_io *w, int revents)
{
    bypass_agent_t *self = w->data;

    bypass_dp_poll_events (self->dp, 0, s_on_dp_event, self);
}

static void s_on_sweep (struct ev_loop *loop, ev_timer *w, int revents)
{
    bypass_agent_t *self = w->data;
    int64_t now = hms_mono_ms ();
    uint64_t bytes = self->closed_bytes, packets = self->closed_packets;
    bypass_flow_t *f = self->flows;

    if (now - self->shape_scan_ms >= BYPASS_SHAPE_SCAN_MS)
        s_shape_scan (self);
    while (f) {
        bypass_flow_t *next = f->next; /* the sweep may remove f */
        bypass_flow_sweep (f, now);
        f = next;
    }
    for (f = self->flows; f; f = f->next)
        if (f->state == BYPASS_F_SPLICED || f->state == BYPASS_F_LINGER)
            for (int i = 0; i < 2; i++) {
                bytes += f->last[i].bytes;
                packets += f->last[i].packets;
            }
    atomic_store (&self->st.spliced_bytes, bytes);
    atomic_store (&self->st.spliced_packets, packets);
}

/* ---- config ---------------------------------------------------------------------------- */

int bypass_agent_validate (void *arg, const json_t *config, char *err, size_t errlen)
{
    return 0; /* nothing of the snapshot is the agent's own yet (policies: read on offers) */
}

void bypass_agent_apply (void *arg, json_t *config, int64_t version)
{
    bypass_agent_t *self = arg;

    hms_current_set (self->current, config, version); /* the reference is ours */
}

int bypass_agent_policy_allows (bypass_agent_t *self, const char *rule, char *detail, size_t len)
{
    json_t *config = hms_current_get (self->current, NULL);
    json_t *policies = json_object_get (config, "policies");
    json_t *p;
    size_t i;
    int rc = 0;

    /* the controller sends policies to the kinds that enforce them; when the agent has none,
     * the proxy's decision (policy engine: bypass true) stands */
    if (!json_is_array (policies) || json_array_size (policies) == 0)
        goto out;
    rc = -1;
    if (!rule || !*rule) {
        snprintf (detail, len, "the offer names no policy rule");
        goto out;
    }
    json_array_foreach (policies, i, p)
    {
        const char *id = json_string_value (json_object_get (p, "id"));
        if (id && strcmp (id, rule) == 0) {
            if (json_is_true (json_object_get (p, "bypass")))
                rc = 0;
            else
                snprintf (detail, len, "policy rule %s does not allow a bypass", rule);
            goto out;
        }
    }
    snprintf (detail, len, "no policy rule %s in config", rule);
out:
    json_decref (config);
    return rc;
}

/* ---- queries from other threads ---------------------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    bool p4;
    json_t *json;
    char *text;
} s_query_t;

static void s_query_unref (s_query_t *q)
{
    pthread_mutex_lock (&q->lock);
    int refs = --q->refs;
    pthread_mutex_unlock (&q->lock);
    if (refs)
        return;
    json_decref (q->json);
    free (q->text);
    pthread_mutex_destroy (&q->lock);
    pthread_cond_destroy (&q->cond);
    free (q);
}

static void s_on_query (hms_worker_t *worker, void *arg)
{
    s_query_t *q = arg;
    bypass_agent_t *self = hms_worker_arg (worker);
    json_t *json = q->p4 ? NULL : bypass_view_flows (self, SIZE_MAX);
    char *text = q->p4 ? bypass_view_export_p4 (self) : NULL;

    pthread_mutex_lock (&q->lock);
    q->json = json;
    q->text = text;
    q->done = true;
    pthread_cond_signal (&q->cond);
    pthread_mutex_unlock (&q->lock);
    s_query_unref (q);
}

/* Runs the query on the worker and waits up to a second. */
static void s_query (bypass_agent_t *self, bool p4, json_t **json, char **text)
{
    s_query_t *q;
    struct timespec until;

    *json = NULL;
    *text = NULL;
    if (hms_worker_current () == self->worker) {
        if (p4)
            *text = bypass_view_export_p4 (self);
        else
            *json = bypass_view_flows (self, SIZE_MAX);
        return;
    }
    q = hms_alloc (sizeof *q);
    pthread_mutex_init (&q->lock, NULL);
    pthread_cond_init (&q->cond, NULL);
    q->refs = 2;
    q->p4 = p4;
    hms_worker_post (self->worker, s_on_query, q);
    clock_gettime (CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock (&q->lock);
    while (!q->done)
        if (pthread_cond_timedwait (&q->cond, &q->lock, &until) != 0)
            break;
    if (q->done) {
        *json = q->json;
        *text = q->text;
        q->json = NULL;
        q->text = NULL;
    }
    pthread_mutex_unlock (&q->lock);
    s_query_unref (q);
}

json_t *bypass_agent_flows (bypass_agent_t *self)
{
    json_t *json;
    char *text;

    s_query (self, false, &json, &text);
    return json;
}

char *bypass_agent_export_p4 (bypass_agent_t *self)
{
    json_t *json;
    char *text;

    s_query (self, true, &json, &text);
    return text;
}

json_t *bypass_agent_query (void *arg, const char *what, char *err, size_t errlen)
{
    bypass_agent_t *self = arg;
    json_t *body = NULL;
    char *p4;

    if (strcmp (what, "flows") == 0) {
        body = bypass_agent_flows (self);
        if (!body)
            snprintf (err, errlen, "the bypass agent did not answer within a second");
    } else if (strcmp (what, "export_p4") == 0) {
        p4 = bypass_agent_export_p4 (self);
        if (p4)
            body = json_pack ("{s:s}", "p4", p4);
        else
            snprintf (err, errlen, "no data plane, or the agent did not answer");
        free (p4);
    } else
        snprintf (err, errlen, "unknown query '%s' (flows or export_p4)", what);
    return body;
}

json_t *bypass_agent_stats (void *arg)
{
    return bypass_view_stats (arg);
}

/* ---- start and stop -------------------------------------------------------------------- */

static void s_on_close (void *obj)
{
    bypass_agent_t *self = obj;
    hms_worker_item_t *item = hms_worker_data (self->worker);

    self->stopping = true;
    ev_io_stop (self->loop, &self->lio);
    ev_io_stop (self->loop, &self->events_io);
    ev_timer_stop (self->loop, &self->sweep);
    while (self->flows)
        bypass_flow_shutdown (self->flows);
    /* the refusals are queued on the proxies' sockets: one last try to deliver them */
    while (self->conns)
        s_conn_close (self->conns);
    bypass_delay_destroy (&self->delay);
    hms_worker_untrack (self->worker, item);
}

static void s_init (hms_worker_t *worker, void *arg)
{
    bypass_agent_t *self = arg;
    double sweep = (double) self->opts.idle_timeout_ms / 4e3;

    self->loop = hms_worker_loop (worker);
    hms_worker_set_data (worker, hms_worker_track (worker, s_on_close, self));
    ev_io_init (&self->lio, s_on_accept, self->lfd, EV_READ);
    self->lio.data = self;
    ev_io_start (self->loop, &self->lio);
    if (self->dp) {
        ev_io_init (&self->events_io, s_on_events, bypass_dp_events_fd (self->dp), EV_READ);
        self->events_io.data = self;
        ev_io_start (self->loop, &self->events_io);
    }
    if (sweep > 1.0)
        sweep = 1.0;
    if (sweep < 0.05)
        sweep = 0.05;
    ev_timer_init (&self->sweep, s_on_sweep, sweep, sweep);
    self->sweep.data = self;
    ev_timer_start (self->loop, &self->sweep);
    s_shape_scan (self);
    if (self->opts.delay_step_ms > 0)
        self->delay = bypass_delay_new (self, self->loop, self->opts.delay_queue,
                                        self->opts.delay_step_ms, self->opts.delay_step_hold_ms);
}

static void s_fini (hms_worker_t *worker, void *arg)
{
    bypass_agent_t *self = arg;

    /* removes the program from the interfaces: what was spliced stops here */
    bypass_dp_destroy (&self->dp);
}

static int s_mkdirs (const char *path)
{
    char *copy = hms_strdup (path);
    int rc = 0;

    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir (copy, 0755) != 0 && errno != EEXIST)
            rc = -1;
        *p = '/';
    }
    free (copy);
    return rc;
}

static int s_listen (bypass_agent_t *self, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    const char *path = self->socket_path;
    struct stat st;

    if (strlen (path) >= sizeof sun.sun_path) {
        snprintf (err, errlen, "socket path %s is longer than %zu bytes (set socket)", path,
                  sizeof sun.sun_path - 1);
        return -1;
    }
    strcpy (sun.sun_path, path);
    if (lstat (path, &st) == 0) {
        if (!S_ISSOCK (st.st_mode)) {
            snprintf (err, errlen, "%s exists and is not a socket (remove it or set socket)", path);
            return -1;
        }
        /* left by an agent that stopped, or another one's: this agent serves it from now on */
        hms_info ("bypass: replacing the socket %s", path);
        unlink (path);
    } else if (s_mkdirs (path) != 0) {
        snprintf (err, errlen, "cannot create the folder of %s: %s", path, strerror (errno));
        return -1;
    }
    self->lfd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (self->lfd < 0 || bind (self->lfd, (struct sockaddr *) &sun, sizeof sun) != 0 ||
        chmod (path, 0600) != 0 || listen (self->lfd, 128) != 0 || stat (path, &st) != 0) {
        snprintf (err, errlen, "cannot listen on %s: %s (is its folder writable?)", path,
                  strerror (errno));
        return -1;
    }
    self->sock_dev = st.st_dev;
    self->sock_ino = st.st_ino;
    return 0;
}

bypass_agent_t *bypass_agent_new (const bypass_agent_opts_t *opts, char *err, size_t errlen)
{
    bypass_agent_t *self = hms_alloc (sizeof *self);
    int probe;

    self->opts = *opts;
    self->socket_path = hms_strdup (opts->socket_path);
    self->lfd = -1;
    self->current = hms_current_new ();
    probe = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        self->netns_cookie = bypass_leg_netns_cookie (probe);
        close (probe);
    }
    if (!opts->no_dataplane) {
        self->dp = bypass_dp_new ();
        if (!self->dp)
            hms_warning ("bypass: running without a data plane: every offer is refused "
                         "(reason dataplane) until hermes-bypass runs with CAP_BPF and "
                         "CAP_NET_ADMIN");
    }
    if (s_listen (self, err, errlen) != 0) {
        bypass_agent_destroy (&self);
        return NULL;
    }
    self->worker = hms_worker_new (0, s_init, s_fini, self);
    hms_info ("bypass: serving proxies socket=%s dataplane=%s idle_timeout_ms=%lld "
              "fin_linger_ms=%lld delay_step_ms=%d",
              self->socket_path, self->dp ? "ebpf" : "none", (long long) opts->idle_timeout_ms,
              (long long) opts->fin_linger_ms, opts->delay_step_ms);
    return self;
}

void bypass_agent_destroy (bypass_agent_t **self_p)
{
    bypass_agent_t *self;
    struct stat st;

    if (!self_p || !*self_p)
        return;
    self = *self_p;
    hms_worker_destroy (&self->worker);
    bypass_dp_destroy (&self->dp); /* when the worker never started */
    if (self->lfd >= 0) {
        close (self->lfd);
        /* only our own socket: a newer agent may have replaced it */
        if (stat (self->socket_path, &st) == 0 && st.st_dev == self->sock_dev &&
            st.st_ino == self->sock_ino)
            unlink (self->socket_path);
    }
    hms_current_destroy (&self->current);
    free (self->socket_path);
    free (self);
    *self_p = NULL;
}
