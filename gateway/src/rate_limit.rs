//! Token-bucket rate limits, per instance, in memory: per client IP for
//! the public endpoints (ingestion, the pixel, the drop-in clients' paths)
//! and for logging in, per credential for the rest of the API.
//!
//! Each answer of a limited request carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the bucket is
//! full again); a refusal is a 429 `rate_limited` with `Retry-After`.
//! Several instances each apply their own limits (the sum is what clients
//! get through a load balancer); what matters for security across
//! instances, the login lockout, is in the database (`crate::accounts`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use orrery_core::config::RateLimitConfig;

/// What a request is limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The public endpoints, per client IP.
    Ingest,
    /// Login, registration and refresh, per client IP.
    Auth,
    /// Everything else under `/api/v1`, per key or token.
    Api,
}

impl Class {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Auth => "auth",
            Self::Api => "api",
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Let through.
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Seconds until the bucket is full.
    pub reset_secs: u64,
    /// Seconds until one request is let through (refusals).
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

const SHARDS: usize = 16;
/// Buckets one shard keeps before it forgets the full ones.
const SHARD_ENTRIES: usize = 16_384;

/// The limiter of one instance.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    shards: Vec<Mutex<HashMap<(Class, String), Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// A limiter with the limits of `config`.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// `(per second, burst)` of `class`; `None` when it is not limited.
    fn limits(&self, class: Class) -> Option<(f64, f64)> {
        let c = &self.config;
        let (rate, burst) = match class {
            Class::Ingest => (c.ingest_per_sec, c.ingest_burst),
            Class::Auth => (c.auth_per_minute / 60.0, c.auth_burst),
            Class::Api => (c.api_per_sec, c.api_burst),
        };
        (rate > 0.0).then(|| (rate, f64::from(burst.max(1))))
    }

    /// Takes one token of `subject`'s bucket of `class`; `None` when the
    /// class is not limited.
    pub fn take(&self, class: Class, subject: &str) -> Option<Verdict> {
        self.take_at(class, subject, Instant::now())
    }

    fn take_at(&self, class: Class, subject: &str, now: Instant) -> Option<Verdict> {
        let (rate, burst) = self.limits(class)?;
        let key = (class, subject.to_owned());
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= SHARD_ENTRIES && !map.contains_key(&key) {
            // Full buckets hold nothing worth keeping.
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if map.len() >= SHARD_ENTRIES {
                map.clear();
            }
        }
        let bucket = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let secs = |x: f64| x.max(0.0).ceil() as u64;
        Some(Verdict {
            allowed,
            limit: burst as u64,
            remaining: bucket.tokens.max(0.0).floor() as u64,
            reset_secs: secs((burst - bucket.tokens) / rate),
            retry_after_secs: if allowed {
                0
            } else {
                secs((1.0 - bucket.tokens) / rate).max(1)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_refills_at_its_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            api_per_sec: 2.0,
            api_burst: 3,
            ..RateLimitConfig::default()
        });
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..4)
            .map(|_| {
                limiter
                    .take_at(Class::Api, "k", t0)
                    .unwrap_or_else(|| unreachable!())
            })
            .collect();
        assert_eq!(
            verdicts.iter().map(|v| v.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            (
                verdicts[0].limit,
                verdicts[0].remaining,
                verdicts[2].remaining
            ),
            (3, 2, 0)
        );
        assert_eq!(verdicts[3].retry_after_secs, 1);
        assert_eq!(verdicts[3].reset_secs, 2);
        // Another subject has its own bucket.
        assert!(
            limiter
                .take_at(Class::Api, "other", t0)
                .is_some_and(|v| v.allowed)
        );
        // Half a second later: one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(
            limiter
                .take_at(Class::Api, "k", t1)
                .is_some_and(|v| v.allowed)
        );
        assert!(
            limiter
                .take_at(Class::Api, "k", t1)
                .is_some_and(|v| !v.allowed)
        );
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            ingest_per_sec: 0.0,
            ..RateLimitConfig::default()
        });
        assert_eq!(limiter.take(Class::Ingest, "1.2.3.4"), None);
    }
}
