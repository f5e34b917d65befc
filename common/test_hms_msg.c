/* Unit test for hms_msg: envelope construction, encode/decode round trip, replies and error
 * replies, the error code of every kind of bad input, and the golden messages under
 * $HERMES_SOURCE_DIR/schemas/examples (valid) and schemas/examples/bad (refused with the code
 * their file name starts with). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_msg.h"
#include "hms_time.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

/* Decodes text, which must be refused with code; returns err for more checks. */
static const char *s_refused (const char *text, const char *code)
{
    static char err[1024];
    const char *got = NULL;
    err[0] = 0;
    json_t *env = hms_msg_decode (text, strlen (text), &got, err, sizeof err);
    if (env) {
        json_decref (env);
        fail_msg ("accepted: %s", text);
    }
    if (!got || strcmp (got, code) != 0)
        fail_msg ("%s: code %s, expected %s (%s)", text, got ? got : "(none)", code, err);
    assert_true (err[0] != 0);
    return err;
}

static void test_new_and_accessors (void **state)
{
    (void) state;
    int64_t before = hms_wall_ms ();
    json_t *env = hms_msg_new ("node.add", 1, "hermesctl",
                               json_pack ("{s:s, s:s}", "name", "relay-1", "site", "fra"));
    int64_t after = hms_wall_ms ();
    assert_non_null (env);
    assert_int_equal (json_integer_value (json_object_get (env, "hermes")), 1);
    assert_string_equal (hms_msg_type (env), "node.add");
    assert_int_equal (hms_msg_v (env), 1);
    assert_string_equal (json_string_value (json_object_get (env, "src")), "hermesctl");
    assert_non_null (hms_msg_id (env));
    assert_true (strlen (hms_msg_id (env)) > 0);
    json_int_t ts = json_integer_value (json_object_get (env, "ts"));
    assert_true (ts >= before && ts <= after);
    assert_string_equal (json_string_value (json_object_get (hms_msg_body (env), "name")),
                         "relay-1");
    assert_int_equal (json_object_size (env), 7);
    const char *code = NULL;
    char err[512];
    assert_int_equal (hms_msg_validate (env, &code, err, sizeof err), 0);

    /* ids are unique; NULL body is {}; NULL src still gives a valid envelope */
    json_t *other = hms_msg_new ("status", 1, NULL, NULL);
    assert_string_not_equal (hms_msg_id (env), hms_msg_id (other));
    assert_true (json_is_object (hms_msg_body (other)));
    assert_int_equal (json_object_size (hms_msg_body (other)), 0);
    assert_int_equal (hms_msg_validate (other, &code, err, sizeof err), 0);
    json_decref (other);
    json_decref (env);

    /* accessors on something that is not an envelope */
    json_t *empty = json_object ();
    assert_null (hms_msg_type (empty));
    assert_null (hms_msg_id (empty));
    assert_null (hms_msg_body (empty));
    assert_int_equal (hms_msg_v (empty), 0);
    json_decref (empty);
}

static void test_round_trip (void **state)
{
    (void) state;
    json_t *policy =
        json_pack ("{s:s, s:i, s:{s:[s], s:[s]}, s:s, s:{s:f, s:i, s:s}}", "id", "rate-api",
                   "priority", 300, "match", "host", "api.example.com", "path_prefix", "/v1/",
                   "action", "rate_limit", "rate", "per_second", 2.5, "burst", 10, "key", "user");
    json_t *env = hms_msg_new ("policy.add", 1, "hermesctl", json_pack ("{s:o}", "policy", policy));
    char *text = hms_msg_encode (env);
    assert_non_null (text);
    assert_null (strchr (text, '\n')); /* compact: one line */
    const char *code = NULL;
    char err[512] = "";
    json_t *back = hms_msg_decode (text, strlen (text), &code, err, sizeof err);
    if (!back)
        fail_msg ("%s: %s", code, err);
    assert_true (json_equal (env, back));
    assert_string_equal (hms_msg_id (back), hms_msg_id (env));

    /* len bounds the input: bytes after it are not read */
    size_t n = strlen (text);
    char *padded = malloc (n + 8);
    memcpy (padded, text, n);
    memcpy (padded + n, "garbage", 8);
    json_t *again = hms_msg_decode (padded, n, &code, err, sizeof err);
    assert_non_null (again);
    assert_true (json_equal (env, again));
    json_decref (again);
    /* and a cut-off message is not JSON */
    assert_null (hms_msg_decode (padded, n - 1, &code, err, sizeof err));
    assert_string_equal (code, HMS_ERR_BAD_JSON);
    free (padded);
    free (text);
    json_decref (back);
    json_decref (env);
}

static void test_replies (void **state)
{
    (void) state;
    json_t *req = hms_msg_new ("register", 1, "relay/relay-1",
                               json_pack ("{s:s, s:s}", "kind", "relay", "instance", "relay-1"));
    json_t *reply = hms_msg_reply (
        req, "register.ok", "controller/c1",
        json_pack ("{s:s, s:i, s:n}", "epoch", "e-1", "config_version", 0, "snapshot"));
    assert_string_equal (hms_msg_id (reply), hms_msg_id (req));
    assert_string_equal (hms_msg_type (reply), "register.ok");
    assert_int_equal (hms_msg_v (reply), 1);
    assert_string_equal (json_string_value (json_object_get (reply, "src")), "controller/c1");
    const char *code = NULL;
    char err[512];
    if (hms_msg_validate (reply, &code, err, sizeof err))
        fail_msg ("%s: %s", code, err);
    json_decref (reply);

    /* error reply: same id, code, formatted message, re = request type */
    json_t *e = hms_msg_error (req, "controller/c1", HMS_ERR_NOT_FOUND, "no node named '%s' (%d)",
                               "relay-9", 42);
    assert_string_equal (hms_msg_type (e), "error");
    assert_string_equal (hms_msg_id (e), hms_msg_id (req));
    json_t *body = hms_msg_body (e);
    assert_string_equal (json_string_value (json_object_get (body, "code")), "not_found");
    assert_string_equal (json_string_value (json_object_get (body, "message")),
                         "no node named 'relay-9' (42)");
    assert_string_equal (json_string_value (json_object_get (body, "re")), "register");
    if (hms_msg_validate (e, &code, err, sizeof err))
        fail_msg ("%s: %s", code, err);
    /* it survives the wire */
    char *text = hms_msg_encode (e);
    json_t *back = hms_msg_decode (text, strlen (text), &code, err, sizeof err);
    assert_non_null (back);
    assert_true (json_equal (back, e));
    json_decref (back);
    free (text);
    json_decref (e);

    /* an error to an unreadable request: a fresh id and no "re" */
    e = hms_msg_error (NULL, "controller/c1", HMS_ERR_BAD_JSON, "message is not JSON");
    assert_non_null (hms_msg_id (e));
    assert_string_not_equal (hms_msg_id (e), hms_msg_id (req));
    assert_null (json_object_get (hms_msg_body (e), "re"));
    assert_int_equal (hms_msg_validate (e, &code, err, sizeof err), 0);
    json_decref (e);

    /* a long message is cut, not overflowed */
    char big[3000];
    memset (big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    e = hms_msg_error (req, "c", HMS_ERR_INTERNAL, "%s", big);
    size_t len = strlen (json_string_value (json_object_get (hms_msg_body (e), "message")));
    assert_true (len > 0 && len < sizeof big - 1);
    json_decref (e);
    json_decref (req);
}

static void test_decode_errors (void **state)
{
    (void) state;
    const char *err;
    /* not JSON */
    err = s_refused ("", HMS_ERR_BAD_JSON);
    s_assert_contains (err, "not JSON");
    s_refused ("hello", HMS_ERR_BAD_JSON);
    s_refused ("{\"hermes\":1,", HMS_ERR_BAD_JSON);
    s_refused ("{\"a\":1,\"a\":2}", HMS_ERR_BAD_JSON); /* duplicate keys */

    /* envelope problems */
#define ENV(fields) "{\"hermes\":1,\"type\":\"status\",\"v\":1,\"id\":\"i1\",\"ts\":5," fields "}"
    assert_string_equal (ENV ("\"src\":\"a\",\"body\":{}"),
                         "{\"hermes\":1,\"type\":\"status\",\"v\":1,\"id\":\"i1\",\"ts\":5,"
                         "\"src\":\"a\",\"body\":{}}");
    {
        const char *code = NULL;
        char e[256];
        const char *ok = ENV ("\"src\":\"a\",\"body\":{}");
        json_t *env = hms_msg_decode (ok, strlen (ok), &code, e, sizeof e);
        assert_non_null (env); /* the base case is fine */
        json_decref (env);
    }
    err = s_refused (ENV ("\"body\":{}"), HMS_ERR_BAD_ENVELOPE);
    s_assert_contains (err, "src");
    err =
        s_refused ("{\"hermes\":1,\"type\":\"status\",\"v\":1,\"ts\":5,\"src\":\"a\",\"body\":{}}",
                   HMS_ERR_BAD_ENVELOPE);
    s_assert_contains (err, "missing required property 'id'");
    err =
        s_refused ("{\"hermes\":2,\"type\":\"status\",\"v\":1,\"id\":\"i\",\"ts\":5,\"src\":\"a\","
                   "\"body\":{}}",
                   HMS_ERR_BAD_ENVELOPE);
    s_assert_contains (err, "hermes");
    err = s_refused (ENV ("\"src\":\"a\",\"body\":{},\"reply_to\":\"x\""), HMS_ERR_BAD_ENVELOPE);
    s_assert_contains (err, "reply_to");
    err = s_refused (ENV ("\"src\":\"a\",\"body\":[]"), HMS_ERR_BAD_ENVELOPE);
    s_assert_contains (err, "body");
    s_refused (ENV ("\"src\":\"\",\"body\":{}"), HMS_ERR_BAD_ENVELOPE);
    s_refused ("[1,2,3]", HMS_ERR_BAD_ENVELOPE);
    s_refused ("{\"hermes\":1,\"type\":\"Status\",\"v\":1,\"id\":\"i\",\"ts\":5,\"src\":\"a\","
               "\"body\":{}}",
               HMS_ERR_BAD_ENVELOPE);
    s_refused ("{\"hermes\":1,\"type\":\"status\",\"v\":\"1\",\"id\":\"i\",\"ts\":5,\"src\":\"a\","
               "\"body\":{}}",
               HMS_ERR_BAD_ENVELOPE);
#undef ENV

    /* unknown type or version */
    err = s_refused ("{\"hermes\":1,\"type\":\"node.rename\",\"v\":1,\"id\":\"i\",\"ts\":5,\"src\":"
                     "\"a\",\"body\":{}}",
                     HMS_ERR_UNKNOWN_TYPE);
    s_assert_contains (err, "node.rename");
    err =
        s_refused ("{\"hermes\":1,\"type\":\"status\",\"v\":2,\"id\":\"i\",\"ts\":5,\"src\":\"a\","
                   "\"body\":{}}",
                   HMS_ERR_UNKNOWN_TYPE);
    s_assert_contains (err, "status");
    s_assert_contains (err, "version 2");
    /* "envelope" is the envelope's schema, not a message type, even with a body that is a
     * valid envelope */
    err = s_refused ("{\"hermes\":1,\"type\":\"envelope\",\"v\":1,\"id\":\"i\",\"ts\":5,"
                     "\"src\":\"a\",\"body\":{\"hermes\":1,\"type\":\"status\",\"v\":1,\"id\":"
                     "\"j\",\"ts\":5,\"src\":\"a\",\"body\":{}}}",
                     HMS_ERR_UNKNOWN_TYPE);
    s_assert_contains (err, "envelope");

    /* bad bodies name the field */
#define REG(body)                                                                                  \
    "{\"hermes\":1,\"type\":\"register\",\"v\":1,\"id\":\"i\",\"ts\":5,\"src\":\"relay/r1\","      \
    "\"body\":" body "}"
    err = s_refused (REG ("{\"instance\":\"r1\"}"), HMS_ERR_BAD_BODY);
    s_assert_contains (err, "register");
    s_assert_contains (err, "body");
    s_assert_contains (err, "'kind'");
    err = s_refused (REG ("{\"kind\":\"router\",\"instance\":\"r1\"}"), HMS_ERR_BAD_BODY);
    s_assert_contains (err, "body.kind");
    s_assert_contains (err, "router");
    err = s_refused (REG ("{\"kind\":\"relay\",\"instance\":\"r 1\"}"), HMS_ERR_BAD_BODY);
    s_assert_contains (err, "body.instance");
    err = s_refused (REG ("{\"kind\":\"relay\",\"instance\":\"r1\",\"pid\":-1}"), HMS_ERR_BAD_BODY);
    s_assert_contains (err, "body.pid");
    err =
        s_refused (REG ("{\"kind\":\"relay\",\"instance\":\"r1\",\"colour\":1}"), HMS_ERR_BAD_BODY);
    s_assert_contains (err, "colour");
#undef REG
    err = s_refused ("{\"hermes\":1,\"type\":\"link.add\",\"v\":1,\"id\":\"i\",\"ts\":5,\"src\":"
                     "\"a\",\"body\":{\"from\":\"a\",\"to\":\"b\",\"transport\":\"h4\"}}",
                     HMS_ERR_BAD_BODY);
    s_assert_contains (err, "body.transport");
}

/* Reads a whole file. Caller owns return value. */
static char *s_slurp (const char *path, size_t *size)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        fail_msg ("cannot open %s", path);
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    rewind (f);
    char *data = malloc ((size_t) n + 1);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) n, f), (size_t) n);
    data[n] = 0;
    fclose (f);
    *size = (size_t) n;
    return data;
}

/* Calls fn for every *.json in dir (sorted); returns how many. */
static size_t s_each_json (const char *dir, void (*fn) (const char *path, const char *name))
{
    struct dirent **list = NULL;
    int n = scandir (dir, &list, NULL, alphasort);
    if (n < 0)
        fail_msg ("cannot read %s", dir);
    size_t count = 0;
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        size_t len = strlen (name);
        if (len > 5 && strcmp (name + len - 5, ".json") == 0) {
            char path[4096];
            snprintf (path, sizeof path, "%s/%s", dir, name);
            fn (path, name);
            count++;
        }
        free (list[i]);
    }
    free (list);
    return count;
}

static void s_check_good (const char *path, const char *name)
{
    size_t size;
    char *data = s_slurp (path, &size);
    const char *code = NULL;
    char err[1024] = "";
    json_t *env = hms_msg_decode (data, size, &code, err, sizeof err);
    if (!env)
        fail_msg ("%s refused: %s: %s", path, code, err);
    /* the file name says the type and version: <type>.v<N>[-variant].json */
    char prefix[256];
    snprintf (prefix, sizeof prefix, "%s.v%d", hms_msg_type (env), hms_msg_v (env));
    size_t pn = strlen (prefix);
    if (strncmp (name, prefix, pn) != 0 || (name[pn] != '.' && name[pn] != '-'))
        fail_msg ("%s holds a %s message", path, prefix);
    /* and it encodes back to the same value */
    char *text = hms_msg_encode (env);
    json_t *back = hms_msg_decode (text, strlen (text), &code, err, sizeof err);
    assert_non_null (back);
    assert_true (json_equal (env, back));
    json_decref (back);
    free (text);
    json_decref (env);
    free (data);
}

static void s_check_bad (const char *path, const char *name)
{
    const char *sep = strstr (name, "--");
    if (!sep)
        fail_msg ("%s: a bad example is named <code>--<what>.json", path);
    char expected[64];
    snprintf (expected, sizeof expected, "%.*s", (int) (sep - name), name);
    const char *codes[] = {HMS_ERR_BAD_JSON, HMS_ERR_BAD_ENVELOPE, HMS_ERR_UNKNOWN_TYPE,
                           HMS_ERR_BAD_BODY};
    int known = 0;
    for (size_t i = 0; i < 4; i++)
        known |= strcmp (expected, codes[i]) == 0;
    if (!known)
        fail_msg ("%s: '%s' is not a decode error code", path, expected);
    size_t size;
    char *data = s_slurp (path, &size);
    const char *code = NULL;
    char err[1024] = "";
    json_t *env = hms_msg_decode (data, size, &code, err, sizeof err);
    if (env)
        fail_msg ("%s was accepted", path);
    if (!code || strcmp (code, expected) != 0)
        fail_msg ("%s refused with %s, expected %s (%s)", path, code ? code : "(none)", expected,
                  err);
    assert_true (err[0] != 0);
    free (data);
}

static void test_golden (void **state)
{
    (void) state;
    const char *source = getenv ("HERMES_SOURCE_DIR");
    if (!source || !*source)
        fail_msg ("HERMES_SOURCE_DIR is not set (run through ctest)");
    char dir[4096];
    snprintf (dir, sizeof dir, "%s/schemas/examples", source);
    size_t good = s_each_json (dir, s_check_good);
    if (good == 0)
        fail_msg ("no golden messages in %s", dir);
    snprintf (dir, sizeof dir, "%s/schemas/examples/bad", source);
    size_t bad = s_each_json (dir, s_check_bad);
    if (bad == 0)
        fail_msg ("no bad messages in %s", dir);
    print_message ("%zu golden and %zu bad messages checked\n", good, bad);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_new_and_accessors),
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_replies),
        cmocka_unit_test (test_decode_errors),
        cmocka_unit_test (test_golden),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
