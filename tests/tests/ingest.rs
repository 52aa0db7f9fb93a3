//! Ingestion tests: single and batch events, bad input of every kind, the
//! beacon and the pixel, duplicates. Handler edge cases run in-process;
//! what involves the client address, the stores on both backends or the
//! HTTP layer runs against the real binary.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::io::Write;

use orrery_tests::{Answer, Api, Backend, InProcess, Server, backends, client};
use serde_json::{Value, json};

async fn post(server: &Server, key: &str, body: Value) -> (u16, Value) {
    server.post_events(key, &[], body).await
}

#[tokio::test]
async fn single_and_batch_events_are_stored_and_read_back() {
    for backend in backends("single_and_batch_events_are_stored_and_read_back") {
        let server = Server::on(backend, &[]).await;
        let pk = server.keys.public_key.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let (status, body) = post(
            &server,
            &pk,
            json!({"id": id, "event": "signup", "distinct_id": "user-7", "session_id": "s-1",
                   "timestamp": "2026-11-20T08:00:00Z", "url": "https://shop.test/join?plan=pro",
                   "referrer": "https://www.google.com/", "properties": {"plan": "pro", "seats": 3}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 1);
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][0]["id"], id.as_str());

        let batch: Vec<Value> = (0..25)
            .map(|i| json!({"event": "view", "properties": {"i": i}}))
            .collect();
        let (status, body) = post(&server, &pk, json!({ "batch": batch })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 25);
        assert_eq!(body["results"].as_array().unwrap().len(), 25);

        let events = server.all_events("", 1000).await;
        assert_eq!(events.len(), 26, "{backend:?}");
        let signup = events
            .iter()
            .find(|e| e["event"] == "signup")
            .expect("signup stored");
        assert_eq!(signup["id"], id.as_str());
        assert_eq!(signup["distinct_id"], "user-7");
        assert_eq!(signup["session_id"], "s-1");
        assert_eq!(signup["timestamp"], "2026-11-20T08:00:00.000Z");
        assert_eq!(signup["url"], "https://shop.test/join?plan=pro");
        assert_eq!(signup["referrer"], "https://www.google.com/");
        assert_eq!(signup["properties"], json!({"plan": "pro", "seats": 3}));
        assert_eq!(
            signup["ip_hash"].as_str().map(str::len),
            Some(32),
            "ip hashed"
        );
        assert!(signup["visitor_id"].is_string());
        // The default pipeline's referrer plugin.
        let enrichment = &signup["enrichment"];
        assert_eq!(enrichment["referrer_source"], "search", "{signup}");
        assert_eq!(enrichment["referrer_name"], "Google");
        assert_eq!(enrichment["page_path"], "/join");
        // Newest first: the batch came after the signup.
        assert_eq!(events.last().unwrap()["event"], "signup");
        drop(server);
    }
}

#[tokio::test]
async fn a_bad_event_never_rejects_its_neighbours() {
    for backend in backends("a_bad_event_never_rejects_its_neighbours") {
        let server = Server::on(backend, &[]).await;
        let (status, body) = post(
            &server,
            &server.keys.public_key,
            json!({"batch": [
                {"event": "ok-1"},
                {"event": ""},
                {"event": "ok-2", "timestamp": "not a time"},
                "just a string",
                {"event": "ok-3", "properties": [1, 2]},
                {"event": "ok-4", "colour": "red"},
                {"event": "nul", "properties": {"x": "a\u{0}b"}},
                {"event": "ok-5", "distinct_id": 12345}
            ]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 2, "{body}");
        assert_eq!(body["rejected"], 6, "{body}");
        let r = body["results"].as_array().unwrap();
        let expect = [
            (0, "accepted", None),
            (1, "rejected", Some("event")),
            (2, "rejected", Some("timestamp")),
            (3, "rejected", Some("$")),
            (4, "rejected", Some("properties")),
            (5, "rejected", Some("colour")),
            (6, "rejected", Some("properties")),
            (7, "accepted", None),
        ];
        for (i, status, field) in expect {
            assert_eq!(r[i]["index"], i, "{body}");
            assert_eq!(r[i]["status"], status, "event {i}: {}", r[i]);
            if let Some(f) = field {
                assert_eq!(r[i]["field"], f, "event {i}: {}", r[i]);
                assert!(r[i]["reason"].as_str().is_some_and(|s| !s.is_empty()));
            }
        }
        let names: Vec<String> = server
            .all_events("", 100)
            .await
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["ok-5", "ok-1"], "{backend:?}");
        drop(server);
    }
}

/// `POST /api/v1/events` with the first project's public key, `headers`
/// and a raw `body`.
async fn post_raw(app: &InProcess, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
    let mut all = vec![("X-API-Key", app.keys.public_key.as_str())];
    all.extend_from_slice(headers);
    app.send("POST", "/api/v1/events", &all, Some(body.into()))
        .await
}

#[tokio::test]
async fn a_single_invalid_event_is_a_400_naming_the_field() {
    let app = InProcess::sqlite().await;
    let (status, body) = app
        .post_events(
            &app.keys.public_key,
            &[],
            json!({"event": "x", "timestamp": true}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_event");
    assert!(
        body["message"].as_str().unwrap().contains("timestamp"),
        "{body}"
    );
    assert!(app.all_events("", 10).await.is_empty());
}

#[tokio::test]
async fn oversize_bodies_and_batches_are_413_and_store_nothing() {
    let app = InProcess::on(Backend::Sqlite, |c| c.ingest.max_batch_events = 5).await;
    let pk = app.keys.public_key.clone();
    // Over the 1 MiB body limit.
    let big = json!({"event": "big", "properties": {"blob": "x".repeat(1_100_000)}});
    let answer = post_raw(
        &app,
        &[("content-type", "application/json")],
        big.to_string(),
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "payload_too_large");
    // Over the batch limit.
    let batch: Vec<Value> = (0..6).map(|_| json!({"event": "e"})).collect();
    let (status, body) = app.post_events(&pk, &[], json!({ "batch": batch })).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "batch_too_large");
    assert!(body["message"].as_str().unwrap().contains('5'));
    // One event over the per-event limit inside a good batch: only it fails.
    let (status, body) = app
        .post_events(
            &pk,
            &[],
            json!({"batch": [{"event": "small"}, {"event": "huge", "properties": {"s": "y".repeat(70_000)}}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][1]["status"], "rejected");
    assert_eq!(body["results"][1]["field"], "$");
    let events = app.all_events("", 10).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "small");
}

#[tokio::test]
async fn malformed_json_and_wrong_content_types_are_clear_4xx() {
    let app = InProcess::sqlite().await;
    let cases: [(&str, &str, u16, &str); 5] = [
        ("application/json", "{\"event\": ", 400, "invalid_json"),
        ("application/json", "[1,2", 400, "invalid_json"),
        ("application/json", "{\"batch\": 5}", 400, "invalid_batch"),
        ("application/xml", "<event/>", 415, "unsupported_media_type"),
        ("application/json", "", 400, "invalid_json"),
    ];
    for (ctype, body, status, code) in cases {
        let answer = post_raw(&app, &[("content-type", ctype)], body).await;
        assert_eq!(answer.status, status, "{ctype} {body:?}");
        let err = answer.json();
        assert_eq!(err["code"], code, "{ctype} {body:?}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still serving, nothing stored.
    let (status, _) = app
        .post_events(&app.keys.public_key, &[], json!({"event": "after"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.all_events("", 10).await.len(), 1);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_zip_bombs_refused() {
    let app = InProcess::sqlite().await;
    let gzipped_json = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"event": "gz", "properties": {"i": i}}))
        .collect();
    let body = gzip(json!({ "batch": batch }).to_string().as_bytes());
    let answer = post_raw(&app, &gzipped_json, body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["accepted"], 50);

    // 64 MiB of spaces around a valid event compress to ~64 KiB.
    let mut bomb = vec![b' '; 64 * 1024 * 1024];
    bomb[..14].copy_from_slice(b"{\"event\":\"b\"} ");
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 1024 * 1024);
    let answer = post_raw(&app, &gzipped_json, compressed).await;
    assert_eq!(answer.status, 413);
    let v = answer.json();
    assert_eq!(v["code"], "payload_too_large");
    assert!(v["message"].as_str().unwrap().contains("decompressed"));

    let answer = post_raw(&app, &gzipped_json, "definitely not gzip").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "invalid_gzip");

    let brotli = [
        ("content-encoding", "br"),
        ("content-type", "application/json"),
    ];
    let answer = post_raw(&app, &brotli, "{}").await;
    assert_eq!(answer.status, 415);
    assert_eq!(app.all_events("", 1000).await.len(), 50);
}

#[tokio::test]
async fn send_beacon_text_plain_with_key_in_body() {
    let app = InProcess::sqlite().await;
    let body = json!({"api_key": app.keys.public_key, "batch": [{"event": "unload", "url": "https://x.test/"}]});
    let beacon = [
        ("content-type", "text/plain;charset=UTF-8"),
        ("origin", "https://any-site.test"),
    ];
    let answer = app
        .send(
            "POST",
            "/api/v1/events",
            &beacon,
            Some(body.to_string().into()),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://any-site.test"),
        "ingestion allows any origin"
    );
    assert_eq!(answer.json()["accepted"], 1);
    // No key anywhere: 401.
    let text = [("content-type", "text/plain")];
    let body = json!({"event": "x"}).to_string();
    let answer = app
        .send("POST", "/api/v1/events", &text, Some(body.into()))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["code"], "missing_key");
}

#[tokio::test]
async fn pixel_always_answers_a_gif_and_records_what_it_can() {
    let server = Server::sqlite(&[]).await;
    let http = client();
    let pk = &server.keys.public_key;
    let cases = [
        (
            format!("/t.gif?k={pk}&e=email_open&u=https://mail.test/c1&distinct_id=u9"),
            None,
        ),
        (
            format!("/t.gif?api_key={pk}"),
            Some("https://blog.test/post"),
        ),
        ("/t.gif?k=pk_wrongwrongwrong&e=x".to_owned(), None),
        ("/t.gif".to_owned(), None),
        (format!("/t.gif?k={pk}&e="), None),
        (format!("/t.gif?k={pk}&timestamp=%ZZ"), None),
    ];
    for (path, referer) in &cases {
        let mut req = http.get(server.url(path));
        if let Some(r) = referer {
            req = req.header("referer", *r);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "image/gif", "{path}");
        assert!(
            resp.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("no-store"),
            "{path}"
        );
        let bytes = resp.bytes().await.unwrap();
        assert!(bytes.starts_with(b"GIF89a"), "{path}");
    }
    let events = server.all_events("", 100).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let open = events
        .iter()
        .find(|e| e["event"] == "email_open")
        .expect("open recorded");
    assert_eq!(open["url"], "https://mail.test/c1");
    assert_eq!(open["distinct_id"], "u9");
    let view = events
        .iter()
        .find(|e| e["url"] == "https://blog.test/post")
        .expect("referer used");
    assert_eq!(view["event"], "pageview");
}

#[tokio::test]
async fn duplicate_event_ids_are_stored_once() {
    for backend in backends("duplicate_event_ids_are_stored_once") {
        let server = Server::on(backend, &[]).await;
        let pk = server.keys.public_key.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let (_, first) = post(&server, &pk, json!({"id": id, "event": "pay"})).await;
        assert_eq!(first["results"][0]["status"], "accepted");
        let (status, again) = post(&server, &pk, json!({"id": id, "event": "pay"})).await;
        assert_eq!(status, 200);
        assert_eq!(again["results"][0]["status"], "duplicate");
        assert_eq!(again["duplicates"], 1);
        let other = uuid::Uuid::new_v4().to_string();
        let (_, batch) = post(
            &server,
            &pk,
            json!({"batch": [{"id": other, "event": "a"}, {"id": other, "event": "a"}, {"id": id, "event": "pay"}]}),
        )
        .await;
        let statuses: Vec<&str> = batch["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["accepted", "duplicate", "duplicate"],
            "{backend:?}"
        );
        assert_eq!(server.all_events("", 100).await.len(), 2, "{backend:?}");
        drop(server);
    }
}

#[tokio::test]
async fn pagination_returns_every_event_exactly_once_and_filters_work() {
    for backend in backends("pagination_returns_every_event_exactly_once_and_filters_work") {
        let server = Server::on(backend, &[]).await;
        let pk = server.keys.public_key.clone();
        let mut sent = Vec::new();
        for chunk in 0..5 {
            let batch: Vec<Value> = (0..50)
                .map(|i| {
                    let n = chunk * 50 + i;
                    let id = uuid::Uuid::new_v4().to_string();
                    sent.push(id.clone());
                    json!({"id": id, "event": if n % 3 == 0 { "buy" } else { "view" },
                           "distinct_id": format!("u{}", n % 7), "session_id": format!("s{}", n % 4),
                           "timestamp": 1_795_000_000_000i64 + n * 1000})
                })
                .collect();
            let (status, _) = post(&server, &pk, json!({ "batch": batch })).await;
            assert_eq!(status, 200);
        }
        let events = server.all_events("", 40).await;
        let got: Vec<String> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let mut expected = sent.clone();
        expected.reverse();
        assert_eq!(got, expected, "{backend:?}: every event once, newest first");

        let buys = server.all_events("&event=buy", 7).await;
        assert_eq!(buys.len(), 84);
        assert!(buys.iter().all(|e| e["event"] == "buy"));
        let u3 = server.all_events("&distinct_id=u3", 1000).await;
        assert_eq!(u3.len(), 36);
        let s1 = server.all_events("&session_id=s1", 1000).await;
        assert_eq!(s1.len(), 63);
        let window = server
            .all_events("&from=1795000010000&to=2026-11-18T11:07:00Z", 1000)
            .await;
        // 1795000010000 .. 1795000020000 (exclusive): n = 10..19.
        assert_eq!(window.len(), 10, "{backend:?}");

        let http = client();
        for bad in [
            "limit=0",
            "limit=1001",
            "cursor=%%%",
            "from=yesterday",
            "limit=abc",
        ] {
            let resp = http
                .get(server.url(&format!(
                    "/api/v1/projects/{}/events?{bad}",
                    server.keys.project_id
                )))
                .header("X-API-Key", &server.keys.secret_key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{bad}");
            let v: Value = resp.json().await.unwrap();
            assert!(
                v["code"].is_string() && v["message"].is_string(),
                "{bad}: {v}"
            );
        }
        drop(server);
    }
}

#[tokio::test]
async fn http_hygiene_headers_cors_and_errors() {
    let server = Server::sqlite(&[("ORRERY_HTTP__CORS_ORIGINS", "[\"https://admin.test\"]")]).await;
    let http = client();
    // Request ids: echoed or generated.
    let resp = http
        .get(server.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let resp = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    // Admin CORS: allowlisted origin yes, another no.
    let list = server.url("/api/v1/projects");
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &list)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://admin.test").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://admin.test"
    );
    let denied = preflight("https://evil.test").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Ingestion preflight: any origin.
    let ingest = http
        .request(reqwest::Method::OPTIONS, server.url("/api/v1/events"))
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 204);
    // Unknown route: JSON 404.
    let resp = http
        .get(server.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "not_found");
    // Admin body limit.
    let resp = http
        .post(server.url("/api/v1/projects"))
        .header("X-API-Key", &server.keys.secret_key)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "n".repeat(300_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Metrics after some traffic.
    let (status, _) = post(&server, &server.keys.public_key, json!({"event": "m"})).await;
    assert_eq!(status, 200);
    let metrics = server.metrics_text().await;
    for needle in [
        "orrery_events_total{outcome=\"accepted\"} 1",
        "orrery_http_requests_total{route=\"ingest_events\",method=\"POST\",status=\"200\"} 1",
        "orrery_writer_queue_depth 0",
        "orrery_writer_batch_size_count",
        "orrery_writer_commit_duration_seconds_count",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    assert!(
        metrics.lines().any(
            |l| l.starts_with("orrery_http_request_duration_seconds_bucket")
                && l.contains("route=\"ingest_events\"")
        ),
        "no latency histogram for ingest_events:\n{metrics}"
    );
    // Ready and docs.
    let ready: Value = http
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database_ok"], true);
    let docs = http.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    // Swagger UI shows the document as served, with its completions.
    let html = docs.text().await.unwrap();
    assert!(
        html.contains("\"additionalProperties\": false"),
        "/docs embeds the served spec"
    );
    let spec: Value = http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/api/v1/events"].is_object());
}
