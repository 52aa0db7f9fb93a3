//! Custom plugins (admin, instance-wide): upload, list, get, replace,
//! delete. A plugin is checked before it replaces anything; pipelines name
//! it next to the built-ins.

use std::collections::HashMap;
use std::sync::Arc;

use orrery_core::metrics::{PluginMetrics, PluginOutcomeLabel};
use orrery_plugins::custom::catalog::{CustomPlugin, Origin, PluginKind};
use orrery_plugins::custom::{Catalog, Fault, PluginLimits};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;

use crate::api::ApiTags;
use crate::api::params::{Base64, PluginName};
use crate::auth::SecretKey;
use crate::custom_plugins::{PluginChangeError, Upload};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, app_state};

/// What a plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum PluginKindDto {
    /// A WebAssembly component of the `plugin` world (`sdk/wit/plugin.wit`).
    Wasm,
    /// Python source (UTF-8) defining `process(event)` and optionally
    /// `configure(config)`, run in the sandbox's Python workers.
    Python,
}

/// Where a plugin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum PluginOrigin {
    /// A file of `pipeline.plugin_directory`.
    Directory,
    /// Uploaded through this API (kept in the database).
    Api,
}

/// Limits of a plugin; a field left out takes its default.
#[derive(Debug, Clone, Default, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PluginLimitsIn {
    /// WebAssembly fuel per batch (default 1000000000).
    #[oai(validator(minimum(value = "1"), maximum(value = "100000000000")))]
    pub fuel: Option<u64>,
    /// Wall time per batch in ms (default 1000); a stage's `timeout_ms`
    /// lowers it.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub wall_time_ms: Option<u64>,
    /// Memory of one instance in bytes (default 67108864).
    #[oai(validator(minimum(value = "1048576"), maximum(value = "1073741824")))]
    pub memory_bytes: Option<u64>,
    /// Log lines per second kept (default 100).
    #[oai(validator(maximum(value = "100000")))]
    pub log_lines_per_second: Option<u32>,
    /// Instances running batches at once (default 2).
    #[oai(validator(minimum(value = "1"), maximum(value = "64")))]
    pub instances: Option<u32>,
}

impl From<PluginLimitsIn> for PluginLimits {
    fn from(l: PluginLimitsIn) -> Self {
        let d = PluginLimits::default();
        Self {
            fuel: l.fuel.unwrap_or(d.fuel),
            wall_time_ms: l.wall_time_ms.unwrap_or(d.wall_time_ms),
            memory_bytes: l.memory_bytes.unwrap_or(d.memory_bytes),
            log_lines_per_second: l.log_lines_per_second.unwrap_or(d.log_lines_per_second),
            instances: l.instances.unwrap_or(d.instances),
        }
    }
}

/// A plugin's limits in effect.
#[derive(Debug, Clone, Object)]
pub struct PluginLimitsOut {
    /// WebAssembly fuel per batch.
    pub fuel: u64,
    /// Wall time per batch, ms.
    pub wall_time_ms: u64,
    /// Memory of one instance, bytes.
    pub memory_bytes: u64,
    /// Log lines per second kept.
    pub log_lines_per_second: u32,
    /// Instances running batches at once.
    pub instances: u32,
}

impl From<PluginLimits> for PluginLimitsOut {
    fn from(l: PluginLimits) -> Self {
        Self {
            fuel: l.fuel,
            wall_time_ms: l.wall_time_ms,
            memory_bytes: l.memory_bytes,
            log_lines_per_second: l.log_lines_per_second,
            instances: l.instances,
        }
    }
}

/// A new plugin.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PluginIn {
    // No doc comment: the schema of `PluginName` documents it.
    #[allow(missing_docs)] // documented by its type's schema
    pub name: PluginName,
    #[allow(missing_docs)] // documented by its type's schema
    pub kind: Option<PluginKindDto>,
    // No doc comment: the schema of `Base64` documents it.
    #[allow(missing_docs)] // documented by its type's schema: the component's bytes
    pub code: Base64,
    /// The config every stage gets, under its own (a stage's `config` is
    /// merged over it key by key).
    pub config: Option<HashMap<String, Value>>,
    #[allow(missing_docs)] // documented by its type's schema
    pub limits: Option<PluginLimitsIn>,
}

/// A new version of a plugin.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PluginReplaceIn {
    #[allow(missing_docs)] // documented by its type's schema
    pub kind: Option<PluginKindDto>,
    #[allow(missing_docs)] // documented by its type's schema: the component's bytes
    pub code: Base64,
    /// The config every stage gets, under its own.
    pub config: Option<HashMap<String, Value>>,
    #[allow(missing_docs)] // documented by its type's schema
    pub limits: Option<PluginLimitsIn>,
}

/// What a plugin did since the server started.
#[derive(Debug, Object)]
pub struct PluginCountersOut {
    /// Events passed to it.
    pub events_in: u64,
    /// Events it kept.
    pub kept: u64,
    /// Events it dropped on purpose.
    pub dropped: u64,
    /// Events it failed on (its stage's `on_error` applied).
    pub failed: u64,
    /// Batches cut short, by fault: `fuel`, `wall_time`, `memory`, `trap`,
    /// `malformed`, `config`, `suspended`.
    pub faults: HashMap<String, u64>,
    /// Log lines over its rate, dropped.
    pub log_lines_dropped: u64,
}

/// A loaded plugin.
#[derive(Debug, Object)]
pub struct PluginOut {
    /// Its name.
    pub name: String,
    #[allow(missing_docs)] // documented by its type's schema
    pub kind: PluginKindDto,
    /// Hex SHA-256 of its code: its version.
    pub version: String,
    /// Size of its code, bytes.
    pub size: u64,
    #[allow(missing_docs)] // documented by its type's schema
    pub origin: PluginOrigin,
    /// Its default config.
    pub config: HashMap<String, Value>,
    #[allow(missing_docs)] // documented by its type's schema
    pub limits: PluginLimitsOut,
    #[allow(missing_docs)] // documented by its type's schema
    pub counters: PluginCountersOut,
}

/// The plugin list.
#[derive(Debug, Object)]
pub struct PluginListOut {
    /// Custom plugins, by name.
    pub plugins: Vec<PluginOut>,
    /// The built-in plugins, which every pipeline may name too.
    pub built_in: Vec<String>,
}

/// Answer of upload.
#[derive(ApiResponse)]
pub enum Created {
    /// Checked, stored and loaded.
    #[oai(status = 201)]
    Created(Json<PluginOut>),
}

/// Answer of delete.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Unloaded and deleted.
    #[oai(status = 204)]
    Deleted,
}

fn catalog(state: &AppState) -> Result<&Arc<Catalog>, ApiError> {
    state
        .pipelines
        .registry()
        .custom()
        .ok_or_else(|| ApiError::internal(&"custom plugins are not set up"))
}

fn change_error(e: PluginChangeError) -> ApiError {
    match e {
        PluginChangeError::Invalid(m) => ApiError::bad_request(ErrorCode::InvalidPlugin, m),
        PluginChangeError::Exists(m) => ApiError::new(ErrorCode::PluginExists, m),
        e @ PluginChangeError::InUse { .. } => ApiError::new(ErrorCode::PluginInUse, e.to_string()),
        PluginChangeError::NotFound(name) => ApiError::not_found(&format!("plugin `{name}`")),
        PluginChangeError::Store(e) => e.into(),
    }
}

fn upload(
    name: String,
    kind: Option<PluginKindDto>,
    code: Vec<u8>,
    config: Option<HashMap<String, Value>>,
    limits: Option<PluginLimitsIn>,
) -> Upload {
    Upload {
        name,
        kind: match kind.unwrap_or(PluginKindDto::Wasm) {
            PluginKindDto::Wasm => PluginKind::Wasm,
            PluginKindDto::Python => PluginKind::Python,
        },
        code,
        config: config.unwrap_or_default().into_iter().collect(),
        limits: limits.unwrap_or_default().into(),
    }
}

fn out(state: &AppState, p: &CustomPlugin) -> PluginOut {
    let metrics: &PluginMetrics = state.pipelines.registry().metrics();
    let count = |outcome: &'static str| {
        metrics
            .events
            .get_or_create(&PluginOutcomeLabel {
                plugin: p.name.clone(),
                outcome,
            })
            .get()
    };
    let faults = Fault::ALL
        .into_iter()
        .map(|f| {
            (
                f.as_str().to_owned(),
                metrics.fault(&p.name, f.as_str()).get(),
            )
        })
        .collect();
    PluginOut {
        name: p.name.clone(),
        kind: match p.kind {
            PluginKind::Wasm => PluginKindDto::Wasm,
            PluginKind::Python => PluginKindDto::Python,
        },
        version: p.sha256.clone(),
        size: p.size as u64,
        origin: match p.origin {
            Origin::Directory(_) => PluginOrigin::Directory,
            Origin::Api => PluginOrigin::Api,
        },
        config: p.config.clone().into_iter().collect(),
        limits: p.limits.into(),
        counters: PluginCountersOut {
            events_in: count("in"),
            kept: count("kept"),
            dropped: count("dropped"),
            failed: count("failed"),
            faults,
            log_lines_dropped: PluginMetrics::of(&metrics.log_dropped, &p.name).get(),
        },
    }
}

/// Custom plugin administration.
pub struct PluginsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// Upload a plugin
    ///
    /// Needs an admin secret key. The plugin is checked before it is
    /// stored: it compiles, fits the plugin world, its `configure` accepts
    /// its `config`, and a sample event goes through `process`. A plugin
    /// that fails a check is a 400 naming the problem.
    #[oai(path = "/plugins", method = "post", operation_id = "upload_plugin")]
    async fn upload(
        &self,
        req: &Request,
        auth: SecretKey,
        body: Json<PluginIn>,
    ) -> ApiResult<Created> {
        auth.0.require_admin()?;
        let state = app_state(req);
        let b = body.0;
        let upload = upload(b.name.0, b.kind, b.code.0, b.config, b.limits);
        let plugin = crate::custom_plugins::put(catalog(state)?, &state.store, upload, false)
            .await
            .map_err(change_error)?;
        Ok(Created::Created(Json(out(state, &plugin))))
    }

    /// List plugins
    ///
    /// Needs an admin secret key.
    #[oai(path = "/plugins", method = "get", operation_id = "list_plugins")]
    async fn list(&self, req: &Request, auth: SecretKey) -> ApiResult<Json<PluginListOut>> {
        auth.0.require_admin()?;
        let state = app_state(req);
        let plugins = catalog(state)?.list();
        Ok(Json(PluginListOut {
            plugins: plugins.iter().map(|p| out(state, p)).collect(),
            built_in: orrery_plugins::registry::BUILT_IN
                .iter()
                .map(|&n| n.to_owned())
                .collect(),
        }))
    }

    /// Get a plugin
    ///
    /// Needs an admin secret key.
    #[oai(path = "/plugins/:name", method = "get", operation_id = "get_plugin")]
    async fn get(
        &self,
        req: &Request,
        auth: SecretKey,
        /// The plugin's name.
        name: Path<PluginName>,
    ) -> ApiResult<Json<PluginOut>> {
        auth.0.require_admin()?;
        let state = app_state(req);
        let plugin = catalog(state)?
            .get(&name.0.0)
            .ok_or_else(|| ApiError::not_found(&format!("plugin `{}`", name.0.0)))?;
        Ok(Json(out(state, &plugin)))
    }

    /// Replace a plugin
    ///
    /// Needs an admin secret key. The new version is checked first; when it
    /// fails, the answer is a 400 and the old version keeps running. Every
    /// pipeline naming the plugin uses the new version from its next batch.
    #[oai(
        path = "/plugins/:name",
        method = "put",
        operation_id = "replace_plugin"
    )]
    async fn replace(
        &self,
        req: &Request,
        auth: SecretKey,
        /// The plugin's name.
        name: Path<PluginName>,
        body: Json<PluginReplaceIn>,
    ) -> ApiResult<Json<PluginOut>> {
        auth.0.require_admin()?;
        let state = app_state(req);
        let b = body.0;
        let upload = upload(name.0.0, b.kind, b.code.0, b.config, b.limits);
        let plugin = crate::custom_plugins::put(catalog(state)?, &state.store, upload, true)
            .await
            .map_err(change_error)?;
        Ok(Json(out(state, &plugin)))
    }

    /// Delete a plugin
    ///
    /// Needs an admin secret key. A plugin that a project's pipeline names
    /// is not deleted: 409 naming the projects.
    #[oai(
        path = "/plugins/:name",
        method = "delete",
        operation_id = "delete_plugin"
    )]
    async fn delete(
        &self,
        req: &Request,
        auth: SecretKey,
        /// The plugin's name.
        name: Path<PluginName>,
    ) -> ApiResult<Deleted> {
        auth.0.require_admin()?;
        let state = app_state(req);
        crate::custom_plugins::delete(catalog(state)?, &state.store, &name.0.0)
            .await
            .map_err(change_error)?;
        Ok(Deleted::Deleted)
    }
}
