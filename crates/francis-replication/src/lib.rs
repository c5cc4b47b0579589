//! The replicated store: a [`francis_store::Provider`] whose every write is a command in a
//! Raft log (openraft 0.9) carried over `francis-transport`, applied by every node to its
//! **own** SQLite file through [`francis_store_sqlite::SqliteProvider`].
//!
//! The entry type is [`ReplicatedProvider`]; [`RaftRequestHandler`] serves the peers'
//! messages on the host's transport. See `docs/replication.md` for how it works and what it
//! guarantees (linearizable reads, fail-fast "no quorum", node identity, snapshots).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use francis_replication::{RaftRequestHandler, ReplicatedProvider, ReplicationConfig};
//! use francis_transport::{Transport, TransportConfig};
//!
//! let psk = b"example-runtime-psk-change-me-please".to_vec();
//! let handler = RaftRequestHandler::new();
//! let transport = Transport::start(
//!     TransportConfig::new("host-a", "127.0.0.1:7001".parse()?, vec![psk]),
//!     Arc::new(handler.clone()),
//! )?;
//! let peers = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
//! let config = ReplicationConfig::new("127.0.0.1:7001", peers, "data.db");
//! let store = ReplicatedProvider::start(config, transport.clone(), &handler).await?;
//! // ... use `store` as any francis_store::Provider ...
//! store.shutdown().await;
//! transport.shutdown().await;
//! # Ok(()) }
//! ```

mod command;
mod config;
mod error;
mod log_store;
mod network;
mod node;
mod policy;
mod proposer;
mod provider;
mod raft;

pub use config::{ReplicationConfig, initial_members, node_id_of};
pub use error::ReplicationError;
pub use node::ReplicationStatus;
pub use provider::{RaftRequestHandler, ReplicatedProvider};
