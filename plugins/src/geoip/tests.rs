//! Tests of `geoip`: config, the test databases in `plugins/tests/data`
//! (made by `make_geoip_mmdb.py` there), and the ipinfo provider against a
//! small HTTP server started by each test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orrery_core::event::EventBuilder;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const CITY_DB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/geoip-city-test.mmdb"
);
const ASN_DB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/geoip-asn-test.mmdb"
);

fn envelope(ip: Option<&str>) -> Envelope {
    let event = EventBuilder::new("pageview").received_at(1_795_392_000_000);
    match ip {
        Some(ip) => event.ip(ip),
        None => event,
    }
    .envelope()
}

/// Runs `plugin` over one event per IP and returns their enrichment.
async fn enrich(plugin: &GeoIp, ips: &[&str]) -> Vec<Value> {
    let mut batch: Vec<Envelope> = ips.iter().map(|ip| envelope(Some(ip))).collect();
    let verdicts = plugin.process(&mut batch).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Keep; ips.len()]);
    for (env, ip) in batch.iter().zip(ips) {
        let stored = serde_json::to_string(&env.event).unwrap();
        assert!(!stored.contains(ip), "the IP must not be written: {stored}");
    }
    batch
        .into_iter()
        .map(|env| Value::Object(env.event.enrichment))
        .collect()
}

fn with_databases() -> GeoIpConfig {
    GeoIpConfig {
        database: Some(CITY_DB.into()),
        asn_database: Some(ASN_DB.into()),
        ..GeoIpConfig::default()
    }
}

fn london() -> Value {
    json!({
        "country": "GB", "country_name": "United Kingdom", "region": "England",
        "region_code": "ENG", "city": "London", "latitude": 51.5142,
        "longitude": -0.0931, "timezone": "Europe/London",
        "asn": 20712, "as_org": "Andrews & Arnold Ltd"
    })
}

#[test]
fn config_parses_from_json() {
    let config: GeoIpConfig = serde_json::from_value(json!({
        "database": "/data/GeoLite2-City.mmdb", "asn_database": "/data/GeoLite2-ASN.mmdb",
        "provider": "ipinfo", "provider_url": "https://ipinfo.example",
        "provider_token": "s3cret", "provider_timeout_ms": 500, "batch_deadline_ms": 50,
        "monthly_budget": 1000, "cache_size": 100, "cache_ttl_secs": 60, "negative_ttl_secs": 0
    }))
    .unwrap();
    assert_eq!(config.provider, Some(Provider::Ipinfo));
    assert_eq!(config.provider_token.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(config.cache_size, 100);
    assert!(!format!("{config:?}").contains("s3cret"), "token redacted");
    let empty: GeoIpConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, GeoIpConfig::default());
    assert!(GeoIp::from_config(empty).is_ok());
}

#[test]
fn unknown_fields_and_providers_are_rejected_by_name() {
    let err = serde_json::from_value::<GeoIpConfig>(json!({"databse": "/x"})).unwrap_err();
    assert!(err.to_string().contains("databse"), "{err}");
    let err = serde_json::from_value::<GeoIpConfig>(json!({"provider": "maxmind"})).unwrap_err();
    assert!(err.to_string().contains("maxmind"), "{err}");
}

#[test]
fn bad_values_are_rejected_naming_the_field() {
    let cases = [
        (json!({"cache_size": 0}), "cache_size"),
        (json!({"provider_timeout_ms": 0}), "provider_timeout_ms"),
        (json!({"batch_deadline_ms": 600_000}), "batch_deadline_ms"),
        (json!({"monthly_budget": 0}), "monthly_budget"),
        (json!({"cache_ttl_secs": 0}), "cache_ttl_secs"),
        (json!({"provider_url": "ipinfo.io"}), "provider_url"),
        (json!({"provider_url": "ftp://ipinfo.io"}), "provider_url"),
        (
            json!({"provider_url": "https://ipinfo.io/?x=1"}),
            "provider_url",
        ),
        (json!({"provider_token": " "}), "provider_token"),
    ];
    for (input, field) in cases {
        let config: GeoIpConfig = serde_json::from_value(input.clone()).unwrap();
        match GeoIp::from_config(config) {
            Err(PluginError::Config { field: f, .. }) => assert_eq!(f, field, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn is_public_leaves_out_special_addresses() {
    let public = [
        "8.8.8.8",
        "81.2.69.142",
        "172.32.0.1",
        "100.128.0.1",
        "::ffff:8.8.8.8",
        "2a01:4f8::1",
        "2606:4700::1111",
    ];
    let special = [
        "0.0.0.0",
        "10.1.2.3",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "172.16.0.1",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.51.100.1",
        "203.0.113.5",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::808:808",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "ff02::1",
        "2001::1",
        "2001:db8::1",
        "3fff::1",
    ];
    for ip in public {
        assert!(is_public(ip.parse().unwrap()), "{ip} is public");
    }
    for ip in special {
        assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
    }
}

#[test]
fn test_databases_have_the_maxmind_layout() {
    use maxminddb::{Reader, geoip2};
    let city = Reader::open_readfile(CITY_DB).unwrap();
    assert_eq!(city.metadata().database_type, "GeoIP2-City");
    assert_eq!(city.metadata().ip_version, 6);
    let found = city.lookup("81.2.69.142".parse().unwrap()).unwrap();
    let record: geoip2::City = found.decode().unwrap().unwrap();
    assert_eq!(record.country.iso_code, Some("GB"));
    assert_eq!(record.country.names.english, Some("United Kingdom"));
    assert_eq!(record.subdivisions[0].iso_code, Some("ENG"));
    assert_eq!(record.subdivisions[0].names.english, Some("England"));
    assert_eq!(record.city.names.english, Some("London"));
    assert_eq!(record.city.geoname_id, Some(2_643_743));
    assert_eq!(record.location.latitude, Some(51.5142));
    assert_eq!(record.location.longitude, Some(-0.0931));
    assert_eq!(record.location.time_zone, Some("Europe/London"));
    let asn = Reader::open_readfile(ASN_DB).unwrap();
    assert_eq!(asn.metadata().database_type, "GeoLite2-ASN");
    let found = asn.lookup("2a01:4f8::1".parse().unwrap()).unwrap();
    let record: geoip2::Asn = found.decode().unwrap().unwrap();
    assert_eq!(record.autonomous_system_number, Some(24940));
    assert_eq!(
        record.autonomous_system_organization,
        Some("Hetzner Online GmbH")
    );
}

#[tokio::test]
async fn databases_enrich_ipv4_ipv6_and_mapped_addresses() {
    let plugin = GeoIp::from_config(with_databases()).unwrap();
    let out = enrich(
        &plugin,
        &[
            "81.2.69.142",
            "::ffff:81.2.69.160",
            "2a01:4f8::1",
            "2a02:c7f::1",
            "8.8.8.8",
            "1.1.1.1",
        ],
    )
    .await;
    assert_eq!(out[0], london());
    assert_eq!(out[1], london());
    assert_eq!(
        out[2],
        json!({
            "country": "DE", "country_name": "Germany", "region": "Land Berlin",
            "region_code": "BE", "city": "Berlin", "latitude": 52.5244,
            "longitude": 13.4105, "timezone": "Europe/Berlin",
            "asn": 24940, "as_org": "Hetzner Online GmbH"
        })
    );
    assert_eq!(
        out[3],
        json!({"country": "GB", "country_name": "United Kingdom"}),
        "only what the record has"
    );
    assert_eq!(out[4], json!({"asn": 15169, "as_org": "Google LLC"}));
    assert_eq!(out[5], json!({}), "in neither database");
}

#[tokio::test]
async fn databases_are_opened_once_and_shared() {
    let a = GeoIp::from_config(with_databases()).unwrap();
    let b = GeoIp::from_config(GeoIpConfig {
        // Another spelling of the same file.
        database: Some(
            format!(
                "{}/tests/data/../data/geoip-city-test.mmdb",
                env!("CARGO_MANIFEST_DIR")
            )
            .into(),
        ),
        ..GeoIpConfig::default()
    })
    .unwrap();
    assert!(Arc::ptr_eq(
        a.city.as_ref().unwrap(),
        b.city.as_ref().unwrap()
    ));
}

#[tokio::test]
async fn missing_or_bad_database_still_constructs_and_keeps_events() {
    for path in [
        "/nonexistent/GeoLite2-City.mmdb",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/make_geoip_mmdb.py"),
    ] {
        let plugin = GeoIp::from_config(GeoIpConfig {
            database: Some(path.into()),
            asn_database: Some(path.into()),
            ..GeoIpConfig::default()
        })
        .unwrap();
        assert!(plugin.city.is_none() && plugin.asn.is_none());
        assert_eq!(enrich(&plugin, &["81.2.69.142"]).await, vec![json!({})]);
    }
}

#[tokio::test]
async fn private_addresses_and_events_without_ip_are_skipped() {
    // The test database has records for all of these.
    let plugin = GeoIp::from_config(with_databases()).unwrap();
    let ips = [
        "10.1.2.3",
        "127.0.0.1",
        "192.168.0.1",
        "::ffff:10.1.2.3",
        "fd00::1",
    ];
    for geo in enrich(&plugin, &ips).await {
        assert_eq!(geo, json!({}));
    }
    let mut batch = vec![envelope(None)];
    assert_eq!(
        plugin.process(&mut batch).await.unwrap(),
        vec![Verdict::Keep]
    );
    assert!(batch[0].event.enrichment.is_empty());
}

// --- the ipinfo provider --------------------------------------------------

const GOOGLE: &str = r#"{"ip":"8.8.8.8","hostname":"dns.google","city":"Mountain View","region":"California","country":"US","loc":"37.4056,-122.0775","org":"AS15169 Google LLC","postal":"94043","timezone":"America/Los_Angeles"}"#;

/// What the test server answers: status, body, and a delay before it.
#[derive(Clone)]
struct Reply(u16, &'static str, Duration);

/// A request the test server saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A one-route HTTP/1.1 server on a free local port, answering every
/// request with `reply`.
async fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (log, Reply(status, body, delay)) = (Arc::clone(&log), reply.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(Seen {
                    path: head.split(' ').nth(1).unwrap_or_default().to_owned(),
                    authorization: head.lines().find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_owned())
                    }),
                });
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 {status} Test\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Server { url, seen }
}

fn with_provider(server: &Server) -> GeoIpConfig {
    GeoIpConfig {
        provider: Some(Provider::Ipinfo),
        provider_url: format!("{}/", server.url),
        provider_token: Some(Secret::new("test-token")),
        // Generous, so that slow test machines do not flake.
        batch_deadline_ms: 5000,
        ..GeoIpConfig::default()
    }
}

#[tokio::test]
async fn ipinfo_answers_are_mapped_and_cached() {
    let server = serve(Reply(200, GOOGLE, Duration::ZERO)).await;
    let plugin = GeoIp::from_config(with_provider(&server)).unwrap();
    let expected = json!({
        "country": "US", "region": "California", "city": "Mountain View",
        "latitude": 37.4056, "longitude": -122.0775, "timezone": "America/Los_Angeles",
        "asn": 15169, "as_org": "Google LLC"
    });
    assert_eq!(enrich(&plugin, &["8.8.8.8"]).await, vec![expected.clone()]);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/8.8.8.8/json");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer test-token"));

    // Cached: a later batch, and another instance with the same provider
    // settings (a rebuilt pipeline), make no further request.
    let again = enrich(&plugin, &["8.8.8.8", "::ffff:8.8.8.8"]).await;
    assert_eq!(again, vec![expected.clone(), expected.clone()]);
    let rebuilt = GeoIp::from_config(with_provider(&server)).unwrap();
    let (a, b) = (plugin.provider.as_ref(), rebuilt.provider.as_ref());
    assert!(a.unwrap().shares_state_with(b.unwrap()));
    assert_eq!(enrich(&rebuilt, &["8.8.8.8"]).await, vec![expected]);
    assert_eq!(server.requests().len(), 1);

    // Private addresses are never sent.
    assert_eq!(
        enrich(&plugin, &["10.0.0.1", "::1"]).await,
        vec![json!({}), json!({})]
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn databases_come_first_and_the_provider_fills_in() {
    let server = serve(Reply(
        200,
        r#"{"country":"US","org":"AS15169 Provider Name"}"#,
        Duration::ZERO,
    ))
    .await;
    let plugin = GeoIp::from_config(GeoIpConfig {
        database: Some(CITY_DB.into()),
        asn_database: Some(ASN_DB.into()),
        ..with_provider(&server)
    })
    .unwrap();
    let out = enrich(&plugin, &["81.2.69.142", "8.8.8.8"]).await;
    assert_eq!(out[0], london(), "located offline");
    assert_eq!(
        out[1],
        json!({"country": "US", "asn": 15169, "as_org": "Google LLC"}),
        "city database missed: the provider locates, the ASN database wins"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/8.8.8.8/json");
}

#[tokio::test]
async fn provider_failures_keep_events_without_geo() {
    let cases = [
        (
            "HTTP 500",
            Reply(500, r#"{"error":"boom"}"#, Duration::ZERO),
        ),
        (
            "malformed JSON",
            Reply(200, "<html>not json", Duration::ZERO),
        ),
        (
            "bogon",
            Reply(200, r#"{"ip":"9.9.9.9","bogon":true}"#, Duration::ZERO),
        ),
        ("timeout", Reply(200, GOOGLE, Duration::from_secs(3))),
    ];
    for (what, reply) in cases {
        let server = serve(reply).await;
        let plugin = GeoIp::from_config(GeoIpConfig {
            provider_timeout_ms: 200,
            ..with_provider(&server)
        })
        .unwrap();
        let started = Instant::now();
        assert_eq!(
            enrich(&plugin, &["9.9.9.9"]).await,
            vec![json!({})],
            "{what}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        // The failure is cached for negative_ttl_secs: not asked again.
        assert_eq!(
            enrich(&plugin, &["9.9.9.9"]).await,
            vec![json!({})],
            "{what}"
        );
        assert_eq!(server.requests().len(), 1, "{what}");
    }
}

#[tokio::test]
async fn rate_limited_provider_is_paused() {
    let server = serve(Reply(429, "{}", Duration::ZERO)).await;
    let plugin = GeoIp::from_config(with_provider(&server)).unwrap();
    assert_eq!(enrich(&plugin, &["9.9.9.9"]).await, vec![json!({})]);
    assert_eq!(enrich(&plugin, &["1.1.1.1"]).await, vec![json!({})]);
    assert_eq!(server.requests().len(), 1, "no request while paused");
}

#[tokio::test]
async fn monthly_budget_stops_requests() {
    let server = serve(Reply(200, GOOGLE, Duration::ZERO)).await;
    let plugin = GeoIp::from_config(GeoIpConfig {
        monthly_budget: 1,
        ..with_provider(&server)
    })
    .unwrap();
    let out = enrich(&plugin, &["8.8.8.8", "1.1.1.1"]).await;
    assert_eq!(server.requests().len(), 1);
    assert_eq!(out.iter().filter(|geo| **geo == json!({})).count(), 1);
    enrich(&plugin, &["9.9.9.9"]).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn slow_answers_miss_the_batch_but_fill_the_cache() {
    let server = serve(Reply(200, GOOGLE, Duration::from_millis(300))).await;
    let plugin = GeoIp::from_config(GeoIpConfig {
        batch_deadline_ms: 20,
        provider_timeout_ms: 5000,
        ..with_provider(&server)
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(enrich(&plugin, &["8.8.8.8"]).await, vec![json!({})]);
    assert!(started.elapsed() < Duration::from_millis(250));
    // A batch while the request is under way waits for it: no new request.
    enrich(&plugin, &["8.8.8.8"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(enrich(&plugin, &["8.8.8.8"]).await[0]["country"], "US");
    assert_eq!(server.requests().len(), 1);
}
