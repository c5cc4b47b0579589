//! Versioned schema migrations for PostgreSQL, embedded in the binary, and their runner.

use sqlx::migrate::MigrateError;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::error::Result;
use crate::policy::lock_key;
use francis_store::StoreError;

/// One schema migration: SQL with `{p}` standing for the table prefix, applied once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: i64,
    /// Short description, recorded beside the version.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration this build knows, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("migrations/0001_initial.sql"),
}];

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// `template` with the (validated) table prefix in place of every `{p}`.
pub(crate) fn with_prefix(template: &str, prefix: &str) -> String {
    template.replace("{p}", prefix)
}

/// Brings the tables of `prefix` to the newest known schema in one transaction, holding an
/// advisory lock on the prefix so hosts starting together apply each migration exactly once,
/// and returns the version they are at. A schema newer than `migrations` knows is refused with
/// [`StoreError::SchemaTooNew`] and left untouched; a failing migration changes nothing.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    prefix: &str,
    migrations: &[Migration],
) -> Result<i64> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key("francis-migrate", prefix))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(with_prefix(
        "CREATE TABLE IF NOT EXISTS {p}schema_version (
            version BIGINT PRIMARY KEY,
            name    TEXT NOT NULL
        )",
        prefix,
    )))
    .execute(&mut *tx)
    .await?;
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(with_prefix(
        "SELECT MAX(version) FROM {p}schema_version",
        prefix,
    )))
    .fetch_one(&mut *tx)
    .await?;
    let found = found.unwrap_or(0);
    let supported = migrations.last().map_or(0, |m| m.version);
    if found > supported {
        // dropping the transaction rolls it back
        return Err(StoreError::SchemaTooNew { found, supported }.into());
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        sqlx::raw_sql(AssertSqlSafe(with_prefix(m.sql, prefix)))
            .execute(&mut *tx)
            .await
            .map_err(|e| MigrateError::ExecuteMigration(e, m.version))?;
        sqlx::query(AssertSqlSafe(with_prefix(
            "INSERT INTO {p}schema_version (version, name) VALUES ($1, $2)",
            prefix,
        )))
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(supported.max(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn every_object_carries_the_prefix() {
        let sql = with_prefix(MIGRATIONS[0].sql, "pre_");
        assert!(!sql.contains("{p}"));
        for line in sql.lines().map(str::trim) {
            for keyword in [
                "CREATE TABLE ",
                "CREATE INDEX ",
                "CREATE SEQUENCE ",
                "REFERENCES ",
            ] {
                if let Some(pos) = line.find(keyword) {
                    let name = &line[pos + keyword.len()..];
                    assert!(name.starts_with("pre_"), "unprefixed object in {line:?}");
                }
            }
            if line.starts_with("CREATE INDEX ") {
                assert!(line.contains(" ON pre_"), "{line:?}");
            }
        }
    }
}
