//! Actor state: reads, writes, fencing, expiry and listing.

use super::{ProviderHarness, TTL, actor, at, register};
use crate::error::StoreError;
use crate::provider::{Fence, Provider, StateListPage, StateRecord};

fn expect_fenced(result: Result<impl std::fmt::Debug, StoreError>, epoch: u64) {
    match result {
        Err(StoreError::Fenced { epoch: e, .. }) => assert_eq!(e, epoch),
        other => panic!("expected Fenced for epoch {epoch}, got {other:?}"),
    }
}

async fn data_of<P: Provider>(p: &P, a: &francis_core::ActorRef) -> Option<Vec<u8>> {
    p.get_state(a, at(0)).await.unwrap().map(|r| r.data)
}

/// State is created, replaced, read and deleted; `delete_state` says whether there was one.
pub async fn state_set_get_delete<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    let b = actor("t", "b");
    assert!(p.get_state(&a, at(0)).await.unwrap().is_none());
    p.set_state(&a, br#"{"v":1}"#, None, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        p.get_state(&a, at(0)).await.unwrap(),
        Some(StateRecord {
            data: br#"{"v":1}"#.to_vec(),
            expires_at: None
        })
    );
    p.set_state(&a, br#"{"v":2}"#, Some(at(60_000)), Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        p.get_state(&a, at(0)).await.unwrap(),
        Some(StateRecord {
            data: br#"{"v":2}"#.to_vec(),
            expires_at: Some(at(60_000))
        })
    );
    assert!(data_of(&p, &b).await.is_none(), "states are per actor");
    assert!(
        data_of(&p, &actor("u", "a")).await.is_none(),
        "and per actor type"
    );
    assert!(p.delete_state(&a, Fence::Unfenced).await.unwrap());
    assert!(!p.delete_state(&a, Fence::Unfenced).await.unwrap());
    assert!(p.get_state(&a, at(0)).await.unwrap().is_none());
}

/// Writes carrying an epoch succeed only for the actor's current placement epoch; refused
/// writes change nothing.
pub async fn state_fencing<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    let a = actor("t", "a");
    // no placement at all: any epoch is stale
    expect_fenced(p.set_state(&a, b"1", None, Fence::Epoch(1)).await, 1);
    assert!(data_of(&p, &a).await.is_none());

    let first = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    p.set_state(&a, b"1", None, Fence::Epoch(first.epoch))
        .await
        .unwrap();
    expect_fenced(
        p.set_state(&a, b"x", None, Fence::Epoch(first.epoch + 1))
            .await,
        first.epoch + 1,
    );
    expect_fenced(
        p.set_state(&a, b"x", None, Fence::Epoch(u64::MAX)).await,
        u64::MAX,
    );
    assert_eq!(data_of(&p, &a).await, Some(b"1".to_vec()));

    // a new placement fences the old activation
    assert!(p.release(&a, "h1", first.epoch).await.unwrap());
    expect_fenced(
        p.set_state(&a, b"x", None, Fence::Epoch(first.epoch)).await,
        first.epoch,
    );
    let second = p.claim(&a, "h1", at(1), TTL).await.unwrap();
    expect_fenced(
        p.set_state(&a, b"x", None, Fence::Epoch(first.epoch)).await,
        first.epoch,
    );
    expect_fenced(
        p.delete_state(&a, Fence::Epoch(first.epoch)).await,
        first.epoch,
    );
    assert_eq!(
        data_of(&p, &a).await,
        Some(b"1".to_vec()),
        "nothing changed"
    );
    p.set_state(&a, b"2", None, Fence::Epoch(second.epoch))
        .await
        .unwrap();
    assert_eq!(data_of(&p, &a).await, Some(b"2".to_vec()));
    // another actor's epoch does not open this one
    let other = p.claim(&actor("t", "b"), "h1", at(1), TTL).await.unwrap();
    expect_fenced(
        p.set_state(&a, b"x", None, Fence::Epoch(other.epoch)).await,
        other.epoch,
    );
    // unfenced (administrative) writes always apply
    p.set_state(&a, b"3", None, Fence::Unfenced).await.unwrap();
    assert_eq!(data_of(&p, &a).await, Some(b"3".to_vec()));
    assert!(
        p.delete_state(&a, Fence::Epoch(second.epoch))
            .await
            .unwrap()
    );
    assert!(data_of(&p, &a).await.is_none());
}

/// State with an expiry is invisible from that time on and removed by `delete_expired_state`.
pub async fn state_ttl_expiry<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let short = actor("t", "short");
    let long = actor("t", "long");
    let forever = actor("t", "forever");
    p.set_state(&short, b"s", Some(at(1_000)), Fence::Unfenced)
        .await
        .unwrap();
    p.set_state(&long, b"l", Some(at(5_000)), Fence::Unfenced)
        .await
        .unwrap();
    p.set_state(&forever, b"f", None, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        p.get_state(&short, at(999)).await.unwrap(),
        Some(StateRecord {
            data: b"s".to_vec(),
            expires_at: Some(at(1_000))
        })
    );
    assert!(
        p.get_state(&short, at(1_000)).await.unwrap().is_none(),
        "expired at its expiry time"
    );
    let ids = |page: StateListPage| -> Vec<String> {
        page.items.into_iter().map(|i| i.actor_id).collect()
    };
    assert_eq!(
        ids(p
            .list_states("t", None, 10, false, at(1_000))
            .await
            .unwrap()),
        ["forever", "long"],
        "expired states are not listed"
    );
    assert_eq!(p.delete_expired_state(at(999)).await.unwrap(), 0);
    assert_eq!(p.delete_expired_state(at(1_000)).await.unwrap(), 1);
    assert_eq!(p.delete_expired_state(at(1_000)).await.unwrap(), 0);
    // gone for good, even when asked about an earlier time
    assert!(p.get_state(&short, at(0)).await.unwrap().is_none());
    assert!(p.get_state(&long, at(4_999)).await.unwrap().is_some());
    assert_eq!(p.delete_expired_state(at(10_000)).await.unwrap(), 1);
    assert!(
        p.get_state(&forever, at(i64::from(u32::MAX)))
            .await
            .unwrap()
            .is_some()
    );
    // writing again without expiry makes state permanent
    p.set_state(&long, b"l2", Some(at(20_000)), Fence::Unfenced)
        .await
        .unwrap();
    p.set_state(&long, b"l3", None, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(p.delete_expired_state(at(30_000)).await.unwrap(), 0);
    assert_eq!(
        p.get_state(&long, at(30_000))
            .await
            .unwrap()
            .map(|r| r.data),
        Some(b"l3".to_vec())
    );
}

/// Listing pages through one type's unexpired states in ascending id order, with a cursor.
pub async fn state_list_pagination<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    for id in ["e", "a", "g", "c", "b", "f", "d"] {
        p.set_state(&actor("t", id), id.as_bytes(), None, Fence::Unfenced)
            .await
            .unwrap();
    }
    p.set_state(&actor("t", "bb"), b"gone", Some(at(0)), Fence::Unfenced)
        .await
        .unwrap();
    p.set_state(&actor("other", "a0"), b"x", None, Fence::Unfenced)
        .await
        .unwrap();
    let ids = |page: &StateListPage| -> Vec<String> {
        page.items.iter().map(|i| i.actor_id.clone()).collect()
    };

    let page1 = p.list_states("t", None, 3, true, at(0)).await.unwrap();
    assert_eq!(ids(&page1), ["a", "b", "c"], "expired 'bb' is skipped");
    assert_eq!(page1.next.as_deref(), Some("c"));
    for item in &page1.items {
        assert_eq!(item.data.as_deref(), Some(item.actor_id.as_bytes()));
    }
    let page2 = p
        .list_states("t", page1.next.as_deref(), 3, false, at(0))
        .await
        .unwrap();
    assert_eq!(ids(&page2), ["d", "e", "f"]);
    assert!(
        page2.items.iter().all(|i| i.data.is_none()),
        "no data unless asked"
    );
    assert_eq!(page2.next.as_deref(), Some("f"));
    let page3 = p
        .list_states("t", page2.next.as_deref(), 3, true, at(0))
        .await
        .unwrap();
    assert_eq!(ids(&page3), ["g"]);
    assert_eq!(page3.next, None, "last page");

    let exact = p.list_states("t", None, 7, false, at(0)).await.unwrap();
    assert_eq!(exact.items.len(), 7);
    assert_eq!(
        exact.next, None,
        "a page that ends exactly at the last item is the last"
    );
    let past = p
        .list_states("t", Some("g"), 3, false, at(0))
        .await
        .unwrap();
    assert_eq!(past, StateListPage::default());
    let between = p
        .list_states("t", Some("bz"), 2, false, at(0))
        .await
        .unwrap();
    assert_eq!(
        ids(&between),
        ["c", "d"],
        "the cursor need not be an existing id"
    );
    let none = p.list_states("empty", None, 10, true, at(0)).await.unwrap();
    assert_eq!(none, StateListPage::default());
    let other = p.list_states("other", None, 10, true, at(0)).await.unwrap();
    assert_eq!(ids(&other), ["a0"]);
}
