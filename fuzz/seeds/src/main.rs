//! Writes the valid seed inputs of `fuzz/corpus/<target>/` from the repository's fixtures and
//! the fixed keys the fuzz targets trust (dev TEE `[7; 32]`, token issuer `[8; 32]`, envelope
//! key `[9; 32]`, log `[1; 32]`, witness `[2; 32]`, rotation identity from ChaCha8 seed 5).
//! Run when a format or a target's keys change: `cd fuzz/seeds && cargo run`. Outside the
//! workspace and not run by CI; the seeds it writes are committed.
use std::fs;
use std::path::Path;

use base64::Engine as _;
use ciborium::Value;
use ed25519_dalek::{Signer as _, SigningKey};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ztmesh_attest::tpm2::Tpm2Evidence;
use ztmesh_attest::{dev, AttestationToken, EvidenceType};
use ztmesh_core::signed::{self, ProtectedFields};
use ztmesh_core::TrustDomain;
use ztmesh_pki::{EnrollmentToken, IdentityKey, IdentityProofDomain, TlsKeyPair};
use ztmesh_tlog::witness::AddCheckpointRequest;
use ztmesh_tlog::{Checkpoint, CosignatureSigner, MerkleTree, Note, Signer};

const FIX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crates/ztmesh-attest/tests/fixtures"
);
const NOW: u64 = 1_750_000_000;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus")).join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn main() {
    let fix = |p: &str| fs::read(format!("{FIX}/{p}")).unwrap();

    // ---- dev evidence
    let dev_key = SigningKey::from_bytes(&[7; 32]);
    let evidence = dev::generate(&dev_key, &[0x11; 32], &[0x5a; 64], NOW - 100);
    put("attest_dev", "valid", &with_mode(0, &evidence));
    let Value::Array(parts) = ciborium::from_reader::<Value, _>(&evidence[..]).unwrap() else {
        panic!()
    };
    let Value::Bytes(payload) = &parts[0] else {
        panic!()
    };
    put("attest_dev", "claims", &with_mode(1, payload));
    let stale = dev::generate(&dev_key, &[0x22; 32], &[0x00; 64], 1_000);
    put(
        "attest_dev",
        "stale_wrong_report_data",
        &with_mode(0, &stale),
    );

    // ---- tpm2
    let ak_pem = String::from_utf8(fix("tpm2/ak.pem")).unwrap();
    let ak_der = pem::parse(&ak_pem).unwrap().into_contents();
    let tpm = Tpm2Evidence::from_quote_outputs(
        &fix("tpm2/quote.msg"),
        &fix("tpm2/quote.sig"),
        &ak_der,
        &fix("tpm2/pcrs.bin"),
    )
    .unwrap()
    .encode();
    put("attest_tpm2", "evidence", &tpm);
    put("attest_tpm2", "quote_msg", &fix("tpm2/quote.msg"));
    put("attest_tpm2", "quote_sig", &fix("tpm2/quote.sig"));
    put("attest_tpm2", "ak_pem", ak_pem.as_bytes());
    put(
        "attest_tpm2",
        "ek_rsa_pub",
        &fix("tpm2_credential/ek_rsa.pub"),
    );
    put(
        "attest_tpm2",
        "ek_ecc_pub",
        &fix("tpm2_credential/ek_ecc.pub"),
    );
    put(
        "attest_tpm2",
        "ak_rsa_pub",
        &fix("tpm2_credential/ak_rsa.pub"),
    );
    put(
        "attest_tpm2",
        "ak_ecc_pub",
        &fix("tpm2_credential/ak_ecc.pub"),
    );
    put(
        "attest_tpm2",
        "credential_rsa",
        &fix("tpm2_credential/credential_software_rsa.out"),
    );

    // ---- dcap, sev
    put(
        "attest_dcap",
        "tdx_quote",
        &with_mode(0, &fix("dcap/tdx_quote")),
    );
    put(
        "attest_dcap",
        "sgx_quote",
        &with_mode(1, &fix("dcap/sgx_quote")),
    );
    put(
        "attest_dcap",
        "tdx_collateral",
        &with_mode(2, &fix("dcap/tdx_quote_collateral.json")),
    );
    put(
        "attest_dcap",
        "sgx_collateral",
        &with_mode(3, &fix("dcap/sgx_quote_collateral.json")),
    );
    let report = hex::decode(
        String::from_utf8(fix("sev/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    put("attest_sev", "report", &with_mode(0, &report));
    let vcek = fix("sev/vcek_milan.der");
    put("attest_sev", "vcek_der", &with_mode(1, &vcek));
    put(
        "attest_sev",
        "vcek_pem",
        &with_mode(
            1,
            pem::encode(&pem::Pem::new("CERTIFICATE", vcek.clone())).as_bytes(),
        ),
    );

    // ---- token
    let issuer = SigningKey::from_bytes(&[8; 32]);
    let token = AttestationToken {
        server_pubkey:
            b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00subject-spki-0123456789abcd".to_vec(),
        platform: EvidenceType::Tpm2,
        attestation_hash: [0x33; 32],
        binary_hash: [0xb1; 32],
        timestamp: NOW - 10,
        attestation_timestamp: NOW - 20,
    };
    let bytes = token.issue(&issuer, b"mesh-ca-1").unwrap();
    put("attest_token", "valid", &with_mode(0, &bytes));
    let opened = signed::open(&bytes, ztmesh_attest::TOKEN_LABEL, usize::MAX).unwrap();
    let mut claims = vec![1u8];
    claims.extend_from_slice(&(NOW - 10).to_be_bytes());
    claims.extend_from_slice(opened.payload());
    put("attest_token", "claims", &claims);
    let other = AttestationToken {
        platform: EvidenceType::Dev,
        binary_hash: [0xee; 32],
        ..token.clone()
    };
    put(
        "attest_token",
        "unapproved_binary",
        &with_mode(0, &other.issue(&issuer, b"mesh-ca-1").unwrap()),
    );

    // ---- signed envelopes
    let key = SigningKey::from_bytes(&[9; 32]);
    let label = "ztmesh/v1/fuzz";
    let plain = signed::sign(label, b"kid", b"payload".to_vec(), None, |t| {
        key.sign(t).to_bytes()
    })
    .unwrap();
    put("signed_envelope", "plain", &plain);
    let fields = ProtectedFields {
        content_type: Some("application/vnd.ztmesh.test+cbor".into()),
        issued_at: Some(NOW),
    };
    let full = signed::sign_with(
        label,
        b"key-2",
        &fields,
        vec![0xa0],
        Some(fix("sev/vcek_milan.der")),
        |t| key.sign(t).to_bytes(),
    )
    .unwrap();
    put("signed_envelope", "fields_x5chain", &full);
    put("signed_envelope", "token", &bytes);

    // ---- enrollment / rotation / tpm2 credential requests
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let etoken = EnrollmentToken::generate(&mut rng);
    let identity = IdentityKey::generate(&mut rng);
    let node_id = identity.public().node_id();
    let td: TrustDomain = "mesh.test".parse().unwrap();
    let tls = TlsKeyPair::generate().unwrap();
    let csr = tls.csr_der(&node_id, &td).unwrap();
    let spki = ztmesh_pki::csr_public_key(&csr).unwrap();
    let proof = identity.sign_proof(IdentityProofDomain::EnrollCsr, &csr);
    let report_data = ztmesh_attest::report_data_binding(&etoken.hash().0, &spki);
    let dev_evidence = dev::generate(&dev_key, &[0x11; 32], &report_data, NOW - 60);
    let att_payload = cbor(&Value::Map(vec![(
        Value::Text("evidence".into()),
        Value::Bytes(dev_evidence),
    )]));
    let enroll = serde_json::json!({
        "token": etoken.as_str(),
        "csr": b64(&csr),
        "identity_key": b64(&identity.public().to_spki_der()),
        "identity_proof": b64(&proof),
        "node_id": node_id.to_string(),
        "attestation": {"type": "dev", "payload": b64(&att_payload)},
    });
    put("ca_requests", "enroll_dev", enroll.to_string().as_bytes());
    let tpm_payload = cbor(&Value::Map(vec![
        (Value::Text("evidence".into()), Value::Bytes(tpm.clone())),
        (
            Value::Text("collateral".into()),
            Value::Bytes(ak_pem.as_bytes().to_vec()),
        ),
    ]));
    let csr_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr.clone()));
    let enroll_tpm = serde_json::json!({
        "token": etoken.as_str(),
        "csr": csr_pem,
        "identity_key": b64(&identity.public().to_spki_der()),
        "identity_proof": b64(&proof),
        "attestation": {"type": "tpm2", "payload": b64(&tpm_payload)},
        "tpm2_credential_secret": hex::encode(fix("tpm2_credential/secret.bin")),
    });
    put(
        "ca_requests",
        "enroll_tpm2",
        serde_json::to_string_pretty(&enroll_tpm)
            .unwrap()
            .as_bytes(),
    );
    let bare = serde_json::json!({
        "token": etoken.as_str(),
        "csr": b64(&csr),
        "identity_key": b64(&identity.public().to_spki_der()),
        "identity_proof": b64(&proof),
    });
    put("ca_requests", "enroll_bare", bare.to_string().as_bytes());
    let rotator = IdentityKey::generate(&mut ChaCha8Rng::seed_from_u64(5));
    let rotate = serde_json::json!({
        "csr": b64(&csr),
        "identity_proof": b64(&rotator.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
    });
    put("ca_requests", "rotate", rotate.to_string().as_bytes());
    let cred = serde_json::json!({
        "token": etoken.as_str(),
        "ek_public": b64(&fix("tpm2_credential/ek_rsa.pub")),
        "ak_public": b64(&fix("tpm2_credential/ak_rsa.pub")),
    });
    put(
        "ca_requests",
        "tpm2_credential",
        cred.to_string().as_bytes(),
    );
    put("pki_parsers", "csr", &csr);
    put("pki_parsers", "token", etoken.as_str().as_bytes());
    put(
        "pki_parsers",
        "identity_spki",
        &identity.public().to_spki_der(),
    );
    put("pki_parsers", "csr_pem", csr_pem.as_bytes());

    // ---- tlog: witness requests, policies
    let origin = "ztmesh.example/membership";
    let log = Signer::new(origin, SigningKey::from_bytes(&[1; 32])).unwrap();
    let witness =
        CosignatureSigner::new("witness.example/w1", SigningKey::from_bytes(&[2; 32])).unwrap();
    let mut tree = MerkleTree::new();
    for i in 0..16u64 {
        tree.append(format!("event {i}").as_bytes());
    }
    let note_at = |size: u64| {
        let checkpoint = Checkpoint::new(origin, size, tree.root_at(size).unwrap()).unwrap();
        Note::sign(&checkpoint.to_string(), &[&log]).unwrap()
    };
    for (old, new) in [(0, 5), (3, 7), (5, 16), (16, 16), (7, 12), (1, 2)] {
        let proof = tree.consistency_proof(old, new).unwrap();
        let request = AddCheckpointRequest::new(old, proof, note_at(new)).unwrap();
        put(
            "witness_add_checkpoint",
            &format!("old{old}_new{new}"),
            request.to_body().as_bytes(),
        );
        if old == 5 {
            put(
                "tlog_parsers",
                "add_checkpoint",
                request.to_body().as_bytes(),
            );
        }
    }
    let mut cosigned = note_at(5);
    cosigned
        .add_signature(witness.cosign(cosigned.text(), NOW).unwrap())
        .unwrap();
    put(
        "tlog_parsers",
        "cosigned_note",
        cosigned.to_string().as_bytes(),
    );
    put("tlog_parsers", "checkpoint", note_at(5).text().as_bytes());
    let w2 =
        CosignatureSigner::new("witness.example/w2", SigningKey::from_bytes(&[4; 32])).unwrap();
    let w3 =
        CosignatureSigner::new("witness.example/w3", SigningKey::from_bytes(&[5; 32])).unwrap();
    let vk = |v: String| v;
    let policies = [
        ("single", format!("log {}\nwitness w1 {}\nquorum w1\n", log.vkey(), witness.vkey())),
        ("group", format!(
            "# membership log and its witnesses\nlog {} https://ca.example/log\nwitness w1 {} https://w1.example\nwitness w2 {}\nwitness w3 {}\ngroup two 2 w1 w2 w3\ngroup any-of any w2 w3\ngroup both all two any-of\nquorum both\n",
            log.vkey(), vk(witness.vkey()), w2.vkey(), w3.vkey())),
        ("none", format!("log {}\nquorum none\n", log.vkey())),
    ];
    for (name, text) in &policies {
        put("tlog_policy", name, text.as_bytes());
        put("tlog_parsers", &format!("policy_{name}"), text.as_bytes());
    }
    println!("ok");
}
