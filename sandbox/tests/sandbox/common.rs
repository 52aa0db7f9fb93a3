//! Shared helpers for the sandbox integration tests.

use std::path::PathBuf;

use orrery_sandbox::python::{
    PythonConfig, PythonRequest, PythonRuntime, ZYGOTE_SUBCOMMAND, ZygoteCommand,
};
use orrery_sandbox::{ExecutionResult, Outcome};

/// The crate's own host binary, built by cargo for integration tests.
pub fn zygote() -> ZygoteCommand {
    ZygoteCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_orrery-sandbox-host")),
        args: vec![ZYGOTE_SUBCOMMAND.into()],
    }
}

pub fn config() -> PythonConfig {
    PythonConfig::new(zygote())
}

pub async fn python() -> PythonRuntime {
    PythonRuntime::start(config()).await.expect("zygote starts")
}

pub async fn run(rt: &PythonRuntime, code: &str) -> ExecutionResult {
    rt.execute(PythonRequest::new(code))
        .await
        .expect("sandbox works")
}

/// Asserts the code completed and returns its stdout.
pub fn ok(result: &ExecutionResult) -> &str {
    assert_eq!(
        result.outcome,
        Outcome::Completed,
        "unexpected result: {result:#?}"
    );
    &result.stdout
}

/// Asserts the sandbox refused the code (wall 1) and returns the reason.
pub fn rejected(result: &ExecutionResult) -> &str {
    match &result.outcome {
        Outcome::Rejected { reason } => reason,
        other => panic!("expected a rejection, got {other:?}\n{result:#?}"),
    }
}

/// Asserts the code raised and returns (type, message).
pub fn error(result: &ExecutionResult) -> (&str, &str) {
    match &result.outcome {
        Outcome::Error {
            error_type,
            message,
            ..
        } => (error_type, message),
        other => panic!("expected an exception, got {other:?}\n{result:#?}"),
    }
}

/// Asserts a limit stopped the code and returns which.
pub fn limit(result: &ExecutionResult) -> orrery_sandbox::Limit {
    result
        .limit_hit()
        .unwrap_or_else(|| panic!("expected a limit hit, got {result:#?}"))
        .what
}
