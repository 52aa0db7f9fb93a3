//! Users: the distinct ids a project's events carry, with when they were
//! first and last seen and how many events and sessions they have, read
//! from the events themselves.

use sea_orm::DbErr;
use uuid::Uuid;

use super::{Store, StoreError};

/// One user of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The distinct id.
    pub distinct_id: String,
    /// Their first event's time, ms.
    pub first_seen: i64,
    /// Their last event's time, ms.
    pub last_seen: i64,
    /// Their events.
    pub events: i64,
    /// Distinct session ids among them.
    pub sessions: i64,
}

const COLUMNS: &str = "distinct_id, MIN(\"timestamp\"), MAX(\"timestamp\"), COUNT(*), \
                       COUNT(DISTINCT session_id)";

fn summary(r: &sea_orm::QueryResult) -> Result<UserSummary, DbErr> {
    Ok(UserSummary {
        distinct_id: r.try_get_by_index(0)?,
        first_seen: r.try_get_by_index(1)?,
        last_seen: r.try_get_by_index(2)?,
        events: r.try_get_by_index(3)?,
        sessions: r.try_get_by_index(4)?,
    })
}

impl Store {
    /// The users with events in `[from, to)`, last seen first (then by
    /// id), `limit` from `offset`, and how many there are in all. Their
    /// numbers are those of that range.
    ///
    /// # Errors
    /// The database error.
    pub async fn list_users(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<UserSummary>, u64), StoreError> {
        let filter = "FROM events WHERE project_id = ? AND distinct_id IS NOT NULL \
                      AND \"timestamp\" >= ? AND \"timestamp\" < ?";
        let rows = self
            .rows(
                &format!(
                    "SELECT {COLUMNS} {filter} GROUP BY distinct_id \
                     ORDER BY MAX(\"timestamp\") DESC, distinct_id LIMIT ? OFFSET ?"
                ),
                vec![
                    project.into(),
                    from.into(),
                    to.into(),
                    // The databases take signed integers: a larger limit or
                    // offset is as good as the largest.
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                    i64::try_from(offset).unwrap_or(i64::MAX).into(),
                ],
            )
            .await?;
        let users = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
        let total = self
            .rows(
                &format!("SELECT COUNT(DISTINCT distinct_id) {filter}"),
                vec![project.into(), from.into(), to.into()],
            )
            .await?;
        let total: i64 = total
            .first()
            .map(|r| r.try_get_by_index(0))
            .transpose()?
            .unwrap_or(0);
        Ok((users, u64::try_from(total).unwrap_or(0)))
    }

    /// One user over all time; `None` when no event carries that id.
    ///
    /// # Errors
    /// The database error.
    pub async fn get_user(
        &self,
        project: Uuid,
        distinct_id: &str,
    ) -> Result<Option<UserSummary>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {COLUMNS} FROM events WHERE project_id = ? AND distinct_id = ? \
                     GROUP BY distinct_id"
                ),
                vec![project.into(), distinct_id.into()],
            )
            .await?;
        Ok(rows.first().map(summary).transpose()?)
    }
}
