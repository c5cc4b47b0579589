//! The Raft type configuration and the state machine: the node's own [`SqliteProvider`].

use std::io::Cursor;
use std::sync::Arc;

use francis_store::StoreError;
use francis_store::wire::Command;
use francis_store_sqlite::{ApplyMarker, SqliteProvider};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;

use crate::command::{Answer, WireStoreError};
use crate::log_store::PurgeGate;

openraft::declare_raft_types!(
    /// The replicated store's Raft types: a command is one or several provider operations,
    /// its response their results in order; nodes are known by their peer address.
    pub(crate) TypeConfig:
        D = Command,
        R = Vec<Answer>,
        NodeId = u64,
        Node = BasicNode,
);

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Metadata key of the last applied log id (written with every applied write).
pub(crate) const APPLIED_KEY: &str = "raft.applied";
/// Metadata key of the last applied membership.
pub(crate) const MEMBERSHIP_KEY: &str = "raft.membership";

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// A marker's value.
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    serde_json::to_vec(v).map_err(any)
}

fn decode<T: DeserializeOwned>(bytes: Option<&Vec<u8>>) -> Result<Option<T>, AnyError> {
    bytes
        .map(|b| serde_json::from_slice(b).map_err(any))
        .transpose()
}

/// The state machine: applies commands to the node's provider; snapshots are dumps of it.
#[derive(Debug, Clone)]
pub(crate) struct StateMachine {
    pub(crate) store: Arc<SqliteProvider>,
    /// Told how far the database is durable after each checkpoint, so the log behind it may go.
    purge: PurgeGate,
}

impl StateMachine {
    pub(crate) fn new(store: Arc<SqliteProvider>, purge: PurgeGate) -> Self {
        StateMachine { store, purge }
    }

    async fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let v = self.store.meta(key).await.map_err(any)?;
        decode(v.as_ref())
    }

    async fn build(&self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, meta) = self
            .store
            .export_snapshot()
            .await
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        // The log is applied without a sync; what a snapshot covers is synced now, because
        // openraft may purge the log entries behind it from here on.
        self.store
            .make_durable()
            .await
            .map_err(|e| StorageIOError::read_state_machine(any(e)))?;
        let last_log_id: Option<LogId<NodeId>> =
            decode(meta.get(APPLIED_KEY)).map_err(StorageIOError::read_state_machine)?;
        self.purge.durable(last_log_id);
        let last_membership: StoredMembership<NodeId, BasicNode> = decode(meta.get(MEMBERSHIP_KEY))
            .map_err(StorageIOError::read_state_machine)?
            .unwrap_or_default();
        // Two dumps at the same applied log id hold the same state, so the id names the
        // log id alone.
        let snapshot_id = match last_log_id {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        self.build().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self
            .read_meta(APPLIED_KEY)
            .await
            .map_err(StorageIOError::read_state_machine)?;
        let membership = self
            .read_meta(MEMBERSHIP_KEY)
            .await
            .map_err(StorageIOError::read_state_machine)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    /// Applies every entry handed over in ONE transaction of the node's store: the
    /// operations (one or a batch per entry) each in its own savepoint (a refused one is undone alone and answered with
    /// its refusal), the last applied log id and membership written in the same transaction.
    /// A crash leaves all of it or none of it applied; the node then resumes from the marker.
    /// An operation that fails for another reason (this node's database) stops the node: it
    /// may not be skipped here while the other nodes apply it.
    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Answer>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // How many operations each entry carries: its answer holds as many results.
        let mut counts = Vec::new();
        let mut ops = Vec::new();
        let mut last: Option<LogId<NodeId>> = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => counts.push(0),
                EntryPayload::Normal(command) => {
                    counts.push(command.len());
                    ops.extend(command.into_ops());
                }
                EntryPayload::Membership(m) => {
                    counts.push(0);
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                }
            }
        }
        let Some(log_id) = last else {
            return Ok(Vec::new());
        };
        let mut markers = vec![ApplyMarker {
            key: APPLIED_KEY.to_string(),
            value: encode(&Some(log_id)).map_err(|e| StorageIOError::apply(log_id, e))?,
        }];
        if let Some(m) = &membership {
            markers.push(ApplyMarker {
                key: MEMBERSHIP_KEY.to_string(),
                value: encode(m).map_err(|e| StorageIOError::apply(log_id, e))?,
            });
        }
        let results = self.store.apply_batch(ops, markers).await.map_err(|e| {
            tracing::error!(error = %e, %log_id, "cannot apply log entries; stopping");
            StorageIOError::apply(log_id, any(e))
        })?;
        let mut results = results.into_iter();
        let answers = counts
            .into_iter()
            .map(|n| {
                (0..n)
                    .map(|_| match results.next() {
                        Some(Ok(reply)) => Ok(reply),
                        Some(Err(e)) => Err(WireStoreError::from(&e)),
                        None => Err(WireStoreError::Corrupt("an entry got no result".into())),
                    })
                    .collect()
            })
            .collect();
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        self.store
            .import_snapshot(&bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        // The dump carries the applied log id and membership of its source; make sure they
        // are exactly the snapshot's.
        let applied = serde_json::to_vec(&meta.last_log_id)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        let membership = serde_json::to_vec(&meta.last_membership)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        for (key, value) in [(APPLIED_KEY, applied), (MEMBERSHIP_KEY, membership)] {
            self.store
                .set_meta(key, &value)
                .await
                .map_err(|e: StoreError| {
                    StorageIOError::write_snapshot(Some(meta.signature()), any(e))
                })?;
        }
        // The log behind the snapshot may be purged from here on: sync what it put in place.
        self.store
            .make_durable()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        self.purge.durable(meta.last_log_id);
        tracing::info!(snapshot = %meta.snapshot_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let (applied, _) = self.applied_state().await?;
        if applied.is_none() {
            return Ok(None);
        }
        // Always the current state: a snapshot is a dump of the node's own tables.
        Ok(Some(self.build().await?))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::log_store::LogStore;
    use francis_store::{Op, Reply};

    /// A log store and a state machine on fresh files in a temporary directory.
    struct Files;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Files {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temporary directory");
            let log = LogStore::open(&dir.path().join("data.db-raft"))
                .await
                .expect("open the log");
            let store = SqliteProvider::open(dir.path().join("data.db"), Default::default())
                .await
                .expect("open the store");
            // The suite checks the log's own contract (a purge purges): the database counts
            // as durable throughout, so the gate never holds a purge back here. The gate's
            // policy is tested in `policy`.
            let gate = log.purge_gate();
            gate.durable(Some(LogId::new(
                openraft::CommittedLeaderId::new(u64::MAX, 0),
                u64::MAX,
            )));
            Ok((dir, log, StateMachine::new(Arc::new(store), gate)))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Files).expect("the storage suite passes");
    }

    fn entry(index: u64, op: Op) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Command::One(op)),
        }
    }

    fn set(id: &str, data: &[u8]) -> Op {
        Op::SetState {
            actor: francis_core::ActorRef::new("t", id).unwrap(),
            data: data.to_vec(),
            expires_at: None,
            fence: francis_store::Fence::Unfenced,
        }
    }

    fn alarm(id: &str) -> Op {
        Op::SetAlarm {
            actor: francis_core::ActorRef::new("t", id).unwrap(),
            name: "tick".into(),
            properties: francis_core::AlarmProperties {
                due_time: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
                interval: None,
                ttl: None,
                data: None,
            },
            fence: francis_store::Fence::Unfenced,
        }
    }

    async fn state(sm: &StateMachine, id: &str) -> Option<Vec<u8>> {
        let now = chrono::DateTime::from_timestamp_millis(0).unwrap();
        francis_store::Provider::get_state(
            &*sm.store,
            &francis_core::ActorRef::new("t", id).unwrap(),
            now,
        )
        .await
        .unwrap()
        .map(|s| s.data)
    }

    /// A batch whose middle command fails in the database (not a refusal) applies nothing, not
    /// even the commands before it, and keeps the old marker; after a restart without the
    /// fault the node resumes from that marker and applies the whole batch.
    #[tokio::test]
    async fn a_batch_that_fails_midway_applies_nothing_and_resumes_from_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.db");
        let open = || SqliteProvider::open(&path, Default::default());
        let mut sm = StateMachine::new(Arc::new(open().await.unwrap()), PurgeGate::default());
        let answers = sm.apply(vec![entry(1, set("a", b"1"))]).await.unwrap();
        assert_eq!(answers, vec![vec![Ok(Reply::Unit)]]);

        // The fault: every alarm write fails, as a full disk or an I/O error would.
        let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite:{}",
            path.display()
        ))
        .await
        .unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER fault BEFORE INSERT ON alarms BEGIN SELECT RAISE(ABORT, 'disk gone'); END",
        )
        .execute(&mut raw)
        .await
        .unwrap();
        let batch = || {
            vec![
                entry(2, set("b", b"2")),
                entry(3, alarm("b")),
                entry(4, set("c", b"4")),
            ]
        };
        assert!(sm.apply(batch()).await.is_err(), "the node stops");
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1), "the marker did not move");
        assert_eq!(
            state(&sm, "b").await,
            None,
            "nothing of the batch was applied"
        );
        assert_eq!(state(&sm, "c").await, None);

        // Restart without the fault: resume from the marker.
        sqlx::raw_sql("DROP TRIGGER fault")
            .execute(&mut raw)
            .await
            .unwrap();
        drop(raw);
        drop(sm);
        let mut sm = StateMachine::new(Arc::new(open().await.unwrap()), PurgeGate::default());
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
        let answers = sm.apply(batch()).await.unwrap();
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().flatten().all(Result::is_ok), "{answers:?}");
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(4));
        assert_eq!(state(&sm, "a").await, Some(b"1".to_vec()));
        assert_eq!(state(&sm, "b").await, Some(b"2".to_vec()));
        assert_eq!(state(&sm, "c").await, Some(b"4".to_vec()));
    }

    /// A refused operation is answered with its refusal in place, inside its entry's batch
    /// too; the rest of the entries, the rest of that batch and the marker are applied.
    #[tokio::test]
    async fn a_refused_command_is_answered_alone_and_the_batch_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::new(
            Arc::new(
                SqliteProvider::open(dir.path().join("data.db"), Default::default())
                    .await
                    .unwrap(),
            ),
            PurgeGate::default(),
        );
        let fenced = Op::SetState {
            actor: francis_core::ActorRef::new("t", "x").unwrap(),
            data: b"no".to_vec(),
            expires_at: None,
            fence: francis_store::Fence::Epoch(9),
        };
        let mut batch = entry(4, set("c", b"4"));
        batch.payload = EntryPayload::Normal(Command::of(vec![
            set("c", b"4"),
            fenced.clone(),
            set("d", b"4"),
        ]));
        let answers = sm
            .apply(vec![
                entry(1, set("a", b"1")),
                entry(2, fenced),
                entry(3, set("b", b"3")),
                batch,
            ])
            .await
            .unwrap();
        assert_eq!(answers.len(), 4, "{answers:?}");
        assert!(matches!(answers[0][..], [Ok(_)]), "{answers:?}");
        assert!(
            matches!(answers[1][..], [Err(WireStoreError::Fenced { .. })]),
            "{answers:?}"
        );
        assert!(matches!(answers[2][..], [Ok(_)]), "{answers:?}");
        assert!(
            matches!(
                answers[3][..],
                [Ok(_), Err(WireStoreError::Fenced { .. }), Ok(_)]
            ),
            "{answers:?}"
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(4));
        assert_eq!(state(&sm, "x").await, None);
        assert_eq!(state(&sm, "b").await, Some(b"3".to_vec()));
        assert_eq!(state(&sm, "c").await, Some(b"4".to_vec()));
        assert_eq!(state(&sm, "d").await, Some(b"4".to_vec()));
    }
}
