//! Revocation and CRLs: `POST /v1/revoke` (admin), `GET /v1/crl`, the signed revocation record
//! gossiped to the mesh, the CRL pushed to known nodes and refreshed before it expires, and
//! `POST /v1/announce` (where a node can be reached). Every revocation is logged before it is
//! announced.

use crate::api_error::{ApiError, ApiJson};
use crate::api_types::*;
use crate::ca_dir::{sign_and_save_crl, CaError, CRL_VALIDITY};
use crate::ca_state::{authenticated_node, blocking, require_admin, CaState};
use crate::https::ClientAddr;
use crate::store::{RevokeError, RevokeTarget};
use crate::timefmt::now;
use crate::tls::PresentedCertificate;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use ztmesh_core::link::PeerAdvert;
use ztmesh_core::NodeId;
use ztmesh_pki::{CertificateAuthority, RevocationReason, Serial};

#[derive(Debug, Deserialize)]
pub(crate) struct CrlQuery {
    format: Option<String>,
}

pub(crate) async fn get_crl(
    State(state): State<Arc<CaState>>,
    query: Result<Query<CrlQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pem_wanted = match query.format.as_deref() {
        Some("pem") => true,
        Some("der") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "malformed_query",
                format!("format must be der or pem, not {other:?}"),
            ))
        }
        None => accept.contains("application/x-pem-file") || accept.contains("text/plain"),
    };
    let store = state.store.clone();
    let latest = blocking(move || store.latest_crl())
        .await?
        .map_err(ApiError::internal)?;
    let Some((number, der, _this_update, next_update)) = latest else {
        return Err(ApiError::internal("no CRL has been signed"));
    };
    let etag = format!(
        "\"crl-{number}-{}\"",
        if pem_wanted { "pem" } else { "der" }
    );
    let max_age = next_update.duration_since(now()).as_secs().min(60);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if pem_wanted {
        let text = pem::encode(&pem::Pem::new("X509 CRL", der));
        ([(header::CONTENT_TYPE, "application/x-pem-file")], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    Ok(response)
}

pub(crate) async fn revoke(
    State(state): State<Arc<CaState>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<RevokeRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers, client)?;
    let ApiJson(request) = body?;
    let serial = request
        .serial
        .map(|serial| {
            Serial::from_hex(&serial)
                .map_err(|e| ApiError::bad_request("malformed_serial", e.to_string()))
        })
        .transpose()?;
    let node_id = request
        .node_id
        .map(|node| {
            node.parse::<NodeId>()
                .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))
        })
        .transpose()?;
    // Both: one certificate of that node, which this CA's database need not know (a rogue
    // certificate signed with its key, as a node's `unlogged_certificate` finding shows it).
    let target = match (serial, node_id) {
        (Some(serial), None) => RevokeTarget::Serial(serial),
        (None, Some(node)) => RevokeTarget::Node(node),
        (Some(serial), Some(node_id)) => RevokeTarget::SerialOf { serial, node_id },
        (None, None) => {
            return Err(ApiError::bad_request(
                "malformed_body",
                "give serial, node_id, or both (a certificate of that node)",
            ))
        }
    };
    let reason = request.reason.unwrap_or(RevocationReason::Unspecified);
    let guard = state.crl_lock.lock().await;
    let store = state.store.clone();
    let outcome = blocking(move || store.revoke(&target, reason, now()))
        .await?
        .map_err(|e| match e {
            RevokeError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this CA issued no certificate with that serial; to revoke one signed with its key outside its database, give node_id too (the node the certificate names)",
            ),
            RevokeError::OwnerMismatch { .. } => {
                ApiError::bad_request("serial_owner_mismatch", e.to_string())
            }
            RevokeError::Store(e) => ApiError::internal(e),
            #[allow(unreachable_patterns)]
            other => ApiError::internal(other),
        })?;
    if outcome.newly_revoked.is_empty() && outcome.revoked_node.is_none() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let der = {
        let state = state.clone();
        blocking(move || {
            sign_and_save_crl(
                &state.ca,
                &state.store,
                &state.dir,
                outcome.crl_number,
                now(),
            )
        })
        .await?
        .map_err(ApiError::internal)?
    };
    drop(guard);
    if let Err(error) = state.trust.apply_crl(&der) {
        tracing::warn!(%error, "could not apply own CRL");
    }
    let record = match revocation_record(&state.ca, &der, outcome.revoked_node) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::warn!(%error, "could not sign the revocation record; pushing the CRL only");
            None
        }
    };
    tracing::info!(revoked = ?outcome.newly_revoked, crl_number = outcome.crl_number, "revoked; pushing the revocation to nodes");
    tokio::spawn(push_crl(state.clone(), der, record));
    Ok(StatusCode::NO_CONTENT)
}

/// How long a revocation record travels in gossip (nodes also fetch the CRL periodically).
pub(crate) const REVOCATION_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CA-signed gossip message that carries a new CRL (and the node it bans, if any) through
/// the mesh. Its origin is the CA's own NodeId; nodes accept the revocation kind from no one else.
pub fn revocation_record(
    ca: &CertificateAuthority,
    crl_der: &[u8],
    revoked_node: Option<NodeId>,
) -> Result<Vec<u8>, String> {
    let origin = ca.envelope_key().map_err(|e| e.to_string())?.node_id();
    let body = ztmesh_gossip::kinds::RevocationRecord {
        crl: crl_der.to_vec(),
        revoked_nodes: revoked_node.into_iter().collect(),
    }
    .encode()
    .map_err(|e| e.to_string())?;
    let created_at = now();
    let mut failure = None;
    let signed = ztmesh_gossip::UnsignedMessage {
        origin,
        kind: ztmesh_gossip::MessageKind::Revocation,
        body,
        created_at,
        expires_at: created_at.saturating_add(REVOCATION_RECORD_TTL),
        hop_limit: 16,
    }
    .sign(None, |tbs| match ca.sign_envelope(tbs) {
        Ok(signature) => signature,
        Err(error) => {
            failure = Some(error.to_string());
            [0; 64]
        }
    })
    .map_err(|e| e.to_string())?;
    match failure {
        Some(error) => Err(error),
        None => Ok(signed),
    }
}

/// Pushes a revocation to known nodes' APIs so links to revoked nodes close at once: the signed
/// record (which nodes then gossip) to `revocation_push` random nodes or all, the bare CRL where
/// a node refuses the record. Nodes that miss both pick the CRL up at their next refresh.
pub(crate) async fn push_crl(state: Arc<CaState>, der: Vec<u8>, record: Option<Vec<u8>>) {
    let store = state.store.clone();
    let mut nodes = match tokio::task::spawn_blocking(move || store.known_nodes(1024)).await {
        Ok(Ok(nodes)) => nodes,
        _ => return,
    };
    nodes.retain(|n| n.api_addr.is_some());
    if state.options.revocation_push > 0 && record.is_some() {
        use rand::seq::SliceRandom;
        nodes.shuffle(&mut rand::thread_rng());
        nodes.truncate(state.options.revocation_push);
    }
    let config = match crate::tls::node_api_client_config(state.trust.clone(), None) {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "CRL push: TLS config");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "CRL push: client");
            return;
        }
    };
    // Bounded concurrency: at most 16 pushes in flight.
    use futures::StreamExt;
    futures::stream::iter(
        nodes
            .into_iter()
            .filter_map(|n| n.api_addr.map(|a| (n.node_id, a))),
    )
    .for_each_concurrent(16, |(node, addr)| {
        let client = client.clone();
        let der = der.clone();
        let record = record.clone();
        async move {
            if let Some(record) = record {
                let result = client
                    .post(format!("https://{addr}/v1/revocations"))
                    .header(header::CONTENT_TYPE, "application/cose")
                    .body(record)
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().is_success() => {
                        tracing::debug!(%node, "revocation record pushed");
                        return;
                    }
                    Ok(r) => {
                        tracing::debug!(%node, status = %r.status(), "revocation record refused")
                    }
                    Err(error) => tracing::debug!(%node, %error, "revocation record push failed"),
                }
            }
            let result = client
                .post(format!("https://{addr}/v1/crl"))
                .header(header::CONTENT_TYPE, "application/pkix-crl")
                .body(der)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => tracing::debug!(%node, "CRL pushed"),
                Ok(r) => tracing::debug!(%node, status = %r.status(), "CRL push refused"),
                Err(error) => tracing::debug!(%node, %error, "CRL push failed"),
            }
        }
    })
    .await;
}

pub(crate) async fn refresh_crl_forever(state: Arc<CaState>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let store = state.store.clone();
        let Ok(Ok(Some((_, _, this_update, _)))) =
            tokio::task::spawn_blocking(move || store.latest_crl()).await
        else {
            continue;
        };
        if now().duration_since(this_update) < CRL_VALIDITY / 2 {
            continue;
        }
        let _guard = state.crl_lock.lock().await;
        let s = state.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, CaError> {
            let number = s.store.next_crl_number()?;
            sign_and_save_crl(&s.ca, &s.store, &s.dir, number, now())
        })
        .await;
        match result {
            Ok(Ok(der)) => {
                let _ = state.trust.apply_crl(&der);
            }
            Ok(Err(error)) => tracing::warn!(%error, "CRL refresh failed"),
            Err(error) => tracing::warn!(%error, "CRL refresh task failed"),
        }
    }
}

pub(crate) async fn announce(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<AnnounceRequest>, ApiError>,
) -> Result<Json<AnnounceResponse>, ApiError> {
    let cert = authenticated_node(&state, presented).await?;
    let ApiJson(request) = body?;
    for addr in [&request.mesh_addr, &request.api_addr]
        .into_iter()
        .flatten()
    {
        addr.parse::<SocketAddr>().map_err(|_| {
            ApiError::bad_request(
                "malformed_addr",
                format!("{addr:?} is not an ip:port address"),
            )
        })?;
    }
    let store = state.store.clone();
    let node_id = cert.node_id;
    let peers = blocking(
        move || -> Result<Vec<PeerAdvert>, crate::store::StoreError> {
            store.announce(
                &node_id,
                request.mesh_addr.as_deref(),
                request.api_addr.as_deref(),
                now(),
            )?;
            Ok(store
                .known_nodes(64)?
                .into_iter()
                .filter(|n| n.node_id != node_id)
                .filter_map(|n| {
                    n.mesh_addr.map(|addr| PeerAdvert {
                        node_id: n.node_id,
                        addr,
                    })
                })
                .collect())
        },
    )
    .await?
    .map_err(ApiError::internal)?;
    Ok(Json(AnnounceResponse { peers }))
}
