-- Francis store schema for PostgreSQL, version 1.
-- `{p}` stands for the table prefix (validated: lowercase letters, digits, underscores).
-- Times are Unix milliseconds (BIGINT); repeat intervals are exact nanoseconds (BIGINT).
-- Text keys use the "C" collation so ordering is by bytes, whatever the database's locale.

-- The store-wide placement epoch counter. A sequence is never rolled back, so an epoch is
-- never handed out twice, even when the claim that drew it fails.
CREATE SEQUENCE {p}epoch AS BIGINT MINVALUE 1 START WITH 1 NO CYCLE;

-- Registered hosts. A host is live while now - last_heartbeat_ms < ttl (ttl is an argument).
CREATE TABLE {p}hosts (
    host_id           TEXT COLLATE "C" PRIMARY KEY,
    address           TEXT COLLATE "C" NOT NULL,
    last_heartbeat_ms BIGINT NOT NULL
);
CREATE INDEX {p}hosts_by_address ON {p}hosts (address);

-- The actor types a host serves, in registration order, with an optional capacity.
CREATE TABLE {p}host_types (
    host_id    TEXT COLLATE "C" NOT NULL REFERENCES {p}hosts (host_id) ON DELETE CASCADE,
    actor_type TEXT COLLATE "C" NOT NULL,
    ord        BIGINT NOT NULL,
    max_active BIGINT,
    PRIMARY KEY (host_id, actor_type)
);

-- Where each active actor lives. Removing a host removes its placements.
CREATE TABLE {p}placements (
    actor_type TEXT COLLATE "C" NOT NULL,
    actor_id   TEXT COLLATE "C" NOT NULL,
    host_id    TEXT COLLATE "C" NOT NULL REFERENCES {p}hosts (host_id) ON DELETE CASCADE,
    epoch      BIGINT NOT NULL,
    PRIMARY KEY (actor_type, actor_id)
);
CREATE INDEX {p}placements_by_host_type ON {p}placements (host_id, actor_type);

-- Actor state documents (JSON bytes), with an optional expiry time.
CREATE TABLE {p}state (
    actor_type TEXT COLLATE "C" NOT NULL,
    actor_id   TEXT COLLATE "C" NOT NULL,
    data       BYTEA NOT NULL,
    expires_ms BIGINT,
    PRIMARY KEY (actor_type, actor_id)
);
CREATE INDEX {p}state_by_expiry ON {p}state (expires_ms) WHERE expires_ms IS NOT NULL;

-- Alarms, one row per (actor, name), with the lease of the host currently running them.
-- lease_id, lease_host and lease_expires_ms are all NULL or all set.
CREATE TABLE {p}alarms (
    actor_type       TEXT COLLATE "C" NOT NULL,
    actor_id         TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    due_ms           BIGINT NOT NULL,
    interval_ns      BIGINT,
    ttl_ms           BIGINT,
    data             BYTEA,
    attempts         BIGINT NOT NULL DEFAULT 0,
    lease_id         TEXT COLLATE "C",
    lease_host       TEXT COLLATE "C",
    lease_expires_ms BIGINT,
    PRIMARY KEY (actor_type, actor_id, name),
    CHECK ((lease_id IS NULL) = (lease_host IS NULL) AND (lease_id IS NULL) = (lease_expires_ms IS NULL))
);
CREATE INDEX {p}alarms_by_type_due ON {p}alarms (actor_type, due_ms);
CREATE INDEX {p}alarms_by_lease_host ON {p}alarms (lease_host) WHERE lease_host IS NOT NULL;
