/* hms_pool: one worker's warm, multiplexed HTTP/2-over-TLS connections to next hops (the
 * relays of its routes). A new flow takes a stream on a connection that is already up, so
 * it pays no TCP or TLS handshake; more connections open only when every one to that hop
 * is at its stream limit. A hop is a name and a port; when the name has several addresses
 * (a scaled relay service), the pool keeps connections to each of them and gives a new
 * stream to the connection that carries the fewest (turn by turn among equals), so the
 * relays share the load and one that goes away leaves the others serving. The name is
 * looked up again as its answer expires (dns_cache_s), so relays that join or leave are
 * seen. Warm hops keep their connections open and reconnect with back-off after a failure.
 * Single-threaded: one pool per loop. */
#ifndef HMS_POOL_H_INCLUDED
#define HMS_POOL_H_INCLUDED

#include "hms_h2.h"
#include "hms_tls.h"

#include <ev.h>
#include <jansson.h>
#include <stdint.h>

typedef struct hms_pool hms_pool_t;
typedef struct hms_pool_req hms_pool_req_t;

/* conn is usable (open a stream on it now), or NULL with why. */
typedef void (hms_pool_fn) (hms_h2_conn_t *conn, const char *why, void *arg);

/* tls is the client context (mutual TLS); the pool keeps a reference. Caller owns return
 * value. */
hms_pool_t *hms_pool_new (struct ev_loop *loop, hms_tls_ctx_t *tls, int connect_timeout_ms);
/* Closes every connection (their teardown needs the loop to turn once more) and fails
 * pending requests with why "pool closed"; the pool opens nothing after this. */
void hms_pool_shutdown (hms_pool_t *self);
/* Shuts down if not done yet, and frees the pool. Nulls *self_p. */
void hms_pool_destroy (hms_pool_t **self_p);

/* Asks for a usable connection to host:port, whose certificate must carry server_name.
 * When one is up now, fn runs before this returns and NULL is returned; otherwise fn runs
 * later from the loop and the return value can cancel it. Fails (fn with why) when no
 * address of host can be reached. */
hms_pool_req_t *hms_pool_get (hms_pool_t *self, const char *host, uint16_t port,
                              const char *server_name, hms_pool_fn *fn, void *arg);
/* Withdraws a pending request: fn will not run. */
void hms_pool_cancel (hms_pool_req_t *req);

/* Keeps at least one connection to each address of host:port open from now on. */
void hms_pool_warm (hms_pool_t *self, const char *host, uint16_t port, const char *server_name);
/* Forgets which hops are warm (a new route set is about to warm its own): a hop that is
 * not warmed again stops reconnecting; its open connections stay for the streams they
 * carry and for new requests. */
void hms_pool_cool (hms_pool_t *self);

/* Process-wide counters (all pools, all loops). */
typedef struct {
    uint64_t connections; /* connections to next hops up now */
    uint64_t failed;      /* attempts that failed: a lookup, a connect, a TLS/HTTP/2 set-up */
} hms_pool_stats_t;
void hms_pool_stats (hms_pool_stats_t *out);
/* Adds them to a daemon's counters as PREFIX_pool_connections and PREFIX_pool_failed.
 * Returns into. */
json_t *hms_pool_stats_add (json_t *into, const char *prefix);

#endif
