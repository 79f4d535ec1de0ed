//! The one error type of this crate.

/// Every way a PKI operation can fail. Variants say whose fault it is: input from a peer or user
/// (`Malformed*`, `Invalid*`, `Revoked`, `Expired`, ...) versus a local fault (`Internal`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A CSR that does not parse, or whose self-signature does not verify.
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// A certificate that does not parse or does not follow the node profile.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// A CRL that does not parse.
    #[error("malformed CRL: {0}")]
    MalformedCrl(String),
    /// A signature (CRL, identity proof) that does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The certificate does not chain to the mesh CA, or is not valid for the purpose.
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    /// The certificate is outside its validity period at the given time.
    #[error("certificate expired or not yet valid")]
    Expired,
    /// The certificate's serial is on the revocation list.
    #[error("certificate revoked (serial {0})")]
    Revoked(String),
    /// An identity public key that does not parse.
    #[error("malformed identity key: {0}")]
    MalformedKey(String),
    /// An enrollment token that is not of the token format.
    #[error("malformed enrollment token")]
    MalformedToken,
    /// A fingerprint that is not 64 hex digits.
    #[error("malformed fingerprint: expected 64 hex digits (SHA-256)")]
    MalformedFingerprint,
    /// A requested lifetime outside the allowed range.
    #[error("invalid certificate lifetime: {0}")]
    InvalidLifetime(String),
    /// A CRL whose number is not newer than the one already held.
    #[error("stale CRL: number {got} is not newer than {have}")]
    StaleCrl {
        /// Number of the CRL offered.
        got: u64,
        /// Number of the CRL already held.
        have: u64,
    },
    /// A key file that does not decrypt with this passphrase (or was tampered with).
    #[error("wrong passphrase, or the key file was modified")]
    WrongPassphrase,
    /// A passphrase too short to seal a new key with (fewer than
    /// [`crate::keyfile::MIN_PASSPHRASE_CHARS`] characters).
    #[error("the key passphrase has {got} characters; at least {min} are required")]
    ShortPassphrase {
        /// Characters in the passphrase given.
        got: usize,
        /// The minimum.
        min: usize,
    },
    /// A key file that is not in a known format.
    #[error("malformed key file: {0}")]
    MalformedKeyFile(String),
    /// A local fault: key generation, signing, encoding.
    #[error("internal PKI error: {0}")]
    Internal(String),
}
