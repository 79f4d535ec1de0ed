//! Per-client token-bucket rate limiting, sans-IO: callers pass `now`. A client is an address
//! by default, or any small key (the CA limits expired-certificate rotations per NodeId).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use ztmesh_core::Timestamp;

/// Most distinct clients tracked; past it the least recently seen bucket is dropped, so a
/// spray of source addresses cannot grow memory without bound.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// A token bucket per client (an address unless `K` says otherwise): `per_minute` requests a
/// minute, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    burst: u32,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Timestamp,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// A limiter allowing `per_minute` requests a minute per client with bursts of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `client` at `now`; `Err` holds how long until a token is available.
    pub fn check(&mut self, client: K, now: Timestamp) -> Result<(), Duration> {
        if !self.buckets.contains_key(&client) && self.buckets.len() >= MAX_TRACKED_CLIENTS {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(ip, _)| *ip)
            {
                self.buckets.remove(&oldest);
            }
        }
        let rate_per_ms = f64::from(self.per_minute) / 60_000.0;
        let burst = f64::from(self.burst);
        let bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_millis() as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate_per_ms).min(burst);
        bucket.updated = bucket.updated.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - bucket.tokens) / rate_per_ms).ceil() as u64;
            Err(Duration::from_millis(wait_ms))
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn burst_then_refill_at_the_configured_rate() {
        let mut limiter = RateLimiter::new(60, 3);
        let t0 = Timestamp::from_unix_secs(1000);
        for _ in 0..3 {
            assert!(limiter.check(A, t0).is_ok());
        }
        let wait = limiter.check(A, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another client has its own bucket.
        assert!(limiter.check(B, t0).is_ok());
        // One token a second comes back.
        assert!(limiter
            .check(A, t0.saturating_add(Duration::from_secs(1)))
            .is_ok());
        assert!(limiter
            .check(A, t0.saturating_add(Duration::from_secs(1)))
            .is_err());
    }

    #[test]
    fn tracked_clients_are_bounded() {
        let mut limiter = RateLimiter::new(60, 1);
        let now = Timestamp::from_unix_secs(1);
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.check(ip, now.saturating_add(Duration::from_millis(u64::from(i))));
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_CLIENTS);
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut limiter = RateLimiter::new(60, 1);
        let t = Timestamp::from_unix_secs(100);
        assert!(limiter.check(A, t).is_ok());
        assert!(limiter.check(A, Timestamp::from_unix_secs(50)).is_err());
    }
}
