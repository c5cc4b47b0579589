//! Claims, several at once.
//!
//! Many actors activated at once make many claims, and the writer runs whatever is queued in
//! one transaction. Consecutive claims of a batch are run together: one statement reads, for
//! every claim, the actor's placement and the candidate host; [`decide`] then gives each claim
//! the outcome it would have had run one after the other (a later claim sees the placements
//! and counts of the earlier ones); one more statement writes every new placement. Two
//! statements for the run, instead of two per claim.
//!
//! Nothing is written before every claim of the run has been decided, so a refused claim has
//! written nothing and needs no savepoint.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use francis_core::ActorRef;
use francis_store::codec::{capacity_from_sql, count_from_sql, epoch_from_sql};
use francis_store::policy::{self, CandidateView, duration_millis, millis};
use francis_store::{ClaimRefusal, Op, Placement, StoreError};
use sqlx::SqliteConnection;

use crate::error::{Error, Result};

/// One claim: [`Op::Claim`] with its times in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimArgs {
    pub actor: ActorRef,
    pub candidate: String,
    pub now_ms: i64,
    pub ttl_ms: i64,
}

impl ClaimArgs {
    pub(crate) fn new(
        actor: ActorRef,
        candidate: String,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Self {
        ClaimArgs {
            actor,
            candidate,
            now_ms: millis(now),
            ttl_ms: duration_millis(ttl),
        }
    }

    /// The claim `op` makes, or `op` back if it is not a claim.
    #[allow(
        clippy::result_large_err,
        reason = "the operation is handed back by value, as it came in"
    )]
    pub(crate) fn from_op(op: Op) -> std::result::Result<Self, Op> {
        match op {
            Op::Claim {
                actor,
                candidate,
                now,
                ttl,
            } => Ok(ClaimArgs::new(actor, candidate, now, ttl)),
            other => Err(other),
        }
    }
}

/// What the read statement found for one claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The actor's placement: its host, epoch, and that host's address and heartbeat (`None`
    /// when there is no placement or its host is no longer registered).
    pub placed: Option<Row>,
    /// The candidate host's address and heartbeat, if it is registered.
    pub candidate: Option<(String, i64)>,
    /// Whether the candidate serves the actor's type.
    pub serves_type: bool,
    /// The candidate's capacity for the type (`None`: no limit).
    pub max_active: Option<i64>,
    /// Actors of the type placed on the candidate (counted only when it has a limit).
    pub placed_on_candidate: i64,
}

/// A placement as stored: host, epoch, host address, host heartbeat.
pub(crate) type Row = (String, i64, String, i64);

/// A placement to write: the claim's index, host and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub index: usize,
    pub host_id: String,
    pub epoch: i64,
}

/// The outcome of each claim of a run, as if run one after the other in order, and the
/// placements to write (one per actor, the last one made), given what the read found and the
/// epoch counter's value. A claim returns the actor's placement if its host is live;
/// otherwise it places the actor on its candidate if [`policy::check_candidate`] allows,
/// with the next epoch, or is refused.
pub(crate) fn decide(
    claims: &[ClaimArgs],
    seen: Vec<Seen>,
    counter: i64,
) -> Result<(Vec<Result<Placement>>, Vec<Write>)> {
    let mut epoch = counter;
    // placements made earlier in the run, by actor: (index of the claim, row)
    let mut made: HashMap<(&str, &str), (usize, Row)> = HashMap::new();
    // change, earlier in the run, of the number of actors of a type on a host
    let mut moved: HashMap<(String, &str), i64> = HashMap::new();
    let mut outcomes = Vec::with_capacity(claims.len());
    for (index, (claim, seen)) in claims.iter().zip(seen).enumerate() {
        let ty = claim.actor.actor_type();
        let key = (ty, claim.actor.actor_id());
        let placed = made.get(&key).map(|(_, row)| row.clone()).or(seen.placed);
        if let Some((host_id, e, address, hb)) = &placed
            && policy::is_live(*hb, claim.now_ms, claim.ttl_ms)
        {
            outcomes.push(Ok(Placement {
                actor: claim.actor.clone(),
                host_id: host_id.clone(),
                address: address.clone(),
                epoch: epoch_from_sql(*e)?,
            }));
            continue;
        }
        let live = seen
            .candidate
            .as_ref()
            .is_some_and(|(_, hb)| policy::is_live(*hb, claim.now_ms, claim.ttl_ms));
        let capacity = if live && seen.serves_type {
            Some(capacity_from_sql(seen.max_active)?)
        } else {
            None
        };
        let placed_count = match capacity {
            Some(Some(_)) => {
                let delta = moved.get(&(claim.candidate.clone(), ty)).copied();
                count_from_sql(seen.placed_on_candidate + delta.unwrap_or(0))
            }
            _ => 0,
        };
        let refusal = policy::check_candidate(CandidateView {
            live,
            capacity,
            placed: placed_count,
        })
        .err();
        let (Some((address, hb)), None) = (seen.candidate, refusal) else {
            outcomes.push(Err(StoreError::ClaimRefused {
                actor: claim.actor.clone(),
                candidate: claim.candidate.clone(),
                // check_candidate refuses hosts that are not registered
                reason: refusal.unwrap_or(ClaimRefusal::CandidateNotLive),
            }
            .into()));
            continue;
        };
        epoch += 1;
        if let Some((old_host, ..)) = placed {
            *moved.entry((old_host, ty)).or_default() -= 1;
        }
        *moved.entry((claim.candidate.clone(), ty)).or_default() += 1;
        let row = (claim.candidate.clone(), epoch, address.clone(), hb);
        made.insert(key, (index, row));
        outcomes.push(Ok(Placement {
            actor: claim.actor.clone(),
            host_id: claim.candidate.clone(),
            address,
            epoch: epoch_from_sql(epoch)?,
        }));
    }
    let mut writes: Vec<Write> = made
        .into_values()
        .map(|(index, (host_id, epoch, ..))| Write {
            index,
            host_id,
            epoch,
        })
        .collect();
    writes.sort_by_key(|w| w.index);
    Ok((outcomes, writes))
}

const READ: &str = "
    SELECT p.host_id, p.epoch, ph.address, ph.last_heartbeat_ms,
           c.address, c.last_heartbeat_ms,
           t.host_id IS NOT NULL, t.max_active,
           CASE WHEN t.max_active IS NULL THEN 0
                ELSE (SELECT COUNT(*) FROM placements x
                      WHERE x.host_id = w.value ->> 2 AND x.actor_type = w.value ->> 0)
           END,
           (SELECT value FROM counters WHERE name = 'epoch')
    FROM json_each(?1) w
    LEFT JOIN placements p ON p.actor_type = w.value ->> 0 AND p.actor_id = w.value ->> 1
    LEFT JOIN hosts ph ON ph.host_id = p.host_id
    LEFT JOIN hosts c ON c.host_id = w.value ->> 2
    LEFT JOIN host_types t ON t.host_id = w.value ->> 2 AND t.actor_type = w.value ->> 0
    ORDER BY w.key";

// The trigger of migration 2 raises the epoch counter to the highest epoch written.
const WRITE: &str = "
    INSERT INTO placements (actor_type, actor_id, host_id, epoch)
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1) WHERE true
    ON CONFLICT (actor_type, actor_id) DO UPDATE SET
        host_id = excluded.host_id, epoch = excluded.epoch";

type ReadRow = (
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    bool,
    Option<i64>,
    i64,
    i64,
);

/// Runs consecutive claims together (see the module docs). The outer error is a failure
/// that is not a refusal: the batch cannot go on. Each inner error is a refusal of its claim.
pub(crate) async fn claim_many(
    c: &mut SqliteConnection,
    claims: Vec<ClaimArgs>,
) -> Result<Vec<Result<Placement>>> {
    let wanted: Vec<(&str, &str, &str)> = claims
        .iter()
        .map(|a| {
            (
                a.actor.actor_type(),
                a.actor.actor_id(),
                a.candidate.as_str(),
            )
        })
        .collect();
    let rows: Vec<ReadRow> = sqlx::query_as(READ)
        .bind(json(&wanted)?)
        .fetch_all(&mut *c)
        .await?;
    if rows.len() != claims.len() {
        return Err(corrupt(format!(
            "a claim read {} rows for {} claims",
            rows.len(),
            claims.len()
        )));
    }
    let counter = rows.first().map_or(0, |r| r.9);
    let seen = rows
        .into_iter()
        .map(
            |(ph, pe, pa, phb, ca, chb, serves_type, max_active, n, _)| Seen {
                placed: match (ph, pe, pa, phb) {
                    (Some(h), Some(e), Some(a), Some(hb)) => Some((h, e, a, hb)),
                    _ => None,
                },
                candidate: ca.zip(chb),
                serves_type,
                max_active,
                placed_on_candidate: n,
            },
        )
        .collect();
    let (outcomes, writes) = decide(&claims, seen, counter)?;
    if !writes.is_empty() {
        let rows: Vec<(&str, &str, &str, i64)> = writes
            .iter()
            .map(|w| {
                let a = &claims[w.index].actor;
                (a.actor_type(), a.actor_id(), w.host_id.as_str(), w.epoch)
            })
            .collect();
        let done = sqlx::query(WRITE)
            .bind(json(&rows)?)
            .execute(&mut *c)
            .await?;
        if done.rows_affected() != writes.len() as u64 {
            return Err(corrupt(format!(
                "a claim wrote {} of {} placements",
                done.rows_affected(),
                writes.len()
            )));
        }
    }
    Ok(outcomes)
}

fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode a claim: {e}")))
}

fn corrupt(why: String) -> Error {
    StoreError::Backend(why).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const TTL: i64 = 10_000;

    fn claim(id: &str, candidate: &str) -> ClaimArgs {
        ClaimArgs {
            actor: ActorRef::new("t", id).unwrap(),
            candidate: candidate.into(),
            now_ms: NOW,
            ttl_ms: TTL,
        }
    }

    fn live_candidate(max_active: Option<i64>, placed: i64) -> Seen {
        Seen {
            placed: None,
            candidate: Some(("addr-h".into(), NOW)),
            serves_type: true,
            max_active,
            placed_on_candidate: placed,
        }
    }

    fn epochs(outcomes: &[Result<Placement>]) -> Vec<Option<u64>> {
        outcomes
            .iter()
            .map(|o| o.as_ref().ok().map(|p| p.epoch))
            .collect()
    }

    #[test]
    fn new_actors_get_consecutive_epochs_after_the_counter() {
        let claims = [claim("a", "h"), claim("b", "h")];
        let seen = vec![live_candidate(None, 0), live_candidate(None, 0)];
        let (outcomes, writes) = decide(&claims, seen, 41).unwrap();
        assert_eq!(epochs(&outcomes), [Some(42), Some(43)]);
        assert_eq!(
            writes,
            [
                Write {
                    index: 0,
                    host_id: "h".into(),
                    epoch: 42
                },
                Write {
                    index: 1,
                    host_id: "h".into(),
                    epoch: 43
                },
            ]
        );
    }

    #[test]
    fn a_later_claim_of_the_same_actor_sees_the_earlier_one() {
        let claims = [claim("a", "h"), claim("a", "h2")];
        let mut other = live_candidate(None, 0);
        other.candidate = Some(("addr-h2".into(), NOW));
        let (outcomes, writes) = decide(&claims, vec![live_candidate(None, 0), other], 0).unwrap();
        let hosts: Vec<_> = outcomes
            .iter()
            .map(|o| o.as_ref().unwrap().host_id.clone())
            .collect();
        assert_eq!(hosts, ["h", "h"]);
        assert_eq!(epochs(&outcomes), [Some(1), Some(1)]);
        assert_eq!(writes.len(), 1, "one placement written");
    }

    #[test]
    fn capacity_counts_the_earlier_claims_of_the_run() {
        let claims = [claim("a", "h"), claim("b", "h"), claim("c", "h")];
        let seen = vec![live_candidate(Some(2), 1); 3];
        let (outcomes, writes) = decide(&claims, seen, 0).unwrap();
        assert_eq!(epochs(&outcomes), [Some(1), None, None]);
        assert!(matches!(
            &outcomes[1],
            Err(Error::Store(StoreError::ClaimRefused {
                reason: ClaimRefusal::AtCapacity,
                ..
            }))
        ));
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn a_live_placement_is_kept_and_a_dead_one_replaced() {
        let claims = [claim("a", "h"), claim("b", "h")];
        let mut live = live_candidate(None, 0);
        live.placed = Some(("other".into(), 7, "addr-o".into(), NOW));
        let mut dead = live_candidate(None, 0);
        dead.placed = Some(("gone".into(), 8, "addr-g".into(), NOW - 2 * TTL));
        let (outcomes, writes) = decide(&claims, vec![live, dead], 20).unwrap();
        let a = outcomes[0].as_ref().unwrap();
        assert_eq!((a.host_id.as_str(), a.epoch), ("other", 7));
        let b = outcomes[1].as_ref().unwrap();
        assert_eq!((b.host_id.as_str(), b.epoch), ("h", 21));
        assert_eq!(
            writes,
            [Write {
                index: 1,
                host_id: "h".into(),
                epoch: 21
            }]
        );
    }

    #[test]
    fn refusals_write_nothing() {
        let claims = [claim("a", "h"), claim("b", "nobody"), claim("c", "h")];
        let mut not_served = live_candidate(None, 0);
        not_served.serves_type = false;
        let unknown = Seen::default();
        let mut dead = live_candidate(None, 0);
        dead.candidate = Some(("addr-h".into(), NOW - 2 * TTL));
        let (outcomes, writes) = decide(&claims, vec![not_served, unknown, dead], 5).unwrap();
        let reasons: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                Err(Error::Store(StoreError::ClaimRefused { reason, .. })) => *reason,
                other => panic!("expected a refusal, got {other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ClaimRefusal::TypeNotServed,
                ClaimRefusal::CandidateNotLive,
                ClaimRefusal::CandidateNotLive
            ]
        );
        assert!(writes.is_empty());
    }
}
