//! Running untrusted code for Orrery: Python and WebAssembly.
//!
//! Promise 3 of the design: code sent to the execution service can compute
//! and print, and nothing else. This crate knows nothing of HTTP; the
//! gateway (and Orrery's Python plugins) call it.
//!
//! Concepts, one line each:
//! - [`PythonRuntime`]: runs Python source in a fresh forked process per
//!   execution, behind restricted builtins (wall 1) and rlimits + seccomp +
//!   namespaces (wall 2). See [`python`].
//! - [`Limits`] / [`LimitsRequest`]: the configured maximum, and what one
//!   request asks for (it may lower, never raise).
//! - [`ExecutionResult`] / [`Outcome`]: the same result for every language:
//!   stdout, stderr, value, error, the limit hit, duration.
//! - [`WasmRuntime`]: runs WASI preview 1 modules, preview 2 components and
//!   WAT in wasmtime with fuel, an epoch deadline and memory/table caps;
//!   compiled code is cached by SHA-256. See [`wasm`].
//! - [`ModuleStore`]: WASM programs uploaded once (validated, content
//!   addressed by SHA-256, persisted in a directory) and run by id.
//! - [`Execution`]: a running Python execution; stream its
//!   [`OutputChunk`]s, send stdin, cancel, wait.
//!
//! # Hosting the zygote
//!
//! Python runs in a zygote process, which is the host binary re-executed
//! with a hidden subcommand. The host's `main` must hand over to
//! [`python::zygote_main`] before doing anything else:
//!
//! ```no_run
//! use orrery_sandbox::python::{self, PythonConfig, PythonRequest, PythonRuntime, ZygoteCommand};
//!
//! fn main() {
//!     if std::env::args().nth(1).as_deref() == Some(python::ZYGOTE_SUBCOMMAND) {
//!         python::zygote_main();
//!     }
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let config = PythonConfig::new(ZygoteCommand::current_exe().unwrap());
//!         let python = PythonRuntime::start(config).await.unwrap();
//!         let result = python.execute(PythonRequest::new("print(sum(range(1000)))")).await.unwrap();
//!         assert_eq!(result.stdout, "499500\n");
//!     });
//! }
//! ```
//!
//! # Finding libpython without `LD_LIBRARY_PATH`
//!
//! A binary embedding Python must carry an rpath to the directory of
//! `libpython`. Link arguments do not propagate from a library's build
//! script, so the binary's own `build.rs` does it (with
//! `pyo3-build-config` as a build dependency):
//!
//! ```ignore
//! fn main() {
//!     if let Some(dir) = pyo3_build_config::get().lib_dir() {
//!         println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
//!     }
//! }
//! ```

pub mod error;
pub mod limits;
pub mod python;
pub mod result;
pub mod running;
pub mod wasm;

pub use error::SandboxError;
pub use limits::{Limit, LimitExceeded, Limits, LimitsRequest};
pub use python::{Execution, PythonConfig, PythonRequest, PythonRuntime};
pub use result::{ExecutionResult, Outcome, OutputChunk, Stream};
pub use running::Running;
pub use wasm::{
    ModuleInfo, ModuleStore, ModuleStoreConfig, WasmConfig, WasmExecution, WasmRequest, WasmRuntime,
};
