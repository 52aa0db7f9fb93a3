//! Shared helpers for the sandbox integration tests.
#![allow(dead_code)]

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
