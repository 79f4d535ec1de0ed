//! `POST /v1/attest/challenge` and `POST /v1/attest`: a node's evidence, bound to its TLS key and
//! a fresh challenge, for a CA-signed attestation token (the decision is in `ca_attest`).

use crate::api_error::{ApiError, ApiJson};
use crate::api_types::*;
use crate::ca_state::{authenticated_node, blocking, CaState};
use crate::routes::enroll::parse_attestation;
use crate::timefmt::now;
use crate::tls::PresentedCertificate;
use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine as _;
use std::sync::Arc;
use ztmesh_attest::policy::EnrollAttestationPolicy;
use ztmesh_core::{NodeId, Timestamp};

/// `POST /v1/attest/challenge`: a fresh nonce for the calling node (see [`crate::ca_attest`]).
pub(crate) async fn attest_challenge(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<Json<AttestChallengeResponse>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let mut nonce = [0u8; crate::ca_attest::NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let expires_at = state
        .tokens
        .challenge(node.node_id, nonce, now().as_unix_secs())?;
    Ok(Json(AttestChallengeResponse {
        nonce: hex::encode(nonce),
        expires_at: crate::timefmt::rfc3339(Timestamp::from_unix_secs(expires_at)),
    }))
}

/// `POST /v1/attest`: evidence answering the node's challenge; an attestation token when it
/// verifies against the policy and the release manifest.
pub(crate) async fn attest(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<AttestRequest>, ApiError>,
) -> Result<Json<AttestResponse>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let ApiJson(request) = body?;
    let nonce = hex::decode(&request.nonce)
        .map_err(|_| ApiError::bad_request("malformed_nonce", "nonce: expected hex"))?;
    let binary: [u8; 32] = hex::decode(&request.binary_sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "malformed_binary_hash",
                "binary_sha256: expected 64 hex digits",
            )
        })?;
    let (evidence_type, payload) = parse_attestation(&request.attestation)?;
    let policy = attest_policy(&state, node.node_id, evidence_type).await?;
    let now = now();
    let result = state.tokens.attest(
        &state.ca,
        &policy,
        &node,
        &nonce,
        evidence_type,
        &payload,
        binary,
        now.as_unix_secs(),
    );
    let issued = match result {
        Ok(issued) => issued,
        Err(error) => {
            tracing::warn!(node = %node.node_id, code = error.code(), "attestation token refused");
            return Err(error);
        }
    };
    if evidence_type == ztmesh_attest::EvidenceType::Dev {
        tracing::warn!(node = %node.node_id, "attestation token for dev (simulated) evidence: it proves nothing about hardware");
    } else {
        tracing::info!(node = %node.node_id, platform = evidence_type.as_str(), "attestation token issued");
    }
    let store = state.store.clone();
    let attested = node.node_id;
    blocking(move || store.record_attested(&attested, now))
        .await?
        .map_err(ApiError::internal)?;
    let manifest_version = state
        .tokens
        .manifest()
        .map(|m| m.version().to_owned())
        .unwrap_or_default();
    Ok(Json(AttestResponse {
        token: base64::engine::general_purpose::STANDARD.encode(&issued.bytes),
        platform: evidence_type.as_str().to_owned(),
        issued_at: crate::timefmt::rfc3339(now),
        manifest_version,
    }))
}

/// The policy `POST /v1/attest` judges `node_id`'s evidence with: the configured one, and for
/// `tpm2` evidence also the attestation key the node activated at enrollment, if any.
pub(crate) async fn attest_policy(
    state: &CaState,
    node_id: NodeId,
    evidence_type: ztmesh_attest::EvidenceType,
) -> Result<std::borrow::Cow<'_, EnrollAttestationPolicy>, ApiError> {
    use std::borrow::Cow;
    if evidence_type != ztmesh_attest::EvidenceType::Tpm2 {
        return Ok(Cow::Borrowed(&state.options.attestation));
    }
    let store = state.store.clone();
    let registered = blocking(move || store.tpm2_attestation_key(&node_id))
        .await?
        .map_err(ApiError::internal)?;
    let Some(registered) = registered else {
        return Ok(Cow::Borrowed(&state.options.attestation));
    };
    let key = ztmesh_attest::tpm2::AttestationKey::from_pem(&registered.key.ak_pem)
        .map_err(|e| ApiError::internal(format!("registered TPM key of {node_id}: {e}")))?;
    let mut policy = state.options.attestation.clone();
    policy.tpm2_attestation_keys.push(key);
    Ok(Cow::Owned(policy))
}
