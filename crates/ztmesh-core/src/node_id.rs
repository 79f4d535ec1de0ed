//! The self-certifying node identifier (DESIGN.md §3 Identity).

use std::fmt;
use std::str::FromStr;

use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};

/// Number of SHA-256 bytes kept in a [`NodeId`].
pub const NODE_ID_BYTES: usize = 20;

/// Length of the textual form: 20 bytes in unpadded base32.
pub const NODE_ID_TEXT_LEN: usize = 32;

/// A node's self-certifying identifier: the first 20 bytes of SHA-256 over the DER
/// SubjectPublicKeyInfo of its long-term identity key, written as lowercase unpadded base32.
///
/// Anyone holding the identity public key can recompute it, so a NodeId cannot be claimed by a
/// key that does not hash to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; NODE_ID_BYTES]);

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The text is not 32 characters long.
    #[error("a node id is {NODE_ID_TEXT_LEN} characters of lowercase base32, got {0} characters")]
    Length(usize),
    /// The text has a character outside lowercase base32 (`a-z`, `2-7`).
    #[error("a node id is lowercase base32 (a-z, 2-7)")]
    Alphabet,
}

fn lowercase_base32() -> Encoding {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("static base32 alphabet is valid")
}

impl NodeId {
    /// Derives the NodeId of an identity key from its DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> Self {
        let digest = Sha256::digest(spki_der);
        let mut bytes = [0u8; NODE_ID_BYTES];
        bytes.copy_from_slice(&digest[..NODE_ID_BYTES]);
        NodeId(bytes)
    }

    /// Wraps raw identifier bytes.
    pub const fn from_bytes(bytes: [u8; NODE_ID_BYTES]) -> Self {
        NodeId(bytes)
    }

    /// The raw identifier bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_BYTES] {
        &self.0
    }

    /// A short prefix for log lines and tables (not unique; never use it as a key).
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&lowercase_base32().encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != NODE_ID_TEXT_LEN {
            return Err(NodeIdError::Length(s.chars().count()));
        }
        let decoded = lowercase_base32()
            .decode(s.as_bytes())
            .map_err(|_| NodeIdError::Alphabet)?;
        let bytes: [u8; NODE_ID_BYTES] = decoded.try_into().map_err(|_| NodeIdError::Alphabet)?;
        // Unpadded base32 of 20 bytes is exactly 32 symbols with no spare bits, so the
        // encoding is canonical: one string per id.
        Ok(NodeId(bytes))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text: std::borrow::Cow<'de, str> = serde::Deserialize::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_lowercase() {
        let id = NodeId::from_spki_der(b"some spki");
        let text = id.to_string();
        assert_eq!(text.len(), NODE_ID_TEXT_LEN);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn known_answer_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let id = NodeId::from_spki_der(b"abc");
        assert_eq!(
            hex::encode(id.as_bytes()),
            "ba7816bf8f01cfea414140de5dae2223b00361a3"
        );
        assert_eq!(id.to_string(), "xj4bnp4pahh6uqkbidpf3lrceoyagynd");
    }

    #[test]
    fn rejects_uppercase_wrong_length_and_bad_symbols() {
        let id = NodeId::from_spki_der(b"abc").to_string();
        assert_eq!(
            id.to_uppercase().parse::<NodeId>(),
            Err(NodeIdError::Alphabet)
        );
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdError::Length(3)));
        let mut bad = id.clone();
        bad.replace_range(0..1, "1");
        assert_eq!(bad.parse::<NodeId>(), Err(NodeIdError::Alphabet));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,64}") {
            let _ = s.parse::<NodeId>();
        }
    }
}
