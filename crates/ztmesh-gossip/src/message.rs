//! Gossip messages: what an origin signs ([`UnsignedMessage`]), what a receiver accepts
//! ([`VerifiedMessage`]), and the one check that turns received bytes into the latter.
//!
//! A message is a tagged COSE_Sign1 ([`ztmesh_core::signed`]) with external_aad
//! [`GOSSIP_LABEL`]. Its protected header carries everything needed to decide *whose key* must
//! have signed it, so the payload is decoded only after the signature verifies:
//! - `kid` = the origin NodeId's 20 raw bytes;
//! - content type = `application/vnd.ztmesh.gossip.<kind>+cbor`;
//! - CWT `iat` = `created_at` in whole seconds (the time the origin's certificate must be valid).
//!
//! The unprotected x5chain carries the origin's current node certificate, so a receiver many
//! hops away can learn its identity key from a CA-signed certificate.
//!
//! The payload is CBOR `{origin, kind, body, created_at, expires_at, hop_limit}`; after
//! verification it must agree with the header.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ztmesh_core::signed::{self, ProtectedFields};
use ztmesh_core::{NodeId, Timestamp};

use crate::kinds::{Body, BodyError};
use crate::{cbor, GossipConfig, GossipError, Membership, MessageId, Refusal, GOSSIP_LABEL};

/// What a gossip message is about; each kind has a body schema in [`crate::kinds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// [`crate::kinds::AnomalySignature`].
    Anomaly,
    /// [`crate::kinds::RevocationRecord`], signed by the mesh CA.
    Revocation,
    /// [`crate::kinds::PeerExchange`].
    PeerExchange,
    /// [`crate::kinds::Health`].
    Health,
    /// [`crate::kinds::BundleReceipt`], signed by a bundle's destination.
    BundleReceipt,
    /// [`crate::kinds::CheckpointNote`]: a membership-log checkpoint a member has accepted,
    /// relayed so that every node compares the log views the CA showed to others.
    Checkpoint,
    /// [`crate::kinds::GovernanceProposal`]: a Tier 1 node asks to change a governed parameter.
    Proposal,
    /// [`crate::kinds::GovernanceVote`]: a Tier 1 node approves or rejects a proposal.
    Vote,
}

impl MessageKind {
    /// Every kind, in wire-code order.
    pub const ALL: [MessageKind; 8] = [
        MessageKind::Anomaly,
        MessageKind::Revocation,
        MessageKind::PeerExchange,
        MessageKind::Health,
        MessageKind::BundleReceipt,
        MessageKind::Checkpoint,
        MessageKind::Proposal,
        MessageKind::Vote,
    ];

    /// Stable one-byte code, for compact storage and metrics labels. Never renumbered.
    pub const fn code(self) -> u8 {
        match self {
            MessageKind::Anomaly => 1,
            MessageKind::Revocation => 2,
            MessageKind::PeerExchange => 3,
            MessageKind::Health => 4,
            MessageKind::BundleReceipt => 5,
            MessageKind::Checkpoint => 6,
            MessageKind::Proposal => 7,
            MessageKind::Vote => 8,
        }
    }

    /// The kind with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The snake_case name used by serde, e.g. `peer_exchange`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageKind::Anomaly => "anomaly",
            MessageKind::Revocation => "revocation",
            MessageKind::PeerExchange => "peer_exchange",
            MessageKind::Health => "health",
            MessageKind::BundleReceipt => "bundle_receipt",
            MessageKind::Checkpoint => "checkpoint",
            MessageKind::Proposal => "proposal",
            MessageKind::Vote => "vote",
        }
    }

    /// The COSE content type that announces this kind in the protected header.
    pub fn content_type(self) -> String {
        format!("application/vnd.ztmesh.gossip.{}+cbor", self.as_str())
    }

    /// The kind a content type announces, if any.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let name = content_type
            .strip_prefix("application/vnd.ztmesh.gossip.")?
            .strip_suffix("+cbor")?;
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signed payload. Field names are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    pub(crate) origin: NodeId,
    pub(crate) kind: MessageKind,
    #[serde(with = "serde_bytes")]
    pub(crate) body: Vec<u8>,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) hop_limit: u8,
}

/// A message as its origin writes it, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedMessage {
    /// The signer's NodeId (for revocations: the mesh CA's NodeId).
    pub origin: NodeId,
    /// What the body is.
    pub kind: MessageKind,
    /// The body, encoded with its kind's schema (see [`crate::kinds`]).
    pub body: Vec<u8>,
    /// When the origin made it (its clock).
    pub created_at: Timestamp,
    /// When every node drops it.
    pub expires_at: Timestamp,
    /// How many times it may be relayed after the origin's own push: the origin sends it with
    /// `hops_left = hop_limit`, each relay forwards with one less, and a node receiving
    /// `hops_left = 0` delivers but does not push it further (anti-entropy still may).
    pub hop_limit: u8,
}

impl UnsignedMessage {
    /// Signs the message into the COSE_Sign1 bytes to hand to [`crate::Gossip::publish`].
    ///
    /// `certificate` is the origin's current X.509 node certificate (DER), carried so that any
    /// receiver can learn the origin's identity key; `signer` signs the given bytes with the
    /// origin's Ed25519 identity key. The body is checked against its kind's schema first, so
    /// an invalid body is refused here rather than by every receiver.
    pub fn sign(
        &self,
        certificate: Option<Vec<u8>>,
        signer: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Vec<u8>, GossipError> {
        Body::decode(self.kind, &self.body).map_err(|e| GossipError::Local(Refusal::Body(e)))?;
        let payload = Payload {
            origin: self.origin,
            kind: self.kind,
            body: self.body.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            hop_limit: self.hop_limit,
        };
        let payload = cbor::encode(&payload).map_err(GossipError::Encode)?;
        let fields = ProtectedFields {
            content_type: Some(self.kind.content_type()),
            issued_at: Some(self.created_at.as_unix_secs()),
        };
        signed::sign_with(
            GOSSIP_LABEL,
            self.origin.as_bytes(),
            &fields,
            payload,
            certificate,
            signer,
        )
        .map_err(|e| GossipError::Encode(e.to_string()))
    }
}

/// A message whose signature, origin, freshness and body schema all checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMessage {
    /// SHA-256 of `cose`.
    pub id: MessageId,
    /// The signer.
    pub origin: NodeId,
    /// What the body is.
    pub kind: MessageKind,
    /// The body, valid for its kind's schema.
    pub body: Vec<u8>,
    /// When the origin made it.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The signed hop limit.
    pub hop_limit: u8,
    /// The exact COSE_Sign1 bytes received, for relaying and storage.
    pub cose: Vec<u8>,
}

impl VerifiedMessage {
    /// The body decoded with its kind's schema (it was validated on acceptance).
    pub fn decode_body(&self) -> Result<Body, BodyError> {
        Body::decode(self.kind, &self.body)
    }

    /// Bytes this message occupies in the store: its envelope plus its decoded body.
    pub(crate) fn stored_len(&self) -> usize {
        self.cose.len() + self.body.len()
    }
}

/// A message that passed [`check`], with what dedupe needs beyond its id.
pub(crate) struct Checked {
    pub(crate) message: VerifiedMessage,
    /// SHA-256 of the signature value. Ed25519 verified strictly is not malleable, so two
    /// envelopes with the same signature carry the same signed content even when their unsigned
    /// parts (and so their ids) differ, e.g. a relay swapped the carried certificate.
    pub(crate) signature_key: [u8; 32],
}

/// Runs every receipt check on `cose`, in order: envelope shape, revoked origin, membership,
/// signature, then (only now) the payload's meaning: header agreement, freshness, lifetime and
/// body schema. The size cap and dedupe are the caller's, as they need its state.
/// The kind a signed message's protected header claims, read without verifying anything.
/// Only for decisions a node makes before the full check, such as whether a neighbour may hand
/// this kind on at all (the relay gate); never a basis for trusting the message.
pub fn claimed_kind(cose: &[u8], config: &GossipConfig) -> Option<MessageKind> {
    let opened = signed::open(cose, GOSSIP_LABEL, config.max_message_len).ok()?;
    MessageKind::from_content_type(opened.content_type()?)
}

pub(crate) fn check(
    cose: Vec<u8>,
    id: MessageId,
    now: Timestamp,
    config: &GossipConfig,
    is_revoked: impl Fn(&NodeId) -> bool,
    membership: &mut impl Membership,
) -> Result<Checked, Refusal> {
    let opened =
        signed::open(&cose, GOSSIP_LABEL, config.max_message_len).map_err(Refusal::Envelope)?;
    let origin = NodeId::from_bytes(opened.key_id().try_into().map_err(|_| Refusal::BadKeyId)?);
    let content_type = opened.content_type().unwrap_or_default();
    let kind = MessageKind::from_content_type(content_type)
        .ok_or_else(|| Refusal::UnknownKind(content_type.to_owned()))?;
    let issued_at = opened.issued_at().ok_or(Refusal::MissingIssuedAt)?;
    if is_revoked(&origin) {
        return Err(Refusal::RevokedOrigin(origin));
    }
    let key = membership
        .resolve_origin(
            &origin,
            kind,
            opened.x5chain(),
            Timestamp::from_unix_secs(issued_at),
        )
        .map_err(|reason| Refusal::Origin { origin, reason })?;
    opened.verify(&key).map_err(|_| Refusal::BadSignature)?;

    // Authenticated from here on.
    let payload: Payload =
        cbor::decode_exact(opened.payload()).map_err(Refusal::MalformedPayload)?;
    if payload.origin != origin {
        return Err(Refusal::OriginMismatch {
            key_id: origin,
            payload: payload.origin,
        });
    }
    if payload.kind != kind {
        return Err(Refusal::HeaderMismatch("kind"));
    }
    if payload.created_at.as_unix_secs() != issued_at {
        return Err(Refusal::HeaderMismatch("created_at"));
    }
    if payload.expires_at <= now {
        return Err(Refusal::Expired {
            expires_at: payload.expires_at,
            now,
        });
    }
    if payload.created_at.as_unix_millis()
        > now
            .as_unix_millis()
            .saturating_add(config.max_clock_skew_ms)
    {
        return Err(Refusal::FromFuture {
            created_at: payload.created_at,
            now,
        });
    }
    if payload.expires_at <= payload.created_at {
        return Err(Refusal::InvalidLifetime {
            created_at: payload.created_at,
            expires_at: payload.expires_at,
        });
    }
    let ttl_ms = payload.expires_at.as_unix_millis() - payload.created_at.as_unix_millis();
    if ttl_ms > config.max_ttl_ms {
        return Err(Refusal::TtlTooLong {
            ttl_ms,
            max_ms: config.max_ttl_ms,
        });
    }
    Body::decode(kind, &payload.body).map_err(Refusal::Body)?;
    let signature_key = Sha256::digest(opened.signature()).into();
    Ok(Checked {
        message: VerifiedMessage {
            id,
            origin,
            kind,
            body: payload.body,
            created_at: payload.created_at,
            expires_at: payload.expires_at,
            hop_limit: payload.hop_limit,
            cose,
        },
        signature_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_and_names_are_stable() {
        let expected = [
            (1, "anomaly"),
            (2, "revocation"),
            (3, "peer_exchange"),
            (4, "health"),
            (5, "bundle_receipt"),
            (6, "checkpoint"),
            (7, "proposal"),
            (8, "vote"),
        ];
        assert_eq!(
            MessageKind::ALL.len(),
            expected.len(),
            "a kind is missing here"
        );
        for (kind, (code, name)) in MessageKind::ALL.into_iter().zip(expected) {
            assert_eq!(kind.code(), code);
            assert_eq!(MessageKind::from_code(code), Some(kind));
            assert_eq!(kind.as_str(), name);
            assert_eq!(
                serde_json_name(kind),
                format!("\"{name}\""),
                "serde name of {kind:?}"
            );
            assert_eq!(
                MessageKind::from_content_type(&kind.content_type()),
                Some(kind)
            );
        }
        assert_eq!(MessageKind::from_code(0), None);
        assert_eq!(MessageKind::from_code(9), None);
        assert_eq!(MessageKind::from_code(u8::MAX), None);
        for unknown in [
            "application/vnd.ztmesh.gossip.ballot+cbor",
            "application/vnd.ztmesh.gossip.Vote+cbor",
            "application/vnd.ztmesh.gossip.vote",
            "application/cbor",
        ] {
            assert_eq!(MessageKind::from_content_type(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn the_claimed_kind_is_read_from_the_header_and_garbage_claims_nothing() {
        let body = crate::kinds::GovernanceVote {
            proposal_id: vec![7; 32],
            approve: true,
            token: Vec::new(),
        }
        .encode()
        .unwrap();
        let cose = UnsignedMessage {
            origin: NodeId::from_bytes([1; 20]),
            kind: MessageKind::Vote,
            body,
            created_at: Timestamp::from_unix_secs(1_000),
            expires_at: Timestamp::from_unix_secs(2_000),
            hop_limit: 3,
        }
        .sign(None, |_| [0; 64])
        .unwrap();
        let config = GossipConfig::default();
        assert_eq!(claimed_kind(&cose, &config), Some(MessageKind::Vote));
        assert_eq!(claimed_kind(b"not cose", &config), None);
        assert_eq!(claimed_kind(&cose[..cose.len() / 2], &config), None);
    }

    /// serde's name for a kind, read back through CBOR text (no JSON dependency needed).
    fn serde_json_name(kind: MessageKind) -> String {
        let bytes = cbor::encode(&kind).unwrap();
        let value: ciborium::Value = cbor::decode_exact(&bytes).unwrap();
        format!("\"{}\"", value.as_text().unwrap())
    }
}
