//! The HTTP API, one file per resource.

use poem_openapi::{OpenApiService, Tags};

pub mod dead_letters;
pub mod events;
pub mod execute;
pub mod execute_ws;
pub mod ingest;
pub mod insights;
pub mod keys;
pub mod ops;
pub mod pipelines;
pub mod projects;
pub mod sessions;
pub mod wasm_modules;

/// The API's tags.
#[derive(Tags)]
pub enum ApiTags {
    /// Sending events: JSON (single or batch), sendBeacon, tracking pixel.
    Ingestion,
    /// Reading stored events and sessions.
    Events,
    /// A project's enrichment pipeline (admin).
    Pipelines,
    /// Events that failed in the pipeline or the store, and their replay.
    DeadLetters,
    /// Summary, trend and anomaly insights.
    Insights,
    /// Projects (admin).
    Projects,
    /// API keys of a project (admin).
    Keys,
    /// Running untrusted Python and WebAssembly in the sandbox.
    Execute,
    /// Health and readiness.
    Ops,
}

/// All operations, as one OpenAPI service.
pub type Api = (
    ingest::IngestApi,
    events::EventsApi,
    sessions::SessionsApi,
    pipelines::PipelinesApi,
    dead_letters::DeadLettersApi,
    insights::InsightsApi,
    projects::ProjectsApi,
    keys::KeysApi,
    execute::ExecuteApi,
    wasm_modules::WasmModulesApi,
    ops::OpsApi,
);

/// Builds the OpenAPI service (served under `/`; paths carry `/api/v1`).
/// Handlers find the state in the request data, so the spec can be built
/// without a database.
pub fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (
            ingest::IngestApi,
            events::EventsApi,
            sessions::SessionsApi,
            pipelines::PipelinesApi,
            dead_letters::DeadLettersApi,
            insights::InsightsApi,
            projects::ProjectsApi,
            keys::KeysApi,
            execute::ExecuteApi,
            wasm_modules::WasmModulesApi,
            ops::OpsApi,
        ),
        "Orrery",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Self-hosted, plugin-extensible event gateway for product and web analytics. \
         Every error is JSON `{\"code\": \"...\", \"message\": \"...\"}` with a stable `code`.",
    )
    .license(poem_openapi::LicenseObject::new("Apache-2.0"))
}
