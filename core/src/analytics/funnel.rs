//! Funnels: how many people did a sequence of events in order, each step
//! within a conversion window of their first step.
//!
//! A person is who the statistics count as a visitor (`distinct_id`, else
//! `visitor_id`, else IP hash). Every step's event must be in the query's
//! range and pass its filters, and each step must come after the one
//! before it (by time, then by arrival). A person counts at the furthest
//! step they reached in any attempt: an attempt starts at a first-step
//! event, and a later start replaces an earlier one as soon as it reaches
//! the same step, because a later start leaves more of the window for the
//! steps after (the rule of ClickHouse's `windowFunnel`); each step of an
//! attempt is the earliest event that can be it. Times to convert are
//! those of the latest attempt that got furthest. With a breakdown, each
//! person is counted once, under the value of that attempt's first-step
//! event.

use std::collections::HashMap;

use super::aggregate::Filter;
use super::dims::Dimension;
use super::persons;
use super::query::{Query, Reads, data_range};
use crate::store::people::EventColumns;
use crate::store::{Store, StoreError};

/// Most steps in a funnel.
pub const MAX_STEPS: usize = 20;
/// Events are read a day at a time.
const READ_MS: i64 = 24 * super::HOUR_MS;

/// One step: an event name and conditions on that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The event name.
    pub event: String,
    /// All must match the step's event.
    pub filters: Vec<Filter>,
}

/// A funnel over `query`'s range; `query`'s filters apply to every step.
#[derive(Debug, Clone)]
pub struct Funnel {
    /// Project, range and the filters of every step.
    pub query: Query,
    /// 2 to [`MAX_STEPS`] steps, in order.
    pub steps: Vec<Step>,
    /// Longest time from the first step to the last, ms.
    pub window_ms: i64,
    /// Count people under the value of this dimension on their first step.
    pub breakdown: Option<Dimension>,
}

/// The part of a funnel a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunnelPart {
    /// The steps themselves.
    Steps,
    /// The filters of every step.
    Filters,
    /// The filters of one step.
    StepFilters,
    /// The breakdown.
    Breakdown,
}

impl Funnel {
    /// The steps' event names, sorted, each once (what a read asks for).
    #[must_use]
    pub fn step_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.steps.iter().map(|s| s.event.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The steps an event named `name` is (bit `k` for step `k`), of
    /// those whose filters it `passes`.
    pub fn mask(&self, name: &str, passes: impl Fn(&[Filter]) -> bool) -> u32 {
        self.steps
            .iter()
            .enumerate()
            .take(MAX_STEPS)
            .filter(|(_, s)| s.event == name && passes(&s.filters))
            .fold(0u32, |m, (k, _)| m | 1 << k)
    }

    /// The steps event `e` is (bits) and its breakdown value (numbered in
    /// `values`; 0 without a breakdown); `None` when it fails the funnel's
    /// filters or is no step.
    pub(crate) fn hit(
        &self,
        e: &super::dims::EventFacts,
        values: &mut persons::Interner,
    ) -> Option<(u32, u32)> {
        let passes = |filters: &[Filter]| {
            filters
                .iter()
                .all(|x| x.matches(e.value(&x.dimension).as_deref()))
        };
        if !passes(&self.query.filters) {
            return None;
        }
        let mask = self.mask(&e.name, passes);
        if mask == 0 {
            return None;
        }
        let value = self
            .breakdown
            .as_ref()
            .map_or(0, |d| values.id(e.value(d).map(std::borrow::Cow::Owned)));
        Some((mask, value))
    }

    /// What a raw read of the funnel's events (named `names`, its step
    /// names) reads.
    pub(crate) fn columns<'a>(&'a self, names: &'a [String]) -> EventColumns<'a> {
        EventColumns::reading(Some(names), self.dimensions().map(|(_, d)| d))
            .keeping(&self.query.filters)
    }

    /// Every dimension the funnel reads, with the part it is in.
    pub(crate) fn dimensions(&self) -> impl Iterator<Item = (FunnelPart, &Dimension)> {
        let filters = self.query.filters.iter().map(|f| (FunnelPart::Filters, f));
        let step_filters = self
            .steps
            .iter()
            .flat_map(|s| &s.filters)
            .map(|f| (FunnelPart::StepFilters, f));
        filters
            .chain(step_filters)
            .map(|(part, f)| (part, &f.dimension))
            .chain(self.breakdown.iter().map(|d| (FunnelPart::Breakdown, d)))
    }

    /// Checks what the types cannot say: the number of steps, and that no
    /// filter or breakdown is on a session dimension (entry or exit page:
    /// funnel steps are events).
    ///
    /// # Errors
    /// The part at fault and a message naming the problem.
    pub fn check(&self) -> Result<(), (FunnelPart, String)> {
        if !(2..=MAX_STEPS).contains(&self.steps.len()) {
            return Err((
                FunnelPart::Steps,
                format!(
                    "a funnel has 2 to {MAX_STEPS} steps, not {}",
                    self.steps.len()
                ),
            ));
        }
        if let Some((part, d)) = self.dimensions().find(|(_, d)| d.per_session()) {
            return Err((
                part,
                format!(
                    "`{}` describes sessions, and funnel steps are events: use `page` \
                     (with the step's event) instead",
                    d.name()
                ),
            ));
        }
        Ok(())
    }
}

/// The people who reached a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepCount {
    /// How many.
    pub people: u64,
    /// For each of them (after the first step), ms from the step before.
    pub times_ms: Vec<i64>,
}

impl StepCount {
    /// Mean time from the step before, ms (`None` for none).
    #[must_use]
    pub fn mean_ms(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (!self.times_ms.is_empty()).then(|| {
            self.times_ms.iter().map(|t| *t as f64).sum::<f64>() / self.times_ms.len() as f64
        })
    }

    /// Median time from the step before, ms (`None` for none; the lower
    /// middle of an even count).
    #[must_use]
    pub fn median_ms(&self) -> Option<i64> {
        let mut t = self.times_ms.clone();
        t.sort_unstable();
        t.get(t.len().saturating_sub(1) / 2).copied()
    }
}

/// A funnel's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelAnswer {
    /// Every step, for everyone.
    pub steps: Vec<StepCount>,
    /// With a breakdown: each value's steps, most first-step people
    /// first (then by value).
    pub groups: Vec<(Option<String>, Vec<StepCount>)>,
}

/// A step event of a person: time, arrival, the steps it matches (bits),
/// and its breakdown value (an index).
#[derive(Debug, Clone, Copy)]
struct Hit {
    t: i64,
    seq: i64,
    mask: u32,
    value: u32,
}

/// No attempt has reached the step.
const NONE: i64 = i64::MIN;

/// The progress of many people through a funnel of `n` steps, in one
/// array of slots, one slot per person. For each step k a slot holds the
/// attempt with the latest start that has reached k: the times of its
/// steps so far (each at the earliest event that could be it), its first
/// step's tie-breaker (arrival) and its breakdown value. Slot 0 is unused,
/// so that 0 can mean "no slot".
#[derive(Debug, Clone)]
pub struct Progress {
    n: usize,
    cells: Vec<i64>,
}

impl Progress {
    /// No slots yet, for a funnel of `n` steps (at most [`MAX_STEPS`]).
    #[must_use]
    pub fn arena(n: usize) -> Self {
        let n = n.min(MAX_STEPS);
        Self {
            n,
            cells: vec![NONE; n * (n + 2)],
        }
    }

    fn width(&self) -> usize {
        self.n + 2
    }

    /// Adds a slot with no progress; returns its number.
    pub fn add(&mut self) -> u32 {
        let slot = self.len();
        self.cells
            .resize(self.cells.len() + self.n * self.width(), NONE);
        u32::try_from(slot).unwrap_or(u32::MAX)
    }

    /// Forgets every slot but the unused slot 0.
    pub fn clear(&mut self) {
        self.cells.truncate(self.n * self.width());
    }

    /// Bytes per slot of a funnel of `n` steps.
    #[must_use]
    pub fn slot_bytes(n: usize) -> usize {
        let n = n.min(MAX_STEPS);
        n * (n + 2) * std::mem::size_of::<i64>()
    }

    /// Slots, the unused slot 0 included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cells.len() / (self.n * self.width()).max(1)
    }

    /// Whether there are no slots beside slot 0.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    fn slot(&self, slot: u32) -> std::ops::Range<usize> {
        let size = self.n * self.width();
        slot as usize * size..(slot as usize + 1) * size
    }

    /// Forgets `slot`'s progress.
    fn reset(&mut self, slot: u32) {
        let range = self.slot(slot);
        self.cells[range].fill(NONE);
    }

    /// Takes the next event of `slot`'s person (events come in order of
    /// time, then tie-breaker): at `(t, tie)`, matching the steps in
    /// `mask`, with breakdown `value`. A later start replaces an earlier
    /// one at a step as soon as it reaches it (ClickHouse's `windowFunnel`
    /// rule); one event is one step only.
    pub fn advance(
        &mut self,
        slot: u32,
        window_ms: i64,
        (t, tie): (i64, i64),
        mask: u32,
        value: i64,
    ) {
        let (n, w) = (self.n, self.width());
        let range = self.slot(slot);
        let cells = &mut self.cells[range];
        // From the last step down, so that one event is one step only.
        for k in (0..n).rev() {
            if mask & (1 << k) == 0 {
                continue;
            }
            if k == 0 {
                cells[0] = t;
                cells[n] = tie;
                cells[n + 1] = value;
                continue;
            }
            let (prev, cur) = ((k - 1) * w, k * w);
            let prev_start = (cells[prev], cells[prev + n]);
            if prev_start.0 == NONE || t - prev_start.0 > window_ms {
                continue;
            }
            if cells[cur] != NONE && (cells[cur], cells[cur + n]) >= prev_start {
                continue;
            }
            cells.copy_within(prev..prev + w, cur);
            cells[cur + k] = t;
        }
    }

    /// `slot`'s furthest attempt: its last step, its step times and its
    /// breakdown value.
    #[must_use]
    pub fn furthest(&self, slot: u32) -> Option<(usize, &[i64], i64)> {
        let (n, w) = (self.n, self.width());
        let cells = &self.cells[self.slot(slot)];
        (0..n)
            .rev()
            .find(|k| cells[k * w] != NONE)
            .map(|k| (k, &cells[k * w..k * w + n], cells[k * w + n + 1]))
    }
}

/// Counts an attempt that reached step `last` with step times `times`.
pub fn count(steps: &mut [StepCount], last: usize, times: &[i64]) {
    for (k, s) in steps.iter_mut().enumerate().take(last + 1) {
        s.people += 1;
        if k > 0 {
            s.times_ms.push(times[k] - times[k - 1]);
        }
    }
}

/// The steps per breakdown value (numbers into `values`), most
/// first-step people first, then by value.
pub(crate) fn named_groups(
    groups: HashMap<u32, Vec<StepCount>>,
    values: &[Option<String>],
) -> Vec<(Option<String>, Vec<StepCount>)> {
    let mut named: Vec<(Option<String>, Vec<StepCount>)> = groups
        .into_iter()
        .map(|(v, s)| (values.get(v as usize).cloned().flatten(), s))
        .collect();
    named.sort_by(|x, y| {
        y.1[0]
            .people
            .cmp(&x.1[0].people)
            .then_with(|| x.0.cmp(&y.0))
    });
    named
}

/// Runs `f` (checked with [`Funnel::check`]); `now` (ms) bounds the range
/// as for statistics.
///
/// # Errors
/// The database error.
pub async fn run(store: &Store, f: &Funnel, now: i64) -> Result<FunnelAnswer, StoreError> {
    let n = f.steps.len().min(MAX_STEPS);
    let mut answer = FunnelAnswer {
        steps: vec![StepCount::default(); n],
        groups: Vec::new(),
    };
    let Some((from, to)) = data_range(store, &f.query, now).await? else {
        return Ok(answer);
    };
    if persons::answers_funnel(f) {
        return persons::funnel(store, f, (from, to), now).await;
    }
    let names = f.step_names();
    let cols = f.columns(&names);
    let mut values = persons::Interner::default();
    let mut people: HashMap<u64, Vec<Hit>> = HashMap::new();
    let mut reads = Reads::new(f.query.project, (from, to), READ_MS, false);
    while let Some((a, b)) = reads.next(store).await? {
        for e in store.event_facts(f.query.project, a, b, &cols).await? {
            let Some(person) = e.visitor else { continue };
            let Some((mask, value)) = f.hit(&e, &mut values) else {
                continue;
            };
            people.entry(person).or_default().push(Hit {
                t: e.timestamp,
                seq: e.seq,
                mask,
                value,
            });
        }
    }
    let mut groups: HashMap<u32, Vec<StepCount>> = HashMap::new();
    let mut progress = Progress::arena(n);
    let slot = progress.add();
    for hits in people.values_mut() {
        hits.sort_unstable_by_key(|h| (h.t, h.seq));
        progress.reset(slot);
        for h in hits.iter() {
            progress.advance(slot, f.window_ms, (h.t, h.seq), h.mask, i64::from(h.value));
        }
        let Some((last, times, value)) = progress.furthest(slot) else {
            continue;
        };
        count(&mut answer.steps, last, times);
        if f.breakdown.is_some() {
            let g = groups
                .entry(u32::try_from(value).unwrap_or(0))
                .or_insert_with(|| vec![StepCount::default(); n]);
            count(g, last, times);
        }
    }
    answer.groups = named_groups(groups, &values.values);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(t: i64, mask: u32) -> (i64, u32) {
        (t, mask)
    }

    /// The furthest attempt of one person's events: last step, times.
    fn furthest(hits: &[(i64, u32)], steps: usize, window_ms: i64) -> Option<(usize, Vec<i64>)> {
        let mut p = Progress::arena(steps);
        let slot = p.add();
        for &(t, mask) in hits {
            p.advance(slot, window_ms, (t, t), mask, 0);
        }
        p.furthest(slot).map(|(k, times, _)| (k, times.to_vec()))
    }

    #[test]
    fn furthest_attempt_within_the_window() {
        // A B C in order within 10: all three steps.
        let (last, a) = furthest(&[hit(0, 1), hit(3, 2), hit(5, 4)], 3, 10).unwrap();
        assert_eq!((last, &a[..3]), (2, &[0, 3, 5][..]));
        // C before B: two steps.
        let (last, _) = furthest(&[hit(0, 1), hit(3, 4), hit(5, 2)], 3, 10).unwrap();
        assert_eq!(last, 1);
        // Out of the window from the first A, inside it from the second.
        let (last, a) = furthest(&[hit(0, 1), hit(20, 1), hit(25, 2), hit(28, 4)], 3, 10).unwrap();
        assert_eq!((last, a[0]), (2, 20));
        // B without A: nothing.
        assert!(furthest(&[hit(0, 2)], 2, 10).is_none());
        // A B B: the time to B is that of the first B.
        let (_, a) = furthest(&[hit(0, 1), hit(3, 2), hit(7, 2)], 2, 10).unwrap();
        assert_eq!(a[1], 3);
    }

    #[test]
    fn one_event_is_one_step() {
        // Steps "A then A": one A is not two steps, two are.
        assert_eq!(furthest(&[hit(0, 3)], 2, 10).unwrap().0, 0);
        assert_eq!(furthest(&[hit(0, 3), hit(1, 3)], 2, 10).unwrap().0, 1);
    }

    #[test]
    fn median_and_mean() {
        let s = StepCount {
            people: 4,
            times_ms: vec![40, 10, 30, 20],
        };
        assert_eq!(s.median_ms(), Some(20));
        assert_eq!(s.mean_ms(), Some(25.0));
        assert_eq!(StepCount::default().median_ms(), None);
    }
}
