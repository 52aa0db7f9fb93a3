//! Latency and throughput of the sandbox (not a test): prints p50/p99 and
//! executions per second for Python `print(sum(range(1000)))` and a cached
//! WASM module, at concurrency 1 and 8, and the time to the first streamed
//! stdout chunk.
//!
//! `cargo bench -p orrery-sandbox --bench sandbox` (optionally `-- N` for
//! the number of executions per case).

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery_sandbox::python::{
    PythonConfig, PythonRequest, PythonRuntime, ZYGOTE_SUBCOMMAND, ZygoteCommand,
};
use orrery_sandbox::wasm::{WasmConfig, WasmRequest, WasmRuntime};
use orrery_sandbox::{ExecutionResult, Outcome};

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "499500\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 7))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn report(name: &str, concurrency: usize, mut latencies: Vec<Duration>, wall: Duration) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} c={concurrency:<2} n={:<5} p50={:>7.2} ms  p99={:>7.2} ms  {:>7.1} exec/s",
        latencies.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        latencies.len() as f64 / wall.as_secs_f64()
    );
}

async fn measure<F, Fut>(name: &str, concurrency: usize, total: usize, run: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ExecutionResult> + Send,
{
    let run = Arc::new(run);
    let started = Instant::now();
    let per_worker = total / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    let r = run().await;
                    assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
                    assert_eq!(r.stdout, "499500\n");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    report(name, concurrency, all, started.elapsed());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400);
    let host = PathBuf::from(env!("CARGO_BIN_EXE_orrery-sandbox-host"));
    // BENCH_ZYGOTE_WRAPPER=/path/to/script runs the zygote under e.g. strace.
    let zygote = match std::env::var_os("BENCH_ZYGOTE_WRAPPER") {
        Some(wrapper) => ZygoteCommand {
            program: wrapper.into(),
            args: vec![host.into(), ZYGOTE_SUBCOMMAND.into()],
        },
        None => ZygoteCommand {
            program: host,
            args: vec![ZYGOTE_SUBCOMMAND.into()],
        },
    };
    let python = PythonRuntime::start(PythonConfig::new(zygote))
        .await
        .unwrap();
    println!("isolation: {:?}", python.isolation().await);
    let code = "print(sum(range(1000)))";
    for _ in 0..20 {
        python.execute(PythonRequest::new(code)).await.unwrap();
    }
    for concurrency in [1, 8] {
        let py = python.clone();
        measure(
            "python print(sum(range(1000)))",
            concurrency,
            n,
            move || {
                let py = py.clone();
                async move { py.execute(PythonRequest::new(code)).await.unwrap() }
            },
        )
        .await;
    }

    // Time to the first streamed chunk of a program that keeps running.
    let mut first = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let mut exec = python
            .spawn(PythonRequest::new(
                "print('first')\nx = sum(i * i for i in range(10**6))\nprint(x)",
            ))
            .await
            .unwrap();
        let chunk = exec.next_output().await.unwrap();
        first.push(t.elapsed());
        assert_eq!(chunk.data, "first\n");
        let _ = exec.wait().await;
    }
    first.sort();
    println!(
        "python first stdout chunk     p50={:>7.2} ms  p99={:>7.2} ms",
        first[first.len() / 2].as_secs_f64() * 1000.0,
        first[first.len() * 99 / 100].as_secs_f64() * 1000.0
    );

    let wasm = WasmRuntime::new(WasmConfig::default()).unwrap();
    let module = wasm.compile(HELLO_WAT.as_bytes()).unwrap();
    for concurrency in [1, 8] {
        let wasm = wasm.clone();
        let module = module.clone();
        measure("wasm cached module", concurrency, n * 4, move || {
            let wasm = wasm.clone();
            let module = module.clone();
            async move { wasm.run(module, WasmRequest::default()).await }
        })
        .await;
    }
}
