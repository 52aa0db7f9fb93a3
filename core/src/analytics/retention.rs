//! Retention: people grouped by the period (day, week, month, in a time
//! zone) they were first seen in, and how many of each group were active
//! in each later period.
//!
//! A person is who the statistics count as a visitor. First seen is the
//! time of their first event ever (with the cohort event's name, when
//! one is given; passing the filters, when there are some), so a person
//! seen before the range belongs to no cohort in it. Active in a period
//! means an event in it (with the return event's name, when given;
//! passing the filters). Period 0 is the cohort's own period: with no
//! return event everyone in the cohort was active in it. Only periods
//! that start before the end of the range are listed, so later cohorts
//! have shorter rows.

use std::collections::{HashMap, HashSet};

use chrono_tz::Tz;

use super::persons;
use super::query::{Interval, Query, Reads, data_range};
use crate::store::people::EventColumns;
use crate::store::{Store, StoreError};

/// Events are read a day at a time when filters need them.
const READ_MS: i64 = 24 * super::HOUR_MS;

/// A retention table over `query`'s range.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Project, range (cohorts first seen in it, activity in it) and
    /// filters.
    pub query: Query,
    /// Day, week or month.
    pub period: Interval,
    /// The zone of the period boundaries.
    pub tz: Tz,
    /// The event that makes a person seen (any when `None`).
    pub cohort_event: Option<String>,
    /// The event that makes a person active (any when `None`).
    pub return_event: Option<String>,
    /// Most periods per cohort (period 0 included).
    pub periods: usize,
}

/// One cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// Start of its period, ms.
    pub start: i64,
    /// People first seen in it.
    pub people: u64,
    /// Of them, active in its period 0, 1, 2...
    pub active: Vec<u64>,
}

/// Runs `r` over the cohort periods `starts` (from
/// [`Interval::buckets`] over the range); `now` (ms) bounds the range as
/// for statistics.
///
/// # Errors
/// The database error.
pub async fn run(
    store: &Store,
    r: &Retention,
    starts: &[i64],
    now: i64,
) -> Result<Vec<Cohort>, StoreError> {
    let mut cohorts: Vec<Cohort> = starts
        .iter()
        .enumerate()
        .map(|(i, s)| Cohort {
            start: *s,
            people: 0,
            active: vec![0; r.periods.min(starts.len() - i)],
        })
        .collect();
    let Some((from, to)) = data_range(store, &r.query, now).await? else {
        return Ok(cohorts);
    };
    if persons::retention(store, r, starts, (from, to), now, &mut cohorts).await? {
        return Ok(cohorts);
    }
    let index = |t: i64| {
        let b = r.period.bucket(r.tz, t);
        starts.binary_search(&b).ok()
    };
    // Each person's first-seen time, and the periods they were active in.
    let mut first: HashMap<u64, i64> = HashMap::new();
    let mut active: HashSet<(u64, usize)> = HashSet::new();
    if r.query.filters.is_empty() {
        let cohort_event = r.cohort_event.as_deref();
        first.extend(store.first_seen(r.query.project, to, cohort_event).await?);
        let return_event = r.return_event.as_deref();
        for (person, a, b) in store
            .active_hours(r.query.project, from, to, return_event)
            .await?
        {
            for t in [a, b] {
                if let Some(i) = index(t) {
                    active.insert((person, i));
                }
            }
        }
    } else {
        let cols = EventColumns::reading(None, r.query.filters.iter().map(|f| &f.dimension))
            .keeping(&r.query.filters);
        let Some(earliest) = store.first_event_at(r.query.project).await? else {
            return Ok(cohorts);
        };
        let mut reads = Reads::new(r.query.project, (earliest, to), READ_MS, false);
        while let Some((a, b)) = reads.next(store).await? {
            for e in store.event_facts(r.query.project, a, b, &cols).await? {
                let Some(person) = e.visitor else { continue };
                if !r
                    .query
                    .filters
                    .iter()
                    .all(|f| f.matches(e.value(&f.dimension).as_deref()))
                {
                    continue;
                }
                if r.cohort_event.as_ref().is_none_or(|n| *n == e.name) {
                    let t = first.entry(person).or_insert(e.timestamp);
                    *t = (*t).min(e.timestamp);
                }
                if e.timestamp >= from
                    && r.return_event.as_ref().is_none_or(|n| *n == e.name)
                    && let Some(i) = index(e.timestamp)
                {
                    active.insert((person, i));
                }
            }
        }
    }
    let mut cohort_of: HashMap<u64, usize> = HashMap::new();
    for (person, t) in first {
        if t >= from
            && let Some(c) = index(t)
        {
            cohorts[c].people += 1;
            cohort_of.insert(person, c);
        }
    }
    for (person, i) in active {
        if let Some(&c) = cohort_of.get(&person)
            && i >= c
            && let Some(n) = cohorts[c].active.get_mut(i - c)
        {
            *n += 1;
        }
    }
    Ok(cohorts)
}
