//! The set of revoked certificate serials a node enforces, fed by verified CRLs.

use std::collections::BTreeSet;

use ztmesh_core::Timestamp;

use crate::{Crl, PkiError, Serial};

/// Revoked serials, from the newest CRL seen. Only grows within a CRL number sequence: a CRL
/// with a number not above the current one is refused ([`PkiError::StaleCrl`]), so a replayed
/// old CRL cannot un-revoke anybody.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    serials: BTreeSet<Serial>,
    crl_number: Option<u64>,
    next_update: Option<Timestamp>,
}

impl RevocationSet {
    /// An empty set (no CRL seen yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set with a newer verified CRL. Returns the serials newly revoked by it.
    pub fn apply_crl(&mut self, crl: &Crl) -> Result<Vec<Serial>, PkiError> {
        if let Some(have) = self.crl_number {
            if crl.number <= have {
                return Err(PkiError::StaleCrl {
                    got: crl.number,
                    have,
                });
            }
        }
        let fresh: BTreeSet<Serial> = crl.entries.iter().map(|e| e.serial.clone()).collect();
        let newly: Vec<Serial> = fresh.difference(&self.serials).cloned().collect();
        self.serials = fresh;
        self.crl_number = Some(crl.number);
        self.next_update = Some(crl.next_update);
        Ok(newly)
    }

    /// Whether this serial is revoked.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.serials.contains(serial)
    }

    /// Number of revoked serials.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Number of the CRL in force, if any.
    pub fn crl_number(&self) -> Option<u64> {
        self.crl_number
    }

    /// nextUpdate of the CRL in force, if any.
    pub fn next_update(&self) -> Option<Timestamp> {
        self.next_update
    }
}
