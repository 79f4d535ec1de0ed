//! The crate's one error type. [`GossipError`] says who is at fault (a peer, the local caller);
//! [`Refusal`] says what was wrong with a frame or message, whoever supplied it.

use ztmesh_core::signed::SignedError;
use ztmesh_core::{NodeId, Timestamp};

use crate::kinds::BodyError;
use crate::OriginRefusal;

/// Why the gossip core refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// A frame received from a peer, or a message it relayed, was refused. The peer (or the
    /// origin it relayed) is at fault; see [`Refusal::is_protocol_violation`] to tell broken
    /// peers from merely stale or unauthorized content.
    #[error("refused from peer: {0}")]
    Peer(Refusal),
    /// A message handed to [`crate::Gossip::publish`] or [`crate::UnsignedMessage::sign`] was
    /// refused: the local runtime or application is at fault.
    #[error("refused local message: {0}")]
    Local(Refusal),
    /// [`crate::Gossip::handle_frame`] was called for a peer without a link up (or one refused
    /// at link-up because `max_peers` was reached). A local fault.
    #[error("no gossip link to peer {0}")]
    NotLinked(NodeId),
    /// Too many deliveries wait in the event queue: poll events before feeding more input.
    /// The message was not marked as seen, so anti-entropy brings it back later. A local fault.
    #[error("delivery queue is full; poll events first")]
    Backpressure,
    /// Encoding an outgoing message or frame failed. A local fault.
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl GossipError {
    /// The refusal inside, for the two variants that carry one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            GossipError::Peer(refusal) | GossipError::Local(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// Whether the error is attributed to the remote peer rather than to this node.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, GossipError::Peer(_))
    }
}

/// What was wrong with a frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The frame is over the size cap; nothing was decoded.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Length of the frame.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The frame is not a gossip frame (bad CBOR, unknown type or field, trailing bytes).
    #[error("malformed gossip frame: {0}")]
    MalformedFrame(String),
    /// A digest or want list names more ids than `digest_max_ids`.
    #[error("{count} ids exceed the {max}-id limit")]
    TooManyIds {
        /// Ids in the frame.
        count: usize,
        /// The cap in force.
        max: usize,
    },
    /// The peer is over its message or byte rate; the frame was dropped unread.
    #[error("peer is over its rate limit")]
    RateLimited,
    /// The COSE envelope is over `max_message_len`.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    MessageTooLarge {
        /// Length of the envelope.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The COSE envelope does not parse or has the wrong shape.
    #[error("bad envelope: {0}")]
    Envelope(SignedError),
    /// The envelope's key id is not a 20-byte NodeId.
    #[error("key id is not a node id")]
    BadKeyId,
    /// The envelope's content type names no known message kind (perhaps a newer one).
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    /// The envelope has no protected issued-at time.
    #[error("envelope has no issued-at time")]
    MissingIssuedAt,
    /// The origin is in the revoked set: the message is dropped and never forwarded.
    #[error("origin {0} is revoked")]
    RevokedOrigin(NodeId),
    /// Membership gave no key for the origin and kind.
    #[error("origin {origin}: {reason}")]
    Origin {
        /// The message's origin.
        origin: NodeId,
        /// Why membership refused it.
        reason: OriginRefusal,
    },
    /// The signature does not verify under the origin's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The signed payload is not a gossip payload.
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// The signed payload names another origin than the envelope's key id.
    #[error("payload origin {payload} differs from key id {key_id}")]
    OriginMismatch {
        /// Origin from the key id (whose key verified the signature).
        key_id: NodeId,
        /// Origin claimed in the payload.
        payload: NodeId,
    },
    /// The payload disagrees with a protected header field (`kind` or `created_at`).
    #[error("payload {0} differs from the protected header")]
    HeaderMismatch(&'static str),
    /// The message has expired (`expires_at <= now`).
    #[error("message expired at {expires_at} (now {now})")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
        /// The receiver's clock.
        now: Timestamp,
    },
    /// The message claims to be made further in the future than the allowed clock skew.
    #[error("message created at {created_at}, beyond the allowed skew (now {now})")]
    FromFuture {
        /// Its claimed creation time.
        created_at: Timestamp,
        /// The receiver's clock.
        now: Timestamp,
    },
    /// The message expires before it is created.
    #[error("message expires ({expires_at}) before it is created ({created_at})")]
    InvalidLifetime {
        /// Its claimed creation time.
        created_at: Timestamp,
        /// Its claimed expiry.
        expires_at: Timestamp,
    },
    /// The message lives longer than `max_ttl_ms`.
    #[error("message lifetime of {ttl_ms} ms exceeds the {max_ms} ms limit")]
    TtlTooLong {
        /// `expires_at - created_at`.
        ttl_ms: u64,
        /// The cap in force.
        max_ms: u64,
    },
    /// The body does not fit its kind's schema.
    #[error("bad body: {0}")]
    Body(BodyError),
    /// These exact bytes were refused before for a reason that cannot change (reported then);
    /// they are not checked again.
    #[error("message was refused before")]
    AlreadyRefused,
}

impl Refusal {
    /// Whether an honest, correctly configured peer could never have sent this: malformed
    /// bytes, broken signatures or schemas. Honest peers verify before forwarding, so a runtime
    /// may count these against a link. Stale, unauthorized, revoked or rate-limited content is
    /// not a violation: clocks, revocation state and configuration differ between nodes.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            Refusal::FrameTooLarge { .. }
                | Refusal::MalformedFrame(_)
                | Refusal::Envelope(_)
                | Refusal::BadKeyId
                | Refusal::MissingIssuedAt
                | Refusal::BadSignature
                | Refusal::MalformedPayload(_)
                | Refusal::OriginMismatch { .. }
                | Refusal::HeaderMismatch(_)
                | Refusal::InvalidLifetime { .. }
                | Refusal::Body(_)
        )
    }

    /// Whether the same bytes would be refused again whatever changes later, so their id may
    /// be remembered as refused: an id is a hash of the exact bytes, so no one can make a valid
    /// message share it. Not permanent: an origin unknown or refused by membership for now
    /// (its certificate may arrive, policy may change), a clock-skewed creation time, a rate.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            Refusal::Origin { reason, .. } => *reason == OriginRefusal::Revoked,
            Refusal::FromFuture { .. } | Refusal::RateLimited | Refusal::AlreadyRefused => false,
            _ => true,
        }
    }
}
