//! Which connections an HTTP server of ztmesh (CA, node API, witness) takes, sans-IO.
//!
//! A server's capacity is split so that no class of client can take all of it:
//!
//! - **handshake slots**: a connection whose TLS handshake is under way (bounded in total and
//!   per client address; the runtime also bounds how long a handshake may take). Nobody is
//!   known yet at this stage, so nobody can be given a reserve; instead a full stage makes room
//!   by evicting its oldest handshake once that one is older than
//!   [`AdmissionLimits::handshake_evictable_after`]. An honest handshake takes milliseconds, so
//!   slow handshakes cannot pin this stage: each newcomer pushes the oldest one out;
//! - the **unauthenticated pool**: connections whose client presented nothing the server's
//!   classifier accepts (bounded in total and per client address);
//! - the **authenticated pool**: connections whose client the classifier recognised (for the CA
//!   and the node API: a certificate signed by this mesh's CA key, whatever its validity dates).
//!   Unauthenticated clients can never take a slot here, which is what keeps rotations and
//!   `ztmesh status` working while anonymous clients hold every other slot. A per-client cap
//!   inside the pool keeps one member from taking all of it.
//!
//! A connection that finds its slot class full is refused at once; nothing ever waits for a
//! slot, so a held pool cannot grow a queue. Slots are moved between stages and given back
//! with [`Slot`] values that cannot be copied, so a slot is released exactly once.
//!
//! This module only counts: it never touches sockets, clocks or certificates. The accept loop
//! (`crate::https`) owns the timeouts and decides what a client is; this module must never
//! admit past a cap, whatever order of calls it sees.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

/// The caps of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Connections in the TLS handshake at once.
    pub handshakes: usize,
    /// Connections in the TLS handshake at once from one client address.
    pub handshakes_per_address: usize,
    /// Age after which a handshake may be evicted to make room for a new connection.
    pub handshake_evictable_after: Duration,
    /// Connections of clients the classifier did not recognise.
    pub unauthenticated: usize,
    /// Connections of unrecognised clients from one address.
    pub unauthenticated_per_address: usize,
    /// Connections of recognised clients: the reserve unauthenticated clients cannot take.
    pub authenticated: usize,
    /// Connections of one recognised client (one identity, whatever its addresses).
    pub authenticated_per_client: usize,
}

/// What the classifier made of a client once it is known (after the TLS handshake, or at
/// accept for plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// A client the server recognises; the string names its identity (a NodeId, say) and keys
    /// the per-client cap.
    Authenticated(String),
    /// Anyone else, capped per address.
    Unauthenticated,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Every handshake slot is taken.
    #[error("every handshake slot is taken")]
    HandshakesFull,
    /// This address already has its share of handshake slots.
    #[error("this address holds its share of handshake slots")]
    HandshakesFullForAddress,
    /// Every unauthenticated slot is taken.
    #[error("every unauthenticated slot is taken")]
    UnauthenticatedFull,
    /// This address already has its share of unauthenticated slots.
    #[error("this address holds its share of unauthenticated slots")]
    UnauthenticatedFullForAddress,
    /// Every authenticated slot is taken.
    #[error("every authenticated slot is taken")]
    AuthenticatedFull,
    /// This client already has its share of authenticated slots.
    #[error("this client holds its share of authenticated slots")]
    AuthenticatedFullForClient,
    /// The caller misused the API, or lost a race with an eviction: the slot handed in is not
    /// (or no longer) a handshake of this server.
    #[error("not a handshake slot of this server, or evicted")]
    NotAHandshake,
}

/// One admitted connection's place. Not `Clone`: handing it back (or moving it to a pool)
/// consumes it, so it cannot be released twice.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Slot(u64);

impl Slot {
    /// The slot's name, for the runtime to find the connection holding it.
    pub fn id(&self) -> SlotId {
        SlotId(self.0)
    }
}

/// A slot's name: the runtime keys the handshakes it may have to stop by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId(u64);

/// A connection taken in by [`Admission::handle_accept`].
#[derive(Debug)]
pub struct Accepted {
    /// The new connection's handshake slot.
    pub slot: Slot,
    /// A handshake evicted to make room: the runtime must close that connection now. Its slot
    /// is already free (closing it later changes nothing).
    pub evicted: Option<SlotId>,
}

/// What a slot holds, to give it back to the right counter.
#[derive(Debug)]
enum Held {
    Handshake { address: IpAddr, since: Duration },
    Unauthenticated(IpAddr),
    Authenticated(String),
}

/// Live count per key and in total, with a cap on each. Keys with no live connection are
/// removed, so the map never holds more keys than live connections.
#[derive(Debug)]
struct Counter<K: Eq + Hash> {
    total: usize,
    per_key: HashMap<K, usize>,
    max_total: usize,
    max_per_key: usize,
}

/// Which of a counter's two caps stopped a take.
enum Full {
    Total,
    Key,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(max_total: usize, max_per_key: usize) -> Self {
        Counter {
            total: 0,
            per_key: HashMap::new(),
            max_total,
            max_per_key,
        }
    }

    fn take(&mut self, key: &K) -> Result<(), Full> {
        if self.total >= self.max_total {
            return Err(Full::Total);
        }
        let held = self.per_key.get(key).copied().unwrap_or(0);
        if held >= self.max_per_key {
            return Err(Full::Key);
        }
        self.per_key.insert(key.clone(), held + 1);
        self.total += 1;
        Ok(())
    }

    fn give_back(&mut self, key: &K) {
        if let Some(held) = self.per_key.get_mut(key) {
            *held -= 1;
            if *held == 0 {
                self.per_key.remove(key);
            }
            self.total -= 1;
        }
    }

    fn held_by(&self, key: &K) -> usize {
        self.per_key.get(key).copied().unwrap_or(0)
    }
}

/// Live connections per stage, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionCounts {
    /// In the TLS handshake.
    pub handshakes: usize,
    /// In the unauthenticated pool.
    pub unauthenticated: usize,
    /// In the authenticated pool.
    pub authenticated: usize,
}

/// The admission state of one server. Call order per connection:
/// [`handle_accept`](Self::handle_accept) when a TLS connection arrives, then
/// [`handle_handshake_done`](Self::handle_handshake_done) with what the client proved; or
/// [`handle_plain_accept`](Self::handle_plain_accept) when there is no handshake (plain HTTP).
/// Every slot returned goes back through [`handle_close`](Self::handle_close).
#[derive(Debug)]
pub struct Admission {
    next_slot: u64,
    held: HashMap<u64, Held>,
    handshake_evictable_after: Duration,
    handshakes: Counter<IpAddr>,
    unauthenticated: Counter<IpAddr>,
    authenticated: Counter<String>,
}

impl Admission {
    /// An empty server with these caps.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            next_slot: 0,
            held: HashMap::new(),
            handshake_evictable_after: limits.handshake_evictable_after,
            handshakes: Counter::new(limits.handshakes, limits.handshakes_per_address),
            unauthenticated: Counter::new(
                limits.unauthenticated,
                limits.unauthenticated_per_address,
            ),
            authenticated: Counter::new(limits.authenticated, limits.authenticated_per_client),
        }
    }

    fn hold(&mut self, held: Held) -> Slot {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.held.insert(slot, held);
        Slot(slot)
    }

    /// A TLS connection from `address` arrived at `now` (any monotonic clock, the same for
    /// every call): a handshake slot, possibly by evicting the oldest handshake (of this address
    /// if it is the address's cap that is full), or a refusal (close it now).
    pub fn handle_accept(&mut self, address: IpAddr, now: Duration) -> Result<Accepted, Refusal> {
        let mut evicted = None;
        if let Err(full) = self.handshakes.take(&address) {
            let (refusal, only_from) = match full {
                Full::Total => (Refusal::HandshakesFull, None),
                Full::Key => (Refusal::HandshakesFullForAddress, Some(address)),
            };
            let oldest = self.oldest_handshake(only_from).ok_or(refusal)?;
            if now.saturating_sub(oldest.1) < self.handshake_evictable_after {
                return Err(refusal);
            }
            self.handle_close(Slot(oldest.0));
            evicted = Some(SlotId(oldest.0));
            // Room was made under the cap that was full; the other cap may still refuse.
            self.handshakes.take(&address).map_err(|_| refusal)?;
        }
        let slot = self.hold(Held::Handshake {
            address,
            since: now,
        });
        Ok(Accepted { slot, evicted })
    }

    /// The oldest handshake (of `address` only, when given): its slot number and start.
    fn oldest_handshake(&self, address: Option<IpAddr>) -> Option<(u64, Duration)> {
        self.held
            .iter()
            .filter_map(|(slot, held)| match held {
                Held::Handshake {
                    address: from,
                    since,
                } if address.is_none_or(|wanted| wanted == *from) => Some((*slot, *since)),
                _ => None,
            })
            .min_by_key(|(slot, since)| (*since, *slot))
    }

    /// The handshake of `slot` completed and the client is `class`: its handshake slot is
    /// given back and it takes a slot in its pool, or is refused (close it now; nothing is
    /// then held for it).
    pub fn handle_handshake_done(
        &mut self,
        slot: Slot,
        class: ClientClass,
    ) -> Result<Slot, Refusal> {
        let address = match self.held.remove(&slot.0) {
            Some(Held::Handshake { address, .. }) => address,
            Some(other) => {
                // Not a handshake slot: the connection keeps what it holds. Unreachable through
                // the public calls, which only hand out handshake slots to this one.
                self.held.insert(slot.0, other);
                return Ok(slot);
            }
            None => return Err(Refusal::NotAHandshake),
        };
        self.handshakes.give_back(&address);
        self.handle_plain_accept(address, class)
    }

    /// A connection from `address` that has no handshake stage (plain HTTP), already
    /// classified: a slot in its pool, or a refusal (close it now).
    pub fn handle_plain_accept(
        &mut self,
        address: IpAddr,
        class: ClientClass,
    ) -> Result<Slot, Refusal> {
        match class {
            ClientClass::Authenticated(client) => {
                self.authenticated
                    .take(&client)
                    .map_err(|full| match full {
                        Full::Total => Refusal::AuthenticatedFull,
                        Full::Key => Refusal::AuthenticatedFullForClient,
                    })?;
                Ok(self.hold(Held::Authenticated(client)))
            }
            ClientClass::Unauthenticated => {
                self.unauthenticated
                    .take(&address)
                    .map_err(|full| match full {
                        Full::Total => Refusal::UnauthenticatedFull,
                        Full::Key => Refusal::UnauthenticatedFullForAddress,
                    })?;
                Ok(self.hold(Held::Unauthenticated(address)))
            }
        }
    }

    /// The connection of `slot` closed (or was refused later): its slot is free again.
    pub fn handle_close(&mut self, slot: Slot) {
        match self.held.remove(&slot.0) {
            Some(Held::Handshake { address, .. }) => self.handshakes.give_back(&address),
            Some(Held::Unauthenticated(address)) => self.unauthenticated.give_back(&address),
            Some(Held::Authenticated(client)) => self.authenticated.give_back(&client),
            None => {}
        }
    }

    /// Live connections per stage.
    pub fn counts(&self) -> AdmissionCounts {
        AdmissionCounts {
            handshakes: self.handshakes.total,
            unauthenticated: self.unauthenticated.total,
            authenticated: self.authenticated.total,
        }
    }

    /// Live unauthenticated connections from `address`.
    pub fn unauthenticated_from(&self, address: IpAddr) -> usize {
        self.unauthenticated.held_by(&address)
    }

    /// Live authenticated connections of `client`.
    pub fn authenticated_of(&self, client: &str) -> usize {
        self.authenticated.held_by(&client.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AdmissionLimits = AdmissionLimits {
        handshakes: 4,
        handshakes_per_address: 2,
        handshake_evictable_after: Duration::from_secs(1),
        unauthenticated: 6,
        unauthenticated_per_address: 2,
        authenticated: 4,
        authenticated_per_client: 2,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn member(name: &str) -> ClientClass {
        ClientClass::Authenticated(name.to_owned())
    }

    const T0: Duration = Duration::from_secs(100);

    /// Accepts at `T0`, when no handshake is old enough to be evicted.
    fn accept(admission: &mut Admission, address: IpAddr) -> Result<Slot, Refusal> {
        let accepted = admission.handle_accept(address, T0)?;
        assert_eq!(accepted.evicted, None);
        Ok(accepted.slot)
    }

    /// Drives one TLS connection through its handshake into its pool.
    fn connect(
        admission: &mut Admission,
        address: IpAddr,
        class: ClientClass,
    ) -> Result<Slot, Refusal> {
        let slot = accept(admission, address)?;
        admission.handle_handshake_done(slot, class)
    }

    #[test]
    fn handshake_slots_are_capped_per_address_and_in_total() {
        let mut admission = Admission::new(LIMITS);
        let _a = accept(&mut admission, ip(2)).unwrap();
        let _b = accept(&mut admission, ip(2)).unwrap();
        assert_eq!(
            accept(&mut admission, ip(2)).unwrap_err(),
            Refusal::HandshakesFullForAddress
        );
        let _c = accept(&mut admission, ip(3)).unwrap();
        let _d = accept(&mut admission, ip(4)).unwrap();
        assert_eq!(
            accept(&mut admission, ip(5)).unwrap_err(),
            Refusal::HandshakesFull
        );
        assert_eq!(admission.counts().handshakes, 4);
    }

    #[test]
    fn slow_handshakes_are_evicted_oldest_first_to_make_room() {
        let mut admission = Admission::new(LIMITS);
        let at = |secs: u64| T0 + Duration::from_secs(secs);
        let oldest = admission.handle_accept(ip(2), at(0)).unwrap().slot;
        let _b = admission.handle_accept(ip(3), at(1)).unwrap().slot;
        let _c = admission.handle_accept(ip(4), at(1)).unwrap().slot;
        let _d = admission.handle_accept(ip(5), at(1)).unwrap().slot;
        // Full, and the oldest is not yet old enough: refused.
        assert_eq!(
            admission
                .handle_accept(ip(6), at(0) + Duration::from_millis(999))
                .unwrap_err(),
            Refusal::HandshakesFull
        );
        // Once it is, the newcomer takes its place and the runtime is told whom to close.
        let newcomer = admission.handle_accept(ip(6), at(1)).unwrap();
        assert_eq!(newcomer.evicted, Some(oldest.id()));
        assert_eq!(admission.counts().handshakes, 4);
        // The evicted connection's late calls change nothing.
        let evicted_id = oldest.id();
        assert_eq!(
            admission.handle_handshake_done(oldest, ClientClass::Unauthenticated),
            Err(Refusal::NotAHandshake)
        );
        assert_eq!(admission.counts().unauthenticated, 0);
        assert_eq!(admission.counts().handshakes, 4);
        assert_ne!(newcomer.slot.id(), evicted_id);
    }

    #[test]
    fn an_address_at_its_handshake_cap_evicts_only_its_own_handshakes() {
        let mut admission = Admission::new(LIMITS);
        let at = |secs: u64| T0 + Duration::from_secs(secs);
        let other = admission.handle_accept(ip(3), at(0)).unwrap().slot;
        let own = admission.handle_accept(ip(2), at(1)).unwrap().slot;
        let _second = admission.handle_accept(ip(2), at(2)).unwrap().slot;
        let third = admission.handle_accept(ip(2), at(5)).unwrap();
        // Not the older handshake of 127.0.0.3: the address pays for its own slowness.
        assert_eq!(third.evicted, Some(own.id()));
        assert_ne!(third.evicted, Some(other.id()));
        assert_eq!(admission.counts().handshakes, 3);
    }

    #[test]
    fn a_finished_handshake_gives_its_handshake_slot_back() {
        let mut admission = Admission::new(LIMITS);
        let slot = accept(&mut admission, ip(2)).unwrap();
        let pooled = admission
            .handle_handshake_done(slot, ClientClass::Unauthenticated)
            .unwrap();
        assert_eq!(
            admission.counts(),
            AdmissionCounts {
                handshakes: 0,
                unauthenticated: 1,
                authenticated: 0
            }
        );
        admission.handle_close(pooled);
        assert_eq!(admission.counts(), AdmissionCounts::default());
    }

    #[test]
    fn unauthenticated_clients_are_capped_per_address_and_in_total() {
        let mut admission = Admission::new(LIMITS);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(connect(&mut admission, ip(2), ClientClass::Unauthenticated).unwrap());
        }
        assert_eq!(
            connect(&mut admission, ip(2), ClientClass::Unauthenticated).unwrap_err(),
            Refusal::UnauthenticatedFullForAddress
        );
        for address in [3, 3, 4, 4] {
            held.push(connect(&mut admission, ip(address), ClientClass::Unauthenticated).unwrap());
        }
        assert_eq!(
            connect(&mut admission, ip(9), ClientClass::Unauthenticated).unwrap_err(),
            Refusal::UnauthenticatedFull
        );
        assert_eq!(admission.unauthenticated_from(ip(2)), 2);
        // A refused handshake leaves nothing held behind.
        assert_eq!(admission.counts().handshakes, 0);
        assert_eq!(admission.counts().unauthenticated, 6);
    }

    #[test]
    fn the_authenticated_reserve_is_never_taken_by_unauthenticated_clients() {
        let mut admission = Admission::new(LIMITS);
        // Unauthenticated clients from as many addresses as they like fill their pool ...
        let mut attackers = Vec::new();
        for address in 2..=255 {
            for _ in 0..4 {
                if let Ok(slot) = connect(&mut admission, ip(address), ClientClass::Unauthenticated)
                {
                    attackers.push(slot);
                }
            }
        }
        assert_eq!(attackers.len(), LIMITS.unauthenticated);
        assert_eq!(admission.counts().authenticated, 0);
        // ... and every authenticated slot is still there for members.
        let members: Vec<Slot> = (0..LIMITS.authenticated)
            .map(|n| connect(&mut admission, ip(1), member(&format!("node-{}", n / 2))).unwrap())
            .collect();
        assert_eq!(members.len(), LIMITS.authenticated);
        assert_eq!(
            connect(&mut admission, ip(1), member("node-9")).unwrap_err(),
            Refusal::AuthenticatedFull
        );
    }

    #[test]
    fn one_member_cannot_take_the_whole_authenticated_pool() {
        let mut admission = Admission::new(LIMITS);
        // The cap follows the identity, not the address it connects from.
        let _a = connect(&mut admission, ip(2), member("greedy")).unwrap();
        let _b = connect(&mut admission, ip(3), member("greedy")).unwrap();
        assert_eq!(
            connect(&mut admission, ip(4), member("greedy")).unwrap_err(),
            Refusal::AuthenticatedFullForClient
        );
        assert_eq!(admission.authenticated_of("greedy"), 2);
        connect(&mut admission, ip(2), member("other")).unwrap();
    }

    #[test]
    fn closing_gives_every_kind_of_slot_back() {
        let mut admission = Admission::new(LIMITS);
        let handshake = accept(&mut admission, ip(2)).unwrap();
        let anonymous = connect(&mut admission, ip(2), ClientClass::Unauthenticated).unwrap();
        let known = connect(&mut admission, ip(2), member("n")).unwrap();
        let plain = admission
            .handle_plain_accept(ip(3), ClientClass::Unauthenticated)
            .unwrap();
        assert_eq!(
            admission.counts(),
            AdmissionCounts {
                handshakes: 1,
                unauthenticated: 2,
                authenticated: 1
            }
        );
        for slot in [handshake, anonymous, known, plain] {
            admission.handle_close(slot);
        }
        assert_eq!(admission.counts(), AdmissionCounts::default());
        assert_eq!(admission.unauthenticated_from(ip(2)), 0);
        assert!(admission.handshakes.per_key.is_empty());
        assert!(admission.unauthenticated.per_key.is_empty());
        assert!(admission.authenticated.per_key.is_empty());
        assert!(admission.held.is_empty());
        // Freed slots are usable again, up to the same caps.
        for _ in 0..2 {
            connect(&mut admission, ip(2), ClientClass::Unauthenticated).unwrap();
        }
        assert_eq!(
            connect(&mut admission, ip(2), ClientClass::Unauthenticated).unwrap_err(),
            Refusal::UnauthenticatedFullForAddress
        );
    }

    #[test]
    fn plain_connections_skip_the_handshake_stage() {
        let mut admission = Admission::new(LIMITS);
        let _a = admission.handle_plain_accept(ip(2), member("log")).unwrap();
        let _b = admission
            .handle_plain_accept(ip(2), ClientClass::Unauthenticated)
            .unwrap();
        assert_eq!(admission.counts().handshakes, 0);
        assert_eq!(admission.counts().authenticated, 1);
        assert_eq!(admission.counts().unauthenticated, 1);
    }
}
