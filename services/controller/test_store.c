/* Unit test for controller_store against a real SQLite file in a temp dir: migrations,
 * pragmas, reopen, schema versions from the future, topology and policy writes with their
 * error codes, cascades, config versions and restore, transactions, audit and instances. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "controller_store.h"
#include "hms_msg.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir[64];
static char s_path[128];

static int s_setup (void **state)
{
    (void) state;
    snprintf (s_dir, sizeof s_dir, "/tmp/hms-store-XXXXXX");
    if (!mkdtemp (s_dir))
        return -1;
    snprintf (s_path, sizeof s_path, "%s/hermes.db", s_dir);
    return 0;
}

static int s_teardown (void **state)
{
    (void) state;
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system (cmd) == 0 ? 0 : -1;
}

static void s_assert_contains (const char *text, const char *part)
{
    if (!strstr (text, part))
        fail_msg ("expected \"%s\" in \"%s\"", part, text);
}

static controller_store_t *s_open (void)
{
    controller_err_t err = {0};
    controller_store_t *store = controller_store_open (s_path, &err);
    if (!store)
        fail_msg ("open %s: %s", s_path, err.text);
    return store;
}

/* Expects rc -1 with code, and returns the message. */
static const char *s_fails (int rc, const controller_err_t *err, const char *code)
{
    if (rc != -1)
        fail_msg ("expected failure %s, got %d", code, rc);
    if (!err->code || strcmp (err->code, code) != 0)
        fail_msg ("expected code %s, got %s (%s)", code, err->code ? err->code : "(none)",
                  err->text);
    return err->text;
}

/* One integer from a query on a separate connection. */
static int64_t s_sql_int (const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (s_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2 (db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg ("%s: %s", sql, sqlite3_errmsg (db));
    assert_int_equal (sqlite3_step (st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64 (st, 0);
    sqlite3_finalize (st);
    sqlite3_close (db);
    return v;
}

static void s_sql_text (const char *sql, char *out, size_t len)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (s_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2 (db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg ("%s: %s", sql, sqlite3_errmsg (db));
    assert_int_equal (sqlite3_step (st), SQLITE_ROW);
    snprintf (out, len, "%s", (const char *) sqlite3_column_text (st, 0));
    sqlite3_finalize (st);
    sqlite3_close (db);
}

static void s_sql_exec (const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (s_path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec (db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg ("%s: %s", sql, msg);
    sqlite3_close (db);
}

static json_t *s_json (const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads (text, 0, &jerr);
    if (!doc)
        fail_msg ("bad test JSON %s: %s", text, jerr.text);
    return doc;
}

/* Asserts that value equals the JSON in text. */
static void s_assert_json (const json_t *value, const char *text)
{
    json_t *expected = s_json (text);
    if (!json_equal (value, expected)) {
        char *got = json_dumps (value, JSON_COMPACT | JSON_SORT_KEYS);
        char *want = json_dumps (expected, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg ("got      %s\nexpected %s", got, want);
    }
    json_decref (expected);
}

static void test_fresh_and_reopen (void **state)
{
    (void) state;
    assert_true (controller_store_latest_schema () >= 1);
    controller_store_t *store = s_open ();
    assert_int_equal (controller_store_schema_version (store), controller_store_latest_schema ());
    const char *epoch = controller_store_epoch (store);
    assert_int_equal (strlen (epoch), 36); /* a canonical UUID */
    char saved[64];
    snprintf (saved, sizeof saved, "%s", epoch);
    assert_int_equal (controller_store_version_current (store), 0);
    json_t *st = controller_store_state (store);
    s_assert_json (st, "{\"nodes\":[],\"links\":[],\"policies\":[],\"unavailable\":[]}");
    json_decref (st);
    json_t *history = controller_store_version_history (store, 10);
    assert_int_equal (json_array_size (history), 0);
    json_decref (history);

    controller_err_t err = {0};
    assert_int_equal (controller_store_node_add (store, "relay-1", "10.0.0.1:4433", "fra", &err),
                      0);
    assert_int_equal (controller_store_version_new (store, "alice", "first", &err), 1);
    controller_store_destroy (&store);
    assert_null (store);
    controller_store_destroy (&store);

    /* what an outside reader sees */
    assert_int_equal (s_sql_int ("PRAGMA user_version"), controller_store_latest_schema ());
    char text[128];
    s_sql_text ("SELECT value FROM meta WHERE key = 'epoch'", text, sizeof text);
    assert_string_equal (text, saved);

    /* reopening keeps data, epoch and version, and migrates nothing twice */
    store = s_open ();
    assert_string_equal (controller_store_epoch (store), saved);
    assert_int_equal (controller_store_schema_version (store), controller_store_latest_schema ());
    assert_int_equal (controller_store_version_current (store), 1);
    json_t *nodes = controller_store_nodes (store);
    s_assert_json (nodes,
                   "[{\"name\":\"relay-1\",\"address\":\"10.0.0.1:4433\",\"site\":\"fra\"}]");
    json_decref (nodes);
    controller_store_destroy (&store);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM meta WHERE key = 'epoch'"), 1);

    /* a new database has another epoch */
    snprintf (s_path, sizeof s_path, "%s/other.db", s_dir);
    store = s_open ();
    assert_string_not_equal (controller_store_epoch (store), saved);
    controller_store_destroy (&store);
}

static void test_pragmas (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    /* journal_mode is stored in the file: any connection sees it */
    char mode[32];
    s_sql_text ("PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal (mode, "wal");
    char wal[160];
    snprintf (wal, sizeof wal, "%s-wal", s_path);
    assert_int_equal (access (wal, F_OK), 0);

    /* foreign_keys is per connection, so it shows in what the store's connection does: a
     * node's links go with it (ON DELETE CASCADE only acts with foreign_keys on) */
    controller_err_t err = {0};
    assert_int_equal (controller_store_node_add (store, "a", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_node_add (store, "b", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_link_add (store, "a", "b", 5, "h2", &err), 0);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM links"), 1);
    assert_int_equal (controller_store_node_del (store, "b", &err), 0);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM links"), 0);
    /* and nothing in the file breaks a foreign key */
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (s_path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "PRAGMA foreign_key_check", -1, &st, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (st), SQLITE_DONE);
    sqlite3_finalize (st);
    /* the schema declares the cascade the behaviour above relies on */
    assert_int_equal (sqlite3_prepare_v2 (db,
                                          "SELECT count(*) FROM pragma_foreign_key_list('links') "
                                          "WHERE \"table\" = 'nodes' AND on_delete = 'CASCADE'",
                                          -1, &st, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (st), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (st, 0), 2);
    sqlite3_finalize (st);
    sqlite3_close (db);
    controller_store_destroy (&store);
}

static void test_newer_schema_refused (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_store_destroy (&store);
    int future = controller_store_latest_schema () + 3;
    char sql[64];
    snprintf (sql, sizeof sql, "PRAGMA user_version = %d", future);
    s_sql_exec (sql);

    controller_err_t err = {0};
    store = controller_store_open (s_path, &err);
    assert_null (store);
    assert_string_equal (err.code, HMS_ERR_INTERNAL);
    s_assert_contains (err.text, s_path);
    s_assert_contains (err.text, "newer than this controller knows");
    char num[32];
    snprintf (num, sizeof num, "version %d", future);
    s_assert_contains (err.text, num);
    snprintf (num, sizeof num, "(%d)", controller_store_latest_schema ());
    s_assert_contains (err.text, num);
    /* the file is left alone */
    assert_int_equal (s_sql_int ("PRAGMA user_version"), future);

    /* a folder that does not exist */
    snprintf (s_path, sizeof s_path, "%s/no/such/dir/hermes.db", s_dir);
    memset (&err, 0, sizeof err);
    assert_null (controller_store_open (s_path, &err));
    s_assert_contains (err.text, s_path);
    s_assert_contains (err.text, "cannot open database");
}

static void test_nodes_and_links (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_err_t err = {0};
    const char *msg;
    assert_int_equal (controller_store_node_add (store, "ingress-1", "10.0.0.1", "ber", &err), 0);
    assert_int_equal (controller_store_node_add (store, "relay-1", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_node_add (store, "exit-1", "198.51.100.4", "nyc", &err), 0);

    msg = s_fails (controller_store_node_add (store, "relay-1", "x", "y", &err), &err,
                   HMS_ERR_CONFLICT);
    s_assert_contains (msg, "relay-1");
    msg = s_fails (controller_store_node_del (store, "relay-9", &err), &err, HMS_ERR_NOT_FOUND);
    s_assert_contains (msg, "relay-9");

    json_t *nodes = controller_store_nodes (store);
    s_assert_json (nodes, "[{\"name\":\"exit-1\",\"address\":\"198.51.100.4\",\"site\":\"nyc\"},"
                          "{\"name\":\"ingress-1\",\"address\":\"10.0.0.1\",\"site\":\"ber\"},"
                          "{\"name\":\"relay-1\",\"address\":\"\",\"site\":\"\"}]");
    json_decref (nodes);

    /* links: unknown nodes, the same node twice, duplicates */
    msg = s_fails (controller_store_link_add (store, "ingress-1", "relay-9", 1, "h2", &err), &err,
                   HMS_ERR_NOT_FOUND);
    s_assert_contains (msg, "relay-9");
    msg = s_fails (controller_store_link_add (store, "nowhere", "relay-1", 1, "h2", &err), &err,
                   HMS_ERR_NOT_FOUND);
    s_assert_contains (msg, "nowhere");
    msg = s_fails (controller_store_link_add (store, "relay-1", "relay-1", 1, "h2", &err), &err,
                   HMS_ERR_INVALID);
    s_assert_contains (msg, "relay-1");
    assert_int_equal (controller_store_link_add (store, "ingress-1", "relay-1", 10, "h3", &err), 0);
    assert_int_equal (controller_store_link_add (store, "relay-1", "exit-1", 80, "h2", &err), 0);
    /* links are directed: the way back is another link */
    assert_int_equal (controller_store_link_add (store, "relay-1", "ingress-1", 12, "h2", &err), 0);
    msg = s_fails (controller_store_link_add (store, "ingress-1", "relay-1", 99, "h2", &err), &err,
                   HMS_ERR_CONFLICT);
    s_assert_contains (msg, "ingress-1 -> relay-1");
    /* the database's own checks still hold */
    assert_int_equal (controller_store_link_add (store, "ingress-1", "exit-1", 0, "h2", &err), -1);
    assert_int_equal (controller_store_link_add (store, "ingress-1", "exit-1", 1, "h4", &err), -1);

    json_t *links = controller_store_links (store);
    s_assert_json (links,
                   "[{\"from\":\"ingress-1\",\"to\":\"relay-1\",\"cost\":10,\"transport\":\"h3\"},"
                   "{\"from\":\"relay-1\",\"to\":\"exit-1\",\"cost\":80,\"transport\":\"h2\"},"
                   "{\"from\":\"relay-1\",\"to\":\"ingress-1\",\"cost\":12,\"transport\":\"h2\"}]");
    json_decref (links);

    msg = s_fails (controller_store_link_del (store, "exit-1", "relay-1", &err), &err,
                   HMS_ERR_NOT_FOUND);
    s_assert_contains (msg, "exit-1 -> relay-1");
    assert_int_equal (controller_store_link_del (store, "relay-1", "exit-1", &err), 0);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM links"), 2);

    /* deleting a node deletes its links, both directions, and nothing else */
    assert_int_equal (controller_store_link_add (store, "ingress-1", "exit-1", 3, "h2", &err), 0);
    assert_int_equal (controller_store_node_del (store, "relay-1", &err), 0);
    links = controller_store_links (store);
    s_assert_json (links,
                   "[{\"from\":\"ingress-1\",\"to\":\"exit-1\",\"cost\":3,\"transport\":\"h2\"}]");
    json_decref (links);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM links WHERE from_node = 'relay-1' OR "
                                 "to_node = 'relay-1'"),
                      0);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM nodes"), 2);
    /* and the name can be used again */
    assert_int_equal (controller_store_node_add (store, "relay-1", "10.0.0.2", "fra", &err), 0);
    controller_store_destroy (&store);
}

static void test_policies (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_err_t err = {0};
    int replaced = -1;
    json_t *p1 = s_json ("{\"id\":\"allow-web\",\"priority\":100,\"action\":\"allow\","
                         "\"match\":{\"ports\":[\"443\"]}}");
    json_t *p2 = s_json ("{\"id\":\"deny-telnet\",\"priority\":10,\"action\":\"deny\"}");
    json_t *p3 = s_json ("{\"id\":\"default\",\"action\":\"route\",\"route\":\"relay-1\"}");
    assert_int_equal (controller_store_policy_add (store, p1, &replaced, &err), 0);
    assert_int_equal (replaced, 0);
    assert_int_equal (controller_store_policy_add (store, p2, &replaced, &err), 0);
    assert_int_equal (replaced, 0);
    assert_int_equal (controller_store_policy_add (store, p3, &replaced, &err), 0);
    assert_int_equal (replaced, 0);
    /* ordered by priority (no priority = 1000), then id */
    json_t *list = controller_store_policies (store);
    assert_int_equal (json_array_size (list), 3);
    assert_true (json_equal (json_array_get (list, 0), p2));
    assert_true (json_equal (json_array_get (list, 1), p1));
    assert_true (json_equal (json_array_get (list, 2), p3));
    json_decref (list);
    assert_int_equal (s_sql_int ("SELECT priority FROM policies WHERE id = 'default'"), 1000);

    /* replace: same id, new document and priority */
    json_t *p1b = s_json ("{\"id\":\"allow-web\",\"priority\":5,\"action\":\"deny\"}");
    assert_int_equal (controller_store_policy_add (store, p1b, &replaced, &err), 0);
    assert_int_equal (replaced, 1);
    list = controller_store_policies (store);
    assert_int_equal (json_array_size (list), 3);
    assert_true (json_equal (json_array_get (list, 0), p1b));
    json_decref (list);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM policies"), 3);

    const char *msg =
        s_fails (controller_store_policy_del (store, "nope", &err), &err, HMS_ERR_NOT_FOUND);
    s_assert_contains (msg, "nope");
    assert_int_equal (controller_store_policy_del (store, "allow-web", &err), 0);
    list = controller_store_policies (store);
    assert_int_equal (json_array_size (list), 2);
    assert_true (json_equal (json_array_get (list, 0), p2));
    json_decref (list);
    s_fails (controller_store_policy_del (store, "allow-web", &err), &err, HMS_ERR_NOT_FOUND);

    json_decref (p1);
    json_decref (p1b);
    json_decref (p2);
    json_decref (p3);
    controller_store_destroy (&store);
}

static void s_build_v1 (controller_store_t *store)
{
    controller_err_t err = {0};
    int replaced;
    assert_int_equal (controller_store_node_add (store, "a", "10.0.0.1", "ber", &err), 0);
    assert_int_equal (controller_store_node_add (store, "b", "10.0.0.2", "fra", &err), 0);
    assert_int_equal (controller_store_link_add (store, "a", "b", 7, "h3", &err), 0);
    json_t *p = s_json ("{\"id\":\"p1\",\"priority\":1,\"action\":\"allow\"}");
    assert_int_equal (controller_store_policy_add (store, p, &replaced, &err), 0);
    json_decref (p);
}

static void test_versions_and_restore (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_err_t err = {0};
    s_build_v1 (store);
    assert_int_equal (controller_store_version_new (store, "alice", "initial topology", &err), 1);
    assert_int_equal (controller_store_version_current (store), 1);
    json_t *v1 = controller_store_version_state (store, 1);
    assert_non_null (v1);
    s_assert_json (v1, "{\"nodes\":[{\"name\":\"a\",\"address\":\"10.0.0.1\",\"site\":\"ber\"},"
                       "{\"name\":\"b\",\"address\":\"10.0.0.2\",\"site\":\"fra\"}],"
                       "\"links\":[{\"from\":\"a\",\"to\":\"b\",\"cost\":7,\"transport\":\"h3\"}],"
                       "\"policies\":[{\"id\":\"p1\",\"priority\":1,\"action\":\"allow\"}],"
                       "\"unavailable\":[]}");
    json_t *now = controller_store_state (store);
    assert_true (json_equal (now, v1));
    json_decref (now);

    /* change everything, record version 2 */
    int replaced;
    assert_int_equal (controller_store_node_del (store, "b", &err), 0);
    assert_int_equal (controller_store_node_add (store, "c", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_link_add (store, "c", "a", 2, "h2", &err), 0);
    assert_int_equal (controller_store_policy_del (store, "p1", &err), 0);
    json_t *p = s_json ("{\"id\":\"p2\",\"action\":\"deny\"}");
    assert_int_equal (controller_store_policy_add (store, p, &replaced, &err), 0);
    json_decref (p);
    assert_int_equal (controller_store_version_new (store, "bob", "move to c", &err), 2);
    json_t *v2 = controller_store_version_state (store, 2);
    assert_false (json_equal (v1, v2));
    /* version 1 is unchanged by the later writes */
    json_t *v1again = controller_store_version_state (store, 1);
    assert_true (json_equal (v1, v1again));
    json_decref (v1again);
    assert_null (controller_store_version_state (store, 3));
    assert_null (controller_store_version_state (store, 0));

    /* history: newest first, limited */
    json_t *history = controller_store_version_history (store, 10);
    assert_int_equal (json_array_size (history), 2);
    json_t *h0 = json_array_get (history, 0), *h1 = json_array_get (history, 1);
    assert_int_equal (json_integer_value (json_object_get (h0, "version")), 2);
    assert_string_equal (json_string_value (json_object_get (h0, "author")), "bob");
    assert_string_equal (json_string_value (json_object_get (h0, "reason")), "move to c");
    assert_int_equal (json_integer_value (json_object_get (h1, "version")), 1);
    assert_string_equal (json_string_value (json_object_get (h1, "author")), "alice");
    assert_true (json_integer_value (json_object_get (h1, "created_ms")) > 0);
    json_decref (history);
    history = controller_store_version_history (store, 1);
    assert_int_equal (json_array_size (history), 1);
    json_decref (history);

    /* restore version 1 as version 3, as config rollback does */
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_restore (store, v1, &err), 0);
    assert_int_equal (controller_store_version_new (store, "carol", "rollback to 1", &err), 3);
    assert_int_equal (controller_store_commit (store, &err), 0);
    now = controller_store_state (store);
    assert_true (json_equal (now, v1));
    json_decref (now);
    json_t *v3 = controller_store_version_state (store, 3);
    assert_true (json_equal (v3, v1));
    json_decref (v3);

    /* and it lasts */
    controller_store_destroy (&store);
    store = s_open ();
    now = controller_store_state (store);
    assert_true (json_equal (now, v1));
    json_decref (now);
    assert_int_equal (controller_store_version_current (store), 3);

    /* a state that cannot be restored fails with the reason, inside a transaction that is
     * then rolled back */
    json_t *broken =
        s_json ("{\"nodes\":[{\"name\":\"x\"}],\"links\":[{\"from\":\"x\",\"to\":\"y\","
                "\"cost\":1,\"transport\":\"h2\"}],\"policies\":[]}");
    assert_int_equal (controller_store_begin (store, &err), 0);
    s_fails (controller_store_restore (store, broken, &err), &err, HMS_ERR_NOT_FOUND);
    controller_store_rollback (store);
    now = controller_store_state (store);
    assert_true (json_equal (now, v1));
    json_decref (now);
    json_decref (broken);

    /* nodes that routes avoid: listed in the state while the topology has them, and left
     * alone by a restore */
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_unavailable_set (store, "b", true, "r1 down", &err), 0);
    assert_int_equal (controller_store_unavailable_set (store, "zz", true, "r9 down", &err), 0);
    assert_int_equal (controller_store_unavailable_set (store, "b", true, "again", &err), 0);
    assert_int_equal (controller_store_commit (store, &err), 0);
    json_t *names = controller_store_unavailable (store);
    s_assert_json (names, "{\"b\":\"r1 down\",\"zz\":\"r9 down\"}");
    json_decref (names);
    now = controller_store_state (store);
    s_assert_json (json_object_get (now, "unavailable"), "[\"b\"]");
    json_decref (now);
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_restore (store, v2, &err), 0); /* v2 has no node b */
    assert_int_equal (controller_store_commit (store, &err), 0);
    now = controller_store_state (store);
    s_assert_json (json_object_get (now, "unavailable"), "[]");
    json_decref (now);
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_restore (store, v1, &err), 0);
    assert_int_equal (controller_store_commit (store, &err), 0);
    now = controller_store_state (store);
    s_assert_json (json_object_get (now, "unavailable"), "[\"b\"]");
    json_decref (now);
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_unavailable_set (store, "b", false, "", &err), 0);
    assert_int_equal (controller_store_commit (store, &err), 0);
    names = controller_store_unavailable (store);
    s_assert_json (names, "{\"zz\":\"r9 down\"}");
    json_decref (names);

    json_decref (v1);
    json_decref (v2);
    controller_store_destroy (&store);
}

static void test_transactions (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_err_t err = {0};
    s_build_v1 (store);
    assert_int_equal (controller_store_version_new (store, "alice", "v1", &err), 1);
    json_t *before = controller_store_state (store);

    /* everything done inside begin / rollback disappears */
    assert_int_equal (controller_store_begin (store, &err), 0);
    int replaced;
    assert_int_equal (controller_store_node_add (store, "c", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_link_add (store, "b", "c", 1, "h2", &err), 0);
    assert_int_equal (controller_store_node_del (store, "a", &err), 0);
    json_t *p = s_json ("{\"id\":\"p9\",\"action\":\"deny\"}");
    assert_int_equal (controller_store_policy_add (store, p, &replaced, &err), 0);
    json_decref (p);
    assert_int_equal (controller_store_version_new (store, "mallory", "oops", &err), 2);
    controller_store_rollback (store);
    controller_store_rollback (store); /* harmless outside a transaction */

    json_t *after = controller_store_state (store);
    assert_true (json_equal (before, after));
    json_decref (after);
    assert_int_equal (controller_store_version_current (store), 1);
    assert_null (controller_store_version_state (store, 2));
    assert_int_equal (s_sql_int ("SELECT count(*) FROM config_versions"), 1);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM nodes WHERE name = 'c'"), 0);

    /* a committed transaction is visible to other connections */
    assert_int_equal (controller_store_begin (store, &err), 0);
    assert_int_equal (controller_store_node_add (store, "c", NULL, NULL, &err), 0);
    assert_int_equal (controller_store_commit (store, &err), 0);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM nodes WHERE name = 'c'"), 1);

    /* commit without begin fails with a message */
    memset (&err, 0, sizeof err);
    assert_int_equal (controller_store_commit (store, &err), -1);
    assert_non_null (err.code);
    s_assert_contains (err.text, s_path);

    json_decref (before);
    controller_store_destroy (&store);
}

static void test_audit (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    json_t *args = s_json ("{\"name\":\"relay-1\",\"site\":\"fra\"}");
    assert_int_equal (controller_store_audit (store, "admin", "node.add", args, "ok", NULL), 0);
    assert_int_equal (
        controller_store_audit (store, "admin", "node.add", args, "conflict", "exists already"), 0);
    assert_int_equal (controller_store_audit (store, "relay", "status", NULL, "forbidden", ""), 0);

    json_t *rows = controller_store_audit_list (store, 10);
    assert_int_equal (json_array_size (rows), 3);
    json_t *r0 = json_array_get (rows, 0), *r1 = json_array_get (rows, 1),
           *r2 = json_array_get (rows, 2);
    /* newest first */
    assert_true (json_integer_value (json_object_get (r0, "id")) >
                 json_integer_value (json_object_get (r1, "id")));
    assert_true (json_integer_value (json_object_get (r1, "id")) >
                 json_integer_value (json_object_get (r2, "id")));
    assert_string_equal (json_string_value (json_object_get (r0, "who")), "relay");
    assert_string_equal (json_string_value (json_object_get (r0, "command")), "status");
    assert_string_equal (json_string_value (json_object_get (r0, "result")), "forbidden");
    s_assert_json (json_object_get (r0, "args"), "{}");
    assert_string_equal (json_string_value (json_object_get (r1, "result")), "conflict");
    assert_string_equal (json_string_value (json_object_get (r1, "detail")), "exists already");
    /* args come back as JSON, not text */
    assert_true (json_equal (json_object_get (r2, "args"), args));
    assert_null (json_object_get (r2, "args_json"));
    assert_string_equal (json_string_value (json_object_get (r2, "detail")), "");
    assert_true (json_integer_value (json_object_get (r2, "ts_ms")) > 0);
    json_decref (rows);

    rows = controller_store_audit_list (store, 2);
    assert_int_equal (json_array_size (rows), 2);
    assert_string_equal (json_string_value (json_object_get (json_array_get (rows, 1), "result")),
                         "conflict");
    json_decref (rows);
    json_decref (args);
    controller_store_destroy (&store);
    assert_int_equal (s_sql_int ("SELECT count(*) FROM audit"), 3);
}

static void test_instances (void **state)
{
    (void) state;
    controller_store_t *store = s_open ();
    controller_err_t err;
    json_t *list = controller_store_instances (store);
    assert_int_equal (json_array_size (list), 0);
    json_decref (list);

    controller_instance_row_t relay = {.kind = "relay",
                                       .instance = "relay-1",
                                       .host = "host-a",
                                       .build = "0.1.0",
                                       .state = "up",
                                       .pid = 100,
                                       .registered_ms = 900,
                                       .last_seen_ms = 1000,
                                       .node = "core"};
    controller_instance_row_t ingress = {.kind = "ingress",
                                         .instance = "in-1",
                                         .host = "host-b",
                                         .build = "0.1.0",
                                         .state = "up",
                                         .pid = 200,
                                         .registered_ms = 1100,
                                         .last_seen_ms = 1100};
    assert_int_equal (controller_store_instance_save (store, &relay, &err), 0);
    assert_int_equal (controller_store_instance_save (store, &ingress, &err), 0);
    list = controller_store_instances (store);
    s_assert_json (
        list, "[{\"kind\":\"ingress\",\"instance\":\"in-1\",\"host\":\"host-b\",\"pid\":200,"
              "\"build\":\"0.1.0\",\"registered_ms\":1100,\"state\":\"up\",\"last_seen_ms\":1100,"
              "\"applied_version\":0,\"rejected_version\":0,\"reject_reason\":\"\",\"node\":\"\"},"
              "{\"kind\":\"relay\",\"instance\":\"relay-1\",\"host\":\"host-a\",\"pid\":100,"
              "\"build\":\"0.1.0\",\"registered_ms\":900,\"state\":\"up\",\"last_seen_ms\":1000,"
              "\"applied_version\":0,\"rejected_version\":0,\"reject_reason\":\"\","
              "\"node\":\"core\"}]");
    json_decref (list);

    /* saving again replaces the row */
    relay.state = "down";
    relay.last_seen_ms = 5000;
    relay.applied = 3;
    relay.rejected = 4;
    relay.reason = "bad route";
    assert_int_equal (controller_store_instance_save (store, &relay, &err), 0);
    list = controller_store_instances (store);
    assert_int_equal (json_array_size (list), 2);
    s_assert_json (
        json_array_get (list, 1),
        "{\"kind\":\"relay\",\"instance\":\"relay-1\",\"host\":\"host-a\",\"pid\":100,"
        "\"build\":\"0.1.0\",\"registered_ms\":900,\"state\":\"down\",\"last_seen_ms\":5000,"
        "\"applied_version\":3,\"rejected_version\":4,\"reject_reason\":\"bad route\","
        "\"node\":\"core\"}");
    json_decref (list);
    /* a state outside up/down is refused by the database, and nothing changes */
    relay.state = "sideways";
    assert_int_equal (controller_store_instance_save (store, &relay, &err), -1);
    assert_non_null (strstr (err.text, "cannot save instance"));
    assert_int_equal (s_sql_int ("SELECT count(*) FROM instances WHERE state = 'down'"), 1);
    controller_store_destroy (&store);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_fresh_and_reopen, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_pragmas, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_newer_schema_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_nodes_and_links, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_policies, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_versions_and_restore, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_transactions, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_audit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_instances, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
