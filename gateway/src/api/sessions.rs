//! Sessions: one row per visit, newest first.

use orrery_core::store::Session;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{
    Cursor, CursorKind, Cursors, Limit, Time, invalid_cursor, next_page, page_limit, rfc3339_ms,
};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult};
use crate::state::app_state;

/// A session.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
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
#[oai(skip_serializing_if_is_none)]
pub struct SessionPage {
    /// Newest first (by start).
    pub sessions: Vec<SessionOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A sessions cursor holds the start (8 bytes) and the id of the last
/// session of a page.
fn encode_cursor(cursors: &Cursors, project: Uuid, s: &Session) -> String {
    let mut position = s.started_at.to_be_bytes().to_vec();
    position.extend_from_slice(s.session_id.as_bytes());
    cursors.seal(CursorKind::Sessions, project, &position)
}

fn decode_cursor(cursors: &Cursors, project: Uuid, c: &Cursor) -> Result<(i64, String), ApiError> {
    let position = cursors.open(CursorKind::Sessions, project, c)?;
    if position.len() < 8 {
        return Err(invalid_cursor());
    }
    let (started, id) = position.split_at(8);
    let started = i64::from_be_bytes(started.try_into().map_err(|_| invalid_cursor())?);
    let id = String::from_utf8(id.to_vec()).map_err(|_| invalid_cursor())?;
    Ok((started, id))
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
        from: Query<Option<Time>>,
        /// Sessions that started before this time (RFC 3339 or ms).
        to: Query<Option<Time>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<Cursor>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<Limit>>,
    ) -> ApiResult<Json<SessionPage>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0);
        let project = project_id.0;
        let before = cursor
            .0
            .map(|c| decode_cursor(&state.cursors, project, &c))
            .transpose()?;
        state.store.get_project(project).await?;
        let mut rows = state
            .store
            .list_sessions(
                project,
                from.0.map(|t| t.0),
                to.0.map(|t| t.0),
                before,
                limit + 1,
            )
            .await?;
        let next_cursor = next_page(&mut rows, limit, |s| {
            encode_cursor(&state.cursors, project, s)
        });
        if let Some(query) = state
            .pipelines
            .query_for_project(&state.store, project)
            .await
        {
            rows = crate::pipelines::read_sessions_through(&query, project, rows).await;
        }
        Ok(Json(SessionPage {
            sessions: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }
}
