//! The row codec every SQL backend shares: how the store's values become column values and
//! back. Driver-free (plain integers, strings and bytes), so each backend binds and reads
//! them with its own driver.
//!
//! - Times are Unix milliseconds; alarm intervals exact nanoseconds; epochs and capacities
//!   64-bit signed integers.
//! - A value read back that cannot be what the store wrote is [`StoreError::Corrupt`]; a value
//!   given that the columns cannot hold is [`StoreError::InvalidArgument`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties, Envelope, Interval};

use crate::error::StoreError;
use crate::policy::millis;
use crate::provider::{
    ActorTypeSpec, AlarmLease, HostRecord, StateListItem, StateListPage, StoreResult,
};

/// A stored time (`what` names it in the error).
pub fn time_from_ms(what: &str, ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} {ms} ms is not a valid time")))
}

/// The leases among `leases` (in their order) whose key a statement returned as rows of
/// `(actor_type, actor_id, name, lease_id)`.
pub fn leases_in_rows<'a>(
    leases: impl IntoIterator<Item = &'a AlarmLease>,
    rows: Vec<(String, String, String, String)>,
) -> Vec<AlarmLease> {
    let rows: std::collections::HashSet<_> = rows.into_iter().collect();
    leases
        .into_iter()
        .filter(|l| {
            rows.contains(&(
                l.actor.actor_type().to_owned(),
                l.actor.actor_id().to_owned(),
                l.name.clone(),
                l.lease_id.clone(),
            ))
        })
        .cloned()
        .collect()
}

/// A stored actor reference.
pub fn actor_from_row(actor_type: String, actor_id: String) -> StoreResult<ActorRef> {
    ActorRef::new(actor_type, actor_id)
        .map_err(|e| StoreError::Corrupt(format!("stored actor reference is invalid: {e}")))
}

/// An epoch as a column value; `None` for one no column can hold (so no placement has it).
pub fn epoch_to_sql(epoch: u64) -> Option<i64> {
    i64::try_from(epoch).ok()
}

/// A stored epoch.
pub fn epoch_from_sql(epoch: i64) -> StoreResult<u64> {
    u64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("negative epoch {epoch}")))
}

/// A repeat interval as exact nanoseconds.
pub fn interval_to_ns(interval: Interval) -> StoreResult<i64> {
    i64::try_from(interval.as_duration().as_nanos()).map_err(|_| {
        StoreError::InvalidArgument(format!(
            "alarm interval {interval} is longer than the store can hold (about 292 years)"
        ))
    })
}

/// A stored repeat interval.
pub fn interval_from_ns(ns: i64) -> StoreResult<Interval> {
    let ns = u64::try_from(ns)
        .map_err(|_| StoreError::Corrupt(format!("negative alarm interval {ns} ns")))?;
    Interval::new(Duration::from_nanos(ns))
        .map_err(|e| StoreError::Corrupt(format!("alarm interval {ns} ns: {e}")))
}

/// Stored alarm data.
pub fn envelope_from_row(bytes: Vec<u8>) -> StoreResult<Envelope> {
    Envelope::from_json(bytes)
        .map_err(|e| StoreError::Corrupt(format!("stored alarm data is not JSON: {e}")))
}

/// A host's capacity for a type as a column value.
pub fn capacity_to_sql(max_active: Option<u32>) -> Option<i64> {
    max_active.map(i64::from)
}

/// A stored capacity.
pub fn capacity_from_sql(v: Option<i64>) -> StoreResult<Option<u32>> {
    v.map(|n| {
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("host capacity {n} out of range")))
    })
    .transpose()
}

/// A `COUNT(*)`.
pub fn count_from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// One row of hosts joined with their types, ordered by host id then type order:
/// `(host_id, address, last_heartbeat_ms, actor_type, max_active)`; a host serving no type has
/// one row with `None` for both.
pub type HostRow = (String, String, i64, Option<String>, Option<i64>);

/// The hosts of such rows, each with its types in order.
pub fn hosts_from_rows(rows: Vec<HostRow>) -> StoreResult<Vec<HostRecord>> {
    let mut hosts: Vec<HostRecord> = Vec::new();
    for (host_id, address, heartbeat_ms, actor_type, max_active) in rows {
        if hosts.last().is_none_or(|h| h.host_id != host_id) {
            hosts.push(HostRecord {
                host_id,
                address,
                actor_types: Vec::new(),
                last_heartbeat: time_from_ms("heartbeat", heartbeat_ms)?,
            });
        }
        if let (Some(actor_type), Some(host)) = (actor_type, hosts.last_mut()) {
            host.actor_types.push(ActorTypeSpec {
                actor_type,
                max_active: capacity_from_sql(max_active)?,
            });
        }
    }
    Ok(hosts)
}

/// A page of a state listing from up to `limit + 1` rows `(actor_id, data)` in id order: the
/// extra row only says another page follows.
pub fn page_from_rows(rows: Vec<(String, Option<Vec<u8>>)>, limit: u32) -> StateListPage {
    let more = rows.len() > limit as usize;
    let items: Vec<StateListItem> = rows
        .into_iter()
        .take(limit as usize)
        .map(|(actor_id, data)| StateListItem { actor_id, data })
        .collect();
    let next = if more {
        items.last().map(|i| i.actor_id.clone())
    } else {
        None
    };
    StateListPage { items, next }
}

/// An alarm's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRow {
    /// Due time, Unix milliseconds.
    pub due_ms: i64,
    /// Repeat interval, nanoseconds.
    pub interval_ns: Option<i64>,
    /// Last time a repeating alarm may fire, Unix milliseconds.
    pub ttl_ms: Option<i64>,
    /// The payload (JSON).
    pub data: Option<Vec<u8>>,
}

impl AlarmRow {
    /// Checks and converts properties for storage.
    pub fn from_properties(p: &AlarmProperties) -> StoreResult<Self> {
        p.validate()
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        Ok(AlarmRow {
            due_ms: millis(p.due_time),
            interval_ns: p.interval.map(interval_to_ns).transpose()?,
            ttl_ms: p.ttl.map(millis),
            data: p.data.as_ref().map(|d| d.as_bytes().to_vec()),
        })
    }

    /// The properties stored in the row.
    pub fn into_properties(self) -> StoreResult<AlarmProperties> {
        Ok(AlarmProperties {
            due_time: time_from_ms("alarm due time", self.due_ms)?,
            interval: self.interval_ns.map(interval_from_ns).transpose()?,
            ttl: self
                .ttl_ms
                .map(|ms| time_from_ms("alarm ttl", ms))
                .transpose()?,
            data: self.data.map(envelope_from_row).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_rows_are_corrupt() {
        let p = AlarmProperties {
            due_time: time_from_ms("t", 1_700_000_000_123).unwrap(),
            interval: Some(Interval::new(Duration::from_nanos(1_000_000_001)).unwrap()),
            ttl: None,
            data: Some(Envelope::from_json(&b"[1]"[..]).unwrap()),
        };
        let row = AlarmRow::from_properties(&p).unwrap();
        assert_eq!(row.clone().into_properties().unwrap(), p);
        assert_eq!(epoch_from_sql(epoch_to_sql(42).unwrap()).unwrap(), 42);
        assert_eq!(epoch_to_sql(u64::MAX), None);
        assert!(matches!(epoch_from_sql(-1), Err(StoreError::Corrupt(_))));
        assert!(matches!(interval_from_ns(-5), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            capacity_from_sql(Some(-1)),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            envelope_from_row(b"{".to_vec()),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(count_from_sql(-3), 0);
        let mut bad = row;
        bad.due_ms = i64::MAX;
        assert!(matches!(bad.into_properties(), Err(StoreError::Corrupt(_))));
    }
}
