//! Redoing the rollup of one hour from its raw events and sessions, with
//! the hour's row of the person index.

use std::collections::HashMap;

use tracing::debug;
use uuid::Uuid;

use super::HOUR_MS;
use super::aggregate::{Scan, aggregate, rollup_groups};
use super::persons::HourIndex;
use super::sketch::EXACT_LIMIT;
use crate::store::people::EventColumns;
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
    let blobs = (!events.is_empty()).then(|| (index.events_blob(), index.people_blob()));
    store
        .write_rollup(project, hour, version, &rows, blobs.as_ref())
        .await?;
    debug!(%project, hour, cells = rows.len(), events = events.len(), "rollup redone");
    Ok(rows.len())
}

/// When the job last redid each hour, so that an hour that keeps
/// receiving late events is redone at most once per gap.
#[derive(Debug, Default)]
pub struct RecentRedos {
    gap_ms: i64,
    at: HashMap<(Uuid, i64), i64>,
}

impl RecentRedos {
    /// Hours are redone at most once per `gap_ms` (0: always).
    #[must_use]
    pub fn new(gap_ms: i64) -> Self {
        Self {
            gap_ms,
            at: HashMap::new(),
        }
    }
}

/// Redoes the marked hours that are over (before `now_ms`'s hour), oldest
/// first, at most `limit` of them, leaving for later those redone less
/// than a gap ago (see [`RecentRedos`]). Returns how many of the `limit`
/// looked at were redone and how many were left for later.
///
/// # Errors
/// The database error of the first hour that failed.
pub async fn redo_due(
    store: &Store,
    now_ms: i64,
    limit: u64,
    recent: &mut RecentRedos,
) -> Result<(usize, usize), StoreError> {
    let gap = recent.gap_ms;
    recent.at.retain(|_, t| now_ms - *t < gap);
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
    Ok((done, due.len() - done))
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
    Ok(hours.len())
}
