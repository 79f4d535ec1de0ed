//! Feeds arbitrary bytes, split at arbitrary points, to the link frame decoder.
//! Invariants: no panic; the decoder never buffers more than it was given; every message it
//! yields re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_core::link::{FrameDecoder, LinkMessage};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize % 17 + 1).unwrap_or(1);
    let mut decoder = FrameDecoder::new();
    let mut fed = 0usize;
    for chunk in data.chunks(split) {
        decoder.push(chunk);
        fed += chunk.len();
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let frame = message.to_frame().expect("a decoded message re-encodes");
                    let again = LinkMessage::from_body(&frame[4..]).expect("re-encoded frame decodes");
                    assert_eq!(again, message);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.buffered() <= fed);
    }
});
