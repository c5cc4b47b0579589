//! This crate's own error: what its SQL can fail with, on the way to a [`StoreError`].

use francis_store::StoreError;

/// A failure inside this backend; callers see it as a [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The store's own answer (fenced, refused, bad input...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e,
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Results inside this crate.
pub(crate) type Result<T> = std::result::Result<T, Error>;
