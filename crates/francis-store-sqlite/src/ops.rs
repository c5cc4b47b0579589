//! The SQL of every provider operation, and [`run`], the SQLite executor of an [`Op`].
//! Writes run on the writer's connection (inside its batch transaction and a savepoint);
//! reads on any connection.

use std::collections::HashSet;
use std::time::Duration;

use francis_core::{ActorRef, AlarmProperties};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::claim::{ClaimArgs, claim_many};
use crate::error::Result;
use francis_store::StoreError;
use francis_store::codec::{
    AlarmRow, HostRow, actor_from_row, capacity_to_sql, count_from_sql, epoch_from_sql,
    epoch_to_sql, hosts_from_rows, leases_in_rows, page_from_rows, time_from_ms,
};
use francis_store::policy::{self, add_millis, duration_millis, live_cutoff, millis};
use francis_store::{
    AlarmCompletion, AlarmLease, AlarmOutcome, Fence, HostRecord, HostRegistration, LeaseRequest,
    LeasedAlarm, Placement, StateListPage, StateRecord,
};
use francis_store::{Op, Reply};

// ---------------------------------------------------------------------------------------------
// conversions

// ---------------------------------------------------------------------------------------------
// fencing

/// Refuses the write unless the actor's current placement has exactly the presented epoch.
async fn check_fence(c: &mut SqliteConnection, actor: &ActorRef, fence: Fence) -> Result<()> {
    let Fence::Epoch(epoch) = fence else {
        return Ok(());
    };
    let current: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM placements WHERE actor_type = ?1 AND actor_id = ?2")
            .bind(actor.actor_type())
            .bind(actor.actor_id())
            .fetch_optional(&mut *c)
            .await?;
    match (current, epoch_to_sql(epoch)) {
        (Some(cur), Some(e)) if cur == e => Ok(()),
        _ => Err(StoreError::Fenced {
            actor: actor.clone(),
            epoch,
        }
        .into()),
    }
}

// ---------------------------------------------------------------------------------------------
// hosts

/// Refuses registrations the store cannot represent faithfully.
async fn remove_host(c: &mut SqliteConnection, host_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE alarms SET lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
         WHERE lease_host = ?1",
    )
    .bind(host_id)
    .execute(&mut *c)
    .await?;
    // placements and host_types go with it (ON DELETE CASCADE)
    sqlx::query("DELETE FROM hosts WHERE host_id = ?1")
        .bind(host_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(crate) async fn register_host(
    c: &mut SqliteConnection,
    reg: HostRegistration,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<()> {
    let others: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host_id, last_heartbeat_ms FROM hosts
         WHERE address = ?1 AND host_id <> ?2 ORDER BY host_id",
    )
    .bind(&reg.address)
    .bind(&reg.host_id)
    .fetch_all(&mut *c)
    .await?;
    if let Some((live, _)) = others
        .iter()
        .find(|(_, hb)| policy::is_live(*hb, now_ms, ttl_ms))
    {
        return Err(StoreError::AddressInUse {
            address: reg.address,
            host_id: live.clone(),
        }
        .into());
    }
    for (dead, _) in &others {
        remove_host(c, dead).await?;
    }
    sqlx::query(
        "INSERT INTO hosts (host_id, address, last_heartbeat_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (host_id) DO UPDATE SET
             address = excluded.address,
             last_heartbeat_ms = MAX(last_heartbeat_ms, excluded.last_heartbeat_ms)",
    )
    .bind(&reg.host_id)
    .bind(&reg.address)
    .bind(now_ms)
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM host_types WHERE host_id = ?1")
        .bind(&reg.host_id)
        .execute(&mut *c)
        .await?;
    for (ord, t) in reg.actor_types.iter().enumerate() {
        sqlx::query(
            "INSERT INTO host_types (host_id, actor_type, ord, max_active) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&reg.host_id)
        .bind(&t.actor_type)
        .bind(ord as i64)
        .bind(capacity_to_sql(t.max_active))
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub(crate) async fn heartbeat(
    c: &mut SqliteConnection,
    host_id: String,
    now_ms: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE hosts SET last_heartbeat_ms = MAX(last_heartbeat_ms, ?2) WHERE host_id = ?1",
    )
    .bind(&host_id)
    .bind(now_ms)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::HostNotFound(host_id).into());
    }
    Ok(())
}

pub(crate) async fn unregister_host(c: &mut SqliteConnection, host_id: String) -> Result<()> {
    remove_host(c, &host_id).await
}

pub(crate) async fn live_hosts(
    c: &mut SqliteConnection,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Vec<HostRecord>> {
    let rows: Vec<HostRow> = sqlx::query_as(
        "SELECT h.host_id, h.address, h.last_heartbeat_ms, t.actor_type, t.max_active
         FROM hosts h LEFT JOIN host_types t ON t.host_id = h.host_id
         WHERE h.last_heartbeat_ms > ?1
         ORDER BY h.host_id, t.ord",
    )
    .bind(live_cutoff(now_ms, ttl_ms))
    .fetch_all(&mut *c)
    .await?;
    Ok(hosts_from_rows(rows)?)
}

// ---------------------------------------------------------------------------------------------
// placement

pub(crate) async fn lookup(
    c: &mut SqliteConnection,
    actor: &ActorRef,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Placement>> {
    let row: Option<(String, i64, String)> = sqlx::query_as(
        "SELECT p.host_id, p.epoch, h.address
         FROM placements p JOIN hosts h ON h.host_id = p.host_id
         WHERE p.actor_type = ?1 AND p.actor_id = ?2 AND h.last_heartbeat_ms > ?3",
    )
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(live_cutoff(now_ms, ttl_ms))
    .fetch_optional(&mut *c)
    .await?;
    row.map(|(host_id, epoch, address)| {
        Ok(Placement {
            actor: actor.clone(),
            host_id,
            address,
            epoch: epoch_from_sql(epoch)?,
        })
    })
    .transpose()
}

pub(crate) async fn release(
    c: &mut SqliteConnection,
    actor: ActorRef,
    host_id: String,
    epoch: u64,
) -> Result<bool> {
    let Some(epoch) = epoch_to_sql(epoch) else {
        return Ok(false);
    };
    let done = sqlx::query(
        "DELETE FROM placements
         WHERE actor_type = ?1 AND actor_id = ?2 AND host_id = ?3 AND epoch = ?4",
    )
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(&host_id)
    .bind(epoch)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn count_placements(
    c: &mut SqliteConnection,
    host_id: &str,
    actor_type: &str,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM placements WHERE host_id = ?1 AND actor_type = ?2",
    )
    .bind(host_id)
    .bind(actor_type)
    .fetch_one(&mut *c)
    .await?;
    Ok(count_from_sql(n))
}

// ---------------------------------------------------------------------------------------------
// state

pub(crate) async fn get_state(
    c: &mut SqliteConnection,
    actor: &ActorRef,
    now_ms: i64,
) -> Result<Option<StateRecord>> {
    let row: Option<(Vec<u8>, Option<i64>)> = sqlx::query_as(
        "SELECT data, expires_ms FROM state
         WHERE actor_type = ?1 AND actor_id = ?2 AND (expires_ms IS NULL OR expires_ms > ?3)",
    )
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(now_ms)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|(data, expires)| {
        Ok(StateRecord {
            data,
            expires_at: expires
                .map(|ms| time_from_ms("state expiry", ms))
                .transpose()?,
        })
    })
    .transpose()
}

pub(crate) async fn set_state(
    c: &mut SqliteConnection,
    actor: ActorRef,
    data: Vec<u8>,
    expires_ms: Option<i64>,
    fence: Fence,
) -> Result<()> {
    // One statement, fence included: the hottest write makes one round trip to SQLite.
    let (sql, epoch) = match fence {
        Fence::Unfenced => (
            "INSERT INTO state (actor_type, actor_id, data, expires_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (actor_type, actor_id) DO UPDATE SET
                 data = excluded.data, expires_ms = excluded.expires_ms",
            None,
        ),
        Fence::Epoch(epoch) => match epoch_to_sql(epoch) {
            Some(e) => (
                "INSERT INTO state (actor_type, actor_id, data, expires_ms)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (
                     SELECT 1 FROM placements
                     WHERE actor_type = ?1 AND actor_id = ?2 AND epoch = ?5)
                 ON CONFLICT (actor_type, actor_id) DO UPDATE SET
                     data = excluded.data, expires_ms = excluded.expires_ms",
                Some(e),
            ),
            None => return Err(StoreError::Fenced { actor, epoch }.into()),
        },
    };
    let mut query = sqlx::query(sql)
        .bind(actor.actor_type())
        .bind(actor.actor_id())
        .bind(data)
        .bind(expires_ms);
    if let Some(e) = epoch {
        query = query.bind(e);
    }
    let done = query.execute(&mut *c).await?;
    if done.rows_affected() == 0 {
        // Only the fenced form can insert nothing: the placement's epoch is not this one.
        if let Fence::Epoch(epoch) = fence {
            return Err(StoreError::Fenced { actor, epoch }.into());
        }
    }
    Ok(())
}

pub(crate) async fn delete_state(
    c: &mut SqliteConnection,
    actor: ActorRef,
    fence: Fence,
) -> Result<bool> {
    check_fence(c, &actor, fence).await?;
    let done = sqlx::query("DELETE FROM state WHERE actor_type = ?1 AND actor_id = ?2")
        .bind(actor.actor_type())
        .bind(actor.actor_id())
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn list_states(
    c: &mut SqliteConnection,
    actor_type: &str,
    after: Option<&str>,
    limit: u32,
    include_data: bool,
    now_ms: i64,
) -> Result<StateListPage> {
    // One row more than asked tells whether another page follows. Actor ids are never empty,
    // so "after the empty string" is "from the start".
    let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT actor_id, CASE WHEN ?5 THEN data ELSE NULL END FROM state
         WHERE actor_type = ?1 AND actor_id > ?2
           AND (expires_ms IS NULL OR expires_ms > ?3)
         ORDER BY actor_id LIMIT ?4",
    )
    .bind(actor_type)
    .bind(after.unwrap_or(""))
    .bind(now_ms)
    .bind(i64::from(limit) + 1)
    .bind(include_data)
    .fetch_all(&mut *c)
    .await?;
    Ok(page_from_rows(rows, limit))
}

pub(crate) async fn delete_expired_state(c: &mut SqliteConnection, now_ms: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM state WHERE expires_ms IS NOT NULL AND expires_ms <= ?1")
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected())
}

// ---------------------------------------------------------------------------------------------
// alarms

/// An alarm's four columns, starting at column `first`.
fn alarm_row(row: &SqliteRow, first: usize) -> Result<AlarmRow> {
    Ok(AlarmRow {
        due_ms: row.try_get(first)?,
        interval_ns: row.try_get(first + 1)?,
        ttl_ms: row.try_get(first + 2)?,
        data: row.try_get(first + 3)?,
    })
}

pub(crate) async fn set_alarm(
    c: &mut SqliteConnection,
    actor: ActorRef,
    name: String,
    alarm: AlarmRow,
    fence: Fence,
) -> Result<()> {
    check_fence(c, &actor, fence).await?;
    sqlx::query(
        "INSERT INTO alarms (actor_type, actor_id, name, due_ms, interval_ns, ttl_ms, data,
                             attempts, lease_id, lease_host, lease_expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, NULL, NULL, NULL)
         ON CONFLICT (actor_type, actor_id, name) DO UPDATE SET
             due_ms = excluded.due_ms, interval_ns = excluded.interval_ns,
             ttl_ms = excluded.ttl_ms, data = excluded.data, attempts = 0,
             lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL",
    )
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(&name)
    .bind(alarm.due_ms)
    .bind(alarm.interval_ns)
    .bind(alarm.ttl_ms)
    .bind(alarm.data)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn get_alarm(
    c: &mut SqliteConnection,
    actor: &ActorRef,
    name: &str,
) -> Result<Option<AlarmProperties>> {
    let row = sqlx::query(
        "SELECT due_ms, interval_ns, ttl_ms, data FROM alarms
         WHERE actor_type = ?1 AND actor_id = ?2 AND name = ?3",
    )
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(name)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| Ok(alarm_row(&r, 0)?.into_properties()?))
        .transpose()
}

pub(crate) async fn delete_alarm(
    c: &mut SqliteConnection,
    actor: ActorRef,
    name: String,
    fence: Fence,
) -> Result<bool> {
    check_fence(c, &actor, fence).await?;
    let done =
        sqlx::query("DELETE FROM alarms WHERE actor_type = ?1 AND actor_id = ?2 AND name = ?3")
            .bind(actor.actor_type())
            .bind(actor.actor_id())
            .bind(&name)
            .execute(&mut *c)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// One candidate of a lease: its key, due time, and whether its actor is placed on the
/// leasing host.
struct Candidate {
    actor_type: String,
    actor_id: String,
    name: String,
    due_ms: i64,
    here: bool,
}

/// One pick per actor type and one update of every picked row, whatever the backlog: each
/// pick reads at most [`policy::lease_candidates`] keys in due order from the
/// `alarms_by_type_due_key` index (which also holds the lease expiry, so alarms leased
/// elsewhere are passed over inside the index), and never sorts the backlog.
pub(crate) async fn lease_alarms(
    c: &mut SqliteConnection,
    request: LeaseRequest,
    now_ms: i64,
) -> Result<Vec<LeasedAlarm>> {
    if request.actor_types.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    let expires_ms = add_millis(now_ms, request.lease_duration);
    // `policy::check_op` refused a lease that would expire past representable time.
    let lease_expires_at = time_from_ms("lease expiry", expires_ms)?;
    let window = policy::lease_candidates(request.limit);
    let mut candidates = Vec::new();
    // Each type once: a type listed twice must not take two shares of the candidates.
    let types: std::collections::BTreeSet<&String> = request.actor_types.iter().collect();
    for actor_type in types {
        let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
            // A lease id is only ever set together with its expiry, so an unleased alarm has
            // no expiry.
            "SELECT w.actor_id, w.name, w.due_ms, COALESCE(p.host_id = ?4, 0)
             FROM (SELECT actor_id, name, due_ms FROM alarms
                   WHERE actor_type = ?1 AND due_ms <= ?2
                     AND (lease_expires_ms IS NULL OR lease_expires_ms <= ?3)
                   ORDER BY due_ms, actor_id, name
                   LIMIT ?5) w
             LEFT JOIN placements p ON p.actor_type = ?1 AND p.actor_id = w.actor_id",
        )
        .bind(actor_type)
        .bind(millis(request.horizon))
        .bind(now_ms)
        .bind(&request.host_id)
        .bind(i64::from(window))
        .fetch_all(&mut *c)
        .await?;
        candidates.extend(
            rows.into_iter()
                .map(|(actor_id, name, due_ms, here)| Candidate {
                    actor_type: (*actor_type).clone(),
                    actor_id,
                    name,
                    due_ms,
                    here,
                }),
        );
    }
    // The earliest of every type's earliest, then those of actors placed here first.
    let key = |c: &Candidate| {
        (
            c.due_ms,
            c.actor_type.clone(),
            c.actor_id.clone(),
            c.name.clone(),
        )
    };
    candidates.sort_by_cached_key(key);
    candidates.truncate(window as usize);
    candidates.sort_by_key(|c| !c.here);
    candidates.truncate(request.limit as usize);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<[&str; 3]> = candidates
        .iter()
        .map(|c| [c.actor_type.as_str(), c.actor_id.as_str(), c.name.as_str()])
        .collect();
    let rows = sqlx::query(
        // `IN (SELECT ..)`, not `UPDATE .. FROM`: SQLite evaluates the list once and looks
        // each key up by the primary key, where a join may rescan the JSON per row.
        "UPDATE alarms SET lease_id = ?2, lease_host = ?3, lease_expires_ms = ?4
         WHERE (actor_type, actor_id, name) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1))
         RETURNING actor_type, actor_id, name, attempts, due_ms, interval_ns, ttl_ms, data",
    )
    .bind(json_keys(&keys)?)
    .bind(&request.lease_id)
    .bind(&request.host_id)
    .bind(expires_ms)
    .fetch_all(&mut *c)
    .await?;
    let mut leased = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let actor_type: String = row.try_get(0)?;
        let actor_id: String = row.try_get(1)?;
        let name: String = row.try_get(2)?;
        let attempts: i64 = row.try_get(3)?;
        let properties = alarm_row(&row, 4)?.into_properties()?;
        leased.insert(
            (actor_type.clone(), actor_id.clone(), name.clone()),
            LeasedAlarm {
                lease: AlarmLease {
                    actor: actor_from_row(actor_type, actor_id)?,
                    name,
                    lease_id: request.lease_id.clone(),
                },
                properties,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                lease_expires_at,
            },
        );
    }
    // In the order chosen (the update returns rows in no particular order). The picks and the
    // update run in one transaction, so every candidate is there.
    Ok(candidates
        .into_iter()
        .filter_map(|c| leased.remove(&(c.actor_type, c.actor_id, c.name)))
        .collect())
}

/// The leases' keys `[type, id, name, lease id]`, as `json_keys` writes them.
fn lease_keys<'a>(leases: impl IntoIterator<Item = &'a AlarmLease>) -> Result<String> {
    let keys: Vec<[&str; 4]> = leases
        .into_iter()
        .map(|l| {
            [
                l.actor.actor_type(),
                l.actor.actor_id(),
                l.name.as_str(),
                l.lease_id.as_str(),
            ]
        })
        .collect();
    json_keys(&keys)
}

/// The rows' keys as the JSON array of arrays the statements read with `json_each`.
fn json_keys(keys: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(keys)
        .map_err(|e| StoreError::Corrupt(format!("alarm keys as JSON: {e}")).into())
}

/// One statement over all the leases.
pub(crate) async fn renew_alarm_leases(
    c: &mut SqliteConnection,
    host_id: String,
    leases: Vec<AlarmLease>,
    now_ms: i64,
    lease_duration: Duration,
) -> Result<Vec<AlarmLease>> {
    if leases.is_empty() {
        return Ok(leases);
    }
    let expires_ms = add_millis(now_ms, lease_duration);
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        // See `lease_alarms` for why `IN (SELECT ..)`.
        "UPDATE alarms SET lease_expires_ms = ?3
         WHERE lease_host = ?2
           AND (actor_type, actor_id, name, lease_id) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1))
         RETURNING actor_type, actor_id, name, lease_id",
    )
    .bind(lease_keys(&leases)?)
    .bind(&host_id)
    .bind(expires_ms)
    .fetch_all(&mut *c)
    .await?;
    Ok(leases_in_rows(&leases, rows))
}

/// One read over all the leases, on a read connection (off the writer).
pub(crate) async fn held_alarm_leases(
    c: &mut SqliteConnection,
    host_id: String,
    leases: Vec<AlarmLease>,
    now_ms: i64,
) -> Result<Vec<AlarmLease>> {
    if leases.is_empty() {
        return Ok(leases);
    }
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        // See `lease_alarms` for why `IN (SELECT ..)`.
        "SELECT actor_type, actor_id, name, lease_id FROM alarms
         WHERE (actor_type, actor_id, name, lease_id) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1))
           AND lease_host = ?2 AND lease_expires_ms > ?3",
    )
    .bind(lease_keys(&leases)?)
    .bind(&host_id)
    .bind(now_ms)
    .fetch_all(&mut *c)
    .await?;
    Ok(leases_in_rows(&leases, rows))
}

pub(crate) async fn complete_alarm(
    c: &mut SqliteConnection,
    lease: AlarmLease,
    outcome: AlarmOutcome,
) -> Result<bool> {
    let done = match outcome {
        AlarmOutcome::Delete => {
            sqlx::query(
                "DELETE FROM alarms
                 WHERE actor_type = ?1 AND actor_id = ?2 AND name = ?3 AND lease_id = ?4",
            )
            .bind(lease.actor.actor_type())
            .bind(lease.actor.actor_id())
            .bind(&lease.name)
            .bind(&lease.lease_id)
            .execute(&mut *c)
            .await?
        }
        AlarmOutcome::Reschedule { due, attempts } => {
            sqlx::query(
                "UPDATE alarms SET due_ms = ?5, attempts = ?6,
                     lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
                 WHERE actor_type = ?1 AND actor_id = ?2 AND name = ?3 AND lease_id = ?4",
            )
            .bind(lease.actor.actor_type())
            .bind(lease.actor.actor_id())
            .bind(&lease.name)
            .bind(&lease.lease_id)
            .bind(millis(due))
            .bind(i64::from(attempts))
            .execute(&mut *c)
            .await?
        }
    };
    Ok(done.rows_affected() > 0)
}

/// One statement for every deletion (the common outcome), one per reschedule.
pub(crate) async fn complete_alarms(
    c: &mut SqliteConnection,
    completions: Vec<AlarmCompletion>,
) -> Result<Vec<AlarmLease>> {
    let deletes: Vec<&AlarmLease> = completions
        .iter()
        .filter(|c| c.outcome == AlarmOutcome::Delete)
        .map(|c| &c.lease)
        .collect();
    let mut done: HashSet<AlarmLease> = HashSet::new();
    if !deletes.is_empty() {
        // See `lease_alarms` for why `IN (SELECT ..)`.
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "DELETE FROM alarms
             WHERE (actor_type, actor_id, name, lease_id) IN
                   (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3
                    FROM json_each(?1))
             RETURNING actor_type, actor_id, name, lease_id",
        )
        .bind(lease_keys(deletes.iter().copied())?)
        .fetch_all(&mut *c)
        .await?;
        for (actor_type, actor_id, name, lease_id) in rows {
            done.insert(AlarmLease {
                actor: actor_from_row(actor_type, actor_id)?,
                name,
                lease_id,
            });
        }
    }
    for completion in &completions {
        if completion.outcome != AlarmOutcome::Delete
            && complete_alarm(c, completion.lease.clone(), completion.outcome).await?
        {
            done.insert(completion.lease.clone());
        }
    }
    Ok(completions
        .into_iter()
        .map(|c| c.lease)
        .filter(|l| done.contains(l))
        .collect())
}

pub(crate) async fn release_alarm(c: &mut SqliteConnection, lease: AlarmLease) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE alarms SET lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
         WHERE actor_type = ?1 AND actor_id = ?2 AND name = ?3 AND lease_id = ?4",
    )
    .bind(lease.actor.actor_type())
    .bind(lease.actor.actor_id())
    .bind(&lease.name)
    .bind(&lease.lease_id)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Runs one operation on `c` (for a write: inside the caller's transaction and savepoint).
/// The shared input checks ([`policy::check_op`]) come first.
pub(crate) async fn run(c: &mut SqliteConnection, op: Op) -> Result<Reply> {
    policy::check_op(&op)?;
    Ok(match op {
        Op::RegisterHost {
            registration,
            now,
            ttl,
        } => {
            register_host(c, registration, millis(now), duration_millis(ttl)).await?;
            Reply::Unit
        }
        Op::Heartbeat { host_id, now } => {
            heartbeat(c, host_id, millis(now)).await?;
            Reply::Unit
        }
        Op::UnregisterHost { host_id } => {
            unregister_host(c, host_id).await?;
            Reply::Unit
        }
        Op::LiveHosts { now, ttl } => {
            Reply::Hosts(live_hosts(c, millis(now), duration_millis(ttl)).await?)
        }
        Op::Claim {
            actor,
            candidate,
            now,
            ttl,
        } => {
            let args = ClaimArgs::new(actor, candidate, now, ttl);
            let mut outcomes = claim_many(c, vec![args]).await?;
            Reply::Placement(outcomes.pop().expect("one outcome per claim")?)
        }
        Op::Lookup { actor, now, ttl } => {
            Reply::MaybePlacement(lookup(c, &actor, millis(now), duration_millis(ttl)).await?)
        }
        Op::Release {
            actor,
            host_id,
            epoch,
        } => Reply::Bool(release(c, actor, host_id, epoch).await?),
        Op::CountPlacements {
            host_id,
            actor_type,
        } => Reply::Count(count_placements(c, &host_id, &actor_type).await?),
        Op::GetState { actor, now } => Reply::State(get_state(c, &actor, millis(now)).await?),
        Op::SetState {
            actor,
            data,
            expires_at,
            fence,
        } => {
            set_state(c, actor, data, expires_at.map(millis), fence).await?;
            Reply::Unit
        }
        Op::DeleteState { actor, fence } => Reply::Bool(delete_state(c, actor, fence).await?),
        Op::ListStates {
            actor_type,
            after,
            limit,
            include_data,
            now,
        } => Reply::Page(
            list_states(
                c,
                &actor_type,
                after.as_deref(),
                limit,
                include_data,
                millis(now),
            )
            .await?,
        ),
        Op::DeleteExpiredState { now } => Reply::Count(delete_expired_state(c, millis(now)).await?),
        Op::SetAlarm {
            actor,
            name,
            properties,
            fence,
        } => {
            let row = AlarmRow::from_properties(&properties)?;
            set_alarm(c, actor, name, row, fence).await?;
            Reply::Unit
        }
        Op::GetAlarm { actor, name } => Reply::Alarm(get_alarm(c, &actor, &name).await?),
        Op::DeleteAlarm { actor, name, fence } => {
            Reply::Bool(delete_alarm(c, actor, name, fence).await?)
        }
        Op::LeaseAlarms { request, now } => {
            Reply::Leased(lease_alarms(c, request, millis(now)).await?)
        }
        Op::RenewAlarmLeases {
            host_id,
            leases,
            now,
            lease_duration,
        } => Reply::Leases(
            renew_alarm_leases(c, host_id, leases, millis(now), lease_duration).await?,
        ),
        Op::HeldAlarmLeases {
            host_id,
            leases,
            now,
        } => Reply::Leases(held_alarm_leases(c, host_id, leases, millis(now)).await?),
        Op::CompleteAlarm { lease, outcome } => {
            Reply::Bool(complete_alarm(c, lease, outcome).await?)
        }
        Op::ReleaseAlarm { lease } => Reply::Bool(release_alarm(c, lease).await?),
        Op::CompleteAlarms { completions } => Reply::Leases(complete_alarms(c, completions).await?),
    })
}

/// Whether `op` needs a savepoint of its own inside a batch transaction, so that failing
/// partway leaves nothing of it. The others write nothing before any check that can refuse
/// them (most then make one write statement; `complete_alarms` makes several that cannot
/// refuse): a refusal has written nothing, and any other
/// failure ends the whole batch (SQLite may have rolled the transaction back with it), so
/// they need no savepoint, which saves two round trips on the commonest writes. (Claims never
/// come here: consecutive claims run together, see `claim`.)
pub(crate) fn needs_savepoint(op: &Op) -> bool {
    !matches!(
        op,
        Op::SetState { .. }
            | Op::DeleteState { .. }
            | Op::SetAlarm { .. }
            | Op::DeleteAlarm { .. }
            | Op::Heartbeat { .. }
            | Op::LeaseAlarms { .. }
            | Op::RenewAlarmLeases { .. }
            | Op::CompleteAlarm { .. }
            | Op::ReleaseAlarm { .. }
            | Op::CompleteAlarms { .. }
    )
}

/// Runs a batch on the writer's connection, inside its transaction: an operation that fails
/// with a refusal ([`StoreError::is_refusal`]) is undone alone (by its savepoint, or because
/// it wrote nothing) and reported in its place. Any other failure of an operation without a
/// savepoint fails the whole batch (the returned error).
pub(crate) async fn run_batch(
    c: &mut SqliteConnection,
    ops: Vec<Op>,
) -> Result<Vec<Result<Reply>>> {
    let mut results = Vec::with_capacity(ops.len());
    let mut claims = Vec::new();
    for op in ops {
        // consecutive claims run together (see `claim`)
        let op = match ClaimArgs::from_op(op) {
            Ok(claim) => {
                claims.push(claim);
                continue;
            }
            Err(op) => op,
        };
        run_claims(c, std::mem::take(&mut claims), &mut results).await?;
        if !needs_savepoint(&op) {
            match run(c, op).await {
                Err(e) if !e.is_refusal() => return Err(e),
                result => results.push(result),
            }
            continue;
        }
        sqlx::raw_sql("SAVEPOINT francis_batch_op")
            .execute(&mut *c)
            .await?;
        let result = run(c, op).await;
        let end = if result.is_ok() {
            "RELEASE francis_batch_op"
        } else {
            "ROLLBACK TO francis_batch_op; RELEASE francis_batch_op"
        };
        sqlx::raw_sql(end).execute(&mut *c).await?;
        results.push(result);
    }
    run_claims(c, claims, &mut results).await?;
    Ok(results)
}

async fn run_claims(
    c: &mut SqliteConnection,
    claims: Vec<ClaimArgs>,
    results: &mut Vec<Result<Reply>>,
) -> Result<()> {
    if !claims.is_empty() {
        let outcomes = claim_many(c, claims).await?;
        results.extend(outcomes.into_iter().map(|o| o.map(Reply::Placement)));
    }
    Ok(())
}
