/* controller_store: SQLite persistence of the controller. */
#include "controller_store.h"
#include "hms_alloc.h"
#include "hms_log.h"
#include "hms_msg.h"
#include "hms_time.h"

#include <czmq.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>

/* Generated from schemas/sql/ by cmake/embed.cmake. */
extern const char *const controller_sql_names[];
extern const unsigned char *const controller_sql_texts[];

struct controller_store {
    sqlite3 *db;
    char *path;
    char epoch[64];
};

static void s_err (controller_err_t *err, const char *code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
static void s_err (controller_err_t *err, const char *code, const char *fmt, ...)
{
    if (!err)
        return;
    err->code = code;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (err->text, sizeof err->text, fmt, ap);
    va_end (ap);
}

static void s_db_err (controller_store_t *self, controller_err_t *err, const char *what)
{
    s_err (err, HMS_ERR_INTERNAL, "database %s: %s: %s", self->path, what,
           sqlite3_errmsg (self->db));
}

/* Prepares sql and binds arguments described by fmt: 's' text, 'i' int64, 'n' null. */
static sqlite3_stmt *s_prepare (controller_store_t *self, const char *sql, const char *fmt, ...)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2 (self->db, sql, -1, &st, NULL) != SQLITE_OK) {
        hms_error ("database %s: cannot prepare \"%s\": %s", self->path, sql,
                   sqlite3_errmsg (self->db));
        return NULL;
    }
    va_list ap;
    va_start (ap, fmt);
    for (int i = 0; fmt && fmt[i]; i++) {
        if (fmt[i] == 's')
            sqlite3_bind_text (st, i + 1, va_arg (ap, const char *), -1, SQLITE_TRANSIENT);
        else if (fmt[i] == 'i')
            sqlite3_bind_int64 (st, i + 1, va_arg (ap, int64_t));
        else
            sqlite3_bind_null (st, i + 1);
    }
    va_end (ap);
    return st;
}

static int s_exec (controller_store_t *self, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec (self->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        hms_error ("database %s: %s", self->path, msg ? msg : "error");
        sqlite3_free (msg);
        return -1;
    }
    return 0;
}

static int64_t s_int_query (controller_store_t *self, const char *sql)
{
    sqlite3_stmt *st = s_prepare (self, sql, NULL);
    int64_t v = -1;
    if (st && sqlite3_step (st) == SQLITE_ROW)
        v = sqlite3_column_int64 (st, 0);
    sqlite3_finalize (st);
    return v;
}

int controller_store_latest_schema (void)
{
    int n = 0;
    while (controller_sql_names[n])
        n++;
    return n;
}

static int s_migrate (controller_store_t *self, controller_err_t *err)
{
    int have = (int) s_int_query (self, "PRAGMA user_version");
    int latest = controller_store_latest_schema ();
    if (have > latest) {
        s_err (err, HMS_ERR_INTERNAL,
               "database %s has schema version %d, newer than this controller knows (%d): run "
               "a newer controller or restore a backup",
               self->path, have, latest);
        return -1;
    }
    for (int i = have; i < latest; i++) {
        char *sql = hms_sprintf ("BEGIN IMMEDIATE; %s; PRAGMA user_version = %d; COMMIT;",
                                 (const char *) controller_sql_texts[i], i + 1);
        char *msg = NULL;
        int rc = sqlite3_exec (self->db, sql, NULL, NULL, &msg);
        free (sql);
        if (rc != SQLITE_OK) {
            s_err (err, HMS_ERR_INTERNAL, "database %s: migration %s failed: %s", self->path,
                   controller_sql_names[i], msg ? msg : "?");
            sqlite3_free (msg);
            s_exec (self, "ROLLBACK");
            return -1;
        }
        hms_info ("database migrated path=%s to=%d step=%s", self->path, i + 1,
                  controller_sql_names[i]);
    }
    return 0;
}

controller_store_t *controller_store_open (const char *path, controller_err_t *err)
{
    controller_store_t *self = hms_alloc (sizeof *self);
    self->path = hms_strdup (path);
    if (sqlite3_open_v2 (path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        s_err (err, HMS_ERR_INTERNAL,
               "cannot open database %s: %s (check the folder exists and is writable)", path,
               self->db ? sqlite3_errmsg (self->db) : "out of memory");
        controller_store_destroy (&self);
        return NULL;
    }
    sqlite3_busy_timeout (self->db, 5000);
    /* WAL with synchronous NORMAL: a commit is in the log file before it returns, so a
     * killed controller loses nothing; only a power cut can take the last commits. A disk
     * sync per admin write would stall the controller's loop (heartbeats) on a busy disk. */
    if (s_exec (self, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                      "PRAGMA foreign_keys = ON;")) {
        s_db_err (self, err, "cannot set WAL mode");
        controller_store_destroy (&self);
        return NULL;
    }
    if (s_migrate (self, err)) {
        controller_store_destroy (&self);
        return NULL;
    }
    sqlite3_stmt *st = s_prepare (self, "SELECT value FROM meta WHERE key = 'epoch'", NULL);
    if (st && sqlite3_step (st) == SQLITE_ROW)
        snprintf (self->epoch, sizeof self->epoch, "%s", sqlite3_column_text (st, 0));
    sqlite3_finalize (st);
    if (!self->epoch[0]) {
        zuuid_t *uuid = zuuid_new ();
        snprintf (self->epoch, sizeof self->epoch, "%s", zuuid_str_canonical (uuid));
        zuuid_destroy (&uuid);
        st =
            s_prepare (self, "INSERT INTO meta (key, value) VALUES ('epoch', ?)", "s", self->epoch);
        int rc = st ? sqlite3_step (st) : SQLITE_ERROR;
        sqlite3_finalize (st);
        if (rc != SQLITE_DONE) {
            s_db_err (self, err, "cannot store epoch");
            controller_store_destroy (&self);
            return NULL;
        }
    }
    return self;
}

void controller_store_destroy (controller_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    controller_store_t *self = *self_p;
    if (self->db)
        sqlite3_close_v2 (self->db);
    free (self->path);
    free (self);
    *self_p = NULL;
}

int controller_store_schema_version (controller_store_t *self)
{
    return (int) s_int_query (self, "PRAGMA user_version");
}

const char *controller_store_epoch (controller_store_t *self)
{
    return self->epoch;
}

int controller_store_begin (controller_store_t *self, controller_err_t *err)
{
    if (s_exec (self, "BEGIN IMMEDIATE")) {
        s_db_err (self, err, "cannot begin a transaction");
        return -1;
    }
    return 0;
}

int controller_store_commit (controller_store_t *self, controller_err_t *err)
{
    if (s_exec (self, "COMMIT")) {
        s_db_err (self, err, "cannot commit");
        controller_store_rollback (self);
        return -1;
    }
    return 0;
}

void controller_store_rollback (controller_store_t *self)
{
    if (!sqlite3_get_autocommit (self->db))
        s_exec (self, "ROLLBACK");
}

/* Runs a prepared write; maps constraint failures to conflict. */
static int s_write (controller_store_t *self, sqlite3_stmt *st, controller_err_t *err,
                    const char *what)
{
    if (!st) {
        s_db_err (self, err, what);
        return -1;
    }
    int rc = sqlite3_step (st);
    sqlite3_finalize (st);
    if (rc == SQLITE_DONE)
        return 0;
    int ext = sqlite3_extended_errcode (self->db);
    if (ext == SQLITE_CONSTRAINT_CHECK)
        s_err (err, HMS_ERR_INVALID, "%s: %s", what, sqlite3_errmsg (self->db));
    else if ((rc & 0xff) == SQLITE_CONSTRAINT)
        s_err (err, HMS_ERR_CONFLICT, "%s: %s", what, sqlite3_errmsg (self->db));
    else
        s_db_err (self, err, what);
    return -1;
}

static bool s_exists (controller_store_t *self, const char *sql, const char *a, const char *b)
{
    sqlite3_stmt *st = b ? s_prepare (self, sql, "ss", a, b) : s_prepare (self, sql, "s", a);
    bool found = st && sqlite3_step (st) == SQLITE_ROW;
    sqlite3_finalize (st);
    return found;
}

int controller_store_node_add (controller_store_t *self, const char *name, const char *address,
                               const char *site, controller_err_t *err)
{
    if (s_exists (self, "SELECT 1 FROM nodes WHERE name = ?", name, NULL)) {
        s_err (err, HMS_ERR_CONFLICT, "node '%s' exists already (delete it first to change it)",
               name);
        return -1;
    }
    return s_write (self,
                    s_prepare (self,
                               "INSERT INTO nodes (name, address, site, created_ms) VALUES "
                               "(?, ?, ?, ?)",
                               "sssi", name, address ? address : "", site ? site : "",
                               hms_wall_ms ()),
                    err, "cannot add node");
}

int controller_store_node_del (controller_store_t *self, const char *name, controller_err_t *err)
{
    if (!s_exists (self, "SELECT 1 FROM nodes WHERE name = ?", name, NULL)) {
        s_err (err, HMS_ERR_NOT_FOUND, "no node named '%s'", name);
        return -1;
    }
    return s_write (self, s_prepare (self, "DELETE FROM nodes WHERE name = ?", "s", name), err,
                    "cannot delete node");
}

int controller_store_link_add (controller_store_t *self, const char *from, const char *to,
                               int64_t cost, const char *transport, controller_err_t *err)
{
    const char *names[2] = {from, to};
    for (int i = 0; i < 2; i++)
        if (!s_exists (self, "SELECT 1 FROM nodes WHERE name = ?", names[i], NULL)) {
            s_err (err, HMS_ERR_NOT_FOUND, "no node named '%s' (add it with 'node add' first)",
                   names[i]);
            return -1;
        }
    if (strcmp (from, to) == 0) {
        s_err (err, HMS_ERR_INVALID, "a link needs two different nodes, got '%s' twice", from);
        return -1;
    }
    if (s_exists (self, "SELECT 1 FROM links WHERE from_node = ? AND to_node = ?", from, to)) {
        s_err (err, HMS_ERR_CONFLICT, "link %s -> %s exists already", from, to);
        return -1;
    }
    return s_write (self,
                    s_prepare (self,
                               "INSERT INTO links (from_node, to_node, cost, transport, "
                               "created_ms) VALUES (?, ?, ?, ?, ?)",
                               "ssisi", from, to, cost, transport, hms_wall_ms ()),
                    err, "cannot add link");
}

int controller_store_link_del (controller_store_t *self, const char *from, const char *to,
                               controller_err_t *err)
{
    if (!s_exists (self, "SELECT 1 FROM links WHERE from_node = ? AND to_node = ?", from, to)) {
        s_err (err, HMS_ERR_NOT_FOUND, "no link %s -> %s", from, to);
        return -1;
    }
    return s_write (
        self,
        s_prepare (self, "DELETE FROM links WHERE from_node = ? AND to_node = ?", "ss", from, to),
        err, "cannot delete link");
}

int controller_store_policy_add (controller_store_t *self, const json_t *doc, int *replaced,
                                 controller_err_t *err)
{
    const char *id = json_string_value (json_object_get (doc, "id"));
    json_t *prio = json_object_get (doc, "priority");
    int64_t priority = prio ? json_integer_value (prio) : 1000;
    *replaced = s_exists (self, "SELECT 1 FROM policies WHERE id = ?", id, NULL);
    char *text = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = s_write (self,
                      s_prepare (self,
                                 "INSERT INTO policies (id, priority, doc, created_ms) VALUES "
                                 "(?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                                 "priority = excluded.priority, doc = excluded.doc",
                                 "sisi", id, priority, text, hms_wall_ms ()),
                      err, "cannot store policy");
    free (text);
    return rc;
}

int controller_store_policy_del (controller_store_t *self, const char *id, controller_err_t *err)
{
    if (!s_exists (self, "SELECT 1 FROM policies WHERE id = ?", id, NULL)) {
        s_err (err, HMS_ERR_NOT_FOUND, "no policy with id '%s'", id);
        return -1;
    }
    return s_write (self, s_prepare (self, "DELETE FROM policies WHERE id = ?", "s", id), err,
                    "cannot delete policy");
}

/* Rows of a query as an array of objects; columns named by the query. A column whose name
 * ends in "_json" is parsed and stored without the suffix. */
static json_t *s_rows (controller_store_t *self, sqlite3_stmt *st)
{
    json_t *rows = json_array ();
    while (st && sqlite3_step (st) == SQLITE_ROW) {
        json_t *row = json_object ();
        for (int c = 0; c < sqlite3_column_count (st); c++) {
            const char *name = sqlite3_column_name (st, c);
            size_t n = strlen (name);
            json_t *v;
            if (sqlite3_column_type (st, c) == SQLITE_INTEGER)
                v = json_integer (sqlite3_column_int64 (st, c));
            else if (sqlite3_column_type (st, c) == SQLITE_NULL)
                v = json_null ();
            else if (n > 5 && strcmp (name + n - 5, "_json") == 0) {
                v = json_loads ((const char *) sqlite3_column_text (st, c), 0, NULL);
                if (!v)
                    v = json_null ();
                char key[128];
                snprintf (key, sizeof key, "%.*s", (int) (n - 5), name);
                json_object_set_new (row, key, v);
                continue;
            } else
                v = json_string ((const char *) sqlite3_column_text (st, c));
            json_object_set_new (row, name, v);
        }
        json_array_append_new (rows, row);
    }
    sqlite3_finalize (st);
    return rows;
}

json_t *controller_store_nodes (controller_store_t *self)
{
    return s_rows (self,
                   s_prepare (self, "SELECT name, address, site FROM nodes ORDER BY name", NULL));
}

json_t *controller_store_links (controller_store_t *self)
{
    return s_rows (self, s_prepare (self,
                                    "SELECT from_node AS \"from\", to_node AS \"to\", cost, "
                                    "transport FROM links ORDER BY from_node, to_node",
                                    NULL));
}

/* The values of one column of st's rows, as an array. */
static json_t *s_column (controller_store_t *self, sqlite3_stmt *st, const char *key)
{
    json_t *rows = s_rows (self, st);
    json_t *out = json_array ();
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row) json_array_append (out, json_object_get (row, key));
    json_decref (rows);
    return out;
}

json_t *controller_store_policies (controller_store_t *self)
{
    return s_column (
        self, s_prepare (self, "SELECT doc AS doc_json FROM policies ORDER BY priority, id", NULL),
        "doc");
}

json_t *controller_store_state (controller_store_t *self)
{
    /* unavailable: those of the nodes in the topology, sorted */
    json_t *unavailable = s_column (self,
                                    s_prepare (self,
                                               "SELECT name FROM unavailable_nodes WHERE name IN "
                                               "(SELECT name FROM nodes) ORDER BY name",
                                               NULL),
                                    "name");
    return json_pack ("{s:o, s:o, s:o, s:o}", "nodes", controller_store_nodes (self), "links",
                      controller_store_links (self), "policies", controller_store_policies (self),
                      "unavailable", unavailable);
}

json_t *controller_store_unavailable (controller_store_t *self)
{
    json_t *rows =
        s_rows (self, s_prepare (self, "SELECT name, reason FROM unavailable_nodes", NULL));
    json_t *why = json_object ();
    size_t i;
    json_t *row;
    json_array_foreach (rows, i, row) json_object_set (
        why, json_string_value (json_object_get (row, "name")), json_object_get (row, "reason"));
    json_decref (rows);
    return why;
}

int controller_store_unavailable_set (controller_store_t *self, const char *name, bool unavailable,
                                      const char *reason, controller_err_t *err)
{
    sqlite3_stmt *st =
        unavailable ? s_prepare (self,
                                 "INSERT OR IGNORE INTO unavailable_nodes (name, since_ms, reason) "
                                 "VALUES (?, ?, ?)",
                                 "sis", name, hms_wall_ms (), reason)
                    : s_prepare (self, "DELETE FROM unavailable_nodes WHERE name = ?", "s", name);
    return s_write (self, st, err, "cannot record node availability");
}

int controller_store_restore (controller_store_t *self, const json_t *state, controller_err_t *err)
{
    if (s_exec (self, "DELETE FROM links; DELETE FROM nodes; DELETE FROM policies;")) {
        s_db_err (self, err, "cannot clear state for restore");
        return -1;
    }
    size_t i;
    json_t *v;
    int replaced;
    json_array_foreach (json_object_get (state, "nodes"), i, v)
    {
        if (controller_store_node_add (self, json_string_value (json_object_get (v, "name")),
                                       json_string_value (json_object_get (v, "address")),
                                       json_string_value (json_object_get (v, "site")), err))
            return -1;
    }
    json_array_foreach (json_object_get (state, "links"), i, v)
    {
        if (controller_store_link_add (self, json_string_value (json_object_get (v, "from")),
                                       json_string_value (json_object_get (v, "to")),
                                       json_integer_value (json_object_get (v, "cost")),
                                       json_string_value (json_object_get (v, "transport")), err))
            return -1;
    }
    json_array_foreach (json_object_get (state, "policies"), i, v)
    {
        if (controller_store_policy_add (self, v, &replaced, err))
            return -1;
    }
    return 0;
}

int64_t controller_store_version_current (controller_store_t *self)
{
    int64_t v = s_int_query (self, "SELECT COALESCE(MAX(version), 0) FROM config_versions");
    return v < 0 ? 0 : v;
}

int64_t controller_store_version_new (controller_store_t *self, const char *author,
                                      const char *reason, controller_err_t *err)
{
    int64_t version = controller_store_version_current (self) + 1;
    json_t *state = controller_store_state (self);
    char *text = json_dumps (state, JSON_COMPACT);
    json_decref (state);
    int rc = s_write (self,
                      s_prepare (self,
                                 "INSERT INTO config_versions (version, created_ms, author, "
                                 "reason, state) VALUES (?, ?, ?, ?, ?)",
                                 "iisss", version, hms_wall_ms (), author, reason, text),
                      err, "cannot record config version");
    free (text);
    return rc ? -1 : version;
}

json_t *controller_store_version_state (controller_store_t *self, int64_t version)
{
    sqlite3_stmt *st =
        s_prepare (self, "SELECT state FROM config_versions WHERE version = ?", "i", version);
    json_t *state = NULL;
    if (st && sqlite3_step (st) == SQLITE_ROW)
        state = json_loads ((const char *) sqlite3_column_text (st, 0), 0, NULL);
    sqlite3_finalize (st);
    return state;
}

json_t *controller_store_version_history (controller_store_t *self, int limit)
{
    return s_rows (self, s_prepare (self,
                                    "SELECT version, created_ms, author, reason FROM "
                                    "config_versions ORDER BY version DESC LIMIT ?",
                                    "i", (int64_t) limit));
}

int controller_store_audit (controller_store_t *self, const char *who, const char *command,
                            const json_t *args, const char *result, const char *detail)
{
    char *text = args ? json_dumps (args, JSON_COMPACT | JSON_SORT_KEYS) : hms_strdup ("{}");
    controller_err_t err;
    int rc = s_write (self,
                      s_prepare (self,
                                 "INSERT INTO audit (ts_ms, who, command, args, result, detail) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 "isssss", hms_wall_ms (), who, command, text ? text : "{}", result,
                                 detail ? detail : ""),
                      &err, "cannot write audit row");
    if (rc)
        hms_error ("%s", err.text);
    free (text);
    return rc;
}

json_t *controller_store_audit_list (controller_store_t *self, int limit)
{
    return s_rows (self, s_prepare (self,
                                    "SELECT id, ts_ms, who, command, args AS args_json, result, "
                                    "detail FROM audit ORDER BY id DESC LIMIT ?",
                                    "i", (int64_t) limit));
}

int controller_store_instance_save (controller_store_t *self, const controller_instance_row_t *r,
                                    controller_err_t *err)
{
    return s_write (
        self,
        s_prepare (self,
                   "INSERT OR REPLACE INTO instances (kind, instance, host, pid, "
                   "build, registered_ms, last_seen_ms, state, applied_version, "
                   "rejected_version, reject_reason, node) VALUES (?, ?, ?, ?, ?, ?, ?, "
                   "?, ?, ?, ?, ?)",
                   "sssisiisiiss", r->kind, r->instance, r->host ? r->host : "", r->pid,
                   r->build ? r->build : "", r->registered_ms, r->last_seen_ms, r->state,
                   r->applied, r->rejected, r->reason ? r->reason : "", r->node ? r->node : ""),
        err, "cannot save instance");
}

json_t *controller_store_instances (controller_store_t *self)
{
    return s_rows (self, s_prepare (self,
                                    "SELECT kind, instance, host, pid, build, registered_ms, "
                                    "state, "
                                    "last_seen_ms, applied_version, rejected_version, "
                                    "reject_reason, node FROM instances ORDER BY kind, instance",
                                    NULL));
}
