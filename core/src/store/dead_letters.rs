//! Dead letters: events a plugin failed on, or that could not be stored.

use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use serde_json::Value;
use uuid::Uuid;

use super::entities::dead_letter;
use crate::event::now_ms;

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

/// Writes dead letters in the caller's transaction.
///
/// # Errors
/// The database error.
pub async fn insert_dead_letters<C: ConnectionTrait>(
    conn: &C,
    letters: &[NewDeadLetter],
) -> Result<(), DbErr> {
    let now = now_ms();
    for l in letters {
        dead_letter::ActiveModel {
            seq: sea_orm::NotSet,
            id: Set(Uuid::now_v7()),
            project_id: Set(l.project_id),
            event_id: Set(l.event_id),
            payload: Set(l.payload.clone()),
            plugin: Set(l.plugin.clone()),
            error: Set(l.error.clone()),
            created_at: Set(now),
            replayed_at: Set(None),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}
