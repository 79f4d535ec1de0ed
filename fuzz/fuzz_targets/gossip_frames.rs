//! Feeds arbitrary bytes to the gossip frame decoder, the COSE envelope parser and a gossip core.
//! Invariants: no panic; a decoded frame re-encodes to bytes that decode to the same frame;
//! garbage from a peer is never delivered (nothing here is signed by a known origin).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::{
    Gossip, GossipConfig, GossipEvent, GossipFrame, Membership, MessageKind, OriginRefusal,
};

/// Knows nobody: every origin is refused.
struct Nobody;

impl Membership for Nobody {
    fn resolve_origin(
        &mut self,
        _origin: &NodeId,
        _kind: MessageKind,
        _certificate: Option<&[u8]>,
        _at: Timestamp,
    ) -> Result<ed25519_dalek::VerifyingKey, OriginRefusal> {
        Err(OriginRefusal::Unknown)
    }
}

fuzz_target!(|data: &[u8]| {
    let config = GossipConfig::default();
    if let Ok(frame) = GossipFrame::decode(data, &config) {
        let bytes = frame.encode().expect("a decoded frame re-encodes");
        assert_eq!(GossipFrame::decode(&bytes, &config).expect("re-encoded frame decodes"), frame);
    }
    let _ = ztmesh_core::signed::open(data, ztmesh_gossip::GOSSIP_LABEL, 64 * 1024);

    let local = NodeId::from_spki_der(b"local");
    let peer = NodeId::from_spki_der(b"peer");
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let mut gossip = Gossip::new(local, config, rand_chacha::ChaCha8Rng::seed_from_u64(1));
    gossip.handle_link_up(peer, now);
    let _ = gossip.handle_frame(peer, data, now, &mut Nobody);
    while let Some(event) = gossip.poll_event() {
        assert!(!matches!(event, GossipEvent::Delivered(_)), "garbage was delivered");
    }
});
