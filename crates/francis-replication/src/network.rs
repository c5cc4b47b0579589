//! Raft RPCs over francis-transport, and what this node knows about reaching its peers.

// openraft's `RaftNetwork` prescribes its large `RPCError` as the error of every RPC.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use francis_transport::proto::{RaftReply, RaftRequest, Request, raft_reply, request, response};
use francis_transport::{Transport, TransportError};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::TypeConfig;

type NodeId = u64;

/// Request kinds inside [`RaftRequest::kind`].
pub(crate) mod kind {
    pub(crate) const APPEND_ENTRIES: &str = "append_entries";
    pub(crate) const VOTE: &str = "vote";
    pub(crate) const INSTALL_SNAPSHOT: &str = "install_snapshot";
    pub(crate) const FORWARD: &str = "forward";
}

/// When this node last exchanged a message with each peer, and the last failure.
///
/// A peer is unreachable when the latest exchange with it failed, recently. Silence alone
/// names nobody: a node that was frozen (SIGSTOP) or restarted has heard from no one for a
/// while through no fault of its peers, and must not report a healthy majority as
/// unreachable before it even tried them again.
#[derive(Debug)]
pub(crate) struct Contacts {
    /// When this node started: it counts as a successful exchange with every peer.
    started: Instant,
    peers: Mutex<HashMap<NodeId, Contact>>,
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts {
            started: Instant::now(),
            peers: Mutex::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Contact {
    last_ok: Option<Instant>,
    last_error: Option<(Instant, String)>,
}

impl Contacts {
    pub(crate) fn ok(&self, node: NodeId) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.entry(node).or_default().last_ok = Some(Instant::now());
    }

    pub(crate) fn failed(&self, node: NodeId, why: String) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.entry(node).or_default().last_error = Some((Instant::now(), why));
    }

    /// Of `nodes`, those whose latest exchange failed within `window`.
    pub(crate) fn unreachable(&self, nodes: &[NodeId], window: Duration) -> Vec<NodeId> {
        self.select(nodes, |c| {
            failed_lately(c.last_ok, c.last_error.as_ref().map(|e| e.0), window)
        })
    }

    /// Of `nodes`, those whose latest exchange failed within `window` and that answered
    /// nothing for the whole `window` (this node's start counting as an answer): gone for a
    /// while, not just missed once.
    pub(crate) fn gone(&self, nodes: &[NodeId], window: Duration) -> Vec<NodeId> {
        self.select(nodes, |c| {
            let last_ok = c.last_ok.map_or(self.started, |ok| ok.max(self.started));
            failed_lately(c.last_ok, c.last_error.as_ref().map(|e| e.0), window)
                && last_ok.elapsed() >= window
        })
    }

    /// Of `nodes`, those with a contact record that `pick` accepts.
    fn select(&self, nodes: &[NodeId], pick: impl Fn(&Contact) -> bool) -> Vec<NodeId> {
        let peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes
            .iter()
            .copied()
            .filter(|n| peers.get(n).is_some_and(&pick))
            .collect()
    }
}

/// Whether the latest exchange with a peer failed, within `window`.
pub(crate) fn failed_lately(
    last_ok: Option<Instant>,
    last_error: Option<Instant>,
    window: Duration,
) -> bool {
    match last_error {
        Some(failed) => failed.elapsed() < window && last_ok.is_none_or(|ok| ok < failed),
        None => false,
    }
}

/// Resolves a peer address (`ip:port`, or `host:port` through the system resolver).
pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

/// Why a call to a peer failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// It certainly never reached the peer (no connection, refused certificate...).
    Unsent(String),
    /// It could not be delivered or answered (unreachable, timed out, refused...).
    Transport(String),
    /// It was answered with an error (the peer is not ready, or the payload was bad).
    Remote(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unsent(m) | CallError::Transport(m) | CallError::Remote(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one replication message to the node at `addr` and decodes its JSON answer.
pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
    transport: &Transport,
    addr: &str,
    kind: &str,
    payload: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let payload = encode_request(kind, payload)?;
    call_encoded(transport, addr, kind, payload, timeout).await
}

fn encode_request<Req: Serialize>(kind: &str, payload: &Req) -> Result<Vec<u8>, CallError> {
    serde_json::to_vec(payload)
        .map_err(|e| CallError::Remote(format!("cannot encode a {kind} request: {e}")))
}

/// [`call`] with the request already encoded.
async fn call_encoded<Resp: DeserializeOwned>(
    transport: &Transport,
    addr: &str,
    kind: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let peer = resolve(addr).await.map_err(CallError::Unsent)?;
    let request = Request {
        body: Some(request::Body::Raft(RaftRequest {
            kind: kind.to_string(),
            payload: Bytes::from(payload),
        })),
    };
    let response =
        match tokio::time::timeout(timeout, transport.request_any_host(peer, request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(transport_error(addr, e)),
            Err(_) => {
                return Err(CallError::Transport(format!(
                    "{kind} to {addr} timed out after {timeout:?}"
                )));
            }
        };
    match response.body {
        Some(response::Body::Raft(RaftReply {
            result: Some(raft_reply::Result::Payload(bytes)),
        })) => serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Remote(format!("undecodable {kind} reply from {addr}: {e}"))),
        Some(response::Body::Raft(RaftReply {
            result: Some(raft_reply::Result::Error(e)),
        })) => Err(CallError::Remote(format!("{addr}: {}", e.message))),
        other => Err(CallError::Remote(format!(
            "unexpected reply to {kind} from {addr}: {other:?}"
        ))),
    }
}

fn transport_error(addr: &str, e: TransportError) -> CallError {
    match e {
        // Refused without being handled: safe to send again.
        TransportError::Rejected { error, .. } if error.code == "overloaded" => {
            CallError::Unsent(format!("{addr} is overloaded: {}", error.message))
        }
        // The peer's replication is not running (starting, or shutting down): not handled.
        TransportError::Rejected { error, .. } if error.code == "host_unavailable" => {
            CallError::Unsent(format!("{addr}: {}", error.message))
        }
        TransportError::Rejected { error, .. } => {
            CallError::Remote(format!("{addr} refused the request: {}", error.message))
        }
        e @ (TransportError::Connect { .. }
        | TransportError::Unresponsive { sent: false, .. }
        | TransportError::AuthenticationFailed { .. }
        | TransportError::Closed
        | TransportError::PeerShutDown { .. }
        | TransportError::FrameTooLarge { .. }) => CallError::Unsent(format!("{addr}: {e}")),
        e => CallError::Transport(format!("{addr}: {e}")),
    }
}

/// Makes a [`PeerClient`] per target for openraft.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) transport: Transport,
    pub(crate) contacts: Arc<Contacts>,
    /// The longest a Raft RPC may take before its payload is counted in.
    pub(crate) rpc_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            link: Link {
                target,
                addr: node.addr.clone(),
                transport: self.transport.clone(),
                contacts: self.contacts.clone(),
            },
            rpc_timeout: self.rpc_timeout,
            transfer: None,
        }
    }
}

/// How one peer is reached, and where what happened is recorded.
#[derive(Debug, Clone)]
struct Link {
    target: NodeId,
    addr: String,
    transport: Transport,
    contacts: Arc<Contacts>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;
type AppendResult = RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible>;

impl Link {
    async fn rpc<Resp, E>(
        &self,
        kind: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            call_encoded(&self.transport, &self.addr, kind, payload, timeout).await;
        match result {
            Ok(Ok(resp)) => {
                self.contacts.ok(self.target);
                Ok(resp)
            }
            Ok(Err(e)) => {
                self.contacts.ok(self.target);
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Err(e @ (CallError::Unsent(_) | CallError::Transport(_))) => {
                self.contacts.failed(self.target, e.to_string());
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ CallError::Remote(_)) => {
                self.contacts.failed(self.target, e.to_string());
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

fn encoding_failed<T, E: std::error::Error>(e: CallError) -> RpcResult<T, E> {
    Err(RPCError::Network(NetworkError::new(&e)))
}

/// An AppendEntries still on its way to the peer, which outlives openraft's deadline.
///
/// openraft gives every AppendEntries one heartbeat interval (250 ms by default) and then
/// sends it again. An entry that takes longer to ship and persist (a large state document)
/// would be cancelled and sent again for ever, and never commit. So each AppendEntries is
/// sent by a task of its own with a deadline that grows with its size; while it is on its
/// way, later calls for the same range wait for it, and in the meantime send the peer an
/// empty AppendEntries (a heartbeat), which keeps it from starting an election and lets the
/// leader count it for its quorum.
#[derive(Debug)]
struct Transfer {
    vote: openraft::Vote<NodeId>,
    prev: Option<openraft::LogId<NodeId>>,
    /// The last entry it carries (`prev` when it carries none).
    last: Option<openraft::LogId<NodeId>>,
    task: tokio::task::JoinHandle<AppendResult>,
}

impl Transfer {
    /// Whether `rpc` asks for what this transfer is already sending (or a longer range that
    /// starts where it does).
    fn covers(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        self.vote == rpc.vote && self.prev == rpc.prev_log_id && self.last <= last_log_id(rpc)
    }
}

fn last_log_id(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<openraft::LogId<NodeId>> {
    rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
}

/// Sends openraft's RPCs to one peer.
#[derive(Debug)]
pub(crate) struct PeerClient {
    link: Link,
    rpc_timeout: Duration,
    transfer: Option<Transfer>,
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(t) = self.transfer.take() {
            t.task.abort();
        }
    }
}

/// A deadline for a message of `bytes`: the base timeout, plus a second for every 4 MiB
/// (ample for loopback and a LAN even on a loaded machine; a small message adds nothing).
pub(crate) fn rpc_deadline(base: Duration, bytes: usize) -> Duration {
    const BYTES_PER_SECOND: u64 = 4 * 1024 * 1024;
    base + Duration::from_millis((bytes as u64).saturating_mul(1000) / BYTES_PER_SECOND)
}

/// How many of `entry_sizes` (in order) fit in `budget` bytes beside `base` bytes of the
/// request's other fields; always at least one, since a single entry was sized to fit when
/// it was proposed.
pub(crate) fn entries_that_fit(base: usize, entry_sizes: &[usize], budget: usize) -> usize {
    let mut total = base;
    let mut n = 0;
    for size in entry_sizes {
        // One byte for the separating comma.
        total = total.saturating_add(size + 1);
        if total > budget && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

impl PeerClient {
    /// The largest AppendEntries payload that fits in one transport frame.
    fn frame_budget(&self) -> usize {
        // The frame also carries the request kind and protobuf framing: a few bytes.
        self.link
            .transport
            .limits()
            .max_frame_size()
            .saturating_sub(1024)
    }

    /// Cuts `rpc` down to the entries that fit in one frame, and encodes it.
    fn encode_fitting(
        &self,
        rpc: &mut AppendEntriesRequest<TypeConfig>,
    ) -> Result<Vec<u8>, CallError> {
        let budget = self.frame_budget();
        let encoded = encode_request(kind::APPEND_ENTRIES, &*rpc)?;
        if encoded.len() <= budget || rpc.entries.len() <= 1 {
            return Ok(encoded);
        }
        let sizes = rpc
            .entries
            .iter()
            .map(|e| serde_json::to_vec(e).map(|b| b.len()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CallError::Remote(format!("cannot encode a log entry: {e}")))?;
        let base = encoded.len() - sizes.iter().map(|s| s + 1).sum::<usize>();
        let n = entries_that_fit(base, &sizes, budget);
        rpc.entries.truncate(n);
        encode_request(kind::APPEND_ENTRIES, &*rpc)
    }

    /// Sends an AppendEntries without entries.
    async fn heartbeat(
        &self,
        beat: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> AppendResult {
        let payload = match encode_request(kind::APPEND_ENTRIES, beat) {
            Ok(p) => p,
            Err(e) => return encoding_failed(e),
        };
        self.link
            .rpc(kind::APPEND_ENTRIES, payload, option.hard_ttl())
            .await
    }

    /// Sends a heartbeat in place of `rpc`, whose entries are still on their way.
    async fn heartbeat_beside(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> AppendResult {
        let beat = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries: Vec::new(),
        };
        match self.heartbeat(&beat, option).await? {
            // The peer holds everything up to `prev` (and no further, as far as we know).
            AppendEntriesResponse::Success if rpc.prev_log_id.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(rpc.prev_log_id))
            }
            // An empty peer: no progress to report (openraft takes "matched nothing" for a
            // bug), so this call fails and the next one joins the transfer.
            AppendEntriesResponse::Success => encoding_failed(CallError::Transport(
                "the first entries for this peer are still on their way".into(),
            )),
            other => Ok(other),
        }
    }
}

/// The result of a transfer's task (one that was aborted or panicked is a failed RPC).
fn finished(joined: Result<AppendResult, tokio::task::JoinError>) -> AppendResult {
    joined.unwrap_or_else(|e| {
        encoding_failed(CallError::Transport(format!(
            "the AppendEntries task ended: {e}"
        )))
    })
}

/// What a finished transfer of the entries up to `last` means for a call asking for more.
fn transfer_outcome(result: AppendResult, last: Option<openraft::LogId<NodeId>>) -> AppendResult {
    match result? {
        AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
        other => Ok(other),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        if rpc.entries.is_empty() {
            // A heartbeat: small, answered for itself, and no reason to give up a transfer.
            return self.heartbeat(&rpc, &option).await;
        }
        if let Some(mut transfer) = self.transfer.take() {
            if transfer.covers(&rpc) {
                // Wait for it for part of openraft's deadline, then keep the peer's timers
                // going with a heartbeat.
                let wait = option.soft_ttl() / 2;
                match tokio::time::timeout(wait, &mut transfer.task).await {
                    Ok(joined) => return transfer_outcome(finished(joined), transfer.last),
                    Err(_) => {
                        self.transfer = Some(transfer);
                        return self.heartbeat_beside(&rpc, &option).await;
                    }
                }
            }
            // openraft moved on (a new term, a conflict): that range is not wanted any more.
            transfer.task.abort();
        }
        let requested = last_log_id(&rpc);
        let payload = match self.encode_fitting(&mut rpc) {
            Ok(p) => p,
            Err(e) => return encoding_failed(e),
        };
        let sent = last_log_id(&rpc);
        let deadline = rpc_deadline(self.rpc_timeout, payload.len()).max(option.hard_ttl());
        let link = self.link.clone();
        let task =
            tokio::spawn(async move { link.rpc(kind::APPEND_ENTRIES, payload, deadline).await });
        let transfer = self.transfer.insert(Transfer {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: sent,
            task,
        });
        // If openraft gives up on this call, the transfer goes on and the next call joins it.
        let joined = (&mut transfer.task).await;
        self.transfer = None;
        let result = finished(joined);
        if sent == requested {
            result
        } else {
            transfer_outcome(result, sent)
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let payload = match encode_request(kind::INSTALL_SNAPSHOT, &rpc) {
            Ok(p) => p,
            Err(e) => return encoding_failed(e),
        };
        let deadline = rpc_deadline(option.hard_ttl(), payload.len());
        self.link
            .rpc(kind::INSTALL_SNAPSHOT, payload, deadline)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let payload = match encode_request(kind::VOTE, &rpc) {
            Ok(p) => p,
            Err(e) => return encoding_failed(e),
        };
        self.link.rpc(kind::VOTE, payload, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer soon: a restarted node should rejoin within a heartbeat
        // or two, and the failed attempts are what names it in "no quorum" errors.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_grow_with_the_payload() {
        let base = Duration::from_secs(2);
        assert_eq!(rpc_deadline(base, 0), base);
        assert_eq!(rpc_deadline(base, 1000), base);
        assert_eq!(rpc_deadline(base, 16 << 20), base + Duration::from_secs(4));
    }

    #[test]
    fn an_append_carries_the_entries_that_fit_and_always_one() {
        assert_eq!(entries_that_fit(100, &[10, 10, 10], 1000), 3);
        assert_eq!(entries_that_fit(100, &[400, 400, 400], 1000), 2);
        // A single entry is sent even when it alone is above the budget (the store refused
        // anything that could not be sent at all).
        assert_eq!(entries_that_fit(100, &[2000, 10], 1000), 1);
        assert_eq!(entries_that_fit(100, &[], 1000), 0);
    }

    #[test]
    fn reachability_window() {
        let window = Duration::from_secs(60);
        let now = Instant::now();
        let Some(earlier) = now.checked_sub(Duration::from_secs(1)) else {
            return; // the clock started too recently on this machine
        };
        // Never tried, or last answered: reachable.
        assert!(!failed_lately(None, None, window));
        assert!(!failed_lately(Some(now), None, window));
        assert!(!failed_lately(Some(now), Some(earlier), window));
        // The latest exchange failed: unreachable, for the window only.
        assert!(failed_lately(Some(earlier), Some(now), window));
        assert!(failed_lately(None, Some(now), window));
        assert!(!failed_lately(
            None,
            Some(earlier),
            Duration::from_millis(1)
        ));

        let c = Contacts::default();
        c.ok(1);
        c.failed(2, "down".into());
        c.failed(4, "down".into());
        c.ok(4);
        assert_eq!(c.unreachable(&[1, 2, 3, 4], window), vec![2]);
        // A node back from a long pause has heard from no one, and names no one until an
        // exchange fails again.
        let resumed = Contacts::default();
        assert_eq!(resumed.unreachable(&[1, 2], window), Vec::<u64>::new());
        // Gone for long: only once a whole window passed without an answer (the start
        // counts as one).
        assert_eq!(c.gone(&[1, 2, 3, 4], window), Vec::<u64>::new());
        assert_eq!(c.gone(&[2], Duration::ZERO), Vec::<u64>::new()); // failed too long ago
        let fresh = Contacts::default();
        fresh.failed(5, "down".into());
        assert_eq!(fresh.gone(&[5], Duration::from_secs(60)), Vec::<u64>::new());
        assert_eq!(fresh.unreachable(&[5], Duration::from_secs(60)), vec![5]);
        if let Some(long_ago) = Instant::now().checked_sub(Duration::from_secs(2)) {
            let old = Contacts {
                started: long_ago,
                peers: Mutex::default(),
            };
            old.failed(6, "down".into());
            assert_eq!(old.gone(&[6], Duration::from_secs(1)), vec![6]);
        }
    }
}
