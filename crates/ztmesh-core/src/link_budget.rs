//! Per-link budgets for the requests a peer can make of this node whose answers cost more than
//! the asking: a `TeeChallenge` (a few bytes) is answered with signed evidence (hundreds of
//! bytes, and a TPM quote for `tpm2`), a `PeerListRequest` with up to a full peer list. Without
//! a budget, 1,000 challenges drew 450 KB of signed evidence from one node.
//!
//! Sans-IO, owned by the link state machine ([`crate::link_machine::LinkMachine`]), which asks
//! [`LinkBudget::admit`] with `now` before letting the runtime answer and drops the request when
//! it says no (the asker's own challenge then times out as unanswered). The
//! budgets sit well above what an honest peer asks: it has at most one challenge outstanding
//! and re-attests at most once a second (`reattest_secs` ≥ 1), and asks for peers once at link
//! start and then every 5 s. This module must never answer for the peer, only count.

use crate::rate_limit::TokenBucket;
use crate::Timestamp;

/// Challenges a peer may send at once on one link.
pub const CHALLENGE_BURST: u32 = 5;
/// Challenges a peer may send per minute on one link after the burst (an honest peer at the
/// shortest `reattest_secs` of 1 sends at most 60).
pub const CHALLENGES_PER_MINUTE: u32 = 60;
/// Peer-list requests a peer may send at once on one link.
pub const PEER_LIST_BURST: u32 = 4;
/// Peer-list requests a peer may send per minute on one link after the burst (an honest peer
/// sends 12).
pub const PEER_LISTS_PER_MINUTE: u32 = 30;

/// A request that costs this node an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRequest {
    /// `TeeChallenge`: answered with attestation evidence.
    TeeChallenge,
    /// `PeerListRequest`: answered with the connected peers.
    PeerList,
}

/// The budgets of one link.
#[derive(Debug)]
pub struct LinkBudget {
    challenges: TokenBucket,
    peer_lists: TokenBucket,
    refused: u64,
}

impl LinkBudget {
    /// Full budgets for a link opened at `now`.
    pub fn new(now: Timestamp) -> Self {
        LinkBudget {
            challenges: TokenBucket::new(CHALLENGES_PER_MINUTE, CHALLENGE_BURST, now),
            peer_lists: TokenBucket::new(PEER_LISTS_PER_MINUTE, PEER_LIST_BURST, now),
            refused: 0,
        }
    }

    /// Whether to answer `request` at `now`; a refusal is counted.
    pub fn admit(&mut self, request: LinkRequest, now: Timestamp) -> bool {
        let bucket = match request {
            LinkRequest::TeeChallenge => &mut self.challenges,
            LinkRequest::PeerList => &mut self.peer_lists,
        };
        let admitted = bucket.take(now).is_ok();
        if !admitted {
            self.refused = self.refused.saturating_add(1);
        }
        admitted
    }

    /// Requests refused on this link so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_thousand_challenges_at_once_get_the_burst_answered() {
        let t0 = Timestamp::from_unix_secs(1_000);
        let mut budget = LinkBudget::new(t0);
        let answered = (0..1_000)
            .filter(|_| budget.admit(LinkRequest::TeeChallenge, t0))
            .count();
        assert_eq!(answered, CHALLENGE_BURST as usize);
        assert_eq!(budget.refused(), 1_000 - u64::from(CHALLENGE_BURST));
        // Peer lists have a budget of their own.
        let lists = (0..1_000)
            .filter(|_| budget.admit(LinkRequest::PeerList, t0))
            .count();
        assert_eq!(lists, PEER_LIST_BURST as usize);
    }

    #[test]
    fn an_honest_peer_is_never_refused() {
        // Re-attesting every second and asking for peers every 5 s, for an hour.
        let t0 = Timestamp::from_unix_secs(1_000);
        let mut budget = LinkBudget::new(t0);
        assert!(budget.admit(LinkRequest::PeerList, t0));
        for second in 0..3_600u64 {
            let t = t0.saturating_add(Duration::from_secs(second));
            assert!(
                budget.admit(LinkRequest::TeeChallenge, t),
                "challenge at {second} s"
            );
            if second % 5 == 0 {
                assert!(
                    budget.admit(LinkRequest::PeerList, t),
                    "peer list at {second} s"
                );
            }
        }
        assert_eq!(budget.refused(), 0);
    }
}
