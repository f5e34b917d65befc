/* controller: api handlers (one table keyed by message type), instance health, config
 * versions and their push. */
#include "controller.h"
#include "controller_routes.h"
#include "controller_snapshot.h"
#include "controller_store.h"
#include "hms_alloc.h"
#include "hms_auth.h"
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_policy.h"
#include "hms_schema.h"
#include "hms_time.h"

#include <czmq.h>
#include <inttypes.h>
#include <string.h>

/* A service instance as the controller sees it. */
typedef struct {
    char kind[32];
    char instance[160];
    bool session; /* registered with this controller process */
    bool up;
    bool draining; /* its heartbeats say a graceful stop is under way */
    int64_t last_seen_mono;
    int64_t last_seen_wall;
    int64_t registered_wall;
    int64_t applied;
    int64_t rejected;
    int64_t pid;
    char host[256];
    char build[64];
    char node[64]; /* the topology node it serves (relays, ingresses), or "" */
    char *reason;
    json_t *stats;   /* latest counters from its heartbeats */
    zframe_t *route; /* its connection's routing frame, to relay queries to it */
    bool dirty;      /* changed since the last save */
} s_inst_t;

/* A write the controller makes by itself, while the store refuses it (s_retry_*). */
typedef struct {
    int failures;               /* in a row */
    int64_t next_ms, logged_ms; /* monotonic */
} s_retry_t;

struct controller {
    controller_opts_t opts;
    char *api_bind, *push_bind, *db_path, *keys_dir, *instance;
    char src[192];
    zactor_t *actor;
    /* owned by the actor thread after start */
    controller_store_t *store;
    hms_auth_t *auth;
    zcert_t *cert;
    zsock_t *router;
    zsock_t *pub;
    zhash_t *instances; /* "kind/instance" -> s_inst_t */
    int64_t version;
    json_t *state;     /* source state of the current version */
    json_t *snaps[8];  /* compiled snapshot per kind of the current version, or NULL */
    int64_t pushed_ms; /* when the current version was pushed */
    bool converged;    /* every up instance has the current version (or rejected it) */
    uint64_t messages, refused_messages;
    zloop_t *loop;
    zlist_t *queries;             /* s_query_t: operator queries relayed to services */
    hms_policy_set_t *policy_set; /* policies of policy_version, compiled for policy.test */
    int64_t policy_version;
    int64_t started_mono;
    json_t *unavailable; /* node -> why: nodes with relays, none of them up (as stored) */
    bool nodes_dirty;    /* a relay's state changed since s_nodes_check last judged */
    s_retry_t nodes_write, inst_write; /* the controller's own writes, when the store fails */
    char start_err[1024];
};

/* ---- the controller's own writes when the store fails (a full disk) -------------------- */

/* A write the controller makes by itself (node availability, instance rows) that failed is
 * tried again after a back-off (0.5 s, doubling to 8 s), and its error logged once, then at
 * most every 30 s, until it succeeds; admin writes fail to their client as they happen. */
#define S_RETRY_FIRST_MS 500
#define S_RETRY_MAX_MS   8000
#define S_RETRY_LOG_MS   30000

static bool s_retry_due (const s_retry_t *r)
{
    return r->failures == 0 || hms_mono_ms () >= r->next_ms;
}

static void s_retry_failed (s_retry_t *r, const char *what, const char *why)
{
    int64_t now = hms_mono_ms ();
    int shift = r->failures < 4 ? r->failures : 4;
    r->failures++;
    r->next_ms = now + ((int64_t) S_RETRY_FIRST_MS << shift);
    if (r->next_ms > now + S_RETRY_MAX_MS)
        r->next_ms = now + S_RETRY_MAX_MS;
    if (r->failures == 1 || now - r->logged_ms >= S_RETRY_LOG_MS) {
        hms_error ("cannot record %s (try %d, again in %" PRId64 " ms): %s", what, r->failures,
                   r->next_ms - now, why);
        r->logged_ms = now;
    }
}

static void s_retry_ok (s_retry_t *r, const char *what)
{
    if (r->failures)
        hms_info ("recorded %s after %d failed tries", what, r->failures);
    r->failures = 0;
}

/* One request being handled. */
typedef struct {
    json_t *env;
    json_t *body;
    const char *type;
    char role[32];
    char who[96];
    const char *reply_type; /* set by service handlers: reply with this type and body */
    zframe_t *route;        /* the sender's routing frame (borrowed) */
    bool no_reply;          /* answered later (relayed query) or not at all (answers) */
    char reason[256];       /* set by write handlers: why the new version exists */
} s_req_t;

typedef int (s_handler_fn) (controller_t *self, s_req_t *req, json_t **result,
                            controller_err_t *err);

typedef struct {
    const char *type;
    const char *role;
    bool write; /* admin write: one transaction, a new version, an audit row */
    s_handler_fn *fn;
} s_route_t;

static void s_err (controller_err_t *err, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static void s_err (controller_err_t *err, const char *code, const char *fmt, ...)
{
    err->code = code;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (err->text, sizeof err->text, fmt, ap);
    va_end (ap);
}

static void s_inst_free (void *p)
{
    s_inst_t *inst = p;
    json_decref (inst->stats);
    zframe_destroy (&inst->route);
    free (inst->reason);
    free (inst);
}

static s_inst_t *s_inst (controller_t *self, const char *kind, const char *instance, bool create)
{
    char key[256];
    snprintf (key, sizeof key, "%s/%s", kind, instance);
    s_inst_t *inst = zhash_lookup (self->instances, key);
    if (!inst && create) {
        inst = hms_alloc (sizeof *inst);
        snprintf (inst->kind, sizeof inst->kind, "%s", kind);
        snprintf (inst->instance, sizeof inst->instance, "%s", instance);
        inst->reason = hms_strdup ("");
        zhash_insert (self->instances, key, inst);
        zhash_freefn (self->instances, key, s_inst_free);
    }
    return inst;
}

/* Instance rows are soft state: changes are saved together by the sweep timer, one
 * transaction for all of them, instead of one disk sync per heartbeat or ack. */
static void s_inst_persist (controller_t *self, s_inst_t *inst)
{
    inst->dirty = true;
}

static void s_inst_save_dirty (controller_t *self)
{
    if (!s_retry_due (&self->inst_write))
        return;
    controller_err_t err;
    bool open = false;
    int rc = 0;
    for (s_inst_t *inst = zhash_first (self->instances); inst;
         inst = zhash_next (self->instances)) {
        if (!inst->dirty)
            continue;
        if (!open && controller_store_begin (self->store, &err)) {
            s_retry_failed (&self->inst_write, "instance states", err.text);
            return;
        }
        open = true;
        controller_instance_row_t row = {
            .kind = inst->kind,
            .instance = inst->instance,
            .host = inst->host,
            .build = inst->build,
            .state = inst->up ? "up" : "down",
            .reason = inst->reason,
            .pid = inst->pid,
            .registered_ms = inst->registered_wall,
            .last_seen_ms = inst->last_seen_wall,
            .applied = inst->applied,
            .rejected = inst->rejected,
            .node = inst->node,
        };
        if (rc == 0)
            rc = controller_store_instance_save (self->store, &row, &err);
    }
    if (!open)
        return;
    if (rc || controller_store_commit (self->store, &err)) {
        controller_store_rollback (self->store);
        s_retry_failed (&self->inst_write, "instance states", err.text);
        return; /* still dirty: saved with the next try */
    }
    for (s_inst_t *inst = zhash_first (self->instances); inst; inst = zhash_next (self->instances))
        inst->dirty = false;
    s_retry_ok (&self->inst_write, "instance states");
}

/* Logs once when every up instance runs the current version or has rejected it. */
static void s_check_converged (controller_t *self)
{
    if (self->converged)
        return;
    size_t up = 0;
    for (s_inst_t *inst = zhash_first (self->instances); inst;
         inst = zhash_next (self->instances)) {
        if (!inst->up)
            continue;
        if (inst->applied < self->version && inst->rejected != self->version)
            return;
        up++;
    }
    self->converged = true;
    hms_info ("config version=%" PRId64 " converged instances=%zu ms=%" PRId64, self->version, up,
              hms_mono_ms () - self->pushed_ms);
}

static int s_kind_index (const char *kind)
{
    for (int i = 0; controller_kinds[i]; i++)
        if (strcmp (controller_kinds[i], kind) == 0)
            return i;
    return -1;
}

/* {version, kind, config} of version for kind; NULL when the version does not exist. The
 * current version's are compiled once and shared. */
static json_t *s_snapshot (controller_t *self, int64_t version, const char *kind)
{
    int k = s_kind_index (kind);
    if (version == self->version && k >= 0 && self->snaps[k])
        return json_incref (self->snaps[k]);
    json_t *state = version == self->version
                        ? json_incref (self->state)
                        : controller_store_version_state (self->store, version);
    if (!state)
        return NULL;
    json_t *snap = json_pack ("{s:I, s:s, s:o}", "version", (json_int_t) version, "kind", kind,
                              "config", controller_snapshot_compile (state, kind));
    json_decref (state);
    if (version == self->version && k >= 0)
        self->snaps[k] = json_incref (snap);
    return snap;
}

static void s_publish (controller_t *self)
{
    for (int i = 0; controller_kinds[i]; i++) {
        /* a shallow copy: the cached snapshot itself must stay without the epoch */
        json_t *snap = s_snapshot (self, self->version, controller_kinds[i]);
        json_t *body = json_copy (snap);
        json_decref (snap);
        json_object_set_new (body, "epoch", json_string (controller_store_epoch (self->store)));
        json_t *env = hms_msg_new ("config.snapshot", 1, self->src, body);
        hms_bus_send (self->pub, NULL, controller_kinds[i], &env);
    }
}

static void s_load_current (controller_t *self)
{
    for (size_t k = 0; k < sizeof self->snaps / sizeof self->snaps[0]; k++) {
        json_decref (self->snaps[k]);
        self->snaps[k] = NULL;
    }
    self->pushed_ms = hms_mono_ms ();
    self->converged = false;
    self->version = controller_store_version_current (self->store);
    json_decref (self->state);
    self->state = controller_store_version_state (self->store, self->version);
    if (!self->state)
        self->state = json_pack ("{s:[], s:[], s:[]}", "nodes", "links", "policies");
}

/* ---- node availability ------------------------------------------------------------ */

/* What status and stats show: down (silent), draining (stopping gracefully) or up. The
 * database keeps up or down. */
static const char *s_state (const s_inst_t *inst)
{
    return !inst->up ? "down" : inst->draining ? "draining" : "up";
}

/* A relay that has said which node it serves. */
static bool s_node_relay (const s_inst_t *inst)
{
    return strcmp (inst->kind, "relay") == 0 && inst->node[0];
}

/* Up and not draining: routes may send it new flows. */
static bool s_serving (const s_inst_t *inst)
{
    return inst->up && !inst->draining;
}

static int s_down_after_ms (const controller_t *self)
{
    return self->opts.down_after_ms ? self->opts.down_after_ms : 3000;
}

/* node -> null when one of its relays is up (and not draining), false while that cannot be
 * told yet (right after a start, a relay that has not registered again may still be up), else
 * why none is ("relay-a draining, relay-b down"); only nodes some relay instance has served. */
static json_t *s_nodes_health (controller_t *self)
{
    bool starting = hms_mono_ms () - self->started_mono < s_down_after_ms (self);
    json_t *health = json_object ();
    for (s_inst_t *inst = zhash_first (self->instances); inst;
         inst = zhash_next (self->instances)) {
        if (!s_node_relay (inst))
            continue;
        json_t *why = json_object_get (health, inst->node);
        if (s_serving (inst))
            json_object_set_new (health, inst->node, json_null ());
        else if (why && !json_is_string (why))
            continue; /* up, or not known yet: this one changes nothing */
        else if (starting && !inst->session)
            json_object_set_new (health, inst->node, json_false ());
        else if (!why)
            json_object_set_new (health, inst->node,
                                 json_sprintf ("%s %s", inst->instance, s_state (inst)));
        else
            json_object_set_new (health, inst->node,
                                 json_sprintf ("%s, %s %s", json_string_value (why), inst->instance,
                                               s_state (inst)));
    }
    return health;
}

static bool s_same_names (const json_t *a, const json_t *b)
{
    return json_array_size (a) == json_array_size (b) &&
           (!json_array_size (a) || json_equal (a, b));
}

/* Routes go around a node once none of its relays is up (down, or draining in a graceful
 * stop), and through it again when one is: a change makes a new config version (author
 * "controller") when it changes the topology's routes. Right after a start the instances
 * known from the database count as down until they register again, so for down_after_ms
 * a node with such a relay is not judged. Does nothing unless a relay's state changed (or a
 * node still waits to be judged). */
static void s_nodes_check (controller_t *self)
{
    if (!self->unavailable || !self->nodes_dirty || !s_retry_due (&self->nodes_write))
        return;
    self->nodes_dirty = false;
    json_t *health = s_nodes_health (self);
    json_t *changes = json_object (); /* node -> why it is unavailable now, or null */
    const char *node;
    json_t *why;
    json_object_foreach (health, node, why)
    {
        if (json_is_false (why)) {
            self->nodes_dirty = true; /* judged once its relays registered or the time is up */
            continue;
        }
        bool was = json_object_get (self->unavailable, node) != NULL;
        if (was != json_is_string (why))
            json_object_set (changes, node, why);
        else if (was) /* still avoided: say why as of now ("draining", later "down") */
            json_object_set (self->unavailable, node, why);
    }
    json_object_foreach (self->unavailable, node, why)
    {
        if (!json_object_get (health, node)) /* no relay serves it any more */
            json_object_set_new (changes, node, json_null ());
    }
    json_decref (health);
    if (json_object_size (changes) == 0) {
        json_decref (changes);
        return;
    }
    char reason[1024] = "";
    size_t n = 0;
    controller_err_t err = {0};
    int rc = controller_store_begin (self->store, &err);
    json_object_foreach (changes, node, why)
    {
        if (rc)
            break;
        bool out = json_is_string (why);
        if (n < sizeof reason)
            n += (size_t) snprintf (reason + n, sizeof reason - n,
                                    out ? "%sroutes avoid node %s: no relay of it is up (%s)"
                                        : "%sroutes use node %s again: a relay of it is up%s",
                                    n ? "; " : "", node, out ? json_string_value (why) : "");
        rc = controller_store_unavailable_set (self->store, node, out,
                                               out ? json_string_value (why) : "", &err);
    }
    int64_t version = 0;
    if (rc == 0) {
        /* a new version only when the topology's list changes (a node it has) */
        json_t *state = controller_store_state (self->store);
        if (!s_same_names (json_object_get (state, "unavailable"),
                           json_object_get (self->state, "unavailable")))
            version = controller_store_version_new (self->store, "controller", reason, &err);
        json_decref (state);
    }
    if (rc || version < 0 || controller_store_commit (self->store, &err)) {
        controller_store_rollback (self->store);
        char what[1100];
        snprintf (what, sizeof what, "node availability (%s)", reason);
        s_retry_failed (&self->nodes_write, what, err.text);
        self->nodes_dirty = true; /* tried again after the back-off */
        json_decref (changes);
        return;
    }
    s_retry_ok (&self->nodes_write, "node availability");
    json_object_foreach (changes, node, why)
    {
        if (json_is_string (why))
            json_object_set (self->unavailable, node, why);
        else
            json_object_del (self->unavailable, node);
    }
    json_decref (changes);
    if (version == 0) {
        hms_info ("nodes outside the topology: %s", reason);
        return;
    }
    s_load_current (self);
    hms_info ("config version=%" PRId64 " by=controller reason=\"%s\"", version, reason);
    s_publish (self);
}

/* ---- service messages ------------------------------------------------------------ */

/* Service keys are named after their kind: a relay key may only speak for relays. */
static int s_check_kind (s_req_t *req, const char *kind, controller_err_t *err)
{
    if (strcmp (req->who, kind) != 0) {
        s_err (err, HMS_ERR_FORBIDDEN, "key '%s' may not act for kind '%s'", req->who, kind);
        return -1;
    }
    return 0;
}

static int s_on_register (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    const char *kind = json_string_value (json_object_get (req->body, "kind"));
    const char *name = json_string_value (json_object_get (req->body, "instance"));
    if (s_check_kind (req, kind, err))
        return -1;
    const char *host = json_string_value (json_object_get (req->body, "host"));
    const char *build = json_string_value (json_object_get (req->body, "build"));
    int64_t pid = json_integer_value (json_object_get (req->body, "pid"));
    int64_t applied = json_integer_value (json_object_get (req->body, "applied_version"));
    s_inst_t *inst = s_inst (self, kind, name, true);
    bool was_up = inst->up;
    zframe_destroy (&inst->route);
    inst->route = zframe_dup (req->route);
    inst->session = true;
    inst->up = true;
    inst->draining = false; /* a new process */
    inst->last_seen_mono = hms_mono_ms ();
    inst->last_seen_wall = hms_wall_ms ();
    if (applied > self->version)
        applied = 0; /* from another database: it will take ours */
    inst->applied = applied;
    inst->pid = pid;
    inst->registered_wall = inst->last_seen_wall;
    snprintf (inst->host, sizeof inst->host, "%s", host ? host : "");
    snprintf (inst->build, sizeof inst->build, "%s", build ? build : "");
    const char *node = json_string_value (json_object_get (req->body, "node"));
    snprintf (inst->node, sizeof inst->node, "%s", node ? node : "");
    s_inst_persist (self, inst);
    hms_info ("registered kind=%s instance=%s host=%s pid=%" PRId64 "%s%s%s", kind, name,
              host ? host : "?", pid, node ? " node=" : "", node ? node : "",
              was_up ? " (again)" : "");
    self->nodes_dirty = true; /* a new process: up, not draining, maybe another node */
    s_nodes_check (self);
    /* The current version, unless this instance rejected it: then the newest it applied. */
    json_t *snap = NULL;
    if (self->version > 0 && inst->rejected != self->version)
        snap = s_snapshot (self, self->version, kind);
    else if (inst->applied > 0)
        snap = s_snapshot (self, inst->applied, kind);
    *result = json_pack ("{s:s, s:I, s:o}", "epoch", controller_store_epoch (self->store),
                         "config_version", (json_int_t) self->version, "snapshot",
                         snap ? snap : json_null ());
    req->reply_type = "register.ok";
    return 0;
}

static s_inst_t *s_session (controller_t *self, s_req_t *req, controller_err_t *err)
{
    const char *kind = json_string_value (json_object_get (req->body, "kind"));
    const char *name = json_string_value (json_object_get (req->body, "instance"));
    if (s_check_kind (req, kind, err))
        return NULL;
    s_inst_t *inst = s_inst (self, kind, name, false);
    if (!inst || !inst->session) {
        s_err (err, HMS_ERR_UNREGISTERED, "instance %s/%s is not registered: send register", kind,
               name);
        return NULL;
    }
    inst->last_seen_mono = hms_mono_ms ();
    inst->last_seen_wall = hms_wall_ms ();
    if (!inst->route || !zframe_eq (inst->route, req->route)) {
        zframe_destroy (&inst->route);
        inst->route = zframe_dup (req->route);
    }
    if (!inst->up) {
        inst->up = true;
        hms_info ("instance up again kind=%s instance=%s", kind, name);
        self->nodes_dirty = true;
        s_inst_persist (self, inst);
    }
    return inst;
}

static int s_on_heartbeat (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    s_inst_t *inst = s_session (self, req, err);
    if (!inst)
        return -1;
    bool draining = json_is_true (json_object_get (req->body, "draining"));
    if (draining && !inst->draining)
        hms_info ("instance draining kind=%s instance=%s", inst->kind, inst->instance);
    if (draining != inst->draining)
        self->nodes_dirty = true;
    inst->draining = draining;
    s_nodes_check (self);
    json_t *stats = json_object_get (req->body, "stats");
    if (stats) {
        json_decref (inst->stats);
        inst->stats = json_incref (stats);
    }
    *result = json_pack ("{s:s, s:I}", "epoch", controller_store_epoch (self->store),
                         "config_version", (json_int_t) self->version);
    /* Behind and not refusing the current version: the PUB was missed, send it here. */
    if (inst->applied < self->version && inst->rejected != self->version)
        json_object_set_new (*result, "snapshot", s_snapshot (self, self->version, inst->kind));
    req->reply_type = "heartbeat.ok";
    return 0;
}

static int s_on_ack (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    s_inst_t *inst = s_session (self, req, err);
    if (!inst)
        return -1;
    int64_t version = json_integer_value (json_object_get (req->body, "version"));
    const char *outcome = json_string_value (json_object_get (req->body, "result"));
    const char *reason = json_string_value (json_object_get (req->body, "reason"));
    if (strcmp (outcome, "applied") == 0) {
        if (version > inst->applied)
            inst->applied = version;
        hms_debug ("controller.acks", "config applied kind=%s instance=%s version=%" PRId64,
                   inst->kind, inst->instance, version);
    } else {
        inst->rejected = version;
        free (inst->reason);
        inst->reason = hms_strdup (reason ? reason : "no reason given");
        hms_warning ("config rejected kind=%s instance=%s version=%" PRId64
                     " reason=\"%s\" (it keeps version %" PRId64 "; fix the config and push a "
                     "new version)",
                     inst->kind, inst->instance, version, inst->reason, inst->applied);
    }
    s_inst_persist (self, inst);
    s_check_converged (self);
    *result = json_null ();
    return 0;
}

/* ---- admin reads ----------------------------------------------------------------- */

static int s_on_status (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    json_t *services = json_array ();
    json_array_append_new (services, json_pack ("{s:s, s:s, s:s, s:I, s:I}", "kind", "controller",
                                                "instance", self->instance, "state", "up",
                                                "applied_version", (json_int_t) self->version,
                                                "last_seen_ms", (json_int_t) hms_wall_ms ()));
    zlist_t *keys = zhash_keys (self->instances);
    zlist_sort (keys, NULL);
    for (char *key = zlist_first (keys); key; key = zlist_next (keys)) {
        s_inst_t *inst = zhash_lookup (self->instances, key);
        json_t *svc = json_pack (
            "{s:s, s:s, s:s, s:I, s:I, s:s, s:I}", "kind", inst->kind, "instance", inst->instance,
            "state", s_state (inst), "applied_version", (json_int_t) inst->applied, "last_seen_ms",
            (json_int_t) inst->last_seen_wall, "host", inst->host, "pid", (json_int_t) inst->pid);
        if (inst->node[0])
            json_object_set_new (svc, "node", json_string (inst->node));
        if (inst->rejected) {
            json_object_set_new (svc, "rejected_version", json_integer (inst->rejected));
            json_object_set_new (svc, "reject_reason", json_string (inst->reason));
        }
        json_array_append_new (services, svc);
    }
    zlist_destroy (&keys);
    *result = json_pack ("{s:I, s:s, s:o, s:{s:I, s:I, s:I}}", "config_version",
                         (json_int_t) self->version, "epoch", controller_store_epoch (self->store),
                         "services", services, "counters", "messages", (json_int_t) self->messages,
                         "refused_messages", (json_int_t) self->refused_messages, "auth_refused",
                         (json_int_t) hms_auth_refused (self->auth));
    return 0;
}

static int s_on_stats (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    const char *kind = json_string_value (json_object_get (req->body, "kind"));
    json_t *rows = json_array ();
    zlist_t *keys = zhash_keys (self->instances);
    zlist_sort (keys, NULL);
    for (char *key = zlist_first (keys); key; key = zlist_next (keys)) {
        s_inst_t *inst = zhash_lookup (self->instances, key);
        if (kind && strcmp (kind, inst->kind) != 0)
            continue;
        json_array_append_new (
            rows, json_pack ("{s:s, s:s, s:s, s:o}", "kind", inst->kind, "instance", inst->instance,
                             "state", s_state (inst), "stats",
                             inst->stats ? json_incref (inst->stats) : json_object ()));
    }
    zlist_destroy (&keys);
    *result = rows;
    return 0;
}

/* The topology's nodes, each with its relay instances (how many, how many up) and, when
 * routes avoid it, why. */
static int s_on_node_list (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    *result = controller_store_nodes (self->store);
    size_t i;
    json_t *row;
    json_array_foreach (*result, i, row)
    {
        const char *name = json_string_value (json_object_get (row, "name"));
        json_int_t relays = 0, up = 0;
        for (s_inst_t *inst = zhash_first (self->instances); inst;
             inst = zhash_next (self->instances)) {
            if (s_node_relay (inst) && strcmp (inst->node, name) == 0) {
                relays++;
                up += s_serving (inst);
            }
        }
        json_object_set_new (row, "relays", json_integer (relays));
        json_object_set_new (row, "relays_up", json_integer (up));
        json_t *why = json_object_get (self->unavailable, name);
        if (why)
            json_object_set (row, "avoided", why);
    }
    return 0;
}

static int s_on_link_list (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    *result = controller_store_links (self->store);
    return 0;
}

static int s_on_policy_list (controller_t *self, s_req_t *req, json_t **result,
                             controller_err_t *err)
{
    *result = controller_store_policies (self->store);
    return 0;
}

static int s_limit (s_req_t *req, int dflt)
{
    json_t *limit = json_object_get (req->body, "limit");
    return limit ? (int) json_integer_value (limit) : dflt;
}

static int s_on_config_history (controller_t *self, s_req_t *req, json_t **result,
                                controller_err_t *err)
{
    *result = controller_store_version_history (self->store, s_limit (req, 20));
    return 0;
}

static int s_on_audit_list (controller_t *self, s_req_t *req, json_t **result,
                            controller_err_t *err)
{
    *result = controller_store_audit_list (self->store, s_limit (req, 20));
    return 0;
}

static const char *s_str (s_req_t *req, const char *key)
{
    return json_string_value (json_object_get (req->body, key));
}

static int s_on_route_show (controller_t *self, s_req_t *req, json_t **result,
                            controller_err_t *err)
{
    json_t *all = controller_routes_compute (json_object_get (self->state, "nodes"),
                                             json_object_get (self->state, "links"),
                                             json_object_get (self->state, "unavailable"));
    *result = controller_routes_filter (all, s_str (req, "from"), s_str (req, "to"));
    json_decref (all);
    return 0;
}

static int s_on_config_show (controller_t *self, s_req_t *req, json_t **result,
                             controller_err_t *err)
{
    json_t *v = json_object_get (req->body, "version");
    int64_t version = v ? json_integer_value (v) : self->version;
    const char *kind = json_string_value (json_object_get (req->body, "kind"));
    json_t *state = version == self->version
                        ? json_incref (self->state)
                        : controller_store_version_state (self->store, version);
    if (!state) {
        s_err (err, HMS_ERR_NOT_FOUND, "no config version %" PRId64 " (current is %" PRId64 ")",
               version, self->version);
        return -1;
    }
    json_t *configs = json_object ();
    for (int i = 0; controller_kinds[i]; i++)
        if (!kind || strcmp (kind, controller_kinds[i]) == 0)
            json_object_set_new (configs, controller_kinds[i],
                                 controller_snapshot_compile (state, controller_kinds[i]));
    *result = json_pack ("{s:I, s:o, s:o}", "version", (json_int_t) version, "state", state,
                         "configs", configs);
    return 0;
}

/* What the current version's policies decide for one query, with the policy engine's own
 * code; a dry run (rate limits are not spent). The compiled set is kept per version. */
static int s_on_policy_test (controller_t *self, s_req_t *req, json_t **result,
                             controller_err_t *err)
{
    if (!self->policy_set || self->policy_version != self->version) {
        char why[900];
        hms_policy_destroy (&self->policy_set);
        self->policy_set =
            hms_policy_compile (json_object_get (self->state, "policies"), why, sizeof why);
        if (!self->policy_set) {
            s_err (err, HMS_ERR_INVALID,
                   "policies of config version %" PRId64 " do not compile: %s (fix or delete "
                   "that policy)",
                   self->version, why);
            return -1;
        }
        self->policy_version = self->version;
    }
    hms_policy_query_t query;
    hms_policy_decision_t decision;
    hms_policy_query_from_json (req->body, &query);
    hms_policy_evaluate (self->policy_set, &query, HMS_POLICY_DRY_RUN, &decision);
    *result = hms_policy_decision_to_json (&decision);
    json_object_set_new (*result, "version", json_integer (self->version));
    return 0;
}

/* ---- admin writes (run inside one transaction by s_dispatch) --------------------- */

static int s_on_node_add (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    snprintf (req->reason, sizeof req->reason, "node add %s", s_str (req, "name"));
    return controller_store_node_add (self->store, s_str (req, "name"), s_str (req, "address"),
                                      s_str (req, "site"), err);
}

static int s_on_node_del (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    snprintf (req->reason, sizeof req->reason, "node del %s", s_str (req, "name"));
    return controller_store_node_del (self->store, s_str (req, "name"), err);
}

static int s_on_link_add (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    json_t *cost = json_object_get (req->body, "cost");
    const char *transport = s_str (req, "transport");
    snprintf (req->reason, sizeof req->reason, "link add %s %s", s_str (req, "from"),
              s_str (req, "to"));
    return controller_store_link_add (self->store, s_str (req, "from"), s_str (req, "to"),
                                      cost ? json_integer_value (cost) : 1,
                                      transport ? transport : "h2", err);
}

static int s_on_link_del (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    snprintf (req->reason, sizeof req->reason, "link del %s %s", s_str (req, "from"),
              s_str (req, "to"));
    return controller_store_link_del (self->store, s_str (req, "from"), s_str (req, "to"), err);
}

static int s_on_policy_add (controller_t *self, s_req_t *req, json_t **result,
                            controller_err_t *err)
{
    json_t *doc = json_object_get (req->body, "policy");
    char why[768];
    if (hms_schemas_validate ("config/policy.v1", doc, why, sizeof why)) {
        s_err (err, HMS_ERR_INVALID, "policy document: %s", why);
        return -1;
    }
    int replaced = 0;
    const char *id = json_string_value (json_object_get (doc, "id"));
    if (controller_store_policy_add (self->store, doc, &replaced, err))
        return -1;
    snprintf (req->reason, sizeof req->reason, "policy %s %s", replaced ? "replace" : "add", id);
    *result = json_pack ("{s:s, s:b}", "id", id, "replaced", replaced);
    return 0;
}

static int s_on_policy_del (controller_t *self, s_req_t *req, json_t **result,
                            controller_err_t *err)
{
    snprintf (req->reason, sizeof req->reason, "policy del %s", s_str (req, "id"));
    return controller_store_policy_del (self->store, s_str (req, "id"), err);
}

static int s_on_rollback (controller_t *self, s_req_t *req, json_t **result, controller_err_t *err)
{
    int64_t version = json_integer_value (json_object_get (req->body, "version"));
    json_t *state = controller_store_version_state (self->store, version);
    if (!state) {
        s_err (err, HMS_ERR_NOT_FOUND, "no config version %" PRId64 " to roll back to", version);
        return -1;
    }
    int rc = controller_store_restore (self->store, state, err);
    json_decref (state);
    snprintf (req->reason, sizeof req->reason, "rollback to %" PRId64, version);
    *result = json_pack ("{s:I}", "restored", (json_int_t) version);
    return rc;
}

/* ---- operator queries relayed to services ---------------------------------------------- */

typedef struct {
    char id[96];
    zframe_t *admin_route;
    json_t *admin_env;
    json_t *answers; /* instance -> {result} | {error} */
    json_t *asked;   /* instance names asked */
    int timer;
} s_query_t;

static void s_query_finish (controller_t *self, s_query_t *q)
{
    json_t *rows = json_array ();
    size_t i;
    json_t *name;
    json_array_foreach (q->asked, i, name)
    {
        json_t *a = json_object_get (q->answers, json_string_value (name));
        json_t *row = a ? json_deep_copy (a) : json_pack ("{s:s}", "error", "no answer in time");
        json_object_set (row, "instance", name);
        json_array_append_new (rows, row);
    }
    json_t *reply = hms_msg_reply (q->admin_env, "ok", self->src,
                                   json_pack ("{s:{s:o}}", "result", "answers", rows));
    hms_bus_send (self->router, &q->admin_route, NULL, &reply);
    if (q->timer)
        zloop_timer_end (self->loop, q->timer);
    zlist_remove (self->queries, q);
    zframe_destroy (&q->admin_route);
    json_decref (q->admin_env);
    json_decref (q->answers);
    json_decref (q->asked);
    free (q);
}

static int s_on_query_timeout (zloop_t *loop, int timer_id, void *arg)
{
    controller_t *self = arg;
    for (s_query_t *q = zlist_first (self->queries); q; q = zlist_next (self->queries))
        if (q->timer == timer_id) {
            q->timer = 0;
            s_query_finish (self, q);
            break;
        }
    return 0;
}

static int s_on_bypass_query (controller_t *self, s_req_t *req, json_t **result,
                              controller_err_t *err)
{
    const char *op = s_str (req, "op");
    const char *only = s_str (req, "instance");
    s_query_t *q = hms_alloc (sizeof *q);
    q->answers = json_object ();
    q->asked = json_array ();
    json_t *env = hms_msg_new ("service.query", 1, self->src, json_pack ("{s:s}", "op", op));
    snprintf (q->id, sizeof q->id, "%s", hms_msg_id (env));
    for (s_inst_t *inst = zhash_first (self->instances); inst;
         inst = zhash_next (self->instances)) {
        if (strcmp (inst->kind, "bypass") || !inst->up || !inst->session || !inst->route ||
            (only && strcmp (only, inst->instance)))
            continue;
        zframe_t *route = zframe_dup (inst->route);
        json_t *copy = json_incref (env);
        hms_bus_send (self->router, &route, NULL, &copy);
        json_array_append_new (q->asked, json_string (inst->instance));
    }
    json_decref (env);
    if (json_array_size (q->asked) == 0) {
        json_decref (q->answers);
        json_decref (q->asked);
        free (q);
        s_err (err, HMS_ERR_NOT_FOUND,
               only ? "no bypass agent '%s' is up" : "no bypass agent is up%s", only ? only : "");
        return -1;
    }
    q->admin_route = zframe_dup (req->route);
    q->admin_env = json_incref (req->env);
    q->timer = zloop_timer (self->loop, 2000, 1, s_on_query_timeout, self);
    zlist_append (self->queries, q);
    req->no_reply = true;
    return 0;
}

static int s_on_service_answer (controller_t *self, s_req_t *req, json_t **result,
                                controller_err_t *err)
{
    req->no_reply = true;
    const char *id = hms_msg_id (req->env);
    for (s_query_t *q = zlist_first (self->queries); q; q = zlist_next (self->queries))
        if (strcmp (q->id, id) == 0) {
            /* who answered: the instance whose connection this is */
            for (s_inst_t *inst = zhash_first (self->instances); inst;
                 inst = zhash_next (self->instances))
                if (inst->route && zframe_eq (inst->route, req->route)) {
                    json_t *a = json_object ();
                    json_t *r = json_object_get (req->body, "result");
                    json_t *e = json_object_get (req->body, "error");
                    if (r)
                        json_object_set (a, "result", r);
                    if (e)
                        json_object_set (a, "error", e);
                    json_object_set_new (q->answers, inst->instance, a);
                    break;
                }
            if (json_object_size (q->answers) >= json_array_size (q->asked))
                s_query_finish (self, q);
            break;
        }
    return 0;
}

static const s_route_t s_routes[] = {
    {"register", "service", false, s_on_register},
    {"heartbeat", "service", false, s_on_heartbeat},
    {"config.ack", "service", false, s_on_ack},
    {"service.answer", "service", false, s_on_service_answer},
    {"bypass.query", "admin", false, s_on_bypass_query},
    {"status", "admin", false, s_on_status},
    {"stats", "admin", false, s_on_stats},
    {"node.list", "admin", false, s_on_node_list},
    {"link.list", "admin", false, s_on_link_list},
    {"policy.list", "admin", false, s_on_policy_list},
    {"config.show", "admin", false, s_on_config_show},
    {"route.show", "admin", false, s_on_route_show},
    {"policy.test", "admin", false, s_on_policy_test},
    {"config.history", "admin", false, s_on_config_history},
    {"audit.list", "admin", false, s_on_audit_list},
    {"node.add", "admin", true, s_on_node_add},
    {"node.del", "admin", true, s_on_node_del},
    {"link.add", "admin", true, s_on_link_add},
    {"link.del", "admin", true, s_on_link_del},
    {"policy.add", "admin", true, s_on_policy_add},
    {"policy.del", "admin", true, s_on_policy_del},
    {"config.rollback", "admin", true, s_on_rollback},
    {NULL, NULL, false, NULL},
};

/* Runs a write handler in one transaction with its new version and audit row. */
static int s_write (controller_t *self, const s_route_t *route, s_req_t *req, json_t **result,
                    controller_err_t *err)
{
    if (controller_store_begin (self->store, err))
        return -1;
    int64_t version = -1;
    int rc = route->fn (self, req, result, err);
    if (rc == 0)
        version = controller_store_version_new (self->store, req->who, req->reason, err);
    if (version > 0 &&
        controller_store_audit (self->store, req->who, req->type, req->body, "ok", req->reason) ==
            0 &&
        controller_store_commit (self->store, err) == 0) {
        if (!*result)
            *result = json_object ();
        json_object_set_new (*result, "version", json_integer (version));
        s_load_current (self);
        hms_info ("config version=%" PRId64 " by=%s reason=\"%s\"", version, req->who, req->reason);
        s_publish (self);
        return 0;
    }
    controller_store_rollback (self->store);
    json_decref (*result);
    *result = NULL;
    if (!err->code)
        s_err (err, HMS_ERR_INTERNAL, "could not record the change (see the controller's log)");
    controller_store_audit (self->store, req->who, req->type, req->body, err->code, err->text);
    return -1;
}

static json_t *s_dispatch (controller_t *self, s_req_t *req)
{
    const s_route_t *route = NULL;
    for (int i = 0; s_routes[i].type; i++)
        if (strcmp (s_routes[i].type, req->type) == 0)
            route = &s_routes[i];
    if (!route)
        return hms_msg_error (req->env, self->src, HMS_ERR_UNKNOWN_TYPE,
                              "the controller does not handle '%s' messages", req->type);
    if (strcmp (route->role, req->role) != 0) {
        hms_warning ("refused %s from key=%s role=%s: needs role %s", req->type, req->who,
                     req->role, route->role);
        return hms_msg_error (req->env, self->src, HMS_ERR_FORBIDDEN,
                              "'%s' needs a key with role %s; key '%s' has role %s", req->type,
                              route->role, req->who, req->role);
    }
    json_t *result = NULL;
    controller_err_t err = {0};
    int rc = route->write ? s_write (self, route, req, &result, &err)
                          : route->fn (self, req, &result, &err);
    if (rc) {
        if (strcmp (req->role, "admin") == 0)
            hms_info ("refused %s by=%s code=%s: %s", req->type, req->who, err.code, err.text);
        return hms_msg_error (req->env, self->src, err.code ? err.code : HMS_ERR_INTERNAL, "%s",
                              err.text);
    }
    if (req->no_reply) {
        json_decref (result);
        return NULL;
    }
    if (req->reply_type)
        return hms_msg_reply (req->env, req->reply_type, self->src, result);
    return hms_msg_reply (req->env, "ok", self->src,
                          json_pack ("{s:o}", "result", result ? result : json_null ()));
}

static int s_on_router (zloop_t *loop, zsock_t *sock, void *arg)
{
    controller_t *self = arg;
    s_req_t req = {0};
    zframe_t *route = NULL;
    json_t *reply = NULL;
    if (hms_bus_recv_request (sock, self->src, &route, &req.env, &reply, req.role, sizeof req.role,
                              req.who, sizeof req.who) == -2)
        return 0;
    self->messages++;
    if (req.env) {
        req.body = hms_msg_body (req.env);
        req.type = hms_msg_type (req.env);
        req.route = route;
        reply = s_dispatch (self, &req);
    }
    if (req.no_reply) {
        json_decref (reply);
        json_decref (req.env);
        zframe_destroy (&route);
        return 0;
    }
    if (strcmp (hms_msg_type (reply), "error") == 0) {
        self->refused_messages++;
        if (!req.env)
            hms_warning ("refused message from key=%s: %s", req.who[0] ? req.who : "?",
                         json_string_value (json_object_get (hms_msg_body (reply), "message")));
    }
    hms_bus_send (sock, &route, NULL, &reply);
    json_decref (req.env);
    zframe_destroy (&route);
    return 0;
}

static int s_on_sweep (zloop_t *loop, int timer_id, void *arg)
{
    controller_t *self = arg;
    int64_t now = hms_mono_ms ();
    int limit = s_down_after_ms (self);
    for (s_inst_t *inst = zhash_first (self->instances); inst;
         inst = zhash_next (self->instances)) {
        if (inst->up && now - inst->last_seen_mono > limit) {
            inst->up = false;
            self->nodes_dirty = true;
            hms_warning ("instance down kind=%s instance=%s silent_ms=%" PRId64, inst->kind,
                         inst->instance, now - inst->last_seen_mono);
            s_inst_persist (self, inst);
        }
    }
    s_check_converged (self);
    s_nodes_check (self);
    s_inst_save_dirty (self);
    return 0;
}

static int s_on_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    char *cmd = zstr_recv (pipe);
    bool term = !cmd || strcmp (cmd, "$TERM") == 0;
    free (cmd);
    return term ? -1 : 0;
}

static int s_start (controller_t *self)
{
    controller_err_t cerr = {0};
    char err[1024];
    self->store = controller_store_open (self->db_path, &cerr);
    if (!self->store) {
        snprintf (self->start_err, sizeof self->start_err, "%s", cerr.text);
        return -1;
    }
    if (controller_store_version_current (self->store) == 0) {
        if (controller_store_begin (self->store, &cerr) ||
            controller_store_version_new (self->store, "controller", "initial", &cerr) < 0 ||
            controller_store_commit (self->store, &cerr)) {
            snprintf (self->start_err, sizeof self->start_err, "%s", cerr.text);
            return -1;
        }
    }
    s_load_current (self);
    /* Everything known is down until it registers with this process. */
    json_t *rows = controller_store_instances (self->store);
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row)
    {
        s_inst_t *inst = s_inst (self, json_string_value (json_object_get (row, "kind")),
                                 json_string_value (json_object_get (row, "instance")), true);
        inst->applied = json_integer_value (json_object_get (row, "applied_version"));
        inst->rejected = json_integer_value (json_object_get (row, "rejected_version"));
        inst->last_seen_wall = json_integer_value (json_object_get (row, "last_seen_ms"));
        inst->registered_wall = json_integer_value (json_object_get (row, "registered_ms"));
        inst->pid = json_integer_value (json_object_get (row, "pid"));
        snprintf (inst->host, sizeof inst->host, "%s",
                  json_string_value (json_object_get (row, "host")));
        snprintf (inst->build, sizeof inst->build, "%s",
                  json_string_value (json_object_get (row, "build")));
        snprintf (inst->node, sizeof inst->node, "%s",
                  json_string_value (json_object_get (row, "node")));
        free (inst->reason);
        inst->reason = hms_strdup (json_string_value (json_object_get (row, "reject_reason")));
        if (strcmp (json_string_value (json_object_get (row, "state")), "up") == 0)
            s_inst_persist (self, inst); /* inst->up is false: record it down */
    }
    json_decref (rows);
    s_inst_save_dirty (self);
    self->started_mono = hms_mono_ms ();
    self->unavailable = controller_store_unavailable (self->store);
    self->nodes_dirty = true;
    self->auth = hms_auth_new (self->keys_dir, err, sizeof err);
    self->cert =
        self->auth ? hms_keys_load_secret (self->keys_dir, "controller", err, sizeof err) : NULL;
    if (self->cert)
        self->router = hms_bus_server (ZMQ_ROUTER, self->api_bind, self->cert, err, sizeof err);
    if (self->router)
        self->pub = hms_bus_server (ZMQ_PUB, self->push_bind, self->cert, err, sizeof err);
    if (!self->pub) {
        snprintf (self->start_err, sizeof self->start_err, "%s", err);
        return -1;
    }
    hms_info ("serving api=%s push=%s db=%s config_version=%" PRId64 " schema=%d", self->api_bind,
              self->push_bind, self->db_path, self->version,
              controller_store_schema_version (self->store));
    return 0;
}

static void s_actor (zsock_t *pipe, void *arg)
{
    controller_t *self = arg;
    if (s_start (self)) {
        zsock_signal (pipe, 1);
        return;
    }
    zsock_signal (pipe, 0);
    zloop_t *loop = zloop_new ();
    self->loop = loop;
    self->queries = zlist_new ();
    zloop_reader (loop, pipe, s_on_pipe, self);
    zloop_reader (loop, self->router, s_on_router, self);
    zloop_timer (loop, 250, 0, s_on_sweep, self);
    zloop_set_nonstop (loop, true);
    zloop_start (loop);
    while (zlist_size (self->queries))
        s_query_finish (self, zlist_first (self->queries));
    zlist_destroy (&self->queries);
    zloop_destroy (&loop);
    self->loop = NULL;
}

controller_t *controller_new (const controller_opts_t *opts, char *err, size_t errlen)
{
    controller_t *self = hms_alloc (sizeof *self);
    self->opts = *opts;
    self->api_bind = hms_strdup (opts->api_bind);
    self->push_bind = hms_strdup (opts->push_bind);
    self->db_path = hms_strdup (opts->db);
    self->keys_dir = hms_strdup (opts->keys_dir);
    self->instance = hms_strdup (opts->instance ? opts->instance : "controller");
    snprintf (self->src, sizeof self->src, "controller/%s", self->instance);
    self->instances = zhash_new ();
    self->actor = zactor_new (s_actor, self);
    if (self->start_err[0]) {
        snprintf (err, errlen, "%s", self->start_err[0] ? self->start_err : "cannot start");
        controller_destroy (&self);
        return NULL;
    }
    return self;
}

void controller_destroy (controller_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    controller_t *self = *self_p;
    zactor_destroy (&self->actor);
    if (self->store)
        s_inst_save_dirty (self);
    for (size_t k = 0; k < sizeof self->snaps / sizeof self->snaps[0]; k++)
        json_decref (self->snaps[k]);
    zsock_destroy (&self->router);
    zsock_destroy (&self->pub);
    hms_auth_destroy (&self->auth);
    zcert_destroy (&self->cert);
    controller_store_destroy (&self->store);
    zhash_destroy (&self->instances);
    json_decref (self->state);
    json_decref (self->unavailable);
    hms_policy_destroy (&self->policy_set);
    free (self->api_bind);
    free (self->push_bind);
    free (self->db_path);
    free (self->keys_dir);
    free (self->instance);
    free (self);
    *self_p = NULL;
}
