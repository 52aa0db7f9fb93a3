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

pub mod dead_letters;
pub mod entities;
pub mod events;
pub mod keys;
pub mod maintenance;
pub mod migrations;
pub mod projects;

pub use dead_letters::NewDeadLetter;
pub use events::{EventFilter, EventPage, InsertOutcome};
pub use keys::{ApiKey, KeyKind, NewKey};
pub use maintenance::StoreStats;
pub use projects::Project;

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
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    sqlite_path: Option<PathBuf>,
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
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Ok(Self {
                db: sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
                sqlite_path: Some(path),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(config.database.max_connections.max(2))
                .acquire_timeout(timeout)
                .connect(&url)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redact_url(&url),
                    source,
                })?;
            Ok(Self {
                db: sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                sqlite_path: None,
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
        let _ = self.db.clone().close().await;
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
