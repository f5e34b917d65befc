/* ingress_h2: the HTTP/2 proxy front end over TLS (ALPN h2): every CONNECT stream a client
 * opens (curl --proxy-http2, nghttp, browsers) becomes a flow, and every plain http:// or
 * https:// request a request through the proxy (ingress_h2_http.c); anything else is refused
 * on its stream, never the connection. */
#include "hms_fetch.h"
#include "hms_h1.h"
#include "hms_log.h"
#include "ingress_int.h"

#include <string.h>
#include <unistd.h>

typedef struct {
    ingress_worker_t *w;
    char peer[64];
} s_conn_t;

static void s_refuse (hms_h2_stream_t *s, s_conn_t *c, int status, const char *why)
{
    atomic_fetch_add (&c->w->ingress->counters.bad_requests, 1);
    hms_info ("bad request client=%s status=%d why=\"%s\"", c->peer, status, why);
    hms_h2_refuse (s, status, why);
}

static void s_on_request (hms_h2_stream_t *s, void *arg)
{
    s_conn_t *c = arg;
    const char *method = hms_h2_stream_header (s, ":method");
    const char *authority = hms_h2_stream_header (s, ":authority");
    const char *scheme = hms_h2_stream_header (s, ":scheme");
    bool connect = method && strcmp (method, "CONNECT") == 0;
    bool http =
        !connect && scheme && (strcmp (scheme, "http") == 0 || strcmp (scheme, "https") == 0);
    if (!method || hms_h2_stream_header (s, ":protocol") || (!connect && !http)) {
        s_refuse (s, c, 501,
                  "this proxy port carries CONNECT tunnels and http:// and https:// requests");
        return;
    }
    char host[HMS_H1_MAX_HOST + 1], why[256], user[128];
    uint16_t port;
    const char *auth = hms_h2_stream_header (s, "proxy-authorization");
    if (ingress_auth_check (c->w->ingress, auth, auth ? strlen (auth) : 0, user, sizeof user)) {
        s_refuse (s, c, 407, "proxy authentication required");
        return;
    }
    if (http) {
        bool tls;
        if (hms_fetch_origin (scheme, authority, host, sizeof host, &port, &tls, why, sizeof why)) {
            s_refuse (s, c, 400, why);
            return;
        }
        ingress_h2_http_start (c->w, s, c->peer, user[0] ? user : NULL, host, port, tls);
        return;
    }
    if (!authority || hms_h1_parse_authority (authority, strlen (authority), host, sizeof host,
                                              &port, why, sizeof why)) {
        s_refuse (s, c, 400, authority ? why : "CONNECT without :authority");
        return;
    }
    ingress_flow_req_t req = {.front = INGRESS_FRONT_H2,
                              .client_fd = -1,
                              .client_stream = s,
                              .peer_ip = c->peer,
                              .host = host,
                              .port = port,
                              .user = user[0] ? user : NULL};
    ingress_flow_start (c->w, &req);
}

static void s_on_closed (hms_h2_conn_t *conn, const char *why, void *arg)
{
    s_conn_t *c = arg;
    hms_debug ("ingress.h2", "proxy connection from %s closed: %s", c->peer, why);
    free (c);
}

void ingress_h2_start (ingress_worker_t *w, hms_tls_t *tls, const hms_addr_t *peer)
{
    s_conn_t *c = calloc (1, sizeof *c);
    if (!c)
        abort ();
    c->w = w;
    hms_addr_ip (peer, c->peer, sizeof c->peer);
    static const hms_h2_conn_cbs_t cbs = {.on_request = s_on_request, .on_closed = s_on_closed};
    hms_h2_conn_new (w->loop, tls, true, &cbs, c);
}
