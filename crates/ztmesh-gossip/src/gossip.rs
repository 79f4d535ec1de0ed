//! The gossip state machine: epidemic push with fan-out plus push-pull anti-entropy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::RngCore;
use ztmesh_core::{NodeId, Timestamp};

use crate::message::{self, Checked};
use crate::message_store::MessageStore;
use crate::revoked_set::RevokedSet;
use crate::seen_cache::SeenCache;
use crate::token_bucket::TokenBucket;
use crate::{
    GossipConfig, GossipError, GossipFrame, Membership, MessageId, Refusal, VerifiedMessage,
};

/// A frame to send: wrap `frame` in `LinkMessage::Gossip { frame }` on the link to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub to: NodeId,
    /// The gossip frame bytes.
    pub frame: Vec<u8>,
}

/// Something the runtime should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GossipEvent {
    /// A newly accepted message, reported exactly once per id. For a revocation record the
    /// runtime verifies the CRL, updates its revocation state and calls
    /// [`Gossip::handle_revoked`] for each node it revokes.
    Delivered(VerifiedMessage),
    /// A frame or message was refused (the same error was returned by the call that fed it).
    /// Refusals queue up to `event_queue_len`; beyond that the oldest is dropped and counted.
    /// Rate-limited frames are only counted, so a flooding peer cannot push every other refusal
    /// out of the queue.
    Refused {
        /// The peer that sent it; `None` for [`Gossip::publish`].
        from: Option<NodeId>,
        /// Why.
        reason: GossipError,
    },
}

/// Counters since start (monotonic) and current sizes (gauges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStats {
    /// Frames passed to [`Gossip::handle_frame`].
    pub frames_received: u64,
    /// Message frames among them that passed the rate limit and decoded.
    pub received: u64,
    /// Messages passed to [`Gossip::publish`].
    pub published: u64,
    /// Messages accepted and queued for delivery.
    pub delivered: u64,
    /// Messages already seen (by id, or by signature under other unsigned bytes).
    pub duplicates: u64,
    /// Message frames queued as pushes to peers (own and relayed).
    pub forwarded: u64,
    /// Message frames queued in answer to a peer's want list.
    pub served: u64,
    /// Frames and messages refused (each also returned as an error and queued as an event).
    pub refused: u64,
    /// Frames dropped unread because the peer was over its rate.
    pub rate_limited: u64,
    /// Frames dropped because a peer's outbound queue was full.
    pub queue_dropped: u64,
    /// Messages turned away because the delivery queue was full.
    pub backpressure: u64,
    /// Digests queued for peers.
    pub digests_sent: u64,
    /// Digests received.
    pub digests_received: u64,
    /// Want lists queued for peers.
    pub wants_sent: u64,
    /// Want lists received.
    pub wants_received: u64,
    /// Ids asked for in want lists (missed messages pulled by anti-entropy).
    pub pulled: u64,
    /// Stored messages evicted to respect the store bounds.
    pub store_evicted: u64,
    /// Seen-cache entries evicted to respect its capacity.
    pub seen_evicted: u64,
    /// Revoked origins forgotten to respect `max_revoked`.
    pub revoked_evicted: u64,
    /// Stored messages dropped because their origin was revoked.
    pub revoked_purged: u64,
    /// Refusal events dropped because their queue was full.
    pub events_dropped: u64,
    /// Link-ups ignored because `max_peers` was reached or the peer is revoked.
    pub peers_refused: u64,
    /// Gauge: peers with a link up.
    pub peers: usize,
    /// Gauge: messages in the store.
    pub stored: usize,
    /// Gauge: bytes in the store.
    pub stored_bytes: usize,
    /// Gauge: entries in the seen cache.
    pub seen: usize,
    /// Gauge: origins in the revoked set.
    pub revoked: usize,
}

/// A frame waiting for [`Gossip::poll_transmit`]; `origin` lets a revocation purge it.
#[derive(Debug)]
struct Queued {
    frame: Vec<u8>,
    origin: Option<NodeId>,
}

/// What the core keeps per linked peer.
#[derive(Debug)]
struct Peer {
    /// Bounded by `peer_queue_len`: a slow link sheds frames instead of growing memory.
    queue: VecDeque<Queued>,
    /// Whether the peer is in `Gossip::ready`, so it appears there at most once.
    ready: bool,
    /// Frames per second accepted from the peer.
    frames: TokenBucket,
    /// Bytes per second accepted from the peer.
    bytes: TokenBucket,
}

/// The gossip core of one node. Sans-IO: it never reads a clock, draws OS randomness or
/// touches a socket.
///
/// Feed it inputs:
/// - [`Gossip::handle_link_up`] / [`Gossip::handle_link_down`] as mesh links come and go;
/// - [`Gossip::handle_frame`] with each `LinkMessage::Gossip` frame from a peer;
/// - [`Gossip::publish`] with each locally signed (or locally injected) message;
/// - [`Gossip::handle_revoked`] whenever the runtime learns of a revocation;
/// - [`Gossip::handle_timeout`] once the time from [`Gossip::poll_timeout`] has come.
///
/// After each input, drain [`Gossip::poll_transmit`] (send each frame to its peer) and
/// [`Gossip::poll_event`] until both return `None`. Every input takes `now`; randomness (which
/// peers to push to, which peer to reconcile with) comes from the injected `R`, so a seeded
/// RNG and a virtual clock make whole meshes replayable.
#[derive(Debug)]
pub struct Gossip<R: RngCore> {
    local: NodeId,
    config: GossipConfig,
    rng: R,
    /// Latest time seen in any input; what `messages()` and `message()` call "now".
    now: Timestamp,
    peers: BTreeMap<NodeId, Peer>,
    /// Peers with queued frames, served round-robin so one busy link cannot starve the others.
    ready: VecDeque<NodeId>,
    /// Ids of accepted messages.
    seen_ids: SeenCache,
    /// Signature hashes of accepted messages (see `message::Checked::signature_key`).
    seen_signatures: SeenCache,
    /// Ids of messages refused for good (`Refusal::is_permanent`), so that a peer still
    /// advertising one does not make this node pull and check it every round.
    refused_ids: SeenCache,
    store: MessageStore,
    revoked: RevokedSet,
    /// Accepted messages not yet polled; bounded by backpressure, never dropped.
    deliveries: VecDeque<VerifiedMessage>,
    /// Refusals not yet polled; bounded, oldest dropped.
    refusals: VecDeque<(Option<NodeId>, GossipError)>,
    /// When the next anti-entropy round is due; set by the first input.
    next_round: Option<Timestamp>,
    stats: GossipStats,
}

impl<R: RngCore> Gossip<R> {
    /// A core for node `local`. Any `config` is accepted without panicking; run
    /// [`GossipConfig::validate`] where it is loaded.
    pub fn new(local: NodeId, config: GossipConfig, rng: R) -> Self {
        Gossip {
            local,
            seen_ids: SeenCache::new(config.seen_cache_capacity),
            seen_signatures: SeenCache::new(config.seen_cache_capacity),
            refused_ids: SeenCache::new(config.seen_cache_capacity),
            store: MessageStore::new(config.store_capacity, config.store_bytes),
            revoked: RevokedSet::new(config.max_revoked),
            config,
            rng,
            now: Timestamp::EPOCH,
            peers: BTreeMap::new(),
            ready: VecDeque::new(),
            deliveries: VecDeque::new(),
            refusals: VecDeque::new(),
            next_round: None,
            stats: GossipStats::default(),
        }
    }

    /// Changes the fan-out of messages pushed from now on (a governance decision). Refused
    /// above `max_peers`, like at configuration.
    pub fn set_fanout(&mut self, fanout: usize) -> Result<(), crate::ConfigError> {
        let mut config = self.config.clone();
        config.fanout = fanout;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Changes how many frames a minute each peer may send (a governance decision), from `now`
    /// on and for every linked peer. The token buckets count whole frames a second, so the
    /// rate is `frames_per_minute / 60` rounded up. Zero is refused, like at configuration.
    pub fn set_peer_frames_per_minute(
        &mut self,
        frames_per_minute: u64,
        now: Timestamp,
    ) -> Result<(), crate::ConfigError> {
        let per_sec = u32::try_from(frames_per_minute.div_ceil(60)).unwrap_or(u32::MAX);
        let mut config = self.config.clone();
        config.peer_messages_per_sec = per_sec;
        config.validate()?;
        self.config = config;
        for peer in self.peers.values_mut() {
            peer.frames.set_rate(u64::from(per_sec), now);
        }
        Ok(())
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The configuration in force.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// A link to `peer` is up. Starts a digest exchange with it at once, so a node returning
    /// from a partition catches up without waiting for a random pick. Ignored for this node
    /// itself, a peer already linked, a revoked peer, or once `max_peers` peers are linked.
    pub fn handle_link_up(&mut self, peer: NodeId, now: Timestamp) {
        self.touch(now);
        if peer == self.local || self.peers.contains_key(&peer) {
            return;
        }
        if self.peers.len() >= self.config.max_peers || self.revoked.contains(&peer) {
            self.stats.peers_refused += 1;
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                queue: VecDeque::new(),
                ready: false,
                frames: TokenBucket::new(u64::from(self.config.peer_messages_per_sec), now),
                bytes: TokenBucket::new(self.config.peer_bytes_per_sec, now),
            },
        );
        self.send_digest(peer, false, now);
    }

    /// The link to `peer` is down: its queued frames are dropped.
    pub fn handle_link_down(&mut self, peer: &NodeId) {
        if self.peers.remove(peer).is_some() {
            self.ready.retain(|ready| ready != peer);
        }
    }

    /// A message signed locally (or injected by the local runtime, e.g. a CA-signed revocation
    /// record): verified exactly like a received one, delivered as an event, stored, and pushed
    /// to `fanout` random peers. Publishing the same bytes twice returns the same id and
    /// delivers once.
    pub fn publish(
        &mut self,
        cose: Vec<u8>,
        now: Timestamp,
        membership: &mut impl Membership,
    ) -> Result<MessageId, GossipError> {
        self.touch(now);
        self.stats.published += 1;
        self.receive(None, cose, None, now, membership)
    }

    /// Bytes of one `LinkMessage::Gossip { frame }` received from authenticated peer `from`.
    ///
    /// Checks, in order: link state, frame size, the peer's rate, frame shape and bounds; then
    /// for a message: size, dedupe, revoked origin, membership, signature, and only then the
    /// payload (origin = key id, freshness, lifetime, body schema). A duplicate is `Ok` and
    /// counted; a refusal is returned and also queued as [`GossipEvent::Refused`].
    pub fn handle_frame(
        &mut self,
        from: NodeId,
        frame: &[u8],
        now: Timestamp,
        membership: &mut impl Membership,
    ) -> Result<(), GossipError> {
        self.admit_frame(from, frame.len(), now)?;
        let decoded = GossipFrame::decode(frame, &self.config);
        self.dispatch_frame(from, decoded, now, membership)
    }

    /// [`Gossip::handle_frame`] for a frame the runtime already decoded with
    /// [`GossipFrame::decode`] (to gate it by the neighbour's tier first), so it is parsed once:
    /// `len` is the length of the bytes it came from, `decoded` what decoding them gave. The
    /// same checks apply in the same order, the decoding refusal included.
    pub fn handle_decoded_frame(
        &mut self,
        from: NodeId,
        len: usize,
        decoded: Result<GossipFrame, Refusal>,
        now: Timestamp,
        membership: &mut impl Membership,
    ) -> Result<(), GossipError> {
        self.admit_frame(from, len, now)?;
        self.dispatch_frame(from, decoded, now, membership)
    }

    /// The checks before a frame from `from` is looked into: link state, size, the peer's rate.
    fn admit_frame(&mut self, from: NodeId, len: usize, now: Timestamp) -> Result<(), GossipError> {
        self.touch(now);
        self.stats.frames_received += 1;
        let max_frame_len = self.config.max_frame_len();
        let Some(peer) = self.peers.get_mut(&from) else {
            return Err(GossipError::NotLinked(from));
        };
        if len > max_frame_len {
            let refusal = Refusal::FrameTooLarge {
                len,
                max: max_frame_len,
            };
            return self.refuse(Some(from), GossipError::Peer(refusal));
        }
        // Checked before decoding, so a flooding peer costs a length comparison per frame.
        let bytes = len as u64;
        if !(peer.frames.has(1, now) && peer.bytes.has(bytes, now)) {
            self.stats.rate_limited += 1;
            return Err(GossipError::Peer(Refusal::RateLimited));
        }
        peer.frames.take(1);
        peer.bytes.take(bytes);
        Ok(())
    }

    fn dispatch_frame(
        &mut self,
        from: NodeId,
        decoded: Result<GossipFrame, Refusal>,
        now: Timestamp,
        membership: &mut impl Membership,
    ) -> Result<(), GossipError> {
        let frame = match decoded {
            Ok(frame) => frame,
            Err(refusal) => return self.refuse(Some(from), GossipError::Peer(refusal)),
        };
        match frame {
            GossipFrame::Message { cose, hops_left } => {
                self.stats.received += 1;
                self.receive(Some(from), cose, Some(hops_left), now, membership)
                    .map(drop)
            }
            GossipFrame::Digest { ids, reply } => {
                self.handle_digest(from, ids, reply, now);
                Ok(())
            }
            GossipFrame::Want { ids } => {
                self.handle_want(from, ids, now);
                Ok(())
            }
        }
    }

    /// The origin is revoked: drop its stored and queued messages (outbound frames and
    /// undelivered events alike), refuse and never forward its messages from now on (bounded
    /// set, `max_revoked`). A live link to it is dropped too, as the runtime closes such links.
    pub fn handle_revoked(&mut self, origin: NodeId) {
        self.stats.revoked_evicted += self.revoked.insert(origin) as u64;
        self.stats.revoked_purged += self.store.remove_origin(&origin) as u64;
        for peer in self.peers.values_mut() {
            peer.queue.retain(|queued| queued.origin != Some(origin));
        }
        self.deliveries.retain(|message| message.origin != origin);
        self.handle_link_down(&origin);
    }

    /// Runs what is due at `now`: drops expired messages and seen entries, and when the
    /// anti-entropy interval has passed, sends a digest to one random linked peer.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.touch(now);
        self.store.remove_expired(now);
        self.seen_ids.remove_expired(now);
        self.seen_signatures.remove_expired(now);
        self.refused_ids.remove_expired(now);
        let Some(due) = self.next_round else {
            return;
        };
        if now < due {
            return;
        }
        self.next_round = Some(self.round_after(now));
        if self.peers.is_empty() {
            return;
        }
        let index = uniform_below(&mut self.rng, self.peers.len());
        if let Some(&peer) = self.peers.keys().nth(index) {
            self.send_digest(peer, false, now);
        }
    }

    /// When [`Gossip::handle_timeout`] should next run; `None` before the first input.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_round
    }

    /// The next frame to send, peers served round-robin.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(to) = self.ready.pop_front() {
            let Some(peer) = self.peers.get_mut(&to) else {
                continue;
            };
            let Some(queued) = peer.queue.pop_front() else {
                // Emptied by a revocation purge since it was queued.
                peer.ready = false;
                continue;
            };
            if peer.queue.is_empty() {
                peer.ready = false;
            } else {
                self.ready.push_back(to);
            }
            return Some(Transmit {
                to,
                frame: queued.frame,
            });
        }
        None
    }

    /// The next event: deliveries first, then refusals.
    pub fn poll_event(&mut self) -> Option<GossipEvent> {
        if let Some(message) = self.deliveries.pop_front() {
            return Some(GossipEvent::Delivered(message));
        }
        self.refusals
            .pop_front()
            .map(|(from, reason)| GossipEvent::Refused { from, reason })
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> GossipStats {
        GossipStats {
            peers: self.peers.len(),
            stored: self.store.len(),
            stored_bytes: self.store.bytes(),
            seen: self.seen_ids.len(),
            revoked: self.revoked.len(),
            ..self.stats.clone()
        }
    }

    /// A stored message not expired at the latest `now` given to any input.
    pub fn message(&self, id: &MessageId) -> Option<&VerifiedMessage> {
        self.store
            .get(id)
            .filter(|message| message.expires_at > self.now)
    }

    /// Stored messages not expired at the latest `now` given to any input, oldest arrival first.
    pub fn messages(&self) -> impl Iterator<Item = &VerifiedMessage> {
        self.store.iter_unexpired(self.now)
    }

    /// Whether `origin` is in the revoked set.
    pub fn is_revoked(&self, origin: &NodeId) -> bool {
        self.revoked.contains(origin)
    }

    fn touch(&mut self, now: Timestamp) {
        // Keep the latest time: a clock stepping back must not resurrect expired messages.
        self.now = self.now.max(now);
        if self.next_round.is_none() {
            self.next_round = Some(self.round_after(now));
        }
    }

    fn round_after(&self, now: Timestamp) -> Timestamp {
        // An interval of zero would make the runtime spin; one millisecond is the floor.
        Timestamp::from_unix_millis(
            now.as_unix_millis()
                .saturating_add(self.config.anti_entropy_interval_ms.max(1)),
        )
    }

    /// Takes a message from a peer (`from`, with its frame's `hops_left`) or from the local
    /// runtime (`from` and `hops_left` both `None`) through dedupe and every check, then
    /// delivers, stores and pushes it.
    fn receive(
        &mut self,
        from: Option<NodeId>,
        cose: Vec<u8>,
        hops_left: Option<u8>,
        now: Timestamp,
        membership: &mut impl Membership,
    ) -> Result<MessageId, GossipError> {
        let fault = |refusal| match from {
            Some(_) => GossipError::Peer(refusal),
            None => GossipError::Local(refusal),
        };
        if cose.len() > self.config.max_message_len {
            let refusal = Refusal::MessageTooLarge {
                len: cose.len(),
                max: self.config.max_message_len,
            };
            return self.refuse(from, fault(refusal));
        }
        let id = MessageId::of(&cose);
        // Dedupe before any parsing: duplicates are the common case in epidemic gossip.
        if self.seen_ids.contains(&id.0) || self.store.contains(&id) {
            self.stats.duplicates += 1;
            return Ok(id);
        }
        if self.refused_ids.contains(&id.0) {
            return self.refuse(from, fault(Refusal::AlreadyRefused));
        }
        // Finish local work before taking more remote work: not marked as seen, so anti-entropy
        // offers it again once the runtime has drained its events.
        if self.deliveries.len() >= self.config.event_queue_len {
            self.stats.backpressure += 1;
            return Err(GossipError::Backpressure);
        }
        let revoked = &self.revoked;
        let checked = message::check(
            cose,
            id,
            now,
            &self.config,
            |origin| revoked.contains(origin),
            membership,
        );
        let Checked {
            message,
            signature_key,
        } = match checked {
            Ok(checked) => checked,
            Err(refusal) => {
                if refusal.is_permanent() {
                    // Kept as long as any message may live: later copies are then expired.
                    let until = Timestamp::from_unix_millis(
                        now.as_unix_millis()
                            .saturating_add(self.config.max_ttl_ms)
                            .saturating_add(self.config.max_clock_skew_ms),
                    );
                    self.refused_ids.insert(id.0, until);
                }
                return self.refuse(from, fault(refusal));
            }
        };
        let expires_at = message.expires_at;
        if self.seen_signatures.contains(&signature_key) {
            // The same signed content in other unsigned bytes. Remember this id too, so digests
            // that name it stop pulling it.
            self.stats.seen_evicted += self.seen_ids.insert(id.0, expires_at) as u64;
            self.stats.duplicates += 1;
            return Ok(id);
        }
        self.stats.seen_evicted += (self.seen_ids.insert(id.0, expires_at)
            + self.seen_signatures.insert(signature_key, expires_at))
            as u64;
        // The origin's own push carries the full hop limit; a relay forwards with one hop less
        // than it was given (never more than the origin signed), and not at all at zero.
        let forward_hops = match hops_left {
            None => Some(message.hop_limit),
            Some(hops_left) => hops_left.min(message.hop_limit).checked_sub(1),
        };
        if let Some(forward_hops) = forward_hops {
            self.push(&message, from, forward_hops);
        }
        self.stats.store_evicted += self.store.insert(message.clone()) as u64;
        self.deliveries.push_back(message);
        self.stats.delivered += 1;
        Ok(id)
    }

    /// Queues `message` to `fanout` random linked peers, never back to `from` nor to its origin.
    fn push(&mut self, message: &VerifiedMessage, from: Option<NodeId>, hops_left: u8) {
        let candidates: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|&&peer| Some(peer) != from && peer != message.origin)
            .copied()
            .collect();
        let targets = choose(&mut self.rng, candidates, self.config.fanout);
        let frame = GossipFrame::Message {
            cose: message.cose.clone(),
            hops_left,
        };
        // Encoding a byte string and a small integer cannot fail; should it ever, the message
        // still spreads by anti-entropy.
        let Ok(frame) = frame.encode() else {
            return;
        };
        for target in targets {
            if self.enqueue(target, frame.clone(), Some(message.origin)) {
                self.stats.forwarded += 1;
            }
        }
    }

    /// Answers a digest: want what we lack; unless it was itself a reply, offer what the peer
    /// did not list.
    fn handle_digest(&mut self, from: NodeId, ids: Vec<MessageId>, reply: bool, now: Timestamp) {
        self.stats.digests_received += 1;
        let mut listed = BTreeSet::new();
        let mut lacking = Vec::new();
        for id in ids {
            if listed.insert(id)
                && !self.seen_ids.contains(&id.0)
                && !self.store.contains(&id)
                && !self.refused_ids.contains(&id.0)
            {
                lacking.push(id);
            }
        }
        if !lacking.is_empty() {
            self.stats.pulled += lacking.len() as u64;
            if self.enqueue_frame(from, &GossipFrame::Want { ids: lacking }) {
                self.stats.wants_sent += 1;
            }
        }
        if !reply {
            let ours: Vec<MessageId> = self
                .store
                .digest(self.config.digest_max_ids, now)
                .into_iter()
                .filter(|id| !listed.contains(id))
                .collect();
            if !ours.is_empty()
                && self.enqueue_frame(
                    from,
                    &GossipFrame::Digest {
                        ids: ours,
                        reply: true,
                    },
                )
            {
                self.stats.digests_sent += 1;
            }
        }
    }

    /// Sends the stored, unexpired messages a peer asked for. They go out with `hops_left = 0`:
    /// the asker delivers and stores them, and its own anti-entropy carries them on.
    fn handle_want(&mut self, from: NodeId, ids: Vec<MessageId>, now: Timestamp) {
        self.stats.wants_received += 1;
        let mut asked = BTreeSet::new();
        let mut frames = Vec::new();
        for id in ids {
            if !asked.insert(id) {
                continue;
            }
            if let Some(message) = self.store.get(&id).filter(|m| m.expires_at > now) {
                let frame = GossipFrame::Message {
                    cose: message.cose.clone(),
                    hops_left: 0,
                };
                if let Ok(frame) = frame.encode() {
                    frames.push((frame, message.origin));
                }
            }
        }
        for (frame, origin) in frames {
            if self.enqueue(from, frame, Some(origin)) {
                self.stats.served += 1;
            }
        }
    }

    fn send_digest(&mut self, peer: NodeId, reply: bool, now: Timestamp) {
        let ids = self.store.digest(self.config.digest_max_ids, now);
        if self.enqueue_frame(peer, &GossipFrame::Digest { ids, reply }) {
            self.stats.digests_sent += 1;
        }
    }

    fn enqueue_frame(&mut self, to: NodeId, frame: &GossipFrame) -> bool {
        match frame.encode() {
            Ok(bytes) => self.enqueue(to, bytes, None),
            Err(_) => false,
        }
    }

    /// Queues a frame for `to`; false if the peer is gone or its queue is full (counted).
    fn enqueue(&mut self, to: NodeId, frame: Vec<u8>, origin: Option<NodeId>) -> bool {
        let Some(peer) = self.peers.get_mut(&to) else {
            return false;
        };
        if peer.queue.len() >= self.config.peer_queue_len {
            self.stats.queue_dropped += 1;
            return false;
        }
        peer.queue.push_back(Queued { frame, origin });
        if !peer.ready {
            peer.ready = true;
            self.ready.push_back(to);
        }
        true
    }

    /// Counts a refusal, queues it as an event (dropping the oldest when full) and returns it.
    fn refuse<T>(&mut self, from: Option<NodeId>, error: GossipError) -> Result<T, GossipError> {
        self.stats.refused += 1;
        if self.refusals.len() >= self.config.event_queue_len {
            self.refusals.pop_front();
            self.stats.events_dropped += 1;
        }
        if self.config.event_queue_len > 0 {
            self.refusals.push_back((from, error.clone()));
        }
        Err(error)
    }
}

/// A uniform index in `0..n` (`n > 0`), by rejection so that no index is favoured.
fn uniform_below(rng: &mut impl RngCore, n: usize) -> usize {
    let n = n as u64;
    // The largest multiple of n that fits: draws at or above it would bias low indices.
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let draw = rng.next_u64();
        if draw < zone {
            return (draw % n) as usize;
        }
    }
}

/// `k` distinct elements of `candidates` chosen uniformly (partial Fisher-Yates).
fn choose(rng: &mut impl RngCore, mut candidates: Vec<NodeId>, k: usize) -> Vec<NodeId> {
    let k = k.min(candidates.len());
    for i in 0..k {
        let j = i + uniform_below(rng, candidates.len() - i);
        candidates.swap(i, j);
    }
    candidates.truncate(k);
    candidates
}
