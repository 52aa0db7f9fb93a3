//! Custom plugins: users' own enrichment steps, loaded at run time.
//!
//! - [`wasm`]: WebAssembly components implementing `sdk/wit/plugin.wit`,
//!   run by wasmtime on the sandbox's engine under per-plugin limits.
//! - [`python`]: `.py` files defining `process(event)`, run in warm
//!   workers of the sandbox's Python runtime under the same limits.
//! - [`Catalog`]: the loaded plugins by name, each compiled and validated
//!   once; a project's pipeline names them next to the built-ins.
//!
//! Every custom plugin runs under [`PluginLimits`] and a [`Breaker`]: a
//! plugin that keeps hitting its limits is suspended for a growing while, so
//! a looping plugin costs its own project's events, not the gateway's CPU.

pub mod catalog;
pub mod convert;
pub mod python;
pub mod wasm;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use orrery_core::event::Envelope;
use orrery_core::plugin::Verdict;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use catalog::{Catalog, CustomPlugin, PluginKind, PluginSource};

/// What [`run_once`] measured and answered.
#[derive(Debug)]
pub struct RunReport {
    /// Hex SHA-256 of the plugin's bytes.
    pub sha256: String,
    /// Checking and compiling the code (Python: reading the source).
    pub compile: Duration,
    /// Instantiating (Python: starting a worker), configuring and
    /// processing the events as one batch.
    pub run: Duration,
    /// One verdict per event; kept events are changed in place.
    pub verdicts: Vec<Verdict>,
}

/// Runs a plugin once over `events`, as one batch, with `config` (its
/// default config when `None`), on the hosts of `catalog` (the catalog
/// itself is left alone): what `orrery plugin test` does, without a
/// server. Kept events are changed in place; a malformed answer for an
/// event is a `Fail` verdict saying so.
///
/// # Errors
/// When the code does not compile (or load), fit the world, accept the
/// config, or answers the wrong number of verdicts; or what stopped it.
pub fn run_once(
    catalog: &Catalog,
    source: &PluginSource,
    config: Option<&Map<String, Value>>,
    events: &mut [Envelope],
) -> Result<RunReport, String> {
    let config = config.unwrap_or(&source.config);
    let sent: Vec<_> = events.iter().map(convert::to_wit).collect();
    let started = Instant::now();
    let (sha256, compile, answers, run) = match source.kind {
        PluginKind::Wasm => {
            let host = catalog.host();
            let code = host.compile(&source.bytes)?;
            let compile = started.elapsed();
            let started = Instant::now();
            let answers = host.trial(&code, config, &source.limits, &source.name, &sent)?;
            let answers: Vec<_> = answers.into_iter().map(Ok).collect();
            (code.sha256, compile, answers, started.elapsed())
        }
        PluginKind::Python => {
            let host = catalog.python()?;
            let code = host.load(&source.bytes)?;
            let compile = started.elapsed();
            let started = Instant::now();
            let answers = host.trial(&code, config, &source.limits, &source.name, &sent)?;
            (code.sha256, compile, answers, started.elapsed())
        }
    };
    if answers.len() != events.len() {
        return Err(format!(
            "`process` returned {} verdicts for {} events",
            answers.len(),
            events.len()
        ));
    }
    let verdicts = events
        .iter_mut()
        .zip(&sent)
        .zip(answers)
        .map(|((env, sent), answer)| {
            answer
                .and_then(|answer| convert::apply(env, sent, answer))
                .unwrap_or_else(|reason| Verdict::Fail(format!("malformed answer: {reason}")))
        })
        .collect();
    Ok(RunReport {
        sha256,
        compile,
        run,
        verdicts,
    })
}

/// What one custom plugin may use. Every field may be set in the plugin's
/// `NAME.toml` or upload; unset fields take these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// WebAssembly fuel (about one unit per instruction) per batch; Python
    /// plugins have none (their wall time bounds them).
    pub fuel: u64,
    /// Wall time per batch, ms; the stage's `timeout_ms` lowers it.
    pub wall_time_ms: u64,
    /// Memory of one instance (WASM linear memory; Python address space),
    /// bytes.
    pub memory_bytes: u64,
    /// Log lines per second kept; the rest are counted and dropped.
    pub log_lines_per_second: u32,
    /// Instances (WASM) or workers (Python) running batches at once.
    pub instances: u32,
}

/// Highest `fuel` a plugin may ask for.
pub const MAX_FUEL: u64 = 100_000_000_000;
/// Longest `wall_time_ms`.
pub const MAX_WALL_TIME_MS: u64 = 10_000;
/// Most `memory_bytes`: 1 GiB.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Most `instances`.
pub const MAX_INSTANCES: u32 = 64;

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            fuel: 1_000_000_000,
            wall_time_ms: 1_000,
            memory_bytes: 64 * 1024 * 1024,
            log_lines_per_second: 100,
            instances: 2,
        }
    }
}

impl PluginLimits {
    /// Checks every field against its range; the error names the field.
    ///
    /// # Errors
    /// `(field, reason)` for the first field out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |ok: bool, field: &'static str, range: String| {
            if ok {
                Ok(())
            } else {
                Err((field, format!("must be {range}")))
            }
        };
        check(
            (1..=MAX_FUEL).contains(&self.fuel),
            "fuel",
            format!("between 1 and {MAX_FUEL}"),
        )?;
        check(
            (1..=MAX_WALL_TIME_MS).contains(&self.wall_time_ms),
            "wall_time_ms",
            format!("between 1 and {MAX_WALL_TIME_MS}"),
        )?;
        check(
            (1 << 20..=MAX_MEMORY_BYTES).contains(&self.memory_bytes),
            "memory_bytes",
            format!("between 1048576 and {MAX_MEMORY_BYTES}"),
        )?;
        check(
            self.log_lines_per_second <= 100_000,
            "log_lines_per_second",
            "at most 100000".to_owned(),
        )?;
        check(
            (1..=MAX_INSTANCES).contains(&self.instances),
            "instances",
            format!("between 1 and {MAX_INSTANCES}"),
        )
    }
}

/// A plugin's log: its lines go to the gateway's log under the plugin's
/// name, at most `per_second` a second; the others are counted and
/// dropped. Shared by the WebAssembly host (the `log` import) and the
/// Python workers (what a plugin prints).
#[derive(Debug)]
pub struct LogGate {
    plugin: String,
    per_second: u32,
    window: Mutex<(Instant, u32)>,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl LogGate {
    /// A gate for `plugin` letting `per_second` lines through; `dropped`
    /// counts the others.
    pub fn new(
        plugin: &str,
        per_second: u32,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            plugin: plugin.to_owned(),
            per_second,
            window: Mutex::new((Instant::now(), 0)),
            dropped,
        }
    }

    /// Logs `message` (cut to 1 KiB) at `level`, unless the plugin is over
    /// its rate.
    pub fn line(&self, level: tracing::Level, message: &str) {
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if w.0.elapsed() >= Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            if w.1 >= self.per_second {
                self.dropped.inc();
                return;
            }
            w.1 += 1;
        }
        let message = convert::clip(message.to_owned());
        let plugin = self.plugin.as_str();
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "orrery::plugin", plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "orrery::plugin", plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "orrery::plugin", plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "orrery::plugin", plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(target: "orrery::plugin", plugin, "{message}"),
        }
    }
}

/// Why a custom plugin's batch failed, for the `orrery_plugin_faults`
/// counter and the failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Ran out of fuel.
    Fuel,
    /// Ran past its wall time.
    WallTime,
    /// Asked for more memory than its cap.
    Memory,
    /// Trapped (a panic, an unreachable, a bad access) or its worker died.
    Trap,
    /// Answered something the host cannot use (a bad event, a wrong count).
    Malformed,
    /// Refused its config when a new instance was made.
    Config,
    /// Skipped while suspended after repeated faults.
    Suspended,
}

impl Fault {
    /// Every fault, in the order the API lists them.
    pub const ALL: [Fault; 7] = [
        Self::Fuel,
        Self::WallTime,
        Self::Memory,
        Self::Trap,
        Self::Malformed,
        Self::Config,
        Self::Suspended,
    ];

    /// Stable name, the `fault` label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fuel => "fuel",
            Self::WallTime => "wall_time",
            Self::Memory => "memory",
            Self::Trap => "trap",
            Self::Malformed => "malformed",
            Self::Config => "config",
            Self::Suspended => "suspended",
        }
    }

    /// Whether it counts towards suspending the plugin: the faults that
    /// cost the gateway time or memory.
    #[must_use]
    pub fn suspends(self) -> bool {
        matches!(
            self,
            Self::Fuel | Self::WallTime | Self::Memory | Self::Trap
        )
    }
}

/// Suspends a plugin after [`Breaker::THRESHOLD`] costly faults in a row:
/// for one second, doubling at each new suspension up to a minute; one good
/// batch closes it again.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive: u32,
    suspensions: u32,
    until: Option<Instant>,
}

impl Breaker {
    /// Costly faults in a row that suspend a plugin.
    pub const THRESHOLD: u32 = 3;

    /// `Err(remaining)` while suspended.
    ///
    /// # Errors
    /// The time left of the suspension.
    pub fn check(&self) -> Result<(), Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.until {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(left),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Whether a batch may run now: `Err` with the failure reason of a
    /// batch skipped while the plugin is suspended.
    ///
    /// # Errors
    /// The reason, naming the time left of the suspension.
    pub fn admit(&self) -> Result<(), String> {
        self.check().map_err(|left| {
            format!(
                "suspended for {} ms after repeated faults",
                left.as_millis().max(1)
            )
        })
    }

    /// Records a batch's end: `None` for success.
    pub fn record(&self, fault: Option<Fault>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match fault {
            None => {
                state.consecutive = 0;
                state.suspensions = 0;
                state.until = None;
            }
            Some(f) if f.suspends() => {
                state.consecutive += 1;
                if state.consecutive >= Self::THRESHOLD {
                    let secs = 1u64 << state.suspensions.min(6);
                    state.until = Some(Instant::now() + Duration::from_secs(secs.min(60)));
                    state.suspensions += 1;
                    state.consecutive = 0;
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field_out_of_range() {
        assert!(PluginLimits::default().validate().is_ok());
        let bad = PluginLimits {
            wall_time_ms: 0,
            ..PluginLimits::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "wall_time_ms");
        let bad = PluginLimits {
            instances: 0,
            ..PluginLimits::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "instances");
    }

    #[test]
    fn the_breaker_opens_after_three_costly_faults_and_closes_on_success() {
        let b = Breaker::default();
        b.record(Some(Fault::Malformed));
        b.record(Some(Fault::Fuel));
        b.record(Some(Fault::Fuel));
        assert!(b.check().is_ok(), "malformed answers do not suspend");
        b.record(Some(Fault::WallTime));
        let left = b.check().unwrap_err();
        assert!(left <= Duration::from_secs(1) && left > Duration::from_millis(900));
        b.record(None);
        assert!(b.check().is_ok());
    }
}
