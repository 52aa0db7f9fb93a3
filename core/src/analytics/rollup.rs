//! Redoing the rollup of one hour from its raw events and sessions, with
//! the hour's row of the person index.

use std::collections::HashMap;

use tracing::debug;
use uuid::Uuid;

use super::HOUR_MS;
use super::aggregate::{Metrics, Scan, aggregate, rollup_groups};
use super::persons::{HourIndex, INDEXED_DIMS};
use super::sketch::EXACT_LIMIT;
use crate::store::people::{EventColumns, PersonColumn};
use crate::store::rollups::{CellMerger, HOURS_PER_DAY, Span, rollup_codes};
use crate::store::{Store, StoreError};

/// Recomputes and stores the rollup of `project`'s `hour` and its row of
/// the person index (numbering its new people first), clearing its
/// mark when its version is still `version` (always when `None`).
/// Returns the number of cells written.
///
/// # Errors
/// The database error; the old rollup and the mark stay then.
pub async fn redo_hour(
    store: &Store,
    project: Uuid,
    hour: i64,
    version: Option<i64>,
) -> Result<usize, StoreError> {
    let from = hour * HOUR_MS;
    let (events, sessions) = store
        .raw_facts(
            project,
            from,
            from + HOUR_MS,
            &EventColumns {
                names: None,
                enrichment: true,
                properties: false,
                filters: &[],
            },
        )
        .await?;
    let groups = rollup_groups();
    let cells = aggregate(
        &events,
        &sessions,
        &Scan {
            filters: &[],
            groups: &groups,
            bucket: &|_| 0,
            exact_limit: EXACT_LIMIT,
        },
    );
    // One bucket: each cell is one row (dimension code, value, numbers).
    let rows: Vec<_> = cells
        .into_iter()
        .map(|((g, _, value), m)| {
            let code = groups[g]
                .as_ref()
                .and_then(super::Dimension::rolled)
                .map_or(0, super::Dim::code);
            (code, value, m)
        })
        .collect();
    let mut people: Vec<u64> = events.iter().filter_map(|e| e.visitor).collect();
    people.sort_unstable();
    people.dedup();
    let ids = store.person_ids(project, &people, true).await?;
    let index = HourIndex::build(&events, &ids, from);
    let row = (!events.is_empty()).then(|| index.row());
    store
        .write_rollup(project, hour, version, &rows, row.as_ref())
        .await?;
    debug!(%project, hour, cells = rows.len(), events = events.len(), "rollup redone");
    Ok(rows.len())
}

/// Hashes a daily visitor set keeps exactly: the union of 24 exact hourly
/// sets always fits, so a day merges to exactly what its hours merge to
/// and a query answers the same from days as from hours.
pub const DAY_EXACT_LIMIT: usize = 24 * EXACT_LIMIT;

/// Makes the daily rollup of `project`'s UTC `day` from its hourly
/// rollups, and its row of the person index by day from its hours' rows,
/// clearing the day's mark when its version is still `version` (a redo of
/// one of its hours meanwhile renews the mark, and the day is made
/// again). Returns the number of cells written.
///
/// # Errors
/// The database error; the old daily rollup and the mark stay then.
pub async fn make_day(
    store: &Store,
    project: Uuid,
    day: i64,
    version: i64,
) -> Result<usize, StoreError> {
    let (from, to) = (day * HOURS_PER_DAY, (day + 1) * HOURS_PER_DAY);
    let mut merged: HashMap<(i16, Option<String>), Metrics> = HashMap::new();
    // Each hour's values come mixed.
    let mut merger = CellMerger::new(DAY_EXACT_LIMIT, true);
    for code in rollup_codes() {
        store
            .rollup_cells(Span::Hour, project, (code, from, to), |mut cell| {
                let value = cell.value.take();
                merger.add(&mut merged, (code, value), cell)
            })
            .await?;
    }
    merger.finish(store, project, &mut merged).await?;
    let cells: Vec<_> = merged
        .into_iter()
        .map(|((code, value), m)| (code, value, m))
        .collect();
    let mut hours: Vec<(u32, Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    let offset = |h: i64| u32::try_from((h - from) * HOUR_MS).unwrap_or(u32::MAX); // under 24 h: fits
    store
        .person_index(
            project,
            Span::Hour,
            (from, to),
            PersonColumn::Events,
            |h, blob| {
                hours.push((offset(h), blob, Vec::new()));
                Ok(())
            },
        )
        .await?;
    // Each hour's values, by dimension in the order of INDEXED_DIMS (their
    // codes ascend in it); an hour without them leaves the day without.
    let codes: Vec<i16> = INDEXED_DIMS.iter().map(|d| d.code()).collect();
    let mut at = 0;
    store
        .person_values(project, Span::Hour, (from, to), &codes, |h, _, blob| {
            while hours.get(at).is_some_and(|x| x.0 < offset(h)) {
                at += 1;
            }
            if let Some(hour) = hours.get_mut(at).filter(|x| x.0 == offset(h)) {
                hour.2.push(blob);
            }
            Ok(())
        })
        .await?;
    let index = if hours.is_empty() {
        None
    } else {
        let merged = HourIndex::merge(
            hours
                .iter()
                .map(|(o, b, v)| (*o, b.as_slice(), v.as_slice())),
        )
        .ok_or_else(|| {
            StoreError::Db(sea_orm::DbErr::Custom(format!(
                "the person index of project {project}, day {day}, cannot be read"
            )))
        })?;
        Some(merged.row())
    };
    store
        .write_day(project, day, version, &cells, index.as_ref())
        .await?;
    debug!(%project, day, cells = cells.len(), "daily rollup made");
    Ok(cells.len())
}

/// Makes the daily rollups of the marked days that are over (before
/// `now_ms`'s UTC day) and have no hour waiting to be redone, oldest
/// first, at most `limit`. Returns how many were made.
///
/// # Errors
/// The database error of the first day that failed.
pub async fn make_due_days(store: &Store, now_ms: i64, limit: u64) -> Result<usize, StoreError> {
    make_days(store, now_ms, limit, None).await
}

/// [`make_due_days`], leaving for later the days made less than a gap
/// ago when `recent` is given (a day whose hours keep receiving late
/// events is then made at most once per gap; it is read from its hours
/// meanwhile).
async fn make_days(
    store: &Store,
    now_ms: i64,
    limit: u64,
    mut recent: Option<&mut RecentRedos>,
) -> Result<usize, StoreError> {
    let today = now_ms.div_euclid(HOUR_MS * HOURS_PER_DAY);
    let mut made = 0;
    for d in store.due_days(today, limit).await? {
        if let Some(r) = recent.as_deref_mut() {
            if r.days.contains_key(&(d.project, d.day)) {
                continue;
            }
            if r.gap_ms > 0 {
                r.days.insert((d.project, d.day), now_ms);
            }
        }
        make_day(store, d.project, d.day, d.version).await?;
        made += 1;
    }
    Ok(made)
}

/// When the job last redid each hour and made each day, so that an hour
/// (a day) that keeps receiving late events is redone (made) at most once
/// per gap.
#[derive(Debug, Default)]
pub struct RecentRedos {
    gap_ms: i64,
    at: HashMap<(Uuid, i64), i64>,
    days: HashMap<(Uuid, i64), i64>,
    /// Whether every indexed hour was found with its values (hours
    /// indexed since always have them).
    backfilled: bool,
}

impl RecentRedos {
    /// Hours are redone at most once per `gap_ms` (0: always).
    #[must_use]
    pub fn new(gap_ms: i64) -> Self {
        Self {
            gap_ms,
            at: HashMap::new(),
            days: HashMap::new(),
            backfilled: false,
        }
    }
}

/// Redoes the marked hours that are over (before `now_ms`'s hour), oldest
/// first, at most `limit` of them, leaving for later those redone less
/// than a gap ago (see [`RecentRedos`]), then makes at most `limit` due
/// daily rollups ([`make_due_days`]), each at most once per gap too.
/// With what is left of `limit`, redoes hours indexed before the index
/// kept values, so that they get them. Returns how many hours were
/// redone, how many of those looked at were left for later, and how many
/// days were made.
///
/// # Errors
/// The database error of the first hour that failed.
pub async fn redo_due(
    store: &Store,
    now_ms: i64,
    limit: u64,
    recent: &mut RecentRedos,
) -> Result<(usize, usize, usize), StoreError> {
    let gap = recent.gap_ms;
    recent.at.retain(|_, t| now_ms - *t < gap);
    recent.days.retain(|_, t| now_ms - *t < gap);
    let due = store.due_rollups(now_ms.div_euclid(HOUR_MS), limit).await?;
    let mut done = 0;
    for d in &due {
        if recent.at.contains_key(&(d.project, d.hour)) {
            continue;
        }
        redo_hour(store, d.project, d.hour, Some(d.version)).await?;
        if gap > 0 {
            recent.at.insert((d.project, d.hour), now_ms);
        }
        done += 1;
    }
    let later = due.len() - done;
    // Then, with what is left of `limit`, hours indexed before the index
    // kept values (their marks, if any, stay: a version never used).
    if !recent.backfilled && (done as u64) < limit {
        let old = store.hours_without_values(limit - done as u64).await?;
        recent.backfilled = (old.len() as u64) < limit - done as u64;
        for (project, hour) in old {
            redo_hour(store, project, hour, Some(i64::MIN)).await?;
            done += 1;
        }
    }
    let days = make_days(store, now_ms, limit, Some(recent)).await?;
    Ok((done, later, days))
}

/// Rebuilds the rollups of `project` (every project when `None`) for the
/// hours in `[from_ms, to_ms)` that have events or rollups; idempotent.
/// Returns the number of hours rebuilt.
///
/// # Errors
/// The database error.
pub async fn rebuild(
    store: &Store,
    project: Option<Uuid>,
    from_ms: i64,
    to_ms: i64,
) -> Result<usize, StoreError> {
    let hours = store
        .hours_to_rebuild(
            project,
            from_ms.div_euclid(HOUR_MS),
            to_ms.div_euclid(HOUR_MS) + 1,
        )
        .await?;
    for (p, h) in &hours {
        redo_hour(store, *p, *h, None).await?;
    }
    // Then the daily rollups of the days that are over.
    while make_due_days(store, crate::event::now_ms(), 1000).await? == 1000 {}
    Ok(hours.len())
}
