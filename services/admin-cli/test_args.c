/* Unit test for ctl_args: every hermesctl command with its positional arguments and flags,
 * global options before and after the command, usage errors with their messages, help, and
 * the request bodies the commands build (valid against the message schemas). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ctl_args.h"
#include "hms_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_err[512];

/* Parses the NULL-terminated arguments after "hermesctl". */
static int s_parse (ctl_args_t *args, ...)
{
    char *argv[32] = {"hermesctl"};
    int argc = 1;
    va_list ap;
    va_start (ap, args);
    for (const char *a = va_arg (ap, const char *); a; a = va_arg (ap, const char *)) {
        assert_true (argc < 31);
        argv[argc++] = (char *) a;
    }
    va_end (ap);
    argv[argc] = NULL;
    s_err[0] = 0;
    return ctl_args_parse (args, argc, argv, s_err, sizeof s_err);
}

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

static int s_setup (void **state)
{
    (void) state;
    unsetenv ("HERMES_CONTROLLER");
    unsetenv ("HERMES_KEYS_DIR");
    return 0;
}

typedef struct {
    const char *argv[10];
    const char *words, *type;
    int npos;
    const char *pos[2];
} s_case_t;

static const s_case_t s_cases[] = {
    {{"status"}, "status", "status", 0, {NULL}},
    {{"node", "add", "relay-1"}, "node add", "node.add", 1, {"relay-1"}},
    {{"node", "add", "relay-1", "--address", "10.0.0.1:4433", "--site", "fra"},
     "node add",
     "node.add",
     1,
     {"relay-1"}},
    {{"node", "del", "relay-1"}, "node del", "node.del", 1, {"relay-1"}},
    {{"node", "list"}, "node list", "node.list", 0, {NULL}},
    {{"link", "add", "a", "b"}, "link add", "link.add", 2, {"a", "b"}},
    {{"link", "add", "a", "b", "--cost", "20", "--transport", "h3"},
     "link add",
     "link.add",
     2,
     {"a", "b"}},
    {{"link", "del", "a", "b"}, "link del", "link.del", 2, {"a", "b"}},
    {{"link", "list"}, "link list", "link.list", 0, {NULL}},
    {{"policy", "add", "p.json"}, "policy add", "policy.add", 1, {"p.json"}},
    {{"policy", "add", "-"}, "policy add", "policy.add", 1, {"-"}},
    {{"policy", "del", "deny-telnet"}, "policy del", "policy.del", 1, {"deny-telnet"}},
    {{"policy", "list"}, "policy list", "policy.list", 0, {NULL}},
    {{"config", "show"}, "config show", "config.show", 0, {NULL}},
    {{"config", "show", "--version", "3", "--kind", "relay"},
     "config show",
     "config.show",
     0,
     {NULL}},
    {{"config", "history"}, "config history", "config.history", 0, {NULL}},
    {{"config", "history", "--limit", "5"}, "config history", "config.history", 0, {NULL}},
    {{"config", "rollback", "4"}, "config rollback", "config.rollback", 1, {"4"}},
    {{"audit"}, "audit", "audit.list", 0, {NULL}},
    {{"audit", "--limit", "10"}, "audit", "audit.list", 0, {NULL}},
    {{"keygen"}, "keygen", NULL, 0, {NULL}},
    {{"keygen", "--dir", "/tmp/k"}, "keygen", NULL, 0, {NULL}},
};

static int s_parse_array (ctl_args_t *args, const char *const *words)
{
    char *argv[12] = {"hermesctl"};
    int argc = 1;
    for (int i = 0; words[i]; i++)
        argv[argc++] = (char *) words[i];
    argv[argc] = NULL;
    s_err[0] = 0;
    return ctl_args_parse (args, argc, argv, s_err, sizeof s_err);
}

static void test_every_command (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const s_case_t *c = &s_cases[i];
        ctl_args_t args;
        if (s_parse_array (&args, c->argv) != 0)
            fail_msg ("case %zu (%s): %s", i, c->words, s_err);
        assert_non_null (args.command);
        assert_string_equal (args.command->words, c->words);
        if (c->type)
            assert_string_equal (args.command->type, c->type);
        else
            assert_null (args.command->type);
        assert_int_equal (args.npos, c->npos);
        for (int p = 0; p < c->npos; p++)
            assert_string_equal (args.pos[p], c->pos[p]);
        /* defaults */
        assert_string_equal (args.controller, "tcp://127.0.0.1:7100");
        assert_string_equal (args.keys_dir, "var/keys");
        assert_int_equal (args.timeout_ms, 2000);
        assert_false (args.json);
    }
}

static void test_flags (void **state)
{
    (void) state;
    ctl_args_t args;
    assert_int_equal (
        s_parse (&args, "node", "add", "relay-1", "--address", "10.0.0.1", "--site", "fra", NULL),
        0);
    assert_int_equal (args.nflags, 2);
    assert_string_equal (ctl_args_flag (&args, "address"), "10.0.0.1");
    assert_string_equal (ctl_args_flag (&args, "site"), "fra");
    assert_null (ctl_args_flag (&args, "cost"));
    assert_null (ctl_args_flag (&args, "addr"));

    /* flags may come before the positional arguments */
    assert_int_equal (s_parse (&args, "link", "add", "--cost", "7", "a", "b", NULL), 0);
    assert_int_equal (args.npos, 2);
    assert_string_equal (args.pos[0], "a");
    assert_string_equal (args.pos[1], "b");
    assert_string_equal (ctl_args_flag (&args, "cost"), "7");
    assert_null (ctl_args_flag (&args, "transport"));

    /* no flags */
    assert_int_equal (s_parse (&args, "node", "list", NULL), 0);
    assert_int_equal (args.nflags, 0);
    assert_null (ctl_args_flag (&args, "address"));
}

static void test_global_options (void **state)
{
    (void) state;
    ctl_args_t args;
    /* before the command */
    assert_int_equal (s_parse (&args, "-c", "tcp://10.1.1.1:7100", "--keys-dir", "/etc/hermes/keys",
                               "--json", "--timeout", "500", "node", "list", NULL),
                      0);
    assert_string_equal (args.command->words, "node list");
    assert_string_equal (args.controller, "tcp://10.1.1.1:7100");
    assert_string_equal (args.keys_dir, "/etc/hermes/keys");
    assert_true (args.json);
    assert_int_equal (args.timeout_ms, 500);
    assert_int_equal (args.nflags, 0);

    /* after the command, and between its words and arguments */
    assert_int_equal (s_parse (&args, "node", "add", "relay-1", "--json", "--controller",
                               "tcp://c:1", "--timeout", "600000", "--keys-dir", "k", NULL),
                      0);
    assert_string_equal (args.command->words, "node add");
    assert_int_equal (args.npos, 1);
    assert_string_equal (args.pos[0], "relay-1");
    assert_string_equal (args.controller, "tcp://c:1");
    assert_string_equal (args.keys_dir, "k");
    assert_true (args.json);
    assert_int_equal (args.timeout_ms, 600000);
    assert_int_equal (args.nflags, 0); /* global options are not sub-command flags */

    assert_int_equal (
        s_parse (&args, "link", "-c", "tcp://d:2", "del", "a", "--timeout", "1", "b", NULL), 0);
    assert_string_equal (args.command->words, "link del");
    assert_string_equal (args.pos[1], "b");
    assert_string_equal (args.controller, "tcp://d:2");
    assert_int_equal (args.timeout_ms, 1);

    /* the environment gives the defaults; options override it */
    setenv ("HERMES_CONTROLLER", "tcp://env:7100", 1);
    setenv ("HERMES_KEYS_DIR", "/env/keys", 1);
    assert_int_equal (s_parse (&args, "status", NULL), 0);
    assert_string_equal (args.controller, "tcp://env:7100");
    assert_string_equal (args.keys_dir, "/env/keys");
    assert_int_equal (s_parse (&args, "status", "-c", "tcp://flag:1", NULL), 0);
    assert_string_equal (args.controller, "tcp://flag:1");
    /* an empty variable is as good as none */
    setenv ("HERMES_CONTROLLER", "", 1);
    assert_int_equal (s_parse (&args, "status", NULL), 0);
    assert_string_equal (args.controller, "tcp://127.0.0.1:7100");
    unsetenv ("HERMES_CONTROLLER");
    unsetenv ("HERMES_KEYS_DIR");
}

static void test_usage_errors (void **state)
{
    (void) state;
    ctl_args_t args;

    assert_int_equal (s_parse (&args, NULL), -1);
    s_assert_contains (s_err, "no command");
    assert_int_equal (s_parse (&args, "--json", NULL), -1);
    s_assert_contains (s_err, "no command");

    /* unknown commands */
    assert_int_equal (s_parse (&args, "frobnicate", NULL), -1);
    s_assert_contains (s_err, "unknown command 'frobnicate'");
    assert_int_equal (s_parse (&args, "node", "rename", "a", NULL), -1);
    s_assert_contains (s_err, "unknown command 'node rename'");
    assert_int_equal (s_parse (&args, "node", NULL), -1);
    s_assert_contains (s_err, "unknown command 'node'");

    /* wrong positional counts name the usage */
    const char *const wrong[][5] = {
        {"node", "add", NULL},          {"node", "add", "a", "b", NULL},
        {"node", "del", NULL},          {"link", "add", "a", NULL},
        {"link", "add", "a", "b", "c"}, {"link", "del", "a", NULL},
        {"policy", "add", NULL},        {"policy", "del", NULL},
        {"config", "rollback", NULL},   {"config", "rollback", "1", "2", NULL},
        {"status", "now", NULL},        {"node", "list", "all", NULL},
        {"audit", "all", NULL},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        const char *words[6] = {0};
        for (int w = 0; w < 5 && wrong[i][w]; w++)
            words[w] = wrong[i][w];
        if (s_parse_array (&args, words) != -1)
            fail_msg ("case %zu (%s %s) parsed", i, words[0], words[1]);
        s_assert_contains (s_err, "wrong number of arguments");
        s_assert_contains (s_err, "usage: hermesctl ");
        s_assert_contains (s_err, words[0]);
    }
    assert_int_equal (s_parse (&args, "link", "add", "a", NULL), -1);
    s_assert_contains (s_err, "link add FROM TO");

    /* sub-command flags that the command does not take */
    assert_int_equal (s_parse (&args, "node", "del", "a", "--cost", "3", NULL), -1);
    s_assert_contains (s_err, "--cost");
    s_assert_contains (s_err, "node del");
    assert_int_equal (s_parse (&args, "link", "del", "a", "b", "--transport", "h3", NULL), -1);
    s_assert_contains (s_err, "--transport");
    assert_int_equal (s_parse (&args, "status", "--verbose", "1", NULL), -1);
    s_assert_contains (s_err, "--verbose");
    assert_int_equal (s_parse (&args, "node", "add", "a", "--addr", "x", NULL), -1);
    s_assert_contains (s_err, "--addr");

    /* missing values */
    assert_int_equal (s_parse (&args, "node", "add", "a", "--address", NULL), -1);
    s_assert_contains (s_err, "--address needs a value");
    assert_int_equal (s_parse (&args, "status", "-c", NULL), -1);
    s_assert_contains (s_err, "-c needs a value");
    assert_int_equal (s_parse (&args, "status", "--timeout", NULL), -1);
    s_assert_contains (s_err, "--timeout needs a value");
    assert_int_equal (s_parse (&args, "status", "--keys-dir", NULL), -1);
    s_assert_contains (s_err, "--keys-dir");

    /* bad --timeout */
    const char *bad_timeouts[] = {"abc", "0", "-5", "600001", "10ms", "", "1e3"};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof bad_timeouts[0]; i++) {
        if (s_parse (&args, "--timeout", bad_timeouts[i], "status", NULL) != -1)
            fail_msg ("--timeout '%s' accepted", bad_timeouts[i]);
        s_assert_contains (s_err, "--timeout must be an integer from 1 to 600000");
        char quoted[32];
        snprintf (quoted, sizeof quoted, "'%s'", bad_timeouts[i]);
        s_assert_contains (s_err, quoted);
    }
}

static void test_help (void **state)
{
    (void) state;
    ctl_args_t args;
    assert_int_equal (s_parse (&args, "help", NULL), 1);
    assert_int_equal (s_parse (&args, "--help", NULL), 1);
    assert_int_equal (s_parse (&args, "-h", NULL), 1);
    assert_int_equal (s_parse (&args, "node", "add", "--help", NULL), 1);
    /* help wins over a usage error after it */
    assert_int_equal (s_parse (&args, "--help", "frobnicate", NULL), 1);

    /* the usage text lists every command */
    char path[] = "/tmp/hms-ctl-usage-XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    FILE *f = fdopen (fd, "w+");
    ctl_args_usage (f);
    rewind (f);
    char text[8192];
    size_t n = fread (text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose (f);
    unlink (path);
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++)
        s_assert_contains (text, s_cases[i].words);
    s_assert_contains (text, "--timeout MS");
    s_assert_contains (text, "exit codes");
}

/* Builds the request for argv and checks it against msg/<type>.v1; returns the body. */
static json_t *s_build (const char *const *words)
{
    ctl_args_t args;
    if (s_parse_array (&args, words) != 0)
        fail_msg ("%s %s: %s", words[0], words[1] ? words[1] : "", s_err);
    char err[512] = "";
    json_t *body = args.command->build (&args, err, sizeof err);
    if (!body)
        fail_msg ("%s: build failed: %s", args.command->words, err);
    if (args.command->type) {
        char name[64];
        snprintf (name, sizeof name, "msg/%s.v1", args.command->type);
        if (hms_schemas_validate (name, body, err, sizeof err))
            fail_msg ("%s: body refused by %s: %s", args.command->words, name, err);
    }
    return body;
}

static const char *s_build_error (const char *const *words)
{
    ctl_args_t args;
    if (s_parse_array (&args, words) != 0)
        fail_msg ("%s: %s", words[0], s_err);
    static char err[512];
    err[0] = 0;
    json_t *body = args.command->build (&args, err, sizeof err);
    if (body)
        fail_msg ("%s: built a body from bad arguments", args.command->words);
    assert_true (err[0] != 0);
    return err;
}

static void test_requests (void **state)
{
    (void) state;
    char dir[] = "/tmp/hms-ctl-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char policy[128], broken[128];
    snprintf (policy, sizeof policy, "%s/policy.json", dir);
    snprintf (broken, sizeof broken, "%s/broken.json", dir);
    FILE *f = fopen (policy, "w");
    fputs ("{\"id\": \"deny-telnet\", \"action\": \"deny\", \"match\": {\"ports\": [\"23\"]}}\n",
           f);
    fclose (f);
    f = fopen (broken, "w");
    fputs ("{\"id\": \"x\",\n \"action\": }\n", f);
    fclose (f);

    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const s_case_t *c = &s_cases[i];
        if (!c->type || (c->npos == 1 && strcmp (c->pos[0], "-") == 0))
            continue; /* local command; stdin */
        const char *words[12] = {0};
        for (int w = 0; c->argv[w]; w++)
            words[w] = strcmp (c->argv[w], "p.json") == 0 ? policy : c->argv[w];
        json_decref (s_build (words));
    }

    json_t *body = s_build (
        (const char *[]){"link", "add", "a", "b", "--cost", "20", "--transport", "h3", NULL});
    assert_int_equal (json_integer_value (json_object_get (body, "cost")), 20);
    assert_string_equal (json_string_value (json_object_get (body, "transport")), "h3");
    json_decref (body);
    body = s_build ((const char *[]){"node", "add", "r1", "--site", "fra", NULL});
    assert_string_equal (json_string_value (json_object_get (body, "site")), "fra");
    assert_null (json_object_get (body, "address"));
    json_decref (body);
    body = s_build ((const char *[]){"policy", "add", policy, NULL});
    assert_string_equal (
        json_string_value (json_object_get (json_object_get (body, "policy"), "id")),
        "deny-telnet");
    json_decref (body);
    body = s_build ((const char *[]){"config", "rollback", "12", NULL});
    assert_int_equal (json_integer_value (json_object_get (body, "version")), 12);
    json_decref (body);
    body = s_build ((const char *[]){"config", "show", "--version", "3", "--kind", "relay", NULL});
    assert_int_equal (json_integer_value (json_object_get (body, "version")), 3);
    assert_string_equal (json_string_value (json_object_get (body, "kind")), "relay");
    json_decref (body);

    const char *err;
    err = s_build_error ((const char *[]){"link", "add", "a", "b", "--cost", "0", NULL});
    s_assert_contains (err, "--cost");
    err = s_build_error ((const char *[]){"link", "add", "a", "b", "--transport", "h4", NULL});
    s_assert_contains (err, "h4");
    err = s_build_error ((const char *[]){"audit", "--limit", "many", NULL});
    s_assert_contains (err, "--limit");
    err = s_build_error ((const char *[]){"config", "history", "--limit", "10001", NULL});
    s_assert_contains (err, "--limit");
    err = s_build_error ((const char *[]){"config", "rollback", "zero", NULL});
    s_assert_contains (err, "VERSION");
    err = s_build_error ((const char *[]){"config", "show", "--version", "0", NULL});
    s_assert_contains (err, "--version");
    err = s_build_error ((const char *[]){"policy", "add", broken, NULL});
    s_assert_contains (err, broken);
    s_assert_contains (err, "line 2");
    char missing[160];
    snprintf (missing, sizeof missing, "%s/none.json", dir);
    err = s_build_error ((const char *[]){"policy", "add", missing, NULL});
    s_assert_contains (err, missing);

    unlink (policy);
    unlink (broken);
    assert_int_equal (rmdir (dir), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup (test_every_command, s_setup),
        cmocka_unit_test_setup (test_flags, s_setup),
        cmocka_unit_test_setup (test_global_options, s_setup),
        cmocka_unit_test_setup (test_usage_errors, s_setup),
        cmocka_unit_test_setup (test_help, s_setup),
        cmocka_unit_test_setup (test_requests, s_setup),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
