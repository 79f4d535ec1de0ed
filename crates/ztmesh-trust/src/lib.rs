//! Trust tiers, enforcement and governance for ztmesh (DESIGN.md §3 "Attestation and trust
//! tiers"), as sans-IO state machines.
//!
//! - [`TrustBook`] turns what the runtime verified about each peer (certificate, hardware
//!   attestation, binary hash, health checks, revocation) into a [`Tier`] with a [`Reason`],
//!   and reports [`TierChange`]s.
//! - [`Gates`] is the enforcement table: the tier each [`Action`] needs, refusals counted.
//! - [`Governance`] counts Tier 1 votes on bounded [`Param`] changes and emits each applied
//!   change once.
//!
//! This crate never performs IO, reads a clock or draws randomness, and never verifies a
//! signature, certificate or piece of evidence itself: callers pass verdicts and `now` in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca_governance;
mod error;
pub mod gates;
pub mod governance;
mod health_window;
pub mod parameters;
mod revoked_set;
pub mod tiers;

#[cfg(test)]
mod tests;

pub use error::{PeerError, TrustError, UsageError};
pub use gates::{required_tier, Action, Gates, Refusal};
pub use governance::{
    Accepted, Electorate, Governance, GovernanceEvent, GovernancePolicy, Proposal, ProposalId, Vote,
};
pub use health_window::HealthWindow;
pub use parameters::{Param, Parameters};
pub use revoked_set::RevokedSet;
pub use tiers::{
    BinaryHash, PeerStatus, Platform, Reason, Tier, TierChange, TrustBook, TrustPolicy,
    VerificationOutcome, DEMOTION_FAILURES, MIN_HEALTH_WINDOW,
};
