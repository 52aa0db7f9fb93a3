//! The gateway side of the code-execution service: the sandbox runtimes,
//! the global concurrency gate (a bounded number running, a bounded queue
//! behind it, then 503), per-key rate limits, and metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orrery_core::config::{Config, ExecuteConfig};
use orrery_sandbox::python::ZygoteCommand;
use orrery_sandbox::{
    ExecutionResult, Limits, ModuleStore, ModuleStoreConfig, PythonConfig, PythonRuntime,
    WasmConfig, WasmRuntime,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};
use uuid::Uuid;

/// Why the execution service refused to run something (its HTTP answer
/// is chosen once, in `api::execute`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// A project's module directory could not be opened.
    #[error("the module store could not be opened: {0}")]
    ModuleStore(String),
    /// The Python runtime did not start, or is switched off.
    #[error("the Python runtime is unavailable: {0}")]
    PythonUnavailable(String),
    /// The key ran `per_minute` executions in the last minute.
    #[error("over {per_minute} executions a minute")]
    RateLimited {
        /// The limit (`execute.rate_per_minute`).
        per_minute: u32,
        /// Seconds until the next token.
        retry_after: u64,
    },
    /// Every slot and the queue are taken.
    #[error("every execution slot and the queue are taken")]
    Busy,
    /// The service is stopping.
    #[error("the execution service is shutting down")]
    ShuttingDown,
}

/// Labels of an execution counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecLabels {
    /// `python` or `wasm`.
    pub language: &'static str,
    /// `completed`, `error`, `rejected`, `limit_exceeded`, `cancelled`, `crashed`.
    pub outcome: &'static str,
}

/// Label of a language.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LanguageLabel {
    /// `python` or `wasm`.
    pub language: &'static str,
}

/// Label of a limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// Which limit was hit.
    pub limit: &'static str,
}

/// Execution metrics.
#[derive(Clone, Debug)]
pub struct ExecMetrics {
    /// Executions by language and outcome.
    pub executions: Family<ExecLabels, Counter>,
    /// Duration by language.
    pub duration: Family<LanguageLabel, Histogram>,
    /// Limit hits by limit.
    pub limit_hits: Family<LimitLabel, Counter>,
    /// Executions waiting for a slot.
    pub queue_depth: Gauge,
    /// Executions running.
    pub running: Gauge,
}

impl Default for ExecMetrics {
    fn default() -> Self {
        Self {
            executions: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            limit_hits: Family::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
        }
    }
}

impl ExecMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "orrery_executions",
            "Code executions by language and outcome",
            self.executions.clone(),
        );
        registry.register(
            "orrery_execution_duration_seconds",
            "Duration of code executions",
            self.duration.clone(),
        );
        registry.register(
            "orrery_execution_limit_hits",
            "Executions stopped by a limit, by limit",
            self.limit_hits.clone(),
        );
        registry.register(
            "orrery_execution_queue_depth",
            "Executions waiting for a slot",
            self.queue_depth.clone(),
        );
        registry.register(
            "orrery_executions_running",
            "Executions running now",
            self.running.clone(),
        );
    }

    /// Records a finished execution.
    pub fn record(&self, language: &'static str, result: &ExecutionResult) {
        let outcome = result.outcome.name();
        self.executions
            .get_or_create(&ExecLabels { language, outcome })
            .inc();
        self.duration
            .get_or_create(&LanguageLabel { language })
            .observe(result.duration.as_secs_f64());
        if let Some(hit) = result.limit_hit() {
            self.limit_hits
                .get_or_create(&LimitLabel {
                    limit: hit.what.as_str(),
                })
                .inc();
        }
    }
}

/// A slot to run one execution; frees itself when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// Everything the execute endpoints use.
pub struct Executor {
    /// The Python runtime, or why it is not available.
    pub python: Result<PythonRuntime, String>,
    /// The WebAssembly runtime.
    pub wasm: WasmRuntime,
    /// Uploaded modules, one store per project.
    stores: Mutex<HashMap<Uuid, std::sync::Arc<ModuleStore>>>,
    modules_root: std::path::PathBuf,
    /// Metrics.
    pub metrics: ExecMetrics,
    config: ExecuteConfig,
    slots: std::sync::Arc<Semaphore>,
    waiting: AtomicUsize,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("python", &self.python.is_ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Twice the cores, the default number of executions running at once.
fn default_running() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

impl Executor {
    /// Starts the runtimes. A Python runtime that cannot start is logged
    /// and reported by the endpoints (503), not fatal: WASM still works.
    ///
    /// # Errors
    /// When the WebAssembly engine or the module directory fails.
    pub async fn start(config: &Config, metrics: ExecMetrics) -> anyhow::Result<Self> {
        let ex = &config.execute;
        let limits = Limits {
            wall_time: Duration::from_millis(ex.wall_time_ms),
            cpu_time: Duration::from_millis(ex.cpu_time_ms),
            memory_bytes: ex.memory_bytes,
            output_bytes: ex.output_bytes,
            code_bytes: ex.code_bytes,
            fuel: ex.wasm_fuel,
            ..Limits::default()
        };
        let python = if ex.python {
            match ZygoteCommand::current_exe() {
                Ok(zygote) => {
                    let mut pc = PythonConfig::new(zygote);
                    pc.limits = limits;
                    pc.namespaces = ex.namespaces;
                    if !ex.python_modules.is_empty() {
                        pc.allowed_modules = ex.python_modules.clone();
                    }
                    match PythonRuntime::start(pc).await {
                        Ok(rt) => {
                            let iso = rt.isolation().await;
                            info!(?iso, "python sandbox ready");
                            Ok(rt)
                        }
                        Err(e) => {
                            warn!(error = %e, "python sandbox unavailable");
                            Err(format!("the Python sandbox could not start: {e}"))
                        }
                    }
                }
                Err(e) => Err(format!("the Python sandbox could not start: {e}")),
            }
        } else {
            Err("Python execution is switched off (execute.python = false)".to_owned())
        };
        let wasm = WasmRuntime::new(WasmConfig {
            limits: Limits {
                code_bytes: ex.wasm_module_bytes,
                ..limits
            },
            ..WasmConfig::default()
        })?;
        let running = if ex.max_running == 0 {
            default_running()
        } else {
            ex.max_running
        };
        Ok(Self {
            python,
            wasm,
            stores: Mutex::new(HashMap::new()),
            modules_root: config.data_dir.join("wasm"),
            metrics,
            config: ex.clone(),
            slots: std::sync::Arc::new(Semaphore::new(running)),
            waiting: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The uploaded modules of a project (`<data_dir>/wasm/<project>/`).
    ///
    /// # Errors
    /// [`ExecError::ModuleStore`] when the directory cannot be created or
    /// read.
    pub fn modules(&self, project: Uuid) -> Result<std::sync::Arc<ModuleStore>, ExecError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(&project) {
            return Ok(store.clone());
        }
        let mut config = ModuleStoreConfig::new(self.modules_root.join(project.to_string()));
        config.max_module_bytes = self.config.wasm_module_bytes;
        config.max_total_bytes = self.config.wasm_store_bytes;
        let store = std::sync::Arc::new(
            ModuleStore::open(config, self.wasm.clone())
                .map_err(|e| ExecError::ModuleStore(e.to_string()))?,
        );
        stores.insert(project, store.clone());
        Ok(store)
    }

    /// The Python runtime.
    ///
    /// # Errors
    /// [`ExecError::PythonUnavailable`] when it could not start or is
    /// switched off.
    pub fn python(&self) -> Result<&PythonRuntime, ExecError> {
        self.python
            .as_ref()
            .map_err(|why| ExecError::PythonUnavailable(why.clone()))
    }

    /// Takes one token of the key's bucket.
    ///
    /// # Errors
    /// [`ExecError::RateLimited`] when the bucket is empty.
    pub fn check_rate(&self, key: Uuid) -> Result<(), ExecError> {
        let per_minute = f64::from(self.config.rate_per_minute.max(1));
        let per_sec = per_minute / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(key).or_insert((per_minute, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_sec).ceil() as u64;
            Err(ExecError::RateLimited {
                per_minute: self.config.rate_per_minute,
                retry_after: wait.max(1),
            })
        }
    }

    /// Waits for a slot to run in: at once when one is free, in the queue
    /// while it has room.
    ///
    /// # Errors
    /// [`ExecError::Busy`] when the queue is full,
    /// [`ExecError::ShuttingDown`] when the service stops.
    pub async fn slot(&self) -> Result<Slot, ExecError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let before = self.waiting.fetch_add(1, Ordering::AcqRel);
                if before >= self.config.max_queued {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(ExecError::Busy);
                }
                self.metrics.queue_depth.inc();
                let permit = self.slots.clone().acquire_owned().await;
                self.metrics.queue_depth.dec();
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                permit.map_err(|_| ExecError::ShuttingDown)?
            }
        };
        self.metrics.running.inc();
        Ok(Slot {
            _permit: permit,
            running: self.metrics.running.clone(),
        })
    }
}
