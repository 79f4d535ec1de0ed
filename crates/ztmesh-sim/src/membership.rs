//! Who may sign what in the simulated mesh: a directory of identity keys standing in for the
//! CA-issued certificates, and each node's own view of it through its revocation state.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::{Membership, MessageKind, OriginRefusal};

/// The NodeId of an identity key, derived as for real nodes: from its SubjectPublicKeyInfo DER.
pub fn node_id_of(key: &VerifyingKey) -> NodeId {
    match key.to_public_key_der() {
        Ok(spki) => NodeId::from_spki_der(spki.as_bytes()),
        // Encoding a 32-byte Ed25519 key into a fixed DER template cannot fail; should the
        // library ever say otherwise, a NodeId over the raw key still names it uniquely.
        Err(_) => NodeId::from_spki_der(key.as_bytes()),
    }
}

/// A deterministic Ed25519 key for `purpose` and `index` under `seed`.
pub(crate) fn derive_key(seed: u64, purpose: &str, index: u64) -> SigningKey {
    let secret: [u8; 32] = Sha256::new()
        .chain_update(b"ztmesh-sim/")
        .chain_update(purpose.as_bytes())
        .chain_update(seed.to_be_bytes())
        .chain_update(index.to_be_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&secret)
}

/// Every member's identity key and the CA's: what enrollment established. Shared by all nodes;
/// what differs between nodes is what they have learnt is revoked.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) keys: BTreeMap<NodeId, VerifyingKey>,
    pub(crate) ca: NodeId,
    pub(crate) ca_key: VerifyingKey,
}

/// One node's answer to "who may sign this", with the rules of the real node's membership:
/// the CA signs revocation records and nothing else, no member signs a revocation, a revoked
/// origin is refused, an unknown one too. No certificate is needed: the directory already knows
/// every member's key, so the carried certificate (none) is ignored.
pub(crate) struct NodeView<'a> {
    pub(crate) directory: &'a Directory,
    pub(crate) revoked: &'a BTreeSet<NodeId>,
}

impl Membership for NodeView<'_> {
    fn resolve_origin(
        &mut self,
        origin: &NodeId,
        kind: MessageKind,
        _certificate: Option<&[u8]>,
        _at: Timestamp,
    ) -> Result<VerifyingKey, OriginRefusal> {
        if *origin == self.directory.ca {
            return match kind {
                MessageKind::Revocation => Ok(self.directory.ca_key),
                _ => Err(OriginRefusal::KindNotAllowed),
            };
        }
        if kind == MessageKind::Revocation {
            return Err(OriginRefusal::KindNotAllowed);
        }
        if self.revoked.contains(origin) {
            return Err(OriginRefusal::Revoked);
        }
        self.directory
            .keys
            .get(origin)
            .copied()
            .ok_or(OriginRefusal::Unknown)
    }
}
