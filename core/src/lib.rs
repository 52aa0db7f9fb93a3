//! Orrery's domain: the event model, the plugin pipeline, storage and
//! configuration. It knows nothing of HTTP.
//!
//! The concepts, one line each:
//! - [`event::Event`]: what is stored; [`event::parse_event`] validates a
//!   client's JSON into one, naming the bad field when it cannot.
//! - [`event::Envelope`]: an event plus its request context (the raw IP
//!   lives there, and only there).
//! - [`plugin::Plugin`]: one enrichment step over a batch;
//!   [`pipeline::Pipeline`] runs a project's steps in order, with limits.
//! - [`store::Store`]: SQLite or PostgreSQL through sea-orm, migrations,
//!   queries.
//! - [`insights`]: summary, trend and anomaly findings from stored counts.
//! - [`writer::Writer`]: group commit; a request is answered only after its
//!   events are committed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use orrery_core::{config::Config, store::Store};
//! let config = Config::default(); // ./data/orrery.db
//! let store = Store::connect(&config).await?;
//! store.migrate().await?;
//! let project = store.create_project("website").await?;
//! println!("{}", project.id);
//! # Ok(()) }
//! ```

pub mod analytics;
pub mod config;
pub mod event;
pub mod insights;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod store;
pub mod writer;
