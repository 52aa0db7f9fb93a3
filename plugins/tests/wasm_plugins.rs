//! Custom WebAssembly plugins in the real host (wasmtime, the sandbox's
//! engine), built from `sdk/` for wasm32-wasip2: what each kind of
//! misbehaviour costs, and that the host stays usable after it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test
use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery_core::event::{Envelope, EventBuilder};
use orrery_core::metrics::PluginMetrics;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use orrery_plugins::custom::catalog::{Origin, PluginKind, PluginSource};
use orrery_plugins::custom::wasm::WasmHost;
use orrery_plugins::custom::{Catalog, PluginLimits};
use orrery_tests::plugin_component;
use serde_json::{Map, Value, json};

fn catalog() -> (Catalog, PluginMetrics, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = PluginMetrics::default();
    let host = WasmHost::new(Some(dir.path().join("cache")), metrics.clone()).unwrap();
    (Catalog::new(Arc::new(host)), metrics, dir)
}

fn source(name: &str, component: &str, config: Value, limits: PluginLimits) -> PluginSource {
    PluginSource {
        name: name.to_owned(),
        kind: PluginKind::Wasm,
        bytes: std::fs::read(plugin_component(component)).unwrap(),
        config: config.as_object().cloned().unwrap_or_default(),
        limits,
        origin: Origin::Api,
    }
}

fn stage(catalog: &Catalog, name: &str, timeout_ms: u64) -> Arc<dyn Plugin> {
    let plugin = catalog.get(name).unwrap();
    catalog
        .stage(&plugin, &Map::new(), Duration::from_millis(timeout_ms))
        .unwrap()
}

fn batch(names: &[&str]) -> Vec<Envelope> {
    names
        .iter()
        .map(|n| {
            EventBuilder::new(n)
                .field("url", "https://shop.test/shop/shoes?email=ann@example.com")
                .field("properties", json!({"email": "ann@example.com", "n": 1}))
                .envelope()
        })
        .collect()
}

fn fault(metrics: &PluginMetrics, plugin: &str, fault: &'static str) -> u64 {
    metrics.fault(plugin, fault).get()
}

#[tokio::test]
async fn the_identity_plugin_keeps_every_event_unchanged() {
    let (catalog, _, _dir) = catalog();
    let checked = catalog
        .check(source(
            "identity",
            "identity",
            json!({}),
            PluginLimits::default(),
        ))
        .unwrap();
    assert_eq!(checked.sha256.len(), 64);
    catalog.insert(checked);
    let stage = stage(&catalog, "identity", 1000);
    let mut events = batch(&["a", "b", "c"]);
    let before: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    let verdicts = stage.process(&mut events).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Keep; 3]);
    let after: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(before, after);
}

fn loaded(catalog: &Catalog, name: &str, component: &str, limits: PluginLimits) {
    let checked = catalog
        .check(source(name, component, json!({}), limits))
        .unwrap();
    catalog.insert(checked);
}

fn failure(result: Result<Vec<Verdict>, PluginError>) -> String {
    match result {
        Err(PluginError::Failed { reason, .. }) => reason,
        other => panic!("expected the batch to fail, got {other:?}"),
    }
}

#[tokio::test]
async fn a_busy_loop_is_stopped_by_fuel_or_time_then_suspended_and_recovers() {
    let (catalog, metrics, _dir) = catalog();
    // Plenty of fuel: the wall time stops it.
    let limits = PluginLimits {
        fuel: 100_000_000_000,
        wall_time_ms: 50,
        ..PluginLimits::default()
    };
    loaded(&catalog, "looper", "busy-loop", limits);
    let looper = stage(&catalog, "looper", 1000);
    let started = Instant::now();
    let reason = failure(looper.process(&mut batch(&["loop"])).await);
    assert!(reason.contains("past its time limit"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fault(&metrics, "looper", "wall_time"), 1);
    // A normal batch right after: a fresh instance serves it.
    assert_eq!(
        looper.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );
    // Three costly faults in a row suspend it: batches fail at once.
    for _ in 0..3 {
        failure(looper.process(&mut batch(&["loop"])).await);
    }
    let started = Instant::now();
    let reason = failure(looper.process(&mut batch(&["ok"])).await);
    assert!(reason.contains("suspended"), "{reason}");
    assert!(started.elapsed() < Duration::from_millis(20));
    assert_eq!(fault(&metrics, "looper", "suspended"), 1);
    // After the suspension (1 s), it serves again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        looper.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );

    // Little fuel: fuel stops it.
    let limits = PluginLimits {
        fuel: 20_000_000,
        ..PluginLimits::default()
    };
    loaded(&catalog, "fuelled", "busy-loop", limits);
    let fuelled = stage(&catalog, "fuelled", 5000);
    let reason = failure(fuelled.process(&mut batch(&["loop"])).await);
    assert!(reason.contains("out of fuel"), "{reason}");
    assert_eq!(fault(&metrics, "fuelled", "fuel"), 1);
}

#[tokio::test]
async fn a_memory_bomb_hits_its_cap_and_the_next_batch_is_served() {
    let (catalog, metrics, _dir) = catalog();
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        ..PluginLimits::default()
    };
    loaded(&catalog, "bomb", "memory-bomb", limits);
    let bomb = stage(&catalog, "bomb", 5000);
    let reason = failure(bomb.process(&mut batch(&["bomb"])).await);
    assert!(reason.contains("memory limit"), "{reason}");
    assert_eq!(fault(&metrics, "bomb", "memory"), 1);
    assert_eq!(
        bomb.process(&mut batch(&["ok", "ok"])).await.unwrap(),
        vec![Verdict::Keep; 2]
    );
}

#[tokio::test]
async fn a_trap_fails_its_batch_and_a_fresh_instance_takes_the_next() {
    let (catalog, metrics, _dir) = catalog();
    loaded(&catalog, "trap", "trap", PluginLimits::default());
    let trap = stage(&catalog, "trap", 5000);
    let started_before = PluginMetrics::of(&metrics.instances, "trap").get();
    let reason = failure(trap.process(&mut batch(&["a", "boom", "b"])).await);
    assert!(reason.contains("trapped"), "{reason}");
    assert_eq!(fault(&metrics, "trap", "trap"), 1);
    assert_eq!(
        trap.process(&mut batch(&["a", "b"])).await.unwrap(),
        vec![Verdict::Keep; 2]
    );
    assert_eq!(
        PluginMetrics::of(&metrics.instances, "trap").get(),
        started_before + 1,
        "the trapped instance was replaced by a new one"
    );
}

#[tokio::test]
async fn a_wrong_number_of_verdicts_is_a_malformed_answer() {
    let (catalog, metrics, _dir) = catalog();
    loaded(&catalog, "short", "wrong-count", PluginLimits::default());
    let short = stage(&catalog, "short", 5000);
    let reason = failure(short.process(&mut batch(&["short", "b"])).await);
    assert!(
        reason.contains("returned 1 verdicts for 2 events"),
        "{reason}"
    );
    assert_eq!(fault(&metrics, "short", "malformed"), 1);
}

#[tokio::test]
async fn a_log_flood_is_cut_to_the_rate_and_counted() {
    let (catalog, metrics, _dir) = catalog();
    // 100,000 log calls per event: time enough for a debug build on a
    // busy machine (the test is about the rate limit, not time).
    let limits = PluginLimits {
        log_lines_per_second: 10,
        wall_time_ms: 8000,
        ..PluginLimits::default()
    };
    loaded(&catalog, "flood", "log-flood", limits);
    let dropped_by_check = PluginMetrics::of(&metrics.log_dropped, "flood").get();
    let flood = stage(&catalog, "flood", 8000);
    let verdicts = flood.process(&mut batch(&["a"])).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Keep]);
    let dropped = PluginMetrics::of(&metrics.log_dropped, "flood").get() - dropped_by_check;
    assert!(dropped >= 99_980, "{dropped} lines dropped");
}

#[tokio::test]
async fn compiled_code_is_reused_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let compile = |metrics: &PluginMetrics| {
        let host = WasmHost::new(Some(dir.path().to_owned()), metrics.clone()).unwrap();
        let bytes = std::fs::read(plugin_component("identity")).unwrap();
        host.compile(&bytes).unwrap().sha256
    };
    let first = PluginMetrics::default();
    let sha = compile(&first);
    assert_eq!(first.compilations.get(), 1);
    let second = PluginMetrics::default();
    assert_eq!(compile(&second), sha);
    assert_eq!(second.compilations.get(), 0, "read from the cache");
}

#[tokio::test]
async fn bad_bytes_and_wrong_worlds_are_refused_with_the_reason() {
    let (catalog, _, _dir) = catalog();
    let mut garbage = source("x", "identity", json!({}), PluginLimits::default());
    garbage.bytes = b"not wasm at all".to_vec();
    assert!(
        catalog
            .check(garbage.clone())
            .unwrap_err()
            .contains("not WebAssembly")
    );
    garbage.bytes = wat::parse_str("(module)").unwrap();
    let err = catalog.check(garbage.clone()).unwrap_err();
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
    garbage.bytes = wat::parse_str("(component)").unwrap();
    let err = catalog.check(garbage.clone()).unwrap_err();
    assert!(err.contains("does not export the plugin world"), "{err}");
    let err = catalog
        .check(source(
            "conf",
            "bad-config",
            json!({"threshold": "x"}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert!(err.contains("`threshold` must be a number"), "{err}");
    let err = catalog
        .check(source(
            "ip_hash",
            "identity",
            json!({}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert!(err.contains("built-in"), "{err}");
    let _ = (
        Instant::now(),
        PluginError::Failed {
            plugin: String::new(),
            reason: String::new(),
        },
    );
}
