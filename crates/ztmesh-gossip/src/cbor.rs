//! Strict CBOR for frames, payloads and bodies: one item, nothing after it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes exactly one CBOR item from `bytes`. Trailing bytes are refused so that one value has
/// one encoding length and nothing can ride along unnoticed. Callers check the length first.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|e| e.to_string())?;
    if !reader.is_empty() {
        return Err(format!(
            "{} trailing bytes after the CBOR item",
            reader.len()
        ));
    }
    Ok(value)
}

/// Encodes one value as CBOR.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}
