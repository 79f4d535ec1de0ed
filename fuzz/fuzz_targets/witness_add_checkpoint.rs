//! Feeds arbitrary bytes to a witness's `add-checkpoint` path (`ztmesh_tlog::witness`): the body
//! parser, then the decision against a known log key and a known head, then the cosignature.
//! The log here is fixed (16 entries `event 0`..`event 15` under a fixed key), so requests built
//! from it (the seed corpus) pass the signature check and reach the proof checks.
//! Invariants: typed errors, never a panic; a parsed body prints back to a body that parses to
//! the same request; an accepted checkpoint is signed by the log, never rolls back, and only
//! grows from the known head; what the witness cosigns verifies under its key.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use ztmesh_tlog::witness::{parse_cosignature_response, AddCheckpointRequest, SwapOutcome};
use ztmesh_tlog::{CosignatureSigner, MerkleTree, Signer, TreeHead};

const ORIGIN: &str = "ztmesh.example/membership";
const LOG_ENTRIES: u64 = 16;
const COSIGNED_AT: u64 = 1_750_000_000;

struct Fixture {
    log: Signer,
    other: Signer,
    witness: CosignatureSigner,
    tree: MerkleTree,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut tree = MerkleTree::new();
        for i in 0..LOG_ENTRIES {
            tree.append(format!("event {i}").as_bytes());
        }
        Fixture {
            log: Signer::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).expect("log key"),
            other: Signer::new(ORIGIN, SigningKey::from_bytes(&[3; 32])).expect("other key"),
            witness: CosignatureSigner::new("witness.example/w1", SigningKey::from_bytes(&[2; 32]))
                .expect("witness key"),
            tree,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = AddCheckpointRequest::parse(data) else {
        return;
    };
    let body = request.to_body();
    assert_eq!(
        AddCheckpointRequest::parse(body.as_bytes()).expect("reprint parses"),
        request
    );

    let f = fixture();
    // The head the witness knows: the fixed log's at the request's old size, if it has one.
    let known = f
        .tree
        .root_at(request.old_size())
        .ok()
        .map(|root| TreeHead {
            size: request.old_size(),
            root,
        });
    assert!(
        request.check(known, &[]).is_err(),
        "accepted from an unknown log"
    );
    assert!(
        request.check(known, &[f.other.verifier()]).is_err(),
        "accepted under a wrong key"
    );
    let Ok(accepted) = request.check(known, &[f.log.verifier()]) else {
        let _ = request.check(None, &[f.log.verifier()]);
        return;
    };
    assert!(request.note().verify(&[f.log.verifier()]).is_ok());
    assert_eq!(accepted.previous_size(), known.map_or(0, |head| head.size));
    assert!(accepted.new_head().size >= accepted.previous_size());
    assert_eq!(accepted.origin(), ORIGIN);
    let stored = accepted
        .clone()
        .after_swap(SwapOutcome::Swapped)
        .expect("swapped");
    let response = stored.cosign(&[&f.witness], COSIGNED_AT).expect("cosigns");
    let lines = parse_cosignature_response(&response).expect("own response parses");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        f.witness
            .verifier()
            .verify(accepted.note().text(), &lines[0]),
        Ok(COSIGNED_AT)
    );
});
