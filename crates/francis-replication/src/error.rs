//! The crate's error type.

/// Why a replication node could not start or change the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The configuration is inconsistent; the message names the field.
    #[error("invalid replication configuration: {0}")]
    InvalidConfig(String),
    /// The database was created by another node.
    #[error(
        "this database belongs to node {node_id} at address {address}, not to node {expected_id} at {expected_address}; \
         advertise {address} again or use another data directory"
    )]
    IdentityMismatch {
        /// The node id stored in the database.
        node_id: u64,
        /// The address stored in the database.
        address: String,
        /// This node's id.
        expected_id: u64,
        /// This node's address.
        expected_address: String,
    },
    /// The node's database (data or Raft log) failed.
    #[error("store error: {0}")]
    Store(#[from] francis_store::StoreError),
    /// The Raft log database failed.
    #[error("raft log database error: {0}")]
    LogDatabase(#[from] sqlx::Error),
    /// Raft itself failed (fatal) or refused the operation.
    #[error("raft error: {0}")]
    Raft(String),
}
