/* hms_tls: TLS 1.3 (GnuTLS) on non-blocking sockets for event-loop code, with mutual
 * authentication against the Hermes CA (hms_pki). No call loops on I/O or sleeps: each one
 * does what the socket allows now and says which readiness to wait for.
 *
 * Return conventions
 *   hms_tls_handshake, hms_tls_flush, hms_tls_bye (int):
 *       0 done, HMS_TLS_WANT_READ / HMS_TLS_WANT_WRITE (> 0) call again when the socket is
 *       readable / writable, -1 failed (hms_tls_error says why; the session is dead).
 *   hms_tls_read, hms_tls_write (ssize_t):
 *       > 0 bytes, HMS_TLS_EOF (0, read only) the peer sent close_notify, HMS_TLS_AGAIN (-2)
 *       nothing possible now (wait for writable if hms_tls_want_write, else readable),
 *       HMS_TLS_ERROR (-1) failed (hms_tls_error says why; the session is dead).
 *
 * Writing: hms_tls_write copies: the bytes it returns are accepted and the caller may reuse
 * its buffer (unlike gnutls_record_send, which must be called again with the same data). At
 * most one TLS record (16 KiB) is held back when the socket is full; while it is,
 * hms_tls_want_write is true and the caller watches for writable and calls hms_tls_flush (or
 * hms_tls_write, which flushes first). A return smaller than len means "socket full": keep
 * the rest and wait for writable.
 *
 * Reading: GnuTLS decrypts a whole record at a time, so bytes can be waiting inside the
 * session with nothing left on the socket. Read until HMS_TLS_AGAIN; a caller that stops
 * earlier (back-pressure) must check hms_tls_pending before waiting for the socket again,
 * and schedule the next read itself when it is non-zero (edge- and level-triggered loops
 * alike). A read can also wait for writable (a TLS 1.3 KeyUpdate reply on a full socket):
 * when hms_tls_read returned HMS_TLS_AGAIN and hms_tls_want_write is true, read again once
 * the socket is writable.
 *
 * TLS 1.3: the client's handshake finishes before the server has checked the client's
 * certificate, so a client refused by the server learns it from its first hms_tls_read
 * (HMS_TLS_ERROR, "peer refused the connection: ..."), not from hms_tls_handshake.
 *
 * The caller owns every deadline (handshake, idle, close): the sessions have none. Session
 * tickets and resumption are off. SIGPIPE is not raised by writes on closed sockets.
 *
 * Threads: a context is immutable once made and may be shared by threads; a session belongs
 * to one thread at a time.
 */
#ifndef HMS_TLS_H_INCLUDED
#define HMS_TLS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HMS_TLS_WANT_READ  1
#define HMS_TLS_WANT_WRITE 2
#define HMS_TLS_EOF        0
#define HMS_TLS_ERROR      (-1)
#define HMS_TLS_AGAIN      (-2)

typedef struct {
    const char *ca_file;   /* the Hermes CA (PEM); required unless a server with
                              !require_peer_cert */
    const char *cert_file; /* own certificate (PEM); required for a server, optional for a
                              client (then it has no identity); set with key_file */
    const char *key_file;  /* own private key (PEM, unencrypted) */
    bool server;
    bool require_peer_cert; /* server: request and require a client certificate signed by
                               ca_file. A client always verifies the server against ca_file
                               and the name given to hms_tls_new. */
    const char *alpn;       /* NULL, or a comma list in preference order ("h2", "h2,http/1.1");
                               when set, a handshake without a common protocol fails */
    bool alpn_optional;     /* server: a client that offers no protocol of the list (or none at
                               all) is let in, with hms_tls_alpn NULL */
    bool tls13_only;        /* false also allows TLS 1.2 */
} hms_tls_opts_t;

/* Shared configuration: credentials, priorities, ALPN. */
typedef struct hms_tls_ctx hms_tls_ctx_t;
/* One TLS connection over a socket the caller owns. */
typedef struct hms_tls hms_tls_t;

/* Loads the files named in opts (copied; the files are read now). Caller owns return value;
 * NULL with err naming the file and what to do. */
hms_tls_ctx_t *hms_tls_ctx_new (const hms_tls_opts_t *opts, char *err, size_t errlen);
/* Drops the caller's reference and nulls *self_p. Sessions hold their own reference, so the
 * context may be destroyed (e.g. replaced after a certificate reload) while they run; it is
 * freed with the last of them. */
void hms_tls_ctx_destroy (hms_tls_ctx_t **self_p);

/* A session on fd, which must be a connected non-blocking stream socket (not taken over: the
 * caller closes it after hms_tls_destroy). server_name is required for a client: it is sent as
 * SNI (unless an IP address) and the server certificate must carry it as a DNS or IP SAN
 * (a Hermes identity name such as "relay" always matches its own certificate). NULL for a
 * server. Caller owns return value; NULL only if GnuTLS cannot set up a session (logged). */
hms_tls_t *hms_tls_new (hms_tls_ctx_t *ctx, int fd, const char *server_name);
/* Frees the session (no close_notify: call hms_tls_bye first for a clean close) and nulls
 * *self_p. Does not close fd. */
void hms_tls_destroy (hms_tls_t **self_p);

/* Advances the handshake: 0 done (ALPN agreed and the peer verified as configured),
 * HMS_TLS_WANT_READ / HMS_TLS_WANT_WRITE, or -1. Calling it again after 0 returns 0. */
int hms_tls_handshake (hms_tls_t *self);
/* Reads up to len decrypted bytes: > 0, HMS_TLS_EOF, HMS_TLS_AGAIN or HMS_TLS_ERROR. A peer
 * that closes the socket without close_notify is an error ("truncated"). */
ssize_t hms_tls_read (hms_tls_t *self, void *buf, size_t len);
/* Accepts up to len bytes (see "Writing" above): > 0 accepted, HMS_TLS_AGAIN when nothing
 * could be accepted, or HMS_TLS_ERROR. An error found after some bytes were accepted is
 * returned by the next call. len 0 only flushes and returns 0 (or HMS_TLS_AGAIN). */
ssize_t hms_tls_write (hms_tls_t *self, const void *buf, size_t len);
/* Sends the record held back by hms_tls_write (and what a batch left): 0 nothing left,
 * HMS_TLS_WANT_WRITE, or -1. */
int hms_tls_flush (hms_tls_t *self);
/* Batching: between hms_tls_batch (self, true) and hms_tls_batch (self, false), the records
 * of several hms_tls_write calls are combined and leave in one send (up to four full records
 * at a time) instead of one send each. Ending the batch sends them: 0 all sent,
 * HMS_TLS_WANT_WRITE (the rest goes with hms_tls_flush once writable; hms_tls_want_write is
 * true), or -1. Starting returns 0. */
int hms_tls_batch (hms_tls_t *self, bool on);
/* Decrypted bytes readable now without touching the socket. */
size_t hms_tls_pending (hms_tls_t *self);
/* True while the session needs the socket to become writable: a record is held back, or the
 * last HMS_TLS_AGAIN / WANT came from a blocked write. */
bool hms_tls_want_write (hms_tls_t *self);
/* Flushes, then sends close_notify (without waiting for the peer's): 0 sent,
 * HMS_TLS_WANT_WRITE (call again when writable), or -1. Afterwards hms_tls_write fails and
 * hms_tls_read still returns what the peer sends until its close_notify (HMS_TLS_EOF). */
int hms_tls_bye (hms_tls_t *self);

/* Why the last call failed, or "" when none did. Valid until the session is destroyed. */
const char *hms_tls_error (hms_tls_t *self);
/* The negotiated ALPN protocol ("h2"), or NULL when none (or before the handshake is done). */
const char *hms_tls_alpn (hms_tls_t *self);
/* The common name of the peer's verified certificate ("relay"), or NULL when the peer sent no
 * certificate or was not verified. */
const char *hms_tls_peer_name (hms_tls_t *self);
/* True when the handshake is done and the peer's certificate was verified against the CA
 * (always for a client; for a server only with require_peer_cert). */
bool hms_tls_peer_verified (hms_tls_t *self);
/* The file descriptor given to hms_tls_new. */
int hms_tls_fd (hms_tls_t *self);

#endif
