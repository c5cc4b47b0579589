//! Rendezvous (highest-random-weight) choice of a host for an actor.
//!
//! Every eligible host gets a weight `rendezvous_weight(actor, host_id)`; the heaviest wins.
//! Because a host's weight depends only on the actor and that host, adding a host moves only
//! the actors it now outweighs everyone on, and removing one moves only the actors it owned.

use std::cmp::Reverse;

use francis_core::ActorRef;

use crate::error::PlacementError;

/// A live host considered for one actor type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The host's id (unique among live hosts).
    pub host_id: String,
    /// Its peer address.
    pub address: String,
    /// Whether it serves the actor type in question.
    pub serves_type: bool,
    /// How many more actors of the type it may take: `None` means no limit, `Some(0)` full.
    pub capacity_left: Option<u64>,
}

impl Candidate {
    /// Whether the candidate may be chosen: it serves the type and is not full.
    pub fn is_eligible(&self) -> bool {
        self.serves_type && self.capacity_left != Some(0)
    }
}

// 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/), then MurmurHash3's fmix64
// finalizer: FNV-1a alone mixes its last bytes poorly, which would bias hosts whose ids differ
// only at the end ("host-1", "host-2").
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// One length-prefixed field, so `("ab", "c")` and `("a", "bc")` hash differently.
fn field(state: u64, s: &str) -> u64 {
    fnv1a(fnv1a(state, &(s.len() as u64).to_le_bytes()), s.as_bytes())
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The FNV state after the actor's fields: shared by all hosts' weights for one actor.
fn actor_state(actor: &ActorRef) -> u64 {
    field(
        field(FNV_OFFSET_BASIS, actor.actor_type()),
        actor.actor_id(),
    )
}

fn weight_from(actor_state: u64, host_id: &str) -> u64 {
    fmix64(field(actor_state, host_id))
}

/// The weight of a host for `actor`, keyed by the host's advertised address (`host_id` names
/// any stable key; [`choose_host`] passes the address): the host with the greatest weight
/// among the eligible candidates owns the actor.
///
/// Defined as `fmix64(fnv1a64(f(actor_type) ‖ f(actor_id) ‖ f(host_id)))` where `f(s)` is the
/// length of `s` in bytes as a little-endian `u64` followed by the UTF-8 bytes of `s`, `fnv1a64`
/// is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) and `fmix64` is
/// MurmurHash3's 64-bit finalizer. It uses no seed and no platform- or version-dependent hasher,
/// so every host, on every build, computes the same value; changing it is a breaking change for
/// clusters running mixed versions.
pub fn rendezvous_weight(actor: &ActorRef, host_id: &str) -> u64 {
    weight_from(actor_state(actor), host_id)
}

/// Preference key: greater weight of the host's **address** first (an address outlives a host
/// id: a host that restarts or re-registers under a new id keeps its actors' placement), ties
/// (astronomically rare) to the smaller host id, then the smaller address, then the smaller
/// `capacity_left`, so the order never depends on the order of the input: only identical
/// candidates compare equal.
type Key<'a> = (
    u64,
    Reverse<&'a str>,
    Reverse<&'a str>,
    Reverse<Option<u64>>,
);

fn key(actor_state: u64, c: &Candidate) -> Key<'_> {
    (
        weight_from(actor_state, &c.address),
        Reverse(c.host_id.as_str()),
        Reverse(c.address.as_str()),
        Reverse(c.capacity_left),
    )
}

/// The eligible candidate with the greatest [`rendezvous_weight`] for `actor`, or `None` if no
/// candidate serves the type with capacity left.
///
/// The result depends only on the set of eligible candidates, not on their order, and equals
/// the first element of [`rank_hosts`].
pub fn choose_host<'a>(actor: &ActorRef, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    let state = actor_state(actor);
    candidates
        .iter()
        .filter(|c| c.is_eligible())
        .max_by(|a, b| key(state, a).cmp(&key(state, b)))
}

/// All eligible candidates in preference order for `actor` (the owner by rendezvous first):
/// when the first refuses a claim, the next is the actor's choice among the others.
///
/// Ineligible candidates (type not served, full) are left out. The order depends only on the
/// set of eligible candidates, not on their order in `candidates`.
pub fn rank_hosts<'a>(actor: &ActorRef, candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    let state = actor_state(actor);
    let mut ranked: Vec<(Key<'a>, &'a Candidate)> = candidates
        .iter()
        .filter(|c| c.is_eligible())
        .map(|c| (key(state, c), c))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0));
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// [`choose_host`], with the reason when there is no host: no candidate serves the type
/// ([`PlacementError::NoHostServesType`]), or every one that does is full
/// ([`PlacementError::AllHostsFull`]).
pub fn require_host<'a>(
    actor: &ActorRef,
    candidates: &'a [Candidate],
) -> Result<&'a Candidate, PlacementError> {
    if let Some(chosen) = choose_host(actor, candidates) {
        return Ok(chosen);
    }
    let serving = candidates.iter().filter(|c| c.serves_type).count();
    let actor_type = actor.actor_type().to_owned();
    Err(if serving == 0 {
        PlacementError::NoHostServesType { actor_type }
    } else {
        PlacementError::AllHostsFull {
            actor_type,
            hosts: serving,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn cand(host_id: &str) -> Candidate {
        Candidate {
            host_id: host_id.to_owned(),
            address: format!("{host_id}.example:7000"),
            serves_type: true,
            capacity_left: None,
        }
    }

    fn actor(id: usize) -> ActorRef {
        ActorRef::new("counter", format!("actor-{id}")).expect("valid reference")
    }

    fn owner(actor: &ActorRef, candidates: &[Candidate]) -> String {
        choose_host(actor, candidates)
            .expect("an eligible candidate")
            .host_id
            .clone()
    }

    const N: usize = 10_000;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fmix64_is_a_bijection_on_samples_and_fixes_zero() {
        assert_eq!(fmix64(0), 0);
        let outputs: std::collections::HashSet<u64> = (0..10_000u64).map(fmix64).collect();
        assert_eq!(outputs.len(), 10_000);
    }

    #[test]
    fn weight_is_pinned() {
        // Every host of a cluster must compute the same weights, across builds and versions.
        // These values come from an independent (Python) implementation of the definition in
        // `rendezvous_weight`'s doc; if they change, mixed-version clusters disagree on placement.
        let a = ActorRef::new("counter", "c1").unwrap();
        assert_eq!(rendezvous_weight(&a, "host-1"), 0x3014_9ef4_5a57_5a71);
        assert_eq!(rendezvous_weight(&a, "host-2"), 0x10cf_a5bd_d0c5_54cf);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let ab_c = ActorRef::new("ab", "c").unwrap();
        let a_bc = ActorRef::new("a", "bc").unwrap();
        assert_ne!(rendezvous_weight(&ab_c, "h"), rendezvous_weight(&a_bc, "h"));
        // and the host id is a separate field too
        let a_b = ActorRef::new("a", "b").unwrap();
        let a_bh = ActorRef::new("a", "bh").unwrap();
        assert_ne!(rendezvous_weight(&a_b, "h"), rendezvous_weight(&a_bh, ""));
    }

    #[test]
    fn balance_over_three_hosts_is_within_five_percent() {
        // Realistic ids that differ only at the end, the hard case for weak hashes.
        for hosts in [
            ["host-1", "host-2", "host-3"],
            [
                "3f1c2a9e-0d4b-4c1e-9a57-8e2b6f0c1d01",
                "3f1c2a9e-0d4b-4c1e-9a57-8e2b6f0c1d02",
                "3f1c2a9e-0d4b-4c1e-9a57-8e2b6f0c1d03",
            ],
        ] {
            let candidates: Vec<Candidate> = hosts.iter().map(|h| cand(h)).collect();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in 0..N {
                *counts.entry(owner(&actor(i), &candidates)).or_default() += 1;
            }
            assert_eq!(counts.len(), 3, "every host gets actors: {counts:?}");
            let third = N as f64 / 3.0;
            for (host, count) in &counts {
                let deviation = (*count as f64 - third).abs() / third;
                assert!(
                    deviation <= 0.05,
                    "{host} got {count} of {N} (deviation {deviation:.3}): {counts:?}"
                );
            }
        }
    }

    #[test]
    fn choice_is_stable_and_independent_of_candidate_order() {
        let forward: Vec<Candidate> = ["a", "b", "c", "d"].iter().map(|h| cand(h)).collect();
        let mut backward = forward.clone();
        backward.reverse();
        let rotated: Vec<Candidate> = forward[2..].iter().chain(&forward[..2]).cloned().collect();
        for i in 0..1_000 {
            let a = actor(i);
            let first = owner(&a, &forward);
            assert_eq!(owner(&a, &forward), first, "same inputs, same choice");
            assert_eq!(owner(&a, &backward), first);
            assert_eq!(owner(&a, &rotated), first);
            let ranked: Vec<&str> = rank_hosts(&a, &forward)
                .iter()
                .map(|c| c.host_id.as_str())
                .collect();
            let ranked_back: Vec<&str> = rank_hosts(&a, &backward)
                .iter()
                .map(|c| c.host_id.as_str())
                .collect();
            assert_eq!(ranked, ranked_back);
        }
    }

    #[test]
    fn a_joining_host_takes_about_a_quarter_and_nothing_else_moves() {
        let three: Vec<Candidate> = ["h1", "h2", "h3"].iter().map(|h| cand(h)).collect();
        let mut four = three.clone();
        four.push(cand("h4"));
        let mut moved = 0;
        for i in 0..N {
            let a = actor(i);
            let before = owner(&a, &three);
            let after = owner(&a, &four);
            if before != after {
                assert_eq!(
                    after, "h4",
                    "{a}: moved {before} -> {after}, not to the new host"
                );
                moved += 1;
            }
        }
        // Expected N/4 = 2500; allow ±10% of that.
        assert!((2_250..=2_750).contains(&moved), "{moved} of {N} moved");
    }

    #[test]
    fn a_leaving_host_moves_only_its_own_actors() {
        let four: Vec<Candidate> = ["h1", "h2", "h3", "h4"].iter().map(|h| cand(h)).collect();
        let three: Vec<Candidate> = four.iter().filter(|c| c.host_id != "h2").cloned().collect();
        let mut moved = 0;
        for i in 0..N {
            let a = actor(i);
            let before = owner(&a, &four);
            let after = owner(&a, &three);
            if before == "h2" {
                moved += 1;
                // its actors go to their second choice
                assert_eq!(after, rank_hosts(&a, &four)[1].host_id);
            } else {
                assert_eq!(before, after, "{a} moved although its host stayed");
            }
        }
        assert!((2_250..=2_750).contains(&moved), "h2 owned {moved} of {N}");
    }

    #[test]
    fn hosts_not_serving_the_type_or_full_are_skipped() {
        let all: Vec<Candidate> = ["h1", "h2", "h3"].iter().map(|h| cand(h)).collect();
        for i in 0..500 {
            let a = actor(i);
            let preferred = owner(&a, &all);
            let ranking = rank_hosts(&a, &all);
            assert_eq!(ranking[0].host_id, preferred);
            let second = ranking[1].host_id.clone();

            for make_ineligible in [
                (|c: &mut Candidate| c.serves_type = false) as fn(&mut Candidate),
                |c: &mut Candidate| c.capacity_left = Some(0),
            ] {
                let mut changed = all.clone();
                for c in changed.iter_mut().filter(|c| c.host_id == preferred) {
                    make_ineligible(c);
                }
                assert_eq!(owner(&a, &changed), second, "{a} goes to its second choice");
                let ranked: Vec<&str> = rank_hosts(&a, &changed)
                    .iter()
                    .map(|c| c.host_id.as_str())
                    .collect();
                assert_eq!(ranked.len(), 2);
                assert!(!ranked.contains(&preferred.as_str()));
            }

            // Capacity left (even one slot) keeps a host eligible.
            let mut one_left = all.clone();
            for c in one_left.iter_mut() {
                c.capacity_left = Some(1);
            }
            assert_eq!(owner(&a, &one_left), preferred);
        }
    }

    #[test]
    fn no_eligible_candidate_means_none_with_the_reason() {
        let a = actor(7);
        assert_eq!(choose_host(&a, &[]), None);
        assert!(rank_hosts(&a, &[]).is_empty());
        assert_eq!(
            require_host(&a, &[]),
            Err(PlacementError::NoHostServesType {
                actor_type: "counter".into()
            })
        );

        let not_serving = vec![Candidate {
            serves_type: false,
            ..cand("h1")
        }];
        assert_eq!(choose_host(&a, &not_serving), None);
        assert!(matches!(
            require_host(&a, &not_serving),
            Err(PlacementError::NoHostServesType { .. })
        ));

        let full = vec![
            Candidate {
                capacity_left: Some(0),
                ..cand("h1")
            },
            Candidate {
                capacity_left: Some(0),
                ..cand("h2")
            },
            Candidate {
                serves_type: false,
                ..cand("h3")
            },
        ];
        assert_eq!(choose_host(&a, &full), None);
        let err = require_host(&a, &full).unwrap_err();
        assert_eq!(
            err,
            PlacementError::AllHostsFull {
                actor_type: "counter".into(),
                hosts: 2
            }
        );
        assert!(err.to_string().contains("at capacity"), "{err}");
        assert!(err.to_string().contains("'counter'"), "{err}");

        let one = vec![cand("h9")];
        assert_eq!(require_host(&a, &one).unwrap().host_id, "h9");
    }

    #[test]
    fn the_address_decides_so_a_new_host_id_keeps_the_choice() {
        let x = Candidate {
            address: "10.0.0.1:1".into(),
            ..cand("first-id")
        };
        let y = Candidate {
            address: "10.0.0.2:1".into(),
            ..cand("other")
        };
        let renamed = Candidate {
            host_id: "second-id".into(),
            ..x.clone()
        };
        for i in 0..50 {
            let a = actor(i);
            let before = choose_host(&a, &[x.clone(), y.clone()])
                .unwrap()
                .address
                .clone();
            let after = choose_host(&a, &[y.clone(), renamed.clone()])
                .unwrap()
                .address
                .clone();
            assert_eq!(before, after, "actor {i}");
        }
        // Duplicate addresses are a caller error, but the choice still does not depend on order.
        let twin = Candidate {
            host_id: "twin".into(),
            ..x.clone()
        };
        let a = actor(1);
        assert_eq!(
            choose_host(&a, &[x.clone(), twin.clone()]).unwrap().host_id,
            choose_host(&a, &[twin, x]).unwrap().host_id
        );
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            "[a-z0-9-]{1,12}",
            any::<bool>(),
            proptest::option::of(0u64..3),
        )
            .prop_map(|(host_id, serves_type, capacity_left)| Candidate {
                address: format!("{host_id}:7000"),
                host_id,
                serves_type,
                capacity_left,
            })
    }

    proptest! {
        #[test]
        fn choice_is_an_eligible_candidate_and_heads_the_ranking(
            id in "[a-zA-Z0-9._-]{1,20}",
            candidates in proptest::collection::vec(arb_candidate(), 0..8),
        ) {
            let a = ActorRef::new("t", id).unwrap();
            let chosen = choose_host(&a, &candidates);
            let ranked = rank_hosts(&a, &candidates);
            let eligible = candidates.iter().filter(|c| c.is_eligible()).count();
            prop_assert_eq!(ranked.len(), eligible);
            prop_assert!(ranked.iter().all(|c| c.is_eligible()));
            match chosen {
                None => prop_assert_eq!(eligible, 0),
                Some(c) => {
                    prop_assert!(c.is_eligible());
                    prop_assert!(candidates.iter().any(|x| std::ptr::eq(x, c)));
                    // Equal candidates (the same host listed twice) may head the ranking in
                    // either copy: the choice is the same host either way.
                    prop_assert_eq!(ranked[0], c);
                    let w = rendezvous_weight(&a, &c.address);
                    prop_assert!(ranked.iter().all(|r| rendezvous_weight(&a, &r.address) <= w));
                }
            }
            prop_assert_eq!(require_host(&a, &candidates).ok(), chosen);
        }

        #[test]
        fn choice_does_not_depend_on_order(
            id in "[a-zA-Z0-9._-]{1,20}",
            candidates in proptest::collection::vec(arb_candidate(), 0..8),
            rotate in 0usize..8,
        ) {
            let a = ActorRef::new("t", id).unwrap();
            let mut shuffled = candidates.clone();
            shuffled.reverse();
            if !shuffled.is_empty() {
                let k = rotate % shuffled.len();
                shuffled.rotate_left(k);
            }
            prop_assert_eq!(choose_host(&a, &candidates), choose_host(&a, &shuffled));
            prop_assert_eq!(rank_hosts(&a, &candidates), rank_hosts(&a, &shuffled));
        }
    }
}
