//! Attestation tokens: the mesh CA's signed statement that it verified a node's evidence
//! (DESIGN.md §3 "Attestation and trust tiers"). A node attaches its token to sensitive gossip
//! (governance proposals and votes) and every receiver checks it with [`AttestationToken::verify`]
//! before letting the message count, so a node's hardware attestation does not have to be
//! re-verified by every peer.
//!
//! A token is a tagged COSE_Sign1 ([`ztmesh_core::signed`]) made by the issuer's Ed25519 key
//! with external_aad [`TOKEN_LABEL`]; its protected header carries the issuer's key id, the
//! content type [`TOKEN_CONTENT_TYPE`] and `iat` = the token's `timestamp`. The payload is a CBOR
//! map with exactly the text keys `platform`, `timestamp`, `binary_hash`, `server_pubkey`,
//! `attestation_hash` and `attestation_timestamp`, written in the core deterministic order of
//! RFC 8949 §4.2.1. The COSE signature is the token's signature.
//!
//! [`AttestationToken::verify`] checks the length before parsing, verifies the signature over
//! the bytes as received (never a re-serialization) before it decodes the payload, refuses
//! unknown, duplicate or missing keys, and only then applies the receiver's [`TokenPolicy`]:
//! subject, platform, freshness and the approved release manifest.
//!
//! This module performs no IO, reads no clock and draws no randomness: the caller passes `now`
//! and the keys. It must never accept a token whose signature it has not verified.

use std::collections::BTreeSet;
use std::time::Duration;

use ciborium::Value;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ztmesh_core::signed::{self, ProtectedFields, SignedError};

use crate::cbor_fields::CborFields;
use crate::manifest::Manifest;
use crate::EvidenceType;

/// Domain-separation label of attestation tokens (the COSE external_aad).
pub const TOKEN_LABEL: &str = "ztmesh/v1/attestation-token";

/// Protected content type of the token payload.
pub const TOKEN_CONTENT_TYPE: &str = "application/vnd.ztmesh.attestation-token+cbor";

/// Largest signed token accepted (checked before parsing). Every token within the field bounds
/// fits with room to spare.
pub const MAX_TOKEN_LEN: usize = 2048;

/// How far in the future a token's timestamps may lie (clock skew between issuer and receiver).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Longest `server_pubkey` (SubjectPublicKeyInfo DER), in bytes.
pub const MAX_SERVER_PUBKEY_LEN: usize = 256;

/// Why a token could not be issued, opened or accepted.
///
/// [`TokenError::Encode`] is a local fault of the issuer; every other variant describes the
/// token a peer presented, measured against the receiver's [`TokenPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is over [`MAX_TOKEN_LEN`]; nothing was parsed.
    #[error("attestation token of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a signed token, or the signed payload is not a valid token.
    #[error("malformed attestation token: {0}")]
    Malformed(String),
    /// The signature does not verify under the issuer key and [`TOKEN_LABEL`].
    #[error("attestation token signature does not verify under the issuer key")]
    BadSignature,
    /// The token attests another identity key than the one the receiver expected.
    #[error("attestation token names another identity key")]
    WrongSubject,
    /// The receiver has no approved release manifest to check the binary against.
    #[error("no approved release manifest to check the attested binary against")]
    NoManifest,
    /// The attested binary is not in the approved release manifest.
    #[error("binary {hash_hex} is not in the approved release manifest")]
    BinaryNotApproved {
        /// Lowercase hex of the binary's SHA-256.
        hash_hex: String,
    },
    /// The attestation is older than the policy's freshness window.
    #[error("stale attestation token: {age_secs} s old, at most {max_secs} s allowed")]
    Stale {
        /// Seconds since the evidence was verified.
        age_secs: u64,
        /// The freshness window.
        max_secs: u64,
    },
    /// The token claims a time beyond `now` plus [`MAX_CLOCK_SKEW_SECS`].
    #[error(
        "attestation token issued at {timestamp} (unix seconds) is in the future; it is now {now}"
    )]
    FromFuture {
        /// The token's timestamp.
        timestamp: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The token attests a platform the policy does not accept.
    #[error("attestation platform {} is not accepted by this policy", .0.as_str())]
    PlatformNotAllowed(EvidenceType),
    /// Encoding or signing failed, or the token to issue breaks a bound (a local fault).
    #[error("cannot issue attestation token: {0}")]
    Encode(String),
}

impl TokenError {
    /// A stable machine-readable reason, for APIs, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "too_large",
            TokenError::Malformed(_) => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongSubject => "wrong_subject",
            TokenError::NoManifest => "no_manifest",
            TokenError::BinaryNotApproved { .. } => "binary_not_approved",
            TokenError::Stale { .. } => "stale",
            TokenError::FromFuture { .. } => "from_future",
            TokenError::PlatformNotAllowed(_) => "platform_not_allowed",
            TokenError::Encode(_) => "encode",
        }
    }
}

/// What a receiver requires of a token beyond a valid issuer signature.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy<'a> {
    /// The approved release manifest; the token's `binary_hash` must be in it. `None` refuses
    /// every token with [`TokenError::NoManifest`]: without reference values nothing is trusted.
    pub manifest: Option<&'a Manifest>,
    /// Freshness window: `now - attestation_timestamp` (and so `now - timestamp`) must not
    /// exceed it. Whole seconds count; a fraction is ignored.
    pub max_age: Duration,
    /// The platforms accepted. Empty accepts nothing; `dev` is accepted only when listed.
    pub platforms: &'a BTreeSet<EvidenceType>,
    /// The identity SubjectPublicKeyInfo DER the token must name (normally the key of the
    /// gossip origin presenting it); `None` skips the check.
    pub subject: Option<&'a [u8]>,
}

/// The claims of an attestation token. Build one to [`issue`](AttestationToken::issue) it; a
/// value returned by [`verify`](AttestationToken::verify) is authentic and within policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationToken {
    /// SubjectPublicKeyInfo DER of the attested node's identity key (1..=256 bytes).
    pub server_pubkey: Vec<u8>,
    /// The evidence type that was verified.
    pub platform: EvidenceType,
    /// SHA-256 of the evidence bytes the issuer verified.
    pub attestation_hash: [u8; 32],
    /// SHA-256 of the node's executable, as the node reported it.
    pub binary_hash: [u8; 32],
    /// When the token was issued, Unix seconds.
    pub timestamp: u64,
    /// When the evidence was verified, Unix seconds (<= timestamp).
    pub attestation_timestamp: u64,
}

impl AttestationToken {
    /// Signs the token with the issuer key into a tagged COSE_Sign1 labelled [`TOKEN_LABEL`],
    /// with `key_id` (non-empty: it lets receivers pick the issuer key, e.g. across a CA key
    /// rotation), the content type [`TOKEN_CONTENT_TYPE`] and `iat` = `timestamp` protected.
    ///
    /// Refuses with [`TokenError::Encode`] what a receiver would refuse as malformed, so an
    /// issuer cannot hand out a token nobody accepts.
    pub fn issue(&self, issuer: &SigningKey, key_id: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.issue_with(key_id, |tbs| issuer.sign(tbs).to_bytes())
    }

    /// [`issue`](AttestationToken::issue) with the Ed25519 signature made by `sign` over the
    /// COSE to-be-signed bytes, for an issuer whose key is not an `ed25519_dalek` key in memory
    /// (the CA signs through its certificate key pair).
    pub fn issue_with(
        &self,
        key_id: &[u8],
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Vec<u8>, TokenError> {
        self.check().map_err(TokenError::Encode)?;
        let payload = self.to_cbor()?;
        let fields = ProtectedFields {
            content_type: Some(TOKEN_CONTENT_TYPE.into()),
            issued_at: Some(self.timestamp),
        };
        let bytes = signed::sign_with(TOKEN_LABEL, key_id, &fields, payload, None, sign)
            .map_err(|e| TokenError::Encode(e.to_string()))?;
        if bytes.len() > MAX_TOKEN_LEN {
            // Unreachable within the field bounds, but never hand out bytes no node would read.
            return Err(TokenError::Encode(format!(
                "signed token of {} bytes exceeds {MAX_TOKEN_LEN}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Opens and checks a token presented at `now_unix_secs`.
    ///
    /// Order matters: length, COSE envelope shape, signature under `issuer`, and only then the
    /// payload (content type, schema, `iat` agreement), then the policy: subject, platform,
    /// clock skew, freshness, manifest.
    pub fn verify(
        bytes: &[u8],
        issuer: &VerifyingKey,
        policy: &TokenPolicy<'_>,
        now_unix_secs: u64,
    ) -> Result<AttestationToken, TokenError> {
        let opened = signed::open(bytes, TOKEN_LABEL, MAX_TOKEN_LEN).map_err(|e| match e {
            SignedError::TooLarge { len, max } => TokenError::TooLarge { len, max },
            other => TokenError::Malformed(other.to_string()),
        })?;
        opened
            .verify(issuer)
            .map_err(|_| TokenError::BadSignature)?;
        // Authentic from here on; what follows checks that the issuer wrote sense.
        if opened.content_type() != Some(TOKEN_CONTENT_TYPE) {
            return Err(TokenError::Malformed(format!(
                "content type {:?}, expected {TOKEN_CONTENT_TYPE}",
                opened.content_type()
            )));
        }
        let token = AttestationToken::from_cbor(opened.payload()).map_err(TokenError::Malformed)?;
        if opened.issued_at() != Some(token.timestamp) {
            return Err(TokenError::Malformed(format!(
                "protected iat {:?} differs from the timestamp {}",
                opened.issued_at(),
                token.timestamp
            )));
        }
        token.check_policy(policy, now_unix_secs)?;
        Ok(token)
    }

    /// The receiver's checks on an authentic token.
    fn check_policy(&self, policy: &TokenPolicy<'_>, now: u64) -> Result<(), TokenError> {
        if let Some(subject) = policy.subject {
            if subject != self.server_pubkey.as_slice() {
                return Err(TokenError::WrongSubject);
            }
        }
        if !policy.platforms.contains(&self.platform) {
            return Err(TokenError::PlatformNotAllowed(self.platform));
        }
        // `attestation_timestamp <= timestamp`, so the token's timestamp is the latest claim and
        // the attestation's the oldest: one comparison each covers both.
        if self.timestamp > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(TokenError::FromFuture {
                timestamp: self.timestamp,
                now,
            });
        }
        let age_secs = now.saturating_sub(self.attestation_timestamp);
        let max_secs = policy.max_age.as_secs();
        if age_secs > max_secs {
            return Err(TokenError::Stale { age_secs, max_secs });
        }
        let manifest = policy.manifest.ok_or(TokenError::NoManifest)?;
        if !manifest.allows_binary(&self.binary_hash) {
            return Err(TokenError::BinaryNotApproved {
                hash_hex: hex::encode(self.binary_hash),
            });
        }
        Ok(())
    }

    /// The field bounds; the message says which one failed.
    fn check(&self) -> Result<(), String> {
        if self.server_pubkey.is_empty() || self.server_pubkey.len() > MAX_SERVER_PUBKEY_LEN {
            return Err(format!(
                "server_pubkey must be 1 to {MAX_SERVER_PUBKEY_LEN} bytes, got {}",
                self.server_pubkey.len()
            ));
        }
        if self.attestation_timestamp > self.timestamp {
            return Err(format!(
                "attestation_timestamp {} is after timestamp {}",
                self.attestation_timestamp, self.timestamp
            ));
        }
        Ok(())
    }

    /// The payload: a CBOR map with text keys in core deterministic order (shorter keys first,
    /// then bytewise).
    fn to_cbor(&self) -> Result<Vec<u8>, TokenError> {
        let map = Value::Map(vec![
            (
                Value::Text("platform".into()),
                Value::Text(self.platform.as_str().into()),
            ),
            (
                Value::Text("timestamp".into()),
                Value::Integer(self.timestamp.into()),
            ),
            (
                Value::Text("binary_hash".into()),
                Value::Bytes(self.binary_hash.to_vec()),
            ),
            (
                Value::Text("server_pubkey".into()),
                Value::Bytes(self.server_pubkey.clone()),
            ),
            (
                Value::Text("attestation_hash".into()),
                Value::Bytes(self.attestation_hash.to_vec()),
            ),
            (
                Value::Text("attestation_timestamp".into()),
                Value::Integer(self.attestation_timestamp.into()),
            ),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).map_err(|e| TokenError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Decodes a verified payload: the six keys once each, no others, no trailing bytes, every
    /// bound of [`AttestationToken::check`].
    fn from_cbor(bytes: &[u8]) -> Result<Self, String> {
        let mut fields = CborFields::decode("payload", bytes)?;
        let token = AttestationToken {
            server_pubkey: fields.take_bytes("server_pubkey")?,
            platform: parse_platform(fields.take_text("platform")?)?,
            attestation_hash: fields.take_byte_array("attestation_hash")?,
            binary_hash: fields.take_byte_array("binary_hash")?,
            timestamp: fields.take_u64("timestamp")?,
            attestation_timestamp: fields.take_u64("attestation_timestamp")?,
        };
        fields.finish()?;
        token.check()?;
        Ok(token)
    }
}

fn parse_platform(name: String) -> Result<EvidenceType, String> {
    name.parse()
        .map_err(|_| format!("unknown platform {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use crate::manifest::SignedManifest;

    const NOW: u64 = 1_750_000_000;
    const KEY_ID: &[u8] = b"mesh-ca-1";
    const SUBJECT: &[u8] = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00subject-spki";
    const APPROVED: [u8; 32] = [0xb1; 32];

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn issuer() -> SigningKey {
        key(1)
    }

    fn sample() -> AttestationToken {
        AttestationToken {
            server_pubkey: SUBJECT.to_vec(),
            platform: EvidenceType::Tpm2,
            attestation_hash: Sha256::digest(b"tpm2 quote").into(),
            binary_hash: APPROVED,
            timestamp: NOW - 10,
            attestation_timestamp: NOW - 20,
        }
    }

    /// A real release manifest, signed and opened the way a node loads it.
    fn manifest() -> Manifest {
        let release = key(9);
        let signed = Manifest::new(
            "1.0.0",
            NOW - 3600,
            NOW + 3600,
            BTreeSet::from([APPROVED]),
            BTreeMap::new(),
        )
        .unwrap()
        .sign(&release)
        .unwrap();
        SignedManifest::open(signed.as_bytes(), &release.verifying_key(), NOW).unwrap()
    }

    fn hardware() -> BTreeSet<EvidenceType> {
        BTreeSet::from([EvidenceType::Tpm2, EvidenceType::Tdx, EvidenceType::SevSnp])
    }

    /// What a receiver's policy borrows: the manifest it loaded and the platforms it accepts.
    struct Fixture {
        manifest: Manifest,
        platforms: BTreeSet<EvidenceType>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                manifest: manifest(),
                platforms: hardware(),
            }
        }

        /// A policy that accepts the sample token.
        fn policy(&self) -> TokenPolicy<'_> {
            TokenPolicy {
                manifest: Some(&self.manifest),
                max_age: Duration::from_secs(3600),
                platforms: &self.platforms,
                subject: Some(SUBJECT),
            }
        }
    }

    fn verify_under(
        bytes: &[u8],
        policy: &TokenPolicy<'_>,
    ) -> Result<AttestationToken, TokenError> {
        AttestationToken::verify(bytes, &issuer().verifying_key(), policy, NOW)
    }

    fn verify(bytes: &[u8]) -> Result<AttestationToken, TokenError> {
        verify_under(bytes, &Fixture::new().policy())
    }

    /// Signs an arbitrary payload as the real issuer would, to reach the payload checks.
    fn sign_payload(payload: &Value, iat: Option<u64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(payload, &mut bytes).unwrap();
        let fields = ProtectedFields {
            content_type: Some(TOKEN_CONTENT_TYPE.into()),
            issued_at: iat,
        };
        signed::sign_with(TOKEN_LABEL, KEY_ID, &fields, bytes, None, |tbs| {
            issuer().sign(tbs).to_bytes()
        })
        .unwrap()
    }

    /// The sample payload as a generic map, to build what `issue` would never write.
    fn sample_entries() -> Vec<(Value, Value)> {
        let token = sample();
        vec![
            (Value::from("platform"), Value::from("tpm2")),
            (Value::from("timestamp"), Value::from(token.timestamp)),
            (Value::from("binary_hash"), Value::Bytes(APPROVED.to_vec())),
            (Value::from("server_pubkey"), Value::Bytes(SUBJECT.to_vec())),
            (
                Value::from("attestation_hash"),
                Value::Bytes(token.attestation_hash.to_vec()),
            ),
            (
                Value::from("attestation_timestamp"),
                Value::from(token.attestation_timestamp),
            ),
        ]
    }

    #[test]
    fn round_trip() {
        let token = sample();
        let bytes = token.issue(&issuer(), KEY_ID).unwrap();
        assert!(bytes.len() <= MAX_TOKEN_LEN);
        assert_eq!(verify(&bytes).unwrap(), token);
        let opened = signed::open(&bytes, TOKEN_LABEL, MAX_TOKEN_LEN).unwrap();
        assert_eq!(opened.key_id(), KEY_ID);
        assert_eq!(opened.content_type(), Some(TOKEN_CONTENT_TYPE));
        assert_eq!(opened.issued_at(), Some(token.timestamp));
        // No subject to check is also fine.
        let fixture = Fixture::new();
        let mut policy = fixture.policy();
        policy.subject = None;
        assert_eq!(verify_under(&bytes, &policy).unwrap(), token);
    }

    #[test]
    fn the_payload_is_written_in_deterministic_key_order() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        let opened = signed::open(&bytes, TOKEN_LABEL, MAX_TOKEN_LEN).unwrap();
        let Value::Map(entries) = ciborium::from_reader::<Value, _>(opened.payload()).unwrap()
        else {
            panic!("payload is a map");
        };
        let keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|(key, _)| {
                let mut encoded = Vec::new();
                ciborium::into_writer(key, &mut encoded).unwrap();
                encoded
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 6);
    }

    #[test]
    fn another_issuer_key_is_a_bad_signature() {
        let bytes = sample().issue(&key(2), KEY_ID).unwrap();
        assert_eq!(verify(&bytes), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_flipped_payload_byte_is_a_bad_signature() {
        let token = sample();
        let bytes = token.issue(&issuer(), KEY_ID).unwrap();
        let payload = token.to_cbor().unwrap();
        let start = bytes
            .windows(payload.len())
            .position(|window| window == payload)
            .expect("the payload is carried as is");
        for index in start..start + payload.len() {
            let mut mutated = bytes.clone();
            mutated[index] ^= 0x01;
            assert_eq!(
                verify(&mutated),
                Err(TokenError::BadSignature),
                "payload byte {}",
                index - start
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        for index in 0..bytes.len() {
            let mut mutated = bytes.clone();
            mutated[index] ^= 0x01;
            assert!(verify(&mutated).is_err(), "byte {index}");
        }
    }

    #[test]
    fn another_label_is_a_bad_signature() {
        let token = sample();
        let fields = ProtectedFields {
            content_type: Some(TOKEN_CONTENT_TYPE.into()),
            issued_at: Some(token.timestamp),
        };
        let bytes = signed::sign_with(
            "ztmesh/v1/gossip",
            KEY_ID,
            &fields,
            token.to_cbor().unwrap(),
            None,
            |tbs| issuer().sign(tbs).to_bytes(),
        )
        .unwrap();
        assert_eq!(verify(&bytes), Err(TokenError::BadSignature));
    }

    #[test]
    fn every_truncation_is_malformed() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        for len in 0..bytes.len() {
            assert!(
                matches!(verify(&bytes[..len]), Err(TokenError::Malformed(_))),
                "truncated to {len} bytes"
            );
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        // Not CBOR: a parse would say Malformed, so TooLarge proves the order.
        let junk = vec![0xff; MAX_TOKEN_LEN + 1];
        assert_eq!(
            verify(&junk),
            Err(TokenError::TooLarge {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
        assert!(matches!(
            verify(&junk[..MAX_TOKEN_LEN]),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn another_subject_is_refused() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        let fixture = Fixture::new();
        let mut policy = fixture.policy();
        policy.subject = Some(b"another node's spki");
        assert_eq!(verify_under(&bytes, &policy), Err(TokenError::WrongSubject));
    }

    #[test]
    fn a_binary_outside_the_manifest_is_refused() {
        let mut token = sample();
        token.binary_hash = [0xee; 32];
        let bytes = token.issue(&issuer(), KEY_ID).unwrap();
        assert_eq!(
            verify(&bytes),
            Err(TokenError::BinaryNotApproved {
                hash_hex: "ee".repeat(32)
            })
        );
    }

    #[test]
    fn without_a_manifest_nothing_is_accepted() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        let fixture = Fixture::new();
        let mut policy = fixture.policy();
        policy.manifest = None;
        assert_eq!(verify_under(&bytes, &policy), Err(TokenError::NoManifest));
    }

    #[test]
    fn a_stale_attestation_is_refused() {
        let bytes = sample().issue(&issuer(), KEY_ID).unwrap();
        // The evidence was verified 20 s before NOW.
        let fixture = Fixture::new();
        let mut policy = fixture.policy();
        policy.max_age = Duration::from_secs(20);
        assert!(verify_under(&bytes, &policy).is_ok());
        policy.max_age = Duration::from_millis(19_999);
        assert_eq!(
            verify_under(&bytes, &policy),
            Err(TokenError::Stale {
                age_secs: 20,
                max_secs: 19
            })
        );
        // The freshness of the attestation counts even when the token itself is new.
        let mut token = sample();
        token.timestamp = NOW;
        token.attestation_timestamp = NOW - 7200;
        let bytes = token.issue(&issuer(), KEY_ID).unwrap();
        assert_eq!(
            verify(&bytes),
            Err(TokenError::Stale {
                age_secs: 7200,
                max_secs: 3600
            })
        );
    }

    #[test]
    fn a_token_from_the_future_is_refused_beyond_the_skew() {
        let mut token = sample();
        token.timestamp = NOW + MAX_CLOCK_SKEW_SECS;
        token.attestation_timestamp = NOW + MAX_CLOCK_SKEW_SECS;
        assert!(verify(&token.issue(&issuer(), KEY_ID).unwrap()).is_ok());
        token.timestamp += 1;
        assert_eq!(
            verify(&token.issue(&issuer(), KEY_ID).unwrap()),
            Err(TokenError::FromFuture {
                timestamp: NOW + MAX_CLOCK_SKEW_SECS + 1,
                now: NOW
            })
        );
    }

    #[test]
    fn a_platform_outside_the_policy_is_refused() {
        let mut token = sample();
        token.platform = EvidenceType::Dev;
        let bytes = token.issue(&issuer(), KEY_ID).unwrap();
        assert_eq!(
            verify(&bytes),
            Err(TokenError::PlatformNotAllowed(EvidenceType::Dev))
        );
        let fixture = Fixture::new();
        let with_dev = BTreeSet::from([EvidenceType::Dev]);
        let mut policy = fixture.policy();
        policy.platforms = &with_dev;
        assert!(verify_under(&bytes, &policy).is_ok());
        let nothing = BTreeSet::new();
        policy.platforms = &nothing;
        assert_eq!(
            verify_under(&sample().issue(&issuer(), KEY_ID).unwrap(), &policy),
            Err(TokenError::PlatformNotAllowed(EvidenceType::Tpm2))
        );
    }

    #[test]
    fn unknown_duplicate_and_missing_keys_are_malformed() {
        let mut unknown = sample_entries();
        unknown.push((Value::from("tier"), Value::from(1)));
        let mut duplicate = sample_entries();
        duplicate.push((Value::from("binary_hash"), Value::Bytes(vec![0xee; 32])));
        let mut non_text_key = sample_entries();
        non_text_key.push((Value::from(1), Value::from(1)));
        let iat = Some(sample().timestamp);
        for (entries, why) in [
            (unknown, "unknown field"),
            (duplicate, "duplicate field"),
            (non_text_key, "keys must be text"),
        ] {
            let bytes = sign_payload(&Value::Map(entries), iat);
            assert!(
                matches!(verify(&bytes), Err(TokenError::Malformed(m)) if m.contains(why)),
                "{why}"
            );
        }
        for index in 0..sample_entries().len() {
            let mut missing = sample_entries();
            let (key, _) = missing.remove(index);
            let name = key.as_text().unwrap().to_owned();
            let bytes = sign_payload(&Value::Map(missing), iat);
            assert_eq!(
                verify(&bytes),
                Err(TokenError::Malformed(format!("missing {name}"))),
            );
        }
        // The map as issue writes it, but in another order, is the same token.
        let mut reordered = sample_entries();
        reordered.reverse();
        assert_eq!(
            verify(&sign_payload(&Value::Map(reordered), iat)),
            Ok(sample())
        );
    }

    #[test]
    fn ill_formed_fields_are_malformed() {
        let iat = Some(sample().timestamp);
        let replace = |name: &str, value: Value| {
            let entries = sample_entries()
                .into_iter()
                .map(|(k, v)| {
                    if k.as_text() == Some(name) {
                        (k, value.clone())
                    } else {
                        (k, v)
                    }
                })
                .collect();
            sign_payload(&Value::Map(entries), iat)
        };
        for bytes in [
            replace("platform", Value::from("sev")),
            replace("platform", Value::from(1)),
            replace("binary_hash", Value::Bytes(vec![1; 31])),
            replace("attestation_hash", Value::from("hash")),
            replace("server_pubkey", Value::Bytes(vec![])),
            replace("server_pubkey", Value::Bytes(vec![1; 257])),
            replace("attestation_timestamp", Value::from(-1)),
            replace("attestation_timestamp", Value::from(NOW)),
            sign_payload(&Value::Array(vec![]), iat),
            sign_payload(&Value::Map(sample_entries()), None),
            sign_payload(&Value::Map(sample_entries()), Some(NOW)),
        ] {
            assert!(matches!(verify(&bytes), Err(TokenError::Malformed(_))));
        }
        // Trailing bytes after the payload map.
        let mut payload = sample().to_cbor().unwrap();
        payload.push(0);
        let fields = ProtectedFields {
            content_type: Some(TOKEN_CONTENT_TYPE.into()),
            issued_at: iat,
        };
        let trailing = signed::sign_with(TOKEN_LABEL, KEY_ID, &fields, payload, None, |tbs| {
            issuer().sign(tbs).to_bytes()
        })
        .unwrap();
        assert!(matches!(verify(&trailing), Err(TokenError::Malformed(_))));
        // Another content type under the right label and key.
        let fields = ProtectedFields {
            content_type: Some("application/cbor".into()),
            issued_at: iat,
        };
        let other_type = signed::sign_with(
            TOKEN_LABEL,
            KEY_ID,
            &fields,
            sample().to_cbor().unwrap(),
            None,
            |tbs| issuer().sign(tbs).to_bytes(),
        )
        .unwrap();
        assert!(matches!(verify(&other_type), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn issue_refuses_what_receivers_would_refuse() {
        let mut token = sample();
        token.attestation_timestamp = token.timestamp + 1;
        assert!(matches!(
            token.issue(&issuer(), KEY_ID),
            Err(TokenError::Encode(_))
        ));
        let mut token = sample();
        token.server_pubkey = vec![1; MAX_SERVER_PUBKEY_LEN + 1];
        assert!(matches!(
            token.issue(&issuer(), KEY_ID),
            Err(TokenError::Encode(_))
        ));
        token.server_pubkey = vec![1; MAX_SERVER_PUBKEY_LEN];
        assert!(token.issue(&issuer(), KEY_ID).unwrap().len() <= MAX_TOKEN_LEN);
        assert!(matches!(
            sample().issue(&issuer(), b""),
            Err(TokenError::Encode(_))
        ));
        let mut token = sample();
        token.timestamp = u64::MAX;
        assert!(matches!(
            token.issue(&issuer(), KEY_ID),
            Err(TokenError::Encode(_))
        ));
    }

    #[test]
    fn reasons_are_stable() {
        let cases = [
            (TokenError::TooLarge { len: 1, max: 0 }, "too_large"),
            (TokenError::Malformed(String::new()), "malformed"),
            (TokenError::BadSignature, "bad_signature"),
            (TokenError::WrongSubject, "wrong_subject"),
            (TokenError::NoManifest, "no_manifest"),
            (
                TokenError::BinaryNotApproved {
                    hash_hex: String::new(),
                },
                "binary_not_approved",
            ),
            (
                TokenError::Stale {
                    age_secs: 1,
                    max_secs: 0,
                },
                "stale",
            ),
            (
                TokenError::FromFuture {
                    timestamp: 1,
                    now: 0,
                },
                "from_future",
            ),
            (
                TokenError::PlatformNotAllowed(EvidenceType::Dev),
                "platform_not_allowed",
            ),
            (TokenError::Encode(String::new()), "encode"),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
    }

    /// Pins the wire form for a fixed key, so a change in encoding shows up as a failing test
    /// rather than as tokens that other nodes refuse.
    #[test]
    fn wire_form_is_stable() {
        let bytes = sample().issue(&key(7), KEY_ID).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), PINNED_SHA256);
    }

    /// Decoded: tag 18, [ bstr{1: -8, 3: TOKEN_CONTENT_TYPE, 4: 'mesh-ca-1', 15: {6: iat}}, {},
    /// bstr{"platform": "tpm2", "timestamp": .., "binary_hash": h'b1..', "server_pubkey": ..,
    /// "attestation_hash": .., "attestation_timestamp": ..}, signature ].
    const PINNED_SHA256: &str = "9213cbcc8613cc8fa404374356b0ec0d6fd8425064c93dc7b68c2d499ecdab84";

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
            prop_assert!(verify(&bytes).is_err());
        }

        #[test]
        fn mutated_tokens_never_panic_and_never_pass(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = sample().issue(&issuer(), KEY_ID).unwrap();
            let at = index.index(bytes.len());
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            prop_assert!(verify(&bytes).is_err());
        }
    }
}
