//! The simulator: N nodes running the real gossip and DTN cores, a network between them, and
//! the one virtual clock they all read.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::{BundleId, BundleStore, DtnEvent, Eid, Frame, MemoryStore, Router};
use ztmesh_gossip::kinds::{Body, BundleReceipt, RevocationRecord};
use ztmesh_gossip::{
    Gossip, GossipEvent, GossipFrame, MessageId, MessageKind, UnsignedMessage, VerifiedMessage,
};

use crate::event_queue::{Event, EventQueue, InFlight};
use crate::membership::{derive_key, node_id_of, Directory, NodeView};
use crate::network::{link_key, Network};
use crate::node::{core_rng, Cores, NodeState, SimNode};
use crate::records::MessageRecord;
use crate::report::{BundleSummary, MessageReport};
use crate::{
    BundleRecord, Channel, FrameFate, LinkParams, MessageFrame, NetworkStats, Report, SimConfig,
    SimError, Violation,
};

/// The service bundles are addressed to on their destination node.
pub const BUNDLE_SERVICE: &str = "inbox";

/// The service bundles are sent from on their source node.
pub const SOURCE_SERVICE: &str = "sim";

/// Stands in for the DER of a CA-signed CRL in simulated revocation records: the schema
/// refuses an empty one, and the simulated runtime acts on `revoked_nodes` alone (verifying a
/// real CRL is the PKI's business, tested there).
pub const PLACEHOLDER_CRL: &[u8] = b"ztmesh-sim: no CRL";

/// A deterministic mesh of N nodes, each running a real [`Gossip`] and a real [`Router`] over a
/// [`MemoryStore`], on one virtual clock.
///
/// The simulator plays both the network and each node's runtime: it carries frames between
/// linked nodes (with per-link delay and loss, partitions and crashes), wakes cores when their
/// `poll_timeout` is due, and reacts to their events as the real node does: a delivered
/// revocation record revokes its nodes (in membership and in the gossip core), a DTN
/// `ReceiptNeeded` becomes a signed `BundleReceipt` gossip message, and a delivered receipt is
/// handed to the router. Every input is followed by draining `poll_event` and `poll_transmit`
/// (events first, so a revocation purges queued frames before they leave).
///
/// Drive it with the `add_*`/`set_*` topology calls, [`Simulation::publish`],
/// [`Simulation::send_bundle`], [`Simulation::crash`]/[`Simulation::restart`], and advance it
/// with [`Simulation::step`], [`Simulation::run_for`] or [`Simulation::run_until`]. The same
/// [`SimConfig`] (seed included) and the same calls give the same run, byte for byte: every
/// random draw comes from seeded generators, every collection iterates in a fixed order, and
/// events at the same instant run in the order they were scheduled.
///
/// Invariants are checked as the run goes ([`Violation`]); with
/// [`SimConfig::panic_on_violation`] the first one panics, naming the moment it happened.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    now: Timestamp,
    /// Loss, delays and the topology helpers draw from here; the cores have their own streams.
    rng: ChaCha8Rng,
    directory: Directory,
    ca_key: SigningKey,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    network: Network,
    queue: EventQueue,
    /// Nodes that took an input and must be drained before the next event runs.
    dirty: BTreeSet<usize>,
    messages: BTreeMap<MessageId, MessageRecord>,
    message_order: Vec<MessageId>,
    message_frames: Vec<MessageFrame>,
    bundles: BTreeMap<BundleId, BundleRecord>,
    bundle_order: Vec<BundleId>,
    stats: NetworkStats,
    violations: Vec<Violation>,
    /// Running hash of everything observable that happened, to compare whole runs cheaply.
    trace: Sha256,
    steps: u64,
}

impl Simulation {
    /// A simulation of `config.nodes` running nodes, no links yet, at `config.start`.
    ///
    /// Each node boots at a random instant within one anti-entropy interval before the start,
    /// so their anti-entropy rounds do not all fire in the same millisecond.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let seed = config.seed;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ca_key = derive_key(seed, "ca", 0);
        let ca_key_public = ca_key.verifying_key();
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut index = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for i in 0..config.nodes {
            let key = derive_key(seed, "node", i as u64);
            let id = node_id_of(&key.verifying_key());
            keys.insert(id, key.verifying_key());
            index.insert(id, i);
            let mut gossip = Gossip::new(id, config.gossip.clone(), core_rng(seed, i, 0));
            let interval = config.gossip.anti_entropy_interval_ms.max(1);
            let booted = config
                .start
                .saturating_sub(Duration::from_millis(rng.gen_range(0..interval)));
            // The first input fixes when the first round is due.
            gossip.handle_timeout(booted);
            let router = Router::new(id, config.dtn.clone(), MemoryStore::new())?;
            nodes.push(SimNode {
                id,
                key,
                state: NodeState::Running(Box::new(Cores { gossip, router })),
                incarnation: 0,
                revoked: BTreeSet::new(),
                delivered: BTreeMap::new(),
                bundles_delivered: BTreeMap::new(),
                timer: None,
                woken_at: None,
                gossip_refusals: 0,
                gossip_frame_errors: 0,
                dtn_refusals: 0,
            });
        }
        let directory = Directory {
            keys,
            ca: node_id_of(&ca_key_public),
            ca_key: ca_key_public,
        };
        let mut trace = Sha256::new();
        trace.update(b"ztmesh-sim/trace");
        trace.update(seed.to_be_bytes());
        let mut simulation = Simulation {
            now: config.start,
            network: Network::new(config.nodes),
            config,
            rng,
            directory,
            ca_key,
            nodes,
            index,
            queue: EventQueue::default(),
            dirty: BTreeSet::new(),
            messages: BTreeMap::new(),
            message_order: Vec::new(),
            message_frames: Vec::new(),
            bundles: BTreeMap::new(),
            bundle_order: Vec::new(),
            stats: NetworkStats::default(),
            violations: Vec::new(),
            trace,
            steps: 0,
        };
        for i in 0..simulation.nodes.len() {
            simulation.reschedule(i);
        }
        Ok(simulation)
    }

    // ----- topology -----

    /// Adds a link between `a` and `b` with the default [`SimConfig::link`] parameters. It is
    /// up at once (live if both nodes run and share an island). Adding an existing link
    /// changes nothing.
    pub fn add_link(&mut self, a: usize, b: usize) -> Result<(), SimError> {
        self.add_link_with(a, b, self.config.link)
    }

    /// Adds a link with its own parameters.
    pub fn add_link_with(
        &mut self,
        a: usize,
        b: usize,
        params: LinkParams,
    ) -> Result<(), SimError> {
        self.check_node(a)?;
        self.check_node(b)?;
        if a == b {
            return Err(SimError::SelfLink(a));
        }
        params.validate()?;
        if self.network.add(a, b, params) {
            self.refresh_link(a, b);
            self.settle();
        }
        Ok(())
    }

    /// A ring: every node `i` linked to `i + 1` (and the last to the first), which keeps the
    /// mesh connected whatever else is added.
    pub fn add_ring(&mut self) -> Result<(), SimError> {
        let n = self.nodes.len();
        if n < 2 {
            return Ok(());
        }
        for i in 0..n {
            self.add_link(i, (i + 1) % n)?;
        }
        Ok(())
    }

    /// Each node links to `per_node` other nodes drawn at random (links that exist already are
    /// kept, so the average degree is a little under `2 * per_node` plus the existing links).
    pub fn add_random_links(&mut self, per_node: usize) -> Result<(), SimError> {
        let n = self.nodes.len();
        let mut others: Vec<usize> = Vec::with_capacity(n);
        for i in 0..n {
            others.clear();
            others.extend((0..n).filter(|&j| j != i));
            let (chosen, _) = others.partial_shuffle(&mut self.rng, per_node);
            let chosen = chosen.to_vec();
            for j in chosen {
                self.add_link(i, j)?;
            }
        }
        Ok(())
    }

    /// Plugs a link in or out. The cores at both ends learn it at once (when both run).
    pub fn set_link_up(&mut self, a: usize, b: usize, up: bool) -> Result<(), SimError> {
        let link = self
            .network
            .get_mut(a, b)
            .ok_or(SimError::NoSuchLink(a, b))?;
        link.up = up;
        self.refresh_link(a, b);
        self.settle();
        Ok(())
    }

    /// Changes the delay and loss of one link, for frames sent from now on.
    pub fn set_link_params(
        &mut self,
        a: usize,
        b: usize,
        params: LinkParams,
    ) -> Result<(), SimError> {
        params.validate()?;
        let link = self
            .network
            .get_mut(a, b)
            .ok_or(SimError::NoSuchLink(a, b))?;
        link.params = params;
        Ok(())
    }

    /// Changes the delay and loss of every link, and of links added later.
    pub fn set_all_link_params(&mut self, params: LinkParams) -> Result<(), SimError> {
        params.validate()?;
        self.config.link = params;
        for (a, b) in self.network.keys() {
            if let Some(link) = self.network.get_mut(a, b) {
                link.params = params;
            }
        }
        Ok(())
    }

    /// Splits the mesh: each group becomes an island, and every node not listed forms one
    /// more. Links between islands die (both ends' cores see them go down, as a runtime sees
    /// its connections break) until [`Simulation::heal`].
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<(), SimError> {
        for group in groups {
            for &node in group.iter() {
                self.check_node(node)?;
            }
        }
        self.network.set_islands(groups);
        self.refresh_all_links();
        Ok(())
    }

    /// Ends every partition: links between former islands come back up.
    pub fn heal(&mut self) {
        self.network.set_islands(&[]);
        self.refresh_all_links();
    }

    /// Whether the link between `a` and `b` is live (up, both ends running, same island, not
    /// closed over a revocation).
    pub fn is_live(&self, a: usize, b: usize) -> bool {
        self.network.get(a, b).is_some_and(|link| link.live)
    }

    /// The nodes `node` has a link to, live or not.
    pub fn neighbours(&self, node: usize) -> Vec<usize> {
        if node >= self.nodes.len() {
            return Vec::new();
        }
        self.network.neighbours(node).collect()
    }

    /// Number of links added.
    pub fn link_count(&self) -> usize {
        self.network.len()
    }

    // ----- node lifecycle -----

    /// Crashes `node`: its gossip core and router vanish with everything they held in memory;
    /// its bundle store (durable), identity key and revocation list remain. Its links die, so
    /// frames in flight to or from it are lost.
    pub fn crash(&mut self, node: usize) -> Result<(), SimError> {
        self.check_running(node)?;
        let target = &mut self.nodes[node];
        let state = std::mem::replace(&mut target.state, NodeState::Crashed(MemoryStore::new()));
        if let NodeState::Running(cores) = state {
            // Only the store outlives the process.
            target.state = NodeState::Crashed(cores.router.into_store());
        }
        target.timer = None;
        self.record(b"crash", &[node as u64], &[]);
        self.refresh_node_links(node);
        self.settle();
        Ok(())
    }

    /// Restarts a crashed `node`: a fresh gossip core (told the revocations the node had
    /// persisted) and a router rebuilt from the store it kept. Its links come back up.
    pub fn restart(&mut self, node: usize) -> Result<(), SimError> {
        self.check_node(node)?;
        let seed = self.config.seed;
        let target = &mut self.nodes[node];
        let NodeState::Crashed(store) = &target.state else {
            return Err(SimError::Running(node));
        };
        // A clone, so that a refusal leaves the crashed node's store where it was.
        let router = Router::new(target.id, self.config.dtn.clone(), store.clone())?;
        target.incarnation += 1;
        let mut gossip = Gossip::new(
            target.id,
            self.config.gossip.clone(),
            core_rng(seed, node, target.incarnation),
        );
        for origin in &target.revoked {
            gossip.handle_revoked(*origin);
        }
        target.state = NodeState::Running(Box::new(Cores { gossip, router }));
        target.woken_at = None;
        self.record(b"restart", &[node as u64], &[]);
        self.dirty.insert(node);
        self.refresh_node_links(node);
        self.settle();
        Ok(())
    }

    // ----- driving the cores -----

    /// `node` signs a message of `kind` with its identity key (no certificate: membership is
    /// the simulator's directory) and hands it to its gossip core, which delivers it locally
    /// and pushes it to `fanout` peers.
    pub fn publish(
        &mut self,
        node: usize,
        kind: MessageKind,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<MessageId, SimError> {
        self.check_running(node)?;
        let id = self.publish_signed(node, kind, body, ttl)?;
        self.settle();
        Ok(id)
    }

    /// The mesh CA signs a revocation record naming `revoked` and `via` injects it into its
    /// gossip core (as the node hosting the CA service does). Every node delivering it marks
    /// those nodes revoked, except each revoked node itself: a revoked node is treated as
    /// hostile and carries on.
    pub fn publish_revocation(
        &mut self,
        via: usize,
        revoked: &[usize],
        ttl: Duration,
    ) -> Result<MessageId, SimError> {
        self.check_running(via)?;
        let mut revoked_nodes = Vec::with_capacity(revoked.len());
        for &node in revoked {
            self.check_node(node)?;
            revoked_nodes.push(self.nodes[node].id);
        }
        let body = RevocationRecord {
            crl: PLACEHOLDER_CRL.to_vec(),
            revoked_nodes,
        }
        .encode()?;
        let unsigned = UnsignedMessage {
            origin: self.directory.ca,
            kind: MessageKind::Revocation,
            body,
            created_at: self.now,
            expires_at: self.now.saturating_add(ttl),
            hop_limit: self.config.hop_limit,
        };
        let ca_key = &self.ca_key;
        let cose = unsigned.sign(None, |tbs| ca_key.sign(tbs).to_bytes())?;
        let id = self.inject(via, cose, self.directory.ca, MessageKind::Revocation)?;
        self.settle();
        Ok(id)
    }

    /// `from`'s application hands its router a bundle for `to` (service [`BUNDLE_SERVICE`]),
    /// living `ttl`. On `Ok` it is durable in `from`'s store.
    pub fn send_bundle(
        &mut self,
        from: usize,
        to: usize,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<BundleId, SimError> {
        self.check_running(from)?;
        self.check_node(to)?;
        let destination = Eid::new(self.nodes[to].id, BUNDLE_SERVICE)
            .map_err(|e| SimError::Config(e.to_string()))?;
        let len = payload.len();
        let now = self.now;
        let cores = self.nodes[from]
            .cores_mut()
            .ok_or(SimError::Crashed(from))?;
        let id = cores
            .router
            .accept_local(destination, SOURCE_SERVICE, payload, ttl, now)?;
        if !self.bundles.contains_key(&id) {
            self.bundle_order.push(id);
        }
        self.bundles.entry(id).or_insert_with(|| BundleRecord {
            id,
            from,
            to,
            len,
            accepted_at: now,
            expires_at: id.created_at().saturating_add(ttl),
            deliveries: 0,
            delivered_at: None,
            expired_on: BTreeSet::new(),
        });
        self.record(b"accept", &[from as u64, to as u64, len as u64], &[]);
        self.dirty.insert(from);
        self.settle();
        Ok(id)
    }

    // ----- running -----

    /// Runs the next event (a frame arriving or a node waking up), moving the clock to it, and
    /// drains every node that took an input. Returns the new time, or `None` when nothing is
    /// scheduled at all.
    pub fn step(&mut self) -> Option<Timestamp> {
        let (at, event) = self.queue.pop()?;
        self.now = self.now.max(at);
        self.steps += 1;
        match event {
            Event::Frame(flight) => self.arrive(*flight),
            Event::Timer { node } => self.wake(node),
        }
        self.settle();
        Some(self.now)
    }

    /// Runs every event scheduled within `duration` from now, then sets the clock to its end.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now.saturating_add(duration);
        while self.queue.next_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Steps until `done` holds (checked before the first step and after each one) or `limit`
    /// of virtual time has passed. Returns the virtual time it took; on the deadline the clock
    /// stands at its end and [`SimError::Deadline`] is returned.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&Simulation) -> bool,
        limit: Duration,
    ) -> Result<Duration, SimError> {
        let started = self.now;
        let deadline = self.now.saturating_add(limit);
        loop {
            if done(self) {
                return Ok(self.now.duration_since(started));
            }
            match self.queue.next_time() {
                Some(next) if next <= deadline => self.step(),
                _ => break,
            };
        }
        self.now = self.now.max(deadline);
        if done(self) {
            return Ok(self.now.duration_since(started));
        }
        Err(SimError::Deadline {
            waited_ms: self.now.duration_since(started).as_millis() as u64,
        })
    }

    // ----- observing -----

    /// The virtual clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.config.start)
    }

    /// The configuration (with any link parameters changed since).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The NodeId of `node`.
    pub fn node_id(&self, node: usize) -> Option<NodeId> {
        self.nodes.get(node).map(|n| n.id)
    }

    /// The index of the node with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The NodeId under which the mesh CA signs revocation records.
    pub fn ca_id(&self) -> NodeId {
        self.directory.ca
    }

    /// Whether `node` runs (is not crashed).
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(SimNode::is_running)
    }

    /// The gossip core of a running node, to inspect.
    pub fn gossip(&self, node: usize) -> Option<&Gossip<ChaCha8Rng>> {
        self.nodes.get(node)?.cores().map(|cores| &cores.gossip)
    }

    /// The router of a running node, to inspect.
    pub fn router(&self, node: usize) -> Option<&Router<MemoryStore>> {
        self.nodes.get(node)?.cores().map(|cores| &cores.router)
    }

    /// The durable bundle store of a node, running or crashed.
    pub fn store(&self, node: usize) -> Option<&MemoryStore> {
        self.nodes.get(node).map(SimNode::store)
    }

    /// Whether `node`'s store holds any piece of bundle `id` for forwarding or reassembly.
    pub fn holds_bundle(&self, node: usize, id: &BundleId) -> bool {
        self.store(node)
            .and_then(|store| store.list_held().ok())
            .is_some_and(|held| held.iter().any(|piece| piece.key.id == *id))
    }

    /// Whether `node` has learnt that `origin` is revoked.
    pub fn knows_revoked(&self, node: usize, origin: &NodeId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.revoked.contains(origin))
    }

    /// How many distinct nodes have delivered message `id` (in any incarnation).
    pub fn coverage(&self, id: &MessageId) -> usize {
        self.messages
            .get(id)
            .map_or(0, |record| record.first_delivery.len())
    }

    /// Whether every node has delivered message `id`.
    pub fn is_fully_covered(&self, id: &MessageId) -> bool {
        self.coverage(id) == self.nodes.len()
    }

    /// When `node` first delivered message `id`.
    pub fn delivered_at(&self, node: usize, id: &MessageId) -> Option<Timestamp> {
        self.messages.get(id)?.first_delivery.get(&node).copied()
    }

    /// Every gossip frame that carried a message, in sending order. Kept for the whole run (a
    /// few dozen bytes a frame), as tests need the history to assert on.
    pub fn message_frames(&self) -> &[MessageFrame] {
        &self.message_frames
    }

    /// The record of an accepted bundle.
    pub fn bundle(&self, id: &BundleId) -> Option<&BundleRecord> {
        self.bundles.get(id)
    }

    /// Every accepted bundle, in acceptance order.
    pub fn bundles(&self) -> impl Iterator<Item = &BundleRecord> {
        self.bundle_order
            .iter()
            .filter_map(|id| self.bundles.get(id))
    }

    /// Gossip refusal events `node` reported, over all incarnations.
    pub fn gossip_refusals(&self, node: usize) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.gossip_refusals)
    }

    /// Gossip frames `node`'s core answered with an error (refusals, and frames from peers it
    /// no longer counts as linked), over all incarnations.
    pub fn gossip_frame_errors(&self, node: usize) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.gossip_frame_errors)
    }

    /// DTN refusal events `node` reported (bundles not taken: store full, expired, ...), over
    /// all incarnations.
    pub fn dtn_refusals(&self, node: usize) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.dtn_refusals)
    }

    /// Broken invariants recorded so far (always empty when they panic).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Frame counters since the start.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    /// Events run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// SHA-256 over everything observable so far (frames with their bytes and fates,
    /// deliveries, link changes, crashes): equal digests mean equal runs.
    pub fn trace_digest(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    /// Coverage, rounds, duplicate ratios and traffic so far.
    pub fn report(&self) -> Report {
        let n = self.nodes.len();
        let interval = self.config.gossip.anti_entropy_interval_ms.max(1);
        let messages = self
            .message_order
            .iter()
            .filter_map(|id| self.messages.get(id).map(|record| (id, record)))
            .map(|(id, record)| {
                let coverage_ms = record
                    .full_at
                    .map(|t| t.duration_since(record.published_at).as_millis() as u64);
                MessageReport {
                    id: *id,
                    origin: record.origin,
                    kind: record.kind,
                    publisher: record.publisher,
                    published_at_ms: record
                        .published_at
                        .duration_since(self.config.start)
                        .as_millis() as u64,
                    size: record.size,
                    reached: record.first_delivery.len(),
                    coverage_ms,
                    rounds: coverage_ms.map(|ms| ms.div_ceil(interval)),
                    frames_sent: record.frames_sent,
                    frames_delivered: record.frames_delivered,
                    duplicate_ratio: record.frames_sent as f64 / n.saturating_sub(1).max(1) as f64,
                    bytes_sent: record.bytes_sent,
                }
            })
            .collect();
        let mut bundles = BundleSummary::default();
        for record in self.bundles() {
            bundles.accepted += 1;
            match record.deliveries {
                0 if self.now >= record.expires_at => bundles.expired += 1,
                0 => bundles.pending += 1,
                1 => bundles.delivered += 1,
                _ => bundles.duplicated += 1,
            }
        }
        Report {
            seed: self.config.seed,
            nodes: n,
            links: self.network.len(),
            elapsed_ms: self.elapsed().as_millis() as u64,
            anti_entropy_interval_ms: interval,
            messages,
            network: self.stats.clone(),
            bundles,
            violations: self.violations.len(),
        }
    }

    // ----- the runtime each node would have -----

    /// Signs with `node`'s key and publishes through its gossip core; drained later.
    fn publish_signed(
        &mut self,
        node: usize,
        kind: MessageKind,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<MessageId, SimError> {
        let signer = &self.nodes[node];
        let unsigned = UnsignedMessage {
            origin: signer.id,
            kind,
            body,
            created_at: self.now,
            expires_at: self.now.saturating_add(ttl),
            hop_limit: self.config.hop_limit,
        };
        let cose = unsigned.sign(None, |tbs| signer.key.sign(tbs).to_bytes())?;
        self.inject(node, cose, signer.id, kind)
    }

    /// Hands signed bytes to `via`'s gossip core and starts recording the message.
    fn inject(
        &mut self,
        via: usize,
        cose: Vec<u8>,
        origin: NodeId,
        kind: MessageKind,
    ) -> Result<MessageId, SimError> {
        let size = cose.len();
        let now = self.now;
        let SimNode { state, revoked, .. } = &mut self.nodes[via];
        let NodeState::Running(cores) = state else {
            return Err(SimError::Crashed(via));
        };
        let mut membership = NodeView {
            directory: &self.directory,
            revoked,
        };
        let id = cores.gossip.publish(cose, now, &mut membership)?;
        if !self.messages.contains_key(&id) {
            self.message_order.push(id);
            self.messages.insert(
                id,
                MessageRecord {
                    origin,
                    kind,
                    published_at: now,
                    publisher: via,
                    size,
                    first_delivery: BTreeMap::new(),
                    full_at: None,
                    frames_sent: 0,
                    frames_delivered: 0,
                    bytes_sent: 0,
                },
            );
        }
        self.dirty.insert(via);
        Ok(id)
    }

    /// Drains every node that took an input, until none has anything left; draining one node
    /// may give others input (a revocation closing links), which is why this is a work list.
    fn settle(&mut self) {
        while let Some(node) = self.dirty.pop_first() {
            self.drain(node);
            self.reschedule(node);
        }
    }

    /// Reacts to `node`'s events, then sends its frames, until both queues stay empty.
    fn drain(&mut self, node: usize) {
        loop {
            let Some(cores) = self.nodes[node].cores_mut() else {
                return;
            };
            let gossip_events: Vec<GossipEvent> =
                std::iter::from_fn(|| cores.gossip.poll_event()).collect();
            let dtn_events: Vec<DtnEvent> =
                std::iter::from_fn(|| cores.router.poll_event()).collect();
            let reacted = !(gossip_events.is_empty() && dtn_events.is_empty());
            for event in gossip_events {
                self.on_gossip_event(node, event);
            }
            for event in dtn_events {
                self.on_dtn_event(node, event);
            }
            let Some(cores) = self.nodes[node].cores_mut() else {
                return;
            };
            let gossip_out: Vec<_> = std::iter::from_fn(|| cores.gossip.poll_transmit()).collect();
            let dtn_out: Vec<_> = std::iter::from_fn(|| cores.router.poll_transmit()).collect();
            if !reacted && gossip_out.is_empty() && dtn_out.is_empty() {
                return;
            }
            for transmit in gossip_out {
                self.send(node, transmit.to, Channel::Gossip, transmit.frame);
            }
            for transmit in dtn_out {
                self.send(node, transmit.to, Channel::Bundle, transmit.frame);
            }
        }
    }

    fn on_gossip_event(&mut self, node: usize, event: GossipEvent) {
        match event {
            GossipEvent::Delivered(message) => self.on_delivered(node, message),
            GossipEvent::Refused { .. } => self.nodes[node].gossip_refusals += 1,
            _ => {}
        }
    }

    /// What the node runtime does with a delivered message, plus the simulator's bookkeeping.
    fn on_delivered(&mut self, node: usize, message: VerifiedMessage) {
        let now = self.now;
        if self.nodes[node].revoked.contains(&message.origin) {
            self.violate(Violation::DeliveredFromRevoked {
                node,
                id: message.id,
                origin: message.origin,
            });
        }
        let target = &mut self.nodes[node];
        let incarnation = target.incarnation;
        if target.delivered.insert(message.id, incarnation) == Some(incarnation) {
            self.violate(Violation::DuplicateGossipDelivery {
                node,
                id: message.id,
                at: now,
            });
        }
        let everyone = self.nodes.len();
        if let Some(record) = self.messages.get_mut(&message.id) {
            record.first_delivery.entry(node).or_insert(now);
            if record.full_at.is_none() && record.first_delivery.len() == everyone {
                record.full_at = Some(now);
            }
        }
        self.record(b"delivered", &[node as u64], &message.id.0);
        match message.decode_body() {
            Ok(Body::Revocation(record)) if message.origin == self.directory.ca => {
                for origin in record.revoked_nodes {
                    self.apply_revocation(node, origin);
                }
            }
            Ok(Body::BundleReceipt(receipt)) => {
                // A malformed id names no bundle this node could hold: nothing to free.
                let Ok(bundle) = BundleId::from_str(&receipt.bundle_id) else {
                    return;
                };
                let Some(cores) = self.nodes[node].cores_mut() else {
                    return;
                };
                // The router frees copies only when the signer is the bundle's destination.
                if let Err(error) = cores.router.handle_receipt(message.origin, &bundle, now) {
                    self.violate(Violation::CoreFailed {
                        node,
                        input: "handle_receipt",
                        error: error.to_string(),
                    });
                }
            }
            _ => {}
        }
    }

    /// `node` learns `origin` is revoked: membership refuses it from now on, the gossip core
    /// purges and refuses its messages, and (when configured) the link to it closes.
    fn apply_revocation(&mut self, node: usize, origin: NodeId) {
        let target = &mut self.nodes[node];
        // A revoked node is assumed hostile: it does not stop itself.
        if origin == target.id || !target.revoked.insert(origin) {
            return;
        }
        if let Some(cores) = target.cores_mut() {
            cores.gossip.handle_revoked(origin);
        }
        self.dirty.insert(node);
        if self.config.close_links_to_revoked {
            if let Some(&peer) = self.index.get(&origin) {
                self.refresh_link(node, peer);
            }
        }
    }

    fn on_dtn_event(&mut self, node: usize, event: DtnEvent) {
        let now = self.now;
        match event {
            DtnEvent::Delivered {
                id, destination, ..
            } => {
                self.record(
                    b"bundle-delivered",
                    &[node as u64],
                    id.to_string().as_bytes(),
                );
                if destination.node() != self.nodes[node].id {
                    self.violate(Violation::MisdeliveredBundle { node, id });
                }
                if self.nodes[node].bundles_delivered.insert(id, now).is_some() {
                    self.violate(Violation::DuplicateBundleDelivery { node, id, at: now });
                }
                if let Some(record) = self.bundles.get_mut(&id) {
                    record.deliveries += 1;
                    record.delivered_at.get_or_insert(now);
                }
            }
            DtnEvent::ReceiptNeeded { id } => {
                let body = BundleReceipt {
                    bundle_id: id.to_string(),
                }
                .encode();
                let ttl = self.config.receipt_ttl;
                let published = match body {
                    Ok(body) => self
                        .publish_signed(node, MessageKind::BundleReceipt, body, ttl)
                        .map(drop),
                    Err(error) => Err(SimError::Body(error)),
                };
                if let Err(error) = published {
                    self.violate(Violation::CoreFailed {
                        node,
                        input: "publish receipt",
                        error: error.to_string(),
                    });
                }
            }
            DtnEvent::Expired { id } => {
                self.record(b"bundle-expired", &[node as u64], id.to_string().as_bytes());
                if let Some(record) = self.bundles.get_mut(&id) {
                    record.expired_on.insert(node);
                }
            }
            DtnEvent::Refused { .. } => self.nodes[node].dtn_refusals += 1,
            _ => {}
        }
    }

    // ----- the network -----

    /// Puts a frame from `from` on the wire to `to`: accounted, then lost, refused for want of
    /// a live link, or scheduled to arrive after the link's delay (never before an earlier
    /// frame in the same direction).
    fn send(&mut self, from: usize, to: NodeId, channel: Channel, bytes: Vec<u8>) {
        let Some(&peer) = self.index.get(&to) else {
            self.violate(Violation::UnknownPeer { node: from, to });
            return;
        };
        let log = match channel {
            Channel::Gossip => self.account_gossip(from, peer, &bytes),
            Channel::Bundle => {
                match Frame::decode(&bytes, &self.config.dtn.limits) {
                    Ok(Frame::Bundle { .. }) => self.stats.bundles += 1,
                    Ok(Frame::Ack { .. }) => self.stats.acks += 1,
                    Err(_) => {}
                }
                None
            }
        };
        let channel_stats = self.stats.channel(channel);
        channel_stats.sent += 1;
        channel_stats.bytes += bytes.len() as u64;
        let now = self.now;
        // Where the frame goes: `Ok((arrival, epoch))` on its way, `Err(fate)` gone already.
        let plan = match self.network.get_mut(from, peer) {
            Some(link) if link.live => {
                if self.rng.gen_bool(link.params.loss) {
                    Err(FrameFate::Lost)
                } else {
                    let min = link.params.min_delay.as_millis() as u64;
                    let max = link.params.max_delay.as_millis() as u64;
                    let delay = self.rng.gen_range(min..=max);
                    let direction = usize::from(from > peer);
                    let arrival = now
                        .saturating_add(Duration::from_millis(delay))
                        .max(link.busy_until[direction]);
                    link.busy_until[direction] = arrival;
                    Ok((arrival, link.epoch))
                }
            }
            _ => Err(FrameFate::NoLink),
        };
        let fate = plan.err().unwrap_or(FrameFate::InFlight);
        self.record(
            b"send",
            &[from as u64, peer as u64, channel as u64, fate as u64],
            &bytes,
        );
        match plan {
            Ok((arrival, epoch)) => self.queue.push(
                arrival,
                Event::Frame(Box::new(InFlight {
                    from,
                    to: peer,
                    channel,
                    bytes,
                    epoch,
                    log,
                })),
            ),
            Err(fate) => self.settle_fate(channel, log, fate),
        }
    }

    /// Decodes a gossip frame for the counters; for a message frame, logs it and checks that
    /// the sender does not know its origin is revoked.
    fn account_gossip(&mut self, from: usize, to: usize, bytes: &[u8]) -> Option<usize> {
        let frame = GossipFrame::decode(bytes, &self.config.gossip).ok()?;
        let (cose, hops_left) = match frame {
            GossipFrame::Message { cose, hops_left } => (cose, hops_left),
            GossipFrame::Digest { .. } => {
                self.stats.gossip_digests += 1;
                return None;
            }
            GossipFrame::Want { .. } => {
                self.stats.gossip_wants += 1;
                return None;
            }
            _ => return None,
        };
        self.stats.gossip_messages += 1;
        let id = MessageId::of(&cose);
        if let Some(record) = self.messages.get_mut(&id) {
            record.frames_sent += 1;
            record.bytes_sent += bytes.len() as u64;
            let origin = record.origin;
            if self.nodes[from].revoked.contains(&origin) {
                self.violate(Violation::ForwardedFromRevoked {
                    node: from,
                    to,
                    id,
                    origin,
                });
            }
        }
        self.message_frames.push(MessageFrame {
            sent_at: self.now,
            from,
            to,
            id,
            hops_left,
            fate: FrameFate::InFlight,
        });
        Some(self.message_frames.len() - 1)
    }

    /// Records the final fate of a frame.
    fn settle_fate(&mut self, channel: Channel, log: Option<usize>, fate: FrameFate) {
        self.stats.channel(channel).count(fate);
        if let Some(entry) = log.and_then(|i| self.message_frames.get_mut(i)) {
            entry.fate = fate;
            if fate == FrameFate::Delivered {
                if let Some(record) = self.messages.get_mut(&entry.id) {
                    record.frames_delivered += 1;
                }
            }
        }
    }

    /// A frame reaches its addressee, if its link survived the trip.
    fn arrive(&mut self, flight: InFlight) {
        let InFlight {
            from,
            to,
            channel,
            bytes,
            epoch,
            log,
        } = flight;
        let survived = self
            .network
            .get(from, to)
            .is_some_and(|link| link.live && link.epoch == epoch);
        if !survived {
            self.record(b"cut", &[from as u64, to as u64, channel as u64], &[]);
            self.settle_fate(channel, log, FrameFate::Cut);
            return;
        }
        let now = self.now;
        let sender = self.nodes[from].id;
        let SimNode {
            state,
            revoked,
            gossip_frame_errors,
            ..
        } = &mut self.nodes[to];
        // A live link has both ends running.
        let NodeState::Running(cores) = state else {
            self.settle_fate(channel, log, FrameFate::Cut);
            return;
        };
        match channel {
            Channel::Gossip => {
                let mut membership = NodeView {
                    directory: &self.directory,
                    revoked,
                };
                if cores
                    .gossip
                    .handle_frame(sender, &bytes, now, &mut membership)
                    .is_err()
                {
                    *gossip_frame_errors += 1;
                }
            }
            Channel::Bundle => {
                if let Err(error) = cores.router.handle_frame(sender, &bytes, now) {
                    self.violate(Violation::CoreFailed {
                        node: to,
                        input: "bundle frame",
                        error: error.to_string(),
                    });
                }
            }
        }
        self.settle_fate(channel, log, FrameFate::Delivered);
        self.dirty.insert(to);
    }

    /// Brings the link's liveness in line with its state and tells both ends' cores about a
    /// change, as a runtime does when a connection opens or breaks.
    fn refresh_link(&mut self, a: usize, b: usize) {
        let Some(link) = self.network.get(a, b) else {
            return;
        };
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        let closed_over_revocation = self.config.close_links_to_revoked
            && (self.nodes[a].revoked.contains(&idb) || self.nodes[b].revoked.contains(&ida));
        let live = link.up
            && self.network.same_island(a, b)
            && self.nodes[a].is_running()
            && self.nodes[b].is_running()
            && !closed_over_revocation;
        if live == link.live {
            return;
        }
        if let Some(link) = self.network.get_mut(a, b) {
            link.live = live;
            if !live {
                link.epoch += 1;
                link.busy_until = [Timestamp::EPOCH; 2];
            }
        }
        let (low, high) = link_key(a, b);
        self.record(b"link", &[low as u64, high as u64, u64::from(live)], &[]);
        let now = self.now;
        for (node, peer) in [(a, idb), (b, ida)] {
            if let Some(cores) = self.nodes[node].cores_mut() {
                if live {
                    cores.gossip.handle_link_up(peer, now);
                    cores.router.handle_link_up(peer, now);
                } else {
                    cores.gossip.handle_link_down(&peer);
                    cores.router.handle_link_down(&peer);
                }
                self.dirty.insert(node);
            }
        }
    }

    fn refresh_node_links(&mut self, node: usize) {
        let peers: Vec<usize> = self.network.neighbours(node).collect();
        for peer in peers {
            self.refresh_link(node, peer);
        }
    }

    fn refresh_all_links(&mut self) {
        for (a, b) in self.network.keys() {
            self.refresh_link(a, b);
        }
        self.settle();
    }

    // ----- timers -----

    /// A node's wake-up: runs whichever core's timeout is due.
    fn wake(&mut self, node: usize) {
        let now = self.now;
        let target = &mut self.nodes[node];
        if target.timer != Some(now) {
            return;
        }
        target.timer = None;
        target.woken_at = Some(now);
        let Some(cores) = target.cores_mut() else {
            return;
        };
        if cores.gossip.poll_timeout().is_some_and(|t| t <= now) {
            cores.gossip.handle_timeout(now);
        }
        let mut failure = None;
        if cores.router.poll_timeout().is_some_and(|t| t <= now) {
            failure = cores.router.handle_timeout(now).err();
        }
        let again = next_wake(cores);
        if let Some(error) = failure {
            self.violate(Violation::CoreFailed {
                node,
                input: "handle_timeout",
                error: error.to_string(),
            });
        }
        if again.is_some_and(|t| t <= now) {
            self.violate(Violation::TimerStuck { node, at: now });
        }
        self.dirty.insert(node);
    }

    /// Schedules the node's next wake-up if it changed. A time already past means "now"; but
    /// a node woken at this very instant waits a millisecond, so that a core asking for the
    /// same instant again cannot stall the clock.
    fn reschedule(&mut self, node: usize) {
        let now = self.now;
        let target = &mut self.nodes[node];
        let wanted = target.cores().and_then(next_wake).map(|t| {
            let floor = if target.woken_at == Some(now) {
                now.saturating_add(Duration::from_millis(1))
            } else {
                now
            };
            t.max(floor)
        });
        if wanted == target.timer {
            return;
        }
        target.timer = wanted;
        if let Some(at) = wanted {
            self.queue.push(at, Event::Timer { node });
        }
    }

    // ----- helpers -----

    fn check_node(&self, node: usize) -> Result<(), SimError> {
        if node < self.nodes.len() {
            Ok(())
        } else {
            Err(SimError::NoSuchNode(node))
        }
    }

    fn check_running(&self, node: usize) -> Result<(), SimError> {
        self.check_node(node)?;
        if self.nodes[node].is_running() {
            Ok(())
        } else {
            Err(SimError::Crashed(node))
        }
    }

    fn violate(&mut self, violation: Violation) {
        if self.config.panic_on_violation {
            panic!(
                "simulation seed {} at {} (+{} ms): {violation}",
                self.config.seed,
                self.now,
                self.elapsed().as_millis()
            );
        }
        self.violations.push(violation);
    }

    /// Adds one observable happening to the trace digest.
    fn record(&mut self, tag: &[u8], numbers: &[u64], bytes: &[u8]) {
        self.trace.update((tag.len() as u64).to_be_bytes());
        self.trace.update(tag);
        self.trace.update(self.now.as_unix_millis().to_be_bytes());
        for number in numbers {
            self.trace.update(number.to_be_bytes());
        }
        self.trace.update((bytes.len() as u64).to_be_bytes());
        self.trace.update(bytes);
    }
}

/// The earlier of the two cores' wake-up times.
fn next_wake(cores: &Cores) -> Option<Timestamp> {
    [cores.gossip.poll_timeout(), cores.router.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
}
