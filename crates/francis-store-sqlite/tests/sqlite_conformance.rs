//! The conformance suite against the SQLite provider: a file in a temporary directory (also
//! reopened, for durability) and a private in-memory database.

use async_trait::async_trait;
use francis_store::testing::ProviderHarness;
use francis_store_sqlite::{SqliteOptions, SqliteProvider};

/// A database file in its own temporary directory.
struct FileHarness {
    dir: tempfile::TempDir,
    opened: usize,
}

impl FileHarness {
    fn new() -> Self {
        FileHarness {
            dir: tempfile::tempdir().expect("temporary directory"),
            opened: 0,
        }
    }
}

#[async_trait]
impl ProviderHarness for FileHarness {
    type Provider = SqliteProvider;

    async fn fresh(&mut self) -> SqliteProvider {
        self.opened += 1;
        let path = self.dir.path().join(format!("store-{}.db", self.opened));
        SqliteProvider::open(&path, SqliteOptions::default())
            .await
            .expect("open a fresh file")
    }

    async fn reopen(&mut self, provider: SqliteProvider) -> SqliteProvider {
        let location = provider.location().to_string();
        provider.close().await;
        SqliteProvider::open(&location, SqliteOptions::default())
            .await
            .expect("reopen the file")
    }
}

mod file {
    francis_store::provider_conformance_tests!(super::FileHarness::new(), reopen);
}

mod memory {
    francis_store::provider_conformance_tests!(francis_store::testing::harness_fn(|| async {
        francis_store_sqlite::SqliteProvider::in_memory()
            .await
            .expect("in-memory store")
    }));
}
