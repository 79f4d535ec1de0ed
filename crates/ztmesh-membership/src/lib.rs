//! The membership log's formats, shared by the CA that writes the log and the nodes that audit
//! it: the origin of a trust domain's log and the monitor its pinned policy binds
//! ([`parse_log_policy`]), the leaves ([`LogEntry`] for certificate events,
//! [`EventEntry`] for mesh events) in the exact canonical bytes the CA writes, and the JSON of
//! `GET /v1/log/entries` and the proof routes.
//!
//! Pure: no IO, no clock. Parsers refuse anything but the canonical bytes (a re-encoded leaf
//! would hash differently), and must never accept a leaf larger than [`MAX_LEAF_LEN`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_pki::Serial;
use ztmesh_tlog::policy::PolicyParseError;
use ztmesh_tlog::{CheckpointMonitor, Hash, Policy};

/// What follows the trust domain in the log's origin line (and its key name).
pub const ORIGIN_SUFFIX: &str = "/membership";
/// Longest leaf [`LogEntry::from_leaf`] reads; real entries are under 200 bytes.
pub const MAX_LEAF_LEN: usize = 4096;
/// Most entries one `GET /v1/log/entries` answers with.
pub const MAX_ENTRIES_PER_REQUEST: u64 = 1000;
/// Entries answered when the request gives no `count`.
pub const DEFAULT_ENTRIES_PER_REQUEST: u64 = 100;

/// The log origin (and log key name) of a trust domain: `<trust domain>/membership`.
pub fn log_origin(trust_domain: &TrustDomain) -> String {
    format!("{trust_domain}{ORIGIN_SUFFIX}")
}

/// What happened. Tier changes, governance decisions and release-manifest changes will get
/// kinds of their own when those features exist; readers must expect kinds they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A node redeemed an enrollment token and got its first certificate (`serial`).
    Enroll,
    /// A node replaced its certificate; `serial` is the new one.
    Rotate,
    /// A node was revoked as a whole; `serial` is one of its certificates, revoked with it.
    RevokeNode,
    /// One certificate (`serial`) was revoked.
    RevokeCertificate,
}

impl EntryKind {
    /// The JSON name: `enroll`, `rotate`, `revoke_node`, `revoke_certificate`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Enroll => "enroll",
            EntryKind::Rotate => "rotate",
            EntryKind::RevokeNode => "revoke_node",
            EntryKind::RevokeCertificate => "revoke_certificate",
        }
    }
}

/// One leaf of the membership log: a JSON object whose bytes serde_json writes from this struct
/// (fields in this order, no white space), so equal events are equal leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// What happened.
    pub kind: EntryKind,
    /// To which node.
    pub node_id: NodeId,
    /// The certificate concerned, lowercase hex (empty only for a node revoked before it ever
    /// held a certificate, which the CA does not produce).
    pub serial: String,
    /// End of validity of an issued certificate (Unix seconds); `null` for revocations, which
    /// never expire.
    pub not_after: Option<u64>,
    /// When the CA committed the event (Unix seconds).
    pub at: u64,
}

/// Longest `reason` of a tier-change entry, in bytes.
pub const MAX_EVENT_REASON_LEN: usize = 200;

/// A mesh event the CA records beside the certificate events of [`LogEntry`]: a change of the
/// release manifest it vouches against, a governance decision, a tier change a member observed.
/// The leaf is the JSON serde writes for it, tagged by `kind` first; readers built before a
/// kind existed see an entry they cannot decode (it still counts for the tree).
///
/// Decisions and tier changes are reported by members (`POST /v1/log/events`): the entry names
/// the reporter, and records what it said, not that it is true. The CA appends a report only
/// when it changes what the log says (a new decision, another tier for the same reporter and
/// node, another manifest), so repeated reports cost nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum EventEntry {
    /// The CA started vouching against another signed release manifest.
    Manifest {
        /// Its version.
        version: String,
        /// SHA-256 of the signed manifest bytes, lowercase hex.
        sha256: String,
        /// Its end of validity (Unix seconds).
        not_after: u64,
        /// When the CA committed the event (Unix seconds).
        at: u64,
    },
    /// A governance proposal reached its majority on the reporting node and was applied there.
    GovernanceDecision {
        /// The proposal's gossip id, lowercase hex.
        proposal: String,
        /// The parameter.
        param: String,
        /// Its new value.
        value: u64,
        /// The member that reported it.
        reporter: NodeId,
        /// When the CA committed the event (Unix seconds).
        at: u64,
    },
    /// The reporting member's trust book moved `node_id` to `tier`.
    TierChange {
        /// The node whose tier changed.
        node_id: NodeId,
        /// `tier 1`, `tier 2` or `untrusted`.
        tier: String,
        /// Why, as the reporter's trust book says.
        reason: String,
        /// The member that reported it.
        reporter: NodeId,
        /// When the CA committed the event (Unix seconds).
        at: u64,
    },
}

impl EventEntry {
    /// The JSON name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EventEntry::Manifest { .. } => "manifest",
            EventEntry::GovernanceDecision { .. } => "governance_decision",
            EventEntry::TierChange { .. } => "tier_change",
        }
    }

    /// The leaf bytes.
    pub fn to_leaf(&self) -> Vec<u8> {
        // Strings, integers and ids into a Vec: serde_json has no way to fail here.
        serde_json::to_vec(self).expect("an EventEntry always serializes")
    }

    /// Parses leaf bytes, refusing anything but the exact bytes [`EventEntry::to_leaf`] writes
    /// for an entry within bounds.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, EntryError> {
        if leaf.len() > MAX_LEAF_LEN {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        let entry: EventEntry =
            serde_json::from_slice(leaf).map_err(|e| EntryError::Malformed(e.to_string()))?;
        entry.check().map_err(EntryError::Malformed)?;
        if entry.to_leaf() != leaf {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The field bounds; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let hex64 = |text: &str| {
            text.len() == 64
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let short_token = |text: &str, max: usize| {
            !text.is_empty()
                && text.len() <= max
                && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        };
        match self {
            EventEntry::Manifest {
                version, sha256, ..
            } => {
                if !short_token(version, 64) {
                    return Err("version: 1 to 64 printable ASCII characters".into());
                }
                if !hex64(sha256) {
                    return Err("sha256: 64 lowercase hex digits".into());
                }
            }
            EventEntry::GovernanceDecision {
                proposal,
                param,
                value,
                ..
            } => {
                if !hex64(proposal) {
                    return Err("proposal: 64 lowercase hex digits".into());
                }
                let known = ztmesh_trust::Param::named(param)
                    .ok_or_else(|| format!("param: unknown parameter {param:?}"))?;
                known.check(*value).map_err(|e| format!("value: {e}"))?;
            }
            EventEntry::TierChange { tier, reason, .. } => {
                if !["tier 1", "tier 2", "untrusted"].contains(&tier.as_str()) {
                    return Err("tier: one of \"tier 1\", \"tier 2\", \"untrusted\"".into());
                }
                if reason.trim().is_empty()
                    || reason.len() > MAX_EVENT_REASON_LEN
                    || reason.chars().any(char::is_control)
                {
                    return Err(format!(
                        "reason: 1 to {MAX_EVENT_REASON_LEN} bytes, no control characters"
                    ));
                }
            }
        }
        Ok(())
    }

    /// What a repeated report is judged against: the CA appends this entry only when the
    /// value last recorded under the key differs.
    pub fn dedupe(&self) -> (String, String) {
        match self {
            EventEntry::Manifest { sha256, .. } => ("manifest".into(), sha256.clone()),
            EventEntry::GovernanceDecision {
                proposal,
                param,
                value,
                ..
            } => (format!("governance:{proposal}"), format!("{param}={value}")),
            EventEntry::TierChange {
                node_id,
                tier,
                reporter,
                ..
            } => (format!("tier:{reporter}:{node_id}"), tier.clone()),
        }
    }
}

/// Why bytes are not a membership-log leaf this CA could have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Longer than [`MAX_LEAF_LEN`].
    #[error("leaf of {0} bytes exceeds {MAX_LEAF_LEN}")]
    TooLarge(usize),
    /// Not the JSON of a [`LogEntry`] (unknown kinds included).
    #[error("not a membership entry: {0}")]
    Malformed(String),
    /// The serial is not lowercase hex of at most 32 bytes.
    #[error("serial {0:?} is not lowercase hex")]
    BadSerial(String),
    /// Valid JSON, but not the exact bytes the CA writes for it.
    #[error("the leaf is not in the canonical form the CA writes")]
    NotCanonical,
}

impl LogEntry {
    /// The entry for a certificate revoked at `now`.
    pub fn revoked(kind: EntryKind, node_id: NodeId, serial: &Serial, now: Timestamp) -> Self {
        LogEntry {
            kind,
            node_id,
            serial: serial.to_hex(),
            not_after: None,
            at: now.as_unix_secs(),
        }
    }

    /// The leaf bytes.
    pub fn to_leaf(&self) -> Vec<u8> {
        // Strings, integers and a unit enum into a Vec: serde_json has no way to fail here.
        serde_json::to_vec(self).expect("a LogEntry always serializes")
    }

    /// Parses leaf bytes, refusing anything but the exact bytes [`LogEntry::to_leaf`] writes.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, EntryError> {
        if leaf.len() > MAX_LEAF_LEN {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        let entry: LogEntry =
            serde_json::from_slice(leaf).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if entry.serial.len() > 64
            || !entry
                .serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(EntryError::BadSerial(entry.serial));
        }
        if entry.to_leaf() != leaf {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }
}

/// `GET /v1/log/entries` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntriesResponse {
    /// Consecutive entries from the requested start.
    pub entries: Vec<LogEntryItem>,
}

/// One entry of [`LogEntriesResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntryItem {
    /// Leaf index, from 0.
    pub index: u64,
    /// The leaf bytes, standard base64.
    pub leaf: String,
}

/// `GET /v1/log/proof/inclusion` and `GET /v1/log/proof/consistency` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofResponse {
    /// The proof hashes, standard base64, in RFC 6962 order.
    pub proof: Vec<String>,
}

impl ProofResponse {
    /// The answer for `proof`.
    pub fn new(proof: &[Hash]) -> Self {
        ProofResponse {
            proof: proof.iter().map(Hash::to_base64).collect(),
        }
    }
}

/// Decodes a base64 leaf from a `GET /v1/log/entries` answer.
pub fn decode_leaf(text: &str) -> Option<Vec<u8>> {
    // Four base64 characters per three bytes: refuse before decoding anything oversized.
    if text.len() > MAX_LEAF_LEN.div_ceil(3) * 4 {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Why a log policy cannot be used by a member of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogPolicyError {
    /// Not a tlog-policy.
    #[error(transparent)]
    Parse(#[from] PolicyParseError),
    /// No log of the policy is the membership log of this mesh.
    #[error("the policy has no log {expected:?} (its logs: {found:?})")]
    NoMembershipLog {
        /// Origins of the policy's logs.
        found: Vec<String>,
        /// `<trust domain>/membership`.
        expected: String,
    },
}

/// Parses a log policy and binds a monitor to its membership log of `trust_domain`.
pub fn parse_log_policy(
    text: &str,
    trust_domain: &TrustDomain,
) -> Result<CheckpointMonitor, LogPolicyError> {
    let policy = Policy::parse(text)?;
    let expected = log_origin(trust_domain);
    let found = policy
        .logs()
        .iter()
        .map(|log| log.verifier.name().to_owned())
        .collect();
    CheckpointMonitor::for_origin(policy, &expected)
        .ok_or(LogPolicyError::NoMembershipLog { found, expected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_SECS: u64 = 1_700_000_000;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn events() -> Vec<EventEntry> {
        vec![
            EventEntry::Manifest {
                version: "1.2.3".into(),
                sha256: "ab".repeat(32),
                not_after: NOW_SECS + 86_400,
                at: NOW_SECS,
            },
            EventEntry::GovernanceDecision {
                proposal: "cd".repeat(32),
                param: "gossip_fanout".into(),
                value: 2,
                reporter: node(1),
                at: NOW_SECS,
            },
            EventEntry::TierChange {
                node_id: node(2),
                tier: "tier 1".into(),
                reason: "attested (dev), binary in manifest, 100% over ≥ 100 checks".into(),
                reporter: node(1),
                at: NOW_SECS,
            },
        ]
    }

    #[test]
    fn event_entries_round_trip_exactly_and_refuse_anything_else() {
        for event in events() {
            let leaf = event.to_leaf();
            assert!(
                leaf.starts_with(format!("{{\"kind\":\"{}\"", event.kind()).as_bytes()),
                "{}",
                String::from_utf8_lossy(&leaf)
            );
            assert_eq!(EventEntry::from_leaf(&leaf).unwrap(), event);
            // A certificate-event reader does not mistake it for one of its own.
            assert!(LogEntry::from_leaf(&leaf).is_err());
            // White space, an unknown field, a truncation: refused.
            let text = String::from_utf8(leaf.clone()).unwrap();
            let spaced = text.replacen(':', ": ", 1);
            assert!(EventEntry::from_leaf(spaced.as_bytes()).is_err());
            let extra = text.replacen('{', "{\"x\":1,", 1);
            assert!(EventEntry::from_leaf(extra.as_bytes()).is_err());
            assert!(EventEntry::from_leaf(&leaf[..leaf.len() - 1]).is_err());
        }
        // Out of bounds, each named.
        let bad = [
            (
                EventEntry::Manifest {
                    version: String::new(),
                    sha256: "ab".repeat(32),
                    not_after: 0,
                    at: 0,
                },
                "version",
            ),
            (
                EventEntry::Manifest {
                    version: "1".into(),
                    sha256: "AB".repeat(32),
                    not_after: 0,
                    at: 0,
                },
                "sha256",
            ),
            (
                EventEntry::GovernanceDecision {
                    proposal: "cd".repeat(31),
                    param: "gossip_fanout".into(),
                    value: 2,
                    reporter: node(1),
                    at: 0,
                },
                "proposal",
            ),
            (
                EventEntry::GovernanceDecision {
                    proposal: "cd".repeat(32),
                    param: "warp_speed".into(),
                    value: 2,
                    reporter: node(1),
                    at: 0,
                },
                "param",
            ),
            (
                EventEntry::GovernanceDecision {
                    proposal: "cd".repeat(32),
                    param: "gossip_fanout".into(),
                    value: 999,
                    reporter: node(1),
                    at: 0,
                },
                "value",
            ),
            (
                EventEntry::TierChange {
                    node_id: node(2),
                    tier: "tier 0".into(),
                    reason: "r".into(),
                    reporter: node(1),
                    at: 0,
                },
                "tier",
            ),
            (
                EventEntry::TierChange {
                    node_id: node(2),
                    tier: "tier 1".into(),
                    reason: "a\nb".into(),
                    reporter: node(1),
                    at: 0,
                },
                "reason",
            ),
            (
                EventEntry::TierChange {
                    node_id: node(2),
                    tier: "tier 1".into(),
                    reason: "r".repeat(MAX_EVENT_REASON_LEN + 1),
                    reporter: node(1),
                    at: 0,
                },
                "reason",
            ),
        ];
        for (event, field) in bad {
            let error = event.check().unwrap_err();
            assert!(error.starts_with(field), "{error}");
            assert!(EventEntry::from_leaf(&event.to_leaf()).is_err());
        }
    }

    #[test]
    fn decode_leaf_bounds_its_input() {
        assert_eq!(decode_leaf("AAEC").unwrap(), vec![0, 1, 2]);
        assert!(decode_leaf("!!").is_none());
        assert!(decode_leaf(&"A".repeat(MAX_LEAF_LEN * 2)).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_an_error_or_a_canonical_leaf(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(entry) = LogEntry::from_leaf(&bytes) {
                prop_assert_eq!(entry.to_leaf(), bytes.clone());
            }
            if let Ok(event) = EventEntry::from_leaf(&bytes) {
                prop_assert_eq!(event.to_leaf(), bytes);
            }
        }

        #[test]
        fn certificate_entries_round_trip(node_byte in any::<u8>(), serial in proptest::collection::vec(any::<u8>(), 1..20), at in any::<u64>(), issued in any::<bool>()) {
            let serial = Serial::from_bytes(&serial);
            let entry = if issued {
                LogEntry { kind: EntryKind::Rotate, node_id: node(node_byte), serial: serial.to_hex(), not_after: Some(at / 2), at }
            } else {
                LogEntry::revoked(EntryKind::RevokeNode, node(node_byte), &serial, Timestamp::from_unix_secs(at / 1000))
            };
            prop_assert_eq!(LogEntry::from_leaf(&entry.to_leaf()), Ok(entry));
        }
    }
}
