//! The Raft log, persisted in its own SQLite file next to the node's data file.
//!
//! Tables: `log (idx PRIMARY KEY, log_id, entry)` with JSON values, and `kv` for the vote,
//! the committed log id and the last purged log id. Every change is one transaction on a
//! single connection with `synchronous = FULL`, so an appended entry or a saved vote is on
//! disk before openraft is told so.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

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

/// The node's Raft log store (cheap to clone: clones share the connection).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    pool: SqlitePool,
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
        Ok(LogStore { pool })
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
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
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| StorageIOError::read_logs(io(e)))?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.push(from_json(row).map_err(StorageIOError::read_logs)?);
        }
        Ok(entries)
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

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.put_kv("committed", &committed)
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

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
        let result: Result<(), AnyError> = async {
            let mut tx = self.pool.begin().await.map_err(io)?;
            for entry in entries {
                sqlx::query("INSERT OR REPLACE INTO log (idx, log_id, entry) VALUES (?1, ?2, ?3)")
                    .bind(index(entry.log_id.index))
                    .bind(String::from_utf8(to_json(&entry.log_id)?).map_err(io)?)
                    .bind(to_json(&entry)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(io)?;
            }
            tx.commit().await.map_err(io)?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        sqlx::query("DELETE FROM log WHERE idx >= ?1")
            .bind(index(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(|e| StorageIOError::write_logs(io(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let result: Result<(), AnyError> = async {
            let mut tx = self.pool.begin().await.map_err(io)?;
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
        .await;
        result.map_err(|e| StorageIOError::write_logs(e).into())
    }
}
