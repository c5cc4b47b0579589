//! Reading a worker's SQLite file read-only: the `state` table (one JSON document per actor),
//! to compare replicas with each other and with what the clients saw.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// `(actor_type, actor_id)` to the stored document, as bytes.
pub type StateTable = BTreeMap<(String, String), Vec<u8>>;

/// Reads every row of the `state` table of `file`, opened read-only (the worker may still be
/// running: the file is in WAL mode, so a reader does not block it).
pub async fn read_state(file: &Path) -> Result<StateTable> {
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("open {} read-only", file.display()))?;
    let rows = sqlx::query("SELECT actor_type, actor_id, data FROM state ORDER BY 1, 2")
        .fetch_all(&mut conn)
        .await
        .with_context(|| format!("read the state table of {}", file.display()))?;
    let mut table = StateTable::new();
    for row in rows {
        table.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
    }
    conn.close().await.ok();
    Ok(table)
}

/// The `counter` of a `myactor` state document.
pub fn counter(document: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(document)
        .ok()?
        .get("counter")?
        .as_i64()
}

/// A short description of how two replicas' tables differ (`None`: they are equal).
pub fn difference(a: &StateTable, b: &StateTable) -> Option<String> {
    if a == b {
        return None;
    }
    let mut out = Vec::new();
    for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            let show = |v: Option<&Vec<u8>>| {
                v.map_or("missing".to_owned(), |v| {
                    String::from_utf8_lossy(v).into_owned()
                })
            };
            out.push(format!("{}/{}: {} vs {}", key.0, key.1, show(x), show(y)));
        }
        if out.len() >= 3 {
            break;
        }
    }
    Some(out.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_differences() {
        assert_eq!(counter(br#"{"counter":84,"alarms":2}"#), Some(84));
        assert_eq!(counter(b"garbage"), None);
        let mut a = StateTable::new();
        a.insert(("myactor".into(), "x".into()), br#"{"counter":1}"#.to_vec());
        let mut b = a.clone();
        assert_eq!(difference(&a, &b), None);
        b.insert(("myactor".into(), "y".into()), br#"{"counter":2}"#.to_vec());
        let d = difference(&a, &b).unwrap();
        assert!(d.contains("myactor/y: missing vs"), "{d}");
    }
}
