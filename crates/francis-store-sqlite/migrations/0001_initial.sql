-- Francis store schema, version 1.
-- Times are Unix milliseconds (INTEGER); repeat intervals are exact nanoseconds (INTEGER).

-- Store-wide counters. `epoch` is the placement epoch counter: incremented for every new
-- placement and never decremented, so epochs are never reused even though placement rows
-- are deleted on release.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, value) VALUES ('epoch', 0);

-- Registered hosts. A host is live while now - last_heartbeat_ms < ttl (ttl is an argument).
CREATE TABLE hosts (
    host_id           TEXT PRIMARY KEY,
    address           TEXT NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX hosts_by_address ON hosts (address);

-- The actor types a host serves, in registration order, with an optional capacity.
CREATE TABLE host_types (
    host_id    TEXT NOT NULL REFERENCES hosts (host_id) ON DELETE CASCADE,
    actor_type TEXT NOT NULL,
    ord        INTEGER NOT NULL,
    max_active INTEGER,
    PRIMARY KEY (host_id, actor_type)
) STRICT, WITHOUT ROWID;

-- Where each active actor lives. Removing a host removes its placements.
CREATE TABLE placements (
    actor_type TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    host_id    TEXT NOT NULL REFERENCES hosts (host_id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    PRIMARY KEY (actor_type, actor_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX placements_by_host_type ON placements (host_id, actor_type);

-- Actor state documents (JSON bytes), with an optional expiry time.
CREATE TABLE state (
    actor_type TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    data       BLOB NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (actor_type, actor_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX state_by_expiry ON state (expires_ms) WHERE expires_ms IS NOT NULL;

-- Alarms, one row per (actor, name), with the lease of the host currently running them.
-- lease_id, lease_host and lease_expires_ms are all NULL or all set.
CREATE TABLE alarms (
    actor_type       TEXT NOT NULL,
    actor_id         TEXT NOT NULL,
    name             TEXT NOT NULL,
    due_ms           INTEGER NOT NULL,
    interval_ns      INTEGER,
    ttl_ms           INTEGER,
    data             BLOB,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_id         TEXT,
    lease_host       TEXT,
    lease_expires_ms INTEGER,
    PRIMARY KEY (actor_type, actor_id, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX alarms_by_type_due ON alarms (actor_type, due_ms);
CREATE INDEX alarms_by_lease_host ON alarms (lease_host) WHERE lease_host IS NOT NULL;
