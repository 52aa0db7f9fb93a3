//! Storage on SQLite (default, embedded) or PostgreSQL, through sea-orm.
//!
//! [`Store::connect`] opens the database named by the configuration (the
//! SQLite file is created in WAL mode when missing), [`Store::migrate`]
//! brings the schema up to date. Queries live in one file per concept.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement};
use sea_orm_migration::MigratorTrait;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::{Config, SqliteSynchronous as SyncSetting, redact_url};

pub mod accounts;
pub mod dead_letters;
pub mod entities;
pub mod events;
pub mod insights;
pub mod keys;
pub mod live;
pub mod maintenance;
pub mod migrations;
pub mod people;
pub mod pipelines;
pub mod plugins;
pub mod projects;
pub mod rollups;
pub mod sessions;
pub mod sql;
pub mod users;
pub mod writer_db;

pub use accounts::{Account, AuthSession, Role, Rotation};
pub use dead_letters::{DeadLetter, DeadLetterFilter, NewDeadLetter};
pub use events::{EventFilter, EventPage, InsertOutcome};
pub use insights::{Insight, NewInsight, PeriodTotals};
pub use keys::{ApiKey, KeyKind, NewKey};
pub use maintenance::StoreStats;
pub use pipelines::StoredPipeline;
pub use plugins::StoredPlugin;
pub use projects::Project;
pub use sessions::{PendingSessions, Session};
pub use users::UserSummary;
pub use writer_db::{EncodedEvent, WriterDb};

/// Page cache of the SQLite writer connection, in KiB (SQLite's negative
/// `cache_size`): big enough to keep the hot index pages of `events`.
const SQLITE_WRITER_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages after which the SQLite writer checkpoints on its own. The
/// background checkpointer normally does that work first, so the writer's
/// own checkpoint finds little left to copy; this bounds the WAL file
/// (about 4 KiB per page) even when the background task falls behind.
const SQLITE_WRITER_AUTOCHECKPOINT_PAGES: u32 = 4000;
/// How often the background task checkpoints the SQLite WAL.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or opened.
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The database URL names no supported database.
    #[error("unsupported database URL {0}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A row the caller named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The operation is not available on this backend.
    #[error("{0}")]
    Unsupported(String),
    /// The change would leave the instance without a lasting admin key
    /// (active, not revoked, not expiring after a rotation).
    #[error("the change would leave the instance without an admin key")]
    LastAdminKey,
    /// The change conflicts with what is stored (a taken e-mail, a first
    /// administrator who already exists); the message says which.
    #[error("{0}")]
    Conflict(String),
}

/// Rewrites `?` placeholders as `$1, $2...` for PostgreSQL.
pub(crate) fn sql_for(backend: DatabaseBackend, sql: &str) -> String {
    if backend != DatabaseBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Store {
    /// Runs the statement `sql` (with `?` placeholders) on the readers'
    /// connection and returns how many rows it changed.
    pub(crate) async fn exec(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<u64, StoreError> {
        let backend = self.db().get_database_backend();
        Ok(self
            .db()
            .execute(Statement::from_sql_and_values(
                backend,
                sql_for(backend, sql),
                values,
            ))
            .await?
            .rows_affected())
    }

    /// The first column of the first row of `sql`, if there is a row and
    /// it is not NULL.
    pub(crate) async fn scalar<T: sea_orm::TryGetable>(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<Option<T>, StoreError> {
        let rows = self.rows(sql, values).await?;
        Ok(rows
            .first()
            .map(|r| r.try_get_by_index::<Option<T>>(0))
            .transpose()?
            .flatten())
    }

    /// Runs `sql` (with `?` placeholders) on the readers' connection and
    /// returns its rows.
    pub(crate) async fn rows(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
        let backend = self.db().get_database_backend();
        Ok(self
            .db()
            .query_all(Statement::from_sql_and_values(
                backend,
                sql_for(backend, sql),
                values,
            ))
            .await?)
    }

    /// Runs `sql` and calls `each` with every row as it arrives: the
    /// database reads the next rows while `each` works on these (a
    /// query that reads many megabytes of rollups or index blobs does
    /// both at once instead of one after the other).
    pub(crate) async fn each_row(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
        mut each: impl FnMut(&sea_orm::QueryResult) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        use sea_orm::StreamTrait;
        let backend = self.db().get_database_backend();
        let mut rows = self
            .db()
            .stream(Statement::from_sql_and_values(
                backend,
                sql_for(backend, sql),
                values,
            ))
            .await?;
        while let Some(row) = rows.try_next().await? {
            each(&row)?;
        }
        Ok(())
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    writer: WriterDb,
    sqlite_path: Option<PathBuf>,
    /// Person numbers looked up, kept between queries.
    people: std::sync::Arc<people::PeopleCache>,
}

impl Store {
    /// Opens the configured database, creating the SQLite file (WAL mode)
    /// and the data directory when missing.
    ///
    /// # Errors
    /// [`StoreError::Connect`] naming the URL (without password) when the
    /// database cannot be reached.
    pub async fn connect(config: &Config) -> Result<Self, StoreError> {
        let url = config.effective_database_url();
        let timeout = Duration::from_secs(config.database.connect_timeout_secs.max(1));
        if url.starts_with("sqlite:") {
            let path = sqlite_path(&url);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let connect_err = |source| StoreError::Connect {
                url: redact_url(&url),
                source,
            };
            let options = SqliteConnectOptions::from_str(&url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match config.database.sqlite_synchronous {
                    SyncSetting::Full => SqliteSynchronous::Full,
                    SyncSetting::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(config.database.max_connections.max(2))
                .acquire_timeout(timeout)
                .connect_with(options.clone())
                .await
                .map_err(connect_err)?;
            // The writer's own connection: a warm page cache, and WAL
            // checkpoints mostly left to the background task below.
            let writer_options = options
                .pragma("cache_size", (-SQLITE_WRITER_CACHE_KIB).to_string())
                .pragma(
                    "wal_autocheckpoint",
                    SQLITE_WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                );
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(timeout)
                .connect_with(writer_options)
                .await
                .map_err(connect_err)?;
            tokio::spawn(checkpoint_sqlite(pool.clone()));
            Ok(Self {
                db: sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
                writer: WriterDb::sqlite(writer),
                sqlite_path: Some(path),
                people: std::sync::Arc::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect_err = |source| StoreError::Connect {
                url: redact_url(&url),
                source,
            };
            let pool = PgPoolOptions::new()
                .max_connections(config.database.max_connections.max(2))
                .acquire_timeout(timeout)
                .connect(&url)
                .await
                .map_err(connect_err)?;
            let writer = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(timeout)
                .connect(&url)
                .await
                .map_err(connect_err)?;
            Ok(Self {
                db: sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                writer: WriterDb::postgres(writer),
                sqlite_path: None,
                people: std::sync::Arc::default(),
            })
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(&url)))
        }
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// The database error of the failing migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The sea-orm connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The writer's own connection (see [`WriterDb`]).
    pub fn writer_db(&self) -> &WriterDb {
        &self.writer
    }

    /// Which database this is.
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// The SQLite file, when the store is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// The database error.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .execute(Statement::from_string(self.backend(), "SELECT 1"))
            .await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        // Closing a clone closes the shared pool.
        self.writer.close().await;
        let _ = self.db.clone().close().await;
    }
}

/// Checkpoints the SQLite WAL in the background, on a reader connection,
/// so that commits rarely pay for copying pages into the database file.
/// `PASSIVE` never blocks the writer or readers. Ends when the pool closes.
async fn checkpoint_sqlite(pool: sqlx::SqlitePool) {
    let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                break;
            }
            tracing::debug!(error = %err, "background WAL checkpoint failed");
        }
    }
}

/// The file path inside a `sqlite:` URL.
fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or(rest);
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_path_from_url() {
        assert_eq!(
            sqlite_path("sqlite://./data/orrery.db"),
            PathBuf::from("./data/orrery.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db?mode=rwc"),
            PathBuf::from("/tmp/x.db")
        );
    }
}
