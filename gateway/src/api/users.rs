//! Users: the distinct ids a project's events carry, with first and last
//! seen and their event and session counts. A user's timeline is the
//! events list filtered by `distinct_id`.

use orrery_core::store::UserSummary;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Limit, RangeParam, Time, page_limit, rfc3339_ms};
use crate::api::stats::{cached, range_of};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult};
use crate::state::app_state;

/// A user.
#[derive(Debug, Clone, Object)]
pub struct UserOut {
    /// The distinct id.
    pub distinct_id: String,
    /// First event, RFC 3339.
    pub first_seen: String,
    /// Last event, RFC 3339.
    pub last_seen: String,
    /// Events.
    pub events: i64,
    /// Distinct sessions among them.
    pub sessions: i64,
}

impl From<UserSummary> for UserOut {
    fn from(u: UserSummary) -> Self {
        Self {
            distinct_id: u.distinct_id,
            first_seen: rfc3339_ms(u.first_seen),
            last_seen: rfc3339_ms(u.last_seen),
            events: u.events,
            sessions: u.sessions,
        }
    }
}

/// One page of users.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserPage {
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// Last seen first (then by id), with the numbers of the range.
    pub users: Vec<UserOut>,
    /// Users in the range in all.
    pub total_users: u64,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<u64>,
}

/// Users.
pub struct UsersApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Stats")]
impl UsersApi {
    /// List users
    ///
    /// The distinct ids of the project's events in a range (`range`:
    /// `24h`, `7d` (default), `30d`, `90d`, `12mo`, `all`, or `from` and
    /// `to`), last seen first, with first and last seen, events and
    /// sessions in that range; `limit` (1 to 1000, default 50) from
    /// `offset`. A user's timeline: `GET .../events?distinct_id=ID`.
    #[oai(
        path = "/projects/:project_id/users",
        method = "get",
        operation_id = "list_users"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// `24h`, `7d`, `30d`, `90d`, `12mo` or `all` (not with `from`/`to`).
        range: Query<Option<RangeParam>>,
        /// Start (RFC 3339 or ms), with `to`.
        from: Query<Option<Time>>,
        /// End, exclusive (RFC 3339 or ms), with `from`.
        to: Query<Option<Time>>,
        /// Page size, 1 to 1000 (default 50).
        limit: Query<Option<Limit>>,
        /// Users to skip (the `next_offset` of the previous page).
        offset: Query<Option<u64>>,
    ) -> ApiResult<Json<UserPage>> {
        let reads = Some("the users' distinct ids");
        cached(req, project_id.0, reads, async {
            let state = app_state(req);
            let (from, to) = range_of(state, project_id.0, range.0, from.0, to.0).await?;
            let limit = page_limit(limit.0);
            let offset = offset.0.unwrap_or(0);
            let (users, total) = state
                .store
                .list_users(project_id.0, from, to, limit, offset)
                .await?;
            let shown = offset.saturating_add(users.len() as u64);
            Ok(UserPage {
                from: rfc3339_ms(from),
                to: rfc3339_ms(to),
                users: users.into_iter().map(Into::into).collect(),
                total_users: total,
                next_offset: (shown < total).then_some(shown),
            })
        })
        .await
    }

    /// Get a user
    ///
    /// One distinct id over all time: first and last seen, events and
    /// sessions. 404 when no event carries it.
    #[oai(
        path = "/projects/:project_id/users/:distinct_id",
        method = "get",
        operation_id = "get_user"
    )]
    async fn get(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// The distinct id.
        distinct_id: Path<String>,
    ) -> ApiResult<Json<UserOut>> {
        let state = app_state(req);
        state.store.get_project(project_id.0).await?;
        match state.store.get_user(project_id.0, &distinct_id.0).await? {
            Some(u) => Ok(Json(u.into())),
            None => Err(ApiError::not_found("user")),
        }
    }
}
