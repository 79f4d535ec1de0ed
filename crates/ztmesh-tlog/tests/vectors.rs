//! Published known-answer vectors: every RFC 6962 inclusion and consistency case from the
//! transparency-dev/merkle test data, and the C2SP signed-note vectors (see
//! `shared/vectors/README.md`).
//!
//! The vectors live beside the checkout. When they are missing the tests fail under CI (`CI`
//! set) and otherwise say loudly that they skipped.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use ztmesh_tlog::merkle::{verify_consistency, verify_inclusion, Hash};
use ztmesh_tlog::{KeyError, Note, Signer, Verifier};

/// The vectors directory, or `None` (after failing in CI or warning elsewhere) if it is absent.
fn vectors_dir(what: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors");
    if dir.join(what).exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "published vectors missing at {}: they must be present in CI",
            dir.join(what).display()
        );
    }
    eprintln!(
        "\n!!!! SKIPPED: published vectors not found at {} — these known-answer tests did NOT run !!!!\n",
        dir.join(what).display()
    );
    None
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn b64(text: &str) -> Vec<u8> {
    BASE64.decode(text).expect("vector fields are valid base64")
}

/// A hash the verifier receives as input to check (leaf hash or proof element), and whether it
/// had to be substituted. The suite's verifier refuses one that is not 32 bytes; a typed `Hash`
/// cannot even carry it, so such a case counts as refused at decoding. To still exercise the
/// verifier, the value is replaced by the all-zero hash and the case must be refused again.
fn input_hash(text: &str) -> (Hash, bool) {
    match Hash::from_slice(&b64(text)) {
        Some(hash) => (hash, false),
        None => (Hash::from_bytes([0; 32]), true),
    }
}

/// A root to compare against. The suite compares roots as byte strings, so a root that is not 32
/// bytes simply never equals a computed one but may equal another given root. Mapping it through
/// a domain-separated SHA-256 keeps exactly those equalities.
fn root(text: &str) -> Hash {
    let bytes = b64(text);
    Hash::from_slice(&bytes).unwrap_or_else(|| {
        let mut hasher = Sha256::new();
        hasher.update(b"ztmesh test: root of another length\0");
        hasher.update(&bytes);
        Hash::from_bytes(hasher.finalize().into())
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[test]
fn rfc6962_inclusion_vectors() {
    let Some(dir) = vectors_dir("rfc6962/inclusion") else {
        return;
    };
    let mut files = Vec::new();
    json_files(&dir.join("rfc6962/inclusion"), &mut files);
    assert!(
        files.len() > 50,
        "expected the whole suite, found {}",
        files.len()
    );
    let (mut ok, mut refused) = (0, 0);
    for file in &files {
        let case: InclusionCase = serde_json::from_slice(&fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (proof, mut substituted): (Vec<Hash>, Vec<bool>) = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| input_hash(p))
            .unzip();
        let (leaf, leaf_substituted) = input_hash(&case.leaf_hash);
        substituted.push(leaf_substituted);
        let result = verify_inclusion(
            &leaf,
            case.leaf_idx,
            case.tree_size,
            &proof,
            &root(&case.root),
        );
        if substituted.contains(&true) {
            assert!(
                case.want_err,
                "{}: a non-hash input in an accepted case",
                file.display()
            );
            assert!(
                result.is_err(),
                "{}: substituted input accepted",
                file.display()
            );
        }
        assert_eq!(
            result.is_err(),
            case.want_err,
            "{} ({}): {result:?}",
            file.display(),
            case.desc
        );
        if case.want_err {
            refused += 1;
        } else {
            ok += 1;
        }
    }
    eprintln!(
        "inclusion vectors: {} files, {ok} accepted, {refused} refused",
        files.len()
    );
}

#[test]
fn rfc6962_consistency_vectors() {
    let Some(dir) = vectors_dir("rfc6962/consistency") else {
        return;
    };
    let mut files = Vec::new();
    json_files(&dir.join("rfc6962/consistency"), &mut files);
    assert!(
        files.len() > 50,
        "expected the whole suite, found {}",
        files.len()
    );
    let (mut ok, mut refused) = (0, 0);
    for file in &files {
        let case: ConsistencyCase = serde_json::from_slice(&fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (proof, substituted): (Vec<Hash>, Vec<bool>) = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| input_hash(p))
            .unzip();
        let result = verify_consistency(
            case.size1,
            case.size2,
            &proof,
            &root(&case.root1),
            &root(&case.root2),
        );
        if substituted.contains(&true) {
            assert!(
                case.want_err,
                "{}: a non-hash input in an accepted case",
                file.display()
            );
            assert!(
                result.is_err(),
                "{}: substituted input accepted",
                file.display()
            );
        }
        assert_eq!(
            result.is_err(),
            case.want_err,
            "{} ({}): {result:?}",
            file.display(),
            case.desc
        );
        if case.want_err {
            refused += 1;
        } else {
            ok += 1;
        }
    }
    eprintln!(
        "consistency vectors: {} files, {ok} accepted, {refused} refused",
        files.len()
    );
}

#[derive(Deserialize)]
struct NoteVectors {
    vectors: Vec<NoteVector>,
}

#[derive(Deserialize)]
struct NoteVector {
    name: String,
    vkey: String,
    skey: Option<String>,
    note: Option<String>,
    valid: Option<bool>,
    valid_key: Option<bool>,
}

#[test]
fn signed_note_vectors() {
    let Some(dir) = vectors_dir("signed-note.json") else {
        return;
    };
    let file: NoteVectors =
        serde_json::from_slice(&fs::read(dir.join("signed-note.json")).unwrap()).unwrap();
    assert!(!file.vectors.is_empty());
    let mut checked = 0;
    for vector in &file.vectors {
        let name = &vector.name;
        if vector.valid_key == Some(false) {
            let err = Verifier::parse(&vector.vkey).expect_err(name);
            assert!(
                matches!(
                    err,
                    KeyError::Malformed
                        | KeyError::BadKeyMaterial
                        | KeyError::WrongType { .. }
                        | KeyError::KeyIdMismatch { .. }
                ),
                "{name}: {err:?}"
            );
            checked += 1;
            continue;
        }
        let verifier = Verifier::parse(&vector.vkey).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The vkey prints back to itself.
        assert_eq!(verifier.to_string(), vector.vkey, "{name}");

        if let Some(skey) = &vector.skey {
            let signer = Signer::from_private_key(skey).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(signer.vkey(), vector.vkey, "{name}");
            assert_eq!(&signer.private_key(), skey, "{name}");
            // Ed25519 is deterministic: signing the text again gives the published note.
            if let Some(text) = &vector.note {
                let parsed = Note::parse(text).unwrap();
                let resigned = Note::sign(parsed.text(), &[&signer]).unwrap();
                assert_eq!(&resigned.to_string(), text, "{name}");
            }
        }

        if let Some(text) = &vector.note {
            let note = Note::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&note.to_string(), text, "{name}: prints back exactly");
            let result = note.verify(std::slice::from_ref(&verifier));
            assert_eq!(
                result.is_ok(),
                vector.valid.unwrap_or(true),
                "{name}: {result:?}"
            );
            if let Ok(verified) = result {
                assert_eq!(
                    verified.verified_signatures().next().unwrap().name(),
                    verifier.name()
                );
                // A flipped bit anywhere in the text breaks it.
                let tampered = text.replacen(|c: char| c.is_ascii_lowercase(), "Z", 1);
                let tampered = Note::parse(&tampered).unwrap();
                assert!(tampered.verify(std::slice::from_ref(&verifier)).is_err());
            }
        }
        checked += 1;
    }
    assert_eq!(checked, file.vectors.len());
    eprintln!("signed-note vectors: {checked} checked");
}
