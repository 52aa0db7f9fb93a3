//! `project_pipelines`: a project's configured pipeline stages.

use sea_orm::entity::prelude::*;

/// A project's pipeline row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "project_pipelines")]
pub struct Model {
    /// The project.
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: Uuid,
    /// The stages, a JSON array of `StageSpec`.
    pub stages: Json,
    /// The query stages (run on events as they are read), a JSON array of
    /// `StageSpec`; `NULL`: none.
    pub query_stages: Option<Json>,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
