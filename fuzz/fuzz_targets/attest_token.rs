//! Feeds arbitrary bytes to the attestation token verifier (`AttestationToken::verify`), which
//! every node runs on the token attached to governance gossip. The first byte picks the mode:
//! even, the rest is a token as received; odd, the next 8 bytes are a big-endian issued-at and
//! the rest a claims payload, signed here with the issuer key so the claims decoder and the
//! policy checks behind the signature are reached too.
//! Invariants: typed errors, never a panic; a verified token re-issues into bytes that verify to
//! the same token; nothing verifies under another issuer key.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use ztmesh_attest::manifest::Manifest;
use ztmesh_attest::{AttestationToken, EvidenceType, TokenPolicy, TOKEN_CONTENT_TYPE, TOKEN_LABEL};
use ztmesh_core::signed::{self, ProtectedFields};

const NOW: u64 = 1_750_000_000;
const KEY_ID: &[u8] = b"mesh-ca-1";

fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        Manifest::new(
            "1.0.0",
            NOW - 86_400,
            NOW + 86_400,
            [[0xb1; 32]].into(),
            Default::default(),
        )
        .expect("a valid manifest")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let issuer = SigningKey::from_bytes(&[8; 32]);
    let stranger = SigningKey::from_bytes(&[6; 32]);
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Some((iat, payload)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let fields = ProtectedFields {
            content_type: Some(TOKEN_CONTENT_TYPE.into()),
            issued_at: Some(u64::from_be_bytes(*iat)),
        };
        match signed::sign_with(
            TOKEN_LABEL,
            KEY_ID,
            &fields,
            payload.to_vec(),
            None,
            |tbs| issuer.sign(tbs).to_bytes(),
        ) {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    };
    let platforms: BTreeSet<EvidenceType> = [
        EvidenceType::Tpm2,
        EvidenceType::Tdx,
        EvidenceType::Sgx,
        EvidenceType::SevSnp,
        EvidenceType::Dev,
    ]
    .into();
    let policy = TokenPolicy {
        manifest: Some(manifest()),
        max_age: Duration::from_secs(86_400),
        platforms: &platforms,
        subject: None,
    };
    assert!(
        AttestationToken::verify(&bytes, &stranger.verifying_key(), &policy, NOW).is_err(),
        "verified under a key that signed nothing"
    );
    if let Ok(token) = AttestationToken::verify(&bytes, &issuer.verifying_key(), &policy, NOW) {
        let again = token
            .issue(&issuer, KEY_ID)
            .expect("a verified token re-issues");
        let reread = AttestationToken::verify(&again, &issuer.verifying_key(), &policy, NOW)
            .expect("a re-issued token verifies");
        assert_eq!(reread, token);
    }
});
