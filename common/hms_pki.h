/* hms_pki: the private certificate authority of a Hermes installation (TLS between proxies).
 *
 * Layout of a PKI directory (mode 0700):
 *   ca.crt  ca.key       the Hermes CA: ECDSA P-256, CA:TRUE pathlen 0, keyCertSign, 10 years,
 *                        subject "CN=Hermes CA <key id>,O=Hermes"
 *   NAME.crt  NAME.key   one identity per NAME: ECDSA P-256 signed by the CA, CN=NAME,
 *                        SANs DNS NAME, DNS localhost, IP 127.0.0.1, IP ::1 and the extra
 *                        SANs, EKU serverAuth + clientAuth, 2 years, random 16-byte serial
 * Keys are PKCS#8 PEM, mode 0600; certificates PEM, mode 0644.
 *
 * Nothing that exists is ever overwritten. To reissue NAME.crt (new SANs, renewal) delete it
 * and run again: the existing NAME.key is kept and certified again. ca.key is only read when
 * a certificate must be issued, so a host holding ca.crt, NAME.crt and NAME.key (and no CA
 * key) can call hms_pki_generate at start-up to check its files.
 */
#ifndef HMS_PKI_H_INCLUDED
#define HMS_PKI_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

/* Creates dir (and parents) and every missing file of the layout above for the
 * NULL-terminated list names ([A-Za-z0-9_.-], 1..64 characters, not starting
 * with '.' or '-', not "ca"). extra_sans is
 * NULL or a NULL-terminated list of IP addresses and DNS names added to every certificate
 * issued by this call. Existing certificates are checked (key matches, signed by ca.crt, not
 * expired). Returns 0, or -1 with a message in err that names the file and what to do. */
int hms_pki_generate (const char *dir, const char *const *names, const char *const *extra_sans,
                      char *err, size_t errlen);

/* A TLS context for identity `name` of the PKI in dir (dir/ca.crt, dir/NAME.crt,
 * dir/NAME.key), speaking the ALPN protocols alpn (NULL: "h2"; see hms_tls.h), which a
 * server's clients may leave out when alpn_optional. Caller owns return value; NULL with
 * err. */
struct hms_tls_ctx;
struct hms_tls_ctx *hms_pki_tls_ctx (const char *dir, const char *name, bool server,
                                     bool require_peer_cert, bool tls13_only, const char *alpn,
                                     bool alpn_optional, char *err, size_t errlen);

#endif
