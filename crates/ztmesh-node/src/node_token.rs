//! The node's attestation token (DESIGN.md §3): fetched from the CA, attached to the
//! governance proposals and votes this node signs, and required of every proposal and vote it
//! counts.
//!
//! The token loop asks the CA for a challenge, answers it with this node's attester (the same
//! evidence a link peer gets, bound to this node's current TLS key), and keeps the token the
//! CA returns. It refreshes every re-attestation interval; a refused or failed attempt keeps
//! the previous token (receivers judge its age) and is retried with back-off. A node without
//! an attester never asks.
//!
//! A received proposal or vote counts only if its token verifies ([`Node::check_token`]):
//! CA signature, issued to the key of the message's origin, a platform this node accepts (dev
//! only where the simulated TEE is accepted), attested within the attestation validity
//! (governed, 24 h by default), and a binary in this node's release manifest.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ztmesh_attest::token::{AttestationToken, TokenPolicy};
use ztmesh_attest::EvidenceType;
use ztmesh_core::{NodeId, Timestamp};

use crate::api_types::{AttestRequest, Attestation, TokenStatus};
use crate::attestation::Attester;
use crate::daemon::Node;
use crate::timefmt::{now, rfc3339};

/// First delay after a failed attempt; doubled per failure up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);

/// Longest delay between two failed attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Shortest time between two refreshes that succeeded, whatever the re-attestation interval.
const MIN_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    platform: Option<String>,
    issued_at: Option<Timestamp>,
    last_error: Option<String>,
}

/// This node's token and the counters of tokens it received.
#[derive(Debug, Default)]
pub(crate) struct TokenHolder {
    held: Mutex<Held>,
    refreshed: AtomicU64,
    refused_received: AtomicU64,
}

impl TokenHolder {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token to attach to a message this node signs (empty: none yet).
    pub(crate) fn current(&self) -> Vec<u8> {
        self.held().bytes.clone()
    }

    /// Received proposals and votes not counted because of their token.
    pub(crate) fn refused_received(&self) -> u64 {
        self.refused_received.load(Ordering::Relaxed)
    }

    /// For `GET /v1/status`.
    pub(crate) fn status(&self) -> TokenStatus {
        let held = self.held();
        TokenStatus {
            held: !held.bytes.is_empty(),
            platform: held.platform.clone(),
            issued_at: held.issued_at.map(rfc3339),
            last_error: held.last_error.clone(),
            refreshed: self.refreshed.load(Ordering::Relaxed),
            refused_received: self.refused_received(),
        }
    }

    fn store(&self, bytes: Vec<u8>, platform: String, issued_at: Timestamp) {
        let mut held = self.held();
        held.bytes = bytes;
        held.platform = Some(platform);
        held.issued_at = Some(issued_at);
        held.last_error = None;
        self.refreshed.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, error: String) {
        self.held().last_error = Some(error);
    }
}

/// The platforms this node accepts in tokens: every hardware type, and `dev` only where the
/// simulated TEE is accepted on links.
fn accepted_platforms(dev_allowed: bool) -> BTreeSet<EvidenceType> {
    let mut platforms: BTreeSet<EvidenceType> = [
        EvidenceType::Tpm2,
        EvidenceType::Tdx,
        EvidenceType::Sgx,
        EvidenceType::SevSnp,
    ]
    .into_iter()
    .collect();
    if dev_allowed {
        platforms.insert(EvidenceType::Dev);
    }
    platforms
}

/// Judges a token presented by `origin` at `now_secs`: the pure part of
/// [`Node::check_token`].
pub(crate) fn judge_token(
    token: &[u8],
    issuer: &ed25519_dalek::VerifyingKey,
    origin: &NodeId,
    manifest: Option<&ztmesh_attest::manifest::Manifest>,
    max_age: Duration,
    dev_allowed: bool,
    now_secs: u64,
) -> Result<AttestationToken, String> {
    if token.is_empty() {
        return Err("no attestation token".into());
    }
    let platforms = accepted_platforms(dev_allowed);
    let policy = TokenPolicy {
        manifest,
        max_age,
        platforms: &platforms,
        subject: None,
    };
    let opened = AttestationToken::verify(token, issuer, &policy, now_secs)
        .map_err(|e| format!("attestation token refused ({}): {e}", e.reason()))?;
    if NodeId::from_spki_der(&opened.server_pubkey) != *origin {
        return Err("attestation token refused (wrong_subject): issued to another node".into());
    }
    Ok(opened)
}

impl Node {
    /// The key attestation tokens are signed with: the mesh CA's.
    fn token_issuer(&self) -> Result<ed25519_dalek::VerifyingKey, String> {
        ztmesh_pki::ca_envelope_key(self.trust.ca_cert_der())
            .map(|key| key.verifying_key())
            .map_err(|e| e.to_string())
    }

    /// `Ok` when `token`, attached by `from` to a proposal or vote, lets it count here;
    /// otherwise the refusal is counted and logged.
    pub(crate) fn check_token(&self, from: &NodeId, token: &[u8], what: &str) -> bool {
        let issuer = match self.token_issuer() {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(%error, "the CA certificate has no envelope key");
                return false;
            }
        };
        let max_age = self.governance().parameters().attestation_validity();
        let result = judge_token(
            token,
            &issuer,
            from,
            self.attestor.manifest(),
            max_age,
            self.attestor.dev_allowed(),
            now().as_unix_secs(),
        );
        match result {
            Ok(_) => true,
            Err(reason) => {
                self.token.refused_received.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%from, %reason, "{what} not counted: its attestation token does not hold");
                false
            }
        }
    }

    /// One attempt: challenge, evidence, token.
    async fn refresh_token(&self) -> Result<(), String> {
        let challenge = self
            .ca()
            .attest_challenge()
            .await
            .map_err(|e| e.to_string())?;
        let nonce =
            hex::decode(&challenge.nonce).map_err(|_| "the CA's nonce is not hex".to_owned())?;
        let spki = self
            .own_tls_spki()
            .ok_or("this node's certificate does not parse")?;
        // A TPM quote takes up to seconds: `evidence` runs it on the blocking pool. Its error
        // (the TPM's complaint) is what the status shows.
        let (evidence_type, evidence) = self
            .attestor
            .evidence(&nonce, &spki, now().as_unix_secs())
            .await?
            .ok_or("the attester produced no evidence")?;
        let request = AttestRequest {
            nonce: challenge.nonce,
            attestation: Attestation {
                kind: evidence_type.as_str().to_owned(),
                payload: base64::engine::general_purpose::STANDARD.encode(&evidence),
            },
            binary_sha256: hex::encode(self.attestor.binary_sha256()),
        };
        let answer = self
            .ca()
            .attest(&request)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&answer.token)
            .map_err(|_| "the CA's token is not base64".to_owned())?;
        // Keep only a token this node would accept from itself: a CA that hands out garbage
        // (or a token for another key) is an error here, not a surprise at every receiver.
        let issuer = self.token_issuer()?;
        let opened = judge_token(
            &bytes,
            &issuer,
            &self.node_id,
            self.attestor.manifest(),
            self.governance().parameters().attestation_validity(),
            true,
            now().as_unix_secs(),
        )?;
        let issued_at = Timestamp::from_unix_secs(opened.timestamp);
        let first = !self.token.status().held;
        self.token
            .store(bytes, opened.platform.as_str().to_owned(), issued_at);
        if first {
            tracing::info!(platform = opened.platform.as_str(), manifest = %answer.manifest_version, "attestation token received from the CA");
        }
        Ok(())
    }
}

/// Keeps this node's attestation token fresh (see the module documentation).
pub(crate) async fn token_loop(node: Arc<Node>) {
    if node.attestor.attester() == Attester::None {
        return;
    }
    let mut retry = RETRY_MIN;
    loop {
        let wait = match node.refresh_token().await {
            Ok(()) => {
                retry = RETRY_MIN;
                node.attestor.reattest_interval().max(MIN_REFRESH)
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "could not get an attestation token from the CA");
                node.token.failed(error);
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ztmesh_attest::manifest::Manifest;
    use ztmesh_pki::IdentityKey;

    const NOW: u64 = 1_800_000_000;

    fn manifest(binary: [u8; 32]) -> Manifest {
        Manifest::new(
            "1",
            NOW - 10,
            NOW + 3600,
            [binary].into_iter().collect(),
            Default::default(),
        )
        .unwrap()
    }

    fn token(
        subject: &IdentityKey,
        platform: EvidenceType,
        binary: [u8; 32],
        at: u64,
    ) -> AttestationToken {
        AttestationToken {
            server_pubkey: subject.public().to_spki_der(),
            platform,
            attestation_hash: [1; 32],
            binary_hash: binary,
            timestamp: at,
            attestation_timestamp: at,
        }
    }

    #[test]
    fn a_token_counts_only_for_its_subject_platform_window_and_manifest() {
        let ca = SigningKey::from_bytes(&[1; 32]);
        let other_ca = SigningKey::from_bytes(&[3; 32]);
        let voter = IdentityKey::generate(&mut rand::rngs::OsRng);
        let other = IdentityKey::generate(&mut rand::rngs::OsRng);
        let binary = [0xb1; 32];
        let listed = manifest(binary);
        let origin = voter.public().node_id();
        let day = Duration::from_secs(86_400);
        let judge =
            |bytes: &[u8], origin: &NodeId, manifest: Option<&Manifest>, dev: bool, now: u64| {
                judge_token(bytes, &ca.verifying_key(), origin, manifest, day, dev, now)
            };
        let good = token(&voter, EvidenceType::Dev, binary, NOW)
            .issue(&ca, b"ca")
            .unwrap();
        assert!(judge(&good, &origin, Some(&listed), true, NOW + 10).is_ok());
        // Missing, garbage, another issuer.
        assert!(judge(&[], &origin, Some(&listed), true, NOW)
            .unwrap_err()
            .contains("no attestation token"));
        assert!(judge(b"garbage", &origin, Some(&listed), true, NOW)
            .unwrap_err()
            .contains("malformed"));
        let forged = token(&voter, EvidenceType::Dev, binary, NOW)
            .issue(&other_ca, b"ca")
            .unwrap();
        assert!(judge(&forged, &origin, Some(&listed), true, NOW)
            .unwrap_err()
            .contains("bad_signature"));
        // Presented by another origin.
        let someone = other.public().node_id();
        assert!(judge(&good, &someone, Some(&listed), true, NOW)
            .unwrap_err()
            .contains("wrong_subject"));
        // Dev where the simulated TEE is not accepted.
        assert!(judge(&good, &origin, Some(&listed), false, NOW)
            .unwrap_err()
            .contains("platform"));
        // Older than the validity window.
        assert!(
            judge(&good, &origin, Some(&listed), true, NOW + day.as_secs() + 1)
                .unwrap_err()
                .contains("stale")
        );
        // A binary the manifest does not list, or no manifest at all.
        let unlisted = token(&voter, EvidenceType::Dev, [0xee; 32], NOW)
            .issue(&ca, b"ca")
            .unwrap();
        assert!(judge(&unlisted, &origin, Some(&listed), true, NOW)
            .unwrap_err()
            .contains("binary"));
        assert!(judge(&good, &origin, None, true, NOW)
            .unwrap_err()
            .contains("manifest"));
    }

    #[test]
    fn hardware_platforms_are_always_accepted_and_dev_only_when_allowed() {
        assert!(!accepted_platforms(false).contains(&EvidenceType::Dev));
        assert!(accepted_platforms(true).contains(&EvidenceType::Dev));
        for platform in [
            EvidenceType::Tpm2,
            EvidenceType::Tdx,
            EvidenceType::Sgx,
            EvidenceType::SevSnp,
        ] {
            assert!(accepted_platforms(false).contains(&platform));
        }
    }
}
