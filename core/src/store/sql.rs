//! Running a query of the SQL endpoint (checked and rewritten by
//! [`crate::analytics::sql::gate`]) read-only, with a time limit, a row
//! limit and a size limit.
//!
//! SQLite: a new connection that opens the file read-only with
//! `query_only` on, interrupted by a progress handler at the deadline.
//! PostgreSQL: a `READ ONLY` transaction with a `statement_timeout`, rolled
//! back at the end, through the simple query protocol so that every value
//! arrives as text (numeric sums and averages included).

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Column, ConnectOptions, Row, TypeInfo, ValueRef};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::analytics::sql::{Flavor, gate};

/// Limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Rows returned at most (one more is read to tell that there were).
    pub max_rows: usize,
    /// Wall time.
    pub timeout: Duration,
    /// Bytes of values returned at most.
    pub max_bytes: usize,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlAnswer {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows of values (numbers, text, booleans, JSON, null).
    pub rows: Vec<Vec<Value>>,
    /// Whether rows were left out (over `max_rows`).
    pub truncated: bool,
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The gate refused it.
    #[error("{0}")]
    Refused(String),
    /// The database refused it (no such column, a type error...).
    #[error("the database refused the query: {0}")]
    Failed(String),
    /// It ran past the time limit.
    #[error("the query ran longer than {0} ms and was stopped")]
    Timeout(u128),
    /// Its answer is over the size limit.
    #[error("the answer is larger than {0} bytes: select fewer rows or columns")]
    TooLarge(usize),
    /// The database could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An answer being read, within the limits.
struct Collect {
    answer: SqlAnswer,
    bytes: usize,
    limits: SqlLimits,
}

impl Collect {
    fn new(limits: SqlLimits) -> Self {
        Self {
            answer: SqlAnswer {
                columns: Vec::new(),
                rows: Vec::new(),
                truncated: false,
            },
            bytes: 0,
            limits,
        }
    }

    /// Whether a row can be taken: false (and `truncated`) when full.
    /// Takes the column names from the first row.
    fn room<R: Row>(&mut self, row: &R) -> bool {
        if self.answer.columns.is_empty() {
            self.answer.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
        }
        if self.answer.rows.len() == self.limits.max_rows {
            self.answer.truncated = true;
            return false;
        }
        true
    }

    /// Counts a value's size, failing past the limit.
    fn count(&mut self, v: &Value) -> Result<(), SqlError> {
        self.bytes += match v {
            Value::String(s) => s.len() + 2,
            other => other.to_string().len(),
        };
        if self.bytes > self.limits.max_bytes {
            return Err(SqlError::TooLarge(self.limits.max_bytes));
        }
        Ok(())
    }
}

impl Store {
    /// Checks `text` and runs it over `project`'s rows.
    ///
    /// # Errors
    /// [`SqlError`] saying why there is no answer.
    pub async fn run_sql(
        &self,
        project: Uuid,
        text: &str,
        limits: SqlLimits,
    ) -> Result<SqlAnswer, SqlError> {
        match self.sqlite_path() {
            Some(path) => {
                let sql = gate(text, Flavor::Sqlite, project).map_err(SqlError::Refused)?;
                let path = path.to_owned();
                sqlite_run(&path, &sql, limits).await
            }
            None => {
                let sql = gate(text, Flavor::Postgres, project).map_err(SqlError::Refused)?;
                self.postgres_run(&sql, limits).await
            }
        }
    }

    async fn postgres_run(&self, sql: &str, limits: SqlLimits) -> Result<SqlAnswer, SqlError> {
        let pool = self.db().get_postgres_connection_pool();
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let ms = limits.timeout.as_millis().max(1);
        sqlx::query(&format!("SET LOCAL statement_timeout = {ms}"))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let mut answer = Collect::new(limits);
        let result: Result<(), SqlError> = async {
            let mut rows = sqlx::raw_sql(sql).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(|e| pg_error(e, ms))? {
                if !answer.room(&row) {
                    break;
                }
                let mut out = Vec::with_capacity(row.len());
                for (i, col) in row.columns().iter().enumerate() {
                    let raw = row.try_get_raw(i).map_err(db)?;
                    let v = if raw.is_null() {
                        Value::Null
                    } else {
                        let text: String = row.try_get_unchecked(i).map_err(db)?;
                        pg_value(col.type_info().name(), text)
                    };
                    answer.count(&v)?;
                    out.push(v);
                }
                answer.answer.rows.push(out);
            }
            Ok(())
        }
        .await;
        // Read only: nothing to keep.
        tx.rollback().await.map_err(db)?;
        result.map(|()| answer.answer)
    }
}

/// A PostgreSQL value in text form as JSON, by its type.
fn pg_value(ty: &str, text: String) -> Value {
    match ty {
        "INT2" | "INT4" | "INT8" | "OID" => {
            text.parse::<i64>().map_or(Value::String(text), Value::from)
        }
        "FLOAT4" | "FLOAT8" | "NUMERIC" => match text.parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::String(text), Value::Number),
        },
        "BOOL" => Value::Bool(text == "t"),
        "JSON" | "JSONB" => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

fn pg_error(e: sqlx::Error, ms: u128) -> SqlError {
    if let Some(d) = e.as_database_error() {
        if d.code().as_deref() == Some("57014") {
            return SqlError::Timeout(ms);
        }
        return SqlError::Failed(d.message().to_owned());
    }
    db(e)
}

/// A database failure that is not the query's fault.
#[allow(clippy::needless_pass_by_value)] // used as `map_err(db)`
fn db(e: sqlx::Error) -> SqlError {
    SqlError::Store(StoreError::Db(sea_orm::DbErr::Custom(e.to_string())))
}

async fn sqlite_run(
    path: &std::path::Path,
    sql: &str,
    limits: SqlLimits,
) -> Result<SqlAnswer, SqlError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .pragma("query_only", "ON")
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(db)?;
    let deadline = Instant::now() + limits.timeout;
    conn.lock_handle()
        .await
        .map_err(db)?
        .set_progress_handler(1000, move || Instant::now() < deadline);
    let ms = limits.timeout.as_millis();
    let mut answer = Collect::new(limits);
    let result: Result<(), SqlError> = async {
        let mut rows = sqlx::query(sql).fetch(&mut conn);
        while let Some(row) = rows.try_next().await.map_err(|e| {
            if Instant::now() >= deadline {
                SqlError::Timeout(ms)
            } else {
                match e.as_database_error() {
                    Some(d) => SqlError::Failed(d.message().to_owned()),
                    None => db(e),
                }
            }
        })? {
            if !answer.room(&row) {
                break;
            }
            let mut out = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                let raw = row.try_get_raw(i).map_err(db)?;
                let v = if raw.is_null() {
                    Value::Null
                } else {
                    match raw.type_info().name() {
                        "INTEGER" => Value::from(row.try_get_unchecked::<i64, _>(i).map_err(db)?),
                        "REAL" => serde_json::Number::from_f64(
                            row.try_get_unchecked::<f64, _>(i).map_err(db)?,
                        )
                        .map_or(Value::Null, Value::Number),
                        "BLOB" => Value::String(hex::encode(
                            row.try_get_unchecked::<Vec<u8>, _>(i).map_err(db)?,
                        )),
                        _ => Value::String(row.try_get_unchecked::<String, _>(i).map_err(db)?),
                    }
                };
                answer.count(&v)?;
                out.push(v);
            }
            answer.answer.rows.push(out);
        }
        Ok(())
    }
    .await;
    drop(conn);
    result.map(|()| answer.answer)
}
