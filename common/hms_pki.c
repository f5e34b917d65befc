/* hms_pki: creates and checks the Hermes CA and the per-identity certificates with the GnuTLS
 * x509 API. */
#include "hms_pki.h"
#include "hms_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HMS_PKI_NAME_MAX  64
#define HMS_PKI_SANS_MAX  64
#define HMS_PKI_DAY       (24 * 60 * 60)
#define HMS_PKI_CA_DAYS   (10 * 365 + 3)
#define HMS_PKI_LEAF_DAYS (2 * 365 + 1)
/* Certificates start one hour in the past so that peers with a slow clock accept them. */
#define HMS_PKI_BACKDATE (60 * 60)

typedef struct {
    gnutls_x509_subject_alt_name_t type;
    unsigned char data[256];
    unsigned int size;
} s_san_t;

typedef struct {
    const char *dir;
    const s_san_t *sans;
    size_t nsans;
    gnutls_x509_crt_t ca_crt;     /* loaded or created on first use */
    gnutls_x509_privkey_t ca_key; /* loaded or created only when something must be signed */
    char *err;
    size_t errlen;
} s_pki_t;

static bool s_valid_name (const char *name)
{
    size_t n = strlen (name);
    if (n == 0 || n > HMS_PKI_NAME_MAX || strcmp (name, "ca") == 0 || name[0] == '.' ||
        name[0] == '-')
        return false;
    return strspn (name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* A DNS name as it may appear in a SAN: labels of letters, digits, '-' and '_', an optional
 * leading "*." wildcard. */
static bool s_valid_dns (const char *name)
{
    if (strncmp (name, "*.", 2) == 0)
        name += 2;
    size_t n = strlen (name);
    if (n == 0 || n > 253 || name[0] == '.' || name[n - 1] == '.' || strstr (name, ".."))
        return false;
    return strspn (name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static int s_san_parse (const char *text, s_san_t *san)
{
    if (inet_pton (AF_INET, text, san->data) == 1) {
        san->type = GNUTLS_SAN_IPADDRESS;
        san->size = 4;
        return 0;
    }
    if (inet_pton (AF_INET6, text, san->data) == 1) {
        san->type = GNUTLS_SAN_IPADDRESS;
        san->size = 16;
        return 0;
    }
    if (!s_valid_dns (text))
        return -1;
    san->type = GNUTLS_SAN_DNSNAME;
    san->size = (unsigned int) strlen (text);
    memcpy (san->data, text, san->size);
    return 0;
}

/* Appends san unless an equal one is already in the list. */
static void s_san_add (s_san_t *list, size_t *n, const s_san_t *san)
{
    for (size_t i = 0; i < *n; i++)
        if (list[i].type == san->type && list[i].size == san->size &&
            memcmp (list[i].data, san->data, san->size) == 0)
            return;
    list[(*n)++] = *san;
}

/* mkdir -p; the last component gets mode 0700, and is tightened to 0700 if it exists. */
static int s_mkdirs (const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (snprintf (path, sizeof path, "%s", dir) >= (int) sizeof path) {
        snprintf (err, errlen, "pki: directory name too long: %s", dir);
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir (path, 0755) != 0 && errno != EEXIST) {
            snprintf (err, errlen, "pki: cannot create directory %s: %s (check its parent)", path,
                      strerror (errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir (path, 0700) != 0 && errno != EEXIST) {
        snprintf (err, errlen, "pki: cannot create directory %s: %s (check its parent)", path,
                  strerror (errno));
        return -1;
    }
    struct stat st;
    if (stat (path, &st) != 0 || !S_ISDIR (st.st_mode)) {
        snprintf (err, errlen, "pki: %s is not a directory (remove it or choose another)", path);
        return -1;
    }
    if ((st.st_mode & 07777) != 0700 && chmod (path, 0700) != 0) {
        snprintf (err, errlen, "pki: cannot set mode 0700 on %s: %s (fix its owner)", path,
                  strerror (errno));
        return -1;
    }
    return 0;
}

/* 1 when path exists, 0 when it does not, -1 with err when it cannot be checked. */
static int s_exists (const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat (path, &st) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    snprintf (err, errlen, "pki: cannot check %s: %s (fix permissions)", path, strerror (errno));
    return -1;
}

/* Writes a new file, never replacing one; removes what it wrote on failure. */
static int s_write_new (const char *path, const gnutls_datum_t *data, mode_t mode, char *err,
                        size_t errlen)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf (err, errlen, "pki: cannot create %s: %s (check the directory)", path,
                  strerror (errno));
        return -1;
    }
    size_t off = 0;
    int rc = fchmod (fd, mode);
    while (rc == 0 && off < data->size) {
        ssize_t n = write (fd, data->data + off, data->size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = -1;
        else
            off += (size_t) n;
    }
    if (rc == 0)
        rc = fsync (fd);
    if (close (fd) != 0)
        rc = -1;
    if (rc != 0) {
        snprintf (err, errlen, "pki: cannot write %s: %s (free space or fix permissions)", path,
                  strerror (errno));
        unlink (path);
        return -1;
    }
    return 0;
}

static int s_load_crt (const char *path, gnutls_x509_crt_t *crt, char *err, size_t errlen)
{
    gnutls_datum_t data = {NULL, 0};
    int rc = gnutls_load_file (path, &data);
    if (rc < 0) {
        snprintf (err, errlen, "pki: cannot read %s: %s (fix permissions)", path,
                  gnutls_strerror (rc));
        return -1;
    }
    gnutls_x509_crt_init (crt);
    rc = gnutls_x509_crt_import (*crt, &data, GNUTLS_X509_FMT_PEM);
    gnutls_free (data.data);
    if (rc < 0) {
        snprintf (err, errlen,
                  "pki: %s is not a PEM certificate: %s (remove it and run again to reissue)", path,
                  gnutls_strerror (rc));
        gnutls_x509_crt_deinit (*crt);
        *crt = NULL;
        return -1;
    }
    return 0;
}

static int s_load_key (const char *path, gnutls_x509_privkey_t *key, char *err, size_t errlen)
{
    gnutls_datum_t data = {NULL, 0};
    int rc = gnutls_load_file (path, &data);
    if (rc < 0) {
        snprintf (err, errlen, "pki: cannot read %s: %s (fix permissions)", path,
                  gnutls_strerror (rc));
        return -1;
    }
    gnutls_x509_privkey_init (key);
    rc = gnutls_x509_privkey_import2 (*key, &data, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_free (data.data);
    if (rc < 0) {
        snprintf (err, errlen, "pki: %s is not an unencrypted PEM private key: %s", path,
                  gnutls_strerror (rc));
        gnutls_x509_privkey_deinit (*key);
        *key = NULL;
        return -1;
    }
    return 0;
}

static int s_new_key (gnutls_x509_privkey_t *key, char *err, size_t errlen)
{
    gnutls_x509_privkey_init (key);
    int rc = gnutls_x509_privkey_generate (*key, GNUTLS_PK_ECDSA,
                                           GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1), 0);
    if (rc < 0) {
        snprintf (err, errlen, "pki: cannot generate an ECDSA P-256 key: %s", gnutls_strerror (rc));
        gnutls_x509_privkey_deinit (*key);
        *key = NULL;
        return -1;
    }
    return 0;
}

static int s_write_key (const char *path, gnutls_x509_privkey_t key, char *err, size_t errlen)
{
    gnutls_datum_t out = {NULL, 0};
    int rc =
        gnutls_x509_privkey_export2_pkcs8 (key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &out);
    if (rc < 0) {
        snprintf (err, errlen, "pki: cannot encode key for %s: %s", path, gnutls_strerror (rc));
        return -1;
    }
    rc = s_write_new (path, &out, 0600, err, errlen);
    gnutls_free (out.data);
    return rc;
}

static int s_write_crt (const char *path, gnutls_x509_crt_t crt, char *err, size_t errlen)
{
    gnutls_datum_t out = {NULL, 0};
    int rc = gnutls_x509_crt_export2 (crt, GNUTLS_X509_FMT_PEM, &out);
    if (rc < 0) {
        snprintf (err, errlen, "pki: cannot encode certificate for %s: %s", path,
                  gnutls_strerror (rc));
        return -1;
    }
    rc = s_write_new (path, &out, 0644, err, errlen);
    gnutls_free (out.data);
    return rc;
}

/* Checks that crt certifies key. */
static int s_check_match (gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const char *crt_path,
                          const char *key_path, char *err, size_t errlen)
{
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    if (gnutls_x509_crt_get_key_id (crt, 0, a, &alen) < 0 ||
        gnutls_x509_privkey_get_key_id (key, 0, b, &blen) < 0 || alen != blen ||
        memcmp (a, b, alen) != 0) {
        snprintf (err, errlen,
                  "pki: %s does not belong to %s (restore the matching pair, or remove %s to "
                  "certify the key again)",
                  key_path, crt_path, crt_path);
        return -1;
    }
    return 0;
}

/* Fills the fields shared by the CA and the leaves. */
static int s_crt_base (gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, int days)
{
    unsigned char serial[16];
    if (gnutls_rnd (GNUTLS_RND_NONCE, serial, sizeof serial) < 0)
        return -1;
    serial[0] = (unsigned char) ((serial[0] & 0x7f) | 0x40); /* positive, full 16 bytes */
    time_t now = time (NULL);
    unsigned char id[64];
    size_t idlen = sizeof id;
    if (gnutls_x509_crt_set_version (crt, 3) < 0 ||
        gnutls_x509_crt_set_serial (crt, serial, sizeof serial) < 0 ||
        gnutls_x509_crt_set_activation_time (crt, now - HMS_PKI_BACKDATE) < 0 ||
        gnutls_x509_crt_set_expiration_time (crt, now + (time_t) days * HMS_PKI_DAY) < 0 ||
        gnutls_x509_crt_set_key (crt, key) < 0 ||
        gnutls_x509_crt_get_key_id (crt, 0, id, &idlen) < 0 ||
        gnutls_x509_crt_set_subject_key_id (crt, id, idlen) < 0)
        return -1;
    return 0;
}

/* A self-signed CA certificate for key; its CN carries the key id, so a certificate made again
 * for the same key has the same subject and still verifies what the old one signed. */
static int s_make_ca (gnutls_x509_privkey_t key, gnutls_x509_crt_t *crt)
{
    gnutls_x509_crt_init (crt);
    unsigned char id[64];
    size_t idlen = sizeof id;
    if (gnutls_x509_privkey_get_key_id (key, 0, id, &idlen) < 0 || idlen < 4)
        return -1;
    char cn[64];
    snprintf (cn, sizeof cn, "Hermes CA %02x%02x%02x%02x", id[0], id[1], id[2], id[3]);
    if (s_crt_base (*crt, key, HMS_PKI_CA_DAYS) < 0 ||
        gnutls_x509_crt_set_dn_by_oid (*crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "Hermes", 6) <
            0 ||
        gnutls_x509_crt_set_dn_by_oid (*crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen (cn)) < 0 ||
        gnutls_x509_crt_set_basic_constraints (*crt, 1, 0) < 0 ||
        gnutls_x509_crt_set_key_usage (*crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN) < 0 ||
        gnutls_x509_crt_sign2 (*crt, *crt, key, GNUTLS_DIG_SHA256, 0) < 0)
        return -1;
    return 0;
}

static int s_make_leaf (s_pki_t *pki, const char *name, gnutls_x509_privkey_t key,
                        gnutls_x509_crt_t *crt)
{
    gnutls_x509_crt_init (crt);
    unsigned char caid[64];
    size_t caidlen = sizeof caid;
    if (s_crt_base (*crt, key, HMS_PKI_LEAF_DAYS) < 0 ||
        gnutls_x509_crt_set_dn_by_oid (*crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "Hermes", 6) <
            0 ||
        gnutls_x509_crt_set_dn_by_oid (*crt, GNUTLS_OID_X520_COMMON_NAME, 0, name, strlen (name)) <
            0 ||
        gnutls_x509_crt_set_basic_constraints (*crt, 0, -1) < 0 ||
        gnutls_x509_crt_set_key_usage (*crt, GNUTLS_KEY_DIGITAL_SIGNATURE) < 0 ||
        gnutls_x509_crt_set_key_purpose_oid (*crt, GNUTLS_KP_TLS_WWW_SERVER, 0) < 0 ||
        gnutls_x509_crt_set_key_purpose_oid (*crt, GNUTLS_KP_TLS_WWW_CLIENT, 0) < 0 ||
        gnutls_x509_crt_get_subject_key_id (pki->ca_crt, caid, &caidlen, NULL) < 0 ||
        gnutls_x509_crt_set_authority_key_id (*crt, caid, caidlen) < 0)
        return -1;

    s_san_t sans[HMS_PKI_SANS_MAX + 4];
    size_t n = 0;
    const char *fixed[] = {name, "localhost", "127.0.0.1", "::1"};
    for (size_t i = 0; i < 4; i++) {
        s_san_t san;
        if (s_san_parse (fixed[i], &san) == 0)
            s_san_add (sans, &n, &san);
    }
    for (size_t i = 0; i < pki->nsans; i++)
        s_san_add (sans, &n, &pki->sans[i]);
    for (size_t i = 0; i < n; i++)
        if (gnutls_x509_crt_set_subject_alt_name (*crt, sans[i].type, sans[i].data, sans[i].size,
                                                  GNUTLS_FSAN_APPEND) < 0)
            return -1;
    return gnutls_x509_crt_sign2 (*crt, pki->ca_crt, pki->ca_key, GNUTLS_DIG_SHA256, 0) < 0 ? -1
                                                                                            : 0;
}

/* Loads or creates ca.crt; loads or creates ca.key too when need_key. */
static int s_ca_prepare (s_pki_t *pki, bool need_key)
{
    if (pki->ca_crt && (pki->ca_key || !need_key))
        return 0;
    char crt_path[4200], key_path[4200];
    snprintf (crt_path, sizeof crt_path, "%s/ca.crt", pki->dir);
    snprintf (key_path, sizeof key_path, "%s/ca.key", pki->dir);
    int have_crt = s_exists (crt_path, pki->err, pki->errlen);
    int have_key = s_exists (key_path, pki->err, pki->errlen);
    if (have_crt < 0 || have_key < 0)
        return -1;

    if (have_crt && !pki->ca_crt && s_load_crt (crt_path, &pki->ca_crt, pki->err, pki->errlen) < 0)
        return -1;
    if (have_crt && !need_key)
        return 0;
    if (have_crt && !have_key) {
        snprintf (pki->err, pki->errlen,
                  "pki: %s is missing, so no certificate can be issued (restore it from a "
                  "backup, or copy the issued .crt/.key files here from the host that holds it)",
                  key_path);
        return -1;
    }
    if (have_key) {
        if (!pki->ca_key && s_load_key (key_path, &pki->ca_key, pki->err, pki->errlen) < 0)
            return -1;
    } else if (s_new_key (&pki->ca_key, pki->err, pki->errlen) < 0 ||
               s_write_key (key_path, pki->ca_key, pki->err, pki->errlen) < 0)
        return -1;

    if (have_crt)
        return s_check_match (pki->ca_crt, pki->ca_key, crt_path, key_path, pki->err, pki->errlen);
    if (s_make_ca (pki->ca_key, &pki->ca_crt) < 0) {
        snprintf (pki->err, pki->errlen, "pki: cannot create the CA certificate %s (GnuTLS)",
                  crt_path);
        return -1;
    }
    return s_write_crt (crt_path, pki->ca_crt, pki->err, pki->errlen);
}

/* Checks an existing certificate against the CA and the clock. */
static int s_check_leaf (s_pki_t *pki, gnutls_x509_crt_t crt, const char *crt_path)
{
    unsigned int status = 0;
    if (gnutls_x509_crt_verify (crt, &pki->ca_crt, 1, 0, &status) < 0)
        status = GNUTLS_CERT_INVALID;
    if (status == 0)
        return 0;
    char ca_path[4200];
    snprintf (ca_path, sizeof ca_path, "%s/ca.crt", pki->dir);
    const char *why = "does not verify against";
    if (status & GNUTLS_CERT_EXPIRED)
        why = "has expired; it was issued by";
    else if (status & GNUTLS_CERT_NOT_ACTIVATED)
        why = "is not valid yet (check the clock); it was issued by";
    else if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNATURE_FAILURE))
        why = "is not signed by";
    snprintf (pki->err, pki->errlen, "pki: %s %s %s (remove %s and run again to reissue it)",
              crt_path, why, ca_path, crt_path);
    return -1;
}

static int s_identity (s_pki_t *pki, const char *name)
{
    char crt_path[4200], key_path[4200];
    snprintf (crt_path, sizeof crt_path, "%s/%s.crt", pki->dir, name);
    snprintf (key_path, sizeof key_path, "%s/%s.key", pki->dir, name);
    int have_crt = s_exists (crt_path, pki->err, pki->errlen);
    int have_key = s_exists (key_path, pki->err, pki->errlen);
    if (have_crt < 0 || have_key < 0)
        return -1;
    if (have_crt && !have_key) {
        snprintf (pki->err, pki->errlen,
                  "pki: %s exists but its key %s is missing (restore the key, or remove %s to "
                  "issue a new pair)",
                  crt_path, key_path, crt_path);
        return -1;
    }
    if (s_ca_prepare (pki, !have_crt) < 0)
        return -1;

    int rc = -1;
    gnutls_x509_crt_t crt = NULL;
    gnutls_x509_privkey_t key = NULL;
    if (have_crt) {
        if (s_load_crt (crt_path, &crt, pki->err, pki->errlen) == 0 &&
            s_load_key (key_path, &key, pki->err, pki->errlen) == 0 &&
            s_check_match (crt, key, crt_path, key_path, pki->err, pki->errlen) == 0)
            rc = s_check_leaf (pki, crt, crt_path);
    } else {
        bool new_key = !have_key;
        if (have_key)
            rc = s_load_key (key_path, &key, pki->err, pki->errlen);
        else
            rc = s_new_key (&key, pki->err, pki->errlen);
        if (rc == 0 && s_make_leaf (pki, name, key, &crt) < 0) {
            snprintf (pki->err, pki->errlen, "pki: cannot sign the certificate %s (GnuTLS)",
                      crt_path);
            rc = -1;
        }
        if (rc == 0 && new_key)
            rc = s_write_key (key_path, key, pki->err, pki->errlen);
        if (rc == 0 && s_write_crt (crt_path, crt, pki->err, pki->errlen) < 0) {
            if (new_key)
                unlink (key_path);
            rc = -1;
        }
    }
    if (crt)
        gnutls_x509_crt_deinit (crt);
    if (key)
        gnutls_x509_privkey_deinit (key);
    return rc;
}

int hms_pki_generate (const char *dir, const char *const *names, const char *const *extra_sans,
                      char *err, size_t errlen)
{
    for (size_t i = 0; names && names[i]; i++)
        if (!s_valid_name (names[i])) {
            snprintf (err, errlen,
                      "pki: invalid identity name '%s' (use 1 to %d of A-Z a-z 0-9 _ . -, not "
                      "starting with '.' or '-', and not 'ca')",
                      names[i], HMS_PKI_NAME_MAX);
            return -1;
        }
    s_san_t sans[HMS_PKI_SANS_MAX];
    size_t nsans = 0;
    for (size_t i = 0; extra_sans && extra_sans[i]; i++) {
        s_san_t san;
        if (nsans == HMS_PKI_SANS_MAX) {
            snprintf (err, errlen, "pki: more than %d extra SANs (list fewer names)",
                      HMS_PKI_SANS_MAX);
            return -1;
        }
        if (s_san_parse (extra_sans[i], &san) < 0) {
            snprintf (err, errlen,
                      "pki: extra SAN '%s' is neither an IP address nor a DNS name (use letters, "
                      "digits, '-', '_' and '.')",
                      extra_sans[i]);
            return -1;
        }
        s_san_add (sans, &nsans, &san);
    }
    if (s_mkdirs (dir, err, errlen) < 0)
        return -1;

    s_pki_t pki = {dir, sans, nsans, NULL, NULL, err, errlen};
    int rc = s_ca_prepare (&pki, false); /* creates the CA when there is no ca.crt */
    for (size_t i = 0; rc == 0 && names && names[i]; i++)
        rc = s_identity (&pki, names[i]);
    if (pki.ca_crt)
        gnutls_x509_crt_deinit (pki.ca_crt);
    if (pki.ca_key)
        gnutls_x509_privkey_deinit (pki.ca_key);
    return rc;
}

hms_tls_ctx_t *hms_pki_tls_ctx (const char *dir, const char *name, bool server,
                                bool require_peer_cert, bool tls13_only, const char *alpn,
                                bool alpn_optional, char *err, size_t errlen)
{
    char ca[1024], cert[1024], key[1024];
    snprintf (ca, sizeof ca, "%s/ca.crt", dir);
    snprintf (cert, sizeof cert, "%s/%s.crt", dir, name);
    snprintf (key, sizeof key, "%s/%s.key", dir, name);
    hms_tls_opts_t opts = {.ca_file = ca,
                           .cert_file = cert,
                           .key_file = key,
                           .server = server,
                           .require_peer_cert = require_peer_cert,
                           .alpn = alpn ? alpn : "h2",
                           .alpn_optional = alpn_optional,
                           .tls13_only = tls13_only};
    return hms_tls_ctx_new (&opts, err, errlen);
}
