//! Rate limits through the real binary: per client IP on ingestion and on
//! logging in, per key on the API, each answer with its `RateLimit-*`
//! headers, a refusal a 429 `rate_limited` with `Retry-After`, counted in
//! the metrics, and the bucket refilling at its rate.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use std::time::Duration;

use orrery_tests::{Answer, Api, Server};
use serde_json::json;

fn num(a: &Answer, name: &str) -> u64 {
    a.header(name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", a.headers))
        .parse()
        .unwrap()
}

async fn ingest(server: &Server, from: &str) -> Answer {
    let body = serde_json::to_vec(&json!({"event": "e"})).unwrap();
    server
        .send(
            "POST",
            "/api/v1/events",
            &[
                ("X-API-Key", &server.keys.public_key),
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", from),
            ],
            Some(body),
        )
        .await
}

#[tokio::test]
async fn limits_per_ip_and_per_key_answer_429_with_their_headers() {
    let server = Server::sqlite(&[
        ("ORRERY_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("ORRERY_RATE_LIMIT__INGEST_PER_SEC", "2"),
        ("ORRERY_RATE_LIMIT__INGEST_BURST", "3"),
        ("ORRERY_RATE_LIMIT__AUTH_PER_MINUTE", "60"),
        ("ORRERY_RATE_LIMIT__AUTH_BURST", "2"),
        ("ORRERY_RATE_LIMIT__API_PER_SEC", "1"),
        ("ORRERY_RATE_LIMIT__API_BURST", "2"),
    ])
    .await;

    // Ingestion, per client IP (behind the trusted proxy).
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = ingest(&server, "203.0.113.7").await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(num(&a, "ratelimit-limit"), 3);
        remaining.push(num(&a, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = ingest(&server, "203.0.113.7").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["code"], "rate_limited");
    assert_eq!(num(&refused, "retry-after"), 1);
    assert_eq!(num(&refused, "ratelimit-remaining"), 0);
    assert!(num(&refused, "ratelimit-reset") >= 1);
    // Another address has its own bucket.
    assert_eq!(ingest(&server, "198.51.100.9").await.status, 200);
    // The bucket refills at 2 per second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ingest(&server, "203.0.113.7").await.status, 200);
    // Nothing refused was stored: 5 accepted events.
    let (_, events) = server.admin("GET", "/events?limit=100", None).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 5, "{events}");

    // Logging in, per client IP, before the password is looked at.
    let login = |from: &'static str| {
        let body =
            serde_json::to_vec(&json!({"email": "a@x.io", "password": "whatever!"})).unwrap();
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    "/api/v1/auth/login",
                    &[
                        ("Content-Type", "application/json"),
                        ("X-Forwarded-For", from),
                    ],
                    Some(body),
                )
                .await
        }
    };
    assert_eq!(login("203.0.113.50").await.status, 401);
    assert_eq!(login("203.0.113.50").await.status, 401);
    let a = login("203.0.113.50").await;
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(num(&a, "retry-after") >= 1);

    // The API, per key (the read of the events above took a token; the
    // bucket is full again after 2 s).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let path = format!("/api/v1/projects/{}/events", server.keys.project_id);
    let (s1, _) = server.get(&path, &server.keys.secret_key).await;
    let (s2, _) = server.get(&path, &server.keys.secret_key).await;
    let (s3, body) = server.get(&path, &server.keys.secret_key).await;
    assert_eq!((s1, s2, s3), (200, 200, 429), "{body}");
    // (A public key may not read: 403, not 429.)
    let (status, _) = server.get(&path, &server.keys.public_key).await;
    assert_eq!(status, 403);

    // Counted.
    let text = server.metrics_text().await;
    for class in ["ingest", "auth", "api"] {
        assert!(
            text.contains(&format!(
                "orrery_http_rate_limited_total{{reason=\"{class}\"}}"
            )),
            "{class} not counted:\n{}",
            text.lines()
                .filter(|l| l.contains("rate_limited"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
