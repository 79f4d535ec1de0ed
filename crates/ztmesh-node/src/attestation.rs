//! Attestation on live links: what this node answers a `TeeChallenge` with, and how it judges a
//! peer's `TeeResponse`.
//!
//! Either side of a link may send `TeeChallenge { nonce }`. The responder produces evidence whose
//! report data is `report_data_binding(nonce, its TLS certificate's SubjectPublicKeyInfo)`, so
//! the evidence is fresh (the nonce) and bound to the key that authenticated this very link. The
//! evidence travels as the CBOR map `{evidence, collateral?}` of enrollment
//! ([`AttestationPayload`]), so a TPM quote brings its attestation key and a DCAP quote its
//! collateral; the verifier trusts only the keys and roots its own configuration names.
//!
//! The verifier checks, in order: the nonce is the one it sent, the evidence verifies under the
//! `[attestation]` policy of `node.toml` with the binding of the peer's TLS key (the handshake
//! certificate or a rotated one announced on the link), and the measurements are among those the
//! signed release manifest allows for that platform. The peer's reported binary hash is judged
//! separately against the manifest. Results feed the trust book: a success refreshes the
//! attestation for `attestation_validity` (24 h by default), a failure counts towards demotion.
//!
//! The `dev` attester is a simulated TEE: its key sits in a file next to the node. It exists for
//! demos and machines without hardware; a node that accepts it logs so at start, and every tier
//! it grants shows the platform `dev`.
//!
//! The `tpm2` attester quotes PCRs with the attestation key `ztmesh enroll --attestation-type
//! tpm2` created and the CA registered ([`crate::tpm_device`]). A quote runs tpm2-tools and can
//! take seconds, so [`Attestor::respond`] is async and runs it on the blocking pool. The node
//! trusts its own AK when it judges its own evidence (self-attestation); peers accept it only
//! when their `tpm2_attestation_keys` list it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;
use ztmesh_attest::manifest::{Manifest, SignedManifest};
use ztmesh_attest::{AttestError, EvidenceType, Expectations, ReferenceValues, Verdict};
use ztmesh_core::link::LinkMessage;
use ztmesh_trust::{BinaryHash, Platform};

use crate::tpm_device::TpmDevice;
use ztmesh_attest::policy::{verify_evidence, AttestationPayload, EnrollAttestationPolicy};

/// How old link evidence may be by its own timestamp (where it carries one).
pub const LINK_EVIDENCE_MAX_AGE: Duration = Duration::from_secs(300);

/// How long a challenge may stay unanswered before it counts as a failed verification.
pub const CHALLENGE_TIMEOUT: Duration = ztmesh_core::link_machine::CHALLENGE_TIMEOUT;

/// What this node answers a challenge with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attester {
    /// No attester: the answer says so, and peers hold this node below Tier 1.
    #[default]
    None,
    /// The simulated TEE (demos only): signs with `dev_tee_key_file`.
    Dev,
    /// The TPM at `tpm_tcti`: quotes with the attestation key persisted at enrollment.
    Tpm2,
}

impl Attester {
    /// How `ztmesh status` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Attester::None => "none",
            Attester::Dev => "dev (simulated TEE)",
            Attester::Tpm2 => "tpm2",
        }
    }
}

/// `[attestation]` of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// What this node answers challenges with.
    #[serde(default)]
    pub attester: Attester,
    /// `dev` attester: the simulated TEE's Ed25519 seed, 64 hex characters (relative paths are
    /// inside the node directory). Read at every challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_tee_key_file: Option<PathBuf>,
    /// Danger, demos only: accept peers' `dev` evidence signed by this dev TEE public key (64
    /// hex characters), and count it toward Tier 1. Absent (and `dev_tee_public_keys` empty):
    /// `dev` evidence is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_tee_public_key: Option<String>,
    /// Danger, demos only: more dev TEE public keys accepted like `dev_tee_public_key`, one per
    /// simulated device (each node of the demo has its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_tee_public_keys: Vec<String>,
    /// `tpm2` attester: the tpm2-tools TCTI of the TPM, e.g. `device:/dev/tpmrm0` (written by
    /// `ztmesh enroll --tpm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_tcti: Option<String>,
    /// TPM attestation keys (PEM files) whose quotes this node accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpm2_attestation_keys: Vec<PathBuf>,
    /// The pinned release public key (64 hex characters) that signs release manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_key: Option<String>,
    /// The signed release manifest (COSE file from `ztmesh manifest sign`). Without it no peer
    /// binary is "in a signed manifest", so no peer reaches Tier 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    /// Seconds between re-attestations of each linked peer (1..=86400).
    #[serde(default = "default_reattest_secs")]
    pub reattest_secs: u64,
}

fn default_reattest_secs() -> u64 {
    3600
}

impl Default for AttestationConfig {
    fn default() -> Self {
        AttestationConfig {
            attester: Attester::None,
            dev_tee_key_file: None,
            dev_tee_public_key: None,
            dev_tee_public_keys: Vec::new(),
            tpm_tcti: None,
            tpm2_attestation_keys: Vec::new(),
            release_key: None,
            manifest: None,
            reattest_secs: default_reattest_secs(),
        }
    }
}

impl AttestationConfig {
    /// Checks what the types do not carry.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=86_400).contains(&self.reattest_secs) {
            return Err("attestation.reattest_secs must be between 1 and 86400".into());
        }
        if self.attester == Attester::Dev && self.dev_tee_key_file.is_none() {
            return Err("attestation.attester = \"dev\" needs attestation.dev_tee_key_file".into());
        }
        if self.attester == Attester::Tpm2 {
            let tcti = self.tpm_tcti.as_deref().ok_or(
                "attestation.attester = \"tpm2\" needs attestation.tpm_tcti (the TPM's tpm2-tools TCTI)",
            )?;
            crate::tpm_device::validate_tcti(tcti)
                .map_err(|e| format!("attestation.tpm_tcti: {e}"))?;
        }
        if self.manifest.is_some() != self.release_key.is_some() {
            return Err(
                "attestation.manifest and attestation.release_key go together (the key is pinned to check the manifest)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Why a peer's response did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkAttestError {
    /// The peer has no attester (`none`): not a failure, just no attestation.
    #[error("the peer has no attester")]
    NoAttester,
    /// A response without an outstanding challenge, or for another nonce.
    #[error("response to a challenge this side did not send (wrong nonce)")]
    WrongNonce,
    /// The evidence type is unknown.
    #[error("unknown evidence type {0:?}")]
    UnknownType(String),
    /// The manifest allows no measurement for the platform.
    #[error("the release manifest lists no measurements for {0}")]
    PlatformNotInManifest(&'static str),
    /// No answer within [`CHALLENGE_TIMEOUT`].
    #[error("challenge unanswered for {}s", CHALLENGE_TIMEOUT.as_secs())]
    Unanswered,
    /// The evidence was refused.
    #[error("{} ({})", .0, .0.reason())]
    Refused(AttestError),
}

impl LinkAttestError {
    /// A stable snake_case reason for logs and status pages.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkAttestError::NoAttester => "no_attester",
            LinkAttestError::WrongNonce => "wrong_nonce",
            LinkAttestError::UnknownType(_) => "unknown_type",
            LinkAttestError::PlatformNotInManifest(_) => "platform_not_in_manifest",
            LinkAttestError::Unanswered => "unanswered",
            LinkAttestError::Refused(error) => error.reason(),
        }
    }
}

/// A response that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The attesting platform.
    pub platform: Platform,
    /// What the verifier measured.
    pub verdict: Verdict,
    /// The binary hash the peer reported.
    pub binary: BinaryHash,
    /// Whether the signed manifest lists that binary.
    pub binary_in_manifest: bool,
}

/// The attester and the verifier of one node, built from `[attestation]` at start.
#[derive(Debug)]
pub struct Attestor {
    attester: Attester,
    dev_tee_key_file: Option<PathBuf>,
    /// The TPM of the `tpm2` attester.
    tpm: Option<TpmDevice>,
    policy: EnrollAttestationPolicy,
    manifest: Option<Manifest>,
    binary_sha256: [u8; 32],
    reattest: Duration,
}

/// Resolves `path` against the node directory.
fn in_dir(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// SHA-256 of the running executable (what a node reports as its binary hash).
pub fn own_binary_sha256() -> Result<[u8; 32], String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the executable: {e}"))?;
    let bytes = std::fs::read(&exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
    Ok(Sha256::digest(&bytes).into())
}

/// Parses 64 hex characters into 32 bytes.
fn hex32(text: &str, what: &str) -> Result<[u8; 32], String> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what}: expected 64 hex characters"))
}

/// Maps an evidence type to the trust book's platform.
pub fn platform_of(evidence_type: EvidenceType) -> Option<Platform> {
    Some(match evidence_type {
        EvidenceType::Tpm2 => Platform::Tpm2,
        EvidenceType::Tdx => Platform::Tdx,
        EvidenceType::Sgx => Platform::Sgx,
        EvidenceType::SevSnp => Platform::SevSnp,
        EvidenceType::Dev => Platform::Dev,
        _ => return None,
    })
}

impl Attestor {
    /// Builds the attestor from `config`, reading its files from `dir`. The manifest must
    /// verify under the pinned release key and be unexpired at `now_secs`. A `tpm2` attester's
    /// attestation key is read from the TPM here, once, on the calling thread.
    pub fn load(
        dir: &Path,
        config: &AttestationConfig,
        binary_sha256: [u8; 32],
        now_secs: u64,
    ) -> Result<Self, String> {
        config.validate()?;
        let dev_tee_keys = config
            .dev_tee_public_key
            .iter()
            .map(|text| (text, "attestation.dev_tee_public_key"))
            .chain(
                config
                    .dev_tee_public_keys
                    .iter()
                    .map(|text| (text, "attestation.dev_tee_public_keys")),
            )
            .map(|(text, field)| {
                let bytes = hex32(text, field)?;
                VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{field}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut tpm2_attestation_keys = Vec::new();
        for path in &config.tpm2_attestation_keys {
            let path = in_dir(dir, path);
            let pem =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            tpm2_attestation_keys.push(
                ztmesh_attest::tpm2::AttestationKey::from_pem(&pem)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            );
        }
        let manifest = match (&config.release_key, &config.manifest) {
            (Some(key), Some(path)) => {
                let key = ztmesh_attest::manifest::parse_release_key(key)
                    .map_err(|e| format!("attestation.release_key: {e}"))?;
                let path = in_dir(dir, path);
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Some(
                    SignedManifest::open(&bytes, &key, now_secs)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                )
            }
            _ => None,
        };
        let tpm = match (config.attester, &config.tpm_tcti) {
            (Attester::Tpm2, Some(tcti)) => {
                let device =
                    TpmDevice::new(tcti, dir).map_err(|e| format!("attestation.tpm_tcti: {e}"))?;
                // Only a killed node leaves these, and this node is the one using `dir`.
                device.remove_stale_work_dirs();
                // Fail at start, not at the first challenge; and trust this AK when judging
                // this node's own quotes.
                let pem = device.attestation_key_pem().map_err(|e| {
                    format!(
                        "the TPM at {tcti} has no usable attestation key at {} (enroll with \
                         --attestation-type tpm2 first): {e}",
                        crate::tpm_device::ATTESTATION_KEY_HANDLE
                    )
                })?;
                let own = ztmesh_attest::tpm2::AttestationKey::from_pem(&pem)
                    .map_err(|e| format!("the TPM's attestation key: {e}"))?;
                if !tpm2_attestation_keys.contains(&own) {
                    tpm2_attestation_keys.push(own);
                }
                Some(device)
            }
            _ => None,
        };
        let attestor = Attestor {
            attester: config.attester,
            dev_tee_key_file: config.dev_tee_key_file.as_deref().map(|p| in_dir(dir, p)),
            tpm,
            policy: EnrollAttestationPolicy {
                required: false,
                dev_tee_keys,
                tpm2_attestation_keys,
            },
            manifest,
            binary_sha256,
            reattest: Duration::from_secs(config.reattest_secs),
        };
        if attestor.attester == Attester::Dev {
            // Fail at start, not at the first challenge.
            attestor.dev_signing_key()?;
        }
        Ok(attestor)
    }

    /// Whether `dev` evidence is accepted (and so counts toward Tier 1).
    pub fn dev_allowed(&self) -> bool {
        !self.policy.dev_tee_keys.is_empty()
    }

    /// The attester this node answers with.
    pub fn attester(&self) -> Attester {
        self.attester
    }

    /// The signed manifest in force, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// SHA-256 of this node's executable.
    pub fn binary_sha256(&self) -> [u8; 32] {
        self.binary_sha256
    }

    /// Seconds between re-attestations.
    pub fn reattest_interval(&self) -> Duration {
        self.reattest
    }

    /// Whether the manifest lists `hash`.
    pub fn binary_in_manifest(&self, hash: &[u8; 32]) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|m| m.allows_binary(hash))
    }

    fn dev_signing_key(&self) -> Result<SigningKey, String> {
        let path = self
            .dev_tee_key_file
            .as_ref()
            .ok_or("no attestation.dev_tee_key_file")?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let seed = Zeroizing::new(hex32(&text, &path.display().to_string())?);
        Ok(SigningKey::from_bytes(&seed))
    }

    /// The evidence answering `nonce` for the TLS key `own_tls_spki` (the CBOR
    /// [`AttestationPayload`] and its type), `None` without an attester. A TPM quote runs on
    /// the blocking pool.
    pub async fn evidence(
        &self,
        nonce: &[u8],
        own_tls_spki: &[u8],
        now_secs: u64,
    ) -> Result<Option<(EvidenceType, Vec<u8>)>, String> {
        let report_data = ztmesh_attest::report_data_binding(nonce, own_tls_spki);
        match (&self.attester, &self.tpm) {
            (Attester::Tpm2, Some(device)) => {
                let device = device.clone();
                crate::tpm_device::run_blocking(move || device.quote(&report_data))
                    .await
                    .map(|payload| Some((EvidenceType::Tpm2, payload.to_cbor())))
                    .map_err(|e| format!("tpm2 attester ({}): {e}", e.reason()))
            }
            _ => self.evidence_blocking(&report_data, now_secs),
        }
    }

    /// [`Self::evidence`] on the calling thread (which a TPM quote blocks).
    fn evidence_blocking(
        &self,
        report_data: &[u8; 64],
        now_secs: u64,
    ) -> Result<Option<(EvidenceType, Vec<u8>)>, String> {
        match self.attester {
            Attester::None => Ok(None),
            Attester::Dev => {
                let key = self
                    .dev_signing_key()
                    .map_err(|e| format!("dev attester has no key: {e}"))?;
                // The simulated TEE "measures" the running binary, as at enrollment.
                let evidence =
                    ztmesh_attest::dev::generate(&key, &self.binary_sha256, report_data, now_secs);
                let payload = AttestationPayload {
                    evidence,
                    collateral: None,
                };
                Ok(Some((EvidenceType::Dev, payload.to_cbor())))
            }
            Attester::Tpm2 => {
                let device = self.tpm.as_ref().ok_or("tpm2 attester without a TPM")?;
                let payload = device
                    .quote(report_data)
                    .map_err(|e| format!("tpm2 attester ({}): {e}", e.reason()))?;
                Ok(Some((EvidenceType::Tpm2, payload.to_cbor())))
            }
        }
    }

    /// The evidence answering `nonce` for the TLS key `own_tls_spki`, as a `TeeResponse`. A node
    /// without an attester (or whose attester fails) answers `none`.
    pub async fn respond(&self, nonce: &[u8], own_tls_spki: &[u8], now_secs: u64) -> LinkMessage {
        let evidence = self.evidence(nonce, own_tls_spki, now_secs).await;
        self.response(nonce, evidence)
    }

    /// [`Self::respond`] on the calling thread, which a TPM quote blocks for up to seconds: not
    /// for async tasks.
    pub fn respond_blocking(
        &self,
        nonce: &[u8],
        own_tls_spki: &[u8],
        now_secs: u64,
    ) -> LinkMessage {
        let report_data = ztmesh_attest::report_data_binding(nonce, own_tls_spki);
        let evidence = self.evidence_blocking(&report_data, now_secs);
        self.response(nonce, evidence)
    }

    fn response(
        &self,
        nonce: &[u8],
        evidence: Result<Option<(EvidenceType, Vec<u8>)>, String>,
    ) -> LinkMessage {
        let (evidence_type, evidence) = match evidence {
            Ok(Some((kind, payload))) => (kind.as_str().to_owned(), payload),
            Ok(None) => ("none".to_owned(), Vec::new()),
            Err(error) => {
                tracing::warn!(%error, "the attester failed: answering without evidence");
                ("none".to_owned(), Vec::new())
            }
        };
        LinkMessage::TeeResponse {
            nonce: nonce.to_vec(),
            evidence_type,
            evidence,
            binary_sha256: self.binary_sha256.to_vec(),
        }
    }

    /// Judges a `TeeResponse` to the challenge `sent` (the nonce this side sent, if any), from a
    /// peer whose TLS keys on this link are `peer_tls_spkis` (the handshake key first, then a
    /// rotated one).
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        sent: Option<&[u8]>,
        nonce: &[u8],
        evidence_type: &str,
        evidence: &[u8],
        binary_sha256: &[u8],
        peer_tls_spkis: &[&[u8]],
        now_secs: u64,
    ) -> Result<Verified, LinkAttestError> {
        if sent != Some(nonce) {
            return Err(LinkAttestError::WrongNonce);
        }
        if evidence_type == "none" {
            return Err(LinkAttestError::NoAttester);
        }
        let kind: EvidenceType = evidence_type
            .parse()
            .map_err(|_| LinkAttestError::UnknownType(evidence_type.to_owned()))?;
        let platform =
            platform_of(kind).ok_or_else(|| LinkAttestError::UnknownType(evidence_type.into()))?;
        let reference = match &self.manifest {
            Some(manifest) => manifest
                .reference_for(kind)
                .cloned()
                .ok_or(LinkAttestError::PlatformNotInManifest(kind.as_str()))?,
            None => ReferenceValues::default(),
        };
        let payload = AttestationPayload::from_cbor(evidence).map_err(LinkAttestError::Refused)?;
        let binary: [u8; 32] = binary_sha256
            .try_into()
            .map_err(|_| LinkAttestError::Refused(AttestError::Malformed("binary hash".into())))?;
        let mut last = LinkAttestError::Refused(AttestError::Malformed("no TLS key".into()));
        for spki in peer_tls_spkis {
            let expectations = Expectations {
                report_data: Some(ztmesh_attest::report_data_binding(nonce, spki).to_vec()),
                reference: reference.clone(),
                max_age: Some(LINK_EVIDENCE_MAX_AGE),
                allow_dev: self.dev_allowed(),
            };
            match verify_evidence(&self.policy, kind, &payload, expectations, now_secs) {
                Ok(verdict) => {
                    return Ok(Verified {
                        platform,
                        verdict,
                        binary: BinaryHash(binary),
                        binary_in_manifest: self.binary_in_manifest(&binary),
                    })
                }
                Err(error) => last = LinkAttestError::Refused(error),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_attest::manifest::Manifest as M;

    const NOW: u64 = 1_800_000_000;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        responder: Attestor,
        verifier: Attestor,
    }

    /// A dev responder and a verifier trusting its TEE key, with a manifest that allows the
    /// responder's binary (`binary_listed`) and measurement (`measurement_listed`).
    fn fixture(binary_listed: bool, measurement_listed: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tee = SigningKey::from_bytes(&[7; 32]);
        write(dir.path(), "tee.key", hex::encode([7u8; 32]).as_bytes());
        let binary = [0xb1; 32];
        let release = SigningKey::from_bytes(&[9; 32]);
        let mut measurements = std::collections::BTreeMap::new();
        let allowed = if measurement_listed { binary } else { [0; 32] };
        measurements.insert(
            EvidenceType::Dev,
            ReferenceValues(
                [(
                    "measurement".to_owned(),
                    [hex::encode(allowed)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
        );
        let binaries = if binary_listed {
            [binary].into_iter().collect()
        } else {
            [[0xee; 32]].into_iter().collect()
        };
        let manifest = M::new("1.0", NOW - 10, NOW + 3600, binaries, measurements)
            .unwrap()
            .sign(&release)
            .unwrap();
        write(dir.path(), "manifest.cose", manifest.as_bytes());
        let responder = Attestor::load(
            dir.path(),
            &AttestationConfig {
                attester: Attester::Dev,
                dev_tee_key_file: Some("tee.key".into()),
                ..AttestationConfig::default()
            },
            binary,
            NOW,
        )
        .unwrap();
        let verifier = Attestor::load(
            dir.path(),
            &AttestationConfig {
                dev_tee_public_key: Some(hex::encode(tee.verifying_key().as_bytes())),
                release_key: Some(hex::encode(release.verifying_key().as_bytes())),
                manifest: Some("manifest.cose".into()),
                ..AttestationConfig::default()
            },
            [0; 32],
            NOW,
        )
        .unwrap();
        Fixture {
            _dir: dir,
            responder,
            verifier,
        }
    }

    fn judge(
        f: &Fixture,
        sent: &[u8],
        signed_for: &[u8],
        keys: &[&[u8]],
    ) -> Result<Verified, LinkAttestError> {
        let LinkMessage::TeeResponse {
            nonce,
            evidence_type,
            evidence,
            binary_sha256,
        } = f.responder.respond_blocking(sent, signed_for, NOW)
        else {
            panic!("not a response")
        };
        f.verifier.verify(
            Some(sent),
            &nonce,
            &evidence_type,
            &evidence,
            &binary_sha256,
            keys,
            NOW,
        )
    }

    #[test]
    fn bound_dev_evidence_verifies_and_reports_the_manifest_binary() {
        let f = fixture(true, true);
        let verified = judge(&f, &[1; 32], b"tls-key", &[b"old-key", b"tls-key"]).unwrap();
        assert_eq!(verified.platform, Platform::Dev);
        assert!(verified.binary_in_manifest);
        let f = fixture(false, true);
        let verified = judge(&f, &[1; 32], b"tls-key", &[b"tls-key"]).unwrap();
        assert!(!verified.binary_in_manifest);
    }

    #[test]
    fn evidence_for_another_tls_key_or_nonce_is_refused() {
        let f = fixture(true, true);
        let error = judge(&f, &[1; 32], b"other-key", &[b"tls-key"]).unwrap_err();
        assert_eq!(error.reason(), "wrong_nonce", "{error}");
        // The response echoes a nonce this side never sent.
        let LinkMessage::TeeResponse {
            nonce,
            evidence_type,
            evidence,
            binary_sha256,
        } = f.responder.respond_blocking(&[2; 32], b"tls-key", NOW)
        else {
            panic!()
        };
        let error = f
            .verifier
            .verify(
                Some(&[1; 32]),
                &nonce,
                &evidence_type,
                &evidence,
                &binary_sha256,
                &[b"tls-key"],
                NOW,
            )
            .unwrap_err();
        assert_eq!(error, LinkAttestError::WrongNonce);
        let error = f
            .verifier
            .verify(
                None,
                &nonce,
                &evidence_type,
                &evidence,
                &binary_sha256,
                &[b"tls-key"],
                NOW,
            )
            .unwrap_err();
        assert_eq!(error, LinkAttestError::WrongNonce);
    }

    #[test]
    fn measurement_outside_the_manifest_is_refused() {
        let f = fixture(true, false);
        let error = judge(&f, &[1; 32], b"tls-key", &[b"tls-key"]).unwrap_err();
        assert_eq!(error.reason(), "wrong_measurement", "{error}");
    }

    #[test]
    fn swapped_tee_key_is_refused_and_no_attester_is_not_a_failure() {
        let f = fixture(true, true);
        write(f._dir.path(), "tee.key", hex::encode([8u8; 32]).as_bytes());
        let error = judge(&f, &[1; 32], b"tls-key", &[b"tls-key"]).unwrap_err();
        assert_eq!(error.reason(), "bad_signature", "{error}");
        let error = f
            .verifier
            .verify(
                Some(&[1; 32]),
                &[1; 32],
                "none",
                &[],
                &[0; 32],
                &[b"k"],
                NOW,
            )
            .unwrap_err();
        assert_eq!(error, LinkAttestError::NoAttester);
    }

    #[test]
    fn dev_evidence_is_refused_without_a_trusted_dev_key() {
        let f = fixture(true, true);
        let strict =
            Attestor::load(f._dir.path(), &AttestationConfig::default(), [0; 32], NOW).unwrap();
        let LinkMessage::TeeResponse {
            nonce,
            evidence_type,
            evidence,
            binary_sha256,
        } = f.responder.respond_blocking(&[1; 32], b"k", NOW)
        else {
            panic!()
        };
        let error = strict
            .verify(
                Some(&[1; 32]),
                &nonce,
                &evidence_type,
                &evidence,
                &binary_sha256,
                &[b"k"],
                NOW,
            )
            .unwrap_err();
        assert_eq!(error.reason(), "dev_not_allowed", "{error}");
    }

    #[test]
    fn garbage_evidence_and_types_are_typed_errors() {
        let f = fixture(true, true);
        for (kind, evidence) in [
            ("dev", &b"\xff\x00garbage"[..]),
            ("dev", &[][..]),
            ("quantum", &b"x"[..]),
            ("tpm2", &b"\xa0"[..]),
        ] {
            let error = f
                .verifier
                .verify(
                    Some(&[1; 32]),
                    &[1; 32],
                    kind,
                    evidence,
                    &[0; 32],
                    &[b"k"],
                    NOW,
                )
                .unwrap_err();
            assert_ne!(error, LinkAttestError::NoAttester, "{kind}");
        }
    }

    #[test]
    fn config_refuses_incoherent_settings() {
        let bad = [
            AttestationConfig {
                reattest_secs: 0,
                ..AttestationConfig::default()
            },
            AttestationConfig {
                attester: Attester::Dev,
                ..AttestationConfig::default()
            },
            AttestationConfig {
                manifest: Some("m".into()),
                ..AttestationConfig::default()
            },
            AttestationConfig {
                attester: Attester::Tpm2,
                ..AttestationConfig::default()
            },
            AttestationConfig {
                attester: Attester::Tpm2,
                tpm_tcti: Some(" ".into()),
                ..AttestationConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing_key = AttestationConfig {
            attester: Attester::Dev,
            dev_tee_key_file: Some("absent.key".into()),
            ..AttestationConfig::default()
        };
        assert!(Attestor::load(dir.path(), &missing_key, [0; 32], NOW).is_err());
    }

    #[test]
    fn a_tpm2_attester_without_a_reachable_tpm_fails_at_load_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let config = AttestationConfig {
            attester: Attester::Tpm2,
            // Nothing listens on loopback port 1.
            tpm_tcti: Some("swtpm:host=127.0.0.1,port=1".into()),
            ..AttestationConfig::default()
        };
        config.validate().unwrap();
        let error = Attestor::load(dir.path(), &config, [0; 32], NOW).unwrap_err();
        assert!(error.contains("no usable attestation key"), "{error}");
        // Its work directories are gone again.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("attester = \"tpm2\""), "{text}");
        assert!(text.contains("tpm_tcti = "), "{text}");
        assert_eq!(toml::from_str::<AttestationConfig>(&text).unwrap(), config);
    }
}
