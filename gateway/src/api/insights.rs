//! Insights: summary, trend and anomaly findings, in plain words.

use std::collections::HashMap;

use orrery_core::store::Insight;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Limit, MAX_LIMIT, Time, page_limit, rfc3339_ms};
use crate::auth::SecretKey;
use crate::error::ApiResult;
use crate::state::app_state;

/// Kind of insight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum InsightKind {
    /// The last complete UTC day in numbers.
    Summary,
    /// An event name that moved week over week.
    Trend,
    /// An hour whose count left its trailing baseline.
    Anomaly,
}

impl InsightKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Trend => "trend",
            Self::Anomaly => "anomaly",
        }
    }
}

/// An insight.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct InsightOut {
    /// Id.
    pub id: Uuid,
    /// `summary`, `trend` or `anomaly`.
    pub kind: String,
    /// Identity within the project (e.g. `trend:signup:2026-11-22`):
    /// generating again for the same period replaces the insight.
    pub key: String,
    /// One line.
    pub title: String,
    /// The finding in plain words, with its numbers.
    pub content: String,
    /// The numbers behind it.
    pub metadata: HashMap<String, Value>,
    /// Start of the period it is about, RFC 3339.
    pub period_start: String,
    /// End of that period (exclusive), RFC 3339.
    pub period_end: String,
    /// When it was generated, RFC 3339.
    pub generated_at: String,
}

impl From<Insight> for InsightOut {
    fn from(i: Insight) -> Self {
        Self {
            id: i.id,
            kind: i.kind,
            key: i.key,
            title: i.title,
            content: i.content,
            metadata: match i.metadata {
                Value::Object(m) => m.into_iter().collect(),
                _ => HashMap::new(),
            },
            period_start: rfc3339_ms(i.period_start),
            period_end: rfc3339_ms(i.period_end),
            generated_at: rfc3339_ms(i.generated_at),
        }
    }
}

/// A list of insights.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct InsightList {
    /// Newest period first.
    pub insights: Vec<InsightOut>,
}

/// Insights.
pub struct InsightsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Insights")]
impl InsightsApi {
    /// List insights
    ///
    /// The project's stored insights, newest period first. The periodic
    /// job (`insights.interval_minutes`) and `generate_insights` add them.
    #[oai(
        path = "/projects/:project_id/insights",
        method = "get",
        operation_id = "list_insights"
    )]
    async fn list(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Only this kind.
        kind: Query<Option<InsightKind>>,
        /// At most this many, 1 to 1000 (default 50).
        limit: Query<Option<Limit>>,
    ) -> ApiResult<Json<InsightList>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let limit = page_limit(limit.0);
        state.store.get_project(project_id.0).await?;
        let rows = state
            .store
            .list_insights(project_id.0, kind.0.map(InsightKind::as_str), limit)
            .await?;
        Ok(Json(InsightList {
            insights: rows.into_iter().map(Into::into).collect(),
        }))
    }

    /// Generate insights
    ///
    /// Computes the project's insights now (or as of `at`) and stores
    /// them: the summary of the last complete UTC day, week-over-week
    /// trends, and anomalies of the last complete hour. Answers what was
    /// generated; regenerating a period replaces its insights.
    #[oai(
        path = "/projects/:project_id/insights/generate",
        method = "post",
        operation_id = "generate_insights"
    )]
    async fn generate(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        /// Generate as of this time (RFC 3339 or ms) instead of now, e.g.
        /// to backfill a past day.
        at: Query<Option<Time>>,
    ) -> ApiResult<Json<InsightList>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        let at = at.0.map_or_else(orrery_core::event::now_ms, |t| t.0);
        state.store.get_project(project_id.0).await?;
        let new = orrery_core::insights::generate(
            &state.store,
            project_id.0,
            at,
            state.config.insights.anomaly_threshold,
        )
        .await?;
        let keys: std::collections::HashSet<String> = new.into_iter().map(|i| i.key).collect();
        // Answer the stored rows of what was just generated.
        let generated: Vec<Insight> = state
            .store
            .list_insights(project_id.0, None, MAX_LIMIT)
            .await?
            .into_iter()
            .filter(|i| keys.contains(&i.key))
            .collect();
        Ok(Json(InsightList {
            insights: generated.into_iter().map(Into::into).collect(),
        }))
    }
}
