//! Feeds arbitrary bytes to the tlog-policy parser (`ztmesh_tlog::Policy`, the policy files a
//! CA and its witnesses are configured with), then judges a fixed cosigned checkpoint with what
//! parsed. The checkpoint is signed by the log key `[1; 32]` under `ztmesh.example/membership`
//! and cosigned by the witness key `[2; 32]` named `witness.example/w1`, so a policy naming
//! them (the seed corpus) reaches the quorum logic.
//! Invariants: typed errors, never a panic; a parsed policy prints back to text that parses to
//! the same policy; the quorum is monotone (more cosigners never turn a yes into a no); a
//! verified checkpoint's cosigners meet the quorum.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use ztmesh_tlog::{Checkpoint, CosignatureSigner, MerkleTree, Note, Policy, Signer};

const ORIGIN: &str = "ztmesh.example/membership";

fn cosigned_note() -> &'static Note {
    static NOTE: OnceLock<Note> = OnceLock::new();
    NOTE.get_or_init(|| {
        let mut tree = MerkleTree::new();
        for i in 0..5 {
            tree.append(format!("event {i}").as_bytes());
        }
        let log = Signer::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).expect("log key");
        let witness =
            CosignatureSigner::new("witness.example/w1", SigningKey::from_bytes(&[2; 32]))
                .expect("witness key");
        let checkpoint =
            Checkpoint::new(ORIGIN, 5, tree.root_at(5).expect("root")).expect("checkpoint");
        let mut note = Note::sign(&checkpoint.to_string(), &[&log]).expect("signed");
        note.add_signature(
            witness
                .cosign(note.text(), 1_750_000_000)
                .expect("cosigned"),
        )
        .expect("added");
        note
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::parse_bytes(data) else {
        return;
    };
    assert_eq!(
        Policy::parse(&policy.to_string()).expect("reprint parses"),
        policy
    );

    let names: Vec<&str> = policy.witnesses().iter().map(|w| w.name.as_str()).collect();
    let all = policy.evaluate(names.iter().copied());
    if policy.evaluate([]) {
        assert!(all, "no cosigner meets the quorum but all do not");
    }
    // Every subset given by the first input byte's bits against the full set.
    let mask = data.first().copied().unwrap_or(0);
    let subset = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 8 && mask & (1 << i) != 0);
    if policy.evaluate(subset.map(|(_, name)| *name)) {
        assert!(all, "a subset meets the quorum but the full set does not");
    }

    if let Ok(verified) = policy.verify_checkpoint(cosigned_note()) {
        assert!(policy.evaluate(verified.cosigners.keys().map(String::as_str)));
        assert_eq!(verified.checkpoint.origin(), ORIGIN);
    }
});
