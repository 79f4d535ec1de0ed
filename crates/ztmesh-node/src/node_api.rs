//! The node's HTTPS API: `GET /v1/mesh/peers` and `GET /v1/status` (mesh client certificate
//! required; the node's own certificate is let in even expired, so its operator can look at
//! it through a CA outage, never another node's), `POST /v1/crl` (a CA-signed CRL pushed by the CA; its signature is its
//! authentication, so no client certificate is needed).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ztmesh_pki::PkiError;

use crate::api_error::{method_not_allowed, not_found, ApiError};
use crate::api_types::{PeerInfo, PeersResponse, StatusResponse};
use crate::daemon::Node;
use crate::timefmt::rfc3339;
use crate::tls::PresentedCertificate;

/// Largest CRL accepted on the push route.
pub const MAX_CRL_BYTES: usize = 1024 * 1024;

pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/mesh/peers", get(peers))
        .route("/v1/status", get(status))
        .route("/v1/crl", post(push_crl))
        .route("/v1/mesh/gossip", post(crate::local_api::post_gossip))
        .route("/v1/revocations", post(crate::local_api::post_revocation))
        .route(
            "/v1/anomalies",
            post(crate::local_api::post_anomaly).get(crate::local_api::list_anomalies),
        )
        .route("/v1/events", get(crate::local_api::events))
        .route(
            "/v1/deny",
            get(crate::deny_list::get_deny).post(crate::deny_list::post_deny),
        )
        .route(
            "/v1/deny/{entry}",
            axum::routing::delete(crate::deny_list::delete_deny),
        )
        .route(
            "/v1/governance/proposals",
            post(crate::governance::post_proposal).get(crate::governance::list_proposals),
        )
        .route("/v1/governance/votes", post(crate::governance::post_vote))
        .route(
            "/v1/log/alarm/acknowledge",
            post(crate::log_watch::post_acknowledge),
        )
        .route(
            "/v1/bundles",
            post(crate::local_api::post_bundle)
                .get(crate::local_api::list_bundles)
                .layer(DefaultBodyLimit::max(crate::local_api::MAX_BUNDLE_BODY)),
        )
        .route(
            "/v1/bundles/{id}",
            get(crate::local_api::get_bundle).delete(crate::local_api::delete_bundle),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_CRL_BYTES))
        .with_state(node)
}

pub(crate) fn authenticate(
    node: &Node,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<(), ApiError> {
    let cert = crate::api_error::verified_client(&node.trust, presented)?;
    // The node's own operator (`ztmesh status` presents the node's certificate) may still
    // look at a revoked node: that is how they learn it was revoked.
    if node.trust.is_revoked(&cert.serial) && cert.node_id != node.node_id {
        return Err(ApiError::forbidden(
            "revoked",
            format!("certificate {} is revoked", cert.serial),
        ));
    }
    Ok(())
}

/// [`authenticate`], and also the node's own operator presenting the node's own certificate
/// after it expired (`ztmesh status` and `ztmesh peers` through a CA outage): a certificate
/// chaining to the mesh CA and naming this very node proves the caller holds this node's TLS
/// key. Only for the read-only views of the node; any other node's expired certificate is
/// refused as before.
fn authenticate_operator(
    node: &Node,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<(), ApiError> {
    if let Some(Extension(PresentedCertificate(Some(der)))) = &presented {
        if let Ok(cert) = node
            .trust
            .verify_ignoring_expiry(der, crate::timefmt::now())
        {
            if cert.node_id == node.node_id {
                return Ok(());
            }
        }
    }
    authenticate(node, presented)
}

async fn peers(
    State(node): State<Arc<Node>>,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<Json<PeersResponse>, ApiError> {
    authenticate_operator(&node, presented)?;
    let links = node.link_infos();
    let views = node.table.lock().unwrap_or_else(|p| p.into_inner()).peers();
    let t = crate::timefmt::now();
    let tiers = node.tiers();
    let mut peers: Vec<PeerInfo> = views
        .into_iter()
        .map(|view| {
            let link = links.get(&view.node_id);
            let (tier, reason) = tiers.tier(&view.node_id, t);
            let status = tiers.status(&view.node_id);
            let cert = link.map(|l| {
                l.peer_cert
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            });
            PeerInfo {
                node_id: view.node_id.to_string(),
                connected: link.is_some(),
                last_seen: view.last_seen.map(rfc3339),
                address: view.addr,
                certificate_expires: cert.as_ref().map(|c| rfc3339(c.1)),
                certificate_serial: cert.map(|c| c.0.to_hex()),
                direction: link.map(|l| l.direction.as_str().to_owned()),
                link_established: link.map(|l| rfc3339(l.established)),
                link_id: link.map(|l| l.id),
                heartbeats_received: link
                    .map(|l| l.heartbeats.load(std::sync::atomic::Ordering::Relaxed))
                    .unwrap_or(0),
                heartbeat_gaps: link
                    .map(|l| l.gaps.load(std::sync::atomic::Ordering::Relaxed))
                    .unwrap_or(0),
                tier: tier.to_string(),
                tier_reason: reason.to_string(),
                last_attestation: status
                    .as_ref()
                    .and_then(|s| s.attestation)
                    .map(|(platform, at, _)| format!("{platform} at {}", rfc3339(at))),
                health: status
                    .as_ref()
                    .map(|s| format!("{}/{}", s.health_successes, s.health_checks))
                    .unwrap_or_default(),
                binary: status
                    .as_ref()
                    .and_then(|s| s.binary)
                    .map(|(hash, listed)| {
                        let listed = if listed {
                            "in manifest"
                        } else {
                            "NOT in manifest"
                        };
                        format!("{} ({listed})", hex::encode(hash.0))
                    }),
                attestation_failures: status.as_ref().map_or(0, |s| s.consecutive_failures),
            }
        })
        .collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(Json(PeersResponse {
        node_id: node.node_id.to_string(),
        peers,
    }))
}

async fn status(
    State(node): State<Arc<Node>>,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<Json<StatusResponse>, ApiError> {
    authenticate_operator(&node, presented)?;
    let (serial, not_before, not_after) = node.cert_summary();
    let (crl_number, revoked) = node.trust.crl_state();
    let links = node.link_infos();
    let known = node
        .table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .peers()
        .len();
    Ok(Json(StatusResponse {
        node_id: node.node_id.to_string(),
        trust_domain: node.config.trust_domain.to_string(),
        mesh_addr: node.mesh_addr.to_string(),
        api_addr: node.api_addr.to_string(),
        certificate_serial: serial.to_hex(),
        certificate_not_before: rfc3339(not_before),
        certificate_not_after: rfc3339(not_after),
        renew_at: rfc3339(ztmesh_pki::renew_at(not_before, not_after)),
        rotations: node.rotations.load(std::sync::atomic::Ordering::SeqCst),
        crl_number,
        revoked_serials: revoked,
        self_revoked: node.self_revoked.load(std::sync::atomic::Ordering::SeqCst),
        denied: node.trust.denied().to_response(),
        peers_connected: links.len(),
        failed_api_tokens: node
            .failed_api_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total(),
        peers_known: known,
        gossip: {
            let stats = node.gossip.stats();
            crate::api_types::GossipCounters {
                delivered: stats.delivered,
                duplicates: stats.duplicates,
                refused: stats.refused,
                forwarded: stats.forwarded,
                pulled: stats.pulled,
                rate_limited: stats.rate_limited,
                queue_dropped: stats.queue_dropped,
                peer_frames_per_sec: node.gossip.peer_frames_per_sec(),
            }
        },
        log: node.log_watch.status(),
        trust: node.trust_status(),
        witness: node.witness_status(),
    }))
}

/// Accepts a CRL as DER or PEM.
fn crl_der(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if body.starts_with(b"-----BEGIN") {
        let block = pem::parse(body)
            .map_err(|e| ApiError::bad_request("malformed_crl", format!("CRL PEM: {e}")))?;
        if block.tag() != "X509 CRL" {
            return Err(ApiError::bad_request(
                "malformed_crl",
                "expected an X509 CRL PEM block",
            ));
        }
        Ok(block.into_contents())
    } else {
        Ok(body.to_vec())
    }
}

async fn push_crl(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    // Answer an oversized or unreadable body with the JSON error body, like every route.
    let body = crate::local_api::body_or_error(body, "malformed_crl")?;
    let der = crl_der(&body)?;
    match node.apply_crl(&der).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(PkiError::StaleCrl { got, have }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_crl",
            format!("CRL number {got} is not newer than {have}"),
        )),
        Err(PkiError::MalformedCrl(message)) => {
            Err(ApiError::bad_request("malformed_crl", message))
        }
        Err(error) => Err(ApiError::forbidden("untrusted_crl", error.to_string())),
    }
}
