//! Hourly rollups: the marks of hours to redo (written by the writer),
//! the cells of rolled-up hours, and the raw rows a query or a rollup
//! reads. What the numbers mean is in [`crate::analytics`].
//!
//! The writer marks, in its session flush transaction (once a second, off
//! the ingestion path), the hour of every event it stored and the start
//! hour of every existing session those events changed; after a crash, the
//! recovery of another writer's unwritten sessions marks the same from
//! the events themselves. The rollup job redoes marked hours once they
//! are over and clears a mark only if it was not renewed meanwhile
//! (`version`), so a late event or a dead-letter replay is never lost.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use sea_orm::{ConnectionTrait, DbErr, Statement, TransactionTrait, Value as DbValue};
use sqlx::{PgConnection, SqliteConnection};
use uuid::Uuid;

use super::people::{EventColumns, person_table, span_code};
use super::{Store, StoreError, sql_for};
use crate::analytics::persons::{Cursor, put};
use crate::analytics::{Dim, EventFacts, HOUR_MS, Metrics, SessionFacts, VisitorSet};

/// Session ids per lookup statement on SQLite.
const SQLITE_IDS_PER_LOOKUP: usize = 500;
/// Rows per rollup insert statement (10 values each).
const CELLS_PER_INSERT: usize = 500;

/// The upsert of one dirty mark per row; `{}` is the rows.
fn mark_sql(values: &str) -> String {
    format!(
        "INSERT INTO rollup_dirty (project_id, hour, version) {values} \
         ON CONFLICT (project_id, hour) DO UPDATE SET version = rollup_dirty.version + 1"
    )
}

/// Marks `hours` dirty, and the start hours of the existing sessions
/// among `sessions` (sorted by project), in the writer's SQLite
/// transaction.
pub(super) async fn sqlite_mark(
    conn: &mut SqliteConnection,
    mut hours: HashSet<(Uuid, i64)>,
    sessions: &[(Uuid, &str)],
) -> Result<(), sqlx::Error> {
    for chunk in by_project(sessions, SQLITE_IDS_PER_LOOKUP) {
        let project = chunk[0].0;
        let sql = format!(
            "SELECT started_at FROM sessions WHERE project_id = ? AND session_id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(project);
        for (_, id) in chunk {
            q = q.bind(*id);
        }
        for started in q.fetch_all(&mut *conn).await? {
            hours.insert((project, started.div_euclid(HOUR_MS)));
        }
    }
    let hours: Vec<_> = hours.into_iter().collect();
    for chunk in hours.chunks(CELLS_PER_INSERT) {
        let sql = mark_sql(&format!(
            "VALUES {}",
            vec!["(?, ?, 1)"; chunk.len()].join(", ")
        ));
        let mut q = sqlx::query(&sql);
        for (p, h) in chunk {
            q = q.bind(*p).bind(*h);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`sqlite_mark`] on PostgreSQL.
pub(super) async fn pg_mark(
    conn: &mut PgConnection,
    mut hours: HashSet<(Uuid, i64)>,
    sessions: &[(Uuid, &str)],
) -> Result<(), sqlx::Error> {
    for chunk in by_project(sessions, usize::MAX) {
        let project = chunk[0].0;
        let ids: Vec<&str> = chunk.iter().map(|(_, s)| *s).collect();
        let starts: Vec<i64> = sqlx::query_scalar(
            "SELECT started_at FROM sessions WHERE project_id = $1 AND session_id = ANY($2)",
        )
        .bind(project)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        hours.extend(starts.into_iter().map(|t| (project, t.div_euclid(HOUR_MS))));
    }
    if !hours.is_empty() {
        let (projects, hours): (Vec<Uuid>, Vec<i64>) = hours.into_iter().unzip();
        sqlx::query(&mark_sql(
            "SELECT p, h, 1 FROM UNNEST($1::uuid[], $2::int8[]) AS u(p, h)",
        ))
        .bind(projects)
        .bind(hours)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Consecutive runs of `rows` with one project, at most `max` long.
fn by_project<'a>(
    rows: &'a [(Uuid, &'a str)],
    max: usize,
) -> impl Iterator<Item = &'a [(Uuid, &'a str)]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let first = rest.first()?.0;
        let n = rest
            .iter()
            .take(max)
            .take_while(|(p, _)| *p == first)
            .count();
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// After recovering the sessions of a writer that stopped at `seq` (the
/// one bound value): marks the hours of the events after it and the start
/// hours of their sessions. Run before and after the recomputation, so
/// that both the old and the new start hours are marked.
pub(super) fn recovery_marks(postgres: bool) -> [String; 2] {
    let seq = if postgres { "$1" } else { "?" };
    [
        mark_sql(&format!(
            "SELECT DISTINCT project_id, \"timestamp\" / 3600000, 1 FROM events WHERE seq > {seq}"
        )),
        mark_sql(&format!(
            "SELECT DISTINCT s.project_id, s.started_at / 3600000, 1 FROM sessions s \
             WHERE (s.project_id, s.session_id) IN \
             (SELECT project_id, session_id FROM events WHERE seq > {seq} \
             AND session_id IS NOT NULL)"
        )),
    ]
}

/// A marked hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyHour {
    /// The project.
    pub project: Uuid,
    /// Hours since the epoch.
    pub hour: i64,
    /// The mark's version when read.
    pub version: i64,
}

/// A stored rollup cell.
#[derive(Debug, Clone)]
pub struct StoredCell {
    /// Hours since the epoch.
    pub hour: i64,
    /// The dimension's value; `None` for the totals and for "none".
    pub value: Option<String>,
    /// Its numbers, but for the visitors.
    pub metrics: Metrics,
    /// Its visitor set, stored form (merged with
    /// [`VisitorSet::merge_stored`], without building it); for a split
    /// set, only its sketch.
    pub visitors: Vec<u8>,
    /// Where the hashes of a split visitor set are (`visitors` is then
    /// its sketch): the merger reads them when it needs them.
    pub apart: Option<Apart>,
}

/// Where the hashes of a split visitor set are kept: the
/// `rollup_day_sets` row of its dimension, day and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apart {
    dim: i16,
    day: i64,
    /// The cell's value ("" for none).
    value: String,
}

/// Visitor-set bytes a [`CellMerger`] keeps waiting before it merges them
/// (a query's memory beyond its answer).
const MERGE_PENDING_BYTES: usize = 64 << 20;

/// Adds rollup cells up by key. The counts are added as cells arrive.
/// When many keys' cells arrive interleaved (a breakdown's values hour
/// after hour), the visitor sets wait, and are merged key by key, each set
/// sized once for all its cells' hashes: filling one set while it is in
/// the CPU cache, without growing it step by step, is several times
/// faster than growing every key's set at once. When a key's cells come
/// one after another (totals by time bucket), they are merged as they
/// come. (The merged set is the same either way: the union, or a sketch
/// of it beyond `limit`.)
///
/// The sketches of split sets (large daily ones) are merged as they come,
/// per key; at the end, a key whose union is surely beyond `limit` (see
/// [`VisitorSet::surely_beyond`]) takes that sketch, which is the one
/// merging every hash gives, and only the others' hashes are read.
#[derive(Debug)]
pub struct CellMerger<K> {
    limit: usize,
    /// Whether visitor sets wait (keys interleaved).
    defer: bool,
    waiting: Waiting<K>,
    /// Per key, the union of its split sets' sketches and where their
    /// hashes are.
    split: HashMap<K, (VisitorSet, Vec<Apart>)>,
}

/// Per key, (hour, stored set) of the cells whose sets wait, and their
/// bytes in all.
#[derive(Debug)]
struct Waiting<K> {
    sets: HashMap<K, Vec<(i64, Vec<u8>)>>,
    bytes: usize,
}

impl<K: std::hash::Hash + Eq> Waiting<K> {
    /// Adds a set to `key`'s, merging them all into `into` when too many
    /// bytes wait.
    fn push(
        &mut self,
        into: &mut HashMap<K, Metrics>,
        key: K,
        (hour, set): (i64, Vec<u8>),
        limit: usize,
    ) -> Result<(), StoreError> {
        self.bytes += set.len();
        self.sets.entry(key).or_default().push((hour, set));
        if self.bytes > MERGE_PENDING_BYTES {
            self.merge(into, limit)?;
        }
        Ok(())
    }

    /// Merges every waiting visitor set into `into`.
    fn merge(&mut self, into: &mut HashMap<K, Metrics>, limit: usize) -> Result<(), StoreError> {
        self.bytes = 0;
        for (key, cells) in self.sets.drain() {
            merge_cells(&mut into.entry(key).or_default().visitors, &cells, limit)?;
        }
        Ok(())
    }
}

/// Merges the stored sets `cells` ((hour, bytes) each) into `set`, sized
/// once for all their hashes.
fn merge_cells(
    set: &mut VisitorSet,
    cells: &[(i64, Vec<u8>)],
    limit: usize,
) -> Result<(), StoreError> {
    let hashes = cells.iter().map(|(_, b)| VisitorSet::stored_len(b)).sum();
    set.reserve(hashes, limit);
    for (hour, bytes) in cells {
        merge_set(set, *hour, bytes, limit)?;
    }
    Ok(())
}

/// The most visitors that merging the stored sets `cells` into `set` can
/// give, when the union is sure to stay exact (within `limit`): the sizes
/// added up. `None` when it may not (a sketch, or more than `limit`).
fn most_visitors(set: &VisitorSet, cells: &[(i64, Vec<u8>)], limit: usize) -> Option<u64> {
    let mut most = set.exact_len()?;
    for (_, bytes) in cells {
        most = most.checked_add(VisitorSet::stored_exact_len(bytes)?)?;
    }
    (most <= limit).then_some(most as u64)
}

/// The `k` highest visitor counts seen (a min-heap of at most `k`).
struct Highest {
    k: usize,
    heap: BinaryHeap<Reverse<u64>>,
}

impl Highest {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, count: u64) {
        self.heap.push(Reverse(count));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// Whether `k` counts above `most` are known: a key with at most
    /// `most` visitors then ranks below `k` others.
    fn beat(&self, most: u64) -> bool {
        self.heap.len() == self.k && self.heap.peek().is_some_and(|Reverse(c)| *c > most)
    }
}

impl<K: std::hash::Hash + Eq + Clone> CellMerger<K> {
    /// Merges visitor sets exactly up to `limit` hashes (as in
    /// [`VisitorSet::merge`]); `interleaved` when many keys' cells come
    /// mixed (their visitor sets then wait).
    #[must_use]
    pub fn new(limit: usize, interleaved: bool) -> Self {
        Self {
            limit,
            defer: interleaved,
            waiting: Waiting {
                sets: HashMap::new(),
                bytes: 0,
            },
            split: HashMap::new(),
        }
    }

    /// Adds `cell` to `into[key]`.
    ///
    /// # Errors
    /// A visitor set that cannot be read (when the waiting ones are
    /// merged).
    pub fn add(
        &mut self,
        into: &mut HashMap<K, Metrics>,
        key: K,
        cell: StoredCell,
    ) -> Result<(), StoreError> {
        let sum = into.entry(key.clone()).or_default();
        sum.merge(&cell.metrics, self.limit);
        if let Some(apart) = cell.apart {
            let (sketch, aparts) = self.split.entry(key).or_default();
            aparts.push(apart);
            return merge_set(sketch, cell.hour, &cell.visitors, usize::MAX);
        }
        if !self.defer {
            return merge_set(&mut sum.visitors, cell.hour, &cell.visitors, self.limit);
        }
        self.waiting
            .push(into, key, (cell.hour, cell.visitors), self.limit)
    }

    /// Merges every visitor set into `into`, reading from `store` the
    /// hashes of the split sets of `project` that it needs.
    ///
    /// # Errors
    /// A visitor set that cannot be read, or the database error.
    pub async fn finish(
        &mut self,
        store: &Store,
        project: Uuid,
        into: &mut HashMap<K, Metrics>,
    ) -> Result<(), StoreError> {
        self.finish_top(store, project, into, usize::MAX).await?;
        Ok(())
    }

    /// [`Self::finish`] for the `top` keys with the most visitors: what a
    /// breakdown's page shows. Only the keys with events or sessions rank
    /// (the others are not shown), most visitors first.
    ///
    /// A key whose waiting sets could add up to no more than the counts
    /// of `top` keys already merged is left unmerged: whatever its union,
    /// `top` keys rank above it. Keys are merged from the largest such
    /// bound down, so in a long tail of small values most are left (the
    /// bound is their sets' sizes added up; a key with a sketch, or that
    /// could pass the exact limit, is always merged). Returns the keys
    /// left, whose visitor sets in `into` lack some cells (their other
    /// numbers are complete).
    ///
    /// # Errors
    /// As [`Self::finish`].
    pub async fn finish_top(
        &mut self,
        store: &Store,
        project: Uuid,
        into: &mut HashMap<K, Metrics>,
        top: usize,
    ) -> Result<HashSet<K>, StoreError> {
        // The keys without split sets wait for the ranking (all of them
        // are merged at once when every key is wanted).
        let mut ranked: HashMap<K, Vec<(i64, Vec<u8>)>> = HashMap::new();
        if top < into.len() {
            let split = &self.split;
            let (keep, rank) = self
                .waiting
                .sets
                .drain()
                .partition(|(k, _)| split.contains_key(k));
            self.waiting.sets = keep;
            ranked = rank;
        }
        self.waiting.merge(into, self.limit)?;
        // Per dimension, the split sets to read: their days and values, and
        // whose they are.
        let mut wanted: HashMap<i16, HashMap<(i64, String), K>> = HashMap::new();
        for (key, (sketch, aparts)) in self.split.drain() {
            let sum = &mut into.entry(key.clone()).or_default().visitors;
            let mut union = sum.to_sketch();
            union.merge(&sketch, usize::MAX);
            if !sum.is_exact() || union.surely_beyond(self.limit) {
                *sum = union;
                continue;
            }
            for a in aparts {
                wanted
                    .entry(a.dim)
                    .or_default()
                    .insert((a.day, a.value), key.clone());
            }
        }
        for (dim, mut sets) in wanted {
            let days = sets.keys().map(|(d, _)| *d);
            let range = (days.clone().min().unwrap_or(0), days.max().unwrap_or(0) + 1);
            let mut values: Vec<&str> = sets.keys().map(|(_, v)| v.as_str()).collect();
            values.sort_unstable();
            values.dedup();
            let values: Vec<String> = values.into_iter().map(str::to_owned).collect();
            let (waiting, limit) = (&mut self.waiting, self.limit);
            store
                .rollup_day_sets(project, dim, range, &values, |day, value, hashes| {
                    if let Some(key) = sets.remove(&(day, value)) {
                        waiting.push(into, key, (day * HOURS_PER_DAY, hashes), limit)?;
                    }
                    Ok(())
                })
                .await?;
            if let Some((day, _)) = sets.keys().next() {
                return Err(changed(*day));
            }
        }
        self.waiting.merge(into, self.limit)?;
        if ranked.is_empty() {
            return Ok(HashSet::new());
        }
        let shown = |m: &Metrics| m.events > 0 || m.sessions > 0;
        let mut highest = Highest::new(top);
        for (key, m) in into.iter() {
            if !ranked.contains_key(key) && shown(m) {
                highest.push(m.visitors.count());
            }
        }
        let mut order: Vec<(u64, K)> = ranked
            .iter()
            .map(|(key, cells)| {
                let set = into.get(key).map(|m| &m.visitors);
                let most = set.and_then(|s| most_visitors(s, cells, self.limit));
                (most.unwrap_or(u64::MAX), key.clone())
            })
            .collect();
        order.sort_unstable_by_key(|(most, _)| Reverse(*most));
        let mut left = HashSet::new();
        for (most, key) in order {
            let cells = ranked.remove(&key).unwrap_or_default();
            if highest.beat(most) {
                left.insert(key);
                continue;
            }
            let m = into.entry(key).or_default();
            merge_cells(&mut m.visitors, &cells, self.limit)?;
            if shown(m) {
                highest.push(m.visitors.count());
            }
        }
        Ok(left)
    }
}

/// The error of a pack that cannot be read.
fn unreadable(span: Span, slot: i64) -> StoreError {
    StoreError::Db(DbErr::Custom(format!(
        "the rollup of {} {slot} cannot be read",
        span.table().1
    )))
}

/// The error of split hashes that are gone: the daily rollup was made
/// again, or deleted, between reading its cells and reading its hashes.
fn changed(day: i64) -> StoreError {
    StoreError::Db(DbErr::Custom(format!(
        "the rollup of day {day} changed while it was read; try again"
    )))
}

/// Merges the stored visitor set of the cell of `hour` into `set`.
fn merge_set(
    set: &mut VisitorSet,
    hour: i64,
    bytes: &[u8],
    limit: usize,
) -> Result<(), StoreError> {
    set.merge_stored(bytes, limit).ok_or_else(|| {
        StoreError::Db(DbErr::Custom(format!(
            "the rollup of hour {hour} holds an unreadable visitor set"
        )))
    })
}

/// Hours per daily rollup.
pub const HOURS_PER_DAY: i64 = 24;

/// The `cells` blob of a rollup row: every value's cell of one dimension
/// and hour or day. A count, then per cell the value (length and bytes;
/// empty for none), the six counts (zigzag varints: events, page views,
/// sessions, bounces, duration, session page views) and the stored
/// visitor set (length and bytes). With `split`, large exact sets are
/// split ([`VisitorSet::to_split_bytes`]): their hashes are returned too,
/// with their values, for `rollup_day_sets`.
fn pack_cells<'a>(
    cells: impl ExactSizeIterator<Item = (&'a Option<String>, &'a Metrics)>,
    split: bool,
) -> (Vec<u8>, Vec<(&'a str, Vec<u8>)>) {
    let zigzag = |v: i64| ((v << 1) ^ (v >> 63)).cast_unsigned();
    let mut out = Vec::new();
    let mut apart = Vec::new();
    put(&mut out, cells.len() as u64);
    for (value, m) in cells {
        let value = value.as_deref().unwrap_or_default();
        put(&mut out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
        for n in [
            m.events,
            m.pageviews,
            m.sessions,
            m.bounces,
            m.duration_ms,
            m.session_pageviews,
        ] {
            put(&mut out, zigzag(n));
        }
        let set = if split {
            let mut hashes = Vec::new();
            let set = m.visitors.to_split_bytes(&mut hashes);
            if !hashes.is_empty() {
                apart.push((value, hashes));
            }
            set
        } else {
            m.visitors.to_bytes()
        };
        put(&mut out, set.len() as u64);
        out.extend_from_slice(&set);
    }
    (out, apart)
}

/// Calls `each` with every cell of a `cells` blob (see [`pack_cells`])
/// of `dim`'s `slot` of `span`; `None` when the blob is not one.
fn unpack_cells(
    blob: &[u8],
    (span, dim, slot): (Span, i16, i64),
    each: &mut impl FnMut(StoredCell) -> Result<(), StoreError>,
) -> Option<Result<(), StoreError>> {
    let unzigzag = |v: u64| (v >> 1).cast_signed() ^ -((v & 1).cast_signed());
    let mut c = Cursor::new(blob);
    for _ in 0..c.get()? {
        let len = usize::try_from(c.get()?).ok()?;
        let value = std::str::from_utf8(c.bytes(len)?).ok()?;
        let mut n = [0i64; 6];
        for x in &mut n {
            *x = unzigzag(c.get()?);
        }
        let len = usize::try_from(c.get()?).ok()?;
        let set = c.bytes(len)?;
        let (visitors, apart) = match VisitorSet::split_sketch(set) {
            Some(sketch) if span.splits() => (
                sketch.to_vec(),
                Some(Apart {
                    dim,
                    day: slot,
                    value: value.to_owned(),
                }),
            ),
            Some(_) => return None,
            None => (set.to_vec(), None),
        };
        let [
            events,
            pageviews,
            sessions,
            bounces,
            duration_ms,
            session_pageviews,
        ] = n;
        let cell = StoredCell {
            hour: slot * span.hours(),
            value: (!value.is_empty()).then(|| value.to_owned()),
            metrics: Metrics {
                events,
                pageviews,
                visitors: VisitorSet::default(),
                sessions,
                bounces,
                duration_ms,
                session_pageviews,
            },
            visitors,
            apart,
        };
        if let Err(e) = each(cell) {
            return Some(Err(e));
        }
    }
    (c.at_end()).then_some(Ok(()))
}

/// A packed rollup table: hourly or daily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    /// `rollup_hours`, by `hour`.
    Hour,
    /// `rollup_days`, by `day` (UTC).
    Day,
}

impl Span {
    /// Its table and its slot column.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Span::Hour => ("rollup_hours", "hour"),
            Span::Day => ("rollup_days", "day"),
        }
    }

    /// Whether its packs split large visitor sets (see [`pack_cells`]):
    /// the daily ones (an hour's exact sets are never large).
    fn splits(self) -> bool {
        self == Span::Day
    }

    /// Hours per slot.
    pub(crate) fn hours(self) -> i64 {
        match self {
            Span::Hour => 1,
            Span::Day => HOURS_PER_DAY,
        }
    }
}

/// Every dimension code a rollup holds (0: the totals).
#[must_use]
pub fn rollup_codes() -> Vec<i16> {
    std::iter::once(0).chain(Dim::ALL.map(Dim::code)).collect()
}

/// `dim IN (?, ...)` over every dimension code, and its values: the
/// primary keys (project, dim, slot, ...) then find one slot's rows.
fn every_dim() -> (String, Vec<DbValue>) {
    let codes = rollup_codes();
    let list = vec!["?"; codes.len()].join(", ");
    (
        format!("dim IN ({list})"),
        codes.into_iter().map(Into::into).collect(),
    )
}

/// Replaces the packed rollup of `project`'s `slot` of `span` with
/// `cells` (dimension code, value, numbers): one row per dimension that
/// has cells.
async fn write_packs(
    tx: &sea_orm::DatabaseTransaction,
    span: Span,
    project: Uuid,
    slot: i64,
    cells: &[(i16, Option<String>, Metrics)],
) -> Result<(), DbErr> {
    let backend = tx.get_database_backend();
    let (table, column) = span.table();
    let (dims, codes) = every_dim();
    let mut values: Vec<DbValue> = vec![project.into(), slot.into()];
    values.extend(codes);
    let mut tables = vec![(table, column)];
    if span.splits() {
        tables.push(("rollup_day_sets", "day"));
    }
    for (table, column) in tables {
        tx.execute(Statement::from_sql_and_values(
            backend,
            sql_for(
                backend,
                &format!("DELETE FROM {table} WHERE project_id = ? AND {column} = ? AND {dims}"),
            ),
            values.clone(),
        ))
        .await?;
    }
    for code in rollup_codes() {
        let of_dim: Vec<(&Option<String>, &Metrics)> = cells
            .iter()
            .filter(|(c, _, _)| *c == code)
            .map(|(_, v, m)| (v, m))
            .collect();
        if of_dim.is_empty() {
            continue;
        }
        let (cells, apart) = pack_cells(of_dim.into_iter(), span.splits());
        tx.execute(Statement::from_sql_and_values(
            backend,
            sql_for(
                backend,
                &format!(
                    "INSERT INTO {table} (project_id, dim, {column}, cells) VALUES (?, ?, ?, ?)"
                ),
            ),
            vec![project.into(), code.into(), slot.into(), cells.into()],
        ))
        .await?;
        for (value, hashes) in apart {
            tx.execute(Statement::from_sql_and_values(
                backend,
                sql_for(
                    backend,
                    "INSERT INTO rollup_day_sets (project_id, dim, day, value, hashes) \
                     VALUES (?, ?, ?, ?, ?)",
                ),
                vec![
                    project.into(),
                    code.into(),
                    slot.into(),
                    value.into(),
                    hashes.into(),
                ],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Inserts the counts of the cells (dimension code, value, numbers) of
/// `project`'s `hour` into `rollups`, one row per value: what the SQL
/// endpoint's `rollups` view shows (queries read the packs).
async fn insert_cells(
    tx: &sea_orm::DatabaseTransaction,
    project: Uuid,
    hour: i64,
    cells: &[(i16, Option<String>, Metrics)],
) -> Result<(), DbErr> {
    let backend = tx.get_database_backend();
    for chunk in cells.chunks(CELLS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO rollups (project_id, dim, hour, value, events, pageviews, \
             sessions, bounces, duration_ms, session_pageviews) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut values = Vec::with_capacity(chunk.len() * 10);
        for (dim, value, m) in chunk {
            values.extend([
                project.into(),
                (*dim).into(),
                hour.into(),
                value.clone().unwrap_or_default().into(),
                m.events.into(),
                m.pageviews.into(),
                m.sessions.into(),
                m.bounces.into(),
                m.duration_ms.into(),
                m.session_pageviews.into(),
            ]);
        }
        tx.execute(Statement::from_sql_and_values(
            backend,
            sql_for(backend, &sql),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// The size of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupSize {
    /// Hourly rows, one per value (the SQL endpoint's view).
    pub rows: i64,
    /// Hourly packs, one per dimension and hour.
    pub hour_packs: i64,
    /// Daily packs, one per dimension and day.
    pub day_rows: i64,
    /// All three, with the hashes of the daily packs' split visitor
    /// sets, about, in bytes.
    pub bytes: i64,
}

/// A row of the person index: its `events` and `people` blobs, and its
/// `values` blobs by dimension code (see `analytics::persons`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexRow {
    /// The events, by person.
    pub events: Vec<u8>,
    /// The people, in all and by event name.
    pub people: Vec<u8>,
    /// Per indexed dimension, its value of every event.
    pub values: Vec<(i16, Vec<u8>)>,
}

/// Replaces the row of `project`'s person index by `span` at `slot`, and
/// its values, with `index` (none when `None`).
async fn write_index_row(
    tx: &sea_orm::DatabaseTransaction,
    span: Span,
    project: Uuid,
    slot: i64,
    index: Option<&IndexRow>,
) -> Result<(), DbErr> {
    let backend = tx.get_database_backend();
    let (table, column, per) = person_table(span);
    let stmt = |sql: &str, values: Vec<DbValue>| {
        Statement::from_sql_and_values(backend, sql_for(backend, sql), values)
    };
    tx.execute(stmt(
        &format!("DELETE FROM {table} WHERE project_id = ? AND {column} = ?"),
        vec![project.into(), slot.into()],
    ))
    .await?;
    tx.execute(stmt(
        "DELETE FROM person_values WHERE project_id = ? AND span = ? AND slot = ?",
        vec![project.into(), span_code(per).into(), slot.into()],
    ))
    .await?;
    let Some(index) = index else {
        return Ok(());
    };
    tx.execute(stmt(
        &format!("INSERT INTO {table} (project_id, {column}, people, events) VALUES (?, ?, ?, ?)"),
        vec![
            project.into(),
            slot.into(),
            index.people.clone().into(),
            index.events.clone().into(),
        ],
    ))
    .await?;
    if !index.values.is_empty() {
        let mut values: Vec<DbValue> = Vec::with_capacity(index.values.len() * 5);
        for (dim, blob) in &index.values {
            values.extend([
                project.into(),
                span_code(per).into(),
                slot.into(),
                (*dim).into(),
                blob.clone().into(),
            ]);
        }
        tx.execute(stmt(
            &format!(
                "INSERT INTO person_values (project_id, span, slot, dim, vals) VALUES {}",
                vec!["(?, ?, ?, ?, ?)"; index.values.len()].join(", ")
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// On PostgreSQL, waits in `tx` until no other transaction writes the
/// rollup of `project` at `slot` (an hour, or `-1 - day` for a day), so
/// that the job and `orrery rollups rebuild` redoing the same one at once
/// take turns instead of one failing on the other's rows. (SQLite writes
/// one transaction at a time anyway.)
async fn lock_slot(
    tx: &sea_orm::DatabaseTransaction,
    project: Uuid,
    slot: i64,
) -> Result<(), DbErr> {
    if tx.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return Ok(());
    }
    let b = project.as_bytes();
    let key = i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        ^ i32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    #[allow(clippy::cast_possible_truncation)] // a lock key: collisions only make two wait
    let slot = slot as i32;
    tx.execute(Statement::from_sql_and_values(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1, $2)",
        vec![key.into(), slot.into()],
    ))
    .await?;
    Ok(())
}

/// A day whose daily rollup is to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueDay {
    /// The project.
    pub project: Uuid,
    /// UTC days since the epoch.
    pub day: i64,
    /// The mark's version when read.
    pub version: i64,
}

impl Store {
    /// Marked hours that ended at or before `before_hour` (exclusive),
    /// oldest first, at most `limit`.
    ///
    /// # Errors
    /// The database error.
    pub async fn due_rollups(
        &self,
        before_hour: i64,
        limit: u64,
    ) -> Result<Vec<DirtyHour>, StoreError> {
        let rows = self
            .rows(
                "SELECT project_id, hour, version FROM rollup_dirty WHERE hour < ? \
                 ORDER BY hour LIMIT ?",
                vec![before_hour.into(), limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DirtyHour {
                    project: r.try_get_by_index(0)?,
                    hour: r.try_get_by_index(1)?,
                    version: r.try_get_by_index(2)?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// The marked hours of `project` in `[from_hour, to_hour)`.
    ///
    /// # Errors
    /// The database error.
    pub async fn dirty_hours(
        &self,
        project: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<HashSet<i64>, StoreError> {
        let rows = self
            .rows(
                "SELECT hour FROM rollup_dirty WHERE project_id = ? AND hour >= ? AND hour < ?",
                vec![project.into(), from_hour.into(), to_hour.into()],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get_by_index::<i64>(0))
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// Hours of `project` (all projects when `None`) in `[from_hour,
    /// to_hour)` that have events or rollups: what a rebuild redoes.
    ///
    /// # Errors
    /// The database error.
    pub async fn hours_to_rebuild(
        &self,
        project: Option<Uuid>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let (cond, mut values): (&str, Vec<DbValue>) = match project {
            Some(p) => ("project_id = ? AND ", vec![p.into()]),
            None => ("", vec![]),
        };
        let from_ms = from_hour.saturating_mul(HOUR_MS);
        let to_ms = to_hour.saturating_mul(HOUR_MS);
        let mut all = values.clone();
        all.extend([from_ms.into(), to_ms.into()]);
        all.append(&mut values);
        all.extend([from_hour.into(), to_hour.into()]);
        let sql = format!(
            "SELECT DISTINCT project_id, \"timestamp\" / 3600000 FROM events \
             WHERE {cond}\"timestamp\" >= ? AND \"timestamp\" < ? \
             UNION SELECT DISTINCT project_id, hour FROM rollups \
             WHERE {cond}hour >= ? AND hour < ? ORDER BY 2"
        );
        let rows = self.rows(&sql, all).await?;
        rows.iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// Indexed hours whose row has no values (indexed before values were
    /// kept), oldest first, at most `limit`: the job redoes them.
    ///
    /// # Errors
    /// The database error.
    pub async fn hours_without_values(&self, limit: u64) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT h.project_id, h.hour FROM person_hours h WHERE NOT EXISTS \
                 (SELECT 1 FROM person_values v WHERE v.project_id = h.project_id \
                 AND v.span = 1 AND v.slot = h.hour) ORDER BY h.hour LIMIT ?",
                vec![limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// Calls `each` with every stored cell of `project`, dimension code
    /// `dim` (0: totals), in `[from, to)` of `span`: hours, or UTC days
    /// (whether a day is up to date is [`Store::days_due`]'s to say). A
    /// day's cell has the first hour of its day as `hour`.
    ///
    /// # Errors
    /// The database error, an unreadable pack, or the first error of
    /// `each`.
    pub async fn rollup_cells(
        &self,
        span: Span,
        project: Uuid,
        (dim, from, to): (i16, i64, i64),
        mut each: impl FnMut(StoredCell) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (table, column) = span.table();
        self.each_row(
            &format!(
                "SELECT {column}, cells FROM {table} \
                 WHERE project_id = ? AND dim = ? AND {column} >= ? AND {column} < ?"
            ),
            vec![project.into(), dim.into(), from.into(), to.into()],
            |r| {
                let slot: i64 = r.try_get_by_index(0)?;
                let blob: Vec<u8> = r.try_get_by_index(1)?;
                unpack_cells(&blob, (span, dim, slot), &mut each)
                    .unwrap_or_else(|| Err(unreadable(span, slot)))
            },
        )
        .await
    }

    /// Calls `each` with the hashes of the split visitor sets (see
    /// [`pack_cells`]) of `project`, dimension code `dim`, of the UTC days
    /// in `[from, to)` and of one of `values` ("" for none): day, value,
    /// stored set.
    ///
    /// # Errors
    /// The database error, or the first error of `each`.
    async fn rollup_day_sets(
        &self,
        project: Uuid,
        dim: i16,
        (from, to): (i64, i64),
        values: &[String],
        mut each: impl FnMut(i64, String, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for chunk in values.chunks(SQLITE_IDS_PER_LOOKUP) {
            let mut binds: Vec<DbValue> = vec![project.into(), dim.into(), from.into(), to.into()];
            binds.extend(chunk.iter().map(|v| DbValue::from(v.as_str())));
            self.each_row(
                &format!(
                    "SELECT day, value, hashes FROM rollup_day_sets WHERE project_id = ? \
                     AND dim = ? AND day >= ? AND day < ? AND value IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                ),
                binds,
                |r| {
                    each(
                        r.try_get_by_index(0)?,
                        r.try_get_by_index(1)?,
                        r.try_get_by_index(2)?,
                    )
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The events of `project` with a time in `[from, to)` (with the
    /// columns `cols` asks for, of any name) and the sessions that
    /// started then, as the aggregation reads them.
    ///
    /// # Errors
    /// The database error.
    pub async fn raw_facts(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        cols: &EventColumns<'_>,
    ) -> Result<(Vec<EventFacts>, Vec<SessionFacts>), StoreError> {
        let events = self.event_facts(project, from, to, cols).await?;
        let rows = self
            .rows(
                "SELECT session_id, started_at, duration_ms, events, pageviews, bounce, \
                 entry_page, exit_page FROM sessions \
                 WHERE project_id = ? AND started_at >= ? AND started_at < ?",
                vec![project.into(), from.into(), to.into()],
            )
            .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for r in &rows {
            sessions.push(SessionFacts {
                session_id: r.try_get_by_index(0)?,
                started_at: r.try_get_by_index(1)?,
                duration_ms: r.try_get_by_index(2)?,
                events: r.try_get_by_index(3)?,
                pageviews: r.try_get_by_index(4)?,
                bounce: r.try_get_by_index(5)?,
                entry_page: r.try_get_by_index(6)?,
                exit_page: r.try_get_by_index(7)?,
            });
        }
        Ok((events, sessions))
    }

    /// Replaces the rollup of `project`'s `hour` with `cells` (dimension
    /// code, value, numbers) and its person index row with `index` (the
    /// `events` and `people` blobs; none for an hour without events), and
    /// clears its mark if its version is still `version` (always when
    /// `None`), in one transaction.
    ///
    /// # Errors
    /// The database error; nothing changed then.
    pub async fn write_rollup(
        &self,
        project: Uuid,
        hour: i64,
        version: Option<i64>,
        cells: &[(i16, Option<String>, Metrics)],
        index: Option<&IndexRow>,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let stmt = |sql: &str, values: Vec<DbValue>| {
            Statement::from_sql_and_values(backend, sql_for(backend, sql), values)
        };
        let tx = self.db().begin().await?;
        lock_slot(&tx, project, hour).await?;
        let (dims, codes) = every_dim();
        let mut values: Vec<DbValue> = vec![project.into(), hour.into()];
        values.extend(codes);
        tx.execute(stmt(
            &format!("DELETE FROM rollups WHERE project_id = ? AND hour = ? AND {dims}"),
            values,
        ))
        .await?;
        write_index_row(&tx, Span::Hour, project, hour, index).await?;
        insert_cells(&tx, project, hour, cells).await?;
        write_packs(&tx, Span::Hour, project, hour, cells).await?;
        // Its day's daily rollup is out of date now.
        tx.execute(stmt(
            "INSERT INTO rollup_days_due (project_id, day, version) VALUES (?, ?, 1) \
             ON CONFLICT (project_id, day) DO UPDATE SET version = rollup_days_due.version + 1",
            vec![project.into(), hour.div_euclid(HOURS_PER_DAY).into()],
        ))
        .await?;
        match version {
            Some(v) => {
                tx.execute(stmt(
                    "DELETE FROM rollup_dirty WHERE project_id = ? AND hour = ? AND version = ?",
                    vec![project.into(), hour.into(), v.into()],
                ))
                .await?
            }
            None => {
                tx.execute(stmt(
                    "DELETE FROM rollup_dirty WHERE project_id = ? AND hour = ?",
                    vec![project.into(), hour.into()],
                ))
                .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    /// Days whose daily rollup is to be made: marked, over (before
    /// `before_day`) and with no hour waiting to be redone; oldest first,
    /// at most `limit`.
    ///
    /// # Errors
    /// The database error.
    pub async fn due_days(&self, before_day: i64, limit: u64) -> Result<Vec<DueDay>, StoreError> {
        let rows = self
            .rows(
                "SELECT d.project_id, d.day, d.version FROM rollup_days_due d \
                 WHERE d.day < ? AND NOT EXISTS (SELECT 1 FROM rollup_dirty r \
                 WHERE r.project_id = d.project_id AND r.hour >= d.day * 24 \
                 AND r.hour < d.day * 24 + 24) ORDER BY d.day LIMIT ?",
                vec![before_day.into(), limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDay {
                    project: r.try_get_by_index(0)?,
                    day: r.try_get_by_index(1)?,
                    version: r.try_get_by_index(2)?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// The marked days of `project` in `[from_day, to_day)`: their daily
    /// rollups are missing or out of date.
    ///
    /// # Errors
    /// The database error.
    pub async fn days_due(
        &self,
        project: Uuid,
        from_day: i64,
        to_day: i64,
    ) -> Result<HashSet<i64>, StoreError> {
        let rows = self
            .rows(
                "SELECT day FROM rollup_days_due WHERE project_id = ? AND day >= ? AND day < ?",
                vec![project.into(), from_day.into(), to_day.into()],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get_by_index::<i64>(0))
            .collect::<Result<_, DbErr>>()
            .map_err(Into::into)
    }

    /// Replaces the daily rollup of `project`'s `day` with `cells` and its
    /// row of the person index by day with `index` (its `events` and
    /// `people` blobs; none for a day without indexed events), and clears
    /// the day's mark if its version is still `version`, in one
    /// transaction.
    ///
    /// # Errors
    /// The database error; nothing changed then.
    pub async fn write_day(
        &self,
        project: Uuid,
        day: i64,
        version: i64,
        cells: &[(i16, Option<String>, Metrics)],
        index: Option<&IndexRow>,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let stmt = |sql: &str, values: Vec<DbValue>| {
            Statement::from_sql_and_values(backend, sql_for(backend, sql), values)
        };
        let tx = self.db().begin().await?;
        lock_slot(&tx, project, -1 - day).await?;
        write_packs(&tx, Span::Day, project, day, cells).await?;
        write_index_row(&tx, Span::Day, project, day, index).await?;
        tx.execute(stmt(
            "DELETE FROM rollup_days_due WHERE project_id = ? AND day = ? AND version = ?",
            vec![project.into(), day.into(), version.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rollup rows, hourly and daily, and their total size in bytes (for
    /// `orrery stats`).
    ///
    /// # Errors
    /// The database error.
    pub async fn rollup_size(&self) -> Result<RollupSize, StoreError> {
        let length = self.byte_length();
        let size = |table: &str, blobs: &str| {
            format!("SELECT COUNT(*) AS n, COALESCE(SUM({blobs} + 64), 0) AS b FROM {table}")
        };
        let rows = self
            .rows(
                &format!(
                    "SELECT CAST(v.n AS BIGINT), CAST(h.n AS BIGINT), CAST(d.n AS BIGINT), \
                     CAST(v.b + h.b + d.b + s.b AS BIGINT) \
                     FROM ({}) AS v, ({}) AS h, ({}) AS d, ({}) AS s",
                    size("rollups", &format!("{length}(value)")),
                    size("rollup_hours", &format!("{length}(cells)")),
                    size("rollup_days", &format!("{length}(cells)")),
                    size("rollup_day_sets", &format!("{length}(hashes)"))
                ),
                vec![],
            )
            .await?;
        let r = rows.first().ok_or(StoreError::NotFound("rollup size"))?;
        Ok(RollupSize {
            rows: r.try_get_by_index(0)?,
            hour_packs: r.try_get_by_index(1)?,
            day_rows: r.try_get_by_index(2)?,
            bytes: r.try_get_by_index(3)?,
        })
    }

    /// The person index: people numbered, and the size of its rows (with
    /// their values) in bytes (for `orrery stats`).
    ///
    /// # Errors
    /// The database error.
    pub async fn person_index_size(&self) -> Result<(i64, i64), StoreError> {
        let length = self.byte_length();
        let rows = self
            .rows(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM persons), CAST(COALESCE((SELECT \
                     SUM({length}(events) + {length}(people) + 32) FROM person_hours), 0) \
                     + COALESCE((SELECT SUM({length}(events) + {length}(people) + 32) \
                     FROM person_days), 0) \
                     + COALESCE((SELECT SUM({length}(vals) + 32) FROM person_values), 0) \
                     AS BIGINT)"
                ),
                vec![],
            )
            .await?;
        let r = rows
            .first()
            .ok_or(StoreError::NotFound("person index size"))?;
        Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?))
    }

    /// Hours that are over (before `before_hour`) and marked, not yet
    /// rolled up, over all projects.
    ///
    /// # Errors
    /// The database error.
    pub async fn pending_rollups(&self, before_hour: i64) -> Result<i64, StoreError> {
        let rows = self
            .rows(
                "SELECT COUNT(*) FROM rollup_dirty WHERE hour < ?",
                vec![before_hour.into()],
            )
            .await?;
        let r = rows
            .first()
            .ok_or(StoreError::NotFound("pending rollups"))?;
        Ok(r.try_get_by_index(0)?)
    }

    /// The SQL function giving a blob's size in bytes.
    fn byte_length(&self) -> &'static str {
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            "octet_length"
        } else {
            "length"
        }
    }

    /// Days that are over (before `before_day`) whose daily rollup is
    /// missing or out of date, over all projects.
    ///
    /// # Errors
    /// The database error.
    pub async fn pending_days(&self, before_day: i64) -> Result<i64, StoreError> {
        self.scalar(
            "SELECT COUNT(*) FROM rollup_days_due WHERE day < ?",
            vec![before_day.into()],
        )
        .await
        .map(Option::unwrap_or_default)
    }

    /// The earliest time in `[from, to)` of an event of `project`, or of
    /// a session's start too when `sessions`: one index seek each, so a
    /// reader can jump over stretches with no data.
    ///
    /// # Errors
    /// The database error.
    pub async fn next_data_at(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        sessions: bool,
    ) -> Result<Option<i64>, StoreError> {
        let events = "SELECT MIN(\"timestamp\") AS t FROM events \
                      WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?";
        let mut values: Vec<DbValue> = vec![project.into(), from.into(), to.into()];
        let sql = if sessions {
            values.extend([project.into(), from.into(), to.into()]);
            format!(
                "SELECT MIN(t) FROM ({events} UNION ALL \
                 SELECT MIN(started_at) AS t FROM sessions \
                 WHERE project_id = ? AND started_at >= ? AND started_at < ?) AS firsts"
            )
        } else {
            events.to_owned()
        };
        self.scalar(&sql, values).await
    }

    /// The time of `project`'s earliest event, ms.
    ///
    /// # Errors
    /// The database error.
    pub async fn first_event_at(&self, project: Uuid) -> Result<Option<i64>, StoreError> {
        self.scalar(
            "SELECT MIN(\"timestamp\") FROM events WHERE project_id = ?",
            vec![project.into()],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::sketch::SPLIT_MIN;
    use crate::analytics::visitor_hash;

    impl StoredCell {
        /// Its numbers with the visitors of `visitors`.
        fn metrics_with(&self, visitors: std::ops::Range<u64>) -> Metrics {
            let mut m = self.metrics.clone();
            for v in visitors {
                m.visitors
                    .insert(visitor_hash(&format!("v{v}")), usize::MAX);
            }
            m
        }
    }

    fn cell(hour: i64, events: i64, visitors: std::ops::Range<u64>) -> StoredCell {
        let mut set = VisitorSet::default();
        for v in visitors {
            set.insert(visitor_hash(&format!("v{v}")), usize::MAX);
        }
        StoredCell {
            hour,
            value: None,
            metrics: Metrics {
                events,
                ..Metrics::default()
            },
            visitors: set.to_bytes(),
            apart: None,
        }
    }

    /// A store on a new SQLite file.
    async fn store(dir: &tempfile::TempDir) -> Store {
        let config = crate::config::Config {
            data_dir: dir.path().to_owned(),
            ..crate::config::Config::default()
        };
        let store = Store::connect(&config).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test]
    async fn the_merger_gives_what_merging_cell_by_cell_gives() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let project = Uuid::nil();
        // Two keys, cells interleaved; key 1's union (3,000) crosses the
        // limit (2,500) and turns into a sketch, key 2's stays exact.
        let cells = [
            (1, cell(0, 5, 0..1000)),
            (2, cell(0, 1, 0..10)),
            (1, cell(1, 7, 800..2000)),
            (2, cell(1, 2, 5..20)),
            (1, cell(2, 1, 1500..3000)),
        ];
        let limit = 2500;
        let mut one_by_one: HashMap<i32, Metrics> = HashMap::new();
        for (key, c) in &cells {
            let m = one_by_one.entry(*key).or_default();
            m.visitors.merge_stored(&c.visitors, limit).unwrap();
            m.merge(&c.metrics, limit);
        }
        let mut merged = HashMap::new();
        for interleaved in [true, false] {
            merged = HashMap::new();
            let mut merger = CellMerger::new(limit, interleaved);
            for (key, c) in cells.clone() {
                merger.add(&mut merged, key, c).unwrap();
            }
            merger.finish(&store, project, &mut merged).await.unwrap();
            assert_eq!(merged, one_by_one, "interleaved: {interleaved}");
        }
        assert_eq!((merged[&1].events, merged[&2].events), (13, 3));
        assert!(!merged[&1].visitors.is_exact());
        assert_eq!(merged[&2].visitors.count(), 20);
        // An unreadable set is an error naming its hour.
        let mut bad = cell(7, 1, 0..3);
        bad.visitors.pop();
        let mut merger = CellMerger::new(limit, true);
        merger.add(&mut merged, 1, bad.clone()).unwrap();
        let err = merger
            .finish(&store, project, &mut merged)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("hour 7"), "{err}");
        let err = CellMerger::new(limit, false)
            .add(&mut merged, 1, bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hour 7"), "{err}");
    }

    #[tokio::test]
    async fn a_top_merge_leaves_only_values_that_rank_below_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let project = Uuid::nil();
        let limit = 100_000;
        // 60 values, a long tail: value i has about 3000 / (i + 1)
        // visitors over three days, half of them back every day (so the
        // sizes added up overstate the union). Value 60 has the most
        // visitors but no events or sessions (not shown, so it must not
        // push anything out); value 61's cell is a sketch.
        let mut cells = Vec::new();
        for i in 0..60u64 {
            let n = 3000 / (i + 1) + 1;
            let base = i * 10_000;
            for day in 0..3 {
                let fresh = base + n + day * n;
                let mut c = cell(i64::try_from(day).unwrap(), 2, 0..0);
                let mut set = VisitorSet::default();
                for v in (base..base + n / 2).chain(fresh..fresh + n / 2) {
                    set.insert(visitor_hash(&format!("v{v}")), usize::MAX);
                }
                c.visitors = set.to_bytes();
                cells.push((i, c));
            }
        }
        cells.push((60, cell(0, 0, 900_000..920_000)));
        let mut sketch = VisitorSet::default();
        for v in 950_000..953_000 {
            sketch.insert(visitor_hash(&format!("v{v}")), 10);
        }
        let mut big = cell(0, 1, 0..0);
        big.visitors = sketch.to_bytes();
        cells.push((61, big));
        // Mixed, as a breakdown's cells come.
        cells.sort_by_key(|(i, c)| (c.hour, *i));

        let mut all = HashMap::new();
        let mut merger = CellMerger::new(limit, true);
        for (key, c) in cells.clone() {
            merger.add(&mut all, key, c).unwrap();
        }
        merger.finish(&store, project, &mut all).await.unwrap();
        let mut ranked: Vec<(u64, u64)> = all
            .iter()
            .filter(|(_, m)| m.events > 0 || m.sessions > 0)
            .map(|(k, m)| (m.visitors.count(), *k))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));

        for top in [1, 5, 12] {
            let mut some = HashMap::new();
            let mut merger = CellMerger::new(limit, true);
            for (key, c) in cells.clone() {
                merger.add(&mut some, key, c).unwrap();
            }
            let left = merger
                .finish_top(&store, project, &mut some, top)
                .await
                .unwrap();
            // Most of the tail is left unmerged...
            assert!(left.len() >= 30, "top {top}: only {} left", left.len());
            // ...and none of the top (nor the sketch or the unshown).
            let kth = ranked[top - 1].0;
            for (count, key) in &ranked[..top] {
                assert!(!left.contains(key), "top {top}: {key} ({count}) left");
            }
            assert!(!left.contains(&61) && !left.contains(&60));
            for (key, m) in &some {
                let full = &all[key];
                assert_eq!(m.events, full.events, "key {key}");
                if left.contains(key) {
                    assert!(full.visitors.count() < kth, "top {top}: {key}");
                } else {
                    assert_eq!(m, full, "top {top}: key {key}");
                }
            }
        }
        // Asking for as many as there are merges everything.
        let mut some = HashMap::new();
        let mut merger = CellMerger::new(limit, true);
        for (key, c) in cells.clone() {
            merger.add(&mut some, key, c).unwrap();
        }
        let left = merger
            .finish_top(&store, project, &mut some, 62)
            .await
            .unwrap();
        assert!(left.is_empty());
        assert_eq!(some, all);
    }

    #[test]
    fn packed_cells_read_back_as_they_were() {
        let mut sketch = VisitorSet::default();
        for v in 0..5000 {
            sketch.insert(visitor_hash(&format!("v{v}")), 10);
        }
        let cells = [
            (None, cell(0, 12, 0..3).metrics_with(0..3)),
            (
                Some("/pricing".to_owned()),
                cell(0, 7, 0..0).metrics_with(1..2),
            ),
            (
                Some("/ü".to_owned()),
                Metrics {
                    events: 1 << 40,
                    pageviews: 3,
                    visitors: sketch,
                    sessions: 2,
                    bounces: 1,
                    duration_ms: 0,
                    session_pageviews: 3,
                },
            ),
            // Large and exact: split in a daily pack.
            (
                Some("/big".to_owned()),
                cell(0, 9, 0..0).metrics_with(0..(SPLIT_MIN as u64 + 1)),
            ),
        ];
        for span in [Span::Hour, Span::Day] {
            let (blob, apart) = pack_cells(cells.iter().map(|(v, m)| (v, m)), span.splits());
            let mut back = Vec::new();
            unpack_cells(&blob, (span, 3, 2), &mut |c: StoredCell| {
                back.push(c);
                Ok(())
            })
            .unwrap()
            .unwrap();
            assert_eq!(back.len(), 4);
            for ((value, m), c) in cells.iter().zip(&back) {
                assert_eq!((&c.value, c.hour), (value, 2 * span.hours()));
                let mut got = c.metrics.clone();
                got.visitors = VisitorSet::from_bytes(&c.visitors).unwrap();
                let big = value.as_deref() == Some("/big");
                if span == Span::Day && big {
                    // The cell keeps the sketch; the hashes are apart.
                    assert_eq!(got.visitors, m.visitors.to_sketch());
                    let a = c.apart.as_ref().unwrap();
                    assert_eq!((a.dim, a.day, a.value.as_str()), (3, 2, "/big"));
                    assert_eq!(apart.len(), 1);
                    assert_eq!(apart[0].0, "/big");
                    got.visitors = VisitorSet::from_bytes(&apart[0].1).unwrap();
                } else {
                    assert!(c.apart.is_none());
                }
                assert_eq!(&got, m, "{span:?} {value:?}");
            }
            assert_eq!(apart.is_empty(), span == Span::Hour);
            // A cut or padded blob is not read as cells.
            let ok = |_: StoredCell| Ok(());
            let at = (span, 0, 0);
            assert!(unpack_cells(&blob[..blob.len() - 1], at, &mut { ok }).is_none());
            let mut longer = blob.clone();
            longer.push(0);
            assert!(unpack_cells(&longer, at, &mut { ok }).is_none());
        }
        // An hourly pack never holds a split set.
        let (day, _) = pack_cells(cells.iter().map(|(v, m)| (v, m)), true);
        let ok = |_: StoredCell| Ok(());
        assert!(unpack_cells(&day, (Span::Hour, 0, 0), &mut { ok }).is_none());
    }
}
