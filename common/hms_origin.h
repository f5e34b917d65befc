/* hms_origin: the client end of a connection to an origin server, for the proxies that fetch
 * http:// and https:// URLs themselves (the ingress on a direct route, a relay at the exit of
 * a route). One interface for event-loop code over a connected non-blocking socket, plain or
 * in TLS (GnuTLS through hms_tls, the origin's certificate checked against origin_ca_file and
 * the URL's host), and the TLS context that does the checking.
 *
 * Use: hms_origin_open on a connected socket, then on each readiness event call
 * hms_origin_write (when there is something to send) and hms_origin_read (until
 * HMS_ORIGIN_AGAIN, or until the caller stops for back-pressure), and wait for
 * hms_origin_events. The TLS handshake is driven by whichever of the two runs first.
 * Decrypted bytes can wait inside a TLS session with nothing on the socket: a caller that
 * stops reading early and resumes later checks hms_origin_pending and reads without waiting
 * when it is true. */
#ifndef HMS_ORIGIN_H_INCLUDED
#define HMS_ORIGIN_H_INCLUDED

#include "hms_buf.h"
#include "hms_tls.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HMS_ORIGIN_AGAIN (-2)

/* The readiness an origin connection waits for (the values of libev's EV_READ / EV_WRITE). */
#define HMS_ORIGIN_EV_READ  0x01
#define HMS_ORIGIN_EV_WRITE 0x02

/* The system's trust store on Debian; the default of origin_ca_file. */
#define HMS_ORIGIN_CA_DEFAULT "/etc/ssl/certs/ca-certificates.crt"

typedef struct {
    int fd; /* -1: none */
    hms_tls_t *tls;
    bool ready;      /* the TLS handshake is done (always true for plain) */
    bool want_write; /* the handshake waits for writable */
    char why[256];   /* the last failure, for the caller's error answer */
} hms_origin_conn_t;

/* The config key of every daemon that fetches URLs (a hms_cfg_key_t row). */
#define HMS_ORIGIN_CA_KEY                                                                          \
    {                                                                                              \
        "origin_ca_file", HMS_CFG_STRING, NULL,                                                    \
            "PEM CAs that https origins are checked against (default: the system "                 \
            "store, " HMS_ORIGIN_CA_DEFAULT ")"                                                    \
    }

/* The context that checks https origins: ca_file is a PEM bundle of trusted CAs (the system
 * store by default). Caller owns return value; NULL with err saying which file and why. */
hms_tls_ctx_t *hms_origin_tls_ctx (const char *ca_file, char *err, size_t errlen);
/* The same from the value of origin_ca_file (NULL or "" for the system store): a file named
 * there must load (-1, err says why: a start-up error); without the key, a missing system
 * store (a slim container) is not fatal: 0 with *ctx NULL, why saying what https requests
 * will be answered, and a warning logged. 0 with *ctx set otherwise. */
int hms_origin_tls_config (const char *configured, hms_tls_ctx_t **ctx, char *why, size_t whylen);

/* Takes fd (connected, non-blocking) over: plain when tls is NULL, else a TLS client for
 * host (SNI unless an address; the certificate must name it). 0, or -1 with c->why (fd is
 * closed then). */
int hms_origin_open (hms_origin_conn_t *c, int fd, hms_tls_ctx_t *tls, const char *host);
/* Closes the session and the socket; the struct may be opened again. No-op when closed. */
void hms_origin_close (hms_origin_conn_t *c);
/* Moves c's connection to *to (which must be closed); c is left closed. */
void hms_origin_move (hms_origin_conn_t *to, hms_origin_conn_t *c);

/* Sends what buf holds (draining what went out) as far as the socket allows. Bytes written
 * (>= 0; 0 also while the handshake is under way), or -1 with c->why. */
ssize_t hms_origin_write (hms_origin_conn_t *c, hms_buf_t *buf);
/* Up to len bytes from the origin: > 0, 0 at its end (FIN, or close_notify for TLS),
 * HMS_ORIGIN_AGAIN when nothing is there now, -1 with c->why. */
ssize_t hms_origin_read (hms_origin_conn_t *c, void *buf, size_t len);
/* Bytes readable without waiting for the socket (decrypted and held by the TLS session). */
bool hms_origin_pending (hms_origin_conn_t *c);
/* Points io (the caller's readiness watcher for c, stopped when c has no socket) at what
 * to wait for: reading when want_read, writing when want_write, and whatever an unfinished
 * handshake or a held-back TLS record needs; with want_read, bytes the TLS session already
 * holds are fed to io as a read, since the socket will not say so. */
void hms_origin_watch (struct ev_loop *loop, ev_io *io, hms_origin_conn_t *c, bool want_read,
                       bool want_write);
/* For a kept idle connection that became readable: true when it is still usable (TLS
 * bookkeeping such as a post-handshake message was all there was), false when the origin
 * closed it or sent bytes nobody asked for. */
bool hms_origin_idle_check (hms_origin_conn_t *c);

/* Timing an origin that owes an answer: its TLS handshake must end within connect_ms, then
 * it may be silent for at most idle_ms (every byte either way restarts the count). The owner
 * arms it when a request goes out on a connection, reports each I/O step, and stops it once
 * the answer is whole; the callback (w.data is the owner's) learns what expired from
 * hms_origin_timer_why. Which of the two is timed follows from the connection's state. */
typedef struct {
    ev_timer w;
    int connect_ms, idle_ms;
} hms_origin_timer_t;

void hms_origin_timer_init (hms_origin_timer_t *t, void (*cb) (struct ev_loop *, ev_timer *, int),
                            void *data, int connect_ms, int idle_ms);
void hms_origin_timer_arm (struct ev_loop *loop, hms_origin_timer_t *t, const hms_origin_conn_t *c);
/* After an I/O step on c: moved says whether bytes went either way. */
void hms_origin_timer_progress (struct ev_loop *loop, hms_origin_timer_t *t,
                                const hms_origin_conn_t *c, bool moved);
void hms_origin_timer_stop (struct ev_loop *loop, hms_origin_timer_t *t);
/* What expired, for the 504 and the log. */
void hms_origin_timer_why (const hms_origin_timer_t *t, const hms_origin_conn_t *c, char *why,
                           size_t len);

#endif
