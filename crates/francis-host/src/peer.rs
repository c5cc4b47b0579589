//! The host's side of the peer transport: serving invocations from other hosts, and sending
//! invocations to them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use std::time::Duration;

use crate::replica::RaftHandler;
use francis_core::{
    ActorRef, Envelope, Error, SetStateOptions, validate_alarm_name, validate_method,
};
use francis_transport::proto::{ChainLink, Invoke, Request, Response, TurnKind, request, response};
use francis_transport::{RequestHandler, Transport, TransportConfig, TransportError};
use tracing::{Instrument, info};

use crate::chain::CallChain;
use crate::error::HostError;
use crate::policy::Delivery;
use crate::runtime::{Activations, Op};
use crate::trace::TraceContext;

/// Where the peer server listens and with which keys; `None` keys: no peer transport.
pub(crate) struct PeerLink {
    bind: Option<SocketAddr>,
    psks: Vec<Vec<u8>>,
    transport: Mutex<Option<Transport>>,
    handler: Arc<PeerHandler>,
}

impl PeerLink {
    /// Checks the keys (each derives a CA; short keys are refused) and resolves the address the
    /// peer server binds: `bind` when given, else the advertised address itself.
    /// `raft`: the replicated store's handler, when this host takes part in one.
    pub async fn new(
        address: &str,
        bind: Option<SocketAddr>,
        psks: Vec<Vec<u8>>,
        raft: Option<RaftHandler>,
    ) -> Result<Self, HostError> {
        let handler = Arc::new(PeerHandler {
            inner: OnceLock::new(),
            raft,
        });
        if psks.is_empty() {
            if let Some(bind) = bind {
                return Err(HostError::InvalidConfig(format!(
                    "bind address {bind} given, but a host without runtime PSKs serves no peer \
                     port: give the cluster's keys too, or no bind address"
                )));
            }
            return Ok(PeerLink {
                bind: None,
                psks,
                transport: Mutex::new(None),
                handler,
            });
        }
        for (i, psk) in psks.iter().enumerate() {
            francis_transport::derive_ca(psk)
                .map_err(|e| HostError::InvalidConfig(format!("runtime PSK #{}: {e}", i + 1)))?;
        }
        let bind = match (bind, address.parse::<SocketAddr>()) {
            (Some(bind), _) if bind.port() == 0 => {
                return Err(HostError::InvalidConfig(format!(
                    "bind address {bind} has port 0: other hosts reach this one at its advertised \
                     address, so the peer server needs a known port"
                )));
            }
            (Some(bind), _) => bind,
            (None, Ok(a)) => a,
            (None, Err(_)) => tokio::net::lookup_host(address)
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    HostError::InvalidConfig(format!(
                        "advertised address {address:?} is not host:port that resolves here"
                    ))
                })?,
        };
        Ok(PeerLink {
            bind: Some(bind),
            psks,
            transport: Mutex::new(None),
            handler,
        })
    }

    /// Lets forwarded turns reach `inner` (until then they are answered "starting").
    pub fn attach(&self, inner: &Arc<Activations>) {
        let _ = self.handler.inner.set(Arc::downgrade(inner));
    }

    /// The cluster CA certificate (PEM) of the first key, if any.
    pub fn ca_pem(&self) -> Option<String> {
        let ca = francis_transport::derive_ca(self.psks.first()?).ok()?;
        Some(ca.pem().to_owned())
    }

    /// The running transport, if any.
    pub fn transport(&self) -> Option<Transport> {
        self.transport.lock().expect("peer lock").clone()
    }

    /// Starts the peer server on the advertised address (once; a no-op when it runs).
    pub fn start(&self, host_id: &str) -> Result<Option<Transport>, HostError> {
        let Some(bind) = self.bind else {
            return Ok(None);
        };
        let mut slot = self.transport.lock().expect("peer lock");
        if let Some(running) = slot.as_ref() {
            return Ok(Some(running.clone()));
        }
        let config = TransportConfig::new(host_id, bind, self.psks.clone());
        let transport = Transport::start(config, self.handler.clone())?;
        info!(host = %bind, host_id, "peer transport listening (QUIC, mutual TLS)");
        *slot = Some(transport.clone());
        Ok(Some(transport))
    }

    /// Gives the running peer server a new host id (after fencing), or starts it.
    pub fn rename(&self, host_id: &str) -> Result<(), HostError> {
        match self.transport() {
            Some(transport) => Ok(transport.set_host_id(host_id)?),
            None => self.start(host_id).map(|_| ()),
        }
    }

    /// Stops the peer server, answering the requests it already accepted.
    pub async fn stop(&self) {
        let old = self.transport.lock().expect("peer lock").take();
        if let Some(old) = old {
            old.shutdown().await;
        }
    }
}

/// Serves other hosts' requests on this host: forwarded turns, and the replicated store's
/// messages when this host takes part in one.
struct PeerHandler {
    inner: OnceLock<Weak<Activations>>,
    raft: Option<RaftHandler>,
}

#[async_trait]
impl RequestHandler for PeerHandler {
    async fn handle(&self, peer_host_id: &str, request: Request) -> Response {
        match request.body {
            Some(request::Body::Invoke(invoke)) => {
                let Some(inner) = self.inner.get().and_then(Weak::upgrade) else {
                    return Response::invoke_error(&Error::HostUnavailable(
                        "host is starting".into(),
                    ));
                };
                let result = serve_invoke(inner, invoke).await;
                Response::invoke_result(
                    result
                        .as_ref()
                        .map(|out| out.clone().map(Envelope::into_bytes)),
                )
            }
            Some(request::Body::Raft(_)) => match &self.raft {
                Some(raft) => raft.handle(peer_host_id, request).await,
                None => Response::unsupported(),
            },
            _ => Response::unsupported(),
        }
    }
}

/// Runs a forwarded turn here. The claim made on activation is the authoritative check that
/// this host owns the actor: if another live host does, the answer is `ActorNotHosted`, and the
/// caller re-resolves.
async fn serve_invoke(inner: Arc<Activations>, invoke: Invoke) -> Result<Option<Envelope>, Error> {
    let actor = ActorRef::new(invoke.actor_type.clone(), invoke.actor_id.clone())?;
    actor.check_not_reserved()?;
    inner.check_serving()?;
    let request_id = invoke.request_id.clone();
    let op = from_wire(invoke)?;
    let mut trace = None;
    if let Op::Invoke { chain, .. } | Op::Peek { chain, .. } = &op {
        // The caller checks this too; a call from a host that did not is refused here.
        chain.check(&actor)?;
        trace = chain.trace();
    }
    // The owner's side of a call from another host, in the caller's trace: what happens
    // before the turn (activation) is logged inside it.
    let span = tracing::info_span!(
        "francis.serve",
        actor_type = actor.actor_type(),
        actor_id = actor.actor_id(),
        host = %inner.address,
        trace_id = trace.map(|t| t.trace_id()).map(tracing::field::display),
        parent_span_id = trace.map(|t| t.span_id()).map(tracing::field::display),
    );
    inner
        .call_resendable(&actor, op, request_id)
        .instrument(span)
        .await
}

/// The wire form of a turn.
pub(crate) fn to_wire(actor: &ActorRef, op: Op, request_id: String) -> Invoke {
    let mut call_chain = Vec::new();
    let mut traceparent = String::new();
    let peek = op.read_only();
    let (kind, method, payload, read_only, ttl_ms) = match op {
        Op::Invoke {
            method,
            data,
            chain,
        }
        | Op::Peek {
            method,
            data,
            chain,
        } => {
            call_chain = chain_to_wire(&chain);
            if let Some(trace) = chain.trace() {
                traceparent = trace.traceparent();
            }
            (TurnKind::Invoke, method, data, peek, None)
        }
        Op::Alarm { name, data } => (
            TurnKind::Alarm,
            name,
            data.unwrap_or_else(Envelope::null),
            false,
            None,
        ),
        Op::SetState { value, options } => (
            TurnKind::SetState,
            String::new(),
            value,
            false,
            options
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ),
        Op::DeleteState => (
            TurnKind::DeleteState,
            String::new(),
            Envelope::null(),
            false,
            None,
        ),
    };
    Invoke {
        actor_type: actor.actor_type().to_owned(),
        actor_id: actor.actor_id().to_owned(),
        method,
        payload: payload.into_bytes(),
        request_id,
        read_only,
        kind: kind as i32,
        ttl_ms,
        call_chain,
        traceparent,
    }
}

fn chain_to_wire(chain: &CallChain) -> Vec<ChainLink> {
    chain
        .links()
        .iter()
        .map(|a| ChainLink {
            actor_type: a.actor_type().to_owned(),
            actor_id: a.actor_id().to_owned(),
        })
        .collect()
}

fn chain_from_wire(links: Vec<ChainLink>) -> Result<CallChain, Error> {
    links
        .into_iter()
        .map(|l| ActorRef::new(l.actor_type, l.actor_id))
        .collect::<Result<Vec<_>, _>>()
        .map(CallChain::from_links)
}

/// A turn from its wire form; user-facing checks (method names) apply to invocations only.
fn from_wire(invoke: Invoke) -> Result<Op, Error> {
    let data = Envelope::from_json(invoke.payload)?;
    let kind = TurnKind::try_from(invoke.kind).map_err(|_| {
        Error::invalid_argument("kind", format!("unknown turn kind {}", invoke.kind))
    })?;
    Ok(match kind {
        TurnKind::Invoke => {
            validate_method(&invoke.method)?;
            let trace = TraceContext::from_traceparent(&invoke.traceparent);
            let chain = chain_from_wire(invoke.call_chain)?.traced(trace);
            if invoke.read_only {
                Op::Peek {
                    method: invoke.method,
                    data,
                    chain,
                }
            } else {
                Op::Invoke {
                    method: invoke.method,
                    data,
                    chain,
                }
            }
        }
        TurnKind::Alarm => {
            validate_alarm_name(&invoke.method)?;
            Op::Alarm {
                name: invoke.method,
                data: (!data.is_null()).then_some(data),
            }
        }
        TurnKind::SetState => Op::SetState {
            value: data,
            options: SetStateOptions {
                ttl: invoke.ttl_ms.map(Duration::from_millis),
            },
        },
        TurnKind::DeleteState => Op::DeleteState,
    })
}

/// Sends an invocation to the host `peer_host_id` at `peer`: the actor's reply, or the error
/// with how far the call got (whether it may have run on the peer).
pub(crate) async fn invoke(
    transport: &Transport,
    peer: SocketAddr,
    peer_host_id: &str,
    invoke: Invoke,
) -> Result<Option<bytes::Bytes>, (Error, Delivery)> {
    let request = Request {
        body: Some(request::Body::Invoke(invoke)),
    };
    match transport.request(peer, peer_host_id, request).await {
        Ok(Response {
            body: Some(response::Body::Invoke(reply)),
        }) => reply.into_result().map_err(|e| (e, Delivery::Answered)),
        Ok(other) => Err((
            Error::from(TransportError::UnexpectedResponse {
                peer,
                detail: format!("expected an invoke reply, got {other:?}"),
            }),
            Delivery::Answered,
        )),
        Err(e) => {
            let delivery = delivery_of(&e);
            Err((Error::from(e), delivery))
        }
    }
}

/// Whether a request that failed with `e` may have reached the peer's handler.
fn delivery_of(e: &TransportError) -> Delivery {
    match e {
        // The handshake named another host, no connection could be opened, the peer had
        // closed the connection first, or the request was refused unread.
        TransportError::HostMismatch { .. }
        | TransportError::Connect { .. }
        | TransportError::PeerShutDown { .. }
        | TransportError::AuthenticationFailed { .. }
        | TransportError::Closed
        | TransportError::Rejected { .. }
        | TransportError::FrameTooLarge { .. } => Delivery::NotDelivered,
        TransportError::Unresponsive { .. } => Delivery::Unresponsive,
        _ => Delivery::MaybeDelivered,
    }
}

/// A peer address as stored in the store (`host:port`), resolved to a socket address.
pub(crate) async fn resolve_address(address: &str) -> Result<SocketAddr, Error> {
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::Transport(format!("cannot resolve peer address {address:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str) -> ActorRef {
        ActorRef::new("probe", id).unwrap()
    }

    fn round_trip(op: Op) -> Op {
        from_wire(to_wire(&actor("x"), op, "r1".into())).unwrap()
    }

    #[test]
    fn every_turn_survives_the_wire() {
        let chain = CallChain::from_links(vec![actor("p"), actor("q")]);
        let five = || Envelope::encode(&5).unwrap();
        match round_trip(Op::Invoke {
            method: "add".into(),
            data: five(),
            chain: chain.clone(),
        }) {
            Op::Invoke {
                method,
                data,
                chain: c,
            } => {
                assert_eq!(method, "add");
                assert_eq!(data.decode::<i64>().unwrap(), 5);
                assert_eq!(c, chain);
            }
            _ => panic!("an invoke came back as another turn"),
        }
        match round_trip(Op::Peek {
            method: "get".into(),
            data: Envelope::null(),
            chain: CallChain::default(),
        }) {
            Op::Peek {
                method,
                data,
                chain,
            } => {
                assert_eq!(method, "get");
                assert!(data.is_null());
                assert!(chain.is_empty());
            }
            _ => panic!("a peek came back as another turn"),
        }
        for data in [Some(five()), None] {
            match round_trip(Op::Alarm {
                name: "tick".into(),
                data: data.clone(),
            }) {
                Op::Alarm { name, data: d } => {
                    assert_eq!(name, "tick");
                    assert_eq!(d.map(|d| d.decode::<i64>().unwrap()), data.map(|_| 5));
                }
                _ => panic!("an alarm came back as another turn"),
            }
        }
        for ttl in [Some(Duration::from_millis(1500)), None] {
            match round_trip(Op::SetState {
                value: five(),
                options: SetStateOptions { ttl },
            }) {
                Op::SetState { value, options } => {
                    assert_eq!(value.decode::<i64>().unwrap(), 5);
                    assert_eq!(options.ttl, ttl);
                }
                _ => panic!("a state write came back as another turn"),
            }
        }
        assert!(matches!(round_trip(Op::DeleteState), Op::DeleteState));
    }

    #[test]
    fn the_actor_and_request_id_travel_with_the_turn() {
        let wire = to_wire(&actor("x"), Op::DeleteState, "r9".into());
        assert_eq!(
            (wire.actor_type.as_str(), wire.actor_id.as_str()),
            ("probe", "x")
        );
        assert_eq!(wire.request_id, "r9");
        assert!(!wire.read_only);
    }

    #[test]
    fn malformed_turns_are_bad_input_that_no_retry_fixes() {
        let good = || {
            to_wire(
                &actor("x"),
                Op::Invoke {
                    method: "add".into(),
                    data: Envelope::null(),
                    chain: CallChain::default(),
                },
                "r1".into(),
            )
        };
        let mut unknown_kind = good();
        unknown_kind.kind = 99;
        let e = from_wire(unknown_kind)
            .err()
            .expect("an unknown kind is refused");
        assert_eq!(e.kind(), francis_core::ErrorKind::InvalidArgument, "{e}");

        let mut not_json = good();
        not_json.payload = b"{not json".to_vec().into();
        let mut no_method = good();
        no_method.method = String::new();
        let mut bad_link = good();
        bad_link.call_chain = vec![ChainLink {
            actor_type: String::new(),
            actor_id: "a".into(),
        }];
        for (what, invoke) in [
            ("payload", not_json),
            ("method", no_method),
            ("chain", bad_link),
        ] {
            let e = from_wire(invoke)
                .err()
                .unwrap_or_else(|| panic!("a bad {what} is refused"));
            assert!(!e.is_retryable(), "{what}: {e}");
        }
    }
}
