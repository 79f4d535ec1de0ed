//! Governance: bounds, lifetimes, quorum over the current Tier 1 nodes, double votes, Tier 2
//! and revoked voters, buffers.

use std::time::Duration;

use super::util::*;
use crate::{
    Accepted, Governance, GovernanceEvent, GovernancePolicy, Param, Parameters, PeerError,
    Proposal, ProposalId, Tier, TrustBook, TrustError, Vote,
};

/// A book with nodes `1..=tier1` Tier 1 and `tier1+1..=tier1+tier2` Tier 2.
fn electorate(tier1: u8, tier2: u8) -> TrustBook {
    let mut book = book();
    for n in 1..=tier1 {
        make_tier1(&mut book, node(n));
    }
    for n in tier1 + 1..=tier1 + tier2 {
        certify(&mut book, node(n));
    }
    book
}

fn governance() -> Governance {
    Governance::new(GovernancePolicy::default(), Parameters::default()).unwrap()
}

fn proposal(id: u8, param: Param, value: u64, proposer: u8) -> Proposal {
    Proposal {
        id: ProposalId([id; 32]),
        param,
        value,
        proposer: node(proposer),
        created_at: T0,
        expires_at: at(HOUR),
    }
}

fn vote(id: u8, voter: u8, approve: bool) -> Vote {
    Vote {
        proposal_id: ProposalId([id; 32]),
        voter: node(voter),
        approve,
    }
}

fn events(governance: &mut Governance) -> Vec<GovernanceEvent> {
    std::iter::from_fn(|| governance.poll_event()).collect()
}

fn peer_error(result: Result<Accepted, TrustError>) -> PeerError {
    match result {
        Err(TrustError::Peer(error)) => error,
        other => panic!("expected a peer error, got {other:?}"),
    }
}

#[test]
fn parameter_bounds_are_enforced_at_both_ends() {
    let cases = [
        (Param::GossipFanout, 1, 16),
        (Param::RateLimitRpm, 1, 100_000),
        (Param::CertLifetimeSecs, 60, 30 * 24 * 3600),
        (Param::AttestationValiditySecs, 60, 7 * 24 * 3600),
        (Param::HealthCheckIntervalSecs, 1, 3600),
    ];
    let book = electorate(1, 0);
    for (i, (param, min, max)) in cases.into_iter().enumerate() {
        assert_eq!(param.bounds(), (min, max));
        let mut gov = governance();
        let i = i as u8 * 4;
        for (id, value, ok) in [
            (i, min, true),
            (i + 1, max, true),
            (i + 2, min - 1, false),
            (i + 3, max + 1, false),
        ] {
            let result = gov.handle_proposal(proposal(id, param, value, 1), &book, T0);
            if ok {
                assert_eq!(result, Ok(Accepted::Recorded), "{param} = {value}");
            } else {
                assert_eq!(
                    peer_error(result),
                    PeerError::ValueOutOfBounds {
                        param,
                        value,
                        min,
                        max
                    }
                );
            }
        }
        let mut parameters = Parameters::default();
        assert!(parameters.set(param, max + 1).is_err());
        assert!(parameters.set(param, max).is_ok());
        assert_eq!(parameters.get(param), max);
    }
}

#[test]
fn proposal_lifetimes_are_checked() {
    let book = electorate(1, 0);
    let mut gov = governance();
    let mut backwards = proposal(1, Param::GossipFanout, 4, 1);
    backwards.expires_at = T0;
    assert!(matches!(
        peer_error(gov.handle_proposal(backwards, &book, T0)),
        PeerError::BadLifetime(_)
    ));
    let mut too_long = proposal(2, Param::GossipFanout, 4, 1);
    too_long.expires_at = at(Duration::from_secs(7 * 24 * 3600 + 1));
    assert!(matches!(
        peer_error(gov.handle_proposal(too_long, &book, T0)),
        PeerError::BadLifetime(_)
    ));
    let mut exactly_max = proposal(3, Param::GossipFanout, 4, 1);
    exactly_max.expires_at = at(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        gov.handle_proposal(exactly_max, &book, T0),
        Ok(Accepted::Recorded)
    );
    let mut future = proposal(4, Param::GossipFanout, 4, 1);
    future.created_at = at(Duration::from_secs(301));
    future.expires_at = at(HOUR);
    assert!(matches!(
        peer_error(gov.handle_proposal(future, &book, T0)),
        PeerError::BadLifetime(_)
    ));
    assert_eq!(
        peer_error(gov.handle_proposal(proposal(5, Param::GossipFanout, 4, 1), &book, at(HOUR))),
        PeerError::Expired(ProposalId([5; 32]))
    );
}

#[test]
fn four_of_seven_tier1_approvals_apply_once_three_do_not() {
    let book = electorate(7, 10);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 5, 1), &book, T0)
        .unwrap();
    for voter in 1..=3 {
        assert_eq!(
            gov.handle_vote(vote(1, voter, true), &book, T0),
            Ok(Accepted::Recorded)
        );
    }
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((3, 7)));
    assert!(events(&mut gov).is_empty());
    assert_eq!(gov.parameters().gossip_fanout(), 3);

    gov.handle_vote(vote(1, 4, true), &book, T0).unwrap();
    assert_eq!(
        events(&mut gov),
        vec![GovernanceEvent::Applied {
            param: Param::GossipFanout,
            value: 5,
            proposal_id: ProposalId([1; 32])
        }]
    );
    assert_eq!(gov.parameters().gossip_fanout(), 5);
    assert!(gov.is_applied(&ProposalId([1; 32])));

    // Later votes, re-delivered proposals and timeouts never apply it again.
    assert_eq!(
        peer_error(gov.handle_vote(vote(1, 5, true), &book, T0)),
        PeerError::AlreadyApplied(ProposalId([1; 32]))
    );
    assert_eq!(
        gov.handle_proposal(proposal(1, Param::GossipFanout, 5, 1), &book, T0),
        Ok(Accepted::Duplicate)
    );
    gov.handle_timeout(&book, at(Duration::from_secs(60)));
    assert!(events(&mut gov).is_empty());
    // The decided proposal is forgotten at its expiry, silently; re-delivery is then stale.
    gov.handle_timeout(&book, at(HOUR));
    assert!(events(&mut gov).is_empty());
    assert_eq!(gov.proposal_count(), 0);
    assert!(gov
        .handle_proposal(proposal(1, Param::GossipFanout, 5, 1), &book, at(HOUR))
        .is_err());
}

#[test]
fn half_is_not_more_than_half() {
    let book = electorate(4, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::RateLimitRpm, 100, 1), &book, T0)
        .unwrap();
    gov.handle_vote(vote(1, 1, true), &book, T0).unwrap();
    gov.handle_vote(vote(1, 2, true), &book, T0).unwrap();
    assert!(!gov.is_applied(&ProposalId([1; 32])));
    gov.handle_vote(vote(1, 3, true), &book, T0).unwrap();
    assert!(gov.is_applied(&ProposalId([1; 32])));
    assert_eq!(gov.parameters().rate_limit_rpm(), 100);
}

#[test]
fn rejections_do_not_count_as_approvals() {
    let book = electorate(3, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    gov.handle_vote(vote(1, 1, true), &book, T0).unwrap();
    gov.handle_vote(vote(1, 2, false), &book, T0).unwrap();
    gov.handle_vote(vote(1, 3, false), &book, T0).unwrap();
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((1, 3)));
    assert!(!gov.is_applied(&ProposalId([1; 32])));
}

#[test]
fn a_double_vote_counts_once_and_a_change_of_mind_is_refused() {
    let book = electorate(3, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    assert_eq!(
        gov.handle_vote(vote(1, 1, true), &book, T0),
        Ok(Accepted::Recorded)
    );
    assert_eq!(
        gov.handle_vote(vote(1, 1, true), &book, T0),
        Ok(Accepted::Duplicate)
    );
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((1, 3)));
    assert!(!gov.is_applied(&ProposalId([1; 32])));

    gov.handle_vote(vote(1, 2, false), &book, T0).unwrap();
    assert_eq!(
        peer_error(gov.handle_vote(vote(1, 2, true), &book, T0)),
        PeerError::ConflictingVote {
            voter: node(2),
            proposal_id: ProposalId([1; 32]),
            first: false
        }
    );
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((1, 3)));
    assert!(!gov.is_applied(&ProposalId([1; 32])));
}

#[test]
fn tier2_votes_and_proposals_are_refused_and_never_counted() {
    let book = electorate(3, 5);
    let mut gov = governance();
    assert_eq!(
        peer_error(gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 4), &book, T0)),
        PeerError::NotTier1 {
            node: node(4),
            tier: Tier::Tier2
        }
    );
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    for voter in 4..=8 {
        assert!(matches!(
            peer_error(gov.handle_vote(vote(1, voter, true), &book, T0)),
            PeerError::NotTier1 {
                tier: Tier::Tier2,
                ..
            }
        ));
    }
    // An unknown node is Untrusted.
    assert!(matches!(
        peer_error(gov.handle_vote(vote(1, 99, true), &book, T0)),
        PeerError::NotTier1 {
            tier: Tier::Untrusted,
            ..
        }
    ));
    gov.handle_vote(vote(1, 1, true), &book, T0).unwrap();
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((1, 3)));
    assert!(!gov.is_applied(&ProposalId([1; 32])));
}

#[test]
fn a_revoked_voter_stops_counting_and_the_quorum_shrinks_with_it() {
    let mut book = electorate(7, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 6, 1), &book, T0)
        .unwrap();
    for voter in 1..=3 {
        gov.handle_vote(vote(1, voter, true), &book, T0).unwrap();
    }
    book.handle_revoked(node(1), T0);
    gov.handle_timeout(&book, T0);
    assert_eq!(gov.tally(&ProposalId([1; 32]), &book, T0), Some((2, 6)));
    // Without the recount this fourth approval would make 4 of 7.
    gov.handle_vote(vote(1, 4, true), &book, T0).unwrap();
    assert!(!gov.is_applied(&ProposalId([1; 32])));
    // A revoked node's own new votes are refused.
    assert!(
        gov.handle_vote(vote(1, 1, true), &book, T0).is_ok(),
        "duplicate of its first vote"
    );
    assert!(matches!(
        peer_error(gov.handle_vote(vote(2, 1, true), &book, T0)),
        PeerError::NotTier1 {
            tier: Tier::Untrusted,
            ..
        }
    ));
    gov.handle_vote(vote(1, 5, true), &book, T0).unwrap();
    assert!(gov.is_applied(&ProposalId([1; 32])));
    assert_eq!(gov.parameters().gossip_fanout(), 6);
}

#[test]
fn a_shrinking_electorate_can_complete_a_majority_on_timeout() {
    let mut book = electorate(5, 0);
    // Nodes 4 and 5 hold certificates that lapse at T0 + 1 h.
    for n in [4, 5] {
        book.handle_certificate(node(n), T0, at(HOUR), T0);
    }
    let mut gov = governance();
    let mut p = proposal(1, Param::HealthCheckIntervalSecs, 30, 1);
    p.expires_at = at(HOUR * 2);
    gov.handle_proposal(p, &book, T0).unwrap();
    gov.handle_vote(vote(1, 1, true), &book, T0).unwrap();
    gov.handle_vote(vote(1, 2, true), &book, T0).unwrap();
    assert!(!gov.is_applied(&ProposalId([1; 32])));
    gov.handle_timeout(&book, at(HOUR));
    assert!(gov.is_applied(&ProposalId([1; 32])));
    assert_eq!(
        gov.parameters().health_check_interval(),
        Duration::from_secs(30)
    );
}

#[test]
fn expired_proposals_are_dropped_and_late_votes_refused() {
    let book = electorate(3, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    gov.handle_vote(vote(1, 1, true), &book, T0).unwrap();
    assert_eq!(gov.poll_timeout(), Some(at(HOUR)));
    assert_eq!(
        peer_error(gov.handle_vote(vote(1, 2, true), &book, at(HOUR))),
        PeerError::Expired(ProposalId([1; 32]))
    );
    gov.handle_timeout(&book, at(HOUR));
    assert_eq!(
        events(&mut gov),
        vec![GovernanceEvent::Expired {
            proposal_id: ProposalId([1; 32])
        }]
    );
    assert_eq!(gov.proposal_count(), 0);
    assert_eq!(gov.poll_timeout(), None);
    assert_eq!(gov.parameters(), &Parameters::default());
}

#[test]
fn a_vote_that_outruns_its_proposal_waits_for_it() {
    let book = electorate(3, 1);
    let mut gov = governance();
    assert_eq!(
        gov.handle_vote(vote(1, 1, true), &book, T0),
        Ok(Accepted::Pending)
    );
    assert_eq!(
        gov.handle_vote(vote(1, 1, true), &book, T0),
        Ok(Accepted::Duplicate)
    );
    assert_eq!(
        gov.handle_vote(vote(1, 2, true), &book, T0),
        Ok(Accepted::Pending)
    );
    // Tier 2 votes are not even buffered.
    assert!(gov.handle_vote(vote(1, 4, true), &book, T0).is_err());
    assert_eq!(gov.pending_vote_count(), 2);
    gov.handle_proposal(proposal(1, Param::GossipFanout, 8, 3), &book, T0)
        .unwrap();
    assert_eq!(gov.pending_vote_count(), 0);
    assert!(gov.is_applied(&ProposalId([1; 32])));
    assert_eq!(gov.parameters().gossip_fanout(), 8);
}

#[test]
fn pending_votes_are_bounded() {
    let book = electorate(3, 0);
    let policy = GovernancePolicy {
        max_pending_votes: 2,
        ..GovernancePolicy::default()
    };
    let mut gov = Governance::new(policy, Parameters::default()).unwrap();
    for id in 1..=3 {
        assert_eq!(
            gov.handle_vote(vote(id, 1, true), &book, T0),
            Ok(Accepted::Pending)
        );
    }
    assert_eq!(gov.pending_vote_count(), 2);
    assert_eq!(gov.dropped_pending_votes(), 1);
}

#[test]
fn proposals_are_bounded_in_total_and_per_proposer() {
    let book = electorate(3, 0);
    let policy = GovernancePolicy {
        max_proposals: 3,
        max_proposals_per_proposer: 2,
        ..GovernancePolicy::default()
    };
    let mut gov = Governance::new(policy, Parameters::default()).unwrap();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    gov.handle_proposal(proposal(2, Param::GossipFanout, 3, 1), &book, T0)
        .unwrap();
    assert_eq!(
        peer_error(gov.handle_proposal(proposal(3, Param::GossipFanout, 4, 1), &book, T0)),
        PeerError::TooManyProposals { limit: 2 }
    );
    gov.handle_proposal(proposal(4, Param::GossipFanout, 4, 2), &book, T0)
        .unwrap();
    assert_eq!(
        peer_error(gov.handle_proposal(proposal(5, Param::GossipFanout, 5, 3), &book, T0)),
        PeerError::TooManyProposals { limit: 3 }
    );
    assert_eq!(gov.proposal_count(), 3);
}

#[test]
fn votes_per_proposal_are_bounded() {
    let book = electorate(7, 0);
    let policy = GovernancePolicy {
        max_votes_per_proposal: 2,
        ..GovernancePolicy::default()
    };
    let mut gov = Governance::new(policy, Parameters::default()).unwrap();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    gov.handle_vote(vote(1, 1, false), &book, T0).unwrap();
    gov.handle_vote(vote(1, 2, false), &book, T0).unwrap();
    assert_eq!(
        peer_error(gov.handle_vote(vote(1, 3, false), &book, T0)),
        PeerError::TooManyVotes {
            proposal_id: ProposalId([1; 32]),
            limit: 2
        }
    );
}

#[test]
fn a_conflicting_proposal_under_a_known_id_is_refused() {
    let book = electorate(3, 0);
    let mut gov = governance();
    gov.handle_proposal(proposal(1, Param::GossipFanout, 2, 1), &book, T0)
        .unwrap();
    assert_eq!(
        peer_error(gov.handle_proposal(proposal(1, Param::GossipFanout, 9, 1), &book, T0)),
        PeerError::ConflictingProposal(ProposalId([1; 32]))
    );
}

#[test]
fn governance_events_are_bounded() {
    let book = electorate(1, 0);
    let policy = GovernancePolicy {
        max_events: 1,
        ..GovernancePolicy::default()
    };
    let mut gov = Governance::new(policy, Parameters::default()).unwrap();
    for id in 1..=3 {
        gov.handle_proposal(
            proposal(id, Param::RateLimitRpm, u64::from(id), 1),
            &book,
            T0,
        )
        .unwrap();
        gov.handle_vote(vote(id, 1, true), &book, T0).unwrap();
    }
    assert_eq!(gov.dropped_events(), 2);
    assert_eq!(events(&mut gov).len(), 1);
    assert_eq!(gov.parameters().rate_limit_rpm(), 3);
}

#[test]
fn parameters_persist_and_reload_with_bounds_checked() {
    let mut parameters = Parameters::default();
    parameters.set(Param::CertLifetimeSecs, 600).unwrap();
    let saved = serde_json::to_string(&parameters).unwrap();
    assert!(saved.contains("\"cert_lifetime_secs\":600"), "{saved}");
    let loaded: Parameters = serde_json::from_str(&saved).unwrap();
    assert_eq!(loaded, parameters);
    let tampered = saved.replace("\"gossip_fanout\":3", "\"gossip_fanout\":17");
    assert!(serde_json::from_str::<Parameters>(&tampered).is_err());
}

#[test]
fn invalid_governance_policies_are_refused() {
    let policy = GovernancePolicy {
        max_proposals: 0,
        ..GovernancePolicy::default()
    };
    assert!(Governance::new(policy, Parameters::default()).is_err());
}
