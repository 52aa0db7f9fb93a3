//! Custom Python plugins in the real host: real CPython in the sandbox's
//! workers (restricted builtins, rlimits, seccomp, namespaces), with the
//! sandbox crate's host binary (`orrery-sandbox-host`) as the zygote. What
//! each kind of misbehaviour costs, and that the stage keeps serving.
//!
//! The benchmark is an ignored test:
//! `cargo test --release -p orrery-plugins --test python_plugins -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use orrery_core::event::{Envelope, Event, EventBuilder};
use orrery_core::metrics::PluginMetrics;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use orrery_plugins::custom::catalog::{Origin, PluginKind, PluginSource};
use orrery_plugins::custom::python::PythonHost;
use orrery_plugins::custom::wasm::WasmHost;
use orrery_plugins::custom::{Catalog, PluginLimits};
use orrery_sandbox::python::{ZYGOTE_SUBCOMMAND, ZygoteCommand};
use serde_json::{Map, Value, json};

const IDENTITY: &str = include_str!("../../sdk/examples/python/identity.py");
const REDACT_EMAILS: &str = include_str!("../../sdk/examples/python/redact_emails.py");

/// `orrery-sandbox-host`, the sandbox's own zygote binary, next to this
/// test's directory (`cargo build --workspace --bins` builds it); built
/// once here when missing.
fn zygote() -> ZygoteCommand {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    let program = HOST.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/python_plugins-HASH -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let host = profile_dir.join("orrery-sandbox-host");
        if !host.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "orrery-sandbox", "--bins"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building orrery-sandbox-host failed");
        }
        assert!(host.exists(), "no {}", host.display());
        host
    });
    ZygoteCommand {
        program: program.clone(),
        args: vec![ZYGOTE_SUBCOMMAND.into()],
    }
}

fn catalog() -> (Catalog, PluginMetrics) {
    let metrics = PluginMetrics::default();
    let wasm = WasmHost::new(None, metrics.clone()).unwrap();
    let python = PythonHost::new(PythonHost::sandbox_config(zygote()), metrics.clone()).unwrap();
    (Catalog::new(Arc::new(wasm)).with_python(python), metrics)
}

fn source(name: &str, code: &str, config: Value, limits: PluginLimits) -> PluginSource {
    PluginSource {
        name: name.to_owned(),
        kind: PluginKind::Python,
        bytes: code.as_bytes().to_vec(),
        config: config.as_object().cloned().unwrap_or_default(),
        limits,
        origin: Origin::Api,
    }
}

/// Checks and loads `code` as plugin `name`; answers a stage of it.
fn loaded(catalog: &Catalog, name: &str, code: &str, limits: PluginLimits) -> Arc<dyn Plugin> {
    let checked = catalog
        .check(source(name, code, json!({}), limits))
        .unwrap_or_else(|e| panic!("{name} does not pass its check: {e}"));
    catalog.insert(checked);
    stage(catalog, name, &Map::new(), 5000).unwrap()
}

fn stage(
    catalog: &Catalog,
    name: &str,
    config: &Map<String, Value>,
    timeout_ms: u64,
) -> Result<Arc<dyn Plugin>, String> {
    let plugin = catalog.get(name).unwrap();
    catalog.stage(&plugin, config, Duration::from_millis(timeout_ms))
}

fn batch(names: &[&str]) -> Vec<Envelope> {
    names
        .iter()
        .map(|n| {
            EventBuilder::new(n)
                .field("url", "https://shop.test/shoes?email=ann%40example.com")
                .field("referrer", "https://mail.test/?from=bob@example.org")
                .field("distinct_id", "user-1")
                .field(
                    "properties",
                    json!({"email": "ann@example.com", "n": 1, "tags": ["x", "eve@example.net"],
                           "nested": {"deep": "carl@example.co.uk"}, "ratio": 0.25, "é": "ü"}),
                )
                .envelope()
        })
        .collect()
}

fn events(batch: &[Envelope]) -> Vec<Event> {
    batch.iter().map(|e| e.event.clone()).collect()
}

fn fault(metrics: &PluginMetrics, plugin: &str, fault: &'static str) -> u64 {
    metrics.fault(plugin, fault).get()
}

fn workers(metrics: &PluginMetrics, plugin: &str) -> u64 {
    PluginMetrics::of(&metrics.instances, plugin).get()
}

fn failure(result: Result<Vec<Verdict>, PluginError>) -> String {
    match result {
        Err(PluginError::Failed { reason, .. }) => reason,
        other => panic!("expected the batch to fail, got {other:?}"),
    }
}

fn failed(verdict: &Verdict) -> &str {
    match verdict {
        Verdict::Fail(reason) => reason,
        other => panic!("expected a failed event, got {other:?}"),
    }
}

#[tokio::test]
async fn the_identity_example_keeps_every_event_unchanged() {
    let (catalog, metrics) = catalog();
    let identity = loaded(&catalog, "identity", IDENTITY, PluginLimits::default());
    assert_eq!(catalog.get("identity").unwrap().kind, PluginKind::Python);
    assert_eq!(catalog.get("identity").unwrap().sha256.len(), 64);
    for round in 0..3 {
        let mut b = batch(&["a", "b", "c"]);
        let before = events(&b);
        let verdicts = identity.process(&mut b).await.unwrap();
        assert_eq!(verdicts, vec![Verdict::Keep; 3], "round {round}");
        assert_eq!(events(&b), before, "round {round}");
    }
    assert_eq!(
        workers(&metrics, "identity"),
        1,
        "one warm worker served every batch"
    );
}

#[tokio::test]
async fn the_redact_emails_example_redacts_and_takes_its_config() {
    let (catalog, _) = catalog();
    let redact = loaded(&catalog, "redact", REDACT_EMAILS, PluginLimits::default());
    let mut b = batch(&["pageview"]);
    let before = events(&b);
    assert_eq!(redact.process(&mut b).await.unwrap(), vec![Verdict::Keep]);
    let e = &b[0].event;
    assert_eq!(
        e.url.as_deref(),
        Some("https://shop.test/shoes?email=[redacted]")
    );
    assert_eq!(
        e.referrer.as_deref(),
        Some("https://mail.test/?from=[redacted]")
    );
    assert_eq!(
        Value::Object(e.properties.clone()),
        json!({"email": "[redacted]", "n": 1, "tags": ["x", "[redacted]"],
               "nested": {"deep": "[redacted]"}, "ratio": 0.25, "é": "ü"})
    );
    assert_eq!(
        (e.id, e.timestamp, &e.name, &e.distinct_id),
        (
            before[0].id,
            before[0].timestamp,
            &before[0].name,
            &before[0].distinct_id
        )
    );

    // A stage's config reaches `configure`.
    let config = json!({"replacement": "***"}).as_object().cloned().unwrap();
    let starred = stage(&catalog, "redact", &config, 5000).unwrap();
    let mut b = batch(&["pageview"]);
    starred.process(&mut b).await.unwrap();
    assert_eq!(b[0].event.properties["email"], "***");
}

#[tokio::test]
async fn configure_raising_refuses_the_config_with_its_message() {
    let (catalog, _) = catalog();
    // At the check, with the plugin's default config.
    let err = catalog
        .check(source(
            "redact",
            REDACT_EMAILS,
            json!({"colour": "red"}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert_eq!(
        err,
        "`configure` refused the config: unknown config key(s): colour (expected: replacement)"
    );
    // At a stage, with the stage's config.
    loaded(&catalog, "redact", REDACT_EMAILS, PluginLimits::default());
    let config = json!({"replacement": 5}).as_object().cloned().unwrap();
    let Err(err) = stage(&catalog, "redact", &config, 5000) else {
        panic!("the stage's config was accepted")
    };
    assert_eq!(
        err,
        "`configure` refused the config: `replacement` must be a string"
    );
    // Anything else raised says what it was.
    let code =
        "def configure(config):\n    config['missing']\n\ndef process(event):\n    return event\n";
    let err = catalog
        .check(source("keyed", code, json!({}), PluginLimits::default()))
        .unwrap_err();
    assert_eq!(err, "`configure` refused the config: KeyError: 'missing'");
}

#[tokio::test]
async fn none_drops_the_event_and_dicts_keep_it_changed() {
    let (catalog, _) = catalog();
    let code = r#"
import hashlib

def process(event):
    if event["name"] == "internal":
        return None
    event["properties"]["digest"] = hashlib.sha256(event["distinct_id"].encode()).hexdigest()[:8]
    event["enrichment"]["seen_by"] = "python"
    event["name"] = event["name"].upper()
    return event
"#;
    let filter = loaded(&catalog, "filter", code, PluginLimits::default());
    let mut b = batch(&["internal", "pageview", "internal"]);
    let verdicts = filter.process(&mut b).await.unwrap();
    let dropped = Verdict::Drop("`process` returned None".to_owned());
    assert_eq!(verdicts, vec![dropped.clone(), Verdict::Keep, dropped]);
    let e = &b[1].event;
    assert_eq!(e.name, "PAGEVIEW");
    assert_eq!(e.properties["digest"], "c6c289e4");
    assert_eq!(e.enrichment["seen_by"], "python");
    assert_eq!(b[0].event.name, "internal", "a dropped event is left alone");

    // A dict is taken as it was when returned, even if the plugin reuses it.
    let code = r#"
LAST = {}

def process(event):
    LAST.clear()
    LAST.update(event)
    LAST["properties"] = {"seen": event["name"]}
    return LAST
"#;
    let reuse = loaded(&catalog, "reuse", code, PluginLimits::default());
    let mut b = batch(&["a", "b", "c"]);
    assert_eq!(reuse.process(&mut b).await.unwrap(), vec![Verdict::Keep; 3]);
    let seen: Vec<&Value> = b.iter().map(|e| &e.event.properties["seen"]).collect();
    assert_eq!(seen, [&json!("a"), &json!("b"), &json!("c")]);
}

#[tokio::test]
async fn an_exception_fails_only_its_event() {
    let (catalog, metrics) = catalog();
    let code = r#"
def process(event):
    if event["name"] == "bad":
        return 1 / 0
    if event["name"] == "exit":
        raise SystemExit(3)
    return event
"#;
    let picky = loaded(&catalog, "picky", code, PluginLimits::default());
    let mut b = batch(&["ok", "bad", "ok", "exit"]);
    let verdicts = picky.process(&mut b).await.unwrap();
    assert_eq!(verdicts[0], Verdict::Keep);
    assert_eq!(failed(&verdicts[1]), "ZeroDivisionError: division by zero");
    assert_eq!(verdicts[2], Verdict::Keep);
    assert_eq!(failed(&verdicts[3]), "SystemExit: 3");
    assert_eq!(
        workers(&metrics, "picky"),
        1,
        "the worker is still the same"
    );
    assert_eq!(
        picky.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );
}

#[tokio::test]
async fn unusable_answers_fail_their_event_as_malformed() {
    let (catalog, metrics) = catalog();
    let code = r#"
def process(event):
    kind = event["name"]
    if kind == "list":
        return [event]
    if kind == "noname":
        del event["name"]
    if kind == "extra":
        event["country"] = "FR"
    if kind == "nan":
        event["properties"]["x"] = float("nan")
    if kind == "props":
        event["properties"] = "a string"
    if kind == "long":
        event["name"] = "x" * 500
    if kind == "id":
        event["id"] = "not mine to change"
        event["timestamp_ms"] = 0
    return event
"#;
    let odd = loaded(&catalog, "odd", code, PluginLimits::default());
    let mut b = batch(&["list", "noname", "extra", "nan", "props", "long", "id"]);
    let before = events(&b);
    let v = odd.process(&mut b).await.unwrap();
    assert_eq!(failed(&v[0]), "`process` returned list, not a dict or None");
    assert!(
        failed(&v[1]).starts_with("malformed answer: the returned event: missing field `name`"),
        "{:?}",
        v[1]
    );
    assert!(
        failed(&v[2]).starts_with("malformed answer: the returned event: unknown field `country`"),
        "{:?}",
        v[2]
    );
    assert!(
        failed(&v[3]).starts_with("the returned event is not JSON: ValueError"),
        "{:?}",
        v[3]
    );
    assert_eq!(
        failed(&v[4]),
        "malformed answer: `properties` must be a JSON object"
    );
    assert_eq!(
        failed(&v[5]),
        "malformed answer: `name` must be 1 to 200 characters"
    );
    assert_eq!(v[6], Verdict::Keep);
    assert_eq!(
        (b[6].event.id, b[6].event.timestamp),
        (before[6].id, before[6].timestamp)
    );
    assert_eq!(
        events(&b[..6]),
        before[..6],
        "refused answers change nothing"
    );
    assert_eq!(
        fault(&metrics, "odd", "malformed"),
        4,
        "name, extra, props, long"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_cut_at_the_deadline_and_a_fresh_worker_takes_over() {
    let (catalog, metrics) = catalog();
    let code = r#"
def process(event):
    if event["name"] == "loop":
        while True:
            pass
    return event
"#;
    let limits = PluginLimits {
        wall_time_ms: 200,
        ..PluginLimits::default()
    };
    let looper = loaded(&catalog, "looper", code, limits);
    assert_eq!(workers(&metrics, "looper"), 1);
    let started = Instant::now();
    let reason = failure(looper.process(&mut batch(&["ok", "loop"])).await);
    let took = started.elapsed();
    assert_eq!(reason, "ran past its time limit (200 ms)");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(fault(&metrics, "looper", "wall_time"), 1);
    // The next batch gets a fresh worker.
    let mut b = batch(&["ok", "ok"]);
    assert_eq!(
        looper.process(&mut b).await.unwrap(),
        vec![Verdict::Keep; 2]
    );
    assert_eq!(workers(&metrics, "looper"), 2);

    // Three costly faults in a row suspend the plugin; a later good batch
    // closes the breaker again.
    failure(looper.process(&mut batch(&["loop"])).await);
    failure(looper.process(&mut batch(&["loop"])).await);
    failure(looper.process(&mut batch(&["loop"])).await);
    let started = Instant::now();
    let reason = failure(looper.process(&mut batch(&["ok"])).await);
    assert!(reason.starts_with("suspended for"), "{reason}");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(fault(&metrics, "looper", "suspended"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        looper.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );
}

#[tokio::test]
async fn a_stage_timeout_lowers_the_deadline() {
    let (catalog, metrics) = catalog();
    let spin = "def process(event):\n    while True:\n        pass\n";
    let check = catalog
        .check(source("spin", spin, json!({}), PluginLimits::default()))
        .unwrap_err();
    assert_eq!(
        check,
        "the sample event failed: ran past its time limit (1000 ms)"
    );
    let code =
        "def process(event):\n    while event['name'] == 'loop':\n        pass\n    return event\n";
    let limits = PluginLimits {
        wall_time_ms: 5000,
        ..PluginLimits::default()
    };
    catalog.insert(
        catalog
            .check(source("spin", code, json!({}), limits))
            .unwrap(),
    );
    let stage = stage(&catalog, "spin", &Map::new(), 200).unwrap();
    let started = Instant::now();
    let reason = failure(stage.process(&mut batch(&["loop"])).await);
    assert_eq!(reason, "ran past its time limit (200 ms)");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fault(&metrics, "spin", "wall_time"), 1);
}

#[tokio::test]
async fn a_batch_given_up_on_kills_its_worker_and_counts_a_fault_only_at_the_deadline() {
    use orrery_core::pipeline::{Fate, Pipeline, Stage};
    use orrery_core::plugin::OnError;
    let (catalog, metrics) = catalog();
    let code =
        "def process(event):\n    while event['name'] == 'loop':\n        pass\n    return event\n";
    let limits = PluginLimits {
        wall_time_ms: 300,
        ..PluginLimits::default()
    };
    let looper = loaded(&catalog, "giveup", code, limits);
    // The caller gives up early (a client gone): not the plugin's fault.
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        looper.process(&mut batch(&["loop"])),
    )
    .await;
    assert!(cut.is_err());
    assert_eq!(fault(&metrics, "giveup", "wall_time"), 0);
    // The worker was out of step: a fresh one serves the next batch.
    assert_eq!(
        looper.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );
    assert_eq!(workers(&metrics, "giveup"), 2);
    // In a pipeline whose stage timeout equals the wall time, whichever
    // timer fires first, the fault is counted once.
    let pipeline = Pipeline::new(vec![Stage {
        plugin: Arc::clone(&looper),
        on_error: OnError::Drop,
        timeout: Duration::from_millis(300),
    }]);
    let out = pipeline.run(batch(&["loop"])).await;
    assert!(matches!(out[0].1, Fate::Dropped { .. }), "{:?}", out[0].1);
    assert_eq!(fault(&metrics, "giveup", "wall_time"), 1);
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit_and_the_next_batch_is_served() {
    let (catalog, metrics) = catalog();
    let code = r#"
def process(event):
    if event["name"] == "bomb":
        blocks = []
        while True:
            blocks.append(" " * 10**6)
    return event
"#;
    let limits = PluginLimits {
        memory_bytes: 32 << 20,
        wall_time_ms: 5000,
        ..PluginLimits::default()
    };
    let bomb = loaded(&catalog, "bomb", code, limits);
    let started = Instant::now();
    let reason = failure(bomb.process(&mut batch(&["ok", "bomb"])).await);
    assert_eq!(reason, "ran over its memory limit (33554432 bytes)");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fault(&metrics, "bomb", "memory"), 1);
    assert_eq!(
        bomb.process(&mut batch(&["ok"])).await.unwrap(),
        vec![Verdict::Keep]
    );
    assert_eq!(workers(&metrics, "bomb"), 2);
}

#[tokio::test]
async fn escapes_are_refused_and_the_stage_keeps_serving() {
    let (catalog, metrics) = catalog();
    // Attempts at run time: each fails its own event.
    let code = r#"
import json

def process(event):
    kind = event["name"]
    if kind == "open":
        return {"name": open("/etc/passwd").read()}
    if kind == "import-os":
        import os
        os.system("true")
    if kind == "import-socket":
        import socket
    if kind == "import-sys":
        import sys
    if kind == "eval":
        eval("1")
    if kind == "getattr-class":
        getattr(event, "__class__")
    if kind == "getattr-self":
        getattr(print, "__self__")
    if kind == "json-internals":
        json.decoder.scanstring
    if kind == "format":
        "{0.__class__}".format(event)
    if kind == "module-walk":
        json.codecs
    return event
"#;
    let attempts = [
        ("open", "NameError: name 'open' is not defined"),
        (
            "import-os",
            "ImportError: import of module 'os' is not allowed in the sandbox",
        ),
        (
            "import-socket",
            "ImportError: import of module 'socket' is not allowed in the sandbox",
        ),
        (
            "import-sys",
            "ImportError: import of module 'sys' is not allowed in the sandbox",
        ),
        ("eval", "NameError: name 'eval' is not defined"),
        (
            "getattr-class",
            "SandboxViolation: access to attribute '__class__' is not allowed",
        ),
        (
            "getattr-self",
            "SandboxViolation: access to attribute '__self__' is not allowed",
        ),
        ("json-internals", "AttributeError"),
        (
            "format",
            "SandboxViolation: access to attribute '__class__' is not allowed",
        ),
        ("module-walk", "AttributeError"),
    ];
    let guarded = loaded(&catalog, "guarded", code, PluginLimits::default());
    let mut names: Vec<&str> = attempts.iter().map(|(n, _)| *n).collect();
    names.push("fine");
    let mut b = batch(&names);
    let verdicts = guarded.process(&mut b).await.unwrap();
    for ((name, expected), verdict) in attempts.iter().zip(&verdicts) {
        let reason = failed(verdict);
        assert!(reason.starts_with(expected), "{name}: {reason}");
    }
    assert_eq!(verdicts.last(), Some(&Verdict::Keep));
    assert_eq!(
        workers(&metrics, "guarded"),
        1,
        "no attempt cost the worker"
    );
    assert_eq!(
        guarded.process(&mut batch(&["fine"])).await.unwrap(),
        vec![Verdict::Keep]
    );

    // Attempts the sandbox refuses before running anything: the check
    // names them with their line.
    let refused = [
        (
            "import os\n\ndef process(event):\n    return event\n",
            "raised at line 1: ImportError: import of module 'os' is not allowed in the sandbox",
        ),
        (
            "def process(event):\n    return __import__('os')\n",
            "refused by the sandbox: line 2: the name '__import__' is not allowed",
        ),
        (
            "def process(event):\n    return __builtins__['open']\n",
            "refused by the sandbox: line 2: the name '__builtins__' is not allowed",
        ),
        (
            "X = ().__class__.__bases__[0].__subclasses__()\ndef process(event):\n    return event\n",
            "refused by the sandbox: line 1: access to attribute '__subclasses__' is not allowed",
        ),
        (
            "def process(event):\n    return event\nprocess.__globals__\n",
            "refused by the sandbox: line 3: access to attribute '__globals__' is not allowed",
        ),
        (
            "def process(event):\n    f = (x for x in [1])\n    return f.gi_frame.f_back\n",
            "refused by the sandbox: line 3: access to attribute 'f_back' is not allowed",
        ),
    ];
    for (code, expected) in refused {
        let err = catalog
            .check(source("attempt", code, json!({}), PluginLimits::default()))
            .unwrap_err();
        assert_eq!(err, expected, "{code}");
    }
    // And the loaded stage still serves.
    assert_eq!(
        guarded
            .process(&mut batch(&["fine", "open"]))
            .await
            .unwrap()[0],
        Verdict::Keep
    );
}

#[tokio::test]
async fn syntax_and_load_errors_are_check_errors_naming_the_line() {
    let (catalog, _) = catalog();
    let cases = [
        (
            "def process(event):\n    return event\n\nx = = 1\n",
            "SyntaxError at line 4: invalid syntax",
        ),
        (
            "def process(event):\nreturn event\n",
            "IndentationError at line 2: expected an indented block after function definition on line 1",
        ),
        (
            "def process(event):\n    return (event\n",
            "SyntaxError at line 2: '(' was never closed",
        ),
        (
            "def helper():\n    pass\n",
            "the plugin defines no `process(event)` function",
        ),
        (
            "import json\nCONFIG = json.loads('{')\n\ndef process(event):\n    return event\n",
            "raised at line 2: JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
    ];
    for (code, expected) in cases {
        let err = catalog
            .check(source("broken", code, json!({}), PluginLimits::default()))
            .unwrap_err();
        assert_eq!(err, expected, "{code}");
    }
    let code = "import time\n\ndef process(event):\n    return event\n";
    // Modules outside the list are not importable.
    let err = catalog
        .check(source("broken", code, json!({}), PluginLimits::default()))
        .unwrap_err();
    assert_eq!(
        err,
        "raised at line 1: ImportError: import of module 'time' is not allowed in the sandbox"
    );
    let err = catalog
        .check(source(
            "broken",
            "\u{0}",
            json!({}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert_eq!(err, "the source contains a NUL byte");
    let mut bad = source("broken", "", json!({}), PluginLimits::default());
    bad.bytes = vec![b'#', 0xff];
    assert_eq!(
        catalog.check(bad).unwrap_err(),
        "the source is not UTF-8 text (bad byte at offset 1)"
    );
}

#[tokio::test]
async fn printed_lines_are_logs_and_do_not_confuse_the_worker() {
    let (catalog, metrics) = catalog();
    let code = r#"
print("loading")

def process(event):
    print("half a line", end="")
    print("\x1eorrery:not an answer")
    for i in range(50):
        print("line", i)
    return event
"#;
    let limits = PluginLimits {
        log_lines_per_second: 10,
        ..PluginLimits::default()
    };
    let chatty = loaded(&catalog, "chatty", code, limits);
    let mut b = batch(&["a", "b"]);
    assert_eq!(
        chatty.process(&mut b).await.unwrap(),
        vec![Verdict::Keep; 2]
    );
    let dropped = PluginMetrics::of(&metrics.log_dropped, "chatty").get();
    assert!(
        dropped >= 80,
        "log lines over the rate are dropped: {dropped}"
    );
    assert_eq!(workers(&metrics, "chatty"), 1);
}

#[tokio::test]
async fn without_a_python_host_python_plugins_are_refused() {
    let wasm = WasmHost::new(None, PluginMetrics::default()).unwrap();
    let catalog = Catalog::new(Arc::new(wasm));
    let err = catalog
        .check(source(
            "identity",
            IDENTITY,
            json!({}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert!(
        err.starts_with("Python plugins are not available here"),
        "{err}"
    );
}

#[tokio::test]
async fn a_zygote_that_cannot_start_fails_python_plugins_with_the_reason() {
    let metrics = PluginMetrics::default();
    let wasm = WasmHost::new(None, metrics.clone()).unwrap();
    let no_zygote = ZygoteCommand {
        program: PathBuf::from("/nonexistent/orrery"),
        args: vec![ZYGOTE_SUBCOMMAND.into()],
    };
    let python = PythonHost::new(PythonHost::sandbox_config(no_zygote), metrics).unwrap();
    let catalog = Catalog::new(Arc::new(wasm)).with_python(python);
    let err = catalog
        .check(source(
            "identity",
            IDENTITY,
            json!({}),
            PluginLimits::default(),
        ))
        .unwrap_err();
    assert!(
        err.starts_with("Python plugins are unavailable: the Python sandbox did not start"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_use_up_to_instances_workers() {
    let (catalog, metrics) = catalog();
    let code = "def process(event):\n    n = 0\n    for i in range(300000):\n        n += i\n    return event\n";
    let limits = PluginLimits {
        instances: 3,
        ..PluginLimits::default()
    };
    let busy = loaded(&catalog, "busy", code, limits);
    let runs = (0..8).map(|_| {
        let busy = Arc::clone(&busy);
        tokio::spawn(async move { busy.process(&mut batch(&["a", "b"])).await })
    });
    for run in runs {
        assert_eq!(run.await.unwrap().unwrap(), vec![Verdict::Keep; 2]);
    }
    let started = workers(&metrics, "busy");
    assert!((1..=3).contains(&started), "{started} workers");
}

/// The benchmark: per-event cost of a pipeline of the identity plugin in
/// batches of 100 against a pipeline of no plugin (and of the
/// redact_emails example, for a plugin doing something), one batch at a
/// time; then the throughput of two batches at a time (two workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn bench_identity_per_event() {
    use orrery_core::pipeline::{Pipeline, Stage};
    use orrery_core::plugin::OnError;
    const BATCH: usize = 100;
    const ROUNDS: usize = 400;
    let (catalog, _) = catalog();
    let identity = loaded(&catalog, "identity", IDENTITY, PluginLimits::default());
    let redact = loaded(&catalog, "redact", REDACT_EMAILS, PluginLimits::default());
    let names: Vec<String> = (0..BATCH).map(|i| format!("event-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let batches: Vec<Vec<Envelope>> = (0..ROUNDS).map(|_| batch(&names)).collect();
    let bytes = serde_json::to_string(&batches[0][0].event).unwrap().len();
    let pipeline = |stage: Option<&Arc<dyn Plugin>>| {
        Arc::new(Pipeline::new(
            stage
                .map(|plugin| Stage {
                    plugin: Arc::clone(plugin),
                    on_error: OnError::Skip,
                    timeout: Duration::from_secs(5),
                })
                .into_iter()
                .collect(),
        ))
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let pipelines = [
        pipeline(None),
        pipeline(Some(&identity)),
        pipeline(Some(&redact)),
    ];
    for p in &pipelines {
        for b in batches.iter().take(20) {
            p.run(b.clone()).await;
        }
    }
    // Alternately, batch by batch, so that the shared machine's noise falls
    // on every pipeline alike.
    let mut per_event = [Vec::new(), Vec::new(), Vec::new()];
    for b in &batches {
        for (p, times) in pipelines.iter().zip(&mut per_event) {
            let b = b.clone();
            let started = Instant::now();
            let out = p.run(b).await;
            times.push(started.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
            assert_eq!(out.len(), BATCH);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let [none, identity_times, redact_times] = per_event;
    let (none_mean, identity_mean, redact_mean) =
        (mean(&none), mean(&identity_times), mean(&redact_times));
    let (none_median, identity_median, redact_median) =
        (median(none), median(identity_times), median(redact_times));

    // The identity pipeline alone, batch after batch (its worker stays hot).
    let mut alone = Vec::new();
    for b in &batches {
        let b = b.clone();
        let started = Instant::now();
        pipelines[1].run(b).await;
        alone.push(started.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
    }
    let (alone_median, alone_mean) = (median(alone.clone()), mean(&alone));

    // CPU time, which the shared machine's other work does not inflate as
    // much: this process (every thread) and its descendants (the zygote
    // and the workers), per event, each pipeline alone.
    let mut cpu = Vec::new();
    for p in &pipelines {
        let before = cpu_time();
        for b in &batches {
            p.run(b.clone()).await;
        }
        cpu.push((cpu_time() - before).as_secs_f64() * 1e6 / (BATCH * ROUNDS) as f64);
    }

    // Two streams of batches at once: the two workers (instances = 2).
    let two = pipeline(Some(&identity));
    let halves: Vec<Vec<Vec<Envelope>>> = (0..2).map(|_| batches[..ROUNDS / 2].to_vec()).collect();
    let started = Instant::now();
    let streams: Vec<_> = halves
        .into_iter()
        .map(|half| {
            let two = Arc::clone(&two);
            tokio::spawn(async move {
                for b in half {
                    two.run(b).await;
                }
            })
        })
        .collect();
    for s in streams {
        s.await.unwrap();
    }
    let parallel = started.elapsed().as_secs_f64() * 1e6 / (BATCH * ROUNDS) as f64;
    println!(
        "events of {bytes} bytes as JSON, batches of {BATCH}, {ROUNDS} rounds, µs per event:\n  \
         no plugin:        {none_median:6.2} median {none_mean:6.2} mean\n  \
         identity.py:      {identity_median:6.2} median {identity_mean:6.2} mean\n  \
         redact_emails.py: {redact_median:6.2} median {redact_mean:6.2} mean\n  \
         (the three alternately, batch by batch)\n  \
         identity.py alone, batch after batch: {alone_median:6.2} median {alone_mean:6.2} mean\n  \
         identity.py, two batches at a time: {parallel:.2} (wall time / events)\n  \
         CPU time (this process and the workers), each alone: no plugin {:.2}, \
         identity.py {:.2}, redact_emails.py {:.2}",
        cpu[0], cpu[1], cpu[2]
    );
}

/// CPU time (user and system) of this process and every live descendant,
/// from `/proc` (whose times are in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let me = std::process::id();
    let mut parents = std::collections::HashMap::new();
    let mut ticks = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the ")" closing the command name: state ppid ... utime stime.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = fields[1].parse().unwrap();
        let used: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        parents.insert(pid, ppid);
        ticks.insert(pid, used);
    }
    let mine = |mut pid: u32| {
        while pid > 1 {
            if pid == me {
                return true;
            }
            pid = parents.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    let total: u64 = ticks
        .iter()
        .filter(|(pid, _)| mine(**pid))
        .map(|(_, t)| t)
        .sum();
    Duration::from_millis(total * 10)
}
