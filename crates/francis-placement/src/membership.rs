//! Which hosts are live at a given instant, and which of them serve an actor type.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use francis_store::HostRecord;

use crate::rendezvous::Candidate;

/// Whether a host whose last heartbeat was at `last_heartbeat` is live at `now`:
/// `now - last_heartbeat < deadline`, the rule of the `Provider` contract.
///
/// A heartbeat exactly `deadline` old is dead; one stamped after `now` (clock skew between
/// hosts) is live; a `deadline` too large for chrono counts as infinite.
pub fn heartbeat_is_live(
    last_heartbeat: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline: Duration,
) -> bool {
    match TimeDelta::from_std(deadline) {
        Ok(deadline) => now.signed_duration_since(last_heartbeat) < deadline,
        Err(_) => true,
    }
}

/// A snapshot of cluster membership: the hosts live at `now`, ordered by host id.
///
/// Built from the store's host records (typically `Provider::live_hosts`); it filters them
/// again with [`heartbeat_is_live`], so a record that was live when read but is read at a
/// later `now` is dropped. It does not refresh itself: build a new view to refresh.
#[derive(Debug, Clone)]
pub struct MembershipView {
    live: Vec<HostRecord>,
    now: DateTime<Utc>,
    deadline: Duration,
}

impl MembershipView {
    /// The view of `hosts` at `now` with the liveness window `deadline` (the health-check
    /// deadline). Dead hosts are dropped; if a host id appears twice, the record with the
    /// latest heartbeat is kept.
    pub fn new(hosts: Vec<HostRecord>, now: DateTime<Utc>, deadline: Duration) -> Self {
        let mut live: Vec<HostRecord> = hosts
            .into_iter()
            .filter(|h| heartbeat_is_live(h.last_heartbeat, now, deadline))
            .collect();
        // By id, latest heartbeat first, then keep the first of each id.
        live.sort_by(|a, b| {
            a.host_id
                .cmp(&b.host_id)
                .then(b.last_heartbeat.cmp(&a.last_heartbeat))
        });
        live.dedup_by(|later, first| later.host_id == first.host_id);
        Self {
            live,
            now,
            deadline,
        }
    }

    /// The instant the view describes.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The liveness window it was built with.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The live hosts, ordered by host id, each id once.
    pub fn live_hosts(&self) -> &[HostRecord] {
        &self.live
    }

    /// The live host with this id, if any.
    pub fn host(&self, host_id: &str) -> Option<&HostRecord> {
        self.live
            .binary_search_by(|h| h.host_id.as_str().cmp(host_id))
            .ok()
            .map(|i| &self.live[i])
    }

    /// Whether a host with this id is live in the view.
    pub fn is_live(&self, host_id: &str) -> bool {
        self.host(host_id).is_some()
    }

    /// The live hosts that serve `actor_type`, ordered by host id.
    pub fn serving<'a>(&'a self, actor_type: &'a str) -> impl Iterator<Item = &'a HostRecord> {
        self.live
            .iter()
            .filter(move |h| h.actor_types.iter().any(|t| t.actor_type == actor_type))
    }

    /// The [`Candidate`]s for an actor of `actor_type`: every live host that serves it, ordered
    /// by host id, with `serves_type` set.
    ///
    /// The view knows each host's limit (`max_active`), not its current load, so
    /// `capacity_left` is that limit (`None` for no limit). The store's `claim` enforces the
    /// real limit; when it refuses a candidate as full, mark that candidate with
    /// `capacity_left = Some(0)` and choose again (or walk `rank_hosts`).
    pub fn candidates_for(&self, actor_type: &str) -> Vec<Candidate> {
        self.live
            .iter()
            .filter_map(|h| {
                let spec = h.actor_types.iter().find(|t| t.actor_type == actor_type)?;
                Some(Candidate {
                    host_id: h.host_id.clone(),
                    address: h.address.clone(),
                    serves_type: true,
                    capacity_left: spec.max_active.map(u64::from),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use francis_store::ActorTypeSpec;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn spec(actor_type: &str, max_active: Option<u32>) -> ActorTypeSpec {
        ActorTypeSpec {
            actor_type: actor_type.into(),
            max_active,
        }
    }

    fn record(host_id: &str, types: Vec<ActorTypeSpec>, age: TimeDelta) -> HostRecord {
        HostRecord {
            host_id: host_id.into(),
            address: format!("{host_id}.example:7000"),
            actor_types: types,
            last_heartbeat: t0() - age,
        }
    }

    #[test]
    fn liveness_window_is_half_open() {
        let now = t0();
        let ms = TimeDelta::milliseconds;
        assert!(heartbeat_is_live(now, now, DEADLINE));
        assert!(heartbeat_is_live(now - ms(19_999), now, DEADLINE));
        assert!(heartbeat_is_live(
            now - ms(20_000) + TimeDelta::nanoseconds(1),
            now,
            DEADLINE
        ));
        // exactly the deadline old: dead
        assert!(!heartbeat_is_live(now - ms(20_000), now, DEADLINE));
        assert!(!heartbeat_is_live(now - ms(20_001), now, DEADLINE));
        // from the future (skew): live
        assert!(heartbeat_is_live(now + ms(5_000), now, DEADLINE));
        // zero window: nothing at or before now is live
        assert!(!heartbeat_is_live(now, now, Duration::ZERO));
        // a window beyond chrono's range is infinite
        assert!(heartbeat_is_live(
            DateTime::<Utc>::MIN_UTC,
            now,
            Duration::MAX
        ));
    }

    #[test]
    fn view_keeps_live_hosts_sorted_and_drops_dead_ones() {
        let s = TimeDelta::seconds;
        let hosts = vec![
            record("h3", vec![spec("counter", None)], s(1)),
            record("h1", vec![spec("counter", None)], s(19)),
            record("h4", vec![spec("counter", None)], s(20)),
            record("h2", vec![spec("timer", None)], s(0)),
            record("h5", vec![spec("counter", None)], s(3_600)),
        ];
        let view = MembershipView::new(hosts, t0(), DEADLINE);
        let ids: Vec<&str> = view
            .live_hosts()
            .iter()
            .map(|h| h.host_id.as_str())
            .collect();
        assert_eq!(ids, ["h1", "h2", "h3"]);
        assert!(view.is_live("h1"));
        assert!(!view.is_live("h4"), "exactly the deadline old is dead");
        assert!(!view.is_live("h5"));
        assert!(!view.is_live("nope"));
        assert_eq!(view.host("h2").unwrap().address, "h2.example:7000");
        assert_eq!(view.now(), t0());
        assert_eq!(view.deadline(), DEADLINE);

        // The same records seen later: h1 has now aged out.
        let later = MembershipView::new(
            view.live_hosts().to_vec(),
            t0() + TimeDelta::seconds(1),
            DEADLINE,
        );
        assert!(!later.is_live("h1"));
        assert!(later.is_live("h3"));
    }

    #[test]
    fn duplicate_ids_keep_the_latest_heartbeat() {
        let s = TimeDelta::seconds;
        let mut newer = record("h1", vec![spec("timer", None)], s(1));
        newer.address = "new:1".into();
        let mut older = record("h1", vec![spec("counter", None)], s(5));
        older.address = "old:1".into();
        for hosts in [
            vec![older.clone(), newer.clone()],
            vec![newer.clone(), older.clone()],
        ] {
            let view = MembershipView::new(hosts, t0(), DEADLINE);
            assert_eq!(view.live_hosts().len(), 1);
            assert_eq!(view.host("h1").unwrap().address, "new:1");
        }
    }

    #[test]
    fn candidates_are_the_live_hosts_serving_the_type() {
        let s = TimeDelta::seconds;
        let hosts = vec![
            record(
                "h1",
                vec![spec("counter", Some(10)), spec("timer", None)],
                s(1),
            ),
            record("h2", vec![spec("timer", Some(0))], s(1)),
            record("h3", vec![spec("counter", None)], s(2)),
            record("h4", vec![spec("counter", None)], s(25)), // dead
        ];
        let view = MembershipView::new(hosts, t0(), DEADLINE);

        let counter = view.candidates_for("counter");
        assert_eq!(
            counter,
            vec![
                Candidate {
                    host_id: "h1".into(),
                    address: "h1.example:7000".into(),
                    serves_type: true,
                    capacity_left: Some(10),
                },
                Candidate {
                    host_id: "h3".into(),
                    address: "h3.example:7000".into(),
                    serves_type: true,
                    capacity_left: None,
                },
            ]
        );
        let serving: Vec<&str> = view.serving("timer").map(|h| h.host_id.as_str()).collect();
        assert_eq!(serving, ["h1", "h2"]);

        // A host with max_active 0 serves the type but is never eligible.
        let timer = view.candidates_for("timer");
        assert_eq!(timer.len(), 2);
        assert!(timer[0].is_eligible());
        assert!(!timer[1].is_eligible());

        assert!(view.candidates_for("unknown").is_empty());
        assert_eq!(view.serving("unknown").count(), 0);
    }

    #[test]
    fn empty_view() {
        let view = MembershipView::new(Vec::new(), t0(), DEADLINE);
        assert!(view.live_hosts().is_empty());
        assert!(view.candidates_for("counter").is_empty());
        assert!(view.host("h1").is_none());
    }
}
