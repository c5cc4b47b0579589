//! What the replicated log and the forwarded requests carry beside the store's own
//! [`Op`] and [`Reply`] (whose wire form is [`francis_store::wire`]): errors as they travel,
//! and the size of a command in the log.

use francis_core::ActorRef;
use francis_store::wire::Versioned;
use francis_store::{ClaimRefusal, Op, Reply, StoreError};
use serde::{Deserialize, Serialize};

/// The length of an operation's encoding in the log, without building it.
pub(crate) fn encoded_len(op: &Op) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and every operation encodes.
    let _ = serde_json::to_writer(&mut count, &Versioned(op));
    count.0
}

/// A [`StoreError`] as it travels in replies: the variants a caller acts on keep their data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireStoreError {
    /// [`StoreError::AddressInUse`].
    AddressInUse {
        /// The address.
        address: String,
        /// The live host holding it.
        host_id: String,
    },
    /// [`StoreError::HostNotFound`].
    HostNotFound(String),
    /// [`StoreError::ClaimRefused`].
    ClaimRefused {
        /// The actor.
        actor: ActorRef,
        /// The candidate.
        candidate: String,
        /// Why.
        reason: ClaimRefusal,
    },
    /// [`StoreError::Fenced`].
    Fenced {
        /// The actor.
        actor: ActorRef,
        /// The stale epoch.
        epoch: u64,
    },
    /// [`StoreError::NoQuorum`].
    NoQuorum {
        /// Unreachable peers.
        unreachable: Vec<String>,
    },
    /// [`StoreError::InvalidArgument`].
    InvalidArgument(String),
    /// [`StoreError::Corrupt`].
    Corrupt(String),
    /// Anything else ([`StoreError::Unavailable`] on the caller).
    Unavailable(String),
    /// The node asked is not the leader (it names the leader when it knows one).
    NotLeader {
        /// The leader's address.
        leader: Option<String>,
    },
}

impl From<&StoreError> for WireStoreError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::AddressInUse { address, host_id } => WireStoreError::AddressInUse {
                address: address.clone(),
                host_id: host_id.clone(),
            },
            StoreError::HostNotFound(h) => WireStoreError::HostNotFound(h.clone()),
            StoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            } => WireStoreError::ClaimRefused {
                actor: actor.clone(),
                candidate: candidate.clone(),
                reason: *reason,
            },
            StoreError::Fenced { actor, epoch } => WireStoreError::Fenced {
                actor: actor.clone(),
                epoch: *epoch,
            },
            StoreError::NoQuorum { unreachable } => WireStoreError::NoQuorum {
                unreachable: unreachable.clone(),
            },
            StoreError::InvalidArgument(m) => WireStoreError::InvalidArgument(m.clone()),
            StoreError::Corrupt(m) => WireStoreError::Corrupt(m.clone()),
            other => WireStoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<WireStoreError> for StoreError {
    fn from(e: WireStoreError) -> Self {
        match e {
            WireStoreError::AddressInUse { address, host_id } => {
                StoreError::AddressInUse { address, host_id }
            }
            WireStoreError::HostNotFound(h) => StoreError::HostNotFound(h),
            WireStoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            } => StoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            },
            WireStoreError::Fenced { actor, epoch } => StoreError::Fenced { actor, epoch },
            WireStoreError::NoQuorum { unreachable } => StoreError::NoQuorum { unreachable },
            WireStoreError::InvalidArgument(m) => StoreError::InvalidArgument(m),
            WireStoreError::Corrupt(m) => StoreError::Corrupt(m),
            WireStoreError::Unavailable(m) => StoreError::Unavailable(m),
            WireStoreError::NotLeader { leader } => StoreError::Unavailable(match leader {
                Some(l) => format!("this node is not the leader; the leader is {l}"),
                None => "this node is not the leader and knows no leader".into(),
            }),
        }
    }
}

/// The result of an [`Op`] as the log and the wire carry it.
pub(crate) type Answer = Result<Reply, WireStoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_variant() {
        let actor = ActorRef::new("t", "a").unwrap();
        for e in [
            StoreError::Fenced {
                actor: actor.clone(),
                epoch: 4,
            },
            StoreError::ClaimRefused {
                actor,
                candidate: "h".into(),
                reason: ClaimRefusal::AtCapacity,
            },
            StoreError::AddressInUse {
                address: "a".into(),
                host_id: "h".into(),
            },
            StoreError::HostNotFound("h".into()),
            StoreError::InvalidArgument("x".into()),
        ] {
            let wire = WireStoreError::from(&e);
            let json = serde_json::to_string(&wire).unwrap();
            let back: StoreError = serde_json::from_str::<WireStoreError>(&json)
                .unwrap()
                .into();
            assert_eq!(back.to_string(), e.to_string());
            assert!(back.is_refusal());
        }
        let unavailable: StoreError =
            WireStoreError::from(&StoreError::Unavailable("x".into())).into();
        assert!(!unavailable.is_refusal());
    }

    #[test]
    fn the_counted_length_is_the_encoded_length() {
        let op = Op::UnregisterHost {
            host_id: "h1".into(),
        };
        assert_eq!(
            encoded_len(&op),
            serde_json::to_vec(&Versioned(&op)).unwrap().len()
        );
        // A batch is no longer than its writes counted one by one, so the proposer's limit
        // on their sum bounds the entry.
        for n in 2..5 {
            let ops = vec![op.clone(); n];
            let batch = serde_json::to_vec(&francis_store::wire::Command::of(ops)).unwrap();
            assert!(batch.len() <= n * encoded_len(&op), "{n} writes");
        }
    }
}
