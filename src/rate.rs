//! Rate limits per identity: a quota of requests per window for each key or token identity the
//! layer has verified, answered past the quota with 429 and the IETF `RateLimit` fields.
//!
//! The limiter is a GCRA (generic cell rate algorithm): one instant per identity, the time at which
//! its quota would be whole again. Only verified identities get one, so a flood of requests that
//! name a key without its secret spends nothing of that key's quota, and memory is bounded by the
//! identities that exist.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

use crate::identity::{Identity, IdentityKind};

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers): what is left of the quota, and when it is
/// whole again.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy`: the quota and its window.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

const SHARDS: usize = 64;
/// Entries a shard holds before whole quotas are dropped from it.
const PRUNE_AT: usize = 1024;

/// A quota of requests per window, for each identity on its own.
///
/// Requests within the quota pass with `RateLimit` and `RateLimit-Policy` fields; the first past it
/// gets 429 with `Retry-After`. The fields never name the identity (no partition key). Limits are
/// kept in this process: with many nodes behind a balancer each node counts on its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    quota: u32,
    window: Duration,
}

impl RateLimit {
    /// `quota` requests per `window` for each identity, at most `quota` of them at once. A quota of
    /// zero, or a window under a millisecond, is raised to one request per millisecond.
    pub fn new(quota: u32, window: Duration) -> Self {
        Self {
            quota: quota.max(1),
            window: window.max(Duration::from_millis(1)),
        }
    }

    /// `quota` requests a minute.
    pub fn per_minute(quota: u32) -> Self {
        Self::new(quota, Duration::from_secs(60))
    }

    /// The number of requests a window allows.
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn interval_nanos(&self) -> u64 {
        (nanos(self.window) / u64::from(self.quota)).max(1)
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("quota", &self.quota)
            .field("window", &self.window)
            .finish()
    }
}

/// Where an identity stands against its quota after one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    limit: RateLimit,
    /// Requests left in the quota (0 when refused).
    remaining: u32,
    /// Seconds until the quota is whole again.
    reset: u64,
    /// Seconds to wait before a request can pass; `Some` when refused.
    retry_after: Option<u64>,
}

impl Standing {
    pub(crate) fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The fields of this standing: `RateLimit-Policy`, `RateLimit`, and `Retry-After` on a refusal.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        let field = |text: String| HeaderValue::try_from(text).ok();
        if let Some(policy) = field(format!(
            "\"default\";q={};w={}",
            self.limit.quota,
            self.limit.window.as_secs().max(1)
        )) {
            headers.insert(RATELIMIT_POLICY, policy);
        }
        if let Some(limit) = field(format!("\"default\";r={};t={}", self.remaining, self.reset)) {
            headers.insert(RATELIMIT, limit);
        }
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(after));
        }
    }
}

/// The limiter a layer keeps: each identity's instant of a whole quota, in shards.
pub(crate) struct Limiter {
    limit: RateLimit,
    started: Instant,
    hasher: RandomState,
    // Per identity: nanoseconds after `started` at which its quota is whole again.
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            started: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Spends one request of `identity`'s quota, if it has one left.
    pub(crate) fn check(&self, identity: &Identity) -> Standing {
        let now = nanos(self.started.elapsed());
        self.check_at(self.key(identity), now)
    }

    /// Which quota an identity spends: its key's, or its token identity's. Hashed with a
    /// per-process key, so nobody can aim two identities at one entry.
    fn key(&self, identity: &Identity) -> u64 {
        match identity.kind() {
            IdentityKind::ApiKey => self
                .hasher
                .hash_one(("key", identity.key_id().map(|id| id.get()))),
            _ => {
                let login = identity.login();
                self.hasher
                    .hash_one(("token", login.as_ref().map(|l| (l.user_uid.as_str(), l.id))))
            }
        }
    }

    fn check_at(&self, key: u64, now: u64) -> Standing {
        let interval = self.limit.interval_nanos();
        let window = interval.saturating_mul(u64::from(self.limit.quota));
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= PRUNE_AT && !shard.contains_key(&key) {
            // Identities whose quota is whole again need no entry.
            shard.retain(|_, whole_at| *whole_at > now);
        }
        let whole_at = shard.get(&key).copied().unwrap_or(0).max(now);
        let next = whole_at.saturating_add(interval);
        let secs = |n: u64| n.div_ceil(1_000_000_000);
        if next - now > window {
            return Standing {
                limit: self.limit,
                remaining: 0,
                reset: secs(whole_at - now),
                retry_after: Some(secs(next - now - window).max(1)),
            };
        }
        shard.insert(key, next);
        Standing {
            limit: self.limit,
            remaining: u32::try_from((window - (next - now)) / interval).unwrap_or(u32::MAX),
            reset: secs(next - now),
            retry_after: None,
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_quota_passes_at_once_then_refills_one_interval_at_a_time() {
        let limiter = Limiter::new(RateLimit::new(3, Duration::from_secs(3)));
        let remaining: Vec<u32> = (0..3).map(|_| limiter.check_at(7, 0).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check_at(7, 0);
        assert!(!refused.allowed());
        assert_eq!(refused.retry_after, Some(1));
        assert_eq!(refused.reset, 3);
        // Half an interval later: still nothing.
        assert!(!limiter.check_at(7, SEC / 2).allowed());
        // One interval later: one request.
        let again = limiter.check_at(7, SEC);
        assert!(again.allowed());
        assert_eq!(again.remaining, 0);
        // Another identity has its own quota.
        assert_eq!(limiter.check_at(8, SEC).remaining, 2);
        // A long pause makes the quota whole, never more than whole.
        assert_eq!(limiter.check_at(7, 100 * SEC).remaining, 2);
    }

    #[test]
    fn refusals_spend_nothing() {
        let limiter = Limiter::new(RateLimit::new(1, Duration::from_secs(10)));
        assert!(limiter.check_at(1, 0).allowed());
        for _ in 0..100 {
            assert!(!limiter.check_at(1, SEC).allowed());
        }
        // Ten seconds after the one request that passed, not after the refusals.
        assert!(limiter.check_at(1, 10 * SEC).allowed());
    }

    #[test]
    fn whole_quotas_are_dropped_when_a_shard_fills() {
        let limiter = Limiter::new(RateLimit::new(1, Duration::from_secs(1)));
        for key in 0..(PRUNE_AT as u64 * SHARDS as u64 * 4) {
            assert!(limiter.check_at(key, key * SEC).allowed());
        }
        let held: usize = limiter
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").len())
            .sum();
        assert!(held <= SHARDS * PRUNE_AT, "{held} entries held");
    }

    #[test]
    fn fields_name_the_quota_never_the_identity() {
        let limiter = Limiter::new(RateLimit::per_minute(60));
        let mut headers = HeaderMap::new();
        limiter.check_at(42, 0).write(&mut headers);
        assert_eq!(headers[&RATELIMIT_POLICY], "\"default\";q=60;w=60");
        assert_eq!(headers[&RATELIMIT], "\"default\";r=59;t=1");
        assert!(!headers.contains_key(RETRY_AFTER));
        let limiter = Limiter::new(RateLimit::new(1, Duration::from_secs(30)));
        limiter.check_at(42, 0);
        let mut headers = HeaderMap::new();
        limiter.check_at(42, 0).write(&mut headers);
        assert_eq!(headers[&RATELIMIT], "\"default\";r=0;t=30");
        assert_eq!(headers[RETRY_AFTER], "30");
        for value in headers.values() {
            assert!(!value.to_str().expect("ascii").contains("42"));
        }
    }
}
