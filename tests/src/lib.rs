//! Orrery's test harness, used by every black-box test and by the
//! benchmarks (`orrery-loadgen`, `orrery-execbench`):
//!
//! - [`Server`]: the real `orrery` binary on a fresh data directory (SQLite)
//!   or a fresh PostgreSQL database; restart it, stop it gently or with
//!   `kill -9`. [`each_backend`] runs a test body on every configured
//!   backend.
//! - [`InProcess`]: the same HTTP application in this process through
//!   `poem::test::TestClient`, for handler logic that needs no socket.
//! - [`Api`]: what tests say to either (`call`, `get`, `post_json`,
//!   `admin`, `post_events`, `create_key`, `create_project`,
//!   `all_events`).
//! - [`npm_ready`]: a Node package of the repository with its
//!   dependencies installed (`npm ci`), for the JavaScript tests;
//!   [`browser`]: headless Chromium running the scenarios of
//!   `tests/browser/`.
//!
//! The binary is `target/<profile>/orrery` next to the test executable
//! (build it first: `cargo build -p orrery-gateway`), or `$ORRERY_BIN`.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod api;
mod browser;
mod database;
mod in_process;
mod node;
mod server;

pub use api::{Answer, Api};
pub use browser::{Browser, browser};
pub use database::{Backend, TestDatabase, backends};
pub use in_process::{InProcess, each_backend_in_process};
pub use node::{node_available, npm_ready};
pub use server::{
    InitKeys, Options, Server, each_backend, env_map, orrery_bin, run_cli, send_sigterm,
};

/// An HTTP client for tests. It does not follow redirects: a test sees
/// the server's own answer.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// Builds the plugin SDK's components (`sdk/`: the examples and the test
/// plugins) for `wasm32-wasip2`, once per process, with the `cargo` running
/// the tests (and its `CARGO_TARGET_DIR`). Answers the path of component
/// `name` (a crate name, e.g. `pii-redact`).
///
/// # Panics
/// When the build fails (is the `wasm32-wasip2` target installed?).
pub fn plugin_component(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let manifest = repo().join("sdk/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(&manifest)
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the plugin SDK failed (rustup target add wasm32-wasip2?)"
        );
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("sdk/target"));
        target.join("wasm32-wasip2/release")
    });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "no component {}", path.display());
    path
}

/// The Python tools the tests use, pinned: the client generator, the
/// property-based API tester (which brings `jsonschema`) and PostHog's
/// Python library (the drop-in compatibility test).
pub const PYTHON_TOOLS: &[&str] = &[
    "openapi-python-client==0.29.1",
    "schemathesis==4.32.5",
    "posthog==7.91.1",
];

/// The virtualenv with [`PYTHON_TOOLS`]: `$ORRERY_TEST_PYTHON_VENV`, or
/// `openapi/.venv`; created or completed here when a tool is missing.
pub fn python_venv() -> PathBuf {
    let venv = std::env::var("ORRERY_TEST_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("openapi/.venv"));
    let complete = ["openapi-python-client", "schemathesis"]
        .iter()
        .all(|tool| venv.join("bin").join(tool).exists())
        && Command::new(venv.join("bin/python"))
            .args(["-c", "import posthog"])
            .status()
            .is_ok_and(|s| s.success());
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

/// A small deterministic generator for test and benchmark data (no
/// dependency; the same data every run).
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n` from the top 48 bits of the state.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 16) % n
    }
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
