//! The calling side: one pooled connection per peer, one stream per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use francis_core::ErrorKind;
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::endpoint::{Inner, Stats, close, stream_code};
use crate::error::TransportError;
use crate::proto::{Response, WireError, response};
use crate::server::{OVERLOADED_RETRY_AFTER, ReadFailure, read_frame};
use crate::tls;

type Key = (SocketAddr, String);

/// The pool key's host id for connections that accept any host of the cluster (`*` is not a
/// valid host id, so it never collides with one).
pub(crate) const ANY_HOST: &str = "*";
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Connections this host opened, keyed by peer address and host id. A slot's lock is held
/// while connecting, so concurrent callers share one new connection.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Requests in flight per key, bounded by [`sending_limit`].
    permits: Mutex<HashMap<Key, Arc<Semaphore>>>,
}

/// How many requests this host keeps in flight on one connection: a little under the
/// `max_in_flight_per_connection` the peer accepts (assumed to be ours, as a cluster shares
/// its settings), so a burst waits here instead of being refused as overloaded; the margin
/// covers requests this side gave up on whose handlers the peer has not yet stopped.
pub(crate) fn sending_limit(peer_accepts: u32) -> usize {
    let limit = peer_accepts as usize;
    (limit - limit / 8).max(1)
}

impl Pool {
    fn permits(&self, key: &Key, limit: usize) -> Arc<Semaphore> {
        let mut permits = self
            .permits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = permits.get(key) {
            return p.clone();
        }
        // Forget keys with nothing in flight (and no caller about to use them) that have no
        // pooled connection any more.
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        permits.retain(|k, p| {
            slots.contains_key(k) || p.available_permits() < limit || Arc::strong_count(p) > 1
        });
        drop(slots);
        permits
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone()
    }

    fn slot(&self, key: &Key) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        // Forget peers whose connection is gone (hosts restart with new ids).
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(conn) => conn.as_ref().is_some_and(|c| c.close_reason().is_none()),
            Err(_) => true,
        });
        slots.entry(key.clone()).or_default().clone()
    }

    /// Drops `conn` from the pool if it is still the pooled connection for `key`.
    fn evict(&self, key: &Key, conn: &quinn::Connection) {
        let slot = self.slot(key);
        if let Ok(mut pooled) = slot.try_lock()
            && pooled.as_ref().map(quinn::Connection::stable_id) == Some(conn.stable_id())
        {
            *pooled = None;
        }
    }

    /// Forgets every pooled connection.
    pub(crate) fn clear(&self) {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// How one attempt failed.
enum Failure {
    /// The request certainly never reached the peer's handler: it may be sent again.
    NotHandled(TransportError),
    /// Anything else.
    Final(TransportError),
}

/// A slot to send one request to `peer` on the connection for `host_id`, waiting at most the
/// request timeout for one (see [`sending_limit`]). When none frees up in time the request
/// was certainly not sent: the answer is the retryable `overloaded` refusal a full peer gives.
pub(crate) async fn sending_slot(
    inner: &Inner,
    peer: SocketAddr,
    host_id: &str,
) -> Result<OwnedSemaphorePermit, TransportError> {
    let key = (peer, host_id.to_string());
    let limit = sending_limit(inner.limits.max_in_flight_per_connection);
    let permits = inner.pool.permits(&key, limit);
    match tokio::time::timeout(inner.limits.request_timeout, permits.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(TransportError::Closed),
        Err(_) => Err(TransportError::Rejected {
            peer,
            error: Box::new(WireError::new(
                ErrorKind::Overloaded,
                format!(
                    "overloaded: {limit} requests to this host were already in progress for {:?}; not sent",
                    inner.limits.request_timeout
                ),
                Some(OVERLOADED_RETRY_AFTER),
            )),
        }),
    }
}

/// Sends one request frame and reads its response, retrying once on a fresh connection when
/// the request was certainly not handled.
pub(crate) async fn call(
    inner: &Inner,
    peer: SocketAddr,
    host_id: &str,
    frame: Bytes,
) -> Result<Response, TransportError> {
    let key = (peer, host_id.to_string());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let conn = connection(inner, &key).await?;
        match exchange(&conn, peer, &frame, inner.limits.max_frame_size()).await {
            Ok(response) => {
                return match response.body {
                    Some(response::Body::Error(error)) => Err(TransportError::Rejected {
                        peer,
                        error: Box::new(error),
                    }),
                    _ => Ok(response),
                };
            }
            Err(Failure::NotHandled(e)) if attempt == 1 => {
                tracing::debug!(%peer, error = %e, "request not handled; retrying on a new connection");
                inner.pool.evict(&key, &conn);
            }
            Err(Failure::NotHandled(e) | Failure::Final(e)) => {
                if conn.close_reason().is_some() {
                    inner.pool.evict(&key, &conn);
                }
                return Err(e);
            }
        }
    }
}

/// The pooled connection for `key`, opening one if there is none or it is closed.
async fn connection(inner: &Inner, key: &Key) -> Result<quinn::Connection, TransportError> {
    let slot = inner.pool.slot(key);
    let mut pooled = slot.lock().await;
    if let Some(conn) = pooled.as_ref() {
        if conn.close_reason().is_none() {
            return Ok(conn.clone());
        }
        // The peer closed this connection on purpose (it shut down, or dropped us): say so
        // once, without sending, rather than reconnecting at once to a port that may be dead
        // (which only times out). The next call connects anew.
        let closed_by_peer = closed_by_peer(conn);
        *pooled = None;
        if closed_by_peer {
            return Err(TransportError::PeerShutDown { peer: key.0 });
        }
    }
    let conn = connect(inner, key.0, &key.1).await?;
    *pooled = Some(conn.clone());
    Ok(conn)
}

/// Whether the peer closed `conn` itself (as opposed to a timeout or a local close).
fn closed_by_peer(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(ConnectionError::ApplicationClosed(_))
    )
}

async fn connect(
    inner: &Inner,
    peer: SocketAddr,
    host_id: &str,
) -> Result<quinn::Connection, TransportError> {
    // quinn runs the new connection's driver inside the span current at connect time. Connect
    // from a task of its own, outside the caller's span: the connection outlives the call that
    // opened it, and would otherwise keep that call's span open (and unexported) for its life.
    let (endpoint, config, name) = (
        inner.endpoint.clone(),
        inner.client_config.clone(),
        inner.server_name.clone(),
    );
    let connecting = tokio::spawn(async move { endpoint.connect_with(config, peer, &name) })
        .await
        .map_err(|e| TransportError::Connect {
            peer,
            reason: format!("the connecting task failed: {e}"),
        })?
        .map_err(|e| match e {
            quinn::ConnectError::EndpointStopping => TransportError::Closed,
            e => TransportError::Connect {
                peer,
                reason: e.to_string(),
            },
        })?;
    let after = inner.limits.connect_timeout;
    let conn = match tokio::time::timeout(after, connecting).await {
        Ok(Ok(conn)) => conn,
        // No request was sent on a connection that never opened (a peer shutting down
        // refuses new connections): a connection failure, not a lost request.
        Ok(Err(e)) => {
            return Err(match connection_error(&e, peer) {
                TransportError::ConnectionLost { reason, .. } => {
                    TransportError::Connect { peer, reason }
                }
                TransportError::Unresponsive { .. } => {
                    TransportError::Unresponsive { peer, sent: false }
                }
                other => other,
            });
        }
        // No handshake within the connect timeout: nothing answers at that address.
        Err(_) => return Err(TransportError::Unresponsive { peer, sent: false }),
    };
    let found = match tls::peer_host_id(&conn) {
        Ok(found) => found,
        Err(reason) => {
            conn.close(VarInt::from_u32(close::BAD_IDENTITY), reason.as_bytes());
            return Err(TransportError::AuthenticationFailed {
                peer,
                detail: reason,
            });
        }
    };
    if host_id != ANY_HOST && found != host_id {
        conn.close(VarInt::from_u32(close::HOST_MISMATCH), b"host mismatch");
        return Err(TransportError::HostMismatch {
            peer,
            expected: host_id.to_string(),
            found,
        });
    }
    Stats::bump(&inner.stats.connections_opened);
    Ok(conn)
}

/// The streams of one request; resets them if dropped before the response was read, so a
/// caller that gives up aborts the request on the peer too.
struct CallStreams {
    send: SendStream,
    recv: RecvStream,
    done: bool,
}

impl Drop for CallStreams {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.send.reset(VarInt::from_u32(stream_code::CANCELLED));
            let _ = self.recv.stop(VarInt::from_u32(stream_code::CANCELLED));
        }
    }
}

async fn exchange(
    conn: &quinn::Connection,
    peer: SocketAddr,
    frame: &[u8],
    max_size: usize,
) -> Result<Response, Failure> {
    let (send, recv) = conn.open_bi().await.map_err(|e| {
        // Nothing was sent on a connection that is already gone.
        Failure::NotHandled(connection_error(&e, peer))
    })?;
    let mut streams = CallStreams {
        send,
        recv,
        done: false,
    };
    match streams.send.write_all(frame).await {
        Ok(()) => {
            let _ = streams.send.finish();
        }
        // The peer answered without reading everything (an error or "overloaded"): read it.
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(lost(&e, peer)),
        Err(e) => {
            return Err(Failure::Final(TransportError::Stream {
                peer,
                reason: e.to_string(),
            }));
        }
    }
    // Bounded by the caller's request timeout.
    let result = read_frame::<Response>(&mut streams.recv, max_size).await;
    streams.done = true;
    match result {
        Ok(response) => Ok(response),
        Err(ReadFailure::Frame(e)) => Err(Failure::Final(e)),
        Err(ReadFailure::Stream(quinn::ReadError::ConnectionLost(e))) => Err(lost(&e, peer)),
        Err(ReadFailure::Stream(e)) => Err(Failure::Final(TransportError::Stream {
            peer,
            reason: e.to_string(),
        })),
    }
}

/// The connection broke during a request. Only a graceful shutdown of the peer guarantees the
/// request was not handled (the peer finishes and answers every request it accepted first).
fn lost(e: &ConnectionError, peer: SocketAddr) -> Failure {
    let error = connection_error(e, peer);
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(close::SHUTTING_DOWN) =>
        {
            Failure::NotHandled(error)
        }
        _ => Failure::Final(error),
    }
}

/// Names a connection failure; TLS alerts and identity refusals are authentication failures.
fn connection_error(e: &ConnectionError, peer: SocketAddr) -> TransportError {
    let is_tls_alert = |code: u64| (0x100..0x200).contains(&code);
    match e {
        ConnectionError::TransportError(te) if is_tls_alert(u64::from(te.code)) => {
            TransportError::AuthenticationFailed {
                peer,
                detail: format!("this host refused the peer's certificate: {te}"),
            }
        }
        ConnectionError::ConnectionClosed(c) if is_tls_alert(u64::from(c.error_code)) => {
            TransportError::AuthenticationFailed {
                peer,
                detail: format!("the peer refused this host's certificate: {c}"),
            }
        }
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(close::BAD_IDENTITY) =>
        {
            TransportError::AuthenticationFailed {
                peer,
                detail: format!("the peer refused this host's identity: {c}"),
            }
        }
        ConnectionError::LocallyClosed => TransportError::Closed,
        ConnectionError::TimedOut => TransportError::Unresponsive { peer, sent: true },
        e => TransportError::ConnectionLost {
            peer,
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::sending_limit;

    #[test]
    fn the_sending_limit_stays_under_what_the_peer_accepts() {
        assert_eq!(sending_limit(100), 88);
        assert_eq!(sending_limit(1000), 875);
        assert_eq!(sending_limit(8), 7);
        assert_eq!(sending_limit(4), 4);
        assert_eq!(sending_limit(1), 1);
    }
}
