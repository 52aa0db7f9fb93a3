//! The seccomp filter a Python child installs just before running user code.
//!
//! It is an allowlist: what an interpreter needs to compute, allocate,
//! print and exit. Everything else (open/openat, socket/connect, clone/
//! fork/vfork/execve, kill, ptrace, mount, ioctl, prctl...) fails with
//! `EPERM`, which Python turns into an ordinary `PermissionError`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::SandboxError;

/// System calls allowed without conditions.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Builds the BPF program (once, in the zygote; each child applies it).
///
/// # Errors
/// Only if this architecture is unknown to `seccompiler`.
pub(crate) fn program() -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let empty_path_only = |arg: u8| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        // fstat() is newfstatat(fd, "", AT_EMPTY_PATH) in recent glibc:
        // allow that form, never a lookup by path.
        let flag = libc::AT_EMPTY_PATH as u64;
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?])
    };
    let err = |e: seccompiler::BackendError| SandboxError::Zygote(format!("seccomp rule: {e}"));
    rules.insert(libc::SYS_newfstatat, empty_path_only(3).map_err(err)?);
    rules.insert(libc::SYS_statx, empty_path_only(2).map_err(err)?);
    // fcntl only to read/set flags on descriptors we already hold.
    let fcntl = [libc::F_GETFD, libc::F_GETFL, libc::F_SETFD, libc::F_SETFL]
        .into_iter()
        .map(|cmd| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, cmd as u64)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    rules.insert(libc::SYS_fcntl, fcntl);

    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| SandboxError::Zygote(format!("seccomp: {e}")))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(err)?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))
}
