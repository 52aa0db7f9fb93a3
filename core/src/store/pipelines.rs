//! Per-project pipelines: the configured stages, as JSON.

use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};
use uuid::Uuid;

use super::entities::project_pipeline;
use super::{Store, StoreError};
use crate::event::now_ms;
use crate::pipeline::StageSpec;

/// A project's stored pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPipeline {
    /// The stages, in order.
    pub stages: Vec<StageSpec>,
    /// The query stages (run on events as they are read), in order.
    pub query_stages: Vec<StageSpec>,
    /// Last change, ms.
    pub updated_at: i64,
}

impl Store {
    /// The project's configured pipeline; `None` when it uses the default.
    ///
    /// # Errors
    /// The database error, or a stored value that no longer parses.
    pub async fn get_pipeline(&self, project: Uuid) -> Result<Option<StoredPipeline>, StoreError> {
        let Some(row) = project_pipeline::Entity::find_by_id(project)
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        let parse = |v: serde_json::Value| {
            serde_json::from_value::<Vec<StageSpec>>(v)
                .map_err(|e| StoreError::Db(sea_orm::DbErr::Json(e.to_string())))
        };
        Ok(Some(StoredPipeline {
            stages: parse(row.stages)?,
            query_stages: row.query_stages.map(parse).transpose()?.unwrap_or_default(),
            updated_at: row.updated_at,
        }))
    }

    /// Stores the project's pipeline (its stages and query stages),
    /// replacing any earlier one.
    ///
    /// # Errors
    /// The database error.
    pub async fn put_pipeline(
        &self,
        project: Uuid,
        stages: &[StageSpec],
        query_stages: &[StageSpec],
    ) -> Result<StoredPipeline, StoreError> {
        let now = now_ms();
        let json = |s: &[StageSpec]| {
            serde_json::to_value(s).map_err(|e| StoreError::Db(sea_orm::DbErr::Json(e.to_string())))
        };
        project_pipeline::Entity::insert(project_pipeline::ActiveModel {
            project_id: Set(project),
            stages: Set(json(stages)?),
            query_stages: Set((!query_stages.is_empty())
                .then(|| json(query_stages))
                .transpose()?),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(project_pipeline::Column::ProjectId)
                .update_columns([
                    project_pipeline::Column::Stages,
                    project_pipeline::Column::QueryStages,
                    project_pipeline::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(self.db())
        .await?;
        Ok(StoredPipeline {
            stages: stages.to_vec(),
            query_stages: query_stages.to_vec(),
            updated_at: now,
        })
    }

    /// Removes the project's pipeline: it uses the default again.
    ///
    /// # Errors
    /// The database error.
    pub async fn delete_pipeline(&self, project: Uuid) -> Result<(), StoreError> {
        project_pipeline::Entity::delete_by_id(project)
            .exec(self.db())
            .await?;
        Ok(())
    }
}
