/* hms_decide: a proxy's client of the policy engine, on its libev loop. Queries asked in
 * the same loop turn go out as one policy.decide batch over ZeroMQ (CURVE); answers are
 * cached for their ttl_ms; an engine that does not answer in time yields a "fail closed"
 * decision (unavailable), never a stalled loop. */
#ifndef HMS_DECIDE_H_INCLUDED
#define HMS_DECIDE_H_INCLUDED

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *src;      /* client IP */
    const char *dst;      /* destination IP or name */
    int port;             /* 0: unknown */
    const char *protocol; /* "tcp", "udp", "ip", "http" */
    const char *host;     /* HTTP Host / CONNECT authority host */
    const char *sni;
    bool sni_pending; /* sni unknown, but readable from the ClientHello if it matters */
    bool dst_pending; /* dst is a name the asker can resolve if its address matters */
    const char *method;
    const char *path;
    const char *user;
    const char *service;
    const char *ns; /* namespace */
} hms_query_t;

typedef enum { HMS_DECISION_DENY, HMS_DECISION_ALLOW, HMS_DECISION_ROUTE } hms_action_t;

typedef struct {
    hms_action_t action;
    bool unavailable; /* no answer from the engine: denied, but not by a rule */
    bool cached;
    bool bypass;
    bool needs_sni; /* asked with sni_pending: the answer depends on the SNI, ask with it */
    bool needs_dst; /* asked with dst_pending: it depends on the address, ask with it */
    int ttl_ms;
    char rule[65];    /* "" when no rule decided */
    char route[65];   /* node to leave the overlay at (action route) */
    char target[262]; /* host:port replacing the destination, or "" */
    char retry_profile[65];
    char reason[256];
} hms_decision_t;

typedef struct hms_decider hms_decider_t;
typedef struct hms_decide_req hms_decide_req_t;

typedef void (hms_decide_fn) (const hms_decision_t *decision, void *arg);

/* Connects to the engine at endpoint with the keypair key_name from keys_dir. Caller owns
 * return value; NULL with err. */
hms_decider_t *hms_decider_new (struct ev_loop *loop, const char *endpoint, const char *keys_dir,
                                const char *key_name, int timeout_ms, char *err, size_t errlen);
/* Pending requests get no callback. Nulls *self_p. */
void hms_decider_destroy (hms_decider_t **self_p);

/* Asks for a decision. From the cache, fn runs before this returns and NULL is returned;
 * otherwise fn runs later from the loop, and the return value can cancel it. */
hms_decide_req_t *hms_decide (hms_decider_t *self, const hms_query_t *query, hms_decide_fn *fn,
                              void *arg);
void hms_decide_cancel (hms_decide_req_t *req);

/* Drops every cached decision (after a policy change). */
void hms_decider_flush (hms_decider_t *self);

#endif
