//! The raw reads behind the per-person questions (funnels, retention) and
//! the raw side of statistics: events as the aggregation reads them, and
//! per-person aggregates done by the database.
//!
//! A person is who the statistics count as a visitor: the event's
//! `distinct_id`, else its `visitor_id`, else its IP hash.

use std::collections::HashMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::rollups::{HOURS_PER_DAY, Span};
use super::{Store, StoreError};
use crate::analytics::{Dim, Dimension, EventFacts, Filter, HOUR_MS, Op, visitor_hash};

/// The person of an event, in SQL.
const PERSON: &str = "COALESCE(distinct_id, visitor_id, ip_hash)";

/// What an event read returns besides name, time and person.
#[derive(Debug, Clone, Copy)]
pub struct EventColumns<'a> {
    /// Only events with one of these names (all when `None`).
    pub names: Option<&'a [String]>,
    /// Read the enrichment (dimensions other than the event name).
    pub enrichment: bool,
    /// Read the properties (property paths).
    pub properties: bool,
    /// Events that fail one of these may be left out (the caller still
    /// checks every event it gets): the database leaves out those that
    /// surely fail an `eq` or `in` filter on the event name or on an
    /// enrichment field, before reading them out.
    pub filters: &'a [Filter],
}

impl<'a> EventColumns<'a> {
    /// The columns that reading `dims` needs: the enrichment for the
    /// dimensions other than the event name, the properties for property
    /// paths.
    pub fn reading<'d>(
        names: Option<&'a [String]>,
        dims: impl IntoIterator<Item = &'d Dimension>,
    ) -> Self {
        let mut cols = Self {
            names,
            enrichment: false,
            properties: false,
            filters: &[],
        };
        for d in dims {
            match d {
                Dimension::Rolled(Dim::Event) => {}
                Dimension::Rolled(_) => cols.enrichment = true,
                Dimension::Property(_) => cols.properties = true,
            }
        }
        cols
    }

    /// The same, leaving out events that surely fail `filters` (see
    /// [`EventColumns::filters`]).
    #[must_use]
    pub fn keeping(self, filters: &'a [Filter]) -> Self {
        Self { filters, ..self }
    }
}

/// Events in one page of [`Store::event_facts`] on SQLite: small enough
/// that a page of the largest events stays far below SQLite's 1 GB limit
/// on a value.
const PACKED_EVENTS: usize = 4096;

/// `AND name IN (...)` when names are given (their values added to
/// `values`).
fn names_condition(values: &mut Vec<sea_orm::Value>, names: Option<&[String]>) -> String {
    names.map_or_else(String::new, |names| {
        values.extend(names.iter().map(|n| n.as_str().into()));
        format!(" AND name IN ({})", vec!["?"; names.len()].join(", "))
    })
}

/// SQL conditions that leave out the events that surely fail one of
/// `filters` (their values added to `values`; see
/// [`EventColumns::filters`]): `eq` and `in` on the event name, and on an
/// enrichment field, where an event is left out only when its enrichment
/// is valid JSON and the field is missing, JSON null, or text that is
/// none of the values (a number or a boolean is left to the caller, which
/// compares its JSON text). In PostgreSQL's form when `postgres` (where
/// the column is `json`, always valid).
fn prefilter(values: &mut Vec<sea_orm::Value>, filters: &[Filter], postgres: bool) -> String {
    let mut sql = String::new();
    for f in filters {
        if !matches!(f.op, Op::Eq | Op::In) || f.values.is_empty() {
            continue;
        }
        let marks = vec!["?"; f.values.len()].join(", ");
        let condition = match &f.dimension {
            Dimension::Rolled(Dim::Event) => format!(" AND name IN ({marks})"),
            Dimension::Rolled(d) => match d.enrichment_key() {
                Some(key) if postgres => format!(
                    " AND (enrichment->>'{key}' IN ({marks}) \
                     OR json_typeof(enrichment->'{key}') NOT IN ('string', 'null'))"
                ),
                Some(key) => format!(
                    " AND CASE WHEN json_valid(enrichment) THEN \
                     json_extract(enrichment, '$.{key}') IN ({marks}) \
                     OR json_type(enrichment, '$.{key}') NOT IN ('text', 'null') ELSE 1 END"
                ),
                None => continue,
            },
            Dimension::Property(_) => continue,
        };
        sql.push_str(&condition);
        values.extend(f.values.iter().map(|v| v.as_str().into()));
    }
    sql
}

/// `name = ?` when a name is given (its value added to `values`).
fn name_condition(values: &mut Vec<sea_orm::Value>, name: Option<&str>) -> &'static str {
    name.map_or("", |n| {
        values.push(n.into());
        " AND name = ?"
    })
}

impl Store {
    /// The events of `project` with a time in `[from, to)`, with the
    /// columns `cols` asks for (the others empty).
    ///
    /// # Errors
    /// The database error.
    pub async fn event_facts(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        cols: &EventColumns<'_>,
    ) -> Result<Vec<EventFacts>, StoreError> {
        let postgres = self.backend() == sea_orm::DatabaseBackend::Postgres;
        if !postgres {
            // A page too big for SQLite (over 1 GB of text: only with an
            // `ingest.max_event_bytes` far above the default) reads a row
            // per event instead.
            match self.event_facts_packed(project, (from, to), cols).await {
                Ok(events) => return Ok(events),
                Err(err) => tracing::warn!(
                    %project, %err,
                    "events could not be read in pages; reading them a row each"
                ),
            }
        }
        let column = |c: &str, wanted: bool| match (wanted, postgres) {
            (false, _) => "NULL".to_owned(),
            (true, true) => format!("{c}::text"),
            (true, false) => c.to_owned(),
        };
        let mut values: Vec<sea_orm::Value> = vec![project.into(), from.into(), to.into()];
        let conditions = names_condition(&mut values, cols.names)
            + &prefilter(&mut values, cols.filters, postgres);
        let sql = format!(
            "SELECT seq, name, \"timestamp\", {PERSON}, session_id, {}, {}, {} FROM events \
             WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?{conditions}",
            column("url", cols.enrichment),
            column("enrichment", cols.enrichment),
            column("properties", cols.properties),
        );
        let rows = self.rows(&sql, values).await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let visitor: Option<String> = r.try_get_by_index(3)?;
            let enrichment: Option<String> = r.try_get_by_index(6)?;
            let props: Option<String> = r.try_get_by_index(7)?;
            events.push(EventFacts {
                seq: r.try_get_by_index(0)?,
                name: r.try_get_by_index(1)?,
                timestamp: r.try_get_by_index(2)?,
                visitor: visitor.as_deref().map(visitor_hash),
                session_id: r.try_get_by_index(4)?,
                url: r.try_get_by_index(5)?,
                enrichment: enrichment.as_deref().map(json_map).unwrap_or_default(),
                properties: props.as_deref().map(json_map),
            });
        }
        Ok(events)
    }

    /// [`Store::event_facts`] on SQLite: pages of `PACKED_EVENTS` events,
    /// each one row holding a JSON array of them. The driver hands every
    /// row from SQLite's thread to the caller's, and that hand-off costs
    /// several times what SQLite spends on an event row, so one row per
    /// event made reading raw events about 7 times slower than SQLite
    /// reads them. Pages follow the `(project_id, timestamp)` index, after
    /// the last (time, seq) of the page before.
    async fn event_facts_packed(
        &self,
        project: Uuid,
        (from, to): (i64, i64),
        cols: &EventColumns<'_>,
    ) -> Result<Vec<EventFacts>, StoreError> {
        // A malformed JSON text reads as an empty object, as in `json_map`.
        let json = |c: &str, wanted: bool| {
            if wanted {
                format!("CASE WHEN json_valid({c}) THEN json({c}) ELSE json('{{}}') END")
            } else {
                "NULL".to_owned()
            }
        };
        let mut condition_values = Vec::new();
        let conditions = names_condition(&mut condition_values, cols.names)
            + &prefilter(&mut condition_values, cols.filters, false);
        // (`json()` outside the subquery: a value's JSON subtype does not
        // cross it, and `json_array` would take the text as a string.)
        let sql = format!(
            "SELECT json_group_array(json_array(seq, name, \"timestamp\", person, session_id, \
             {}, {}, {})) FROM (SELECT seq, name, \"timestamp\", {PERSON} AS person, \
             session_id, url, enrichment, properties FROM events \
             WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ? \
             AND (\"timestamp\", seq) > (?, ?){conditions} \
             ORDER BY \"timestamp\", seq LIMIT {PACKED_EVENTS})",
            if cols.enrichment { "url" } else { "NULL" },
            json("enrichment", cols.enrichment),
            json("properties", cols.properties),
        );
        type Packed = (
            i64,
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Value>,
            Option<Value>,
        );
        let mut events = Vec::new();
        let mut after = (from, i64::MIN);
        loop {
            let mut values: Vec<sea_orm::Value> = vec![
                project.into(),
                from.into(),
                to.into(),
                after.0.into(),
                after.1.into(),
            ];
            values.extend(condition_values.iter().cloned());
            let rows = self.rows(&sql, values).await?;
            let text: String = match rows.first() {
                Some(r) => r.try_get_by_index(0)?,
                None => break,
            };
            let page: Vec<Packed> = serde_json::from_str(&text).map_err(|e| {
                StoreError::Db(sea_orm::DbErr::Custom(format!(
                    "events of project {project} could not be read: {e}"
                )))
            })?;
            let full = page.len() >= PACKED_EVENTS;
            for (seq, name, timestamp, person, session_id, url, enrichment, properties) in page {
                after = after.max((timestamp, seq));
                events.push(EventFacts {
                    seq,
                    name,
                    timestamp,
                    visitor: person.as_deref().map(visitor_hash),
                    session_id,
                    url,
                    enrichment: enrichment.map(object).unwrap_or_default(),
                    properties: properties.map(object),
                });
            }
            if !full {
                break;
            }
        }
        Ok(events)
    }

    /// Every person of `project` with an event (named `name`, when given)
    /// before `before`, and the time of their first such event, ms.
    ///
    /// # Errors
    /// The database error.
    pub async fn first_seen(
        &self,
        project: Uuid,
        before: i64,
        name: Option<&str>,
    ) -> Result<Vec<(u64, i64)>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![project.into(), before.into()];
        let named = name_condition(&mut values, name);
        let rows = self
            .rows(
                &format!(
                    "SELECT {PERSON}, MIN(\"timestamp\") FROM events \
                     WHERE project_id = ? AND \"timestamp\" < ?{named} GROUP BY {PERSON}"
                ),
                values,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let person: Option<String> = r.try_get_by_index(0)?;
            if let Some(p) = person {
                out.push((visitor_hash(&p), r.try_get_by_index(1)?));
            }
        }
        Ok(out)
    }

    /// The hours in `[from, to)` in which each person of `project` had an
    /// event (named `name`, when given): one row per person and UTC hour,
    /// with the first and last event time in it, ms. (Any period boundary,
    /// even at :30 or :45, cuts an hour at most once, so the first and
    /// last time tell on which sides of it the person was active.)
    ///
    /// # Errors
    /// The database error.
    pub async fn active_hours(
        &self,
        project: Uuid,
        from: i64,
        to: i64,
        name: Option<&str>,
    ) -> Result<Vec<(u64, i64, i64)>, StoreError> {
        let mut values: Vec<sea_orm::Value> = vec![project.into(), from.into(), to.into()];
        let named = name_condition(&mut values, name);
        let rows = self
            .rows(
                &format!(
                    "SELECT {PERSON}, MIN(\"timestamp\"), MAX(\"timestamp\") FROM events \
                     WHERE project_id = ? AND \"timestamp\" >= ? AND \"timestamp\" < ?{named} \
                     GROUP BY {PERSON}, \"timestamp\" / {HOUR_MS}"
                ),
                values,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let person: Option<String> = r.try_get_by_index(0)?;
            if let Some(p) = person {
                out.push((
                    visitor_hash(&p),
                    r.try_get_by_index(1)?,
                    r.try_get_by_index(2)?,
                ));
            }
        }
        Ok(out)
    }
}

/// A JSON object column (`{}` when it is not one).
fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).map_or_else(|_| Map::new(), object)
}

/// A JSON value as an object (`{}` when it is not one).
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A column of the person index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonColumn {
    /// (person, time, name) per event.
    Events,
    /// The people active, in all and per name.
    People,
}

/// Person numbers looked up without assigning, per project, kept between
/// lookups (a funnel's raw events, mostly the current hour's, have nearly
/// the same people query after query): a number never changes once given
/// (rows of `persons` are only added, and go with their project), and a
/// person found without one is known to have none while the project's
/// highest number stays what it was when the lookup began (numbers are
/// only given above it).
#[derive(Debug, Default)]
pub(crate) struct PeopleCache(std::sync::Mutex<HashMap<Uuid, KnownPeople>>);

/// What [`PeopleCache`] knows of one project.
#[derive(Debug, Default)]
struct KnownPeople {
    /// The project's highest number when `missing` was found.
    max: u32,
    found: HashMap<u64, u32>,
    missing: std::collections::HashSet<u64>,
}

/// People a [`PeopleCache`] keeps per project at most (found and missing:
/// about 8 MB); beyond, it starts afresh.
const MAX_CACHED_PEOPLE: usize = 250_000;

impl PeopleCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, KnownPeople>> {
        // A panic elsewhere while holding it leaves nothing half-done.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Of `hashes`: the numbers known, and the hashes to look up (those
    /// neither found nor known to be missing while the project's highest
    /// number is still `max`).
    fn known(&self, project: Uuid, hashes: &[u64], max: u32) -> (HashMap<u64, u32>, Vec<u64>) {
        let mut map = self.lock();
        let known = map.entry(project).or_default();
        if known.max != max {
            known.missing.clear();
            known.max = max;
        }
        let mut found = HashMap::with_capacity(hashes.len());
        let mut ask = Vec::new();
        for &h in hashes {
            match known.found.get(&h) {
                Some(&id) => {
                    found.insert(h, id);
                }
                None if known.missing.contains(&h) => {}
                None => ask.push(h),
            }
        }
        (found, ask)
    }

    /// Keeps what a lookup of `asked` found (`found`), begun when the
    /// project's highest number was `max`.
    fn keep(&self, project: Uuid, asked: &[u64], found: &HashMap<u64, u32>, max: u32) {
        let mut map = self.lock();
        let known = map.entry(project).or_default();
        if known.found.len() + known.missing.len() + asked.len() > MAX_CACHED_PEOPLE {
            *known = KnownPeople {
                max: known.max,
                ..KnownPeople::default()
            };
        }
        known.found.extend(found);
        // Numbers may have been given since: then who was missing may not
        // be any more.
        if known.max == max {
            known
                .missing
                .extend(asked.iter().filter(|h| !found.contains_key(h)));
        }
    }

    /// Forgets `project` (deleted).
    pub(crate) fn forget(&self, project: Uuid) {
        self.lock().remove(&project);
    }
}

/// Person hashes per lookup statement.
const HASHES_PER_STATEMENT: usize = 500;

/// The database's form of a person hash (the same 64 bits).
#[allow(clippy::cast_possible_wrap)]
fn db_hash(h: u64) -> i64 {
    h as i64
}

impl Store {
    /// The highest person number of `project` (0 when none).
    ///
    /// # Errors
    /// The database error.
    pub async fn max_person_id(&self, project: Uuid) -> Result<u32, StoreError> {
        let max: Option<i32> = self
            .scalar(
                "SELECT MAX(id) FROM persons WHERE project_id = ?",
                vec![project.into()],
            )
            .await?;
        Ok(u32::try_from(max.unwrap_or(0)).unwrap_or(0))
    }

    /// The numbers of the people `hashes` of `project`; with `assign`,
    /// people without one get the next free numbers first.
    ///
    /// Numbers are assigned by the rollup job (under its lease) and by
    /// `orrery rollups rebuild`, which may run at once: see below.
    ///
    /// # Errors
    /// The database error.
    pub async fn person_ids(
        &self,
        project: Uuid,
        hashes: &[u64],
        assign: bool,
    ) -> Result<HashMap<u64, u32>, StoreError> {
        if !assign {
            let max = self.max_person_id(project).await?;
            let (mut ids, ask) = self.people.known(project, hashes, max);
            if !ask.is_empty() {
                let found = self.find_person_ids(project, &ask).await?;
                self.people.keep(project, &ask, &found, max);
                ids.extend(found);
            }
            return Ok(ids);
        }
        let mut ids = self.find_person_ids(project, hashes).await?;
        // Two numbering at once (the job and a rebuild) may pick the same
        // numbers: the loser's statement fails on the unique number, and
        // it tries again from the new highest.
        for attempt in 0.. {
            let missing: Vec<u64> = hashes
                .iter()
                .filter(|h| !ids.contains_key(h))
                .copied()
                .collect();
            if !assign || missing.is_empty() {
                break;
            }
            match self.number_people(project, &missing).await {
                Err(e) if attempt >= 3 => return Err(e),
                _ => ids.extend(self.find_person_ids(project, &missing).await?),
            }
        }
        Ok(ids)
    }

    /// Gives each of `hashes` (people without a number) the next free
    /// number.
    async fn number_people(&self, project: Uuid, hashes: &[u64]) -> Result<(), StoreError> {
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            // One statement of one shape whatever the count (an array, not
            // a list of placeholders that PostgreSQL would plan anew for
            // every length).
            let hashes: Vec<i64> = hashes.iter().map(|h| db_hash(*h)).collect();
            sqlx::query(
                "INSERT INTO persons (project_id, hash, id) \
                 SELECT $1, u.h, (SELECT COALESCE(MAX(id), 0) FROM persons \
                 WHERE project_id = $1) + u.n FROM UNNEST($2::int8[]) WITH ORDINALITY AS u(h, n) \
                 ON CONFLICT (project_id, hash) DO NOTHING",
            )
            .bind(project)
            .bind(hashes)
            .execute(self.db().get_postgres_connection_pool())
            .await
            .map_err(super::writer_db::exec_err)?;
            return Ok(());
        }
        for chunk in hashes.chunks(HASHES_PER_STATEMENT) {
            // New numbers after the highest, in one statement (the MAX
            // subquery is evaluated once). Placeholders: the project, the
            // project of the subquery, then the hashes.
            let rows = (1..=chunk.len())
                .map(|n| format!("(?, {n})"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut values: Vec<sea_orm::Value> = vec![project.into(), project.into()];
            values.extend(chunk.iter().map(|h| db_hash(*h).into()));
            self.exec(
                &format!(
                    "INSERT INTO persons (project_id, hash, id) \
                     SELECT ?, v.column1, (SELECT COALESCE(MAX(id), 0) FROM persons \
                     WHERE project_id = ?) + v.column2 FROM (VALUES {rows}) AS v WHERE true \
                     ON CONFLICT (project_id, hash) DO NOTHING"
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }

    async fn find_person_ids(
        &self,
        project: Uuid,
        hashes: &[u64],
    ) -> Result<HashMap<u64, u32>, StoreError> {
        let mut ids = HashMap::with_capacity(hashes.len());
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            let list: Vec<i64> = hashes.iter().map(|h| db_hash(*h)).collect();
            // A join on the array, not `hash = ANY(array)`: with the
            // latter the planner may scan all of the project's people by
            // the other index (65 ms instead of 5 for 1,500 hashes among
            // 775,000 people, seen with statistics from before a bulk load).
            let rows: Vec<(i64, i32)> = sqlx::query_as(
                "SELECT p.hash, p.id FROM UNNEST($2::int8[]) AS u(hash) \
                 JOIN persons p ON p.project_id = $1 AND p.hash = u.hash",
            )
            .bind(project)
            .bind(list)
            .fetch_all(self.db().get_postgres_connection_pool())
            .await
            .map_err(super::writer_db::exec_err)?;
            for (hash, id) in rows {
                #[allow(clippy::cast_sign_loss)]
                ids.insert(hash as u64, u32::try_from(id).unwrap_or(0));
            }
            return Ok(ids);
        }
        for chunk in hashes.chunks(HASHES_PER_STATEMENT) {
            let mut values: Vec<sea_orm::Value> = vec![project.into()];
            values.extend(chunk.iter().map(|h| db_hash(*h).into()));
            let rows = self
                .rows(
                    &format!(
                        "SELECT hash, id FROM persons WHERE project_id = ? AND hash IN ({})",
                        vec!["?"; chunk.len()].join(", ")
                    ),
                    values,
                )
                .await?;
            for r in &rows {
                let hash: i64 = r.try_get_by_index(0)?;
                let id: i32 = r.try_get_by_index(1)?;
                #[allow(clippy::cast_sign_loss)]
                ids.insert(hash as u64, u32::try_from(id).unwrap_or(0));
            }
        }
        Ok(ids)
    }

    /// The rows of `project`'s person index by `span` that lie in
    /// `[from_hour, to_hour)` and have the values of every dimension of
    /// `dims` (codes; none asked when empty), each as its first hour, in
    /// order.
    ///
    /// # Errors
    /// The database error.
    pub async fn indexed(
        &self,
        project: Uuid,
        span: Span,
        (from_hour, to_hour): (i64, i64),
        dims: &[i16],
    ) -> Result<Vec<i64>, StoreError> {
        let (table, slot, per) = person_table(span);
        let mut values = slots(project, per, (from_hour, to_hour));
        let valued = if dims.is_empty() {
            String::new()
        } else {
            values.push(span_code(per).into());
            values.extend(dims.iter().map(|d| sea_orm::Value::from(*d)));
            values.push((dims.len() as i64).into());
            format!(
                " AND (SELECT COUNT(*) FROM person_values v WHERE v.project_id = t.project_id \
                 AND v.span = ? AND v.slot = t.{slot} AND v.dim IN ({})) = ?",
                vec!["?"; dims.len()].join(", ")
            )
        };
        let rows = self
            .rows(
                &format!(
                    "SELECT {slot} FROM {table} t \
                     WHERE project_id = ? AND {slot} >= ? AND {slot} < ?{valued} ORDER BY {slot}"
                ),
                values,
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get_by_index::<i64>(0).map(|s| s * per))
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(Into::into)
    }

    /// Calls `each` with the first hour, the dimension code and the
    /// `values` blob of each dimension of `dims` of every row of
    /// `project`'s person index by `span` that lies in `[from_hour,
    /// to_hour)`, by row, then dimension.
    ///
    /// # Errors
    /// The database error, or the first error of `each`.
    pub async fn person_values(
        &self,
        project: Uuid,
        span: Span,
        (from_hour, to_hour): (i64, i64),
        dims: &[i16],
        mut each: impl FnMut(i64, i16, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if dims.is_empty() {
            return Ok(());
        }
        let (_, _, per) = person_table(span);
        let mut values = slots(project, per, (from_hour, to_hour));
        values.insert(1, span_code(per).into());
        values.extend(dims.iter().map(|d| sea_orm::Value::from(*d)));
        self.each_row(
            &format!(
                "SELECT slot, dim, vals FROM person_values WHERE project_id = ? AND span = ? \
                 AND slot >= ? AND slot < ? AND dim IN ({}) ORDER BY slot, dim",
                vec!["?"; dims.len()].join(", ")
            ),
            values,
            |r| {
                let blob: Vec<u8> = r.try_get_by_index(2)?;
                each(
                    r.try_get_by_index::<i64>(0)? * per,
                    r.try_get_by_index(1)?,
                    blob,
                )
            },
        )
        .await
    }

    /// Calls `each` with the first hour and the blob of `column` of every
    /// row of `project`'s person index by `span` that lies in
    /// `[from_hour, to_hour)`, in order, as they arrive.
    ///
    /// # Errors
    /// The database error, or the first error of `each`.
    pub async fn person_index(
        &self,
        project: Uuid,
        span: Span,
        (from_hour, to_hour): (i64, i64),
        column: PersonColumn,
        mut each: impl FnMut(i64, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (table, slot, per) = person_table(span);
        let col = match column {
            PersonColumn::Events => "events",
            PersonColumn::People => "people",
        };
        self.each_row(
            &format!(
                "SELECT {slot}, {col} FROM {table} \
                 WHERE project_id = ? AND {slot} >= ? AND {slot} < ? ORDER BY {slot}"
            ),
            slots(project, per, (from_hour, to_hour)),
            |r| {
                let blob: Vec<u8> = r.try_get_by_index(1)?;
                each(r.try_get_by_index::<i64>(0)? * per, blob)
            },
        )
        .await
    }
}

/// The table of the person index by `span`, its slot column and hours per
/// slot.
pub(super) fn person_table(span: Span) -> (&'static str, &'static str, i64) {
    match span {
        Span::Hour => ("person_hours", "hour", 1),
        Span::Day => ("person_days", "day", HOURS_PER_DAY),
    }
}

/// The `span` of a `person_values` row: its hours per slot.
pub(super) fn span_code(per: i64) -> i16 {
    i16::try_from(per).unwrap_or(i16::MAX)
}

/// The values of a person index read: `project`, and the first and the
/// end slot of those of `per` hours that lie wholly in `[from_hour,
/// to_hour)`.
fn slots(project: Uuid, per: i64, (from_hour, to_hour): (i64, i64)) -> Vec<sea_orm::Value> {
    let first = from_hour.div_euclid(per) + i64::from(from_hour.rem_euclid(per) != 0);
    vec![project.into(), first.into(), to_hour.div_euclid(per).into()]
}
