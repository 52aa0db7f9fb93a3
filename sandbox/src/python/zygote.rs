//! The zygote: a process of the host binary (re-executed with a hidden
//! argument) that initialises CPython once, imports the allowed modules,
//! builds its OS walls, then forks one child per execution.
//!
//! Start-up, in order:
//! 1. connect to the runtime's socket (the last command-line argument) and
//!    read `Hello`;
//! 2. initialise Python, load `runner.py`, import the allowed modules;
//! 3. build the seccomp program;
//! 4. enter new namespaces (user when not root; mount, network, IPC, UTS,
//!    PID), make `/` an empty read-only tmpfs via chroot, and fork once so
//!    the serving process is PID 1 of its namespace (when it dies, every
//!    execution dies with it);
//! 5. answer `Ready` and serve `Run`/`Kill` until the socket closes.
//!
//! A child, right after fork: moves its four pipe ends to fds 0-3 and closes
//! every other descriptor, drops to `nobody` (when root), sets rlimits
//! (address space, CPU, no processes, no file writes, 8 descriptors, no core
//! dumps), becomes non-dumpable, installs the seccomp filter, and only then
//! calls the runner. It writes the runner's JSON answer to fd 3 and
//! `_exit`s without running any Python finaliser.

// fork(), moving descriptors to fixed numbers, pidfd_open, setrlimit on the
// child, and CPython's fork hooks are raw OS/FFI calls without safe wrappers.
// Each `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use seccompiler::BpfProgram;

use super::protocol::{self, FDS_PER_RUN, FromZygote, Hello, ToZygote};
use super::{isolate, seccomp};

const RUNNER_SOURCE: &str = include_str!("runner.py");
/// Exit codes of a child that could not build its wall (never runs code).
pub(crate) const EXIT_SETUP_FAILED: i32 = 70;

/// Entry point of the zygote process. The host binary calls it when started
/// with the hidden subcommand it passed in [`super::ZygoteCommand`]; the last
/// command-line argument is the runtime's socket path. Never returns.
pub fn zygote_main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("orrery python zygote: {message}");
            1
        }
    };
    std::process::exit(code)
}

fn serve() -> Result<(), String> {
    // Whatever the host had open and forgot to mark close-on-exec (a
    // database file, a listening socket) is not ours to keep.
    // SAFETY: closes descriptors 3.. of this fresh process; nothing in it
    // owns them yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let path = std::env::args_os()
        .next_back()
        .ok_or("missing socket path argument")?;
    let mut sock = UnixStream::connect(&path).map_err(|e| format!("connect {path:?}: {e}"))?;
    let hello: Hello = protocol::read_frame(&mut sock).map_err(|e| format!("hello: {e}"))?;

    Python::initialize();
    Python::attach(|py| {
        let runner = load_runner(py, &hello).map_err(|e| format!("python start-up: {e}"))?;
        let bpf = seccomp::program().map_err(|e| e.to_string())?;
        let baseline = address_space_now();
        let dir = std::path::Path::new(&path)
            .parent()
            .ok_or("socket path has no directory")?;
        let isolation =
            isolate::enter(hello.namespaces, dir, sock.as_raw_fd(), &|| fork_python(py))?;
        protocol::write_frame(
            &mut sock,
            &FromZygote::Ready {
                isolation: isolation.clone(),
            },
        )
        .map_err(|e| format!("ready: {e}"))?;
        let drop_uid = isolation.uid;
        Zygote {
            py,
            runner,
            bpf,
            baseline,
            drop_uid,
            sock,
            children: HashMap::new(),
        }
        .serve()
    })
}

fn load_runner<'py>(py: Python<'py>, hello: &Hello) -> PyResult<Bound<'py, PyAny>> {
    let source = CString::new(RUNNER_SOURCE).expect("runner.py has no NUL byte");
    let module = PyModule::from_code(py, &source, c"orrery_runner.py", c"orrery_runner")?;
    let config = serde_json::json!({
        "allowed_modules": hello.allowed_modules,
        "preload": hello.preload,
    });
    module.getattr("prepare")?.call1((config.to_string(),))?;
    module.getattr("run")
}

/// Current address-space size; children get their memory limit on top.
fn address_space_now() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// fork() with CPython's fork hooks; returns the child's pid in the parent
/// and 0 in the child.
fn fork_python(_py: Python<'_>) -> Result<libc::pid_t, String> {
    // SAFETY: the zygote is single-threaded (nothing in it spawns threads)
    // and holds the GIL (`_py`), which is what PyOS_BeforeFork/AfterFork_*
    // require; the child only runs async-signal-safe setup plus the Python
    // interpreter it now owns.
    unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            pyo3::ffi::PyOS_AfterFork_Child();
        } else {
            pyo3::ffi::PyOS_AfterFork_Parent();
        }
        if pid < 0 {
            Err(format!("fork: {}", Errno::last()))
        } else {
            Ok(pid)
        }
    }
}

struct Child {
    pid: Pid,
    pidfd: OwnedFd,
}

struct Job {
    id: u64,
    code: String,
    restricted: bool,
    stdin: bool,
    memory_bytes: u64,
    cpu_seconds: u64,
    fds: Vec<OwnedFd>,
}

struct Zygote<'py> {
    py: Python<'py>,
    runner: Bound<'py, PyAny>,
    bpf: BpfProgram,
    baseline: u64,
    drop_uid: Option<u32>,
    sock: UnixStream,
    children: HashMap<u64, Child>,
}

impl Zygote<'_> {
    fn serve(mut self) -> Result<(), String> {
        let mut inbuf = Vec::new();
        let mut fds: VecDeque<OwnedFd> = VecDeque::new();
        loop {
            let ids: Vec<u64> = self.children.keys().copied().collect();
            let (sock_ready, exited) = {
                let mut polls = vec![PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
                polls.extend(
                    ids.iter()
                        .map(|id| PollFd::new(self.children[id].pidfd.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut polls, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(format!("poll: {e}")),
                }
                let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
                let exited: Vec<u64> = ids
                    .iter()
                    .zip(&polls[1..])
                    .filter(|(_, p)| ready(p))
                    .map(|(id, _)| *id)
                    .collect();
                (ready(&polls[0]), exited)
            };
            for id in exited {
                self.reap(id)?;
            }
            if sock_ready {
                if !self.receive(&mut inbuf, &mut fds)? {
                    return self.shutdown();
                }
                while let Some(msg) =
                    protocol::take_frame::<ToZygote>(&mut inbuf).map_err(|e| e.to_string())?
                {
                    self.handle(msg, &mut fds)?;
                }
            }
        }
    }

    /// Reads what is available; false on end of stream.
    fn receive(
        &mut self,
        inbuf: &mut Vec<u8>,
        fds: &mut VecDeque<OwnedFd>,
    ) -> Result<bool, String> {
        let mut data = [0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 32]);
        let (n, received) = {
            let mut iov = [IoSliceMut::new(&mut data)];
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR | Errno::EAGAIN) => return Ok(true),
                Err(e) => return Err(format!("recvmsg: {e}")),
            };
            let mut received = Vec::new();
            for c in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    received.extend(raw);
                }
            }
            (msg.bytes, received)
        };
        for raw in received {
            // SAFETY: SCM_RIGHTS just installed `raw` in our table; nothing
            // else owns it.
            fds.push_back(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        inbuf.extend_from_slice(&data[..n]);
        Ok(n > 0)
    }

    fn handle(&mut self, msg: ToZygote, fds: &mut VecDeque<OwnedFd>) -> Result<(), String> {
        match msg {
            ToZygote::Kill { id } => {
                if let Some(child) = self.children.get(&id) {
                    let _ = kill(child.pid, Signal::SIGKILL);
                }
            }
            ToZygote::Run {
                id,
                code,
                restricted,
                stdin,
                memory_bytes,
                cpu_seconds,
            } => {
                if fds.len() < FDS_PER_RUN {
                    return Err("run message without its descriptors".into());
                }
                let job_fds: Vec<OwnedFd> = fds.drain(..FDS_PER_RUN).collect();
                let job = Job {
                    id,
                    code,
                    restricted,
                    stdin,
                    memory_bytes,
                    cpu_seconds,
                    fds: job_fds,
                };
                if let Err(message) = self.spawn(job) {
                    self.send(&FromZygote::Failed { id, message })?;
                }
            }
        }
        Ok(())
    }

    fn spawn(&mut self, job: Job) -> Result<(), String> {
        let pid = fork_python(self.py)?;
        if pid == 0 {
            child_main(self, job);
        }
        // Our copies of the child's pipe ends close here (job dropped), so
        // the runtime sees EOF when the child exits.
        let pid = Pid::from_raw(pid);
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if raw < 0 {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(format!("pidfd_open: {}", Errno::last()));
        }
        // SAFETY: the syscall returned a fresh descriptor we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        self.children.insert(job.id, Child { pid, pidfd });
        Ok(())
    }

    fn reap(&mut self, id: u64) -> Result<(), String> {
        let Some(child) = self.children.remove(&id) else {
            return Ok(());
        };
        let (code, signal) = match waitpid(child.pid, None) {
            Ok(WaitStatus::Exited(_, code)) => (Some(code), None),
            Ok(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
            Ok(_) | Err(_) => (None, None),
        };
        self.send(&FromZygote::Exited { id, code, signal })
    }

    fn send(&mut self, msg: &FromZygote) -> Result<(), String> {
        protocol::write_frame(&mut self.sock, msg).map_err(|e| format!("send: {e}"))
    }

    fn shutdown(self) -> Result<(), String> {
        for child in self.children.values() {
            let _ = kill(child.pid, Signal::SIGKILL);
        }
        for child in self.children.values() {
            let _ = waitpid(child.pid, None);
        }
        Ok(())
    }
}

/// Runs in the forked child; never returns.
fn child_main(zygote: &Zygote<'_>, job: Job) -> ! {
    if let Err(step) = build_wall(zygote, &job) {
        // fd 2 is the execution's stderr by now (or the zygote's if moving
        // descriptors failed): either way the operator learns why.
        let _ = writeln!(
            std::io::stderr(),
            "sandbox setup failed: {step}: {}",
            Errno::last()
        );
        // SAFETY: _exit is async-signal-safe and skips all finalisers.
        unsafe { libc::_exit(EXIT_SETUP_FAILED) };
    }
    let answer = zygote
        .runner
        .call1((job.code.as_str(), options(&job)))
        .and_then(|v| v.extract::<String>())
        .unwrap_or_else(|e| {
            serde_json::json!({"status": "crashed", "reason": format!("runner failed: {e}")})
                .to_string()
        });
    // SAFETY: fd 3 is the result pipe installed by build_wall.
    let mut result = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
    let _ = result.write_all(answer.as_bytes());
    // SAFETY: as above; skip Python finalisation and atexit handlers.
    unsafe { libc::_exit(0) }
}

fn options(job: &Job) -> String {
    serde_json::json!({"restricted": job.restricted, "stdin": job.stdin}).to_string()
}

/// Everything between fork and user code. Returns the failing step.
fn build_wall(zygote: &Zygote<'_>, job: &Job) -> Result<(), &'static str> {
    // Move the four pipe ends to 0..=3. First copy them above any fd we may
    // overwrite, so that e.g. a received fd numbered 1 is not clobbered.
    let mut high = [0 as RawFd; FDS_PER_RUN];
    for (slot, fd) in high.iter_mut().zip(&job.fds) {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own.
        *slot = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
        if *slot < 0 {
            return Err("dup");
        }
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto fixed numbers; the copies stay valid until the
        // close_range below, and nothing else in this single-threaded child
        // uses fds 0..=3.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return Err("dup2");
        }
    }
    // SAFETY: closes every descriptor above the four we keep: the control
    // socket, other children's pidfds, the high copies. Our OwnedFds for
    // them are never used again (this process ends with _exit).
    if unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) } < 0 {
        return Err("close_range");
    }
    if let Some(uid) = zygote.drop_uid {
        let id = nix::unistd::Uid::from_raw(uid);
        let gid = nix::unistd::Gid::from_raw(uid);
        nix::unistd::setgroups(&[]).map_err(|_| "setgroups")?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|_| "setresgid")?;
        nix::unistd::setresuid(id, id, id).map_err(|_| "setresuid")?;
    }
    let address_space = zygote.baseline.saturating_add(job.memory_bytes);
    let limits = [
        (Resource::RLIMIT_AS, address_space, address_space),
        (Resource::RLIMIT_CPU, job.cpu_seconds, job.cpu_seconds + 1),
        (Resource::RLIMIT_NPROC, 0, 0),
        (Resource::RLIMIT_FSIZE, 0, 0),
        (Resource::RLIMIT_NOFILE, 8, 8),
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_MEMLOCK, 0, 0),
    ];
    for (resource, soft, hard) in limits {
        setrlimit(resource, soft, hard).map_err(|_| "setrlimit")?;
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err("prctl(PR_SET_DUMPABLE)");
    }
    seccompiler::apply_filter(&zygote.bpf).map_err(|_| "seccomp")?;
    Ok(())
}
