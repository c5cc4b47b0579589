//! Misbehaving peers: malformed frames, slow streams, oversized messages and stray datagrams.
//! Each ends only its own stream, with a clear error, and the host keeps serving.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use francis_transport::proto::{Ping, Request, Response, request, response};
use francis_transport::{
    Decoded, Transport, TransportError, decode_frame, decode_message, derive_ca, encode_frame,
    frame_header, testing,
};
use proptest::prelude::*;
use rand::Rng;
use support::*;

/// A raw, authenticated connection to `server` (certificate under `PSK_OLD`).
async fn raw_connection(server: &Transport) -> (quinn::Endpoint, quinn::Connection) {
    let ca = derive_ca(PSK_OLD).unwrap();
    let config = testing::raw_client_config(Some((&ca, "raw")), std::slice::from_ref(&ca)).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let conn = endpoint
        .connect_with(config, server.local_addr(), &testing::server_name(&ca))
        .unwrap()
        .await
        .unwrap();
    (endpoint, conn)
}

/// Sends `bytes` on a new stream (finishing it when `finish`) and returns the response frame.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The server may stop reading early (that is the point); the answer still comes.
    let _ = send.write_all(bytes).await;
    if finish {
        let _ = send.finish();
    }
    let answer = recv.read_to_end(1 << 20).await.unwrap();
    decode_message(&answer, 1 << 20).unwrap()
}

fn refusal(response: Response) -> (String, String) {
    match response.body {
        Some(response::Body::Error(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn assert_still_serves(server: &Transport, conn: &quinn::Connection) {
    let ping = Request {
        body: Some(request::Body::Ping(Ping { nonce: 5 })),
    };
    match send_raw(conn, &encode_frame(&ping), true).await.body {
        Some(response::Body::Pong(p)) => assert_eq!(p.nonce, 5),
        other => panic!("expected a pong, got {other:?}"),
    }
    let (client, _) = start("client", &[PSK_OLD]);
    let reply = client
        .invoke(server.local_addr(), "server", invoke("echo", "ok"))
        .await
        .unwrap();
    assert_eq!(reply, Some(Bytes::from_static(b"ok")));
}

fn varint(n: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    prost::encoding::encode_varint(n, &mut buf);
    buf
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_its_body_is_read() {
    let (server, handler) = start_with(config("server", &[PSK_OLD]).with_limits(limits(|l| {
        l.max_message_size = 1024;
        l.frame_headroom = 0;
    })));
    let (_ep, conn) = raw_connection(&server).await;
    // Declares 64 MiB and sends only a little: the refusal must not wait for the rest.
    let mut bytes = varint(64 << 20);
    bytes.extend_from_slice(&[0u8; 100]);
    let (code, message) = refusal(send_raw(&conn, &bytes, false).await);
    assert_eq!(code, "invalid_argument");
    assert!(
        message.contains("exceeds the maximum message size of 1024"),
        "{message}"
    );
    assert_eq!(server.stats().bad_requests, 1);
    assert_eq!(handler.entered(), 0);
    assert_still_serves(&server, &conn).await;
}

#[tokio::test]
async fn a_truncated_frame_is_reported() {
    let (server, _) = start("server", &[PSK_OLD]);
    let (_ep, conn) = raw_connection(&server).await;
    let mut bytes = varint(100);
    bytes.extend_from_slice(&[0u8; 10]);
    let (code, message) = refusal(send_raw(&conn, &bytes, true).await);
    assert_eq!(code, "decode");
    assert!(message.contains("truncated frame"), "{message}");
    assert!(message.contains("after 11 of 101 bytes"), "{message}");
    assert_still_serves(&server, &conn).await;
}

#[tokio::test]
async fn bytes_that_are_not_protobuf_are_reported() {
    let (server, _) = start("server", &[PSK_OLD]);
    let (_ep, conn) = raw_connection(&server).await;
    let (code, message) = refusal(send_raw(&conn, &[4, 0xff, 0xff, 0xff, 0xff], true).await);
    assert_eq!(code, "decode");
    assert!(message.contains("not a valid Request"), "{message}");
    let (code, message) = refusal(send_raw(&conn, &[0xff; 12], true).await);
    assert_eq!(code, "decode");
    assert!(message.contains("length prefix"), "{message}");
    // A valid frame with no known request kind.
    let (code, _) = refusal(send_raw(&conn, &[0], true).await);
    assert_eq!(code, "invalid_argument");
    assert_eq!(server.stats().bad_requests, 2);
    assert_still_serves(&server, &conn).await;
}

#[tokio::test]
async fn a_stream_that_never_finishes_times_out() {
    let (server, handler) = start_with(
        config("server", &[PSK_OLD])
            .with_limits(limits(|l| l.read_timeout = Duration::from_millis(300))),
    );
    let (_ep, conn) = raw_connection(&server).await;
    let mut bytes = varint(100);
    bytes.extend_from_slice(&[0u8; 10]);
    let (code, message) = refusal(send_raw(&conn, &bytes, false).await);
    assert_eq!(code, "timeout");
    assert!(message.contains("never finished"), "{message}");
    assert_eq!(handler.entered(), 0);
    assert_still_serves(&server, &conn).await;
}

#[tokio::test]
async fn oversized_messages_are_refused_on_both_sides() {
    let small = |l: &mut francis_transport::Limits| {
        l.max_message_size = 1024;
        l.frame_headroom = 0;
    };
    let (server, _) = start_with(config("server", &[PSK_OLD]).with_limits(limits(small)));
    let (client, _) = start_with(config("client", &[PSK_OLD]).with_limits(limits(small)));
    let addr = server.local_addr();
    // Too big to send: refused locally, nothing sent.
    let err = client
        .request(addr, "server", invoke_request("echo", vec![b'x'; 2000]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { max: 1024, .. }),
        "{err}"
    );
    assert_eq!(client.stats().connections_opened, 0);
    // A handler reply too big to send becomes an `encode` error.
    let err = client
        .request(addr, "server", invoke_request("big", "2000"))
        .await
        .unwrap_err();
    match &err {
        TransportError::Rejected { error, .. } => {
            assert_eq!(error.code, "encode");
            assert!(error.message.contains("exceeds the maximum message size"));
        }
        other => panic!("expected an encode refusal, got {other}"),
    }
    let reply = client
        .invoke(addr, "server", invoke("big", "500"))
        .await
        .unwrap();
    assert_eq!(reply.map(|b| b.len()), Some(500));
}

#[tokio::test]
async fn random_datagrams_change_nothing() {
    let (server, handler) = start("server", &[PSK_OLD]);
    let addr: SocketAddr = server.local_addr();
    let (client, _) = start("client", &[PSK_OLD]);
    client.ping(addr, "server").await.unwrap();

    let socket = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let mut rng = rand::rng();
    for i in 0..300 {
        let len = rng.random_range(1..1400);
        let mut datagram = vec![0u8; len];
        rng.fill(&mut datagram[..]);
        if i % 3 == 0 && len > 5 {
            // Looks like a QUIC v1 long header (Initial), with garbage after it.
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        socket.send_to(&datagram, addr).await.unwrap();
    }
    // A round trip after the datagrams were sent: the existing connection and a new one work.
    client.ping(addr, "server").await.unwrap();
    let reply = client
        .invoke(addr, "server", invoke("echo", "1"))
        .await
        .unwrap();
    assert_eq!(reply, Some(Bytes::from_static(b"1")));
    let (other, _) = start("other", &[PSK_OLD]);
    other.ping(addr, "server").await.unwrap();
    assert_eq!(server.stats().connections_accepted, 2);
    assert_eq!(handler.entered(), 0);
}

proptest! {
    #[test]
    fn the_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
        let _ = frame_header(&bytes, max);
        let _ = decode_frame::<Request>(&bytes, max);
        let _ = decode_frame::<Response>(&bytes, max);
        let _ = decode_message::<Request>(&bytes, max);
        let _ = decode_message::<Response>(&bytes, usize::MAX);
    }

    #[test]
    fn frames_round_trip_and_prefixes_are_incomplete(
        method in ".{0,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        read_only in any::<bool>(),
    ) {
        let mut inv = invoke(&method, payload);
        inv.read_only = read_only;
        let msg = Request { body: Some(request::Body::Invoke(inv)) };
        let frame = encode_frame(&msg);
        prop_assert_eq!(decode_message::<Request>(&frame, 1 << 20).unwrap(), msg);
        for cut in [0, 1, frame.len() / 2, frame.len() - 1] {
            let incomplete = matches!(
                decode_frame::<Request>(&frame[..cut], 1 << 20),
                Ok(Decoded::Incomplete { .. })
            );
            prop_assert!(incomplete);
        }
    }
}
