/* hms_keys: the CURVE key files of a Hermes installation, and the keyring of authorised
 * public keys that servers consult.
 *
 * Layout of a keys directory:
 *   NAME.cert / NAME.cert_secret   one keypair per identity (controller, each daemon
 *                                  kind, admin), czmq zcert format, metadata name + role
 *   authorized/NAME.cert           the public certs that servers accept
 */
#ifndef HMS_KEYS_H_INCLUDED
#define HMS_KEYS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

/* The identities hms_keys_generate creates; NULL-terminated. */
extern const char *const hms_keys_identities[];

/* Creates every missing keypair and authorised public cert under dir (mode 0700 for
 * secrets). Existing keys are kept. Returns 0, or -1 with err. */
int hms_keys_generate (const char *dir, char *err, size_t errlen);

/* Loads dir/NAME.cert_secret. Caller owns return value; NULL with err. */
zcert_t *hms_keys_load_secret (const char *dir, const char *name, char *err, size_t errlen);
/* The Z85 public key of dir/NAME.cert into out[41]; -1 with err. */
int hms_keys_load_public (const char *dir, const char *name, char out[41], char *err,
                          size_t errlen);

/* Authorised public keys, loaded from dir/authorized/. */
typedef struct hms_keyring hms_keyring_t;
/* Caller owns return value; NULL with err when the folder cannot be read. */
hms_keyring_t *hms_keyring_new (const char *dir, char *err, size_t errlen);
void hms_keyring_destroy (hms_keyring_t **self_p);
/* Looks up a Z85 public key; fills name and role ("admin", "service", "controller") and
 * returns true when authorised. Re-reads the folder when it changed since the last load. */
bool hms_keyring_lookup (hms_keyring_t *self, const char *key_txt, const char **name,
                         const char **role);

#endif
