/* hms_service: register / heartbeat / snapshot / ack lifecycle, run as a czmq actor. */
#include "hms_service.h"
#include "hms_alloc.h"
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_schema.h"
#include "hms_time.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

struct hms_service {
    hms_service_opts_t opts;
    char *kind, *instance, *controller, *controller_push, *keys_dir, *build, *node;
    char src[256];
    char server_key[41];
    zcert_t *cert;
    zactor_t *actor;
    /* owned by the actor thread */
    zsock_t *dealer;
    zsock_t *sub;
    bool registered;
    bool away_logged;
    bool draining; /* a graceful stop is under way: said in every heartbeat */
    int64_t last_reply_ms;
    int64_t started_ms;
    int64_t rejected_version;
    char epoch[64];
    /* read from any thread */
    atomic_int_fast64_t applied_version;
    atomic_bool connected;
};

static void s_send (hms_service_t *self, json_t *env)
{
    hms_bus_send (self->dealer, NULL, NULL, &env);
}

static void s_send_register (hms_service_t *self)
{
    char host[256] = "";
    gethostname (host, sizeof host - 1);
    json_t *body =
        json_pack ("{s:s, s:s, s:i, s:s, s:s, s:I}", "kind", self->kind, "instance", self->instance,
                   "pid", (int) getpid (), "host", host, "build", self->build, "applied_version",
                   (json_int_t) atomic_load (&self->applied_version));
    if (self->node)
        json_object_set_new (body, "node", json_string (self->node));
    s_send (self, hms_msg_new ("register", 1, self->src, body));
}

static void s_ack (hms_service_t *self, int64_t version, const char *result, const char *reason)
{
    json_t *body = json_pack ("{s:s, s:s, s:I, s:s}", "kind", self->kind, "instance",
                              self->instance, "version", (json_int_t) version, "result", result);
    if (reason)
        json_object_set_new (body, "reason", json_string (reason));
    s_send (self, hms_msg_new ("config.ack", 1, self->src, body));
}

/* Offers a snapshot {version, kind, config} from the controller. */
static void s_offer (hms_service_t *self, const json_t *snap, const char *via)
{
    if (!json_is_object (snap))
        return;
    int64_t version = json_integer_value (json_object_get (snap, "version"));
    json_t *config = json_object_get (snap, "config");
    int64_t applied = atomic_load (&self->applied_version);
    if (version <= applied || version == self->rejected_version)
        return;
    char err[1024] = "";
    char name[96];
    snprintf (name, sizeof name, "config/snapshot.v1");
    int rc = hms_schemas_validate (name, config, err, sizeof err);
    if (rc == 0 && self->opts.validate)
        rc = self->opts.validate (self->opts.arg, config, err, sizeof err);
    if (rc) {
        self->rejected_version = version;
        hms_warning ("rejected config version=%" PRId64 " via=%s reason=\"%s\" keeping=%" PRId64,
                     version, via, err, applied);
        s_ack (self, version, "rejected", err);
        return;
    }
    if (self->opts.apply)
        self->opts.apply (self->opts.arg, json_incref (config), version);
    atomic_store (&self->applied_version, version);
    hms_info ("applied config version=%" PRId64 " via=%s", version, via);
    s_ack (self, version, "applied", NULL);
}

/* A reply shows the controller is there; a new epoch means a new database: start over. */
static void s_seen (hms_service_t *self, const json_t *body)
{
    self->last_reply_ms = hms_mono_ms ();
    if (self->away_logged)
        hms_info ("controller is back endpoint=%s", self->controller);
    self->away_logged = false;
    atomic_store (&self->connected, true);
    const char *epoch = json_string_value (json_object_get (body, "epoch"));
    if (epoch && strcmp (epoch, self->epoch) != 0) {
        if (self->epoch[0])
            hms_warning ("controller database changed epoch=%s (was %s): taking its config", epoch,
                         self->epoch);
        if (self->epoch[0]) {
            atomic_store (&self->applied_version, 0);
            self->rejected_version = 0;
        }
        snprintf (self->epoch, sizeof self->epoch, "%s", epoch);
    }
}

static void s_on_dealer (hms_service_t *self)
{
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return;
    zframe_t *frame = zmsg_last (msg);
    const char *code;
    char err[512];
    json_t *env = frame ? hms_msg_decode ((const char *) zframe_data (frame), zframe_size (frame),
                                          &code, err, sizeof err)
                        : NULL;
    zmsg_destroy (&msg);
    if (!env) {
        hms_warning ("ignoring bad reply from controller: %s", frame ? err : "empty message");
        return;
    }
    const char *type = hms_msg_type (env);
    json_t *body = hms_msg_body (env);
    if (strcmp (type, "register.ok") == 0) {
        s_seen (self, body);
        if (!self->registered)
            hms_info ("registered kind=%s instance=%s controller=%s config_version=%" PRId64,
                      self->kind, self->instance, self->controller,
                      (int64_t) json_integer_value (json_object_get (body, "config_version")));
        self->registered = true;
        s_offer (self, json_object_get (body, "snapshot"), "register");
    } else if (strcmp (type, "heartbeat.ok") == 0) {
        s_seen (self, body);
        s_offer (self, json_object_get (body, "snapshot"), "heartbeat");
    } else if (strcmp (type, "service.query") == 0) {
        /* the controller relays an operator's question */
        const char *op = json_string_value (json_object_get (body, "op"));
        char err[512] = "no queries are answered by this daemon";
        json_t *result =
            self->opts.query ? self->opts.query (self->opts.arg, op, err, sizeof err) : NULL;
        json_t *answer = result ? json_pack ("{s:s, s:o}", "op", op, "result", result)
                                : json_pack ("{s:s, s:s}", "op", op, "error", err);
        s_send (self, hms_msg_reply (env, "service.answer", self->src, answer));
    } else if (strcmp (type, "ok") == 0) {
        s_seen (self, body);
    } else if (strcmp (type, "error") == 0) {
        self->last_reply_ms = hms_mono_ms ();
        const char *ecode = json_string_value (json_object_get (body, "code"));
        if (ecode && strcmp (ecode, HMS_ERR_UNREGISTERED) == 0) {
            hms_info ("controller does not know this instance: registering again");
            self->registered = false;
            s_send_register (self);
        } else
            hms_warning ("controller refused %s: %s",
                         json_string_value (json_object_get (body, "re")) ?: "a message",
                         json_string_value (json_object_get (body, "message")) ?: "?");
    }
    json_decref (env);
}

static void s_on_sub (hms_service_t *self)
{
    zmsg_t *msg = zmsg_recv (self->sub);
    if (!msg)
        return;
    zframe_t *frame = zmsg_size (msg) == 2 ? zmsg_last (msg) : NULL;
    const char *code;
    char err[512];
    json_t *env = frame ? hms_msg_decode ((const char *) zframe_data (frame), zframe_size (frame),
                                          &code, err, sizeof err)
                        : NULL;
    zmsg_destroy (&msg);
    if (!env) {
        hms_warning ("ignoring bad config push: %s", frame ? err : "wrong frame count");
        return;
    }
    if (strcmp (hms_msg_type (env), "config.snapshot") == 0) {
        json_t *body = hms_msg_body (env);
        const char *epoch = json_string_value (json_object_get (body, "epoch"));
        if (epoch && self->epoch[0] && strcmp (epoch, self->epoch) == 0)
            s_offer (self, body, "push");
    }
    json_decref (env);
}

static int s_connect (hms_service_t *self)
{
    char err[512];
    zsock_destroy (&self->dealer);
    self->dealer = hms_bus_client (ZMQ_DEALER, self->controller, self->cert, self->server_key, err,
                                   sizeof err);
    if (!self->dealer) {
        hms_error ("%s", err);
        return -1;
    }
    zsock_set_immediate (self->dealer, 1);
    zsock_set_sndtimeo (self->dealer, 0);
    if (!self->sub) {
        self->sub = hms_bus_client (ZMQ_SUB, self->controller_push, self->cert, self->server_key,
                                    err, sizeof err);
        if (!self->sub) {
            hms_error ("%s", err);
            return -1;
        }
        zsock_set_subscribe (self->sub, self->kind);
    }
    self->registered = false;
    return 0;
}

static void s_tick (hms_service_t *self)
{
    int64_t now = hms_mono_ms ();
    int away = self->opts.away_ms ? self->opts.away_ms : 3000;
    int64_t since = self->last_reply_ms ? self->last_reply_ms : self->started_ms;
    if (now - since > away) {
        if (!self->away_logged)
            hms_warning ("controller silent for %d ms endpoint=%s: keeping config version=%" PRId64
                         ", will register again when it answers",
                         away, self->controller, (int64_t) atomic_load (&self->applied_version));
        self->away_logged = true;
        atomic_store (&self->connected, false);
        /* A fresh connection drops whatever the old one had queued. */
        s_connect (self);
        self->last_reply_ms = now;
        self->started_ms = now;
    }
    if (!self->dealer)
        return;
    if (!self->registered)
        s_send_register (self);
    else {
        json_t *body =
            json_pack ("{s:s, s:s, s:I}", "kind", self->kind, "instance", self->instance,
                       "applied_version", (json_int_t) atomic_load (&self->applied_version));
        if (self->opts.stats)
            json_object_set_new (body, "stats", self->opts.stats (self->opts.arg));
        if (self->draining)
            json_object_set_new (body, "draining", json_true ());
        s_send (self, hms_msg_new ("heartbeat", 1, self->src, body));
    }
}

static void s_actor (zsock_t *pipe, void *arg)
{
    hms_service_t *self = arg;
    self->started_ms = hms_mono_ms ();
    if (s_connect (self)) {
        zsock_signal (pipe, 1);
        return;
    }
    zsock_signal (pipe, 0);
    s_send_register (self);
    int hb = self->opts.heartbeat_ms ? self->opts.heartbeat_ms : 1000;
    int64_t next = hms_mono_ms () + hb;
    while (true) {
        zpoller_t *poller = zpoller_new (pipe, self->dealer, self->sub, NULL);
        int64_t wait = next - hms_mono_ms ();
        void *which = zpoller_wait (poller, wait > 0 ? (int) wait : 0);
        bool terminated = zpoller_terminated (poller);
        zpoller_destroy (&poller);
        if (which == pipe) {
            char *cmd = zstr_recv (pipe);
            bool term = !cmd || strcmp (cmd, "$TERM") == 0;
            bool drain = cmd && strcmp (cmd, "DRAIN") == 0;
            free (cmd);
            if (term)
                break;
            if (drain) {
                self->draining = true;
                next = hms_mono_ms (); /* tell the controller now */
            }
        } else if (which == self->dealer)
            s_on_dealer (self);
        else if (which == self->sub)
            s_on_sub (self);
        else if (terminated)
            break;
        if (hms_mono_ms () >= next) {
            s_tick (self);
            next = hms_mono_ms () + hb;
        }
    }
    zsock_destroy (&self->dealer);
    zsock_destroy (&self->sub);
}

hms_service_t *hms_service_new (const hms_service_opts_t *opts, char *err, size_t errlen)
{
    hms_service_t *self = hms_alloc (sizeof *self);
    self->opts = *opts;
    self->kind = hms_strdup (opts->kind);
    self->instance = hms_strdup (opts->instance);
    self->controller = hms_strdup (opts->controller);
    self->controller_push = hms_strdup (opts->controller_push);
    self->keys_dir = hms_strdup (opts->keys_dir);
    self->build = hms_strdup (opts->build ? opts->build : "dev");
    self->node = opts->node && *opts->node ? hms_strdup (opts->node) : NULL;
    snprintf (self->src, sizeof self->src, "%s/%s", opts->kind, opts->instance);
    self->cert = hms_keys_load_secret (opts->keys_dir, opts->key_name ? opts->key_name : opts->kind,
                                       err, errlen);
    if (!self->cert ||
        hms_keys_load_public (opts->keys_dir, "controller", self->server_key, err, errlen)) {
        hms_service_destroy (&self);
        return NULL;
    }
    self->actor = zactor_new (s_actor, self);
    if (!self->actor) {
        snprintf (err, errlen, "cannot connect to the controller at %s / %s", opts->controller,
                  opts->controller_push);
        hms_service_destroy (&self);
        return NULL;
    }
    return self;
}

void hms_service_destroy (hms_service_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_service_t *self = *self_p;
    zactor_destroy (&self->actor);
    zcert_destroy (&self->cert);
    free (self->kind);
    free (self->instance);
    free (self->controller);
    free (self->controller_push);
    free (self->keys_dir);
    free (self->build);
    free (self->node);
    free (self);
    *self_p = NULL;
}

void hms_service_draining (hms_service_t *self)
{
    zstr_send (self->actor, "DRAIN");
}

int64_t hms_service_applied_version (hms_service_t *self)
{
    return atomic_load (&self->applied_version);
}

bool hms_service_connected (hms_service_t *self)
{
    return atomic_load (&self->connected);
}
