//! Requests to whichever host answers at an address (peers known only by address).

mod support;

use francis_transport::TransportError;
use francis_transport::proto::response;
use support::*;

fn whoami(r: francis_transport::proto::Response) -> String {
    match r.body {
        Some(response::Body::Invoke(reply)) => {
            String::from_utf8(reply.into_result().unwrap().unwrap().to_vec()).unwrap()
        }
        other => panic!("expected an invoke reply, got {other:?}"),
    }
}

#[tokio::test]
async fn any_host_with_a_cluster_certificate_is_reached_whatever_its_id() {
    let (a, _) = start("host-a", &[PSK_OLD]);
    let (b, _) = start("host-b", &[PSK_OLD]);
    let reply = a
        .request_any_host(b.local_addr(), invoke_request("whoami", ""))
        .await
        .unwrap();
    assert_eq!(
        whoami(reply),
        "host-a",
        "the callee still sees the caller's id"
    );
    // b restarts under a new id at another address: still reachable by address
    b.shutdown().await;
    let (b2, _) = start("host-b-2", &[PSK_NEW, PSK_OLD]);
    let reply = a
        .request_any_host(b2.local_addr(), invoke_request("whoami", ""))
        .await
        .unwrap();
    assert_eq!(whoami(reply), "host-a");
}

#[tokio::test]
async fn any_host_still_needs_a_certificate_from_a_shared_psk() {
    let (a, ha) = start("host-a", &[PSK_OLD]);
    let (b, hb) = start("host-b", &[PSK_NEW]);
    for (from, to) in [(&a, &b), (&b, &a)] {
        let err = from
            .request_any_host(to.local_addr(), invoke_request("echo", "1"))
            .await
            .expect_err("a host of another PSK must be refused");
        assert!(
            matches!(err, TransportError::AuthenticationFailed { .. }),
            "expected an authentication failure, got {err}"
        );
    }
    assert_eq!(ha.entered() + hb.entered(), 0);
}
