//! `plugins`: custom plugins uploaded through the admin API.

use sea_orm::entity::prelude::*;

/// An uploaded plugin.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "plugins")]
pub struct Model {
    /// Its name, as pipelines refer to it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// `wasm` (or `python`).
    pub kind: String,
    /// Hex SHA-256 of `code`.
    pub sha256: String,
    /// The component (or source) bytes.
    pub code: Vec<u8>,
    /// Default config, a JSON object.
    pub config: Json,
    /// Limits, a JSON object.
    pub limits: Json,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
