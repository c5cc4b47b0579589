//! Alarm properties as users write them, and the schedule arithmetic of repeating alarms.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::Error;
use crate::interval::{Interval, parse_interval};

/// When an alarm fires, how it repeats and what it carries.
///
/// JSON form (what the example worker accepts):
/// `{"dueTime": "2026-01-01T00:00:00Z", "interval": "60s", "ttl": "2028-10-08T10:00:02Z", "data": {...}}`
/// - `dueTime`: RFC 3339 or Unix milliseconds; when absent, the alarm is due at once.
/// - `interval`: a Go duration (`"60s"`, `"1h30m"`), an ISO-8601 duration (`"PT1M"`) or an integer
///   number of milliseconds; absent or `null` for a one-shot alarm.
/// - `ttl`: RFC 3339 or Unix milliseconds; a repeating alarm does not fire after it.
/// - `data`: any JSON, handed to the actor's `alarm` method.
///
/// Unknown fields, zero or negative intervals, unparseable times and a `ttl` before `dueTime`
/// are refused with [`Error::InvalidArgument`] naming the field and the value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawAlarm")]
pub struct AlarmProperties {
    /// First time the alarm is due.
    pub due_time: DateTime<Utc>,
    /// Repeat interval; `None` for a one-shot alarm.
    pub interval: Option<Interval>,
    /// Last time a repeating alarm may fire.
    pub ttl: Option<DateTime<Utc>>,
    /// Payload passed to the actor's `alarm` method.
    pub data: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAlarm {
    #[serde(default)]
    due_time: Option<Value>,
    #[serde(default)]
    interval: Option<Value>,
    #[serde(default)]
    ttl: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
}

impl TryFrom<RawAlarm> for AlarmProperties {
    type Error = Error;
    fn try_from(raw: RawAlarm) -> Result<Self, Error> {
        let due_time = match raw.due_time {
            None | Some(Value::Null) => Utc::now(),
            Some(v) => parse_time("dueTime", &v)?,
        };
        let interval = match raw.interval {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_interval(&s)?),
            Some(Value::Number(n)) => {
                let ms = n.as_u64().filter(|ms| *ms > 0).ok_or_else(|| {
                    Error::invalid_argument(
                        "interval",
                        format!("{n} is not a positive whole number of milliseconds"),
                    )
                })?;
                Some(Interval::new(std::time::Duration::from_millis(ms)).expect("positive"))
            }
            Some(other) => {
                return Err(Error::invalid_argument(
                    "interval",
                    format!("{other} is neither a duration string nor milliseconds"),
                ));
            }
        };
        let ttl = match raw.ttl {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_time("ttl", &v)?),
        };
        let data = match raw.data {
            None | Some(Value::Null) => None,
            Some(v) => Some(Envelope::encode(&v)?),
        };
        let props = AlarmProperties {
            due_time,
            interval,
            ttl,
            data,
        };
        props.validate()?;
        Ok(props)
    }
}

/// Now plus `delay`, saturating at the latest time chrono represents.
fn from_now(delay: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn parse_time(field: &str, v: &Value) -> Result<DateTime<Utc>, Error> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Error::invalid_argument(
                    field,
                    format!("{s:?} is not an RFC 3339 time like 2026-01-02T03:04:05Z ({e})"),
                )
            }),
        Value::Number(n) => n
            .as_i64()
            .filter(|ms| *ms >= 0)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| {
                Error::invalid_argument(
                    field,
                    format!("{n} is not a valid Unix time in milliseconds"),
                )
            }),
        other => Err(Error::invalid_argument(
            field,
            format!("{other} is neither an RFC 3339 string nor Unix milliseconds"),
        )),
    }
}

impl AlarmProperties {
    /// A one-shot alarm due at `due_time`.
    pub fn once(due_time: DateTime<Utc>) -> Self {
        AlarmProperties {
            due_time,
            interval: None,
            ttl: None,
            data: None,
        }
    }

    /// A one-shot alarm due at `when`: a `std::time::SystemTime` or a `chrono::DateTime<Utc>`
    /// (chrono is re-exported as `francis_core::chrono`).
    pub fn at(when: impl Into<DateTime<Utc>>) -> Self {
        Self::once(when.into())
    }

    /// A one-shot alarm due `delay` from now.
    pub fn after(delay: std::time::Duration) -> Self {
        Self::once(from_now(delay))
    }

    /// An alarm due `interval` from now that repeats every `interval` (until
    /// [`AlarmProperties::until`], if set). A zero interval is refused with
    /// [`Error::InvalidArgument`].
    pub fn every(interval: std::time::Duration) -> Result<Self, Error> {
        let interval = Interval::new(interval)?;
        Ok(AlarmProperties {
            interval: Some(interval),
            ..Self::once(from_now(interval.as_duration()))
        })
    }

    /// The same alarm, first due at `when` instead.
    pub fn starting_at(mut self, when: impl Into<DateTime<Utc>>) -> Self {
        self.due_time = when.into();
        self
    }

    /// The same alarm, repeating no later than `ttl` (checked against the due time when the
    /// alarm is set).
    pub fn until(mut self, ttl: impl Into<DateTime<Utc>>) -> Self {
        self.ttl = Some(ttl.into());
        self
    }

    /// The same alarm, carrying `data` (JSON-encoded) to the actor's `alarm` method.
    pub fn with_data<T: Serialize>(mut self, data: &T) -> Result<Self, Error> {
        self.data = Some(Envelope::encode(data)?);
        Ok(self)
    }

    /// Parses the JSON form; malformed JSON is [`Error::Decode`], a bad field is
    /// [`Error::InvalidArgument`] naming it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let raw: RawAlarm = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                Error::invalid_argument("alarm", e.to_string())
            } else {
                Error::Decode {
                    expected: "alarm properties",
                    message: e.to_string(),
                }
            }
        })?;
        raw.try_into()
    }

    /// Checks the properties hang together: a `ttl` may not come before `dueTime`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(ttl) = self.ttl
            && ttl < self.due_time
        {
            return Err(Error::invalid_argument(
                "ttl",
                format!(
                    "{} is before dueTime {}",
                    ttl.to_rfc3339(),
                    self.due_time.to_rfc3339()
                ),
            ));
        }
        Ok(())
    }
}

impl Serialize for AlarmProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(
            "dueTime",
            &self
                .due_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
        if let Some(i) = self.interval {
            map.serialize_entry("interval", &i.to_string())?;
        }
        if let Some(t) = self.ttl {
            map.serialize_entry(
                "ttl",
                &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )?;
        }
        if let Some(d) = &self.data {
            let v: Value = d.decode().map_err(serde::ser::Error::custom)?;
            map.serialize_entry("data", &v)?;
        }
        map.end()
    }
}

/// The next due time of a repeating alarm that was due at `previous_due` and has just fired at
/// `now`: the first point of the cadence `previous_due + k * interval` (k >= 1) strictly after
/// `now`, so missed occurrences are skipped rather than fired in a burst. `None` once that
/// point is after `ttl`.
pub fn next_due_after(
    previous_due: DateTime<Utc>,
    interval: Interval,
    ttl: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let step = i64::try_from(interval.as_millis_ceil()).ok()?;
    let prev = previous_due.timestamp_millis();
    let elapsed = now.timestamp_millis().saturating_sub(prev);
    let k = if elapsed < 0 { 1 } else { elapsed / step + 1 };
    let next_ms = prev.checked_add(k.checked_mul(step)?)?;
    let next = Utc.timestamp_millis_opt(next_ms).single()?;
    match ttl {
        Some(end) if next > end => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn alarms_read_as_after_every_and_at() {
        let before = Utc::now();
        let a = AlarmProperties::after(Duration::from_secs(30));
        assert!(a.interval.is_none());
        let delay = a.due_time - before;
        assert!(
            delay >= chrono::Duration::seconds(30) && delay < chrono::Duration::seconds(31),
            "{delay:?}"
        );
        let e = AlarmProperties::every(Duration::from_secs(5)).unwrap();
        assert_eq!(e.interval.unwrap().as_duration(), Duration::from_secs(5));
        assert!(e.due_time - before >= chrono::Duration::seconds(5));
        // a plain std time works, with data and an end
        let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = AlarmProperties::at(when)
            .until(t("2030-01-01T00:00:00Z"))
            .with_data(&serde_json::json!({"k": 1}))
            .unwrap();
        assert_eq!(at.due_time.timestamp(), 1_800_000_000);
        assert_eq!(at.ttl, Some(t("2030-01-01T00:00:00Z")));
        assert_eq!(at.data.unwrap().as_bytes(), br#"{"k":1}"#);
        let from = AlarmProperties::every(Duration::from_secs(60))
            .unwrap()
            .starting_at(t("2031-01-01T00:00:00Z"));
        assert_eq!(from.due_time, t("2031-01-01T00:00:00Z"));
        // errors are the crate's own, so `?` converts them
        let zero = AlarmProperties::every(Duration::ZERO).unwrap_err();
        assert_eq!(zero.kind(), ErrorKind::InvalidArgument, "{zero}");
        assert!(Interval::new(Duration::ZERO).is_err());
    }

    #[test]
    fn a_duration_setting_must_name_its_unit() {
        assert_eq!(crate::parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            crate::parse_duration("PT1M").unwrap(),
            Duration::from_secs(60)
        );
        for bare in ["5", "1.5", " 250 "] {
            let e = crate::parse_duration(bare).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains("has no unit"), "{bare}: {e}");
        }
        // the alarm body's documented forms keep working, milliseconds included
        let p = AlarmProperties::from_json(br#"{"interval": 1500}"#).unwrap();
        assert_eq!(
            p.interval.unwrap().as_duration(),
            Duration::from_millis(1500)
        );
        let p = AlarmProperties::from_json(br#"{"interval": "1500"}"#).unwrap();
        assert_eq!(
            p.interval.unwrap().as_duration(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn parses_the_local_cluster_guide_s_body() {
        let body = br#"{"dueTime":"2026-11-27T10:00:00Z","interval":"60s","ttl":"2028-10-08T10:00:02Z","data":{"Hello":"World"}}"#;
        let p = AlarmProperties::from_json(body).unwrap();
        assert_eq!(p.due_time, t("2026-11-27T10:00:00Z"));
        assert_eq!(p.interval.unwrap().as_duration(), Duration::from_secs(60));
        assert_eq!(p.ttl, Some(t("2028-10-08T10:00:02Z")));
        assert_eq!(p.data.unwrap().as_bytes(), br#"{"Hello":"World"}"#);
    }

    #[test]
    fn accepts_other_forms() {
        let p =
            AlarmProperties::from_json(br#"{"dueTime":1700000000000,"interval":1500}"#).unwrap();
        assert_eq!(p.due_time.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(
            p.interval.unwrap().as_duration(),
            Duration::from_millis(1500)
        );
        let p = AlarmProperties::from_json(
            br#"{"dueTime":"2026-01-01T00:00:00+02:00","interval":"PT1M"}"#,
        )
        .unwrap();
        assert_eq!(p.due_time, t("2025-12-31T22:00:00Z"));
        let before = Utc::now();
        let p = AlarmProperties::from_json(br#"{}"#).unwrap();
        assert!(p.due_time >= before && p.interval.is_none() && p.data.is_none());
    }

    #[test]
    fn refusals_name_the_field_and_value() {
        for (body, field, needle) in [
            (r#"{"dueTime":"tomorrow"}"#, "dueTime", "tomorrow"),
            (r#"{"dueTime":-5}"#, "dueTime", "-5"),
            (r#"{"dueTime":true}"#, "dueTime", "true"),
            (r#"{"interval":"0s"}"#, "interval", "greater than zero"),
            (r#"{"interval":"-1m"}"#, "interval", "negative"),
            (r#"{"interval":"soon"}"#, "interval", "soon"),
            (r#"{"interval":0}"#, "interval", "0"),
            (r#"{"interval":1.5}"#, "interval", "1.5"),
            (r#"{"ttl":"nope"}"#, "ttl", "nope"),
            (
                r#"{"dueTime":"2026-01-02T00:00:00Z","ttl":"2026-01-01T00:00:00Z"}"#,
                "ttl",
                "before dueTime",
            ),
            (
                r#"{"dueTme":"2026-01-02T00:00:00Z"}"#,
                "alarm",
                "unknown field",
            ),
        ] {
            let err = AlarmProperties::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{body}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(field) && msg.contains(needle), "{body}: {msg}");
        }
        let err = AlarmProperties::from_json(b"{\"dueTime\":").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[test]
    fn serialize_round_trips() {
        let body = br#"{"dueTime":"2026-11-27T10:00:00.250Z","interval":"1h30m","ttl":1900000000000,"data":[1,2]}"#;
        let p = AlarmProperties::from_json(body).unwrap();
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(AlarmProperties::from_json(&json).unwrap(), p);
    }

    #[test]
    fn next_due_keeps_cadence_and_skips_missed() {
        let i = Interval::new(Duration::from_secs(60)).unwrap();
        let due = t("2026-01-01T00:00:00Z");
        assert_eq!(
            next_due_after(due, i, None, t("2026-01-01T00:00:00.100Z")),
            Some(t("2026-01-01T00:01:00Z"))
        );
        // fired early (fetch-ahead): still the next point of the cadence
        assert_eq!(
            next_due_after(due, i, None, t("2025-12-31T23:59:59Z")),
            Some(t("2026-01-01T00:01:00Z"))
        );
        // host was down for 130 s: one firing now, then back on the cadence
        assert_eq!(
            next_due_after(due, i, None, t("2026-01-01T00:02:10Z")),
            Some(t("2026-01-01T00:03:00Z"))
        );
        // exactly on a point: strictly after
        assert_eq!(
            next_due_after(due, i, None, t("2026-01-01T00:01:00Z")),
            Some(t("2026-01-01T00:02:00Z"))
        );
        // ttl ends it; a point equal to the ttl still fires
        assert_eq!(
            next_due_after(due, i, Some(t("2026-01-01T00:01:00Z")), due),
            Some(t("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            next_due_after(due, i, Some(t("2026-01-01T00:00:59Z")), due),
            None
        );
    }

    proptest! {
        #[test]
        fn next_due_is_on_cadence_and_after_now(
            due_ms in 0i64..4_000_000_000_000,
            step in 1u64..10_000_000,
            lag in -10_000_000i64..100_000_000,
        ) {
            let due = Utc.timestamp_millis_opt(due_ms).unwrap();
            let now = Utc.timestamp_millis_opt(due_ms + lag).unwrap();
            let i = Interval::new(Duration::from_millis(step)).unwrap();
            let next = next_due_after(due, i, None, now).unwrap();
            prop_assert!(next > now);
            prop_assert!(next > due);
            let offset = next.timestamp_millis() - due_ms;
            prop_assert_eq!(offset % step as i64, 0);
            // it is the first such point: one step earlier is not after both
            let earlier = next.timestamp_millis() - step as i64;
            prop_assert!(earlier <= now.timestamp_millis() || earlier <= due_ms);
        }

        #[test]
        fn arbitrary_alarm_bodies_never_panic(s in ".{0,80}") {
            let _ = AlarmProperties::from_json(s.as_bytes());
        }
    }
}
