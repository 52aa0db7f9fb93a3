//! Dead letters: events a plugin failed on, or that could not be stored.
//! The writer stores them (see [`super::writer_db`]); the admin API lists
//! them and replays them through the project's current pipeline.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use super::entities::dead_letter;
use super::{Store, StoreError};
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

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Insertion order; the pagination cursor.
    pub seq: i64,
    /// Dead-letter id.
    pub id: Uuid,
    /// The event's id, when known.
    pub event_id: Option<Uuid>,
    /// The event as it was when it failed.
    pub payload: Value,
    /// The failing plugin, or `store`.
    pub plugin: String,
    /// The error.
    pub error: String,
    /// When it was written, ms.
    pub created_at: i64,
    /// When it was replayed, if it was.
    pub replayed_at: Option<i64>,
}

impl From<dead_letter::Model> for DeadLetter {
    fn from(m: dead_letter::Model) -> Self {
        Self {
            seq: m.seq,
            id: m.id,
            event_id: m.event_id,
            payload: m.payload,
            plugin: m.plugin,
            error: m.error,
            created_at: m.created_at,
            replayed_at: m.replayed_at,
        }
    }
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Also those already replayed.
    pub include_replayed: bool,
    /// Only these ids.
    pub ids: Option<Vec<Uuid>>,
    /// Only those with `seq` below this (the cursor), newest first.
    pub before_seq: Option<i64>,
    /// Oldest first instead of newest first (replay order).
    pub oldest_first: bool,
}

impl Store {
    /// A project's dead letters, newest first (or oldest first), at most
    /// `limit`.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_dead_letters(
        &self,
        project: Uuid,
        filter: &DeadLetterFilter,
        limit: u64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut q = dead_letter::Entity::find().filter(dead_letter::Column::ProjectId.eq(project));
        if !filter.include_replayed {
            q = q.filter(dead_letter::Column::ReplayedAt.is_null());
        }
        if let Some(ids) = &filter.ids {
            q = q.filter(dead_letter::Column::Id.is_in(ids.iter().copied()));
        }
        if let Some(seq) = filter.before_seq {
            q = q.filter(dead_letter::Column::Seq.lt(seq));
        }
        let q = if filter.oldest_first {
            q.order_by_asc(dead_letter::Column::Seq)
        } else {
            q.order_by_desc(dead_letter::Column::Seq)
        };
        Ok(q.limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Marks dead letters as replayed now.
    ///
    /// # Errors
    /// The database error.
    pub async fn mark_dead_letters_replayed(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        dead_letter::Entity::update_many()
            .col_expr(
                dead_letter::Column::ReplayedAt,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(dead_letter::Column::Id.is_in(ids.iter().copied()))
            .exec(self.db())
            .await?;
        Ok(())
    }
}
