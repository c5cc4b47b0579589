//! Store access shared by the runtime: timeouts, error mapping, and an activation's fenced
//! view of its own state and alarms.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::{
    ActivationState, ActorRef, AlarmProperties, Envelope, Error, ErrorKind, SetStateOptions,
};
use francis_store::{Fence, Placement, Provider, StoreResult};

use crate::clock::Clock;

/// The provider, the clock and the bound on every store call.
#[derive(Clone)]
pub(crate) struct StoreAccess {
    pub provider: Arc<dyn Provider>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
}

impl StoreAccess {
    /// Runs one store call, bounded by the store timeout, mapping its error to a call error.
    pub async fn call<T>(&self, fut: impl Future<Output = StoreResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::Timeout {
                what: "store call".into(),
                after: self.timeout,
            }),
        }
    }
}

/// The store's authoritative answer to a claim: where the actor is placed, at which epoch.
///
/// Only [`StoreAccess::claim`] makes one (a cached or remembered placement cannot become
/// one), and an activation needs one naming its own host: so an actor is activated only after
/// the store placed it here, and every write of that activation carries the claim's epoch.
#[derive(Debug, Clone)]
pub(crate) struct Claim(Placement);

impl Claim {
    /// The placement the store answered.
    pub fn placement(&self) -> &Placement {
        &self.0
    }

    /// Whether this claim placed `actor` on host `host_id`.
    pub fn places(&self, actor: &ActorRef, host_id: &str) -> bool {
        &self.0.actor == actor && self.0.host_id == host_id
    }
}

impl StoreAccess {
    /// Claims `actor` for `host_id` (bounded by the store timeout): the store answers the
    /// actor's live placement wherever it is, or places it on `host_id`.
    pub async fn claim(
        &self,
        actor: &ActorRef,
        host_id: &str,
        health_deadline: Duration,
    ) -> Result<Claim, Error> {
        let now = self.clock.now();
        self.call(self.provider.claim(actor, host_id, now, health_deadline))
            .await
            .map(Claim)
    }
}

/// An activation's state and alarms; every write carries its placement epoch.
///
/// State writes are written behind: [`ActivationStore::store`] and [`ActivationStore::clear`]
/// record the write and return, the activation's reads see it at once, and
/// [`ActivationStore::flush`] commits the newest write (one commit for any number of writes
/// made since the last). The drain holds every answer until the writes it could have observed
/// are durable (the output gate), and a turn's calls to other actors and its alarm writes
/// flush first. After a failed commit every read, write and flush of this activation fails:
/// it is discarded, and its next activation reads the stored state.
pub(crate) struct ActivationStore {
    access: StoreAccess,
    actor: ActorRef,
    epoch: u64,
    generation: AtomicU64,
    behind: Mutex<Behind>,
    /// One commit at a time, so commits reach the store in the order of their writes.
    commits: tokio::sync::Mutex<()>,
}

/// The writes of an activation that are not known durable yet.
#[derive(Default)]
struct Behind {
    /// How many writes were made (the newest write's number).
    written: u64,
    /// Every write up to this number is durable.
    durable: u64,
    /// The newest write, until it is durable.
    latest: Option<StateWrite>,
    /// Why a commit failed, once one did.
    failed: Option<(ErrorKind, String, Option<Duration>)>,
}

/// Where an activation's writes stand.
pub(crate) enum Durability {
    /// Every write is durable.
    Durable,
    /// Writes up to this number are not all durable yet.
    Pending(u64),
    /// A commit failed (the error, again): the activation must go.
    Failed(Error),
}

#[derive(Clone)]
enum StateWrite {
    Set {
        value: Envelope,
        expires_at: Option<DateTime<Utc>>,
    },
    Delete,
}

impl std::fmt::Debug for ActivationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationStore")
            .field("actor", &self.actor)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl ActivationStore {
    /// The store of the activation `claim` placed here.
    pub fn new(access: StoreAccess, claim: &Claim) -> Self {
        ActivationStore {
            access,
            actor: claim.0.actor.clone(),
            epoch: claim.0.epoch,
            generation: AtomicU64::new(0),
            behind: Mutex::new(Behind::default()),
            commits: tokio::sync::Mutex::new(()),
        }
    }

    fn fence(&self) -> Fence {
        Fence::Epoch(self.epoch)
    }

    fn behind(&self) -> std::sync::MutexGuard<'_, Behind> {
        self.behind.lock().expect("write-behind lock")
    }

    /// The error of the failed commit, again.
    fn failure(behind: &Behind) -> Result<(), Error> {
        match &behind.failed {
            None => Ok(()),
            Some((kind, message, retry_after)) => Err(Error::from_wire(
                kind.code(),
                format!("an earlier write of this activation failed: {message}"),
                *retry_after,
            )),
        }
    }

    /// Whether this activation's writes are durable.
    pub fn durability(&self) -> Durability {
        let b = self.behind();
        match Self::failure(&b) {
            Err(e) => Durability::Failed(e),
            Ok(()) if b.written > b.durable => Durability::Pending(b.written),
            Ok(()) => Durability::Durable,
        }
    }

    /// Whether every write up to number `seq` is durable (a later commit may have failed).
    pub fn is_durable(&self, seq: u64) -> bool {
        self.behind().durable >= seq
    }

    /// Commits the newest write, if any is not durable; returns once every write made before
    /// the call is durable, or with the error of the commit that failed.
    pub async fn flush(&self) -> Result<(), Error> {
        let _one_at_a_time = self.commits.lock().await;
        let (seq, write) = {
            let b = self.behind();
            Self::failure(&b)?;
            if b.durable >= b.written {
                return Ok(());
            }
            (b.written, b.latest.clone().expect("an unflushed write"))
        };
        let committed = match write {
            StateWrite::Set { value, expires_at } => {
                self.access
                    .call(self.access.provider.set_state(
                        &self.actor,
                        value.as_bytes(),
                        expires_at,
                        self.fence(),
                    ))
                    .await
            }
            StateWrite::Delete => self
                .access
                .call(self.access.provider.delete_state(&self.actor, self.fence()))
                .await
                .map(|_| ()),
        };
        let mut b = self.behind();
        match committed {
            Ok(()) => {
                b.durable = seq;
                if b.written == seq {
                    b.latest = None;
                }
                Ok(())
            }
            Err(e) => {
                b.failed = Some((e.kind(), e.to_string(), e.retry_after()));
                // The store may hold either version now: caches must not be trusted.
                self.generation.fetch_add(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    fn write_behind(&self, write: StateWrite) -> Result<(), Error> {
        let mut b = self.behind();
        Self::failure(&b)?;
        b.written += 1;
        b.latest = Some(write);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

#[async_trait]
impl ActivationState for ActivationStore {
    async fn load(&self) -> Result<Option<(Envelope, bool)>, Error> {
        let now = self.access.clock.now();
        {
            let b = self.behind();
            Self::failure(&b)?;
            match &b.latest {
                None => {}
                Some(StateWrite::Delete) => return Ok(None),
                Some(StateWrite::Set { value, expires_at }) => {
                    return Ok(match expires_at {
                        Some(at) if *at <= now => None,
                        _ => Some((value.clone(), expires_at.is_some())),
                    });
                }
            }
        }
        let record = self
            .access
            .call(self.access.provider.get_state(&self.actor, now))
            .await?;
        match record {
            None => Ok(None),
            Some(r) => Ok(Some((Envelope::from_json(r.data)?, r.expires_at.is_some()))),
        }
    }

    async fn store(&self, value: Envelope, options: SetStateOptions) -> Result<(), Error> {
        // Refused now, not at the commit: a value that can never be stored (or travel to
        // another host) is the caller's bad input, and must not discard the activation.
        crate::policy::check_payload_size(
            value.as_bytes().len(),
            francis_transport::DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        let expires_at = match options.ttl {
            None => None,
            Some(ttl) => Some(
                self.access.clock.now()
                    + chrono::Duration::from_std(ttl).map_err(|_| {
                        Error::invalid_argument("ttl", format!("{ttl:?} is too long"))
                    })?,
            ),
        };
        self.write_behind(StateWrite::Set { value, expires_at })
    }

    async fn clear(&self) -> Result<(), Error> {
        self.write_behind(StateWrite::Delete)
    }

    async fn set_alarm(&self, name: &str, properties: AlarmProperties) -> Result<(), Error> {
        // An alarm never fires on state that could still be lost.
        self.flush().await?;
        self.access
            .call(
                self.access
                    .provider
                    .set_alarm(&self.actor, name, &properties, self.fence()),
            )
            .await
    }

    async fn delete_alarm(&self, name: &str) -> Result<(), Error> {
        self.flush().await?;
        let existed = self
            .access
            .call(
                self.access
                    .provider
                    .delete_alarm(&self.actor, name, self.fence()),
            )
            .await?;
        if !existed {
            return Err(Error::AlarmNotFound {
                actor: self.actor.clone(),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
