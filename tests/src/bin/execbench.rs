//! `orrery-execbench`: latency and throughput of the code-execution service
//! over HTTP, against the real binary it starts itself.
//!
//! Reports p50/p99 and executions/s for `print(sum(range(1000)))` over REST
//! at concurrency 1 and 8, the same for a cached (uploaded) WebAssembly
//! module, and the time from sending an execution over the WebSocket to its
//! first stdout chunk.
//!
//! ```sh
//! cargo build --release -p orrery-gateway -p orrery-tests
//! target/release/orrery-execbench --seconds 10
//! ```

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use orrery_tests::Server;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(
    name = "orrery-execbench",
    about = "Benchmark of /api/v1/execute and its WebSocket"
)]
struct Args {
    /// Measured seconds per case.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// WebSocket first-chunk samples.
    #[arg(long, default_value_t = 100)]
    ws_samples: usize,
}

const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "499500\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 7))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

/// The `p` quantile of `sorted` in ms (0 when there are none), by the
/// harness's one definition.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    orrery_tests::percentile(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs `body` against /api/v1/execute at `concurrency` for `seconds`.
async fn rest_case(
    server: &Server,
    body: Value,
    concurrency: usize,
    seconds: f64,
) -> Result<String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = server.url("/api/v1/execute");
    let key = server.keys.secret_key.clone();
    let body = Arc::new(body.to_string());
    // Warm up (and fill the module cache).
    for _ in 0..5 {
        http.post(&url)
            .header("X-API-Key", &key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
    }
    let lat = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, key, body, lat, errors) = (
            http.clone(),
            url.clone(),
            key.clone(),
            body.clone(),
            lat.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let ok = match http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["status"] == "completed" && v["stdout"] == "499500\n"),
                    _ => false,
                };
                if ok {
                    mine.push(t.elapsed());
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            lat.lock().await.extend(mine);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = lat.lock().await.clone();
    lat.sort();
    Ok(format!(
        "{:>8.2} | {:>8.2} | {:>8.1} | {:>6}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len() as f64 / elapsed,
        errors.load(std::sync::atomic::Ordering::Relaxed)
    ))
}

async fn ws_first_chunk(server: &Server, samples: usize) -> Result<String> {
    let url = server.url("/api/v1/execute/ws").replace("http://", "ws://");
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("X-API-Key", server.keys.secret_key.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let msg = json!({"type": "execute", "language": "python", "code": "print(sum(range(1000)))"})
        .to_string();
    let mut firsts = Vec::new();
    for _ in 0..samples + 3 {
        let t = Instant::now();
        ws.send(Message::Text(msg.clone().into())).await?;
        let mut first = None;
        loop {
            let m = ws.next().await.context("socket closed")??;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "stdout" && first.is_none() {
                first = Some(t.elapsed());
            }
            if v["type"] == "result" {
                break;
            }
            if v["type"] == "error" {
                bail!("websocket error: {v}");
            }
        }
        firsts.push(first.context("no stdout chunk")?);
    }
    let mut firsts = firsts.split_off(3);
    firsts.sort();
    Ok(format!(
        "{:>8.2} | {:>8.2}",
        pct(&firsts, 0.5),
        pct(&firsts, 0.99)
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Server::sqlite(&[
        ("ORRERY_EXECUTE__RATE_PER_MINUTE", "100000000"),
        ("ORRERY_EXECUTE__MAX_QUEUED", "1000"),
    ])
    .await;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "orrery-execbench: {cores} cores, {} s per case, server {}",
        args.seconds, server.base
    );

    let upload = reqwest::Client::new()
        .post(server.url("/api/v1/wasm/modules?name=bench"))
        .header("X-API-Key", &server.keys.secret_key)
        .header("content-type", "application/wasm")
        .body(WAT)
        .send()
        .await?;
    if upload.status() != 201 {
        bail!("upload failed: {}", upload.text().await?);
    }
    let module_id = upload.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let python = json!({"language": "python", "code": "print(sum(range(1000)))"});
    let wasm = json!({"language": "wasm", "module_id": module_id});
    println!(
        "{:<28} | {:>8} | {:>8} | {:>8} | {:>6}",
        "case", "p50 ms", "p99 ms", "exec/s", "errors"
    );
    for (name, body, c) in [
        ("python REST c=1", &python, 1),
        ("python REST c=8", &python, 8),
        ("wasm cached module c=1", &wasm, 1),
        ("wasm cached module c=8", &wasm, 8),
    ] {
        let line = rest_case(&server, body.clone(), c, args.seconds).await?;
        println!("{name:<28} | {line}");
    }
    let ws = ws_first_chunk(&server, args.ws_samples).await?;
    println!(
        "{:<28} | {ws} |   (request to first stdout chunk)",
        "python WebSocket first chunk"
    );
    drop(server);
    Ok(())
}
