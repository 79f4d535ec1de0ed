//! Certificate serial numbers.

use std::fmt;

/// A certificate serial number: the big-endian magnitude bytes (no sign padding), displayed
/// as lowercase hex. CAs draw 16 random bytes with the top bit cleared (RFC 5280 §4.1.2.2).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 16 bytes, top bit cleared so the INTEGER is positive,
    /// leading zero bytes stripped.
    pub fn random(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 0x7f;
        bytes[0] |= 0x40; // keep 16 significant bytes so every serial has the same length
        Serial(bytes.to_vec())
    }

    /// From big-endian bytes; leading zero bytes are stripped so equal numbers compare equal.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Serial(bytes[start..].to_vec())
    }

    /// Parses lowercase or uppercase hex (optionally with `:` separators).
    pub fn from_hex(text: &str) -> Result<Self, crate::PkiError> {
        let clean: String = text.chars().filter(|c| *c != ':').collect();
        if clean.is_empty() || clean.len() > 64 {
            return Err(crate::PkiError::MalformedCertificate(
                "serial: 1 to 32 bytes of hex".into(),
            ));
        }
        let padded = if clean.len() % 2 == 1 {
            format!("0{clean}")
        } else {
            clean
        };
        hex::decode(&padded)
            .map(|b| Serial::from_bytes(&b))
            .map_err(|_| crate::PkiError::MalformedCertificate("serial: not hex".into()))
    }

    /// Big-endian magnitude bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}
