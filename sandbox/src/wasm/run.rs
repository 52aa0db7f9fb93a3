//! Running one compiled program in a fresh store, and reading how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Module, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::WasmRequest;
use super::output::{Budget, OutputSink};
use crate::limits::{Limit, LimitExceeded, Limits};
use crate::result::{ExecutionResult, Outcome, OutputChunk, Stream};

/// Longest trap message kept in a result.
const MAX_MESSAGE: usize = 4096;

pub(crate) struct RunContext<'a> {
    pub engine: &'a Engine,
    pub module_linker: &'a wasmtime::Linker<ModuleState>,
    pub component_linker: &'a wasmtime::component::Linker<ComponentState>,
    pub limits: Limits,
    pub request: WasmRequest,
    pub chunks: Option<UnboundedSender<OutputChunk>>,
    pub cancel: Arc<AtomicBool>,
}

/// Why the epoch callback stopped the guest.
#[derive(Debug, Clone, Copy)]
enum Stop {
    WallTime,
    Cancelled,
}

/// Memory and table caps that remember which one refused a grow: a
/// store's `ResourceLimiter`, for the execution service and for Orrery's
/// WebAssembly plugins alike.
#[derive(Debug, Clone)]
pub struct Limiter {
    memory: usize,
    table: usize,
    hit: Option<Limit>,
}

impl Limiter {
    /// Caps linear memory at `memory_bytes` and tables at `table_elements`.
    #[must_use]
    pub fn new(memory_bytes: u64, table_elements: u32) -> Self {
        Self {
            memory: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            table: table_elements as usize,
            hit: None,
        }
    }

    /// The cap a grow ran into, if any.
    #[must_use]
    pub fn hit(&self) -> Option<Limit> {
        self.hit
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = Some(Limit::Memory);
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table {
            self.hit = Some(Limit::Table);
            wasmtime::bail!("table limit of {} elements exceeded", self.table);
        }
        Ok(true)
    }
}

pub(crate) struct ModuleState {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

pub(crate) struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Linkers built once per runtime.
pub(crate) fn linkers(
    engine: &Engine,
) -> wasmtime::Result<(
    wasmtime::Linker<ModuleState>,
    wasmtime::component::Linker<ComponentState>,
)> {
    let mut module_linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut module_linker, |s: &mut ModuleState| &mut s.wasi)?;
    let mut component_linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut component_linker)?;
    Ok((module_linker, component_linker))
}

struct Io {
    stdout: OutputSink,
    stderr: OutputSink,
    budget: Arc<Budget>,
}

/// A WASI context that grants nothing: no preopened directory, no
/// environment, no arguments, no network (TCP, UDP and name lookups are
/// refused), stdin empty, stdout and stderr discarded; clocks and random
/// numbers remain, as the standard library needs them. The execution
/// service adds arguments, stdin and captured output to it; plugins use it
/// as it is.
#[must_use]
pub fn sealed_wasi() -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder
}

/// A WASI context with arguments and stdin, captured output, and nothing
/// else: no preopened directory, no environment, no network.
fn wasi(ctx: &RunContext<'_>) -> (WasiCtxBuilder, Io) {
    let budget = Budget::new(ctx.limits.output_bytes);
    let io = Io {
        stdout: OutputSink::new(Stream::Stdout, budget.clone(), ctx.chunks.clone()),
        stderr: OutputSink::new(Stream::Stderr, budget.clone(), ctx.chunks.clone()),
        budget,
    };
    let mut builder = sealed_wasi();
    builder
        .stdin(MemoryInputPipe::new(ctx.request.stdin.clone()))
        .stdout(io.stdout.clone())
        .stderr(io.stderr.clone())
        .arg("main")
        .args(&ctx.request.args);
    (builder, io)
}

fn limiter(limits: &Limits) -> Limiter {
    Limiter::new(limits.memory_bytes, limits.table_elements)
}

/// Fuel, and an epoch callback (every tick) that ends the guest at its
/// wall-clock deadline or when the caller cancels.
fn prepare<T>(
    store: &mut Store<T>,
    ctx: &RunContext<'_>,
    started: Instant,
    flag: StopFlag,
) -> wasmtime::Result<()> {
    store.set_fuel(ctx.limits.fuel)?;
    let (cancel, deadline) = (ctx.cancel.clone(), started + ctx.limits.wall_time);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let why = if cancel.load(Ordering::Acquire) {
            Stop::Cancelled
        } else if Instant::now() >= deadline {
            Stop::WallTime
        } else {
            return Ok(UpdateDeadline::Continue(1));
        };
        *flag.lock().expect("stop lock") = Some(why);
        Err(Trap::Interrupt.into())
    });
    Ok(())
}

pub(crate) fn module(ctx: RunContext<'_>, module: &Module) -> ExecutionResult {
    let started = Instant::now();
    let (mut builder, io) = wasi(&ctx);
    let state = ModuleState {
        wasi: builder.build_p1(),
        limiter: limiter(&ctx.limits),
    };
    let mut store = Store::new(ctx.engine, state);
    store.limiter(|s| &mut s.limiter);
    let stop = StopFlag::default();
    let ended = prepare(&mut store, &ctx, started, stop.clone()).and_then(|()| {
        let instance = ctx.module_linker.instantiate(&mut store, module)?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call(&mut store, ())
    });
    let hit = store.data().limiter.hit;
    finish(
        ended.map(|()| 0),
        hit,
        stopped(&stop),
        &io,
        &ctx.limits,
        started,
    )
}

pub(crate) fn component(ctx: RunContext<'_>, component: &Component) -> ExecutionResult {
    let started = Instant::now();
    let (mut builder, io) = wasi(&ctx);
    let state = ComponentState {
        ctx: builder.build(),
        table: ResourceTable::new(),
        limiter: limiter(&ctx.limits),
    };
    let mut store = Store::new(ctx.engine, state);
    store.limiter(|s| &mut s.limiter);
    let stop = StopFlag::default();
    let ended = prepare(&mut store, &ctx, started, stop.clone()).and_then(|()| {
        let command = wasmtime_wasi::p2::bindings::sync::Command::instantiate(
            &mut store,
            component,
            ctx.component_linker,
        )?;
        command.wasi_cli_run().call_run(&mut store)
    });
    let hit = store.data().limiter.hit;
    let ended = ended.map(|ok| if ok.is_ok() { 0 } else { 1 });
    finish(ended, hit, stopped(&stop), &io, &ctx.limits, started)
}

type StopFlag = Arc<Mutex<Option<Stop>>>;

fn stopped(flag: &StopFlag) -> Option<Stop> {
    *flag.lock().expect("stop lock")
}

fn finish(
    ended: wasmtime::Result<i32>,
    hit: Option<Limit>,
    stop: Option<Stop>,
    io: &Io,
    limits: &Limits,
    started: Instant,
) -> ExecutionResult {
    let stdout = io.stdout.text();
    let stderr = io.stderr.text();
    let truncated = io.budget.truncated();
    let limit = |what| Outcome::LimitExceeded(LimitExceeded::of(what, limits));
    let (outcome, exit_code) = match ended {
        Ok(code) => (Outcome::Completed, Some(code)),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                (Outcome::Completed, Some(exit.0))
            } else if truncated {
                (limit(Limit::Output), None)
            } else if let Some(why) = stop {
                match why {
                    Stop::WallTime => (limit(Limit::WallTime), None),
                    Stop::Cancelled => (Outcome::Cancelled, None),
                }
            } else if let Some(what) = hit {
                (limit(what), None)
            } else {
                match e.downcast_ref::<Trap>() {
                    Some(Trap::OutOfFuel) => (limit(Limit::Fuel), None),
                    Some(Trap::Interrupt) => (limit(Limit::WallTime), None),
                    _ => {
                        let mut message = format!("{e:#}");
                        message.truncate(message.floor_char_boundary(MAX_MESSAGE));
                        (
                            Outcome::Error {
                                error_type: "trap".into(),
                                message,
                                traceback: None,
                            },
                            None,
                        )
                    }
                }
            }
        }
    };
    let mut result = ExecutionResult::new(outcome);
    result.stdout = stdout;
    result.stderr = stderr;
    result.output_truncated = truncated;
    result.exit_code = exit_code;
    result.duration = started.elapsed();
    result
}

pub(crate) fn code_too_large(limits: &Limits) -> ExecutionResult {
    ExecutionResult::new(Outcome::LimitExceeded(LimitExceeded::of(
        Limit::CodeSize,
        limits,
    )))
}

pub(crate) fn crashed(reason: String) -> ExecutionResult {
    ExecutionResult::new(Outcome::Crashed { reason })
}
