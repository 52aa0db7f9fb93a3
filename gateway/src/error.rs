//! The one error type of the API: a stable machine-readable `code`, a human
//! `message`, an HTTP status. Every error response is JSON
//! `{"code": "...", "message": "..."}` and is documented in the spec.

use poem::http::{HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry};
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

/// An API error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no usable credentials.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: the credentials do not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 413 with a message.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500. The cause is logged here, once; the client sees no detail.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_owned(),
            message: self.message.clone(),
        }
    }
}

impl From<orrery_core::store::StoreError> for ApiError {
    fn from(err: orrery_core::store::StoreError) -> Self {
        use orrery_core::store::StoreError;
        match err {
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::Unsupported(msg) => Self::bad_request("unsupported", msg),
            StoreError::LastAdminKey => Self::new(
                StatusCode::CONFLICT,
                "last_admin_key",
                "refused: this would leave the instance without an admin key that keeps \
                 working (not revoked, not expiring after a rotation); create another admin \
                 key first",
            ),
            StoreError::Db(sea_orm::DbErr::ConnectionAcquire(e)) => Self::unavailable(
                "database_unavailable",
                format!("the database is unavailable: {e}"),
                1,
            ),
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

/// The error statuses every operation documents.
const DOCUMENTED: &[(u16, &str)] = &[
    (
        400,
        "Bad request: the `code` and `message` name what is wrong",
    ),
    (401, "Missing, unknown, revoked or expired key"),
    (403, "The key does not allow this operation"),
    (404, "Not found"),
    (
        409,
        "Conflict with the stored state: `last_admin_key` (the change would leave the instance without an admin key), `project_in_use` (deleting the project of the key in use)",
    ),
    (413, "Body or batch too large"),
    (415, "Unsupported content type or encoding"),
    (
        503,
        "Queue full, shutting down, or database unavailable; retry after `Retry-After` seconds",
    ),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: DOCUMENTED
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: if status == 503 {
                        vec![MetaHeader {
                            name: "Retry-After".to_owned(),
                            description: Some("Seconds to wait before retrying".to_owned()),
                            required: false,
                            deprecated: false,
                            schema: u64::schema_ref(),
                        }]
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
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
            "invalid_cursor"
        } else {
            "invalid_parameter"
        };
        return ApiError::bad_request(code, format!("`{}` {}", e.name, e.reason)).into_response();
    }
    if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseRequestPayloadError>() {
        return ApiError::bad_request("invalid_body", payload_message(&e.reason)).into_response();
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => {
            return ApiError::internal(&err).into_response();
        }
        _ => "error",
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route or resource".to_owned(),
        StatusCode::UNAUTHORIZED => {
            "missing or invalid credentials: send the key in the X-API-Key header".to_owned()
        }
        _ => err.to_string(),
    };
    ApiError::new(status, code, message).into_response()
}
