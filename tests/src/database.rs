//! The database a test runs on: SQLite in the data directory, or a fresh
//! PostgreSQL database dropped when the test ends (even when it fails).

use sqlx::Connection;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    #[default]
    Sqlite,
    /// A fresh database on the PostgreSQL of `ORRERY_TEST_DATABASE_URL`.
    Postgres,
}

/// The backends to run on: SQLite always, PostgreSQL when
/// `ORRERY_TEST_DATABASE_URL` is set (else a line says it was skipped).
pub fn backends(test: &str) -> Vec<Backend> {
    if std::env::var("ORRERY_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        eprintln!("{test}: PostgreSQL part skipped: ORRERY_TEST_DATABASE_URL is not set");
        vec![Backend::Sqlite]
    }
}

/// A database created for one test and dropped when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL to give to orrery; `None` for SQLite.
    pub url: Option<String>,
    admin_url: Option<String>,
    name: Option<String>,
}

impl TestDatabase {
    /// Creates a fresh database for `backend`.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self {
                url: None,
                admin_url: None,
                name: None,
            },
            Backend::Postgres => {
                let admin_url = std::env::var("ORRERY_TEST_DATABASE_URL")
                    .expect("ORRERY_TEST_DATABASE_URL names the test PostgreSQL");
                let name = format!("orrery_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to ORRERY_TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin_url.rsplit_once('/').expect("URL with a database").0;
                Self {
                    url: Some(format!("{base}/{name}")),
                    admin_url: Some(admin_url),
                    name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (Some(admin), Some(name)) = (self.admin_url.take(), self.name.take()) else {
            return;
        };
        // Drop may run inside a runtime (end of an async test) or outside:
        // a thread with its own runtime works in both.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop a test database");
        }
    }
}
