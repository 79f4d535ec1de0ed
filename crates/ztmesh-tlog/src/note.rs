//! C2SP signed notes: a text ending in a newline, a blank line, then one or more signature lines
//! `— <key name> base64(key ID ‖ signature)`.
//!
//! [`Note::parse`] only checks the shape (and the limits: [`MAX_NOTE_LEN`] bytes,
//! [`MAX_SIGNATURES`] lines); nothing in a note may be acted on before [`Note::verify`] has found a
//! valid signature from a trusted key. Verification follows the spec: lines from unknown keys are
//! ignored (they may be cosignatures or a rotated key), a line whose name and key ID match a
//! trusted key must verify or the whole note is refused, and at least one trusted signature must
//! be present.
//!
//! Signatures here are plain Ed25519 over the note text (type 0x01). Timestamped cosignatures
//! (type 0x04) ride in the same signature block and are checked by
//! [`crate::cosignature::CosignatureVerifier`].

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use crate::key::{self, KeyError, SIGNATURE_TYPE_ED25519};

// Defined with the checkpoint bound it is shared with; named here, where callers look for it.
pub use crate::limits::MAX_NOTE_LEN;

/// Most signature lines accepted or produced in one note (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// What starts every signature line: an em dash (U+2014) and a space.
pub const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// Why a note from elsewhere was refused. All variants are faults of whoever produced the note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is over [`MAX_NOTE_LEN`] bytes.
    #[error("note of {len} bytes exceeds the {MAX_NOTE_LEN}-byte limit")]
    TooLarge {
        /// Length of the note.
        len: usize,
    },
    /// The note is not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note holds an ASCII control character other than newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// No blank line separates the text from a non-empty signature block.
    #[error("note has no signature block after a blank line")]
    NoSignatureBlock,
    /// The last signature line does not end in a newline.
    #[error("note does not end in a newline")]
    MissingFinalNewline,
    /// A signature line is not `— <name> <base64 of at least 5 bytes>`.
    #[error("signature line {line} is malformed")]
    MalformedSignatureLine {
        /// 1-based position among the signature lines.
        line: usize,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// No signature from a trusted key is present.
    #[error("note has no signature from a trusted key")]
    NoTrustedSignature,
    /// A signature line names a trusted key (name and key ID) but does not verify.
    #[error("invalid signature from trusted key {name}+{key_id:08x}")]
    InvalidSignature {
        /// Key name of the bad line.
        name: String,
        /// Key ID of the bad line.
        key_id: u32,
    },
}

/// A local fault while producing a signature: the caller asked to sign something that cannot be
/// a valid note or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Note text must end in a newline.
    #[error("note text must end in a newline")]
    MissingFinalNewline,
    /// Note text may not hold ASCII control characters other than newline.
    #[error("note text contains a control character other than newline")]
    ControlCharacter,
    /// The signed note would exceed [`MAX_NOTE_LEN`] bytes or [`MAX_SIGNATURES`] lines.
    #[error("signed note would exceed the size or signature-count limit")]
    TooLarge,
    /// No signer was given.
    #[error("at least one signer is needed")]
    NoSigners,
    /// A cosignature was asked for over text that is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    NotACheckpoint(#[from] crate::checkpoint::CheckpointError),
    /// A cosignature timestamp must be in `1..=2^63-1` seconds.
    #[error("cosignature timestamp {0} is outside 1..=2^63-1")]
    TimestampOutOfRange(u64),
}

/// One signature line of a note: key name, key ID and the signature bytes that follow the ID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature line from its parts; the name must be a valid key name and the signature
    /// non-empty.
    pub fn new(name: &str, key_id: u32, signature: Vec<u8>) -> Result<Self, KeyError> {
        key::check_key_name(name)?;
        if signature.is_empty() {
            return Err(KeyError::Malformed);
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id,
            signature,
        })
    }

    /// For signers whose name was checked when they were built.
    pub(crate) fn from_checked_parts(name: &str, key_id: u32, signature: Vec<u8>) -> Self {
        debug_assert!(key::is_valid_key_name(name) && !signature.is_empty());
        NoteSignature {
            name: name.to_owned(),
            key_id,
            signature,
        }
    }

    /// Parses one line `— <name> <base64>`, without its newline. The error of a malformed line
    /// says line 1; [`Note::parse`] reports the real position.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        // Only a position-free error is known here; callers that know the line number replace it.
        let malformed = NoteError::MalformedSignatureLine { line: 1 };
        if line.len() > MAX_NOTE_LEN {
            return Err(malformed);
        }
        let rest = line
            .strip_prefix(SIGNATURE_LINE_PREFIX)
            .ok_or_else(|| malformed.clone())?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| malformed.clone())?;
        if !key::is_valid_key_name(name) || b64.is_empty() {
            return Err(malformed);
        }
        let raw = BASE64.decode(b64).map_err(|_| malformed.clone())?;
        // Four bytes of key ID and at least one byte of signature.
        if raw.len() < 5 {
            return Err(malformed);
        }
        let key_id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id,
            signature: raw[4..].to_vec(),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key ID (for cosignatures: timestamp ‖ Ed25519 signature).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl fmt::Display for NoteSignature {
    /// The line without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        write!(
            f,
            "{SIGNATURE_LINE_PREFIX}{} {}",
            self.name,
            BASE64.encode(raw)
        )
    }
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({self})")
    }
}

/// A public Ed25519 note key (signature type 0x01), written as a vkey
/// `name+hex(key ID)+base64(0x01 ‖ public key)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// A verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        key::check_key_name(name)?;
        Ok(Verifier {
            name: name.to_owned(),
            key_id: key::key_id(name, SIGNATURE_TYPE_ED25519, &key),
            key,
        })
    }

    /// Parses a vkey, checking its key ID.
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let (name, key_id, key) = key::parse_vkey(vkey, SIGNATURE_TYPE_ED25519)?;
        Ok(Verifier { name, key_id, key })
    }

    /// The key name.
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

    /// Whether `signature` is this key's Ed25519 signature of `message`. Uses strict verification
    /// (canonical encodings, no small-order keys), so one signature has one valid encoding.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }

    fn matches(&self, signature: &NoteSignature) -> bool {
        self.name == signature.name && self.key_id == signature.key_id
    }
}

impl fmt::Display for Verifier {
    /// The vkey text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&key::format_vkey(
            &self.name,
            SIGNATURE_TYPE_ED25519,
            &self.key,
        ))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

impl FromStr for Verifier {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verifier::parse(s)
    }
}

/// A private Ed25519 note key (signature type 0x01) with its name.
///
/// Its text form is `PRIVATE+KEY+name+hex(key ID)+base64(0x01 ‖ seed)`; `Debug` never shows the
/// seed.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Signer {
    /// A signer for `key` under `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        key::check_key_name(name)?;
        Ok(Signer {
            name: name.to_owned(),
            key_id: key::key_id(name, SIGNATURE_TYPE_ED25519, &key.verifying_key()),
            key,
        })
    }

    /// A fresh key drawn from `rng`.
    pub fn generate(name: &str, rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        Signer::new(name, SigningKey::generate(rng))
    }

    /// Parses the private key text, checking its key ID.
    pub fn from_private_key(text: &str) -> Result<Self, KeyError> {
        let (name, key) = key::parse_private_key(text, SIGNATURE_TYPE_ED25519)?;
        Signer::new(&name, key)
    }

    /// The private key text. It holds the seed: store it as a secret.
    pub fn private_key(&self) -> String {
        key::format_private_key(&self.name, SIGNATURE_TYPE_ED25519, &self.key)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching public key.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The matching vkey text.
    pub fn vkey(&self) -> String {
        self.verifier().to_string()
    }

    fn sign_text(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.vkey())
    }
}

/// A parsed (not yet verified) signed note.
#[derive(Clone, PartialEq, Eq)]
pub struct Note {
    /// The text, ending in a newline, without the blank separator line.
    text: String,
    /// At least one, at most [`MAX_SIGNATURES`].
    signatures: Vec<NoteSignature>,
}

/// Whether `text` holds an ASCII control character other than newline. In UTF-8 such bytes only
/// ever stand for themselves, so a byte scan is exact.
fn has_forbidden_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 && b != b'\n')
}

impl Note {
    /// Parses a note, checking its shape and limits (not its signatures).
    pub fn parse(message: &str) -> Result<Note, NoteError> {
        if message.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge { len: message.len() });
        }
        if has_forbidden_control(message) {
            return Err(NoteError::ControlCharacter);
        }
        // The text is separated from the signatures by the last blank line.
        let split = message.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, block) = (&message[..split + 1], &message[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::NoSignatureBlock);
        }
        let block = block
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?;
        let mut signatures = Vec::new();
        for (index, line) in block.split('\n').enumerate() {
            if index >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let signature = NoteSignature::parse_line(line)
                .map_err(|_| NoteError::MalformedSignatureLine { line: index + 1 })?;
            signatures.push(signature);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Parses a note from bytes (checking the length before anything else).
    pub fn from_bytes(message: &[u8]) -> Result<Note, NoteError> {
        if message.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge { len: message.len() });
        }
        Note::parse(std::str::from_utf8(message).map_err(|_| NoteError::NotUtf8)?)
    }

    /// Signs `text` with each signer (a signer listed twice signs once).
    pub fn sign(text: &str, signers: &[&Signer]) -> Result<Note, SignError> {
        if signers.is_empty() {
            return Err(SignError::NoSigners);
        }
        check_note_text(text)?;
        let mut note = Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        };
        for signer in signers {
            let signature = signer.sign_text(text);
            if !note
                .signatures
                .iter()
                .any(|s| s.name == signature.name && s.key_id == signature.key_id)
            {
                note.push_signature(signature)?;
            }
        }
        Ok(note)
    }

    /// The signed text, ending in a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Appends a signature line (e.g. a witness's cosignature), unless the very same line is
    /// already there. Fails if the note would exceed its limits.
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), SignError> {
        if self.signatures.contains(&signature) {
            return Ok(());
        }
        self.push_signature(signature)
    }

    fn push_signature(&mut self, signature: NoteSignature) -> Result<(), SignError> {
        let line_len = signature.to_string().len() + 1;
        if self.signatures.len() >= MAX_SIGNATURES || self.encoded_len() + line_len > MAX_NOTE_LEN {
            return Err(SignError::TooLarge);
        }
        self.signatures.push(signature);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.text.len()
            + 1
            + self
                .signatures
                .iter()
                .map(|s| s.to_string().len() + 1)
                .sum::<usize>()
    }

    /// Verifies the note against trusted keys.
    ///
    /// Lines from keys not in `verifiers` are ignored. Every line whose name and key ID match a
    /// trusted key must verify (under any of the trusted keys sharing that name and ID), else
    /// [`NoteError::InvalidSignature`]; at least one must, else [`NoteError::NoTrustedSignature`].
    pub fn verify(&self, verifiers: &[Verifier]) -> Result<VerifiedNote, NoteError> {
        let mut verified = Vec::new();
        for (index, signature) in self.signatures.iter().enumerate() {
            let mut known = false;
            let mut valid = false;
            for verifier in verifiers.iter().filter(|v| v.matches(signature)) {
                known = true;
                if verifier.verify(self.text.as_bytes(), &signature.signature) {
                    valid = true;
                    break;
                }
            }
            if !known {
                continue;
            }
            if !valid {
                return Err(NoteError::InvalidSignature {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                });
            }
            verified.push(index);
        }
        if verified.is_empty() {
            return Err(NoteError::NoTrustedSignature);
        }
        Ok(VerifiedNote {
            note: self.clone(),
            verified,
        })
    }
}

/// Checks that `text` can be the text of a note.
pub(crate) fn check_note_text(text: &str) -> Result<(), SignError> {
    if !text.ends_with('\n') {
        return Err(SignError::MissingFinalNewline);
    }
    if has_forbidden_control(text) {
        return Err(SignError::ControlCharacter);
    }
    if text.len() >= MAX_NOTE_LEN {
        return Err(SignError::TooLarge);
    }
    Ok(())
}

impl fmt::Display for Note {
    /// The note exactly as parsed or signed: text, blank line, one line per signature.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            writeln!(f, "{signature}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Note")
            .field("text", &self.text)
            .field("signatures", &self.signatures)
            .finish()
    }
}

impl FromStr for Note {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Note::parse(s)
    }
}

/// A note with at least one valid signature from a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    note: Note,
    /// Indexes into `note.signatures` of the lines that verified.
    verified: Vec<usize>,
}

impl VerifiedNote {
    /// The text, now trusted.
    pub fn text(&self) -> &str {
        &self.note.text
    }

    /// The whole note, with all its lines (verified or not).
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The lines that verified under a trusted key.
    pub fn verified_signatures(&self) -> impl Iterator<Item = &NoteSignature> {
        self.verified
            .iter()
            .filter_map(|&index| self.note.signatures.get(index))
    }

    /// Gives the note back.
    pub fn into_note(self) -> Note {
        self.note
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer(name: &str, seed: u8) -> Signer {
        Signer::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    #[test]
    fn sign_print_parse_verify_round_trip() {
        let alice = signer("example.com/alice", 1);
        let bob = signer("example.com/bob", 2);
        let note = Note::sign("hello\n\nworld\n", &[&alice, &bob, &alice]).unwrap();
        assert_eq!(note.signatures().len(), 2);
        let text = note.to_string();
        assert!(text.starts_with("hello\n\nworld\n\n\u{2014} example.com/alice "));
        let parsed = Note::parse(&text).unwrap();
        assert_eq!(parsed, note);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.text(), "hello\n\nworld\n");

        let verified = parsed.verify(&[bob.verifier()]).unwrap();
        assert_eq!(verified.text(), "hello\n\nworld\n");
        assert_eq!(
            verified
                .verified_signatures()
                .map(NoteSignature::name)
                .collect::<Vec<_>>(),
            ["example.com/bob"]
        );
        let both = parsed.verify(&[alice.verifier(), bob.verifier()]).unwrap();
        assert_eq!(both.verified_signatures().count(), 2);
    }

    #[test]
    fn verification_rules() {
        let alice = signer("alice", 1);
        let mallory = signer("alice", 3);
        let note = Note::sign("text\n", &[&alice]).unwrap();

        assert_eq!(note.verify(&[]).unwrap_err(), NoteError::NoTrustedSignature);
        // Same name, other key (so other ID): unknown, ignored, nothing trusted left.
        assert_eq!(
            note.verify(&[mallory.verifier()]).unwrap_err(),
            NoteError::NoTrustedSignature
        );

        // A forged line carrying alice's name and ID is a hard failure, even next to a good one.
        let mut forged = note.clone();
        let mut bad = note.signatures()[0].clone();
        bad.signature[0] ^= 1;
        forged.add_signature(bad).unwrap();
        assert_eq!(
            forged.verify(&[alice.verifier()]).unwrap_err(),
            NoteError::InvalidSignature {
                name: "alice".into(),
                key_id: alice.key_id()
            }
        );

        // An unknown extra line is ignored.
        let mut extra = note.clone();
        extra
            .add_signature(NoteSignature::new("other", 7, vec![1, 2, 3]).unwrap())
            .unwrap();
        assert!(extra.verify(&[alice.verifier()]).is_ok());

        // A signature over other text fails.
        let other = Note::sign("other\n", &[&alice]).unwrap();
        let spliced = Note::parse(&format!("text\n\n{}\n", other.signatures()[0])).unwrap();
        assert!(matches!(
            spliced.verify(&[alice.verifier()]),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn parse_errors() {
        let alice = signer("alice", 1);
        let good = Note::sign("text\n", &[&alice]).unwrap().to_string();
        let line = good.lines().last().unwrap().to_owned();
        let cases: Vec<(String, NoteError)> = vec![
            ("text\n".into(), NoteError::NoSignatureBlock),
            ("text\n\n".into(), NoteError::NoSignatureBlock),
            (good.trim_end().into(), NoteError::MissingFinalNewline),
            (format!("te\rxt\n\n{line}\n"), NoteError::ControlCharacter),
            (format!("text\n\n{line}\n\t"), NoteError::ControlCharacter),
            (
                format!("text\n\n{}\n", line.replacen('\u{2014}', "-", 1)),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                format!("text\n\n{line}\n\u{2014} alice\n"),
                NoteError::MalformedSignatureLine { line: 2 },
            ),
            (
                "text\n\n\u{2014} alice AAAAAA==\n".into(),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                "text\n\n\u{2014} al+ice AAAAAAA=\n".into(),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                "text\n\n\u{2014} alice AAAAAAA\n".into(),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                "text\n\n\u{2014}  alice AAAAAAA=\n".into(),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                "text\n\n\u{2014} alice \n".into(),
                NoteError::MalformedSignatureLine { line: 1 },
            ),
            (
                format!("text\n\n{}", format!("{line}\n").repeat(MAX_SIGNATURES + 1)),
                NoteError::TooManySignatures,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Note::parse(&input), Err(want), "{input:?}");
        }
        assert!(Note::parse(&format!(
            "text\n\n{}",
            format!("{line}\n").repeat(MAX_SIGNATURES)
        ))
        .is_ok());
        let huge = format!("{}\n\n{line}\n", "a".repeat(MAX_NOTE_LEN));
        assert_eq!(
            Note::parse(&huge),
            Err(NoteError::TooLarge { len: huge.len() })
        );
        assert_eq!(Note::from_bytes(b"\xff\n\n"), Err(NoteError::NotUtf8));
        // The last blank line separates: an earlier one belongs to the text.
        let two_blocks = format!("a\n\n{line}\n\n{line}\n");
        let parsed = Note::parse(&two_blocks).unwrap();
        assert_eq!(parsed.text(), format!("a\n\n{line}\n"));
        assert_eq!(parsed.to_string(), two_blocks);
    }

    #[test]
    fn signing_refuses_what_cannot_be_a_note() {
        let alice = signer("alice", 1);
        assert_eq!(
            Note::sign("no newline", &[&alice]),
            Err(SignError::MissingFinalNewline)
        );
        assert_eq!(
            Note::sign("a\u{7}\n", &[&alice]),
            Err(SignError::ControlCharacter)
        );
        assert_eq!(Note::sign("a\n", &[]), Err(SignError::NoSigners));
        assert_eq!(
            Note::sign(&format!("{}\n", "a".repeat(MAX_NOTE_LEN)), &[&alice]),
            Err(SignError::TooLarge)
        );
        let mut note = Note::sign("a\n", &[&alice]).unwrap();
        for i in 1..MAX_SIGNATURES {
            note.add_signature(NoteSignature::new("n", i as u32, vec![0]).unwrap())
                .unwrap();
        }
        assert_eq!(
            note.add_signature(NoteSignature::new("n", 0, vec![0]).unwrap()),
            Err(SignError::TooLarge)
        );
        assert!(Note::parse(&note.to_string()).is_ok());
    }

    #[test]
    fn keys_round_trip_and_debug_hides_the_seed() {
        let alice = signer("example.com/alice", 9);
        let again = Signer::from_private_key(&alice.private_key()).unwrap();
        assert_eq!(again.vkey(), alice.vkey());
        assert_eq!(Verifier::parse(&alice.vkey()).unwrap(), alice.verifier());
        let seed_b64 = alice.private_key().rsplit('+').next().unwrap().to_owned();
        assert!(!format!("{alice:?}").contains(&seed_b64));
        assert!(Signer::new("bad name", SigningKey::from_bytes(&[1; 32])).is_err());
        assert!(NoteSignature::new("n", 1, vec![]).is_err());
    }

    #[test]
    fn generated_keys_come_from_the_given_rng() {
        use rand::SeedableRng;
        let a = Signer::generate("n", &mut rand::rngs::StdRng::seed_from_u64(7)).unwrap();
        let b = Signer::generate("n", &mut rand::rngs::StdRng::seed_from_u64(7)).unwrap();
        let c = Signer::generate("n", &mut rand::rngs::StdRng::seed_from_u64(8)).unwrap();
        assert_eq!(a.vkey(), b.vkey());
        assert_ne!(a.vkey(), c.vkey());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Note::from_bytes(&bytes);
        }

        #[test]
        fn note_shaped_garbage_never_panics(
            text in "[a-z\n ]{0,40}",
            lines in proptest::collection::vec("(\u{2014} )?[a-z+ ]{0,8} ?[A-Za-z0-9+/=]{0,20}", 0..5),
        ) {
            let message = format!("{text}\n\n{}\n", lines.join("\n"));
            if let Ok(note) = Note::parse(&message) {
                prop_assert_eq!(note.to_string(), message);
                let _ = note.verify(&[signer("a", 1).verifier()]);
            }
        }

        #[test]
        fn signed_text_round_trips(text in "[^\u{0}-\u{1f}]{0,40}(\n[^\u{0}-\u{1f}]{0,40}){0,3}") {
            let text = format!("{text}\n");
            let alice = signer("alice", 1);
            let note = Note::sign(&text, &[&alice]).unwrap();
            let parsed = Note::parse(&note.to_string()).unwrap();
            prop_assert_eq!(parsed.text(), text.as_str());
            prop_assert!(parsed.verify(&[alice.verifier()]).is_ok());
        }
    }
}
