//! The Raft log, persisted in its own SQLite file next to the node's data file.
//!
//! Tables: `log (idx PRIMARY KEY, log_id, entry)` with JSON values, and `kv` for the vote
//! and the last purged log id. The file is written with `synchronous = FULL`, so an appended
//! entry or a saved vote is on disk before openraft is told so.
//!
//! **Group commit.** openraft hands the log one `append` per client write. Each would be a
//! transaction and an fsync of its own, one after another: the leader's log would cap the
//! cluster at one write per fsync. So `append` only queues its entries for one writer task
//! and returns; the writer commits everything queued in one transaction and only then tells
//! openraft the entries are flushed (`LogFlushed`), which is when openraft counts them toward
//! a quorum. Until then the entries are held in memory and readers see them, as openraft
//! requires of an accepted append. Truncation and purging go through the same writer, so they
//! stay in order with the appends.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::raft::TypeConfig;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    idx    INTEGER PRIMARY KEY,
    log_id TEXT NOT NULL,
    entry  BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
";

fn io(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    serde_json::to_vec(v).map_err(io)
}

fn from_json<T: DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    serde_json::from_slice(b).map_err(io)
}

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 512;

/// Entries appended but not yet committed, by index.
type Pending = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

/// How far the log may be purged ([`crate::policy::purge_point`]): shared by the log, which
/// openraft asks to purge up to a snapshot, and the state machine, which says how far its
/// database is durable (after each checkpoint). A purge waits here until both allow it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PurgeGate(Arc<Mutex<GateState>>);

#[derive(Debug, Default)]
struct GateState {
    wanted: Option<LogId<NodeId>>,
    durable: Option<LogId<NodeId>>,
    done: Option<LogId<NodeId>>,
    /// The log's writer, to run a purge the database's progress allowed.
    writer: Option<mpsc::UnboundedSender<Write>>,
}

impl PurgeGate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// openraft asks to purge up to `upto`: how far to purge now.
    fn want(&self, upto: LogId<NodeId>) -> Option<LogId<NodeId>> {
        let mut g = self.state();
        g.wanted = g.wanted.max(Some(upto));
        let point = crate::policy::purge_point(g.wanted, g.durable, g.done)?;
        g.done = Some(point);
        Some(point)
    }

    /// The database holds everything up to `upto` durably (a checkpoint just ran); a purge
    /// that waited for it runs now.
    pub(crate) fn durable(&self, upto: Option<LogId<NodeId>>) {
        let mut g = self.state();
        g.durable = g.durable.max(upto);
        if let Some(point) = crate::policy::purge_point(g.wanted, g.durable, g.done)
            && let Some(writer) = &g.writer
        {
            let (done, _) = oneshot::channel();
            if writer.send(Write::Purge(point, done)).is_ok() {
                g.done = Some(point);
            }
        }
    }
}

/// What the writer task does, in order.
enum Write {
    /// Insert the entries; then tell openraft they are flushed.
    Append(Vec<Entry<TypeConfig>>, LogFlushed<TypeConfig>),
    /// Delete the entries from this index on.
    Truncate(u64, oneshot::Sender<Result<(), AnyError>>),
    /// Record the purge point and delete the entries up to it.
    Purge(LogId<NodeId>, oneshot::Sender<Result<(), AnyError>>),
    /// Answer once everything queued before it is done.
    Sync(oneshot::Sender<()>),
}

/// The node's Raft log store (cheap to clone: clones share the connection, the writer and the
/// entries not yet committed).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    pool: SqlitePool,
    pending: Pending,
    writer: mpsc::UnboundedSender<Write>,
    gate: PurgeGate,
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Inserts the entries of every append in one transaction.
async fn insert(pool: &SqlitePool, groups: &[Vec<Entry<TypeConfig>>]) -> Result<(), AnyError> {
    let mut tx = pool.begin().await.map_err(io)?;
    for entry in groups.iter().flatten() {
        sqlx::query("INSERT OR REPLACE INTO log (idx, log_id, entry) VALUES (?1, ?2, ?3)")
            .bind(index(entry.log_id.index))
            .bind(String::from_utf8(to_json(&entry.log_id)?).map_err(io)?)
            .bind(to_json(entry)?)
            .execute(&mut *tx)
            .await
            .map_err(io)?;
    }
    tx.commit().await.map_err(io)?;
    Ok(())
}

async fn truncate(pool: &SqlitePool, from: u64) -> Result<(), AnyError> {
    sqlx::query("DELETE FROM log WHERE idx >= ?1")
        .bind(index(from))
        .execute(pool)
        .await
        .map_err(io)?;
    Ok(())
}

async fn purge(pool: &SqlitePool, log_id: LogId<NodeId>) -> Result<(), AnyError> {
    let mut tx = pool.begin().await.map_err(io)?;
    sqlx::query(
        "INSERT INTO kv (key, value) VALUES ('purged', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(to_json(&Some(log_id))?)
    .execute(&mut *tx)
    .await
    .map_err(io)?;
    sqlx::query("DELETE FROM log WHERE idx <= ?1")
        .bind(index(log_id.index))
        .execute(&mut *tx)
        .await
        .map_err(io)?;
    tx.commit().await.map_err(io)?;
    Ok(())
}

/// The writer: takes everything queued, commits the appends among it together, answers.
async fn writer(pool: SqlitePool, pending: Pending, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut queued = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut queued, MAX_GROUP).await > 0 {
        let mut appends: Vec<(Vec<Entry<TypeConfig>>, LogFlushed<TypeConfig>)> = Vec::new();
        for write in queued.drain(..) {
            match write {
                Write::Append(entries, flushed) => appends.push((entries, flushed)),
                other => {
                    // Appends queued before it go first.
                    flush(&pool, &pending, std::mem::take(&mut appends)).await;
                    match other {
                        Write::Truncate(from, done) => {
                            let r = truncate(&pool, from).await;
                            lock(&pending).retain(|i, _| *i < from);
                            let _ = done.send(r);
                        }
                        Write::Purge(log_id, done) => {
                            let r = purge(&pool, log_id).await;
                            let _ = done.send(r);
                        }
                        Write::Sync(done) => {
                            let _ = done.send(());
                        }
                        Write::Append(..) => unreachable!("handled above"),
                    }
                }
            }
        }
        flush(&pool, &pending, appends).await;
    }
}

/// Commits a group of appends, then tells openraft (and drops them from memory).
async fn flush(
    pool: &SqlitePool,
    pending: &Pending,
    appends: Vec<(Vec<Entry<TypeConfig>>, LogFlushed<TypeConfig>)>,
) {
    if appends.is_empty() {
        return;
    }
    let (groups, callbacks): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
    let result = insert(pool, &groups).await;
    if result.is_ok() {
        let mut p = lock(pending);
        for entry in groups.iter().flatten() {
            // A later append may have replaced it meanwhile (after a truncation).
            if p.get(&entry.log_id.index)
                .is_some_and(|e| e.log_id == entry.log_id)
            {
                p.remove(&entry.log_id.index);
            }
        }
    }
    for callback in callbacks {
        callback.log_io_completed(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
    }
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot write the Raft log");
    }
}

impl LogStore {
    /// Opens (creating it if missing) the log file.
    pub(crate) async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let pending = Pending::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(pool.clone(), pending.clone(), rx));
        let gate = PurgeGate::default();
        gate.state().writer = Some(tx.clone());
        Ok(LogStore {
            pool,
            pending,
            writer: tx,
            gate,
        })
    }

    /// The gate that holds purges back until the database is durable that far.
    pub(crate) fn purge_gate(&self) -> PurgeGate {
        self.gate.clone()
    }

    /// Finishes what is queued, then closes the connection.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.writer.send(Write::Sync(done)).is_ok() {
            let _ = wait.await;
        }
        self.pool.close().await;
    }

    /// Runs a truncation or purge on the writer, after the appends queued before it.
    async fn ordered(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<(), AnyError>>) -> Write,
    ) -> Result<(), AnyError> {
        let (done, wait) = oneshot::channel();
        let stopped = || AnyError::error("the Raft log's writer has stopped");
        self.writer.send(write(done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    async fn get_kv<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM kv WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(io)?;
        v.map(|b| from_json(&b)).transpose()
    }

    async fn put_kv<T: Serialize>(&self, key: &str, value: &T) -> Result<(), AnyError> {
        sqlx::query(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(to_json(value)?)
        .execute(&self.pool)
        .await
        .map_err(io)?;
        Ok(())
    }

    /// How many entries the log holds (for tests and diagnostics).
    pub(crate) async fn len(&self) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn index(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => index(i),
            Bound::Excluded(&i) => index(i).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => index(i).saturating_add(1),
            Bound::Excluded(&i) => index(i),
            Bound::Unbounded => i64::MAX,
        };
        let pending: Vec<(u64, Entry<TypeConfig>)> = lock(&self.pending)
            .range(range.clone())
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StorageIOError::read_logs(io(e)))?;
        // Taken before the rows were read (see below) and laid over them: an entry the writer
        // committed and dropped from memory meanwhile is in the rows.
        let mut entries: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        for row in &rows {
            let entry: Entry<TypeConfig> = from_json(row).map_err(StorageIOError::read_logs)?;
            entries.insert(entry.log_id.index, entry);
        }
        entries.extend(pending);
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self
            .get_kv("purged")
            .await
            .map_err(StorageIOError::read_logs)?;
        let last: Option<String> =
            sqlx::query_scalar("SELECT log_id FROM log ORDER BY idx DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StorageIOError::read_logs(io(e)))?;
        let last: Option<LogId<NodeId>> = last
            .map(|s| from_json(s.as_bytes()))
            .transpose()
            .map_err(StorageIOError::read_logs)?;
        let newest_pending = lock(&self.pending).values().next_back().map(|e| e.log_id);
        let last = last.max(newest_pending);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_kv("vote", vote)
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_kv("vote")
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    // `save_committed` is left to openraft's default (not persisted): a node that restarts
    // learns the commit point from its leader, and one fsync less per commit keeps the core
    // loop free. `read_committed` still reads what earlier builds saved (a valid lower bound).
    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_kv::<Option<LogId<NodeId>>>("committed")
            .await
            .map_err(StorageIOError::read)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        {
            let mut p = lock(&self.pending);
            for entry in &entries {
                p.insert(entry.log_id.index, entry.clone());
            }
        }
        self.writer
            .send(Write::Append(entries, callback))
            .map_err(|_| {
                StorageIOError::write_logs(AnyError::error("the Raft log's writer has stopped"))
                    .into()
            })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let from = log_id.index;
        // Readers stop seeing the truncated entries at once; the writer deletes the rows.
        lock(&self.pending).retain(|i, _| *i < from);
        self.ordered(|done| Write::Truncate(from, done))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    /// Purges up to `log_id` once the database is durable that far ([`PurgeGate`]); until then
    /// the entries stay (openraft never reads below its purge point, so they are only kept).
    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let Some(point) = self.gate.want(log_id) else {
            return Ok(());
        };
        self.ordered(|done| Write::Purge(point, done))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
