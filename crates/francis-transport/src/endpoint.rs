//! The [`Transport`]: one QUIC endpoint per host, serving peers and calling them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ca::{ClusterCa, derive_ca, endpoint_secrets};
use crate::config::{Limits, TransportConfig, validate_host_id};
use crate::error::TransportError;
use crate::identity::{Identity, IdentityCell, renew_at, server_name_for};
use crate::pool::Pool;
use crate::proto::{Invoke, Ping, Request, Response, request, response};
use crate::{server, tls};

/// Answers the requests peers send to this host.
///
/// The transport calls it once per request (each on its own task, up to
/// [`Limits::max_in_flight_per_connection`] at a time per peer connection) with the peer's
/// host id, which the peer's certificate proved. `Ping` requests are answered by the transport
/// itself and never reach the handler.
///
/// If the caller gives up (cancels or times out) before the answer is ready, the `handle`
/// future is dropped at its next await point: spawn the work if it must run to completion
/// regardless. A response larger than [`Limits::max_frame_size`] is replaced by an `encode`
/// error.
#[crate::async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request from `peer_host_id` and returns its response. Unknown request kinds
    /// should be answered with [`Response::unsupported`].
    async fn handle(&self, peer_host_id: &str, request: Request) -> Response;
}

/// Counters of one transport, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Peer connections accepted (handshake and identity check passed).
    pub connections_accepted: u64,
    /// Connections this host opened to peers.
    pub connections_opened: u64,
    /// Incoming handshakes that failed (bad or missing certificate, garbage...).
    pub handshakes_failed: u64,
    /// Requests answered by the handler or the transport (pings).
    pub requests_served: u64,
    /// Requests refused with `overloaded` because the connection's in-flight limit was reached.
    pub requests_overloaded: u64,
    /// Request streams ended with an error: oversized, truncated, undecodable or too slow.
    pub bad_requests: u64,
    /// Times this host re-issued its leaf certificates.
    pub certificate_renewals: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) requests_served: AtomicU64,
    pub(crate) requests_overloaded: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) certificate_renewals: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            connections_accepted: get(&self.connections_accepted),
            connections_opened: get(&self.connections_opened),
            handshakes_failed: get(&self.handshakes_failed),
            requests_served: get(&self.requests_served),
            requests_overloaded: get(&self.requests_overloaded),
            bad_requests: get(&self.bad_requests),
            certificate_renewals: get(&self.certificate_renewals),
        }
    }
}

/// QUIC application close codes.
pub(crate) mod close {
    /// The host shut down after finishing every accepted request: a request that got no
    /// response on this connection was never handled and may be sent again.
    pub(crate) const SHUTTING_DOWN: u32 = 1;
    /// The host shut down before its in-flight requests finished.
    pub(crate) const ABORTED: u32 = 2;
    /// The caller reached a host other than the one it meant.
    pub(crate) const HOST_MISMATCH: u32 = 3;
    /// The peer's certificate names no Francis host.
    pub(crate) const BAD_IDENTITY: u32 = 4;
}

/// QUIC stream error codes.
pub(crate) mod stream_code {
    /// The caller gave up on the request.
    pub(crate) const CANCELLED: u32 = 1;
    /// The server answered without reading the whole request (error or overload).
    pub(crate) const REFUSED: u32 = 2;
}

pub(crate) struct Inner {
    /// This host's id, as its leaf certificates name it; changed by `Transport::set_host_id`.
    pub(crate) host_id: std::sync::RwLock<String>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) local_addr: SocketAddr,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) server_name: String,
    pub(crate) limits: Limits,
    pub(crate) handler: Arc<dyn RequestHandler>,
    pub(crate) cas: Vec<ClusterCa>,
    pub(crate) identity: Arc<IdentityCell>,
    pub(crate) leaf_lifetime: Duration,
    pub(crate) pool: Pool,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Accepted connections kept open while shutting down, so that they are closed with the
    /// shutdown's code (which tells peers their unanswered requests were not handled) rather
    /// than with a bare close when their task ends.
    pub(crate) draining: std::sync::Mutex<Vec<quinn::Connection>>,
    pub(crate) stats: Stats,
}

/// Cancels the background tasks when the last [`Transport`] handle is dropped.
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A host's peer transport: a QUIC endpoint that serves peers with a [`RequestHandler`] and
/// calls them over pooled, mutually authenticated connections.
///
/// Cheap to clone (all clones share one endpoint). Dropping the last clone stops serving;
/// [`Transport::shutdown`] does so gracefully.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl Inner {
    pub(crate) fn host_id(&self) -> String {
        self.host_id.read().expect("host id lock").clone()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("host_id", &self.inner.host_id())
            .field("local_addr", &self.inner.local_addr)
            .field("cas", &self.inner.cas)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Derives the CAs of every PSK, issues this host's leaf certificates, binds the UDP
    /// socket and starts serving peers with `handler`. Must be called inside a Tokio runtime.
    ///
    /// Fails on an invalid configuration ([`TransportError::PskTooShort`],
    /// [`TransportError::InvalidHostId`], [`TransportError::InvalidConfig`]) or when the
    /// address cannot be bound ([`TransportError::Bind`]).
    pub fn start(
        config: TransportConfig,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<Transport, TransportError> {
        config.validate()?;
        let cas = config
            .psks
            .iter()
            .map(|psk| derive_ca(psk))
            .collect::<Result<Vec<_>, _>>()?;
        let provider = tls::provider();
        let identity = Arc::new(IdentityCell::new(Identity::issue(
            &config.host_id,
            &cas,
            &provider,
            SystemTime::now(),
            config.leaf_lifetime,
        )?));
        let roots = tls::roots(&cas)?;
        let server_config = tls::server_config(
            roots.clone(),
            identity.clone(),
            provider.clone(),
            &config.limits,
        )?;
        let client_config = tls::client_config(
            roots,
            Some(tls::client_resolver(identity.clone())),
            provider,
            &config.limits,
        )?;
        let bind_error = |source| TransportError::Bind {
            addr: config.bind_addr,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.bind_addr).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no Tokio runtime is running")))?;
        let (reset_key, cid_key) = endpoint_secrets(&config.psks[0], local_addr);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
            .map_err(bind_error)?;
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            server_name: server_name_for(&cas[0]),
            host_id: std::sync::RwLock::new(config.host_id),
            endpoint,
            local_addr,
            client_config,
            limits: config.limits,
            handler,
            cas,
            identity,
            leaf_lifetime: config.leaf_lifetime,
            pool: Pool::default(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            draining: std::sync::Mutex::default(),
            stats: Stats::default(),
        });
        inner.tasks.spawn(server::accept_loop(inner.clone()));
        inner.tasks.spawn(renew_loop(inner.clone()));
        tracing::debug!(host_id = %inner.host_id(), %local_addr, "transport started");
        Ok(Transport {
            inner,
            _guard: Arc::new(DropGuard(shutdown)),
        })
    }

    /// This host's id.
    pub fn host_id(&self) -> String {
        self.inner.host_id()
    }

    /// Re-issues this host's leaf certificates under a new host id (a host that re-registered
    /// after fencing). The endpoint, its port and its open connections stay; new connections
    /// present the new id, and peers that want the old id get a host mismatch.
    pub fn set_host_id(&self, host_id: &str) -> Result<(), TransportError> {
        validate_host_id(host_id)?;
        let identity = Identity::issue(
            host_id,
            &self.inner.cas,
            &tls::provider(),
            SystemTime::now(),
            self.inner.leaf_lifetime,
        )?;
        *self.inner.host_id.write().expect("host id lock") = host_id.to_owned();
        self.inner.identity.set(identity);
        // Connections opened under the old id would tell peers the wrong name.
        self.inner.pool.clear();
        tracing::debug!(host_id, "transport host id changed");
        Ok(())
    }

    /// The address the endpoint is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The PEM of the CA that signs this host's certificate (the first PSK's).
    pub fn ca_pem(&self) -> &str {
        self.inner.cas[0].pem()
    }

    /// The CAs of every configured PSK, in configuration order.
    pub fn cas(&self) -> &[ClusterCa] {
        &self.inner.cas
    }

    /// The DER of this host's current leaf certificate under the first PSK; it changes when
    /// the certificate is renewed.
    pub fn leaf_certificate_der(&self) -> Vec<u8> {
        self.inner.identity.get().primary_der().to_vec()
    }

    /// The limits this transport was configured with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// A snapshot of this transport's counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.stats.snapshot()
    }

    /// Sends `request` to the host `peer_host_id` at `peer_addr` and returns its response.
    ///
    /// Uses the pooled connection to that peer, opening one if needed (and again after a
    /// loss); each request gets its own stream. The peer's certificate must chain to one of
    /// this host's CAs and name `peer_host_id`, else [`TransportError::AuthenticationFailed`]
    /// or the retryable [`TransportError::HostMismatch`]. A request-level refusal by the peer
    /// (`overloaded`, malformed request...) is [`TransportError::Rejected`] with the peer's
    /// code. At most seven eighths of [`Limits::max_in_flight_per_connection`] requests are in
    /// flight on one connection; a request beyond waits for a slot up to
    /// [`Limits::request_timeout`], then fails unsent with a retryable `overloaded`
    /// [`TransportError::Rejected`]. Once sent, the call is bounded by
    /// [`Limits::request_timeout`]; dropping the future aborts the stream, and the peer drops
    /// its handler.
    ///
    /// A request that certainly never reached the peer's handler (the pooled connection was
    /// already closed, or the peer closed it while shutting down gracefully) is sent once more
    /// on a fresh connection; no other request is ever sent twice.
    pub async fn request(
        &self,
        peer_addr: SocketAddr,
        peer_host_id: &str,
        request: Request,
    ) -> Result<Response, TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::Closed);
        }
        validate_host_id(peer_host_id)?;
        let limit = self.inner.limits.max_frame_size();
        let len = prost::Message::encoded_len(&request);
        if len > limit {
            return Err(TransportError::FrameTooLarge {
                declared: len as u64,
                max: limit,
            });
        }
        let frame = crate::frame::encode_frame(&request);
        let _slot = crate::pool::sending_slot(&self.inner, peer_addr, peer_host_id).await?;
        let after = self.inner.limits.request_timeout;
        match tokio::time::timeout(
            after,
            crate::pool::call(&self.inner, peer_addr, peer_host_id, frame),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                what: format!("request to host {peer_host_id} at {peer_addr}"),
                after,
            }),
        }
    }

    /// Sends `request` to whichever Francis host answers at `peer_addr`, and returns its
    /// response.
    ///
    /// Like [`Transport::request`] in every respect (pooling, one retry when certainly not
    /// handled, the request timeout) except that the peer's certificate must chain to one of
    /// this host's CAs and name *some* host, not a given one. It is for peers known only by
    /// address, such as the members of a replicated store, whose host ids change at every
    /// restart: trust still comes entirely from the cluster's PSKs (a peer without a
    /// certificate from them fails with [`TransportError::AuthenticationFailed`]); what is
    /// given up is only the check that the peer is one particular process.
    pub async fn request_any_host(
        &self,
        peer_addr: SocketAddr,
        request: Request,
    ) -> Result<Response, TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::Closed);
        }
        let limit = self.inner.limits.max_frame_size();
        let len = prost::Message::encoded_len(&request);
        if len > limit {
            return Err(TransportError::FrameTooLarge {
                declared: len as u64,
                max: limit,
            });
        }
        let frame = crate::frame::encode_frame(&request);
        let _slot =
            crate::pool::sending_slot(&self.inner, peer_addr, crate::pool::ANY_HOST).await?;
        let after = self.inner.limits.request_timeout;
        match tokio::time::timeout(
            after,
            crate::pool::call(&self.inner, peer_addr, crate::pool::ANY_HOST, frame),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                what: format!("request to the host at {peer_addr}"),
                after,
            }),
        }
    }

    /// Runs an invocation on the host `peer_host_id` at `peer_addr`: the actor's reply payload,
    /// or the error raised there with its kind (see [`Transport::request`] for the transport's
    /// own failures, which arrive as [`francis_core::Error::Transport`], `Overloaded`,
    /// `Timeout`...).
    pub async fn invoke(
        &self,
        peer_addr: SocketAddr,
        peer_host_id: &str,
        invoke: Invoke,
    ) -> Result<Option<Bytes>, francis_core::Error> {
        let request = Request {
            body: Some(request::Body::Invoke(invoke)),
        };
        let response = self.request(peer_addr, peer_host_id, request).await?;
        match response.body {
            Some(response::Body::Invoke(reply)) => reply.into_result(),
            other => Err(TransportError::UnexpectedResponse {
                peer: peer_addr,
                detail: format!("expected an invoke reply, got {other:?}"),
            }
            .into()),
        }
    }

    /// Checks that the host `peer_host_id` at `peer_addr` answers; returns the round-trip time.
    pub async fn ping(
        &self,
        peer_addr: SocketAddr,
        peer_host_id: &str,
    ) -> Result<Duration, TransportError> {
        let nonce = u64::from(rand_u32());
        let started = Instant::now();
        let response = self
            .request(
                peer_addr,
                peer_host_id,
                Request {
                    body: Some(request::Body::Ping(Ping { nonce })),
                },
            )
            .await?;
        match response.body {
            Some(response::Body::Pong(pong)) if pong.nonce == nonce => Ok(started.elapsed()),
            other => Err(TransportError::UnexpectedResponse {
                peer: peer_addr,
                detail: format!("expected pong {nonce}, got {other:?}"),
            }),
        }
    }

    /// Stops gracefully: no new connections or requests are accepted, requests in progress
    /// get up to [`Limits::shutdown_grace`] to finish and deliver their responses, then every
    /// connection is closed. Peers that sent a request which was never handled retry it on a
    /// fresh connection. Later calls of [`Transport::request`] fail with
    /// [`TransportError::Closed`].
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.tasks.close();
        let code = match tokio::time::timeout(inner.limits.shutdown_grace, inner.tasks.wait()).await
        {
            Ok(()) => close::SHUTTING_DOWN,
            Err(_) => {
                tracing::warn!(
                    host_id = %inner.host_id(),
                    "shutdown grace elapsed with requests still in progress; aborting them"
                );
                close::ABORTED
            }
        };
        // Every connection, the ones this host opened too, closes with the shutdown's code
        // (which tells peers their unanswered requests were not handled) before the pool lets
        // go of them; a pooled connection dropped first would close with a bare code.
        inner
            .endpoint
            .close(quinn::VarInt::from_u32(code), b"shutting down");
        inner.pool.clear();
        inner
            .draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        // Lets the close frames reach the peers; bounded in case they never acknowledge.
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.endpoint.wait_idle()).await;
        tracing::debug!(host_id = %inner.host_id(), "transport stopped");
    }
}

/// Re-issues the leaf certificates after two thirds of their lifetime. Connections already
/// established keep working; new handshakes use the new certificates.
async fn renew_loop(inner: Arc<Inner>) {
    loop {
        let current = inner.identity.get();
        let due = renew_at(current.issued_at, current.not_after);
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        drop(current);
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let provider = tls::provider();
        match Identity::issue(
            &inner.host_id(),
            &inner.cas,
            &provider,
            SystemTime::now(),
            inner.leaf_lifetime,
        ) {
            Ok(identity) => {
                inner.identity.set(identity);
                Stats::bump(&inner.stats.certificate_renewals);
                tracing::debug!(host_id = %inner.host_id(), "leaf certificates renewed");
            }
            Err(e) => {
                tracing::error!(host_id = %inner.host_id(), error = %e, "cannot renew leaf certificates");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // A ping nonce need not be secret; on the (never seen) failure 0 still works.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u32::from_le_bytes(bytes)
}
