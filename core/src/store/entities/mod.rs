//! sea-orm entities. They are the database schema, never the API.

pub mod api_key;
pub mod dead_letter;
pub mod event;
pub mod insight;
pub mod plugin;
pub mod project;
pub mod project_pipeline;
pub mod session;
