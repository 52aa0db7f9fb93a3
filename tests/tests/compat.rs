//! Drop-in compatibility, end to end through the real binary on each
//! backend: PostHog's capture API in every body form posthog-js uses
//! (JSON batch, gzip-js, base64 form from sendBeacon) and through the real
//! `posthog` Python library; Plausible's events API with its header rules;
//! the Bilan server's and seed 004's ingestion shapes. Each event is read
//! back from the events API with its mapped name, id, user, page, session
//! and the fields Orrery has no meaning for kept in `properties`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::io::Write;
use std::process::Command;

use base64::Engine;
use orrery_tests::{Api, Server, each_backend, env_map, python_venv};
use serde_json::{Value, json};

/// Restarts `server` with its first project reachable as the PostHog token
/// `phc_compat` and the Plausible domains `site.example` and (for a second
/// project, made here) `other.example`; answers the second project's keys.
async fn with_compat_settings(server: &mut Server) -> orrery_tests::InitKeys {
    let keys = server.keys.clone();
    let other = server.create_project(&keys.secret_key, "other").await;
    server.restart_with_env(&[
        (
            "ORRERY_COMPAT__POSTHOG_TOKENS",
            &env_map(&[("phc_compat", &keys.project_id)]),
        ),
        (
            "ORRERY_COMPAT__PLAUSIBLE_DOMAINS",
            &env_map(&[
                ("site.example", &keys.project_id),
                ("other.example", &other.project_id),
                ("gone.example", "0192b3a4-0000-7000-8000-000000000009"),
            ]),
        ),
    ]);
    other
}

/// The first project's events, oldest first.
async fn events(server: &Server) -> Vec<Value> {
    let mut all = server.all_events("", 500).await;
    all.reverse();
    all
}

fn by_id<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no stored event {id} among {events:#?}"))
}

fn ms(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn posthog_bodies_and_the_python_library_are_stored_as_orrery_events() {
    each_backend("compat_posthog", &[], async |server| {
        with_compat_settings(server).await;
        let pk = server.keys.public_key.clone();
        let now = chrono::Utc::now();
        let iso = |offset_s: i64| (now + chrono::Duration::seconds(offset_s)).to_rfc3339();

        // 1. posthog-js's JSON batch to /e/, its clock 1 hour fast: the
        // skew between `sent_at` and our clock is taken out, as PostHog does.
        let batch = json!({
            "api_key": pk,
            "sent_at": iso(3600),
            "batch": [
                {"event": "$pageview", "uuid": "0192b3a4-0000-7000-8000-0000000000a1",
                 "timestamp": iso(3600 - 30),
                 "properties": {"token": pk, "distinct_id": "anon-1", "$current_url": "https://shop.example/a?x=1",
                                "$referrer": "https://search.example/q", "$session_id": "ps-1",
                                "$lib": "web", "$lib_version": "1.449.2", "$ip": "198.51.100.7"}},
                {"event": "clicked", "uuid": "0192b3a4-0000-7000-8000-0000000000a2",
                 "timestamp": iso(3600 - 20),
                 "properties": {"distinct_id": "anon-1", "$current_url": "https://shop.example/a",
                                "$referrer": "$direct", "button": "buy"},
                 "$set": {"plan": "pro"}},
                {"uuid": "0192b3a4-0000-7000-8000-0000000000a3", "properties": {}}
            ]
        });
        let a = server
            .send("POST", "/e/?ver=1.449.2&compression=none", &[("Content-Type", "application/json")],
                  Some(serde_json::to_vec(&batch).unwrap()))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        let body = a.json();
        assert_eq!((body["status"].clone(), body["accepted"].clone(), body["rejected"].clone()), (json!(1), json!(2), json!(1)), "{body}");
        // The bad event is named as the client spelt it, and only it is lost.
        assert_eq!(body["results"][2]["field"], "event", "{body}");

        // 2. gzip-js: a gzip body, text/plain, no Content-Encoding.
        let gz_batch = json!([{"event": "gz", "uuid": "0192b3a4-0000-7000-8000-0000000000b1",
                               "properties": {"token": pk, "distinct_id": "anon-2"}}]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(gz_batch.to_string().as_bytes()).unwrap();
        let a = server
            .send("POST", "/e/?compression=gzip-js&ver=1", &[("Content-Type", "text/plain")],
                  Some(enc.finish().unwrap()))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());

        // 3. sendBeacon: a base64 form, with the configured PostHog token.
        let beacon = json!([{"event": "$pageleave", "uuid": "0192b3a4-0000-7000-8000-0000000000c1",
                             "properties": {"token": "phc_compat", "distinct_id": "anon-3",
                                            "$current_url": "https://shop.example/c+d?q=a%20b"}}]);
        let data = base64::engine::general_purpose::STANDARD.encode(beacon.to_string());
        let form = format!("data={}&compression=base64", urlencode(&data));
        let a = server
            .send("POST", "/i/v0/e/", &[("Content-Type", "application/x-www-form-urlencoded")],
                  Some(form.into_bytes()))
            .await;
        assert_eq!(a.status, 200, "{}", a.text());

        // 4. A retry of a stored event is a duplicate, stored once.
        let retry = json!({"api_key": pk, "batch": [batch["batch"][0].clone()]});
        let a = server.send("POST", "/batch/", &[("Content-Type", "application/json")],
                            Some(serde_json::to_vec(&retry).unwrap())).await;
        assert_eq!(a.json()["duplicates"], 1, "{}", a.text());

        // 5. Refusals, each naming what is wrong.
        let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
            ("/capture/", json!({"event": "x", "uuid": "not-a-uuid", "api_key": pk}).to_string().into_bytes(),
             "application/json", 400, "uuid"),
            ("/capture/", json!({"event": "x", "api_key": "phc_unknown"}).to_string().into_bytes(),
             "application/json", 401, "compat.posthog_tokens"),
            ("/capture/", json!({"event": "x"}).to_string().into_bytes(), "application/json", 401, "token"),
            ("/e/?compression=lz64", b"data=abc".to_vec(), "application/x-www-form-urlencoded", 415, "lz64"),
            ("/e/", b"{not json".to_vec(), "application/json", 400, "JSON"),
            ("/e/", b"data=%%%".to_vec(), "application/x-www-form-urlencoded", 400, "base64"),
            ("/e/", b"x".to_vec(), "image/png", 415, "image/png"),
        ];
        for (path, body, mime, status, says) in cases {
            let a = server.send("POST", path, &[("Content-Type", mime)], Some(body)).await;
            assert_eq!(a.status, status, "{path}: {}", a.text());
            assert!(a.text().contains(says), "{path}: {} should say {says}", a.text());
        }

        // 6. Flags and remote config: nothing to load, autocapture as the
        // page says, and no surveys key (posthog-js loads their code for
        // `false`).
        for (method, path) in [("POST", "/flags/?v=2&config=true"), ("POST", "/decide/?v=3"), ("GET", "/array/phc_compat/config")] {
            let a = server.send(method, path, &[("Content-Type", "application/json")], Some(b"{}".to_vec())).await;
            assert_eq!(a.status, 200, "{path}: {}", a.text());
            let v = a.json();
            assert_eq!((v["flags"].clone(), v["featureFlags"].clone(), v["sessionRecording"].clone(), v["autocapture_opt_out"].clone()),
                       (json!({}), json!({}), json!(false), json!(false)), "{path}: {v}");
            assert!(v.get("surveys").is_none(), "{path}: {v}");
        }
        let a = server.send("GET", "/array/phc_\"x/config.js", &[], None).await;
        assert_eq!((a.status, a.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
        assert!(a.text().contains(r#"c["phc_\"x"]={config:{"autocapture_opt_out":false"#), "{}", a.text());
        let a = server.send("GET", "/static/array.js?v=1", &[], None).await;
        assert_eq!((a.status, a.header("location")), (302, Some("https://us-assets.i.posthog.com/static/array.js?v=1")));

        // 7. The real posthog Python library, plain and gzip, with the
        // PostHog token of the settings.
        let script = r#"
import datetime, json, sys
from posthog import Posthog
base, token, gzip = sys.argv[1], sys.argv[2], sys.argv[3] == "gzip"
ph = Posthog(token, host=base, sync_mode=True, gzip=gzip, max_retries=0)
ids = [
    ph.capture("signup", distinct_id="py-user", properties={"plan": "pro", "$current_url": "https://py.example/signup"}),
    ph.capture("$pageview", distinct_id="py-user", properties={"$current_url": "https://py.example/home"},
               timestamp=datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.timezone.utc)),
    ph.set(distinct_id="py-user", properties={"email": "py@example.org"}),
]
ph.shutdown()
print(json.dumps(ids))
"#;
        let mut python_ids = Vec::new();
        for mode in ["plain", "gzip"] {
            let out = Command::new(python_venv().join("bin/python"))
                .args(["-c", script, &server.base, "phc_compat", mode])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let ids: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
            python_ids.push(ids);
        }

        // Read back.
        let stored = events(server).await;
        let a1 = by_id(&stored, "0192b3a4-0000-7000-8000-0000000000a1");
        assert_eq!(a1["event"], "pageview");
        assert_eq!(a1["distinct_id"], "anon-1");
        assert_eq!(a1["url"], "https://shop.example/a?x=1");
        assert_eq!(a1["referrer"], "https://search.example/q");
        assert_eq!(a1["session_id"], "ps-1");
        assert_eq!(a1["properties"]["$lib"], "web");
        assert_eq!(a1["properties"]["$lib_version"], "1.449.2");
        let props = a1["properties"].as_object().unwrap();
        assert!(!props.contains_key("$ip") && !props.contains_key("token") && !props.contains_key("$current_url"), "{a1}");
        let skew = (ms(&a1["timestamp"]) - (now.timestamp_millis() - 30_000)).abs();
        assert!(skew < 10_000, "the client's hour of skew is taken out: {a1}");
        let a2 = by_id(&stored, "0192b3a4-0000-7000-8000-0000000000a2");
        assert_eq!(a2["event"], "clicked");
        assert!(a2["referrer"].is_null(), "$direct is no referrer: {a2}");
        assert_eq!(a2["properties"]["$set"], json!({"plan": "pro"}));
        assert_eq!(a2["properties"]["button"], "buy");
        assert_eq!(by_id(&stored, "0192b3a4-0000-7000-8000-0000000000b1")["event"], "gz");
        let c1 = by_id(&stored, "0192b3a4-0000-7000-8000-0000000000c1");
        assert_eq!((c1["event"].clone(), c1["url"].clone()), (json!("$pageleave"), json!("https://shop.example/c+d?q=a%20b")));
        for ids in &python_ids {
            let signup = by_id(&stored, &ids[0]);
            assert_eq!((signup["event"].clone(), signup["distinct_id"].clone()), (json!("signup"), json!("py-user")));
            assert_eq!(signup["properties"]["plan"], "pro");
            assert_eq!(signup["properties"]["$lib"], "posthog-python");
            assert_eq!(signup["url"], "https://py.example/signup");
            let view = by_id(&stored, &ids[1]);
            assert_eq!(view["event"], "pageview");
            let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().timestamp_millis();
            assert!((ms(&view["timestamp"]) - at).abs() < 10_000, "{view}");
            let set = by_id(&stored, &ids[2]);
            assert_eq!(set["event"], "$set");
            assert_eq!(set["properties"]["$set"], json!({"email": "py@example.org"}));
        }
        assert_eq!(stored.len(), 4 + 6, "{stored:#?}");
    })
    .await;
}

#[tokio::test]
async fn plausible_events_follow_plausibles_header_rules() {
    each_backend("compat_plausible", &[], async |server| {
        let other = with_compat_settings(server).await;
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
        let post = async |body: Value, headers: &[(&str, &str)]| {
            let mut all = vec![("Content-Type", "text/plain")];
            all.extend_from_slice(headers);
            server.send("POST", "/api/event", &all, Some(body.to_string().into_bytes())).await
        };
        // The script's payload; two visitors told apart by X-Forwarded-For.
        for (ip, path) in [("203.0.113.1", "/a"), ("203.0.113.1", "/b"), ("203.0.113.2", "/a")] {
            let a = post(
                json!({"n": "pageview", "u": format!("https://www.site.example{path}"), "d": "site.example",
                       "r": "https://news.example/", "w": 1440}),
                &[("User-Agent", ua), ("X-Forwarded-For", &format!("{ip}, 10.0.0.1"))],
            ).await;
            assert_eq!(a.status, 202, "{}", a.text());
        }
        // A custom event with props as JSON text, for two sites at once.
        let a = post(
            json!({"name": "Signup", "url": "https://site.example/join", "domain": "www.site.example,other.example",
                   "props": "{\"plan\":\"pro\"}"}),
            &[("User-Agent", ua)],
        ).await;
        assert_eq!(a.status, 202, "{}", a.text());
        assert_eq!(a.json()["accepted"], 2, "{}", a.text());

        // Refusals.
        let cases = [
            (json!({"n": "pageview", "u": "https://site.example/"}), ua, 400, "`d`"),
            (json!({"n": "pageview", "d": "site.example"}), ua, 400, "`u`"),
            (json!({"n": "pageview", "u": "https://x.example/", "d": "unknown.example"}), ua, 404, "unknown.example"),
            (json!({"n": "pageview", "u": "https://x.example/", "d": "gone.example"}), ua, 404, "does not exist"),
            (json!({"n": "pageview", "u": "https://site.example/", "d": "site.example"}), "", 400, "User-Agent"),
            (json!({"n": "", "u": "https://site.example/", "d": "site.example"}), ua, 400, "`n`"),
        ];
        for (body, agent, status, says) in cases {
            let a = if agent.is_empty() {
                server.send("POST", "/api/event", &[("Content-Type", "application/json")], Some(body.to_string().into_bytes())).await
            } else {
                post(body.clone(), &[("User-Agent", agent)]).await
            };
            assert_eq!(a.status, status, "{body}: {}", a.text());
            assert!(a.text().contains(says), "{body}: {} should say {says}", a.text());
        }

        let stored = events(server).await;
        assert_eq!(stored.len(), 4, "{stored:#?}");
        let views: Vec<&Value> = stored.iter().filter(|e| e["event"] == "pageview").collect();
        assert_eq!(views.len(), 3);
        assert_eq!(views[0]["url"], "https://www.site.example/a");
        assert_eq!(views[0]["referrer"], "https://news.example/");
        assert_eq!(views[0]["properties"]["screen_width"], 1440);
        assert_eq!(views[0]["user_agent"], ua);
        // The first address of X-Forwarded-For is the visitor.
        assert_eq!(views[0]["ip_hash"], views[1]["ip_hash"]);
        assert_ne!(views[0]["ip_hash"], views[2]["ip_hash"]);
        let signup = stored.iter().find(|e| e["event"] == "Signup").unwrap();
        assert_eq!(signup["properties"]["plan"], "pro");
        let path = format!("/api/v1/projects/{}/events", other.project_id);
        let (status, page) = server.get(&path, &other.secret_key).await;
        assert_eq!(status, 200);
        assert_eq!(page["events"].as_array().unwrap().len(), 1, "{page}");
        assert_eq!(page["events"][0]["event"], "Signup");
    })
    .await;
}

#[tokio::test]
async fn bilan_and_seed_004_clients_keep_working() {
    each_backend("compat_shapes", &[], async |server| {
        let pk = server.keys.public_key.clone();
        let bearer = format!("Bearer {pk}");
        // Bilan's three shapes.
        let a = bilan(server, json!({"event_type": "turn_completed", "user_id": "user-123", "turn_id": "turn-456",
                             "conversation_id": "conv-1", "properties": {"model": "gpt-4", "latency": 1200}}),
                      Some(&bearer)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!((a.json()["success"].clone(), a.json()["count"].clone()), (json!(true), json!(1)));
        let a = bilan(server, json!([{"event_type": "vote_cast", "user_id": "user-123", "event_id": "evt-7",
                              "timestamp": 1_795_000_000_000_i64, "properties": {"value": 1}},
                             {"user_id": "user-123"}]), Some(&bearer)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let v = a.json();
        assert_eq!((v["success"].clone(), v["count"].clone()), (json!(false), json!(1)), "{v}");
        assert_eq!(v["results"][1]["field"], "event_type", "{v}");
        let a = bilan(server, json!({"events": [{"event_type": "conversation_started", "user_id": "user-9"}]}), Some(&bearer)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let a = bilan(server, json!({"event_type": "x"}), None).await;
        assert_eq!(a.status, 401, "{}", a.text());
        let a = bilan(server, json!({"event_type": "x"}), Some("Bearer pk_nope")).await;
        assert_eq!(a.status, 401, "{}", a.text());
        let a = bilan(server, json!({"events": 3}), Some(&bearer)).await;
        assert_eq!((a.status, a.json()["code"].clone()), (400, json!("invalid_batch")), "{}", a.text());

        // Seed 004's SDK batch.
        let body = json!({"events": [
            {"event_name": "page_view", "distinct_id": "d-1", "session_id": "s-1",
             "page_url": "https://app.example/home", "referrer": "https://ref.example/", "properties": {"k": "v"}},
            {"event_name": "button_click", "distinct_id": "d-1", "session_id": "s-1",
             "page_url": "https://app.example/home", "properties": {"button_id": "signup"}, "screen": "1x2"}
        ]});
        let a = server.send("POST", "/api/v1/events/ingest", &[("Content-Type", "application/json"), ("X-API-Key", &pk)],
                            Some(body.to_string().into_bytes())).await;
        assert_eq!(a.status, 202, "{}", a.text());
        assert_eq!(a.json()["accepted"], 2);
        let a = server.send("POST", "/api/v1/events/ingest", &[("Content-Type", "application/json")],
                            Some(body.to_string().into_bytes())).await;
        assert_eq!((a.status, a.json()["code"].clone()), (401, json!("missing_key")), "{}", a.text());

        let stored = events(server).await;
        assert_eq!(stored.len(), 5, "{stored:#?}");
        let turn = &stored.iter().find(|e| e["event"] == "turn_completed").unwrap();
        assert_eq!(turn["distinct_id"], "user-123");
        assert_eq!(turn["properties"], json!({"model": "gpt-4", "latency": 1200, "turn_id": "turn-456", "conversation_id": "conv-1"}));
        let vote = &stored.iter().find(|e| e["event"] == "vote_cast").unwrap();
        assert_eq!(vote["properties"]["event_id"], "evt-7");
        assert_eq!(ms(&vote["timestamp"]), 1_795_000_000_000);
        let view = &stored.iter().find(|e| e["event"] == "page_view").unwrap();
        assert_eq!((view["url"].clone(), view["session_id"].clone(), view["referrer"].clone()),
                   (json!("https://app.example/home"), json!("s-1"), json!("https://ref.example/")));
        let click = &stored.iter().find(|e| e["event"] == "button_click").unwrap();
        assert_eq!(click["properties"], json!({"button_id": "signup", "screen": "1x2"}));
    })
    .await;
}

#[tokio::test]
async fn compatibility_paths_take_any_origin_and_admin_paths_do_not() {
    let server = Server::sqlite(&[]).await;
    for path in [
        "/e/",
        "/batch/",
        "/flags/",
        "/api/event",
        "/api/events",
        "/api/v1/events/ingest",
        "/array/phc_x/config",
        "/array/phc_x/config.js",
    ] {
        let a = server
            .send(
                "OPTIONS",
                path,
                &[
                    ("Origin", "https://any.example"),
                    ("Access-Control-Request-Method", "POST"),
                    (
                        "Access-Control-Request-Headers",
                        "content-type, authorization",
                    ),
                ],
                None,
            )
            .await;
        assert_eq!(a.status, 204, "{path}: {}", a.text());
        assert!(
            a.header("access-control-allow-headers")
                .unwrap()
                .contains("authorization")
        );
    }
    let a = server
        .send(
            "OPTIONS",
            "/api/v1/projects",
            &[
                ("Origin", "https://any.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
}

async fn bilan(server: &Server, body: Value, auth: Option<&str>) -> orrery_tests::Answer {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    server
        .send(
            "POST",
            "/api/events",
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
