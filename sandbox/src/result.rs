//! What an execution produces, the same shape for Python and WASM.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::LimitExceeded;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of output, delivered while the program runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// stdout or stderr.
    pub stream: Stream,
    /// The text (UTF-8; a character split between reads is held back until
    /// complete, invalid bytes become U+FFFD).
    pub data: String,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The code ran to its end (for WASM, see `exit_code`).
    Completed,
    /// The code raised an exception (Python) or trapped (WASM).
    Error {
        /// Exception type (`ZeroDivisionError`) or `trap`.
        error_type: String,
        /// The message.
        message: String,
        /// Python: a traceback showing only the user's lines.
        traceback: Option<String>,
    },
    /// The sandbox refused the code (forbidden attribute, name or import).
    Rejected {
        /// What was refused, with the line.
        reason: String,
    },
    /// A limit stopped the code.
    LimitExceeded(LimitExceeded),
    /// The caller cancelled the execution.
    Cancelled,
    /// The process died in an unexpected way (a signal not sent by us).
    Crashed {
        /// What is known about the death.
        reason: String,
    },
}

impl Outcome {
    /// The outcome's one name, as the API's `status`, the metrics and the
    /// logs spell it (the serde tag says the same).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Error { .. } => "error",
            Self::Rejected { .. } => "rejected",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::Cancelled => "cancelled",
            Self::Crashed { .. } => "crashed",
        }
    }
}

/// The result of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// How it ended.
    pub outcome: Outcome,
    /// Everything printed to stdout (up to the output limit).
    pub stdout: String,
    /// Everything printed to stderr (up to the output limit).
    pub stderr: String,
    /// True when output past the limit was dropped.
    pub output_truncated: bool,
    /// Python: `repr()` of the final expression statement, unless `None`.
    pub value: Option<String>,
    /// WASM: the exit code passed to `proc_exit` / `wasi:cli/exit`.
    pub exit_code: Option<i32>,
    /// Time from start to end.
    pub duration: Duration,
}

impl ExecutionResult {
    /// An empty result with the given outcome.
    #[must_use]
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            value: None,
            exit_code: None,
            duration: Duration::ZERO,
        }
    }

    /// The limit that stopped the code, if one did.
    #[must_use]
    pub fn limit_hit(&self) -> Option<LimitExceeded> {
        match &self.outcome {
            Outcome::LimitExceeded(hit) => Some(*hit),
            _ => None,
        }
    }
}

/// Incremental UTF-8 decoding for chunked output: keeps an incomplete
/// trailing character for the next chunk.
#[derive(Debug, Default)]
pub(crate) struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let split = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..split]).into_owned();
        self.pending.drain(..split);
        text
    }

    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing, possibly incomplete UTF-8 sequence (0..=3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 != 0b1000_0000 {
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return 0,
            };
            return if need > back { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_held_until_complete() {
        let mut c = Utf8Chunker::default();
        let bytes = "héllo ✓".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&c.push(std::slice::from_ref(b)));
        }
        out.push_str(&c.finish());
        assert_eq!(out, "héllo ✓");
    }
}
