//! `insights`: generated summary, trend and anomaly insights.

use sea_orm::entity::prelude::*;

/// An insight row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "insights")]
pub struct Model {
    /// Insight id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning project.
    pub project_id: Uuid,
    /// Identity within the project, e.g. `summary:2026-11-22`; a
    /// regenerated insight replaces the one with the same key.
    pub key: String,
    /// `summary`, `trend` or `anomaly`.
    pub kind: String,
    /// One line.
    pub title: String,
    /// Plain words with the numbers.
    pub content: String,
    /// The numbers, as JSON.
    pub metadata: Json,
    /// Start of the period it is about, ms.
    pub period_start: i64,
    /// End of that period (exclusive), ms.
    pub period_end: i64,
    /// When it was generated, ms.
    pub generated_at: i64,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
