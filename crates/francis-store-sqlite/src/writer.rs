//! Group commit: every write of a provider goes through one writer task.
//!
//! Callers send an operation (a closure over the write connection) through a bounded channel.
//! The writer takes whatever is queued (up to `max_batch`), runs the whole batch in ONE
//! `BEGIN IMMEDIATE` transaction, each operation inside its own savepoint, commits once, and
//! only then answers every caller with its own result. So many actors writing at once share
//! one commit (and one fsync) instead of queueing a transaction each.
//!
//! An operation that fails (a fenced write, a refused claim, a constraint error) is rolled
//! back to its savepoint and does not affect the others in its batch. An operation that
//! needs no savepoint (it writes nothing before any check that can refuse it) saves its two
//! round trips; a refusal fails it alone, and any other failure of it fails the whole batch.
//! Consecutive claims in a batch run together (`claim::claim_many`). If the transaction itself
//! cannot go on (BEGIN or COMMIT fails, or a savepoint cannot be rolled back because SQLite
//! aborted the transaction), nothing of the batch is applied and every caller gets
//! [`StoreError::Unavailable`] (or its own error) saying so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::claim::{ClaimArgs, claim_many};
use crate::error::Result;
use francis_store::{Placement, StoreError};

/// A write operation: runs on the write connection inside the batch transaction.
pub(crate) trait WriteOp<T>:
    for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static
{
}

impl<T, F> WriteOp<T> for F where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static
{
}

/// How a batch ended, for the jobs that ran in it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BatchEnd<'a> {
    Committed,
    Failed(&'a str),
}

/// A queued operation with its reply channel, type-erased so one batch can mix result types.
pub(crate) trait Job: Send {
    /// Runs the operation in a savepoint; returns `false` if the transaction can no longer be
    /// used (SQLite aborted it).
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool>;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, end: BatchEnd<'_>);
    /// Whether the job is a claim: the writer runs consecutive claims together
    /// ([`claim_many`]) instead of calling [`Job::run`] on each.
    fn is_claim(&self) -> bool {
        false
    }
    /// Takes the claim of a claim job, to run it with its neighbours.
    fn take_claim(&mut self) -> Option<ClaimArgs> {
        None
    }
    /// Records the outcome of the claim taken.
    fn claimed(&mut self, _outcome: Result<Placement>) {}
}

/// Answers a job's caller: its own error, or its value if the batch committed.
fn answer<T>(outcome: Option<Result<T>>, end: BatchEnd<'_>, reply: oneshot::Sender<Result<T>>) {
    let result = match (outcome, end) {
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(value)), BatchEnd::Committed) => Ok(value),
        (Some(Ok(_)) | None, BatchEnd::Failed(why)) => {
            Err(StoreError::Unavailable(format!("write not applied: {why}")).into())
        }
        (None, BatchEnd::Committed) => {
            Err(StoreError::Unavailable("write not applied: it was not run".into()).into())
        }
    };
    // The caller may have gone away (cancelled); its write still happened or not as above.
    let _ = reply.send(result);
}

/// A claim, run with the claims queued next to it.
struct ClaimJob {
    claim: Option<ClaimArgs>,
    outcome: Option<Result<Placement>>,
    reply: oneshot::Sender<Result<Placement>>,
}

impl Job for ClaimJob {
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(claim) = self.claim.take() else {
                return true;
            };
            match claim_many(conn, vec![claim]).await {
                Ok(mut outcomes) => {
                    self.outcome = outcomes.pop();
                    true
                }
                Err(e) => {
                    self.outcome = Some(Err(e));
                    false
                }
            }
        })
    }

    fn finish(self: Box<Self>, end: BatchEnd<'_>) {
        answer(self.outcome, end, self.reply);
    }

    fn is_claim(&self) -> bool {
        self.claim.is_some()
    }

    fn take_claim(&mut self) -> Option<ClaimArgs> {
        self.claim.take()
    }

    fn claimed(&mut self, outcome: Result<Placement>) {
        self.outcome = Some(outcome);
    }
}

/// Wraps a claim as a job; the receiver gets its placement after the batch ends.
pub(crate) fn claim_job(claim: ClaimArgs) -> (Box<dyn Job>, oneshot::Receiver<Result<Placement>>) {
    let (reply, rx) = oneshot::channel();
    let job = ClaimJob {
        claim: Some(claim),
        outcome: None,
        reply,
    };
    (Box::new(job), rx)
}

struct OpJob<T, F> {
    op: Option<F>,
    /// Whether the operation runs in a savepoint (see [`Savepoint`]).
    savepoint: Savepoint,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for OpJob<T, F>
where
    T: Send + 'static,
    F: WriteOp<T>,
{
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(op) = self.op.take() else {
                return true;
            };
            if self.savepoint == Savepoint::NotNeeded {
                let result = op(&mut *conn).await;
                // Anything but a refusal may have ended the transaction: the batch fails.
                let usable = result.as_ref().map_or_else(|e| e.is_refusal(), |_| true);
                self.outcome = Some(result);
                return usable;
            }
            if let Err(e) = sqlx::raw_sql("SAVEPOINT francis_op")
                .execute(&mut *conn)
                .await
            {
                self.outcome = Some(Err(e.into()));
                return false;
            }
            let result = op(&mut *conn).await;
            let (usable, result) = match result {
                Ok(value) => match sqlx::raw_sql("RELEASE francis_op")
                    .execute(&mut *conn)
                    .await
                {
                    Ok(_) => (true, Ok(value)),
                    Err(e) => (false, Err(e.into())),
                },
                Err(err) => {
                    let undone = sqlx::raw_sql("ROLLBACK TO francis_op; RELEASE francis_op")
                        .execute(&mut *conn)
                        .await
                        .is_ok();
                    (undone, Err(err))
                }
            };
            self.outcome = Some(result);
            usable
        })
    }

    fn finish(self: Box<Self>, end: BatchEnd<'_>) {
        answer(self.outcome, end, self.reply);
    }
}

/// Whether a job runs in a savepoint of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Savepoint {
    /// It does: if it fails, it alone is undone and the rest of its batch commits.
    Needed,
    /// It writes nothing before a check that can refuse it: a refusal fails it alone; any
    /// other failure fails its whole batch.
    NotNeeded,
}

/// Wraps an operation as a job; the receiver gets its result after the batch ends.
pub(crate) fn job<T, F>(op: F, savepoint: Savepoint) -> (Box<dyn Job>, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: WriteOp<T>,
{
    let (reply, rx) = oneshot::channel();
    let job = OpJob {
        op: Some(op),
        savepoint,
        outcome: None,
        reply,
    };
    (Box::new(job), rx)
}

/// Counters of the writer, for tests and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub batches: AtomicU64,
    pub committed_batches: AtomicU64,
    pub executed: AtomicU64,
}

/// Runs one batch in one `BEGIN IMMEDIATE` transaction and answers every job (after counting
/// the batch, so a caller that got its answer sees the counters include it).
pub(crate) async fn run_batch(
    conn: &mut SqliteConnection,
    jobs: Vec<Box<dyn Job>>,
    counters: &Counters,
) -> bool {
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .executed
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await {
        // Leave the connection out of any transaction for the next batch.
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        let why = format!("cannot begin the write transaction: {e}");
        for j in jobs {
            j.finish(BatchEnd::Failed(&why));
        }
        return false;
    }
    let mut jobs = jobs;
    let mut aborted = false;
    let mut i = 0;
    while i < jobs.len() && !aborted {
        let claims = jobs[i..].iter().take_while(|j| j.is_claim()).count();
        if claims == 0 {
            aborted = !jobs[i].run(&mut *conn).await;
            i += 1;
            continue;
        }
        let group = &mut jobs[i..i + claims];
        let args = group.iter_mut().filter_map(|j| j.take_claim()).collect();
        match claim_many(&mut *conn, args).await {
            Ok(outcomes) => {
                for (j, outcome) in group.iter_mut().zip(outcomes) {
                    j.claimed(outcome);
                }
            }
            Err(e) => {
                // the others of the group are answered "not applied" with the batch
                group[0].claimed(Err(e));
                aborted = true;
            }
        }
        i += claims;
    }
    let failure = if aborted {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        Some("the batch's transaction was aborted by a database error".to_string())
    } else {
        match sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
            Ok(_) => None,
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                Some(format!("commit failed: {e}"))
            }
        }
    };
    if failure.is_none() {
        counters.committed_batches.fetch_add(1, Ordering::Relaxed);
    }
    let end = match &failure {
        None => BatchEnd::Committed,
        Some(why) => BatchEnd::Failed(why),
    };
    for j in jobs {
        j.finish(end);
    }
    failure.is_none()
}

/// The writer task: drains the queue into batches until every sender is gone.
pub(crate) async fn writer_loop(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match pool.acquire().await {
            Ok(mut conn) => {
                run_batch(&mut conn, jobs, &counters).await;
            }
            Err(e) => {
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let why = format!("cannot get the write connection: {e}");
                tracing::warn!(error = %e, "store writer cannot get its connection");
                for j in jobs {
                    j.finish(BatchEnd::Failed(&why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use sqlx::Connection;

    async fn conn() -> SqliteConnection {
        let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE t (k TEXT PRIMARY KEY) STRICT;
             CREATE TABLE child (k TEXT REFERENCES t (k) DEFERRABLE INITIALLY DEFERRED) STRICT;",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c
    }

    fn insert(key: &'static str) -> impl WriteOp<()> {
        move |c: &mut SqliteConnection| -> BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (k) VALUES (?1)")
                    .bind(key)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }
    }

    /// Writes, then refuses: its write must be undone.
    fn insert_then_refuse(key: &'static str) -> impl WriteOp<()> {
        move |c: &mut SqliteConnection| -> BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (k) VALUES (?1)")
                    .bind(key)
                    .execute(&mut *c)
                    .await?;
                Err(StoreError::InvalidArgument("refused".into()).into())
            })
        }
    }

    async fn keys(c: &mut SqliteConnection) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(c)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn refused_op_does_not_affect_its_batch() {
        let mut c = conn().await;
        let (a, ra) = job(insert("a"), Savepoint::Needed);
        let (b, rb) = job(insert_then_refuse("b"), Savepoint::Needed);
        let (dup, rdup) = job(insert("a"), Savepoint::Needed); // constraint error: only this op fails
        let (d, rd) = job(insert("d"), Savepoint::Needed);
        assert!(run_batch(&mut c, vec![a, b, dup, d], &Counters::default()).await);
        assert!(ra.await.unwrap().is_ok());
        assert!(matches!(
            rb.await.unwrap(),
            Err(Error::Store(StoreError::InvalidArgument(_)))
        ));
        assert!(matches!(rdup.await.unwrap(), Err(Error::Sql(_))));
        assert!(rd.await.unwrap().is_ok());
        assert_eq!(keys(&mut c).await, vec!["a", "d"]);
    }

    #[tokio::test]
    async fn failed_commit_applies_nothing_and_tells_everyone() {
        let mut c = conn().await;
        let (a, ra) = job(insert("a"), Savepoint::Needed);
        // a dangling deferred foreign key: every statement succeeds, COMMIT fails
        let (b, rb) = job(
            |c: &mut SqliteConnection| -> BoxFuture<'_, Result<()>> {
                Box::pin(async move {
                    sqlx::query("INSERT INTO child (k) VALUES ('nobody')")
                        .execute(&mut *c)
                        .await?;
                    Ok(())
                })
            },
            Savepoint::Needed,
        );
        assert!(!run_batch(&mut c, vec![a, b], &Counters::default()).await);
        for r in [ra.await.unwrap(), rb.await.unwrap()] {
            match r {
                Err(Error::Store(StoreError::Unavailable(m))) => {
                    assert!(m.contains("commit failed"), "{m}")
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        assert!(keys(&mut c).await.is_empty());
        // the connection is clean for the next batch
        let (e, re) = job(insert("e"), Savepoint::Needed);
        assert!(run_batch(&mut c, vec![e], &Counters::default()).await);
        assert!(re.await.unwrap().is_ok());
        assert_eq!(keys(&mut c).await, vec!["e"]);
    }

    #[tokio::test]
    async fn aborted_transaction_fails_the_whole_batch() {
        let mut c = conn().await;
        let (a, ra) = job(insert("a"), Savepoint::Needed);
        // ends the transaction under the writer's feet, as SQLite does on some I/O errors
        let (b, rb) = job(
            |c: &mut SqliteConnection| -> BoxFuture<'_, Result<()>> {
                Box::pin(async move {
                    sqlx::raw_sql("ROLLBACK").execute(&mut *c).await?;
                    Err(StoreError::Unavailable("disk gone".into()).into())
                })
            },
            Savepoint::Needed,
        );
        let (d, rd) = job(insert("d"), Savepoint::Needed);
        assert!(!run_batch(&mut c, vec![a, b, d], &Counters::default()).await);
        assert!(
            matches!(ra.await.unwrap(), Err(Error::Store(StoreError::Unavailable(m))) if m.contains("not applied"))
        );
        assert!(
            matches!(rb.await.unwrap(), Err(Error::Store(StoreError::Unavailable(m))) if m == "disk gone")
        );
        assert!(
            matches!(rd.await.unwrap(), Err(Error::Store(StoreError::Unavailable(m))) if m.contains("not applied"))
        );
        assert!(keys(&mut c).await.is_empty());
    }

    fn refuse() -> impl WriteOp<()> {
        |_: &mut SqliteConnection| -> BoxFuture<'_, Result<()>> {
            Box::pin(async { Err(StoreError::InvalidArgument("refused".into()).into()) })
        }
    }

    /// Without a savepoint: a refusal fails the job alone (it wrote nothing); any other
    /// failure fails the batch, so nothing of it is applied.
    #[tokio::test]
    async fn a_job_without_savepoint_fails_alone_only_when_refused() {
        let mut c = conn().await;
        let (a, ra) = job(insert("a"), Savepoint::NotNeeded);
        let (b, rb) = job(refuse(), Savepoint::NotNeeded);
        let (d, rd) = job(insert("d"), Savepoint::NotNeeded);
        assert!(run_batch(&mut c, vec![a, b, d], &Counters::default()).await);
        assert!(ra.await.unwrap().is_ok());
        assert!(matches!(
            rb.await.unwrap(),
            Err(Error::Store(StoreError::InvalidArgument(_)))
        ));
        assert!(rd.await.unwrap().is_ok());
        assert_eq!(keys(&mut c).await, vec!["a", "d"]);

        let (e, re) = job(insert("e"), Savepoint::NotNeeded);
        let (dup, rdup) = job(insert("a"), Savepoint::NotNeeded); // constraint error
        let (f, rf) = job(insert("f"), Savepoint::Needed);
        assert!(!run_batch(&mut c, vec![e, dup, f], &Counters::default()).await);
        assert!(matches!(rdup.await.unwrap(), Err(Error::Sql(_))));
        for r in [re.await.unwrap(), rf.await.unwrap()] {
            assert!(
                matches!(&r, Err(Error::Store(StoreError::Unavailable(m))) if m.contains("not applied")),
                "{r:?}"
            );
        }
        assert_eq!(keys(&mut c).await, vec!["a", "d"], "nothing of the batch");
    }

    #[tokio::test]
    async fn writer_loop_batches_everything_queued() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE t (k TEXT PRIMARY KEY) STRICT; CREATE TABLE child (k TEXT);")
            .execute(&pool)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let counters = Arc::new(Counters::default());
        // queue everything before the writer starts: one batch of at most 4, then the rest
        let mut replies = Vec::new();
        for key in ["a", "b", "c", "d", "e", "f"] {
            let (j, r) = job(insert(key), Savepoint::Needed);
            tx.send(j).await.unwrap();
            replies.push(r);
        }
        drop(tx);
        writer_loop(pool.clone(), rx, 4, counters.clone()).await;
        for r in replies {
            assert!(r.await.unwrap().is_ok());
        }
        assert_eq!(counters.batches.load(Ordering::Relaxed), 2);
        assert_eq!(counters.committed_batches.load(Ordering::Relaxed), 2);
        assert_eq!(counters.executed.load(Ordering::Relaxed), 6);
        let mut c = pool.acquire().await.unwrap();
        assert_eq!(keys(&mut c).await, vec!["a", "b", "c", "d", "e", "f"]);
    }
}
