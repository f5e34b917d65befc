/* ingress_int: what the ingress's modules share: the daemon state, a worker's state, and
 * the flow API that every front end (HTTP/1.1, HTTP/2, transparent) hands its clients to. */
#ifndef INGRESS_INT_H_INCLUDED
#define INGRESS_INT_H_INCLUDED

#include "bypass_client.h"
#include "hms_current.h"
#include "hms_decide.h"
#include "hms_fetch.h"
#include "hms_h2.h"
#include "hms_net.h"
#include "hms_origin.h"
#include "hms_origin_pool.h"
#include "hms_pool.h"
#include "hms_tls.h"
#include "hms_worker.h"
#include "ingress.h"

#include <czmq.h>
#include <stdatomic.h>

#define INGRESS_MAX_WORKERS 64

typedef enum { INGRESS_FRONT_H1, INGRESS_FRONT_H2, INGRESS_FRONT_TRANSPARENT } ingress_front_t;

/* Counters, shown in logs and (later) metrics. */
typedef struct {
    atomic_uint_fast64_t flows, direct, overlay, denied, failed, bad_requests;
    atomic_uint_fast64_t offers, offloaded, offload_refused;
    atomic_uint_fast64_t origin_reused, origin_retried; /* direct http(s):// requests */
} ingress_counters_t;

struct ingress {
    char node[64];
    hms_addr_t listen[3]; /* per front; family 0 when disabled */
    bool enabled[3];
    int lfds[3][INGRESS_MAX_WORKERS]; /* per front, made at start-up; worker k watches [f][k] */
    int workers_n;
    int connect_timeout_ms, idle_timeout_ms, policy_timeout_ms, head_timeout_ms, sni_wait_ms;
    char policy_endpoint[256];
    char keys_dir[1024];
    hms_tls_ctx_t *proxy_tls;  /* the HTTP/2 proxy port (server, clients need no cert) */
    hms_tls_ctx_t *relay_tls;  /* to relays (client, mutual) */
    hms_tls_ctx_t *origin_tls; /* checks https origins on direct routes (origin_ca_file) */
    char origin_tls_why[512];  /* why origin_tls is NULL */
    hms_origin_pool_limits_t origin_keep;
    hms_current_t *config;
    json_t *users;            /* proxy users, or NULL when no authentication is asked */
    char bypass_socket[1024]; /* the bypass agent's socket, "" when not used */
    int bypass_after_ms;      /* how long a bypass-eligible flow is relayed before the offer */
    bool splice;              /* direct socket-to-socket flows move bytes with splice(2) */
    bool optimistic_connect;  /* answer overlay CONNECTs before the relays confirm them */
    hms_worker_t *workers[INGRESS_MAX_WORKERS];
    ingress_counters_t counters;
};

typedef struct {
    ingress_t *ingress;
    hms_worker_t *worker;
    struct ev_loop *loop;
    int lfd[3];
    uint16_t transparent_port; /* the transparent front's own port (0: none) */
    ev_io accept_w[3];
    hms_pool_t *pool;
    hms_origin_pool_t *origins; /* idle connections to origins of direct http(s):// requests */
    hms_fetch_env_t fetch;      /* direct http(s):// requests from the HTTP/2 front */
    hms_decider_t *decider;
    bypass_client_t *bypass; /* connection to the bypass agent, NULL when none */
    ev_io bypass_w;
    zlistx_t *offers; /* flows whose offer awaits an answer */
} ingress_worker_t;

/* What a front end knows about a new flow. */
typedef struct {
    ingress_front_t front;
    int client_fd;                  /* H1 / transparent: the client's socket (taken over) */
    hms_h2_stream_t *client_stream; /* H2: the client's CONNECT stream (taken over) */
    const char *peer_ip;
    const char *host; /* target host (name or IP) */
    uint16_t port;
    const char *user;  /* authenticated proxy user, or NULL */
    const void *early; /* bytes the client sent after its request head */
    size_t early_len;
} ingress_flow_req_t;

/* Decides, connects and pumps one flow; answers the client (200, 403, 502, 503, 504 or a
 * close) the way its front end speaks. Frees itself at the end. */
void ingress_flow_start (ingress_worker_t *w, const ingress_flow_req_t *req);

/* A plain http:// or https:// request on an HTTP/2 client stream (ingress_h2_http.c), for
 * origin host:port: decided, then fetched directly or sent through the overlay; takes the
 * stream over. */
void ingress_h2_http_start (ingress_worker_t *w, hms_h2_stream_t *in, const char *peer,
                            const char *user, const char *host, uint16_t port, bool tls);

/* Plain HTTP (absolute-form) on a client connection whose first request head (and any
 * bytes after it) is in buf; takes the socket over. */
void ingress_http_start (ingress_worker_t *w, int fd, const char *peer, const char *user,
                         const char *buf, size_t len);

/* What a decision means for the route (ingress.c), shared by the front ends: */
/* the flow leaves the overlay at d->route, another node than this one */
bool ingress_via_overlay (const ingress_t *self, const hms_decision_t *d);
/* the first relay toward node dest, from the controller's current routes; 0, or -1 with why */
int ingress_first_relay (ingress_t *self, const char *dest, char *host, size_t hostlen,
                         uint16_t *port, char *why, size_t whylen);
/* the answer's text for a deny: "denied by policy rule ID: reason" */
void ingress_deny_why (const hms_decision_t *d, char *why, size_t whylen);

/* A policy decision, asked again with the address when it depends on the address of a dst
 * given by name (ingress_ask.c). Lives in its asker's object; fn may free that object. */
typedef void (ingress_ask_fn) (const hms_decision_t *d, void *arg);
typedef struct {
    ingress_worker_t *w;
    hms_query_t q;
    char *copy; /* the query's strings, while it may be asked again */
    ingress_ask_fn *fn;
    void *arg;
    hms_decide_req_t *decide;
    struct hms_resolve *resolve;
    char dst_ip[64]; /* the address the decision was made for, "" when not asked by address */
} ingress_ask_t;
/* Asks; fn may run before this returns (a cached decision). */
void ingress_ask (ingress_ask_t *a, ingress_worker_t *w, const hms_query_t *q, ingress_ask_fn *fn,
                  void *arg);
/* The address to send the flow or request to after decision d: the one the policy checked
 * for a name (so that no second lookup can lead elsewhere), or NULL (the name itself is
 * dialed, or d rewrote the target). */
const char *ingress_ask_checked_addr (const ingress_ask_t *a, const hms_decision_t *d);
/* fn will not run; safe on an ask that finished or never started (zeroed). */
void ingress_ask_cancel (ingress_ask_t *a);

/* Proxy authentication (ingress_auth.c): loads the users file; checks a
 * Proxy-Authorization value and fills user. Without a users file every request passes
 * with no user. 0 or -1. */
int ingress_auth_load (ingress_t *self, const char *path, char *err, size_t errlen);
int ingress_auth_check (const ingress_t *self, const char *value, size_t len, char *user,
                        size_t ulen);

/* The bypass agent (ingress_bypass.c): connects a worker to it (again), reads its
 * answers, and offers a paused flow's sockets. */
void ingress_bypass_connect (ingress_worker_t *w);
void ingress_bypass_close (ingress_worker_t *w);
/* Offers both sockets of a flow; 0 when sent (the answer comes to ingress_flow_offered),
 * -1 when it could not be (keep relaying). */
int ingress_bypass_offer (ingress_worker_t *w, void *flow, const char *id, int client_fd,
                          int server_fd, const char *rule, uint64_t up, uint64_t down);
/* Forgets a flow's pending offer (the flow is going away). */
void ingress_bypass_forget (ingress_worker_t *w, void *flow);
/* The agent's answer for a flow (ans NULL: the agent is gone, treat as refused). */
void ingress_flow_offered (void *flow, const bypass_answer_t *ans);

/* Front ends: accept callbacks for each listener kind. */
void ingress_h1_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer);
/* The proxy port (TLS): handshake, then HTTP/2 or HTTP/1.1 inside TLS (ingress_tls.c). */
void ingress_tls_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer);
/* A client of the proxy port that agreed on h2; takes tls and its socket over. */
void ingress_h2_start (ingress_worker_t *w, hms_tls_t *tls, const hms_addr_t *peer);
void ingress_transparent_accept (ingress_worker_t *w, int fd, const hms_addr_t *peer);

#endif
