//! `tpm2_credential` against a real software TPM (swtpm): credentials made by
//! `ztmesh_attest::tpm2_credential` are activated with `tpm2_activatecredential`, for the
//! right AK and EK only, and so are the ones `tpm2_makecredential` makes in software. The swtpm
//! tests are skipped with a printed reason when swtpm or tpm2-tools are missing, except under
//! `CI`, where a missing tool fails the test. The typed-error tests need no tools.

mod swtpm;

use std::process::Command;

use p256::elliptic_curve::sec1::ToEncodedPoint;
use proptest::prelude::*;
use rand_core::{OsRng, RngCore};
use swtpm::{tools_present, SoftwareTpm};
use ztmesh_attest::tpm2::AttestationKey;
use ztmesh_attest::tpm2_credential::{
    AttestationKeyPublic, Credential, CredentialError, EndorsementKey, ObjectName, PublicArea,
    MAX_PUBLIC_AREA_LEN,
};

const TOOLS: &[&str] = &[
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_readpublic",
    "tpm2_makecredential",
    "tpm2_activatecredential",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_flushcontext",
];

// Real public areas from swtpm (tests/fixtures/tpm2_credential/README.md says how they were
// made), for the tests that need no TPM.
const EK_RSA: &[u8] = include_bytes!("fixtures/tpm2_credential/ek_rsa.pub");
const EK_ECC: &[u8] = include_bytes!("fixtures/tpm2_credential/ek_ecc.pub");
const AK_RSA: &[u8] = include_bytes!("fixtures/tpm2_credential/ak_rsa.pub");
const AK_ECC: &[u8] = include_bytes!("fixtures/tpm2_credential/ak_ecc.pub");
const AK_RSA_NAME: &[u8] = include_bytes!("fixtures/tpm2_credential/ak_rsa.name");
/// An RSA EK public area around a key no TPM holds.
const SOFTWARE_EK_RSA: &[u8] = include_bytes!("fixtures/tpm2_credential/ek_software_rsa.pub");
const SOFTWARE_CREDENTIAL_RSA: &[u8] =
    include_bytes!("fixtures/tpm2_credential/credential_software_rsa.out");

impl SoftwareTpm {
    /// TPM2_CreatePrimary with the default EK template of `algorithm` (`rsa` or `ecc`), saved
    /// as `ek.ctx`; answers its TPM2B_PUBLIC.
    fn create_ek(&self, algorithm: &str) -> Vec<u8> {
        self.run(
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", algorithm, "-u", "ek.pub"],
        );
        self.read("ek.pub")
    }

    /// An AK under `ek.ctx`, saved as `<label>.ctx`; answers its TPM2B_PUBLIC and the name
    /// tpm2-tools reported for it.
    fn create_ak(&self, algorithm: &str, label: &str) -> (Vec<u8>, Vec<u8>) {
        let scheme = if algorithm == "ecc" {
            "ecdsa"
        } else {
            "rsassa"
        };
        let (context, public, name) = (
            format!("{label}.ctx"),
            format!("{label}.pub"),
            format!("{label}.name"),
        );
        self.run(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", &context, "-G", algorithm, "-g", "sha256", "-s", scheme,
                "-u", &public, "-n", &name,
            ],
        );
        (self.read(&public), self.read(&name))
    }

    /// TPM2_ActivateCredential of the credential file `credential` with the AK `ak_context`
    /// and `ek.ctx`, authorised by the endorsement hierarchy (PolicySecret) as the EK policy
    /// requires: the recovered secret, or tpm2-tools' complaint.
    fn activate(&self, ak_context: &str, credential: &str) -> Result<Vec<u8>, String> {
        self.run(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        );
        self.run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
        let _ = std::fs::remove_file(self.path("recovered.bin"));
        let activated = self.try_run(
            "tpm2_activatecredential",
            &[
                "-c",
                ak_context,
                "-C",
                "ek.ctx",
                "-i",
                credential,
                "-o",
                "recovered.bin",
                "-P",
                "session:session.ctx",
            ],
        );
        // Whether or not it worked, the session must go: a TPM has few session slots.
        let _ = self.command("tpm2_flushcontext", &["session.ctx"]);
        activated.map(|_| self.read("recovered.bin"))
    }
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// What the verifier holds after the node sent its EK and AK public areas.
struct Enrolment {
    tpm: SoftwareTpm,
    ek: EndorsementKey,
    ak: AttestationKeyPublic,
}

/// An EK and an AK (`ak.ctx`) of `algorithm` in a fresh swtpm, read the way the verifier reads
/// them; the AK name computed here must be the one the TPM reported.
fn enrol(algorithm: &str) -> Enrolment {
    let tpm = SoftwareTpm::start();
    let ek = EndorsementKey::from_tpm2b_public(&tpm.create_ek(algorithm)).unwrap();
    let (ak_public, ak_name) = tpm.create_ak(algorithm, "ak");
    let ak = AttestationKeyPublic::from_tpm2b_public(&ak_public).unwrap();
    assert_eq!(ak.name().as_bytes(), ak_name, "{algorithm} AK name");

    tpm.run("tpm2_readpublic", &["-c", "ek.ctx", "-n", "ek.name"]);
    assert_eq!(
        ek.public_area().name().as_bytes(),
        tpm.read("ek.name"),
        "{algorithm} EK name"
    );
    Enrolment { tpm, ek, ak }
}

/// Our credential for `name`, written where `tpm2_activatecredential -i` reads it.
fn write_credential(enrolment: &Enrolment, name: &ObjectName, secret: &[u8], file: &str) {
    let credential = enrolment
        .ek
        .make_credential(name, secret, &mut OsRng)
        .unwrap();
    enrolment.tpm.write(file, &credential.to_tpm2_tools_file());
}

#[test]
fn credential_made_here_is_activated_by_swtpm() {
    if !tools_present("credential_made_here_is_activated_by_swtpm", TOOLS) {
        return;
    }
    for algorithm in ["rsa", "ecc"] {
        let enrolment = enrol(algorithm);
        let secret = random_secret();
        write_credential(&enrolment, enrolment.ak.name(), &secret, "credential.out");
        assert_eq!(
            enrolment.tpm.activate("ak.ctx", "credential.out").unwrap(),
            secret,
            "{algorithm}"
        );
        // Shorter secrets too (the TPM2B_DIGEST inside carries the length).
        write_credential(&enrolment, enrolment.ak.name(), b"short", "short.out");
        assert_eq!(
            enrolment.tpm.activate("ak.ctx", "short.out").unwrap(),
            b"short",
            "{algorithm}"
        );
        // Activation proved the AK is in this TPM: its key is what the quote verifier pins.
        let pinned = match algorithm {
            "ecc" => matches!(enrolment.ak.attestation_key(), AttestationKey::EcdsaP256(_)),
            _ => matches!(enrolment.ak.attestation_key(), AttestationKey::Rsa(_)),
        };
        assert!(pinned, "{algorithm}");
    }
}

#[test]
fn credential_for_another_ak_name_is_refused_by_swtpm() {
    if !tools_present("credential_for_another_ak_name_is_refused_by_swtpm", TOOLS) {
        return;
    }
    for algorithm in ["rsa", "ecc"] {
        let enrolment = enrol(algorithm);
        let (other_public, _) = enrolment.tpm.create_ak(algorithm, "other_ak");
        let other = AttestationKeyPublic::from_tpm2b_public(&other_public).unwrap();
        assert_ne!(other.name(), enrolment.ak.name());
        let secret = random_secret();
        write_credential(&enrolment, other.name(), &secret, "credential.out");

        let refused = enrolment.tpm.activate("ak.ctx", "credential.out");
        let Err(complaint) = refused else {
            panic!("{algorithm}: activated for the wrong AK");
        };
        // TPM_RC_INTEGRITY: the outer HMAC covers the name.
        assert!(
            complaint.contains("integrity check failed"),
            "{algorithm}: {complaint}"
        );
        // The same credential opens with the AK it names: the name is what was refused.
        assert_eq!(
            enrolment
                .tpm
                .activate("other_ak.ctx", "credential.out")
                .unwrap(),
            secret,
            "{algorithm}"
        );
    }
}

/// A credential for `other_ek` and the enrolled AK is refused; one for the enrolled EK still
/// activates afterwards, so the TPM refused the EK (and is not merely out of order).
fn assert_refused_for_other_ek(
    enrolment: &Enrolment,
    label: &str,
    other_ek: &EndorsementKey,
) -> String {
    assert_ne!(
        other_ek.public_area().name(),
        enrolment.ek.public_area().name(),
        "{label}"
    );
    let credential = other_ek
        .make_credential(enrolment.ak.name(), &random_secret(), &mut OsRng)
        .unwrap();
    enrolment
        .tpm
        .write("credential.out", &credential.to_tpm2_tools_file());
    let refused = enrolment.tpm.activate("ak.ctx", "credential.out");
    let Err(complaint) = refused else {
        panic!("{label}: activated");
    };

    let secret = random_secret();
    write_credential(enrolment, enrolment.ak.name(), &secret, "control.out");
    assert_eq!(
        enrolment.tpm.activate("ak.ctx", "control.out").unwrap(),
        secret,
        "{label}: control"
    );
    complaint
}

#[test]
fn credential_for_another_ek_is_refused_by_swtpm() {
    if !tools_present("credential_for_another_ek_is_refused_by_swtpm", TOOLS) {
        return;
    }
    // Another TPM: its EK is what a node would present to have its AK vouched for by a TPM
    // that does not hold the AK.
    let other_tpm = SoftwareTpm::start();

    let enrolment = enrol("rsa");
    // An RSA key no TPM holds, in the EK template (the fixture's modulus). The TPM cannot
    // OAEP-decrypt the seed; libtpms answers TPM_RC_FAILURE rather than TPM_RC_VALUE, so the
    // code is not pinned here.
    let software = EndorsementKey::from_tpm2b_public(SOFTWARE_EK_RSA).unwrap();
    assert_refused_for_other_ek(&enrolment, "RSA key no TPM holds", &software);
    let other_tpm_ek = EndorsementKey::from_tpm2b_public(&other_tpm.create_ek("rsa")).unwrap();
    assert_refused_for_other_ek(&enrolment, "another TPM's RSA EK", &other_tpm_ek);

    let enrolment = enrol("ecc");
    // A fresh P-256 key in the ECC EK template: any point decrypts to some seed, so the TPM
    // finds out through the outer HMAC.
    let fresh = p256::SecretKey::random(&mut OsRng).public_key();
    let fresh = fresh.to_encoded_point(false);
    let mut fresh_ek = EK_ECC[..EK_ECC.len() - 68].to_vec();
    for coordinate in [fresh.x().unwrap(), fresh.y().unwrap()] {
        fresh_ek.extend([0, 32]);
        fresh_ek.extend_from_slice(coordinate);
    }
    let fresh_ek = EndorsementKey::from_tpm2b_public(&fresh_ek).unwrap();
    let complaint = assert_refused_for_other_ek(&enrolment, "fresh P-256 key", &fresh_ek);
    assert!(complaint.contains("integrity check failed"), "{complaint}");
    let other_tpm_ek = EndorsementKey::from_tpm2b_public(&other_tpm.create_ek("ecc")).unwrap();
    let complaint = assert_refused_for_other_ek(&enrolment, "another TPM's ECC EK", &other_tpm_ek);
    assert!(complaint.contains("integrity check failed"), "{complaint}");
}

#[test]
fn tpm2_makecredential_and_ours_both_activate() {
    if !tools_present("tpm2_makecredential_and_ours_both_activate", TOOLS) {
        return;
    }
    for algorithm in ["rsa", "ecc"] {
        let enrolment = enrol(algorithm);
        let secret = random_secret();
        enrolment.tpm.write("secret.bin", &secret);
        // tpm2-tools in software mode: `-T none`, no TPM involved.
        let name = enrolment.ak.name().to_hex();
        let output = Command::new("tpm2_makecredential")
            .args([
                "-T",
                "none",
                "-u",
                "ek.pub",
                "-s",
                "secret.bin",
                "-n",
                &name,
            ])
            .args(["-o", "theirs.out"])
            .current_dir(enrolment.tpm.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tpm2_makecredential: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        write_credential(&enrolment, enrolment.ak.name(), &secret, "ours.out");

        // Same layout (OAEP and ECDH are randomized, so the bytes differ).
        let theirs = Credential::from_tpm2_tools_file(&enrolment.tpm.read("theirs.out")).unwrap();
        let ours = Credential::from_tpm2_tools_file(&enrolment.tpm.read("ours.out")).unwrap();
        assert_eq!(
            theirs.credential_blob.len(),
            ours.credential_blob.len(),
            "{algorithm}"
        );
        assert_eq!(
            theirs.encrypted_secret.len(),
            ours.encrypted_secret.len(),
            "{algorithm}"
        );
        for file in ["theirs.out", "ours.out"] {
            assert_eq!(
                enrolment.tpm.activate("ak.ctx", file).unwrap(),
                secret,
                "{algorithm} {file}"
            );
        }
    }
}

fn reason<T: std::fmt::Debug>(result: Result<T, CredentialError>) -> &'static str {
    let error = result.unwrap_err();
    assert!(error.is_peer_fault(), "{error}");
    error.reason()
}

fn with(bytes: &[u8], offset: usize, replacement: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[offset..offset + replacement.len()].copy_from_slice(replacement);
    out
}

#[test]
fn garbage_public_areas_get_typed_errors() {
    // Sizes.
    assert_eq!(reason(EndorsementKey::from_tpm2b_public(&[])), "truncated");
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(
            &EK_RSA[..EK_RSA.len() - 1]
        )),
        "truncated"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpmt_public(&EK_RSA[2..100])),
        "truncated"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&[EK_RSA, &[0]].concat())),
        "malformed"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&[0, 0])),
        "malformed"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&vec![
            0;
            MAX_PUBLIC_AREA_LEN
                + 1
        ])),
        "too_large"
    );
    // The TPM2B size must be the TPMT_PUBLIC's: one byte more is a trailing byte.
    let mut longer = [EK_RSA, &[0]].concat();
    longer[..2].copy_from_slice(&((EK_RSA.len() - 1) as u16).to_be_bytes());
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&longer)),
        "malformed"
    );

    // Roles: an AK is not an EK and an EK is not an AK.
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(AK_RSA)),
        "wrong_key_kind"
    );
    assert_eq!(
        reason(AttestationKeyPublic::from_tpm2b_public(EK_ECC)),
        "wrong_key_kind"
    );
    // The EK with its sign bit set, the AK with its decrypt bit set.
    let mut attributes = u32::from_be_bytes(EK_RSA[6..10].try_into().unwrap());
    attributes |= 1 << 18;
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(
            EK_RSA,
            6,
            &attributes.to_be_bytes()
        ))),
        "wrong_key_kind"
    );
    let mut attributes = u32::from_be_bytes(AK_ECC[6..10].try_into().unwrap());
    attributes |= 1 << 17;
    assert_eq!(
        reason(AttestationKeyPublic::from_tpm2b_public(&with(
            AK_ECC,
            6,
            &attributes.to_be_bytes()
        ))),
        "wrong_key_kind"
    );

    // Algorithms: a keyedhash object, a SHA-1 name, an AES-CBC EK, a P-384 curve id.
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(EK_RSA, 2, &[0, 8]))),
        "unsupported"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(EK_RSA, 4, &[0, 4]))),
        "unsupported"
    );
    // EK template layout: size(2) type(2) nameAlg(2) attributes(4) policy(2 + 32), then
    // symmetric algorithm(2) keyBits(2) mode(2) at offset 44.
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(
            EK_RSA,
            48,
            &[0, 0x42]
        ))),
        "unsupported"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(
            EK_ECC,
            52,
            &[0, 4]
        ))),
        "unsupported"
    );

    // Keys: a point off the curve, a modulus shorter than its declared size.
    let last = EK_ECC.len() - 1;
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(
            EK_ECC,
            last,
            &[EK_ECC[last] ^ 1]
        ))),
        "malformed"
    );
    assert_eq!(
        reason(EndorsementKey::from_tpm2b_public(&with(
            EK_RSA,
            52,
            &3072u16.to_be_bytes()
        ))),
        "malformed"
    );

    // Names.
    assert_eq!(reason(ObjectName::from_bytes(&[])), "truncated");
    assert_eq!(
        reason(ObjectName::from_bytes(&AK_RSA_NAME[..33])),
        "truncated"
    );
    assert_eq!(
        reason(ObjectName::from_bytes(&[AK_RSA_NAME, &[0]].concat())),
        "malformed"
    );
    assert_eq!(
        reason(ObjectName::from_bytes(&with(AK_RSA_NAME, 0, &[0, 4]))),
        "unsupported"
    );
    assert_eq!(reason(ObjectName::from_bytes(&[0; 67])), "too_large");

    // Credential files.
    assert_eq!(
        reason(Credential::from_tpm2_tools_file(&with(
            SOFTWARE_CREDENTIAL_RSA,
            0,
            &[0]
        ))),
        "malformed"
    );
    assert_eq!(
        reason(Credential::from_tpm2_tools_file(
            &SOFTWARE_CREDENTIAL_RSA[..SOFTWARE_CREDENTIAL_RSA.len() - 1]
        )),
        "truncated"
    );

    // And the real ones still read.
    for ek in [EK_RSA, EK_ECC, SOFTWARE_EK_RSA] {
        EndorsementKey::from_tpm2b_public(ek).unwrap();
    }
    for ak in [AK_RSA, AK_ECC] {
        AttestationKeyPublic::from_tpm2b_public(ak).unwrap();
    }
}

/// Every parser, fed the same bytes; none may panic.
fn parse_everything(bytes: &[u8]) {
    let _ = PublicArea::from_tpm2b_public(bytes);
    let _ = PublicArea::from_tpmt_public(bytes);
    let _ = EndorsementKey::from_tpm2b_public(bytes);
    let _ = EndorsementKey::from_tpmt_public(bytes);
    let _ = AttestationKeyPublic::from_tpm2b_public(bytes);
    let _ = AttestationKeyPublic::from_tpmt_public(bytes);
    let _ = ObjectName::from_bytes(bytes);
    let _ = Credential::from_tpm2_tools_file(bytes);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        parse_everything(&bytes);
    }

    #[test]
    fn damaged_public_areas_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = [EK_RSA, EK_ECC, AK_RSA, AK_ECC][which].to_vec();
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        parse_everything(&bytes);
        if bytes.len() > 2 {
            parse_everything(&bytes[2..]);
        }
        // Whatever still reads as an EK can have a credential made for it.
        if let Ok(ek) = EndorsementKey::from_tpm2b_public(&bytes) {
            let name = ObjectName::from_bytes(AK_RSA_NAME).unwrap();
            let credential = ek.make_credential(&name, b"secret", &mut OsRng);
            prop_assert!(credential.is_ok(), "{:?}", credential);
        }
    }
}
