//! The command line: help, configuration, start-up errors, backup, stats,
//! vacuum, migrate; and the privacy promise checked on the database file.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::net::TcpListener;

use orrery_tests::{Api, Server, client, orrery_bin, run_cli};
use serde_json::{Value, json};

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "serve", "start", "init", "migrate", "backup", "stats", "vacuum", "openapi", "config",
    ] {
        let out = std::process::Command::new(orrery_bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{sub}: {text}");
    }
}

#[test]
fn config_shows_layers_and_hides_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("orrery.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\n[ingest]\nflush_events = 10\n[secrets]\nip_hash_key = \"very-secret-value-123\"\n",
    )
    .unwrap();
    let env = vec![
        ("ORRERY_INGEST__FLUSH_EVENTS".to_owned(), "77".to_owned()),
        (
            "ORRERY_DATABASE_URL".to_owned(),
            "postgres://app:hunter2@db.test/x".to_owned(),
        ),
    ];
    let (ok, out, err) = run_cli(
        tmp.path(),
        None,
        &env,
        &["--config", file.to_str().unwrap(), "config"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:9999\""), "{out}");
    assert!(out.contains("flush_events = 77"), "env beats file: {out}");
    assert!(!out.contains("very-secret-value-123"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("postgres://app:***@db.test/x"), "{out}");
}

#[test]
fn start_errors_name_the_problem_and_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    // Port in use.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (ok, _, err) = run_cli(
        &tmp.path().join("d1"),
        None,
        &[],
        &["serve", "--listen", &addr],
    );
    assert!(!ok);
    assert!(
        err.contains(&addr) && err.to_lowercase().contains("in use"),
        "{err}"
    );
    // Broken config file: the line is named.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n\n[ingest\nflush_events = 3\n",
    )
    .unwrap();
    let (ok, _, err) = run_cli(
        tmp.path(),
        None,
        &[],
        &["--config", bad.to_str().unwrap(), "serve"],
    );
    assert!(!ok);
    assert!(err.contains("line 3"), "{err}");
    // Unknown setting.
    std::fs::write(&bad, "[ingest]\nflush_event = 3\n").unwrap();
    let (ok, _, err) = run_cli(
        tmp.path(),
        None,
        &[],
        &["--config", bad.to_str().unwrap(), "serve"],
    );
    assert!(!ok);
    assert!(err.contains("flush_event"), "{err}");
    // Missing config file.
    let (ok, _, err) = run_cli(
        tmp.path(),
        None,
        &[],
        &["--config", "/nonexistent/orrery.toml", "serve"],
    );
    assert!(!ok);
    assert!(err.contains("/nonexistent/orrery.toml"), "{err}");
    // Unreachable database: URL named without its password.
    let (ok, _, err) = run_cli(
        tmp.path(),
        None,
        &[(
            "ORRERY_DATABASE__CONNECT_TIMEOUT_SECS".to_owned(),
            "1".to_owned(),
        )],
        &[
            "--database-url",
            "postgres://orrery:s3cr3t@127.0.0.1:1/orrery",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("postgres://orrery:***@127.0.0.1:1/orrery"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[tokio::test]
async fn init_stats_backup_vacuum_migrate() {
    let server = Server::sqlite(&[]).await;
    // Secrets file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data_dir.join("secrets.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second init does not print keys again.
    let (ok, out, _) = server.cli(&["init", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["initialised"], false);
    assert!(!out.contains("sk_"));

    let batch: Vec<Value> = (0..120)
        .map(|i| json!({"event": "e", "properties": {"i": i}}))
        .collect();
    let resp = client()
        .post(server.url("/api/v1/events"))
        .header("X-API-Key", &server.keys.public_key)
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let (ok, out, err) = server.cli(&["stats", "--json"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["events"], 120);
    assert_eq!(stats["projects"], 1);
    assert!(stats["database_bytes"].as_u64().unwrap() > 0);

    // Online backup while the server runs and writes.
    let backup = server.data_dir.parent().unwrap().join("backup.db");
    let (ok, out, err) = server.cli(&["backup", "--output", backup.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backup written"), "{out}");
    let (ok, _, err) = server.cli(&["backup", "--output", backup.to_str().unwrap()]);
    assert!(!ok, "refuses to overwrite");
    assert!(err.contains("already exists"), "{err}");
    // The backup is a complete database on its own.
    let copy_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, copy_dir.path().join("orrery.db")).unwrap();
    let (ok, out, err) = run_cli(copy_dir.path(), None, &[], &["stats", "--json"]);
    assert!(ok, "{err}");
    let copy: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(copy["events"], 120);

    let (ok, out, err) = server.cli(&["vacuum"]);
    assert!(ok, "{err}");
    assert!(out.contains("vacuum done"), "{out}");
    let (ok, out, _) = server.cli(&["migrate"]);
    assert!(ok);
    assert!(out.contains("up to date"));
    // Still serving after all that.
    let resp = client()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn no_raw_ip_reaches_the_database_file() {
    let mut server = Server::sqlite(&[("ORRERY_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]")]).await;
    let http = client();
    let mut hashes = Vec::new();
    for ip in ["203.0.113.77", "198.51.100.23", "2001:db8::4242"] {
        let resp = http
            .post(server.url("/api/v1/events"))
            .header("X-API-Key", &server.keys.public_key)
            .header("X-Forwarded-For", format!("10.9.8.7, {ip}"))
            .json(&json!({"event": "pageview", "url": "https://site.test/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let events = server.all_events("", 1).await;
        hashes.push(events[0]["ip_hash"].as_str().unwrap().to_owned());
    }
    hashes.dedup();
    assert_eq!(
        hashes.len(),
        3,
        "X-Forwarded-For from a trusted proxy is used"
    );
    assert!(server.terminate());
    let mut bytes = Vec::new();
    for f in ["orrery.db", "orrery.db-wal"] {
        if let Ok(b) = std::fs::read(server.data_dir.join(f)) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 4096);
    let text = String::from_utf8_lossy(&bytes);
    for ip in [
        "203.0.113.77",
        "198.51.100.23",
        "2001:db8::4242",
        "10.9.8.7",
        "127.0.0.1",
    ] {
        assert!(!text.contains(ip), "raw IP {ip} found in the database file");
    }
}

#[test]
fn serve_without_configuration_runs_and_says_how_to_start() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(orrery_bin())
        .current_dir(tmp.path())
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().take(3) {
        seen.push(line.unwrap());
    }
    orrery_tests::send_sigterm(child.id());
    assert!(child.wait().unwrap().success());
    let text = seen.join("\n");
    assert!(
        text.contains("orrery listening on http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("sqlite://./data/orrery.db"), "{text}");
    assert!(text.contains("orrery init"), "{text}");
    assert!(tmp.path().join("data/orrery.db").exists());
    assert!(tmp.path().join("data/secrets.toml").exists());
}
