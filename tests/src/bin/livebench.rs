//! `orrery-livebench`: the live event stream under load, against the real
//! binary it starts itself.
//!
//! 1. Ingestion throughput (batches of `--batch`, `--concurrency` senders,
//!    as fast as acknowledged) without and with `--subscribers` live
//!    subscribers, alternated A/B/A/B (`--rounds`), with the delivery time
//!    (acknowledgment to arrival at each subscriber) of the runs with
//!    subscribers.
//! 2. The delivery time at a paced `--rate` events/s with the subscribers.
//!
//! Every subscriber must receive every acknowledged event; the run says
//! how many it missed and how many were dropped as slow consumers.
//!
//! ```sh
//! cargo build --release -p orrery-gateway -p orrery-tests
//! target/release/orrery-livebench --subscribers 100 --rate 10000 --seconds 10
//! ```

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::StreamExt;
use orrery_tests::{Options, Server};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(
    name = "orrery-livebench",
    about = "Benchmark of the live event stream"
)]
struct Args {
    /// The orrery binary (default: next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// An existing PostgreSQL database (default: SQLite in a temporary
    /// directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Live subscribers in the runs with subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent senders in the throughput runs.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A/B pairs of throughput runs.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Events/s of the paced run (0: none).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
}

/// Acknowledgment times by batch number (batch `b` holds events
/// `b * batch .. (b + 1) * batch`).
type Acks = Arc<Mutex<Vec<Option<Instant>>>>;

/// What one run measured.
struct Run {
    events: u64,
    seconds: f64,
    /// Delivery times in µs, all subscribers together.
    delivery_us: Vec<i64>,
    missed: u64,
    dropped: f64,
    /// CPU seconds the server spent during the run.
    server_cpu: f64,
    /// CPU seconds this benchmark (senders and subscribers) spent.
    client_cpu: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let server = Server::launch(Options {
        bin: args.bin.clone(),
        database_url: args.database_url.clone(),
        env: vec![
            // Every subscriber of the run fits, and a batch never fills a
            // queue by itself.
            (
                "ORRERY_LIVE__MAX_SUBSCRIBERS".into(),
                (args.subscribers + 10).to_string(),
            ),
            ("ORRERY_LIVE__QUEUE_EVENTS".into(), "10000".into()),
        ],
        inherit_orrery_env: true,
        ..Options::default()
    })
    .await?;
    let profile = if server.bin().to_string_lossy().contains("release") {
        "release"
    } else {
        "debug (no release build found)"
    };
    println!(
        "orrery-livebench: {} ({profile}), {} cores, {} subscribers, batches of {}, {} senders, {} s per run",
        server.bin().display(),
        cores,
        args.subscribers,
        args.batch,
        args.concurrency,
        args.seconds
    );
    let mut plain = Vec::new();
    let mut with = Vec::new();
    for round in 0..args.rounds {
        for subscribers in [0, args.subscribers] {
            let r = measure(&server, &args, subscribers, None).await?;
            let rate = r.events as f64 / r.seconds;
            print!(
                "round {} {:>3} subscribers: {:>8.0} events/s, server CPU {:.0}% ({:.1} µs/event), benchmark CPU {:.0}%",
                round + 1,
                subscribers,
                rate,
                r.server_cpu / r.seconds * 100.0,
                r.server_cpu * 1e6 / r.events.max(1) as f64,
                r.client_cpu / r.seconds * 100.0
            );
            if subscribers > 0 {
                print_delivery(&r);
                with.push(rate);
            } else {
                println!();
                plain.push(rate);
            }
        }
    }
    if !plain.is_empty() {
        let a = plain.iter().sum::<f64>() / plain.len() as f64;
        let b = with.iter().sum::<f64>() / with.len() as f64;
        println!(
            "throughput: {a:.0} events/s without subscribers, {b:.0} with ({:+.1}%)",
            (b / a - 1.0) * 100.0
        );
    }
    if args.rate > 0 {
        let r = measure(&server, &args, args.subscribers, Some(args.rate)).await?;
        print!(
            "paced at {} events/s, {} subscribers: {:>8.0} events/s acknowledged, server CPU {:.0}%, benchmark CPU {:.0}%",
            args.rate,
            args.subscribers,
            r.events as f64 / r.seconds,
            r.server_cpu / r.seconds * 100.0,
            r.client_cpu / r.seconds * 100.0
        );
        print_delivery(&r);
    }
    Ok(())
}

fn print_delivery(r: &Run) {
    let mut d = r.delivery_us.clone();
    d.sort_unstable();
    let q = |p: f64| {
        if d.is_empty() {
            return f64::NAN;
        }
        let i = ((d.len() - 1) as f64 * p).round() as usize;
        d[i] as f64 / 1000.0
    };
    println!(
        "; delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} deliveries, {} missed, {} dropped as slow)",
        q(0.5),
        q(0.99),
        q(1.0),
        d.len(),
        r.missed,
        r.dropped
    );
}

/// One run: `subscribers` connected, then senders for `args.seconds`,
/// paced at `rate` events/s or as fast as acknowledged.
async fn measure(
    server: &Server,
    args: &Args,
    subscribers: usize,
    rate: Option<u64>,
) -> Result<Run> {
    let dropped_before = server.metric("orrery_live_slow_consumers_dropped").await;
    let pid = server.pid().unwrap_or_default();
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let url = server
            .url(&format!("/api/v1/projects/{}/live", server.keys.project_id))
            .replace("http://", "ws://");
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("X-API-Key", server.keys.secret_key.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        subs.push(ws);
    }
    let start = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let own_before = cpu_seconds(std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let sent_batches = Arc::new(AtomicU64::new(0));
    let acks: Acks = Arc::new(Mutex::new(Vec::new()));
    // Subscribers: (event number, arrival) of each event they get.
    let done = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = Vec::new();
    for mut ws in subs {
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut got: Vec<(u64, Instant)> = Vec::new();
            let mut quiet = 0;
            loop {
                let wait = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
                let total = done.load(Ordering::Acquire);
                match wait {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        if let Some(n) = number(&t) {
                            got.push((n, Instant::now()));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(_) => break,
                    Err(_) if total != u64::MAX => {
                        // Quiet for a while after the run: nothing more
                        // is coming.
                        quiet += 1;
                        if quiet >= 15 {
                            break;
                        }
                    }
                    Err(_) => {}
                }
                if got.len() as u64 >= total {
                    break;
                }
            }
            got
        }));
    }
    let senders = if rate.is_some() { 4 } else { args.concurrency };
    let mut tasks = Vec::new();
    for w in 0..senders {
        let (stop, sent_batches, acks) = (
            Arc::clone(&stop),
            Arc::clone(&sent_batches),
            Arc::clone(&acks),
        );
        let url = server.url("/api/v1/events");
        let key = server.keys.public_key.clone();
        let batch = args.batch as u64;
        // Paced: each sender owns every `senders`-th slot of the schedule.
        let interval =
            rate.map(|r| Duration::from_secs_f64(batch as f64 * senders as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut next = Instant::now()
                + interval
                    .unwrap_or_default()
                    .mul_f64(w as f64 / senders as f64);
            while !stop.load(Ordering::Acquire) {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let b = sent_batches.fetch_add(1, Ordering::AcqRel);
                let events: Vec<Value> = (b * batch..(b + 1) * batch)
                    .map(|n| json!({"event": "bench", "properties": {"n": n}}))
                    .collect();
                let resp = client
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({ "batch": events }))
                    .send()
                    .await?;
                let acked = Instant::now();
                if !resp.status().is_success() {
                    bail!("ingestion answered {}", resp.status());
                }
                let mut acks = acks.lock().await;
                let i = usize::try_from(b)?;
                if acks.len() <= i {
                    acks.resize(i + 1, None);
                }
                acks[i] = Some(acked);
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(pid) - cpu_before;
    let client_cpu = cpu_seconds(std::process::id()) - own_before;
    let acks = acks.lock().await.clone();
    let events = acks.iter().filter(|a| a.is_some()).count() as u64 * args.batch as u64;
    done.store(events, Ordering::Release);
    let mut delivery_us = Vec::new();
    let mut missed = 0;
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(60), r).await??;
        missed += events.saturating_sub(got.len() as u64);
        for (n, at) in got {
            let Some(Some(acked)) = acks.get(usize::try_from(n / args.batch as u64)?) else {
                continue;
            };
            // Negative when the event arrived before its sender had read
            // the answer.
            let us = if at >= *acked {
                at.duration_since(*acked).as_micros() as i64
            } else {
                -(acked.duration_since(at).as_micros() as i64)
            };
            delivery_us.push(us);
        }
    }
    let dropped = server.metric("orrery_live_slow_consumers_dropped").await - dropped_before;
    Ok(Run {
        events,
        seconds,
        delivery_us,
        missed,
        dropped,
        server_cpu,
        client_cpu,
    })
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // utime and stime are the 14th and 15th fields, in clock ticks
    // (USER_HZ = 100 on Linux), after the command name in parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<f64>() / 100.0
}

/// The `n` property of an event message, read without parsing the rest.
fn number(text: &str) -> Option<u64> {
    let at = text.find("\"n\":")? + 4;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
