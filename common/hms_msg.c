/* hms_msg: envelope construction, encoding, decoding and validation. */
#include "hms_msg.h"
#include "hms_alloc.h"
#include "hms_schema.h"
#include "hms_time.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_uint_fast64_t s_seq;

json_t *hms_msg_new (const char *type, int v, const char *src, json_t *body)
{
    char id[48];
    snprintf (id, sizeof id, "%x-%" PRIx64 "-%" PRIx64, (unsigned) getpid (),
              (uint64_t) hms_wall_ms (), (uint64_t) atomic_fetch_add (&s_seq, 1));
    return json_pack ("{s:i, s:s, s:i, s:s, s:I, s:s, s:o}", "hermes", 1, "type", type, "v", v,
                      "id", id, "ts", (json_int_t) hms_wall_ms (), "src", src ? src : "?", "body",
                      body ? body : json_object ());
}

json_t *hms_msg_reply (const json_t *request, const char *type, const char *src, json_t *body)
{
    json_t *env = hms_msg_new (type, 1, src, body);
    const char *id = request ? hms_msg_id (request) : NULL;
    if (id)
        json_object_set_new (env, "id", json_string (id));
    return env;
}

json_t *hms_msg_error (const json_t *request, const char *src, const char *code, const char *fmt,
                       ...)
{
    char text[1024];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (text, sizeof text, fmt, ap);
    va_end (ap);
    const char *re = request ? hms_msg_type (request) : NULL;
    json_t *body = json_pack ("{s:s, s:s}", "code", code, "message", text);
    if (re)
        json_object_set_new (body, "re", json_string (re));
    return hms_msg_reply (request, "error", src, body);
}

char *hms_msg_encode (const json_t *env)
{
    char *text = json_dumps (env, JSON_COMPACT);
    if (!text)
        text = hms_strdup ("{}");
    return text;
}

int hms_msg_validate (const json_t *env, const char **code, char *err, size_t errlen)
{
    char why[768];
    if (hms_schemas_validate ("msg/envelope.v1", env, why, sizeof why)) {
        *code = HMS_ERR_BAD_ENVELOPE;
        bool root = strncmp (why, "(root): ", 8) == 0;
        snprintf (err, errlen, "bad envelope: %s", root ? why + 8 : why);
        return -1;
    }
    char name[160];
    snprintf (name, sizeof name, "msg/%s.v%d", hms_msg_type (env), hms_msg_v (env));
    if (strcmp (name, "msg/envelope.v1") == 0 || !hms_schemas_get (name)) {
        *code = HMS_ERR_UNKNOWN_TYPE;
        snprintf (err, errlen, "unknown message type '%s' version %d", hms_msg_type (env),
                  hms_msg_v (env));
        return -1;
    }
    if (hms_schemas_validate (name, hms_msg_body (env), why, sizeof why)) {
        *code = HMS_ERR_BAD_BODY;
        bool root = strncmp (why, "(root)", 6) == 0;
        snprintf (err, errlen, "bad %s v%d message: body%s%s", hms_msg_type (env), hms_msg_v (env),
                  root ? "" : ".", root ? why + 6 : why);
        return -1;
    }
    return 0;
}

json_t *hms_msg_decode (const char *data, size_t len, const char **code, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *env = json_loadb (data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!env) {
        *code = HMS_ERR_BAD_JSON;
        snprintf (err, errlen, "message is not JSON: %s at byte %d", jerr.text, jerr.position);
        return NULL;
    }
    if (hms_msg_validate (env, code, err, errlen)) {
        json_decref (env);
        return NULL;
    }
    return env;
}

const char *hms_msg_type (const json_t *env)
{
    return json_string_value (json_object_get (env, "type"));
}

int hms_msg_v (const json_t *env)
{
    return (int) json_integer_value (json_object_get (env, "v"));
}

const char *hms_msg_id (const json_t *env)
{
    return json_string_value (json_object_get (env, "id"));
}

json_t *hms_msg_body (const json_t *env)
{
    return json_object_get (env, "body");
}
