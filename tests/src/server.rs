//! The real `orrery` binary as a child process, on a fresh data directory
//! and database: start, restart, stop gently or with `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::api::{Answer, Api};
use crate::database::{Backend, TestDatabase};

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

/// A project and its two keys, as `orrery init --json` prints them.
#[derive(Debug, Clone)]
pub struct InitKeys {
    /// First project.
    pub project_id: String,
    /// Public key.
    pub public_key: String,
    /// Admin secret key.
    pub secret_key: String,
}

/// How to start a server: [`Server::launch`]. The defaults are what tests
/// want (the binary next to the tests, a temporary data directory removed
/// afterwards, SQLite, logs at `warn`).
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The binary; default [`orrery_bin`].
    pub bin: Option<PathBuf>,
    /// The data directory; default a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory (it is printed).
    pub keep_data: bool,
    /// An existing database URL (`--database-url`), neither created nor
    /// dropped here; default SQLite in the data directory.
    pub database_url: Option<String>,
    /// Environment of the server, e.g. `ORRERY_INGEST__QUEUE_CAPACITY`.
    pub env: Vec<(String, String)>,
    /// Also pass this process's `ORRERY_*` variables (the load generator
    /// does; tests start from a clean environment).
    pub inherit_orrery_env: bool,
    /// Print the server's standard output after its first line, prefixed.
    pub echo_stdout: bool,
}

/// A running (or stopped) orrery server with its data directory.
#[derive(Debug)]
pub struct Server {
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Database URL, for PostgreSQL.
    pub database_url: Option<String>,
    /// The database the server runs on.
    pub backend: Backend,
    /// Extra environment, e.g. `ORRERY_INGEST__QUEUE_CAPACITY`.
    pub env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The keys of the first project.
    pub keys: InitKeys,
    bin: PathBuf,
    inherit_orrery_env: bool,
    echo_stdout: bool,
    child: Option<Child>,
    // Dropped after the child is killed (fields drop in order).
    _database: Option<TestDatabase>,
    _tmp: Option<tempfile::TempDir>,
}

/// A map setting as an environment value: figment's `{"key"=value, ...}`,
/// keys quoted (a domain's dots would otherwise split it), values bare.
pub fn env_map(entries: &[(&str, &str)]) -> String {
    let inner: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("\"{k}\"={v}"))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn owned_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Server {
    /// A server on SQLite in a fresh data directory, with extra `env`.
    pub async fn sqlite(env: &[(&str, &str)]) -> Self {
        Self::on(Backend::Sqlite, env).await
    }

    /// A server on a fresh database of `backend` (created here, dropped
    /// with the server), with extra `env`.
    pub async fn on(backend: Backend, env: &[(&str, &str)]) -> Self {
        let database = TestDatabase::create(backend).await;
        let options = Options {
            database_url: database.url.clone(),
            env: owned_env(env),
            ..Options::default()
        };
        let mut server = Self::launch(options).await.expect("start orrery");
        server.backend = backend;
        server._database = Some(database);
        server
    }

    /// Inits a data directory (and database) with `orrery init --json` and
    /// starts the server on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the binary is missing or `init` or `serve` fail.
    pub async fn launch(options: Options) -> anyhow::Result<Self> {
        let bin = options.bin.clone().unwrap_or_else(orrery_bin);
        let bin = std::fs::canonicalize(&bin)
            .with_context(|| format!("no orrery binary at {}", bin.display()))?;
        let (data_dir, tmp) = match options.data_dir {
            Some(d) => (d, None),
            None => {
                let tmp = tempfile::Builder::new().prefix("orrery-test-").tempdir()?;
                if options.keep_data {
                    let path = tmp.keep();
                    eprintln!("data directory kept: {}", path.display());
                    (path.join("data"), None)
                } else {
                    (tmp.path().join("data"), Some(tmp))
                }
            }
        };
        let backend = match options.database_url {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        };
        // Every request of a test comes from 127.0.0.1: one client as far
        // as the per-IP limits go, which load tests and benchmarks exceed on
        // purpose. They are off unless a test sets them (tests/tests/
        // rate_limits.rs); the per-key limit keeps its default.
        let mut env = options.env;
        for (k, v) in [
            ("ORRERY_RATE_LIMIT__INGEST_PER_SEC", "0"),
            ("ORRERY_RATE_LIMIT__AUTH_PER_MINUTE", "0"),
        ] {
            if !env.iter().any(|(key, _)| key == k) {
                env.insert(0, (k.to_owned(), v.to_owned()));
            }
        }
        let mut server = Self {
            data_dir,
            database_url: options.database_url,
            backend,
            env,
            base: String::new(),
            keys: InitKeys {
                project_id: String::new(),
                public_key: String::new(),
                secret_key: String::new(),
            },
            bin,
            inherit_orrery_env: options.inherit_orrery_env,
            echo_stdout: options.echo_stdout,
            child: None,
            _database: None,
            _tmp: tmp,
        };
        let (ok, out, err) = server.cli(&["init", "--json"]);
        if !ok {
            bail!("orrery init failed: {err}");
        }
        let v: Value = serde_json::from_str(out.trim()).context("init --json output")?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("orrery init --json printed no {name}: {v}"))
        };
        server.keys = InitKeys {
            project_id: field("project_id")?,
            public_key: field("public_key")?,
            secret_key: field("secret_key")?,
        };
        server.try_spawn()?;
        Ok(server)
    }

    /// Runs an orrery subcommand against this server's data directory and
    /// database; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command().args(args).output().expect("run orrery");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The number of stored events, from `orrery stats --json`.
    ///
    /// # Errors
    /// When `orrery stats` fails.
    pub fn stored_events(&self) -> anyhow::Result<u64> {
        let (ok, out, err) = self.cli(&["stats", "--json"]);
        if !ok {
            bail!("orrery stats failed: {err}");
        }
        let v: Value = serde_json::from_str(out.trim()).context("stats --json output")?;
        v["events"]
            .as_u64()
            .ok_or_else(|| anyhow!("orrery stats --json has no events count: {v}"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORRERY_LOG__FILTER", "warn");
        if self.inherit_orrery_env {
            cmd.envs(std::env::vars().filter(|(k, _)| k.starts_with("ORRERY_")));
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the process (again) on the same data and waits until it
    /// listens.
    pub fn spawn(&mut self) {
        self.try_spawn().expect("start orrery serve");
    }

    fn try_spawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "already running");
        let mut cmd = self.command();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("spawn orrery serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let echo = self.echo_stdout;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.trim().strip_prefix("orrery listening on ") {
                    let _ = tx.send(addr.to_owned());
                } else if echo {
                    eprint!("[orrery] {line}");
                }
                line.clear();
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => {
                self.base = base;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("orrery did not start listening within 60 s")
            }
        }
    }

    /// Stops the server gently and starts it again on the same data with
    /// `env` added to its environment: settings that name something made
    /// after `init`, e.g. `ORRERY_COMPAT__PLAUSIBLE_DOMAINS` (see
    /// [`env_map`]).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.terminate();
        self.env.extend(owned_env(env));
        self.spawn();
    }

    /// Another instance on this server's PostgreSQL database, as a second
    /// machine behind a load balancer would run: its own data directory
    /// (with this one's secrets), the same keys, plus `env`. Declare it
    /// after this server, so that it stops first.
    ///
    /// # Panics
    /// On SQLite (one instance per file), or when it does not start.
    pub fn another_instance(&self, env: &[(&str, &str)]) -> Self {
        assert!(
            self.database_url.is_some(),
            "instances share a PostgreSQL database, not a SQLite file"
        );
        let tmp = tempfile::Builder::new()
            .prefix("orrery-test-")
            .tempdir()
            .expect("temporary directory");
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data directory");
        let secrets = self.data_dir.join("secrets.toml");
        if secrets.exists() {
            std::fs::copy(&secrets, data_dir.join("secrets.toml")).expect("copy the secrets");
        }
        let mut env_all = self.env.clone();
        env_all.extend(owned_env(env));
        let mut other = Self {
            data_dir,
            database_url: self.database_url.clone(),
            backend: self.backend,
            env: env_all,
            base: String::new(),
            keys: self.keys.clone(),
            bin: self.bin.clone(),
            inherit_orrery_env: self.inherit_orrery_env,
            echo_stdout: self.echo_stdout,
            child: None,
            _database: None,
            _tmp: Some(tmp),
        };
        other.spawn();
        other
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the exit: `Some(success)`,
    /// or `None` when it had to be killed after `within`.
    pub fn stop(&mut self, within: Duration) -> Option<bool> {
        let Some(mut child) = self.child.take() else {
            return Some(true);
        };
        send_sigterm(child.id());
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.success());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0.
    ///
    /// # Panics
    /// When it has not stopped within 60 s.
    pub fn terminate(&mut self) -> bool {
        self.stop(Duration::from_secs(60))
            .expect("orrery did not stop within 60 s")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The binary this server runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.send("GET", "/metrics", &[], None).await.text()
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
}

impl Api for Server {
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let method: reqwest::Method = method.parse().expect("an HTTP method");
        let mut req = crate::client().request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("send request");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.bytes().await.expect("read answer").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn keys(&self) -> &InitKeys {
        &self.keys
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

/// Runs an orrery subcommand on a data directory (and database) with a
/// clean environment plus `env`; returns (success, stdout, stderr).
pub fn run_cli(
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(String, String)],
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new(orrery_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORRERY_LOG__FILTER", "warn")
        .arg("--data-dir")
        .arg(data_dir);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.args(args).output().expect("run orrery");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `f` on a fresh server on each backend of [`crate::backends`], one
/// after the other; each server and its database end with its turn.
pub async fn each_backend(test: &str, env: &[(&str, &str)], mut f: impl AsyncFnMut(&mut Server)) {
    for backend in crate::backends(test) {
        let mut server = Server::on(backend, env).await;
        f(&mut server).await;
    }
}
