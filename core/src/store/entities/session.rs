//! `sessions`: one row per session, maintained by the writer.

use sea_orm::entity::prelude::*;

/// A session row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Owning project.
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: Uuid,
    /// The session id (from the SDK or the `session` plugin).
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// The cookieless visitor id of its events, when known.
    pub visitor_id: Option<String>,
    /// The last distinct id seen in it.
    pub distinct_id: Option<String>,
    /// Earliest event time, ms.
    pub started_at: i64,
    /// Latest event time, ms.
    pub ended_at: i64,
    /// `ended_at - started_at`.
    pub duration_ms: i64,
    /// Events stored in it.
    pub events: i64,
    /// Page views among them.
    pub pageviews: i64,
    /// Page of the earliest event.
    pub entry_page: Option<String>,
    /// Page of the latest event.
    pub exit_page: Option<String>,
    /// At most one page view.
    pub bounce: bool,
}

/// No relations are navigated through the ORM.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
