//! Reading stored events: filters and cursor pagination, newest first.

use std::collections::HashMap;

use orrery_core::event::Event;
use orrery_core::store::EventFilter;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Cursor, CursorKind, Limit, Time, page_limit, rfc3339_ms};
use crate::auth::SecretKey;
use crate::error::ApiResult;
use crate::state::app_state;

/// A stored event.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
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
#[oai(skip_serializing_if_is_none)]
pub struct EventPageOut {
    /// Events, newest first.
    pub events: Vec<EventOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl From<Event> for EventOut {
    fn from(e: Event) -> Self {
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
        from: Query<Option<Time>>,
        /// Events that happened before this time (RFC 3339 or ms).
        to: Query<Option<Time>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<Cursor>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<Limit>>,
    ) -> ApiResult<Json<EventPageOut>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0);
        let project = project_id.0;
        let filter = EventFilter {
            name: event.0,
            session_id: session_id.0,
            distinct_id: distinct_id.0,
            from_ms: from.0.map(|t| t.0),
            to_ms: to.0.map(|t| t.0),
            before_seq: cursor
                .0
                .map(|c| state.cursors.open_seq(CursorKind::Events, project, &c))
                .transpose()?,
        };
        state.store.get_project(project_id.0).await?;
        let page = state
            .store
            .query_events(project_id.0, &filter, limit)
            .await?;
        let events: Vec<Event> = page.events.into_iter().map(|s| s.event).collect();
        // The project's query stages see each event as it is read; the
        // cursor still follows the stored rows, so paging is unchanged (a
        // page may hold fewer events than `limit`).
        let events = match state
            .pipelines
            .query_for_project(&state.store, project)
            .await
        {
            Some(query) => crate::pipelines::read_through(&query, events).await,
            None => events,
        };
        Ok(Json(EventPageOut {
            events: events.into_iter().map(Into::into).collect(),
            next_cursor: page
                .next_before_seq
                .map(|seq| state.cursors.seal_seq(CursorKind::Events, project, seq)),
        }))
    }
}
