//! The SQL of every provider operation against PostgreSQL.
//!
//! Every operation is either one statement (atomic on its own) or one transaction at
//! READ COMMITTED whose decisions are made over rows it has locked. How each stays atomic under
//! concurrent hosts is said beside it; `docs/store.md` has the summary.
//!
//! Each runs on the connection it is given: on its own for a single operation, or inside the
//! transaction of a batch, where `c.begin()` opens a savepoint instead of a transaction (so an
//! operation's own transaction stays all-or-nothing either way).

use std::collections::HashSet;
use std::time::Duration;

use francis_core::{ActorRef, AlarmProperties};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

use crate::error::Result;
use crate::migrate::with_prefix;
use crate::policy::lock_key;
use francis_store::StoreError;
use francis_store::codec::{
    AlarmRow, HostRow, actor_from_row, capacity_from_sql, count_from_sql, epoch_from_sql,
    epoch_to_sql, hosts_from_rows, leases_in_rows, page_from_rows, time_from_ms,
};
use francis_store::policy::{self, CandidateView, add_millis, live_cutoff, millis};
use francis_store::{
    AlarmCompletion, AlarmLease, AlarmOutcome, ClaimRefusal, Fence, HostRecord, HostRegistration,
    LeaseRequest, LeasedAlarm, Placement, StateListPage, StateRecord,
};

/// The pool the provider takes its connections from, and the table prefix every statement
/// is written with.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub pool: PgPool,
    pub prefix: String,
}

impl Db {
    /// A statement with the table prefix in place of `{p}`. The prefix was validated when the
    /// provider was built (identifier characters only), so this interpolation is safe.
    fn sql(&self, template: &'static str) -> AssertSqlSafe<String> {
        AssertSqlSafe(with_prefix(template, &self.prefix))
    }
}

/// Rounds a claim may go through when another claim inserts the same placement concurrently.
const CLAIM_ROUNDS: usize = 4;

// ---------------------------------------------------------------------------------------------
// conversions

/// `(epoch to compare, unfenced)` for the fenced statements; `None` when the presented epoch
/// cannot be stored at all (so it is not the current one: the write is fenced).
fn fence_args(fence: Fence) -> Option<(i64, bool)> {
    match fence {
        Fence::Unfenced => Some((0, true)),
        Fence::Epoch(e) => epoch_to_sql(e).map(|e| (e, false)),
    }
}

fn fenced(actor: &ActorRef, fence: Fence) -> StoreError {
    let epoch = match fence {
        Fence::Epoch(e) => e,
        Fence::Unfenced => 0,
    };
    StoreError::Fenced {
        actor: actor.clone(),
        epoch,
    }
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

// ---------------------------------------------------------------------------------------------
// hosts

/// Removes a host (its types and placements go with it: ON DELETE CASCADE), then frees its
/// alarm leases. Placements before alarms: the order fenced alarm writes lock rows in, so the
/// two never deadlock.
async fn remove_host(
    db: &Db,
    tx: &mut PgConnection,
    host_id: &str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(db.sql("DELETE FROM {p}hosts WHERE host_id = $1"))
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(db.sql(
        "UPDATE {p}alarms SET lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
         WHERE lease_host = $1",
    ))
    .bind(host_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One transaction. An advisory lock on the address serialises registrations competing for it,
/// so "no live host has this address" stays true until the commit.
pub(crate) async fn register_host(
    db: &Db,
    c: &mut PgConnection,
    reg: &HostRegistration,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<()> {
    let mut tx = c.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(
            "francis-address",
            &format!("{}\0{}", db.prefix, reg.address),
        ))
        .execute(&mut *tx)
        .await?;
    let others: Vec<(String, i64)> = sqlx::query_as(db.sql(
        "SELECT host_id, last_heartbeat_ms FROM {p}hosts
         WHERE address = $1 AND host_id <> $2 ORDER BY host_id",
    ))
    .bind(&reg.address)
    .bind(&reg.host_id)
    .fetch_all(&mut *tx)
    .await?;
    if let Some((live, _)) = others
        .iter()
        .find(|(_, hb)| policy::is_live(*hb, now_ms, ttl_ms))
    {
        return Err(StoreError::AddressInUse {
            address: reg.address.clone(),
            host_id: live.clone(),
        }
        .into());
    }
    for (dead, _) in &others {
        remove_host(db, &mut tx, dead).await?;
    }
    sqlx::query(db.sql(
        "INSERT INTO {p}hosts (host_id, address, last_heartbeat_ms) VALUES ($1, $2, $3)
         ON CONFLICT (host_id) DO UPDATE SET
             address = excluded.address,
             last_heartbeat_ms = GREATEST({p}hosts.last_heartbeat_ms, excluded.last_heartbeat_ms)",
    ))
    .bind(&reg.host_id)
    .bind(&reg.address)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(db.sql("DELETE FROM {p}host_types WHERE host_id = $1"))
        .bind(&reg.host_id)
        .execute(&mut *tx)
        .await?;
    let types: Vec<String> = reg
        .actor_types
        .iter()
        .map(|t| t.actor_type.clone())
        .collect();
    let limits: Vec<Option<i64>> = reg
        .actor_types
        .iter()
        .map(|t| t.max_active.map(i64::from))
        .collect();
    sqlx::query(db.sql(
        "INSERT INTO {p}host_types (host_id, actor_type, ord, max_active)
         SELECT $1, t.actor_type, t.ord, t.max_active
         FROM UNNEST($2::text[], $3::bigint[]) WITH ORDINALITY AS t(actor_type, max_active, ord)",
    ))
    .bind(&reg.host_id)
    .bind(types)
    .bind(limits)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One statement; heartbeats never move backwards.
pub(crate) async fn heartbeat(
    db: &Db,
    c: &mut PgConnection,
    host_id: &str,
    now_ms: i64,
) -> Result<()> {
    let done = sqlx::query(db.sql(
        "UPDATE {p}hosts SET last_heartbeat_ms = GREATEST(last_heartbeat_ms, $2)
         WHERE host_id = $1",
    ))
    .bind(host_id)
    .bind(now_ms)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::HostNotFound(host_id.to_owned()).into());
    }
    Ok(())
}

/// One transaction (see [`remove_host`]).
pub(crate) async fn unregister_host(db: &Db, c: &mut PgConnection, host_id: &str) -> Result<()> {
    let mut tx = c.begin().await?;
    remove_host(db, &mut tx, host_id).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn live_hosts(
    db: &Db,
    c: &mut PgConnection,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Vec<HostRecord>> {
    let rows: Vec<HostRow> = sqlx::query_as(db.sql(
        "SELECT h.host_id, h.address, h.last_heartbeat_ms, t.actor_type, t.max_active
         FROM {p}hosts h LEFT JOIN {p}host_types t ON t.host_id = h.host_id
         WHERE h.last_heartbeat_ms > $1
         ORDER BY h.host_id, t.ord",
    ))
    .bind(live_cutoff(now_ms, ttl_ms))
    .fetch_all(&mut *c)
    .await?;
    Ok(hosts_from_rows(rows)?)
}

// ---------------------------------------------------------------------------------------------
// placement

/// A live placement is returned by a plain read (no lock). Otherwise one transaction:
/// - the placement row, if any, is locked `FOR UPDATE`, so two claims replacing a dead owner
///   are serialised and the second sees the first's placement;
/// - with no row, the insert is `ON CONFLICT DO NOTHING`: a concurrent claim that inserted first
///   wins, and this claim starts over (and finds it);
/// - with a capacity, the candidate's `host_types` row is locked `FOR UPDATE` before counting,
///   so claims competing for the last slot are serialised;
/// - the epoch is `nextval` of the store's sequence, drawn inside the transaction that writes it.
pub(crate) async fn claim(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    candidate: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Placement> {
    if let Some(placement) = lookup(db, c, actor, now_ms, ttl_ms).await? {
        return Ok(placement);
    }
    for _ in 0..CLAIM_ROUNDS {
        if let Some(placement) = claim_round(db, c, actor, candidate, now_ms, ttl_ms).await? {
            return Ok(placement);
        }
    }
    Err(StoreError::Unavailable(format!(
        "claim for {actor} kept racing with other claims; retry"
    ))
    .into())
}

/// One claim transaction; `None` if a concurrent claim inserted the placement first.
async fn claim_round(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    candidate: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Placement>> {
    let mut tx = c.begin().await?;
    let current: Option<(String, i64, String, i64)> = sqlx::query_as(db.sql(
        "SELECT p.host_id, p.epoch, h.address, h.last_heartbeat_ms
         FROM {p}placements p JOIN {p}hosts h ON h.host_id = p.host_id
         WHERE p.actor_type = $1 AND p.actor_id = $2
         FOR UPDATE OF p",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((host_id, epoch, address, hb)) = &current
        && policy::is_live(*hb, now_ms, ttl_ms)
    {
        let placement = Placement {
            actor: actor.clone(),
            host_id: host_id.clone(),
            address: address.clone(),
            epoch: epoch_from_sql(*epoch)?,
        };
        tx.commit().await?;
        return Ok(Some(placement));
    }
    let host: Option<(String, i64, bool, Option<i64>)> = sqlx::query_as(db.sql(
        "SELECT h.address, h.last_heartbeat_ms, t.host_id IS NOT NULL, t.max_active
         FROM {p}hosts h
         LEFT JOIN {p}host_types t ON t.host_id = h.host_id AND t.actor_type = $2
         WHERE h.host_id = $1",
    ))
    .bind(candidate)
    .bind(actor.actor_type())
    .fetch_optional(&mut *tx)
    .await?;
    let live = host
        .as_ref()
        .is_some_and(|(_, hb, _, _)| policy::is_live(*hb, now_ms, ttl_ms));
    let mut capacity = None;
    let mut placed = 0;
    if let Some((_, _, true, max_active)) = &host
        && live
    {
        capacity = Some(capacity_from_sql(*max_active)?);
        if max_active.is_some() {
            let locked: Option<Option<i64>> = sqlx::query_scalar(db.sql(
                "SELECT max_active FROM {p}host_types
                 WHERE host_id = $1 AND actor_type = $2 FOR UPDATE",
            ))
            .bind(candidate)
            .bind(actor.actor_type())
            .fetch_optional(&mut *tx)
            .await?;
            // re-read under the lock: a re-registration may have changed it
            capacity = locked.map(capacity_from_sql).transpose()?;
            if let Some(Some(_)) = capacity {
                let n: i64 = sqlx::query_scalar(db.sql(
                    "SELECT COUNT(*) FROM {p}placements WHERE host_id = $1 AND actor_type = $2",
                ))
                .bind(candidate)
                .bind(actor.actor_type())
                .fetch_one(&mut *tx)
                .await?;
                placed = count_from_sql(n);
            }
        }
    }
    let refuse = |reason| StoreError::ClaimRefused {
        actor: actor.clone(),
        candidate: candidate.to_owned(),
        reason,
    };
    policy::check_candidate(CandidateView {
        live,
        capacity,
        placed,
    })
    .map_err(refuse)?;
    let Some((address, ..)) = host else {
        // check_candidate refuses hosts that are not registered
        return Err(refuse(ClaimRefusal::CandidateNotLive).into());
    };
    let written: std::result::Result<Option<i64>, sqlx::Error> = if current.is_some() {
        sqlx::query_scalar(db.sql(
            "UPDATE {p}placements SET host_id = $3, epoch = nextval('{p}epoch')
             WHERE actor_type = $1 AND actor_id = $2
             RETURNING epoch",
        ))
        .bind(actor.actor_type())
        .bind(actor.actor_id())
        .bind(candidate)
        .fetch_optional(&mut *tx)
        .await
    } else {
        sqlx::query_scalar(db.sql(
            "INSERT INTO {p}placements (actor_type, actor_id, host_id, epoch)
             VALUES ($1, $2, $3, nextval('{p}epoch'))
             ON CONFLICT (actor_type, actor_id) DO NOTHING
             RETURNING epoch",
        ))
        .bind(actor.actor_type())
        .bind(actor.actor_id())
        .bind(candidate)
        .fetch_optional(&mut *tx)
        .await
    };
    let epoch = match written {
        Ok(Some(epoch)) => epoch,
        // another claim inserted it first: start over and find it
        Ok(None) => return Ok(None),
        // the candidate was removed since it was read
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(refuse(ClaimRefusal::CandidateNotLive).into());
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(Some(Placement {
        actor: actor.clone(),
        host_id: candidate.to_owned(),
        address,
        epoch: epoch_from_sql(epoch)?,
    }))
}

pub(crate) async fn lookup(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Option<Placement>> {
    let row: Option<(String, i64, String)> = sqlx::query_as(db.sql(
        "SELECT p.host_id, p.epoch, h.address
         FROM {p}placements p JOIN {p}hosts h ON h.host_id = p.host_id
         WHERE p.actor_type = $1 AND p.actor_id = $2 AND h.last_heartbeat_ms > $3",
    ))
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
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    host_id: &str,
    epoch: u64,
) -> Result<bool> {
    let Some(epoch) = epoch_to_sql(epoch) else {
        return Ok(false);
    };
    let done = sqlx::query(db.sql(
        "DELETE FROM {p}placements
         WHERE actor_type = $1 AND actor_id = $2 AND host_id = $3 AND epoch = $4",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(host_id)
    .bind(epoch)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn count_placements(
    db: &Db,
    c: &mut PgConnection,
    host_id: &str,
    actor_type: &str,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        db.sql("SELECT COUNT(*) FROM {p}placements WHERE host_id = $1 AND actor_type = $2"),
    )
    .bind(host_id)
    .bind(actor_type)
    .fetch_one(&mut *c)
    .await?;
    Ok(count_from_sql(n))
}

// ---------------------------------------------------------------------------------------------
// state
//
// Fenced writes are one statement whose `fence` CTE reads the placement row `FOR SHARE`: the
// epoch check and the write commit together, and a claim or release of that placement (which
// needs the row exclusively) waits until the write is done, or, if it came first, the fence
// re-reads the row and sees the new epoch.

pub(crate) async fn get_state(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    now_ms: i64,
) -> Result<Option<StateRecord>> {
    let row: Option<(Vec<u8>, Option<i64>)> = sqlx::query_as(db.sql(
        "SELECT data, expires_ms FROM {p}state
         WHERE actor_type = $1 AND actor_id = $2 AND (expires_ms IS NULL OR expires_ms > $3)",
    ))
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
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    data: &[u8],
    expires_ms: Option<i64>,
    fence: Fence,
) -> Result<()> {
    let Some((epoch, unfenced)) = fence_args(fence) else {
        return Err(fenced(actor, fence).into());
    };
    let written: Option<i32> = sqlx::query_scalar(db.sql(
        "WITH fence AS (
             SELECT 1 FROM {p}placements
             WHERE actor_type = $1 AND actor_id = $2 AND epoch = $5
             FOR SHARE
         )
         INSERT INTO {p}state (actor_type, actor_id, data, expires_ms)
         SELECT $1, $2, $3, $4 WHERE $6 OR EXISTS (SELECT 1 FROM fence)
         ON CONFLICT (actor_type, actor_id) DO UPDATE SET
             data = excluded.data, expires_ms = excluded.expires_ms
         RETURNING 1",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(data)
    .bind(expires_ms)
    .bind(epoch)
    .bind(unfenced)
    .fetch_optional(&mut *c)
    .await?;
    match written {
        Some(_) => Ok(()),
        None => Err(fenced(actor, fence).into()),
    }
}

pub(crate) async fn delete_state(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    fence: Fence,
) -> Result<bool> {
    let Some((epoch, unfenced)) = fence_args(fence) else {
        return Err(fenced(actor, fence).into());
    };
    let (allowed, deleted): (bool, i64) = sqlx::query_as(db.sql(
        "WITH fence AS (
             SELECT 1 FROM {p}placements
             WHERE actor_type = $1 AND actor_id = $2 AND epoch = $3
             FOR SHARE
         ),
         allowed AS (SELECT $4 OR EXISTS (SELECT 1 FROM fence) AS ok),
         gone AS (
             DELETE FROM {p}state
             WHERE actor_type = $1 AND actor_id = $2 AND (SELECT ok FROM allowed)
             RETURNING 1
         )
         SELECT (SELECT ok FROM allowed), (SELECT COUNT(*) FROM gone)",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(epoch)
    .bind(unfenced)
    .fetch_one(&mut *c)
    .await?;
    if !allowed {
        return Err(fenced(actor, fence).into());
    }
    Ok(deleted > 0)
}

pub(crate) async fn list_states(
    db: &Db,
    c: &mut PgConnection,
    actor_type: &str,
    after: Option<&str>,
    limit: u32,
    include_data: bool,
    now_ms: i64,
) -> Result<StateListPage> {
    // One row more than asked tells whether another page follows. Actor ids are never empty,
    // so "after the empty string" is "from the start"; ids compare bytewise (COLLATE "C").
    let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(db.sql(
        "SELECT actor_id, CASE WHEN $5 THEN data ELSE NULL END FROM {p}state
         WHERE actor_type = $1 AND actor_id > $2
           AND (expires_ms IS NULL OR expires_ms > $3)
         ORDER BY actor_id LIMIT $4",
    ))
    .bind(actor_type)
    .bind(after.unwrap_or(""))
    .bind(now_ms)
    .bind(i64::from(limit) + 1)
    .bind(include_data)
    .fetch_all(&mut *c)
    .await?;
    Ok(page_from_rows(rows, limit))
}

pub(crate) async fn delete_expired_state(
    db: &Db,
    c: &mut PgConnection,
    now_ms: i64,
) -> Result<u64> {
    let done = sqlx::query(
        db.sql("DELETE FROM {p}state WHERE expires_ms IS NOT NULL AND expires_ms <= $1"),
    )
    .bind(now_ms)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected())
}

// ---------------------------------------------------------------------------------------------
// alarms

/// An alarm's four columns, starting at column `first`.
fn alarm_row(row: &PgRow, first: usize) -> Result<AlarmRow> {
    Ok(AlarmRow {
        due_ms: row.try_get(first)?,
        interval_ns: row.try_get(first + 1)?,
        ttl_ms: row.try_get(first + 2)?,
        data: row.try_get(first + 3)?,
    })
}

pub(crate) async fn set_alarm(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    name: &str,
    alarm: AlarmRow,
    fence: Fence,
) -> Result<()> {
    let Some((epoch, unfenced)) = fence_args(fence) else {
        return Err(fenced(actor, fence).into());
    };
    let written: Option<i32> = sqlx::query_scalar(db.sql(
        "WITH fence AS (
             SELECT 1 FROM {p}placements
             WHERE actor_type = $1 AND actor_id = $2 AND epoch = $8
             FOR SHARE
         )
         INSERT INTO {p}alarms (actor_type, actor_id, name, due_ms, interval_ns, ttl_ms, data)
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE $9 OR EXISTS (SELECT 1 FROM fence)
         ON CONFLICT (actor_type, actor_id, name) DO UPDATE SET
             due_ms = excluded.due_ms, interval_ns = excluded.interval_ns,
             ttl_ms = excluded.ttl_ms, data = excluded.data, attempts = 0,
             lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
         RETURNING 1",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(name)
    .bind(alarm.due_ms)
    .bind(alarm.interval_ns)
    .bind(alarm.ttl_ms)
    .bind(alarm.data)
    .bind(epoch)
    .bind(unfenced)
    .fetch_optional(&mut *c)
    .await?;
    match written {
        Some(_) => Ok(()),
        None => Err(fenced(actor, fence).into()),
    }
}

pub(crate) async fn get_alarm(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    name: &str,
) -> Result<Option<AlarmProperties>> {
    let row = sqlx::query(db.sql(
        "SELECT due_ms, interval_ns, ttl_ms, data FROM {p}alarms
         WHERE actor_type = $1 AND actor_id = $2 AND name = $3",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(name)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| Ok(alarm_row(&r, 0)?.into_properties()?))
        .transpose()
}

pub(crate) async fn delete_alarm(
    db: &Db,
    c: &mut PgConnection,
    actor: &ActorRef,
    name: &str,
    fence: Fence,
) -> Result<bool> {
    let Some((epoch, unfenced)) = fence_args(fence) else {
        return Err(fenced(actor, fence).into());
    };
    let (allowed, deleted): (bool, i64) = sqlx::query_as(db.sql(
        "WITH fence AS (
             SELECT 1 FROM {p}placements
             WHERE actor_type = $1 AND actor_id = $2 AND epoch = $4
             FOR SHARE
         ),
         allowed AS (SELECT $5 OR EXISTS (SELECT 1 FROM fence) AS ok),
         gone AS (
             DELETE FROM {p}alarms
             WHERE actor_type = $1 AND actor_id = $2 AND name = $3 AND (SELECT ok FROM allowed)
             RETURNING 1
         )
         SELECT (SELECT ok FROM allowed), (SELECT COUNT(*) FROM gone)",
    ))
    .bind(actor.actor_type())
    .bind(actor.actor_id())
    .bind(name)
    .bind(epoch)
    .bind(unfenced)
    .fetch_one(&mut *c)
    .await?;
    if !allowed {
        return Err(fenced(actor, fence).into());
    }
    Ok(deleted > 0)
}

/// One statement. Actors placed on the leasing host come first only among the earliest
/// [`policy::lease_candidates`] leasable alarms (found without locks); otherwise by due time
/// over every leasable alarm, so a leaser whose candidates another leaser holds locked still
/// finds the next ones (with one leaser, the first `limit` rows of that order are always
/// candidates, as the contract says). The picked rows are locked `FOR UPDATE SKIP LOCKED`:
/// concurrent leasers from any number of hosts pass over each other's rows instead of waiting
/// on them, and a row whose lease another leaser committed meanwhile is re-checked and
/// skipped, so no alarm is leased twice. The rows come back unordered, so they are sorted here as the query chose them.
pub(crate) async fn lease_alarms(
    db: &Db,
    c: &mut PgConnection,
    request: &LeaseRequest,
    now_ms: i64,
) -> Result<Vec<LeasedAlarm>> {
    if request.actor_types.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    let expires_ms = add_millis(now_ms, request.lease_duration);
    // `policy::check_op` refused a lease that would expire past representable time.
    let lease_expires_at = time_from_ms("lease expiry", expires_ms)?;
    let rows = sqlx::query(db.sql(
        "WITH candidates AS (
             SELECT actor_type, actor_id, name FROM {p}alarms
             WHERE actor_type = ANY($1)
               AND due_ms <= $2
               AND (lease_id IS NULL OR lease_expires_ms <= $3)
             ORDER BY due_ms, actor_type, actor_id, name
             LIMIT $8
         ), picked AS (
             SELECT a.actor_type, a.actor_id, a.name,
                    (c.name IS NOT NULL AND COALESCE(p.host_id = $4, FALSE)) AS local
             FROM {p}alarms a
             LEFT JOIN candidates c
               ON c.actor_type = a.actor_type AND c.actor_id = a.actor_id AND c.name = a.name
             LEFT JOIN {p}placements p ON p.actor_type = a.actor_type AND p.actor_id = a.actor_id
             WHERE a.actor_type = ANY($1)
               AND a.due_ms <= $2
               AND (a.lease_id IS NULL OR a.lease_expires_ms <= $3)
             ORDER BY CASE WHEN c.name IS NOT NULL AND p.host_id = $4 THEN 0 ELSE 1 END,
                      a.due_ms, a.actor_type, a.actor_id, a.name
             LIMIT $5
             FOR UPDATE OF a SKIP LOCKED
         )
         UPDATE {p}alarms a SET lease_id = $6, lease_host = $4, lease_expires_ms = $7
         FROM picked
         WHERE a.actor_type = picked.actor_type AND a.actor_id = picked.actor_id
           AND a.name = picked.name
         RETURNING picked.local, a.actor_type, a.actor_id, a.name, a.attempts,
                   a.due_ms, a.interval_ns, a.ttl_ms, a.data",
    ))
    .bind(&request.actor_types)
    .bind(millis(request.horizon))
    .bind(now_ms)
    .bind(&request.host_id)
    .bind(i64::from(request.limit))
    .bind(&request.lease_id)
    .bind(expires_ms)
    .bind(i64::from(policy::lease_candidates(request.limit)))
    .fetch_all(&mut *c)
    .await?;
    let mut picked = Vec::with_capacity(rows.len());
    for row in rows {
        let local: bool = row.try_get(0)?;
        let actor_type: String = row.try_get(1)?;
        let actor_id: String = row.try_get(2)?;
        let name: String = row.try_get(3)?;
        let attempts: i64 = row.try_get(4)?;
        let alarm = alarm_row(&row, 5)?;
        picked.push((local, alarm, actor_type, actor_id, name, attempts));
    }
    picked.sort_by(|a, b| {
        (!a.0, a.1.due_ms, &a.2, &a.3, &a.4).cmp(&(!b.0, b.1.due_ms, &b.2, &b.3, &b.4))
    });
    picked
        .into_iter()
        .map(|(_, alarm, actor_type, actor_id, name, attempts)| {
            Ok(LeasedAlarm {
                lease: AlarmLease {
                    actor: actor_from_row(actor_type, actor_id)?,
                    name,
                    lease_id: request.lease_id.clone(),
                },
                properties: alarm.into_properties()?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                lease_expires_at,
            })
        })
        .collect()
}

/// One statement over all the leases.
pub(crate) async fn renew_alarm_leases(
    db: &Db,
    c: &mut PgConnection,
    host_id: &str,
    leases: &[AlarmLease],
    now_ms: i64,
    lease_duration: Duration,
) -> Result<Vec<AlarmLease>> {
    let expires_ms = add_millis(now_ms, lease_duration);
    let column = |f: fn(&AlarmLease) -> &str| -> Vec<String> {
        leases.iter().map(|l| f(l).to_owned()).collect()
    };
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(db.sql(
        "UPDATE {p}alarms a SET lease_expires_ms = $6
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
              AS l(actor_type, actor_id, name, lease_id)
         WHERE a.actor_type = l.actor_type AND a.actor_id = l.actor_id AND a.name = l.name
           AND a.lease_id = l.lease_id AND a.lease_host = $5
         RETURNING a.actor_type, a.actor_id, a.name, a.lease_id",
    ))
    .bind(column(|l| l.actor.actor_type()))
    .bind(column(|l| l.actor.actor_id()))
    .bind(column(|l| &l.name))
    .bind(column(|l| &l.lease_id))
    .bind(host_id)
    .bind(expires_ms)
    .fetch_all(&mut *c)
    .await?;
    Ok(leases_in_rows(leases, rows))
}

/// One read over all the leases.
pub(crate) async fn held_alarm_leases(
    db: &Db,
    c: &mut PgConnection,
    host_id: &str,
    leases: &[AlarmLease],
    now_ms: i64,
) -> Result<Vec<AlarmLease>> {
    let column = |f: fn(&AlarmLease) -> &str| -> Vec<String> {
        leases.iter().map(|l| f(l).to_owned()).collect()
    };
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(db.sql(
        "SELECT a.actor_type, a.actor_id, a.name, a.lease_id
         FROM {p}alarms a
         JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
              AS l(actor_type, actor_id, name, lease_id)
           ON a.actor_type = l.actor_type AND a.actor_id = l.actor_id AND a.name = l.name
          AND a.lease_id = l.lease_id
         WHERE a.lease_host = $5 AND a.lease_expires_ms > $6",
    ))
    .bind(column(|l| l.actor.actor_type()))
    .bind(column(|l| l.actor.actor_id()))
    .bind(column(|l| &l.name))
    .bind(column(|l| &l.lease_id))
    .bind(host_id)
    .bind(now_ms)
    .fetch_all(&mut *c)
    .await?;
    Ok(leases_in_rows(leases, rows))
}

pub(crate) async fn complete_alarm(
    db: &Db,
    c: &mut PgConnection,
    lease: &AlarmLease,
    outcome: AlarmOutcome,
) -> Result<bool> {
    let done = match outcome {
        AlarmOutcome::Delete => {
            sqlx::query(db.sql(
                "DELETE FROM {p}alarms
                 WHERE actor_type = $1 AND actor_id = $2 AND name = $3 AND lease_id = $4",
            ))
            .bind(lease.actor.actor_type())
            .bind(lease.actor.actor_id())
            .bind(&lease.name)
            .bind(&lease.lease_id)
            .execute(&mut *c)
            .await?
        }
        AlarmOutcome::Reschedule { due, attempts } => {
            sqlx::query(db.sql(
                "UPDATE {p}alarms SET due_ms = $5, attempts = $6,
                     lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
                 WHERE actor_type = $1 AND actor_id = $2 AND name = $3 AND lease_id = $4",
            ))
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
    db: &Db,
    c: &mut PgConnection,
    completions: &[AlarmCompletion],
) -> Result<Vec<AlarmLease>> {
    let deletes: Vec<&AlarmLease> = completions
        .iter()
        .filter(|c| c.outcome == AlarmOutcome::Delete)
        .map(|c| &c.lease)
        .collect();
    let mut done: HashSet<(String, String, String, String)> = HashSet::new();
    if !deletes.is_empty() {
        let column = |f: fn(&AlarmLease) -> &str| -> Vec<String> {
            deletes.iter().map(|l| f(l).to_owned()).collect()
        };
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(db.sql(
            "DELETE FROM {p}alarms a
             USING UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                   AS l(actor_type, actor_id, name, lease_id)
             WHERE a.actor_type = l.actor_type AND a.actor_id = l.actor_id AND a.name = l.name
               AND a.lease_id = l.lease_id
             RETURNING a.actor_type, a.actor_id, a.name, a.lease_id",
        ))
        .bind(column(|l| l.actor.actor_type()))
        .bind(column(|l| l.actor.actor_id()))
        .bind(column(|l| &l.name))
        .bind(column(|l| &l.lease_id))
        .fetch_all(&mut *c)
        .await?;
        done.extend(rows);
    }
    let key = |l: &AlarmLease| {
        (
            l.actor.actor_type().to_owned(),
            l.actor.actor_id().to_owned(),
            l.name.clone(),
            l.lease_id.clone(),
        )
    };
    for completion in completions {
        if completion.outcome != AlarmOutcome::Delete
            && complete_alarm(db, c, &completion.lease, completion.outcome).await?
        {
            done.insert(key(&completion.lease));
        }
    }
    Ok(completions
        .iter()
        .filter(|c| done.contains(&key(&c.lease)))
        .map(|c| c.lease.clone())
        .collect())
}

pub(crate) async fn release_alarm(
    db: &Db,
    c: &mut PgConnection,
    lease: &AlarmLease,
) -> Result<bool> {
    let done = sqlx::query(db.sql(
        "UPDATE {p}alarms SET lease_id = NULL, lease_host = NULL, lease_expires_ms = NULL
         WHERE actor_type = $1 AND actor_id = $2 AND name = $3 AND lease_id = $4",
    ))
    .bind(lease.actor.actor_type())
    .bind(lease.actor.actor_id())
    .bind(&lease.name)
    .bind(&lease.lease_id)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}
