/* hms_auth: the process's ZeroMQ authentication handler (ZAP, RFC 27). Every CURVE server
 * socket of the process asks it; it admits the public keys of the keyring and logs every
 * refusal (rate-limited per key). The accepted peer's "role:name" becomes the User-Id
 * property of each message it sends. */
#ifndef HMS_AUTH_H_INCLUDED
#define HMS_AUTH_H_INCLUDED

#include <czmq.h>

typedef struct hms_auth hms_auth_t;

/* Starts the handler over the keys in keys_dir/authorized. Must exist before any server
 * socket binds. Caller owns return value; NULL with err. */
hms_auth_t *hms_auth_new (const char *keys_dir, char *err, size_t errlen);
void hms_auth_destroy (hms_auth_t **self_p);
/* How many handshakes were refused so far. */
uint64_t hms_auth_refused (hms_auth_t *self);

/* Splits a frame's User-Id ("role:name") into role and name; both empty when absent. */
void hms_auth_peer (zframe_t *frame, char *role, size_t rlen, char *name, size_t nlen);

#endif
