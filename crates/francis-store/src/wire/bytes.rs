//! Byte fields of commands and replies, as the JSON log and wire carry them.
//!
//! Serde writes a `Vec<u8>` as an array of numbers, three to four bytes of JSON for every byte
//! of data: a 16 MiB state document would become a log entry of about 50 MiB, too large to
//! replicate. The documents the store holds are JSON themselves (state, alarm data), so they
//! are embedded as they are, `{"json": <the document>}`: no escaping, no growth. Bytes that
//! are not JSON, or whose text a JSON parser would not give back byte for byte, fall back to
//! the array of numbers; entries written in that form before keep decoding.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserializer, Serializer};
use serde_json::value::RawValue;

/// The key of the embedded form.
const JSON_KEY: &str = "json";

/// The bytes as a JSON document, when they are one.
fn as_document(bytes: &[u8]) -> Option<&RawValue> {
    let text = std::str::from_utf8(bytes).ok()?;
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    // The parser drops surrounding white space; embed only what comes back unchanged.
    (raw.get().len() == text.len()).then_some(raw)
}

/// Serializes bytes (see the module docs).
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match as_document(bytes) {
        Some(raw) => {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(JSON_KEY, raw)?;
            map.end()
        }
        None => s.collect_seq(bytes),
    }
}

/// Deserializes bytes written by [`serialize`] (or as a plain array of numbers).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an embedded JSON document or an array of bytes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field(JSON_KEY));
        };
        if key != JSON_KEY {
            return Err(de::Error::unknown_field(&key, &[JSON_KEY]));
        }
        let raw: Box<RawValue> = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom("an embedded document has one key"));
        }
        Ok(raw.get().as_bytes().to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(bytes)
    }
}

/// The same for an optional field.
pub(crate) mod option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    struct Bytes(#[serde(deserialize_with = "super::deserialize")] Vec<u8>);

    /// Serializes optional bytes.
    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&BytesRef(b)),
            None => s.serialize_none(),
        }
    }

    struct BytesRef<'a>(&'a [u8]);

    impl Serialize for BytesRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }

    /// Deserializes optional bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Bytes>::deserialize(d)?.map(|b| b.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        #[serde(with = "super")]
        data: Vec<u8>,
        #[serde(with = "super::option")]
        more: Option<Vec<u8>>,
    }

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let doc = Doc {
            data: data.to_vec(),
            more: Some(data.to_vec()),
        };
        let json = serde_json::to_vec(&doc).unwrap();
        let back: Doc = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, doc);
        json
    }

    #[test]
    fn json_documents_are_embedded_as_they_are() {
        let big = format!(
            "{{\"items\":[{}]}}",
            vec!["\"x\\n\u{e9}\""; 10_000].join(",")
        );
        let json = round_trip(big.as_bytes());
        // Twice the document plus a few bytes of keys: no growth.
        assert!(json.len() < 2 * big.len() + 64, "{} bytes", json.len());
        for doc in [
            "{}",
            "[]",
            "42",
            "\"text\"",
            "null",
            "{\"a\": [1, 2.5e3, true]}",
        ] {
            let json = round_trip(doc.as_bytes());
            assert!(String::from_utf8(json).unwrap().contains(doc));
        }
    }

    #[test]
    fn other_bytes_fall_back_to_numbers_and_still_round_trip() {
        for bytes in [&b""[..], b"\x00\xff\x10", b" {} ", b"{\"a\":1", b"\xc3\x28"] {
            round_trip(bytes);
        }
        // The form written before this encoding existed still decodes.
        let old: Doc = serde_json::from_str(r#"{"data":[123,125],"more":null}"#).unwrap();
        assert_eq!(old.data, b"{}");
        assert_eq!(old.more, None);
    }

    #[test]
    fn bad_forms_are_refused() {
        for bad in [
            r#"{"data":{"other":1},"more":null}"#,
            r#"{"data":{"json":1,"json2":2},"more":null}"#,
            r#"{"data":"text","more":null}"#,
            r#"{"data":[256],"more":null}"#,
        ] {
            assert!(serde_json::from_str::<Doc>(bad).is_err(), "{bad}");
        }
    }
}
