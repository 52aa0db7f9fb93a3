//! Helpers for Orrery's black-box tests: start the real `orrery` binary on
//! a fresh data directory (SQLite) or a fresh PostgreSQL database, talk
//! HTTP to it, stop it gently or with `kill -9`.
//!
//! The binary is `target/<profile>/orrery` next to the test executable
//! (build it first: `cargo build -p orrery-gateway`), or `$ORRERY_BIN`.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

/// The `orrery` binary under test.
pub fn orrery_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ORRERY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, tool binaries (the benches) in
    // target/<profile>/: the orrery binary is next to one or the other.
    let dir = exe.parent().expect("target directory");
    let candidates = [Some(dir), dir.parent()];
    let found = candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("orrery"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "no orrery binary next to {}: run `cargo build -p orrery-gateway` first (or set ORRERY_BIN)",
            exe.display()
        )
    })
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL of `ORRERY_TEST_DATABASE_URL`.
    Postgres,
}

/// The backends to run on: SQLite always, PostgreSQL when
/// `ORRERY_TEST_DATABASE_URL` is set (else a line says it was skipped).
pub fn backends(test: &str) -> Vec<Backend> {
    if std::env::var("ORRERY_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        eprintln!("{test}: PostgreSQL part skipped: ORRERY_TEST_DATABASE_URL is not set");
        vec![Backend::Sqlite]
    }
}

/// A database created for one test and dropped afterwards.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL to give to orrery; `None` for SQLite.
    pub url: Option<String>,
    admin_url: Option<String>,
    name: Option<String>,
}

impl TestDatabase {
    /// Creates a fresh database for `backend`.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self {
                url: None,
                admin_url: None,
                name: None,
            },
            Backend::Postgres => {
                let admin_url = std::env::var("ORRERY_TEST_DATABASE_URL").expect("set");
                let name = format!("orrery_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to ORRERY_TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin_url.rsplit_once('/').expect("URL with a database").0;
                Self {
                    url: Some(format!("{base}/{name}")),
                    admin_url: Some(admin_url),
                    name: Some(name),
                }
            }
        }
    }

    /// Drops the PostgreSQL database (call at the end of a test).
    pub async fn drop_db(self) {
        if let (Some(admin), Some(name)) = (self.admin_url, self.name)
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

/// Keys printed by `orrery init --json`.
#[derive(Debug, Clone)]
pub struct InitKeys {
    /// First project.
    pub project_id: String,
    /// Public key.
    pub public_key: String,
    /// Admin secret key.
    pub secret_key: String,
}

/// A running (or stopped) orrery server with its data directory.
#[derive(Debug)]
pub struct Server {
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Database URL, for PostgreSQL.
    pub database_url: Option<String>,
    /// Extra environment, e.g. `ORRERY_INGEST__QUEUE_CAPACITY`.
    pub env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The keys of the first project.
    pub keys: InitKeys,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Runs an orrery subcommand against this server's data directory and
    /// database; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        run_cli(
            &self.data_dir,
            self.database_url.as_deref(),
            &self.env,
            args,
        )
    }

    /// Inits a fresh data directory (and database) and starts the server.
    pub async fn start(db: &TestDatabase, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (ok, out, err) = run_cli(&data_dir, db.url.as_deref(), &env, &["init", "--json"]);
        assert!(ok, "orrery init failed: {err}");
        let v: Value = serde_json::from_str(out.trim()).expect("init --json output");
        let keys = InitKeys {
            project_id: v["project_id"].as_str().expect("project_id").to_owned(),
            public_key: v["public_key"].as_str().expect("public_key").to_owned(),
            secret_key: v["secret_key"].as_str().expect("secret_key").to_owned(),
        };
        let mut server = Self {
            data_dir,
            database_url: db.url.clone(),
            env,
            base: String::new(),
            keys,
            child: None,
            _tmp: Some(tmp),
        };
        server.spawn();
        server
    }

    /// Sends `body` to `POST /api/v1/events` with `key` and extra
    /// `headers` (`X-Forwarded-For`, `User-Agent`...); answers the status
    /// and the JSON body (`Null` when it is not JSON).
    pub async fn post_events(
        &self,
        key: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        let mut req = client()
            .post(self.url("/api/v1/events"))
            .header("X-API-Key", key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.json(&body).send().await.expect("post events");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A call on the first project, `/api/v1/projects/{id}{path}`, with its
    /// admin secret key.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/api/v1/projects/{}{path}", self.keys.project_id);
        let method = method.parse().expect("an HTTP method");
        call(self, method, &path, &self.keys.secret_key, body).await
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The sum of the samples of the metric lines starting with `name` in
    /// `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Starts the process (again) on the same data and waits until it
    /// listens.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = base_command(&self.data_dir, self.database_url.as_deref(), &self.env);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn orrery serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.trim().strip_prefix("orrery listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
                line.clear();
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("orrery did not start listening within 30 s");
        self.base = base;
        self.child = Some(child);
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        send_sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "orrery did not stop within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends SIGTERM to a process.
pub fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

fn base_command(data_dir: &Path, database_url: Option<&str>, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(orrery_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORRERY_LOG__FILTER", "warn")
        .arg("--data-dir")
        .arg(data_dir);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs an orrery subcommand; returns (success, stdout, stderr).
pub fn run_cli(
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(String, String)],
    args: &[&str],
) -> (bool, String, String) {
    let out = base_command(data_dir, database_url, env)
        .args(args)
        .output()
        .expect("run orrery");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// One API call with `key` in `X-API-Key` and an optional JSON body;
/// answers the status and the JSON body (`Null` when the body is not JSON).
pub async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, server.url(path))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Fetches every page of a project's events (newest first) with a secret
/// key; returns the events in order.
pub async fn all_events(server: &Server, query: &str, limit: u32) -> Vec<Value> {
    let http = client();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.url(&format!(
            "/api/v1/projects/{}/events?limit={limit}{query}",
            server.keys.project_id
        ));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = http
            .get(&url)
            .header("X-API-Key", &server.keys.secret_key)
            .send()
            .await
            .expect("list events");
        assert_eq!(resp.status(), 200, "list events");
        let page: Value = resp.json().await.expect("json");
        out.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// The Python tools the tests use, pinned: the client generator and the
/// property-based API tester (which brings `jsonschema`).
pub const PYTHON_TOOLS: &[&str] = &["openapi-python-client==0.29.1", "schemathesis==4.32.5"];

/// The virtualenv with [`PYTHON_TOOLS`]: `$ORRERY_TEST_PYTHON_VENV`, or
/// `openapi/.venv`; created or completed here when a tool is missing.
pub fn python_venv() -> PathBuf {
    let venv = std::env::var("ORRERY_TEST_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("openapi/.venv"));
    let complete = ["openapi-python-client", "schemathesis"]
        .iter()
        .all(|tool| venv.join("bin").join(tool).exists());
    if !complete {
        if !venv.join("bin/pip").exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv {} failed", venv.display());
        }
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(PYTHON_TOOLS)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install {PYTHON_TOOLS:?} failed (PyPI reachable?)");
    }
    venv
}

/// A pipeline whose `geoip` stage asks the provider on `port` (see
/// [`silent_provider`]) and dead-letters what it fails on within 50 ms:
/// every event from a public IP becomes a dead letter.
pub fn dead_letter_stages(port: u16) -> Value {
    serde_json::json!({"stages": [
        {"plugin": "ip_hash"},
        {"plugin": "geoip", "on_error": "dead_letter", "timeout_ms": 50,
         "config": {"provider": "ipinfo", "provider_url": format!("http://127.0.0.1:{port}"),
                    "provider_timeout_ms": 5000, "batch_deadline_ms": 2000}},
    ]})
}

/// A local HTTP "provider" that accepts connections and never answers
/// (each is held 30 s): a plugin calling it runs past its time limit.
/// Answers its port.
pub async fn silent_provider() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(sock);
            });
        }
    });
    port
}

/// The `p` quantile (0 < p <= 1) of `sorted` by the nearest-rank method: the
/// smallest value with at least a share `p` of all values at or below it;
/// `None` when empty. The one definition of every benchmark's p50 and p99
/// (`orrery-loadgen`, `orrery-execbench`).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 0.999), Some(100));
        assert_eq!(percentile(&[7u32], 0.5), Some(7));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
