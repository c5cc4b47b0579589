//! Actor references and the naming rules shared by types, ids, methods and alarm names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Names (actor types, ids, methods, alarm names) are at most this many bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Actor types and methods starting with this prefix belong to the framework.
pub const RESERVED_PREFIX: &str = "francis.builtin.";

/// Checks a name against the rules every name follows: non-empty, at most [`MAX_NAME_LEN`]
/// bytes, no `/` and no control characters. `what` names the field in the error.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), Error> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "must be at most 256 bytes"
    } else if value.contains('/') {
        "must not contain '/'"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidReference {
        what,
        value: truncate_for_message(value),
        reason,
    })
}

/// Checks a method name: the name rules, and not in the reserved namespace.
pub fn validate_method(method: &str) -> Result<(), Error> {
    validate_name("method", method)?;
    if method.starts_with(RESERVED_PREFIX) {
        return Err(Error::MethodReserved(method.to_owned()));
    }
    Ok(())
}

/// Checks an alarm name (same rules as an actor id).
pub fn validate_alarm_name(name: &str) -> Result<(), Error> {
    validate_name("alarm name", name)
}

fn truncate_for_message(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.len() <= SHOWN {
        return value.escape_debug().to_string();
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", value[..end].escape_debug(), value.len())
}

/// The address of a virtual actor: its type and its id.
///
/// A value of this type always satisfies the naming rules ([`validate_name`]); it may name a
/// reserved type, which user-facing calls refuse with [`Error::ActorTypeReserved`].
///
/// Cheap to clone: both parts live in one shared string (`type/id`; neither part may contain
/// `/`).
#[derive(Clone, Deserialize)]
#[serde(try_from = "RawRef")]
pub struct ActorRef {
    /// `type/id`
    full: Arc<str>,
    /// Where the `/` is.
    split: usize,
}

#[derive(Deserialize)]
struct RawRef {
    actor_type: String,
    actor_id: String,
}

impl TryFrom<RawRef> for ActorRef {
    type Error = Error;
    fn try_from(raw: RawRef) -> Result<Self, Error> {
        ActorRef::new(raw.actor_type, raw.actor_id)
    }
}

impl Serialize for ActorRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ActorRef", 2)?;
        s.serialize_field("actor_type", self.actor_type())?;
        s.serialize_field("actor_id", self.actor_id())?;
        s.end()
    }
}

// Neither part contains `/`, so equal strings are equal pairs.
impl PartialEq for ActorRef {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for ActorRef {}

impl std::hash::Hash for ActorRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

/// By type, then id.
impl Ord for ActorRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.actor_type(), self.actor_id()).cmp(&(other.actor_type(), other.actor_id()))
    }
}

impl PartialOrd for ActorRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ActorRef {
    /// Builds a reference, checking both parts against the naming rules.
    pub fn new(actor_type: impl Into<String>, actor_id: impl Into<String>) -> Result<Self, Error> {
        let actor_type = actor_type.into();
        let actor_id = actor_id.into();
        validate_name("actor type", &actor_type)?;
        validate_name("actor id", &actor_id)?;
        let split = actor_type.len();
        let mut full = actor_type;
        full.push('/');
        full.push_str(&actor_id);
        Ok(Self {
            full: Arc::from(full),
            split,
        })
    }

    /// The actor's type.
    pub fn actor_type(&self) -> &str {
        &self.full[..self.split]
    }

    /// The actor's id, unique within its type.
    pub fn actor_id(&self) -> &str {
        &self.full[self.split + 1..]
    }

    /// Whether the type is in the framework's reserved namespace.
    pub fn is_reserved(&self) -> bool {
        self.actor_type().starts_with(RESERVED_PREFIX)
    }

    /// Refuses references to reserved types, as every user-facing call must.
    pub fn check_not_reserved(&self) -> Result<(), Error> {
        if self.is_reserved() {
            return Err(Error::ActorTypeReserved(self.actor_type().to_owned()));
        }
        Ok(())
    }
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accepts_ordinary_names() {
        let r = ActorRef::new("myactor", "id1").unwrap();
        assert_eq!(r.actor_type(), "myactor");
        assert_eq!(r.actor_id(), "id1");
        assert_eq!(r.to_string(), "myactor/id1");
        assert!(!r.is_reserved());
        ActorRef::new("t", "x".repeat(256)).unwrap();
        ActorRef::new("t", "ünïcödé id with spaces").unwrap();
    }

    #[test]
    fn refuses_bad_names_with_the_field_named() {
        for (ty, id, field, reason) in [
            ("", "a", "actor type", "must not be empty"),
            ("t", "", "actor id", "must not be empty"),
            ("t", "a/b", "actor id", "'/'"),
            ("t/x", "a", "actor type", "'/'"),
            ("t", "a\nb", "actor id", "control"),
            ("t", "a\u{7f}", "actor id", "control"),
        ] {
            let err = ActorRef::new(ty, id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidReference);
            let msg = err.to_string();
            assert!(msg.contains(field) && msg.contains(reason), "{msg}");
        }
        let long = "x".repeat(257);
        let msg = ActorRef::new("t", &long).unwrap_err().to_string();
        assert!(
            msg.contains("256 bytes") && msg.contains("257 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn reserved_types_and_methods() {
        let r = ActorRef::new("francis.builtin.x", "a").unwrap();
        assert!(r.is_reserved());
        assert_eq!(
            r.check_not_reserved().unwrap_err().kind(),
            ErrorKind::ActorTypeReserved
        );
        assert_eq!(
            validate_method("francis.builtin.set_state")
                .unwrap_err()
                .kind(),
            ErrorKind::MethodReserved
        );
        validate_method("increment").unwrap();
        assert_eq!(
            validate_method("").unwrap_err().kind(),
            ErrorKind::InvalidReference
        );
        assert!(validate_alarm_name("a/b").is_err());
    }

    #[test]
    fn order_is_by_type_then_id_and_equality_by_both() {
        let r = |t: &str, i: &str| ActorRef::new(t, i).unwrap();
        // '!' sorts before '/': the order is the pair's, not the joined string's
        assert!(r("a", "z") < r("a!", "a"));
        assert!(r("a", "b") < r("a", "c"));
        assert_eq!(r("ab", "c"), r("ab", "c"));
        assert_ne!(r("ab", "c"), r("a", "bc"));
        assert_eq!(
            (r("ab", "c").actor_type(), r("ab", "c").actor_id()),
            ("ab", "c")
        );
        assert_eq!(r("ab", "c").to_string(), "ab/c");
    }

    #[test]
    fn serde_round_trip_validates() {
        let r = ActorRef::new("t", "i").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"actor_type":"t","actor_id":"i"}"#);
        assert_eq!(serde_json::from_str::<ActorRef>(&json).unwrap(), r);
        let bad = r#"{"actor_type":"t","actor_id":"a/b"}"#;
        assert!(serde_json::from_str::<ActorRef>(bad).is_err());
    }
}
