//! Conversions between ztmesh [`Timestamp`]s (milliseconds) and the whole-second times of
//! X.509. Certificates and CRLs carry seconds, so everything signed is truncated to seconds.

use time::OffsetDateTime;
use x509_parser::time::ASN1Time;
use ztmesh_core::Timestamp;

use crate::PkiError;

/// The instant, truncated to whole seconds, as rcgen wants it. Instants past year 9999 cannot be
/// written into a certificate at all.
pub(crate) fn to_offset_date_time(instant: Timestamp) -> Result<OffsetDateTime, PkiError> {
    let secs = i64::try_from(instant.as_unix_secs())
        .map_err(|_| PkiError::InvalidLifetime(format!("time {instant} out of range")))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| PkiError::InvalidLifetime(format!("time {instant} out of range")))
}

/// `instant` truncated to whole seconds: what a certificate signed with it will say.
pub(crate) fn truncate_to_secs(instant: Timestamp) -> Timestamp {
    Timestamp::from_unix_secs(instant.as_unix_secs())
}

/// A parsed X.509 time as a [`Timestamp`]; `None` before the Unix epoch (ztmesh never signs
/// such times, so a peer that sends one is sending something we did not make).
pub(crate) fn from_asn1_time(time: ASN1Time) -> Option<Timestamp> {
    u64::try_from(time.timestamp())
        .ok()
        .map(Timestamp::from_unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whole_seconds() {
        let t = Timestamp::from_unix_millis(1_700_000_000_999);
        let odt = to_offset_date_time(t).unwrap();
        assert_eq!(odt.unix_timestamp(), 1_700_000_000);
        assert_eq!(
            truncate_to_secs(t),
            Timestamp::from_unix_secs(1_700_000_000)
        );
        let asn1 = ASN1Time::from_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            from_asn1_time(asn1),
            Some(Timestamp::from_unix_secs(1_700_000_000))
        );
        assert_eq!(from_asn1_time(ASN1Time::from_timestamp(-1).unwrap()), None);
        assert!(to_offset_date_time(Timestamp::from_unix_millis(u64::MAX)).is_err());
    }
}
