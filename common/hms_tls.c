/* hms_tls: GnuTLS sessions on non-blocking sockets, mutual authentication against the Hermes
 * CA, errors an operator can act on, and a write path that accepts bytes instead of asking
 * for the same buffer again. */
#include "hms_tls.h"
#include "hms_alloc.h"
#include "hms_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#define HMS_TLS_ALPN_MAX 8
/* Plaintext per record handed to GnuTLS; the largest TLS record. */
#define HMS_TLS_CHUNK 16384

struct hms_tls_ctx {
    atomic_int refs;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    bool server;
    bool verify_peer;
    bool tls13_only;
    bool alpn_optional;
    gnutls_datum_t alpn[HMS_TLS_ALPN_MAX];
    unsigned int alpn_count;
    char *alpn_text; /* "h2" or "h2, http/1.1", for messages */
    char *ca_file;   /* for messages */
};

typedef enum { S_HANDSHAKE, S_OPEN, S_CLOSED, S_FAILED } s_state_t;

struct hms_tls {
    hms_tls_ctx_t *ctx;
    gnutls_session_t session;
    int fd;
    s_state_t state;
    char *server_name;
    gnutls_typed_vdata_st vdata[2]; /* what the peer certificate is verified for */
    bool verified;
    bool peer_closed;   /* close_notify received */
    bool blocked_write; /* the last handshake/read/bye call waits for writable */
    /* The record hms_tls_write accepted but the socket did not take: bytes
     * pend[pend_off .. pend_off + pend_len); inflight when GnuTLS holds the first record of
     * them encrypted and must be resumed with gnutls_record_send (NULL, 0). */
    unsigned char *pend;
    size_t pend_off;
    size_t pend_len;
    bool inflight;
    char *alpn;
    char *peer_name;
    char err[512];
    /* Raw bytes read ahead from the socket: one recv fills it, so GnuTLS's reads of a
     * record's header and body cost no system call each. */
    unsigned char *rbuf;
    size_t rbuf_off, rbuf_len;
    /* Between hms_tls_batch (true) and (false), the records GnuTLS pushes are combined here
     * and leave in one send at the end (or when it is full): wc[wc_off .. wc_off + wc_len). */
    bool batching;
    unsigned char *wc;
    size_t wc_off, wc_len;
};

#define S_RBUF 65536
#define S_WC   (4 * (16384 + 256)) /* four full records with their overhead */

static ssize_t s_pull (gnutls_transport_ptr_t ptr, void *data, size_t len)
{
    hms_tls_t *self = ptr;
    if (self->rbuf_len == 0) {
        if (!self->rbuf)
            self->rbuf = hms_alloc (S_RBUF);
        ssize_t n = recv (self->fd, self->rbuf, S_RBUF, 0);
        if (n < 0) {
            gnutls_transport_set_errno (self->session, errno);
            return -1;
        }
        if (n == 0)
            return 0;
        self->rbuf_off = 0;
        self->rbuf_len = (size_t) n;
    }
    size_t take = len < self->rbuf_len ? len : self->rbuf_len;
    memcpy (data, self->rbuf + self->rbuf_off, take);
    self->rbuf_off += take;
    self->rbuf_len -= take;
    return (ssize_t) take;
}

static int s_pull_timeout (gnutls_transport_ptr_t ptr, unsigned int ms)
{
    hms_tls_t *self = ptr;
    if (self->rbuf_len > 0)
        return 1;
    struct pollfd p = {self->fd, POLLIN, 0};
    return poll (&p, 1, (int) ms);
}

/* Sends what the batch combined, as far as the socket takes it: 0 (all sent, or the rest
 * waits for writable: wc_len > 0), -1 with errno on a socket error. */
static int s_wc_send (hms_tls_t *self)
{
    while (self->wc_len > 0) {
        ssize_t n = send (self->fd, self->wc + self->wc_off, self->wc_len, MSG_NOSIGNAL);
        if (n > 0) {
            self->wc_off += (size_t) n;
            self->wc_len -= (size_t) n;
        } else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else
            return -1;
    }
    self->wc_off = 0;
    return 0;
}

static ssize_t s_push (gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
    hms_tls_t *self = ptr;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    /* what a batch combined goes before anything else */
    if (self->wc_len > 0 && (!self->batching || self->wc_off + self->wc_len + total > S_WC)) {
        if (s_wc_send (self) < 0 || self->wc_len > 0) {
            gnutls_transport_set_errno (self->session, self->wc_len > 0 ? EAGAIN : errno);
            return -1;
        }
    }
    if (self->batching && total <= S_WC - self->wc_off - self->wc_len) {
        if (!self->wc)
            self->wc = hms_alloc_raw (S_WC);
        for (int i = 0; i < iovcnt; i++) {
            memcpy (self->wc + self->wc_off + self->wc_len, iov[i].iov_base, iov[i].iov_len);
            self->wc_len += iov[i].iov_len;
        }
        return (ssize_t) total;
    }
    struct msghdr msg = {.msg_iov = (struct iovec *) iov, .msg_iovlen = (size_t) iovcnt};
    ssize_t n = sendmsg (self->fd, &msg, MSG_NOSIGNAL);
    if (n < 0)
        gnutls_transport_set_errno (self->session, errno);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Context */

static int s_parse_alpn (hms_tls_ctx_t *self, const char *list)
{
    const char *p = list;
    size_t textlen = 0;
    self->alpn_text = hms_alloc (2 * strlen (list) + 1);
    while (*p) {
        size_t n = strcspn (p, ",");
        const char *name = p;
        while (n > 0 && (*name == ' ' || *name == '\t')) {
            name++;
            n--;
        }
        while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
            n--;
        if (n == 0 || n > 255 || self->alpn_count == HMS_TLS_ALPN_MAX)
            return -1;
        unsigned char *copy = hms_alloc (n + 1);
        memcpy (copy, name, n);
        self->alpn[self->alpn_count].data = copy;
        self->alpn[self->alpn_count].size = (unsigned int) n;
        self->alpn_count++;
        textlen += (size_t) sprintf (self->alpn_text + textlen, "%s%.*s", textlen ? ", " : "",
                                     (int) n, name);
        p += strcspn (p, ",");
        if (*p == ',' && *++p == '\0')
            return -1;
    }
    return self->alpn_count > 0 ? 0 : -1;
}

/* Own certificate signed by the CA and within its validity, so that a misconfiguration shows
 * here and not as refusals on every peer. */
static int s_check_own_cert (hms_tls_ctx_t *self, const hms_tls_opts_t *opts, char *err,
                             size_t errlen)
{
    gnutls_datum_t raw = {NULL, 0};
    gnutls_x509_trust_list_t tl = NULL;
    gnutls_x509_crt_t crt = NULL;
    unsigned int status = 0;
    if (gnutls_certificate_get_crt_raw (self->cred, 0, 0, &raw) < 0 ||
        gnutls_x509_crt_init (&crt) < 0 ||
        gnutls_x509_crt_import (crt, &raw, GNUTLS_X509_FMT_DER) < 0) {
        if (crt)
            gnutls_x509_crt_deinit (crt);
        snprintf (err, errlen, "TLS: cannot parse certificate %s (regenerate it with hms_pki)",
                  opts->cert_file);
        return -1;
    }
    gnutls_certificate_get_trust_list (self->cred, &tl);
    if (gnutls_x509_trust_list_verify_crt (tl, &crt, 1, 0, &status, NULL) < 0)
        status = GNUTLS_CERT_INVALID;
    gnutls_x509_crt_deinit (crt);
    if (status == 0)
        return 0;
    if (status & GNUTLS_CERT_EXPIRED)
        snprintf (err, errlen,
                  "TLS: certificate %s has expired (remove it and run hms_pki_generate / "
                  "hermesctl pki again to reissue it)",
                  opts->cert_file);
    else if (status & GNUTLS_CERT_NOT_ACTIVATED)
        snprintf (err, errlen, "TLS: certificate %s is not valid yet (check the system clock)",
                  opts->cert_file);
    else
        snprintf (err, errlen,
                  "TLS: certificate %s is not signed by the CA in %s (use the certificate and "
                  "CA from the same PKI directory)",
                  opts->cert_file, opts->ca_file);
    return -1;
}

static int s_ctx_load (hms_tls_ctx_t *self, const hms_tls_opts_t *opts, char *err, size_t errlen)
{
    bool need_ca = !opts->server || opts->require_peer_cert;
    if (need_ca && !opts->ca_file) {
        snprintf (err, errlen,
                  "TLS: no CA file (set ca_file to the Hermes CA, <pki dir>/ca.crt, which "
                  "hms_pki_generate / hermesctl pki create)");
        return -1;
    }
    if (!opts->cert_file != !opts->key_file) {
        snprintf (err, errlen, "TLS: %s is set without %s (give both or neither)",
                  opts->cert_file ? "cert_file" : "key_file",
                  opts->cert_file ? "key_file" : "cert_file");
        return -1;
    }
    if (opts->server && !opts->cert_file) {
        snprintf (err, errlen,
                  "TLS: a server needs cert_file and key_file (<pki dir>/NAME.crt "
                  "and NAME.key)");
        return -1;
    }
    const char *files[] = {opts->ca_file, opts->cert_file, opts->key_file};
    for (size_t i = 0; i < 3; i++)
        if (files[i] && access (files[i], R_OK) != 0) {
            snprintf (err, errlen,
                      "TLS: cannot read %s: %s (create the PKI with "
                      "hms_pki_generate / hermesctl pki, or fix the path)",
                      files[i], strerror (errno));
            return -1;
        }

    gnutls_certificate_allocate_credentials (&self->cred);
    if (opts->ca_file) {
        int rc =
            gnutls_certificate_set_x509_trust_file (self->cred, opts->ca_file, GNUTLS_X509_FMT_PEM);
        if (rc <= 0) {
            snprintf (err, errlen,
                      "TLS: no usable CA certificate in %s: %s (it must be the PEM "
                      "ca.crt of the Hermes PKI)",
                      opts->ca_file, rc < 0 ? gnutls_strerror (rc) : "empty");
            return -1;
        }
        self->ca_file = hms_strdup (opts->ca_file);
    }
    if (opts->cert_file) {
        int rc = gnutls_certificate_set_x509_key_file (self->cred, opts->cert_file, opts->key_file,
                                                       GNUTLS_X509_FMT_PEM);
        if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
            snprintf (err, errlen,
                      "TLS: certificate %s does not match key %s (use the pair "
                      "generated together)",
                      opts->cert_file, opts->key_file);
            return -1;
        }
        if (rc < 0) {
            snprintf (err, errlen,
                      "TLS: cannot load certificate %s with key %s: %s (both must "
                      "be PEM; the key unencrypted)",
                      opts->cert_file, opts->key_file, gnutls_strerror (rc));
            return -1;
        }
        if (opts->ca_file && s_check_own_cert (self, opts, err, errlen) < 0)
            return -1;
    }

    const char *prio = opts->tls13_only ? "NORMAL:-VERS-ALL:+VERS-TLS1.3"
                                        : "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
    char text[128];
    snprintf (text, sizeof text, "%s%s", prio, opts->server ? ":%SERVER_PRECEDENCE" : "");
    int rc = gnutls_priority_init (&self->prio, text, NULL);
    if (rc < 0) {
        self->prio = NULL;
        snprintf (err, errlen, "TLS: GnuTLS rejects priorities %s: %s (GnuTLS too old?)", text,
                  gnutls_strerror (rc));
        return -1;
    }
    if (opts->alpn && s_parse_alpn (self, opts->alpn) < 0) {
        snprintf (err, errlen,
                  "TLS: bad ALPN list '%s' (comma-separated protocol names, at most %d, e.g. "
                  "\"h2\" or \"h2,http/1.1\")",
                  opts->alpn, HMS_TLS_ALPN_MAX);
        return -1;
    }
    self->server = opts->server;
    self->verify_peer = need_ca;
    self->tls13_only = opts->tls13_only;
    self->alpn_optional = opts->alpn_optional && opts->server;
    return 0;
}

static void s_ctx_unref (hms_tls_ctx_t *self)
{
    if (atomic_fetch_sub (&self->refs, 1) != 1)
        return;
    if (self->cred)
        gnutls_certificate_free_credentials (self->cred);
    if (self->prio)
        gnutls_priority_deinit (self->prio);
    for (unsigned int i = 0; i < self->alpn_count; i++)
        free (self->alpn[i].data);
    free (self->alpn_text);
    free (self->ca_file);
    free (self);
}

hms_tls_ctx_t *hms_tls_ctx_new (const hms_tls_opts_t *opts, char *err, size_t errlen)
{
    hms_tls_ctx_t *self = hms_alloc (sizeof *self);
    atomic_init (&self->refs, 1);
    if (s_ctx_load (self, opts, err, errlen) < 0) {
        s_ctx_unref (self);
        return NULL;
    }
    return self;
}

void hms_tls_ctx_destroy (hms_tls_ctx_t **self_p)
{
    if (self_p && *self_p) {
        s_ctx_unref (*self_p);
        *self_p = NULL;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Errors */

/* The peer's first certificate, or NULL. Caller owns return value. */
static gnutls_x509_crt_t s_peer_crt (hms_tls_t *self)
{
    unsigned int n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers (self->session, &n);
    gnutls_x509_crt_t crt = NULL;
    if (!certs || n == 0 || gnutls_x509_crt_init (&crt) < 0)
        return NULL;
    if (gnutls_x509_crt_import (crt, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
        gnutls_x509_crt_deinit (crt);
        return NULL;
    }
    return crt;
}

static void s_peer_dn (hms_tls_t *self, bool issuer, char *out, size_t len)
{
    snprintf (out, len, "?");
    gnutls_x509_crt_t crt = s_peer_crt (self);
    if (!crt)
        return;
    gnutls_datum_t dn = {NULL, 0};
    if ((issuer ? gnutls_x509_crt_get_issuer_dn3 (crt, &dn, 0)
                : gnutls_x509_crt_get_dn3 (crt, &dn, 0)) >= 0) {
        snprintf (out, len, "%s", (const char *) dn.data);
        gnutls_free (dn.data);
    }
    gnutls_x509_crt_deinit (crt);
}

/* The reason a peer certificate failed verification, from the verification status. */
static void s_verify_text (hms_tls_t *self, char *out, size_t len)
{
    unsigned int status = gnutls_session_get_verify_cert_status (self->session);
    char dn[256];
    if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA |
                  GNUTLS_CERT_SIGNATURE_FAILURE)) {
        s_peer_dn (self, true, dn, sizeof dn);
        snprintf (out, len,
                  "peer certificate not signed by the Hermes CA (its issuer is '%s', trusted CA "
                  "file %s: give the peer a certificate from this CA)",
                  dn, self->ctx->ca_file);
    } else if (status & GNUTLS_CERT_UNEXPECTED_OWNER) {
        s_peer_dn (self, false, dn, sizeof dn);
        snprintf (out, len,
                  "peer certificate ('%s') is not valid for the name '%s' (connect with a name "
                  "the certificate carries, or reissue it with this name as an extra SAN)",
                  dn, self->server_name);
    } else if (status & GNUTLS_CERT_EXPIRED)
        snprintf (out, len, "peer certificate has expired (reissue it with hms_pki)");
    else if (status & GNUTLS_CERT_NOT_ACTIVATED)
        snprintf (out, len, "peer certificate is not valid yet (check the clocks of both hosts)");
    else if (status & GNUTLS_CERT_PURPOSE_MISMATCH)
        snprintf (out, len,
                  "peer certificate is not for TLS %s authentication (reissue it "
                  "with hms_pki)",
                  self->ctx->server ? "client" : "server");
    else {
        gnutls_datum_t text = {NULL, 0};
        if (gnutls_certificate_verification_status_print (status, GNUTLS_CRT_X509, &text, 0) >= 0) {
            snprintf (out, len, "peer certificate rejected: %s", (const char *) text.data);
            gnutls_free (text.data);
        } else
            snprintf (out, len, "peer certificate rejected (status 0x%x)", status);
    }
}

static const char *s_alert_hint (gnutls_alert_description_t alert)
{
    switch (alert) {
    case GNUTLS_A_CERTIFICATE_REQUIRED:
        return " (the peer requires a certificate: give this side cert_file and key_file from "
               "the Hermes PKI)";
    case GNUTLS_A_UNKNOWN_CA:
    case GNUTLS_A_BAD_CERTIFICATE:
    case GNUTLS_A_CERTIFICATE_UNKNOWN:
    case GNUTLS_A_DECRYPT_ERROR:
        return " (the peer does not accept our certificate: is it from the same Hermes CA, "
               "and does it carry the name the peer expects?)";
    case GNUTLS_A_CERTIFICATE_EXPIRED:
        return " (our certificate has expired for the peer: reissue it, check clocks)";
    case GNUTLS_A_NO_APPLICATION_PROTOCOL:
        return " (no common ALPN protocol)";
    case GNUTLS_A_PROTOCOL_VERSION:
        return " (no common TLS version: Hermes needs TLS 1.3)";
    default:
        return "";
    }
}

/* Marks the session failed with "TLS <what>[ with NAME]: <reason>". */
static void s_fail (hms_tls_t *self, const char *what, int rc)
{
    int saved_errno = errno;
    char reason[384];
    switch (rc) {
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
    case GNUTLS_E_CERTIFICATE_ERROR:
        s_verify_text (self, reason, sizeof reason);
        break;
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
        snprintf (reason, sizeof reason,
                  "no certificate from peer (it must present one from the Hermes CA)");
        break;
    case GNUTLS_E_NO_APPLICATION_PROTOCOL:
        snprintf (reason, sizeof reason, "ALPN: peer offers no %s",
                  self->ctx->alpn_text ? self->ctx->alpn_text : "protocol");
        break;
    case GNUTLS_E_FATAL_ALERT_RECEIVED: {
        gnutls_alert_description_t alert = gnutls_alert_get (self->session);
        const char *name = gnutls_alert_get_name (alert);
        snprintf (reason, sizeof reason, "peer refused the connection: TLS alert '%s'%s",
                  name ? name : "unknown", s_alert_hint (alert));
        break;
    }
    case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
        snprintf (reason, sizeof reason, "peer does not offer TLS 1.3%s (upgrade the peer)",
                  self->ctx->tls13_only ? "" : " or 1.2");
        break;
    case GNUTLS_E_PREMATURE_TERMINATION:
        snprintf (reason, sizeof reason, "%s",
                  self->state == S_HANDSHAKE
                      ? "peer closed the connection during the handshake (see its log)"
                      : "peer closed the connection without close_notify (data may be "
                        "truncated)");
        break;
    case GNUTLS_E_PUSH_ERROR:
    case GNUTLS_E_PULL_ERROR:
        snprintf (reason, sizeof reason, "socket error: %s", strerror (saved_errno));
        break;
    case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
    case GNUTLS_E_UNEXPECTED_PACKET:
        snprintf (reason, sizeof reason, "%s (is the peer speaking TLS on this port?)",
                  gnutls_strerror (rc));
        break;
    default:
        snprintf (reason, sizeof reason, "%s", gnutls_strerror (rc));
        break;
    }
    if (self->server_name)
        snprintf (self->err, sizeof self->err, "TLS %s with %s: %s", what, self->server_name,
                  reason);
    else
        snprintf (self->err, sizeof self->err, "TLS %s: %s", what, reason);
    self->state = S_FAILED;
}

/* A failure found by this module rather than by GnuTLS. */
static void s_fail_text (hms_tls_t *self, const char *what, const char *reason)
{
    if (self->server_name)
        snprintf (self->err, sizeof self->err, "TLS %s with %s: %s", what, self->server_name,
                  reason);
    else
        snprintf (self->err, sizeof self->err, "TLS %s: %s", what, reason);
    self->state = S_FAILED;
}

/* ---------------------------------------------------------------------------------------- */
/* Session */

static bool s_is_ip (const char *name)
{
    unsigned char buf[16];
    return inet_pton (AF_INET, name, buf) == 1 || inet_pton (AF_INET6, name, buf) == 1;
}

static int s_session_setup (hms_tls_t *self)
{
    hms_tls_ctx_t *ctx = self->ctx;
    unsigned int flags = (ctx->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
                         GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS;
    int rc = gnutls_init (&self->session, flags);
    if (rc < 0) {
        self->session = NULL;
        return rc;
    }
    if ((rc = gnutls_priority_set (self->session, ctx->prio)) < 0 ||
        (rc = gnutls_credentials_set (self->session, GNUTLS_CRD_CERTIFICATE, ctx->cred)) < 0)
        return rc;
    unsigned int nv = 0;
    if (ctx->server) {
        gnutls_certificate_server_set_request (
            self->session, ctx->verify_peer ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_IGNORE);
        /* Without the CA list in the request, a client with a certificate from another CA
         * sends it, and the refusal names the CA instead of "no certificate". */
        gnutls_certificate_send_x509_rdn_sequence (self->session, 1);
        self->vdata[nv].type = GNUTLS_DT_KEY_PURPOSE_OID;
        self->vdata[nv++].data = (unsigned char *) GNUTLS_KP_TLS_WWW_CLIENT;
    } else {
        if (!s_is_ip (self->server_name) &&
            (rc = gnutls_server_name_set (self->session, GNUTLS_NAME_DNS, self->server_name,
                                          strlen (self->server_name))) < 0)
            return rc;
        self->vdata[nv].type = GNUTLS_DT_DNS_HOSTNAME;
        self->vdata[nv++].data = (unsigned char *) self->server_name;
        self->vdata[nv].type = GNUTLS_DT_KEY_PURPOSE_OID;
        self->vdata[nv++].data = (unsigned char *) GNUTLS_KP_TLS_WWW_SERVER;
    }
    if (ctx->verify_peer)
        gnutls_session_set_verify_cert2 (self->session, self->vdata, nv, 0);
    if (ctx->alpn_count > 0 && (rc = gnutls_alpn_set_protocols (
                                    self->session, ctx->alpn, ctx->alpn_count,
                                    (ctx->alpn_optional ? 0 : GNUTLS_ALPN_MANDATORY) |
                                        (ctx->server ? GNUTLS_ALPN_SERVER_PRECEDENCE : 0))) < 0)
        return rc;
    gnutls_handshake_set_timeout (self->session, 0);
    gnutls_transport_set_ptr (self->session, self);
    gnutls_transport_set_pull_function (self->session, s_pull);
    gnutls_transport_set_pull_timeout_function (self->session, s_pull_timeout);
    gnutls_transport_set_vec_push_function (self->session, s_push);
    return 0;
}

hms_tls_t *hms_tls_new (hms_tls_ctx_t *ctx, int fd, const char *server_name)
{
    assert (ctx);
    assert (fd >= 0);
    assert (ctx->server || (server_name && *server_name));
    hms_tls_t *self = hms_alloc (sizeof *self);
    atomic_fetch_add (&ctx->refs, 1);
    self->ctx = ctx;
    self->fd = fd;
    self->state = S_HANDSHAKE;
    self->server_name = ctx->server ? NULL : hms_strdup (server_name);
    int rc = s_session_setup (self);
    if (rc < 0) {
        hms_error ("TLS: cannot set up a session: %s fd=%d", gnutls_strerror (rc), fd);
        hms_tls_destroy (&self);
    }
    return self;
}

void hms_tls_destroy (hms_tls_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hms_tls_t *self = *self_p;
    if (self->session)
        gnutls_deinit (self->session);
    s_ctx_unref (self->ctx);
    free (self->server_name);
    free (self->pend);
    free (self->rbuf);
    free (self->wc);
    free (self->alpn);
    free (self->peer_name);
    free (self);
    *self_p = NULL;
}

/* Checks what the handshake agreed on and records ALPN and the peer name. */
static int s_handshake_done (hms_tls_t *self)
{
    hms_tls_ctx_t *ctx = self->ctx;
    gnutls_datum_t proto = {NULL, 0};
    if (gnutls_alpn_get_selected_protocol (self->session, &proto) == 0 && proto.size > 0) {
        self->alpn = hms_alloc (proto.size + 1);
        memcpy (self->alpn, proto.data, proto.size);
    } else if (ctx->alpn_count > 0 && !ctx->alpn_optional) {
        char reason[300];
        snprintf (reason, sizeof reason, "ALPN: peer offers no %s", ctx->alpn_text);
        gnutls_alert_send (self->session, GNUTLS_AL_FATAL, GNUTLS_A_NO_APPLICATION_PROTOCOL);
        s_fail_text (self, "handshake", reason);
        return -1;
    }
    gnutls_x509_crt_t crt = s_peer_crt (self);
    if (ctx->verify_peer) {
        if (!crt) {
            s_fail (self, "handshake", GNUTLS_E_NO_CERTIFICATE_FOUND);
            return -1;
        }
        if (gnutls_session_get_verify_cert_status (self->session) != 0) {
            gnutls_x509_crt_deinit (crt);
            s_fail (self, "handshake", GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR);
            return -1;
        }
        self->verified = true;
        char cn[256];
        size_t cnlen = sizeof cn;
        if (gnutls_x509_crt_get_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnlen) == 0)
            self->peer_name = hms_strdup (cn);
    }
    if (crt)
        gnutls_x509_crt_deinit (crt);
    self->state = S_OPEN;
    return 0;
}

int hms_tls_handshake (hms_tls_t *self)
{
    if (self->state == S_FAILED)
        return -1;
    if (self->state != S_HANDSHAKE)
        return 0;
    self->blocked_write = false;
    for (;;) {
        int rc = gnutls_handshake (self->session);
        if (rc == 0)
            return s_handshake_done (self);
        if (rc == GNUTLS_E_AGAIN) {
            self->blocked_write = gnutls_record_get_direction (self->session) == 1;
            return self->blocked_write ? HMS_TLS_WANT_WRITE : HMS_TLS_WANT_READ;
        }
        if (gnutls_error_is_fatal (rc)) {
            s_fail (self, "handshake", rc);
            /* Best effort: tell the peer why, unless it told us. */
            if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED && rc != GNUTLS_E_PREMATURE_TERMINATION &&
                rc != GNUTLS_E_PUSH_ERROR && rc != GNUTLS_E_PULL_ERROR)
                gnutls_alert_send_appropriate (self->session, rc);
            return -1;
        }
        /* GNUTLS_E_INTERRUPTED, warning alerts: go on */
    }
}

ssize_t hms_tls_read (hms_tls_t *self, void *buf, size_t len)
{
    if (self->state == S_FAILED)
        return HMS_TLS_ERROR;
    if (self->state == S_HANDSHAKE) {
        s_fail_text (self, "read", "called before the handshake finished (a caller bug)");
        return HMS_TLS_ERROR;
    }
    if (self->peer_closed)
        return HMS_TLS_EOF;
    self->blocked_write = false;
    for (;;) {
        ssize_t n = gnutls_record_recv (self->session, buf, len);
        if (n > 0)
            return n;
        if (n == 0) {
            self->peer_closed = true;
            return HMS_TLS_EOF;
        }
        if (n == GNUTLS_E_AGAIN) {
            self->blocked_write = gnutls_record_get_direction (self->session) == 1;
            return HMS_TLS_AGAIN;
        }
        if (gnutls_error_is_fatal ((int) n)) {
            s_fail (self, "read", (int) n);
            return HMS_TLS_ERROR;
        }
        /* GNUTLS_E_INTERRUPTED, warning alerts, a TLS 1.2 renegotiation request (refused by
         * ignoring it): go on */
    }
}

/* Sends what hms_tls_write held back (and, outside a batch, what a batch combined): 0
 * nothing left, HMS_TLS_WANT_WRITE, or -1. */
static int s_flush (hms_tls_t *self)
{
    if (!self->batching && self->wc_len > 0) {
        if (s_wc_send (self) < 0) {
            s_fail_text (self, "write", strerror (errno));
            return -1;
        }
        if (self->wc_len > 0)
            return HMS_TLS_WANT_WRITE;
    }
    while (self->pend_len > 0) {
        ssize_t n = self->inflight ? gnutls_record_send (self->session, NULL, 0)
                                   : gnutls_record_send (self->session, self->pend + self->pend_off,
                                                         self->pend_len);
        if (n > 0) {
            self->inflight = false;
            self->pend_off += (size_t) n;
            self->pend_len -= (size_t) n;
        } else if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            self->inflight = true;
            if (n == GNUTLS_E_AGAIN)
                return HMS_TLS_WANT_WRITE;
        } else {
            s_fail (self, "write", (int) n);
            return -1;
        }
    }
    free (self->pend);
    self->pend = NULL;
    self->pend_off = 0;
    return 0;
}

int hms_tls_flush (hms_tls_t *self)
{
    if (self->state == S_FAILED)
        return -1;
    return s_flush (self);
}

ssize_t hms_tls_write (hms_tls_t *self, const void *buf, size_t len)
{
    if (self->state == S_FAILED)
        return HMS_TLS_ERROR;
    if (self->state != S_OPEN) {
        s_fail_text (self, "write",
                     self->state == S_HANDSHAKE
                         ? "called before the handshake finished (a caller bug)"
                         : "called after hms_tls_bye (a caller bug)");
        return HMS_TLS_ERROR;
    }
    int rc = s_flush (self);
    if (rc != 0)
        return rc < 0 ? HMS_TLS_ERROR : HMS_TLS_AGAIN;
    const unsigned char *data = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done < HMS_TLS_CHUNK ? len - done : HMS_TLS_CHUNK;
        ssize_t n = gnutls_record_send (self->session, data + done, chunk);
        if (n > 0) {
            done += (size_t) n;
            continue;
        }
        if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
            s_fail (self, "write", (int) n);
            return done > 0 ? (ssize_t) done : HMS_TLS_ERROR;
        }
        /* GnuTLS holds the record: keep a copy of the chunk, in case GnuTLS took less of it
         * than offered, and count it as accepted. */
        self->pend = hms_alloc (chunk);
        memcpy (self->pend, data + done, chunk);
        self->pend_off = 0;
        self->pend_len = chunk;
        self->inflight = true;
        done += chunk;
        rc = s_flush (self);
        if (rc < 0)
            return (ssize_t) done;
        if (rc > 0)
            break;
    }
    return (ssize_t) done;
}

size_t hms_tls_pending (hms_tls_t *self)
{
    return self->state == S_OPEN || self->state == S_CLOSED
               ? gnutls_record_check_pending (self->session) + self->rbuf_len
               : 0;
}

bool hms_tls_want_write (hms_tls_t *self)
{
    return self->state != S_FAILED &&
           (self->pend_len > 0 || self->blocked_write || (!self->batching && self->wc_len > 0));
}

int hms_tls_batch (hms_tls_t *self, bool on)
{
    if (self->state == S_FAILED)
        return -1;
    self->batching = on;
    return on ? 0 : s_flush (self);
}

int hms_tls_bye (hms_tls_t *self)
{
    if (self->state == S_FAILED)
        return -1;
    if (self->state == S_CLOSED)
        return 0;
    if (self->state == S_HANDSHAKE) {
        s_fail_text (self, "close", "called before the handshake finished (a caller bug)");
        return -1;
    }
    int rc = s_flush (self);
    if (rc != 0)
        return rc;
    self->blocked_write = false;
    for (;;) {
        rc = gnutls_bye (self->session, GNUTLS_SHUT_WR);
        if (rc == 0) {
            self->state = S_CLOSED;
            return 0;
        }
        if (rc == GNUTLS_E_AGAIN) {
            self->blocked_write = gnutls_record_get_direction (self->session) == 1;
            return self->blocked_write ? HMS_TLS_WANT_WRITE : HMS_TLS_WANT_READ;
        }
        if (rc != GNUTLS_E_INTERRUPTED) {
            s_fail (self, "close", rc);
            return -1;
        }
    }
}

const char *hms_tls_error (hms_tls_t *self)
{
    return self->err;
}

const char *hms_tls_alpn (hms_tls_t *self)
{
    return self->alpn;
}

const char *hms_tls_peer_name (hms_tls_t *self)
{
    return self->verified ? self->peer_name : NULL;
}

bool hms_tls_peer_verified (hms_tls_t *self)
{
    return self->verified && self->state != S_HANDSHAKE;
}

int hms_tls_fd (hms_tls_t *self)
{
    return self->fd;
}
