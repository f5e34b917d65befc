-- Controller database, version 2: which topology node each service instance serves, and
-- the nodes that routes avoid because no relay of theirs is up. Applied when
-- PRAGMA user_version < 2.
ALTER TABLE instances ADD COLUMN node TEXT NOT NULL DEFAULT '';

-- Written by the controller alone (never by an admin command, never by a rollback): a node
-- whose every known relay instance is down or draining. Every config version's state lists
-- the ones that are in the topology, and routes go around them.
CREATE TABLE unavailable_nodes (
    name     TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL,
    reason   TEXT NOT NULL
);
