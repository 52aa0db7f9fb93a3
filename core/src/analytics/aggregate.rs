//! One aggregation for rollups and for raw events, so that a number read
//! from rollups and the same number computed from raw events agree by
//! construction.
//!
//! Event numbers (events, page views, unique visitors) count the events
//! that match the filters, by event time. Session numbers (sessions,
//! bounces, duration, page views per session) count the sessions whose
//! first event matches them, by session start. Entry and exit page belong
//! to sessions: when a query filters on one of them, every number is a
//! session number (events and page views are those of the selected
//! sessions), and event dimensions are read from each session's first
//! event.

use std::collections::HashMap;

use super::dims::{Dim, Dimension, EventFacts, SessionFacts};
use super::sketch::VisitorSet;

/// The additive numbers of a set of events and sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Events.
    pub events: i64,
    /// Page views.
    pub pageviews: i64,
    /// Unique visitors.
    pub visitors: VisitorSet,
    /// Sessions started.
    pub sessions: i64,
    /// Of them, sessions with at most one page view.
    pub bounces: i64,
    /// Their summed duration, ms.
    pub duration_ms: i64,
    /// Their summed page views.
    pub session_pageviews: i64,
}

impl Metrics {
    /// Adds `other`; `limit` as in [`VisitorSet::insert`].
    pub fn merge(&mut self, other: &Metrics, limit: usize) {
        self.events += other.events;
        self.pageviews += other.pageviews;
        self.visitors.merge(&other.visitors, limit);
        self.sessions += other.sessions;
        self.bounces += other.bounces;
        self.duration_ms += other.duration_ms;
        self.session_pageviews += other.session_pageviews;
    }
}

/// How a filter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal to the value.
    Eq,
    /// Not equal (a missing value is not equal).
    Neq,
    /// Contains the text (case-sensitive).
    Contains,
    /// Equal to one of the values.
    In,
}

/// A condition on a dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// What it reads.
    pub dimension: Dimension,
    /// How it compares.
    pub op: Op,
    /// One value, or several for [`Op::In`].
    pub values: Vec<String>,
}

impl Filter {
    /// Whether `value` (none when missing) passes.
    #[must_use]
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self.op, value) {
            (Op::Neq, None) => true,
            (_, None) => false,
            (Op::Eq | Op::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Op::Neq, Some(v)) => self.values.iter().all(|x| x != v),
            (Op::Contains, Some(v)) => self.values.iter().any(|x| v.contains(x.as_str())),
        }
    }
}

/// Cells of an aggregation: (grouping index, time bucket, group value).
pub type Cells = HashMap<(usize, i64, Option<String>), Metrics>;

/// What to aggregate: filters, groupings (`None` is the totals) and the
/// time bucket of an event time.
pub struct Scan<'a> {
    /// All must match.
    pub filters: &'a [Filter],
    /// One set of cells per grouping.
    pub groups: &'a [Option<Dimension>],
    /// The bucket of a time, ms.
    pub bucket: &'a dyn Fn(i64) -> i64,
    /// When visitor sets become sketches.
    pub exact_limit: usize,
}

impl Scan<'_> {
    /// Whether every number is a session number (a filter on entry or exit
    /// page).
    fn per_session(&self) -> bool {
        self.filters.iter().any(|f| f.dimension.per_session())
    }
}

/// Aggregates `events` and `sessions` (those started in the same time
/// range, whose first events are among `events`).
#[must_use]
pub fn aggregate(events: &[EventFacts], sessions: &[SessionFacts], scan: &Scan<'_>) -> Cells {
    let mut cells = Cells::new();
    let per_session = scan.per_session();
    if !per_session {
        for e in events {
            if !scan
                .filters
                .iter()
                .all(|f| f.matches(e.value(&f.dimension).as_deref()))
            {
                continue;
            }
            let bucket = (scan.bucket)(e.timestamp);
            for (g, group) in scan.groups.iter().enumerate() {
                if group.as_ref().is_some_and(Dimension::per_session) {
                    continue;
                }
                let key = group.as_ref().and_then(|d| e.value(d));
                let m = cells.entry((g, bucket, key)).or_default();
                m.events += 1;
                m.pageviews += i64::from(e.is_pageview());
                if let Some(v) = e.visitor {
                    m.visitors.insert(v, scan.exact_limit);
                }
            }
        }
    }
    if sessions.is_empty() {
        return cells;
    }
    // Each session's first event: least (time, seq).
    let mut first: HashMap<&str, &EventFacts> = HashMap::new();
    for e in events {
        if let Some(s) = e.session_id.as_deref() {
            first
                .entry(s)
                .and_modify(|f| {
                    if (e.timestamp, e.seq) < (f.timestamp, f.seq) {
                        *f = e;
                    }
                })
                .or_insert(e);
        }
    }
    for s in sessions {
        let entry = first.get(s.session_id.as_str()).copied();
        let value = |d: &Dimension| -> Option<String> {
            match d {
                Dimension::Rolled(dim) if dim.per_session() => s.value(*dim),
                _ => entry.and_then(|e| e.value(d)),
            }
        };
        if !scan
            .filters
            .iter()
            .all(|f| f.matches(value(&f.dimension).as_deref()))
        {
            continue;
        }
        let bucket = (scan.bucket)(s.started_at);
        for (g, group) in scan.groups.iter().enumerate() {
            let key = group.as_ref().and_then(&value);
            let m = cells.entry((g, bucket, key)).or_default();
            m.sessions += 1;
            m.bounces += i64::from(s.bounce);
            m.duration_ms += s.duration_ms;
            m.session_pageviews += s.pageviews;
            if per_session || group.as_ref().is_some_and(Dimension::per_session) {
                m.events += s.events;
                m.pageviews += s.pageviews;
                if let Some(v) = entry.and_then(|e| e.visitor) {
                    m.visitors.insert(v, scan.exact_limit);
                }
            }
        }
    }
    cells
}

/// The groupings of a rollup: the totals, then every rolled dimension.
#[must_use]
pub fn rollup_groups() -> Vec<Option<Dimension>> {
    std::iter::once(None)
        .chain(Dim::ALL.map(|d| Some(Dimension::Rolled(d))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: i64, t: i64, name: &str, visitor: u64, session: &str, country: &str) -> EventFacts {
        EventFacts {
            seq,
            name: name.into(),
            timestamp: t,
            visitor: Some(visitor),
            session_id: Some(session.into()),
            url: Some(format!("/p{}", seq % 2)),
            enrichment: json!({"country": country}).as_object().cloned().unwrap(),
            properties: None,
        }
    }

    /// One bucket, exact visitor sets.
    fn run(
        events: &[EventFacts],
        sessions: &[SessionFacts],
        filters: &[Filter],
        groups: &[Option<Dimension>],
    ) -> Cells {
        aggregate(
            events,
            sessions,
            &Scan {
                filters,
                groups,
                bucket: &|_| 0,
                exact_limit: 100,
            },
        )
    }

    fn session(id: &str, started_at: i64, pageviews: i64, entry: &str) -> SessionFacts {
        SessionFacts {
            session_id: id.into(),
            started_at,
            duration_ms: 1000,
            events: 2,
            pageviews,
            bounce: pageviews <= 1,
            entry_page: Some(entry.into()),
            exit_page: Some("/out".into()),
        }
    }

    #[test]
    fn events_by_time_sessions_by_their_first_event() {
        let events = vec![
            ev(1, 10, "pageview", 1, "s1", "DE"),
            ev(2, 20, "click", 1, "s1", "FR"),
            ev(3, 15, "pageview", 2, "s2", "FR"),
        ];
        let sessions = vec![session("s1", 10, 1, "/p1"), session("s2", 15, 2, "/p1")];
        let country = Dimension::Rolled(Dim::Country);
        let groups = [None, Some(country.clone())];
        let cells = run(&events, &sessions, &[], &groups);
        let total = &cells[&(0, 0, None)];
        assert_eq!(
            (total.events, total.pageviews, total.visitors.count()),
            (3, 2, 2)
        );
        assert_eq!(
            (total.sessions, total.bounces, total.session_pageviews),
            (2, 1, 3)
        );
        // s1 started in DE (its first event), s2 in FR.
        let de = &cells[&(1, 0, Some("DE".into()))];
        assert_eq!((de.events, de.sessions, de.bounces), (1, 1, 1));
        let fr = &cells[&(1, 0, Some("FR".into()))];
        assert_eq!((fr.events, fr.visitors.count(), fr.sessions), (2, 2, 1));

        // A filter on an event dimension: events that match, sessions whose
        // first event does.
        let f = [Filter {
            dimension: country,
            op: Op::Eq,
            values: vec!["FR".into()],
        }];
        let cells = run(&events, &sessions, &f, &[None]);
        assert_eq!(cells[&(0, 0, None)], *fr);
    }

    #[test]
    fn entry_page_filters_select_sessions() {
        let events = vec![
            ev(1, 10, "pageview", 1, "s1", "DE"),
            ev(2, 15, "pageview", 2, "s2", "FR"),
        ];
        let sessions = vec![session("s1", 10, 1, "/a"), session("s2", 15, 3, "/b")];
        let f = [Filter {
            dimension: Dimension::Rolled(Dim::EntryPage),
            op: Op::Neq,
            values: vec!["/a".into()],
        }];
        let cells = run(&events, &sessions, &f, &[None]);
        let m = &cells[&(0, 0, None)];
        // Only s2, with its own event and page-view counts.
        assert_eq!((m.sessions, m.events, m.pageviews, m.bounces), (1, 2, 3, 0));
        assert_eq!(m.visitors.count(), 1);
    }

    #[test]
    fn filter_operators() {
        let f = |op, values: &[&str]| Filter {
            dimension: Dimension::Rolled(Dim::Page),
            op,
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(f(Op::Eq, &["/a"]).matches(Some("/a")));
        assert!(!f(Op::Eq, &["/a"]).matches(None));
        assert!(f(Op::Neq, &["/a"]).matches(None));
        assert!(!f(Op::Neq, &["/a", "/b"]).matches(Some("/b")));
        assert!(f(Op::Contains, &["blog"]).matches(Some("/blog/x")));
        assert!(f(Op::In, &["/a", "/b"]).matches(Some("/b")));
        assert!(!f(Op::In, &["/a", "/b"]).matches(Some("/c")));
    }
}
