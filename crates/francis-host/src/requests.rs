//! The turns an owner remembers by request id, so that a call resent by another host after
//! its answer was lost (the connection broke after the call was sent) answers the first
//! outcome instead of running twice.
//!
//! An entry is made when a resendable turn is asked for; the turn records its outcome when it
//! ends, from its own task, so the outcome is kept even when the caller that asked for it is
//! gone. A resend that arrives while the turn is still running waits for that outcome. A turn
//! that never started (refused, or given up while it waited for the actor) leaves no entry, so
//! a resend runs it afresh. Finished entries are forgotten by [`forget_oldest_request`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use francis_core::{ActorRef, Envelope, Error, ErrorKind};
use tokio::sync::watch;
// The host's monotonic clock (tokio's, paused in tests), as for the lease.
use tokio::time::{Duration, Instant};

use crate::policy::{RequestMemory, forget_oldest_request};

/// The outcome of a finished turn, as its callers see it.
#[derive(Clone, Debug)]
pub(crate) struct Outcome(Result<Option<Envelope>, Failure>);

/// An error kept as it travels between hosts: its kind, message and retry hint.
#[derive(Clone, Debug)]
struct Failure {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    /// A typed actor's own error value.
    detail: Option<Envelope>,
}

impl Outcome {
    fn of(result: &Result<Option<Envelope>, Error>) -> Self {
        Outcome(match result {
            Ok(output) => Ok(output.clone()),
            Err(e) => Err(Failure {
                kind: e.kind(),
                message: e.to_string(),
                retry_after: e.retry_after(),
                detail: e.detail().cloned(),
            }),
        })
    }

    /// The outcome again, for a resend: the same answer, or an error of the same kind.
    pub fn replay(&self) -> Result<Option<Envelope>, Error> {
        match &self.0 {
            Ok(output) => Ok(output.clone()),
            Err(f) => Err(
                Error::from_wire(f.kind.code(), f.message.clone(), f.retry_after)
                    .with_detail(f.detail.clone()),
            ),
        }
    }

    fn size(&self) -> usize {
        match &self.0 {
            Ok(output) => output.as_ref().map_or(0, |e| e.as_bytes().len()),
            Err(f) => f.message.len() + f.detail.as_ref().map_or(0, |d| d.as_bytes().len()),
        }
    }
}

type Key = (ActorRef, String);

struct Entry {
    /// Tells entries of one key apart (one may be dropped and another made for a resend).
    serial: u64,
    outcome: watch::Receiver<Option<Outcome>>,
}

struct Finished {
    at: Instant,
    key: Key,
    serial: u64,
    bytes: usize,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// Finished entries, oldest first.
    finished: VecDeque<Finished>,
    bytes: usize,
    next_serial: u64,
}

impl Table {
    fn prune(&mut self, now: Instant, memory: &RequestMemory) {
        while let Some(oldest) = self.finished.front() {
            let age = now.saturating_duration_since(oldest.at);
            if !forget_oldest_request(age, self.finished.len(), self.bytes, memory) {
                break;
            }
            let oldest = self.finished.pop_front().expect("oldest entry");
            self.bytes -= oldest.bytes;
            if self
                .entries
                .get(&oldest.key)
                .is_some_and(|e| e.serial == oldest.serial)
            {
                self.entries.remove(&oldest.key);
            }
        }
    }
}

/// The request ids this host remembers.
pub(crate) struct RecentRequests {
    memory: RequestMemory,
    table: Mutex<Table>,
    /// Asks that joined a turn run under the same id (diagnostics and tests).
    joined: AtomicU64,
}

/// What a turn asked for under a request id does.
pub(crate) enum Begin {
    /// Nobody ran it: run it, and record its outcome in the ticket.
    Run(Ticket),
    /// It runs or ran already: wait for its outcome ([`outcome_of`]; `None` when that turn
    /// never started after all, so ask again).
    Join(watch::Receiver<Option<Outcome>>),
}

impl RecentRequests {
    pub fn new(memory: RequestMemory) -> Arc<Self> {
        Arc::new(RecentRequests {
            memory,
            table: Mutex::new(Table::default()),
            joined: AtomicU64::new(0),
        })
    }

    /// Looks `request_id` up for `actor`: the first ask runs the turn, later ones join it.
    pub fn begin(self: &Arc<Self>, actor: &ActorRef, request_id: &str) -> Begin {
        let key = (actor.clone(), request_id.to_owned());
        let mut table = self.table.lock().expect("recent requests lock");
        table.prune(Instant::now(), &self.memory);
        if let Some(entry) = table.entries.get(&key) {
            self.joined.fetch_add(1, Ordering::Relaxed);
            return Begin::Join(entry.outcome.clone());
        }
        let serial = table.next_serial;
        table.next_serial += 1;
        let (tx, rx) = watch::channel(None);
        table.entries.insert(
            key.clone(),
            Entry {
                serial,
                outcome: rx,
            },
        );
        Begin::Run(Ticket {
            recent: self.clone(),
            key: Some(key),
            serial,
            tx,
        })
    }

    /// How many asks joined a turn run (or running) under the same request id.
    pub fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// How many turns are remembered or running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .expect("recent requests lock")
            .entries
            .len()
    }
}

/// The right and duty to record one turn's outcome. Dropped without recording (the turn never
/// started), it removes its entry, and callers waiting on it ask again.
pub(crate) struct Ticket {
    recent: Arc<RecentRequests>,
    key: Option<Key>,
    serial: u64,
    tx: watch::Sender<Option<Outcome>>,
}

impl Ticket {
    /// Records the turn's outcome for its resends, and wakes those waiting.
    pub fn finish(mut self, result: &Result<Option<Envelope>, Error>) {
        let key = self.key.take().expect("an unfinished ticket");
        let outcome = Outcome::of(result);
        let bytes = outcome.size() + key.1.len();
        self.tx.send_replace(Some(outcome));
        let mut table = self.recent.table.lock().expect("recent requests lock");
        if table
            .entries
            .get(&key)
            .is_some_and(|e| e.serial == self.serial)
        {
            table.bytes += bytes;
            table.finished.push_back(Finished {
                at: Instant::now(),
                key,
                serial: self.serial,
                bytes,
            });
            table.prune(Instant::now(), &self.recent.memory);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut table = self.recent.table.lock().expect("recent requests lock");
            if table
                .entries
                .get(&key)
                .is_some_and(|e| e.serial == self.serial)
            {
                table.entries.remove(&key);
            }
        }
    }
}

/// Waits for the outcome of a turn another ask runs; `None` if it never started.
pub(crate) async fn outcome_of(mut rx: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|o| o.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> ActorRef {
        ActorRef::new("t", "a").unwrap()
    }

    fn ran(begin: Begin) -> Ticket {
        match begin {
            Begin::Run(t) => t,
            Begin::Join(_) => panic!("expected to run"),
        }
    }

    fn joined(begin: Begin) -> watch::Receiver<Option<Outcome>> {
        match begin {
            Begin::Join(rx) => rx,
            Begin::Run(_) => panic!("expected to join"),
        }
    }

    fn answer(n: i64) -> Result<Option<Envelope>, Error> {
        Ok(Some(Envelope::encode(&n).unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_resend_gets_the_first_outcome_until_it_is_forgotten() {
        let recent = RecentRequests::new(RequestMemory::default());
        ran(recent.begin(&actor(), "r1")).finish(&answer(7));
        let again = outcome_of(joined(recent.begin(&actor(), "r1")))
            .await
            .unwrap();
        assert_eq!(again.replay().unwrap(), answer(7).unwrap());
        // another actor, or another id, is another call
        drop(ran(recent.begin(&ActorRef::new("t", "b").unwrap(), "r1")));
        drop(ran(recent.begin(&actor(), "r2")));
        // remembered for the policy's ttl, then forgotten: a resend runs afresh
        tokio::time::advance(RequestMemory::default().ttl - Duration::from_millis(1)).await;
        assert!(matches!(recent.begin(&actor(), "r1"), Begin::Join(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(ran(recent.begin(&actor(), "r1")));
        assert_eq!(recent.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_replay_with_their_kind_and_hint() {
        let recent = RecentRequests::new(RequestMemory::default());
        let first = Error::Overloaded("too many calls".into());
        ran(recent.begin(&actor(), "r")).finish(&Err(Error::Overloaded("too many calls".into())));
        let err = outcome_of(joined(recent.begin(&actor(), "r")))
            .await
            .unwrap()
            .replay()
            .unwrap_err();
        assert_eq!(err.kind(), first.kind());
        assert_eq!(err.to_string(), first.to_string());
        assert_eq!(err.retry_after(), first.retry_after());
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_never_started_leaves_nothing_and_wakes_its_waiters() {
        let recent = RecentRequests::new(RequestMemory::default());
        let first = ran(recent.begin(&actor(), "r"));
        let waiter = tokio::spawn(outcome_of(joined(recent.begin(&actor(), "r"))));
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap().is_none());
        assert_eq!(recent.len(), 0);
        let second = ran(recent.begin(&actor(), "r"));
        let waiter = tokio::spawn(outcome_of(joined(recent.begin(&actor(), "r"))));
        tokio::task::yield_now().await;
        second.finish(&answer(1));
        assert_eq!(
            waiter.await.unwrap().unwrap().replay().unwrap(),
            answer(1).unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_turns_are_forgotten_beyond_the_count_or_size() {
        let memory = RequestMemory {
            max_entries: 2,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        };
        let recent = RecentRequests::new(memory);
        for id in ["a", "b", "c"] {
            ran(recent.begin(&actor(), id)).finish(&answer(1));
        }
        assert_eq!(recent.len(), 2);
        drop(ran(recent.begin(&actor(), "a")));
        assert!(matches!(recent.begin(&actor(), "c"), Begin::Join(_)));
        // a running turn is never forgotten, however many finish after it
        let running = ran(recent.begin(&actor(), "long"));
        for id in ["d", "e", "f"] {
            ran(recent.begin(&actor(), id)).finish(&answer(1));
        }
        assert!(matches!(recent.begin(&actor(), "long"), Begin::Join(_)));
        drop(running);
        let small = RecentRequests::new(RequestMemory {
            max_bytes: 10,
            ..memory
        });
        ran(small.begin(&actor(), "big"))
            .finish(&Ok(Some(Envelope::encode(&"0123456789").unwrap())));
        assert_eq!(small.len(), 0);
    }
}
