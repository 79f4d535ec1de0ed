//! Feeds arbitrary bytes to the `dev` evidence verifier (`ztmesh_attest::dev`), the simulated
//! TEE a CA may accept at enrollment. The first byte picks the mode: even, the bytes are the
//! evidence as received; odd, the rest is a claims payload signed here with the trusted dev key,
//! so the claims parser behind the signature check is reached too.
//! Invariants: typed errors, never a panic; a verdict is only ever given for evidence signed by
//! the trusted key, and carries the expected report data.
#![no_main]

use std::time::Duration;

use ciborium::Value;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use ztmesh_attest::{dev, Expectations};

const NOW: u64 = 1_750_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let trusted = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    let evidence = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // The envelope `dev::generate` writes: [payload bstr, signature bstr], the signature
        // over the signing context and the payload.
        let mut message = dev::SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(rest);
        let signature = trusted.sign(&message).to_bytes().to_vec();
        let mut out = Vec::new();
        ciborium::into_writer(
            &Value::Array(vec![Value::Bytes(rest.to_vec()), Value::Bytes(signature)]),
            &mut out,
        )
        .expect("CBOR into a Vec");
        out
    };
    let expectations = Expectations {
        report_data: Some(vec![0x5a; 64]),
        max_age: Some(Duration::from_secs(86_400)),
        allow_dev: true,
        ..Expectations::default()
    };
    let open = Expectations {
        allow_dev: true,
        ..Expectations::default()
    };
    let keys = [other, trusted.verifying_key()];
    if let Ok(verdict) = dev::verify_any(&evidence, &keys, &expectations, NOW) {
        assert_eq!(verdict.report_data, hex::encode([0x5a; 64]));
        assert!(dev::verify(&evidence, &trusted.verifying_key(), &expectations, NOW).is_ok());
    }
    let _ = dev::verify(&evidence, &trusted.verifying_key(), &open, NOW);
    assert!(
        dev::verify_any(&evidence, &[other], &open, NOW).is_err(),
        "verified by the wrong key"
    );
    // Without the policy's consent nothing is even parsed.
    assert!(dev::verify(
        &evidence,
        &trusted.verifying_key(),
        &Expectations::default(),
        NOW
    )
    .is_err());
});
