//! Custom plugins in the real gateway: the SDK's example plugins, compiled
//! from source for wasm32-wasip2, loaded through the plugin directory and
//! through the API, seen to change real events end to end; query stages
//! seen to redact what is read; misbehaving plugins contained while another
//! project keeps ingesting; bad uploads refused with the old version still
//! running; hot reload under load losing nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use orrery_tests::{Api, Server, backends, plugin_component};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn component(name: &str) -> Vec<u8> {
    std::fs::read(plugin_component(name)).unwrap()
}

/// Uploads `component` as plugin `name` with `config`; answers the status
/// and the answer.
async fn upload(server: &Server, name: &str, component_name: &str, config: Value) -> (u16, Value) {
    let body = json!({"name": name, "code": b64(&component(component_name)), "config": config});
    server
        .post_json("/api/v1/plugins", &server.keys.secret_key, body)
        .await
}

async fn set_pipeline(server: &Server, body: Value) {
    let (status, answer) = server.admin("PUT", "/pipeline", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn example_plugins_change_real_events_through_the_directory_and_the_api() {
    for backend in backends("example_plugins_change_real_events_through_the_directory_and_the_api")
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pii-redact.wasm"), component("pii-redact")).unwrap();
        std::fs::write(
            dir.path().join("pii-redact.toml"),
            "[config]\nmode = \"redact\"\n",
        )
        .unwrap();
        let plugin_dir = dir.path().to_str().unwrap().to_owned();
        let mut server = Server::on(
            backend,
            &[("ORRERY_PIPELINE__PLUGIN_DIRECTORY", plugin_dir.as_str())],
        )
        .await;
        let (status, body) = upload(
            &server,
            "url-category",
            "url-category",
            json!({"rules": [{"prefix": "/shop/", "category": "shop"}], "default": "other"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["origin"], "api");
        assert_eq!(body["version"].as_str().unwrap().len(), 64);
        let (status, body) = upload(
            &server,
            "drop-internal",
            "drop-internal",
            json!({"hosts": ["internal.test"]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, list) = server.get("/api/v1/plugins", &server.keys.secret_key).await;
        assert_eq!(status, 200);
        let origins: Vec<(String, String)> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["origin"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            origins,
            [
                ("drop-internal".to_owned(), "api".to_owned()),
                ("pii-redact".to_owned(), "directory".to_owned()),
                ("url-category".to_owned(), "api".to_owned()),
            ]
        );
        set_pipeline(
            &server,
            json!({"stages": [
                {"plugin": "ip_hash"},
                {"plugin": "pii-redact", "timeout_ms": 2000},
                {"plugin": "drop-internal", "timeout_ms": 2000},
                {"plugin": "url-category", "timeout_ms": 2000},
            ]}),
        )
        .await;
        let batch = json!({"batch": [
            {"event": "signup", "url": "https://shop.test/shop/shoes?email=ann%40example.com",
             "properties": {"email": "bob@example.com", "plan": "pro"}},
            {"event": "pageview", "url": "https://app.internal.test/admin"},
            {"event": "pageview", "url": "https://shop.test/about"},
        ]});
        let (status, answer) = server
            .post_events(&server.keys.public_key, &[], batch)
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 2, "{answer}");
        assert_eq!(answer["dropped"], 1, "{answer}");
        let events = server.all_events("", 100).await;
        assert_eq!(events.len(), 2, "{events:?}");
        let signup = events.iter().find(|e| e["event"] == "signup").unwrap();
        assert_eq!(
            signup["url"], "https://shop.test/shop/shoes?email=[redacted]",
            "{signup}"
        );
        assert_eq!(signup["properties"]["email"], "[redacted]");
        assert_eq!(signup["properties"]["plan"], "pro");
        assert_eq!(signup["enrichment"]["category"], "shop");
        let about = events.iter().find(|e| e["event"] == "pageview").unwrap();
        assert_eq!(about["enrichment"]["category"], "other");
        assert!(
            events
                .iter()
                .all(|e| !e.to_string().contains("example.com")),
            "no e-mail address is stored: {events:?}"
        );
        let (_, plugin) = server
            .get("/api/v1/plugins/url-category", &server.keys.secret_key)
            .await;
        assert_eq!(plugin["counters"]["events_in"], 2, "{plugin}");
        assert_eq!(plugin["counters"]["kept"], 2, "{plugin}");
        let (_, plugin) = server
            .get("/api/v1/plugins/drop-internal", &server.keys.secret_key)
            .await;
        assert_eq!(plugin["counters"]["dropped"], 1, "{plugin}");

        // A plugin a pipeline names is not deleted.
        let (status, err) = server
            .call(
                "DELETE",
                "/api/v1/plugins/url-category",
                &server.keys.secret_key,
                None,
            )
            .await;
        assert_eq!(status, 409, "{err}");
        assert_eq!(err["code"], "plugin_in_use");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains(&server.keys.project_id),
            "{err}"
        );
        // A directory plugin is changed through its file, not the API.
        let (status, err) = server
            .call(
                "DELETE",
                "/api/v1/plugins/pii-redact",
                &server.keys.secret_key,
                None,
            )
            .await;
        assert_eq!((status, err["code"].as_str()), (409, Some("plugin_exists")));

        // Uploaded plugins survive a restart.
        assert!(server.terminate());
        server.spawn();
        let (status, answer) = server
            .post_events(
                &server.keys.public_key,
                &[],
                json!({"event": "after", "url": "https://shop.test/shop/hats"}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let after = server.all_events("&event=after", 10).await;
        assert_eq!(after[0]["enrichment"]["category"], "shop", "{after:?}");
    }
}

#[tokio::test]
async fn query_stages_redact_what_the_events_and_sessions_lists_return() {
    let server = Server::sqlite(&[("ORRERY_INGEST__SESSIONS_FLUSH_MS", "100")]).await;
    let (status, body) = upload(
        &server,
        "query-redact",
        "query-redact",
        json!({"remove": ["email"], "hide_distinct_id": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Built-in plugins enrich at ingestion: not a query stage.
    let (status, err) = server
        .admin(
            "PUT",
            "/pipeline",
            Some(json!({"stages": [{"plugin": "ip_hash"}],
                        "query_stages": [{"plugin": "user_agent"}]})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("query_stages[0].plugin"),
        "{err}"
    );
    set_pipeline(
        &server,
        json!({"stages": [{"plugin": "ip_hash"}, {"plugin": "session"}],
               "query_stages": [{"plugin": "query-redact", "timeout_ms": 2000}]}),
    )
    .await;
    let (_, pipeline) = server.admin("GET", "/pipeline", None).await;
    assert_eq!(
        pipeline["query_stages"][0]["on_error"], "drop",
        "{pipeline}"
    );
    let (status, _) = server
        .post_events(
            &server.keys.public_key,
            &[],
            json!({"event": "signup", "distinct_id": "ann@example.com",
                   "url": "https://shop.test/", "properties": {"email": "ann@example.com", "plan": "pro"}}),
        )
        .await;
    assert_eq!(status, 200);
    let events = server.all_events("", 10).await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0]["properties"].get("email").is_none(),
        "{}",
        events[0]
    );
    assert_eq!(events[0]["properties"]["plan"], "pro");
    assert!(events[0].get("distinct_id").is_none(), "{}", events[0]);
    // Sessions are read through the same stages.
    let mut sessions = Value::Null;
    for _ in 0..50 {
        let (_, page) = server.admin("GET", "/sessions", None).await;
        if page["sessions"].as_array().is_some_and(|s| !s.is_empty()) {
            sessions = page;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = &sessions["sessions"][0];
    assert!(session.is_object(), "{sessions}");
    assert!(session.get("distinct_id").is_none(), "{session}");
    // Statistics and SQL read stored rows, which the query stages never
    // see: what would show values they may hide is refused, counts are not.
    let keys = server.keys.clone();
    let stats = |q: &str| format!("/api/v1/projects/{}/{q}", keys.project_id);
    for refused in [
        "stats/breakdown?range=24h&by=properties.email",
        "stats/overview?range=24h&filter=properties.email:contains:ann",
        "stats/timeseries?range=24h&filter=properties.plan:eq:pro",
        "stats/funnel?range=24h&step=signup&step=buy&by=properties.plan",
        "stats/funnel?range=24h&step=signup&step=buy&step_filter=1:properties.email:eq:x",
        "stats/retention?range=24h&filter=properties.plan:eq:pro",
        "users?range=24h",
    ] {
        let (status, err) = server.get(&stats(refused), &keys.secret_key).await;
        assert_eq!(status, 409, "{refused}: {err}");
        assert_eq!(err["code"], "query_stages_apply", "{refused}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains("query stages"),
            "{err}"
        );
    }
    let (status, err) = server
        .post_json(
            &stats("sql"),
            &keys.secret_key,
            json!({"query": "SELECT properties FROM events"}),
        )
        .await;
    assert_eq!(
        (status, &err["code"]),
        (409, &json!("query_stages_apply")),
        "{err}"
    );
    for allowed in [
        "stats/overview?range=24h",
        "stats/breakdown?range=24h&by=page",
        "stats/funnel?range=24h&step=signup&step=buy",
    ] {
        let (status, body) = server.get(&stats(allowed), &keys.secret_key).await;
        assert_eq!(status, 200, "{allowed}: {body}");
    }
    // The stored event is whole: without query stages it reads back as sent.
    set_pipeline(&server, json!({"stages": [{"plugin": "ip_hash"}]})).await;
    let (status, body) = server
        .get(
            &stats("stats/breakdown?range=24h&by=properties.plan"),
            &keys.secret_key,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["value"], "pro", "{body}");
    let events = server.all_events("", 10).await;
    assert_eq!(events[0]["properties"]["email"], "ann@example.com");
    assert_eq!(events[0]["distinct_id"], "ann@example.com");
}

#[tokio::test]
async fn bad_plugins_are_clear_400s_and_the_old_version_keeps_running() {
    let server = Server::sqlite(&[]).await;
    let (status, body) = upload(&server, "tagger", "url-category", json!({"default": "v1"})).await;
    assert_eq!(status, 201, "{body}");
    let version = body["version"].clone();
    set_pipeline(
        &server,
        json!({"stages": [{"plugin": "ip_hash"}, {"plugin": "tagger", "timeout_ms": 2000}]}),
    )
    .await;
    let empty_component: &[u8] = b"\0asm\x0d\0\x01\0";
    let core_module: &[u8] = b"\0asm\x01\0\0\0";
    let cases: Vec<(Vec<u8>, Value, &str)> = vec![
        (b"garbage bytes".to_vec(), json!({}), "not WebAssembly"),
        (
            core_module.to_vec(),
            json!({}),
            "core WebAssembly module, not a component",
        ),
        (
            empty_component.to_vec(),
            json!({}),
            "does not export the plugin world",
        ),
        (
            component("url-category"),
            json!({"rules": [{"prefix": "shop", "category": "x"}]}),
            "must start with `/`",
        ),
        (
            component("bad-config"),
            json!({"threshold": "high"}),
            "`threshold` must be a number",
        ),
        (component("busy-loop"), json!({}), ""),
    ];
    for (code, config, expected) in cases {
        let (status, err) = server
            .call(
                "PUT",
                "/api/v1/plugins/tagger",
                &server.keys.secret_key,
                Some(json!({"code": b64(&code), "config": config})),
            )
            .await;
        if expected.is_empty() {
            // busy-loop passes the check (it loops only on `loop` events):
            // put the working version back.
            assert_eq!(status, 200, "{err}");
            let (status, err) = server
                .call(
                    "PUT",
                    "/api/v1/plugins/tagger",
                    &server.keys.secret_key,
                    Some(json!({"code": b64(&component("url-category")), "config": {"default": "v1"}})),
                )
                .await;
            assert_eq!(status, 200, "{err}");
            continue;
        }
        assert_eq!(status, 400, "{expected}: {err}");
        assert_eq!(err["code"], "invalid_plugin", "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
        let (_, plugin) = server
            .get("/api/v1/plugins/tagger", &server.keys.secret_key)
            .await;
        assert_eq!(plugin["version"], version, "the old version is kept");
    }
    // Still running: events get its enrichment.
    let (status, _) = server
        .post_events(
            &server.keys.public_key,
            &[],
            json!({"event": "e", "url": "https://x.test/"}),
        )
        .await;
    assert_eq!(status, 200);
    let events = server.all_events("", 10).await;
    assert_eq!(events[0]["enrichment"]["category"], "v1", "{events:?}");
    // Names: a built-in's, a bad one, an existing one.
    let (status, err) = upload(&server, "geoip", "identity", json!({})).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_plugin")),
        "{err}"
    );
    let (status, err) = upload(&server, "Bad Name", "identity", json!({})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("name"), "{err}");
    let (status, err) = upload(&server, "tagger", "identity", json!({})).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("plugin_exists")),
        "{err}"
    );
}

/// Sends single events as fast as it can until `stop`; answers (sent,
/// acknowledged) and the slowest answer.
async fn steady_client(
    server: Arc<Server>,
    key: String,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Duration) {
    let (mut sent, mut acked, mut slowest) = (0, 0, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (status, _) = server
            .post_events(&key, &[], json!({"event": name, "url": "https://b.test/p"}))
            .await;
        slowest = slowest.max(started.elapsed());
        sent += 1;
        if status == 200 {
            acked += 1;
        }
    }
    (sent, acked, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_are_contained_while_another_project_keeps_ingesting() {
    let server = Arc::new(Server::sqlite(&[]).await);
    let admin = server.keys.secret_key.clone();
    for (name, component_name, limits) in [
        ("looper", "busy-loop", json!({"wall_time_ms": 100})),
        ("bomb", "memory-bomb", json!({"memory_bytes": 16_777_216})),
        ("trap", "trap", json!({})),
        ("short", "wrong-count", json!({})),
        // 100,000 log calls per event: time enough for a debug build on
        // a busy machine (the test is about the rate limit, not time).
        (
            "flood",
            "log-flood",
            json!({"log_lines_per_second": 5, "wall_time_ms": 8000}),
        ),
    ] {
        let body = json!({"name": name, "code": b64(&component(component_name)), "limits": limits});
        let (status, answer) = server.post_json("/api/v1/plugins", &admin, body).await;
        assert_eq!(status, 201, "{name}: {answer}");
    }
    set_pipeline(
        &server,
        json!({"stages": [
            {"plugin": "ip_hash"},
            {"plugin": "looper", "on_error": "drop", "timeout_ms": 1000},
            {"plugin": "bomb", "on_error": "dead_letter", "timeout_ms": 2000},
            {"plugin": "trap", "on_error": "dead_letter", "timeout_ms": 2000},
            {"plugin": "short", "on_error": "skip", "timeout_ms": 2000},
            {"plugin": "flood", "timeout_ms": 8000},
        ]}),
    )
    .await;
    // Another project, on the default pipeline, sending all along.
    let other = server.create_project(&admin, "bystander").await;
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = tokio::spawn(steady_client(
        Arc::clone(&server),
        other.public_key.clone(),
        "bystander",
        Arc::clone(&stop),
    ));
    let pk = server.keys.public_key.clone();
    let send = |name: &'static str| {
        let server = Arc::clone(&server);
        let pk = pk.clone();
        async move {
            let (status, answer) = server.post_events(&pk, &[], json!({"event": name})).await;
            assert_eq!(status, 200, "{name}: {answer}");
            answer
        }
    };
    // A loop: stopped by its wall time, the event dropped (its policy).
    let answer = send("loop").await;
    assert_eq!(answer["dropped"], 1, "{answer}");
    // A memory bomb and a trap: dead-lettered.
    assert_eq!(send("bomb").await["dead_lettered"], 1);
    assert_eq!(send("boom").await["dead_lettered"], 1);
    // A wrong count: skipped, the event stored.
    let answer = send("short").await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    // A log flood: the event stored, the lines cut.
    assert_eq!(send("fine").await["accepted"], 1);
    // More loops: the plugin is suspended after three costly faults in a
    // row, and the next batch is failed at once (and dropped, its policy).
    for _ in 0..3 {
        send("loop").await;
    }
    let started = Instant::now();
    assert_eq!(send("loop").await["dropped"], 1);
    assert!(
        started.elapsed() < Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, acked, slowest) = bystander.await.unwrap();
    assert!(sent > 20, "the bystander sent only {sent}");
    assert_eq!(acked, sent, "every bystander event was acknowledged");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest bystander answer {slowest:?}"
    );

    let metrics = server.metrics_text().await;
    let fault = |plugin: &str, fault: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("orrery_plugin_faults_total")
                    && l.contains(&format!("plugin=\"{plugin}\""))
                    && l.contains(&format!("fault=\"{fault}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fuel (1e9 by default) or the 100 ms wall time, whichever comes first.
    assert_eq!(
        fault("looper", "wall_time") + fault("looper", "fuel"),
        4.0,
        "{metrics}"
    );
    assert!(fault("looper", "suspended") >= 1.0, "{metrics}");
    assert_eq!(fault("bomb", "memory"), 1.0, "{metrics}");
    assert_eq!(fault("trap", "trap"), 1.0, "{metrics}");
    assert_eq!(fault("short", "malformed"), 1.0, "{metrics}");
    assert!(
        server
            .metric("orrery_plugin_log_lines_dropped_total{plugin=\"flood\"}")
            .await
            > 1000.0
    );
    let (_, letters) = server.admin("GET", "/dead-letters", None).await;
    let plugins: Vec<&str> = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["plugin"].as_str().unwrap())
        .collect();
    assert!(
        plugins.contains(&"bomb") && plugins.contains(&"trap"),
        "{letters}"
    );
    // The bystander's events are all stored.
    let (_, page) = server
        .get(
            &format!("/api/v1/projects/{}/events?limit=1000", other.project_id),
            &other.secret_key,
        )
        .await;
    assert_eq!(
        page["events"].as_array().unwrap().len() as u64,
        acked.min(1000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_while_16_clients_send_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tagger.wasm");
    std::fs::write(&file, component("url-category")).unwrap();
    std::fs::write(
        dir.path().join("tagger.toml"),
        "[config]\ndefault = \"v1\"\n",
    )
    .unwrap();
    let plugin_dir = dir.path().to_str().unwrap().to_owned();
    let server = Arc::new(
        Server::sqlite(&[
            ("ORRERY_PIPELINE__PLUGIN_DIRECTORY", plugin_dir.as_str()),
            ("ORRERY_PIPELINE__PLUGIN_WATCH_MS", "100"),
        ])
        .await,
    );
    let (status, body) = upload(
        &server,
        "uploaded",
        "url-category",
        json!({"default": "a1"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    set_pipeline(
        &server,
        json!({"stages": [
            {"plugin": "ip_hash"},
            {"plugin": "tagger", "timeout_ms": 2000},
        ]}),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(steady_client(
                Arc::clone(&server),
                server.keys.public_key.clone(),
                "load",
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The directory's file changes (its config), then the API plugin is
    // replaced twice, then the pipeline switches to it.
    std::fs::write(
        dir.path().join("tagger.toml"),
        "[config]\ndefault = \"v2\"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    for version in ["a2", "a3"] {
        let (status, body) = server
            .call(
                "PUT",
                "/api/v1/plugins/uploaded",
                &server.keys.secret_key,
                Some(json!({"code": b64(&component("url-category")), "config": {"default": version}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    set_pipeline(
        &server,
        json!({"stages": [{"plugin": "ip_hash"}, {"plugin": "uploaded", "timeout_ms": 2000}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for c in clients {
        let (sent, ok, _) = c.await.unwrap();
        assert_eq!(ok, sent, "every event was acknowledged");
        acked += ok;
    }
    let stored = server.stored_events().unwrap();
    assert_eq!(stored, acked, "stored == acknowledged");
    let events = server.all_events("", 1000).await;
    let mut categories: Vec<String> = events
        .iter()
        .filter_map(|e| e["enrichment"]["category"].as_str().map(str::to_owned))
        .collect();
    categories.sort();
    categories.dedup();
    for seen in ["v1", "v2", "a3"] {
        assert!(
            categories.contains(&seen.to_owned()),
            "{seen} not in {categories:?}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["enrichment"]["category"].is_string()),
        "every event went through a version of the plugin"
    );
}
