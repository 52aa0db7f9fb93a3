//! What a custom WebAssembly plugin costs per event, in batches of 100,
//! against the same pipeline without it: the identity plugin (the host's
//! own cost: copying events in and out, instance reuse, fuel and deadline)
//! and the PII example (real work). Also how long replacing a plugin takes
//! (check + load), with and without its compiled code in the disk cache.
//!
//! The pipelines are measured alternately, A/B/A/B..., so that the shared
//! machine's noise falls on all of them alike.
//!
//! `cargo bench -p orrery-plugins --bench custom_plugins`

#![allow(clippy::unwrap_used)] // benchmark code: a failed unwrap fails the run
mod common;
use common::stages;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery_core::event::{Envelope, EventBuilder};
use orrery_core::metrics::PluginMetrics;
use orrery_core::pipeline::Pipeline;
use orrery_plugins::custom::catalog::{Origin, PluginKind, PluginSource};
use orrery_plugins::custom::wasm::WasmHost;
use orrery_plugins::custom::{Catalog, PluginLimits};
use orrery_plugins::{Registry, RegistryConfig};
use serde_json::json;

const BATCH: usize = 100;
const ROUNDS: usize = 200;
const ALTERNATIONS: usize = 5;

fn batch(round: usize) -> Vec<Envelope> {
    let now = orrery_core::event::now_ms();
    (0..BATCH)
        .map(|i| {
            let n = round * BATCH + i;
            EventBuilder::new("pageview")
                .received_at(now)
                .field(
                    "url",
                    format!("https://shop.test/shop/item-{}?utm_source=news&email=u{n}%40example.com", n % 50),
                )
                .field("distinct_id", format!("user-{}", n % 500))
                .field(
                    "properties",
                    json!({"plan": "free", "email": format!("u{n}@example.com"), "cart": [1, 2, 3], "note": "call me"}),
                )
                .ip("81.2.69.160")
                .header_user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0")
                .envelope()
        })
        .collect()
}

/// Median µs per event of `pipeline` over the rounds.
fn measure(rt: &tokio::runtime::Runtime, pipeline: &Pipeline) -> f64 {
    common::measure(rt, pipeline, (0..ROUNDS).map(batch).collect(), 10)
}

fn source(name: &str, component: &str, config: serde_json::Value) -> PluginSource {
    PluginSource {
        name: name.to_owned(),
        kind: PluginKind::Wasm,
        bytes: std::fs::read(orrery_tests::plugin_component(component)).unwrap(),
        config: config.as_object().cloned().unwrap_or_default(),
        limits: PluginLimits::default(),
        origin: Origin::Api,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let metrics = PluginMetrics::default();
    let host = Arc::new(WasmHost::new(Some(cache.path().to_owned()), metrics.clone()).unwrap());
    let catalog = Arc::new(Catalog::new(Arc::clone(&host)));
    for (name, component, config) in [
        ("identity", "identity", json!({})),
        ("identity-raw", "identity-raw", json!({})),
        ("pii-redact", "pii-redact", json!({"mode": "redact"})),
        (
            "pii-hash",
            "pii-redact",
            json!({"mode": "hash", "salt": "s"}),
        ),
    ] {
        let plugin = catalog.check(source(name, component, config)).unwrap();
        catalog.insert(plugin);
    }
    let registry = Registry::new(
        &[3u8; 32],
        RegistryConfig {
            timeout: Duration::from_secs(5),
            ..RegistryConfig::default()
        },
        None,
        metrics,
    )
    .with_custom(Arc::clone(&catalog));
    let pipelines: Vec<(&str, Pipeline)> = [
        ("ip_hash (baseline)", &["ip_hash"][..]),
        (
            "ip_hash + identity (WASM, SDK)",
            &["ip_hash", "identity"][..],
        ),
        (
            "ip_hash + identity (WASM, raw)",
            &["ip_hash", "identity-raw"][..],
        ),
        (
            "ip_hash + pii-redact, redact",
            &["ip_hash", "pii-redact"][..],
        ),
        ("ip_hash + pii-redact, hash", &["ip_hash", "pii-hash"][..]),
    ]
    .into_iter()
    .map(|(label, names)| (label, registry.build(&stages(names)).unwrap()))
    .collect();
    println!(
        "batches of {BATCH} events; median of {ROUNDS} rounds per run; {ALTERNATIONS} runs of each, alternated"
    );
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); pipelines.len()];
    for _ in 0..ALTERNATIONS {
        for (i, (_, p)) in pipelines.iter().enumerate() {
            runs[i].push(measure(&rt, p));
        }
    }
    let base = common::median(runs[0].clone());
    for (i, (label, _)) in pipelines.iter().enumerate() {
        let m = common::median(runs[i].clone());
        let each: Vec<String> = runs[i].iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "{label:<32} {m:>7.2} µs/event  (+{:.2} over baseline; runs {})",
            (m - base).max(0.0),
            each.join(" ")
        );
    }

    // Replacing a plugin: check (compile or read the cache, instantiate,
    // configure, the sample event) and load.
    let bytes = std::fs::read(orrery_tests::plugin_component("url-category")).unwrap();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..5u8 {
        // New bytes each round (a custom section appended): not in the cache.
        let mut fresh = bytes.clone();
        fresh.extend_from_slice(&[0, 6, 4, b'o', b'r', b'r', b'y', round]);
        for (times, code) in [(&mut cold, fresh.clone()), (&mut warm, fresh)] {
            let mut s = source("tagger", "url-category", json!({"default": "x"}));
            s.bytes = code;
            let started = Instant::now();
            let plugin = catalog.check(s).unwrap();
            catalog.insert(plugin);
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "replace a plugin (url-category, {} KiB): {:.1} ms compiling, {:.1} ms from the disk cache (medians of 5)",
        bytes.len() / 1024,
        common::median(cold),
        common::median(warm)
    );
}
