//! A bounded set of 32-byte keys, each remembered until the message it stands for expires.

use std::collections::{BTreeMap, BTreeSet};

use ztmesh_core::Timestamp;

/// Remembers which messages were already accepted, so each is delivered once.
///
/// Entries live until their message's `expires_at`: after that the message is refused as
/// expired anyway, so remembering it longer buys nothing. When full, the entry expiring soonest
/// is forgotten first; it is the one whose duplicate, should it come back, is closest to being
/// refused for expiry. Ordered collections keep iteration deterministic for simulations.
#[derive(Debug)]
pub(crate) struct SeenCache {
    capacity: usize,
    entries: BTreeMap<[u8; 32], Timestamp>,
    by_expiry: BTreeSet<(Timestamp, [u8; 32])>,
}

impl SeenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        SeenCache {
            capacity,
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub(crate) fn contains(&self, key: &[u8; 32]) -> bool {
        self.entries.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Remembers `key` until `expires_at`; returns how many entries were forgotten to make room.
    pub(crate) fn insert(&mut self, key: [u8; 32], expires_at: Timestamp) -> usize {
        if self.entries.contains_key(&key) {
            return 0;
        }
        self.entries.insert(key, expires_at);
        self.by_expiry.insert((expires_at, key));
        let mut evicted = 0;
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    /// Forgets every entry whose message has expired at `now`.
    pub(crate) fn remove_expired(&mut self, now: Timestamp) {
        while let Some(&(expires_at, key)) = self.by_expiry.first() {
            if expires_at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    #[test]
    fn full_cache_forgets_the_soonest_expiring_entry() {
        let mut cache = SeenCache::new(2);
        assert_eq!(cache.insert([1; 32], at(30)), 0);
        assert_eq!(cache.insert([2; 32], at(10)), 0);
        assert_eq!(cache.insert([2; 32], at(10)), 0);
        assert_eq!(cache.insert([3; 32], at(20)), 1);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&[2; 32]));
        assert!(cache.contains(&[1; 32]) && cache.contains(&[3; 32]));
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut cache = SeenCache::new(10);
        cache.insert([1; 32], at(10));
        cache.insert([2; 32], at(20));
        cache.remove_expired(at(10));
        assert!(!cache.contains(&[1; 32]));
        assert!(cache.contains(&[2; 32]));
        assert_eq!(cache.len(), 1);
    }
}
