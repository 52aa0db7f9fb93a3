//! One handle on a running execution, whichever the language: output as it
//! is written, stdin (Python), cancel, and the result.

use crate::python::Execution;
use crate::result::{ExecutionResult, OutputChunk};
use crate::wasm::WasmExecution;

/// A running execution of Python or WebAssembly.
#[derive(Debug)]
pub enum Running {
    /// Python, in a sandboxed worker.
    Python(Execution),
    /// WebAssembly, in wasmtime.
    Wasm(WasmExecution),
}

impl Running {
    /// The next chunk of output; `None` once the program ended.
    pub async fn next_output(&mut self) -> Option<OutputChunk> {
        match self {
            Self::Python(e) => e.next_output().await,
            Self::Wasm(e) => e.next_output().await,
        }
    }

    /// Sends more stdin; false when stdin is closed (a WASM program gets
    /// all of its stdin at the start).
    pub fn write_stdin(&self, data: &str) -> bool {
        match self {
            Self::Python(e) => e.write_stdin(data.as_bytes()),
            Self::Wasm(_) => false,
        }
    }

    /// Ends stdin (Python).
    pub fn close_stdin(&mut self) {
        if let Self::Python(e) = self {
            e.close_stdin();
        }
    }

    /// Stops the program; its result says `cancelled`.
    pub fn cancel(&mut self) {
        match self {
            Self::Python(e) => e.cancel(),
            Self::Wasm(e) => e.cancel(),
        }
    }

    /// Waits for the end and answers the result.
    pub async fn wait(self) -> ExecutionResult {
        match self {
            Self::Python(e) => e.wait().await,
            Self::Wasm(e) => e.wait().await,
        }
    }
}
