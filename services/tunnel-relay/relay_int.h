/* relay_int: what the relay's modules share: the daemon and a worker's state, the handler
 * of plain HTTP requests (relay_http.c) and its idle origin connections (relay_origin.c). */
#ifndef RELAY_INT_H_INCLUDED
#define RELAY_INT_H_INCLUDED

#include "hms_current.h"
#include "hms_h2.h"
#include "hms_net.h"
#include "hms_pool.h"
#include "hms_tls.h"
#include "hms_worker.h"
#include "relay.h"

#include <stdatomic.h>

#define RELAY_MAX_WORKERS 64

/* Idle origin connections kept per worker (relay_origin.c). */
#define RELAY_ORIGIN_IDLE_MAX 64
#define RELAY_ORIGIN_PER_HOST 8
#define RELAY_ORIGIN_IDLE_S   15.0

typedef struct relay_origins relay_origins_t;

typedef struct {
    relay_t *relay;
    hms_worker_t *worker;
    struct ev_loop *loop;
    int lfd;
    ev_io accept_w;
    hms_pool_t *pool;
    relay_origins_t *origins;
    size_t conns;
} relay_worker_t;

struct relay {
    char node[64];
    hms_addr_t listen;
    uint16_t port;
    int workers_n;
    int connect_timeout_ms;
    int idle_timeout_ms;
    hms_tls_ctx_t *server_tls;
    hms_tls_ctx_t *client_tls;
    hms_current_t *config;
    hms_worker_t *workers[RELAY_MAX_WORKERS];
    atomic_uint_fast64_t terminated, forwarded, refused;
    atomic_uint_fast64_t origin_reused, origin_retried; /* plain HTTP at the exit */
};

/* A plain HTTP request whose route ends here: sent to the origin host:port over HTTP/1.1,
 * the answer returned on the stream. Takes the stream's callbacks over. */
void relay_http_terminate (relay_worker_t *w, hms_h2_stream_t *in, const char *host, uint16_t port);

/* Caller owns return value. */
relay_origins_t *relay_origins_new (struct ev_loop *loop);
/* Closes every idle connection; nulls *self_p. */
void relay_origins_destroy (relay_origins_t **self_p);
/* An idle connection to host:port, checked alive (the caller owns the fd), or -1. */
int relay_origins_take (relay_origins_t *self, const char *host, uint16_t port);
/* Keeps fd (connected to host:port, between two messages) for reuse; takes ownership. */
void relay_origins_put (relay_origins_t *self, const char *host, uint16_t port, int fd);

#endif
