//! Test support: a private table prefix in a test database, dropped afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::{PostgresOptions, PostgresProvider};

/// The environment variable naming the PostgreSQL database tests run against, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Tests needing it skip (saying so) when unset.
pub const TEST_POSTGRES_URL_ENV: &str = "FRANCIS_TEST_POSTGRES_URL";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A table prefix no other test (in this process or any other) uses, in the database named by
/// [`TEST_POSTGRES_URL_ENV`]. Every table and sequence with the prefix is dropped when this
/// is dropped (also when the test panics).
#[derive(Debug)]
pub struct PostgresTestTables {
    url: String,
    prefix: String,
}

impl PostgresTestTables {
    /// A fresh prefix in the database of [`TEST_POSTGRES_URL_ENV`]; `None` when it is unset or
    /// empty.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var(TEST_POSTGRES_URL_ENV).ok()?;
        (!url.trim().is_empty()).then(|| Self::new(url))
    }

    /// A fresh prefix in the database at `url`: `ft_<pid>_<counter>_<clock bits>_`.
    pub fn new(url: impl Into<String>) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(7)
            });
        PostgresTestTables {
            url: url.into(),
            prefix: format!("ft_{:x}_{n}_{nanos:x}_", std::process::id()),
        }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The private table prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Options with the private prefix and a small pool.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::default()
            .table_prefix(self.prefix.clone())
            .pool_size(4)
            .acquire_timeout(Duration::from_secs(10))
    }

    /// A provider on the private prefix (panics if the database cannot be reached).
    pub async fn connect(&self) -> PostgresProvider {
        self.connect_with(self.options()).await
    }

    /// A provider on the private prefix with other options (the prefix is forced).
    pub async fn connect_with(&self, options: PostgresOptions) -> PostgresProvider {
        PostgresProvider::connect(&self.url, options.table_prefix(self.prefix.clone()))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"))
    }

    /// Drops every table and sequence whose name starts with the prefix; returns how many.
    pub async fn drop_tables(&self) -> Result<usize, sqlx::Error> {
        drop_prefixed(&self.url, &self.prefix).await
    }
}

async fn drop_prefixed(url: &str, prefix: &str) -> Result<usize, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let names: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'S')
           AND starts_with(c.relname::text, $1)
         ORDER BY c.relkind",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await?;
    for (name, kind) in &names {
        let what = if kind == "S" { "SEQUENCE" } else { "TABLE" };
        let quoted = name.replace('"', "\"\"");
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP {what} IF EXISTS \"{quoted}\" CASCADE"
        )))
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    Ok(names.len())
}

impl Drop for PostgresTestTables {
    fn drop(&mut self) {
        if self.prefix.is_empty() {
            return;
        }
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // Drop may run inside a runtime (which must not be blocked on) or outside any: a
        // thread of its own with its own runtime works in both.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop test tables");
            runtime.block_on(drop_prefixed(&url, &prefix))
        })
        .join();
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not drop test tables {}*: {e}", self.prefix),
            Err(_) => eprintln!("dropping test tables {}* panicked", self.prefix),
        }
    }
}
