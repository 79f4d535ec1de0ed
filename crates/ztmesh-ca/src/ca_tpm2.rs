//! The CA's half of TPM 2.0 credential activation at enrollment: which endorsement keys (EKs)
//! it allows, the credentials it handed out and is waiting to see answered, and the check that
//! an enrollment's attestation key (AK) was activated. It must never count an AK as activated
//! unless the secret sealed for exactly that AK, under an allowed EK, comes back with the same
//! enrollment token.
//!
//! # The exchange
//!
//! 1. `POST /v1/enroll/tpm2/credential {token, ek_public, ak_public}`: the token must be valid
//!    and unspent (checked, not spent, by the caller), the EK one of `ca serve
//!    --tpm2-endorsement-key`, the AK a restricted fixedTPM signing key.
//!    [`Tpm2Activations::issue_credential`] draws a fresh 32-byte secret, seals it with
//!    TPM2_MakeCredential for the AK name under the EK, and remembers `{AK, EK name,
//!    SHA-256(secret), expiry}` under the token's hash.
//! 2. The node runs TPM2_ActivateCredential. Its TPM only releases the secret when it holds the
//!    EK private key *and* has an object with exactly that AK name loaded, so the secret proves
//!    the AK is resident next to an allowed EK.
//! 3. `POST /v1/enroll` with `tpm2` evidence signed by the AK and `tpm2_credential_secret`:
//!    [`Tpm2Activations::verify`] answers the activated AK, which the enrollment then trusts
//!    for this one request; [`Tpm2Activations::complete`] forgets the entry once the
//!    enrollment has committed (a refused enrollment leaves it, like the token, usable).
//!
//! # Bounds and lifetime
//!
//! One pending credential per token (a new request replaces the old one), each answerable for
//! [`CREDENTIAL_TTL`], at most [`MAX_PENDING_ACTIVATIONS`] at once (expired ones are freed
//! before a request is refused). The state lives in memory only: a CA restart forgets every
//! pending credential, and the node asks again with its still unspent token.
//!
//! Only the SHA-256 of each secret is kept, and secrets are compared through their digests, so
//! the comparison's timing says nothing about the secret.
//!
//! Sans-IO: time is `now` in unix seconds, randomness comes from the caller's RNG.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;
use ztmesh_attest::tpm2::AttestationKey;
use ztmesh_attest::tpm2_credential::{
    AttestationKeyPublic, Credential, CredentialError, EndorsementKey, ObjectName,
};
use ztmesh_pki::TokenHash;

use crate::api_error::ApiError;

/// How long a credential may be answered (`expires_in_secs` of the answer).
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(300);

/// Most credentials waiting to be answered; a further request is refused (503
/// `too_many_credentials`) until some expire or are used.
pub const MAX_PENDING_ACTIVATIONS: usize = 4096;

/// Length of the secret sealed in each credential: the digest size of SHA-256, the smallest
/// name algorithm an EK can have, so it fits every allowed EK.
pub const CREDENTIAL_SECRET_LEN: usize = 32;

/// Why a credential was not issued, or an activation not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// The EK is not one this CA was started with.
    #[error("endorsement key {0} is not allowed by this CA (--tpm2-endorsement-key)")]
    EndorsementKeyNotAllowed(String),
    /// [`MAX_PENDING_ACTIVATIONS`] live credentials are waiting already.
    #[error("{MAX_PENDING_ACTIVATIONS} TPM credentials are waiting to be answered; retry later")]
    TooManyPending,
    /// No credential was issued for this token (or the CA restarted since).
    #[error("no TPM credential is pending for this token: POST /v1/enroll/tpm2/credential first")]
    NoPendingCredential,
    /// The credential for this token is older than [`CREDENTIAL_TTL`].
    #[error("the TPM credential for this token expired (credentials live {}s)", CREDENTIAL_TTL.as_secs())]
    Expired,
    /// The evidence's AK is not the one the credential was made for.
    #[error("the evidence is signed by another attestation key than the credential was made for")]
    WrongAttestationKey,
    /// The secret is not the one sealed in the credential.
    #[error("the credential secret is not the one this CA sealed")]
    WrongSecret,
    /// Making the credential failed (a local fault: the RNG or a cipher).
    #[error("making the TPM credential: {0}")]
    MakeCredential(CredentialError),
}

impl ActivationError {
    /// A stable machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ActivationError::EndorsementKeyNotAllowed(_) => "endorsement_key_not_allowed",
            ActivationError::TooManyPending => "too_many_credentials",
            ActivationError::NoPendingCredential => "no_pending_credential",
            ActivationError::Expired => "credential_expired",
            ActivationError::WrongAttestationKey => "wrong_attestation_key",
            ActivationError::WrongSecret => "wrong_secret",
            ActivationError::MakeCredential(_) => "make_credential_failed",
        }
    }

    /// The HTTP answer: 403 `endorsement_key_not_allowed` at the credential route, 503
    /// `too_many_credentials`, 500 for a local fault, and 403 `attestation_refused` (reason
    /// `not_activated`) for every activation that does not hold at enrollment.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ActivationError::EndorsementKeyNotAllowed(_) => {
                ApiError::forbidden("endorsement_key_not_allowed", self.to_string())
            }
            ActivationError::TooManyPending => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_credentials",
                self.to_string(),
            ),
            ActivationError::MakeCredential(_) => ApiError::internal(self),
            ActivationError::NoPendingCredential
            | ActivationError::Expired
            | ActivationError::WrongAttestationKey
            | ActivationError::WrongSecret => not_activated(&self.to_string()),
        }
    }
}

/// 403 `attestation_refused` for tpm2 evidence whose AK is neither configured nor activated;
/// `detail` says what was missing.
pub fn not_activated(detail: &str) -> ApiError {
    ApiError::forbidden(
        "attestation_refused",
        format!(
            "tpm2 evidence refused (not_activated): tpm2: the attestation key was not activated \
             against an allowed endorsement key: {detail}"
        ),
    )
}

/// A credential handed out, waiting for its secret to come back.
#[derive(Debug, Clone)]
struct PendingActivation {
    attestation_key: AttestationKey,
    endorsement_key_name: ObjectName,
    secret_sha256: [u8; 32],
    expires_at: u64,
}

/// What [`Tpm2Activations::issue_credential`] produced: the credential for the node, and until
/// when (unix seconds) it may be answered.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    /// What TPM2_ActivateCredential takes.
    pub credential: Credential,
    /// First second at which the answer is refused.
    pub expires_at: u64,
}

/// An AK whose credential came back with the right secret: trust it for this enrollment and
/// register it for the node once the enrollment commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatedKey {
    /// The AK, as the quote verifier pins it.
    pub attestation_key: AttestationKey,
    /// The name of the allowed EK it was activated under.
    pub endorsement_key_name: ObjectName,
    secret_sha256: [u8; 32],
}

/// The allowed EKs and the credentials waiting to be answered (see the module documentation).
#[derive(Debug)]
pub struct Tpm2Activations {
    allowed: HashSet<ObjectName>,
    pending: HashMap<TokenHash, PendingActivation>,
    /// [`MAX_PENDING_ACTIVATIONS`], smaller in tests (each credential costs an ECDH or an
    /// RSA-OAEP encryption, so filling the real bound would be slow).
    max_pending: usize,
}

impl Default for Tpm2Activations {
    /// No EK allowed: every credential request is refused.
    fn default() -> Self {
        Tpm2Activations::new(&[])
    }
}

impl Tpm2Activations {
    /// Allows credentials for `endorsement_keys` (compared by name).
    pub fn new(endorsement_keys: &[EndorsementKey]) -> Self {
        Tpm2Activations {
            allowed: endorsement_keys
                .iter()
                .map(|ek| ek.public_area().name().clone())
                .collect(),
            pending: HashMap::new(),
            max_pending: MAX_PENDING_ACTIVATIONS,
        }
    }

    /// Whether `ek` is one of the allowed EKs.
    pub fn is_allowed(&self, ek: &EndorsementKey) -> bool {
        self.allowed.contains(ek.public_area().name())
    }

    /// Credentials waiting to be answered, expired ones included until they are freed.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Seals a fresh secret for `ak` under `ek` and remembers it for `token` (replacing any
    /// earlier credential for the same token), answerable until `now` + [`CREDENTIAL_TTL`].
    /// The caller has checked that the token is valid and unspent.
    pub fn issue_credential(
        &mut self,
        token: TokenHash,
        ek: &EndorsementKey,
        ak: &AttestationKeyPublic,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<IssuedCredential, ActivationError> {
        let ek_name = ek.public_area().name();
        if !self.allowed.contains(ek_name) {
            return Err(ActivationError::EndorsementKeyNotAllowed(ek_name.to_hex()));
        }
        if self.pending.len() >= self.max_pending && !self.pending.contains_key(&token) {
            self.pending.retain(|_, pending| pending.expires_at > now);
            if self.pending.len() >= self.max_pending {
                return Err(ActivationError::TooManyPending);
            }
        }
        let mut secret = Zeroizing::new([0u8; CREDENTIAL_SECRET_LEN]);
        rng.try_fill_bytes(secret.as_mut()).map_err(|e| {
            ActivationError::MakeCredential(CredentialError::Encryption(e.to_string()))
        })?;
        let credential = ek
            .make_credential(ak.name(), secret.as_ref(), rng)
            .map_err(ActivationError::MakeCredential)?;
        let expires_at = now.saturating_add(CREDENTIAL_TTL.as_secs());
        self.pending.insert(
            token,
            PendingActivation {
                attestation_key: ak.attestation_key().clone(),
                endorsement_key_name: ek_name.clone(),
                secret_sha256: Sha256::digest(secret.as_ref()).into(),
                expires_at,
            },
        );
        Ok(IssuedCredential {
            credential,
            expires_at,
        })
    }

    /// Checks that `secret` is the one sealed for `token`'s credential, that the credential
    /// was made for `attestation_key` and is live at `now`. Changes nothing: the entry stays
    /// until [`Self::complete`], so a refused enrollment can be retried.
    pub fn verify(
        &self,
        token: &TokenHash,
        attestation_key: &AttestationKey,
        secret: &[u8; CREDENTIAL_SECRET_LEN],
        now: u64,
    ) -> Result<ActivatedKey, ActivationError> {
        let pending = self
            .pending
            .get(token)
            .ok_or(ActivationError::NoPendingCredential)?;
        if pending.expires_at <= now {
            return Err(ActivationError::Expired);
        }
        if &pending.attestation_key != attestation_key {
            return Err(ActivationError::WrongAttestationKey);
        }
        // Digests, not secrets, are compared: an early exit reveals nothing usable.
        let presented: [u8; 32] = Sha256::digest(secret).into();
        if presented != pending.secret_sha256 {
            return Err(ActivationError::WrongSecret);
        }
        Ok(ActivatedKey {
            attestation_key: pending.attestation_key.clone(),
            endorsement_key_name: pending.endorsement_key_name.clone(),
            secret_sha256: pending.secret_sha256,
        })
    }

    /// Forgets `token`'s credential after the enrollment it activated has committed, unless a
    /// newer credential replaced it in the meantime.
    pub fn complete(&mut self, token: &TokenHash, activated: &ActivatedKey) {
        if self
            .pending
            .get(token)
            .is_some_and(|pending| pending.secret_sha256 == activated.secret_sha256)
        {
            self.pending.remove(token);
        }
    }
}

/// Parses `tpm2_credential_secret`: exactly 64 hex digits (400 `malformed_credential_secret`).
pub fn parse_credential_secret(
    text: &str,
) -> Result<Zeroizing<[u8; CREDENTIAL_SECRET_LEN]>, ApiError> {
    let mut secret = Zeroizing::new([0u8; CREDENTIAL_SECRET_LEN]);
    hex::decode_to_slice(text.trim(), secret.as_mut()).map_err(|_| {
        ApiError::bad_request(
            "malformed_credential_secret",
            format!(
                "tpm2_credential_secret: expected {} hex digits",
                2 * CREDENTIAL_SECRET_LEN
            ),
        )
    })?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    // Real public areas from swtpm (ztmesh-attest's fixtures): an RSA and an ECC EK, an RSA
    // and an ECC AK.
    const EK_RSA: &[u8] =
        include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2_credential/ek_rsa.pub");
    const EK_ECC: &[u8] =
        include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2_credential/ek_ecc.pub");
    const AK_RSA: &[u8] =
        include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2_credential/ak_rsa.pub");
    const AK_ECC: &[u8] =
        include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2_credential/ak_ecc.pub");

    const NOW: u64 = 1_800_000_000;

    fn ek_rsa() -> EndorsementKey {
        EndorsementKey::from_tpm2b_public(EK_RSA).unwrap()
    }

    fn ek_ecc() -> EndorsementKey {
        EndorsementKey::from_tpm2b_public(EK_ECC).unwrap()
    }

    fn ak_ecc() -> AttestationKeyPublic {
        AttestationKeyPublic::from_tpm2b_public(AK_ECC).unwrap()
    }

    fn ak_rsa() -> AttestationKeyPublic {
        AttestationKeyPublic::from_tpm2b_public(AK_RSA).unwrap()
    }

    fn token(n: u32) -> TokenHash {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        TokenHash(bytes)
    }

    /// An RNG whose first 32 bytes, the secret, a test can draw again from the same seed.
    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn secret_of(seed: u64) -> [u8; CREDENTIAL_SECRET_LEN] {
        let mut secret = [0u8; CREDENTIAL_SECRET_LEN];
        rand::RngCore::fill_bytes(&mut rng(seed), &mut secret);
        secret
    }

    fn desk() -> Tpm2Activations {
        Tpm2Activations::new(&[ek_ecc(), ek_rsa()])
    }

    #[test]
    fn the_sealed_secret_activates_the_ak_it_was_made_for_until_completed() {
        let mut desk = desk();
        let issued = desk
            .issue_credential(token(1), &ek_ecc(), &ak_ecc(), NOW, &mut rng(7))
            .unwrap();
        assert_eq!(issued.expires_at, NOW + CREDENTIAL_TTL.as_secs());
        assert!(!issued.credential.credential_blob.is_empty());
        let activated = desk
            .verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(7),
                NOW + 1,
            )
            .unwrap();
        assert_eq!(&activated.attestation_key, ak_ecc().attestation_key());
        assert_eq!(
            &activated.endorsement_key_name,
            ek_ecc().public_area().name()
        );
        // Verifying changes nothing; only completion forgets the entry.
        assert!(desk
            .verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(7),
                NOW + 2
            )
            .is_ok());
        desk.complete(&token(1), &activated);
        assert_eq!(desk.pending_count(), 0);
        assert_eq!(
            desk.verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(7),
                NOW + 3
            ),
            Err(ActivationError::NoPendingCredential)
        );
    }

    #[test]
    fn an_ek_not_allowed_gets_no_credential() {
        let mut desk = Tpm2Activations::new(&[ek_rsa()]);
        assert!(!desk.is_allowed(&ek_ecc()));
        let refused = desk
            .issue_credential(token(1), &ek_ecc(), &ak_ecc(), NOW, &mut rng(1))
            .unwrap_err();
        assert_eq!(refused.reason(), "endorsement_key_not_allowed");
        assert_eq!(refused.to_api_error().code(), "endorsement_key_not_allowed");
        assert_eq!(desk.pending_count(), 0);
        // No EK at all: nothing is allowed.
        let mut empty = Tpm2Activations::default();
        assert!(empty
            .issue_credential(token(1), &ek_rsa(), &ak_rsa(), NOW, &mut rng(1))
            .is_err());
    }

    #[test]
    fn a_wrong_secret_or_another_ak_is_refused_and_leaves_the_credential_usable() {
        let mut desk = desk();
        desk.issue_credential(token(1), &ek_rsa(), &ak_rsa(), NOW, &mut rng(3))
            .unwrap();
        let mut wrong = secret_of(3);
        wrong[31] ^= 1;
        assert_eq!(
            desk.verify(&token(1), ak_rsa().attestation_key(), &wrong, NOW),
            Err(ActivationError::WrongSecret)
        );
        // The right secret with another AK (an AK from another TPM) is refused too.
        assert_eq!(
            desk.verify(&token(1), ak_ecc().attestation_key(), &secret_of(3), NOW),
            Err(ActivationError::WrongAttestationKey)
        );
        // Another token's enrollment cannot use this credential.
        assert_eq!(
            desk.verify(&token(2), ak_rsa().attestation_key(), &secret_of(3), NOW),
            Err(ActivationError::NoPendingCredential)
        );
        for error in [
            ActivationError::WrongSecret,
            ActivationError::WrongAttestationKey,
            ActivationError::NoPendingCredential,
            ActivationError::Expired,
        ] {
            let api = error.to_api_error();
            assert_eq!(
                (api.status().as_u16(), api.code()),
                (403, "attestation_refused")
            );
            assert!(api.message.contains("(not_activated)"), "{}", api.message);
        }
        assert!(desk
            .verify(&token(1), ak_rsa().attestation_key(), &secret_of(3), NOW)
            .is_ok());
    }

    #[test]
    fn a_new_request_for_the_same_token_replaces_the_old_credential() {
        let mut desk = desk();
        desk.issue_credential(token(1), &ek_ecc(), &ak_ecc(), NOW, &mut rng(1))
            .unwrap();
        let old = desk
            .verify(&token(1), ak_ecc().attestation_key(), &secret_of(1), NOW)
            .unwrap();
        desk.issue_credential(token(1), &ek_rsa(), &ak_rsa(), NOW + 10, &mut rng(2))
            .unwrap();
        assert_eq!(desk.pending_count(), 1);
        assert_eq!(
            desk.verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(1),
                NOW + 10
            ),
            Err(ActivationError::WrongAttestationKey)
        );
        assert_eq!(
            desk.verify(
                &token(1),
                ak_rsa().attestation_key(),
                &secret_of(1),
                NOW + 10
            ),
            Err(ActivationError::WrongSecret)
        );
        // Completing with the replaced activation does not drop the newer credential.
        desk.complete(&token(1), &old);
        assert_eq!(desk.pending_count(), 1);
        let new = desk
            .verify(
                &token(1),
                ak_rsa().attestation_key(),
                &secret_of(2),
                NOW + 10,
            )
            .unwrap();
        assert_eq!(&new.endorsement_key_name, ek_rsa().public_area().name());
    }

    #[test]
    fn a_credential_expires_after_its_ttl() {
        let mut desk = desk();
        desk.issue_credential(token(1), &ek_ecc(), &ak_ecc(), NOW, &mut rng(5))
            .unwrap();
        let last = NOW + CREDENTIAL_TTL.as_secs() - 1;
        assert!(desk
            .verify(&token(1), ak_ecc().attestation_key(), &secret_of(5), last)
            .is_ok());
        assert_eq!(
            desk.verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(5),
                last + 1
            ),
            Err(ActivationError::Expired)
        );
        // Asking again gives a fresh, live credential.
        desk.issue_credential(token(1), &ek_ecc(), &ak_ecc(), last + 1, &mut rng(6))
            .unwrap();
        assert!(desk
            .verify(
                &token(1),
                ak_ecc().attestation_key(),
                &secret_of(6),
                last + 2
            )
            .is_ok());
    }

    #[test]
    fn pending_credentials_are_bounded_and_expired_ones_are_freed_first() {
        assert_eq!(desk().max_pending, MAX_PENDING_ACTIVATIONS);
        const BOUND: usize = 16;
        let mut desk = Tpm2Activations {
            max_pending: BOUND,
            ..desk()
        };
        for n in 0..BOUND as u32 {
            desk.issue_credential(token(n), &ek_ecc(), &ak_ecc(), NOW, &mut rng(u64::from(n)))
                .unwrap();
        }
        let full = BOUND as u32;
        let refused = desk
            .issue_credential(token(full), &ek_ecc(), &ak_ecc(), NOW + 1, &mut rng(0))
            .unwrap_err();
        assert_eq!(refused, ActivationError::TooManyPending);
        let api = refused.to_api_error();
        assert_eq!(
            (api.status().as_u16(), api.code()),
            (503, "too_many_credentials")
        );
        // A token that already has one may still replace it at the bound.
        desk.issue_credential(token(0), &ek_ecc(), &ak_ecc(), NOW + 1, &mut rng(99))
            .unwrap();
        assert_eq!(desk.pending_count(), BOUND);
        // Once the first batch has expired, a new token gets room and the expired are gone.
        let later = NOW + CREDENTIAL_TTL.as_secs();
        desk.issue_credential(token(full), &ek_ecc(), &ak_ecc(), later, &mut rng(100))
            .unwrap();
        assert_eq!(desk.pending_count(), 2, "token 0 (renewed) and the new one");
        assert!(desk
            .verify(&token(0), ak_ecc().attestation_key(), &secret_of(99), later)
            .is_ok());
        assert!(desk
            .verify(
                &token(full),
                ak_ecc().attestation_key(),
                &secret_of(100),
                later
            )
            .is_ok());
    }

    #[test]
    fn credential_secrets_are_exactly_64_hex_digits() {
        let secret = secret_of(1);
        assert_eq!(
            *parse_credential_secret(&hex::encode(secret)).unwrap(),
            secret
        );
        assert_eq!(
            *parse_credential_secret(&hex::encode_upper(secret)).unwrap(),
            secret
        );
        for bad in [
            String::new(),
            "zz".repeat(32),
            hex::encode(&secret[..31]),
            format!("{}00", hex::encode(secret)),
            format!("{}0", hex::encode(secret)),
        ] {
            let error = parse_credential_secret(&bad).unwrap_err();
            assert_eq!(
                (error.status().as_u16(), error.code()),
                (400, "malformed_credential_secret"),
                "{bad:?}"
            );
        }
    }
}
