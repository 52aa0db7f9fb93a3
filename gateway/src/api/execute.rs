//! The code-execution service: `POST /api/v1/execute` and the WebSocket
//! `/api/v1/execute/ws` (`execute_ws`, built on this file). Untrusted Python runs in the
//! sandbox's forked, walled-in processes, never in the gateway; WebAssembly
//! runs in wasmtime with fuel, a deadline and memory caps.

use std::time::Duration;

use base64::Engine;
use orrery_sandbox::wasm::WasmExecution;
use orrery_sandbox::{
    ExecutionResult, LimitsRequest, Outcome, PythonRequest, SandboxError, WasmRequest,
};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde::Deserialize;

use crate::api::ApiTags;
use crate::api::params::Text;
use crate::auth::ExecuteKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::execution::{ExecError, Executor};
use crate::state::{AppState, app_state};

/// The language of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3 source in `code`.
    Python,
    /// WebAssembly: WAT text in `code`, a base64 `module`, or an uploaded
    /// `module_id`. WASI preview 1 command modules and preview 2 components.
    Wasm,
}

impl Language {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Wasm => "wasm",
        }
    }
}

/// Lower limits for one execution; each is capped by the server's maximum
/// (`execute.*` settings), never raised.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    /// Wall-clock time, ms.
    pub wall_time_ms: Option<u64>,
    /// CPU time, ms (Python).
    pub cpu_time_ms: Option<u64>,
    /// Memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Output kept (stdout plus stderr), bytes.
    pub output_bytes: Option<u64>,
    /// Source or module size, bytes.
    pub code_bytes: Option<u64>,
    /// WebAssembly fuel.
    pub fuel: Option<u64>,
}

impl From<&LimitsIn> for LimitsRequest {
    fn from(l: &LimitsIn) -> Self {
        LimitsRequest {
            wall_time: l.wall_time_ms.map(Duration::from_millis),
            cpu_time: l.cpu_time_ms.map(Duration::from_millis),
            memory_bytes: l.memory_bytes,
            output_bytes: l.output_bytes,
            code_bytes: l.code_bytes,
            fuel: l.fuel,
            table_elements: None,
        }
    }
}

/// An execution request.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct ExecuteIn {
    // No doc comment: see `KeyOut::kind`.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub language: Language,
    /// Python source, or WAT text for `wasm`.
    pub code: Option<Text>,
    /// An uploaded module's id (`wasm`).
    pub module_id: Option<Text>,
    /// A WebAssembly binary, base64 (`wasm`).
    pub module: Option<Text>,
    /// Standard input.
    pub stdin: Option<Text>,
    /// Arguments (`wasm`; `argv[0]` is `main`).
    pub args: Option<Vec<Text>>,
    /// WebSocket only: keep stdin open for `stdin` messages until
    /// `stdin_close` (Python).
    pub interactive: Option<bool>,
    /// Lower limits for this execution.
    pub limits: Option<LimitsIn>,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Ran to its end.
    Completed,
    /// Raised an exception (Python) or trapped / exited non-zero (WASM).
    Error,
    /// Refused before running (forbidden construct, bad syntax).
    Rejected,
    /// Stopped by a limit; `limit` says which.
    LimitExceeded,
    /// Cancelled by the client.
    Cancelled,
    /// The sandbox process died unexpectedly.
    Crashed,
}

/// An exception.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExecErrorOut {
    /// Exception type, e.g. `ZeroDivisionError`, or `trap`.
    #[oai(rename = "type")]
    pub error_type: String,
    /// Its message.
    pub message: String,
    /// Traceback of the user's own lines.
    pub traceback: Option<String>,
}

/// The limit that stopped an execution.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LimitOut {
    /// `wall_time`, `cpu_time`, `memory`, `output`, `code_size`, `fuel`, `table`.
    pub what: String,
    /// Its value (ms for times, bytes for sizes).
    pub limit: u64,
}

/// The result of an execution.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExecuteOut {
    // No doc comment: see `KeyOut::kind`.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub status: ExecStatus,
    /// Standard output (cut at the output limit).
    pub stdout: String,
    /// Standard error (cut at the output limit).
    pub stderr: String,
    /// Whether output was cut.
    pub output_truncated: bool,
    /// `repr()` of the final expression's value, when the code ends with one.
    pub value: Option<String>,
    /// Exit code (WASM).
    pub exit_code: Option<i32>,
    /// The exception, when `status` is `error`.
    pub error: Option<ExecErrorOut>,
    /// The limit hit, when `status` is `limit_exceeded`.
    pub limit: Option<LimitOut>,
    /// Why it was rejected or crashed.
    pub reason: Option<String>,
    /// Duration, ms.
    pub duration_ms: f64,
}

impl ExecStatus {
    /// The status of an outcome.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Completed => Self::Completed,
            Outcome::Error { .. } => Self::Error,
            Outcome::Rejected { .. } => Self::Rejected,
            Outcome::LimitExceeded(_) => Self::LimitExceeded,
            Outcome::Cancelled => Self::Cancelled,
            Outcome::Crashed { .. } => Self::Crashed,
        }
    }
}

impl From<ExecutionResult> for ExecuteOut {
    fn from(r: ExecutionResult) -> Self {
        let status = ExecStatus::of(&r.outcome);
        let (error, limit, reason) = match r.outcome {
            Outcome::Error {
                error_type,
                message,
                traceback,
            } => (
                Some(ExecErrorOut {
                    error_type,
                    message,
                    traceback,
                }),
                None,
                None,
            ),
            Outcome::LimitExceeded(hit) => (
                None,
                Some(LimitOut {
                    what: hit.what.as_str().to_owned(),
                    limit: hit.limit,
                }),
                None,
            ),
            Outcome::Rejected { reason } | Outcome::Crashed { reason } => {
                (None, None, Some(reason))
            }
            Outcome::Completed | Outcome::Cancelled => (None, None, None),
        };
        Self {
            status,
            stdout: r.stdout,
            stderr: r.stderr,
            output_truncated: r.output_truncated,
            value: r.value,
            exit_code: r.exit_code,
            error,
            limit,
            reason,
            duration_ms: r.duration.as_secs_f64() * 1000.0,
        }
    }
}

/// The executor, or 404 when the service is switched off.
pub fn executor(state: &AppState) -> ApiResult<&Executor> {
    state.exec.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ExecutionDisabled,
            "the code-execution service is switched off (execute.enabled = false)",
        )
    })
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::ModuleStore(_) => ApiError::internal(&e),
            ExecError::PythonUnavailable(why) => {
                // Why it did not start (paths, errno) stays in the log.
                tracing::error!(error = %why, "python runtime unavailable");
                ApiError::unavailable(
                    ErrorCode::PythonUnavailable,
                    "the Python sandbox is unavailable; retry later",
                    30,
                )
            }
            ExecError::RateLimited {
                per_minute,
                retry_after,
            } => ApiError::unavailable(
                ErrorCode::RateLimited,
                format!(
                    "this key may run {per_minute} executions a minute (execute.rate_per_minute)"
                ),
                retry_after,
            ),
            ExecError::Busy => ApiError::unavailable(
                ErrorCode::Busy,
                "all execution slots and the queue are full; retry later",
                1,
            ),
            ExecError::ShuttingDown => {
                ApiError::unavailable(ErrorCode::ShuttingDown, "shutting down", 1)
            }
        }
    }
}

/// Maps sandbox failures to API errors.
pub fn sandbox_error(err: SandboxError) -> ApiError {
    match err {
        SandboxError::InvalidModule(why) => ApiError::bad_request(ErrorCode::InvalidModule, why),
        SandboxError::ModuleNotFound(id) => ApiError::not_found(&format!("module {id}")),
        SandboxError::ModuleTooLarge { size, limit } => ApiError::too_large(format!(
            "module is {size} bytes, more than the limit of {limit} (execute.wasm_module_bytes)"
        )),
        SandboxError::StoreFull { limit } => ApiError::new(
            ErrorCode::ModuleStoreFull,
            format!(
                "the project's modules already use {limit} bytes (execute.wasm_store_bytes); delete some"
            ),
        ),
        SandboxError::Zygote(_) | SandboxError::ZygoteDied => {
            tracing::error!(error = %err, "python sandbox unavailable");
            ApiError::unavailable(
                ErrorCode::PythonUnavailable,
                "the Python sandbox is restarting; retry later",
                5,
            )
        }
        other => ApiError::internal(&other),
    }
}

/// Checks that the fields fit the language.
///
/// # Errors
/// 400 `invalid_request` naming the field.
pub fn validate(input: &ExecuteIn) -> ApiResult<()> {
    let bad = |field: &str, why: &str| {
        Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("`{field}` {why}"),
        ))
    };
    match input.language {
        Language::Python => {
            if input.code.is_none() {
                return bad("code", "is required for python");
            }
            if input.module.is_some() || input.module_id.is_some() {
                return bad("module", "is only for wasm");
            }
            if input.args.as_ref().is_some_and(|a| !a.is_empty()) {
                return bad("args", "is only for wasm");
            }
        }
        Language::Wasm => {
            let given = [
                input.code.is_some(),
                input.module.is_some(),
                input.module_id.is_some(),
            ]
            .iter()
            .filter(|g| **g)
            .count();
            if given != 1 {
                return bad(
                    "code",
                    "for wasm give exactly one of `code` (WAT), `module` (base64) or `module_id`",
                );
            }
        }
    }
    Ok(())
}

/// The Python request for an input.
pub fn python_request(input: &ExecuteIn) -> PythonRequest {
    PythonRequest {
        code: input.code.clone().map(|t| t.0).unwrap_or_default(),
        stdin: input.stdin.clone().map(|t| t.0),
        interactive: input.interactive.unwrap_or(false),
        limits: input.limits.as_ref().map(Into::into).unwrap_or_default(),
    }
}

/// Starts a WASM input; the handle streams its output.
///
/// # Errors
/// 400 for a bad module, 404 for an unknown module id.
pub async fn start_wasm(
    state: &AppState,
    project: uuid::Uuid,
    input: &ExecuteIn,
) -> ApiResult<WasmExecution> {
    let ex = executor(state)?;
    let request = WasmRequest {
        args: input
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.0)
            .collect(),
        stdin: input
            .stdin
            .clone()
            .map(|t| t.0)
            .unwrap_or_default()
            .into_bytes(),
        limits: input.limits.as_ref().map(Into::into).unwrap_or_default(),
    };
    if let Some(id) = &input.module_id {
        let store = ex.modules(project)?;
        return store.start(&id.0, request).await.map_err(sandbox_error);
    }
    let bytes = match (&input.code, &input.module) {
        (Some(wat), _) => wat.0.clone().into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.0.trim())
            .map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::InvalidModule,
                    format!("`module` is not base64: {e}"),
                )
            })?,
        (None, None) => Vec::new(),
    };
    ex.wasm.start(bytes, request).await.map_err(sandbox_error)
}

/// Code execution.
pub struct ExecuteApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Execute")]
impl ExecuteApi {
    /// Run code
    ///
    /// Runs Python or WebAssembly in the sandbox and answers its output,
    /// final value, error and the limit hit, if any. A limit hit is an
    /// ordinary answer (`status: limit_exceeded`), not an error. Needs a
    /// secret key or an execute key; rate-limited per key; 503 with
    /// `Retry-After` when every slot and the queue are busy.
    #[oai(path = "/execute", method = "post", operation_id = "execute")]
    async fn execute(
        &self,
        req: &Request,
        auth: ExecuteKey,
        body: Json<ExecuteIn>,
    ) -> ApiResult<Json<ExecuteOut>> {
        let state = app_state(req);
        let ex = executor(state)?;
        let input = body.0;
        validate(&input)?;
        ex.check_rate(auth.0.key.id)?;
        let _slot = ex.slot().await?;
        let result = match input.language {
            Language::Python => ex
                .python()?
                .execute(python_request(&input))
                .await
                .map_err(sandbox_error)?,
            Language::Wasm => {
                start_wasm(state, auth.0.project_id(), &input)
                    .await?
                    .wait()
                    .await
            }
        };
        ex.metrics.record(input.language.label(), &result);
        tracing::debug!(
            language = input.language.label(),
            outcome = result.outcome.name(),
            "executed"
        );
        Ok(Json(result.into()))
    }
}

#[cfg(test)]
mod tests {
    use orrery_sandbox::{Limit, LimitExceeded, Outcome};
    use poem_openapi::types::ToJSON;

    use super::ExecStatus;

    /// The API's `status` is the outcome's one name (`Outcome::name`, also
    /// the metrics' and logs' label): one spelling per outcome.
    #[test]
    fn the_api_status_is_the_outcome_name() {
        let outcomes = [
            Outcome::Completed,
            Outcome::Error {
                error_type: "E".into(),
                message: "m".into(),
                traceback: None,
            },
            Outcome::Rejected { reason: "r".into() },
            Outcome::LimitExceeded(LimitExceeded {
                what: Limit::WallTime,
                limit: 1,
            }),
            Outcome::Cancelled,
            Outcome::Crashed { reason: "r".into() },
        ];
        for outcome in outcomes {
            let status = ExecStatus::of(&outcome);
            assert_eq!(
                status.to_json(),
                Some(serde_json::Value::from(outcome.name())),
                "{outcome:?}"
            );
        }
    }
}
