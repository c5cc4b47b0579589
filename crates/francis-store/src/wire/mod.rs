//! The store's wire form: how [`Op`](crate::Op)s and [`Reply`](crate::Reply)s are written
//! when they leave the process (the replicated log, a request forwarded to another node).
//!
//! - It is JSON. Documents (state, alarm data) are embedded as the JSON they are ([`bytes`]);
//!   alarm intervals are exact nanoseconds; times are RFC 3339.
//! - [`Versioned`] wraps a value with its format version (`{"v1": ...}`), so a later format
//!   can be told apart; a value written before versions existed (the bare form) still reads
//!   as version 1.
//! - [`Command`] is what one replicated log entry carries: one operation in its version 1
//!   form, or several in order as `{"v2": [...]}` (format 2: a batch).
//! - The adapters here (`alarm`, `state`, `page`, `leased`) give the types whose public serde
//!   is not exact (or not compact) their wire form.

pub(crate) mod bytes;

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{AlarmProperties, Envelope, Interval};
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::StoreError;
use crate::op::Op;
use crate::provider::{AlarmLease, LeasedAlarm, StateListItem, StateListPage, StateRecord};

/// The newest wire format version this build writes: 2, a batch of operations
/// ([`Command::Batch`]); a single value is still written in format 1.
pub const WIRE_VERSION: u32 = 2;
const V1_KEY: &str = "v1";
const V2_KEY: &str = "v2";

/// A value in its versioned wire form: `{"v1": <value>}`.
///
/// Reading also accepts the bare value (the form written before versions existed), which is
/// version 1. `T` must serialize as a JSON object or an externally tagged enum.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T>(pub T);

impl<T: Serialize> Serialize for Versioned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(V1_KEY, &self.0)?;
        map.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Versioned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(VersionedVisitor(PhantomData))
    }
}

struct VersionedVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for VersionedVisitor<T> {
    type Value = Versioned<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a versioned store value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let key = first_key(&mut map)?;
        version_1(key, map, V1_KEY).map(Versioned)
    }
}

fn first_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    map.next_key::<String>()?
        .ok_or_else(|| de::Error::custom("an empty object is not a store value"))
}

/// Reads the rest of a version 1 value whose first key was `key`: `{"v1": value}` or the
/// bare value. Any other version key is refused as newer than `newest` (what the caller
/// reads).
fn version_1<'de, T: DeserializeOwned, A: MapAccess<'de>>(
    key: String,
    map: A,
    newest: &str,
) -> Result<T, A::Error> {
    if key == V1_KEY {
        return only_value(map);
    }
    if key.starts_with('v') && key[1..].bytes().all(|b| b.is_ascii_digit()) && key.len() > 1 {
        return Err(de::Error::custom(format!(
            "store value of format {key} is newer than this build reads ({newest}); upgrade Francis"
        )));
    }
    // The bare form: the key just read is the first key of the value itself.
    let replay = Replay {
        first: Some(key),
        rest: map,
    };
    T::deserialize(de::value::MapAccessDeserializer::new(replay))
}

/// The value of a version key, which must be the object's only key.
fn only_value<'de, T: DeserializeOwned, A: MapAccess<'de>>(mut map: A) -> Result<T, A::Error> {
    let value = map.next_value::<T>()?;
    if let Some(extra) = map.next_key::<String>()? {
        return Err(de::Error::custom(format!(
            "unexpected key {extra:?} beside the version"
        )));
    }
    Ok(value)
}

/// What one replicated log entry carries: operations applied in order, in one transaction.
///
/// `One` is written as `{"v1": op}`, exactly the [`Versioned`] form (entries written before
/// batches existed read as `One`); `Batch` as `{"v2": [op, ...]}`. A build that reads only
/// format 1 refuses a batch with an error that says to upgrade, rather than misreading it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// One operation.
    One(Op),
    /// Several operations, applied in this order.
    Batch(Vec<Op>),
}

impl Command {
    /// The command for `ops`: `One` for a single operation, `Batch` otherwise.
    pub fn of(mut ops: Vec<Op>) -> Command {
        if ops.len() == 1 {
            Command::One(ops.remove(0))
        } else {
            Command::Batch(ops)
        }
    }

    /// How many operations it carries.
    pub fn len(&self) -> usize {
        match self {
            Command::One(_) => 1,
            Command::Batch(ops) => ops.len(),
        }
    }

    /// Whether it carries no operation (an empty batch).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its operations, in order.
    pub fn into_ops(self) -> Vec<Op> {
        match self {
            Command::One(op) => vec![op],
            Command::Batch(ops) => ops,
        }
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Command::One(op) => Versioned(op).serialize(s),
            Command::Batch(ops) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(V2_KEY, ops)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a replicated store command")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let key = first_key(&mut map)?;
        if key == V2_KEY {
            return only_value(map).map(Command::Batch);
        }
        version_1(key, map, V2_KEY).map(Command::One)
    }
}

/// A map whose first key was already read: gives it back, then the rest.
struct Replay<A> {
    first: Option<String>,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => self.rest.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.rest.next_value_seed(seed)
    }
}

/// An alarm's properties on the wire: exact interval, data embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireAlarm {
    due_time: DateTime<Utc>,
    interval: Option<Duration>,
    ttl: Option<DateTime<Utc>>,
    #[serde(with = "bytes::option")]
    data: Option<Vec<u8>>,
}

impl From<&AlarmProperties> for WireAlarm {
    fn from(p: &AlarmProperties) -> Self {
        WireAlarm {
            due_time: p.due_time,
            interval: p.interval.map(Interval::as_duration),
            ttl: p.ttl,
            data: p.data.as_ref().map(|d| d.as_bytes().to_vec()),
        }
    }
}

impl WireAlarm {
    fn into_properties(self) -> Result<AlarmProperties, StoreError> {
        let interval = self
            .interval
            .map(Interval::new)
            .transpose()
            .map_err(|e| StoreError::InvalidArgument(format!("alarm interval: {e}")))?;
        let data = self
            .data
            .map(Envelope::from_json)
            .transpose()
            .map_err(|e| StoreError::InvalidArgument(format!("alarm data: {e}")))?;
        Ok(AlarmProperties {
            due_time: self.due_time,
            interval,
            ttl: self.ttl,
            data,
        })
    }
}

/// [`AlarmProperties`] in their wire form (for `#[serde(with)]`).
pub(crate) mod alarm {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(p: &AlarmProperties, s: S) -> Result<S::Ok, S::Error> {
        WireAlarm::from(p).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<AlarmProperties, D::Error> {
        WireAlarm::deserialize(d)?
            .into_properties()
            .map_err(de::Error::custom)
    }
}

/// `Option<AlarmProperties>` in its wire form.
pub(crate) mod alarm_option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        p: &Option<AlarmProperties>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        p.as_ref().map(WireAlarm::from).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<AlarmProperties>, D::Error> {
        Option::<WireAlarm>::deserialize(d)?
            .map(WireAlarm::into_properties)
            .transpose()
            .map_err(de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct WireState {
    #[serde(with = "bytes")]
    data: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

/// `Option<StateRecord>` in its wire form.
pub(crate) mod state {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        r: &Option<StateRecord>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        r.as_ref()
            .map(|r| WireState {
                data: r.data.clone(),
                expires_at: r.expires_at,
            })
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<StateRecord>, D::Error> {
        Ok(Option::<WireState>::deserialize(d)?.map(|w| StateRecord {
            data: w.data,
            expires_at: w.expires_at,
        }))
    }
}

#[derive(Serialize, Deserialize)]
struct WirePage {
    items: Vec<WireListItem>,
    next: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireListItem {
    actor_id: String,
    #[serde(with = "bytes::option")]
    data: Option<Vec<u8>>,
}

/// [`StateListPage`] in its wire form.
pub(crate) mod page {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(p: &StateListPage, s: S) -> Result<S::Ok, S::Error> {
        WirePage {
            items: p
                .items
                .iter()
                .map(|i| WireListItem {
                    actor_id: i.actor_id.clone(),
                    data: i.data.clone(),
                })
                .collect(),
            next: p.next.clone(),
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StateListPage, D::Error> {
        let w = WirePage::deserialize(d)?;
        Ok(StateListPage {
            items: w
                .items
                .into_iter()
                .map(|i| StateListItem {
                    actor_id: i.actor_id,
                    data: i.data,
                })
                .collect(),
            next: w.next,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct WireLeased {
    lease: AlarmLease,
    properties: WireAlarm,
    attempts: u32,
    lease_expires_at: DateTime<Utc>,
}

/// `Vec<LeasedAlarm>` in its wire form.
pub(crate) mod leased {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(l: &[LeasedAlarm], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(l.iter().map(|l| WireLeased {
            lease: l.lease.clone(),
            properties: WireAlarm::from(&l.properties),
            attempts: l.attempts,
            lease_expires_at: l.lease_expires_at,
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<LeasedAlarm>, D::Error> {
        Vec::<WireLeased>::deserialize(d)?
            .into_iter()
            .map(|w| {
                Ok(LeasedAlarm {
                    lease: w.lease,
                    properties: w.properties.into_properties().map_err(de::Error::custom)?,
                    attempts: w.attempts,
                    lease_expires_at: w.lease_expires_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use francis_core::ActorRef;

    use super::*;
    use crate::op::{Op, Reply};
    use crate::provider::Fence;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn alarm() -> AlarmProperties {
        AlarmProperties {
            due_time: t(5),
            interval: Some(Interval::new(Duration::from_nanos(1_500_000_123)).unwrap()),
            ttl: Some(t(99)),
            data: Some(Envelope::from_json(&b"{\"k\":[1,2]}"[..]).unwrap()),
        }
    }

    #[test]
    fn alarms_round_trip_exactly() {
        let op = Op::SetAlarm {
            actor: ActorRef::new("t", "a").unwrap(),
            name: "tick".into(),
            properties: alarm(),
            fence: Fence::Epoch(3),
        };
        let json = serde_json::to_vec(&Versioned(op.clone())).unwrap();
        let back: Versioned<Op> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.0, op);
        let reply = Reply::Alarm(Some(alarm()));
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(serde_json::from_slice::<Reply>(&json).unwrap(), reply);
    }

    #[test]
    fn the_wire_form_of_an_op_is_pinned() {
        // The replicated log holds this form: a change here must come with a new version.
        let op = Op::SetState {
            actor: ActorRef::new("counter", "c1").unwrap(),
            data: b"{\"n\":1}".to_vec(),
            expires_at: None,
            fence: Fence::Epoch(7),
        };
        let json = serde_json::to_string(&Versioned(op)).unwrap();
        assert_eq!(
            json,
            r#"{"v1":{"SetState":{"actor":{"actor_type":"counter","actor_id":"c1"},"data":{"json":{"n":1}},"expires_at":null,"fence":{"Epoch":7}}}}"#
        );
    }

    #[test]
    fn the_form_written_before_versions_still_reads() {
        let bare = r#"{"Heartbeat":{"host_id":"h1","now":"2023-11-14T22:13:20Z"}}"#;
        let back: Versioned<Op> = serde_json::from_str(bare).unwrap();
        assert_eq!(
            back.0,
            Op::Heartbeat {
                host_id: "h1".into(),
                now: t(0)
            }
        );
        let newer = r#"{"v2":{"Heartbeat":{}}}"#;
        let err = serde_json::from_str::<Versioned<Op>>(newer).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        assert!(serde_json::from_str::<Versioned<Op>>("{}").is_err());
        assert!(serde_json::from_str::<Versioned<Op>>(r#"{"Nope":{}}"#).is_err());
    }

    /// One operation of every kind, as the log holds them.
    fn one_of_each() -> Vec<Op> {
        use crate::provider::{
            ActorTypeSpec, AlarmCompletion, AlarmLease, AlarmOutcome, HostRegistration,
            LeaseRequest,
        };
        let actor = ActorRef::new("counter", "c1").unwrap();
        let lease = AlarmLease {
            actor: actor.clone(),
            name: "tick".into(),
            lease_id: "l1".into(),
        };
        let ttl = Duration::from_millis(1500);
        vec![
            Op::RegisterHost {
                registration: HostRegistration {
                    host_id: "h1".into(),
                    address: "10.0.0.1:7000".into(),
                    actor_types: vec![ActorTypeSpec {
                        actor_type: "counter".into(),
                        max_active: Some(3),
                    }],
                },
                now: t(0),
                ttl,
            },
            Op::Heartbeat {
                host_id: "h1".into(),
                now: t(1),
            },
            Op::UnregisterHost {
                host_id: "h1".into(),
            },
            Op::LiveHosts { now: t(2), ttl },
            Op::Claim {
                actor: actor.clone(),
                candidate: "h1".into(),
                now: t(3),
                ttl,
            },
            Op::Lookup {
                actor: actor.clone(),
                now: t(4),
                ttl,
            },
            Op::Release {
                actor: actor.clone(),
                host_id: "h1".into(),
                epoch: 7,
            },
            Op::CountPlacements {
                host_id: "h1".into(),
                actor_type: "counter".into(),
            },
            Op::GetState {
                actor: actor.clone(),
                now: t(5),
            },
            Op::SetState {
                actor: actor.clone(),
                data: b"{\"n\":1}".to_vec(),
                expires_at: Some(t(6)),
                fence: Fence::Epoch(7),
            },
            Op::DeleteState {
                actor: actor.clone(),
                fence: Fence::Unfenced,
            },
            Op::ListStates {
                actor_type: "counter".into(),
                after: Some("c0".into()),
                limit: 10,
                include_data: true,
                now: t(7),
            },
            Op::DeleteExpiredState { now: t(8) },
            Op::SetAlarm {
                actor: actor.clone(),
                name: "tick".into(),
                properties: alarm(),
                fence: Fence::Epoch(7),
            },
            Op::GetAlarm {
                actor: actor.clone(),
                name: "tick".into(),
            },
            Op::DeleteAlarm {
                actor: actor.clone(),
                name: "tick".into(),
                fence: Fence::Epoch(7),
            },
            Op::LeaseAlarms {
                request: LeaseRequest {
                    host_id: "h1".into(),
                    actor_types: vec!["counter".into()],
                    horizon: t(9),
                    limit: 100,
                    lease_duration: Duration::from_secs(30),
                    lease_id: "l1".into(),
                },
                now: t(9),
            },
            Op::RenewAlarmLeases {
                host_id: "h1".into(),
                leases: vec![lease.clone()],
                now: t(10),
                lease_duration: Duration::from_secs(30),
            },
            Op::CompleteAlarm {
                lease: lease.clone(),
                outcome: AlarmOutcome::Reschedule {
                    due: t(11),
                    attempts: 2,
                },
            },
            Op::ReleaseAlarm {
                lease: lease.clone(),
            },
            Op::CompleteAlarms {
                completions: vec![
                    AlarmCompletion {
                        lease: lease.clone(),
                        outcome: AlarmOutcome::Delete,
                    },
                    AlarmCompletion {
                        lease: AlarmLease {
                            name: "tock".into(),
                            ..lease.clone()
                        },
                        outcome: AlarmOutcome::Reschedule {
                            due: t(12),
                            attempts: 0,
                        },
                    },
                ],
            },
            Op::HeldAlarmLeases {
                host_id: "h1".into(),
                leases: vec![lease],
                now: t(13),
            },
        ]
    }

    /// The log's format, pinned for every operation (`v1.jsonl`, one line per operation): a
    /// change to `Op` or to a type inside it that changes these lines needs a new wire version
    /// (and a reader for the old one), not an edit of the file. A new operation adds its line.
    #[test]
    fn every_operation_keeps_its_version_1_form() {
        let expected: Vec<&str> = include_str!("v1.jsonl").lines().collect();
        let ops = one_of_each();
        let actual: Vec<String> = ops
            .iter()
            .map(|op| serde_json::to_string(&Versioned(op)).unwrap())
            .collect();
        assert_eq!(
            actual.len(),
            expected.len(),
            "one line per operation; now:\n{}",
            actual.join("\n")
        );
        for (op, (line, want)) in ops.iter().zip(actual.iter().zip(&expected)) {
            assert_eq!(line, want, "{} changed its wire form", op.name());
            let back: Versioned<Op> = serde_json::from_str(want).unwrap();
            assert_eq!(&back.0, op, "{} reads back", op.name());
        }
    }

    /// A log entry's command: one operation keeps exactly its version 1 form (so entries
    /// written before batches existed read back), several are pinned in `v2.jsonl`.
    #[test]
    fn commands_keep_their_forms_and_read_every_earlier_one() {
        let ops = one_of_each();
        for op in &ops {
            let one = Command::of(vec![op.clone()]);
            let json = serde_json::to_string(&one).unwrap();
            assert_eq!(json, serde_json::to_string(&Versioned(op)).unwrap());
            assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), one);
        }
        let bare = r#"{"Heartbeat":{"host_id":"h1","now":"2023-11-14T22:13:20Z"}}"#;
        assert_eq!(
            serde_json::from_str::<Command>(bare).unwrap(),
            Command::One(Op::Heartbeat {
                host_id: "h1".into(),
                now: t(0)
            })
        );

        let batch = Command::of(ops[..3].to_vec());
        assert_eq!(batch.len(), 3);
        let line = serde_json::to_string(&batch).unwrap();
        assert_eq!(
            line,
            include_str!("v2.jsonl").trim_end(),
            "the batch form changed"
        );
        let back: Command = serde_json::from_str(&line).unwrap();
        assert_eq!(back.into_ops(), ops[..3].to_vec());

        // A reader of single operations refuses a batch, saying why.
        let err = serde_json::from_str::<Versioned<Op>>(&line).unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
        // A format newer than batches is refused the same way; junk is refused.
        let err = serde_json::from_str::<Command>(r#"{"v3":[]}"#).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        assert!(serde_json::from_str::<Command>(r#"{"v2":[],"v1":{}}"#).is_err());
        assert!(serde_json::from_str::<Command>("{}").is_err());
        assert!(serde_json::from_str::<Command>(r#"{"v2":{}}"#).is_err());
    }
}
