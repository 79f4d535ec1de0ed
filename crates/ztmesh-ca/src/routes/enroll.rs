//! `POST /v1/enroll` (a one-time token, a CSR and optional attestation evidence → the node's
//! first certificate, logged), `POST /v1/enroll/tpm2/credential` (TPM credential activation) and
//! `POST /v1/tokens` (admin: enrollment tokens). A token is redeemed once, by compare-and-swap,
//! and never before the evidence it demands verified.

use crate::api_error::{ApiError, ApiJson};
use crate::api_types::*;
use crate::ca_dir::CLOCK_SKEW_ALLOWANCE;
use crate::ca_state::{
    blocking, decode_b64, decode_csr, lock_tpm2, rate_limited, require_admin, CaState,
};
use crate::https::ClientAddr;
use crate::store::{IssueKind, IssuedRecord, RedeemError};
use crate::timefmt::{now, rfc3339};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use ztmesh_attest::policy::{
    enrollment_report_data, verify_enrollment_evidence, AttestationPayload, EnrollAttestationPolicy,
};
use ztmesh_core::NodeId;
use ztmesh_pki::{
    EnrollmentToken, IdentityProofDomain, IdentityPublicKey, NodeCertificateRequest, Serial,
};

/// Longest enrollment-token lifetime an operator may ask for.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Judges the `attestation` of an enrollment request: `Ok(None)` when there is none and the
/// policy allows that, the verdict when it verifies, otherwise the API error (400 for an
/// undecodable payload, 403 for a missing or refused evidence).
pub(crate) fn check_enrollment_attestation(
    policy: &EnrollAttestationPolicy,
    attestation: Option<&Attestation>,
    report_data: &[u8; 64],
    now_unix_secs: u64,
) -> Result<Option<ztmesh_attest::Verdict>, ApiError> {
    let Some(attestation) = attestation else {
        if policy.required {
            return Err(ApiError::forbidden(
                "attestation_required",
                "this CA requires attestation evidence at enrollment",
            ));
        }
        return Ok(None);
    };
    let (evidence_type, payload) = parse_attestation(attestation)?;
    verify_enrollment_evidence(policy, evidence_type, &payload, report_data, now_unix_secs)
        .map(Some)
        .map_err(|error| crate::ca_attest::attestation_refused(evidence_type, &error))
}

/// Decodes an `attestation {type, payload}` (400 `malformed_attestation` for a type this
/// build does not know or a payload that is not base64 of the CBOR `{evidence, collateral?}`).
/// Pure: what the CA does to the bytes of a request's `attestation` before verifying it.
pub fn parse_attestation(
    attestation: &Attestation,
) -> Result<(ztmesh_attest::EvidenceType, AttestationPayload), ApiError> {
    let evidence_type: ztmesh_attest::EvidenceType =
        attestation
            .kind
            .parse()
            .map_err(|e: ztmesh_attest::AttestError| {
                ApiError::bad_request("malformed_attestation", format!("attestation.type: {e}"))
            })?;
    let cbor = decode_b64(
        &attestation.payload,
        "malformed_attestation",
        "attestation.payload",
    )?;
    let payload = AttestationPayload::from_cbor(&cbor).map_err(|e| {
        ApiError::bad_request(
            "malformed_attestation",
            format!("attestation.payload is not a CBOR {{evidence, collateral?}} map: {e}"),
        )
    })?;
    Ok((evidence_type, payload))
}

pub(crate) async fn enroll(
    State(state): State<Arc<CaState>>,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<EnrollRequest>, ApiError>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    rate_limited(&state, client)?;
    let ApiJson(request) = body?;
    let token = EnrollmentToken::parse(&request.token).map_err(|_| {
        ApiError::bad_request(
            "malformed_token",
            "the token is not a ztmesh enrollment token (ztm1_...)",
        )
    })?;
    let csr_der = decode_csr(&request.csr)?;
    let csr_spki = ztmesh_pki::csr_public_key(&csr_der)
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let identity_der = decode_b64(
        &request.identity_key,
        "malformed_identity_key",
        "identity_key",
    )?;
    let identity = IdentityPublicKey::from_spki_der(&identity_der)
        .map_err(|e| ApiError::bad_request("malformed_identity_key", e.to_string()))?;
    let proof = decode_b64(
        &request.identity_proof,
        "bad_identity_proof",
        "identity_proof",
    )?;
    identity
        .verify_proof(IdentityProofDomain::EnrollCsr, &csr_der, &proof)
        .map_err(|_| {
            ApiError::bad_request(
                "bad_identity_proof",
                "identity_proof does not verify with identity_key over the CSR",
            )
        })?;
    let node_id = identity.node_id();
    if let Some(claimed) = &request.node_id {
        let claimed: NodeId = claimed
            .parse()
            .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))?;
        if claimed != node_id {
            return Err(ApiError::bad_request(
                "node_id_mismatch",
                format!("node_id {claimed} does not match the identity key ({node_id})"),
            ));
        }
    }
    let report_data = enrollment_report_data(&token.hash().0, &csr_spki);
    let credential_secret = request
        .tpm2_credential_secret
        .as_deref()
        .map(crate::ca_tpm2::parse_credential_secret)
        .transpose()?;
    let mut policy = state.options.attestation.clone();
    let activated = tpm2_activation(
        &state,
        &policy,
        &token.hash(),
        request.attestation.as_ref(),
        credential_secret.as_deref(),
        now().as_unix_secs(),
    )?;
    if let Some(activated) = &activated {
        policy
            .tpm2_attestation_keys
            .push(activated.attestation_key.clone());
    }
    let attestation = request.attestation.clone();
    // Verifying DCAP and SEV chains is CPU work: off the async workers.
    let verdict = blocking(move || {
        check_enrollment_attestation(
            &policy,
            attestation.as_ref(),
            &report_data,
            now().as_unix_secs(),
        )
    })
    .await??;

    let now = now();
    let serial = Serial::random(&mut rand::rngs::OsRng);
    let not_before = now.saturating_sub(CLOCK_SKEW_ALLOWANCE);
    let not_after = now.saturating_add(state.cert_lifetime());
    let issued = state
        .ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr_der,
            identity_key: &identity,
            serial,
            not_before,
            not_after,
        })
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let record = IssuedRecord {
        serial: issued.serial.clone(),
        node_id,
        not_before: issued.not_before,
        not_after: issued.not_after,
        cert_der: issued.der.clone(),
        issued_at: now,
        kind: IssueKind::Enroll,
    };
    let store = state.store.clone();
    let hash = token.hash();
    let registration = activated
        .as_ref()
        .map(|activated| crate::store::Tpm2KeyRegistration {
            ak_pem: pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                activated.attestation_key.to_spki_der(),
            )),
            ek_name_hex: activated.endorsement_key_name.to_hex(),
        });
    let redeemed = blocking(move || {
        store.redeem_token_registering(&hash, now, &record, registration.as_ref())
    })
    .await?;
    redeemed.map_err(|e| match e {
        RedeemError::Store(e) => ApiError::internal(e),
        RedeemError::Unknown => ApiError::forbidden("unknown_token", "no such enrollment token"),
        RedeemError::AlreadyUsed => {
            ApiError::forbidden("token_used", "this enrollment token was already used")
        }
        RedeemError::Expired => {
            ApiError::forbidden("token_expired", "this enrollment token has expired")
        }
        RedeemError::WrongNode => ApiError::forbidden(
            "token_wrong_node",
            "this enrollment token is reserved for another node",
        ),
        RedeemError::NodeRevoked => ApiError::forbidden(
            "node_revoked",
            "this node has been revoked and cannot enroll again",
        ),
        #[allow(unreachable_patterns)]
        other => ApiError::forbidden("policy_refused", other.to_string()),
    })?;
    tracing::info!(node = %node_id, serial = %issued.serial, "enrolled node");
    if let Some(activated) = &activated {
        lock_tpm2(&state).complete(&token.hash(), activated);
        tracing::info!(
            node = %node_id,
            endorsement_key = %activated.endorsement_key_name.to_hex(),
            "TPM attestation key activated and registered"
        );
    }
    if let Some(verdict) = &verdict {
        log_attestation_verdict(&node_id, verdict);
    }
    let store = state.store.clone();
    let known = blocking(move || store.known_nodes(8))
        .await?
        .map_err(ApiError::internal)?;
    let config = MeshConfig {
        trust_domain: state.ca.trust_domain().to_string(),
        bootstrap_peers: known
            .into_iter()
            .filter(|n| n.node_id != node_id)
            .filter_map(|n| n.mesh_addr)
            .collect(),
        gossip_fanout: state.options.gossip_fanout,
        crl_url: format!("{}/v1/crl", state.public_url),
    };
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            node_id: node_id.to_string(),
            serial: issued.serial.to_hex(),
            certificate: ztmesh_pki::cert_der_to_pem(&issued.der),
            ca_cert: ztmesh_pki::cert_der_to_pem(state.ca.cert_der()),
            valid_not_before: rfc3339(issued.not_before),
            valid_not_after: rfc3339(issued.not_after),
            config,
        }),
    ))
}

/// Records the verdict of an enrollment's evidence in the CA log: its kind, TCB status and
/// measurements, so an operator can tell later what each node proved.
pub(crate) fn log_attestation_verdict(node_id: &NodeId, verdict: &ztmesh_attest::Verdict) {
    let measurements = verdict
        .measurements
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    let tcb_status = verdict.tcb_status.as_deref().unwrap_or("-");
    if verdict.evidence_type.is_hardware() {
        tracing::info!(
            node = %node_id,
            evidence = verdict.evidence_type.as_str(),
            tcb_status,
            advisories = %verdict.advisories.join(","),
            %measurements,
            "enrollment attestation verified"
        );
    } else {
        tracing::warn!(
            node = %node_id,
            evidence = verdict.evidence_type.as_str(),
            %measurements,
            "enrolled with dev (simulated) attestation: it proves nothing about hardware"
        );
    }
}

/// The attestation key an enrollment's `tpm2` evidence may be trusted with beyond `policy`'s:
/// `None` when there is no tpm2 evidence, its collateral is no key (the verifier then refuses
/// it with its own reason) or the key is configured; the activated key when `secret` answers
/// this token's pending credential for it; otherwise 403 `attestation_refused`.
pub(crate) fn tpm2_activation(
    state: &CaState,
    policy: &EnrollAttestationPolicy,
    token: &ztmesh_pki::TokenHash,
    attestation: Option<&Attestation>,
    secret: Option<&[u8; crate::ca_tpm2::CREDENTIAL_SECRET_LEN]>,
    now_unix_secs: u64,
) -> Result<Option<crate::ca_tpm2::ActivatedKey>, ApiError> {
    let Some(attestation) = attestation else {
        return Ok(None);
    };
    let (evidence_type, payload) = parse_attestation(attestation)?;
    if evidence_type != ztmesh_attest::EvidenceType::Tpm2 {
        return Ok(None);
    }
    let Some(key) = payload
        .collateral
        .as_deref()
        .and_then(|pem| std::str::from_utf8(pem).ok())
        .and_then(|pem| ztmesh_attest::tpm2::AttestationKey::from_pem(pem).ok())
    else {
        return Ok(None);
    };
    if policy.tpm2_attestation_keys.contains(&key) {
        return Ok(None);
    }
    let Some(secret) = secret else {
        return Err(crate::ca_tpm2::not_activated(
            "no tpm2_credential_secret was sent (POST /v1/enroll/tpm2/credential, then \
             TPM2_ActivateCredential)",
        ));
    };
    lock_tpm2(state)
        .verify(token, &key, secret, now_unix_secs)
        .map(Some)
        .map_err(|error| error.to_api_error())
}

/// `POST /v1/enroll/tpm2/credential`: for a valid, unspent token (checked, not spent), an
/// allowed endorsement key and an attestation key, a credential only that TPM can activate
/// (see [`crate::ca_tpm2`]).
pub(crate) async fn tpm2_credential(
    State(state): State<Arc<CaState>>,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<Tpm2CredentialRequest>, ApiError>,
) -> Result<Json<Tpm2CredentialResponse>, ApiError> {
    use ztmesh_attest::tpm2_credential::{AttestationKeyPublic, EndorsementKey};
    rate_limited(&state, client)?;
    let ApiJson(request) = body?;
    let token = EnrollmentToken::parse(&request.token).map_err(|_| {
        ApiError::bad_request(
            "malformed_token",
            "the token is not a ztmesh enrollment token (ztm1_...)",
        )
    })?;
    let ek = decode_b64(&request.ek_public, "malformed_ek_public", "ek_public")?;
    let ek = EndorsementKey::from_tpm2b_public(&ek).map_err(|e| {
        ApiError::bad_request(
            "malformed_ek_public",
            format!("ek_public is not an endorsement key's TPM2B_PUBLIC: {e}"),
        )
    })?;
    let ak = decode_b64(&request.ak_public, "malformed_ak_public", "ak_public")?;
    let ak = AttestationKeyPublic::from_tpm2b_public(&ak).map_err(|e| {
        ApiError::bad_request(
            "malformed_ak_public",
            format!("ak_public is not an attestation key's TPM2B_PUBLIC: {e}"),
        )
    })?;
    let hash = token.hash();
    let store = state.store.clone();
    let info = blocking(move || store.token_info(&hash))
        .await?
        .map_err(ApiError::internal)?;
    let now = now();
    match info {
        None => {
            return Err(ApiError::forbidden(
                "unknown_token",
                "no such enrollment token",
            ))
        }
        Some(info) if info.used_at.is_some() => {
            return Err(ApiError::forbidden(
                "token_used",
                "this enrollment token was already used",
            ))
        }
        Some(info) if now >= info.expires_at => {
            return Err(ApiError::forbidden(
                "token_expired",
                "this enrollment token has expired",
            ))
        }
        Some(_) => {}
    }
    let issued = lock_tpm2(&state)
        .issue_credential(hash, &ek, &ak, now.as_unix_secs(), &mut rand::rngs::OsRng)
        .map_err(|error| error.to_api_error())?;
    tracing::info!(
        endorsement_key = %ek.public_area().name().to_hex(),
        attestation_key = %ak.name().to_hex(),
        "TPM credential issued"
    );
    Ok(Json(Tpm2CredentialResponse {
        credential: base64::engine::general_purpose::STANDARD
            .encode(issued.credential.to_tpm2_tools_file()),
        expires_in_secs: issued.expires_at.saturating_sub(now.as_unix_secs()),
    }))
}

pub(crate) async fn create_token(
    State(state): State<Arc<CaState>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    require_admin(&state, &headers, client)?;
    let ApiJson(request) = body?;
    let ttl = Duration::from_secs(request.ttl_sec.unwrap_or(3600));
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_sec must be 1..={}", MAX_TOKEN_TTL.as_secs()),
        ));
    }
    let node_id = request
        .node_id
        .map(|n| n.parse::<NodeId>())
        .transpose()
        .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))?;
    let token = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    let now = now();
    let expires_at = now.saturating_add(ttl);
    let store = state.store.clone();
    let hash = token.hash();
    blocking(move || store.insert_token(&hash, now, expires_at, node_id))
        .await?
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token: token.as_str().to_owned(),
            expires_at: rfc3339(expires_at),
        }),
    ))
}
