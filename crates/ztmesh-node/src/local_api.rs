//! Routes of the node API for local applications and for mesh peers that speak gossip over HTTP:
//!
//! - `POST /v1/mesh/gossip` (mesh client certificate): a signed gossip message, verified exactly
//!   like one received on a link → 202.
//! - `POST /v1/revocations` (no client certificate: the CA's signature is the credential): a
//!   CA-signed revocation record → 202, then spread by gossip.
//! - `POST /v1/anomalies`, `GET /v1/anomalies`, `GET /v1/events` (SSE) and the bundle routes
//!   (`Authorization: Bearer <api.token>`): applications publish and receive without ever
//!   holding a key; the node signs on their behalf.
//!
//! Every refusal is an [`ApiError`] with a JSON body; nothing here panics on input.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ztmesh_gossip::kinds::AnomalySignature;
use ztmesh_gossip::{GossipError, MessageKind};

use crate::api_error::{ApiError, ApiJson};
use crate::daemon::Node;
use crate::events::{AnomalyEvent, NodeEvent};
use crate::https::ClientAddr;
use crate::timefmt::rfc3339;
use crate::tls::PresentedCertificate;

/// Largest signed gossip message accepted over HTTP (the core enforces its own cap too).
pub const MAX_GOSSIP_BODY: usize = 64 * 1024;

/// Default lifetime of an anomaly signature published through the API.
const DEFAULT_ANOMALY_TTL: Duration = Duration::from_secs(3600);

/// Longest lifetime an application may ask for.
const MAX_ANOMALY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks the local application credential (`Authorization: Bearer <api.token>`). An address
/// that presented too many wrong tokens is refused (429) before its token is compared; each
/// wrong token is counted (`failed_api_tokens` in status) and logged.
pub(crate) fn local_app(
    node: &Node,
    headers: &HeaderMap,
    client: Option<Extension<ClientAddr>>,
) -> Result<(), ApiError> {
    let client = client.map(|Extension(ClientAddr(addr))| addr.ip());
    let mut failed = node
        .failed_api_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ip) = client {
        failed.admit(ip, crate::timefmt::now()).map_err(|wait| {
            tracing::warn!(client = %ip, "local API request refused: too many wrong API tokens from this address");
            ApiError::too_many_failed_credentials(ip, wait)
        })?;
    }
    let verdict = check_api_token(node, headers);
    // A missing token guesses nothing; only wrong ones are counted against the address.
    if let (Err(error), Some(ip)) = (&verdict, client) {
        if error.code() == "invalid_api_token" {
            let total = failed.record_failure(ip, crate::timefmt::now());
            tracing::warn!(client = %ip, failed_api_tokens = total, "wrong API token refused");
        }
    }
    verdict
}

fn check_api_token(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "api_token_required",
            "this route requires Authorization: Bearer <the node's api.token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests, so the comparison time says nothing about the token's bytes.
    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    if presented != node.api_token_hash {
        return Err(ApiError::unauthorized(
            "invalid_api_token",
            "the API token does not match this node's api.token",
        ));
    }
    Ok(())
}

/// A raw body, or the JSON error every route answers: 413 over the limit, else 400 `code`.
pub(crate) fn body_or_error(
    body: Result<Bytes, BytesRejection>,
    code: &'static str,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            rejection.body_text(),
        ),
        _ => ApiError::bad_request(code, rejection.body_text()),
    })
}

/// Maps a refusal of the gossip core to an HTTP answer: faults of the message are 4xx, a
/// full delivery queue is 503 (retry later), anything else the node's own fault.
pub(crate) fn gossip_error(error: GossipError) -> ApiError {
    use ztmesh_gossip::Refusal;
    match &error {
        GossipError::Backpressure => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string())
        }
        GossipError::Peer(refusal) | GossipError::Local(refusal) => match refusal {
            Refusal::Origin { .. } | Refusal::RevokedOrigin(_) => {
                ApiError::forbidden("origin_refused", error.to_string())
            }
            Refusal::BadSignature => ApiError::forbidden("bad_signature", error.to_string()),
            Refusal::MessageTooLarge { .. } | Refusal::FrameTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                error.to_string(),
            ),
            Refusal::Expired { .. } | Refusal::FromFuture { .. } => {
                ApiError::bad_request("stale_message", error.to_string())
            }
            _ => ApiError::bad_request("invalid_message", error.to_string()),
        },
        _ => ApiError::internal(error),
    }
}

/// Answer to the publish routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Message id (hex SHA-256 of the signed bytes).
    pub id: String,
}

/// `POST /v1/mesh/gossip`.
pub(crate) async fn post_gossip(
    State(node): State<Arc<Node>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    crate::node_api::authenticate(&node, presented)?;
    let body = body_or_error(body, "malformed_message")?;
    let id = node.publish_signed(body.to_vec()).map_err(gossip_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishResponse { id: id.to_string() }),
    ))
}

/// `POST /v1/revocations`.
pub(crate) async fn post_revocation(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let body = body_or_error(body, "malformed_message")?;
    // Before the core sees it: publishing stores and forwards, so a member's anomaly (or any
    // other kind) posted here without a client certificate would spread before a later check.
    revocation_kind_only(&body)?;
    let id = node.publish_signed(body.to_vec()).map_err(gossip_error)?;
    // The core checked the payload's kind against the header's read above, and accepts the
    // revocation kind from the CA only.
    debug_assert_eq!(node.gossip.message_kind(&id), Some(MessageKind::Revocation));
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishResponse { id: id.to_string() }),
    ))
}

/// The gate of `POST /v1/revocations`: the kind the message's protected header claims must be
/// a revocation. Read without verifying anything, which is enough to refuse: the core then
/// verifies the signature and refuses a payload whose kind differs from this header's.
pub(crate) fn revocation_kind_only(cose: &[u8]) -> Result<(), ApiError> {
    let config = ztmesh_gossip::GossipConfig::default();
    match ztmesh_gossip::claimed_kind(cose, &config) {
        Some(MessageKind::Revocation) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "not_a_revocation",
            "this route accepts CA-signed revocation records only",
        )),
        None => Err(ApiError::bad_request(
            "invalid_message",
            "not a signed gossip message of a known kind",
        )),
    }
}

/// `POST /v1/anomalies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishAnomalyRequest {
    /// SHA-256 of the observed event, hex (64 characters).
    pub event_sha256: String,
    /// Indicator type: 1–64 characters of `[a-z0-9_.:-]`.
    pub indicator: String,
    /// Risk score 0–100.
    pub risk_score: u8,
    /// Detection rule id.
    #[serde(default)]
    pub rule_id: Option<String>,
    /// Short metadata (≤ 8 entries); raw logs are refused.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default)]
    pub ttl_sec: Option<u64>,
}

pub(crate) async fn post_anomaly(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<PublishAnomalyRequest>, ApiError>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    // The credential first: a caller without it learns nothing about the body's schema.
    local_app(&node, &headers, client)?;
    let ApiJson(request) = body?;
    let hash = hex::decode(&request.event_sha256)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "malformed_event_sha256",
                "event_sha256 must be 64 hex characters",
            )
        })?;
    let ttl = match request.ttl_sec {
        None => DEFAULT_ANOMALY_TTL,
        Some(s) if s == 0 || Duration::from_secs(s) > MAX_ANOMALY_TTL => {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                "ttl_sec must be between 1 and 604800",
            ))
        }
        Some(s) => Duration::from_secs(s),
    };
    let signature = AnomalySignature {
        event_sha256: hash,
        indicator: request.indicator,
        risk_score: request.risk_score,
        rule_id: request.rule_id,
        metadata: request.metadata,
    };
    let body = signature
        .encode()
        .map_err(|e| ApiError::bad_request("invalid_anomaly", e.to_string()))?;
    let id = node
        .publish_own(MessageKind::Anomaly, body, ttl)
        .map_err(gossip_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishResponse { id: id.to_string() }),
    ))
}

/// `GET /v1/anomalies` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most entries returned (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/anomalies` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomaliesResponse {
    /// Unexpired anomaly signatures held by this node, newest first.
    pub anomalies: Vec<AnomalyEvent>,
}

pub(crate) async fn list_anomalies(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AnomaliesResponse>, ApiError> {
    local_app(&node, &headers, client)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(AnomaliesResponse {
        anomalies: node.gossip.anomalies(limit),
    }))
}

/// `GET /v1/events`: a server-sent event stream (`event:` = the event type, `data:` = JSON).
pub(crate) async fn events(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    local_app(&node, &headers, client)?;
    let subscription = node.events.subscribe();
    let hello = NodeEvent::Ready {
        node_id: node.node_id.to_string(),
        at: rfc3339(crate::timefmt::now()),
    };
    let stream = futures::stream::unfold(
        (subscription, Some(hello)),
        |(mut subscription, first)| async move {
            let event = match first {
                Some(event) => event,
                None => subscription.next().await?,
            };
            let data = serde_json::to_string(&event).unwrap_or_default();
            let sse = Event::default().event(event.name()).data(data);
            Some((Ok(sse), (subscription, None)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `POST /v1/bundles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBundleRequest {
    /// Destination: a NodeId, or an endpoint `dtn://<NodeId>/<service>`.
    pub destination: String,
    /// Lifetime in seconds; the bundle is deleted everywhere when it expires.
    pub ttl_sec: u64,
    /// Payload, base64.
    pub payload: String,
    /// Destination service when `destination` is a bare NodeId (default `inbox`).
    #[serde(default)]
    pub service: Option<String>,
}

/// Answer to `POST /v1/bundles` (sent only after the bundle is committed to disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBundleResponse {
    /// Bundle id.
    pub bundle_id: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// A bundle delivered to this node, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveredBundle {
    /// Bundle id.
    pub bundle_id: String,
    /// Source endpoint.
    pub source: String,
    /// Destination endpoint (this node).
    pub destination: String,
    /// Payload length.
    pub len: u64,
    /// When it was delivered here (RFC 3339).
    pub received_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// A bundle held here for forwarding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedBundle {
    /// Bundle id (with `+offset` for a fragment).
    pub bundle_id: String,
    /// Destination endpoint.
    pub destination: String,
    /// Bytes held.
    pub len: u64,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// `GET /v1/bundles` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleListQuery {
    /// Also list bundles queued here for forwarding.
    #[serde(default)]
    pub queued: bool,
}

/// `GET /v1/bundles` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleListResponse {
    /// Bundles delivered to this node and not yet deleted by the application.
    pub delivered: Vec<DeliveredBundle>,
    /// Bundles held for forwarding (only with `?queued=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Vec<QueuedBundle>>,
}

/// `GET /v1/bundles/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleContent {
    /// What the listing says about it.
    #[serde(flatten)]
    pub bundle: DeliveredBundle,
    /// Payload, base64.
    pub payload: String,
}

/// Largest JSON body of `POST /v1/bundles`: a 16 MiB payload in base64 plus the envelope.
pub const MAX_BUNDLE_BODY: usize = 16 * 1024 * 1024 * 4 / 3 + 4096;

fn dtn_error(error: ztmesh_dtn::DtnError) -> ApiError {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match status {
        StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE => "store_full",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_server_error() => "store_failed",
        _ => "invalid_bundle",
    };
    if status.is_server_error() {
        tracing::error!(%error, "bundle store");
    }
    ApiError::new(status, code, error.to_string())
}

fn unavailable(error: crate::dtn_driver::DtnUnavailable) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "router_unavailable",
        error.to_string(),
    )
}

fn delivered_view(bundle: &ztmesh_dtn::DeliveredBundle) -> DeliveredBundle {
    DeliveredBundle {
        bundle_id: bundle.id.to_string(),
        source: bundle.source.to_string(),
        destination: bundle.destination.to_string(),
        len: bundle.len,
        received_at: rfc3339(bundle.received_at),
        expires_at: rfc3339(bundle.expires_at),
    }
}

fn parse_bundle_id(text: &str) -> Result<ztmesh_dtn::BundleId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request("malformed_bundle_id", format!("{text:?}: {e}")))
}

/// `POST /v1/bundles`: 201 only once the bundle is committed to the node's database.
pub(crate) async fn post_bundle(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<SendBundleRequest>, ApiError>,
) -> Result<(StatusCode, Json<SendBundleResponse>), ApiError> {
    local_app(&node, &headers, client)?;
    let ApiJson(request) = body?;
    let destination: ztmesh_dtn::Eid = if request.destination.starts_with("dtn:") {
        if request.service.is_some() {
            return Err(ApiError::bad_request(
                "malformed_destination",
                "give service only with a bare NodeId destination",
            ));
        }
        request
            .destination
            .parse()
            .map_err(|e| ApiError::bad_request("malformed_destination", format!("{e}")))?
    } else {
        let node_id: ztmesh_core::NodeId = request.destination.parse().map_err(|e| {
            ApiError::bad_request("malformed_destination", format!("destination: {e}"))
        })?;
        let service = request.service.as_deref().unwrap_or("inbox");
        ztmesh_dtn::Eid::new(node_id, service)
            .map_err(|e| ApiError::bad_request("malformed_destination", format!("{e}")))?
    };
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(request.payload.as_bytes())
        .map_err(|e| ApiError::bad_request("malformed_payload", format!("payload base64: {e}")))?;
    if request.ttl_sec == 0 {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "ttl_sec must be at least 1",
        ));
    }
    let ttl = Duration::from_secs(request.ttl_sec);
    let (id, expires_at) = node
        .dtn
        .request(|reply| crate::dtn_driver::Command::Accept {
            destination,
            source_service: "app".into(),
            payload,
            ttl,
            reply,
        })
        .await
        .map_err(unavailable)?
        .map_err(dtn_error)?;
    Ok((
        StatusCode::CREATED,
        Json(SendBundleResponse {
            bundle_id: id.to_string(),
            expires_at: rfc3339(expires_at),
        }),
    ))
}

/// `GET /v1/bundles`.
pub(crate) async fn list_bundles(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    query: Result<Query<BundleListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BundleListResponse>, ApiError> {
    local_app(&node, &headers, client)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))?;
    let delivered = node
        .dtn
        .request(crate::dtn_driver::Command::ListDelivered)
        .await
        .map_err(unavailable)?
        .map_err(dtn_error)?;
    let queued = if query.queued {
        let held = node
            .dtn
            .request(crate::dtn_driver::Command::ListHeld)
            .await
            .map_err(unavailable)?
            .map_err(dtn_error)?;
        Some(
            held.iter()
                .map(|h| QueuedBundle {
                    bundle_id: h.key.to_string(),
                    destination: h.destination.to_string(),
                    len: h.size,
                    expires_at: rfc3339(h.expires_at),
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(Json(BundleListResponse {
        delivered: delivered.iter().map(delivered_view).collect(),
        queued,
    }))
}

/// `GET /v1/bundles/{id}`.
pub(crate) async fn get_bundle(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<BundleContent>, ApiError> {
    local_app(&node, &headers, client)?;
    let id = parse_bundle_id(&id)?;
    let found = node
        .dtn
        .request(|reply| crate::dtn_driver::Command::Payload(id, reply))
        .await
        .map_err(unavailable)?
        .map_err(dtn_error)?;
    let Some((record, payload)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no delivered bundle with that id",
        ));
    };
    use base64::Engine;
    Ok(Json(BundleContent {
        bundle: delivered_view(&record),
        payload: base64::engine::general_purpose::STANDARD.encode(payload),
    }))
}

/// `DELETE /v1/bundles/{id}`: the application has the bundle; the node forgets its payload
/// (its id stays remembered until expiry, so a late copy is not delivered again).
pub(crate) async fn delete_bundle(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    local_app(&node, &headers, client)?;
    let id = parse_bundle_id(&id)?;
    let deleted = node
        .dtn
        .request(|reply| crate::dtn_driver::Command::Delete(id, reply))
        .await
        .map_err(unavailable)?
        .map_err(dtn_error)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no delivered bundle with that id",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_core::NodeId;
    use ztmesh_core::Timestamp;
    use ztmesh_gossip::UnsignedMessage;

    /// A message of `kind` with a body its schema accepts, signed by a throwaway key (the gate
    /// reads the header only; the signature is the core's to check).
    fn signed(kind: MessageKind, body: Vec<u8>) -> Vec<u8> {
        let now = Timestamp::from_unix_secs(1_800_000_000);
        UnsignedMessage {
            origin: NodeId::from_bytes([7; 20]),
            kind,
            body,
            created_at: now,
            expires_at: now.saturating_add(Duration::from_secs(60)),
            hop_limit: 4,
        }
        .sign(None, |_| [0; 64])
        .unwrap()
    }

    /// A body of `kind` its schema accepts.
    fn body_of(kind: MessageKind) -> Vec<u8> {
        use ztmesh_gossip::kinds::*;
        let now = Timestamp::from_unix_secs(1_800_000_000);
        match kind {
            MessageKind::Anomaly => AnomalySignature {
                event_sha256: [1; 32],
                indicator: "file.hash".into(),
                risk_score: 90,
                rule_id: None,
                metadata: BTreeMap::new(),
            }
            .encode(),
            MessageKind::Revocation => RevocationRecord {
                crl: vec![1],
                revoked_nodes: vec![],
            }
            .encode(),
            MessageKind::PeerExchange => PeerExchange {
                addr: "127.0.0.1:1".into(),
            }
            .encode(),
            MessageKind::Health => Health {
                seq: 1,
                uptime_ms: 1,
                links: 1,
            }
            .encode(),
            MessageKind::BundleReceipt => BundleReceipt {
                bundle_id: "b1".into(),
            }
            .encode(),
            MessageKind::Checkpoint => CheckpointNote::new("origin\n1\nroot\n\n\u{2014} log AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".into())
                .and_then(|note| note.encode()),
            MessageKind::Proposal => GovernanceProposal {
                param: "gossip_fanout".into(),
                value: 4,
                expires_at: now,
                token: vec![],
            }
            .encode(),
            MessageKind::Vote => GovernanceVote {
                proposal_id: vec![0; 32],
                approve: true,
                token: vec![],
            }
            .encode(),
            other => panic!("a kind added without a body here: {other}"),
        }
        .unwrap()
    }

    #[test]
    fn not_a_revocation_is_refused_before_anything_is_stored_or_forwarded() {
        for kind in MessageKind::ALL {
            let cose = signed(kind, body_of(kind));
            let answer = revocation_kind_only(&cose);
            if kind == MessageKind::Revocation {
                assert!(answer.is_ok(), "{kind}");
            } else {
                let error = answer.expect_err(kind.as_str());
                assert_eq!(error.code(), "not_a_revocation", "{kind}");
            }
        }
        assert_eq!(
            revocation_kind_only(b"garbage").unwrap_err().code(),
            "invalid_message"
        );
    }
}
