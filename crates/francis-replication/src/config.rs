//! What a replication node is configured with, and the node-id policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ReplicationError;

/// Everything [`crate::ReplicatedProvider::start`] needs.
///
/// Build it with [`ReplicationConfig::new`] and adjust the public fields. Trust between nodes
/// comes from the [`francis_transport::Transport`] the node is started with: only hosts with a
/// certificate from one of its PSKs can reach it or be reached.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicationConfig {
    /// This node's advertised peer address (`ip:port`), as the other members reach it. Its
    /// node id is [`node_id_of`] this string, so it must be spelled the same way everywhere.
    pub address: String,
    /// The addresses of every member of the cluster to form (may include [`Self::address`]).
    /// Every node of a new cluster must be given the same set.
    pub peers: Vec<String>,
    /// The node's own SQLite file (the provider's data). The Raft log lives next to it, in
    /// the same path with `-raft` appended to the file name.
    pub data_path: PathBuf,
    /// How often the leader sends heartbeats (default 250 ms).
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing from a leader for a random time in this range starts an
    /// election (default 1 s to 2 s).
    pub election_timeout: (Duration, Duration),
    /// How long a write or a linearizable read may wait for a leader and a quorum before it
    /// fails with `StoreError::NoQuorum` (default 5 s).
    pub quorum_timeout: Duration,
    /// Longest a single Raft RPC to a peer may take (default 2 s; snapshots get 10 times more).
    pub rpc_timeout: Duration,
    /// A snapshot is built after this many log entries since the last one (default 1000); the
    /// log before it is then purged, keeping [`Self::logs_to_keep`] entries.
    pub snapshot_every: u64,
    /// Log entries kept before the last snapshot, so slightly lagging followers catch up from
    /// the log rather than a snapshot (default 500).
    pub logs_to_keep: u64,
}

impl ReplicationConfig {
    /// A configuration with default timings.
    pub fn new(
        address: impl Into<String>,
        peers: Vec<String>,
        data_path: impl Into<PathBuf>,
    ) -> Self {
        ReplicationConfig {
            address: address.into(),
            peers,
            data_path: data_path.into(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            quorum_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(2),
            snapshot_every: 1000,
            logs_to_keep: 500,
        }
    }

    /// Checks the timings and addresses; [`crate::ReplicatedProvider::start`] calls it.
    pub fn validate(&self) -> Result<(), ReplicationError> {
        let bad = |m: String| Err(ReplicationError::InvalidConfig(m));
        if self.address.trim().is_empty() {
            return bad("address is empty".into());
        }
        if let Some(p) = self.peers.iter().find(|p| p.trim().is_empty()) {
            return bad(format!("peer address {p:?} is empty"));
        }
        let (min, max) = self.election_timeout;
        if self.heartbeat_interval.is_zero() || min <= self.heartbeat_interval || max <= min {
            return bad(format!(
                "need 0 < heartbeat_interval ({:?}) < election_timeout.0 ({min:?}) < election_timeout.1 ({max:?})",
                self.heartbeat_interval
            ));
        }
        if self.quorum_timeout.is_zero() || self.rpc_timeout.is_zero() {
            return bad("quorum_timeout and rpc_timeout must not be zero".into());
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be at least 1".into());
        }
        Ok(())
    }

    /// The Raft log's file: the data file's path with `-raft` appended.
    pub fn log_path(&self) -> PathBuf {
        let mut name = self.data_path.as_os_str().to_owned();
        name.push("-raft");
        PathBuf::from(name)
    }
}

/// A node's id: the first 8 bytes (big-endian) of the SHA-256 of its advertised address.
///
/// Stable across restarts, builds and platforms, and the same on every node, so a cluster's
/// initial membership can be computed independently by each member from the address list.
pub fn node_id_of(address: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, address.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(bytes)
}

/// The initial membership of a cluster: every peer address plus this node's own, by node id.
/// Every node given the same address set computes the same map.
pub fn initial_members(address: &str, peers: &[String]) -> BTreeMap<u64, String> {
    peers
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(address))
        .map(|a| (node_id_of(a), a.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        // Pinned: the id is part of every node's database, it must never change.
        assert_eq!(node_id_of("127.0.0.1:7000"), node_id_of("127.0.0.1:7000"));
        let expected = {
            let d = ring::digest::digest(&ring::digest::SHA256, b"127.0.0.1:7000");
            u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap())
        };
        assert_eq!(node_id_of("127.0.0.1:7000"), expected);
        assert_ne!(node_id_of("127.0.0.1:7000"), node_id_of("127.0.0.1:7001"));
    }

    #[test]
    fn initial_members_do_not_depend_on_order_or_self() {
        let a = initial_members("x:1", &["x:2".into(), "x:1".into(), "x:3".into()]);
        let b = initial_members("x:3", &["x:1".into(), "x:2".into()]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.get(&node_id_of("x:2")).map(String::as_str), Some("x:2"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let ok = ReplicationConfig::new("a:1", vec!["a:1".into()], "/tmp/x.db");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.log_path(), PathBuf::from("/tmp/x.db-raft"));
        let mut c = ok.clone();
        c.election_timeout = (c.heartbeat_interval, c.heartbeat_interval * 2);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.peers.push(" ".into());
        assert!(c.validate().is_err());
        let mut c = ok;
        c.snapshot_every = 0;
        assert!(c.validate().is_err());
    }
}
