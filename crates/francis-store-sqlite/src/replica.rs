//! What a replicated store built on a [`SqliteProvider`] needs from it: a small metadata table,
//! an apply marker written atomically with each write, and whole-store snapshots.
//!
//! The metadata table (`replica_meta`) lives outside the versioned schema: it is created (if
//! missing) when a database is opened and holds nothing a plain single-host store reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row, SqliteConnection, TypeInfo, ValueRef};

use crate::error::Result;
use crate::{SqliteProvider, boxed};
use francis_store::StoreError;
use francis_store::StoreResult;
use francis_store::{Op, Reply};

/// Creates the metadata table; run at every open.
pub(crate) const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS replica_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT";

/// Metadata keys starting with this prefix belong to the local node (its identity, say): they
/// are never exported in a snapshot nor replaced by importing one.
pub const LOCAL_META_PREFIX: &str = "local.";

/// The provider's tables in foreign-key order (parents first).
const TABLES: &[&str] = &[
    "counters",
    "hosts",
    "host_types",
    "placements",
    "state",
    "alarms",
];

/// Metadata rows by key.
pub type Metadata = BTreeMap<String, Vec<u8>>;

/// Format version of [`SqliteProvider::export_snapshot`]'s bytes.
const SNAPSHOT_FORMAT: u32 = 1;

/// A metadata row written by [`SqliteProvider::apply_batch`] in the same transaction as the
/// batch it marks.
///
/// A replicated store records "last applied log entry" this way, so that the entries'
/// effects and the record that they were applied commit together (or not at all) and a
/// restart never applies an entry twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyMarker {
    /// The metadata key (must not start with [`LOCAL_META_PREFIX`]).
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
}

async fn put_meta(conn: &mut SqliteConnection, key: &str, value: &[u8]) -> Result<()> {
    sqlx::query(
        "INSERT INTO replica_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// One SQLite value, as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    schema: i64,
    /// `(table, rows)` in [`TABLES`] order, then `replica_meta`.
    tables: Vec<(String, Vec<Vec<Value>>)>,
}

/// Runs a query over a table name from [`TABLES`] (never user input).
async fn dump(conn: &mut SqliteConnection, sql: String) -> Result<Vec<Vec<Value>>> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let raw = row.try_get_raw(i)?;
            let value = if raw.is_null() {
                Value::Null
            } else {
                match raw.type_info().name() {
                    "INTEGER" => Value::Int(row.try_get(i)?),
                    "REAL" => Value::Real(row.try_get(i)?),
                    "TEXT" => Value::Text(row.try_get(i)?),
                    _ => Value::Blob(row.try_get(i)?),
                }
            };
            values.push(value);
        }
        out.push(values);
    }
    Ok(out)
}

async fn import(conn: &mut SqliteConnection, snapshot: Snapshot) -> Result<()> {
    for table in TABLES.iter().rev() {
        sqlx::raw_sql(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM replica_meta WHERE substr(key, 1, length(?1)) <> ?1")
        .bind(LOCAL_META_PREFIX)
        .execute(&mut *conn)
        .await?;
    for (table, rows) in snapshot.tables {
        let known = TABLES.contains(&table.as_str()) || table == "replica_meta";
        if !known {
            return Err(
                StoreError::Corrupt(format!("snapshot holds an unknown table {table:?}")).into(),
            );
        }
        for row in rows {
            if table == "replica_meta"
                && matches!(row.first(), Some(Value::Text(k)) if k.starts_with(LOCAL_META_PREFIX))
            {
                continue;
            }
            let marks = vec!["?"; row.len()].join(", ");
            let sql = format!("INSERT INTO {table} VALUES ({marks})");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for v in row {
                q = match v {
                    Value::Null => q.bind(None::<i64>),
                    Value::Int(i) => q.bind(i),
                    Value::Real(f) => q.bind(f),
                    Value::Text(t) => q.bind(t),
                    Value::Blob(b) => q.bind(b),
                };
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

impl SqliteProvider {
    /// Runs `ops` and writes `markers`, all in one transaction: each operation in its own
    /// savepoint, so a refused one ([`StoreError::is_refusal`]: fenced, a refused claim, bad
    /// input) is undone alone and reported in its place; then the markers.
    ///
    /// All or nothing: if any operation fails otherwise (this database failed), or the
    /// transaction cannot commit, the call returns that error and nothing of it is applied,
    /// markers included. So a crash during the call leaves either everything or nothing.
    pub async fn apply_batch(
        &self,
        ops: Vec<Op>,
        markers: Vec<ApplyMarker>,
    ) -> StoreResult<Vec<StoreResult<Reply>>> {
        for m in &markers {
            if m.key.starts_with(LOCAL_META_PREFIX) {
                return Err(StoreError::InvalidArgument(format!(
                    "apply marker key {:?} is local metadata",
                    m.key
                )));
            }
        }
        let applied = self
            .write(move |c: &mut SqliteConnection| {
                boxed(async move {
                    let results = crate::ops::run_batch(c, ops).await?;
                    if let Some(Err(e)) = results
                        .iter()
                        .find(|r| r.as_ref().is_err_and(|e| !e.is_refusal()))
                    {
                        return Err(StoreError::Unavailable(format!(
                            "a batch operation failed, nothing of the batch was applied: {e}"
                        ))
                        .into());
                    }
                    for m in &markers {
                        put_meta(c, &m.key, &m.value).await?;
                    }
                    Ok(results)
                })
            })
            .await?;
        Ok(applied.into_iter().map(|r| r.map_err(Into::into)).collect())
    }

    /// Makes every write committed so far durable, whatever the provider's [`Durability`]:
    /// a full WAL checkpoint, which syncs the WAL, copies it into the database file and syncs
    /// that. A replicated store that applies its (durable) log with [`Durability::Normal`]
    /// calls this before log entries it applied may be discarded, so that a power loss can
    /// roll the database back only to a point the log can still replay from.
    ///
    /// Runs on the write connection, so it waits its turn behind the writer's batches (and
    /// their automatic checkpoints) instead of competing with them; a checkpoint that still
    /// cannot complete (a reader holds an old snapshot) is tried again after a short pause, a
    /// few times, then fails with [`StoreError::Unavailable`], which a retry can help.
    ///
    /// [`Durability`]: crate::Durability
    /// [`Durability::Normal`]: crate::Durability::Normal
    pub async fn make_durable(&self) -> StoreResult<()> {
        const ATTEMPTS: u32 = 8;
        let inner = async move {
            for attempt in 0..ATTEMPTS {
                // (busy, frames in the WAL, frames checkpointed); -1 frames for a database
                // that is not in WAL mode (in memory), where there is nothing to do.
                let (busy, log, done): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(FULL)")
                        .fetch_one(&self.write_pool)
                        .await?;
                if busy == 0 && log == done {
                    return Ok(());
                }
                // 10 ms, doubling: about 2.5 s in all.
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            Err(StoreError::Unavailable(
                "the database's write-ahead log could not be checkpointed; try again".into(),
            )
            .into())
        };
        let result: Result<()> = inner.await;
        result.map_err(Into::into)
    }

    /// Reads a metadata value.
    pub async fn meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let inner = async move {
            Ok(
                sqlx::query_scalar("SELECT value FROM replica_meta WHERE key = ?1")
                    .bind(key)
                    .fetch_optional(&self.read_pool)
                    .await?,
            )
        };
        let result: Result<Option<Vec<u8>>> = inner.await;
        result.map_err(Into::into)
    }

    /// Writes a metadata value (through the writer, durably like any write).
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        let inner = async move {
            let (key, value) = (key.to_string(), value.to_vec());
            self.write(move |c: &mut SqliteConnection| {
                boxed(async move { put_meta(c, &key, &value).await })
            })
            .await
        };
        let result: Result<()> = inner.await;
        result.map_err(Into::into)
    }

    /// Every row of the provider's tables and of the metadata table (but keys starting with
    /// [`LOCAL_META_PREFIX`]), read in one transaction, so the bytes are one consistent state
    /// including whatever marker was written with the last write. Also returns the exported
    /// metadata, read in that same transaction.
    pub async fn export_snapshot(&self) -> StoreResult<(Vec<u8>, Metadata)> {
        let inner = async move {
            let mut tx = self.read_pool.begin().await?;
            let mut tables = Vec::with_capacity(TABLES.len() + 1);
            for table in TABLES {
                let rows = dump(&mut tx, format!("SELECT * FROM {table}")).await?;
                tables.push((table.to_string(), rows));
            }
            let meta = dump(
                &mut tx,
                "SELECT key, value FROM replica_meta WHERE substr(key, 1, 6) <> 'local.' ORDER BY key"
                    .to_string(),
            )
            .await?;
            let mut exported = BTreeMap::new();
            for row in &meta {
                if let [Value::Text(k), Value::Blob(v)] = row.as_slice() {
                    exported.insert(k.clone(), v.clone());
                }
            }
            tables.push(("replica_meta".to_string(), meta));
            tx.rollback().await?;
            let snapshot = Snapshot {
                format: SNAPSHOT_FORMAT,
                schema: crate::SCHEMA_VERSION,
                tables,
            };
            let bytes = serde_json::to_vec(&snapshot)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode a snapshot: {e}")))?;
            Ok((bytes, exported))
        };
        let result: Result<(Vec<u8>, Metadata)> = inner.await;
        result.map_err(Into::into)
    }

    /// Replaces the provider's tables and the (non-local) metadata with a snapshot made by
    /// [`SqliteProvider::export_snapshot`], in one transaction. A snapshot of another format
    /// or schema version is refused with [`StoreError::InvalidArgument`] and changes nothing.
    pub async fn import_snapshot(&self, bytes: &[u8]) -> StoreResult<()> {
        let inner = async move {
            let snapshot: Snapshot = serde_json::from_slice(bytes)
                .map_err(|e| StoreError::InvalidArgument(format!("not a store snapshot: {e}")))?;
            if snapshot.format != SNAPSHOT_FORMAT || snapshot.schema != crate::SCHEMA_VERSION {
                return Err(StoreError::InvalidArgument(format!(
                    "snapshot format {} schema {} does not match this build (format {}, schema {})",
                    snapshot.format,
                    snapshot.schema,
                    SNAPSHOT_FORMAT,
                    crate::SCHEMA_VERSION
                ))
                .into());
            }
            self.write(move |c: &mut SqliteConnection| boxed(import(c, snapshot)))
                .await
        };
        let result: Result<()> = inner.await;
        result.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use francis_store::{ActorTypeSpec, Fence, HostRegistration, Provider};
    use francis_store::{Op, Reply};

    fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn marker(v: &str) -> ApplyMarker {
        ApplyMarker {
            key: "applied".into(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn a_batch_and_its_marker_commit_together_and_refusals_stay_alone() {
        let p = SqliteProvider::in_memory().await.unwrap();
        let a = francis_core::ActorRef::new("t", "a").unwrap();
        let set = |data: &[u8], fence| Op::SetState {
            actor: a.clone(),
            data: data.to_vec(),
            expires_at: None,
            fence,
        };
        // the fenced write is refused alone; the others and the marker are applied
        let results = p
            .apply_batch(
                vec![
                    set(b"1", Fence::Unfenced),
                    set(b"2", Fence::Epoch(7)),
                    Op::DeleteExpiredState { now: at(0) },
                ],
                vec![marker("1")],
            )
            .await
            .unwrap();
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(StoreError::Fenced { .. })),
            "{results:?}"
        );
        assert!(matches!(results[2], Ok(Reply::Count(0))), "{results:?}");
        assert_eq!(p.meta("applied").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(p.get_state(&a, at(0)).await.unwrap().unwrap().data, b"1");
        // a marker key that is local is refused, and nothing of the batch is applied
        let err = p
            .apply_batch(
                vec![set(b"3", Fence::Unfenced)],
                vec![ApplyMarker {
                    key: "local.x".into(),
                    value: vec![],
                }],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        assert_eq!(p.get_state(&a, at(0)).await.unwrap().unwrap().data, b"1");
        // writes made without a marker leave it alone
        p.set_state(&a, b"4", None, Fence::Unfenced).await.unwrap();
        assert_eq!(p.meta("applied").await.unwrap(), Some(b"1".to_vec()));
        p.close().await;
    }

    #[tokio::test]
    async fn snapshots_round_trip_and_keep_local_metadata() {
        let src = SqliteProvider::in_memory().await.unwrap();
        let reg = HostRegistration {
            host_id: "h1".into(),
            address: "addr".into(),
            actor_types: vec![ActorTypeSpec {
                actor_type: "t".into(),
                max_active: Some(3),
            }],
        };
        let ttl = Duration::from_secs(10);
        src.register_host(&reg, at(0), ttl).await.unwrap();
        let a = francis_core::ActorRef::new("t", "a").unwrap();
        let placed = src.claim(&a, "h1", at(0), ttl).await.unwrap();
        src.set_state(&a, b"{\"n\":1}", Some(at(500)), Fence::Epoch(placed.epoch))
            .await
            .unwrap();
        src.set_meta("applied", b"9").await.unwrap();
        src.set_meta("local.id", b"source").await.unwrap();
        let (bytes, meta) = src.export_snapshot().await.unwrap();
        assert_eq!(meta.get("applied"), Some(&b"9".to_vec()));
        assert!(!meta.contains_key("local.id"), "local keys stay local");

        let dst = SqliteProvider::in_memory().await.unwrap();
        let b = francis_core::ActorRef::new("t", "b").unwrap();
        dst.set_state(&b, b"2", None, Fence::Unfenced)
            .await
            .unwrap();
        dst.set_meta("local.id", b"target").await.unwrap();
        dst.import_snapshot(&bytes).await.unwrap();
        assert_eq!(dst.get_state(&b, at(0)).await.unwrap(), None, "replaced");
        assert_eq!(
            dst.get_state(&a, at(0)).await.unwrap().map(|s| s.data),
            Some(b"{\"n\":1}".to_vec())
        );
        assert_eq!(
            dst.lookup(&a, at(1), ttl).await.unwrap(),
            Some(placed.clone())
        );
        assert_eq!(dst.meta("applied").await.unwrap(), Some(b"9".to_vec()));
        assert_eq!(
            dst.meta("local.id").await.unwrap(),
            Some(b"target".to_vec())
        );
        // the epoch counter came along: the next placement gets a greater epoch
        let c = francis_core::ActorRef::new("t", "c").unwrap();
        assert!(dst.claim(&c, "h1", at(2), ttl).await.unwrap().epoch > placed.epoch);

        let err = dst.import_snapshot(b"garbage").await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        assert_eq!(dst.meta("applied").await.unwrap(), Some(b"9".to_vec()));
        src.close().await;
        dst.close().await;
    }

    #[tokio::test]
    async fn make_durable_puts_every_commit_in_the_database_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("normal.db");
        let options = crate::SqliteOptions::default().durability(crate::Durability::Normal);
        let p = SqliteProvider::open(&path, options).await.unwrap();
        let a = francis_core::ActorRef::new("t", "a").unwrap();
        let set = Op::SetState {
            actor: a.clone(),
            data: b"kept".to_vec(),
            expires_at: None,
            fence: Fence::Unfenced,
        };
        let results = p.apply_batch(vec![set], vec![marker("1")]).await.unwrap();
        assert!(results[0].is_ok(), "{results:?}");
        p.make_durable().await.unwrap();
        // The database file alone, without its write-ahead log, as a power loss could leave
        // it if the log had not been synced: the write is in it.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let c = SqliteProvider::open(&copy, Default::default())
            .await
            .unwrap();
        assert_eq!(c.get_state(&a, at(0)).await.unwrap().unwrap().data, b"kept");
        assert_eq!(c.meta("applied").await.unwrap(), Some(b"1".to_vec()));
        c.close().await;
        p.close().await;
    }
}
