//! The writer's own connection and its insert path.
//!
//! The writer commits through a pool of exactly one connection, apart from
//! the readers' pool: on SQLite its page cache stays warm from commit to
//! commit and checkpoints are left to a background task (see
//! [`super::Store::connect`]); on PostgreSQL it never waits behind readers.
//!
//! Events are inserted through sqlx directly, binding borrowed values:
//! on SQLite with prepared multi-row statements of a few fixed sizes (the
//! SQL text is built once per size and stays in the connection's statement
//! cache), on PostgreSQL with one `INSERT ... SELECT FROM UNNEST(arrays)`
//! per commit. Values are encoded exactly as sea-orm encodes them (uuids as
//! 16-byte blobs on SQLite and `uuid` on PostgreSQL, JSON as its text), so
//! the entities read them back unchanged.
//!
//! `ON CONFLICT (project_id, id) DO NOTHING` keeps duplicates out. The fast
//! path only counts affected rows; when fewer rows than events were
//! inserted (some were duplicates), the transaction is rolled back and
//! redone in a mode that tells which event was which, so each event is
//! reported exactly as [`InsertOutcome::Inserted`] or
//! [`InsertOutcome::Duplicate`].
//!
//! Sessions are written apart from the events, once per interval, by
//! [`WriterDb::flush_sessions`]; see [`super::sessions`].

use std::collections::HashSet;
use std::sync::OnceLock;

use sea_orm::{ConnAcquireErr, DatabaseBackend, DbErr, RuntimeErr};
use sqlx::{PgPool, Postgres, SqlitePool, Transaction};
use uuid::Uuid;

use super::dead_letters::NewDeadLetter;
use super::events::InsertOutcome;
use super::rollups::{pg_mark, recovery_marks, sqlite_mark};
use super::sessions::{PendingSessions, SESSION_CHUNKS, recompute_sql, upsert_sql};
use crate::event::{Event, now_ms};

/// The inserted columns of `events`, in bind order.
const EVENT_COLUMNS: &str = "id, project_id, name, distinct_id, session_id, \"timestamp\", \
    received_at, url, referrer, user_agent, properties, ip_hash, visitor_id, enrichment";
/// Number of [`EVENT_COLUMNS`].
const EVENT_COLUMN_COUNT: usize = 14;
/// Rows per SQLite statement, largest first: a group is cut greedily into
/// these sizes, so at most a handful of distinct statements are prepared.
/// 256 rows x 14 columns stays far below SQLite's 32766 bound parameters.
const SQLITE_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// The writer's connection: a pool of exactly one connection.
#[derive(Clone, Debug)]
pub struct WriterDb {
    pool: WriterPool,
}

#[derive(Clone, Debug)]
enum WriterPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An event with its JSON columns already encoded as text. The writer
/// encodes in the caller's task ([`crate::writer::Writer::write`]), so
/// the single writer task spends its time on the database only.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// The event.
    pub event: Event,
    properties: String,
    enrichment: String,
}

impl EncodedEvent {
    /// Encodes `event`'s JSON columns.
    pub fn new(event: Event) -> Self {
        // A map of JSON values always serializes.
        let properties = serde_json::to_string(&event.properties).unwrap_or_else(|_| "{}".into());
        let enrichment = serde_json::to_string(&event.enrichment).unwrap_or_else(|_| "{}".into());
        Self {
            event,
            properties,
            enrichment,
        }
    }
}

/// One event ready to bind: the event and its JSON columns as text.
struct Row<'a> {
    event: &'a Event,
    properties: &'a str,
    enrichment: &'a str,
}

impl WriterDb {
    pub(super) fn sqlite(pool: SqlitePool) -> Self {
        Self {
            pool: WriterPool::Sqlite(pool),
        }
    }

    pub(super) fn postgres(pool: PgPool) -> Self {
        Self {
            pool: WriterPool::Postgres(pool),
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> DatabaseBackend {
        match self.pool {
            WriterPool::Sqlite(_) => DatabaseBackend::Sqlite,
            WriterPool::Postgres(_) => DatabaseBackend::Postgres,
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        match &self.pool {
            WriterPool::Sqlite(p) => p.close().await,
            WriterPool::Postgres(p) => p.close().await,
        }
    }

    /// Inserts `events` and `dead` letters in one transaction and commits
    /// it. An event whose `(project_id, id)` is already stored, or repeats
    /// an earlier one of the same call, is a [`InsertOutcome::Duplicate`]
    /// and is not stored again. Returns one outcome per event, in order.
    ///
    /// # Errors
    /// The database error; nothing was stored then. Connection failures are
    /// [`DbErr::Conn`] or [`DbErr::ConnectionAcquire`].
    pub async fn commit(
        &self,
        events: &[&EncodedEvent],
        dead: &[NewDeadLetter],
    ) -> Result<Vec<InsertOutcome>, DbErr> {
        // First occurrence of each (project, id) in this call; later ones
        // are duplicates without asking the database.
        let mut seen = HashSet::with_capacity(events.len());
        let mut firsts = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert((e.event.project_id, e.event.id)) {
                firsts.push(i);
                rows.push(Row {
                    event: &e.event,
                    properties: &e.properties,
                    enrichment: &e.enrichment,
                });
            }
        }
        // Fast first; when some rows turned out to be duplicates, again in
        // the mode that tells which.
        let inserted = match self.insert(&rows, dead, false).await? {
            Some(inserted) => inserted,
            None => self
                .insert(&rows, dead, true)
                .await?
                .ok_or_else(|| DbErr::Custom("insert outcomes unknown".into()))?,
        };
        let mut outcomes = vec![InsertOutcome::Duplicate; events.len()];
        for (&i, ok) in firsts.iter().zip(inserted) {
            if ok {
                outcomes[i] = InsertOutcome::Inserted;
            }
        }
        Ok(outcomes)
    }
}

impl WriterDb {
    /// One transaction on this backend; see [`sqlite_commit`].
    async fn insert(
        &self,
        rows: &[Row<'_>],
        dead: &[NewDeadLetter],
        exact: bool,
    ) -> Result<Option<Vec<bool>>, DbErr> {
        match &self.pool {
            WriterPool::Sqlite(pool) => sqlite_commit(pool, rows, dead, exact).await,
            WriterPool::Postgres(pool) => pg_commit(pool, rows, dead, exact).await,
        }
    }
}

/// Writes dead letters in an open transaction `$tx` with the backend's
/// `$sql` (the two backends differ only in placeholders and a JSON cast).
macro_rules! insert_dead_letters {
    ($tx:expr, $sql:expr, $dead:expr) => {{
        let now = now_ms();
        for l in $dead {
            let payload =
                serde_json::to_string(&l.payload).map_err(|e| DbErr::Json(e.to_string()))?;
            sqlx::query($sql)
                .bind(Uuid::now_v7())
                .bind(l.project_id)
                .bind(l.event_id)
                .bind(payload)
                .bind(l.plugin.as_str())
                .bind(l.error.as_str())
                .bind(now)
                .execute(&mut *$tx)
                .await
                .map_err(exec_err)?;
        }
    }};
}

/// SQL of the session flush on one backend.
struct MarkSql {
    /// Deletes the marks whose heartbeat is older than `$1`, other than
    /// writer `$2`'s, returning their folded `seq`.
    take_stale: &'static str,
    /// Sets writer `$1`'s mark to folded `seq` `$2` and heartbeat `$3`.
    renew: &'static str,
}

const SQLITE_MARKS: MarkSql = MarkSql {
    take_stale: "DELETE FROM session_marks WHERE heartbeat_at < ? AND writer_id <> ? \
                 RETURNING folded_seq",
    renew: "INSERT INTO session_marks (writer_id, folded_seq, heartbeat_at) VALUES (?, ?, ?) \
            ON CONFLICT (writer_id) DO UPDATE SET folded_seq = excluded.folded_seq, \
            heartbeat_at = excluded.heartbeat_at",
};

const PG_MARKS: MarkSql = MarkSql {
    take_stale: "DELETE FROM session_marks WHERE heartbeat_at < $1 AND writer_id <> $2 \
                 RETURNING folded_seq",
    renew: "INSERT INTO session_marks (writer_id, folded_seq, heartbeat_at) VALUES ($1, $2, $3) \
            ON CONFLICT (writer_id) DO UPDATE SET folded_seq = excluded.folded_seq, \
            heartbeat_at = excluded.heartbeat_at",
};

/// The session flush in an open transaction `$tx` (see
/// [`WriterDb::flush_sessions`]); `$postgres` picks the SQL. Evaluates to
/// the number of stale marks recovered.
macro_rules! flush_sessions {
    ($tx:expr, $postgres:expr, $mark:path, $pending:expr, $writer:expr, $now:expr, $stale_before:expr) => {{
        let marks = if $postgres { &PG_MARKS } else { &SQLITE_MARKS };
        // A fixed order, so that two instances sharing PostgreSQL lock
        // common sessions in the same order and cannot deadlock.
        let mut rows: Vec<_> = $pending.rows().collect();
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        // Rollups to redo: the hours of the stored events, and the start
        // hours of the sessions they change (read before the change).
        let keys: Vec<(Uuid, &str)> = rows.iter().map(|(p, s, _)| (*p, *s)).collect();
        $mark(&mut *$tx, $pending.hours().collect(), &keys)
            .await
            .map_err(exec_err)?;
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let size = chunk_len(&SESSION_CHUNKS, rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut q = sqlx::query(upsert_sql($postgres, size));
            for (project, session, d) in chunk {
                q = q
                    .bind(*project)
                    .bind(*session)
                    .bind(d.visitor_id.as_deref())
                    .bind(d.distinct_id.as_deref())
                    .bind(d.started_at)
                    .bind(d.ended_at)
                    .bind(d.ended_at - d.started_at)
                    .bind(d.events)
                    .bind(d.pageviews)
                    .bind(d.entry_page.as_deref())
                    .bind(d.exit_page.as_deref())
                    .bind(d.pageviews <= 1);
            }
            q.execute(&mut *$tx).await.map_err(exec_err)?;
        }
        let stale: Vec<i64> = sqlx::query_scalar(marks.take_stale)
            .bind($stale_before)
            .bind($writer)
            .fetch_all(&mut *$tx)
            .await
            .map_err(exec_err)?;
        if let Some(&from) = stale.iter().min() {
            let [event_hours, session_hours] = recovery_marks($postgres);
            for sql in [&event_hours, &session_hours] {
                sqlx::query(sql)
                    .bind(from)
                    .execute(&mut *$tx)
                    .await
                    .map_err(exec_err)?;
            }
            sqlx::query(recompute_sql($postgres))
                .bind(from)
                .execute(&mut *$tx)
                .await
                .map_err(exec_err)?;
            sqlx::query(&session_hours)
                .bind(from)
                .execute(&mut *$tx)
                .await
                .map_err(exec_err)?;
        }
        let folded: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&mut *$tx)
            .await
            .map_err(exec_err)?;
        sqlx::query(marks.renew)
            .bind($writer)
            .bind(folded)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(exec_err)?;
        stale.len()
    }};
}

/// The largest of the statement sizes `sizes` (largest first, ending in
/// 1) that fits in `left` remaining rows.
fn chunk_len(sizes: &[usize], left: usize) -> usize {
    sizes.iter().copied().find(|&c| c <= left).unwrap_or(1)
}

/// A statement's error, as sea-orm would report it.
pub(super) fn exec_err(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed) => DbErr::Conn(RuntimeErr::SqlxError(e)),
        e => DbErr::Exec(RuntimeErr::SqlxError(e)),
    }
}

/// The SQLite insert of `rows` rows (one of [`SQLITE_CHUNKS`]), built once.
fn sqlite_insert_sql(rows: usize) -> &'static str {
    static CACHE: [OnceLock<String>; SQLITE_CHUNKS.len()] =
        [const { OnceLock::new() }; SQLITE_CHUNKS.len()];
    let slot = SQLITE_CHUNKS
        .iter()
        .position(|&c| c == rows)
        .expect("a chunk size");
    CACHE[slot].get_or_init(|| {
        let row = format!("({})", vec!["?"; EVENT_COLUMN_COUNT].join(", "));
        let mut sql = format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES {row}");
        for _ in 1..rows {
            sql.push_str(", ");
            sql.push_str(&row);
        }
        sql.push_str(" ON CONFLICT (project_id, id) DO NOTHING");
        sql
    })
}

/// Inserts `rows` and `dead` in one SQLite transaction. Returns whether
/// each row was inserted; `None` (after rolling back) when `exact` is off
/// and some rows were duplicates, telling the caller to redo it exactly.
async fn sqlite_commit(
    pool: &SqlitePool,
    rows: &[Row<'_>],
    dead: &[NewDeadLetter],
    exact: bool,
) -> Result<Option<Vec<bool>>, DbErr> {
    let mut tx = pool.begin().await.map_err(exec_err)?;
    let mut inserted = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        // Exact mode goes row by row: the affected count tells each one.
        let size = if exact {
            1
        } else {
            chunk_len(&SQLITE_CHUNKS, rest.len())
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(sqlite_insert_sql(size));
        for r in chunk {
            let e = r.event;
            q = q
                .bind(e.id)
                .bind(e.project_id)
                .bind(e.name.as_str())
                .bind(e.distinct_id.as_deref())
                .bind(e.session_id.as_deref())
                .bind(e.timestamp)
                .bind(e.received_at)
                .bind(e.url.as_deref())
                .bind(e.referrer.as_deref())
                .bind(e.user_agent.as_deref())
                .bind(r.properties)
                .bind(e.ip_hash.as_deref())
                .bind(e.visitor_id.as_deref())
                .bind(r.enrichment);
        }
        let affected = q.execute(&mut *tx).await.map_err(exec_err)?.rows_affected();
        if exact {
            inserted.push(affected == 1);
        } else if affected == size as u64 {
            inserted.extend(std::iter::repeat_n(true, size));
        } else {
            tx.rollback().await.map_err(exec_err)?;
            return Ok(None);
        }
    }
    insert_dead_letters!(
        tx,
        "INSERT INTO dead_letters (id, project_id, event_id, payload, plugin, error, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        dead
    );
    tx.commit().await.map_err(exec_err)?;
    Ok(Some(inserted))
}

/// The PostgreSQL insert of a whole group: one statement over arrays.
const PG_INSERT: &str = "INSERT INTO events (id, project_id, name, distinct_id, session_id, \
    \"timestamp\", received_at, url, referrer, user_agent, properties, ip_hash, visitor_id, \
    enrichment) \
    SELECT id, project_id, name, distinct_id, session_id, ts, received_at, url, referrer, \
    user_agent, properties::json, ip_hash, visitor_id, enrichment::json \
    FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[], \
    $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
    $14::text[]) AS u(id, project_id, name, distinct_id, session_id, ts, received_at, url, \
    referrer, user_agent, properties, ip_hash, visitor_id, enrichment) \
    ON CONFLICT (project_id, id) DO NOTHING";

/// One optional text column of `rows`, as an array to bind.
fn column<'a>(rows: &[Row<'a>], f: impl Fn(&'a Event) -> Option<&'a str>) -> Vec<Option<&'a str>> {
    rows.iter().map(|r| f(r.event)).collect()
}

/// Inserts `rows` and `dead` in one PostgreSQL transaction; see
/// [`sqlite_commit`]. Exact mode asks the statement to return the keys
/// it inserted.
async fn pg_commit(
    pool: &PgPool,
    rows: &[Row<'_>],
    dead: &[NewDeadLetter],
    exact: bool,
) -> Result<Option<Vec<bool>>, DbErr> {
    let mut tx: Transaction<'_, Postgres> = pool.begin().await.map_err(exec_err)?;
    let mut inserted = vec![true; rows.len()];
    if !rows.is_empty() {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.event.id).collect();
        let projects: Vec<Uuid> = rows.iter().map(|r| r.event.project_id).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.event.name.as_str()).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.event.timestamp).collect();
        let received: Vec<i64> = rows.iter().map(|r| r.event.received_at).collect();
        let properties: Vec<&str> = rows.iter().map(|r| r.properties).collect();
        let enrichment: Vec<&str> = rows.iter().map(|r| r.enrichment).collect();
        let sql;
        let q = sqlx::query(if exact {
            sql = format!("{PG_INSERT} RETURNING project_id, id");
            sql.as_str()
        } else {
            PG_INSERT
        })
        .bind(ids)
        .bind(projects)
        .bind(names)
        .bind(column(rows, |e| e.distinct_id.as_deref()))
        .bind(column(rows, |e| e.session_id.as_deref()))
        .bind(timestamps)
        .bind(received)
        .bind(column(rows, |e| e.url.as_deref()))
        .bind(column(rows, |e| e.referrer.as_deref()))
        .bind(column(rows, |e| e.user_agent.as_deref()))
        .bind(properties)
        .bind(column(rows, |e| e.ip_hash.as_deref()))
        .bind(column(rows, |e| e.visitor_id.as_deref()))
        .bind(enrichment);
        if exact {
            use sqlx::Row as _;
            let back = q.fetch_all(&mut *tx).await.map_err(exec_err)?;
            let mut keys = HashSet::with_capacity(back.len());
            for row in back {
                let project: Uuid = row.try_get(0).map_err(exec_err)?;
                let id: Uuid = row.try_get(1).map_err(exec_err)?;
                keys.insert((project, id));
            }
            for (flag, r) in inserted.iter_mut().zip(rows) {
                *flag = keys.contains(&(r.event.project_id, r.event.id));
            }
        } else {
            let affected = q.execute(&mut *tx).await.map_err(exec_err)?.rows_affected();
            if affected != rows.len() as u64 {
                tx.rollback().await.map_err(exec_err)?;
                return Ok(None);
            }
        }
    }
    insert_dead_letters!(
        tx,
        "INSERT INTO dead_letters (id, project_id, event_id, payload, plugin, error, \
         created_at) VALUES ($1, $2, $3, $4::json, $5, $6, $7)",
        dead
    );
    tx.commit().await.map_err(exec_err)?;
    Ok(Some(inserted))
}

impl WriterDb {
    /// Writes the `pending` session deltas, recovers the sessions of any
    /// other writer whose mark's heartbeat is older than `stale_before`
    /// (ms), and renews writer `writer`'s mark (heartbeat `now`), all in
    /// one transaction. Returns how many stale marks were recovered.
    ///
    /// # Errors
    /// The database error; nothing was written then, and `pending` is
    /// still to be written.
    pub async fn flush_sessions(
        &self,
        pending: &PendingSessions,
        writer: Uuid,
        now: i64,
        stale_before: i64,
    ) -> Result<usize, DbErr> {
        match &self.pool {
            WriterPool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(exec_err)?;
                let n = flush_sessions!(tx, false, sqlite_mark, pending, writer, now, stale_before);
                tx.commit().await.map_err(exec_err)?;
                Ok(n)
            }
            WriterPool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(exec_err)?;
                let n = flush_sessions!(tx, true, pg_mark, pending, writer, now, stale_before);
                tx.commit().await.map_err(exec_err)?;
                Ok(n)
            }
        }
    }

    /// Removes writer `writer`'s mark, after its last flush at shutdown.
    ///
    /// # Errors
    /// The database error.
    pub async fn drop_session_mark(&self, writer: Uuid) -> Result<(), DbErr> {
        match &self.pool {
            WriterPool::Sqlite(pool) => {
                sqlx::query("DELETE FROM session_marks WHERE writer_id = ?")
                    .bind(writer)
                    .execute(pool)
                    .await
                    .map(drop)
            }
            WriterPool::Postgres(pool) => {
                sqlx::query("DELETE FROM session_marks WHERE writer_id = $1")
                    .bind(writer)
                    .execute(pool)
                    .await
                    .map(drop)
            }
        }
        .map_err(exec_err)
    }
}
