//! The person index, which answers funnels and retention without reading
//! event rows.
//!
//! For each project and rolled-up hour the rollup job also writes one
//! `person_hours` row, in the rollup's transaction:
//! - `events`: the hour's events as (person, ms into the hour, event name),
//!   sorted by person, time and arrival: each person's run (number as a
//!   delta, length), then every event's ms (4 bytes) and name (1, 2 or 4
//!   bytes), so that reading an event is two loads and a person who does
//!   not matter is skipped whole (see `EventsBlob`);
//! - `people`: the people active in the hour, in all and per event name.
//!
//! When a UTC day is over and its hours rolled up, the job merges its
//! hours' rows into one `person_days` row of the same form (ms into the
//! day), with the day's daily rollup: a month is then 30 rows instead of
//! 720, and a funnel follows each range of people through 30 blobs.
//!
//! People are dense per-project numbers (table `persons`, assigned by the
//! job), so a query keeps its per-person state in plain arrays. About 5 to
//! 6 bytes per event, and 2 per active person and name.
//!
//! A query reads a day from the index when it lies wholly in the range,
//! has a row, and neither it nor one of its hours is marked (nothing
//! changed since the row was made); else each hour that lies wholly in
//! the range, is over, has no mark (nothing changed since its rollup) and
//! has a row; every other piece (the current hour, marked hours, the
//! partial hours at the edges, hours rolled up before the index existed)
//! is read from raw events, which get their person numbers from the same
//! table (people the job has not numbered yet get numbers for the query
//! alone). The answers are the same either way; tests compare them.

use std::collections::HashMap;

use uuid::Uuid;

use super::HOUR_MS;
use super::aggregate::Filter;
use super::dims::Dimension;
use super::dims::{Dim, EventFacts};
use super::funnel::{Funnel, FunnelAnswer, Progress, StepCount, count};
use super::query::Reads;
use super::retention::{Cohort, Retention};
use crate::store::people::{EventColumns, PersonColumn};
use crate::store::rollups::{HOURS_PER_DAY, IndexRow, Span};
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
#[derive(Clone)]
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

/// The event dimensions the index keeps a value of per event (the rolled
/// ones that are not the name and not the session's), in this order.
pub const INDEXED_DIMS: [Dim; 12] = [
    Dim::Page,
    Dim::ReferrerSource,
    Dim::ReferrerHost,
    Dim::UtmSource,
    Dim::UtmMedium,
    Dim::UtmCampaign,
    Dim::Country,
    Dim::Region,
    Dim::City,
    Dim::Browser,
    Dim::Os,
    Dim::Device,
];

/// One dimension's values of an index's events: the distinct values, and
/// each entry's value index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ValueColumn {
    values: Vec<Option<String>>,
    ids: Vec<u32>,
}

impl ValueColumn {
    /// The `values` blob of a dimension (read by `ValuesBlob`): the
    /// number of values, each as its length + 1 and bytes (0: none), the
    /// number of events, then every event's value index (1, 2 or 4 bytes,
    /// by the number of values), in the order of the `events` blob.
    fn blob(&self) -> Vec<u8> {
        let width = name_width(self.values.len());
        let mut out = Vec::with_capacity(16 + self.ids.len() * width);
        put(&mut out, self.values.len() as u64);
        for v in &self.values {
            match v {
                None => put(&mut out, 0),
                Some(v) => {
                    put(&mut out, v.len() as u64 + 1);
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        put(&mut out, self.ids.len() as u64);
        for &id in &self.ids {
            out.extend_from_slice(&id.to_le_bytes()[..width]);
        }
        out
    }
}

/// Numbers distinct values (of a dimension, or of a breakdown) as they
/// come, from 0.
#[derive(Default)]
pub(crate) struct Interner<'a> {
    /// The values, by number.
    pub(crate) values: Vec<Option<String>>,
    ids: HashMap<Option<std::borrow::Cow<'a, str>>, u32>,
}

impl<'a> Interner<'a> {
    /// The number of `v`.
    pub(crate) fn id(&mut self, v: Option<std::borrow::Cow<'a, str>>) -> u32 {
        if let Some(&id) = self.ids.get(&v) {
            return id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(v.as_deref().map(str::to_owned));
        self.ids.insert(v, id);
        id
    }
}

/// One hour of one project: its event names and its events, with their
/// values of the [`INDEXED_DIMS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourIndex {
    names: Vec<String>,
    /// (person, ms into the hour, name index), sorted by person, time and
    /// arrival.
    entries: Vec<(u32, u32, u32)>,
    /// Per dimension of [`INDEXED_DIMS`], the entries' values, in the
    /// entries' order; empty when the index has none (made from hours
    /// indexed before values were kept).
    values: Vec<ValueColumn>,
}

impl HourIndex {
    /// The index of the events of the hour starting at `start` (ms), their
    /// people numbered by `ids`; events without a person, or whose person
    /// has no number, are left out.
    #[must_use]
    pub fn build(events: &[EventFacts], ids: &HashMap<u64, u32>, start: i64) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut name_ids: HashMap<&str, u32> = HashMap::new();
        let mut rows: Vec<(u32, i64, i64, u32, usize)> = Vec::with_capacity(events.len());
        let mut interners: Vec<Interner> =
            INDEXED_DIMS.iter().map(|_| Interner::default()).collect();
        // Per kept event, its value index of each dimension in turn.
        let mut value_ids: Vec<u32> = Vec::with_capacity(events.len() * INDEXED_DIMS.len());
        for e in events {
            let Some(&person) = e.visitor.and_then(|v| ids.get(&v)) else {
                continue;
            };
            let name = *name_ids.entry(e.name.as_str()).or_insert_with(|| {
                names.push(e.name.clone());
                u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
            });
            rows.push((person, e.timestamp, e.seq, name, rows.len()));
            for (d, interner) in INDEXED_DIMS.iter().zip(&mut interners) {
                value_ids.push(interner.id(e.rolled(*d)));
            }
        }
        rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
        let values = interners
            .into_iter()
            .enumerate()
            .map(|(d, interner)| ValueColumn {
                values: interner.values,
                ids: rows
                    .iter()
                    .map(|r| value_ids[r.4 * INDEXED_DIMS.len() + d])
                    .collect(),
            })
            .collect();
        let entries = rows
            .into_iter()
            .map(|(p, t, _, n, _)| (p, u32::try_from(t - start).unwrap_or(0), n))
            .collect();
        Self {
            names,
            entries,
            values,
        }
    }

    /// The index of a span (a day) made of hours: each hour's start in ms
    /// into the span, its `events` blob and its `values` blobs (one per
    /// dimension of [`INDEXED_DIMS`], in order, or none), in time order.
    /// The same events, people, values and order as [`HourIndex::build`]
    /// over the span's events gives (names and values may be numbered in
    /// another order); without values when an hour has none. `None` when
    /// a blob cannot be read.
    #[must_use]
    pub fn merge<'b>(
        hours: impl IntoIterator<Item = (u32, &'b [u8], &'b [Vec<u8>])>,
    ) -> Option<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut name_ids: HashMap<&'b str, u32> = HashMap::new();
        // (person, ms, name, position in `values`' columns).
        let mut entries: Vec<(u32, u32, u32, u32)> = Vec::new();
        let mut interners: Vec<Interner> =
            INDEXED_DIMS.iter().map(|_| Interner::default()).collect();
        let mut columns: Vec<Vec<u32>> = vec![Vec::new(); INDEXED_DIMS.len()];
        let mut valued = true;
        for (offset, blob, values) in hours {
            let hour = EventsBlob::parse(blob)?;
            let ids: Vec<u32> = hour
                .names
                .iter()
                .map(|&n| {
                    *name_ids.entry(n).or_insert_with(|| {
                        names.push(n.to_owned());
                        u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
                    })
                })
                .collect();
            valued &= values.len() == INDEXED_DIMS.len();
            if valued {
                for ((blob, interner), column) in
                    values.iter().zip(&mut interners).zip(&mut columns)
                {
                    let v = ValuesBlob::parse(blob)?;
                    if v.len != hour.ms.len() / 4 {
                        return None;
                    }
                    let map: Vec<u32> = v
                        .values
                        .iter()
                        .map(|x| interner.id(x.map(std::borrow::Cow::Borrowed)))
                        .collect();
                    for i in 0..v.len {
                        column.push(*map.get(v.id(i))?);
                    }
                }
            }
            let base = u32::try_from(entries.len()).ok()?;
            entries.reserve(hour.ms.len() / 4);
            hour.each_run(|p, events| {
                for i in events {
                    let name = *ids.get(hour.name_id(i)?)?;
                    let at = base.checked_add(u32::try_from(i).ok()?)?;
                    entries.push((p, offset.checked_add(hour.ms(i))?, name, at));
                }
                Some(())
            })?;
        }
        // Stable: a person's events at one ms of one hour keep their
        // arrival order, and two hours never share a ms.
        entries.sort_by_key(|&(p, ms, _, _)| (p, ms));
        let values = if valued {
            interners
                .into_iter()
                .zip(columns)
                .map(|(interner, column)| ValueColumn {
                    values: interner.values,
                    ids: entries.iter().map(|e| column[e.3 as usize]).collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(Self {
            names,
            entries: entries
                .into_iter()
                .map(|(p, ms, n, _)| (p, ms, n))
                .collect(),
            values,
        })
    }

    /// The index of an hour from its `events` blob, keeping only the events
    /// at `[lo, hi)` ms into the hour (without values); `None` when the
    /// blob cannot be read.
    #[must_use]
    pub fn cut(blob: &[u8], (lo, hi): (u32, u32)) -> Option<Self> {
        let mut hour = Self::merge([(0, blob, &[][..])])?;
        hour.entries.retain(|&(_, ms, _)| (lo..hi).contains(&ms));
        Some(hour)
    }

    /// The row the index is stored as: its `events`, `people` and
    /// `values` blobs.
    #[must_use]
    pub fn row(&self) -> IndexRow {
        IndexRow {
            events: self.events_blob(),
            people: self.people_blob(),
            values: self.values_blobs(),
        }
    }

    /// The `values` blobs, one per dimension of [`INDEXED_DIMS`] with its
    /// code (see `ValueColumn::blob`); none when the index has no values.
    #[must_use]
    pub fn values_blobs(&self) -> Vec<(i16, Vec<u8>)> {
        INDEXED_DIMS
            .iter()
            .zip(&self.values)
            .map(|(d, c)| (d.code(), c.blob()))
            .collect()
    }

    /// The `events` blob (read by `EventsBlob`): names; the number of
    /// events and of runs; per run (one person's events) the person as a
    /// delta and the run's length; then every event's ms into the hour
    /// (4 bytes, little-endian) and its name's index (1, 2 or 4 bytes, by
    /// the number of names).
    #[must_use]
    pub fn events_blob(&self) -> Vec<u8> {
        let mut runs: Vec<(u32, u64)> = Vec::new();
        for &(p, _, _) in &self.entries {
            match runs.last_mut() {
                Some((q, len)) if *q == p => *len += 1,
                _ => runs.push((p, 1)),
            }
        }
        let width = name_width(self.names.len());
        let mut out = Vec::with_capacity(16 + runs.len() * 3 + self.entries.len() * (4 + width));
        put_names(&mut out, &self.names);
        put(&mut out, self.entries.len() as u64);
        put(&mut out, runs.len() as u64);
        let mut last = 0u32;
        for (p, len) in runs {
            put(&mut out, u64::from(p - last));
            put(&mut out, len);
            last = p;
        }
        for &(_, ms, _) in &self.entries {
            out.extend_from_slice(&ms.to_le_bytes());
        }
        for &(_, _, n) in &self.entries {
            out.extend_from_slice(&n.to_le_bytes()[..width]);
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

/// Bytes per name index in an `events` blob with `names` names.
fn name_width(names: usize) -> usize {
    match names {
        0..=0x100 => 1,
        0x101..=0x1_0000 => 2,
        _ => 4,
    }
}

/// An `events` blob, checked (see [`HourIndex::events_blob`]).
#[derive(Clone)]
struct EventsBlob<'a> {
    names: Vec<&'a str>,
    /// The runs: (person delta, length) varints.
    runs: &'a [u8],
    run_count: usize,
    /// 4 bytes per event.
    ms: &'a [u8],
    /// `width` bytes per event.
    ids: &'a [u8],
    width: usize,
}

impl<'a> EventsBlob<'a> {
    /// The blob read, or `None` when it is not one (cut, padded, or runs
    /// that do not add up to its events, or a name index out of range,
    /// found when read).
    fn parse(blob: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(blob);
        let names = c.names()?;
        let n = usize::try_from(c.get()?).ok()?;
        let run_count = usize::try_from(c.get()?).ok()?;
        let start = c.at;
        let mut total = 0usize;
        for _ in 0..run_count {
            c.get32()?;
            total = total.checked_add(usize::try_from(c.get()?).ok()?)?;
        }
        let runs = &blob[start..c.at];
        let width = name_width(names.len());
        let ms = c.bytes(n.checked_mul(4)?)?;
        let ids = c.bytes(n.checked_mul(width)?)?;
        (total == n && c.at_end()).then_some(Self {
            names,
            runs,
            run_count,
            ms,
            ids,
            width,
        })
    }

    /// Each name's mask.
    fn masks(&self, mask_of: impl Fn(&str) -> u32) -> Vec<u32> {
        self.names.iter().map(|n| mask_of(n)).collect()
    }

    /// Calls `visit(person, events)` for each run: a person and the
    /// indexes of its events (in time, then arrival, order); `None` at
    /// the first `None` of `visit` (a name index out of range).
    fn each_run(
        &self,
        mut visit: impl FnMut(u32, std::ops::Range<usize>) -> Option<()>,
    ) -> Option<()> {
        let mut c = Cursor::new(self.runs);
        let (mut person, mut at) = (0u32, 0usize);
        for _ in 0..self.run_count {
            person = person.checked_add(c.get32()?)?;
            let len = usize::try_from(c.get()?).ok()?;
            visit(person, at..at + len)?;
            at += len;
        }
        Some(())
    }

    /// Event `i`'s ms into the hour.
    fn ms(&self, i: usize) -> u32 {
        let b = &self.ms[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Event `i`'s name index (not checked against the names).
    fn name_id(&self, i: usize) -> Option<usize> {
        let b = &self.ids[i * self.width..(i + 1) * self.width];
        Some(match *b {
            [x] => usize::from(x),
            [x, y] => usize::from(u16::from_le_bytes([x, y])),
            [x, y, z, w] => u32::from_le_bytes([x, y, z, w]) as usize,
            _ => return None,
        })
    }

    /// The mask (from `masks`, one per name) of event `i`'s name; `None`
    /// when its index is out of range.
    fn mask(&self, masks: &[u32], i: usize) -> Option<u32> {
        masks.get(self.name_id(i)?).copied()
    }
}

/// A `values` blob, checked (see `ValueColumn::blob`).
struct ValuesBlob<'a> {
    values: Vec<Option<&'a str>>,
    len: usize,
    ids: &'a [u8],
    width: usize,
}

impl<'a> ValuesBlob<'a> {
    fn parse(blob: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(blob);
        let n = usize::try_from(c.get()?).ok()?;
        let mut values = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            values.push(match usize::try_from(c.get()?).ok()? {
                0 => None,
                len => Some(std::str::from_utf8(c.bytes(len - 1)?).ok()?),
            });
        }
        let len = usize::try_from(c.get()?).ok()?;
        let width = name_width(n);
        let ids = c.bytes(len.checked_mul(width)?)?;
        c.at_end().then_some(Self {
            values,
            len,
            ids,
            width,
        })
    }

    /// Event `i`'s value index (not checked against the values).
    fn id(&self, i: usize) -> usize {
        read_index(&self.ids[i * self.width..(i + 1) * self.width])
    }
}

/// A little-endian index of 1, 2 or 4 bytes.
fn read_index(b: &[u8]) -> usize {
    match *b {
        [x] => usize::from(x),
        [x, y] => usize::from(u16::from_le_bytes([x, y])),
        [x, y, z, w] => u32::from_le_bytes([x, y, z, w]) as usize,
        _ => usize::MAX,
    }
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

/// A piece of a range, in time order: hours `[a, b)` from the index's
/// rows by hour or by day (then whole days); hour `h`'s row cut to the
/// events in `[from, to)` ms (an hour at an edge of the range); or
/// `[from, to)` ms from raw events.
enum Piece {
    Index(Span, i64, i64),
    Part(i64, i64, i64),
    Raw(i64, i64),
}

/// Cuts `[from, to)` into pieces: the days, else the hours, wholly inside
/// it that are over (before `now`'s hour), indexed, up to date and
/// `usable` (given their `[start, end)` in ms) from the index; with `cut`,
/// the hours at its edges that are over, indexed and up to date from
/// their rows cut to the range; the rest raw. With `dims` (codes), only
/// rows with the values of those dimensions are read. A day's row is up to date
/// when the day is not marked (its hours were not redone since the row
/// was made) and none of its hours is; an hour's when it is not marked.
async fn plan(
    store: &Store,
    project: Uuid,
    (from, to): (i64, i64),
    now: i64,
    usable: impl Fn(i64, i64) -> bool,
    cut: bool,
    dims: &[i16],
) -> Result<Vec<Piece>, StoreError> {
    // The hours that touch the range and are over.
    let first = from.div_euclid(HOUR_MS);
    let end = (to - 1)
        .div_euclid(HOUR_MS)
        .saturating_add(1)
        .min(now.div_euclid(HOUR_MS));
    // Each row read: (its start and end in ms, the piece).
    let mut rows: Vec<(i64, i64, Piece)> = Vec::new();
    if first < end {
        let dirty = store.dirty_hours(project, first, end).await?;
        let (d0, d1) = (
            first.div_euclid(HOURS_PER_DAY),
            end.div_euclid(HOURS_PER_DAY),
        );
        let mut days = std::collections::HashSet::new();
        if d0 < d1 {
            let due = store.days_due(project, d0, d1).await?;
            for h in store
                .indexed(project, Span::Day, (first, end), dims)
                .await?
            {
                let day = h.div_euclid(HOURS_PER_DAY);
                let (a, b) = (h * HOUR_MS, (h + HOURS_PER_DAY) * HOUR_MS);
                if a >= from
                    && b <= to
                    && !due.contains(&day)
                    && !(h..h + HOURS_PER_DAY).any(|x| dirty.contains(&x))
                    && usable(a, b)
                {
                    rows.push((a, b, Piece::Index(Span::Day, h, h + HOURS_PER_DAY)));
                    days.insert(day);
                }
            }
        }
        for h in store
            .indexed(project, Span::Hour, (first, end), dims)
            .await?
        {
            if days.contains(&h.div_euclid(HOURS_PER_DAY)) || dirty.contains(&h) {
                continue;
            }
            let (a, b) = ((h * HOUR_MS).max(from), ((h + 1) * HOUR_MS).min(to));
            if !usable(a, b) {
                continue;
            }
            if (a, b) == (h * HOUR_MS, (h + 1) * HOUR_MS) {
                rows.push((a, b, Piece::Index(Span::Hour, h, h + 1)));
            } else if cut {
                rows.push((a, b, Piece::Part(h, a, b)));
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
    }
    let mut pieces = Vec::new();
    let mut cursor = from;
    for (a, b, piece) in rows {
        if a > cursor {
            pieces.push(Piece::Raw(cursor, a));
        }
        match (pieces.last_mut(), piece) {
            (Some(Piece::Index(s, _, end)), Piece::Index(span, h, next))
                if *s == span && *end == h =>
            {
                *end = next;
            }
            (_, piece) => pieces.push(piece),
        }
        cursor = b;
    }
    if cursor < to {
        pieces.push(Piece::Raw(cursor, to));
    }
    Ok(pieces)
}

/// Calls `each` with the first hour and the `events` blob of every row of
/// the index that `piece` reads (an hour at an edge cut to the range);
/// nothing for a raw piece.
async fn events_rows(
    store: &Store,
    project: Uuid,
    piece: &Piece,
    mut each: impl FnMut(i64, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    match *piece {
        Piece::Index(span, a, b) => {
            store
                .person_index(project, span, (a, b), PersonColumn::Events, each)
                .await
        }
        Piece::Part(h, from, to) => {
            let range = (h, h + 1);
            store
                .person_index(
                    project,
                    Span::Hour,
                    range,
                    PersonColumn::Events,
                    |h, blob| {
                        // Both within the hour: they fit.
                        let start = h * HOUR_MS;
                        let lo = u32::try_from(from - start).unwrap_or(0);
                        let hi = u32::try_from(to - start).unwrap_or(u32::MAX);
                        let hour = HourIndex::cut(&blob, (lo, hi))
                            .ok_or_else(|| unreadable(project, h))?;
                        each(h, hour.events_blob())
                    },
                )
                .await
        }
        Piece::Raw(..) => Ok(()),
    }
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

/// What the first pass of [`funnel`] learns: who did the first step's
/// event, who the second's, and the highest person number seen (the job
/// may have numbered people since the query's `Numbers` were made).
#[derive(Debug, Clone, Default)]
struct Seen {
    first: Bits,
    second: Bits,
    last: u32,
}

impl Seen {
    /// Person `p` did the steps in `mask`. Only who did the second
    /// step's event can get past the first step.
    fn saw(&mut self, p: u32, mask: u32) {
        if mask & 1 != 0 {
            self.first.set(p);
        }
        if mask & 2 != 0 {
            self.second.set(p);
        }
        self.last = self.last.max(p);
    }

    /// Takes an hour of the index whose events' steps are `marks`; `None`
    /// when a name index is out of range.
    fn hour(&mut self, hour: &EventsBlob, marks: &Marks) -> Option<()> {
        // The kind of marks is matched once, not per event: this loop
        // takes every event of the range.
        match marks {
            Marks::ByName(masks) => hour.each_run(|p, events| {
                let mut m = 0;
                for i in events {
                    m |= hour.mask(masks, i)?;
                }
                self.saw(p, m);
                Some(())
            }),
            Marks::ByEvent { masks, .. } => hour.each_run(|p, events| {
                let m = masks.get(events)?.iter().fold(0, |m, x| m | x);
                self.saw(p, m);
                Some(())
            }),
        }
    }
}

/// The steps each event of an `events` blob is (bits) and, with a
/// breakdown, its value (a number of the query's [`Valued`]).
#[derive(Clone)]
enum Marks {
    /// By the event's name (one per name): no filters on other
    /// dimensions, no breakdown.
    ByName(Vec<u32>),
    /// Per event.
    ByEvent { masks: Vec<u32>, values: Vec<u32> },
}

/// Whether the index can answer `f`: its filters and breakdown are all on
/// the event name or an indexed dimension (not on properties).
#[must_use]
pub fn answers_funnel(f: &Funnel) -> bool {
    indexed_dims(f.dimensions().map(|(_, d)| d)).is_some()
}

/// A funnel with filters or a breakdown read from the index: the
/// dimensions it reads, and its breakdown values, numbered as met (0 is
/// the first met, so that a funnel without breakdown has one group).
struct Valued<'f> {
    f: &'f Funnel,
    /// Indexed dimensions read (by code).
    dims: Vec<Dim>,
    values: Interner<'static>,
}

impl<'f> Valued<'f> {
    /// `None` when `f` has no filters and no breakdown (its steps are
    /// then known from the event names alone); `f` is one the index
    /// answers (see [`answers_funnel`]).
    fn new(f: &'f Funnel) -> Option<Self> {
        f.dimensions().next()?;
        let dims = indexed_dims(f.dimensions().map(|(_, d)| d))?;
        Some(Self {
            f,
            dims,
            values: Interner::default(),
        })
    }

    fn codes(&self) -> Vec<i16> {
        self.dims.iter().map(|d| d.code()).collect()
    }

    /// The number of breakdown value `v`.
    fn id(&mut self, v: Option<&str>) -> u32 {
        self.values
            .id(v.map(|v| std::borrow::Cow::Owned(v.to_owned())))
    }

    /// The steps of `f` whose filters on `dim` (and the funnel's) all
    /// pass `value`, as bits.
    fn passing(f: &Funnel, dim: &Dimension, value: Option<&str>) -> u32 {
        let pass = |filters: &[Filter]| passes_on(filters, dim, value);
        if !pass(&f.query.filters) {
            return 0;
        }
        f.steps
            .iter()
            .enumerate()
            .take(super::funnel::MAX_STEPS)
            .filter(|(_, s)| pass(&s.filters))
            .fold(0, |m, (k, _)| m | 1 << k)
    }

    /// The marks of the events of `hour`, whose values of `self.dims` are
    /// `values` (blobs in that order); `None` when one cannot be read.
    fn marks(&mut self, hour: &EventsBlob, values: &[Vec<u8>]) -> Option<Marks> {
        let f = self.f;
        let event = Dimension::Rolled(Dim::Event);
        let by_name: Vec<u32> = hour
            .names
            .iter()
            .map(|name| f.mask(name, |_| true) & Self::passing(f, &event, Some(name)))
            .collect();
        let breakdown = f.breakdown.as_ref().and_then(Dimension::rolled);
        let bits = EventBits::new(hour, by_name, (&self.dims, values), |d, v| {
            Self::passing(f, &Dimension::Rolled(d), v)
        })?;
        let n = hour.ms.len() / 4;
        let masks = (0..n)
            .map(|i| bits.of(hour, i))
            .collect::<Option<Vec<u32>>>()?;
        let mut broken = Vec::new();
        if breakdown == Some(Dim::Event) {
            let ids: Vec<u32> = hour.names.iter().map(|v| self.id(Some(v))).collect();
            broken = (0..n)
                .map(|i| ids.get(hour.name_id(i)?).copied())
                .collect::<Option<_>>()?;
        }
        for (d, column, _) in &bits.columns {
            if breakdown == Some(*d) {
                let ids: Vec<u32> = column.values.iter().map(|v| self.id(*v)).collect();
                broken = (0..n)
                    .map(|i| ids.get(column.id(i)).copied())
                    .collect::<Option<_>>()?;
            }
        }
        Some(Marks::ByEvent {
            masks,
            values: broken,
        })
    }
}

/// The bits of the events of an `events` blob: each event's name's
/// (one per name of the blob) AND-ed, for each dimension read, with its
/// value's.
struct EventBits<'v> {
    by_name: Vec<u32>,
    /// Per dimension read: its values, and each value's bits.
    columns: Vec<(Dim, ValuesBlob<'v>, Vec<u32>)>,
}

impl<'v> EventBits<'v> {
    /// The bits of `hour`'s events by name `by_name`, and by value
    /// `by_value` of each dimension of `dims`, whose `values` blobs are
    /// `values` (in that order); `None` when one cannot be read.
    fn new(
        hour: &EventsBlob,
        by_name: Vec<u32>,
        (dims, values): (&[Dim], &'v [Vec<u8>]),
        by_value: impl Fn(Dim, Option<&str>) -> u32,
    ) -> Option<Self> {
        let n = hour.ms.len() / 4;
        if values.len() != dims.len() {
            return None;
        }
        let columns = dims
            .iter()
            .zip(values)
            .map(|(&d, blob)| {
                let column = ValuesBlob::parse(blob).filter(|c| c.len == n)?;
                let bits = column.values.iter().map(|v| by_value(d, *v)).collect();
                Some((d, column, bits))
            })
            .collect::<Option<_>>()?;
        Some(Self { by_name, columns })
    }

    /// Event `i`'s bits; `None` when an index is out of range.
    fn of(&self, hour: &EventsBlob, i: usize) -> Option<u32> {
        let mut m = *self.by_name.get(hour.name_id(i)?)?;
        for (_, column, bits) in &self.columns {
            m &= *bits.get(column.id(i))?;
        }
        Some(m)
    }
}

/// Whether `value` of `dim` passes every filter of `filters` on `dim`.
fn passes_on(filters: &[Filter], dim: &Dimension, value: Option<&str>) -> bool {
    filters
        .iter()
        .filter(|f| f.dimension == *dim)
        .all(|f| f.matches(value))
}

/// The indexed dimensions among `dims` (sorted by code, once each), or
/// `None` when one is a dimension the index has no values of (a property,
/// a session dimension); the event name needs none.
fn indexed_dims<'d>(dims: impl Iterator<Item = &'d Dimension>) -> Option<Vec<Dim>> {
    let mut out = Vec::new();
    for d in dims {
        match d {
            Dimension::Rolled(Dim::Event) => {}
            Dimension::Rolled(d) if INDEXED_DIMS.contains(d) => out.push(*d),
            _ => return None,
        }
    }
    out.sort_by_key(|d| d.code());
    out.dedup();
    Some(out)
}

/// Calls `each` with the first hour, the `events` blob and the `values`
/// blobs of the dimensions `codes` (in that order) of every row of the
/// index by `span` in hours `[a, b)`.
async fn valued_rows(
    store: &Store,
    project: Uuid,
    (span, a, b): (Span, i64, i64),
    codes: &[i16],
    mut each: impl FnMut(i64, Vec<u8>, Vec<Vec<u8>>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut values: HashMap<i64, Vec<Vec<u8>>> = HashMap::new();
    if !codes.is_empty() {
        store
            .person_values(project, span, (a, b), codes, |h, _, blob| {
                values.entry(h).or_default().push(blob);
                Ok(())
            })
            .await?;
    }
    store
        .person_index(project, span, (a, b), PersonColumn::Events, |h, blob| {
            each(h, blob, values.remove(&h).unwrap_or_default())
        })
        .await
}

/// For every row of the index that `piece` reads (an hour at an edge cut
/// to the range, only without `valued`), calls `scan` with its first hour,
/// its `events` blob read and its events' [`Marks`], then `keep` with the
/// blob's bytes and the marks (the blob is read once); nothing for a raw
/// piece. `scan` gives `None` when the blob cannot be read.
async fn marked_rows(
    store: &Store,
    f: &Funnel,
    piece: &Piece,
    valued: Option<&mut Valued<'_>>,
    mut scan: impl FnMut(i64, &EventsBlob, &Marks) -> Option<()>,
    mut keep: impl FnMut(i64, Vec<u8>, Marks),
) -> Result<(), StoreError> {
    let project = f.query.project;
    let mut row = |h: i64,
                   blob: Vec<u8>,
                   marks_of: &mut dyn FnMut(&EventsBlob) -> Option<Marks>|
     -> Result<(), StoreError> {
        let marks = {
            let hour = EventsBlob::parse(&blob).ok_or_else(|| unreadable(project, h))?;
            let marks = marks_of(&hour).ok_or_else(|| unreadable(project, h))?;
            scan(h, &hour, &marks).ok_or_else(|| unreadable(project, h))?;
            marks
        };
        keep(h, blob, marks);
        Ok(())
    };
    let Some(valued) = valued else {
        return events_rows(store, project, piece, |h, blob| {
            row(h, blob, &mut |hour| {
                Some(Marks::ByName(hour.masks(|n| f.mask(n, |_| true))))
            })
        })
        .await;
    };
    let Piece::Index(span, a, b) = *piece else {
        return Ok(()); // raw (a valued funnel asks for no parts)
    };
    let codes = valued.codes();
    valued_rows(store, project, (span, a, b), &codes, |h, blob, values| {
        row(h, blob, &mut |hour| valued.marks(hour, &values))
    })
    .await
}

/// A step event of a raw piece, numbered: (person, time, arrival, mask,
/// breakdown value).
type RawHit = (u32, i64, i64, u32, u32);

/// `events` blob bytes a funnel keeps from its first pass for its second;
/// beyond, the second reads them again.
const MAX_KEPT_BYTES: usize = 256 << 20;

/// Bytes of progress slots per range of people in the second pass of
/// [`funnel`] (when its blobs are kept): small enough to stay in the CPU
/// cache, where following people of all ranges at once misses it on
/// nearly every person-hour.
const RANGE_BYTES: usize = 1 << 20;

/// Threads at most of the second pass of [`funnel`] (people in ranges
/// are independent; each thread takes a share of the ranges).
const MAX_THREADS: u32 = 4;

/// The second pass of [`funnel`]: the progress of the followed people
/// numbered from `base`, person `base + i`'s in slot `slot_of[i]` of
/// `arena` (0: none yet).
struct Follow<'a> {
    /// The people to follow (the others are counted without).
    later: &'a Bits,
    window: i64,
    base: u32,
    slot_of: Vec<u32>,
    arena: Progress,
    /// With a breakdown, the steps per value.
    groups: Option<HashMap<u32, Vec<StepCount>>>,
}

impl<'a> Follow<'a> {
    /// No progress yet, for a funnel of `n` steps with window `window`
    /// (ms), following the people in `later`, numbered from `base`,
    /// counting per breakdown value too when `groups`.
    fn new(later: &'a Bits, window: i64, n: usize, (base, groups): (u32, bool)) -> Self {
        Self {
            later,
            window,
            base,
            slot_of: Vec::new(),
            arena: Progress::arena(n),
            groups: groups.then(HashMap::new),
        }
    }

    /// Takes person `p`'s next step event, with its breakdown value.
    fn event(&mut self, p: u32, at: (i64, i64), mask: u32, value: u32) {
        let i = (p - self.base) as usize;
        if i >= self.slot_of.len() {
            self.slot_of.resize(i + 1, 0);
        }
        if self.slot_of[i] == 0 {
            if mask & 1 == 0 {
                return; // nothing happens before a first step
            }
            self.slot_of[i] = self.arena.add();
        }
        self.arena
            .advance(self.slot_of[i], self.window, at, mask, i64::from(value));
    }

    /// Takes the step events of person `p`'s run `events` of `hour`
    /// (starting at `start` ms) when `p` is followed; `None` when a name
    /// index is out of range.
    fn run(
        &mut self,
        (hour, marks, start): (&EventsBlob, &Marks, i64),
        p: u32,
        events: std::ops::Range<usize>,
    ) -> Option<()> {
        if !self.later.get(p) {
            return Some(()); // counted from `first`
        }
        let at = |i: usize| (start + i64::from(hour.ms(i)), i as i64);
        // The kind of marks is matched once per run, not per event.
        match marks {
            Marks::ByName(masks) => self.steps(p, events, at, |i| Some((hour.mask(masks, i)?, 0))),
            Marks::ByEvent { masks, values } => self.steps(p, events, at, |i| {
                Some((*masks.get(i)?, values.get(i).copied().unwrap_or(0)))
            }),
        }
    }

    /// Takes person `p`'s `events`, each at `at(i)` with steps and value
    /// `mark(i)`; `None` at the first `None` of `mark`.
    fn steps(
        &mut self,
        p: u32,
        events: std::ops::Range<usize>,
        at: impl Fn(usize) -> (i64, i64),
        mark: impl Fn(usize) -> Option<(u32, u32)>,
    ) -> Option<()> {
        // Of a row of events that are the first step only, each replaces
        // the start before it and changes nothing else (see
        // `Progress::advance`), so only the row's last one is taken.
        let mut start_row = None;
        for i in events {
            match mark(i)? {
                (0, _) => {}
                (1, v) => start_row = Some((i, v)),
                (mask, v) => {
                    if let Some((j, w)) = start_row.take() {
                        self.event(p, at(j), 1, w);
                    }
                    self.event(p, at(i), mask, v);
                }
            }
        }
        if let Some((j, w)) = start_row {
            self.event(p, at(j), 1, w);
        }
        Some(())
    }

    /// Counts the progress so far into `steps` (and the groups), and
    /// starts afresh with the people numbered from `base`.
    fn finish(&mut self, steps: &mut [StepCount], base: u32) {
        for slot in 1..u32::try_from(self.arena.len()).unwrap_or(u32::MAX) {
            if let Some((last, times, value)) = self.arena.furthest(slot) {
                count(steps, last, times);
                if let Some(groups) = &mut self.groups {
                    let g = groups
                        .entry(u32::try_from(value).unwrap_or(0))
                        .or_insert_with(|| vec![StepCount::default(); steps.len()]);
                    count(g, last, times);
                }
            }
        }
        self.arena.clear();
        self.slot_of.fill(0);
        self.base = base;
    }
}

/// Step events in time order, taken range of people by range of people
/// (each person's in time order).
#[derive(Clone)]
enum Source<'a> {
    /// An hour of the index (starting at `start` ms); `next` is the first
    /// run not taken yet, `left` the runs after it, `at` its first event.
    Hour {
        h: i64,
        blob: EventsBlob<'a>,
        marks: &'a Marks,
        runs: Cursor<'a>,
        left: usize,
        person: u32,
        next: Option<(u32, usize)>,
        at: usize,
    },
    /// A raw piece's hits sorted by person, time and arrival, from `at`.
    Raw { hits: Vec<RawHit>, at: usize },
}

impl<'a> Source<'a> {
    fn hour(h: i64, blob: &'a [u8], marks: &'a Marks) -> Option<Self> {
        Some(Self::read(h, EventsBlob::parse(blob)?, marks))
    }

    /// Hour `h`, read.
    fn read(h: i64, blob: EventsBlob<'a>, marks: &'a Marks) -> Self {
        Source::Hour {
            h,
            marks,
            runs: Cursor::new(blob.runs),
            left: blob.run_count,
            person: 0,
            next: None,
            at: 0,
            blob,
        }
    }

    /// Gives `follow` the events of people numbered below `end` not taken
    /// yet (skips them without one); the hour whose blob cannot be read
    /// otherwise.
    fn take(&mut self, end: u32, mut follow: Option<&mut Follow>) -> Result<(), i64> {
        match self {
            Source::Hour {
                h,
                blob,
                marks,
                runs,
                left,
                person,
                next,
                at,
            } => loop {
                let (p, len) = match *next {
                    Some(run) => run,
                    None if *left == 0 => return Ok(()),
                    None => {
                        let delta = runs.get32().ok_or(*h)?;
                        let len = usize::try_from(runs.get().ok_or(*h)?).map_err(|_| *h)?;
                        *person = person.checked_add(delta).ok_or(*h)?;
                        *left -= 1;
                        (*person, len)
                    }
                };
                if p >= end {
                    *next = Some((p, len));
                    return Ok(());
                }
                *next = None;
                if let Some(f) = follow.as_deref_mut() {
                    f.run((blob, marks, *h * HOUR_MS), p, *at..*at + len)
                        .ok_or(*h)?;
                }
                *at += len;
            },
            Source::Raw { hits, at } => {
                while let Some(&(p, t, seq, mask, value)) = hits.get(*at).filter(|x| x.0 < end) {
                    if let Some(f) = follow.as_deref_mut().filter(|f| f.later.get(p)) {
                        f.event(p, (t, seq), mask, value);
                    }
                    *at += 1;
                }
                Ok(())
            }
        }
    }
}

/// Follows the people numbered in `[start, end)` through `sources`, `per`
/// at a time, counting into `steps`; the hour whose blob cannot be read
/// otherwise.
fn follow_ranges(
    sources: &mut [Source],
    follow: &mut Follow,
    (start, end, per): (u32, u32, u32),
    steps: &mut [StepCount],
) -> Result<(), i64> {
    for source in sources.iter_mut() {
        source.take(start, None)?;
    }
    follow.base = start;
    let mut at = start;
    while at < end {
        at = at.saturating_add(per.max(1)).min(end);
        for source in sources.iter_mut() {
            source.take(at, Some(follow))?;
        }
        follow.finish(steps, at);
    }
    Ok(())
}

/// Steps counted, with the steps per breakdown value.
type Counted = (Vec<StepCount>, HashMap<u32, Vec<StepCount>>);

/// Adds the counts of `from` to `into`.
fn add_steps(into: &mut [StepCount], from: Vec<StepCount>) {
    for (s, p) in into.iter_mut().zip(from) {
        s.people += p.people;
        s.times_ms.extend(p.times_ms);
    }
}

/// [`follow_ranges`] over `people` people on up to `threads` threads,
/// each with its share of the ranges and its own progress; per breakdown
/// value too when `groups`.
fn follow_in_parallel(
    sources: &[Source],
    (later, window, n, groups): (&Bits, i64, usize, bool),
    (people, per, threads): (u32, u32, u32),
) -> Result<Counted, i64> {
    let ranges = people.div_ceil(per.max(1)).max(1);
    let threads = threads.clamp(1, ranges);
    let share = ranges.div_ceil(threads).saturating_mul(per.max(1));
    let run = |start: u32| {
        let mut follow = Follow::new(later, window, n, (start, groups));
        let mut steps = vec![StepCount::default(); n];
        let end = start.saturating_add(share).min(people);
        follow_ranges(
            &mut sources.to_vec(),
            &mut follow,
            (start, end, per),
            &mut steps,
        )?;
        Ok((steps, follow.groups.unwrap_or_default()))
    };
    let parts: Vec<Result<Counted, i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads)
            .map(|i| scope.spawn(move || run(i.saturating_mul(share))))
            .collect();
        let mut parts = vec![run(0)];
        parts.extend(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
        );
        parts
    });
    let mut steps = vec![StepCount::default(); n];
    let mut all: HashMap<u32, Vec<StepCount>> = HashMap::new();
    for part in parts {
        let (part, part_groups) = part?;
        add_steps(&mut steps, part);
        for (v, g) in part_groups {
            add_steps(
                all.entry(v)
                    .or_insert_with(|| vec![StepCount::default(); n]),
                g,
            );
        }
    }
    Ok((steps, all))
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`read_raw_hits`] gives: per raw piece its hits, the breakdown
/// values they number, and the person numbers.
type RawRead = (Vec<Vec<RawHit>>, Vec<Option<String>>, Numbers);

/// The step events of `f` in the raw pieces `ranges` (those that pass its
/// filters, with their breakdown values numbered in the order met),
/// numbered with `numbers`, each piece's by person, then time and arrival
/// (each person's in order, what the second pass of [`funnel`] needs);
/// and the numbers, with those given to people the job has not numbered
/// yet.
async fn read_raw_hits(
    store: Store,
    f: Funnel,
    ranges: Vec<(i64, i64)>,
    mut numbers: Numbers,
) -> Result<RawRead, StoreError> {
    let project = f.query.project;
    let names = f.step_names();
    let cols = f.columns(&names);
    let mut values = Interner::default();
    let mut raw = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        let mut hits = Vec::new();
        let mut reads = Reads::new(project, (a, b), READ_MS, false);
        while let Some((a, b)) = reads.next(&store).await? {
            let events = store.event_facts(project, a, b, &cols).await?;
            numbers.number(&store, &events).await?;
            for e in &events {
                let Some((mask, value)) = f.hit(e, &mut values) else {
                    continue;
                };
                let Some(p) = numbers.of(e.visitor) else {
                    continue;
                };
                hits.push((p, e.timestamp, e.seq, mask, value));
            }
        }
        hits.sort_unstable_by_key(|h| (h.0, h.1, h.2));
        raw.push(hits);
    }
    Ok((raw, values.values, numbers))
}

/// Runs a funnel that [`answers_funnel`] over `[from, to)` (the data
/// range).
///
/// Most people never do the second step's event (the first step is often
/// a page view), and their answer is known without following them: they
/// reached step 1 if they did its event. So a first pass reads who did the
/// first step's event and who did the second's, from the index's `events`
/// blobs (kept for the second pass, up to `MAX_KEPT_BYTES`) and the raw
/// pieces' events (kept too); the second streams in time order through a
/// [`Progress`] only the step events of people who did both, skipping
/// everyone else's runs whole, and the rest count at step 1. With a
/// breakdown, everyone who did the first step's event is followed (their
/// value is their attempt's).
///
/// The steps of an event of the index are known from its name, and with
/// filters or a breakdown from its values of the dimensions they are on
/// (per dimension, the steps each value passes); the rows without values
/// are then read raw, and so are the edge hours (their rows are cut only
/// without values).
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
    let mut valued = Valued::new(f);
    let codes = valued.as_ref().map(Valued::codes).unwrap_or_default();
    let numbers = Numbers::new(store, project).await?;
    let pieces = plan(
        store,
        project,
        (from, to),
        now,
        |_, _| true,
        valued.is_none(),
        &codes,
    )
    .await?;

    // First pass: who did the first step, who the second (`seen`); the
    // raw pieces' step events, numbered, in time order. The raw pieces are
    // read by a task of their own, on another worker and connection, while
    // this one reads the index: the current hour's events alone take about
    // half as long as a month of the index.
    let raw_ranges: Vec<(i64, i64)> = pieces
        .iter()
        .filter_map(|p| match *p {
            Piece::Raw(a, b) => Some((a, b)),
            Piece::Index(..) | Piece::Part(..) => None,
        })
        .collect();
    // Stopped when this query is (its caller gone, or an error below).
    let mut raw_task = AbortOnDrop(tokio::spawn(read_raw_hits(
        store.clone(),
        f.clone(),
        raw_ranges,
        numbers,
    )));
    let mut seen = Seen::default();
    let mut kept: Vec<(i64, Vec<u8>, Marks)> = Vec::new();
    let (mut kept_bytes, mut keep) = (0usize, true);
    for piece in &pieces {
        marked_rows(
            store,
            f,
            piece,
            valued.as_mut(),
            |_, hour, marks| seen.hour(hour, marks),
            |h, blob, marks| {
                if keep {
                    kept_bytes += blob.len();
                    keep = kept_bytes <= MAX_KEPT_BYTES;
                    if keep {
                        kept.push((h, blob, marks));
                    } else {
                        kept = Vec::new();
                    }
                }
            },
        )
        .await?;
    }
    let (mut raw, raw_values, numbers) = (&mut raw_task.0).await.map_err(|e| {
        StoreError::Db(sea_orm::DbErr::Custom(format!(
            "the funnel's read of raw events stopped: {e}"
        )))
    })??;
    if let Some(v) = valued.as_mut() {
        // The raw pieces' values, numbered as the index's.
        let ids: Vec<u32> = raw_values.iter().map(|x| v.id(x.as_deref())).collect();
        for hit in raw.iter_mut().flatten() {
            hit.4 = ids.get(hit.4 as usize).copied().unwrap_or(0);
        }
    }
    for &(p, _, _, mask, _) in raw.iter().flatten() {
        seen.saw(p, mask);
    }

    // Second pass: the people who did both (with a breakdown, everyone
    // who did the first: their value is that of their attempt; those who
    // never did the second step's event cost one step per run, see
    // `Follow::steps`), followed step by step.
    let breakdown = f.breakdown.is_some();
    let later = if breakdown { &seen.first } else { &seen.second };
    let mut steps = vec![StepCount::default(); n];
    let groups;
    if keep {
        // A range of people at a time, through every hour and piece: the
        // query's CPU work (tens of ms at millions of events), which must
        // not hold up this runtime worker's other tasks, ingestion among
        // them.
        let ends: Vec<Option<i64>> = pieces
            .iter()
            .map(|piece| match *piece {
                Piece::Index(_, _, b) => Some(b),
                Piece::Part(h, ..) => Some(h + 1),
                Piece::Raw(..) => None,
            })
            .collect();
        let per =
            u32::try_from((RANGE_BYTES / Progress::slot_bytes(n)).max(1024)).unwrap_or(u32::MAX);
        let people = numbers.next.max(seen.last.saturating_add(1));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
            .min(MAX_THREADS);
        let window = f.window_ms;
        let follow = || {
            let mut sources = Vec::with_capacity(kept.len() + raw.len());
            let (mut kept_iter, mut raw) = (kept.iter().peekable(), raw.into_iter());
            for end in ends {
                let Some(end) = end else {
                    let hits = raw.next().unwrap_or_default();
                    sources.push(Source::Raw { hits, at: 0 });
                    continue;
                };
                while let Some((h, blob, marks)) = kept_iter.next_if(|(h, _, _)| *h < end) {
                    sources.push(Source::hour(*h, blob, marks).ok_or(*h)?);
                }
            }
            follow_in_parallel(
                &sources,
                (later, window, n, breakdown),
                (people, per, threads),
            )
        };
        // On this thread, where the blobs just read are in the CPU cache
        // (handing the work to a blocking thread made funnels about 5%
        // slower), with this worker's other tasks handed to another
        // worker meanwhile (a runtime of one thread has no other).
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        (steps, groups) = if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(follow)
        } else {
            follow()
        }
        .map_err(|h| unreadable(project, h))?;
    } else {
        // Everyone at once, each hour read again as it comes.
        let mut follow = Follow::new(later, f.window_ms, n, (0, breakdown));
        let mut raw = raw.into_iter();
        for piece in &pieces {
            if let Piece::Raw(..) = piece {
                let hits = raw.next().unwrap_or_default();
                Source::Raw { hits, at: 0 }
                    .take(u32::MAX, Some(&mut follow))
                    .map_err(|h| unreadable(project, h))?;
                continue;
            }
            marked_rows(
                store,
                f,
                piece,
                valued.as_mut(),
                |h, hour, marks| {
                    Source::read(h, hour.clone(), marks)
                        .take(u32::MAX, Some(&mut follow))
                        .ok()
                },
                |_, _, _| {},
            )
            .await?;
        }
        follow.finish(&mut steps, 0);
        groups = follow.groups.take().unwrap_or_default();
    }
    if !breakdown {
        // Who did the first step's event and never the second's reached
        // step 1 only.
        steps[0].people += seen.first.count_without(&seen.second);
    }
    let values = valued.map(|v| v.values.values).unwrap_or_default();
    Ok(FunnelAnswer {
        steps,
        groups: if breakdown {
            super::funnel::named_groups(groups, &values)
        } else {
            Vec::new()
        },
    })
}

/// Answers `r` (over `[from, to)`, the data range; cohorts starting at
/// `starts`) from the index, when its filters are all on the event name
/// or indexed dimensions and the person and activity arrays fit; `false`
/// otherwise. Without filters it reads the `people` blobs (who did which
/// event); with filters, the `events` blobs and the values of the
/// filters' dimensions, and rows without those values raw.
///
/// An hour (a day) from the index counts as a whole: its people were
/// first seen or active at its start. That is exact because the only
/// hours (days) read from the index are those before the range and those
/// inside it that lie in one period (in a zone at :30 or :45 from UTC,
/// no hour does, and the answer comes from raw events; a UTC day that
/// spans two periods in the caller's zone is read from its hours).
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
    let filters = &r.query.filters;
    // With filters, the dimensions whose values are read (rows without
    // them are read raw).
    let Some(dims) = indexed_dims(filters.iter().map(|f| &f.dimension)) else {
        return Ok(false);
    };
    let codes: Vec<i16> = dims.iter().map(|d| d.code()).collect();
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
    let usable = |a: i64, b: i64| {
        b <= from || (a >= from && r.period.bucket(r.tz, a) == r.period.bucket(r.tz, b - 1))
    };
    // First-seen time per person (and who has one, a small bit set that
    // stays in the CPU cache: the pieces come in time order, so a person
    // seen before is never first seen in a later hour); activity bits per
    // period.
    let mut first: Vec<i64> = vec![i64::MAX; people];
    let mut known = Bits::default();
    let mut active: Vec<Bits> = vec![Bits::default(); starts.len()];
    // `p`, never seen before, first seen at `t`.
    let first_seen = |first: &mut Vec<i64>, known: &mut Bits, p: u32, t: i64| {
        known.set(p);
        let p = p as usize;
        if p >= first.len() {
            first.resize(p + 1, i64::MAX);
        }
        first[p] = t;
    };
    // The period `t` counts in, when it is in the range.
    let period_of = |t: i64| if t < from || t >= to { None } else { index(t) };
    let names: Option<Vec<String>> = match (&r.cohort_event, &r.return_event) {
        (Some(c), Some(e)) => Some(vec![c.clone(), e.clone()]),
        _ => None,
    };
    let cols = EventColumns::reading(names.as_deref(), filters.iter().map(|f| &f.dimension))
        .keeping(filters);
    let passes = |e: &EventFacts| {
        filters
            .iter()
            .all(|f| f.matches(e.value(&f.dimension).as_deref()))
    };
    // Filtered, an event's bits: 1 when it makes its person seen (the
    // cohort event, passing the filters), 2 when active (the return
    // event, passing them).
    let name_bits = |name: &str| {
        let named = |e: &Option<String>| e.as_ref().is_none_or(|n| *n == name);
        if passes_on(filters, &Dimension::Rolled(Dim::Event), Some(name)) {
            u32::from(named(&r.cohort_event)) | u32::from(named(&r.return_event)) << 1
        } else {
            0
        }
    };
    let value_bits = |d: Dim, v: Option<&str>| {
        if passes_on(filters, &Dimension::Rolled(d), v) {
            3
        } else {
            0
        }
    };
    let mut numbers = Numbers::new(store, project).await?;
    let pieces = plan(
        store,
        project,
        (earliest.min(from), to),
        now,
        usable,
        false,
        &codes,
    )
    .await?;
    for piece in pieces {
        match piece {
            Piece::Index(span, a, b) if !filters.is_empty() => {
                valued_rows(store, project, (span, a, b), &codes, |h, blob, values| {
                    let t = h * HOUR_MS;
                    let period = period_of(t);
                    EventsBlob::parse(&blob)
                        .and_then(|hour| {
                            let by_name: Vec<u32> =
                                hour.names.iter().map(|n| name_bits(n)).collect();
                            let bits =
                                EventBits::new(&hour, by_name, (&dims, &values), value_bits)?;
                            hour.each_run(|p, events| {
                                let mut m = 0;
                                for i in events {
                                    m |= bits.of(&hour, i)?;
                                }
                                // An hour counts whole, as below.
                                if m & 1 != 0 && !known.get(p) {
                                    first_seen(&mut first, &mut known, p, t);
                                }
                                if m & 2 != 0
                                    && let Some(i) = period
                                {
                                    active[i].set(p);
                                }
                                Some(())
                            })
                        })
                        .ok_or_else(|| unreadable(project, h))
                })
                .await?;
            }
            Piece::Index(span, a, b) => {
                store
                    .person_index(project, span, (a, b), PersonColumn::People, |h, blob| {
                        let t = h * HOUR_MS;
                        let period = period_of(t);
                        // An hour counts whole: a person seen before it
                        // (`known`) was first seen no later.
                        let mut seen = |p: u32| {
                            if !known.get(p) {
                                first_seen(&mut first, &mut known, p, t);
                            }
                        };
                        let read = match (period, r.cohort_event == r.return_event) {
                            // One list for both: read once.
                            (Some(i), true) => each_person(&blob, r.cohort_event.as_deref(), |p| {
                                seen(p);
                                active[i].set(p);
                            }),
                            (Some(i), false) => each_person(&blob, r.cohort_event.as_deref(), seen)
                                .and_then(|()| {
                                    each_person(&blob, r.return_event.as_deref(), |p| {
                                        active[i].set(p);
                                    })
                                }),
                            (None, _) => each_person(&blob, r.cohort_event.as_deref(), seen),
                        };
                        read.ok_or_else(|| unreadable(project, h))
                    })
                    .await?;
            }
            // (Retention asks for no parts: it cannot cut a `people` blob.)
            Piece::Raw(a, b) | Piece::Part(_, a, b) => {
                let mut reads = Reads::new(project, (a, b), READ_MS, false);
                while let Some((a, b)) = reads.next(store).await? {
                    let events = store.event_facts(project, a, b, &cols).await?;
                    numbers.number(store, &events).await?;
                    for e in &events {
                        let Some(p) = numbers.of(e.visitor).filter(|_| passes(e)) else {
                            continue;
                        };
                        if r.cohort_event.as_ref().is_none_or(|n| *n == e.name) {
                            if known.get(p) {
                                // Seen in an earlier piece, or earlier in
                                // this one: the earliest counts.
                                let f = &mut first[p as usize];
                                *f = (*f).min(e.timestamp);
                            } else {
                                first_seen(&mut first, &mut known, p, e.timestamp);
                            }
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
        let seen = read_events(&hour.events_blob(), |n| {
            u32::from(n == "view") | u32::from(n == "buy") << 1
        })
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
        // Cut to [5, 3_599_999) ms: person 3's last event and person
        // 1,000,000's only one are left out.
        let cut = HourIndex::cut(&hour.events_blob(), (5, 3_599_999)).unwrap();
        let seen = read_events(&cut.events_blob(), |n| u32::from(n == "buy")).unwrap();
        assert_eq!(seen, [(3, 5, 0, 0), (3, 5, 1, 1)]);
        // A cut or padded blob is an error, not a panic.
        let blob = hour.events_blob();
        assert!(read_events(&blob[..blob.len() - 1], |_| 1).is_none());
        let mut longer = blob.clone();
        longer.push(0);
        assert!(read_events(&longer, |_| 1).is_none());
        assert!(each_person(&people[..people.len() - 1], Some("buy"), |_| {}).is_none());
    }

    /// Every event of an `events` blob: (person, ms, ordinal, mask).
    fn read_events(
        blob: &[u8],
        mask_of: impl Fn(&str) -> u32,
    ) -> Option<Vec<(u32, i64, usize, u32)>> {
        let hour = EventsBlob::parse(blob)?;
        let masks = hour.masks(mask_of);
        let mut seen = Vec::new();
        hour.each_run(|p, events| {
            for i in events {
                seen.push((p, i64::from(hour.ms(i)), i, hour.mask(&masks, i)?));
            }
            Some(())
        })?;
        Some(seen)
    }

    /// Every event of an `events` blob: (person, ms, name).
    fn named_events(blob: &[u8]) -> Vec<(u32, u32, String)> {
        let hour = EventsBlob::parse(blob).unwrap();
        let mut seen = Vec::new();
        hour.each_run(|p, events| {
            for i in events {
                seen.push((p, hour.ms(i), hour.names[hour.name_id(i)?].to_owned()));
            }
            Some(())
        })
        .unwrap();
        seen
    }

    /// Each event of a row: person, ms, name, and its value of each
    /// indexed dimension.
    fn valued_events(row: &IndexRow) -> Vec<(u32, u32, String, Vec<Option<String>>)> {
        let columns: Vec<ValuesBlob> = row
            .values
            .iter()
            .map(|(_, b)| ValuesBlob::parse(b).unwrap())
            .collect();
        let mut i = 0;
        named_events(&row.events)
            .into_iter()
            .map(|(p, ms, name)| {
                let values = columns
                    .iter()
                    .map(|c| c.values[c.id(i)].map(str::to_owned))
                    .collect();
                i += 1;
                (p, ms, name, values)
            })
            .collect()
    }

    #[test]
    fn a_day_merged_from_its_hours_is_the_day_indexed_at_once() {
        // 24 hours, each with names of its own (288 in all: a day's name
        // indexes take 2 bytes where an hour's take 1) and a few shared;
        // people in several hours; a person's events at one ms.
        let mut rng = 11u64;
        let mut next = |n: u64| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (rng >> 33) % n
        };
        let day = 20_000 * HOURS_PER_DAY * HOUR_MS;
        let ids: HashMap<u64, u32> = (0..500).map(|v| (v, 7 + v as u32 * 3)).collect();
        let (mut all, mut hours, mut seq) = (Vec::new(), Vec::new(), 0);
        for h in 0..24 {
            if h == 5 {
                continue; // an hour without events has no row
            }
            let start = day + h * HOUR_MS;
            let mut events = Vec::new();
            for _ in 0..300 {
                seq += 1;
                let name = match next(3) {
                    0 => "view".to_owned(),
                    _ => format!("h{h}-{}", next(12)),
                };
                let t = start + next(HOUR_MS as u64) as i64;
                // Visitor 999 has no number: left out.
                let visitor = if next(50) == 0 { 999 } else { next(500) };
                // Values: a country (or none), a city of 300 (a day's
                // take 2 bytes), a page from the URL, a number as text.
                let mut e = event(seq, &name, t, visitor);
                if next(4) != 0 {
                    e.enrichment.insert(
                        "country".into(),
                        ["DE", "FR", "US"][next(3) as usize].into(),
                    );
                }
                e.enrichment
                    .insert("city".into(), format!("c{}", next(300)).into());
                e.enrichment
                    .insert("utm_campaign".into(), serde_json::json!(next(3)));
                e.url = Some(format!("/p{}", next(5)));
                events.push(e.clone());
                if next(10) == 0 {
                    seq += 1;
                    events.push(EventFacts {
                        seq,
                        name: "same-ms".into(),
                        ..e
                    });
                }
            }
            let row = HourIndex::build(&events, &ids, start).row();
            let values: Vec<Vec<u8>> = row.values.iter().map(|(_, b)| b.clone()).collect();
            hours.push(((h * HOUR_MS) as u32, row.events, values));
            all.extend(events);
        }
        let merged = HourIndex::merge(
            hours
                .iter()
                .map(|(o, b, v)| (*o, b.as_slice(), v.as_slice())),
        )
        .unwrap();
        let whole = HourIndex::build(&all, &ids, day);
        assert!(merged.names.len() > 256);
        // The same events with the same values, in the same order.
        let (a, b) = (merged.row(), whole.row());
        assert_eq!(valued_events(&a), valued_events(&b));
        let codes: Vec<i16> = a.values.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, INDEXED_DIMS.map(Dim::code));
        let city = ValuesBlob::parse(&a.values[8].1).unwrap();
        assert_eq!((city.width, city.values.len()), (2, 300));
        let campaign = valued_events(&a).iter().find_map(|e| e.3[5].clone());
        assert!(campaign.is_some_and(|c| ["0", "1", "2"].contains(&c.as_str())));
        assert!(
            valued_events(&a).iter().any(|e| e.3[6].is_none()),
            "no country: none"
        );
        // An hour without values leaves the day without.
        let mut bare = hours.clone();
        bare[4].2.clear();
        let day_row = HourIndex::merge(
            bare.iter()
                .map(|(o, b, v)| (*o, b.as_slice(), v.as_slice())),
        )
        .unwrap()
        .row();
        assert!(day_row.values.is_empty());
        assert_eq!(day_row.events, a.events);
        // Values that are not the hour's events' make it unreadable.
        let mut short = hours.clone();
        short[2].2[3] = ValueColumn {
            values: vec![None],
            ids: vec![0; 3],
        }
        .blob();
        assert!(
            HourIndex::merge(
                short
                    .iter()
                    .map(|(o, b, v)| (*o, b.as_slice(), v.as_slice()))
            )
            .is_none()
        );
        let got = named_events(&merged.events_blob());
        assert_eq!(
            got.len(),
            all.len() - all.iter().filter(|e| e.visitor == Some(999)).count()
        );
        assert_eq!(got, named_events(&whole.events_blob()));
        let (a, b) = (merged.people_blob(), whole.people_blob());
        for name in [
            None,
            Some("view"),
            Some("same-ms"),
            Some("h23-4"),
            Some("none"),
        ] {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            each_person(&a, name, |p| x.push(p)).unwrap();
            each_person(&b, name, |p| y.push(p)).unwrap();
            assert_eq!(x, y, "{name:?}");
            assert_eq!(x.is_empty(), name == Some("none"), "{name:?}");
        }
        // A cut hour makes the day unreadable, not wrong.
        let cut = &hours[3].1[..hours[3].1.len() - 1];
        assert!(
            HourIndex::merge([
                (0, hours[0].1.as_slice(), &[][..]),
                (HOUR_MS as u32, cut, &[][..])
            ])
            .is_none()
        );
    }

    #[test]
    fn people_followed_in_ranges_reach_the_steps_they_reach_all_at_once() {
        // 60 people over 6 hours (the fourth one raw), with page views,
        // signups and purchases; a 3-step funnel with a 2-hour window.
        let mut rng = 7u64;
        let mut next = |n: u64| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (rng >> 33) % n
        };
        let names = ["view", "signup", "buy", "other"];
        let mask_of = |n: &str| match n {
            "view" => 1,
            "signup" => 2,
            "buy" => 4,
            _ => 0,
        };
        let ids: HashMap<u64, u32> = (0..60).map(|v| (v, v as u32)).collect();
        // Each event's breakdown value: its arrival number mod 3.
        let value_of = |seq: i64| u32::try_from(seq % 3).unwrap();
        let mut blobs = Vec::new();
        let mut raw_hits = Vec::new();
        let mut seq = 0;
        for h in 0..6 {
            let start = h * HOUR_MS;
            let events: Vec<EventFacts> = (0..200)
                .map(|_| {
                    seq += 1;
                    let t = start + next(HOUR_MS as u64) as i64;
                    let (name, visitor) = (names[next(4) as usize], next(60));
                    // Every seventh person never signs up.
                    let name = if visitor % 7 == 0 && name == "signup" {
                        "other"
                    } else {
                        name
                    };
                    event(seq, name, t, visitor)
                })
                .collect();
            if h == 3 {
                for e in &events {
                    let mask = mask_of(&e.name);
                    if mask != 0 {
                        raw_hits.push((
                            ids[&e.visitor.unwrap()],
                            e.timestamp,
                            e.seq,
                            mask,
                            value_of(e.seq),
                        ));
                    }
                }
                raw_hits.sort_unstable_by_key(|h| (h.1, h.2));
            } else {
                let index = HourIndex::build(&events, &ids, start);
                // The events in the blob's order, for their values.
                let mut order: Vec<&EventFacts> = events.iter().collect();
                order.sort_by_key(|e| (e.visitor, e.timestamp, e.seq));
                let marks = Marks::ByEvent {
                    masks: order.iter().map(|e| mask_of(&e.name)).collect(),
                    values: order.iter().map(|e| value_of(e.seq)).collect(),
                };
                blobs.push((h, index.events_blob(), marks));
            }
        }
        let mut later = Bits::default();
        for p in 0..60 {
            if p % 5 != 0 {
                later.set(p); // everyone but every fifth person
            }
        }
        let follow = || Follow::new(&later, 2 * HOUR_MS, 3, (0, true));
        // Event `i`'s steps and value.
        let mark = |marks: &Marks, hour: &EventsBlob, i: usize| match marks {
            Marks::ByName(masks) => hour.mask(masks, i).map(|m| (m, 0)),
            Marks::ByEvent { masks, values } => Some((masks[i], values[i])),
        };
        // All at once, every event in time order, by hand, following
        // the people in `later`.
        let by_hand = |later: &Bits| {
            let mut whole = vec![StepCount::default(); 3];
            let mut f = Follow::new(later, 2 * HOUR_MS, 3, (0, true));
            for (h, blob, marks) in &blobs {
                if *h == 4 {
                    for &(p, t, seq, mask, value) in &raw_hits {
                        if later.get(p) {
                            f.event(p, (t, seq), mask, value);
                        }
                    }
                }
                let hour = EventsBlob::parse(blob).unwrap();
                hour.each_run(|p, events| {
                    for i in events.filter(|_| later.get(p)) {
                        let (mask, value) = mark(marks, &hour, i)?;
                        if mask != 0 {
                            let at = (h * HOUR_MS + i64::from(hour.ms(i)), i as i64);
                            f.event(p, at, mask, value);
                        }
                    }
                    Some(())
                })
                .unwrap();
            }
            f.finish(&mut whole, 0);
            (whole, f.groups.take().unwrap())
        };
        let (whole, whole_groups) = by_hand(&later);
        assert!(
            whole[2].people > 0 && whole[0].people > whole[2].people,
            "{whole:?}"
        );
        assert_eq!(whole_groups.len(), 3, "{whole_groups:?}");
        assert_eq!(
            whole_groups.values().map(|g| g[0].people).sum::<u64>(),
            whole[0].people
        );
        assert!(raw_hits.len() > 100);
        let mut fresh = Vec::new();
        for (h, blob, marks) in &blobs {
            if *h == 4 {
                let mut hits = raw_hits.clone();
                hits.sort_unstable_by_key(|h| (h.0, h.1, h.2));
                fresh.push(Source::Raw { hits, at: 0 });
            }
            fresh.push(Source::hour(*h, blob, marks).unwrap());
        }
        let same = |got: &mut Vec<StepCount>, want: &[StepCount], how: &str| {
            for (a, b) in got.iter_mut().zip(want) {
                a.times_ms.sort_unstable();
                let mut want = b.times_ms.clone();
                want.sort_unstable();
                assert_eq!((a.people, &a.times_ms), (b.people, &want), "{how}");
            }
        };
        for per in [1, 7, 59, 1000] {
            let (mut sources, fresh) = (fresh.clone(), &fresh);
            let mut steps = vec![StepCount::default(); 3];
            let mut f = follow();
            follow_ranges(&mut sources, &mut f, (0, 60, per), &mut steps).unwrap();
            same(&mut steps, &whole, &format!("per {per}"));
            let mut groups = f.groups.take().unwrap();
            for (v, want) in &whole_groups {
                same(
                    groups.get_mut(v).unwrap(),
                    want,
                    &format!("per {per}, value {v}"),
                );
            }
            // On threads, each with a share of the ranges.
            for threads in [1, 2, 3, 8] {
                let (mut steps, mut groups) =
                    follow_in_parallel(fresh, (&later, 2 * HOUR_MS, 3, true), (60, per, threads))
                        .unwrap();
                let how = format!("per {per}, {threads} threads");
                same(&mut steps, &whole, &how);
                assert_eq!(groups.len(), whole_groups.len(), "{how}");
                for (v, want) in &whole_groups {
                    same(
                        groups.get_mut(v).unwrap(),
                        want,
                        &format!("{how}, value {v}"),
                    );
                }
            }
        }
        // A blob whose name index is out of range names its hour.
        let (h, blob, _) = &blobs[0];
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() = 200;
        let by_name = Marks::ByName(EventsBlob::parse(blob).unwrap().masks(mask_of));
        let fresh = vec![Source::hour(*h, &bad, &by_name).unwrap()];
        let mut sources = fresh.clone();
        let mut steps = vec![StepCount::default(); 3];
        assert_eq!(
            follow_ranges(&mut sources, &mut follow(), (0, 60, 10), &mut steps),
            Err(*h)
        );
        assert_eq!(
            follow_in_parallel(&fresh, (&later, HOUR_MS, 3, false), (60, 10, 2)).unwrap_err(),
            *h
        );
    }

    #[test]
    fn many_names_take_wider_indexes() {
        let start = 0;
        for names in [256, 257, 70_000] {
            let events: Vec<EventFacts> = (0..names)
                .map(|i| event(i, &format!("e{i}"), start + i, 1 + (i as u64 % 3)))
                .collect();
            let ids = HashMap::from([(1, 0), (2, 5), (3, 6)]);
            let blob = HourIndex::build(&events, &ids, start).events_blob();
            let seen = read_events(&blob, |n| u32::from(n == format!("e{}", names - 1))).unwrap();
            assert_eq!(seen.len(), names as usize);
            // The last event's name is found, whatever the width.
            let last = seen.iter().find(|e| e.3 == 1).unwrap();
            assert_eq!(
                (last.0, last.1),
                ([0, 5, 6][(names as usize - 1) % 3], names - 1)
            );
            // Persons in order, each person's events in time order.
            assert!(seen.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        }
    }
}
