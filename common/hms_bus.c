/* hms_bus: CURVE-secured ZeroMQ sockets and envelope sending. */
#include "hms_bus.h"
#include "hms_auth.h"
#include "hms_msg.h"

#include <errno.h>
#include <string.h>

static void s_common_opts (zsock_t *sock)
{
    zsock_set_linger (sock, 0);
    zsock_set_maxmsgsize (sock, HMS_BUS_MAX_WIRE);
    zsock_set_sndhwm (sock, 10000);
    zsock_set_rcvhwm (sock, 10000);
}

zsock_t *hms_bus_server (int type, const char *endpoint, zcert_t *cert, char *err, size_t errlen)
{
    zsock_t *sock = zsock_new (type);
    if (!sock) {
        snprintf (err, errlen, "cannot create socket for %s", endpoint);
        return NULL;
    }
    s_common_opts (sock);
    zcert_apply (cert, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, "hermes");
    if (zsock_bind (sock, "%s", endpoint) < 0) {
        snprintf (err, errlen, "cannot bind %s: %s (is another instance running?)", endpoint,
                  zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

zsock_t *hms_bus_client (int type, const char *endpoint, zcert_t *cert, const char *server_key,
                         char *err, size_t errlen)
{
    zsock_t *sock = zsock_new (type);
    if (!sock) {
        snprintf (err, errlen, "cannot create socket for %s", endpoint);
        return NULL;
    }
    s_common_opts (sock);
    zsock_set_reconnect_ivl (sock, 100);
    zsock_set_reconnect_ivl_max (sock, 1000);
    zcert_apply (cert, sock);
    zsock_set_curve_serverkey (sock, server_key);
    if (zsock_connect (sock, "%s", endpoint) < 0) {
        snprintf (err, errlen, "cannot connect to %s: %s (check the endpoint)", endpoint,
                  zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

int hms_bus_send (zsock_t *sock, zframe_t **route_p, const char *topic, json_t **env_p)
{
    char *text = hms_msg_encode (*env_p);
    json_decref (*env_p);
    *env_p = NULL;
    zmsg_t *msg = zmsg_new ();
    if (route_p && *route_p)
        zmsg_append (msg, route_p);
    if (topic)
        zmsg_addstr (msg, topic);
    zmsg_addstr (msg, text);
    free (text);
    return zmsg_send (&msg, sock);
}

int hms_bus_recv_request (zsock_t *router, const char *src, zframe_t **route, json_t **env,
                          json_t **reply, char *role, size_t rlen, char *who, size_t wlen)
{
    *env = *reply = NULL;
    zmsg_t *msg = zmsg_recv (router);
    if (!msg)
        return -2;
    *route = zmsg_pop (msg);
    zframe_t *frame = zmsg_first (msg);
    hms_auth_peer (frame, role, rlen, who, wlen);
    if (zmsg_size (msg) != 1)
        *reply = hms_msg_error (NULL, src, HMS_ERR_BAD_ENVELOPE,
                                "expected one frame with a JSON envelope, got %zu frames",
                                zmsg_size (msg));
    else if (zframe_size (frame) > HMS_BUS_MAX_MSG)
        *reply = hms_msg_error (NULL, src, HMS_ERR_TOO_LARGE,
                                "message of %zu bytes is over the limit of %d bytes",
                                zframe_size (frame), HMS_BUS_MAX_MSG);
    else {
        const char *code;
        char err[1024];
        *env = hms_msg_decode ((const char *) zframe_data (frame), zframe_size (frame), &code, err,
                               sizeof err);
        if (!*env)
            *reply = hms_msg_error (NULL, src, code, "%s", err);
    }
    zmsg_destroy (&msg);
    return *env ? 0 : -1;
}
