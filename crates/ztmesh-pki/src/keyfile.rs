//! Key files encrypted at rest: argon2id derives a key from the passphrase, XChaCha20-Poly1305
//! seals the PKCS#8 DER. The file is PEM with label `ZTMESH ENCRYPTED PRIVATE KEY` whose body is
//! `magic "ZTK1" || m_cost u32 || t_cost u32 || p_cost u32 || salt[16] || nonce[24] || ciphertext`
//! (integers big-endian); the header bytes are the AEAD associated data, so parameters cannot be
//! downgraded silently.
//!
//! A plaintext PKCS#8 file (`PRIVATE KEY`) is only written or read when the caller passes
//! [`Protection::InsecurePlaintext`], which the CLI maps to `--insecure-plaintext-key`.
//!
//! Ed25519 keys are written as PKCS#8 v1 (RFC 5208: no embedded public key), whatever form
//! they are handed in: OpenSSL 3.0 and Python `cryptography` refuse the v2 form
//! (`OneAsymmetricKey` with its `[1]` public key) that ed25519-dalek and ring produce.
//! [`export_pkcs8_v1_pem`] turns any key file, encrypted or not, into the PEM those tools read
//! (`ztmesh key export`). Both forms are read back.

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::PkiError;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// The defaults written to new files: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Largest memory cost accepted when reading a file (a hostile file must not make us
    /// allocate gigabytes).
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
}

/// Fewest characters a passphrase sealing a new key may have. Argon2id slows guessing down,
/// but a stolen key file is attacked offline for as long as the attacker likes; 12 random
/// lowercase letters are 56 bits, out of reach at Argon2id's cost per guess.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Refuses a passphrase that is too short to seal a new key with. Keys sealed before this
/// rule still open with theirs: refusing to read them would lock an operator out without
/// making them any safer.
pub fn check_new_passphrase(passphrase: &[u8]) -> Result<(), PkiError> {
    // Characters, not bytes: a passphrase in another script is not longer for it.
    let got = String::from_utf8_lossy(passphrase).chars().count();
    if got < MIN_PASSPHRASE_CHARS {
        return Err(PkiError::ShortPassphrase {
            got,
            min: MIN_PASSPHRASE_CHARS,
        });
    }
    Ok(())
}

/// How a key is protected on disk.
pub enum Protection<'a> {
    /// Encrypted under this passphrase.
    Passphrase(&'a [u8]),
    /// Stored as plaintext PKCS#8. Only with an explicit opt-in by the operator.
    InsecurePlaintext,
}

/// Encrypts (or, for [`Protection::InsecurePlaintext`], wraps) PKCS#8 DER into key-file text.
pub fn seal(
    pkcs8_der: &[u8],
    protection: &Protection<'_>,
    params: KdfParams,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<String, PkiError> {
    let pkcs8_der = to_pkcs8_v1(pkcs8_der)?;
    let pkcs8_der = pkcs8_der.as_slice();
    let passphrase = match protection {
        Protection::InsecurePlaintext => {
            return Ok(encode_pem(PLAINTEXT_LABEL, pkcs8_der));
        }
        Protection::Passphrase(passphrase) => passphrase,
    };
    // Never write a file this module would refuse to read back.
    let argon2 =
        kdf(params).map_err(|why| PkiError::Internal(format!("key file KDF parameters: {why}")))?;

    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut nonce);

    let mut body = Vec::with_capacity(HEADER_LEN + pkcs8_der.len() + TAG_LEN);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    body.extend_from_slice(&params.t_cost.to_be_bytes());
    body.extend_from_slice(&params.p_cost.to_be_bytes());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&nonce);
    debug_assert_eq!(body.len(), HEADER_LEN);

    let key = derive_key(&argon2, passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: pkcs8_der,
                aad: &body,
            },
        )
        .map_err(|_| PkiError::Internal("key file encryption failed".into()))?;
    body.extend_from_slice(&ciphertext);
    Ok(encode_pem(ENCRYPTED_LABEL, &body))
}

/// PKCS#8 v1 of an Ed25519 key given as v1 or v2; a v2 whose public key does not match its
/// secret is refused. Keys of other algorithms (an ECDSA TLS key) are returned unchanged.
pub fn to_pkcs8_v1(pkcs8_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
    let keypair = match KeypairBytes::from_pkcs8_der(pkcs8_der) {
        Ok(keypair) => keypair,
        // Not Ed25519 (or not PKCS#8 at all): nothing to convert; readers judge the rest.
        Err(_) => return Ok(Zeroizing::new(pkcs8_der.to_vec())),
    };
    if let Some(public) = &keypair.public_key {
        let derived = ed25519_dalek::SigningKey::from_bytes(&keypair.secret_key).verifying_key();
        if derived.as_bytes() != &public.0 {
            return Err(PkiError::MalformedKeyFile(
                "Ed25519 PKCS#8: the public key does not match the secret key".into(),
            ));
        }
    }
    let v1 = KeypairBytes {
        secret_key: keypair.secret_key,
        public_key: None,
    };
    let document = v1
        .to_pkcs8_der()
        .map_err(|e| PkiError::Internal(format!("Ed25519 PKCS#8 v1 encoding: {e}")))?;
    Ok(Zeroizing::new(document.as_bytes().to_vec()))
}

/// Opens a key file (encrypted with `protection`, or plaintext when `allow_plaintext`) and
/// answers it as an unencrypted PKCS#8 v1 `PRIVATE KEY` PEM that OpenSSL 3.0 and Python
/// `cryptography` read. The caller writes it where only its owner can read it.
pub fn export_pkcs8_v1_pem(
    text: &str,
    protection: &Protection<'_>,
    allow_plaintext: bool,
) -> Result<Zeroizing<String>, PkiError> {
    let der = open(text, protection, allow_plaintext)?;
    let v1 = to_pkcs8_v1(&der)?;
    Ok(Zeroizing::new(encode_pem(PLAINTEXT_LABEL, &v1)))
}

/// Reads key-file text back into PKCS#8 DER. An encrypted file with
/// [`Protection::InsecurePlaintext`] is an error (no passphrase given), and so is a plaintext
/// file read with a passphrase unless the caller allowed plaintext (`allow_plaintext`).
pub fn open(
    text: &str,
    protection: &Protection<'_>,
    allow_plaintext: bool,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    // Bound the input before decoding it: a key file is a few hundred bytes.
    if text.len() > MAX_KEY_FILE_LEN {
        return Err(PkiError::MalformedKeyFile(format!(
            "key file of {} bytes exceeds {MAX_KEY_FILE_LEN}",
            text.len()
        )));
    }
    let block = pem::parse(text).map_err(|e| PkiError::MalformedKeyFile(format!("PEM: {e}")))?;
    let tag = block.tag().to_owned();
    // The decoded body may be plaintext key material: zeroize it whatever happens next.
    let body = Zeroizing::new(block.into_contents());
    match (tag.as_str(), protection) {
        (PLAINTEXT_LABEL, Protection::InsecurePlaintext) => Ok(body),
        (PLAINTEXT_LABEL, Protection::Passphrase(_)) if allow_plaintext => Ok(body),
        (PLAINTEXT_LABEL, Protection::Passphrase(_)) => Err(PkiError::MalformedKeyFile(
            "the key file is not encrypted; plaintext keys need an explicit opt-in".into(),
        )),
        (ENCRYPTED_LABEL, Protection::InsecurePlaintext) => Err(PkiError::MalformedKeyFile(
            "the key file is encrypted; a passphrase is needed".into(),
        )),
        (ENCRYPTED_LABEL, Protection::Passphrase(passphrase)) => decrypt(&body, passphrase),
        (other, _) => Err(PkiError::MalformedKeyFile(format!(
            "unexpected PEM label {other:?}"
        ))),
    }
}

/// PEM label of an encrypted key file.
const ENCRYPTED_LABEL: &str = "ZTMESH ENCRYPTED PRIVATE KEY";
/// PEM label of a plaintext PKCS#8 key (RFC 7468 §10).
const PLAINTEXT_LABEL: &str = "PRIVATE KEY";
/// Format and version tag at the start of an encrypted body.
const MAGIC: &[u8; 4] = b"ZTK1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// `magic || m_cost || t_cost || p_cost || salt || nonce`: the AEAD associated data.
const HEADER_LEN: usize = MAGIC.len() + 3 * 4 + SALT_LEN + NONCE_LEN;
/// Largest key-file text accepted (PKCS#8 keys are far smaller; this only stops abuse).
const MAX_KEY_FILE_LEN: usize = 64 * 1024;
/// Largest iteration count and parallelism accepted when reading: with the memory cap these
/// bound the work a hostile file can demand.
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

fn encode_pem(label: &str, contents: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    let block = pem::Pem::new(label, contents);
    let text = pem::encode_config(&block, config);
    // `Pem` holds a copy of the contents (possibly a plaintext key); wipe it before it is freed.
    let mut contents = block.into_contents();
    zeroize::Zeroize::zeroize(&mut contents);
    text
}

/// Checks cost parameters against the limits and builds the KDF.
fn kdf(params: KdfParams) -> Result<Argon2<'static>, String> {
    if params.m_cost_kib > KdfParams::MAX_M_COST_KIB {
        return Err(format!(
            "memory cost {} KiB exceeds {} KiB",
            params.m_cost_kib,
            KdfParams::MAX_M_COST_KIB
        ));
    }
    if params.t_cost == 0 || params.t_cost > MAX_T_COST {
        return Err(format!(
            "iteration count {} outside 1..={MAX_T_COST}",
            params.t_cost
        ));
    }
    if params.p_cost == 0 || params.p_cost > MAX_P_COST {
        return Err(format!(
            "parallelism {} outside 1..={MAX_P_COST}",
            params.p_cost
        ));
    }
    // argon2 itself refuses a memory cost below 8 KiB per lane.
    let argon2_params = argon2::Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2_params,
    ))
}

fn derive_key(
    argon2: &Argon2<'_>,
    passphrase: &[u8],
    salt: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, PkiError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon2
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| PkiError::Internal(format!("argon2: {e}")))?;
    Ok(key)
}

/// A big-endian u32 of the header; only called at fixed offsets inside the
/// [`HEADER_LEN`]-byte header, whose length `decrypt` checks first.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn decrypt(body: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    if body.len() < HEADER_LEN + TAG_LEN {
        return Err(PkiError::MalformedKeyFile(format!(
            "encrypted body of {} bytes is shorter than header and tag ({} bytes)",
            body.len(),
            HEADER_LEN + TAG_LEN
        )));
    }
    let (header, ciphertext) = body.split_at(HEADER_LEN);
    if &header[..MAGIC.len()] != MAGIC {
        return Err(PkiError::MalformedKeyFile(
            "unknown key file format (bad magic)".into(),
        ));
    }
    let params = KdfParams {
        m_cost_kib: read_u32(header, 4),
        t_cost: read_u32(header, 8),
        p_cost: read_u32(header, 12),
    };
    // Check the costs before running the KDF: they come from the file, not from us.
    let argon2 = kdf(params).map_err(PkiError::MalformedKeyFile)?;
    let salt = &header[16..16 + SALT_LEN];
    let nonce = &header[16 + SALT_LEN..HEADER_LEN];

    let key = derive_key(&argon2, passphrase, salt)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .map(Zeroizing::new)
        // One error for both causes on purpose: AEAD cannot tell a wrong passphrase from a
        // modified file, and neither should the message.
        .map_err(|_| PkiError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::OsRng;

    /// Cheap parameters so tests stay fast; the format is the same.
    const FAST: KdfParams = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn passphrases_shorter_than_twelve_characters_are_refused_for_new_keys() {
        assert_eq!(
            check_new_passphrase(b"hunter2hunt"),
            Err(PkiError::ShortPassphrase { got: 11, min: 12 })
        );
        // Twelve characters pass, counted as characters: six two-byte ones are six.
        assert!(check_new_passphrase(b"hunter2hunte").is_ok());
        assert!(matches!(
            check_new_passphrase("éééééé".as_bytes()),
            Err(PkiError::ShortPassphrase { got: 6, .. })
        ));
    }

    fn sealed(secret: &[u8], passphrase: &[u8]) -> String {
        seal(
            secret,
            &Protection::Passphrase(passphrase),
            FAST,
            &mut OsRng,
        )
        .unwrap()
    }

    fn body_of(text: &str) -> Vec<u8> {
        pem::parse(text).unwrap().into_contents()
    }

    fn with_body(body: &[u8]) -> String {
        encode_pem(ENCRYPTED_LABEL, body)
    }

    #[test]
    fn round_trip() {
        let text = sealed(b"pkcs8 bytes", b"correct horse");
        assert!(text.starts_with("-----BEGIN ZTMESH ENCRYPTED PRIVATE KEY-----\n"));
        let body = body_of(&text);
        assert_eq!(&body[..4], b"ZTK1");
        assert_eq!(body.len(), HEADER_LEN + b"pkcs8 bytes".len() + TAG_LEN);
        let opened = open(&text, &Protection::Passphrase(b"correct horse"), false).unwrap();
        assert_eq!(opened.as_slice(), b"pkcs8 bytes");
    }

    #[test]
    fn header_records_the_parameters_big_endian() {
        let body = body_of(&sealed(b"k", b"p"));
        assert_eq!(&body[4..16], &[0, 0, 4, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn argon2id_known_answer() {
        // RFC 9106 §5.3 test vector for Argon2id (v0x13, m=32 KiB, t=3, p=4, with secret and
        // associated data): proves the crate is configured as the RFC algorithm.
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .data(argon2::AssociatedData::new(&[4; 12]).unwrap())
            .output_len(32)
            .build()
            .unwrap();
        let argon2 = Argon2::new_with_secret(
            &[3; 8],
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        )
        .unwrap();
        let mut out = [0u8; 32];
        argon2
            .hash_password_into(&[1; 32], &[2; 16], &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let text = sealed(b"secret", b"right");
        assert_eq!(
            open(&text, &Protection::Passphrase(b"wrong"), false),
            Err(PkiError::WrongPassphrase)
        );
    }

    #[test]
    fn every_flipped_header_byte_is_refused() {
        let body = body_of(&sealed(b"secret", b"pw"));
        for i in 0..HEADER_LEN {
            let mut tampered = body.clone();
            tampered[i] ^= 0x01;
            let result = open(&with_body(&tampered), &Protection::Passphrase(b"pw"), false);
            assert!(
                matches!(
                    result,
                    Err(PkiError::WrongPassphrase | PkiError::MalformedKeyFile(_))
                ),
                "byte {i}: {result:?}"
            );
        }
        // The ciphertext and tag are authenticated too.
        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x80;
        assert_eq!(
            open(&with_body(&tampered), &Protection::Passphrase(b"pw"), false),
            Err(PkiError::WrongPassphrase)
        );
    }

    #[test]
    fn hostile_costs_and_truncation_are_malformed() {
        let body = body_of(&sealed(b"secret", b"pw"));
        let cases: [(usize, u32); 5] = [
            (4, KdfParams::MAX_M_COST_KIB + 1),
            (8, 0),
            (8, MAX_T_COST + 1),
            (12, 0),
            (12, MAX_P_COST + 1),
        ];
        for (at, value) in cases {
            let mut hostile = body.clone();
            hostile[at..at + 4].copy_from_slice(&value.to_be_bytes());
            assert!(
                matches!(
                    open(&with_body(&hostile), &Protection::Passphrase(b"pw"), false),
                    Err(PkiError::MalformedKeyFile(_))
                ),
                "offset {at} value {value}"
            );
        }
        for len in [0, 3, HEADER_LEN, HEADER_LEN + TAG_LEN - 1] {
            assert!(matches!(
                open(
                    &with_body(&body[..len]),
                    &Protection::Passphrase(b"pw"),
                    false
                ),
                Err(PkiError::MalformedKeyFile(_))
            ));
        }
        // Writing such parameters is refused too.
        let too_costly = KdfParams { t_cost: 0, ..FAST };
        assert!(seal(b"k", &Protection::Passphrase(b"pw"), too_costly, &mut OsRng).is_err());
    }

    #[test]
    fn plaintext_needs_an_explicit_opt_in() {
        let text = seal(b"pkcs8", &Protection::InsecurePlaintext, FAST, &mut OsRng).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(matches!(
            open(&text, &Protection::Passphrase(b"pw"), false),
            Err(PkiError::MalformedKeyFile(_))
        ));
        assert_eq!(
            open(&text, &Protection::Passphrase(b"pw"), true)
                .unwrap()
                .as_slice(),
            b"pkcs8"
        );
        assert_eq!(
            open(&text, &Protection::InsecurePlaintext, false)
                .unwrap()
                .as_slice(),
            b"pkcs8"
        );
    }

    #[test]
    fn encrypted_file_without_passphrase_is_refused() {
        let text = sealed(b"secret", b"pw");
        assert!(matches!(
            open(&text, &Protection::InsecurePlaintext, true),
            Err(PkiError::MalformedKeyFile(_))
        ));
    }

    #[test]
    fn other_labels_and_oversized_text_are_malformed() {
        let text = encode_pem("CERTIFICATE", b"x");
        assert!(matches!(
            open(&text, &Protection::Passphrase(b"pw"), true),
            Err(PkiError::MalformedKeyFile(_))
        ));
        let huge = "A".repeat(MAX_KEY_FILE_LEN + 1);
        assert!(matches!(
            open(&huge, &Protection::Passphrase(b"pw"), true),
            Err(PkiError::MalformedKeyFile(_))
        ));
    }

    #[test]
    fn identity_key_survives_the_key_file() {
        let key = crate::IdentityKey::generate(&mut OsRng);
        let text = seal(
            &key.to_pkcs8_der(),
            &Protection::Passphrase(b"pw"),
            FAST,
            &mut OsRng,
        )
        .unwrap();
        let der = open(&text, &Protection::Passphrase(b"pw"), false).unwrap();
        assert_eq!(
            crate::IdentityKey::from_pkcs8_der(&der).unwrap().public(),
            key.public()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), text in ".{0,256}") {
            // Raw garbage as text, and garbage wrapped in a well-formed PEM block of each label.
            let _ = open(&text, &Protection::Passphrase(b"pw"), true);
            let _ = open(&encode_pem(PLAINTEXT_LABEL, &bytes), &Protection::Passphrase(b"pw"), false);
            let mut body = bytes.clone();
            // Keep the costs small so a case is cheap when the random header happens to parse.
            if body.len() >= 16 {
                body[..4].copy_from_slice(MAGIC);
                body[4..8].copy_from_slice(&8u32.to_be_bytes());
                body[8..12].copy_from_slice(&1u32.to_be_bytes());
                body[12..16].copy_from_slice(&1u32.to_be_bytes());
            }
            prop_assert!(open(&with_body(&body), &Protection::Passphrase(b"pw"), false).is_err());
            let _ = open(&with_body(&bytes), &Protection::InsecurePlaintext, false);
        }
    }
}
