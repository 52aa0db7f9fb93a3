//! The one error type of the API: a stable machine-readable `code`, a human
//! `message`, an HTTP status. Every error response is JSON
//! `{"code": "...", "message": "..."}` and is documented in the spec.

use poem::http::{HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};
use tracing::error;

/// The body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_key`, `queue_full`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// Declares [`ErrorCode`]: each code once, with its status and meaning.
macro_rules! error_codes {
    ($($variant:ident = $status:literal $code:literal $meaning:literal,)+) => {
        /// Every error code of the API, each with the one status it is sent
        /// with. The OpenAPI document lists them (the `ErrorBody.code` enum
        /// and each status's description), and a test checks README's
        /// error table against that list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)+
        }

        impl ErrorCode {
            /// All codes, in the order of the table.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as sent: `invalid_key`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)+ }
            }

            /// The HTTP status it is sent with.
            pub fn status(self) -> u16 {
                match self { $(Self::$variant => $status,)+ }
            }

            /// What it means, for the documentation.
            pub fn meaning(self) -> &'static str {
                match self { $(Self::$variant => $meaning,)+ }
            }
        }
    };
}

error_codes! {
    BadRequest = 400 "bad_request" "A request the HTTP layer refused; the message says why.",
    InvalidJson = 400 "invalid_json" "The ingestion body is not JSON.",
    InvalidEvent = 400 "invalid_event" "The one event sent is invalid; the message names the field.",
    InvalidBatch = 400 "invalid_batch" "`batch` is not an array of events.",
    InvalidGzip = 400 "invalid_gzip" "A gzip body that does not decompress.",
    InvalidCursor = 400 "invalid_cursor" "A `cursor` this API did not hand out for this list.",
    InvalidParameter = 400 "invalid_parameter" "A query or path parameter outside what the document allows; the message names it.",
    InvalidBody = 400 "invalid_body" "A body outside what the document allows; the message names the field.",
    DuplicateKey = 400 "duplicate_key" "A body with one key twice in one object.",
    InvalidKeyKind = 400 "invalid_key_kind" "Admin rights asked for a key that is not a secret key.",
    InvalidPipeline = 400 "invalid_pipeline" "A pipeline the registry refuses; the message names the stage and field.",
    InvalidRequest = 400 "invalid_request" "An execution request whose fields do not fit its language.",
    InvalidModule = 400 "invalid_module" "Bytes that are not a WebAssembly program with a WASI entry point.",
    InvalidPlugin = 400 "invalid_plugin" "A plugin that fails its checks (name, limits, code, config, sample event); the message names the problem.",
    InvalidQuery = 400 "invalid_query" "A SQL query the endpoint refuses, or the database cannot run, or whose answer is too large; the message says why.",
    QueryTimeout = 400 "query_timeout" "A SQL query that ran past the time limit and was stopped.",
    MalformedRequest = 400 "malformed_request" "Not valid HTTP/1.1.",
    MalformedBody = 400 "malformed_body" "A body with broken framing (chunked encoding or length).",
    InvalidHeader = 400 "invalid_header" "A header that must appear once appears twice (`Host`).",
    MissingKey = 401 "missing_key" "No key in `X-API-Key` (or the body, or the query string where allowed).",
    InvalidKey = 401 "invalid_key" "An unknown key.",
    KeyRevoked = 401 "key_revoked" "A revoked key.",
    KeyExpired = 401 "key_expired" "A key past the grace period of its rotation.",
    Unauthorized = 401 "unauthorized" "Missing or invalid credentials.",
    InvalidCredentials = 401 "invalid_credentials" "Wrong e-mail or password (the same answer for an unknown e-mail).",
    InvalidToken = 401 "invalid_token" "An access or refresh token that is malformed, forged, expired or of the wrong kind.",
    TokenRevoked = 401 "token_revoked" "A token of a login that ended (logout, reuse of a refresh token, deactivation, password change).",
    RefreshTokenReused = 401 "refresh_token_reused" "A refresh token used twice: its whole login is revoked, as someone else may hold a copy.",
    InvalidTicket = 401 "invalid_ticket" "A WebSocket ticket that is unknown, used or expired.",
    CsrfFailed = 403 "csrf_failed" "A write authenticated by cookie without the `X-CSRF-Token` header of its login.",
    AccountDeactivated = 403 "account_deactivated" "The account may not log in.",
    RegistrationClosed = 403 "registration_closed" "Registration is by administrators (`auth.open_registration` is off).",
    Forbidden = 403 "forbidden" "The key or account does not allow this (its kind, its rights, its role).",
    NotFound = 404 "not_found" "No such route or resource (also a project the key or account may not see).",
    ExecutionDisabled = 404 "execution_disabled" "The code-execution service is switched off.",
    MethodNotAllowed = 405 "method_not_allowed" "The path exists, not with this method (`Allow` lists them).",
    BodyTimeout = 408 "body_timeout" "The body did not arrive within `http.body_read_timeout_ms`.",
    LastAdminKey = 409 "last_admin_key" "The change would leave the instance without a lasting admin key.",
    LastAdmin = 409 "last_admin" "The change would leave no active administrator account.",
    Conflict = 409 "conflict" "The change conflicts with what exists (a taken e-mail, a first administrator already registered).",
    QueryStagesApply = 409 "query_stages_apply" "The project has query stages, which statistics and SQL cannot apply: the question would show stored values they may hide (properties, distinct ids, raw rows).",
    ProjectInUse = 409 "project_in_use" "Deleting the project of the key in use.",
    PluginExists = 409 "plugin_exists" "A plugin of that name exists (uploaded, built in, or a file of the plugin directory).",
    PluginInUse = 409 "plugin_in_use" "Deleting a plugin that pipelines name; the message lists the projects.",
    PayloadTooLarge = 413 "payload_too_large" "A body or module over its limit.",
    BatchTooLarge = 413 "batch_too_large" "A batch over `ingest.max_batch_events`.",
    UriTooLong = 414 "uri_too_long" "A request target over `http.max_uri_bytes`.",
    UnsupportedMediaType = 415 "unsupported_media_type" "A content type this endpoint does not take.",
    UnsupportedEncoding = 415 "unsupported_encoding" "A content encoding other than gzip.",
    RateLimited = 429 "rate_limited" "Over a rate limit (`rate_limit.*`, `execute.rate_per_minute`); `Retry-After` says when to retry.",
    LoginLocked = 429 "login_locked" "Too many failed logins for this account or from this address; `Retry-After` says when to retry.",
    HeadersTooLarge = 431 "headers_too_large" "Request line and headers over `http.max_header_bytes`.",
    ClientAborted = 499 "client_aborted" "The client went away before its body was complete (counted; nobody reads the answer).",
    Internal = 500 "internal" "A fault of the server; the log has the detail, under the request id.",
    QueueFull = 503 "queue_full" "The write queue is full; nothing was stored. `Retry-After`.",
    ShuttingDown = 503 "shutting_down" "The server is stopping; nothing was stored. `Retry-After`.",
    DatabaseUnavailable = 503 "database_unavailable" "The database does not answer; nothing was stored. `Retry-After`.",
    TooManyConnections = 503 "too_many_connections" "Over `http.max_connections` or `http.max_connections_per_ip`.",
    Unavailable = 503 "unavailable" "The service cannot answer now. `Retry-After`.",
    AuthUnavailable = 503 "auth_unavailable" "Whether a token is revoked cannot be checked (the database does not answer): refused, never let through. `Retry-After`.",
    PythonUnavailable = 503 "python_unavailable" "The Python sandbox is restarting. `Retry-After`.",
    Busy = 503 "busy" "Every execution slot and the queue are taken. `Retry-After`.",
    ModuleStoreFull = 507 "module_store_full" "The project's modules use `execute.wasm_store_bytes`; delete some.",
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An API error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// HTTP status: the code's, except for an error poem raised with a
    /// status no code has.
    pub status: StatusCode,
    /// Stable code.
    pub code: ErrorCode,
    /// Human message.
    pub message: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given code (and so its status) and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 400 (the code says which).
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert_eq!(code.status(), 400, "{code:?}");
        Self::new(code, message)
    }

    /// A 401: no usable credentials.
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert_eq!(code.status(), 401, "{code:?}");
        Self::new(code, message)
    }

    /// 403: the credentials do not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404 for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 413 with a message.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    /// A 503 (or 429) with `Retry-After`.
    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(code, message)
        }
    }

    /// 500. The cause is logged here, once; the client sees no detail.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    /// The same error with another code (and its status).
    pub fn with_code(self, code: ErrorCode) -> Self {
        Self {
            retry_after: self.retry_after,
            ..Self::new(code, self.message)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
        }
    }
}

impl From<orrery_core::store::StoreError> for ApiError {
    fn from(err: orrery_core::store::StoreError) -> Self {
        use orrery_core::store::StoreError;
        match err {
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::Conflict(message) => Self::new(ErrorCode::Conflict, message),
            StoreError::LastAdminKey => Self::new(
                ErrorCode::LastAdminKey,
                "refused: this would leave the instance without an admin key that keeps \
                 working (not revoked, not expiring after a rotation); create another admin \
                 key first",
            ),
            StoreError::Db(sea_orm::DbErr::ConnectionAcquire(e)) => {
                // The pool's message stays in the log.
                error!(error = %e, "database unavailable");
                Self::unavailable(
                    ErrorCode::DatabaseUnavailable,
                    "the database is unavailable; retry later",
                    1,
                )
            }
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_json_string();
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("application/json; charset=utf-8")
            .body(body);
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.clone().into_response()
    }
}

/// What each error status means, before its codes.
const STATUS_TEXT: &[(u16, &str)] = &[
    (
        400,
        "Bad request: the `code` and `message` name what is wrong.",
    ),
    (401, "Missing, unknown, revoked or expired key."),
    (403, "The key does not allow this operation."),
    (404, "Not found."),
    (
        405,
        "Method not allowed; `Allow` lists the methods of the path.",
    ),
    (408, "The request body did not arrive in time."),
    (409, "Conflict with the stored state."),
    (413, "Body, batch or module too large."),
    (414, "Request target too long."),
    (415, "Unsupported content type or encoding."),
    (429, "Too many requests; retry after `Retry-After` seconds."),
    (431, "Request headers too large."),
    (
        500,
        "A fault of the server; the log has the detail, under the request id.",
    ),
    (503, "Unavailable; retry after `Retry-After` seconds."),
    (507, "Storage limit reached."),
];

/// The error answers of an operation that can send `codes`, as OpenAPI
/// response objects by status: each status described with the codes of
/// this operation, `Retry-After` on 429 and 503. (A status whose answer
/// nobody reads, 499, is left out.)
pub fn error_responses(codes: &[ErrorCode]) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut out = serde_json::Map::new();
    for &(status, text) in STATUS_TEXT {
        let mine: Vec<String> = codes
            .iter()
            .filter(|c| c.status() == status)
            .map(|c| format!("`{}`", c.as_str()))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut response = json!({
            "description": format!("{text} Codes: {}.", mine.join(", ")),
            "content": {"application/json; charset=utf-8": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"}
            }},
        });
        if status == 429 || status == 503 {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before retrying",
                "deprecated": false,
                "schema": {"type": "integer", "format": "uint64", "minimum": 0},
            }});
        }
        out.insert(status.to_string(), response);
    }
    out
}

impl ApiResponse for ApiError {
    /// One placeholder error answer, which marks the operations that answer
    /// errors: `api::spec_json` replaces it with each operation's own
    /// statuses and codes ([`error_responses`]), the one place they are
    /// written.
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "An error; the document lists each operation's own.",
                status: Some(400),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: ErrorBody::schema_ref(),
                }],
                headers: Vec::new(),
            }],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

/// poem-openapi's reason for a body its schema refuses, without the
/// internal type name it starts with (`failed to parse "string(name)": `):
/// what is left names the field (`` `name` must be a string, not a
/// boolean ``, ``field `stages` verification failed. minItems(1)``) and
/// the object it is in.
fn payload_message(reason: &str) -> String {
    let reason = reason.trim_start_matches("parse request payload error: ");
    let inner = reason
        .strip_prefix("failed to parse \"")
        .and_then(|r| r.split_once("\": "))
        .map_or(reason, |(_, rest)| rest);
    format!("invalid body: {inner}")
}

/// Turns any error that reached the edge into the JSON error format:
/// our own errors keep their code, poem's and poem-openapi's (a bad query
/// parameter, a missing route, a body over the limit) get one from their
/// status.
pub fn normalize(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.clone().into_response();
    }
    let status = err.status();
    // A parameter or body the schema refuses: the message names the field.
    if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        let code = if e.name == "cursor" {
            ErrorCode::InvalidCursor
        } else {
            ErrorCode::InvalidParameter
        };
        return ApiError::bad_request(code, format!("`{}` {}", e.name, e.reason)).into_response();
    }
    if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseRequestPayloadError>() {
        return ApiError::bad_request(ErrorCode::InvalidBody, payload_message(&e.reason))
            .into_response();
    }
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => {
            return ApiError::internal(&err).into_response();
        }
        // 400, and any other 4xx poem raises, keeping its status.
        _ => ErrorCode::BadRequest,
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route or resource".to_owned(),
        StatusCode::UNAUTHORIZED => {
            "missing or invalid credentials: send the key in the X-API-Key header".to_owned()
        }
        _ => err.to_string(),
    };
    ApiError {
        status,
        ..ApiError::new(code, message)
    }
    .into_response()
}
