//! `api_keys`: keys stored as SHA-256 hashes with a display prefix.

use sea_orm::entity::prelude::*;

/// An API key row. The key itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Key id (UUID v7), used by the admin API.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The project the key belongs to.
    pub project_id: Uuid,
    /// Display name.
    pub name: String,
    /// `public` or `secret`.
    pub kind: String,
    /// Whether a secret key administers the whole instance.
    pub admin: bool,
    /// The first characters of the key, for display.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    #[sea_orm(unique)]
    pub hash: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// After this time (ms) the key no longer works (rotation grace).
    pub expires_at: Option<i64>,
    /// When the key was revoked (ms).
    pub revoked_at: Option<i64>,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
