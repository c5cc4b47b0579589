//! [`ReplicatedProvider`] and the [`RaftRequestHandler`] that serves its peers.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties};
use francis_store::{
    AlarmLease, AlarmOutcome, Fence, HostRecord, HostRegistration, LeaseRequest, LeasedAlarm,
    Placement, Provider, SqliteProvider, StateListPage, StateRecord, StoreError, StoreResult,
};
use francis_transport::proto::{Request, Response, request};
use francis_transport::{RequestHandler, Transport};

use crate::command::{Op, Outcome, alarm, leased_alarms};
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

    async fn run(&self, op: Op) -> StoreResult<Outcome> {
        let reply = if op.is_write() {
            let limits = self.node.transport.limits();
            let max = policy::max_command_size(limits.max_message_size, limits.frame_headroom);
            let size = op.encoded_len();
            policy::check_command_size(size, max)?;
            self.node.run_write(op, size).await
        } else {
            self.node.run(Forward::Op(op)).await
        };
        reply.map_err(Into::into)
    }
}

fn unexpected(op: &str, outcome: Outcome) -> StoreError {
    StoreError::Corrupt(format!("unexpected result for {op}: {outcome:?}"))
}

#[async_trait]
impl Provider for ReplicatedProvider {
    async fn register_host(
        &self,
        registration: &HostRegistration,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<()> {
        match self
            .run(Op::RegisterHost {
                registration: registration.clone(),
                now,
                ttl,
            })
            .await?
        {
            Outcome::Unit => Ok(()),
            o => Err(unexpected("register_host", o)),
        }
    }

    async fn heartbeat(&self, host_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        match self
            .run(Op::Heartbeat {
                host_id: host_id.to_string(),
                now,
            })
            .await?
        {
            Outcome::Unit => Ok(()),
            o => Err(unexpected("heartbeat", o)),
        }
    }

    async fn unregister_host(&self, host_id: &str) -> StoreResult<()> {
        match self
            .run(Op::UnregisterHost {
                host_id: host_id.to_string(),
            })
            .await?
        {
            Outcome::Unit => Ok(()),
            o => Err(unexpected("unregister_host", o)),
        }
    }

    async fn live_hosts(&self, now: DateTime<Utc>, ttl: Duration) -> StoreResult<Vec<HostRecord>> {
        match self.run(Op::LiveHosts { now, ttl }).await? {
            Outcome::Hosts(h) => Ok(h),
            o => Err(unexpected("live_hosts", o)),
        }
    }

    async fn claim(
        &self,
        actor: &ActorRef,
        candidate: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Placement> {
        match self
            .run(Op::Claim {
                actor: actor.clone(),
                candidate: candidate.to_string(),
                now,
                ttl,
            })
            .await?
        {
            Outcome::Placement(p) => Ok(p),
            o => Err(unexpected("claim", o)),
        }
    }

    async fn lookup(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Placement>> {
        match self
            .run(Op::Lookup {
                actor: actor.clone(),
                now,
                ttl,
            })
            .await?
        {
            Outcome::MaybePlacement(p) => Ok(p),
            o => Err(unexpected("lookup", o)),
        }
    }

    async fn release(&self, actor: &ActorRef, host_id: &str, epoch: u64) -> StoreResult<bool> {
        match self
            .run(Op::Release {
                actor: actor.clone(),
                host_id: host_id.to_string(),
                epoch,
            })
            .await?
        {
            Outcome::Bool(b) => Ok(b),
            o => Err(unexpected("release", o)),
        }
    }

    async fn count_placements(&self, host_id: &str, actor_type: &str) -> StoreResult<u64> {
        match self
            .run(Op::CountPlacements {
                host_id: host_id.to_string(),
                actor_type: actor_type.to_string(),
            })
            .await?
        {
            Outcome::Count(n) => Ok(n),
            o => Err(unexpected("count_placements", o)),
        }
    }

    async fn get_state(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StateRecord>> {
        match self
            .run(Op::GetState {
                actor: actor.clone(),
                now,
            })
            .await?
        {
            Outcome::State(s) => Ok(s.map(StateRecord::from)),
            o => Err(unexpected("get_state", o)),
        }
    }

    async fn set_state(
        &self,
        actor: &ActorRef,
        data: &[u8],
        expires_at: Option<DateTime<Utc>>,
        fence: Fence,
    ) -> StoreResult<()> {
        match self
            .run(Op::SetState {
                actor: actor.clone(),
                data: data.to_vec(),
                expires_at,
                fence,
            })
            .await?
        {
            Outcome::Unit => Ok(()),
            o => Err(unexpected("set_state", o)),
        }
    }

    async fn delete_state(&self, actor: &ActorRef, fence: Fence) -> StoreResult<bool> {
        match self
            .run(Op::DeleteState {
                actor: actor.clone(),
                fence,
            })
            .await?
        {
            Outcome::Bool(b) => Ok(b),
            o => Err(unexpected("delete_state", o)),
        }
    }

    async fn list_states(
        &self,
        actor_type: &str,
        after: Option<&str>,
        limit: u32,
        include_data: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<StateListPage> {
        match self
            .run(Op::ListStates {
                actor_type: actor_type.to_string(),
                after: after.map(str::to_string),
                limit,
                include_data,
                now,
            })
            .await?
        {
            Outcome::Page(p) => Ok(p.into()),
            o => Err(unexpected("list_states", o)),
        }
    }

    async fn delete_expired_state(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        match self.run(Op::DeleteExpiredState { now }).await? {
            Outcome::Count(n) => Ok(n),
            o => Err(unexpected("delete_expired_state", o)),
        }
    }

    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> StoreResult<()> {
        match self
            .run(Op::set_alarm(actor, name, properties, fence))
            .await?
        {
            Outcome::Unit => Ok(()),
            o => Err(unexpected("set_alarm", o)),
        }
    }

    async fn get_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
    ) -> StoreResult<Option<AlarmProperties>> {
        match self
            .run(Op::GetAlarm {
                actor: actor.clone(),
                name: name.to_string(),
            })
            .await?
        {
            Outcome::Alarm(a) => alarm(a),
            o => Err(unexpected("get_alarm", o)),
        }
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str, fence: Fence) -> StoreResult<bool> {
        match self
            .run(Op::DeleteAlarm {
                actor: actor.clone(),
                name: name.to_string(),
                fence,
            })
            .await?
        {
            Outcome::Bool(b) => Ok(b),
            o => Err(unexpected("delete_alarm", o)),
        }
    }

    async fn lease_alarms(
        &self,
        request: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LeasedAlarm>> {
        match self
            .run(Op::LeaseAlarms {
                request: request.clone(),
                now,
            })
            .await?
        {
            Outcome::Leased(l) => leased_alarms(l),
            o => Err(unexpected("lease_alarms", o)),
        }
    }

    async fn renew_alarm_leases(
        &self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> StoreResult<Vec<AlarmLease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .run(Op::RenewAlarmLeases {
                host_id: host_id.to_string(),
                leases: leases.to_vec(),
                now,
                lease_duration,
            })
            .await?
        {
            Outcome::Leases(l) => Ok(l),
            o => Err(unexpected("renew_alarm_leases", o)),
        }
    }

    async fn complete_alarm(&self, lease: &AlarmLease, outcome: AlarmOutcome) -> StoreResult<bool> {
        match self
            .run(Op::CompleteAlarm {
                lease: lease.clone(),
                outcome,
            })
            .await?
        {
            Outcome::Bool(b) => Ok(b),
            o => Err(unexpected("complete_alarm", o)),
        }
    }

    async fn release_alarm(&self, lease: &AlarmLease) -> StoreResult<bool> {
        match self
            .run(Op::ReleaseAlarm {
                lease: lease.clone(),
            })
            .await?
        {
            Outcome::Bool(b) => Ok(b),
            o => Err(unexpected("release_alarm", o)),
        }
    }
}
