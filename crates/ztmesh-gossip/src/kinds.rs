//! The body schema of each [`MessageKind`]: what a gossip message may say, and nothing more.
//!
//! Every body is CBOR with a hard size cap checked before decoding, unknown fields refused and
//! every string bounded and restricted to a character set; the one exception is the checkpoint,
//! whose body is a signed note carried byte for byte ([`CheckpointNote`]). The anomaly schema in particular has
//! no place for free text beyond short tokens and a few short metadata values, so raw logs (and
//! the personal data they tend to hold) cannot be gossiped mesh-wide, by design.
//!
//! The gossip core validates the body of every message it accepts against its kind's schema
//! before delivering it, and [`crate::UnsignedMessage::sign`] refuses to sign an invalid one.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};

use crate::cbor;
use crate::MessageKind;

/// Largest anomaly-signature body, in bytes.
pub const MAX_ANOMALY_BODY_LEN: usize = 2 * 1024;
/// Longest indicator or rule id, in characters.
pub const MAX_TOKEN_LEN: usize = 64;
/// Highest risk score.
pub const MAX_RISK_SCORE: u8 = 100;
/// Most metadata entries in an anomaly signature.
pub const MAX_METADATA_ENTRIES: usize = 8;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_LEN: usize = 32;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_LEN: usize = 128;
/// Largest revocation-record body, in bytes (a CRL for a large fleet, within one message).
pub const MAX_REVOCATION_BODY_LEN: usize = 56 * 1024;
/// Most node ids named in one revocation record.
pub const MAX_REVOKED_NODES: usize = 1024;
/// Largest peer-exchange body, in bytes.
pub const MAX_PEER_EXCHANGE_BODY_LEN: usize = 256;
/// Longest `host:port` in a peer exchange, in bytes.
pub const MAX_ADDR_LEN: usize = 128;
/// Largest health body, in bytes.
pub const MAX_HEALTH_BODY_LEN: usize = 64;
/// Largest bundle-receipt body, in bytes.
pub const MAX_BUNDLE_RECEIPT_BODY_LEN: usize = 256;
/// Longest bundle id in a receipt, in bytes.
pub const MAX_BUNDLE_ID_LEN: usize = 128;
/// Largest checkpoint body (a signed note), in bytes.
pub const MAX_CHECKPOINT_BODY_LEN: usize = 16 * 1024;
/// Most signature lines in a checkpoint note (the signed-note limit).
pub const MAX_NOTE_SIGNATURES: usize = 100;
/// Largest governance-proposal body, in bytes (room for a full attestation token).
pub const MAX_PROPOSAL_BODY_LEN: usize = 2560;
/// Largest governance-vote body, in bytes (room for a full attestation token).
pub const MAX_VOTE_BODY_LEN: usize = 2560;
/// Longest governed parameter name, in characters.
pub const MAX_PARAM_LEN: usize = 40;
/// Largest attestation token carried by a proposal or vote, in bytes: the cap the attestation
/// crate's token verifier applies (`ztmesh_attest::token::MAX_TOKEN_LEN`).
pub const MAX_ATTESTATION_TOKEN_LEN: usize = 2048;
/// Length of a proposal id: the SHA-256 [`crate::MessageId`] of the proposal's gossip message.
pub const PROPOSAL_ID_LEN: usize = 32;

/// Why a body does not fit its kind's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The encoded body is over its kind's cap; nothing was decoded.
    #[error("body of {len} bytes exceeds the {max}-byte limit of its kind")]
    TooLarge {
        /// Length of the body.
        len: usize,
        /// The cap for the kind.
        max: usize,
    },
    /// Not CBOR of the kind's shape (wrong types, missing or unknown fields, trailing bytes).
    #[error("malformed body: {0}")]
    Malformed(String),
    /// Decoded, but a field breaks the schema's bounds or character set.
    #[error("invalid body field {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> BodyError {
    BodyError::Invalid { field, reason }
}

/// A schema checked on both encode and decode.
trait Schema: Serialize + DeserializeOwned {
    const MAX_LEN: usize;
    fn validate(&self) -> Result<(), BodyError>;

    fn encode_checked(&self) -> Result<Vec<u8>, BodyError> {
        self.validate()?;
        let bytes = cbor::encode(self).map_err(BodyError::Malformed)?;
        if bytes.len() > Self::MAX_LEN {
            return Err(BodyError::TooLarge {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(bytes)
    }

    fn decode_checked(bytes: &[u8]) -> Result<Self, BodyError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(BodyError::TooLarge {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        let body: Self = cbor::decode_exact(bytes).map_err(BodyError::Malformed)?;
        body.validate()?;
        Ok(body)
    }
}

/// Gives each schema its public `encode` and `decode`.
macro_rules! body_codec {
    ($type:ty) => {
        impl $type {
            /// Encodes the body after checking it against its schema and size cap.
            pub fn encode(&self) -> Result<Vec<u8>, BodyError> {
                Schema::encode_checked(self)
            }

            /// Decodes a body, checking the size cap before decoding and the schema after.
            pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
                <Self as Schema>::decode_checked(bytes)
            }
        }
    };
}

/// `[a-z0-9]` plus the given punctuation, `1..=max` characters.
fn is_token(text: &str, max: usize, punctuation: &str) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || punctuation.contains(c))
}

/// Printable text on one line: no control characters (newlines and tabs included) and no
/// Unicode line or paragraph separators, so a value cannot forge extra lines in a log or UI.
fn is_single_line_printable(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_control() && c != '\u{2028}' && c != '\u{2029}')
}

/// An anomaly signature: the fingerprint of something suspicious seen on one node, for others to
/// match against. Never the event itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySignature {
    /// SHA-256 of the observed event (of whatever canonical form the detector uses).
    #[serde(with = "serde_bytes")]
    pub event_sha256: [u8; 32],
    /// Indicator type, e.g. `ssh.bruteforce`: 1 to 64 characters of `[a-z0-9_.:-]`.
    pub indicator: String,
    /// Risk score, 0 to 100.
    pub risk_score: u8,
    /// Detection rule, same character set and length as `indicator`.
    pub rule_id: Option<String>,
    /// At most 8 entries; keys 1 to 32 characters of `[a-z0-9_.-]`, values at most 128
    /// printable characters on one line.
    #[serde(deserialize_with = "bounded_metadata")]
    pub metadata: BTreeMap<String, String>,
}

/// Decodes the metadata map, stopping at the entry bound and refusing duplicate keys (which a
/// plain map would silently collapse, letting two encodings mean one thing).
fn bounded_metadata<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of at most {MAX_METADATA_ENTRIES} text entries")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.len() == MAX_METADATA_ENTRIES {
                    return Err(serde::de::Error::custom("too many metadata entries"));
                }
                if entries.insert(key, value).is_some() {
                    return Err(serde::de::Error::custom("duplicate metadata key"));
                }
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Visitor)
}

impl Schema for AnomalySignature {
    const MAX_LEN: usize = MAX_ANOMALY_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if !is_token(&self.indicator, MAX_TOKEN_LEN, "_.:-") {
            return Err(invalid("indicator", "1 to 64 characters of [a-z0-9_.:-]"));
        }
        if self.risk_score > MAX_RISK_SCORE {
            return Err(invalid("risk_score", "above 100"));
        }
        if let Some(rule_id) = &self.rule_id {
            if !is_token(rule_id, MAX_TOKEN_LEN, "_.:-") {
                return Err(invalid("rule_id", "1 to 64 characters of [a-z0-9_.:-]"));
            }
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(invalid("metadata", "more than 8 entries"));
        }
        for (key, value) in &self.metadata {
            if !is_token(key, MAX_METADATA_KEY_LEN, "_.-") {
                return Err(invalid(
                    "metadata",
                    "key not 1 to 32 characters of [a-z0-9_.-]",
                ));
            }
            if value.chars().count() > MAX_METADATA_VALUE_LEN {
                return Err(invalid("metadata", "value over 128 characters"));
            }
            if !is_single_line_printable(value) {
                return Err(invalid(
                    "metadata",
                    "value has control characters or line breaks",
                ));
            }
        }
        Ok(())
    }
}
body_codec!(AnomalySignature);

/// A revocation record, signed by the mesh CA (its origin is the CA's NodeId): the CA-signed CRL
/// and the nodes it newly revokes, so that nodes far from the CA drop trust quickly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRecord {
    /// DER of the CA-signed RFC 5280 CRL; receivers verify it before acting on it.
    #[serde(with = "serde_bytes")]
    pub crl: Vec<u8>,
    /// The nodes this record revokes (at most 1024).
    pub revoked_nodes: Vec<NodeId>,
}

impl Schema for RevocationRecord {
    const MAX_LEN: usize = MAX_REVOCATION_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if self.crl.is_empty() {
            return Err(invalid("crl", "empty"));
        }
        if self.revoked_nodes.len() > MAX_REVOKED_NODES {
            return Err(invalid("revoked_nodes", "more than 1024 nodes"));
        }
        Ok(())
    }
}
body_codec!(RevocationRecord);

/// The origin's own mesh address, so that nodes can open direct links to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerExchange {
    /// `host:port` (an IPv6 host in brackets), printable ASCII without spaces, at most 128 bytes.
    pub addr: String,
}

impl Schema for PeerExchange {
    const MAX_LEN: usize = MAX_PEER_EXCHANGE_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if self.addr.len() > MAX_ADDR_LEN || !self.addr.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("addr", "not up to 128 printable ASCII characters"));
        }
        let Some((host, port)) = self.addr.rsplit_once(':') else {
            return Err(invalid("addr", "not host:port"));
        };
        if host.is_empty() || !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
            return Err(invalid("addr", "not host:port with a port in 1..=65535"));
        }
        Ok(())
    }
}
body_codec!(PeerExchange);

/// A liveness report, the raw material of uptime accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Per-origin sequence number, increasing by one per report.
    pub seq: u64,
    /// Milliseconds since the origin's daemon started.
    pub uptime_ms: u64,
    /// Number of live mesh links at the origin.
    pub links: u32,
}

impl Schema for Health {
    const MAX_LEN: usize = MAX_HEALTH_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        Ok(())
    }
}
body_codec!(Health);

/// Signed by a bundle's destination once it holds the bundle, so relays can free their copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleReceipt {
    /// The bundle's id: 1 to 128 printable ASCII characters without spaces.
    pub bundle_id: String,
}

impl Schema for BundleReceipt {
    const MAX_LEN: usize = MAX_BUNDLE_RECEIPT_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if self.bundle_id.is_empty()
            || self.bundle_id.len() > MAX_BUNDLE_ID_LEN
            || !self.bundle_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(invalid(
                "bundle_id",
                "not 1 to 128 printable ASCII characters",
            ));
        }
        Ok(())
    }
}
body_codec!(BundleReceipt);

/// A governance proposal (DESIGN.md §3 "Governance"): its origin asks every node to set the
/// parameter `param` to `value`, open for votes until `expires_at`. The proposal's gossip
/// [`crate::MessageId`] names it in votes.
///
/// The schema only bounds the shape: whether `param` is a governed parameter, `value` within its
/// bounds, the origin Tier 1 and its attestation token valid is for the receiving node's
/// governance and attestation checks to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceProposal {
    /// The parameter's name: 1 to 40 characters of `[a-z0-9_]`, e.g. `gossip_fanout`.
    pub param: String,
    /// The proposed value.
    pub value: u64,
    /// After this instant no vote counts.
    pub expires_at: Timestamp,
    /// The proposer's attestation token (COSE_Sign1 bytes issued by the mesh CA), at most
    /// 2048 bytes; empty when it presents none.
    #[serde(with = "serde_bytes")]
    pub token: Vec<u8>,
}

impl Schema for GovernanceProposal {
    const MAX_LEN: usize = MAX_PROPOSAL_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if !is_token(&self.param, MAX_PARAM_LEN, "_") {
            return Err(invalid("param", "not 1 to 40 characters of [a-z0-9_]"));
        }
        if self.token.len() > MAX_ATTESTATION_TOKEN_LEN {
            return Err(invalid("token", "over 2048 bytes"));
        }
        Ok(())
    }
}
body_codec!(GovernanceProposal);

/// A governance vote: its origin approves or rejects the proposal whose gossip message id is
/// `proposal_id`. One vote per voter and proposal counts; the receiving node's governance
/// decides which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceVote {
    /// The [`crate::MessageId`] of the proposal's gossip message: exactly 32 bytes.
    #[serde(with = "serde_bytes")]
    pub proposal_id: Vec<u8>,
    /// `true` approves, `false` rejects.
    pub approve: bool,
    /// The voter's attestation token (COSE_Sign1 bytes issued by the mesh CA), at most 2048
    /// bytes; empty when it presents none.
    #[serde(with = "serde_bytes")]
    pub token: Vec<u8>,
}

impl Schema for GovernanceVote {
    const MAX_LEN: usize = MAX_VOTE_BODY_LEN;

    fn validate(&self) -> Result<(), BodyError> {
        if self.proposal_id.len() != PROPOSAL_ID_LEN {
            return Err(invalid("proposal_id", "not 32 bytes"));
        }
        if self.token.len() > MAX_ATTESTATION_TOKEN_LEN {
            return Err(invalid("token", "over 2048 bytes"));
        }
        Ok(())
    }
}
body_codec!(GovernanceVote);

/// What starts every signature line of a signed note: an em dash (U+2014) and a space.
const NOTE_SIGNATURE_PREFIX: &str = "\u{2014} ";

/// A membership-log checkpoint as a C2SP signed note: the checkpoint text, a blank line, then
/// the log signature and witness cosignature lines.
///
/// Unlike the other kinds the body is not CBOR but the note itself, UTF-8, byte for byte as the
/// log produced it: signatures cover exactly these bytes, so it is never re-encoded. The schema
/// checks the signed-note grammar (no control characters but newlines, a non-empty signature
/// block after the last blank line, at most 100 lines `— <key name> <base64 of 5 or more
/// bytes>`), the same rules `ztmesh_tlog::Note::parse` applies. Whether the log and its
/// witnesses really signed it is for the receiving node's log monitor to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointNote {
    note: String,
}

impl CheckpointNote {
    /// Wraps a note after checking it against the schema.
    pub fn new(note: String) -> Result<Self, BodyError> {
        if note.len() > MAX_CHECKPOINT_BODY_LEN {
            return Err(BodyError::TooLarge {
                len: note.len(),
                max: MAX_CHECKPOINT_BODY_LEN,
            });
        }
        check_signed_note(&note)?;
        Ok(CheckpointNote { note })
    }

    /// The note text.
    pub fn as_str(&self) -> &str {
        &self.note
    }

    /// Gives the note text back.
    pub fn into_string(self) -> String {
        self.note
    }

    /// The body bytes: the note's UTF-8.
    pub fn encode(&self) -> Result<Vec<u8>, BodyError> {
        Ok(self.note.as_bytes().to_vec())
    }

    /// Decodes a body, checking the size cap before anything else and the schema after.
    pub fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
        if bytes.len() > MAX_CHECKPOINT_BODY_LEN {
            return Err(BodyError::TooLarge {
                len: bytes.len(),
                max: MAX_CHECKPOINT_BODY_LEN,
            });
        }
        let note = std::str::from_utf8(bytes).map_err(|_| invalid("note", "not UTF-8"))?;
        CheckpointNote::new(note.to_owned())
    }
}

/// The C2SP signed-note grammar, as `ztmesh_tlog::Note::parse` checks it (a test holds the two
/// to the same answers).
fn check_signed_note(note: &str) -> Result<(), BodyError> {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    if note.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(invalid("note", "control character other than newline"));
    }
    let Some(split) = note.rfind("\n\n") else {
        return Err(invalid("note", "no blank line before the signatures"));
    };
    let block = &note[split + 2..];
    if block.is_empty() {
        return Err(invalid("note", "no signature lines"));
    }
    let Some(block) = block.strip_suffix('\n') else {
        return Err(invalid("note", "does not end in a newline"));
    };
    for (index, line) in block.split('\n').enumerate() {
        if index >= MAX_NOTE_SIGNATURES {
            return Err(invalid("note", "more than 100 signature lines"));
        }
        let malformed = || invalid("note", "malformed signature line");
        let rest = line
            .strip_prefix(NOTE_SIGNATURE_PREFIX)
            .ok_or_else(malformed)?;
        let (name, signature) = rest.split_once(' ').ok_or_else(malformed)?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(malformed());
        }
        // Four bytes of key ID and at least one of signature.
        match BASE64.decode(signature) {
            Ok(raw) if raw.len() >= 5 => {}
            _ => return Err(malformed()),
        }
    }
    Ok(())
}

/// A decoded body of any known kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// [`MessageKind::Anomaly`].
    Anomaly(AnomalySignature),
    /// [`MessageKind::Revocation`].
    Revocation(RevocationRecord),
    /// [`MessageKind::PeerExchange`].
    PeerExchange(PeerExchange),
    /// [`MessageKind::Health`].
    Health(Health),
    /// [`MessageKind::BundleReceipt`].
    BundleReceipt(BundleReceipt),
    /// [`MessageKind::Checkpoint`].
    Checkpoint(CheckpointNote),
    /// [`MessageKind::Proposal`].
    Proposal(GovernanceProposal),
    /// [`MessageKind::Vote`].
    Vote(GovernanceVote),
}

impl Body {
    /// Decodes `bytes` with the schema of `kind`.
    pub fn decode(kind: MessageKind, bytes: &[u8]) -> Result<Self, BodyError> {
        Ok(match kind {
            MessageKind::Anomaly => Body::Anomaly(AnomalySignature::decode(bytes)?),
            MessageKind::Revocation => Body::Revocation(RevocationRecord::decode(bytes)?),
            MessageKind::PeerExchange => Body::PeerExchange(PeerExchange::decode(bytes)?),
            MessageKind::Health => Body::Health(Health::decode(bytes)?),
            MessageKind::BundleReceipt => Body::BundleReceipt(BundleReceipt::decode(bytes)?),
            MessageKind::Checkpoint => Body::Checkpoint(CheckpointNote::decode(bytes)?),
            MessageKind::Proposal => Body::Proposal(GovernanceProposal::decode(bytes)?),
            MessageKind::Vote => Body::Vote(GovernanceVote::decode(bytes)?),
        })
    }

    /// Encodes the body with its kind's schema.
    pub fn encode(&self) -> Result<Vec<u8>, BodyError> {
        match self {
            Body::Anomaly(body) => body.encode(),
            Body::Revocation(body) => body.encode(),
            Body::PeerExchange(body) => body.encode(),
            Body::Health(body) => body.encode(),
            Body::BundleReceipt(body) => body.encode(),
            Body::Checkpoint(body) => body.encode(),
            Body::Proposal(body) => body.encode(),
            Body::Vote(body) => body.encode(),
        }
    }

    /// The kind this body belongs to.
    pub fn kind(&self) -> MessageKind {
        match self {
            Body::Anomaly(_) => MessageKind::Anomaly,
            Body::Revocation(_) => MessageKind::Revocation,
            Body::PeerExchange(_) => MessageKind::PeerExchange,
            Body::Health(_) => MessageKind::Health,
            Body::BundleReceipt(_) => MessageKind::BundleReceipt,
            Body::Checkpoint(_) => MessageKind::Checkpoint,
            Body::Proposal(_) => MessageKind::Proposal,
            Body::Vote(_) => MessageKind::Vote,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;
    use proptest::prelude::*;

    fn anomaly() -> AnomalySignature {
        AnomalySignature {
            event_sha256: [0xab; 32],
            indicator: "ssh.bruteforce".into(),
            risk_score: 87,
            rule_id: Some("rule:ssh-42".into()),
            metadata: BTreeMap::from([
                ("src.port".into(), "22".into()),
                ("country".into(), "Zürich région".into()),
            ]),
        }
    }

    fn cbor(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).unwrap();
        bytes
    }

    /// The anomaly body as a generic CBOR map, to build encodings `encode` would refuse.
    fn anomaly_value(extra: Option<(&str, Value)>, metadata: Vec<(Value, Value)>) -> Vec<u8> {
        let mut map = vec![
            (Value::from("event_sha256"), Value::Bytes(vec![1; 32])),
            (Value::from("indicator"), Value::from("dns.tunnel")),
            (Value::from("risk_score"), Value::from(10)),
            (Value::from("rule_id"), Value::Null),
            (Value::from("metadata"), Value::Map(metadata)),
        ];
        if let Some((key, value)) = extra {
            map.push((Value::from(key), value));
        }
        cbor(&Value::Map(map))
    }

    #[test]
    fn anomaly_round_trips() {
        let body = anomaly();
        let bytes = body.encode().unwrap();
        assert!(bytes.len() <= MAX_ANOMALY_BODY_LEN);
        assert_eq!(AnomalySignature::decode(&bytes).unwrap(), body);
        assert_eq!(
            Body::decode(MessageKind::Anomaly, &bytes).unwrap(),
            Body::Anomaly(body)
        );
    }

    #[test]
    fn anomaly_with_a_10_kib_metadata_value_is_refused_both_ways() {
        let mut body = anomaly();
        body.metadata.insert("log".into(), "x".repeat(10 * 1024));
        assert!(matches!(
            body.encode(),
            Err(BodyError::Invalid {
                field: "metadata",
                ..
            })
        ));
        // A peer that skips `encode` hits the size cap before anything is decoded.
        let raw = anomaly_value(
            None,
            vec![(Value::from("log"), Value::from("x".repeat(10 * 1024)))],
        );
        assert!(matches!(
            AnomalySignature::decode(&raw),
            Err(BodyError::TooLarge {
                max: MAX_ANOMALY_BODY_LEN,
                ..
            })
        ));
    }

    #[test]
    fn anomaly_metadata_value_with_a_newline_is_refused() {
        for value in ["line one\nline two", "tab\there", "sep\u{2028}arator"] {
            let raw = anomaly_value(None, vec![(Value::from("note"), Value::from(value))]);
            assert_eq!(
                AnomalySignature::decode(&raw),
                Err(invalid(
                    "metadata",
                    "value has control characters or line breaks"
                )),
                "{value:?}"
            );
        }
    }

    #[test]
    fn risk_score_101_is_refused() {
        let mut body = anomaly();
        body.risk_score = 101;
        assert_eq!(body.encode(), Err(invalid("risk_score", "above 100")));
        let mut map = anomaly_value(None, vec![]);
        // risk_score 10 is encoded as the single byte 0x0a right after its key.
        let key = cbor(&Value::from("risk_score"));
        let at = map.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        assert_eq!(map[at], 0x0a);
        map.splice(at..=at, [0x18, 101]);
        assert_eq!(
            AnomalySignature::decode(&map),
            Err(invalid("risk_score", "above 100"))
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let raw = anomaly_value(Some(("raw_log", Value::from("GET /secret"))), vec![]);
        assert!(matches!(
            AnomalySignature::decode(&raw),
            Err(BodyError::Malformed(_))
        ));
        let raw = cbor(&Value::Map(vec![
            (Value::from("seq"), Value::from(1)),
            (Value::from("uptime_ms"), Value::from(1)),
            (Value::from("links"), Value::from(1)),
            (Value::from("extra"), Value::from(1)),
        ]));
        assert!(matches!(Health::decode(&raw), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn indicator_rule_and_keys_are_tokens() {
        for bad in ["", "UPPER", "with space", "semi;colon", &"a".repeat(65)] {
            let mut body = anomaly();
            body.indicator = bad.into();
            assert!(body.encode().is_err(), "indicator {bad:?}");
            let mut body = anomaly();
            body.rule_id = Some(bad.into());
            assert!(body.encode().is_err(), "rule_id {bad:?}");
            let mut body = anomaly();
            body.metadata.insert(bad.into(), "v".into());
            assert!(body.encode().is_err(), "key {bad:?}");
        }
        let mut body = anomaly();
        body.metadata.insert("has:colon".into(), "v".into());
        assert!(body.encode().is_err());
    }

    #[test]
    fn metadata_entry_bound_and_duplicate_keys_are_refused() {
        let mut body = anomaly();
        body.metadata = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(body.encode().is_err());
        let nine = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (Value::from(format!("k{i}")), Value::from("v")))
            .collect();
        assert!(matches!(
            AnomalySignature::decode(&anomaly_value(None, nine)),
            Err(BodyError::Malformed(_))
        ));
        let duplicate = vec![
            (Value::from("k"), Value::from("a")),
            (Value::from("k"), Value::from("b")),
        ];
        assert!(matches!(
            AnomalySignature::decode(&anomaly_value(None, duplicate)),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = anomaly().encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            AnomalySignature::decode(&bytes),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn other_kinds_round_trip() {
        let bodies = [
            Body::Revocation(RevocationRecord {
                crl: vec![0x30, 0x82, 0x01, 0x00],
                revoked_nodes: vec![NodeId::from_spki_der(b"gone")],
            }),
            Body::PeerExchange(PeerExchange {
                addr: "[2001:db8::1]:4433".into(),
            }),
            Body::Health(Health {
                seq: 9,
                uptime_ms: 1_000,
                links: 3,
            }),
            Body::BundleReceipt(BundleReceipt {
                bundle_id: "dtn://abc/svc/1700000000000-1".into(),
            }),
            Body::Checkpoint(CheckpointNote::new(checkpoint_note()).unwrap()),
            Body::Proposal(proposal()),
            Body::Vote(vote()),
            Body::Vote(GovernanceVote {
                proposal_id: vec![0; PROPOSAL_ID_LEN],
                approve: false,
                token: vec![],
            }),
        ];
        for body in bodies {
            let bytes = body.encode().unwrap();
            assert_eq!(Body::decode(body.kind(), &bytes).unwrap(), body);
        }
    }

    #[test]
    fn other_kinds_enforce_their_bounds() {
        let empty_crl = RevocationRecord {
            crl: vec![],
            revoked_nodes: vec![],
        };
        assert!(empty_crl.encode().is_err());
        let many = RevocationRecord {
            crl: vec![1],
            revoked_nodes: vec![NodeId::from_spki_der(b"n"); MAX_REVOKED_NODES + 1],
        };
        assert!(many.encode().is_err());
        for addr in [
            "no-port",
            "host:0",
            "host:99999",
            ":80",
            "a b:80",
            &format!("{}:1", "h".repeat(130)),
        ] {
            assert!(
                PeerExchange { addr: addr.into() }.encode().is_err(),
                "{addr:?}"
            );
        }
        for bundle_id in [String::new(), "x".repeat(129), "has space".into()] {
            assert!(BundleReceipt { bundle_id }.encode().is_err());
        }
        let huge = vec![0u8; MAX_HEALTH_BODY_LEN + 1];
        assert!(matches!(
            Health::decode(&huge),
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_body_decodes_only_with_its_own_kind() {
        let bytes = Health {
            seq: 1,
            uptime_ms: 2,
            links: 3,
        }
        .encode()
        .unwrap();
        assert!(Body::decode(MessageKind::Anomaly, &bytes).is_err());
        assert!(Body::decode(MessageKind::BundleReceipt, &bytes).is_err());
    }

    fn proposal() -> GovernanceProposal {
        GovernanceProposal {
            param: "gossip_fanout".into(),
            value: 5,
            expires_at: Timestamp::from_unix_secs(1_750_003_600),
            token: vec![0xd2; 300],
        }
    }

    fn vote() -> GovernanceVote {
        GovernanceVote {
            proposal_id: vec![0x7a; PROPOSAL_ID_LEN],
            approve: true,
            token: vec![0xd2; 300],
        }
    }

    /// A governance body as a generic CBOR map with `field` replaced (or added) by `value`, to
    /// build encodings `encode` would refuse.
    fn governance_value(kind: MessageKind, field: &str, value: Value) -> Vec<u8> {
        let mut map = match kind {
            MessageKind::Proposal => vec![
                (Value::from("param"), Value::from("gossip_fanout")),
                (Value::from("value"), Value::from(5)),
                (Value::from("expires_at"), Value::from(1_750_003_600_000u64)),
                (Value::from("token"), Value::Bytes(vec![])),
            ],
            _ => vec![
                (Value::from("proposal_id"), Value::Bytes(vec![1; 32])),
                (Value::from("approve"), Value::from(true)),
                (Value::from("token"), Value::Bytes(vec![])),
            ],
        };
        match map.iter_mut().find(|(key, _)| key.as_text() == Some(field)) {
            Some(entry) => entry.1 = value,
            None => map.push((Value::from(field), value)),
        }
        cbor(&Value::Map(map))
    }

    #[test]
    fn governance_bodies_round_trip_at_their_bounds() {
        let largest_proposal = GovernanceProposal {
            param: "z".repeat(MAX_PARAM_LEN),
            value: u64::MAX,
            expires_at: Timestamp::from_unix_millis(u64::MAX),
            token: vec![0xff; MAX_ATTESTATION_TOKEN_LEN],
        };
        let bytes = largest_proposal.encode().unwrap();
        assert!(bytes.len() <= MAX_PROPOSAL_BODY_LEN);
        assert_eq!(
            Body::decode(MessageKind::Proposal, &bytes).unwrap(),
            Body::Proposal(largest_proposal)
        );
        let largest_vote = GovernanceVote {
            proposal_id: vec![0xff; PROPOSAL_ID_LEN],
            approve: true,
            token: vec![0xff; MAX_ATTESTATION_TOKEN_LEN],
        };
        let bytes = largest_vote.encode().unwrap();
        assert!(bytes.len() <= MAX_VOTE_BODY_LEN);
        assert_eq!(
            Body::decode(MessageKind::Vote, &bytes).unwrap(),
            Body::Vote(largest_vote)
        );
        for param in ["a", "rate_limit_rpm", "health_check_interval_secs", "x9_"] {
            let body = GovernanceProposal {
                param: param.into(),
                ..proposal()
            };
            assert_eq!(
                GovernanceProposal::decode(&body.encode().unwrap()),
                Ok(body)
            );
        }
    }

    #[test]
    fn a_proposal_param_must_be_a_short_lowercase_token() {
        for bad in [
            String::new(),
            "Gossip_Fanout".into(),
            "gossip-fanout".into(),
            "gossip.fanout".into(),
            "with space".into(),
            "fan\nout".into(),
            "f\u{e4}nout".into(),
            "a".repeat(MAX_PARAM_LEN + 1),
        ] {
            let expected = invalid("param", "not 1 to 40 characters of [a-z0-9_]");
            let body = GovernanceProposal {
                param: bad.clone(),
                ..proposal()
            };
            assert_eq!(body.encode(), Err(expected.clone()), "encode {bad:?}");
            let raw = governance_value(MessageKind::Proposal, "param", Value::from(bad.as_str()));
            assert_eq!(
                GovernanceProposal::decode(&raw),
                Err(expected.clone()),
                "decode {bad:?}"
            );
        }
    }

    #[test]
    fn a_vote_must_name_a_32_byte_proposal_id() {
        for len in [0, 1, PROPOSAL_ID_LEN - 1, PROPOSAL_ID_LEN + 1, 64] {
            let expected = invalid("proposal_id", "not 32 bytes");
            let body = GovernanceVote {
                proposal_id: vec![1; len],
                ..vote()
            };
            assert_eq!(body.encode(), Err(expected.clone()), "encode {len}");
            let raw =
                governance_value(MessageKind::Vote, "proposal_id", Value::Bytes(vec![1; len]));
            assert_eq!(
                GovernanceVote::decode(&raw),
                Err(expected.clone()),
                "decode {len}"
            );
        }
        let text_id = governance_value(MessageKind::Vote, "proposal_id", Value::from("id"));
        assert!(matches!(
            GovernanceVote::decode(&text_id),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn an_oversized_attestation_token_is_refused() {
        let over = vec![0xd2; MAX_ATTESTATION_TOKEN_LEN + 1];
        let expected = invalid("token", "over 2048 bytes");
        let body = GovernanceProposal {
            token: over.clone(),
            ..proposal()
        };
        assert_eq!(body.encode(), Err(expected.clone()));
        let body = GovernanceVote {
            token: over.clone(),
            ..vote()
        };
        assert_eq!(body.encode(), Err(expected.clone()));
        for kind in [MessageKind::Proposal, MessageKind::Vote] {
            // Just over the token cap: decoded, then refused by the schema.
            let raw = governance_value(kind, "token", Value::Bytes(over.clone()));
            assert_eq!(Body::decode(kind, &raw), Err(expected.clone()), "{kind}");
            // Far over: refused by the size cap before decoding.
            let raw = governance_value(kind, "token", Value::Bytes(vec![0xd2; 4096]));
            assert!(
                matches!(Body::decode(kind, &raw), Err(BodyError::TooLarge { .. })),
                "{kind}"
            );
        }
    }

    #[test]
    fn governance_bodies_refuse_unknown_and_duplicate_fields() {
        for kind in [MessageKind::Proposal, MessageKind::Vote] {
            let unknown = governance_value(kind, "weight", Value::from(2));
            assert!(
                matches!(Body::decode(kind, &unknown), Err(BodyError::Malformed(_))),
                "{kind}"
            );
            let mut duplicate = governance_value(kind, "token", Value::Bytes(vec![]));
            // The map header counts one more entry, then the token entry is repeated.
            duplicate[0] += 1;
            duplicate.extend(cbor(&Value::from("token")));
            duplicate.extend(cbor(&Value::Bytes(vec![1])));
            assert!(
                matches!(Body::decode(kind, &duplicate), Err(BodyError::Malformed(_))),
                "{kind}"
            );
        }
        let missing = cbor(&Value::Map(vec![
            (Value::from("param"), Value::from("gossip_fanout")),
            (Value::from("value"), Value::from(5)),
            (Value::from("expires_at"), Value::from(1)),
        ]));
        assert!(matches!(
            GovernanceProposal::decode(&missing),
            Err(BodyError::Malformed(_))
        ));
        // A proposal never decodes as a vote, nor the reverse.
        let proposal = proposal().encode().unwrap();
        let vote = vote().encode().unwrap();
        assert!(Body::decode(MessageKind::Vote, &proposal).is_err());
        assert!(Body::decode(MessageKind::Proposal, &vote).is_err());
    }

    /// A cosigned checkpoint as the CA's log would serve it.
    fn checkpoint_note() -> String {
        use ztmesh_tlog::{Checkpoint, CosignatureSigner, MerkleTree, Note, Signer};
        let log = Signer::new(
            "test.ztmesh/membership",
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        let witness = CosignatureSigner::new(
            "witness.test",
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        )
        .unwrap();
        let mut tree = MerkleTree::new();
        tree.append(b"enroll");
        let checkpoint = Checkpoint::new(log.name(), 1, tree.root()).unwrap();
        let mut note = Note::sign(&checkpoint.to_string(), &[&log]).unwrap();
        note.add_signature(witness.cosign(note.text(), 1_800_000_000).unwrap())
            .unwrap();
        note.to_string()
    }

    #[test]
    fn a_checkpoint_body_is_the_note_byte_for_byte() {
        let text = checkpoint_note();
        let body = CheckpointNote::new(text.clone()).unwrap();
        assert_eq!(body.encode().unwrap(), text.as_bytes());
        let decoded = CheckpointNote::decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.as_str(), text);
        assert_eq!(decoded.into_string(), text);
        // It decodes as a checkpoint and as nothing else.
        for kind in MessageKind::ALL {
            assert_eq!(
                Body::decode(kind, text.as_bytes()).is_ok(),
                kind == MessageKind::Checkpoint,
                "{kind}"
            );
        }
    }

    #[test]
    fn a_checkpoint_body_must_be_a_signed_note() {
        let text = checkpoint_note();
        let (checkpoint, signatures) = text.split_once("\n\n").unwrap();
        let line = signatures.lines().next().unwrap();
        for bad in [
            String::new(),
            format!("{checkpoint}\n"),
            format!("{checkpoint}\n\n"),
            text.trim_end().to_owned(),
            text.replacen("\n", "\r\n", 1),
            format!("{checkpoint}\n\n{}\n", line.replacen('\u{2014}', "-", 1)),
            format!("{checkpoint}\n\n\u{2014} na+me AAAAAAA=\n"),
            format!("{checkpoint}\n\n\u{2014} name AAAAAA==\n"),
            format!("{checkpoint}\n\n\u{2014} name not-base64\n"),
            format!(
                "{checkpoint}\n\n{}",
                format!("{line}\n").repeat(MAX_NOTE_SIGNATURES + 1)
            ),
        ] {
            assert!(
                matches!(
                    CheckpointNote::decode(bad.as_bytes()),
                    Err(BodyError::Invalid { field: "note", .. })
                ),
                "{bad:?}"
            );
            assert!(CheckpointNote::new(bad).is_err());
        }
        assert_eq!(
            CheckpointNote::decode(b"\xff\n\n"),
            Err(invalid("note", "not UTF-8"))
        );
        let huge = format!("{}{text}", "x".repeat(MAX_CHECKPOINT_BODY_LEN));
        assert_eq!(
            CheckpointNote::decode(huge.as_bytes()),
            Err(BodyError::TooLarge {
                len: huge.len(),
                max: MAX_CHECKPOINT_BODY_LEN
            })
        );
        assert!(CheckpointNote::new(huge).is_err());
    }

    proptest! {
        /// The schema and the log crate's note parser agree on every input within the cap.
        #[test]
        fn the_checkpoint_schema_agrees_with_the_note_parser(
            text in "[a-z0-9/ \n]{0,30}",
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("\u{2014} name AAAAAAAA".to_owned()),
                    Just("\u{2014} witness.test/a AAAAAAA=".to_owned()),
                    "(\u{2014} |- |\u{2014}  )?[a-z.+\u{a0}]{0,6} ?[A-Za-z0-9+/=]{0,16}\n?",
                ],
                0..4,
            ),
            tail in "(\n|\n\n|\t)?",
        ) {
            let message = format!("{text}\n\n{}{tail}", lines.join("\n"));
            prop_assert_eq!(
                CheckpointNote::decode(message.as_bytes()).is_ok(),
                ztmesh_tlog::Note::from_bytes(message.as_bytes()).is_ok(),
                "{:?}", message
            );
        }

        #[test]
        fn garbage_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for kind in MessageKind::ALL {
                let _ = Body::decode(kind, &bytes);
            }
        }

        #[test]
        fn metadata_values_decode_only_if_single_line(value in "\\PC{0,20}[\\n\\r\\t]\\PC{0,20}") {
            let raw = anomaly_value(None, vec![(Value::from("k"), Value::from(value))]);
            prop_assert!(AnomalySignature::decode(&raw).is_err());
        }
    }
}
