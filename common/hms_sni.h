/* hms_sni: reads the server name (SNI, RFC 6066) from the first bytes a TLS client sends,
 * its ClientHello, so that a proxy can decide a tunnel by the name the client asks for
 * without terminating its TLS. The ClientHello may span several records and arrive in
 * pieces: the caller feeds everything received so far. */
#ifndef HMS_SNI_H_INCLUDED
#define HMS_SNI_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

/* How many bytes the caller needs to keep at most: a ClientHello longer than this is read
 * as one without a server name. */
#define HMS_SNI_MAX_BYTES 16384

typedef enum {
    HMS_SNI_FOUND,   /* name holds the server name, lower case */
    HMS_SNI_MORE,    /* a ClientHello so far: more bytes are needed */
    HMS_SNI_NONE,    /* a ClientHello without a server name (why says so) */
    HMS_SNI_NOT_TLS, /* not a TLS ClientHello, or a malformed one (why says what) */
} hms_sni_result_t;

/* Parses the len bytes a client sent first. name gets at most namelen - 1 characters (a
 * longer name is malformed); why is set unless FOUND or MORE. */
hms_sni_result_t hms_sni_parse (const uint8_t *data, size_t len, char *name, size_t namelen,
                                char *why, size_t whylen);

#endif
