//! The person index, which answers funnels and retention without reading
//! event rows.
//!
//! For each project and rolled-up hour the rollup job also writes one
//! `person_hours` row, in the rollup's transaction:
//! - `events`: the hour's events as (person, ms into the hour, event name),
//!   sorted by person, time and arrival;
//! - `people`: the people active in the hour, in all and per event name.
//!
//! People are dense per-project numbers (table `persons`, assigned by the
//! job), so a query keeps its per-person state in plain arrays. Both blobs
//! are varint-encoded (person numbers as deltas), about 4 to 6 bytes per
//! event and 2 per active person and name.
//!
//! A query reads an hour from the index when it lies wholly in the range,
//! is over, has no mark (nothing changed since its rollup) and has a row;
//! every other piece (the current hour, marked hours, the partial hours at
//! the edges, hours rolled up before the index existed) is read from raw
//! events, which get their person numbers from the same table (people the
//! job has not numbered yet get numbers for the query alone). The answers
//! are the same either way; tests compare them.

use std::collections::HashMap;

use uuid::Uuid;

use super::HOUR_MS;
use super::dims::EventFacts;
use super::funnel::{Funnel, FunnelAnswer, Progress, StepCount, count};
use super::query::Reads;
use super::retention::{Cohort, Retention};
use crate::store::people::{EventColumns, PersonColumn};
use crate::store::{Store, StoreError};

/// Raw pieces are read a day at a time.
const READ_MS: i64 = 24 * HOUR_MS;
/// Retention keeps one bit per person and period; beyond this many bytes
/// it reads raw events instead.
const MAX_ACTIVITY_BYTES: usize = 256 << 20;

/// Appends `v` as a varint (7 bits a byte, low first).
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap_or(0));
}

/// Reads varints and byte strings from a blob.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }

    pub(crate) fn get(&mut self) -> Option<u64> {
        // Most values (person deltas, name numbers) fit in one byte.
        let first = *self.b.get(self.at)?;
        if first < 0x80 {
            self.at += 1;
            return Some(u64::from(first));
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn get32(&mut self) -> Option<u32> {
        u32::try_from(self.get()?).ok()
    }

    /// Whether every byte was read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.b.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn names(&mut self) -> Option<Vec<&'a str>> {
        let n = self.get32()? as usize;
        let mut names = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let len = self.get32()? as usize;
            names.push(std::str::from_utf8(self.bytes(len)?).ok()?);
        }
        Some(names)
    }
}

fn put_names(out: &mut Vec<u8>, names: &[String]) {
    put(out, names.len() as u64);
    for n in names {
        put(out, n.len() as u64);
        out.extend_from_slice(n.as_bytes());
    }
}

/// One hour of one project: its event names and its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourIndex {
    names: Vec<String>,
    /// (person, ms into the hour, name index), sorted by person, time and
    /// arrival.
    entries: Vec<(u32, u32, u32)>,
}

impl HourIndex {
    /// The index of the events of the hour starting at `start` (ms), their
    /// people numbered by `ids`; events without a person, or whose person
    /// has no number, are left out.
    #[must_use]
    pub fn build(events: &[EventFacts], ids: &HashMap<u64, u32>, start: i64) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut name_ids: HashMap<&str, u32> = HashMap::new();
        let mut rows: Vec<(u32, i64, i64, u32)> = Vec::with_capacity(events.len());
        for e in events {
            let Some(&person) = e.visitor.and_then(|v| ids.get(&v)) else {
                continue;
            };
            let name = *name_ids.entry(e.name.as_str()).or_insert_with(|| {
                names.push(e.name.clone());
                u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
            });
            rows.push((person, e.timestamp, e.seq, name));
        }
        rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
        let entries = rows
            .into_iter()
            .map(|(p, t, _, n)| (p, u32::try_from(t - start).unwrap_or(0), n))
            .collect();
        Self { names, entries }
    }

    /// The `events` blob: names, then (person delta, ms, name) per event.
    #[must_use]
    pub fn events_blob(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 5);
        put_names(&mut out, &self.names);
        put(&mut out, self.entries.len() as u64);
        let mut last = 0u32;
        for &(p, ms, n) in &self.entries {
            put(&mut out, u64::from(p - last));
            put(&mut out, u64::from(ms));
            put(&mut out, u64::from(n));
            last = p;
        }
        out
    }

    /// The `people` blob: names, then for all events and for each name in
    /// turn a section (its length in bytes, a count, then the people in
    /// ascending order as deltas).
    #[must_use]
    pub fn people_blob(&self) -> Vec<u8> {
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); self.names.len() + 1];
        for &(p, _, n) in &self.entries {
            for list in [0, n as usize + 1] {
                if lists[list].last() != Some(&p) {
                    lists[list].push(p);
                }
            }
        }
        let mut out = Vec::new();
        put_names(&mut out, &self.names);
        let mut section = Vec::new();
        for list in &lists {
            section.clear();
            put(&mut section, list.len() as u64);
            let mut last = 0u32;
            for &p in list {
                put(&mut section, u64::from(p - last));
                last = p;
            }
            put(&mut out, section.len() as u64);
            out.extend_from_slice(&section);
        }
        out
    }
}

/// Calls `visit(person, ms into the hour, ordinal)` for each event of an
/// `events` blob whose name has a nonzero `mask_of(name)`, with the mask.
fn each_event(
    blob: &[u8],
    mask_of: impl Fn(&str) -> u32,
    mut visit: impl FnMut(u32, i64, i64, u32),
) -> Option<()> {
    let mut c = Cursor::new(blob);
    let masks: Vec<u32> = c.names()?.into_iter().map(mask_of).collect();
    let n = c.get()?;
    let mut person = 0u32;
    for i in 0..n {
        person = person.checked_add(c.get32()?)?;
        let ms = c.get()?;
        let mask = *masks.get(c.get()? as usize)?;
        if mask != 0 {
            visit(
                person,
                i64::try_from(ms).ok()?,
                i64::try_from(i).ok()?,
                mask,
            );
        }
    }
    Some(())
}

/// Calls `visit` for each person of a `people` blob active in all (`name`
/// `None`) or with events named `name`.
fn each_person(blob: &[u8], name: Option<&str>, mut visit: impl FnMut(u32)) -> Option<()> {
    let mut c = Cursor::new(blob);
    let names = c.names()?;
    let section = match name {
        None => 0,
        Some(n) => match names.iter().position(|x| *x == n) {
            Some(i) => i + 1,
            None => return Some(()),
        },
    };
    for _ in 0..section {
        let len = c.get()? as usize;
        c.bytes(len)?;
    }
    c.get()?;
    let count = c.get()?;
    let mut person = 0u32;
    for _ in 0..count {
        person = person.checked_add(c.get32()?)?;
        visit(person);
    }
    Some(())
}

fn unreadable(project: Uuid, hour: i64) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(format!(
        "the person index of project {project}, hour {hour}, cannot be read"
    )))
}

/// A piece of a range, in time order: hours `[a, b)` from the index, or
/// `[from, to)` ms from raw events.
enum Piece {
    Index(i64, i64),
    Raw(i64, i64),
}

/// Cuts `[from, to)` into pieces: the hours wholly inside it that are
/// over (before `now`'s hour), unmarked, indexed and `usable` from the
/// index, the rest raw.
async fn plan(
    store: &Store,
    project: Uuid,
    (from, to): (i64, i64),
    now: i64,
    usable: impl Fn(i64) -> bool,
) -> Result<Vec<Piece>, StoreError> {
    let first = from.div_euclid(HOUR_MS) + i64::from(from.rem_euclid(HOUR_MS) != 0);
    let end = to.div_euclid(HOUR_MS).min(now.div_euclid(HOUR_MS));
    let mut pieces = Vec::new();
    let mut cursor = from;
    if first < end {
        let dirty = store.dirty_hours(project, first, end).await?;
        for h in store.indexed_hours(project, first, end).await? {
            if dirty.contains(&h) || !usable(h) {
                continue;
            }
            if h * HOUR_MS > cursor {
                pieces.push(Piece::Raw(cursor, h * HOUR_MS));
            }
            match pieces.last_mut() {
                Some(Piece::Index(_, b)) if *b == h => *b = h + 1,
                _ => pieces.push(Piece::Index(h, h + 1)),
            }
            cursor = (h + 1) * HOUR_MS;
        }
    }
    if cursor < to {
        pieces.push(Piece::Raw(cursor, to));
    }
    Ok(pieces)
}

/// Person numbers for raw events: the job's, and for people it has not
/// numbered yet, numbers after its last for this query alone.
struct Numbers {
    project: Uuid,
    known: HashMap<u64, u32>,
    next: u32,
}

impl Numbers {
    async fn new(store: &Store, project: Uuid) -> Result<Self, StoreError> {
        Ok(Self {
            project,
            known: HashMap::new(),
            next: store.max_person_id(project).await? + 1,
        })
    }

    /// Numbers every person of `events`.
    async fn number(&mut self, store: &Store, events: &[EventFacts]) -> Result<(), StoreError> {
        let mut unknown: Vec<u64> = events
            .iter()
            .filter_map(|e| e.visitor)
            .filter(|v| !self.known.contains_key(v))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let found = store.person_ids(self.project, &unknown, false).await?;
        for v in unknown {
            let id = match found.get(&v) {
                Some(id) => *id,
                None => {
                    self.next += 1;
                    self.next - 1
                }
            };
            self.known.insert(v, id);
        }
        Ok(())
    }

    fn of(&self, visitor: Option<u64>) -> Option<u32> {
        self.known.get(&visitor?).copied()
    }
}

/// Whether the index can answer `f`: no filters and no breakdown.
#[must_use]
pub fn answers_funnel(f: &Funnel) -> bool {
    f.query.filters.is_empty()
        && f.breakdown.is_none()
        && f.steps.iter().all(|s| s.filters.is_empty())
}

/// A set of person numbers, one bit each.
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, p: u32) {
        let word = p as usize / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (p % 64);
    }

    fn get(&self, p: u32) -> bool {
        self.0
            .get(p as usize / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// How many are in the set and not in `other`.
    fn count_without(&self, other: &Self) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// A step event of a raw piece, numbered: (person, time, arrival, mask).
type RawHit = (u32, i64, i64, u32);

/// Runs a funnel that [`answers_funnel`] over `[from, to)` (the data
/// range).
///
/// Most people never do a later step's event (the first step is often a
/// page view), and their answer is known without following them: they
/// reached step 1. So a first pass reads who did the first step's event
/// and who did any later step's, from the index's per-name people lists
/// (and the raw pieces' events, kept for the second pass); the second
/// streams in time order through a [`Progress`] only the step events of
/// people who did both, and the rest count at step 1.
///
/// # Errors
/// The database error, or an unreadable blob.
pub async fn funnel(
    store: &Store,
    f: &Funnel,
    (from, to): (i64, i64),
    now: i64,
) -> Result<FunnelAnswer, StoreError> {
    let project = f.query.project;
    let n = f.steps.len();
    // No step filters here (see `answers_funnel`).
    let mask_of = |name: &str| f.mask(name, |_| true);
    let first_name = f.steps[0].event.as_str();
    let mut later_names: Vec<&str> = f.steps[1..].iter().map(|s| s.event.as_str()).collect();
    later_names.sort_unstable();
    later_names.dedup();
    let names = f.step_names();
    let cols = EventColumns::reading(Some(&names), []);
    let mut numbers = Numbers::new(store, project).await?;
    let pieces = plan(store, project, (from, to), now, |_| true).await?;

    // First pass: who did the first step (`first`), who a later one
    // (`later`); the raw pieces' step events, numbered, in time order.
    let (mut first, mut later) = (Bits::default(), Bits::default());
    let mut raw: Vec<Vec<RawHit>> = Vec::new();
    for piece in &pieces {
        match *piece {
            Piece::Index(a, b) => {
                store
                    .person_hours(project, (a, b), PersonColumn::People, |h, blob| {
                        let bad = || unreadable(project, h);
                        each_person(blob, Some(first_name), |p| first.set(p)).ok_or_else(bad)?;
                        for name in &later_names {
                            each_person(blob, Some(name), |p| later.set(p)).ok_or_else(bad)?;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Piece::Raw(a, b) => {
                let mut hits = Vec::new();
                let mut reads = Reads::new(project, (a, b), READ_MS, false);
                while let Some((a, b)) = reads.next(store).await? {
                    let events = store.event_facts(project, a, b, &cols).await?;
                    numbers.number(store, &events).await?;
                    hits.extend(events.iter().filter_map(|e| {
                        let mask = mask_of(&e.name);
                        let p = numbers.of(e.visitor).filter(|_| mask != 0)?;
                        Some((p, e.timestamp, e.seq, mask))
                    }));
                }
                hits.sort_unstable_by_key(|h| (h.1, h.2));
                for &(p, _, _, mask) in &hits {
                    if mask & 1 != 0 {
                        first.set(p);
                    }
                    if mask & !1 != 0 {
                        later.set(p);
                    }
                }
                raw.push(hits);
            }
        }
    }

    // Second pass: the people who did both, followed step by step. Each
    // one's progress is its slot in `arena` (0: none yet).
    let mut slot_of: Vec<u32> = vec![0; numbers.next as usize];
    let mut arena = Progress::arena(n);
    let mut advance = |person: u32, t: i64, tie: i64, mask: u32| {
        if !later.get(person) {
            return; // counted from `first` below
        }
        let p = person as usize;
        if p >= slot_of.len() {
            slot_of.resize(p + 1, 0);
        }
        if slot_of[p] == 0 {
            if mask & 1 == 0 {
                return; // nothing happens before a first step
            }
            slot_of[p] = arena.add();
        }
        arena.advance(slot_of[p], f.window_ms, (t, tie), mask, 0);
    };
    let mut raw = raw.into_iter();
    for piece in pieces {
        match piece {
            Piece::Index(a, b) => {
                store
                    .person_hours(project, (a, b), PersonColumn::Events, |h, blob| {
                        let start = h * HOUR_MS;
                        each_event(blob, mask_of, |p, ms, ord, mask| {
                            advance(p, start + ms, ord, mask);
                        })
                        .ok_or_else(|| unreadable(project, h))
                    })
                    .await?;
            }
            Piece::Raw(..) => {
                for (p, t, seq, mask) in raw.next().unwrap_or_default() {
                    advance(p, t, seq, mask);
                }
            }
        }
    }
    let mut steps = vec![StepCount::default(); n];
    for slot in 1..u32::try_from(arena.len()).unwrap_or(u32::MAX) {
        if let Some((last, times, _)) = arena.furthest(slot) {
            count(&mut steps, last, times);
        }
    }
    // Who did the first step and no later one reached step 1 only.
    steps[0].people += first.count_without(&later);
    Ok(FunnelAnswer {
        steps,
        groups: Vec::new(),
    })
}

/// Answers `r` (over `[from, to)`, the data range; cohorts starting at
/// `starts`) from the index, when it has no filters and the person and
/// activity arrays fit; `None` otherwise.
///
/// An hour from the index counts as a whole: its people were first seen
/// or active at its start. That is exact because the only hours read
/// from the index are those before the range and those inside it that
/// lie in one period (in a zone at :30 or :45 from UTC, none do, and the
/// answer comes from raw events).
///
/// # Errors
/// The database error, or an unreadable blob.
pub async fn retention(
    store: &Store,
    r: &Retention,
    starts: &[i64],
    (from, to): (i64, i64),
    now: i64,
    cohorts: &mut [Cohort],
) -> Result<bool, StoreError> {
    let project = r.query.project;
    if !r.query.filters.is_empty() {
        return Ok(false);
    }
    let people = store.max_person_id(project).await? as usize + 1;
    if starts.len().saturating_mul(people / 8 + 8) > MAX_ACTIVITY_BYTES {
        return Ok(false);
    }
    let Some(earliest) = store.first_event_at(project).await? else {
        return Ok(true);
    };
    // The period of `t` in `[from, to)`: the last start at or before it
    // (the periods are consecutive), found without a time-zone
    // conversion per person.
    let index = |t: i64| starts.partition_point(|&s| s <= t).checked_sub(1);
    let usable = |h: i64| {
        let (a, b) = (h * HOUR_MS, (h + 1) * HOUR_MS);
        b <= from || (a >= from && r.period.bucket(r.tz, a) == r.period.bucket(r.tz, b - 1))
    };
    // First-seen time per person; activity bits per period.
    let mut first: Vec<i64> = vec![i64::MAX; people];
    let mut active: Vec<Bits> = vec![Bits::default(); starts.len()];
    let seen = |first: &mut Vec<i64>, p: u32, t: i64| {
        let p = p as usize;
        if p >= first.len() {
            first.resize(p + 1, i64::MAX);
        }
        first[p] = first[p].min(t);
    };
    // The period `t` counts in, when it is in the range.
    let period_of = |t: i64| if t < from || t >= to { None } else { index(t) };
    let names: Option<Vec<String>> = match (&r.cohort_event, &r.return_event) {
        (Some(c), Some(e)) => Some(vec![c.clone(), e.clone()]),
        _ => None,
    };
    let cols = EventColumns::reading(names.as_deref(), []);
    let mut numbers = Numbers::new(store, project).await?;
    let pieces = plan(store, project, (earliest.min(from), to), now, usable).await?;
    for piece in pieces {
        match piece {
            Piece::Index(a, b) => {
                store
                    .person_hours(project, (a, b), PersonColumn::People, |h, blob| {
                        let t = h * HOUR_MS;
                        each_person(blob, r.cohort_event.as_deref(), |p| {
                            seen(&mut first, p, t);
                        })
                        .ok_or_else(|| unreadable(project, h))?;
                        if let Some(i) = period_of(t) {
                            each_person(blob, r.return_event.as_deref(), |p| active[i].set(p))
                                .ok_or_else(|| unreadable(project, h))?;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Piece::Raw(a, b) => {
                let mut reads = Reads::new(project, (a, b), READ_MS, false);
                while let Some((a, b)) = reads.next(store).await? {
                    let events = store.event_facts(project, a, b, &cols).await?;
                    numbers.number(store, &events).await?;
                    for e in &events {
                        let Some(p) = numbers.of(e.visitor) else {
                            continue;
                        };
                        if r.cohort_event.as_ref().is_none_or(|n| *n == e.name) {
                            seen(&mut first, p, e.timestamp);
                        }
                        if r.return_event.as_ref().is_none_or(|n| *n == e.name)
                            && let Some(i) = period_of(e.timestamp)
                        {
                            active[i].set(p);
                        }
                    }
                }
            }
        }
    }
    for (p, &t) in first.iter().enumerate() {
        if t < from || t >= to {
            continue;
        }
        let Some(c) = index(t) else { continue };
        let cohort = &mut cohorts[c];
        cohort.people += 1;
        let p = u32::try_from(p).unwrap_or(u32::MAX);
        for (k, n) in cohort.active.iter_mut().enumerate() {
            if active[c + k].get(p) {
                *n += 1;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn event(seq: i64, name: &str, t: i64, visitor: u64) -> EventFacts {
        EventFacts {
            seq,
            name: name.into(),
            timestamp: t,
            visitor: Some(visitor),
            session_id: None,
            url: None,
            enrichment: Map::new(),
            properties: None,
        }
    }

    #[test]
    fn blobs_round_trip() {
        let start = 10 * HOUR_MS;
        let events = [
            event(1, "view", start + 5, 70),
            event(2, "buy", start + 5, 70),
            event(3, "view", start + 1, 90),
            event(4, "view", start + 3_599_999, 70),
            event(5, "view", start + 7, 80), // no number: left out
        ];
        let ids = HashMap::from([(70, 3), (90, 1_000_000)]);
        let hour = HourIndex::build(&events, &ids, start);
        let mut seen = Vec::new();
        each_event(
            &hour.events_blob(),
            |n| u32::from(n == "view") | u32::from(n == "buy") << 1,
            |p, ms, ord, mask| {
                seen.push((p, ms, ord, mask));
            },
        )
        .unwrap();
        // By person, then time, then arrival.
        assert_eq!(
            seen,
            [
                (3, 5, 0, 1),
                (3, 5, 1, 2),
                (3, 3_599_999, 2, 1),
                (1_000_000, 1, 3, 1)
            ]
        );
        let people = hour.people_blob();
        for (name, want) in [
            (None, vec![3, 1_000_000]),
            (Some("view"), vec![3, 1_000_000]),
            (Some("buy"), vec![3]),
            (Some("none"), vec![]),
        ] {
            let mut got = Vec::new();
            each_person(&people, name, |p| got.push(p)).unwrap();
            assert_eq!(got, want, "{name:?}");
        }
        // A cut blob is an error, not a panic.
        let blob = hour.events_blob();
        assert!(each_event(&blob[..blob.len() - 1], |_| 1, |_, _, _, _| {}).is_none());
        assert!(each_person(&people[..people.len() - 1], Some("buy"), |_| {}).is_none());
    }
}
