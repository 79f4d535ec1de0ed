//! SPIFFE trust domain names (the `D` in `spiffe://D/node/<NodeId>`).

use std::fmt;
use std::str::FromStr;

/// A SPIFFE trust domain: 1..=255 characters of lowercase letters, digits, `.`, `-` and `_`
/// (SPIFFE-ID specification §2.1).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// Why a string is not a [`TrustDomain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustDomainError {
    /// Empty or longer than 255 characters.
    #[error("a trust domain is 1 to 255 characters long")]
    Length,
    /// A character outside `a-z 0-9 . - _`.
    #[error(
        "a trust domain may only contain lowercase letters, digits, '.', '-' and '_' (found {0:?})"
    )]
    Character(char),
}

impl TrustDomain {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of a node in this trust domain.
    pub fn node_spiffe_id(&self, node: &crate::NodeId) -> String {
        format!("spiffe://{}/node/{}", self.0, node)
    }
}

impl FromStr for TrustDomain {
    type Err = TrustDomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 255 {
            return Err(TrustDomainError::Length);
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(TrustDomainError::Character(c));
        }
        Ok(TrustDomain(s.to_owned()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text: String = serde::Deserialize::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spiffe_examples_and_rejects_others() {
        assert!("example.org".parse::<TrustDomain>().is_ok());
        assert!("mesh_1-prod".parse::<TrustDomain>().is_ok());
        assert_eq!(
            "Example.org".parse::<TrustDomain>(),
            Err(TrustDomainError::Character('E'))
        );
        assert_eq!("".parse::<TrustDomain>(), Err(TrustDomainError::Length));
        assert_eq!(
            "a/b".parse::<TrustDomain>(),
            Err(TrustDomainError::Character('/'))
        );
        assert_eq!(
            "x".repeat(256).parse::<TrustDomain>(),
            Err(TrustDomainError::Length)
        );
    }
}
