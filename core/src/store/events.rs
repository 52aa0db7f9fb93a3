//! Events: the paginated query, and the outcome of the writer's insert
//! (which lives in [`super::writer_db`]).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use super::entities::event;
use super::{Store, StoreError};
use crate::event::Event;

/// What happened to one event of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now.
    Inserted,
    /// An event with the same id was already stored for the project.
    Duplicate,
}

/// Filters of the event query.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this name.
    pub name: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only this distinct id.
    pub distinct_id: Option<String>,
    /// Client timestamp at or after (ms).
    pub from_ms: Option<i64>,
    /// Client timestamp before (ms).
    pub to_ms: Option<i64>,
    /// Only events stored before this sequence number (the cursor).
    pub before_seq: Option<i64>,
}

/// A stored event with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Insertion order.
    pub seq: i64,
    /// The event.
    pub event: Event,
}

/// One page of events, newest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events.
    pub events: Vec<StoredEvent>,
    /// The cursor of the next page, when there is one.
    pub next_before_seq: Option<i64>,
}

fn into_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

impl From<event::Model> for StoredEvent {
    fn from(m: event::Model) -> Self {
        Self {
            seq: m.seq,
            event: Event {
                id: m.id,
                project_id: m.project_id,
                name: m.name,
                distinct_id: m.distinct_id,
                session_id: m.session_id,
                timestamp: m.timestamp,
                received_at: m.received_at,
                url: m.url,
                referrer: m.referrer,
                user_agent: m.user_agent,
                properties: into_map(m.properties),
                ip_hash: m.ip_hash,
                visitor_id: m.visitor_id,
                enrichment: into_map(m.enrichment),
            },
        }
    }
}

impl Store {
    /// A page of a project's events, newest first (by arrival).
    ///
    /// # Errors
    /// The database error.
    pub async fn query_events(
        &self,
        project_id: Uuid,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<EventPage, StoreError> {
        let mut q = event::Entity::find().filter(event::Column::ProjectId.eq(project_id));
        if let Some(name) = &filter.name {
            q = q.filter(event::Column::Name.eq(name.as_str()));
        }
        if let Some(session) = &filter.session_id {
            q = q.filter(event::Column::SessionId.eq(session.as_str()));
        }
        if let Some(distinct) = &filter.distinct_id {
            q = q.filter(event::Column::DistinctId.eq(distinct.as_str()));
        }
        if let Some(from) = filter.from_ms {
            q = q.filter(event::Column::Timestamp.gte(from));
        }
        if let Some(to) = filter.to_ms {
            q = q.filter(event::Column::Timestamp.lt(to));
        }
        if let Some(before) = filter.before_seq {
            q = q.filter(event::Column::Seq.lt(before));
        }
        let mut rows = q
            .order_by_desc(event::Column::Seq)
            .limit(limit + 1)
            .all(self.db())
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let events: Vec<StoredEvent> = rows.into_iter().map(Into::into).collect();
        let next_before_seq = if more {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_before_seq,
        })
    }

    /// Number of stored events of a project, or of all projects.
    ///
    /// # Errors
    /// The database error.
    pub async fn count_events(&self, project_id: Option<Uuid>) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        let mut q = event::Entity::find();
        if let Some(p) = project_id {
            q = q.filter(event::Column::ProjectId.eq(p));
        }
        Ok(q.count(self.db()).await?)
    }
}
