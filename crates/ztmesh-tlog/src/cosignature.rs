//! C2SP tlog-cosignature v1 (Ed25519, signature type 0x04): a witness's timestamped statement
//! that a checkpoint is the largest consistent one it has seen for that log.
//!
//! The signed message is `cosignature/v1\ntime <t>\n` followed by the whole checkpoint body, and
//! the note signature line carries `key ID ‖ t (8 bytes big-endian) ‖ Ed25519 signature`. The
//! key ID covers the type byte 0x04, so a witness key never verifies as a plain note key and the
//! other way round. Time is always passed in (POSIX seconds); this module never reads a clock.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use crate::checkpoint::Checkpoint;
use crate::key::{self, KeyError, SIGNATURE_TYPE_COSIGNATURE_V1};
use crate::note::{Note, NoteSignature, SignError};

/// Bytes after the key ID in a v1 cosignature: 8 of timestamp, 64 of Ed25519 signature.
const COSIGNATURE_LEN: usize = 8 + 64;

/// Largest timestamp the spec allows (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Why a cosignature line was refused. All variants are faults of the line's producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureError {
    /// The line's key name or key ID is not this verifier's.
    #[error("signature line is not from this cosigner")]
    OtherKey,
    /// The line is not 72 bytes of timestamp and signature.
    #[error("cosignature of {len} bytes where 72 are expected")]
    WrongLength {
        /// Bytes after the key ID.
        len: usize,
    },
    /// The timestamp is above 2^63 - 1.
    #[error("cosignature timestamp {0} is above 2^63-1")]
    TimestampOutOfRange(u64),
    /// The Ed25519 signature does not verify over the checkpoint and timestamp.
    #[error("cosignature from {name}+{key_id:08x} does not verify")]
    InvalidSignature {
        /// Cosigner name.
        name: String,
        /// Cosigner key ID.
        key_id: u32,
    },
}

/// The message a v1 cosignature signs.
fn cosigned_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// A witness's private cosigning key with its name.
///
/// The private key text `PRIVATE+KEY+name+hex(key ID)+base64(0x04 ‖ seed)` extends the signed-note
/// private key format (which the spec only defines for type 0x01) to type 0x04, so a witness key
/// can be stored like any other note key. `Debug` never shows the seed.
#[derive(Clone)]
pub struct CosignatureSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl CosignatureSigner {
    /// A cosigner for `key` under `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        key::check_key_name(name)?;
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key_id: key::key_id(name, SIGNATURE_TYPE_COSIGNATURE_V1, &key.verifying_key()),
            key,
        })
    }

    /// A fresh key drawn from `rng`.
    pub fn generate(name: &str, rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        CosignatureSigner::new(name, SigningKey::generate(rng))
    }

    /// Parses the private key text, checking its key ID.
    pub fn from_private_key(text: &str) -> Result<Self, KeyError> {
        let (name, key) = key::parse_private_key(text, SIGNATURE_TYPE_COSIGNATURE_V1)?;
        CosignatureSigner::new(&name, key)
    }

    /// The private key text. It holds the seed: store it as a secret.
    pub fn private_key(&self) -> String {
        key::format_private_key(&self.name, SIGNATURE_TYPE_COSIGNATURE_V1, &self.key)
    }

    /// The cosigner name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching public key.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The matching vkey text (type 0x04).
    pub fn vkey(&self) -> String {
        self.verifier().to_string()
    }

    /// Cosigns a checkpoint body at `time_secs` (POSIX seconds, `1..=2^63-1`; a witness must not
    /// send a zero timestamp). Refuses text that is not a checkpoint, so the key only ever signs
    /// checkpoints.
    pub fn cosign(
        &self,
        checkpoint_text: &str,
        time_secs: u64,
    ) -> Result<NoteSignature, SignError> {
        if time_secs == 0 || time_secs > MAX_TIMESTAMP {
            return Err(SignError::TimestampOutOfRange(time_secs));
        }
        Checkpoint::parse(checkpoint_text)?;
        let signature = self.key.sign(&cosigned_message(checkpoint_text, time_secs));
        let mut bytes = Vec::with_capacity(COSIGNATURE_LEN);
        bytes.extend_from_slice(&time_secs.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(NoteSignature::from_checked_parts(
            &self.name,
            self.key_id,
            bytes,
        ))
    }
}

impl fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureSigner({})", self.vkey())
    }
}

/// A witness's public cosigning key (vkey of type 0x04).
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// A verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        key::check_key_name(name)?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key::key_id(name, SIGNATURE_TYPE_COSIGNATURE_V1, &key),
            key,
        })
    }

    /// Parses a vkey of type 0x04, checking its key ID.
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let (name, key_id, key) = key::parse_vkey(vkey, SIGNATURE_TYPE_COSIGNATURE_V1)?;
        Ok(CosignatureVerifier { name, key_id, key })
    }

    /// The cosigner name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether a signature line claims to be from this key (same name and key ID).
    pub fn matches(&self, signature: &NoteSignature) -> bool {
        signature.name() == self.name && signature.key_id() == self.key_id
    }

    /// Verifies one cosignature line over `checkpoint_text` and returns its timestamp.
    pub fn verify(
        &self,
        checkpoint_text: &str,
        signature: &NoteSignature,
    ) -> Result<u64, CosignatureError> {
        if !self.matches(signature) {
            return Err(CosignatureError::OtherKey);
        }
        let bytes = signature.signature();
        let Some((timestamp, ed25519)) = bytes.split_first_chunk::<8>() else {
            return Err(CosignatureError::WrongLength { len: bytes.len() });
        };
        let Ok(ed25519) = Signature::from_slice(ed25519) else {
            return Err(CosignatureError::WrongLength { len: bytes.len() });
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampOutOfRange(timestamp));
        }
        self.key
            .verify_strict(&cosigned_message(checkpoint_text, timestamp), &ed25519)
            .map_err(|_| CosignatureError::InvalidSignature {
                name: self.name.clone(),
                key_id: self.key_id,
            })?;
        Ok(timestamp)
    }

    /// Looks for this cosigner's lines in `note` and verifies them all against the note text.
    ///
    /// `Ok(None)`: no line from this key. `Ok(Some(t))`: every line from this key verified; `t`
    /// is the latest timestamp among them. A bad line from this key is an error, as for any
    /// trusted key in a signed note. Callers may refuse timestamps in their future.
    pub fn verify_note(&self, note: &Note) -> Result<Option<u64>, CosignatureError> {
        let mut latest = None;
        for signature in note.signatures().iter().filter(|s| self.matches(s)) {
            let timestamp = self.verify(note.text(), signature)?;
            latest = latest.max(Some(timestamp));
        }
        Ok(latest)
    }
}

impl fmt::Display for CosignatureVerifier {
    /// The vkey text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&key::format_vkey(
            &self.name,
            SIGNATURE_TYPE_COSIGNATURE_V1,
            &self.key,
        ))
    }
}

impl fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureVerifier({self})")
    }
}

impl FromStr for CosignatureVerifier {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CosignatureVerifier::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Signer, Verifier};

    const CHECKPOINT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn witness(seed: u8) -> CosignatureSigner {
        CosignatureSigner::new(
            "witness.example.com/w1",
            SigningKey::from_bytes(&[seed; 32]),
        )
        .unwrap()
    }

    #[test]
    fn message_matches_the_spec_example() {
        assert_eq!(
            cosigned_message(CHECKPOINT, 1679315147),
            b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
              CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    #[test]
    fn spec_example_line_layout() {
        // The spec's example cosignature line: key ID, then the 8-byte big-endian timestamp.
        let line = NoteSignature::parse_line(
            "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==",
        )
        .unwrap();
        assert_eq!(line.key_id(), 0x8d66cf3f);
        assert_eq!(line.signature().len(), COSIGNATURE_LEN);
        assert_eq!(
            u64::from_be_bytes(line.signature()[..8].try_into().unwrap()),
            1679315147
        );
    }

    #[test]
    fn cosign_and_verify() {
        let w = witness(1);
        let line = w.cosign(CHECKPOINT, 1679315147).unwrap();
        let verifier = CosignatureVerifier::parse(&w.vkey()).unwrap();
        assert_eq!(verifier, w.verifier());
        assert_eq!(verifier.verify(CHECKPOINT, &line), Ok(1679315147));
        assert_eq!(line.signature().len(), COSIGNATURE_LEN);

        // Attached to the log's note, it verifies there and does not disturb the log signature.
        let log = Signer::new(
            "example.com/behind-the-sofa",
            SigningKey::from_bytes(&[2; 32]),
        )
        .unwrap();
        let mut note = Note::sign(CHECKPOINT, &[&log]).unwrap();
        note.add_signature(line.clone()).unwrap();
        let note = Note::parse(&note.to_string()).unwrap();
        assert!(note.verify(&[log.verifier()]).is_ok());
        assert_eq!(verifier.verify_note(&note), Ok(Some(1679315147)));

        // A second, later cosignature: the latest time is reported.
        let mut twice = note.clone();
        twice
            .add_signature(w.cosign(CHECKPOINT, 1679315200).unwrap())
            .unwrap();
        assert_eq!(verifier.verify_note(&twice), Ok(Some(1679315200)));

        // Other witnesses' notes: nothing from this key.
        assert_eq!(witness(3).verifier().verify_note(&note), Ok(None));
    }

    #[test]
    fn wrong_key_time_or_body_fails() {
        let w = witness(1);
        let line = w.cosign(CHECKPOINT, 1000).unwrap();
        let verifier = w.verifier();

        // Wrong key: same name, other key → other key ID.
        assert_eq!(
            witness(2).verifier().verify(CHECKPOINT, &line),
            Err(CosignatureError::OtherKey)
        );
        // Same key under a forged ID: the signature check itself fails.
        let impostor = CosignatureVerifier {
            key: witness(2).key.verifying_key(),
            ..verifier.clone()
        };
        assert!(matches!(
            impostor.verify(CHECKPOINT, &line),
            Err(CosignatureError::InvalidSignature { .. })
        ));

        // Wrong time.
        let mut bytes = line.signature().to_vec();
        bytes[7] ^= 1;
        let retimed = NoteSignature::new(line.name(), line.key_id(), bytes).unwrap();
        assert!(matches!(
            verifier.verify(CHECKPOINT, &retimed),
            Err(CosignatureError::InvalidSignature { .. })
        ));
        let mut bytes = line.signature().to_vec();
        bytes[0] = 0x80;
        let huge = NoteSignature::new(line.name(), line.key_id(), bytes).unwrap();
        assert!(matches!(
            verifier.verify(CHECKPOINT, &huge),
            Err(CosignatureError::TimestampOutOfRange(_))
        ));

        // Wrong body.
        let other = CHECKPOINT.replace("20852163", "20852164");
        assert!(matches!(
            verifier.verify(&other, &line),
            Err(CosignatureError::InvalidSignature { .. })
        ));

        // Truncated.
        let short = NoteSignature::new(line.name(), line.key_id(), vec![0; 71]).unwrap();
        assert_eq!(
            verifier.verify(CHECKPOINT, &short),
            Err(CosignatureError::WrongLength { len: 71 })
        );

        // A bad line from the key inside a note is an error, not "absent".
        let log = Signer::new("log", SigningKey::from_bytes(&[2; 32])).unwrap();
        let mut note = Note::sign(CHECKPOINT, &[&log]).unwrap();
        note.add_signature(retimed).unwrap();
        assert!(verifier.verify_note(&note).is_err());
    }

    #[test]
    fn cosign_refuses_non_checkpoints_and_bad_times() {
        let w = witness(1);
        assert!(matches!(
            w.cosign("not a checkpoint\n", 5),
            Err(SignError::NotACheckpoint(_))
        ));
        assert_eq!(
            w.cosign(CHECKPOINT, 0),
            Err(SignError::TimestampOutOfRange(0))
        );
        assert_eq!(
            w.cosign(CHECKPOINT, MAX_TIMESTAMP + 1),
            Err(SignError::TimestampOutOfRange(MAX_TIMESTAMP + 1))
        );
        assert!(w.cosign(CHECKPOINT, MAX_TIMESTAMP).is_ok());
    }

    #[test]
    fn generated_keys_come_from_the_given_rng() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let w = CosignatureSigner::generate("w", &mut rng).unwrap();
        let again =
            CosignatureSigner::generate("w", &mut rand::rngs::StdRng::seed_from_u64(7)).unwrap();
        assert_eq!(w.vkey(), again.vkey());
        assert!(CosignatureSigner::generate("bad name", &mut rng).is_err());
    }

    #[test]
    fn key_types_do_not_mix() {
        let w = witness(1);
        // A cosigner vkey is not a note vkey and vice versa.
        assert!(matches!(
            Verifier::parse(&w.vkey()),
            Err(KeyError::WrongType { .. })
        ));
        let note_signer = Signer::new("n", SigningKey::from_bytes(&[1; 32])).unwrap();
        assert!(CosignatureVerifier::parse(&note_signer.vkey()).is_err());
        // Same seed and name, different type: different key IDs.
        let same = CosignatureSigner::new("n", SigningKey::from_bytes(&[1; 32])).unwrap();
        assert_ne!(same.key_id(), note_signer.key_id());
        // Private keys round-trip and do not cross types.
        let again = CosignatureSigner::from_private_key(&w.private_key()).unwrap();
        assert_eq!(again.vkey(), w.vkey());
        assert!(Signer::from_private_key(&w.private_key()).is_err());
        assert!(CosignatureSigner::from_private_key(&note_signer.private_key()).is_err());
    }
}
