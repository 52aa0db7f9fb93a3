//! Insights storage, the counts they are computed from, and job leases.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use serde_json::Value;
use uuid::Uuid;

use super::entities::insight;
use super::{Store, StoreError, sql_for};
use crate::event::now_ms;

/// An insight to store (or replace, by `key`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewInsight {
    /// Identity within the project, e.g. `summary:2026-11-22`.
    pub key: String,
    /// `summary`, `trend` or `anomaly`.
    pub kind: &'static str,
    /// One line.
    pub title: String,
    /// Plain words with the numbers.
    pub content: String,
    /// The numbers.
    pub metadata: Value,
    /// Start of the period, ms.
    pub period_start: i64,
    /// End of the period (exclusive), ms.
    pub period_end: i64,
}

/// A stored insight.
#[derive(Debug, Clone, PartialEq)]
pub struct Insight {
    /// Id.
    pub id: Uuid,
    /// Identity within the project.
    pub key: String,
    /// `summary`, `trend` or `anomaly`.
    pub kind: String,
    /// One line.
    pub title: String,
    /// Plain words with the numbers.
    pub content: String,
    /// The numbers.
    pub metadata: Value,
    /// Start of the period, ms.
    pub period_start: i64,
    /// End of the period, ms.
    pub period_end: i64,
    /// When generated, ms.
    pub generated_at: i64,
}

impl From<insight::Model> for Insight {
    fn from(m: insight::Model) -> Self {
        Self {
            id: m.id,
            key: m.key,
            kind: m.kind,
            title: m.title,
            content: m.content,
            metadata: m.metadata,
            period_start: m.period_start,
            period_end: m.period_end,
            generated_at: m.generated_at,
        }
    }
}

/// Totals of a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    /// Events.
    pub events: i64,
    /// Distinct visitor ids.
    pub visitors: i64,
    /// Page views.
    pub pageviews: i64,
    /// Sessions that started in the period.
    pub sessions: i64,
    /// Of which bounced.
    pub bounced: i64,
    /// Sum of their durations, ms.
    pub session_ms: i64,
}

impl Store {
    /// Events per (name, hour) in `[from, to)` by event time; the hour is
    /// `timestamp / 3600000`.
    ///
    /// # Errors
    /// The database error.
    pub async fn hourly_counts(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT name, \"timestamp\" / 3600000 AS hour, COUNT(*) AS n FROM events \
                 WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ? \
                 GROUP BY name, \"timestamp\" / 3600000",
                vec![project.into(), from.into(), to.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get_by_index::<String>(0)?,
                    r.try_get_by_index::<i64>(1)?,
                    r.try_get_by_index::<i64>(2)?,
                ))
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(Into::into)
    }

    /// Totals of `[from, to)`: events, visitors and page views by event
    /// time, sessions by start.
    ///
    /// # Errors
    /// The database error.
    pub async fn period_totals(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
    ) -> Result<PeriodTotals, StoreError> {
        let names = crate::store::sessions::PAGEVIEW_NAMES;
        let ev = self
            .rows(
                "SELECT COUNT(*), COUNT(DISTINCT visitor_id), \
                 COALESCE(SUM(CASE WHEN name IN (?, ?, ?) THEN 1 ELSE 0 END), 0) \
                 FROM events WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?",
                vec![
                    names[0].into(),
                    names[1].into(),
                    names[2].into(),
                    project.into(),
                    from.into(),
                    to.into(),
                ],
            )
            .await?;
        let se = self
            .rows(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN bounce THEN 1 ELSE 0 END), 0), \
                 CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) \
                 FROM sessions WHERE project_id = ? AND started_at >= ? AND started_at < ?",
                vec![project.into(), from.into(), to.into()],
            )
            .await?;
        let get = |rows: &[sea_orm::QueryResult], i: usize| -> Result<i64, StoreError> {
            Ok(rows
                .first()
                .map(|r| r.try_get_by_index::<i64>(i))
                .transpose()?
                .unwrap_or(0))
        };
        Ok(PeriodTotals {
            events: get(&ev, 0)?,
            visitors: get(&ev, 1)?,
            pageviews: get(&ev, 2)?,
            sessions: get(&se, 0)?,
            bounced: get(&se, 1)?,
            session_ms: get(&se, 2)?,
        })
    }

    /// Stores insights, replacing those with the same project and key.
    ///
    /// # Errors
    /// The database error.
    pub async fn upsert_insights(
        &self,
        project: Uuid,
        insights: &[NewInsight],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        for i in insights {
            insight::Entity::insert(insight::ActiveModel {
                id: Set(Uuid::now_v7()),
                project_id: Set(project),
                key: Set(i.key.clone()),
                kind: Set(i.kind.to_owned()),
                title: Set(i.title.clone()),
                content: Set(i.content.clone()),
                metadata: Set(i.metadata.clone()),
                period_start: Set(i.period_start),
                period_end: Set(i.period_end),
                generated_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([insight::Column::ProjectId, insight::Column::Key])
                    .update_columns([
                        insight::Column::Title,
                        insight::Column::Content,
                        insight::Column::Metadata,
                        insight::Column::PeriodStart,
                        insight::Column::PeriodEnd,
                        insight::Column::GeneratedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.db())
            .await?;
        }
        Ok(())
    }

    /// A project's insights, newest period first, of `kind` when given.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_insights(
        &self,
        project: Uuid,
        kind: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Insight>, StoreError> {
        let mut q = insight::Entity::find().filter(insight::Column::ProjectId.eq(project));
        if let Some(kind) = kind {
            q = q.filter(insight::Column::Kind.eq(kind));
        }
        Ok(q.order_by_desc(insight::Column::PeriodEnd)
            .order_by_asc(insight::Column::Kind)
            .order_by_asc(insight::Column::Key)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Takes (or renews) the lease of job `name` for `holder` until
    /// `expires_at` (ms), when it is free, expired or already `holder`'s.
    /// Instances sharing a database run a periodic job only while they
    /// hold its lease, so one runs it at a time.
    ///
    /// # Errors
    /// The database error.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let backend = self.db().get_database_backend();
        let now = now_ms();
        self.db()
            .execute(Statement::from_sql_and_values(
                backend,
                sql_for(
                    backend,
                    "INSERT INTO job_leases (name, holder, expires_at) VALUES (?, '', 0) \
                     ON CONFLICT (name) DO NOTHING",
                ),
                vec![name.into()],
            ))
            .await?;
        let res = self
            .db()
            .execute(Statement::from_sql_and_values(
                backend,
                sql_for(
                    backend,
                    "UPDATE job_leases SET holder = ?, expires_at = ? \
                     WHERE name = ? AND (expires_at < ? OR holder = ?)",
                ),
                vec![
                    holder.into(),
                    expires_at.into(),
                    name.into(),
                    now.into(),
                    holder.into(),
                ],
            ))
            .await?;
        Ok(res.rows_affected() == 1)
    }
}
