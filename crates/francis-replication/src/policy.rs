//! Small decisions of the replicated store, as plain functions.

/// Whether `reached` voters out of `voters` form a majority (a Raft quorum).
pub(crate) fn is_majority(reached: usize, voters: usize) -> bool {
    voters > 0 && reached * 2 > voters
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
