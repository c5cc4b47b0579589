//! The serving side: accepts peer connections and answers one request per stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::endpoint::{Inner, Stats, close, stream_code};
use crate::error::TransportError;
use crate::frame::{Decoded, decode_frame, encode_frame};
use crate::proto::{Request, Response, WireError, request};
use crate::tls;
use francis_core::ErrorKind;

/// How long an `overloaded` caller is asked to wait before retrying.
pub(crate) const OVERLOADED_RETRY_AFTER: Duration = Duration::from_millis(100);

pub(crate) async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let incoming = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            incoming = inner.endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        inner.tasks.spawn(serve_connection(inner.clone(), incoming));
    }
}

async fn serve_connection(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    // Finished even when a shutdown begins meanwhile: the peer may already see the connection
    // as open and send a request on it, which must then end with the shutdown's close code
    // (not handled, send it elsewhere) rather than a bare close.
    let handshake = tokio::time::timeout(inner.limits.connect_timeout, incoming).await;
    let conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            Stats::bump(&inner.stats.handshakes_failed);
            tracing::info!(%remote, error = %e, "peer handshake failed (wrong PSK or no certificate?)");
            return;
        }
        Err(_) => {
            Stats::bump(&inner.stats.handshakes_failed);
            tracing::info!(%remote, "peer handshake timed out");
            return;
        }
    };
    let peer: Arc<str> = match tls::peer_host_id(&conn) {
        Ok(id) => id.into(),
        Err(reason) => {
            Stats::bump(&inner.stats.handshakes_failed);
            tracing::warn!(%remote, %reason, "peer certificate names no host; closing");
            conn.close(VarInt::from_u32(close::BAD_IDENTITY), reason.as_bytes());
            return;
        }
    };
    Stats::bump(&inner.stats.connections_accepted);
    tracing::debug!(%remote, peer = %peer, "peer connected");
    let in_flight = Arc::new(Semaphore::new(
        inner.limits.max_in_flight_per_connection as usize,
    ));
    loop {
        let (send, recv) = tokio::select! {
            _ = inner.shutdown.cancelled() => {
                // Requests opened from now on are not accepted; the shutdown closes the
                // connection with its code once the accepted ones are answered.
                inner
                    .draining
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(conn);
                return;
            }
            stream = conn.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%remote, peer = %peer, reason = %e, "peer connection ended");
                    return;
                }
            },
        };
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                inner.tasks.spawn(serve_stream(
                    inner.clone(),
                    peer.clone(),
                    send,
                    recv,
                    permit,
                ));
            }
            Err(_) => {
                Stats::bump(&inner.stats.requests_overloaded);
                let limit = inner.limits.max_in_flight_per_connection;
                let response = Response::error(WireError::new(
                    ErrorKind::Overloaded,
                    format!("overloaded: {limit} requests from this host are already in progress"),
                    Some(OVERLOADED_RETRY_AFTER),
                ));
                inner
                    .tasks
                    .spawn(refuse(inner.clone(), send, recv, response));
            }
        }
    }
}

/// Answers without reading the request.
async fn refuse(inner: Arc<Inner>, mut send: SendStream, mut recv: RecvStream, response: Response) {
    let _ = recv.stop(VarInt::from_u32(stream_code::REFUSED));
    respond(&inner, &mut send, &response).await;
}

async fn serve_stream(
    inner: Arc<Inner>,
    peer: Arc<str>,
    mut send: SendStream,
    mut recv: RecvStream,
    permit: OwnedSemaphorePermit,
) {
    let limits = &inner.limits;
    let read = tokio::time::timeout(
        limits.read_timeout,
        read_frame::<Request>(&mut recv, limits.max_frame_size()),
    )
    .await;
    let response = match read {
        Ok(Ok(request)) => match request.body {
            Some(request::Body::Ping(ping)) => Response::pong(ping.nonce, &inner.host_id()),
            Some(body) => {
                let kind = body.kind();
                let request = Request { body: Some(body) };
                // The caller stopping our send side means it gave up: drop the handler.
                let cancelled = send.stopped();
                tokio::select! {
                    response = inner.handler.handle(&peer, request) => response,
                    _ = cancelled => {
                        tracing::debug!(peer = %peer, kind, "caller cancelled the request");
                        return;
                    }
                }
            }
            None => Response::unsupported(),
        },
        Ok(Err(ReadFailure::Frame(e))) => {
            Stats::bump(&inner.stats.bad_requests);
            tracing::info!(peer = %peer, error = %e, "bad request frame");
            let _ = recv.stop(VarInt::from_u32(stream_code::REFUSED));
            Response::error(frame_error_reply(&e))
        }
        Ok(Err(ReadFailure::Stream(e))) => {
            tracing::debug!(peer = %peer, error = %e, "request stream failed");
            return;
        }
        Err(_) => {
            Stats::bump(&inner.stats.bad_requests);
            tracing::info!(peer = %peer, "request not received in time");
            let _ = recv.stop(VarInt::from_u32(stream_code::REFUSED));
            Response::error(WireError::new(
                ErrorKind::Timeout,
                format!(
                    "the request was not received within the read timeout of {:?} (stream never \
                     finished?)",
                    limits.read_timeout
                ),
                None,
            ))
        }
    };
    Stats::bump(&inner.stats.requests_served);
    let response = if prost::Message::encoded_len(&response) > limits.max_frame_size() {
        Response::error(WireError::new(
            ErrorKind::Encode,
            format!(
                "the response of {} bytes exceeds the maximum message size of {} bytes",
                prost::Message::encoded_len(&response),
                limits.max_frame_size()
            ),
            None,
        ))
    } else {
        response
    };
    drop(permit);
    respond(&inner, &mut send, &response).await;
}

/// Writes the response, finishes the stream and waits until the peer has it (a connection
/// closed right after `finish()` could lose it).
async fn respond(inner: &Inner, send: &mut SendStream, response: &Response) {
    let frame = encode_frame(response);
    let write = async {
        send.write_all(&frame).await.ok()?;
        send.finish().ok()?;
        send.stopped().await.ok()
    };
    if tokio::time::timeout(inner.limits.read_timeout, write)
        .await
        .is_err()
    {
        tracing::debug!("peer did not acknowledge the response in time");
    }
}

/// The reply to a request frame that could not be read.
fn frame_error_reply(e: &TransportError) -> WireError {
    let kind = match e {
        TransportError::FrameTooLarge { .. } => ErrorKind::InvalidArgument,
        _ => ErrorKind::Decode,
    };
    WireError::new(kind, format!("bad request: {e}"), None)
}

pub(crate) enum ReadFailure {
    /// The bytes received do not form a valid frame.
    Frame(TransportError),
    /// The stream itself failed (reset, connection lost).
    Stream(quinn::ReadError),
}

/// Reads exactly one frame from `recv`, never more bytes than the frame, refusing an oversized
/// frame as soon as its length prefix is in.
pub(crate) async fn read_frame<M: prost::Message + Default>(
    recv: &mut RecvStream,
    max_size: usize,
) -> Result<M, ReadFailure> {
    const MAX_CHUNK: usize = 64 * 1024;
    let mut buf = BytesMut::new();
    loop {
        match decode_frame::<M>(&buf, max_size).map_err(ReadFailure::Frame)? {
            Decoded::Complete { message, .. } => return Ok(message),
            Decoded::Incomplete { needed } => {
                match recv.read_chunk(needed.min(MAX_CHUNK), true).await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        return Err(ReadFailure::Frame(TransportError::FrameTruncated {
                            expected: buf.len() + needed,
                            received: buf.len(),
                        }));
                    }
                    Err(e) => return Err(ReadFailure::Stream(e)),
                }
            }
        }
    }
}
