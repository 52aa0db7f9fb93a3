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
//! - output capped per stream at the output limit.
//!
//! Compiled code is cached by the SHA-256 of the submitted bytes (an
//! in-memory LRU), so running a module a second time does not compile it.

mod cache;
mod run;
mod store;

pub use store::{ModuleInfo, ModuleStore, ModuleStoreConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, ExternType, Module};

use crate::SandboxError;
use crate::limits::{Limits, LimitsRequest};
use crate::result::ExecutionResult;
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
    epoch_tick: Duration,
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
                epoch_tick: config.epoch_tick,
                cache: Lru::new(config.cache_entries),
                compilations: AtomicU64::new(0),
                ticker_stop,
            }),
        })
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

    /// Compiles (or finds in the cache) and runs `bytes`.
    ///
    /// # Errors
    /// [`SandboxError::InvalidModule`] when the bytes are not a runnable
    /// program; what the program does, limits included, is in the result.
    pub async fn execute(
        &self,
        bytes: Vec<u8>,
        request: WasmRequest,
    ) -> Result<ExecutionResult, SandboxError> {
        let limits = self.inner.limits.clamp(&request.limits);
        if bytes.len() as u64 > limits.code_bytes {
            return Ok(run::code_too_large(&limits));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let compiled = this.compile(&bytes)?;
            Ok(this.run_blocking(&compiled, request, limits))
        })
        .await
        .map_err(|e| SandboxError::Engine(format!("execution task failed: {e}")))?
    }

    /// Runs an already compiled program.
    pub async fn run(&self, compiled: Compiled, request: WasmRequest) -> ExecutionResult {
        let limits = self.inner.limits.clamp(&request.limits);
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.run_blocking(&compiled, request, limits))
            .await
            .unwrap_or_else(|e| run::crashed(format!("execution task failed: {e}")))
    }

    fn run_blocking(
        &self,
        compiled: &Compiled,
        request: WasmRequest,
        limits: Limits,
    ) -> ExecutionResult {
        let ticks = limits
            .wall_time
            .as_nanos()
            .div_ceil(self.inner.epoch_tick.as_nanos().max(1));
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX).max(1);
        let ctx = run::RunContext {
            engine: &self.inner.engine,
            module_linker: &self.inner.module_linker,
            component_linker: &self.inner.component_linker,
            limits,
            ticks,
            request,
        };
        match &compiled.program {
            Program::Module(module) => run::module(ctx, module),
            Program::Component(component) => run::component(ctx, component),
        }
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
