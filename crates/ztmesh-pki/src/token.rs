//! One-time enrollment tokens. The CA shows the token once and stores only its hash.

use crate::PkiError;

/// A token as handed to the operator: `ztm1_` followed by 52 lowercase base32 characters
/// (32 random bytes). The prefix lets secret scanners find leaked tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken(String);

/// SHA-256 of the token text; the only form the CA keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl EnrollmentToken {
    /// A fresh token from the given RNG.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut secret = zeroize::Zeroizing::new([0u8; SECRET_LEN]);
        rng.fill_bytes(secret.as_mut());
        EnrollmentToken(format!(
            "{PREFIX}{}",
            token_base32().encode(secret.as_ref())
        ))
    }

    /// Parses user input (surrounding whitespace trimmed); anything not of the format is
    /// [`PkiError::MalformedToken`].
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let text = text.trim();
        let body = text.strip_prefix(PREFIX).ok_or(PkiError::MalformedToken)?;
        if body.len() != BODY_LEN {
            return Err(PkiError::MalformedToken);
        }
        // Decoding checks the alphabet (lowercase only) and that the 4 spare bits of the last
        // symbol are zero, so each secret has exactly one spelling and one hash.
        let _secret = zeroize::Zeroizing::new(
            token_base32()
                .decode(body.as_bytes())
                .map_err(|_| PkiError::MalformedToken)?,
        );
        Ok(EnrollmentToken(text.to_owned()))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its hash, for storage and lookup.
    pub fn hash(&self) -> TokenHash {
        use sha2::Digest;
        TokenHash(sha2::Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a live secret into logs.
        f.write_str("EnrollmentToken(<redacted>)")
    }
}

impl Drop for EnrollmentToken {
    fn drop(&mut self) {
        // The text is the secret itself; do not leave it in freed memory.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Prefix that marks the text as a ztmesh enrollment token, version 1.
const PREFIX: &str = "ztm1_";
/// Random bytes in a token.
const SECRET_LEN: usize = 32;
/// Unpadded base32 symbols for [`SECRET_LEN`] bytes: ceil(256 / 5).
const BODY_LEN: usize = 52;

/// RFC 4648 base32 alphabet in lowercase, without padding.
fn token_base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("static base32 alphabet is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::OsRng;

    #[test]
    fn generated_tokens_have_the_format_and_parse_back() {
        let token = EnrollmentToken::generate(&mut OsRng);
        let text = token.as_str();
        assert_eq!(text.len(), PREFIX.len() + BODY_LEN);
        assert!(text.starts_with("ztm1_"));
        assert!(text[5..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        let parsed = EnrollmentToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(EnrollmentToken::generate(&mut OsRng), token);
    }

    #[test]
    fn known_answer_encoding_and_hash() {
        // 32 zero bytes encode to 52 'a's; the hash covers the whole text, prefix included.
        let text = format!("ztm1_{}", "a".repeat(52));
        let token = EnrollmentToken::parse(&text).unwrap();
        use sha2::Digest;
        let expected: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        assert_eq!(token.hash(), TokenHash(expected));
        // Pin the digest function itself (FIPS 180-2 "abc").
        assert_eq!(
            hex::encode(sha2::Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut rng = rand_core::block::BlockRng::new(ZeroCore);
        assert_eq!(EnrollmentToken::generate(&mut rng).as_str(), text);
    }

    /// A "random" source of zeros, to pin the encoding of generated tokens.
    struct ZeroCore;
    impl rand_core::block::BlockRngCore for ZeroCore {
        type Item = u32;
        type Results = [u32; 8];
        fn generate(&mut self, results: &mut Self::Results) {
            *results = [0; 8];
        }
    }
    impl rand_core::CryptoRng for ZeroCore {}

    #[test]
    fn malformed_tokens_are_refused() {
        let good = EnrollmentToken::generate(&mut OsRng).as_str().to_owned();
        let body = &good[5..];
        for bad in [
            String::new(),
            body.to_owned(),
            format!("ZTM1_{body}"),
            format!("ztm2_{body}"),
            good.to_uppercase(),
            format!("{good}a"),
            good[..good.len() - 1].to_owned(),
            format!("ztm1_{}1", &body[..51]),
            // Non-zero spare bits in the last symbol: a second spelling of some secret.
            format!("ztm1_{}b", "a".repeat(51)),
            format!("ztm1_{}é", &body[..50]),
        ] {
            assert_eq!(
                EnrollmentToken::parse(&bad),
                Err(PkiError::MalformedToken),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = EnrollmentToken::generate(&mut OsRng);
        assert!(!format!("{token:?}").contains(&token.as_str()[5..]));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = EnrollmentToken::parse(&text);
        }
    }
}
