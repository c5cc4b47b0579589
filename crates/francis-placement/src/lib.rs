//! Placement policy for Francis: which host should own an actor, which hosts are live, and how
//! long a caller may trust a placement it has seen.
//!
//! Everything here is a pure function of its inputs (including `now`): no I/O, no clock, no
//! background task. The host (`francis-host`) feeds it the store's host records and applies its
//! choices through the store's atomic `claim`, which stays the authority.
//!
//! - [`MembershipView`]: the live hosts at `now` and the [`Candidate`]s for an actor type.
//! - [`choose_host`] / [`rank_hosts`]: rendezvous (highest-random-weight) hashing with a fixed,
//!   documented hash ([`rendezvous_weight`]), so every host computes the same choice.
//! - [`PlacementCache`]: placements seen recently, each trusted for at most
//!   [`cache_entry_ttl`]`(idle_timeout)` (never more than [`MAX_CACHE_TTL`]).
//!
//! ```
//! use std::time::Duration;
//! use chrono::Utc;
//! use francis_core::ActorRef;
//! use francis_placement::{MembershipView, choose_host};
//! use francis_store::{ActorTypeSpec, HostRecord};
//!
//! let now = Utc::now();
//! let host = |id: &str, addr: &str| HostRecord {
//!     host_id: id.into(),
//!     address: addr.into(),
//!     actor_types: vec![ActorTypeSpec { actor_type: "counter".into(), max_active: None }],
//!     last_heartbeat: now,
//! };
//! let view = MembershipView::new(
//!     vec![host("h1", "10.0.0.1:7000"), host("h2", "10.0.0.2:7000")],
//!     now,
//!     Duration::from_secs(20),
//! );
//! let actor = ActorRef::new("counter", "c1").expect("valid reference");
//! let candidates = view.candidates_for(actor.actor_type());
//! let chosen = choose_host(&actor, &candidates).expect("two hosts serve the type");
//! assert!(chosen.host_id == "h1" || chosen.host_id == "h2");
//! ```

mod cache;
mod error;
mod membership;
mod rendezvous;

pub use cache::{MAX_CACHE_TTL, PlacementCache, cache_entry_ttl};
pub use error::PlacementError;
pub use membership::{MembershipView, heartbeat_is_live};
pub use rendezvous::{Candidate, choose_host, rank_hosts, rendezvous_weight, require_host};
