/* hms_origin_pool: a worker's idle HTTP/1.1 connections to origins (plain or TLS), kept after
 * a complete answer so that the next request to the same scheme, host and port skips the TCP
 * and TLS handshakes; used by the proxies that fetch URLs themselves (the ingress on a direct
 * route, a relay at the exit of a route). A kept connection is watched while idle: the origin
 * closing it (or sending anything) and the idle timeout drop it. Limits: at most max in all
 * (the oldest goes first) and per_host per scheme, host and port; the newest of an origin is
 * reused first. One loop's: not for several threads. */
#ifndef HMS_ORIGIN_POOL_H_INCLUDED
#define HMS_ORIGIN_POOL_H_INCLUDED

#include "hms_config.h"
#include "hms_origin.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The config keys of the daemons that keep origin connections (hms_cfg_key_t rows). */
#define HMS_ORIGIN_POOL_KEYS                                                                       \
    {"origin_keep_per_host", HMS_CFG_INT, "1024",                                                  \
     "idle origin connections kept per worker for one scheme, host and port (0: none)"},           \
    {                                                                                              \
        "origin_keep_max", HMS_CFG_INT, "4096", "idle origin connections kept per worker in all"   \
    }
/* Largest value of either key. */
#define HMS_ORIGIN_POOL_KEEP_LIMIT 100000
/* How long an idle origin connection is kept. */
#define HMS_ORIGIN_POOL_IDLE_S 15.0

typedef struct hms_origin_pool hms_origin_pool_t;

/* What the keys above say. */
typedef struct {
    size_t max, per_host;
} hms_origin_pool_limits_t;

/* Reads the keys above from cfg: 0, or -1 with err saying which value is out of range. */
int hms_origin_pool_limits (hms_config_t *cfg, hms_origin_pool_limits_t *out, char *err,
                            size_t errlen);

/* At most max idle connections, per_host of them to one origin (0: none kept), each for
 * idle_s. Caller owns return value. */
hms_origin_pool_t *hms_origin_pool_new (struct ev_loop *loop, size_t max, size_t per_host,
                                        double idle_s);
/* Closes every idle connection; nulls *self_p. */
void hms_origin_pool_destroy (hms_origin_pool_t **self_p);
/* An idle connection to host:port (TLS or plain), checked alive, moved into *out; false when
 * there is none. */
bool hms_origin_pool_take (hms_origin_pool_t *self, bool tls, const char *host, uint16_t port,
                           hms_origin_conn_t *out);
/* Keeps conn (to host:port, between two messages) for reuse: moved out of *conn (closed at
 * once when the limits are 0). */
void hms_origin_pool_put (hms_origin_pool_t *self, bool tls, const char *host, uint16_t port,
                          hms_origin_conn_t *conn);

#endif
