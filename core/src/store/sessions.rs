//! Sessions: one row per session id, kept by the writer.
//!
//! Whenever the writer stores events that carry a session id, it folds
//! them into their `sessions` rows in the same transaction (see
//! [`super::writer_db`]), so the table always agrees with the events:
//! start and end (event times), duration, event and page-view counts,
//! entry and exit page, and bounce (at most one page view). Duplicates are
//! not counted, since only events actually inserted are folded in.
//!
//! The page of an event is the `page_path` the `referrer` plugin derived,
//! or else its URL. A page view is an event named `pageview`, `$pageview`
//! or `page_view`.

use std::collections::HashMap;
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

/// What a group of newly stored events adds to one session.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SessionDelta<'a> {
    pub project_id: Uuid,
    pub session_id: &'a str,
    pub visitor_id: Option<&'a str>,
    pub distinct_id: Option<&'a str>,
    pub started_at: i64,
    pub ended_at: i64,
    pub events: i64,
    pub pageviews: i64,
    pub entry_page: Option<&'a str>,
    pub exit_page: Option<&'a str>,
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

/// Folds `events` (those just inserted) into one delta per session, in
/// order of first appearance.
pub(super) fn session_deltas<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<SessionDelta<'a>> {
    let mut index: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut out: Vec<SessionDelta<'a>> = Vec::new();
    for e in events {
        let Some(sid) = e.session_id.as_deref() else {
            continue;
        };
        let page = page_of(e);
        let pv = i64::from(PAGEVIEW_NAMES.contains(&e.name.as_str()));
        let t = e.timestamp;
        match index.get(&(e.project_id, sid)) {
            Some(&i) => {
                let d = &mut out[i];
                d.started_at = d.started_at.min(t);
                d.ended_at = d.ended_at.max(t);
                d.events += 1;
                d.pageviews += pv;
                if e.visitor_id.is_some() && d.visitor_id.is_none() {
                    d.visitor_id = e.visitor_id.as_deref();
                }
                if e.distinct_id.is_some() {
                    d.distinct_id = e.distinct_id.as_deref();
                }
                if let Some(p) = page {
                    if d.entry_page.is_none() || t < d.entry_at {
                        d.entry_page = Some(p);
                        d.entry_at = t;
                    }
                    if d.exit_page.is_none() || t >= d.exit_at {
                        d.exit_page = Some(p);
                        d.exit_at = t;
                    }
                }
            }
            None => {
                index.insert((e.project_id, sid), out.len());
                out.push(SessionDelta {
                    project_id: e.project_id,
                    session_id: sid,
                    visitor_id: e.visitor_id.as_deref(),
                    distinct_id: e.distinct_id.as_deref(),
                    started_at: t,
                    ended_at: t,
                    events: 1,
                    pageviews: pv,
                    entry_page: page,
                    exit_page: page,
                    entry_at: t,
                    exit_at: t,
                });
            }
        }
    }
    out
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
    use serde_json::json;

    use super::*;
    use crate::event::{EventLimits, parse_event};

    fn ev(name: &str, sid: Option<&str>, t: i64, url: Option<&str>) -> Event {
        let mut v = json!({"event": name, "timestamp": t});
        if let Some(s) = sid {
            v["session_id"] = json!(s);
        }
        if let Some(u) = url {
            v["url"] = json!(u);
        }
        parse_event(
            &v,
            Uuid::nil(),
            t + 10,
            EventLimits {
                max_event_bytes: 4096,
            },
        )
        .unwrap()
    }

    #[test]
    fn deltas_fold_events_per_session() {
        let t = 1_795_430_000_000;
        let events = [
            ev("pageview", Some("s1"), t + 2000, Some("https://a.test/b")),
            ev("pageview", Some("s1"), t, Some("https://a.test/a")),
            ev("click", Some("s1"), t + 5000, None),
            ev("pageview", Some("s2"), t, Some("https://a.test/x")),
            ev("pageview", None, t, Some("https://a.test/y")),
        ];
        let d = session_deltas(events.iter());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].session_id, "s1");
        assert_eq!((d[0].started_at, d[0].ended_at), (t, t + 5000));
        assert_eq!((d[0].events, d[0].pageviews), (3, 2));
        assert_eq!(d[0].entry_page, Some("https://a.test/a"));
        // The last event has no page: the exit page is the last page seen.
        assert_eq!(d[0].exit_page, Some("https://a.test/b"));
        assert_eq!((d[1].events, d[1].pageviews), (1, 1));
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
