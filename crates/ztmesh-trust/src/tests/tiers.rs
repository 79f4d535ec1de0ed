//! Every tier rule of DESIGN.md §3 and its boundaries.

use std::time::Duration;

use super::util::*;
use crate::{
    Platform, Reason, RevokedSet, Tier, TierChange, TrustBook, TrustError, TrustPolicy, UsageError,
    VerificationOutcome,
};

#[test]
fn unknown_peer_is_untrusted() {
    let book = book();
    assert_eq!(book.tier(&node(1), T0), (Tier::Untrusted, Reason::Unknown));
}

#[test]
fn known_peer_without_certificate_is_untrusted() {
    let mut book = book();
    book.handle_health_check(node(1), true, T0);
    assert_eq!(
        book.tier(&node(1), T0),
        (Tier::Untrusted, Reason::NoCertificate)
    );
}

#[test]
fn valid_certificate_alone_is_tier2() {
    let mut book = book();
    certify(&mut book, node(1));
    assert_eq!(
        book.tier(&node(1), T0),
        (Tier::Tier2, Reason::NoAttestation)
    );
    assert_eq!(
        drain(&mut book),
        vec![TierChange {
            peer: node(1),
            from: Tier::Untrusted,
            to: Tier::Tier2,
            reason: Reason::NoAttestation
        }]
    );
}

#[test]
fn all_requirements_make_tier1() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    let (tier, reason) = book.tier(&node(1), T0);
    assert_eq!(tier, Tier::Tier1);
    assert_eq!(
        reason.to_string(),
        "tpm2 attestation, manifest binary, uptime 100% over 100 checks"
    );
    let events = drain(&mut book);
    assert_eq!(
        events.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
        vec![(Tier::Untrusted, Tier::Tier2), (Tier::Tier2, Tier::Tier1)]
    );
}

#[test]
fn exactly_90_percent_over_exactly_100_checks_is_tier1() {
    let mut book2 = book();
    certify(&mut book2, node(2));
    book2.handle_verification_success(node(2), Platform::SevSnp, T0);
    book2.handle_binary(node(2), GOOD_BINARY, true, T0);
    health(&mut book2, node(2), 90, 10);
    assert_eq!(book2.tier(&node(2), T0).0, Tier::Tier1);
    // One more failure at the window's far end is 90/101 < 90%.
    book2.handle_health_check(node(2), false, T0);
    let (tier, reason) = book2.tier(&node(2), T0);
    assert_eq!(tier, Tier::Tier2);
    assert_eq!(reason.to_string(), "uptime 89.1% < 90% over 101 checks");
}

#[test]
fn uptime_below_90_percent_is_tier2_with_the_numbers() {
    let mut book = book();
    certify(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Tpm2, T0);
    book.handle_binary(node(1), GOOD_BINARY, true, T0);
    health(&mut book, node(1), 87, 13);
    let (tier, reason) = book.tier(&node(1), T0);
    assert_eq!(tier, Tier::Tier2);
    assert_eq!(reason.to_string(), "uptime 87% < 90% over 100 checks");
    health(&mut book, node(1), 0, 20);
    assert_eq!(
        book.tier(&node(1), T0).1.to_string(),
        "uptime 72.5% < 90% over 120 checks"
    );
}

#[test]
fn ninety_nine_perfect_checks_are_not_enough() {
    let mut book = book();
    certify(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Tpm2, T0);
    book.handle_binary(node(1), GOOD_BINARY, true, T0);
    health(&mut book, node(1), 99, 0);
    let (tier, reason) = book.tier(&node(1), T0);
    assert_eq!(tier, Tier::Tier2);
    assert_eq!(
        reason,
        Reason::TooFewHealthChecks {
            checks: 99,
            required: 100
        }
    );
    book.handle_health_check(node(1), true, T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
}

#[test]
fn uptime_counts_only_the_rolling_window() {
    let policy = TrustPolicy {
        health_window: 100,
        ..TrustPolicy::default()
    };
    let mut book = TrustBook::new(policy).unwrap();
    make_tier1(&mut book, node(1));
    health(&mut book, node(1), 0, 11);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier2);
    // The failures stay in the 100-result window for the next 89 checks...
    health(&mut book, node(1), 89, 0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier2);
    // ...and 11 more successes push them out again.
    health(&mut book, node(1), 11, 0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
    let status = book.status(&node(1)).unwrap();
    assert_eq!((status.health_successes, status.health_checks), (100, 100));
}

#[test]
fn one_and_two_failures_warn_the_third_demotes_until_a_success() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    drain(&mut book);
    assert_eq!(
        book.handle_verification_failure(node(1), T0),
        VerificationOutcome::Warning { consecutive: 1 }
    );
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
    assert_eq!(
        book.handle_verification_failure(node(1), T0),
        VerificationOutcome::Warning { consecutive: 2 }
    );
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
    assert!(drain(&mut book).is_empty(), "warnings change no tier");
    assert_eq!(
        book.handle_verification_failure(node(1), T0),
        VerificationOutcome::Demoted { consecutive: 3 }
    );
    assert_eq!(
        book.tier(&node(1), T0),
        (Tier::Tier2, Reason::VerificationFailures { consecutive: 3 })
    );
    assert_eq!(
        book.tier(&node(1), T0).1.to_string(),
        "3 consecutive failed attestation verifications"
    );
    let events = drain(&mut book);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].from, events[0].to), (Tier::Tier1, Tier::Tier2));
    // More failures keep it demoted; a success lifts it.
    book.handle_verification_failure(node(1), T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier2);
    book.handle_verification_success(node(1), Platform::Tpm2, T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
    let events = drain(&mut book);
    assert_eq!((events[0].from, events[0].to), (Tier::Tier2, Tier::Tier1));
}

#[test]
fn a_success_resets_the_failure_streak() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    book.handle_verification_failure(node(1), T0);
    book.handle_verification_failure(node(1), T0);
    book.handle_verification_success(node(1), Platform::Tpm2, T0);
    assert_eq!(
        book.handle_verification_failure(node(1), T0),
        VerificationOutcome::Warning { consecutive: 1 }
    );
    book.handle_verification_failure(node(1), T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
}

#[test]
fn dev_attestation_is_not_hardware() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Dev, T0);
    let (tier, reason) = book.tier(&node(1), T0);
    assert_eq!(tier, Tier::Tier2);
    assert_eq!(
        reason.to_string(),
        "attestation platform dev is not hardware"
    );
}

#[test]
fn dev_counts_as_hardware_only_when_the_policy_says_so() {
    assert!(!TrustPolicy::default().dev_counts_as_hardware);
    let policy = TrustPolicy {
        dev_counts_as_hardware: true,
        ..TrustPolicy::default()
    };
    let mut book = TrustBook::new(policy).unwrap();
    make_tier1(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Dev, T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
}

#[test]
fn every_hardware_platform_counts() {
    for platform in [
        Platform::Tpm2,
        Platform::Tdx,
        Platform::Sgx,
        Platform::SevSnp,
    ] {
        let mut book = book();
        make_tier1(&mut book, node(1));
        book.handle_verification_success(node(1), platform, T0);
        assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1, "{platform}");
    }
}

#[test]
fn lost_attestation_drops_tier1_to_tier2_at_the_default_24_hours() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    drain(&mut book);
    // The certificate lasts a day from T0, too; extend it so only the attestation lapses.
    book.handle_certificate(node(1), T0, at(DAY * 2), T0);
    assert_eq!(book.poll_timeout(), Some(at(DAY)));
    let just_before = at(DAY).saturating_sub(Duration::from_millis(1));
    assert_eq!(book.tier(&node(1), just_before).0, Tier::Tier1);
    assert_eq!(
        book.tier(&node(1), at(DAY)),
        (
            Tier::Tier2,
            Reason::AttestationExpired {
                expired_at: at(DAY)
            }
        )
    );
    book.handle_timeout(at(DAY));
    let events = drain(&mut book);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].from, events[0].to), (Tier::Tier1, Tier::Tier2));
    assert_eq!(book.poll_timeout(), Some(at(DAY * 2)));
}

#[test]
fn attestation_validity_follows_the_governed_value() {
    let mut book = book();
    book.set_attestation_validity(HOUR).unwrap();
    make_tier1(&mut book, node(1));
    assert_eq!(book.tier(&node(1), at(HOUR)).0, Tier::Tier2);
    assert!(book.set_attestation_validity(Duration::ZERO).is_err());
}

#[test]
fn binary_not_in_manifest_drops_tier1_to_tier2() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    book.handle_binary(node(1), BAD_BINARY, false, T0);
    let (tier, reason) = book.tier(&node(1), T0);
    assert_eq!(tier, Tier::Tier2);
    assert!(
        reason.to_string().contains("not in a signed manifest"),
        "{reason}"
    );
    book.handle_binary(node(1), GOOD_BINARY, true, T0);
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
}

#[test]
fn missing_binary_hash_is_not_tier1() {
    let mut book = book();
    certify(&mut book, node(1));
    book.handle_verification_success(node(1), Platform::Tpm2, T0);
    health(&mut book, node(1), 100, 0);
    assert_eq!(book.tier(&node(1), T0), (Tier::Tier2, Reason::NoBinaryHash));
}

#[test]
fn certificate_expiry_makes_untrusted() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    drain(&mut book);
    assert_eq!(book.poll_timeout(), Some(at(DAY)));
    book.handle_timeout(at(DAY));
    assert_eq!(
        book.tier(&node(1), at(DAY)),
        (
            Tier::Untrusted,
            Reason::CertificateExpired { not_after: at(DAY) }
        )
    );
    let events = drain(&mut book);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].from, events[0].to),
        (Tier::Tier1, Tier::Untrusted)
    );
    // A renewed certificate restores the tier the rest earns (the attestation also lapsed).
    book.handle_certificate(node(1), at(DAY), at(DAY * 2), at(DAY));
    assert_eq!(book.tier(&node(1), at(DAY)).0, Tier::Tier2);
}

#[test]
fn certificate_not_yet_valid_is_untrusted() {
    let mut book = book();
    book.handle_certificate(node(1), at(HOUR), at(DAY), T0);
    assert_eq!(
        book.tier(&node(1), T0),
        (
            Tier::Untrusted,
            Reason::CertificateNotYetValid {
                not_before: at(HOUR)
            }
        )
    );
    assert_eq!(book.poll_timeout(), Some(at(HOUR)));
    assert_eq!(book.tier(&node(1), at(HOUR)).0, Tier::Tier2);
}

#[test]
fn revocation_makes_untrusted_whatever_else_holds() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    drain(&mut book);
    book.handle_revoked(node(1), T0);
    assert_eq!(
        book.tier(&node(1), T0),
        (Tier::Untrusted, Reason::Revoked { at: T0 })
    );
    let events = drain(&mut book);
    assert_eq!(
        (events[0].from, events[0].to),
        (Tier::Tier1, Tier::Untrusted)
    );
    // Fresh good news changes nothing.
    make_tier1(&mut book, node(1));
    assert_eq!(book.tier(&node(1), T0).0, Tier::Untrusted);
    // Revoking an unknown node records it without tracking a peer.
    book.handle_revoked(node(2), T0);
    assert_eq!(book.peer_count(), 1);
    assert!(book.revoked().contains(&node(2)));
}

#[test]
fn revocations_survive_a_reload_of_the_persisted_set() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    make_tier1(&mut book, node(2));
    book.handle_revoked(node(1), T0);
    let saved = serde_json::to_string(book.revoked()).unwrap();

    let loaded: RevokedSet = serde_json::from_str(&saved).unwrap();
    let mut reloaded = TrustBook::with_revoked(TrustPolicy::default(), loaded).unwrap();
    make_tier1(&mut reloaded, node(1));
    make_tier1(&mut reloaded, node(2));
    assert_eq!(
        reloaded.tier(&node(1), T0),
        (Tier::Untrusted, Reason::Revoked { at: T0 })
    );
    assert_eq!(reloaded.tier(&node(2), T0).0, Tier::Tier1);
}

#[test]
fn an_oversized_persisted_revocation_set_is_refused() {
    let mut book = book();
    for n in 0..3 {
        book.handle_revoked(node(n), T0);
    }
    let policy = TrustPolicy {
        max_revoked: 2,
        ..TrustPolicy::default()
    };
    assert_eq!(
        TrustBook::with_revoked(policy, book.revoked().clone()).unwrap_err(),
        TrustError::Usage(UsageError::RevokedSetTooLarge { len: 3, max: 2 })
    );
}

#[test]
fn revocation_set_is_bounded_and_forgets_the_oldest() {
    let policy = TrustPolicy {
        max_revoked: 2,
        ..TrustPolicy::default()
    };
    let mut book = TrustBook::new(policy).unwrap();
    book.handle_revoked(node(1), T0);
    book.handle_revoked(node(2), at(HOUR));
    book.handle_revoked(node(3), at(HOUR * 2));
    assert_eq!(book.revoked().len(), 2);
    assert!(!book.revoked().contains(&node(1)));
    assert!(book.revoked().contains(&node(3)));
    assert_eq!(book.evicted_revocations(), 1);
}

#[test]
fn peers_are_bounded_and_the_least_recently_updated_is_forgotten() {
    let policy = TrustPolicy {
        max_peers: 3,
        ..TrustPolicy::default()
    };
    let mut book = TrustBook::new(policy).unwrap();
    make_tier1(&mut book, node(1));
    certify(&mut book, node(2));
    certify(&mut book, node(3));
    // Node 1 is touched again, so node 2 is now the least recently updated.
    book.handle_health_check(node(1), true, T0);
    drain(&mut book);
    certify(&mut book, node(4));
    assert_eq!(book.peer_count(), 3);
    assert_eq!(book.evicted_peers(), 1);
    assert_eq!(book.tier(&node(2), T0), (Tier::Untrusted, Reason::Unknown));
    assert_eq!(book.tier(&node(1), T0).0, Tier::Tier1);
    let events = drain(&mut book);
    assert_eq!(
        events[0],
        TierChange {
            peer: node(2),
            from: Tier::Tier2,
            to: Tier::Untrusted,
            reason: Reason::Evicted
        }
    );
    // Forgetting a peer never forgets its revocation.
    book.handle_revoked(node(3), T0);
    certify(&mut book, node(5));
    certify(&mut book, node(6));
    assert_eq!(book.tier(&node(3), T0).0, Tier::Untrusted);
    assert!(book.revoked().contains(&node(3)));
}

#[test]
fn event_queue_is_bounded() {
    let policy = TrustPolicy {
        max_events: 2,
        ..TrustPolicy::default()
    };
    let mut book = TrustBook::new(policy).unwrap();
    for n in 0..5 {
        certify(&mut book, node(n));
    }
    assert_eq!(book.dropped_events(), 3);
    let events = drain(&mut book);
    assert_eq!(
        events.iter().map(|e| e.peer).collect::<Vec<_>>(),
        vec![node(3), node(4)]
    );
}

#[test]
fn invalid_policies_are_refused() {
    for policy in [
        TrustPolicy {
            health_window: 99,
            min_health_checks: 50,
            ..TrustPolicy::default()
        },
        TrustPolicy {
            health_window: 100,
            min_health_checks: 101,
            ..TrustPolicy::default()
        },
        TrustPolicy {
            min_uptime_percent: 101,
            ..TrustPolicy::default()
        },
        TrustPolicy {
            max_peers: 0,
            ..TrustPolicy::default()
        },
        TrustPolicy {
            attestation_validity: Duration::ZERO,
            ..TrustPolicy::default()
        },
    ] {
        assert!(TrustBook::new(policy.clone()).is_err(), "{policy:?}");
    }
}

#[test]
fn tier1_peers_lists_exactly_the_tier1_peers() {
    let mut book = book();
    make_tier1(&mut book, node(1));
    make_tier1(&mut book, node(2));
    certify(&mut book, node(3));
    book.handle_verification_failure(node(2), T0);
    assert_eq!(
        book.tier1_peers(T0).collect::<Vec<_>>(),
        vec![node(1), node(2)]
    );
    book.handle_revoked(node(1), T0);
    assert_eq!(book.tier1_peers(T0).collect::<Vec<_>>(), vec![node(2)]);
}

#[test]
fn a_revoked_set_read_back_from_a_store_keeps_the_earliest_time_per_node() {
    let later = ztmesh_core::Timestamp::from_unix_millis(T0.as_unix_millis() + 5_000);
    let set: RevokedSet = [(node(1), later), (node(2), T0), (node(1), T0)]
        .into_iter()
        .collect();
    assert_eq!(set.len(), 2);
    assert_eq!(set.revoked_at(&node(1)), Some(T0));
    assert_eq!(set.revoked_at(&node(2)), Some(T0));
}
