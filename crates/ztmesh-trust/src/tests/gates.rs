//! The enforcement table and its refusal counters.

use super::util::*;
use crate::{required_tier, Action, Gates, Platform, Tier};

#[test]
fn table_matches_the_design() {
    assert_eq!(required_tier(Action::AntiEntropy), Tier::Tier2);
    assert_eq!(required_tier(Action::PeerExchange), Tier::Tier2);
    assert_eq!(required_tier(Action::RevocationRelay), Tier::Tier2);
    assert_eq!(required_tier(Action::Governance), Tier::Tier1);
    assert_eq!(required_tier(Action::KeyShare), Tier::Tier1);
    assert_eq!(required_tier(Action::Witness), Tier::Tier1);
    assert!(Action::ALL
        .iter()
        .all(|a| required_tier(*a) > Tier::Untrusted));
}

#[test]
fn untrusted_is_refused_everything_and_each_refusal_counted() {
    let book = book();
    let mut gates = Gates::new();
    for action in Action::ALL {
        let refusal = gates.check(&book, &node(1), action, T0).unwrap_err();
        assert_eq!(refusal.tier, Tier::Untrusted);
        assert_eq!(refusal.action, action);
        assert_eq!(refusal.peer, node(1));
    }
    for action in Action::ALL {
        assert_eq!(gates.refusals(action), 1, "{action}");
    }
}

#[test]
fn tier2_may_gossip_and_relay_but_not_govern_or_hold_key_shares() {
    let mut book = book();
    certify(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Dev, T0);
    let mut gates = Gates::new();
    for action in [
        Action::AntiEntropy,
        Action::PeerExchange,
        Action::RevocationRelay,
    ] {
        assert!(gates.check(&book, &node(1), action, T0).is_ok(), "{action}");
    }
    let refusal = gates
        .check(&book, &node(1), Action::Governance, T0)
        .unwrap_err();
    assert_eq!(refusal.tier, Tier::Tier2);
    assert!(
        refusal.to_string().ends_with(
            "refused governance: tier 2 < tier 1 (attestation platform dev is not hardware)"
        ),
        "{refusal}"
    );
    assert!(gates.check(&book, &node(1), Action::KeyShare, T0).is_err());
    assert_eq!(gates.refusals(Action::Governance), 1);
    assert_eq!(gates.refusals(Action::KeyShare), 1);
    assert_eq!(gates.refusals(Action::AntiEntropy), 0);
}

#[test]
fn tier1_may_do_everything_until_revoked() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    let mut gates = Gates::new();
    for action in Action::ALL {
        assert!(gates.check(&book, &node(1), action, T0).is_ok(), "{action}");
    }
    book.handle_revoked(node(1), T0);
    for action in Action::ALL {
        assert!(
            gates.check(&book, &node(1), action, T0).is_err(),
            "{action}"
        );
    }
}

/// The counters are indexed by action, the status shows them by name and serde writes that
/// name too: every action must have its own slot and name, and the names must agree.
#[test]
fn every_action_has_its_own_counter_and_one_name() {
    let mut book = book();
    certify(&mut book, node(1));
    let mut gates = Gates::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, action) in Action::ALL.into_iter().enumerate() {
        assert!(names.insert(action.as_str()), "{action} named twice");
        assert_eq!(
            serde_json::to_value(action).unwrap(),
            serde_json::Value::from(action.as_str())
        );
        if required_tier(action) == Tier::Tier1 {
            for _ in 0..=i {
                assert!(gates.check(&book, &node(1), action, T0).is_err());
            }
        }
    }
    for (i, action) in Action::ALL.into_iter().enumerate() {
        let expected = if required_tier(action) == Tier::Tier1 {
            i as u64 + 1
        } else {
            0
        };
        assert_eq!(gates.refusals(action), expected, "{action}");
    }
}

/// A node checks its own tier before witnessing: Tier 2 is refused (and counted), Tier 1 passes.
#[test]
fn witnessing_needs_tier1() {
    let mut book = book();
    certify(&mut book, node(1));
    let mut gates = Gates::new();
    let refusal = gates
        .check(&book, &node(1), Action::Witness, T0)
        .unwrap_err();
    assert_eq!(refusal.tier, Tier::Tier2);
    assert!(
        refusal
            .to_string()
            .contains("refused witness: tier 2 < tier 1"),
        "{refusal}"
    );
    assert_eq!(gates.refusals(Action::Witness), 1);
    make_tier1(&mut book, node(1));
    assert!(gates.check(&book, &node(1), Action::Witness, T0).is_ok());
    assert_eq!(gates.refusals(Action::Witness), 1);
}
