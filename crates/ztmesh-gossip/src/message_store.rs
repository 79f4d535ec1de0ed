//! Accepted messages kept for anti-entropy, bounded by count and bytes.

use std::collections::{BTreeMap, BTreeSet};

use ztmesh_core::{NodeId, Timestamp};

use crate::{MessageId, VerifiedMessage};

#[derive(Debug)]
struct Stored {
    message: VerifiedMessage,
    /// Arrival order, for "recent" digests.
    arrival: u64,
}

/// Holds unexpired accepted messages so peers that missed them can pull them.
///
/// When over its count or byte bound it evicts the message expiring soonest: that one would
/// leave first anyway, and long-lived messages (revocations) are the ones most worth repairing.
#[derive(Debug)]
pub(crate) struct MessageStore {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    next_arrival: u64,
    /// Where the next digest's window over older messages starts (an arrival number).
    digest_cursor: u64,
    by_id: BTreeMap<MessageId, Stored>,
    by_expiry: BTreeSet<(Timestamp, MessageId)>,
    by_arrival: BTreeMap<u64, MessageId>,
}

impl MessageStore {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        MessageStore {
            capacity,
            max_bytes,
            bytes: 0,
            next_arrival: 0,
            digest_cursor: 0,
            by_id: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            by_arrival: BTreeMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.by_id.contains_key(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&VerifiedMessage> {
        self.by_id.get(id).map(|stored| &stored.message)
    }

    /// Stored messages not expired at `now`, oldest arrival first.
    pub(crate) fn iter_unexpired(&self, now: Timestamp) -> impl Iterator<Item = &VerifiedMessage> {
        self.by_arrival
            .values()
            .filter_map(|id| self.by_id.get(id))
            .map(|stored| &stored.message)
            .filter(move |message| message.expires_at > now)
    }

    /// Stores `message`; returns how many messages were evicted to respect the bounds (possibly
    /// the new one itself, if it expires soonest).
    pub(crate) fn insert(&mut self, message: VerifiedMessage) -> usize {
        if self.by_id.contains_key(&message.id) {
            return 0;
        }
        let id = message.id;
        self.bytes += message.stored_len();
        self.by_expiry.insert((message.expires_at, id));
        self.by_arrival.insert(self.next_arrival, id);
        self.by_id.insert(
            id,
            Stored {
                message,
                arrival: self.next_arrival,
            },
        );
        self.next_arrival += 1;
        let mut evicted = 0;
        while self.by_id.len() > self.capacity || self.bytes > self.max_bytes {
            let Some(&(_, soonest)) = self.by_expiry.first() else {
                break;
            };
            self.remove(&soonest);
            evicted += 1;
        }
        evicted
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<VerifiedMessage> {
        let stored = self.by_id.remove(id)?;
        self.by_expiry.remove(&(stored.message.expires_at, *id));
        self.by_arrival.remove(&stored.arrival);
        self.bytes -= stored.message.stored_len();
        Some(stored.message)
    }

    /// Drops every message expired at `now`.
    pub(crate) fn remove_expired(&mut self, now: Timestamp) {
        while let Some(&(expires_at, id)) = self.by_expiry.first() {
            if expires_at > now {
                break;
            }
            self.remove(&id);
        }
    }

    /// Drops every message from `origin`; returns how many.
    pub(crate) fn remove_origin(&mut self, origin: &NodeId) -> usize {
        let ids: Vec<MessageId> = self
            .by_id
            .values()
            .filter(|stored| stored.message.origin == *origin)
            .map(|stored| stored.message.id)
            .collect();
        for id in &ids {
            self.remove(id);
        }
        ids.len()
    }

    /// Up to `max` ids of unexpired messages for a digest. When everything fits, all of them;
    /// otherwise the newest half (where fresh losses are) plus a window over the older ones
    /// that moves on each call, so successive digests eventually cover the whole store and a
    /// peer back from a long partition still catches up.
    pub(crate) fn digest(&mut self, max: usize, now: Timestamp) -> Vec<MessageId> {
        let unexpired = |id: &&MessageId| {
            self.by_id
                .get(id)
                .is_some_and(|stored| stored.message.expires_at > now)
        };
        if self.by_arrival.len() <= max {
            return self
                .by_arrival
                .values()
                .filter(unexpired)
                .copied()
                .collect();
        }
        let newest_count = max - max / 2;
        let newest: Vec<(u64, MessageId)> = self
            .by_arrival
            .iter()
            .rev()
            .take(newest_count)
            .map(|(&arrival, &id)| (arrival, id))
            .collect();
        // `by_arrival` is longer than `max`, so the newest half leaves older entries behind.
        let oldest_newest = newest.last().map_or(u64::MAX, |&(arrival, _)| arrival);
        let older = self.by_arrival.range(..oldest_newest);
        let window: Vec<(u64, MessageId)> = older
            .clone()
            .skip_while(|(&arrival, _)| arrival < self.digest_cursor)
            .chain(older.take_while(|(&arrival, _)| arrival < self.digest_cursor))
            .take(max - newest_count)
            .map(|(&arrival, &id)| (arrival, id))
            .collect();
        if let Some(&(last, _)) = window.last() {
            self.digest_cursor = last + 1;
        }
        newest
            .into_iter()
            .chain(window)
            .map(|(_, id)| id)
            .filter(|id| unexpired(&id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn message(n: u8, expires_at: u64, body_len: usize) -> VerifiedMessage {
        VerifiedMessage {
            id: MessageId([n; 32]),
            origin: NodeId::from_bytes([n % 2; 20]),
            kind: crate::MessageKind::Health,
            body: vec![0; body_len],
            created_at: Timestamp::EPOCH,
            expires_at: Timestamp::from_unix_millis(expires_at),
            hop_limit: 3,
            cose: vec![n; 10],
        }
    }

    #[test]
    fn count_bound_evicts_the_soonest_expiring() {
        let mut store = MessageStore::new(2, 1 << 20);
        assert_eq!(store.insert(message(1, 300, 0)), 0);
        assert_eq!(store.insert(message(2, 100, 0)), 0);
        assert_eq!(store.insert(message(3, 200, 0)), 1);
        assert!(!store.contains(&MessageId([2; 32])));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn byte_bound_evicts_until_under() {
        let mut store = MessageStore::new(100, 50);
        store.insert(message(1, 100, 10)); // 20 bytes
        store.insert(message(2, 200, 10)); // 40
        assert_eq!(store.insert(message(3, 300, 10)), 1); // 60 > 50: evict 1
        assert_eq!(store.bytes(), 40);
        assert!(!store.contains(&MessageId([1; 32])));
    }

    #[test]
    fn expiry_and_origin_removal_keep_indexes_consistent() {
        let mut store = MessageStore::new(10, 1 << 20);
        for n in 0..6 {
            store.insert(message(n, 100 + u64::from(n), 1));
        }
        store.remove_expired(Timestamp::from_unix_millis(101));
        assert_eq!(store.len(), 4);
        assert_eq!(store.remove_origin(&NodeId::from_bytes([0; 20])), 2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 2 * 11);
        let now = Timestamp::from_unix_millis(0);
        assert_eq!(store.iter_unexpired(now).count(), 2);
        assert_eq!(store.digest(10, now).len(), 2);
    }

    #[test]
    fn windowed_digests_cover_the_whole_store() {
        let mut store = MessageStore::new(100, 1 << 20);
        for n in 0..20 {
            store.insert(message(n, 1000, 1));
        }
        let now = Timestamp::EPOCH;
        let mut covered = BTreeSet::new();
        // Three newest plus three of the 17 older ones per digest: six digests cover them all.
        for _ in 0..6 {
            let digest = store.digest(6, now);
            assert_eq!(digest.len(), 6);
            // The three newest are always included.
            for n in 17..20 {
                assert!(digest.contains(&MessageId([n; 32])));
            }
            covered.extend(digest);
        }
        assert_eq!(covered.len(), 20);
    }
}
