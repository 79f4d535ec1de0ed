//! The operator's local deny-list: node ids and certificate serials this node refuses,
//! whatever the CA says. It is for what the CA cannot or will not revoke (a rogue certificate
//! signed with its key, a CA that is down or compromised): it takes effect without the CA.
//!
//! - Persisted in `deny-list.json` in the node's data directory (mode 0600, written to a
//!   temporary file, synced, then renamed), loaded at start.
//! - Applied live: the set sits in [`MeshTrust`](ztmesh_runtime::tls::MeshTrust), so every mesh
//!   handshake (both directions) refuses a denied node or serial, and links to a denied peer
//!   are closed when an entry is added.
//! - Managed through the node API with its `api.token` (`GET /v1/deny`, `POST /v1/deny`,
//!   `DELETE /v1/deny/{entry}`), `ztmesh deny add|remove|list`, and shown in the status.
//!
//! It only ever removes trust on this node; it never admits anything, and it is never
//! gossiped (one operator's deny-list is not the mesh's).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};

use crate::api_error::{ApiError, ApiJson};
use crate::daemon::Node;
use crate::https::ClientAddr;
pub use ztmesh_runtime::deny_set::{
    load, save, DenyEntry, DenyError, DenyListResponse, DenyRequest, DenySet, DENY_FILE, MAX_DENIED,
};

fn deny_error(error: DenyError) -> ApiError {
    match error {
        DenyError::Malformed(_) => ApiError::bad_request("malformed_deny_entry", error.to_string()),
        DenyError::Full => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "deny_list_full",
            error.to_string(),
        ),
        other => ApiError::internal(other),
    }
}

/// `GET /v1/deny` (api.token).
pub(crate) async fn get_deny(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
) -> Result<Json<DenyListResponse>, ApiError> {
    crate::local_api::local_app(&node, &headers, client)?;
    Ok(Json(node.trust.denied().to_response()))
}

/// `POST /v1/deny` (api.token): 200 with the list; links to what it denies are closed.
pub(crate) async fn post_deny(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<DenyRequest>, ApiError>,
) -> Result<Json<DenyListResponse>, ApiError> {
    // The credential before the body (401 before 400).
    crate::local_api::local_app(&node, &headers, client)?;
    let ApiJson(request) = body?;
    let entry: DenyEntry = request.entry.parse().map_err(deny_error)?;
    let list = node.update_deny(|set| set.insert(entry).map(drop)).await;
    Ok(Json(list.map_err(deny_error)?))
}

/// `DELETE /v1/deny/{entry}` (api.token): 200 with the list, 404 `not_denied`.
pub(crate) async fn delete_deny(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    UrlPath(entry): UrlPath<String>,
) -> Result<Json<DenyListResponse>, ApiError> {
    crate::local_api::local_app(&node, &headers, client)?;
    let entry: DenyEntry = entry.parse().map_err(deny_error)?;
    if !node.trust.denied().contains(&entry) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_denied",
            format!("{entry} is not on the deny-list"),
        ));
    }
    let list = node
        .update_deny(|set| {
            set.remove(&entry);
            Ok(())
        })
        .await;
    Ok(Json(list.map_err(deny_error)?))
}
