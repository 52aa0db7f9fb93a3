//! The SQL endpoint: one read-only query over the caller's project, seen
//! through three views (`events`, `sessions`, `rollups`), checked by a SQL
//! parser and rewritten before it runs (see
//! `orrery_core::analytics::sql`), with a time, row and size limit.

use std::time::{Duration, Instant};

use orrery_core::store::sql::{SqlError, SqlLimits};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::stats::past_query_stages;
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::app_state;

/// Rows when `max_rows` is not given.
const DEFAULT_ROWS: u32 = 1000;
/// Most rows an answer holds.
const MAX_ROWS: u32 = 10_000;
/// Time limit of one query.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of values an answer holds at most.
const MAX_BYTES: usize = 16 << 20;
/// Queries running at once on this instance; the others wait.
static SLOTS: Semaphore = Semaphore::const_new(2);

/// A query.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SqlIn {
    /// One SELECT (CTEs allowed) over `events`, `sessions` and `rollups`,
    /// in the dialect of the database (SQLite or PostgreSQL).
    #[oai(validator(min_length = 1, max_length = 20000))]
    pub query: String,
    /// Rows to return at most, 1 to 10,000 (default 1,000).
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub max_rows: Option<u32>,
}

/// A query's answer.
#[derive(Debug, Clone, Object)]
pub struct SqlOut {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows: one array of values per row, in column order.
    pub rows: Vec<Vec<Value>>,
    /// Whether there were more rows than `max_rows`.
    pub truncated: bool,
    /// Time the query took, ms.
    pub elapsed_ms: u64,
}

/// SQL.
pub struct SqlApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Stats")]
impl SqlApi {
    /// Run a SQL query
    ///
    /// One read-only `SELECT` (CTEs, also recursive, subqueries, joins,
    /// window functions) over the project's own rows, in the dialect of the
    /// database, through three views: `events` (`id`, `name`, `timestamp`
    /// ms, `received_at`, `distinct_id`, `session_id`, `visitor_id`,
    /// `ip_hash`, `url`, `referrer`, `user_agent`, `properties`,
    /// `enrichment`), `sessions` (`session_id`, `visitor_id`,
    /// `distinct_id`, `started_at`, `ended_at`, `duration_ms`, `events`,
    /// `pageviews`, `bounce`, `entry_page`, `exit_page`) and `rollups`
    /// (`start` ms, `dimension`, `value`, `events`, `pageviews`,
    /// `sessions`, `bounces`, `duration_ms`, `session_pageviews`). No other
    /// table, no schema-qualified name, no table-valued function, and only
    /// pure functions (aggregates, window, text, number, JSON, dates).
    /// Stopped after 5 s (`query_timeout`); at most `max_rows` rows and
    /// 16 MiB of values. Anything refused is a 400 `invalid_query` saying
    /// why. Two queries run at once per instance; others wait.
    #[oai(
        path = "/projects/:project_id/sql",
        method = "post",
        operation_id = "run_sql"
    )]
    async fn run(
        &self,
        req: &Request,
        _auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<SqlIn>,
    ) -> ApiResult<Json<SqlOut>> {
        let state = app_state(req);
        state.store.get_project(project_id.0).await?;
        past_query_stages(state, project_id.0, Some("the stored rows")).await?;
        let limits = SqlLimits {
            max_rows: body.0.max_rows.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS) as usize,
            timeout: TIMEOUT,
            max_bytes: MAX_BYTES,
        };
        let _slot = SLOTS
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable(ErrorCode::Unavailable, "shutting down", 1))?;
        let started = Instant::now();
        let answer = state
            .store
            .run_sql(project_id.0, &body.0.query, limits)
            .await
            .map_err(|e| match e {
                SqlError::Store(s) => ApiError::from(s),
                SqlError::Timeout(_) => {
                    ApiError::bad_request(ErrorCode::QueryTimeout, e.to_string())
                }
                SqlError::Refused(why) => invalid(format!("`query`: {why}")),
                other => invalid(other.to_string()),
            })?;
        Ok(Json(SqlOut {
            columns: answer.columns,
            rows: answer.rows,
            truncated: answer.truncated,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }))
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidQuery, message)
}
