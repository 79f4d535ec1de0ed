//! The mesh parameters governance may change, each with hard bounds, and their current values.
//!
//! Bounds are checked on every way in (a proposal, a persisted file), so a value outside them
//! can never be applied, whatever a quorum votes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PeerError, TrustError, UsageError};

/// A governed parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Peers each gossip message is pushed to.
    GossipFanout,
    /// Requests per minute one peer may make.
    RateLimitRpm,
    /// Lifetime of newly issued node certificates, seconds.
    CertLifetimeSecs,
    /// How long a verified attestation counts, seconds.
    AttestationValiditySecs,
    /// Seconds between health checks of a peer.
    HealthCheckIntervalSecs,
}

impl Param {
    /// Every parameter.
    pub const ALL: [Param; 5] = [
        Param::GossipFanout,
        Param::RateLimitRpm,
        Param::CertLifetimeSecs,
        Param::AttestationValiditySecs,
        Param::HealthCheckIntervalSecs,
    ];

    /// The parameter whose wire and log name is `name`.
    pub fn named(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Lowest and highest allowed values, inclusive.
    pub const fn bounds(self) -> (u64, u64) {
        match self {
            Param::GossipFanout => (1, 16),
            Param::RateLimitRpm => (1, 100_000),
            Param::CertLifetimeSecs => (60, 30 * 24 * 3600),
            Param::AttestationValiditySecs => (60, 7 * 24 * 3600),
            Param::HealthCheckIntervalSecs => (1, 3600),
        }
    }

    /// The wire and log name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Param::GossipFanout => "gossip_fanout",
            Param::RateLimitRpm => "rate_limit_rpm",
            Param::CertLifetimeSecs => "cert_lifetime_secs",
            Param::AttestationValiditySecs => "attestation_validity_secs",
            Param::HealthCheckIntervalSecs => "health_check_interval_secs",
        }
    }

    /// `Ok` when `value` is within bounds.
    pub fn check(self, value: u64) -> Result<(), PeerError> {
        let (min, max) = self.bounds();
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(PeerError::ValueOutOfBounds {
                param: self,
                value,
                min,
                max,
            })
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Current parameter values, always within bounds. Persist it (serde); loading re-checks the
/// bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ParametersFile", into = "ParametersFile")]
pub struct Parameters {
    gossip_fanout: u64,
    rate_limit_rpm: u64,
    cert_lifetime_secs: u64,
    attestation_validity_secs: u64,
    health_check_interval_secs: u64,
}

impl Default for Parameters {
    /// DESIGN.md defaults: fan-out 3, 24 h certificates and attestations; 12 000 gossip frames
    /// a minute per peer (200 a second, the gossip core's own default).
    fn default() -> Self {
        Parameters {
            gossip_fanout: 3,
            rate_limit_rpm: 12_000,
            cert_lifetime_secs: 24 * 3600,
            attestation_validity_secs: 24 * 3600,
            health_check_interval_secs: 60,
        }
    }
}

impl Parameters {
    /// The value of `param`.
    pub fn get(&self, param: Param) -> u64 {
        match param {
            Param::GossipFanout => self.gossip_fanout,
            Param::RateLimitRpm => self.rate_limit_rpm,
            Param::CertLifetimeSecs => self.cert_lifetime_secs,
            Param::AttestationValiditySecs => self.attestation_validity_secs,
            Param::HealthCheckIntervalSecs => self.health_check_interval_secs,
        }
    }

    /// Sets `param` if `value` is within bounds.
    pub fn set(&mut self, param: Param, value: u64) -> Result<(), TrustError> {
        param.check(value)?;
        let slot = match param {
            Param::GossipFanout => &mut self.gossip_fanout,
            Param::RateLimitRpm => &mut self.rate_limit_rpm,
            Param::CertLifetimeSecs => &mut self.cert_lifetime_secs,
            Param::AttestationValiditySecs => &mut self.attestation_validity_secs,
            Param::HealthCheckIntervalSecs => &mut self.health_check_interval_secs,
        };
        *slot = value;
        Ok(())
    }

    /// Gossip fan-out.
    pub fn gossip_fanout(&self) -> usize {
        self.gossip_fanout as usize
    }

    /// Gossip frames a minute each peer may send this node.
    pub fn rate_limit_rpm(&self) -> u32 {
        // Bounded to 100 000 above.
        self.rate_limit_rpm as u32
    }

    /// Lifetime of new certificates.
    pub fn cert_lifetime(&self) -> Duration {
        Duration::from_secs(self.cert_lifetime_secs)
    }

    /// Validity of a verified attestation.
    pub fn attestation_validity(&self) -> Duration {
        Duration::from_secs(self.attestation_validity_secs)
    }

    /// Interval between health checks.
    pub fn health_check_interval(&self) -> Duration {
        Duration::from_secs(self.health_check_interval_secs)
    }
}

/// The persisted form, checked on load.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParametersFile {
    gossip_fanout: u64,
    rate_limit_rpm: u64,
    cert_lifetime_secs: u64,
    attestation_validity_secs: u64,
    health_check_interval_secs: u64,
}

impl TryFrom<ParametersFile> for Parameters {
    type Error = UsageError;

    fn try_from(file: ParametersFile) -> Result<Self, Self::Error> {
        let mut parameters = Parameters::default();
        for (param, value) in [
            (Param::GossipFanout, file.gossip_fanout),
            (Param::RateLimitRpm, file.rate_limit_rpm),
            (Param::CertLifetimeSecs, file.cert_lifetime_secs),
            (
                Param::AttestationValiditySecs,
                file.attestation_validity_secs,
            ),
            (
                Param::HealthCheckIntervalSecs,
                file.health_check_interval_secs,
            ),
        ] {
            parameters
                .set(param, value)
                .map_err(|_| UsageError::ParameterOutOfBounds { param, value })?;
        }
        Ok(parameters)
    }
}

impl From<Parameters> for ParametersFile {
    fn from(p: Parameters) -> Self {
        ParametersFile {
            gossip_fanout: p.gossip_fanout,
            rate_limit_rpm: p.rate_limit_rpm,
            cert_lifetime_secs: p.cert_lifetime_secs,
            attestation_validity_secs: p.attestation_validity_secs,
            health_check_interval_secs: p.health_check_interval_secs,
        }
    }
}
