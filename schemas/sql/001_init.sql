-- Controller database, version 1: topology, policies, config versions, service instances,
-- audit log. Applied by the controller when PRAGMA user_version < 1.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE nodes (
    name       TEXT PRIMARY KEY,
    address    TEXT NOT NULL DEFAULT '',
    site       TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL
);

CREATE TABLE links (
    from_node  TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    to_node    TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    cost       INTEGER NOT NULL DEFAULT 1 CHECK (cost >= 1),
    transport  TEXT NOT NULL DEFAULT 'h2' CHECK (transport IN ('h2', 'h3')),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (from_node, to_node),
    CHECK (from_node <> to_node)
);

CREATE TABLE policies (
    id         TEXT PRIMARY KEY,
    priority   INTEGER NOT NULL DEFAULT 1000,
    doc        TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

-- Every config version with the full source state (topology + policies) it was built from,
-- so that any version can be shown again or restored by rollback.
CREATE TABLE config_versions (
    version    INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    author     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    state      TEXT NOT NULL
);

CREATE TABLE instances (
    kind             TEXT NOT NULL,
    instance         TEXT NOT NULL,
    host             TEXT NOT NULL DEFAULT '',
    pid              INTEGER NOT NULL DEFAULT 0,
    build            TEXT NOT NULL DEFAULT '',
    registered_ms    INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'down' CHECK (state IN ('up', 'down')),
    applied_version  INTEGER NOT NULL DEFAULT 0,
    rejected_version INTEGER NOT NULL DEFAULT 0,
    reject_reason    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, instance)
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms   INTEGER NOT NULL,
    who     TEXT NOT NULL,
    command TEXT NOT NULL,
    args    TEXT NOT NULL,
    result  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
