//! The `orrery` binary's library: the HTTP API (poem-openapi), the CLI
//! commands and the wiring of core, plugins and storage.
//!
//! - [`app`] builds the whole HTTP application for a [`state::State`], so
//!   tests can drive it with `poem::test::TestClient` and no socket.
//! - [`server::serve`] runs it with graceful shutdown.
//! - [`commands`] holds the other subcommands (`init`, `backup`, ...).

use poem::{Endpoint, EndpointExt, Route};

pub mod api;
pub mod auth;
pub mod commands;
pub mod connections;
pub mod error;
pub mod exec;
pub mod http;
pub mod jobs;
pub mod pipelines;
pub mod server;
pub mod settings;
pub mod state;

use state::AppState;

/// The OpenAPI document as JSON, as `orrery openapi` prints it.
pub fn openapi_json() -> String {
    api::service().spec()
}

/// Builds the HTTP application: the API, `/openapi.json`, `/docs`, and the
/// hygiene middleware around all of it.
pub fn app(state: AppState) -> impl Endpoint {
    let service = api::service();
    let routes = http::Routes::from_spec(
        &service.spec(),
        &[("/openapi.json", "get"), ("/docs", "get")],
    );
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    let app = Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service)
        .data(state.clone());
    http::Hygiene::new(app, state, routes)
}
