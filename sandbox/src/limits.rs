//! Resource limits: what a runtime is configured to allow at most, what a
//! request may ask for (never more), and the value reported when one is hit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limits one execution runs under.
///
/// A runtime holds a configured maximum; each request may lower any of
/// them ([`LimitsRequest`]) but never raise them ([`Limits::clamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time from start to kill.
    pub wall_time: Duration,
    /// CPU time (Python: `RLIMIT_CPU`, rounded up to whole seconds).
    pub cpu_time: Duration,
    /// Memory the code may use: for Python, address space on top of the
    /// interpreter's own baseline; for WASM, linear memory (`StoreLimits`).
    pub memory_bytes: u64,
    /// stdout + stderr bytes kept; output past it is dropped, the result is
    /// flagged truncated and the execution is stopped.
    pub output_bytes: u64,
    /// Size of the submitted source code (Python) or module (WASM).
    pub code_bytes: u64,
    /// WASM only: fuel units (roughly, WebAssembly instructions).
    pub fuel: u64,
    /// WASM only: table elements per table.
    pub table_elements: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_time: Duration::from_secs(5),
            cpu_time: Duration::from_secs(5),
            memory_bytes: 128 * 1024 * 1024,
            output_bytes: 64 * 1024,
            code_bytes: 64 * 1024,
            // Around 10 s of tight-loop compute: by default the wall-clock
            // deadline stops a program, fuel is for callers who want a
            // deterministic budget.
            fuel: 100_000_000_000,
            table_elements: 100_000,
        }
    }
}

/// The limits a request asks for; `None` means the configured maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsRequest {
    /// See [`Limits::wall_time`].
    pub wall_time: Option<Duration>,
    /// See [`Limits::cpu_time`].
    pub cpu_time: Option<Duration>,
    /// See [`Limits::memory_bytes`].
    pub memory_bytes: Option<u64>,
    /// See [`Limits::output_bytes`].
    pub output_bytes: Option<u64>,
    /// See [`Limits::code_bytes`].
    pub code_bytes: Option<u64>,
    /// See [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// See [`Limits::table_elements`].
    pub table_elements: Option<u32>,
}

impl Limits {
    /// The limits for one request: each asked value, capped at `self`.
    #[must_use]
    pub fn clamp(&self, asked: &LimitsRequest) -> Limits {
        fn pick<T: Ord + Copy>(max: T, asked: Option<T>) -> T {
            asked.map_or(max, |a| a.min(max))
        }
        Limits {
            wall_time: pick(self.wall_time, asked.wall_time),
            cpu_time: pick(self.cpu_time, asked.cpu_time),
            memory_bytes: pick(self.memory_bytes, asked.memory_bytes),
            output_bytes: pick(self.output_bytes, asked.output_bytes),
            code_bytes: pick(self.code_bytes, asked.code_bytes),
            fuel: pick(self.fuel, asked.fuel),
            table_elements: pick(self.table_elements, asked.table_elements),
        }
    }

    /// The configured value of one limit, in its unit (ms, bytes, fuel...).
    #[must_use]
    pub fn value_of(&self, what: Limit) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match what {
            Limit::WallTime => ms(self.wall_time),
            Limit::CpuTime => ms(self.cpu_time),
            Limit::Memory => self.memory_bytes,
            Limit::Output => self.output_bytes,
            Limit::CodeSize => self.code_bytes,
            Limit::Fuel => self.fuel,
            Limit::Table => u64::from(self.table_elements),
        }
    }
}

/// Which limit stopped an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Wall-clock deadline (milliseconds).
    WallTime,
    /// CPU time (milliseconds).
    CpuTime,
    /// Memory (bytes).
    Memory,
    /// stdout + stderr (bytes).
    Output,
    /// Source or module size (bytes).
    CodeSize,
    /// WASM fuel (units).
    Fuel,
    /// WASM table elements.
    Table,
}

impl Limit {
    /// Stable snake_case name, as serialised.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::WallTime => "wall_time",
            Limit::CpuTime => "cpu_time",
            Limit::Memory => "memory",
            Limit::Output => "output",
            Limit::CodeSize => "code_size",
            Limit::Fuel => "fuel",
            Limit::Table => "table",
        }
    }
}

/// An execution ran out of one of its limits: an ordinary outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitExceeded {
    /// Which limit.
    pub what: Limit,
    /// Its value for this execution (see [`Limits::value_of`] for units).
    pub limit: u64,
}

impl LimitExceeded {
    /// The hit of `what` under `limits`.
    #[must_use]
    pub fn of(what: Limit, limits: &Limits) -> Self {
        Self {
            what,
            limit: limits.value_of(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_lower_but_never_raise() {
        let max = Limits::default();
        let asked = LimitsRequest {
            wall_time: Some(Duration::from_secs(60)),
            memory_bytes: Some(1024),
            ..LimitsRequest::default()
        };
        let got = max.clamp(&asked);
        assert_eq!(got.wall_time, max.wall_time);
        assert_eq!(got.memory_bytes, 1024);
        assert_eq!(got.output_bytes, max.output_bytes);
        assert_eq!(LimitExceeded::of(Limit::WallTime, &got).limit, 5000);
    }
}
