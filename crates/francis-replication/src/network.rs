//! Raft RPCs over francis-transport, and what this node knows about reaching its peers.

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
/// A peer not heard from yet counts as heard from when the node started: a node restarted as
/// leader (openraft keeps a committed vote across restarts) must not call its peers
/// unreachable before it even tried them.
#[derive(Debug)]
pub(crate) struct Contacts {
    since: Instant,
    peers: Mutex<HashMap<NodeId, Contact>>,
}

impl Default for Contacts {
    fn default() -> Self {
        Self::since(Instant::now())
    }
}

#[derive(Debug, Clone, Default)]
struct Contact {
    last_ok: Option<Instant>,
    last_error: Option<(Instant, String)>,
}

impl Contacts {
    fn since(since: Instant) -> Self {
        Contacts {
            since,
            peers: Mutex::default(),
        }
    }

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

    /// Of `nodes`, those with no successful exchange within `window`.
    pub(crate) fn unreachable(&self, nodes: &[NodeId], window: Duration) -> Vec<NodeId> {
        let peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes
            .iter()
            .copied()
            .filter(|n| {
                let last_ok = peers.get(n).and_then(|c| c.last_ok).unwrap_or(self.since);
                !recently_reached(Some(last_ok), window)
            })
            .collect()
    }
}

/// Whether a peer last answered within `window` (never answering counts as unreachable).
pub(crate) fn recently_reached(last_ok: Option<Instant>, window: Duration) -> bool {
    last_ok.is_some_and(|t| t.elapsed() < window)
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
    let peer = resolve(addr).await.map_err(CallError::Unsent)?;
    let payload = serde_json::to_vec(payload)
        .map_err(|e| CallError::Remote(format!("cannot encode a {kind} request: {e}")))?;
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
        TransportError::Rejected { error, .. } => {
            CallError::Remote(format!("{addr} refused the request: {}", error.message))
        }
        e @ (TransportError::Connect { .. }
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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// Sends openraft's RPCs to one peer.
#[derive(Debug)]
pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Transport,
    contacts: Arc<Contacts>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: &str,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            call(&self.transport, &self.addr, kind, req, timeout).await;
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

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.rpc(kind::APPEND_ENTRIES, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.rpc(kind::INSTALL_SNAPSHOT, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.rpc(kind::VOTE, &rpc, option.hard_ttl()).await
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
    fn reachability_window() {
        assert!(!recently_reached(None, Duration::from_secs(1)));
        assert!(recently_reached(
            Some(Instant::now()),
            Duration::from_secs(1)
        ));
        let window = Duration::from_secs(60);
        let Some(long_ago) = Instant::now().checked_sub(window * 2) else {
            return; // the clock started too recently on this machine
        };
        let c = Contacts::since(long_ago);
        c.ok(1);
        c.failed(2, "down".into());
        assert_eq!(c.unreachable(&[1, 2, 3], window), vec![2, 3]);
        assert_eq!(c.unreachable(&[1], Duration::ZERO), vec![1]);
        // just started: peers not tried yet get the benefit of the doubt
        let fresh = Contacts::default();
        assert_eq!(fresh.unreachable(&[1, 2], window), Vec::<u64>::new());
        assert_eq!(fresh.unreachable(&[1, 2], Duration::ZERO), vec![1, 2]);
    }
}
