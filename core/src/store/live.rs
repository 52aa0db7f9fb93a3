//! What the live event stream needs from the store: the last events of a
//! project (the replay), events read back by id, and, on PostgreSQL, the
//! notifications that tell the other instances sharing the database which
//! events were just committed.
//!
//! A notification carries a reference, never the events: PostgreSQL caps a
//! payload at 8,000 bytes, so [`LiveNotice::payloads`] cuts the ids of one
//! commit into payloads of at most [`IDS_PER_PAYLOAD`] ids, and the
//! receiving instances read the rows back with [`Store::events_by_ids`].
//! Ids rather than a `seq` range: sequence numbers of concurrent
//! transactions (one writer per instance) interleave and commit out of
//! order, so a range would name other instances' rows, or rows not yet
//! committed.

use sea_orm::{ColumnTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use sqlx::postgres::{PgListener, PgNotification, PgPoolOptions};
use uuid::Uuid;

use super::entities::event;
use super::events::{EventPage, StoredEvent};
use super::{Store, StoreError};
use crate::event::Event;

/// The PostgreSQL channel of the live stream.
pub const LIVE_CHANNEL: &str = "orrery_live";

/// Ids in one notification: `v1 <instance> <project> ` is 70 bytes, each
/// id 33 (32 hex digits and a comma), so 200 ids stay under 6,700 bytes.
pub const IDS_PER_PAYLOAD: usize = 200;

/// "Events of `project` were committed by `instance`": one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNotice {
    /// The instance that committed them (it ignores its own notices).
    pub instance: Uuid,
    /// Their project.
    pub project: Uuid,
    /// Their ids, in the order they were sent.
    pub ids: Vec<Uuid>,
}

impl LiveNotice {
    /// The notification payloads: `v1 <instance> <project> <id>,<id>...`,
    /// at most [`IDS_PER_PAYLOAD`] ids each, in order.
    pub fn payloads(&self) -> Vec<String> {
        self.ids
            .chunks(IDS_PER_PAYLOAD)
            .map(|ids| {
                let mut p = String::with_capacity(70 + ids.len() * 33);
                p.push_str("v1 ");
                p.push_str(&self.instance.simple().to_string());
                p.push(' ');
                p.push_str(&self.project.simple().to_string());
                p.push(' ');
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        p.push(',');
                    }
                    p.push_str(&id.simple().to_string());
                }
                p
            })
            .collect()
    }

    /// Reads a payload written by [`Self::payloads`]; `None` for anything
    /// else (another version, another program on the channel).
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let instance = Uuid::parse_str(parts.next()?).ok()?;
        let project = Uuid::parse_str(parts.next()?).ok()?;
        let ids = parts
            .next()?
            .split(',')
            .map(Uuid::parse_str)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            instance,
            project,
            ids,
        })
    }
}

/// A connection listening on [`LIVE_CHANNEL`] (PostgreSQL only).
#[derive(Debug)]
pub struct LiveListener {
    inner: PgListener,
}

impl LiveListener {
    /// The next notification, or `Ok(None)` when the connection was lost
    /// (notifications sent meanwhile are lost; the next call reconnects and
    /// listens again).
    ///
    /// # Errors
    /// When reconnecting fails.
    pub async fn recv(&mut self) -> Result<Option<String>, StoreError> {
        let n: Option<PgNotification> = self.inner.try_recv().await.map_err(db_err)?;
        Ok(n.map(|n| n.payload().to_owned()))
    }

    /// A notification already received, without waiting.
    pub fn next_buffered(&mut self) -> Option<String> {
        self.inner.next_buffered().map(|n| n.payload().to_owned())
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))
}

impl Store {
    /// Listens on [`LIVE_CHANNEL`] on a connection of its own (not one of
    /// the readers'): `Ok(None)` on SQLite, where one instance owns the
    /// database and there is nobody to hear from.
    ///
    /// # Errors
    /// When the listening connection cannot be opened.
    pub async fn live_listener(&self) -> Result<Option<LiveListener>, StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        // A pool of its own, with the readers' connection options: the
        // listening connection is held for good, and must not take one of
        // `database.max_connections` from the queries.
        let options = self.db().get_postgres_connection_pool().connect_options();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*options).clone());
        let mut inner = PgListener::connect_with(&pool).await.map_err(db_err)?;
        inner.listen(LIVE_CHANNEL).await.map_err(db_err)?;
        Ok(Some(LiveListener { inner }))
    }

    /// Sends `payloads` on [`LIVE_CHANNEL`], in order, in one statement
    /// (PostgreSQL; nothing on SQLite).
    ///
    /// # Errors
    /// The database error.
    pub async fn notify_live(&self, payloads: &[String]) -> Result<(), StoreError> {
        if self.backend() != DatabaseBackend::Postgres || payloads.is_empty() {
            return Ok(());
        }
        let pool = self.db().get_postgres_connection_pool();
        sqlx::query(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
        )
        .bind(LIVE_CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// The stored events of `project` among `ids`, in storage order
    /// (missing ids are left out).
    ///
    /// # Errors
    /// The database error.
    pub async fn events_by_ids(
        &self,
        project: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = event::Entity::find()
            .filter(event::Column::ProjectId.eq(project))
            .filter(event::Column::Id.is_in(ids.iter().copied()))
            .order_by_asc(event::Column::Seq)
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| StoredEvent::from(m).event)
            .collect())
    }

    /// A page of `project`'s events named one of `names` (any name when
    /// empty) stored before `before_seq`, newest first: the live stream's
    /// replay walks back through these.
    ///
    /// # Errors
    /// The database error.
    pub async fn recent_events(
        &self,
        project: Uuid,
        names: &[String],
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<EventPage, StoreError> {
        let mut q = event::Entity::find().filter(event::Column::ProjectId.eq(project));
        if !names.is_empty() {
            q = q.filter(event::Column::Name.is_in(names.iter().map(String::as_str)));
        }
        if let Some(before) = before_seq {
            q = q.filter(event::Column::Seq.lt(before));
        }
        let rows = q
            .order_by_desc(event::Column::Seq)
            .limit(limit)
            .all(self.db())
            .await?;
        let full = rows.len() as u64 == limit;
        let events: Vec<StoredEvent> = rows.into_iter().map(Into::into).collect();
        let next_before_seq = if full {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_before_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_stay_under_the_limit() {
        let notice = LiveNotice {
            instance: Uuid::new_v4(),
            project: Uuid::new_v4(),
            ids: (0..450).map(|_| Uuid::new_v4()).collect(),
        };
        let payloads = notice.payloads();
        assert_eq!(payloads.len(), 3);
        let mut ids = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{}", p.len());
            let back = LiveNotice::parse(p).expect("parses");
            assert_eq!(back.instance, notice.instance);
            assert_eq!(back.project, notice.project);
            ids.extend(back.ids);
        }
        assert_eq!(ids, notice.ids);
    }

    #[test]
    fn foreign_payloads_are_ignored() {
        for p in ["", "hello", "v2 a b c", "v1 x y z", "v1 a b c d"] {
            assert_eq!(LiveNotice::parse(p), None, "{p}");
        }
    }
}
