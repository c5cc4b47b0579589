-- A lease reads the earliest leasable alarms of a type in due order and passes over those
-- leased elsewhere without leaving the index: the lease expiry is part of it.
DROP INDEX alarms_by_type_due;
CREATE INDEX alarms_by_type_due_key ON alarms (actor_type, due_ms, actor_id, name, lease_expires_ms);
