//! The conversation between a [`super::PythonRuntime`] and its zygote, over
//! one Unix stream socket: length-prefixed JSON frames; a `Run` frame carries
//! the four pipe ends of the execution (stdin, stdout, stderr, result) as
//! `SCM_RIGHTS`, attached to its first byte.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Deserialize, Serialize};

/// Number of file descriptors sent with each `Run`.
pub(crate) const FDS_PER_RUN: usize = 4;
/// Largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

/// First frame, runtime -> zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub allowed_modules: Vec<String>,
    pub preload: Vec<String>,
    pub namespaces: bool,
}

/// What the OS wall of this zygote is made of, as it could be built on
/// this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// Executions run in their own user namespace.
    pub user_namespace: bool,
    /// ... in an empty network namespace (no interface but a down loopback).
    pub network_namespace: bool,
    /// ... in a private mount namespace.
    pub mount_namespace: bool,
    /// ... in a private PID namespace (they cannot see or signal the host's
    /// processes).
    pub pid_namespace: bool,
    /// ... with an empty, read-only root directory (chroot).
    pub empty_root: bool,
    /// ... as this unprivileged uid (when the zygote started as root).
    pub uid: Option<u32>,
    /// Always true: a child that cannot install its seccomp filter exits
    /// before running anything.
    pub seccomp: bool,
    /// Why a layer is missing.
    pub notes: Vec<String>,
}

/// Frames runtime -> zygote (after `Hello`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToZygote {
    Run {
        id: u64,
        code: String,
        restricted: bool,
        stdin: bool,
        memory_bytes: u64,
        cpu_seconds: u64,
    },
    Kill {
        id: u64,
    },
}

/// Frames zygote -> runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FromZygote {
    Ready {
        isolation: Isolation,
    },
    Exited {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Failed {
        id: u64,
        message: String,
    },
}

pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol messages always serialise");
    let len = u32::try_from(body.len()).expect("frames are smaller than 4 GiB");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Pops one complete frame from the front of `buf`, if there is one.
pub(crate) fn take_frame<T: for<'de> Deserialize<'de>>(buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[4..4 + len]).map_err(io::Error::other);
    buf.drain(..4 + len);
    msg.map(Some)
}

/// Blocking read of one frame (used by the zygote for `Hello`).
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(io::Error::other)
}

/// Blocking write of one frame.
pub(crate) fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg))
}

/// Sends as much of `frame` as the socket takes, with `fds` attached to the
/// first byte; returns the number of bytes sent. Non-blocking sockets give
/// `WouldBlock` before anything was sent.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    frame: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(frame)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut wire = encode(&ToZygote::Kill { id: 7 });
        wire.extend(encode(&ToZygote::Kill { id: 8 }));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.push(byte);
            while let Some(ToZygote::Kill { id }) = take_frame::<ToZygote>(&mut buf).unwrap() {
                got.push(id);
            }
        }
        assert_eq!(got, vec![7, 8]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = u32::MAX.to_le_bytes().to_vec();
        assert!(take_frame::<ToZygote>(&mut buf).is_err());
    }
}
