//! Tuning and bounds of the gossip core. Every queue, cache and rate it keeps is sized here.

use ztmesh_core::link::MAX_FRAME_LEN;

/// Bytes a gossip frame adds around its largest field (type tag, field names, CBOR headers).
const FRAME_OVERHEAD: usize = 64;

/// Encoded size of one id in a digest or want list: a CBOR byte-string header and 32 bytes.
const ENCODED_ID_LEN: usize = 2 + 32;

/// Bytes the link's own `LinkMessage::Gossip` envelope adds around a gossip frame.
const LINK_MESSAGE_OVERHEAD: usize = 32;

/// Gossip tuning. [`GossipConfig::default`] holds the mesh defaults; [`GossipConfig::validate`]
/// refuses values that would make the core useless or exceed link frames, and should run
/// wherever a configuration is loaded. [`crate::Gossip::new`] accepts any value without
/// panicking, but an unvalidated configuration may, for instance, drop every frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// Peers each new message is pushed to (`gossip_fanout`). Zero disables pushing: messages
    /// then spread by anti-entropy alone.
    pub fanout: usize,
    /// How far in the future a message's `created_at` may be, in milliseconds.
    pub max_clock_skew_ms: u64,
    /// Longest accepted `expires_at - created_at`, in milliseconds.
    pub max_ttl_ms: u64,
    /// Largest COSE envelope accepted or stored, in bytes.
    pub max_message_len: usize,
    /// Entries in each dedupe cache: ids of accepted messages, hashes of their signatures, and
    /// ids of messages refused for good. Accepted entries expire with their message.
    pub seen_cache_capacity: usize,
    /// Messages kept for anti-entropy.
    pub store_capacity: usize,
    /// Bytes kept for anti-entropy (envelope plus decoded body of each message).
    pub store_bytes: usize,
    /// Frames waiting for [`crate::Gossip::poll_transmit`] per peer; more are dropped.
    pub peer_queue_len: usize,
    /// Frames accepted per second from one peer (token bucket, one second of burst).
    pub peer_messages_per_sec: u32,
    /// Bytes accepted per second from one peer (token bucket, one second of burst).
    pub peer_bytes_per_sec: u64,
    /// Milliseconds between anti-entropy rounds.
    pub anti_entropy_interval_ms: u64,
    /// Most ids in one digest or want list.
    pub digest_max_ids: usize,
    /// Most peers tracked at once; further link-ups are ignored.
    pub max_peers: usize,
    /// Most origins remembered as revoked; the oldest is forgotten first.
    pub max_revoked: usize,
    /// Most deliveries waiting for [`crate::Gossip::poll_event`] (refusal events share the
    /// same bound in their own queue). When deliveries reach it, new messages are refused with
    /// [`crate::GossipError::Backpressure`] until the runtime catches up.
    pub event_queue_len: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            fanout: 3,
            max_clock_skew_ms: 30_000,
            max_ttl_ms: 7 * 24 * 60 * 60 * 1000,
            max_message_len: 64 * 1024,
            seen_cache_capacity: 65_536,
            store_capacity: 4096,
            store_bytes: 16 * 1024 * 1024,
            peer_queue_len: 1024,
            peer_messages_per_sec: 200,
            peer_bytes_per_sec: 1024 * 1024,
            anti_entropy_interval_ms: 2000,
            digest_max_ids: 1024,
            max_peers: 256,
            max_revoked: 65_536,
            event_queue_len: 4096,
        }
    }
}

/// Why a [`GossipConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One field is out of range.
    #[error("gossip config: {field} {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What its value must be.
        reason: &'static str,
    },
}

impl GossipConfig {
    /// Largest gossip frame this configuration sends or accepts: a full message or a full
    /// digest, plus framing.
    pub fn max_frame_len(&self) -> usize {
        let message = self.max_message_len.saturating_add(FRAME_OVERHEAD);
        let digest = self
            .digest_max_ids
            .saturating_mul(ENCODED_ID_LEN)
            .saturating_add(FRAME_OVERHEAD);
        message.max(digest)
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, field: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { field, reason })
            }
        };
        check(
            self.fanout <= self.max_peers,
            "fanout",
            "must not exceed max_peers",
        )?;
        check(self.max_ttl_ms > 0, "max_ttl_ms", "must be positive")?;
        check(
            self.max_message_len >= 1024,
            "max_message_len",
            "must be at least 1024 bytes",
        )?;
        check(
            self.seen_cache_capacity >= self.store_capacity,
            "seen_cache_capacity",
            "must be at least store_capacity",
        )?;
        check(
            self.store_capacity > 0,
            "store_capacity",
            "must be positive",
        )?;
        check(
            self.store_bytes >= self.max_message_len.saturating_mul(2),
            "store_bytes",
            "must hold at least one message (twice max_message_len)",
        )?;
        check(
            self.peer_queue_len > 0,
            "peer_queue_len",
            "must be positive",
        )?;
        check(
            self.peer_messages_per_sec > 0,
            "peer_messages_per_sec",
            "must be positive",
        )?;
        check(
            self.max_frame_len() + LINK_MESSAGE_OVERHEAD <= MAX_FRAME_LEN,
            "max_message_len",
            "and digest_max_ids must keep frames within a link frame",
        )?;
        check(
            self.peer_bytes_per_sec >= self.max_frame_len() as u64,
            "peer_bytes_per_sec",
            "must admit at least one largest frame per second",
        )?;
        check(
            self.anti_entropy_interval_ms > 0,
            "anti_entropy_interval_ms",
            "must be positive",
        )?;
        check(
            self.digest_max_ids > 0,
            "digest_max_ids",
            "must be positive",
        )?;
        check(self.max_peers > 0, "max_peers", "must be positive")?;
        check(self.max_revoked > 0, "max_revoked", "must be positive")?;
        check(
            self.event_queue_len > 0,
            "event_queue_len",
            "must be positive",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let config = GossipConfig::default();
        config.validate().unwrap();
        assert_eq!(config.fanout, 3);
        assert_eq!(config.max_ttl_ms, 604_800_000);
        assert_eq!(config.max_message_len, 65_536);
        assert!(config.max_frame_len() + LINK_MESSAGE_OVERHEAD <= MAX_FRAME_LEN);
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        type Change = fn(&mut GossipConfig);
        let cases: [(&str, Change); 8] = [
            ("store_capacity", |c| c.store_capacity = 0),
            ("store_bytes", |c| c.store_bytes = c.max_message_len),
            ("peer_bytes_per_sec", |c| c.peer_bytes_per_sec = 1000),
            ("max_message_len", |c| c.max_message_len = MAX_FRAME_LEN),
            ("max_message_len", |c| c.digest_max_ids = 100_000),
            ("seen_cache_capacity", |c| c.seen_cache_capacity = 1),
            ("anti_entropy_interval_ms", |c| {
                c.anti_entropy_interval_ms = 0
            }),
            ("fanout", |c| c.fanout = 1000),
        ];
        for (field, change) in cases {
            let mut config = GossipConfig::default();
            change(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
