//! Namespaces and an empty root for the zygote (and so for every child).
//!
//! Every layer is best-effort: what could not be built is recorded in
//! [`Isolation::notes`] and the zygote goes on, because the rlimits and the
//! seccomp filter (applied per child, never optional) already deny files,
//! sockets and processes. Namespaces add: no network interface at all, no
//! view of the host's processes, a root directory with nothing in it.

use std::os::fd::RawFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, chdir, chroot, getegid, geteuid};

use super::protocol::Isolation;

/// The uid/gid children run as when the zygote is root.
const NOBODY: u32 = 65534;

/// Enters new namespaces and an empty root. With a new PID namespace this
/// forks (via `fork`): the original process waits for the new one, closes
/// its copy of `control_fd` and exits with its status; only the new
/// process (PID 1 of the namespace) returns.
pub(crate) fn enter(
    enabled: bool,
    empty_dir: &Path,
    control_fd: RawFd,
    fork: &dyn Fn() -> Result<libc::pid_t, String>,
) -> Result<Isolation, String> {
    let root = geteuid().is_root();
    let mut iso = Isolation {
        seccomp: true,
        uid: root.then_some(NOBODY),
        ..Isolation::default()
    };
    if !enabled {
        iso.notes
            .push("namespaces disabled by configuration".into());
        return Ok(iso);
    }
    let base = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWPID;
    // As root we need no user namespace (and children drop to `nobody`);
    // otherwise a user namespace is what grants the right to make the rest.
    let attempts: &[CloneFlags] = if root {
        &[base, base.union(CloneFlags::CLONE_NEWUSER)]
    } else {
        &[base.union(CloneFlags::CLONE_NEWUSER)]
    };
    let mut entered = None;
    for &flags in attempts {
        match unshare(flags) {
            Ok(()) => {
                entered = Some(flags);
                break;
            }
            Err(e) => iso.notes.push(format!("unshare({flags:?}): {e}")),
        }
    }
    let Some(flags) = entered else {
        iso.notes
            .push("no namespaces: the wall is rlimits + seccomp + uid".into());
        return Ok(iso);
    };
    if flags.contains(CloneFlags::CLONE_NEWUSER) {
        map_ids().map_err(|e| format!("user namespace id maps: {e}"))?;
        iso.user_namespace = true;
        // Only our own id is mapped inside: there is no `nobody` to become.
        iso.uid = None;
    }
    iso.network_namespace = true;
    iso.mount_namespace = true;
    match empty_root(empty_dir) {
        Ok(()) => iso.empty_root = true,
        Err(e) => iso.notes.push(format!("empty root: {e}")),
    }
    // The next fork creates PID 1 of the new PID namespace.
    let pid = fork()?;
    if pid > 0 {
        nix::unistd::close(control_fd).ok();
        let code = match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            _ => 1,
        };
        std::process::exit(code);
    }
    // If the outer process is killed (the runtime dropped), PID 1 dies and
    // the kernel kills every execution in the namespace.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("pdeathsig: {e}"))?;
    iso.pid_namespace = true;
    Ok(iso)
}

fn map_ids() -> std::io::Result<()> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// Mounts an empty read-only tmpfs on `dir` (private to our mount
/// namespace) and makes it the root directory.
fn empty_root(dir: &Path) -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some("size=4k,mode=0555"),
    )?;
    chdir(dir)?;
    chroot(".")?;
    chdir("/")
}
