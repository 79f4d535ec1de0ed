//! When to renew a certificate.

use std::time::Duration;

use ztmesh_core::Timestamp;

/// Default node certificate lifetime.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Shortest lifetime the CA accepts (tests and demos).
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(60);

/// The instant to renew a certificate valid from `not_before` to `not_after`: at two thirds of
/// its lifetime, so the new one is in hand long before the old one expires.
pub fn renew_at(not_before: Timestamp, not_after: Timestamp) -> Timestamp {
    let lifetime = not_after.duration_since(not_before);
    not_before.saturating_add(lifetime * 2 / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        let nb = Timestamp::from_unix_secs(1000);
        assert_eq!(
            renew_at(nb, Timestamp::from_unix_secs(1090)),
            Timestamp::from_unix_secs(1060)
        );
        // A degenerate certificate renews at once rather than never.
        assert_eq!(renew_at(nb, nb), nb);
    }
}
