//! Trust tiers (DESIGN.md §3 "Attestation and trust tiers"): what this node knows about each
//! peer's certificate, attestation, binary and health, and the tier that knowledge earns.
//!
//! [`TrustBook`] is a sans-IO state machine. The runtime feeds it what it verified
//! (`handle_certificate`, `handle_verification_success`/`_failure`, `handle_binary`,
//! `handle_health_check`, `handle_revoked`), calls [`TrustBook::handle_timeout`] when
//! [`TrustBook::poll_timeout`] is due (certificates and attestations expire with time alone),
//! and drains [`TrustBook::poll_event`] after every input to log and record tier changes.
//! [`TrustBook::tier`] answers at any instant with the reason for the answer.
//!
//! It never verifies anything itself: certificate chains, evidence and manifests are checked by
//! the PKI and attestation crates, and only their verdicts come in here. It must never grant a
//! tier on missing knowledge: a peer it does not know, or has forgotten, is Untrusted.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};

use crate::health_window::HealthWindow;
use crate::revoked_set::RevokedSet;
use crate::{TrustError, UsageError};

/// Consecutive failed verifications that demote a Tier 1 peer (one is only a warning).
pub const DEMOTION_FAILURES: u32 = 3;
/// The smallest health window a policy may ask for.
pub const MIN_HEALTH_WINDOW: usize = 100;

/// A peer's trust tier. Ordered: `Untrusted < Tier2 < Tier1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Unknown, expired or revoked: every request is refused.
    Untrusted,
    /// A valid certificate: may serve clients, gossip, relay.
    Tier2,
    /// Valid certificate, fresh hardware attestation, manifest binary and proven uptime: may
    /// also hold key shares, vote and witness.
    Tier1,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Untrusted => "untrusted",
            Tier::Tier2 => "tier 2",
            Tier::Tier1 => "tier 1",
        })
    }
}

/// The attestation technology behind a verified piece of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Platform {
    /// TPM 2.0 quote.
    #[serde(rename = "tpm2")]
    Tpm2,
    /// Intel TDX quote.
    #[serde(rename = "tdx")]
    Tdx,
    /// Intel SGX quote.
    #[serde(rename = "sgx")]
    Sgx,
    /// AMD SEV-SNP report.
    #[serde(rename = "sev-snp")]
    SevSnp,
    /// The simulated TEE for demos: not hardware.
    #[serde(rename = "dev")]
    Dev,
}

impl Platform {
    /// Whether evidence of this kind comes from real hardware.
    pub const fn is_hardware(self) -> bool {
        !matches!(self, Platform::Dev)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Tpm2 => "tpm2",
            Platform::Tdx => "tdx",
            Platform::Sgx => "sgx",
            Platform::SevSnp => "sev-snp",
            Platform::Dev => "dev",
        })
    }
}

/// SHA-256 of a peer's running binary, as its attestation reports it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BinaryHash(pub [u8; 32]);

impl fmt::Display for BinaryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for BinaryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BinaryHash({self})")
    }
}

/// Why a peer has the tier it has. `Display` reads as a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum Reason {
    // ----- Untrusted -----
    /// The book knows nothing of the peer.
    Unknown,
    /// The peer was dropped from the book to keep it within `max_peers`.
    Evicted,
    /// The peer's node id is revoked.
    Revoked {
        /// When the revocation was learnt.
        at: Timestamp,
    },
    /// The book knows the peer but holds no certificate for it.
    NoCertificate,
    /// The certificate is not valid yet.
    CertificateNotYetValid {
        /// Its notBefore.
        not_before: Timestamp,
    },
    /// The certificate expired.
    CertificateExpired {
        /// Its notAfter.
        not_after: Timestamp,
    },
    // ----- Tier 2: why not Tier 1 -----
    /// Three or more verifications failed in a row; a success lifts it.
    VerificationFailures {
        /// Consecutive failures.
        consecutive: u32,
    },
    /// No attestation has been verified.
    NoAttestation,
    /// The last verified attestation expired.
    AttestationExpired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// The attestation is not from hardware (the `dev` TEE) and the policy does not count it.
    NotHardware {
        /// The platform that attested.
        platform: Platform,
    },
    /// The peer's binary hash is not known.
    NoBinaryHash,
    /// The peer's binary is not listed in a signed release manifest.
    BinaryNotInManifest {
        /// The hash it runs.
        hash: BinaryHash,
    },
    /// Too few health checks to judge uptime.
    TooFewHealthChecks {
        /// Checks held.
        checks: usize,
        /// Checks required.
        required: usize,
    },
    /// Uptime below the threshold.
    UptimeTooLow {
        /// Successful checks.
        successes: usize,
        /// Checks held.
        checks: usize,
        /// Required uptime, percent.
        required_percent: u8,
    },
    // ----- Tier 1 -----
    /// Every Tier 1 requirement holds.
    Tier1 {
        /// The attesting platform.
        platform: Platform,
        /// Successful checks.
        successes: usize,
        /// Checks held.
        checks: usize,
    },
}

/// `successes / checks` as a percentage with at most one decimal, rounded down.
fn percent(successes: usize, checks: usize) -> String {
    let permille = (successes as u64 * 1000) / (checks.max(1) as u64);
    let (whole, tenths) = (permille / 10, permille % 10);
    if tenths == 0 {
        format!("{whole}%")
    } else {
        format!("{whole}.{tenths}%")
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unknown => f.write_str("unknown peer"),
            Reason::Evicted => f.write_str("forgotten to keep the trust book bounded"),
            Reason::Revoked { at } => write!(f, "revoked (learnt at {at})"),
            Reason::NoCertificate => f.write_str("no certificate"),
            Reason::CertificateNotYetValid { not_before } => {
                write!(f, "certificate not valid before {not_before}")
            }
            Reason::CertificateExpired { not_after } => {
                write!(f, "certificate expired at {not_after}")
            }
            Reason::VerificationFailures { consecutive } => {
                write!(
                    f,
                    "{consecutive} consecutive failed attestation verifications"
                )
            }
            Reason::NoAttestation => f.write_str("no verified attestation"),
            Reason::AttestationExpired { expired_at } => {
                write!(f, "attestation expired at {expired_at}")
            }
            Reason::NotHardware { platform } => {
                write!(f, "attestation platform {platform} is not hardware")
            }
            Reason::NoBinaryHash => f.write_str("binary hash unknown"),
            Reason::BinaryNotInManifest { hash } => {
                write!(f, "binary {hash} is not in a signed manifest")
            }
            Reason::TooFewHealthChecks { checks, required } => {
                write!(f, "{checks} health checks < {required} required")
            }
            Reason::UptimeTooLow {
                successes,
                checks,
                required_percent,
            } => write!(
                f,
                "uptime {} < {required_percent}% over {checks} checks",
                percent(*successes, *checks)
            ),
            Reason::Tier1 {
                platform,
                successes,
                checks,
            } => write!(
                f,
                "{platform} attestation, manifest binary, uptime {} over {checks} checks",
                percent(*successes, *checks)
            ),
        }
    }
}

/// A peer's tier changed (emitted by [`TrustBook::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    /// The peer.
    pub peer: NodeId,
    /// Its previous tier.
    pub from: Tier,
    /// Its new tier.
    pub to: Tier,
    /// Why it has the new tier.
    pub reason: Reason,
}

/// What a failed verification did, for the runtime to log at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// Counted; fewer than [`DEMOTION_FAILURES`] in a row: a warning only.
    Warning {
        /// Consecutive failures so far.
        consecutive: u32,
    },
    /// [`DEMOTION_FAILURES`] or more in a row: the peer cannot be Tier 1 until a success.
    Demoted {
        /// Consecutive failures so far.
        consecutive: u32,
    },
}

/// The book's rules and bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// How long a verified attestation counts (DESIGN default 24 h; governance may change it).
    pub attestation_validity: Duration,
    /// Uptime required for Tier 1, percent (DESIGN: 90).
    pub min_uptime_percent: u8,
    /// Health checks required before uptime counts (DESIGN: 100).
    pub min_health_checks: usize,
    /// Health results kept per peer (at least [`MIN_HEALTH_WINDOW`] and `min_health_checks`).
    pub health_window: usize,
    /// Peers tracked; the least recently updated is forgotten beyond it (and so Untrusted).
    pub max_peers: usize,
    /// Revocations kept; the oldest is forgotten beyond it.
    pub max_revoked: usize,
    /// Tier changes queued for [`TrustBook::poll_event`]; the oldest is dropped beyond it.
    pub max_events: usize,
    /// Danger: count the simulated `dev` TEE as hardware attestation. For demos only; off by
    /// default, and a mesh that turns it on has no hardware-backed Tier 1 at all.
    pub dev_counts_as_hardware: bool,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            attestation_validity: Duration::from_secs(24 * 3600),
            min_uptime_percent: 90,
            min_health_checks: 100,
            health_window: 1000,
            max_peers: 10_000,
            max_revoked: 100_000,
            max_events: 1024,
            dev_counts_as_hardware: false,
        }
    }
}

impl TrustPolicy {
    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), TrustError> {
        let fail = |why| Err(UsageError::InvalidPolicy(why).into());
        if self.attestation_validity.is_zero() {
            return fail("attestation_validity must be positive");
        }
        if self.min_uptime_percent > 100 {
            return fail("min_uptime_percent must be at most 100");
        }
        if self.min_health_checks == 0 {
            return fail("min_health_checks must be positive");
        }
        if self.health_window < MIN_HEALTH_WINDOW || self.health_window < self.min_health_checks {
            return fail("health_window must be at least 100 and at least min_health_checks");
        }
        if self.max_peers == 0 || self.max_revoked == 0 || self.max_events == 0 {
            return fail("max_peers, max_revoked and max_events must be positive");
        }
        Ok(())
    }
}

/// What is known about one peer.
#[derive(Debug, Clone)]
struct PeerRecord {
    certificate: Option<(Timestamp, Timestamp)>,
    attestation: Option<Attestation>,
    consecutive_failures: u32,
    binary: Option<(BinaryHash, bool)>,
    health: HealthWindow,
    /// The tier last reported in an event (or the initial Untrusted).
    last_tier: Tier,
    /// Position in the recency order, for eviction.
    touched: u64,
}

#[derive(Debug, Clone, Copy)]
struct Attestation {
    platform: Platform,
    verified_at: Timestamp,
    expires_at: Timestamp,
}

/// A read-only view of one peer's record, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Certificate validity `(not_before, not_after)`.
    pub certificate: Option<(Timestamp, Timestamp)>,
    /// Last verified attestation: platform, when, until.
    pub attestation: Option<(Platform, Timestamp, Timestamp)>,
    /// Consecutive failed verifications.
    pub consecutive_failures: u32,
    /// Binary hash and whether a signed manifest lists it.
    pub binary: Option<(BinaryHash, bool)>,
    /// Successful health checks in the window.
    pub health_successes: usize,
    /// Health checks in the window.
    pub health_checks: usize,
}

/// Per-peer trust state and the tiers it earns. See the module documentation for the calling
/// order.
#[derive(Debug, Clone)]
pub struct TrustBook {
    policy: TrustPolicy,
    peers: BTreeMap<NodeId, PeerRecord>,
    /// `touched` sequence → peer, oldest first: the eviction order.
    recency: BTreeMap<u64, NodeId>,
    next_touch: u64,
    revoked: RevokedSet,
    events: VecDeque<TierChange>,
    evicted_peers: u64,
    evicted_revocations: u64,
    dropped_events: u64,
    /// Latest `now` given to any input.
    now: Timestamp,
}

impl TrustBook {
    /// An empty book.
    pub fn new(policy: TrustPolicy) -> Result<Self, TrustError> {
        Self::with_revoked(policy, RevokedSet::new())
    }

    /// A book that starts from a persisted revocation set.
    pub fn with_revoked(policy: TrustPolicy, revoked: RevokedSet) -> Result<Self, TrustError> {
        policy.validate()?;
        if revoked.len() > policy.max_revoked {
            return Err(UsageError::RevokedSetTooLarge {
                len: revoked.len(),
                max: policy.max_revoked,
            }
            .into());
        }
        Ok(TrustBook {
            policy,
            peers: BTreeMap::new(),
            recency: BTreeMap::new(),
            next_touch: 0,
            revoked,
            events: VecDeque::new(),
            evicted_peers: 0,
            evicted_revocations: 0,
            dropped_events: 0,
            now: Timestamp::EPOCH,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &TrustPolicy {
        &self.policy
    }

    /// Applies a governed attestation validity to attestations verified from now on (those
    /// already verified keep the expiry they were given).
    pub fn set_attestation_validity(&mut self, validity: Duration) -> Result<(), TrustError> {
        let mut policy = self.policy.clone();
        policy.attestation_validity = validity;
        policy.validate()?;
        self.policy = policy;
        Ok(())
    }

    /// The revocation set, to persist after every [`TrustBook::handle_revoked`].
    pub fn revoked(&self) -> &RevokedSet {
        &self.revoked
    }

    // ----- inputs -----

    /// The peer presented a valid certificate chain (verified by the caller) valid from
    /// `not_before` until `not_after`. A renewed certificate replaces the previous one.
    pub fn handle_certificate(
        &mut self,
        peer: NodeId,
        not_before: Timestamp,
        not_after: Timestamp,
        now: Timestamp,
    ) {
        self.record_mut(peer, now).certificate = Some((not_before, not_after));
        self.refresh(peer, now);
    }

    /// The peer's attestation evidence verified on `platform` at `now`; it counts for the
    /// policy's attestation validity and clears the failure streak.
    pub fn handle_verification_success(
        &mut self,
        peer: NodeId,
        platform: Platform,
        now: Timestamp,
    ) {
        let expires_at = now.saturating_add(self.policy.attestation_validity);
        let record = self.record_mut(peer, now);
        record.attestation = Some(Attestation {
            platform,
            verified_at: now,
            expires_at,
        });
        record.consecutive_failures = 0;
        self.refresh(peer, now);
    }

    /// The peer's attestation failed to verify (bad evidence, wrong nonce, no answer). The
    /// previous attestation is kept until it expires, but [`DEMOTION_FAILURES`] failures in a
    /// row bar Tier 1 until the next success.
    pub fn handle_verification_failure(
        &mut self,
        peer: NodeId,
        now: Timestamp,
    ) -> VerificationOutcome {
        let record = self.record_mut(peer, now);
        record.consecutive_failures = record.consecutive_failures.saturating_add(1);
        let consecutive = record.consecutive_failures;
        self.refresh(peer, now);
        if consecutive >= DEMOTION_FAILURES {
            VerificationOutcome::Demoted { consecutive }
        } else {
            VerificationOutcome::Warning { consecutive }
        }
    }

    /// The peer's binary hash, and whether a signed release manifest (checked by the caller)
    /// lists it. A new hash replaces the old one.
    pub fn handle_binary(
        &mut self,
        peer: NodeId,
        hash: BinaryHash,
        in_manifest: bool,
        now: Timestamp,
    ) {
        self.record_mut(peer, now).binary = Some((hash, in_manifest));
        self.refresh(peer, now);
    }

    /// One health check of the peer passed (`ok`) or failed.
    pub fn handle_health_check(&mut self, peer: NodeId, ok: bool, now: Timestamp) {
        self.record_mut(peer, now).health.push(ok);
        self.refresh(peer, now);
    }

    /// The peer's node id is revoked (a verified CA revocation record or the local CRL). It is
    /// Untrusted from now on, across restarts once the runtime persists [`TrustBook::revoked`].
    pub fn handle_revoked(&mut self, peer: NodeId, now: Timestamp) {
        self.now = self.now.max(now);
        self.evicted_revocations += self.revoked.insert(peer, now, self.policy.max_revoked) as u64;
        if self.peers.contains_key(&peer) {
            self.refresh(peer, now);
        }
    }

    /// Time passed: re-evaluates every peer, so expiries become tier-change events.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.refresh(peer, now);
        }
    }

    // ----- outputs -----

    /// The next instant at which some tier may change with time alone (a certificate becoming
    /// valid or expiring, an attestation expiring), after the latest `now` seen.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.peers
            .values()
            .flat_map(|record| {
                let (not_before, not_after) = record
                    .certificate
                    .map_or((None, None), |(b, a)| (Some(b), Some(a)));
                [
                    not_before,
                    not_after,
                    record.attestation.map(|a| a.expires_at),
                ]
            })
            .flatten()
            .filter(|at| *at > self.now)
            .min()
    }

    /// The next tier change, oldest first.
    pub fn poll_event(&mut self) -> Option<TierChange> {
        self.events.pop_front()
    }

    /// The peer's tier at `now`, and why.
    pub fn tier(&self, peer: &NodeId, now: Timestamp) -> (Tier, Reason) {
        evaluate(
            &self.policy,
            self.peers.get(peer),
            self.revoked.revoked_at(peer),
            now,
        )
    }

    /// Peers that are Tier 1 at `now`, in id order.
    pub fn tier1_peers(&self, now: Timestamp) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .keys()
            .copied()
            .filter(move |peer| self.tier(peer, now).0 == Tier::Tier1)
    }

    /// What the book holds about `peer`.
    pub fn status(&self, peer: &NodeId) -> Option<PeerStatus> {
        self.peers.get(peer).map(|record| PeerStatus {
            certificate: record.certificate,
            attestation: record
                .attestation
                .map(|a| (a.platform, a.verified_at, a.expires_at)),
            consecutive_failures: record.consecutive_failures,
            binary: record.binary,
            health_successes: record.health.successes(),
            health_checks: record.health.total(),
        })
    }

    /// Peers tracked.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Peers forgotten to stay within `max_peers`.
    pub fn evicted_peers(&self) -> u64 {
        self.evicted_peers
    }

    /// Revocations forgotten to stay within `max_revoked`.
    pub fn evicted_revocations(&self) -> u64 {
        self.evicted_revocations
    }

    /// Tier changes dropped because nobody drained [`TrustBook::poll_event`].
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    // ----- internals -----

    /// The peer's record, created if new (evicting the least recently updated peer if full),
    /// and marked most recently updated.
    fn record_mut(&mut self, peer: NodeId, now: Timestamp) -> &mut PeerRecord {
        self.now = self.now.max(now);
        let touch = self.next_touch;
        self.next_touch += 1;
        if let Some(record) = self.peers.get_mut(&peer) {
            self.recency.remove(&record.touched);
        } else {
            while self.peers.len() >= self.policy.max_peers {
                let Some((_, oldest)) = self.recency.pop_first() else {
                    break;
                };
                if let Some(record) = self.peers.remove(&oldest) {
                    self.evicted_peers += 1;
                    if record.last_tier != Tier::Untrusted {
                        self.push_event(TierChange {
                            peer: oldest,
                            from: record.last_tier,
                            to: Tier::Untrusted,
                            reason: Reason::Evicted,
                        });
                    }
                }
            }
            self.peers.insert(
                peer,
                PeerRecord {
                    certificate: None,
                    attestation: None,
                    consecutive_failures: 0,
                    binary: None,
                    health: HealthWindow::new(self.policy.health_window),
                    last_tier: Tier::Untrusted,
                    touched: touch,
                },
            );
        }
        self.recency.insert(touch, peer);
        let record = self
            .peers
            .get_mut(&peer)
            .expect("present: found or inserted above");
        record.touched = touch;
        record
    }

    /// Re-evaluates `peer` at `now` and queues an event if its tier changed.
    fn refresh(&mut self, peer: NodeId, now: Timestamp) {
        let (tier, reason) = self.tier(&peer, now);
        let Some(record) = self.peers.get_mut(&peer) else {
            return;
        };
        if record.last_tier != tier {
            let from = record.last_tier;
            record.last_tier = tier;
            self.push_event(TierChange {
                peer,
                from,
                to: tier,
                reason,
            });
        }
    }

    fn push_event(&mut self, change: TierChange) {
        if self.events.len() >= self.policy.max_events {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(change);
    }
}

/// The tier rules of DESIGN.md §3, in one place. The first failing requirement is the reason.
fn evaluate(
    policy: &TrustPolicy,
    record: Option<&PeerRecord>,
    revoked_at: Option<Timestamp>,
    now: Timestamp,
) -> (Tier, Reason) {
    if let Some(at) = revoked_at {
        return (Tier::Untrusted, Reason::Revoked { at });
    }
    let Some(record) = record else {
        return (Tier::Untrusted, Reason::Unknown);
    };
    let Some((not_before, not_after)) = record.certificate else {
        return (Tier::Untrusted, Reason::NoCertificate);
    };
    if now < not_before {
        return (
            Tier::Untrusted,
            Reason::CertificateNotYetValid { not_before },
        );
    }
    if now >= not_after {
        return (Tier::Untrusted, Reason::CertificateExpired { not_after });
    }
    let tier2 = |reason| (Tier::Tier2, reason);
    if record.consecutive_failures >= DEMOTION_FAILURES {
        return tier2(Reason::VerificationFailures {
            consecutive: record.consecutive_failures,
        });
    }
    let Some(attestation) = record.attestation else {
        return tier2(Reason::NoAttestation);
    };
    if now >= attestation.expires_at {
        return tier2(Reason::AttestationExpired {
            expired_at: attestation.expires_at,
        });
    }
    if !attestation.platform.is_hardware() && !policy.dev_counts_as_hardware {
        return tier2(Reason::NotHardware {
            platform: attestation.platform,
        });
    }
    match record.binary {
        None => return tier2(Reason::NoBinaryHash),
        Some((hash, false)) => return tier2(Reason::BinaryNotInManifest { hash }),
        Some((_, true)) => {}
    }
    let checks = record.health.total();
    let successes = record.health.successes();
    if checks < policy.min_health_checks {
        return tier2(Reason::TooFewHealthChecks {
            checks,
            required: policy.min_health_checks,
        });
    }
    // Integer comparison, so exactly 90% counts as 90%.
    if (successes as u64) * 100 < u64::from(policy.min_uptime_percent) * checks as u64 {
        return tier2(Reason::UptimeTooLow {
            successes,
            checks,
            required_percent: policy.min_uptime_percent,
        });
    }
    (
        Tier::Tier1,
        Reason::Tier1 {
            platform: attestation.platform,
            successes,
            checks,
        },
    )
}
