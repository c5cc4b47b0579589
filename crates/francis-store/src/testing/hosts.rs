//! Host registration, heartbeats and liveness.

use std::time::Duration;

use super::{ProviderHarness, TTL, actor, at, register, registration};
use crate::error::StoreError;
use crate::provider::{ActorTypeSpec, AlarmOutcome, Fence, LeaseRequest, Provider};
use francis_core::AlarmProperties;

/// Registered hosts are listed in host id order with their address, types (in registration
/// order, with capacities) and last heartbeat.
pub async fn host_register_and_list_live<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    assert!(p.live_hosts(at(0), TTL).await.unwrap().is_empty());
    p.register_host(
        &registration("h2", "10.0.0.2:7000", &[("zeta", Some(3)), ("alpha", None)]),
        at(0),
        TTL,
    )
    .await
    .unwrap();
    p.register_host(&registration("h1", "10.0.0.1:7000", &[]), at(5), TTL)
        .await
        .unwrap();
    let hosts = p.live_hosts(at(10), TTL).await.unwrap();
    let ids: Vec<&str> = hosts.iter().map(|h| h.host_id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"], "ordered by host id");
    assert_eq!(hosts[0].address, "10.0.0.1:7000");
    assert!(hosts[0].actor_types.is_empty());
    assert_eq!(hosts[0].last_heartbeat, at(5));
    assert_eq!(hosts[1].address, "10.0.0.2:7000");
    assert_eq!(
        hosts[1].actor_types,
        vec![
            ActorTypeSpec {
                actor_type: "zeta".into(),
                max_active: Some(3)
            },
            ActorTypeSpec {
                actor_type: "alpha".into(),
                max_active: None
            },
        ],
        "types keep their registration order and capacities"
    );
    assert_eq!(hosts[1].last_heartbeat, at(0));
}

/// A host is live while `now - last_heartbeat < ttl`; heartbeats move the window.
pub async fn host_live_window<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    let ttl_ms = TTL.as_millis() as i64;
    let live = |hosts: Vec<crate::HostRecord>| hosts.iter().any(|h| h.host_id == "h1");
    assert!(live(p.live_hosts(at(ttl_ms - 1), TTL).await.unwrap()));
    assert!(
        !live(p.live_hosts(at(ttl_ms), TTL).await.unwrap()),
        "dead exactly when now - last_heartbeat == ttl"
    );
    assert!(
        live(
            p.live_hosts(at(ttl_ms), Duration::from_millis(ttl_ms as u64 + 1))
                .await
                .unwrap()
        ),
        "the window is an argument"
    );
    p.heartbeat("h1", at(5_000)).await.unwrap();
    let hosts = p.live_hosts(at(5_000 + ttl_ms - 1), TTL).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].last_heartbeat, at(5_000));
    assert!(!live(p.live_hosts(at(5_000 + ttl_ms), TTL).await.unwrap()));
}

/// A heartbeat for a host that is not registered fails with `HostNotFound`.
pub async fn host_heartbeat_unknown_host<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    match p.heartbeat("ghost", at(0)).await {
        Err(StoreError::HostNotFound(id)) => assert_eq!(id, "ghost"),
        other => panic!("expected HostNotFound, got {other:?}"),
    }
    register(&p, "h1", &["t"], at(0)).await;
    p.unregister_host("h1").await.unwrap();
    assert!(
        matches!(
            p.heartbeat("h1", at(1)).await,
            Err(StoreError::HostNotFound(_))
        ),
        "an unregistered host cannot heartbeat"
    );
    assert!(p.live_hosts(at(1), TTL).await.unwrap().is_empty());
}

/// Registering an existing host id again updates its address, types and heartbeat.
pub async fn host_reregister_updates_record<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    p.register_host(&registration("h1", "a:1", &[("t", None)]), at(0), TTL)
        .await
        .unwrap();
    p.register_host(&registration("h1", "a:2", &[("u", Some(1))]), at(100), TTL)
        .await
        .unwrap();
    let hosts = p.live_hosts(at(100), TTL).await.unwrap();
    assert_eq!(hosts.len(), 1, "one record per host id");
    assert_eq!(hosts[0].address, "a:2");
    assert_eq!(
        hosts[0].actor_types,
        vec![ActorTypeSpec {
            actor_type: "u".into(),
            max_active: Some(1)
        }]
    );
    assert_eq!(hosts[0].last_heartbeat, at(100));
    // its own old address does not conflict with itself
    p.register_host(&registration("h1", "a:2", &[("u", None)]), at(200), TTL)
        .await
        .unwrap();
}

/// A live host's address cannot be taken; a dead host's can, and the dead host goes away with
/// its placements.
pub async fn host_address_conflict<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    p.register_host(
        &registration("h1", "shared:7000", &[("t", None)]),
        at(0),
        TTL,
    )
    .await
    .unwrap();
    let a = actor("t", "a");
    p.claim(&a, "h1", at(0), TTL).await.unwrap();

    match p
        .register_host(
            &registration("h2", "shared:7000", &[("t", None)]),
            at(1),
            TTL,
        )
        .await
    {
        Err(StoreError::AddressInUse { address, host_id }) => {
            assert_eq!(address, "shared:7000");
            assert_eq!(host_id, "h1");
        }
        other => panic!("expected AddressInUse, got {other:?}"),
    }
    let ids: Vec<String> = p
        .live_hosts(at(1), TTL)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert_eq!(ids, ["h1"], "the refused host was not registered");

    // h1's lease runs out: h2 may take the address, and h1 is removed with its placements
    let later = at(TTL.as_millis() as i64);
    p.register_host(
        &registration("h2", "shared:7000", &[("t", None)]),
        later,
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(p.count_placements("h1", "t").await.unwrap(), 0);
    assert!(matches!(
        p.heartbeat("h1", later).await,
        Err(StoreError::HostNotFound(_))
    ));
    let live = p.live_hosts(later, TTL).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].host_id, "h2");
    assert_eq!(live[0].address, "shared:7000");
}

/// Unregistering removes the host, its placements and its alarm leases; it is idempotent.
pub async fn host_unregister_removes_placements_and_leases<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    let a = actor("t", "a");
    let placement = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    p.set_alarm(
        &a,
        "tick",
        &AlarmProperties::once(at(0)),
        Fence::Epoch(placement.epoch),
    )
    .await
    .unwrap();
    let request = |host: &str, lease_id: &str| LeaseRequest {
        host_id: host.into(),
        actor_types: vec!["t".into()],
        horizon: at(0),
        limit: 10,
        lease_duration: Duration::from_secs(60),
        lease_id: lease_id.into(),
    };
    let leased = p.lease_alarms(&request("h1", "l1"), at(0)).await.unwrap();
    assert_eq!(leased.len(), 1);

    p.unregister_host("h1").await.unwrap();
    assert!(p.lookup(&a, at(1), TTL).await.unwrap().is_none());
    assert_eq!(p.count_placements("h1", "t").await.unwrap(), 0);
    assert!(
        !p.release(&a, "h1", placement.epoch).await.unwrap(),
        "the placement is gone"
    );
    // h1's lease is gone long before it would expire
    let again = p.lease_alarms(&request("h2", "l2"), at(1)).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "the alarm can be leased by another host at once"
    );
    assert!(
        !p.complete_alarm(&leased[0].lease, AlarmOutcome::Delete)
            .await
            .unwrap(),
        "the removed host's lease is no longer held"
    );
    // idempotent, also for hosts never seen
    p.unregister_host("h1").await.unwrap();
    p.unregister_host("never-registered").await.unwrap();
    let ids: Vec<String> = p
        .live_hosts(at(1), TTL)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert_eq!(ids, ["h2"]);
}

/// Every backend refuses the same bad input with [`StoreError::InvalidArgument`] and changes
/// nothing: registrations with an empty host id, address or actor type, or a type listed
/// twice; a state listing with a limit of 0; a lease that would expire past representable
/// time. A batch with one bad operation still runs the others.
pub async fn bad_input_is_refused_alike<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let bad = [
        registration("", "10.0.0.1:7000", &[]),
        registration("h1", "", &[]),
        registration("h1", "10.0.0.1:7000", &[("", None)]),
        registration("h1", "10.0.0.1:7000", &[("t", None), ("t", Some(2))]),
    ];
    for reg in &bad {
        let err = p.register_host(reg, at(0), TTL).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidArgument(_)),
            "{reg:?}: {err:?}"
        );
        assert!(err.is_refusal());
    }
    assert!(
        p.live_hosts(at(0), TTL).await.unwrap().is_empty(),
        "nothing stored"
    );
    let err = p.list_states("t", None, 0, true, at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    let too_long = LeaseRequest {
        host_id: "h1".into(),
        actor_types: vec!["t".into()],
        horizon: at(0),
        limit: 1,
        lease_duration: Duration::from_secs(u64::MAX / 4),
        lease_id: "l1".into(),
    };
    let err = p.lease_alarms(&too_long, at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");

    // In a batch, the bad operation is refused alone.
    let results = p
        .execute_batch(vec![
            crate::Op::RegisterHost {
                registration: registration("", "10.0.0.9:7000", &[]),
                now: at(0),
                ttl: TTL,
            },
            crate::Op::RegisterHost {
                registration: registration("h2", "10.0.0.2:7000", &[("t", None)]),
                now: at(0),
                ttl: TTL,
            },
        ])
        .await;
    assert_eq!(results.len(), 2);
    assert!(
        matches!(results[0], Err(StoreError::InvalidArgument(_))),
        "{results:?}"
    );
    assert!(matches!(results[1], Ok(crate::Reply::Unit)), "{results:?}");
    let hosts = p.live_hosts(at(1), TTL).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host_id, "h2");
}
