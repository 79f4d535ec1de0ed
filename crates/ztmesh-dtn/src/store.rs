//! The durable state behind a [`Router`](crate::Router): the [`BundleStore`] trait and the
//! records it keeps.
//!
//! A store holds four things:
//! - **held** pieces: bundles and fragments this node is responsible for forwarding, or
//!   fragments addressed to it that wait for their siblings, with the peers that acknowledged
//!   each one;
//! - **delivered** bundles: whole ADUs addressed to this node, until the application deletes
//!   them or they expire;
//! - **tombstones**: ids delivered here or freed by a receipt, remembered until expiry so that
//!   late copies are dropped and nothing is delivered twice;
//! - the last creation timestamp used for a locally created bundle, so ids stay unique across
//!   restarts even if the clock steps back.
//!
//! Every method that records data must have made it durable when it returns `Ok` (the router
//! acknowledges to peers and the API answers the application right after), and each such
//! method is atomic: after a crash either all of its effects are visible or none.

use std::collections::BTreeMap;

use ztmesh_core::{NodeId, Timestamp};

use crate::bpv7::{Bundle, BundleId, CreationTimestamp, Eid, FragmentKey};

/// A bundle or fragment held here (its bytes are stored beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBundle {
    /// Bundle id and fragment offset.
    pub key: FragmentKey,
    /// The creating endpoint.
    pub source: Eid,
    /// The destination endpoint.
    pub destination: Eid,
    /// When the bundle expires everywhere.
    pub expires_at: Timestamp,
    /// Whether this piece is a fragment.
    pub is_fragment: bool,
    /// Length of the whole ADU.
    pub total_adu_len: u64,
    /// Length of this piece's payload.
    pub payload_len: u64,
    /// The peer it came from; `None` when accepted from the local application.
    pub received_from: Option<NodeId>,
    /// When it was stored here.
    pub received_at: Timestamp,
    /// Length of the stored BPv7 encoding.
    pub size: u64,
    /// Peers that acknowledged holding this piece (never sent to again).
    pub acked_by: Vec<NodeId>,
}

impl HeldBundle {
    /// The record of `bundle`, encoded in `size` bytes, stored at `received_at`.
    pub fn new(
        bundle: &Bundle,
        size: usize,
        received_from: Option<NodeId>,
        received_at: Timestamp,
    ) -> Self {
        HeldBundle {
            key: bundle.key(),
            source: bundle.primary.source.clone(),
            destination: bundle.primary.destination.clone(),
            expires_at: bundle.primary.expires_at(),
            is_fragment: bundle.primary.is_fragment(),
            total_adu_len: bundle.total_adu_len(),
            payload_len: bundle.payload.len() as u64,
            received_from,
            received_at,
            size: size as u64,
            acked_by: Vec::new(),
        }
    }
}

/// A whole bundle delivered to a local service, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredBundle {
    /// The bundle's id.
    pub id: BundleId,
    /// The endpoint that created it.
    pub source: Eid,
    /// The local endpoint it was addressed to (its service names the application).
    pub destination: Eid,
    /// When the whole ADU was stored here.
    pub received_at: Timestamp,
    /// When it expires (and is purged if still here).
    pub expires_at: Timestamp,
    /// Payload length in bytes.
    pub len: u64,
}

/// How much a store holds, for the router's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreUsage {
    /// Held pieces plus delivered bundles not yet deleted.
    pub bundles: u64,
    /// Their bytes: encoded held pieces plus delivered payloads.
    pub bytes: u64,
    /// Tombstones.
    pub tombstones: u64,
}

/// Durable storage for bundles. Synchronous: a call returns when its effect is durable.
pub trait BundleStore {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores pieces with their BPv7 bytes, all or none. Pieces already held are left as
    /// they are.
    fn insert_held(&mut self, pieces: &[(HeldBundle, Vec<u8>)]) -> Result<(), Self::Error>;

    /// Every held piece's record, ordered by key.
    fn list_held(&self) -> Result<Vec<HeldBundle>, Self::Error>;

    /// The BPv7 bytes of a held piece.
    fn held_bytes(&self, key: &FragmentKey) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Records that `peer` holds the piece `key` (a no-op when the piece is not held).
    fn record_ack(&mut self, key: &FragmentKey, peer: &NodeId) -> Result<(), Self::Error>;

    /// Drops one held piece.
    fn remove_held(&mut self, key: &FragmentKey) -> Result<(), Self::Error>;

    /// Drops every held piece of `id` and, with `tombstone_until`, remembers the id until
    /// then (a later tombstone for the same id keeps the later time).
    fn remove_bundle(
        &mut self,
        id: &BundleId,
        tombstone_until: Option<Timestamp>,
    ) -> Result<(), Self::Error>;

    /// Whether `id` is tombstoned (delivered here, or freed by a receipt) and not yet purged.
    fn is_tombstoned(&self, id: &BundleId) -> Result<bool, Self::Error>;

    /// Delivers a whole ADU in one atomic step: unless `bundle.id` is already tombstoned,
    /// stores it with its payload, tombstones the id until `bundle.expires_at` and drops every
    /// held piece of the id. Returns whether it was delivered now (`false`: it had been
    /// before, so the caller must not announce it again).
    fn deliver(&mut self, bundle: &DeliveredBundle, payload: &[u8]) -> Result<bool, Self::Error>;

    /// Delivered bundles not yet deleted by the application, oldest first.
    fn list_delivered(&self) -> Result<Vec<DeliveredBundle>, Self::Error>;

    /// The payload of a delivered bundle.
    fn delivered_payload(&self, id: &BundleId) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The application is done with a delivered bundle: drops it, keeping its tombstone.
    /// Returns whether it was there.
    fn delete_delivered(&mut self, id: &BundleId) -> Result<bool, Self::Error>;

    /// Remembers the newest creation timestamp used for a local bundle; a later call with an
    /// older value is ignored.
    fn reserve_creation(&mut self, creation: CreationTimestamp) -> Result<(), Self::Error>;

    /// Reserves `creation` and stores the pieces of a bundle the local application just handed
    /// over, all or none. The default makes two durable writes; a store that can do both in one
    /// transaction (one fsync instead of two) should.
    fn insert_local(
        &mut self,
        creation: CreationTimestamp,
        pieces: &[(HeldBundle, Vec<u8>)],
    ) -> Result<(), Self::Error> {
        self.reserve_creation(creation)?;
        self.insert_held(pieces)
    }

    /// The newest creation timestamp reserved so far.
    fn last_creation(&self) -> Result<Option<CreationTimestamp>, Self::Error>;

    /// What the store holds.
    fn usage(&self) -> Result<StoreUsage, Self::Error>;

    /// Drops everything that expires at or before `now` (held pieces, delivered bundles,
    /// tombstones). Returns the ids whose held pieces or delivered bundles were dropped.
    fn purge_expired(&mut self, now: Timestamp) -> Result<Vec<BundleId>, Self::Error>;

    /// The earliest expiry among everything stored.
    fn next_expiry(&self) -> Result<Option<Timestamp>, Self::Error>;
}

/// Why a [`MemoryStore`] failed: only ever because a test asked it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory store: injected failure")]
pub struct MemoryStoreError;

/// A [`BundleStore`] in memory, for unit tests and the deterministic simulator.
///
/// **Not for production**: nothing survives the process. "Durable" here means "kept in this
/// value", which is what a simulated crash (dropping the router, keeping the store) needs.
/// [`MemoryStore::fail_writes`] makes every later write fail, to test that failures are
/// reported and nothing is acknowledged.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    held: BTreeMap<FragmentKey, (HeldBundle, Vec<u8>)>,
    delivered: BTreeMap<BundleId, (DeliveredBundle, Vec<u8>)>,
    tombstones: BTreeMap<BundleId, Timestamp>,
    last_creation: Option<CreationTimestamp>,
    failing: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// When `failing`, every later write returns [`MemoryStoreError`] and changes nothing.
    pub fn fail_writes(&mut self, failing: bool) {
        self.failing = failing;
    }

    fn check_writable(&self) -> Result<(), MemoryStoreError> {
        if self.failing {
            Err(MemoryStoreError)
        } else {
            Ok(())
        }
    }

    fn held_range(&self, id: &BundleId) -> Vec<FragmentKey> {
        let start = FragmentKey { id: *id, offset: 0 };
        let end = FragmentKey {
            id: *id,
            offset: u64::MAX,
        };
        self.held.range(start..=end).map(|(k, _)| *k).collect()
    }
}

impl BundleStore for MemoryStore {
    type Error = MemoryStoreError;

    fn insert_held(&mut self, pieces: &[(HeldBundle, Vec<u8>)]) -> Result<(), Self::Error> {
        self.check_writable()?;
        for (record, bytes) in pieces {
            self.held
                .entry(record.key)
                .or_insert_with(|| (record.clone(), bytes.clone()));
        }
        Ok(())
    }

    fn list_held(&self) -> Result<Vec<HeldBundle>, Self::Error> {
        Ok(self
            .held
            .values()
            .map(|(record, _)| record.clone())
            .collect())
    }

    fn held_bytes(&self, key: &FragmentKey) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.held.get(key).map(|(_, bytes)| bytes.clone()))
    }

    fn record_ack(&mut self, key: &FragmentKey, peer: &NodeId) -> Result<(), Self::Error> {
        self.check_writable()?;
        if let Some((record, _)) = self.held.get_mut(key) {
            if !record.acked_by.contains(peer) {
                record.acked_by.push(*peer);
            }
        }
        Ok(())
    }

    fn remove_held(&mut self, key: &FragmentKey) -> Result<(), Self::Error> {
        self.check_writable()?;
        self.held.remove(key);
        Ok(())
    }

    fn remove_bundle(
        &mut self,
        id: &BundleId,
        tombstone_until: Option<Timestamp>,
    ) -> Result<(), Self::Error> {
        self.check_writable()?;
        for key in self.held_range(id) {
            self.held.remove(&key);
        }
        if let Some(until) = tombstone_until {
            let entry = self.tombstones.entry(*id).or_insert(until);
            *entry = (*entry).max(until);
        }
        Ok(())
    }

    fn is_tombstoned(&self, id: &BundleId) -> Result<bool, Self::Error> {
        Ok(self.tombstones.contains_key(id))
    }

    fn deliver(&mut self, bundle: &DeliveredBundle, payload: &[u8]) -> Result<bool, Self::Error> {
        self.check_writable()?;
        if self.tombstones.contains_key(&bundle.id) {
            return Ok(false);
        }
        for key in self.held_range(&bundle.id) {
            self.held.remove(&key);
        }
        self.tombstones.insert(bundle.id, bundle.expires_at);
        self.delivered
            .insert(bundle.id, (bundle.clone(), payload.to_vec()));
        Ok(true)
    }

    fn list_delivered(&self) -> Result<Vec<DeliveredBundle>, Self::Error> {
        let mut list: Vec<_> = self.delivered.values().map(|(d, _)| d.clone()).collect();
        list.sort_by_key(|d| (d.received_at, d.id));
        Ok(list)
    }

    fn delivered_payload(&self, id: &BundleId) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.delivered.get(id).map(|(_, payload)| payload.clone()))
    }

    fn delete_delivered(&mut self, id: &BundleId) -> Result<bool, Self::Error> {
        self.check_writable()?;
        Ok(self.delivered.remove(id).is_some())
    }

    fn reserve_creation(&mut self, creation: CreationTimestamp) -> Result<(), Self::Error> {
        self.check_writable()?;
        self.last_creation = Some(self.last_creation.map_or(creation, |c| c.max(creation)));
        Ok(())
    }

    fn last_creation(&self) -> Result<Option<CreationTimestamp>, Self::Error> {
        Ok(self.last_creation)
    }

    fn usage(&self) -> Result<StoreUsage, Self::Error> {
        let held_bytes: u64 = self.held.values().map(|(_, b)| b.len() as u64).sum();
        let delivered_bytes: u64 = self.delivered.values().map(|(_, p)| p.len() as u64).sum();
        Ok(StoreUsage {
            bundles: (self.held.len() + self.delivered.len()) as u64,
            bytes: held_bytes + delivered_bytes,
            tombstones: self.tombstones.len() as u64,
        })
    }

    fn purge_expired(&mut self, now: Timestamp) -> Result<Vec<BundleId>, Self::Error> {
        self.check_writable()?;
        let mut ids = Vec::new();
        self.held.retain(|key, (record, _)| {
            let keep = record.expires_at > now;
            if !keep {
                ids.push(key.id);
            }
            keep
        });
        self.delivered.retain(|id, (record, _)| {
            let keep = record.expires_at > now;
            if !keep {
                ids.push(*id);
            }
            keep
        });
        self.tombstones.retain(|_, until| *until > now);
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn next_expiry(&self) -> Result<Option<Timestamp>, Self::Error> {
        let held = self.held.values().map(|(r, _)| r.expires_at);
        let delivered = self.delivered.values().map(|(d, _)| d.expires_at);
        let tombstones = self.tombstones.values().copied();
        Ok(held.chain(delivered).chain(tombstones).min())
    }
}
