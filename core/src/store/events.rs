//! Events: the writer's batch insert and the paginated query.

use std::collections::HashSet;

use sea_orm::sea_query::{IntoColumnRef, OnConflict, Query, ReturningClause};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use super::entities::event;
use super::{Store, StoreError};
use crate::event::Event;

/// Rows per INSERT statement: 15 columns x 500 rows stays far below the
/// bound-parameter limits of SQLite (32766) and PostgreSQL (65535).
const ROWS_PER_STATEMENT: usize = 500;

/// What happened to one event of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now.
    Inserted,
    /// An event with the same id was already stored for the project.
    Duplicate,
}

/// Inserts events in the caller's transaction; an event whose
/// `(project_id, id)` is already stored, or repeats an earlier one of the
/// same call, is a [`InsertOutcome::Duplicate`] and is not stored again.
///
/// # Errors
/// The database error; the caller's transaction should then be rolled back.
pub async fn insert_events<C: ConnectionTrait>(
    conn: &C,
    events: &[&Event],
) -> Result<Vec<InsertOutcome>, DbErr> {
    let mut outcomes = vec![InsertOutcome::Duplicate; events.len()];
    // First occurrence of each (project, id) in this call; later ones are
    // duplicates without asking the database.
    let mut seen = HashSet::with_capacity(events.len());
    let firsts: Vec<usize> = (0..events.len())
        .filter(|&i| seen.insert((events[i].project_id, events[i].id)))
        .collect();
    let backend = conn.get_database_backend();
    for chunk in firsts.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = Query::insert();
        stmt.into_table(event::Entity).columns([
            event::Column::Id,
            event::Column::ProjectId,
            event::Column::Name,
            event::Column::DistinctId,
            event::Column::SessionId,
            event::Column::Timestamp,
            event::Column::ReceivedAt,
            event::Column::Url,
            event::Column::Referrer,
            event::Column::UserAgent,
            event::Column::Properties,
            event::Column::IpHash,
            event::Column::VisitorId,
            event::Column::Enrichment,
        ]);
        for &i in chunk {
            let e = events[i];
            stmt.values_panic([
                e.id.into(),
                e.project_id.into(),
                e.name.clone().into(),
                e.distinct_id.clone().into(),
                e.session_id.clone().into(),
                e.timestamp.into(),
                e.received_at.into(),
                e.url.clone().into(),
                e.referrer.clone().into(),
                e.user_agent.clone().into(),
                Value::Object(e.properties.clone()).into(),
                e.ip_hash.clone().into(),
                e.visitor_id.clone().into(),
                Value::Object(e.enrichment.clone()).into(),
            ]);
        }
        stmt.on_conflict(
            OnConflict::columns([event::Column::ProjectId, event::Column::Id])
                .do_nothing()
                .to_owned(),
        );
        stmt.returning(ReturningClause::Columns(vec![
            event::Column::ProjectId.into_column_ref(),
            event::Column::Id.into_column_ref(),
        ]));
        let rows = conn.query_all(backend.build(&stmt)).await?;
        let mut inserted = HashSet::with_capacity(rows.len());
        for row in rows {
            let project: Uuid = row.try_get("", "project_id")?;
            let id: Uuid = row.try_get("", "id")?;
            inserted.insert((project, id));
        }
        for &i in chunk {
            if inserted.contains(&(events[i].project_id, events[i].id)) {
                outcomes[i] = InsertOutcome::Inserted;
            }
        }
    }
    Ok(outcomes)
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
