/* policy_server: the decision endpoint of hermes-policy and its compiled policy set. */
#include "policy_server.h"
#include "hms_alloc.h"
#include "hms_auth.h"
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_policy.h"
#include "hms_time.h"

#include <czmq.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct policy_server {
    char *listen, *keys_dir;
    char src[192];
    char endpoint[256];
    size_t rate_slots;
    hms_auth_t *auth;
    zcert_t *cert;
    zsock_t *router; /* owned by the actor thread once it runs */
    zactor_t *actor;
    char start_err[1024];
    /* the set in use: swapped by the service thread, read by the actor under lock */
    pthread_mutex_t lock;
    hms_policy_set_t *set;
    int64_t version;
    /* service thread only: the set validate compiled, for apply */
    json_t *pending_config;
    hms_policy_set_t *pending;
    /* counters */
    atomic_uint_fast64_t messages, refused, decisions;
    /* refusals are logged at most every few seconds, with how many were not */
    int64_t refusal_logged_ms;
    uint64_t refusals_unlogged;
};

/* ---- config ------------------------------------------------------------------------- */

static void s_drop_pending (policy_server_t *self)
{
    json_decref (self->pending_config);
    self->pending_config = NULL;
    hms_policy_destroy (&self->pending);
}

int policy_server_validate (void *arg, const json_t *config, char *err, size_t errlen)
{
    policy_server_t *self = arg;
    s_drop_pending (self);
    hms_policy_set_t *set = hms_policy_compile (json_object_get (config, "policies"), err, errlen);
    if (!set)
        return -1;
    /* kept with a reference, so that the address cannot come back as another config */
    self->pending_config = json_incref ((json_t *) config);
    self->pending = set;
    return 0;
}

void policy_server_apply (void *arg, json_t *config, int64_t version)
{
    policy_server_t *self = arg;
    hms_policy_set_t *set = NULL;
    if (self->pending && self->pending_config == config) {
        set = self->pending;
        self->pending = NULL;
    } else {
        char err[1024];
        set = hms_policy_compile (json_object_get (config, "policies"), err, sizeof err);
        if (!set) { /* validate said yes to this very config: a programming error */
            hms_error ("cannot compile validated policies version=%" PRId64 ": %s", version, err);
            s_drop_pending (self);
            json_decref (config);
            return;
        }
    }
    s_drop_pending (self);
    hms_policy_set_rate_slots (set, self->rate_slots);
    pthread_mutex_lock (&self->lock);
    hms_policy_set_t *old = self->set;
    hms_policy_inherit (set, old);
    self->set = set;
    self->version = version;
    pthread_mutex_unlock (&self->lock);
    hms_info ("policies in use version=%" PRId64 " rules=%zu", version, hms_policy_size (set));
    hms_policy_destroy (&old);
    json_decref (config);
}

/* ---- requests ----------------------------------------------------------------------- */

static json_t *s_decide (policy_server_t *self, const json_t *env)
{
    json_t *queries = json_object_get (hms_msg_body (env), "queries");
    json_t *decisions = json_array ();
    pthread_mutex_lock (&self->lock);
    bool configured = self->version > 0;
    size_t i;
    json_t *query;
    json_array_foreach (queries, i, query)
    {
        hms_policy_query_t q;
        hms_policy_decision_t d;
        hms_policy_query_from_json (query, &q);
        hms_policy_evaluate (self->set, &q, 0, &d);
        if (!configured && !d.rule && d.ttl_ms > 0) {
            d.reason = "no policy config applied yet";
            d.ttl_ms = 0; /* ask again soon */
        }
        json_t *one = hms_policy_decision_to_json (&d);
        json_object_set (one, "qid", json_object_get (query, "qid"));
        json_array_append_new (decisions, one);
    }
    pthread_mutex_unlock (&self->lock);
    atomic_fetch_add (&self->decisions, json_array_size (queries));
    return hms_msg_reply (env, "policy.decisions", self->src,
                          json_pack ("{s:o}", "decisions", decisions));
}

static void s_log_refusal (policy_server_t *self, const char *who, const json_t *reply)
{
    int64_t now = hms_mono_ms ();
    if (self->refusal_logged_ms && now - self->refusal_logged_ms < 5000) {
        self->refusals_unlogged++;
        return;
    }
    json_t *body = hms_msg_body (reply);
    hms_warning ("refused request from key=%s code=%s: %s (and %" PRIu64 " more since the last "
                 "report; fix the client)",
                 who[0] ? who : "?", json_string_value (json_object_get (body, "code")),
                 json_string_value (json_object_get (body, "message")), self->refusals_unlogged);
    self->refusal_logged_ms = now;
    self->refusals_unlogged = 0;
}

static int s_on_router (zloop_t *loop, zsock_t *sock, void *arg)
{
    policy_server_t *self = arg;
    char role[32], who[96];
    zframe_t *route = NULL;
    json_t *env = NULL, *reply = NULL;
    if (hms_bus_recv_request (sock, self->src, &route, &env, &reply, role, sizeof role, who,
                              sizeof who) == -2)
        return 0;
    atomic_fetch_add (&self->messages, 1);
    if (env) {
        if (strcmp (hms_msg_type (env), "policy.decide") != 0)
            reply = hms_msg_error (env, self->src, HMS_ERR_UNKNOWN_TYPE,
                                   "the policy engine does not handle '%s' messages (send "
                                   "policy.decide)",
                                   hms_msg_type (env));
        else if (strcmp (role, "service") != 0)
            reply = hms_msg_error (env, self->src, HMS_ERR_FORBIDDEN,
                                   "'policy.decide' needs a key with role service; key '%s' has "
                                   "role %s",
                                   who[0] ? who : "?", role[0] ? role : "none");
        else
            reply = s_decide (self, env);
    }
    if (strcmp (hms_msg_type (reply), "error") == 0) {
        atomic_fetch_add (&self->refused, 1);
        s_log_refusal (self, who, reply);
    }
    hms_bus_send (sock, &route, NULL, &reply);
    json_decref (env);
    zframe_destroy (&route);
    return 0;
}

static int s_on_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    char *cmd = zstr_recv (pipe);
    bool term = !cmd || strcmp (cmd, "$TERM") == 0;
    free (cmd);
    return term ? -1 : 0;
}

static void s_actor (zsock_t *pipe, void *arg)
{
    policy_server_t *self = arg;
    char err[1024];
    self->router = hms_bus_server (ZMQ_ROUTER, self->listen, self->cert, err, sizeof err);
    if (!self->router) {
        snprintf (self->start_err, sizeof self->start_err, "%s", err);
        zsock_signal (pipe, 1);
        return;
    }
    snprintf (self->endpoint, sizeof self->endpoint, "%s", zsock_endpoint (self->router));
    zsock_signal (pipe, 0);
    zloop_t *loop = zloop_new ();
    zloop_reader (loop, pipe, s_on_pipe, self);
    zloop_reader (loop, self->router, s_on_router, self);
    zloop_set_nonstop (loop, true);
    zloop_start (loop);
    zloop_destroy (&loop);
    zsock_destroy (&self->router);
}

policy_server_t *policy_server_new (const policy_server_opts_t *opts, char *err, size_t errlen)
{
    policy_server_t *self = hms_alloc (sizeof *self);
    pthread_mutex_init (&self->lock, NULL);
    self->listen = hms_strdup (opts->listen);
    self->keys_dir = hms_strdup (opts->keys_dir);
    self->rate_slots = opts->rate_slots ? opts->rate_slots : HMS_POLICY_DEFAULT_RATE_SLOTS;
    snprintf (self->src, sizeof self->src, "policy/%s", opts->instance ? opts->instance : "?");
    self->set = hms_policy_compile (NULL, err, errlen); /* nothing allowed until a config */
    hms_policy_set_rate_slots (self->set, self->rate_slots);
    self->auth = hms_auth_new (self->keys_dir, err, errlen);
    if (self->auth)
        self->cert = hms_keys_load_secret (self->keys_dir, "policy", err, errlen);
    if (self->cert) {
        self->actor = zactor_new (s_actor, self);
        if (self->start_err[0])
            snprintf (err, errlen, "%s", self->start_err);
    }
    if (!self->actor || self->start_err[0]) {
        policy_server_destroy (&self);
        return NULL;
    }
    hms_info ("serving decisions endpoint=%s", self->endpoint);
    return self;
}

void policy_server_destroy (policy_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    policy_server_t *self = *self_p;
    zactor_destroy (&self->actor);
    if (self->endpoint[0])
        hms_info ("stopped serving decisions messages=%" PRIu64 " refused=%" PRIu64
                  " decisions=%" PRIu64,
                  (uint64_t) atomic_load (&self->messages), (uint64_t) atomic_load (&self->refused),
                  (uint64_t) atomic_load (&self->decisions));
    hms_auth_destroy (&self->auth);
    zcert_destroy (&self->cert);
    s_drop_pending (self);
    hms_policy_destroy (&self->set);
    pthread_mutex_destroy (&self->lock);
    free (self->listen);
    free (self->keys_dir);
    free (self);
    *self_p = NULL;
}

const char *policy_server_endpoint (policy_server_t *self)
{
    return self->endpoint;
}

void policy_server_stats (policy_server_t *self, policy_server_stats_t *out)
{
    out->messages = atomic_load (&self->messages);
    out->refused = atomic_load (&self->refused);
    out->decisions = atomic_load (&self->decisions);
    pthread_mutex_lock (&self->lock);
    out->version = self->version;
    out->rules = hms_policy_size (self->set);
    pthread_mutex_unlock (&self->lock);
}
