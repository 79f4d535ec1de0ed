//! `POST /v1/rotate`: a node replaces its certificate over mTLS, including after expiry within
//! `--rotation-grace` when it proves its identity key and its last certificate is recorded and
//! not revoked; rate-limited per node. It never issues to a revoked node or serial.

use crate::api_error::{ApiError, ApiJson};
use crate::api_types::*;
use crate::ca_dir::CLOCK_SKEW_ALLOWANCE;
use crate::ca_state::{blocking, decode_b64, decode_csr, refuse_revoked, CaState};
use crate::store::{IssueKind, IssuedRecord, RotateError};
use crate::timefmt::{now, rfc3339};
use crate::tls::PresentedCertificate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use std::sync::Arc;
use std::time::Duration;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::{IdentityProofDomain, NodeCertificateRequest, Serial};

/// Rotations with an expired certificate one node may attempt: a burst of this many, then
/// [`EXPIRED_ROTATIONS_PER_MINUTE`]. A healthy node needs one; its retries back off to 32 s.
pub const EXPIRED_ROTATIONS_BURST: u32 = 3;

/// Refill of the per-node budget of expired-certificate rotations, per minute.
pub const EXPIRED_ROTATIONS_PER_MINUTE: u32 = 2;

/// The client of `POST /v1/rotate`: like [`authenticated_node`], except that a certificate
/// past its expiry is let through for up to `--rotation-grace`, so a mesh outlives a CA
/// outage longer than a certificate lifetime. Returns the certificate, its DER and how long
/// ago it expired (`None`: still valid).
///
/// An expired certificate is only an authentication hint: the handler still demands the
/// identity proof over the CSR, and that the presented bytes are a certificate the CA's
/// records hold (every record is in the membership log), so a certificate signed with the
/// CA key but never logged, or a stolen certificate and TLS key without the identity key,
/// gets nothing. Expired attempts are rate-limited per node by [`expired_rotation_budget`].
pub(crate) async fn rotation_client(
    state: &CaState,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<(ztmesh_pki::NodeCertificate, Arc<Vec<u8>>, Option<Duration>), ApiError> {
    let Some(Extension(PresentedCertificate(Some(der)))) = presented else {
        return Err(ApiError::unauthorized(
            "client_certificate_required",
            "this route requires a mesh certificate (mutual TLS)",
        ));
    };
    let at = now();
    let cert = state
        .trust
        .verify_ignoring_expiry(&der, at)
        .map_err(|e| ApiError::unauthorized("invalid_client_certificate", e.to_string()))?;
    // Revocation first: for a revoked node it is the reason that matters, grace or not.
    refuse_revoked(state, &cert).await?;
    if at <= cert.not_after {
        return Ok((cert, der, None));
    }
    let grace = state.options.rotation_grace;
    let Some(expired_for) = within_rotation_grace(at, cert.not_after, grace) else {
        let expired_for = at.duration_since(cert.not_after);
        tracing::warn!(node = %cert.node_id, serial = %cert.serial, expired_secs = expired_for.as_secs(), grace_secs = grace.as_secs(), "rotation refused: the certificate expired longer ago than the rotation grace");
        return Err(ApiError::forbidden(
            "rotation_grace_passed",
            format!(
                "certificate {} expired {}s ago; this CA lets a node rotate at most {}s after expiry (--rotation-grace); the node must enroll again",
                cert.serial,
                expired_for.as_secs(),
                grace.as_secs()
            ),
        ));
    };
    Ok((cert, der, Some(expired_for)))
}

/// Takes one of `node`'s expired-certificate rotations (429 `rate_limited` when none is
/// left). Attempts whose identity proof failed draw on their own budget, so whoever holds a
/// node's certificate and TLS key but not its identity key can hammer the route without
/// locking the node itself out; attempts with a good proof are bounded too, so even the
/// identity key cannot mint certificates in a loop from an expired one.
pub(crate) fn expired_rotation_budget(
    state: &CaState,
    node: NodeId,
    proven: bool,
) -> Result<(), ApiError> {
    let limiter = if proven {
        &state.expired_rotations
    } else {
        &state.expired_rotation_failures
    };
    let checked = limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(node, now());
    checked.map_err(|wait| {
        tracing::warn!(%node, proven, "rotation with an expired certificate rate-limited");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many rotations with an expired certificate for this node; retry in {}s",
                wait.as_secs().max(1)
            ),
        )
    })
}

pub(crate) async fn rotate(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<RotateRequest>, ApiError>,
) -> Result<Json<RotateResponse>, ApiError> {
    let (current, presented_der, expired_for) = rotation_client(&state, presented).await?;
    let ApiJson(request) = body?;
    let csr_der = decode_csr(&request.csr)?;
    ztmesh_pki::csr_public_key(&csr_der)
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let proof = decode_b64(
        &request.identity_proof,
        "bad_identity_proof",
        "identity_proof",
    )?;
    let proven = current
        .identity_key
        .verify_proof(IdentityProofDomain::RotateCsr, &csr_der, &proof)
        .is_ok();
    if expired_for.is_some() {
        expired_rotation_budget(&state, current.node_id, proven)?;
    }
    if !proven {
        return Err(ApiError::bad_request(
            "bad_identity_proof",
            "identity_proof does not verify with the certificate's identity key",
        ));
    }
    // The presented certificate must be, byte for byte, one the CA recorded (and logged) for
    // this node: a serial alone could be copied into a certificate signed outside the log.
    let store = state.store.clone();
    let serial = current.serial.clone();
    let recorded = blocking(move || store.certificate(&serial))
        .await?
        .map_err(ApiError::internal)?;
    if !recorded.is_some_and(|r| r.node_id == current.node_id && r.cert_der == *presented_der) {
        tracing::warn!(node = %current.node_id, serial = %current.serial, expired = expired_for.is_some(), "rotation refused: the presented certificate is not in this CA's records");
        return Err(unknown_certificate());
    }
    let now = now();
    let issued = state
        .ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr_der,
            identity_key: &current.identity_key,
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: now.saturating_sub(CLOCK_SKEW_ALLOWANCE),
            not_after: now.saturating_add(state.cert_lifetime()),
        })
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let record = IssuedRecord {
        serial: issued.serial.clone(),
        node_id: current.node_id,
        not_before: issued.not_before,
        not_after: issued.not_after,
        cert_der: issued.der.clone(),
        issued_at: now,
        kind: IssueKind::Rotate,
    };
    let store = state.store.clone();
    let presented_serial = current.serial.clone();
    blocking(move || store.record_rotation(&presented_serial, &record))
        .await?
        .map_err(|e| match e {
            RotateError::Store(e) => ApiError::internal(e),
            RotateError::UnknownCertificate => unknown_certificate(),
            RotateError::CertificateRevoked | RotateError::NodeRevoked => {
                ApiError::forbidden("revoked", "this node is revoked")
            }
            #[allow(unreachable_patterns)]
            other => ApiError::forbidden("policy_refused", other.to_string()),
        })?;
    match expired_for {
        Some(expired_for) => {
            tracing::warn!(node = %current.node_id, old = %current.serial, new = %issued.serial, expired_secs = expired_for.as_secs(), "certificate re-established after expiry by identity proof (rotation grace)");
        }
        None => {
            tracing::info!(node = %current.node_id, old = %current.serial, new = %issued.serial, "rotated certificate");
        }
    }
    Ok(Json(RotateResponse {
        serial: issued.serial.to_hex(),
        certificate: ztmesh_pki::cert_der_to_pem(&issued.der),
        valid_not_before: rfc3339(issued.not_before),
        valid_not_after: rfc3339(issued.not_after),
    }))
}

/// How long ago a certificate expiring at `not_after` expired, if at `now` that is within
/// `grace` (`Some(0)` at the very second of expiry, when it is still valid). `None`: expired
/// longer ago than the grace (always, past expiry, with a grace of 0).
pub(crate) fn within_rotation_grace(
    now: Timestamp,
    not_after: Timestamp,
    grace: Duration,
) -> Option<Duration> {
    let expired_for = now.duration_since(not_after);
    (expired_for <= grace).then_some(expired_for)
}

pub(crate) fn unknown_certificate() -> ApiError {
    ApiError::forbidden(
        "unknown_certificate",
        "the presented certificate was not issued by this CA's records",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca_state::DEFAULT_ROTATION_GRACE;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn rotation_grace_counts_from_expiry_and_zero_turns_it_off() {
        let expiry = Timestamp::from_unix_secs(NOW);
        let grace = Duration::from_secs(3600);
        let after = |secs| expiry.saturating_add(Duration::from_secs(secs));
        assert_eq!(
            within_rotation_grace(after(0), expiry, grace),
            Some(Duration::ZERO)
        );
        assert_eq!(
            within_rotation_grace(after(3600), expiry, grace),
            Some(grace)
        );
        assert_eq!(within_rotation_grace(after(3601), expiry, grace), None);
        assert_eq!(
            within_rotation_grace(after(1), expiry, Duration::ZERO),
            None
        );
        assert_eq!(
            within_rotation_grace(after(1), expiry, DEFAULT_ROTATION_GRACE),
            Some(Duration::from_secs(1))
        );
    }
}
