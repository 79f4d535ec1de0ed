//! Key names, key IDs and the text forms of keys shared by signed notes and cosignatures
//! (C2SP signed-note "Verifier keys").
//!
//! A verifier key (vkey) is `<name>+<hex key ID>+<base64(type ‖ public key)>`; a private key is
//! the same with a `PRIVATE+KEY+` prefix and the 32-byte Ed25519 seed in place of the public key.
//! The key ID is `SHA-256(name ‖ "\n" ‖ type ‖ public key)[:4]`, so the same Ed25519 key used as a
//! note signer (type 0x01) and as a cosigner (type 0x04) has two unrelated IDs.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of plain Ed25519 note signatures (C2SP signed-note).
pub const SIGNATURE_TYPE_ED25519: u8 = 0x01;

/// Signature type byte of timestamped Ed25519 checkpoint cosignatures (C2SP tlog-cosignature).
pub const SIGNATURE_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// Longest key text accepted; real keys are well under 200 characters.
const MAX_KEY_TEXT_LEN: usize = 1024;

/// Why a key (vkey, private key or key name) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key name is empty, contains a Unicode space or a `+`.
    #[error("key names are non-empty and contain neither spaces nor '+'")]
    BadName,
    /// The text is not `name+hex+base64` (or `PRIVATE+KEY+name+hex+base64`).
    #[error("malformed key text")]
    Malformed,
    /// The key is of another signature type than expected here.
    #[error("signature type 0x{found:02x} where 0x{expected:02x} is expected")]
    WrongType {
        /// The type byte the key carries.
        found: u8,
        /// The type byte this context accepts.
        expected: u8,
    },
    /// The public key or seed is not 32 bytes, or not a valid Ed25519 point.
    #[error("not a valid Ed25519 key")]
    BadKeyMaterial,
    /// The key ID in the text does not match the one computed from name and key.
    #[error("key ID {found:08x} does not match the key (expected {expected:08x})")]
    KeyIdMismatch {
        /// Key ID written in the text.
        found: u32,
        /// Key ID computed from the name and key.
        expected: u32,
    },
}

/// A name that signed notes and vkeys can carry: non-empty, no Unicode white space, no `+`.
pub(crate) fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

pub(crate) fn check_key_name(name: &str) -> Result<(), KeyError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyError::BadName)
    }
}

/// `SHA-256(name ‖ "\n" ‖ type ‖ public key)[:4]` as a big-endian integer.
pub(crate) fn key_id(name: &str, signature_type: u8, public_key: &VerifyingKey) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([signature_type]);
    hasher.update(public_key.as_bytes());
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Parses exactly eight lowercase hex digits, the only form the spec writes.
fn parse_key_id(hex: &str) -> Result<u32, KeyError> {
    if hex.len() != 8
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(KeyError::Malformed);
    }
    u32::from_str_radix(hex, 16).map_err(|_| KeyError::Malformed)
}

/// Splits `name+hex+base64` and decodes `base64` into `type ‖ 32 bytes`.
fn split_key_text(text: &str, expected_type: u8) -> Result<(&str, u32, [u8; 32]), KeyError> {
    if text.len() > MAX_KEY_TEXT_LEN {
        return Err(KeyError::Malformed);
    }
    // Base64 uses `+` too, so only the first two `+` separate fields.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed);
    };
    check_key_name(name)?;
    let id = parse_key_id(hex)?;
    let raw = BASE64.decode(b64).map_err(|_| KeyError::Malformed)?;
    let (&signature_type, material) = raw.split_first().ok_or(KeyError::Malformed)?;
    if signature_type != expected_type {
        return Err(KeyError::WrongType {
            found: signature_type,
            expected: expected_type,
        });
    }
    let material: [u8; 32] = material.try_into().map_err(|_| KeyError::BadKeyMaterial)?;
    Ok((name, id, material))
}

/// Parses a vkey of `expected_type` into its name, key ID and public key, checking the ID.
pub(crate) fn parse_vkey(
    text: &str,
    expected_type: u8,
) -> Result<(String, u32, VerifyingKey), KeyError> {
    let (name, id, material) = split_key_text(text, expected_type)?;
    let key = VerifyingKey::from_bytes(&material).map_err(|_| KeyError::BadKeyMaterial)?;
    let expected = key_id(name, expected_type, &key);
    if id != expected {
        return Err(KeyError::KeyIdMismatch {
            found: id,
            expected,
        });
    }
    Ok((name.to_owned(), id, key))
}

/// Parses `PRIVATE+KEY+name+hex+base64(type ‖ seed)`, checking the ID against the derived public
/// key.
pub(crate) fn parse_private_key(
    text: &str,
    expected_type: u8,
) -> Result<(String, SigningKey), KeyError> {
    let rest = text
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(KeyError::Malformed)?;
    let (name, id, seed) = split_key_text(rest, expected_type)?;
    let key = SigningKey::from_bytes(&seed);
    let expected = key_id(name, expected_type, &key.verifying_key());
    if id != expected {
        return Err(KeyError::KeyIdMismatch {
            found: id,
            expected,
        });
    }
    Ok((name.to_owned(), key))
}

/// `name+hex+base64(type ‖ public key)`.
pub(crate) fn format_vkey(name: &str, signature_type: u8, key: &VerifyingKey) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(signature_type);
    raw.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{:08x}+{}",
        key_id(name, signature_type, key),
        BASE64.encode(raw)
    )
}

/// `PRIVATE+KEY+name+hex+base64(type ‖ seed)`.
pub(crate) fn format_private_key(name: &str, signature_type: u8, key: &SigningKey) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(signature_type);
    raw.extend_from_slice(key.as_bytes());
    let text = format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        key_id(name, signature_type, &key.verifying_key()),
        BASE64.encode(&raw)
    );
    // The seed copy is scrubbed so that only the returned text (the caller's to protect) holds it.
    raw.fill(0);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_key_name("example.com/foo"));
        assert!(is_valid_key_name("ünïcode"));
        for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b", "a\u{2003}b", "a\nb"] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn base64_with_plus_signs_parses() {
        // Regression: the base64 field may itself contain '+'.
        let vkey = (0u8..=255)
            .map(|seed| {
                format_vkey(
                    "n",
                    SIGNATURE_TYPE_ED25519,
                    &SigningKey::from_bytes(&[seed; 32]).verifying_key(),
                )
            })
            .find(|vkey| vkey.matches('+').count() > 2)
            .expect("some key's base64 has a '+'");
        assert!(parse_vkey(&vkey, SIGNATURE_TYPE_ED25519).is_ok());
    }

    #[test]
    fn key_text_shapes_are_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let vkey = format_vkey("n", SIGNATURE_TYPE_ED25519, &key.verifying_key());
        assert!(parse_vkey(&vkey, SIGNATURE_TYPE_ED25519).is_ok());
        assert_eq!(
            parse_vkey(&vkey, SIGNATURE_TYPE_COSIGNATURE_V1),
            Err(KeyError::WrongType {
                found: 1,
                expected: 4
            })
        );
        assert_eq!(parse_key_id("0000000A"), Err(KeyError::Malformed));
        assert_eq!(parse_key_id("0000000a"), Ok(10));
        for bad in [
            "",
            "n",
            "n+",
            "n++",
            "+00000000+AQ==",
            &format!("{vkey}+extra"),
            "n+0000000+AQ==",
            "n+000000000+AQ==",
            "n+0000000g+AQ==",
            "n+00000000+!!",
            "n+00000000+",
        ] {
            assert!(parse_vkey(bad, SIGNATURE_TYPE_ED25519).is_err(), "{bad:?}");
        }
        let long = "a".repeat(MAX_KEY_TEXT_LEN + 1);
        assert_eq!(parse_vkey(&long, 1), Err(KeyError::Malformed));
        let skey = format_private_key("n", SIGNATURE_TYPE_ED25519, &key);
        assert!(parse_private_key(&skey, 1).is_ok());
        assert_eq!(parse_private_key(&vkey, 1), Err(KeyError::Malformed));
        assert_eq!(
            parse_private_key(&skey.replace("+n+", "+m+"), 1),
            Err(KeyError::KeyIdMismatch {
                found: key_id("n", 1, &key.verifying_key()),
                expected: key_id("m", 1, &key.verifying_key()),
            })
        );
    }
}
