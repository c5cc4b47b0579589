//! JSON payloads carried by invocations, alarms and state.

use std::fmt;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// An encoded payload: always a complete, valid JSON document.
///
/// Cheap to clone (the bytes are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope(Bytes);

impl Envelope {
    /// Encodes any serializable value as JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_vec(value)
            .map(|v| Envelope(Bytes::from(v)))
            .map_err(|e| Error::Encode(e.to_string()))
    }

    /// Wraps bytes that must hold one JSON document; anything else is [`Error::Decode`] with the
    /// position of the problem.
    pub fn from_json(bytes: impl Into<Bytes>) -> Result<Self, Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| Error::Decode {
            expected: "JSON",
            message: e.to_string(),
        })?;
        Ok(Envelope(bytes))
    }

    /// The JSON `null` document, used where a call has no payload.
    pub fn null() -> Self {
        Envelope(Bytes::from_static(b"null"))
    }

    /// Decodes the payload into `T`; the error says which type was expected and why it failed.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.0).map_err(|e| Error::Decode {
            expected: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// The JSON bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON bytes, shared.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Whether the document is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.as_ref() == b"null"
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 128;
        let text = String::from_utf8_lossy(&self.0[..self.0.len().min(SHOWN)]);
        if self.0.len() > SHOWN {
            write!(f, "Envelope({text}... {} bytes)", self.0.len())
        } else {
            write!(f, "Envelope({text})")
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct In {
        #[serde(rename = "In")]
        value: i64,
    }

    #[test]
    fn round_trip() {
        let e = Envelope::encode(&In { value: 42 }).unwrap();
        assert_eq!(e.as_bytes(), br#"{"In":42}"#);
        assert_eq!(e.decode::<In>().unwrap(), In { value: 42 });
    }

    #[test]
    fn malformed_json_is_refused_with_position() {
        let err = Envelope::from_json(&b"{\"In\": 4"[..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Envelope::from_json(&b""[..]).is_err());
        assert!(Envelope::from_json(&b"{} {}"[..]).is_err());
        assert!(Envelope::from_json(&b"  [1, 2] "[..]).is_ok());
    }

    #[test]
    fn decode_names_the_expected_type() {
        let e = Envelope::from_json(&br#"{"In":"x"}"#[..]).unwrap();
        let err = e.decode::<In>().unwrap_err().to_string();
        assert!(err.contains("In") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn null_and_debug() {
        assert!(Envelope::null().is_null());
        let big = Envelope::encode(&"x".repeat(1000)).unwrap();
        assert!(format!("{big:?}").contains("1002 bytes"));
    }
}
