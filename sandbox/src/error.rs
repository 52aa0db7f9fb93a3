//! Errors of the sandbox itself (not of the code it runs: those are
//! ordinary [`crate::Outcome`]s).

use std::io;

/// Something went wrong running the sandbox, not the untrusted code.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The Python zygote could not be started or answered badly.
    #[error("python zygote failed: {0}")]
    Zygote(String),
    /// The zygote process died; the runtime starts a new one on next use.
    #[error("python zygote exited unexpectedly")]
    ZygoteDied,
    /// An operating system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The WASM engine could not be configured.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// A WASM module or component was rejected (bad bytes, no entry point...).
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// No stored module has this id.
    #[error("module {0} not found")]
    ModuleNotFound(String),
    /// The module is larger than allowed.
    #[error("module is {size} bytes, the limit is {limit}")]
    ModuleTooLarge {
        /// Size of the upload.
        size: u64,
        /// Configured maximum.
        limit: u64,
    },
    /// The module store is full.
    #[error("module store is full ({limit} bytes)")]
    StoreFull {
        /// Configured maximum of the whole store.
        limit: u64,
    },
}

impl SandboxError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
        move |source| SandboxError::Io { context, source }
    }
}

impl From<nix::Error> for SandboxError {
    fn from(e: nix::Error) -> Self {
        SandboxError::Io {
            context: "system call",
            source: io::Error::from(e),
        }
    }
}
