//! Sessions: one row per visit, newest first.

use orrery_core::store::Session;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::events::{invalid_cursor, next_page, page_limit, parse_time, rfc3339_ms};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult};
use crate::state::app_state;

/// A session.
#[derive(Debug, Object)]
pub struct SessionOut {
    /// Session id.
    pub session_id: String,
    /// Cookieless visitor id (rotates daily).
    pub visitor_id: Option<String>,
    /// The last distinct id seen in the session.
    pub distinct_id: Option<String>,
    /// First event, RFC 3339.
    pub started_at: String,
    /// Last event, RFC 3339.
    pub ended_at: String,
    /// From first to last event, in ms.
    pub duration_ms: i64,
    /// Events in the session.
    pub events: i64,
    /// Page views among them.
    pub pageviews: i64,
    /// Page of the first event.
    pub entry_page: Option<String>,
    /// Page of the last event with a page.
    pub exit_page: Option<String>,
    /// At most one page view.
    pub bounce: bool,
}

impl From<Session> for SessionOut {
    fn from(s: Session) -> Self {
        Self {
            session_id: s.session_id,
            visitor_id: s.visitor_id,
            distinct_id: s.distinct_id,
            started_at: rfc3339_ms(s.started_at),
            ended_at: rfc3339_ms(s.ended_at),
            duration_ms: s.duration_ms,
            events: s.events,
            pageviews: s.pageviews,
            entry_page: s.entry_page,
            exit_page: s.exit_page,
            bounce: s.bounce,
        }
    }
}

/// One page of sessions.
#[derive(Debug, Object)]
pub struct SessionPage {
    /// Newest first (by start).
    pub sessions: Vec<SessionOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(s: &Session) -> String {
    format!("{}.{}", s.started_at, s.session_id)
}

fn decode_cursor(c: &str) -> Result<(i64, String), ApiError> {
    c.split_once('.')
        .and_then(|(t, id)| Some((t.parse().ok()?, id.to_owned())))
        .ok_or_else(invalid_cursor)
}

/// Sessions.
pub struct SessionsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Events")]
impl SessionsApi {
    /// List sessions
    ///
    /// A project's sessions (assigned by the SDK or the `session` plugin),
    /// newest first by start, with start, end, duration, event and page
    /// view counts, entry and exit page, and bounce. The writer writes
    /// sessions every `ingest.sessions_flush_ms` (default 1 s), so the
    /// latest events can take that long to show here.
    #[oai(
        path = "/projects/:project_id/sessions",
        method = "get",
        operation_id = "list_sessions"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Sessions that started at or after this time (RFC 3339 or ms).
        from: Query<Option<String>>,
        /// Sessions that started before this time (RFC 3339 or ms).
        to: Query<Option<String>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<SessionPage>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0)?;
        let from = from
            .0
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?;
        let to = to.0.as_deref().map(|v| parse_time("to", v)).transpose()?;
        let before = cursor.0.as_deref().map(decode_cursor).transpose()?;
        state.store.get_project(project_id.0).await?;
        let mut rows = state
            .store
            .list_sessions(project_id.0, from, to, before, limit + 1)
            .await?;
        let next_cursor = next_page(&mut rows, limit, encode_cursor);
        Ok(Json(SessionPage {
            sessions: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }
}
