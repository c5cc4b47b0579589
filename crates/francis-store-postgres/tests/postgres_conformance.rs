//! The conformance suite against the PostgreSQL provider, on the database named by
//! `FRANCIS_TEST_POSTGRES_URL`. Each test works in tables of its own (a unique prefix), dropped
//! when it ends; without the variable every test says it is skipped and returns.

use async_trait::async_trait;
use francis_store::testing::ProviderHarness;
use francis_store_postgres::{PostgresProvider, PostgresTestTables, TEST_POSTGRES_URL_ENV};

/// Every `fresh` store gets its own prefix; `reopen` reconnects to the same one.
struct PgHarness {
    url: String,
    tables: Vec<PostgresTestTables>,
}

impl PgHarness {
    fn from_env() -> Option<Self> {
        let url = std::env::var(TEST_POSTGRES_URL_ENV).ok()?;
        (!url.trim().is_empty()).then(|| PgHarness {
            url,
            tables: Vec::new(),
        })
    }
}

#[async_trait]
impl ProviderHarness for PgHarness {
    type Provider = PostgresProvider;

    async fn fresh(&mut self) -> PostgresProvider {
        let tables = PostgresTestTables::new(self.url.clone());
        let provider = tables.connect().await;
        self.tables.push(tables);
        provider
    }

    async fn reopen(&mut self, provider: PostgresProvider) -> PostgresProvider {
        let prefix = provider.table_prefix().to_owned();
        provider.close().await;
        let tables = self
            .tables
            .iter()
            .find(|t| t.prefix() == prefix)
            .expect("a store this harness made");
        tables.connect().await
    }
}

/// The harness, or (from inside a generated test) a printed skip line and an early return.
macro_rules! harness_or_skip {
    () => {
        match crate::PgHarness::from_env() {
            Some(harness) => harness,
            None => {
                println!(
                    "skipped: {} is not set (the PostgreSQL conformance suite needs a database)",
                    ::francis_store_postgres::TEST_POSTGRES_URL_ENV
                );
                return;
            }
        }
    };
}

mod postgres {
    francis_store::provider_conformance_tests!(harness_or_skip!(), reopen);
}

#[test]
fn postgres_tests_skipped_without_url() {
    match PgHarness::from_env() {
        None => {
            println!(
                "skipped: {TEST_POSTGRES_URL_ENV} is not set; the PostgreSQL conformance tests \
                 return at once"
            );
            assert!(PostgresTestTables::from_env().is_none());
        }
        Some(h) => {
            println!("PostgreSQL conformance suite runs against {TEST_POSTGRES_URL_ENV}");
            assert!(!h.url.trim().is_empty());
        }
    }
}
