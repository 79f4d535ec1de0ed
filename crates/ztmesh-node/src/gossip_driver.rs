//! Moves bytes between the sans-IO gossip core and the node: frames from links in, frames to
//! links out, delivered messages to their consumers (local applications, the revocation set,
//! the peer table, the bundle router, the membership-log watch), and a timer for anti-entropy.
//!
//! The core sits behind one mutex that is never held across an `.await`: every entry point
//! takes the lock, feeds the core, drains its outputs into a `Drained` value, releases the
//! lock, and only then acts on the outputs.

use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::kinds::{
    AnomalySignature, BundleReceipt, CheckpointNote, PeerExchange, RevocationRecord,
};
use ztmesh_gossip::{
    Gossip, GossipConfig, GossipError, GossipEvent, GossipFrame, MessageId, MessageKind, Refusal,
    Transmit, VerifiedMessage,
};
use ztmesh_pki::Serial;

use crate::events::AnomalyEvent;
use crate::node_membership::NodeMembership;
use crate::timefmt::rfc3339;
use crate::tls::MeshTrust;

struct Inner {
    gossip: Gossip<rand::rngs::StdRng>,
    membership: NodeMembership,
}

/// What the core produced during one call, acted on after the lock is released.
#[derive(Default)]
pub(crate) struct Drained {
    pub transmits: Vec<Transmit>,
    pub delivered: Vec<VerifiedMessage>,
}

/// The node's gossip core and its membership view.
pub(crate) struct GossipDriver {
    inner: Mutex<Inner>,
    /// The core's decoding bounds (fixed at start; governance only changes rates), so a link
    /// can parse a frame once, outside the lock, and hand the parsed form on.
    decoding: GossipConfig,
    /// Poked whenever the core's next timeout may have moved earlier.
    pub wake: tokio::sync::Notify,
}

impl GossipDriver {
    pub(crate) fn new(
        local: NodeId,
        config: GossipConfig,
        trust: Arc<MeshTrust>,
    ) -> Result<Self, ztmesh_pki::PkiError> {
        let membership = NodeMembership::new(trust)?;
        Ok(GossipDriver {
            decoding: config.clone(),
            inner: Mutex::new(Inner {
                gossip: Gossip::new(local, config, rand::rngs::StdRng::from_entropy()),
                membership,
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(inner: &mut Inner) -> Drained {
        let mut out = Drained::default();
        while let Some(t) = inner.gossip.poll_transmit() {
            out.transmits.push(t);
        }
        while let Some(event) = inner.gossip.poll_event() {
            match event {
                GossipEvent::Delivered(message) => out.delivered.push(message),
                GossipEvent::Refused { from, reason } => {
                    tracing::debug!(from = ?from.map(|f| f.to_string()), %reason, "gossip refused");
                }
                _ => {}
            }
        }
        out
    }

    pub(crate) fn link_up(&self, peer: NodeId, now: Timestamp) -> Drained {
        let mut inner = self.lock();
        inner.gossip.handle_link_up(peer, now);
        let out = Self::drain(&mut inner);
        drop(inner);
        self.wake.notify_one();
        out
    }

    pub(crate) fn link_down(&self, peer: &NodeId) {
        self.lock().gossip.handle_link_down(peer);
    }

    /// Parses a gossip frame from a link with the core's bounds, once: the link gates the
    /// parsed form by the neighbour's tier and hands it to [`GossipDriver::handle_decoded_frame`].
    pub(crate) fn decode(&self, frame: &[u8]) -> Result<GossipFrame, Refusal> {
        GossipFrame::decode(frame, &self.decoding)
    }

    /// The core's decoding bounds.
    pub(crate) fn decoding(&self) -> &GossipConfig {
        &self.decoding
    }

    /// A frame of `len` bytes from `from` that [`GossipDriver::decode`] parsed into `decoded`.
    pub(crate) fn handle_decoded_frame(
        &self,
        from: NodeId,
        len: usize,
        decoded: Result<GossipFrame, Refusal>,
        now: Timestamp,
    ) -> (Result<(), GossipError>, Drained) {
        let mut inner = self.lock();
        let Inner { gossip, membership } = &mut *inner;
        let result = gossip.handle_decoded_frame(from, len, decoded, now, membership);
        let out = Self::drain(&mut inner);
        (result, out)
    }

    pub(crate) fn publish(
        &self,
        cose: Vec<u8>,
        now: Timestamp,
    ) -> (Result<MessageId, GossipError>, Drained) {
        let mut inner = self.lock();
        let Inner { gossip, membership } = &mut *inner;
        let result = gossip.publish(cose, now, membership);
        let out = Self::drain(&mut inner);
        drop(inner);
        self.wake.notify_one();
        (result, out)
    }

    pub(crate) fn handle_timeout(&self, now: Timestamp) -> Drained {
        let mut inner = self.lock();
        inner.gossip.handle_timeout(now);
        Self::drain(&mut inner)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Timestamp> {
        self.lock().gossip.poll_timeout()
    }

    /// Sets how many gossip frames a minute each peer may send, from now on.
    pub(crate) fn set_peer_rate(
        &self,
        frames_per_minute: u32,
    ) -> Result<(), ztmesh_gossip::ConfigError> {
        self.lock()
            .gossip
            .set_peer_frames_per_minute(u64::from(frames_per_minute), crate::timefmt::now())
    }

    /// The per-peer frame rate in force, frames a second.
    pub(crate) fn peer_frames_per_sec(&self) -> u32 {
        self.lock().gossip.config().peer_messages_per_sec
    }

    /// Sets the fan-out of messages pushed from now on.
    pub(crate) fn set_fanout(&self, fanout: usize) -> Result<(), ztmesh_gossip::ConfigError> {
        self.lock().gossip.set_fanout(fanout)
    }

    /// The fan-out in force.
    pub(crate) fn fanout(&self) -> usize {
        self.lock().gossip.config().fanout
    }

    /// A CA-signed record revoked these nodes: refuse and purge their messages.
    pub(crate) fn revoke_nodes(&self, nodes: &[NodeId]) {
        let mut inner = self.lock();
        for node in nodes {
            inner.membership.mark_revoked(*node);
            inner.gossip.handle_revoked(*node);
        }
    }

    /// The node whose certificate `serial` is, if a message carrying that certificate was
    /// verified lately (the cache is bounded, so a miss proves nothing).
    pub(crate) fn owner_of_serial(&self, serial: &Serial) -> Option<NodeId> {
        self.lock().membership.owner_of_serial(serial)
    }

    /// Stored, unexpired anomaly signatures, newest first, at most `limit`.
    pub(crate) fn anomalies(&self, limit: usize) -> Vec<AnomalyEvent> {
        let inner = self.lock();
        let mut found: Vec<AnomalyEvent> = inner
            .gossip
            .messages()
            .filter(|m| m.kind == MessageKind::Anomaly)
            .filter_map(anomaly_event)
            .collect();
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        found.truncate(limit);
        found
    }

    /// The kind of a stored message.
    pub(crate) fn message_kind(&self, id: &MessageId) -> Option<MessageKind> {
        self.lock().gossip.message(id).map(|m| m.kind)
    }

    pub(crate) fn stats(&self) -> ztmesh_gossip::GossipStats {
        self.lock().gossip.stats()
    }
}

/// The application view of a verified anomaly message (`None` if its body does not decode,
/// which the core already refuses at receipt).
pub(crate) fn anomaly_event(message: &VerifiedMessage) -> Option<AnomalyEvent> {
    let body = AnomalySignature::decode(&message.body).ok()?;
    Some(AnomalyEvent {
        id: message.id.to_string(),
        origin: message.origin.to_string(),
        created_at: rfc3339(message.created_at),
        expires_at: rfc3339(message.expires_at),
        event_sha256: hex::encode(body.event_sha256),
        indicator: body.indicator,
        risk_score: body.risk_score,
        rule_id: body.rule_id,
        metadata: body.metadata,
    })
}

/// What a delivered message means to the node.
pub(crate) enum Consequence {
    Anomaly(AnomalyEvent),
    Revocation(RevocationRecord),
    PeerAddress {
        node: NodeId,
        addr: String,
    },
    BundleReceipt {
        from: NodeId,
        bundle_id: String,
    },
    Checkpoint(String),
    /// A health report of `from` (uptime accounting).
    Health {
        from: NodeId,
    },
    /// A governance proposal (its id is the gossip message id).
    Proposal {
        id: [u8; 32],
        from: NodeId,
        body: ztmesh_gossip::kinds::GovernanceProposal,
        created_at: Timestamp,
    },
    /// A governance vote.
    Vote {
        from: NodeId,
        body: ztmesh_gossip::kinds::GovernanceVote,
    },
    Nothing,
}

/// Decodes a delivered message into what the node must do with it.
pub(crate) fn consequence(message: &VerifiedMessage) -> Consequence {
    match message.kind {
        MessageKind::Anomaly => anomaly_event(message)
            .map(Consequence::Anomaly)
            .unwrap_or(Consequence::Nothing),
        MessageKind::Revocation => RevocationRecord::decode(&message.body)
            .map(Consequence::Revocation)
            .unwrap_or(Consequence::Nothing),
        MessageKind::PeerExchange => PeerExchange::decode(&message.body)
            .map(|p| Consequence::PeerAddress {
                node: message.origin,
                addr: p.addr,
            })
            .unwrap_or(Consequence::Nothing),
        MessageKind::BundleReceipt => BundleReceipt::decode(&message.body)
            .map(|r| Consequence::BundleReceipt {
                from: message.origin,
                bundle_id: r.bundle_id,
            })
            .unwrap_or(Consequence::Nothing),
        MessageKind::Checkpoint => CheckpointNote::decode(&message.body)
            .map(|note| Consequence::Checkpoint(note.into_string()))
            .unwrap_or(Consequence::Nothing),
        MessageKind::Health => ztmesh_gossip::kinds::Health::decode(&message.body)
            .map(|_| Consequence::Health {
                from: message.origin,
            })
            .unwrap_or(Consequence::Nothing),
        MessageKind::Proposal => ztmesh_gossip::kinds::GovernanceProposal::decode(&message.body)
            .map(|body| Consequence::Proposal {
                id: message.id.0,
                from: message.origin,
                body,
                created_at: message.created_at,
            })
            .unwrap_or(Consequence::Nothing),
        MessageKind::Vote => ztmesh_gossip::kinds::GovernanceVote::decode(&message.body)
            .map(|body| Consequence::Vote {
                from: message.origin,
                body,
            })
            .unwrap_or(Consequence::Nothing),
        _ => Consequence::Nothing,
    }
}

/// The node's gossip settings from its config.
/// The gossip configuration of a node whose governed parameters are `fanout` and
/// `frames_per_minute` (per peer, rounded up to whole frames a second).
pub(crate) fn gossip_config(fanout: u32, frames_per_minute: u32) -> GossipConfig {
    GossipConfig {
        fanout: fanout as usize,
        peer_messages_per_sec: frames_per_minute.div_ceil(60),
        ..GossipConfig::default()
    }
}
