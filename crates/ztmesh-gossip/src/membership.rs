//! Who may sign what: the question the gossip core asks the node before it verifies a message.

use ztmesh_core::{NodeId, Timestamp};

use crate::MessageKind;

/// Resolves the key of a message's origin and decides whether that origin may sign its kind.
///
/// The gossip core calls this once per new message, after the envelope is parsed and before the
/// signature is verified; it never decides membership itself. The node runtime implements it
/// with X.509 chain verification against the mesh trust anchors plus its revocation state (and
/// maps the mesh CA's own NodeId to the CA key, which alone may sign revocations). Tests and the
/// simulator implement it with a map.
pub trait Membership {
    /// Resolves the identity key allowed to sign `kind` for `origin`, using the certificate
    /// carried in the message (DER) when the receiver does not know the origin yet; `at` = the
    /// message's created_at (from the envelope's protected issued-at, whole seconds, which the
    /// signature then confirms).
    ///
    /// A certificate is unauthenticated input until chained to a trust anchor, and it is never
    /// enough on its own to admit a node (DESIGN.md §3: admissions are never accepted on gossip
    /// alone); it only lets a receiver several hops away learn a key the CA already vouched for.
    fn resolve_origin(
        &mut self,
        origin: &NodeId,
        kind: MessageKind,
        certificate: Option<&[u8]>,
        at: Timestamp,
    ) -> Result<ed25519_dalek::VerifyingKey, OriginRefusal>;
}

/// Why [`Membership::resolve_origin`] gave no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginRefusal {
    /// The origin is not a known member and carried no usable certificate.
    #[error("unknown origin")]
    Unknown,
    /// The origin is revoked.
    #[error("origin is revoked")]
    Revoked,
    /// The origin may not sign this kind of message (e.g. a revocation not signed by the CA).
    #[error("origin may not sign this kind of message")]
    KindNotAllowed,
    /// The carried certificate does not verify, has expired or names another node.
    #[error("bad origin certificate: {0}")]
    BadCertificate(String),
}
