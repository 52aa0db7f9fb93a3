//! The HTTP API, one file per resource.

use poem_openapi::{OpenApiService, Tags};
use serde_json::Value;

use crate::error::ErrorCode;

pub mod accounts;
pub mod auth;
pub mod compat;
pub mod compat_shapes;
pub mod dead_letters;
pub mod events;
pub mod execute;
pub mod execute_ws;
pub mod funnels;
pub mod ingest;
pub mod insights;
pub mod keys;
pub mod live;
pub mod ops;
pub mod params;
pub mod pipelines;
pub mod plugins;
pub mod projects;
pub mod retention;
pub mod sessions;
pub mod sql;
pub mod stats;
pub mod users;
pub mod wasm_modules;

/// The API's tags.
#[derive(Tags)]
pub enum ApiTags {
    /// Sending events: JSON (single or batch), sendBeacon, tracking pixel.
    Ingestion,
    /// Drop-in ingestion for other systems' clients: PostHog, Plausible,
    /// Bilan and seed 004's SDK.
    Compatibility,
    /// Reading stored events and sessions.
    Events,
    /// A project's enrichment pipeline (admin).
    Pipelines,
    /// Custom plugins: WebAssembly components loaded at run time (admin).
    Plugins,
    /// Events that failed in the pipeline or the store, and their replay.
    DeadLetters,
    /// Statistics: overview, time series, breakdowns (from rollups), funnels,
    /// retention and users.
    Stats,
    /// Summary, trend and anomaly insights.
    Insights,
    /// Projects (admin).
    Projects,
    /// API keys of a project (admin).
    Keys,
    /// Logging in: tokens, cookies, WebSocket tickets.
    Auth,
    /// Accounts (administrators) and the members of a project.
    Accounts,
    /// Running untrusted Python and WebAssembly in the sandbox.
    Execute,
    /// Health and readiness.
    Ops,
}

use accounts::AccountsApi;
use auth::AuthApi;
use compat::CompatApi;
use dead_letters::DeadLettersApi;
use events::EventsApi;
use execute::ExecuteApi;
use execute_ws::ExecuteWsApi;
use funnels::FunnelsApi;
use ingest::IngestApi;
use insights::InsightsApi;
use keys::KeysApi;
use live::LiveApi;
use ops::OpsApi;
use pipelines::PipelinesApi;
use plugins::PluginsApi;
use projects::ProjectsApi;
use retention::RetentionApi;
use sessions::SessionsApi;
use sql::SqlApi;
use stats::StatsApi;
use users::UsersApi;
use wasm_modules::WasmModulesApi;

/// The resources, each an `OpenApi` type of its file, written once: the
/// `Api` type and its value. An entry is one type or a group of them in
/// parentheses (poem-openapi joins tuples of at most 16).
macro_rules! resources {
    ($($api:tt),+ $(,)?) => {
        /// All operations, as one OpenAPI service.
        pub type Api = ($($api,)+);

        fn resources() -> Api {
            ($($api,)+)
        }
    };
}

resources!(
    (IngestApi, CompatApi),
    (EventsApi, LiveApi),
    SessionsApi,
    (StatsApi, FunnelsApi, RetentionApi, UsersApi, SqlApi),
    PipelinesApi,
    PluginsApi,
    DeadLettersApi,
    InsightsApi,
    ProjectsApi,
    KeysApi,
    (AuthApi, AccountsApi),
    ExecuteApi,
    ExecuteWsApi,
    WasmModulesApi,
    OpsApi,
);

/// Builds the OpenAPI service (served under `/`; paths carry `/api/v1`).
/// Handlers find the state in the request data, so the spec can be built
/// without a database.
pub fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(resources(), "Orrery", env!("CARGO_PKG_VERSION"))
        .description(
            "Self-hosted, plugin-extensible event gateway for product and web analytics. \
         Every error is JSON `{\"code\": \"...\", \"message\": \"...\"}` with a stable `code`.",
        )
        .license(poem_openapi::LicenseObject::new("Apache-2.0"))
}

/// Objects whose unknown fields the server refuses (ingestion's parser),
/// so the document closes them (`additionalProperties: false`), which
/// poem-openapi's `deny_unknown_fields` does not write.
const CLOSED_OBJECTS: &[&str] = &["EventInput", "BatchInput"];

/// Limits a handler or the plugin registry enforces with a message that
/// names the exact place (`stages[2].timeout_ms`), which a poem-openapi
/// validator would not: stated in the document here instead, as
/// (schema, property, keyword, value). `tests/tests/contract.rs` checks
/// that the server enforces exactly these.
fn stated_limits() -> [(&'static str, &'static str, &'static str, Value); 4] {
    [
        ("PipelineIn", "stages", "minItems", Value::from(1)),
        (
            "PipelineIn",
            "stages",
            "maxItems",
            Value::from(pipelines::MAX_STAGES),
        ),
        ("StageDto", "timeout_ms", "minimum", Value::from(1)),
        (
            "StageDto",
            "timeout_ms",
            "maximum",
            Value::from(orrery_plugins::registry::MAX_TIMEOUT_MS),
        ),
    ]
}

/// The OpenAPI document served at `/openapi.json` and printed by `orrery
/// openapi`: poem-openapi's, completed with what it cannot write, so that
/// the document says exactly what the server accepts:
/// - the limits of `stated_limits`;
/// - the error codes, as the enum of `ErrorBody.code`;
/// - the objects of `CLOSED_OBJECTS` take no other fields;
/// - an unsigned integer is at least 0;
/// - an optional field of a request body may be `null` (the server reads
///   `null` as absent), except a field that is a `$ref`, which OpenAPI 3.0
///   cannot mark: those refuse `null` in their handler.
pub fn spec_json() -> String {
    let mut spec: Value =
        serde_json::from_str(&service().spec()).expect("poem-openapi writes JSON");
    let schemas = &mut spec["components"]["schemas"];
    for name in CLOSED_OBJECTS {
        schemas[*name]["additionalProperties"] = Value::Bool(false);
    }
    for (schema, property, keyword, value) in stated_limits() {
        schemas[schema]["properties"][property][keyword] = value;
    }
    // Every error code, for clients that switch on them.
    schemas["ErrorBody"]["properties"]["code"]["enum"] = crate::error::ErrorCode::ALL
        .iter()
        .map(|c| Value::from(c.as_str()))
        .collect();
    let mut requests = std::collections::BTreeSet::new();
    let mut roots = Vec::new();
    for ops in spec["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            for media in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                roots.push(media["schema"].clone());
            }
        }
    }
    while let Some(schema) = roots.pop() {
        visit_refs(&schema, &mut |name| {
            if requests.insert(name.to_owned()) {
                roots.push(spec["components"]["schemas"][name].clone());
            }
        });
    }
    let schemas = spec["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    for name in &requests {
        if let Some(schema) = schemas.get_mut(name) {
            let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
            let props = schema.get_mut("properties").and_then(Value::as_object_mut);
            for (field, prop) in props.into_iter().flatten() {
                if !required.contains(&Value::from(field.as_str())) && prop.get("$ref").is_none() {
                    prop["nullable"] = Value::Bool(true);
                }
            }
        }
    }
    unsigned_minimum(&mut spec);
    for (path, ops) in spec["paths"].as_object_mut().into_iter().flatten() {
        for (method, op) in ops.as_object_mut().into_iter().flatten() {
            let responses = op["responses"].as_object_mut().expect("responses");
            let answers_errors = responses
                .values()
                .any(|r| r.to_string().contains("#/components/schemas/ErrorBody"));
            if !answers_errors {
                continue;
            }
            responses.retain(|status, _| !status.starts_with('4') && !status.starts_with('5'));
            let codes = operation_codes(path, method, op);
            let responses = op["responses"].as_object_mut().expect("responses");
            responses.extend(crate::error::error_responses(&codes));
        }
    }
    serde_json::to_string_pretty(&spec).expect("a JSON value serializes")
}

/// The error codes an operation can answer, from what it is (its path, a
/// body, its parameters) and what its handler does. schemathesis
/// (`tests/tests/contract.rs`) fails on a status an operation answers and
/// does not document.
fn operation_codes(path: &str, method: &str, op: &Value) -> Vec<ErrorCode> {
    use ErrorCode as E;
    let id = op["operationId"].as_str().unwrap_or_default();
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // Any request: the connection layer, credentials, the server itself.
    let mut codes = vec![
        E::BadRequest,
        E::MalformedRequest,
        E::InvalidHeader,
        E::UriTooLong,
        E::HeadersTooLarge,
        E::Unauthorized,
        E::InvalidKey,
        E::KeyRevoked,
        E::KeyExpired,
        E::InvalidToken,
        E::TokenRevoked,
        E::Forbidden,
        E::CsrfFailed,
        E::AuthUnavailable,
        E::RateLimited,
        E::Internal,
        E::TooManyConnections,
        E::Unavailable,
        E::DatabaseUnavailable,
    ];
    if !params.is_empty() {
        codes.push(E::InvalidParameter);
    }
    if params.contains(&"cursor") {
        codes.push(E::InvalidCursor);
    }
    if path.contains('{') {
        codes.push(E::NotFound);
    }
    // The gateway reads the body of every POST, PUT and PATCH before the
    // handler, documented or not (ingestion reads its own).
    if matches!(method, "post" | "put" | "patch") {
        codes.extend([E::MalformedBody, E::BodyTimeout, E::PayloadTooLarge]);
        if id != "ingest_events" {
            codes.push(E::DuplicateKey);
        }
    }
    if op.get("requestBody").is_some() {
        codes.push(E::UnsupportedMediaType);
        if id != "ingest_events" && id != "upload_module" {
            codes.push(E::InvalidBody);
        }
    }
    let execution = [
        E::ExecutionDisabled,
        E::NotFound,
        E::InvalidRequest,
        E::InvalidModule,
        E::RateLimited,
        E::Busy,
        E::PythonUnavailable,
        E::ShuttingDown,
    ];
    match id {
        "ingest_events" | "posthog_capture" | "posthog_batch" | "posthog_e" | "posthog_i_v0_e"
        | "plausible_event" | "bilan_events" | "product_ingest" => {
            codes.extend([
                E::MissingKey,
                E::InvalidJson,
                E::InvalidEvent,
                E::InvalidBatch,
                E::InvalidGzip,
                E::BatchTooLarge,
                E::UnsupportedEncoding,
                E::QueueFull,
                E::ShuttingDown,
            ]);
            // Other systems' clients name a project by a setting
            // (`compat.*`), which may name none.
            if id != "ingest_events" {
                codes.push(E::NotFound);
            }
        }
        "replay_dead_letters" => codes.extend([E::QueueFull, E::ShuttingDown]),
        "put_pipeline" => codes.push(E::InvalidPipeline),
        "run_sql" => codes.extend([E::InvalidQuery, E::QueryTimeout, E::QueryStagesApply]),
        "stats_overview" | "stats_timeseries" | "stats_breakdown" | "stats_funnel"
        | "stats_retention" | "list_users" => codes.push(E::QueryStagesApply),
        "upload_plugin" => codes.extend([E::InvalidPlugin, E::PluginExists]),
        "replace_plugin" => codes.extend([E::InvalidPlugin, E::PluginExists]),
        "delete_plugin" => codes.extend([E::PluginExists, E::PluginInUse]),
        "create_key" => codes.push(E::InvalidKeyKind),
        "register" => codes.extend([E::RegistrationClosed, E::Conflict]),
        "login" => codes.extend([E::InvalidCredentials, E::AccountDeactivated, E::LoginLocked]),
        "refresh" => codes.push(E::RefreshTokenReused),
        "live_events" => codes.push(E::InvalidTicket),
        "change_password" => codes.push(E::InvalidCredentials),
        "create_account" => codes.push(E::Conflict),
        "update_account" => codes.extend([E::Conflict, E::LastAdmin]),
        "delete_account" => codes.push(E::LastAdmin),
        "revoke_key" | "rotate_key" => codes.push(E::LastAdminKey),
        "delete_project" => codes.extend([E::LastAdminKey, E::ProjectInUse]),
        "execute" | "execute_ws" => codes.extend(execution),
        "upload_module" => {
            codes.extend([E::ExecutionDisabled, E::InvalidModule, E::ModuleStoreFull])
        }
        "list_modules" | "get_module" | "delete_module" => {
            codes.extend([E::ExecutionDisabled, E::NotFound])
        }
        _ => {}
    }
    codes.sort_by_key(|c| ErrorCode::ALL.iter().position(|a| a == c));
    codes.dedup();
    codes
}

/// Calls `found` with the name of every `#/components/schemas/` reference
/// inside `schema`.
fn visit_refs(schema: &Value, found: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                found(name);
            }
            map.values().for_each(|v| visit_refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| visit_refs(v, found)),
        _ => {}
    }
}

/// `minimum: 0` on every unsigned integer that states no minimum.
fn unsigned_minimum(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let unsigned = map.get("type").and_then(Value::as_str) == Some("integer")
                && matches!(
                    map.get("format").and_then(Value::as_str),
                    Some("uint8" | "uint16" | "uint32" | "uint64")
                );
            if unsigned && !map.contains_key("minimum") {
                map.insert("minimum".to_owned(), Value::from(0));
            }
            map.values_mut().for_each(unsigned_minimum);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_minimum),
        _ => {}
    }
}
