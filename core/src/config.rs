//! Configuration structures.
//!
//! `Default` impls are the only source of defaults. The gateway layers
//! `orrery.toml`, `ORRERY_*` environment variables and CLI flags on top of
//! them with figment; this crate only describes the shape.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that never shows itself in `Debug` or `Display` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole configuration of an Orrery instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the SQLite database, generated secrets and backups.
    pub data_dir: PathBuf,
    /// Database URL. Empty means the embedded SQLite file
    /// `<data_dir>/orrery.db`. Examples: `sqlite://./data/orrery.db`,
    /// `postgres://user:password@host/dbname`.
    pub database_url: Option<String>,
    /// Address and port the HTTP server listens on.
    pub listen: String,
    /// Database tuning.
    pub database: DatabaseConfig,
    /// Ingestion limits and the group-commit writer.
    pub ingest: IngestConfig,
    /// HTTP hygiene: proxies, CORS, body limits.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The code-execution service (Python and WebAssembly).
    pub execute: ExecuteConfig,
    /// Enrichment pipelines: instance-wide defaults for every project.
    pub pipeline: PipelineConfig,
    /// Periodic insights (summary, trend, anomaly).
    pub insights: InsightsConfig,
    /// Analytics queries: hourly rollups.
    pub analytics: AnalyticsConfig,
    /// Ingestion in other systems' formats: which PostHog tokens and
    /// Plausible domains are which project.
    pub compat: CompatConfig,
    /// The live event stream (`GET /api/v1/projects/{id}/live`).
    pub live: LiveConfig,
    /// Accounts: logins, tokens, cookies, lockout.
    pub auth: AuthConfig,
    /// Token-bucket rate limits per client IP and per key.
    pub rate_limit: RateLimitConfig,
    /// Secrets. Generated on first start and kept in `<data_dir>/secrets.toml`
    /// (mode 0600) when not given here.
    pub secrets: SecretsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            listen: "127.0.0.1:8080".to_owned(),
            database: DatabaseConfig::default(),
            ingest: IngestConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            execute: ExecuteConfig::default(),
            pipeline: PipelineConfig::default(),
            insights: InsightsConfig::default(),
            analytics: AnalyticsConfig::default(),
            compat: CompatConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            live: LiveConfig::default(),
            secrets: SecretsConfig::default(),
        }
    }
}

impl Config {
    /// The database URL in effect: the configured one, or the embedded
    /// SQLite file in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => format!("sqlite://{}", self.data_dir.join("orrery.db").display()),
        }
    }
}

/// Enrichment pipelines: instance-wide defaults. A project's own pipeline
/// (`PUT /api/v1/projects/{id}/pipeline`) overrides the stages; these
/// values fill what a stage leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Time limit of one plugin call on a batch, in ms, unless a stage sets
    /// its own `timeout_ms`.
    pub plugin_timeout_ms: u64,
    /// MaxMind-format city (or country) database for the `geoip` plugin,
    /// unless a stage sets its own `database`. Empty: no offline geoip (the
    /// plugin warns at start and skips).
    pub geoip_database: Option<PathBuf>,
    /// MaxMind-format ASN database for the `geoip` plugin (optional).
    pub geoip_asn_database: Option<PathBuf>,
    /// Seconds a project's pipeline is cached before it is read again from
    /// the database, so that a change made through another instance
    /// sharing the database takes effect here too. Changes made through
    /// this instance take effect at once.
    pub reload_secs: u64,
    /// Directory of custom plugins: `NAME.wasm` components, each with an
    /// optional `NAME.toml` (`[config]`, `[limits]`). Loaded at start and
    /// watched: added, changed and removed files take effect without a
    /// restart. Unset: no directory (plugins may still be uploaded).
    pub plugin_directory: Option<PathBuf>,
    /// How often the plugin directory is scanned for changes, in ms.
    pub plugin_watch_ms: u64,
    /// Largest plugin accepted through the API (the code, before base64),
    /// in bytes.
    pub plugin_max_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            plugin_timeout_ms: 100,
            geoip_database: None,
            geoip_asn_database: None,
            reload_secs: 10,
            plugin_directory: None,
            plugin_watch_ms: 1000,
            plugin_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Periodic insights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightsConfig {
    /// Run the insights job periodically (it can always be run through
    /// `POST /api/v1/projects/{id}/insights/generate`).
    pub enabled: bool,
    /// Minutes between two runs.
    pub interval_minutes: u64,
    /// Robust z-score beyond which an hourly count is an anomaly.
    pub anomaly_threshold: f64,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_minutes: 60,
            anomaly_threshold: 3.5,
        }
    }
}

/// Analytics queries: hourly rollups and the answer cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Seconds between two runs of the rollup job, which rolls up the
    /// hours that are over and have new events (one instance at a time
    /// when several share a database); 0 switches it off (queries then
    /// read raw events for every hour not rolled up).
    pub rollup_interval_secs: u64,
    /// Hours the rollup job redoes per round; it goes on at once while
    /// there are more.
    pub rollup_hours_per_round: u64,
    /// Seconds before the job redoes an hour it has redone: an hour that
    /// keeps receiving late events is redone at most this often (queries
    /// read it from raw events meanwhile, so answers stay exact). 0 redoes
    /// it on every run.
    pub rollup_redo_gap_secs: u64,
    /// Seconds a statistics answer stays in the cache; events stored for
    /// the project (through this instance) clear its answers sooner. 0
    /// switches the cache off.
    pub cache_ttl_secs: u64,
    /// Answers kept in the cache.
    pub cache_entries: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            rollup_interval_secs: 10,
            rollup_hours_per_round: 200,
            rollup_redo_gap_secs: 60,
            cache_ttl_secs: 10,
            cache_entries: 1000,
        }
    }
}

/// Ingestion in other systems' formats (`POST /capture` and the other
/// PostHog paths, Plausible's `POST /api/event`). An Orrery ingest key
/// works as a PostHog token without any setting; these lists let snippets
/// keep their own token or domain, so that switching is one host name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// PostHog project tokens (`phc_...`), each with the project its
    /// events go to. Such a token can only send events, like a `pk_` key.
    pub posthog_tokens: BTreeMap<String, Uuid>,
    /// Plausible site domains (the `d` field), each with the project its
    /// events go to. A domain not listed gets a 404 naming it.
    pub plausible_domains: BTreeMap<String, Uuid>,
    /// Whether Plausible's `POST /api/event` takes the client IP from
    /// `X-Forwarded-For` (its first valid address), as Plausible documents
    /// for server-side senders. Off: only from `http.trusted_proxies`, as on
    /// every other endpoint.
    pub plausible_forwarded_for: bool,
    /// Where `GET /static/...` (the PostHog snippet's `array.js`) is
    /// redirected: PostHog's asset host, so that a snippet works with only
    /// its host changed. Empty: 404.
    pub posthog_assets: String,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            posthog_tokens: BTreeMap::new(),
            plausible_domains: BTreeMap::new(),
            plausible_forwarded_for: true,
            posthog_assets: "https://us-assets.i.posthog.com".to_owned(),
        }
    }
}

/// Token-bucket rate limits of one instance: a bucket of `*_burst`
/// requests refilled at the rate, per client IP for the public endpoints
/// and for logging in, per key or token for the rest of the API. A rate of
/// 0 switches a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second per client IP to the ingestion endpoints (the
    /// events API, the pixel, the drop-in clients' paths).
    pub ingest_per_sec: f64,
    /// Their bucket.
    pub ingest_burst: u32,
    /// Requests per minute per client IP to login, register and refresh.
    pub auth_per_minute: f64,
    /// Their bucket.
    pub auth_burst: u32,
    /// Requests per second per key or token to the rest of `/api/v1`.
    pub api_per_sec: f64,
    /// Their bucket.
    pub api_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            ingest_per_sec: 1000.0,
            ingest_burst: 2000,
            auth_per_minute: 30.0,
            auth_burst: 10,
            api_per_sec: 500.0,
            api_burst: 1000,
        }
    }
}

/// Accounts: people who log in with an e-mail and a password and get
/// JWT access tokens (HS256) and rotating refresh tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an access token, seconds.
    pub access_token_secs: u64,
    /// Lifetime of a refresh token, seconds; each refresh starts it again.
    pub refresh_token_secs: u64,
    /// Whether anyone may register (`POST /api/v1/auth/register`) once
    /// the first administrator exists. Off: administrators create
    /// accounts.
    pub open_registration: bool,
    /// Whether the login cookies carry `Secure` (sent over HTTPS only).
    /// Turn off only to use the cookies over plain HTTP on localhost.
    pub secure_cookies: bool,
    /// Failed logins, per account and per client IP, that lock further
    /// attempts.
    pub lockout_attempts: u32,
    /// How long a lock lasts, and the window failures are counted in,
    /// seconds.
    pub lockout_secs: u64,
    /// How long a WebSocket ticket stays valid, seconds.
    pub ticket_secs: u64,
    /// How long, ms, an instance trusts what it last read about a login
    /// (revoked or not, the account active or not, its roles) before
    /// asking the database again: the most a revocation on another
    /// instance takes to be seen. When the database cannot answer after
    /// that, requests are refused (503), never let through.
    pub revocation_check_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            access_token_secs: 15 * 60,
            refresh_token_secs: 7 * 24 * 3600,
            open_registration: false,
            secure_cookies: true,
            lockout_attempts: 5,
            lockout_secs: 15 * 60,
            ticket_secs: 30,
            revocation_check_ms: 1000,
        }
    }
}

/// The live event stream: subscribers' WebSockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Seconds between two `{"type": "heartbeat"}` messages; 0 sends
    /// none.
    pub heartbeat_secs: u64,
    /// Events waiting to be sent to one subscriber. A subscriber that lets
    /// more pile up is disconnected (close code 1008, reason `slow
    /// consumer`) rather than slowing ingestion or growing memory. Keep it
    /// above `ingest.max_batch_events`: one request's events are queued
    /// at once.
    pub queue_events: usize,
    /// Largest `replay` a subscriber may ask for.
    pub max_replay: usize,
    /// Subscribers connected to this instance at once; beyond, 503
    /// `unavailable`.
    pub max_subscribers: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 15,
            queue_events: 1000,
            max_replay: 1000,
            max_subscribers: 1000,
        }
    }
}

/// How strongly SQLite syncs a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// fsync at every commit: survives power loss.
    Full,
    /// fsync at WAL checkpoints: survives a crash of the process (`kill -9`),
    /// may lose the last commits on power loss.
    Normal,
}

/// Database tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// SQLite `synchronous` pragma: `full` or `normal`.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Maximum connections in the pool (readers; the writer holds one more).
    pub max_connections: u32,
    /// Seconds to wait for a connection at start before giving up.
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            sqlite_synchronous: SqliteSynchronous::Full,
            max_connections: 8,
            connect_timeout_secs: 5,
        }
    }
}

/// Ingestion limits and the group-commit writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events in one batch request.
    pub max_batch_events: usize,
    /// Largest request body in bytes, as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest body in bytes after gzip decompression (zip-bomb guard).
    pub max_decompressed_bytes: usize,
    /// Largest single event in bytes (its JSON encoding).
    pub max_event_bytes: usize,
    /// Events waiting for the writer, across all requests. When full,
    /// ingestion answers 503 with `Retry-After`.
    pub queue_capacity: usize,
    /// The writer commits when this many events are gathered...
    pub flush_events: usize,
    /// ...or when the oldest gathered event has waited this long (ms).
    pub flush_interval_ms: u64,
    /// How often (ms) the writer writes the sessions of the events it
    /// stored to the `sessions` table; `GET .../sessions` lags by at most
    /// this much.
    pub sessions_flush_ms: u64,
    /// `Retry-After` seconds sent with a 503 when the queue is full.
    pub retry_after_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 1000,
            max_body_bytes: 1024 * 1024,
            max_decompressed_bytes: 8 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            queue_capacity: 50_000,
            flush_events: 2000,
            flush_interval_ms: 2,
            sessions_flush_ms: 1000,
            retry_after_secs: 1,
        }
    }
}

/// HTTP hygiene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Peers whose `X-Forwarded-For` header is believed (IP addresses).
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins allowed to call the admin and query API from a browser.
    /// Ingestion endpoints accept any origin.
    pub cors_origins: Vec<String>,
    /// Largest body in bytes for non-ingestion endpoints.
    pub max_body_bytes: usize,
    /// Seconds a graceful shutdown waits for requests in flight.
    pub shutdown_timeout_secs: u64,
    /// Most connections open at once; beyond, a new one gets a 503 and is
    /// closed.
    pub max_connections: usize,
    /// Most connections open at once from one client IP (peers in
    /// `trusted_proxies` are exempt).
    pub max_connections_per_ip: usize,
    /// A request's line and headers must arrive within this (ms), counted
    /// from their first byte, or from the connection's start for its
    /// first request.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this (ms) of the handler asking
    /// for it; else 408.
    pub body_read_timeout_ms: u64,
    /// A connection with no request in flight is closed after this (ms).
    pub idle_timeout_ms: u64,
    /// A connection whose client stops reading its answer is closed after
    /// this (ms) without progress.
    pub write_timeout_ms: u64,
    /// Largest request line plus headers (HTTP/1.1; beyond: 431), and
    /// HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes; beyond: 414.
    pub max_uri_bytes: usize,
    /// Accept cleartext HTTP/2 (prior knowledge) besides HTTP/1.1.
    pub http2: bool,
    /// HTTP/2 streams at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of one stream, in bytes.
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of one connection, in bytes.
    pub http2_connection_window_bytes: u32,
    /// `Strict-Transport-Security: max-age=` of answers to requests that
    /// came over HTTPS (a trusted proxy's `X-Forwarded-Proto: https`);
    /// 0 sends none.
    pub hsts_max_age_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 256 * 1024,
            shutdown_timeout_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 16 * 1024,
            http2: true,
            http2_max_concurrent_streams: 100,
            http2_stream_window_bytes: 256 * 1024,
            http2_connection_window_bytes: 1024 * 1024,
            hsts_max_age_secs: 365 * 24 * 3600,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "orrery=info,orrery_core=info,orrery_gateway=info,warn".to_owned(),
        }
    }
}

/// The code-execution service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecuteConfig {
    /// Offer `/api/v1/execute` and `/api/v1/wasm/modules` at all.
    pub enabled: bool,
    /// Start the Python sandbox (a zygote process) with the server.
    pub python: bool,
    /// Executions running at once; 0 means twice the number of cores.
    pub max_running: usize,
    /// Executions waiting for a slot; beyond it, 503 with `Retry-After`.
    pub max_queued: usize,
    /// Executions per key per minute; beyond it, 429 with `Retry-After`.
    pub rate_per_minute: u32,
    /// Most wall-clock time of one execution, in ms.
    pub wall_time_ms: u64,
    /// Most CPU time of one execution, in ms.
    pub cpu_time_ms: u64,
    /// Most memory of one execution, in bytes.
    pub memory_bytes: u64,
    /// Most stdout plus stderr kept, in bytes (the rest is cut and flagged).
    pub output_bytes: u64,
    /// Largest Python source, in bytes.
    pub code_bytes: u64,
    /// Most WebAssembly fuel (roughly, instructions) of one execution.
    pub wasm_fuel: u64,
    /// Largest WebAssembly module or component, in bytes (inline or upload).
    pub wasm_module_bytes: u64,
    /// Total size of uploaded modules, in bytes.
    pub wasm_store_bytes: u64,
    /// Modules Python code may import; empty means the built-in list
    /// (math, random, datetime, json, statistics, itertools, functools,
    /// collections, re, string, decimal, fractions, heapq, bisect,
    /// textwrap, unicodedata).
    pub python_modules: Vec<String>,
    /// Put each Python execution in its own user, network, mount and PID
    /// namespaces where the kernel allows it.
    pub namespaces: bool,
}

impl Default for ExecuteConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            python: true,
            max_running: 0,
            max_queued: 64,
            rate_per_minute: 600,
            wall_time_ms: 5000,
            cpu_time_ms: 5000,
            memory_bytes: 128 * 1024 * 1024,
            output_bytes: 64 * 1024,
            code_bytes: 64 * 1024,
            wasm_fuel: 10_000_000_000,
            wasm_module_bytes: 8 * 1024 * 1024,
            wasm_store_bytes: 256 * 1024 * 1024,
            python_modules: Vec::new(),
            namespaces: true,
        }
    }
}

/// Secrets; any left empty is generated and kept in the data directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Key of the daily-rotating IP hash (HMAC-SHA256). Several instances
    /// sharing one database must be given the same value.
    pub ip_hash_key: Option<Secret>,
    /// Key signing access tokens (HS256). Not given: derived from
    /// `ip_hash_key`, so instances sharing that key accept each other's
    /// tokens. Changing it logs everyone out.
    pub jwt_key: Option<Secret>,
}

impl SecretsConfig {
    /// The instance secret's bytes (`ip_hash_key`; empty before
    /// `ensure_secrets` filled it): the IP hash key, and the root of the
    /// page-cursor key.
    pub fn instance_key(&self) -> Vec<u8> {
        self.ip_hash_key
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default()
    }
}

/// Removes the password from a database URL, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redact_url_hides_password_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example:5432/orrery"),
            "postgres://app:***@db.example:5432/orrery"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("sqlite://./data/orrery.db"),
            "sqlite://./data/orrery.db"
        );
    }

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let c = Config::default();
        assert_eq!(c.effective_database_url(), "sqlite://./data/orrery.db");
    }
}
