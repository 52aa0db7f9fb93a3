//! Online source: the ipinfo.io API, or anything that answers in its format.
//!
//! `GET {base_url}/{ip}/json`, with `Authorization: Bearer {token}` when a
//! token is set. Answers are cached in an LRU with a TTL (a shorter one for
//! negative answers and failures); requests are counted against a monthly
//! budget. Cache, budget, HTTP client and in-flight requests live in one
//! process-wide [`Shared`] per (base URL, token), so every plugin instance
//! using the same account shares them, and rebuilding a pipeline neither
//! empties the cache nor resets the count. That state lives as long as the
//! process (one per account ever configured). Counts are kept in memory
//! only: a restarted process, or each of several processes, counts afresh.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use futures_util::future::join_all;
use lru::LruCache;
use orrery_core::config::Secret;
use reqwest::StatusCode;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::NAME;

/// What a source knows about one IP: enrichment key → value.
pub(super) type Geo = Arc<Map<String, Value>>;
/// An answer: `None` when nothing is known (bogon, empty answer, failure).
type Answer = Option<Geo>;

/// Most new requests one batch starts; its other unknown IPs go without
/// provider fields this time and are looked up when they come again.
const MAX_NEW_PER_BATCH: usize = 64;
/// Largest response body read; an ipinfo answer is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Each kind of failure is logged at most once per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Pause after a 429 without `Retry-After`, or a 401/403.
const DEFAULT_PAUSE: Duration = Duration::from_secs(60);
/// Longest pause a `Retry-After` can ask for.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// What one plugin instance asks of the provider.
pub(super) struct Settings {
    pub base_url: String,
    pub token: Option<Secret>,
    pub timeout: Duration,
    pub monthly_budget: u64,
    pub cache_size: NonZeroUsize,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

/// One plugin instance's handle on the shared provider state.
pub(super) struct Ipinfo {
    shared: Arc<Shared>,
    timeout: Duration,
    monthly_budget: u64,
    ttl: Duration,
    negative_ttl: Duration,
}

struct Shared {
    client: reqwest::Client,
    base_url: String,
    token: Option<Secret>,
    state: Mutex<State>,
    warnings: Mutex<WarnLimiter>,
}

struct State {
    cache: LruCache<IpAddr, Cached>,
    /// Requests under way; a batch that needs the same IP waits for them.
    inflight: HashMap<IpAddr, watch::Receiver<Option<Answer>>>,
    budget: Budget,
    paused_until: Option<Instant>,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    geo: Answer,
}

/// (base URL, SHA-256 of the token): one account.
type Key = (String, Option<[u8; 32]>);

static PROVIDERS: LazyLock<Mutex<HashMap<Key, Arc<Shared>>>> = LazyLock::new(Mutex::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ipinfo {
    /// Joins (or creates) the shared state for this account. The cache
    /// grows to the largest `cache_size` asked for; it never shrinks.
    pub(super) fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        let digest = settings
            .token
            .as_ref()
            .map(|t| Sha256::digest(t.expose().as_bytes()).into());
        let key = (settings.base_url.clone(), digest);
        let shared = {
            let mut all = lock(&PROVIDERS);
            match all.get(&key) {
                Some(shared) => Arc::clone(shared),
                None => {
                    let client = reqwest::Client::builder()
                        .user_agent(concat!("orrery-geoip/", env!("CARGO_PKG_VERSION")))
                        .build()?;
                    let shared = Arc::new(Shared {
                        client,
                        base_url: settings.base_url,
                        token: settings.token,
                        state: Mutex::new(State {
                            cache: LruCache::sparse(settings.cache_size),
                            inflight: HashMap::new(),
                            budget: Budget::default(),
                            paused_until: None,
                        }),
                        warnings: Mutex::default(),
                    });
                    all.insert(key, Arc::clone(&shared));
                    shared
                }
            }
        };
        {
            let mut state = lock(&shared.state);
            if state.cache.cap() < settings.cache_size {
                state.cache.resize(settings.cache_size);
            }
        }
        Ok(Self {
            shared,
            timeout: settings.timeout,
            monthly_budget: settings.monthly_budget,
            ttl: settings.ttl,
            negative_ttl: settings.negative_ttl,
        })
    }

    /// Whether two instances share cache and budget.
    #[cfg(test)]
    pub(super) fn shares_state_with(&self, other: &Ipinfo) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// What the provider knows about each of `ips`, asked concurrently and
    /// waited for until `deadline` at most. IPs without an answer by then
    /// are missing from the result; their requests go on in the background
    /// (up to the request timeout) and fill the cache for later events.
    pub(super) async fn lookup_all(
        &self,
        ips: impl IntoIterator<Item = IpAddr>,
        deadline: Duration,
    ) -> HashMap<IpAddr, Geo> {
        let until = tokio::time::Instant::now() + deadline;
        let mut found = HashMap::new();
        let mut waits = Vec::new();
        let mut start = Vec::new();
        let mut refused = None;
        {
            let mut state = lock(&self.shared.state);
            let now = Instant::now();
            for ip in ips {
                if let Some(hit) = state.cached(ip, now, self.ttl, self.negative_ttl) {
                    found.extend(hit.map(|geo| (ip, geo)));
                    continue;
                }
                // A closed channel is a request whose task died: ask anew.
                if let Some(rx) = state.inflight.get(&ip)
                    && rx.has_changed().is_ok()
                {
                    waits.push((ip, rx.clone()));
                    continue;
                }
                if start.len() >= MAX_NEW_PER_BATCH {
                    continue;
                }
                if let Err(why) = state.admit(now, self.monthly_budget) {
                    refused = refused.or(why);
                    continue;
                }
                let (tx, rx) = watch::channel(None);
                state.inflight.insert(ip, rx.clone());
                waits.push((ip, rx));
                start.push((ip, tx));
            }
        }
        if let Some(failure) = refused {
            self.shared.report(&failure);
        }
        for (ip, tx) in start {
            tokio::spawn(Arc::clone(&self.shared).fetch(ip, self.timeout, tx));
        }
        let answers = join_all(waits.into_iter().map(|(ip, mut rx)| async move {
            let answer = match tokio::time::timeout_at(until, rx.wait_for(Option::is_some)).await {
                Ok(Ok(answer)) => (*answer).clone().flatten(),
                _ => None,
            };
            (ip, answer)
        }))
        .await;
        found.extend(
            answers
                .into_iter()
                .filter_map(|(ip, answer)| answer.map(|geo| (ip, geo))),
        );
        found
    }
}

impl State {
    /// A fresh cached answer for `ip`, if any.
    fn cached(
        &mut self,
        ip: IpAddr,
        now: Instant,
        ttl: Duration,
        negative_ttl: Duration,
    ) -> Option<Answer> {
        let entry = self.cache.get(&ip)?;
        let ttl = if entry.geo.is_some() {
            ttl
        } else {
            negative_ttl
        };
        (now.duration_since(entry.at) < ttl).then(|| entry.geo.clone())
    }

    /// Counts one request against the budget, or says why not: `Err(None)`
    /// while paused (already reported), `Err(Some(_))` when used up.
    fn admit(&mut self, now: Instant, limit: u64) -> Result<(), Option<Failure>> {
        if self.paused_until.is_some_and(|until| now < until) {
            return Err(None);
        }
        if self.budget.take(this_month(), limit) {
            Ok(())
        } else {
            Err(Some(Failure::BudgetExhausted(limit)))
        }
    }
}

impl Shared {
    /// One request in its own task, so that it can outlive the batch that
    /// started it and still fill the cache.
    async fn fetch(
        self: Arc<Self>,
        ip: IpAddr,
        timeout: Duration,
        tx: watch::Sender<Option<Answer>>,
    ) {
        let (geo, pause) = match self.request(ip, timeout).await {
            Ok(geo) => (geo, None),
            Err(failure) => {
                self.report(&failure);
                (None, failure.pause())
            }
        };
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state.inflight.remove(&ip);
            // Failures are cached like negative answers, so an IP that
            // fails is not asked again on every batch.
            state.cache.put(
                ip,
                Cached {
                    at: now,
                    geo: geo.clone(),
                },
            );
            if let Some(pause) = pause {
                state.paused_until = Some(now + pause);
            }
        }
        tx.send_replace(Some(geo));
    }

    async fn request(&self, ip: IpAddr, timeout: Duration) -> Result<Answer, Failure> {
        let mut request = self
            .client
            .get(format!("{}/{ip}/json", self.base_url))
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request.send().await.map_err(Failure::from_reqwest)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(|secs| Duration::from_secs(secs).min(MAX_PAUSE));
            return Err(Failure::RateLimited(retry_after));
        }
        if !status.is_success() {
            return Err(Failure::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Failure::Malformed("response body too large"));
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body).ok_or(Failure::Malformed("not a JSON object"))
    }

    /// Logs a failure, at most once per kind per [`WARN_EVERY`].
    fn report(&self, failure: &Failure) {
        let allowed = lock(&self.warnings).allow(failure.kind(), Instant::now());
        match allowed {
            Some(suppressed) => warn!(plugin = NAME, provider = "ipinfo",
                failure = failure.kind(), detail = %failure, suppressed,
                "geo provider unavailable; events kept without provider geo fields"),
            None => debug!(plugin = NAME, provider = "ipinfo",
                failure = failure.kind(), detail = %failure, "geo provider unavailable"),
        }
    }
}

/// Why the provider gave no answer.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Timeout,
    Network(String),
    Status(u16),
    RateLimited(Option<Duration>),
    Malformed(&'static str),
    BudgetExhausted(u64),
}

impl Failure {
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout;
        }
        // Without the URL: it holds the visitor's IP.
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Network(text)
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Network(_) => "network",
            Self::Status(_) => "http_status",
            Self::RateLimited(_) => "rate_limited",
            Self::Malformed(_) => "malformed_response",
            Self::BudgetExhausted(_) => "budget_exhausted",
        }
    }

    /// How long to stop asking after this failure.
    fn pause(&self) -> Option<Duration> {
        match self {
            Self::RateLimited(after) => Some(after.unwrap_or(DEFAULT_PAUSE)),
            Self::Status(401 | 403) => Some(DEFAULT_PAUSE),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("request timed out"),
            Self::Network(e) => write!(f, "request failed: {e}"),
            Self::Status(s) => write!(f, "answered HTTP {s}"),
            Self::RateLimited(after) => write!(
                f,
                "answered 429 Too Many Requests; pausing for {} s",
                after.unwrap_or(DEFAULT_PAUSE).as_secs()
            ),
            Self::Malformed(why) => write!(f, "malformed answer: {why}"),
            Self::BudgetExhausted(n) => write!(
                f,
                "monthly budget of {n} requests used up; provider skipped until next month (UTC)"
            ),
        }
    }
}

/// Requests made in the current calendar month (UTC).
#[derive(Debug, Default)]
struct Budget {
    month: (i32, u32),
    used: u64,
}

impl Budget {
    /// Takes one request from the budget of `month`, if any is left.
    fn take(&mut self, month: (i32, u32), limit: u64) -> bool {
        if self.month != month {
            *self = Self { month, used: 0 };
        }
        if self.used >= limit {
            return false;
        }
        self.used += 1;
        true
    }
}

fn this_month() -> (i32, u32) {
    let now = Utc::now();
    (now.year(), now.month())
}

/// When each kind of failure was last logged, and how many since.
#[derive(Default)]
struct WarnLimiter {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl WarnLimiter {
    /// `Some(number suppressed since the last one)` when `kind` may be
    /// logged at `now`.
    fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(kind) {
            Some((at, suppressed)) if now.duration_since(*at) < WARN_EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// Reads an ipinfo answer: `None` when it is not a JSON object.
fn parse(body: &[u8]) -> Option<Answer> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if obj.get("bogon").and_then(Value::as_bool) == Some(true) {
        return Some(None);
    }
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let mut geo = Map::new();
    for key in ["country", "region", "city", "timezone"] {
        if let Some(value) = text(key) {
            geo.insert(key.to_owned(), Value::from(value));
        }
    }
    if let Some((lat, lon)) = text("loc").and_then(parse_loc) {
        geo.insert("latitude".to_owned(), Value::from(lat));
        geo.insert("longitude".to_owned(), Value::from(lon));
    }
    // Paid plans answer an `asn` object; the free one only `org`.
    let (asn, org) = match obj.get("asn") {
        Some(Value::Object(asn)) => (
            asn.get("asn").and_then(Value::as_str).and_then(parse_asn),
            asn.get("name").and_then(Value::as_str).map(str::trim),
        ),
        _ => text("org").map(split_org).unwrap_or_default(),
    };
    if let Some(asn) = asn {
        geo.insert("asn".to_owned(), Value::from(asn));
    }
    if let Some(org) = org.filter(|o| !o.is_empty()) {
        geo.insert("as_org".to_owned(), Value::from(org));
    }
    Some((!geo.is_empty()).then(|| Arc::new(geo)))
}

/// `"37.4056,-122.0775"` → (37.4056, -122.0775).
fn parse_loc(loc: &str) -> Option<(f64, f64)> {
    let (lat, lon) = loc.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lon: f64 = lon.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// `"AS15169"` → 15169.
fn parse_asn(s: &str) -> Option<u32> {
    s.trim().strip_prefix("AS")?.parse().ok()
}

/// `"AS15169 Google LLC"` → (15169, "Google LLC"); an `org` without an AS
/// number is all organisation.
fn split_org(org: &str) -> (Option<u32>, Option<&str>) {
    let (first, rest) = org.split_once(' ').unwrap_or((org, ""));
    match parse_asn(first) {
        Some(asn) => (Some(asn), Some(rest.trim()).filter(|r| !r.is_empty())),
        None => (None, Some(org)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_the_free_answer() {
        let body = br#"{"ip":"8.8.8.8","city":"Mountain View","region":"California","country":"US","loc":"37.4056,-122.0775","org":"AS15169 Google LLC","postal":"94043","timezone":"America/Los_Angeles"}"#;
        let geo = parse(body).unwrap().unwrap();
        assert_eq!(
            Value::Object((*geo).clone()),
            json!({
                "city": "Mountain View", "region": "California", "country": "US",
                "latitude": 37.4056, "longitude": -122.0775, "asn": 15169,
                "as_org": "Google LLC", "timezone": "America/Los_Angeles"
            })
        );
    }

    #[test]
    fn parses_odd_answers() {
        assert_eq!(parse(br#"{"ip":"10.0.0.1","bogon":true}"#), Some(None));
        assert_eq!(parse(br#"{"ip":"1.2.3.4"}"#), Some(None));
        assert_eq!(parse(b"<html>"), None);
        assert_eq!(parse(b"[1]"), None);
        let geo = parse(br#"{"country":"DE","loc":"x,y","org":"Some Org","asn":{"asn":"AS3320","name":"Deutsche Telekom AG"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object((*geo).clone()),
            json!({"country": "DE", "asn": 3320, "as_org": "Deutsche Telekom AG"})
        );
        assert_eq!(split_org("Some Org"), (None, Some("Some Org")));
        assert_eq!(split_org("AS1"), (Some(1), None));
        assert_eq!(parse_loc("91,0"), None);
    }

    #[test]
    fn budget_is_per_calendar_month() {
        let mut budget = Budget::default();
        assert!(budget.take((2026, 11), 2));
        assert!(budget.take((2026, 11), 2));
        assert!(!budget.take((2026, 11), 2));
        assert!(budget.take((2026, 12), 2), "a new month starts afresh");
        assert_eq!(budget.used, 1);
    }

    #[test]
    fn each_kind_of_failure_is_logged_once_a_minute() {
        let mut limiter = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.allow("timeout", t0), Some(0));
        assert_eq!(limiter.allow("timeout", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow("timeout", t0 + Duration::from_secs(59)), None);
        assert_eq!(limiter.allow("http_status", t0), Some(0), "other kind");
        assert_eq!(
            limiter.allow("timeout", t0 + Duration::from_secs(61)),
            Some(2),
            "tells how many were suppressed"
        );
    }

    #[tokio::test]
    async fn failures_never_show_the_ip() {
        // A port nobody listens on any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = reqwest::get(format!("http://{addr}/9.9.9.9/json"))
            .await
            .unwrap_err();
        let failure = Failure::from_reqwest(error);
        assert_eq!(failure.kind(), "network");
        assert!(!failure.to_string().contains("9.9.9.9"), "{failure}");
        assert_eq!(Failure::Status(403).pause(), Some(DEFAULT_PAUSE));
        assert_eq!(
            Failure::RateLimited(Some(Duration::from_secs(5))).pause(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(Failure::Status(500).pause(), None);
    }
}
