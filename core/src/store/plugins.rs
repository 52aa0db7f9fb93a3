//! Uploaded custom plugins, and which pipelines name a plugin.

use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, QuerySelect, Set};
use serde_json::Value;
use uuid::Uuid;

use super::entities::{plugin, project_pipeline};
use super::{Store, StoreError};
use crate::event::now_ms;

/// An uploaded plugin as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPlugin {
    /// Its name.
    pub name: String,
    /// `wasm` (or `python`).
    pub kind: String,
    /// Hex SHA-256 of `code`.
    pub sha256: String,
    /// The bytes.
    pub code: Vec<u8>,
    /// Default config (a JSON object).
    pub config: Value,
    /// Limits (a JSON object).
    pub limits: Value,
    /// Last change, ms.
    pub updated_at: i64,
}

impl From<plugin::Model> for StoredPlugin {
    fn from(m: plugin::Model) -> Self {
        Self {
            name: m.name,
            kind: m.kind,
            sha256: m.sha256,
            code: m.code,
            config: m.config,
            limits: m.limits,
            updated_at: m.updated_at,
        }
    }
}

impl Store {
    /// Every uploaded plugin's name and version (`sha256`), without the
    /// code: what an instance polls to notice changes made elsewhere.
    ///
    /// # Errors
    /// The database error.
    pub async fn plugin_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(plugin::Entity::find()
            .select_only()
            .column(plugin::Column::Name)
            .column(plugin::Column::Sha256)
            .into_tuple::<(String, String)>()
            .all(self.db())
            .await?)
    }

    /// One uploaded plugin.
    ///
    /// # Errors
    /// The database error.
    pub async fn get_plugin(&self, name: &str) -> Result<Option<StoredPlugin>, StoreError> {
        Ok(plugin::Entity::find_by_id(name.to_owned())
            .one(self.db())
            .await?
            .map(StoredPlugin::from))
    }

    /// Stores a plugin, replacing one of the same name; answers it.
    ///
    /// # Errors
    /// The database error.
    pub async fn put_plugin(
        &self,
        name: &str,
        kind: &str,
        sha256: &str,
        code: &[u8],
        config: Value,
        limits: Value,
    ) -> Result<StoredPlugin, StoreError> {
        let now = now_ms();
        plugin::Entity::insert(plugin::ActiveModel {
            name: Set(name.to_owned()),
            kind: Set(kind.to_owned()),
            sha256: Set(sha256.to_owned()),
            code: Set(code.to_vec()),
            config: Set(config.clone()),
            limits: Set(limits.clone()),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(plugin::Column::Name)
                .update_columns([
                    plugin::Column::Kind,
                    plugin::Column::Sha256,
                    plugin::Column::Code,
                    plugin::Column::Config,
                    plugin::Column::Limits,
                    plugin::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(self.db())
        .await?;
        Ok(StoredPlugin {
            name: name.to_owned(),
            kind: kind.to_owned(),
            sha256: sha256.to_owned(),
            code: code.to_vec(),
            config,
            limits,
            updated_at: now,
        })
    }

    /// Deletes an uploaded plugin; answers whether there was one.
    ///
    /// # Errors
    /// The database error.
    pub async fn delete_plugin(&self, name: &str) -> Result<bool, StoreError> {
        let done = plugin::Entity::delete_by_id(name.to_owned())
            .exec(self.db())
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// The projects whose stored pipeline has a stage (or query stage)
    /// naming `plugin`.
    ///
    /// # Errors
    /// The database error.
    pub async fn projects_using_plugin(&self, plugin: &str) -> Result<Vec<Uuid>, StoreError> {
        let rows = project_pipeline::Entity::find().all(self.db()).await?;
        Ok(rows
            .into_iter()
            .filter(|row| {
                let names = |list: &Value| {
                    list.as_array().is_some_and(|stages| {
                        stages
                            .iter()
                            .any(|s| s.get("plugin").and_then(Value::as_str) == Some(plugin))
                    })
                };
                names(&row.stages) || row.query_stages.as_ref().is_some_and(names)
            })
            .map(|row| row.project_id)
            .collect())
    }
}
