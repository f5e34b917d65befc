/* hms_bus: ZeroMQ sockets of the Hermes control plane, always CURVE-secured, and sending
 * and receiving message envelopes on them. */
#ifndef HMS_BUS_H_INCLUDED
#define HMS_BUS_H_INCLUDED

#include <czmq.h>
#include <jansson.h>

/* Largest message any Hermes socket accepts (the transport drops bigger ones). */
#define HMS_BUS_MAX_WIRE (4 * 1024 * 1024)
/* Largest message a handler reads; bigger ones get an error reply. */
#define HMS_BUS_MAX_MSG (256 * 1024)

/* A CURVE server socket of type (ZMQ_ROUTER, ZMQ_PUB) bound to endpoint with cert's
 * keypair. hms_auth must be running. Caller owns return value; NULL with err. */
zsock_t *hms_bus_server (int type, const char *endpoint, zcert_t *cert, char *err, size_t errlen);
/* A CURVE client socket (ZMQ_DEALER, ZMQ_SUB) connected to endpoint, authenticating with
 * cert and trusting server_key (Z85). Caller owns return value; NULL with err. */
zsock_t *hms_bus_client (int type, const char *endpoint, zcert_t *cert, const char *server_key,
                         char *err, size_t errlen);

/* Encodes env and sends it as one frame (after an optional routing frame / topic).
 * Takes ownership of *env_p. 0 or -1. */
int hms_bus_send (zsock_t *sock, zframe_t **route_p, const char *topic, json_t **env_p);

/* One request read from a ROUTER socket of a server: its routing frame (caller owns *route),
 * the peer's CURVE role and key name (hms_auth), and the envelope decoded and validated.
 * Returns 0 with *env (caller owns), -1 with *reply (caller owns) when the request cannot be
 * read (several frames, over HMS_BUS_MAX_MSG, bad JSON, bad envelope or body, unknown
 * type): send that error back; -2 when nothing arrived. src names the server in replies. */
int hms_bus_recv_request (zsock_t *router, const char *src, zframe_t **route, json_t **env,
                          json_t **reply, char *role, size_t rlen, char *who, size_t wlen);

#endif
