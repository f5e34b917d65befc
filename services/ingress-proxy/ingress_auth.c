/* ingress_auth: proxy users (Proxy-Authorization: Basic) when a users file is configured:
 * a strict JSON object {"user": "sha256 hex of the password", ...}. The user's name then
 * travels with every flow (policy "user", relay header hermes-user). */
#include "hms_alloc.h"
#include "hms_h1.h"
#include "ingress_int.h"

#include <gnutls/crypto.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

int ingress_auth_load (ingress_t *self, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_load_file (path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf (err, errlen, "users file %s: line %d: %s", path, jerr.line, jerr.text);
        return -1;
    }
    const char *user;
    json_t *hash;
    json_object_foreach (doc, user, hash)
    {
        const char *hex = json_string_value (hash);
        size_t n = hex ? strlen (hex) : 0;
        bool ok = n == 64 && strspn (hex, "0123456789abcdef") == 64 && *user &&
                  strlen (user) < 128 && !strchr (user, ':');
        if (!ok) {
            snprintf (err, errlen,
                      "users file %s: user '%s' needs a lower-case sha256 hex of the password "
                      "(and a name without ':')",
                      path, user);
            json_decref (doc);
            return -1;
        }
    }
    self->users = doc;
    return 0;
}

int ingress_auth_check (const ingress_t *self, const char *value, size_t len, char *user,
                        size_t ulen)
{
    user[0] = 0;
    if (!self->users)
        return 0;
    char name[128], pass[256];
    if (!value || hms_h1_basic_auth (value, len, name, sizeof name, pass, sizeof pass))
        return -1;
    const char *want = json_string_value (json_object_get (self->users, name));
    unsigned char digest[32];
    char hex[65];
    int rc = gnutls_hash_fast (GNUTLS_DIG_SHA256, pass, strlen (pass), digest);
    memset (pass, 0, sizeof pass);
    if (!want || rc != 0)
        return -1;
    for (int i = 0; i < 32; i++)
        snprintf (hex + 2 * i, 3, "%02x", digest[i]);
    unsigned diff = 0; /* compare every byte, whatever differs */
    for (int i = 0; i < 64; i++)
        diff |= (unsigned) (hex[i] ^ want[i]);
    if (diff)
        return -1;
    snprintf (user, ulen, "%s", name);
    return 0;
}
