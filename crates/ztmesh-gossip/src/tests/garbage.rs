//! Hostile input: whatever a peer sends, `handle_frame` returns a typed error and never panics.

use proptest::prelude::*;

use super::util::*;
use crate::{GossipConfig, GossipFrame, MessageId};

fn feed(pair: &mut Pair, frame: &[u8]) -> Result<(), crate::GossipError> {
    let (peer, now) = (pair.peer_id, pair.now);
    pair.gossip
        .handle_frame(peer, frame, now, &mut pair.membership)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_frames_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut pair = Pair::new(GossipConfig::default());
        prop_assert!(feed(&mut pair, &bytes).is_err());
        prop_assert_eq!(pair.gossip.stats().delivered, 0);
    }

    #[test]
    fn garbage_envelopes_are_errors(cose in proptest::collection::vec(any::<u8>(), 0..2048), hops in any::<u8>()) {
        let mut pair = Pair::new(GossipConfig::default());
        let frame = GossipFrame::Message { cose, hops_left: hops }.encode().unwrap();
        prop_assert!(feed(&mut pair, &frame).is_err());
        prop_assert!(pair.transmits().is_empty(), "nothing unverified is forwarded");
    }

    #[test]
    fn mutated_messages_never_panic_nor_deliver_other_content(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut pair = Pair::new(GossipConfig::default());
        let genuine = Pair::sign_by(&pair.peer, &pair.unsigned(1));
        let mut frame = Pair::frame(genuine.clone(), 2);
        let at = index.index(frame.len());
        frame[at] ^= 1 << bit;
        if feed(&mut pair, &frame).is_ok() {
            // Only unsigned bytes can change and still be accepted (hops, the carried
            // certificate): the delivered content is the genuine one.
            for event in pair.events() {
                if let crate::GossipEvent::Delivered(message) = event {
                    prop_assert_eq!(message.body, health_body(1));
                    prop_assert_eq!(message.origin, pair.peer_id);
                }
            }
        }
    }

    #[test]
    fn random_digests_and_wants_never_panic(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..64), reply in any::<bool>()) {
        let mut pair = Pair::new(GossipConfig::default());
        let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
        let digest = GossipFrame::Digest { ids: ids.clone(), reply }.encode().unwrap();
        prop_assert!(feed(&mut pair, &digest).is_ok());
        let want = GossipFrame::Want { ids }.encode().unwrap();
        prop_assert!(feed(&mut pair, &want).is_ok());
    }
}

/// What the runtime does when it parses a frame itself first (to gate it by the neighbour's
/// tier): decode once and hand on the parsed form.
fn feed_decoded(pair: &mut Pair, frame: &[u8]) -> Result<(), crate::GossipError> {
    let (peer, now) = (pair.peer_id, pair.now);
    let decoded = GossipFrame::decode(frame, pair.gossip.config());
    pair.gossip
        .handle_decoded_frame(peer, frame.len(), decoded, now, &mut pair.membership)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_frame_parsed_by_the_runtime_is_handled_as_its_bytes_would_be(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        genuine in any::<bool>(),
        hops in any::<u8>(),
    ) {
        let mut raw = Pair::new(GossipConfig::default());
        let mut parsed = Pair::new(GossipConfig::default());
        let frame = if genuine {
            Pair::frame(Pair::sign_by(&raw.peer, &raw.unsigned(1)), hops)
        } else {
            bytes
        };
        // Twice: the second time is a duplicate, or the same refusal again.
        for _ in 0..2 {
            prop_assert_eq!(feed(&mut raw, &frame), feed_decoded(&mut parsed, &frame));
        }
        prop_assert_eq!(raw.gossip.stats(), parsed.gossip.stats());
        prop_assert_eq!(raw.events(), parsed.events());
        prop_assert_eq!(raw.transmits(), parsed.transmits());
    }
}
