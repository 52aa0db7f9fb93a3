//! The Python plugin host: a `.py` file defining `process(event)` (and
//! optionally `configure(config)`), run in the sandbox's Python workers
//! (`orrery_sandbox::python`: restricted builtins and imports, rlimits,
//! seccomp, namespaces) under the plugin's [`PluginLimits`].
//!
//! **Workers.** A worker is one long-lived sandbox execution of the
//! plugin's source followed by a small driver ([`DRIVER`]). The host talks
//! to it over its stdin and stdout, one JSON line each way:
//!
//! 1. the host writes the config (a JSON object); the driver calls
//!    `configure(config)` when the plugin defines it and answers
//!    `{"ready":true}`, `{"config_error":"..."}` (it raised) or
//!    `{"error":"..."}` (no `process`);
//! 2. per batch, the host writes the events as a JSON array (the keys of
//!    the WIT event record, with `_` for `-`; `properties` and `enrichment`
//!    are objects); the driver calls `process` on each and answers an
//!    array of `{"keep":event}` (a dict was returned), `{"drop":reason}`
//!    (`None` was returned) or `{"fail":error}` (it raised, or returned
//!    something else, or an event that is not JSON): one per event, in
//!    order. An exception fails its own event only.
//!
//! Answer lines start with [`MARK`] after a newline; every other line the
//! plugin prints is its log (rate-limited, under the plugin's name in the
//! gateway's log).
//!
//! **Limits.** Each batch must be answered within the plugin's
//! `wall_time_ms` (lowered by the stage's timeout); the worker's address
//! space is capped at `memory_bytes` (over the interpreter's baseline). A
//! worker that runs past its deadline, hits its memory cap, dies, or
//! answers something unusable is killed, its fault counted and recorded by
//! the plugin's [`Breaker`], its batch failed (the stage's `on_error`
//! applies) and a fresh worker serves the next batch. Kept events are held
//! to the same rules as WebAssembly answers ([`super::convert`]).
//!
//! **Recycling.** The plugins' sandbox runtime lets a worker live at most
//! [`WORKER_WALL_TIME`] (wall and CPU time) and write at most
//! [`WORKER_OUTPUT_LIMIT`]; the host retires a worker well before either
//! ([`WORKER_LIFETIME`], [`WORKER_OUTPUT_RECYCLE`]), between batches.
//!
//! **Runtime.** The sandbox runtime (its zygote) starts on the first
//! Python plugin, so a process that never loads one never starts it, and a
//! binary that cannot be a zygote only fails its Python plugins, with the
//! reason. Its I/O runs on a one-thread tokio runtime of its own, so the
//! blocking entry points ([`PythonHost::trial`], [`PythonStage::new`]) work
//! from any thread, inside another runtime or outside any.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use orrery_core::event::Envelope;
use orrery_core::metrics::PluginMetrics;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use orrery_sandbox::python::{PythonConfig, PythonRequest, PythonRuntime, ZygoteCommand};
use orrery_sandbox::{ExecutionResult, Limit, Limits, LimitsRequest, Outcome, Stream};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::convert::{apply, clip, to_wit};
use super::wasm::bindings::orrery::plugin::types as wit;
use super::{Breaker, Fault, LogGate, MAX_MEMORY_BYTES, PluginLimits};

/// Largest plugin source, bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// What the plugins' sandbox runtime lets one worker run, wall and CPU
/// time.
pub const WORKER_WALL_TIME: Duration = Duration::from_secs(60 * 60);
/// A worker older than this is retired between batches (before
/// [`WORKER_WALL_TIME`] could stop it during one).
pub const WORKER_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// What one worker may write (answers and log lines) in its life.
pub const WORKER_OUTPUT_LIMIT: u64 = 4 << 30;
/// A worker that has written this much is retired between batches.
pub const WORKER_OUTPUT_RECYCLE: u64 = 1 << 30;
/// Time a new worker gets to load the plugin and run `configure`, on top
/// of the plugin's `wall_time_ms`.
pub const START_GRACE: Duration = Duration::from_secs(5);
/// Modules a plugin may import: the sandbox's default list and `hashlib`.
pub const EXTRA_MODULES: &[&str] = &["hashlib"];
/// What starts an answer line of the driver.
pub const MARK: &str = "\u{1e}orrery:";

/// The driver appended to a plugin's source: the worker's side of the
/// protocol in the module docs. It runs under the same restrictions as the
/// plugin (no underscore attributes, no `__` names), so it can grant the
/// plugin nothing.
pub const DRIVER: &str = r#"

def orrery_plugin_driver(mark):
    import json

    encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    decode = json.loads

    def describe(exc):
        try:
            text = str(exc)
        except Exception:
            text = ""
        name = type(exc).__name__
        return name + ": " + text if text else name

    def answer(text):
        # The newline ends whatever the plugin printed without one.
        print("\n" + mark + text)

    try:
        handler = process
    except NameError:
        answer(encode({"error": "the plugin defines no `process(event)` function"}))
        return
    if not callable(handler):
        answer(encode({"error": "`process` is not a function"}))
        return
    try:
        setup = configure
    except NameError:
        setup = None
    config = decode(input())
    if setup is not None:
        try:
            setup(config)
        except MemoryError:
            raise
        except BaseException as exc:
            answer(encode({"config_error": str(exc) if type(exc) is ValueError else describe(exc)}))
            return
    answer('{"ready":true}')
    while True:
        try:
            line = input()
        except EOFError:
            return
        parts = []
        for event in decode(line):
            try:
                got = handler(event)
            except MemoryError:
                raise
            except BaseException as exc:
                parts.append(encode({"fail": describe(exc)}))
                continue
            if got is None:
                parts.append('{"drop":"`process` returned None"}')
            elif not isinstance(got, dict):
                parts.append(encode({"fail": "`process` returned " + type(got).__name__ + ", not a dict or None"}))
            else:
                # Encoded now: the event as it was returned, whatever the
                # plugin does to that dict later in the batch.
                try:
                    parts.append('{"keep":' + encode(got) + "}")
                except MemoryError:
                    raise
                except BaseException as exc:
                    parts.append(encode({"fail": "the returned event is not JSON: " + describe(exc)}))
        answer("[" + ",".join(parts) + "]")


orrery_plugin_driver("\x1eorrery:")
"#;

/// A checked Python plugin source.
#[derive(Debug)]
pub struct PythonCode {
    /// Hex SHA-256 of the source bytes: its version.
    pub sha256: String,
    /// The source and the driver: what a worker runs.
    program: String,
    /// Lines of the plugin's own source.
    lines: usize,
}

/// Runs Python plugins; one per process.
#[derive(Debug, Clone)]
pub struct PythonHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    config: PythonConfig,
    // Started on the first Python plugin; `None` until then.
    runtime: tokio::sync::Mutex<Option<PythonRuntime>>,
    metrics: PluginMetrics,
    // Last: the runtime's tasks stop after everything using them is gone.
    background: Background,
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonHost")
            .field("zygote", &self.config.zygote)
            .finish_non_exhaustive()
    }
}

/// The one-thread tokio runtime the sandbox's I/O runs on.
struct Background {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Drop for Background {
    fn drop(&mut self) {
        // Never blocks, so it may happen inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PythonHost {
    /// The sandbox configuration for plugin workers started by `zygote`:
    /// long-lived executions ([`WORKER_WALL_TIME`],
    /// [`WORKER_OUTPUT_LIMIT`]), memory up to [`MAX_MEMORY_BYTES`] (each
    /// worker gets its plugin's `memory_bytes`), sources up to
    /// [`MAX_SOURCE_BYTES`], the sandbox's default modules and
    /// [`EXTRA_MODULES`].
    #[must_use]
    pub fn sandbox_config(zygote: ZygoteCommand) -> PythonConfig {
        let mut config = PythonConfig::new(zygote);
        config.limits = Limits {
            wall_time: WORKER_WALL_TIME,
            cpu_time: WORKER_WALL_TIME,
            memory_bytes: MAX_MEMORY_BYTES,
            output_bytes: WORKER_OUTPUT_LIMIT,
            code_bytes: (MAX_SOURCE_BYTES + DRIVER.len() + 1) as u64,
            ..Limits::default()
        };
        config
            .allowed_modules
            .extend(EXTRA_MODULES.iter().map(|m| (*m).to_owned()));
        config
    }

    /// A host running workers under `config` (see
    /// [`Self::sandbox_config`]). Nothing starts yet: the sandbox's zygote
    /// starts with the first Python plugin.
    ///
    /// # Errors
    /// When the host's I/O thread cannot be started.
    pub fn new(config: PythonConfig, metrics: PluginMetrics) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("orrery-python-plugins")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            inner: Arc::new(HostInner {
                config,
                runtime: tokio::sync::Mutex::new(None),
                metrics,
                background: Background {
                    runtime: Some(runtime),
                    handle,
                },
            }),
        })
    }

    /// The metrics of custom plugins.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.inner.metrics
    }

    /// Checks that `bytes` can be a plugin source: UTF-8 text of at most
    /// [`MAX_SOURCE_BYTES`]. Whether it is valid Python is for
    /// [`Self::trial`] to find out.
    ///
    /// # Errors
    /// What is wrong with the bytes.
    pub fn load(&self, bytes: &[u8]) -> Result<PythonCode, String> {
        if bytes.len() > MAX_SOURCE_BYTES {
            return Err(format!(
                "the source is {} bytes, over the {MAX_SOURCE_BYTES} allowed",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "the source is not UTF-8 text (bad byte at offset {})",
                e.valid_up_to()
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.contains('\0') {
            return Err("the source contains a NUL byte".to_owned());
        }
        let mut program = String::with_capacity(text.len() + DRIVER.len() + 1);
        program.push_str(text);
        program.push('\n');
        program.push_str(DRIVER);
        Ok(PythonCode {
            sha256: hex::encode(Sha256::digest(bytes)),
            program,
            lines: text.lines().count(),
        })
    }

    /// Runs `events` once through a fresh worker of `code` configured with
    /// `config` (blocking; any thread): the check a plugin passes before
    /// it is loaded, and what `orrery plugin test` does. One answer per
    /// event: a verdict, or what is malformed about it.
    ///
    /// # Errors
    /// Why the plugin could not run ([`TrialError::Start`]: a syntax error
    /// with its line, an exception while loading, `configure` refusing the
    /// config, the sandbox missing), or what cut the batch
    /// ([`TrialError::Batch`]: a limit, a dead worker, an unusable answer).
    pub fn trial(
        &self,
        code: &PythonCode,
        config: &Map<String, Value>,
        limits: &PluginLimits,
        name: &str,
        events: &[wit::Event],
    ) -> Result<Vec<Result<wit::Verdict, String>>, TrialError> {
        let inner = Arc::clone(&self.inner);
        let program = code.program.clone();
        let lines = code.lines;
        let config = Value::Object(config.clone()).to_string();
        let limits = *limits;
        let log = Arc::new(LogGate::new(
            name,
            limits.log_lines_per_second,
            PluginMetrics::of(&self.inner.metrics.log_dropped, name),
        ));
        let line = encode_batch(events);
        let count = events.len();
        self.inner
            .block_on(async move {
                let wall = Duration::from_millis(limits.wall_time_ms);
                let mut worker =
                    Worker::start(&inner, &program, lines, &config, &limits, wall, &log)
                        .await
                        .map_err(|(fault, message)| {
                            TrialError::Start(describe_start(fault, message))
                        })?;
                let answer = worker
                    .exchange(&line, count, tokio::time::Instant::now() + wall, &log)
                    .await;
                let payload = match answer {
                    Ok(payload) => payload,
                    Err(cut) => {
                        return Err(TrialError::Batch(worker.cut(cut, lines, wall).await.1));
                    }
                };
                parse_answers(&payload, count).map_err(TrialError::Batch)
            })
            .map_err(TrialError::Start)?
    }
}

/// Why [`PythonHost::trial`] answered nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialError {
    /// No worker started: the source does not load, `configure` refused
    /// the config, or the sandbox is unavailable.
    Start(String),
    /// The worker started but the batch was cut: a limit, the worker died,
    /// or it answered something unusable.
    Batch(String),
}

impl std::fmt::Display for TrialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(m) | Self::Batch(m) => f.write_str(m),
        }
    }
}

impl From<TrialError> for String {
    fn from(e: TrialError) -> Self {
        e.to_string()
    }
}

/// The message of a worker that did not start, for the plugin's author.
fn describe_start(fault: Fault, message: String) -> String {
    match fault {
        Fault::Config => format!("`configure` refused the config: {message}"),
        _ => message,
    }
}

impl HostInner {
    /// Runs `future` on the host's I/O thread and waits for it (blocking).
    fn block_on<F>(&self, future: F) -> Result<F::Output, String>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.background.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| "the Python plugin host is shutting down".to_owned())
    }

    /// The sandbox runtime, started on first use (call on the I/O thread).
    async fn runtime(&self) -> Result<PythonRuntime, String> {
        let mut slot = self.runtime.lock().await;
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.clone());
        }
        let rt = PythonRuntime::start(self.config.clone())
            .await
            .map_err(|e| {
                format!("Python plugins are unavailable: the Python sandbox did not start: {e}")
            })?;
        let isolation = rt.isolation().await;
        tracing::info!(?isolation, "python plugin sandbox ready");
        *slot = Some(rt.clone());
        Ok(rt)
    }
}

/// Why a worker gave no answer.
#[derive(Debug)]
enum Cut {
    /// Past its deadline.
    Deadline,
    /// Its output ended: it exited or was killed.
    Ended,
    /// An answer (or a log line) longer than allowed.
    TooLong(usize),
}

/// One warm worker: a sandbox execution running the plugin and the driver.
struct Worker {
    exec: orrery_sandbox::Execution,
    born: Instant,
    written: u64,
    stdout: String,
    stderr: String,
}

/// What the driver answers once configured.
#[derive(Debug, Deserialize)]
struct Started {
    #[serde(default)]
    ready: bool,
    config_error: Option<String>,
    error: Option<String>,
}

impl Worker {
    /// Starts a worker of `program` and configures it with `config` (JSON
    /// object text), within `wall` + [`START_GRACE`]. Runs on the host's
    /// I/O thread.
    async fn start(
        host: &HostInner,
        program: &str,
        lines: usize,
        config: &str,
        limits: &PluginLimits,
        wall: Duration,
        log: &LogGate,
    ) -> Result<Self, (Fault, String)> {
        let runtime = host.runtime().await.map_err(|e| (Fault::Trap, e))?;
        let request = PythonRequest {
            code: program.to_owned(),
            interactive: true,
            limits: LimitsRequest {
                memory_bytes: Some(limits.memory_bytes),
                ..LimitsRequest::default()
            },
            ..PythonRequest::default()
        };
        let exec = runtime
            .spawn_streaming(request)
            .await
            .map_err(|e| (Fault::Trap, format!("its worker could not start: {e}")))?;
        let mut worker = Self {
            exec,
            born: Instant::now(),
            written: 0,
            stdout: String::new(),
            stderr: String::new(),
        };
        let deadline = tokio::time::Instant::now() + wall + START_GRACE;
        let mut line = config.as_bytes().to_vec();
        line.push(b'\n');
        let answer = if worker.exec.write_stdin(line) {
            worker.answer(deadline, config.len() + (1 << 20), log).await
        } else {
            Err(Cut::Ended)
        };
        let payload = match answer {
            Ok(payload) => payload,
            Err(Cut::Deadline) => {
                return Err((
                    Fault::WallTime,
                    format!(
                        "loading the plugin and running `configure` took over {} ms",
                        (wall + START_GRACE).as_millis()
                    ),
                ));
            }
            Err(cut) => return Err(worker.cut(cut, lines, wall).await),
        };
        match serde_json::from_str::<Started>(&payload) {
            Ok(Started { ready: true, .. }) => Ok(worker),
            Ok(Started {
                config_error: Some(message),
                ..
            }) => Err((Fault::Config, clip(message))),
            Ok(Started {
                error: Some(message),
                ..
            }) => Err((Fault::Malformed, message)),
            _ => Err((
                Fault::Malformed,
                "the worker answered something unexpected while starting".to_owned(),
            )),
        }
    }

    /// Sends a batch (`line`, a JSON array of `count` events) and waits for
    /// its answer until `deadline`.
    async fn exchange(
        &mut self,
        line: &[u8],
        count: usize,
        deadline: tokio::time::Instant,
        log: &LogGate,
    ) -> Result<String, Cut> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        if !self.exec.write_stdin(bytes) {
            return Err(Cut::Ended);
        }
        self.answer(deadline, max_answer(count), log).await
    }

    /// Reads output until an answer line, logging the other lines.
    async fn answer(
        &mut self,
        deadline: tokio::time::Instant,
        max_line: usize,
        log: &LogGate,
    ) -> Result<String, Cut> {
        loop {
            let chunk = tokio::select! {
                chunk = self.exec.next_output() => chunk,
                () = tokio::time::sleep_until(deadline) => return Err(Cut::Deadline),
            };
            let Some(chunk) = chunk else {
                return Err(Cut::Ended);
            };
            if let Some(answer) = self.take(chunk.stream, &chunk.data, max_line, log)? {
                return Ok(answer);
            }
        }
    }

    /// Adds output; answers the first complete answer line in it.
    fn take(
        &mut self,
        stream: Stream,
        data: &str,
        max_line: usize,
        log: &LogGate,
    ) -> Result<Option<String>, Cut> {
        self.written += data.len() as u64;
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let mut from = buf.len();
        buf.push_str(data);
        let mut answer = None;
        let mut start = 0;
        while let Some(at) = buf[from..].find('\n') {
            let end = from + at;
            let line = &buf[start..end];
            match line.strip_prefix(MARK) {
                Some(payload) if stream == Stream::Stdout && answer.is_none() => {
                    answer = Some(payload.to_owned());
                }
                _ if line.is_empty() => {}
                _ => log.line(
                    match stream {
                        Stream::Stdout => tracing::Level::INFO,
                        Stream::Stderr => tracing::Level::WARN,
                    },
                    line,
                ),
            }
            start = end + 1;
            from = start;
        }
        buf.drain(..start);
        if buf.len() > max_line {
            return Err(Cut::TooLong(max_line));
        }
        Ok(answer)
    }

    /// Whether a pooled worker is still alive (and has said nothing since).
    fn alive(&mut self, log: &LogGate) -> bool {
        while let Some(chunk) = self.exec.next_output().now_or_never() {
            match chunk {
                Some(c) => {
                    // Output between batches can only be log lines.
                    if self.take(c.stream, &c.data, 1 << 20, log).is_err() {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }

    /// Whether it should be retired rather than pooled.
    fn spent(&self) -> bool {
        self.born.elapsed() >= WORKER_LIFETIME || self.written >= WORKER_OUTPUT_RECYCLE
    }

    /// Ends a worker that gave no answer and names the fault: a deadline
    /// kills it; an ended worker is asked how it ended.
    async fn cut(self, cut: Cut, lines: usize, wall: Duration) -> (Fault, String) {
        match cut {
            Cut::Deadline => (
                Fault::WallTime,
                format!("ran past its time limit ({} ms)", wall.as_millis()),
            ),
            Cut::TooLong(max) => (Fault::Malformed, format!("wrote a line over {max} bytes")),
            Cut::Ended => {
                let result = tokio::time::timeout(Duration::from_secs(5), self.exec.wait()).await;
                match result {
                    Ok(result) => ended(&result, lines),
                    Err(_) => (Fault::Trap, "its worker stopped answering".to_owned()),
                }
            }
        }
    }
}

/// Largest answer line for `count` events: two objects of
/// [`super::convert::MAX_OBJECT_BYTES`] and the other fields each, and some.
fn max_answer(count: usize) -> usize {
    (count + 1).saturating_mul(2 * super::convert::MAX_OBJECT_BYTES + 64 * 1024)
}

/// The fault and message of a worker that ended.
fn ended(result: &ExecutionResult, lines: usize) -> (Fault, String) {
    match &result.outcome {
        Outcome::LimitExceeded(hit) => match hit.what {
            Limit::Memory => (
                Fault::Memory,
                format!("ran over its memory limit ({} bytes)", hit.limit),
            ),
            Limit::CpuTime | Limit::WallTime => (
                Fault::WallTime,
                "its worker used up its time and was stopped".to_owned(),
            ),
            Limit::Output => (
                Fault::Trap,
                format!("its worker wrote over {} bytes and was stopped", hit.limit),
            ),
            other => (Fault::Trap, format!("hit the {} limit", other.as_str())),
        },
        Outcome::Error {
            error_type,
            message,
            traceback,
        } => (
            Fault::Trap,
            describe_error(error_type, message, traceback.as_deref(), lines),
        ),
        Outcome::Rejected { reason } => (Fault::Trap, format!("refused by the sandbox: {reason}")),
        Outcome::Crashed { reason } => (Fault::Trap, format!("its worker died: {reason}")),
        Outcome::Completed | Outcome::Cancelled => (
            Fault::Trap,
            "its worker exited (did the plugin read stdin or end the program?)".to_owned(),
        ),
    }
}

/// An exception that ended a worker: a syntax error with its line, or an
/// exception while loading with the line it came from.
fn describe_error(
    error_type: &str,
    message: &str,
    traceback: Option<&str>,
    lines: usize,
) -> String {
    let syntax = matches!(error_type, "SyntaxError" | "IndentationError" | "TabError");
    if syntax {
        // CPython says "invalid syntax (<code>, line 3)".
        let (text, line) = match message.rsplit_once(" (<code>, line ") {
            Some((text, rest)) => (text, rest.trim_end_matches(')').parse::<usize>().ok()),
            None => (message, None),
        };
        return match line {
            Some(n) if n <= lines => format!("{error_type} at line {n}: {text}"),
            Some(_) => format!(
                "{error_type} at the end of the source (an unclosed bracket, string or block?): {text}"
            ),
            None => format!("{error_type}: {text}"),
        };
    }
    let line = traceback.and_then(|tb| {
        tb.lines()
            .rev()
            .filter_map(|l| l.trim().strip_prefix("File \"<code>\", line "))
            .filter_map(|l| l.split(',').next()?.parse::<usize>().ok())
            .find(|n| *n <= lines)
    });
    let what = if message.is_empty() {
        error_type.to_owned()
    } else {
        format!("{error_type}: {message}")
    };
    match line {
        Some(n) => format!("raised at line {n}: {what}"),
        None => format!("raised {what}"),
    }
}

/// The events of a batch as the worker reads them: one JSON array.
fn encode_batch(events: &[wit::Event]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Head<'a> {
        id: &'a str,
        name: &'a str,
        distinct_id: Option<&'a str>,
        session_id: Option<&'a str>,
        timestamp_ms: i64,
        received_at_ms: i64,
        url: Option<&'a str>,
        referrer: Option<&'a str>,
        user_agent: Option<&'a str>,
        visitor_id: Option<&'a str>,
    }
    let mut out = Vec::with_capacity(events.len() * 512 + 2);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let head = Head {
            id: &e.id,
            name: &e.name,
            distinct_id: e.distinct_id.as_deref(),
            session_id: e.session_id.as_deref(),
            timestamp_ms: e.timestamp_ms,
            received_at_ms: e.received_at_ms,
            url: e.url.as_deref(),
            referrer: e.referrer.as_deref(),
            user_agent: e.user_agent.as_deref(),
            visitor_id: e.visitor_id.as_deref(),
        };
        // Writing to a Vec of plain fields cannot fail.
        let _ = serde_json::to_writer(&mut out, &head);
        // Reopen the object for the two JSON texts `to_wit` made.
        out.pop();
        out.extend_from_slice(b",\"properties\":");
        out.extend_from_slice(e.properties.as_bytes());
        out.extend_from_slice(b",\"enrichment\":");
        out.extend_from_slice(e.enrichment.as_bytes());
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// One answer on the wire, its event read later.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    Keep(Box<RawValue>),
    Drop(String),
    Fail(String),
}

/// One answer on the wire, read at once (the fast path, when every kept
/// event is well formed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKept {
    Keep(Kept),
    Drop(String),
    Fail(String),
}

/// A kept event as the plugin returned it. `id` and the timestamps are not
/// the plugin's to change: accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    #[serde(default)]
    #[allow(dead_code)]
    id: IgnoredAny,
    name: String,
    distinct_id: Option<String>,
    session_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    timestamp_ms: IgnoredAny,
    #[serde(default)]
    #[allow(dead_code)]
    received_at_ms: IgnoredAny,
    url: Option<String>,
    referrer: Option<String>,
    user_agent: Option<String>,
    visitor_id: Option<String>,
    properties: Box<RawValue>,
    enrichment: Box<RawValue>,
}

/// Reads an answer line: `count` answers, each a verdict or what is
/// malformed about it.
///
/// # Errors
/// When the line is not an array of answers, or of the wrong length: the
/// worker is out of step and cannot be trusted with another batch.
fn parse_answers(payload: &str, count: usize) -> Result<Vec<Result<wit::Verdict, String>>, String> {
    if let Ok(answers) = serde_json::from_str::<Vec<WireKept>>(payload)
        && answers.len() == count
    {
        return Ok(answers
            .into_iter()
            .map(|answer| {
                Ok(match answer {
                    WireKept::Keep(kept) => wit::Verdict::Keep(kept.into_wit()),
                    WireKept::Drop(reason) => wit::Verdict::Drop(reason),
                    WireKept::Fail(error) => wit::Verdict::Fail(error),
                })
            })
            .collect());
    }
    // Something is wrong: read again, event by event, to say what.
    let answers: Vec<Wire> = serde_json::from_str(payload).map_err(|e| {
        format!(
            "answered something that is not a list of verdicts: {}",
            no_position(&e)
        )
    })?;
    if answers.len() != count {
        return Err(format!(
            "answered {} verdicts for {count} events",
            answers.len()
        ));
    }
    Ok(answers
        .into_iter()
        .map(|answer| match answer {
            Wire::Drop(reason) => Ok(wit::Verdict::Drop(reason)),
            Wire::Fail(error) => Ok(wit::Verdict::Fail(error)),
            Wire::Keep(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let kept: Kept = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let path = e.path().to_string();
                    let inner = no_position(e.inner());
                    let whole =
                        inner.starts_with("unknown field") || inner.starts_with("missing field");
                    if path == "." || whole {
                        format!("the returned event: {inner}")
                    } else {
                        format!("`{path}`: {inner}")
                    }
                })?;
                Ok(wit::Verdict::Keep(kept.into_wit()))
            }
        })
        .collect())
}

impl Kept {
    /// The WIT record [`apply`] reads (`id` and the timestamps are not
    /// read: left empty).
    fn into_wit(self) -> wit::Event {
        wit::Event {
            id: String::new(),
            name: self.name,
            distinct_id: self.distinct_id,
            session_id: self.session_id,
            timestamp_ms: 0,
            received_at_ms: 0,
            url: self.url,
            referrer: self.referrer,
            user_agent: self.user_agent,
            visitor_id: self.visitor_id,
            properties: Box::<str>::from(self.properties).into_string(),
            enrichment: Box::<str>::from(self.enrichment).into_string(),
        }
    }
}

/// A serde_json error without "at line 1 column 80".
fn no_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// One pipeline stage running a Python plugin on a pool of warm workers.
pub struct PythonStage {
    inner: Arc<StageInner>,
}

struct StageInner {
    name: String,
    host: Arc<HostInner>,
    sha256: String,
    program: Arc<str>,
    lines: usize,
    config: Arc<str>,
    limits: PluginLimits,
    wall: Duration,
    pool: Mutex<Vec<Worker>>,
    permits: Semaphore,
    breaker: Breaker,
    log: Arc<LogGate>,
    started: Counter,
}

impl std::fmt::Debug for PythonStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonStage")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.sha256)
            .finish_non_exhaustive()
    }
}

impl PythonStage {
    /// A stage of plugin `name` with `config` (a JSON object) under
    /// `limits`, whose wall time is at most `timeout`. One worker starts
    /// now (blocking; any thread): it checks that the plugin accepts the
    /// config, then waits for the first batch.
    ///
    /// # Errors
    /// The plugin's own message when it refuses the config, or what stopped
    /// its worker while starting.
    pub fn new(
        host: &PythonHost,
        name: &str,
        code: &PythonCode,
        config: &Map<String, Value>,
        limits: PluginLimits,
        timeout: Duration,
    ) -> Result<Self, String> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let wall = Duration::from_millis(limits.wall_time_ms.min(timeout_ms.max(1)));
        let metrics = &host.inner.metrics;
        let inner = Arc::new(StageInner {
            name: name.to_owned(),
            host: Arc::clone(&host.inner),
            sha256: code.sha256.clone(),
            program: Arc::from(code.program.as_str()),
            lines: code.lines,
            config: Arc::from(Value::Object(config.clone()).to_string()),
            limits,
            wall,
            pool: Mutex::new(Vec::new()),
            permits: Semaphore::new(limits.instances as usize),
            breaker: Breaker::default(),
            log: Arc::new(LogGate::new(
                name,
                limits.log_lines_per_second,
                PluginMetrics::of(&metrics.log_dropped, name),
            )),
            started: PluginMetrics::of(&metrics.instances, name),
        });
        let starting = Arc::clone(&inner);
        let first = host
            .inner
            .block_on(async move { starting.start_worker().await })?
            .map_err(|(fault, message)| describe_start(fault, message))?;
        inner.give_back(first);
        Ok(Self { inner })
    }
}

impl StageInner {
    /// Starts a worker on the host's I/O thread.
    async fn start_worker(&self) -> Result<Worker, (Fault, String)> {
        self.started.inc();
        Worker::start(
            &self.host,
            &self.program,
            self.lines,
            &self.config,
            &self.limits,
            self.wall,
            &self.log,
        )
        .await
    }

    /// A live pooled worker, or a new one.
    async fn worker(self: &Arc<Self>) -> Result<Worker, (Fault, String)> {
        loop {
            let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut w) = pooled else { break };
            if w.alive(&self.log) && !w.spent() {
                return Ok(w);
            }
            // Dead or old: dropping it kills it.
        }
        // On the I/O thread; a worker that starts after its batch was given
        // up on (the pipeline's timeout) waits in the pool for the next.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let starting = Arc::clone(self);
        self.host.background.handle.spawn(async move {
            if let Err(Ok(worker)) = tx.send(starting.start_worker().await) {
                starting.give_back(worker);
            }
        });
        rx.await.map_err(|_| {
            (
                Fault::Trap,
                "the Python plugin host is shutting down".to_owned(),
            )
        })?
    }

    /// Pools a worker for the next batch, unless it is due for retirement
    /// or the pool is full.
    fn give_back(&self, worker: Worker) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if !worker.spent() && pool.len() < self.limits.instances as usize {
            pool.push(worker);
        }
    }

    fn fault(&self, fault: Fault) {
        self.host.metrics.fault(&self.name, fault.as_str()).inc();
        self.breaker.record(Some(fault));
    }
}

/// A batch waiting for its answer. Dropped before the answer (the future
/// was given up on), its worker is killed, being out of step; if that was
/// at the deadline (the pipeline's timeout fired first), the fault is
/// counted as if the stage had cut the batch itself.
struct Busy<'a> {
    stage: &'a StageInner,
    deadline: Option<tokio::time::Instant>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(deadline) = self.deadline
            && tokio::time::Instant::now() + Duration::from_millis(2) >= deadline
        {
            self.stage.fault(Fault::WallTime);
        }
    }
}

#[async_trait]
impl Plugin for PythonStage {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        let inner = &self.inner;
        let failed = |reason: String| PluginError::Failed {
            plugin: inner.name.clone(),
            reason,
        };
        if let Err(reason) = inner.breaker.admit() {
            inner
                .host
                .metrics
                .fault(&inner.name, Fault::Suspended.as_str())
                .inc();
            return Err(failed(reason));
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Counted from the call, as the pipeline counts its timeout: the
        // batch's time covers waiting for and starting a worker too.
        let deadline = tokio::time::Instant::now() + inner.wall;
        let sent: Vec<wit::Event> = batch.iter().map(to_wit).collect();
        let line = encode_batch(&sent);
        let _permit = inner.permits.acquire().await.map_err(|_| {
            inner.fault(Fault::Trap);
            failed("the plugin host is shutting down".to_owned())
        })?;
        let mut worker = match inner.worker().await {
            Ok(w) => w,
            Err((fault, reason)) => {
                inner.fault(fault);
                return Err(failed(describe_start(fault, reason)));
            }
        };
        let mut busy = Busy {
            stage: inner,
            deadline: Some(deadline),
        };
        let answer = worker
            .exchange(&line, sent.len(), deadline, &inner.log)
            .await;
        let parsed = match answer {
            Ok(payload) => match parse_answers(&payload, sent.len()) {
                Ok(answers) => Ok((answers, worker)),
                // Out of step: dropping the worker kills it.
                Err(reason) => Err((Fault::Malformed, reason)),
            },
            Err(cut) => Err(worker.cut(cut, inner.lines, inner.wall).await),
        };
        busy.deadline = None;
        let answers = match parsed {
            Ok((answers, worker)) => {
                inner.give_back(worker);
                answers
            }
            Err((fault, reason)) => {
                inner.fault(fault);
                return Err(failed(reason));
            }
        };
        inner.breaker.record(None);
        let metrics = &inner.host.metrics;
        let malformed = |reason: String| {
            metrics.fault(&inner.name, Fault::Malformed.as_str()).inc();
            Verdict::Fail(format!("malformed answer: {reason}"))
        };
        Ok(batch
            .iter_mut()
            .zip(&sent)
            .zip(answers)
            .map(|((env, sent), answer)| match answer {
                Ok(verdict) => apply(env, sent, verdict).unwrap_or_else(malformed),
                Err(reason) => malformed(reason),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_their_line_or_the_end() {
        let m = describe_error("SyntaxError", "invalid syntax (<code>, line 3)", None, 5);
        assert_eq!(m, "SyntaxError at line 3: invalid syntax");
        let m = describe_error(
            "IndentationError",
            "expected an indented block after function definition on line 5 (<code>, line 6)",
            None,
            5,
        );
        assert!(m.contains("at the end of the source"), "{m}");
        let tb = "Traceback (most recent call last):\n  File \"<code>\", line 2, in <module>\n    import os\nImportError: no";
        let m = describe_error("ImportError", "no", Some(tb), 4);
        assert_eq!(m, "raised at line 2: ImportError: no");
    }

    #[test]
    fn answers_are_read_per_event() {
        let payload = r#"[{"keep":{"name":"a","properties":{},"enrichment":{},"extra":1}},{"drop":"x"},{"fail":"E: y"},{"keep":{"name":5,"properties":{},"enrichment":{}}}]"#;
        let answers = parse_answers(payload, 4).unwrap();
        assert!(
            answers[0]
                .as_ref()
                .unwrap_err()
                .contains("unknown field `extra`")
        );
        assert!(matches!(&answers[1], Ok(wit::Verdict::Drop(r)) if r == "x"));
        assert!(matches!(&answers[2], Ok(wit::Verdict::Fail(e)) if e == "E: y"));
        let e = answers[3].as_ref().unwrap_err();
        assert!(e.starts_with("`name`: invalid type"), "{e}");
        assert!(!e.contains("column"), "{e}");
        assert!(
            parse_answers("[]", 1)
                .unwrap_err()
                .contains("0 verdicts for 1")
        );
        assert!(parse_answers("nope", 1).is_err());
    }

    #[test]
    fn batches_are_json_arrays_of_event_objects() {
        let env = orrery_core::event::EventBuilder::new("pageview")
            .field("url", "https://a.test/\"q\"")
            .field("properties", serde_json::json!({"plan": "pro"}))
            .envelope();
        let line = encode_batch(&[to_wit(&env), to_wit(&env)]);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v[1]["url"], "https://a.test/\"q\"");
        assert_eq!(v[0]["properties"]["plan"], "pro");
        assert_eq!(v[0]["enrichment"], serde_json::json!({}));
        assert_eq!(v[0]["distinct_id"], Value::Null);
    }
}
