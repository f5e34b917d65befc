/* Unit test for hms_config: defaults, the strict JSON file (unknown key, wrong type, bad
 * JSON), HERMES_* environment over the file, flags over the environment, flag syntax and
 * the errors an operator sees. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hms_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const hms_cfg_key_t s_common[] = {
    {"api_bind", HMS_CFG_STRING, "tcp://127.0.0.1:7100", "controller api endpoint"},
    {"log_level", HMS_CFG_STRING, "info", "debug, info, warning or error"},
    {"workers", HMS_CFG_INT, "4", "worker threads"},
    {"debug", HMS_CFG_BOOL, "false", "debug logging"},
    {NULL, 0, NULL, NULL},
};
static const hms_cfg_key_t s_daemon[] = {
    {"instance", HMS_CFG_STRING, NULL, "instance name"},
    {"max_conns", HMS_CFG_INT, NULL, "connection limit"},
    {"tls", HMS_CFG_BOOL, "true", "use TLS"},
    {NULL, 0, NULL, NULL},
};

static char s_dir[64];

static void s_clear_env (void)
{
    const char *names[] = {"HERMES_CONFIG", "HERMES_API_BIND", "HERMES_LOG_LEVEL", "HERMES_WORKERS",
                           "HERMES_DEBUG",  "HERMES_INSTANCE", "HERMES_MAX_CONNS", "HERMES_TLS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv (names[i]);
}

static int s_setup (void **state)
{
    (void) state;
    s_clear_env ();
    snprintf (s_dir, sizeof s_dir, "/tmp/hms-config-XXXXXX");
    return mkdtemp (s_dir) ? 0 : -1;
}

static int s_teardown (void **state)
{
    (void) state;
    s_clear_env ();
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system (cmd) == 0 ? 0 : -1;
}

/* Writes text to name in the temp dir; returns the path (static buffer per call site). */
static const char *s_write (const char *name, const char *text, char *path, size_t len)
{
    snprintf (path, len, "%s/%s", s_dir, name);
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs (text, f);
    fclose (f);
    return path;
}

static hms_config_t *s_new (void)
{
    hms_config_t *cfg = hms_config_new (s_common, s_daemon);
    assert_non_null (cfg);
    return cfg;
}

/* Runs hms_config_load on a NULL-terminated list of arguments after "prog". */
static int s_load (hms_config_t *cfg, char *err, size_t errlen, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start (ap, errlen);
    for (const char *a = va_arg (ap, const char *); a; a = va_arg (ap, const char *)) {
        assert_true (argc < 31);
        argv[argc++] = (char *) a;
    }
    va_end (ap);
    argv[argc] = NULL;
    err[0] = 0;
    return hms_config_load (cfg, argc, argv, err, errlen);
}

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

static void test_defaults (void **state)
{
    (void) state;
    hms_config_t *cfg = s_new ();
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://127.0.0.1:7100");
    assert_string_equal (hms_config_str (cfg, "log_level"), "info");
    assert_int_equal (hms_config_int (cfg, "workers"), 4);
    assert_false (hms_config_bool (cfg, "debug"));
    assert_true (hms_config_bool (cfg, "tls"));
    /* keys without a default are unset */
    assert_null (hms_config_str (cfg, "instance"));
    assert_int_equal (hms_config_int (cfg, "max_conns"), 0);
    /* keys that do not exist */
    assert_null (hms_config_str (cfg, "nope"));
    assert_int_equal (hms_config_int (cfg, "nope"), 0);
    assert_false (hms_config_bool (cfg, "nope"));

    /* no arguments, no environment: still the defaults */
    char err[512];
    assert_int_equal (s_load (cfg, err, sizeof err, NULL), 0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://127.0.0.1:7100");
    assert_int_equal (hms_config_int (cfg, "workers"), 4);

    hms_config_destroy (&cfg);
    assert_null (cfg);
    hms_config_destroy (&cfg);

    /* one table only */
    cfg = hms_config_new (s_common, NULL);
    assert_string_equal (hms_config_str (cfg, "log_level"), "info");
    assert_null (hms_config_str (cfg, "tls"));
    hms_config_destroy (&cfg);
}

static void test_file (void **state)
{
    (void) state;
    char path[256], err[512];
    hms_config_t *cfg = s_new ();
    s_write ("good.json",
             "{\"api_bind\": \"tcp://0.0.0.0:7100\", \"workers\": 16, \"debug\": true,\n"
             " \"instance\": \"relay-1\", \"tls\": false, \"max_conns\": -1}\n",
             path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), 0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://0.0.0.0:7100");
    assert_int_equal (hms_config_int (cfg, "workers"), 16);
    assert_int_equal (hms_config_int (cfg, "max_conns"), -1);
    assert_true (hms_config_bool (cfg, "debug"));
    assert_false (hms_config_bool (cfg, "tls"));
    assert_string_equal (hms_config_str (cfg, "instance"), "relay-1");
    assert_string_equal (hms_config_str (cfg, "log_level"), "info"); /* untouched */
    hms_config_destroy (&cfg);

    /* an empty object changes nothing */
    cfg = s_new ();
    s_write ("empty.json", "{}", path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), 0);
    assert_int_equal (hms_config_int (cfg, "workers"), 4);
    hms_config_destroy (&cfg);
}

static void test_file_errors (void **state)
{
    (void) state;
    char path[256], err[512];
    hms_config_t *cfg = s_new ();

    /* unknown key: names the key and the file */
    s_write ("unknown.json", "{\"api_bnid\": \"tcp://x:1\"}", path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), -1);
    s_assert_contains (err, "api_bnid");
    s_assert_contains (err, path);
    s_assert_contains (err, "unknown key");

    /* wrong types: name the key and the expected type */
    struct {
        const char *text, *key, *type;
    } wrong[] = {
        {"{\"workers\": \"8\"}", "workers", "integer"},
        {"{\"workers\": 1.5}", "workers", "integer"},
        {"{\"workers\": true}", "workers", "integer"},
        {"{\"api_bind\": 7100}", "api_bind", "string"},
        {"{\"debug\": \"yes\"}", "debug", "boolean"},
        {"{\"debug\": 1}", "debug", "boolean"},
        {"{\"instance\": null}", "instance", "string"},
        {"{\"log_level\": [\"info\"]}", "log_level", "string"},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        s_write ("wrong.json", wrong[i].text, path, sizeof path);
        err[0] = 0;
        if (hms_config_load_file (cfg, path, err, sizeof err) != -1)
            fail_msg ("%s was accepted", wrong[i].text);
        char quoted[64];
        snprintf (quoted, sizeof quoted, "'%s'", wrong[i].key);
        s_assert_contains (err, quoted);
        s_assert_contains (err, wrong[i].type);
        s_assert_contains (err, path);
    }

    /* malformed JSON: the line where it broke */
    s_write ("broken.json", "{\n  \"workers\": 2,\n  \"debug\": tru\n}\n", path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), -1);
    s_assert_contains (err, path);
    s_assert_contains (err, "line 3");

    /* duplicate keys are refused */
    s_write ("dup.json", "{\"workers\": 2,\n\"workers\": 3}", path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), -1);
    s_assert_contains (err, "line 2");

    /* not an object */
    s_write ("array.json", "[1, 2]", path, sizeof path);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), -1);
    s_assert_contains (err, "object");
    s_assert_contains (err, path);

    /* missing file */
    snprintf (path, sizeof path, "%s/none.json", s_dir);
    assert_int_equal (hms_config_load_file (cfg, path, err, sizeof err), -1);
    s_assert_contains (err, path);

    /* none of the failures changed a value */
    assert_int_equal (hms_config_int (cfg, "workers"), 4);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://127.0.0.1:7100");
    assert_false (hms_config_bool (cfg, "debug"));
    hms_config_destroy (&cfg);
}

static void test_layers (void **state)
{
    (void) state;
    char path[256], err[512];
    s_write ("layers.json",
             "{\"api_bind\": \"tcp://file:1\", \"log_level\": \"warning\", \"workers\": 8, "
             "\"instance\": \"from-file\"}",
             path, sizeof path);

    /* the file alone, through --config FILE */
    hms_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, "--config", path, NULL), 0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://file:1");
    assert_string_equal (hms_config_str (cfg, "log_level"), "warning");
    assert_int_equal (hms_config_int (cfg, "workers"), 8);
    hms_config_destroy (&cfg);

    /* the environment overrides the file (given by HERMES_CONFIG this time) */
    setenv ("HERMES_CONFIG", path, 1);
    setenv ("HERMES_API_BIND", "tcp://env:2", 1);
    setenv ("HERMES_WORKERS", "12", 1);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, NULL), 0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://env:2");
    assert_int_equal (hms_config_int (cfg, "workers"), 12);
    assert_string_equal (hms_config_str (cfg, "log_level"), "warning"); /* file */
    assert_string_equal (hms_config_str (cfg, "instance"), "from-file");
    hms_config_destroy (&cfg);

    /* flags override the environment, in both syntaxes; --config=FILE too */
    unsetenv ("HERMES_CONFIG");
    cfg = s_new ();
    char config_eq[300];
    snprintf (config_eq, sizeof config_eq, "--config=%s", path);
    assert_int_equal (s_load (cfg, err, sizeof err, "--api-bind", "tcp://flag:3", "--workers=20",
                              config_eq, NULL),
                      0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://flag:3");
    assert_int_equal (hms_config_int (cfg, "workers"), 20);
    assert_string_equal (hms_config_str (cfg, "log_level"), "warning"); /* file */
    hms_config_destroy (&cfg);

    cfg = s_new ();
    assert_int_equal (
        s_load (cfg, err, sizeof err, "--api-bind=tcp://flag:4", "--instance", "relay-9", NULL), 0);
    assert_string_equal (hms_config_str (cfg, "api_bind"), "tcp://flag:4");
    assert_string_equal (hms_config_str (cfg, "instance"), "relay-9");
    assert_int_equal (hms_config_int (cfg, "workers"), 12); /* env */
    hms_config_destroy (&cfg);

    /* a value with '=' inside, after the first '=' */
    cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, "--instance=a=b", NULL), 0);
    assert_string_equal (hms_config_str (cfg, "instance"), "a=b");
    hms_config_destroy (&cfg);

    /* HERMES_DEBUG=1 in the environment is a boolean */
    setenv ("HERMES_DEBUG", "1", 1);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, NULL), 0);
    assert_true (hms_config_bool (cfg, "debug"));
    /* and a flag turns it off again */
    assert_int_equal (s_load (cfg, err, sizeof err, "--debug", "false", NULL), 0);
    assert_false (hms_config_bool (cfg, "debug"));
    hms_config_destroy (&cfg);
}

static void test_bool_flags (void **state)
{
    (void) state;
    char err[512];
    hms_config_t *cfg = s_new ();
    /* a bool flag without a value, followed by another flag */
    assert_int_equal (s_load (cfg, err, sizeof err, "--debug", "--workers", "2", NULL), 0);
    assert_true (hms_config_bool (cfg, "debug"));
    assert_int_equal (hms_config_int (cfg, "workers"), 2);
    hms_config_destroy (&cfg);

    /* a bool flag without a value, last */
    cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, "--workers", "3", "--debug", NULL), 0);
    assert_true (hms_config_bool (cfg, "debug"));
    hms_config_destroy (&cfg);

    /* with a value */
    cfg = s_new ();
    assert_int_equal (s_load (cfg, err, sizeof err, "--tls", "false", "--debug=true", NULL), 0);
    assert_false (hms_config_bool (cfg, "tls"));
    assert_true (hms_config_bool (cfg, "debug"));
    assert_int_equal (s_load (cfg, err, sizeof err, "--tls=0", NULL), 0);
    assert_false (hms_config_bool (cfg, "tls"));
    assert_int_equal (s_load (cfg, err, sizeof err, "--tls=1", NULL), 0);
    assert_true (hms_config_bool (cfg, "tls"));

    /* a bad boolean names the option and the value */
    assert_int_equal (s_load (cfg, err, sizeof err, "--tls", "maybe", NULL), -1);
    s_assert_contains (err, "tls");
    s_assert_contains (err, "maybe");
    assert_true (hms_config_bool (cfg, "tls")); /* unchanged */
    hms_config_destroy (&cfg);
}

static void test_flag_errors (void **state)
{
    (void) state;
    char err[512];
    hms_config_t *cfg = s_new ();

    assert_int_equal (s_load (cfg, err, sizeof err, "--api-bnid", "x", NULL), -1);
    s_assert_contains (err, "--api-bnid");
    s_assert_contains (err, "unknown option");

    assert_int_equal (s_load (cfg, err, sizeof err, "--nope=1", NULL), -1);
    s_assert_contains (err, "--nope");

    /* not an option at all */
    assert_int_equal (s_load (cfg, err, sizeof err, "relay", NULL), -1);
    s_assert_contains (err, "relay");
    assert_int_equal (s_load (cfg, err, sizeof err, "-w", "3", NULL), -1);
    s_assert_contains (err, "-w");

    /* missing values */
    assert_int_equal (s_load (cfg, err, sizeof err, "--api-bind", NULL), -1);
    s_assert_contains (err, "--api-bind");
    s_assert_contains (err, "needs a value");
    assert_int_equal (s_load (cfg, err, sizeof err, "--config", NULL), -1);
    s_assert_contains (err, "--config");

    /* --config naming a missing file */
    char path[256];
    snprintf (path, sizeof path, "%s/missing.json", s_dir);
    assert_int_equal (s_load (cfg, err, sizeof err, "--config", path, NULL), -1);
    s_assert_contains (err, path);

    /* a file error stops the load before flags are applied */
    char bad[256];
    s_write ("bad.json", "{\"colour\": 1}", bad, sizeof bad);
    assert_int_equal (s_load (cfg, err, sizeof err, "--workers", "9", "--config", bad, NULL), -1);
    s_assert_contains (err, "colour");
    s_assert_contains (err, bad);
    assert_int_equal (hms_config_int (cfg, "workers"), 4);

    /* a bad environment variable names itself */
    setenv ("HERMES_WORKERS", "many", 1);
    assert_int_equal (s_load (cfg, err, sizeof err, NULL), -1);
    s_assert_contains (err, "HERMES_WORKERS");
    s_assert_contains (err, "many");
    unsetenv ("HERMES_WORKERS");
    hms_config_destroy (&cfg);
}

static void test_help (void **state)
{
    (void) state;
    char err[512];
    hms_config_t *cfg = s_new ();
    /* usage goes to stdout; --help wins over anything else, even bad options */
    assert_int_equal (s_load (cfg, err, sizeof err, "--help", NULL), 1);
    assert_int_equal (s_load (cfg, err, sizeof err, "--workers", "2", "-h", NULL), 1);
    assert_int_equal (s_load (cfg, err, sizeof err, "--nope", "--help", NULL), 1);
    assert_int_equal (hms_config_int (cfg, "workers"), 4); /* nothing applied */

    /* usage lists every key as a flag, with its help and default */
    char path[256];
    snprintf (path, sizeof path, "%s/usage.txt", s_dir);
    FILE *f = fopen (path, "w+");
    assert_non_null (f);
    hms_config_usage (cfg, f, "hermes-test");
    rewind (f);
    char text[4096];
    size_t n = fread (text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose (f);
    s_assert_contains (text, "hermes-test");
    s_assert_contains (text, "--api-bind");
    s_assert_contains (text, "--max-conns");
    s_assert_contains (text, "connection limit");
    s_assert_contains (text, "(default tcp://127.0.0.1:7100)");
    hms_config_destroy (&cfg);
}

static void test_integers (void **state)
{
    (void) state;
    char err[512];
    hms_config_t *cfg = s_new ();
    const char *good[] = {"0", "-5", "65536", "9223372036854775807"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal (hms_config_set (cfg, "workers", good[i], "test", err, sizeof err), 0);
        assert_int_equal (hms_config_int (cfg, "workers"), strtoll (good[i], NULL, 10));
    }
    assert_int_equal (hms_config_int (cfg, "workers"), INT64_MAX);

    const char *bad[] = {"", "abc", "12x", "1.5", "0x10", "4 ", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (hms_config_set (cfg, "workers", bad[i], "option --workers", err, sizeof err) != -1)
            fail_msg ("'%s' accepted as an integer", bad[i]);
        s_assert_contains (err, "option --workers");
        s_assert_contains (err, "workers must be an integer");
        char quoted[64];
        snprintf (quoted, sizeof quoted, "'%s'", bad[i]);
        s_assert_contains (err, quoted);
    }
    assert_int_equal (hms_config_int (cfg, "workers"), INT64_MAX); /* unchanged */

    /* through a flag */
    assert_int_equal (s_load (cfg, err, sizeof err, "--max-conns", "lots", NULL), -1);
    s_assert_contains (err, "max_conns");
    s_assert_contains (err, "lots");

    /* strings take anything; unknown keys are refused */
    assert_int_equal (hms_config_set (cfg, "instance", "", "test", err, sizeof err), 0);
    assert_string_equal (hms_config_str (cfg, "instance"), "");
    assert_int_equal (hms_config_set (cfg, "colour", "red", "test", err, sizeof err), -1);
    s_assert_contains (err, "colour");
    hms_config_destroy (&cfg);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_layers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bool_flags, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_flag_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_help, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_integers, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
