//! The `orrery` binary's library: the HTTP API (poem-openapi), the CLI
//! commands and the wiring of core, plugins and storage.
//!
//! - [`app`] builds the whole HTTP application for a [`state::State`], so
//!   tests can drive it with `poem::test::TestClient` and no socket.
//! - [`server::serve`] runs it with graceful shutdown.
//! - [`commands`] holds the other subcommands (`init`, `backup`, ...).

use poem::{Endpoint, EndpointExt, Route};

pub mod accounts;
pub mod api;
pub mod auth;
pub mod commands;
pub mod compat;
pub mod connections;
pub mod custom_plugins;
pub mod error;
pub mod execution;
pub mod http;
pub mod http_metrics;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod live;
pub mod pipelines;
pub mod plugin_dir;
pub mod rate_limit;
pub mod server;
pub mod settings;
pub mod state;
pub mod stats_cache;
pub mod tracker;

use state::AppState;

/// The OpenAPI document as JSON, as `orrery openapi` prints it.
pub fn openapi_json() -> String {
    api::spec_json()
}

/// Builds the HTTP application: the API, `/openapi.json`, `/docs`, the
/// browser tracker, and the hygiene middleware around all of it.
pub fn app(state: AppState) -> impl Endpoint<Output = poem::Response> {
    let service = api::service();
    let spec_text = api::spec_json();
    let routes = http::Routes::from_spec(
        &spec_text,
        &[
            ("/openapi.json", "get"),
            ("/docs", "get"),
            ("/sdk/tracker.js", "get"),
            ("/tracker.js", "get"),
            ("/static/{path}", "get"),
        ],
    );
    // Swagger UI embeds the document: the completed one, as served.
    let docs_html = service
        .swagger_ui_html()
        .replace(&service.spec(), &spec_text);
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(spec_text.clone())
    });
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(docs_html.clone()));
    let app = Route::new()
        .at("/openapi.json", spec)
        .at("/docs", docs)
        .at("/sdk/tracker.js", tracker::endpoint())
        .at("/tracker.js", tracker::endpoint())
        .nest("/", service)
        .data(state.clone());
    http::Hygiene::new(app, state, routes)
}
