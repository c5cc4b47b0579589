//! [`SqliteProvider`]: the [`Provider`] over one SQLite database (sqlx).

mod migrate;
mod ops;
mod replica;
mod writer;

pub use replica::{ApplyMarker, LOCAL_META_PREFIX};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::policy::{duration_millis, millis};
use crate::provider::{
    AlarmLease, AlarmOutcome, Fence, HostRecord, HostRegistration, LeaseRequest, LeasedAlarm,
    Placement, Provider, StateListPage, StateRecord, StoreResult,
};
use writer::{Counters, Job, WriteOp};

/// The newest schema version this build of the SQLite provider writes and reads.
pub const SCHEMA_VERSION: i64 = migrate::SCHEMA_VERSION;

/// How hard each commit is pushed to stable storage before writers are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: the WAL is fsynced at every commit, so an acknowledged write
    /// survives a process crash, an OS crash and a power loss. With group commit one fsync is
    /// shared by every write of a batch. The default: the store is the authority on placement
    /// epochs and state, and a write acknowledged to an actor must not vanish.
    #[default]
    Full,
    /// WAL with `synchronous = NORMAL`: commits are not fsynced (the WAL is synced at
    /// checkpoints). An acknowledged write survives a process crash, but the last commits can
    /// be lost on an OS crash or power loss. Faster; for data that can be rebuilt.
    Normal,
}

/// How a [`SqliteProvider`] opens its database.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Commit durability (default [`Durability::Full`]).
    pub durability: Durability,
    /// How long a statement waits for another process's lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// Connections for reads (default 4). In-memory databases use one connection for all.
    pub read_connections: u32,
    /// Most operations committed in one transaction (default 256).
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers are held back (default 4096).
    pub queue_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::default(),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            max_batch: 256,
            queue_capacity: 4096,
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`SqliteOptions::read_connections`] (at least 1).
    pub fn read_connections(mut self, n: u32) -> Self {
        self.read_connections = n.max(1);
        self
    }

    /// Sets [`SqliteOptions::max_batch`] (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`SqliteOptions::queue_capacity`] (at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
}

/// Counters of a provider's writer, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Write operations handed to the writer.
    pub submitted: u64,
    /// Write operations the writer has taken into a batch.
    pub executed: u64,
    /// Batches (transactions) attempted.
    pub batches: u64,
    /// Batches that committed.
    pub committed_batches: u64,
}

/// The [`Provider`] over one SQLite database.
///
/// - One file in WAL mode with foreign keys on and a busy timeout; created if missing; its
///   schema is migrated on open, and a file written by a newer build is refused with
///   [`StoreError::SchemaTooNew`].
/// - **Group commit**: every write goes through one writer task that runs whatever is queued
///   in one `BEGIN IMMEDIATE` transaction (each operation in its own savepoint, so a refused
///   operation does not affect the others) and answers each caller after the single commit.
///   Reads use a pool of connections and see every write that was acknowledged.
/// - Several processes may open the same file: SQLite's locks (with the busy timeout)
///   serialise their writers, and every rule is checked inside the write transaction.
/// - Times are stored as Unix milliseconds (sub-millisecond parts are dropped); alarm
///   intervals as exact nanoseconds.
/// - A write whose caller is cancelled after it was queued may still be applied.
///
/// Must be opened inside a tokio runtime (the writer is a tokio task).
#[derive(Debug)]
pub struct SqliteProvider {
    location: String,
    read_pool: SqlitePool,
    write_pool: SqlitePool,
    queue: mpsc::Sender<Box<dyn Job>>,
    writer: JoinHandle<()>,
    counters: Arc<Counters>,
}

fn is_memory(location: &str) -> bool {
    location == ":memory:" || location == "sqlite::memory:" || location.contains("mode=memory")
}

impl SqliteProvider {
    /// Opens (creating it if missing) the database at a file path or a `sqlite:` URL, and
    /// migrates it to [`SCHEMA_VERSION`]. `:memory:` (or `sqlite::memory:`) opens a fresh
    /// private in-memory database that lives as long as the provider.
    pub async fn open(
        location: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = location.as_ref();
        let text = path.to_string_lossy().into_owned();
        let memory = is_memory(&text);
        let base = if memory {
            let url = if text.starts_with("sqlite:") {
                text.clone()
            } else {
                "sqlite::memory:".to_string()
            };
            SqliteConnectOptions::from_str(&url)?
        } else if text.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(&text)?
                .journal_mode(SqliteJournalMode::Wal)
                .create_if_missing(true)
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(SqliteJournalMode::Wal)
                .create_if_missing(true)
        };
        let connect = base
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            });

        // The writer's own connection. An in-memory database exists only while a connection
        // to it is open, so there it is the one connection for reads too, and is never recycled.
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        {
            let mut conn = write_pool.acquire().await?;
            migrate::migrate(&mut conn, migrate::MIGRATIONS).await?;
            sqlx::raw_sql(replica::CREATE_META)
                .execute(&mut *conn)
                .await?;
        }
        let read_pool = if memory {
            write_pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(options.read_connections.max(1))
                .min_connections(0)
                .test_before_acquire(false)
                .connect_with(connect)
                .await?
        };

        let (queue, rx) = mpsc::channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = tokio::spawn(writer::writer_loop(
            write_pool.clone(),
            rx,
            options.max_batch.max(1),
            counters.clone(),
        ));
        Ok(SqliteProvider {
            location: text,
            read_pool,
            write_pool,
            queue,
            writer,
            counters,
        })
    }

    /// A fresh private in-memory database with default options, for tests.
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::open(":memory:", SqliteOptions::default()).await
    }

    /// The path or URL it was opened with.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            executed: c.executed.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            committed_batches: c.committed_batches.load(Ordering::Relaxed),
        }
    }

    /// Finishes every queued write, stops the writer and closes the database. Dropping the
    /// provider also lets queued writes finish, but does not wait for them.
    pub async fn close(self) {
        let SqliteProvider {
            read_pool,
            write_pool,
            queue,
            writer,
            ..
        } = self;
        drop(queue);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "store writer task failed");
        }
        read_pool.close().await;
        write_pool.close().await;
    }

    /// Queues a write for the next batch and waits for its result; inside
    /// [`SqliteProvider::with_apply_marker`] the write also records the marker.
    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: WriteOp<T>,
    {
        match replica::current_marker() {
            None => self.write_unmarked(op).await,
            Some(marker) => {
                self.write_unmarked(move |c: &mut SqliteConnection| {
                    boxed(replica::run_marked(c, op, marker))
                })
                .await?
            }
        }
    }

    /// Queues a write for the next batch and waits for its result.
    async fn write_unmarked<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: WriteOp<T>,
    {
        let (job, rx) = writer::job(op);
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        rx.await.map_err(|_| {
            StoreError::Unavailable("the store's writer stopped before answering".into())
        })?
    }

    #[cfg(test)]
    pub(crate) fn write_pool(&self) -> &SqlitePool {
        &self.write_pool
    }
}

fn boxed<'c, T>(
    f: impl std::future::Future<Output = StoreResult<T>> + Send + 'c,
) -> futures::future::BoxFuture<'c, StoreResult<T>> {
    Box::pin(f)
}

#[async_trait]
impl Provider for SqliteProvider {
    async fn register_host(
        &self,
        registration: &HostRegistration,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<()> {
        ops::validate_registration(registration)?;
        let reg = registration.clone();
        let (now, ttl) = (millis(now), duration_millis(ttl));
        self.write(move |c: &mut SqliteConnection| boxed(ops::register_host(c, reg, now, ttl)))
            .await
    }

    async fn heartbeat(&self, host_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let host_id = host_id.to_string();
        let now = millis(now);
        self.write(move |c: &mut SqliteConnection| boxed(ops::heartbeat(c, host_id, now)))
            .await
    }

    async fn unregister_host(&self, host_id: &str) -> StoreResult<()> {
        let host_id = host_id.to_string();
        self.write(move |c: &mut SqliteConnection| boxed(ops::unregister_host(c, host_id)))
            .await
    }

    async fn live_hosts(&self, now: DateTime<Utc>, ttl: Duration) -> StoreResult<Vec<HostRecord>> {
        ops::live_hosts(&self.read_pool, millis(now), duration_millis(ttl)).await
    }

    async fn claim(
        &self,
        actor: &ActorRef,
        candidate: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Placement> {
        let (actor, candidate) = (actor.clone(), candidate.to_string());
        let (now, ttl) = (millis(now), duration_millis(ttl));
        self.write(move |c: &mut SqliteConnection| boxed(ops::claim(c, actor, candidate, now, ttl)))
            .await
    }

    async fn lookup(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Placement>> {
        ops::lookup(&self.read_pool, actor, millis(now), duration_millis(ttl)).await
    }

    async fn release(&self, actor: &ActorRef, host_id: &str, epoch: u64) -> StoreResult<bool> {
        let (actor, host_id) = (actor.clone(), host_id.to_string());
        self.write(move |c: &mut SqliteConnection| boxed(ops::release(c, actor, host_id, epoch)))
            .await
    }

    async fn count_placements(&self, host_id: &str, actor_type: &str) -> StoreResult<u64> {
        ops::count_placements(&self.read_pool, host_id, actor_type).await
    }

    async fn get_state(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StateRecord>> {
        ops::get_state(&self.read_pool, actor, millis(now)).await
    }

    async fn set_state(
        &self,
        actor: &ActorRef,
        data: &[u8],
        expires_at: Option<DateTime<Utc>>,
        fence: Fence,
    ) -> StoreResult<()> {
        let (actor, data) = (actor.clone(), data.to_vec());
        let expires = expires_at.map(millis);
        self.write(move |c: &mut SqliteConnection| {
            boxed(ops::set_state(c, actor, data, expires, fence))
        })
        .await
    }

    async fn delete_state(&self, actor: &ActorRef, fence: Fence) -> StoreResult<bool> {
        let actor = actor.clone();
        self.write(move |c: &mut SqliteConnection| boxed(ops::delete_state(c, actor, fence)))
            .await
    }

    async fn list_states(
        &self,
        actor_type: &str,
        after: Option<&str>,
        limit: u32,
        include_data: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<StateListPage> {
        ops::list_states(
            &self.read_pool,
            actor_type,
            after,
            limit,
            include_data,
            millis(now),
        )
        .await
    }

    async fn delete_expired_state(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let now = millis(now);
        self.write(move |c: &mut SqliteConnection| boxed(ops::delete_expired_state(c, now)))
            .await
    }

    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> StoreResult<()> {
        let row = ops::AlarmRow::from_properties(properties)?;
        let (actor, name) = (actor.clone(), name.to_string());
        self.write(move |c: &mut SqliteConnection| {
            boxed(ops::set_alarm(c, actor, name, row, fence))
        })
        .await
    }

    async fn get_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
    ) -> StoreResult<Option<AlarmProperties>> {
        ops::get_alarm(&self.read_pool, actor, name).await
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str, fence: Fence) -> StoreResult<bool> {
        let (actor, name) = (actor.clone(), name.to_string());
        self.write(move |c: &mut SqliteConnection| boxed(ops::delete_alarm(c, actor, name, fence)))
            .await
    }

    async fn lease_alarms(
        &self,
        request: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LeasedAlarm>> {
        let request = request.clone();
        let now = millis(now);
        self.write(move |c: &mut SqliteConnection| boxed(ops::lease_alarms(c, request, now)))
            .await
    }

    async fn renew_alarm_leases(
        &self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> StoreResult<Vec<AlarmLease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (host_id, leases) = (host_id.to_string(), leases.to_vec());
        let now = millis(now);
        self.write(move |c: &mut SqliteConnection| {
            boxed(ops::renew_alarm_leases(
                c,
                host_id,
                leases,
                now,
                lease_duration,
            ))
        })
        .await
    }

    async fn complete_alarm(&self, lease: &AlarmLease, outcome: AlarmOutcome) -> StoreResult<bool> {
        let lease = lease.clone();
        self.write(move |c: &mut SqliteConnection| boxed(ops::complete_alarm(c, lease, outcome)))
            .await
    }

    async fn release_alarm(&self, lease: &AlarmLease) -> StoreResult<bool> {
        let lease = lease.clone();
        self.write(move |c: &mut SqliteConnection| boxed(ops::release_alarm(c, lease)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ActorTypeSpec;

    async fn text_pragma(pool: &SqlitePool, sql: &'static str) -> String {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    async fn int_pragma(pool: &SqlitePool, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    #[tokio::test]
    async fn connections_use_the_configured_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        // synchronous: FULL = 2, NORMAL = 1
        for (durability, expected_sync) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let path = dir.path().join(format!("{durability:?}.db"));
            let p = SqliteProvider::open(
                &path,
                SqliteOptions::default()
                    .durability(durability)
                    .busy_timeout(Duration::from_millis(1234)),
            )
            .await
            .unwrap();
            for pool in [&p.read_pool, p.write_pool()] {
                assert_eq!(text_pragma(pool, "PRAGMA journal_mode").await, "wal");
                assert_eq!(int_pragma(pool, "PRAGMA synchronous").await, expected_sync);
                assert_eq!(int_pragma(pool, "PRAGMA foreign_keys").await, 1);
                assert_eq!(int_pragma(pool, "PRAGMA busy_timeout").await, 1234);
            }
            p.close().await;
        }
    }

    #[test]
    fn memory_locations_are_recognised() {
        assert!(is_memory(":memory:"));
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite:file:x?mode=memory&cache=shared"));
        assert!(!is_memory("data.db"));
        assert!(!is_memory("sqlite:data.db?mode=rwc"));
    }

    #[tokio::test]
    async fn in_memory_databases_are_private_and_shared_by_reads_and_writes() {
        let a = SqliteProvider::in_memory().await.unwrap();
        let b = SqliteProvider::in_memory().await.unwrap();
        let now = DateTime::from_timestamp_millis(1_000_000).unwrap();
        let reg = HostRegistration {
            host_id: "h1".into(),
            address: "addr".into(),
            actor_types: vec![ActorTypeSpec {
                actor_type: "t".into(),
                max_active: None,
            }],
        };
        a.register_host(&reg, now, Duration::from_secs(10))
            .await
            .unwrap();
        let ttl = Duration::from_secs(10);
        assert_eq!(a.live_hosts(now, ttl).await.unwrap().len(), 1);
        assert!(b.live_hosts(now, ttl).await.unwrap().is_empty());
        let stats = a.writer_stats();
        assert_eq!((stats.submitted, stats.committed_batches), (1, 1));
        a.close().await;
        b.close().await;
    }
}
