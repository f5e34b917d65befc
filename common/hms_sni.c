/* hms_sni: the server name of a TLS ClientHello (RFC 8446 4.1.2 and RFC 5246 7.4.1.2 for
 * the layout, RFC 6066 3 for the server_name extension), read without a TLS library. */
#include "hms_sni.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum {
    S_RECORD_HANDSHAKE = 22,
    S_CLIENT_HELLO = 1,
    S_EXT_SERVER_NAME = 0,
    S_NAME_HOST = 0,
    S_RECORD_MAX = 16384 + 2048, /* a record's payload, at most (RFC 8446 5.2) */
};

/* A cursor over the ClientHello's body; short says the bytes ran out before its end. */
typedef struct {
    const uint8_t *p;
    size_t left;
    bool short_;
} s_cur_t;

static bool s_take (s_cur_t *c, size_t n, const uint8_t **out)
{
    if (c->left < n) {
        c->short_ = true;
        return false;
    }
    if (out)
        *out = c->p;
    c->p += n;
    c->left -= n;
    return true;
}

static bool s_num (s_cur_t *c, size_t bytes, size_t *v)
{
    const uint8_t *p;
    if (!s_take (c, bytes, &p))
        return false;
    *v = 0;
    for (size_t i = 0; i < bytes; i++)
        *v = (*v << 8) | p[i];
    return true;
}

/* A vector with a length prefix of lbytes: its body in sub. */
static bool s_vec (s_cur_t *c, size_t lbytes, s_cur_t *sub)
{
    size_t n;
    const uint8_t *p;
    if (!s_num (c, lbytes, &n) || !s_take (c, n, &p))
        return false;
    *sub = (s_cur_t){p, n, false};
    return true;
}

static hms_sni_result_t s_fail (hms_sni_result_t r, char *why, size_t whylen, const char *text)
{
    snprintf (why, whylen, "%s", text);
    return r;
}

/* The server_name extension's body. */
static hms_sni_result_t s_server_name (s_cur_t ext, char *name, size_t namelen, char *why,
                                       size_t whylen)
{
    s_cur_t list, host;
    if (!s_vec (&ext, 2, &list))
        return s_fail (HMS_SNI_NOT_TLS, why, whylen, "malformed server_name extension");
    while (list.left) {
        size_t type;
        if (!s_num (&list, 1, &type) || !s_vec (&list, 2, &host))
            return s_fail (HMS_SNI_NOT_TLS, why, whylen, "malformed server_name list");
        if (type != S_NAME_HOST)
            continue;
        if (host.left == 0 || host.left >= namelen || host.left > 255)
            return s_fail (HMS_SNI_NOT_TLS, why, whylen, "server name empty or too long");
        for (size_t i = 0; i < host.left; i++) {
            unsigned char ch = host.p[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
            if (!ok)
                return s_fail (HMS_SNI_NOT_TLS, why, whylen,
                               "server name with a character a host name cannot have");
            name[i] = (char) (ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        name[host.left] = 0;
        return HMS_SNI_FOUND;
    }
    return s_fail (HMS_SNI_NONE, why, whylen, "server_name extension without a host name");
}

/* The ClientHello's body, of which c holds what arrived; whole says it all did. */
static hms_sni_result_t s_hello (s_cur_t c, bool whole, char *name, size_t namelen, char *why,
                                 size_t whylen)
{
    s_cur_t skip, exts, ext;
    size_t type;
    /* legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods */
    if (!s_take (&c, 2 + 32, NULL) || !s_vec (&c, 1, &skip) || !s_vec (&c, 2, &skip) ||
        !s_vec (&c, 1, &skip))
        goto cut;
    if (c.left == 0 && whole)
        return s_fail (HMS_SNI_NONE, why, whylen, "ClientHello without extensions");
    if (!s_vec (&c, 2, &exts))
        goto cut;
    while (exts.left) {
        if (!s_num (&exts, 2, &type) || !s_vec (&exts, 2, &ext))
            return s_fail (HMS_SNI_NOT_TLS, why, whylen, "malformed ClientHello extensions");
        if (type == S_EXT_SERVER_NAME)
            return s_server_name (ext, name, namelen, why, whylen);
    }
    return s_fail (HMS_SNI_NONE, why, whylen, "ClientHello without a server name");
cut:
    if (!whole)
        return HMS_SNI_MORE;
    return s_fail (HMS_SNI_NOT_TLS, why, whylen, "malformed ClientHello");
}

hms_sni_result_t hms_sni_parse (const uint8_t *data, size_t len, char *name, size_t namelen,
                                char *why, size_t whylen)
{
    /* the handshake bytes of the records so far (a record's piece too) */
    static _Thread_local uint8_t hs[HMS_SNI_MAX_BYTES];
    size_t hslen = 0, off = 0;
    bool last_cut = false;
    if (namelen == 0)
        return s_fail (HMS_SNI_NOT_TLS, why, whylen, "no room for a name");
    while (off < len && hslen < sizeof hs) {
        if (data[off] != S_RECORD_HANDSHAKE)
            return s_fail (HMS_SNI_NOT_TLS, why, whylen,
                           off == 0 ? "not a TLS handshake"
                                    : "the ClientHello is cut by another kind of record");
        if (len - off < 5)
            return HMS_SNI_MORE;
        size_t rlen = (size_t) data[off + 3] << 8 | data[off + 4];
        if (data[off + 1] != 3 || rlen == 0 || rlen > S_RECORD_MAX)
            return s_fail (HMS_SNI_NOT_TLS, why, whylen, "not a TLS record header");
        size_t have = len - off - 5 < rlen ? len - off - 5 : rlen;
        last_cut = have < rlen;
        if (have > sizeof hs - hslen)
            have = sizeof hs - hslen;
        memcpy (hs + hslen, data + off + 5, have);
        hslen += have;
        off += 5 + have;
        if (hslen >= 4) { /* the handshake header: is the whole message here? */
            if (hs[0] != S_CLIENT_HELLO)
                return s_fail (HMS_SNI_NOT_TLS, why, whylen,
                               "first handshake is not a ClientHello");
            size_t mlen = (size_t) hs[1] << 16 | (size_t) hs[2] << 8 | hs[3];
            if (hslen - 4 >= mlen)
                return s_hello ((s_cur_t){hs + 4, mlen, false}, true, name, namelen, why, whylen);
        }
        if (last_cut)
            break;
    }
    if (hslen >= 4) {
        size_t mlen = (size_t) hs[1] << 16 | (size_t) hs[2] << 8 | hs[3];
        hms_sni_result_t r =
            s_hello ((s_cur_t){hs + 4, hslen - 4, false}, false, name, namelen, why, whylen);
        if (r == HMS_SNI_MORE && (hslen >= sizeof hs || mlen + 4 > sizeof hs))
            return s_fail (HMS_SNI_NONE, why, whylen, "ClientHello over 16384 bytes: not read");
        return r;
    }
    return HMS_SNI_MORE;
}
