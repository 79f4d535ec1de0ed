//! Signed release manifests: the reference values of DESIGN.md §3. A manifest names a release
//! version, the SHA-256 of every binary that release may run as, the measurements allowed per
//! attestation platform, and the time after which it stops counting. The release key (Ed25519)
//! signs it as a COSE_Sign1 with the domain label [`LABEL`]; nodes pin the release public key in
//! their configuration and accept no manifest signed by anything else.
//!
//! [`SignedManifest::open`] checks the length, parses the envelope, verifies the signature under
//! the pinned key and only then decodes the payload, so bytes nobody signed are never given
//! meaning. Every collection in a manifest is bounded ([`MAX_BINARIES`],
//! [`MAX_VALUES_PER_MEASUREMENT`], ...) and the bounds are enforced both when building and when
//! decoding, so a manifest that can be signed can be read back and vice versa.
//!
//! This module performs no IO, reads no clock and draws no randomness: the caller passes `now`
//! and the keys. The release signing key belongs offline, on the machine that cuts releases.

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use ztmesh_core::signed::{self, ProtectedFields, SignedError};

use crate::cbor_fields::CborFields;
use crate::{EvidenceType, ReferenceValues};

/// Domain-separation label of release manifests (the COSE external_aad).
pub const LABEL: &str = "ztmesh/v1/release-manifest";

/// Protected content type of the manifest payload.
pub const CONTENT_TYPE: &str = "application/vnd.ztmesh.release-manifest+cbor";

/// Largest signed manifest accepted (checked before parsing). Every manifest within the other
/// bounds fits.
pub const MAX_MANIFEST_LEN: usize = 1024 * 1024;

/// Most binary hashes one manifest may allow.
pub const MAX_BINARIES: usize = 256;

/// Most allowed values per measurement name.
pub const MAX_VALUES_PER_MEASUREMENT: usize = 64;

/// Most measurement names per platform.
pub const MAX_MEASUREMENT_NAMES: usize = 16;

/// Longest measurement name, in bytes.
pub const MAX_MEASUREMENT_NAME_LEN: usize = 32;

/// Longest measurement value, in hex characters (SHA-512 sized).
pub const MAX_MEASUREMENT_VALUE_LEN: usize = 128;

/// Longest version string, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Why a manifest could not be built, signed, opened or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The signed manifest is over [`MAX_MANIFEST_LEN`]; nothing was parsed.
    #[error("signed manifest of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a signed manifest, or the signed payload is not a valid manifest.
    #[error("malformed release manifest: {0}")]
    Malformed(String),
    /// The manifest names a key other than the pinned release key.
    #[error("manifest is signed by key {found}, not by the pinned release key {expected}")]
    WrongKey {
        /// Hex key id of the pinned release key.
        expected: String,
        /// Hex key id the manifest carries.
        found: String,
    },
    /// The signature does not verify under the pinned release key.
    #[error("manifest signature does not verify under the pinned release key")]
    BadSignature,
    /// `now` is past the manifest's `not_after`.
    #[error("manifest expired at {not_after} (unix seconds); it is now {now}")]
    Expired {
        /// The manifest's last valid second.
        not_after: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// A field is out of bounds or ill-formed (a local fault when building; decoding reports
    /// such faults of received bytes as [`ManifestError::Malformed`]).
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// The release key text is not a key.
    #[error("invalid release public key: {0}")]
    InvalidKey(String),
    /// Encoding or signing failed (a local fault).
    #[error("cannot encode manifest: {0}")]
    Encode(String),
}

impl ManifestError {
    /// A stable machine-readable reason, for APIs and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ManifestError::TooLarge { .. } => "too_large",
            ManifestError::Malformed(_) => "malformed",
            ManifestError::WrongKey { .. } => "wrong_key",
            ManifestError::BadSignature => "bad_signature",
            ManifestError::Expired { .. } => "expired",
            ManifestError::Invalid(_) => "invalid",
            ManifestError::InvalidKey(_) => "invalid_key",
            ManifestError::Encode(_) => "encode",
        }
    }
}

/// A release manifest: which binaries and measurements a release allows, until when.
///
/// Fields are private so every value of this type is within the bounds; build one with
/// [`Manifest::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    version: String,
    issued_at: u64,
    not_after: u64,
    binaries: BTreeSet<[u8; 32]>,
    measurements: BTreeMap<EvidenceType, ReferenceValues>,
}

impl Manifest {
    /// Builds a manifest, checking every bound. Measurement values must be lowercase hex (that
    /// is how verifiers report them); `issued_at` must not be after `not_after`.
    pub fn new(
        version: impl Into<String>,
        issued_at: u64,
        not_after: u64,
        binaries: BTreeSet<[u8; 32]>,
        measurements: BTreeMap<EvidenceType, ReferenceValues>,
    ) -> Result<Self, ManifestError> {
        let manifest = Manifest {
            version: version.into(),
            issued_at,
            not_after,
            binaries,
            measurements,
        };
        manifest.check().map_err(ManifestError::Invalid)?;
        Ok(manifest)
    }

    /// The release version this manifest describes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// When the manifest was signed (unix seconds).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// The last second at which the manifest is valid (unix seconds).
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The SHA-256 of every allowed binary.
    pub fn binaries(&self) -> &BTreeSet<[u8; 32]> {
        &self.binaries
    }

    /// The reference values per platform.
    pub fn measurements(&self) -> &BTreeMap<EvidenceType, ReferenceValues> {
        &self.measurements
    }

    /// Whether a binary with this SHA-256 belongs to the release.
    pub fn allows_binary(&self, sha256: &[u8; 32]) -> bool {
        self.binaries.contains(sha256)
    }

    /// The reference values evidence of this type is checked against, if the release has any.
    pub fn reference_for(&self, evidence_type: EvidenceType) -> Option<&ReferenceValues> {
        self.measurements.get(&evidence_type)
    }

    /// Signs the manifest with the release key.
    pub fn sign(&self, release_key: &SigningKey) -> Result<SignedManifest, ManifestError> {
        let payload = self.to_cbor()?;
        let fields = ProtectedFields {
            content_type: Some(CONTENT_TYPE.into()),
            issued_at: None,
        };
        let key_id = release_key_id(&release_key.verifying_key());
        let bytes = signed::sign_with(LABEL, &key_id, &fields, payload, None, |tbs| {
            release_key.sign(tbs).to_bytes()
        })
        .map_err(|e| ManifestError::Encode(e.to_string()))?;
        if bytes.len() > MAX_MANIFEST_LEN {
            // Unreachable within the bounds, but never hand out bytes no node would read.
            return Err(ManifestError::Encode(format!(
                "signed manifest of {} bytes exceeds {MAX_MANIFEST_LEN}",
                bytes.len()
            )));
        }
        Ok(SignedManifest(bytes))
    }

    /// Checks every bound; the message says which one failed.
    fn check(&self) -> Result<(), String> {
        if self.version.is_empty() || self.version.len() > MAX_VERSION_LEN {
            return Err(format!(
                "version must be 1 to {MAX_VERSION_LEN} bytes, got {}",
                self.version.len()
            ));
        }
        if self.version.chars().any(char::is_control) {
            return Err("version must not contain control characters".into());
        }
        if self.issued_at > self.not_after {
            return Err(format!(
                "issued_at {} is after not_after {}",
                self.issued_at, self.not_after
            ));
        }
        if self.binaries.len() > MAX_BINARIES {
            return Err(format!(
                "{} binaries; at most {MAX_BINARIES}",
                self.binaries.len()
            ));
        }
        for (platform, reference) in &self.measurements {
            let platform = platform.as_str();
            if reference.0.len() > MAX_MEASUREMENT_NAMES {
                return Err(format!(
                    "{platform}: {} measurement names; at most {MAX_MEASUREMENT_NAMES}",
                    reference.0.len()
                ));
            }
            for (name, values) in &reference.0 {
                check_measurement_name(name).map_err(|why| format!("{platform}: {why}"))?;
                if values.is_empty() || values.len() > MAX_VALUES_PER_MEASUREMENT {
                    return Err(format!(
                        "{platform}:{name}: {} values; 1 to {MAX_VALUES_PER_MEASUREMENT} allowed",
                        values.len()
                    ));
                }
                for value in values {
                    check_measurement_value(value)
                        .map_err(|why| format!("{platform}:{name}: {why}"))?;
                }
            }
        }
        Ok(())
    }

    /// The payload: a CBOR map with text keys in a fixed order.
    fn to_cbor(&self) -> Result<Vec<u8>, ManifestError> {
        let binaries = self
            .binaries
            .iter()
            .map(|hash| Value::Bytes(hash.to_vec()))
            .collect();
        let measurements = self
            .measurements
            .iter()
            .map(|(platform, reference)| {
                let names = reference
                    .0
                    .iter()
                    .map(|(name, values)| {
                        let values = values.iter().map(|v| Value::Text(v.clone())).collect();
                        (Value::Text(name.clone()), Value::Array(values))
                    })
                    .collect();
                (Value::Text(platform.as_str().into()), Value::Map(names))
            })
            .collect();
        let map = Value::Map(vec![
            (
                Value::Text("version".into()),
                Value::Text(self.version.clone()),
            ),
            (
                Value::Text("issued_at".into()),
                Value::Integer(self.issued_at.into()),
            ),
            (
                Value::Text("not_after".into()),
                Value::Integer(self.not_after.into()),
            ),
            (Value::Text("binaries".into()), Value::Array(binaries)),
            (Value::Text("measurements".into()), Value::Map(measurements)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).map_err(|e| ManifestError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Decodes a verified payload. Exactly the form [`Manifest::to_cbor`] writes is accepted:
    /// the five keys once each, no others, no duplicate entries, no trailing bytes.
    fn from_cbor(bytes: &[u8]) -> Result<Self, String> {
        let mut fields = CborFields::decode("payload", bytes)?;
        let manifest = Manifest {
            version: fields.take_text("version")?,
            issued_at: fields.take_u64("issued_at")?,
            not_after: fields.take_u64("not_after")?,
            binaries: decode_binaries(fields.take_array("binaries")?)?,
            measurements: decode_measurements(fields.take_map("measurements")?)?,
        };
        fields.finish()?;
        manifest.check()?;
        Ok(manifest)
    }
}

/// A value inside `measurements`, where keys are data rather than field names.
fn text(value: Value, what: &str) -> Result<String, String> {
    match value {
        Value::Text(text) => Ok(text),
        _ => Err(format!("{what} must be text")),
    }
}

fn decode_binaries(items: Vec<Value>) -> Result<BTreeSet<[u8; 32]>, String> {
    // Checked before collecting so a hostile count costs nothing beyond what was parsed.
    if items.len() > MAX_BINARIES {
        return Err(format!("{} binaries; at most {MAX_BINARIES}", items.len()));
    }
    let mut binaries = BTreeSet::new();
    for item in items {
        let hash: [u8; 32] = match item {
            Value::Bytes(bytes) => bytes
                .try_into()
                .map_err(|_| "a binary hash is not 32 bytes")?,
            _ => return Err("a binary hash must be a byte string".into()),
        };
        if !binaries.insert(hash) {
            return Err(format!("duplicate binary hash {}", hex::encode(hash)));
        }
    }
    Ok(binaries)
}

fn decode_measurements(
    platforms: Vec<(Value, Value)>,
) -> Result<BTreeMap<EvidenceType, ReferenceValues>, String> {
    let mut out = BTreeMap::new();
    for (platform, names) in platforms {
        let platform = text(platform, "a platform")?;
        // Strict on purpose: a platform this node cannot name is a manifest it cannot apply.
        let evidence_type: EvidenceType = platform
            .parse()
            .map_err(|_| format!("unknown platform {platform:?} (tpm2, tdx, sgx, sev-snp, dev)"))?;
        let Value::Map(names) = names else {
            return Err(format!("{platform}: measurements must be a map"));
        };
        if names.len() > MAX_MEASUREMENT_NAMES {
            return Err(format!(
                "{platform}: {} measurement names; at most {MAX_MEASUREMENT_NAMES}",
                names.len()
            ));
        }
        let mut reference = BTreeMap::new();
        for (name, values) in names {
            let name = text(name, "a measurement name")?;
            let Value::Array(values) = values else {
                return Err(format!("{platform}:{name}: values must be an array"));
            };
            if values.len() > MAX_VALUES_PER_MEASUREMENT {
                return Err(format!(
                    "{platform}:{name}: {} values; at most {MAX_VALUES_PER_MEASUREMENT}",
                    values.len()
                ));
            }
            let mut set = BTreeSet::new();
            for value in values {
                let value = text(value, "a measurement value")?;
                if !set.insert(value) {
                    return Err(format!("{platform}:{name}: duplicate value"));
                }
            }
            if reference.insert(name.clone(), set).is_some() {
                return Err(format!("{platform}: duplicate measurement {name:?}"));
            }
        }
        if out
            .insert(evidence_type, ReferenceValues(reference))
            .is_some()
        {
            return Err(format!("duplicate platform {platform:?}"));
        }
    }
    Ok(out)
}

fn check_measurement_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_MEASUREMENT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "measurement name {name:?} must be 1 to {MAX_MEASUREMENT_NAME_LEN} of [a-z0-9_-]"
        ))
    }
}

fn check_measurement_value(value: &str) -> Result<(), String> {
    let well_formed = !value.is_empty()
        && value.len() <= MAX_MEASUREMENT_VALUE_LEN
        && value.len().is_multiple_of(2)
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} must be lowercase hex of whole bytes, at most \
             {MAX_MEASUREMENT_VALUE_LEN} characters"
        ))
    }
}

/// A manifest as the release key signed it: the COSE_Sign1 bytes that are distributed and
/// stored. Its SHA-256 identifies the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest(Vec<u8>);

impl SignedManifest {
    /// The envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The envelope bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Verifies a signed manifest under the pinned `release_key` and returns its content if it
    /// is still valid at `now_secs` (unix seconds; valid through `not_after` inclusive).
    ///
    /// Order matters: length, envelope shape, key id, signature, and only then the payload.
    pub fn open(
        bytes: &[u8],
        release_key: &VerifyingKey,
        now_secs: u64,
    ) -> Result<Manifest, ManifestError> {
        let manifest = Self::open_ignoring_expiry(bytes, release_key)?;
        if now_secs > manifest.not_after {
            return Err(ManifestError::Expired {
                not_after: manifest.not_after,
                now: now_secs,
            });
        }
        Ok(manifest)
    }

    /// Like [`SignedManifest::open`] but without the expiry check, for showing an operator what
    /// an expired manifest said. Never use the result to admit anything.
    pub fn open_ignoring_expiry(
        bytes: &[u8],
        release_key: &VerifyingKey,
    ) -> Result<Manifest, ManifestError> {
        let opened = signed::open(bytes, LABEL, MAX_MANIFEST_LEN).map_err(|e| match e {
            SignedError::TooLarge { len, max } => ManifestError::TooLarge { len, max },
            other => ManifestError::Malformed(other.to_string()),
        })?;
        let expected = release_key_id(release_key);
        if opened.key_id() != expected {
            return Err(ManifestError::WrongKey {
                expected: hex::encode(expected),
                found: hex::encode(opened.key_id()),
            });
        }
        opened
            .verify(release_key)
            .map_err(|_| ManifestError::BadSignature)?;
        // Authentic from here on; what follows checks that the release tooling wrote sense.
        if opened.content_type() != Some(CONTENT_TYPE) {
            return Err(ManifestError::Malformed(format!(
                "content type {:?}, expected {CONTENT_TYPE}",
                opened.content_type()
            )));
        }
        Manifest::from_cbor(opened.payload()).map_err(ManifestError::Malformed)
    }
}

/// The key identifier a release key signs under: the first 8 bytes of SHA-256 of its public
/// key. Lets a node tell "signed by another release key" apart from "tampered with".
pub fn release_key_id(key: &VerifyingKey) -> [u8; 8] {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Parses a release public key written as 64 hex characters (surrounding whitespace ignored),
/// the form `ztmesh manifest keygen` prints and configuration files pin.
pub fn parse_release_key(text: &str) -> Result<VerifyingKey, ManifestError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(ManifestError::InvalidKey(format!(
            "expected 64 hex characters, got {}",
            text.len()
        )));
    }
    let bytes: [u8; 32] = hex::decode(text)
        .map_err(|e| ManifestError::InvalidKey(e.to_string()))?
        .try_into()
        .map_err(|_| ManifestError::InvalidKey("not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ManifestError::InvalidKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_750_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn reference(name: &str, values: &[&str]) -> ReferenceValues {
        ReferenceValues(BTreeMap::from([(
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        )]))
    }

    fn sample() -> Manifest {
        Manifest::new(
            "1.2.3",
            NOW,
            NOW + 3600,
            BTreeSet::from([[1u8; 32], [2u8; 32]]),
            BTreeMap::from([
                (EvidenceType::Tdx, reference("mrtd", &["aa", "bb"])),
                (EvidenceType::Tpm2, reference("pcr7", &["0011"])),
            ]),
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let manifest = sample();
        let signed = manifest.sign(&key(1)).unwrap();
        let opened = SignedManifest::open(signed.as_bytes(), &key(1).verifying_key(), NOW).unwrap();
        assert_eq!(opened, manifest);
        assert!(opened.allows_binary(&[1; 32]));
        assert!(!opened.allows_binary(&[3; 32]));
        assert_eq!(
            opened.reference_for(EvidenceType::Tdx),
            Some(&reference("mrtd", &["aa", "bb"]))
        );
        assert_eq!(opened.reference_for(EvidenceType::SevSnp), None);
    }

    #[test]
    fn reference_values_check_measured_evidence() {
        let manifest = sample();
        let tdx = manifest.reference_for(EvidenceType::Tdx).unwrap();
        let good = BTreeMap::from([("mrtd".to_owned(), "BB".to_owned())]);
        let bad = BTreeMap::from([("mrtd".to_owned(), "cc".to_owned())]);
        assert!(tdx.check(&good).is_ok());
        assert!(tdx.check(&bad).is_err());
    }

    #[test]
    fn another_release_key_is_refused() {
        let signed = sample().sign(&key(1)).unwrap();
        assert!(matches!(
            SignedManifest::open(signed.as_bytes(), &key(2).verifying_key(), NOW),
            Err(ManifestError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_forged_signature_under_the_right_key_id_is_refused() {
        // Signed by key 2 but claiming key 1's id: only the signature check can catch it.
        let payload = sample().to_cbor().unwrap();
        let fields = ProtectedFields {
            content_type: Some(CONTENT_TYPE.into()),
            issued_at: None,
        };
        let forged = signed::sign_with(
            LABEL,
            &release_key_id(&key(1).verifying_key()),
            &fields,
            payload,
            None,
            |tbs| key(2).sign(tbs).to_bytes(),
        )
        .unwrap();
        assert_eq!(
            SignedManifest::open(&forged, &key(1).verifying_key(), NOW),
            Err(ManifestError::BadSignature)
        );
    }

    #[test]
    fn another_label_is_refused() {
        let payload = sample().to_cbor().unwrap();
        let other = signed::sign(
            "ztmesh/v1/gossip",
            &release_key_id(&key(1).verifying_key()),
            payload,
            None,
            |tbs| key(1).sign(tbs).to_bytes(),
        )
        .unwrap();
        assert_eq!(
            SignedManifest::open(&other, &key(1).verifying_key(), NOW),
            Err(ManifestError::BadSignature)
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let signed = sample().sign(&key(1)).unwrap().into_bytes();
        let verifying = key(1).verifying_key();
        for index in 0..signed.len() {
            let mut mutated = signed.clone();
            mutated[index] ^= 0x01;
            assert!(
                SignedManifest::open(&mutated, &verifying, NOW).is_err(),
                "flipping byte {index} was accepted"
            );
        }
    }

    #[test]
    fn expiry_is_inclusive_of_not_after() {
        let signed = sample().sign(&key(1)).unwrap();
        let verifying = key(1).verifying_key();
        assert!(SignedManifest::open(signed.as_bytes(), &verifying, NOW + 3600).is_ok());
        assert_eq!(
            SignedManifest::open(signed.as_bytes(), &verifying, NOW + 3601),
            Err(ManifestError::Expired {
                not_after: NOW + 3600,
                now: NOW + 3601
            })
        );
        assert!(SignedManifest::open_ignoring_expiry(signed.as_bytes(), &verifying).is_ok());
    }

    #[test]
    fn bounds_are_enforced_when_building() {
        let too_many: BTreeSet<[u8; 32]> = (0..=MAX_BINARIES)
            .map(|i| {
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
                hash
            })
            .collect();
        let at_limit: BTreeSet<[u8; 32]> = too_many.iter().copied().take(MAX_BINARIES).collect();
        let build = |version: &str, binaries, measurements| {
            Manifest::new(version, NOW, NOW + 1, binaries, measurements)
        };
        assert!(build("v", at_limit, BTreeMap::new()).is_ok());
        assert!(matches!(
            build("v", too_many, BTreeMap::new()),
            Err(ManifestError::Invalid(_))
        ));
        assert!(build(
            &"v".repeat(MAX_VERSION_LEN),
            BTreeSet::new(),
            BTreeMap::new()
        )
        .is_ok());
        assert!(build(
            &"v".repeat(MAX_VERSION_LEN + 1),
            BTreeSet::new(),
            BTreeMap::new()
        )
        .is_err());
        assert!(build("", BTreeSet::new(), BTreeMap::new()).is_err());

        let values: Vec<String> = (0..=MAX_VALUES_PER_MEASUREMENT)
            .map(|i| format!("{i:04x}"))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let over = BTreeMap::from([(EvidenceType::Tdx, reference("mrtd", &refs))]);
        let at = BTreeMap::from([(
            EvidenceType::Tdx,
            reference("mrtd", &refs[..MAX_VALUES_PER_MEASUREMENT]),
        )]);
        assert!(build("v", BTreeSet::new(), at).is_ok());
        assert!(build("v", BTreeSet::new(), over).is_err());

        for bad in ["AA", "abc", "zz", ""] {
            let measurements = BTreeMap::from([(EvidenceType::Tdx, reference("mrtd", &[bad]))]);
            assert!(
                build("v", BTreeSet::new(), measurements).is_err(),
                "{bad:?}"
            );
        }
        assert!(Manifest::new("v", NOW + 1, NOW, BTreeSet::new(), BTreeMap::new()).is_err());
    }

    /// A payload over the bounds signed by the real key (a buggy release tool) is still refused.
    #[test]
    fn bounds_are_enforced_when_decoding() {
        let binaries = (0..=MAX_BINARIES)
            .map(|i| Value::Bytes([i as u8, (i >> 8) as u8].repeat(16)))
            .collect();
        let map = Value::Map(vec![
            (Value::Text("version".into()), Value::Text("v".into())),
            (Value::Text("issued_at".into()), Value::Integer(NOW.into())),
            (
                Value::Text("not_after".into()),
                Value::Integer((NOW + 1).into()),
            ),
            (Value::Text("binaries".into()), Value::Array(binaries)),
            (Value::Text("measurements".into()), Value::Map(vec![])),
        ]);
        let mut payload = Vec::new();
        ciborium::into_writer(&map, &mut payload).unwrap();
        let fields = ProtectedFields {
            content_type: Some(CONTENT_TYPE.into()),
            issued_at: None,
        };
        let bytes = signed::sign_with(
            LABEL,
            &release_key_id(&key(1).verifying_key()),
            &fields,
            payload,
            None,
            |tbs| key(1).sign(tbs).to_bytes(),
        )
        .unwrap();
        assert!(matches!(
            SignedManifest::open(&bytes, &key(1).verifying_key(), NOW),
            Err(ManifestError::Malformed(why)) if why.contains("binaries")
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let junk = vec![0xff; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            SignedManifest::open(&junk, &key(1).verifying_key(), NOW),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn release_key_text_round_trips() {
        let verifying = key(5).verifying_key();
        let text = format!("  {}\n", hex::encode(verifying.as_bytes()));
        assert_eq!(parse_release_key(&text).unwrap(), verifying);
        assert!(parse_release_key("abcd").is_err());
        assert!(parse_release_key(&"zz".repeat(32)).is_err());
    }

    /// Pins the wire form for a fixed key, so a change in encoding shows up as a failing test
    /// rather than as manifests that old nodes refuse.
    #[test]
    fn wire_form_is_stable() {
        let manifest = Manifest::new(
            "1.0.0",
            1_700_000_000,
            1_800_000_000,
            BTreeSet::from([[0xab; 32]]),
            BTreeMap::from([(EvidenceType::SevSnp, reference("measurement", &["00ff"]))]),
        )
        .unwrap();
        let signed = manifest.sign(&key(7)).unwrap();
        let digest = hex::encode(Sha256::digest(signed.as_bytes()));
        assert_eq!(digest, PINNED_SHA256);
    }

    const PINNED_SHA256: &str = "ca7550601691ce7fc8877038e8a0f97d8a2241a3612881da2f888992c01272f9";

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(SignedManifest::open(&bytes, &key(1).verifying_key(), NOW).is_err());
        }

        #[test]
        fn mutated_manifests_never_panic_and_never_pass(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = sample().sign(&key(1)).unwrap().into_bytes();
            let at = index.index(bytes.len());
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            prop_assert!(SignedManifest::open(&bytes, &key(1).verifying_key(), NOW).is_err());
        }
    }
}
