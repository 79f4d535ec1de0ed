//! Attestation tokens from the CA (DESIGN.md §3 "Attestation and trust tiers").
//!
//! A node proves to the CA what it runs, over its mutual-TLS connection, and gets back an
//! [`AttestationToken`] signed with the CA key. It attaches the token to governance proposals
//! and votes, so every receiver can check, without a link to the voter and without verifying
//! hardware evidence itself, that the CA verified the voter's platform and that its binary is
//! in the approved release manifest.
//!
//! Two routes, both for enrolled nodes (client certificate required, revoked nodes refused):
//!
//! - `POST /v1/attest/challenge` → `{nonce, expires_at}`: a fresh 32-byte nonce, good for
//!   [`NONCE_TTL`] and one use, for this node only (one outstanding nonce per node; at most
//!   [`MAX_PENDING`] nodes at once).
//! - `POST /v1/attest` `{nonce, attestation: {type, payload}, binary_sha256}` → `{token, ...}`:
//!   the evidence's report data must be `report_data_binding(nonce, TLS key of the presented
//!   certificate)`, the evidence must verify under the CA's attestation policy (the same keys
//!   as enrollment) with the reference values the manifest lists for its platform, and the
//!   binary must be in the manifest. The token names the node's identity key (the key that
//!   signs its gossip), so it is useless to anyone else.
//!
//! Without `--release-key`/`--manifest` the CA issues no tokens (503 `no_manifest`): it could
//! not say what "approved" means.
//!
//! [`TokenDesk`] holds the nonces and makes the decision; it performs no IO and reads no clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ztmesh_attest::manifest::Manifest;
use ztmesh_attest::token::AttestationToken;
use ztmesh_attest::{EvidenceType, Expectations};
use ztmesh_core::NodeId;
use ztmesh_pki::{CertificateAuthority, NodeCertificate};

use crate::api_error::ApiError;
use ztmesh_attest::policy::{verify_evidence, AttestationPayload, EnrollAttestationPolicy};

/// How long a challenge nonce may be answered.
pub const NONCE_TTL: Duration = Duration::from_secs(60);

/// Most nodes with an outstanding nonce; a further challenge is refused (503) until some
/// expire or are answered.
pub const MAX_PENDING: usize = 4096;

/// How old the evidence itself may be (the nonce already makes it fresh; this bounds the
/// timestamp some evidence types carry).
pub const EVIDENCE_MAX_AGE: Duration = Duration::from_secs(300);

/// Length of a challenge nonce.
pub const NONCE_LEN: usize = 32;

/// A signed release manifest the CA vouches against, and the SHA-256 of its signed bytes (what
/// the membership log records when it changes).
#[derive(Debug, Clone)]
pub struct ReleaseManifest {
    /// The verified content.
    pub manifest: Manifest,
    /// SHA-256 of the signed bytes.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    nonce: [u8; NONCE_LEN],
    expires_at: u64,
}

/// What a successful attestation produced.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The signed token (COSE_Sign1).
    pub bytes: Vec<u8>,
    /// Its claims.
    pub token: AttestationToken,
}

/// The CA's token desk: outstanding nonces and the issuing decision.
#[derive(Debug)]
pub struct TokenDesk {
    manifest: Option<Manifest>,
    pending: Mutex<HashMap<NodeId, Pending>>,
    issued: AtomicU64,
    refused: AtomicU64,
}

impl TokenDesk {
    /// A desk judging binaries and measurements against `manifest` (none: no tokens).
    pub fn new(manifest: Option<Manifest>) -> Self {
        TokenDesk {
            manifest,
            pending: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The manifest tokens are issued against.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Tokens issued and attestations refused since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.issued.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Pending>> {
        // The map holds plain data and every critical section leaves it consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `nonce` as `node`'s challenge from `now` (replacing an older one). Refuses when
    /// [`MAX_PENDING`] other nodes have live nonces.
    pub fn challenge(
        &self,
        node: NodeId,
        nonce: [u8; NONCE_LEN],
        now: u64,
    ) -> Result<u64, ApiError> {
        if self.manifest.is_none() {
            return Err(no_manifest());
        }
        let expires_at = now.saturating_add(NONCE_TTL.as_secs());
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING && !pending.contains_key(&node) {
            pending.retain(|_, p| p.expires_at > now);
            if pending.len() >= MAX_PENDING {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_challenges",
                    format!("{MAX_PENDING} nodes have outstanding challenges; retry later"),
                ));
            }
        }
        pending.insert(node, Pending { nonce, expires_at });
        Ok(expires_at)
    }

    /// Consumes `node`'s outstanding nonce if it equals `nonce` and is live at `now`.
    fn take(&self, node: &NodeId, nonce: &[u8], now: u64) -> Result<[u8; NONCE_LEN], ApiError> {
        let mut pending = self.pending();
        let Some(entry) = pending.get(node).copied() else {
            return Err(ApiError::forbidden(
                "unknown_nonce",
                "no outstanding challenge for this node: POST /v1/attest/challenge first",
            ));
        };
        if entry.nonce.as_slice() != nonce {
            // A wrong nonce burns the challenge too: one guess per challenge.
            pending.remove(node);
            return Err(ApiError::forbidden(
                "unknown_nonce",
                "the nonce is not the one this CA issued to this node",
            ));
        }
        pending.remove(node);
        if entry.expires_at <= now {
            return Err(ApiError::forbidden(
                "expired_nonce",
                format!(
                    "the challenge expired (nonces live {}s)",
                    NONCE_TTL.as_secs()
                ),
            ));
        }
        Ok(entry.nonce)
    }

    /// Judges an attestation from the node holding `cert` and, when it holds, issues the token
    /// signed by `ca`. Every refusal is an [`ApiError`] naming the reason (400 for undecodable
    /// input, 403 for evidence or a binary that does not pass, 503 without a manifest).
    #[allow(clippy::too_many_arguments)]
    pub fn attest(
        &self,
        ca: &CertificateAuthority,
        policy: &EnrollAttestationPolicy,
        cert: &NodeCertificate,
        nonce: &[u8],
        evidence_type: EvidenceType,
        payload: &AttestationPayload,
        binary_sha256: [u8; 32],
        now: u64,
    ) -> Result<Issued, ApiError> {
        let result = self.judge(
            ca,
            policy,
            cert,
            nonce,
            evidence_type,
            payload,
            binary_sha256,
            now,
        );
        let counter = if result.is_ok() {
            &self.issued
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        ca: &CertificateAuthority,
        policy: &EnrollAttestationPolicy,
        cert: &NodeCertificate,
        nonce: &[u8],
        evidence_type: EvidenceType,
        payload: &AttestationPayload,
        binary_sha256: [u8; 32],
        now: u64,
    ) -> Result<Issued, ApiError> {
        let manifest = self.manifest.as_ref().ok_or_else(no_manifest)?;
        let nonce = self.take(&cert.node_id, nonce, now)?;
        if now > manifest.not_after() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "manifest_expired",
                format!(
                    "the CA's release manifest {} expired; it vouches for no binary",
                    manifest.version()
                ),
            ));
        }
        if !manifest.allows_binary(&binary_sha256) {
            return Err(ApiError::forbidden(
                "binary_not_approved",
                format!(
                    "binary {} is not in release manifest {}",
                    hex::encode(binary_sha256),
                    manifest.version()
                ),
            ));
        }
        let reference = manifest
            .reference_for(evidence_type)
            .cloned()
            .ok_or_else(|| {
                ApiError::forbidden(
                    "platform_not_in_manifest",
                    format!(
                        "release manifest {} lists no measurements for {}",
                        manifest.version(),
                        evidence_type.as_str()
                    ),
                )
            })?;
        let expectations = Expectations {
            report_data: Some(
                ztmesh_attest::report_data_binding(&nonce, &cert.tls_public_key_spki_der).to_vec(),
            ),
            reference,
            max_age: Some(EVIDENCE_MAX_AGE),
            allow_dev: !policy.dev_tee_keys.is_empty(),
        };
        verify_evidence(policy, evidence_type, payload, expectations, now)
            .map_err(|error| attestation_refused(evidence_type, &error))?;
        let token = AttestationToken {
            server_pubkey: cert.identity_key.to_spki_der(),
            platform: evidence_type,
            attestation_hash: Sha256::digest(&payload.evidence).into(),
            binary_hash: binary_sha256,
            timestamp: now,
            attestation_timestamp: now,
        };
        let key_id = ca.envelope_key().map_err(ApiError::internal)?.node_id();
        let mut failure = None;
        let bytes = token
            .issue_with(key_id.to_string().as_bytes(), |tbs| {
                match ca.sign_envelope(tbs) {
                    Ok(signature) => signature,
                    Err(error) => {
                        failure = Some(error);
                        [0; 64]
                    }
                }
            })
            .map_err(ApiError::internal)?;
        if let Some(error) = failure {
            return Err(ApiError::internal(error));
        }
        Ok(Issued { bytes, token })
    }
}

fn no_manifest() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "no_manifest",
        "this CA was started without --release-key and --manifest: it issues no attestation tokens",
    )
}

/// 403 `attestation_refused`, naming the evidence type and the verifier's reason.
pub(crate) fn attestation_refused(
    evidence_type: ztmesh_attest::EvidenceType,
    error: &ztmesh_attest::AttestError,
) -> ApiError {
    ApiError::forbidden(
        "attestation_refused",
        format!(
            "{} evidence refused ({}): {error}",
            evidence_type.as_str(),
            error.reason()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use ztmesh_attest::token::TokenPolicy;
    use ztmesh_attest::ReferenceValues;
    use ztmesh_core::TrustDomain;
    use ztmesh_pki::{IdentityKey, Serial, TlsKeyPair};

    const NOW: u64 = 1_800_000_000;
    const BINARY: [u8; 32] = [0xb1; 32];

    struct Fixture {
        ca: CertificateAuthority,
        policy: EnrollAttestationPolicy,
        tee: ed25519_dalek::SigningKey,
        cert: NodeCertificate,
        desk: TokenDesk,
    }

    fn manifest(measurement: [u8; 32]) -> Manifest {
        let mut measurements = std::collections::BTreeMap::new();
        measurements.insert(
            EvidenceType::Dev,
            ReferenceValues(
                [(
                    "measurement".to_owned(),
                    [hex::encode(measurement)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
        );
        Manifest::new(
            "1.0.0",
            NOW - 10,
            NOW + 86_400,
            [BINARY].into_iter().collect(),
            measurements,
        )
        .unwrap()
    }

    fn fixture() -> Fixture {
        let domain: TrustDomain = "test.example".parse().unwrap();
        let ca = CertificateAuthority::generate(
            domain.clone(),
            ztmesh_core::Timestamp::from_unix_secs(NOW),
            Duration::from_secs(86_400),
        )
        .unwrap();
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let tls = TlsKeyPair::generate().unwrap();
        let node_id = identity.public().node_id();
        let issued = ca
            .issue_node_certificate(&ztmesh_pki::NodeCertificateRequest {
                csr_der: &tls.csr_der(&node_id, &domain).unwrap(),
                identity_key: &identity.public(),
                serial: Serial::random(&mut rand::rngs::OsRng),
                not_before: ztmesh_core::Timestamp::from_unix_secs(NOW - 60),
                not_after: ztmesh_core::Timestamp::from_unix_secs(NOW + 3600),
            })
            .unwrap();
        let cert = NodeCertificate::parse(&issued.der).unwrap();
        let tee = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let policy = EnrollAttestationPolicy {
            required: false,
            dev_tee_keys: vec![tee.verifying_key()],
            tpm2_attestation_keys: Vec::new(),
        };
        Fixture {
            ca,
            policy,
            tee,
            cert,
            desk: TokenDesk::new(Some(manifest(BINARY))),
        }
    }

    fn evidence(
        f: &Fixture,
        nonce: &[u8],
        tls_spki: &[u8],
        measurement: [u8; 32],
    ) -> AttestationPayload {
        let report_data = ztmesh_attest::report_data_binding(nonce, tls_spki);
        AttestationPayload {
            evidence: ztmesh_attest::dev::generate(&f.tee, &measurement, &report_data, NOW),
            collateral: None,
        }
    }

    fn attest(
        f: &Fixture,
        nonce: &[u8],
        payload: &AttestationPayload,
        binary: [u8; 32],
    ) -> Result<Issued, ApiError> {
        f.desk.attest(
            &f.ca,
            &f.policy,
            &f.cert,
            nonce,
            EvidenceType::Dev,
            payload,
            binary,
            NOW,
        )
    }

    fn code(result: Result<Issued, ApiError>) -> &'static str {
        result.unwrap_err().code()
    }

    #[test]
    fn a_bound_fresh_evidence_earns_a_token_receivers_accept() {
        let f = fixture();
        f.desk.challenge(f.cert.node_id, [1; 32], NOW).unwrap();
        let payload = evidence(&f, &[1; 32], &f.cert.tls_public_key_spki_der, BINARY);
        let issued = attest(&f, &[1; 32], &payload, BINARY).unwrap();
        assert_eq!(
            issued.token.server_pubkey,
            f.cert.identity_key.to_spki_der()
        );
        assert_eq!(
            NodeId::from_spki_der(&issued.token.server_pubkey),
            f.cert.node_id
        );
        let issuer = ztmesh_pki::ca_envelope_key(f.ca.cert_der()).unwrap();
        let platforms: BTreeSet<_> = [EvidenceType::Dev].into_iter().collect();
        let manifest = manifest(BINARY);
        let policy = TokenPolicy {
            manifest: Some(&manifest),
            max_age: Duration::from_secs(3600),
            platforms: &platforms,
            subject: Some(&issued.token.server_pubkey),
        };
        let opened =
            AttestationToken::verify(&issued.bytes, &issuer.verifying_key(), &policy, NOW + 5)
                .unwrap();
        assert_eq!(opened, issued.token);
        assert_eq!(f.desk.counts(), (1, 0));
        // The nonce was consumed: the same answer cannot buy a second token.
        assert_eq!(
            code(attest(&f, &[1; 32], &payload, BINARY)),
            "unknown_nonce"
        );
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let f = fixture();
        let spki = f.cert.tls_public_key_spki_der.clone();
        // No challenge.
        let payload = evidence(&f, &[1; 32], &spki, BINARY);
        assert_eq!(
            code(attest(&f, &[1; 32], &payload, BINARY)),
            "unknown_nonce"
        );
        // Wrong nonce burns the challenge.
        f.desk.challenge(f.cert.node_id, [2; 32], NOW).unwrap();
        assert_eq!(
            code(attest(&f, &[1; 32], &payload, BINARY)),
            "unknown_nonce"
        );
        assert_eq!(
            code(attest(
                &f,
                &[2; 32],
                &evidence(&f, &[2; 32], &spki, BINARY),
                BINARY
            )),
            "unknown_nonce"
        );
        // Expired.
        f.desk
            .challenge(f.cert.node_id, [3; 32], NOW - NONCE_TTL.as_secs())
            .unwrap();
        assert_eq!(
            code(attest(
                &f,
                &[3; 32],
                &evidence(&f, &[3; 32], &spki, BINARY),
                BINARY
            )),
            "expired_nonce"
        );
        // Bound to another TLS key.
        f.desk.challenge(f.cert.node_id, [4; 32], NOW).unwrap();
        assert_eq!(
            code(attest(
                &f,
                &[4; 32],
                &evidence(&f, &[4; 32], b"another key", BINARY),
                BINARY
            )),
            "attestation_refused"
        );
        // A binary the manifest does not list.
        f.desk.challenge(f.cert.node_id, [5; 32], NOW).unwrap();
        assert_eq!(
            code(attest(
                &f,
                &[5; 32],
                &evidence(&f, &[5; 32], &spki, BINARY),
                [0xee; 32]
            )),
            "binary_not_approved"
        );
        // A measurement the manifest does not list.
        f.desk.challenge(f.cert.node_id, [6; 32], NOW).unwrap();
        assert_eq!(
            code(attest(
                &f,
                &[6; 32],
                &evidence(&f, &[6; 32], &spki, [0xee; 32]),
                BINARY
            )),
            "attestation_refused"
        );
        // A platform the manifest does not list.
        f.desk.challenge(f.cert.node_id, [7; 32], NOW).unwrap();
        let result = f.desk.attest(
            &f.ca,
            &f.policy,
            &f.cert,
            &[7; 32],
            EvidenceType::Tdx,
            &evidence(&f, &[7; 32], &spki, BINARY),
            BINARY,
            NOW,
        );
        assert_eq!(code(result), "platform_not_in_manifest");
        // Dev evidence when the CA trusts no dev TEE key.
        let strict = EnrollAttestationPolicy::default();
        f.desk.challenge(f.cert.node_id, [8; 32], NOW).unwrap();
        let result = f.desk.attest(
            &f.ca,
            &strict,
            &f.cert,
            &[8; 32],
            EvidenceType::Dev,
            &evidence(&f, &[8; 32], &spki, BINARY),
            BINARY,
            NOW,
        );
        assert_eq!(code(result), "attestation_refused");
        assert_eq!(f.desk.counts().0, 0);
        assert!(f.desk.counts().1 >= 8);
    }

    #[test]
    fn without_a_manifest_no_token_is_issued() {
        let f = fixture();
        let desk = TokenDesk::new(None);
        assert_eq!(
            desk.challenge(f.cert.node_id, [1; 32], NOW)
                .unwrap_err()
                .code(),
            "no_manifest"
        );
    }

    #[test]
    fn outstanding_challenges_are_bounded() {
        let desk = TokenDesk::new(Some(manifest(BINARY)));
        for _ in 0..MAX_PENDING {
            let id = IdentityKey::generate(&mut rand::rngs::OsRng)
                .public()
                .node_id();
            desk.challenge(id, [0; 32], NOW).unwrap();
        }
        let extra = IdentityKey::generate(&mut rand::rngs::OsRng)
            .public()
            .node_id();
        assert_eq!(
            desk.challenge(extra, [0; 32], NOW).unwrap_err().code(),
            "too_many_challenges"
        );
        // Once the old ones expire there is room again.
        desk.challenge(extra, [0; 32], NOW + NONCE_TTL.as_secs())
            .unwrap();
    }
}
