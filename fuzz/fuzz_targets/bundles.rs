//! Feeds arbitrary bytes to the BPv7 bundle decoder and the DTN frame decoder.
//! Invariants: no panic; a decoded bundle re-encodes to bytes that decode to the same bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_dtn::{Bundle, Frame, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(bundle) = Bundle::decode(data, &limits) {
        let bytes = bundle.encode();
        assert_eq!(Bundle::decode(&bytes, &limits).expect("re-encoded bundle decodes"), bundle);
    }
    let _ = Frame::decode(data, &limits);
});
