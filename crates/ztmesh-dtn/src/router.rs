//! Store-and-forward: what to keep, whom to send it to, when to retry, what to deliver and
//! what to forget. Sans-IO: the [`Router`] never touches a socket or a clock and never draws
//! randomness; `now` comes in with every input and frames come out of
//! [`Router::poll_transmit`].
//!
//! Routing is direct when the destination's link is up and epidemic otherwise: every link-up
//! peer that has not acknowledged a piece (and did not send it here) gets a copy, so a relay
//! that later meets the destination can hand it over. Responsibility moves hop by hop with
//! [`Frame::Ack`]s, which a receiver only sends once the piece is durable in its store.
//! Copies are dropped when the destination itself acknowledges them, when a signed delivery
//! receipt arrives ([`Router::handle_receipt`]), or when the bundle's lifetime ends.
//!
//! The router must never acknowledge, deliver or report anything that is not yet durable in
//! its [`BundleStore`], and never deliver one bundle twice to the application.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ztmesh_core::{NodeId, Timestamp};

use crate::bpv7::{
    dtn_time_from_timestamp, Bundle, BundleId, CreationTimestamp, Eid, FragmentKey, PrimaryBlock,
};
use crate::config::DtnConfig;
use crate::error::{DtnError, FragmentError, RequestError};
use crate::fragment::{fragment, Coverage, FragmentCoverage, Reassembly};
use crate::frame::Frame;
use crate::store::{BundleStore, DeliveredBundle, HeldBundle, StoreUsage};

/// A frame to send: the runtime wraps `frame` in `LinkMessage::Bundle { frame }` and writes it
/// on the link to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer to send to.
    pub to: NodeId,
    /// The DTN frame ([`Frame`] encoding).
    pub frame: Vec<u8>,
}

/// Something the runtime or the application must learn about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtnEvent {
    /// A whole bundle for a local service is durably in the delivered table. Announced once
    /// per bundle id, ever.
    Delivered {
        /// The bundle.
        id: BundleId,
        /// The endpoint that created it.
        source: Eid,
        /// The local endpoint it is for.
        destination: Eid,
        /// Payload length in bytes.
        payload_len: u64,
    },
    /// This node is the destination of `id` and must publish a signed delivery receipt
    /// (through gossip) so that relays free their copies. Asked again if copies keep arriving
    /// after a restart.
    ReceiptNeeded {
        /// The delivered bundle.
        id: BundleId,
    },
    /// Data held here for `id` (pieces to forward, a partial reassembly or an unread delivery)
    /// was dropped because the bundle's lifetime ended.
    Expired {
        /// The expired bundle.
        id: BundleId,
    },
    /// A well-formed bundle from a peer was not taken (and not acknowledged, so the peer keeps
    /// it and may retry).
    Refused {
        /// The peer that sent it.
        from: NodeId,
        /// The refused bundle.
        id: BundleId,
        /// Why.
        reason: RefuseReason,
    },
}

/// Why a well-formed bundle from a peer was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefuseReason {
    /// Its lifetime is already over.
    Expired,
    /// It expires further in the future than the configured maximum lifetime allows.
    LifetimeTooLong,
    /// Its ADU is longer than the configured maximum.
    AduTooLarge,
    /// The store is at its bound on bundles or bytes.
    StoreFull,
    /// As many ADUs as allowed are being reassembled already.
    ReassemblyFull,
    /// No room to remember one more delivered id.
    TombstonesFull,
    /// The fragment does not fit with those already received.
    Fragment(FragmentError),
}

/// Progress of sending one piece to one peer during the current contact.
#[derive(Debug, Clone, Copy)]
struct SendState {
    attempts: u32,
    last_sent: Timestamp,
    next_attempt: Timestamp,
}

/// A link-up peer.
#[derive(Debug, Default)]
struct Link {
    /// Pieces sent and not yet acknowledged during this contact.
    sends: BTreeMap<FragmentKey, SendState>,
    /// When this link needs attention next (a retry, or a window slot freeing up).
    wake_at: Option<Timestamp>,
}

/// An ADU addressed here whose fragments are arriving.
#[derive(Debug)]
struct Partial {
    coverage: FragmentCoverage,
    destination: Eid,
    expires_at: Timestamp,
}

/// A frame waiting for [`Router::poll_transmit`]; bundle bytes are read from the store only
/// then, so the queue holds keys, not payloads.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Bundle { to: NodeId, key: FragmentKey },
    Ack { to: NodeId, key: FragmentKey },
}

/// The store disagrees with itself (a piece listed but missing, fragments that do not
/// reassemble although their ranges cover the ADU).
#[derive(Debug, thiserror::Error)]
#[error("bundle store is inconsistent: {0}")]
struct StoreInconsistent(&'static str);

/// The store-and-forward state machine of one node.
///
/// Feed it inputs as they happen, each with the current time:
/// [`handle_link_up`](Router::handle_link_up) / [`handle_link_down`](Router::handle_link_down)
/// as links to peers open and close, [`handle_frame`](Router::handle_frame) for every
/// `LinkMessage::Bundle` received, [`handle_receipt`](Router::handle_receipt) for every
/// delivery receipt whose signature checked out, [`accept_local`](Router::accept_local) for the application's
/// bundles, and [`handle_timeout`](Router::handle_timeout) whenever the instant returned by
/// [`poll_timeout`](Router::poll_timeout) has passed. After each input, drain
/// [`poll_transmit`](Router::poll_transmit) (and send the frames) and
/// [`poll_event`](Router::poll_event).
///
/// All durable state lives in the store: dropping a router and building a new one over the
/// same store (a crash and restart) loses nothing that was acknowledged.
#[derive(Debug)]
pub struct Router<S: BundleStore> {
    local: NodeId,
    config: DtnConfig,
    store: S,
    /// Mirror of the store's held pieces (records only), for routing decisions without I/O.
    held: BTreeMap<FragmentKey, HeldBundle>,
    /// ADUs addressed here with some fragments held; bounded by `max_reassemblies`.
    partial: BTreeMap<BundleId, Partial>,
    /// Link-up peers; the runtime bounds how many links exist.
    links: BTreeMap<NodeId, Link>,
    /// Newest creation timestamp used (reserved durably before use).
    last_creation: Option<CreationTimestamp>,
    /// Earliest expiry of anything in the store.
    next_store_expiry: Option<Timestamp>,
    transmits: VecDeque<Pending>,
    events: VecDeque<DtnEvent>,
    /// Ids whose receipt was asked for by this instance, until their expiry; bounded by
    /// `max_tombstones`.
    receipts_requested: BTreeMap<BundleId, Timestamp>,
    /// Receipts for bundles not held here when they came, by id and signer, until the
    /// bundle must have expired; applied if a copy addressed to the signer arrives. Keyed by
    /// signer too, so a receipt forged by another node cannot mask the destination's. In
    /// memory only (losing one costs a redundant forward, never a bundle); bounded by
    /// `max_tombstones`.
    early_receipts: BTreeMap<(BundleId, NodeId), Timestamp>,
    dropped_transmits: u64,
    dropped_events: u64,
}

impl<S: BundleStore> Router<S> {
    /// A router for node `local` over `store`, picking up whatever the store holds (pieces to
    /// forward, partial reassemblies, the last creation timestamp).
    pub fn new(local: NodeId, config: DtnConfig, store: S) -> Result<Self, DtnError> {
        config.validate()?;
        let records = store.list_held().map_err(DtnError::store)?;
        let mut router = Router {
            local,
            last_creation: store.last_creation().map_err(DtnError::store)?,
            next_store_expiry: store.next_expiry().map_err(DtnError::store)?,
            config,
            store,
            held: BTreeMap::new(),
            partial: BTreeMap::new(),
            links: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            receipts_requested: BTreeMap::new(),
            early_receipts: BTreeMap::new(),
            dropped_transmits: 0,
            dropped_events: 0,
        };
        for record in records {
            if record.destination.node() == local && record.is_fragment {
                let partial = router
                    .partial
                    .entry(record.key.id)
                    .or_insert_with(|| Partial {
                        coverage: FragmentCoverage::new(record.total_adu_len),
                        destination: record.destination.clone(),
                        expires_at: record.expires_at,
                    });
                // Ranges were checked before they were stored.
                let _ = partial
                    .coverage
                    .insert(record.key.offset, record.payload_len);
            }
            router.held.insert(record.key, record);
        }
        // A crash between storing the last fragment and delivering leaves a complete set.
        router.complete_finished_reassemblies()?;
        Ok(router)
    }

    /// This node.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The configuration in force.
    pub fn config(&self) -> &DtnConfig {
        &self.config
    }

    /// The store (for the application's view: delivered bundles, queued pieces).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (for the application deleting delivered bundles).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back (for a restart in tests and simulations).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Pieces held for forwarding or reassembly, by key.
    pub fn held(&self) -> impl Iterator<Item = &HeldBundle> {
        self.held.values()
    }

    /// Frames dropped because the transmit queue was full (they are retried later).
    pub fn dropped_transmits(&self) -> u64 {
        self.dropped_transmits
    }

    /// Events dropped because the event queue was full (delivered bundles stay listed in the
    /// store; a dropped receipt request is repeated when copies keep arriving).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Accepts a bundle from the local application: `payload` from `source_service` on this
    /// node to `destination`, living `ttl`. When this returns `Ok` the bundle is durable (the
    /// API may answer 201); it is delivered at once if `destination` is on this node, and
    /// otherwise fragmented if needed and scheduled for forwarding.
    pub fn accept_local(
        &mut self,
        destination: Eid,
        source_service: &str,
        payload: Vec<u8>,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<BundleId, DtnError> {
        let source = Eid::new(self.local, source_service).map_err(RequestError::from)?;
        let max_ms = u64::try_from(self.config.max_lifetime.as_millis()).unwrap_or(u64::MAX);
        if ttl.is_zero() || ttl > self.config.max_lifetime {
            return Err(RequestError::Lifetime {
                requested_ms: ttl.as_millis(),
                max_ms,
            }
            .into());
        }
        let len = payload.len() as u64;
        if len > self.config.max_adu_len {
            return Err(RequestError::PayloadTooLarge {
                len,
                max: self.config.max_adu_len,
            }
            .into());
        }
        let creation = self.next_creation(now)?;
        let bundle = Bundle {
            primary: PrimaryBlock::new(destination, source, creation, ttl),
            payload,
        };
        let id = bundle.id();

        if bundle.primary.destination.node() == self.local {
            self.check_room(1, len)?;
            if self.tombstones_full()? {
                return Err(self.full_error()?);
            }
            self.reserve_creation(creation)?;
            let delivered = DeliveredBundle {
                id,
                source: bundle.primary.source.clone(),
                destination: bundle.primary.destination.clone(),
                received_at: now,
                expires_at: bundle.primary.expires_at(),
                len,
            };
            if self
                .store
                .deliver(&delivered, &bundle.payload)
                .map_err(DtnError::store)?
            {
                self.note_expiry(delivered.expires_at);
                // Nothing left the node, so there are no copies for a receipt to free.
                self.announce_delivery(delivered, false);
            }
            return Ok(id);
        }

        let mut pieces = Vec::new();
        let mut bytes_total = 0u64;
        for piece in fragment(&bundle, self.config.max_fragment_payload)? {
            let bytes = piece.encode();
            if bytes.len() > self.config.limits.max_bundle_bytes {
                return Err(DtnError::Config(format!(
                    "a {}-byte bundle exceeds limits.max_bundle_bytes",
                    bytes.len()
                )));
            }
            bytes_total += bytes.len() as u64;
            pieces.push((HeldBundle::new(&piece, bytes.len(), None, now), bytes));
        }
        self.check_room(pieces.len() as u64, bytes_total)?;
        self.store
            .insert_local(creation, &pieces)
            .map_err(DtnError::store)?;
        self.last_creation = Some(creation);
        self.note_expiry(bundle.primary.expires_at());
        for (record, _) in pieces {
            self.held.insert(record.key, record);
        }
        self.pump_all(now);
        Ok(id)
    }

    /// A link to `peer` is up: sends everything it should have (a new contact starts with a
    /// clean retry schedule).
    pub fn handle_link_up(&mut self, peer: NodeId, now: Timestamp) {
        if peer == self.local {
            return;
        }
        self.links.insert(peer, Link::default());
        self.pump(peer, now);
    }

    /// The link to `peer` is down: its pending frames are dropped, and other links are woken
    /// because bundles that waited for `peer` to come up directly now go epidemic again.
    pub fn handle_link_down(&mut self, peer: &NodeId) {
        if self.links.remove(peer).is_none() {
            return;
        }
        self.transmits.retain(|p| match p {
            Pending::Bundle { to, .. } => to != peer,
            Pending::Ack { .. } => true,
        });
        for link in self.links.values_mut() {
            link.wake_at = Some(Timestamp::EPOCH);
        }
    }

    /// A `LinkMessage::Bundle { frame }` from `from` (an authenticated peer). Malformed input
    /// is an `Err` (a peer fault, see [`DtnError::is_peer_fault`]); a store failure is an
    /// `Err` too and nothing was acknowledged. A well-formed bundle that is not taken yields a
    /// [`DtnEvent::Refused`].
    pub fn handle_frame(
        &mut self,
        from: NodeId,
        frame: &[u8],
        now: Timestamp,
    ) -> Result<(), DtnError> {
        match Frame::decode(frame, &self.config.limits)? {
            Frame::Ack { key } => self.handle_ack(from, key, now),
            Frame::Bundle { bytes } => self.handle_bundle(from, bytes, now),
        }
    }

    /// A delivery receipt for `bundle` whose signature by `signer` the caller has verified.
    ///
    /// Only the destination's word counts: the pieces held here are dropped, and the id is
    /// remembered until the bundle expires so late copies are dropped too, when `signer` is
    /// the node they are addressed to; a receipt signed by anybody else is ignored. When
    /// nothing of the bundle is held here the destination cannot be checked yet, so the receipt
    /// is kept in memory (bounded) and applied if a copy for `signer` arrives.
    pub fn handle_receipt(
        &mut self,
        signer: NodeId,
        bundle: &BundleId,
        now: Timestamp,
    ) -> Result<(), DtnError> {
        let keys = self.held_keys(bundle);
        if keys.is_empty() {
            // Copies of one bundle all expire together; the longest lifetime anybody accepts
            // bounds when a copy could still show up.
            let until = self.config.latest_expiry(bundle.created_at());
            let room = (self.early_receipts.len() as u64) < self.config.max_tombstones;
            if until > now && room {
                self.early_receipts.insert((*bundle, signer), until);
            }
            return Ok(());
        }
        let from_destination: Vec<Timestamp> = keys
            .iter()
            .filter_map(|key| self.held.get(key))
            .filter(|held| held.destination.node() == signer)
            .map(|held| held.expires_at)
            .collect();
        let Some(until) = from_destination.into_iter().max() else {
            return Ok(());
        };
        self.drop_receipted(bundle, until, now)
    }

    /// Drops every piece of `id` and remembers the id until `until`.
    fn drop_receipted(
        &mut self,
        id: &BundleId,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), DtnError> {
        // Past expiry there is nothing to remember; when full, freeing the copies still
        // matters more than remembering (a late copy only costs a redundant forward).
        let tombstone = (until > now && !self.tombstones_full()?).then_some(until);
        self.store
            .remove_bundle(id, tombstone)
            .map_err(DtnError::store)?;
        if let Some(until) = tombstone {
            self.note_expiry(until);
        }
        self.forget(id);
        let signers = (*id, NodeId::from_bytes([0; 20]))..=(*id, NodeId::from_bytes([0xff; 20]));
        let receipts: Vec<_> = self
            .early_receipts
            .range(signers)
            .map(|(k, _)| *k)
            .collect();
        for receipt in receipts {
            self.early_receipts.remove(&receipt);
        }
        Ok(())
    }

    /// Time has reached `now`: purges what expired, retries unacknowledged sends whose backoff
    /// ran out, and sends what waited for a free slot.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), DtnError> {
        if self.next_store_expiry.is_some_and(|t| t <= now) {
            self.purge(now)?;
        }
        self.receipts_requested.retain(|_, until| *until > now);
        self.early_receipts.retain(|_, until| *until > now);
        self.complete_finished_reassemblies()?;
        let due: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, link)| link.wake_at.is_some_and(|t| t <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.pump(peer, now);
        }
        Ok(())
    }

    /// When [`Router::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let links = self.links.values().filter_map(|link| link.wake_at);
        links.chain(self.next_store_expiry).min()
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(pending) = self.transmits.pop_front() {
            match pending {
                Pending::Ack { to, key } => {
                    return Some(Transmit {
                        to,
                        frame: Frame::Ack { key }.encode(),
                    })
                }
                Pending::Bundle { to, key } => {
                    // Freed, expired or unreachable since it was queued: nothing to send.
                    if !self.links.contains_key(&to) || !self.held.contains_key(&key) {
                        continue;
                    }
                    // A read failure skips this send; the retry schedule sends it again.
                    if let Ok(Some(bytes)) = self.store.held_bytes(&key) {
                        return Some(Transmit {
                            to,
                            frame: Frame::Bundle { bytes }.encode(),
                        });
                    }
                }
            }
        }
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtnEvent> {
        self.events.pop_front()
    }

    // ----- inputs -----

    fn handle_ack(
        &mut self,
        from: NodeId,
        key: FragmentKey,
        now: Timestamp,
    ) -> Result<(), DtnError> {
        // Only acks for what was sent to this peer in this contact count: a peer cannot make
        // the store record acks for arbitrary pieces.
        let Some(link) = self.links.get_mut(&from) else {
            return Ok(());
        };
        if link.sends.remove(&key).is_none() {
            return Ok(());
        }
        if let Some(held) = self.held.get_mut(&key) {
            if held.destination.node() == from {
                // The destination itself holds it durably: this copy has done its job.
                self.store.remove_held(&key).map_err(DtnError::store)?;
                self.held.remove(&key);
            } else if !held.acked_by.contains(&from) {
                self.store
                    .record_ack(&key, &from)
                    .map_err(DtnError::store)?;
                held.acked_by.push(from);
            }
        }
        // A window slot is free now.
        self.pump(from, now);
        Ok(())
    }

    fn handle_bundle(
        &mut self,
        from: NodeId,
        bytes: Vec<u8>,
        now: Timestamp,
    ) -> Result<(), DtnError> {
        let bundle = Bundle::decode(&bytes, &self.config.limits)?;
        let key = bundle.key();
        let id = key.id;
        let expires_at = bundle.primary.expires_at();
        if expires_at <= now {
            return self.refuse(from, id, RefuseReason::Expired);
        }
        if expires_at > self.config.latest_expiry(now) {
            return self.refuse(from, id, RefuseReason::LifetimeTooLong);
        }
        if bundle.total_adu_len() > self.config.max_adu_len {
            return self.refuse(from, id, RefuseReason::AduTooLarge);
        }
        let for_here = bundle.primary.destination.node() == self.local;
        if self.store.is_tombstoned(&id).map_err(DtnError::store)? {
            // Delivered here already, or freed by a receipt: the sender can let go of it.
            self.queue_ack(from, key);
            if for_here {
                self.request_receipt(id, expires_at);
            }
            return Ok(());
        }
        if for_here {
            return self.receive_for_here(from, bundle, bytes, now);
        }
        let destination = bundle.primary.destination.node();
        if self.early_receipts.contains_key(&(id, destination)) {
            // Its destination already confirmed delivery: the sender can let go of it.
            self.drop_receipted(&id, expires_at, now)?;
            self.queue_ack(from, key);
            return Ok(());
        }
        if let Some(held) = self.held.get_mut(&key) {
            // A duplicate: the sender has it, so it never needs it from here.
            if held.received_from != Some(from) && !held.acked_by.contains(&from) {
                self.store
                    .record_ack(&key, &from)
                    .map_err(DtnError::store)?;
                held.acked_by.push(from);
            }
            self.queue_ack(from, key);
            return Ok(());
        }
        if self.is_full(1, bytes.len() as u64)? {
            return self.refuse(from, id, RefuseReason::StoreFull);
        }
        let record = HeldBundle::new(&bundle, bytes.len(), Some(from), now);
        self.store
            .insert_held(&[(record.clone(), bytes)])
            .map_err(DtnError::store)?;
        self.note_expiry(expires_at);
        self.held.insert(key, record);
        self.queue_ack(from, key);
        self.pump_all(now);
        Ok(())
    }

    /// A bundle or fragment addressed to this node, not delivered before.
    fn receive_for_here(
        &mut self,
        from: NodeId,
        bundle: Bundle,
        bytes: Vec<u8>,
        now: Timestamp,
    ) -> Result<(), DtnError> {
        let key = bundle.key();
        let id = key.id;
        let Some(info) = bundle.primary.fragment else {
            if self.is_full(1, bundle.payload.len() as u64)? {
                return self.refuse(from, id, RefuseReason::StoreFull);
            }
            if self.tombstones_full()? {
                return self.refuse(from, id, RefuseReason::TombstonesFull);
            }
            let delivered = DeliveredBundle {
                id,
                source: bundle.primary.source.clone(),
                destination: bundle.primary.destination.clone(),
                received_at: now,
                expires_at: bundle.primary.expires_at(),
                len: bundle.payload.len() as u64,
            };
            if self
                .store
                .deliver(&delivered, &bundle.payload)
                .map_err(DtnError::store)?
            {
                self.note_expiry(delivered.expires_at);
                self.forget(&id);
                self.announce_delivery(delivered, true);
            }
            self.queue_ack(from, key);
            return Ok(());
        };

        if self.held.contains_key(&key) {
            self.queue_ack(from, key);
            return Ok(());
        }
        let len = bundle.payload.len() as u64;
        let expires_at = bundle.primary.expires_at();
        let check = match self.partial.get(&id) {
            Some(partial) => {
                if partial.coverage.total_adu_len() != info.total_adu_len {
                    Err(FragmentError::Inconsistent("total ADU length"))
                } else if partial.destination != bundle.primary.destination {
                    Err(FragmentError::Inconsistent("destination"))
                } else if partial.expires_at != expires_at {
                    Err(FragmentError::Inconsistent("lifetime"))
                } else {
                    partial.coverage.check(info.offset, len)
                }
            }
            None => {
                if self.partial.len() >= self.config.max_reassemblies {
                    return self.refuse(from, id, RefuseReason::ReassemblyFull);
                }
                // The delivery at the end will need a tombstone; make sure it will have room.
                if self.tombstones_full()? {
                    return self.refuse(from, id, RefuseReason::TombstonesFull);
                }
                FragmentCoverage::new(info.total_adu_len).check(info.offset, len)
            }
        };
        match check {
            Ok(Coverage::New) => {}
            // Same range under another offset key cannot happen; treat it as held.
            Ok(Coverage::Duplicate) => {
                self.queue_ack(from, key);
                return Ok(());
            }
            Err(error) => return self.refuse(from, id, RefuseReason::Fragment(error)),
        }
        if self.is_full(1, bytes.len() as u64)? {
            return self.refuse(from, id, RefuseReason::StoreFull);
        }
        let record = HeldBundle::new(&bundle, bytes.len(), Some(from), now);
        self.store
            .insert_held(&[(record.clone(), bytes)])
            .map_err(DtnError::store)?;
        self.note_expiry(expires_at);
        self.held.insert(key, record);
        let partial = self.partial.entry(id).or_insert_with(|| Partial {
            coverage: FragmentCoverage::new(info.total_adu_len),
            destination: bundle.primary.destination.clone(),
            expires_at,
        });
        let _ = partial.coverage.insert(info.offset, len);
        if partial.coverage.is_complete() {
            self.complete_reassembly(id)?;
        }
        self.queue_ack(from, key);
        Ok(())
    }

    // ----- delivery -----

    /// Delivers every ADU whose fragments are all held.
    fn complete_finished_reassemblies(&mut self) -> Result<(), DtnError> {
        let complete: Vec<BundleId> = self
            .partial
            .iter()
            .filter(|(_, p)| p.coverage.is_complete())
            .map(|(id, _)| *id)
            .collect();
        for id in complete {
            self.complete_reassembly(id)?;
        }
        Ok(())
    }

    /// Reassembles `id` from its stored fragments and delivers it in one store transaction
    /// (which also drops the fragments).
    fn complete_reassembly(&mut self, id: BundleId) -> Result<(), DtnError> {
        let keys = self.held_keys(&id);
        let mut reassembly: Option<Reassembly> = None;
        let mut payload = None;
        let mut received_at = Timestamp::EPOCH;
        for key in &keys {
            let bytes = self
                .store
                .held_bytes(key)
                .map_err(DtnError::store)?
                .ok_or_else(|| DtnError::store(StoreInconsistent("held piece without bytes")))?;
            let piece = Bundle::decode(&bytes, &self.config.limits)?;
            if let Some(held) = self.held.get(key) {
                received_at = received_at.max(held.received_at);
            }
            let mut current = match reassembly.take() {
                Some(current) => current,
                None => Reassembly::new(&piece.primary, self.config.max_adu_len)?,
            };
            let primary = piece.primary.clone();
            if let Some(done) = current.insert(piece)? {
                payload = Some((done, primary));
            }
            reassembly = Some(current);
        }
        let Some((payload, primary)) = payload else {
            return Err(DtnError::store(StoreInconsistent(
                "fragments cover the ADU but do not reassemble",
            )));
        };
        let delivered = DeliveredBundle {
            id,
            source: primary.source.clone(),
            destination: primary.destination.clone(),
            received_at,
            expires_at: primary.expires_at(),
            len: payload.len() as u64,
        };
        if self
            .store
            .deliver(&delivered, &payload)
            .map_err(DtnError::store)?
        {
            self.note_expiry(delivered.expires_at);
            self.announce_delivery(delivered, true);
        }
        self.forget(&id);
        Ok(())
    }

    fn announce_delivery(&mut self, delivered: DeliveredBundle, needs_receipt: bool) {
        self.emit(DtnEvent::Delivered {
            id: delivered.id,
            source: delivered.source,
            destination: delivered.destination,
            payload_len: delivered.len,
        });
        if needs_receipt {
            self.request_receipt(delivered.id, delivered.expires_at);
        }
    }

    /// Asks the runtime for a receipt, once per id for as long as this router lives (a
    /// restart asks again when copies keep arriving, covering a crash before the receipt went
    /// out).
    fn request_receipt(&mut self, id: BundleId, until: Timestamp) {
        if self.receipts_requested.contains_key(&id) {
            return;
        }
        if (self.receipts_requested.len() as u64) < self.config.max_tombstones {
            self.receipts_requested.insert(id, until);
        }
        self.emit(DtnEvent::ReceiptNeeded { id });
    }

    // ----- forwarding -----

    /// Whether the piece should go to `peer` now.
    fn should_send(&self, held: &HeldBundle, peer: &NodeId) -> bool {
        let destination = held.destination.node();
        destination != self.local
            && held.received_from != Some(*peer)
            && !held.acked_by.contains(peer)
            // Direct when the destination is reachable; epidemic otherwise.
            && (destination == *peer || !self.links.contains_key(&destination))
    }

    fn pump_all(&mut self, now: Timestamp) {
        let peers: Vec<NodeId> = self.links.keys().copied().collect();
        for peer in peers {
            self.pump(peer, now);
        }
    }

    /// Queues what `peer` should get now, within its window of outstanding sends, and
    /// schedules the link's next wake-up.
    fn pump(&mut self, peer: NodeId, now: Timestamp) {
        // Taken out of the map for the duration, so `self` can be read freely meanwhile.
        let Some(mut link) = self.links.remove(&peer) else {
            return;
        };
        let ack_timeout = self.config.ack_timeout;
        let window = self.config.max_outstanding_per_peer;
        let occupies = |state: &SendState| state.last_sent.saturating_add(ack_timeout) > now;

        link.sends.retain(|key, _| {
            self.held
                .get(key)
                .is_some_and(|held| held.expires_at > now && self.should_send(held, &peer))
        });
        let mut outstanding = link.sends.values().filter(|s| occupies(s)).count();
        let mut blocked = false;
        let mut to_send = Vec::new();
        for (key, held) in &self.held {
            if held.expires_at <= now || !self.should_send(held, &peer) {
                continue;
            }
            let state = link.sends.get(key);
            if state.is_some_and(|s| s.next_attempt > now) {
                continue;
            }
            // A retry of a send still inside its ack timeout reuses that send's slot.
            if !state.is_some_and(occupies) {
                if outstanding >= window {
                    blocked = true;
                    continue;
                }
                outstanding += 1;
            }
            to_send.push(*key);
        }
        for key in to_send {
            let state = link.sends.entry(key).or_insert(SendState {
                attempts: 0,
                last_sent: now,
                next_attempt: now,
            });
            state.attempts = state.attempts.saturating_add(1);
            state.last_sent = now;
            state.next_attempt = now.saturating_add(self.config.retry_delay(state.attempts));
            self.queue(Pending::Bundle { to: peer, key });
        }
        // Sends still due now are blocked by the window; they wait for a slot, not a retry.
        let next_retry = link
            .sends
            .values()
            .map(|s| s.next_attempt)
            .filter(|&t| t > now)
            .min();
        let slot_frees = blocked
            .then(|| {
                link.sends
                    .values()
                    .filter(|s| occupies(s))
                    .map(|s| s.last_sent.saturating_add(ack_timeout))
                    .min()
            })
            .flatten();
        link.wake_at = next_retry.into_iter().chain(slot_frees).min();
        self.links.insert(peer, link);
    }

    // ----- bookkeeping -----

    fn queue_ack(&mut self, to: NodeId, key: FragmentKey) {
        self.queue(Pending::Ack { to, key });
    }

    /// Queues a frame; when the queue is full the frame is dropped (a bundle is resent by its
    /// retry schedule, an ack by the peer's).
    fn queue(&mut self, pending: Pending) {
        if self.transmits.len() >= self.config.max_queued_transmits {
            self.dropped_transmits += 1;
            return;
        }
        self.transmits.push_back(pending);
    }

    fn emit(&mut self, event: DtnEvent) {
        if self.events.len() >= self.config.max_queued_events {
            self.dropped_events += 1;
            return;
        }
        self.events.push_back(event);
    }

    /// Reports a bundle not taken; it is not acknowledged, so the sender keeps it.
    fn refuse(&mut self, from: NodeId, id: BundleId, reason: RefuseReason) -> Result<(), DtnError> {
        self.emit(DtnEvent::Refused { from, id, reason });
        Ok(())
    }

    /// Keys of the pieces of `id` held here.
    fn held_keys(&self, id: &BundleId) -> Vec<FragmentKey> {
        let first = FragmentKey { id: *id, offset: 0 };
        let last = FragmentKey {
            id: *id,
            offset: u64::MAX,
        };
        self.held.range(first..=last).map(|(key, _)| *key).collect()
    }

    /// Drops the in-memory traces of `id` after the store dropped its pieces.
    fn forget(&mut self, id: &BundleId) {
        for key in self.held_keys(id) {
            self.held.remove(&key);
        }
        self.partial.remove(id);
    }

    fn purge(&mut self, now: Timestamp) -> Result<(), DtnError> {
        let expired = self.store.purge_expired(now).map_err(DtnError::store)?;
        self.held.retain(|_, held| held.expires_at > now);
        self.partial.retain(|_, partial| partial.expires_at > now);
        for id in expired {
            self.emit(DtnEvent::Expired { id });
        }
        self.next_store_expiry = self.store.next_expiry().map_err(DtnError::store)?;
        // Forget the retry schedules of what is gone, so no link wakes up for nothing.
        self.pump_all(now);
        Ok(())
    }

    fn note_expiry(&mut self, at: Timestamp) {
        self.next_store_expiry = Some(self.next_store_expiry.map_or(at, |t| t.min(at)));
    }

    fn usage(&self) -> Result<StoreUsage, DtnError> {
        self.store.usage().map_err(DtnError::store)
    }

    /// Whether `bundles` more pieces of `bytes` more bytes would exceed a bound.
    fn is_full(&self, bundles: u64, bytes: u64) -> Result<bool, DtnError> {
        let usage = self.usage()?;
        Ok(
            usage.bundles.saturating_add(bundles) > self.config.max_stored_bundles
                || usage.bytes.saturating_add(bytes) > self.config.max_stored_bytes,
        )
    }

    fn tombstones_full(&self) -> Result<bool, DtnError> {
        Ok(self.usage()?.tombstones >= self.config.max_tombstones)
    }

    fn full_error(&self) -> Result<DtnError, DtnError> {
        let usage = self.usage()?;
        Ok(DtnError::StoreFull {
            bundles: usage.bundles,
            bytes: usage.bytes,
            max_bundles: self.config.max_stored_bundles,
            max_bytes: self.config.max_stored_bytes,
        })
    }

    /// `Err(StoreFull)` when `bundles` more pieces of `bytes` bytes do not fit.
    fn check_room(&self, bundles: u64, bytes: u64) -> Result<(), DtnError> {
        if self.is_full(bundles, bytes)? {
            return Err(self.full_error()?);
        }
        Ok(())
    }

    /// The creation timestamp for a new local bundle: the clock's DTN time, kept strictly
    /// after the last one used even if the clock stepped back.
    fn next_creation(&self, now: Timestamp) -> Result<CreationTimestamp, DtnError> {
        let time = dtn_time_from_timestamp(now).ok_or(RequestError::ClockBeforeDtnEpoch)?;
        Ok(match self.last_creation {
            Some(last) if last.dtn_time_ms >= time => match last.seq.checked_add(1) {
                Some(seq) => CreationTimestamp {
                    dtn_time_ms: last.dtn_time_ms,
                    seq,
                },
                None => CreationTimestamp {
                    dtn_time_ms: last.dtn_time_ms.saturating_add(1),
                    seq: 0,
                },
            },
            _ => CreationTimestamp {
                dtn_time_ms: time,
                seq: 0,
            },
        })
    }

    /// Makes `creation` durable before any bundle carries it, so a restart never reuses it.
    fn reserve_creation(&mut self, creation: CreationTimestamp) -> Result<(), DtnError> {
        self.store
            .reserve_creation(creation)
            .map_err(DtnError::store)?;
        self.last_creation = Some(creation);
        Ok(())
    }
}
