//! One Python execution seen from the runtime: pipes, streaming, stdin,
//! deadline, output limit, cancellation, and turning the child's end into
//! an [`ExecutionResult`].

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::conn::{ChildExit, ZygoteConn};
use super::protocol::ToZygote;
use super::zygote::EXIT_SETUP_FAILED;
use crate::SandboxError;
use crate::limits::{Limit, LimitExceeded, Limits};
use crate::result::{ExecutionResult, Outcome, OutputChunk, Stream, Utf8Chunker};

/// Largest answer read from the result pipe (value repr + traceback).
const MAX_ANSWER: u64 = 1024 * 1024;

/// A running execution: its output as it is produced, its stdin, and its
/// result. Dropping it cancels the execution.
#[derive(Debug)]
pub struct Execution {
    output: mpsc::UnboundedReceiver<OutputChunk>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    cancel: Option<oneshot::Sender<()>>,
    done: JoinHandle<ExecutionResult>,
}

impl Execution {
    /// The next piece of stdout/stderr, as the program writes it; `None`
    /// once the program's output has ended.
    pub async fn next_output(&mut self) -> Option<OutputChunk> {
        self.output.recv().await
    }

    /// Sends more stdin (only for interactive requests). False when stdin
    /// is closed or the program has ended.
    pub fn write_stdin(&self, data: impl Into<Vec<u8>>) -> bool {
        self.stdin
            .as_ref()
            .is_some_and(|tx| tx.send(data.into()).is_ok())
    }

    /// Closes stdin: the program reads end of file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Stops the execution; its result says `Cancelled`.
    pub fn cancel(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the end and returns the result (full stdout/stderr
    /// included, whether or not chunks were read).
    pub async fn wait(self) -> ExecutionResult {
        let Execution {
            done,
            cancel,
            stdin,
            ..
        } = self;
        let result = done.await;
        drop((cancel, stdin));
        result.unwrap_or_else(|e| {
            ExecutionResult::new(Outcome::Crashed {
                reason: format!("execution task failed: {e}"),
            })
        })
    }
}

pub(crate) struct Job {
    pub id: u64,
    pub code: String,
    pub restricted: bool,
    pub stdin: Option<Vec<u8>>,
    pub interactive: bool,
    pub limits: Limits,
    /// Keep the output for the result too (false: only stream it).
    pub collect_output: bool,
}

/// Starts `job` on `conn` and returns its handle.
pub(crate) async fn start(conn: Arc<ZygoteConn>, job: Job) -> Result<Execution, SandboxError> {
    let started = Instant::now();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let stdin_tx = job.interactive.then_some(stdin_tx);

    if job.code.len() as u64 > job.limits.code_bytes {
        let mut result = ExecutionResult::new(Outcome::LimitExceeded(LimitExceeded::of(
            Limit::CodeSize,
            &job.limits,
        )));
        result.duration = started.elapsed();
        let done = tokio::spawn(async move { result });
        return Ok(Execution {
            output: out_rx,
            stdin: None,
            cancel: Some(cancel_tx),
            done,
        });
    }

    let pipes = Pipes::new()?;
    let msg = ToZygote::Run {
        id: job.id,
        code: job.code.clone(),
        restricted: job.restricted,
        stdin: job.stdin.is_some() || job.interactive,
        memory_bytes: job.limits.memory_bytes,
        cpu_seconds: cpu_seconds(job.limits.cpu_time).max(1),
    };
    let child_ends = [
        pipes.stdin_r.as_fd(),
        pipes.stdout_w.as_fd(),
        pipes.stderr_w.as_fd(),
        pipes.result_w.as_fd(),
    ];
    let exit_rx = conn.run(job.id, &msg, &child_ends).await?;
    let ends = pipes.into_parent_ends()?;
    let done = tokio::spawn(drive(
        conn, job, started, ends, exit_rx, stdin_rx, cancel_rx, out_tx,
    ));
    Ok(Execution {
        output: out_rx,
        stdin: stdin_tx,
        cancel: Some(cancel_tx),
        done,
    })
}

struct Pipes {
    stdin_r: OwnedFd,
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stdout_w: OwnedFd,
    stderr_r: OwnedFd,
    stderr_w: OwnedFd,
    result_r: OwnedFd,
    result_w: OwnedFd,
}

struct ParentEnds {
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    result: pipe::Receiver,
}

impl Pipes {
    fn new() -> Result<Self, SandboxError> {
        let p = || pipe2(OFlag::O_CLOEXEC);
        let (stdin_r, stdin_w) = p()?;
        let (stdout_r, stdout_w) = p()?;
        let (stderr_r, stderr_w) = p()?;
        let (result_r, result_w) = p()?;
        Ok(Self {
            stdin_r,
            stdin_w,
            stdout_r,
            stdout_w,
            stderr_r,
            stderr_w,
            result_r,
            result_w,
        })
    }

    /// Closes our copies of the child's ends (so we see EOF when it exits)
    /// and wraps ours for tokio.
    fn into_parent_ends(self) -> Result<ParentEnds, SandboxError> {
        let wrap =
            |fd| pipe::Receiver::from_owned_fd(fd).map_err(SandboxError::io("wrapping pipes"));
        Ok(ParentEnds {
            stdin: pipe::Sender::from_owned_fd(self.stdin_w)
                .map_err(SandboxError::io("wrapping pipes"))?,
            stdout: wrap(self.stdout_r)?,
            stderr: wrap(self.stderr_r)?,
            result: wrap(self.result_r)?,
        })
    }
}

/// Output budget shared by the stdout and stderr readers.
struct OutputBudget {
    left: Mutex<u64>,
    truncated: std::sync::atomic::AtomicBool,
    exceeded: Notify,
}

impl OutputBudget {
    /// How many of `n` new bytes may be kept.
    fn take(&self, n: usize) -> usize {
        let mut left = self.left.lock().expect("budget lock");
        let keep = (n as u64).min(*left);
        *left -= keep;
        if keep < n as u64
            && !self
                .truncated
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.exceeded.notify_one();
        }
        keep as usize
    }
}

async fn read_stream(
    mut pipe: pipe::Receiver,
    stream: Stream,
    budget: Arc<OutputBudget>,
    out: mpsc::UnboundedSender<OutputChunk>,
    collect: bool,
) -> String {
    let mut all = String::new();
    let mut decoder = Utf8Chunker::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keep = budget.take(n);
        let text = decoder.push(&buf[..keep]);
        if !text.is_empty() {
            if collect {
                all.push_str(&text);
            }
            let _ = out.send(OutputChunk { stream, data: text });
        }
    }
    let rest = decoder.finish();
    if !rest.is_empty() {
        if collect {
            all.push_str(&rest);
        }
        let _ = out.send(OutputChunk { stream, data: rest });
    }
    all
}

async fn feed_stdin(
    mut pipe: pipe::Sender,
    initial: Option<Vec<u8>>,
    mut more: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
) {
    if let Some(data) = initial
        && pipe.write_all(&data).await.is_err()
    {
        return;
    }
    if let Some(rx) = more.as_mut() {
        while let Some(data) = rx.recv().await {
            if pipe.write_all(&data).await.is_err() {
                return;
            }
        }
    }
    // Dropping the pipe gives the program end of file.
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    conn: Arc<ZygoteConn>,
    job: Job,
    started: Instant,
    ends: ParentEnds,
    mut exit_rx: oneshot::Receiver<ChildExit>,
    stdin_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    mut cancel_rx: oneshot::Receiver<()>,
    out: mpsc::UnboundedSender<OutputChunk>,
) -> ExecutionResult {
    let limits = job.limits;
    let budget = Arc::new(OutputBudget {
        left: Mutex::new(limits.output_bytes),
        truncated: false.into(),
        exceeded: Notify::new(),
    });
    let stdout = tokio::spawn(read_stream(
        ends.stdout,
        Stream::Stdout,
        budget.clone(),
        out.clone(),
        job.collect_output,
    ));
    let stderr = tokio::spawn(read_stream(
        ends.stderr,
        Stream::Stderr,
        budget.clone(),
        out,
        job.collect_output,
    ));
    let mut result_pipe = ends.result;
    let answer = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = (&mut result_pipe)
            .take(MAX_ANSWER)
            .read_to_end(&mut bytes)
            .await;
        bytes
    });
    let stdin = tokio::spawn(feed_stdin(
        ends.stdin,
        job.stdin,
        job.interactive.then_some(stdin_rx),
    ));

    let deadline = tokio::time::sleep(limits.wall_time);
    tokio::pin!(deadline);
    let mut stop: Option<Stop> = None;
    let exit = loop {
        tokio::select! {
            exit = &mut exit_rx => break exit.ok(),
            () = &mut deadline, if stop.is_none() => stop = Some(Stop::Limit(Limit::WallTime)),
            _ = &mut cancel_rx, if stop.is_none() => stop = Some(Stop::Cancelled),
            () = budget.exceeded.notified(), if stop.is_none() => stop = Some(Stop::Limit(Limit::Output)),
        }
        if stop.is_some() {
            conn.kill_child(job.id).await;
        }
    };
    stdin.abort();
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let answer = answer.await.unwrap_or_default();

    let mut result = ExecutionResult::new(outcome(exit, stop, &answer, &limits));
    if let Ok(parsed) = serde_json::from_slice::<Answer>(&answer) {
        result.value = parsed.value;
    }
    result.stdout = stdout;
    result.stderr = stderr;
    result.output_truncated = budget.truncated.load(std::sync::atomic::Ordering::Acquire);
    result.duration = started.elapsed();
    result
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Limit(Limit),
    Cancelled,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    value: Option<String>,
    error: Option<AnswerError>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerError {
    #[serde(rename = "type")]
    type_name: String,
    message: String,
    traceback: Option<String>,
}

fn outcome(exit: Option<ChildExit>, stop: Option<Stop>, answer: &[u8], limits: &Limits) -> Outcome {
    let hit = |what| Outcome::LimitExceeded(LimitExceeded::of(what, limits));
    let (code, signal) = match exit {
        None => {
            return Outcome::Crashed {
                reason: "the python zygote died".into(),
            };
        }
        Some(ChildExit::Failed(message)) => return Outcome::Crashed { reason: message },
        Some(ChildExit::Exited { code, signal }) => (code, signal),
    };
    // A stop we asked for wins when the child died of our SIGKILL; a child
    // that finished just before the kill keeps its own answer.
    if let (Some(stop), Some(_)) = (stop, signal) {
        return match stop {
            Stop::Limit(what) => hit(what),
            Stop::Cancelled => Outcome::Cancelled,
        };
    }
    if let Some(sig) = signal {
        return match sig {
            // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one.
            libc::SIGXCPU | libc::SIGKILL => hit(Limit::CpuTime),
            libc::SIGXFSZ => Outcome::Crashed {
                reason: "tried to write a file".into(),
            },
            _ => Outcome::Crashed {
                reason: format!("killed by signal {sig}"),
            },
        };
    }
    if code == Some(EXIT_SETUP_FAILED) {
        return Outcome::Crashed {
            reason: "sandbox setup failed (see stderr)".into(),
        };
    }
    if let Some(Stop::Limit(Limit::Output)) = stop {
        return hit(Limit::Output);
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(answer) else {
        return Outcome::Crashed {
            reason: format!("no result (exit code {code:?})"),
        };
    };
    match answer.status.as_str() {
        "ok" => Outcome::Completed,
        "error" => {
            let e = answer.error.unwrap_or(AnswerError {
                type_name: "Exception".into(),
                message: String::new(),
                traceback: None,
            });
            Outcome::Error {
                error_type: e.type_name,
                message: e.message,
                traceback: e.traceback,
            }
        }
        "rejected" => Outcome::Rejected {
            reason: answer.reason.unwrap_or_default(),
        },
        "limit" => hit(Limit::Memory),
        _ => Outcome::Crashed {
            reason: answer
                .reason
                .unwrap_or_else(|| "unknown runner status".into()),
        },
    }
}

/// Rounds a CPU-time limit up to whole seconds for RLIMIT_CPU.
fn cpu_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
