//! Answering a query over a time range from rollups and raw events.
//!
//! The range is cut at hour boundaries. An hour is read from its rollup
//! when it lies wholly inside the range, is over, has no mark (nothing
//! changed since its rollup was made), falls in one time bucket, and the
//! query is one rollups can answer: no filter, or filters on one rolled
//! dimension with the same dimension (or none) as the breakdown. Every
//! other piece is aggregated from raw events, an hour at a time (so memory
//! stays bounded by the busiest hour), with the same code that builds
//! rollups, so both ways give the same numbers.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::HOUR_MS;
use super::aggregate::{Filter, Metrics, Scan, aggregate};
use super::dims::Dimension;
use super::sketch::MERGE_EXACT_LIMIT;
use crate::event::MAX_FUTURE_SKEW_MS;
use crate::store::people::EventColumns;
use crate::store::rollups::{CellMerger, HOURS_PER_DAY, Span};
use crate::store::{Store, StoreError};

/// Most buckets a time series may have.
pub const MAX_BUCKETS: usize = 10_000;
/// Raw events are read this many hours at a time.
const RAW_HOURS_PER_READ: i64 = 6;

/// A query: project, time range `[from, to)` in ms, filters (all must
/// match).
#[derive(Debug, Clone)]
pub struct Query {
    /// The project.
    pub project: Uuid,
    /// Start, ms (inclusive).
    pub from: i64,
    /// End, ms (exclusive).
    pub to: i64,
    /// Conditions.
    pub filters: Vec<Filter>,
}

impl Query {
    /// The same query over the period of equal length just before.
    #[must_use]
    pub fn previous(&self) -> Query {
        let len = self.to - self.from;
        Query {
            from: self.from - len,
            to: self.from,
            ..self.clone()
        }
    }
}

/// A named range ending at `now` (ms): `24h`, `7d`, `30d`, `90d`, `12mo`
/// (365 days), or `all` (from `first`, the project's first event).
///
/// # Errors
/// A message naming the accepted ranges.
pub fn named_range(name: &str, now: i64, first: Option<i64>) -> Result<(i64, i64), String> {
    const DAY: i64 = 24 * HOUR_MS;
    let to = now + 1;
    let len = match name {
        "24h" => DAY,
        "7d" => 7 * DAY,
        "30d" => 30 * DAY,
        "90d" => 90 * DAY,
        "12mo" => 365 * DAY,
        "all" => return Ok((first.unwrap_or(now).min(now), to)),
        _ => {
            return Err(format!(
                "unknown range `{name}`: one of 24h, 7d, 30d, 90d, 12mo, all (or give from and to)"
            ));
        }
    };
    Ok((to - len, to))
}

/// Time-series bucket sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Hours (of local time).
    Hour,
    /// Local days.
    Day,
    /// Local weeks from Monday.
    Week,
    /// Local calendar months.
    Month,
}

impl Interval {
    /// Parses `hour`, `day`, `week` or `month`.
    ///
    /// # Errors
    /// A message naming them.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "hour" => Interval::Hour,
            "day" => Interval::Day,
            "week" => Interval::Week,
            "month" => Interval::Month,
            _ => {
                return Err(format!(
                    "unknown interval `{s}`: one of hour, day, week, month"
                ));
            }
        })
    }

    /// The API name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// The start (ms) of the bucket holding `t` in zone `tz`.
    #[must_use]
    pub fn bucket(self, tz: Tz, t: i64) -> i64 {
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(t) else {
            return t;
        };
        let local = utc.with_timezone(&tz);
        if self == Interval::Hour {
            // The local hour: cut at the local offset (zones at :30 and
            // :45 included), each side of a DST change apart.
            let into_hour = i64::from(local.minute()) * 60_000
                + i64::from(local.second()) * 1000
                + i64::from(local.timestamp_subsec_millis());
            return t - into_hour;
        }
        let date = local.date_naive();
        let start = match self {
            Interval::Day | Interval::Hour => date,
            Interval::Week => {
                date - Duration::days(i64::from(date.weekday().num_days_from_monday()))
            }
            Interval::Month => date.with_day(1).unwrap_or(date),
        };
        midnight(tz, start)
    }

    /// The start of the bucket after the one starting at `start`.
    #[must_use]
    pub fn next(self, tz: Tz, start: i64) -> i64 {
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(start) else {
            return start + HOUR_MS;
        };
        let date = utc.with_timezone(&tz).date_naive();
        let next = match self {
            Interval::Hour => return self.bucket(tz, start + HOUR_MS).max(start + 1),
            Interval::Day => date + Duration::days(1),
            Interval::Week => date + Duration::days(7),
            Interval::Month => {
                let (y, m) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date + Duration::days(31))
            }
        };
        midnight(tz, next).max(start + 1)
    }

    /// The bucket starts covering `[from, to)`.
    ///
    /// # Errors
    /// When there would be more than [`MAX_BUCKETS`].
    pub fn buckets(self, tz: Tz, from: i64, to: i64) -> Result<Vec<i64>, String> {
        let mut out = Vec::new();
        let mut b = self.bucket(tz, from);
        while b < to {
            if out.len() == MAX_BUCKETS {
                return Err(format!(
                    "the range holds more than {MAX_BUCKETS} buckets of this interval: \
                     choose a longer interval or a shorter range"
                ));
            }
            out.push(b);
            b = self.next(tz, b);
        }
        Ok(out)
    }
}

/// Local midnight of `date` in `tz`, as ms; when midnight does not exist
/// (a DST gap), the first hour that does.
fn midnight(tz: Tz, date: NaiveDate) -> i64 {
    let mut at = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&at).earliest() {
            return t.timestamp_millis();
        }
        at += Duration::hours(1);
    }
    Utc.from_utc_datetime(&at).timestamp_millis()
}

/// The rollup dimension code a query can be answered from, if any.
fn rollup_code(q: &Query, group: Option<&Dimension>) -> Option<i16> {
    let filter_dims: BTreeSet<_> = q
        .filters
        .iter()
        .map(|f| f.dimension.rolled())
        .collect::<Option<_>>()?;
    if filter_dims.len() > 1 {
        return None;
    }
    let group = match group {
        None => None,
        Some(d) => Some(d.rolled()?),
    };
    match (filter_dims.first().copied(), group) {
        (None, None) => Some(0),
        (None, Some(g)) => Some(g.code()),
        (Some(f), None) => Some(f.code()),
        (Some(f), Some(g)) if f == g => Some(g.code()),
        _ => None,
    }
}

/// The part of `q`'s range where events can be, if any: from the
/// project's first event (none before it) to the furthest future time
/// ingestion accepts. A range of centuries costs what the data costs.
///
/// # Errors
/// The database error.
pub async fn data_range(
    store: &Store,
    q: &Query,
    now: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    let Some(first) = store.first_event_at(q.project).await? else {
        return Ok(None);
    };
    let from = q.from.max(first);
    let to = q.to.min(now.saturating_add(MAX_FUTURE_SKEW_MS + 1));
    Ok((from < to).then_some((from, to)))
}

/// Reads of `[from, to)` of at most `len` ms each that skip stretches
/// with no data: each read starts at the hour of the next event (or
/// session start, with `sessions`) found by an index seek, so a range of
/// decades with a few busy days costs a few reads, not one per window.
/// The reads partition the data: every event and session start in the
/// range falls in exactly one.
#[derive(Debug)]
pub struct Reads {
    project: Uuid,
    cursor: i64,
    to: i64,
    len: i64,
    sessions: bool,
}

impl Reads {
    /// Reads of `[from, to)` of `project`, at most `len` ms each; session
    /// starts count as data when `sessions`.
    #[must_use]
    pub fn new(project: Uuid, (from, to): (i64, i64), len: i64, sessions: bool) -> Self {
        Self {
            project,
            cursor: from,
            to,
            len,
            sessions,
        }
    }

    /// The next read `[a, b)`, `None` when no data is left.
    ///
    /// # Errors
    /// The database error.
    pub async fn next(&mut self, store: &Store) -> Result<Option<(i64, i64)>, StoreError> {
        if self.cursor >= self.to {
            return Ok(None);
        }
        let next = store
            .next_data_at(self.project, self.cursor, self.to, self.sessions)
            .await?;
        let Some(t) = next else {
            self.cursor = self.to;
            return Ok(None);
        };
        let a = self.cursor.max(t - t.rem_euclid(HOUR_MS));
        let b = a.saturating_add(self.len).min(self.to);
        self.cursor = b;
        Ok(Some((a, b)))
    }
}

/// A bucket start and a group value.
pub type GridKey = (i64, Option<String>);

/// Numbers per (bucket start, group value).
pub type Grid = HashMap<GridKey, Metrics>;

/// Runs `q`, grouped by `group` (or not), into the buckets of `bucket`;
/// `now` (ms) decides which hours are over. With `top` below the number
/// of values, only the visitor sets that the `top` values with the most
/// visitors need are merged whole (see [`CellMerger::finish_top`]); the
/// keys of the others come back apart, their other numbers complete.
///
/// # Errors
/// The database error.
pub async fn run(
    store: &Store,
    q: &Query,
    group: Option<&Dimension>,
    bucket: &(dyn Fn(i64) -> i64 + Sync),
    now: i64,
    top: usize,
) -> Result<(Grid, HashSet<GridKey>), StoreError> {
    let mut grid = Grid::new();
    let Some((from, to)) = data_range(store, q, now).await? else {
        return Ok((grid, HashSet::new()));
    };
    let first_hour = from.div_euclid(HOUR_MS);
    let end_hour = (to - 1).div_euclid(HOUR_MS) + 1;
    let code = rollup_code(q, group);
    let dirty = if code.is_some() {
        store.dirty_hours(q.project, first_hour, end_hour).await?
    } else {
        Default::default()
    };
    let now_hour = now.div_euclid(HOUR_MS);
    // Rolled hours as runs [a, b), and raw pieces [from, to) in ms.
    let mut rolled: Vec<(i64, i64)> = Vec::new();
    let mut raw: Vec<(i64, i64)> = Vec::new();
    for h in first_hour..end_hour {
        let (s, e) = (h * HOUR_MS, (h + 1) * HOUR_MS);
        let whole = s >= from && e <= to;
        if code.is_some()
            && whole
            && h < now_hour
            && !dirty.contains(&h)
            && bucket(s) == bucket(e - 1)
        {
            match rolled.last_mut() {
                Some(run) if run.1 == h => run.1 = h + 1,
                _ => rolled.push((h, h + 1)),
            }
        } else {
            raw.push((s.max(from), e.min(to)));
        }
    }
    // Only the columns the filters and the grouping read (no JSON to
    // parse for plain totals).
    let cols = EventColumns::reading(None, q.filters.iter().map(|f| &f.dimension).chain(group));
    let groups = [group.cloned()];
    for piece in merge_pieces(raw) {
        let mut reads = Reads::new(q.project, piece, RAW_HOURS_PER_READ * HOUR_MS, true);
        while let Some((a, b)) = reads.next(store).await? {
            let (events, sessions) = store.raw_facts(q.project, a, b, &cols).await?;
            let cells = aggregate(
                &events,
                &sessions,
                &Scan {
                    filters: &q.filters,
                    groups: &groups,
                    bucket,
                    exact_limit: MERGE_EXACT_LIMIT,
                },
            );
            for ((_, b, key), m) in cells {
                grid.entry((b, key))
                    .or_default()
                    .merge(&m, MERGE_EXACT_LIMIT);
            }
        }
    }
    // Rolled-up hours last: their visitor sets are merged knowing the
    // rest (see `top`).
    let mut left = HashSet::new();
    if let Some(code) = code {
        // A breakdown's values come mixed, hour after hour (or day after
        // day); totals come bucket after bucket.
        let mut merger = CellMerger::new(MERGE_EXACT_LIMIT, group.is_some());
        for piece in by_days(store, q.project, &rolled, bucket).await? {
            let (span, a, b) = match piece {
                Rolled::Hours(a, b) => (Span::Hour, a, b),
                Rolled::Days(a, b) => (Span::Day, a, b),
            };
            store
                .rollup_cells(span, q.project, (code, a, b), |mut cell| {
                    if !q.filters.iter().all(|f| f.matches(cell.value.as_deref())) {
                        return Ok(());
                    }
                    let key = if group.is_some() {
                        cell.value.take()
                    } else {
                        None
                    };
                    merger.add(&mut grid, (bucket(cell.hour * HOUR_MS), key), cell)
                })
                .await?;
        }
        left = merger.finish_top(store, q.project, &mut grid, top).await?;
    }
    Ok((grid, left))
}

/// A run of rolled-up time: hours `[a, b)` from the hourly rollups, or
/// UTC days `[a, b)` from the daily ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rolled {
    Hours(i64, i64),
    Days(i64, i64),
}

/// Cuts runs of rolled-up hours into whole UTC days read from the daily
/// rollups (when the day is up to date and lies in one bucket) and the
/// hours left over.
async fn by_days(
    store: &Store,
    project: Uuid,
    runs: &[(i64, i64)],
    bucket: &(dyn Fn(i64) -> i64 + Sync),
) -> Result<Vec<Rolled>, StoreError> {
    const DAY: i64 = HOURS_PER_DAY;
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return Ok(Vec::new());
    };
    // Only a run of a day or more can hold a whole day.
    let due = if runs.iter().any(|(a, b)| b - a >= DAY) {
        store
            .days_due(project, first.0.div_euclid(DAY), last.1.div_euclid(DAY) + 1)
            .await?
    } else {
        Default::default()
    };
    let mut out: Vec<Rolled> = Vec::new();
    for &(a, b) in runs {
        let mut h = a;
        while h < b {
            let day = h.div_euclid(DAY);
            let whole = h.rem_euclid(DAY) == 0
                && h + DAY <= b
                && !due.contains(&day)
                && bucket(h * HOUR_MS) == bucket((h + DAY) * HOUR_MS - 1);
            match (whole, out.last_mut()) {
                (true, Some(Rolled::Days(_, end))) if *end == day => *end = day + 1,
                (true, _) => out.push(Rolled::Days(day, day + 1)),
                (false, Some(Rolled::Hours(_, end))) if *end == h => *end = h + 1,
                (false, _) => out.push(Rolled::Hours(h, h + 1)),
            }
            h += if whole { DAY } else { 1 };
        }
    }
    Ok(out)
}

/// Joins adjacent raw pieces into runs, each read in [`Reads`] of at
/// most [`RAW_HOURS_PER_READ`] hours (a session is read with its first
/// event, whose time is its start, whatever the cut).
fn merge_pieces(pieces: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in pieces {
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// The totals of `q`.
///
/// # Errors
/// The database error.
pub async fn totals(store: &Store, q: &Query, now: i64) -> Result<Metrics, StoreError> {
    let (mut grid, _) = run(store, q, None, &|_| 0, now, usize::MAX).await?;
    Ok(grid.remove(&(0, None)).unwrap_or_default())
}

/// The time series of `q` over `buckets` (from [`Interval::buckets`]) of
/// `interval` in `tz`: one entry per bucket, zeros where nothing happened.
///
/// # Errors
/// The database error.
pub async fn timeseries(
    store: &Store,
    q: &Query,
    interval: Interval,
    tz: Tz,
    buckets: Vec<i64>,
    now: i64,
) -> Result<Vec<(i64, Metrics)>, StoreError> {
    let (mut grid, _) = run(store, q, None, &|t| interval.bucket(tz, t), now, usize::MAX).await?;
    Ok(buckets
        .into_iter()
        .map(|b| (b, grid.remove(&(b, None)).unwrap_or_default()))
        .collect())
}

/// A page of a breakdown.
#[derive(Debug, Clone, Default)]
pub struct BreakdownPage {
    /// The page's values with their numbers, in order.
    pub rows: Vec<(Option<String>, Metrics)>,
    /// How many values have events or sessions, on all pages.
    pub total: usize,
}

/// The values of `by` in `q` that have events or sessions, with their
/// numbers: most visitors first, then most events, then by value; the
/// `limit` of them from `offset`.
///
/// Only the values that can place in the first `offset + limit` have
/// their visitor sets merged whole (see [`CellMerger::finish_top`]): a
/// long tail of small values costs its counts, not its sets.
///
/// # Errors
/// The database error.
pub async fn breakdown(
    store: &Store,
    q: &Query,
    by: &Dimension,
    now: i64,
    (offset, limit): (usize, usize),
) -> Result<BreakdownPage, StoreError> {
    let top = offset.saturating_add(limit);
    let (grid, left) = run(store, q, Some(by), &|_| 0, now, top).await?;
    // The values left unmerged rank below the first `top` (whatever
    // their full sets), so they go last, where their order is not shown.
    let mut rows: Vec<(bool, u64, Option<String>, Metrics)> = grid
        .into_iter()
        .filter(|(_, m)| m.events > 0 || m.sessions > 0)
        .map(|(key, m)| (left.contains(&key), m.visitors.count(), key.1, m))
        .collect();
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(b.3.events.cmp(&a.3.events))
            .then_with(|| a.2.cmp(&b.2))
    });
    let total = rows.len();
    Ok(BreakdownPage {
        rows: rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, _, value, m)| (value, m))
            .collect(),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn days_are_cut_at_local_midnight() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let b = Interval::Day.bucket(tz, ms("2026-03-08T12:00:00Z"));
        assert_eq!(b, ms("2026-03-08T05:00:00Z"));
        // The DST day is 23 hours long.
        assert_eq!(Interval::Day.next(tz, b), ms("2026-03-09T04:00:00Z"));
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            Interval::Hour.bucket(kolkata, ms("2026-01-01T10:45:00Z")),
            ms("2026-01-01T10:30:00Z")
        );
        assert_eq!(
            Interval::Week.bucket(tz, ms("2026-12-03T12:00:00Z")),
            ms("2026-11-30T05:00:00Z")
        );
        assert_eq!(
            Interval::Month.next(tz, ms("2026-12-01T05:00:00Z")),
            ms("2027-01-01T05:00:00Z")
        );
    }

    #[test]
    fn buckets_cover_the_range_and_are_bounded() {
        let utc: Tz = "UTC".parse().unwrap();
        let from = ms("2026-01-01T10:00:00Z");
        let b = Interval::Day
            .buckets(utc, from, from + 3 * 24 * HOUR_MS)
            .unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], ms("2026-01-01T00:00:00Z"));
        assert!(Interval::Hour.buckets(utc, 0, 20_000 * HOUR_MS).is_err());
    }

    #[test]
    fn named_ranges() {
        assert_eq!(
            named_range("24h", 100 * HOUR_MS, None).unwrap().0,
            76 * HOUR_MS + 1
        );
        assert_eq!(named_range("all", 1000, Some(10)).unwrap(), (10, 1001));
        assert!(
            named_range("2w", 0, None)
                .unwrap_err()
                .contains("unknown range `2w`")
        );
    }
}
