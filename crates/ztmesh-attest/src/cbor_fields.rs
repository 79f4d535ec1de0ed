//! Strict reading of the CBOR maps this crate decodes: the `dev` and `tpm2` evidence envelopes
//! and the signed payloads of release manifests and attestation tokens. One item and nothing
//! after it, text keys each present once, every field taken by name with its type checked, and
//! no field left that nobody took, so a map cannot smuggle fields its reader ignores.
//!
//! It must never let a field pass unread: the whole map is decoded and its keys checked before
//! any field is answered, and [`CborFields::finish`] refuses what is left. The callers check
//! the length of the bytes before decoding.

use std::collections::BTreeMap;
use std::fmt;

use ciborium::Value;

use crate::AttestError;

/// Decodes exactly one CBOR item; trailing bytes are refused so one encoding has one meaning.
pub(crate) fn decode_cbor_item(what: &'static str, bytes: &[u8]) -> Result<Value, CborError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest).map_err(|error| {
        let why = error.to_string();
        let fault = match error {
            ciborium::de::Error::Io(_) => Fault::EndsEarly(why),
            _ => Fault::NotCbor(why),
        };
        CborError { what, fault }
    })?;
    if !rest.is_empty() {
        return Err(CborError {
            what,
            fault: Fault::TrailingBytes(rest.len()),
        });
    }
    Ok(value)
}

/// The fields of a CBOR map with text keys, taken one by one; [`CborFields::finish`] refuses
/// keys nobody took.
pub(crate) struct CborFields {
    what: &'static str,
    entries: BTreeMap<String, Value>,
}

impl CborFields {
    /// Decodes `bytes` as exactly one CBOR map with unique text keys; `what` names it in errors.
    pub(crate) fn decode(what: &'static str, bytes: &[u8]) -> Result<Self, CborError> {
        let fault = |fault| CborError { what, fault };
        let Value::Map(pairs) = decode_cbor_item(what, bytes)? else {
            return Err(fault(Fault::NotAMap));
        };
        let mut entries = BTreeMap::new();
        for (key, value) in pairs {
            let Value::Text(key) = key else {
                return Err(fault(Fault::KeyNotText));
            };
            if entries.contains_key(&key) {
                return Err(fault(Fault::DuplicateKey(key)));
            }
            entries.insert(key, value);
        }
        Ok(CborFields { what, entries })
    }

    /// Removes and answers a required field.
    pub(crate) fn take(&mut self, name: &str) -> Result<Value, CborError> {
        self.entries
            .remove(name)
            .ok_or_else(|| self.error(Fault::Missing(name.to_owned())))
    }

    /// A required text field.
    pub(crate) fn take_text(&mut self, name: &str) -> Result<String, CborError> {
        self.take_as(name, Kind::Text, Value::into_text)
    }

    /// A required byte-string field.
    pub(crate) fn take_bytes(&mut self, name: &str) -> Result<Vec<u8>, CborError> {
        self.take_as(name, Kind::Bytes, Value::into_bytes)
    }

    /// An optional byte-string field: `None` when absent; present, it must be a byte string.
    pub(crate) fn take_optional_bytes(&mut self, name: &str) -> Result<Option<Vec<u8>>, CborError> {
        if !self.entries.contains_key(name) {
            return Ok(None);
        }
        self.take_bytes(name).map(Some)
    }

    /// A required byte-string field of exactly `N` bytes.
    pub(crate) fn take_byte_array<const N: usize>(
        &mut self,
        name: &str,
    ) -> Result<[u8; N], CborError> {
        let bytes = self.take_bytes(name)?;
        let len = bytes.len();
        <[u8; N]>::try_from(bytes).map_err(|_| {
            self.error(Fault::WrongLength {
                name: name.to_owned(),
                len,
                expected: N,
            })
        })
    }

    /// A required unsigned-integer field.
    pub(crate) fn take_u64(&mut self, name: &str) -> Result<u64, CborError> {
        let integer = self.take_as(name, Kind::Integer, Value::into_integer)?;
        u64::try_from(integer).map_err(|_| self.error(Fault::NotU64(name.to_owned())))
    }

    /// A required array field, its items not yet read.
    pub(crate) fn take_array(&mut self, name: &str) -> Result<Vec<Value>, CborError> {
        self.take_as(name, Kind::Array, Value::into_array)
    }

    /// A required map field, its entries not yet read.
    pub(crate) fn take_map(&mut self, name: &str) -> Result<Vec<(Value, Value)>, CborError> {
        self.take_as(name, Kind::Map, Value::into_map)
    }

    /// Refuses fields that were not taken.
    pub(crate) fn finish(self) -> Result<(), CborError> {
        match self.entries.into_keys().next() {
            None => Ok(()),
            Some(key) => Err(CborError {
                what: self.what,
                fault: Fault::UnknownField(key),
            }),
        }
    }

    fn take_as<T>(
        &mut self,
        name: &str,
        kind: Kind,
        convert: impl FnOnce(Value) -> Result<T, Value>,
    ) -> Result<T, CborError> {
        convert(self.take(name)?).map_err(|_| {
            self.error(Fault::WrongType {
                name: name.to_owned(),
                expected: kind,
            })
        })
    }

    fn error(&self, fault: Fault) -> CborError {
        CborError {
            what: self.what,
            fault,
        }
    }
}

/// Why a CBOR item or map was refused, and which one (`what`).
///
/// Worded by its destination: `?` into [`AttestError`] names the evidence and quotes the key
/// (`dev payload: missing "version"`), for evidence errors that stand alone; [`fmt::Display`]
/// (and `?` into a `String`) does neither (`missing version`), for signed payloads whose own
/// error already names them (`malformed release manifest: ...`).
#[derive(Debug)]
pub(crate) struct CborError {
    what: &'static str,
    fault: Fault,
}

#[derive(Debug)]
enum Fault {
    /// The bytes end inside the item (the decoder's message).
    EndsEarly(String),
    /// Not well-formed CBOR (the decoder's message).
    NotCbor(String),
    /// This many bytes follow the item.
    TrailingBytes(usize),
    NotAMap,
    KeyNotText,
    DuplicateKey(String),
    Missing(String),
    WrongType {
        name: String,
        expected: Kind,
    },
    NotU64(String),
    WrongLength {
        name: String,
        len: usize,
        expected: usize,
    },
    UnknownField(String),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Bytes,
    Integer,
    Array,
    Map,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Bytes => "a byte string",
            Kind::Integer => "an integer",
            Kind::Array => "an array",
            Kind::Map => "a map",
        }
    }
}

impl From<CborError> for AttestError {
    fn from(error: CborError) -> Self {
        let what = error.what;
        let malformed = |detail: String| AttestError::Malformed(format!("{what}: {detail}"));
        match error.fault {
            Fault::EndsEarly(_) => AttestError::Truncated(format!("{what}: CBOR ends early")),
            Fault::NotCbor(why) => malformed(format!("not CBOR: {why}")),
            Fault::TrailingBytes(len) => malformed(format!("{len} bytes after the CBOR item")),
            Fault::NotAMap => malformed("not a CBOR map".into()),
            Fault::KeyNotText => malformed("a key is not text".into()),
            Fault::DuplicateKey(key) => malformed(format!("duplicate key {key:?}")),
            Fault::Missing(name) => malformed(format!("missing {name:?}")),
            Fault::WrongType { name, expected } => {
                malformed(format!("{name:?} is not {}", expected.noun()))
            }
            Fault::NotU64(name) => malformed(format!("{name:?} is not a u64")),
            Fault::WrongLength {
                name,
                len,
                expected,
            } => malformed(format!("{name:?} is {len} bytes, expected {expected}")),
            Fault::UnknownField(key) => malformed(format!("unknown field {key:?}")),
        }
    }
}

impl fmt::Display for CborError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.what;
        match &self.fault {
            Fault::EndsEarly(why) | Fault::NotCbor(why) => {
                write!(formatter, "{what} is not CBOR: {why}")
            }
            Fault::TrailingBytes(_) => write!(formatter, "trailing bytes after the {what}"),
            Fault::NotAMap => write!(formatter, "{what} is not a map"),
            Fault::KeyNotText => write!(formatter, "{what} keys must be text"),
            Fault::DuplicateKey(key) => write!(formatter, "duplicate field {key:?}"),
            Fault::Missing(name) => write!(formatter, "missing {name}"),
            Fault::WrongType {
                name,
                expected: Kind::Integer,
            } => write!(formatter, "{name} must be an unsigned integer"),
            Fault::WrongType { name, expected } => {
                write!(formatter, "{name} must be {}", expected.noun())
            }
            Fault::NotU64(name) => write!(formatter, "{name} out of range"),
            Fault::WrongLength { name, expected, .. } => {
                write!(formatter, "{name} is not {expected} bytes")
            }
            Fault::UnknownField(key) => write!(formatter, "unknown field {key:?}"),
        }
    }
}

impl From<CborError> for String {
    fn from(error: CborError) -> Self {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Take = fn(&mut CborFields) -> Result<(), CborError>;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn map(entries: Vec<(&str, Value)>) -> Vec<u8> {
        encode(&Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (Value::from(key), value))
                .collect(),
        ))
    }

    /// Reads `bytes` as a map whose only field `take` takes; the fault met, worded for
    /// evidence and for a payload.
    fn fault(bytes: &[u8], take: Take) -> (String, String) {
        let read = || -> Result<(), CborError> {
            let mut fields = CborFields::decode("dev payload", bytes)?;
            take(&mut fields)?;
            fields.finish()
        };
        let evidence = AttestError::from(read().unwrap_err()).to_string();
        (evidence, read().unwrap_err().into())
    }

    #[test]
    fn every_field_is_taken_typed_and_no_other_is_left() {
        let bytes = map(vec![
            ("count", Value::from(7)),
            ("hash", Value::Bytes(vec![1; 4])),
            ("name", Value::from("n")),
            ("list", Value::Array(vec![])),
            ("table", Value::Map(vec![])),
        ]);
        let mut fields = CborFields::decode("dev payload", &bytes).unwrap();
        assert_eq!(fields.take_u64("count").unwrap(), 7);
        assert_eq!(fields.take_byte_array::<4>("hash").unwrap(), [1; 4]);
        assert_eq!(fields.take_text("name").unwrap(), "n");
        assert_eq!(fields.take_array("list").unwrap(), vec![]);
        assert_eq!(fields.take_map("table").unwrap(), vec![]);
        assert!(fields.take("count").is_err(), "a field is taken once");
        assert!(fields.finish().is_ok());
    }

    #[test]
    fn an_optional_field_may_be_absent_but_not_of_another_type() {
        let bytes = map(vec![("present", Value::Bytes(vec![2]))]);
        let mut fields = CborFields::decode("dev payload", &bytes).unwrap();
        assert_eq!(fields.take_optional_bytes("absent").unwrap(), None);
        assert_eq!(
            fields.take_optional_bytes("present").unwrap(),
            Some(vec![2])
        );
        assert!(fields.finish().is_ok());
        let (evidence, payload) = fault(&map(vec![("extra", Value::from(1))]), |fields| {
            fields.take_optional_bytes("extra").map(drop)
        });
        assert_eq!(
            evidence,
            "malformed: dev payload: \"extra\" is not a byte string"
        );
        assert_eq!(payload, "extra must be a byte string");
    }

    /// Pins both wordings: evidence errors are shown alone, payload errors inside a manifest or
    /// token error that already names the payload.
    #[test]
    fn each_fault_is_worded_for_evidence_and_for_payloads() {
        let count = |value: Value| map(vec![("count", value)]);
        let take_u64: Take = |fields| fields.take_u64("count").map(drop);
        let mut trailing = count(Value::from(1));
        trailing.push(0);
        let mut truncated = count(Value::from(1));
        truncated.pop();
        let mut duplicate = count(Value::from(1));
        duplicate[0] = 0xa2; // a map of two entries, the same key twice
        duplicate.extend(&count(Value::from(2))[1..]);
        let cases: [(Vec<u8>, Take, &str, &str); 12] = [
            (
                trailing,
                take_u64,
                "malformed: dev payload: 1 bytes after the CBOR item",
                "trailing bytes after the dev payload",
            ),
            (
                truncated,
                take_u64,
                "truncated: dev payload: CBOR ends early",
                "dev payload is not CBOR: ",
            ),
            (
                vec![0xff],
                take_u64,
                "malformed: dev payload: not CBOR: ",
                "dev payload is not CBOR: ",
            ),
            (
                encode(&Value::Array(vec![])),
                take_u64,
                "malformed: dev payload: not a CBOR map",
                "dev payload is not a map",
            ),
            (
                encode(&Value::Map(vec![(Value::from(1), Value::from(1))])),
                take_u64,
                "malformed: dev payload: a key is not text",
                "dev payload keys must be text",
            ),
            (
                duplicate,
                take_u64,
                "malformed: dev payload: duplicate key \"count\"",
                "duplicate field \"count\"",
            ),
            (
                map(vec![]),
                take_u64,
                "malformed: dev payload: missing \"count\"",
                "missing count",
            ),
            (
                map(vec![("count", Value::from(1)), ("extra", Value::Null)]),
                take_u64,
                "malformed: dev payload: unknown field \"extra\"",
                "unknown field \"extra\"",
            ),
            (
                count(Value::from("7")),
                take_u64,
                "malformed: dev payload: \"count\" is not an integer",
                "count must be an unsigned integer",
            ),
            (
                count(Value::from(-1)),
                take_u64,
                "malformed: dev payload: \"count\" is not a u64",
                "count out of range",
            ),
            (
                count(Value::from(1)),
                |fields| fields.take_text("count").map(drop),
                "malformed: dev payload: \"count\" is not text",
                "count must be text",
            ),
            (
                count(Value::Bytes(vec![1; 3])),
                |fields| fields.take_byte_array::<4>("count").map(drop),
                "malformed: dev payload: \"count\" is 3 bytes, expected 4",
                "count is not 4 bytes",
            ),
        ];
        for (bytes, take, evidence, payload) in cases {
            let (as_evidence, as_payload) = fault(&bytes, take);
            assert!(as_evidence.starts_with(evidence), "{as_evidence:?}");
            assert!(as_payload.starts_with(payload), "{as_payload:?}");
        }
    }
}
