//! The one error type of this crate: what a peer sent that cannot be accepted, apart from what
//! the caller got wrong.

use ztmesh_core::NodeId;

use crate::governance::ProposalId;
use crate::parameters::Param;
use crate::tiers::Tier;

/// Every error of `ztmesh-trust`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A proposal or vote from the mesh was refused; the peer (or its author) is at fault.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The caller misused the API (invalid policy, oversized persisted state).
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// A governance input that is refused. None of them changes any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The proposed value is outside the parameter's bounds.
    #[error("{param} = {value} is outside {min}..={max}")]
    ValueOutOfBounds {
        /// The parameter.
        param: Param,
        /// The proposed value.
        value: u64,
        /// Lowest allowed value.
        min: u64,
        /// Highest allowed value.
        max: u64,
    },
    /// The proposal's lifetime is empty, too long, or it was created in the future.
    #[error("proposal lifetime is invalid: {0}")]
    BadLifetime(&'static str),
    /// The proposal or vote arrived at or after the proposal's expiry.
    #[error("proposal {0} expired")]
    Expired(ProposalId),
    /// A proposal with this id but different content is already known.
    #[error("proposal {0} conflicts with a known proposal of the same id")]
    ConflictingProposal(ProposalId),
    /// The proposer or voter is not Tier 1 now.
    #[error("{node} is {tier}, governance needs tier 1")]
    NotTier1 {
        /// The proposer or voter.
        node: NodeId,
        /// Its tier at the time of the input.
        tier: Tier,
    },
    /// The voter already voted the other way on this proposal; the first vote stands.
    #[error("{voter} already voted {first} on proposal {proposal_id}")]
    ConflictingVote {
        /// The voter.
        voter: NodeId,
        /// The proposal.
        proposal_id: ProposalId,
        /// The vote that stands (`true` = approve).
        first: bool,
    },
    /// The proposal was already decided; later votes change nothing.
    #[error("proposal {0} was already applied")]
    AlreadyApplied(ProposalId),
    /// Too many open proposals (in total, or from this proposer).
    #[error("too many open proposals (limit {limit})")]
    TooManyProposals {
        /// The limit that was hit.
        limit: usize,
    },
    /// The proposal holds as many votes as it may.
    #[error("proposal {proposal_id} holds the maximum of {limit} votes")]
    TooManyVotes {
        /// The proposal.
        proposal_id: ProposalId,
        /// The limit.
        limit: usize,
    },
}

/// The caller got something wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A policy value is out of range.
    #[error("invalid policy: {0}")]
    InvalidPolicy(&'static str),
    /// A persisted revocation set holds more entries than the policy allows.
    #[error("revocation set of {len} entries exceeds the limit of {max}")]
    RevokedSetTooLarge {
        /// Entries in the set.
        len: usize,
        /// The policy's limit.
        max: usize,
    },
    /// A persisted parameter is outside its bounds.
    #[error("persisted {param} = {value} is outside its bounds")]
    ParameterOutOfBounds {
        /// The parameter.
        param: Param,
        /// The stored value.
        value: u64,
    },
}
