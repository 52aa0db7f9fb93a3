//! `GET /api/v1/projects/{project_id}/live`: a project's events as they are
//! committed, over a WebSocket. The protocol is in [`crate::live::session`].

use poem::Request;
use poem::web::websocket::{BoxWebSocketUpgraded, WebSocket};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::auth::LiveAuth;
use crate::error::ApiResult;
use crate::live::LiveOptions;
use crate::state::app_state;

/// The live event stream.
pub struct LiveApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Events")]
impl LiveApi {
    /// Stream events live
    ///
    /// A WebSocket of the project's events as they are committed, after
    /// enrichment, each as `{"type": "event", "event": {...}}` (the event
    /// as `list_events` shows it); `{"type": "heartbeat"}` every
    /// `live.heartbeat_secs`. With `replay`, the last stored events that
    /// pass the filters come first, oldest first, with no gap or duplicate
    /// before the live ones. A subscriber that falls `live.queue_events`
    /// events behind is closed with code 1008 and the reason
    /// `slow consumer`. The protocol is described in the README.
    ///
    /// Credentials: the project's secret key, an access token (header or
    /// cookie), or, from a browser, `?ticket=` from `POST
    /// /api/v1/auth/ws-ticket` (single use, 30 s), so that no token
    /// travels in the URL.
    #[oai(
        path = "/projects/:project_id/live",
        method = "get",
        operation_id = "live_events"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn live(
        &self,
        req: &Request,
        auth: LiveAuth,
        /// Project id.
        project_id: Path<Uuid>,
        /// Only events of this name; repeat for several (any of them).
        event: Query<Option<Vec<String>>>,
        /// Only events whose property equals a value: `name=value`, where
        /// `name` is a key of `properties` (dots go into nested objects:
        /// `plan.tier=gold`); a number or boolean property equals its JSON
        /// text (`seats=3`, `beta=true`). Repeat for several (all of them).
        property: Query<Option<Vec<String>>>,
        /// Send the last N stored events that pass the filters first,
        /// 0 to `live.max_replay` (default 0).
        replay: Query<Option<u64>>,
        ws: WebSocket,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let state = app_state(req).clone();
        let project = project_id.0;
        auth.require_project(project)?;
        let options = LiveOptions::parse(
            &state.config.live,
            event.0.unwrap_or_default(),
            property.0.unwrap_or_default(),
            replay.0,
        )?;
        crate::live::upgrade(state, project, options, ws).await
    }
}
