//! Governance over a simulated mesh of 7 Tier 1 and 10 Tier 2 nodes, each node with its own
//! `TrustBook` and `Governance`: three Tier 1 approvals apply nowhere, the fourth applies the
//! change on every node exactly once; Tier 2 votes never count; a Tier 1 voter revoked mid-vote
//! stops counting on every node that learnt of the revocation.
//!
//! Proposals and votes travel as real signed gossip messages of kind `MessageKind::Proposal`
//! and `MessageKind::Vote` (bodies `GovernanceProposal` and `GovernanceVote`), published by
//! their author through the simulator, which decides who receives them, when, and in which
//! order. Each node does what its runtime would: at the instant its gossip core delivered a
//! message it turns the verified body into a governance input whose proposer or voter is the
//! message's verified origin (never a field of the body), whose proposal id is the proposal's
//! gossip message id, and hands it to its governance core. The bodies carry no attestation
//! token: each node's trust book already holds every node's attestation result, so the tiers
//! are those a runtime would have derived from verified tokens.

use std::collections::BTreeSet;
use std::time::Duration;

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::kinds::{Body, GovernanceProposal, GovernanceVote};
use ztmesh_gossip::{MessageId, MessageKind, VerifiedMessage};
use ztmesh_sim::{LinkParams, SimConfig, Simulation};
use ztmesh_trust::{
    BinaryHash, Governance, GovernanceEvent, GovernancePolicy, Param, Parameters, PeerError,
    Platform, Proposal, ProposalId, Tier, TrustBook, TrustError, TrustPolicy, Vote,
};

const TIER1: usize = 7;
const TIER2: usize = 10;
const NODES: usize = TIER1 + TIER2;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// One node's runtime share of governance: its trust view, its governance core, what it took.
struct NodeGovernance {
    book: TrustBook,
    governance: Governance,
    taken: BTreeSet<MessageId>,
    applied: Vec<GovernanceEvent>,
    refused_not_tier1: usize,
    knows_revoked: BTreeSet<NodeId>,
}

/// What a node's runtime hands its governance core for a delivered governance message.
enum Input {
    Proposal(Proposal),
    Vote(Vote),
}

/// Turns a delivered proposal or vote into a governance input, as the node runtime does: the
/// signer is the verified origin and a proposal is named by its gossip message id.
fn governance_input(message: &VerifiedMessage) -> Input {
    match message.decode_body() {
        Ok(Body::Proposal(GovernanceProposal {
            param,
            value,
            expires_at,
            ..
        })) => Input::Proposal(Proposal {
            id: ProposalId(message.id.0),
            param: Param::ALL
                .into_iter()
                .find(|p| p.as_str() == param)
                .expect("the test proposes governed parameters only"),
            value,
            proposer: message.origin,
            created_at: message.created_at,
            expires_at,
        }),
        Ok(Body::Vote(GovernanceVote {
            proposal_id,
            approve,
            ..
        })) => Input::Vote(Vote {
            proposal_id: ProposalId(
                proposal_id
                    .try_into()
                    .expect("the schema holds proposal ids to 32 bytes"),
            ),
            voter: message.origin,
            approve,
        }),
        other => panic!("not a governance message: {other:?}"),
    }
}

struct Mesh {
    sim: Simulation,
    ids: Vec<NodeId>,
    /// Every proposal and vote published, in publication order.
    published: Vec<MessageId>,
    nodes: Vec<NodeGovernance>,
}

impl Mesh {
    fn new(seed: u64) -> Mesh {
        let mut config = SimConfig::new(seed, NODES);
        config.link = LinkParams::default().with_loss(0.05);
        let mut sim = Simulation::new(config).expect("valid config");
        sim.add_ring().expect("ring");
        sim.add_random_links(2).expect("links");
        sim.run_for(Duration::from_secs(1));
        let ids: Vec<NodeId> = (0..NODES).map(|n| sim.node_id(n).expect("node")).collect();
        let now = sim.now();
        let nodes = (0..NODES)
            .map(|_| {
                // Every node's own view of everyone, itself included: all hold a day-long
                // certificate; the first seven also attest on a TPM, run a manifest binary and
                // answered 100 of 100 health checks. The other ten attest with the dev TEE.
                let mut book = TrustBook::new(TrustPolicy::default()).expect("policy");
                for (j, id) in ids.iter().enumerate() {
                    book.handle_certificate(*id, now, now.saturating_add(DAY), now);
                    if j < TIER1 {
                        book.handle_verification_success(*id, Platform::Tpm2, now);
                        book.handle_binary(*id, BinaryHash([1; 32]), true, now);
                        for _ in 0..100 {
                            book.handle_health_check(*id, true, now);
                        }
                    } else {
                        book.handle_verification_success(*id, Platform::Dev, now);
                    }
                }
                while book.poll_event().is_some() {}
                NodeGovernance {
                    book,
                    governance: Governance::new(GovernancePolicy::default(), Parameters::default())
                        .expect("policy"),
                    taken: BTreeSet::new(),
                    applied: Vec::new(),
                    refused_not_tier1: 0,
                    knows_revoked: BTreeSet::new(),
                }
            })
            .collect();
        Mesh {
            sim,
            ids,
            published: Vec::new(),
            nodes,
        }
    }

    /// `author` signs a governance message of `kind` and gossips it.
    fn publish(&mut self, author: usize, kind: MessageKind, body: Vec<u8>) -> MessageId {
        let id = self.sim.publish(author, kind, body, HOUR).expect("publish");
        assert!(
            !self.published.contains(&id),
            "every governance message must be a new gossip message"
        );
        self.published.push(id);
        self.take_deliveries();
        id
    }

    fn propose(&mut self, proposer: usize, param: Param, value: u64) -> ProposalId {
        let body = GovernanceProposal {
            param: param.as_str().into(),
            value,
            expires_at: self.sim.now().saturating_add(HOUR),
            token: Vec::new(),
        }
        .encode()
        .expect("proposal body");
        ProposalId(self.publish(proposer, MessageKind::Proposal, body).0)
    }

    fn vote(&mut self, proposal_id: ProposalId, voter: usize, approve: bool) -> MessageId {
        let body = GovernanceVote {
            proposal_id: proposal_id.0.to_vec(),
            approve,
            token: Vec::new(),
        }
        .encode()
        .expect("vote body");
        self.publish(voter, MessageKind::Vote, body)
    }

    /// The runtime's part on every node: revocations the gossip core learnt go into the trust
    /// book (then governance recounts), and newly delivered governance messages, in delivery
    /// order, go to governance at their delivery instant.
    fn take_deliveries(&mut self) {
        let Mesh {
            sim,
            ids,
            published,
            nodes,
        } = self;
        for (n, node) in nodes.iter_mut().enumerate() {
            for id in ids.iter() {
                if sim.knows_revoked(n, id) && node.knows_revoked.insert(*id) {
                    node.book.handle_revoked(*id, sim.now());
                    node.governance.handle_timeout(&node.book, sim.now());
                }
            }
            let mut fresh: Vec<(Timestamp, usize, MessageId)> = published
                .iter()
                .enumerate()
                .filter(|(_, id)| !node.taken.contains(*id))
                .filter_map(|(i, id)| sim.delivered_at(n, id).map(|at| (at, i, *id)))
                .collect();
            fresh.sort();
            for (at, _, id) in fresh {
                node.taken.insert(id);
                let message = sim
                    .gossip(n)
                    .and_then(|gossip| gossip.message(&id))
                    .expect("a delivered message is stored");
                let result = match governance_input(message) {
                    Input::Proposal(p) => node.governance.handle_proposal(p, &node.book, at),
                    Input::Vote(v) => node.governance.handle_vote(v, &node.book, at),
                };
                if let Err(TrustError::Peer(PeerError::NotTier1 { .. })) = result {
                    node.refused_not_tier1 += 1;
                }
                while let Some(event) = node.governance.poll_event() {
                    node.applied.push(event);
                }
            }
        }
    }

    /// Runs until every governance message so far reached every node in `members`.
    fn settle(&mut self, members: &[usize]) {
        let deadline = self.sim.now().saturating_add(Duration::from_secs(60));
        loop {
            self.take_deliveries();
            let done = self.published.iter().all(|id| {
                members
                    .iter()
                    .all(|&n| self.sim.delivered_at(n, id).is_some())
            }) && members.iter().all(|&n| {
                self.published
                    .iter()
                    .all(|id| self.nodes[n].taken.contains(id))
            });
            if done {
                return;
            }
            assert!(self.sim.now() < deadline, "gossip did not settle in 60 s");
            if self.sim.step().is_none() {
                panic!("nothing scheduled but governance messages undelivered");
            }
        }
    }

    fn applied_count(&self, n: usize, proposal_id: ProposalId) -> usize {
        self.nodes[n]
            .applied
            .iter()
            .filter(|e| matches!(e, GovernanceEvent::Applied { proposal_id: p, .. } if *p == proposal_id))
            .count()
    }
}

#[test]
fn four_of_seven_tier1_approvals_apply_everywhere_three_and_tier2_votes_do_not() {
    let mut mesh = Mesh::new(11);
    let everyone: Vec<usize> = (0..NODES).collect();
    let proposal = mesh.propose(0, Param::GossipFanout, 5);
    let mut first_votes = Vec::new();
    for voter in 0..3 {
        first_votes.push(mesh.vote(proposal, voter, true));
    }
    // All ten Tier 2 nodes approve too: more than half of the mesh, but not of Tier 1.
    for voter in TIER1..NODES {
        mesh.vote(proposal, voter, true);
    }
    // A Tier 1 node approving twice still counts once. A second later its vote is signed anew:
    // another gossip message, which every node delivers and hands to governance.
    mesh.sim.run_for(Duration::from_secs(1));
    let again = mesh.vote(proposal, 1, true);
    assert!(!first_votes.contains(&again));
    mesh.settle(&everyone);
    for n in 0..NODES {
        let node = &mesh.nodes[n];
        assert_eq!(node.book.tier1_peers(mesh.sim.now()).count(), TIER1);
        assert_eq!(node.refused_not_tier1, TIER2, "node {n}");
        assert_eq!(
            node.governance.tally(&proposal, &node.book, mesh.sim.now()),
            Some((3, TIER1)),
            "node {n}"
        );
        assert_eq!(mesh.applied_count(n, proposal), 0, "node {n}");
        assert_eq!(node.governance.parameters().gossip_fanout(), 3);
    }

    mesh.vote(proposal, 3, true);
    mesh.settle(&everyone);
    // Re-deliveries (and more votes) afterwards never apply it twice.
    mesh.vote(proposal, 4, true);
    mesh.settle(&everyone);
    for n in 0..NODES {
        assert_eq!(mesh.applied_count(n, proposal), 1, "node {n}");
        assert_eq!(
            mesh.nodes[n].applied,
            vec![GovernanceEvent::Applied {
                param: Param::GossipFanout,
                value: 5,
                proposal_id: proposal
            }]
        );
        assert_eq!(mesh.nodes[n].governance.parameters().gossip_fanout(), 5);
    }
    assert!(mesh.sim.violations().is_empty());
    eprintln!(
        "governance: applied on all {NODES} nodes by {} ({} frames)",
        mesh.sim.now(),
        mesh.sim.message_frames().len()
    );
}

#[test]
fn a_revoked_tier1_voter_stops_counting_on_every_node() {
    let mut mesh = Mesh::new(12);
    let revoked = 6;
    let revoked_id = mesh.ids[revoked];
    let members: Vec<usize> = (0..NODES).filter(|&n| n != revoked).collect();
    let everyone: Vec<usize> = (0..NODES).collect();
    let proposal = mesh.propose(0, Param::RateLimitRpm, 1000);
    for voter in [4, 5, revoked] {
        mesh.vote(proposal, voter, true);
    }
    mesh.settle(&everyone);

    // The CA revokes node 6; wait until every other node learnt it.
    let record = mesh
        .sim
        .publish_revocation(TIER1 + 3, &[revoked], HOUR)
        .expect("revocation");
    let deadline = mesh.sim.now().saturating_add(Duration::from_secs(60));
    while !members
        .iter()
        .all(|&n| mesh.sim.delivered_at(n, &record).is_some())
    {
        assert!(mesh.sim.now() < deadline, "revocation did not spread");
        mesh.sim.step();
    }
    mesh.take_deliveries();
    for &n in &members {
        let node = &mesh.nodes[n];
        let now = mesh.sim.now();
        assert_eq!(node.book.tier(&revoked_id, now).0, Tier::Untrusted);
        assert_eq!(
            node.governance.tally(&proposal, &node.book, now),
            Some((2, TIER1 - 1)),
            "node {n}"
        );
    }

    // Counting the revoked vote this would be 4 of 7; recounted it is 3 of 6: not more than half.
    mesh.vote(proposal, 1, true);
    mesh.settle(&members);
    for &n in &members {
        assert_eq!(mesh.applied_count(n, proposal), 0, "node {n}");
        assert_eq!(
            mesh.nodes[n].governance.parameters().rate_limit_rpm(),
            Parameters::default().rate_limit_rpm()
        );
    }

    mesh.vote(proposal, 2, true);
    mesh.settle(&members);
    for &n in &members {
        assert_eq!(mesh.applied_count(n, proposal), 1, "node {n}");
        assert_eq!(mesh.nodes[n].governance.parameters().rate_limit_rpm(), 1000);
    }
    assert!(mesh.sim.violations().is_empty());
}
