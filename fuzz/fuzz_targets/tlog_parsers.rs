//! Feeds arbitrary text to the signed-note, checkpoint, policy and add-checkpoint parsers.
//! Invariants: no panic; what parses prints back to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_tlog::{AddCheckpointRequest, Checkpoint, Note, Policy};

fuzz_target!(|data: &[u8]| {
    let _ = AddCheckpointRequest::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        assert_eq!(Checkpoint::parse(&checkpoint.to_string()).expect("reprint parses"), checkpoint);
    }
    if let Ok(note) = Note::parse(text) {
        assert_eq!(note.to_string(), text, "a note prints back byte for byte");
    }
    if let Ok(policy) = Policy::parse(text) {
        assert_eq!(Policy::parse(&policy.to_string()).expect("reprint parses"), policy);
    }
});
