//! `dead_letters`: events that could not go through the pipeline or store.

use sea_orm::entity::prelude::*;

/// A dead-letter row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    /// Insertion order; the pagination cursor.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// Dead-letter id.
    #[sea_orm(unique)]
    pub id: Uuid,
    /// Owning project.
    pub project_id: Uuid,
    /// The event's id, when it had one.
    pub event_id: Option<Uuid>,
    /// The event as it was when it failed.
    pub payload: Json,
    /// The plugin that failed, or `store`.
    pub plugin: String,
    /// The error.
    pub error: String,
    /// When it was written, ms since the epoch.
    pub created_at: i64,
    /// When it was replayed, if it was.
    pub replayed_at: Option<i64>,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
