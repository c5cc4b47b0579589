//! The host's side of the peer transport: serving invocations from other hosts, and sending
//! invocations to them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use std::time::Duration;

use francis_core::{
    ActorRef, Envelope, Error, SetStateOptions, validate_alarm_name, validate_method,
};
use francis_transport::proto::{Invoke, Request, Response, TurnKind, request};
use francis_transport::{RequestHandler, Transport, TransportConfig};
use tracing::info;

use crate::error::HostError;
use crate::runtime::{HostInner, Op};
use crate::service::HostService;

/// Where the peer server listens and with which keys; `None` keys: no peer transport.
pub(crate) struct PeerLink {
    bind: Option<SocketAddr>,
    psks: Vec<Vec<u8>>,
    transport: Mutex<Option<Transport>>,
}

impl PeerLink {
    /// Checks the keys (each derives a CA; short keys are refused) and resolves the address the
    /// peer server binds: the advertised address itself.
    pub async fn new(address: &str, psks: Vec<Vec<u8>>) -> Result<Self, HostError> {
        if psks.is_empty() {
            return Ok(PeerLink {
                bind: None,
                psks,
                transport: Mutex::new(None),
            });
        }
        for (i, psk) in psks.iter().enumerate() {
            francis_transport::derive_ca(psk)
                .map_err(|e| HostError::InvalidConfig(format!("runtime PSK #{}: {e}", i + 1)))?;
        }
        let bind = match address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => tokio::net::lookup_host(address)
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
        })
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

    /// Starts (or restarts, under a new host id) the peer server on the advertised address.
    pub async fn start(&self, inner: &Arc<HostInner>, host_id: &str) -> Result<(), HostError> {
        let Some(bind) = self.bind else {
            return Ok(());
        };
        self.stop().await;
        let config = TransportConfig::new(host_id, bind, self.psks.clone());
        let handler = Arc::new(PeerHandler {
            inner: Arc::downgrade(inner),
        });
        let transport = Transport::start(config, handler)?;
        info!(host = %inner.address, host_id, listen = %transport.local_addr(), "peer transport listening (QUIC, mutual TLS)");
        *self.transport.lock().expect("peer lock") = Some(transport);
        Ok(())
    }

    /// Gives the running peer server a new host id (after fencing), or starts it.
    pub async fn rename(&self, inner: &Arc<HostInner>, host_id: &str) -> Result<(), HostError> {
        match self.transport() {
            Some(transport) => Ok(transport.set_host_id(host_id)?),
            None => self.start(inner, host_id).await,
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

/// Serves other hosts' requests on this host.
struct PeerHandler {
    inner: Weak<HostInner>,
}

#[async_trait]
impl RequestHandler for PeerHandler {
    async fn handle(&self, _peer_host_id: &str, request: Request) -> Response {
        let Some(inner) = self.inner.upgrade() else {
            return Response::invoke_error(&Error::ShuttingDown);
        };
        match request.body {
            Some(request::Body::Invoke(invoke)) => {
                let result = serve_invoke(inner, invoke).await;
                Response::invoke_result(
                    result
                        .as_ref()
                        .map(|out| out.clone().map(Envelope::into_bytes)),
                )
            }
            _ => Response::unsupported(),
        }
    }
}

/// Runs a forwarded turn here. The claim made on activation is the authoritative check that
/// this host owns the actor: if another live host does, the answer is `ActorNotHosted`, and the
/// caller re-resolves.
async fn serve_invoke(inner: Arc<HostInner>, invoke: Invoke) -> Result<Option<Envelope>, Error> {
    let actor = ActorRef::new(invoke.actor_type.clone(), invoke.actor_id.clone())?;
    actor.check_not_reserved()?;
    inner.check_serving()?;
    let request_id = invoke.request_id.clone();
    let op = from_wire(invoke)?;
    HostService::new(inner)
        .call_local(&actor, op, request_id)
        .await
        .map(|invoked| invoked.output)
}

/// The wire form of a turn.
pub(crate) fn to_wire(actor: &ActorRef, op: Op, request_id: String) -> Invoke {
    let (kind, method, payload, read_only, ttl_ms) = match op {
        Op::Invoke { method, data } => (TurnKind::Invoke, method, data, false, None),
        Op::Peek { method, data } => (TurnKind::Invoke, method, data, true, None),
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
    }
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
            if invoke.read_only {
                Op::Peek {
                    method: invoke.method,
                    data,
                }
            } else {
                Op::Invoke {
                    method: invoke.method,
                    data,
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
