//! Ingestion: `POST /api/v1/events` (one event or a batch; JSON,
//! `text/plain` from `navigator.sendBeacon`, optionally gzip-compressed)
//! and the tracking pixel `GET /t.gif`.
//!
//! Every event gets its own verdict; one bad event never rejects the good
//! ones beside it. The answer comes only after the events are committed.

use std::collections::HashMap;
use std::io::Read;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use orrery_core::event::RequestContext;
use orrery_core::store::{ApiKey, KeyKind};
use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::{ParseFromJSON, ToJSON, Type};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object, OpenApi, Union,
};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Ident, Timestamp};
use crate::auth::IngestKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ingest::{self, DeadLetterCause, IngestError, Outcome, Verdict};
use crate::state::{AppState, app_state};

/// One event as a client sends it.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, deny_unknown_fields)]
pub struct EventInput {
    /// Event name, e.g. `pageview` (1 to 200 characters).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub event: String,
    /// Client-chosen UUID; a retry with the same id is stored once.
    pub id: Option<Uuid>,
    // No doc comments: the schema of `Ident` documents them (the user as
    // the client knows them, and the session).
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub distinct_id: Option<Ident>,
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub session_id: Option<Ident>,
    // No doc comment: the schema of `Timestamp` documents it.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub timestamp: Option<Timestamp>,
    /// Page URL.
    pub url: Option<String>,
    /// Referrer URL.
    pub referrer: Option<String>,
    /// User agent, for server-side senders; browsers' is taken from the
    /// request.
    pub user_agent: Option<String>,
    /// Free-form JSON properties.
    pub properties: Option<HashMap<String, Value>>,
    /// The project key, for browsers that cannot set headers.
    pub api_key: Option<String>,
}

/// A batch of events.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, deny_unknown_fields)]
pub struct BatchInput {
    /// The events (at most `ingest.max_batch_events`, default 1000).
    pub batch: Vec<EventInput>,
    /// The project key, for browsers that cannot set headers.
    pub api_key: Option<String>,
}

/// The body of `POST /api/v1/events`.
#[derive(Debug, Union)]
#[oai(one_of)]
#[allow(clippy::large_enum_variant)] // documentation only; never built
pub enum IngestRequest {
    /// Several events.
    Batch(BatchInput),
    /// One event.
    Single(EventInput),
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored.
    Accepted,
    /// Already stored earlier (same id); not stored again.
    Duplicate,
    /// Invalid; `field` and `reason` say why. Not stored.
    Rejected,
    /// Dropped on purpose by a plugin (e.g. a bot filter).
    Dropped,
    /// Kept in the dead-letter table for inspection and replay.
    DeadLetter,
}

/// The verdict for one event.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EventResult {
    /// Position in the request (0 for a single event).
    pub index: u32,
    /// The event id, when the event was valid.
    pub id: Option<Uuid>,
    // No doc comment: see `KeyOut::kind`.
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub status: EventStatus,
    /// The offending field, for rejected events.
    pub field: Option<String>,
    /// Why it was rejected, dropped or dead-lettered.
    pub reason: Option<String>,
}

/// The answer to an ingestion request, sent after the commit.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IngestResponse {
    /// Events stored by this request.
    pub accepted: u32,
    /// Events already stored.
    pub duplicates: u32,
    /// Invalid events.
    pub rejected: u32,
    /// Events dropped by plugins.
    pub dropped: u32,
    /// Events kept in the dead-letter table.
    pub dead_lettered: u32,
    /// One verdict per event, in request order.
    pub results: Vec<EventResult>,
}

/// What an ingestion body looks like: its documented schema and the
/// media types it comes in. The native shape is [`IngestShape`]; other
/// systems' are in `api/compat.rs`.
pub trait BodyShape: Send + Sync {
    /// The documented schema of its JSON forms (never built: bodies are
    /// read as JSON values, so that one bad event never refuses the rest).
    type Doc: Type + ParseFromJSON + ToJSON;
    /// What the document says of the body.
    const DESCRIPTION: &'static str;

    /// Registers the schemas.
    fn register(registry: &mut Registry) {
        Self::Doc::register(registry);
    }

    /// Every media type taken.
    fn accepted() -> &'static [&'static str] {
        &["application/json", "text/plain"]
    }

    /// The media types taken, with their schemas: by default each of
    /// [`BodyShape::accepted`] with the JSON schema.
    fn content() -> Vec<MetaMediaType> {
        Self::accepted()
            .iter()
            .map(|t| MetaMediaType {
                content_type: t,
                schema: Self::Doc::schema_ref(),
            })
            .collect()
    }
}

/// `POST /api/v1/events`'s body.
pub struct IngestShape;

impl BodyShape for IngestShape {
    type Doc = IngestRequest;
    const DESCRIPTION: &'static str = "One event, or `{\"batch\": [...]}`. `text/plain` is accepted for \
         navigator.sendBeacon; `Content-Encoding: gzip` is accepted.";
}

/// The raw body of an ingestion request of shape `S`, read under the
/// ingestion limits (gzip allowed), with its media type.
pub struct RawBody<S> {
    /// The bytes, decompressed.
    pub bytes: Vec<u8>,
    /// The media type, lower case (empty when none was sent).
    pub mime: String,
    shape: PhantomData<S>,
}

impl<'a, S: BodyShape> ApiExtractor<'a> for RawBody<S> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        S::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(S::DESCRIPTION),
            content: S::content(),
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let (bytes, mime) = read_ingest_body(req, body, S::accepted()).await?;
        Ok(Self {
            bytes,
            mime,
            shape: PhantomData,
        })
    }
}

/// Reads an ingestion body under `ingest.max_body_bytes`, gunzipped under
/// `ingest.max_decompressed_bytes` when sent with `Content-Encoding: gzip`;
/// answers it with its media type (lower case, without parameters; empty
/// when none was sent). `accepted` lists the media types the endpoint
/// takes; a request without one is taken too.
///
/// # Errors
/// 415 for another media type or encoding, 413 over a limit, 400 for bad
/// gzip, 408 when the body is too slow.
pub async fn read_ingest_body(
    req: &Request,
    body: &mut RequestBody,
    accepted: &[&str],
) -> poem::Result<(Vec<u8>, String)> {
    let state = app_state(req);
    let limits = &state.config.ingest;
    let mime = req
        .content_type()
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !mime.is_empty() && !accepted.contains(&mime.as_str()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "content type {mime} is not accepted; send {}",
                accepted.join(" or ")
            ),
        )
        .into());
    }
    let gzip = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedEncoding,
                format!("content encoding {other} is not accepted; send gzip or none"),
            )
            .into());
        }
    };
    let too_large = || {
        ApiError::too_large(format!(
            "request body is larger than {} bytes (ingest.max_body_bytes)",
            limits.max_body_bytes
        ))
    };
    if req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limits.max_body_bytes)
    {
        crate::http_metrics::HttpMetrics::count(&state.http_metrics.body_errors, "too_large");
        return Err(too_large().into());
    }
    let timeout = std::time::Duration::from_millis(state.config.http.body_read_timeout_ms);
    let raw = crate::http::read_body(
        body.take()?,
        limits.max_body_bytes,
        timeout,
        &state.http_metrics,
    )
    .await
    .map_err(|e| e.into_api_error(limits.max_body_bytes, "ingest.max_body_bytes"))?;
    if !gzip {
        return Ok((raw.to_vec(), mime));
    }
    Ok((gunzip(&raw, limits.max_decompressed_bytes)?, mime))
}

/// Decompresses a gzip body of at most `max` bytes once decompressed.
///
/// # Errors
/// 400 `invalid_gzip`; 413 over `max` (`ingest.max_decompressed_bytes`).
pub fn gunzip(raw: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidGzip,
                format!("body is not valid gzip: {e}"),
            )
        })?;
    if out.len() > max {
        return Err(ApiError::too_large(format!(
            "decompressed body is larger than {max} bytes (ingest.max_decompressed_bytes)"
        )));
    }
    Ok(out)
}

/// The transparent 1x1 GIF of the pixel.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The pixel's answer: always the GIF, never cached.
#[derive(ApiResponse)]
pub enum PixelResponse {
    /// A transparent 1x1 GIF, whatever the input.
    #[oai(status = 200, content_type = "image/gif")]
    Gif(
        Binary<Vec<u8>>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "Expires")] String,
    ),
}

impl PixelResponse {
    fn gif() -> Self {
        Self::Gif(
            Binary(PIXEL_GIF.to_vec()),
            "no-store, no-cache, must-revalidate, max-age=0".to_owned(),
            "no-cache".to_owned(),
            "0".to_owned(),
        )
    }
}

/// Ingestion operations.
pub struct IngestApi;

// No prefix: the pixel lives outside `/api/v1`.
#[OpenApi(tag = "ApiTags::Ingestion")]
impl IngestApi {
    /// Send events
    ///
    /// One event or a batch of up to `ingest.max_batch_events`. The answer
    /// comes after the events are committed and has one verdict per event.
    /// A 503 with `Retry-After` means nothing of the request was stored.
    #[oai(
        path = "/api/v1/events",
        method = "post",
        operation_id = "ingest_events"
    )]
    async fn ingest(
        &self,
        req: &Request,
        auth: IngestKey,
        body: RawBody<IngestShape>,
    ) -> ApiResult<Json<IngestResponse>> {
        let state = app_state(req).clone();
        let value: Value = serde_json::from_slice(&body.bytes).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        let body_key = value.get("api_key").and_then(Value::as_str);
        let key = match auth.header().or(body_key) {
            Some(k) => ingest_key(&state, k).await?,
            None => {
                return Err(ApiError::unauthorized(
                    ErrorCode::MissingKey,
                    "send the project key in the X-API-Key header or an api_key field",
                ));
            }
        };
        let is_batch = value.get("batch").is_some();
        let values = match value {
            Value::Object(mut obj) if is_batch => match obj.remove("batch") {
                Some(Value::Array(items)) => {
                    let max = state.config.ingest.max_batch_events;
                    if items.len() > max {
                        return Err(ApiError::too_large(format!(
                            "batch has {} events, more than the limit of {max} (ingest.max_batch_events)",
                            items.len()
                        ))
                        .with_code(ErrorCode::BatchTooLarge));
                    }
                    items
                }
                _ => {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidBatch,
                        "`batch` must be an array of events",
                    ));
                }
            },
            other => vec![other],
        };
        let ctx = request_context(req, &state, key.kind == KeyKind::Secret);
        let response = ingest_values(&state, key.project_id, ctx, values).await?;
        if !is_batch {
            rejected_single(&response)?;
        }
        Ok(Json(response))
    }

    /// Tracking pixel
    ///
    /// For pages and emails that cannot run JavaScript. Always answers a
    /// 1x1 GIF with no-cache headers, even for bad input; records the event
    /// when the key and event are valid. `url` defaults to the `Referer`
    /// header (the page showing the pixel).
    #[oai(path = "/t.gif", method = "get", operation_id = "tracking_pixel")]
    #[allow(clippy::too_many_arguments)]
    async fn pixel(
        &self,
        req: &Request,
        /// Project key (`pk_...`).
        api_key: Query<Option<String>>,
        /// Short form of `api_key`.
        k: Query<Option<String>>,
        /// Event name; default `pageview`.
        event: Query<Option<String>>,
        /// Short form of `event`.
        e: Query<Option<String>>,
        /// Page URL; default: the `Referer` header.
        url: Query<Option<String>>,
        /// Short form of `url`.
        u: Query<Option<String>>,
        /// Referrer of the page.
        referrer: Query<Option<String>>,
        /// Short form of `referrer`.
        r: Query<Option<String>>,
        /// Distinct (user) id.
        distinct_id: Query<Option<String>>,
        /// Session id.
        session_id: Query<Option<String>>,
    ) -> PixelResponse {
        let state = app_state(req).clone();
        let Some(key) = api_key.0.or(k.0) else {
            state.core_metrics.count("rejected", 1);
            return PixelResponse::gif();
        };
        let Ok(key) = ingest_key(&state, &key).await else {
            state.core_metrics.count("rejected", 1);
            return PixelResponse::gif();
        };
        let page = url
            .0
            .or(u.0)
            .or_else(|| req.header(header::REFERER).map(str::to_owned));
        let mut obj = serde_json::Map::new();
        obj.insert(
            "event".into(),
            Value::from(event.0.or(e.0).unwrap_or_else(|| "pageview".to_owned())),
        );
        for (name, v) in [
            ("url", page),
            ("referrer", referrer.0.or(r.0)),
            ("distinct_id", distinct_id.0),
            ("session_id", session_id.0),
        ] {
            if let Some(v) = v {
                obj.insert(name.into(), Value::from(v));
            }
        }
        let ctx = request_context(req, &state, key.kind == KeyKind::Secret);
        if let Err(error) =
            ingest_values(&state, key.project_id, ctx, vec![Value::Object(obj)]).await
        {
            tracing::debug!(%error, "pixel event not recorded");
        }
        PixelResponse::gif()
    }
}

/// Authenticates a key that may send events (public or secret).
///
/// # Errors
/// 401 for an unknown, revoked or expired key; 403 for an execute key.
pub async fn ingest_key(state: &AppState, key: &str) -> ApiResult<ApiKey> {
    let key = state.keys.authenticate(&state.store, key).await?;
    if key.kind == KeyKind::Execute {
        return Err(ApiError::forbidden(
            "an execute key (xk_) can only run code; send events with a pk_ or sk_ key",
        ));
    }
    Ok(key)
}

/// The client IP: the socket peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` address that is not a trusted proxy.
pub fn client_ip(req: &Request, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_canonical())?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .or(Some(peer))
}

/// What the request tells of its sender; `server_side` for a secret key
/// (its events' user agent is never the request's).
pub fn request_context(req: &Request, state: &AppState, server_side: bool) -> Arc<RequestContext> {
    Arc::new(RequestContext {
        ip: client_ip(req, &state.config.http.trusted_proxies),
        user_agent: req.header(header::USER_AGENT).map(|ua| {
            ua.chars()
                .take(orrery_core::event::MAX_USER_AGENT_BYTES)
                .collect()
        }),
        server_side,
    })
}

/// Validates, enriches and commits events for `project`, and answers one
/// verdict per event.
///
/// # Errors
/// 503 when the queue is full, the server is stopping or the database
/// failed; nothing of the request was stored then.
pub async fn ingest_values(
    state: &AppState,
    project: Uuid,
    ctx: Arc<RequestContext>,
    values: Vec<Value>,
) -> ApiResult<IngestResponse> {
    let verdicts = ingest::ingest(state, project, ctx, values)
        .await
        .map_err(|e| ingest_error(state, e))?;
    let results: Vec<EventResult> = verdicts
        .into_iter()
        .enumerate()
        .map(|(i, v)| event_result(i, v))
        .collect();
    let count = |s: EventStatus| results.iter().filter(|r| r.status == s).count() as u32;
    Ok(IngestResponse {
        accepted: count(EventStatus::Accepted),
        duplicates: count(EventStatus::Duplicate),
        rejected: count(EventStatus::Rejected),
        dropped: count(EventStatus::Dropped),
        dead_lettered: count(EventStatus::DeadLetter),
        results,
    })
}

/// The 400 of a request of one event, when that event was rejected
/// (naming its field); a batch answers 200 with the verdicts instead.
///
/// # Errors
/// 400 `invalid_event`.
pub fn rejected_single(response: &IngestResponse) -> ApiResult<()> {
    match response.results.first() {
        Some(r) if response.results.len() == 1 && r.status == EventStatus::Rejected => {
            Err(ApiError::bad_request(
                ErrorCode::InvalidEvent,
                format!(
                    "field `{}` {}",
                    r.field.as_deref().unwrap_or("$"),
                    r.reason.as_deref().unwrap_or("is invalid")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The answer's form of a verdict.
fn event_result(index: usize, v: Verdict) -> EventResult {
    let (status, field, reason) = match v.outcome {
        Outcome::Accepted => (EventStatus::Accepted, None, None),
        Outcome::Duplicate => (EventStatus::Duplicate, None, None),
        Outcome::Rejected(r) => (EventStatus::Rejected, Some(r.field), Some(r.reason)),
        Outcome::Dropped { plugin, reason } => (
            EventStatus::Dropped,
            None,
            Some(format!("{plugin}: {reason}")),
        ),
        Outcome::DeadLettered(DeadLetterCause::Plugin { plugin, error }) => (
            EventStatus::DeadLetter,
            None,
            Some(format!("{plugin}: {error}")),
        ),
        Outcome::DeadLettered(DeadLetterCause::Store) => (
            EventStatus::DeadLetter,
            None,
            Some("store: the database refused this event; it is kept as a dead letter".to_owned()),
        ),
    };
    EventResult {
        index: index as u32,
        id: v.id,
        status,
        field,
        reason,
    }
}

/// The answer to a request of which nothing was stored. The database's own
/// message is logged (with the request id), never sent.
pub fn ingest_error(state: &AppState, e: IngestError) -> ApiError {
    let retry = state.config.ingest.retry_after_secs;
    match e {
        IngestError::QueueFull => ApiError::unavailable(
            ErrorCode::QueueFull,
            "the server is at capacity; nothing was stored, retry later",
            retry,
        ),
        IngestError::ShuttingDown => ApiError::unavailable(
            ErrorCode::ShuttingDown,
            "the server is shutting down; nothing was stored, retry later",
            retry,
        ),
        IngestError::Database(cause) => {
            tracing::error!(error = %cause, "commit failed");
            ApiError::unavailable(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable; nothing was stored, retry later",
                retry,
            )
        }
    }
}
