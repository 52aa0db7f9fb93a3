//! Maintenance: statistics, online backup, vacuum.

use std::path::Path;

use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait, PaginatorTrait, Statement};

use super::entities::{dead_letter, project};
use super::{Store, StoreError};

/// Figures for `orrery stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Stored events.
    pub events: u64,
    /// Projects.
    pub projects: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Size of the database in bytes (SQLite file with its WAL, or the
    /// PostgreSQL database).
    pub database_bytes: u64,
}

impl Store {
    /// Counts and sizes.
    ///
    /// # Errors
    /// The database error.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let events = self.count_events(None).await?;
        let projects = project::Entity::find().count(self.db()).await?;
        let dead_letters = dead_letter::Entity::find().count(self.db()).await?;
        let database_bytes = match self.sqlite_path() {
            Some(path) => ["", "-wal", "-shm"]
                .iter()
                .filter_map(|suffix| {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    std::fs::metadata(p).ok()
                })
                .map(|m| m.len())
                .sum(),
            None => {
                let row = self
                    .db()
                    .query_one(Statement::from_string(
                        DatabaseBackend::Postgres,
                        "SELECT pg_database_size(current_database()) AS size",
                    ))
                    .await?;
                row.and_then(|r| r.try_get::<i64>("", "size").ok())
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0)
            }
        };
        Ok(StoreStats {
            events,
            projects,
            dead_letters,
            database_bytes,
        })
    }

    /// Writes a consistent copy of the SQLite database to `output` while it
    /// is in use (`VACUUM INTO`). The file must not exist yet.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] on PostgreSQL (use `pg_dump`), or when
    /// `output` exists.
    pub async fn backup(&self, output: &Path) -> Result<(), StoreError> {
        if self.sqlite_path().is_none() {
            return Err(StoreError::Unsupported(
                "backup copies the SQLite file; for PostgreSQL use pg_dump".to_owned(),
            ));
        }
        if output.exists() {
            return Err(StoreError::Unsupported(format!(
                "{} already exists; choose a new file",
                output.display()
            )));
        }
        let target = output.to_string_lossy().replace('\'', "''");
        self.db()
            .execute_unprepared(&format!("VACUUM INTO '{target}'"))
            .await?;
        Ok(())
    }

    /// Reclaims space and refreshes planner statistics.
    ///
    /// # Errors
    /// The database error.
    pub async fn vacuum(&self) -> Result<(), StoreError> {
        match self.backend() {
            DatabaseBackend::Sqlite => {
                self.db().execute_unprepared("VACUUM").await?;
                self.db()
                    .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                    .await?;
                self.db().execute_unprepared("ANALYZE").await?;
            }
            _ => {
                self.db().execute_unprepared("VACUUM ANALYZE").await?;
            }
        }
        Ok(())
    }
}
