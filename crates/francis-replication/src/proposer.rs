//! The leader's proposer: writes waiting to enter the log are proposed together.
//!
//! openraft appends each proposal to the log and waits for that append to be flushed before
//! it takes the next one, so one log entry per write would cap a leader at one write per log
//! flush, however many callers wait. The proposer keeps at most
//! [`PROPOSALS_IN_FLIGHT`](crate::policy::PROPOSALS_IN_FLIGHT) entries proposed and not yet
//! answered; the writes that arrive meanwhile wait here and go together, in arrival order,
//! as the next entry (a [`Command::Batch`]), which every node applies in order in one
//! transaction, each write in its own savepoint. A lone write goes at once, alone.

use francis_store::Op;
use francis_store::wire::Command;
use openraft::Raft;
use openraft::error::ClientWriteError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::command::Answer;
use crate::policy::{PROPOSALS_IN_FLIGHT, joins_batch};
use crate::raft::TypeConfig;

type NodeId = u64;

/// What became of a proposed write.
#[derive(Debug, Clone)]
pub(crate) enum Proposed {
    /// The log committed it and this node applied it: its result.
    Applied(Answer),
    /// This node is not the leader (openraft names the one it knows): it was not proposed,
    /// or its entry was discarded by a new leader, so it will never be applied.
    NotLeader(Option<NodeId>),
    /// Raft failed or stopped before answering: it may or may not be applied.
    Failed(String),
}

struct Proposal {
    op: Op,
    size: usize,
    reply: oneshot::Sender<Proposed>,
}

/// Hands writes to the proposing task. Dropping it ends the task.
#[derive(Debug)]
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the task proposing to `raft`, in batches of at most `max_batch` encoded bytes
    /// (a single larger write still goes, alone).
    pub(crate) fn start(raft: Raft<TypeConfig>, max_batch: usize) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(propose_loop(raft, rx, max_batch));
        Proposer { tx }
    }

    /// Proposes `op` (of `size` encoded bytes) and waits for what became of it. Giving up on
    /// the future does not withdraw a write already handed over.
    pub(crate) async fn propose(&self, op: Op, size: usize) -> Proposed {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Proposal { op, size, reply }).is_err() {
            return Proposed::Failed("the proposer has stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Proposed::Failed("the proposer stopped before answering".into()))
    }
}

async fn propose_loop(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    max_batch: usize,
) {
    let in_flight = std::sync::Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT));
    // A write taken from the queue that did not fit the last batch: it starts the next.
    let mut carried: Option<Proposal> = None;
    loop {
        // Closed only when the task's own Arc is dropped, which cannot happen while it runs.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            if !joins_batch(bytes, next.size, max_batch) {
                carried = Some(next);
                break;
            }
            bytes += next.size;
            batch.push(next);
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        let submitted = raft.client_write_ff(Command::of(ops)).await;
        tokio::spawn(async move {
            let outcome = match submitted {
                Ok(rx) => rx.await.map_err(|_| "raft dropped the write".to_string()),
                Err(fatal) => Err(fatal.to_string()),
            };
            answer(replies, outcome);
            drop(permit);
        });
    }
}

type Outcome = Result<
    Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        ClientWriteError<NodeId, openraft::BasicNode>,
    >,
    String,
>;

/// Tells every write of one entry what became of it.
fn answer(replies: Vec<oneshot::Sender<Proposed>>, outcome: Outcome) {
    let shared = match outcome {
        Ok(Ok(response)) => {
            let mut answers = response.data.into_iter();
            for reply in replies {
                let a = answers.next().unwrap_or_else(|| {
                    Err(crate::command::WireStoreError::Corrupt(
                        "a batched write got no result".into(),
                    ))
                });
                let _ = reply.send(Proposed::Applied(a));
            }
            return;
        }
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Proposed::NotLeader(f.leader_id),
        Ok(Err(e)) => Proposed::Failed(e.to_string()),
        Err(m) => Proposed::Failed(m),
    };
    for reply in replies {
        let _ = reply.send(shared.clone());
    }
}
