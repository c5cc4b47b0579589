//! Trust: PSK-derived CAs, refused strangers, host ids and PSK rotation.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use francis_transport::proto::{Ping, Request, Response, request, response};
use francis_transport::{
    ClusterCa, Transport, TransportError, decode_message, derive_ca, encode_frame, testing,
};
use support::*;

fn assert_auth_failed(result: Result<Response, TransportError>) {
    let err = result.expect_err("the call must be refused");
    assert!(
        matches!(err, TransportError::AuthenticationFailed { .. }),
        "expected an authentication failure, got {err}"
    );
    assert!(err.to_string().contains("wrong PSK?"), "{err}");
}

#[tokio::test]
async fn a_host_with_another_psk_is_refused_in_both_directions() {
    let (a, ha) = start("host-a", &[PSK_OLD]);
    let (b, hb) = start("host-b", &[PSK_NEW]);
    assert_auth_failed(
        a.request(b.local_addr(), "host-b", invoke_request("echo", "1"))
            .await,
    );
    assert_auth_failed(
        b.request(a.local_addr(), "host-a", invoke_request("echo", "1"))
            .await,
    );
    assert_eq!(ha.entered() + hb.entered(), 0);
    let core: francis_core::Error = a
        .request(b.local_addr(), "host-b", invoke_request("echo", "1"))
        .await
        .unwrap_err()
        .into();
    assert_eq!(core.kind(), francis_core::ErrorKind::Transport);
    assert!(core.to_string().contains("wrong PSK?"));

    // Both still serve hosts that share their PSK.
    let (c, _) = start("host-c", &[PSK_OLD]);
    c.ping(a.local_addr(), "host-a").await.unwrap();
}

/// Opens a raw connection and sends one ping, returning what happened.
async fn raw_ping(
    config: quinn::ClientConfig,
    server: SocketAddr,
    name: &str,
) -> Result<(), String> {
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let conn = endpoint
        .connect_with(config, server, name)
        .unwrap()
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
    let ping = Request {
        body: Some(request::Body::Ping(Ping { nonce: 9 })),
    };
    send.write_all(&encode_frame(&ping))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let _ = send.finish();
    let bytes = recv
        .read_to_end(1 << 16)
        .await
        .map_err(|e| format!("read: {e:?}"))?;
    let response: Response = decode_message(&bytes, 1 << 16).map_err(|e| e.to_string())?;
    match response.body {
        Some(response::Body::Pong(p)) if p.nonce == 9 => Ok(()),
        other => Err(format!("unexpected {other:?}")),
    }
}

fn ca(psk: &[u8]) -> ClusterCa {
    derive_ca(psk).unwrap()
}

#[tokio::test]
async fn raw_clients_need_a_certificate_from_a_configured_psk() {
    let (server, handler) = start("server", &[PSK_OLD]);
    let addr = server.local_addr();
    let old = ca(PSK_OLD);
    let new = ca(PSK_NEW);
    let name = testing::server_name(&old);

    // The control: a well-formed client certificate under the server's CA works.
    let good = testing::raw_client_config(Some((&old, "raw")), std::slice::from_ref(&old)).unwrap();
    raw_ping(good, addr, &name).await.unwrap();

    // No client certificate at all.
    let anonymous = testing::raw_client_config(None, std::slice::from_ref(&old)).unwrap();
    let err = raw_ping(anonymous, addr, &name).await.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");

    // A certificate of the right shape (host URI, both EKUs) from another PSK's CA, while the
    // client itself trusts the server.
    let foreign =
        testing::raw_client_config(Some((&new, "server")), &[ca(PSK_OLD), ca(PSK_NEW)]).unwrap();
    let err = raw_ping(foreign, addr, &name).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    eventually(
        "both handshakes to be counted",
        Duration::from_secs(10),
        || server.stats().handshakes_failed >= 2,
    )
    .await;
    assert_eq!(server.stats().connections_accepted, 1);
    assert_eq!(handler.entered(), 0);
    // And the server still serves its cluster.
    let (client, _) = start("client", &[PSK_OLD]);
    client.ping(addr, "server").await.unwrap();
}

#[tokio::test]
async fn a_client_refuses_a_server_from_another_psk() {
    let (server, _) = start("server", &[PSK_NEW]);
    let old = ca(PSK_OLD);
    let config =
        testing::raw_client_config(Some((&old, "raw")), std::slice::from_ref(&old)).unwrap();
    let err = raw_ping(config, server.local_addr(), "x.ca.francis")
        .await
        .unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn reaching_another_host_than_intended_is_a_retryable_mismatch() {
    let (server, handler) = start("host-b", &[PSK_OLD]);
    let (client, _) = start("host-a", &[PSK_OLD]);
    let err = client
        .request(server.local_addr(), "host-c", invoke_request("echo", "1"))
        .await
        .unwrap_err();
    match &err {
        TransportError::HostMismatch {
            expected, found, ..
        } => {
            assert_eq!(expected, "host-c");
            assert_eq!(found, "host-b");
        }
        other => panic!("expected a host mismatch, got {other}"),
    }
    assert!(err.is_retryable());
    let core: francis_core::Error = err.into();
    assert!(core.is_retryable());
    assert_eq!(handler.entered(), 0);
    assert_eq!(
        handler.completed.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Asking for the right host works.
    client.ping(server.local_addr(), "host-b").await.unwrap();
}

#[tokio::test]
async fn a_host_can_take_a_new_id_without_restarting() {
    let (server, _) = start("host-b", &[PSK_OLD]);
    let (client, _) = start("host-a", &[PSK_OLD]);
    client.ping(server.local_addr(), "host-b").await.unwrap();
    server.set_host_id("host-b2").unwrap();
    assert_eq!(server.host_id(), "host-b2");
    // new connections to the same port present the new id only (connections already open
    // stay as they were)
    client.ping(server.local_addr(), "host-b2").await.unwrap();
    let (fresh, _) = start("host-c", &[PSK_OLD]);
    let err = fresh
        .request(server.local_addr(), "host-b", invoke_request("echo", "1"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::HostMismatch { .. }), "{err}");
    assert!(server.set_host_id("bad id with spaces").is_err());
    assert_eq!(server.host_id(), "host-b2");
}

#[tokio::test]
async fn rolling_psk_rotation() {
    // Step 1: x has the new PSK first, y is still on the old one; they talk both ways.
    let (x, _) = start("x", &[PSK_NEW, PSK_OLD]);
    let (y, _) = start("y", &[PSK_OLD]);
    let who = x
        .invoke(y.local_addr(), "y", invoke("whoami", "null"))
        .await
        .unwrap();
    assert_eq!(who, Some(Bytes::from_static(b"x")));
    let who = y
        .invoke(x.local_addr(), "x", invoke("whoami", "null"))
        .await
        .unwrap();
    assert_eq!(who, Some(Bytes::from_static(b"y")));
    assert_eq!(x.ca_pem(), derive_ca(PSK_NEW).unwrap().pem());
    assert_eq!(y.ca_pem(), derive_ca(PSK_OLD).unwrap().pem());

    // Step 2: every host has moved to [new]; a host left on [old] is refused both ways.
    let (x2, _) = start("x2", &[PSK_NEW]);
    let (z, _) = start("z", &[PSK_NEW]);
    x2.ping(z.local_addr(), "z").await.unwrap();
    z.ping(x2.local_addr(), "x2").await.unwrap();
    assert_auth_failed(
        y.request(x2.local_addr(), "x2", invoke_request("echo", "1"))
            .await,
    );
    assert_auth_failed(
        x2.request(y.local_addr(), "y", invoke_request("echo", "1"))
            .await,
    );
}

#[tokio::test]
async fn cas_are_derived_deterministically_and_short_psks_are_refused() {
    let first = derive_ca(PSK_OLD).unwrap();
    let second = derive_ca(PSK_OLD).unwrap();
    assert_eq!(first.pem(), second.pem());
    assert_ne!(first.pem(), derive_ca(PSK_NEW).unwrap().pem());
    let (a, _) = start("a", &[PSK_OLD, PSK_NEW]);
    assert_eq!(a.ca_pem(), first.pem());
    assert_eq!(a.cas().len(), 2);

    let err = Transport::start(
        config("short", &[PSK_OLD, b"too-short"]),
        TestHandler::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TransportError::PskTooShort { len: 9, min: 32 }),
        "{err}"
    );
    let err = Transport::start(config("a/b", &[PSK_OLD]), TestHandler::new()).unwrap_err();
    assert!(matches!(err, TransportError::InvalidHostId { .. }), "{err}");
    let err = Transport::start(config("nopsk", &[]), TestHandler::new()).unwrap_err();
    assert!(matches!(err, TransportError::InvalidConfig(_)), "{err}");
}
