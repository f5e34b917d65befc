/* ctl_client: one request/reply exchange with the controller over CURVE. */
#ifndef CTL_CLIENT_H_INCLUDED
#define CTL_CLIENT_H_INCLUDED

#include <jansson.h>

/* Sends a message of type with body (ownership taken) and waits up to timeout_ms.
 * Returns the reply envelope (caller owns), or NULL with err; *unreachable is set when
 * the controller did not answer (as opposed to a local error such as missing keys). */
json_t *ctl_client_request (const char *endpoint, const char *keys_dir, const char *type,
                            json_t *body, int timeout_ms, int *unreachable, char *err,
                            size_t errlen);

#endif
