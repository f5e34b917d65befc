/* relay_int: what the relay's modules share: the daemon and a worker's state. */
#ifndef RELAY_INT_H_INCLUDED
#define RELAY_INT_H_INCLUDED

#include "hms_current.h"
#include "hms_fetch.h"
#include "hms_h2.h"
#include "hms_net.h"
#include "hms_origin.h"
#include "hms_origin_pool.h"
#include "hms_pool.h"
#include "hms_tls.h"
#include "hms_worker.h"
#include "relay.h"

#include <stdatomic.h>

#define RELAY_MAX_WORKERS 64

typedef struct {
    relay_t *relay;
    hms_worker_t *worker;
    struct ev_loop *loop;
    int lfd;
    ev_io accept_w;
    hms_pool_t *pool;
    hms_origin_pool_t *origins;
    hms_fetch_env_t fetch; /* http:// and https:// requests that leave the overlay here */
    size_t conns;
} relay_worker_t;

struct relay {
    char node[64];
    hms_addr_t listen;
    int lfds[RELAY_MAX_WORKERS]; /* made at start-up; worker i watches lfds[i] */
    uint16_t port;
    int workers_n;
    int connect_timeout_ms;
    int idle_timeout_ms;
    hms_tls_ctx_t *server_tls;
    hms_tls_ctx_t *client_tls;
    hms_tls_ctx_t *origin_tls; /* checks https origins (origin_ca_file); NULL: https refused */
    char origin_tls_why[512];  /* why origin_tls is NULL */
    hms_origin_pool_limits_t origin_keep;
    hms_current_t *config;
    hms_worker_t *workers[RELAY_MAX_WORKERS];
    atomic_uint_fast64_t terminated, forwarded, refused;
    atomic_uint_fast64_t origin_reused, origin_retried; /* plain HTTP at the exit */
};

#endif
