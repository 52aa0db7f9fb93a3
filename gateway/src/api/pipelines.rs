//! A project's enrichment pipeline: read, replace, reset.

use std::collections::HashMap;

use orrery_core::pipeline::StageSpec;
use orrery_core::plugin::OnError;
use orrery_plugins::Registry;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::params::{Text, rfc3339_ms};
use crate::auth::SecretKey;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::app_state;

/// Most stages in one pipeline.
pub const MAX_STAGES: usize = 32;

/// What happens to an event a plugin fails on (`skip` when a stage does
/// not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OnErrorPolicy {
    /// Keep the event without this plugin's enrichment.
    Skip,
    /// Drop the event (counted).
    Drop,
    /// Keep its payload in the dead-letter table, for replay.
    DeadLetter,
}

impl From<OnErrorPolicy> for OnError {
    fn from(p: OnErrorPolicy) -> Self {
        match p {
            OnErrorPolicy::Skip => Self::Skip,
            OnErrorPolicy::Drop => Self::Drop,
            OnErrorPolicy::DeadLetter => Self::DeadLetter,
        }
    }
}

impl From<OnError> for OnErrorPolicy {
    fn from(p: OnError) -> Self {
        match p {
            OnError::Skip => Self::Skip,
            OnError::Drop => Self::Drop,
            OnError::DeadLetter => Self::DeadLetter,
        }
    }
}

/// One stage: a plugin with its config, error policy and time limit.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StageDto {
    /// The plugin: `ip_hash` (always first), `geoip`, `user_agent`,
    /// `referrer`, `session`, or the name of a custom plugin (see
    /// `/api/v1/plugins`).
    pub plugin: Text,
    /// The plugin's configuration; omitted fields take their defaults.
    /// Unknown fields are refused. Credentials (`provider_token`) are shown
    /// as `***` in answers and must be sent again with every `PUT`.
    pub config: Option<HashMap<String, Value>>,
    // No doc comment: a described enum field becomes an `allOf` that
    // openapi-python-client cannot read. What happens to an event the
    // plugin fails on; `skip` when absent. `null` is refused (OpenAPI 3.0
    // cannot mark a `$ref` nullable, so the document does not allow it).
    #[allow(missing_docs)] // documented by its type's schema; see the comment above
    pub on_error: MaybeUndefined<OnErrorPolicy>,
    /// Time limit of one call on a batch, in ms, 1 to 10000 (default: the
    /// instance's `pipeline.plugin_timeout_ms`, 100).
    pub timeout_ms: Option<u64>,
}

impl From<StageDto> for StageSpec {
    fn from(d: StageDto) -> Self {
        d.into_spec(OnError::Skip)
    }
}

impl StageDto {
    /// The stage, with `on_error` defaulting to `default` when absent.
    fn into_spec(self, default: OnError) -> StageSpec {
        StageSpec {
            plugin: self.plugin.0,
            config: self.config.unwrap_or_default().into_iter().collect(),
            on_error: self.on_error.take().map(Into::into).unwrap_or(default),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// Whether a config field holds a credential, never shown back.
fn is_credential(field: &str) -> bool {
    ["token", "secret", "password"]
        .iter()
        .any(|w| field.contains(w))
}

/// Shown for a credential in an answer. A `PUT` must send credentials
/// again: this placeholder is refused as a value.
pub const REDACTED: &str = "***";

impl From<StageSpec> for StageDto {
    fn from(s: StageSpec) -> Self {
        Self {
            plugin: Text(s.plugin),
            config: Some(
                s.config
                    .into_iter()
                    .map(|(k, v)| {
                        if is_credential(&k) && !v.is_null() {
                            (k, Value::from(REDACTED))
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
            ),
            on_error: MaybeUndefined::Value(s.on_error.into()),
            timeout_ms: s.timeout_ms,
        }
    }
}

/// A project's pipeline.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PipelineOut {
    /// The stages, in order.
    pub stages: Vec<StageDto>,
    /// The query stages, in order: custom plugins run on the project's
    /// events as they are read (events and sessions lists).
    pub query_stages: Vec<StageDto>,
    /// Whether these are the instance's default stages (the project has
    /// none of its own).
    pub is_default: bool,
    /// When the project's own stages were last set, RFC 3339.
    pub updated_at: Option<String>,
}

/// A new pipeline.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PipelineIn {
    /// The stages, in order (1 to 32); the first must be `ip_hash`.
    pub stages: Vec<StageDto>,
    /// Query stages (0 to 32): custom plugins run on the project's events
    /// as they are read through the events and sessions lists, e.g. to
    /// redact properties. An event a query stage drops is not shown;
    /// `on_error` is `skip` or `drop` and defaults to `drop` here, so that
    /// a failing redaction hides the event instead of showing it whole.
    pub query_stages: Option<Vec<StageDto>>,
}

/// Checks a stage list's size, `on_error` values and credentials, and
/// reads it with `on_error` defaulting to `default`. Fields are named
/// `list[i]...`.
fn stage_list(
    list: &str,
    dtos: Vec<StageDto>,
    default: OnError,
) -> Result<Vec<StageSpec>, ApiError> {
    if dtos.len() > MAX_STAGES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPipeline,
            format!("{list}: at most {MAX_STAGES} stages"),
        ));
    }
    if let Some(i) = dtos.iter().position(|s| s.on_error.is_null()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "`{list}[{i}].on_error` must be `skip`, `drop` or `dead_letter`, not null \
                 (leave it out for the default)"
            ),
        ));
    }
    let specs: Vec<StageSpec> = dtos.into_iter().map(|d| d.into_spec(default)).collect();
    for (i, st) in specs.iter().enumerate() {
        for (k, v) in &st.config {
            if is_credential(k) && v.as_str() == Some(REDACTED) {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidPipeline,
                    format!("{list}[{i}].config.{k}: send the credential itself, not `{REDACTED}`"),
                ));
            }
        }
    }
    Ok(specs)
}

/// Answer of `reset_pipeline`.
#[derive(ApiResponse)]
pub enum ResetResponse {
    /// The project uses the default pipeline again.
    #[oai(status = 204)]
    Reset,
}

/// Pipelines.
pub struct PipelinesApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Pipelines")]
impl PipelinesApi {
    /// Get a project's pipeline
    ///
    /// The ordered plugin stages every event of the project goes through.
    #[oai(
        path = "/projects/:project_id/pipeline",
        method = "get",
        operation_id = "get_pipeline"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<Json<PipelineOut>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        state.store.get_project(project_id.0).await?;
        Ok(Json(match state.store.get_pipeline(project_id.0).await? {
            Some(stored) => PipelineOut {
                stages: stored.stages.into_iter().map(Into::into).collect(),
                query_stages: stored.query_stages.into_iter().map(Into::into).collect(),
                is_default: false,
                updated_at: Some(rfc3339_ms(stored.updated_at)),
            },
            None => PipelineOut {
                stages: Registry::default_stages()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                query_stages: Vec::new(),
                is_default: true,
                updated_at: None,
            },
        }))
    }

    /// Replace a project's pipeline
    ///
    /// Validates the stages (known plugins, `ip_hash` first, every config
    /// field) and makes them the project's pipeline from the next batch on,
    /// without a restart. A 400 names the offending field, e.g.
    /// `stages[2].config.inactivity_minutes`.
    #[oai(
        path = "/projects/:project_id/pipeline",
        method = "put",
        operation_id = "put_pipeline"
    )]
    async fn put(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
        body: Json<PipelineIn>,
    ) -> ApiResult<Json<PipelineOut>> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        state.store.get_project(project_id.0).await?;
        let body = body.0;
        let stages = stage_list("stages", body.stages, OnError::Skip)?;
        let query_stages = stage_list(
            "query_stages",
            body.query_stages.unwrap_or_default(),
            OnError::Drop,
        )?;
        let built = state
            .pipelines
            .build(&stages, &query_stages)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPipeline, e.to_string()))?;
        let stored = state
            .store
            .put_pipeline(project_id.0, &stages, &query_stages)
            .await?;
        state
            .pipelines
            .set(project_id.0, stages.clone(), query_stages.clone(), built);
        tracing::info!(project = %project_id.0, stages = stages.len(), query_stages = query_stages.len(), "pipeline replaced");
        Ok(Json(PipelineOut {
            stages: stored.stages.into_iter().map(Into::into).collect(),
            query_stages: stored.query_stages.into_iter().map(Into::into).collect(),
            is_default: false,
            updated_at: Some(rfc3339_ms(stored.updated_at)),
        }))
    }

    /// Reset a project's pipeline
    ///
    /// Removes the project's own stages: it uses the instance's default
    /// pipeline from the next batch on.
    #[oai(
        path = "/projects/:project_id/pipeline",
        method = "delete",
        operation_id = "reset_pipeline"
    )]
    async fn reset(
        &self,
        req: &Request,
        auth: SecretKey,
        /// Project id.
        project_id: Path<Uuid>,
    ) -> ApiResult<ResetResponse> {
        let state = app_state(req);
        auth.0.require_project(project_id.0)?;
        state.store.get_project(project_id.0).await?;
        state.store.delete_pipeline(project_id.0).await?;
        state.pipelines.reset(project_id.0);
        Ok(ResetResponse::Reset)
    }
}
