//! Strict CBOR for frames, payloads and bodies: one item, nothing after it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes exactly one CBOR item from `bytes`. Trailing bytes are refused so that one value has
/// one encoding length and nothing can ride along unnoticed. Callers check the length first.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut reader = bytes;
    // `ciborium::from_reader` zeroes a 4 KiB scratch buffer on every call, a cost paid several
    // times per received message. Byte strings (`serde_bytes`) and text longer than the scratch
    // are read in segments anyway, so a small buffer only has to hold fixed-size fields (ids,
    // hashes: 32 bytes).
    let mut scratch = [0u8; 256];
    let value = ciborium::de::from_reader_with_buffer(&mut reader, &mut scratch)
        .map_err(|e| e.to_string())?;
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
