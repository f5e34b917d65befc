/* bypass_int: the agent's internal state, shared by bypass_agent.c (socket API, timers,
 * events), bypass_flow.c (one connection's offload) and bypass_view.c (counters, flow list).
 * Everything here is owned by the agent's worker thread, except the counters (atomics). */
#ifndef HMS_BYPASS_INT_H_INCLUDED
#define HMS_BYPASS_INT_H_INCLUDED

#include <ev.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bypass_agent.h"
#include "bypass_dp.h"
#include "bypass_leg.h"
#include "bypass_proto.h"
#include "bypass_route.h"
#include "hms_current.h"
#include "hms_worker.h"

/* Why an offer was refused: the "reason" of the answer and a counter each. */
typedef enum {
    BYPASS_R_MALFORMED = 0, /* the request could not be read */
    BYPASS_R_NOT_TCP4,      /* a descriptor is not an IPv4 TCP socket */
    BYPASS_R_NOT_ESTABLISHED,
    BYPASS_R_MISMATCH,   /* the header's addresses are not the sockets' peers */
    BYPASS_R_NETNS,      /* a socket of another network namespace */
    BYPASS_R_POLICY,     /* the policy rule does not allow a bypass */
    BYPASS_R_TIMESTAMPS, /* timestamps on one leg only */
    BYPASS_R_SACK,       /* SACK on one leg only */
    BYPASS_R_ECN,        /* ECN on one leg only */
    BYPASS_R_MSS,        /* a leg's segments would not fit the other leg's MTU */
    BYPASS_R_ROUTE,      /* no Ethernet egress / neighbour for a peer */
    BYPASS_R_DATAPLANE,  /* no data plane, attach failed, table full */
    BYPASS_R_CAPACITY,   /* max_flows reached */
    BYPASS_R_DUPLICATE,  /* the connection is already offered or spliced */
    BYPASS_R_BUSY,       /* never quiet long enough to freeze */
    BYPASS_R_CLOSED,     /* a peer closed or reset while draining */
    BYPASS_R_REPAIR,     /* TCP_REPAIR failed */
    BYPASS_R_SHUTDOWN,   /* the agent is stopping */
    BYPASS_R_MAX
} bypass_reason_t;

extern const char *const bypass_reason_names[BYPASS_R_MAX];

/* Why a spliced flow was removed. */
typedef enum {
    BYPASS_C_FIN = 0,
    BYPASS_C_RST,
    BYPASS_C_IDLE,
    BYPASS_C_STALE, /* a SYN on the flow's 4-tuple: a new connection */
    BYPASS_C_SHUTDOWN,
    BYPASS_C_MAX
} bypass_cleanup_t;

extern const char *const bypass_cleanup_names[BYPASS_C_MAX];

typedef struct {
    atomic_uint_fast64_t offers, accepted, refused, refused_by[BYPASS_R_MAX];
    atomic_uint_fast64_t protocol_errors, queries, retries, relayed_bytes;
    atomic_uint_fast64_t closed_by[BYPASS_C_MAX];
    atomic_uint_fast64_t spliced_bytes, spliced_packets; /* refreshed by the sweep */
    atomic_uint_fast64_t draining, active, clients;      /* gauges */
    atomic_uint_fast64_t shaper_ifaces;                  /* gauge */
    atomic_uint_fast64_t ramps, ramp_steps, delayed_packets, delayed_injected;
} bypass_counters_t;

typedef struct bypass_conn bypass_conn_t;
typedef struct bypass_flow bypass_flow_t;
typedef struct bypass_delay bypass_delay_t;

/* One proxy connected to the socket. */
struct bypass_conn {
    bypass_agent_t *agent;
    int fd;
    pid_t pid;
    uid_t uid;
    ev_io rio, wio;
    bool dead;                    /* sending failed: closed on the next read */
    struct s_out *out, *out_last; /* answers waiting for the socket */
    bypass_conn_t *prev, *next;
};

typedef enum {
    BYPASS_F_RAMP,     /* delay ramp before the drain */
    BYPASS_F_DRAINING, /* relaying leftovers, waiting for quiet legs */
    BYPASS_F_SPLICED,  /* in the data plane */
    BYPASS_F_LINGER,   /* FIN from both sides seen, removed when the linger ends */
} bypass_flow_state_t;

/* Leg indices: the client side and the server side; direction d relays from leg d to the
 * other (0: up, client -> server; 1: down). */
enum { BYPASS_CLIENT = 0, BYPASS_SERVER = 1 };

struct bypass_flow {
    bypass_agent_t *agent;
    uint64_t id; /* also the data plane cookie */
    bypass_flow_state_t state;
    bypass_conn_t *conn; /* the proxy that offered it; NULL once it went away */
    json_t *offer_id;
    char policy_rule[BYPASS_PROTO_MAX_RULE + 1];
    uint64_t proxy_relayed[2]; /* what the proxy said it relayed, per direction */
    uint64_t agent_relayed[2]; /* what the agent relayed while draining */
    int fd[2];                 /* the agent's descriptors of the legs; -1 when closed */
    int reserve_fd[2];         /* port reservations after the splice */
    bypass_leg_info_t leg[2];
    bypass_path_t path[2];
    struct bypass_flow_key key[2]; /* what arrives from leg i's peer */
    /* relay while draining: buf[d] receives what is peeked from leg d */
    uint8_t *buf[2];
    ev_io rio[2], wio[2];
    ev_timer timer; /* drain tick, ramp step or linger */
    int64_t offered_ms, deadline_ms, probe_ms, spliced_wall_ms, offered_wall_ms;
    int retries;
    int ramp_target_ms, ramp_ms; /* delay ramp: the goal and the current delay */
    uint32_t shaped[2];          /* BYPASS_SHAPE_NO_* the shaper took out of the SYN-ACK
                                    to the client [0] and of the SYN to the server [1] */
    bool redirected;             /* the client connected to leg[0].wire, not to the proxy */
    bool fin[2];                 /* FIN seen from leg i's peer */
    bool frozen;
    struct bypass_flow_state last[2]; /* counters from the data plane at the last sweep */
    int64_t last_seen_ms;             /* CLOCK_MONOTONIC ms of the last segment */
    bypass_flow_t *prev, *next;       /* the agent's list */
    bypass_flow_t *hnext;             /* the id hash */
};

typedef struct {
    uint64_t id;
    char client[32], server[32], reason[16], policy_rule[BYPASS_PROTO_MAX_RULE + 1];
    int64_t spliced_wall_ms, closed_wall_ms;
    uint64_t packets[2], bytes[2];
} bypass_closed_t;

#define BYPASS_HASH_SIZE   4096
#define BYPASS_CLOSED_KEEP 64

struct bypass_agent {
    bypass_agent_opts_t opts;
    char *socket_path;
    bypass_counters_t st;
    bypass_dp_t *dp;
    hms_current_t *current;
    hms_worker_t *worker;
    struct ev_loop *loop;
    int lfd;
    dev_t sock_dev;
    ino_t sock_ino;
    ev_io lio, events_io;
    ev_timer sweep;
    uint64_t netns_cookie;
    uint64_t next_id;
    int nflows;
    bool stopping;
    bypass_flow_t *flows;
    bypass_flow_t *hash[BYPASS_HASH_SIZE];
    bypass_conn_t *conns;
    bypass_closed_t closed[BYPASS_CLOSED_KEEP];
    size_t nclosed;
    uint64_t closed_bytes, closed_packets; /* of flows already removed */
    bypass_delay_t *delay;
    int64_t shape_scan_ms; /* last look for interfaces without the SYN shaper */
};

/* bypass_agent.c */
/* Queues an answer (takes ownership of body) with unsent bytes for conn (may be NULL: the
 * proxy is gone, the answer is dropped). */
void bypass_agent_answer (bypass_agent_t *self, bypass_conn_t *conn, json_t *body,
                          const uint8_t *up, size_t uplen, const uint8_t *down, size_t downlen);
/* Attaches the data plane to ifindex once. 0 / -1. */
int bypass_agent_attach (bypass_agent_t *self, int ifindex);
bypass_flow_t *bypass_agent_find (bypass_agent_t *self, uint64_t id);
/* The policy check: 0 when rule allows a bypass (or the config has no policies). */
int bypass_agent_policy_allows (bypass_agent_t *self, const char *rule, char *detail, size_t len);

/* bypass_flow.c */
/* Starts the offload of an offer; takes the two descriptors (closes them on failure) and
 * answers the proxy itself (now or when done). */
void bypass_flow_offer (bypass_agent_t *self, bypass_conn_t *conn, bypass_request_t *req,
                        int fds[2]);
/* Starts (or resumes, after the delay ramp) the drain of a flow that passed its checks. */
void bypass_flow_drain (bypass_flow_t *flow);
/* A FIN/RST/SYN event of the data plane. */
void bypass_flow_event (bypass_flow_t *flow, const struct bypass_event *ev);
/* Periodic: counters, idle timeout. */
void bypass_flow_sweep (bypass_flow_t *flow, int64_t now_ms);
/* Stops a flow now: an offer in progress is refused with "shutting_down", a spliced flow is
 * removed. Frees it. */
void bypass_flow_shutdown (bypass_flow_t *flow);
/* The proxy that offered it went away. */
void bypass_flow_forget_conn (bypass_flow_t *flow);
/* The flow as a JSON object for the flow list. Caller owns return value. */
json_t *bypass_flow_json (bypass_flow_t *flow, int64_t now_ms);
const char *bypass_flow_state_name (bypass_flow_state_t state);

/* bypass_view.c */
json_t *bypass_view_stats (bypass_agent_t *self);
/* At most max flows are listed ("flows_total" counts them all). */
json_t *bypass_view_flows (bypass_agent_t *self, size_t max);
char *bypass_view_export_p4 (bypass_agent_t *self);

#endif
