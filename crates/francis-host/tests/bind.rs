//! The peer server's bind address apart from the advertised one (containers, NAT): a host
//! binding the wildcard address serves calls routed to its advertised address, a host whose
//! advertised name does not resolve here still starts and binds what it was told, and a bind
//! address that cannot work is refused.

mod support;

use std::sync::Arc;

use francis_core::ActorRef;
use francis_host::{HostError, LocalHost};
use support::{Probe, free_udp_addr, host_built, host_on, invoke_until_routed, serve_probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_bound_to_the_wildcard_address_serves_its_advertised_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let a = host_on(&path, |_| {}).await;
    let port = free_udp_addr().port();
    let b = host_built(
        &path,
        format!("127.0.0.1:{port}"),
        |builder| builder.bind_address(([0, 0, 0, 0], port).into()),
        |h| serve_probe(h, &probe),
    )
    .await;
    // Only B serves the type: the call goes from A to B's advertised address.
    let id = ActorRef::new(support::TYPE, "bound").unwrap();
    let out = invoke_until_routed(&a.host.service(), &id, "increment").await;
    assert_eq!(out.unwrap().decode::<i64>().unwrap(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advertised_name_need_not_resolve_here_when_a_bind_address_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let port = free_udp_addr().port();
    let host = host_built(
        &path,
        format!("worker-1.invalid:{port}"),
        |builder| builder.bind_address(([127, 0, 0, 1], port).into()),
        |_| {},
    )
    .await;
    assert_eq!(host.host.address(), format!("worker-1.invalid:{port}"));
    // The peer server holds the bind address.
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
    host.stop().await;
}

#[tokio::test]
async fn a_bind_address_that_cannot_work_is_refused() {
    let refused = |builder: francis_host::LocalHostBuilder| async move {
        match builder.in_memory().build().await {
            Err(HostError::InvalidConfig(msg)) => msg,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("built"),
        }
    };
    let msg = refused(
        LocalHost::builder()
            .address("127.0.0.1:7571")
            .runtime_psks([support::CLUSTER_PSK])
            .bind_address(([0, 0, 0, 0], 0).into()),
    )
    .await;
    assert!(msg.contains("port 0"), "{msg}");
    // No keys, no peer server: a bind address would be ignored, so it is refused.
    let msg = refused(
        LocalHost::builder()
            .address("127.0.0.1:7571")
            .bind_address(([0, 0, 0, 0], 7571).into()),
    )
    .await;
    assert!(msg.contains("no peer"), "{msg}");
}
