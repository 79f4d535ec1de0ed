//! The long-term node identity key (Ed25519 in software) and proofs of its possession.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer;
use ztmesh_core::NodeId;

use crate::PkiError;

/// What an identity proof is for. Each purpose signs under its own label, so a signature made
/// for one can never be replayed as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityProofDomain {
    /// Binds a CSR (its DER bytes) to the identity key at enrollment.
    EnrollCsr,
    /// Binds a CSR (its DER bytes) to the identity key at rotation.
    RotateCsr,
}

impl IdentityProofDomain {
    /// The label prepended (with a NUL separator) to the message before signing.
    pub fn label(self) -> &'static [u8] {
        match self {
            IdentityProofDomain::EnrollCsr => b"ztmesh/v1/enroll-csr",
            IdentityProofDomain::RotateCsr => b"ztmesh/v1/rotate-csr",
        }
    }
}

/// A node's secret identity key (Ed25519). Zeroized on drop.
pub struct IdentityKey(ed25519_dalek::SigningKey);

/// A node's public identity key.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityPublicKey(ed25519_dalek::VerifyingKey);

impl IdentityKey {
    /// A fresh key from the given RNG.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        IdentityKey(ed25519_dalek::SigningKey::generate(rng))
    }

    /// From PKCS#8 DER (as stored, encrypted, in the key file).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        // ed25519-dalek checks the embedded public key (PKCS#8 v2) against the secret, so a
        // file whose halves disagree is refused rather than signing under the wrong identity.
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(IdentityKey)
            .map_err(|e| PkiError::MalformedKey(format!("identity key PKCS#8: {e}")))
    }

    /// PKCS#8 DER of the secret key; the caller encrypts it before it touches disk.
    pub fn to_pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let document = self
            .0
            .to_pkcs8_der()
            // Encoding two fixed-size byte strings into a fixed structure has no failure mode;
            // an error here would be a bug in the encoder, not a property of the key.
            .expect("Ed25519 PKCS#8 encoding is infallible");
        // `SecretDocument` zeroizes itself on drop; the copy is zeroized by `Zeroizing`.
        zeroize::Zeroizing::new(document.as_bytes().to_vec())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key())
    }

    /// Signs the to-be-signed bytes of a COSE_Sign1 envelope (its Sig_structure). The
    /// envelope's external AAD carries the object kind's domain label, and a Sig_structure
    /// always starts with the CBOR array header and the text "Signature1", so these signatures
    /// can never be confused with [`IdentityKey::sign_proof`] messages.
    pub fn sign_envelope(&self, to_be_signed: &[u8]) -> [u8; 64] {
        self.0.sign(to_be_signed).to_bytes()
    }

    /// Signs `label || 0x00 || message` for the given purpose.
    pub fn sign_proof(&self, domain: IdentityProofDomain, message: &[u8]) -> [u8; 64] {
        self.0.sign(&proof_message(domain, message)).to_bytes()
    }
}

impl IdentityPublicKey {
    /// From DER SubjectPublicKeyInfo (Ed25519 only for now).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, PkiError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
            .map_err(|e| PkiError::MalformedKey(format!("identity key SPKI: {e}")))?;
        // A NodeId is a hash of the SPKI bytes, so there must be exactly one encoding per key:
        // anything that does not re-encode to the very same bytes could name a second NodeId.
        let key = IdentityPublicKey(key);
        if key.to_spki_der() != der {
            return Err(PkiError::MalformedKey(
                "identity key SPKI is not in canonical DER".into(),
            ));
        }
        // Small-order points verify signatures for many messages; they are never a real key.
        if key.0.is_weak() {
            return Err(PkiError::MalformedKey(
                "identity key is a weak (small-order) point".into(),
            ));
        }
        Ok(key)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            // As for PKCS#8: a fixed algorithm identifier and 32 bytes always encode.
            .expect("Ed25519 SPKI encoding is infallible")
            .into_vec()
    }

    /// The Ed25519 verifying key, for envelopes signed by [`IdentityKey::sign_envelope`].
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.0
    }

    /// The self-certifying NodeId of this key.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_spki_der(&self.to_spki_der())
    }

    /// Verifies a proof made by [`IdentityKey::sign_proof`] (strict Ed25519 verification).
    pub fn verify_proof(
        &self,
        domain: IdentityProofDomain,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), PkiError> {
        let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| {
            PkiError::BadSignature("identity proof is not a 64-byte Ed25519 signature".into())
        })?;
        // `verify_strict` refuses non-canonical signatures and weak keys, so a proof has exactly
        // one valid encoding and cannot be malleated into another accepted one.
        self.0
            .verify_strict(&proof_message(domain, message), &signature)
            .map_err(|_| {
                PkiError::BadSignature(format!("identity proof for {domain:?} does not verify"))
            })
    }
}

impl std::fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityPublicKey({})", self.node_id())
    }
}

/// The bytes actually signed for a proof: `label || 0x00 || message`. The NUL cannot occur in a
/// label, so no (label, message) pair can be re-split into another domain's pair.
fn proof_message(domain: IdentityProofDomain, message: &[u8]) -> Vec<u8> {
    let label = domain.label();
    let mut signed = Vec::with_capacity(label.len() + 1 + message.len());
    signed.extend_from_slice(label);
    signed.push(0);
    signed.extend_from_slice(message);
    signed
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// RFC 8032 §7.1 TEST 1 secret key.
    const RFC8032_TEST1_SECRET: [u8; 32] = [
        0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c,
        0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae,
        0x7f, 0x60,
    ];

    fn rfc8032_key() -> IdentityKey {
        IdentityKey(ed25519_dalek::SigningKey::from_bytes(&RFC8032_TEST1_SECRET))
    }

    #[test]
    fn spki_known_answer_rfc8410() {
        // RFC 8410 §4: an Ed25519 SPKI is the fixed 12-byte prefix followed by the raw key.
        let spki = rfc8032_key().public().to_spki_der();
        assert_eq!(
            hex::encode(&spki),
            "302a300506032b6570032100\
             d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let again = IdentityPublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(again, rfc8032_key().public());
        assert_eq!(again.node_id(), NodeId::from_spki_der(&spki));
        // base32(SHA-256(SPKI)[..20]), computed independently (Python hashlib + base64).
        assert_eq!(
            again.node_id().to_string(),
            "a3r73d62fg5wbk2zkv66mhw3blwnwiyr"
        );
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = IdentityKey::generate(&mut OsRng);
        let der = key.to_pkcs8_der();
        let back = IdentityKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(matches!(
            IdentityKey::from_pkcs8_der(b"nope"),
            Err(PkiError::MalformedKey(_))
        ));
    }

    #[test]
    fn proof_verifies_only_in_its_own_domain() {
        let key = IdentityKey::generate(&mut OsRng);
        let public = key.public();
        let proof = key.sign_proof(IdentityProofDomain::EnrollCsr, b"csr bytes");
        public
            .verify_proof(IdentityProofDomain::EnrollCsr, b"csr bytes", &proof)
            .unwrap();
        assert!(matches!(
            public.verify_proof(IdentityProofDomain::RotateCsr, b"csr bytes", &proof),
            Err(PkiError::BadSignature(_))
        ));
        assert!(matches!(
            public.verify_proof(IdentityProofDomain::EnrollCsr, b"other bytes", &proof),
            Err(PkiError::BadSignature(_))
        ));
        assert!(matches!(
            public.verify_proof(IdentityProofDomain::EnrollCsr, b"csr bytes", &proof[..63]),
            Err(PkiError::BadSignature(_))
        ));
        let other = IdentityKey::generate(&mut OsRng).public();
        assert!(other
            .verify_proof(IdentityProofDomain::EnrollCsr, b"csr bytes", &proof)
            .is_err());
    }

    #[test]
    fn proof_signs_label_nul_message() {
        // Pin the exact signed bytes: a plain Ed25519 signature over the framed message.
        let key = rfc8032_key();
        let proof = key.sign_proof(IdentityProofDomain::RotateCsr, b"m");
        let expected = key.0.sign(b"ztmesh/v1/rotate-csr\0m").to_bytes();
        assert_eq!(proof, expected);
    }

    #[test]
    fn non_canonical_or_foreign_spki_is_refused() {
        let spki = IdentityKey::generate(&mut OsRng).public().to_spki_der();
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(IdentityPublicKey::from_spki_der(&trailing).is_err());
        assert!(IdentityPublicKey::from_spki_der(&spki[..20]).is_err());
        // The identity point (small order) encoded as a well-formed SPKI.
        let mut weak = hex::decode("302a300506032b6570032100").unwrap();
        weak.push(1);
        weak.extend_from_slice(&[0u8; 31]);
        assert!(matches!(
            IdentityPublicKey::from_spki_der(&weak),
            Err(PkiError::MalformedKey(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn garbage_spki_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = IdentityPublicKey::from_spki_der(&bytes);
            let _ = IdentityKey::from_pkcs8_der(&bytes);
        }
    }
}
