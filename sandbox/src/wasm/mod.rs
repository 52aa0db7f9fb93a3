//! Untrusted WebAssembly: [`WasmRuntime`] runs WASI preview 1 command
//! modules, preview 2 components (`wasi:cli/run`) and WAT text in
//! wasmtime.
//!
//! What a guest gets: its arguments, the request's stdin, captured stdout
//! and stderr, a clock and random numbers. No preopened directory, no
//! socket, no environment variable. What stops it:
//! - fuel (`Config::consume_fuel`): a budget of instructions;
//! - an epoch deadline: a shared ticker thread bumps the engine's epoch
//!   every `epoch_tick`; a store traps once its wall time is spent;
//! - a resource limiter: linear memory and table elements, checked on
//!   instantiation and on every grow;
//! - output: stdout and stderr share the output limit; past it the guest
//!   traps and the result is flagged truncated.
//!
//! Output is delivered as chunks while the guest runs ([`WasmExecution`]);
//! stdin is given whole at the start.
//!
//! Compiled code is cached by the SHA-256 of the submitted bytes (an
//! in-memory LRU), so running a module a second time does not compile it.

mod cache;
mod output;
mod run;
mod store;

pub use run::{Limiter, sealed_wasi};
pub use store::{ModuleInfo, ModuleStore, ModuleStoreConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, ExternType, Module};

use crate::SandboxError;
use crate::limits::{Limits, LimitsRequest};
use crate::result::{ExecutionResult, OutputChunk};
use cache::Lru;

/// Configuration of a [`WasmRuntime`].
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// The most any request may get.
    pub limits: Limits,
    /// Compiled modules kept in memory.
    pub cache_entries: usize,
    /// Granularity of the wall-clock deadline.
    pub epoch_tick: Duration,
}

impl Default for WasmConfig {
    fn default() -> Self {
        // Modules are bigger than scripts: 16 MiB instead of 64 KiB.
        let limits = Limits {
            code_bytes: 16 * 1024 * 1024,
            ..Limits::default()
        };
        Self {
            limits,
            cache_entries: 64,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// What kind of program some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasmKind {
    /// A core module exporting `_start` (WASI preview 1 command).
    Module,
    /// A component exporting `wasi:cli/run` (WASI preview 2 command).
    Component,
}

/// A validated, compiled program (cheap to clone).
#[derive(Clone)]
pub struct Compiled {
    /// Hex SHA-256 of the submitted bytes.
    pub sha256: String,
    program: Program,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sha256", &self.sha256)
            .field("kind", &self.kind())
            .finish()
    }
}

#[derive(Clone)]
enum Program {
    Module(Module),
    Component(Component),
}

impl Compiled {
    /// Module or component.
    #[must_use]
    pub fn kind(&self) -> WasmKind {
        match self.program {
            Program::Module(_) => WasmKind::Module,
            Program::Component(_) => WasmKind::Component,
        }
    }
}

/// One request to run WebAssembly.
#[derive(Debug, Clone, Default)]
pub struct WasmRequest {
    /// Arguments after `argv[0]` (which is `"main"`).
    pub args: Vec<String>,
    /// The whole of stdin.
    pub stdin: Vec<u8>,
    /// Lower limits for this request (capped by the configured ones).
    pub limits: LimitsRequest,
}

/// Runs untrusted WebAssembly. Cheap to clone.
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    module_linker: wasmtime::Linker<run::ModuleState>,
    component_linker: wasmtime::component::Linker<run::ComponentState>,
    limits: Limits,
    cache: Lru<Compiled>,
    compilations: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Builds the engine and starts the epoch ticker thread.
    ///
    /// # Errors
    /// When wasmtime rejects the configuration.
    pub fn new(config: WasmConfig) -> Result<Self, SandboxError> {
        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .wasm_component_model(true);
        let engine = Engine::new(&wasm).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let (module_linker, component_linker) =
            run::linkers(&engine).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("orrery-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(SandboxError::io("starting the epoch thread"))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                module_linker,
                component_linker,
                limits: config.limits,
                cache: Lru::new(config.cache_entries),
                compilations: AtomicU64::new(0),
                ticker_stop,
            }),
        })
    }

    /// The engine (fuel, epoch interruption, component model), whose epoch
    /// this runtime's ticker advances every `epoch_tick`. Orrery's
    /// WebAssembly plugins run on it too: one engine configuration.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configured maximum limits.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The compiled program for `sha256`, if it is in the cache.
    #[must_use]
    pub fn cached(&self, sha256: &str) -> Option<Compiled> {
        self.inner.cache.get(sha256)
    }

    /// Drops `sha256` from the compiled-code cache.
    pub fn forget(&self, sha256: &str) {
        self.inner.cache.remove(sha256);
    }

    /// How many times code was compiled (cache misses) since start.
    #[must_use]
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Validates and compiles `bytes` (binary module, binary component, or
    /// WAT text), or returns the cached result for the same bytes.
    /// Compilation is CPU-heavy: call it from a blocking context.
    ///
    /// # Errors
    /// [`SandboxError::InvalidModule`] naming the problem: not WebAssembly,
    /// invalid, no `_start` / `wasi:cli/run`, or an import a sandboxed
    /// program cannot have.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, SandboxError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(hit) = self.inner.cache.get(&sha256) {
            return Ok(hit);
        }
        let program = compile_program(&self.inner.engine, bytes)?;
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        let compiled = Compiled {
            sha256: sha256.clone(),
            program,
        };
        self.inner.cache.insert(sha256, compiled.clone());
        Ok(compiled)
    }

    /// Compiles (or finds in the cache) and runs `bytes` to the end.
    ///
    /// # Errors
    /// [`SandboxError::InvalidModule`] when the bytes are not a runnable
    /// program; what the program does, limits included, is in the result.
    pub async fn execute(
        &self,
        bytes: Vec<u8>,
        request: WasmRequest,
    ) -> Result<ExecutionResult, SandboxError> {
        Ok(self.start(bytes, request).await?.wait().await)
    }

    /// Compiles (or finds in the cache) and starts `bytes`; the handle
    /// streams its output.
    ///
    /// # Errors
    /// As [`Self::execute`].
    pub async fn start(
        &self,
        bytes: Vec<u8>,
        request: WasmRequest,
    ) -> Result<WasmExecution, SandboxError> {
        let limits = self.inner.limits.clamp(&request.limits);
        if bytes.len() as u64 > limits.code_bytes {
            return Ok(WasmExecution::finished(run::code_too_large(&limits)));
        }
        let this = self.clone();
        let compiled = tokio::task::spawn_blocking(move || this.compile(&bytes))
            .await
            .map_err(|e| SandboxError::Engine(format!("compile task failed: {e}")))??;
        Ok(self.spawn(compiled, request))
    }

    /// Runs an already compiled program to the end.
    pub async fn run(&self, compiled: Compiled, request: WasmRequest) -> ExecutionResult {
        self.spawn(compiled, request).wait().await
    }

    /// Starts an already compiled program (on tokio's blocking pool).
    #[must_use]
    pub fn spawn(&self, compiled: Compiled, request: WasmRequest) -> WasmExecution {
        let limits = self.inner.limits.clamp(&request.limits);
        let (tx, output) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let this = self.clone();
        let flag = cancel.clone();
        let done = tokio::task::spawn_blocking(move || {
            let ctx = run::RunContext {
                engine: &this.inner.engine,
                module_linker: &this.inner.module_linker,
                component_linker: &this.inner.component_linker,
                limits,
                request,
                chunks: Some(tx),
                cancel: flag,
            };
            match &compiled.program {
                Program::Module(module) => run::module(ctx, module),
                Program::Component(component) => run::component(ctx, component),
            }
        });
        WasmExecution {
            output,
            cancel: CancelOnDrop(cancel),
            done,
        }
    }
}

/// A running WASM execution: its output as produced, cancel, result.
/// Dropping it cancels the execution.
#[derive(Debug)]
pub struct WasmExecution {
    output: mpsc::UnboundedReceiver<OutputChunk>,
    cancel: CancelOnDrop,
    done: JoinHandle<ExecutionResult>,
}

#[derive(Debug)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl WasmExecution {
    fn finished(result: ExecutionResult) -> Self {
        let (_, output) = mpsc::unbounded_channel();
        let done = tokio::spawn(async move { result });
        Self {
            output,
            cancel: CancelOnDrop(Arc::new(AtomicBool::new(false))),
            done,
        }
    }

    /// The next piece of stdout/stderr; `None` once the program ended.
    pub async fn next_output(&mut self) -> Option<OutputChunk> {
        self.output.recv().await
    }

    /// Stops the program at the next epoch tick; its result says
    /// `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.0.store(true, Ordering::Release);
    }

    /// Waits for the end and returns the result (full output included).
    pub async fn wait(self) -> ExecutionResult {
        let WasmExecution { done, cancel, .. } = self;
        let result = done.await;
        drop(cancel);
        result.unwrap_or_else(|e| run::crashed(format!("execution task failed: {e}")))
    }
}

fn invalid(message: impl Into<String>) -> SandboxError {
    SandboxError::InvalidModule(message.into())
}

/// Validation at upload/compile time: the problem is named in the error.
fn compile_program(engine: &Engine, bytes: &[u8]) -> Result<Program, SandboxError> {
    let component = if bytes.starts_with(b"\0asm") {
        match bytes.get(4..8) {
            Some([1, 0, 0, 0]) => false,
            Some([_, _, 1, 0]) => true,
            _ => return Err(invalid("unknown WebAssembly binary version")),
        }
    } else {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(invalid(
                "not WebAssembly: no \\0asm header and not WAT text",
            ));
        };
        let text = text.trim_start();
        if !text.starts_with('(') && !text.starts_with(";;") {
            return Err(invalid(
                "not WebAssembly: no \\0asm header and not WAT text",
            ));
        }
        text.starts_with("(component")
    };
    if component {
        let component = Component::new(engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
        let ty = component.component_type();
        if !ty
            .exports(engine)
            .any(|(name, _)| name.starts_with("wasi:cli/run@"))
        {
            return Err(invalid("component does not export wasi:cli/run"));
        }
        return Ok(Program::Component(component));
    }
    let module = Module::new(engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(invalid(
                "export _start is not a function taking and returning nothing",
            ));
        }
        None => {
            return Err(invalid(
                "module does not export _start (not a WASI command)",
            ));
        }
    }
    for import in module.imports() {
        if import.module() != "wasi_snapshot_preview1" {
            return Err(invalid(format!(
                "module imports {}::{}, only wasi_snapshot_preview1 is provided",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(Program::Module(module))
}
