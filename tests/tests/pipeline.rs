//! The enrichment pipeline end to end, against the real binary: the full
//! default pipeline on a browser page view, sessions, per-project
//! pipelines changed while events flow, dead letters and their replay,
//! insights, and per-plugin metrics.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orrery_tests::{Api, Backend, Server, backends, client, dead_letter_stages, silent_provider};
use serde_json::{Value, json};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
/// In the test city database: London, GB.
const LONDON_IP: &str = "81.2.69.160";

fn geoip_db() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/tests/data/geoip-city-test.mmdb")
        .canonicalize()
        .expect("test geoip database")
        .display()
        .to_string()
}

/// A server that trusts 127.0.0.1 as a proxy (so tests can choose the
/// client IP with `X-Forwarded-For`) and has the test geoip database.
async fn server(backend: Backend) -> Server {
    let geo = geoip_db();
    Server::on(
        backend,
        &[
            ("ORRERY_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
            ("ORRERY_PIPELINE__GEOIP_DATABASE", geo.as_str()),
            ("ORRERY_INGEST__SESSIONS_FLUSH_MS", "100"),
        ],
    )
    .await
}

/// `GET .../sessions` once `ready` holds for its sessions (within 10 s).
async fn sessions_when(server: &Server, ready: impl Fn(&[Value]) -> bool) -> Value {
    let mut page = Value::Null;
    for _ in 0..100 {
        let (status, body) = server.admin("GET", "/sessions", None).await;
        assert_eq!(status, 200, "{body}");
        page = body;
        if ready(page["sessions"].as_array().unwrap()) {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("sessions not as expected within 10 s: {page}");
}

async fn send(server: &Server, ip: &str, ua: &str, body: Value) -> (u16, Value) {
    let headers = [("X-Forwarded-For", ip), ("User-Agent", ua)];
    server
        .post_events(&server.keys.public_key, &headers, body)
        .await
}

#[tokio::test]
async fn a_browser_pageview_is_fully_enriched_and_no_raw_ip_is_stored() {
    for backend in backends("a_browser_pageview_is_fully_enriched_and_no_raw_ip_is_stored") {
        let server = server(backend).await;
        let (status, body) = send(
            &server,
            LONDON_IP,
            CHROME,
            json!({"event": "pageview",
                   "url": "https://shop.test/pricing?utm_source=google&utm_medium=cpc&utm_campaign=winter",
                   "referrer": "https://www.google.com/search?q=orrery"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 1, "{body}");
        let events = server.all_events("", 100).await;
        assert_eq!(events.len(), 1);
        let e = &events[0];
        let en = &e["enrichment"];
        assert_eq!(en["country"], "GB", "{e}");
        assert_eq!(en["city"], "London");
        assert_eq!(en["timezone"], "Europe/London");
        assert_eq!(en["browser"], "Chrome", "{e}");
        assert_eq!(en["os"], "Windows");
        assert_eq!(en["device_type"], "desktop");
        assert_eq!(en["bot"], false);
        assert_eq!(en["referrer_source"], "search");
        assert_eq!(en["referrer_name"], "Google");
        assert_eq!(en["utm_source"], "google");
        assert_eq!(en["utm_medium"], "cpc");
        assert_eq!(en["utm_campaign"], "winter");
        assert_eq!(en["page_path"], "/pricing");
        assert_eq!(e["visitor_id"].as_str().map(str::len), Some(32));
        assert!(
            e["session_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(!e.to_string().contains(LONDON_IP));

        // Per-plugin metrics.
        let metrics = server.metrics_text().await;
        for plugin in ["ip_hash", "geoip", "user_agent", "referrer", "session"] {
            assert!(
                metrics.contains(&format!(
                    "orrery_plugin_events_total{{plugin=\"{plugin}\",outcome=\"in\"}} 1"
                )),
                "{plugin} in {metrics}"
            );
            assert!(metrics.contains(&format!(
                "orrery_plugin_duration_seconds_count{{plugin=\"{plugin}\"}} 1"
            )));
        }

        if backend == Backend::Sqlite {
            // Nothing in the database file (nor its WAL) holds the raw IP.
            let mut server = server;
            assert!(server.terminate());
            for name in ["orrery.db", "orrery.db-wal"] {
                let path = server.data_dir.join(name);
                if let Ok(bytes) = std::fs::read(&path) {
                    let needle = LONDON_IP.as_bytes();
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "raw IP found in {}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn sessions_follow_the_inactivity_window_and_are_counted() {
    for backend in backends("sessions_follow_the_inactivity_window_and_are_counted") {
        let server = server(backend).await;
        let now = chrono::Utc::now().timestamp_millis();
        let t0 = now - 3_600_000;
        let min = 60_000;
        let batch = json!({"batch": [
            {"event": "pageview", "url": "https://shop.test/a", "timestamp": t0},
            {"event": "click", "timestamp": t0 + min},
            {"event": "pageview", "url": "https://shop.test/b?x=1", "timestamp": t0 + 2 * min},
            // 40 minutes later: a new session, which bounces.
            {"event": "pageview", "url": "https://shop.test/c", "timestamp": t0 + 42 * min},
        ]});
        let (status, body) = send(&server, LONDON_IP, CHROME, batch).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 4);
        // Another visitor (other IP) at the same time: its own session.
        let (status, _) = send(
            &server,
            "81.2.69.161",
            CHROME,
            json!({"event": "pageview", "url": "https://shop.test/z", "timestamp": t0}),
        )
        .await;
        assert_eq!(status, 200);

        let events = server.all_events("", 100).await;
        let sid = |url: &str, ts: i64| -> String {
            events
                .iter()
                .find(|e| {
                    e["timestamp"]
                        == chrono::DateTime::from_timestamp_millis(ts)
                            .unwrap()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        && (url.is_empty() || e["url"] == url)
                })
                .and_then(|e| e["session_id"].as_str())
                .unwrap_or_else(|| panic!("no session for {url}"))
                .to_owned()
        };
        let first = sid("https://shop.test/a", t0);
        assert_eq!(sid("", t0 + min), first);
        assert_eq!(sid("https://shop.test/b?x=1", t0 + 2 * min), first);
        let second = sid("https://shop.test/c", t0 + 42 * min);
        assert_ne!(second, first);
        assert_ne!(sid("https://shop.test/z", t0), first, "another visitor");

        // The writer writes sessions every `sessions_flush_ms`.
        let page = sessions_when(&server, |s| {
            s.len() == 3 && s.iter().map(|s| s["events"].as_i64().unwrap()).sum::<i64>() == 5
        })
        .await;
        let sessions = page["sessions"].as_array().unwrap();
        let s1 = sessions
            .iter()
            .find(|s| s["session_id"] == first.as_str())
            .unwrap();
        assert_eq!(s1["events"], 3, "{s1}");
        assert_eq!(s1["pageviews"], 2);
        assert_eq!(s1["entry_page"], "/a");
        assert_eq!(s1["exit_page"], "/b");
        assert_eq!(s1["duration_ms"], 2 * min);
        assert_eq!(s1["bounce"], false);
        let s2 = sessions
            .iter()
            .find(|s| s["session_id"] == second.as_str())
            .unwrap();
        assert_eq!(s2["events"], 1);
        assert_eq!(s2["bounce"], true);

        // A retried event (same id) is not counted twice.
        let id = uuid::Uuid::new_v4().to_string();
        for _ in 0..2 {
            let (status, _) = send(
                &server,
                LONDON_IP,
                CHROME,
                json!({"id": id, "event": "pageview", "url": "https://shop.test/c",
                       "timestamp": t0 + 43 * min}),
            )
            .await;
            assert_eq!(status, 200);
        }
        let page = sessions_when(&server, |s| {
            s.iter().map(|s| s["events"].as_i64().unwrap()).sum::<i64>() >= 6
        })
        .await;
        let s2 = page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == second.as_str())
            .unwrap()
            .clone();
        assert_eq!(s2["events"], 2, "{s2}");
        assert_eq!(s2["pageviews"], 2);
        assert_eq!(s2["bounce"], false);
    }
}

#[tokio::test]
async fn pipeline_changes_are_validated_and_apply_while_events_flow() {
    let server = Arc::new(server(Backend::Sqlite).await);

    let (status, p) = server.admin("GET", "/pipeline", None).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["is_default"], true);
    let names: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ip_hash", "geoip", "user_agent", "referrer", "session"]
    );

    for (stages, field) in [
        (json!([{"plugin": "referrer"}]), "stages[0].plugin"),
        (
            json!([{"plugin": "ip_hash"}, {"plugin": "nope"}]),
            "stages[1].plugin",
        ),
        (
            json!([{"plugin": "ip_hash"}, {"plugin": "user_agent", "config": {"drop_robots": true}}]),
            "stages[1].config.drop_robots",
        ),
        (
            json!([{"plugin": "ip_hash"}, {"plugin": "session", "config": {"inactivity_minutes": 0}}]),
            "stages[1].config.inactivity_minutes",
        ),
        (
            json!([{"plugin": "ip_hash", "timeout_ms": 0}]),
            "stages[0].timeout_ms",
        ),
        (json!([]), "stages"),
    ] {
        let (status, err) = server
            .admin("PUT", "/pipeline", Some(json!({ "stages": stages })))
            .await;
        assert_eq!(status, 400, "{stages} -> {err}");
        assert_eq!(err["code"], "invalid_pipeline", "{err}");
        assert!(
            err["message"].as_str().unwrap().starts_with(field),
            "{field}: {err}"
        );
    }
    let (status, err) = server
        .admin("PUT", "/pipeline", Some(json!({"stages": "x"})))
        .await;
    assert_eq!(status, 400, "{err}");

    // Bot events flow from 4 clients while the pipeline changes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let server = Arc::clone(&server);
        let stop = Arc::clone(&stop);
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut dropped) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let (status, body) =
                    send(&server, LONDON_IP, GOOGLEBOT, json!({"event": "crawl"})).await;
                assert_eq!(status, 200, "{body}");
                accepted += body["accepted"].as_u64().unwrap();
                dropped += body["dropped"].as_u64().unwrap();
            }
            (accepted, dropped)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, p) = server
        .admin(
            "PUT",
            "/pipeline",
            Some(json!({"stages": [
                {"plugin": "ip_hash"},
                {"plugin": "user_agent", "config": {"drop_bots": true}},
                {"plugin": "referrer", "on_error": "dead_letter", "timeout_ms": 200},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["is_default"], false);
    assert_eq!(p["stages"][2]["on_error"], "dead_letter");
    // From the next batch on, bots are dropped.
    let (status, body) = send(&server, LONDON_IP, GOOGLEBOT, json!({"event": "crawl"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["dropped"], 1, "{body}");
    assert!(
        body["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("user_agent: bot")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut accepted, mut dropped) = (0, 0);
    for s in senders {
        let (a, d) = s.await.unwrap();
        accepted += a;
        dropped += d;
    }
    assert!(accepted > 0 && dropped > 0, "{accepted} {dropped}");
    // Every acknowledged event is stored; no dropped one is.
    let stored = server.all_events("&event=crawl", 1000).await;
    assert_eq!(stored.len() as u64, accepted);
    // A server-side sender (secret key) is not dropped as a bot.
    let resp = client()
        .post(server.url("/api/v1/events"))
        .header("X-API-Key", &server.keys.secret_key)
        .json(&json!({"event": "crawl", "user_agent": GOOGLEBOT}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");

    // Reset: the default pipeline again.
    let (status, _) = server.admin("DELETE", "/pipeline", None).await;
    assert_eq!(status, 204);
    let (_, p) = server.admin("GET", "/pipeline", None).await;
    assert_eq!(p["is_default"], true);
    let (status, _) = send(&server, LONDON_IP, GOOGLEBOT, json!({"event": "crawl2"})).await;
    assert_eq!(status, 200);
    let crawl2 = server.all_events("&event=crawl2", 10).await;
    assert_eq!(crawl2[0]["enrichment"]["country"], "GB");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once() {
    for backend in backends("dead_letters_are_listed_and_replayed_once") {
        let server = server(backend).await;
        let port = silent_provider().await;
        // geoip waits for a provider that never answers, past its stage's
        // 50 ms limit: every event of a public IP fails under dead_letter.
        let (status, p) = server
            .admin("PUT", "/pipeline", Some(dead_letter_stages(port)))
            .await;
        assert_eq!(status, 200, "{p}");
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "event": "purchase", "properties": {"amount": 12}}))
            .collect();
        let (status, body) = send(&server, "8.8.8.8", CHROME, json!({ "batch": batch })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["dead_lettered"], 3, "{body}");
        assert!(server.all_events("", 100).await.is_empty());

        let (status, page) = server.admin("GET", "/dead-letters?limit=2", None).await;
        assert_eq!(status, 200, "{page}");
        let first = page["dead_letters"].as_array().unwrap().clone();
        assert_eq!(first.len(), 2);
        let cursor = page["next_cursor"].as_str().expect("a second page");
        let (_, page2) = server
            .admin("GET", &format!("/dead-letters?cursor={cursor}"), None)
            .await;
        assert_eq!(page2["dead_letters"].as_array().unwrap().len(), 1);
        assert!(page2["next_cursor"].is_null());
        let d = &first[0];
        assert_eq!(d["plugin"], "geoip");
        assert!(d["error"].as_str().unwrap().contains("timed out"), "{d}");
        assert_eq!(d["payload"]["properties"]["amount"], 12);
        assert!(
            d["payload"]["ip_hash"].is_string(),
            "hashed before it failed"
        );
        assert!(!d.to_string().contains("8.8.8.8"), "no raw IP: {d}");

        // Fixed pipeline: one replayed by id, then the rest. (A replay has
        // no request and so no IP: IP-derived fields kept in the payload
        // stay, and geoip finds nothing to look up.)
        let (status, _) = server.admin("DELETE", "/pipeline", None).await;
        assert_eq!(status, 204);
        let one = d["id"].as_str().unwrap();
        let (status, r) = server
            .admin("POST", "/dead-letters/replay", Some(json!({"ids": [one]})))
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["replayed"].as_u64(), r["accepted"].as_u64()),
            (Some(1), Some(1)),
            "{r}"
        );
        let (_, r) = server
            .admin("POST", "/dead-letters/replay", Some(json!({})))
            .await;
        assert_eq!(
            (r["replayed"].as_u64(), r["accepted"].as_u64()),
            (Some(2), Some(2)),
            "{r}"
        );
        let (_, r) = server
            .admin("POST", "/dead-letters/replay", Some(json!({"ids": [one]})))
            .await;
        assert_eq!(r["replayed"], 0, "closed ones are not replayed again: {r}");

        let events = server.all_events("", 100).await;
        assert_eq!(events.len(), 3, "each stored once");
        let mut got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(events[0]["ip_hash"].is_string());

        let (_, open) = server.admin("GET", "/dead-letters", None).await;
        assert_eq!(open["dead_letters"].as_array().unwrap().len(), 0);
        let (_, all) = server
            .admin("GET", "/dead-letters?include_replayed=true", None)
            .await;
        let all = all["dead_letters"].as_array().unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|d| d["replayed_at"].is_string()));

        let (status, err) = server.admin("GET", "/dead-letters?cursor=zz", None).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_cursor"))
        );
    }
}

#[tokio::test]
async fn insights_explain_summary_trend_and_anomaly_with_numbers() {
    for backend in backends("insights_explain_summary_trend_and_anomaly_with_numbers") {
        let server = server(backend).await;
        let hour = 3_600_000_i64;
        let day = 24 * hour;
        // As of 2026-11-20T12:30Z: yesterday is 2026-11-19, the last
        // complete hour 11:00-12:00.
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T12:30:00Z")
            .unwrap()
            .timestamp_millis();
        let today = at - at.rem_euclid(day);
        let yesterday = today - day;
        let target = at - at.rem_euclid(hour) - hour;
        let mut events = Vec::new();
        // 30 page views yesterday.
        for i in 0..30 {
            events.push(json!({"event": "pageview", "timestamp": yesterday + i * 60_000}));
        }
        // signup: 30 in the week to yesterday, 10 in the week before.
        for i in 0..30 {
            events.push(
                json!({"event": "signup", "timestamp": yesterday - (i % 6) * day + 7_200_000}),
            );
        }
        for i in 0..10 {
            events.push(
                json!({"event": "signup", "timestamp": yesterday - (7 + i % 6) * day + 7_200_000}),
            );
        }
        // checkout: 1 to 3 per hour for a week, then 40 in the last hour.
        for h in 1..=168 {
            for _ in 0..(1 + h % 3) {
                events.push(json!({"event": "checkout", "timestamp": target - h * hour + 60_000}));
            }
        }
        for i in 0..40 {
            events.push(json!({"event": "checkout", "timestamp": target + i * 1000}));
        }
        for chunk in events.chunks(1000) {
            let (status, body) = send(&server, LONDON_IP, CHROME, json!({ "batch": chunk })).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["rejected"], 0, "{body}");
        }
        let (status, out) = server
            .admin("POST", "/insights/generate?at=2026-11-20T12:30:00Z", None)
            .await;
        assert_eq!(status, 200, "{out}");
        let insights = out["insights"].as_array().unwrap();
        let find = |key: &str| {
            insights
                .iter()
                .find(|i| i["key"] == key)
                .unwrap_or_else(|| panic!("{key} missing in {out}"))
        };
        let summary = find("summary:2026-11-19");
        assert_eq!(summary["kind"], "summary");
        let yesterday_events = 30 + 5 + 24 * 2; // page views, signups, checkouts
        assert_eq!(summary["metadata"]["pageviews"], 30, "{summary}");
        assert_eq!(summary["metadata"]["events"], yesterday_events, "{summary}");
        assert!(
            summary["content"]
                .as_str()
                .unwrap()
                .contains(&format!("received {yesterday_events} events")),
            "{summary}"
        );
        let trend = find("trend:signup:2026-11-19");
        assert!(
            trend["content"]
                .as_str()
                .unwrap()
                .contains("30 events in the 7 days to 2026-11-19, up 200% from 10"),
            "{trend}"
        );
        let anomaly = find("anomaly:checkout:2026-11-20T11");
        assert!(
            anomaly["content"].as_str().unwrap().contains(
                "40 events between 11:00 and 12:00 UTC on 2026-11-20, against a median of 2"
            ),
            "{anomaly}"
        );
        assert_eq!(anomaly["metadata"]["direction"], "spike");
        // Generating again replaces instead of duplicating.
        let (_, again) = server
            .admin("POST", "/insights/generate?at=2026-11-20T12:30:00Z", None)
            .await;
        assert_eq!(again["insights"].as_array().unwrap().len(), insights.len());
        let (status, listed) = server.admin("GET", "/insights?kind=anomaly", None).await;
        assert_eq!(status, 200);
        assert_eq!(listed["insights"].as_array().unwrap().len(), 1, "{listed}");
        let (status, err) = server
            .admin("POST", "/insights/generate?at=yesterday", None)
            .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_parameter"))
        );
    }
}

/// Makes the database refuse events named `poison`, as a real constraint
/// violation would (`on` false removes that again).
async fn poison_trigger(server: &Server, on: bool) {
    let stmts: &[&str] = match (&server.database_url, on) {
        (None, true) => &["CREATE TRIGGER poison BEFORE INSERT ON events \
              WHEN NEW.name = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"],
        (None, false) => &["DROP TRIGGER poison"],
        (Some(_), true) => &[
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
        ],
        (Some(_), false) => &["DROP TRIGGER poison ON events"],
    };
    use sqlx::Connection;
    match &server.database_url {
        None => {
            let url = format!("sqlite://{}", server.data_dir.join("orrery.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for s in stmts {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
        }
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            for s in stmts {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_event_the_database_refuses_is_dead_lettered_and_replayed_by_its_cause() {
    for backend in
        backends("an_event_the_database_refuses_is_dead_lettered_and_replayed_by_its_cause")
    {
        let server = server(backend).await;
        poison_trigger(&server, true).await;
        let batch = json!({"batch": [{"event": "a"}, {"event": "poison"}, {"event": "b"}]});
        let (status, body) = send(&server, "127.0.0.1", CHROME, batch).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (&body["accepted"], &body["dead_lettered"]),
            (&json!(2), &json!(1)),
            "{body}"
        );
        // The sender (a public key) learns that the store refused it, not the
        // database's own message; the project's admin sees that in the dead
        // letter.
        let reason = body["results"][1]["reason"].as_str().unwrap();
        assert!(reason.starts_with("store: "), "{reason}");
        assert!(!reason.contains("poisoned"), "{reason}");
        let (_, page) = server.admin("GET", "/dead-letters", None).await;
        let letters = page["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), 1, "{page}");
        assert_eq!(letters[0]["plugin"], "store");
        assert!(
            letters[0]["error"]
                .as_str()
                .unwrap()
                .contains("poisoned event"),
            "{page}"
        );

        // Refused again on replay: that dead letter is closed and a new one
        // holds the new error.
        let (status, out) = server
            .admin("POST", "/dead-letters/replay", Some(json!({})))
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            (&out["failed"], &out["replayed"]),
            (&json!(1), &json!(1)),
            "{out}"
        );
        let (_, open) = server.admin("GET", "/dead-letters", None).await;
        assert_eq!(open["dead_letters"].as_array().unwrap().len(), 1, "{open}");
        assert_ne!(open["dead_letters"][0]["id"], letters[0]["id"]);

        // Once the database takes it, the replay stores it.
        poison_trigger(&server, false).await;
        let (_, out) = server
            .admin("POST", "/dead-letters/replay", Some(json!({})))
            .await;
        assert_eq!(
            (&out["accepted"], &out["replayed"]),
            (&json!(1), &json!(1)),
            "{out}"
        );
        let names: Vec<Value> = server
            .all_events("", 100)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&json!("poison")));
        drop(server);
    }
}
