/* controller_store: the controller's SQLite database (WAL, foreign keys, migrations by
 * user_version from schemas/sql/): topology, policies, config versions with their source
 * state, service instances and the audit log. Single-threaded: the controller's loop. */
#ifndef CONTROLLER_STORE_H_INCLUDED
#define CONTROLLER_STORE_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* What went wrong: code is one of HMS_ERR_* (hms_msg.h), text says what and where. */
typedef struct {
    const char *code;
    char text[1024];
} controller_err_t;

typedef struct controller_store controller_store_t;

/* Opens (creating if needed) and migrates the database at path. Caller owns return value;
 * NULL with err. */
controller_store_t *controller_store_open (const char *path, controller_err_t *err);
void controller_store_destroy (controller_store_t **self_p);

/* PRAGMA user_version after migration, and the number of migrations shipped. */
int controller_store_schema_version (controller_store_t *self);
int controller_store_latest_schema (void);
/* Random id of this database, fixed at creation; services use it to notice a new DB. */
const char *controller_store_epoch (controller_store_t *self);

/* Transactions around a group of writes. commit/rollback return 0 / -1. */
int controller_store_begin (controller_store_t *self, controller_err_t *err);
int controller_store_commit (controller_store_t *self, controller_err_t *err);
void controller_store_rollback (controller_store_t *self);

/* Topology and policies. Each returns 0, or -1 with err (not_found, conflict, invalid). */
int controller_store_node_add (controller_store_t *self, const char *name, const char *address,
                               const char *site, controller_err_t *err);
int controller_store_node_del (controller_store_t *self, const char *name, controller_err_t *err);
int controller_store_link_add (controller_store_t *self, const char *from, const char *to,
                               int64_t cost, const char *transport, controller_err_t *err);
int controller_store_link_del (controller_store_t *self, const char *from, const char *to,
                               controller_err_t *err);
/* Adds or replaces the policy with doc's id; *replaced says which. */
int controller_store_policy_add (controller_store_t *self, const json_t *doc, int *replaced,
                                 controller_err_t *err);
int controller_store_policy_del (controller_store_t *self, const char *id, controller_err_t *err);

/* The current source state {"nodes":[…], "links":[…], "policies":[…], "unavailable":[…]}
 * (unavailable: the names of those nodes of the topology that routes avoid). Caller owns. */
json_t *controller_store_state (controller_store_t *self);
/* The nodes that routes avoid (no relay of theirs is up), in the topology or not, as
 * {name: why}. Caller owns. */
json_t *controller_store_unavailable (controller_store_t *self);
/* Marks name unavailable (with why) or available again. Only the controller's health
 * tracking writes these; rollback leaves them. */
int controller_store_unavailable_set (controller_store_t *self, const char *name, bool unavailable,
                                      const char *reason, controller_err_t *err);
/* Replaces topology and policies with state (for rollback); node availability stays. */
int controller_store_restore (controller_store_t *self, const json_t *state, controller_err_t *err);

/* Records the current state as a new config version; returns it, or -1. */
int64_t controller_store_version_new (controller_store_t *self, const char *author,
                                      const char *reason, controller_err_t *err);
int64_t controller_store_version_current (controller_store_t *self);
/* The source state of version, or NULL if there is none. Caller owns. */
json_t *controller_store_version_state (controller_store_t *self, int64_t version);
/* [{version, created_ms, author, reason}] newest first. Caller owns. */
json_t *controller_store_version_history (controller_store_t *self, int limit);

/* Audit log. args is borrowed. */
int controller_store_audit (controller_store_t *self, const char *who, const char *command,
                            const json_t *args, const char *result, const char *detail);
/* [{id, ts_ms, who, command, args, result, detail}] newest first. Caller owns. */
json_t *controller_store_audit_list (controller_store_t *self, int limit);

/* Service instances: soft state that registration rebuilds, saved in batches. */
typedef struct {
    const char *kind, *instance, *host, *build, *state, *reason;
    const char *node; /* the topology node it serves, or "" */
    int64_t pid, registered_ms, last_seen_ms, applied, rejected;
} controller_instance_row_t;

/* Inserts or replaces one instance row. 0 or -1 with err. */
int controller_store_instance_save (controller_store_t *self, const controller_instance_row_t *row,
                                    controller_err_t *err);
/* [{kind, instance, host, pid, build, registered_ms, state, last_seen_ms, applied_version,
 *   rejected_version, reject_reason, node}]. Caller owns. */
json_t *controller_store_instances (controller_store_t *self);

/* Lists for the admin client. Caller owns. */
json_t *controller_store_nodes (controller_store_t *self);
json_t *controller_store_links (controller_store_t *self);
json_t *controller_store_policies (controller_store_t *self);

#endif
