//! The host's side of the peer transport: serving invocations from other hosts, and sending
//! invocations to them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use francis_core::{ActorRef, Envelope, Error};
use francis_transport::proto::{Invoke, Request, Response, request};
use francis_transport::{RequestHandler, Transport, TransportConfig};
use tracing::info;

use crate::error::HostError;
use crate::runtime::HostInner;
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

/// Runs a forwarded invocation here. The claim made on activation is the authoritative check
/// that this host owns the actor: if another live host does, the answer is `ActorNotHosted`.
async fn serve_invoke(inner: Arc<HostInner>, invoke: Invoke) -> Result<Option<Envelope>, Error> {
    let actor = ActorRef::new(invoke.actor_type, invoke.actor_id)?;
    let data = Envelope::from_json(invoke.payload)?;
    let service = HostService::new(inner);
    service
        .dispatch(
            &actor,
            &invoke.method,
            data,
            invoke.read_only,
            invoke.request_id,
        )
        .await
        .map(|invoked| invoked.output)
}
