//! Dead letters: events a plugin failed on, or that could not be stored.
//! The writer stores them (see [`super::writer_db`]).

use serde_json::Value;
use uuid::Uuid;

/// A dead letter to write.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// Owning project.
    pub project_id: Uuid,
    /// The event's id, when known.
    pub event_id: Option<Uuid>,
    /// The event as it was when it failed.
    pub payload: Value,
    /// The failing plugin, or `store`.
    pub plugin: String,
    /// The error.
    pub error: String,
}
