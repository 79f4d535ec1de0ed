//! Who may originate gossip, as a node sees it: [`NodeMembership`], the gossip core's
//! [`Membership`] built from the mesh trust (the CA certificate, the CRL, the node
//! certificates carried in messages).
//!
//! The node's gossip driver feeds every received frame through it, and `ztmesh bench gossip`
//! measures validation with it, so the bench and a running node check origins the same way.
//! It holds no socket, clock or task: time is the message's creation time passed in. Its maps
//! are bounded (`CERT_CACHE`, `MAX_REVOKED_NODES`) because certificates and revoked ids come
//! from peers. It must never accept a revocation record from anyone but the CA, nor an
//! origin on gossip alone without a CA-issued certificate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::{Membership, MessageKind, OriginRefusal};
use ztmesh_pki::{IdentityPublicKey, Serial};

use crate::tls::MeshTrust;

/// Most verified origin certificates remembered; the cache is emptied when full (a miss only
/// costs one certificate verification).
const CERT_CACHE: usize = 4096;

/// Most nodes remembered as revoked by CA-signed records.
const MAX_REVOKED_NODES: usize = 65_536;

#[derive(Debug, Clone)]
struct CachedCertificate {
    node_id: NodeId,
    key: VerifyingKey,
    serial: Serial,
    not_before: Timestamp,
    not_after: Timestamp,
}

/// Who may sign what, as this node sees it: the mesh CA signs revocation records; members
/// (holders of a CA-issued, unrevoked node certificate carried in the message) sign the rest,
/// membership-log checkpoints included: any member may relay one, since what makes a checkpoint
/// count is the log's and the witnesses' signatures inside it, not who relayed it.
pub struct NodeMembership {
    trust: Arc<MeshTrust>,
    ca: IdentityPublicKey,
    ca_origin: NodeId,
    /// Keyed by the certificate bytes themselves: a map lookup costs far less than hashing
    /// every message's certificate with SHA-256, and equal bytes are the same certificate.
    certificates: HashMap<Vec<u8>, CachedCertificate>,
    revoked: HashSet<NodeId>,
}

impl NodeMembership {
    /// Membership as seen through `trust`: its CA signs revocation records, and holders of
    /// certificates it issued sign the rest. Fails if the CA certificate is malformed or its key
    /// is not Ed25519.
    pub fn new(trust: Arc<MeshTrust>) -> Result<Self, ztmesh_pki::PkiError> {
        let ca = ztmesh_pki::ca_envelope_key(trust.ca_cert_der())?;
        Ok(NodeMembership {
            ca_origin: ca.node_id(),
            ca,
            trust,
            certificates: HashMap::new(),
            revoked: HashSet::new(),
        })
    }

    /// A CA-signed revocation record named `node`: its messages are refused from now on.
    /// Bounded by `MAX_REVOKED_NODES`: past it, further nodes are not remembered here.
    pub(crate) fn mark_revoked(&mut self, node: NodeId) {
        if self.revoked.len() < MAX_REVOKED_NODES {
            self.revoked.insert(node);
        }
    }

    /// The node whose certificate `serial` is, if a message carrying that certificate was
    /// verified lately (the cache is bounded, so a miss proves nothing).
    pub(crate) fn owner_of_serial(&self, serial: &Serial) -> Option<NodeId> {
        self.certificates
            .values()
            .find(|cached| &cached.serial == serial)
            .map(|cached| cached.node_id)
    }
}

impl Membership for NodeMembership {
    fn resolve_origin(
        &mut self,
        origin: &NodeId,
        kind: MessageKind,
        certificate: Option<&[u8]>,
        at: Timestamp,
    ) -> Result<VerifyingKey, OriginRefusal> {
        if *origin == self.ca_origin {
            return match kind {
                MessageKind::Revocation => Ok(self.ca.verifying_key()),
                _ => Err(OriginRefusal::KindNotAllowed),
            };
        }
        // Only the CA removes members; a node cannot revoke another.
        if kind == MessageKind::Revocation {
            return Err(OriginRefusal::KindNotAllowed);
        }
        if self.revoked.contains(origin) {
            return Err(OriginRefusal::Revoked);
        }
        let certificate = certificate.ok_or(OriginRefusal::Unknown)?;
        let cached = match self.certificates.get(certificate) {
            Some(cached) => cached.clone(),
            None => {
                let parsed = self
                    .trust
                    .verify_ignoring_revocation(certificate, at)
                    .map_err(|e| OriginRefusal::BadCertificate(e.to_string()))?;
                let cached = CachedCertificate {
                    node_id: parsed.node_id,
                    key: parsed.identity_key.verifying_key(),
                    serial: parsed.serial,
                    not_before: parsed.not_before,
                    not_after: parsed.not_after,
                };
                if self.certificates.len() >= CERT_CACHE {
                    self.certificates.clear();
                }
                self.certificates
                    .insert(certificate.to_vec(), cached.clone());
                cached
            }
        };
        if cached.node_id != *origin {
            return Err(OriginRefusal::BadCertificate(
                "the certificate names another node".into(),
            ));
        }
        if at < cached.not_before || at >= cached.not_after {
            return Err(OriginRefusal::BadCertificate(
                "the certificate was not valid when the message was created".into(),
            ));
        }
        if self.trust.is_revoked(&cached.serial) {
            return Err(OriginRefusal::Revoked);
        }
        Ok(cached.key)
    }
}
