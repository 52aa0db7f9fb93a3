//! The runtime's side of one zygote: spawning it, sending `Run`/`Kill`,
//! and routing its `Exited` reports to the waiting executions.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::PythonConfig;
use super::protocol::{self, FromZygote, Hello, Isolation, ToZygote};
use crate::SandboxError;

/// How a child ended, as reported by the zygote.
#[derive(Debug, Clone)]
pub(crate) enum ChildExit {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Failed(String),
}

/// State shared with the reader task (which must not keep the child alive).
struct Shared {
    sock: UnixStream,
    write_lock: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<u64, oneshot::Sender<ChildExit>>>,
    alive: AtomicBool,
}

pub(crate) struct ZygoteConn {
    shared: Arc<Shared>,
    pub(crate) isolation: Isolation,
    // Dropping the connection kills the zygote (kill_on_drop); with a PID
    // namespace its PID 1 follows through PR_SET_PDEATHSIG.
    child: Mutex<tokio::process::Child>,
    _dir: tempfile::TempDir,
}

impl ZygoteConn {
    pub(crate) async fn start(config: &PythonConfig) -> Result<Self, SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("orrery-python-")
            .tempdir()
            .map_err(SandboxError::io("creating the zygote directory"))?;
        let path = dir.path().join("control.sock");
        let listener =
            UnixListener::bind(&path).map_err(SandboxError::io("binding the zygote socket"))?;
        let mut command = tokio::process::Command::new(&config.zygote.program);
        command
            .args(&config.zygote.args)
            .arg(&path)
            .env_clear()
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(home) = &config.python_home {
            command.env("PYTHONHOME", home);
        }
        command.env("PYTHONDONTWRITEBYTECODE", "1");
        let mut child = command
            .spawn()
            .map_err(SandboxError::io("spawning the zygote"))?;

        let handshake = async {
            let (mut sock, _) = tokio::select! {
                accepted = listener.accept() => accepted.map_err(SandboxError::io("accepting the zygote"))?,
                status = child.wait() => return Err(SandboxError::Zygote(format!("exited during start-up: {status:?}"))),
            };
            let hello = Hello {
                allowed_modules: config.allowed_modules.clone(),
                preload: config.preload.clone(),
                namespaces: config.namespaces,
            };
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            sock.write_all(&protocol::encode(&hello))
                .await
                .map_err(SandboxError::io("sending hello"))?;
            let mut len = [0u8; 4];
            sock.read_exact(&mut len)
                .await
                .map_err(SandboxError::io("reading ready"))?;
            let mut body = vec![0; u32::from_le_bytes(len) as usize];
            sock.read_exact(&mut body)
                .await
                .map_err(SandboxError::io("reading ready"))?;
            match serde_json::from_slice(&body) {
                Ok(FromZygote::Ready { isolation }) => Ok((sock, isolation)),
                other => Err(SandboxError::Zygote(format!(
                    "unexpected first answer: {other:?}"
                ))),
            }
        };
        let (sock, isolation) = tokio::time::timeout(config.startup_timeout, handshake)
            .await
            .map_err(|_| SandboxError::Zygote("start-up timed out".into()))??;
        drop(listener);

        let shared = Arc::new(Shared {
            sock,
            write_lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(read_reports(shared.clone()));
        tracing::debug!(?isolation, "python zygote ready");
        Ok(Self {
            shared,
            isolation,
            child: Mutex::new(child),
            _dir: dir,
        })
    }

    /// SIGKILLs the zygote process (the runtime notices and restarts it).
    pub(crate) fn kill(&self) {
        let _ = self.child.lock().expect("child lock").start_kill();
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Starts execution `id`; the receiver gets its end.
    pub(crate) async fn run(
        &self,
        id: u64,
        msg: &ToZygote,
        fds: &[BorrowedFd<'_>],
    ) -> Result<oneshot::Receiver<ChildExit>, SandboxError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .insert(id, tx);
        if let Err(e) = self.send(&protocol::encode(msg), fds).await {
            self.shared
                .pending
                .lock()
                .expect("pending lock")
                .remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// Asks the zygote to SIGKILL execution `id` (no-op once it exited).
    pub(crate) async fn kill_child(&self, id: u64) {
        let _ = self
            .send(&protocol::encode(&ToZygote::Kill { id }), &[])
            .await;
    }

    async fn send(&self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SandboxError> {
        if !self.is_alive() {
            return Err(SandboxError::ZygoteDied);
        }
        let sock = &self.shared.sock;
        let _guard = self.shared.write_lock.lock().await;
        let mut sent = 0;
        while sent < frame.len() {
            let attach = if sent == 0 { fds } else { &[] };
            let n = sock
                .async_io(Interest::WRITABLE, || {
                    protocol::send_with_fds(sock.as_fd(), &frame[sent..], attach)
                })
                .await
                .map_err(|_| SandboxError::ZygoteDied)?;
            sent += n;
        }
        Ok(())
    }
}

async fn read_reports(shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        if shared.sock.readable().await.is_err() {
            break;
        }
        match shared.sock.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
        loop {
            match protocol::take_frame::<FromZygote>(&mut buf) {
                Ok(Some(report)) => dispatch(&shared, report),
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "bad frame from python zygote");
                    break 'read;
                }
            }
        }
    }
    shared.alive.store(false, Ordering::Release);
    // Dropping the senders tells every waiting execution the zygote is gone.
    shared.pending.lock().expect("pending lock").clear();
    tracing::warn!("python zygote connection closed");
}

fn dispatch(shared: &Shared, report: FromZygote) {
    let (id, exit) = match report {
        FromZygote::Exited { id, code, signal } => (id, ChildExit::Exited { code, signal }),
        FromZygote::Failed { id, message } => (id, ChildExit::Failed(message)),
        FromZygote::Ready { .. } => return,
    };
    if let Some(tx) = shared.pending.lock().expect("pending lock").remove(&id) {
        let _ = tx.send(exit);
    }
}
