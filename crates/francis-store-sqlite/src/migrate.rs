//! Versioned schema migrations, embedded in the binary, and the runner that applies them.

use sqlx::SqliteConnection;
use sqlx::migrate::MigrateError;

use crate::error::Result;
use francis_store::StoreError;

/// One schema migration: plain SQL applied once, inside the runner's transaction.
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
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "placement epoch trigger",
        sql: include_str!("../migrations/0002_placement_epoch_trigger.sql"),
    },
    Migration {
        version: 3,
        name: "alarm lease index",
        sql: include_str!("../migrations/0003_alarm_lease_index.sql"),
    },
];

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the database to the newest known schema in one `BEGIN IMMEDIATE` transaction (so
/// processes opening the same file at once apply each migration exactly once), and returns the
/// version it is at. A database at a newer version than `migrations` knows is refused with
/// [`StoreError::SchemaTooNew`] and left untouched.
pub(crate) async fn migrate(conn: &mut SqliteConnection, migrations: &[Migration]) -> Result<i64> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    match apply(conn, migrations).await {
        Ok(version) => {
            if let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
            Ok(version)
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

async fn apply(conn: &mut SqliteConnection, migrations: &[Migration]) -> Result<i64> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS francis_schema (
            version INTEGER PRIMARY KEY,
            name    TEXT NOT NULL
        ) STRICT",
    )
    .execute(&mut *conn)
    .await?;
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM francis_schema")
        .fetch_one(&mut *conn)
        .await?;
    let found = found.unwrap_or(0);
    let supported = migrations.last().map_or(0, |m| m.version);
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported }.into());
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        sqlx::raw_sql(m.sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| MigrateError::ExecuteMigration(e, m.version))?;
        sqlx::query("INSERT INTO francis_schema (version, name) VALUES (?1, ?2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(supported.max(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use sqlx::Connection;

    async fn memory() -> SqliteConnection {
        SqliteConnection::connect("sqlite::memory:").await.unwrap()
    }

    async fn versions(conn: &mut SqliteConnection) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM francis_schema ORDER BY version")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    #[test]
    fn versions_increase_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn applies_in_order_once() {
        let mut conn = memory().await;
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).await.unwrap(),
            SCHEMA_VERSION
        );
        // idempotent
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).await.unwrap(),
            SCHEMA_VERSION
        );
        let known: Vec<i64> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions(&mut conn).await, known);

        // a later build adds a migration: only it is applied
        let next_version = SCHEMA_VERSION + 1;
        let mut next = MIGRATIONS.to_vec();
        next.push(Migration {
            version: next_version,
            name: "extra",
            sql: "CREATE TABLE extra (x INTEGER) STRICT;",
        });
        assert_eq!(migrate(&mut conn, &next).await.unwrap(), next_version);
        let mut all = known.clone();
        all.push(next_version);
        assert_eq!(versions(&mut conn).await, all);

        // the older build now refuses the database
        match migrate(&mut conn, MIGRATIONS).await {
            Err(Error::Store(StoreError::SchemaTooNew { found, supported })) => {
                assert_eq!((found, supported), (next_version, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn failing_migration_changes_nothing_and_names_its_version() {
        let mut conn = memory().await;
        migrate(&mut conn, MIGRATIONS).await.unwrap();
        let broken_version = SCHEMA_VERSION + 1;
        let mut broken = MIGRATIONS.to_vec();
        broken.push(Migration {
            version: broken_version,
            name: "broken",
            sql: "CREATE TABLE half (x INTEGER) STRICT; THIS IS NOT SQL;",
        });
        let err = migrate(&mut conn, &broken).await.unwrap_err();
        assert!(
            matches!(err, Error::Migrate(MigrateError::ExecuteMigration(_, v)) if v == broken_version),
            "{err:?}"
        );
        assert_eq!(
            versions(&mut conn).await,
            (1..=SCHEMA_VERSION).collect::<Vec<_>>()
        );
        let half: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'half'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(half, 0, "the failed migration was rolled back");
        // the connection is usable afterwards
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).await.unwrap(),
            SCHEMA_VERSION
        );
    }
}
