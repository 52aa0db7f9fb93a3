//! Sessions: one row per session id, kept by the writer.
//!
//! The writer folds every event it stores with a session id into an
//! in-memory delta per session ([`PendingSessions`]) and writes the deltas
//! to `sessions` every `ingest.sessions_flush_ms` (default 1 s) and at
//! shutdown, in one transaction of upserts (see [`super::writer_db`]).
//! Writing per interval instead of per commit costs one upsert per active
//! session per second instead of one per session per commit.
//!
//! Each writer keeps a row in `session_marks`: the highest event `seq` it
//! had folded, and a heartbeat. A writer that died with deltas unwritten
//! (`kill -9`, power loss) leaves a mark whose heartbeat goes stale; the
//! next writer to notice it recomputes, from the events themselves, every
//! session touched by an event after that mark, then deletes the mark. So
//! the table agrees with the events after a crash too: start and end
//! (event times), duration, event and page-view counts, entry and exit
//! page, and bounce (at most one page view). Duplicates are not counted,
//! since only events actually inserted are folded in.
//!
//! The page of an event is the `page_path` the `referrer` plugin derived,
//! or else its URL. A page view is an event named `pageview`, `$pageview`
//! or `page_view`.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use super::entities::session;
use super::{Store, StoreError};
use crate::event::Event;

/// Event names counted as page views.
pub const PAGEVIEW_NAMES: [&str; 3] = ["pageview", "$pageview", "page_view"];

/// The columns of one upsert row, in bind order.
pub(super) const SESSION_COLUMNS: usize = 12;
/// Rows per upsert statement, largest first (as for events).
pub(super) const SESSION_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// What newly stored events add to one session, not yet written.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SessionDelta {
    pub visitor_id: Option<String>,
    pub distinct_id: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
    pub events: i64,
    pub pageviews: i64,
    pub entry_page: Option<String>,
    pub exit_page: Option<String>,
    /// Times of the events that gave the entry and exit page.
    entry_at: i64,
    exit_at: i64,
}

fn page_of(e: &Event) -> Option<&str> {
    e.enrichment
        .get("page_path")
        .and_then(Value::as_str)
        .or(e.url.as_deref())
}

impl SessionDelta {
    fn new(e: &Event, page: Option<&str>, pv: i64) -> Self {
        let t = e.timestamp;
        Self {
            visitor_id: e.visitor_id.clone(),
            distinct_id: e.distinct_id.clone(),
            started_at: t,
            ended_at: t,
            events: 1,
            pageviews: pv,
            entry_page: page.map(str::to_owned),
            exit_page: page.map(str::to_owned),
            entry_at: t,
            exit_at: t,
        }
    }

    fn add(&mut self, e: &Event, page: Option<&str>, pv: i64) {
        let t = e.timestamp;
        self.started_at = self.started_at.min(t);
        self.ended_at = self.ended_at.max(t);
        self.events += 1;
        self.pageviews += pv;
        if self.visitor_id.is_none() && e.visitor_id.is_some() {
            self.visitor_id.clone_from(&e.visitor_id);
        }
        if e.distinct_id.is_some() && self.distinct_id != e.distinct_id {
            self.distinct_id.clone_from(&e.distinct_id);
        }
        if let Some(p) = page {
            if self.entry_page.is_none() || t < self.entry_at {
                self.entry_page = Some(p.to_owned());
                self.entry_at = t;
            }
            if self.exit_page.is_none() || t >= self.exit_at {
                if self.exit_page.as_deref() != Some(p) {
                    self.exit_page = Some(p.to_owned());
                }
                self.exit_at = t;
            }
        }
    }
}

/// Session deltas of stored events, gathered by the writer between two
/// writes to the `sessions` table (see [`crate::writer`]).
#[derive(Debug, Default)]
pub struct PendingSessions {
    by_project: HashMap<Uuid, HashMap<String, SessionDelta>>,
    /// The (project, hour) of every stored event: rollups to redo.
    hours: HashSet<(Uuid, i64)>,
}

impl PendingSessions {
    /// Folds one stored event in; events without a session id are ignored.
    pub fn add(&mut self, e: &Event) {
        self.hours.insert((
            e.project_id,
            e.timestamp.div_euclid(crate::analytics::HOUR_MS),
        ));
        let Some(sid) = e.session_id.as_deref() else {
            return;
        };
        let page = page_of(e);
        let pv = i64::from(PAGEVIEW_NAMES.contains(&e.name.as_str()));
        let sessions = self.by_project.entry(e.project_id).or_default();
        if let Some(d) = sessions.get_mut(sid) {
            d.add(e, page, pv);
        } else {
            sessions.insert(sid.to_owned(), SessionDelta::new(e, page, pv));
        }
    }

    /// Sessions with something to write.
    pub fn len(&self) -> usize {
        self.by_project.values().map(HashMap::len).sum()
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.by_project.is_empty() && self.hours.is_empty()
    }

    /// Forgets everything (after it was written).
    pub fn clear(&mut self) {
        self.by_project.clear();
        self.hours.clear();
    }

    /// The (project, hour) of every event folded in.
    pub(super) fn hours(&self) -> impl Iterator<Item = (Uuid, i64)> {
        self.hours.iter().copied()
    }

    /// Every delta with its project and session id.
    pub(super) fn rows(&self) -> impl Iterator<Item = (Uuid, &str, &SessionDelta)> {
        self.by_project
            .iter()
            .flat_map(|(p, m)| m.iter().map(move |(s, d)| (*p, s.as_str(), d)))
    }
}

/// The upsert of `rows` session deltas; `postgres` picks `$n` placeholders.
/// Built once per (backend, size).
pub(super) fn upsert_sql(postgres: bool, rows: usize) -> &'static str {
    static CACHE: [[OnceLock<String>; SESSION_CHUNKS.len()]; 2] =
        [const { [const { OnceLock::new() }; SESSION_CHUNKS.len()] }; 2];
    let slot = SESSION_CHUNKS
        .iter()
        .position(|&c| c == rows)
        .expect("a chunk size");
    CACHE[usize::from(postgres)][slot].get_or_init(|| {
        let mut n = 0;
        let mut values = Vec::with_capacity(rows);
        for _ in 0..rows {
            let row: Vec<String> = (0..SESSION_COLUMNS)
                .map(|_| {
                    n += 1;
                    if postgres {
                        format!("${n}")
                    } else {
                        "?".to_owned()
                    }
                })
                .collect();
            values.push(format!("({})", row.join(", ")));
        }
        // Every SET expression sees the row as it was before the update,
        // on both databases. `visitor_id` is set once, at insert: a column
        // left out of SET keeps SQLite from touching its index.
        let started = "CASE WHEN excluded.started_at < sessions.started_at \
            THEN excluded.started_at ELSE sessions.started_at END";
        let ended = "CASE WHEN excluded.ended_at > sessions.ended_at \
            THEN excluded.ended_at ELSE sessions.ended_at END";
        format!(
            "INSERT INTO sessions (project_id, session_id, visitor_id, distinct_id, started_at, \
             ended_at, duration_ms, events, pageviews, entry_page, exit_page, bounce) VALUES {} \
             ON CONFLICT (project_id, session_id) DO UPDATE SET \
             distinct_id = COALESCE(excluded.distinct_id, sessions.distinct_id), \
             entry_page = CASE WHEN excluded.started_at < sessions.started_at \
               AND excluded.entry_page IS NOT NULL THEN excluded.entry_page \
               ELSE COALESCE(sessions.entry_page, excluded.entry_page) END, \
             exit_page = CASE WHEN excluded.ended_at >= sessions.ended_at \
               AND excluded.exit_page IS NOT NULL THEN excluded.exit_page \
               ELSE COALESCE(sessions.exit_page, excluded.exit_page) END, \
             started_at = {started}, \
             ended_at = {ended}, \
             duration_ms = ({ended}) - ({started}), \
             events = sessions.events + excluded.events, \
             pageviews = sessions.pageviews + excluded.pageviews, \
             bounce = (sessions.pageviews + excluded.pageviews) <= 1",
            values.join(", ")
        )
    })
}

/// Recomputes, from the events themselves, every session touched by an
/// event with `seq` above the one bound value. Idempotent: each row is set,
/// not added to.
pub(super) fn recompute_sql(postgres: bool) -> &'static str {
    static CACHE: [OnceLock<String>; 2] = [const { OnceLock::new() }; 2];
    CACHE[usize::from(postgres)].get_or_init(|| recompute_text(postgres))
}

fn recompute_text(postgres: bool) -> String {
    let (page, seq) = if postgres {
        ("COALESCE(x.enrichment->>'page_path', x.url)", "$1")
    } else {
        (
            "COALESCE(json_extract(x.enrichment, '$.page_path'), x.url)",
            "?",
        )
    };
    let pv = format!(
        "CASE WHEN e.name IN ({}) THEN 1 ELSE 0 END",
        PAGEVIEW_NAMES.map(|n| format!("'{n}'")).join(", ")
    );
    let same = "x.project_id = e.project_id AND x.session_id = e.session_id";
    format!(
        "INSERT INTO sessions (project_id, session_id, visitor_id, distinct_id, started_at, \
         ended_at, duration_ms, events, pageviews, entry_page, exit_page, bounce) \
         SELECT e.project_id, e.session_id, \
         (SELECT x.visitor_id FROM events x WHERE {same} AND x.visitor_id IS NOT NULL \
           ORDER BY x.\"timestamp\", x.seq LIMIT 1), \
         (SELECT x.distinct_id FROM events x WHERE {same} AND x.distinct_id IS NOT NULL \
           ORDER BY x.\"timestamp\" DESC, x.seq DESC LIMIT 1), \
         MIN(e.\"timestamp\"), MAX(e.\"timestamp\"), MAX(e.\"timestamp\") - MIN(e.\"timestamp\"), \
         COUNT(*), SUM({pv}), \
         (SELECT {page} FROM events x WHERE {same} AND {page} IS NOT NULL \
           ORDER BY x.\"timestamp\", x.seq LIMIT 1), \
         (SELECT {page} FROM events x WHERE {same} AND {page} IS NOT NULL \
           ORDER BY x.\"timestamp\" DESC, x.seq DESC LIMIT 1), \
         SUM({pv}) <= 1 \
         FROM events e \
         WHERE (e.project_id, e.session_id) IN \
           (SELECT project_id, session_id FROM events WHERE seq > {seq} AND session_id IS NOT NULL) \
         GROUP BY e.project_id, e.session_id \
         ON CONFLICT (project_id, session_id) DO UPDATE SET \
         visitor_id = excluded.visitor_id, distinct_id = excluded.distinct_id, \
         started_at = excluded.started_at, ended_at = excluded.ended_at, \
         duration_ms = excluded.duration_ms, events = excluded.events, \
         pageviews = excluded.pageviews, entry_page = excluded.entry_page, \
         exit_page = excluded.exit_page, bounce = excluded.bounce"
    )
}

/// A session as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub session_id: String,
    /// Its visitor id, when known.
    pub visitor_id: Option<String>,
    /// The last distinct id seen in it.
    pub distinct_id: Option<String>,
    /// Earliest event time, ms.
    pub started_at: i64,
    /// Latest event time, ms.
    pub ended_at: i64,
    /// `ended_at - started_at`, ms.
    pub duration_ms: i64,
    /// Events stored in it.
    pub events: i64,
    /// Page views among them.
    pub pageviews: i64,
    /// Page of the earliest event.
    pub entry_page: Option<String>,
    /// Page of the latest event.
    pub exit_page: Option<String>,
    /// At most one page view.
    pub bounce: bool,
}

impl From<session::Model> for Session {
    fn from(m: session::Model) -> Self {
        Self {
            session_id: m.session_id,
            visitor_id: m.visitor_id,
            distinct_id: m.distinct_id,
            started_at: m.started_at,
            ended_at: m.ended_at,
            duration_ms: m.duration_ms,
            events: m.events,
            pageviews: m.pageviews,
            entry_page: m.entry_page,
            exit_page: m.exit_page,
            bounce: m.bounce,
        }
    }
}

impl Store {
    /// The latest session of each of `visitors` that ended at or after
    /// `since` (ms): `(visitor_id, session_id, ended_at)`.
    ///
    /// # Errors
    /// The database error.
    pub async fn recent_sessions(
        &self,
        project: Uuid,
        visitors: &[String],
        since: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        if visitors.is_empty() {
            return Ok(Vec::new());
        }
        let rows = session::Entity::find()
            .filter(session::Column::ProjectId.eq(project))
            .filter(session::Column::VisitorId.is_in(visitors.iter().cloned()))
            .filter(session::Column::EndedAt.gte(since))
            .order_by_asc(session::Column::EndedAt)
            .all(self.db())
            .await?;
        // Ascending, so the latest of each visitor wins.
        let mut latest: HashMap<String, (String, i64)> = HashMap::new();
        for r in rows {
            if let Some(v) = r.visitor_id {
                latest.insert(v, (r.session_id, r.ended_at));
            }
        }
        Ok(latest.into_iter().map(|(v, (s, t))| (v, s, t)).collect())
    }

    /// Sessions of a project that started in `[from, to)`, newest first,
    /// at most `limit`, starting before `before` (a `started_at` cursor).
    ///
    /// # Errors
    /// The database error.
    pub async fn list_sessions(
        &self,
        project: Uuid,
        from: Option<i64>,
        to: Option<i64>,
        before: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Vec<Session>, StoreError> {
        use sea_orm::sea_query::{Cond, Expr};
        let mut q = session::Entity::find().filter(session::Column::ProjectId.eq(project));
        if let Some(from) = from {
            q = q.filter(session::Column::StartedAt.gte(from));
        }
        if let Some(to) = to {
            q = q.filter(session::Column::StartedAt.lt(to));
        }
        if let Some((t, sid)) = before {
            q = q.filter(
                Cond::any()
                    .add(Expr::col(session::Column::StartedAt).lt(t))
                    .add(
                        Cond::all()
                            .add(Expr::col(session::Column::StartedAt).eq(t))
                            .add(Expr::col(session::Column::SessionId).lt(sid)),
                    ),
            );
        }
        Ok(q.order_by_desc(session::Column::StartedAt)
            .order_by_desc(session::Column::SessionId)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBuilder;

    fn ev(name: &str, sid: Option<&str>, t: i64, url: Option<&str>) -> Event {
        let mut event = EventBuilder::new(name).at(t).received_at(t + 10);
        if let Some(s) = sid {
            event = event.session(s);
        }
        if let Some(u) = url {
            event = event.field("url", u);
        }
        event.event()
    }

    #[test]
    fn pending_sessions_fold_events_per_session() {
        let t = 1_795_430_000_000;
        let events = [
            ev("pageview", Some("s1"), t + 2000, Some("https://a.test/b")),
            ev("pageview", Some("s1"), t, Some("https://a.test/a")),
            ev("click", Some("s1"), t + 5000, None),
            ev("pageview", Some("s2"), t, Some("https://a.test/x")),
            ev("pageview", None, t, Some("https://a.test/y")),
        ];
        let mut pending = PendingSessions::default();
        for e in &events {
            pending.add(e);
        }
        assert_eq!(pending.len(), 2);
        let mut d: Vec<_> = pending.rows().collect();
        d.sort_by_key(|(_, s, _)| *s);
        let (_, sid, s1) = d[0];
        assert_eq!(sid, "s1");
        assert_eq!((s1.started_at, s1.ended_at), (t, t + 5000));
        assert_eq!((s1.events, s1.pageviews), (3, 2));
        assert_eq!(s1.entry_page.as_deref(), Some("https://a.test/a"));
        // The last event has no page: the exit page is the last page seen.
        assert_eq!(s1.exit_page.as_deref(), Some("https://a.test/b"));
        assert_eq!((d[1].2.events, d[1].2.pageviews), (1, 1));
        pending.clear();
        assert!(pending.is_empty());
        assert_eq!(pending.rows().count(), 0);
    }

    #[test]
    fn upsert_sql_has_one_placeholder_per_value() {
        let pg = upsert_sql(true, 4);
        assert!(pg.contains(&format!("${}", 4 * SESSION_COLUMNS)));
        assert!(!pg.contains(&format!("${}", 4 * SESSION_COLUMNS + 1)));
        let lite = upsert_sql(false, 16);
        assert_eq!(lite.matches('?').count(), 16 * SESSION_COLUMNS);
    }
}
