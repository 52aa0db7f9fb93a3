//! Projects: create, list, rename, delete.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    Statement, TransactionTrait,
};
use uuid::Uuid;

use super::entities::{api_key, dead_letter, event, insight, project, project_pipeline, session};
use super::{Store, StoreError};
use crate::event::now_ms;

/// A project as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
}

impl From<project::Model> for Project {
    fn from(m: project::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl Store {
    /// Creates a project.
    ///
    /// # Errors
    /// The database error.
    pub async fn create_project(&self, name: &str) -> Result<Project, StoreError> {
        let now = now_ms();
        let model = project::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.db())
        .await?;
        Ok(model.into())
    }

    /// Lists projects, oldest first; only `only` when given.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_projects(&self, only: Option<Uuid>) -> Result<Vec<Project>, StoreError> {
        let mut q = project::Entity::find().order_by_asc(project::Column::CreatedAt);
        if let Some(id) = only {
            q = q.filter(project::Column::Id.eq(id));
        }
        Ok(q.all(self.db())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// One project.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such project.
    pub async fn get_project(&self, id: Uuid) -> Result<Project, StoreError> {
        project::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(Into::into)
            .ok_or(StoreError::NotFound("project"))
    }

    /// Renames a project.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such project.
    pub async fn rename_project(&self, id: Uuid, name: &str) -> Result<Project, StoreError> {
        let existing = project::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        let mut active: project::ActiveModel = existing.into();
        active.name = Set(name.to_owned());
        active.updated_at = Set(now_ms());
        Ok(active.update(self.db()).await?.into())
    }

    /// Deletes a project with its keys, events, sessions, insights, pipeline
    /// and dead letters.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such project;
    /// [`StoreError::LastAdminKey`] when it holds the instance's last
    /// lasting admin keys.
    pub async fn delete_project(&self, id: Uuid) -> Result<(), StoreError> {
        self.people.forget(id);
        let txn = self.db().begin().await?;
        super::keys::lock_admin_keys(&txn).await?;
        event::Entity::delete_many()
            .filter(event::Column::ProjectId.eq(id))
            .exec(&txn)
            .await?;
        dead_letter::Entity::delete_many()
            .filter(dead_letter::Column::ProjectId.eq(id))
            .exec(&txn)
            .await?;
        session::Entity::delete_many()
            .filter(session::Column::ProjectId.eq(id))
            .exec(&txn)
            .await?;
        insight::Entity::delete_many()
            .filter(insight::Column::ProjectId.eq(id))
            .exec(&txn)
            .await?;
        // Statistics: rollups, their marks and the person index.
        for table in [
            "rollups",
            "rollup_hours",
            "rollup_dirty",
            "rollup_days",
            "rollup_day_sets",
            "rollup_days_due",
            "person_hours",
            "person_days",
            "person_values",
            "persons",
        ] {
            txn.execute(Statement::from_sql_and_values(
                txn.get_database_backend(),
                super::sql_for(
                    txn.get_database_backend(),
                    &format!("DELETE FROM {table} WHERE project_id = ?"),
                ),
                vec![id.into()],
            ))
            .await?;
        }
        project_pipeline::Entity::delete_by_id(id)
            .exec(&txn)
            .await?;
        // Only a project holding lasting admin keys can take the last ones
        // with it (an instance without any, before `init`, is left alone).
        // Counted after this transaction's first write: on SQLite that
        // write serializes it with any other change of keys.
        let holds_admins = super::keys::lasting_admin_keys(&txn, Some(id)).await? > 0;
        api_key::Entity::delete_many()
            .filter(api_key::Column::ProjectId.eq(id))
            .exec(&txn)
            .await?;
        let res = project::Entity::delete_by_id(id).exec(&txn).await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound("project"));
        }
        if holds_admins {
            super::keys::ensure_admin_left(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
