//! Reading stored events: filters and cursor pagination, newest first.

use std::collections::HashMap;

use base64::Engine;
use chrono::DateTime;
use orrery_core::store::EventFilter;
use orrery_core::store::events::StoredEvent;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult};
use crate::state::app_state;

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 50;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

/// A stored event.
#[derive(Debug, Object)]
pub struct EventOut {
    /// Event id.
    pub id: Uuid,
    /// Event name.
    pub event: String,
    /// Distinct (user) id.
    pub distinct_id: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// When it happened (client time), RFC 3339.
    pub timestamp: String,
    /// When the server received it, RFC 3339.
    pub received_at: String,
    /// Page URL.
    pub url: Option<String>,
    /// Referrer.
    pub referrer: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// JSON properties.
    pub properties: HashMap<String, Value>,
    /// Daily-rotating hash of the client IP (the IP itself is never stored).
    pub ip_hash: Option<String>,
    /// Cookieless visitor id (rotates daily).
    pub visitor_id: Option<String>,
    /// Fields added by enrichment plugins.
    pub enrichment: HashMap<String, Value>,
}

/// One page of events.
#[derive(Debug, Object)]
pub struct EventPageOut {
    /// Events, newest first.
    pub events: Vec<EventOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The page size asked for: `limit`, default 50, 1 to 1000.
///
/// # Errors
/// 400 `invalid_parameter` out of range.
pub fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// Cuts `rows` (fetched with `limit + 1`) to `limit` and answers the
/// cursor of the next page, made from the last row kept, when there is one.
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: u64,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<StoredEvent> for EventOut {
    fn from(s: StoredEvent) -> Self {
        let e = s.event;
        Self {
            id: e.id,
            event: e.name,
            distinct_id: e.distinct_id,
            session_id: e.session_id,
            timestamp: rfc3339_ms(e.timestamp),
            received_at: rfc3339_ms(e.received_at),
            url: e.url,
            referrer: e.referrer,
            user_agent: e.user_agent,
            properties: e.properties.into_iter().collect(),
            ip_hash: e.ip_hash,
            visitor_id: e.visitor_id,
            enrichment: e.enrichment.into_iter().collect(),
        }
    }
}

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('s').and_then(|n| n.parse().ok()))
        .ok_or_else(invalid_cursor)
}

/// The answer to a `cursor` this API did not hand out.
pub fn invalid_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
}

/// A time given as RFC 3339 or milliseconds.
pub fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("`{field}` must be RFC 3339 (2026-11-23T16:30:00Z) or milliseconds"),
            )
        })
}

/// Event queries.
pub struct EventsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Events")]
impl EventsApi {
    /// List events
    ///
    /// A project's events, newest first (by arrival), with filters and
    /// cursor pagination: follow `next_cursor` until it is absent to see
    /// every event exactly once.
    #[oai(
        path = "/projects/:project_id/events",
        method = "get",
        operation_id = "list_events"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Only events of this name.
        event: Query<Option<String>>,
        /// Only this session.
        session_id: Query<Option<String>>,
        /// Only this distinct id.
        distinct_id: Query<Option<String>>,
        /// Events that happened at or after this time (RFC 3339 or ms).
        from: Query<Option<String>>,
        /// Events that happened before this time (RFC 3339 or ms).
        to: Query<Option<String>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<EventPageOut>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0)?;
        let filter = EventFilter {
            name: event.0,
            session_id: session_id.0,
            distinct_id: distinct_id.0,
            from_ms: from
                .0
                .as_deref()
                .map(|v| parse_time("from", v))
                .transpose()?,
            to_ms: to.0.as_deref().map(|v| parse_time("to", v)).transpose()?,
            before_seq: cursor.0.as_deref().map(decode_cursor).transpose()?,
        };
        state.store.get_project(project_id.0).await?;
        let page = state
            .store
            .query_events(project_id.0, &filter, limit)
            .await?;
        Ok(Json(EventPageOut {
            events: page.events.into_iter().map(Into::into).collect(),
            next_cursor: page.next_before_seq.map(encode_cursor),
        }))
    }
}
