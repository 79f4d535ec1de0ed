//! `tpm2` evidence: a TPM 2.0 quote (TPM2_Quote) over sha256 PCRs, signed by the node's
//! attestation key (AK), carrying the challenge binding as its qualifying data. It must never
//! accept a quote that the pinned AK did not sign, nor PCR values that are not the quoted ones.
//!
//! # Format
//!
//! The evidence is one CBOR map with exactly these text keys:
//!
//! | key           | value                                                                   |
//! |---------------|-------------------------------------------------------------------------|
//! | `version`     | unsigned, [`VERSION`]                                                   |
//! | `quoted`      | byte string: the TPMS_ATTEST the TPM signed (`tpm2_quote -m`)           |
//! | `signature`   | byte string: the TPMT_SIGNATURE over `quoted` (`tpm2_quote -s`)         |
//! | `ak_public`   | byte string: the AK public key, SubjectPublicKeyInfo DER                |
//! | `pcrs_sha256` | map: PCR index (0..=23) → 32-byte string, the sha256 bank values quoted |
//!
//! [`Tpm2Evidence::from_quote_outputs`] builds it from what `tpm2_quote` writes
//! (`-m`, `-s`, and `-o` with `-F values`) plus the AK public key.
//!
//! # What is checked
//!
//! Size; the AK named in the evidence is the pinned one; the signature over `quoted` with the
//! pinned AK (ECDSA P-256, RSASSA-PKCS1-v1_5 or RSASSA-PSS, SHA-256); TPMS_ATTEST structure
//! (magic `TPM_GENERATED_VALUE`, type `TPM_ST_ATTEST_QUOTE`, no trailing bytes); `extraData`
//! against [`Expectations::report_data`]; the reported PCR set equals the quoted selection and
//! SHA-256 of the reported values in selection order equals `pcrDigest`; reference values named
//! `pcr0`..`pcr23` (lowercase hex of the sha256 bank value).
//!
//! # Binding and freshness
//!
//! The qualifying data (`extraData`) is the 64-byte [`crate::report_data_binding`] itself, not
//! a hash of it: a TPM2B_DATA holds up to 64 bytes (`sizeof(TPMT_HA)` minus the algorithm), so it
//! fits whole. Freshness comes from that nonce alone: `clockInfo` counts TPM uptime and resets,
//! not wall-clock time, so [`Expectations::max_age`] does not apply here; the caller keeps each
//! nonce single-use and short-lived. `clockInfo`, `firmwareVersion` and `qualifiedSigner` are
//! parsed and exposed in [`QuoteAttest`] but not judged.
//!
//! # What the AK must be
//!
//! A TPM only refuses to sign bytes starting with `TPM_GENERATED_VALUE` with a *restricted*
//! signing key. The pinned AK must therefore be a restricted, fixedTPM signing key, which is the
//! job of enrollment (credential activation against the EK); this module trusts the AK it is
//! given.

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use crate::cbor_fields::CborFields;
use crate::evidence::{check_len, check_report_data};
use crate::tpm_reader::TpmReader;
use crate::{AttestError, EvidenceType, Expectations, Verdict};

/// The evidence version this module writes and accepts.
pub const VERSION: u64 = 1;

/// Largest `tpm2` evidence: a quote of all 24 PCRs with a 4096-bit RSA AK is under 2 KiB.
pub const MAX_TPM2_EVIDENCE_LEN: usize = 8 * 1024;

/// `TPM_GENERATED_VALUE`: what a TPM puts first in every structure it signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_RSASSA` (PKCS#1 v1.5 signatures).
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// `TPM_ALG_RSAPSS`.
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
/// `TPM_ALG_ECDSA`.
pub const TPM_ALG_ECDSA: u16 = 0x0018;

/// PCRs this verifier knows: 0..=23, the PC Client platform set.
pub const PCR_COUNT: u8 = 24;

/// Smallest RSA AK accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest structures inside TPMS_ATTEST and TPMT_SIGNATURE (TPM 2.0 Part 2 limits).
const MAX_NAME_LEN: usize = 2 + 64; // TPMU_NAME: a TPMT_HA
const MAX_DATA_LEN: usize = 64; // TPM2B_DATA buffer, limited to the 64-byte binding
const MAX_DIGEST_LEN: usize = 64; // TPMU_HA
const MAX_BANKS: u32 = 16; // HASH_COUNT
const MAX_SIZEOF_SELECT: u8 = 4;
const MAX_RSA_SIGNATURE_LEN: usize = 512;
const P256_SCALAR_LEN: usize = 32;

/// The attestation key a node registered at enrollment (the verifier pins it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationKey {
    /// An ECC NIST P-256 AK (ECDSA signatures).
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// An RSA AK (RSASSA-PKCS1-v1_5 or RSASSA-PSS signatures), at least [`MIN_RSA_BITS`].
    Rsa(rsa::RsaPublicKey),
}

/// An attestation key that cannot be used (a configuration fault, not an evidence fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attestation key: {0}")]
pub struct InvalidAttestationKey(String);

impl AttestationKey {
    /// Reads a SubjectPublicKeyInfo DER public key (P-256 or RSA ≥ 2048 bits).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, InvalidAttestationKey> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(AttestationKey::EcdsaP256(key));
        }
        match rsa::RsaPublicKey::from_public_key_der(der) {
            Ok(key) if key.size() * 8 >= MIN_RSA_BITS => Ok(AttestationKey::Rsa(key)),
            Ok(key) => Err(InvalidAttestationKey(format!(
                "RSA key of {} bits, at least {MIN_RSA_BITS} required",
                key.size() * 8
            ))),
            Err(_) => Err(InvalidAttestationKey(
                "not a P-256 or RSA SubjectPublicKeyInfo".into(),
            )),
        }
    }

    /// Reads a PEM `PUBLIC KEY` (what `tpm2_readpublic -f pem` writes).
    pub fn from_pem(pem: &str) -> Result<Self, InvalidAttestationKey> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(AttestationKey::EcdsaP256(key));
        }
        let der = rsa::RsaPublicKey::from_public_key_pem(pem)
            .map_err(|_| InvalidAttestationKey("not a P-256 or RSA PUBLIC KEY PEM".into()))?
            .to_public_key_der()
            .map_err(|error| InvalidAttestationKey(error.to_string()))?;
        Self::from_spki_der(der.as_bytes())
    }

    /// The SubjectPublicKeyInfo DER encoding.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let der = match self {
            AttestationKey::EcdsaP256(key) => key.to_public_key_der(),
            AttestationKey::Rsa(key) => key.to_public_key_der(),
        };
        // Encoding a key that was decoded (or built by the crates) does not fail.
        der.map(|der| der.as_bytes().to_vec()).unwrap_or_default()
    }

    fn verify(&self, message: &[u8], signature: &TpmSignature) -> Result<(), AttestError> {
        let bad = |why: &str| AttestError::BadSignature(format!("tpm2 quote: {why}"));
        match (self, signature) {
            (AttestationKey::EcdsaP256(key), TpmSignature::Ecdsa { r, s }) => {
                let signature = p256::ecdsa::Signature::from_scalars(
                    p256::FieldBytes::from(*r),
                    p256::FieldBytes::from(*s),
                )
                .map_err(|_| bad("ECDSA r or s out of range"))?;
                key.verify(message, &signature)
                    .map_err(|_| bad("not signed by the attestation key"))
            }
            (AttestationKey::Rsa(key), TpmSignature::RsaPkcs1v15(bytes)) => {
                let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice())
                    .map_err(|_| bad("RSA signature unreadable"))?;
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(message, &signature)
                    .map_err(|_| bad("not signed by the attestation key"))
            }
            (AttestationKey::Rsa(key), TpmSignature::RsaPss(bytes)) => {
                let signature = rsa::pss::Signature::try_from(bytes.as_slice())
                    .map_err(|_| bad("RSA signature unreadable"))?;
                // TPMs use a salt as long as the digest (TPM 2.0 Part 1, RSASSA-PSS).
                rsa::pss::VerifyingKey::<Sha256>::new(key.clone())
                    .verify(message, &signature)
                    .map_err(|_| bad("not signed by the attestation key"))
            }
            _ => Err(bad(
                "signature scheme does not match the attestation key type",
            )),
        }
    }
}

/// The fields of a `tpm2` evidence, before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm2Evidence {
    /// The TPMS_ATTEST bytes the TPM signed.
    pub quoted: Vec<u8>,
    /// The TPMT_SIGNATURE over `quoted`.
    pub signature: Vec<u8>,
    /// The AK public key, SubjectPublicKeyInfo DER.
    pub ak_public: Vec<u8>,
    /// Reported sha256 PCR values, by index.
    pub pcrs_sha256: BTreeMap<u8, [u8; 32]>,
}

impl Tpm2Evidence {
    /// Builds the evidence from `tpm2_quote` outputs: `-m` (TPMS_ATTEST), `-s` (TPMT_SIGNATURE,
    /// default `tss` format), and `-o` written with `-F values` (the PCR values concatenated in
    /// selection order), plus the AK public key as SubjectPublicKeyInfo DER.
    pub fn from_quote_outputs(
        quoted: &[u8],
        signature: &[u8],
        ak_public_spki_der: &[u8],
        pcr_values: &[u8],
    ) -> Result<Self, AttestError> {
        let attest = QuoteAttest::parse(quoted)?;
        let indices = attest.selected_pcrs();
        if pcr_values.len() != indices.len() * 32 {
            return Err(AttestError::Malformed(format!(
                "tpm2: {} bytes of PCR values for {} selected sha256 PCRs",
                pcr_values.len(),
                indices.len()
            )));
        }
        let mut pcrs_sha256 = BTreeMap::new();
        for (index, value) in indices.iter().zip(pcr_values.chunks_exact(32)) {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(value);
            pcrs_sha256.insert(*index, digest);
        }
        Ok(Tpm2Evidence {
            quoted: quoted.to_vec(),
            signature: signature.to_vec(),
            ak_public: ak_public_spki_der.to_vec(),
            pcrs_sha256,
        })
    }

    /// The CBOR evidence (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let pcrs = self
            .pcrs_sha256
            .iter()
            .map(|(index, value)| {
                (
                    Value::Integer((*index).into()),
                    Value::Bytes(value.to_vec()),
                )
            })
            .collect();
        let map = Value::Map(vec![
            (
                Value::Text("version".into()),
                Value::Integer(VERSION.into()),
            ),
            (
                Value::Text("quoted".into()),
                Value::Bytes(self.quoted.clone()),
            ),
            (
                Value::Text("signature".into()),
                Value::Bytes(self.signature.clone()),
            ),
            (
                Value::Text("ak_public".into()),
                Value::Bytes(self.ak_public.clone()),
            ),
            (Value::Text("pcrs_sha256".into()), Value::Map(pcrs)),
        ]);
        let mut out = Vec::new();
        // Writing a `Value` into a Vec has no failure path (no IO error, no unsupported type).
        #[allow(clippy::expect_used)]
        ciborium::ser::into_writer(&map, &mut out).expect("CBOR into a Vec cannot fail");
        out
    }

    /// Parses the CBOR evidence (structure only; nothing is verified).
    pub fn decode(evidence: &[u8]) -> Result<Self, AttestError> {
        check_len("tpm2 evidence", evidence, MAX_TPM2_EVIDENCE_LEN)?;
        let mut fields = CborFields::decode("tpm2 evidence", evidence)?;
        let version = fields.take_u64("version")?;
        if version != VERSION {
            return Err(AttestError::Malformed(format!(
                "tpm2 evidence: version {version}, expected {VERSION}"
            )));
        }
        let quoted = fields.take_bytes("quoted")?;
        let signature = fields.take_bytes("signature")?;
        let ak_public = fields.take_bytes("ak_public")?;
        let Value::Map(pairs) = fields.take("pcrs_sha256")? else {
            return Err(AttestError::Malformed(
                "tpm2 evidence: pcrs_sha256 is not a map".into(),
            ));
        };
        fields.finish()?;
        let mut pcrs_sha256 = BTreeMap::new();
        for (index, value) in pairs {
            let index = match index {
                Value::Integer(index) => u8::try_from(index).ok().filter(|i| *i < PCR_COUNT),
                _ => None,
            }
            .ok_or_else(|| {
                AttestError::Malformed("tpm2 evidence: a PCR index is not 0..=23".into())
            })?;
            let value = match value {
                Value::Bytes(bytes) => <[u8; 32]>::try_from(bytes).ok(),
                _ => None,
            }
            .ok_or_else(|| {
                AttestError::Malformed(format!("tpm2 evidence: pcr{index} is not 32 bytes"))
            })?;
            if pcrs_sha256.insert(index, value).is_some() {
                return Err(AttestError::Malformed(format!(
                    "tpm2 evidence: pcr{index} reported twice"
                )));
            }
        }
        Ok(Tpm2Evidence {
            quoted,
            signature,
            ak_public,
            pcrs_sha256,
        })
    }
}

/// Verifies `tpm2` evidence against the pinned attestation key `ak` (see the module
/// documentation for what is checked; [`Expectations::max_age`] does not apply).
pub fn verify(
    evidence: &[u8],
    ak: &AttestationKey,
    expectations: &Expectations,
) -> Result<Verdict, AttestError> {
    let evidence = Tpm2Evidence::decode(evidence)?;
    let named = AttestationKey::from_spki_der(&evidence.ak_public)
        .map_err(|error| AttestError::Malformed(format!("tpm2 evidence: ak_public: {error}")))?;
    if named != *ak {
        return Err(AttestError::BadSignature(
            "tpm2 evidence: signed by another attestation key than the one enrolled".into(),
        ));
    }
    let signature = TpmSignature::parse(&evidence.signature)?;
    // The signature is checked before the signed bytes are interpreted.
    ak.verify(&evidence.quoted, &signature)?;
    let attest = QuoteAttest::parse(&evidence.quoted)?;

    check_report_data(&attest.extra_data, expectations.report_data.as_deref())?;

    let selected = attest.selected_pcrs();
    let reported: Vec<u8> = evidence.pcrs_sha256.keys().copied().collect();
    if reported.iter().collect::<BTreeSet<_>>() != selected.iter().collect::<BTreeSet<_>>() {
        return Err(AttestError::Malformed(format!(
            "tpm2 evidence: reported PCRs {reported:?} are not the quoted selection {selected:?}"
        )));
    }
    let mut hasher = Sha256::new();
    for index in &selected {
        if let Some(value) = evidence.pcrs_sha256.get(index) {
            hasher.update(value);
        }
    }
    if hasher.finalize().as_slice() != attest.pcr_digest.as_slice() {
        return Err(AttestError::BadSignature(
            "tpm2 evidence: reported PCR values are not the quoted ones (pcrDigest differs)".into(),
        ));
    }

    let measurements: BTreeMap<String, String> = evidence
        .pcrs_sha256
        .iter()
        .map(|(index, value)| (format!("pcr{index}"), hex::encode(value)))
        .collect();
    expectations.reference.check(&measurements)?;
    Ok(Verdict {
        evidence_type: EvidenceType::Tpm2,
        measurements,
        report_data: hex::encode(&attest.extra_data),
        tcb_status: None,
        advisories: Vec::new(),
    })
}

/// A parsed TPMT_SIGNATURE (only the schemes this verifier accepts, all with SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    /// TPM_ALG_ECDSA: r and s, left-padded to 32 bytes.
    Ecdsa {
        /// r, big-endian.
        r: [u8; 32],
        /// s, big-endian.
        s: [u8; 32],
    },
    /// TPM_ALG_RSASSA.
    RsaPkcs1v15(Vec<u8>),
    /// TPM_ALG_RSAPSS.
    RsaPss(Vec<u8>),
}

impl TpmSignature {
    /// Parses a marshalled TPMT_SIGNATURE; the hash must be SHA-256 and nothing may follow.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let mut reader = TpmReader::new("TPMT_SIGNATURE", bytes);
        let algorithm = reader.u16()?;
        let hash = reader.u16()?;
        if hash != TPM_ALG_SHA256 {
            return Err(AttestError::Malformed(format!(
                "TPMT_SIGNATURE: hash algorithm {hash:#06x}, only sha256 is accepted"
            )));
        }
        let signature = match algorithm {
            TPM_ALG_ECDSA => {
                let r = reader.tpm2b("signatureR", P256_SCALAR_LEN)?;
                let s = reader.tpm2b("signatureS", P256_SCALAR_LEN)?;
                TpmSignature::Ecdsa {
                    r: left_pad(r),
                    s: left_pad(s),
                }
            }
            TPM_ALG_RSASSA => {
                TpmSignature::RsaPkcs1v15(reader.tpm2b("sig", MAX_RSA_SIGNATURE_LEN)?.to_vec())
            }
            TPM_ALG_RSAPSS => {
                TpmSignature::RsaPss(reader.tpm2b("sig", MAX_RSA_SIGNATURE_LEN)?.to_vec())
            }
            other => {
                return Err(AttestError::Malformed(format!(
                    "TPMT_SIGNATURE: scheme {other:#06x} is not ECDSA, RSASSA or RSAPSS"
                )))
            }
        };
        reader.finish()?;
        Ok(signature)
    }
}

/// TPMS_CLOCK_INFO: TPM time, not wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (since the last clear).
    pub clock: u64,
    /// TPM resets (reboots) since the last clear.
    pub reset_count: u32,
    /// Restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` was not rolled back.
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm (TPM_ALG_ID).
    pub hash: u16,
    /// Selected PCR indices, ascending (the order the TPM hashes them).
    pub pcrs: Vec<u8>,
}

/// A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteAttest {
    /// qualifiedSigner (TPM2B_NAME contents).
    pub qualified_signer: Vec<u8>,
    /// extraData: the qualifying data the caller passed to TPM2_Quote (the binding).
    pub extra_data: Vec<u8>,
    /// clockInfo.
    pub clock_info: ClockInfo,
    /// firmwareVersion (vendor-specific).
    pub firmware_version: u64,
    /// TPMS_QUOTE_INFO.pcrSelect.
    pub pcr_select: Vec<PcrSelection>,
    /// TPMS_QUOTE_INFO.pcrDigest.
    pub pcr_digest: Vec<u8>,
}

impl QuoteAttest {
    /// Parses a marshalled TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12). Only quotes of the sha256
    /// bank over PCRs 0..=23 are accepted; nothing may follow the structure.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let mut reader = TpmReader::new("TPMS_ATTEST", bytes);
        let magic = reader.u32()?;
        if magic != TPM_GENERATED_VALUE {
            return Err(AttestError::Malformed(format!(
                "TPMS_ATTEST: magic {magic:#010x} is not TPM_GENERATED_VALUE"
            )));
        }
        let attest_type = reader.u16()?;
        if attest_type != TPM_ST_ATTEST_QUOTE {
            return Err(AttestError::Malformed(format!(
                "TPMS_ATTEST: type {attest_type:#06x} is not TPM_ST_ATTEST_QUOTE"
            )));
        }
        let qualified_signer = reader.tpm2b("qualifiedSigner", MAX_NAME_LEN)?.to_vec();
        let extra_data = reader.tpm2b("extraData", MAX_DATA_LEN)?.to_vec();
        let clock_info = ClockInfo {
            clock: reader.u64()?,
            reset_count: reader.u32()?,
            restart_count: reader.u32()?,
            safe: match reader.u8()? {
                0 => false,
                1 => true,
                other => {
                    return Err(AttestError::Malformed(format!(
                        "TPMS_ATTEST: clockInfo.safe is {other}, not a TPMI_YES_NO"
                    )))
                }
            },
        };
        let firmware_version = reader.u64()?;

        let count = reader.u32()?;
        if count > MAX_BANKS {
            return Err(AttestError::Malformed(format!(
                "TPMS_QUOTE_INFO: {count} PCR banks, at most {MAX_BANKS}"
            )));
        }
        let mut pcr_select = Vec::new();
        for _ in 0..count {
            let hash = reader.u16()?;
            let size_of_select = reader.u8()?;
            if size_of_select > MAX_SIZEOF_SELECT {
                return Err(AttestError::Malformed(format!(
                    "TPMS_PCR_SELECTION: sizeofSelect {size_of_select}, at most {MAX_SIZEOF_SELECT}"
                )));
            }
            let bitmap = reader.take(usize::from(size_of_select))?;
            let pcrs: Vec<u8> = (0..size_of_select.saturating_mul(8))
                .filter(|bit| bitmap[usize::from(bit / 8)] & (1 << (bit % 8)) != 0)
                .collect();
            if let Some(index) = pcrs.iter().find(|index| **index >= PCR_COUNT) {
                return Err(AttestError::Malformed(format!(
                    "TPMS_PCR_SELECTION: PCR {index} is beyond pcr23"
                )));
            }
            if !pcrs.is_empty() && hash != TPM_ALG_SHA256 {
                return Err(AttestError::Malformed(format!(
                    "TPMS_PCR_SELECTION: bank {hash:#06x}, only sha256 is accepted"
                )));
            }
            if pcr_select
                .iter()
                .any(|seen: &PcrSelection| seen.hash == hash)
            {
                return Err(AttestError::Malformed(format!(
                    "TPMS_PCR_SELECTION: bank {hash:#06x} selected twice"
                )));
            }
            pcr_select.push(PcrSelection { hash, pcrs });
        }
        let pcr_digest = reader.tpm2b("pcrDigest", MAX_DIGEST_LEN)?.to_vec();
        if pcr_digest.len() != 32 {
            return Err(AttestError::Malformed(format!(
                "TPMS_QUOTE_INFO: pcrDigest of {} bytes, a SHA-256 digest has 32",
                pcr_digest.len()
            )));
        }
        reader.finish()?;
        Ok(QuoteAttest {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }

    /// The quoted sha256 PCR indices in the order the TPM hashed them.
    pub fn selected_pcrs(&self) -> Vec<u8> {
        self.pcr_select
            .iter()
            .filter(|selection| selection.hash == TPM_ALG_SHA256)
            .flat_map(|selection| selection.pcrs.iter().copied())
            .collect()
    }
}

fn left_pad(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{report_data_binding, ReferenceValues};

    // A real quote from swtpm (tests/fixtures/tpm2/README.md says how it was made).
    const QUOTED: &[u8] = include_bytes!("../tests/fixtures/tpm2/quote.msg");
    const SIGNATURE: &[u8] = include_bytes!("../tests/fixtures/tpm2/quote.sig");
    const AK_PEM: &str = include_str!("../tests/fixtures/tpm2/ak.pem");
    const PCR_VALUES: &[u8] = include_bytes!("../tests/fixtures/tpm2/pcrs.bin");
    const PCR7: &str = "debb3e7acfff6dd18d501042273629f0b79cb206bb8c24f59f62ddb80849403b";

    fn ak() -> AttestationKey {
        AttestationKey::from_pem(AK_PEM).unwrap()
    }

    fn binding() -> [u8; 64] {
        report_data_binding(b"ztmesh tpm2 fixture nonce", b"fixture tls spki")
    }

    fn fixture() -> Tpm2Evidence {
        Tpm2Evidence::from_quote_outputs(QUOTED, SIGNATURE, &ak().to_spki_der(), PCR_VALUES)
            .unwrap()
    }

    fn expectations() -> Expectations {
        let mut reference = ReferenceValues::default();
        reference
            .0
            .insert("pcr7".into(), [PCR7.to_owned()].into_iter().collect());
        reference.0.insert(
            "pcr0".into(),
            [hex::encode([0u8; 32])].into_iter().collect(),
        );
        Expectations {
            report_data: Some(binding().to_vec()),
            reference,
            ..Expectations::default()
        }
    }

    fn check(evidence: &[u8]) -> Result<Verdict, AttestError> {
        verify(evidence, &ak(), &expectations())
    }

    #[test]
    fn parses_the_swtpm_quote() {
        let attest = QuoteAttest::parse(QUOTED).unwrap();
        assert_eq!(attest.extra_data, binding());
        assert_eq!(attest.selected_pcrs(), vec![0, 1, 2, 7]);
        assert_eq!(attest.qualified_signer.len(), 34);
        assert!(attest.clock_info.safe);
        assert!(matches!(
            TpmSignature::parse(SIGNATURE).unwrap(),
            TpmSignature::Ecdsa { .. }
        ));
    }

    #[test]
    fn accepts_the_swtpm_quote() {
        let verdict = check(&fixture().encode()).unwrap();
        assert_eq!(verdict.evidence_type, EvidenceType::Tpm2);
        assert_eq!(verdict.report_data, hex::encode(binding()));
        assert_eq!(verdict.measurements["pcr7"], PCR7);
        assert_eq!(
            verdict.measurements.keys().collect::<Vec<_>>(),
            ["pcr0", "pcr1", "pcr2", "pcr7"]
        );
    }

    #[test]
    fn encoding_round_trips() {
        let evidence = fixture();
        assert_eq!(Tpm2Evidence::decode(&evidence.encode()).unwrap(), evidence);
    }

    #[test]
    fn refuses_a_wrong_nonce() {
        let mut expectations = expectations();
        expectations.report_data =
            Some(report_data_binding(b"other nonce", b"fixture tls spki").to_vec());
        assert_eq!(
            verify(&fixture().encode(), &ak(), &expectations),
            Err(AttestError::WrongNonce)
        );
    }

    #[test]
    fn refuses_a_changed_pcr_value() {
        let mut evidence = fixture();
        evidence.pcrs_sha256.insert(7, [0u8; 32]);
        assert_eq!(
            check(&evidence.encode()).unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[test]
    fn refuses_a_reported_set_that_is_not_the_selection() {
        let mut evidence = fixture();
        evidence.pcrs_sha256.remove(&1);
        assert_eq!(check(&evidence.encode()).unwrap_err().reason(), "malformed");
        let mut evidence = fixture();
        evidence.pcrs_sha256.insert(3, [0u8; 32]);
        assert_eq!(check(&evidence.encode()).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn refuses_a_pcr_policy_mismatch() {
        let mut expectations = expectations();
        expectations.reference.0.insert(
            "pcr7".into(),
            [hex::encode([0u8; 32])].into_iter().collect(),
        );
        assert!(matches!(
            verify(&fixture().encode(), &ak(), &expectations),
            Err(AttestError::WrongMeasurement { name, .. }) if name == "pcr7"
        ));
        // A PCR the policy requires but the quote does not cover.
        let mut expectations = self::expectations();
        expectations.reference.0.insert(
            "pcr4".into(),
            [hex::encode([0u8; 32])].into_iter().collect(),
        );
        assert!(matches!(
            verify(&fixture().encode(), &ak(), &expectations),
            Err(AttestError::WrongMeasurement { name, .. }) if name == "pcr4"
        ));
    }

    #[test]
    fn refuses_a_flipped_signature_bit() {
        for index in [7, SIGNATURE.len() - 1] {
            let mut evidence = fixture();
            evidence.signature[index] ^= 0x01;
            assert_eq!(
                check(&evidence.encode()).unwrap_err().reason(),
                "bad_signature"
            );
        }
    }

    #[test]
    fn refuses_a_changed_quote() {
        let mut evidence = fixture();
        let last = evidence.quoted.len() - 1;
        evidence.quoted[last] ^= 0x01;
        assert_eq!(
            check(&evidence.encode()).unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[test]
    fn refuses_another_attestation_key() {
        let other = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let other = AttestationKey::EcdsaP256(*other.verifying_key());
        let error = verify(&fixture().encode(), &other, &expectations()).unwrap_err();
        assert_eq!(error.reason(), "bad_signature");
        // The same, when the evidence names the other key too.
        let mut evidence = fixture();
        evidence.ak_public = other.to_spki_der();
        let error = verify(&evidence.encode(), &other, &expectations()).unwrap_err();
        assert_eq!(error.reason(), "bad_signature");
    }

    #[test]
    fn refuses_truncated_evidence() {
        let evidence = fixture().encode();
        for len in [0, 1, evidence.len() / 2, evidence.len() - 1] {
            assert_eq!(
                check(&evidence[..len]).unwrap_err().reason(),
                "truncated",
                "length {len}"
            );
        }
        assert_eq!(
            QuoteAttest::parse(&QUOTED[..QUOTED.len() - 1])
                .unwrap_err()
                .reason(),
            "truncated"
        );
        assert_eq!(
            TpmSignature::parse(&SIGNATURE[..SIGNATURE.len() - 1])
                .unwrap_err()
                .reason(),
            "truncated"
        );
    }

    #[test]
    fn refuses_oversized_evidence_before_parsing() {
        let mut evidence = fixture().encode();
        evidence.resize(MAX_TPM2_EVIDENCE_LEN + 1, 0);
        assert_eq!(check(&evidence).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn refuses_trailing_bytes_in_tpm_structures() {
        let mut quoted = QUOTED.to_vec();
        quoted.push(0);
        assert_eq!(
            QuoteAttest::parse(&quoted).unwrap_err().reason(),
            "malformed"
        );
        let mut signature = SIGNATURE.to_vec();
        signature.push(0);
        assert_eq!(
            TpmSignature::parse(&signature).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn refuses_structures_that_are_not_quotes() {
        let mut quoted = QUOTED.to_vec();
        quoted[0] = 0;
        assert!(QuoteAttest::parse(&quoted)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut quoted = QUOTED.to_vec();
        quoted[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        assert!(QuoteAttest::parse(&quoted)
            .unwrap_err()
            .to_string()
            .contains("type"));
    }

    #[test]
    fn attestation_keys_must_be_p256_or_large_rsa() {
        assert!(AttestationKey::from_pem("not a key").is_err());
        assert!(AttestationKey::from_spki_der(&[0x30, 0x00]).is_err());
        let der = ak().to_spki_der();
        assert_eq!(AttestationKey::from_spki_der(&der).unwrap(), ak());
    }

    proptest! {
        #[test]
        fn garbage_is_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert!(check(&bytes).is_err());
            prop_assert!(QuoteAttest::parse(&bytes).is_err() || bytes.starts_with(&TPM_GENERATED_VALUE.to_be_bytes()));
            let _ = TpmSignature::parse(&bytes);
        }

        #[test]
        fn any_change_to_the_quote_or_signature_is_refused(index in 0usize..1000, flip in 1u8..=255, in_signature in any::<bool>()) {
            let mut evidence = fixture();
            let target = if in_signature { &mut evidence.signature } else { &mut evidence.quoted };
            let index = index % target.len();
            target[index] ^= flip;
            prop_assert!(check(&evidence.encode()).is_err());
        }

        #[test]
        fn mutated_quotes_parse_or_fail_cleanly(index in 0usize..1000, byte in any::<u8>()) {
            let mut quoted = QUOTED.to_vec();
            let index = index % quoted.len();
            quoted[index] = byte;
            let _ = QuoteAttest::parse(&quoted);
        }
    }
}
