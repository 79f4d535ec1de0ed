//! The dedupe key of a gossip message: SHA-256 of its COSE_Sign1 bytes (DESIGN.md §3).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Identifies one gossip message: SHA-256 of the exact COSE_Sign1 bytes that carry it.
///
/// Written as 64 lowercase hex digits; serialized (CBOR, JSON) as a 32-byte byte string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 32]);

/// Why a string or byte string is not a [`MessageId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageIdError {
    /// Not 64 characters (text) or 32 bytes (binary).
    #[error("a message id is 32 bytes (64 lowercase hex digits), got {0}")]
    Length(usize),
    /// A character outside lowercase hex.
    #[error("a message id is lowercase hex")]
    Alphabet,
}

impl MessageId {
    /// The id of a message carried in `cose`.
    pub fn of(cose: &[u8]) -> Self {
        MessageId(Sha256::digest(cose).into())
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short prefix for log lines (not unique; never use it as a key).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = MessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(MessageIdError::Length(s.chars().count()));
        }
        // One textual form per id, like NodeId: uppercase hex is refused rather than folded.
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(MessageIdError::Alphabet);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| MessageIdError::Alphabet)?;
        Ok(MessageId(bytes))
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MessageId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-byte message id")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<MessageId, E> {
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| E::custom(MessageIdError::Length(bytes.len())))?;
                Ok(MessageId(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_sha256_of_the_bytes() {
        // SHA-256("abc")
        assert_eq!(
            MessageId::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn text_round_trips_and_refuses_other_forms() {
        let id = MessageId::of(b"x");
        assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
        assert_eq!(
            id.to_string().to_uppercase().parse::<MessageId>(),
            Err(MessageIdError::Alphabet)
        );
        assert_eq!("ab".parse::<MessageId>(), Err(MessageIdError::Length(2)));
        let mut bad = id.to_string();
        bad.replace_range(0..1, "g");
        assert_eq!(bad.parse::<MessageId>(), Err(MessageIdError::Alphabet));
    }

    #[test]
    fn serializes_as_a_cbor_byte_string() {
        let id = MessageId([7; 32]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&id, &mut bytes).unwrap();
        // Major type 2 with a one-byte length of 32, then the bytes.
        assert_eq!(&bytes[..2], &[0x58, 0x20]);
        assert_eq!(bytes.len(), 34);
        let back: MessageId = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back, id);
        let mut short = Vec::new();
        ciborium::into_writer(&ciborium::Value::Bytes(vec![1; 31]), &mut short).unwrap();
        assert!(ciborium::from_reader::<MessageId, _>(&short[..]).is_err());
    }
}
