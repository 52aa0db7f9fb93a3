//! `orrery-loadgen`: a load generator for the ingestion endpoint.
//!
//! It keeps `--concurrency` requests in flight against `POST /api/v1/events`
//! for `--warmup` + `--duration` seconds, each carrying `--batch` events with
//! unique client UUIDs, and reports events/s, requests/s, latency
//! percentiles, 503s and errors over the measured window. With `--verify` it
//! then counts the stored events and checks that the count grew by exactly
//! the number of events acknowledged with a 2xx.
//!
//! `--spawn PATH_TO_ORRERY` makes one command do a whole run: a fresh data
//! directory (and, with `--create-db`, a fresh PostgreSQL database), `orrery
//! init`, `orrery serve --listen 127.0.0.1:0`, the load, the verification,
//! and a graceful stop.
//!
//! The generator usually shares the machine with the server, so the hot
//! path is lean: by default a hand-written HTTP/1.1 keep-alive client (one
//! connection per in-flight request) writes a pre-serialised request whose
//! event ids are patched in place, on a current-thread runtime; no
//! allocation per request. `--client reqwest` is there to compare.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use orrery_tests::{Options, Server, env_map};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Which HTTP client sends the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// Minimal HTTP/1.1 keep-alive client on raw TCP (leanest).
    Raw,
    /// reqwest with a connection pool sized to the concurrency.
    Reqwest,
}

#[derive(Debug, Parser)]
#[command(
    name = "orrery-loadgen",
    about = "Load generator for orrery's POST /api/v1/events, with an acknowledged == stored check"
)]
struct Args {
    /// Base URL of a running gateway, e.g. http://127.0.0.1:8080 (not with --spawn).
    #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
    url: Option<String>,
    /// Project key (pk_...) of a running gateway (--spawn makes its own).
    #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
    key: Option<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per request (1 sends the single-event form, more `{"batch":[...]}`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before measuring (acknowledged events still count for --verify).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Send bodies gzip-compressed (Content-Encoding: gzip), compressed per request.
    #[arg(long)]
    gzip: bool,
    /// Runtime threads of the generator; 1 uses a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// HTTP client of the hot path.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    client: ClientKind,
    /// Milliseconds to wait before resending a request answered 503 or failed.
    #[arg(long, default_value_t = 10)]
    retry_backoff_ms: u64,
    /// Seconds before a request with no answer is abandoned (and retried).
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Requests per second across all workers (each worker sends at most
    /// RATE / CONCURRENCY per second); unlimited when absent. A paced
    /// neighbour makes the same load whatever the server answers.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,

    /// Start this orrery binary on a fresh data directory, init a project,
    /// serve on 127.0.0.1:0, run the load against it, then stop it.
    #[arg(long, value_name = "ORRERY_BIN")]
    spawn: Option<PathBuf>,
    /// Database URL given to orrery (`--database-url`), e.g.
    /// postgres://postgres@127.0.0.1/bench1; default: SQLite in the data dir.
    #[arg(long)]
    database_url: Option<String>,
    /// With a PostgreSQL --database-url: drop and create that database first.
    #[arg(long)]
    create_db: bool,
    /// Environment for the spawned server, KEY=VALUE (repeatable), e.g.
    /// ORRERY_INGEST__FLUSH_INTERVAL_MS=0. ORRERY_* variables of this
    /// process are inherited too.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    envs: Vec<String>,
    /// Data directory: with --spawn, use it instead of a fresh temporary
    /// one; without, the server's, for `orrery stats` in --verify.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data directory of --spawn.
    #[arg(long)]
    keep: bool,

    /// After the run, check stored events == events acknowledged with 2xx;
    /// exit 1 on mismatch.
    #[arg(long)]
    verify: bool,
    /// orrery binary for `orrery stats --json` (--verify without --spawn).
    #[arg(long, value_name = "ORRERY_BIN")]
    orrery: Option<PathBuf>,
    /// Secret key (sk_...) to count events through the events API
    /// (--verify without --spawn or --orrery).
    #[arg(long)]
    secret_key: Option<String>,
    /// Project id for counting through the events API.
    #[arg(long)]
    project_id: Option<String>,
    /// PID of the server, for CPU accounting without --spawn.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also account the CPU of all processes with this command name over
    /// the window, e.g. `postgres` (repeatable).
    #[arg(long, value_name = "COMM")]
    cpu_of: Vec<String>,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,

    /// Set the project's pipeline before the load: a JSON array of stages,
    /// e.g. '[{"plugin":"ip_hash"}]' (needs the secret key: --spawn, or
    /// --secret-key and --project-id).
    #[arg(long, value_name = "JSON")]
    stages: Option<String>,
    /// Send `X-Forwarded-For: IP` (the spawned server must trust 127.0.0.1:
    /// --env 'ORRERY_HTTP__TRUSTED_PROXIES=["127.0.0.1"]'), e.g. a public
    /// address so that geoip has work to do.
    #[arg(long, value_name = "IP")]
    forwarded_for: Option<String>,
    /// Leave out `session_id`, so that the `session` plugin assigns one.
    #[arg(long)]
    no_session_id: bool,
    /// The events' name (letters, digits, `_`, `-`, `$`).
    #[arg(long, default_value = "pageview", value_parser = event_name)]
    event: String,
    /// Give the events client timestamps spread over the last N hours
    /// (late events, which the rollup job must redo their hours for); 0
    /// sends none (the server's time).
    #[arg(long, default_value_t = 0)]
    spread_hours: u64,
    /// Event ids: `v4` (random per run, a counter per worker: as many
    /// insertion points in the `(project_id, id)` index as workers) or `v7`
    /// (time-ordered, as SDKs that send UUIDv7 do: appended at the end).
    #[arg(long, value_enum, default_value_t = IdKind::V4)]
    ids: IdKind,
    /// The body's shape and its endpoint: Orrery's own, or one of the
    /// drop-in compatibility endpoints with the same events in that
    /// system's fields (plausible: one event per request; with --spawn the
    /// domain `loadgen.example` is mapped to the project).
    #[arg(long, value_enum, default_value_t = Format::Native)]
    format: Format,
}

/// The wire format of the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `POST /api/v1/events`.
    Native,
    /// PostHog's `POST /batch/` (`{"api_key", "batch"}`).
    Posthog,
    /// Plausible's `POST /api/event` (one event).
    Plausible,
    /// Bilan's `POST /api/events` (`{"events"}`, Bearer key).
    Bilan,
    /// Seed 004's `POST /api/v1/events/ingest` (`{"events"}`).
    Product,
}

impl Format {
    fn path(self) -> &'static str {
        match self {
            Self::Native => "/api/v1/events",
            Self::Posthog => "/batch/",
            Self::Plausible => "/api/event",
            Self::Bilan => "/api/events",
            Self::Product => "/api/v1/events/ingest",
        }
    }

    /// The header carrying the key.
    fn key_header(self, key: &str) -> String {
        match self {
            Self::Bilan => format!("Authorization: Bearer {key}"),
            Self::Posthog | Self::Plausible => String::new(),
            Self::Native | Self::Product => format!("X-API-Key: {key}"),
        }
    }
}

fn main() {
    let args = Args::parse();
    match run_main(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(err) => {
            eprintln!("orrery-loadgen: error: {err:#}");
            std::process::exit(2);
        }
    }
}

/// Returns whether the verification passed (true when not asked).
fn run_main(args: Args) -> Result<bool> {
    if args.concurrency == 0 || args.batch == 0 {
        bail!("--concurrency and --batch must be at least 1");
    }
    if args.format == Format::Plausible && args.batch != 1 {
        bail!("--format plausible sends one event per request: --batch 1");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async_main(args))
}

async fn async_main(args: Args) -> Result<bool> {
    let mut server = match &args.spawn {
        Some(bin) => Some(spawn(bin, &args).await?),
        None => None,
    };
    let result = drive(&args, server.as_ref()).await;
    let (mut ok, last_count) = match result {
        Ok(r) => r,
        Err(err) => {
            if let Some(s) = server.as_mut() {
                s.kill9();
            }
            return Err(err);
        }
    };
    if let Some(s) = server.as_mut() {
        let graceful = s.stop(Duration::from_secs(30)).is_some();
        if !graceful {
            println!("server did not stop gracefully");
        }
        if let Some(expected) = last_count.filter(|_| ok) {
            // The count again with the server stopped: nothing may change.
            let after = s.stored_events()?;
            if after != expected {
                println!("verify after shutdown: stored {after}, expected {expected} -> FAIL");
                ok = false;
            } else {
                println!("verify after shutdown: stored {after} -> PASS");
            }
        }
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------
// The run

/// Counters of one worker.
#[derive(Debug, Default)]
struct WorkerStats {
    /// Latencies (µs) of 2xx answers completed in the measured window.
    lat_us: Vec<u32>,
    /// 2xx answers in the measured window.
    ok_requests: u64,
    /// Events of those answers.
    ok_events: u64,
    /// Events in 2xx-answered requests, whole run (each request body is
    /// acknowledged at most once: its ids are fresh).
    acked_events: u64,
    /// `accepted` summed over 2xx answers, whole run.
    accepted: u64,
    /// `duplicates` summed over 2xx answers (retries of requests whose
    /// answer was lost), whole run.
    duplicates: u64,
    /// 2xx answers whose accepted + duplicates differed from the events sent.
    short_answers: u64,
    /// 503 answers, whole run.
    unavailable: u64,
    /// Transport errors and timeouts, whole run.
    errors: u64,
    /// Other statuses, whole run.
    other_status: u64,
    /// Events of requests left in doubt at the end (sent, no answer).
    in_doubt_events: u64,
    /// First few error messages.
    samples: Vec<String>,
}

impl WorkerStats {
    fn sample(&mut self, msg: String) {
        if self.samples.len() < 3 {
            self.samples.push(msg);
        }
    }
}

/// Times shared by all workers.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_start: Instant,
    end: Instant,
}

/// What one answer said.
struct Answer {
    status: u16,
    accepted: u64,
    duplicates: u64,
}

/// The kind of event id sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdKind {
    /// Version 4 layout: run-random high bits, worker and counter.
    V4,
    /// Version 7: milliseconds since the epoch, then worker and counter.
    V7,
}

/// Makes unique event ids without a system call per id: 60 random bits per
/// run, then the worker number and a counter, formatted as a version-4 UUID.
struct IdGen {
    kind: IdKind,
    hi: u64,
    lo_base: u64,
    counter: u64,
}

impl IdGen {
    fn new(run: Uuid, worker: usize, kind: IdKind) -> Self {
        let (hi, _) = run.as_u64_pair();
        Self {
            kind,
            hi: (hi & !0xF000) | 0x4000,
            lo_base: 0x8000_0000_0000_0000 | ((worker as u64 & 0x3_FFFF) << 44),
            counter: 0,
        }
    }

    fn next(&mut self) -> Uuid {
        self.counter += 1;
        let hi = match self.kind {
            IdKind::V4 => self.hi,
            IdKind::V7 => {
                // 48 bits of milliseconds, version 7, 12 random-ish bits
                // from the run (ids stay unique by worker and counter).
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                (ms << 16) | 0x7000 | (self.hi & 0x0FFF)
            }
        };
        Uuid::from_u64_pair(hi, self.lo_base | (self.counter & 0xFFF_FFFF_FFFF))
    }
}

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                  Chrome/126.0 Safari/537.36 orrery-loadgen";

fn event_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-$".contains(c));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 200 of letters, digits, `_`, `-` and `$`".to_owned())
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("a positive number of requests per second".to_owned()),
    }
}

/// A request body with fixed-width slots for the event ids.
struct Body {
    bytes: Vec<u8>,
    id_offsets: Vec<usize>,
}

impl Body {
    fn new(args: &Args, worker: usize, key: &str) -> Self {
        let (batch, format) = (args.batch, args.format);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut bytes = Vec::with_capacity(batch * 260 + 16);
        let mut id_offsets = Vec::with_capacity(batch);
        let (open, close) = match format {
            Format::Native => ("{\"batch\":[".to_owned(), "]}"),
            Format::Posthog => (format!("{{\"api_key\":\"{key}\",\"batch\":["), "]}"),
            Format::Bilan | Format::Product => ("{\"events\":[".to_owned(), "]}"),
            Format::Plausible => (String::new(), ""),
        };
        let wrapped = batch > 1 || format == Format::Posthog;
        if wrapped {
            bytes.extend_from_slice(open.as_bytes());
        }
        for i in 0..batch {
            if i > 0 {
                bytes.push(b',');
            }
            let event = &args.event;
            let url = format!("https://example.test/docs/page-{}", i % 50);
            let referrer = "https://www.google.com/";
            let user = format!("user-{}", (worker * 1000 + i) % 5000);
            let props = format!("\"plan\":\"free\",\"variant\":\"v{}\",\"n\":{i}", i % 2);
            let session = (!args.no_session_id).then(|| format!("s-{worker}-{}", i % 10));
            // An hour ago or more (whole past hours), a different one per
            // event.
            let at = (args.spread_hours > 0).then(|| {
                now_ms - (1 + (worker * 31 + i * 7) as u64 % args.spread_hours) * 3_600_000
            });
            let (name_field, id_field) = match format {
                Format::Native => ("event", "id"),
                Format::Posthog => ("event", "uuid"),
                Format::Bilan => ("event_type", "event_id"),
                Format::Product => ("event_name", "id"),
                Format::Plausible => ("n", ""),
            };
            let _ = write!(bytes, "{{\"{name_field}\":\"{event}\"");
            if !id_field.is_empty() {
                let _ = write!(bytes, ",\"{id_field}\":\"");
                id_offsets.push(bytes.len());
                bytes.extend_from_slice(Uuid::nil().hyphenated().to_string().as_bytes());
                bytes.push(b'"');
            }
            match format {
                Format::Native | Format::Product => {
                    let url_field = if format == Format::Native {
                        "url"
                    } else {
                        "page_url"
                    };
                    let _ = write!(
                        bytes,
                        ",\"{url_field}\":\"{url}\",\"referrer\":\"{referrer}\",\"distinct_id\":\"{user}\",\"properties\":{{{props}}}"
                    );
                    if let Some(s) = &session {
                        let _ = write!(bytes, ",\"session_id\":\"{s}\"");
                    }
                }
                Format::Posthog => {
                    let _ = write!(
                        bytes,
                        ",\"distinct_id\":\"{user}\",\"properties\":{{\"$current_url\":\"{url}\",\"$referrer\":\"{referrer}\",\"$lib\":\"web\",{props}"
                    );
                    if let Some(s) = &session {
                        let _ = write!(bytes, ",\"$session_id\":\"{s}\"");
                    }
                    bytes.push(b'}');
                }
                Format::Bilan => {
                    let _ = write!(
                        bytes,
                        ",\"user_id\":\"{user}\",\"turn_id\":\"t-{i}\",\"properties\":{{\"url\":\"{url}\",{props}}}"
                    );
                    if let Some(s) = &session {
                        let _ = write!(bytes, ",\"session_id\":\"{s}\"");
                    }
                }
                Format::Plausible => {
                    let _ = write!(
                        bytes,
                        ",\"u\":\"{url}\",\"d\":\"loadgen.example\",\"r\":\"{referrer}\",\"p\":{{{props}}}"
                    );
                }
            }
            if let Some(at) = at {
                let _ = write!(bytes, ",\"timestamp\":{at}");
            }
            bytes.push(b'}');
        }
        if wrapped {
            bytes.extend_from_slice(close.as_bytes());
        }
        Self { bytes, id_offsets }
    }

    /// Gives every event a fresh id.
    fn refresh(&mut self, ids: &mut IdGen) {
        for &off in &self.id_offsets {
            ids.next()
                .hyphenated()
                .encode_lower(&mut self.bytes[off..off + 36]);
        }
    }
}

/// gzip with a reused compressor (no allocation per request).
struct Gzip {
    enc: DeflateEncoder<Vec<u8>>,
    out: Vec<u8>,
}

impl Gzip {
    fn new() -> Self {
        Self {
            enc: DeflateEncoder::new(Vec::new(), Compression::fast()),
            out: Vec::new(),
        }
    }

    fn compress(&mut self, data: &[u8]) -> std::io::Result<&[u8]> {
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(&HEADER);
        let _ = self.enc.reset(out)?;
        self.enc.write_all(data)?;
        self.enc.try_finish()?;
        let mut out = self.enc.reset(Vec::new())?;
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out = out;
        Ok(&self.out)
    }
}

/// Where to send and how.
#[derive(Debug, Clone)]
struct Target {
    /// host:port
    authority: String,
    /// Base URL without a trailing slash.
    base: String,
    key: String,
    /// Extra header lines, each ending in CRLF.
    extra: String,
    format: Format,
}

impl Target {
    fn new(url: &str, key: &str, forwarded_for: Option<&str>, format: Format) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must start with http:// (got {url})"))?;
        let host = rest.split('/').next().unwrap_or(rest);
        let authority = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Self {
            authority,
            base,
            key: key.to_owned(),
            extra: forwarded_for
                .map(|ip| format!("X-Forwarded-For: {ip}\r\n"))
                .unwrap_or_default(),
            format,
        })
    }

    fn head(&self, content_length: usize, gzip: bool) -> String {
        let key = self.format.key_header(&self.key);
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n{key}{}\
             Content-Type: application/json\r\nUser-Agent: {UA}\r\n{}{}Content-Length: {content_length}\r\n\r\n",
            self.format.path(),
            self.authority,
            if key.is_empty() { "" } else { "\r\n" },
            self.extra,
            if gzip {
                "Content-Encoding: gzip\r\n"
            } else {
                ""
            },
        )
    }
}

/// One keep-alive HTTP/1.1 connection.
struct RawConn {
    authority: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl RawConn {
    fn new(authority: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Sends `parts` as one request and reads the answer. On any error the
    /// connection is dropped (the next request reconnects).
    async fn request(&mut self, parts: &[&[u8]]) -> Result<Answer> {
        let out = self.exchange(parts).await;
        if out.is_err() {
            self.stream = None;
        }
        out
    }

    async fn exchange(&mut self, parts: &[&[u8]]) -> Result<Answer> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected above");
        for part in parts {
            stream.write_all(part).await?;
        }
        self.buf.clear();
        let mut scanned: usize = 0;
        let head_end = loop {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed before the answer");
            }
            if let Some(p) = find(&self.buf[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                break scanned.saturating_sub(3) + p + 4;
            }
            scanned = self.buf.len();
        };
        let head = &self.buf[..head_end];
        if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
            bail!("not an HTTP answer");
        }
        let status = std::str::from_utf8(&head[9..12])?.parse::<u16>()?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = std::str::from_utf8(&line[colon + 1..])?.trim();
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if let Some(len) = content_length {
            let want = head_end + len;
            while self.buf.len() < want {
                self.buf.reserve(want - self.buf.len());
                if stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("connection closed in the body");
                }
            }
        } else if chunked {
            // Good enough for this server: no trailers.
            while !self.buf.ends_with(b"0\r\n\r\n") {
                self.buf.reserve(16 * 1024);
                if stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("connection closed in the body");
                }
            }
        } else {
            close = true;
            loop {
                self.buf.reserve(16 * 1024);
                if stream.read_buf(&mut self.buf).await? == 0 {
                    break;
                }
            }
        }
        let body = &self.buf[head_end..];
        let answer = Answer {
            status,
            accepted: json_count(body, b"\"accepted\":"),
            duplicates: json_count(body, b"\"duplicates\":"),
        };
        if close {
            self.stream = None;
        }
        Ok(answer)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The number after `key` in a JSON text, 0 when absent.
fn json_count(body: &[u8], key: &[u8]) -> u64 {
    let Some(p) = find(body, key) else {
        return 0;
    };
    body[p + key.len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'))
}

/// The hot-path client of one worker.
enum Sender {
    Raw {
        conn: RawConn,
        /// Head + body when not compressed, patched in place.
        request: Vec<u8>,
        body_start: usize,
    },
    Reqwest {
        client: reqwest::Client,
        url: String,
    },
}

struct Worker {
    sender: Sender,
    body: Body,
    gzip: Option<Gzip>,
    head: Vec<u8>,
    target: Arc<Target>,
    ids: IdGen,
    timeout: Duration,
}

impl Worker {
    fn new(
        args: &Args,
        target: &Arc<Target>,
        run: Uuid,
        n: usize,
        pool: Option<&reqwest::Client>,
    ) -> Self {
        let body = Body::new(args, n, &target.key);
        let sender = match pool {
            None => {
                let mut request = target.head(body.bytes.len(), false).into_bytes();
                let body_start = request.len();
                request.extend_from_slice(&body.bytes);
                Sender::Raw {
                    conn: RawConn::new(&target.authority),
                    request,
                    body_start,
                }
            }
            Some(client) => Sender::Reqwest {
                client: client.clone(),
                url: format!("{}{}", target.base, target.format.path()),
            },
        };
        Self {
            sender,
            body,
            gzip: args.gzip.then(Gzip::new),
            head: Vec::with_capacity(512),
            target: Arc::clone(target),
            ids: IdGen::new(run, n, args.ids),
            timeout: Duration::from_secs(args.timeout.max(1)),
        }
    }

    fn refresh(&mut self) {
        self.body.refresh(&mut self.ids);
        if let Sender::Raw {
            request,
            body_start,
            ..
        } = &mut self.sender
        {
            request[*body_start..].copy_from_slice(&self.body.bytes);
        }
    }

    async fn send(&mut self) -> Result<Answer> {
        let limit = self.timeout;
        match tokio::time::timeout(limit, self.send_inner()).await {
            Ok(r) => r,
            Err(_) => {
                if let Sender::Raw { conn, .. } = &mut self.sender {
                    conn.stream = None;
                }
                bail!("no answer within {limit:?}")
            }
        }
    }

    async fn send_inner(&mut self) -> Result<Answer> {
        match &mut self.sender {
            Sender::Raw { conn, request, .. } => match &mut self.gzip {
                None => conn.request(&[request]).await,
                Some(gz) => {
                    let compressed = gz.compress(&self.body.bytes)?;
                    self.head.clear();
                    self.head
                        .extend_from_slice(self.target.head(compressed.len(), true).as_bytes());
                    conn.request(&[&self.head, compressed]).await
                }
            },
            Sender::Reqwest { client, url } => {
                let mut req = client
                    .post(url.as_str())
                    .header("X-API-Key", &self.target.key)
                    .header("Authorization", format!("Bearer {}", self.target.key))
                    .header("Content-Type", "application/json")
                    .header("User-Agent", UA);
                req = match &mut self.gzip {
                    None => req.body(self.body.bytes.clone()),
                    Some(gz) => req
                        .header("Content-Encoding", "gzip")
                        .body(gz.compress(&self.body.bytes)?.to_vec()),
                };
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await?;
                Ok(Answer {
                    status,
                    accepted: json_count(&bytes, b"\"accepted\":"),
                    duplicates: json_count(&bytes, b"\"duplicates\":"),
                })
            }
        }
    }
}

/// Sends until the end of the window; a request answered 503 or failed is
/// resent with the same ids (a 503 stored nothing; a failure may have
/// stored, and the resend settles it as accepted or duplicate).
async fn worker_loop(
    mut w: Worker,
    window: Window,
    events: u64,
    backoff: Duration,
    pace: Option<Duration>,
) -> WorkerStats {
    let mut next_send = Instant::now();
    let mut st = WorkerStats {
        lat_us: Vec::with_capacity(1 << 16),
        ..WorkerStats::default()
    };
    let mut pending = false;
    let mut in_doubt = false;
    let mut settle_tries = 0u32;
    loop {
        let now = Instant::now();
        if now >= window.end {
            if !pending || !in_doubt {
                break;
            }
            settle_tries += 1;
            if settle_tries > 20 {
                st.in_doubt_events += events;
                break;
            }
        }
        if !pending {
            if let Some(period) = pace {
                // Paced: a new request no sooner than one period after the
                // last one was due (no catching up after a slow answer).
                tokio::time::sleep_until(next_send.into()).await;
                next_send = next_send.max(Instant::now() - period) + period;
                if Instant::now() >= window.end {
                    break;
                }
            }
            w.refresh();
            pending = true;
            in_doubt = false;
        }
        let started = Instant::now();
        match w.send().await {
            Ok(a) if (200..300).contains(&a.status) => {
                let done = Instant::now();
                pending = false;
                st.acked_events += events;
                st.accepted += a.accepted;
                st.duplicates += a.duplicates;
                if a.accepted + a.duplicates != events {
                    st.short_answers += 1;
                }
                if done >= window.measure_start && done <= window.end {
                    st.ok_requests += 1;
                    st.ok_events += events;
                    let us = done.duration_since(started).as_micros();
                    st.lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(a) if a.status == 503 => {
                st.unavailable += 1;
                tokio::time::sleep(backoff).await;
            }
            Ok(a) => {
                st.other_status += 1;
                st.sample(format!("HTTP {}", a.status));
                if a.status >= 500 {
                    in_doubt = true;
                    tokio::time::sleep(backoff).await;
                } else {
                    // 4xx: refused, nothing stored; go on with new ids.
                    pending = false;
                }
            }
            Err(err) => {
                st.errors += 1;
                st.sample(format!("{err:#}"));
                in_doubt = true;
                tokio::time::sleep(backoff).await;
            }
        }
    }
    st
}

/// Summary of a run.
#[derive(Debug, Default)]
struct Report {
    requests: u64,
    events: u64,
    seconds: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    unavailable: u64,
    errors: u64,
    other_status: u64,
    acked_events: u64,
    accepted: u64,
    duplicates: u64,
    short_answers: u64,
    in_doubt_events: u64,
}

/// The `p` quantile of latencies in µs, in ms (0 when there are none).
fn percentile(sorted: &[u32], p: f64) -> f64 {
    orrery_tests::percentile(sorted, p).map_or(0.0, |us| f64::from(us) / 1000.0)
}

/// CPU seconds (user, system) of a process.
fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses; utime and stime are
    // the 14th and 15th fields, in clock ticks (USER_HZ = 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / 100.0, stime / 100.0))
}

/// CPU seconds (user + system) of all processes named `comm`.
fn cpu_of_comm(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .filter_map(cpu_times)
        .map(|(u, s)| u + s)
        .sum()
}

/// Writer metrics from /metrics (sums and counts of the histograms).
#[derive(Debug, Default, Clone, Copy)]
struct WriterMetrics {
    batch_sum: f64,
    batch_count: f64,
    commit_sum: f64,
    commit_count: f64,
}

async fn writer_metrics(http: &reqwest::Client, base: &str) -> Option<WriterMetrics> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut m = WriterMetrics::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "orrery_writer_batch_size_sum" => m.batch_sum = v,
            "orrery_writer_batch_size_count" => m.batch_count = v,
            "orrery_writer_commit_duration_seconds_sum" => m.commit_sum = v,
            "orrery_writer_commit_duration_seconds_count" => m.commit_count = v,
            _ => {}
        }
    }
    Some(m)
}

/// Runs the load; returns whether verification passed (true if not asked)
/// and the stored count of the verification.
async fn drive(args: &Args, server: Option<&Server>) -> Result<(bool, Option<u64>)> {
    let (url, key) = match server {
        Some(s) => (s.base.clone(), s.keys.public_key.clone()),
        None => (
            args.url.clone().expect("clap requires --url"),
            args.key.clone().expect("clap requires --key"),
        ),
    };
    let target = Arc::new(Target::new(
        &url,
        &key,
        args.forwarded_for.as_deref(),
        args.format,
    )?);
    let server_pid = server.and_then(Server::pid).or(args.server_pid);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    if let Some(stages) = &args.stages {
        set_pipeline(&http, &target, args, server, stages).await?;
    }
    let counter = Counter::new(args, server, &target);
    let baseline = if args.verify {
        Some(counter.count(&http).await?)
    } else {
        None
    };

    let pool = match args.client {
        ClientKind::Raw => None,
        ClientKind::Reqwest => Some(
            reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .tcp_nodelay(true)
                .no_gzip()
                .timeout(Duration::from_secs(args.timeout.max(1)))
                .build()?,
        ),
    };
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let window = Window {
        measure_start,
        end: measure_start + Duration::from_secs_f64(args.duration.max(0.1)),
    };
    let run = Uuid::new_v4();
    let backoff = Duration::from_millis(args.retry_backoff_ms);
    let events = args.batch as u64;
    let pace = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.concurrency as f64 / rate));
    let mut handles = Vec::with_capacity(args.concurrency);
    for n in 0..args.concurrency {
        let w = Worker::new(args, &target, run, n, pool.as_ref());
        handles.push(tokio::spawn(worker_loop(w, window, events, backoff, pace)));
    }
    eprintln!(
        "orrery-loadgen: {} workers, batch {}, warmup {:.1}s, measuring {:.1}s against {}",
        args.concurrency, args.batch, args.warmup, args.duration, target.base
    );

    tokio::time::sleep_until(window.measure_start.into()).await;
    let cpu0 = (
        cpu_times(std::process::id()),
        server_pid.and_then(cpu_times),
    );
    let others0: Vec<f64> = args.cpu_of.iter().map(|c| cpu_of_comm(c)).collect();
    let m0 = writer_metrics(&http, &target.base).await;
    let t0 = Instant::now();
    tokio::time::sleep_until(window.end.into()).await;
    let cpu1 = (
        cpu_times(std::process::id()),
        server_pid.and_then(cpu_times),
    );
    let others1: Vec<f64> = args.cpu_of.iter().map(|c| cpu_of_comm(c)).collect();
    let wall = t0.elapsed().as_secs_f64();
    let m1 = writer_metrics(&http, &target.base).await;

    let mut all = Vec::with_capacity(args.concurrency);
    for h in handles {
        all.push(h.await?);
    }
    let mut lat: Vec<u32> = Vec::with_capacity(all.iter().map(|s| s.lat_us.len()).sum());
    let mut rep = Report {
        seconds: args.duration.max(0.1),
        ..Report::default()
    };
    let mut samples = Vec::new();
    for s in &mut all {
        lat.append(&mut s.lat_us);
        rep.requests += s.ok_requests;
        rep.events += s.ok_events;
        rep.unavailable += s.unavailable;
        rep.errors += s.errors;
        rep.other_status += s.other_status;
        rep.acked_events += s.acked_events;
        rep.accepted += s.accepted;
        rep.duplicates += s.duplicates;
        rep.short_answers += s.short_answers;
        rep.in_doubt_events += s.in_doubt_events;
        for m in s.samples.drain(..) {
            if samples.len() < 5 {
                samples.push(m);
            }
        }
    }
    lat.sort_unstable();
    rep.p50_ms = percentile(&lat, 0.50);
    rep.p90_ms = percentile(&lat, 0.90);
    rep.p99_ms = percentile(&lat, 0.99);
    rep.p999_ms = percentile(&lat, 0.999);
    rep.max_ms = lat.last().map_or(0.0, |&v| f64::from(v) / 1000.0);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "config: cores={cores} client={:?} threads={} concurrency={} batch={} gzip={} warmup={}s duration={}s",
        args.client,
        args.threads,
        args.concurrency,
        args.batch,
        args.gzip,
        args.warmup,
        args.duration
    );
    println!(
        "throughput: {:.0} events/s, {:.0} requests/s ({} events in {} requests)",
        rep.events as f64 / rep.seconds,
        rep.requests as f64 / rep.seconds,
        rep.events,
        rep.requests
    );
    println!(
        "latency (2xx): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        rep.p50_ms, rep.p90_ms, rep.p99_ms, rep.p999_ms, rep.max_ms
    );
    println!(
        "503: {}, errors: {}, other statuses: {}",
        rep.unavailable, rep.errors, rep.other_status
    );
    for s in &samples {
        println!("  e.g. {s}");
    }
    let mut cpu_line = Vec::new();
    if let ((Some(g0), _), (Some(g1), _)) = (cpu0, cpu1) {
        cpu_line.push(format!(
            "loadgen {:.0}% (user {:.0}%, sys {:.0}%)",
            100.0 * (g1.0 + g1.1 - g0.0 - g0.1) / wall,
            100.0 * (g1.0 - g0.0) / wall,
            100.0 * (g1.1 - g0.1) / wall
        ));
    }
    let window_events = rep.events.max(1) as f64;
    if let ((_, Some(s0)), (_, Some(s1))) = (cpu0, cpu1) {
        let used = s1.0 + s1.1 - s0.0 - s0.1;
        cpu_line.push(format!(
            "server {:.0}% (user {:.0}%, sys {:.0}%; {:.1} µs CPU/event)",
            100.0 * used / wall,
            100.0 * (s1.0 - s0.0) / wall,
            100.0 * (s1.1 - s0.1) / wall,
            1e6 * used / window_events
        ));
    }
    for ((comm, a), b) in args.cpu_of.iter().zip(&others0).zip(&others1) {
        cpu_line.push(format!(
            "{comm} {:.0}% ({:.1} µs CPU/event)",
            100.0 * (b - a) / wall,
            1e6 * (b - a) / window_events
        ));
    }
    if !cpu_line.is_empty() {
        println!(
            "cpu over the window (100% = one core of {cores}): {}",
            cpu_line.join(", ")
        );
    }
    if let (Some(a), Some(b)) = (m0, m1) {
        let commits = b.batch_count - a.batch_count;
        if commits > 0.0 {
            let commit_s = b.commit_sum - a.commit_sum;
            println!(
                "writer: {commits:.0} commits ({:.0}/s), {:.1} events/commit, {:.2} ms/commit, busy {:.0}% of the window",
                commits / wall,
                (b.batch_sum - a.batch_sum) / commits,
                1000.0 * commit_s / (b.commit_count - a.commit_count).max(1.0),
                100.0 * commit_s / wall
            );
        }
    }
    println!(
        "acknowledged (whole run incl. warmup): {} events in 2xx answers; accepted {}, duplicates {}, short answers {}, in doubt {}",
        rep.acked_events, rep.accepted, rep.duplicates, rep.short_answers, rep.in_doubt_events
    );

    let mut ok = true;
    let mut verdict = serde_json::Value::Null;
    let mut last_count = None;
    if let Some(before) = baseline {
        let after = counter.count(&http).await?;
        let stored = after.saturating_sub(before);
        let pass = stored == rep.acked_events && rep.short_answers == 0;
        ok = pass;
        println!(
            "verify: stored {stored} (count {before} -> {after}), acknowledged {} -> {}",
            rep.acked_events,
            if pass { "PASS" } else { "FAIL" }
        );
        if !pass && rep.in_doubt_events > 0 {
            println!(
                "  note: {} events were sent without an answer and may or may not be stored",
                rep.in_doubt_events
            );
        }
        verdict = serde_json::json!({"stored": stored, "pass": pass});
        last_count = Some(after);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "cores": cores, "concurrency": args.concurrency, "batch": args.batch,
                "gzip": args.gzip, "client": format!("{:?}", args.client).to_lowercase(),
                "duration_s": rep.seconds,
                "events_per_s": rep.events as f64 / rep.seconds,
                "requests_per_s": rep.requests as f64 / rep.seconds,
                "p50_ms": rep.p50_ms, "p90_ms": rep.p90_ms, "p99_ms": rep.p99_ms,
                "p999_ms": rep.p999_ms, "max_ms": rep.max_ms,
                "status_503": rep.unavailable, "errors": rep.errors,
                "other_status": rep.other_status, "acked_events": rep.acked_events,
                "verify": verdict,
            })
        );
    }
    Ok((ok, last_count))
}

// ---------------------------------------------------------------------------
// Counting stored events

enum Counter {
    Cli {
        bin: PathBuf,
        data_dir: Option<PathBuf>,
        database_url: Option<String>,
    },
    Api {
        base: String,
        secret: String,
        project: String,
    },
    None,
}

impl Counter {
    fn new(args: &Args, server: Option<&Server>, target: &Target) -> Self {
        if let Some(s) = server {
            return Self::Cli {
                bin: s.bin().to_owned(),
                data_dir: Some(s.data_dir.clone()),
                database_url: args.database_url.clone(),
            };
        }
        if let Some(bin) = &args.orrery {
            return Self::Cli {
                bin: bin.clone(),
                data_dir: args.data_dir.clone(),
                database_url: args.database_url.clone(),
            };
        }
        if let (Some(secret), Some(project)) = (&args.secret_key, &args.project_id) {
            return Self::Api {
                base: target.base.clone(),
                secret: secret.clone(),
                project: project.clone(),
            };
        }
        Self::None
    }

    async fn count(&self, http: &reqwest::Client) -> Result<u64> {
        match self {
            Self::Cli {
                bin,
                data_dir,
                database_url,
            } => stats_events(bin, data_dir.as_deref(), database_url.as_deref()),
            Self::Api {
                base,
                secret,
                project,
            } => {
                let mut total = 0u64;
                let mut cursor: Option<String> = None;
                loop {
                    let mut req = http
                        .get(format!("{base}/api/v1/projects/{project}/events"))
                        .header("X-API-Key", secret)
                        .query(&[("limit", "1000")]);
                    if let Some(c) = &cursor {
                        req = req.query(&[("cursor", c.as_str())]);
                    }
                    let page: serde_json::Value =
                        req.send().await?.error_for_status()?.json().await?;
                    total += page["events"].as_array().map_or(0, Vec::len) as u64;
                    match page["next_cursor"].as_str() {
                        Some(c) => cursor = Some(c.to_owned()),
                        None => break,
                    }
                }
                Ok(total)
            }
            Self::None => bail!(
                "--verify needs a way to count stored events: --spawn, --orrery (with --data-dir / \
                 --database-url), or --secret-key with --project-id"
            ),
        }
    }
}

fn orrery_command(bin: &Path, data_dir: Option<&Path>, database_url: Option<&str>) -> Command {
    let mut cmd = Command::new(bin);
    if let Some(dir) = data_dir {
        cmd.arg("--data-dir").arg(dir);
    }
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd
}

/// The last line of `stdout` that is a JSON object.
fn json_line(stdout: &[u8]) -> Result<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON in the output: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

fn stats_events(bin: &Path, data_dir: Option<&Path>, database_url: Option<&str>) -> Result<u64> {
    let out = orrery_command(bin, data_dir, database_url)
        .args(["stats", "--json"])
        .env("ORRERY_LOG__FILTER", "error")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} stats", bin.display()))?;
    if !out.status.success() {
        bail!("orrery stats failed: {}", out.status);
    }
    json_line(&out.stdout)?["events"]
        .as_u64()
        .ok_or_else(|| anyhow!("orrery stats --json has no events count"))
}

// ---------------------------------------------------------------------------
// --spawn

/// PUTs the project's pipeline stages.
async fn set_pipeline(
    http: &reqwest::Client,
    target: &Target,
    args: &Args,
    server: Option<&Server>,
    stages: &str,
) -> Result<()> {
    let stages: serde_json::Value = serde_json::from_str(stages).context("--stages is not JSON")?;
    let (secret, project) = match server {
        Some(s) => (s.keys.secret_key.clone(), s.keys.project_id.clone()),
        None => (
            args.secret_key
                .clone()
                .ok_or_else(|| anyhow!("--stages needs --secret-key"))?,
            args.project_id
                .clone()
                .ok_or_else(|| anyhow!("--stages needs --project-id"))?,
        ),
    };
    let resp = http
        .put(format!(
            "{}/api/v1/projects/{project}/pipeline",
            target.base
        ))
        .header("X-API-Key", secret)
        .json(&serde_json::json!({ "stages": stages }))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("setting the pipeline failed: {status} {body}");
    }
    println!("pipeline: {stages}");
    Ok(())
}

/// Starts `bin` on a fresh (or the given) data directory and database
/// through the test harness's [`Server`], with `--env` and this process's
/// `ORRERY_*` variables.
async fn spawn(bin: &Path, args: &Args) -> Result<Server> {
    if args.create_db {
        let url = args
            .database_url
            .as_deref()
            .ok_or_else(|| anyhow!("--create-db needs a postgres --database-url"))?;
        create_database(url).await?;
    }
    let env = args
        .envs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--env wants KEY=VALUE, got {kv}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let server = Server::launch(Options {
        bin: Some(bin.to_owned()),
        data_dir: args.data_dir.clone(),
        keep_data: args.keep,
        database_url: args.database_url.clone(),
        env,
        inherit_orrery_env: true,
        echo_stdout: true,
    })
    .await?;
    let mut server = server;
    if args.format == Format::Plausible {
        let domains = env_map(&[("loadgen.example", &server.keys.project_id)]);
        server.restart_with_env(&[("ORRERY_COMPAT__PLAUSIBLE_DOMAINS", &domains)]);
    }
    eprintln!(
        "orrery-loadgen: spawned orrery (pid {}) at {}, data dir {}{}",
        server.pid().unwrap_or_default(),
        server.base,
        server.data_dir.display(),
        args.database_url
            .as_deref()
            .map(|u| format!(", database {u}"))
            .unwrap_or_default()
    );
    Ok(server)
}

/// Drops and creates the database named by a PostgreSQL URL.
async fn create_database(url: &str) -> Result<()> {
    use sqlx::Connection as _;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--create-db works with postgres:// URLs only");
    }
    let (base, rest) = url
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("no database name in {url}"))?;
    let name = rest.split('?').next().unwrap_or(rest);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("database name {name:?} must be letters, digits and _");
    }
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .with_context(|| format!("connecting to {base}/postgres"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
