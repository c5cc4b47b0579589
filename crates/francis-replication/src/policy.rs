//! Small decisions of the replicated store, as plain functions.

/// How far the log may be purged now: up to what openraft asked (`wanted`, a snapshot's last
/// entry) but not past what the database holds durably (`durable`), and only if that is past
/// what was purged already (`done`). The database is applied without a sync of its own, so
/// the entries behind a snapshot go only once a checkpoint made their effect durable; keeping
/// them longer is harmless.
pub(crate) fn purge_point<L: Ord + Copy>(
    wanted: Option<L>,
    durable: Option<L>,
    done: Option<L>,
) -> Option<L> {
    let point = wanted?.min(durable?);
    (Some(point) > done).then_some(point)
}

/// Whether `reached` voters out of `voters` form a majority (a Raft quorum).
pub(crate) fn is_majority(reached: usize, voters: usize) -> bool {
    voters > 0 && reached * 2 > voters
}

/// The largest command (encoded) the log accepts: the transport's payload limit plus half of
/// its frame headroom, so that a command at the limit still fits in one AppendEntries frame
/// (or one forwarded request) beside the fields around it.
pub(crate) fn max_command_size(max_message_size: usize, frame_headroom: usize) -> usize {
    max_message_size.saturating_add(frame_headroom / 2)
}

/// Refuses a command of `size` encoded bytes above `max`: it could never be replicated, so it
/// is refused before it reaches the log, with an error that says retrying cannot help.
pub(crate) fn check_command_size(size: usize, max: usize) -> Result<(), francis_store::StoreError> {
    if size > max {
        return Err(francis_store::StoreError::InvalidArgument(format!(
            "this write is {size} bytes once encoded; the replicated store accepts at most \
             {max} bytes in one write"
        )));
    }
    Ok(())
}

/// Log entries a leader keeps proposed and not yet answered. openraft appends one proposal
/// at a time and waits for its flush before it takes the next, so writes that arrive while
/// this many are in flight wait and go together in the next entry. Two lets the next batch
/// enter the log while the last one commits; measured with `cargo xtask bench
/// replicated-write` on two cores, one to four in flight perform alike and eight or more
/// lose half the throughput (openraft queues them one flush at a time).
pub(crate) const PROPOSALS_IN_FLIGHT: usize = 2;

/// Whether a write of `size` encoded bytes joins a batch already holding `batched` bytes
/// without making it larger than `max` (a first write always starts one). The sum of the
/// writes' encoded sizes bounds the batch's own encoding (see `command::encoded_len`).
pub(crate) fn joins_batch(batched: usize, size: usize, max: usize) -> bool {
    batched == 0 || batched.saturating_add(size) <= max
}

/// Whether a node stopping gracefully leaves the voter set first: when it is a voter and not
/// the only one (the last voter cannot leave; the cluster is gone with it anyway).
pub(crate) fn should_leave<Id: Ord>(me: Id, voters: &std::collections::BTreeSet<Id>) -> bool {
    voters.contains(&me) && voters.len() > 1
}

/// What a node that already belongs to a cluster learns from the running members' views of
/// the membership (see [`membership_seen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipSeen {
    /// A running member lists this node.
    Member,
    /// Running members answered and none lists this node (it left the voter set when it
    /// stopped): these members can add it again.
    Removed(Vec<String>),
    /// No running member answered with a membership yet.
    NobodyRunning,
}

/// Every member named in the running members' views of the membership, sorted, once each.
pub(crate) fn reported_members(views: &[Vec<String>]) -> Vec<String> {
    let mut members: Vec<String> = views.iter().flatten().cloned().collect();
    members.sort();
    members.dedup();
    members
}

/// [`MembershipSeen`] from the memberships reported by the running members (an empty one,
/// from a member that does not know its membership yet, says nothing).
pub(crate) fn membership_seen(me: &str, views: &[Vec<String>]) -> MembershipSeen {
    if views.iter().any(|v| v.iter().any(|m| m == me)) {
        return MembershipSeen::Member;
    }
    let members = reported_members(views);
    if members.is_empty() {
        MembershipSeen::NobodyRunning
    } else {
        MembershipSeen::Removed(members)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_is_purged_only_as_far_as_the_database_is_durable() {
        // nothing asked, or nothing durable: nothing goes
        assert_eq!(super::purge_point(None, Some(9), None), None);
        assert_eq!(super::purge_point(Some(9), None, None), None);
        // a snapshot installed but not yet synced: only what was durable before
        assert_eq!(super::purge_point(Some(90), Some(40), None), Some(40));
        // synced: all of it; and never again what is done
        assert_eq!(super::purge_point(Some(90), Some(95), Some(40)), Some(90));
        assert_eq!(super::purge_point(Some(90), Some(95), Some(90)), None);
    }

    use super::*;

    #[test]
    fn batches_stay_within_the_command_size() {
        assert!(
            joins_batch(0, 100, 10),
            "a first write always starts a batch"
        );
        assert!(joins_batch(4, 6, 10));
        assert!(!joins_batch(5, 6, 10));
        assert!(!joins_batch(usize::MAX, 1, usize::MAX - 1));
    }

    #[test]
    fn command_sizes() {
        let max = max_command_size(16 << 20, 64 << 10);
        assert_eq!(max, (16 << 20) + (32 << 10));
        assert!(check_command_size(max, max).is_ok());
        let err = check_command_size(max + 1, max).unwrap_err();
        assert!(matches!(err, francis_store::StoreError::InvalidArgument(_)));
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn majorities() {
        assert!(is_majority(1, 1));
        assert!(!is_majority(1, 2));
        assert!(is_majority(2, 2));
        assert!(is_majority(2, 3));
        assert!(!is_majority(1, 3));
        assert!(!is_majority(2, 4));
        assert!(!is_majority(0, 0));
    }

    #[test]
    fn a_stopping_voter_leaves_unless_it_is_the_last() {
        use std::collections::BTreeSet;
        assert!(should_leave(1, &BTreeSet::from([1, 2])));
        assert!(should_leave(1, &BTreeSet::from([1, 2, 3])));
        assert!(!should_leave(1, &BTreeSet::from([1])), "the last voter");
        assert!(!should_leave(3, &BTreeSet::from([1, 2])), "not a voter");
    }

    #[test]
    fn a_restarted_node_rejoins_only_when_the_running_members_dropped_it() {
        let v = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(membership_seen("a", &[]), MembershipSeen::NobodyRunning);
        assert_eq!(
            membership_seen("a", &[v(&[])]),
            MembershipSeen::NobodyRunning,
            "an empty view says nothing"
        );
        assert_eq!(
            membership_seen("a", &[v(&["b"]), v(&["a", "b"])]),
            MembershipSeen::Member,
            "one member that lists it is enough (the other's view may lag)"
        );
        assert_eq!(
            membership_seen("a", &[v(&["c", "b"]), v(&["b"])]),
            MembershipSeen::Removed(v(&["b", "c"]))
        );
    }
}
