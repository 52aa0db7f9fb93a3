//! The WebAssembly plugin host: components implementing
//! `sdk/wit/plugin.wit`, on the sandbox's engine (fuel, epoch interruption,
//! component model: one engine configuration for all of Orrery).
//!
//! - [`WasmHost::compile`] checks that bytes are a component of the
//!   `plugin` world (its imports are all offered, its exports typed as the
//!   WIT says) and compiles it once; compiled code is kept on disk by the
//!   SHA-256 of the bytes, so a restart does not compile again.
//! - [`WasmStage`] is one pipeline stage: a pool of configured instances
//!   reused from batch to batch; each batch gets fresh fuel, an epoch
//!   deadline and the memory cap; an instance that trapped is thrown away
//!   and the next batch gets a fresh one.
//!
//! What a plugin can reach: `orrery:plugin/host` (log, rate-limited into
//! the gateway's log under the plugin's name; the current time) and a WASI
//! context that grants nothing ([`orrery_sandbox::wasm::sealed_wasi`]): no
//! files, no sockets, no environment.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orrery_core::event::Envelope;
use orrery_core::metrics::PluginMetrics;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use orrery_sandbox::wasm::{Limiter, WasmConfig, WasmRuntime, sealed_wasi};
use orrery_sandbox::{Limit, Limits};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::convert::{apply, clip, to_wit};
use super::{Breaker, Fault, LogGate, PluginLimits};

/// Bindings generated from the plugin interface, `sdk/wit/plugin.wit`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../sdk/wit",
    });
}

use bindings::orrery::plugin::host::{self, Level};
use bindings::orrery::plugin::types as wit;

/// How often the engine's epoch advances: the granularity of wall-time
/// limits.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Compiles and instantiates plugin components; one per process.
pub struct WasmHost {
    // Owns the engine and its epoch ticker.
    runtime: WasmRuntime,
    linker: Linker<PluginState>,
    cache_dir: Option<PathBuf>,
    metrics: PluginMetrics,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// A compiled plugin component, checked against the world.
pub struct WasmCode {
    /// Hex SHA-256 of the component's bytes: its version.
    pub sha256: String,
    pre: bindings::PluginPre<PluginState>,
}

impl std::fmt::Debug for WasmCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmCode")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The state of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    log: Arc<LogGate>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.log.line(level, &message);
    }

    fn now_ms(&mut self) -> i64 {
        orrery_core::event::now_ms()
    }
}

impl wit::Host for PluginState {}

impl WasmHost {
    /// A host whose compiled code is kept in `cache_dir` (created when
    /// missing; `None`: compile at every start).
    ///
    /// # Errors
    /// When wasmtime rejects the configuration or the linker cannot be
    /// built.
    pub fn new(cache_dir: Option<PathBuf>, metrics: PluginMetrics) -> anyhow::Result<Self> {
        let runtime = WasmRuntime::new(WasmConfig {
            limits: Limits::default(),
            cache_entries: 1,
            epoch_tick: EPOCH_TICK,
        })?;
        let mut linker = Linker::new(runtime.engine());
        let link = |e: wasmtime::Error| anyhow::anyhow!("linking the plugin host: {e:#}");
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link)?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            runtime,
            linker,
            cache_dir,
            metrics,
        })
    }

    fn engine(&self) -> &Engine {
        self.runtime.engine()
    }

    /// The metrics of custom plugins.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// Checks and compiles a plugin component.
    ///
    /// # Errors
    /// A message for the author: not WebAssembly, a core module instead of
    /// a component, an import the host does not offer, an export missing
    /// or of the wrong type.
    pub fn compile(&self, bytes: &[u8]) -> Result<WasmCode, String> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err("not WebAssembly (no `\\0asm` header)".to_owned());
        }
        // Layer 1 is a component; a core module has version 1, layer 0.
        if bytes[6..8] != [1, 0] {
            return Err(
                "a core WebAssembly module, not a component: build the plugin for \
                 `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
                    .to_owned(),
            );
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.load_or_compile(&sha256, bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("the component does not fit the plugin world: {e:#}"))?;
        let pre = bindings::PluginPre::new(pre)
            .map_err(|e| format!("the component does not export the plugin world: {e:#}"))?;
        Ok(WasmCode { sha256, pre })
    }

    fn load_or_compile(&self, sha256: &str, bytes: &[u8]) -> Result<Component, String> {
        let path = self.cache_dir.as_ref().map(|dir| {
            let mut h = DefaultHasher::new();
            self.engine().precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
        });
        if let Some(p) = &path
            && p.exists()
            && let Some(c) = deserialize(self.engine(), p)
        {
            return Ok(c);
        }
        let component = Component::new(self.engine(), bytes)
            .map_err(|e| format!("not a valid component: {e:#}"))?;
        self.metrics.compilations.inc();
        if let Some(p) = &path {
            match component.serialize() {
                Ok(code) => {
                    let tmp = p.with_extension("tmp");
                    if let Err(error) =
                        std::fs::write(&tmp, code).and_then(|()| std::fs::rename(&tmp, p))
                    {
                        tracing::warn!(path = %p.display(), %error, "cannot cache a compiled plugin");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot serialise a compiled plugin"),
            }
        }
        Ok(component)
    }

    /// A configured instance of `code`, checking that its `configure`
    /// accepts `config` (JSON object text).
    fn instantiate(
        &self,
        code: &WasmCode,
        config: &str,
        limits: &PluginLimits,
        log: &Arc<LogGate>,
    ) -> Result<Instance, (Fault, String)> {
        let state = PluginState {
            wasi: sealed_wasi().build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes, 10_000),
            log: Arc::clone(log),
        };
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limiter);
        arm(&mut store, limits.fuel, deadline_ticks(limits.wall_time_ms));
        let plugin = code
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e))?;
        match plugin.call_configure(&mut store, config) {
            Ok(Ok(())) => Ok(Instance { store, plugin }),
            Ok(Err(message)) => Err((Fault::Config, clip(message))),
            Err(e) => Err(classify(&store, &e)),
        }
    }
}

impl WasmHost {
    /// Runs `events` once through a fresh instance of `code` configured
    /// with `config` (blocking): the check a plugin passes before it is
    /// loaded, and what `orrery plugin test` does.
    ///
    /// # Errors
    /// The plugin's message when it refuses the config, or what stopped it.
    pub fn trial(
        &self,
        code: &WasmCode,
        config: &serde_json::Map<String, serde_json::Value>,
        limits: &PluginLimits,
        name: &str,
        events: &[wit::Event],
    ) -> Result<Vec<wit::Verdict>, String> {
        let config = serde_json::Value::Object(config.clone()).to_string();
        let log = Arc::new(LogGate::new(
            name,
            limits.log_lines_per_second,
            PluginMetrics::of(&self.metrics.log_dropped, name),
        ));
        let mut instance = self.instantiate(code, &config, limits, &log).map_err(
            |(fault, message)| match fault {
                Fault::Config => format!("`configure` refused the config: {message}"),
                _ => message,
            },
        )?;
        arm(
            &mut instance.store,
            limits.fuel,
            deadline_ticks(limits.wall_time_ms),
        );
        instance
            .plugin
            .call_process(&mut instance.store, events)
            .map_err(|e| classify(&instance.store, &e).1)
    }
}

/// Reads a compiled component written by [`WasmHost::load_or_compile`].
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &std::path::Path) -> Option<Component> {
    // SAFETY: the file is in Orrery's own cache directory, written by
    // `Component::serialize` of this engine configuration and named by the
    // SHA-256 of the source and the engine's compatibility hash; wasmtime
    // also checks its version and settings before using it. Only a user
    // able to write to the data directory could place another file there.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(c) => Some(c),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring a cached plugin");
            None
        }
    }
}

struct Instance {
    store: Store<PluginState>,
    plugin: bindings::Plugin,
}

/// Fresh fuel and deadline for one call.
fn arm(store: &mut Store<PluginState>, fuel: u64, ticks: u64) {
    // Fuel is on in the engine: this cannot fail.
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(ticks);
}

fn deadline_ticks(ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis().max(1) as u64;
    ms.div_ceil(tick).max(1)
}

/// Names what stopped a guest.
fn classify(store: &Store<PluginState>, e: &wasmtime::Error) -> (Fault, String) {
    if store.data().limiter.hit() == Some(Limit::Memory) {
        return (Fault::Memory, "ran over its memory limit".to_owned());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (Fault::Fuel, "ran out of fuel".to_owned()),
        Some(Trap::Interrupt) => (Fault::WallTime, "ran past its time limit".to_owned()),
        Some(trap) => (Fault::Trap, format!("trapped: {trap}")),
        None => (Fault::Trap, clip(format!("failed: {e:#}"))),
    }
}

/// One pipeline stage running a WebAssembly plugin.
pub struct WasmStage {
    inner: Arc<StageInner>,
}

struct StageInner {
    name: String,
    host: Arc<WasmHost>,
    code: Arc<WasmCode>,
    config: String,
    limits: PluginLimits,
    pool: Mutex<Vec<Instance>>,
    permits: Arc<Semaphore>,
    breaker: Breaker,
    log: Arc<LogGate>,
    batches: AtomicU64,
}

impl std::fmt::Debug for WasmStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmStage")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.code.sha256)
            .finish_non_exhaustive()
    }
}

impl WasmStage {
    /// A stage of plugin `name` with `config` (a JSON object) under
    /// `limits`, whose wall time is at most `timeout`. One instance is made
    /// now: it checks that the plugin accepts the config.
    ///
    /// # Errors
    /// The plugin's own message when it refuses the config, or what stopped
    /// it while starting.
    pub fn new(
        host: &Arc<WasmHost>,
        name: &str,
        code: Arc<WasmCode>,
        config: &serde_json::Map<String, serde_json::Value>,
        mut limits: PluginLimits,
        timeout: Duration,
    ) -> Result<Self, String> {
        // The guest's own deadline ends just before the stage's time limit,
        // so the batch fails with what stopped the guest, not a timeout.
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let tick = EPOCH_TICK.as_millis().max(1) as u64;
        let before_timeout = timeout_ms.saturating_sub(2 * tick).max(tick);
        limits.wall_time_ms = limits.wall_time_ms.min(before_timeout);
        let config = serde_json::Value::Object(config.clone()).to_string();
        let log = Arc::new(LogGate::new(
            name,
            limits.log_lines_per_second,
            PluginMetrics::of(&host.metrics.log_dropped, name),
        ));
        let first = host
            .instantiate(&code, &config, &limits, &log)
            .map_err(|(_, message)| message)?;
        Ok(Self {
            inner: Arc::new(StageInner {
                name: name.to_owned(),
                host: Arc::clone(host),
                code,
                config,
                limits,
                pool: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(limits.instances as usize)),
                breaker: Breaker::default(),
                log,
                batches: AtomicU64::new(0),
            }),
        })
    }
}

impl StageInner {
    /// Runs one batch on a pooled (or new) instance; blocking.
    ///
    /// Faults are counted and fed to the breaker here, on the blocking
    /// side: when the pipeline's time limit gives up on the batch first,
    /// the guest still runs to its own deadline, and what stopped it must
    /// still count (or a looping plugin would never be suspended).
    fn run(&self, events: &[wit::Event]) -> Result<Vec<wit::Verdict>, (Fault, String)> {
        // Batches that waited for an instance while the plugin was being
        // suspended do not run it again.
        if let Err(reason) = self.breaker.admit() {
            self.count(Fault::Suspended);
            return Err((Fault::Suspended, reason));
        }
        let result = self.run_instance(events);
        match &result {
            Ok(_) => self.breaker.record(None),
            Err((fault, _)) => {
                self.count(*fault);
                self.breaker.record(Some(*fault));
            }
        }
        result
    }

    fn count(&self, fault: Fault) {
        self.host.metrics.fault(&self.name, fault.as_str()).inc();
    }

    fn run_instance(&self, events: &[wit::Event]) -> Result<Vec<wit::Verdict>, (Fault, String)> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => {
                PluginMetrics::of(&self.host.metrics.instances, &self.name).inc();
                self.host
                    .instantiate(&self.code, &self.config, &self.limits, &self.log)?
            }
        };
        arm(
            &mut instance.store,
            self.limits.fuel,
            deadline_ticks(self.limits.wall_time_ms),
        );
        match instance.plugin.call_process(&mut instance.store, events) {
            Ok(verdicts) => {
                self.pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(instance);
                Ok(verdicts)
            }
            // The instance may be in any state after a trap: dropped here,
            // the next batch gets a fresh one.
            Err(e) => Err(classify(&instance.store, &e)),
        }
    }
}

#[async_trait]
impl Plugin for WasmStage {
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
            inner.count(Fault::Suspended);
            return Err(failed(reason));
        }
        let events: Vec<wit::Event> = batch.iter().map(to_wit).collect();
        let permit = Arc::clone(&inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| failed("the plugin host is shutting down".to_owned()))?;
        let worker = Arc::clone(inner);
        let answer = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let answer = worker.run(&events);
            (events, answer)
        })
        .await;
        inner.batches.fetch_add(1, Ordering::Relaxed);
        let (events, answer) = answer.map_err(|e| {
            inner.count(Fault::Trap);
            failed(format!("panicked: {e}"))
        })?;
        // Counted on the blocking side already.
        let verdicts = answer.map_err(|(_, reason)| failed(reason))?;
        if verdicts.len() != events.len() {
            inner.count(Fault::Malformed);
            return Err(failed(format!(
                "returned {} verdicts for {} events",
                verdicts.len(),
                events.len()
            )));
        }
        let mut out = Vec::with_capacity(batch.len());
        for ((env, sent), verdict) in batch.iter_mut().zip(&events).zip(verdicts) {
            out.push(apply(env, sent, verdict).unwrap_or_else(|reason| {
                inner.count(Fault::Malformed);
                Verdict::Fail(format!("malformed answer: {reason}"))
            }));
        }
        Ok(out)
    }
}
