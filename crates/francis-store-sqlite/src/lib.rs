//! [`SqliteProvider`]: the [`Provider`] over one SQLite database (sqlx).

mod claim;
mod error;
mod migrate;
mod ops;
mod policy;
mod replica;
mod writer;

pub use replica::{ApplyMarker, LOCAL_META_PREFIX, Metadata};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Result;
use francis_store::StoreError;
use francis_store::{Op, Reply};
use francis_store::{Provider, StoreResult};
use writer::{Counters, Job, Savepoint, WriteOp};

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
    pub async fn open(location: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let inner = async move {
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
                SqliteConnectOptions::from_str(&text)?.create_if_missing(true)
            } else {
                // WAL is switched on below, not here: see `use_wal`.
                SqliteConnectOptions::new()
                    .filename(path)
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
                if !memory {
                    use_wal(&mut conn, options.busy_timeout).await?;
                }
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
        };
        let result: Result<Self> = inner.await;
        result.map_err(Into::into)
    }

    /// A fresh private in-memory database with default options, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
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

    /// Runs a read on a connection of the read pool.
    async fn read<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> futures::future::BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let mut conn = self.read_pool.acquire().await?;
        f(&mut conn).await
    }

    /// Queues a write for the next batch and waits for its result.
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: WriteOp<T>,
    {
        self.write_with(Savepoint::Needed, op).await
    }

    async fn write_with<T, F>(&self, savepoint: Savepoint, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: WriteOp<T>,
    {
        let (job, rx) = writer::job(op, savepoint);
        self.submit(job, rx).await
    }

    /// Queues a job for the next batch and waits for its result.
    async fn submit<T>(
        &self,
        job: Box<dyn writer::Job>,
        rx: tokio::sync::oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
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

/// Puts the file in WAL mode (a property of the file: once set, every connection uses it).
///
/// Switching needs the file to itself, and SQLite does not wait for that with the busy
/// timeout: two processes opening a new file at once would see "database is locked". So the
/// mode is read first (WAL already: nothing to do, no lock taken), and a busy switch is tried
/// again ([`policy::wal_retry_delay`]) until `budget` is spent.
async fn use_wal(conn: &mut SqliteConnection, budget: Duration) -> Result<()> {
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        let switched: std::result::Result<String, sqlx::Error> =
            sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut *conn)
                .await;
        match switched {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            // Another connection holds the file (it reports the old mode, or "locked").
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.message().contains("locked") => {}
            Err(e) => return Err(e.into()),
        }
        attempt += 1;
        if started.elapsed() >= budget {
            return Err(StoreError::Unavailable(format!(
                "cannot switch the database to WAL mode: another connection kept it locked for \
                 {budget:?}"
            ))
            .into());
        }
        tokio::time::sleep(policy::wal_retry_delay(attempt)).await;
    }
}

fn boxed<'c, T>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'c,
) -> futures::future::BoxFuture<'c, Result<T>> {
    Box::pin(f)
}

#[async_trait]
impl Provider for SqliteProvider {
    /// A batch of reads runs on a read connection; a batch with any write runs whole on the
    /// writer, in one transaction (shared with whatever else is queued), each operation in
    /// its own savepoint.
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>> {
        let n = ops.len();
        if n <= 1 {
            return match ops.into_iter().next() {
                Some(op) => vec![self.execute(op).await],
                None => Vec::new(),
            };
        }
        let result = if ops.iter().any(Op::is_write) {
            self.write(move |c: &mut SqliteConnection| boxed(ops::run_batch(c, ops)))
                .await
        } else {
            self.read(move |c| {
                boxed(async move {
                    let mut out = Vec::with_capacity(ops.len());
                    for op in ops {
                        out.push(ops::run(c, op).await);
                    }
                    Ok(out)
                })
            })
            .await
        };
        match result {
            Ok(results) => results.into_iter().map(|r| r.map_err(Into::into)).collect(),
            Err(e) => {
                let why = e.to_string();
                (0..n)
                    .map(|_| Err(StoreError::Unavailable(format!("batch not applied: {why}"))))
                    .collect()
            }
        }
    }

    async fn execute(&self, op: Op) -> StoreResult<Reply> {
        let op = match claim::ClaimArgs::from_op(op) {
            Ok(claim) => {
                let (job, rx) = writer::claim_job(claim);
                let placement = self.submit(job, rx).await;
                return placement.map(Reply::Placement).map_err(Into::into);
            }
            Err(op) => op,
        };
        let result = if op.is_write() {
            let savepoint = if ops::needs_savepoint(&op) {
                Savepoint::Needed
            } else {
                Savepoint::NotNeeded
            };
            self.write_with(savepoint, move |c: &mut SqliteConnection| {
                boxed(ops::run(c, op))
            })
            .await
        } else {
            self.read(move |c| boxed(ops::run(c, op))).await
        };
        result.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use francis_store::{ActorTypeSpec, HostRegistration};

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
