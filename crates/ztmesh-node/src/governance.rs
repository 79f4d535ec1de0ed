//! Governance in the node runtime: signed proposals and votes arrive as gossip, pass the tier
//! gate, and feed the sans-IO [`ztmesh_trust::Governance`] with this node's trust book as the
//! electorate. A decision applies at once (the gossip fan-out changes on the next push, the
//! attestation validity on the next verification, the health interval on the next tick) and is
//! recorded in `state.db` (governance_decisions), so it survives a restart.
//!
//! Routes (local applications, `Authorization: Bearer <api.token>`):
//! `POST /v1/governance/proposals` `{param, value, ttl_sec?}` → 202 `{id}`,
//! `POST /v1/governance/votes` `{proposal_id, approve}` → 202 `{id}`,
//! `GET /v1/governance/proposals` → the proposals held, their votes and the parameters in force.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::kinds::{GovernanceProposal, GovernanceVote};
use ztmesh_gossip::MessageKind;
use ztmesh_trust::{Action, GovernanceEvent, Param, Parameters, ProposalId};

use crate::api_error::{ApiError, ApiJson};
use crate::daemon::Node;
use crate::https::ClientAddr;
use crate::local_api::{gossip_error, local_app};
use crate::timefmt::now;

/// Default lifetime of a proposal.
pub const DEFAULT_PROPOSAL_TTL: Duration = Duration::from_secs(600);

/// How long a vote stays in the mesh after its proposal could expire.
const VOTE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The parameter named `name`.
pub fn param_named(name: &str) -> Option<Param> {
    Param::ALL.into_iter().find(|p| p.as_str() == name)
}

impl Node {
    /// `true` when `peer` may take part in `action`; otherwise the refusal is counted and logged.
    pub(crate) fn gate(&self, peer: &NodeId, action: Action) -> bool {
        let t = now();
        let result = {
            let tiers = self.tiers();
            self.gates().check(&tiers, peer, action, t)
        };
        match result {
            Ok(()) => true,
            Err(refusal) => {
                tracing::warn!(%peer, action = %action, tier = %refusal.tier, reason = %refusal.reason, "refused by tier gate");
                false
            }
        }
    }

    /// A verified proposal arrived (or was published here).
    pub(crate) fn handle_proposal(
        self: &Arc<Self>,
        id: [u8; 32],
        from: NodeId,
        body: GovernanceProposal,
        created_at: Timestamp,
    ) {
        if !self.gate(&from, Action::Governance)
            || !self.check_token(&from, &body.token, "proposal")
        {
            return;
        }
        let Some(param) = param_named(&body.param) else {
            tracing::warn!(%from, param = %body.param, "proposal for an unknown parameter ignored");
            return;
        };
        let proposal = ztmesh_trust::Proposal {
            id: ProposalId(id),
            param,
            value: body.value,
            proposer: from,
            created_at,
            expires_at: body.expires_at,
        };
        let result = {
            let mut governance = self.governance();
            let tiers = self.tiers();
            governance.handle_proposal(proposal, &*tiers, now())
        };
        match result {
            Ok(accepted) => {
                tracing::info!(%from, id = %ProposalId(id), param = param.as_str(), value = body.value, ?accepted, "governance proposal")
            }
            Err(error) => tracing::warn!(%from, %error, "governance proposal refused"),
        }
        self.drain_governance();
    }

    /// A verified vote arrived (or was published here).
    pub(crate) fn handle_vote(self: &Arc<Self>, from: NodeId, body: GovernanceVote) {
        if !self.gate(&from, Action::Governance) || !self.check_token(&from, &body.token, "vote") {
            return;
        }
        let Ok(proposal_id) = <[u8; 32]>::try_from(body.proposal_id.as_slice()) else {
            return;
        };
        let vote = ztmesh_trust::Vote {
            proposal_id: ProposalId(proposal_id),
            voter: from,
            approve: body.approve,
        };
        let result = {
            let mut governance = self.governance();
            let tiers = self.tiers();
            governance.handle_vote(vote, &*tiers, now())
        };
        match result {
            Ok(accepted) => {
                tracing::info!(%from, proposal = %vote.proposal_id, approve = vote.approve, ?accepted, "governance vote")
            }
            Err(error) => tracing::warn!(%from, %error, "governance vote not counted"),
        }
        self.drain_governance();
    }

    /// Time passed: expires proposals and re-counts (tiers change with time).
    pub(crate) fn governance_tick(self: &Arc<Self>) {
        {
            let mut governance = self.governance();
            let tiers = self.tiers();
            governance.handle_timeout(&*tiers, now());
        }
        self.drain_governance();
    }

    /// Applies, persists and logs what governance decided.
    fn drain_governance(self: &Arc<Self>) {
        loop {
            let (event, parameters) = {
                let mut governance = self.governance();
                let Some(event) = governance.poll_event() else {
                    return;
                };
                // Recorded under the governance lock, so decisions reach state.db in the order
                // they were taken: a slower thread never writes an older value over a newer.
                if let GovernanceEvent::Applied {
                    param,
                    value,
                    proposal_id,
                } = &event
                {
                    if let Err(error) = self.store.record_governance_decision(
                        *param,
                        *value,
                        &hex::encode(proposal_id.0),
                        now(),
                    ) {
                        tracing::error!(%error, "could not record the governance decision in state.db");
                    }
                }
                (event, *governance.parameters())
            };
            match event {
                GovernanceEvent::Applied {
                    param,
                    value,
                    proposal_id,
                } => {
                    tracing::info!(param = param.as_str(), value, proposal = %proposal_id, "governance decision applied");
                    self.apply_parameter(param, &parameters);
                    self.events.emit(crate::events::NodeEvent::Governance {
                        param: param.as_str().to_owned(),
                        value,
                        proposal_id: hex::encode(proposal_id.0),
                    });
                    self.log_reports
                        .report(crate::api_types::LogEventReport::GovernanceDecision {
                            proposal: hex::encode(proposal_id.0),
                            param: param.as_str().to_owned(),
                            value,
                        });
                }
                GovernanceEvent::Expired { proposal_id } => {
                    tracing::info!(proposal = %proposal_id, "governance proposal expired without a majority");
                }
            }
        }
    }

    /// Puts a decided value into force.
    pub(crate) fn apply_parameter(&self, param: Param, parameters: &Parameters) {
        match param {
            Param::GossipFanout => {
                if let Err(error) = self.gossip.set_fanout(parameters.gossip_fanout()) {
                    tracing::warn!(%error, "gossip fan-out not applied");
                }
            }
            Param::AttestationValiditySecs => {
                if let Err(error) = self
                    .tiers()
                    .set_attestation_validity(parameters.attestation_validity())
                {
                    tracing::warn!(%error, "attestation validity not applied");
                }
            }
            Param::HealthCheckIntervalSecs => {
                self.health_override_ms.store(
                    u64::try_from(parameters.health_check_interval().as_millis())
                        .unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::SeqCst,
                );
            }
            Param::RateLimitRpm => {
                if let Err(error) = self.gossip.set_peer_rate(parameters.rate_limit_rpm()) {
                    tracing::warn!(%error, "per-peer gossip rate not applied");
                }
            }
            // Applied by the CA, which follows the decision once a majority of the nodes it
            // attested report it (see `ca_governance`); nothing to change on a node.
            Param::CertLifetimeSecs => {}
        }
    }

    /// The governed parameters in force, by name.
    pub(crate) fn parameter_values(&self) -> std::collections::BTreeMap<String, u64> {
        let mut values: std::collections::BTreeMap<String, u64> = {
            let governance = self.governance();
            Param::ALL
                .into_iter()
                .map(|p| (p.as_str().to_owned(), governance.parameters().get(p)))
                .collect()
        };
        values.insert(
            Param::GossipFanout.as_str().to_owned(),
            self.gossip.fanout() as u64,
        );
        values
    }
}

/// `POST /v1/governance/proposals` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// Parameter name (`gossip_fanout`, `rate_limit_rpm`, `cert_lifetime_secs`,
    /// `attestation_validity_secs`, `health_check_interval_secs`).
    pub param: String,
    /// The new value (within the parameter's bounds).
    pub value: u64,
    /// Seconds until the proposal expires (default 600, at most the policy's lifetime).
    #[serde(default)]
    pub ttl_sec: Option<u64>,
}

/// `POST /v1/governance/votes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// The proposal id (64 hex characters, as `GET /v1/governance/proposals` lists it).
    pub proposal_id: String,
    /// `true` approves, `false` rejects.
    pub approve: bool,
}

/// Answer of the two publishing routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GovernancePublished {
    /// The gossip message id (for a proposal: the proposal id).
    pub id: String,
}

/// One proposal in `GET /v1/governance/proposals`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalView {
    /// Its id (64 hex).
    pub id: String,
    /// The parameter.
    pub param: String,
    /// The proposed value.
    pub value: u64,
    /// Who proposed it.
    pub proposer: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// Approvals by current Tier 1 nodes.
    pub approvals: usize,
    /// Rejections recorded.
    pub rejections: usize,
    /// Tier 1 nodes this node knows now (the electorate; more than half must approve).
    pub tier1_nodes: usize,
    /// Whether it was applied.
    pub applied: bool,
}

/// `GET /v1/governance/proposals` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalsResponse {
    /// Proposals held (open, or decided and not yet expired).
    pub proposals: Vec<ProposalView>,
    /// Parameters in force.
    pub parameters: std::collections::BTreeMap<String, u64>,
}

/// The token to attach to this node's proposal or vote. Without one the message is still
/// published (it is signed and harmless), but no receiver counts it; the node says so.
fn own_token(node: &Node) -> Vec<u8> {
    let token = node.token.current();
    if token.is_empty() {
        tracing::warn!(
            "publishing without an attestation token from the CA: no node will count this"
        );
    }
    token
}

pub(crate) async fn post_proposal(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<ProposeRequest>, ApiError>,
) -> Result<(StatusCode, Json<GovernancePublished>), ApiError> {
    // The credential before the body (401 before 400).
    local_app(&node, &headers, client)?;
    let ApiJson(request) = body?;
    let param = param_named(&request.param).ok_or_else(|| {
        let names: Vec<&str> = Param::ALL.iter().map(|p| p.as_str()).collect();
        ApiError::bad_request(
            "unknown_param",
            format!(
                "unknown parameter {:?}: one of {}",
                request.param,
                names.join(", ")
            ),
        )
    })?;
    param
        .check(request.value)
        .map_err(|e| ApiError::bad_request("value_out_of_bounds", e.to_string()))?;
    let ttl = match request.ttl_sec {
        None => DEFAULT_PROPOSAL_TTL,
        Some(s) if s == 0 || s > 7 * 24 * 3600 => {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                "ttl_sec must be between 1 and 604800",
            ))
        }
        Some(s) => Duration::from_secs(s),
    };
    let body = GovernanceProposal {
        param: param.as_str().to_owned(),
        value: request.value,
        expires_at: now().saturating_add(ttl),
        token: own_token(&node),
    }
    .encode()
    .map_err(|e| ApiError::bad_request("invalid_proposal", e.to_string()))?;
    let id = node
        .publish_own(MessageKind::Proposal, body, ttl)
        .map_err(gossip_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(GovernancePublished { id: id.to_string() }),
    ))
}

pub(crate) async fn post_vote(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<VoteRequest>, ApiError>,
) -> Result<(StatusCode, Json<GovernancePublished>), ApiError> {
    // The credential before the body (401 before 400).
    local_app(&node, &headers, client)?;
    let ApiJson(request) = body?;
    let proposal_id = hex::decode(request.proposal_id.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            ApiError::bad_request(
                "malformed_proposal_id",
                "proposal_id must be 64 hex characters",
            )
        })?;
    let body = GovernanceVote {
        proposal_id,
        approve: request.approve,
        token: own_token(&node),
    }
    .encode()
    .map_err(|e| ApiError::bad_request("invalid_vote", e.to_string()))?;
    let id = node
        .publish_own(MessageKind::Vote, body, VOTE_TTL)
        .map_err(gossip_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(GovernancePublished { id: id.to_string() }),
    ))
}

pub(crate) async fn list_proposals(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
) -> Result<Json<ProposalsResponse>, ApiError> {
    local_app(&node, &headers, client)?;
    let t = now();
    let proposals = {
        let governance = node.governance();
        let tiers = node.tiers();
        let tier1 = ztmesh_trust::Electorate::tier1_count(&*tiers, t);
        governance
            .proposals()
            .map(|(proposal, votes, applied)| ProposalView {
                id: hex::encode(proposal.id.0),
                param: proposal.param.as_str().to_owned(),
                value: proposal.value,
                proposer: proposal.proposer.to_string(),
                expires_at: crate::timefmt::rfc3339(proposal.expires_at),
                approvals: votes
                    .iter()
                    .filter(|(voter, approve)| {
                        **approve && tiers.tier(voter, t).0 == ztmesh_trust::Tier::Tier1
                    })
                    .count(),
                rejections: votes.values().filter(|approve| !**approve).count(),
                tier1_nodes: tier1,
                applied,
            })
            .collect()
    };
    Ok(Json(ProposalsResponse {
        proposals,
        parameters: node.parameter_values(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_has_a_name() {
        for param in Param::ALL {
            assert_eq!(param_named(param.as_str()), Some(param));
        }
        assert_eq!(param_named("fanout"), None);
    }
}
