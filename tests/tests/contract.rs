//! The API's exact contract: real answers match the OpenAPI document, the
//! document states the limits the server enforces, names are strings,
//! integer ids are kept exactly, duplicate JSON keys are refused, page
//! cursors reveal nothing, and a property-based run (schemathesis) over
//! the whole document finds no failure.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use orrery_tests::{
    Api, Server, client, dead_letter_stages, orrery_bin, python_venv, repo, silent_provider,
};
use serde_json::{Value, json};

/// The document the binary under test serves (`orrery openapi`).
fn spec() -> Value {
    let out = Command::new(orrery_bin()).arg("openapi").output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every answer of a scenario, for `openapi/check_responses.py`.
struct Recorder<'a> {
    server: &'a Server,
    records: Vec<Value>,
}

impl<'a> Recorder<'a> {
    fn new(server: &'a Server) -> Self {
        Self {
            server,
            records: Vec::new(),
        }
    }

    async fn call(&mut self, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        self.call_as(method, path, key, body, &[]).await.1
    }

    async fn call_as(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = client()
            .request(method.parse().unwrap(), self.server.url(path))
            .header("X-API-Key", key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        self.records.push(json!({
            "method": method, "path": path, "status": status, "body": body,
        }));
        (status, body)
    }

    /// Runs the validator over everything recorded; panics with its report
    /// when a response does not match.
    fn check(&self) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("records.json");
        std::fs::write(&file, serde_json::to_vec(&self.records).unwrap()).unwrap();
        let out = Command::new(python_venv().join("bin/python"))
            .arg(repo().join("openapi/check_responses.py"))
            .arg(repo().join("openapi/openapi.json"))
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "answers differ from the spec:\n{report}"
        );
        println!("{report}");
    }
}

/// Drives every operation, through its present and absent optional fields
/// (a key before and after revocation, a pipeline of the instance and of
/// the project, a last page and one with a next page...), and checks each
/// answer against the spec.
#[tokio::test]
async fn real_answers_match_the_spec() {
    let server = Server::sqlite(&[
        ("ORRERY_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("ORRERY_INGEST__SESSIONS_FLUSH_MS", "100"),
    ])
    .await;
    let admin = server.keys.secret_key.clone();
    let mut r = Recorder::new(&server);

    for path in ["/health", "/health/ready", "/health/db", "/metrics"] {
        r.call("GET", path, "", None).await;
    }
    // Projects.
    let created = r
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(json!({"name": "contract"})),
        )
        .await;
    let pid = created["project"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret_key"]["key"].as_str().unwrap().to_owned();
    let public = created["public_key"]["key"].as_str().unwrap().to_owned();
    let project = format!("/api/v1/projects/{pid}");
    r.call("GET", "/api/v1/projects", &admin, None).await;
    r.call("GET", &project, &secret, None).await;
    r.call("PATCH", &project, &secret, Some(json!({"name": "renamed"})))
        .await;

    // Keys: rotated (the old one expires), revoked, listed with both.
    let key = r
        .call(
            "POST",
            &format!("{project}/keys"),
            &secret,
            Some(json!({"name": "spare", "kind": "secret"})),
        )
        .await;
    let key_id = key["info"]["id"].as_str().unwrap().to_owned();
    r.call(
        "POST",
        &format!("{project}/keys/{key_id}/rotate"),
        &secret,
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    let exec = r
        .call(
            "POST",
            &format!("{project}/keys"),
            &secret,
            Some(json!({"name": "runner", "kind": "execute"})),
        )
        .await;
    let exec_key = exec["key"].as_str().unwrap().to_owned();
    r.call(
        "POST",
        &format!("{project}/keys/{key_id}/revoke"),
        &secret,
        None,
    )
    .await;
    let keys = r
        .call("GET", &format!("{project}/keys"), &secret, None)
        .await;
    let keys = keys["keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["revoked_at"].is_string()), "{keys:?}");
    assert!(keys.iter().any(|k| k["revoked_at"].is_null()), "{keys:?}");

    // Pipelines: the instance's (no `updated_at`), the project's, reset.
    let pipeline = format!("{project}/pipeline");
    let default = r.call("GET", &pipeline, &secret, None).await;
    assert_eq!(default["is_default"], true);
    let port = silent_provider().await;
    r.call("PUT", &pipeline, &secret, Some(dead_letter_stages(port)))
        .await;
    r.call("GET", &pipeline, &secret, None).await;

    // Ingestion: dead letters first (a public IP meets the silent
    // provider), then a mixed batch on the default pipeline.
    let (status, body) = r
        .call_as(
            "POST",
            "/api/v1/events",
            &public,
            Some(json!({"batch": [{"event": "buy"}, {"event": "buy"}, {"event": "buy"}]})),
            &[("X-Forwarded-For", "8.8.8.8")],
        )
        .await;
    assert_eq!((status, &body["dead_lettered"]), (200, &json!(3)), "{body}");
    let letters = format!("{project}/dead-letters");
    let page = r
        .call("GET", &format!("{letters}?limit=2"), &secret, None)
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    r.call(
        "GET",
        &format!("{letters}?limit=2&cursor={cursor}"),
        &secret,
        None,
    )
    .await;
    r.call("DELETE", &pipeline, &secret, None).await;
    r.call(
        "POST",
        &format!("{letters}/replay"),
        &secret,
        Some(json!({})),
    )
    .await;
    r.call(
        "GET",
        &format!("{letters}?include_replayed=true"),
        &secret,
        None,
    )
    .await;
    let batch = json!({"batch": [
        {"event": "pageview", "url": "https://shop.test/a", "session_id": "s1", "distinct_id": "u1"},
        {"event": "pageview", "url": "https://shop.test/b", "session_id": "s1"},
        {"event": ""},
    ]});
    r.call("POST", "/api/v1/events", &public, Some(batch)).await;
    r.call(
        "POST",
        "/api/v1/events",
        &public,
        Some(json!({"event": "signup"})),
    )
    .await;
    let events = format!("{project}/events");
    let page = r
        .call("GET", &format!("{events}?limit=2"), &secret, None)
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let last = r
        .call(
            "GET",
            &format!("{events}?limit=1000&cursor={cursor}"),
            &secret,
            None,
        )
        .await;
    assert!(last.get("next_cursor").is_none(), "{last}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.call("GET", &format!("{project}/sessions"), &secret, None)
        .await;

    // Insights.
    r.call(
        "POST",
        &format!("{project}/insights/generate?at=2026-11-20T12:30:00Z"),
        &secret,
        None,
    )
    .await;
    r.call("GET", &format!("{project}/insights"), &secret, None)
        .await;

    // Execution: a result, an exception, a refusal.
    for code in ["print(1 + 1)", "1/0", "import os"] {
        r.call(
            "POST",
            "/api/v1/execute",
            &exec_key,
            Some(json!({"language": "python", "code": code})),
        )
        .await;
    }
    let wat = "(module (func (export \"_start\")))";
    let module = base64::engine::general_purpose::STANDARD.encode(wat.as_bytes());
    r.call(
        "POST",
        "/api/v1/execute",
        &exec_key,
        Some(json!({"language": "wasm", "module": module})),
    )
    .await;
    r.call("GET", "/api/v1/wasm/modules", &exec_key, None).await;

    // Errors.
    r.call("GET", &events, "", None).await;
    r.call("GET", &events, &public, None).await;
    r.call(
        "GET",
        "/api/v1/projects/00000000-0000-0000-0000-000000000000",
        &admin,
        None,
    )
    .await;
    r.call("GET", &format!("{events}?limit=0"), &secret, None)
        .await;
    r.call(
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": false})),
    )
    .await;

    r.call("DELETE", &project, &admin, None).await;
    r.check();
    drop(server);
}

/// Project, key and module names: strings only, no control characters,
/// 1 to 100 characters; a 400 names the field. A good name is stored
/// trimmed.
#[tokio::test]
async fn names_are_strings_without_control_characters() {
    let server = Server::sqlite(&[]).await;
    let admin = server.keys.secret_key.clone();
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    let bad = [
        json!(false),
        json!(5),
        json!(null),
        json!(["a"]),
        json!("a\u{0}b"),
        json!("two\nlines"),
        json!("   "),
        json!(""),
        json!("x".repeat(101)),
    ];
    for name in &bad {
        for (method, path, body) in [
            ("POST", "/api/v1/projects".to_owned(), json!({"name": name})),
            ("PATCH", project.clone(), json!({"name": name})),
            (
                "POST",
                format!("{project}/keys"),
                json!({"name": name, "kind": "public"}),
            ),
        ] {
            let what = format!("{method} {path} {body}");
            let (status, err) = server.call(method, &path, &admin, Some(body)).await;
            assert_eq!(status, 400, "{what}: {err}");
            assert_eq!(err["code"], "invalid_body", "{what}: {err}");
            assert!(
                err["message"].as_str().unwrap().contains("`name`"),
                "{what}: {err}"
            );
        }
    }
    let (status, p) = server
        .call("PATCH", &project, &admin, Some(json!({"name": "  Shop  "})))
        .await;
    assert_eq!((status, p["name"].as_str()), (200, Some("Shop")), "{p}");

    // A module's name comes in the query string.
    let (_, key) = server
        .call(
            "POST",
            &format!("{project}/keys"),
            &admin,
            Some(json!({"name": "runner", "kind": "execute"})),
        )
        .await;
    let exec_key = key["key"].as_str().unwrap();
    for name in ["a%00b", "%20%20", &"x".repeat(101)] {
        let resp = client()
            .post(server.url(&format!("/api/v1/wasm/modules?name={name}")))
            .header("X-API-Key", exec_key)
            .header("Content-Type", "application/octet-stream")
            .body(b"\0asm\x01\0\0\0".to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{name}: {err}"
        );
        assert!(err["message"].as_str().unwrap().contains("`name`"), "{err}");
    }
    drop(server);
}

/// Duplicate keys in an API body are a 400 naming the key, at any depth,
/// before anything is changed.
#[tokio::test]
async fn duplicate_json_keys_are_refused() {
    let server = Server::sqlite(&[]).await;
    let admin = server.keys.secret_key.clone();
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    for (method, path, body, key) in [
        (
            "POST",
            format!("{project}/keys"),
            r#"{"name": "k", "kind": "secret", "admin": false, "admin": true}"#,
            "$.admin",
        ),
        (
            "POST",
            "/api/v1/projects".to_owned(),
            r#"{"name": "a", "name": "b"}"#,
            "$.name",
        ),
        (
            "PUT",
            format!("{project}/pipeline"),
            r#"{"stages": [{"plugin": "ip_hash", "plugin": "geoip"}]}"#,
            "$.stages[0].plugin",
        ),
    ] {
        let resp = client()
            .request(method.parse().unwrap(), server.url(&path))
            .header("X-API-Key", &admin)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "duplicate_key", "{err}");
        assert!(err["message"].as_str().unwrap().contains(key), "{err}");
    }
    // Nothing was created.
    let (_, keys) = server
        .call("GET", &format!("{project}/keys"), &admin, None)
        .await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");
    let (_, projects) = server.call("GET", "/api/v1/projects", &admin, None).await;
    assert_eq!(projects["projects"].as_array().unwrap().len(), 1);
    drop(server);
}

/// A distinct id sent as a number is kept exactly as its decimal text up to
/// 64 bits; beyond that (where JSON parsers round) the event is refused,
/// naming the field, and the good events next to it are stored.
#[tokio::test]
async fn integer_ids_are_kept_exactly_or_refused() {
    let server = Server::sqlite(&[]).await;
    let body = r#"{"batch": [
        {"event": "big", "distinct_id": 9007199254740993},
        {"event": "big", "distinct_id": 9007199254740992},
        {"event": "huge", "distinct_id": 18446744073709551617},
        {"event": "frac", "distinct_id": 1.5}
    ]}"#;
    let resp = client()
        .post(server.url("/api/v1/events"))
        .header("X-API-Key", &server.keys.public_key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    let results = answer["results"].as_array().unwrap();
    for r in &results[2..] {
        assert_eq!(r["status"], "rejected", "{answer}");
        assert_eq!(r["field"], "distinct_id", "{answer}");
    }
    let events = server.all_events("&event=big", 100).await;
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["distinct_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["9007199254740992", "9007199254740993"]);
    drop(server);
}

/// A cursor reveals nothing (not the instance-wide sequence), cannot be
/// forged or used on another project or list, and stays valid across a
/// restart.
#[tokio::test]
async fn cursors_are_opaque_and_bound_to_their_list() {
    let mut server = Server::sqlite(&[]).await;
    let admin = server.keys.secret_key.clone();
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"event": "e", "properties": {"i": i}}))
        .collect();
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/events",
            &server.keys.public_key,
            Some(json!({ "batch": batch })),
        )
        .await;
    assert_eq!(status, 200);
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    let (_, page) = server
        .call("GET", &format!("{project}/events?limit=2"), &admin, None)
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    // The old cursor was base64 of `s<seq>`: nothing readable is left.
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&cursor)
        .unwrap();
    // (Its first byte is the random nonce's, `s` one time in 256.)
    let old_form = raw.first() == Some(&b's') && raw[1..].iter().all(u8::is_ascii_digit);
    assert!(
        raw.len() >= 36 && !old_form,
        "a sealed cursor (nonce, position, tag), not the sequence: {raw:?}"
    );
    // The same position twice gives two different cursors.
    let (_, again) = server
        .call("GET", &format!("{project}/events?limit=2"), &admin, None)
        .await;
    assert_ne!(again["next_cursor"], page["next_cursor"]);

    // Another project, another list, a forged cursor: 400 invalid_cursor.
    let (_, other) = server
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(json!({"name": "other"})),
        )
        .await;
    let other = other["project"]["id"].as_str().unwrap();
    let mut forged = raw.clone();
    forged[20] ^= 1;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
    for path in [
        format!("/api/v1/projects/{other}/events?cursor={cursor}"),
        format!("{project}/sessions?cursor={cursor}"),
        format!("{project}/dead-letters?cursor={cursor}"),
        format!("{project}/events?cursor={forged}"),
        format!("{project}/events?cursor=czEyMw"),
    ] {
        let (status, err) = server.call("GET", &path, &admin, None).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_cursor")),
            "{path}: {err}"
        );
    }

    // After a restart the cursor still reads the next page.
    server.terminate();
    server.spawn();
    let (status, next) = server
        .call(
            "GET",
            &format!("{project}/events?limit=10&cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["events"].as_array().unwrap().len(), 3, "{next}");
    drop(server);
}

/// The spec states the limits the server enforces, and the server enforces
/// exactly them.
#[tokio::test]
async fn the_spec_states_the_limits_the_server_enforces() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let mut limits = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let s = &p["schema"];
                match p["name"].as_str().unwrap() {
                    "limit" => {
                        limits += 1;
                        assert_eq!(
                            (s["minimum"].as_f64(), s["maximum"].as_f64()),
                            (Some(1.0), Some(1000.0)),
                            "{method} {path}"
                        );
                    }
                    "cursor" => assert!(
                        s["pattern"].is_string() && s["maxLength"].is_number(),
                        "{method} {path}"
                    ),
                    "from" | "to" | "at" => {
                        let any = s["anyOf"].as_array().expect("RFC 3339 or milliseconds");
                        assert_eq!(any[0]["format"], "date-time", "{method} {path}");
                        assert!(any[1]["pattern"].is_string(), "{method} {path}");
                    }
                    "name" if path.starts_with("/api/v1/plugins") => {
                        assert_eq!(s["maxLength"], 64, "{method} {path}");
                        assert!(s["pattern"].is_string(), "{method} {path}");
                    }
                    "name" => assert_eq!(s["maxLength"], 100, "{method} {path}"),
                    _ => {}
                }
            }
        }
    }
    assert!(limits >= 4, "{limits} `limit` parameters");
    for object in ["ProjectIn", "KeyIn"] {
        let name = &schemas[object]["properties"]["name"];
        assert_eq!(
            (name["minLength"].as_u64(), name["maxLength"].as_u64()),
            (Some(1), Some(100)),
            "{object}"
        );
        assert!(name["pattern"].is_string(), "{object}");
    }
    let event = &schemas["EventInput"]["properties"]["event"];
    assert_eq!(
        (event["minLength"].as_u64(), event["maxLength"].as_u64()),
        (Some(1), Some(200))
    );
    let stages = &schemas["PipelineIn"]["properties"]["stages"];
    assert_eq!(
        (stages["minItems"].as_u64(), stages["maxItems"].as_u64()),
        (Some(1), Some(32))
    );
    let timeout = &schemas["StageDto"]["properties"]["timeout_ms"];
    assert_eq!(
        (timeout["minimum"].as_f64(), timeout["maximum"].as_f64()),
        (Some(1.0), Some(10000.0))
    );

    // The server refuses just outside and accepts just inside.
    let server = Server::sqlite(&[]).await;
    let admin = server.keys.secret_key.clone();
    let project = format!("/api/v1/projects/{}", server.keys.project_id);
    for (query, status) in [
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=1", 200),
        ("limit=1000", 200),
    ] {
        for list in ["events", "sessions", "dead-letters", "insights"] {
            let (got, body) = server
                .call("GET", &format!("{project}/{list}?{query}"), &admin, None)
                .await;
            assert_eq!(got, status, "{list}?{query}: {body}");
            if got == 400 {
                assert_eq!(body["code"], "invalid_parameter", "{body}");
                assert!(
                    body["message"].as_str().unwrap().contains("`limit`"),
                    "{body}"
                );
            }
        }
    }
    for (stages, status) in [
        (json!([]), 400),
        (
            json!(
                (0..33)
                    .map(|_| json!({"plugin": "ip_hash"}))
                    .collect::<Vec<_>>()
            ),
            400,
        ),
        (json!([{"plugin": "ip_hash", "timeout_ms": 0}]), 400),
        (json!([{"plugin": "ip_hash", "timeout_ms": 10001}]), 400),
        (json!([{"plugin": 5}]), 400),
        (json!([{"plugin": "ip_hash", "timeout_ms": 10000}]), 200),
    ] {
        let (got, body) = server
            .call(
                "PUT",
                &format!("{project}/pipeline"),
                &admin,
                Some(json!({ "stages": stages })),
            )
            .await;
        assert_eq!(got, status, "{stages}: {body}");
    }
    drop(server);
}

/// schemathesis generates requests from the spec (valid and invalid, and
/// chains of them) against a running gateway with an admin key, for a
/// bounded time, and checks every answer: no 5xx, statuses, content types
/// and bodies as documented, invalid input refused.
#[tokio::test]
async fn a_property_based_run_over_the_spec_finds_no_failure() {
    let seconds: u64 = std::env::var("ORRERY_TEST_SCHEMATHESIS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let server = Server::sqlite(&[]).await;
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(python_venv().join("bin/schemathesis"))
        .arg("--config-file")
        .arg(repo().join("tests/schemathesis.toml"))
        .arg("run")
        .arg(repo().join("openapi/openapi.json"))
        .args(["--url", &server.base])
        .args([
            "--header",
            &format!("X-API-Key: {}", server.keys.secret_key),
        ])
        .args(["--max-time", &seconds.to_string()])
        // One worker: CPython 3.11 can fail ast.parse in threads (gh-106905),
        // which hypothesis calls while describing strategies.
        .args(["--workers", "1", "--seed", "20261203"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .arg("--report-dir")
        .arg(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        // Its caches (.schemathesis/, .hypothesis/) go there, not in the tree.
        .current_dir(report.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{log}");
    println!("{log}");
    drop(server);
}
