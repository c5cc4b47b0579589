//! [`PostgresProvider`]: the [`Provider`] over one shared PostgreSQL database (sqlx).

mod error;
mod migrate;
mod ops;
mod policy;
#[cfg(feature = "testing")]
mod testing;
#[cfg(feature = "testing")]
pub use testing::{PostgresTestTables, TEST_POSTGRES_URL_ENV};

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::error::{Error, Result};
use crate::ops::Db;
use crate::policy::{ErrorClass, classify_sqlstate, redact_url, validate_prefix};
use francis_store::StoreError;
use francis_store::policy::{check_op, duration_millis, millis};
use francis_store::{Op, Reply};
use francis_store::{Provider, StoreResult};

/// The newest schema version this build of the PostgreSQL provider writes and reads.
pub const POSTGRES_SCHEMA_VERSION: i64 = migrate::SCHEMA_VERSION;

/// Default [`PostgresOptions::table_prefix`].
pub const DEFAULT_TABLE_PREFIX: &str = "francis_";

/// How many times an operation PostgreSQL aborted on a deadlock or serialization failure is
/// run again before the caller gets [`StoreError::Unavailable`].
const CONFLICT_RETRIES: u32 = 8;

/// How many times an operation of a batch is run again (in its savepoint) after a deadlock or
/// serialization failure before it is answered with [`StoreError::Unavailable`]. Fewer than
/// for a single operation: the batch holds the locks of the operations before it meanwhile.
const BATCH_CONFLICT_RETRIES: u32 = 3;

/// A pooled connection idle at least this long is pinged before it is used again.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How a [`PostgresProvider`] connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Prepended to every table, index and sequence name (default `francis_`), so several
    /// stores (or test runs) can share one database schema. Lowercase letters, digits and `_`
    /// only, not starting with a digit, at most 40 bytes; anything else is refused.
    pub table_prefix: String,
    /// Most connections the provider opens (default 10).
    pub pool_size: u32,
    /// How long an operation waits for a connection (including connecting) before it fails
    /// with [`StoreError::Unavailable`] (default 5 s). Also bounds the first connection.
    pub acquire_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            pool_size: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl PostgresOptions {
    /// Sets [`PostgresOptions::table_prefix`] (checked by [`PostgresProvider::connect`]).
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets [`PostgresOptions::pool_size`] (at least 1).
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Sets [`PostgresOptions::acquire_timeout`].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// The [`Provider`] over one PostgreSQL database shared by any number of hosts.
///
/// - **Schema**: versioned migrations embedded in the binary, applied on connect inside one
///   transaction under an advisory lock on the table prefix (hosts starting together apply
///   each once); tables written by a newer build are refused with
///   [`StoreError::SchemaTooNew`] and left untouched.
/// - **Atomic claims**: a claim that finds no live placement runs one READ COMMITTED
///   transaction that locks the placement row (`SELECT .. FOR UPDATE`), or inserts it with
///   `ON CONFLICT DO NOTHING` and starts over if another claim inserted first; capacity is
///   counted under a lock on the candidate's type row. Exactly one claim wins.
/// - **Epochs** come from one sequence (`<prefix>epoch`): never reused, even by claims that
///   fail, and increasing for each actor.
/// - **Fencing**: a fenced write is one statement that reads the placement row `FOR SHARE` and
///   writes only if its epoch matches, so the check and the write commit together and a
///   competing claim waits for the write (or the write sees the new epoch).
/// - **Alarm leasing** is one statement locking its candidates `FOR UPDATE SKIP LOCKED`, so
///   concurrent leasers never wait on each other's rows and never lease an alarm twice.
/// - **Batches**: two or more operations with a write among them run in one transaction on
///   one connection, each in its own savepoint: a refused or failed operation is rolled back
///   alone (one that hit a deadlock is run again a few times first), the rest commit together.
///   If the transaction itself fails (the connection is lost, `COMMIT` fails...), every
///   operation is answered with [`StoreError::Unavailable`] and none is applied. A single
///   operation, or a batch of reads, runs each operation on its own.
/// - **Time is an argument**: no statement calls `now()`.
/// - **Errors**: a lost connection, a server shutting down or an exhausted pool give
///   [`StoreError::Unavailable`]; the pool drops broken connections and reconnects on its own
///   when the server is back.
///   A write that failed that way may or may not have been applied. Deadlocks and
///   serialization failures are retried a few times before they are reported the same way.
/// - Times are stored as Unix milliseconds; alarm intervals as exact nanoseconds.
pub struct PostgresProvider {
    db: Db,
    target: String,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("target", &self.target)
            .field("table_prefix", &self.db.prefix)
            .finish_non_exhaustive()
    }
}

/// `host:port/database (user ...)` for messages: no password.
fn describe_target(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(socket) => format!("socket {}", socket.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let database = options.get_database().unwrap_or(options.get_username());
    format!(
        "{place} (database {database}, user {})",
        options.get_username()
    )
}

impl PostgresProvider {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// or `postgresql://...`) and brings the tables of `options.table_prefix` to
    /// [`POSTGRES_SCHEMA_VERSION`], creating them if missing.
    ///
    /// Errors: a malformed URL (or one with another scheme) or table prefix is [`StoreError::InvalidArgument`]; a server
    /// that cannot be reached (or refuses the connection) within
    /// [`PostgresOptions::acquire_timeout`] is [`StoreError::Unavailable`] naming the host and
    /// port; no message ever shows the password.
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let inner = async move {
            validate_prefix(&options.table_prefix).map_err(StoreError::InvalidArgument)?;
            if !policy::is_postgres_url(url) {
                return Err(StoreError::InvalidArgument(format!(
                    "invalid PostgreSQL URL {}: it must start with postgres:// or postgresql://",
                    redact_url(url)
                ))
                .into());
            }
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| {
                    StoreError::InvalidArgument(format!(
                        "invalid PostgreSQL URL {}: {}",
                        redact_url(url),
                        scrub(&e.to_string(), url)
                    ))
                })?
                .application_name("francis");
            let target = describe_target(&connect);
            let first = tokio::time::timeout(
                options.acquire_timeout,
                PgConnection::connect_with(&connect),
            )
            .await;
            let mut conn = match first {
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot reach PostgreSQL at {target}: no answer within {:?}",
                        options.acquire_timeout
                    ))
                    .into());
                }
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to PostgreSQL at {target}: {}",
                        scrub(&e.to_string(), url)
                    ))
                    .into());
                }
                Ok(Ok(conn)) => conn,
            };
            let migrated =
                migrate::migrate(&mut conn, &options.table_prefix, migrate::MIGRATIONS).await;
            // the schema is settled (or refused); this connection's work is done either way
            let _ = conn.close().await;
            migrated.map_err(|e| unavailable_or(e, &target))?;
            let pool = PgPoolOptions::new()
                .max_connections(options.pool_size.max(1))
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                // sqlx pings every connection when it is released (a broken one is dropped then);
                // one that sat idle may have been cut meanwhile, so it is pinged before reuse too.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IDLE_AFTER {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .connect_lazy_with(connect);
            Ok(PostgresProvider {
                db: Db {
                    pool,
                    prefix: options.table_prefix,
                },
                target,
            })
        };
        let result: Result<Self> = inner.await;
        result.map_err(Into::into)
    }

    /// The table prefix it uses.
    pub fn table_prefix(&self) -> &str {
        &self.db.prefix
    }

    /// Where it connects: host, port, database and user (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes every connection; operations still running finish first.
    pub async fn close(self) {
        self.db.pool.close().await;
    }
}

/// `message` with any password of `url` replaced by `***`.
fn scrub(message: &str, url: &str) -> String {
    policy::passwords_in_url(url)
        .into_iter()
        .fold(message.to_owned(), |m, password| m.replace(password, "***"))
}

/// How a store error is handled: retried, reported as unavailable, or passed on.
fn class(e: &Error) -> ErrorClass {
    match e {
        Error::Sql(sqlx::Error::Database(db)) => db
            .code()
            .map_or(ErrorClass::Other, |c| classify_sqlstate(&c)),
        Error::Sql(
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed,
        ) => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// `e`, or [`StoreError::Unavailable`] naming the server if `e` means it cannot be used now.
fn unavailable_or(e: Error, target: &str) -> Error {
    match class(&e) {
        ErrorClass::Unavailable | ErrorClass::Conflict => {
            StoreError::Unavailable(format!("PostgreSQL at {target}: {e}")).into()
        }
        ErrorClass::Other => e,
    }
}

/// Refuses strings PostgreSQL's `text` cannot hold (NUL characters).
fn text_arg(what: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(StoreError::InvalidArgument(format!(
            "{what} {value:?} contains a NUL character"
        ))
        .into());
    }
    Ok(())
}

/// The shared input checks, then what PostgreSQL's `text` cannot hold.
fn check(op: &Op) -> Result<()> {
    check_op(op)?;
    check_text(op)
}

impl PostgresProvider {
    /// Runs one operation on a connection of its own: the input checks, then its SQL, again
    /// (on a fresh connection) after a deadlock or serialization failure; connection failures
    /// become [`StoreError::Unavailable`].
    async fn run_op(&self, op: &Op) -> Result<Reply> {
        check(op)?;
        let mut attempt = 0;
        loop {
            let result = async {
                let mut conn = self.db.pool.acquire().await?;
                apply(&self.db, &mut conn, op).await
            }
            .await;
            match result {
                Ok(reply) => return Ok(reply),
                Err(e) if class(&e) == ErrorClass::Conflict && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "postgres conflict; running the operation again");
                    // a short, growing pause lets the other side of a deadlock finish
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                }
                Err(e) => return Err(unavailable_or(e, &self.target)),
            }
        }
    }

    /// Runs a batch in one transaction on one connection, each operation in its own savepoint.
    /// If the transaction itself fails, every operation is answered with
    /// [`StoreError::Unavailable`] (a refusal keeps its own answer): nothing was applied.
    async fn run_batch(&self, ops: &[Op]) -> Vec<StoreResult<Reply>> {
        let mut results = Vec::with_capacity(ops.len());
        let failed = self.try_batch(ops, &mut results).await.err();
        let results = results.into_iter().map(|r| r.map_err(StoreError::from));
        let Some(e) = failed else {
            return results.collect();
        };
        tracing::debug!(error = %e, "postgres batch not applied");
        let why = format!("PostgreSQL at {}: batch not applied: {e}", self.target);
        let not_applied = || Err(StoreError::Unavailable(why.clone()));
        let mut answers: Vec<StoreResult<Reply>> = results
            .map(|r| match r {
                Err(refused) if refused.is_refusal() => Err(refused),
                _ => not_applied(),
            })
            .collect();
        answers.resize_with(ops.len(), not_applied);
        answers
    }

    /// The transaction of [`PostgresProvider::run_batch`]: pushes each operation's result onto
    /// `results` and commits; `Err` if the connection or the transaction failed.
    async fn try_batch(&self, ops: &[Op], results: &mut Vec<Result<Reply>>) -> Result<()> {
        let mut conn = self.db.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for op in ops {
            // on `Err`, `tx` is dropped, which rolls it back (sqlx sends the ROLLBACK before
            // the connection is used again or returned to the pool)
            results.push(self.run_in_batch(&mut tx, op).await?);
        }
        tx.commit().await?;
        Ok(())
    }

    /// One operation of a batch, in the savepoint `francis_batch_op`: the input checks (a
    /// failure runs nothing), then its SQL, undone alone if it fails and run again after a
    /// conflict. `Ok` holds the operation's own result; `Err` means the transaction failed.
    async fn run_in_batch(&self, c: &mut PgConnection, op: &Op) -> Result<Result<Reply>> {
        if let Err(e) = check(op) {
            return Ok(Err(e));
        }
        let mut attempt = 0;
        loop {
            sqlx::raw_sql("SAVEPOINT francis_batch_op")
                .execute(&mut *c)
                .await?;
            let e = match apply(&self.db, c, op).await {
                Ok(reply) => {
                    sqlx::raw_sql("RELEASE SAVEPOINT francis_batch_op")
                        .execute(&mut *c)
                        .await?;
                    return Ok(Ok(reply));
                }
                // the connection is gone or the server refuses work: so is the transaction
                Err(e) if class(&e) == ErrorClass::Unavailable => return Err(e),
                Err(e) => e,
            };
            sqlx::raw_sql(
                "ROLLBACK TO SAVEPOINT francis_batch_op; RELEASE SAVEPOINT francis_batch_op",
            )
            .execute(&mut *c)
            .await?;
            if class(&e) == ErrorClass::Conflict && attempt < BATCH_CONFLICT_RETRIES {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "postgres conflict in a batch; running the operation again");
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                continue;
            }
            return Ok(Err(unavailable_or(e, &self.target)));
        }
    }
}

/// Runs the SQL of one operation on `c` (checked beforehand by [`check`]).
async fn apply(db: &Db, c: &mut PgConnection, op: &Op) -> Result<Reply> {
    Ok(match op {
        Op::RegisterHost {
            registration,
            now,
            ttl,
        } => {
            ops::register_host(db, c, registration, millis(*now), duration_millis(*ttl)).await?;
            Reply::Unit
        }
        Op::Heartbeat { host_id, now } => {
            ops::heartbeat(db, c, host_id, millis(*now)).await?;
            Reply::Unit
        }
        Op::UnregisterHost { host_id } => {
            ops::unregister_host(db, c, host_id).await?;
            Reply::Unit
        }
        Op::LiveHosts { now, ttl } => {
            Reply::Hosts(ops::live_hosts(db, c, millis(*now), duration_millis(*ttl)).await?)
        }
        Op::Claim {
            actor,
            candidate,
            now,
            ttl,
        } => Reply::Placement(
            ops::claim(db, c, actor, candidate, millis(*now), duration_millis(*ttl)).await?,
        ),
        Op::Lookup { actor, now, ttl } => Reply::MaybePlacement(
            ops::lookup(db, c, actor, millis(*now), duration_millis(*ttl)).await?,
        ),
        Op::Release {
            actor,
            host_id,
            epoch,
        } => Reply::Bool(ops::release(db, c, actor, host_id, *epoch).await?),
        Op::CountPlacements {
            host_id,
            actor_type,
        } => Reply::Count(ops::count_placements(db, c, host_id, actor_type).await?),
        Op::GetState { actor, now } => {
            Reply::State(ops::get_state(db, c, actor, millis(*now)).await?)
        }
        Op::SetState {
            actor,
            data,
            expires_at,
            fence,
        } => {
            ops::set_state(db, c, actor, data, expires_at.map(millis), *fence).await?;
            Reply::Unit
        }
        Op::DeleteState { actor, fence } => {
            Reply::Bool(ops::delete_state(db, c, actor, *fence).await?)
        }
        Op::ListStates {
            actor_type,
            after,
            limit,
            include_data,
            now,
        } => Reply::Page(
            ops::list_states(
                db,
                c,
                actor_type,
                after.as_deref(),
                *limit,
                *include_data,
                millis(*now),
            )
            .await?,
        ),
        Op::DeleteExpiredState { now } => {
            Reply::Count(ops::delete_expired_state(db, c, millis(*now)).await?)
        }
        Op::SetAlarm {
            actor,
            name,
            properties,
            fence,
        } => {
            let row = francis_store::codec::AlarmRow::from_properties(properties)?;
            ops::set_alarm(db, c, actor, name, row, *fence).await?;
            Reply::Unit
        }
        Op::GetAlarm { actor, name } => Reply::Alarm(ops::get_alarm(db, c, actor, name).await?),
        Op::DeleteAlarm { actor, name, fence } => {
            Reply::Bool(ops::delete_alarm(db, c, actor, name, *fence).await?)
        }
        Op::LeaseAlarms { request, now } => {
            Reply::Leased(ops::lease_alarms(db, c, request, millis(*now)).await?)
        }
        Op::RenewAlarmLeases {
            host_id,
            leases,
            now,
            lease_duration,
        } => Reply::Leases(
            ops::renew_alarm_leases(db, c, host_id, leases, millis(*now), *lease_duration).await?,
        ),
        Op::HeldAlarmLeases {
            host_id,
            leases,
            now,
        } => Reply::Leases(ops::held_alarm_leases(db, c, host_id, leases, millis(*now)).await?),
        Op::CompleteAlarm { lease, outcome } => {
            Reply::Bool(ops::complete_alarm(db, c, lease, *outcome).await?)
        }
        Op::ReleaseAlarm { lease } => Reply::Bool(ops::release_alarm(db, c, lease).await?),
        Op::CompleteAlarms { completions } => {
            Reply::Leases(ops::complete_alarms(db, c, completions).await?)
        }
    })
}

/// Refuses the strings of an operation that PostgreSQL's `text` cannot hold.
fn check_text(op: &Op) -> Result<()> {
    match op {
        Op::RegisterHost { registration, .. } => {
            text_arg("host id", &registration.host_id)?;
            text_arg("address", &registration.address)?;
            for t in &registration.actor_types {
                text_arg("actor type", &t.actor_type)?;
            }
            Ok(())
        }
        Op::Heartbeat { host_id, .. }
        | Op::UnregisterHost { host_id }
        | Op::Release { host_id, .. } => text_arg("host id", host_id),
        Op::Claim { candidate, .. } => text_arg("host id", candidate),
        Op::CountPlacements {
            host_id,
            actor_type,
        } => {
            text_arg("host id", host_id)?;
            text_arg("actor type", actor_type)
        }
        Op::ListStates {
            actor_type, after, ..
        } => {
            text_arg("actor type", actor_type)?;
            after.as_deref().map_or(Ok(()), |a| text_arg("cursor", a))
        }
        Op::SetAlarm { name, .. } | Op::GetAlarm { name, .. } | Op::DeleteAlarm { name, .. } => {
            text_arg("alarm name", name)
        }
        Op::LeaseAlarms { request, .. } => {
            text_arg("host id", &request.host_id)?;
            text_arg("lease id", &request.lease_id)?;
            for t in &request.actor_types {
                text_arg("actor type", t)?;
            }
            Ok(())
        }
        Op::RenewAlarmLeases {
            host_id, leases, ..
        }
        | Op::HeldAlarmLeases {
            host_id, leases, ..
        } => {
            text_arg("host id", host_id)?;
            for l in leases {
                text_arg("alarm name", &l.name)?;
                text_arg("lease id", &l.lease_id)?;
            }
            Ok(())
        }
        Op::CompleteAlarm { lease, .. } | Op::ReleaseAlarm { lease } => {
            text_arg("alarm name", &lease.name)?;
            text_arg("lease id", &lease.lease_id)
        }
        Op::CompleteAlarms { completions } => {
            for c in completions {
                text_arg("alarm name", &c.lease.name)?;
                text_arg("lease id", &c.lease.lease_id)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    /// Two or more operations with a write among them run in one transaction
    /// ([`PostgresProvider::run_batch`]); one operation, or reads only, each on its own.
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>> {
        if ops.len() >= 2 && ops.iter().any(Op::is_write) {
            return self.run_batch(&ops).await;
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in &ops {
            results.push(self.run_op(op).await.map_err(Into::into));
        }
        results
    }

    async fn execute(&self, op: Op) -> StoreResult<Reply> {
        self.run_op(&op).await.map_err(Into::into)
    }
}
