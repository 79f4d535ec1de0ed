//! `tpm2_credential`: the verifier's half of TPM 2.0 credential activation (TPM 2.0 Library
//! Part 1 §24 "Credential Protection"), which is how enrollment learns that an attestation key
//! (AK) lives in the same TPM as an endorsement key (EK). It must never produce a credential
//! that anything but the TPM holding that EK, with that AK loaded, can open.
//!
//! # How the enrollment uses it
//!
//! 1. The node sends its EK public area and its AK public area (TPM2B_PUBLIC, as
//!    `tpm2_createek -u` and `tpm2_createak -u` write them). The verifier parses both with
//!    [`EndorsementKey::from_tpm2b_public`] and [`AttestationKeyPublic::from_tpm2b_public`];
//!    the latter refuses anything that is not a restricted, fixedTPM signing key and computes
//!    the AK name itself, so the node cannot name one key and use another.
//! 2. The verifier draws a random secret and calls [`EndorsementKey::make_credential`] with the
//!    AK name. The [`Credential`] goes to the node ([`Credential::to_tpm2_tools_file`] writes
//!    what `tpm2_activatecredential -i` reads).
//! 3. The node's TPM runs TPM2_ActivateCredential, which only succeeds when the EK private key
//!    is in that TPM *and* an object with exactly that name is loaded there, and returns the
//!    secret. The node proves it knows the secret; the verifier then pins
//!    [`AttestationKeyPublic::attestation_key`] for [`crate::tpm2::verify`].
//!
//! Whether the EK itself belongs to a genuine TPM is a separate question (its EK certificate);
//! this module takes the EK public area it is given.
//!
//! # The construction (TPM2_MakeCredential, done in software)
//!
//! With `nameAlg` the EK's name algorithm and `name` the AK name (nameAlg ‖ H(TPMT_PUBLIC)):
//!
//! - a seed of `nameAlg`'s digest size, shared with the EK: RSA EK → the seed is drawn at
//!   random and encrypted with RSA-OAEP(`nameAlg`, label `"IDENTITY\0"`); ECC P-256 EK → an
//!   ephemeral ECDH key, seed = KDFe(`nameAlg`, Z, `"IDENTITY"`, ephemeral x, EK x) and the
//!   ephemeral point (TPMS_ECC_POINT) is the encrypted secret;
//! - `symKey` = KDFa(`nameAlg`, seed, `"STORAGE"`, name, "", EK symmetric key bits);
//!   `encIdentity` = AES-CFB(`symKey`, zero IV, TPM2B_DIGEST(secret));
//! - `hmacKey` = KDFa(`nameAlg`, seed, `"INTEGRITY"`, "", "", digest bits);
//!   `outerHMAC` = HMAC(`hmacKey`, `encIdentity` ‖ name);
//! - credentialBlob (TPM2B_ID_OBJECT contents) = TPM2B_DIGEST(`outerHMAC`) ‖ `encIdentity`.
//!
//! Hashes, HMAC, AES-CFB, RSA-OAEP and ECDH come from the RustCrypto crates; this module only
//! composes them. Randomness comes from the caller's RNG, as everywhere in this crate.
//!
//! # Untrusted input
//!
//! Public areas and credential files are length-checked against [`MAX_PUBLIC_AREA_LEN`] and
//! [`MAX_CREDENTIAL_FILE_LEN`] before parsing, read with bounds-checked reads, must be consumed
//! exactly, and answer a typed [`CredentialError`], never a panic. Names are hashed over the
//! bytes as received, never over a re-serialization.

use aes::{Aes128, Aes192, Aes256};
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::digest::core_api::BlockSizeUser;
use hmac::{Mac, SimpleHmac};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePublicKey;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::tpm2::AttestationKey;
use crate::tpm_reader::{TpmReadError, TpmReader};

/// Largest TPM2B_PUBLIC or TPMT_PUBLIC accepted (checked before parsing): an RSA-4096 public
/// area with a SHA-512 policy digest is about 610 bytes.
pub const MAX_PUBLIC_AREA_LEN: usize = 1024;

/// Largest credential file accepted by [`Credential::from_tpm2_tools_file`]: the header, a
/// TPM2B_ID_OBJECT and a TPM2B_ENCRYPTED_SECRET.
pub const MAX_CREDENTIAL_FILE_LEN: usize = 8 + 2 + MAX_ID_OBJECT_LEN + 2 + MAX_ENCRYPTED_SECRET_LEN;

/// Largest TPM2B_ID_OBJECT contents: TPM2B_DIGEST(outer HMAC) ‖ TPM2B_DIGEST(secret), each at
/// most a 64-byte digest.
pub const MAX_ID_OBJECT_LEN: usize = 2 * (2 + MAX_DIGEST_LEN);

/// Largest TPM2B_ENCRYPTED_SECRET contents: an RSA-4096 OAEP ciphertext.
pub const MAX_ENCRYPTED_SECRET_LEN: usize = MAX_RSA_BITS / 8;

/// What `tpm2_makecredential` writes first in its output file (big-endian), and
/// `tpm2_activatecredential` checks.
pub const TPM2_TOOLS_CREDENTIAL_MAGIC: u32 = 0xbadc_c0de;

/// The credential file version `tpm2_makecredential` writes.
pub const TPM2_TOOLS_CREDENTIAL_VERSION: u32 = 1;

/// `TPM_ALG_RSA`.
pub const TPM_ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_SHA384`.
pub const TPM_ALG_SHA384: u16 = 0x000c;
/// `TPM_ALG_SHA512`.
pub const TPM_ALG_SHA512: u16 = 0x000d;
/// `TPM_ALG_NULL`.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_AES`.
pub const TPM_ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub const TPM_ALG_CFB: u16 = 0x0043;
/// `TPM_ALG_ECC`.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// `TPM_ECC_NIST_P256`.
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// Digests this module knows are at most SHA-512 long.
const MAX_DIGEST_LEN: usize = 64;
/// RSA moduli accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// Largest ECC coordinate a TPMS_ECC_POINT may carry (P-521, rounded up); only P-256 is
/// accepted, but the size bound comes first.
const MAX_ECC_COORDINATE_LEN: usize = 66;
const P256_COORDINATE_LEN: usize = 32;
/// The default RSA public exponent, which a TPM encodes as 0.
const RSA_DEFAULT_EXPONENT: u32 = 65_537;

/// KDF labels (Part 1 §24); KDFa and KDFe append the terminating zero octet themselves.
const LABEL_IDENTITY: &[u8] = b"IDENTITY";
const LABEL_STORAGE: &[u8] = b"STORAGE";
const LABEL_INTEGRITY: &[u8] = b"INTEGRITY";
/// The RSA-OAEP label, zero octet included, as the TPM uses it for the credential seed.
const OAEP_LABEL_IDENTITY: &str = "IDENTITY\0";

/// Why a public area, name, secret or credential file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Over the size limit (checked before parsing).
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// What was refused.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its structure requires.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Not the TPM structure it claims to be.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A well-formed structure using an algorithm, curve or size this module does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A key whose attributes do not fit its role (an EK that is not a restricted decryption
    /// key, an AK that is not a restricted fixedTPM signing key).
    #[error("wrong key kind: {0}")]
    WrongKeyKind(String),
    /// The caller's secret is empty or longer than the EK name algorithm's digest (the TPM
    /// refuses those in TPM2_MakeCredential).
    #[error("credential secret of {len} bytes, 1..={max} allowed")]
    InvalidSecret {
        /// Its length.
        len: usize,
        /// The limit for this EK.
        max: usize,
    },
    /// The RNG or a cipher failed while making a credential.
    #[error("making the credential failed: {0}")]
    Encryption(String),
}

// Here rather than in `tpm_reader`, so that the reader never imports the modules built on it.
impl From<TpmReadError> for CredentialError {
    fn from(error: TpmReadError) -> Self {
        match error {
            TpmReadError::Truncated(why) => CredentialError::Truncated(why),
            TpmReadError::Malformed(why) => CredentialError::Malformed(why),
        }
    }
}

impl CredentialError {
    /// A stable machine-readable reason, for APIs and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::TooLarge { .. } => "too_large",
            CredentialError::Truncated(_) => "truncated",
            CredentialError::Malformed(_) => "malformed",
            CredentialError::Unsupported(_) => "unsupported",
            CredentialError::WrongKeyKind(_) => "wrong_key_kind",
            CredentialError::InvalidSecret { .. } => "invalid_secret",
            CredentialError::Encryption(_) => "encryption_failed",
        }
    }

    /// Whether the bytes the node sent are at fault (as opposed to the caller's secret or a
    /// local failure).
    pub fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            CredentialError::InvalidSecret { .. } | CredentialError::Encryption(_)
        )
    }
}

/// A TPM name algorithm this module can compute names and KDFs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameAlgorithm {
    /// `TPM_ALG_SHA256`.
    Sha256,
    /// `TPM_ALG_SHA384`.
    Sha384,
    /// `TPM_ALG_SHA512`.
    Sha512,
}

impl NameAlgorithm {
    /// The algorithm for a TPM_ALG_ID, if this module supports it.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            TPM_ALG_SHA256 => Some(NameAlgorithm::Sha256),
            TPM_ALG_SHA384 => Some(NameAlgorithm::Sha384),
            TPM_ALG_SHA512 => Some(NameAlgorithm::Sha512),
            _ => None,
        }
    }

    /// Its TPM_ALG_ID.
    pub fn tpm_alg_id(self) -> u16 {
        match self {
            NameAlgorithm::Sha256 => TPM_ALG_SHA256,
            NameAlgorithm::Sha384 => TPM_ALG_SHA384,
            NameAlgorithm::Sha512 => TPM_ALG_SHA512,
        }
    }

    /// Its digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            NameAlgorithm::Sha256 => 32,
            NameAlgorithm::Sha384 => 48,
            NameAlgorithm::Sha512 => 64,
        }
    }

    fn parse(what: &str, id: u16) -> Result<Self, CredentialError> {
        Self::from_tpm_alg_id(id).ok_or_else(|| {
            CredentialError::Unsupported(format!(
                "{what}: hash algorithm {id:#06x}, only sha256, sha384 and sha512 are supported"
            ))
        })
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn with<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            NameAlgorithm::Sha256 => with::<Sha256>(parts),
            NameAlgorithm::Sha384 => with::<Sha384>(parts),
            NameAlgorithm::Sha512 => with::<Sha512>(parts),
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, CredentialError> {
        fn with<D: Digest + BlockSizeUser>(
            key: &[u8],
            parts: &[&[u8]],
        ) -> Result<Vec<u8>, CredentialError> {
            // HMAC takes keys of any length; the error arm is unreachable in practice.
            let mut mac = <SimpleHmac<D> as Mac>::new_from_slice(key)
                .map_err(|error| CredentialError::Encryption(format!("HMAC key: {error}")))?;
            for part in parts {
                mac.update(part);
            }
            Ok(mac.finalize().into_bytes().to_vec())
        }
        match self {
            NameAlgorithm::Sha256 => with::<Sha256>(key, parts),
            NameAlgorithm::Sha384 => with::<Sha384>(key, parts),
            NameAlgorithm::Sha512 => with::<Sha512>(key, parts),
        }
    }
}

/// A TPM object name: the name algorithm (big-endian TPM_ALG_ID) followed by that algorithm's
/// digest of the object's TPMT_PUBLIC. This is what credential activation binds to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectName {
    algorithm: NameAlgorithm,
    bytes: Vec<u8>,
}

impl ObjectName {
    /// Reads a name as `tpm2_createak -n` or `tpm2_readpublic -n` write it (no TPM2B size).
    /// Prefer [`AttestationKeyPublic::name`], which computes the name from the public area.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        if bytes.len() > 2 + MAX_DIGEST_LEN {
            return Err(CredentialError::TooLarge {
                what: "TPM name",
                len: bytes.len(),
                max: 2 + MAX_DIGEST_LEN,
            });
        }
        let mut reader = TpmReader::new("TPM name", bytes);
        let algorithm = NameAlgorithm::parse("TPM name", reader.u16()?)?;
        let digest = reader.take(algorithm.digest_len())?;
        reader.finish()?;
        Ok(ObjectName {
            algorithm,
            bytes: [&algorithm.tpm_alg_id().to_be_bytes()[..], digest].concat(),
        })
    }

    /// The name of the object whose marshalled TPMT_PUBLIC is `tpmt_public`.
    fn of_public_area(algorithm: NameAlgorithm, tpmt_public: &[u8]) -> Self {
        let digest = algorithm.digest(&[tpmt_public]);
        ObjectName {
            algorithm,
            bytes: [&algorithm.tpm_alg_id().to_be_bytes()[..], &digest].concat(),
        }
    }

    /// The name bytes: algorithm ‖ digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The algorithm the name was computed with.
    pub fn algorithm(&self) -> NameAlgorithm {
        self.algorithm
    }

    /// Lowercase hex, as `tpm2_makecredential -n` takes it.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

impl std::fmt::Debug for ObjectName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ObjectName({})", self.to_hex())
    }
}

/// TPMA_OBJECT, the attribute bits of a TPM object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    /// The key cannot be duplicated out of its TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The key cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the sensitive part.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// The key only operates on TPM-formatted data (signs only TPM-generated structures, or
    /// decrypts only TPM-protected ones).
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// A TPMT_SYM_DEF_OBJECT that is not TPM_ALG_NULL (raw TPM identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SymmetricDefinition {
    /// TPM_ALG_ID of the cipher (e.g. [`TPM_ALG_AES`]).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// TPM_ALG_ID of the mode (e.g. [`TPM_ALG_CFB`]).
    pub mode: u16,
}

/// The public key of a TPM object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmPublicKey {
    /// An RSA key of 2048 to 4096 bits.
    Rsa(rsa::RsaPublicKey),
    /// An ECC NIST P-256 key.
    EccP256(p256::PublicKey),
}

/// A parsed TPMT_PUBLIC of an RSA or ECC P-256 key, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    name: ObjectName,
    attributes: ObjectAttributes,
    symmetric: Option<SymmetricDefinition>,
    scheme: u16,
    key: TpmPublicKey,
}

impl PublicArea {
    /// Parses a TPM2B_PUBLIC (a big-endian u16 size, then the TPMT_PUBLIC), the default
    /// (`tss`) format of `tpm2_createek -u`, `tpm2_createak -u` and `tpm2_readpublic -o`.
    pub fn from_tpm2b_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        check_len("TPM2B_PUBLIC", bytes, MAX_PUBLIC_AREA_LEN)?;
        let mut reader = TpmReader::new("TPM2B_PUBLIC", bytes);
        let size = usize::from(reader.u16()?);
        if size == 0 {
            return Err(CredentialError::Malformed(
                "TPM2B_PUBLIC: empty public area".into(),
            ));
        }
        let tpmt_public = reader.take(size)?;
        reader.finish()?;
        Self::from_tpmt_public(tpmt_public)
    }

    /// Parses a marshalled TPMT_PUBLIC (TPM 2.0 Part 2, 12.2.4); nothing may follow it.
    pub fn from_tpmt_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        check_len("TPMT_PUBLIC", bytes, MAX_PUBLIC_AREA_LEN)?;
        let mut reader = TpmReader::new("TPMT_PUBLIC", bytes);
        let object_type = reader.u16()?;
        let name_algorithm = NameAlgorithm::parse("TPMT_PUBLIC nameAlg", reader.u16()?)?;
        let attributes = ObjectAttributes(reader.u32()?);
        let policy = reader.tpm2b("authPolicy", MAX_DIGEST_LEN)?;
        if !policy.is_empty() && policy.len() != name_algorithm.digest_len() {
            return Err(CredentialError::Malformed(format!(
                "TPMT_PUBLIC: authPolicy of {} bytes, neither empty nor a nameAlg digest",
                policy.len()
            )));
        }
        let symmetric = read_symmetric(&mut reader)?;
        let (scheme, key) = match object_type {
            TPM_ALG_RSA => {
                let scheme = read_scheme(&mut reader, "TPMT_RSA_SCHEME")?;
                let key_bits = usize::from(reader.u16()?);
                let exponent = reader.u32()?;
                let modulus = reader.tpm2b("unique.rsa", MAX_RSA_BITS / 8)?;
                (scheme, rsa_key(key_bits, exponent, modulus)?)
            }
            TPM_ALG_ECC => {
                let scheme = read_scheme(&mut reader, "TPMT_ECC_SCHEME")?;
                let curve = reader.u16()?;
                let kdf = reader.u16()?;
                if kdf != TPM_ALG_NULL {
                    // TPMT_KDF_SCHEME details: a hash algorithm.
                    reader.u16()?;
                }
                let x = reader.tpm2b("unique.ecc.x", MAX_ECC_COORDINATE_LEN)?;
                let y = reader.tpm2b("unique.ecc.y", MAX_ECC_COORDINATE_LEN)?;
                (scheme, p256_key(curve, x, y)?)
            }
            other => {
                return Err(CredentialError::Unsupported(format!(
                    "TPMT_PUBLIC: object type {other:#06x} is not RSA or ECC"
                )))
            }
        };
        reader.finish()?;
        Ok(PublicArea {
            name: ObjectName::of_public_area(name_algorithm, bytes),
            attributes,
            symmetric,
            scheme,
            key,
        })
    }

    /// The object's name: nameAlg ‖ H(the TPMT_PUBLIC bytes as received).
    pub fn name(&self) -> &ObjectName {
        &self.name
    }

    /// The object's name algorithm.
    pub fn name_algorithm(&self) -> NameAlgorithm {
        self.name.algorithm
    }

    /// The object's attributes.
    pub fn attributes(&self) -> ObjectAttributes {
        self.attributes
    }

    /// The symmetric algorithm of a storage key; `None` for TPM_ALG_NULL.
    pub fn symmetric(&self) -> Option<SymmetricDefinition> {
        self.symmetric
    }

    /// The TPM_ALG_ID of the key's scheme ([`TPM_ALG_NULL`] when none is fixed).
    pub fn scheme(&self) -> u16 {
        self.scheme
    }

    /// The public key.
    pub fn key(&self) -> &TpmPublicKey {
        &self.key
    }
}

/// TPMT_SYM_DEF_OBJECT: an algorithm, then key bits and mode unless it is TPM_ALG_NULL.
fn read_symmetric(
    reader: &mut TpmReader<'_>,
) -> Result<Option<SymmetricDefinition>, CredentialError> {
    let algorithm = reader.u16()?;
    if algorithm == TPM_ALG_NULL {
        return Ok(None);
    }
    Ok(Some(SymmetricDefinition {
        algorithm,
        key_bits: reader.u16()?,
        mode: reader.u16()?,
    }))
}

/// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: a scheme, then its details (TPM 2.0 Part 2, 11.2.3).
fn read_scheme(reader: &mut TpmReader<'_>, what: &str) -> Result<u16, CredentialError> {
    const TPM_ALG_RSASSA: u16 = 0x0014;
    const TPM_ALG_RSAES: u16 = 0x0015;
    const TPM_ALG_RSAPSS: u16 = 0x0016;
    const TPM_ALG_OAEP: u16 = 0x0017;
    const TPM_ALG_ECDSA: u16 = 0x0018;
    const TPM_ALG_ECDH: u16 = 0x0019;
    const TPM_ALG_ECDAA: u16 = 0x001a;
    const TPM_ALG_SM2: u16 = 0x001b;
    const TPM_ALG_ECSCHNORR: u16 = 0x001c;
    const TPM_ALG_ECMQV: u16 = 0x001d;
    let scheme = reader.u16()?;
    match scheme {
        TPM_ALG_NULL | TPM_ALG_RSAES => {}
        TPM_ALG_RSASSA | TPM_ALG_RSAPSS | TPM_ALG_OAEP | TPM_ALG_ECDSA | TPM_ALG_ECDH
        | TPM_ALG_SM2 | TPM_ALG_ECSCHNORR | TPM_ALG_ECMQV => {
            // TPMS_SCHEME_HASH.
            reader.u16()?;
        }
        TPM_ALG_ECDAA => {
            // TPMS_SCHEME_ECDAA: a hash algorithm and a counter.
            reader.u16()?;
            reader.u16()?;
        }
        other => {
            return Err(CredentialError::Unsupported(format!(
                "{what}: scheme {other:#06x}"
            )))
        }
    }
    Ok(scheme)
}

fn rsa_key(
    key_bits: usize,
    exponent: u32,
    modulus: &[u8],
) -> Result<TpmPublicKey, CredentialError> {
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&key_bits) {
        return Err(CredentialError::Unsupported(format!(
            "TPMS_RSA_PARMS: {key_bits}-bit RSA, {MIN_RSA_BITS}..={MAX_RSA_BITS} supported"
        )));
    }
    // A size that is not a whole number of bytes matches no modulus.
    if modulus.len() * 8 != key_bits || modulus.first().is_none_or(|byte| *byte == 0) {
        return Err(CredentialError::Malformed(format!(
            "TPMT_PUBLIC: RSA modulus of {} bytes is not a {key_bits}-bit number",
            modulus.len()
        )));
    }
    let exponent = if exponent == 0 {
        RSA_DEFAULT_EXPONENT
    } else {
        exponent
    };
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map(TpmPublicKey::Rsa)
    .map_err(|error| CredentialError::Malformed(format!("TPMT_PUBLIC: RSA key: {error}")))
}

fn p256_key(curve: u16, x: &[u8], y: &[u8]) -> Result<TpmPublicKey, CredentialError> {
    if curve != TPM_ECC_NIST_P256 {
        return Err(CredentialError::Unsupported(format!(
            "TPMS_ECC_PARMS: curve {curve:#06x}, only NIST P-256 is supported"
        )));
    }
    if x.len() != P256_COORDINATE_LEN || y.len() != P256_COORDINATE_LEN {
        return Err(CredentialError::Malformed(format!(
            "TPMS_ECC_POINT: coordinates of {} and {} bytes, P-256 has {P256_COORDINATE_LEN}",
            x.len(),
            y.len()
        )));
    }
    let sec1 = [&[0x04u8][..], x, y].concat();
    p256::PublicKey::from_sec1_bytes(&sec1)
        .map(TpmPublicKey::EccP256)
        .map_err(|_| CredentialError::Malformed("TPMS_ECC_POINT: not a P-256 point".into()))
}

/// The symmetric cipher that protects a credential: the EK's AES, always in CFB mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialCipher {
    Aes128,
    Aes192,
    Aes256,
}

impl CredentialCipher {
    fn key_bits(self) -> u32 {
        match self {
            CredentialCipher::Aes128 => 128,
            CredentialCipher::Aes192 => 192,
            CredentialCipher::Aes256 => 256,
        }
    }

    /// Encrypts in place with a zero IV: every credential has a fresh key, so the IV need not
    /// vary (Part 1 §24, "Symmetric Encryption").
    fn encrypt(self, key: &[u8], buffer: &mut [u8]) -> Result<(), CredentialError> {
        const ZERO_IV: [u8; 16] = [0; 16];
        let invalid =
            |error: cfb_mode::cipher::InvalidLength| CredentialError::Encryption(error.to_string());
        match self {
            CredentialCipher::Aes128 => {
                cfb_mode::Encryptor::<Aes128>::new_from_slices(key, &ZERO_IV)
                    .map_err(invalid)?
                    .encrypt(buffer)
            }
            CredentialCipher::Aes192 => {
                cfb_mode::Encryptor::<Aes192>::new_from_slices(key, &ZERO_IV)
                    .map_err(invalid)?
                    .encrypt(buffer)
            }
            CredentialCipher::Aes256 => {
                cfb_mode::Encryptor::<Aes256>::new_from_slices(key, &ZERO_IV)
                    .map_err(invalid)?
                    .encrypt(buffer)
            }
        }
        Ok(())
    }
}

/// An endorsement key's public area, checked to be one a credential can be made for: a
/// restricted decryption key that cannot leave its TPM, RSA or ECC P-256, with an AES-CFB
/// symmetric algorithm and no scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndorsementKey {
    area: PublicArea,
    cipher: CredentialCipher,
}

impl EndorsementKey {
    /// Reads the EK's TPM2B_PUBLIC (`tpm2_createek -u`, `tpm2_readpublic -o`).
    pub fn from_tpm2b_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        Self::from_public_area(PublicArea::from_tpm2b_public(bytes)?)
    }

    /// Reads the EK's marshalled TPMT_PUBLIC.
    pub fn from_tpmt_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        Self::from_public_area(PublicArea::from_tpmt_public(bytes)?)
    }

    /// Checks that `area` is a key a credential can be made for.
    pub fn from_public_area(area: PublicArea) -> Result<Self, CredentialError> {
        let required = ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::DECRYPT;
        if !area.attributes.contains(required) || area.attributes.contains(ObjectAttributes::SIGN) {
            return Err(CredentialError::WrongKeyKind(format!(
                "endorsement key attributes {:#010x}: not a fixedTPM, fixedParent, restricted \
                 decryption key",
                area.attributes.0
            )));
        }
        if area.scheme != TPM_ALG_NULL {
            return Err(CredentialError::WrongKeyKind(format!(
                "endorsement key with scheme {:#06x}: a restricted decryption key has none",
                area.scheme
            )));
        }
        let cipher = match area.symmetric {
            Some(SymmetricDefinition {
                algorithm: TPM_ALG_AES,
                key_bits,
                mode: TPM_ALG_CFB,
            }) => match key_bits {
                128 => CredentialCipher::Aes128,
                192 => CredentialCipher::Aes192,
                256 => CredentialCipher::Aes256,
                other => {
                    return Err(CredentialError::Unsupported(format!(
                        "endorsement key: AES-{other}"
                    )))
                }
            },
            Some(other) => {
                return Err(CredentialError::Unsupported(format!(
                    "endorsement key: symmetric algorithm {:#06x} mode {:#06x}, only AES-CFB",
                    other.algorithm, other.mode
                )))
            }
            None => {
                return Err(CredentialError::WrongKeyKind(
                    "endorsement key without a symmetric algorithm is not a storage key".into(),
                ))
            }
        };
        Ok(EndorsementKey { area, cipher })
    }

    /// The parsed public area.
    pub fn public_area(&self) -> &PublicArea {
        &self.area
    }

    /// The longest secret a credential for this EK can carry: its name algorithm's digest.
    pub fn max_secret_len(&self) -> usize {
        self.area.name_algorithm().digest_len()
    }

    /// TPM2_MakeCredential in software: protects `secret` so that only the TPM holding this EK,
    /// with the object named `object_name` loaded, recovers it with TPM2_ActivateCredential.
    /// `secret` must be 1..=[`Self::max_secret_len`] bytes; `rng` supplies the seed (RSA EK)
    /// or the ephemeral key (ECC EK).
    pub fn make_credential(
        &self,
        object_name: &ObjectName,
        secret: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Credential, CredentialError> {
        let max = self.max_secret_len();
        if secret.is_empty() || secret.len() > max {
            return Err(CredentialError::InvalidSecret {
                len: secret.len(),
                max,
            });
        }
        let (seed, encrypted_secret) = self.share_seed(rng)?;
        let credential_blob = self.credential_blob(&seed, object_name, secret)?;
        Ok(Credential {
            credential_blob,
            encrypted_secret,
        })
    }

    /// Draws a seed only this EK's TPM can recover (CryptSecretEncrypt with label
    /// "IDENTITY"): the seed and the TPM2B_ENCRYPTED_SECRET contents.
    fn share_seed(
        &self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
        let algorithm = self.area.name_algorithm();
        match &self.area.key {
            TpmPublicKey::Rsa(key) => {
                let mut seed = vec![0u8; algorithm.digest_len()];
                rng.try_fill_bytes(&mut seed)
                    .map_err(|error| CredentialError::Encryption(format!("RNG: {error}")))?;
                let padding = match algorithm {
                    NameAlgorithm::Sha256 => {
                        rsa::Oaep::new_with_label::<Sha256, _>(OAEP_LABEL_IDENTITY)
                    }
                    NameAlgorithm::Sha384 => {
                        rsa::Oaep::new_with_label::<Sha384, _>(OAEP_LABEL_IDENTITY)
                    }
                    NameAlgorithm::Sha512 => {
                        rsa::Oaep::new_with_label::<Sha512, _>(OAEP_LABEL_IDENTITY)
                    }
                };
                let encrypted = key
                    .encrypt(rng, padding, &seed)
                    .map_err(|error| CredentialError::Encryption(format!("RSA-OAEP: {error}")))?;
                Ok((seed, encrypted))
            }
            TpmPublicKey::EccP256(key) => {
                let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
                let ephemeral_point = ephemeral.public_key().to_encoded_point(false);
                let ek_point = key.to_encoded_point(false);
                let (Some(ephemeral_x), Some(ephemeral_y), Some(ek_x)) =
                    (ephemeral_point.x(), ephemeral_point.y(), ek_point.x())
                else {
                    // Uncompressed encodings of points that are not the identity have both.
                    return Err(CredentialError::Encryption(
                        "ECDH: a point without coordinates".into(),
                    ));
                };
                let shared = ephemeral.diffie_hellman(key);
                let seed = kdfe(
                    algorithm,
                    shared.raw_secret_bytes(),
                    LABEL_IDENTITY,
                    ephemeral_x,
                    ek_x,
                    algorithm.digest_len(),
                );
                // TPMS_ECC_POINT: TPM2B_ECC_PARAMETER x, TPM2B_ECC_PARAMETER y.
                let mut point = Vec::with_capacity(4 + 2 * P256_COORDINATE_LEN);
                for coordinate in [ephemeral_x, ephemeral_y] {
                    point.extend(tpm2b_size(coordinate.len())?);
                    point.extend_from_slice(coordinate);
                }
                Ok((seed, point))
            }
        }
    }

    /// TPM2B_ID_OBJECT contents for `seed` (SecretToCredential): TPM2B_DIGEST(outer HMAC) ‖
    /// AES-CFB(TPM2B_DIGEST(secret)).
    fn credential_blob(
        &self,
        seed: &[u8],
        object_name: &ObjectName,
        secret: &[u8],
    ) -> Result<Vec<u8>, CredentialError> {
        let algorithm = self.area.name_algorithm();
        let symmetric_key = kdfa(
            algorithm,
            seed,
            LABEL_STORAGE,
            object_name.as_bytes(),
            &[],
            self.cipher.key_bits(),
        )?;
        let mut encrypted_identity = tpm2b_size(secret.len())?.to_vec();
        encrypted_identity.extend_from_slice(secret);
        self.cipher
            .encrypt(&symmetric_key, &mut encrypted_identity)?;

        let hmac_bits = u32::try_from(algorithm.digest_len() * 8)
            .map_err(|_| CredentialError::Encryption("HMAC key size".into()))?;
        let hmac_key = kdfa(algorithm, seed, LABEL_INTEGRITY, &[], &[], hmac_bits)?;
        let outer_hmac =
            algorithm.hmac(&hmac_key, &[&encrypted_identity, object_name.as_bytes()])?;

        let mut blob = tpm2b_size(outer_hmac.len())?.to_vec();
        blob.extend_from_slice(&outer_hmac);
        blob.extend_from_slice(&encrypted_identity);
        Ok(blob)
    }
}

/// An attestation key's public area, checked to be a key whose quotes mean something: a
/// restricted signing key generated in and bound to its TPM, RSA (≥ 2048 bits) or ECC P-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKeyPublic {
    area: PublicArea,
    key: AttestationKey,
}

impl AttestationKeyPublic {
    /// Reads the AK's TPM2B_PUBLIC (`tpm2_createak -u`, `tpm2_readpublic -o`).
    pub fn from_tpm2b_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        Self::from_public_area(PublicArea::from_tpm2b_public(bytes)?)
    }

    /// Reads the AK's marshalled TPMT_PUBLIC.
    pub fn from_tpmt_public(bytes: &[u8]) -> Result<Self, CredentialError> {
        Self::from_public_area(PublicArea::from_tpmt_public(bytes)?)
    }

    /// Checks that `area` is an attestation key.
    pub fn from_public_area(area: PublicArea) -> Result<Self, CredentialError> {
        let required = ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::SENSITIVE_DATA_ORIGIN
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::SIGN;
        // A restricted signing key only signs what the TPM generated; a decrypt bit as well
        // would let it sign arbitrary data through other commands.
        if !area.attributes.contains(required)
            || area.attributes.contains(ObjectAttributes::DECRYPT)
        {
            return Err(CredentialError::WrongKeyKind(format!(
                "attestation key attributes {:#010x}: not a fixedTPM, fixedParent, \
                 sensitiveDataOrigin, restricted signing key",
                area.attributes.0
            )));
        }
        let key = match &area.key {
            TpmPublicKey::EccP256(key) => AttestationKey::EcdsaP256(key.into()),
            TpmPublicKey::Rsa(key) => {
                let der = key.to_public_key_der().map_err(|error| {
                    CredentialError::Malformed(format!("attestation key: {error}"))
                })?;
                AttestationKey::from_spki_der(der.as_bytes()).map_err(|error| {
                    CredentialError::Unsupported(format!("attestation key: {error}"))
                })?
            }
        };
        Ok(AttestationKeyPublic { area, key })
    }

    /// The AK name a credential is made for.
    pub fn name(&self) -> &ObjectName {
        self.area.name()
    }

    /// The parsed public area.
    pub fn public_area(&self) -> &PublicArea {
        &self.area
    }

    /// The key to pin for [`crate::tpm2::verify`] once the credential was activated.
    pub fn attestation_key(&self) -> &AttestationKey {
        &self.key
    }
}

/// A credential for one EK and one object name: what TPM2_ActivateCredential takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT contents (without the size): the outer HMAC and the encrypted secret.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents (without the size): the seed, protected by the EK.
    pub encrypted_secret: Vec<u8>,
}

impl Credential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads:
    /// big-endian [`TPM2_TOOLS_CREDENTIAL_MAGIC`], [`TPM2_TOOLS_CREDENTIAL_VERSION`], then the
    /// TPM2B_ID_OBJECT and the TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(12 + self.credential_blob.len() + self.encrypted_secret.len());
        out.extend(TPM2_TOOLS_CREDENTIAL_MAGIC.to_be_bytes());
        out.extend(TPM2_TOOLS_CREDENTIAL_VERSION.to_be_bytes());
        // Both parts were built (or parsed) within their TPM2B limits, far below u16::MAX.
        for part in [&self.credential_blob, &self.encrypted_secret] {
            out.extend(u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Reads the `tpm2_makecredential` output file.
    pub fn from_tpm2_tools_file(bytes: &[u8]) -> Result<Self, CredentialError> {
        check_len("credential file", bytes, MAX_CREDENTIAL_FILE_LEN)?;
        let mut reader = TpmReader::new("credential file", bytes);
        let magic = reader.u32()?;
        if magic != TPM2_TOOLS_CREDENTIAL_MAGIC {
            return Err(CredentialError::Malformed(format!(
                "credential file: magic {magic:#010x}, expected {TPM2_TOOLS_CREDENTIAL_MAGIC:#010x}"
            )));
        }
        let version = reader.u32()?;
        if version != TPM2_TOOLS_CREDENTIAL_VERSION {
            return Err(CredentialError::Unsupported(format!(
                "credential file: version {version}, expected {TPM2_TOOLS_CREDENTIAL_VERSION}"
            )));
        }
        let credential_blob = reader.tpm2b("TPM2B_ID_OBJECT", MAX_ID_OBJECT_LEN)?.to_vec();
        let encrypted_secret = reader
            .tpm2b("TPM2B_ENCRYPTED_SECRET", MAX_ENCRYPTED_SECRET_LEN)?
            .to_vec();
        reader.finish()?;
        Ok(Credential {
            credential_blob,
            encrypted_secret,
        })
    }
}

/// KDFa (TPM 2.0 Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC): `bits` of
/// HMAC(key, i ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ bits), i = 1, 2, …
fn kdfa(
    algorithm: NameAlgorithm,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, CredentialError> {
    // Every caller asks for whole bytes (AES key sizes and digest sizes).
    let len = usize::try_from(bits / 8)
        .map_err(|_| CredentialError::Encryption("KDFa output size".into()))?;
    let mut out = Vec::with_capacity(len + MAX_DIGEST_LEN);
    let mut counter: u32 = 1;
    while out.len() < len {
        out.extend(algorithm.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        )?);
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    Ok(out)
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3, SP 800-56A concatenation KDF): `len` bytes of
/// H(i ‖ Z ‖ label ‖ 0x00 ‖ partyUInfo ‖ partyVInfo), i = 1, 2, …
fn kdfe(
    algorithm: NameAlgorithm,
    z: &[u8],
    label: &[u8],
    party_u_info: &[u8],
    party_v_info: &[u8],
    len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + MAX_DIGEST_LEN);
    let mut counter: u32 = 1;
    while out.len() < len {
        out.extend(algorithm.digest(&[
            &counter.to_be_bytes(),
            z,
            label,
            &[0],
            party_u_info,
            party_v_info,
        ]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

fn tpm2b_size(len: usize) -> Result<[u8; 2], CredentialError> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| CredentialError::Encryption(format!("{len} bytes do not fit a TPM2B")))
}

fn check_len(what: &'static str, bytes: &[u8], max: usize) -> Result<(), CredentialError> {
    if bytes.len() > max {
        return Err(CredentialError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::DecodePrivateKey;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    // Made with swtpm and tpm2-tools; tests/fixtures/tpm2_credential/README.md says how.
    const EK_RSA: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ek_rsa.pub");
    const EK_ECC: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ek_ecc.pub");
    const AK_RSA: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ak_rsa.pub");
    const AK_RSA_NAME: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ak_rsa.name");
    const AK_ECC: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ak_ecc.pub");
    const AK_ECC_NAME: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/ak_ecc.name");
    const SECRET: &[u8] = include_bytes!("../tests/fixtures/tpm2_credential/secret.bin");
    // EK public areas around keys whose private halves are fixtures, with the credentials
    // `tpm2_makecredential -T none` made for them.
    const SOFTWARE_EK_RSA: &[u8] =
        include_bytes!("../tests/fixtures/tpm2_credential/ek_software_rsa.pub");
    const SOFTWARE_EK_RSA_KEY: &str =
        include_str!("../tests/fixtures/tpm2_credential/ek_software_rsa.key.pem");
    const SOFTWARE_CREDENTIAL_RSA: &[u8] =
        include_bytes!("../tests/fixtures/tpm2_credential/credential_software_rsa.out");
    const SOFTWARE_EK_ECC: &[u8] =
        include_bytes!("../tests/fixtures/tpm2_credential/ek_software_ecc.pub");
    const SOFTWARE_EK_ECC_KEY: &str =
        include_str!("../tests/fixtures/tpm2_credential/ek_software_ecc.key.pem");
    const SOFTWARE_CREDENTIAL_ECC: &[u8] =
        include_bytes!("../tests/fixtures/tpm2_credential/credential_software_ecc.out");

    fn pem_der(text: &str) -> Vec<u8> {
        pem::parse(text).unwrap().into_contents()
    }

    fn rsa_private() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::from_pkcs8_der(&pem_der(SOFTWARE_EK_RSA_KEY)).unwrap()
    }

    fn ecc_private() -> p256::SecretKey {
        p256::SecretKey::from_pkcs8_der(&pem_der(SOFTWARE_EK_ECC_KEY)).unwrap()
    }

    /// What the TPM does in CryptSecretDecrypt: the seed, from the EK private key.
    enum EkPrivate {
        Rsa(Box<rsa::RsaPrivateKey>),
        Ecc(p256::SecretKey),
    }

    fn recover_seed(ek: &EndorsementKey, private: &EkPrivate, encrypted_secret: &[u8]) -> Vec<u8> {
        assert_eq!(ek.public_area().name_algorithm(), NameAlgorithm::Sha256);
        match private {
            EkPrivate::Rsa(key) => key
                .decrypt(
                    rsa::Oaep::new_with_label::<Sha256, _>(OAEP_LABEL_IDENTITY),
                    encrypted_secret,
                )
                .unwrap(),
            EkPrivate::Ecc(key) => {
                let mut reader = TpmReader::new("TPMS_ECC_POINT", encrypted_secret);
                let x = reader.tpm2b("x", 32).unwrap();
                let y = reader.tpm2b("y", 32).unwrap();
                reader.finish().unwrap();
                let TpmPublicKey::EccP256(ephemeral) = p256_key(TPM_ECC_NIST_P256, x, y).unwrap()
                else {
                    unreachable!()
                };
                let shared =
                    p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), ephemeral.as_affine());
                let ek_point = key.public_key().to_encoded_point(false);
                kdfe(
                    NameAlgorithm::Sha256,
                    shared.raw_secret_bytes(),
                    LABEL_IDENTITY,
                    x,
                    ek_point.x().unwrap(),
                    32,
                )
            }
        }
    }

    /// TPM2_ActivateCredential in software (CredentialToSecret), for keys whose private half
    /// the test holds: checks the outer HMAC, then decrypts the secret.
    fn activate(
        ek: &EndorsementKey,
        private: &EkPrivate,
        name: &ObjectName,
        credential: &Credential,
    ) -> Result<Vec<u8>, &'static str> {
        let algorithm = ek.public_area().name_algorithm();
        let seed = recover_seed(ek, private, &credential.encrypted_secret);
        let mut reader = TpmReader::new("TPM2B_ID_OBJECT", &credential.credential_blob);
        let outer_hmac = reader.tpm2b("integrityHMAC", 64).map_err(|_| "no hmac")?;
        let encrypted_identity = reader.bytes;
        let hmac_key = kdfa(algorithm, &seed, LABEL_INTEGRITY, &[], &[], 256).unwrap();
        let expected = algorithm
            .hmac(&hmac_key, &[encrypted_identity, name.as_bytes()])
            .unwrap();
        if expected != outer_hmac {
            return Err("integrity");
        }
        let key = kdfa(algorithm, &seed, LABEL_STORAGE, name.as_bytes(), &[], 128).unwrap();
        let mut plain = encrypted_identity.to_vec();
        cfb_mode::Decryptor::<Aes128>::new_from_slices(&key, &[0; 16])
            .unwrap()
            .decrypt(&mut plain);
        let mut reader = TpmReader::new("TPM2B_DIGEST", &plain);
        let secret = reader.tpm2b("secret", 64).map_err(|_| "size")?.to_vec();
        reader.finish().map_err(|_| "size")?;
        Ok(secret)
    }

    #[test]
    fn names_are_what_tpm2_createak_reported() {
        let rsa = AttestationKeyPublic::from_tpm2b_public(AK_RSA).unwrap();
        assert_eq!(rsa.name().as_bytes(), AK_RSA_NAME);
        assert_eq!(rsa.name(), &ObjectName::from_bytes(AK_RSA_NAME).unwrap());
        assert!(matches!(rsa.attestation_key(), AttestationKey::Rsa(_)));
        // The same name from the bare TPMT_PUBLIC.
        let bare = AttestationKeyPublic::from_tpmt_public(&AK_RSA[2..]).unwrap();
        assert_eq!(bare.name().as_bytes(), AK_RSA_NAME);

        let ecc = AttestationKeyPublic::from_tpm2b_public(AK_ECC).unwrap();
        assert_eq!(ecc.name().as_bytes(), AK_ECC_NAME);
        assert!(matches!(
            ecc.attestation_key(),
            AttestationKey::EcdsaP256(_)
        ));
    }

    #[test]
    fn reads_the_default_ek_templates() {
        for (bytes, rsa) in [(EK_RSA, true), (EK_ECC, false)] {
            let ek = EndorsementKey::from_tpm2b_public(bytes).unwrap();
            let area = ek.public_area();
            assert_eq!(area.name_algorithm(), NameAlgorithm::Sha256);
            // The TCG default EK template attributes.
            assert_eq!(area.attributes().0, 0x0003_00b2);
            assert_eq!(ek.cipher, CredentialCipher::Aes128);
            assert_eq!(ek.max_secret_len(), 32);
            assert_eq!(matches!(area.key(), TpmPublicKey::Rsa(_)), rsa);
        }
    }

    #[test]
    fn rsa_credential_is_byte_for_byte_what_tpm2_makecredential_makes_from_the_same_seed() {
        let ek = EndorsementKey::from_tpm2b_public(SOFTWARE_EK_RSA).unwrap();
        let name = ObjectName::from_bytes(AK_RSA_NAME).unwrap();
        let theirs = Credential::from_tpm2_tools_file(SOFTWARE_CREDENTIAL_RSA).unwrap();
        let private = EkPrivate::Rsa(Box::new(rsa_private()));
        let seed = recover_seed(&ek, &private, &theirs.encrypted_secret);
        assert_eq!(
            ek.credential_blob(&seed, &name, SECRET).unwrap(),
            theirs.credential_blob
        );
        assert_eq!(theirs.to_tpm2_tools_file(), SOFTWARE_CREDENTIAL_RSA);
        assert_eq!(activate(&ek, &private, &name, &theirs).unwrap(), SECRET);
    }

    #[test]
    fn ecc_credential_is_byte_for_byte_what_tpm2_makecredential_makes_from_the_same_seed() {
        let ek = EndorsementKey::from_tpm2b_public(SOFTWARE_EK_ECC).unwrap();
        let name = ObjectName::from_bytes(AK_ECC_NAME).unwrap();
        let theirs = Credential::from_tpm2_tools_file(SOFTWARE_CREDENTIAL_ECC).unwrap();
        let private = EkPrivate::Ecc(ecc_private());
        let seed = recover_seed(&ek, &private, &theirs.encrypted_secret);
        assert_eq!(
            ek.credential_blob(&seed, &name, SECRET).unwrap(),
            theirs.credential_blob
        );
        assert_eq!(activate(&ek, &private, &name, &theirs).unwrap(), SECRET);
    }

    #[test]
    fn rsa_credential_opens_for_its_name_only() {
        let ek = EndorsementKey::from_tpm2b_public(SOFTWARE_EK_RSA).unwrap();
        let private = EkPrivate::Rsa(Box::new(rsa_private()));
        let name = ObjectName::from_bytes(AK_RSA_NAME).unwrap();
        let other = ObjectName::from_bytes(AK_ECC_NAME).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let credential = ek.make_credential(&name, b"a secret", &mut rng).unwrap();
        assert_eq!(
            activate(&ek, &private, &name, &credential).unwrap(),
            b"a secret"
        );
        assert_eq!(
            activate(&ek, &private, &other, &credential),
            Err("integrity")
        );
    }

    #[test]
    fn secrets_must_fit_a_name_algorithm_digest() {
        let ek = EndorsementKey::from_tpm2b_public(EK_RSA).unwrap();
        let name = ObjectName::from_bytes(AK_RSA_NAME).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for len in [0, 33] {
            let error = ek
                .make_credential(&name, &vec![1; len], &mut rng)
                .unwrap_err();
            assert_eq!(error, CredentialError::InvalidSecret { len, max: 32 });
            assert!(!error.is_peer_fault());
        }
    }

    #[test]
    fn tpm_read_errors_become_credential_errors_of_the_same_kind() {
        let mut reader = TpmReader::new("TEST", &[0, 3, 1, 2]);
        assert_eq!(
            CredentialError::from(reader.tpm2b("buffer", 2).unwrap_err()),
            CredentialError::Malformed("TEST: buffer of 3 bytes, at most 2".into())
        );
        let mut reader = TpmReader::new("TEST", &[0, 3, 1, 2]);
        assert_eq!(
            CredentialError::from(reader.tpm2b("buffer", 3).unwrap_err()),
            CredentialError::Truncated("TEST: 3 bytes needed, 2 left".into())
        );
    }

    #[test]
    fn kdfa_spans_several_blocks_and_truncates() {
        let long = kdfa(NameAlgorithm::Sha256, b"key", b"label", b"u", b"v", 520).unwrap();
        assert_eq!(long.len(), 65);
        let first = NameAlgorithm::Sha256
            .hmac(
                b"key",
                &[
                    &1u32.to_be_bytes(),
                    b"label",
                    &[0],
                    b"u",
                    b"v",
                    &520u32.to_be_bytes(),
                ],
            )
            .unwrap();
        assert_eq!(long[..32], first[..]);
        let short = kdfa(NameAlgorithm::Sha256, b"key", b"label", b"u", b"v", 128).unwrap();
        assert_eq!(short.len(), 16);
        // The size is part of every block: a shorter output is not a prefix of a longer one.
        assert_ne!(short[..], long[..16]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn ecc_credentials_open_with_the_secret_for_their_name_only(
            secret in proptest::collection::vec(any::<u8>(), 1..=32),
            digest in proptest::collection::vec(any::<u8>(), 32),
            seed in any::<u64>(),
        ) {
            let ek = EndorsementKey::from_tpm2b_public(SOFTWARE_EK_ECC).unwrap();
            let private = EkPrivate::Ecc(ecc_private());
            let name =
                ObjectName::from_bytes(&[&TPM_ALG_SHA256.to_be_bytes()[..], &digest].concat())
                    .unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let credential = ek.make_credential(&name, &secret, &mut rng).unwrap();
            prop_assert_eq!(activate(&ek, &private, &name, &credential).unwrap(), secret);
            let mut other = digest.clone();
            other[0] ^= 1;
            let other =
                ObjectName::from_bytes(&[&TPM_ALG_SHA256.to_be_bytes()[..], &other].concat())
                    .unwrap();
            prop_assert_eq!(activate(&ek, &private, &other, &credential), Err("integrity"));
        }
    }
}
