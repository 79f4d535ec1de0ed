//! The CA follows the governance decisions only it can enforce: `cert_lifetime_secs`, the
//! lifetime of the certificates it issues.
//!
//! The CA takes no part in gossip, so it cannot count votes or judge tiers itself. What it
//! knows first-hand is which nodes it attested: those it issued an attestation token to (their
//! evidence verified, their binary is in the release manifest) within [`ATTESTED_WINDOW`], and
//! that are not revoked. Every node that applies a decision reports it over its own mTLS
//! connection (`POST /v1/log/events`). The CA applies the decision once **more than half of
//! the nodes it attested** have reported it, so no minority of members, attested or not, can
//! change how long certificates live. A report from a node the CA did not attest is recorded in
//! the membership log like any other but does not count here.
//!
//! Reports are counted per (proposal, parameter, value): a node that misreports what a proposal
//! said adds to a tally of its own. A decision applies once; a later decision on the same
//! parameter replaces it. The tallies live in memory (at most [`MAX_TALLIES`]); the decision in
//! force is persisted by the caller. A CA restart forgets partial tallies, which only delays a
//! decision: nodes report each decision once, so one that was not reached before a restart must
//! be proposed again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::Param;
use ztmesh_core::NodeId;

/// How recently a node must have received a token to count as attested (the default
/// attestation validity).
pub const ATTESTED_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Most tallies kept; past it the oldest is forgotten.
pub const MAX_TALLIES: usize = 1024;

/// The parameters the CA enforces.
pub fn followed_by_ca(param: Param) -> bool {
    matches!(param, Param::CertLifetimeSecs)
}

/// What one report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The parameter is not one the CA enforces: nothing to count.
    NotFollowed,
    /// The proposal already applied here.
    AlreadyApplied,
    /// Counted (or not, if the reporter is not attested): `reporters` of `attested` so far.
    Counted {
        /// Attested nodes that reported this decision.
        reporters: usize,
        /// Nodes attested now.
        attested: usize,
    },
    /// This report made the majority: put `value` of `param` into force.
    Apply {
        /// The parameter.
        param: Param,
        /// Its new value.
        value: u64,
        /// Attested nodes that reported it.
        reporters: usize,
        /// Nodes attested now.
        attested: usize,
    },
}

#[derive(Debug, Default)]
struct Tally {
    reporters: BTreeSet<NodeId>,
    /// Insertion order, for forgetting the oldest.
    seq: u64,
}

/// Report tallies of the decisions the CA follows. Sans-IO: the caller passes the set of
/// attested nodes at the time of each report.
#[derive(Debug, Default)]
pub struct CaGovernance {
    tallies: BTreeMap<(String, Param, u64), Tally>,
    applied: BTreeSet<String>,
    next_seq: u64,
}

impl CaGovernance {
    /// No tallies; `applied` are proposals already in force (so they never apply twice).
    pub fn new(applied: impl IntoIterator<Item = String>) -> Self {
        CaGovernance {
            applied: applied.into_iter().collect(),
            ..CaGovernance::default()
        }
    }

    /// `reporter` says `proposal` set `param` to `value`; `attested` are the nodes the CA
    /// attested now. The reporter counts only if it is among them; the others are counted
    /// only while they stay attested.
    pub fn report(
        &mut self,
        reporter: NodeId,
        proposal: &str,
        param: Param,
        value: u64,
        attested: &BTreeSet<NodeId>,
    ) -> Outcome {
        if !followed_by_ca(param) || param.check(value).is_err() {
            return Outcome::NotFollowed;
        }
        if self.applied.contains(proposal) {
            return Outcome::AlreadyApplied;
        }
        let key = (proposal.to_owned(), param, value);
        if !self.tallies.contains_key(&key) && self.tallies.len() >= MAX_TALLIES {
            if let Some(oldest) = self
                .tallies
                .iter()
                .min_by_key(|(_, tally)| tally.seq)
                .map(|(key, _)| key.clone())
            {
                self.tallies.remove(&oldest);
            }
        }
        let seq = self.next_seq;
        let tally = self.tallies.entry(key).or_insert_with(|| Tally {
            reporters: BTreeSet::new(),
            seq,
        });
        self.next_seq += 1;
        if attested.contains(&reporter) {
            tally.reporters.insert(reporter);
        }
        let reporters = tally.reporters.intersection(attested).count();
        let majority = !attested.is_empty() && reporters * 2 > attested.len();
        if !majority {
            return Outcome::Counted {
                reporters,
                attested: attested.len(),
            };
        }
        self.tallies.retain(|(p, _, _), _| p != proposal);
        self.applied.insert(proposal.to_owned());
        Outcome::Apply {
            param,
            value,
            reporters,
            attested: attested.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_spki_der(&[n])
    }

    fn set(nodes: &[u8]) -> BTreeSet<NodeId> {
        nodes.iter().map(|n| node(*n)).collect()
    }

    const P: &str = "proposal-1";
    const LIFETIME: Param = Param::CertLifetimeSecs;

    #[test]
    fn a_majority_of_attested_reporters_applies_once() {
        let attested = set(&[1, 2, 3, 4]);
        let mut governance = CaGovernance::default();
        assert_eq!(
            governance.report(node(1), P, LIFETIME, 7200, &attested),
            Outcome::Counted {
                reporters: 1,
                attested: 4
            }
        );
        // A double report counts once; half is not a majority.
        governance.report(node(1), P, LIFETIME, 7200, &attested);
        assert_eq!(
            governance.report(node(2), P, LIFETIME, 7200, &attested),
            Outcome::Counted {
                reporters: 2,
                attested: 4
            }
        );
        assert_eq!(
            governance.report(node(3), P, LIFETIME, 7200, &attested),
            Outcome::Apply {
                param: LIFETIME,
                value: 7200,
                reporters: 3,
                attested: 4
            }
        );
        assert_eq!(
            governance.report(node(4), P, LIFETIME, 7200, &attested),
            Outcome::AlreadyApplied
        );
        // Applied proposals handed in at start never apply again.
        let mut restarted = CaGovernance::new([P.to_owned()]);
        assert_eq!(
            restarted.report(node(1), P, LIFETIME, 7200, &set(&[1])),
            Outcome::AlreadyApplied
        );
    }

    #[test]
    fn reporters_the_ca_did_not_attest_do_not_count() {
        let attested = set(&[1, 2, 3]);
        let mut governance = CaGovernance::default();
        for outsider in 10..20 {
            assert_eq!(
                governance.report(node(outsider), P, LIFETIME, 60, &attested),
                Outcome::Counted {
                    reporters: 0,
                    attested: 3
                }
            );
        }
        governance.report(node(1), P, LIFETIME, 60, &attested);
        // A reporter that stops being attested (revoked, token too old) stops counting.
        let shrunk = set(&[2, 3]);
        assert_eq!(
            governance.report(node(2), P, LIFETIME, 60, &shrunk),
            Outcome::Counted {
                reporters: 1,
                attested: 2
            }
        );
        assert!(matches!(
            governance.report(node(3), P, LIFETIME, 60, &shrunk),
            Outcome::Apply { value: 60, .. }
        ));
        // Nobody attested: nothing can apply.
        let mut empty = CaGovernance::default();
        assert_eq!(
            empty.report(node(1), "p2", LIFETIME, 60, &BTreeSet::new()),
            Outcome::Counted {
                reporters: 0,
                attested: 0
            }
        );
    }

    #[test]
    fn misreported_values_tally_apart_and_other_parameters_are_not_followed() {
        let attested = set(&[1, 2, 3]);
        let mut governance = CaGovernance::default();
        governance.report(node(1), P, LIFETIME, 7200, &attested);
        assert_eq!(
            governance.report(node(2), P, LIFETIME, 60, &attested),
            Outcome::Counted {
                reporters: 1,
                attested: 3
            }
        );
        assert!(matches!(
            governance.report(node(3), P, LIFETIME, 7200, &attested),
            Outcome::Apply { value: 7200, .. }
        ));
        for param in [
            Param::GossipFanout,
            Param::RateLimitRpm,
            Param::AttestationValiditySecs,
            Param::HealthCheckIntervalSecs,
        ] {
            assert_eq!(
                governance.report(node(1), "p3", param, 5, &attested),
                Outcome::NotFollowed
            );
        }
        // Out of bounds is not followed either.
        assert_eq!(
            governance.report(node(1), "p4", LIFETIME, 1, &attested),
            Outcome::NotFollowed
        );
    }

    #[test]
    fn tallies_are_bounded() {
        let attested = set(&[1, 2, 3]);
        let mut governance = CaGovernance::default();
        for i in 0..MAX_TALLIES + 10 {
            governance.report(node(1), &format!("p{i}"), LIFETIME, 600, &attested);
        }
        assert_eq!(governance.tallies.len(), MAX_TALLIES);
        // The oldest went first: p0's earlier report is gone, so one more is not a majority.
        assert!(matches!(
            governance.report(node(2), "p0", LIFETIME, 600, &attested),
            Outcome::Counted { reporters: 1, .. }
        ));
        assert!(matches!(
            governance.report(
                node(2),
                &format!("p{}", MAX_TALLIES + 9),
                LIFETIME,
                600,
                &attested
            ),
            Outcome::Apply { .. }
        ));
    }
}
