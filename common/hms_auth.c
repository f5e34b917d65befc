/* hms_auth: ZAP handler thread admitting authorised CURVE keys. */
#include "hms_auth.h"
#include "hms_alloc.h"
#include "hms_keys.h"
#include "hms_log.h"
#include "hms_time.h"

#include <stdatomic.h>
#include <string.h>

struct hms_auth {
    zactor_t *actor;
    hms_keyring_t *keyring;
    atomic_uint_fast64_t refused;
    zhash_t *last_logged; /* key -> last log time, to rate-limit refusal lines */
};

static void s_reply (zsock_t *zap, const char *request_id, const char *code, const char *text,
                     const char *user_id)
{
    zstr_sendx (zap, "1.0", request_id, code, text, user_id, "", NULL);
}

static void s_handle (hms_auth_t *self, zsock_t *zap)
{
    zmsg_t *msg = zmsg_recv (zap);
    if (!msg)
        return;
    char *version = zmsg_popstr (msg);
    char *request_id = zmsg_popstr (msg);
    char *domain = zmsg_popstr (msg);
    char *address = zmsg_popstr (msg);
    char *identity = zmsg_popstr (msg);
    char *mechanism = zmsg_popstr (msg);
    zframe_t *cred = zmsg_pop (msg);
    char key[41] = "";
    if (mechanism && strcmp (mechanism, "CURVE") == 0 && cred && zframe_size (cred) == 32)
        zmq_z85_encode (key, zframe_data (cred), 32);
    const char *name = NULL, *role = NULL;
    if (key[0] && hms_keyring_lookup (self->keyring, key, &name, &role)) {
        char user[256];
        snprintf (user, sizeof user, "%s:%s", role, name);
        s_reply (zap, request_id ? request_id : "", "200", "OK", user);
    } else {
        atomic_fetch_add (&self->refused, 1);
        const char *who = key[0] ? key : (mechanism ? mechanism : "?");
        int64_t now = hms_mono_ms ();
        int64_t *last = zhash_lookup (self->last_logged, who);
        if (!last || now - *last > 10000) {
            hms_warning ("refused control-plane client: %s address=%s mechanism=%s key=%s "
                         "(add its public cert to authorized/ to admit it)",
                         key[0] ? "public key not authorised" : "not a CURVE client",
                         address ? address : "?", mechanism ? mechanism : "?", who);
            if (!last) {
                last = hms_alloc (sizeof *last);
                zhash_insert (self->last_logged, who, last);
                zhash_freefn (self->last_logged, who, free);
            }
            *last = now;
        }
        s_reply (zap, request_id ? request_id : "", "400", "key not authorised", "");
    }
    (void) version;
    (void) domain;
    (void) identity;
    free (version);
    free (request_id);
    free (domain);
    free (address);
    free (identity);
    free (mechanism);
    zframe_destroy (&cred);
    zmsg_destroy (&msg);
}

static void s_actor (zsock_t *pipe, void *arg)
{
    hms_auth_t *self = arg;
    zsock_t *zap = zsock_new (ZMQ_REP);
    if (!zap || zsock_bind (zap, "inproc://zeromq.zap.01") != 0) {
        hms_error ("cannot bind the ZAP handler (another one in this process?)");
        zsock_signal (pipe, 1);
        zsock_destroy (&zap);
        return;
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, zap, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe) {
            char *cmd = zstr_recv (pipe);
            bool term = !cmd || strcmp (cmd, "$TERM") == 0;
            free (cmd);
            if (term)
                break;
        } else if (which == zap)
            s_handle (self, zap);
        else if (zpoller_terminated (poller))
            break;
    }
    zpoller_destroy (&poller);
    zsock_destroy (&zap);
}

hms_auth_t *hms_auth_new (const char *keys_dir, char *err, size_t errlen)
{
    hms_auth_t *self = hms_alloc (sizeof *self);
    self->keyring = hms_keyring_new (keys_dir, err, errlen);
    if (!self->keyring) {
        free (self);
        return NULL;
    }
    self->last_logged = zhash_new ();
    self->actor = zactor_new (s_actor, self);
    if (!self->actor) {
        snprintf (err, errlen, "cannot start the ZAP handler");
        hms_auth_destroy (&self);
        return NULL;
    }
    return self;
}

void hms_auth_destroy (hms_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_auth_t *self = *self_p;
    zactor_destroy (&self->actor);
    hms_keyring_destroy (&self->keyring);
    zhash_destroy (&self->last_logged);
    free (self);
    *self_p = NULL;
}

uint64_t hms_auth_refused (hms_auth_t *self)
{
    return atomic_load (&self->refused);
}

void hms_auth_peer (zframe_t *frame, char *role, size_t rlen, char *name, size_t nlen)
{
    role[0] = name[0] = 0;
    const char *uid = frame ? zframe_meta (frame, "User-Id") : NULL;
    if (!uid)
        return;
    const char *colon = strchr (uid, ':');
    if (!colon)
        return;
    snprintf (role, rlen, "%.*s", (int) (colon - uid), uid);
    snprintf (name, nlen, "%s", colon + 1);
}
