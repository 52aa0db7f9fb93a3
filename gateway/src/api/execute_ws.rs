//! `GET /api/v1/execute/ws`: run code and stream its output.
//!
//! The protocol, one JSON object per text message:
//!
//! client → server
//! - `{"type": "execute", "language": "python", "code": "...", "stdin": "...",
//!   "interactive": true, "limits": {...}}` (the fields of `POST /execute`)
//! - `{"type": "stdin", "data": "..."}`: more input (interactive Python)
//! - `{"type": "stdin_close"}`: end of input
//! - `{"type": "cancel"}`: stop the running execution
//!
//! server → client
//! - `{"type": "started"}`
//! - `{"type": "stdout", "data": "..."}` / `{"type": "stderr", "data": "..."}`,
//!   as the program writes
//! - `{"type": "result", ...}`: the fields of the `POST /execute` answer
//! - `{"type": "error", "code": "...", "message": "..."}`: a malformed
//!   message, a refused execution (rate limit, busy) or a message that does
//!   not fit now; the connection stays open.
//!
//! One connection runs any number of executions, one at a time.

use futures_util::{SinkExt, StreamExt};
use orrery_sandbox::{Running, Stream};
use poem::Request;
use poem::web::websocket::{BoxWebSocketUpgraded, Message, WebSocket, WebSocketStream};
use poem_openapi::{OpenApi, SecurityScheme};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiTags;
use crate::api::execute::{
    ExecuteIn, ExecuteOut, Language, executor, python_request, sandbox_error, start_wasm, validate,
};
use crate::auth::{ExecuteKey, ExecuteKeyQuery, Principal};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, app_state};

/// The WebSocket's credential: the header, or `api_key` in the query string
/// for browsers (which cannot set headers on a WebSocket).
#[derive(SecurityScheme)]
pub enum WsAuth {
    /// `X-API-Key` header.
    Header(ExecuteKey),
    /// `api_key` query parameter.
    Query(ExecuteKeyQuery),
}

/// Code execution over a WebSocket.
pub struct ExecuteWsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Execute")]
impl ExecuteWsApi {
    /// Run code, streaming
    ///
    /// A WebSocket: send `{"type": "execute", ...}` with the fields of
    /// `POST /execute`; receive `stdout` / `stderr` chunks as the program
    /// writes them, then one `result`. Also `stdin`, `stdin_close` and
    /// `cancel` messages. The protocol is described in the README.
    #[oai(path = "/execute/ws", method = "get", operation_id = "execute_ws")]
    async fn ws(
        &self,
        req: &Request,
        auth: WsAuth,
        ws: WebSocket,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let state = app_state(req).clone();
        executor(&state)?;
        let principal = match auth {
            WsAuth::Header(k) => k.0,
            WsAuth::Query(k) => k.0,
        };
        Ok(ws
            .on_upgrade(move |socket| session(state, principal, socket))
            .boxed())
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg {
    Execute(Box<ExecuteIn>),
    Stdin { data: String },
    StdinClose,
    Cancel,
}

fn error_msg(code: &str, message: impl Into<String>) -> Message {
    Message::Text(json!({"type": "error", "code": code, "message": message.into()}).to_string())
}

fn api_error_msg(e: &ApiError) -> Message {
    let mut v = json!({"type": "error", "code": e.code, "message": e.message});
    if let Some(secs) = e.retry_after {
        v["retry_after"] = json!(secs);
    }
    Message::Text(v.to_string())
}

fn result_msg(out: ExecuteOut) -> Message {
    let mut v = serde_json::to_value(ResultWire::from(out)).unwrap_or(Value::Null);
    v["type"] = json!("result");
    Message::Text(v.to_string())
}

/// Serialisable copy of [`ExecuteOut`] (poem-openapi objects are not serde).
#[derive(serde::Serialize)]
struct ResultWire {
    status: Value,
    stdout: String,
    stderr: String,
    output_truncated: bool,
    value: Option<String>,
    exit_code: Option<i32>,
    error: Option<Value>,
    limit: Option<Value>,
    reason: Option<String>,
    duration_ms: f64,
}

impl From<ExecuteOut> for ResultWire {
    fn from(o: ExecuteOut) -> Self {
        use poem_openapi::types::ToJSON;
        Self {
            status: o.status.to_json().unwrap_or(Value::Null),
            stdout: o.stdout,
            stderr: o.stderr,
            output_truncated: o.output_truncated,
            value: o.value,
            exit_code: o.exit_code,
            error: o.error.and_then(|e| e.to_json()),
            limit: o.limit.and_then(|l| l.to_json()),
            reason: o.reason,
            duration_ms: o.duration_ms,
        }
    }
}

fn parse(msg: &Message) -> Option<Result<ClientMsg, String>> {
    match msg {
        Message::Text(t) => Some(serde_json::from_str(t).map_err(|e| e.to_string())),
        Message::Binary(b) => Some(serde_json::from_slice(b).map_err(|e| e.to_string())),
        _ => None,
    }
}

/// Serves one WebSocket connection.
pub async fn session(state: AppState, principal: Principal, socket: WebSocketStream) {
    let (mut tx, mut rx) = socket.split();
    // Between executions the socket is idle, like a keep-alive connection:
    // closed after `http.idle_timeout_ms` (an execution has its own limits).
    let idle = std::time::Duration::from_millis(state.config.http.idle_timeout_ms);
    loop {
        let msg = match tokio::time::timeout(idle, rx.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => break,
            Err(_) => {
                let reason = format!("idle for {} ms (http.idle_timeout_ms)", idle.as_millis());
                let _ = tx
                    .send(Message::Close(Some((
                        poem::web::websocket::CloseCode::Normal,
                        reason,
                    ))))
                    .await;
                break;
            }
        };
        if matches!(msg, Message::Close(_)) {
            break;
        }
        let input = match parse(&msg) {
            None => continue,
            Some(Err(e)) => {
                let _ = tx
                    .send(error_msg(
                        "invalid_message",
                        format!("not a valid message: {e}"),
                    ))
                    .await;
                continue;
            }
            Some(Ok(ClientMsg::Execute(input))) => *input,
            Some(Ok(_)) => {
                let _ = tx
                    .send(error_msg(
                        "nothing_running",
                        "send an `execute` message first",
                    ))
                    .await;
                continue;
            }
        };
        match run_one(&state, &principal, input, &mut tx, &mut rx).await {
            Ok(true) => {}
            Ok(false) => return, // the client went away
            Err(e) => {
                if tx.send(api_error_msg(&e)).await.is_err() {
                    return;
                }
            }
        }
    }
}

type Tx = futures_util::stream::SplitSink<WebSocketStream, Message>;
type Rx = futures_util::stream::SplitStream<WebSocketStream>;

/// Runs one execution; `Ok(false)` when the client disconnected.
async fn run_one(
    state: &AppState,
    principal: &Principal,
    input: ExecuteIn,
    tx: &mut Tx,
    rx: &mut Rx,
) -> Result<bool, ApiError> {
    let ex = executor(state)?;
    validate(&input)?;
    ex.check_rate(principal.key.id)?;
    let _slot = ex.slot().await?;
    if tx
        .send(Message::Text(json!({"type": "started"}).to_string()))
        .await
        .is_err()
    {
        return Ok(false);
    }
    let mut exec = match input.language {
        Language::Python => Running::Python(
            ex.python()?
                .spawn(python_request(&input))
                .await
                .map_err(sandbox_error)?,
        ),
        Language::Wasm => Running::Wasm(start_wasm(state, principal.project_id(), &input).await?),
    };
    let mut connected = true;
    loop {
        enum Event {
            Output(Option<orrery_sandbox::OutputChunk>),
            Client(Option<Message>),
        }
        let event = tokio::select! {
            chunk = exec.next_output() => Event::Output(chunk),
            msg = rx.next(), if connected => Event::Client(msg.and_then(Result::ok)),
        };
        match event {
            Event::Output(None) => break,
            Event::Output(Some(chunk)) => {
                let stream = match chunk.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let text = json!({"type": stream, "data": chunk.data}).to_string();
                if tx.send(Message::Text(text)).await.is_err() {
                    exec.cancel();
                    connected = false;
                }
            }
            Event::Client(None) | Event::Client(Some(Message::Close(_))) => {
                exec.cancel();
                connected = false;
            }
            Event::Client(Some(msg)) => match parse(&msg) {
                None => {}
                Some(Ok(ClientMsg::Stdin { data })) if !exec.write_stdin(&data) => {
                    let _ = tx
                        .send(error_msg(
                            "stdin_closed",
                            "stdin is closed (send `interactive: true` to keep it open)",
                        ))
                        .await;
                }
                Some(Ok(ClientMsg::Stdin { .. })) => {}
                Some(Ok(ClientMsg::StdinClose)) => exec.close_stdin(),
                Some(Ok(ClientMsg::Cancel)) => exec.cancel(),
                Some(Ok(ClientMsg::Execute(_))) => {
                    let _ = tx
                        .send(error_msg("busy", "an execution is running on this connection; wait for its result or cancel it"))
                        .await;
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(error_msg(
                            "invalid_message",
                            format!("not a valid message: {e}"),
                        ))
                        .await;
                }
            },
        }
    }
    let result = exec.wait().await;
    ex.metrics.record(input.language.label(), &result);
    if !connected {
        return Ok(false);
    }
    Ok(tx.send(result_msg(result.into())).await.is_ok())
}
