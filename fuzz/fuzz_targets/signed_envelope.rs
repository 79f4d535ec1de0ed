//! Feeds arbitrary bytes to the COSE_Sign1 envelope parser and verifier (`ztmesh_core::signed`),
//! as every receiver of a gossip message, revocation record, vote or token runs them.
//! Invariants: typed errors, never a panic; what opens re-signs (same key id, content type,
//! issued-at, x5chain and payload) into an envelope that opens to the same fields and verifies;
//! a received envelope verifies under the fixed key only if it was signed with it.
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use ztmesh_core::signed::{self, ProtectedFields};

const LABEL: &str = "ztmesh/v1/fuzz";

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[9; 32]);
    let Ok(opened) = signed::open(data, LABEL, 64 * 1024) else {
        return;
    };
    // Under another label the same bytes open the same way but never verify.
    let other = signed::open(data, "ztmesh/v1/other", 64 * 1024).expect("the label is not parsed");
    let verified = opened.verify(&key.verifying_key()).is_ok();
    if verified {
        assert!(
            other.verify(&key.verifying_key()).is_err(),
            "a signature crossed labels"
        );
    }
    let fields = ProtectedFields {
        content_type: opened.content_type().map(str::to_owned),
        issued_at: opened.issued_at(),
    };
    let Ok(again) = signed::sign_with(
        LABEL,
        opened.key_id(),
        &fields,
        opened.payload().to_vec(),
        opened.x5chain().map(<[u8]>::to_vec),
        |tbs| key.sign(tbs).to_bytes(),
    ) else {
        // Only an issued-at beyond the CBOR int range may be refused on the way out.
        assert!(fields.issued_at.is_some_and(|iat| iat > i64::MAX as u64));
        return;
    };
    let reopened = signed::open(&again, LABEL, usize::MAX).expect("a re-signed envelope opens");
    assert_eq!(reopened.key_id(), opened.key_id());
    assert_eq!(reopened.content_type(), opened.content_type());
    assert_eq!(reopened.issued_at(), opened.issued_at());
    assert_eq!(reopened.x5chain(), opened.x5chain());
    assert_eq!(reopened.payload(), opened.payload());
    reopened
        .verify(&key.verifying_key())
        .expect("a re-signed envelope verifies");
});
