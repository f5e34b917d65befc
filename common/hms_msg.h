/* hms_msg: the control-plane message envelope of DESIGN.md,
 *   {"hermes":1, "type":T, "v":N, "id":ID, "ts":MS, "src":SRC, "body":{...}}
 * encoded as JSON and checked against schemas/msg/envelope.v1 and schemas/msg/T.vN. */
#ifndef HMS_MSG_H_INCLUDED
#define HMS_MSG_H_INCLUDED

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes of "error" replies. */
#define HMS_ERR_BAD_JSON     "bad_json"
#define HMS_ERR_BAD_ENVELOPE "bad_envelope"
#define HMS_ERR_UNKNOWN_TYPE "unknown_type"
#define HMS_ERR_BAD_BODY     "bad_body"
#define HMS_ERR_TOO_LARGE    "too_large"
#define HMS_ERR_FORBIDDEN    "forbidden"
#define HMS_ERR_NOT_FOUND    "not_found"
#define HMS_ERR_CONFLICT     "conflict"
#define HMS_ERR_INVALID      "invalid"
#define HMS_ERR_INTERNAL     "internal"
#define HMS_ERR_UNREGISTERED "not_registered"

/* A new envelope; takes ownership of body (NULL means {}). Caller owns return value. */
json_t *hms_msg_new (const char *type, int v, const char *src, json_t *body);
/* A reply to request: same id, the given type; takes ownership of body. */
json_t *hms_msg_reply (const json_t *request, const char *type, const char *src, json_t *body);
/* An "error" reply {code, message, re} to request (which may be NULL when unreadable). */
json_t *hms_msg_error (const json_t *request, const char *src, const char *code, const char *fmt,
                       ...) __attribute__ ((format (printf, 4, 5)));

/* Compact JSON text. Caller owns return value. */
char *hms_msg_encode (const json_t *env);

/* Parses and validates one envelope and its body. Returns a new reference, or NULL with
 * code (one of HMS_ERR_*) and err saying what and where. */
json_t *hms_msg_decode (const char *data, size_t len, const char **code, char *err, size_t errlen);
/* Validates an envelope already parsed. 0, or -1 with code and err. */
int hms_msg_validate (const json_t *env, const char **code, char *err, size_t errlen);

const char *hms_msg_type (const json_t *env);
int hms_msg_v (const json_t *env);
const char *hms_msg_id (const json_t *env);
/* Borrowed reference to the body. */
json_t *hms_msg_body (const json_t *env);

#endif
