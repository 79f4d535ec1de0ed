//! A deterministic in-memory mesh: N gossip cores on a virtual clock, frames carried between
//! linked nodes with seeded loss and an optional per-frame filter, stepped until idle.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ztmesh_core::{NodeId, Timestamp};

use crate::kinds::{Body, Health};
use crate::{
    cbor, Gossip, GossipConfig, GossipError, GossipEvent, GossipFrame, Membership, MessageId,
    MessageKind, OriginRefusal, UnsignedMessage, VerifiedMessage,
};

/// Virtual start time: a fixed, realistic Unix time.
pub(crate) const START_MS: u64 = 1_700_000_000_000;

/// Frames a single `settle` may carry before the test is declared to loop forever.
const MAX_FRAMES_PER_SETTLE: usize = 2_000_000;

pub(crate) fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(START_MS + offset_ms)
}

/// Deterministic identity key of test node `seed`.
pub(crate) fn signing_key(seed: u64) -> SigningKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[31] = 0x5a;
    SigningKey::from_bytes(&bytes)
}

/// A NodeId derived from the key's SubjectPublicKeyInfo, as for real nodes.
pub(crate) fn node_id_of(key: &VerifyingKey) -> NodeId {
    let spki = key.to_public_key_der().expect("Ed25519 SPKI encodes");
    NodeId::from_spki_der(spki.as_bytes())
}

/// Stand-in for an X.509 certificate in these tests: the raw 32-byte identity key. The real
/// runtime verifies a CA-signed certificate; what matters here is that the core hands the
/// carried bytes to membership.
pub(crate) fn fake_certificate(key: &VerifyingKey) -> Vec<u8> {
    key.to_bytes().to_vec()
}

pub(crate) fn health_body(seq: u64) -> Vec<u8> {
    Health {
        seq,
        uptime_ms: seq * 1000,
        links: 3,
    }
    .encode()
    .expect("valid health body")
}

/// Membership from a map: known keys, one CA NodeId that alone may sign revocations, keys
/// learnt from carried (fake) certificates when allowed.
#[derive(Debug, Default)]
pub(crate) struct MapMembership {
    pub(crate) keys: BTreeMap<NodeId, VerifyingKey>,
    pub(crate) ca: Option<NodeId>,
    pub(crate) revoked: BTreeSet<NodeId>,
    pub(crate) learn_from_certificates: bool,
    /// Calls made, to check what the core asks and when.
    pub(crate) calls: usize,
}

impl MapMembership {
    pub(crate) fn knowing(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        MapMembership {
            keys: keys
                .into_iter()
                .map(|key| (node_id_of(&key), key))
                .collect(),
            ..MapMembership::default()
        }
    }
}

impl Membership for MapMembership {
    fn resolve_origin(
        &mut self,
        origin: &NodeId,
        kind: MessageKind,
        certificate: Option<&[u8]>,
        _at: Timestamp,
    ) -> Result<VerifyingKey, OriginRefusal> {
        self.calls += 1;
        if self.revoked.contains(origin) {
            return Err(OriginRefusal::Revoked);
        }
        let key = match (self.keys.get(origin), certificate) {
            (Some(key), _) => *key,
            (None, Some(der)) if self.learn_from_certificates => {
                let bytes: [u8; 32] = der
                    .try_into()
                    .map_err(|_| OriginRefusal::BadCertificate("length".into()))?;
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| OriginRefusal::BadCertificate(e.to_string()))?;
                if node_id_of(&key) != *origin {
                    return Err(OriginRefusal::BadCertificate("names another node".into()));
                }
                self.keys.insert(*origin, key);
                key
            }
            (None, _) => return Err(OriginRefusal::Unknown),
        };
        // Only the CA signs revocations, and the CA signs nothing else.
        if (kind == MessageKind::Revocation) != (Some(*origin) == self.ca) {
            return Err(OriginRefusal::KindNotAllowed);
        }
        Ok(key)
    }
}

/// One simulated node.
pub(crate) struct TestNode {
    pub(crate) id: NodeId,
    pub(crate) key: SigningKey,
    pub(crate) gossip: Gossip<ChaCha8Rng>,
    pub(crate) delivered: Vec<VerifiedMessage>,
    pub(crate) refused: Vec<(Option<NodeId>, GossipError)>,
    /// Errors returned by `handle_frame`.
    pub(crate) frame_errors: Vec<GossipError>,
}

impl TestNode {
    pub(crate) fn delivered_ids(&self) -> BTreeSet<MessageId> {
        self.delivered.iter().map(|m| m.id).collect()
    }
}

/// A frame as it crossed (or failed to cross) the network.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) frame: GossipFrame,
    pub(crate) carried: bool,
}

/// Decides per frame whether it is carried (`false` = dropped), on top of random loss.
pub(crate) type Filter = Box<dyn FnMut(usize, usize, &GossipFrame) -> bool>;

pub(crate) struct Network {
    pub(crate) nodes: Vec<TestNode>,
    pub(crate) index: BTreeMap<NodeId, usize>,
    pub(crate) membership: MapMembership,
    pub(crate) now: Timestamp,
    pub(crate) loss_per_mille: u32,
    pub(crate) filter: Option<Filter>,
    pub(crate) log: Vec<Sent>,
    links: BTreeSet<(usize, usize)>,
    loss_rng: ChaCha8Rng,
}

impl Network {
    /// `n` nodes (keys 0..n), no links, every key known to membership.
    pub(crate) fn new(n: usize, config: impl Fn(usize) -> GossipConfig, seed: u64) -> Self {
        let nodes: Vec<TestNode> = (0..n)
            .map(|i| {
                let key = signing_key(i as u64);
                let id = node_id_of(&key.verifying_key());
                let rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(i as u64));
                TestNode {
                    id,
                    gossip: Gossip::new(id, config(i), rng),
                    key,
                    delivered: Vec::new(),
                    refused: Vec::new(),
                    frame_errors: Vec::new(),
                }
            })
            .collect();
        let membership = MapMembership::knowing(nodes.iter().map(|n| n.key.verifying_key()));
        Network {
            index: nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect(),
            nodes,
            membership,
            now: at(0),
            loss_per_mille: 0,
            filter: None,
            log: Vec::new(),
            links: BTreeSet::new(),
            loss_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x10557),
        }
    }

    pub(crate) fn link(&mut self, a: usize, b: usize) {
        if a == b || !self.links.insert((a.min(b), a.max(b))) {
            return;
        }
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        self.nodes[a].gossip.handle_link_up(idb, self.now);
        self.nodes[b].gossip.handle_link_up(ida, self.now);
    }

    pub(crate) fn unlink(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        self.nodes[a].gossip.handle_link_down(&idb);
        self.nodes[b].gossip.handle_link_down(&ida);
    }

    pub(crate) fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    /// A ring (i, i+1) plus chords (i, i+chord).
    pub(crate) fn ring_with_chords(&mut self, chord: usize) {
        let n = self.nodes.len();
        for i in 0..n {
            self.link(i, (i + 1) % n);
            self.link(i, (i + chord) % n);
        }
    }

    /// A message from node `i`, created now.
    pub(crate) fn message(
        &self,
        i: usize,
        body: Vec<u8>,
        ttl_ms: u64,
        hop_limit: u8,
    ) -> UnsignedMessage {
        UnsignedMessage {
            origin: self.nodes[i].id,
            kind: MessageKind::Health,
            body,
            created_at: self.now,
            expires_at: Timestamp::from_unix_millis(self.now.as_unix_millis() + ttl_ms),
            hop_limit,
        }
    }

    /// Signs `message` with node `i`'s key, carrying its (fake) certificate.
    pub(crate) fn sign(&self, i: usize, message: &UnsignedMessage) -> Vec<u8> {
        let key = &self.nodes[i].key;
        message
            .sign(Some(fake_certificate(&key.verifying_key())), |tbs| {
                key.sign(tbs).to_bytes()
            })
            .expect("test message signs")
    }

    /// Node `i` publishes a health message; frames are not carried yet.
    pub(crate) fn publish_health(
        &mut self,
        i: usize,
        seq: u64,
        ttl_ms: u64,
        hop_limit: u8,
    ) -> MessageId {
        let cose = self.sign(i, &self.message(i, health_body(seq), ttl_ms, hop_limit));
        self.publish(i, cose).expect("publish")
    }

    pub(crate) fn publish(&mut self, i: usize, cose: Vec<u8>) -> Result<MessageId, GossipError> {
        let result = self.nodes[i]
            .gossip
            .publish(cose, self.now, &mut self.membership);
        self.drain_events();
        result
    }

    fn drain_events(&mut self) {
        for node in &mut self.nodes {
            while let Some(event) = node.gossip.poll_event() {
                match event {
                    GossipEvent::Delivered(message) => node.delivered.push(message),
                    GossipEvent::Refused { from, reason } => node.refused.push((from, reason)),
                }
            }
        }
    }

    /// Carries frames in waves (everything queued, then everything that produced) until no
    /// node has anything left to send.
    pub(crate) fn settle(&mut self) {
        let mut carried = 0;
        loop {
            self.drain_events();
            let mut wave = VecDeque::new();
            for (from, node) in self.nodes.iter_mut().enumerate() {
                while let Some(transmit) = node.gossip.poll_transmit() {
                    wave.push_back((from, transmit));
                }
            }
            if wave.is_empty() {
                return;
            }
            for (from, transmit) in wave {
                carried += 1;
                assert!(carried < MAX_FRAMES_PER_SETTLE, "gossip never settles");
                let to = self.index[&transmit.to];
                // The driver decodes only to log and filter; the receiver decodes for itself.
                let frame: GossipFrame =
                    cbor::decode_exact(&transmit.frame).expect("nodes send well-formed frames");
                let lost = self.loss_rng.gen_range(0..1000) < self.loss_per_mille;
                let allowed = match &mut self.filter {
                    Some(filter) => filter(from, to, &frame),
                    None => true,
                };
                let carry = !lost && allowed && self.linked(from, to);
                self.log.push(Sent {
                    from,
                    to,
                    frame,
                    carried: carry,
                });
                if carry {
                    let sender = self.nodes[from].id;
                    let now = self.now;
                    let node = &mut self.nodes[to];
                    if let Err(error) =
                        node.gossip
                            .handle_frame(sender, &transmit.frame, now, &mut self.membership)
                    {
                        node.frame_errors.push(error);
                    }
                }
            }
        }
    }

    /// Advances the virtual clock by `duration_ms`, firing each node's timeout when due and
    /// settling after each step.
    pub(crate) fn advance(&mut self, duration_ms: u64) {
        let target = Timestamp::from_unix_millis(self.now.as_unix_millis() + duration_ms);
        self.settle();
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|node| node.gossip.poll_timeout())
                .min();
            match next {
                Some(next) if next <= target => {
                    self.now = self.now.max(next);
                    let now = self.now;
                    for node in &mut self.nodes {
                        if node.gossip.poll_timeout().is_some_and(|t| t <= now) {
                            node.gossip.handle_timeout(now);
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = target;
    }

    /// Message frames in the log: (from, to, id, hops_left, carried).
    pub(crate) fn message_frames(
        &self,
    ) -> impl Iterator<Item = (usize, usize, MessageId, u8, bool)> + '_ {
        self.log.iter().filter_map(|sent| match &sent.frame {
            GossipFrame::Message { cose, hops_left } => Some((
                sent.from,
                sent.to,
                MessageId::of(cose),
                *hops_left,
                sent.carried,
            )),
            _ => None,
        })
    }
}

/// A lone core with one linked peer and a membership that knows both: the fixture for tests
/// that feed hand-made frames.
pub(crate) struct Pair {
    pub(crate) gossip: Gossip<ChaCha8Rng>,
    pub(crate) membership: MapMembership,
    pub(crate) local: SigningKey,
    pub(crate) peer: SigningKey,
    pub(crate) peer_id: NodeId,
    pub(crate) now: Timestamp,
}

impl Pair {
    pub(crate) fn new(config: GossipConfig) -> Self {
        let local = signing_key(100);
        let peer = signing_key(101);
        let peer_id = node_id_of(&peer.verifying_key());
        let now = at(0);
        let mut gossip = Gossip::new(
            node_id_of(&local.verifying_key()),
            config,
            ChaCha8Rng::seed_from_u64(7),
        );
        gossip.handle_link_up(peer_id, now);
        // Drop the link-up digest so tests see only what their input causes.
        while gossip.poll_transmit().is_some() {}
        let membership = MapMembership::knowing([local.verifying_key(), peer.verifying_key()]);
        Pair {
            gossip,
            membership,
            local,
            peer,
            peer_id,
            now,
        }
    }

    /// A health message from the peer, created now, signed with `key`.
    pub(crate) fn unsigned(&self, seq: u64) -> UnsignedMessage {
        UnsignedMessage {
            origin: self.peer_id,
            kind: MessageKind::Health,
            body: health_body(seq),
            created_at: self.now,
            expires_at: Timestamp::from_unix_millis(self.now.as_unix_millis() + 60_000),
            hop_limit: 3,
        }
    }

    pub(crate) fn sign_by(key: &SigningKey, message: &UnsignedMessage) -> Vec<u8> {
        message
            .sign(Some(fake_certificate(&key.verifying_key())), |tbs| {
                key.sign(tbs).to_bytes()
            })
            .expect("test message signs")
    }

    pub(crate) fn frame(cose: Vec<u8>, hops_left: u8) -> Vec<u8> {
        GossipFrame::Message { cose, hops_left }
            .encode()
            .expect("frame encodes")
    }

    /// Feeds `cose` as a message frame from the peer.
    pub(crate) fn receive(&mut self, cose: Vec<u8>) -> Result<(), GossipError> {
        self.gossip.handle_frame(
            self.peer_id,
            &Self::frame(cose, 3),
            self.now,
            &mut self.membership,
        )
    }

    pub(crate) fn events(&mut self) -> Vec<GossipEvent> {
        std::iter::from_fn(|| self.gossip.poll_event()).collect()
    }

    pub(crate) fn transmits(&mut self) -> Vec<crate::Transmit> {
        std::iter::from_fn(|| self.gossip.poll_transmit()).collect()
    }
}

/// Decodes a transmitted frame.
pub(crate) fn decode(frame: &[u8]) -> GossipFrame {
    cbor::decode_exact(frame).expect("well-formed frame")
}

/// Body of an unsigned message, for tests that need another kind.
pub(crate) fn body_of(body: Body) -> Vec<u8> {
    body.encode().expect("valid body")
}
