//! Per-client token-bucket rate limiting, sans-IO: callers pass `now`. A client is an address
//! by default, or any small key (the CA limits expired-certificate rotations per NodeId).
//! [`RateLimiter`] limits requests; [`FailedCredentials`] limits wrong credentials (admin
//! credential, `api.token`) per address and counts them; [`TokenBucket`] is the one bucket
//! both are made of, as are the per-link budgets ([`crate::link_budget`]). No limiter may ever track more than [`MAX_TRACKED_CLIENTS`] clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use crate::Timestamp;

/// Most distinct clients tracked; past it the least recently seen bucket is dropped, so a
/// spray of source addresses cannot grow memory without bound.
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// A token bucket per client (an address unless `K` says otherwise): `per_minute` requests a
/// minute, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    burst: u32,
    buckets: HashMap<K, TokenBucket>,
}

/// One token bucket: `per_minute` tokens a minute, holding at most `burst`. Time is the `now`
/// the caller passes; a clock going backwards mints nothing.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    per_minute: u32,
    burst: u32,
    tokens: f64,
    updated: Timestamp,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(per_minute: u32, burst: u32, now: Timestamp) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            per_minute: per_minute.max(1),
            burst,
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn rate_per_ms(&self) -> f64 {
        f64::from(self.per_minute) / 60_000.0
    }

    fn tokens_at(&self, now: Timestamp) -> f64 {
        let elapsed = now.duration_since(self.updated).as_millis() as f64;
        (self.tokens + elapsed * self.rate_per_ms()).min(f64::from(self.burst))
    }

    fn wait_for_one(&self, tokens: f64) -> Duration {
        Duration::from_millis(((1.0 - tokens) / self.rate_per_ms()).ceil() as u64)
    }

    /// Takes one token at `now`; `Err` holds how long until one is available.
    pub fn take(&mut self, now: Timestamp) -> Result<(), Duration> {
        self.tokens = self.tokens_at(now);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_one(self.tokens))
        }
    }

    /// Whether a token is available at `now`, without taking it.
    pub fn peek(&self, now: Timestamp) -> Result<(), Duration> {
        let tokens = self.tokens_at(now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait_for_one(tokens))
        }
    }
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
        let (per_minute, burst) = (self.per_minute, self.burst);
        self.buckets
            .entry(client)
            .or_insert_with(|| TokenBucket::new(per_minute, burst, now))
            .take(now)
    }

    /// Whether `client` would get a token at `now`, without taking one.
    pub fn peek(&self, client: K, now: Timestamp) -> Result<(), Duration> {
        self.buckets
            .get(&client)
            .map_or(Ok(()), |bucket| bucket.peek(now))
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Wrong credentials an address may present in a burst before it is refused with 429.
pub const FAILED_CREDENTIALS_BURST: u32 = 10;
/// Wrong credentials an address may present per minute after the burst.
pub const FAILED_CREDENTIALS_PER_MINUTE: u32 = 6;

/// Guessing a bearer credential (the CA's admin credential, a node's `api.token`): every
/// wrong one costs its address a token of a bucket of [`FAILED_CREDENTIALS_BURST`] refilled at
/// [`FAILED_CREDENTIALS_PER_MINUTE`]; an address with an empty bucket is refused *before* its
/// credential is compared, right or wrong, so that it cannot go on guessing. Right
/// credentials cost nothing, and other addresses have buckets of their own. Prevention for
/// one address, detection (the count, logged) for a spray of addresses.
#[derive(Debug)]
pub struct FailedCredentials {
    buckets: RateLimiter,
    total: u64,
}

impl Default for FailedCredentials {
    fn default() -> Self {
        FailedCredentials::new(FAILED_CREDENTIALS_PER_MINUTE, FAILED_CREDENTIALS_BURST)
    }
}

impl FailedCredentials {
    /// `burst` wrong credentials at once per address, then `per_minute`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        FailedCredentials {
            buckets: RateLimiter::new(per_minute, burst),
            total: 0,
        }
    }

    /// Whether `client` may present a credential at `now`; `Err` holds how long it must wait.
    pub fn admit(&self, client: IpAddr, now: Timestamp) -> Result<(), Duration> {
        self.buckets.peek(client, now)
    }

    /// Records a wrong credential from `client`; answers the count of all wrong credentials
    /// since start.
    pub fn record_failure(&mut self, client: IpAddr, now: Timestamp) -> u64 {
        let _ = self.buckets.check(client, now);
        self.total = self.total.saturating_add(1);
        self.total
    }

    /// Wrong credentials since start, from every address.
    pub fn total(&self) -> u64 {
        self.total
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
    fn failed_credentials_lock_out_the_guessing_address_only() {
        let mut failed = FailedCredentials::new(6, 10);
        let t0 = Timestamp::from_unix_secs(1000);
        for i in 1..=10 {
            assert!(failed.admit(A, t0).is_ok(), "attempt {i}");
            assert_eq!(failed.record_failure(A, t0), i);
        }
        // The eleventh attempt is refused before its credential is looked at.
        assert_eq!(failed.admit(A, t0), Err(Duration::from_secs(10)));
        // Others are not affected; right credentials cost nothing, so admit alone never locks.
        for _ in 0..100 {
            assert!(failed.admit(B, t0).is_ok());
        }
        // One more attempt every 10 s.
        let later = t0.saturating_add(Duration::from_secs(10));
        assert!(failed.admit(A, later).is_ok());
        failed.record_failure(A, later);
        assert!(failed.admit(A, later).is_err());
        assert_eq!(failed.total(), 11);
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut limiter = RateLimiter::new(60, 1);
        let t = Timestamp::from_unix_secs(100);
        assert!(limiter.check(A, t).is_ok());
        assert!(limiter.check(A, Timestamp::from_unix_secs(50)).is_err());
    }
}
