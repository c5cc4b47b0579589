//! A running replication node: its Raft instance, its own store, and the leader-finding loop
//! every provider call and forwarded request goes through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use francis_store::{Op, Provider, Reply, StoreError};
use francis_store_sqlite::{Durability, SqliteOptions, SqliteProvider};
use francis_transport::Transport;
use francis_transport::proto::{RaftReply, RaftRequest, Response, WireError, raft_reply, response};
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, InitializeError, RaftError,
};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::error::Elapsed;

use crate::command::{Answer, WireStoreError};
use crate::config::{ReplicationConfig, initial_members, node_id_of};
use crate::error::ReplicationError;
use crate::log_store::LogStore;
use crate::network::{CallError, Contacts, Network, call, kind, rpc_deadline};
use crate::policy::{self, max_command_size};
use crate::proposer::{Proposed, Proposer};
use crate::raft::{StateMachine, TypeConfig};

type NodeId = u64;

/// Metadata key of the node's identity (local: never in a snapshot).
const IDENTITY_KEY: &str = "local.node";

/// Requests a node forwards to the leader (or asks any member).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Forward {
    /// A provider operation.
    Op(Op),
    /// Adds the node at this address as a voter.
    AddMember(String),
    /// Removes the node at this address.
    RemoveMember(String),
    /// Whether the callee belongs to a cluster, and its members (answered by any node).
    Status,
}

/// A node's answer to [`Forward::Status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    initialized: bool,
    members: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    address: String,
}

/// What a node is doing, for health checks and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationStatus {
    /// This node's id.
    pub node_id: u64,
    /// This node's address.
    pub address: String,
    /// Leader, follower, candidate or learner.
    pub role: String,
    /// The leader's address, when one is known.
    pub leader: Option<String>,
    /// The voting members' addresses.
    pub members: Vec<String>,
    /// Voting members this node has not exchanged a message with recently.
    pub unreachable: Vec<String>,
    /// The index of the last log entry applied to this node's database.
    pub last_applied: Option<u64>,
    /// The index of the last log entry included in a snapshot.
    pub snapshot: Option<u64>,
    /// The index of the last log entry removed from this node's log (compacted away).
    pub purged: Option<u64>,
}

/// One replication node.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) address: String,
    pub(crate) config: ReplicationConfig,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) store: Arc<SqliteProvider>,
    pub(crate) log: LogStore,
    pub(crate) transport: Transport,
    pub(crate) contacts: Arc<Contacts>,
    /// Proposes this node's writes as leader, batching those that wait.
    proposer: Proposer,
    /// Bounds the requests this node forwards at once (below the transport's per-connection
    /// limit, so a burst of calls queues here instead of being refused as overloaded).
    forwarding: tokio::sync::Semaphore,
    /// Set once the node begins to shut down: it proposes nothing more, and tells peers that
    /// forward to it to look for another leader.
    stopping: std::sync::atomic::AtomicBool,
    /// Held (shared) by every request this node runs as leader; shutting down takes it
    /// exclusively, so the requests already running finish before Raft stops.
    in_flight: tokio::sync::RwLock<()>,
}

/// The result of a membership change.
type MembershipResult<T> = Result<T, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

/// Requests a node forwards to the leader at once.
const MAX_FORWARDING: usize = 64;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Checks (or records, on first start) which node a database belongs to.
pub(crate) async fn check_identity(
    store: &SqliteProvider,
    id: NodeId,
    address: &str,
) -> Result<(), ReplicationError> {
    match store.meta(IDENTITY_KEY).await? {
        Some(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("unreadable node identity in the database: {e}"))
            })?;
            if found.node_id != id || found.address != address {
                return Err(ReplicationError::IdentityMismatch {
                    node_id: found.node_id,
                    address: found.address,
                    expected_id: id,
                    expected_address: address.to_string(),
                });
            }
            Ok(())
        }
        None => {
            let identity = Identity {
                node_id: id,
                address: address.to_string(),
            };
            let bytes = serde_json::to_vec(&identity).expect("an identity always encodes");
            store.set_meta(IDENTITY_KEY, &bytes).await?;
            Ok(())
        }
    }
}

/// The members to ask to add this node to a running cluster: the members its running peers
/// reported, or, when none reported any yet (a peer that just initialized may not know its
/// membership), those peers themselves, which pass the request on to their leader.
fn join_contacts(running: Vec<Status>, peers: &[String]) -> Vec<String> {
    let views: Vec<Vec<String>> = running.into_iter().map(|s| s.members).collect();
    let mut contacts = policy::reported_members(&views);
    if contacts.is_empty() {
        contacts = peers.to_vec();
    }
    contacts
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    pub(crate) async fn start(
        config: ReplicationConfig,
        transport: Transport,
    ) -> Result<Arc<Node>, ReplicationError> {
        config.validate()?;
        let id = node_id_of(&config.address);
        // Applied without a sync of its own: the log is durable before an entry commits, a
        // crash replays it from the apply marker, and a snapshot syncs before the log behind
        // it may be purged.
        let options = SqliteOptions::default().durability(Durability::Normal);
        let store = Arc::new(SqliteProvider::open(&config.data_path, options).await?);
        if let Err(e) = check_identity(&store, id, &config.address).await {
            if let Ok(store) = Arc::try_unwrap(store) {
                store.close().await;
            }
            return Err(e);
        }
        let log = LogStore::open(&config.log_path()).await?;
        // What the database holds is synced before openraft starts: it may purge the log up to
        // the applied entry as it starts, and the database was applied without syncs.
        store.make_durable().await?;
        let applied = store.meta(crate::raft::APPLIED_KEY).await?;
        let applied: Option<openraft::LogId<NodeId>> = applied
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| ReplicationError::Raft(format!("unreadable apply marker: {e}")))?;
        log.purge_gate().durable(applied);
        let raft_config = openraft::Config {
            cluster_name: "francis".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout.0),
            election_timeout_max: millis(config.election_timeout.1),
            install_snapshot_timeout: millis(config.rpc_timeout * 10),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.logs_to_keep,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicationError::InvalidConfig(e.to_string()))?;
        let contacts = Arc::new(Contacts::default());
        let network = Network {
            transport: transport.clone(),
            contacts: contacts.clone(),
            rpc_timeout: config.rpc_timeout,
        };
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            network,
            log.clone(),
            StateMachine::new(store.clone(), log.purge_gate()),
        )
        .await
        .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        let limits = transport.limits();
        let proposer = Proposer::start(
            raft.clone(),
            max_command_size(limits.max_message_size, limits.frame_headroom),
        );
        Ok(Arc::new(Node {
            id,
            proposer,
            address: config.address.clone(),
            config,
            raft,
            store,
            log,
            transport,
            contacts,
            forwarding: tokio::sync::Semaphore::new(MAX_FORWARDING),
            stopping: std::sync::atomic::AtomicBool::new(false),
            in_flight: tokio::sync::RwLock::new(()),
        }))
    }

    /// Forms the cluster or joins it (see docs/replication.md, "Forming and changing the cluster").
    pub(crate) async fn form(self: &Arc<Self>) -> Result<(), ReplicationError> {
        self.record_metrics();
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        if initialized {
            self.watch_membership();
            return Ok(());
        }
        let members = initial_members(&self.address, &self.config.peers);
        let others: Vec<String> = members
            .values()
            .filter(|a| **a != self.address)
            .cloned()
            .collect();
        let running = self.running_peers(&others).await;
        if running.is_empty() {
            let nodes: BTreeMap<NodeId, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode { addr }))
                .collect();
            match self.raft.initialize(nodes).await {
                Ok(()) => tracing::info!(node = self.id, "initialized the cluster"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ReplicationError::Raft(e.to_string())),
            }
        } else if running.iter().any(|s| s.members.contains(&self.address)) {
            tracing::info!(
                node = self.id,
                "already a member of the running cluster; waiting for its leader"
            );
        } else {
            // A running cluster that does not know this node: ask one of its members to add
            // us, in the background (the leader first brings this node up to date).
            self.rejoin_with(join_contacts(running, &others), true);
        }
        Ok(())
    }

    /// Asks `contacts` in turn, in the background, until one succeeds, to add this node as a
    /// voter (forwarded to the leader, which first brings this node up to date). Stops once
    /// this node is a member in its own view, when `trust_own_view` (a node that never
    /// belonged to the cluster learns its membership only from the leader), or when the node
    /// stops.
    fn rejoin_with(self: &Arc<Self>, contacts: Vec<String>, trust_own_view: bool) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            for via in contacts.iter().cycle() {
                let Some(node) = node.upgrade() else { return };
                if node.is_stopping() {
                    return;
                }
                if trust_own_view && node.members().1.contains(&node.id) {
                    tracing::info!(node = node.id, "a member of the cluster");
                    return;
                }
                let request = Forward::AddMember(node.address.clone());
                let budget = node.budget(&request);
                match call::<_, Answer>(&node.transport, via, kind::FORWARD, &request, budget).await
                {
                    Ok(Ok(_)) => {
                        tracing::info!(node = node.id, %via, "joined the cluster");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node = node.id, %via, error = ?e, "cannot join the cluster yet; retrying");
                    }
                    Err(e) => {
                        tracing::warn!(node = node.id, %via, error = %e, "cannot join the cluster yet; retrying");
                    }
                }
                let pause = node.config.election_timeout.1;
                drop(node);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Keeps the replicated store's gauges up to date from openraft's metrics, labelled with
    /// this node's address, until the node's Raft instance stops: `francis_replication_leader`
    /// (1 while this node leads), `francis_replication_term`, `francis_replication_last_log_index`,
    /// `francis_replication_applied_index`, `francis_replication_apply_lag` (entries in the log
    /// not applied yet) and, on the leader, `francis_replication_follower_lag` (entries a
    /// follower lacks, labelled with its id).
    fn record_metrics(self: &Arc<Self>) {
        let mut watch = self.raft.metrics();
        let node = self.address.clone();
        tokio::spawn(async move {
            // Followers whose lag was reported while this node led: zeroed once it does not.
            let mut reported: BTreeSet<NodeId> = BTreeSet::new();
            loop {
                {
                    let m = watch.borrow_and_update();
                    let label = node.clone();
                    let leads = m.current_leader == Some(m.id);
                    let last = m.last_log_index.unwrap_or(0);
                    let applied = m.last_applied.map_or(0, |l| l.index);
                    metrics::gauge!("francis_replication_leader", "node" => label.clone())
                        .set(if leads { 1.0 } else { 0.0 });
                    metrics::gauge!("francis_replication_term", "node" => label.clone())
                        .set(m.current_term as f64);
                    metrics::gauge!("francis_replication_last_log_index", "node" => label.clone())
                        .set(last as f64);
                    metrics::gauge!("francis_replication_applied_index", "node" => label.clone())
                        .set(applied as f64);
                    metrics::gauge!("francis_replication_apply_lag", "node" => label.clone())
                        .set(last.saturating_sub(applied) as f64);
                    let mut now: BTreeSet<NodeId> = BTreeSet::new();
                    for (id, matched) in m.replication.iter().flatten() {
                        if *id == m.id {
                            continue;
                        }
                        let behind = last.saturating_sub(matched.map_or(0, |l| l.index));
                        metrics::gauge!("francis_replication_follower_lag",
                            "node" => label.clone(), "follower" => id.to_string())
                        .set(behind as f64);
                        now.insert(*id);
                    }
                    for gone in reported.difference(&now) {
                        metrics::gauge!("francis_replication_follower_lag",
                            "node" => label.clone(), "follower" => gone.to_string())
                        .set(0.0);
                    }
                    reported = now;
                }
                if watch.changed().await.is_err() {
                    // The Raft instance stopped: this node leads nothing any more.
                    metrics::gauge!("francis_replication_leader", "node" => node).set(0.0);
                    return;
                }
            }
        });
    }

    /// Watches, for a node that already belongs to a cluster (restarted with its log), whether
    /// the running cluster still counts it as a member: a node that left the voter set when
    /// it stopped ([`Node::leave`]) is not, and asks to be added again as soon as it finds a
    /// running member that does not list it. It looks every election timeout until it finds
    /// a running member (either way), or the node stops.
    pub(crate) fn watch_membership(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = node.upgrade() else { return };
                if me.is_stopping() {
                    return;
                }
                let others: Vec<String> = initial_members(&me.address, &me.config.peers)
                    .into_values()
                    .chain(me.members().0.into_iter().map(|(_, a)| a))
                    .filter(|a| *a != me.address)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let running = me.running_peers(&others).await;
                let views: Vec<Vec<String>> = running.into_iter().map(|s| s.members).collect();
                match policy::membership_seen(&me.address, &views) {
                    policy::MembershipSeen::Member => return,
                    policy::MembershipSeen::Removed(contacts) => {
                        tracing::info!(
                            node = me.id,
                            "the running cluster no longer lists this node (it left when it \
                             stopped): asking to join again"
                        );
                        me.rejoin_with(contacts, false);
                        return;
                    }
                    policy::MembershipSeen::NobodyRunning => {}
                }
                let pause = me.config.election_timeout.1;
                drop(me);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// The status of each of `peers` that answers and belongs to a cluster.
    async fn running_peers(&self, peers: &[String]) -> Vec<Status> {
        let probe = self.config.rpc_timeout;
        let probes = peers.iter().map(|addr| {
            let transport = self.transport.clone();
            let addr = addr.clone();
            async move {
                call::<_, Status>(&transport, &addr, kind::FORWARD, &Forward::Status, probe)
                    .await
                    .ok()
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .filter(|s| s.initialized)
            .collect()
    }

    /// Leaves the voter set before a graceful stop, so the others keep a quorum without this
    /// node (two workers: the other one goes on alone). Does nothing when this node is the
    /// only voter or not a voter. Gives up after `budget` (the others may be unreachable: a
    /// crash of one of two then stops the other's writes, as it must). Returns whether this
    /// node left.
    pub(crate) async fn leave(&self, budget: Duration) -> Result<bool, WireStoreError> {
        let (_, voters) = self.members();
        if !policy::should_leave(self.id, &voters) {
            return Ok(false);
        }
        let request = Forward::RemoveMember(self.address.clone());
        self.run_within(request, budget, None).await?;
        // the host says so, naming itself
        tracing::debug!(node = self.id, "left the voter set before stopping");
        Ok(true)
    }

    /// Begins a graceful shutdown: from now on, requests forwarded to this node are sent on
    /// to the next leader, and calls on it fail at once; the requests it already runs as
    /// leader get up to the quorum timeout to finish. Raft is stopped afterwards.
    pub(crate) async fn begin_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if tokio::time::timeout(self.config.quorum_timeout, self.in_flight.write())
            .await
            .is_err()
        {
            tracing::warn!(
                node = self.id,
                "requests still running at shutdown were cut short"
            );
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The members (id, address) of the current effective membership.
    fn members(&self) -> (Vec<(NodeId, String)>, BTreeSet<NodeId>) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let nodes = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let voters = membership.voter_ids().collect();
        (nodes, voters)
    }

    fn address_of(&self, id: NodeId) -> Option<String> {
        self.members()
            .0
            .into_iter()
            .find(|(n, _)| *n == id)
            .map(|(_, a)| a)
    }

    fn reach_window(&self) -> Duration {
        (self.config.election_timeout.1 * 2).max(self.config.heartbeat_interval * 4)
    }

    /// Voting members (other than this node) not heard from recently, by address.
    ///
    /// A follower talks only to its leader: while it hears from the leader, it reports
    /// nothing (the leader, which talks to everyone, reports the rest).
    pub(crate) fn unreachable(&self) -> Vec<String> {
        let (nodes, voters) = self.members();
        let window = self.reach_window();
        let leader = self.raft.metrics().borrow().current_leader;
        if let Some(leader) = leader.filter(|l| *l != self.id)
            && self.contacts.unreachable(&[leader], window).is_empty()
        {
            return Vec::new();
        }
        let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != self.id).collect();
        let ids = self.contacts.unreachable(&others, window);
        let mut names: Vec<String> = nodes
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(_, a)| a.clone())
            .collect();
        names.sort();
        names
    }

    fn no_quorum(&self) -> WireStoreError {
        let mut unreachable = self.unreachable();
        tracing::debug!(node = self.id, ?unreachable, "no quorum");
        if unreachable.is_empty() {
            // Every peer answered lately, yet no quorum formed: name them all.
            let (nodes, voters) = self.members();
            unreachable = nodes
                .into_iter()
                .filter(|(id, _)| *id != self.id && voters.contains(id))
                .map(|(_, a)| a)
                .collect();
            unreachable.sort();
        }
        WireStoreError::NoQuorum { unreachable }
    }

    /// Whether this node has lost contact with a majority of the voters: the latest exchange
    /// with too many of them failed, recently.
    fn lost_quorum(&self) -> bool {
        self.majority_lost(|others| self.contacts.unreachable(others, self.reach_window()))
    }

    /// [`Node::lost_quorum`] for a follower deciding whether to forward at all, and for a leader
    /// deciding whether a failed round of read heartbeats is worth repeating: only peers that
    /// failed lately *and* answered nothing for a whole window (counting from this node's
    /// start) count as lost, so a node that just started or saw one failed exchange still
    /// tries. The window is the maximum election timeout.
    fn lost_quorum_for_long(&self) -> bool {
        // Silent for a whole maximum election timeout: a follower would have started an
        // election by then, so its leader is gone rather than slow.
        let window = self.config.election_timeout.1;
        self.majority_lost(|others| self.contacts.gone(others, window))
    }

    fn majority_lost(&self, lost: impl Fn(&[NodeId]) -> Vec<NodeId>) -> bool {
        let (_, voters) = self.members();
        if voters.is_empty() {
            // No membership known yet (a node starting): nothing is lost, it is being formed.
            return false;
        }
        let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != self.id).collect();
        let unreachable = lost(&others).len();
        let reached = voters.len() - unreachable; // this node counts if it is a voter
        let reached = if voters.contains(&self.id) {
            reached
        } else {
            reached.saturating_sub(1)
        };
        !crate::policy::is_majority(reached, voters.len())
    }

    fn not_leader(&self, leader: Option<NodeId>) -> WireStoreError {
        WireStoreError::NotLeader {
            leader: leader.and_then(|l| self.address_of(l)),
        }
    }

    /// Runs a forwarded request here, as the leader; `NotLeader` if this node is not it.
    /// Runs `request` as the leader. `size` is a write's encoded size when the caller already
    /// counted it (a write of this node's own); otherwise it is counted here.
    async fn as_leader(&self, request: Forward, deadline: Instant, size: Option<usize>) -> Answer {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Taken before the check: a shutdown that began after it waits for this request.
        let _running = self.in_flight.read().await;
        if self.is_stopping() {
            // Stopping (or stopped): whoever asked should find the next leader, not take
            // "raft stopped" for an answer.
            return Err(self.not_leader(None));
        }
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) && !matches!(request, Forward::Status) {
            // Openraft would say so too; answering before the quorum check keeps a stale
            // caller from taking this follower's view of its peers for the leader's.
            return Err(self.not_leader(leader));
        }
        match request {
            Forward::Status => Ok(Reply::Unit),
            Forward::Op(op) if op.is_write() => {
                if self.lost_quorum() {
                    return Err(self.no_quorum());
                }
                let size = size.unwrap_or_else(|| crate::command::encoded_len(&op));
                match tokio::time::timeout(remaining, self.proposer.propose(op, size)).await {
                    Ok(Proposed::Applied(answer)) => answer,
                    Ok(Proposed::NotLeader(leader)) => Err(self.not_leader(leader)),
                    Ok(Proposed::Failed(e)) => Err(WireStoreError::Unavailable(e)),
                    Err(_) => Err(self.no_quorum()),
                }
            }
            Forward::Op(op) => {
                // No fast refusal from old contact records here: a leader elected a moment
                // ago may still hold failures from before its peers came back. One round of
                // heartbeats answers for the quorum; only when it fails do the records say
                // whether to try again.
                loop {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(remaining, self.raft.ensure_linearizable()).await {
                        Ok(Ok(_)) => {
                            return self
                                .store
                                .execute(op)
                                .await
                                .map_err(|e| WireStoreError::from(&e));
                        }
                        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                            return Err(self.not_leader(f.leader_id));
                        }
                        // One round of heartbeats found no quorum (a peer slow to answer, or
                        // just starting): ask again while the budget lasts, unless a majority
                        // has been silent for a whole election timeout (gone, not slow).
                        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))))
                            if Instant::now() + self.config.heartbeat_interval < deadline
                                && !self.lost_quorum_for_long() =>
                        {
                            tokio::time::sleep(self.config.heartbeat_interval / 2).await;
                        }
                        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))))
                        | Err(_) => return Err(self.no_quorum()),
                        Ok(Err(e)) => return Err(WireStoreError::Unavailable(e.to_string())),
                    }
                }
            }
            Forward::AddMember(address) => {
                let id = node_id_of(&address);
                let node = BasicNode { addr: address };
                self.change_members(deadline, || async {
                    self.raft.add_learner(id, node.clone(), true).await?;
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                })
                .await
            }
            Forward::RemoveMember(address) => {
                let id = node_id_of(&address);
                self.change_members(deadline, || {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                })
                .await
            }
        }
    }

    /// Runs a membership change, waiting while another one is still in progress.
    async fn change_members<T, F, Fut>(&self, deadline: Instant, mut change: F) -> Answer
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = MembershipResult<T>>,
    {
        let mut metrics = self.raft.metrics();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, change()).await {
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if Instant::now() < deadline => {
                    let wait = self.config.heartbeat_interval;
                    let _ = tokio::time::timeout(wait, metrics.changed()).await;
                }
                other => return self.membership_result(other),
            }
        }
    }

    fn membership_result<T>(&self, r: Result<MembershipResult<T>, Elapsed>) -> Answer {
        match r {
            Ok(Ok(_)) => Ok(Reply::Unit),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(WireStoreError::InvalidArgument(e.to_string()))
            }
            Ok(Err(e)) => Err(WireStoreError::Unavailable(e.to_string())),
            Err(_) => Err(self.no_quorum()),
        }
    }

    /// How long a request may look for a leader and a quorum.
    fn budget(&self, request: &Forward) -> Duration {
        match request {
            Forward::AddMember(_) | Forward::RemoveMember(_) => self.config.quorum_timeout * 6,
            _ => self.config.quorum_timeout,
        }
    }

    /// Runs a request on the leader, here or over the transport, retrying while the leader
    /// is unknown or moving, until the quorum timeout.
    pub(crate) async fn run(&self, request: Forward) -> Answer {
        let budget = self.budget(&request);
        self.run_within(request, budget, None).await
    }

    /// A write of `size` encoded bytes: [`Node::run`] with time to ship it counted in.
    pub(crate) async fn run_write(&self, op: Op, size: usize) -> Answer {
        let budget = rpc_deadline(self.config.quorum_timeout, size);
        self.run_within(Forward::Op(op), budget, Some(size)).await
    }

    async fn run_within(&self, request: Forward, budget: Duration, size: Option<usize>) -> Answer {
        if self.is_stopping() {
            return Err(WireStoreError::Unavailable(
                "replication on this node is shutting down".into(),
            ));
        }
        let deadline = Instant::now() + budget;
        let mut metrics = self.raft.metrics();
        // A leader named by the node we asked, tried once before waiting for our own view.
        let mut hint: Option<String> = None;
        let mut hops = 0;
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            let attempt = match (hint.take(), leader) {
                (Some(addr), _) if addr != self.address => {
                    self.forward(node_id_of(&addr), &addr, &request, deadline)
                        .await
                }
                (_, Some(l)) if l == self.id => {
                    self.as_leader(request.clone(), deadline, size).await
                }
                (_, Some(l)) => match self.address_of(l) {
                    Some(addr) => self.forward(l, &addr, &request, deadline).await,
                    None => Err(self.not_leader(None)),
                },
                // No leader, and a majority silent for a whole election timeout (this node's
                // own election reaches nobody): no leader is coming soon, answer at once as a
                // leader that lost its quorum does, instead of waiting out the budget.
                (_, None) if self.lost_quorum_for_long() => return Err(self.no_quorum()),
                (_, None) => Err(self.not_leader(None)),
            };
            match attempt {
                Err(WireStoreError::NotLeader { leader }) => {
                    // Follow a named leader at once, twice at most between waits (stale
                    // nodes may name each other).
                    let named = leader.is_some();
                    hint = leader;
                    if named && hops < 2 && Instant::now() < deadline {
                        hops += 1;
                        continue;
                    }
                    hops = 0;
                }
                other => return other,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.no_quorum());
            }
            // Wait for news about the leader, but re-check at least every heartbeat.
            let wait = (deadline - now).min(self.config.heartbeat_interval);
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        request: &Forward,
        deadline: Instant,
    ) -> Answer {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.no_quorum());
        }
        // A follower whose exchanges with a majority failed lately (its leader is gone, and its
        // own election cannot reach anyone) answers at once, like a leader that lost its
        // quorum, instead of waiting for a dead leader's connect timeout on every call.
        if self.lost_quorum_for_long() {
            return Err(self.no_quorum());
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(remaining, self.forwarding.acquire()).await
        else {
            return Err(self.no_quorum());
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match call::<_, Answer>(&self.transport, addr, kind::FORWARD, request, remaining).await {
            Ok(reply) => {
                self.contacts.ok(leader);
                reply
            }
            Err(e) => {
                self.contacts.failed(leader, e.to_string());
                match e {
                    // The leader is gone or unreachable: look for the next one. A write is
                    // sent again only if it certainly did not arrive.
                    CallError::Unsent(_) => Err(self.not_leader(None)),
                    CallError::Transport(_) if !is_write(request) => Err(self.not_leader(None)),
                    CallError::Transport(m) => Err(WireStoreError::Unavailable(format!(
                        "the leader at {addr} did not answer; the write may or may not have been applied: {m}"
                    ))),
                    CallError::Remote(m) => Err(WireStoreError::Unavailable(m)),
                }
            }
        }
    }

    /// Answers one replication message from a peer.
    pub(crate) async fn handle(&self, request: RaftRequest) -> Response {
        let result = match request.kind.as_str() {
            kind::APPEND_ENTRIES => {
                self.serve(
                    &request.payload,
                    |rpc: openraft::raft::AppendEntriesRequest<TypeConfig>| async move {
                        if let Some(leader) = rpc.vote.leader_id().voted_for() {
                            self.contacts.ok(leader);
                        }
                        self.raft.append_entries(rpc).await
                    },
                )
                .await
            }
            kind::VOTE => {
                self.serve(
                    &request.payload,
                    |rpc: openraft::raft::VoteRequest<NodeId>| async move {
                        if let Some(candidate) = rpc.vote.leader_id().voted_for() {
                            self.contacts.ok(candidate);
                        }
                        self.raft.vote(rpc).await
                    },
                )
                .await
            }
            kind::INSTALL_SNAPSHOT => {
                self.serve(
                    &request.payload,
                    |rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>| async move {
                        if let Some(leader) = rpc.vote.leader_id().voted_for() {
                            self.contacts.ok(leader);
                        }
                        self.raft.install_snapshot(rpc).await
                    },
                )
                .await
            }
            kind::FORWARD => match serde_json::from_slice::<Forward>(&request.payload) {
                Err(e) => Err(format!("undecodable forwarded request: {e}")),
                Ok(Forward::Status) => {
                    let initialized = self.raft.is_initialized().await.unwrap_or(false);
                    let members = self.members().0.into_iter().map(|(_, a)| a).collect();
                    encode(&Status {
                        initialized,
                        members,
                    })
                }
                // Membership changes may arrive at any member: pass them on to the leader.
                Ok(f @ (Forward::AddMember(_) | Forward::RemoveMember(_))) => {
                    encode(&self.run(f).await)
                }
                Ok(op @ Forward::Op(_)) => {
                    let budget = rpc_deadline(self.config.quorum_timeout, request.payload.len());
                    let deadline = Instant::now() + budget;
                    encode(&self.as_leader(op, deadline, None).await)
                }
            },
            other => Err(format!("unknown replication request kind {other:?}")),
        };
        let result = match result {
            Ok(bytes) => raft_reply::Result::Payload(Bytes::from(bytes)),
            Err(message) => raft_reply::Result::Error(WireError::new(
                francis_core::ErrorKind::InvalidArgument,
                message,
                None,
            )),
        };
        Response {
            body: Some(response::Body::Raft(RaftReply {
                result: Some(result),
            })),
        }
    }

    async fn serve<Req, Resp, Fut, F>(&self, payload: &[u8], f: F) -> Result<Vec<u8>, String>
    where
        Req: serde::de::DeserializeOwned,
        Resp: Serialize,
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = Resp>,
    {
        let req: Req = serde_json::from_slice(payload)
            .map_err(|e| format!("undecodable replication request: {e}"))?;
        let resp = f(req).await;
        serde_json::to_vec(&resp).map_err(|e| format!("cannot encode the reply: {e}"))
    }

    pub(crate) fn status(&self) -> ReplicationStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members: Vec<String> = membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(_, n)| n.addr.clone())
            .collect();
        members.sort();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()));
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let status = ReplicationStatus {
            node_id: self.id,
            address: self.address.clone(),
            role: role.to_string(),
            leader,
            members,
            unreachable: Vec::new(),
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        };
        drop(m);
        ReplicationStatus {
            unreachable: self.unreachable(),
            ..status
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| format!("cannot encode the reply: {e}"))
}

fn is_write(request: &Forward) -> bool {
    match request {
        Forward::Op(op) => op.is_write(),
        Forward::Status => false,
        Forward::AddMember(_) | Forward::RemoveMember(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_joins_through_the_members_its_peers_report_or_else_the_peers() {
        let status = |initialized, members: &[&str]| Status {
            initialized,
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let peers = vec!["a:1".to_string(), "b:1".to_string()];
        assert_eq!(
            join_contacts(
                vec![status(true, &["b:1", "c:1"]), status(true, &["c:1"])],
                &peers
            ),
            vec!["b:1".to_string(), "c:1".to_string()]
        );
        // A peer that initialized but does not know its membership yet reports none: ask
        // the peers rather than nobody (this once divided by zero).
        assert_eq!(join_contacts(vec![status(true, &[])], &peers), peers);
    }
}
