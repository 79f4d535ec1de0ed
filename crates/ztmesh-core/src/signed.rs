//! Signed envelopes: COSE_Sign1 (RFC 9052) over Ed25519, the one format ztmesh uses for signed
//! gossip messages, revocation records, attestation tokens and votes (DESIGN.md §3 "Signed
//! objects").
//!
//! Every envelope carries a domain-separation label as the COSE external_aad, so a signature made
//! for one object kind (say `ztmesh/v1/gossip`) never verifies as another. The label is not
//! transmitted: both sides know it from context.
//!
//! Wire form, fixed here and accepted only in this form:
//! - the **tagged** COSE_Sign1 (CBOR tag 18), so a stored or relayed envelope says what it is;
//! - protected header: `alg` = EdDSA (-8), `kid` = the signer's key identifier, and optionally a
//!   `content type` (3) and a CWT Claims map (15, RFC 9597) holding only `iat` (whole seconds);
//! - unprotected header: nothing, or `x5chain` (33, RFC 9360) holding exactly one DER certificate
//!   as a byte string;
//! - an attached payload (possibly empty, never detached).
//!
//! [`open`] checks the length before parsing, refuses anything else with a typed
//! [`SignedError`] and never panics on untrusted bytes. It does **not** verify: callers must call
//! [`Opened::verify`] with the key they resolved for [`Opened::key_id`] before trusting the
//! payload or acting on its meaning. Verification recomputes the signed bytes from the protected
//! header exactly as received (never a re-serialization) and uses Ed25519 `verify_strict`, which
//! refuses small-order keys and non-canonical signatures, so a valid signature cannot be mutated
//! into a second valid one.
//!
//! This module never builds CBOR or COSE by hand: `coset` does both.

use coset::cwt::{ClaimsSet, Timestamp as CwtTimestamp};
use coset::iana;
use coset::{
    ContentType, CoseSign1, CoseSign1Builder, Header, HeaderBuilder, Label,
    RegisteredLabelWithPrivate, TaggedCborSerializable,
};
use ed25519_dalek::{Signature, VerifyingKey};

/// COSE header label of x5chain (RFC 9360).
const X5CHAIN_LABEL: i64 = iana::HeaderParameter::X5Chain as i64;

/// COSE header label of CWT Claims (RFC 9597). `coset` 0.3 predates the registration, so the
/// number is spelled here.
const CWT_CLAIMS_LABEL: i64 = 15;

/// Ed25519 signature length in bytes.
const SIGNATURE_LEN: usize = 64;

/// Why an envelope could not be produced, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedError {
    /// The envelope is longer than the caller's cap; nothing was parsed.
    #[error("signed envelope of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the bytes offered.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The bytes are not a tagged COSE_Sign1 of the shape described in the module docs.
    #[error("malformed signed envelope: {0}")]
    Malformed(String),
    /// The protected header names no algorithm, or one other than EdDSA.
    #[error("signed envelope does not use EdDSA")]
    UnsupportedAlgorithm,
    /// The protected header carries no key identifier.
    #[error("signed envelope has no key identifier in its protected header")]
    MissingKeyId,
    /// The payload is detached (nil); ztmesh only uses attached payloads.
    #[error("signed envelope has no attached payload")]
    MissingPayload,
    /// The signature does not verify under the given key, label and received bytes.
    #[error("signature does not verify")]
    BadSignature,
    /// Building the envelope failed (a local fault, never caused by received bytes).
    #[error("cannot encode signed envelope: {0}")]
    Encode(String),
}

/// Optional protected-header fields, covered by the signature together with `alg` and `kid`.
///
/// They let a receiver learn what the payload is and when it claims to have been made *before*
/// it decodes the payload, for example to look up which key may sign that kind of object at that
/// time, and then confirm both with the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectedFields {
    /// COSE content type (label 3): a `type/subtype` media type naming the payload schema.
    pub content_type: Option<String>,
    /// CWT `iat` claim (RFC 9597 header label 15): creation time in whole Unix seconds.
    pub issued_at: Option<u64>,
}

/// Signs `payload` into a tagged COSE_Sign1 with only `alg` and `kid` protected.
///
/// `label` is the domain-separation string (the COSE external_aad), `key_id` the signer's key
/// identifier, `x5chain` an optional DER certificate carried unprotected so that receivers who
/// do not know the signer yet can resolve its key. `signer` receives the exact Sig_structure
/// bytes to sign and returns the 64-byte Ed25519 signature.
pub fn sign(
    label: &str,
    key_id: &[u8],
    payload: Vec<u8>,
    x5chain: Option<Vec<u8>>,
    signer: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, SignedError> {
    sign_with(
        label,
        key_id,
        &ProtectedFields::default(),
        payload,
        x5chain,
        signer,
    )
}

/// Like [`sign`], with extra protected-header fields (content type, issued-at).
pub fn sign_with(
    label: &str,
    key_id: &[u8],
    fields: &ProtectedFields,
    payload: Vec<u8>,
    x5chain: Option<Vec<u8>>,
    signer: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, SignedError> {
    // Refuse locally what `open` would refuse remotely, so a signer cannot produce an envelope
    // that no receiver accepts.
    if key_id.is_empty() {
        return Err(SignedError::MissingKeyId);
    }
    if x5chain.as_ref().is_some_and(Vec::is_empty) {
        return Err(SignedError::Encode("empty x5chain certificate".into()));
    }
    let mut protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(key_id.to_vec());
    if let Some(content_type) = &fields.content_type {
        protected = protected.content_type(content_type.clone());
    }
    if let Some(issued_at) = fields.issued_at {
        let seconds = i64::try_from(issued_at)
            .map_err(|_| SignedError::Encode("issued-at beyond the CBOR int range".into()))?;
        let claims = ClaimsSet {
            issued_at: Some(CwtTimestamp::WholeSeconds(seconds)),
            ..ClaimsSet::default()
        };
        let value = coset::AsCborValue::to_cbor_value(claims)
            .map_err(|e| SignedError::Encode(format!("{e:?}")))?;
        protected = protected.value(CWT_CLAIMS_LABEL, value);
    }
    let mut unprotected = HeaderBuilder::new();
    if let Some(certificate) = x5chain {
        // RFC 9360: a single certificate is carried as a bare bstr rather than a one-item array.
        unprotected = unprotected.value(X5CHAIN_LABEL, coset::cbor::Value::Bytes(certificate));
    }
    let envelope = CoseSign1Builder::new()
        .protected(protected.build())
        .unprotected(unprotected.build())
        .payload(payload)
        .create_signature(label.as_bytes(), |tbs| signer(tbs).to_vec())
        .build();
    let bytes = envelope
        .to_tagged_vec()
        .map_err(|e| SignedError::Encode(format!("{e:?}")))?;
    // Check that a receiver will read back exactly what was meant: the parser, not the builder,
    // enforces content type syntax.
    open(&bytes, label, usize::MAX).map_err(|e| SignedError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Parses a tagged COSE_Sign1 of at most `max_len` bytes, without verifying it.
///
/// The length is checked before any parsing. The result must be verified with
/// [`Opened::verify`] before its payload is trusted or decoded for meaning.
pub fn open(bytes: &[u8], label: &str, max_len: usize) -> Result<Opened, SignedError> {
    if bytes.len() > max_len {
        return Err(SignedError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let envelope = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| SignedError::Malformed(format!("not a tagged COSE_Sign1: {e:?}")))?;

    let header = &envelope.protected.header;
    if header.alg != Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA)) {
        return Err(SignedError::UnsupportedAlgorithm);
    }
    if header.key_id.is_empty() {
        return Err(SignedError::MissingKeyId);
    }
    // Parameters this module does not understand are refused rather than ignored: a signer that
    // marked something critical expects it to be honoured, and every extra field is one more way
    // to produce different bytes for the same signed content.
    if !header.crit.is_empty() {
        return Err(SignedError::Malformed(
            "critical header parameters are not supported".into(),
        ));
    }
    if !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !header.counter_signatures.is_empty()
    {
        return Err(SignedError::Malformed(
            "unexpected protected header parameter".into(),
        ));
    }
    let content_type = match &header.content_type {
        None => None,
        Some(ContentType::Text(text)) => Some(text.clone()),
        Some(_) => {
            return Err(SignedError::Malformed(
                "content type must be a media type string".into(),
            ))
        }
    };
    let mut issued_at = None;
    for (label, value) in &header.rest {
        match label {
            Label::Int(CWT_CLAIMS_LABEL) => issued_at = Some(parse_issued_at(value.clone())?),
            _ => {
                return Err(SignedError::Malformed(
                    "unexpected protected header parameter".into(),
                ))
            }
        }
    }

    let x5chain = parse_unprotected(&envelope.unprotected)?;
    if envelope.payload.is_none() {
        return Err(SignedError::MissingPayload);
    }
    if envelope.signature.len() != SIGNATURE_LEN {
        return Err(SignedError::Malformed(format!(
            "signature of {} bytes, expected {SIGNATURE_LEN}",
            envelope.signature.len()
        )));
    }
    Ok(Opened {
        key_id: header.key_id.clone(),
        content_type,
        issued_at,
        x5chain,
        label: label.to_owned(),
        envelope,
    })
}

/// Reads the CWT Claims header: only `iat`, as non-negative whole seconds.
fn parse_issued_at(value: coset::cbor::Value) -> Result<u64, SignedError> {
    let claims = <ClaimsSet as coset::AsCborValue>::from_cbor_value(value)
        .map_err(|e| SignedError::Malformed(format!("CWT claims: {e:?}")))?;
    let only_iat = ClaimsSet {
        issued_at: claims.issued_at.clone(),
        ..ClaimsSet::default()
    };
    if claims != only_iat {
        return Err(SignedError::Malformed(
            "CWT claims header may only carry iat".into(),
        ));
    }
    match claims.issued_at {
        Some(CwtTimestamp::WholeSeconds(seconds)) => u64::try_from(seconds)
            .map_err(|_| SignedError::Malformed("iat before the Unix epoch".into())),
        _ => Err(SignedError::Malformed(
            "iat must be present as whole seconds".into(),
        )),
    }
}

/// The unprotected header may hold nothing but one x5chain certificate.
fn parse_unprotected(header: &Header) -> Result<Option<Vec<u8>>, SignedError> {
    let only_rest = Header {
        rest: header.rest.clone(),
        ..Header::default()
    };
    if *header != only_rest {
        // alg, kid and friends are only trusted when signed.
        return Err(SignedError::Malformed(
            "unprotected header may only carry x5chain".into(),
        ));
    }
    let mut x5chain = None;
    for (label, value) in &header.rest {
        match (label, value) {
            (Label::Int(X5CHAIN_LABEL), coset::cbor::Value::Bytes(der)) if !der.is_empty() => {
                x5chain = Some(der.clone());
            }
            (Label::Int(X5CHAIN_LABEL), _) => {
                return Err(SignedError::Malformed(
                    "x5chain must be exactly one DER certificate".into(),
                ))
            }
            _ => {
                return Err(SignedError::Malformed(
                    "unprotected header may only carry x5chain".into(),
                ))
            }
        }
    }
    Ok(x5chain)
}

/// A parsed but **not yet verified** envelope.
///
/// Fields are reachable only through accessors so that what [`Opened::verify`] checks is
/// exactly what the caller then reads.
#[derive(Debug, Clone)]
pub struct Opened {
    key_id: Vec<u8>,
    content_type: Option<String>,
    issued_at: Option<u64>,
    x5chain: Option<Vec<u8>>,
    label: String,
    /// Kept whole because its protected header remembers the bytes as received, which is what
    /// the signature covers.
    envelope: CoseSign1,
}

impl Opened {
    /// The signer's key identifier from the protected header.
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The protected content type, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The protected issued-at time in whole Unix seconds, if any.
    pub fn issued_at(&self) -> Option<u64> {
        self.issued_at
    }

    /// The DER certificate carried in the unprotected x5chain header, if any. Not covered by the
    /// signature: use it only to resolve a key that is then checked on its own merits.
    pub fn x5chain(&self) -> Option<&[u8]> {
        self.x5chain.as_deref()
    }

    /// The payload bytes. Untrusted until [`Opened::verify`] succeeds.
    pub fn payload(&self) -> &[u8] {
        self.envelope.payload.as_deref().unwrap_or_default()
    }

    /// The raw signature bytes (64 bytes).
    pub fn signature(&self) -> &[u8] {
        &self.envelope.signature
    }

    /// The Sig_structure (RFC 9052 §4.4) `["Signature1", protected, external_aad, payload]`,
    /// serialized straight from the received protected-header bytes and payload: the same bytes
    /// as `coset`'s `tbs_data`, without building an intermediate value tree (this runs once per
    /// gossip message received, beside the signature check itself).
    fn to_be_signed(&self) -> Result<Vec<u8>, SignedError> {
        let protected = self
            .envelope
            .protected
            .original_data
            .as_deref()
            .ok_or_else(|| SignedError::Malformed("protected header bytes were not kept".into()))?;
        let payload = self.envelope.payload.as_deref().unwrap_or_default();
        let structure = (
            "Signature1",
            serde_bytes::Bytes::new(protected),
            serde_bytes::Bytes::new(self.label.as_bytes()),
            serde_bytes::Bytes::new(payload),
        );
        let mut out = Vec::with_capacity(protected.len() + payload.len() + self.label.len() + 24);
        ciborium::into_writer(&structure, &mut out)
            .map_err(|e| SignedError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Verifies the signature under `key` and the label given to [`open`], over the Sig_structure
    /// rebuilt from the protected header bytes as received.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), SignedError> {
        // `tbs_data` reuses `ProtectedHeader::original_data`, which `from_tagged_slice` always
        // fills, so the signed bytes are the received ones.
        if self.envelope.protected.original_data.is_none() {
            return Err(SignedError::Malformed(
                "protected header bytes were not kept".into(),
            ));
        }
        let signature = Signature::from_slice(&self.envelope.signature)
            .map_err(|_| SignedError::BadSignature)?;
        let tbs = self.to_be_signed()?;
        key.verify_strict(&tbs, &signature)
            .map_err(|_| SignedError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    const LABEL: &str = "ztmesh/v1/test";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn the_signed_bytes_equal_cosets_sig_structure() {
        for payload in [&b""[..], b"x", &[7u8; 300], &[1u8; 70_000]] {
            let bytes = signed(payload, Some(vec![0x30, 0x03, 1, 2, 3]));
            let opened = open(&bytes, LABEL, usize::MAX).unwrap();
            assert_eq!(
                opened.to_be_signed().unwrap(),
                opened.envelope.tbs_data(LABEL.as_bytes()),
                "payload of {} bytes",
                payload.len()
            );
        }
    }

    fn signed(payload: &[u8], certificate: Option<Vec<u8>>) -> Vec<u8> {
        let signing = key(1);
        sign(LABEL, b"kid-1", payload.to_vec(), certificate, |tbs| {
            signing.sign(tbs).to_bytes()
        })
        .unwrap()
    }

    #[test]
    fn round_trip_with_certificate() {
        let bytes = signed(b"hello", Some(vec![0x30, 0x03, 1, 2, 3]));
        let opened = open(&bytes, LABEL, 4096).unwrap();
        assert_eq!(opened.key_id(), b"kid-1");
        assert_eq!(opened.payload(), b"hello");
        assert_eq!(opened.x5chain(), Some(&[0x30, 0x03, 1, 2, 3][..]));
        assert_eq!(opened.content_type(), None);
        assert_eq!(opened.issued_at(), None);
        opened.verify(&key(1).verifying_key()).unwrap();
    }

    #[test]
    fn round_trip_with_protected_fields_and_no_certificate() {
        let signing = key(2);
        let fields = ProtectedFields {
            content_type: Some("application/vnd.ztmesh.test+cbor".into()),
            issued_at: Some(1_700_000_000),
        };
        let bytes = sign_with(LABEL, b"k", &fields, b"x".to_vec(), None, |tbs| {
            signing.sign(tbs).to_bytes()
        })
        .unwrap();
        let opened = open(&bytes, LABEL, 4096).unwrap();
        assert_eq!(opened.content_type(), fields.content_type.as_deref());
        assert_eq!(opened.issued_at(), Some(1_700_000_000));
        assert_eq!(opened.x5chain(), None);
        opened.verify(&signing.verifying_key()).unwrap();
    }

    #[test]
    fn envelope_is_tagged_cose_sign1() {
        let bytes = signed(b"p", None);
        // CBOR tag 18 (0xd2) followed by a four-item array (0x84).
        assert_eq!(&bytes[..2], &[0xd2, 0x84]);
        let untagged = &bytes[1..];
        assert!(matches!(
            open(untagged, LABEL, 4096),
            Err(SignedError::Malformed(_))
        ));
    }

    #[test]
    fn signer_receives_the_rfc9052_sig_structure() {
        let mut seen = Vec::new();
        let signing = key(3);
        let bytes = sign(LABEL, b"kid", b"payload".to_vec(), None, |tbs| {
            seen = tbs.to_vec();
            signing.sign(tbs).to_bytes()
        })
        .unwrap();
        let opened = open(&bytes, LABEL, 4096).unwrap();
        let expected = coset::sig_structure_data(
            coset::SignatureContext::CoseSign1,
            opened.envelope.protected.clone(),
            None,
            LABEL.as_bytes(),
            b"payload",
        );
        assert_eq!(seen, expected);
    }

    #[test]
    fn wrong_label_is_a_bad_signature() {
        let bytes = signed(b"hello", None);
        let opened = open(&bytes, "ztmesh/v1/other", 4096).unwrap();
        assert_eq!(
            opened.verify(&key(1).verifying_key()),
            Err(SignedError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_a_bad_signature() {
        let bytes = signed(b"hello", None);
        let opened = open(&bytes, LABEL, 4096).unwrap();
        assert_eq!(
            opened.verify(&key(9).verifying_key()),
            Err(SignedError::BadSignature)
        );
    }

    #[test]
    fn every_flipped_bit_is_refused_or_changes_only_unsigned_bytes() {
        let certificate = vec![0x30, 0x03, 1, 2, 3];
        let bytes = signed(b"hello", Some(certificate.clone()));
        let verifying = key(1).verifying_key();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut mutated = bytes.clone();
                mutated[index] ^= 1 << bit;
                let accepted = open(&mutated, LABEL, 4096)
                    .and_then(|opened| opened.verify(&verifying).map(|()| opened));
                if let Ok(opened) = accepted {
                    // The only unsigned bytes are the certificate's, and those must then be what
                    // changed.
                    assert_eq!(opened.payload(), b"hello");
                    assert_ne!(opened.x5chain(), Some(&certificate[..]));
                }
            }
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        // Not CBOR at all: a parse would report Malformed, so TooLarge proves the order.
        let junk = vec![0xff; 100];
        assert_eq!(
            open(&junk, LABEL, 99).unwrap_err(),
            SignedError::TooLarge { len: 100, max: 99 }
        );
    }

    #[test]
    fn missing_pieces_are_typed() {
        let build = |protected: Header, payload: Option<Vec<u8>>| {
            let mut builder = CoseSign1Builder::new()
                .protected(protected)
                .signature(vec![0; 64]);
            if let Some(payload) = payload {
                builder = builder.payload(payload);
            }
            builder.build().to_tagged_vec().unwrap()
        };
        let no_alg = build(
            HeaderBuilder::new().key_id(b"k".to_vec()).build(),
            Some(vec![]),
        );
        assert_eq!(
            open(&no_alg, LABEL, 4096).unwrap_err(),
            SignedError::UnsupportedAlgorithm
        );
        let es256 = build(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES256)
                .key_id(b"k".to_vec())
                .build(),
            Some(vec![]),
        );
        assert_eq!(
            open(&es256, LABEL, 4096).unwrap_err(),
            SignedError::UnsupportedAlgorithm
        );
        let no_kid = build(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .build(),
            Some(vec![]),
        );
        assert_eq!(
            open(&no_kid, LABEL, 4096).unwrap_err(),
            SignedError::MissingKeyId
        );
        let detached = build(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .key_id(b"k".to_vec())
                .build(),
            None,
        );
        assert_eq!(
            open(&detached, LABEL, 4096).unwrap_err(),
            SignedError::MissingPayload
        );
    }

    #[test]
    fn unprotected_key_id_or_extra_parameters_are_refused() {
        let signing = key(4);
        let envelope = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::EdDSA)
                    .key_id(b"k".to_vec())
                    .build(),
            )
            .unprotected(HeaderBuilder::new().key_id(b"other".to_vec()).build())
            .payload(b"p".to_vec())
            .create_signature(LABEL.as_bytes(), |tbs| signing.sign(tbs).to_vec())
            .build()
            .to_tagged_vec()
            .unwrap();
        assert!(matches!(
            open(&envelope, LABEL, 4096),
            Err(SignedError::Malformed(_))
        ));
    }

    /// Pins the exact bytes for a fixed key (Ed25519 is deterministic), so any drift in the
    /// envelope layout shows up as a failing test rather than as a mesh that stops agreeing on
    /// message ids. Key: RFC 8032 test 1 secret key.
    #[test]
    fn wire_form_is_stable() {
        let secret: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let signing = SigningKey::from_bytes(&secret);
        let fields = ProtectedFields {
            content_type: Some("application/vnd.ztmesh.test+cbor".into()),
            issued_at: Some(1_700_000_000),
        };
        let bytes = sign_with(
            "ztmesh/v1/test",
            b"kid",
            &fields,
            b"payload".to_vec(),
            Some(vec![0x30, 0x00]),
            |tbs| signing.sign(tbs).to_bytes(),
        )
        .unwrap();
        assert_eq!(hex::encode(&bytes), PINNED);
    }

    /// Decoded: tag 18, [ bstr{1: -8, 3: "application/vnd.ztmesh.test+cbor", 4: 'kid',
    /// 15: {6: 1700000000}}, {33: h'3000'}, 'payload', signature ].
    const PINNED: &str = concat!(
        "d2845833a401270378206170706c69636174696f6e2f766e642e7a746d6573682e746573742b63626f72",
        "04436b69640fa1061a6553f100a11821423000477061796c6f6164584072c0c8c9a60a316ec236e6ad46",
        "af6dd7ead348bf084b4949750ffa810bd7d0aac4f34955eeff57dea8222271b83b16dd0c8c8d47379093",
        "2c6be7d5dadd84aa0d"
    );

    #[test]
    fn content_type_a_receiver_would_refuse_cannot_be_signed() {
        let fields = ProtectedFields {
            content_type: Some("not a media type".into()),
            issued_at: None,
        };
        assert!(matches!(
            sign_with(LABEL, b"k", &fields, vec![], None, |_| [0; 64]),
            Err(SignedError::Encode(_))
        ));
    }

    #[test]
    fn empty_key_id_cannot_be_signed() {
        assert_eq!(
            sign(LABEL, b"", vec![], None, |_| [0; 64]).unwrap_err(),
            SignedError::MissingKeyId
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(opened) = open(&bytes, LABEL, 4096) {
                prop_assert!(opened.verify(&key(1).verifying_key()).is_err());
            }
        }

        #[test]
        fn tagged_prefix_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = vec![0xd2, 0x84];
            bytes.extend(tail);
            if let Ok(opened) = open(&bytes, LABEL, 4096) {
                prop_assert!(opened.verify(&key(1).verifying_key()).is_err());
            }
        }
    }
}
