//! Untrusted Python: [`PythonRuntime`] runs code in children of a zygote
//! process, behind two walls.
//!
//! **Wall 1, restricted execution** (`runner.py`): curated builtins, an
//! allowlist importer handing out filtered module copies, and an AST check
//! that refuses underscore attributes, dunder names, frame/generator/code
//! attributes and format-string attribute fields.
//!
//! **Wall 2, the operating system** (`zygote.rs`, `isolate.rs`,
//! `seccomp.rs`): one forked process per execution, holding only its four
//! pipes (stdin, stdout, stderr, result); an empty environment; uid
//! `nobody` when the host runs as root; rlimits on address space, CPU
//! seconds, processes (0), file size (0), descriptors (8) and core dumps;
//! a seccomp allowlist that makes open, socket, clone/fork, execve, kill
//! and everything not needed to compute fail with `EPERM`; and, where the
//! kernel allows, new mount/network/IPC/UTS/PID (and, when not root, user)
//! namespaces with an empty read-only root. [`PythonRuntime::isolation`]
//! reports which layers were built; without namespaces the wall is the
//! process, its rlimits, uid and seccomp filter.
//!
//! The zygote is the host binary run with a hidden subcommand (see
//! [`ZygoteCommand`]): `main` must call [`zygote_main`] when it sees it.
//! The gateway process itself never runs untrusted Python; it only talks to
//! the zygote over a Unix socket and reads pipes.

mod conn;
mod exec;
mod isolate;
mod protocol;
mod seccomp;
mod zygote;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use exec::Execution;
pub use protocol::Isolation;
pub use zygote::zygote_main;

use crate::SandboxError;
use crate::limits::{Limits, LimitsRequest};
use crate::result::ExecutionResult;

/// The hidden subcommand conventionally used to start the zygote.
pub const ZYGOTE_SUBCOMMAND: &str = "__python-zygote";

/// Modules user code may import by default: the seed's four plus reviewed
/// pure-computation modules. Deliberately absent: `operator` (attrgetter is
/// a getattr without our checks), `copy`, `dataclasses`, `typing`,
/// `inspect`, anything touching files, processes or the network.
pub const DEFAULT_ALLOWED_MODULES: &[&str] = &[
    "math",
    "cmath",
    "random",
    "datetime",
    "json",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "re",
    "string",
    "decimal",
    "fractions",
    "heapq",
    "bisect",
    "textwrap",
    "unicodedata",
];

/// How to start the zygote: the host binary and its hidden subcommand. The
/// runtime appends the control socket path as the last argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZygoteCommand {
    /// Program to run (usually the current executable).
    pub program: PathBuf,
    /// Arguments before the socket path, e.g. `["__python-zygote"]`.
    pub args: Vec<OsString>,
}

impl ZygoteCommand {
    /// The running executable with [`ZYGOTE_SUBCOMMAND`].
    ///
    /// # Errors
    /// When the path of the current executable cannot be found.
    pub fn current_exe() -> Result<Self, SandboxError> {
        let program =
            std::env::current_exe().map_err(SandboxError::io("finding the current executable"))?;
        Ok(Self {
            program,
            args: vec![ZYGOTE_SUBCOMMAND.into()],
        })
    }
}

/// Configuration of a [`PythonRuntime`].
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// How to start the zygote.
    pub zygote: ZygoteCommand,
    /// The most any request may get.
    pub limits: Limits,
    /// Modules user code may import (imported once in the zygote).
    pub allowed_modules: Vec<String>,
    /// Modules imported in the zygote but not importable by restricted code
    /// (only useful with `restricted: false`, e.g. to show that `socket` is
    /// stopped by the OS wall).
    pub preload: Vec<String>,
    /// Wall 1 on (the default). `false` is for tests that show the OS wall
    /// alone holds: user code then gets the real builtins.
    pub restricted: bool,
    /// Try to build namespaces and the empty root (default true).
    pub namespaces: bool,
    /// `PYTHONHOME` for the zygote when the embedded interpreter cannot
    /// find its standard library by itself.
    pub python_home: Option<PathBuf>,
    /// How long the zygote may take to start.
    pub startup_timeout: Duration,
}

impl PythonConfig {
    /// Defaults around a zygote command.
    #[must_use]
    pub fn new(zygote: ZygoteCommand) -> Self {
        Self {
            zygote,
            limits: Limits::default(),
            allowed_modules: DEFAULT_ALLOWED_MODULES
                .iter()
                .map(|m| (*m).to_string())
                .collect(),
            preload: Vec::new(),
            restricted: true,
            namespaces: true,
            python_home: None,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// One request to run Python.
#[derive(Debug, Clone, Default)]
pub struct PythonRequest {
    /// The source code.
    pub code: String,
    /// Initial stdin. `input()` exists only when this is set or the request
    /// is interactive.
    pub stdin: Option<String>,
    /// Keep stdin open for [`Execution::write_stdin`] until
    /// [`Execution::close_stdin`].
    pub interactive: bool,
    /// Lower limits for this request (capped by the configured ones).
    pub limits: LimitsRequest,
}

impl PythonRequest {
    /// A request for `code` with default limits and no stdin.
    #[must_use]
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            ..Self::default()
        }
    }
}

/// Runs untrusted Python in forked children of a zygote. Cheap to clone.
#[derive(Clone)]
pub struct PythonRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: PythonConfig,
    conn: tokio::sync::Mutex<Arc<conn::ZygoteConn>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRuntime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl PythonRuntime {
    /// Starts the zygote and waits until it is ready.
    ///
    /// # Errors
    /// When the zygote cannot be spawned, does not connect back in
    /// `startup_timeout`, or fails to initialise Python.
    pub async fn start(config: PythonConfig) -> Result<Self, SandboxError> {
        let conn = conn::ZygoteConn::start(&config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                conn: tokio::sync::Mutex::new(Arc::new(conn)),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// What the OS wall is made of on this machine.
    pub async fn isolation(&self) -> Isolation {
        self.inner.conn.lock().await.isolation.clone()
    }

    /// The configured maximum limits.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// Runs `request` to its end.
    ///
    /// # Errors
    /// Only for failures of the sandbox itself (see [`Self::spawn`]); what
    /// the code does, limits included, is in the result.
    pub async fn execute(&self, request: PythonRequest) -> Result<ExecutionResult, SandboxError> {
        Ok(self.spawn(request).await?.wait().await)
    }

    /// Starts `request` and returns a handle to stream its output, feed its
    /// stdin, cancel it and wait for its result.
    ///
    /// # Errors
    /// When the zygote is gone and cannot be restarted, or pipes cannot be
    /// created.
    pub async fn spawn(&self, request: PythonRequest) -> Result<Execution, SandboxError> {
        self.start_job(request, true).await
    }

    /// [`Self::spawn`] for a long-lived execution: its output is only
    /// streamed through [`Execution::next_output`], never also collected
    /// into the result's `stdout`/`stderr` (which stay empty), so the
    /// host's memory does not grow with what the program prints over its
    /// life. The output limit still counts every byte.
    ///
    /// # Errors
    /// As [`Self::spawn`].
    pub async fn spawn_streaming(&self, request: PythonRequest) -> Result<Execution, SandboxError> {
        self.start_job(request, false).await
    }

    async fn start_job(
        &self,
        request: PythonRequest,
        collect_output: bool,
    ) -> Result<Execution, SandboxError> {
        let conn = self.connection().await?;
        let job = exec::Job {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            code: request.code,
            restricted: self.inner.config.restricted,
            stdin: request.stdin.map(String::into_bytes),
            interactive: request.interactive,
            limits: self.inner.config.limits.clamp(&request.limits),
            collect_output,
        };
        exec::start(conn, job).await
    }

    /// Kills the zygote, as a crash would (running executions end as
    /// `Crashed`); the next request starts a new one. For tests and for an
    /// operator who wants a fresh interpreter.
    pub async fn kill_zygote(&self) {
        self.inner.conn.lock().await.kill();
    }

    /// The live zygote connection, restarting the zygote if it died.
    async fn connection(&self) -> Result<Arc<conn::ZygoteConn>, SandboxError> {
        let mut guard = self.inner.conn.lock().await;
        if !guard.is_alive() {
            tracing::warn!("restarting the python zygote");
            *guard = Arc::new(conn::ZygoteConn::start(&self.inner.config).await?);
        }
        Ok(guard.clone())
    }
}
