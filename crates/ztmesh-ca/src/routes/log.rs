//! The membership log over HTTP: key, checkpoint, entries, inclusion and consistency proofs,
//! the tlog-policy, and `POST /v1/log/events` (members' reports of governance decisions and tier
//! changes, rate-limited per node), with the CA following the decisions only it enforces.

use crate::api_error::{ApiError, ApiJson};
use crate::api_types::*;
use crate::ca_state::{authenticated_node, blocking, query, text_answer, CaState};
use crate::membership_log::{
    self, LogEntriesResponse, LogEntryItem, ProofResponse, DEFAULT_ENTRIES_PER_REQUEST,
};
use crate::timefmt::now;
use crate::tls::PresentedCertificate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use ztmesh_core::NodeId;

/// Counts `reporter`'s report that `proposal` set `param` to `value` toward the CA following
/// it (see [`ztmesh_trust::ca_governance`]); applies and persists it when a majority of the attested
/// nodes reported it.
pub(crate) async fn follow_decision(
    state: &Arc<CaState>,
    reporter: NodeId,
    proposal: String,
    param: &str,
    value: u64,
) -> Result<(), ApiError> {
    let Some(param) = ztmesh_trust::Param::ALL
        .into_iter()
        .find(|p| p.as_str() == param)
    else {
        return Ok(());
    };
    if !ztmesh_trust::ca_governance::followed_by_ca(param) {
        return Ok(());
    }
    let at = now();
    let since = at.saturating_sub(ztmesh_trust::ca_governance::ATTESTED_WINDOW);
    let store = state.store.clone();
    let attested = blocking(move || store.attested_since(since))
        .await?
        .map_err(ApiError::internal)?;
    let outcome = state
        .governance
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .report(reporter, &proposal, param, value, &attested);
    match outcome {
        ztmesh_trust::ca_governance::Outcome::Counted {
            reporters,
            attested,
        } => {
            tracing::info!(%proposal, param = param.as_str(), value, reporters, attested, "governance decision report counted");
        }
        ztmesh_trust::ca_governance::Outcome::Apply {
            param,
            value,
            reporters,
            attested,
        } => {
            let store = state.store.clone();
            let id = proposal.clone();
            let fresh = blocking(move || store.apply_governed(param.as_str(), value, &id, at))
                .await?
                .map_err(ApiError::internal)?;
            if fresh && param == ztmesh_trust::Param::CertLifetimeSecs {
                *state
                    .cert_lifetime
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    (Duration::from_secs(value), Some(proposal.clone()));
                tracing::info!(%proposal, cert_lifetime_secs = value, reporters, attested, "governance decision followed: new certificates get this lifetime");
            }
        }
        ztmesh_trust::ca_governance::Outcome::NotFollowed
        | ztmesh_trust::ca_governance::Outcome::AlreadyApplied => {}
    }
    Ok(())
}

/// Most mesh-event reports one node may make per minute (`POST /v1/log/events`).
pub const EVENT_REPORTS_PER_MINUTE: u32 = 120;

/// `POST /v1/log/events`: a member reports a governance decision it applied or a tier change
/// its trust book made; the CA appends it to the membership log, naming the reporter, unless
/// the log already says the same (then `index` is null).
pub(crate) async fn log_event(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<LogEventReport>, ApiError>,
) -> Result<Json<LogEventAnswer>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let ApiJson(report) = body?;
    let at = now();
    {
        let minute = at.as_unix_secs() / 60;
        let mut counts = state
            .event_reports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if counts.len() > 10_000 {
            counts.retain(|_, (m, _)| *m == minute);
        }
        let slot = counts.entry(node.node_id).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= EVENT_REPORTS_PER_MINUTE {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("at most {EVENT_REPORTS_PER_MINUTE} event reports a minute per node"),
            ));
        }
        slot.1 += 1;
    }
    let followed = match &report {
        LogEventReport::GovernanceDecision {
            proposal,
            param,
            value,
        } => Some((proposal.clone(), param.clone(), *value)),
        LogEventReport::TierChange { .. } => None,
    };
    let entry = match report {
        LogEventReport::GovernanceDecision {
            proposal,
            param,
            value,
        } => membership_log::EventEntry::GovernanceDecision {
            proposal,
            param,
            value,
            reporter: node.node_id,
            at: at.as_unix_secs(),
        },
        LogEventReport::TierChange {
            node_id,
            tier,
            reason,
        } => membership_log::EventEntry::TierChange {
            node_id: node_id
                .parse()
                .map_err(|_| ApiError::bad_request("malformed_event", "node_id: not a NodeId"))?,
            tier,
            reason,
            reporter: node.node_id,
            at: at.as_unix_secs(),
        },
    };
    entry
        .check()
        .map_err(|e| ApiError::bad_request("malformed_event", e))?;
    let store = state.store.clone();
    let index = blocking(move || store.append_event(&entry))
        .await?
        .map_err(ApiError::internal)?;
    // Only a well-formed report (checked above) counts toward the CA following it.
    if let Some((proposal, param, value)) = followed {
        follow_decision(&state, node.node_id, proposal, &param, value).await?;
    }
    Ok(Json(LogEventAnswer { index }))
}

pub(crate) async fn log_key(State(state): State<Arc<CaState>>) -> Response {
    text_answer(state.log_signer.vkey())
}

pub(crate) async fn log_checkpoint(
    State(state): State<Arc<CaState>>,
) -> Result<Response, ApiError> {
    let note = state.log.latest_note().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "no membership checkpoint has been signed yet",
        )
    })?;
    Ok(text_answer(note.to_string()))
}

pub(crate) async fn log_policy(State(state): State<Arc<CaState>>) -> Result<Response, ApiError> {
    let policy = state.log_policy.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_policy",
            "this CA was started without a membership log policy (--log-policy)",
        )
    })?;
    Ok(text_answer(policy.text().to_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntriesQuery {
    #[serde(default)]
    start: u64,
    #[serde(default = "default_entries_count")]
    count: u64,
}

pub(crate) fn default_entries_count() -> u64 {
    DEFAULT_ENTRIES_PER_REQUEST
}

pub(crate) async fn log_entries(
    State(state): State<Arc<CaState>>,
    request: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogEntriesResponse>, ApiError> {
    let EntriesQuery { start, count } = query(request)?;
    let log = state.log.clone();
    let entries = blocking(move || log.entries(start, count)).await??;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(LogEntriesResponse {
        entries: entries
            .into_iter()
            .map(|(index, leaf)| LogEntryItem {
                index,
                leaf: b64.encode(leaf),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    index: u64,
    size: u64,
}

pub(crate) async fn log_inclusion_proof(
    State(state): State<Arc<CaState>>,
    request: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let InclusionQuery { index, size } = query(request)?;
    let log = state.log.clone();
    let proof = blocking(move || log.inclusion_proof(index, size)).await??;
    Ok(Json(ProofResponse::new(&proof)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    old: u64,
    new: u64,
}

pub(crate) async fn log_consistency_proof(
    State(state): State<Arc<CaState>>,
    request: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let ConsistencyQuery { old, new } = query(request)?;
    let log = state.log.clone();
    let proof = blocking(move || log.consistency_proof(old, new)).await??;
    Ok(Json(ProofResponse::new(&proof)))
}
