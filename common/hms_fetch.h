/* hms_fetch: an HTTP/2 request stream for an http:// or https:// URL (not CONNECT) answered
 * by asking its origin over HTTP/1.1, in TLS for https (the certificate checked against the
 * environment's origin_tls and the URL's host), on kept origin connections when the answer
 * allows it. The exit relay of a route and the ingress on a direct route use it. */
#ifndef HMS_FETCH_H_INCLUDED
#define HMS_FETCH_H_INCLUDED

#include "hms_h2.h"
#include "hms_origin_pool.h"
#include "hms_tls.h"
#include "hms_worker.h"

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What requests of one worker share; outlives them (a field of the worker's state). */
typedef struct {
    struct ev_loop *loop;
    hms_worker_t *worker; /* a request still open when the worker stops is ended */
    int connect_timeout_ms, idle_timeout_ms;
    hms_tls_ctx_t *origin_tls; /* NULL: https requests are answered 502 with origin_tls_why */
    const char *origin_tls_why;
    hms_origin_pool_t *origins;             /* kept origin connections, or NULL */
    atomic_uint_fast64_t *reused, *retried; /* counters (a kept connection used, a request
                                             * sent again), or NULL */
} hms_fetch_env_t;

/* Answers stream in (its :method, :authority, :path and headers) from the origin host:port;
 * takes the stream's callbacks over. dial_addr: the address to connect to, when the caller
 * resolved host already (a policy checked that address), else NULL (host is resolved).
 * body / body_len: request body bytes the caller received (and did not consume) before this
 * call; body_ended: the client's stream already ended. */
void hms_fetch_start (const hms_fetch_env_t *env, hms_h2_stream_t *in, bool tls, const char *host,
                      uint16_t port, const char *dial_addr, const void *body, size_t body_len,
                      bool body_ended);

/* The origin an http:// or https:// request names: scheme ("http" or "https") and
 * :authority (the port defaults to 80 or 443). 0, or -1 with why. */
int hms_fetch_origin (const char *scheme, const char *authority, char *host, size_t hostlen,
                      uint16_t *port, bool *tls, char *why, size_t whylen);

#endif
