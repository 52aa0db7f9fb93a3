//! `events`: append-only; no column for a raw IP.

use sea_orm::entity::prelude::*;

/// An event row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Insertion order; the pagination cursor.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// Event id, unique per project.
    pub id: Uuid,
    /// Owning project.
    pub project_id: Uuid,
    /// Event name.
    pub name: String,
    /// Distinct (user) id.
    pub distinct_id: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Client time, ms since the epoch.
    pub timestamp: i64,
    /// Server receive time, ms since the epoch.
    pub received_at: i64,
    /// Page URL.
    pub url: Option<String>,
    /// Referrer.
    pub referrer: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// JSON properties.
    pub properties: Json,
    /// Daily-rotating IP hash.
    pub ip_hash: Option<String>,
    /// Cookieless visitor id.
    pub visitor_id: Option<String>,
    /// Plugin enrichment fields.
    pub enrichment: Json,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
