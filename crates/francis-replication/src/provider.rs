//! [`ReplicatedProvider`] and the [`RaftRequestHandler`] that serves its peers.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use francis_store::policy::check_op;
use francis_store::{Op, Provider, Reply, StoreResult};
use francis_store_sqlite::SqliteProvider;
use francis_transport::proto::{Request, Response, request};
use francis_transport::{RequestHandler, Transport};

use crate::command::encoded_len;
use crate::config::ReplicationConfig;
use crate::error::ReplicationError;
use crate::node::{Forward, Node, ReplicationStatus};
use crate::policy;

/// Serves the replicated store's messages (Raft RPCs, forwarded requests) arriving on a
/// host's [`Transport`].
///
/// Create it before the transport (the transport needs a handler), pass it to the transport
/// (directly, or by dispatching `Request.raft` bodies to it), then hand it to
/// [`ReplicatedProvider::start`], which binds it to the node. Until then, and after the node
/// shuts down, requests are answered with an error.
#[derive(Debug, Clone, Default)]
pub struct RaftRequestHandler {
    node: Arc<RwLock<Weak<Node>>>,
}

impl RaftRequestHandler {
    /// A handler bound to no node yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn bind(&self, node: &Arc<Node>) {
        *self
            .node
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::downgrade(node);
    }

    fn unbind(&self) {
        *self
            .node
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Weak::new();
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.node
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .upgrade()
    }
}

#[async_trait]
impl RequestHandler for RaftRequestHandler {
    /// Answers `Request.raft`; any other body is [`Response::unsupported`].
    async fn handle(&self, _peer_host_id: &str, request: Request) -> Response {
        let Some(request::Body::Raft(raft)) = request.body else {
            return Response::unsupported();
        };
        match self.node() {
            Some(node) => node.handle(raft).await,
            None => Response::error(francis_transport::proto::WireError::new(
                francis_core::ErrorKind::HostUnavailable,
                "the replicated store is not running on this host",
                Some(Duration::from_millis(200)),
            )),
        }
    }
}

/// A [`Provider`] replicated with Raft: every write is a command in the log, applied by every
/// node to its own SQLite file; reads that decide anything are linearizable.
///
/// - **Writes** (everything but the six reads) go through the leader's log; a write on a
///   follower is forwarded to the leader. `Ok` means a majority stored the command and the
///   leader applied it; every node applies it in the same order.
/// - **Reads** (`live_hosts`, `lookup`, `count_placements`, `get_state`, `list_states`,
///   `get_alarm`) run on the leader after it confirmed, with a quorum, that it still is the
///   leader, so they see every write acknowledged before they started.
/// - **No quorum**: a call that cannot reach a leader with a quorum within
///   [`ReplicationConfig::quorum_timeout`] fails with [`StoreError::NoQuorum`] naming the
///   peers this node has not heard from; a leader that knows it lost its quorum refuses at
///   once, before proposing anything. A write that timed out after it was proposed may still
///   be applied later (like any timed-out write); one refused before proposing never is.
/// - A follower whose forwarded write got no answer from the leader reports
///   [`StoreError::Unavailable`] ("may or may not have been applied") rather than sending it
///   twice.
///
/// Cheap to clone. Call [`ReplicatedProvider::shutdown`] to stop the node.
#[derive(Debug, Clone)]
pub struct ReplicatedProvider {
    node: Arc<Node>,
    handler: RaftRequestHandler,
}

impl ReplicatedProvider {
    /// Opens the node's database (refusing one that belongs to another node), opens its Raft
    /// log, starts Raft, binds `handler`, and forms or joins the cluster: when no configured
    /// peer already belongs to a cluster, every node initializes the same membership computed
    /// from the peer list; when one does, this node waits to be replicated to (if it is a
    /// member) or asks to be added (if it is not).
    ///
    /// `transport` must be the one whose requests reach `handler`, and the advertised
    /// [`ReplicationConfig::address`] must reach it.
    pub async fn start(
        config: ReplicationConfig,
        transport: Transport,
        handler: &RaftRequestHandler,
    ) -> Result<Self, ReplicationError> {
        let node = Node::start(config, transport).await?;
        handler.bind(&node);
        let provider = ReplicatedProvider {
            node,
            handler: handler.clone(),
        };
        if let Err(e) = provider.node.form().await {
            provider.shutdown().await;
            return Err(e);
        }
        Ok(provider)
    }

    /// This node's id (see [`crate::node_id_of`]).
    pub fn node_id(&self) -> u64 {
        self.node.id
    }

    /// This node's advertised address.
    pub fn address(&self) -> &str {
        &self.node.address
    }

    /// The node's own SQLite store, as last applied (not linearizable: for diagnostics and
    /// tests).
    pub fn local_store(&self) -> &SqliteProvider {
        &self.node.store
    }

    /// How many entries this node's Raft log holds (it shrinks when a snapshot compacts it).
    pub async fn log_len(&self) -> Result<u64, ReplicationError> {
        Ok(self.node.log.len().await?)
    }

    /// What the node is doing: role, leader, members, unreachable peers.
    pub fn status(&self) -> ReplicationStatus {
        self.node.status()
    }

    /// Waits until this node has applied every entry up to `index`, or `timeout` passes.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.node
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait_applied")
            .await
            .is_ok()
    }

    /// Asks the cluster to build a snapshot on this node now and compact its log.
    pub async fn trigger_snapshot(&self) -> Result<(), ReplicationError> {
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))
    }

    /// Adds the node at `address` as a voting member. It must be running (started with this
    /// cluster's PSKs); the leader first brings it up to date (by snapshot when the log was
    /// compacted), then makes it a voter. Runs on the leader, forwarded if needed.
    pub async fn add_member(&self, address: &str) -> StoreResult<()> {
        self.node
            .run(Forward::AddMember(address.to_string()))
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Removes the node at `address` from the cluster's members.
    pub async fn remove_member(&self, address: &str) -> StoreResult<()> {
        self.node
            .run(Forward::RemoveMember(address.to_string()))
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Leaves the voter set, before a graceful stop: the other members keep a quorum without
    /// this node (the other of two workers goes on alone), and when this node starts again it
    /// asks to be added back as soon as it finds a running member. Does nothing when this
    /// node is the only voter or not a voter. Gives up after the quorum timeout when the
    /// others cannot be reached (then nothing changed). Returns whether it left.
    pub async fn leave(&self) -> StoreResult<bool> {
        self.node
            .leave(self.node.config.quorum_timeout)
            .await
            .map_err(Into::into)
    }

    /// Stops gracefully: requests this node runs as leader finish (up to the quorum timeout)
    /// while new ones forwarded to it are sent on to the next leader, then it stops Raft,
    /// unbinds the handler and closes the Raft log. Calls on any clone fail
    /// afterwards; the data file is closed when the last clone is dropped. The transport is
    /// left to its owner.
    pub async fn shutdown(&self) {
        self.node.begin_shutdown().await;
        self.handler.unbind();
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        self.node.log.close().await;
    }

    async fn run(&self, op: Op) -> StoreResult<Reply> {
        let reply = if op.is_write() {
            let limits = self.node.transport.limits();
            let max = policy::max_command_size(limits.max_message_size, limits.frame_headroom);
            let size = encoded_len(&op);
            policy::check_command_size(size, max)?;
            self.node.run_write(op, size).await
        } else {
            self.node.run(Forward::Op(op)).await
        };
        reply.map_err(Into::into)
    }
}

#[async_trait]
impl Provider for ReplicatedProvider {
    /// Runs the operations one after another, each as its own log entry (a write) or
    /// linearizable read; entries that commit together are applied in one transaction.
    ///
    /// Unlike the other backends, a batch here is not committed as a whole: each operation is
    /// atomic on its own, and one may be applied while a later one fails.
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.execute(op).await);
        }
        results
    }

    async fn execute(&self, op: Op) -> StoreResult<Reply> {
        check_op(&op)?;
        self.run(op).await
    }
}
