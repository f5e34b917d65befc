/* Unit test for hms_pki and hms_tls: the generated PKI (files, modes, certificate contents,
 * idempotency, errors), then real TLS 1.3 handshakes between two non-blocking sessions over a
 * socketpair driven by poll(): mutual authentication, refusals (no client certificate, another
 * CA, wrong server name, no common ALPN), 1 MiB each way with partial writes, close_notify and
 * truncation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_pki.h"
#include "hms_tls.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char s_pki[64];   /* the Hermes PKI: relay, ingress */
static char s_other[64]; /* another installation's PKI */
static const char *const s_names[] = {"relay", "ingress", NULL};
static const char *const s_sans[] = {"relay.hermes.test", "10.9.8.7", "fd00::7", NULL};

static const char *s_path (const char *dir, const char *file)
{
    static char path[8][256];
    static int next;
    char *p = path[next++ % 8];
    snprintf (p, 256, "%s/%s", dir, file);
    return p;
}

static int64_t s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int s_group_setup (void **state)
{
    (void) state;
    char err[512];
    snprintf (s_pki, sizeof s_pki, "/tmp/hms-tls-XXXXXX");
    snprintf (s_other, sizeof s_other, "/tmp/hms-tls-other-XXXXXX");
    if (!mkdtemp (s_pki) || !mkdtemp (s_other))
        return -1;
    /* a fresh subfolder, so that hms_pki_generate creates the folder itself */
    strcat (s_pki, "/pki");
    if (hms_pki_generate (s_pki, s_names, s_sans, err, sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        return -1;
    }
    if (hms_pki_generate (s_other, s_names, NULL, err, sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int s_group_teardown (void **state)
{
    (void) state;
    char cmd[256];
    *strrchr (s_pki, '/') = '\0';
    snprintf (cmd, sizeof cmd, "rm -rf '%s' '%s'", s_pki, s_other);
    return system (cmd) == 0 ? 0 : -1;
}

static char *s_slurp (const char *path)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc (1, 65536);
    size_t n = fread (buf, 1, 65535, f);
    fclose (f);
    buf[n] = '\0';
    return buf;
}

static gnutls_x509_crt_t s_load_crt (const char *path)
{
    gnutls_datum_t data = {NULL, 0};
    assert_int_equal (gnutls_load_file (path, &data), 0);
    gnutls_x509_crt_t crt;
    gnutls_x509_crt_init (&crt);
    assert_int_equal (gnutls_x509_crt_import (crt, &data, GNUTLS_X509_FMT_PEM), 0);
    gnutls_free (data.data);
    return crt;
}

static void s_assert_mode (const char *path, mode_t mode)
{
    struct stat st;
    assert_int_equal (stat (path, &st), 0);
    if ((st.st_mode & 07777) != mode)
        fail_msg ("%s has mode %o, expected %o", path, st.st_mode & 07777, mode);
}

/* ---------------------------------------------------------------------------------------- */
/* PKI */

static bool s_has_san (gnutls_x509_crt_t crt, int type, const void *data, size_t size)
{
    for (unsigned int i = 0;; i++) {
        unsigned char buf[256];
        size_t len = sizeof buf;
        int rc = gnutls_x509_crt_get_subject_alt_name (crt, i, buf, &len, NULL);
        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            return false;
        if (rc == type && len == size && memcmp (buf, data, size) == 0)
            return true;
    }
}

static void test_pki_files (void **state)
{
    (void) state;
    s_assert_mode (s_pki, 0700);
    s_assert_mode (s_path (s_pki, "ca.key"), 0600);
    s_assert_mode (s_path (s_pki, "relay.key"), 0600);
    s_assert_mode (s_path (s_pki, "ingress.key"), 0600);
    s_assert_mode (s_path (s_pki, "ca.crt"), 0644);
    s_assert_mode (s_path (s_pki, "relay.crt"), 0644);

    gnutls_x509_crt_t ca = s_load_crt (s_path (s_pki, "ca.crt"));
    unsigned int critical = 0, usage = 0;
    int pathlen = -2;
    assert_true (gnutls_x509_crt_get_basic_constraints (ca, &critical, NULL, &pathlen) > 0);
    assert_int_equal (pathlen, 0);
    assert_int_equal (gnutls_x509_crt_get_key_usage (ca, &usage, &critical), 0);
    assert_true (usage & GNUTLS_KEY_KEY_CERT_SIGN);
    assert_int_equal (gnutls_x509_crt_get_pk_algorithm (ca, NULL), GNUTLS_PK_ECDSA);
    time_t life =
        gnutls_x509_crt_get_expiration_time (ca) - gnutls_x509_crt_get_activation_time (ca);
    assert_true (life > 3650L * 86400 && life < 3660L * 86400);

    gnutls_x509_crt_t crt = s_load_crt (s_path (s_pki, "relay.crt"));
    char cn[128];
    size_t cnlen = sizeof cn;
    assert_int_equal (
        gnutls_x509_crt_get_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnlen), 0);
    assert_string_equal (cn, "relay");
    assert_int_equal (gnutls_x509_crt_get_basic_constraints (crt, NULL, NULL, NULL), 0);
    unsigned char serial[40];
    size_t serial_len = sizeof serial;
    assert_int_equal (gnutls_x509_crt_get_serial (crt, serial, &serial_len), 0);
    assert_int_equal (serial_len, 16);
    life = gnutls_x509_crt_get_expiration_time (crt) - gnutls_x509_crt_get_activation_time (crt);
    assert_true (life > 730L * 86400 && life < 732L * 86400);
    assert_int_equal (gnutls_x509_crt_get_pk_algorithm (crt, NULL), GNUTLS_PK_ECDSA);

    unsigned char v4[4] = {127, 0, 0, 1}, x4[4] = {10, 9, 8, 7};
    unsigned char v6[16] = {0}, x6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};
    v6[15] = 1;
    assert_true (s_has_san (crt, GNUTLS_SAN_DNSNAME, "relay", 5));
    assert_true (s_has_san (crt, GNUTLS_SAN_DNSNAME, "localhost", 9));
    assert_true (s_has_san (crt, GNUTLS_SAN_DNSNAME, "relay.hermes.test", 17));
    assert_true (s_has_san (crt, GNUTLS_SAN_IPADDRESS, v4, 4));
    assert_true (s_has_san (crt, GNUTLS_SAN_IPADDRESS, v6, 16));
    assert_true (s_has_san (crt, GNUTLS_SAN_IPADDRESS, x4, 4));
    assert_true (s_has_san (crt, GNUTLS_SAN_IPADDRESS, x6, 16));
    assert_false (s_has_san (crt, GNUTLS_SAN_DNSNAME, "ingress", 7));

    bool server_auth = false, client_auth = false;
    for (unsigned int i = 0;; i++) {
        char oid[128];
        size_t len = sizeof oid;
        if (gnutls_x509_crt_get_key_purpose_oid (crt, i, oid, &len, NULL) < 0)
            break;
        server_auth |= strcmp (oid, GNUTLS_KP_TLS_WWW_SERVER) == 0;
        client_auth |= strcmp (oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0;
    }
    assert_true (server_auth && client_auth);

    unsigned int status = 1;
    assert_int_equal (gnutls_x509_crt_verify (crt, &ca, 1, 0, &status), 0);
    assert_int_equal (status, 0);
    gnutls_x509_crt_t other_ca = s_load_crt (s_path (s_other, "ca.crt"));
    assert_int_equal (gnutls_x509_crt_verify (crt, &other_ca, 1, 0, &status), 0);
    assert_int_not_equal (status, 0);
    gnutls_x509_crt_deinit (other_ca);
    gnutls_x509_crt_deinit (crt);
    gnutls_x509_crt_deinit (ca);
}

static void test_pki_idempotent (void **state)
{
    (void) state;
    char err[512];
    char *ca = s_slurp (s_path (s_pki, "ca.crt"));
    char *ca_key = s_slurp (s_path (s_pki, "ca.key"));
    char *relay = s_slurp (s_path (s_pki, "relay.crt"));
    char *relay_key = s_slurp (s_path (s_pki, "relay.key"));
    assert_non_null (ca);
    assert_non_null (relay_key);
    assert_int_equal (hms_pki_generate (s_pki, s_names, s_sans, err, sizeof err), 0);
    char *again = s_slurp (s_path (s_pki, "ca.crt"));
    assert_string_equal (again, ca);
    free (again);
    again = s_slurp (s_path (s_pki, "ca.key"));
    assert_string_equal (again, ca_key);
    free (again);
    again = s_slurp (s_path (s_pki, "relay.crt"));
    assert_string_equal (again, relay);
    free (again);

    /* a removed certificate is issued again for the kept key */
    assert_int_equal (unlink (s_path (s_pki, "relay.crt")), 0);
    assert_int_equal (hms_pki_generate (s_pki, s_names, s_sans, err, sizeof err), 0);
    again = s_slurp (s_path (s_pki, "relay.crt"));
    assert_string_not_equal (again, relay);
    free (again);
    again = s_slurp (s_path (s_pki, "relay.key"));
    assert_string_equal (again, relay_key);
    free (again);
    again = s_slurp (s_path (s_pki, "ca.crt"));
    assert_string_equal (again, ca);
    free (again);
    free (ca);
    free (ca_key);
    free (relay);
    free (relay_key);
}

static void test_pki_errors (void **state)
{
    (void) state;
    char err[512];
    const char *const bad_name[] = {"relay", "../evil", NULL};
    assert_int_equal (hms_pki_generate (s_pki, bad_name, NULL, err, sizeof err), -1);
    assert_non_null (strstr (err, "'../evil'"));
    const char *const hidden[] = {".relay", NULL};
    assert_int_equal (hms_pki_generate (s_pki, hidden, NULL, err, sizeof err), -1);
    const char *const ca_name[] = {"ca", NULL};
    assert_int_equal (hms_pki_generate (s_pki, ca_name, NULL, err, sizeof err), -1);
    const char *const bad_san[] = {"has space", NULL};
    assert_int_equal (hms_pki_generate (s_pki, s_names, bad_san, err, sizeof err), -1);
    assert_non_null (strstr (err, "'has space'"));

    /* A host with ca.crt and its own pair but no CA key: checking passes, issuing names the
     * missing file. */
    char dir[64], cmd[512];
    snprintf (dir, sizeof dir, "/tmp/hms-tls-host-XXXXXX");
    assert_non_null (mkdtemp (dir));
    snprintf (cmd, sizeof cmd, "cp -p '%s/ca.crt' '%s/relay.crt' '%s/relay.key' '%s/'", s_pki,
              s_pki, s_pki, dir);
    assert_int_equal (system (cmd), 0);
    const char *const relay[] = {"relay", NULL};
    assert_int_equal (hms_pki_generate (dir, relay, NULL, err, sizeof err), 0);
    const char *const policy[] = {"policy", NULL};
    assert_int_equal (hms_pki_generate (dir, policy, NULL, err, sizeof err), -1);
    assert_non_null (strstr (err, "ca.key is missing"));
    assert_int_equal (access (s_path (dir, "policy.key"), F_OK), -1);

    /* a certificate without its key, and a pair from another CA */
    assert_int_equal (unlink (s_path (dir, "relay.key")), 0);
    assert_int_equal (hms_pki_generate (dir, relay, NULL, err, sizeof err), -1);
    assert_non_null (strstr (err, "relay.key is missing"));
    snprintf (cmd, sizeof cmd, "cp -p '%s/relay.crt' '%s/relay.key' '%s/'", s_other, s_other, dir);
    assert_int_equal (system (cmd), 0);
    assert_int_equal (hms_pki_generate (dir, relay, NULL, err, sizeof err), -1);
    assert_non_null (strstr (err, "is not signed by"));
    printf ("# pki errors read like: %s\n", err);
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal (system (cmd), 0);
}

/* Checks the files with an independent implementation when one is installed. */
static void test_pki_external_verify (void **state)
{
    (void) state;
    char cmd[1024];
    if (system ("command -v certtool >/dev/null 2>&1") == 0) {
        snprintf (cmd, sizeof cmd,
                  "certtool --verify --load-ca-certificate '%s/ca.crt' --infile '%s/relay.crt' "
                  ">/dev/null",
                  s_pki, s_pki);
        assert_int_equal (system (cmd), 0);
    } else if (system ("command -v openssl >/dev/null 2>&1") == 0) {
        const char *names[] = {"relay", "ingress"};
        for (size_t i = 0; i < 2; i++) {
            snprintf (cmd, sizeof cmd,
                      "openssl verify -CAfile '%s/ca.crt' -purpose sslserver '%s/%s.crt' "
                      ">/dev/null && openssl verify -CAfile '%s/ca.crt' -purpose sslclient "
                      "'%s/%s.crt' >/dev/null && openssl pkey -in '%s/%s.key' -noout",
                      s_pki, s_pki, names[i], s_pki, s_pki, names[i], s_pki, names[i]);
            assert_int_equal (system (cmd), 0);
        }
        snprintf (cmd, sizeof cmd,
                  "openssl verify -CAfile '%s/ca.crt' '%s/relay.crt' >/dev/null 2>&1", s_other,
                  s_pki);
        assert_int_not_equal (system (cmd), 0);
    } else
        skip ();
}

/* ---------------------------------------------------------------------------------------- */
/* TLS */

typedef struct {
    const char *dir;      /* PKI of the certificate */
    const char *ca_dir;   /* PKI of the trusted CA */
    const char *identity; /* NULL: no certificate */
    const char *alpn;
    bool alpn_optional;
} s_end_t;

static hms_tls_ctx_t *s_ctx (bool server, const s_end_t *end, bool require)
{
    char err[512] = "";
    hms_tls_opts_t opts = {
        .ca_file = s_path (end->ca_dir, "ca.crt"),
        .server = server,
        .require_peer_cert = require,
        .alpn = end->alpn,
        .alpn_optional = end->alpn_optional,
        .tls13_only = true,
    };
    char crt[64], key[64];
    if (end->identity) {
        snprintf (crt, sizeof crt, "%s.crt", end->identity);
        snprintf (key, sizeof key, "%s.key", end->identity);
        opts.cert_file = s_path (end->dir, crt);
        opts.key_file = s_path (end->dir, key);
    }
    hms_tls_ctx_t *ctx = hms_tls_ctx_new (&opts, err, sizeof err);
    if (!ctx)
        fail_msg ("hms_tls_ctx_new: %s", err);
    return ctx;
}

typedef struct {
    int fd[2];
    hms_tls_ctx_t *sctx, *cctx;
    hms_tls_t *srv, *cli;
    int src, crc; /* handshake results */
} s_pair_t;

static void s_socketpair (int fd[2], int sndbuf)
{
    assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, fd), 0);
    for (int i = 0; i < 2; i++) {
        fcntl (fd[i], F_SETFL, fcntl (fd[i], F_GETFL) | O_NONBLOCK);
        if (sndbuf)
            setsockopt (fd[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
}

/* Drives both handshakes with poll() until both are settled, or one failed and the other gets
 * nothing more from its socket. */
static void s_handshake (s_pair_t *p)
{
    hms_tls_t *t[2] = {p->srv, p->cli};
    int rc[2] = {HMS_TLS_WANT_READ, HMS_TLS_WANT_WRITE};
    int64_t deadline = s_now_ms () + 5000;
    while (s_now_ms () < deadline) {
        for (int i = 0; i < 2; i++)
            if (rc[i] > 0)
                rc[i] = hms_tls_handshake (t[i]);
        if (rc[0] <= 0 && rc[1] <= 0)
            break;
        struct pollfd pfd[2];
        int n = 0;
        for (int i = 0; i < 2; i++)
            if (rc[i] > 0)
                pfd[n++] = (struct pollfd){hms_tls_fd (t[i]),
                                           rc[i] == HMS_TLS_WANT_WRITE ? POLLOUT : POLLIN, 0};
        if (poll (pfd, (nfds_t) n, 200) == 0 && (rc[0] < 0 || rc[1] < 0))
            break;
    }
    p->src = rc[0];
    p->crc = rc[1];
}

static void s_pair_open (s_pair_t *p, const s_end_t *server, const s_end_t *client,
                         const char *server_name)
{
    memset (p, 0, sizeof *p);
    s_socketpair (p->fd, 0);
    p->sctx = s_ctx (true, server, true);
    p->cctx = s_ctx (false, client, false);
    p->srv = hms_tls_new (p->sctx, p->fd[0], NULL);
    p->cli = hms_tls_new (p->cctx, p->fd[1], server_name);
    assert_non_null (p->srv);
    assert_non_null (p->cli);
    s_handshake (p);
}

static void s_pair_close (s_pair_t *p)
{
    hms_tls_destroy (&p->srv);
    hms_tls_destroy (&p->cli);
    hms_tls_destroy (&p->srv); /* twice is safe */
    hms_tls_ctx_destroy (&p->sctx);
    hms_tls_ctx_destroy (&p->cctx);
    assert_null (p->sctx);
    close (p->fd[0]);
    close (p->fd[1]);
}

/* Reads from a session until it fails or times out; returns the last result. */
static ssize_t s_read_result (hms_tls_t *t, int64_t ms)
{
    char buf[256];
    int64_t deadline = s_now_ms () + ms;
    ssize_t n = HMS_TLS_AGAIN;
    while (s_now_ms () < deadline) {
        n = hms_tls_read (t, buf, sizeof buf);
        if (n != HMS_TLS_AGAIN)
            return n;
        struct pollfd pfd = {hms_tls_fd (t), POLLIN, 0};
        poll (&pfd, 1, 50);
    }
    return n;
}

static void test_handshake_ok (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "h2,http/1.1", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "relay");
    if (p.src != 0 || p.crc != 0)
        fail_msg ("server %d '%s', client %d '%s'", p.src, hms_tls_error (p.srv), p.crc,
                  hms_tls_error (p.cli));
    assert_string_equal (hms_tls_alpn (p.srv), "h2");
    assert_string_equal (hms_tls_alpn (p.cli), "h2");
    assert_string_equal (hms_tls_peer_name (p.srv), "ingress");
    assert_string_equal (hms_tls_peer_name (p.cli), "relay");
    assert_true (hms_tls_peer_verified (p.srv));
    assert_true (hms_tls_peer_verified (p.cli));
    assert_string_equal (hms_tls_error (p.srv), "");
    assert_int_equal (hms_tls_handshake (p.srv), 0); /* again: still done */
    s_pair_close (&p);

    /* the server's IP SANs and extra DNS SAN are names a client may expect */
    const char *names[] = {"127.0.0.1", "::1", "relay.hermes.test", "10.9.8.7", "localhost"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        s_pair_open (&p, &server, &client, names[i]);
        if (p.src != 0 || p.crc != 0)
            fail_msg ("name %s: client '%s'", names[i], hms_tls_error (p.cli));
        s_pair_close (&p);
    }
}

static void test_no_client_cert (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, NULL, "h2", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, -1);
    assert_non_null (strstr (hms_tls_error (p.srv), "no certificate from peer"));
    assert_false (hms_tls_peer_verified (p.srv));
    assert_null (hms_tls_peer_name (p.srv));
    /* TLS 1.3: the client finished first and learns of the refusal when it reads */
    if (p.crc == 0)
        assert_int_equal (s_read_result (p.cli, 2000), HMS_TLS_ERROR);
    assert_non_null (strstr (hms_tls_error (p.cli), "certificate"));
    printf ("# server: %s\n# client: %s\n", hms_tls_error (p.srv), hms_tls_error (p.cli));
    assert_int_equal (hms_tls_read (p.srv, (char[8]){0}, 8), HMS_TLS_ERROR); /* stays failed */
    s_pair_close (&p);
}

static void test_other_ca (void **state)
{
    (void) state;
    /* a client whose certificate comes from another installation's CA; it trusts both CAs,
     * so its own context accepts that certificate and it accepts our server */
    char bundle[64], cmd[512];
    snprintf (bundle, sizeof bundle, "/tmp/hms-tls-bundle-XXXXXX");
    assert_non_null (mkdtemp (bundle));
    snprintf (cmd, sizeof cmd, "cat '%s/ca.crt' '%s/ca.crt' > '%s/ca.crt'", s_pki, s_other, bundle);
    assert_int_equal (system (cmd), 0);
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_other, bundle, "ingress", "h2", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, -1);
    assert_non_null (strstr (hms_tls_error (p.srv), "not signed by the Hermes CA"));
    if (p.crc == 0)
        assert_int_equal (s_read_result (p.cli, 2000), HMS_TLS_ERROR);
    printf ("# server: %s\n# client: %s\n", hms_tls_error (p.srv), hms_tls_error (p.cli));
    s_pair_close (&p);
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", bundle);
    assert_int_equal (system (cmd), 0);

    /* a client that trusts only the other CA refuses our server */
    s_end_t stranger = {s_other, s_other, "ingress", "h2", false};
    s_pair_open (&p, &server, &stranger, "relay");
    assert_int_equal (p.crc, -1);
    assert_non_null (strstr (hms_tls_error (p.cli), "not signed by the Hermes CA"));
    assert_int_equal (p.src, -1);
    printf ("# server: %s\n# client: %s\n", hms_tls_error (p.srv), hms_tls_error (p.cli));
    s_pair_close (&p);
}

static void test_wrong_name (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "h2", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "ingress");
    assert_int_equal (p.crc, -1);
    assert_non_null (strstr (hms_tls_error (p.cli), "not valid for the name 'ingress'"));
    assert_false (hms_tls_peer_verified (p.cli));
    printf ("# server: %s\n# client: %s\n", hms_tls_error (p.srv), hms_tls_error (p.cli));
    s_pair_close (&p);
}

static void test_alpn_mismatch (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "http/1.1", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, -1);
    assert_non_null (strstr (hms_tls_error (p.srv), "ALPN: peer offers no h2"));
    assert_int_not_equal (p.crc, 0);
    printf ("# server: %s\n# client: %s\n", hms_tls_error (p.srv), hms_tls_error (p.cli));
    s_pair_close (&p);

    /* a client that offers no ALPN at all */
    client.alpn = NULL;
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, -1);
    assert_non_null (strstr (hms_tls_error (p.srv), "ALPN: peer offers no h2"));
    s_pair_close (&p);
}

/* A server whose protocols are optional (the ingress's proxy port): a client offering none,
 * or none of the list, is let in without one; one offering a listed protocol gets it. */
static void test_alpn_optional (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2,http/1.1", true};
    const char *offers[] = {NULL, "http/1.1", "h2", "spdy/3"};
    const char *agreed[] = {NULL, "http/1.1", "h2", NULL};
    for (int i = 0; i < 4; i++) {
        s_end_t client = {s_pki, s_pki, "ingress", offers[i], false};
        s_pair_t p;
        s_pair_open (&p, &server, &client, "relay");
        assert_int_equal (p.src, 0);
        if (!offers[i] || agreed[i]) /* an hms_tls client itself insists on its protocol */
            assert_int_equal (p.crc, 0);
        if (agreed[i])
            assert_string_equal (hms_tls_alpn (p.srv), agreed[i]);
        else
            assert_null (hms_tls_alpn (p.srv));
        s_pair_close (&p);
    }
}

static unsigned char s_pattern (size_t i, int side)
{
    return (unsigned char) ((i * 2654435761u >> 13) ^ (unsigned) side * 0x5a);
}

/* 1 MiB each way at once over small socket buffers, writes from a scratch buffer that is
 * scribbled over after each call (hms_tls_write copies), reads in small pieces that leave
 * data pending inside the session. Batched: three writes a wake between hms_tls_batch (true)
 * and (false), whose records leave combined (and wait in the batch when the socket is
 * full). */
static void s_round_trip (bool batched)
{
    enum { TOTAL = 1 << 20, WCHUNK = 50000, RCHUNK = 1000, READS_PER_WAKE = 8 };
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "h2", false};
    s_pair_t p;
    memset (&p, 0, sizeof p);
    s_socketpair (p.fd, 8192);
    p.sctx = s_ctx (true, &server, true);
    p.cctx = s_ctx (false, &client, false);
    p.srv = hms_tls_new (p.sctx, p.fd[0], NULL);
    p.cli = hms_tls_new (p.cctx, p.fd[1], "relay");
    s_handshake (&p);
    assert_int_equal (p.src, 0);
    assert_int_equal (p.crc, 0);

    hms_tls_t *t[2] = {p.srv, p.cli};
    unsigned char *got[2] = {malloc (TOTAL), malloc (TOTAL)};
    unsigned char scratch[WCHUNK];
    size_t sent[2] = {0, 0}, recvd[2] = {0, 0};
    int partial = 0, again = 0, pending_seen = 0;
    int64_t deadline = s_now_ms () + 20000;
    while ((sent[0] < TOTAL || sent[1] < TOTAL || recvd[0] < TOTAL || recvd[1] < TOTAL ||
            hms_tls_want_write (t[0]) || hms_tls_want_write (t[1])) &&
           s_now_ms () < deadline) {
        bool pending = false;
        for (int i = 0; i < 2; i++) {
            if (sent[i] < TOTAL) {
                if (batched)
                    assert_int_equal (hms_tls_batch (t[i], true), 0);
                for (int w = 0; w < (batched ? 3 : 1) && sent[i] < TOTAL; w++) {
                    size_t len = TOTAL - sent[i] < WCHUNK ? TOTAL - sent[i] : WCHUNK;
                    for (size_t k = 0; k < len; k++)
                        scratch[k] = s_pattern (sent[i] + k, i);
                    ssize_t n = hms_tls_write (t[i], scratch, len);
                    memset (scratch, 0xee, sizeof scratch);
                    if (n == HMS_TLS_AGAIN) {
                        again++;
                        break;
                    }
                    if (n < 0)
                        fail_msg ("write: %s", hms_tls_error (t[i]));
                    partial += (size_t) n < len;
                    sent[i] += (size_t) n;
                    if ((size_t) n < len)
                        break;
                }
                if (batched) {
                    int rc = hms_tls_batch (t[i], false);
                    if (rc < 0)
                        fail_msg ("end of batch: %s", hms_tls_error (t[i]));
                    again += rc > 0;
                    assert_true (rc == 0 || hms_tls_want_write (t[i]));
                }
            } else if (hms_tls_flush (t[i]) < 0)
                fail_msg ("flush: %s", hms_tls_error (t[i]));
            for (int r = 0; r < READS_PER_WAKE && recvd[i] < TOTAL; r++) {
                size_t want = TOTAL - recvd[i] < RCHUNK ? TOTAL - recvd[i] : RCHUNK;
                ssize_t n = hms_tls_read (t[i], got[i] + recvd[i], want);
                if (n == HMS_TLS_AGAIN)
                    break;
                if (n <= 0)
                    fail_msg ("read %zd: %s", n, hms_tls_error (t[i]));
                recvd[i] += (size_t) n;
            }
            /* stopped before HMS_TLS_AGAIN: bytes may sit in the session, not the socket */
            if (hms_tls_pending (t[i]) > 0) {
                pending = true;
                pending_seen++;
            }
        }
        struct pollfd pfd[2];
        for (int i = 0; i < 2; i++)
            pfd[i] = (struct pollfd){
                hms_tls_fd (t[i]),
                (short) (POLLIN | (sent[i] < TOTAL || hms_tls_want_write (t[i]) ? POLLOUT : 0)), 0};
        poll (pfd, 2, pending ? 0 : 200);
    }
    assert_int_equal (sent[0], TOTAL);
    assert_int_equal (sent[1], TOTAL);
    assert_int_equal (recvd[0], TOTAL);
    assert_int_equal (recvd[1], TOTAL);
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < TOTAL; k++)
            if (got[i][k] != s_pattern (k, 1 - i))
                fail_msg ("side %d byte %zu differs", i, k);
    printf ("# 1 MiB each way: %d partial writes, %d HMS_TLS_AGAIN, pending seen %d times\n",
            partial, again, pending_seen);
    assert_true (partial + again > 0);
    assert_true (pending_seen > 0);

    /* close_notify from the client: the server reads EOF, then answers with its own */
    int rc;
    while ((rc = hms_tls_bye (p.cli)) > 0) {
        struct pollfd pfd = {p.fd[1], POLLOUT, 0};
        poll (&pfd, 1, 200);
    }
    assert_int_equal (rc, 0);
    assert_int_equal (hms_tls_bye (p.cli), 0); /* again: nothing to do */
    assert_int_equal (s_read_result (p.srv, 2000), HMS_TLS_EOF);
    assert_int_equal (hms_tls_read (p.srv, got[0], 10), HMS_TLS_EOF);
    assert_int_equal (hms_tls_write (p.srv, "late", 4), 4); /* half-close: still allowed */
    assert_int_equal (hms_tls_bye (p.srv), 0);
    char buf[8];
    ssize_t n = 0;
    while (n >= 0 && n < 4) {
        struct pollfd pfd = {p.fd[1], POLLIN, 0};
        poll (&pfd, 1, 200);
        ssize_t r = hms_tls_read (p.cli, buf + n, sizeof buf - (size_t) n);
        if (r != HMS_TLS_AGAIN)
            n = r < 0 ? r : n + r;
    }
    assert_int_equal (n, 4);
    assert_memory_equal (buf, "late", 4);
    assert_int_equal (s_read_result (p.cli, 2000), HMS_TLS_EOF);
    /* writing after hms_tls_bye is a caller bug, reported as an error */
    assert_int_equal (hms_tls_write (p.cli, "x", 1), HMS_TLS_ERROR);
    assert_non_null (strstr (hms_tls_error (p.cli), "after hms_tls_bye"));
    free (got[0]);
    free (got[1]);
    s_pair_close (&p);
}

static void test_round_trip (void **state)
{
    s_round_trip (false);
}

static void test_round_trip_batched (void **state)
{
    s_round_trip (true);
}

static void test_truncation (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "h2", false};
    s_pair_t p;
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, 0);
    assert_int_equal (p.crc, 0);
    /* the client vanishes without close_notify */
    close (p.fd[1]);
    p.fd[1] = open ("/dev/null", O_RDONLY);
    assert_int_equal (s_read_result (p.srv, 2000), HMS_TLS_ERROR);
    assert_non_null (strstr (hms_tls_error (p.srv), "without close_notify"));
    printf ("# server: %s\n", hms_tls_error (p.srv));
    s_pair_close (&p);

    /* writing to a closed socket fails without SIGPIPE */
    s_pair_open (&p, &server, &client, "relay");
    assert_int_equal (p.src, 0);
    close (p.fd[1]);
    p.fd[1] = open ("/dev/null", O_RDONLY);
    char data[4096] = {0};
    ssize_t n = 0;
    for (int i = 0; i < 100 && n >= 0; i++)
        n = hms_tls_write (p.srv, data, sizeof data);
    assert_int_equal (n, HMS_TLS_ERROR);
    assert_non_null (strstr (hms_tls_error (p.srv), "socket error"));
    printf ("# server: %s\n", hms_tls_error (p.srv));
    s_pair_close (&p);
}

static void test_ctx_errors (void **state)
{
    (void) state;
    char err[512];
    hms_tls_opts_t opts = {.ca_file = "/nonexistent/ca.crt", .alpn = "h2"};
    assert_null (hms_tls_ctx_new (&opts, err, sizeof err));
    assert_non_null (strstr (err, "/nonexistent/ca.crt"));

    opts.ca_file = s_path (s_pki, "ca.crt");
    opts.server = true;
    assert_null (hms_tls_ctx_new (&opts, err, sizeof err));
    assert_non_null (strstr (err, "cert_file"));

    opts.cert_file = s_path (s_pki, "relay.crt");
    opts.key_file = s_path (s_pki, "ingress.key");
    assert_null (hms_tls_ctx_new (&opts, err, sizeof err));
    assert_non_null (strstr (err, "does not match"));

    opts.cert_file = s_path (s_other, "relay.crt");
    opts.key_file = s_path (s_other, "relay.key");
    assert_null (hms_tls_ctx_new (&opts, err, sizeof err));
    assert_non_null (strstr (err, "not signed by the CA"));
    printf ("# %s\n", err);

    opts.cert_file = s_path (s_pki, "relay.crt");
    opts.key_file = s_path (s_pki, "relay.key");
    opts.alpn = "h2,,http/1.1";
    assert_null (hms_tls_ctx_new (&opts, err, sizeof err));
    assert_non_null (strstr (err, "ALPN"));

    opts.alpn = " h2 , http/1.1";
    hms_tls_ctx_t *ctx = hms_tls_ctx_new (&opts, err, sizeof err);
    assert_non_null (ctx);
    hms_tls_ctx_destroy (&ctx);
    hms_tls_ctx_destroy (&ctx);
    assert_null (ctx);
}

/* Sessions keep their context alive. */
static void test_ctx_outlived (void **state)
{
    (void) state;
    s_end_t server = {s_pki, s_pki, "relay", "h2", false};
    s_end_t client = {s_pki, s_pki, "ingress", "h2", false};
    s_pair_t p;
    memset (&p, 0, sizeof p);
    s_socketpair (p.fd, 0);
    p.sctx = s_ctx (true, &server, true);
    p.cctx = s_ctx (false, &client, false);
    p.srv = hms_tls_new (p.sctx, p.fd[0], NULL);
    p.cli = hms_tls_new (p.cctx, p.fd[1], "relay");
    hms_tls_ctx_destroy (&p.sctx);
    hms_tls_ctx_destroy (&p.cctx);
    s_handshake (&p);
    assert_int_equal (p.src, 0);
    assert_int_equal (p.crc, 0);
    assert_string_equal (hms_tls_peer_name (p.srv), "ingress");
    s_pair_close (&p);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_pki_files),     cmocka_unit_test (test_pki_idempotent),
        cmocka_unit_test (test_pki_errors),    cmocka_unit_test (test_pki_external_verify),
        cmocka_unit_test (test_handshake_ok),  cmocka_unit_test (test_no_client_cert),
        cmocka_unit_test (test_other_ca),      cmocka_unit_test (test_wrong_name),
        cmocka_unit_test (test_alpn_mismatch), cmocka_unit_test (test_alpn_optional),
        cmocka_unit_test (test_round_trip),    cmocka_unit_test (test_round_trip_batched),
        cmocka_unit_test (test_truncation),    cmocka_unit_test (test_ctx_errors),
        cmocka_unit_test (test_ctx_outlived),
    };
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
