/* hms_decide: batched, cached, time-limited policy decisions over a DEALER socket whose
 * ZMQ_FD is watched by libev (edge-triggered: drained until ZMQ_EVENTS says empty). */
#include "hms_decide.h"
#include "hms_alloc.h"
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_soon.h"
#include "hms_time.h"

#include <czmq.h>
#include <string.h>

#define HMS_DECIDE_CACHE_MAX 10000
#define HMS_DECIDE_BATCH_MAX 1024

struct hms_decide_req {
    hms_decider_t *decider;
    char qid[24];
    char key[2048];
    json_t *query;
    hms_decide_fn *fn;
    void *arg;
    ev_timer timer;
    bool sent;
    struct hms_decide_req *next; /* in the to-send queue */
};

typedef struct {
    hms_decision_t decision;
    int64_t expires_ms;
} s_cached_t;

struct hms_decider {
    struct ev_loop *loop;
    zsock_t *sock;
    ev_io io;
    hms_soon_t prep; /* sends the turn's queries as one batch, at the end of the turn */
    int timeout_ms;
    uint64_t next_qid;
    zhashx_t *pending; /* qid -> req */
    zhashx_t *cache;   /* key -> s_cached_t */
    hms_decide_req_t *queue, *queue_last;
    char src[64];
};

static void s_set (json_t *q, const char *key, const char *value)
{
    if (value && *value)
        json_object_set_new (q, key, json_string (value));
}

static void s_req_free (hms_decide_req_t *req)
{
    ev_timer_stop (req->decider->loop, &req->timer);
    json_decref (req->query);
    free (req);
}

static void s_deliver (hms_decide_req_t *req, const hms_decision_t *d)
{
    zhashx_delete (req->decider->pending, req->qid);
    hms_decide_fn *fn = req->fn;
    void *arg = req->arg;
    s_req_free (req);
    fn (d, arg);
}

static void s_on_timeout (struct ev_loop *loop, ev_timer *w, int revents)
{
    hms_decide_req_t *req = w->data;
    hms_decider_t *self = req->decider;
    /* still queued? take it out */
    for (hms_decide_req_t **p = &self->queue; *p; p = &(*p)->next)
        if (*p == req) {
            *p = req->next;
            if (self->queue_last == req) {
                self->queue_last = NULL;
                for (hms_decide_req_t *q = self->queue; q; q = q->next)
                    self->queue_last = q;
            }
            break;
        }
    hms_decision_t d = {.action = HMS_DECISION_DENY, .unavailable = true};
    snprintf (d.reason, sizeof d.reason, "policy engine did not answer within %d ms",
              self->timeout_ms);
    hms_warning ("%s (failing closed)", d.reason);
    s_deliver (req, &d);
}

static void s_copy (char *out, size_t len, const json_t *v)
{
    snprintf (out, len, "%s", json_is_string (v) ? json_string_value (v) : "");
}

static void s_on_reply (hms_decider_t *self, json_t *env)
{
    if (strcmp (hms_msg_type (env), "error") == 0) {
        hms_warning ("policy engine refused a batch: %s",
                     json_string_value (json_object_get (hms_msg_body (env), "message")));
        return; /* those queries time out and fail closed */
    }
    if (strcmp (hms_msg_type (env), "policy.decisions") != 0)
        return;
    size_t i;
    json_t *d;
    json_array_foreach (json_object_get (hms_msg_body (env), "decisions"), i, d)
    {
        const char *qid = json_string_value (json_object_get (d, "qid"));
        hms_decide_req_t *req = qid ? zhashx_lookup (self->pending, qid) : NULL;
        if (!req)
            continue; /* cancelled or timed out */
        hms_decision_t dec = {0};
        const char *action = json_string_value (json_object_get (d, "action"));
        dec.action = strcmp (action, "allow") == 0   ? HMS_DECISION_ALLOW
                     : strcmp (action, "route") == 0 ? HMS_DECISION_ROUTE
                                                     : HMS_DECISION_DENY;
        s_copy (dec.rule, sizeof dec.rule, json_object_get (d, "rule"));
        s_copy (dec.route, sizeof dec.route, json_object_get (d, "route"));
        s_copy (dec.target, sizeof dec.target, json_object_get (d, "target"));
        s_copy (dec.retry_profile, sizeof dec.retry_profile, json_object_get (d, "retry_profile"));
        s_copy (dec.reason, sizeof dec.reason, json_object_get (d, "reason"));
        dec.bypass = json_is_true (json_object_get (d, "bypass"));
        dec.needs_sni = json_is_true (json_object_get (d, "needs_sni"));
        dec.needs_dst = json_is_true (json_object_get (d, "needs_dst"));
        dec.ttl_ms = (int) json_integer_value (json_object_get (d, "ttl_ms"));
        if (dec.ttl_ms > 0) {
            if (zhashx_size (self->cache) >= HMS_DECIDE_CACHE_MAX)
                zhashx_purge (self->cache);
            s_cached_t *c = hms_alloc (sizeof *c);
            c->decision = dec;
            c->decision.cached = true;
            c->expires_ms = hms_mono_ms () + dec.ttl_ms;
            zhashx_update (self->cache, req->key, c);
        }
        s_deliver (req, &dec);
    }
}

static void s_drain (hms_decider_t *self)
{
    while (zsock_events (self->sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv_nowait (self->sock);
        if (!msg)
            break;
        zframe_t *frame = zmsg_last (msg);
        const char *code;
        char err[512];
        json_t *env = frame ? hms_msg_decode ((const char *) zframe_data (frame),
                                              zframe_size (frame), &code, err, sizeof err)
                            : NULL;
        zmsg_destroy (&msg);
        if (!env) {
            hms_warning ("ignoring an unreadable answer from the policy engine: %s", err);
            continue;
        }
        s_on_reply (self, env);
        json_decref (env);
    }
}

static void s_on_io (struct ev_loop *loop, ev_io *w, int revents)
{
    s_drain (w->data);
}

/* At the end of the loop turn: send what was asked this turn as one batch, then drain. */
static void s_on_prepare (struct ev_loop *loop, hms_soon_t *soon)
{
    hms_decider_t *self = soon->data;
    while (self->queue) {
        json_t *queries = json_array ();
        while (self->queue && json_array_size (queries) < HMS_DECIDE_BATCH_MAX) {
            hms_decide_req_t *req = self->queue;
            self->queue = req->next;
            req->next = NULL;
            req->sent = true;
            json_array_append (queries, req->query);
        }
        json_t *env =
            hms_msg_new ("policy.decide", 1, self->src, json_pack ("{s:o}", "queries", queries));
        hms_bus_send (self->sock, NULL, NULL, &env);
    }
    self->queue_last = NULL;
    s_drain (self);
}

static void s_cached_free (void **item)
{
    free (*item);
    *item = NULL;
}

hms_decider_t *hms_decider_new (struct ev_loop *loop, const char *endpoint, const char *keys_dir,
                                const char *key_name, int timeout_ms, char *err, size_t errlen)
{
    char server_key[41];
    zcert_t *cert = hms_keys_load_secret (keys_dir, key_name, err, errlen);
    if (!cert || hms_keys_load_public (keys_dir, "policy", server_key, err, errlen)) {
        zcert_destroy (&cert);
        return NULL;
    }
    hms_decider_t *self = hms_alloc (sizeof *self);
    self->sock = hms_bus_client (ZMQ_DEALER, endpoint, cert, server_key, err, errlen);
    zcert_destroy (&cert);
    if (!self->sock) {
        free (self);
        return NULL;
    }
    self->loop = loop;
    self->timeout_ms = timeout_ms;
    snprintf (self->src, sizeof self->src, "%s", key_name);
    self->pending = zhashx_new ();
    self->cache = zhashx_new ();
    zhashx_set_destructor (self->cache, s_cached_free);
    ev_io_init (&self->io, s_on_io, zsock_fd (self->sock), EV_READ);
    self->io.data = self;
    ev_io_start (loop, &self->io);
    hms_soon_init (&self->prep, s_on_prepare, self);
    return self;
}

void hms_decider_destroy (hms_decider_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_decider_t *self = *self_p;
    ev_io_stop (self->loop, &self->io);
    hms_soon_stop (self->loop, &self->prep);
    /* the askers learn that no answer comes (they may free themselves in the callback) */
    self->queue = self->queue_last = NULL;
    hms_decide_req_t *req;
    while ((req = zhashx_first (self->pending))) {
        hms_decision_t d = {.action = HMS_DECISION_DENY, .unavailable = true};
        snprintf (d.reason, sizeof d.reason, "shutting down");
        s_deliver (req, &d);
    }
    zhashx_destroy (&self->pending);
    zhashx_destroy (&self->cache);
    zsock_destroy (&self->sock);
    free (self);
    *self_p = NULL;
}

hms_decide_req_t *hms_decide (hms_decider_t *self, const hms_query_t *q, hms_decide_fn *fn,
                              void *arg)
{
    char key[2048];
    snprintf (key, sizeof key, "%s|%s%s|%d|%s|%s|%s%s|%s|%s|%s|%s|%s", q->src ?: "", q->dst ?: "",
              q->dst_pending ? "?" : "", q->port, q->protocol ?: "", q->host ?: "", q->sni ?: "",
              q->sni_pending ? "?" : "", q->method ?: "", q->path ?: "", q->user ?: "",
              q->service ?: "", q->ns ?: "");
    s_cached_t *c = zhashx_lookup (self->cache, key);
    if (c && c->expires_ms > hms_mono_ms ()) {
        fn (&c->decision, arg);
        return NULL;
    }
    hms_decide_req_t *req = hms_alloc (sizeof *req);
    req->decider = self;
    req->fn = fn;
    req->arg = arg;
    snprintf (req->key, sizeof req->key, "%s", key);
    snprintf (req->qid, sizeof req->qid, "%" PRIu64, ++self->next_qid);
    req->query = json_pack ("{s:s}", "qid", req->qid);
    s_set (req->query, "src", q->src);
    s_set (req->query, "dst", q->dst);
    if (q->port > 0)
        json_object_set_new (req->query, "port", json_integer (q->port));
    s_set (req->query, "protocol", q->protocol);
    s_set (req->query, "host", q->host);
    s_set (req->query, "sni", q->sni);
    if (q->sni_pending && !q->sni)
        json_object_set_new (req->query, "sni_pending", json_true ());
    if (q->dst_pending)
        json_object_set_new (req->query, "dst_pending", json_true ());
    s_set (req->query, "method", q->method);
    s_set (req->query, "path", q->path);
    s_set (req->query, "user", q->user);
    s_set (req->query, "service", q->service);
    s_set (req->query, "namespace", q->ns);
    zhashx_insert (self->pending, req->qid, req);
    if (self->queue_last)
        self->queue_last->next = req;
    else
        self->queue = req;
    self->queue_last = req;
    ev_timer_init (&req->timer, s_on_timeout, self->timeout_ms / 1000.0, 0);
    req->timer.data = req;
    ev_timer_start (self->loop, &req->timer);
    hms_soon_start (self->loop, &self->prep);
    return req;
}

void hms_decide_cancel (hms_decide_req_t *req)
{
    hms_decider_t *self = req->decider;
    for (hms_decide_req_t **p = &self->queue; *p; p = &(*p)->next)
        if (*p == req) {
            *p = req->next;
            break;
        }
    self->queue_last = NULL;
    for (hms_decide_req_t *q = self->queue; q; q = q->next)
        self->queue_last = q;
    zhashx_delete (self->pending, req->qid);
    s_req_free (req);
}

void hms_decider_flush (hms_decider_t *self)
{
    zhashx_purge (self->cache);
}
