//! `geoip`: where a visitor is, from the client IP.
//!
//! Reads the client IP from the request context (`env.context.ip`, which is
//! never stored) and writes into the event's `enrichment` whichever of these
//! its sources know: `country` (ISO 3166-1 code, e.g. `DE`),
//! `country_name`, `region` (first-level subdivision name), `region_code`,
//! `city`, `latitude`, `longitude`, `timezone` (IANA name), `asn` (number)
//! and `as_org`. Unknown fields are left out; the IP itself is never
//! written. Every event is kept: an IP nothing is known about simply gets
//! no fields.
//!
//! Events without an IP, and IPs that are not public (private, loopback,
//! link-local, unspecified, multicast, broadcast, documentation,
//! benchmarking, reserved, CGNAT; IPv4 and IPv6, IPv4-mapped IPv6 read as
//! IPv4), are skipped: see [`is_public`].
//!
//! # Sources
//!
//! 1. `database`: a MaxMind-format file (GeoIP2/GeoLite2 City or Country,
//!    or DB-IP's compatible files); whatever fields it has are used.
//! 2. `asn_database`: a GeoLite2-ASN-format file for `asn` and `as_org`.
//! 3. `provider = "ipinfo"`: the ipinfo.io API (or a service answering in
//!    its format at `provider_url`), asked only for IPs that `database` did
//!    not locate, or all IPs when there is no `database`. Fields already
//!    set from a database are not overwritten.
//!
//! A database file is read into memory (not memory-mapped) once per
//! process, when the first plugin needing it is built, and shared by every
//! pipeline using the same file; a changed file (size or mtime) is read
//! again on the next pipeline build. That read is synchronous, inside
//! [`GeoIp::from_config`] (a 60 MB City database takes some tens of ms);
//! lookups are in memory and run inline. A missing or unreadable file is logged
//! as a warning naming it, and the plugin goes on without that source.
//!
//! # Privacy
//!
//! With databases only, the IP never leaves the request context or the
//! process. **When a provider is configured, each public IP the databases
//! could not locate is sent to that provider** (ipinfo.io by default) over
//! HTTPS, with your token: only configure one if your privacy policy allows
//! sharing visitor IPs with it.
//!
//! # Provider caching, budget and time limits
//!
//! Answers are cached per process in an LRU (`cache_size` entries) for
//! `cache_ttl_secs`; answers with nothing in them, and failures, for
//! `negative_ttl_secs`. Every request counts against `monthly_budget` for
//! the calendar month (UTC), ipinfo's free tier being 50,000 a month; when
//! it is used up the provider is skipped until the next month. Cache and
//! count are shared by all instances with the same `provider_url` and
//! `provider_token`, and kept in memory only (a restart counts afresh).
//!
//! The pipeline gives a plugin 100 ms per batch by default, while a request
//! may take up to `provider_timeout_ms` (800 ms by default). So the distinct
//! IPs of a batch are asked concurrently, and the batch waits for them at
//! most `batch_deadline_ms` (80 ms by default; keep it below the stage's
//! time limit). A request still running then goes on in the background and
//! fills the cache, so later events from that IP get its fields. On a
//! timeout, an HTTP error, a 429 (which also pauses the provider, for its
//! `Retry-After` or a minute) or a malformed answer, events are kept
//! without provider fields, and each kind of failure is logged at most
//! once a minute.
//!
//! ```toml
//! database = "/var/lib/orrery/GeoLite2-City.mmdb"
//! asn_database = "/var/lib/orrery/GeoLite2-ASN.mmdb"
//! provider = "ipinfo"
//! provider_token = "..."
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery_core::config::Secret;
use orrery_core::event::Envelope;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{debug, warn};

mod ipinfo;
mod mmdb;
#[cfg(test)]
mod tests;

/// Registered name.
pub const NAME: &str = "geoip";

/// An online geolocation service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ipinfo.io's `GET /{ip}/json` API, or a service answering like it.
    Ipinfo,
}

/// Configuration of `geoip`. With no source configured the plugin does
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// MaxMind-format location database (GeoIP2/GeoLite2 City or Country
    /// `.mmdb`). Missing or unreadable: a warning, and no offline location.
    pub database: Option<PathBuf>,
    /// MaxMind-format ASN database (GeoLite2-ASN `.mmdb`), for `asn` and
    /// `as_org`. Missing or unreadable: a warning, and no offline ASN.
    pub asn_database: Option<PathBuf>,
    /// Online provider asked for IPs the `database` did not locate. Off by
    /// default: when set, those visitor IPs are sent to it.
    pub provider: Option<Provider>,
    /// Base URL of the provider; the plugin requests `{provider_url}/{ip}/json`.
    pub provider_url: String,
    /// API token, sent as `Authorization: Bearer`. Optional for ipinfo
    /// (without one its anonymous limits apply). Never printed.
    pub provider_token: Option<Secret>,
    /// Time limit of one provider request, in milliseconds (1 to 60000).
    pub provider_timeout_ms: u64,
    /// How long one batch waits for provider answers, in milliseconds
    /// (1 to 60000); keep it below the pipeline stage's time limit (100 ms
    /// by default). Slower answers still fill the cache.
    pub batch_deadline_ms: u64,
    /// Provider requests allowed per calendar month (UTC), per process.
    pub monthly_budget: u64,
    /// Provider answers kept in the cache (at least 1).
    pub cache_size: usize,
    /// How long a provider answer with fields is cached, in seconds.
    pub cache_ttl_secs: u64,
    /// How long an empty answer or a failure is cached, in seconds; 0 to
    /// not cache them.
    pub negative_ttl_secs: u64,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        Self {
            database: None,
            asn_database: None,
            provider: None,
            provider_url: "https://ipinfo.io".to_owned(),
            provider_token: None,
            provider_timeout_ms: 800,
            batch_deadline_ms: 80,
            monthly_budget: 50_000,
            cache_size: 10_000,
            cache_ttl_secs: 24 * 3600,
            negative_ttl_secs: 600,
        }
    }
}

/// The `geoip` plugin.
pub struct GeoIp {
    /// Location database.
    city: Option<Arc<mmdb::Db>>,
    /// ASN database.
    asn: Option<Arc<mmdb::Db>>,
    provider: Option<ipinfo::Ipinfo>,
    batch_deadline: Duration,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database", &self.city)
            .field("asn_database", &self.asn)
            .field(
                "provider",
                &self.provider.as_ref().map(|_| Provider::Ipinfo),
            )
            .finish_non_exhaustive()
    }
}

/// Keys that mean the location database located an IP.
const LOCATION_KEYS: [&str; 5] = ["country", "region", "city", "latitude", "timezone"];

fn invalid(field: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config {
        plugin: NAME.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn millis(field: &str, value: u64) -> Result<Duration, PluginError> {
    if !(1..=60_000).contains(&value) {
        return Err(invalid(field, "must be between 1 and 60000 ms"));
    }
    Ok(Duration::from_millis(value))
}

/// The provider URL without a trailing slash.
fn base_url(config: &GeoIpConfig) -> Result<String, PluginError> {
    let field = "provider_url";
    let url = url::Url::parse(&config.provider_url)
        .map_err(|e| invalid(field, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(field, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(field, "must not have a query or fragment"));
    }
    let local = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if config.provider.is_some()
        && config.provider_token.is_some()
        && url.scheme() == "http"
        && !local
    {
        warn!(
            plugin = NAME,
            field, "provider token and visitor IPs will be sent unencrypted over http"
        );
    }
    Ok(config.provider_url.trim_end_matches('/').to_owned())
}

impl GeoIp {
    /// Builds the plugin. Database files are opened (or shared) here; a
    /// file that cannot be read is a warning, not an error.
    ///
    /// # Errors
    /// [`PluginError::Config`] naming the field when a value is out of
    /// range (a zero cache size or time limit, a provider URL that is not
    /// http(s), an empty token), or when the HTTP client cannot be built.
    pub fn from_config(config: GeoIpConfig) -> Result<Self, PluginError> {
        let cache_size = NonZeroUsize::new(config.cache_size)
            .ok_or_else(|| invalid("cache_size", "must be at least 1"))?;
        let timeout = millis("provider_timeout_ms", config.provider_timeout_ms)?;
        let batch_deadline = millis("batch_deadline_ms", config.batch_deadline_ms)?;
        if config.monthly_budget == 0 {
            return Err(invalid(
                "monthly_budget",
                "must be at least 1 (leave `provider` out to disable it)",
            ));
        }
        if config.cache_ttl_secs == 0 {
            return Err(invalid("cache_ttl_secs", "must be at least 1"));
        }
        if config
            .provider_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(invalid(
                "provider_token",
                "must not be empty (leave it out to send none)",
            ));
        }
        let base_url = base_url(&config)?;

        let city = config
            .database
            .as_deref()
            .and_then(|path| mmdb::open_shared(path, "database"));
        let asn = config
            .asn_database
            .as_deref()
            .and_then(|path| mmdb::open_shared(path, "asn_database"));
        let provider = match config.provider {
            None => None,
            Some(Provider::Ipinfo) => Some(
                ipinfo::Ipinfo::new(ipinfo::Settings {
                    base_url,
                    token: config.provider_token,
                    timeout,
                    monthly_budget: config.monthly_budget,
                    cache_size,
                    ttl: Duration::from_secs(config.cache_ttl_secs),
                    negative_ttl: Duration::from_secs(config.negative_ttl_secs),
                })
                .map_err(|e| invalid("provider", format!("HTTP client cannot be built: {e}")))?,
            ),
        };
        if city.is_none() && asn.is_none() && provider.is_none() {
            debug!(plugin = NAME, "no usable source; events pass unchanged");
        }
        Ok(Self {
            city,
            asn,
            provider,
            batch_deadline,
        })
    }

    /// What the databases know about `ip`, and whether it was located.
    fn lookup_offline(&self, ip: IpAddr) -> (Map<String, Value>, bool) {
        let mut geo = self
            .city
            .as_ref()
            .map(|db| db.lookup(ip))
            .unwrap_or_default();
        let located = LOCATION_KEYS.iter().any(|k| geo.contains_key(*k));
        if let Some(db) = &self.asn {
            for (key, value) in db.lookup(ip) {
                geo.entry(key).or_insert(value);
            }
        }
        (geo, located)
    }
}

/// The client IP of `env`, canonical, when it is public.
fn public_ip(env: &Envelope) -> Option<IpAddr> {
    let ip = env.context.ip?.to_canonical();
    is_public(ip).then_some(ip)
}

/// Whether `ip` can be a visitor on the public Internet, and so be worth
/// locating. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as
/// the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network", 0.0.0.0
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3
        || a >= 224; // multicast, reserved 240/4, broadcast
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only global unicast 2000::/3 is routed; this leaves out ::, ::1,
    // unique local fc00::/7, link-local fe80::/10, multicast ff00::/8,
    // NAT64 64:ff9b::/96, discard 100::/64 and the rest.
    let global_unicast = s[0] & 0xe000 == 0x2000;
    let special = match s[0] {
        // IETF protocol assignments 2001::/23, documentation 2001:db8::/32
        0x2001 => s[1] < 0x0200 || s[1] == 0x0db8,
        // documentation 3fff::/20
        0x3fff => s[1] < 0x1000,
        _ => false,
    };
    global_unicast && !special
}

#[async_trait]
impl Plugin for GeoIp {
    fn name(&self) -> &str {
        NAME
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        // One lookup per distinct IP of the batch.
        let mut offline: HashMap<IpAddr, (Map<String, Value>, bool)> = HashMap::new();
        for env in batch.iter() {
            if let Some(ip) = public_ip(env) {
                offline.entry(ip).or_insert_with(|| self.lookup_offline(ip));
            }
        }
        let online = match &self.provider {
            Some(provider) => {
                let unlocated: Vec<IpAddr> = offline
                    .iter()
                    .filter(|(_, (_, located))| !located)
                    .map(|(ip, _)| *ip)
                    .collect();
                if unlocated.is_empty() {
                    HashMap::new()
                } else {
                    provider.lookup_all(unlocated, self.batch_deadline).await
                }
            }
            None => HashMap::new(),
        };
        for env in batch.iter_mut() {
            let Some(ip) = public_ip(env) else { continue };
            let enrichment = &mut env.event.enrichment;
            if let Some((geo, _)) = offline.get(&ip) {
                enrichment.extend(geo.clone());
            }
            if let Some(geo) = online.get(&ip) {
                for (key, value) in geo.iter() {
                    // A database's fields win over the provider's.
                    if offline.get(&ip).is_none_or(|(g, _)| !g.contains_key(key)) {
                        enrichment.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        Ok(vec![Verdict::Keep; batch.len()])
    }
}
