/* ctl_client: hermesctl's DEALER exchange with the controller. */
#include "ctl_client.h"
#include "hms_bus.h"
#include "hms_keys.h"
#include "hms_msg.h"

#include <czmq.h>

json_t *ctl_client_request (const char *endpoint, const char *keys_dir, const char *type,
                            json_t *body, int timeout_ms, int *unreachable, char *err,
                            size_t errlen)
{
    *unreachable = 0;
    char server_key[41];
    zcert_t *cert = hms_keys_load_secret (keys_dir, "admin", err, errlen);
    if (!cert || hms_keys_load_public (keys_dir, "controller", server_key, err, errlen)) {
        zcert_destroy (&cert);
        json_decref (body);
        return NULL;
    }
    zsock_t *sock = hms_bus_client (ZMQ_DEALER, endpoint, cert, server_key, err, errlen);
    zcert_destroy (&cert);
    if (!sock) {
        json_decref (body);
        return NULL;
    }
    json_t *env = hms_msg_new (type, 1, "hermesctl", body);
    char id[160];
    snprintf (id, sizeof id, "%s", hms_msg_id (env));
    hms_bus_send (sock, NULL, NULL, &env);
    json_t *reply = NULL;
    int64_t deadline = zclock_mono () + timeout_ms;
    zpoller_t *poller = zpoller_new (sock, NULL);
    while (!reply) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0 || !zpoller_wait (poller, (int) left)) {
            *unreachable = 1;
            snprintf (err, errlen,
                      "controller at %s did not answer within %d ms (is it running? is the "
                      "admin key in %s authorised?)",
                      endpoint, timeout_ms, keys_dir);
            break;
        }
        zmsg_t *msg = zmsg_recv (sock);
        zframe_t *frame = msg ? zmsg_last (msg) : NULL;
        const char *code;
        if (frame)
            reply = hms_msg_decode ((const char *) zframe_data (frame), zframe_size (frame), &code,
                                    err, errlen);
        zmsg_destroy (&msg);
        if (reply && strcmp (hms_msg_id (reply), id) != 0) {
            json_decref (reply); /* a late answer to something else */
            reply = NULL;
        } else if (!reply && frame) {
            snprintf (err + strlen (err), errlen - strlen (err), " (unreadable reply)");
            break;
        }
    }
    zpoller_destroy (&poller);
    zsock_destroy (&sock);
    return reply;
}
