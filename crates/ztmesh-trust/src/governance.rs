//! Governance (DESIGN.md §3): Tier 1 nodes propose a new value for a bounded parameter, Tier 1
//! nodes vote, and the change applies on every node once more than half of the *current* Tier 1
//! nodes approve before the proposal expires.
//!
//! [`Governance`] is a sans-IO state machine. The runtime verifies the signature of each
//! gossiped proposal or vote (the signer is the `proposer`/`voter`), then calls
//! [`Governance::handle_proposal`] / [`Governance::handle_vote`] with an [`Electorate`] (normally
//! its [`TrustBook`], which must include the local node itself so that it counts and may vote),
//! calls [`Governance::handle_timeout`] when [`Governance::poll_timeout`] is due or tiers changed,
//! and drains [`Governance::poll_event`], applying each [`GovernanceEvent::Applied`] and
//! persisting [`Governance::parameters`].
//!
//! Counting rules, all decided here and nowhere else:
//! - Only a voter that is Tier 1 when its vote arrives is recorded; others are refused.
//! - Votes are re-checked at every decision: a voter revoked or demoted since no longer counts,
//!   and the quorum is measured against the Tier 1 nodes of that moment.
//! - One vote per voter and proposal: the first stands. Repeating it is a harmless duplicate;
//!   a later vote the other way is refused ([`PeerError::ConflictingVote`]) and changes nothing.
//! - Proposing is not voting: the proposer votes like anyone else.
//! - A decided proposal is kept until its expiry so that it is applied exactly once, however
//!   often it or its votes are delivered again.
//! - A vote may outrun its proposal on gossip; it waits in a bounded buffer until the proposal
//!   arrives.
//!
//! It must never apply a value outside its parameter's bounds, nor apply a proposal twice.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};

use crate::parameters::{Param, Parameters};
use crate::tiers::{Tier, TrustBook};
use crate::{PeerError, TrustError, UsageError};

/// A proposal's identifier: normally the gossip message id of the signed proposal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId(pub [u8; 32]);

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProposalId({self})")
    }
}

/// A signed request to set `param` to `value`, open until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its identifier.
    pub id: ProposalId,
    /// The parameter.
    pub param: Param,
    /// The new value.
    pub value: u64,
    /// The signer.
    pub proposer: NodeId,
    /// When the proposer made it (its clock).
    pub created_at: Timestamp,
    /// After this instant no vote counts and it is dropped.
    pub expires_at: Timestamp,
}

/// A signed vote on a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The proposal voted on.
    pub proposal_id: ProposalId,
    /// The signer.
    pub voter: NodeId,
    /// `true` approves, `false` rejects.
    pub approve: bool,
}

/// Who may take part in governance, and how many Tier 1 nodes there are right now.
pub trait Electorate {
    /// `node`'s tier at `now`.
    fn tier_of(&self, node: &NodeId, now: Timestamp) -> Tier;
    /// How many nodes are Tier 1 at `now` (the local node included).
    fn tier1_count(&self, now: Timestamp) -> usize;
}

impl Electorate for TrustBook {
    fn tier_of(&self, node: &NodeId, now: Timestamp) -> Tier {
        self.tier(node, now).0
    }

    fn tier1_count(&self, now: Timestamp) -> usize {
        self.tier1_peers(now).count()
    }
}

/// What governance decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GovernanceEvent {
    /// A proposal won: `param` is now `value` (already set in [`Governance::parameters`]).
    Applied {
        /// The parameter.
        param: Param,
        /// Its new value.
        value: u64,
        /// The winning proposal.
        proposal_id: ProposalId,
    },
    /// A proposal expired without a majority.
    Expired {
        /// The proposal.
        proposal_id: ProposalId,
    },
}

/// What an accepted input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded for the first time.
    Recorded,
    /// Already known, identical: nothing changed.
    Duplicate,
    /// A vote for a proposal not seen yet, buffered until it arrives.
    Pending,
}

/// Limits of the governance state. Every collection keyed by peer input is bounded here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernancePolicy {
    /// Proposals held, open or decided-but-unexpired.
    pub max_proposals: usize,
    /// Proposals held per proposer.
    pub max_proposals_per_proposer: usize,
    /// Votes held per proposal.
    pub max_votes_per_proposal: usize,
    /// Votes buffered for proposals not seen yet; the oldest is dropped beyond it.
    pub max_pending_votes: usize,
    /// Longest allowed `expires_at - created_at`.
    pub max_proposal_lifetime: Duration,
    /// How far in the future `created_at` may lie (clock skew).
    pub max_clock_skew: Duration,
    /// Events queued for [`Governance::poll_event`]; the oldest is dropped beyond it.
    pub max_events: usize,
}

impl Default for GovernancePolicy {
    fn default() -> Self {
        GovernancePolicy {
            max_proposals: 64,
            max_proposals_per_proposer: 4,
            max_votes_per_proposal: 1024,
            max_pending_votes: 256,
            max_proposal_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            max_events: 256,
        }
    }
}

impl GovernancePolicy {
    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), TrustError> {
        if self.max_proposals == 0
            || self.max_proposals_per_proposer == 0
            || self.max_votes_per_proposal == 0
            || self.max_pending_votes == 0
            || self.max_events == 0
        {
            return Err(UsageError::InvalidPolicy("governance limits must be positive").into());
        }
        if self.max_proposal_lifetime.is_zero() {
            return Err(UsageError::InvalidPolicy("max_proposal_lifetime must be positive").into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Held {
    proposal: Proposal,
    /// First vote of each voter.
    votes: BTreeMap<NodeId, bool>,
    applied: bool,
}

/// The governance state machine of one node. See the module documentation.
#[derive(Debug, Clone)]
pub struct Governance {
    policy: GovernancePolicy,
    parameters: Parameters,
    proposals: BTreeMap<ProposalId, Held>,
    pending_votes: VecDeque<Vote>,
    events: VecDeque<GovernanceEvent>,
    dropped_pending_votes: u64,
    dropped_events: u64,
}

impl Governance {
    /// Governance starting from `parameters` (defaults, or the persisted ones).
    pub fn new(policy: GovernancePolicy, parameters: Parameters) -> Result<Self, TrustError> {
        policy.validate()?;
        Ok(Governance {
            policy,
            parameters,
            proposals: BTreeMap::new(),
            pending_votes: VecDeque::new(),
            events: VecDeque::new(),
            dropped_pending_votes: 0,
            dropped_events: 0,
        })
    }

    /// Current values, to persist after every [`GovernanceEvent::Applied`].
    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    /// A proposal arrived (its signature already verified; `proposer` is the signer).
    pub fn handle_proposal(
        &mut self,
        proposal: Proposal,
        electorate: &impl Electorate,
        now: Timestamp,
    ) -> Result<Accepted, TrustError> {
        if let Some(held) = self.proposals.get(&proposal.id) {
            return if held.proposal == proposal {
                Ok(Accepted::Duplicate)
            } else {
                Err(PeerError::ConflictingProposal(proposal.id).into())
            };
        }
        self.validate(&proposal, now)?;
        let tier = electorate.tier_of(&proposal.proposer, now);
        if tier != Tier::Tier1 {
            return Err(PeerError::NotTier1 {
                node: proposal.proposer,
                tier,
            }
            .into());
        }
        let by_proposer = self
            .proposals
            .values()
            .filter(|held| held.proposal.proposer == proposal.proposer)
            .count();
        if by_proposer >= self.policy.max_proposals_per_proposer {
            return Err(PeerError::TooManyProposals {
                limit: self.policy.max_proposals_per_proposer,
            }
            .into());
        }
        if self.proposals.len() >= self.policy.max_proposals {
            return Err(PeerError::TooManyProposals {
                limit: self.policy.max_proposals,
            }
            .into());
        }
        self.proposals.insert(
            proposal.id,
            Held {
                proposal,
                votes: BTreeMap::new(),
                applied: false,
            },
        );
        // Votes that outran the proposal are handled now, in arrival order. They were checked
        // when buffered, and are checked again like any vote (the voter may have lost Tier 1).
        let (waiting, others): (VecDeque<Vote>, VecDeque<Vote>) =
            std::mem::take(&mut self.pending_votes)
                .into_iter()
                .partition(|vote| vote.proposal_id == proposal.id);
        self.pending_votes = others;
        for vote in waiting {
            let _refused_votes_are_dropped = self.handle_vote(vote, electorate, now);
        }
        self.decide(proposal.id, electorate, now);
        Ok(Accepted::Recorded)
    }

    /// A vote arrived (its signature already verified; `voter` is the signer).
    pub fn handle_vote(
        &mut self,
        vote: Vote,
        electorate: &impl Electorate,
        now: Timestamp,
    ) -> Result<Accepted, TrustError> {
        let tier = electorate.tier_of(&vote.voter, now);
        let Some(held) = self.proposals.get_mut(&vote.proposal_id) else {
            if tier != Tier::Tier1 {
                return Err(PeerError::NotTier1 {
                    node: vote.voter,
                    tier,
                }
                .into());
            }
            if self.pending_votes.contains(&vote) {
                return Ok(Accepted::Duplicate);
            }
            if self.pending_votes.len() >= self.policy.max_pending_votes {
                self.pending_votes.pop_front();
                self.dropped_pending_votes += 1;
            }
            self.pending_votes.push_back(vote);
            return Ok(Accepted::Pending);
        };
        if held.applied {
            return Err(PeerError::AlreadyApplied(vote.proposal_id).into());
        }
        if now >= held.proposal.expires_at {
            return Err(PeerError::Expired(vote.proposal_id).into());
        }
        if let Some(&first) = held.votes.get(&vote.voter) {
            return if first == vote.approve {
                Ok(Accepted::Duplicate)
            } else {
                Err(PeerError::ConflictingVote {
                    voter: vote.voter,
                    proposal_id: vote.proposal_id,
                    first,
                }
                .into())
            };
        }
        if tier != Tier::Tier1 {
            return Err(PeerError::NotTier1 {
                node: vote.voter,
                tier,
            }
            .into());
        }
        if held.votes.len() >= self.policy.max_votes_per_proposal {
            return Err(PeerError::TooManyVotes {
                proposal_id: vote.proposal_id,
                limit: self.policy.max_votes_per_proposal,
            }
            .into());
        }
        held.votes.insert(vote.voter, vote.approve);
        self.decide(vote.proposal_id, electorate, now);
        Ok(Accepted::Recorded)
    }

    /// Time passed or tiers changed: expires proposals and re-decides the open ones against
    /// the Tier 1 nodes of `now` (a shrinking electorate can complete a majority).
    pub fn handle_timeout(&mut self, electorate: &impl Electorate, now: Timestamp) {
        let ids: Vec<ProposalId> = self.proposals.keys().copied().collect();
        for id in ids {
            let Some(held) = self.proposals.get(&id) else {
                continue;
            };
            if now >= held.proposal.expires_at {
                let applied = held.applied;
                self.proposals.remove(&id);
                if !applied {
                    self.push_event(GovernanceEvent::Expired { proposal_id: id });
                }
            } else {
                self.decide(id, electorate, now);
            }
        }
    }

    /// The next proposal expiry.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.proposals
            .values()
            .map(|held| held.proposal.expires_at)
            .min()
    }

    /// The next decision, oldest first.
    pub fn poll_event(&mut self) -> Option<GovernanceEvent> {
        self.events.pop_front()
    }

    /// Approvals of `id` that count at `now`, and the Tier 1 count they are measured against.
    pub fn tally(
        &self,
        id: &ProposalId,
        electorate: &impl Electorate,
        now: Timestamp,
    ) -> Option<(usize, usize)> {
        let held = self.proposals.get(id)?;
        let approvals = held
            .votes
            .iter()
            .filter(|(voter, approve)| **approve && electorate.tier_of(voter, now) == Tier::Tier1)
            .count();
        Some((approvals, electorate.tier1_count(now)))
    }

    /// Held proposals in id order, each with its recorded votes (voter → approve) and whether
    /// it was applied.
    pub fn proposals(
        &self,
    ) -> impl Iterator<Item = (&Proposal, &BTreeMap<NodeId, bool>, bool)> + '_ {
        self.proposals
            .values()
            .map(|held| (&held.proposal, &held.votes, held.applied))
    }

    /// Whether proposal `id` is held and was applied.
    pub fn is_applied(&self, id: &ProposalId) -> bool {
        self.proposals.get(id).is_some_and(|held| held.applied)
    }

    /// Proposals held (open or decided, not yet expired).
    pub fn proposal_count(&self) -> usize {
        self.proposals.len()
    }

    /// Votes buffered for unknown proposals.
    pub fn pending_vote_count(&self) -> usize {
        self.pending_votes.len()
    }

    /// Buffered votes dropped to stay within `max_pending_votes`.
    pub fn dropped_pending_votes(&self) -> u64 {
        self.dropped_pending_votes
    }

    /// Events dropped because nobody drained [`Governance::poll_event`].
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn validate(&self, proposal: &Proposal, now: Timestamp) -> Result<(), PeerError> {
        if proposal.expires_at <= proposal.created_at {
            return Err(PeerError::BadLifetime("expires before it is created"));
        }
        if proposal.expires_at.duration_since(proposal.created_at)
            > self.policy.max_proposal_lifetime
        {
            return Err(PeerError::BadLifetime("open longer than the maximum"));
        }
        if proposal.created_at > now.saturating_add(self.policy.max_clock_skew) {
            return Err(PeerError::BadLifetime("created in the future"));
        }
        if now >= proposal.expires_at {
            return Err(PeerError::Expired(proposal.id));
        }
        proposal.param.check(proposal.value)
    }

    /// Applies `id` if more than half of the Tier 1 nodes of `now` approve it.
    fn decide(&mut self, id: ProposalId, electorate: &impl Electorate, now: Timestamp) {
        let Some((approvals, tier1)) = self.tally(&id, electorate, now) else {
            return;
        };
        let Some(held) = self.proposals.get_mut(&id) else {
            return;
        };
        if held.applied || now >= held.proposal.expires_at || approvals * 2 <= tier1 {
            return;
        }
        let Proposal { param, value, .. } = held.proposal;
        if self.parameters.set(param, value).is_err() {
            // Unreachable: the value was bounds-checked on arrival. Never apply it anyway.
            return;
        }
        held.applied = true;
        self.push_event(GovernanceEvent::Applied {
            param,
            value,
            proposal_id: id,
        });
    }

    fn push_event(&mut self, event: GovernanceEvent) {
        if self.events.len() >= self.policy.max_events {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }
}
